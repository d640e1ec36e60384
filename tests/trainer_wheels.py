"""Trainers' own released code, for tests that drive it against a live rewardcal.

verl and OpenRLHF do not install on a CPU machine without GPU stacks (flash-attn, vLLM
CUDA, deepspeed, ray). Their wheels are downloaded with ``pip download --no-deps`` (pinned
below; ``scripts/install_trainer_test_deps.sh`` prefetches them for ``make test``),
unpacked, and only the modules that talk to the reward service are imported, in a child
process (so stand-ins never leak into the test process): see :mod:`tests.trainer_stubs`.
TRL installs on CPU and is imported normally.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("REWARDCAL_TRAINER_WHEELS", REPO / ".trainer-wheels"))

# The versions the integrations are proven against (keep in step with the install script).
VERL_VERSIONS = ("0.9.1", "0.7.1")
OPENRLHF_BATCH_VERSION = "0.8.11"  # one request per batch (remote_rm_utils)
OPENRLHF_SAMPLE_VERSIONS = ("0.9.10", "0.11.2")  # one request per sample (agent executor)


def _wheel(name: str, version: str) -> Path:
    found = sorted(CACHE.glob(f"{name}-{version}-*.whl"))
    if found:
        return found[0]
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--dest",
            str(CACHE),
            f"{name}=={version}",
        ],
        check=True,
    )
    found = sorted(CACHE.glob(f"{name}-{version}-*.whl"))
    if not found:
        raise FileNotFoundError(f"pip download left no wheel of {name}=={version} in {CACHE}")
    return found[0]


def source_root(name: str, version: str) -> Path:
    """The folder to put on sys.path for the released package ``name==version``."""
    target = CACHE / "unpacked" / f"{name}-{version}"
    if not (target / ".complete").exists():
        with zipfile.ZipFile(_wheel(name, version)) as wheel:
            wheel.extractall(target)
        (target / ".complete").touch()
    purelib = target / f"{name}-{version}.data" / "purelib"  # OpenRLHF ships its code there
    return purelib if purelib.is_dir() else target


def run_harness(module: str, root: Path, request: dict[str, Any], timeout_s: float = 120) -> Any:
    """Run ``python -m tests.<module>`` with the trainer's code first on the path; the
    request goes in as JSON on stdin, the answer comes back as the last stdout line."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root), str(REPO), env.get("PYTHONPATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")
    done = subprocess.run(
        [sys.executable, "-m", f"tests.{module}"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=timeout_s,
    )
    if done.returncode != 0:
        raise AssertionError(f"{module} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])

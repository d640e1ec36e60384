"""Distributions and import names: the server and the client install under names of their
own, the client installs alone (httpx + pydantic, no torch) and scores against a real
server, and Hugging Face's ``kernels`` installs next to rewardcal.

The installs run offline from the wheelhouse `make install` fills (Makefile: WHEELHOUSE)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.live_server import live_server

ROOT = Path(__file__).resolve().parents[1]
WHEELHOUSE = Path(sys.prefix) / "wheelhouse"
HF_KERNELS = "kernels==0.17.2"


def _pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return tomllib.load(handle)


def _pip(python: Path | str, *args: str) -> None:
    if not WHEELHOUSE.is_dir():
        pytest.fail(f"{WHEELHOUSE} is missing: run `make install` (it fills the wheelhouse)")
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--find-links",
            str(WHEELHOUSE),
            *args,
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )


def test_every_package_folder_is_listed_under_its_import_name() -> None:
    """Packages are listed by hand (discovery would name them after the folders): a new
    subpackage left out of the list would be missing from the wheel."""
    tool = _pyproject()["tool"]["setuptools"]
    folders = {name: Path(folder) for name, folder in tool["package-dir"].items()}
    assert folders == {"rewardcal": Path("service"), "rewardcal_kernels": Path("kernels")}
    on_disk = {
        ".".join([name, *init.parent.relative_to(ROOT / folder).parts])
        for name, folder in folders.items()
        for init in (ROOT / folder).rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert set(tool["packages"]) == on_disk


def test_no_import_name_is_a_well_known_distributions() -> None:
    """The names a user's environment sees: the collision with Hugging Face's `kernels`
    (which transformers integrates with) is what this guards against."""
    tool = _pyproject()["tool"]["setuptools"]
    names = {p.split(".")[0] for p in tool["packages"]} | {"rewardcal_client"}
    assert names == {"rewardcal", "rewardcal_kernels", "rewardcal_client"}


@pytest.mark.slow
def test_hugging_face_kernels_and_rewardcal_import_together(tmp_path: Path) -> None:
    target = tmp_path / "site"
    _pip(sys.executable, "--no-deps", "--target", str(target), HF_KERNELS)
    probe = """
import json, kernels, rewardcal_kernels
import numpy as np
import rewardcal.api.app
from statsmodels.nonparametric.smoothers_lowess import lowess as sm_lowess
from transformers.utils import is_kernels_available
x = np.arange(300.0); y = 0.01 * x + np.sin(x / 20)
fit = rewardcal_kernels.lowess(x, y, frac=0.3)
reference = sm_lowess(y, x, frac=0.3, it=3, delta=0.0, return_sorted=False)
print(json.dumps({
    "hf": kernels.__file__, "ours": rewardcal_kernels.__file__,
    "hf_api": hasattr(kernels, "kernelize"),
    "transformers_sees_hub_kernels": is_kernels_available(),
    "max_dev": float(np.max(np.abs(np.asarray(fit) - reference))),
}))
"""
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["hf"].startswith(str(target)) and seen["hf_api"]
    assert seen["ours"].startswith(str(ROOT / "kernels"))
    assert seen["transformers_sees_hub_kernels"] is True
    assert seen["max_dev"] < 1e-9  # our LOWESS, not a shadowed module, did the fit


CLIENT_PROBE = """
import importlib.util, json, sys
from rewardcal_client import RewardClient, __version__
from rewardcal_client.protocol.native import RewardsRequest
with RewardClient(sys.argv[1], calibration_group="packaging") as rm:
    results = rm.score([("What is 2+2?", "4."), ("Name a prime.", "7 is a prime number.")])
print(json.dumps({
    "torch": importlib.util.find_spec("torch") is not None,
    "server": importlib.util.find_spec("rewardcal") is not None,
    "version": __version__,
    "request_fields": sorted(RewardsRequest.model_fields),
    "rewards": [r.raw_reward for r in results],
    "groups": [r.group for r in results],
}))
"""


@pytest.mark.slow
def test_client_installs_alone_and_scores_a_real_server(
    tmp_path: Path, tiny_models: dict[str, Path], fake_backend: Any
) -> None:
    """A trainer's environment: a fresh venv (no torch, no server) gets the client from
    client/ with only its declared dependencies, then scores against a running server."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    _pip(python, str(ROOT / "client"))
    installed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    names = {d["name"].lower() for d in json.loads(installed.stdout)}
    assert {"rewardcal-client", "httpx", "pydantic"} <= names
    assert not names & {"torch", "transformers", "numpy", "rewardcal", "statsmodels"}

    with live_server(tiny_models["bert"], fake_backend) as (base, _app):
        out = subprocess.run(
            [str(python), "-c", CLIENT_PROBE, base],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        )
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["torch"] is False and seen["server"] is False
    assert seen["groups"] == ["packaging", "packaging"]
    assert len(seen["rewards"]) == 2 and all(isinstance(r, float) for r in seen["rewards"])
    assert "items" in seen["request_fields"]

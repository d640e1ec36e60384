#!/usr/bin/env bash
# Device check of the vllm backend: parity vs transformers on the GPU, then throughput through
# the service and through vLLM's own server on a Llama-3.1-8B-shaped reward model (random
# weights). For a GPU host with vLLM installed; needs no network. Bounded to 8 minutes.
#
#   scripts/gpu_check.sh [--out results.json]       # GPU
#   scripts/gpu_check.sh --cpu                       # the same code on CPU, small shapes
#
# PYTHON picks the interpreter (default: .venv/bin/python if present, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z ${PYTHON:-} ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export VLLM_HOST_IP=${VLLM_HOST_IP:-127.0.0.1}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

# Fail in seconds, with the names of what is missing, rather than minutes into the check.
"$PYTHON" - <<'EOF'
import importlib
import sys

missing = []
for name in ("torch", "transformers", "vllm", "httpx", "uvicorn", "fastapi",
             "pydantic_settings", "prometheus_client", "service.api",
             "service.backends.vllm_backend"):
    try:
        importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001
        missing.append(f"{name} ({type(exc).__name__}: {exc})")
if missing:
    sys.exit("gpu_check: cannot import: " + "; ".join(missing))
EOF

budget=480
for arg in "$@"; do
    [[ $arg == --cpu ]] && budget=2700  # CPU dry run: engine starts take minutes on 2 cores
done
# SIGTERM at the budget lets the check kill its child servers; SIGKILL 20 s later if not.
exec timeout -k 20 "$budget" "$PYTHON" scripts/gpu_check.py "$@"

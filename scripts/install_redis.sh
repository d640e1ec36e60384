#!/usr/bin/env bash
# Debian's redis-server package: the shared calibration store's tests start their own
# redis-server on a free port (tests/redis_server.py). `make test` runs this first.
# Pinned to the upstream release Debian 12 ships (7.0.15); the wildcard takes Debian's
# security revisions of it (-1~deb12uN), which replace older ones on the mirror.
# Does nothing when redis-server is there. Needs root and apt-get; without them it says
# what to install and exits 0, and the tests that need it fail saying so.
set -euo pipefail
VERSION=${REDIS_DEB_VERSION:-5:7.0.15-*}
if command -v redis-server >/dev/null; then
    exit 0
fi
if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
    echo "install_redis.sh: not root or no apt-get: install Debian's redis-server" \
        "package ($VERSION) yourself" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "redis-server=$VERSION" "redis-tools=$VERSION" >/dev/null
# The package starts a system service where an init runs: stop it, tests start their own.
if command -v systemctl >/dev/null && systemctl is-active --quiet redis-server 2>/dev/null; then
    systemctl stop redis-server || true
fi
redis-server --version

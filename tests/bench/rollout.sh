#!/usr/bin/env bash
# A rolling restart, a rolling reload and a crash of three effnetd replicas
# behind HAProxy (deploy/haproxy/haproxy.cfg), under steady load: prints the
# table of requests sent, answered 200 and 503, failed, HAProxy's retries
# and p50/p99 latency per phase (tests/integration/test_rollout.py, with
# more clients and longer steady windows than the meson test); then the
# same with HAProxy's default retry-on (conn-failure only), as a control
# that shows what the config's retries save.
# Usage: tests/bench/rollout.sh [--clients N] [--settle SECONDS]
set -eu
cd "$(dirname "$0")/../.."
clients=8
settle=10
while [ $# -gt 0 ]; do
  case $1 in
    --clients) clients=$2; shift 2 ;;
    --settle) settle=$2; shift 2 ;;
    *) echo "usage: $0 [--clients N] [--settle SECONDS]" >&2; exit 2 ;;
  esac
done
command -v haproxy >/dev/null || bash scripts/install-deps.sh
if [ ! -f build/build.ninja ]; then
  meson setup build
fi
ninja -C build >/dev/null
echo "# rollout $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for extra in "" --default-retries; do
  /usr/bin/python3 tests/integration/test_rollout.py build/src/daemon/effnetd build/src/cli/effnet \
    --clients "$clients" --settle "$settle" $extra | grep -v '^ok ' || true
done
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

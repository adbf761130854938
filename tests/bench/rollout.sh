#!/usr/bin/env bash
# A rolling restart, a rolling reload and a crash of three effnetd replicas
# behind HAProxy (deploy/haproxy/haproxy.cfg), under steady load
# (tests/integration/test_rollout.py, with more clients and longer steady
# windows than the meson test), alternating with the same run under
# HAProxy's default retry-on (conn-failure only): a control that shows what
# the shipped retries save. Prints each run's table, then per
# configuration and phase the requests summed over the rounds and the
# median of the rounds' p50, p99 and their ratios to the steady phase
# before any change.
# Usage: tests/bench/rollout.sh [--clients N] [--settle SECONDS] [--rounds R]
set -eu
cd "$(dirname "$0")/../.."
clients=8
settle=10
rounds=3
while [ $# -gt 0 ]; do
  case $1 in
    --clients) clients=$2; shift 2 ;;
    --settle) settle=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "usage: $0 [--clients N] [--settle SECONDS] [--rounds R]" >&2; exit 2 ;;
  esac
done
command -v haproxy >/dev/null || bash scripts/install-deps.sh
if [ ! -f build/build.ninja ]; then
  meson setup build
fi
ninja -C build >/dev/null
rows=$(mktemp)
trap 'rm -f "$rows"' EXIT
echo "# rollout $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$rounds"); do
  for extra in "" --default-retries; do
    echo "## round $round ${extra:-(shipped config)}"
    /usr/bin/python3 tests/integration/test_rollout.py build/src/daemon/effnetd build/src/cli/effnet \
      --clients "$clients" --settle "$settle" --json "$rows" $extra | grep -v '^ok ' || true
  done
done
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
/usr/bin/python3 - "$rows" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
for config in ("shipped", "default-retries"):
    rs = [r for r in runs if r["config"] == config]
    if not rs:
        continue
    n = sum(1 for r in rs if r["phase"] == "before")
    print(f"\n{config}: {n} rounds, {rs[0]['clients']} clients; requests summed, latency medians of the rounds\n")
    print("| phase | sent | 200 | 503 | other | failed | HAProxy retries | p50 ms | p99 ms | p50 / before | p99 / before |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    phases = []
    for r in rs:
        if r["phase"] not in phases:
            phases.append(r["phase"])
    for ph in phases:
        rows = [r for r in rs if r["phase"] == ph]
        befores = [r for r in rs if r["phase"] == "before"]
        med = lambda k: statistics.median(r[k] for r in rows)
        ratio = lambda k: statistics.median(r[k] / b[k] for r, b in zip(rows, befores))
        tot = lambda k: sum(r[k] for r in rows)
        print(f"| {ph} | {tot('sent')} | {tot('200')} | {tot('503')} | {tot('other')} | {tot('failed')} | "
              f"{tot('retried')} | {med('p50'):.0f} | {med('p99'):.0f} | {ratio('p50'):.2f}x | {ratio('p99'):.2f}x |")
PY

#!/usr/bin/env bash
# Paired A/B of two effnet builds: `effnet bench` from A and from B take
# turns, round after round, and the report gives each side's median images/s
# and the median of the per-round ratios B/A. Made for comparing the engine
# on oneDNN 2.x and 3.x on one machine: A is this tree's Debian 12 build, B
# the same tree built in a Debian 13 root, run through a wrapper that enters
# that root with the tree at the same relative path.
#
#   tests/bench/ab.sh [--rounds 9] [--batch 1,8] [--threads 2] [--size 384]
#                     [--variant s] [--precision fp32] [--layout L]
#                     --a 'CMD' --b 'CMD'
#
# CMD runs effnet with the arguments appended, from this tree's top; the
# weights are written under build/ab/ and passed by that relative path, so a
# CMD that enters a root with the tree mounted elsewhere finds them, e.g.
#   --a build/src/cli/effnet
#   --b "chroot-into-debian13 build-trixie/src/cli/effnet"
# Under load, run it at real-time priority (chrt -f 10): a barrier-heavy
# 2-thread forward pass on a shared 2-CPU machine otherwise measures the
# other processes.
# A benchmark run by hand, not a test: it never fails on a slow result.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
rounds=9 batch=1,8 threads=2 size=384 variant=s precision=fp32 layout="" a="" b=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --variant) variant=$2; shift 2 ;;
    --precision) precision=$2; shift 2 ;;
    --layout) layout=$2; shift 2 ;;
    --a) a=$2; shift 2 ;;
    --b) b=$2; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "ab: unknown option $1" >&2; exit 2 ;;
  esac
done
[ -n "$a" ] && [ -n "$b" ] || { echo "ab: --a and --b are both needed" >&2; exit 2; }

mkdir -p build/ab
weights=build/ab/$variant.safetensors
[ -s "$weights" ] || build/src/cli/effnet init-weights --variant "$variant" --scheme torchvision --seed 1 -o "$weights" >/dev/null

out=$(mktemp)
trap 'rm -f "$out"' EXIT
run() {  # SIDE CMD: one bench, one JSON line per batch size, tagged with the side
  # shellcheck disable=SC2086  # CMD is a command line, split on purpose
  EFFNET_LAYOUT=$layout $2 bench --weights "$weights" --size "$size" --batch "$batch" \
    --threads "$threads" --runs 8 --warmup 2 --precision "$precision" --json 2>/dev/null |
    sed "s/^/$1 /" >> "$out"
}
for r in $(seq "$rounds"); do
  # Alternate which side goes first, so neither always runs on a warmer cache.
  if [ $((r % 2)) = 1 ]; then run A "$a"; run B "$b"; else run B "$b"; run A "$a"; fi
  echo "round $r of $rounds done" >&2
done

/usr/bin/python3 - "$out" "$precision" "${layout:-default}" "$rounds" <<'EOF'
import json, statistics, sys
path, precision, layout, rounds = sys.argv[1:5]
runs = {"A": {}, "B": {}}
for line in open(path):
    side, js = line.split(" ", 1)
    d = json.loads(js)
    runs[side].setdefault(d["batch"], []).append(d["images_per_s"])
print(f"| precision, layout | batch | A images/s | B images/s | B/A (median of {rounds} paired rounds) |")
print("|---|---|---|---|---|")
for batch in sorted(runs["A"]):
    xa, xb = runs["A"][batch], runs["B"].get(batch, [])
    if len(xa) != len(xb):
        print(f"| {precision}, {layout} | {batch} | {statistics.median(xa):.2f} | refused or failed | |")
        continue
    ratio = statistics.median(y / x for x, y in zip(xa, xb))
    print(f"| {precision}, {layout} | {batch} | {statistics.median(xa):.2f} | {statistics.median(xb):.2f} | {ratio:.2f} |")
EOF

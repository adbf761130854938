#!/usr/bin/env bash
# The measurements behind the engine's choices per CPU class
# (docs/engine.md): effnet's throughput for each activation layout, with and
# without Winograd, under each DNNL_MAX_CPU_ISA cap this CPU can reach, in
# one run. EFFNET_LAYOUT=any lets oneDNN pick every primitive's layout (with
# the reorders that implies): the baseline the fixed choices must beat.
#
#   tests/bench/layouts.sh [--variant s] [--size 384] [--batch 1,8] [--runs 8]
#                          [--caps AVX2,AVX512_CORE,...] [--effnet PATH]
#
# Prints a markdown table of median images/s; a layout for which oneDNN has
# only reference kernels is refused by effnet and shows as "refused".
# A benchmark run by hand, not a test: it never fails on a slow result.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
effnet="$root/build/src/cli/effnet"
variant=s size=384 batch=1,8 runs=8 threads=2
caps=AVX2,AVX512_CORE,AVX512_CORE_VNNI,AVX512_CORE_BF16,AVX512_CORE_AMX

while [ $# -gt 0 ]; do
  case "$1" in
    --variant) variant=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --caps) caps=$2; shift 2 ;;
    --effnet) effnet=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "layouts: unknown option $1" >&2; exit 2 ;;
  esac
done
[ -x "$effnet" ] || { echo "layouts: no effnet at $effnet (ninja -C build)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
weights="$work/$variant.safetensors"
"$effnet" init-weights --variant "$variant" --scheme torchvision --seed 1 -o "$weights"

# median images/s per batch as "b1 b8", or "refused"
measure() {  # CAP PRECISION LAYOUT [ENV...]
  local cap=$1 prec=$2 layout=$3
  shift 3
  local out
  if out=$(env DNNL_MAX_CPU_ISA="$cap" EFFNET_LAYOUT="$layout" "$@" "$effnet" bench --weights "$weights" \
      --size "$size" --batch "$batch" --threads "$threads" --runs "$runs" --warmup 2 --precision "$prec" --json \
      2>/dev/null); then
    /usr/bin/python3 -c 'import json,sys; print(" / ".join("%.2f" % json.loads(l)["images_per_s"] for l in sys.stdin))' <<<"$out"
  else
    echo refused
  fi
}

echo "### effnet V2-S @$size, $threads threads, median of $runs, images/s at batch ${batch//,/ / }"
echo
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'); oneDNN uncapped: $("$effnet" cpu)"
echo
echo "| cap | isa | precision | nChw8c | nChw16c | nChw16c, no Winograd | nhwc | any (oneDNN picks) |"
echo "|---|---|---|---|---|---|---|---|"
for cap in ${caps//,/ }; do
  info=$(DNNL_MAX_CPU_ISA=$cap "$effnet" cpu)
  isa=$(/usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["isa"])' <<<"$info")
  bf16=$(/usr/bin/python3 -c 'import json,sys; print(int(json.load(sys.stdin)["bf16"]))' <<<"$info")
  if [ "$isa" != "${cap,,}" ]; then
    echo "| $cap | (unreachable: $isa) | | | | | | |"
    continue
  fi
  precs=fp32
  [ "$bf16" = 1 ] && precs="fp32 bf16"
  for prec in $precs; do
    row="| $cap | $isa | $prec"
    row+=" | $(measure "$cap" "$prec" nChw8c)"
    row+=" | $(measure "$cap" "$prec" nChw16c)"
    row+=" | $(measure "$cap" "$prec" nChw16c EFFNET_NO_WINOGRAD=1)"
    row+=" | $(measure "$cap" "$prec" nhwc)"
    row+=" | $(measure "$cap" "$prec" any) |"
    echo "$row"
  done
done

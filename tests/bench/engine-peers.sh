#!/usr/bin/env bash
# Engine switches are read indirectly by run() (${!flag}); its commands are
# functions called through it.
# shellcheck disable=SC2034,SC2317

# Engine throughput of effnet against ONNX Runtime and PyTorch eager, measured
# in one run on the same number of threads, on one seeded random-weight
# torchvision EfficientNetV2 (speed does not depend on the weight values).
# Prints a markdown report with images/s and the ratios effnet/peer.
#
#   tests/bench/engine-peers.sh [--threads 2] [--runs 20] [--size 384] [--variant s]
#
# A benchmark run by hand, not a test: it never fails on a slow result.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

threads=2
runs=20
warmup=3
rounds=1
size=384
variant=s
batch=1,8
seed=1
workdir="${XDG_CACHE_HOME:-$HOME/.cache}/effnetd-bench"
effnet="$root/build/src/cli/effnet"
build=1
do_effnet=1
do_ort=1
do_torch=1
out=""

usage() {
  cat <<EOF
usage: $0 [options]
  --threads N     threads for every runtime (default $threads)
  --runs N        timed runs per batch size; the median is reported (default $runs)
  --warmup N      untimed runs first (default $warmup)
  --rounds N      repeat everything N times, report each engine's best round
                  (default $rounds; helps on a busy machine)
  --size N        input edge in pixels (default $size)
  --variant V     s, m or l (default $variant)
  --batch LIST    batch sizes, comma separated (default $batch)
  --seed N        weight seed (default $seed)
  --workdir DIR   models, onnxruntime-node and results (default $workdir)
  --effnet PATH   effnet binary (default build/src/cli/effnet; built if absent)
  --no-build      do not run meson/ninja when the effnet binary is absent
  --skip-effnet | --skip-ort | --skip-torch   leave a runtime out
  --out FILE      also write the report to FILE
EOF
}

while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --variant) variant=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --workdir) workdir=$2; shift 2 ;;
    --effnet) effnet=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --skip-effnet) do_effnet=0; shift ;;
    --skip-ort) do_ort=0; shift ;;
    --skip-torch) do_torch=0; shift ;;
    --out) out=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "engine-peers: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

for v in threads runs warmup rounds size seed; do
  [[ ${!v} =~ ^[0-9]+$ ]] || { echo "engine-peers: --$v needs a number" >&2; exit 2; }
done
[ "$rounds" -ge 1 ] || { echo "engine-peers: --rounds must be at least 1" >&2; exit 2; }
[[ $batch =~ ^[0-9]+(,[0-9]+)*$ ]] || { echo "engine-peers: --batch needs a list like 1,8" >&2; exit 2; }
case "$variant" in s|m|l) ;; *) echo "engine-peers: --variant is s, m or l" >&2; exit 2 ;; esac

log() { printf '[engine-peers] %s\n' "$*" >&2; }

# Debian's interpreter sees python3-torch; the first python3 on PATH may not.
py=/usr/bin/python3
"$py" -c 'import torch, torchvision' 2>/dev/null ||
  { echo "engine-peers: $py cannot import torch/torchvision (scripts/install-deps.sh)" >&2; exit 1; }
if [ $do_ort = 1 ] && ! { command -v node && command -v npm; } >/dev/null; then
  echo "engine-peers: node and npm are needed for ONNX Runtime (or --skip-ort)" >&2
  exit 1
fi

export OMP_NUM_THREADS=$threads
mkdir -p "$workdir/models" "$workdir/ort"
res="$workdir/results/$(date +%Y%m%d-%H%M%S)-$$"
mkdir -p "$res"
status=0

# --- model: one seeded torchvision net, as ONNX and as safetensors ---------
stem="$workdir/models/efficientnetv2-$variant-$size-seed$seed"
onnx="$stem.onnx"
st="$stem.safetensors"
if [ ! -s "$onnx" ] || [ ! -s "$st" ] || [ "$here/make_model.py" -nt "$onnx" ]; then
  log "making model $stem.{onnx,safetensors}"
  "$py" "$here/make_model.py" --variant "$variant" --size "$size" --seed "$seed" \
    --onnx "$onnx" --safetensors "$st" 2> "$res/make_model.log" ||
    { tail -n 20 "$res/make_model.log" >&2; exit 1; }
fi

# --- onnxruntime-node, pinned in package.json, installed outside the tree ---
if [ $do_ort = 1 ]; then
  want=$(node -p "require('$here/package.json').dependencies['onnxruntime-node']")
  have=$(node -p "try { require('$workdir/ort/node_modules/onnxruntime-node/package.json').version } catch (e) { '' }")
  if [ "$want" != "$have" ]; then
    log "installing onnxruntime-node@$want into $workdir/ort (--ignore-scripts: the CPU binaries ship in the package)"
    cp "$here/package.json" "$workdir/ort/package.json"
    (cd "$workdir/ort" && npm install --ignore-scripts --no-audit --no-fund --loglevel=error) >&2
  fi
fi

# --- effnet binary ----------------------------------------------------------
effnet_version=""
if [ $do_effnet = 1 ] && [ ! -x "$effnet" ] && [ $build = 1 ] && [ "$effnet" = "$root/build/src/cli/effnet" ]; then
  log "building effnet (meson + ninja, log in $res/build.log)"
  ( cd "$root" && { [ -f build/build.ninja ] || meson setup build; } && ninja -C build ) > "$res/build.log" 2>&1 ||
    { log "build failed; tail of $res/build.log:"; tail -n 15 "$res/build.log" >&2; }
fi
if [ $do_effnet = 1 ] && [ ! -x "$effnet" ]; then
  log "no effnet binary at $effnet: reporting the peers only"
  do_effnet=0
  status=1
fi
effnet_flags=()
if [ $do_effnet = 1 ]; then
  effnet_version=$("$effnet" --version 2>/dev/null | head -n 1 || true)
  help=$("$effnet" bench --help 2>&1 || true)
  # Optional flags: pass them only where this effnet has them.
  grep -q -- '--runs' <<<"$help" && effnet_flags+=(--runs "$runs")
  grep -q -- '--warmup' <<<"$help" && effnet_flags+=(--warmup "$warmup")
  grep -q -- '--size' <<<"$help" && effnet_flags+=(--size "$size")
fi

# --- runs: per round and batch size, each engine in turn on the same threads,
# so that the measurements behind one ratio are close in time -----------------
run_ort() {
  node "$here/ort_bench.js" --model "$onnx" --modules "$workdir/ort/node_modules" \
    --batch "$1" --threads "$threads" --runs "$runs" --warmup "$warmup" --size "$size"
}
run_torch() {
  "$py" "$here/torch_bench.py" --safetensors "$st" --variant "$variant" --size "$size" \
    --batch "$1" --threads "$threads" --runs "$runs" --warmup "$warmup" --seed "$seed"
}
run_effnet_p() {  # PRECISION BATCH
  "$effnet" bench --weights "$st" --batch "$2" --threads "$threads" \
    --precision "$1" --json "${effnet_flags[@]}"
}
# run NAME FLAGVAR CMD...: appends JSON lines to $res/NAME.jsonl; on failure
# shows the error and leaves that engine out of the remaining runs.
run() {
  local name=$1 flag=$2
  shift 2
  [ "${!flag}" = 1 ] || return 0
  log "$name: batch ${*: -1}, $threads threads, $runs runs (round $r/$rounds)"
  if ! "$@" >> "$res/$name.jsonl" 2>> "$res/$name.err"; then
    log "$name failed:"; tail -n 15 "$res/$name.err" >&2
    printf -v "$flag" 0
    status=1
  fi
}
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
t_start=$SECONDS
on_fp32=$do_effnet
on_bf16=$do_effnet
for ((r = 1; r <= rounds; r++)); do
  for b in ${batch//,/ }; do
    run ort do_ort run_ort "$b"
    run torch do_torch run_torch "$b"
    run effnet-fp32 on_fp32 run_effnet_p fp32 "$b"
    run effnet-bf16 on_bf16 run_effnet_p bf16 "$b"
  done
done

load_after=$(cut -d' ' -f1-3 /proc/loadavg)
log "timed part took $((SECONDS - t_start)) s; raw results in $res"

node_version=$(node --version 2>/dev/null || true)
"$py" "$here/report.py" \
  --ort "$res/ort.jsonl" --torch "$res/torch.jsonl" \
  --effnet-fp32 "$res/effnet-fp32.jsonl" --effnet-bf16 "$res/effnet-bf16.jsonl" \
  --variant "$variant" --size "$size" --threads "$threads" --runs "$runs" --rounds "$rounds" --batch "$batch" \
  --effnet-version "$effnet_version" --node-version "$node_version" \
  --load-before "$load_before" --load-after "$load_after" | tee "$res/report.md"
[ -z "$out" ] || cp "$res/report.md" "$out"
exit $status

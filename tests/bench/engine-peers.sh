#!/usr/bin/env bash
# Engine switches are read indirectly by run() (${!flag}); its commands are
# functions called through it.
# shellcheck disable=SC2034,SC2317

# Engine throughput of effnet against ONNX Runtime and PyTorch eager, measured
# in one run on the same number of threads, on one seeded random-weight
# torchvision EfficientNetV2 (speed does not depend on the weight values).
# Prints a markdown report with images/s and the ratios effnet/peer. With
# --caps, effnet also runs under oneDNN ISA caps (DNNL_MAX_CPU_ISA), to see
# what older CPUs would get without owning one; the peers always run uncapped.
#
#   tests/bench/engine-peers.sh [--threads 2] [--runs 20] [--size 384] [--variant s]
#   tests/bench/engine-peers.sh --caps AVX2,AVX512_CORE,AVX512_CORE_BF16
#   tests/bench/engine-peers.sh --precision int8 --rounds 5 --caps AVX2,AVX512_CORE_VNNI
#
# --precision int8 also runs effnet int8 (calibrated once on the photos
# Debian ships, every dense conv in int8) next to effnet fp32 and ONNX
# Runtime fp32 in each round, and ONNX Runtime int8: a QDQ model with the
# same convs in int8 at the same input scales (make_qdq.py, needs
# python3-onnx), checked against ORT fp32 on the photos as effnet int8 is
# against effnet fp32 (ort_int8_check.js). It prints int8/fp32, int8/ORT
# fp32 and int8/ORT int8 as the median over rounds of the ratios measured
# within each round.
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
caps=""
out=""
precision=""

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
  --caps LIST     also run effnet under each DNNL_MAX_CPU_ISA value, comma
                  separated (e.g. AVX2,AVX512_CORE,AVX512_CORE_VNNI,
                  AVX512_CORE_BF16,AVX512_CORE_AMX; default none); caps this
                  CPU cannot honour are skipped and named in the report
  --out FILE      also write the report to FILE
  --precision int8  also effnet int8, with the paired-ratio report (below the
                  usual one)
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
    --caps) caps=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --precision) precision=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "engine-peers: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

case "$precision" in ""|int8) ;; *) echo "engine-peers: --precision takes int8" >&2; exit 2 ;; esac
for v in threads runs warmup rounds size seed; do
  [[ ${!v} =~ ^[0-9]+$ ]] || { echo "engine-peers: --$v needs a number" >&2; exit 2; }
done
[ "$rounds" -ge 1 ] || { echo "engine-peers: --rounds must be at least 1" >&2; exit 2; }
[[ $batch =~ ^[0-9]+(,[0-9]+)*$ ]] || { echo "engine-peers: --batch needs a list like 1,8" >&2; exit 2; }
case "$variant" in s|m|l) ;; *) echo "engine-peers: --variant is s, m or l" >&2; exit 2 ;; esac
# Upper case because the reachability check compares against effnet's isa
# names; only [A-Z0-9_] since each cap also names a shell variable below.
caps=${caps^^}
[[ -z $caps || $caps =~ ^[A-Z0-9_]+(,[A-Z0-9_]+)*$ ]] ||
  { echo "engine-peers: --caps needs a list like AVX2,AVX512_CORE" >&2; exit 2; }

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

# --- what effnet's oneDNN makes of this CPU, uncapped and under each cap ------
# `effnet bench --precision bf16` refuses a CPU without native bf16, so bf16
# runs only where `effnet cpu` says the CPU (as capped) has it. A cap above
# the CPU's own ISA silently gives the CPU's ISA: such a cap is unreachable
# here and would only measure the uncapped engine again under another name.
json_field() {  # JSON KEY: the value as text (true/false for booleans), empty if absent
  "$py" -c 'import json, sys
v = json.loads(sys.argv[1]).get(sys.argv[2])
print("" if v is None else str(v).lower() if isinstance(v, bool) else v)' "$1" "$2" 2>/dev/null || true
}
effnet_cpu=""
reachable=()
on_fp32=$do_effnet
on_bf16=$do_effnet
: > "$res/effnet-cpu.jsonl"
if [ $do_effnet = 1 ]; then
  # A cap already in the environment would make the reference runs capped
  # too; the report names it, so say it here as well.
  [ -z "${DNNL_MAX_CPU_ISA:-}" ] ||
    log "DNNL_MAX_CPU_ISA=$DNNL_MAX_CPU_ISA is set: the effnet runs without --caps are capped by it"
  effnet_cpu=$("$effnet" cpu)
  if [ "$(json_field "$effnet_cpu" bf16)" != true ]; then
    log "effnet bf16 not run: effnet's ISA $(json_field "$effnet_cpu" isa) has no native bf16"
    on_bf16=0
  fi
  for cap in ${caps//,/ }; do
    line=$(DNNL_MAX_CPU_ISA=$cap "$effnet" cpu)
    printf '%s\n' "$line" >> "$res/effnet-cpu.jsonl"
    isa=$(json_field "$line" isa)
    if [ "$isa" != "${cap,,}" ]; then
      log "cap $cap unreachable on this CPU (effnet cpu gives isa ${isa:-n/a}): skipped"
      continue
    fi
    reachable+=("$cap")
    printf -v "on_fp32_$cap" 1
    if [ "$(json_field "$line" bf16)" = true ]; then
      printf -v "on_bf16_$cap" 1
    else
      printf -v "on_bf16_$cap" 0
      log "cap $cap: bf16 not run (no native bf16 under this cap)"
    fi
  done
fi

# --- runs: per round and batch size, each engine in turn on the same threads,
# so that the measurements behind one ratio are close in time -----------------
run_ort() {
  node "$here/ort_bench.js" --model "$onnx" --modules "$workdir/ort/node_modules" \
    --batch "$1" --threads "$threads" --runs "$runs" --warmup "$warmup" --size "$size"
}
run_ort_int8() {
  node "$here/ort_bench.js" --model "$qdq" --modules "$workdir/ort/node_modules" \
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
run_effnet_cap() {  # CAP PRECISION BATCH
  DNNL_MAX_CPU_ISA=$1 run_effnet_p "$2" "$3"
}
on_int8=0
calib="$res/int8.calibration.json"
run_effnet_int8() {  # CAP (empty: as the environment has it) BATCH
  DNNL_MAX_CPU_ISA=${1:-${DNNL_MAX_CPU_ISA:-}} "$effnet" bench --weights "$st" --batch "$2" --threads "$threads" \
    --precision int8 --calibration "$calib" --json "${effnet_flags[@]}"
}
if [ "$precision" = int8 ] && [ $do_effnet = 1 ]; then
  # The scales do not change the speed much; every dense conv in int8
  # (--threshold -1) is the fastest plan calibrate can make.
  mapfile -t photos < <("$py" -c "import sys; sys.path.insert(0, '$root/tests/integration')
import daemon; print('\n'.join(sorted(daemon.sample_photos().values())))")
  log "calibrating int8 on ${#photos[@]} photos (log in $res/calibrate.log)"
  if "$effnet" calibrate --weights "$st" --images "${photos[@]}" --size "$size" --method mse --threshold -1 \
       --threads "$threads" -o "$calib" > "$res/calibrate.log" 2>&1; then
    on_int8=1
    for cap in "${reachable[@]}"; do printf -v "on_int8_$cap" 1; done
  else
    log "calibration failed: int8 not run"; tail -n 5 "$res/calibrate.log" >&2; status=1
  fi
fi
# ONNX Runtime int8: the same convs quantized at the calibration's scales,
# and how far that moves ORT's logits from its fp32 ones on the same photos
# (next to effnet int8 against effnet fp32, computed the same way).
on_ort_int8=0
qdq="$res/int8.qdq.onnx"
if [ $on_int8 = 1 ] && [ $do_ort = 1 ]; then
  if ! "$py" -c 'import onnx' 2>/dev/null; then
    log "ORT int8 not run: $py cannot import onnx (python3-onnx, scripts/install-deps.sh)"; status=1
  else
    log "making ORT's int8 model (QDQ, log in $res/make_qdq.log)"
    if "$py" "$here/make_qdq.py" --onnx "$onnx" --safetensors "$st" --calibration "$calib" \
         --images "${photos[@]}" --photos "$res/photos.npy" -o "$qdq" > "$res/make_qdq.log" 2>&1 &&
       node "$here/ort_int8_check.js" --fp32 "$onnx" --int8 "$qdq" --photos "$res/photos.npy" \
         --out "$res" --threads "$threads" --modules "$workdir/ort/node_modules" \
         > "$res/ort-int8-check.json" 2>> "$res/make_qdq.log" &&
       "$effnet" forward --weights "$st" --input "$res/photos.npy" --output "$res/effnet-fp32-logits.npy" \
         --threads "$threads" >> "$res/make_qdq.log" 2>&1 &&
       "$effnet" forward --weights "$st" --input "$res/photos.npy" --output "$res/effnet-int8-logits.npy" \
         --precision int8 --calibration "$calib" --threads "$threads" >> "$res/make_qdq.log" 2>&1; then
      on_ort_int8=1
    else
      log "ORT int8 not run:"; tail -n 5 "$res/make_qdq.log" >&2; status=1
    fi
  fi
fi
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
for ((r = 1; r <= rounds; r++)); do
  for b in ${batch//,/ }; do
    run ort do_ort run_ort "$b"
    run torch do_torch run_torch "$b"
    run effnet-fp32 on_fp32 run_effnet_p fp32 "$b"
    run effnet-bf16 on_bf16 run_effnet_p bf16 "$b"
    run effnet-int8 on_int8 run_effnet_int8 "" "$b"
    run ort-int8 on_ort_int8 run_ort_int8 "$b"
    for cap in "${reachable[@]}"; do
      run "effnet-fp32@$cap" "on_fp32_$cap" run_effnet_cap "$cap" fp32 "$b"
      run "effnet-bf16@$cap" "on_bf16_$cap" run_effnet_cap "$cap" bf16 "$b"
      [ "$precision" != int8 ] || run "effnet-int8@$cap" "on_int8_$cap" run_effnet_int8 "$cap" "$b"
    done
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
  --effnet-cpu "$effnet_cpu" --caps-cpu "$res/effnet-cpu.jsonl" \
  --load-before "$load_before" --load-after "$load_after" | tee "$res/report.md"
if [ "$precision" = int8 ]; then
  "$py" "$here/int8_report.py" "$res" "${reachable[@]}" | tee -a "$res/report.md"
fi
[ -z "$out" ] || cp "$res/report.md" "$out"
exit $status

#!/usr/bin/env bash
# End-to-end serving benchmark on loopback: wrk POSTs a real JPEG to
# effnetd's POST /v1/classify at several concurrencies, then does the same
# against a FastAPI + PyTorch + PIL server doing the same job
# (fastapi_server.py), and `effnet bench` measures the engine alone on the
# same weights and precision. Prints a markdown report with images/s, p50/p99
# latency, mean batch size and the ratios that serve as the bar.
#
#   tests/bench/serve-peers.sh [--precision fp32|bf16] [--duration 10] [--threads 2]
#
# A benchmark run by hand, not a test: it never fails on a slow result.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

precision=fp32
duration=10
max_duration=60
cycles=3
threads=2
concurrency=1,4,16,64
warmup=3
max_batch=8
bench_runs=5
seed=1
image=""
workdir="${XDG_CACHE_HOME:-$HOME/.cache}/effnetd-bench/serve"
effnetd="$root/build/src/daemon/effnetd"
effnet="$root/build/src/cli/effnet"
effnetd_args=""
python_precision=fp32
build=1
do_effnetd=1
do_python=1
do_bench=1
out=""

usage() {
  cat <<EOF
usage: $0 [options]
  --precision P      fp32 or bf16 for effnetd and effnet bench (default $precision)
  --duration S       seconds of load per concurrency level, at least (default $duration)
  --max-duration S   a level runs long enough for every connection to complete
                     --cycles requests at the previous level's rate, up to S seconds
                     (default $max_duration; cycles $cycles)
  --cycles N         see --max-duration
  --threads N        inference threads: effnetd --threads, effnet bench --threads,
                     torch.set_num_threads (default $threads)
  --concurrency L    wrk connections per level, comma separated (default $concurrency)
  --warmup S         seconds of unrecorded load before the first level (default $warmup)
  --max-batch N      effnetd --max-batch; effnet bench runs batch 1, 2, 4, ... up to N
                     (default $max_batch)
  --bench-runs N     effnet bench --runs (default $bench_runs)
  --image FILE       JPEG to send (default matplotlib's grace_hopper.jpg)
  --seed N           effnet init-weights --seed (default $seed)
  --effnetd-args S   extra effnetd arguments, e.g. "--jpeg-fast --http-threads 1"
  --python-precision P  fp32 or bf16 (torch.autocast) for the FastAPI server
                     (default $python_precision)
  --workdir DIR      weights, logs and results (default $workdir)
  --effnetd PATH | --effnet PATH   binaries (default build/src/...; built if absent)
  --no-build         do not run meson/ninja when a binary is absent
  --skip-effnetd | --skip-python | --skip-bench   leave a part out
  --out FILE         also write the report to FILE
The environment reaches effnetd unchanged (OMP_WAIT_POLICY, EFFNETD_*, ...).
EOF
}

while [ $# -gt 0 ]; do
  case "$1" in
    --precision) precision=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --max-duration) max_duration=$2; shift 2 ;;
    --cycles) cycles=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --concurrency) concurrency=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --max-batch) max_batch=$2; shift 2 ;;
    --bench-runs) bench_runs=$2; shift 2 ;;
    --image) image=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --effnetd-args) effnetd_args=$2; shift 2 ;;
    --python-precision) python_precision=$2; shift 2 ;;
    --workdir) workdir=$2; shift 2 ;;
    --effnetd) effnetd=$2; shift 2 ;;
    --effnet) effnet=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --skip-effnetd) do_effnetd=0; shift ;;
    --skip-python) do_python=0; shift ;;
    --skip-bench) do_bench=0; shift ;;
    --out) out=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "serve-peers: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

die() { echo "serve-peers: $*" >&2; exit 1; }
for v in duration max_duration cycles threads warmup max_batch bench_runs seed; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "--${v//_/-} needs a number"
done
[[ $concurrency =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--concurrency needs a comma-separated list of numbers"
case "$precision" in fp32|bf16) ;; *) die "--precision must be fp32 or bf16" ;; esac
case "$python_precision" in fp32|bf16) ;; *) die "--python-precision must be fp32 or bf16" ;; esac
if [ "$threads" -lt 1 ] || [ "$max_batch" -lt 1 ] || [ "$duration" -lt 1 ]; then
  die "--threads, --max-batch and --duration must be at least 1"
fi

if [ -z "$image" ]; then
  for p in /usr/share/matplotlib/mpl-data/sample_data/grace_hopper.jpg \
           /usr/lib/python3/dist-packages/matplotlib/mpl-data/sample_data/grace_hopper.jpg; do
    [ -f "$p" ] && { image=$p; break; }
  done
  [ -n "$image" ] || die "grace_hopper.jpg not found (Debian python3-matplotlib); pass --image"
fi
[ -f "$image" ] || die "no such image: $image"
command -v wrk >/dev/null || die "wrk not found (Debian package wrk; scripts/install-deps.sh)"
command -v curl >/dev/null || die "curl not found"
py=/usr/bin/python3
if [ "$do_python" = 1 ]; then
  $py -c 'import fastapi, uvicorn, torch, torchvision, PIL' 2>/dev/null ||
    die "the FastAPI peer needs python3-fastapi, python3-uvicorn, python3-torch, python3-torchvision, python3-pil (or --skip-python)"
fi

if [ ! -x "$effnetd" ] || [ ! -x "$effnet" ]; then
  [ "$build" = 1 ] || die "$effnetd or $effnet missing (and --no-build)"
  [ -d "$root/build" ] || meson setup "$root/build" --buildtype=release >&2
  ninja -C "$root/build" >&2
fi

mkdir -p "$workdir"
weights="$workdir/v2s-torchvision-seed$seed.safetensors"
if [ ! -f "$weights" ]; then
  echo "serve-peers: writing $weights" >&2
  "$effnet" init-weights --variant s --scheme torchvision --seed "$seed" -o "$weights.tmp" >&2
  mv "$weights.tmp" "$weights"
fi

stamp=$(date +%Y%m%d-%H%M%S)
results="$workdir/serve-$stamp.jsonl"
: >"$results"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

emit() { printf '%s\n' "$1" >>"$results"; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
torch_version=$($py -c 'import torch; print(torch.__version__)' 2>/dev/null || echo "-")
emit "{\"kind\":\"meta\",\"cpu\":\"$cpu\",\"cpus\":$(nproc),\"load_start\":\"$(loadavg)\",\"precision\":\"$precision\",\"python_precision\":\"$python_precision\",\"threads\":$threads,\"max_batch\":$max_batch,\"duration\":$duration,\"image\":\"$(basename "$image")\",\"image_bytes\":$(stat -c %s "$image"),\"wrk\":\"$(wrk --version 2>&1 | head -1 | awk '{print $2}')\",\"torch\":\"$torch_version\",\"effnetd_args\":\"$effnetd_args\",\"omp_wait_policy\":\"${OMP_WAIT_POLICY:-}\",\"gomp_spincount\":\"${GOMP_SPINCOUNT:-}\",\"date\":\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\"}"

# ---- the engine alone
if [ "$do_bench" = 1 ]; then
  batches=1
  b=2
  while [ "$b" -le "$max_batch" ]; do batches="$batches,$b"; b=$((b * 2)); done
  # effnetd bounds the OpenMP spin-wait unless the environment says
  # otherwise (src/daemon/main.c); measure the engine the same way.
  bench_env=()
  if [ -z "${OMP_WAIT_POLICY:-}" ] && [ -z "${GOMP_SPINCOUNT:-}" ]; then
    bench_env=(GOMP_SPINCOUNT=10000)
  fi
  echo "serve-peers: ${bench_env[*]} effnet bench --batch $batches --precision $precision --threads $threads" >&2
  env "${bench_env[@]}" "$effnet" bench --weights "$weights" --batch "$batches" --threads "$threads" --precision "$precision" \
    --runs "$bench_runs" --json | while IFS= read -r line; do
      case "$line" in "{"*) emit "{\"kind\":\"bench\",\"data\":$line}" ;; esac
    done
fi

# ---- load levels
free_port() { $py -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_ready() { # URL LOGFILE PID
  for _ in $(seq 1 1200); do
    curl -sf -o /dev/null "$1" && return 0
    kill -0 "$3" 2>/dev/null || { cat "$2" >&2; die "server exited before it was ready"; }
    sleep 0.1
  done
  cat "$2" >&2
  die "server not ready after 120 s"
}

check_answer() { # BASE-URL
  local a
  a=$(curl -s -H 'Content-Type: image/jpeg' --data-binary @"$image" "$1/v1/classify?top_k=5")
  case "$a" in *'"predictions"'*) echo "serve-peers: $1 answers ${a:0:160}..." >&2 ;;
               *) die "$1/v1/classify answered: ${a:0:300}" ;; esac
}

metrics() { # BASE-URL -> "batches images forward_seconds cpu_seconds"
  # Forward time: effnetd_inference_seconds_sum (histogram) or the older
  # effnetd_forward_seconds_total counter.
  curl -sf "$1/metrics" | awk '$1=="effnetd_batches_total"{b=$2} $1=="effnetd_batch_images_total"{i=$2}
    $1=="effnetd_forward_seconds_total" || $1=="effnetd_inference_seconds_sum"{f=$2}
    $1=="process_cpu_seconds_total"{c=$2} END{print b+0, i+0, f+0, c+0}'
}

inflight() { # BASE-URL -> requests being served, this one not counted
  curl -sf "$1/metrics" | awk '$1=="effnetd_http_inflight_requests"{n=$2} END{print (n > 0 ? n - 1 : 0)}'
}

settle() { # NAME BASE-URL HAS-METRICS CONNECTIONS RATE
  # wrk stops with requests still in flight; let the server finish them so
  # that they do not count in the next level.
  if [ "$3" = 1 ]; then
    for _ in $(seq 1 600); do
      [ "$(inflight "$2")" -le 0 ] && return 0
      sleep 0.1
    done
    echo "serve-peers: warning: $1 still busy 60 s after a level" >&2
  else
    sleep "$($py -c "print(min(60.0, $4 / max($5, 1e-3) + 0.5))")"
  fi
}

run_wrk() { # URL CONNECTIONS SECONDS -> the WRKJSON object
  WRK_IMAGE="$image" wrk -t1 -c"$2" -d"$3"s --timeout 120s --latency -s "$here/post_image.lua" "$1" |
    sed -n 's/^WRKJSON //p'
}

stop_server() { # NAME PID: SIGTERM, then SIGKILL if it has not exited after 10 s
  kill -TERM "$2" 2>/dev/null || return 0
  for _ in $(seq 1 100); do
    kill -0 "$2" 2>/dev/null || { wait "$2" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  echo "serve-peers: warning: $1 still running 10 s after SIGTERM; killed (see its log)" >&2
  kill -KILL "$2" 2>/dev/null || true
  wait "$2" 2>/dev/null || true
}

run_levels() { # NAME BASE-URL HAS-METRICS
  local name=$1 url=$2 has_metrics=$3 c secs rate="" m0 m1 j t0 t1
  echo "serve-peers: $name: warm-up ${warmup}s" >&2
  if [ "$warmup" -gt 0 ]; then
    run_wrk "$url/v1/classify" 2 "$warmup" >/dev/null
    settle "$name" "$url" "$has_metrics" 2 1
  fi
  for c in ${concurrency//,/ }; do
    secs=$duration
    if [ -n "$rate" ]; then
      secs=$($py -c "import math; print(max($duration, min($max_duration, math.ceil($cycles * $c / max($rate, 1e-3)))))")
    fi
    m0="0 0 0 0"
    [ "$has_metrics" = 1 ] && m0=$(metrics "$url")
    t0=$(date +%s.%N)
    j=$(run_wrk "$url/v1/classify" "$c" "$secs")
    [ -n "$j" ] || die "wrk gave no result for $name at concurrency $c"
    rate=$($py -c "import json; w=json.loads('$j'); print((w['requests'] - w['err_status']) / (w['duration_us'] / 1e6))")
    # After the last level only effnetd's counters need the stragglers.
    if [ "$has_metrics" = 1 ] || [ "$c" != "${concurrency##*,}" ]; then
      settle "$name" "$url" "$has_metrics" "$c" "$rate"
    fi
    m1="0 0 0 0"
    [ "$has_metrics" = 1 ] && m1=$(metrics "$url")
    t1=$(date +%s.%N)
    read -r b0 i0 f0 c0 <<<"$m0"
    read -r b1 i1 f1 c1 <<<"$m1"
    emit "{\"kind\":\"load\",\"server\":\"$name\",\"concurrency\":$c,\"seconds\":$secs,\"load\":\"$(loadavg)\",\"wrk\":$j,\"batches\":$((b1 - b0)),\"batch_images\":$((i1 - i0)),\"forward_s\":$($py -c "print(round($f1 - $f0, 6))"),\"cpu_s\":$($py -c "print(round($c1 - $c0, 3))"),\"window_s\":$($py -c "print(round($t1 - $t0, 3))")}"
    echo "serve-peers: $name c=$c ${secs}s: $(printf '%.2f' "$rate") images/s, load $(loadavg)" >&2
  done
}

if [ "$do_effnetd" = 1 ]; then
  log="$workdir/effnetd-$stamp.log"
  # shellcheck disable=SC2086  # effnetd_args is split into words on purpose
  "$effnetd" --weights "$weights" --listen 127.0.0.1:0 --precision "$precision" --threads "$threads" \
    --max-batch "$max_batch" $effnetd_args 2>"$log" &
  pid=$!
  pids+=("$pid")
  port=""
  for _ in $(seq 1 1200); do
    port=$(sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9]*\).*|\1|p' "$log" | head -1)
    [ -n "$port" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; die "effnetd exited"; }
    sleep 0.1
  done
  [ -n "$port" ] || { cat "$log" >&2; die "effnetd did not listen within 120 s"; }
  wait_ready "http://127.0.0.1:$port/readyz" "$log" "$pid"
  check_answer "http://127.0.0.1:$port"
  run_levels effnetd "http://127.0.0.1:$port" 1
  stop_server effnetd "$pid"
fi

if [ "$do_python" = 1 ]; then
  log="$workdir/fastapi-$stamp.log"
  port=$(free_port)
  $py "$here/fastapi_server.py" --weights "$weights" --port "$port" --threads "$threads" \
    --precision "$python_precision" 2>"$log" &
  pid=$!
  pids+=("$pid")
  wait_ready "http://127.0.0.1:$port/healthz" "$log" "$pid"
  check_answer "http://127.0.0.1:$port"
  run_levels fastapi "http://127.0.0.1:$port" 0
  stop_server fastapi "$pid"
fi

emit "{\"kind\":\"end\",\"load_end\":\"$(loadavg)\"}"
echo "serve-peers: results in $results" >&2
if [ -n "$out" ]; then
  $py "$here/serve_report.py" "$results" | tee "$out"
else
  $py "$here/serve_report.py" "$results"
fi

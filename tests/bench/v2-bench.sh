#!/usr/bin/env bash
# KServe v2 against /v1 and against the engine, on loopback with wrk:
#
#   1. v2 BYTES requests (one JPEG, binary tensor data) against
#      POST /v1/classify of the same JPEG, at the same concurrency: the bar
#      is v2 >= 0.95x /v1 images/s;
#   2. v2 FP32 binary requests of client-preprocessed tensors (the image
#      module's own tensor of the same photo; 1 image per request, and
#      max-batch images per request) against `effnet bench`'s best batched
#      rate on the same weights: the bar is >= 0.95x, since the server does
#      no decoding for them.
#
# The kinds take turns within each round (v1, v2 BYTES, v2 FP32 x1, v2 FP32
# xB) so that the numbers of one ratio are measured close in time; --rounds
# gives the median and the best of each ratio over the rounds. Prints a
# markdown report.
#
#   tests/bench/v2-bench.sh [--duration 10] [--concurrency 16] [--threads 2] [--rounds 2]
#   tests/bench/v2-bench.sh --workers 2      # effnetd: 2 workers of threads/2 each
#
# A benchmark run by hand, not a test: it never fails on a slow result.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

duration=10
concurrency=16
threads=2
workers=1
rounds=2
max_batch=8
variant=s
seed=1
image=""
workdir="${XDG_CACHE_HOME:-$HOME/.cache}/effnetd-bench/v2"
effnetd="$root/build/src/daemon/effnetd"
effnet="$root/build/src/cli/effnet"
preprocess="$root/build/tests/image/image_preprocess"
out=""

usage() {
  cat <<USAGE
usage: $0 [options]
  --duration S       seconds of load per kind and round (default $duration)
  --concurrency N    wrk connections (default $concurrency)
  --threads N        CPU threads: effnet bench --threads, and effnetd's workers x
                     threads (default $threads)
  --workers N        effnetd --workers, each with threads/N oneDNN threads
                     (default $workers)
  --rounds N         rounds; each ratio's median and best are reported (default $rounds)
  --max-batch N      effnetd --max-batch; effnet bench runs 1, 2, 4, ... N (default $max_batch)
  --variant V        effnet init-weights --variant, torchvision scheme (default $variant)
  --image FILE       JPEG to send (default matplotlib's grace_hopper.jpg)
  --workdir DIR      weights, bodies and logs (default $workdir)
  --out FILE         also write the report there
USAGE
}

die() { echo "v2-bench: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    --concurrency) concurrency=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --max-batch) max_batch=$2; shift 2 ;;
    --variant) variant=$2; shift 2 ;;
    --image) image=$2; shift 2 ;;
    --workdir) workdir=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done

command -v wrk >/dev/null || die "wrk not found (Debian package wrk; scripts/install-deps.sh)"
[ -x "$effnetd" ] && [ -x "$effnet" ] && [ -x "$preprocess" ] || die "build first: meson setup build && ninja -C build"
[ "$workers" -ge 1 ] && [ $((threads % workers)) -eq 0 ] || die "--threads must be a multiple of --workers"
if [ -z "$image" ]; then
  for p in /usr/share/matplotlib/mpl-data/sample_data/grace_hopper.jpg \
           /usr/lib/python3/dist-packages/matplotlib/mpl-data/sample_data/grace_hopper.jpg; do
    [ -f "$p" ] && image=$p && break
  done
fi
[ -f "$image" ] || die "no image: pass --image FILE (or install python3-matplotlib)"
mkdir -p "$workdir"
weights="$workdir/$variant-torchvision-seed$seed.safetensors"
if [ ! -f "$weights" ]; then
  "$effnet" init-weights --variant "$variant" --scheme torchvision --seed "$seed" -o "$weights.tmp" >&2
  mv "$weights.tmp" "$weights"
fi
results="$workdir/results.jsonl"
: > "$results"

# The engine's best batched rate: every power of two up to 8 (or max-batch,
# if larger), whatever batch size effnetd is given.
batches=1
b=2
while [ "$b" -le "$max_batch" ] || [ "$b" -le 8 ]; do batches="$batches,$b"; b=$((b * 2)); done
bench() {  # the engine alone, while effnetd idles
  echo "v2-bench: round $round: effnet bench --batch $batches --threads $threads" >&2
  # The same OpenMP spin as effnetd sets for itself (src/daemon/main.c).
  GOMP_SPINCOUNT=${GOMP_SPINCOUNT:-10000} "$effnet" bench --weights "$weights" --batch "$batches" \
    --threads "$threads" --runs 3 --json | sed "s/^/{\"kind\":\"bench\",\"round\":$round,\"data\":/; s/\$/}/" \
    >> "$results"
}

log="$workdir/effnetd.log"
EFFNETD_ACCESS_LOG=false "$effnetd" --weights "$weights" --listen 127.0.0.1:0 --workers "$workers" \
  --threads $((threads / workers)) --max-batch "$max_batch" \
  --max-images "$max_batch" 2> "$log" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
port=""
for _ in $(seq 1 600); do
  port=$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log" | head -1)
  [ -n "$port" ] && break
  kill -0 $pid 2>/dev/null || die "effnetd exited: $(tail -5 "$log")"
  sleep 0.1
done
[ -n "$port" ] || die "effnetd did not start"
base="http://127.0.0.1:$port"

# Request bodies: v2 BYTES of the JPEG, v2 FP32 of the image module's tensor
# (one image, and max-batch copies), each a JSON header then binary data.
/usr/bin/python3 - "$base" "$image" "$preprocess" "$workdir" "$max_batch" <<'PY'
import json, struct, subprocess, sys, urllib.request
import numpy as np
base, image, pre, workdir, nb = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
m = json.load(urllib.request.urlopen(base + "/v1/models"))["models"][0]
pp = m["preprocessing"]
npy = f"{workdir}/tensor.npy"
subprocess.run([pre, "--size", str(m["input_size"]), "--resize", pp["resize"], "--crop", pp["crop"],
                "--crop-pct", repr(pp["crop_pct"]), "--mean", ",".join(map(repr, pp["mean"])),
                "--std", ",".join(map(repr, pp["std"])), image, npy], check=True)
x = np.load(npy).astype("<f4")
jpeg = open(image, "rb").read()
def write(name, inp, raw):
    head = json.dumps({"inputs": [inp], "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}]}).encode()
    open(f"{workdir}/{name}.body", "wb").write(head + raw)
    open(f"{workdir}/{name}.hl", "w").write(str(len(head)))
raw = struct.pack("<I", len(jpeg)) + jpeg
write("bytes", {"name": "input", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(raw)}}, raw)
for n in (1, nb):
    raw = np.repeat(x[None], n, axis=0).tobytes()
    write(f"fp32x{n}", {"name": "input", "datatype": "FP32", "shape": [n] + list(x.shape),
                        "parameters": {"binary_data_size": len(raw)}}, raw)
print(m["name"], file=open(f"{workdir}/model", "w"))
PY
model=$(cat "$workdir/model")

idle() {  # until no image waits or runs: abandoned requests' jobs still finish
  for _ in $(seq 1 1200); do
    curl -s "$base/metrics" | awk '/^effnetd_(queue_images|busy_workers) /{s+=$2} END{exit s>0}' && return
    sleep 0.1
  done
}

run() {  # kind images_per_request connections url body [header_len]
  local kind=$1 per=$2 conns=$3 url=$4 body=$5 hl=${6:-}
  local ctype=application/octet-stream
  [ "$kind" = v1 ] && ctype=image/jpeg
  local line
  line=$(env WRK_IMAGE="$body" WRK_CONTENT_TYPE=$ctype ${hl:+WRK_INFER_HEADER_LEN=$hl} \
         wrk -t1 -c"$conns" -d"${duration}s" --timeout 60s -s "$here/post_image.lua" "$url" | sed -n 's/^WRKJSON //p')
  echo "{\"kind\":\"$kind\",\"per_request\":$per,\"connections\":$conns,\"round\":$round,\"wrk\":$line}" >> "$results"
  echo "v2-bench: round $round $kind x$per: $line" >&2
  idle
}

v2="$base/v2/models/$model/infer"
# Warm up every path once.
for k in bytes fp32x1; do curl -s -o /dev/null -H "Inference-Header-Content-Length: $(cat "$workdir/$k.hl")" \
  --data-binary @"$workdir/$k.body" "$v2"; done
# Requests of max-batch images: as many connections as the queue (64) holds.
conns_b=$((64 / max_batch / 2)); [ "$conns_b" -ge 1 ] || conns_b=1
for round in $(seq 1 "$rounds"); do
  bench
  run v1 1 "$concurrency" "$base/v1/classify" "$image"
  run v2-bytes 1 "$concurrency" "$v2" "$workdir/bytes.body" "$(cat "$workdir/bytes.hl")"
  run v2-fp32 1 "$concurrency" "$v2" "$workdir/fp32x1.body" "$(cat "$workdir/fp32x1.hl")"
  if [ "$max_batch" -gt 1 ]; then
    run v2-fp32 "$max_batch" "$conns_b" "$v2" "$workdir/fp32x$max_batch.body" "$(cat "$workdir/fp32x$max_batch.hl")"
  fi
done
kill $pid; wait $pid 2>/dev/null || true
trap - EXIT

/usr/bin/python3 - "$results" "$concurrency" "$duration" "$(basename "$image")" "$model" \
  "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')" "$("$effnet" cpu 2>/dev/null | head -1)" \
  "$(cut -d' ' -f1-3 /proc/loadavg)" "$workers x $((threads / workers))" "$max_batch" <<'PY' | tee ${out:+"$out"}
import json, sys
path, conc, dur, image, model, cpu, isa, load, shape, mb = sys.argv[1:11]
rows = [json.loads(l) for l in open(path)]
rounds = sorted({r["round"] for r in rows})
print(f"CPU: {cpu}; effnet cpu: {isa}; model {model}; {dur} s per kind and round, {len(rounds)} rounds; "
      f"image {image}; load average at the end {load}; effnetd workers x threads {shape}, max-batch {mb}\n")
print("| round | requests | images/request | connections | images/s | p50 ms | p99 ms | non-2xx | ratio |")
print("|---:|---|---:|---:|---:|---:|---:|---:|---|")
names = {"v1": "POST /v1/classify (JPEG)", "v2-bytes": "v2 BYTES (JPEG, binary)", "v2-fp32": "v2 FP32 (binary tensor)"}
ratios = {}
for rd in rounds:
    rr = [r for r in rows if r["round"] == rd]
    bench = [r["data"] for r in rr if r["kind"] == "bench"]
    top = max(bench, key=lambda b: b["images_per_s"])
    print(f"| {rd} | effnet bench, best of batch {','.join(str(b['batch']) for b in bench)} | {top['batch']} | | "
          f"{top['images_per_s']:.2f} | {top['ms_per_batch']:.1f} | | | |")
    v1 = None
    for r in rr:
        if r["kind"] == "bench":
            continue
        w = r["wrk"]
        ips = (w["requests"] - w["err_status"]) * r["per_request"] / (w["duration_us"] / 1e6)
        ratio, key = "", None
        if r["kind"] == "v1":
            v1 = ips
        elif r["kind"] == "v2-bytes" and v1:
            ratio, key = ips / v1, "v2 BYTES / v1"
        elif r["kind"] == "v2-fp32":
            ratio, key = ips / top["images_per_s"], f"v2 FP32 x{r['per_request']} / effnet bench"
        if key:
            ratios.setdefault(key, []).append(ratio)
            ratio = f"{ratio:.3f}"
        print(f"| {rd} | {names[r['kind']]} | {r['per_request']} | {r['connections']} | {ips:.2f} | "
              f"{w['lat_p50_us'] / 1e3:.1f} | {w['lat_p99_us'] / 1e3:.1f} | {w['err_status']} | {ratio} |")
print("\nRatios over the rounds, median and best (the bar is 0.95 for each):\n")
for k, v in ratios.items():
    v = sorted(v)
    med = v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2
    print(f"- {k}: median {med:.3f}, best {v[-1]:.3f} ({len(v)} rounds)")
PY

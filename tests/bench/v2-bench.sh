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
# keeps each kind's best round. Prints a markdown report.
#
#   tests/bench/v2-bench.sh [--duration 10] [--concurrency 16] [--threads 2] [--rounds 2]
#
# A benchmark run by hand, not a test: it never fails on a slow result.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

duration=10
concurrency=16
threads=2
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
  --threads N        effnetd --threads and effnet bench --threads (default $threads)
  --rounds N         rounds; each kind keeps its best (default $rounds)
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

batches=1
b=2
while [ "$b" -le "$max_batch" ]; do batches="$batches,$b"; b=$((b * 2)); done
echo "v2-bench: effnet bench --batch $batches --threads $threads" >&2
# The same OpenMP spin as effnetd sets for itself (src/daemon/main.c).
GOMP_SPINCOUNT=${GOMP_SPINCOUNT:-10000} "$effnet" bench --weights "$weights" --batch "$batches" \
  --threads "$threads" --runs 5 --json | sed 's/^/{"kind":"bench","data":/; s/$/}/' >> "$results"

log="$workdir/effnetd.log"
"$effnetd" --weights "$weights" --listen 127.0.0.1:0 --threads "$threads" --max-batch "$max_batch" \
  --max-images "$max_batch" --access-log false 2> "$log" &
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

run() {  # kind images_per_request url body [header_len]
  local kind=$1 per=$2 url=$3 body=$4 hl=${5:-}
  local ctype=application/octet-stream
  [ "$kind" = v1 ] && ctype=image/jpeg
  local line
  line=$(WRK_IMAGE=$body WRK_CONTENT_TYPE=$ctype ${hl:+WRK_INFER_HEADER_LEN=$hl} \
         wrk -t1 -c"$concurrency" -d"${duration}s" --timeout 60s -s "$here/post_image.lua" "$url" | sed -n 's/^WRKJSON //p')
  echo "{\"kind\":\"$kind\",\"per_request\":$per,\"round\":$round,\"wrk\":$line}" >> "$results"
  echo "v2-bench: round $round $kind: $line" >&2
}

v2="$base/v2/models/$model/infer"
# Warm up every path once.
for k in bytes fp32x1; do curl -s -o /dev/null -H "Inference-Header-Content-Length: $(cat "$workdir/$k.hl")" \
  --data-binary @"$workdir/$k.body" "$v2"; done
for round in $(seq 1 "$rounds"); do
  run v1 1 "$base/v1/classify" "$image"
  run v2-bytes 1 "$v2" "$workdir/bytes.body" "$(cat "$workdir/bytes.hl")"
  run v2-fp32 1 "$v2" "$workdir/fp32x1.body" "$(cat "$workdir/fp32x1.hl")"
  run v2-fp32 "$max_batch" "$v2" "$workdir/fp32x$max_batch.body" "$(cat "$workdir/fp32x$max_batch.hl")"
done
kill $pid; wait $pid 2>/dev/null || true
trap - EXIT

/usr/bin/python3 - "$results" "$concurrency" "$duration" "$(basename "$image")" "$model" \
  "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')" "$("$effnet" cpu 2>/dev/null | head -1)" \
  <<'PY' | tee ${out:+"$out"}
import json, sys
path, conc, dur, image, model, cpu, isa = sys.argv[1:8]
rows = [json.loads(l) for l in open(path)]
bench = [r["data"] for r in rows if r["kind"] == "bench"]
best = max(bench, key=lambda b: b["images_per_s"])
best_kind = {}
for r in rows:
    if r["kind"] == "bench":
        continue
    w = r["wrk"]
    ok = w["requests"] - w["err_status"]
    r["images_per_s"] = ok * r["per_request"] / (w["duration_us"] / 1e6)
    key = (r["kind"], r["per_request"])
    if key not in best_kind or r["images_per_s"] > best_kind[key]["images_per_s"]:
        best_kind[key] = r
print(f"CPU: {cpu}; effnet cpu: {isa}; model {model}; {conc} connections, {dur} s per kind and round, "
      f"best of {max(r['round'] for r in rows if 'round' in r)} rounds; image {image}\n")
print("| batch | effnet bench images/s | ms/batch |\n|---:|---:|---:|")
for b in bench:
    print(f"| {b['batch']} | {b['images_per_s']:.2f} | {b['ms_per_batch']:.1f} |")
print("\n| requests | images/request | images/s | p50 ms | p99 ms | non-2xx | ratio |\n|---|---:|---:|---:|---:|---:|---|")
v1 = best_kind.get(("v1", 1))
for (kind, per), r in sorted(best_kind.items()):
    w = r["wrk"]
    if kind == "v2-bytes" and v1:
        ratio = f"{r['images_per_s'] / v1['images_per_s']:.3f}x /v1 (bar 0.95)"
    elif kind == "v2-fp32":
        ratio = f"{r['images_per_s'] / best['images_per_s']:.3f}x effnet bench batch {best['batch']} (bar 0.95)"
    else:
        ratio = ""
    name = {"v1": "POST /v1/classify (JPEG)", "v2-bytes": "v2 BYTES (JPEG, binary)",
            "v2-fp32": "v2 FP32 (binary tensor)"}[kind]
    print(f"| {name} | {per} | {r['images_per_s']:.2f} | {w['lat_p50_us'] / 1e3:.1f} | {w['lat_p99_us'] / 1e3:.1f} "
          f"| {w['err_status']} | {ratio} |")
PY

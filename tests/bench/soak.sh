#!/usr/bin/env bash
# Soak benchmark: effnetd on the seeded default weights under wrk at
# saturation for SOAK_MINUTES (default 30), with good requests (a photo to
# POST /v1/classify) mixed with bad ones (corrupt JPEG, wrong media type,
# unknown path) and oversize ones (a body over max-body-bytes, an image over
# max-pixels, a multipart request over max-request-pixels), each kind from
# its own wrk process. Samples the daemon's RSS every SOAK_SAMPLE_S seconds
# and prints a markdown report: RSS median over the first and the last five
# minutes and their ratio, good requests and the errors among them, the
# status counts of each bad and oversize kind, p50/p99 of the good ones.
#
#   tests/bench/soak.sh                     # 30 minutes
#   SOAK_MINUTES=3 tests/bench/soak.sh      # a quick check of the script
#   nice tests/bench/soak.sh --out soak.md  # on a shared machine
#
# The daemon runs with its defaults (listen on a free loopback port, access
# log off so that the log does not grow for half an hour). A benchmark run by
# hand, not a test: the exit status is non-zero only when the daemon died or
# wrk could not run, never for a slow or leaky result; read the report.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

minutes=${SOAK_MINUTES:-30}
sample_s=${SOAK_SAMPLE_S:-5}
good_conns=${SOAK_GOOD_CONNECTIONS:-16}
bad_delay_ms=${SOAK_BAD_DELAY_MS:-20}
big_delay_ms=${SOAK_BIG_DELAY_MS:-200}
workdir="${XDG_CACHE_HOME:-$HOME/.cache}/effnetd-bench/soak"
effnetd="$root/build/src/daemon/effnetd"
effnet="$root/build/src/cli/effnet"
photo=/usr/share/matplotlib/mpl-data/sample_data/grace_hopper.jpg
out=""
effnetd_args=""

usage() {
  cat <<EOF
usage: $0 [--minutes N] [--out FILE] [--effnetd-args "..."] [--workdir DIR]
  --minutes N        length of the run (default \$SOAK_MINUTES or 30)
  --out FILE         also write the report to FILE
  --effnetd-args S   extra effnetd arguments
  --workdir DIR      inputs, logs, RSS samples (default $workdir)
Environment: SOAK_SAMPLE_S (RSS sampling period, 5), SOAK_GOOD_CONNECTIONS
(wrk connections of good requests, 16), SOAK_BAD_DELAY_MS (pause between bad
requests on their one connection, 20), SOAK_BIG_DELAY_MS (the same for the
oversize body, 200).
EOF
}

while [ $# -gt 0 ]; do
  case $1 in
    --minutes) minutes=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --effnetd-args) effnetd_args=$2; shift 2 ;;
    --workdir) workdir=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done

die() { echo "soak: $*" >&2; exit 1; }
command -v wrk >/dev/null || die "wrk not found (Debian package wrk; scripts/install-deps.sh)"
command -v python3 >/dev/null || die "python3 not found"
[ -f "$photo" ] || die "$photo not found (Debian package python3-matplotlib)"
if [ ! -x "$effnetd" ] || [ ! -x "$effnet" ]; then
  [ -d "$root/build" ] || meson setup "$root/build" >&2
  ninja -C "$root/build" >&2
fi
mkdir -p "$workdir"

# The seeded default weights, as scripts/run.sh writes them.
weights="$root/build/default-v2s.safetensors"
if [ ! -f "$weights" ]; then
  "$effnet" init-weights --variant s --seed 1 -o "$weights.tmp" >&2
  mv "$weights.tmp" "$weights"
fi

# ---- request bodies -------------------------------------------------------------
# Derived from the photo: its SOF header patched to claim more pixels (the
# limits are checked from headers, before decoding, so the file stays small),
# truncated and overwritten for the corrupt one.
python3 - "$photo" "$workdir" <<'EOF'
import os, struct, sys
photo, wd = sys.argv[1], sys.argv[2]
d = open(photo, "rb").read()

def sof_offset(b):
    i = 2
    while True:
        j = b.index(b"\xff", i)
        m = b[j + 1]
        if 0xC0 <= m <= 0xCF and m not in (0xC4, 0xC8, 0xCC):
            return j
        i = j + 2 + struct.unpack(">H", b[j + 2:j + 4])[0]

def with_size(b, w, h):
    j = sof_offset(b)
    return b[:j + 5] + struct.pack(">HH", h, w) + b[j + 9:]

def put(name, data):
    with open(os.path.join(wd, name), "wb") as f:
        f.write(data)

put("good.jpg", d)
# The first third of the entropy-coded data, then bytes that are no JPEG.
put("corrupt.jpg", d[: len(d) // 3] + bytes(range(256)) * 8)
# 7000 x 7000 = 49 M pixels: over max-pixels (40 M).
put("pixels.jpg", with_size(d, 7000, 7000))
# Three 6000 x 6000 images, 108 M pixels together: each under max-pixels,
# the request over max-request-pixels (100 M).
big = with_size(d, 6000, 6000)
parts = b"".join(b"--soakboundary\r\nContent-Disposition: form-data; name=\"image\"; filename=\"%d.jpg\"\r\n"
                 b"Content-Type: image/jpeg\r\n\r\n" % i + big + b"\r\n" for i in range(3))
put("request-pixels.multipart", parts + b"--soakboundary--\r\n")
# 11 MiB: over max-body-bytes (10 MiB).
put("body.bin", d + b"\0" * (11 * 1024 * 1024 - len(d)))
EOF

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
log="$workdir/effnetd.log"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# shellcheck disable=SC2086
"$effnetd" --weights "$weights" --listen "127.0.0.1:$port" --access-log=false $effnetd_args >"$log" 2>&1 &
daemon=$!
pids+=("$daemon")
for _ in $(seq 1 1200); do
  curl -sf -o /dev/null "$base/readyz" && break
  kill -0 "$daemon" 2>/dev/null || { cat "$log" >&2; die "effnetd exited before it was ready"; }
  sleep 0.1
done
curl -sf -o /dev/null "$base/readyz" || die "effnetd not ready after 120 s (see $log)"
answer=$(curl -s -H 'Content-Type: image/jpeg' --data-binary @"$workdir/good.jpg" "$base/v1/classify")
case "$answer" in *'"predictions"'*) ;; *) die "classify answered: ${answer:0:300}" ;; esac

# ---- load ---------------------------------------------------------------------------
secs=$((minutes * 60))
samples="$workdir/rss.txt"
: >"$samples"
(
  t0=$(date +%s)
  while kill -0 "$daemon" 2>/dev/null; do
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$daemon/status" 2>/dev/null || true)
    [ -n "$rss" ] && echo "$(( $(date +%s) - t0 )) $rss" >>"$samples"
    sleep "$sample_s"
  done
) &
sampler=$!
pids+=("$sampler")

# kind, connections, pause (ms), body file, content type, path
kinds=(
  "good $good_conns 0 good.jpg image/jpeg /v1/classify"
  "corrupt-jpeg 1 $bad_delay_ms corrupt.jpg image/jpeg /v1/classify"
  "wrong-media-type 1 $bad_delay_ms good.jpg text/plain /v1/classify"
  "unknown-path 1 $bad_delay_ms good.jpg image/jpeg /v1/no-such-path"
  "body-over-limit 1 $big_delay_ms body.bin image/jpeg /v1/classify"
  "pixels-over-limit 1 $bad_delay_ms pixels.jpg image/jpeg /v1/classify"
  "request-pixels-over-limit 1 $bad_delay_ms request-pixels.multipart multipart/form-data;boundary=soakboundary /v1/classify"
)
echo "soak: effnetd pid $daemon on $base; ${minutes} min of load, RSS every ${sample_s} s" >&2
wrk_pids=()
for k in "${kinds[@]}"; do
  read -r name conns pause body ctype path <<<"$k"
  SOAK_BODY="$workdir/$body" SOAK_CONTENT_TYPE="$ctype" SOAK_DELAY_MS="$pause" \
    wrk -t1 -c"$conns" -d"${secs}s" --timeout 30s -s "$here/soak.lua" "$base$path" \
    >"$workdir/wrk-$name.txt" 2>&1 &
  wrk_pids+=("$!")
  pids+=("$!")
done
for p in "${wrk_pids[@]}"; do wait "$p" || true; done
alive=1
kill -0 "$daemon" 2>/dev/null || alive=0
after=""
if [ "$alive" = 1 ]; then
  after=$(curl -s -m 30 -H 'Content-Type: image/jpeg' --data-binary @"$workdir/good.jpg" "$base/v1/classify" | head -c 120)
  curl -s -m 10 "$base/metrics" >"$workdir/metrics.txt" || true
fi
kill "$sampler" 2>/dev/null || true

# ---- report -------------------------------------------------------------------------
report=$(python3 - "$workdir" "$minutes" "$alive" "$after" "${kinds[@]}" <<'EOF'
import json, statistics, sys
wd, minutes, alive, after = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
kinds = [k.split()[0] for k in sys.argv[5:]]
res = {}
for k in kinds:
    for line in open(f"{wd}/wrk-{k}.txt"):
        if line.startswith("SOAKJSON "):
            res[k] = json.loads(line[len("SOAKJSON "):])
samples = [tuple(map(int, l.split())) for l in open(f"{wd}/rss.txt") if l.strip()]
span = samples[-1][0] if samples else 0
win = min(300, span / 3)            # five minutes, or a third of a short run
first = [r for t, r in samples if t <= win]
last = [r for t, r in samples if t >= span - win]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"Soak: {minutes} min, CPU {cpu} ({open('/proc/loadavg').read().split()[0]} load at the end), daemon "
      f"{'alive' if alive else 'DEAD'} at the end; a request after the load: {after[:60] or '-'}")
print()
if samples:
    m0, m1 = statistics.median(first), statistics.median(last)
    print(f"RSS ({len(samples)} samples): median of the first {win / 60:.1f} min {m0 / 1024:.1f} MiB, "
          f"of the last {win / 60:.1f} min {m1 / 1024:.1f} MiB, ratio {m1 / m0:.3f}; "
          f"max {max(r for _, r in samples) / 1024:.1f} MiB")
    print()
print("| kind | requests | req/s | statuses | socket errors (connect/read/write/timeout) | p50 ms | p99 ms |")
print("|---|---|---|---|---|---|---|")
for k in kinds:
    r = res.get(k)
    if not r:
        print(f"| {k} | wrk gave no result | | | | | |")
        continue
    st = ", ".join(f"{s}: {n}" for s, n in sorted(r["status"].items()))
    sock = f'{r["err_connect"]}/{r["err_read"]}/{r["err_write"]}/{r["err_timeout"]}'
    rate = r["requests"] / (r["duration_us"] / 1e6)
    print(f'| {k} | {r["requests"]} | {rate:.1f} | {st} | {sock} | {r["lat_p50_us"] / 1000:.1f} | '
          f'{r["lat_p99_us"] / 1000:.1f} |')
g = res.get("good")
if g:
    bad = sum(n for s, n in g["status"].items() if s != "200")
    sock = g["err_connect"] + g["err_read"] + g["err_write"] + g["err_timeout"]
    print()
    print(f'Good requests: {g["requests"]}, {g["status"].get("200", 0)} answered 200; errors: {bad} non-200, '
          f'{sock} socket errors; p50 {g["lat_p50_us"] / 1000:.1f} ms, p99 {g["lat_p99_us"] / 1000:.1f} ms')
EOF
)
echo "$report"
[ -z "$out" ] || echo "$report" >"$out"
[ "$alive" = 1 ] || die "effnetd died during the soak (see $log)"

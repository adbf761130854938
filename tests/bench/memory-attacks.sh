#!/usr/bin/env bash
# Attacks on effnetd's memory, each against a fresh daemon on loopback:
#
#   1. 24 clients each send 16 JPEGs with top_k=1000 and never read;
#   2. multipart requests of a tiny JPEG then 31 flat PNGs (72 clients);
#   3. slow /v2 uploads of 96 MiB from one address, then a classify from
#      another;
#   4. /v2 JSON bodies of [[],[],...] from two addresses at once;
#   5. gRPC: 192 connections x 4 streams each send 1 MiB of a message
#      announced as v2-max-body-bytes and stall (grpc-stalled-uploads).
#
# For each it prints the daemon's peak RSS growth (VmHWM, reset just before
# the attack) next to the budget it should stay under (memory-budget), and
# /healthz latency (median) idle and during the attack, as a markdown table.
# --compare runs the same attacks against another build in the same run.
#
#   tests/bench/memory-attacks.sh [--variant s] [--budget 512M] [--shapes unread-answers,slow-pngs,...]
#                                 [--compare OTHER/effnetd] [--png-clients 72] [--json-mb 16]
#
# A benchmark run by hand, not a test: it never fails on a large result.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

variant=s
args=()
while [ $# -gt 0 ]; do
        case "$1" in
        --variant) variant=$2; shift 2 ;;
        *) args+=("$1"); shift ;;
        esac
done
effnetd="$root/build/src/daemon/effnetd"
effnet="$root/build/src/cli/effnet"
[ -x "$effnetd" ] && [ -x "$effnet" ] || { meson setup "$root/build" >/dev/null; ninja -C "$root/build"; }
workdir="${XDG_CACHE_HOME:-$HOME/.cache}/effnetd-bench/memory"
mkdir -p "$workdir"
weights="$workdir/$variant.safetensors"
[ -f "$weights" ] || "$effnet" init-weights --variant "$variant" --seed 1 -o "$weights"
# Debian's python3 (the one first on PATH may not see Debian's packages).
exec /usr/bin/python3 "$here/memory_attacks.py" "$effnetd" "$weights" "${args[@]}"

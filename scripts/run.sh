#!/usr/bin/env bash
# Installs what is needed, builds, writes the embedded default weights (seeded,
# nothing downloaded) and starts the effnetd daemon on them. Extra arguments go
# to effnetd (e.g. --listen 0.0.0.0:8080 --precision auto); see effnetd --help.
set -eu
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
[ -f build/build.ninja ] || meson setup build
ninja -C build

weights=build/default-v2s.safetensors
if [ ! -f "$weights" ]; then
  ./build/src/cli/effnet init-weights --variant s --seed 1 -o "$weights"
fi
listen="${EFFNETD_LISTEN:-127.0.0.1:8080}"
photo=/usr/share/matplotlib/mpl-data/sample_data/grace_hopper.jpg
echo "effnetd: starting on $listen; try:" >&2
echo "  curl -s -H 'Content-Type: image/jpeg' --data-binary @$photo http://$listen/v1/classify" >&2
exec ./build/src/daemon/effnetd --weights "$weights" --listen "$listen" "$@"

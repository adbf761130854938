#!/usr/bin/env bash
# Installs what is needed, builds, writes the embedded default weights (seeded,
# nothing downloaded) and runs the engine on them.
set -eu
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
[ -f build/build.ninja ] || meson setup build
ninja -C build

weights=build/default-v2s.safetensors
if [ ! -f "$weights" ]; then
  ./build/src/cli/effnet init-weights --variant s --seed 1 -o "$weights"
fi
./build/src/cli/effnet inspect "$weights"
exec ./build/src/cli/effnet bench --weights "$weights" --batch 1,8 "$@"

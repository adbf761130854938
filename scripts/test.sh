#!/usr/bin/env bash
# Installs what is needed, builds, runs every meson test suite and prints
# "N passed, N failed". Usage: scripts/test.sh [--asan] [meson test args...]
set -eu
cd "$(dirname "$0")/.."

builddir=build
setup_args=()
if [ "${1:-}" = "--asan" ]; then
  shift
  builddir=build-asan
  setup_args=(-Db_sanitize=address,undefined -Dbuildtype=debugoptimized -Db_lundef=false)
fi

bash scripts/install-deps.sh
if [ ! -f "$builddir/build.ninja" ]; then
  meson setup "$builddir" "${setup_args[@]}"
fi
ninja -C "$builddir"

# oneDNN's OpenMP runtime and ASan: keep leak checks on, silence the known
# one-time allocations of the runtime itself through the suppressions file.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$PWD/tests/lsan.supp:print_suppressions=0}"

status=0
meson test -C "$builddir" --print-errorlogs --num-processes 1 "$@" || status=$?

/usr/bin/python3 - "$builddir/meson-logs/testlog.json" <<'PY'
import json, sys
passed = failed = skipped = 0
for line in open(sys.argv[1]):
    r = json.loads(line).get("result")
    if r in ("OK", "EXPECTEDFAIL"):
        passed += 1
    elif r == "SKIP":
        skipped += 1
    else:
        failed += 1
print(f"{passed} passed, {failed} failed, {skipped} skipped")
PY
exit $status

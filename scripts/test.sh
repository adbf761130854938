#!/usr/bin/env bash
# Installs what is needed, builds, runs every meson test suite and prints
# "N passed, N failed". Usage: scripts/test.sh [--asan | --tsan] [meson test args...]
#   --asan  AddressSanitizer + UBSan build in build-asan
#   --tsan  ThreadSanitizer build in build-tsan; with no test arguments it
#           runs the tests where threads meet: the batcher and the decode
#           pool, /v1 and /v2 traffic, reloads, signals, abandoned requests
set -eu
cd "$(dirname "$0")/.."

builddir=build
setup_args=()
tsan=false
if [ "${1:-}" = "--asan" ]; then
  shift
  builddir=build-asan
  setup_args=(-Db_sanitize=address,undefined -Dbuildtype=debugoptimized -Db_lundef=false)
elif [ "${1:-}" = "--tsan" ]; then
  shift
  tsan=true
  builddir=build-tsan
  setup_args=(-Db_sanitize=thread -Dbuildtype=debugoptimized -Db_lundef=false)
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

if $tsan; then
  # libgomp (oneDNN's OpenMP runtime) is not instrumented: its barriers are
  # invisible to TSan, see the suppressions file. halt_on_error: a report
  # fails the test (the daemon aborts, the test sees it).
  export TSAN_OPTIONS="${TSAN_OPTIONS:-suppressions=$PWD/tests/tsan.supp:halt_on_error=1:abort_on_error=1:second_deadlock_stack=1}"
  if [ $# -eq 0 ]; then
    set -- batcher decoder effnetd v2 decode signals ops abandoned
  fi
fi

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

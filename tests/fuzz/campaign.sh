#!/usr/bin/env bash
# Fuzzing campaign over every parser: builds each fuzz target with clang and
# libFuzzer + ASan + UBSan, runs it for a set time, merges what it found into
# the in-tree corpus (minimised: only inputs that add coverage), keeps every
# crash as a regression input, and reports source-based coverage of each
# parser's file before and after, by replaying the corpus.
#
#   tests/fuzz/campaign.sh                      # every target, 300 s each
#   FUZZ_SECONDS=180 tests/fuzz/campaign.sh
#   tests/fuzz/campaign.sh --seconds 60 --targets query,config --no-merge
#
# Builds go to build-fuzz (libFuzzer, sanitizers) and build-fuzzcov (replay
# programs with -fprofile-instr-generate -fcoverage-mapping) in the tree;
# logs, new inputs and crashes to $XDG_CACHE_HOME/effnetd-fuzz. The report
# (markdown) is printed and written to that directory as report.md. Exit
# status 1 when a target crashed (its input is then in the corpus as
# regress_<kind>_<sha1>, and the fuzz suite fails on it until it is fixed;
# rename it to say what it was).
#
# Each target runs under `nice` with -jobs=1 (one fuzzing process), so the
# campaign takes about one core for targets x seconds.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SECONDS_EACH=${FUZZ_SECONDS:-300}
TARGETS=safetensors,jpeg,png,multipart,config,v2,hub_uri,query,h2,kserve,auth_keys,trace
WORK=${XDG_CACHE_HOME:-$HOME/.cache}/effnetd-fuzz
MERGE=1
MAX_FILE=65536          # merged inputs larger than this are left out of the tree

usage() {
        cat <<EOF
usage: $0 [--seconds N] [--targets a,b,...] [--workdir DIR] [--no-merge]
  --seconds N    time each target fuzzes (default \$FUZZ_SECONDS or 300)
  --targets L    of: $TARGETS
  --workdir DIR  logs, new inputs, crashes, report.md (default $WORK)
  --no-merge     leave tests/fuzz/corpus as it is (crashes are still kept)
EOF
}

while [ $# -gt 0 ]; do
        case $1 in
        --seconds) SECONDS_EACH=$2; shift 2 ;;
        --targets) TARGETS=$2; shift 2 ;;
        --workdir) WORK=$2; shift 2 ;;
        --no-merge) MERGE=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
        esac
done

# Parser source file(s) whose coverage each target stands for; FILE:FUNCTION
# for one function of a file.
declare -A SRC=(
        [safetensors]=src/model/safetensors.c
        [jpeg]="src/image/jpeg.c src/image/image.c"
        [png]="src/image/png.c src/image/image.c"
        [multipart]=src/server/multipart.c
        [config]=src/daemon/config.c
        [v2]=src/server/v2.c
        [hub_uri]=src/hub/hub.c
        [query]=src/server/api.c:api_parse_top_k     # api.c holds more than the parser
        [h2]=src/server/h2.c
        [kserve]=src/server/kserve.c                  # the service too: its share of the file is lower
        [auth_keys]=src/server/auth.c
        [trace]=src/server/trace.c
)
# Where meson puts each target (the image targets live with the image tests).
exe_path() {
        case $1 in
        jpeg|png) echo "tests/image/fuzz_$1" ;;
        *) echo "tests/fuzz/fuzz_$1" ;;
        esac
}

# ---- tools: clang, its libFuzzer and sanitizer runtimes, llvm-profdata/cov ----
need_pkgs=()
command -v clang >/dev/null || need_pkgs+=(clang)
command -v llvm-profdata >/dev/null || need_pkgs+=(llvm)
command -v llvm-cov >/dev/null || need_pkgs+=(llvm)
if command -v clang >/dev/null; then
        probe=$(mktemp -d)
        echo 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }' \
                >"$probe/t.c"
        clang -fsanitize=fuzzer,address,undefined "$probe/t.c" -o "$probe/t" 2>/dev/null ||
                need_pkgs+=(libclang-rt-dev)
        rm -rf "$probe"
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
        # Debian 12: clang 14; libFuzzer and the sanitizer runtimes are in libclang-rt-14-dev.
        echo "campaign: installing ${need_pkgs[*]}" >&2
        sudo=$([ "$(id -u)" = 0 ] || echo sudo)
        $sudo apt-get update
        $sudo apt-get install -y "${need_pkgs[@]}"
fi

IFS=, read -r -a targets <<<"$TARGETS"
for t in "${targets[@]}"; do
        [ -n "${SRC[$t]:-}" ] || { echo "campaign: unknown target $t" >&2; exit 2; }
done
exes=()
for t in "${targets[@]}"; do exes+=("$(exe_path "$t")"); done

cd "$ROOT"
mkdir -p "$WORK"
# Instrumented programs run by meson's compiler checks must not leave
# default.profraw in the tree; the coverage replay sets its own file.
export LLVM_PROFILE_FILE=$WORK/stray-%p.profraw

# ---- builds ---------------------------------------------------------------------
if [ ! -d build-fuzz ]; then
        CC=clang meson setup build-fuzz -Dfuzzing=true -Db_sanitize=address,undefined -Db_lundef=false \
                -Dbuildtype=debugoptimized >"$WORK/setup-fuzz.log"
fi
nice ninja -C build-fuzz "${exes[@]}" >"$WORK/build-fuzz.log"
# The coverage build replays the corpus the way the fuzz suite does; PNG CRC
# checks are off as in the libFuzzer build, so that it measures what the
# fuzzer's inputs reach.
if [ ! -d build-fuzzcov ]; then
        CC=clang meson setup build-fuzzcov -Dbuildtype=debug -Db_lundef=false \
                -Dc_args='-fprofile-instr-generate -fcoverage-mapping -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION' \
                -Dc_link_args='-fprofile-instr-generate' >"$WORK/setup-fuzzcov.log"
fi
nice ninja -C build-fuzzcov "${exes[@]}" >"$WORK/build-fuzzcov.log"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$ROOT/tests/lsan.supp}

# Sums the line and region counts of the files named in argv (matched by
# path suffix) in llvm-cov's JSON summary.
COV_PY='
import json, os, sys
files = [w for w in sys.argv[1:] if ":" not in w]
funcs = [w.split(":") for w in sys.argv[1:] if ":" in w]
data = json.load(sys.stdin)["data"][0]
lines = [0, 0]
regions = [0, 0]
ends = lambda name, w: os.path.normpath(name).endswith("/" + w)
for f in data["files"]:
    if any(ends(f["filename"], w) for w in files):
        s = f["summary"]
        lines[0] += s["lines"]["covered"]; lines[1] += s["lines"]["count"]
        regions[0] += s["regions"]["covered"]; regions[1] += s["regions"]["count"]
# FILE:FUNCTION: that function alone, from its code regions (kind 0); a line
# counts as covered when a region on it ran.
for f in data["functions"]:
    if any(f["name"] == fn and ends(f["filenames"][0], w) for w, fn in funcs):
        hit = {}
        for ls, cs, le, ce, count, fid, efid, kind in f["regions"]:
            if kind != 0 or fid != 0:
                continue
            regions[1] += 1; regions[0] += count > 0
            for ln in range(ls, le + 1):
                hit[ln] = hit.get(ln, False) or count > 0
        lines[0] += sum(hit.values()); lines[1] += len(hit)
pct = lambda c: "%.1f%%" % (100.0 * c[0] / c[1]) if c[1] else "?"
print(pct(lines), pct(regions))
'

# "lines regions" covered (percent) of the target's parser files when its
# corpus is replayed by the coverage build.
coverage() {
        local t=$1 exe prof
        exe=build-fuzzcov/$(exe_path "$t")
        prof=$WORK/$t/cov
        rm -rf "$prof"; mkdir -p "$prof"
        LLVM_PROFILE_FILE="$prof/%p.profraw" "$exe" "tests/fuzz/corpus/$t" >/dev/null 2>&1 || true
        if ! ls "$prof"/*.profraw >/dev/null 2>&1 ||
           ! llvm-profdata merge -sparse "$prof"/*.profraw -o "$prof/all.profdata" 2>/dev/null; then
                echo "? ?"     # the replay died before writing its profile (a crash input)
                return 0
        fi
        # shellcheck disable=SC2086
        llvm-cov export "$exe" -instr-profile="$prof/all.profdata" |
                python3 -c "$COV_PY" ${SRC[$t]} || echo "? ?"
}

corpus_stats() {    # "files bytes"
        local d=tests/fuzz/corpus/$1
        echo "$(find "$d" -type f | wc -l) $(find "$d" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')"
}

report=$WORK/report.md
{
        echo "Fuzzing campaign, $(date -u '+%Y-%m-%d %H:%M UTC'), $(clang --version | head -1)"
        echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), -jobs=1 under nice, ${SECONDS_EACH} s per target"
        echo
        echo "| target | parser file(s) | CPU s | executions | exec/s | corpus files (bytes) before | after | merged | crashes | lines before | after | regions before | after |"
        echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
} >"$report"

crashed=0
for t in "${targets[@]}"; do
        dir=$WORK/$t
        rm -rf "$dir"; mkdir -p "$dir/new" "$dir/artifacts"
        read -r files0 bytes0 < <(corpus_stats "$t")
        read -r lines0 regions0 < <(coverage "$t")
        exe=$ROOT/build-fuzz/$(exe_path "$t")
        echo "campaign: $t: fuzzing for ${SECONDS_EACH} s" >&2
        # -jobs=1 runs the fuzzer in a child whose output goes to fuzz-0.log
        # in the working directory; /usr/bin/time gives the CPU it used.
        (cd "$dir" && /usr/bin/time -f '%U %S' -o "$dir/time" nice "$exe" -jobs=1 \
                -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
                -artifact_prefix="$dir/artifacts/" "$dir/new" "$ROOT/tests/fuzz/corpus/$t" \
                >"$dir/run.log" 2>&1) || true
        # The last line: before it, time notes a non-zero exit (a crash).
        cpu=$(awk 'END { printf "%.0f", $1 + $2 }' "$dir/time")
        execs=$(awk '/stat::number_of_executed_units/ { print $NF }' "$dir/fuzz-0.log" | tail -1)
        execs=${execs:-0}
        eps=$(awk -v e="$execs" -v c="$cpu" 'BEGIN { printf "%.0f", (c > 0 ? e / c : 0) }')
        # Crashes, leaks, timeouts, OOMs: each becomes a regression input.
        ncrash=0
        for a in "$dir"/artifacts/*; do
                [ -f "$a" ] || continue
                kind=$(basename "$a" | cut -d- -f1)
                sha=$(sha1sum "$a" | cut -c1-12)
                cp "$a" "tests/fuzz/corpus/$t/regress_${kind}_$sha"
                echo "campaign: $t: $kind input kept as tests/fuzz/corpus/$t/regress_${kind}_$sha" >&2
                ncrash=$((ncrash + 1))
        done
        [ "$ncrash" = 0 ] || crashed=1
        merged=0
        if [ "$MERGE" = 1 ]; then
                # Candidates: what this run found, minus files too large for the tree.
                find "$dir/new" -type f -size +"$MAX_FILE"c -delete
                before=$(find "tests/fuzz/corpus/$t" -type f | wc -l)
                # A crash while merging (an input already kept above) goes to
                # the work directory, not the tree.
                nice "$exe" -merge=1 -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$dir/merge-" \
                        "tests/fuzz/corpus/$t" "$dir/new" \
                        >"$dir/merge.log" 2>&1 || echo "campaign: $t: merge failed, see $dir/merge.log" >&2
                merged=$(( $(find "tests/fuzz/corpus/$t" -type f | wc -l) - before ))
        fi
        read -r files1 bytes1 < <(corpus_stats "$t")
        read -r lines1 regions1 < <(coverage "$t")
        echo "| $t | ${SRC[$t]} | $cpu | $execs | $eps | $files0 ($bytes0) | $files1 ($bytes1) | $merged | $ncrash |" \
             "$lines0 | $lines1 | $regions0 | $regions1 |" >>"$report"
done

cat "$report"
[ "$crashed" = 0 ] || echo "campaign: crashes kept as regression inputs; fix them before committing" >&2
exit "$crashed"

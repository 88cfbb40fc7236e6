#!/bin/sh
# tests/fuzz/run.sh FUZZ_BUILD SECONDS [TARGET...] — run each libFuzzer target
# (FUZZ_BUILD/fuzz_TARGET) for SECONDS, one after another, and print one line
# per target: executions, executions per second, and the outcome.
#
# Each target grows its own working corpus in FUZZ_BUILD/corpus/TARGET, seeded
# from tests/fuzz/corpus/TARGET (read-only here), with tests/fuzz/TARGET.dict
# when there is one. Inputs that crash, leak or hang (-timeout=5 s per input)
# land in FUZZ_BUILD/artifacts/ and the line says FAIL; the log is kept in
# FUZZ_BUILD/logs/TARGET.log. Exit status 1 if any target failed.
#
# FUZZ_RUNS=N stops each target after N executions instead (SECONDS then
# caps the time); FUZZ_FLAGS adds libFuzzer flags (e.g. -jobs, -max_len).
set -u
build=$1; secs=$2; shift 2
[ $# -gt 0 ] || set -- $(ls "$build"/fuzz_* 2>/dev/null | sed 's|.*/fuzz_||')
mkdir -p "$build/corpus" "$build/artifacts" "$build/logs"
failed=0
for t in "$@"; do
    bin=$build/fuzz_$t
    [ -x "$bin" ] || { echo "FAIL fuzz_$t: $bin not built"; failed=1; continue; }
    mkdir -p "$build/corpus/$t"
    set -- -max_total_time="$secs" -timeout=5 -rss_limit_mb=2048 -print_final_stats=1 \
           -artifact_prefix="$build/artifacts/$t-"
    [ -n "${FUZZ_RUNS:-}" ] && set -- "$@" -runs="$FUZZ_RUNS"
    [ -f "tests/fuzz/$t.dict" ] && set -- "$@" -dict="tests/fuzz/$t.dict"
    seeds=""
    [ -d "tests/fuzz/corpus/$t" ] && seeds="tests/fuzz/corpus/$t"
    log=$build/logs/$t.log
    # shellcheck disable=SC2086 # FUZZ_FLAGS is a word list on purpose
    "$bin" "$@" ${FUZZ_FLAGS:-} "$build/corpus/$t" $seeds > "$log" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -n 1)
    corpus=$(ls "$build/corpus/$t" | wc -l)
    if [ "$rc" -eq 0 ]; then
        printf 'ok   fuzz_%-12s %12s runs %8s exec/s  corpus %5s  rss %s MB\n' "$t" "${runs:-?}" "${speed:-?}" \
            "$corpus" "${rss:-?}"
    else
        failed=1
        printf 'FAIL fuzz_%-12s exit %s after %s runs; log %s\n' "$t" "$rc" "${runs:-?}" "$log"
        grep -E 'ERROR|SUMMARY|invariant|artifact' "$log" | head -n 8 | sed 's/^/    /'
    fi
done
exit $failed

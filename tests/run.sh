#!/bin/sh
# tests/run.sh BUILD MODELS [BUILD_F64] — run every test program of each build,
# then tests/check_layout.sh (the docs' promises about the code) on the first,
# and print one closing line "N passed, N failed" summed over all of them.
# Each program gets DS3_MODELS (synthetic models), DS3_REF (ref_data/) and
# DS3_CLI (the CLI of its own build) in its environment. With DS3_PYTHON_TESTS
# set (make test), the Python package's tests run too (python/tests/run.sh);
# with DS3_MPI_TESTS, mpirun against one process (tests/test_mpi.sh).
set -u
build=$1; models=$2; shift 2
total_pass=0; total_fail=0

# record NAME RC OUTPUT: count the program's closing line, show it if it failed.
record() {
    name=$1; rc=$2; out=$3
    line=$(printf '%s\n' "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed' | tail -n 1)
    p=$(printf '%s' "$line" | sed -n 's/^\([0-9]*\) passed.*/\1/p')
    f=$(printf '%s' "$line" | sed -n 's/.* \([0-9]*\) failed.*/\1/p')
    [ -n "$p" ] || p=0
    [ -n "$f" ] || f=0
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi   # crashed or exited early
    if [ "$f" -ne 0 ]; then
        printf '%s\n' "$out" | sed 's/^/    /'
        echo "FAIL $name ($p passed, $f failed, exit $rc)"
    else
        echo "ok   $name ($p passed)"
    fi
    total_pass=$((total_pass + p)); total_fail=$((total_fail + f))
}

for b in "$build" "$@"; do
    for t in "$b"/tests/test_*; do
        case "$t" in *.d) continue ;; esac
        [ -x "$t" ] || continue
        out=$(DS3_MODELS="$models" DS3_REF=ref_data DS3_CLI="$b/ds3" "$t" 2>&1)
        record "$b/$(basename "$t")" $? "$out"
    done
done
# The Python package (python/tests/run.sh), when `make test` asks for it.
if [ -n "${DS3_PYTHON_TESTS:-}" ]; then
    out=$(sh python/tests/run.sh "$build" "$models" "$@" 2>&1)
    record python/tests $? "$out"
fi
# mpirun -np 1..4 against one process (tests/test_mpi.sh), when `make test` asks for it.
if [ -n "${DS3_MPI_TESTS:-}" ]; then
    out=$(sh tests/test_mpi.sh "$build" "$models" 2>&1)
    record tests/test_mpi.sh $? "$out"
    printf '%s\n' "$out" | grep '^test_mpi: skipped' || true
fi
out=$(sh tests/check_layout.sh "$build" 2>&1)
record tests/check_layout.sh $? "$out"
out=$(sh tests/test_docs.sh "$build" 2>&1)
record tests/test_docs.sh $? "$out"

echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]

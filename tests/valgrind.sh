#!/bin/sh
# tests/valgrind.sh BUILD MODELS — run every test program of BUILD under
# valgrind (memcheck), children included (test_cli and test_errors run the
# CLI), and print one line per program and a closing "N clean, N failed".
#
# A program fails on any memcheck error (invalid read/write, use of
# uninitialised values, bad free) or a definitely/indirectly lost block; the
# full report is kept in BUILD/valgrind/NAME.log. Build BUILD with NO_OMP=1:
# libgomp's thread pool is still reachable at exit by design, and valgrind
# does not model OpenMP's synchronisation. Suppressions: tests/valgrind.supp
# (each entry says why).
set -u
build=$1; models=$2
mkdir -p "$build/valgrind"
clean=0; failed=0
for t in "$build"/tests/test_*; do
    case "$t" in *.d) continue ;; esac
    [ -x "$t" ] || continue
    name=$(basename "$t")
    log=$build/valgrind/$name.log
    start=$(date +%s)
    DS3_MODELS="$models" DS3_REF=ref_data DS3_CLI="$build/ds3" \
        valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect \
        --show-leak-kinds=definite,indirect --track-origins=yes --trace-children=yes \
        --suppressions=tests/valgrind.supp --log-file="$log.%p" "$t" > "$log.out" 2>&1
    rc=$?
    cat "$log".[0-9]* > "$log" 2>/dev/null; rm -f "$log".[0-9]*
    secs=$(( $(date +%s) - start ))
    # memcheck's own findings, in this process or any child it traced: errors
    # ("Invalid read", "uninitialised", …) and leak records ("N bytes in M
    # blocks are definitely lost in loss record …", which start with a digit)
    errors=$(grep -c -e '^==[0-9]*== [A-Z].*\(Invalid\|uninitialised\|Mismatched\|invalid\|overlap\|fishy\)' \
        -e '^==[0-9]*== .* are \(definitely\|indirectly\) lost in loss record' "$log")
    result=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log.out" | tail -n 1)
    if [ "$rc" -eq 0 ] && [ "$errors" -eq 0 ]; then
        clean=$((clean + 1)); echo "ok   $name ($result, ${secs} s)"
    else
        failed=$((failed + 1)); echo "FAIL $name (exit $rc, $errors memcheck reports, ${secs} s; $log)"
        grep -E '^==[0-9]+== ' "$log" | head -n 20 | sed 's/^/    /'
    fi
done
echo "$clean clean, $failed failed"
[ "$failed" -eq 0 ]

#!/bin/sh
# tests/run.sh BUILD MODELS [BUILD_F64] — run every test program of each build
# and print one closing line "N passed, N failed" summed over all of them.
# Each program gets DS3_MODELS (synthetic models), DS3_REF (ref_data/) and
# DS3_CLI (the CLI of its own build) in its environment.
set -u
build=$1; models=$2; shift 2
total_pass=0; total_fail=0
for b in "$build" "$@"; do
  for t in "$b"/tests/test_*; do
    case "$t" in *.d) continue ;; esac
    [ -x "$t" ] || continue
    name="$b/$(basename "$t")"
    out=$(DS3_MODELS="$models" DS3_REF=ref_data DS3_CLI="$b/ds3" "$t" 2>&1)
    rc=$?
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
  done
done
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]

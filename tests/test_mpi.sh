#!/bin/sh
# tests/test_mpi.sh BUILD MODELS [BUILD_MPI] — expert parallelism across
# processes (docs/ARCHITECTURE.md §10) gives one process's bits:
#
#   1. `mpirun -np N BUILD_MPI/ds3 dump|run|replay …` for N = 1..4 on the tiny
#      checkpoints (f32, bf16, fp8, V2 routing, two MTP depths), every kernel
#      mode, --attn naive, --decode-from, --emulate, run --mtp --draft N, run
#      -p - (stdin, read by rank 0 alone): every dump tensor, run's ids and
#      replay's table and values are the bits of BUILD/ds3 in one process
#      (scripts/bitcmp.sh; the dumps' metadata, which names the binary, aside);
#      rank 0 alone prints;
#   2. faults end the whole job, non-zero, within seconds, with no output file:
#      a rank whose shard is truncated (its message, naming its rank, on
#      stderr), a rank killed mid-run, a rank out of memory (a real `ulimit -v`
#      on that rank alone), a token past the vocabulary.
#
# BUILD_MPI defaults to build-mpi (make MPI=1). Skipped, with the reason, when
# mpirun or BUILD_MPI/ds3 is absent. DS3_MPI_FULL=1: every model and kernel
# mode at every N (minutes); DS3_MPI_WIDE=1: N up to E = 256 and past it;
# CI runs the default selection.
# Prints one line per failure and closes with "N passed, N failed". POSIX sh.
set -u
build=${1:-build}; models=${2:-build/models}; mbuild=${3:-build-mpi}
pass=0; fail=0
ok()  { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
skip() { echo "test_mpi: skipped: $*"; echo "0 passed, 0 failed"; exit 0; }

command -v mpirun > /dev/null 2>&1 || skip "no mpirun (MPI=1 sh scripts/install-deps.sh installs Open MPI)"
[ -x "$mbuild/ds3" ] || skip "no $mbuild/ds3 (make MPI=1 builds it)"
for m in tiny-f32 tiny-bf16 tiny-fp8 tiny-v2 tiny-mtp2; do
    [ -f "$models/$m/config.json" ] || { echo "test_mpi: no $models/$m (sh scripts/make-models.sh)"; exit 1; }
done

one="$build/ds3"; many="$mbuild/ds3"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ds3-mpi.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' INT TERM   # the EXIT trap removes $tmp
# CI runs as root; Open MPI refuses that unless told. One thread per rank: the
# ranks share the machine's cores (the bits do not depend on the count).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
# Containers often forbid the cross-memory attach Open MPI's shared-memory
# transport tries first; copies through shared memory work everywhere.
export OMPI_MCA_btl_vader_single_copy_mechanism=none
# Past 8 ranks (DS3_MPI_WIDE's hundreds), Open MPI 4's mpirun is told to accept a
# rank that exits 0 without its finalize on record: with hundreds of ranks on a few
# cores, mpirun's PMIx server can be starved for more than the 2 s a rank's
# MPI_Finalize waits for its acknowledgement (a fixed timer in PMIx); the rank then
# exits 0 before mpirun has recorded its finalize, and mpirun fails the job, after the
# output is written, for a rank "exiting improperly". A bare MPI program fails the
# same way (docs/ARCHITECTURE.md §10). A rank that fails still exits non-zero or
# aborts, which ends the job as before; up to 8 ranks keep mpirun's full check.
mpi() {
    n=$1; shift
    if [ "$n" -gt 8 ]; then
        OMPI_MCA_orte_allowed_exit_without_sync=1 mpirun --oversubscribe -np "$n" "$@"
    else
        mpirun --oversubscribe -np "$n" "$@"
    fi
}

# same NAME A B: the two dumps' tensors are the same bits.
same() {
    if sh scripts/bitcmp.sh "$2" "$3" > "$tmp/cmp" 2>&1; then ok
    else bad "$1"; sed 's/^/    /' "$tmp/cmp" | head -n 5; fi
}

full=${DS3_MPI_FULL:-}
# Every N for the first case of each command; a pair for the others (all with DS3_MPI_FULL).
all_ns="1 2 3 4"
ns=$all_ns
few() { [ -n "$full" ] && ns=$all_ns || ns="2 4"; }

# ---- 1. dumps ------------------------------------------------------------------
# dump_case NAME MODEL ARGS…: one process, then N = 1..4.
dump_case() {
    name=$1; model=$2; shift 2
    "$one" dump -m "$models/$model" -o "$tmp/ref.st" "$@" 2> "$tmp/err" || { bad "$name: one process failed"; cat "$tmp/err"; return; }
    for n in $ns; do
        rm -f "$tmp/out.st"
        if mpi "$n" "$many" dump -m "$models/$model" -o "$tmp/out.st" "$@" > "$tmp/stdout" 2> "$tmp/err"; then
            same "$name, -np $n" "$tmp/ref.st" "$tmp/out.st"
            # rank 0 alone reports: one "dump: wrote" line
            [ "$(grep -c '^dump: wrote' "$tmp/err")" = 1 ] && ok || bad "$name, -np $n: not one 'dump: wrote' line"
        else
            bad "$name, -np $n: exit $?"; sed 's/^/    /' "$tmp/err" | head -n 5
        fi
    done
}

toks=1,7,300,42,5,99
dump_case "tiny-fp8 dump" tiny-fp8 --tokens $toks
few
dump_case "tiny-fp8 dump --kernels deterministic" tiny-fp8 --tokens $toks --kernels deterministic
dump_case "tiny-fp8 dump --kernels ref" tiny-fp8 --tokens $toks --kernels ref
dump_case "tiny-fp8 dump --attn naive" tiny-fp8 --tokens $toks --attn naive
dump_case "tiny-fp8 dump --decode-from 2" tiny-fp8 --tokens $toks --decode-from 2
dump_case "tiny-bf16 dump --emulate bf16" tiny-bf16 --tokens $toks --emulate bf16
dump_case "tiny-fp8 dump --emulate fp8" tiny-fp8 --tokens $toks --emulate fp8
dump_case "tiny-v2 dump" tiny-v2 --tokens $toks
dump_case "tiny-mtp2 dump" tiny-mtp2 --tokens $toks
if [ -n "$full" ]; then
    for m in tiny-f32 tiny-bf16 tiny-v2 tiny-mtp2; do
        for k in fast deterministic ref; do
            for a in absorb naive; do
                dump_case "$m dump --kernels $k --attn $a --decode-from 3" $m --tokens $toks --kernels $k --attn $a \
                    --decode-from 3
            done
        done
    done
    dump_case "tiny-f32 dump --emulate fp8" tiny-f32 --tokens $toks --emulate fp8
fi

# ---- run: the ids, plain and speculative ------------------------------------------
# --json carries timings and memory: its ids are compared (and must be there).
ids() { sed 's/.*"ids":\(\[[0-9,]*\]\).*/\1/' "$1"; }
run_case() {
    name=$1; shift
    "$one" run --quiet "$@" > "$tmp/ref.txt" 2> "$tmp/err" || { bad "$name: one process failed"; cat "$tmp/err"; return; }
    ids "$tmp/ref.txt" > "$tmp/ref.ids"
    grep -q '^\[*[0-9]' "$tmp/ref.ids" && ok || bad "$name: no ids in $(head -c 100 "$tmp/ref.txt")"
    for n in $ns; do
        if mpi "$n" "$many" run --quiet "$@" > "$tmp/out.txt" 2> "$tmp/err"; then
            ids "$tmp/out.txt" > "$tmp/out.ids"
            cmp -s "$tmp/ref.ids" "$tmp/out.ids" && ok || bad "$name, -np $n: other output: $(head -c 200 "$tmp/out.txt")"
        else
            bad "$name, -np $n: exit $?"; sed 's/^/    /' "$tmp/err" | head -n 5
        fi
    done
}
ns=$all_ns
run_case "tiny-fp8 run" -m "$models/tiny-fp8" --tokens 1,2,3 -n 24
few
run_case "tiny-fp8 run --temp 0.8 -s 5" -m "$models/tiny-fp8" --tokens 1,2,3 -n 24 --temp 0.8 --top-p 0.9 -s 5
run_case "tiny-fp8 run --mtp --draft 1" -m "$models/tiny-fp8" --tokens 1,2,3 -n 24 --mtp
run_case "tiny-bf16 run --mtp --draft 3 --json" -m "$models/tiny-bf16" --tokens 1,2,3 -n 24 --mtp --draft 3 --json
run_case "tiny-mtp2 run --mtp --draft 2" -m "$models/tiny-mtp2" --tokens 4,5,6 -n 24 --mtp --draft 2

# run -p - : stdin reaches rank 0 only, which passes the prompt on.
if [ -n "$full" ] || [ -n "${DS3_MPI_TEXT:-}" ]; then
    "$one" mkmodel --config tiny-text --dtype bf16 -o "$tmp/tiny-text" > /dev/null 2>&1 || bad "mkmodel tiny-text"
    printf 'The capital of France is' | "$one" run -m "$tmp/tiny-text" -p - -n 12 --quiet > "$tmp/ref.txt" 2> /dev/null
    for n in 2 3; do
        printf 'The capital of France is' | mpi "$n" "$many" run -m "$tmp/tiny-text" -p - -n 12 --quiet \
            > "$tmp/out.txt" 2> "$tmp/err"
        cmp -s "$tmp/ref.txt" "$tmp/out.txt" && ok || { bad "run -p - (stdin), -np $n"; cat "$tmp/err"; }
    done
fi

# ---- replay: a build's dump (here ds3's own, bf16-emulated) recomputed --------------
"$one" dump -m "$models/tiny-fp8" --tokens $toks --emulate bf16 -o "$tmp/build.st" 2> /dev/null
"$one" replay -m "$models/tiny-fp8" "$tmp/build.st" -o "$tmp/ref.st" > "$tmp/ref.txt" 2> /dev/null
rc1=$?
for n in 1 2 3 4; do
    rm -f "$tmp/out.st"
    mpi "$n" "$many" replay -m "$models/tiny-fp8" "$tmp/build.st" -o "$tmp/out.st" > "$tmp/out.txt" 2> /dev/null
    rc=$?
    [ "$rc" = "$rc1" ] && ok || bad "replay -np $n: exit $rc, one process $rc1"
    # the table names the dump's path: the same path in both
    cmp -s "$tmp/ref.txt" "$tmp/out.txt" && ok || { bad "replay -np $n: another table"; diff "$tmp/ref.txt" "$tmp/out.txt" | head -n 6; }
    same "replay -np $n -o" "$tmp/ref.st" "$tmp/out.st"
done

# ---- the partition: N from 1 to E, dividing or not -------------------------------
# (tiny has E = 256; 5 and 7 do not divide it, 8 gives whole groups; at 256 each
# rank has one expert, at 257 one rank has none. DS3_MPI_WIDE=1 adds 24..257,
# hundreds of processes, minutes on two cores; DS3_MPI_NS="N …" adds those N)
"$one" dump -m "$models/tiny-f32" --tokens $toks -o "$tmp/ref.st" 2> /dev/null
wide=${DS3_MPI_NS:-}; [ -n "${DS3_MPI_WIDE:-}" ] && wide="$wide 24 37 64 100 128 200 255 256 257"
for n in $( [ -n "$full" ] && echo 5 6 7 8 16 || echo 5 8) $wide; do
    rm -f "$tmp/out.st"
    mpi "$n" "$many" dump -m "$models/tiny-f32" --tokens $toks -o "$tmp/out.st" > /dev/null 2> "$tmp/err" \
        && same "tiny-f32 dump -np $n" "$tmp/ref.st" "$tmp/out.st" || { bad "tiny-f32 dump -np $n"; cat "$tmp/err"; }
done

# At N = E (one expert per rank): FP8 and the reference kernels, and MTP drafts.
if [ -n "${DS3_MPI_WIDE:-}" ]; then
    ns=256
    dump_case "tiny-fp8 dump --kernels ref" tiny-fp8 --tokens $toks --kernels ref
    run_case "tiny-mtp2 run --mtp --draft 2" -m "$models/tiny-mtp2" --tokens 4,5,6 -n 24 --mtp --draft 2
fi

# ---- 2. faults ----------------------------------------------------------------------
# A rank that cannot read its shard: rank 1 gets a truncated copy.
mkdir -p "$tmp/bad"
cp "$models/tiny-fp8/config.json" "$tmp/bad/"
head -c 4000 "$models/tiny-fp8/model.safetensors" > "$tmp/bad/model.safetensors"
rm -f "$tmp/out.st"
start=$(date +%s)
mpi 3 sh -c 'm=$1; [ "${OMPI_COMM_WORLD_RANK:-0}" = 1 ] && m=$2; shift 2; exec "$@" -m "$m"' sh \
    "$models/tiny-fp8" "$tmp/bad" "$many" dump --tokens $toks -o "$tmp/out.st" > "$tmp/stdout" 2> "$tmp/err"
rc=$?
[ "$rc" != 0 ] && ok || bad "bad shard on rank 1: exit 0"
grep -q '^ds3: rank 1 of 3: loading model' "$tmp/err" && ok || { bad "bad shard on rank 1: no rank 1 message"; cat "$tmp/err"; }
[ ! -e "$tmp/out.st" ] && ok || bad "bad shard on rank 1: an output file"
[ $(( $(date +%s) - start )) -le 20 ] && ok || bad "bad shard on rank 1: took more than 20 s"

# A rank killed mid-run: a long dump (tiny-f32 with room for 2,000 positions,
# decoded one token at a time); rank 1 is sent SIGKILL after 2 s.
mkdir -p "$tmp/long"
sed 's/"max_position_embeddings": *[0-9]*/"max_position_embeddings": 4096/' "$models/tiny-f32/config.json" \
    > "$tmp/long/config.json"
ln -s "$(cd "$models/tiny-f32" && pwd)/model.safetensors" "$tmp/long/model.safetensors"
long=$(awk 'BEGIN { s = "1"; for (i = 1; i < 2000; i++) s = s "," (i % 500 + 1); print s }')
rm -f "$tmp/out.st"
start=$(date +%s)
mpi 2 sh -c '[ "${OMPI_COMM_WORLD_RANK:-0}" = 1 ] && { (sleep 2; kill -KILL $$) & }; exec "$@"' sh \
    "$many" dump -m "$tmp/long" --tokens "$long" --decode-from 1 -o "$tmp/out.st" > "$tmp/stdout" 2> "$tmp/err"
rc=$?
took=$(( $(date +%s) - start ))
[ "$rc" != 0 ] && ok || bad "rank 1 killed: exit 0 (the dump finished in ${took} s before the kill?)"
[ ! -e "$tmp/out.st" ] && ok || bad "rank 1 killed: an output file"
[ -z "$(ls "$tmp" | grep '^out\.st.')" ] && ok || bad "rank 1 killed: a temporary file left: $(ls "$tmp")"
[ "$took" -le 15 ] && ok || bad "rank 1 killed: the job took ${took} s to end"

# A rank out of memory: one rank runs under a real address-space limit
# (`ulimit -v`, 1.5 GB: room for Open MPI, the model and OpenBLAS, ~0.6 GB
# here) that its state, a KV cache of 2,000,000 positions (2.8 GB), does not
# fit in; the other ranks have no limit and go on to the first exchange. The
# job ends non-zero within seconds with that rank's message, nothing on stdout.
mkdir -p "$tmp/huge"
sed 's/"max_position_embeddings": *[0-9]*/"max_position_embeddings": 2000000/' "$models/tiny-f32/config.json" \
    > "$tmp/huge/config.json"
ln -s "$(cd "$models/tiny-f32" && pwd)/model.safetensors" "$tmp/huge/model.safetensors"
to=; command -v timeout > /dev/null 2>&1 && to="timeout 60"
for rn in 1/3 0/2; do
    r=${rn%/*}; np=${rn#*/}
    start=$(date +%s)
    # (timeout: were the limit not to bind, the job would decode 2,000,000 tokens)
    $to mpirun --oversubscribe -np "$np" \
        sh -c 'r=$1; shift; [ "${OMPI_COMM_WORLD_RANK:-0}" = "$r" ] && ulimit -v 1500000; exec "$@"' sh "$r" \
        "$many" run -m "$tmp/huge" --tokens 1,2,3 -n 1999990 > "$tmp/stdout" 2> "$tmp/err"
    rc=$?
    took=$(( $(date +%s) - start ))
    [ "$rc" != 0 ] && ok || bad "rank $r of $np out of memory: exit 0"
    grep -q "^ds3: rank $r of $np: creating state: out of memory" "$tmp/err" && ok ||
        { bad "rank $r of $np out of memory: not its message"; sed 's/^/    /' "$tmp/err" | head -n 5; }
    [ ! -s "$tmp/stdout" ] && ok || bad "rank $r of $np out of memory: output on stdout: $(head -c 100 "$tmp/stdout")"
    [ "$took" -le 20 ] && ok || bad "rank $r of $np out of memory: the job took ${took} s to end"
done

# A token past the vocabulary: every rank refuses it, exit 1.
mpi 2 "$many" dump -m "$models/tiny-fp8" --tokens 1,9999 -o "$tmp/out.st" > /dev/null 2> "$tmp/err"
rc=$?
[ "$rc" != 0 ] && ok || bad "bad token: exit 0"
grep -q 'out of range\|vocab' "$tmp/err" && ok || { bad "bad token: no message"; cat "$tmp/err"; }
[ ! -e "$tmp/out.st" ] && ok || bad "bad token: an output file"

# A usage error: rank 0 alone says it, exit 2.
mpi 3 "$many" dump -m "$models/tiny-fp8" --tokens 1,2 > /dev/null 2> "$tmp/err"
rc=$?
[ "$rc" = 2 ] && ok || bad "usage error: exit $rc, not 2"
[ "$(grep -c 'missing -o' "$tmp/err")" = 1 ] && ok || { bad "usage error: not one message"; cat "$tmp/err"; }

# chat and mkmodel are one-process work: refused under mpirun (exit 2, one message).
for c in "chat -m $models/tiny-fp8" "mkmodel --config tiny -o $tmp/mk"; do
    mpi 2 "$many" $c < /dev/null > /dev/null 2> "$tmp/err"
    rc=$?
    [ "$rc" = 2 ] && [ "$(grep -c 'not under mpirun' "$tmp/err")" = 1 ] && [ ! -e "$tmp/mk" ] && ok ||
        { bad "$c under mpirun: exit $rc"; cat "$tmp/err"; }
done

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]

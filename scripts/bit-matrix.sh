#!/bin/sh
# scripts/bit-matrix.sh [OUT.md] — the bit matrix of docs/PORTABILITY.md.
#
# One reference: gcc -O2 through the Makefile on this x86-64 machine, AVX2
# copies in use, OpenMP with 2 threads, in the IEEE environment. Each cell
# changes one or more of compiler × ISA × flags × precision × threads × AVX2
# on/off × plain-C kernels × an FTZ/DAZ library preloaded × contraction flags,
# dumps every synthetic model (build/models) in the deterministic and ref kernel
# modes (a 12-token prefill, and 8 tokens then 4 decoded one at a time) and
# compares each dump with the reference's, tensor by tensor, bit for bit
# (scripts/bitcmp.sh). f32 and f64 builds alike. A cell that promises bits
# holds them or fails; the one build that contracts must be refused.
#
# Slow (about twenty builds): run it with nice. Builds go to build/matrix/.
# PRECISIONS="f32" runs the f32 column only (half the builds; f64 cells say "not run").
# The aarch64 cells need `CROSS=aarch64 sh scripts/install-deps.sh` (skipped,
# and said so, when qemu-aarch64 is missing). Writes the Markdown table to
# OUT.md (default build/matrix/table.md) and ends with "N passed, N failed".
set -u
cd "$(dirname "$0")/.." || exit 1
out_md=${1:-build/matrix/table.md}
M=build/matrix
mkdir -p $M
jobs=${JOBS:-2}
TOKENS=3,1,4,1,5,9,2,6,5,3,5,8
PRECISIONS=${PRECISIONS:-f32 f64}
want() { case " $PRECISIONS " in *" $1 "*) return 0 ;; esac; return 1; }
pass=0; fail=0
rows=""

log() { echo "bit-matrix: $*" >&2; }

# The reference builds and the models.
make -s -j"$jobs" all > /dev/null || exit 1
if want f64; then make -s -j"$jobs" PRECISION=f64 all > /dev/null || exit 1; fi
sh scripts/make-models.sh build/ds3 build/models > /dev/null || exit 1
MODELS=$(for d in build/models/*/; do basename "$d"; done)

# dumps BIN PREC DIR [ENV...]: every model × mode × run into DIR; the command
# is run with env ENV... (a launcher such as qemu-aarch64 goes in $LAUNCH).
dumps() {
    bin=$1; dir=$2; shift 2
    mkdir -p "$dir"
    for m in $MODELS; do
        for k in deterministic ref; do
            for run in prefill decode; do
                extra=""; [ $run = decode ] && extra="--decode-from 8"
                # shellcheck disable=SC2086
                env "$@" ${LAUNCH:-} $bin dump -m build/models/$m --tokens $TOKENS --kernels $k $extra \
                    -o "$dir/$m-$k-$run.st" > "$dir/log" 2>&1 || { echo "FAILED-RUN $(tail -n 1 "$dir/log")"; return; }
            done
        done
    done
    echo ok
}

# same DIR REFDIR: how many dumps have the reference's bits, "k/n"
same() {
    n=0; k=0
    for f in "$2"/*.st; do
        n=$((n + 1))
        sh scripts/bitcmp.sh "$f" "$1/$(basename "$f")" 2> /dev/null && k=$((k + 1))
    done
    echo "$k/$n"
}

log "reference dumps"
[ "$(dumps build/ds3 $M/ref-f32 OMP_NUM_THREADS=2)" = ok ] || { log "reference f32 dumps failed"; exit 1; }
if want f64; then
    [ "$(dumps build-f64/ds3 $M/ref-f64 OMP_NUM_THREADS=2)" = ok ] || { log "reference f64 dumps failed"; exit 1; }
fi

# cell NAME EXPECT BIN_F32 BIN_F64 [ENV...]: dump with both, compare, record a row.
# EXPECT: same (every dump has the reference's bits) or refused (the binary must
# refuse to compute, naming contraction).
cell() {
    name=$1; expect=$2; b32=$3; b64=$4; shift 4
    res=""
    for p in f32 f64; do
        if ! want $p; then res="$res | not run"; continue; fi
        bin=$b32; [ $p = f64 ] && bin=$b64
        dir=$M/cell-$(echo "$name" | tr -c 'a-zA-Z0-9\n' '-')-$p
        rm -rf "$dir"
        r=$(dumps "$bin" "$dir" "$@")
        if [ "$expect" = refused ]; then
            if grep -q "built with floating-point contraction" "$dir/log" 2> /dev/null && [ "$r" != ok ]; then
                res="$res | refused: \"$(sed -n 's/.*\(built with floating-point contraction\).*/\1/p' "$dir/log" | head -n 1)\""
                pass=$((pass + 1))
            else
                res="$res | NOT REFUSED"
                fail=$((fail + 1))
            fi
            continue
        fi
        if [ "$r" != ok ]; then
            res="$res | RUN FAILED: $r"; fail=$((fail + 1)); continue
        fi
        s=$(same "$dir" $M/ref-$p)
        if [ "${s%/*}" = "${s#*/}" ]; then
            res="$res | same bits ($s dumps)"; pass=$((pass + 1))
        else
            res="$res | **DIFFERENT** ($s dumps same)"; fail=$((fail + 1))
        fi
    done
    rows="$rows
| $name$res |"
    log "$name$res"
}

# mk NAME MAKEARGS...: a Makefile build of both precisions into build/matrix/NAME{,-f64}
mk() {
    name=$1; shift
    make -s -j"$jobs" BUILD=$M/$name "$@" all > $M/$name.log 2>&1 || { log "build $name failed (see $M/$name.log)"; return 1; }
    if want f64; then
        make -s -j"$jobs" BUILD=$M/$name-f64 PRECISION=f64 "$@" all >> $M/$name.log 2>&1 ||
            { log "build $name-f64 failed (see $M/$name.log)"; return 1; }
    fi
}

# foreign NAME CC FLAGS...: the sources built as another build system would,
# without the Makefile's flags (no -ffp-contract=off, no -std=c11).
foreign() {
    name=$1; cc=$2; shift 2
    for p in $PRECISIONS; do
        d=$M/$name-$p; mkdir -p $d; objs=""
        def=""; [ $p = f64 ] && def=-DDS3_F64
        for f in src/*.c src/*/*.c cli/*.c; do
            o=$d/$(echo "$f" | tr / _).o
            case $f in src/kernels/linear_avx2.c) av="-mavx2 -mf16c" ;; *) av="" ;; esac
            # shellcheck disable=SC2086,SC2046
            $cc "$@" $av $def -fopenmp -DDS3_BLAS $(pkg-config --cflags openblas libpcre2-8) -Iinclude -Isrc \
                -D_POSIX_C_SOURCE=200809L -c "$f" -o "$o" 2>> $M/$name.log || { log "foreign $name: $f failed"; return 1; }
            objs="$objs $o"
        done
        # shellcheck disable=SC2086,SC2046
        $cc -fopenmp -o $d/ds3 $objs $(pkg-config --libs openblas libpcre2-8) -lcjson -lm 2>> $M/$name.log || return 1
    done
}

native_ok=$(grep -qw fma /proc/cpuinfo 2> /dev/null && echo 1)

log "runtime cells on the reference builds"
cell "gcc -O2, 1 thread" same build/ds3 build-f64/ds3 OMP_NUM_THREADS=1
cell "gcc -O2, 2 threads, AVX2 copies off (DS3_NO_AVX2=1)" same build/ds3 build-f64/ds3 OMP_NUM_THREADS=2 DS3_NO_AVX2=1
cc -shared -fPIC -O2 -o $M/ftz_preload.so tests/ftz_preload.c || exit 1
cell "gcc -O2, FTZ/DAZ set by an LD_PRELOAD'ed constructor" same build/ds3 build-f64/ds3 LD_PRELOAD=$PWD/$M/ftz_preload.so
cell "gcc -O2, FTZ/DAZ and rounding upward preloaded" same build/ds3 build-f64/ds3 \
    LD_PRELOAD=$PWD/$M/ftz_preload.so FTZ_PRELOAD_ROUND=up

log "builds"
mk clang CC=clang && cell "clang -O2" same $M/clang/ds3 $M/clang-f64/ds3 OMP_NUM_THREADS=2
mk noomp NO_OMP=1 && cell "gcc -O2, NO_OMP=1 (one thread)" same $M/noomp/ds3 $M/noomp-f64/ds3
mk plain PLAIN_C=1 && cell "gcc -O2, PLAIN_C=1 (plain C kernels)" same $M/plain/ds3 $M/plain-f64/ds3
mk clang-plain CC=clang PLAIN_C=1 && cell "clang -O2, PLAIN_C=1" same $M/clang-plain/ds3 $M/clang-plain-f64/ds3
if [ -n "$native_ok" ]; then
    mk gcc-native CFLAGS="-O3 -march=native -ffp-contract=fast" &&
        cell "make CFLAGS='-O3 -march=native -ffp-contract=fast' (gcc; FMA CPU)" same $M/gcc-native/ds3 $M/gcc-native-f64/ds3
    mk clang-native CC=clang CFLAGS="-O3 -march=native" &&
        cell "make CC=clang CFLAGS='-O3 -march=native' (FMA CPU)" same $M/clang-native/ds3 $M/clang-native-f64/ds3
    foreign foreign-clang clang -O2 -march=native &&
        cell "clang -O2 -march=native, no Makefile (default -ffp-contract=on; the pragma)" same \
            $M/foreign-clang-f32/ds3 $M/foreign-clang-f64/ds3
    foreign foreign-gcc gcc -O2 -march=native &&
        cell "gcc -O2 -march=native, no Makefile (gnu11: contracts)" refused $M/foreign-gcc-f32/ds3 $M/foreign-gcc-f64/ds3
    foreign foreign-gcc-off gcc -O2 -march=native -ffp-contract=off &&
        cell "gcc -O2 -march=native -ffp-contract=off, no Makefile" same $M/foreign-gcc-off-f32/ds3 $M/foreign-gcc-off-f64/ds3
else
    log "no FMA on this CPU: the -march=native cells are skipped"
fi

if command -v qemu-aarch64 > /dev/null 2>&1 && command -v aarch64-linux-gnu-gcc > /dev/null 2>&1; then
    XPKG="/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig"
    if (export PKG_CONFIG_LIBDIR=$XPKG; mk aarch64 CC=aarch64-linux-gnu-gcc); then
        LAUNCH=qemu-aarch64 cell "aarch64 (gcc cross, qemu-user), 2 threads" same $M/aarch64/ds3 $M/aarch64-f64/ds3 OMP_NUM_THREADS=2
        aarch64-linux-gnu-gcc -shared -fPIC -O2 -o $M/ftz_preload_arm64.so tests/ftz_preload.c &&
            LAUNCH=qemu-aarch64 cell "aarch64, FPCR.FZ set by an LD_PRELOAD'ed constructor" same $M/aarch64/ds3 \
                $M/aarch64-f64/ds3 QEMU_SET_ENV=LD_PRELOAD=$PWD/$M/ftz_preload_arm64.so
    fi
    if (export PKG_CONFIG_LIBDIR=$XPKG; mk aarch64-plain CC=aarch64-linux-gnu-gcc PLAIN_C=1); then
        LAUNCH=qemu-aarch64 cell "aarch64, PLAIN_C=1" same $M/aarch64-plain/ds3 $M/aarch64-plain-f64/ds3
    fi
else
    log "qemu-aarch64 or aarch64-linux-gnu-gcc missing: the aarch64 cells are skipped (CROSS=aarch64 sh scripts/install-deps.sh)"
fi

{
    echo "Reference: \`make\` (gcc -O2) on $(uname -m), $(gcc --version | sed -n 1p), 2 OpenMP threads, AVX2 copies in use."
    echo "Each cell: $(echo $MODELS | wc -w) models × deterministic, ref × prefill, decode = $(( $(echo $MODELS | wc -w) * 4 )) dumps, each compared tensor by tensor, bit for bit."
    echo
    echo "| cell | f32 | f64 |"
    echo "|---|---|---|"
    echo "$rows" | sed '/^$/d'
} > "$out_md"
cat "$out_md"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]

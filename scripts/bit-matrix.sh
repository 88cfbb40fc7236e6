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
# SECTIONS="runtime builds native aarch64 fmascan notes" (the default: all) runs some of
# the matrix: runtime (thread counts, AVX2 off, FTZ/DAZ preloaded, fast mode on
# the reference builds), builds (clang, NO_OMP, PLAIN_C, no Makefile without
# -march, x87), native (-march=native with and without contraction flags,
# Makefile and not), aarch64 (cross builds under qemu-user), fmascan (every
# object compiled for FMA targets at -O2 and -O3 holds no fused instruction:
# gcc's vectorizer has fused in spite of -ffp-contract=off), notes (the rows
# that promise nothing, and why). The reference dumps are kept between runs.
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
SECTIONS=${SECTIONS:-runtime builds native aarch64 fmascan notes}
section() { case " $SECTIONS " in *" $1 "*) return 0 ;; esac; return 1; }
pass=0; fail=0
rows=""

log() { echo "bit-matrix: $*" >&2; }

# dumps BIN PREC DIR [ENV...]: every model × mode × run into DIR; the command
# is run with env ENV... (a launcher such as qemu-aarch64 goes in $LAUNCH).
dumps() {
    bin=$1; dir=$2; shift 2
    mkdir -p "$dir"
    for m in $MODELS; do
        for k in ${KMODES:-deterministic ref}; do
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
# without the Makefile's flags (no -ffp-contract=off; -std only as FLAGS say).
# Compiled JOBS at a time.
foreign() {
    name=$1; cc=$2; shift 2
    for p in $PRECISIONS; do
        d=$M/$name-$p; rm -rf $d; mkdir -p $d
        def=""; [ $p = f64 ] && def=-DDS3_F64
        case $($cc -dumpmachine) in x86_64*) AV="-mavx2 -mf16c" ;; *) AV="" ;; esac
        # shellcheck disable=SC2046
        common="$* $def -fopenmp -DDS3_BLAS $(pkg-config --cflags openblas libpcre2-8) -Iinclude -Isrc -D_POSIX_C_SOURCE=200809L"
        for f in src/*.c src/*/*.c cli/*.c; do echo "$f"; done |
            CC=$cc COMMON=$common D=$d AV=$AV xargs -P "$jobs" -I{} sh -c '
                f={}; o=$D/$(echo "$f" | tr / _).o
                case $f in src/kernels/linear_avx2.c) av=$AV ;; *) av="" ;; esac
                $CC $COMMON $av -c "$f" -o "$o" || exit 255' 2>> $M/$name.log ||
            { log "foreign $name: a source failed to compile (see $M/$name.log)"; return 1; }
        # shellcheck disable=SC2046
        $cc -fopenmp -o $d/ds3 $d/*.o $(pkg-config --libs openblas libpcre2-8) -lcjson -lm 2>> $M/$name.log || return 1
    done
}

# notpromised NAME REASON: a row of the matrix that promises no bits, and why.
notpromised() {
    rows="$rows
| $1 | not promised: $2 | not promised: $2 |"
    log "$1: not promised"
}

# The reference builds, models and dumps: only for the sections that dump.
if section runtime || section builds || section native || section aarch64; then
    # The reference builds and the models.
    make -s -j"$jobs" all > /dev/null || exit 1
    if want f64; then make -s -j"$jobs" PRECISION=f64 all > /dev/null || exit 1; fi
    sh scripts/make-models.sh build/ds3 build/models > /dev/null || exit 1
    MODELS=$(for d in build/models/*/; do basename "$d"; done)

    # The reference dumps, kept while the reference binary and models are the same.
    refdumps() {
        bin=$1; dir=$2
        key=$(cksum < "$bin"; cat build/models/*/.ds3-mkmodel-stamp | cksum)
        [ -f "$dir/done" ] && [ "$(cat "$dir/done")" = "$key" ] && return 0
        rm -rf "$dir"
        [ "$(dumps "$bin" "$dir" OMP_NUM_THREADS=2)" = ok ] || return 1
        echo "$key" > "$dir/done"
    }
    log "reference dumps"
    refdumps build/ds3 $M/ref-f32 || { log "reference f32 dumps failed"; exit 1; }
    if want f64; then
        refdumps build-f64/ds3 $M/ref-f64 || { log "reference f64 dumps failed"; exit 1; }
    fi
fi
MODELS=$(for d in build/models/*/; do basename "$d"; done)

native_ok=$(grep -qw fma /proc/cpuinfo 2> /dev/null && echo 1)

cc -shared -fPIC -O2 -o $M/ftz_preload.so tests/ftz_preload.c || exit 1
if section runtime; then
log "runtime cells on the reference builds"
cell "gcc -O2, 1 thread" same build/ds3 build-f64/ds3 OMP_NUM_THREADS=1
cell "gcc -O2, 3 threads" same build/ds3 build-f64/ds3 OMP_NUM_THREADS=3
cell "gcc -O2, 4 threads (more than the cores)" same build/ds3 build-f64/ds3 OMP_NUM_THREADS=4
cell "gcc -O2, 2 threads, AVX2 copies off (DS3_NO_AVX2=1)" same build/ds3 build-f64/ds3 OMP_NUM_THREADS=2 DS3_NO_AVX2=1
cell "gcc -O2, FTZ/DAZ set by an LD_PRELOAD'ed constructor" same build/ds3 build-f64/ds3 LD_PRELOAD=$PWD/$M/ftz_preload.so
cell "gcc -O2, FTZ/DAZ and rounding upward preloaded" same build/ds3 build-f64/ds3 \
    LD_PRELOAD=$PWD/$M/ftz_preload.so FTZ_PRELOAD_ROUND=up
cell "gcc -O2, FTZ/DAZ preloaded, 1 thread, AVX2 copies off" same build/ds3 build-f64/ds3 \
    LD_PRELOAD=$PWD/$M/ftz_preload.so OMP_NUM_THREADS=1 DS3_NO_AVX2=1

# fast mode: its promise is any thread count on one machine (OpenBLAS's kernels
# depend on the CPU), so its cells compare with a fast-mode reference of the
# same build on this machine.
log "fast-mode reference dumps"
fastcell() {
    name=$1; shift
    res=""
    for p in f32 f64; do
        if ! want $p; then res="$res | not run"; continue; fi
        bin=build/ds3; [ $p = f64 ] && bin=build-f64/ds3
        [ -f $M/fastref-$p/done ] || { KMODES=fast dumps $bin $M/fastref-$p OMP_NUM_THREADS=2 > /dev/null && touch $M/fastref-$p/done; }
        dir=$M/cell-fast-$(echo "$name" | tr -c 'a-zA-Z0-9\n' '-')-$p
        rm -rf "$dir"
        r=$(KMODES=fast dumps $bin "$dir" "$@")
        if [ "$r" != ok ]; then res="$res | RUN FAILED: $r"; fail=$((fail + 1)); continue; fi
        s=$(same "$dir" $M/fastref-$p)
        if [ "${s%/*}" = "${s#*/}" ]; then res="$res | same bits as fast mode at 2 threads ($s dumps)"; pass=$((pass + 1))
        else res="$res | **DIFFERENT** ($s dumps same)"; fail=$((fail + 1)); fi
    done
    rows="$rows
| $name$res |"
    log "$name$res"
}
fastcell "fast mode, gcc -O2, 1 thread (vs fast at 2 threads, same machine)" OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
fastcell "fast mode, gcc -O2, 4 threads (vs fast at 2 threads, same machine)" OMP_NUM_THREADS=4
fastcell "fast mode, FTZ/DAZ preloaded (vs fast, same machine)" LD_PRELOAD=$PWD/$M/ftz_preload.so

fi

if section builds; then
log "builds"
mk clang CC=clang && cell "clang -O2" same $M/clang/ds3 $M/clang-f64/ds3 OMP_NUM_THREADS=2
mk noomp NO_OMP=1 && cell "gcc -O2, NO_OMP=1 (one thread)" same $M/noomp/ds3 $M/noomp-f64/ds3
mk plain PLAIN_C=1 && cell "gcc -O2, PLAIN_C=1 (plain C kernels)" same $M/plain/ds3 $M/plain-f64/ds3
mk clang-plain CC=clang PLAIN_C=1 && cell "clang -O2, PLAIN_C=1" same $M/clang-plain/ds3 $M/clang-plain-f64/ds3
# Without -march, x86-64's baseline has no FMA: nothing can be fused, in gnu11 too
# (the AVX2 file gets -mavx2 -mf16c, which have no FMA either).
foreign foreign-gcc-base gcc -O2 &&
    cell "gcc -O2, no Makefile, no -march (gnu11; baseline x86-64 has no FMA)" same \
        $M/foreign-gcc-base-f32/ds3 $M/foreign-gcc-base-f64/ds3
# x87 arithmetic (32-bit x86 without SSE2 math) rounds twice: refused at compile time.
if gcc -m32 -mfpmath=387 -std=c11 -Iinclude -Isrc -fsyntax-only src/error.c > $M/m32.log 2>&1; then
    rows="$rows
| gcc -m32 -mfpmath=387 (x87: FLT_EVAL_METHOD 2) | NOT REFUSED | NOT REFUSED |"; fail=$((fail + 1))
elif grep -q "FLT_EVAL_METHOD 0" $M/m32.log; then
    rows="$rows
| gcc -m32 -mfpmath=387 (x87: FLT_EVAL_METHOD 2) | refused at compile time: \"needs float and double evaluated in their own precision\" | the same |"
    pass=$((pass + 1))
    log "gcc -m32 -mfpmath=387: refused at compile time"
else
    log "gcc -m32: no FLT_EVAL_METHOD refusal seen (see $M/m32.log)"; fail=$((fail + 1))
fi
fi

if ! section native; then
    :
elif [ -n "$native_ok" ]; then
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
    foreign foreign-gcc-c11 gcc -O2 -std=c11 -march=native &&
        cell "gcc -O2 -std=c11 -march=native, no Makefile (ISO C: gcc does not contract)" same \
            $M/foreign-gcc-c11-f32/ds3 $M/foreign-gcc-c11-f64/ds3
    foreign foreign-gcc-c11-off gcc -O2 -std=c11 -march=native -ffp-contract=off &&
        cell "gcc -O2 -std=c11 -march=native -ffp-contract=off, no Makefile" same \
            $M/foreign-gcc-c11-off-f32/ds3 $M/foreign-gcc-c11-off-f64/ds3
    foreign foreign-gcc-c11-fast gcc -O2 -std=c11 -march=native -ffp-contract=fast &&
        cell "gcc -O2 -std=c11 -march=native -ffp-contract=fast, no Makefile" refused \
            $M/foreign-gcc-c11-fast-f32/ds3 $M/foreign-gcc-c11-fast-f64/ds3
    foreign foreign-clang-fast clang -O2 -march=native -ffp-contract=fast &&
        cell "clang -O2 -march=native -ffp-contract=fast, no Makefile (overrides the pragma)" refused \
            $M/foreign-clang-fast-f32/ds3 $M/foreign-clang-fast-f64/ds3
else
    log "no FMA on this CPU: the -march=native cells are skipped"
fi

if ! section aarch64; then
    :
elif command -v qemu-aarch64 > /dev/null 2>&1 && command -v aarch64-linux-gnu-gcc > /dev/null 2>&1; then
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
    # (no arm64 libomp in Debian's multiarch: clang's aarch64 build is NO_OMP=1)
    if (export PKG_CONFIG_LIBDIR=$XPKG; mk aarch64-clang CC="clang --target=aarch64-linux-gnu" NO_OMP=1); then
        LAUNCH=qemu-aarch64 cell "aarch64, clang cross, NO_OMP=1 (qemu-user)" same $M/aarch64-clang/ds3 $M/aarch64-clang-f64/ds3
    fi
    # Every aarch64 has FMA, and gcc's gnu11 default fuses: the probe must refuse.
    if (export PKG_CONFIG_LIBDIR=$XPKG; foreign foreign-aarch64 aarch64-linux-gnu-gcc -O2); then
        LAUNCH=qemu-aarch64 cell "aarch64 gcc -O2, no Makefile (gnu11: contracts)" refused \
            $M/foreign-aarch64-f32/ds3 $M/foreign-aarch64-f64/ds3
    fi
    if (export PKG_CONFIG_LIBDIR=$XPKG; foreign foreign-aarch64-c11 aarch64-linux-gnu-gcc -O2 -std=c11); then
        LAUNCH=qemu-aarch64 cell "aarch64 gcc -O2 -std=c11, no Makefile (ISO C: no contraction)" same \
            $M/foreign-aarch64-c11-f32/ds3 $M/foreign-aarch64-c11-f64/ds3
    fi
else
    log "qemu-aarch64 or aarch64-linux-gnu-gcc missing: the aarch64 cells are skipped (CROSS=aarch64 sh scripts/install-deps.sh)"
fi

# fmascan NAME CC FLAGS...: compile every source file with FLAGS (f32 and f64)
# and count fused multiply-add instructions in the objects; a build that does
# not contract must have none. The probe in src/error.h sees only scalar a*b+c,
# so this is what catches a vectorizer that fuses (gcc 12's vfmaddsub in
# src/model/rope.c, f64, -march=native on an AVX-512 CPU, before 2026-12).
fmascan() {
    name=$1; cc=$2; shift 2
    res=""
    for p in f32 f64; do
        if ! want $p; then res="$res | not run"; continue; fi
        d=$M/fmascan/$(echo "$name" | tr -c 'a-zA-Z0-9\n' '-')-$p; rm -rf "$d"; mkdir -p "$d"
        def=""; [ $p = f64 ] && def=-DDS3_F64
        od=objdump
        case $($cc -dumpmachine) in
            x86_64*) pat='vfn?m(add|sub)'; AV="-mavx2 -mf16c" ;;
            aarch64*) pat='\bf(n?m(add|sub)|ml[as])\b'; AV=""; od=aarch64-linux-gnu-objdump ;;
            *) res="$res | not scanned ($($cc -dumpmachine))"; continue ;;
        esac
        # shellcheck disable=SC2046
        common="$* $def -fopenmp -DDS3_BLAS $(pkg-config --cflags openblas libpcre2-8) -Iinclude -Isrc -D_POSIX_C_SOURCE=200809L"
        for f in src/*.c src/*/*.c cli/*.c; do echo "$f"; done |
            CC=$cc COMMON=$common D=$d AV=$AV xargs -P "$jobs" -I{} sh -c '
                f={}; o=$D/$(echo "$f" | tr / _).o
                case $f in src/kernels/linear_avx2.c) av=$AV ;; *) av="" ;; esac
                $CC $COMMON $av -c "$f" -o "$o" || exit 255' 2>> $M/fmascan.log ||
            { res="$res | COMPILE FAILED"; fail=$((fail + 1)); continue; }
        n=0; hit=""
        for obj in "$d"/*.o; do
            $od -d "$obj" > "$obj.s" 2>&1 && grep -q "^Disassembly of section .text" "$obj.s" ||
                { res="$res | CANNOT DISASSEMBLE"; fail=$((fail + 1)); continue 2; }
            k=$(grep -cE "$pat" "$obj.s")
            [ "$k" -gt 0 ] && { n=$((n + k)); hit="$hit $(basename "$obj" .c.o)"; }
        done
        if [ "$n" -eq 0 ]; then res="$res | no fused instruction ($(ls "$d"/*.o | wc -l) objects)"; pass=$((pass + 1))
        else res="$res | **$n FUSED** in$hit"; fail=$((fail + 1)); fi
    done
    rows="$rows
| objects: $name$res |"
    log "objects: $name$res"
}

if section fmascan && [ -n "$native_ok" ]; then
    for lvl in -O2 -O3; do   # (not $o: fmascan's loop uses it)
        for a in native haswell sapphirerapids; do
            fmascan "gcc $lvl -march=$a -ffp-contract=off" gcc $lvl -march=$a -ffp-contract=off
        done
        fmascan "gcc $lvl -std=c11 -march=native" gcc $lvl -std=c11 -march=native
        fmascan "clang $lvl -march=native (the pragma)" clang $lvl -march=native
    done
    if command -v aarch64-linux-gnu-gcc > /dev/null 2>&1; then
        (export PKG_CONFIG_LIBDIR="/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig"
         for lvl in -O2 -O3; do
             fmascan "aarch64 gcc $lvl -ffp-contract=off" aarch64-linux-gnu-gcc $lvl -ffp-contract=off
             fmascan "aarch64 gcc $lvl -std=c11" aarch64-linux-gnu-gcc $lvl -std=c11
             fmascan "aarch64 clang $lvl (the pragma)" "clang --target=aarch64-linux-gnu" $lvl
         done
         echo "$rows" > $M/fmascan-arm.rows; echo "$pass $fail" > $M/fmascan-arm.count)
        rows=$(cat $M/fmascan-arm.rows); set -- $(cat $M/fmascan-arm.count); pass=$1; fail=$2
    fi
fi

if section notes; then
    notpromised "fast mode across machines, compilers or OpenBLAS builds" \
        "its several-token calls run OpenBLAS, whose kernels depend on the CPU it detects (same machine: the fast rows above)"
    notpromised "big-endian hosts (s390x, ppc64)" \
        "refused: #error in src/error.h where the compiler says its byte order, DS3_ERR_PLATFORM from ds3_fpenv_enter otherwise"
    notpromised "musl, macOS, Windows" \
        "not run here (no such toolchain or machine); nothing in the bits comes from the platform's libm (src/kernels/dmath.c), only sqrt, which IEEE 754 requires correctly rounded"
    notpromised "-ffast-math, -Ofast, -funsafe-math-optimizations" \
        "the compiler may reassociate sums and replace divisions; the probe refuses such a build only where it also fuses (an FMA target)"
    notpromised "32-bit x86 with SSE2 math, other ISAs (riscv64, ppc64le)" \
        "not built here; the sources assume nothing ISA-specific beyond the AVX2 copies (x86-64 only, selected at run time)"
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

#!/bin/sh
# scripts/cross-check.sh — the cross-ISA check of the bits (docs/PORTABILITY.md).
#
# Builds ds3 for aarch64 with Debian's cross compiler (fp32 and f64), runs it
# under qemu-user, and compares its dumps of the tiny checkpoints with the
# x86-64 build's, tensor by tensor, bit for bit (scripts/bitcmp.sh): every
# synthetic model × the deterministic and ref kernel modes × a prefill and a
# prefill-then-decode run. It also makes the tiny fp8 checkpoint under qemu and
# compares its bytes with the host's, and checks that the aarch64 build runs
# in IEEE defaults with FZ set by its caller (tests/test_fpenv under qemu) and
# that ds3's own exp/log/pow/sin/cos give the x86-64 bits (tests/test_dmath).
# Missing packages are installed by `CROSS=aarch64 sh scripts/install-deps.sh`.
# Ends with "N passed, N failed"; exit 1 on any failure.
#
# The aarch64 binaries run as plain `qemu-aarch64 BINARY`, found through
# Debian's multiarch loader: with -L /usr/aarch64-linux-gnu, Debian 12's cross
# loader and libc6:arm64 disagree and the program spins.
set -u
cd "$(dirname "$0")/.." || exit 1

jobs=$(nproc 2>/dev/null || echo 2)
CROSS=aarch64 sh scripts/install-deps.sh || exit 1
XCC=aarch64-linux-gnu-gcc
# The arm64 libraries' pkg-config files, not the host's.
XPKG="/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig"

pass=0; fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }

# Host builds and the synthetic models (cached; make test builds the same).
make -s -j"$jobs" all > /dev/null && make -s -j"$jobs" PRECISION=f64 all > /dev/null || exit 1
sh scripts/make-models.sh build/ds3 build/models > /dev/null || exit 1

for prec in f32 f64; do
    xb=build/aarch64-$prec
    PKG_CONFIG_LIBDIR=$XPKG make -s -j"$jobs" CC=$XCC PRECISION=$prec BUILD=$xb all $xb/tests/test_fpenv $xb/tests/test_dmath > /dev/null ||
        { bad "aarch64 $prec build"; continue; }
    file $xb/ds3 2>/dev/null | grep -q aarch64 || { [ -x "$(command -v file)" ] && bad "$xb/ds3 is not aarch64"; }
    host=build/ds3; [ $prec = f64 ] && host=build-f64/ds3
    out=build/cross/$prec
    mkdir -p $out
    for model in build/models/*/; do
        model=${model%/}; name=$(basename "$model")
        for k in deterministic ref; do
            # a 12-token prefill, and 8 tokens then 4 one at a time (the decode kernels)
            for run in "prefill:" "decode:--decode-from 8"; do
                tag=${run%%:*}; extra=${run#*:}
                args="dump -m $model --tokens 3,1,4,1,5,9,2,6,5,3,5,8 --kernels $k $extra"
                # shellcheck disable=SC2086
                $host $args -o $out/$name-$k-$tag-x86.st > /dev/null 2>&1 || { bad "$prec $name $k $tag: x86 dump"; continue; }
                # shellcheck disable=SC2086
                if ! qemu-aarch64 $xb/ds3 $args -o $out/$name-$k-$tag-arm.st > $out/log 2>&1; then
                    bad "$prec $name $k $tag: aarch64 dump: $(tail -n 1 $out/log)"
                    continue
                fi
                if sh scripts/bitcmp.sh $out/$name-$k-$tag-x86.st $out/$name-$k-$tag-arm.st; then
                    ok; echo "ok   $prec $name $k $tag: same bits on x86-64 and aarch64"
                else
                    bad "$prec $name $k $tag: x86-64 and aarch64 dumps differ"
                fi
            done
        done
    done
    # The environment guard on aarch64's FPCR, under qemu.
    if DS3_MODELS=build/models qemu-aarch64 $xb/tests/test_fpenv > $out/fpenv.log 2>&1; then
        ok; echo "ok   $prec test_fpenv on aarch64 ($(tail -n 1 $out/fpenv.log))"
    else
        bad "$prec test_fpenv on aarch64:"; tail -n 5 $out/fpenv.log
    fi
    # ds3's own exp/log/pow/sin/cos: the same bits as on x86-64 (the hash in tests/test_dmath.c).
    if qemu-aarch64 $xb/tests/test_dmath > $out/dmath.log 2>&1; then
        ok; echo "ok   $prec test_dmath on aarch64 ($(tail -n 1 $out/dmath.log))"
    else
        bad "$prec test_dmath on aarch64:"; tail -n 5 $out/dmath.log
    fi
done

# A checkpoint made on aarch64 has the host's bytes.
rm -rf build/cross/mk-arm build/cross/mk-x86
build/ds3 mkmodel --config tiny --dtype fp8 --seed 3 -o build/cross/mk-x86 > /dev/null 2>&1 &&
    qemu-aarch64 build/aarch64-f32/ds3 mkmodel --config tiny --dtype fp8 --seed 3 -o build/cross/mk-arm > /dev/null 2>&1 &&
    cmp -s build/cross/mk-x86/model.safetensors build/cross/mk-arm/model.safetensors &&
    { ok; echo "ok   mkmodel tiny fp8: same bytes on x86-64 and aarch64"; } ||
    bad "mkmodel tiny fp8: x86-64 and aarch64 checkpoints differ"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]

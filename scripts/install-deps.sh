#!/bin/sh
# scripts/install-deps.sh [--check] — make sure ds3 can be built here.
#
# What the build needs: a C11 compiler (${CC:-cc}), make, pkg-config, OpenBLAS
# with the cblas header (libopenblas-dev), cJSON (libcjson-dev), PCRE2 for the
# tokenizer's regexes (libpcre2-dev) and OpenMP (part of gcc; libomp-dev for
# clang). Rather than asking the package manager
# what is installed, we ask the compiler: each piece is checked by compiling
# and linking a tiny program with the flags the Makefile uses, so a library
# installed by hand (or from another distribution) counts too.
#
# Only what is missing is installed:
#   root                        apt-get update && apt-get install -y --no-install-recommends …
#   passwordless sudo           the same through sudo -n
#   otherwise                   print the exact command and exit 1
# On macOS nothing is installed automatically; the brew line is printed.
# Silent (and exit 0) when nothing is missing, so `make` stays quiet.
#
# Environment honoured (the Makefile exports command-line variables):
#   CC          compiler to check (default cc)
#   BLAS=none   OpenBLAS is not needed
#   NO_OMP=1    OpenMP is not needed
#   GNUPLOT=1   gnuplot too (gnuplot-nox): optional, only for `make bench`'s plot
#   PEER=1      cmake and a C++ compiler too (cmake, g++): only for `make bench-peer`,
#               which builds llama.cpp (bench/peer.sh)
#   FUZZ=1      libFuzzer too (libclang-rt-dev): only for `make fuzz`, with CC=clang
#   PYTHON=1    python3 with venv and ensurepip too (python3, python3-venv): for the
#               Python package's tests in `make test` (python/tests/run.sh)
#   MPFR=1      MPFR too (libmpfr-dev): only for `make check-math` (tests/mpfr/)
#   MPI=1       Open MPI too (libopenmpi-dev, openmpi-bin): mpicc and mpirun, for
#               `make MPI=1` (build-mpi/ds3, expert parallelism) and tests/test_mpi.sh
#   CROSS=aarch64  the aarch64 cross build and qemu-user (Debian multiarch: arm64
#               added to dpkg, gcc-aarch64-linux-gnu, the libraries as :arm64,
#               qemu-user): only for scripts/cross-check.sh (docs/PORTABILITY.md)
# --check       report what is missing (exit 1 if anything), install nothing.
#
# POSIX sh: runs under dash, in CI (root, CI=true, no stdin).

set -u

check_only=0
case "${1:-}" in
    --check) check_only=1 ;;
    "") ;;
    -h|--help) sed -n '2,37p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install-deps: unknown argument '$1' (try --help)" >&2; exit 2 ;;
esac

CC=${CC:-cc}
BLAS=${BLAS:-openblas}
NO_OMP=${NO_OMP:-}
GNUPLOT=${GNUPLOT:-}
PEER=${PEER:-}
FUZZ=${FUZZ:-}
PYTHON=${PYTHON:-}
MPFR=${MPFR:-}
MPI=${MPI:-}
CROSS=${CROSS:-}
case "$CROSS" in ""|aarch64) ;; *) echo "install-deps: CROSS=$CROSS: only aarch64 is known" >&2; exit 2 ;; esac
export DEBIAN_FRONTEND=noninteractive

say() { echo "install-deps: $*" >&2; }

tmp=$(mktemp -d 2>/dev/null || mktemp -d -t ds3deps) || { say "cannot create a temporary directory"; exit 1; }
trap 'rm -rf "$tmp"' EXIT INT TERM

# The compiler's first word (CC may carry flags, e.g. "clang -m64").
cc_bin() { set -- $CC; echo "$1"; }
is_clang() { "$(cc_bin)" --version 2>/dev/null | grep -qi clang; }

# try NAME SOURCE FLAGS… : compile and link SOURCE; keep the log for errors.
try() {
    name=$1; src=$2; shift 2
    printf '%s\n' "$src" > "$tmp/$name.c"
    # shellcheck disable=SC2086 # CC and the flags are word lists on purpose
    $CC -std=c11 -o "$tmp/$name" "$tmp/$name.c" "$@" > "$tmp/$name.log" 2>&1
}

# Each check appends the Debian package that provides the piece to $missing
# (and a human name to $what), so one apt-get line installs them all.
check_all() {
    missing=""; what=""
    if ! command -v "$(cc_bin)" > /dev/null 2>&1; then
        case "$(cc_bin)" in
            *clang*) missing="$missing clang" ;;
            *) missing="$missing gcc libc6-dev" ;;
        esac
        what="$what C-compiler($(cc_bin))"
    fi
    command -v make > /dev/null 2>&1 || { missing="$missing make"; what="$what make"; }
    command -v pkg-config > /dev/null 2>&1 || { missing="$missing pkg-config"; what="$what pkg-config"; }
    if [ -n "$PYTHON" ] && ! python3 -c 'import venv, ensurepip' > /dev/null 2>&1; then
        missing="$missing python3 python3-venv"; what="$what python3-venv"
    fi
    if [ -n "$PEER" ] && ! command -v cmake > /dev/null 2>&1; then
        missing="$missing cmake"; what="$what cmake"
    fi
    if [ -n "$PEER" ] && ! command -v c++ > /dev/null 2>&1; then
        missing="$missing g++"; what="$what C++-compiler"
    fi
    if [ -n "$GNUPLOT" ] && ! command -v gnuplot > /dev/null 2>&1; then
        missing="$missing gnuplot-nox"; what="$what gnuplot"
    fi
    # Without a compiler the library checks cannot run; they are re-done after install.
    command -v "$(cc_bin)" > /dev/null 2>&1 || return 0

    if ! try base 'int main(void) { return 0; }'; then
        missing="$missing libc6-dev"; what="$what C-library-headers"
        return 0
    fi
    if [ "$BLAS" != none ]; then
        bl_cflags=$(pkg-config --cflags openblas 2>/dev/null || true)
        bl_libs=$(pkg-config --libs openblas 2>/dev/null || true)
        [ -n "$bl_libs" ] || bl_libs=-lopenblas
        # shellcheck disable=SC2086
        try blas '#include <cblas.h>
int main(void) { float a = 1, b = 2; return (int)cblas_sdot(1, &a, 1, &b, 1) - 2; }' \
            $bl_cflags $bl_libs || { missing="$missing libopenblas-dev"; what="$what OpenBLAS(cblas)"; }
    fi
    try cjson '#include <cjson/cJSON.h>
int main(void) { cJSON *j = cJSON_Parse("[1]"); int ok = j != 0; cJSON_Delete(j); return !ok; }' \
        -lcjson || { missing="$missing libcjson-dev"; what="$what cJSON"; }
    pc_cflags=$(pkg-config --cflags libpcre2-8 2>/dev/null || true)
    pc_libs=$(pkg-config --libs libpcre2-8 2>/dev/null || true)
    [ -n "$pc_libs" ] || pc_libs=-lpcre2-8
    # shellcheck disable=SC2086
    try pcre2 '#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
int main(void) {
    int e; PCRE2_SIZE o;
    pcre2_code *c = pcre2_compile((PCRE2_SPTR)"\\p{L}+", PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &e, &o, 0);
    int ok = c != 0; pcre2_code_free(c); return !ok;
}' $pc_cflags $pc_libs || { missing="$missing libpcre2-dev"; what="$what PCRE2"; }
    # libFuzzer's runtime ships apart from clang on Debian (libclang-rt-N-dev).
    if [ -n "$FUZZ" ]; then
        try fuzz '#include <stddef.h>
#include <stdint.h>
int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }' \
            -fsanitize=fuzzer,address,undefined || { missing="$missing libclang-rt-dev"; what="$what libFuzzer"; }
    fi
    if [ -n "$MPFR" ]; then
        try mpfr '#include <mpfr.h>
int main(void) { mpfr_t x; mpfr_init2(x, 64); mpfr_set_d(x, 1.0, MPFR_RNDN); mpfr_exp(x, x, MPFR_RNDN); mpfr_clear(x); return 0; }' \
            -lmpfr -lgmp || { missing="$missing libmpfr-dev"; what="$what MPFR"; }
    fi
    # Open MPI: its compiler wrapper must build and link an MPI program, and
    # mpirun must be there to start one.
    if [ -n "$MPI" ]; then
        mpi_ok=0
        if command -v mpicc > /dev/null 2>&1 && command -v mpirun > /dev/null 2>&1; then
            cc_saved=$CC; CC=mpicc
            try mpi '#include <mpi.h>
int main(int argc, char **argv) { MPI_Init(&argc, &argv); MPI_Finalize(); return 0; }' && mpi_ok=1
            CC=$cc_saved
        fi
        [ "$mpi_ok" = 1 ] || { missing="$missing libopenmpi-dev openmpi-bin"; what="$what Open-MPI"; }
    fi
    # The aarch64 cross build: the compiler, the libraries for arm64 (found through
    # their arm64 pkg-config files), and qemu to run what it builds.
    # Each piece is checked on its own (a machine lacking all three gets all three in one
    # install); running the cross-built program needs the first two.
    if [ "$CROSS" = aarch64 ]; then
        cross_built=0
        if ! command -v aarch64-linux-gnu-gcc > /dev/null 2>&1 ||
           ! PKG_CONFIG_LIBDIR=/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig CC=aarch64-linux-gnu-gcc \
                 sh -c 'printf "%s\n" "#include <cblas.h>" "#include <cjson/cJSON.h>" "#define PCRE2_CODE_UNIT_WIDTH 8" \
                     "#include <pcre2.h>" "#include <omp.h>" \
                     "int main(void) { cJSON_Delete(0); return (int)cblas_sdot(0, 0, 1, 0, 1) + omp_get_max_threads() * 0 + (pcre2_compile == 0); }" \
                     > "$1/cross.c" && $CC -std=c11 -fopenmp $(pkg-config --cflags openblas libpcre2-8) -o "$1/cross" "$1/cross.c" \
                     $(pkg-config --libs openblas libpcre2-8) -lcjson' sh "$tmp" > "$tmp/cross.log" 2>&1; then
            missing="$missing gcc-aarch64-linux-gnu libc6-dev-arm64-cross libopenblas-dev:arm64 libcjson-dev:arm64"
            missing="$missing libpcre2-dev:arm64 libgomp1:arm64"
            what="$what aarch64-cross-build"
        else
            cross_built=1
        fi
        if ! command -v qemu-aarch64 > /dev/null 2>&1; then
            missing="$missing qemu-user"; what="$what qemu-aarch64"
        # run it: the arm64 runtime libraries (libgomp1:arm64 is not pulled in by the -dev packages)
        elif [ "$cross_built" = 1 ] && ! qemu-aarch64 "$tmp/cross" > /dev/null 2>> "$tmp/cross.log"; then
            missing="$missing libgomp1:arm64 libopenblas0:arm64 libcjson1:arm64 libpcre2-8-0:arm64"
            what="$what aarch64-runtime"
        fi
    fi
    if [ -z "$NO_OMP" ]; then
        if ! try omp '#include <omp.h>
int main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }' -fopenmp; then
            if is_clang; then missing="$missing libomp-dev"; else missing="$missing libgomp1"; fi
            what="$what OpenMP"
        fi
    fi
    return 0
}

check_all
[ -z "$missing" ] && exit 0

say "missing:$what"

# ---- macOS: print, do not run (brew may want to update itself for minutes).
if [ "$(uname -s)" = Darwin ]; then
    say "on macOS, install them with Homebrew:"
    echo "  brew install openblas cjson pcre2 libomp pkg-config" >&2
    say "openblas and libomp are keg-only: pass their include/ and lib/ directories"
    say "(brew --prefix openblas, brew --prefix libomp) in CFLAGS and LDFLAGS, or build"
    say "without OpenMP: make NO_OMP=1"
    exit 1
fi

# The packages to install: $missing deduplicated, keeping order.
packages() {
    pkgs=""
    for p in $missing; do
        case " $pkgs " in *" $p "*) ;; *) pkgs="$pkgs $p" ;; esac
    done
    pkgs=${pkgs# }
}
packages
cmd="apt-get update && apt-get install -y --no-install-recommends $pkgs"

if ! command -v apt-get > /dev/null 2>&1; then
    say "no apt-get here; install the equivalents of: $pkgs"
    exit 1
fi
if [ "$check_only" = 1 ]; then
    say "to install: $cmd"
    exit 1
fi

if [ "$(id -u)" = 0 ]; then
    sudo=""
elif command -v sudo > /dev/null 2>&1 && sudo -n true > /dev/null 2>&1; then
    sudo="sudo -n"
else
    say "not root and no passwordless sudo; run as root:"
    echo "  $cmd" >&2
    exit 1
fi

# The :arm64 packages need arm64 among dpkg's architectures (before apt-get update).
if [ "$CROSS" = aarch64 ] && ! dpkg --print-foreign-architectures | grep -qx arm64; then
    $sudo dpkg --add-architecture arm64 || { say "dpkg --add-architecture arm64 failed"; exit 1; }
fi
# Two rounds at most: a check that needs an earlier piece installed (the arm64 runtime,
# found by running the cross-built program under qemu) can only speak after the first.
round=1
while :; do
    say "installing: $pkgs"
    # shellcheck disable=SC2086
    if ! $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q < /dev/null > "$tmp/apt.log" 2>&1 ||
       ! $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $pkgs \
            < /dev/null >> "$tmp/apt.log" 2>&1; then
        tail -n 20 "$tmp/apt.log" >&2
        say "apt-get failed; the command was: apt-get update && apt-get install -y --no-install-recommends $pkgs"
        exit 1
    fi
    # Trust the compiler, not apt's exit status: check again.
    installed=$pkgs
    check_all
    [ -z "$missing" ] && break
    packages
    if [ "$round" = 2 ] || [ "$pkgs" = "$installed" ]; then
        say "still missing after install:$what"
        for f in "$tmp"/*.log; do
            [ -s "$f" ] && { echo "--- $(basename "$f")" >&2; tail -n 5 "$f" >&2; }
        done
        exit 1
    fi
    round=2
done
say "ok"
exit 0

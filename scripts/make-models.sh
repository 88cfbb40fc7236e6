#!/bin/sh
# scripts/make-models.sh DS3_BIN OUTDIR [NAMES...] — create the synthetic
# reference models that `make run`, the tests and tools/gen_ref.py use.
#
# The models (the ONE place these commands are written down; tools/gen_ref.py
# must make the same ones — it can ask this script with --args NAME):
#
#   tiny-f32      ds3 mkmodel --config tiny    --dtype f32  --seed 1
#   tiny-bf16     ds3 mkmodel --config tiny    --dtype bf16 --seed 1
#   tiny-fp8      ds3 mkmodel --config tiny    --dtype fp8  --seed 1
#   tiny-v2       ds3 mkmodel --config tiny-v2 --dtype f32  --seed 1
#   tiny-negbias  ds3 mkmodel --config tiny    --dtype f32  --seed 2 --bias-shift -4
#   tiny-mtp2     ds3 mkmodel --config ref_data/configs/tiny-mtp2.json --dtype f32 --seed 1
#
# each followed by `-o OUTDIR/NAME`. With no NAMES, all of them. tiny-mtp2 is
# tiny with two MTP depths (no released checkpoint has more than one), its
# config read from the repository, so run this from the repository root (make
# does).
#
# Caching: OUTDIR/NAME is kept when it has config.json and its weights
# (model.safetensors or model.safetensors.index.json) and its stamp file
# OUTDIR/NAME/.ds3-mkmodel-stamp matches. The stamp holds `ds3 --version`, a
# checksum of the ds3 binary and the arguments: any rebuild of the binary
# regenerates the models, because mkmodel's output depends on code (configs,
# dtype rounding, the writer) that can change without the version changing,
# and a stale model would make every reference comparison fail for the wrong
# reason. The tiny models take well under a second each, so this is cheap.
# A model is built in OUTDIR/NAME.tmp and renamed, so an interrupted run never
# leaves a half-written model that looks complete.
#
#   make-models.sh --list        print the model names
#   make-models.sh --args NAME   print NAME's mkmodel arguments (without -o)
#
# POSIX sh.

set -eu

ALL_MODELS="tiny-f32 tiny-bf16 tiny-fp8 tiny-v2 tiny-negbias tiny-mtp2"

# The mkmodel arguments of each model. Keep in sync with the header above.
model_args() {
    case "$1" in
        tiny-f32)     echo "--config tiny --dtype f32 --seed 1" ;;
        tiny-bf16)    echo "--config tiny --dtype bf16 --seed 1" ;;
        tiny-fp8)     echo "--config tiny --dtype fp8 --seed 1" ;;
        tiny-v2)      echo "--config tiny-v2 --dtype f32 --seed 1" ;;
        tiny-negbias) echo "--config tiny --dtype f32 --seed 2 --bias-shift -4" ;;
        tiny-mtp2)    echo "--config ref_data/configs/tiny-mtp2.json --dtype f32 --seed 1" ;;
        *) return 1 ;;
    esac
}

die() { echo "make-models: $*" >&2; exit 1; }
usage() { echo "usage: make-models.sh DS3_BIN OUTDIR [NAMES...] | --list | --args NAME" >&2; exit 2; }

case "${1:-}" in
    --list) echo "$ALL_MODELS" | tr ' ' '\n'; exit 0 ;;
    --args) [ $# -eq 2 ] || usage
            model_args "$2" || die "unknown model '$2' (known: $ALL_MODELS)"
            exit 0 ;;
    -h|--help) sed -n '2,37p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
[ $# -ge 2 ] || usage

bin=$1; outdir=$2; shift 2
[ -x "$bin" ] || die "'$bin' is not an executable ds3 binary (build it first: make)"
[ $# -gt 0 ] || set -- $ALL_MODELS
for name in "$@"; do
    model_args "$name" > /dev/null || die "unknown model '$name' (known: $ALL_MODELS)"
done

version=$("$bin" --version 2>/dev/null) || die "'$bin --version' failed"
binsum=$(cksum < "$bin" | awk '{print $1 "-" $2}')
mkdir -p "$outdir"

for name in "$@"; do
    args=$(model_args "$name")
    dir=$outdir/$name
    stamp="$version | bin $binsum | mkmodel $args"
    if [ -f "$dir/config.json" ] &&
       { [ -f "$dir/model.safetensors" ] || [ -f "$dir/model.safetensors.index.json" ]; } &&
       [ -f "$dir/.ds3-mkmodel-stamp" ] &&
       [ "$(cat "$dir/.ds3-mkmodel-stamp")" = "$stamp" ]; then
        continue
    fi
    echo "make-models: $name (ds3 mkmodel $args)" >&2
    rm -rf "$dir.tmp"
    # shellcheck disable=SC2086 # args is a word list on purpose
    if ! "$bin" mkmodel $args -o "$dir.tmp" 2> "$dir.log"; then
        cat "$dir.log" >&2
        rm -rf "$dir.tmp" "$dir.log"
        die "mkmodel failed for $name"
    fi
    rm -f "$dir.log"
    printf '%s\n' "$stamp" > "$dir.tmp/.ds3-mkmodel-stamp"
    rm -rf "$dir"
    mv "$dir.tmp" "$dir"
done

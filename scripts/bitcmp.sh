#!/bin/sh
# scripts/bitcmp.sh A.safetensors B.safetensors — are two dumps the same bits,
# tensor by tensor? The tensor table (names, dtypes, shapes, offsets) and the
# data bytes must be identical; the __metadata__ (the command line, the model
# path) may differ. Exit 0 if identical; else 1, naming the tensors whose bytes
# differ. POSIX sh and od, so it runs wherever CI does (no Python).
set -u
[ $# -eq 2 ] || { echo "usage: scripts/bitcmp.sh A.safetensors B.safetensors" >&2; exit 2; }
a=$1; b=$2
tmp=$(mktemp -d) || exit 2
trap 'rm -rf "$tmp"' EXIT INT TERM

# split FILE PREFIX: PREFIX.json (header without __metadata__), PREFIX.bin (data)
split() {
    n=$(od -An -tu8 -N8 "$1" | tr -d ' ')
    [ -n "$n" ] || { echo "bitcmp: $1: not a safetensors file" >&2; exit 2; }
    # the header's byte count is little-endian; od reads host order (little-endian hosts only)
    # __metadata__ is a flat object of JSON strings (which may hold braces and escaped quotes)
    dd if="$1" bs=1 skip=8 count="$n" 2>/dev/null |
        sed -E -e 's/"__metadata__":\{("([^"\\]|\\.)*":"([^"\\]|\\.)*",?)*\},?//' -e 's/ *$//' > "$2.json"
    tail -c +$((9 + n)) "$1" > "$2.bin"
    echo "$n"
}
split "$a" "$tmp/a" > /dev/null
split "$b" "$tmp/b" > /dev/null
if ! cmp -s "$tmp/a.json" "$tmp/b.json"; then
    echo "bitcmp: $a and $b hold different tensors (names, dtypes or shapes)" >&2
    exit 1
fi
cmp -s "$tmp/a.bin" "$tmp/b.bin" && exit 0

# Name the tensors that differ: walk the table's data_offsets.
tr '}' '\n' < "$tmp/a.json" | sed -n 's/.*"\([^"]*\)":{"dtype":"[A-Z0-9]*","shape":\[[0-9,]*\],"data_offsets":\[\([0-9]*\),\([0-9]*\)\].*/\1 \2 \3/p' |
while read -r name o0 o1; do
    len=$((o1 - o0))
    if ! cmp -s -n "$len" -i "$o0:$o0" "$tmp/a.bin" "$tmp/b.bin"; then
        echo "bitcmp: $name differs" >&2
    fi
done
echo "bitcmp: $a and $b differ" >&2
exit 1

#!/bin/sh
# bench/mpi-rss.sh MODEL [NP] [TOKENS] — each rank's peak RSS under
# `mpirun -np NP build-mpi/ds3 dump` (default 4 ranks, 64 tokens) beside one
# process's, against the bound of docs/BENCHMARKS.md ("Expert parallelism"):
# replicated weights + 1/NP of the routed experts' bytes, + 20%.
# The byte counts come from the checkpoint's headers (od, no Python); peak RSS
# from GNU time (/usr/bin/time). The dumps of both runs are compared bit for bit.
set -eu
model=${1:?usage: bench/mpi-rss.sh MODEL [NP] [TOKENS]}; np=${2:-4}; ntok=${3:-64}
one=${DS3:-build/ds3}; many=${DS3_MPI:-build-mpi/ds3}
[ -x /usr/bin/time ] || { echo "mpi-rss: needs GNU time (/usr/bin/time; Debian package time)" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export OMPI_MCA_btl_vader_single_copy_mechanism=none
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ds3-mpirss.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

# Bytes of every tensor and of the routed experts' ones (and their scales), from the headers.
total=0; experts=0
for f in "$model"/*.safetensors; do
    n=$(od -An -tu8 -N8 "$f" | tr -d ' ')
    dd if="$f" bs=1 skip=8 count="$n" 2> /dev/null | tr '{' '\n' > "$tmp/h"
    # lines like: "model.layers.1.mlp.experts.3.up_proj.weight":  … "data_offsets":[a,b]}, …
    set -- $(awk 'BEGIN { t = 0; e = 0 }
        /data_offsets/ {
            s = $0; sub(/.*"data_offsets":\[/, "", s); split(s, o, /[],]/); b = o[2] - o[1]
            t += b; if (prev ~ /\.mlp\.experts\./) e += b
        }
        { prev = $0 } END { printf "%.0f %.0f\n", t, e }' "$tmp/h")
    total=$((total + $1)); experts=$((experts + $2))
done
repl=$((total - experts))
toks=$(awk -v n="$ntok" 'BEGIN { s = "100"; for (i = 1; i < n; i++) s = s "," (100 + i); print s }')

/usr/bin/time -f "%M" -o "$tmp/rss1" "$one" dump -m "$model" --tokens "$toks" -o "$tmp/one.st" 2> /dev/null
mpirun --oversubscribe -np "$np" sh -c '/usr/bin/time -f "%M" -o "$0.$OMPI_COMM_WORLD_RANK" "$@"' "$tmp/rss" \
    "$many" dump -m "$model" --tokens "$toks" -o "$tmp/many.st" 2> /dev/null
same=no; sh scripts/bitcmp.sh "$tmp/one.st" "$tmp/many.st" > /dev/null 2>&1 && same=yes

mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }
bound=$(awk -v r="$repl" -v e="$experts" -v n="$np" 'BEGIN { printf "%.0f", 1.2 * (r + e / n) }')
echo "model $model: tensors $(mb $total) MB = replicated $(mb $repl) MB + routed experts $(mb $experts) MB"
echo "dump of $ntok tokens, $OMP_NUM_THREADS thread(s) per process; same bits as one process: $same"
echo "one process: peak RSS $(mb $(( $(cat "$tmp/rss1") * 1024 ))) MB"
echo "bound per rank at -np $np: 1.2 x (replicated + experts/$np) = $(mb $bound) MB"
worst=0
for r in $(seq 0 $((np - 1))); do
    kb=$(cat "$tmp/rss.$r")
    echo "rank $r of $np: peak RSS $(mb $((kb * 1024))) MB"
    [ "$((kb * 1024))" -gt "$worst" ] && worst=$((kb * 1024))
done
[ "$worst" -le "$bound" ] && echo "within the bound" || { echo "OVER the bound"; exit 1; }
[ "$same" = yes ]

#!/bin/sh
# bench/v3-slice.sh [CONFIG] [DIR] — DeepSeek-V3 at its real dimensions
# (docs/BENCHMARKS.md, "DeepSeek-V3 at its real dimensions"):
#
#   1. ds3 mkmodel --config CONFIG --dtype fp8 -o DIR, unless DIR holds it:
#      bench/v3-slice.json (V3's exact shapes, 1 dense + 1 MoE layer of 256
#      experts: 15.8 GB) or bench/v3-twin.json (the same with 16 experts:
#      5.2 GB; a MoE layer's decode reads K = 8 experts either way);
#   2. for each prefill length in PREFILLS (default "64 1000"):
#      build/bench/bench_slice in one process, then
#      mpirun -np 2 build-mpi/bench/bench_slice: time per layer for the prefill
#      (one call; past 256 tokens it runs in chunks of 256) and for 8 decode
#      steps after it, bytes read per decoded token, each rank's memory and
#      the routed experts' pages it has faulted in.
#
# Needs make, make MPI=1 and the bench programs (make build/bench/bench_slice
# build-mpi/bench/bench_slice MPI=1 builds them). Minutes to tens of minutes
# (mkmodel is the long part); run it on a quiet machine, or under nice.
set -eu
config=${1:-bench/v3-twin.json}; dir=${2:-models/$(basename "$config" .json)}
threads=${THREADS:-1}
[ -x build/bench/bench_slice ] || make build/bench/bench_slice
[ -x build-mpi/bench/bench_slice ] || make MPI=1 build-mpi/bench/bench_slice
if [ ! -f "$dir/config.json" ]; then
    /usr/bin/time -f "mkmodel: %e s wall, peak RSS %M kB" build/ds3 mkmodel --config "$config" --dtype fp8 -o "$dir"
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
for p in ${PREFILLS:-64 1000}; do
    echo "== one process, prefill $p"
    build/bench/bench_slice -m "$dir" -p "$p" -n 8 -t "$threads"
    echo "== mpirun -np 2, prefill $p"
    mpirun --oversubscribe -np 2 build-mpi/bench/bench_slice -m "$dir" -p "$p" -n 8 -t "$threads"
done

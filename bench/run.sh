#!/bin/sh
# bench/run.sh BUILD — what `make bench` runs, after building BUILD/ds3 and
# BUILD/bench/*. Measures the machine, then ds3 on `small` (fp8 and bf16), then
# transformers on the same checkpoint when a Python environment has it, and writes
#
#   bench/results/STEM.csv   every figure, fixed columns (bench/bench.h)
#   bench/results/STEM.txt   the machine, the build, the load before and after
#   bench/results/STEM.hf-*.json  transformers' side, with its versions and settings
#   bench/results/STEM.png   fractions of the machine's limits, and speeds (gnuplot,
#                            else matplotlib; CSV only, with a message, if neither)
#
# STEM is UTC date-time, CPU and thread count: 20250101-120000-amd-epyc-2t.
# The small checkpoints are made once into build/models/small-{fp8,bf16} and kept
# while the generator's sources and the ds3 version stay the same.
#
# Environment:
#   BENCH_MODELS   checkpoint dtypes to measure (default "fp8 bf16")
#   BENCH_RUNS     timed runs per prefill figure (default 3); sublayers take max(5, this)
#   BENCH_STEPS    timed decode steps per context (default 8)
#   BENCH_QUICK=1  skip prefill 512, context 1024 and 256-token MoE (a quick look)
#   BENCH_HF=0     skip transformers
#   BENCH_HF_DTYPES  transformers' compute dtypes (default "float32 bfloat16")
#   BENCH_WAIT_IDLE=S  before each program, wait up to S seconds for the rest of the
#                  machine to use less than a third of a core (default 0: do not wait)
#   BENCH_NICE=N   run each measured program in a session of its own at nice N
#                  (N < 0 needs root). With autogroup scheduling (Linux's default on
#                  desktops and many VMs) plain `nice` only ranks processes within
#                  one session, so the session's autogroup gets the nice value too.
#                  On a machine shared with CPU-bound jobs, -10 gives ours most of
#                  a contended core for the few minutes of the run, at the other
#                  jobs' expense; recorded in the .txt
#   DS3_VENV       Python environment with torch + transformers (default: the first
#                  of .venv, venv, ../venv that has them)
#   OMP_NUM_THREADS  threads for ds3 and transformers (default: all)
#
# POSIX sh.

set -eu

BUILD=${1:-build}
MODELS=${BENCH_MODELS:-fp8 bf16}
RUNS=${BENCH_RUNS:-3}
STEPS=${BENCH_STEPS:-8}
QUICK=${BENCH_QUICK:-0}
HF=${BENCH_HF:-1}
HF_DTYPES=${BENCH_HF_DTYPES:-float32 bfloat16}
WAIT_IDLE=${BENCH_WAIT_IDLE:-0}
NICE=${BENCH_NICE:-}

say() { echo "bench: $*" >&2; }
# A measured program, at BENCH_NICE's priority if set.
prio() {
    if [ -z "$NICE" ]; then "$@"; return; fi
    # shellcheck disable=SC2016 # $0 and $@ expand in the inner shell
    setsid -w sh -c 'echo "$0" > /proc/self/autogroup 2> /dev/null; exec nice -n "$0" "$@"' "$NICE" "$@"
}
die() { say "$*"; exit 1; }

[ -x "$BUILD/ds3" ] || die "$BUILD/ds3 missing (make)"
for prog in bench_machine bench_ds3; do
    [ -x "$BUILD/bench/$prog" ] || die "$BUILD/bench/$prog missing (make bench)"
done

# ---- where the results go -----------------------------------------------------------
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -n 1)
[ -n "$cpu" ] || cpu=$(uname -m)
threads=${OMP_NUM_THREADS:-$(nproc 2>/dev/null || echo 1)}
slug=$(printf '%s' "$cpu" | tr '[:upper:]' '[:lower:]' | sed 's/([^)]*)//g; s/[^a-z0-9]\{1,\}/-/g; s/^-//; s/-$//' | cut -c1-40)
stem=bench/results/$(date -u +%Y%m%d-%H%M%S)-$slug-${threads}t
mkdir -p bench/results
csv=$stem.csv
txt=$stem.txt
: > "$csv.tmp"

loadavg() { cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?"; }

# Cores' worth of CPU the machine used over 2 s (while we run nothing).
busy_cores() {
    [ -r /proc/stat ] || { echo 0; return; }
    a=$(head -n 1 /proc/stat); sleep 2; b=$(head -n 1 /proc/stat)
    printf '%s\n%s\n' "$a" "$b" | awk -v hz="$(getconf CLK_TCK 2>/dev/null || echo 100)" '
        { busy = $2 + $3 + $4 + $7 + $8 + $9; if (NR == 1) b0 = busy; else printf "%.2f\n", (busy - b0) / hz / 2 }'
}

# Wait (up to WAIT_IDLE seconds) for other jobs to leave the cores alone.
wait_idle() {
    [ "$WAIT_IDLE" -gt 0 ] || return 0
    waited=0
    while :; do
        b=$(busy_cores)
        awk -v b="$b" 'BEGIN { exit !(b < 0.33) }' && return 0
        if [ "$waited" -ge "$WAIT_IDLE" ]; then
            say "others still use $b cores after ${WAIT_IDLE} s; measuring anyway"
            return 0
        fi
        say "waiting for a quiet machine (others use $b cores)"
        sleep 8
        waited=$((waited + 10))
    done
}
{
    echo "date        $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "commit      ${BENCH_COMMIT:-$(git describe --always --dirty 2>/dev/null || echo '?')}"
    echo "cpu         $cpu"
    echo "threads     $threads (nproc $(nproc 2>/dev/null || echo '?'))"
    echo "memory      $(sed -n 's/^MemTotal:[[:space:]]*//p' /proc/meminfo 2>/dev/null)"
    echo "kernel      $(uname -sr)"
    echo "compiler    $(${CC:-cc} --version 2>/dev/null | head -n 1)"
    if [ -n "$NICE" ]; then echo "priority    nice -n $NICE"; else echo "priority    normal"; fi
    echo "load before $(loadavg)"
} > "$txt"
load1=$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo 0)
if awk -v l="$load1" 'BEGIN { exit !(l > 0.5) }'; then
    say "the machine is busy (load average $load1 before starting): expect noisy figures;"
    say "the limits are measured in the same run, so the fractions suffer less than the speeds"
fi

# ---- the machine ------------------------------------------------------------------------
wait_idle
say "measuring the machine (read bandwidth, sgemm peak)"
prio "$BUILD/bench/bench_machine" --csv "$csv.tmp" 2> "$stem.machine.log" || { cat "$stem.machine.log" >&2; die "bench_machine failed"; }
cat "$stem.machine.log" >&2
grep '^OpenBLAS' "$stem.machine.log" | sed 's/^/blas        /' >> "$txt" || true
rm -f "$stem.machine.log"

# ---- the checkpoints --------------------------------------------------------------------
# Made once; remade when the ds3 version or the generator's sources change (not on
# every rebuild: kernels do not change what mkmodel writes).
gen_sum=$(cat src/tools/mkmodel.c src/model/config.c src/kernels/dtype.c src/io/safetensors.c 2>/dev/null | cksum | cut -d' ' -f1)
# the version line only: the rest of --version says the thread count, which
# must not make OMP_NUM_THREADS=1 make bench remake the checkpoints
version=$("$BUILD/ds3" --version 2>/dev/null | head -n 1)
[ -n "$version" ] || version='?'
ensure_model() {   # ensure_model DTYPE → prints the directory
    dir=build/models/small-$1
    args="--config small --dtype $1 --seed 1"
    stamp="$version | generator $gen_sum | mkmodel $args"
    if [ -f "$dir/config.json" ] && [ -f "$dir/.ds3-bench-stamp" ] &&
       [ "$(cat "$dir/.ds3-bench-stamp")" = "$stamp" ]; then
        echo "$dir"; return 0
    fi
    say "making $dir (ds3 mkmodel $args; about a minute, once)"
    mkdir -p build/models
    rm -rf "$dir.tmp.$$"
    # shellcheck disable=SC2086
    "$BUILD/ds3" mkmodel $args -o "$dir.tmp.$$" > /dev/null || { rm -rf "$dir.tmp.$$"; die "mkmodel failed"; }
    printf '%s\n' "$stamp" > "$dir.tmp.$$/.ds3-bench-stamp"
    rm -rf "$dir"
    mv "$dir.tmp.$$" "$dir"
    echo "$dir"
}

# ---- ds3 ----------------------------------------------------------------------------
quick=""
[ "$QUICK" = 1 ] && quick=--quick
first_model=""
for dt in $MODELS; do
    case "$dt" in fp8|bf16|f32) ;; *) die "BENCH_MODELS: unknown dtype '$dt' (fp8, bf16, f32)" ;; esac
    dir=$(ensure_model "$dt")
    [ -n "$first_model" ] || first_model=$dir
    wait_idle
    say "ds3 on $dir"
    prio "$BUILD/bench/bench_ds3" --model "$dir" --name small --dtype "$dt" --csv "$csv.tmp" \
        --runs "$RUNS" --steps "$STEPS" $quick || die "bench_ds3 failed on $dir"
done

# ---- other bench programs (each appends its rows with --csv FILE) -------------------
for prog in "$BUILD"/bench/bench_*; do
    # (bench_slice needs a V3-sized checkpoint: bench/v3-slice.sh runs it)
    case "$(basename "$prog")" in bench_machine|bench_ds3|bench_slice|*.d|*.o) continue ;; esac
    [ -x "$prog" ] || continue
    say "$(basename "$prog")"
    prio "$prog" --csv "$csv.tmp" || say "$(basename "$prog") failed (rows may be missing)"
done

# ---- transformers ---------------------------------------------------------------------
py=""
if [ "$HF" != 0 ] && [ -n "$first_model" ]; then
    for v in ${DS3_VENV:-} .venv venv ../venv; do
        if [ -z "$v" ] || [ ! -x "$v/bin/python" ]; then continue; fi
        if "$v/bin/python" -c 'import torch, transformers, safetensors' > /dev/null 2>&1; then py=$v/bin/python; break; fi
    done
    if [ -n "$py" ]; then
        wait_idle
        say "transformers ($py) on $first_model"
        for hdt in $HF_DTYPES; do
            prio "$py" bench/compare_hf.py --model "$first_model" --name small --threads "$threads" \
                --csv "$csv.tmp" --dtype "$hdt" --steps "$STEPS" > "$stem.hf-$hdt.json" ||
                say "compare_hf.py --dtype $hdt failed; no transformers figures for it"
            [ -s "$stem.hf-$hdt.json" ] || rm -f "$stem.hf-$hdt.json"
        done
    else
        say "no Python environment with torch + transformers (DS3_VENV, .venv, venv, ../venv): no comparison"
    fi
fi

echo "load after  $(loadavg)" >> "$txt"
mv "$csv.tmp" "$csv"

# ---- summary ------------------------------------------------------------------------------
awk -F, 'NR == 1 { printf "%-22s %-18s %-6s %-20s %10s %-14s %-20s %s\n", "metric", "model", "dtype", "where",
                     "value", "unit", "of the machine limit", "others busy (cores)" }
NR > 1 && $8 != "" && $1 !~ /^limit_|^loadavg|^openblas/ {
    where = ""
    if ($5 != "") where = where " T=" $5
    if ($6 != "") where = where " ctx=" $6
    if ($4 != "") where = where " t=" $4
    frac = $13 != "" ? sprintf("%5.1f%% of %.4g", 100 * $13, $12) : ""
    printf "%-22s %-18s %-6s %-20s %10.4g %-14s %-20s %s\n", $1, $2, $3, where, $8, $11, frac, $14
}' "$csv" >&2

# ---- plot ---------------------------------------------------------------------------------
png=$stem.png
plotted=0
if ! command -v gnuplot > /dev/null 2>&1; then   # optional: installed like the build's deps
    GNUPLOT=1 sh scripts/install-deps.sh || say "gnuplot is optional; trying matplotlib"
fi
if command -v gnuplot > /dev/null 2>&1; then
    dat=$stem.plot.tmp
    # fraction of the machine limit for every figure that has one (speed-ups: vs ideal);
    # prefill_gflops and decode_gbps repeat prefill's and decode's fractions
    awk -F, 'NR > 1 && $13 != "" && $1 !~ /^(peak_rss|prefill_gflops|decode_gbps)$/ {
        lab = $1 " " $3
        if ($5 != "" && $1 !~ /^decode/) lab = lab " T" $5
        if ($6 != "" && $6 != "0") lab = lab " ctx" $6
        lab = lab " " $4 "t"
        gsub(/_/, "-", lab)
        printf "\"%s\" %s\n", lab, $13
    }' "$csv" > "$dat.frac"
    awk -F, 'NR > 1 && ($1 == "prefill" || $1 == "decode" || $1 ~ /^hf_/) {
        lab = $1 " " $3
        if ($1 ~ /prefill/) lab = lab " T" $5; else lab = lab " ctx" $6
        lab = lab " " $4 "t"
        gsub(/_/, "-", lab)
        printf "\"%s\" %s\n", lab, $8
    }' "$csv" > "$dat.speed"
    if [ -s "$dat.frac" ] && gnuplot > /dev/null 2>&1 <<EOF
set terminal pngcairo size 1600,1100 font "sans,10"
set output "$png"
set multiplot layout 2,1 title "ds3 on small — $cpu, $threads threads — $(date -u +%Y-%m-%d)"
set rmargin 12
set style fill solid 0.7
set boxwidth 0.7
set grid ytics
set xtics rotate by -40 left noenhanced
set yrange [0:1.05<*]
set title "fraction of this machine's limit (read bandwidth, sgemm peak, ideal speed-up), measured in the same run"
set arrow from graph 0, first 0.8 to graph 1, first 0.8 nohead dt 2 lc rgb "#aa0000"
set arrow from graph 0, first 0.6 to graph 1, first 0.6 nohead dt 3 lc rgb "#0000aa"
set label "0.8: decode target" at graph 0.01, first 0.82 tc rgb "#aa0000"
set label "0.6: prefill target" at graph 0.01, first 0.62 tc rgb "#0000aa"
plot "$dat.frac" using 0:2:xtic(1) with boxes lc rgb "#4477aa" notitle
unset arrow
unset label
set title "tokens per second (log scale)"
set logscale y
set yrange [*:*]
plot "$dat.speed" using 0:2:xtic(1) with boxes lc rgb "#66aa55" notitle
unset multiplot
EOF
    then plotted=1; fi
    rm -f "$dat.frac" "$dat.speed"
fi
if [ "$plotted" = 0 ] && [ -n "$py" ] && "$py" -c 'import matplotlib' > /dev/null 2>&1; then
    "$py" - "$csv" "$png" <<'EOF' && plotted=1
import csv, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
rows = list(csv.DictReader(open(sys.argv[1])))
fr = [r for r in rows if r["fraction_of_limit"] and r["metric"] not in ("peak_rss", "prefill_gflops", "decode_gbps")]
sp = [r for r in rows if r["metric"] in ("prefill", "decode", "hf_prefill", "hf_decode")]
lab = lambda r: f'{r["metric"]} {r["dtype"]} T{r["tokens"]} ctx{r["context"]} {r["threads"]}t'
fig, ax = plt.subplots(2, 1, figsize=(16, 11))
ax[0].bar(range(len(fr)), [float(r["fraction_of_limit"]) for r in fr])
ax[0].set_xticks(range(len(fr)), [lab(r) for r in fr], rotation=40, ha="right", fontsize=7)
ax[0].axhline(0.8, ls="--", c="r"); ax[0].axhline(0.6, ls=":", c="b")
ax[0].set_title("fraction of this machine's limit, measured in the same run")
ax[1].bar(range(len(sp)), [float(r["value"]) for r in sp], color="g")
ax[1].set_xticks(range(len(sp)), [lab(r) for r in sp], rotation=40, ha="right", fontsize=7)
ax[1].set_yscale("log"); ax[1].set_title("tokens per second")
fig.tight_layout(); fig.savefig(sys.argv[2], dpi=90)
EOF
fi
if [ "$plotted" = 1 ]; then
    say "wrote $csv, $txt, $png"
else
    say "wrote $csv, $txt (no plot: install gnuplot, e.g. apt-get install gnuplot-nox, or matplotlib in the venv)"
fi

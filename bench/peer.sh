#!/bin/sh
# bench/peer.sh BUILD — what `make bench-peer` runs: ds3 and llama.cpp side by side on
# the same checkpoint, on this machine, in the same run (docs/BENCHMARKS.md, "Against
# llama.cpp"). Never in CI: it downloads and builds llama.cpp (minutes) and converts
# two checkpoints (minutes more, with torch).
#
#   1. llama.cpp as vendored by a pinned llama-cpp-python sdist from PyPI (version and
#      sha256 below), unpacked in build-peer/; its llama-bench built there with cmake
#      (PEER=1 sh scripts/install-deps.sh installs cmake and g++ when missing).
#   2. small-bf16 and small-fp8 (bench/run.sh's checkpoints, made here if missing)
#      converted with llama.cpp's own convert_hf_to_gguf.py: small-bf16 to BF16,
#      small-fp8 to Q8_0 (the converter dequantises the FP8 blocks, then quantises
#      every matrix, lm_head included, to Q8_0). The converter drops the MTP layer
#      (llama.cpp does not run it) and sets add_bos_token from the tokenizer's
#      post-processor (false here); neither changes what is timed.
#   3. PEER_ROUNDS rounds (default 3); in each, for bf16 then fp8: ds3 run (prompt of
#      PEER_PROMPT ids, PEER_GEN generated; its own prefill and decode timings; after an
#      untimed run of the same prompt and one token, as llama-bench warms up) and
#      llama-bench (pp PEER_PROMPT at depth 0; tg PEER_GEN at depth PEER_PROMPT, as
#      ds3's decode runs after its prompt), interleaved, same thread count, each in a
#      session of its own (its own autogroup: see BENCH_NICE in bench/run.sh).
#      The machine's read bandwidth is measured in each round (bench_machine).
#   4. bench/results/STEM-peer.csv (every run), STEM-peer.txt (the machine, versions,
#      load, and the table of medians: prefill and decode tok/s, decode as a share of
#      the read bandwidth from the bytes each engine reads per token), STEM-peer.png.
#
# Environment:
#   PEER_ROUNDS, PEER_PROMPT, PEER_GEN   as above (defaults 3, 512, 64)
#   PEER_PYTHON   a python3 with torch, transformers, numpy, tqdm, pyyaml for
#                 the converter (default: .venv/bin/python if it has them, else a venv
#                 made in build-peer/venv from PyPI: torch is a few GB)
#   BENCH_NICE    as in bench/run.sh
#   OMP_NUM_THREADS  threads for both engines (default: all cores)
#
# POSIX sh.
set -eu

BUILD=${1:-build}
ROUNDS=${PEER_ROUNDS:-3}
PROMPT=${PEER_PROMPT:-512}
GEN=${PEER_GEN:-64}
NICE=${BENCH_NICE:-}
threads=${OMP_NUM_THREADS:-$(nproc 2>/dev/null || echo 1)}
export OMP_NUM_THREADS="$threads"

LCP_VERSION=0.3.36
LCP_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
LCP_URL=https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/llama_cpp_python-$LCP_VERSION.tar.gz
PEERDIR=build-peer
SRC=$PEERDIR/llama_cpp_python-$LCP_VERSION/vendor/llama.cpp
LBENCH=$PEERDIR/llama.cpp-build/bin/llama-bench

say() { echo "bench-peer: $*" >&2; }
die() { say "$*"; exit 1; }
prio() {
    if [ -z "$NICE" ]; then "$@"; return; fi
    # shellcheck disable=SC2016 # $0 and $@ expand in the inner shell
    setsid -w sh -c 'echo "$0" > /proc/self/autogroup 2> /dev/null; exec nice -n "$0" "$@"' "$NICE" "$@"
}

[ -x "$BUILD/ds3" ] || die "$BUILD/ds3 missing (make)"
[ -x "$BUILD/bench/bench_machine" ] || die "$BUILD/bench/bench_machine missing (make bench builds it)"
mkdir -p "$PEERDIR" bench/results

# ---- 1. llama.cpp ---------------------------------------------------------------------
if [ ! -x "$LBENCH" ]; then
    if ! command -v cmake > /dev/null 2>&1 || ! command -v c++ > /dev/null 2>&1; then
        PEER=1 sh scripts/install-deps.sh || die "cmake and a C++ compiler are needed (PEER=1 sh scripts/install-deps.sh)"
    fi
    tgz=$PEERDIR/llama_cpp_python-$LCP_VERSION.tar.gz
    if [ ! -f "$tgz" ]; then
        say "fetching llama-cpp-python $LCP_VERSION (vendors llama.cpp) from PyPI"
        if command -v curl > /dev/null 2>&1; then curl -fsSL -o "$tgz.tmp" "$LCP_URL" || die "download failed: $LCP_URL"
        else wget -q -O "$tgz.tmp" "$LCP_URL" || die "download failed: $LCP_URL"; fi
        mv "$tgz.tmp" "$tgz"
    fi
    echo "$LCP_SHA256  $tgz" | sha256sum -c - > /dev/null 2>&1 || { rm -f "$tgz"; die "$tgz: sha256 mismatch (removed)"; }
    [ -d "$SRC" ] || tar -xzf "$tgz" -C "$PEERDIR"
    say "building llama-bench in $PEERDIR/llama.cpp-build (a few minutes)"
    cmake -S "$SRC" -B "$PEERDIR/llama.cpp-build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DGGML_OPENMP=ON \
        -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
        -DLLAMA_BUILD_SERVER=OFF > "$PEERDIR/cmake.log" 2>&1 || { tail -20 "$PEERDIR/cmake.log" >&2; die "cmake failed"; }
    cmake --build "$PEERDIR/llama.cpp-build" --target llama-bench -j "$(nproc 2>/dev/null || echo 2)" \
        > "$PEERDIR/build.log" 2>&1 || { tail -20 "$PEERDIR/build.log" >&2; die "building llama-bench failed"; }
fi

# ---- 2. checkpoints and their GGUF conversions ---------------------------------------------
py=${PEER_PYTHON:-}
need='import torch, transformers, numpy, tqdm, yaml'
if [ -z "$py" ]; then
    if [ -x .venv/bin/python ] && .venv/bin/python -c "$need" > /dev/null 2>&1; then py=.venv/bin/python
    else
        py=$PEERDIR/venv/bin/python
        if ! "$py" -c "$need" > /dev/null 2>&1; then
            say "making $PEERDIR/venv for llama.cpp's converter (torch from PyPI: a few GB)"
            python3 -m venv "$PEERDIR/venv" || die "python3 -m venv failed (PYTHON=1 sh scripts/install-deps.sh)"
            "$PEERDIR/venv/bin/pip" install -q torch transformers numpy tqdm pyyaml > "$PEERDIR/pip.log" 2>&1 ||
                { tail -20 "$PEERDIR/pip.log" >&2; die "pip install failed"; }
        fi
    fi
fi
"$py" -c "$need" > /dev/null 2>&1 || die "$py lacks one of torch, transformers, numpy, tqdm, pyyaml"

ensure_model() {   # DTYPE → build/models/small-DTYPE, made as bench/run.sh makes it
    dir=build/models/small-$1
    if [ ! -f "$dir/config.json" ]; then
        say "making $dir (ds3 mkmodel --config small --dtype $1 --seed 1)"
        rm -rf "$dir.tmp.$$"
        "$BUILD/ds3" mkmodel --config small --dtype "$1" --seed 1 -o "$dir.tmp.$$" > /dev/null ||
            { rm -rf "$dir.tmp.$$"; die "mkmodel failed"; }
        mv "$dir.tmp.$$" "$dir"
    fi
    echo "$dir"
}
convert() {   # DIR OUTTYPE → build-peer/NAME.gguf (remade when the checkpoint is newer)
    out=$PEERDIR/$(basename "$1")-$2.gguf
    if [ ! -f "$out" ] || [ -n "$(find "$1/config.json" -newer "$out" 2> /dev/null)" ]; then
        say "converting $1 to $2 with llama.cpp's convert_hf_to_gguf.py (minutes)"
        PYTHONPATH=$SRC/gguf-py "$py" "$SRC/convert_hf_to_gguf.py" "$1" --outtype "$2" --outfile "$out.tmp" \
            > "$out.log" 2>&1 || { tail -20 "$out.log" >&2; rm -f "$out.tmp"; die "conversion failed ($out.log)"; }
        mv "$out.tmp" "$out"
    fi
    echo "$out"
}
m_bf16=$(ensure_model bf16); m_fp8=$(ensure_model fp8)
g_bf16=$(convert "$m_bf16" bf16); g_q8=$(convert "$m_fp8" q8_0)

# Weight bytes each engine reads per decoded token: every tensor of the main model
# once, the routed experts' share top-k / n_experts, one row of the embedding (ds3:
# the MTP layer is not read by `run`; llama.cpp's file has none).
bytes_per_token() {   # DIR|GGUF → bytes
    PYTHONPATH=$SRC/gguf-py "$py" - "$1" <<'EOF'
import json, os, re, struct, sys
p = sys.argv[1]
if p.endswith(".gguf"):
    from gguf import GGUFReader
    r = GGUFReader(p)
    kv = {f.name: f for f in r.fields.values()}
    def val(suffix):
        for k, f in kv.items():
            if k.endswith(suffix): return int(f.parts[f.data[0]][0])
    E, K = val(".expert_count"), val(".expert_used_count")
    total = 0
    for t in r.tensors:
        n = int(t.n_bytes)
        if "_exps" in t.name: n = n * K / E
        elif t.name == "token_embd.weight": n = n / int(t.shape[-1])
        total += n
    print(int(total))
else:
    cfg = json.load(open(os.path.join(p, "config.json")))
    E, K, L, V = cfg["n_routed_experts"], cfg["num_experts_per_tok"], cfg["num_hidden_layers"], cfg["vocab_size"]
    total = 0
    for f in sorted(os.listdir(p)):
        if not f.endswith(".safetensors"): continue
        with open(os.path.join(p, f), "rb") as fh:
            hdr = json.loads(fh.read(struct.unpack("<Q", fh.read(8))[0]))
        for name, t in hdr.items():
            if name == "__metadata__": continue
            n = t["data_offsets"][1] - t["data_offsets"][0]
            m = re.match(r"model\.layers\.(\d+)\.", name)
            if m and int(m.group(1)) >= L: continue          # MTP: not read by run
            if ".mlp.experts." in name: n = n * K / E
            elif "embed_tokens" in name: n = n / V
            total += n
    print(int(total))
EOF
}
b_ds3_bf16=$(bytes_per_token "$m_bf16"); b_ds3_fp8=$(bytes_per_token "$m_fp8")
b_l_bf16=$(bytes_per_token "$g_bf16"); b_l_q8=$(bytes_per_token "$g_q8")

# ---- 3. rounds --------------------------------------------------------------------------------
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -n 1)
[ -n "$cpu" ] || cpu=$(uname -m)
slug=$(printf '%s' "$cpu" | tr '[:upper:]' '[:lower:]' | sed 's/([^)]*)//g; s/[^a-z0-9]\{1,\}/-/g; s/^-//; s/-$//' | cut -c1-40)
stem=bench/results/$(date -u +%Y%m%d-%H%M%S)-$slug-${threads}t-peer
csv=$stem.csv
txt=$stem.txt
echo "engine,dtype,round,prefill_tok_s,decode_tok_s,read_bw_gbs,bytes_per_token,load1" > "$csv.tmp"
# the prompt: PROMPT ids from a fixed LCG over [1000, 100000)
ids=$(awk -v n="$PROMPT" 'BEGIN { x = 12345; for (i = 0; i < n; i++) { x = (x * 69069 + 1) % 4294967296;
      printf "%s%d", i ? "," : "", 1000 + x % 99000 } }')
load1() { cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo "?"; }
{
    echo "date        $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "commit      $(git describe --always --dirty 2>/dev/null || echo '?')"
    echo "cpu         $cpu"
    echo "threads     $threads (nproc $(nproc 2>/dev/null || echo '?'))"
    echo "llama.cpp   @LCOMMIT@ (llama-cpp-python $LCP_VERSION sdist, sha256 $LCP_SHA256)"
    echo "converter   $py ($("$py" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' 2>/dev/null))"
    # the OpenBLAS kernels ds3's prefill runs on (OPENBLAS_CORETYPE chooses them: BENCHMARKS.md)
    echo "ds3 blas    $("$BUILD/ds3" --version 2>/dev/null | sed -n 's/^BLAS: //p')${OPENBLAS_CORETYPE:+ (OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE)}"
    echo "prompt      $PROMPT ids, $GEN generated; $ROUNDS rounds, interleaved"
    if [ -n "$NICE" ]; then echo "priority    nice -n $NICE, own session"; else echo "priority    normal"; fi
    echo "load before $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"
} > "$txt"

# lbench OUT ARGS...: llama-bench ARGS into OUT. On a CPU with AMX, llama.cpp 0c1e57098
# moves Q8_0 weights into its AMX buffer ("repack") and then aborts on this model
# (ggml-backend.cpp:1294, GGML_ASSERT(*cur_backend_id != -1)); after that failure the Q8_0
# runs use --repack 0 (its plain CPU kernels for Q8_0), and the table's header says so.
# BF16 has no such repack and runs as it is.
norepack=
lbench() {
    out=$1; shift
    opt=; [ "$ldt" = q8_0 ] && opt=$norepack
    if prio "$LBENCH" "$@" $opt > "$out" 2> "$PEERDIR/lb.err"; then return 0; fi
    if [ "$ldt" = q8_0 ] && [ -z "$norepack" ] && grep -q 'cur_backend_id != -1' "$PEERDIR/lb.err"; then
        say "llama-bench aborted in its AMX repack of Q8_0 (GGML_ASSERT(*cur_backend_id != -1)); again with --repack 0"
        norepack="--repack 0"
        echo "note        llama.cpp q8_0 with --repack 0: with its default repack of Q8_0 weights for AMX llama-bench aborts (GGML_ASSERT(*cur_backend_id != -1), ggml-backend.cpp:1294)" >> "$txt"
        prio "$LBENCH" "$@" $norepack > "$out" 2> "$PEERDIR/lb.err" && return 0
    fi
    cat "$PEERDIR/lb.err" >&2
    return 1
}

r=1
while [ "$r" -le "$ROUNDS" ]; do
    prio "$BUILD/bench/bench_machine" --csv "$PEERDIR/machine.csv" --runs 1 > /dev/null 2>&1 || die "bench_machine failed"
    bw=$(awk -F, -v t="$threads" '$1 == "limit_read_bw" && $4 == t { print $8 }' "$PEERDIR/machine.csv" | tail -n 1)
    rm -f "$PEERDIR/machine.csv"
    for dt in bf16 fp8; do
        if [ "$dt" = bf16 ]; then m=$m_bf16; g=$g_bf16; bd=$b_ds3_bf16; bl=$b_l_bf16; ldt=bf16
        else m=$m_fp8; g=$g_q8; bd=$b_ds3_fp8; bl=$b_l_q8; ldt=q8_0; fi
        say "round $r/$ROUNDS: ds3 $dt"
        # a warm-up, as llama-bench does its own before it times: the same prompt
        # and one token, untimed (the weights paged in, the thread team made)
        prio "$BUILD/ds3" run -m "$m" --tokens "$ids" -n 1 -t "$threads" > /dev/null 2> "$PEERDIR/ds3.err" ||
            { cat "$PEERDIR/ds3.err" >&2; die "ds3 run (warm-up) failed"; }
        l=$(load1)
        prio "$BUILD/ds3" run -m "$m" --tokens "$ids" -n "$GEN" -t "$threads" > /dev/null 2> "$PEERDIR/ds3.err" ||
            { cat "$PEERDIR/ds3.err" >&2; die "ds3 run failed"; }
        pf=$(sed -n 's/^prefill: .*(\([0-9.]*\) tok\/s)$/\1/p' "$PEERDIR/ds3.err")
        dc=$(sed -n 's/^decode: .*(\([0-9.]*\) tok\/s)$/\1/p' "$PEERDIR/ds3.err")
        echo "ds3,$dt,$r,$pf,$dc,$bw,$bd,$l" >> "$csv.tmp"
        say "round $r/$ROUNDS: llama.cpp $ldt"
        l=$(load1)
        lbench "$PEERDIR/pp.csv" -m "$g" -p "$PROMPT" -n 0 -t "$threads" -r 1 -o csv || die "llama-bench (prefill) failed"
        lbench "$PEERDIR/tg.csv" -m "$g" -p 0 -n "$GEN" -d "$PROMPT" -t "$threads" -r 1 -o csv ||
            die "llama-bench (decode) failed"
        # the column named $2 in llama-bench's CSV $1 (avg_ts: tokens per second)
        col() { awk -F, -v want="$2" 'NR == 1 { for (i = 1; i <= NF; i++) { h = $i; gsub(/"/, "", h); if (h == want) c = i } }
                         NR == 2 && c { v = $c; gsub(/"/, "", v); print v }' "$1"; }
        echo "llama.cpp,$ldt,$r,$(col "$PEERDIR/pp.csv" avg_ts),$(col "$PEERDIR/tg.csv" avg_ts),$bw,$bl,$l" >> "$csv.tmp"
        lcommit=$(col "$PEERDIR/pp.csv" build_commit)
    done
    r=$((r + 1))
done
echo "load after  $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)" >> "$txt"
sed "s/@LCOMMIT@/${lcommit:-?}/" "$txt" > "$txt.tmp" && mv "$txt.tmp" "$txt"
mv "$csv.tmp" "$csv"

# ---- 4. the table of medians ---------------------------------------------------------------------
table=$(awk -F, '
function med(s,   a, n, i, j, t) { n = split(s, a, " "); for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++)
        if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
NR > 1 { k = $1 " " $2; if (!(k in pf)) order[++nk] = k
         pf[k] = pf[k] " " $4; dc[k] = dc[k] " " $5; sh[k] = sh[k] " " ($5 * $7 / 1e9 / $6); bpt[k] = $7 }
END {
    printf "| engine, weights | prefill %s, tok/s | decode, tok/s | decode x bytes/token / read bandwidth | bytes/token |\n", P
    printf "|---|---|---|---|---|\n"
    for (i = 1; i <= nk; i++) { k = order[i]; mp[k] = med(pf[k]); md[k] = med(dc[k])
        printf "| %s | %.1f | %.2f | %.2f | %.1f MB |\n", k, mp[k], md[k], med(sh[k]), bpt[k] / 1e6 }
    if (("ds3 bf16" in mp) && ("llama.cpp bf16" in mp))
        printf "| ds3 bf16 / llama.cpp bf16 | %.2fx | %.2fx | | |\n", mp["ds3 bf16"] / mp["llama.cpp bf16"], md["ds3 bf16"] / md["llama.cpp bf16"]
    if (("ds3 fp8" in mp) && ("llama.cpp q8_0" in mp))
        printf "| ds3 fp8 / llama.cpp q8_0 | %.2fx | %.2fx | | |\n", mp["ds3 fp8"] / mp["llama.cpp q8_0"], md["ds3 fp8"] / md["llama.cpp q8_0"]
}' P="$PROMPT" "$csv")
{ echo; echo "medians of $ROUNDS rounds"; echo "$table"; } >> "$txt"
cat "$txt" >&2

# ---- plot (gnuplot; optional) ----------------------------------------------------------------------
if ! command -v gnuplot > /dev/null 2>&1; then GNUPLOT=1 sh scripts/install-deps.sh || true; fi
if command -v gnuplot > /dev/null 2>&1; then
    echo "$table" | awk -F'|' 'NR > 2 && $2 !~ /\// { gsub(/^ +| +$/, "", $2); printf "\"%s\" %s %s\n", $2, $3 + 0, $4 + 0 }' > "$stem.dat"
    gnuplot > /dev/null 2>&1 <<EOF || say "gnuplot failed; no plot"
set terminal pngcairo size 1200,500 font "sans,10"
set output "$stem.png"
set multiplot layout 1,2 title "ds3 and llama.cpp on small — $cpu, $threads threads — medians of $ROUNDS rounds"
set style fill solid 0.7
set boxwidth 0.7
set grid ytics
set xtics rotate by -30 left noenhanced
set yrange [0:*]
set title "prefill $PROMPT tokens, tok/s"
plot "$stem.dat" using 0:2:xtic(1) with boxes lc rgb "#4477aa" notitle
set title "decode, tok/s (after the $PROMPT-token prompt)"
plot "$stem.dat" using 0:3:xtic(1) with boxes lc rgb "#66aa55" notitle
unset multiplot
EOF
    rm -f "$stem.dat"
fi
say "wrote $csv, $txt$( [ -f "$stem.png" ] && echo ", $stem.png")"

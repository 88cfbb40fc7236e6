/*
 * bench_ds3.c — ds3's speed on one checkpoint, as fractions of this machine's
 * limits (issue 4). Run by `make bench` (bench/run.sh) once per checkpoint,
 * after bench_machine has written the limits into the same CSV.
 *
 *   prefill      tok/s of one ds3_forward over T tokens from position 0 with
 *                the logits of every position (what `ds3 run` and transformers'
 *                forward do), T = 64 and 512; limit = sgemm peak ÷ FLOPs per token
 *   decode       tok/s of single-token ds3_forward calls (logits included) at
 *                contexts 16 and 1024; each step timed alone, the median of the
 *                steps; limit = read bandwidth ÷ weight bytes a token reads, the
 *                bandwidth measured just before and just after the cell (the
 *                larger; row decode_read_bw), as the machine's moves within minutes
 *   layer_*      one sublayer called directly (src/model/model.h): MLA, the dense FFN,
 *                one MoE layer, lm_head, at T = 1 and 64 (MoE also 256, the size
 *                of a prefill chunk); limit = the roofline max(bytes ÷ bandwidth,
 *                FLOPs ÷ sgemm peak), with the experts the tokens actually chose
 *   scaling      prefill 64 and decode at context 16 with 1 and 2 threads (and
 *                all, if more); the ideal speed-up is the machine's own 1→t ratio
 *   peak_rss     getrusage's high-water mark against checkpoint + KV cache +
 *                scratch + the caller's logits buffer, + 10% (the cap)
 *
 * Work per token is counted from the loaded tensors themselves, in their stored
 * dtype: bytes = every weight a decode step multiplies by (attention, dense FFN,
 * router, the K routed experts' and the shared expert's projections, lm_head,
 * fp8 block scales, norm vectors, one embedding row); FLOPs = 2 · (their
 * rows·cols) per token + the attention core, 2·H·(p+1)·(2C+Dr) at position p
 * (absorbed MLA: scores over C+Dr, values over C).
 *
 * usage: bench_ds3 --model DIR --csv FILE [--name small] [--dtype fp8]
 *                  [--runs R] [--steps N] [--quick] [--replay-only]
 */
#include "bench.h"
#include "generate/generate.h"

#include <stdint.h>
#include <sys/resource.h>
#include <unistd.h>

#ifdef _OPENMP
#include <omp.h>
#endif

static int max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static void set_threads(int t) {
#ifdef _OPENMP
    omp_set_num_threads(t);
#else
    (void)t;
#endif
}

static void die(const char *what, ds3_status st) {
    const char *msg = ds3_last_error();
    fprintf(stderr, "bench_ds3: %s: %s\n", what, msg && msg[0] ? msg : ds3_status_name(st));
    exit(1);
}

/* ========================================================================== */
/* Work per token, from the tensors as stored                                  */
/* ========================================================================== */

/* Bytes of a weight as stored, fp8 block scales included; 0 if absent. */
static double tensor_bytes(const ds3_tensor *t) {
    if (!t->data) return 0;
    double b = (double)t->rows * (double)t->cols * (double)ds3_dtype_size(t->dtype);
    if (t->scale_inv) {
        int64_t br = (t->rows + DS3_FP8_BLOCK - 1) / DS3_FP8_BLOCK, bc = (t->cols + DS3_FP8_BLOCK - 1) / DS3_FP8_BLOCK;
        b += 4.0 * (double)(br * bc);
    }
    return b;
}

/* Multiply-adds per token through a weight (rows·cols); 0 if absent. */
static double tensor_macs(const ds3_tensor *t) { return t->data ? (double)t->rows * (double)t->cols : 0; }

/* One sublayer's weights: bytes read and multiply-adds per token. */
typedef struct {
    double bytes, macs;
} work;

static void add(work *w, const ds3_tensor *t) {
    w->bytes += tensor_bytes(t);
    w->macs += tensor_macs(t);
}

static work ffn_work(const ds3_ffn *f) {
    work w = {0, 0};
    add(&w, &f->gate_proj);
    add(&w, &f->up_proj);
    add(&w, &f->down_proj);
    return w;
}

/* Attention projections of layer l plus its two norm vectors (decoded at load). */
static work attn_work(const ds3_layer *l, const ds3_config *c) {
    work w = {0, 0};
    add(&w, &l->q_a_proj);
    add(&w, &l->q_b_proj);
    add(&w, &l->q_proj);
    add(&w, &l->kv_a_proj_with_mqa);
    add(&w, &l->kv_b_proj);
    add(&w, &l->o_proj);
    w.bytes += sizeof(ds3_real) * (double)(2 * c->hidden_size + c->q_lora_rank + c->kv_lora_rank);
    return w;
}

/* Router (+ bias) and the shared experts of an MoE layer, without the routed ones. */
static work moe_fixed_work(const ds3_layer *l, const ds3_config *c) {
    work w = {0, 0};
    add(&w, &l->gate);
    if (l->e_score_correction_bias) w.bytes += sizeof(ds3_real) * (double)c->n_routed_experts;
    if (c->n_shared_experts > 0) {
        work s = ffn_work(&l->shared_experts);
        w.bytes += s.bytes;
        w.macs += s.macs;
    }
    return w;
}

typedef struct {
    work attn;       /* per layer (all layers have the same shapes) */
    work dense;      /* one dense FFN layer */
    work moe_fixed;  /* one MoE layer: router + shared experts */
    work expert;     /* one routed expert */
    work head;       /* lm_head + the final norm */
    double embed_row;
    int n_dense, n_moe, K;
    double decode_bytes, token_macs;  /* the whole model, per token */
} model_work;

static model_work count_work(const ds3_model *m) {
    const ds3_config *c = &m->cfg;
    model_work w;
    memset(&w, 0, sizeof w);
    w.K = c->num_experts_per_tok;
    w.attn = attn_work(&m->layers[0], c);
    for (int i = 0; i < c->num_hidden_layers; i++) {
        const ds3_layer *l = &m->layers[i];
        if (l->is_moe) {
            w.n_moe++;
            w.moe_fixed = moe_fixed_work(l, c);
            w.expert = ffn_work(&l->experts[0]);
        } else {
            w.n_dense++;
            w.dense = ffn_work(&l->mlp);
        }
    }
    add(&w.head, &m->lm_head);
    w.head.bytes += sizeof(ds3_real) * (double)c->hidden_size;
    w.embed_row = (double)c->hidden_size * (double)ds3_dtype_size(m->embed_tokens.dtype);
    const double L = c->num_hidden_layers;
    w.decode_bytes = L * w.attn.bytes + w.n_dense * w.dense.bytes +
                     w.n_moe * (w.moe_fixed.bytes + w.K * w.expert.bytes) + w.head.bytes + w.embed_row;
    w.token_macs = L * w.attn.macs + w.n_dense * w.dense.macs +
                   w.n_moe * (w.moe_fixed.macs + w.K * w.expert.macs) + w.head.macs;
    return w;
}

/* Attention-core multiply-adds of one layer for positions [p0, p0+T) (absorbed MLA). */
static double attn_core_macs(const ds3_config *c, int p0, int T) {
    double sum_p = 0;  /* Σ (p+1): keys each query sees */
    for (int p = p0; p < p0 + T; p++) sum_p += p + 1;
    return (double)c->num_attention_heads * sum_p * (2.0 * c->kv_lora_rank + c->qk_rope_head_dim);
}

/* FLOPs of a forward over positions [p0, p0+T), with every position's logits. */
static double forward_flops(const ds3_model *m, const model_work *w, int p0, int T) {
    return 2.0 * (w->token_macs * T + m->cfg.num_hidden_layers * attn_core_macs(&m->cfg, p0, T));
}

/* Bytes of absorbed KV cache one decode step reads at position p, all layers. */
static double kv_read_bytes(const ds3_config *c, int p) {
    return (double)c->num_hidden_layers * (p + 1) * (c->kv_lora_rank + c->qk_rope_head_dim) * sizeof(ds3_real);
}

/* ========================================================================== */
/* The run                                                                     */
/* ========================================================================== */

typedef struct {
    const ds3_model *m;
    ds3_state *s;
    model_work w;
    FILE *csv;
    const char *csv_path, *name, *dtype;
    int runs, steps, nmax, warmup;
    uint64_t *bwbuf;  /* bwn words (512 MiB) for the read bandwidth around decode cells */
    size_t bwn;
    int32_t *tokens;   /* [max_seq] */
    ds3_real *logits;  /* [512][V] */
} bench;

/* Machine limits at t threads, from bench_machine's rows (NaN if absent). */
static double bw_limit(const bench *b, int t) { return bench_csv_lookup(b->csv_path, "limit_read_bw", t) * 1e9; }
static double gemm_limit(const bench *b, int t) { return bench_csv_lookup(b->csv_path, "limit_sgemm", t) * 1e9; }

/* " [others busy: 0.9 cores]" when the rest of the machine used a tenth of a core or more. */
static const char *busy_note(bench_stat s) {
    static char buf[64];
    buf[0] = '\0';
    if (!isnan(s.busy_other) && s.busy_other >= 0.1)
        snprintf(buf, sizeof buf, "  [others busy: %.2f cores]", s.busy_other);
    return buf;
}

/* Seconds of one ds3_forward. */
static double timed_forward(bench *b, const int32_t *tok, int n, int start, ds3_real *logits) {
    double t0 = bench_now();
    ds3_status st = ds3_forward(b->s, tok, n, start, logits);
    if (st != DS3_OK) die("ds3_forward", st);
    return bench_now() - t0;
}

/* Prefill T tokens from position 0, all logits. Returns tok/s (median). */
static bench_stat prefill(bench *b, int T, int threads) {
    double v[64];
    for (int r = 0; r < b->warmup; r++) timed_forward(b, b->tokens, T, 0, b->logits);
    bench_mark m0 = bench_mark_now();
    for (int r = 0; r < b->runs; r++) v[r] = timed_forward(b, b->tokens, T, 0, b->logits);
    bench_stat tok_s = bench_rate(bench_done(v, b->runs, m0), T);
    double flops = forward_flops(b->m, &b->w, 0, T), peak = gemm_limit(b, threads);
    bench_row(b->csv, "prefill", b->name, b->dtype, threads, T, 0, tok_s, "tok/s", peak / flops * T, 1);
    bench_row(b->csv, "prefill_gflops", b->name, b->dtype, threads, T, 0, bench_scale(tok_s, flops / T / 1e9),
              "GFLOP/s", peak / 1e9, 1);
    fprintf(stderr, "  prefill %4d tokens, %d thread(s): %8.2f tok/s (%.1f GFLOP/s; %.1f%% of sgemm peak)%s\n", T,
            threads, tok_s.med, tok_s.med * flops / T / 1e9, 100 * tok_s.med * flops / T / peak, busy_note(tok_s));
    return tok_s;
}

/* What the bandwidth probes summed: stored, so that the compiler keeps the reads. */
static volatile uint64_t bw_sink;

/* Decode steps at positions ctx.. (the cache must hold 0..ctx-1). tok/s. */
static bench_stat decode(bench *b, int ctx, int threads) {
    double v[256];
    int steps = b->steps;
    for (int r = 0; r < b->warmup; r++) timed_forward(b, b->tokens + ctx, 1, ctx, b->logits);
    /* The read bandwidth just before and just after the steps (bench.h: as
     * bench_machine measures it); the larger is the cell's limit. On a shared
     * machine the bandwidth moves by a third within minutes, so a limit
     * measured at the start of the run says little about a cell timed later. */
    uint64_t sink = 0;
    const double bw0 = bench_read_bw_now(b->bwbuf, b->bwn, 2, &sink);
    bench_mark m0 = bench_mark_now();
    for (int i = 0; i < steps; i++) v[i] = timed_forward(b, b->tokens + ctx + i, 1, ctx + i, b->logits);
    bench_stat tok_s = bench_rate(bench_done(v, steps, m0), 1.0);
    const double bw1 = bench_read_bw_now(b->bwbuf, b->bwn, 2, &sink), bw_gbs = bw0 > bw1 ? bw0 : bw1;
    bench_row(b->csv, "decode_read_bw", b->name, b->dtype, threads, steps, ctx, bench_one(bw_gbs), "GB/s", NAN, 1);
    const ds3_config *c = &b->m->cfg;
    double bytes = b->w.decode_bytes, bw = bw_gbs * 1e9;
    bw_sink += sink;  /* keeps the reads */
    bench_row(b->csv, "decode", b->name, b->dtype, threads, steps, ctx, tok_s, "tok/s", bw / bytes, 1);
    bench_row(b->csv, "decode_gbps", b->name, b->dtype, threads, steps, ctx, bench_scale(tok_s, bytes / 1e9),
              "GB/s", bw / 1e9, 1);
    fprintf(stderr, "  decode at context %4d, %d thread(s): %8.2f tok/s (%.2f GB/s of weights; %.1f%% of read "
            "bandwidth; KV cache adds %.2f MB/token)%s\n", ctx, threads, tok_s.med, tok_s.med * bytes / 1e9,
            100 * tok_s.med * bytes / bw, kv_read_bytes(c, ctx + steps / 2) / 1e6, busy_note(tok_s));
    return tok_s;
}

/* ---- one sublayer at a time ----------------------------------------------- */

typedef enum { PART_MLA, PART_DENSE, PART_MOE, PART_HEAD } part;
static const char *const part_metric[] = {"layer_mla", "layer_dense", "layer_moe", "lm_head"};

/* Run one sublayer on x [T][D] → out [T][D or V]. */
static void run_part(bench *b, part p, int layer, ds3_real *out, const ds3_real *x, int T, int start) {
    const ds3_model *m = b->m;
    const ds3_layer *l = &m->layers[layer];
    switch (p) {
    case PART_MLA: ds3_mla(b->s, l, &b->s->cache[layer], out, x, T, start); break;
    case PART_DENSE: {
        ds3_arena a = ds3_scratch(b->s);
        ds3_mlp(b->s, out, x, &l->mlp, m->cfg.intermediate_size, T, &a);
        break;
    }
    case PART_MOE: ds3_moe(b->s, l, out, x, T, start, "bench"); break;
    case PART_HEAD: ds3_proj(b->s, out, x, &m->lm_head, T); break;
    }
}

/* Distinct routed experts the T tokens of x choose in MoE layer `layer`. */
static int experts_touched(bench *b, int layer, const ds3_real *x, int T) {
    const ds3_config *c = &b->m->cfg;
    const int E = c->n_routed_experts, K = c->num_experts_per_tok;
    ds3_real *lg = malloc(sizeof(ds3_real) * ((size_t)T * E + 2 * (size_t)E + c->n_group + K));
    int32_t *idx = malloc(sizeof(int32_t) * K);
    unsigned char *used = calloc((size_t)E, 1);
    if (!lg || !idx || !used) {
        fprintf(stderr, "bench_ds3: out of memory\n");
        exit(1);
    }
    ds3_real *sc = lg + (size_t)T * E, *scratch = sc + E, *wk = scratch + E + c->n_group;
    const ds3_layer *l = &b->m->layers[layer];
    ds3_proj_router(b->s, lg, x, &l->gate, T);
    int n = 0;
    for (int t = 0; t < T; t++) {
        ds3_moe_route(idx, wk, sc, lg + (size_t)t * E, l->e_score_correction_bias, c, scratch);
        for (int k = 0; k < K; k++)
            if (!used[idx[k]]) used[idx[k]] = 1, n++;
    }
    free(lg);
    free(idx);
    free(used);
    return n;
}

/*
 * Time one sublayer at T tokens starting at position `start`; the input is the
 * RMS-normalised embedding of the benchmark tokens, so the router spreads them
 * as real text would. The limit is the roofline of its weights and FLOPs.
 */
static void layer_part(bench *b, part p, int layer, int T, int start, ds3_real *x, ds3_real *out) {
    const ds3_model *m = b->m;
    const ds3_config *c = &m->cfg;
    const int D = c->hidden_size, threads = max_threads();
    for (int t = 0; t < T; t++) {
        ds3_tensor_rows(x + (size_t)t * D, &m->embed_tokens, b->tokens[start + t], 1);
        ds3_rmsnorm(x + (size_t)t * D, x + (size_t)t * D, m->norm, D, c->rms_norm_eps);
    }
    double bytes = 0, macs = 0;
    int touched = 0;
    switch (p) {
    case PART_MLA:
        bytes = b->w.attn.bytes + kv_read_bytes(c, start + T - 1);
        macs = b->w.attn.macs * T + attn_core_macs(c, start, T);
        break;
    case PART_DENSE:
        bytes = b->w.dense.bytes;
        macs = b->w.dense.macs * T;
        break;
    case PART_MOE:
        touched = experts_touched(b, layer, x, T);
        bytes = b->w.moe_fixed.bytes + touched * b->w.expert.bytes;
        macs = (b->w.moe_fixed.macs + b->w.K * b->w.expert.macs) * T;
        break;
    case PART_HEAD:
        bytes = b->w.head.bytes;
        macs = b->w.head.macs * T;
        break;
    }
    int runs = b->runs < 5 ? 5 : b->runs;
    double v[64];
    for (int r = 0; r < (b->warmup ? 1 : 0); r++) run_part(b, p, layer, out, x, T, start);
    bench_mark m0 = bench_mark_now();
    for (int r = 0; r < runs; r++) {
        double t0 = bench_now();
        run_part(b, p, layer, out, x, T, start);
        v[r] = bench_now() - t0;
    }
    bench_stat ms = bench_scale(bench_done(v, runs, m0), 1e3);
    double t_bw = bytes / bw_limit(b, threads), t_flops = 2 * macs / gemm_limit(b, threads);
    double limit_ms = 1e3 * (isnan(t_flops) || t_bw > t_flops ? t_bw : t_flops);
    bench_row(b->csv, part_metric[p], b->name, b->dtype, threads, T, start, ms, "ms", limit_ms, 0);
    fprintf(stderr, "  %-11s layer %d, T %3d at %4d: %8.3f ms (limit %.3f ms, %s-bound: %.1f MB, %.3f GFLOP)%s\n",
            part_metric[p], layer, T, start, ms.med, limit_ms, t_bw > t_flops ? "memory" : "compute", bytes / 1e6,
            2 * macs / 1e9, busy_note(ms));
    if (p == PART_MOE)
        fprintf(stderr, "              %d of %d routed experts touched\n", touched, c->n_routed_experts);
}

/*
 * ds3 replay's cost (src/model/replay.c): a dump of T tokens replayed and
 * compared, as `ds3 replay` does (open the dump, every layer from its inputs,
 * the comparison), against what it should cost at most: one prefill of the
 * same tokens that computes what the dump holds (ds3 dump's prefill: every
 * row's logits, the MTP rows and their logits) plus reading the dump (open,
 * every tensor read as doubles).
 * Rows replay_ms and replay_budget_ms; replay's limit is the budget.
 */
static void replay_cost(bench *b, int T, int threads) {
    char path[] = "/tmp/ds3-bench-replay-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) die("mkstemp", DS3_ERR_IO);
    close(fd);
    ds3_status st = ds3_dump_begin(b->s, T);
    if (st == DS3_OK) st = ds3_forward(b->s, b->tokens, T, 0, NULL);
    if (st == DS3_OK) st = ds3_dump_write(b->s, path, NULL);
    if (st != DS3_OK) die("dump for replay", st);
    double vr[64], vb[64];
    const ds3_cmp_opts o = {.profile = ds3_cmp_replay_profile_find("fp32"), .all_rows = true,
                            .weights_at_test_idx = true, .ignore_test_only = true};
    for (int r = -b->warmup; r < b->runs; r++) {
        /* the budget: the prefill that made the dump, computing what it holds
         * (every row's logits, the MTP rows and their logits: a dumping
         * forward, its capture included, its write to /dev/null not timed),
         * then reading the dump */
        if ((st = ds3_dump_begin(b->s, T)) != DS3_OK) die("dump", st);
        double t0 = bench_now();
        timed_forward(b, b->tokens, T, 0, b->logits);
        double t_fwd = bench_now() - t0;
        if ((st = ds3_dump_write(b->s, "/dev/null", NULL)) != DS3_OK) die("dump to /dev/null", st);
        t0 = bench_now() - t_fwd;  /* the budget so far: the forward alone */
        ds3_st_file *f = NULL;
        if ((st = ds3_st_open(path, &f)) != DS3_OK) die("open dump", st);
        for (int i = 0; i < f->n; i++) {
            long n;
            free(ds3_cmp_read(&f->entries[i], &n));
        }
        ds3_st_close(f);
        double budget = bench_now() - t0;
        /* the replay */
        t0 = bench_now();
        if ((st = ds3_st_open(path, &f)) != DS3_OK) die("open dump", st);
        ds3_dumper *d = ds3_dumper_new(T);
        ds3_replay_report rep;
        if ((st = ds3_replay_dump(b->s, f, b->tokens, T, true, &o, false, d, &rep)) != DS3_OK) die("replay", st);
        ds3_cmp_report cr;
        if ((st = ds3_replay_compare(d, f, &o, &rep, &cr)) != DS3_OK) die("replay compare", st);
        double replay = bench_now() - t0;
        ds3_cmp_report_free(&cr);
        ds3_dumper_free(d);
        ds3_replay_report_free(&rep);
        ds3_st_close(f);
        if (r >= 0) {
            vr[r] = replay * 1e3;
            vb[r] = budget * 1e3;
        }
    }
    unlink(path);
    bench_stat sr = bench_summarise(vr, b->runs), sb = bench_summarise(vb, b->runs);
    bench_row(b->csv, "replay_budget_ms", b->name, b->dtype, threads, T, 0, sb, "ms", NAN, 0);
    bench_row(b->csv, "replay_ms", b->name, b->dtype, threads, T, 0, sr, "ms", sb.med, 0);
    fprintf(stderr, "  replay of %d tokens: %.1f ms; one prefill + reading the dump: %.1f ms (x%.2f)\n", T, sr.med,
            sb.med, sr.med / sb.med);
}

/* ---- memory ----------------------------------------------------------------- */

static void memory_rows(bench *b, int logits_rows) {
    const ds3_model *m = b->m;
    const ds3_state *s = b->s;
    const ds3_config *c = &m->cfg;
    double ckpt = 0;
    for (int i = 0; i < m->n_files; i++) ckpt += (double)m->files[i]->map_size;
    const int n_cache = c->num_hidden_layers + m->n_mtp;
    double kv = (double)n_cache * s->max_seq * (c->kv_lora_rank + c->qk_rope_head_dim) * sizeof(ds3_real);
    int maxcols = c->hidden_size;
    const int cols[] = {c->intermediate_size, c->moe_intermediate_size * (c->n_shared_experts > 0 ? c->n_shared_experts : 1),
                        c->q_lora_rank, c->kv_lora_rank, c->num_attention_heads * c->v_head_dim};
    for (size_t i = 0; i < sizeof cols / sizeof cols[0]; i++)
        if (cols[i] > maxcols) maxcols = cols[i];
    double scratch = sizeof(ds3_real) * (3.0 * s->max_T * c->hidden_size + (double)s->work_n) +
                     sizeof(int32_t) * (double)s->iwork_n +
                     (double)b->nmax * 128.0 * maxcols * sizeof(ds3_real);  /* BLAS tile buffers */
    double logits = (double)logits_rows * c->vocab_size * sizeof(ds3_real);
    /* ds3_model_prepare_decode's interleaved copy of lm_head (loader.c):
     * page_in and the prefill cells read the original rows too, so both count */
    double rows4 = m->lm_head.rows4 ? (double)m->lm_head.rows * m->lm_head.cols * 2 : 0;
    double cap = 1.1 * (ckpt + rows4 + kv + scratch + logits);

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    /* kB on Linux; less the bandwidth probe's buffer, the benchmark's own (every page touched) */
    double rss = (double)ru.ru_maxrss * 1024.0 - (double)b->bwn * sizeof *b->bwbuf;
    bench_row(b->csv, "checkpoint_bytes", b->name, b->dtype, -1, -1, -1, bench_one(ckpt / 1e6), "MB", NAN, 1);
    bench_row(b->csv, "kv_cache_bytes", b->name, b->dtype, -1, -1, s->max_seq, bench_one(kv / 1e6), "MB", NAN, 1);
    bench_row(b->csv, "scratch_bytes", b->name, b->dtype, -1, -1, -1, bench_one(scratch / 1e6), "MB", NAN, 1);
    bench_row(b->csv, "logits_bytes", b->name, b->dtype, -1, logits_rows, -1, bench_one(logits / 1e6), "MB", NAN, 1);
    bench_row(b->csv, "head_rows4_bytes", b->name, b->dtype, -1, -1, -1, bench_one(rows4 / 1e6), "MB", NAN, 1);
    bench_row(b->csv, "peak_rss", b->name, b->dtype, b->nmax, -1, -1, bench_one(rss / 1e6), "MB", cap / 1e6, -1);
    fprintf(stderr, "  peak RSS %.0f MB; cap 1.1 x (checkpoint %.0f + the head's decode copy %.0f + KV %.1f + "
            "scratch %.1f + logits %.0f MB) = %.0f MB\n", rss / 1e6, ckpt / 1e6, rows4 / 1e6, kv / 1e6, scratch / 1e6,
            logits / 1e6, cap / 1e6);
}

/* Read every page of the checkpoint once, so no measurement pays for disk reads. */
static void page_in(const ds3_model *m) {
    volatile unsigned char sink = 0;
    for (int i = 0; i < m->n_files; i++) {
        const unsigned char *p = m->files[i]->map;
        unsigned char acc = 0;
        for (size_t o = 0; o < m->files[i]->map_size; o += 4096) acc ^= p[o];
        sink ^= acc;
    }
    (void)sink;
}

/* /proc/loadavg's 1-minute figure (NaN elsewhere): how busy the machine was. */
static double loadavg(void) {
    FILE *f = fopen("/proc/loadavg", "r");
    double v = NAN;
    if (f) {
        if (fscanf(f, "%lf", &v) != 1) v = NAN;
        fclose(f);
    }
    return v;
}

static void usage(void) {
    fprintf(stderr, "usage: bench_ds3 --model DIR --csv FILE [--name small] [--dtype fp8] [--runs R] "
                    "[--steps N] [--quick] [--replay-only]\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *dir = NULL;
    bench b;
    memset(&b, 0, sizeof b);
    b.name = "small";
    b.dtype = "?";
    b.runs = 3;
    b.steps = 8;
    b.warmup = 1;
    bool quick = false, replay_only = false;  /* --replay-only: page in, then replay_cost alone */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc) dir = argv[++i];
        else if (!strcmp(argv[i], "--csv") && i + 1 < argc) b.csv_path = argv[++i];
        else if (!strcmp(argv[i], "--name") && i + 1 < argc) b.name = argv[++i];
        else if (!strcmp(argv[i], "--dtype") && i + 1 < argc) b.dtype = argv[++i];
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc) b.runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) b.steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--quick")) quick = true;
        else if (!strcmp(argv[i], "--replay-only")) replay_only = true;
        else usage();
    }
    if (!dir || !b.csv_path || b.runs < 1 || b.runs > 64 || b.steps < 1 || b.steps > 256) usage();
    /* --quick: no 512-token prefill and no context 1024, for iterating on a kernel. */
    const int ctx_long = quick ? 0 : 1024;
    const int prefill_T[2] = {64, quick ? 0 : 512};

    ds3_model *m;
    ds3_status st = ds3_model_load(dir, &m);
    if (st != DS3_OK) die("loading the model", st);
    b.m = m;
    /* laid out for decode as `ds3 run` has it (the decode cells' subject) */
    if ((st = ds3_model_prepare_decode(m)) != DS3_OK) die("ds3_model_prepare_decode", st);
    b.w = count_work(m);
    b.nmax = max_threads();
    b.bwn = (size_t)512 << 17;  /* 512 MiB of 64-bit words */
    b.bwbuf = malloc(b.bwn * sizeof *b.bwbuf);
    if (!b.bwbuf) die("allocating", DS3_ERR_NOMEM);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < b.bwn; i++) b.bwbuf[i] = i;  /* first touch, split as the reads are */
    const ds3_config *c = &m->cfg;
    const int V = c->vocab_size;
    int max_seq = (ctx_long > 512 ? ctx_long : 512) + b.steps + 1;
    if ((st = ds3_state_new(m, max_seq, DS3_ATTN_ABSORB, &b.s)) != DS3_OK) die("ds3_state_new", st);
    b.tokens = malloc(sizeof(int32_t) * (size_t)max_seq);
    b.logits = malloc(sizeof(ds3_real) * 512 * (size_t)V);
    if (!b.tokens || !b.logits) die("allocating", DS3_ERR_NOMEM);
    /* Deterministic token ids: the 64-bit LCG of tools/gen_ref.py (seed 1). */
    uint64_t lcg = 1;
    for (int i = 0; i < max_seq; i++) {
        lcg = lcg * 6364136223846793005ULL + 1442695040888963407ULL;
        b.tokens[i] = (int32_t)((lcg >> 33) % (uint64_t)V);
    }
    b.csv = bench_csv_open(b.csv_path);
    if (!b.csv) {
        fprintf(stderr, "bench_ds3: cannot open %s\n", b.csv_path);
        return 1;
    }

    const model_work *w = &b.w;
    fprintf(stderr, "bench_ds3: %s (%s, %s), %d thread(s), load average %.2f\n", dir, b.name, b.dtype, b.nmax,
            loadavg());
    fprintf(stderr, "  per token: %.1f MB of weights (attention %.1f x %d, dense %.1f x %d, MoE %.1f + %d x %.2f "
            "x %d, lm_head %.1f), %.3f GFLOP\n", w->decode_bytes / 1e6, w->attn.bytes / 1e6, c->num_hidden_layers,
            w->dense.bytes / 1e6, w->n_dense, w->moe_fixed.bytes / 1e6, w->K, w->expert.bytes / 1e6, w->n_moe,
            w->head.bytes / 1e6, 2 * w->token_macs / 1e9);
    bench_row(b.csv, "loadavg_start", b.name, b.dtype, -1, -1, -1, bench_one(loadavg()), "runnable", NAN, 1);
    bench_row(b.csv, "decode_weight_bytes", b.name, b.dtype, -1, 1, -1, bench_one(w->decode_bytes / 1e6), "MB",
              NAN, 1);
    bench_row(b.csv, "token_gflop", b.name, b.dtype, -1, 1, -1, bench_one(2 * w->token_macs / 1e9), "GFLOP", NAN,
              1);
    page_in(m);

    if (replay_only) {
        replay_cost(&b, 64, b.nmax);
        fclose(b.csv);
        free(b.tokens);
        free(b.logits);
        free(b.bwbuf);
        ds3_state_free(b.s);
        ds3_model_free(m);
        return 0;
    }

    /* ---- all threads: prefill, then decode at the long and the short context -- */
    bench_stat pre_n = prefill(&b, prefill_T[0], b.nmax);
    if (prefill_T[1] > 0) prefill(&b, prefill_T[1], b.nmax);
    if (ctx_long > 0) {
        /* positions 0..511 hold the last prefill; fill 512..ctx_long-1 */
        timed_forward(&b, b.tokens + 512, ctx_long - 512, 512, NULL);
        decode(&b, ctx_long, b.nmax);
    }
    timed_forward(&b, b.tokens, 16, 0, NULL);
    bench_stat dec_n = decode(&b, 16, b.nmax);

    /* ---- thread scaling: prefill 64 and decode at 16, 1 → 2 (→ all) threads -- */
    if (b.nmax > 1) {
        bench_stat pre[3], dec[3];
        int tl[3] = {1, 2, b.nmax}, nt = b.nmax > 2 ? 3 : 2;
        for (int k = 0; k < nt; k++) {
            if (tl[k] == b.nmax) {  /* measured above */
                pre[k] = pre_n;
                dec[k] = dec_n;
                continue;
            }
            set_threads(tl[k]);
            pre[k] = prefill(&b, 64, tl[k]);
            dec[k] = decode(&b, 16, tl[k]);
        }
        set_threads(b.nmax);
        for (int k = 1; k < nt; k++) {
            int t = tl[k];
            double ideal_p = gemm_limit(&b, t) / gemm_limit(&b, 1), ideal_d = bw_limit(&b, t) / bw_limit(&b, 1);
            bench_row(b.csv, "scaling_prefill", b.name, b.dtype, t, 64, 0, bench_one(pre[k].med / pre[0].med),
                      "x vs 1 thread", ideal_p, 1);
            bench_row(b.csv, "scaling_decode", b.name, b.dtype, t, b.steps, 16, bench_one(dec[k].med / dec[0].med),
                      "x vs 1 thread", ideal_d, 1);
            fprintf(stderr, "  1 -> %d threads: prefill x%.2f (machine x%.2f), decode x%.2f (machine x%.2f)\n", t,
                    pre[k].med / pre[0].med, ideal_p, dec[k].med / dec[0].med, ideal_d);
        }
    }

    /* ---- one sublayer at a time ------------------------------------------------ */
    {
        const int D = c->hidden_size;
        int first_moe = -1, first_dense = -1;
        for (int i = 0; i < c->num_hidden_layers; i++) {
            if (m->layers[i].is_moe && first_moe < 0) first_moe = i;
            if (!m->layers[i].is_moe && first_dense < 0) first_dense = i;
        }
        ds3_real *x = malloc(sizeof(ds3_real) * 256 * (size_t)D);
        if (!x) die("allocating", DS3_ERR_NOMEM);
        const int Ts[3] = {1, 64, 256};
        for (int k = 0; k < 3; k++) {
            int T = Ts[k], start = T == 1 ? 16 : 0;
            if (T > 64 && quick) continue;
            if (T <= 64) layer_part(&b, PART_MLA, 0, T, start, x, b.logits);
            if (T <= 64 && first_dense >= 0) layer_part(&b, PART_DENSE, first_dense, T, start, x, b.logits);
            if (first_moe >= 0) layer_part(&b, PART_MOE, first_moe, T, start, x, b.logits);
            if (T <= 64) layer_part(&b, PART_HEAD, 0, T, start, x, b.logits);
        }
        /* attention of a decode step at the long context: what the decode cell
         * at 1,024 pays beyond the one at 16 (the cache's contents are some
         * earlier forward's; only the time is read) */
        if (ctx_long > 0) layer_part(&b, PART_MLA, 0, 1, ctx_long, x, b.logits);
        free(x);
    }

    replay_cost(&b, 64, b.nmax);
    memory_rows(&b, quick ? 64 : 512);
    bench_row(b.csv, "loadavg_end", b.name, b.dtype, -1, -1, -1, bench_one(loadavg()), "runnable", NAN, 1);
    fclose(b.csv);
    free(b.tokens);
    free(b.logits);
    free(b.bwbuf);
    ds3_state_free(b.s);
    ds3_model_free(m);
    return 0;
}

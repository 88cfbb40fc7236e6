/*
 * bench_slice.c — ds3 on a slice of a big model: time per layer for a prefill
 * and for decode steps, bytes read per decoded token, peak memory per rank
 * (docs/BENCHMARKS.md, "DeepSeek-V3 at its real dimensions").
 *
 *   bench_slice -m DIR [-p PREFILL (1..4096)] [-n DECODE] [-t THREADS]
 *   mpirun -np N build-mpi/bench/bench_slice -m DIR …   (expert parallelism)
 *
 * The slice is V3's shapes with few layers (bench/v3-slice.json: 1 dense + 1
 * MoE layer, 256 experts; bench/v3-twin.json: the same with 16 experts), so
 * that each layer's time and bytes, measured here, project to the 61 layers of
 * the real model. Per-layer times come from the library's progress hook
 * (ds3_set_progress), which a forward call calls after each layer; "head" is
 * the final norm and the lm_head after the last layer; a prefill of more than
 * 256 tokens runs in chunks of 256, as ds3_forward does, and a layer's time
 * is the sum over the chunks. They are CPU seconds
 * of the process (with -t 1, the time on an idle core): on a shared machine
 * wall time measures the other users too; the wall time is printed beside.
 *
 * Bytes read per decoded token are counted from the tensors a one-token
 * forward reads (weights and their FP8 scales): every projection of attention,
 * the dense FFN, the router, the shared expert and the head, one embedding
 * row, and the K routed experts of each MoE layer (on a rank: the experts of
 * its range that the step chose, counted from the router's choice).
 */
#include "bench.h"
#include "model/model.h"

#include <fcntl.h>
#include <stdint.h>

#define MAX_LAYERS 64
#define MAX_PREFILL 4096
#define MAX_STAMPS (MAX_LAYERS * (MAX_PREFILL / 256 + 1))   /* a call runs in chunks of up to 256 tokens */

/* ---- the per-layer clock: stamps from the progress hook ---------------------- */

/* Stamps in CPU seconds of this process (all its threads): on a shared
 * machine wall time measures the other users too. With -t 1 a layer's CPU
 * time is its time on an idle core. */
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double g_stamp[MAX_STAMPS];
static int g_n;
static double g_wall;   /* wall seconds of the timed calls, for the ratio CPU / wall */

static void on_progress(void *user, const char *what, double done, double total) {
    (void)user;
    (void)done;
    (void)total;
    if (strncmp(what, "forward", 7) == 0 && g_n < MAX_STAMPS) g_stamp[g_n++] = cpu_now();
}

/* One forward call; lay[i] += layer i's seconds, *head += the rest after the
 * last layer. A call of more than 256 tokens runs in chunks, each through
 * every layer: stamp k ends layer k % L of a chunk, and a chunk's first layer
 * also holds the previous chunk's final norm and its own embedding rows
 * (a few rows of copying). */
static void timed_forward(ds3_state *s, const int32_t *tok, int n, int start, ds3_real *logits, int L, double *lay,
                          double *head, int last_only) {
    g_n = 0;
    double t0 = cpu_now(), w0 = bench_now();
    ds3_status st = last_only ? ds3_forward_last(s, tok, n, start, logits) : ds3_forward(s, tok, n, start, logits);
    double t1 = cpu_now();
    g_wall += bench_now() - w0;
    if (st != DS3_OK) {
        fprintf(stderr, "bench_slice: forward: %s\n", ds3_last_error());
        ds3_dist_abort(1);
    }
    if (g_n < L || g_n % L != 0) {
        fprintf(stderr, "bench_slice: %d layer stamps for %d layers\n", g_n, L);
        ds3_dist_abort(1);
    }
    for (int k = 0; k < g_n; k++) lay[k % L] += g_stamp[k] - (k ? g_stamp[k - 1] : t0);
    *head += t1 - g_stamp[g_n - 1];
}

/* ---- bytes ------------------------------------------------------------------- */

static double tbytes(const ds3_tensor *t) {
    if (!t->data) return 0;
    double b = (double)t->rows * (double)t->cols * (double)ds3_dtype_size(t->dtype);
    if (t->scale_inv) b += 4.0 * (double)((t->rows + 127) / 128) * (double)((t->cols + 127) / 128);
    return b;
}
static double ffn_bytes(const ds3_ffn *f) { return tbytes(&f->gate_proj) + tbytes(&f->up_proj) + tbytes(&f->down_proj); }

static double attn_bytes(const ds3_layer *l) {
    return tbytes(&l->q_a_proj) + tbytes(&l->q_b_proj) + tbytes(&l->q_proj) + tbytes(&l->kv_a_proj_with_mqa) +
           tbytes(&l->kv_b_proj) + tbytes(&l->o_proj);
}

static double rss_now_mb(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, res = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &res) != 2) res = 0;
        fclose(f);
    }
    return (double)res * (double)sysconf(_SC_PAGESIZE) / 1e6;
}

static double peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1e3;   /* Linux: kB */
}

/* Bytes of t's weight and scales whose pages this process has mapped in
 * (/proc/self/pagemap bit 63: present), i.e. has faulted in; -1 when
 * pagemap cannot be read. Whole pages inside the tensor only, so a page
 * shared with a neighbouring tensor is not counted. */
static double present_bytes(int fd, const void *data, double bytes) {
    const uintptr_t ps = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)data + ps - 1) / ps, b = ((uintptr_t)data + (uintptr_t)bytes) / ps;
    double n = 0;
    for (uintptr_t pg = a; pg < b; pg++) {
        uint64_t e;
        if (pread(fd, &e, 8, (off_t)(pg * 8)) != 8) return -1;
        if (e >> 63) n += (double)ps;
    }
    return n;
}

static double ffn_present(int fd, const ds3_ffn *f) {
    const ds3_tensor *t[3] = {&f->gate_proj, &f->up_proj, &f->down_proj};
    double n = 0;
    for (int k = 0; k < 3; k++) {
        double w = (double)t[k]->rows * (double)t[k]->cols * (double)ds3_dtype_size(t[k]->dtype);
        double p = present_bytes(fd, t[k]->data, w);
        if (p < 0) return -1;
        n += p;
    }
    return n;
}

int main(int argc, char **argv) {
    const char *dir = NULL;
    int P = 64, N = 8, threads = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-m") == 0 && i + 1 < argc) dir = argv[++i];
        else if (strcmp(argv[i], "-p") == 0 && i + 1 < argc) P = atoi(argv[++i]);
        else if (strcmp(argv[i], "-n") == 0 && i + 1 < argc) N = atoi(argv[++i]);
        else if (strcmp(argv[i], "-t") == 0 && i + 1 < argc) threads = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_slice -m DIR [-p PREFILL (1..4096)] [-n DECODE] [-t THREADS]\n");
            return 2;
        }
    }
    if (!dir || P < 1 || P > MAX_PREFILL || N < 1) {
        fprintf(stderr, "usage: bench_slice -m DIR [-p PREFILL (1..4096)] [-n DECODE] [-t THREADS]\n");
        return 2;
    }
    if (ds3_dist_init() != DS3_OK) {
        fprintf(stderr, "bench_slice: %s\n", ds3_last_error());
        return 1;
    }
    const int rank = ds3_dist_rank(), np = ds3_dist_size();
    if (threads > 0) ds3_set_threads(threads);

    double t0 = bench_now();
    ds3_model *m = NULL;
    if (ds3_model_load(dir, &m) != DS3_OK) {
        fprintf(stderr, "bench_slice: rank %d: %s\n", rank, ds3_last_error());
        ds3_dist_abort(1);
    }
    double t_load = bench_now() - t0, rss_load = rss_now_mb();
    const ds3_config *c = &m->cfg;
    const int L = c->num_hidden_layers, K = c->num_experts_per_tok, E = c->n_routed_experts;
    if (L > MAX_LAYERS) {
        fprintf(stderr, "bench_slice: %d layers; at most %d\n", L, MAX_LAYERS);
        ds3_dist_abort(1);
    }
    int lo = 0, hi = 0;
    ds3_model_experts(m, &lo, &hi);

    ds3_state *s = NULL;
    if (ds3_state_new(m, P + N, DS3_ATTN_ABSORB, &s) != DS3_OK) {
        fprintf(stderr, "bench_slice: rank %d: state: %s\n", rank, ds3_last_error());
        ds3_dist_abort(1);
    }
    double rss_state = rss_now_mb();   /* the caches and scratch are allocated, not yet touched */
    /* the router's choices, to count the experts a decode step reads (the
     * hook holds each position's choice in the last MoE layer: exact for a
     * slice with one MoE layer, that layer's count standing for every MoE
     * layer otherwise) */
    ds3_route_hook hook = {0};
    int32_t *own = calloc((size_t)(P + N) * K, sizeof(int32_t));
    hook.own_idx = own;
    ds3_real *logits = malloc((size_t)c->vocab_size * sizeof(ds3_real));
    int32_t *tok = malloc((size_t)(P + N) * sizeof(int32_t));
    if (!own || !logits || !tok) {
        fprintf(stderr, "bench_slice: out of memory\n");
        ds3_dist_abort(1);
    }
    for (int i = 0; i < P + N; i++) tok[i] = (int32_t)((1000 + 7919 * i) % c->vocab_size);
    ds3_set_progress(on_progress, NULL);

    /* ---- prefill: P tokens in one call --------------------------------------- */
    double pre[MAX_LAYERS] = {0}, pre_head = 0;
    timed_forward(s, tok, P, 0, logits, L, pre, &pre_head, 1);
    double pre_wall = g_wall;
    g_wall = 0;

    /* ---- decode: N steps of one token; per layer, the median over steps ----- */
    double *dec = calloc((size_t)N * (L + 1), sizeof(double));
    double bytes_all = 0, bytes_rank = 0;   /* summed over steps */
    double fixed = tbytes(&m->lm_head) + (double)c->hidden_size * ds3_dtype_size(m->embed_tokens.dtype);
    for (int i = 0; i < L; i++) {
        const ds3_layer *l = &m->layers[i];
        fixed += attn_bytes(l) + (l->is_moe ? tbytes(&l->gate) + ffn_bytes(&l->shared_experts) : ffn_bytes(&l->mlp));
    }
    for (int k = 0; k < N; k++) {
        double lay[MAX_LAYERS] = {0}, head = 0;
        /* the MoE layers' choices for this position: the hook holds the last layer's */
        s->route = &hook;
        timed_forward(s, tok + P + k, 1, P + k, logits, L, lay, &head, 0);
        s->route = NULL;
        for (int i = 0; i < L; i++) dec[(size_t)k * (L + 1) + i] = lay[i];
        dec[(size_t)k * (L + 1) + L] = head;
        /* bytes: replicated + K experts per MoE layer (all ranks), of which this rank's */
        double ex = 0, exr = 0;
        for (int i = 0; i < L; i++) {
            const ds3_layer *l = &m->layers[i];
            if (!l->is_moe) continue;
            for (int j = 0; j < K; j++) {
                int e = own[(size_t)(P + k) * K + j];
                double b = ffn_bytes(&l->experts[e]);
                ex += b;
                if (e >= lo && e < hi) exr += b;
            }
        }
        bytes_all += fixed + ex;
        bytes_rank += fixed + exr;
    }
    double med[MAX_LAYERS + 1];
    for (int i = 0; i <= L; i++) {
        double v[256];
        int n = N < 256 ? N : 256;
        for (int k = 0; k < n; k++) v[k] = dec[(size_t)k * (L + 1) + i];
        qsort(v, (size_t)n, sizeof v[0], bench_cmp_double);
        med[i] = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
    }

    /* ---- report ------------------------------------------------------------ */
    double peak = peak_rss_mb();
    if (rank == 0) {
        printf("model %s: D %d, H %d, E %d (K %d), V %d, %d layers (%d dense); %d process(es), %d thread(s) each\n",
               dir, c->hidden_size, c->num_attention_heads, E, K, c->vocab_size, L, c->first_k_dense_replace, np,
               ds3_threads());
        printf("load: %.2f s\n", t_load);
        /* the state: absorbed caches (C + Dr per position and layer) and the scratch of max_T tokens */
        double cache = (double)s->max_seq * (c->kv_lora_rank + c->qk_rope_head_dim) * sizeof(ds3_real) * (L + m->n_mtp);
        double scratch = ((double)s->work_n + 3.0 * s->max_T * c->hidden_size) * sizeof(ds3_real) + 4.0 * s->iwork_n;
        printf("state for %d positions: KV caches %.2f MB (%.0f bytes per position), scratch for %d tokens a call "
               "%.1f MB\n", s->max_seq, cache / 1e6, cache / s->max_seq, s->max_T, scratch / 1e6);
        printf("times are CPU seconds of this process (rank 0; wall of the timed calls: prefill %.2f s, decode "
               "%.2f s)\n", pre_wall, g_wall);
        printf("prefill of %d tokens (one call, %d chunk(s) of up to %d), seconds per layer:", P,
               (P + s->max_T - 1) / s->max_T, s->max_T);
        for (int i = 0; i < L; i++) printf(" layer %d (%s) %.3f;", i, m->layers[i].is_moe ? "MoE" : "dense", pre[i]);
        printf(" head %.3f\n", pre_head);
        printf("decode, median of %d steps, seconds per layer:", N);
        for (int i = 0; i < L; i++) printf(" layer %d (%s) %.4f;", i, m->layers[i].is_moe ? "MoE" : "dense", med[i]);
        printf(" head %.4f\n", med[L]);
        printf("bytes read per decoded token: %.1f MB (all ranks' experts), of which replicated %.1f MB\n",
               bytes_all / N / 1e6, fixed / 1e6);
        fflush(stdout);
    }
    /* the pages of the routed experts this process has faulted in: its own
     * and (expert parallelism) the other ranks' */
    double mine = 0, theirs = 0, all_ex = 0;
    int pm = open("/proc/self/pagemap", O_RDONLY);
    for (int i = 0; i < L && pm >= 0; i++) {
        const ds3_layer *l = &m->layers[i];
        if (!l->is_moe) continue;
        for (int e = 0; e < E && mine >= 0; e++) {
            double p = ffn_present(pm, &l->experts[e]);
            if (p < 0) {
                mine = -1;
                break;
            }
            all_ex += ffn_bytes(&l->experts[e]);
            if (e >= lo && e < hi) mine += p;
            else theirs += p;
        }
    }
    if (pm >= 0) close(pm);
    /* each rank's own line, in rank order */
    for (int r = 0; r < np; r++) {
        if (r == rank) {
            printf("rank %d of %d: experts [%d, %d): RSS after load %.1f MB, after ds3_state_new(%d positions) "
                   "%.1f MB, peak RSS %.1f MB, bytes read per decoded token %.1f MB\n",
                   rank, np, lo, hi, rss_load, P + N, rss_state, peak, bytes_rank / N / 1e6);
            if (mine >= 0)
                printf("rank %d of %d: routed experts' pages faulted in: its own %.1f MB, the other ranks' %.1f MB "
                       "(of %.1f MB of routed experts)\n", rank, np, mine / 1e6, theirs / 1e6, all_ex / 1e6);
            fflush(stdout);
        }
        int dummy = 0;
        ds3_dist_bcast(&dummy, sizeof dummy);   /* a barrier: one line at a time */
    }
    ds3_set_progress(NULL, NULL);
    free(dec);
    free(own);
    free(logits);
    free(tok);
    ds3_state_free(s);
    ds3_model_free(m);
    ds3_dist_finalize();
    return 0;
}

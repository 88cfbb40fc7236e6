/*
 * test_model.c — the forward pass held against itself on the synthetic models
 * (DS3_MODELS, made by scripts/make-models.sh):
 *   - MLA absorbed vs naive (docs/MODEL.md §3: both forms must agree to rounding);
 *   - full prefill vs token-by-token decode vs chunked prefill;
 *   - the BLAS path vs the plain loops;
 *   - 1 vs 2 threads: identical bits;
 *   - the kernel mode is the state's: two states with different modes, run
 *     in two threads at once, each give their own mode's single-threaded bits.
 * Agreement with the oracle is test_ref.c's job.
 */
#include "harness.h"
#include "generate/generate.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>

#ifdef _OPENMP
#include <omp.h>
#endif

enum { N = 20 };

static void set_threads(int n) {
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
    (void)n;
}

/* The kernels run() gives its states. */
static ds3_kernels kernels = DS3_KERNELS_FAST;

/* Logits of tokens[0..N) for the given attention form, fed in pieces of `step`
 * tokens (step = N: one prefill; step = 1: decode), with `kernels`. */
static ds3_real *run_with(const ds3_model *m, ds3_kernels k, ds3_attn_mode attn, const int32_t *tok, int step) {
    int V = ds3_model_vocab_size(m);
    ds3_real *lg = calloc((size_t)N * V, sizeof *lg);
    ds3_state *s = NULL;
    if (ds3_state_new(m, N, attn, &s) != DS3_OK) { free(lg); return NULL; }
    ds3_state_set_kernels(s, k);
    for (int p = 0; p < N; p += step) {
        int n = N - p < step ? N - p : step;
        if (ds3_forward(s, tok + p, n, p, lg + (size_t)p * V) != DS3_OK) {
            fprintf(stderr, "forward: %s\n", ds3_last_error());
            free(lg);
            lg = NULL;
            break;
        }
    }
    ds3_state_free(s);
    return lg;
}

static ds3_real *run(const ds3_model *m, ds3_attn_mode attn, const int32_t *tok, int step) {
    return run_with(m, kernels, attn, tok, step);
}

static void compare(const char *what, const ds3_real *a, const ds3_real *b, long n, double rel_of_max) {
    double *ga = malloc(n * sizeof *ga), *gb = malloc(n * sizeof *gb);
    double mx = 0;
    for (long i = 0; i < n; i++) {
        ga[i] = a[i]; gb[i] = b[i];
        if (fabs(gb[i]) > mx) mx = fabs(gb[i]);
    }
    th_check_close(what, ga, gb, n, rel_of_max * mx, 0);
    free(ga);
    free(gb);
}

static void model_case(const char *dir, const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    ds3_model *m = NULL;
    ds3_status st = ds3_model_load(path, &m);
    CHECK(st == DS3_OK, "load %s: %s", path, ds3_last_error());
    if (st) return;
    /* laid out for decode as ds3 run has it: every check below then runs with it */
    CHECK(ds3_model_prepare_decode(m) == DS3_OK, "%s: ds3_model_prepare_decode: %s", name, ds3_last_error());
    th_section("%s", name);
    int V = ds3_model_vocab_size(m);
    long n = (long)N * V;
    int32_t tok[N];
    for (int i = 0; i < N; i++) tok[i] = (int32_t)((i * 7919 + 13) % V);
    /* fp32 rounding differs between groupings; f64 agrees to ~1e-15 */
    double tol = sizeof(ds3_real) == 4 ? 2e-5 : 1e-12;
    char what[128];

    ds3_real *full = run(m, DS3_ATTN_ABSORB, tok, N);
    ds3_real *naive = run(m, DS3_ATTN_NAIVE, tok, N);
    ds3_real *dec = run(m, DS3_ATTN_ABSORB, tok, 1);
    ds3_real *ndec = run(m, DS3_ATTN_NAIVE, tok, 1);
    ds3_real *chunk = run(m, DS3_ATTN_ABSORB, tok, 7);
    CHECK(full && naive && dec && ndec && chunk, "all runs completed");
    if (full && naive && dec && ndec && chunk) {
        snprintf(what, sizeof what, "%s absorbed vs naive", name);
        compare(what, full, naive, n, tol);
        snprintf(what, sizeof what, "%s prefill vs decode", name);
        compare(what, dec, full, n, tol);
        snprintf(what, sizeof what, "%s naive prefill vs naive decode", name);
        compare(what, ndec, naive, n, tol);
        snprintf(what, sizeof what, "%s prefill vs chunks of 7", name);
        compare(what, chunk, full, n, tol);
    }

    /* The plain loops (DS3_KERNELS_REF) and the no-BLAS path against the default.
     * (The default's prefill runs absorbed attention as per-head GEMMs, mla.c;
     * naive, decode and these two keep the lane order or the plain sums.) */
    kernels = DS3_KERNELS_REF;
    ds3_real *plain = run(m, DS3_ATTN_ABSORB, tok, N);
    kernels = DS3_KERNELS_FAST;
    if (plain && full) {
        snprintf(what, sizeof what, "%s plain loops vs default", name);
        compare(what, plain, full, n, tol);
    }
    bool saved = ds3_use_blas;
    ds3_use_blas = false;
    ds3_real *noblas = run(m, DS3_ATTN_ABSORB, tok, N);
    ds3_use_blas = saved;
    if (noblas && full) {
        snprintf(what, sizeof what, "%s no-BLAS vs default", name);
        compare(what, noblas, full, n, tol);
    }
    free(noblas);

    /* Thread count must not change a bit, in prefill and in decode. */
    set_threads(1);
    ds3_real *p1 = run(m, DS3_ATTN_ABSORB, tok, N), *d1 = run(m, DS3_ATTN_ABSORB, tok, 1);
    set_threads(4);
    ds3_real *p4 = run(m, DS3_ATTN_ABSORB, tok, N), *d4 = run(m, DS3_ATTN_ABSORB, tok, 1);
    /* more threads than K / S: the MoE runs its shared experts after the routed
     * ones' parallel loop instead of as one of its items (moe.c) */
    set_threads(9);
    ds3_real *p9 = run(m, DS3_ATTN_ABSORB, tok, N), *d9 = run(m, DS3_ATTN_ABSORB, tok, 1);
    set_threads(2);
    ds3_real *p2 = run(m, DS3_ATTN_ABSORB, tok, N), *d2 = run(m, DS3_ATTN_ABSORB, tok, 1);
    CHECK(p1 && p2 && memcmp(p1, p2, n * sizeof(ds3_real)) == 0, "%s: prefill logits identical for 1 and 2 threads", name);
    CHECK(d1 && d2 && memcmp(d1, d2, n * sizeof(ds3_real)) == 0, "%s: decode logits identical for 1 and 2 threads", name);
    CHECK(p4 && memcmp(p1, p4, n * sizeof(ds3_real)) == 0, "%s: prefill logits identical for 1 and 4 threads", name);
    CHECK(d4 && memcmp(d1, d4, n * sizeof(ds3_real)) == 0, "%s: decode logits identical for 1 and 4 threads", name);
    CHECK(p9 && memcmp(p1, p9, n * sizeof(ds3_real)) == 0, "%s: prefill logits identical for 1 and 9 threads", name);
    CHECK(d9 && memcmp(d1, d9, n * sizeof(ds3_real)) == 0, "%s: decode logits identical for 1 and 9 threads", name);

    /* Deterministic kernels: the lane kernel for every T, so prefill, decode
     * and any chunking give the same bits (docs/ARCHITECTURE.md §6). */
    kernels = DS3_KERNELS_DETERMINISTIC;
    ds3_real *dp = run(m, DS3_ATTN_ABSORB, tok, N), *dd = run(m, DS3_ATTN_ABSORB, tok, 1),
             *dc = run(m, DS3_ATTN_ABSORB, tok, 7), *np = run(m, DS3_ATTN_NAIVE, tok, N),
             *nd = run(m, DS3_ATTN_NAIVE, tok, 1);
    set_threads(1);
    ds3_real *dp1 = run(m, DS3_ATTN_ABSORB, tok, N);
    set_threads(2);
    kernels = DS3_KERNELS_FAST;
    CHECK(dp && dd && memcmp(dp, dd, n * sizeof(ds3_real)) == 0, "%s: deterministic prefill == decode, bit for bit", name);
    CHECK(dp && dc && memcmp(dp, dc, n * sizeof(ds3_real)) == 0, "%s: deterministic prefill == chunks of 7, bit for bit", name);
    CHECK(np && nd && memcmp(np, nd, n * sizeof(ds3_real)) == 0, "%s: deterministic naive prefill == decode, bit for bit", name);
    CHECK(dp && dp1 && memcmp(dp, dp1, n * sizeof(ds3_real)) == 0, "%s: deterministic, 1 and 2 threads identical", name);
    if (dp && full) {
        snprintf(what, sizeof what, "%s deterministic vs fast", name);
        compare(what, dp, full, n, tol);
    }
    free(dp); free(dd); free(dc); free(np); free(nd); free(dp1); free(p4); free(d4); free(p9); free(d9);

    free(full); free(naive); free(dec); free(ndec); free(chunk); free(plain);
    free(p1); free(p2); free(d1); free(d2);
    ds3_model_free(m);
}

/* ds3_forward_last: the last row's logits only, over more positions than one
 * chunk (256) holds. Deterministic and ref kernels: the bits of ds3_forward's
 * last row; fast: the head then runs the one-token kernel, within rounding. */
static void forward_last(const char *dir, const char *name) {
    th_section("%s: ds3_forward_last", name);
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    ds3_model *m = NULL;
    if (ds3_model_load(path, &m) != DS3_OK) {
        CHECK(0, "load %s: %s", path, ds3_last_error());
        return;
    }
    enum { P = 300 };
    const int V = ds3_model_vocab_size(m);
    static int32_t tok[P];
    for (int i = 0; i < P; i++) tok[i] = (int32_t)((i * 53 + 5) % V);
    ds3_real *all = malloc((size_t)P * V * sizeof *all), *last = malloc((size_t)V * sizeof *last);
    ds3_real *fast_all = malloc((size_t)P * V * sizeof *fast_all);
    static const char *const kname[] = {"fast", "deterministic", "ref"};
    for (int k = 0; k < 3; k++) {
        ds3_state *a = NULL, *b = NULL;
        ds3_status st = ds3_state_new(m, P, DS3_ATTN_ABSORB, &a);
        if (!st) st = ds3_state_new(m, P, DS3_ATTN_ABSORB, &b);
        if (!st) st = ds3_state_set_kernels(a, (ds3_kernels)k);
        if (!st) st = ds3_state_set_kernels(b, (ds3_kernels)k);
        if (!st) st = ds3_forward(a, tok, P, 0, all);
        for (int i = 0; i < V; i++) last[i] = NAN;
        if (!st) st = ds3_forward_last(b, tok, P, 0, last);
        CHECK(st == DS3_OK, "%s kernels: runs: %s", kname[k], ds3_last_error());
        if (!st && k == DS3_KERNELS_FAST) memcpy(fast_all, all, (size_t)P * V * sizeof *all);
        /* fast mode's attention in causal blocks of query rows (mla.c, several
         * blocks in each 256-token chunk) against the plain loops, every position */
        if (!st && k == DS3_KERNELS_REF)
            compare("fast kernels: all 300 positions' logits within rounding of ref's", fast_all, all, (long)P * V,
                    sizeof(ds3_real) == 4 ? 2e-5 : 1e-12);
        if (!st && k == DS3_KERNELS_FAST)
            compare("fast kernels: last row within rounding of ds3_forward's", last, all + (size_t)(P - 1) * V, V,
                    sizeof(ds3_real) == 4 ? 1e-5 : 1e-13);
        else if (!st)
            CHECK(memcmp(last, all + (size_t)(P - 1) * V, (size_t)V * sizeof *last) == 0,
                  "%s kernels: the bits of ds3_forward's last row (%d positions, two chunks)", kname[k], P);
        /* and the next decode step continues from the same caches */
        ds3_real *d1 = malloc((size_t)V * sizeof *d1), *d2 = malloc((size_t)V * sizeof *d2);
        int32_t nx = 7;
        if (!st) st = ds3_forward(a, &nx, 1, P - 1, d1);
        if (!st) st = ds3_forward(b, &nx, 1, P - 1, d2);
        CHECK(!st && memcmp(d1, d2, (size_t)V * sizeof *d1) == 0, "%s kernels: the caches are the same after it",
              kname[k]);
        free(d1);
        free(d2);
        ds3_state_free(a);
        ds3_state_free(b);
    }
    /* fast mode, 1 and 2 threads: the same bits over 300 positions */
    {
        ds3_state *a = NULL;
        const int threads = ds3_threads();
        set_threads(1);
        ds3_status st = ds3_state_new(m, P, DS3_ATTN_ABSORB, &a);
        if (!st) st = ds3_forward(a, tok, P, 0, all);
        set_threads(2);
        ds3_state_free(a);
        a = NULL;
        if (!st) st = ds3_state_new(m, P, DS3_ATTN_ABSORB, &a);
        if (!st) st = ds3_forward(a, tok, P, 0, fast_all);
        CHECK(!st && memcmp(all, fast_all, (size_t)P * V * sizeof *all) == 0,
              "fast kernels, %d positions: 1 and 2 threads give the same bits", P);
        set_threads(threads);
        ds3_state_free(a);
    }
    /* no logits at all */
    ds3_state *s = NULL;
    CHECK(ds3_state_new(m, P, DS3_ATTN_ABSORB, &s) == DS3_OK && ds3_forward_last(s, tok, 3, 0, NULL) == DS3_OK,
          "logits NULL: nothing written, no error");
    CHECK(ds3_forward_last(s, tok, 0, 3, last) == DS3_ERR_ARG, "zero tokens refused");
    ds3_state_free(s);
    free(all);
    free(fast_all);
    free(last);
    ds3_model_free(m);
}

/* One thread's job: the logits of a prefill then a decode step, with its own
 * state and kernel mode. */
typedef struct {
    const ds3_model *m;
    ds3_kernels k;
    const int32_t *tok;
    ds3_real *out;  /* [N][V] */
} job;

static void *job_run(void *arg) {
    job *j = arg;
    /* several rounds, so that the two threads' passes surely overlap */
    for (int r = 0; r < 3; r++) {
        free(j->out);
        j->out = run_with(j->m, j->k, DS3_ATTN_ABSORB, j->tok, N - 1);
    }
    return NULL;
}

/* The mode belongs to the state: the reference and the fast kernels on one
 * model at once, in two threads, each with the bits it has alone. */
static void two_modes_at_once(const char *dir, const char *name) {
    th_section("two states, two kernel modes, two threads at once");
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    ds3_model *m = NULL;
    if (ds3_model_load(path, &m) != DS3_OK) {
        CHECK(0, "load %s: %s", path, ds3_last_error());
        return;
    }
    int32_t tok[N];
    for (int i = 0; i < N; i++) tok[i] = (int32_t)((i * 37 + 11) % ds3_model_vocab_size(m));
    const long n = (long)N * ds3_model_vocab_size(m);
    /* alone, one after the other */
    ds3_real *ref_alone = run_with(m, DS3_KERNELS_REF, DS3_ATTN_ABSORB, tok, N - 1);
    ds3_real *fast_alone = run_with(m, DS3_KERNELS_FAST, DS3_ATTN_ABSORB, tok, N - 1);
    /* together */
    job a = {m, DS3_KERNELS_REF, tok, NULL}, b = {m, DS3_KERNELS_FAST, tok, NULL};
    pthread_t ta, tb;
    bool started = pthread_create(&ta, NULL, job_run, &a) == 0;
    started = started && pthread_create(&tb, NULL, job_run, &b) == 0;
    CHECK(started, "%s: two threads started", name);
    if (started) {
        pthread_join(ta, NULL);
        pthread_join(tb, NULL);
    }
    CHECK(ref_alone && fast_alone && memcmp(ref_alone, fast_alone, n * sizeof(ds3_real)) != 0,
          "%s: the two modes give different bits alone (so the test can tell them apart)", name);
    CHECK(a.out && memcmp(a.out, ref_alone, n * sizeof(ds3_real)) == 0,
          "%s: ref state beside a fast state in another thread: its own bits", name);
    CHECK(b.out && memcmp(b.out, fast_alone, n * sizeof(ds3_real)) == 0,
          "%s: fast state beside a ref state in another thread: its own bits", name);
    free(a.out);
    free(b.out);
    free(ref_alone);
    free(fast_alone);
    ds3_model_free(m);
}

/* ds3_model_prepare_decode's interleaved copy of a BF16 lm_head (loader.c):
 * not made by the load alone, made in float builds, not with DS3_NO_ROWS4=1,
 * and decode's logits are the same bits either way. */
static void head_rows4_case(const char *dir, const char *name) {
    th_section("%s: lm_head's interleaved copy for decode", name);
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    ds3_model *a = NULL, *b = NULL;
    CHECK(ds3_model_load(path, &a) == DS3_OK, "load %s: %s", path, ds3_last_error());
    CHECK(ds3_model_load(path, &b) == DS3_OK, "load %s again: %s", path, ds3_last_error());
    if (!a || !b) { ds3_model_free(a); ds3_model_free(b); return; }
    CHECK(a->lm_head.rows4 == NULL, "the load alone makes no copy");
    CHECK(ds3_model_prepare_decode(a) == DS3_OK, "ds3_model_prepare_decode: %s", ds3_last_error());
    const void *first = a->lm_head.rows4;
    CHECK(ds3_model_prepare_decode(a) == DS3_OK && a->lm_head.rows4 == first, "a second call does nothing");
    const bool want = sizeof(ds3_real) == 4 && a->lm_head.dtype == DS3_DT_BF16;
    CHECK((first != NULL) == want, "the copy is made: %s (a float build, a BF16 head)", want ? "yes" : "no");
    setenv("DS3_NO_ROWS4", "1", 1);
    CHECK(ds3_model_prepare_decode(b) == DS3_OK && b->lm_head.rows4 == NULL, "DS3_NO_ROWS4=1: no copy");
    unsetenv("DS3_NO_ROWS4");
    CHECK(ds3_model_prepare_decode(NULL) == DS3_ERR_ARG, "a NULL model is refused");
    int32_t tok[N];
    for (int i = 0; i < N; i++) tok[i] = (int32_t)((i * 37 + 11) % ds3_model_vocab_size(a));
    ds3_real *la = run(a, DS3_ATTN_ABSORB, tok, 1), *lb = run(b, DS3_ATTN_ABSORB, tok, 1);
    CHECK(la && lb && memcmp(la, lb, sizeof(ds3_real) * (size_t)N * ds3_model_vocab_size(a)) == 0,
          "decode logits identical with and without the copy");
    free(la); free(lb);
    ds3_model_free(a); ds3_model_free(b);
}

int main(void) {
    const char *dir = getenv("DS3_MODELS");
    if (!dir) dir = "build/models";
    model_case(dir, "tiny-f32");
    model_case(dir, "tiny-fp8");
    model_case(dir, "tiny-v2");
    two_modes_at_once(dir, "tiny-fp8");
    forward_last(dir, "tiny-fp8");
    head_rows4_case(dir, "tiny-fp8");

    th_section("state and argument errors");
    char path[1024];
    snprintf(path, sizeof path, "%s/tiny-f32", dir);
    ds3_model *m = NULL;
    if (ds3_model_load(path, &m) == DS3_OK) {
        ds3_state *s = NULL;
        CHECK(ds3_state_new(m, 0, DS3_ATTN_ABSORB, &s) == DS3_ERR_ARG && s == NULL, "max_seq 0 is refused");
        CHECK(ds3_state_new(m, 4, DS3_ATTN_ABSORB, &s) == DS3_OK, "state of 4 positions");
        int32_t tok[5] = {1, 2, 3, 4, 5}, bad[1] = {512};
        CHECK(ds3_forward(s, tok, 5, 0, NULL) == DS3_ERR_ARG, "5 tokens do not fit in 4 positions");
        CHECK(strstr(ds3_last_error(), "exceed") != NULL, "message says so: %s", ds3_last_error());
        CHECK(ds3_forward(s, bad, 1, 0, NULL) == DS3_ERR_ARG, "token 512 is outside vocab 512");
        CHECK(strstr(ds3_last_error(), "512") != NULL, "message names the token: %s", ds3_last_error());
        CHECK(ds3_forward(s, tok, 0, 0, NULL) == DS3_ERR_ARG, "zero tokens refused");
        ds3_state_free(s);
        ds3_state_free(NULL);
        ds3_model_free(m);
    }
    ds3_model_free(NULL);
    return th_finish();
}

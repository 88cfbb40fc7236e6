/*
 * test_compare.c — `ds3 compare` and the statistics behind it (src/check/compare.c).
 *
 *   - the checker: ds3_cmp_floats agrees with tests/harness.h's th_compare on
 *     the elementwise rule (same verdict, same count of bad elements, same
 *     worst element, same max abs/rel), NaN/Inf positions included; cosine and
 *     NMSE on vectors whose values are known in closed form;
 *   - --names globs, the profile table;
 *   - the CLI on a real dump of $DS3_MODELS/tiny-f32 with planted faults,
 *     each of which must be caught (exit 1) under every profile it is sized
 *     for: a nudged logit (just outside and just inside each profile's bound),
 *     a whole tensor scaled by 1 + e (just outside and inside max_nmse),
 *     wrong routing (every expert of every row replaced), one wrong expert in
 *     one row and in every row (fp32 only), a NaN, a tensor missing from
 *     either side, different tokens; identical dumps exit 0; usage errors 2;
 *   - genuine builds (transformers in bf16, and with FP8 activations, from
 *     ref_data/emulate/) pass their profile and fail fp32; the same faults
 *     planted on top of their noise are caught;
 *   - rows whose experts differ upstream are left out of later tensors (and
 *     kept with --all-rows);
 *   - genuine noise: ds3's own fp32 dump against the float64 oracle in
 *     ref_data/ passes the fp32 profile.
 */
#include "generate/generate.h"
#include "harness.h"
#include "cli_run.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <unistd.h>

/* ========================================================================== */
/* Running the CLI (tests/cli_run.h)                                           */
/* ========================================================================== */

/* Expect exit `rc` and, if want != NULL, `want` in stdout+stderr. */
static void expect(result r, int rc, const char *want, const char *what) {
    CHECK(r.rc == rc, "%s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", what, r.rc, rc, r.out, r.err);
    if (want) CHECK(has(r.out, want) || has(r.err, want), "%s: output lacks \"%s\"\n%s%s", what, want, r.out, r.err);
    done(&r);
}

/* ========================================================================== */
/* Planting faults: a copy of a dump with one change                           */
/* ========================================================================== */

typedef void (*edit_fn)(void *data, const ds3_st_entry *e, void *ctx);

/*
 * Write src to dst with tensor `drop` left out and `edit` applied to tensor
 * `target` (either may be NULL). The "tokens" metadata is copied, or replaced
 * by `tokens` if given.
 */
static void variant(const ds3_st_file *src, const char *dst, const char *drop, const char *target, edit_fn edit,
                    void *ctx, const char *tokens) {
    ds3_st_writer *w = ds3_stw_new();
    void **bufs = calloc((size_t)src->n, sizeof *bufs);
    for (int i = 0; i < src->n; i++) {
        const ds3_st_entry *e = &src->entries[i];
        if (drop && strcmp(e->name, drop) == 0) continue;
        bufs[i] = malloc(e->nbytes ? e->nbytes : 1);
        memcpy(bufs[i], e->data, e->nbytes);
        if (target && edit && strcmp(e->name, target) == 0) edit(bufs[i], e, ctx);
        ds3_stw_add(w, e->name, e->dtype, e->ndim, e->shape, bufs[i]);
    }
    const char *tk = tokens ? tokens : ds3_st_meta(src, "tokens");
    if (tk) ds3_stw_meta(w, "tokens", tk);
    ds3_status st = ds3_stw_write(w, dst);
    CHECK(st == DS3_OK, "writing %s: %s", dst, ds3_last_error());
    ds3_stw_free(w);
    for (int i = 0; i < src->n; i++) free(bufs[i]);
    free(bufs);
}

/* Element i of a float tensor in its stored dtype: F32, F64 (ds3's dumps) or
 * BF16 (transformers run in bfloat16). */
static double get_real(const ds3_st_entry *e, const void *data, long i) {
    const char *p = (const char *)data;
    if (e->dtype == DS3_DT_BF16) {
        uint16_t h;
        memcpy(&h, p + (size_t)i * 2, 2);
        return ds3_bf16_to_f32(h);
    }
    if (e->dtype == DS3_DT_F64) {
        double v;
        memcpy(&v, p + (size_t)i * 8, 8);
        return v;
    }
    float v;
    memcpy(&v, p + (size_t)i * 4, 4);
    return v;
}

static void set_real(const ds3_st_entry *e, void *data, long i, double x) {
    char *p = (char *)data;
    if (e->dtype == DS3_DT_BF16) {
        uint16_t h = ds3_f32_to_bf16((float)x);
        memcpy(p + (size_t)i * 2, &h, 2);
    } else if (e->dtype == DS3_DT_F64) {
        memcpy(p + (size_t)i * 8, &x, 8);
    } else {
        float v = (float)x;
        memcpy(p + (size_t)i * 4, &v, 4);
    }
}

/* Nudge: subtract ctx[0] from the smallest logit of row ctx[1] (so neither
 * the argmax nor the top-5 can change: only the elementwise bound sees it). */
static void nudge_min(void *data, const ds3_st_entry *e, void *ctx) {
    const double *c = ctx;
    long V = (long)e->shape[1], row = (long)c[1], best = row * V;
    for (long j = row * V; j < (row + 1) * V; j++)
        if (get_real(e, data, j) < get_real(e, data, best)) best = j;
    set_real(e, data, best, get_real(e, data, best) - c[0]);
}

/* A NaN at element [row][0], row = *(long *)ctx (0 if ctx is NULL). */
static void put_nan(void *data, const ds3_st_entry *e, void *ctx) {
    long row = ctx ? *(const long *)ctx : 0;
    set_real(e, data, row * (long)e->shape[1], NAN);
}

/* Wrong expert: in rows [ctx[0], ctx[1]) replace the last choice by an expert
 * the row did not choose. */
static void wrong_expert(void *data, const ds3_st_entry *e, void *ctx) {
    const long *rows = ctx;
    long K = (long)e->shape[1];
    for (long r = rows[0]; r < rows[1]; r++) {
        int32_t *row = (int32_t *)data + r * K;
        for (int32_t cand = 0;; cand++) {
            bool used = false;
            for (long k = 0; k < K; k++) used |= row[k] == cand;
            if (!used) {
                row[K - 1] = cand;
                break;
            }
        }
    }
}

/* Wrong routing: every row's K experts replaced by K it did not choose (a
 * router bug, not a near-tie). */
static void other_experts(void *data, const ds3_st_entry *e, void *ctx) {
    (void)ctx;
    long K = (long)e->shape[1];
    for (long r = 0; r < (long)e->shape[0]; r++) {
        int32_t *row = (int32_t *)data + r * K, orig[64];
        DS3_ASSERT(K <= 64);
        memcpy(orig, row, sizeof(int32_t) * (size_t)K);
        int32_t next = 0;
        for (long k = 0; k < K; k++) {
            for (;; next++) {
                bool used = false;
                for (long j = 0; j < K; j++) used |= orig[j] == next;
                if (!used) break;
            }
            row[k] = next++;
        }
    }
}

/* Multiply every element by *(double *)ctx. */
static void scale_all(void *data, const ds3_st_entry *e, void *ctx) {
    long n = 1;
    for (int d = 0; d < e->ndim; d++) n *= (long)e->shape[d];
    for (long i = 0; i < n; i++) set_real(e, data, i, get_real(e, data, i) * *(const double *)ctx);
}

/* Add ctx[0] to element [ctx[1]][0]. */
static void nudge_row(void *data, const ds3_st_entry *e, void *ctx) {
    const double *c = ctx;
    long i = (long)c[1] * (long)e->shape[1];
    set_real(e, data, i, get_real(e, data, i) + c[0]);
}

/* max |x| of a float tensor. */
static double max_abs_of(const ds3_st_entry *e) {
    long n;
    double *v = ds3_cmp_read(e, &n), mx = 0;
    for (long i = 0; i < n; i++)
        if (fabs(v[i]) > mx) mx = fabs(v[i]);
    free(v);
    return mx;
}

/* ========================================================================== */
/* Unit tests of the statistics                                                */
/* ========================================================================== */

static uint64_t rng = 88172645463325252ull;
static double urand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

/* The elementwise rule is harness.h's, element for element. */
static void test_checker_matches_harness(void) {
    th_section("ds3_cmp_floats vs th_compare");
    const long n = 997;
    double *g = malloc(sizeof(double) * n), *r = malloc(sizeof(double) * n);
    const double tol[][2] = {{0, 0}, {1e-3, 0}, {0, 1e-2}, {1e-4, 1e-3}, {0.05, 0.1}};
    for (int trial = 0; trial < 40; trial++) {
        for (long i = 0; i < n; i++) {
            r[i] = (urand() - 0.5) * 4;
            g[i] = r[i] + (urand() - 0.5) * 1e-2 * (trial % 5);
            if (trial % 3 == 0 && i % 97 == 5) r[i] = 0;                  /* zero references */
            if (trial % 4 == 1 && i == 13) { g[i] = NAN; r[i] = NAN; }    /* matching NaN */
            if (trial % 4 == 2 && i == 17) g[i] = NAN;                    /* NaN vs number */
            if (trial % 4 == 3 && i == 19) { g[i] = INFINITY; r[i] = -INFINITY; }
            if (trial % 8 == 7 && i == 23) { g[i] = INFINITY; r[i] = INFINITY; }
        }
        for (size_t t = 0; t < sizeof tol / sizeof tol[0]; t++) {
            th_cmp h = th_compare(g, r, n, tol[t][0], tol[t][1]);
            ds3_cmp_result c;
            memset(&c, 0, sizeof c);
            ds3_cmp_floats(&c, g, r, n, tol[t][0], tol[t][1]);
            bool same = (h.ok != 0) == c.ok && h.n_bad == c.n_bad && h.worst == c.worst && h.max_abs == c.max_abs &&
                        h.max_rel == c.max_rel && h.max_ref == c.max_ref;
            CHECK(same, "trial %d tol %zu: harness ok %d bad %ld worst %ld abs %g rel %g | compare ok %d bad %ld "
                  "worst %ld abs %g rel %g", trial, t, h.ok, h.n_bad, h.worst, h.max_abs, h.max_rel, c.ok, c.n_bad,
                  c.worst, c.max_abs, c.max_rel);
        }
    }
    free(g);
    free(r);
}

/* The shortcuts of the statistics loop (src/check/compare.c, acc_add) on
 * what they are most likely to get wrong: one bound for all elements (rtol 0,
 * the profiles) with many equal errors (the earlier element stays the worst),
 * errors exactly at the bound, tiny and subnormal references (max_rel), huge
 * values, against the plain loop of tests/harness.h. */
static void test_checker_shortcuts(void) {
    th_section("ds3_cmp_floats shortcuts vs th_compare");
    const long n = 4096;
    double *g = malloc(sizeof(double) * n), *r = malloc(sizeof(double) * n);
    const double atols[] = {1e-3, 0.25, 1e-300, 4.9e-324, 3.0};
    int bad = 0, cases = 0;
    for (int trial = 0; trial < 60; trial++) {
        for (long i = 0; i < n; i++) {
            const int kind = (int)(urand() * 8);
            r[i] = (urand() - 0.5) * 4;
            switch (kind) {
            case 0: g[i] = r[i] + 0.25; break;                              /* equal errors: ties */
            case 1: g[i] = r[i] + ldexp(1, -(int)(urand() * 60)); break;  /* errors near the bounds */
            case 2: r[i] = ldexp(urand(), -1060 + (int)(urand() * 40)); g[i] = 2 * r[i]; break;  /* subnormal */
            case 3: r[i] = ldexp(urand() + 0.5, -1000); g[i] = r[i] * (1 + urand()); break;     /* tiny */
            case 4: r[i] = ldexp(urand() + 0.5, 1000); g[i] = r[i] * (1 + 1e-3 * urand()); break; /* huge */
            case 5: g[i] = r[i]; break;                                      /* exact */
            default: g[i] = r[i] + (urand() - 0.5) * 1e-3 * (trial % 7); break;
            }
            if (trial % 5 == 1 && i == 100) { g[i] = NAN; r[i] = NAN; }
            if (trial % 5 == 2 && i == 3000) g[i] = INFINITY;
        }
        for (size_t t = 0; t < sizeof atols / sizeof atols[0]; t++) {
            th_cmp h = th_compare(g, r, n, atols[t], 0);
            ds3_cmp_result c;
            memset(&c, 0, sizeof c);
            ds3_cmp_floats(&c, g, r, n, atols[t], 0);
            cases++;
            if (!((h.ok != 0) == c.ok && h.n_bad == c.n_bad && h.worst == c.worst && h.max_abs == c.max_abs &&
                  h.max_rel == c.max_rel && h.max_ref == c.max_ref)) {
                if (bad++ < 5)
                    fprintf(stderr, "trial %d atol %g: harness bad %ld worst %ld rel %.17g | compare bad %ld worst %ld "
                            "rel %.17g\n", trial, atols[t], h.n_bad, h.worst, h.max_rel, c.n_bad, c.worst, c.max_rel);
            }
        }
    }
    CHECK(bad == 0, "%d of %d cases differ from the plain loop", bad, cases);

    /* max_rel growing by less than 2^-40 of itself, element after element:
     * every one is a new maximum (a division skipped too eagerly misses it) */
    for (long i = 0; i < n; i++) {
        r[i] = 1 + (double)i / n;
        g[i] = r[i] * (1 + 1e-3 * (1 + (double)i * 0x1p-45));
    }
    th_cmp h = th_compare(g, r, n, 0.5, 0);
    ds3_cmp_result c;
    ds3_cmp_floats(&c, g, r, n, 0.5, 0);
    CHECK(h.max_rel == c.max_rel, "slowly growing relative error: %.17g, plain loop %.17g", c.max_rel, h.max_rel);
    /* a relative error whose product with |ref| is subnormal: max_rel·|e|
     * = 0.7·2^-1074 rounds up to 2^-1074 = d, yet d/|e| = 2^-34 > max_rel */
    double g2[2] = {1 + 0.7 * 0x1p-34, 0x1p-1040 + 0x1p-1074}, r2[2] = {1, 0x1p-1040};
    h = th_compare(g2, r2, 2, 1, 0);
    ds3_cmp_floats(&c, g2, r2, 2, 1, 0);
    CHECK(h.max_rel == c.max_rel && c.max_rel == 0x1p-34, "subnormal product: max_rel %.17g, plain loop %.17g",
          c.max_rel, h.max_rel);
    free(g);
    free(r);
}

/* A tensor is compared a block of rows at a time (compare_rows): the
 * statistics must be those of the whole tensor at once, for tensors of one
 * block, several blocks, and rows longer than a block (logits); a row left
 * out (its experts differ upstream) is skipped and the worst element is
 * named by its row in the tensor. Written as dumps, read back by
 * ds3_cmp_files. */
static void test_blocks(void) {
    th_section("comparison by blocks of rows = the whole tensor");
    struct { const char *name; long rows, cols; } t[] = {
        {"layers.0.attn.out", 5, 300}, {"layers.0.ffn.out", 100, 300}, {"layers.0.out", 3, 40000},
        {"logits", 7, 20000}};
    const int nt = sizeof t / sizeof t[0];
    float *a[4], *b[4];
    char pa[600], pb[600];
    snprintf(pa, sizeof pa, "%s/blocks-a.safetensors", tmpdir);
    snprintf(pb, sizeof pb, "%s/blocks-b.safetensors", tmpdir);
    ds3_st_writer *wa = ds3_stw_new(), *wb = ds3_stw_new();
    for (int k = 0; k < nt; k++) {
        const long n = t[k].rows * t[k].cols;
        a[k] = malloc(sizeof(float) * n);
        b[k] = malloc(sizeof(float) * n);
        for (long i = 0; i < n; i++) {
            a[k][i] = (float)((urand() - 0.5) * 8);
            b[k][i] = a[k][i] + (float)((urand() - 0.5) * 1e-5);
        }
        b[k][n / 2] = NAN;  /* a NaN in a middle row: counted, the worst */
        const int64_t shape[2] = {t[k].rows, t[k].cols};
        ds3_stw_add(wa, t[k].name, DS3_DT_F32, 2, shape, a[k]);
        ds3_stw_add(wb, t[k].name, DS3_DT_F32, 2, shape, b[k]);
    }
    CHECK(ds3_stw_write(wa, pa) == DS3_OK && ds3_stw_write(wb, pb) == DS3_OK, "writing the dumps");
    ds3_stw_free(wa);
    ds3_stw_free(wb);
    ds3_st_file *fa = NULL, *fb = NULL;
    CHECK(ds3_st_open(pa, &fa) == DS3_OK && ds3_st_open(pb, &fb) == DS3_OK, "opening the dumps");
    for (int mode = 0; fa && fb && mode < 2; mode++) {
        ds3_cmp_opts o = {.profile = ds3_cmp_profile_find("fp32"), .all_rows = true};
        if (mode) { o.elementwise = true; o.atol = 1e-6; o.rtol = 1e-6; }
        ds3_cmp_report rep;
        CHECK(ds3_cmp_files(fa, fb, &o, &rep) == DS3_OK && rep.n == nt, "ds3_cmp_files");
        for (int k = 0; k < rep.n && k < nt; k++) {
            const long n = t[k].rows * t[k].cols;
            double *e = malloc(sizeof(double) * n), *g = malloc(sizeof(double) * n), mx = 0;
            for (long i = 0; i < n; i++) {
                e[i] = a[k][i];
                g[i] = b[k][i];
                if (isfinite(e[i]) && fabs(e[i]) > mx) mx = fabs(e[i]);
            }
            ds3_cmp_result w;
            ds3_cmp_floats(&w, g, e, n, mode ? 1e-6 : o.profile->max_scaled * mx, mode ? 1e-6 : 0);
            const ds3_cmp_result *c = &rep.r[k];
            CHECK(c->max_abs == w.max_abs && c->max_rel == w.max_rel && c->max_ref == w.max_ref &&
                  c->worst == w.worst && c->n_bad == w.n_bad && c->n_nonfinite == 1 && c->cos == w.cos &&
                  c->nmse == w.nmse, "%s [%ld,%ld] (%s): block stats = whole (worst %ld vs %ld, cos %.17g vs %.17g)",
                  t[k].name, t[k].rows, t[k].cols, mode ? "atol/rtol" : "profile", c->worst, w.worst, c->cos, w.cos);
            free(e);
            free(g);
        }
        ds3_cmp_report_free(&rep);
    }
    ds3_st_close(fa);
    ds3_st_close(fb);
    for (int k = 0; k < nt; k++) {
        free(a[k]);
        free(b[k]);
    }

    /* A row left out: routing differs in row 1 upstream; the worst element
     * of layers.1.out is in row 3 and must be named as row 3 (not as the
     * 3rd row kept). */
    const long R = 5, C = 300, K = 2;
    float x[5 * 300], y[5 * 300];
    int32_t ia[5 * 2], ib[5 * 2];
    for (long i = 0; i < R * C; i++) x[i] = y[i] = (float)((urand() - 0.5) * 2);
    for (long i = 0; i < R * K; i++) ia[i] = ib[i] = (int32_t)(i % K);
    ib[1 * K] = 7;              /* row 1 chooses another expert */
    y[3 * C + 17] += 0.5f;      /* the largest error: row 3, col 17 */
    y[4 * C + 5] += 0.25f;
    wa = ds3_stw_new();
    wb = ds3_stw_new();
    const int64_t sx[2] = {R, C}, si[2] = {R, K};
    ds3_stw_add(wa, "layers.0.moe.topk_idx", DS3_DT_I32, 2, si, ia);
    ds3_stw_add(wb, "layers.0.moe.topk_idx", DS3_DT_I32, 2, si, ib);
    ds3_stw_add(wa, "layers.1.out", DS3_DT_F32, 2, sx, x);
    ds3_stw_add(wb, "layers.1.out", DS3_DT_F32, 2, sx, y);
    CHECK(ds3_stw_write(wa, pa) == DS3_OK && ds3_stw_write(wb, pb) == DS3_OK, "writing the routing dumps");
    ds3_stw_free(wa);
    ds3_stw_free(wb);
    CHECK(ds3_st_open(pa, &fa) == DS3_OK && ds3_st_open(pb, &fb) == DS3_OK, "opening the routing dumps");
    if (fa && fb) {
        ds3_cmp_opts o = {.profile = ds3_cmp_profile_find("fp32")};
        ds3_cmp_report rep;
        CHECK(ds3_cmp_files(fa, fb, &o, &rep) == DS3_OK && rep.n == 2, "ds3_cmp_files (rows left out)");
        const ds3_cmp_result *c = rep.n == 2 ? &rep.r[1] : NULL;
        CHECK(c && c->rows_excluded == 1 && c->worst == 3 * C + 17 && c->worst_got == y[3 * C + 17],
              "worst element named in the tensor's rows: %ld (want %ld), %ld row(s) left out", c ? c->worst : -1,
              3 * C + 17, c ? c->rows_excluded : -1);
        ds3_cmp_report_free(&rep);
    }
    ds3_st_close(fa);
    ds3_st_close(fb);
}

/* The k largest of v[n] (finite or +Inf) by k successive argmaxes, ties to
 * the lowest index; -1 where there is none: what compare's top-5 means. */
static void plain_top(long *top, int k, const double *v, long n) {
    for (int j = 0; j < k; j++) {
        top[j] = -1;
        for (long i = 0; i < n; i++) {
            bool taken = false;
            for (int a = 0; a < j; a++) taken |= top[a] == i;
            if (taken || isnan(v[i]) || (isinf(v[i]) && v[i] < 0)) continue;
            if (top[j] < 0 || v[i] > v[top[j]]) top[j] = i;
        }
    }
}

/* A dump of one tensor per shape, as `dt`, written to memory and opened from
 * `shift` bytes into a buffer (1: every tensor's data misaligned). */
static ds3_st_file *mem_dump(const char *const *names, const long (*shape)[2], int nt, double *const *v,
                             ds3_dtype dt, int shift, void **keep) {
    ds3_st_writer *w = ds3_stw_new();
    void *data[4];
    for (int k = 0; k < nt; k++) {
        const long n = shape[k][0] * shape[k][1];
        data[k] = malloc((size_t)n * 8);
        for (long i = 0; i < n; i++) {
            if (dt == DS3_DT_F32) ((float *)data[k])[i] = (float)v[k][i];
            else ((double *)data[k])[i] = v[k][i];
        }
        const int64_t sh[2] = {shape[k][0], shape[k][1]};
        ds3_stw_add(w, names[k], dt, 2, sh, data[k]);
    }
    void *buf = NULL;
    size_t len = 0;
    ds3_st_file *f = NULL;
    if (ds3_stw_write_mem(w, &buf, &len) == DS3_OK) {
        *keep = malloc(len + (size_t)shift);
        memcpy((char *)*keep + shift, buf, len);
        if (ds3_st_open_mem((char *)*keep + shift, len, "mem", &f) != DS3_OK) f = NULL;
    }
    free(buf);
    ds3_stw_free(w);
    for (int k = 0; k < nt; k++) free(data[k]);
    return f;
}

/*
 * Float tensors are compared from floats, a chunk at a time behind a vector
 * test (src/check/compare.c, acc_add_as), doubles one element at a time: the
 * same statistics bit for bit, and those of the plain loops (th_compare for
 * the elementwise rule; the sums in index order for cosine and NMSE; k
 * successive argmaxes for the logits' top-5). Values made of floats, stored
 * as F32 (in place), F32 misaligned (converted a block at a time) and F64;
 * every kind of element the shortcuts must not get wrong: equal errors
 * (ties), errors at powers of two, subnormal, tiny and huge floats, a float
 * difference that overflows, errors at a zero reference, NaN and Inf pairs,
 * and long exact or near-exact runs where whole chunks go to the sums alone.
 */
static void test_float_path(void) {
    th_section("float tensors from floats, doubles and the plain loops: the same statistics");
    const char *const names[3] = {"layers.0.out", "layers.1.out", "logits"};
    const long shape[3][2] = {{37, 300}, {2, 40000}, {4, 20011}};
    double *v[2][3];
    for (int k = 0; k < 3; k++)
        for (int s = 0; s < 2; s++) v[s][k] = malloc(sizeof(double) * (size_t)(shape[k][0] * shape[k][1]));
    int bad = 0, cases = 0;
    for (int trial = 0; trial < 24; trial++) {
        for (int k = 0; k < 3; k++) {
            const long n = shape[k][0] * shape[k][1];
            double *r = v[0][k], *g = v[1][k];
            for (long i = 0; i < n; i++) {
                /* quiet trials: long runs of exact and near-exact elements */
                const int kind = trial % 3 == 0 && urand() < 0.97 ? (urand() < 0.5 ? 5 : 6) : (int)(urand() * 10);
                float rf = (float)((urand() - 0.5) * 8), gf;
                switch (kind) {
                case 0: gf = rf + 0.25f; break;                                          /* ties */
                case 1: gf = rf + ldexpf(1, -(int)(urand() * 40)); break;                /* powers of two */
                case 2: rf = ldexpf((float)urand(), -149 + (int)(urand() * 20)); gf = 2 * rf; break; /* subnormal */
                case 3: rf = ldexpf((float)urand() + 0.5f, -120); gf = rf * (1 + (float)urand()); break;
                case 4: rf = ldexpf((float)urand() + 0.5f, 120); gf = rf * (1 + 1e-3f * (float)urand()); break;
                case 5: gf = rf; break;
                case 6: gf = rf * (1 + 1e-6f * (float)(urand() - 0.5)); break;
                case 7: rf = 0; gf = (float)(urand() * 1e-3); break;                    /* zero reference */
                case 8: rf = 3e38f * (urand() < 0.5 ? 1 : -1); gf = -rf; break;         /* float g - e overflows */
                default: gf = rf + (float)((urand() - 0.5) * 1e-3 * (trial % 7)); break;
                }
                r[i] = rf;
                g[i] = gf;
            }
            if (trial % 4 == 1) { r[n / 3] = NAN; g[n / 3] = NAN; }
            if (trial % 4 == 2) g[n / 2] = INFINITY;
            if (trial % 4 == 3) { r[n - 1] = -INFINITY; g[n - 1] = -INFINITY; r[7] = INFINITY; g[7] = 1; }
        }
        void *keep[3][2];
        const ds3_dtype dts[3] = {DS3_DT_F32, DS3_DT_F32, DS3_DT_F64};
        const int shifts[3] = {0, 1, 0};
        ds3_st_file *f[3][2];
        for (int e = 0; e < 3; e++)
            for (int s = 0; s < 2; s++) f[e][s] = mem_dump(names, shape, 3, v[s], dts[e], shifts[e], &keep[e][s]);
        for (int mode = 0; mode < 4; mode++) {
            ds3_cmp_opts o = {.profile = ds3_cmp_profile_find(mode == 1 ? "bf16" : "fp32"), .all_rows = true};
            if (mode >= 2) {
                o.elementwise = true;
                o.atol = mode == 2 ? 1e-4 : 1e-5;
                o.rtol = mode == 2 ? 0 : 1e-3;
            }
            ds3_cmp_report rep[3];
            for (int e = 0; e < 3; e++) {
                memset(&rep[e], 0, sizeof rep[e]);
                CHECK(f[e][0] && f[e][1] && ds3_cmp_files(f[e][0], f[e][1], &o, &rep[e]) == DS3_OK && rep[e].n == 3,
                      "trial %d mode %d encoding %d: ds3_cmp_files", trial, mode, e);
            }
            for (int k = 0; k < 3 && rep[0].n == 3 && rep[1].n == 3 && rep[2].n == 3; k++) {
                const long rows = shape[k][0], cols = shape[k][1], n = rows * cols;
                const double *r = v[0][k], *g = v[1][k];
                double mx = 0, dot = 0, gg = 0, rr = 0, dd = 0;
                for (long i = 0; i < n; i++)
                    if (isfinite(r[i]) && fabs(r[i]) > mx) mx = fabs(r[i]);
                for (long i = 0; i < n; i++)
                    if (isfinite(g[i]) && isfinite(r[i])) {
                        dot += g[i] * r[i];
                        gg += g[i] * g[i];
                        rr += r[i] * r[i];
                        dd += (g[i] - r[i]) * (g[i] - r[i]);
                    }
                const double atol = mode >= 2 ? o.atol : o.profile->max_scaled * mx, rtol = mode >= 2 ? o.rtol : 0;
                th_cmp h = th_compare(g, r, n, atol, rtol);
                const double cos = gg == 0 && rr == 0 ? 1 : gg == 0 || rr == 0 ? 0 : dot / (sqrt(gg) * sqrt(rr)),
                             nmse = rr > 0 ? dd / rr : (dd > 0 ? INFINITY : 0);
                long am = 0, near = 0;
                double overlap = 0;
                if (k == 2)
                    for (long t = 0; t < rows; t++) {
                        long tg[5], te[5];
                        plain_top(tg, 5, g + t * cols, cols);
                        plain_top(te, 5, r + t * cols, cols);
                        if (tg[0] == te[0]) am++;
                        else if (tg[0] >= 0 && te[0] >= 0 && r[t * cols + te[0]] - r[t * cols + tg[0]] <= 2 * atol) near++;
                        int common = 0;
                        for (int a = 0; a < 5; a++)
                            for (int b = 0; b < 5; b++) common += tg[a] == te[b] && tg[a] >= 0;
                        overlap += (double)common / 5;
                    }
                for (int e = 0; e < 3; e++) {
                    const ds3_cmp_result *c = &rep[e].r[k];
                    cases++;
                    bool same = c->n_bad == h.n_bad && c->worst == h.worst && c->max_abs == h.max_abs &&
                                c->max_rel == h.max_rel && c->max_ref == h.max_ref && c->cos == cos &&
                                c->nmse == nmse && (h.worst < 0 || (c->worst_got == g[h.worst] &&
                                                                    c->worst_ref == r[h.worst]));
                    if (k == 2) same = same && c->argmax_same == am && c->argmax_near_tie == near &&
                                       c->top5 == overlap / (double)rows;
                    if (e) same = same && c->ok == rep[0].r[k].ok && !strcmp(c->why, rep[0].r[k].why);
                    if (!same && bad++ < 5)
                        fprintf(stderr, "trial %d mode %d %s encoding %d: bad %ld/%ld worst %ld/%ld abs %.17g/%.17g "
                                "rel %.17g/%.17g cos %.17g/%.17g nmse %.17g/%.17g argmax %ld/%ld top5 %.17g\n",
                                trial, mode, names[k], e, c->n_bad, h.n_bad, c->worst, h.worst, c->max_abs, h.max_abs,
                                c->max_rel, h.max_rel, c->cos, cos, c->nmse, nmse, c->argmax_same, am, c->top5);
                }
            }
            for (int e = 0; e < 3; e++) ds3_cmp_report_free(&rep[e]);
        }
        for (int e = 0; e < 3; e++)
            for (int s = 0; s < 2; s++) {
                ds3_st_close(f[e][s]);
                free(keep[e][s]);
            }
    }
    CHECK(bad == 0, "%d of %d tensor comparisons differ from the plain loops or between encodings", bad, cases);
    for (int k = 0; k < 3; k++)
        for (int s = 0; s < 2; s++) free(v[s][k]);

    /* The edges of the test that sends elements to the sums alone, where
     * random values hardly go (one bound for all: atol 1e30, rtol 0).
     * Doubles: max_abs = 1 (element 0) and max_rel = 0.5721.../304677.5
     * (element 1) make max_abs/max_rel round down to q = element 2's |e|,
     * whose d = 1 = max_abs gives d/|e| = 1/q, one ulp above max_rel: the
     * test must not pass it on |e| >= q alone. */
    const double e3[3] = {1e12, 0x1.2989600000000p+18, 0x1.0406c75dd9af4p+19},
                 g3[3] = {1e12 + 1, 0x1.2989849dbcd63p+18, 0x1.0406e75dd9af4p+19};
    th_cmp h = th_compare(g3, e3, 3, 1e30, 0);
    ds3_cmp_result c;
    ds3_cmp_floats(&c, g3, e3, 3, 1e30, 0);
    CHECK(c.max_rel == h.max_rel && c.max_rel == 0x1.f8125d8c8a85dp-20,
          "max_rel one ulp above the one before: %a, plain loop %a", c.max_rel, h.max_rel);
    /* Floats: after max_abs = 2^24 - 1.75 (element 2), element 84's error
     * 2^24 - 1.625 is a new max_abs, yet rounds in float to 2^24 - 2, the
     * largest float below max_abs: the chunk test must not pass it (its chunk
     * holds nothing else, for chunks of up to 64). */
    double er[128], eg[128];
    for (int i = 0; i < 128; i++) er[i] = eg[i] = 100;
    er[0] = eg[0] = 0x1p26;                 /* max_ref */
    er[1] = 0x1p-20, eg[1] = 1 + 0x1p-20;   /* max_rel 2^20: a_rel about 16 */
    er[2] = 0x1p24, eg[2] = 1.75;
    er[84] = 0x1p24, eg[84] = 1.625;
    const char *ename[1] = {"layers.0.out"};
    const long eshape[1][2] = {{1, 128}};
    double *ev[2][1] = {{er}, {eg}};
    void *ekeep[2];
    ds3_st_file *ea = mem_dump(ename, eshape, 1, ev[0], DS3_DT_F32, 0, &ekeep[0]),
                *eb = mem_dump(ename, eshape, 1, ev[1], DS3_DT_F32, 0, &ekeep[1]);
    ds3_cmp_opts o = {.profile = ds3_cmp_profile_find("fp32"), .elementwise = true, .atol = 1e30, .all_rows = true};
    ds3_cmp_report rep = {0};
    h = th_compare(eg, er, 128, 1e30, 0);
    CHECK(ea && eb && ds3_cmp_files(ea, eb, &o, &rep) == DS3_OK && rep.n == 1 &&
          rep.r[0].max_abs == h.max_abs && h.max_abs == 0x1p24 - 1.625 && rep.r[0].worst == 84,
          "a new max_abs that rounds in float to below the old: %a (worst %ld), plain loop %a",
          rep.n ? rep.r[0].max_abs : 0, rep.n ? rep.r[0].worst : -1, h.max_abs);
    ds3_cmp_report_free(&rep);
    ds3_st_close(ea);
    ds3_st_close(eb);
    free(ekeep[0]);
    free(ekeep[1]);
}

static void test_stats(void) {
    th_section("cosine, NMSE, scaled error");
    double r[4] = {1, -2, 3, 0.5}, g[4];
    ds3_cmp_result c;
    ds3_cmp_floats(&c, r, r, 4, 0, 0);
    CHECK(c.ok && c.cos == 1 && c.nmse == 0 && c.max_abs == 0, "identical: ok %d cos %g nmse %g", c.ok, c.cos, c.nmse);
    for (int i = 0; i < 4; i++) g[i] = 2 * r[i];
    ds3_cmp_floats(&c, g, r, 4, 0, 0);
    /* t = 2r: cosine 1, NMSE = Σr²/Σr² = 1, scaled = max|r|/max|r| = 1 */
    CHECK(fabs(c.cos - 1) < 1e-15 && fabs(c.nmse - 1) < 1e-15 && fabs(c.scaled - 1) < 1e-15 && !c.ok,
          "2r: cos %.17g nmse %.17g scaled %.17g", c.cos, c.nmse, c.scaled);
    double a[2] = {1, 0}, b[2] = {0, 1};
    ds3_cmp_floats(&c, b, a, 2, 10, 0);
    CHECK(fabs(c.cos) < 1e-15 && fabs(c.nmse - 2) < 1e-15 && c.ok, "orthogonal: cos %g nmse %g", c.cos, c.nmse);
    for (int i = 0; i < 4; i++) g[i] = -r[i];
    ds3_cmp_floats(&c, g, r, 4, 0, 0);
    CHECK(fabs(c.cos + 1) < 1e-15 && fabs(c.nmse - 4) < 1e-15, "-r: cos %g nmse %g", c.cos, c.nmse);
    double z[3] = {0, 0, 0};
    ds3_cmp_floats(&c, z, z, 3, 0, 0);
    CHECK(c.ok && c.cos == 1 && c.nmse == 0, "zeros: cos %g nmse %g", c.cos, c.nmse);
    double nanv[3] = {0, NAN, 0};
    ds3_cmp_floats(&c, nanv, z, 3, 1e9, 1e9);
    CHECK(!c.ok && c.n_nonfinite == 1 && c.worst == 1, "NaN vs 0 must fail whatever the tolerance");
}

static void test_names(void) {
    th_section("--names globs");
    CHECK(ds3_cmp_name_selected(NULL, "logits"), "NULL selects all");
    CHECK(ds3_cmp_name_selected("layers.*", "layers.1.out"), "layers.*");
    CHECK(!ds3_cmp_name_selected("layers.*", "logits"), "layers.* excludes logits");
    CHECK(ds3_cmp_name_selected("logits,norm", "norm"), "list");
    CHECK(!ds3_cmp_name_selected("*,!mtp.*", "mtp.0.logits"), "exclusion");
    CHECK(ds3_cmp_name_selected("*,!mtp.*", "layers.0.out"), "exclusion keeps the rest");
    CHECK(ds3_cmp_name_selected("!mtp.*", "embed"), "only an exclusion: everything else");
    CHECK(!ds3_cmp_name_selected("layers.*.moe.*,!*.scores", "layers.1.moe.scores"), "exclusion inside");
}

static void test_profiles(void) {
    th_section("profiles");
    const ds3_cmp_profile *a = ds3_cmp_profile_find("fp32"), *b = ds3_cmp_profile_find("bf16"),
                          *c = ds3_cmp_profile_find("fp8");
    CHECK(a && b && c && !ds3_cmp_profile_find("fp16"), "fp32, bf16, fp8 exist, nothing else");
    if (!a || !b || !c) return;
    /* each build is allowed at least as much as the more precise one */
    CHECK(a->max_scaled < b->max_scaled && b->max_scaled <= c->max_scaled, "max_scaled ordered");
    CHECK(a->min_cos > b->min_cos && b->min_cos >= c->min_cos, "min_cos ordered");
    CHECK(a->max_nmse < b->max_nmse && b->max_nmse <= c->max_nmse, "max_nmse ordered");
    CHECK(a->min_idx_overlap > b->min_idx_overlap && b->min_idx_overlap >= c->min_idx_overlap, "overlap ordered");
    CHECK(a->min_idx_rows == 1 && a->min_idx_overlap == 1 && a->min_argmax == 1 && a->min_top5 == 1,
          "fp32: routing and argmax exact");
    /* a router bug (experts unrelated to the right ones: overlap ~K/E) fails every profile */
    CHECK(c->min_idx_overlap > 0.5, "fp8 still requires most experts shared");
}

/* ========================================================================== */
/* The CLI on planted faults                                                   */
/* ========================================================================== */

static const char *const PROFILES[] = {"fp32", "bf16", "fp8"};

static void test_usage(void) {
    th_section("usage errors (exit 2)");
    expect(RUN("compare"), 2, "give two dumps", "no arguments");
    expect(RUN("compare", "a"), 2, "give two dumps", "one argument");
    expect(RUN("compare", "a", "b", "c"), 2, "unexpected argument", "three arguments");
    expect(RUN("compare", "a", "b", "--profile", "fp16"), 2, "--profile", "unknown profile");
    expect(RUN("compare", "a", "b", "--profile"), 2, "needs a value", "--profile without value");
    expect(RUN("compare", "a", "b", "--atol", "-1"), 2, "--atol", "negative atol");
    expect(RUN("compare", "a", "b", "--rtol", "x"), 2, "not a number", "rtol not a number");
    expect(RUN("compare", "a", "b", "--atol", "nan"), 2, "--atol", "atol nan");
    expect(RUN("compare", "a", "b", "--bogus"), 2, "unknown option", "unknown option");
    expect(RUN("compare", "a", "b", "--names", ""), 2, "--names", "empty --names");
    expect(RUN("compare", "--help"), 0, "usage: ds3 compare", "--help");
    expect(RUN("help", "compare"), 0, "usage: ds3 compare", "ds3 help compare");
    expect(RUN("--help"), 0, "compare", "main help lists compare");
}

static void test_faults(const char *models) {
    char model[512], ref[600], path[600];
    snprintf(model, sizeof model, "%s/tiny-f32", models);
    struct stat sb;
    if (stat(model, &sb) != 0) {
        fprintf(stderr, "-- %s missing: planted-fault tests skipped\n", model);
        return;
    }
    th_section("planted faults on a dump of %s", model);
    snprintf(ref, sizeof ref, "%s/ref.safetensors", tmpdir);
    expect(RUN("dump", "-m", model, "--tokens", "3,1,4,1,5,9,2,6,5,3,5,8", "-o", ref), 0, NULL, "ds3 dump");
    ds3_st_file *f = NULL;
    CHECK(ds3_st_open(ref, &f) == DS3_OK, "open %s: %s", ref, ds3_last_error());
    if (!f) return;
    const ds3_st_entry *lg = ds3_st_find(f, "logits");
    CHECK(lg != NULL && ds3_st_find(f, "layers.1.moe.topk_idx") != NULL, "the dump has logits and routing");
    if (!lg || !ds3_st_find(f, "layers.1.moe.topk_idx")) return;
    const double lmax = max_abs_of(lg);
    const long T = (long)lg->shape[0];

    /* unreadable input: a runtime error */
    expect(RUN("compare", ref, "/nonexistent/x.safetensors"), 1, "TEST", "missing TEST file");
    expect(RUN("compare", "/nonexistent/x.safetensors", ref), 1, "REF", "missing REF file");

    for (int p = 0; p < 3; p++) {
        const char *prof = PROFILES[p];
        const ds3_cmp_profile *P = ds3_cmp_profile_find(prof);
        char what[128];

        snprintf(what, sizeof what, "%s: identical dumps", prof);
        expect(RUN("compare", ref, ref, "--profile", prof), 0, "PASS", what);

        /* A nudged logit, twice the profile's bound: caught. Half of it: not. */
        double c[2] = {2 * P->max_scaled * lmax, 5};
        snprintf(path, sizeof path, "%s/nudge-%s.safetensors", tmpdir, prof);
        variant(f, path, NULL, "logits", nudge_min, c, NULL);
        snprintf(what, sizeof what, "%s: logit nudged by 2x the bound", prof);
        expect(RUN("compare", ref, path, "--profile", prof), 1, "max|t-r|/max|r|", what);
        c[0] = 0.5 * P->max_scaled * lmax;
        variant(f, path, NULL, "logits", nudge_min, c, NULL);
        snprintf(what, sizeof what, "%s: logit nudged by half the bound", prof);
        expect(RUN("compare", ref, path, "--profile", prof), 0, "PASS", what);

        /* A whole tensor scaled by 1 + e: NMSE = e², the bound NMSE the
         * profile allows is max_nmse, so e = 1.5·sqrt(max_nmse) is caught and
         * 0.5·sqrt(max_nmse) passes (scaled = e stays below max_scaled). */
        for (int k = 0; k < 2; k++) {
            double fac = 1 + (k ? 0.5 : 1.5) * sqrt(P->max_nmse);
            snprintf(path, sizeof path, "%s/scale-%s.safetensors", tmpdir, prof);
            variant(f, path, NULL, "layers.0.ffn.out", scale_all, &fac, NULL);
            snprintf(what, sizeof what, "%s: layers.0.ffn.out scaled by %.9g", prof, fac);
            expect(RUN("compare", ref, path, "--profile", prof, "--names", "layers.0.ffn.out"), k ? 0 : 1,
                   k ? "PASS" : "FAIL", what);
        }

        /* Wrong routing (every row's experts replaced) in one layer: caught by
         * every profile, through the expert overlap. */
        snprintf(path, sizeof path, "%s/experts-%s.safetensors", tmpdir, prof);
        variant(f, path, NULL, "layers.1.moe.topk_idx", other_experts, NULL, NULL);
        snprintf(what, sizeof what, "%s: every row's experts replaced", prof);
        expect(RUN("compare", ref, path, "--profile", prof), 1,
               p == 0 ? "12 of 12 rows choose other experts" : "share 0.000 of their experts", what);

        /* One wrong expert in every row (overlap 7/8): fp32 catches it; bf16
         * and fp8 allow it in the routing tensor itself — their measured noise
         * on the tiny routers comes within 1.5x of that (docs/COMPARING.md,
         * "What each profile catches"). */
        long rows[2] = {0, T};
        snprintf(path, sizeof path, "%s/expert-each-%s.safetensors", tmpdir, prof);
        variant(f, path, NULL, "layers.1.moe.topk_idx", wrong_expert, rows, NULL);
        snprintf(what, sizeof what, "%s: one wrong expert in every row (the routing tensor)", prof);
        expect(RUN("compare", ref, path, "--profile", prof, "--names", "layers.1.moe.topk_idx"), p == 0 ? 1 : 0,
               p == 0 ? "choose other experts" : "expert overlap 0.875", what);
        /* ...but then every row is left out of every later tensor: nothing of
         * them is compared, and that is no pass. */
        snprintf(what, sizeof what, "%s: one wrong expert in every row (the whole dump)", prof);
        expect(RUN("compare", ref, path, "--profile", prof), 1,
               p == 0 ? "choose other experts" : "nothing compared", what);
        if (p != 0) {
            snprintf(what, sizeof what, "%s: every row left out of layers.1.ffn.out", prof);
            expect(RUN("compare", ref, path, "--profile", prof, "--names", "layers.1.ffn.out"), 1,
                   "every row is left out, its experts differ in an earlier layer: nothing compared", what);
            snprintf(what, sizeof what, "%s: layers.1.moe.topk_weight with no row to pair", prof);
            expect(RUN("compare", ref, path, "--profile", prof, "--names", "layers.1.moe.topk_weight"), 1,
                   "no row has the same experts in both dumps", what);
            /* --all-rows compares those rows: the values are the same (only
             * the routing tensor was edited), so all but layer 1's
             * topk_weight (no row to pair) pass. */
            snprintf(what, sizeof what, "%s: --all-rows compares the rows left out", prof);
            expect(RUN("compare", ref, path, "--profile", prof, "--all-rows", "--names", "!layers.1.moe.topk_weight"), 0,
                   "PASS", what);
        }

        /* One NaN. */
        snprintf(path, sizeof path, "%s/nan-%s.safetensors", tmpdir, prof);
        variant(f, path, NULL, "layers.1.out", put_nan, NULL, NULL);
        snprintf(what, sizeof what, "%s: a NaN", prof);
        expect(RUN("compare", ref, path, "--profile", prof), 1, "non-finite", what);

        /* A tensor missing from TEST, then from REF. */
        snprintf(path, sizeof path, "%s/missing-%s.safetensors", tmpdir, prof);
        variant(f, path, "layers.2.ffn.out", NULL, NULL, NULL, NULL);
        snprintf(what, sizeof what, "%s: tensor missing from TEST", prof);
        expect(RUN("compare", ref, path, "--profile", prof), 1, "layers.2.ffn.out (only in REF)", what);
        snprintf(what, sizeof what, "%s: tensor missing from REF", prof);
        expect(RUN("compare", path, ref, "--profile", prof), 1, "layers.2.ffn.out (only in TEST)", what);
        snprintf(what, sizeof what, "%s: missing tensor excluded by --names", prof);
        expect(RUN("compare", ref, path, "--profile", prof, "--names", "*,!layers.2.ffn.out"), 0, "PASS", what);
    }

    /* fp32: one wrong expert in one row is enough. */
    long one[2] = {4, 5};
    snprintf(path, sizeof path, "%s/expert1.safetensors", tmpdir);
    variant(f, path, NULL, "layers.2.moe.topk_idx", wrong_expert, one, NULL);
    expect(RUN("compare", ref, path, "--profile", "fp32"), 1, "1 of 12 rows choose other experts", "fp32: one wrong expert");
    /* the bf16 profile allows a share of rows to flip (near-ties in bf16): one row passes */
    expect(RUN("compare", ref, path, "--profile", "bf16"), 0, "11/12", "bf16: one flipped row is within");
    /* and the weights are still compared on the 11 rows that agree */
    expect(RUN("compare", ref, path, "--profile", "bf16", "--names", "layers.2.moe.topk_weight"), 0,
           "on the 11 rows", "weights paired on agreeing rows");

    /* Routing divergence: row 4 chooses another expert in layer 1, and its
     * layer-2 output is far off. By default that row is left out of every
     * tensor downstream of layer 1's routing (the bf16 profile allows the one
     * flipped row); --all-rows keeps it and the far-off value fails. */
    {
        char two[600];
        snprintf(path, sizeof path, "%s/flip1.safetensors", tmpdir);
        snprintf(two, sizeof two, "%s/flip2.safetensors", tmpdir);
        variant(f, path, NULL, "layers.1.moe.topk_idx", wrong_expert, one, NULL);
        ds3_st_file *f1 = NULL;
        CHECK(ds3_st_open(path, &f1) == DS3_OK, "open %s", path);
        if (f1) {
            double c4[2] = {5 * max_abs_of(ds3_st_find(f, "layers.2.out")), 4};
            variant(f1, two, NULL, "layers.2.out", nudge_row, c4, NULL);
            expect(RUN("compare", ref, two, "--profile", "bf16"), 0, "1 of 12 rows left out", "diverged row left out");
            expect(RUN("compare", ref, two, "--profile", "bf16", "--all-rows"), 1, "layers.2.out", "--all-rows keeps it");
            expect(RUN("compare", ref, two, "--profile", "bf16", "--names", "layers.1.attn.out,layers.1.moe.scores"), 0,
                   "PASS", "nothing left out before the routing that diverged");
            /* but a NaN in the row that is left out is still caught */
            char three[600];
            long r4 = 4;
            snprintf(three, sizeof three, "%s/flip3.safetensors", tmpdir);
            variant(f1, three, NULL, "layers.2.out", put_nan, &r4, NULL);
            ds3_st_close(f1);
            expect(RUN("compare", ref, three, "--profile", "bf16"), 1, "in rows left out", "NaN in a row left out");
            result rr = RUN("compare", ref, two, "--profile", "bf16", "--names", "layers.1.attn.out");
            CHECK(!has(rr.out, "left out"), "layers.1.attn.out is upstream of layer 1's routing:\n%s", rr.out);
            done(&rr);
        }
    }

    /* Different token sequences: the comparison is meaningless. */
    snprintf(path, sizeof path, "%s/tokens.safetensors", tmpdir);
    variant(f, path, NULL, NULL, NULL, NULL, "3,1,4,1,5,9,2,6,5,3,5,9");
    expect(RUN("compare", ref, path), 1, "different tokens", "different tokens");

    /* --atol/--rtol: the harness rule, absolute. */
    double c[2] = {1e-3, 2};
    snprintf(path, sizeof path, "%s/small-nudge.safetensors", tmpdir);
    variant(f, path, NULL, "logits", nudge_min, c, NULL);
    expect(RUN("compare", ref, ref, "--atol", "0", "--rtol", "0"), 0, "PASS", "atol 0 rtol 0, identical");
    expect(RUN("compare", ref, path, "--atol", "1e-6"), 1, "outside atol", "atol 1e-6 catches 1e-3");
    expect(RUN("compare", ref, path, "--atol", "2e-3"), 0, "PASS", "atol 2e-3 allows 1e-3");
    expect(RUN("compare", ref, path, "--atol", "0", "--rtol", "1e-6", "--names", "logits"), 1, "outside atol",
           "rtol alone");

    /* --json: one object, parseable, with the verdict and the worst element. */
    result r = RUN("compare", ref, path, "--atol", "1e-6", "--json");
    CHECK(r.rc == 1, "--json exit %d", r.rc);
    cJSON *j = cJSON_Parse(r.out);
    CHECK(j != NULL, "--json output does not parse:\n%s", r.out);
    if (j) {
        cJSON *pass = cJSON_GetObjectItem(j, "pass"), *ts = cJSON_GetObjectItem(j, "tensors");
        CHECK(cJSON_IsFalse(pass), "--json: pass is not false");
        bool found = false;
        cJSON *t;
        cJSON_ArrayForEach(t, ts) {
            cJSON *nm = cJSON_GetObjectItem(t, "name");
            if (!cJSON_IsString(nm) || strcmp(nm->valuestring, "logits") != 0) continue;
            found = true;
            cJSON *wi = cJSON_GetObjectItem(t, "worst_index"), *ok = cJSON_GetObjectItem(t, "ok");
            CHECK(cJSON_IsFalse(ok) && cJSON_GetArraySize(wi) == 2 &&
                      cJSON_GetArrayItem(wi, 0)->valuedouble == 2,
                  "--json: logits not failing at row 2");
            CHECK(fabs(cJSON_GetObjectItem(t, "max_abs")->valuedouble - 1e-3) < 1e-6, "--json: max_abs");
        }
        CHECK(found, "--json: no logits entry");
        cJSON_Delete(j);
    }
    done(&r);
    ds3_st_close(f);
}

/* Genuine fp32 noise: ds3's dump against the float64 oracle passes fp32. */
static void test_oracle(const char *models, const char *refdir) {
    char model[512], gold[600], out[600];
    snprintf(model, sizeof model, "%s/tiny-f32", models);
    snprintf(gold, sizeof gold, "%s/tiny-f32.safetensors", refdir);
    struct stat sb;
    if (stat(model, &sb) != 0 || stat(gold, &sb) != 0) return;
    th_section("ds3 dump vs the float64 oracle %s", gold);
    ds3_st_file *g = NULL;
    CHECK(ds3_st_open(gold, &g) == DS3_OK, "open %s", gold);
    if (!g) return;
    const char *tokens = ds3_st_meta(g, "tokens");
    CHECK(tokens != NULL, "%s has tokens metadata", gold);
    snprintf(out, sizeof out, "%s/oracle-case.safetensors", tmpdir);
    if (tokens) {
        expect(RUN("dump", "-m", model, "--tokens", tokens, "-o", out), 0, NULL, "dump for the oracle");
        /* MTP tensors are compared where both sides have them; a reference made
         * before MTP existed has none, so they are left out here. */
        expect(RUN("compare", gold, out, "--profile", "fp32", "--names", "*,!mtp.*"), 0, "PASS",
               "fp32 profile vs the float64 oracle");
    }
    ds3_st_close(g);
}

/*
 * Genuine builds: transformers in bfloat16 (and with the FP8 activation path)
 * on the CPU, ref_data/emulate/, against ds3's plain dump. The profile made
 * for the build passes it and fp32 does not; the planted faults are caught on
 * top of the build's own rounding noise.
 */
static void test_genuine(const char *models, const char *refdir) {
    static const struct {
        const char *file, *model, *profile;
    } cases[] = {{"tiny-bf16-hf-bf16", "tiny-bf16", "bf16"}, {"tiny-fp8-hf-fp8act", "tiny-fp8", "fp8"}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char gold[600], model[600], ref[600], path[600], what[160];
        snprintf(gold, sizeof gold, "%s/emulate/%s.safetensors", refdir, cases[c].file);
        snprintf(model, sizeof model, "%s/%s", models, cases[c].model);
        th_section("a genuine %s build (%s) against ds3", cases[c].profile, gold);
        ds3_st_file *g = NULL;
        CHECK(ds3_st_open(gold, &g) == DS3_OK, "open %s: %s", gold, ds3_last_error());
        if (!g) continue;
        const char *tokens = ds3_st_meta(g, "tokens");
        CHECK(tokens != NULL, "%s has tokens", gold);
        snprintf(ref, sizeof ref, "%s/genuine-ref.safetensors", tmpdir);
        if (tokens) expect(RUN("dump", "-m", model, "--tokens", tokens, "-o", ref), 0, NULL, "ds3 dump");
        const char *prof = cases[c].profile;
        const ds3_cmp_profile *P = ds3_cmp_profile_find(prof);
        snprintf(what, sizeof what, "%s build within the %s profile", prof, prof);
        expect(RUN("compare", ref, gold, "--profile", prof), 0, "PASS", what);
        snprintf(what, sizeof what, "%s build outside the fp32 profile", prof);
        expect(RUN("compare", ref, gold, "--profile", "fp32"), 1, "FAIL", what);

        /* one value nudged by twice the bound, on top of the build's noise
         * (in layer 1's attention: upstream of every routing, so no row of it
         * is left out however the build's routing flips) */
        const ds3_st_entry *at = ds3_st_find(g, "layers.1.attn.out");
        double nud[2] = {2 * P->max_scaled * (at ? max_abs_of(at) : 1), 3};
        snprintf(path, sizeof path, "%s/genuine-nudge.safetensors", tmpdir);
        variant(g, path, NULL, "layers.1.attn.out", nudge_min, nud, NULL);
        snprintf(what, sizeof what, "%s build + a nudged value", prof);
        expect(RUN("compare", ref, path, "--profile", prof), 1, "max|t-r|/max|r|", what);
        /* a router bug in the last MoE layer */
        snprintf(path, sizeof path, "%s/genuine-experts.safetensors", tmpdir);
        variant(g, path, NULL, "layers.2.moe.topk_idx", other_experts, NULL, NULL);
        snprintf(what, sizeof what, "%s build + wrong experts", prof);
        expect(RUN("compare", ref, path, "--profile", prof), 1, "of their experts", what);
        /* a NaN (row 0 of layers.1.out: left out of the statistics when its
         * routing diverged, but a NaN is never excused) */
        snprintf(path, sizeof path, "%s/genuine-nan.safetensors", tmpdir);
        variant(g, path, NULL, "layers.1.out", put_nan, NULL, NULL);
        snprintf(what, sizeof what, "%s build + a NaN", prof);
        expect(RUN("compare", ref, path, "--profile", prof), 1, "non-finite", what);
        /* a missing tensor */
        snprintf(path, sizeof path, "%s/genuine-missing.safetensors", tmpdir);
        variant(g, path, "mtp.0.logits", NULL, NULL, NULL, NULL);
        snprintf(what, sizeof what, "%s build without mtp.0.logits", prof);
        expect(RUN("compare", ref, path, "--profile", prof), 1, "mtp.0.logits (only in REF)", what);
        ds3_st_close(g);
    }
}

int main(void) {
    test_checker_matches_harness();
    test_stats();
    test_names();
    test_profiles();
    test_float_path();
    cli = getenv("DS3_CLI");
    const char *models = getenv("DS3_MODELS"), *refdir = getenv("DS3_REF");
    if (!cli) {
        fprintf(stderr, "-- DS3_CLI not set: CLI tests skipped\n");
        return th_finish();
    }
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ds3-compare-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_usage();
    test_checker_shortcuts();
    test_blocks();
    if (models) test_faults(models);
    if (models && refdir) test_oracle(models, refdir);
    if (models && refdir) test_genuine(models, refdir);
    remove_tmpdir();
    return th_finish();
}

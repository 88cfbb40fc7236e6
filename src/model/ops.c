/*
 * ops.c — the small element-wise operations of the forward pass
 * (docs/MODEL.md §2): RMSNorm, SiLU, a numerically safe softmax; then the
 * operations as a state runs them (its kernels, its GPU rounding points).
 *
 * Sums of squares and softmax normalisers are accumulated in double whatever
 * the build's scalar type: they are O(n) reductions whose rounding would
 * otherwise grow with the width, and they cost nothing next to the GEMMs.
 */
#include "model/model.h"

#include <math.h>
#include <stdarg.h>

/*
 * RMSNorm(x) = w ⊙ x / sqrt(mean(x²) + eps)       out[n], x[n], w[n]
 * The order (normalise, then scale by w) is that of the official code and of
 * transformers' DeepseekV3RMSNorm. out may alias x.
 */
void ds3_rmsnorm(ds3_real *out, const ds3_real *x, const ds3_real *w, int n, double eps) {
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * (double)x[i];
    ds3_real inv = (ds3_real)(1.0 / sqrt(ss / n + eps));
    for (int i = 0; i < n; i++) out[i] = w[i] * (x[i] * inv);
}

/* silu(a) = a · sigmoid(a) = a / (1 + e^-a): the gate of SwiGLU; e = e^-a, in double. */
static ds3_real silu_e(ds3_real a, double e) { return a / ((ds3_real)1 + (ds3_real)e); }

ds3_real ds3_silu(ds3_real a) { return silu_e(a, ds3_exp(-(double)a)); }

/* Values the exps below take at once (ds3_exp_n: the bits of ds3_exp). */
#define EXP_CHUNK 64

/* x[i] = silu(x[i]) for n values: ds3_silu's operations, the exps a chunk at a time. */
void ds3_silu_n(ds3_real *x, size_t n) {
    const int64_t chunks = (int64_t)((n + EXP_CHUNK - 1) / EXP_CHUNK);
#pragma omp parallel for schedule(static) if (n >= DS3_PAR_MIN && !ds3_in_parallel())
    for (int64_t c = 0; c < chunks; c++) {
        const size_t i0 = (size_t)c * EXP_CHUNK;
        const int m = n - i0 < EXP_CHUNK ? (int)(n - i0) : EXP_CHUNK;
        double e[EXP_CHUNK];
        for (int k = 0; k < m; k++) e[k] = -(double)x[i0 + k];
        ds3_exp_n(e, e, m);
        for (int k = 0; k < m; k++) x[i0 + k] = silu_e(x[i0 + k], e[k]);
    }
}

/*
 * In-place softmax of x[n]. Subtracting the maximum keeps exp() in range; a row
 * of all -inf (impossible under the causal mask, which always admits the
 * token itself) would give NaN, as it should.
 */
void ds3_softmax(ds3_real *x, int n) {
    ds3_real mx = x[0];
    for (int i = 1; i < n; i++) if (x[i] > mx) mx = x[i];
    double sum = 0.0, e[EXP_CHUNK];
    for (int i0 = 0; i0 < n; i0 += EXP_CHUNK) {  /* x[i] = exp(x[i] - mx), a chunk of exps at a time */
        const int m = n - i0 < EXP_CHUNK ? n - i0 : EXP_CHUNK;
        for (int k = 0; k < m; k++) e[k] = (double)(x[i0 + k] - mx);
        ds3_exp_n(e, e, m);
        for (int k = 0; k < m; k++) {
            x[i0 + k] = (ds3_real)e[k];
            sum += x[i0 + k];
        }
    }
    ds3_real inv = (ds3_real)(1.0 / sum);
    for (int i = 0; i < n; i++) x[i] *= inv;
}

/* ========================================================================== */
/* The operations as a state runs them                                         */
/* ========================================================================== */
/*
 * The forward pass computes through these, never through the kernels or the
 * emulation directly: each is the plain operation with the state's kernel
 * mode, and is also where a GPU build's rounding is reproduced when the state
 * emulates one (check/emulate.c). With emulation off each is exactly the
 * plain operation: the same bits as if the call were not there.
 */

bool ds3_decode_step(const ds3_state *s, int T) {
    return ((T == 1 && s->kernels == DS3_KERNELS_FAST) || s->decode_rows) && !s->emul;
}

/* A projection whose GPU rounding point is `point` (emulation), else a decode
 * step's product or the state's kernels'. */
static void proj(const ds3_state *s, ds3_real *out, const ds3_real *in, const ds3_tensor *w, int T, unsigned point) {
    if (s->emul) ds3_emul_linear(s->emul, s->kernels, out, in, w, T, point);
    else if (ds3_decode_step(s, T)) ds3_linear_decode(out, in, w, T);
    else ds3_linear(s->kernels, out, in, w, T);
}

void ds3_proj(const ds3_state *s, ds3_real *out, const ds3_real *in, const ds3_tensor *w, int T) {
    proj(s, out, in, w, T, DS3_EMUL_LINEAR);
}

void ds3_proj_router(const ds3_state *s, ds3_real *out, const ds3_real *in, const ds3_tensor *w, int T) {
    proj(s, out, in, w, T, DS3_EMUL_ROUTER);
}

void ds3_norm(const ds3_state *s, ds3_real *out, const ds3_real *x, const ds3_real *w, int n) {
    const double eps = s->m->cfg.rms_norm_eps;
    if (ds3_emul_has(s->emul, DS3_EMUL_NORM)) ds3_emul_rmsnorm(s->emul, out, x, w, n, eps);
    else ds3_rmsnorm(out, x, w, n, eps);
}

void ds3_rotate(const ds3_state *s, ds3_real *x, int pos) {
    const ds3_model *m = s->m;
    const int Dr = m->cfg.qk_rope_head_dim;
    if (ds3_emul_has(s->emul, DS3_EMUL_ROPE_BF16)) ds3_emul_rope(x, m->rope_freqs, m->rope_attn_factor, Dr, pos);
    else ds3_rope(x, m->rope_freqs, m->rope_attn_factor, Dr, pos);
}

ds3_real ds3_sdot(const ds3_state *s, const ds3_real *a, const ds3_real *b, int n) {
    return ds3_dot(s->kernels, a, b, n);
}

void ds3_sdot_rows(const ds3_state *s, ds3_real *out, const ds3_real *a, size_t lda, int m, const ds3_real *b, int n) {
    ds3_dot_rows(s->kernels, out, a, lda, m, b, n);
}

void ds3_dump_act(const ds3_state *s, ds3_dtype dt, int64_t width, int start, int T, const void *data,
                  const char *fmt, ...) {
    if (!s->dump) return;
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    ds3_dump_rows(s->dump, name, dt, 1, &width, start, T, data);
}

void ds3_round(const ds3_state *s, ds3_real *x, size_t n, unsigned point) {
    ds3_emul_round(s->emul, x, n, point);
}

ds3_real ds3_round_add(const ds3_state *s, ds3_real a, ds3_real b, unsigned point) {
    return ds3_emul_add(s->emul, a, b, point);
}

void ds3_round_weights(const ds3_state *s, ds3_real *w, size_t n, ds3_dtype stored) {
    ds3_emul_weights(s->emul, w, n, stored);
}

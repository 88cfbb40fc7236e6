/*
 * ops.c — the small element-wise kernels of the forward pass (SPEC §2):
 * RMSNorm, SiLU, a numerically safe softmax, and the dot product attention
 * uses.
 *
 * Sums of squares and softmax normalisers are accumulated in double whatever
 * the build's scalar type: they are O(n) reductions whose rounding would
 * otherwise grow with the width, and they cost nothing next to the GEMMs.
 */
#include "internal.h"

#include <math.h>
#include <string.h>

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

/* silu(a) = a · sigmoid(a) = a / (1 + e^-a): the gate of SwiGLU. */
ds3_real ds3_silu(ds3_real a) {
    return a / ((ds3_real)1 + (ds3_real)exp(-(double)a));
}

/*
 * In-place softmax of x[n]. Subtracting the maximum keeps exp() in range; a row
 * of all -inf (impossible under the causal mask, which always admits the
 * token itself) would give NaN, as it should.
 */
void ds3_softmax(ds3_real *x, int n) {
    ds3_real mx = x[0];
    for (int i = 1; i < n; i++) if (x[i] > mx) mx = x[i];
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        x[i] = (ds3_real)exp((double)(x[i] - mx));
        sum += x[i];
    }
    ds3_real inv = (ds3_real)(1.0 / sum);
    for (int i = 0; i < n; i++) x[i] *= inv;
}

/*
 * a · b over n elements, for attention's scores and value mixing (mla.c).
 *
 * A plain `s += a[i]*b[i]` loop is one dependency chain: each add waits for
 * the previous one, and the compiler may not reorder it (no -ffast-math), so
 * it runs at one multiply-add per add latency. Here the sum is split into
 * DOT_LANES partial sums — partial k adds the products i ≡ k (mod DOT_LANES)
 * in order — held in DOT_VECS independent vectors, then combined by a fixed
 * tree. The order is fixed by n alone, never by the caller's T, position or
 * thread, so prefill, decode and every thread count give the same bits. In
 * DS3_KERNELS_REF mode the plain sequential sum is used instead, as the
 * slow twin the tests hold this one to.
 */
typedef ds3_real dotvec __attribute__((vector_size(32)));
#define DOT_W ((int)(sizeof(dotvec) / sizeof(ds3_real)))  /* 8 floats or 4 doubles */
#define DOT_VECS 4
#define DOT_LANES (DOT_W * DOT_VECS)

ds3_real ds3_dot_ref(const ds3_real *a, const ds3_real *b, int n) {
    ds3_real s = 0;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

ds3_real ds3_dot(const ds3_real *a, const ds3_real *b, int n) {
    if (ds3_kernel_mode == DS3_KERNELS_REF) return ds3_dot_ref(a, b, n);
    dotvec acc[DOT_VECS] = {{0}};
    int i = 0;
    for (; i + DOT_LANES <= n; i += DOT_LANES)
        for (int v = 0; v < DOT_VECS; v++) {
            dotvec x, y;
            memcpy(&x, a + i + v * DOT_W, sizeof x);
            memcpy(&y, b + i + v * DOT_W, sizeof y);
            acc[v] += x * y;
        }
    if (i < n) {  /* the ragged end, zero-padded: adds exact zeros to the other lanes */
        ds3_real x[DOT_LANES] = {0}, y[DOT_LANES] = {0};
        memcpy(x, a + i, (size_t)(n - i) * sizeof(ds3_real));
        memcpy(y, b + i, (size_t)(n - i) * sizeof(ds3_real));
        for (int v = 0; v < DOT_VECS; v++) {
            dotvec xv, yv;
            memcpy(&xv, x + v * DOT_W, sizeof xv);
            memcpy(&yv, y + v * DOT_W, sizeof yv);
            acc[v] += xv * yv;
        }
    }
    dotvec t = (acc[0] + acc[2]) + (acc[1] + acc[3]);
    ds3_real l[DOT_W];
    memcpy(l, &t, sizeof l);
    ds3_real s = 0;
    for (int w = 0; w < DOT_W; w += 2) s += l[w] + l[w + 1];
    return s;
}

/*
 * y[i] += a · x[i] (y and x must not overlap). Each element is one multiply
 * and one add, rounded as written, so vectorising changes no bit; the
 * explicit vectors only make sure the compiler does.
 */
void ds3_axpy(ds3_real *restrict y, ds3_real a, const ds3_real *restrict x, int n) {
    const dotvec av = (dotvec){0} + a;
    int i = 0;
    for (; i + DOT_W <= n; i += DOT_W) {
        dotvec xv, yv;
        memcpy(&xv, x + i, sizeof xv);
        memcpy(&yv, y + i, sizeof yv);
        yv += av * xv;
        memcpy(y + i, &yv, sizeof yv);
    }
    for (; i < n; i++) y[i] += a * x[i];
}

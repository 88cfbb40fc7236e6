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
 * a · b over n elements and y += a·x, for attention (mla.c). The kernels are
 * in vecops.h, which says their order.
 *
 * A plain `s += a[i]*b[i]` loop is one dependency chain: each add waits for
 * the previous one, and the compiler may not reorder it (no -ffast-math), so
 * it runs at one multiply-add per add latency. ds3_dot's fixed lane order
 * lets SIMD run it; the order depends on n alone, never on the caller's T,
 * position or thread, so prefill, decode and every thread count give the
 * same bits. In DS3_KERNELS_REF mode the plain sequential sum is used
 * instead, as the slow twin the tests hold this one to. axpy is element-wise,
 * hence exact in every mode.
 */
#define VEC_FN(name) name##_portable
#include "vecops.h"
#undef VEC_FN

#if defined(__x86_64__) && defined(__GNUC__) && !defined(DS3_F64)
/* linear_avx2.c: the same kernels built with -mavx2 */
ds3_real ds3_dot_avx2(const ds3_real *a, const ds3_real *b, int n);
void ds3_axpy_avx2(ds3_real *restrict y, ds3_real a, const ds3_real *restrict x, int n);
#define AVX2_OK() ds3_rows_avx2_ok()
#else
#define ds3_dot_avx2 dot_portable
#define ds3_axpy_avx2 axpy_portable
#define AVX2_OK() false
#endif

ds3_real ds3_dot_ref(const ds3_real *a, const ds3_real *b, int n) {
    ds3_real s = 0;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

ds3_real ds3_dot(const ds3_real *a, const ds3_real *b, int n) {
    if (ds3_kernel_mode == DS3_KERNELS_REF) return ds3_dot_ref(a, b, n);
    return AVX2_OK() ? ds3_dot_avx2(a, b, n) : dot_portable(a, b, n);
}

void ds3_axpy(ds3_real *restrict y, ds3_real a, const ds3_real *restrict x, int n) {
    if (AVX2_OK()) ds3_axpy_avx2(y, a, x, n);
    else axpy_portable(y, a, x, n);
}

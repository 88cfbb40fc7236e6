/*
 * ops.c — the small element-wise kernels of the forward pass (SPEC §2):
 * RMSNorm, SiLU and a numerically safe softmax.
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

/*
 * vecops.h — the dot product and axpy of ops.c, included twice: by ops.c
 * (built for any CPU) and by linear_avx2.c (built with -mavx2). VEC_FN(name)
 * gives each copy its own names. Both copies do the same IEEE operations in
 * the same order (32-byte GCC/clang vectors; without AVX the compiler splits
 * each into two SSE operations), so they give the same bits; ops.c picks the
 * AVX2 copy at run time where the CPU has it.
 *
 * The dot product's order: DOT_LANES partial sums — partial k adds the
 * products i ≡ k (mod DOT_LANES) in order — held in DOT_VECS independent
 * vectors (so consecutive adds do not wait for each other), a ragged end
 * zero-padded, then combined by a fixed tree: (v0+v2)+(v1+v3), then that
 * vector's lanes pairwise, left to right.
 */
#include <string.h>

#ifndef DS3_VECOPS_TYPES
#define DS3_VECOPS_TYPES
#include "simd.h"
typedef vreal dotvec;
#define DOT_W VREAL_N  /* 8 floats or 4 doubles */
#define DOT_VECS 4
#define DOT_LANES (DOT_W * DOT_VECS)
#endif

/* One 32-byte vector of a[i..] and b[i..], multiplied into acc. */
#define DOT_STEP(acc, a, b, i)           \
    do {                                 \
        dotvec x_, y_;                   \
        memcpy(&x_, (a) + (i), sizeof x_); \
        memcpy(&y_, (b) + (i), sizeof y_); \
        VMULADD(acc, x_, y_);            \
    } while (0)

static ds3_real VEC_FN(dot)(const ds3_real *a, const ds3_real *b, int n) {
    /* four named accumulators, not an array, so they stay in registers: held
     * in memory, the store-to-load chain, not the arithmetic, sets the speed */
    dotvec a0, a1, a2, a3;
    VZERO(a0), VZERO(a1), VZERO(a2), VZERO(a3);
    int i = 0;
    for (; i + DOT_LANES <= n; i += DOT_LANES) {
        DOT_STEP(a0, a, b, i);
        DOT_STEP(a1, a, b, i + DOT_W);
        DOT_STEP(a2, a, b, i + 2 * DOT_W);
        DOT_STEP(a3, a, b, i + 3 * DOT_W);
    }
    if (i < n) {  /* the ragged end, zero-padded: adds exact zeros to the other lanes */
        ds3_real x[DOT_LANES], y[DOT_LANES];
        memset(x, 0, sizeof x);
        memset(y, 0, sizeof y);
        memcpy(x, a + i, (size_t)(n - i) * sizeof(ds3_real));
        memcpy(y, b + i, (size_t)(n - i) * sizeof(ds3_real));
        DOT_STEP(a0, x, y, 0);
        DOT_STEP(a1, x, y, DOT_W);
        DOT_STEP(a2, x, y, 2 * DOT_W);
        DOT_STEP(a3, x, y, 3 * DOT_W);
    }
    dotvec t;
    VTREE4(t, a0, a1, a2, a3);
    ds3_real l[DOT_W];
    memcpy(l, &t, sizeof l);
    ds3_real s = 0;
    for (int w = 0; w < DOT_W; w += 2) s += l[w] + l[w + 1];
    return s;
}

/* y[i] += a · x[i]: one multiply and one add per element, rounded as written. */
static void VEC_FN(axpy)(ds3_real *restrict y, ds3_real a, const ds3_real *restrict x, int n) {
    dotvec av;
    VSET1(av, a);
    int i = 0;
    for (; i + DOT_W <= n; i += DOT_W) {
        dotvec xv, yv;
        memcpy(&xv, x + i, sizeof xv);
        memcpy(&yv, y + i, sizeof yv);
        VMULADD(yv, av, xv);
        memcpy(y + i, &yv, sizeof yv);
    }
    for (; i < n; i++) y[i] += a * x[i];
}

/*
 * y[i] += a[0]·x_0[i], then += a[1]·x_1[i], … for the m rows x_d = x + d·ldx:
 * each element gets the operations of m axpy calls in turn, in the same order
 * (the same bits), but each vector of y is loaded and stored once per four
 * rows instead of once per row: what a weighted sum over many rows (attention's
 * Σ_t P_t v_t, the absorbed query's Σ_d q_d W^UK_d) is bound by.
 */
static void VEC_FN(axpy_rows)(ds3_real *restrict y, const ds3_real *a, const ds3_real *restrict x, int m,
                              size_t ldx, int n) {
    int d = 0;
    for (; d + 4 <= m; d += 4) {
        const ds3_real *x0 = x + (size_t)d * ldx, *x1 = x0 + ldx, *x2 = x1 + ldx, *x3 = x2 + ldx;
        dotvec a0, a1, a2, a3;
        VSET1(a0, a[d]); VSET1(a1, a[d + 1]); VSET1(a2, a[d + 2]); VSET1(a3, a[d + 3]);
        int i = 0;
        for (; i + DOT_W <= n; i += DOT_W) {
            dotvec yv, xv;
            memcpy(&yv, y + i, sizeof yv);
            memcpy(&xv, x0 + i, sizeof xv);
            VMULADD(yv, a0, xv);
            memcpy(&xv, x1 + i, sizeof xv);
            VMULADD(yv, a1, xv);
            memcpy(&xv, x2 + i, sizeof xv);
            VMULADD(yv, a2, xv);
            memcpy(&xv, x3 + i, sizeof xv);
            VMULADD(yv, a3, xv);
            memcpy(y + i, &yv, sizeof yv);
        }
        for (; i < n; i++) {
            y[i] += a[d] * x0[i];
            y[i] += a[d + 1] * x1[i];
            y[i] += a[d + 2] * x2[i];
            y[i] += a[d + 3] * x3[i];
        }
    }
    for (; d < m; d++) VEC_FN(axpy)(y, a[d], x + (size_t)d * ldx, n);
}


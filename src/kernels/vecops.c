/*
 * vecops.c — the dot product and axpy of attention (src/model/mla.c): a·b
 * over n elements and y += a·x. The kernels are in vecops.h, which says
 * their order; linear_avx2.c builds the same ones with AVX2.
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
#include "kernels/kernels.h"

#define VEC_FN(name) name##_portable
#include "vecops.h"
#undef VEC_FN

#if DS3_AVX2_COPY && !defined(DS3_F64)
/* linear_avx2.c: the same kernels built with -mavx2 */
ds3_real ds3_dot_avx2(const ds3_real *a, const ds3_real *b, int n);
void ds3_axpy_avx2(ds3_real *restrict y, ds3_real a, const ds3_real *restrict x, int n);
void ds3_axpy_rows_avx2(ds3_real *restrict y, const ds3_real *a, const ds3_real *restrict x, int m, size_t ldx,
                        int n);
int ds3_dot_rows_avx512(ds3_real *out, const ds3_real *a, size_t lda, int m, const ds3_real *b, int n);
bool ds3_axpy_rows_avx512(ds3_real *restrict y, const ds3_real *a, const ds3_real *restrict x, int m, size_t ldx,
                          int n);
#define AVX2_OK() ds3_rows_avx2_ok()
#else
#define ds3_dot_rows_avx512(out, a, lda, m, b, n) 0
#define ds3_axpy_rows_avx512(y, a, x, m, ldx, n) false
#define ds3_dot_avx2 dot_portable
#define ds3_axpy_avx2 axpy_portable
#define ds3_axpy_rows_avx2 axpy_rows_portable
#define AVX2_OK() false
#endif

ds3_real ds3_dot_ref(const ds3_real *a, const ds3_real *b, int n) {
    ds3_real s = 0;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

ds3_real ds3_dot(ds3_kernels k, const ds3_real *a, const ds3_real *b, int n) {
    if (k == DS3_KERNELS_REF) return ds3_dot_ref(a, b, n);
    return AVX2_OK() ? ds3_dot_avx2(a, b, n) : dot_portable(a, b, n);
}

void ds3_dot_rows(ds3_kernels k, ds3_real *out, const ds3_real *a, size_t lda, int m, const ds3_real *b, int n) {
    int g = k != DS3_KERNELS_REF && AVX2_OK() ? ds3_dot_rows_avx512(out, a, lda, m, b, n) : 0;
    for (; g < m; g++) out[g] = ds3_dot(k, a + (size_t)g * lda, b, n);
}

void ds3_axpy(ds3_real *restrict y, ds3_real a, const ds3_real *restrict x, int n) {
    if (AVX2_OK()) ds3_axpy_avx2(y, a, x, n);
    else axpy_portable(y, a, x, n);
}

void ds3_axpy_rows(ds3_real *restrict y, const ds3_real *a, const ds3_real *restrict x, int m, size_t ldx, int n) {
    if (AVX2_OK()) {
        if (!ds3_axpy_rows_avx512(y, a, x, m, ldx, n)) ds3_axpy_rows_avx2(y, a, x, m, ldx, n);
    } else {
        axpy_rows_portable(y, a, x, m, ldx, n);
    }
}

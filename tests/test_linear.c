/*
 * test_linear.c — the projection kernel: the BLAS path against its plain-loop
 * twin and both against a double-precision reference, for every weight dtype
 * (F8_E4M3 with edge blocks included), and bit-identical results for 1 and 2
 * threads.
 */
#include "harness.h"
#include "internal.h"

#include <stdlib.h>

#ifdef _OPENMP
#include <omp.h>
#endif

enum { ROWS = 300, COLS = 200, T = 7 };

static uint64_t rng = 88172645463325252ull;
static double urand(void) {  /* xorshift64, uniform in [-1, 1) */
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (double)(rng >> 11) * 0x1.0p-53 * 2 - 1;
}

/* storage for one weight of each dtype */
static float w32[ROWS * COLS];
static uint16_t w16[ROWS * COLS], wb16[ROWS * COLS];
static uint8_t w8[ROWS * COLS];
static float sc8[3 * 2];

static void run_case(const char *name, const ds3_tensor *w, const ds3_real *x) {
    static ds3_real a[T * ROWS], b[T * ROWS];
    static double ref[T * ROWS], got[T * ROWS];
    /* double reference from the dequantised weights */
    for (int t = 0; t < T; t++)
        for (int i = 0; i < ROWS; i++) {
            double s = 0;
            for (int j = 0; j < COLS; j++) s += (double)x[t * COLS + j] * ds3_tensor_get(w, i, j);
            ref[t * ROWS + i] = s;
        }
    double tol = sizeof(ds3_real) == 4 ? 1e-5 : 1e-13;
    char what[96];

    ds3_linear_ref(a, x, w, T);
    for (int i = 0; i < T * ROWS; i++) got[i] = a[i];
    snprintf(what, sizeof what, "%s plain vs double", name);
    th_check_close(what, got, ref, T * ROWS, tol, tol);

    bool saved = ds3_use_blas;
    ds3_use_blas = true;
    ds3_linear(b, x, w, T);
    ds3_use_blas = saved;
    for (int i = 0; i < T * ROWS; i++) got[i] = b[i];
    snprintf(what, sizeof what, "%s %s vs double", name, ds3_have_blas() ? "BLAS" : "default");
    th_check_close(what, got, ref, T * ROWS, tol, tol);

    /* one token goes through the plain path: bit-identical to row 0 of it */
    ds3_real one[ROWS];
    ds3_linear(one, x, w, 1);
    CHECK(memcmp(one, a, sizeof one) == 0, "%s: T=1 equals the plain path's first row bit for bit", name);
}

int main(void) {
    static ds3_real x[T * COLS];
    for (int i = 0; i < T * COLS; i++) x[i] = (ds3_real)urand();
    for (int i = 0; i < ROWS * COLS; i++) {
        float v = (float)(urand() * 0.1);
        w32[i] = v;
        wb16[i] = ds3_f32_to_bf16(v);
        w16[i] = ds3_f32_to_f16(v);
    }
    /* FP8: 300×200 gives 3×2 scale blocks, the last row and column blocks partial */
    for (int b = 0; b < 6; b++) sc8[b] = (float)(0.001 * (b + 1));
    for (int i = 0; i < ROWS; i++)
        for (int j = 0; j < COLS; j++) w8[i * COLS + j] = ds3_f32_to_e4m3((float)(urand() * 400));

    ds3_tensor t32 = {"w.f32", DS3_DT_F32, ROWS, COLS, w32, NULL};
    ds3_tensor tb16 = {"w.bf16", DS3_DT_BF16, ROWS, COLS, wb16, NULL};
    ds3_tensor t16 = {"w.f16", DS3_DT_F16, ROWS, COLS, w16, NULL};
    ds3_tensor t8 = {"w.fp8", DS3_DT_F8_E4M3, ROWS, COLS, w8, sc8};
    run_case("F32", &t32, x);
    run_case("BF16", &tb16, x);
    run_case("F16", &t16, x);
    run_case("F8_E4M3", &t8, x);

    th_section("thread-count invariance");
    static ds3_real r1[T * ROWS], r2[T * ROWS], p1[T * ROWS], p2[T * ROWS];
#ifdef _OPENMP
    omp_set_num_threads(1);
#endif
    ds3_linear(r1, x, &t8, T);
    ds3_linear_ref(p1, x, &t8, T);
#ifdef _OPENMP
    omp_set_num_threads(2);
#endif
    ds3_linear(r2, x, &t8, T);
    ds3_linear_ref(p2, x, &t8, T);
    CHECK(memcmp(r1, r2, sizeof r1) == 0, "default path: 1 and 2 threads give the same bits");
    CHECK(memcmp(p1, p2, sizeof p1) == 0, "plain path: 1 and 2 threads give the same bits");

    /* Shapes on which a threaded OpenBLAS 0.3.21 sgemm gave different bits for
     * 1 and 2 threads (M = tokens, N = rows, K = cols). */
    static const int shapes[][3] = {{64, 512, 320}, {20, 200, 72}, {256, 24, 200}, {7, 128, 320}};
    for (int k = 0; k < 4; k++) {
        int M = shapes[k][0], R = shapes[k][1], Cc = shapes[k][2];
        ds3_real *xi = malloc(sizeof(ds3_real) * M * Cc), *o1 = malloc(sizeof(ds3_real) * M * R),
                 *o2 = malloc(sizeof(ds3_real) * M * R);
        float *wv = malloc(sizeof(float) * R * Cc);
        for (int i = 0; i < M * Cc; i++) xi[i] = (ds3_real)urand();
        for (int i = 0; i < R * Cc; i++) wv[i] = (float)urand();
        ds3_tensor tw = {"w.shape", DS3_DT_F32, R, Cc, wv, NULL};
#ifdef _OPENMP
        omp_set_num_threads(1);
#endif
        ds3_linear(o1, xi, &tw, M);
#ifdef _OPENMP
        omp_set_num_threads(2);
#endif
        ds3_linear(o2, xi, &tw, M);
        CHECK(memcmp(o1, o2, sizeof(ds3_real) * M * R) == 0, "M=%d N=%d K=%d: 1 and 2 threads give the same bits",
              M, R, Cc);
        free(xi); free(o1); free(o2); free(wv);
    }
    ds3_linear_release();
    return th_finish();
}

/*
 * test_linear.c — the projection kernel: the BLAS path against its plain-loop
 * twin and both against a double-precision reference, for every weight dtype
 * (F8_E4M3 with edge blocks included), and bit-identical results for 1 and 2
 * threads.
 */
#include "harness.h"
#include "generate/generate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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
    ds3_linear(DS3_KERNELS_FAST, b, x, w, T);
    ds3_use_blas = saved;
    for (int i = 0; i < T * ROWS; i++) got[i] = b[i];
    snprintf(what, sizeof what, "%s %s vs double", name, ds3_have_blas() ? "BLAS" : "default");
    th_check_close(what, got, ref, T * ROWS, tol, tol);

    /* one token takes the lane kernel: within the same bound of the plain path */
    ds3_real one[ROWS];
    double g1[ROWS], r1[ROWS];
    ds3_linear(DS3_KERNELS_FAST, one, x, w, 1);
    for (int i = 0; i < ROWS; i++) { g1[i] = one[i]; r1[i] = a[i]; }
    snprintf(what, sizeof what, "%s T=1 vs plain", name);
    th_check_close(what, g1, r1, ROWS, tol, tol);
}

/*
 * The AMX product (linear_amx.c), where it runs. Three kinds of check:
 *  - exact: with w a signed permutation whose entries are powers of two, every
 *    product and sum is exact, so out must be x permuted and scaled, bit for
 *    bit: the three-part split, the packing and the transposed store all right
 *    (a split that dropped x3 fails it: random x uses all 24 bits);
 *  - against float64, per element within the bound on an fp32 sum of 3·cols
 *    exact products, |err| <= 3·cols·2^-24·Σ|x·w| (and the BLAS path within
 *    its own cols·2^-24·Σ|x·w|);
 *  - the same bits for 1 and 2 threads, and for a token whatever T.
 * Shapes with rows not a multiple of 16 and cols not of 32 (the padded copy),
 * T not of 16 or 32 (the token tail) and T over several packed chunks are
 * among them. Fast mode's FP8 calls of a few tokens take linear_fp8.c's
 * product instead; it is switched off here, so that every call with T >= 2
 * is AMX's (and the comparison path the lane kernel or BLAS).
 */
static void amx_checks(int fp8) {
    const bool fp8_rows = ds3_fp8_rows_ok();
    ds3_fp8_rows_select(false);
    /* the last: T spans four chunks of token blocks (linear_amx.c packs ~1 MiB at a time) */
    static const int shapes[][3] = {{2, 16, 32}, {17, 48, 64}, {33, 40, 200}, {70, 300, 200}, {64, 256, 1024},
                                    {200, 48, 2048}};
    const char *dt = fp8 ? "FP8" : "BF16";
    for (int k = 0; k < 6; k++) {
        const int M = shapes[k][0], R = shapes[k][1], C = shapes[k][2];
        const int SR = (R + 127) / 128, SC = (C + 127) / 128;
        ds3_real *x = malloc(sizeof(ds3_real) * M * C), *o = malloc(sizeof(ds3_real) * M * R),
                 *o2 = malloc(sizeof(ds3_real) * M * R), *want = malloc(sizeof(ds3_real) * M * R);
        uint16_t *wv = malloc(sizeof(uint16_t) * R * C);
        unsigned char *q = malloc((size_t)R * C);
        float *sc = malloc(sizeof(float) * SR * SC);
        for (int i = 0; i < M * C; i++) x[i] = (ds3_real)urand();
        ds3_tensor tw = fp8 ? (ds3_tensor){"w.amx", DS3_DT_F8_E4M3, R, C, q, sc, NULL, NULL}
                            : (ds3_tensor){"w.amx", DS3_DT_BF16, R, C, wv, NULL, NULL, NULL};

        /* exact: row n of w is ±2^e at column (7n + 3) mod C (FP8: a code 2^e2 times a
         * power-of-two scale) */
        memset(wv, 0, sizeof(uint16_t) * R * C);
        memset(q, 0, (size_t)R * C);
        for (int b = 0; b < SR * SC; b++) sc[b] = ldexpf(1.0f, b % 3 - 1);
        for (int n = 0; n < R; n++) {
            const int j = (7 * n + 3) % C;
            float v = ldexpf(n % 3 ? 1.0f : -1.0f, n % 5 - 2);
            if (fp8) {
                q[(size_t)n * C + j] = ds3_f32_to_e4m3(v);
                v *= sc[(n / 128) * SC + j / 128];
            } else {
                wv[(size_t)n * C + j] = ds3_f32_to_bf16(v);
            }
            for (int t = 0; t < M; t++) want[t * R + n] = v * x[t * C + j];
        }
        ds3_linear(DS3_KERNELS_FAST, o, x, &tw, M);
        CHECK(memcmp(o, want, sizeof(ds3_real) * M * R) == 0,
              "%s, T=%d, %d x %d, w a scaled permutation: out is x permuted and scaled, exactly", dt, M, R, C);

        /* random weights against float64, and the BLAS path. An FP8 output is
         * Σ_b s_b · (the fp32 sum of block b's 3·128 exact products): within
         * (3·cols + 2·blocks)·2^-24·Σ|xw| */
        for (int i = 0; i < R * C; i++) wv[i] = ds3_f32_to_bf16((float)(urand() * 0.1));
        for (int i = 0; i < R * C; i++) q[i] = ds3_f32_to_e4m3((float)(urand() * 400));
        for (int b = 0; b < SR * SC; b++) sc[b] = (float)(0.0003 * (b % 7 + 1));
        ds3_linear(DS3_KERNELS_FAST, o, x, &tw, M);
        ds3_linear_select_amx(false);
        ds3_linear(DS3_KERNELS_FAST, o2, x, &tw, M);
        ds3_linear_select_amx(true);
        int over = 0, over_blas = 0;
        double worst = 0;
        for (int t = 0; t < M; t++)
            for (int n = 0; n < R; n++) {
                double ref = 0, mag = 0;
                for (int j = 0; j < C; j++) {
                    double wj = fp8 ? (double)ds3_e4m3_table[q[(size_t)n * C + j]] * sc[(n / 128) * SC + j / 128]
                                    : ds3_bf16_to_f32(wv[(size_t)n * C + j]);
                    double p = (double)x[t * C + j] * wj;
                    ref += p;
                    mag += fabs(p);
                }
                double err = fabs(o[t * R + n] - ref), bound = (3.0 * C + (fp8 ? 2 * SC : 0)) * 0x1p-24 * mag;
                if (err / bound > worst) worst = err / bound;
                over += err > bound;
                /* the BLAS path rounds an FP8 weight once (value·scale), then cols products */
                over_blas += fabs(o2[t * R + n] - ref) > (fp8 ? 2.0 : 1.0) * C * 0x1p-24 * mag;
            }
        CHECK(over == 0 && over_blas == 0,
              "%s, T=%d, %d x %d: AMX within %s2^-24·Σ|xw| of float64 (%d over; worst %.3f of it), BLAS path "
              "within %scols·2^-24·Σ|xw| (%d over)", dt, M, R, C, fp8 ? "(3·cols + 2·blocks)·" : "3·cols·", over,
              worst, fp8 ? "2·" : "", over_blas);

        /* weights 8 bytes past a cache line, as safetensors may place them
         * (linear_amx.c copies such rows to an aligned buffer): the same bits */
        if (!fp8) {
            unsigned char *mis = malloc((size_t)R * C * 2 + 128);
            unsigned char *at = mis + (64 - (uintptr_t)mis % 64) % 64 + 8;
            memcpy(at, wv, (size_t)R * C * 2);
            ds3_tensor tm = tw;
            tm.data = at;
            ds3_linear(DS3_KERNELS_FAST, o2, x, &tm, M);
            CHECK(memcmp(o, o2, sizeof(ds3_real) * M * R) == 0,
                  "%s, T=%d, %d x %d: weights 8 bytes past a cache line give the same bits", dt, M, R, C);
            free(mis);
        }

        /* threads, and T */
#ifdef _OPENMP
        omp_set_num_threads(1);
        ds3_linear(DS3_KERNELS_FAST, o2, x, &tw, M);
        omp_set_num_threads(2);
        CHECK(memcmp(o, o2, sizeof(ds3_real) * M * R) == 0, "%s, T=%d, %d x %d: 1 and 2 threads give the same bits",
              dt, M, R, C);
#endif
        int diff = 0;
        for (int t0 = 0; t0 + 2 <= M; t0 += 5) {
            ds3_linear(DS3_KERNELS_FAST, o2, x + t0 * C, &tw, 2);
            diff += memcmp(o + t0 * R, o2, sizeof(ds3_real) * 2 * R) != 0;
        }
        CHECK(diff == 0, "%s, T=%d, %d x %d: tokens computed two at a time give the same bits (%d pairs differ)", dt,
              M, R, C, diff);
        free(x); free(o); free(o2); free(want); free(wv); free(q); free(sc);
    }
    if (fp8) {
        /* a NaN code makes its outputs NaN, and only those rows' */
        const int M = 4, R = 32, C = 128;
        ds3_real x[4 * 128], o[4 * 32];
        unsigned char q[32 * 128];
        float sc1 = 0.5f;
        for (int i = 0; i < M * C; i++) x[i] = (ds3_real)urand();
        for (int i = 0; i < R * C; i++) q[i] = ds3_f32_to_e4m3((float)(urand() * 4));
        q[5 * C + 17] = 0x7f, q[20 * C + 3] = 0xff;
        ds3_tensor tn = {"w.nan", DS3_DT_F8_E4M3, R, C, q, &sc1, NULL, NULL};
        ds3_linear(DS3_KERNELS_FAST, o, x, &tn, M);
        int bad = 0;
        for (int t = 0; t < M; t++)
            for (int n = 0; n < R; n++) bad += isnan(o[t * R + n]) != (n == 5 || n == 20);
        CHECK(bad == 0, "FP8: NaN codes 0x7f and 0xff give NaN outputs in their rows only (%d wrong)", bad);
    }
    ds3_fp8_rows_select(fp8_rows);
}

/*
 * The plain-C twin of linear_fp8.c: the operations it documents, one element
 * at a time, with the exact code values and C's fmaf — lane l of a block sums
 * columns ≡ l (mod 16) from zero (a chunk of 32 padded with 0·0), the row adds
 * each block's lane times its scale with one more fmaf, the lanes are summed
 * by the tree (l0 + l2) + (l1 + l3) per quarter, then (q0 + q2) + (q1 + q3).
 */
static float fp8_rows_twin(const unsigned char *q, const float *sc, int C, int i, const ds3_real *x) {
    const int SC = (C + 127) / 128;
    float acc[16] = {0};
    for (int j0 = 0, b = 0; j0 < C; j0 += 128, b++) {
        const int j1 = j0 + 128 < C ? j0 + 128 : C;
        float blk[16] = {0};
        for (int j = j0; j < j1; j += 16)
            for (int l = 0; l < 16; l++) {
                const bool in = j + l < j1;
                blk[l] = fmaf(in ? ds3_e4m3_table[q[(size_t)i * C + j + l]] : 0.0f, in ? (float)x[j + l] : 0.0f,
                              blk[l]);
            }
        if ((j1 - j0) % 32 > 0 && (j1 - j0) % 32 <= 16)  /* the padded chunk's second half */
            for (int l = 0; l < 16; l++) blk[l] = fmaf(0.0f, 0.0f, blk[l]);
        const float s = sc ? sc[(i / 128) * SC + b] : 1.0f;
        for (int l = 0; l < 16; l++) acc[l] = fmaf(blk[l], s, acc[l]);
    }
    float qs[4];
    for (int k = 0; k < 4; k++) qs[k] = (acc[4 * k] + acc[4 * k + 2]) + (acc[4 * k + 1] + acc[4 * k + 3]);
    return (qs[0] + qs[2]) + (qs[1] + qs[3]);
}

/*
 * Fast mode's decode-step product for FP8 weights (linear_fp8.c), where it
 * runs: bit for bit its plain-C twin (every finite code, subnormals and zeros
 * included, scales that are not powers of two, the edges of rows, columns and
 * blocks); within (cols + 2·blocks)·2^-24·Σ|xw| of float64; the same bits for
 * each token whatever T, for 1 and 2 threads, with and without the block
 * record; NaN codes NaN in their rows only; ds3_linear_decode takes it.
 */
static void fp8_rows_checks(void) {
    static const int shapes[][3] = {{1, 5, 16}, {3, 9, 40}, {2, 33, 200}, {5, 300, 200}, {1, 256, 1024},
                                    {4, 37, 2048}, {17, 130, 384}};
    for (int k = 0; k < 7; k++) {
        const int M = shapes[k][0], R = shapes[k][1], C = shapes[k][2];
        const int SR = (R + 127) / 128, SC = (C + 127) / 128;
        ds3_real *x = malloc(sizeof(ds3_real) * M * C), *o = malloc(sizeof(ds3_real) * M * R),
                 *o2 = malloc(sizeof(ds3_real) * M * R);
        unsigned char *q = malloc((size_t)R * C);
        float *sc = malloc(sizeof(float) * SR * SC);
        _Atomic unsigned char *seen = calloc((size_t)SR * SC, 1);
        for (int i = 0; i < M * C; i++) x[i] = (ds3_real)urand();
        for (int i = 0; i < R * C; i++) {  /* every finite code, uniformly: zeros and subnormals too */
            q[i] = (unsigned char)(rng >> 56);
            urand();
            if ((q[i] & 0x7f) == 0x7f) q[i] ^= 1;
        }
        for (int b = 0; b < SR * SC; b++) sc[b] = (float)(0.0003 * (b % 7 + 1));
        ds3_tensor tw = {"w.fp8rows", DS3_DT_F8_E4M3, R, C, q, sc, seen, NULL};

        ds3_linear_fp8_rows(o, x, &tw, M);
        int twin = 0, over = 0;
        double worst = 0;
        for (int t = 0; t < M; t++)
            for (int n = 0; n < R; n++) {
                const float want = fp8_rows_twin(q, sc, C, n, x + (size_t)t * C);
                twin += memcmp(&want, &o[t * R + n], sizeof want) != 0;
                double ref = 0, mag = 0;
                for (int j = 0; j < C; j++) {
                    double p = (double)x[t * C + j] * ds3_e4m3_table[q[(size_t)n * C + j]] * sc[(n / 128) * SC + j / 128];
                    ref += p;
                    mag += fabs(p);
                }
                const double err = fabs(o[t * R + n] - ref), bound = (C + 2.0 * SC) * 0x1p-24 * mag;
                if (bound > 0 && err / bound > worst) worst = err / bound;
                over += err > bound;
            }
        CHECK(twin == 0, "FP8 decode product, T=%d, %d x %d: bit for bit its plain-C twin (%d of %d differ)", M, R, C,
              twin, M * R);
        CHECK(over == 0, "FP8 decode product, T=%d, %d x %d: within (cols + 2·blocks)·2^-24·Σ|xw| of float64 (%d "
              "over; worst %.3f of it)", M, R, C, over, worst);

        int diff = 0;
        for (int t = 0; t < M; t++) {
            ds3_linear_fp8_rows(o2, x + (size_t)t * C, &tw, 1);
            diff += memcmp(o + (size_t)t * R, o2, sizeof(ds3_real) * R) != 0;
        }
        CHECK(diff == 0, "FP8 decode product, T=%d, %d x %d: each token alone gives its bits (%d differ)", M, R, C,
              diff);
        tw.fp8_seen = NULL;  /* no block record: the NaN-aware decoder throughout */
        ds3_linear_fp8_rows(o2, x, &tw, M);
        CHECK(memcmp(o, o2, sizeof(ds3_real) * M * R) == 0,
              "FP8 decode product, T=%d, %d x %d: the same bits without the block record", M, R, C);
        tw.fp8_seen = seen;
        int wrong = 0;
        for (int b = 0; b < SR * SC; b++) wrong += seen[b] != 1;
        CHECK(wrong == 0, "FP8 decode product, %d x %d: every block recorded as free of NaN codes (%d not)", R, C,
              wrong);
#ifdef _OPENMP
        omp_set_num_threads(1);
        ds3_linear_fp8_rows(o2, x, &tw, M);
        omp_set_num_threads(2);
        CHECK(memcmp(o, o2, sizeof(ds3_real) * M * R) == 0,
              "FP8 decode product, T=%d, %d x %d: 1 and 2 threads give the same bits", M, R, C);
#endif
        ds3_linear_decode(o2, x, &tw, M);
        CHECK(memcmp(o, o2, sizeof(ds3_real) * M * R) == 0 || !ds3_have_blas(),
              "T=%d, %d x %d: ds3_linear_decode is the FP8 decode product", M, R, C);
        if (k == 3) {  /* unscaled codes: scale 1 */
            tw.scale_inv = NULL;
            ds3_linear_fp8_rows(o2, x, &tw, 1);
            int bad = 0;
            for (int n = 0; n < R; n++) {
                const float want = fp8_rows_twin(q, NULL, C, n, x);
                bad += memcmp(&want, &o2[n], sizeof want) != 0;
            }
            CHECK(bad == 0, "FP8 decode product, unscaled codes: bit for bit its twin (%d differ)", bad);
        }
        free(x); free(o); free(o2); free(q); free(sc); free((void *)seen);
    }
    /* NaN codes: NaN outputs in their rows only, in a full chunk and in a row's
     * last, partial one; with the block record (learned: marked 2) and without */
    const int M = 3, R = 12, C = 200;
    ds3_real x[3 * 200], o[3 * 12];
    unsigned char q[12 * 200];
    float sc2[2] = {0.5f, 0.25f};
    _Atomic unsigned char seen[2] = {0, 0};
    for (int i = 0; i < M * C; i++) x[i] = (ds3_real)urand();
    for (int i = 0; i < R * C; i++) q[i] = ds3_f32_to_e4m3((float)(urand() * 4));
    q[2 * C + 17] = 0x7f, q[9 * C + 197] = 0xff;
    for (int rec = 0; rec < 2; rec++) {
        ds3_tensor tn = {"w.nan", DS3_DT_F8_E4M3, R, C, q, sc2, rec ? seen : NULL, NULL};
        ds3_linear_fp8_rows(o, x, &tn, M);
        int bad = 0;
        for (int t = 0; t < M; t++)
            for (int n = 0; n < R; n++) bad += isnan(o[t * R + n]) != (n == 2 || n == 9);
        CHECK(bad == 0, "FP8 decode product, %s the block record: NaN codes 0x7f and 0xff give NaN in their rows "
              "only (%d wrong)", rec ? "with" : "without", bad);
    }
    CHECK(seen[0] == 2 && seen[1] == 2, "FP8 decode product: both blocks recorded as holding a NaN code (%d, %d)",
          seen[0], seen[1]);
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

    ds3_tensor t32 = {"w.f32", DS3_DT_F32, ROWS, COLS, w32, NULL, NULL, NULL};
    ds3_tensor tb16 = {"w.bf16", DS3_DT_BF16, ROWS, COLS, wb16, NULL, NULL, NULL};
    ds3_tensor t16 = {"w.f16", DS3_DT_F16, ROWS, COLS, w16, NULL, NULL, NULL};
    ds3_tensor t8 = {"w.fp8", DS3_DT_F8_E4M3, ROWS, COLS, w8, sc8, NULL, NULL};
    run_case("F32", &t32, x);
    run_case("BF16", &tb16, x);
    run_case("F16", &t16, x);
    run_case("F8_E4M3", &t8, x);

    th_section("lane kernel: portable vs AVX2 copy, and any T gives the same bits");
    {
        const ds3_tensor *ts[4] = {&t32, &tb16, &t16, &t8};
        static ds3_real dA[2][T * ROWS], dB[2][T * ROWS];
        int ncopies = ds3_lanes_select_avx2(true) ? 2 : 1;
        if (ncopies == 1) fprintf(stderr, "   (no AVX2 on this CPU: portable copy only)\n");
        /* Token counts around the kernels' blocks (lanes.h: one token; up to four per
         * row; tiles of four rows by three tokens, TILE_TOKENS at a time), and a row
         * count that leaves a ragged group of rows (299: three rows past a group of four). */
        enum { TMAX = 70 };
        static const int Ts[] = {2, 3, 4, 5, T, 64, TMAX};
        static ds3_real xm[TMAX * COLS], mA[2][TMAX * ROWS], mB[2][TMAX * ROWS];
        for (int i = 0; i < TMAX * COLS; i++) xm[i] = (ds3_real)urand();
        for (int k = 0; k < 4; k++) {
            for (int c = 0; c < ncopies; c++) {
                ds3_lanes_select_avx2(c == 1);
                ds3_linear(DS3_KERNELS_DETERMINISTIC, dA[c], x, ts[k], T);                     /* all tokens at once */
                for (int t = 0; t < T; t++)                             /* one at a time */
                    ds3_linear(DS3_KERNELS_DETERMINISTIC, dB[c] + t * ROWS, x + t * COLS, ts[k], 1);
                CHECK(memcmp(dA[c], dB[c], sizeof dA[c]) == 0, "%s copy %d: T=%d and T=1 give the same bits",
                      ts[k]->name, c, T);
                for (int rr = 0; rr < 2; rr++) {
                    ds3_tensor w = *ts[k];
                    w.rows = rr ? ROWS - 1 : ROWS;
                    for (int t = 0; t < TMAX; t++)
                        ds3_linear(DS3_KERNELS_DETERMINISTIC, mB[c] + t * w.rows, xm + t * COLS, &w, 1);
                    int bad = 0;
                    for (size_t n = 0; n < sizeof Ts / sizeof Ts[0]; n++) {
                        ds3_linear(DS3_KERNELS_DETERMINISTIC, mA[c], xm, &w, Ts[n]);
                        bad += memcmp(mA[c], mB[c], sizeof(ds3_real) * (size_t)(Ts[n] * w.rows)) != 0;
                    }
                    CHECK(bad == 0, "%s copy %d, %d rows: T = 2, 3, 4, 5, 7, 64, 70 give T=1's bits (%d differ)",
                          ts[k]->name, c, (int)w.rows, bad);
                }
            }
            if (ncopies == 2)
                CHECK(memcmp(dA[0], dA[1], sizeof dA[0]) == 0 && memcmp(mA[0], mA[1], sizeof mA[0]) == 0,
                      "%s: portable and AVX2 copies give the same bits", ts[k]->name);
            /* The AVX2 copy's tiles 512 bits wide (linear_avx2.c), where the CPU has AVX-512:
             * the same bits as 256 bits wide, for T = 64 and 70 (whole and ragged groups of four). */
            if (ncopies == 2 && ds3_lanes_select_avx512(true)) {
                ds3_lanes_select_avx2(true);
                int bad = 0;
                for (int n = 5; n < 7; n++) {
                    ds3_lanes_select_avx512(true);
                    ds3_linear(DS3_KERNELS_DETERMINISTIC, mA[0], xm, ts[k], Ts[n]);
                    ds3_lanes_select_avx512(false);
                    ds3_linear(DS3_KERNELS_DETERMINISTIC, mA[1], xm, ts[k], Ts[n]);
                    bad += memcmp(mA[0], mA[1], sizeof(ds3_real) * (size_t)(Ts[n] * ROWS)) != 0;
                }
                ds3_lanes_select_avx512(true);
                CHECK(bad == 0, "%s: the tiles 512 and 256 bits wide give the same bits (%d differ)", ts[k]->name, bad);
            } else if (k == 0) {
                fprintf(stderr, "   (no AVX-512 on this CPU or in this build: the wide tiles are not compared)\n");
            }
        }

        /* Every e4m3 code through both copies, fused (T=1) and buffered (T=2):
         * row r holds code r then zeros, x = e_0, so out[r] = value(r) · scale. */
        static uint8_t codes[256 * 16];
        float sc[2] = {0.5f, 0.5f};  /* [ceil(256/128)][ceil(16/128)] */
        memset(codes, 0, sizeof codes);
        for (int r = 0; r < 256; r++) codes[r * 16] = (uint8_t)r;
        ds3_tensor tc = {"codes", DS3_DT_F8_E4M3, 256, 16, codes, sc, NULL, NULL};
        ds3_real e0[2 * 16] = {0}, o1[256], o2[2 * 256];
        e0[0] = 1; e0[16] = 1;
        for (int c = 0; c < ncopies; c++) {
            ds3_lanes_select_avx2(c == 1);
            ds3_linear(DS3_KERNELS_FAST, o1, e0, &tc, 1);
            ds3_linear(DS3_KERNELS_DETERMINISTIC, o2, e0, &tc, 2);
            int bad = 0;
            for (int r = 0; r < 256; r++) {
                ds3_real want = (ds3_real)ds3_e4m3_table[r] * (ds3_real)0.5f;
                for (int v = 0; v < 2; v++) {
                    ds3_real got = v ? o2[r] : o1[r];
                    /* (a −0 code sums to +0: the accumulator starts at +0) */
                    bool same = isnan(want) ? isnan(got) : got == want;
                    if (!same && bad++ < 4) fprintf(stderr, "   code 0x%02x: got %g want %g\n", r, (double)got, (double)want);
                }
            }
            CHECK(bad == 0, "copy %d: all 256 e4m3 codes decode exactly (%d wrong)", c, bad);
        }
        ds3_lanes_select_avx2(true);
    }

#ifndef DS3_F64
    th_section("decode's four-row loop on a BF16 copy with its rows interleaved (ds3_tensor.rows4): the same bits");
    {
        /* the layout kernels.h documents, written out here: for row group g and
         * columns j..j+7, rows 4g..4g+3's eight values side by side */
        static uint16_t il[ROWS * COLS];
        for (int g = 0; g < ROWS / 4; g++)
            for (int j = 0; j < COLS; j += 8)
                for (int r = 0; r < 4; r++)
                    memcpy(il + (size_t)g * 4 * COLS + (size_t)j * 4 + (size_t)r * 8, wb16 + (size_t)(4 * g + r) * COLS + j,
                           16);
        ds3_tensor ti = tb16;
        ti.rows4 = il;
        static ds3_real want[ROWS], got[ROWS];
        const int ncopies = ds3_lanes_select_avx2(true) ? 2 : 1;
        int bad = 0, runs = 0;
        for (int c = 0; c < ncopies; c++)
            for (int th = 1; th <= 2; th++)
                for (int t = 0; t < T; t++) {
                    ds3_lanes_select_avx2(c == 1);
#ifdef _OPENMP
                    omp_set_num_threads(th);
#endif
                    ds3_linear(DS3_KERNELS_FAST, want, x + t * COLS, &tb16, 1);
                    ds3_linear(DS3_KERNELS_FAST, got, x + t * COLS, &ti, 1);
                    bad += memcmp(want, got, sizeof want) != 0;
                    runs++;
                }
#ifdef _OPENMP
        omp_set_num_threads(2);
#endif
        ds3_lanes_select_avx2(true);
        CHECK(bad == 0, "%d one-token products (%d copies, 1 and 2 threads): the interleaved copy gives the rows' bits "
              "(%d differ)", runs, ncopies, bad);
    }

    th_section("decode's kernels (T = 1: four rows at a time; FP8 through IEEE half) against the lane rule");
    {
        /* 261 rows (not a multiple of 4), 392 columns (whole groups of eight, the
         * last scale block 8 wide); FP8 codes of every kind, NaN codes in some
         * blocks only; scales that are ordinary, subnormal, negative, infinite,
         * and so large that scale · 2^8 overflows. Every output must be the lane
         * rule's value, computed here one product at a time: lane k sums
         * x[j] · (value · scale rounded) for j ≡ k (mod 8) in order, and the
         * lanes combine as ((0+4)+(2+6))+((1+5)+(3+7)). */
        enum { R2 = 261, C2 = 392, SR = 3, SC = 4 };
        static uint8_t q[R2 * C2];
        static uint16_t hb[R2 * C2];
        static float s2[SR * SC], xs[5 * C2], want[5 * R2], got[5 * R2];
        /* scale blocks [3][4]: ordinary, subnormal, negative; the last row block
         * (rows 256..260) has 2^121 over codes below 2^-3 (finite products, but
         * scale · 2^8 overflows: the exact decoder must run there) */
        const float scales[SR * SC] = {0.5f, 0x1p-140f, -3.0f, 0.001f, 0.25f, 0.002f, -0.7f, 1.5f,
                                       0x1p121f, 0.5f, 0.25f, 1.0f};
        memcpy(s2, scales, sizeof s2);
        for (int i = 0; i < R2 * C2; i++) {
            uint8_t c = (uint8_t)(urand() * 128 + 128);
            if (c == 0x7f || c == 0xff) c = 0x11;   /* NaN codes only where placed below */
            if (i % 97 == 5) c &= 0x87;             /* subnormal codes (exponent 0) */
            if (i / C2 >= 256 && i % C2 < 128) c &= 0x9f;  /* below 2^-3 */
            q[i] = c;
            hb[i] = ds3_f32_to_bf16((float)urand());
        }
        q[3 * C2 + 130] = 0x7f, q[200 * C2 + 5] = 0xff;  /* two blocks with a NaN code */
        for (int i = 0; i < 5 * C2; i++) xs[i] = (float)urand();
        ds3_tensor tq = {"w.fp8-kinds", DS3_DT_F8_E4M3, R2, C2, q, s2, NULL, NULL};
        ds3_tensor th = {"w.bf16-wide", DS3_DT_BF16, R2, C2, hb, NULL, NULL, NULL};
        /* the FP8 weight again with a block record as the loader gives it
         * (kernels.h fp8_seen): the first call learns which blocks hold a NaN
         * code, the later ones decode from what it learned */
        static _Atomic unsigned char seen[SR * SC];
        ds3_tensor tqs = tq;
        tqs.name = "w.fp8-kinds (blocks learned)";
        tqs.fp8_seen = seen;
        const ds3_tensor *tt[3] = {&tq, &th, &tqs};
        int ncopies = ds3_lanes_select_avx2(true) ? 2 : 1;
        /* copy 2: the AVX2 copy with its AVX-512 loops (FP8 decode's blocks
         * 512 bits wide, linear_avx2.c), where the CPU has them */
        const int nruns = ncopies + (ncopies == 2 && ds3_lanes_select_avx512(true));
        if (nruns == 2) fprintf(stderr, "   (no AVX-512 on this CPU or in this build: the wide loops are not run)\n");
        for (int k = 0; k < 3; k++) {
            for (int t = 0; t < 5; t++)
                for (int r = 0; r < R2; r++) {
                    float lane[8] = {0};
                    for (int j = 0; j < C2; j++) {
                        float v = k == 1 ? ds3_bf16_to_f32(hb[r * C2 + j])
                                    : ds3_e4m3_table[q[r * C2 + j]] * s2[(r / 128) * SC + j / 128];
                        lane[j % 8] += xs[t * C2 + j] * v;
                    }
                    want[t * R2 + r] = ((lane[0] + lane[4]) + (lane[2] + lane[6])) +
                                       ((lane[1] + lane[5]) + (lane[3] + lane[7]));
                }
            for (int c = 0; c < nruns; c++) {
                ds3_lanes_select_avx2(c >= 1);
                if (ncopies == 2) ds3_lanes_select_avx512(c == 2);
                for (int T1 = 1; T1 <= 5; T1 += 4) {  /* one token at a time, and five at once */
                    if (T1 == 1)
                        for (int t = 0; t < 5; t++)
                            ds3_linear(DS3_KERNELS_DETERMINISTIC, got + t * R2, xs + t * C2, tt[k], 1);
                    else
                        ds3_linear(DS3_KERNELS_DETERMINISTIC, got, xs, tt[k], 5);
                    int bad = 0, finite = 0;
                    for (int i = 0; i < 5 * R2; i++) {
                        finite += isfinite(want[i]) != 0;
                        bool same = isnan(want[i]) ? isnan(got[i]) : memcmp(&got[i], &want[i], 4) == 0;
                        if (!same && bad++ < 3)
                            fprintf(stderr, "   %s copy %d T=%d out[%d]: got %a want %a\n", tt[k]->name, c, T1, i,
                                    (double)got[i], (double)want[i]);
                    }
                    CHECK(bad == 0 && finite > 5 * (R2 - 8), "%s, copy %d, T=%d: every output is the lane rule's "
                          "bits (%d differ; %d finite)", tt[k]->name, c, T1, bad, finite);
                }
            }
        }
        if (ncopies == 2) {  /* the AVX2 copy learns (the portable one has no half decoder) */
            int wrong = 0;
            for (int b = 0; b < SR * SC; b++) {
                bool nan_block = b == 0 * SC + 1 || b == 1 * SC + 0;  /* q[3][130], q[200][5] */
                wrong += seen[b] != (nan_block ? 2 : 1);
            }
            CHECK(wrong == 0, "the block record: the two blocks with a NaN code marked 2, the other %d marked 1 "
                  "(%d wrong)", SR * SC - 2, wrong);
        }
        ds3_lanes_select_avx2(true);
        ds3_lanes_select_avx512(nruns == 3);
    }
#endif

    th_section("AMX: BF16 and FP8 weights, fast mode, several tokens");
    if (ds3_amx_ok()) {
        amx_checks(0);
        amx_checks(1);
    }
    else fprintf(stderr, "   (no AMX on this CPU, not granted by the kernel, not in this build, or DS3_NO_AMX set: "
                         "not compared)\n");

    th_section("FP8 decode product: fast mode's one-token calls (linear_fp8.c)");
    if (ds3_fp8_rows_ok()) {
        fp8_rows_checks();
        ds3_fp8_rows_select(false);
        static ds3_real d1[ROWS], d2[ROWS];
        ds3_linear_decode(d1, x, &t8, 1);
        ds3_linear(DS3_KERNELS_DETERMINISTIC, d2, x, &t8, 1);
        CHECK(memcmp(d1, d2, sizeof d1) == 0, "switched off, ds3_linear_decode is the lane kernel");
        ds3_fp8_rows_select(true);
    }
    else fprintf(stderr, "   (no AVX-512 BW on this CPU, not in this build, or DS3_NO_AVX512 set: not compared)\n");

    th_section("thread-count invariance");
    static ds3_real r1[T * ROWS], r2[T * ROWS], p1[T * ROWS], p2[T * ROWS];
#ifdef _OPENMP
    omp_set_num_threads(1);
#endif
    ds3_linear(DS3_KERNELS_FAST, r1, x, &t8, T);
    ds3_linear_ref(p1, x, &t8, T);
#ifdef _OPENMP
    omp_set_num_threads(2);
#endif
    ds3_linear(DS3_KERNELS_FAST, r2, x, &t8, T);
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
        ds3_tensor tw = {"w.shape", DS3_DT_F32, R, Cc, wv, NULL, NULL, NULL};
#ifdef _OPENMP
        omp_set_num_threads(1);
#endif
        ds3_linear(DS3_KERNELS_FAST, o1, xi, &tw, M);
#ifdef _OPENMP
        omp_set_num_threads(2);
#endif
        ds3_linear(DS3_KERNELS_FAST, o2, xi, &tw, M);
        CHECK(memcmp(o1, o2, sizeof(ds3_real) * M * R) == 0, "M=%d N=%d K=%d: 1 and 2 threads give the same bits",
              M, R, Cc);
        free(xi); free(o1); free(o2); free(wv);
    }
    ds3_linear_release();
    return th_finish();
}

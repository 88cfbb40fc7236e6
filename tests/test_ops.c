/*
 * test_ops.c — RMSNorm, SiLU and softmax against their definitions computed
 * here in long double; the attention dot product (fixed lane order) against
 * the plain sum and against its own definition; axpy against the plain loop;
 * fast mode's fused decode attention (attend.c) against long double.
 */
#include "harness.h"
#include "generate/generate.h"

int main(void) {
    enum { N = 300 };
    ds3_real x[N], w[N], out[N];
    double got[N], ref[N];
    for (int i = 0; i < N; i++) { x[i] = (ds3_real)(sin(i * 0.37) * (i % 7 + 1)); w[i] = (ds3_real)(1 + 0.01 * (i % 13)); }

    th_section("RMSNorm");
    long double ss = 0;
    for (int i = 0; i < N; i++) ss += (long double)x[i] * x[i];
    long double inv = 1.0L / sqrtl(ss / N + 1e-6L);
    ds3_rmsnorm(out, x, w, N, 1e-6);
    for (int i = 0; i < N; i++) { got[i] = out[i]; ref[i] = (double)(w[i] * x[i] * inv); }
    th_check_close("rmsnorm", got, ref, N, 0, sizeof(ds3_real) == 4 ? 1e-6 : 1e-14);
    /* eps matters for tiny inputs: all-zero input stays finite and zero */
    ds3_real z[4] = {0, 0, 0, 0}, zw[4] = {1, 1, 1, 1}, zo[4];
    ds3_rmsnorm(zo, z, zw, 4, 1e-6);
    CHECK(zo[0] == 0 && zo[3] == 0, "zero input gives zero output");
    /* in place */
    ds3_real y[N];
    memcpy(y, x, sizeof y);
    ds3_rmsnorm(y, y, w, N, 1e-6);
    CHECK(memcmp(y, out, sizeof y) == 0, "in-place RMSNorm equals out-of-place");

    th_section("SiLU");
    double a[] = {-20, -1, 0, 0.5, 3, 30};
    for (int i = 0; i < 6; i++) { got[i] = ds3_silu((ds3_real)a[i]); ref[i] = a[i] / (1 + exp(-a[i])); }
    th_check_close("silu", got, ref, 6, 1e-12, 1e-6);
    {
        enum { NS = 1000 };  /* ds3_silu_n: ds3_silu's bits for every value, 64 exps at a time */
        static ds3_real v[NS];
        int bad = 0;
        for (int i = 0; i < NS; i++) v[i] = (ds3_real)(sin(i * 0.7) * (i % 3 ? 12.0 : 900.0));
        ds3_silu_n(v, NS);
        for (int i = 0; i < NS; i++) {
            ds3_real want = ds3_silu((ds3_real)(sin(i * 0.7) * (i % 3 ? 12.0 : 900.0)));
            bad += memcmp(&want, &v[i], sizeof want) != 0;
        }
        CHECK(bad == 0, "silu_n: the bits of silu on %d values (%d differ)", NS, bad);
    }

    th_section("softmax");
    ds3_real s[5] = {1000, 1001, 999, -INFINITY, 1000};
    ds3_softmax(s, 5);
    double e0 = exp(-1), z0 = 2 * e0 + 1 + exp(-2);
    double sr[5] = {e0 / z0, 1 / z0, exp(-2) / z0, 0, e0 / z0};
    for (int i = 0; i < 5; i++) got[i] = s[i];
    th_check_close("softmax large logits, -inf masked", got, sr, 5, 1e-12, 1e-6);

    th_section("dot product (attention)");
    /* Its order, written out: lane k sums the products i ≡ k (mod L) in
     * order, L = 32 floats (16 doubles); vectors (L/4 lanes each) are
     * combined as (v0+v2)+(v1+v3), then the lanes of that vector pairwise
     * left to right. Every length from 0 to N, so each ragged end occurs. */
    const int L = sizeof(ds3_real) == 4 ? 32 : 16, W = L / 4;
    int order_bad = 0;
    double worst = 0;
    /* both copies of the kernel (vecops.h): portable, and AVX2 where the CPU has it */
    const int ncopies = ds3_rows_select_avx2(true) ? 2 : 1;
    for (int copy = 0; copy < ncopies; copy++)
    for (int n = 0; n <= N; n++) {
        ds3_rows_select_avx2(copy == 1);
        ds3_real lane[32] = {0};
        for (int i = 0; i < n; i++) lane[i % L] += x[i] * w[i];
        ds3_real v[8], tot = 0;
        for (int k = 0; k < W; k++) v[k] = (lane[k] + lane[2 * W + k]) + (lane[W + k] + lane[3 * W + k]);
        for (int k = 0; k < W; k += 2) tot += v[k] + v[k + 1];
        if (ds3_dot(DS3_KERNELS_FAST, x, w, n) != tot) order_bad++;
        long double exact = 0, mag = 0;
        for (int i = 0; i < n; i++) { exact += (long double)x[i] * w[i]; mag += fabsl((long double)x[i] * w[i]); }
        if (n && fabs((double)(ds3_dot(DS3_KERNELS_FAST, x, w, n) - exact)) / (double)mag > worst)
            worst = fabs((double)(ds3_dot(DS3_KERNELS_FAST, x, w, n) - exact)) / (double)mag;
        if (n && fabs((double)(ds3_dot_ref(x, w, n) - exact)) / (double)mag > worst)
            worst = fabs((double)(ds3_dot_ref(x, w, n) - exact)) / (double)mag;
    }
    CHECK(order_bad == 0, "%d lengths (over %d copies) differ from the lane order written out", order_bad, ncopies);
    /* both sums within n·u of the exact one, relative to Σ|products| */
    CHECK(worst <= N * (sizeof(ds3_real) == 4 ? 0x1p-24 : 0x1p-53), "dot and plain sum vs exact: %.3g", worst);
    int ref_bad = 0;
    for (int n = 0; n <= N; n++) ref_bad += ds3_dot(DS3_KERNELS_REF, x, w, n) != ds3_dot_ref(x, w, n);
    CHECK(ref_bad == 0, "DS3_KERNELS_REF: ds3_dot is the plain sequential sum (%d differ)", ref_bad);

    th_section("dot_rows: the bits of m dot calls");
    {
        /* rows of a [9][LD] block against one b, every m from 0 to 9 (groups of
         * four and the rest) and lengths around the dot's 32-lane blocks; the
         * kernels with and without AVX-512 (ds3_dot_rows reads b once for four
         * rows there); rows holding an infinity, a NaN and signed zeros */
        enum { M = 9, LD = 301 };
        static ds3_real ar[M * LD], br[LD], got[M];
        for (int i = 0; i < M * LD; i++) ar[i] = (ds3_real)sin(i * 0.61) * (ds3_real)(1 + i % 5);
        for (int i = 0; i < LD; i++) br[i] = (ds3_real)cos(i * 0.23);
        ar[2 * LD + 7] = INFINITY, ar[5 * LD + 40] = NAN, ar[6 * LD + 3] = -0.0f, br[3] = -0.0f;
        static const int ns[] = {0, 1, 31, 32, 33, 63, 64, 70, 256, 288, 300};
        const int nwide = ds3_lanes_select_avx512(true) ? 2 : 1;
        int bad = 0, runs = 0;
        for (int copy = 0; copy < ncopies; copy++)
            for (int wide = 0; wide < nwide; wide++)
                for (int kk = 0; kk < 2; kk++)
                    for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
                        for (int m = 0; m <= M; m++) {
                            const ds3_kernels k = kk ? DS3_KERNELS_REF : DS3_KERNELS_FAST;
                            ds3_rows_select_avx2(copy == 1);
                            if (nwide == 2) ds3_lanes_select_avx512(wide == 1);
                            ds3_dot_rows(k, got, ar, LD, m, br, ns[ni]);
                            for (int g = 0; g < m; g++) {
                                ds3_real want = ds3_dot(k, ar + g * LD, br, ns[ni]);
                                bad += memcmp(&got[g], &want, sizeof want) != 0;
                            }
                            runs++;
                        }
        ds3_lanes_select_avx512(nwide == 2);
        CHECK(bad == 0, "dot_rows: %d calls (%d copies, %d widths, fast and ref) give ds3_dot's bits (%d differ)",
              runs, ncopies, nwide, bad);
    }

    th_section("axpy");
    ds3_real ya[N], yb[N];
    for (int copy = 0; copy < ncopies; copy++)
    for (int n = 0; n <= N; n += 37) {
        ds3_rows_select_avx2(copy == 1);
        for (int i = 0; i < N; i++) ya[i] = yb[i] = (ds3_real)cos(i * 0.11);
        ds3_axpy(ya, (ds3_real)0.7071, x, n);
        for (int i = 0; i < n; i++) yb[i] += (ds3_real)0.7071 * x[i];
        CHECK(memcmp(ya, yb, sizeof ya) == 0, "axpy copy %d n=%d: the plain loop's bits, nothing past n", copy, n);
    }

    th_section("axpy_rows: the bits of m axpy calls in turn");
    {
        enum { M = 11, LD = 53 };  /* rows 0..10 of a [11][53] block: 2 groups of 4, then 3 alone */
        static ds3_real xr[M * LD], ar[M], yr[LD], ys[LD];
        for (int i = 0; i < M * LD; i++) xr[i] = (ds3_real)sin(i * 0.37) * (ds3_real)(1 + i % 7);
        for (int d = 0; d < M; d++) ar[d] = (ds3_real)cos(d * 1.3) * (ds3_real)1e-3 * (ds3_real)(d + 1);
        /* copy 2: the AVX2 copy's 512-bit loop, where the CPU has AVX-512 */
        const int nruns = ncopies + (ncopies == 2 && ds3_lanes_select_avx512(true));
        for (int copy = 0; copy < nruns; copy++)
            for (int m = 0; m <= M; m++)
                for (int n = 0; n <= LD; n += 13) {
                    ds3_rows_select_avx2(copy >= 1);
                    if (ncopies == 2) ds3_lanes_select_avx512(copy == 2);
                    for (int i = 0; i < LD; i++) yr[i] = ys[i] = (ds3_real)(i % 5) - (ds3_real)1.5;
                    ds3_axpy_rows(yr, ar, xr, m, LD, n);
                    for (int d = 0; d < m; d++)
                        for (int i = 0; i < n; i++) ys[i] += ar[d] * xr[d * LD + i];
                    CHECK(memcmp(yr, ys, sizeof yr) == 0, "axpy_rows copy %d m=%d n=%d: the plain loops' bits",
                          copy, m, n);
                }
        ds3_lanes_select_avx512(nruns == 3);
    }
    ds3_rows_select_avx2(true);

#ifndef DS3_F64
    th_section("decode attention, fused (attend.c)");
    if (!ds3_attend_select(true)) {
        CHECK(!ds3_attend_ok(), "no AVX-512 copy or CPU here: the fused kernels are off");
    } else {
        /* G heads against P cached rows, small's widths (C 256, Dr 32) and odd
         * ones (C 40, Dr 8: masked ends); every G from 1 to 7 (groups of four
         * and the rest) and P around the blocks of four positions */
        enum { GM = 7, PM = 70, LS = 80 };
        static const int Cs[] = {256, 40}, Drs[] = {32, 8}, Ps[] = {1, 2, 3, 4, 5, 17, 64, 70};
        static float q[GM * (256 + 32)], c[PM * 256], kr[PM * 32], p[GM * LS];
        static float sc[GM * LS], sc1[GM * LS], oc[GM * 256], oc1[GM * 256];
        int bad_acc = 0, bad_bits = 0, bad_edge = 0, calls = 0;
        double worst = 0;
        for (int w = 0; w < 2; w++) {
            const int C = Cs[w], Dr = Drs[w], Dq = C + Dr;
            for (int i = 0; i < GM * Dq; i++) q[i] = (float)sin(i * 0.37 + w) * (float)(1 + i % 3);
            for (int i = 0; i < PM * C; i++) c[i] = (float)cos(i * 0.113) * (float)(1 + i % 5);
            for (int i = 0; i < PM * Dr; i++) kr[i] = (float)sin(i * 0.71);
            for (int g = 0; g < GM; g++)
                for (int u = 0; u < LS; u++) p[g * LS + u] = (float)(1 + (g * 7 + u * 3) % 11) / 64;
            for (size_t pi = 0; pi < sizeof Ps / sizeof Ps[0]; pi++)
                for (int G = 1; G <= GM; G++) {
                    const int P = Ps[pi];
                    for (int i = 0; i < GM * LS; i++) sc[i] = sc1[i] = 7;
                    for (int i = 0; i < GM * 256; i++) oc[i] = oc1[i] = 7;
                    ds3_attend_scores(sc, LS, q, Dq, q + C, Dq, G, c, C, kr, Dr, P);
                    ds3_attend_values(oc, 256, p, LS, G, c, C, P);
                    for (int g = 0; g < G; g++) {  /* each head alone: the same bits */
                        ds3_attend_scores(sc1 + g * LS, LS, q + g * Dq, Dq, q + g * Dq + C, Dq, 1, c, C, kr, Dr, P);
                        ds3_attend_values(oc1 + g * 256, 256, p + g * LS, LS, 1, c, C, P);
                    }
                    bad_bits += memcmp(sc, sc1, sizeof sc) != 0 || memcmp(oc, oc1, sizeof oc) != 0;
                    calls++;
                    for (int g = 0; g < GM; g++) {
                        for (int u = 0; u < LS; u++) {
                            if (g >= G || u >= P) {
                                bad_edge += sc[g * LS + u] != 7;
                                continue;
                            }
                            /* an FMA chain of n products: within n·2^-24·Σ|terms| */
                            long double e = 0, m = 0;
                            for (int k = 0; k < C; k++) {
                                e += (long double)q[g * Dq + k] * c[u * C + k];
                                m += fabsl((long double)q[g * Dq + k] * c[u * C + k]);
                            }
                            for (int k = 0; k < Dr; k++) {
                                e += (long double)q[g * Dq + C + k] * kr[u * Dr + k];
                                m += fabsl((long double)q[g * Dq + C + k] * kr[u * Dr + k]);
                            }
                            const double err = (double)fabsl(sc[g * LS + u] - e), bound = Dq * 0x1p-24 * (double)m;
                            bad_acc += err > bound;
                            if (m > 0 && err / (double)m > worst) worst = err / (double)m;
                        }
                        for (int k = 0; k < 256; k++) {
                            if (g >= G || k >= C) {
                                bad_edge += oc[g * 256 + k] != 7;
                                continue;
                            }
                            long double e = 0, m = 0;
                            for (int u = 0; u < P; u++) {
                                e += (long double)p[g * LS + u] * c[u * C + k];
                                m += fabsl((long double)p[g * LS + u] * c[u * C + k]);
                            }
                            bad_acc += (double)fabsl(oc[g * 256 + k] - e) > P * 0x1p-24 * (double)m;
                        }
                    }
                }
        }
        CHECK(bad_acc == 0, "scores and o_c within n·2^-24·Σ|terms| of long double (%d over; worst %.3g of Σ|terms|)",
              bad_acc, worst);
        CHECK(bad_bits == 0, "%d calls: a group of G heads gives each head's bits alone (%d differ)", calls, bad_bits);
        CHECK(bad_edge == 0, "nothing written past P positions, G heads or C columns (%d)", bad_edge);
        ds3_attend_select(true);
    }
#endif
    return th_finish();
}

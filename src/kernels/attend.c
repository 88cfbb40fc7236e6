/*
 * attend.c — fast mode's attention of a decode step over the cached latents,
 * with AVX-512 fused multiply-adds (src/model/mla.c, the absorbed form).
 *
 * One new token's query, per head g of a group, against the P cached
 * positions (c^KV rows of C values, k^R rows of Dr):
 *
 *   scores[g][u] = q_c[g]·c^KV_u + q^R[g]·k^R_u          u < P   (ds3_attend_scores)
 *   o_c[g]       = Σ_u P[g][u] c^KV_u                           (ds3_attend_values)
 *
 * The lane order (vecops.h, mla_attend_absorbed) computes each score as two
 * dot products, one call per cached row and group, each with its own
 * horizontal sum, and each o_c as one axpy per row: at 1,024 positions that
 * was most of small's decode attention (0.4 ms a layer, more than its
 * projections). Here a score is one chain of fused multiply-adds over the
 * C + Dr columns, 16 at a time — lane j adds the products of columns
 * k ≡ j (mod 16), q_c's columns first, then q^R's — for 16 positions at once,
 * and the 16 sums are reduced together (a fixed tree, below). o_c[g][k] is one
 * chain over u in order, four heads and 64 columns at a time so that each
 * cached row is loaded once for the four.
 *
 * Each element is the same operations in the same order whatever the group
 * size, the other heads, P or the thread count, so fast mode keeps its bits
 * for any thread count; they are not the lane order's (fused, and summed in
 * another order), so a fast decode step differs from the deterministic one
 * within rounding, as fast mode's several-token products already did
 * (docs/ARCHITECTURE.md §6). Float builds on CPUs with AVX-512 F (and the lane
 * kernels' AVX2, DS3_NO_AVX512 and DS3_NO_AVX2 unset); elsewhere, and in
 * deterministic and ref modes, the lane order.
 */
#include "kernels/kernels.h"

#include <stdlib.h>

#if DS3_AVX2_COPY && !defined(DS3_F64)
#include <immintrin.h>

#define TARGET_AVX512 __attribute__((target("avx512f,avx512vl")))

/* -1 until asked; then whether these kernels run. Tests switch it. */
static int attend_state = -1;
static bool attend_decide(void) {
    return ds3_cpu_has_avx512() && !getenv("DS3_NO_AVX512") && !getenv("DS3_NO_AVX2");
}
bool ds3_attend_ok(void) { return ds3_decided(&attend_state, attend_decide); }
bool ds3_attend_select(bool on) {
    if (on && !ds3_cpu_has_avx512()) return false;
    attend_state = on;
    return true;
}

/* Lanes of columns [k, k + 16) below n: all, some, or none. */
static inline __mmask16 cols_mask(int k, int n) { return n - k >= 16 ? 0xffff : (__mmask16)((1u << (n - k)) - 1); }

/*
 * The sums of sixteen accumulators, one per position, as one vector: element i
 * is the sum of a[i]'s lanes by the same tree for every i — within each
 * 128-bit quarter (l0 + l2) + (l1 + l3), then the quarters (q0 + q2) + (q1 + q3)
 * — by unpacking and shuffling pairs of accumulators rather than one at a time.
 */
TARGET_AVX512 static inline __m512 sum16(const __m512 a[16]) {
    __m512 s[8], r[4];
    for (int i = 0; i < 8; i++)  /* per quarter: (a0 + a2)(b0 + b2)(a1 + a3)(b1 + b3) of a = a[2i], b = a[2i+1] */
        s[i] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]), _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]));
    for (int i = 0; i < 4; i++) {  /* per quarter: the quarter sums of a[4i] .. a[4i + 3] */
        const __m512d x = _mm512_castps_pd(s[2 * i]), y = _mm512_castps_pd(s[2 * i + 1]);
        r[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
    }
    /* r[i], quarter q: the quarter-q sums of a[4i .. 4i + 3]; now the quarters */
    const __m512 v0 = _mm512_add_ps(_mm512_shuffle_f32x4(r[0], r[1], _MM_SHUFFLE(1, 0, 1, 0)),
                                    _mm512_shuffle_f32x4(r[0], r[1], _MM_SHUFFLE(3, 2, 3, 2)));
    const __m512 v1 = _mm512_add_ps(_mm512_shuffle_f32x4(r[2], r[3], _MM_SHUFFLE(1, 0, 1, 0)),
                                    _mm512_shuffle_f32x4(r[2], r[3], _MM_SHUFFLE(3, 2, 3, 2)));
    /* v0: [r0 (q0 + q2), r0 (q1 + q3), r1 (q0 + q2), r1 (q1 + q3)], v1 the same of r2, r3 */
    return _mm512_add_ps(_mm512_shuffle_f32x4(v0, v1, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(v0, v1, _MM_SHUFFLE(3, 1, 3, 1)));
}

/*
 * Scores of four heads (query rows q0..q3) against four cached positions (rows
 * r0..r3): a_{4h+i} += q_h · r_i over n columns, 16 at a time; eight loads
 * for sixteen multiply-adds. Each row also asks for its line pf floats ahead
 * (a later position's): a decode step finds its layer's cache evicted from
 * the caches by the weights read since the last step, and the hardware
 * prefetcher, which starts over at every 4 KiB page, left a score pass over
 * 1,024 positions waiting on memory. The MLA sublayer of `small` at position
 * 1,024 with its cache evicted (best of 80, medians of three interleaved
 * runs): 0.81 → 0.70 ms on one thread, 0.51 → 0.45 on two. A prefetch changes
 * no bit.
 */
#define PF_C 16   /* c^KV rows ahead: 16 KiB at C = 256 */
#define PF_R 64   /* k^R rows ahead: 8 KiB at Dr = 32 */
#define DOT4X4(q0, q1, q2, q3, r0, r1, r2, r3, n, pf)                                                          \
    for (int k = 0; k < (n); k += 16) {                                                                      \
        const __mmask16 m = cols_mask(k, (n));                                                               \
        _mm_prefetch((const char *)((r0) + k + (pf)), _MM_HINT_T0);                                          \
        _mm_prefetch((const char *)((r1) + k + (pf)), _MM_HINT_T0);                                          \
        _mm_prefetch((const char *)((r2) + k + (pf)), _MM_HINT_T0);                                          \
        _mm_prefetch((const char *)((r3) + k + (pf)), _MM_HINT_T0);                                          \
        const __m512 x0 = _mm512_maskz_loadu_ps(m, (r0) + k), x1 = _mm512_maskz_loadu_ps(m, (r1) + k);       \
        const __m512 x2 = _mm512_maskz_loadu_ps(m, (r2) + k), x3 = _mm512_maskz_loadu_ps(m, (r3) + k);       \
        __m512 w = _mm512_maskz_loadu_ps(m, (q0) + k);                                                       \
        a0 = _mm512_fmadd_ps(w, x0, a0), a1 = _mm512_fmadd_ps(w, x1, a1);                            \
        a2 = _mm512_fmadd_ps(w, x2, a2), a3 = _mm512_fmadd_ps(w, x3, a3);                            \
        w = _mm512_maskz_loadu_ps(m, (q1) + k);                                                              \
        a4 = _mm512_fmadd_ps(w, x0, a4), a5 = _mm512_fmadd_ps(w, x1, a5);                            \
        a6 = _mm512_fmadd_ps(w, x2, a6), a7 = _mm512_fmadd_ps(w, x3, a7);                            \
        w = _mm512_maskz_loadu_ps(m, (q2) + k);                                                              \
        a8 = _mm512_fmadd_ps(w, x0, a8), a9 = _mm512_fmadd_ps(w, x1, a9);                            \
        a10 = _mm512_fmadd_ps(w, x2, a10), a11 = _mm512_fmadd_ps(w, x3, a11);                        \
        w = _mm512_maskz_loadu_ps(m, (q3) + k);                                                              \
        a12 = _mm512_fmadd_ps(w, x0, a12), a13 = _mm512_fmadd_ps(w, x1, a13);                        \
        a14 = _mm512_fmadd_ps(w, x2, a14), a15 = _mm512_fmadd_ps(w, x3, a15);                        \
    }

/* Heads past the group and positions past P repeat the last one: computed,
 * never stored (every element's operations are its own). */
TARGET_AVX512 static void scores_512(float *sc, size_t lds, const float *qc, size_t ldqc, const float *qr,
                                     size_t ldqr, int G, const float *c, int C, const float *kr, int Dr, int P) {
    for (int g0 = 0; g0 < G; g0 += 4) {
        const int ng = G - g0 < 4 ? G - g0 : 4;
        const float *c0 = qc + (size_t)g0 * ldqc, *c1 = c0 + (ng > 1 ? ldqc : 0), *c2 = c0 + (ng > 2 ? 2 * ldqc : 0),
                    *c3 = c0 + (ng > 3 ? 3 * ldqc : 0);
        const float *e0 = qr + (size_t)g0 * ldqr, *e1 = e0 + (ng > 1 ? ldqr : 0), *e2 = e0 + (ng > 2 ? 2 * ldqr : 0),
                    *e3 = e0 + (ng > 3 ? 3 * ldqr : 0);
        for (int u0 = 0; u0 < P; u0 += 4) {
            const int nu = P - u0 < 4 ? P - u0 : 4;
            const size_t u1 = (size_t)u0 + (nu > 1), u2 = (size_t)u0 + (nu > 2 ? 2 : nu - 1),
                         u3 = (size_t)u0 + (size_t)(nu - 1);
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
            __m512 a8 = a0, a9 = a0, a10 = a0, a11 = a0, a12 = a0, a13 = a0, a14 = a0, a15 = a0;
            DOT4X4(c0, c1, c2, c3, c + (size_t)u0 * C, c + u1 * C, c + u2 * C, c + u3 * C, C, (size_t)PF_C * C)
            DOT4X4(e0, e1, e2, e3, kr + (size_t)u0 * Dr, kr + u1 * Dr, kr + u2 * Dr, kr + u3 * Dr, Dr,
                   (size_t)PF_R * Dr)
            /* lanes 4h .. 4h + 3 of the sums: head h's scores at u0 .. u0 + 3 */
            const __m512 acc[16] = {a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15};
            const __m512 v = sum16(acc);
            const __mmask16 mu = (__mmask16)((1u << nu) - 1);
            float *o = sc + (size_t)g0 * lds + u0;
            _mm_mask_storeu_ps(o, mu, _mm512_castps512_ps128(v));
            if (ng > 1) _mm_mask_storeu_ps(o + lds, mu, _mm512_extractf32x4_ps(v, 1));
            if (ng > 2) _mm_mask_storeu_ps(o + 2 * lds, mu, _mm512_extractf32x4_ps(v, 2));
            if (ng > 3) _mm_mask_storeu_ps(o + 3 * lds, mu, _mm512_extractf32x4_ps(v, 3));
        }
    }
}
#undef DOT4X4

/* o_c of four heads (probability rows p0..p3), columns [k0, k0 + 64): one
 * chain per element over u; each cached row loaded once for the four. */
TARGET_AVX512 static void values_4x64(float *o0, float *o1, float *o2, float *o3, int ng, const float *p0,
                                      const float *p1, const float *p2, const float *p3, const float *c, int C,
                                      int P, int k0) {
    const __mmask16 m0 = cols_mask(k0, C), m1 = k0 + 16 < C ? cols_mask(k0 + 16, C) : 0,
                    m2 = k0 + 32 < C ? cols_mask(k0 + 32, C) : 0, m3 = k0 + 48 < C ? cols_mask(k0 + 48, C) : 0;
    __m512 a[16];
    for (int i = 0; i < 16; i++) a[i] = _mm512_setzero_ps();
    for (int u = 0; u < P; u++) {
        const float *row = c + (size_t)u * C + k0;
        const __m512 x0 = _mm512_maskz_loadu_ps(m0, row), x1 = _mm512_maskz_loadu_ps(m1, row + 16),
                     x2 = _mm512_maskz_loadu_ps(m2, row + 32), x3 = _mm512_maskz_loadu_ps(m3, row + 48);
        __m512 w = _mm512_set1_ps(p0[u]);
        a[0] = _mm512_fmadd_ps(w, x0, a[0]), a[1] = _mm512_fmadd_ps(w, x1, a[1]);
        a[2] = _mm512_fmadd_ps(w, x2, a[2]), a[3] = _mm512_fmadd_ps(w, x3, a[3]);
        w = _mm512_set1_ps(p1[u]);
        a[4] = _mm512_fmadd_ps(w, x0, a[4]), a[5] = _mm512_fmadd_ps(w, x1, a[5]);
        a[6] = _mm512_fmadd_ps(w, x2, a[6]), a[7] = _mm512_fmadd_ps(w, x3, a[7]);
        w = _mm512_set1_ps(p2[u]);
        a[8] = _mm512_fmadd_ps(w, x0, a[8]), a[9] = _mm512_fmadd_ps(w, x1, a[9]);
        a[10] = _mm512_fmadd_ps(w, x2, a[10]), a[11] = _mm512_fmadd_ps(w, x3, a[11]);
        w = _mm512_set1_ps(p3[u]);
        a[12] = _mm512_fmadd_ps(w, x0, a[12]), a[13] = _mm512_fmadd_ps(w, x1, a[13]);
        a[14] = _mm512_fmadd_ps(w, x2, a[14]), a[15] = _mm512_fmadd_ps(w, x3, a[15]);
    }
    float *const o[4] = {o0, o1, o2, o3};
    const __mmask16 m[4] = {m0, m1, m2, m3};
    for (int h = 0; h < ng; h++)
        for (int j = 0; j < 4; j++) _mm512_mask_storeu_ps(o[h] + k0 + 16 * j, m[j], a[4 * h + j]);
}

TARGET_AVX512 static void values_512(float *oc, size_t ldo, const float *p, size_t ldp, int G, const float *c, int C,
                                     int P) {
    for (int g0 = 0; g0 < G; g0 += 4) {
        const int ng = G - g0 < 4 ? G - g0 : 4;
        const size_t h1 = ng > 1 ? 1 : 0, h2 = ng > 2 ? 2 : h1, h3 = ng > 3 ? 3 : h2;  /* repeat the last head */
        float *o = oc + (size_t)g0 * ldo;
        const float *pg = p + (size_t)g0 * ldp;
        for (int k0 = 0; k0 < C; k0 += 64)
            values_4x64(o, o + h1 * ldo, o + h2 * ldo, o + h3 * ldo, ng, pg, pg + h1 * ldp, pg + h2 * ldp,
                        pg + h3 * ldp, c, C, P, k0);
    }
}

void ds3_attend_scores(float *sc, size_t lds, const float *qc, size_t ldqc, const float *qr, size_t ldqr, int G,
                       const float *c, int C, const float *kr, int Dr, int P) {
    scores_512(sc, lds, qc, ldqc, qr, ldqr, G, c, C, kr, Dr, P);
}

void ds3_attend_values(float *oc, size_t ldo, const float *p, size_t ldp, int G, const float *c, int C, int P) {
    values_512(oc, ldo, p, ldp, G, c, C, P);
}

#else /* no AVX-512 copy: the lane order everywhere */

bool ds3_attend_ok(void) { return false; }
bool ds3_attend_select(bool on) { return !on; }
void ds3_attend_scores(ds3_real *sc, size_t lds, const ds3_real *qc, size_t ldqc, const ds3_real *qr, size_t ldqr,
                       int G, const ds3_real *c, int C, const ds3_real *kr, int Dr, int P) {
    (void)sc, (void)lds, (void)qc, (void)ldqc, (void)qr, (void)ldqr, (void)G, (void)c, (void)C, (void)kr, (void)Dr,
        (void)P;
    DS3_ASSERT(!"ds3_attend_scores without AVX-512 (ds3_attend_ok is false)");
}
void ds3_attend_values(ds3_real *oc, size_t ldo, const ds3_real *p, size_t ldp, int G, const ds3_real *c, int C,
                       int P) {
    (void)oc, (void)ldo, (void)p, (void)ldp, (void)G, (void)c, (void)C, (void)P;
    DS3_ASSERT(!"ds3_attend_values without AVX-512 (ds3_attend_ok is false)");
}

#endif

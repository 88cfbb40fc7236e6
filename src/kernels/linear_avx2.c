/*
 * linear_avx2.c — the lane kernel of src/kernels/lanes.h built with -mavx2 -mf16c
 * (the Makefile adds the flags for this file on x86-64). linear.c calls it when
 * the CPU has AVX2 and F16C; the arithmetic, hence every bit, is that of the portable copy
 * (tests/test_linear.c compares the two).
 */
#include "kernels/kernels.h"

#if DS3_AVX2_COPY
#include <immintrin.h>
#include <string.h>

#define LANES_FN(name) name##_avx2
/* lanes.h's tiles: the four weight vectors stay in registers (gcc would fold
 * their loads into each multiply, two loads per product instead of one). */
#define LANES_IN_REG(v) __asm__("" : "+x"(v))

#ifndef DS3_F64  /* the fused FP8 loops exist in float builds only */
/*
 * Eight e4m3 codes to their exact f32 values with AVX2 and F16C, no table.
 * An e4m3 code s|eeee|mmm, shifted left by 7 in a 16-bit lane, is the IEEE
 * half s|0eeee|mmm0000000 once the sign moves from bit 14 to bit 15: its
 * value is the e4m3 value times 2^-8 exactly, because half's exponent bias is
 * 15 where e4m3's is 7, and half's subnormals (exponent field 0) line up with
 * e4m3's. vcvtph2ps widens it exactly and the product by 2^8 is exact. Only
 * the NaN codes (0x7f, 0xff: all seven low bits set) would come out as
 * finite halves; they are detected on the eight bytes with integer
 * arithmetic and decoded by the bit-by-bit path above. (This file is built
 * with -mavx2 -mf16c; it runs only where the CPU has both.) Every step is
 * exact, so the values equal ds3_e4m3_table's (tests/test_linear.c checks all 256 codes through both
 * copies of the kernel).
 */
static inline void fp8x8_bits(__m256 *out, long long raw) {
    __m256i b = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(raw));
    __m256i em = _mm256_and_si256(b, _mm256_set1_epi32(0x7f));
    __m256i normal = _mm256_add_epi32(_mm256_slli_epi32(em, 20), _mm256_set1_epi32(120 << 23));
    __m256 sub = _mm256_mul_ps(_mm256_cvtepi32_ps(em), _mm256_set1_ps(0x1p-9f));
    __m256i is_sub = _mm256_cmpgt_epi32(_mm256_set1_epi32(8), em);
    __m256i is_nan = _mm256_cmpeq_epi32(em, _mm256_set1_epi32(0x7f));
    __m256i bits = _mm256_blendv_epi8(normal, _mm256_castps_si256(sub), is_sub);
    bits = _mm256_blendv_epi8(bits, _mm256_set1_epi32(0x7fc00000), is_nan);
    bits = _mm256_or_si256(bits, _mm256_slli_epi32(_mm256_and_si256(b, _mm256_set1_epi32(0x80)), 24));
    *out = _mm256_castsi256_ps(bits);
}

static inline void fp8x8_avx2(__m256 *out, const unsigned char *q) {
    long long raw;
    memcpy(&raw, q, 8);
    /* a byte whose low seven bits are all set carries into its top bit */
    const unsigned long long low7 = (unsigned long long)raw & 0x7f7f7f7f7f7f7f7full;
    if (__builtin_expect(((low7 + 0x0101010101010101ull) & 0x8080808080808080ull) != 0, 0)) {
        fp8x8_bits(out, raw);
        return;
    }
    __m128i u = _mm_slli_epi16(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(raw)), 7);
    u = _mm_add_epi16(u, _mm_and_si128(u, _mm_set1_epi16(0x4000)));  /* sign: bit 14 -> 15 */
    *out = _mm256_mul_ps(_mm256_cvtph_ps(u), _mm256_set1_ps(256.0f));
}

/*
 * The faster pair lanes.h uses on blocks without NaN codes. fp8x8_half: the
 * byte sign-extended to 16 bits and shifted left by 7 puts s|eeee|mmm at bits
 * 14..7 and a copy of s at bit 15; clearing bit 14 leaves the half
 * s|0eeee|mmm0000000, which is the e4m3 value times 2^-8 (above), widened
 * exactly by vcvtph2ps. The 2^8 goes into the block's scale (lanes.h).
 * fp8_finite: no code of the n has its low seven bits all set.
 */
static inline void fp8x8_half_avx2(__m256 *out, const unsigned char *q) {
    __m128i b = _mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)q));
    *out = _mm256_cvtph_ps(_mm_and_si128(_mm_slli_epi16(b, 7), _mm_set1_epi16((short)0xbfff)));
}

/* Sixteen codes the same way, the integer steps on all sixteen at once: the
 * first eight to *lo, the next eight to *hi. */
static inline void fp8x16_half_avx2(__m256 *lo, __m256 *hi, const unsigned char *q) {
    __m256i b = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)q));
    b = _mm256_and_si256(_mm256_slli_epi16(b, 7), _mm256_set1_epi16((short)0xbfff));
    *lo = _mm256_cvtph_ps(_mm256_castsi256_si128(b));
    *hi = _mm256_cvtph_ps(_mm256_extracti128_si256(b, 1));
}

static inline bool fp8_finite_avx2(const unsigned char *q, int64_t n) {
    const __m256i low7 = _mm256_set1_epi8(0x7f);
    __m256i nan = _mm256_setzero_si256();
    int64_t k = 0;
    for (; k + 32 <= n; k += 32) {
        __m256i v = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(q + k)), low7);
        nan = _mm256_or_si256(nan, _mm256_cmpeq_epi8(v, low7));
    }
    bool ok = _mm256_testz_si256(nan, nan);
    for (; k < n; k++) ok = ok && (q[k] & 0x7f) != 0x7f;
    return ok;
}

/* Eight bf16 values to f32, exactly: each 16-bit value widened into the top
 * half of its 32-bit lane (one vpmovzxwd, one shift). */
static inline void bf16x8_avx2(__m256 *out, const unsigned char *p) {
    __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    *out = _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
}
#endif

/* fp8_finite scans for real here, so a block's scan can be kept (lanes.h) */
#define LANES_HAVE_HALF 1

#if !defined(DS3_F64)
/* lanes.h's tiles 512 bits wide where the CPU has AVX-512 (below, after lanes.h). */
#define TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512dq")))
static bool avx512_ok(void);
TARGET_AVX512 static void tile_4x4_avx512(float *out, int64_t rows, const float *wb, const float *x, int64_t cols);
#define LANES_TILE_4X4(out, rows, wb, x, cols) tile_4x4_avx512(out, rows, wb, x, cols)
#define LANES_TILE_4X4_OK() avx512_ok()
TARGET_AVX512 static void fp8_4rows_avx512(__m256 *a0, __m256 *a1, __m256 *a2, __m256 *a3, const unsigned char *p0,
                                           const unsigned char *p1, const unsigned char *p2,
                                           const unsigned char *p3, const float *x, float c);
#define LANES_FP8_4ROWS(a0, a1, a2, a3, p0, p1, p2, p3, x, c) \
    fp8_4rows_avx512((__m256 *)(a0), (__m256 *)(a1), (__m256 *)(a2), (__m256 *)(a3), p0, p1, p2, p3, x, c)
#define LANES_FP8_4ROWS_OK() avx512_ok()
#endif

#include "lanes.h"

#ifdef LANES_TILE_4X4
/*
 * The tiles once more, twice as wide, where the CPU has AVX-512 (F, VL, DQ):
 * lanes.h's tile_4x2 with each 512-bit register holding the eight lanes of two
 * tokens side by side — [lanes of token t | lanes of token t+1] for one weight
 * row — and four tokens at a time: eight such sums, the four weight vectors
 * broadcast to both halves. Every half does tile_4x2's operations on its
 * token in the same order (a product rounded, then a sum rounded; lane by
 * lane, no FMA: -ffp-contract=off), and lanes_sum combines each half, so the
 * bits are the 256-bit tiles' (tests/test_linear.c compares them). On a core
 * with 512-bit multipliers and adders (AMD Zen 5, Intel server cores) each
 * instruction does twice the work. Built for AVX-512 by the target attribute,
 * run only where avx512_ok says the CPU has it.
 */
TARGET_AVX512 static void tile_4x4_avx512(float *out, int64_t rows, const float *wb, const float *x, int64_t cols) {
    const float *x0 = x, *x1 = x + cols, *x2 = x + 2 * cols, *x3 = x + 3 * cols;
    __m512 a00 = _mm512_setzero_ps(), a10 = a00, a20 = a00, a30 = a00;  /* tokens 0, 1 */
    __m512 a02 = a00, a12 = a00, a22 = a00, a32 = a00;                  /* tokens 2, 3 */
    for (int64_t j = 0; j < cols; j += 8) {
        const __m512 w0 = _mm512_broadcast_f32x8(_mm256_loadu_ps(wb + j));
        const __m512 w1 = _mm512_broadcast_f32x8(_mm256_loadu_ps(wb + cols + j));
        const __m512 w2 = _mm512_broadcast_f32x8(_mm256_loadu_ps(wb + 2 * cols + j));
        const __m512 w3 = _mm512_broadcast_f32x8(_mm256_loadu_ps(wb + 3 * cols + j));
        const __m512 x01 = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(x0 + j)), _mm256_loadu_ps(x1 + j), 1);
        const __m512 x23 = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(x2 + j)), _mm256_loadu_ps(x3 + j), 1);
        a00 = _mm512_add_ps(a00, _mm512_mul_ps(x01, w0)); a10 = _mm512_add_ps(a10, _mm512_mul_ps(x01, w1));
        a20 = _mm512_add_ps(a20, _mm512_mul_ps(x01, w2)); a30 = _mm512_add_ps(a30, _mm512_mul_ps(x01, w3));
        a02 = _mm512_add_ps(a02, _mm512_mul_ps(x23, w0)); a12 = _mm512_add_ps(a12, _mm512_mul_ps(x23, w1));
        a22 = _mm512_add_ps(a22, _mm512_mul_ps(x23, w2)); a32 = _mm512_add_ps(a32, _mm512_mul_ps(x23, w3));
    }
    /* each half, one token's eight lanes, through lanes_sum */
    const __m512 acc[8] = {a00, a10, a20, a30, a02, a12, a22, a32};
    for (int k = 0; k < 8; k++) {
        float *o = out + (k / 4) * 2 * rows + (k % 4);
        const __m256 lo = _mm512_castps512_ps256(acc[k]), hi = _mm512_extractf32x8_ps(acc[k], 1);
        o[0] = lanes_sum_avx2(&lo);
        o[rows] = lanes_sum_avx2(&hi);
    }
}

/*
 * Decode's four FP8 rows (lanes.h dot_4rows_fused), one 128-column block, 512
 * bits wide: each register holds the eight lanes of two rows side by side,
 * [row r | row r+1], so every multiply and add does two rows' step at once.
 * The codes of the two rows' eight columns go into one 16-byte vector
 * (unpack), and the half decoder's steps (fp8x16_half) make sixteen values at
 * once; the scale is the half decoder's, s·2^8 (one for the four rows: they
 * lie in one 128-row block, as their first row is a multiple of 4). Per row, lane k adds
 * x[j]·w[j] for j ≡ k (mod 8) in column order, a product rounded then a sum
 * rounded, as the 256-bit loop does: the same bits (tests/test_linear.c
 * compares the widths). Blocks of whole 128 columns without NaN codes only.
 */
TARGET_AVX512 static void fp8_4rows_avx512(__m256 *a0, __m256 *a1, __m256 *a2, __m256 *a3, const unsigned char *p0,
                                           const unsigned char *p1, const unsigned char *p2,
                                           const unsigned char *p3, const float *x, float c) {
    const __m512 sc = _mm512_set1_ps(c);
    __m512 acc01 = _mm512_insertf32x8(_mm512_castps256_ps512(*a0), *a1, 1);
    __m512 acc23 = _mm512_insertf32x8(_mm512_castps256_ps512(*a2), *a3, 1);
    const __m256i keep = _mm256_set1_epi16((short)0xbfff);
    /* sixteen codes to sixteen values times 2^-8 (fp8x16_half's steps) */
#define FP8_WIDE(q) _mm512_cvtph_ps(_mm256_and_si256(_mm256_slli_epi16(_mm256_cvtepi8_epi16(q), 7), keep))
    for (int j = 0; j < DS3_FP8_BLOCK; j += 16) {
        const __m128i r0 = _mm_loadu_si128((const __m128i *)(p0 + j)), r1 = _mm_loadu_si128((const __m128i *)(p1 + j));
        const __m128i r2 = _mm_loadu_si128((const __m128i *)(p2 + j)), r3 = _mm_loadu_si128((const __m128i *)(p3 + j));
        const __m512 xa = _mm512_broadcast_f32x8(_mm256_loadu_ps(x + j));      /* columns j..j+7, both halves */
        const __m512 xb = _mm512_broadcast_f32x8(_mm256_loadu_ps(x + j + 8));  /* j+8..j+15 */
        const __m512 w01a = _mm512_mul_ps(FP8_WIDE(_mm_unpacklo_epi64(r0, r1)), sc);
        const __m512 w23a = _mm512_mul_ps(FP8_WIDE(_mm_unpacklo_epi64(r2, r3)), sc);
        const __m512 w01b = _mm512_mul_ps(FP8_WIDE(_mm_unpackhi_epi64(r0, r1)), sc);
        const __m512 w23b = _mm512_mul_ps(FP8_WIDE(_mm_unpackhi_epi64(r2, r3)), sc);
        acc01 = _mm512_add_ps(acc01, _mm512_mul_ps(xa, w01a));
        acc23 = _mm512_add_ps(acc23, _mm512_mul_ps(xa, w23a));
        acc01 = _mm512_add_ps(acc01, _mm512_mul_ps(xb, w01b));
        acc23 = _mm512_add_ps(acc23, _mm512_mul_ps(xb, w23b));
    }
#undef FP8_WIDE
    *a0 = _mm512_castps512_ps256(acc01); *a1 = _mm512_extractf32x8_ps(acc01, 1);
    *a2 = _mm512_castps512_ps256(acc23); *a3 = _mm512_extractf32x8_ps(acc23, 1);
}

/*
 * vecops.h's dot product for several rows a_g against one b, 512 bits wide
 * (ds3_dot_rows): the dot's four 8-lane accumulators v0..v3 as two registers,
 * [v0 | v1] and [v2 | v3], so each multiply and add is two of its steps, lane
 * for lane; four rows at a time share each load of b. The ragged end is
 * loaded with zeros in the lanes past n, as the dot's zero-padded copy has
 * them; then (v0 + v2) + (v1 + v3) is one add of the two registers and one of
 * its halves, and the lanes pairwise left to right as the dot does: the same
 * operations in the same order, so the same bits (tests/test_ops.c compares
 * them with ds3_dot). Groups of four rows; the others (and every row where the
 * CPU lacks AVX-512, or DS3_NO_AVX512 is set) go to ds3_dot.
 */
/* One row's two registers: the step over columns [i, i + 32) (k0, k1: the
 * lanes that exist, zeros elsewhere) and the dot's final combination. */
#define DOT_STEP_512(lo, hi, ap, b0, b1, k0, k1)                                                \
    do {                                                                                    \
        lo = _mm512_add_ps(lo, _mm512_mul_ps(_mm512_maskz_loadu_ps(k0, ap), b0));           \
        hi = _mm512_add_ps(hi, _mm512_mul_ps(_mm512_maskz_loadu_ps(k1, (ap) + 16), b1));    \
    } while (0)
TARGET_AVX512 static float dot_finish_512(__m512 lo, __m512 hi) {
    const __m512 t2 = _mm512_add_ps(lo, hi);  /* [v0 + v2 | v1 + v3] */
    const __m256 t = _mm256_add_ps(_mm512_castps512_ps256(t2), _mm512_extractf32x8_ps(t2, 1));
    float l[8];
    _mm256_storeu_ps(l, t);
    float s = 0;
    for (int w = 0; w < 8; w += 2) s += l[w] + l[w + 1];
    return s;
}
/* Four rows against b. */
TARGET_AVX512 static void dot_4rows_avx512(float *out, const float *a, size_t lda, const float *b, int n) {
    const float *a0 = a, *a1 = a + lda, *a2 = a + 2 * lda, *a3 = a + 3 * lda;
    __m512 l0 = _mm512_setzero_ps(), h0 = l0, l1 = l0, h1 = l0, l2 = l0, h2 = l0, l3 = l0, h3 = l0;
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        const __m512 b0 = _mm512_loadu_ps(b + i), b1 = _mm512_loadu_ps(b + i + 16);
        DOT_STEP_512(l0, h0, a0 + i, b0, b1, 0xffff, 0xffff);
        DOT_STEP_512(l1, h1, a1 + i, b0, b1, 0xffff, 0xffff);
        DOT_STEP_512(l2, h2, a2 + i, b0, b1, 0xffff, 0xffff);
        DOT_STEP_512(l3, h3, a3 + i, b0, b1, 0xffff, 0xffff);
    }
    if (i < n) {  /* the ragged end: zeros past n, as the dot's padded copy */
        const int r = n - i;
        const __mmask16 k0 = r >= 16 ? 0xffff : (__mmask16)((1u << r) - 1);
        const __mmask16 k1 = r <= 16 ? 0 : (__mmask16)((1u << (r - 16)) - 1);
        const __m512 b0 = _mm512_maskz_loadu_ps(k0, b + i), b1 = _mm512_maskz_loadu_ps(k1, b + i + 16);
        DOT_STEP_512(l0, h0, a0 + i, b0, b1, k0, k1);
        DOT_STEP_512(l1, h1, a1 + i, b0, b1, k0, k1);
        DOT_STEP_512(l2, h2, a2 + i, b0, b1, k0, k1);
        DOT_STEP_512(l3, h3, a3 + i, b0, b1, k0, k1);
    }
    out[0] = dot_finish_512(l0, h0), out[1] = dot_finish_512(l1, h1);
    out[2] = dot_finish_512(l2, h2), out[3] = dot_finish_512(l3, h3);
}
#undef DOT_STEP_512

/* Rows of ds3_dot_rows done here: whole groups of four, none without AVX-512. */
int ds3_dot_rows_avx512(float *out, const float *a, size_t lda, int m, const float *b, int n);
int ds3_dot_rows_avx512(float *out, const float *a, size_t lda, int m, const float *b, int n) {
    if (!avx512_ok()) return 0;
    int g = 0;
    for (; g + 4 <= m; g += 4) dot_4rows_avx512(out + g, a + (size_t)g * lda, lda, b, n);
    return g;
}

/*
 * vecops.h's axpy_rows 512 bits wide: y[i] += a[d]·x_d[i] for d = 0..m-1 in
 * turn, each element's multiplies and adds those of the plain loops in their
 * order (element-wise, so the width changes no bit), y loaded and stored once
 * per four rows. Attention's weighted sums over the cached rows. False where
 * the CPU lacks AVX-512 (or DS3_NO_AVX512).
 */
bool ds3_axpy_rows_avx512(float *restrict y, const float *a, const float *restrict x, int m, size_t ldx, int n);
TARGET_AVX512 static void axpy_rows_512(float *restrict y, const float *a, const float *restrict x, int m,
                                        size_t ldx, int n) {
    int d = 0;
    for (; d + 4 <= m; d += 4) {
        const float *x0 = x + (size_t)d * ldx, *x1 = x0 + ldx, *x2 = x1 + ldx, *x3 = x2 + ldx;
        const __m512 a0 = _mm512_set1_ps(a[d]), a1 = _mm512_set1_ps(a[d + 1]);
        const __m512 a2 = _mm512_set1_ps(a[d + 2]), a3 = _mm512_set1_ps(a[d + 3]);
        for (int i = 0; i < n; i += 16) {
            const __mmask16 k = n - i >= 16 ? 0xffff : (__mmask16)((1u << (n - i)) - 1);
            __m512 yv = _mm512_maskz_loadu_ps(k, y + i);
            yv = _mm512_add_ps(yv, _mm512_mul_ps(a0, _mm512_maskz_loadu_ps(k, x0 + i)));
            yv = _mm512_add_ps(yv, _mm512_mul_ps(a1, _mm512_maskz_loadu_ps(k, x1 + i)));
            yv = _mm512_add_ps(yv, _mm512_mul_ps(a2, _mm512_maskz_loadu_ps(k, x2 + i)));
            yv = _mm512_add_ps(yv, _mm512_mul_ps(a3, _mm512_maskz_loadu_ps(k, x3 + i)));
            _mm512_mask_storeu_ps(y + i, k, yv);
        }
    }
    for (; d < m; d++) {
        const float *xd = x + (size_t)d * ldx;
        const __m512 ad = _mm512_set1_ps(a[d]);
        for (int i = 0; i < n; i += 16) {
            const __mmask16 k = n - i >= 16 ? 0xffff : (__mmask16)((1u << (n - i)) - 1);
            const __m512 yv = _mm512_maskz_loadu_ps(k, y + i);
            _mm512_mask_storeu_ps(y + i, k, _mm512_add_ps(yv, _mm512_mul_ps(ad, _mm512_maskz_loadu_ps(k, xd + i))));
        }
    }
}
bool ds3_axpy_rows_avx512(float *restrict y, const float *a, const float *restrict x, int m, size_t ldx, int n) {
    if (!avx512_ok()) return false;
    axpy_rows_512(y, a, x, m, ldx, n);
    return true;
}

/* -1 until asked; then whether the CPU has AVX-512 F, VL and DQ and neither
 * DS3_NO_AVX512 nor DS3_NO_AVX2 is set. Tests flip it (ds3_lanes_select_avx512). */
static int avx512_state = -1;

static bool avx512_decide(void) {
    return ds3_cpu_has_avx512() && !getenv("DS3_NO_AVX512") && !getenv("DS3_NO_AVX2");
}
static bool avx512_ok(void) { return ds3_decided(&avx512_state, avx512_decide); }

bool ds3_lanes_select_avx512(bool on) {
    if (on && !ds3_cpu_has_avx512()) return false;
    avx512_state = on;
    return true;
}
#endif

void ds3_lanes_rows_avx2(ds3_real *out, const ds3_real *in, const ds3_tensor *w, int T, int64_t i0, int64_t i1);
void ds3_lanes_rows_avx2(ds3_real *out, const ds3_real *in, const ds3_tensor *w, int T, int64_t i0, int64_t i1) {
    lanes_rows_avx2(out, in, w, T, i0, i1);
}

#ifndef DS3_F64
/*
 * ds3_tensor_rows for BF16 and F8_E4M3 rows, eight elements per step: the
 * dequantisation of a BLAS tile (linear.c) and of every other block of rows.
 * Element-wise and exact up to the one rounding of value · scale that the
 * scalar loop also does, so the values are bit-identical to dtype.c's
 * (tests/test_dtype.c compares them). Returns false for other dtypes.
 */
bool ds3_tensor_rows_avx2(float *out, const ds3_tensor *w, int64_t r0, int64_t n);
bool ds3_tensor_rows_avx2(float *out, const ds3_tensor *w, int64_t r0, int64_t n) {
    const int64_t cols = w->cols;
    if (w->dtype == DS3_DT_BF16) {
        const unsigned char *p = (const unsigned char *)w->data + (size_t)(r0 * cols) * 2;
        const int64_t count = n * cols;
        int64_t k = 0;
        for (; k + 8 <= count; k += 8) {
            __m128i h = _mm_loadu_si128((const __m128i *)(p + 2 * k));
            __m256i u = _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);  /* bf16: the top half of an f32 */
            _mm256_storeu_ps(out + k, _mm256_castsi256_ps(u));
        }
        for (; k < count; k++) {
            uint32_t u = (uint32_t)((uint16_t)(p[2 * k] | p[2 * k + 1] << 8)) << 16;
            memcpy(out + k, &u, 4);
        }
        return true;
    }
    if (w->dtype != DS3_DT_F8_E4M3) return false;
    const unsigned char *p = (const unsigned char *)w->data + (size_t)(r0 * cols);
    const int64_t ncb = (cols + DS3_FP8_BLOCK - 1) / DS3_FP8_BLOCK;
    if (w->fp8_seen) fp8_learn_blocks_avx2(w, r0, r0 + n);  /* which blocks hold a NaN code (lanes.h) */
    for (int64_t i = 0; i < n; i++) {
        const unsigned char *q = p + i * cols;
        float *o = out + i * cols;
        const unsigned char *srow = (const unsigned char *)w->scale_inv + 4 * (size_t)(((r0 + i) / DS3_FP8_BLOCK) * ncb);
        for (int64_t j0 = 0; j0 < cols; j0 += DS3_FP8_BLOCK) {
            float sc = 1.0f;  /* unscaled e4m3 (tests, tools) */
            if (w->scale_inv) memcpy(&sc, srow + 4 * (j0 / DS3_FP8_BLOCK), 4);
            const int64_t j1 = j0 + DS3_FP8_BLOCK < cols ? j0 + DS3_FP8_BLOCK : cols;
            int64_t j = j0;
            /* the decoder and scale lanes.h's kernels use on this block: the
             * half decoder with scale · 2^8 where the block allows it, the same bits */
            bool half;
            const float s8 = fp8_block_scale_w_avx2(w, r0 + i, j0, j1 - j0, sc, &half);
            if (half) {
                const __m256 sv8 = _mm256_set1_ps(s8);
                for (; j + 16 <= j1; j += 16) {
                    __m256 lo, hi;
                    fp8x16_half_avx2(&lo, &hi, q + j);
                    _mm256_storeu_ps(o + j, _mm256_mul_ps(lo, sv8));
                    _mm256_storeu_ps(o + j + 8, _mm256_mul_ps(hi, sv8));
                }
                for (; j + 8 <= j1; j += 8) {
                    __m256 v;
                    fp8x8_half_avx2(&v, q + j);
                    _mm256_storeu_ps(o + j, _mm256_mul_ps(v, sv8));
                }
            }
            const __m256 sv = _mm256_set1_ps(sc);
            for (; j + 8 <= j1; j += 8) {
                __m256 v;
                fp8x8_avx2(&v, q + j);
                _mm256_storeu_ps(o + j, _mm256_mul_ps(v, sv));
            }
            for (; j < j1; j++) o[j] = ds3_e4m3_table[q[j]] * sc;
        }
    }
    return true;
}

/* ops.c's attention dot product and axpy (vecops.h), AVX2 copy. */
#define VEC_FN(name) name##_avx2
#include "vecops.h"
#undef VEC_FN

ds3_real ds3_dot_avx2(const ds3_real *a, const ds3_real *b, int n);
ds3_real ds3_dot_avx2(const ds3_real *a, const ds3_real *b, int n) { return dot_avx2(a, b, n); }
void ds3_axpy_avx2(ds3_real *restrict y, ds3_real a, const ds3_real *restrict x, int n);
void ds3_axpy_avx2(ds3_real *restrict y, ds3_real a, const ds3_real *restrict x, int n) { axpy_avx2(y, a, x, n); }
void ds3_axpy_rows_avx2(ds3_real *restrict y, const ds3_real *a, const ds3_real *restrict x, int m, size_t ldx,
                        int n);
void ds3_axpy_rows_avx2(ds3_real *restrict y, const ds3_real *a, const ds3_real *restrict x, int m, size_t ldx,
                        int n) {
    axpy_rows_avx2(y, a, x, m, ldx, n);
}
#endif

#endif

#if !DS3_AVX2_COPY || defined(DS3_F64)
/* Not x86-64 (linear.c uses the portable copy), or the f64 build: no wide tiles. */
bool ds3_lanes_select_avx512(bool on) { return !on; }
#endif

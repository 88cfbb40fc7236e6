/*
 * linear_fp8.c — fast mode's product of a few tokens for FP8 weights (decode
 * steps, most of a prefill's experts), with AVX-512: each 128-column block
 * summed over the exact code values, then multiplied by its scale.
 *
 *   out[t][i] = Σ_b s_b · Σ_{j in b} q[i][j] · x[t][j]
 *
 * (b the 128-column blocks of row i, s_b = scale_inv[i/128][b], q the e4m3
 * codes' values: docs/MODEL.md §7.) The lane kernel (lanes.h) dequantises
 * first — each weight rounded once, fl(q·s) — then multiplies and adds: about
 * eight vector operations per 16 weights, which left a decode step's FP8
 * matrices compute-bound at 5–7 G weights/s a core on the Xeon of
 * docs/BENCHMARKS.md, short of what the memory delivers. Here, as DeepSeek's
 * fp8_gemm and linear_amx.c apply the scales, a block's products are fused
 * multiply-adds of the exact values and the block's sum goes into the row's
 * with one more fused multiply-add by its scale: five operations per 16
 * weights, and fewer roundings.
 *
 * Decoding. An e4m3 code s eeee mmm, sign-extended to 16 bits, shifted left
 * by 7 and with bit 14 cleared is the IEEE half of its value·2⁻⁸ (exact for
 * every finite code, subnormals included); vcvtph2ps widens that to a float
 * exactly, and the block's scale is applied as s·2⁸ (exact short of a scale of
 * 2¹²⁰, which no checkpoint has). All of a block's sum then carries the same
 * factor 2⁻⁸, which changes no rounding unless a partial sum falls below
 * float's normal range: the bits are those of the exact values (the test's
 * plain-C twin computes with them). The NaN codes (s 1111 111) would decode
 * as 480: a block that holds one takes the decoder that maps them to NaN.
 * Whether it does is learned once per 128×128 block (w->fp8_seen, as the lane
 * kernel keeps it); a weight without that record always takes it.
 *
 * The order, for every element: lane l (0..15) of a block's accumulator adds
 * the products of the columns ≡ l (mod 16) in column order, from zero (the
 * columns past the end as 0·0); the row's accumulator adds each block's
 * accumulator times s_b·2⁸, block by block; its sixteen lanes are summed by
 * attend.c's tree ((l0 + l2) + (l1 + l3) within each 128-bit quarter, then
 * (q0 + q2) + (q1 + q3)). The same operations whatever T, the rows beside it
 * or the thread count — so fast mode keeps its bits for any thread count, and
 * the rows of a verification of drafts, which go through here too
 * (ds3_linear_decode, decode_rows), have a decode step's bits. linear.c sends
 * fast mode's FP8 calls of up to FP8_ROWS_MAX_T tokens here: two tokens share
 * each decoded chunk, where AMX would first convert the whole weight to bf16. Float builds on
 * CPUs with AVX-512 F, BW and VL (and the lane kernels' AVX2); DS3_NO_AVX512
 * and DS3_NO_AVX2 turn it off. Not the lane kernel's bits: a fast decode step
 * of an FP8 model differs from a deterministic one within rounding.
 */
#include "kernels/kernels.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if DS3_AVX2_COPY && !defined(DS3_F64)
#include <immintrin.h>

#define TARGET_FP8 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,f16c,fma")))

/* -1 until asked; then whether this kernel runs. Tests switch it. */
static int fp8_state = -1;
static bool cpu_ok(void) { return ds3_cpu_has_avx512() && __builtin_cpu_supports("avx512bw"); }
static bool fp8_decide(void) { return cpu_ok() && !getenv("DS3_NO_AVX512") && !getenv("DS3_NO_AVX2"); }
bool ds3_fp8_rows_ok(void) { return ds3_decided(&fp8_state, fp8_decide); }
bool ds3_fp8_rows_select(bool on) {
    if (on && !cpu_ok()) return false;
    fp8_state = on;
    return true;
}

/* Does any of the n codes at q say NaN (s 1111 111)? */
TARGET_FP8 static bool any_nan_code(const unsigned char *q, int64_t n) {
    const __m512i low7 = _mm512_set1_epi8(0x7f);
    for (int64_t j = 0; j < n; j += 64) {
        const __mmask64 m = n - j >= 64 ? ~(__mmask64)0 : ((__mmask64)1 << (n - j)) - 1;
        const __m512i c = _mm512_and_si512(_mm512_maskz_loadu_epi8(m, q + j), low7);
        if (_mm512_mask_cmpeq_epi8_mask(m, c, low7)) return true;
    }
    return false;
}

/* Whether each 128×128 block of w is free of NaN codes is kept in the lane
 * kernel's record (lanes.h: 0 not looked at, 1 none, 2 some): learn_blocks
 * scans the blocks of row block rb not seen before, once (threads that meet
 * one at once scan it alike and store the same byte); block_clean reads it. */
static void learn_blocks(const ds3_tensor *w, int64_t rb) {
    if (!w->fp8_seen) return;
    const int64_t scols = (w->cols + DS3_FP8_BLOCK - 1) / DS3_FP8_BLOCK;
    for (int64_t cb = 0; cb < scols; cb++) {
        _Atomic unsigned char *seen = &w->fp8_seen[rb * scols + cb];
        if (atomic_load_explicit(seen, memory_order_relaxed)) continue;
        const int64_t r1 = (rb + 1) * DS3_FP8_BLOCK < w->rows ? (rb + 1) * DS3_FP8_BLOCK : w->rows;
        const int64_t c0 = cb * DS3_FP8_BLOCK, n = w->cols - c0 < DS3_FP8_BLOCK ? w->cols - c0 : DS3_FP8_BLOCK;
        bool clean = true;
        for (int64_t r = rb * DS3_FP8_BLOCK; r < r1 && clean; r++)
            clean = !any_nan_code((const unsigned char *)w->data + (size_t)(r * w->cols + c0), n);
        atomic_store_explicit(seen, clean ? 1 : 2, memory_order_relaxed);
    }
}
static inline bool block_clean(const ds3_tensor *w, int64_t rb, int64_t cb) {
    const int64_t scols = (w->cols + DS3_FP8_BLOCK - 1) / DS3_FP8_BLOCK;
    return w->fp8_seen && atomic_load_explicit(&w->fp8_seen[rb * scols + cb], memory_order_relaxed) == 1;
}

/* 32 codes to the floats value·2⁻⁸ of the first 16 (lo) and last 16 (hi);
 * with `nan`, NaN codes to NaN (else to 480·2⁻⁸). */
TARGET_FP8 static inline void decode32(__m512 *lo, __m512 *hi, __m256i codes, bool nan) {
    const __m512i w = _mm512_cvtepi8_epi16(codes);
    __m512i h = _mm512_and_si512(_mm512_slli_epi16(w, 7), _mm512_set1_epi16((short)0xBFFF));
    if (nan) {
        const __m512i low7 = _mm512_set1_epi16(0x7f);
        const __mmask32 isnan = _mm512_cmpeq_epi16_mask(_mm512_and_si512(w, low7), low7);
        h = _mm512_mask_mov_epi16(h, isnan, _mm512_set1_epi16(0x7e00));
    }
    *lo = _mm512_cvtph_ps(_mm512_castsi512_si256(h));
    *hi = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1));
}

/* The sum of a's sixteen lanes: within each 128-bit quarter (l0 + l2) +
 * (l1 + l3), then the quarters (q0 + q2) + (q1 + q3) (attend.c's sum16, one
 * vector). */
TARGET_FP8 static inline float hsum16(__m512 a) {
    a = _mm512_add_ps(a, _mm512_permute_ps(a, _MM_SHUFFLE(1, 0, 3, 2)));  /* l0 + l2, l1 + l3 */
    a = _mm512_add_ps(a, _mm512_permute_ps(a, _MM_SHUFFLE(2, 3, 0, 1)));  /* (l0 + l2) + (l1 + l3) */
    a = _mm512_add_ps(a, _mm512_shuffle_f32x4(a, a, _MM_SHUFFLE(1, 0, 3, 2)));  /* q0 + q2, q1 + q3 */
    a = _mm512_add_ps(a, _mm512_shuffle_f32x4(a, a, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm512_cvtss_f32(a);
}

/* Scale of block (rb, cb) times 2⁸ (1·2⁸ for unscaled codes). */
static inline float scale256(const ds3_tensor *w, int64_t rb, int64_t cb) {
    if (!w->scale_inv) return 256.0f;
    const int64_t scols = (w->cols + DS3_FP8_BLOCK - 1) / DS3_FP8_BLOCK;
    float s;
    memcpy(&s, (const unsigned char *)w->scale_inv + 4 * (size_t)(rb * scols + cb), 4);
    return s * 256.0f;
}

/* Bytes ahead of the codes being read that the kernel asks the cache for. A
 * decode step's FP8 matrices are small (an expert's is 256 KB on `small`),
 * read once each, at scattered addresses: the hardware prefetcher, which
 * starts over at every 4 KiB page, left this kernel at 4.8–5.3 GB/s on one
 * core of the Xeon of docs/BENCHMARKS.md where the head, one stream, reads
 * 9–10. Asking for the line 4 KiB ahead of each row's read: 6–8 GB/s (2 KiB:
 * 4.4–6.4; 8 KiB: 7–7.6). A prefetch changes no bit. */
#define PREFETCH 4096

/* One chunk of 32 columns from j (the lanes of m: the columns before the
 * row's end) of rows q + r·cols, r < R, into blk[r][u], u < NT. */
#define CHUNK(m, nan)                                                                                \
    do {                                                                                             \
        __m512 xlo[2], xhi[2];                                                                       \
        _Pragma("GCC unroll 2") for (int u = 0; u < NT; u++) {                                       \
            const float *x = in + (size_t)(t + u) * (size_t)cols + j;                                \
            xlo[u] = _mm512_maskz_loadu_ps((__mmask16)(m), x);                                       \
            xhi[u] = _mm512_maskz_loadu_ps((__mmask16)((m) >> 16), x + 16);                          \
        }                                                                                            \
        _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {                                        \
            __m512 lo, hi;                                                                           \
            _mm_prefetch((const char *)q + (size_t)(r * cols + j) + PREFETCH, _MM_HINT_T0);              \
            decode32(&lo, &hi, _mm256_maskz_loadu_epi8((m), q + (size_t)(r * cols + j)), (nan));     \
            _Pragma("GCC unroll 2") for (int u = 0; u < NT; u++) {                                   \
                blk[r][u] = _mm512_fmadd_ps(lo, xlo[u], blk[r][u]);                                  \
                blk[r][u] = _mm512_fmadd_ps(hi, xhi[u], blk[r][u]);                                  \
            }                                                                                        \
        }                                                                                            \
    } while (0)

/*
 * Rows [i, i + R) for tokens [t, t + NT), R and NT constants after inlining.
 * The rows lie in one 128-row block (i is a multiple of R, which divides 128),
 * so they share the decoder choice and the scales.
 */
TARGET_FP8 static inline __attribute__((always_inline)) void rows_block(float *out, const float *in,
                                                                         const ds3_tensor *w, int64_t i, int t,
                                                                         const int R, const int NT) {
    const int64_t rows = w->rows, cols = w->cols;
    const unsigned char *q = (const unsigned char *)w->data + (size_t)(i * cols);
    const int64_t rb = i / DS3_FP8_BLOCK;
    __m512 acc[4][2], blk[4][2];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int u = 0; u < NT; u++) acc[r][u] = _mm512_setzero_ps();
    for (int64_t j0 = 0, cb = 0; j0 < cols; j0 += DS3_FP8_BLOCK, cb++) {
        const int64_t j1 = j0 + DS3_FP8_BLOCK < cols ? j0 + DS3_FP8_BLOCK : cols;
#pragma GCC unroll 4
        for (int r = 0; r < R; r++)
#pragma GCC unroll 2
            for (int u = 0; u < NT; u++) blk[r][u] = _mm512_setzero_ps();
        int64_t j = j0;
        if (block_clean(w, rb, cb))
            for (; j + 32 <= j1; j += 32) CHUNK(~(__mmask32)0, false);
        else
            for (; j + 32 <= j1; j += 32) CHUNK(~(__mmask32)0, true);
        if (j < j1) {  /* the row's last columns: the rest of the chunk as 0·0 */
            const __mmask32 m = ((__mmask32)1 << (j1 - j)) - 1;
            CHUNK(m, !block_clean(w, rb, cb));
        }
        const __m512 s = _mm512_set1_ps(scale256(w, rb, cb));  /* the rows' block: one scale */
#pragma GCC unroll 4
        for (int r = 0; r < R; r++)
#pragma GCC unroll 2
            for (int u = 0; u < NT; u++) acc[r][u] = _mm512_fmadd_ps(blk[r][u], s, acc[r][u]);
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int u = 0; u < NT; u++) out[(size_t)(t + u) * (size_t)rows + (size_t)(i + r)] = hsum16(acc[r][u]);
}
#undef CHUNK

/* Rows [i0, i1) for all T tokens: four rows and two tokens at a time. */
TARGET_FP8 static void rows_range(float *out, const float *in, const ds3_tensor *w, int T, int64_t i0, int64_t i1) {
    learn_blocks(w, i0 / DS3_FP8_BLOCK);  /* [i0, i1) lies in one row block */
    int64_t i = i0;
    for (; i + 4 <= i1; i += 4) {
        int t = 0;
        for (; t + 2 <= T; t += 2) rows_block(out, in, w, i, t, 4, 2);
        if (t < T) rows_block(out, in, w, i, t, 4, 1);
    }
    for (; i < i1; i++) {
        int t = 0;
        for (; t + 2 <= T; t += 2) rows_block(out, in, w, i, t, 1, 2);
        if (t < T) rows_block(out, in, w, i, t, 1, 1);
    }
}

/* Rows handed to one OpenMP iteration (a multiple of 4 dividing 128). */
#define ROW_CHUNK 16

void ds3_linear_fp8_rows(float *out, const float *in, const ds3_tensor *w, int T) {
    DS3_ASSERT(w->dtype == DS3_DT_F8_E4M3);
    const int64_t rows = w->rows;
    const int64_t nchunks = (rows + ROW_CHUNK - 1) / ROW_CHUNK;
#ifdef _OPENMP
    const bool nested = omp_in_parallel();
#else
    const bool nested = false;
#endif
#pragma omp parallel for schedule(static) if (rows * w->cols * (int64_t)T > 32768 && !nested)
    for (int64_t c = 0; c < nchunks; c++) {
        const int64_t i0 = c * ROW_CHUNK, i1 = i0 + ROW_CHUNK < rows ? i0 + ROW_CHUNK : rows;
        rows_range(out, in, w, T, i0, i1);
    }
}

#else /* no AVX-512 copy: the lane kernel everywhere */

bool ds3_fp8_rows_ok(void) { return false; }
bool ds3_fp8_rows_select(bool on) { return !on; }
void ds3_linear_fp8_rows(ds3_real *out, const ds3_real *in, const ds3_tensor *w, int T) {
    (void)out, (void)in, (void)w, (void)T;
    DS3_ASSERT(!"ds3_linear_fp8_rows without AVX-512 (ds3_fp8_rows_ok is false)");
}

#endif

/*
 * linear_amx.c — fast mode's product for BF16 and FP8 weights on Intel AMX
 * (Advanced Matrix Extensions: Xeon from Sapphire Rapids on), float build.
 *
 *   out[T][rows] = in[T][cols] · w[rows][cols]ᵀ,   w BF16 or FP8, in and out fp32
 *
 * AMX multiplies bf16 by bf16 and accumulates in fp32: one TDPBF16PS adds to
 * each element of a 16×16 fp32 tile the 32 products of a row of a 16×32 bf16
 * tile and a column of a 32×16 one, sixteen times the multiply-adds of an
 * AVX-512 fp32 FMA per cycle. The weights are bf16 already. The activations are
 * fp32, and rounding them to bf16 (what a bf16 GPU build and llama.cpp's BF16
 * path do) would lose 16 of their 24 bits. Instead each is split, exactly, into
 * three bf16 parts:
 *
 *   x1 = x with its low 16 bits cleared,   r = x − x1,
 *   x2 = r with its low 16 bits cleared,   x3 = r − x2,      x = x1 + x2 + x3
 *
 * x has 24 significant bits; x1 takes the top 8, r holds the other 16 (the
 * subtraction is exact: same sign, same exponent), x2 the next 8 and x3 the
 * last 8, so x3 is a bf16 too. Then w·x = w·x1 + w·x2 + w·x3, and each of the
 * three products of two bf16 is exact in fp32 (8 × 8 significant bits). Every
 * output is the fp32 accumulation of 3·cols exact products, as the BLAS path's
 * sgemm accumulates cols of them: the same accuracy (tests/test_linear.c holds
 * both to a float64 reference), at about 16/3 times the arithmetic rate. What
 * differs is the order of the additions, so the bits differ from the BLAS
 * path's, as the BLAS path's differ between CPUs: fast mode promises the same
 * bits for any thread count on one machine (docs/PORTABILITY.md). Here an
 * element is computed by the same instructions on the same data whatever T, the
 * other rows or the thread count: threads split weight rows, and an element's
 * sum runs over k in 32-column blocks, in each block the x1, x2, x3 parts in
 * that order.
 *
 * Two edges of the split, both below anything a forward pass meets: AMX reads a
 * bf16 subnormal as zero and flushes a subnormal result to zero, so parts of
 * magnitude below 2^-126 (activations below about 2^-110) are lost; and an
 * infinite or NaN input gives NaN outputs (x − x1 is NaN), where sgemm could
 * give an infinity.
 *
 * The layout. A tile is 16 rows of 64 bytes. The weights are the A tiles as
 * stored: 16 weight rows × 32 columns, read from the checkpoint with the row
 * stride (no copy, no conversion) where the rows start on a 64-byte boundary
 * (else copied: row_block). The activations are the B tiles, packed a
 * chunk of token blocks (about 1 MiB) at a time, which stays in L2 while every
 * row block goes over it: TDPBF16PS wants B's 32 reduction indices as 16 rows
 * of pairs, so
 * row r of the tile for tokens t0..t0+15, columns k0..k0+31 and part p holds,
 * for each token c, the pair (x_p[t0+c][k0+2r], x_p[t0+c][k0+2r+1]). A tile of
 * results is C[n][t]: weight rows down, tokens across; it is stored and copied
 * into out transposed. Four result tiles (two row blocks × two token blocks),
 * two A and two B tiles fill the eight tile registers.
 *
 * A row block that would reach past the tensor (rows not a multiple of 16, cols
 * not of 32: tiny's shapes; V3's and small's never) is copied, zero-padded,
 * and the padding meets zeros in the packed activations.
 *
 * FP8 weights (block_fp8_nt). An e4m3 code is exact in bf16, so each row pair's
 * codes are converted into the thread's copy (fp8_to_bf16, once per row pair
 * and chunk of tokens) and multiplied as above; the block scale, which changes
 * every 128 columns, is applied to each 128-column block's sum: an output is
 * Σ_b s_b · (the fp32 sum of block b's 3·128 exact products), as DeepSeek's
 * fp8_gemm applies its scales — not the BLAS path's sum of x·(value·scale
 * rounded once) (docs/MODEL.md §7): other bits, the same accuracy or better
 * (no weight is rounded). (A scale of 2^120 or more, which no checkpoint has,
 * would overflow as s·2^8 and give infinities where the BLAS path does not.)
 *
 * Used by ds3_linear in fast mode for T >= 2 when the weight is BF16 or FP8, the CPU
 * has AMX-BF16, Linux grants the process the tile state (arch_prctl
 * ARCH_REQ_XCOMP_PERM) and DS3_NO_AMX is unset.
 */
#define _DEFAULT_SOURCE   /* syscall */
#include "kernels/kernels.h"

#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if DS3_AMX_COPY
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#define TARGET_AMX __attribute__((target("amx-tile,amx-bf16")))
/* (and AVX-512 F, for the FP8 blocks' scaled sums) */
#define TARGET_AMX512 __attribute__((target("amx-tile,amx-bf16,avx512f")))

/* Tiles: 0..3 results (C[row block][token block]), 4 and 5 weights, 6 and 7
 * activations; all 16 rows of 64 bytes. */
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

/* Bytes of one packed tile, and of the three parts of one 32-column block. */
#define TILE_BYTES 1024
#define KBLOCK_U16 (3 * TILE_BYTES / 2)

/* The packed activations of the calling thread (grown, never shrunk; freed by
 * ds3_linear_release). */
static _Thread_local uint16_t *pack_buf;
static _Thread_local size_t pack_cap;
/* Each thread's copy of a weight row block whose tiles would reach past the
 * tensor (the last block when rows is not a multiple of 16, every block when
 * cols is not one of 32), zero-padded. */
static _Thread_local uint16_t *edge_buf;
static _Thread_local size_t edge_cap;

/*
 * Token block tb of the packed activations: for each 32-column block its three
 * parts' tiles, one after the other; tokens past T and columns past cols are
 * zeros. For one block and part: each token's 32 values in two registers, the
 * part taken (x1 = x & 0xffff0000; r = x − x1, x2 = r & 0xffff0000, x3 = r − x2:
 * the subtractions are exact, above), its top halves gathered into 16 pairs
 * (vpermt2w), one register per token; the 16×16 pairs transposed so that a
 * register holds pair r of every token, which is row r of the tile.
 */
#define TARGET_AVX512BW __attribute__((target("avx512f,avx512bw")))

TARGET_AVX512BW static inline __m512i part_of(__m512 x, int p) {
    const __m512i top = _mm512_set1_epi32((int)0xffff0000u);
    const __m512i x1 = _mm512_and_si512(_mm512_castps_si512(x), top);
    if (p == 0) return x1;
    const __m512 r = _mm512_sub_ps(x, _mm512_castsi512_ps(x1));
    const __m512i x2 = _mm512_and_si512(_mm512_castps_si512(r), top);
    if (p == 1) return x2;
    return _mm512_castps_si512(_mm512_sub_ps(r, _mm512_castsi512_ps(x2)));
}

/* v[i] holds row i of a 16×16 matrix of 32-bit pairs; afterwards, column i.
 * Four-by-four transposes inside each 128-bit lane (unpack), then of the lanes
 * themselves (shuffle_i32x4). */
TARGET_AVX512BW static inline __attribute__((always_inline)) void transpose16(__m512i v[16]) {
    __m512i s[16];
#pragma GCC unroll 4
    for (int g = 0; g < 4; g++) {
        const __m512i t0 = _mm512_unpacklo_epi32(v[4 * g], v[4 * g + 1]),
                      t1 = _mm512_unpackhi_epi32(v[4 * g], v[4 * g + 1]);
        const __m512i t2 = _mm512_unpacklo_epi32(v[4 * g + 2], v[4 * g + 3]),
                      t3 = _mm512_unpackhi_epi32(v[4 * g + 2], v[4 * g + 3]);
        s[4 * g] = _mm512_unpacklo_epi64(t0, t2);
        s[4 * g + 1] = _mm512_unpackhi_epi64(t0, t2);
        s[4 * g + 2] = _mm512_unpacklo_epi64(t1, t3);
        s[4 * g + 3] = _mm512_unpackhi_epi64(t1, t3);
    }
    /* s[4g + j], lane l: elements 4l + j of rows 4g .. 4g + 3; row 4l + j of the
     * result is lane l of s[j], s[4 + j], s[8 + j], s[12 + j] */
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
        const __m512i u0 = _mm512_shuffle_i32x4(s[j], s[4 + j], _MM_SHUFFLE(1, 0, 1, 0)),
                      u1 = _mm512_shuffle_i32x4(s[j], s[4 + j], _MM_SHUFFLE(3, 2, 3, 2)),
                      u2 = _mm512_shuffle_i32x4(s[8 + j], s[12 + j], _MM_SHUFFLE(1, 0, 1, 0)),
                      u3 = _mm512_shuffle_i32x4(s[8 + j], s[12 + j], _MM_SHUFFLE(3, 2, 3, 2));
        v[j] = _mm512_shuffle_i32x4(u0, u2, _MM_SHUFFLE(2, 0, 2, 0));
        v[4 + j] = _mm512_shuffle_i32x4(u0, u2, _MM_SHUFFLE(3, 1, 3, 1));
        v[8 + j] = _mm512_shuffle_i32x4(u1, u3, _MM_SHUFFLE(2, 0, 2, 0));
        v[12 + j] = _mm512_shuffle_i32x4(u1, u3, _MM_SHUFFLE(3, 1, 3, 1));
    }
}

TARGET_AVX512BW static void pack_tokens(uint16_t *dst, const float *in, int T, int64_t cols, int64_t tb) {
    const int64_t kblocks = (cols + 31) / 32;
    const int ntok = T - tb * 16 < 16 ? (int)(T - tb * 16) : 16;
    const __m512i odd = _mm512_set_epi16(63, 61, 59, 57, 55, 53, 51, 49, 47, 45, 43, 41, 39, 37, 35, 33, 31, 29, 27,
                                         25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    const float *x = in + tb * 16 * cols;
    for (int64_t kb = 0; kb < kblocks; kb++) {
        const int64_t left = cols - kb * 32;
        const __mmask16 m0 = left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1);
        const __mmask16 m1 = left >= 32 ? 0xffff : left > 16 ? (__mmask16)((1u << (left - 16)) - 1) : 0;
        for (int p = 0; p < 3; p++) {
            __m512i v[16];
            for (int c = 0; c < 16; c++) {
                if (c >= ntok) {
                    v[c] = _mm512_setzero_si512();
                    continue;
                }
                const float *xc = x + c * cols + kb * 32;
                v[c] = _mm512_permutex2var_epi16(part_of(_mm512_maskz_loadu_ps(m0, xc), p), odd,
                                                 part_of(_mm512_maskz_loadu_ps(m1, xc + 16), p));
            }
            transpose16(v);
            uint16_t *t = dst + kb * KBLOCK_U16 + p * (TILE_BYTES / 2);
            for (int r = 0; r < 16; r++) _mm512_store_si512((void *)(t + r * 32), v[r]);
        }
    }
}

/* (A constant in memory: gcc 12 treats _tile_loadconfig's operand as unread
 * and dropped the stores that filled a local configuration.) */
static const tile_config tile_shapes __attribute__((aligned(64))) = {
    .palette = 1,
    .colsb = {64, 64, 64, 64, 64, 64, 64, 64},
    .rows = {16, 16, 16, 16, 16, 16, 16, 16},
};

TARGET_AMX static void tiles_configure(void) { _tile_loadconfig(&tile_shapes); }

TARGET_AMX static void tiles_release(void) { _tile_release(); }

/* A stored result tile C[n][t] into out[t][n0 + n], rows below `rows`,
 * tokens t0.. below T: transposed in registers, one masked store per token. */
TARGET_AVX512BW static void scatter(float *out, int64_t rows, const float *c, int64_t n0, int64_t t0, int T) {
    const int nmax = rows - n0 < 16 ? (int)(rows - n0) : 16;
    const __mmask16 m = (__mmask16)((1u << nmax) - 1);
    __m512i v[16];
    for (int n = 0; n < 16; n++) v[n] = _mm512_load_si512((const void *)(c + n * 16));
    transpose16(v);
    for (int t = 0; t < 16 && t0 + t < T; t++)
        _mm512_mask_storeu_ps(out + (t0 + t) * rows + n0, m, _mm512_castsi512_ps(v[t]));
}

/* Result tiles 0..3 (those nn and nt use) := the sum over the 32-column blocks
 * kb0 .. kb1 − 1, in each the parts x1, x2, x3 in turn. */
TARGET_AMX static inline __attribute__((always_inline)) void tiles_sum(const unsigned char *w0,
                                                                       const unsigned char *w1, size_t stride,
                                                                       const uint16_t *b0, const uint16_t *b1,
                                                                       int64_t kb0, int64_t kb1, const int nn,
                                                                       const int nt) {
    _tile_zero(0);
    if (nt == 2) _tile_zero(1);
    if (nn == 2) _tile_zero(2);
    if (nn == 2 && nt == 2) _tile_zero(3);
    for (int64_t kb = kb0; kb < kb1; kb++) {
        _tile_loadd(4, w0 + kb * 64, stride);
        if (nn == 2) _tile_loadd(5, w1 + kb * 64, stride);
        for (int p = 0; p < 3; p++) {
            const size_t off = (size_t)kb * KBLOCK_U16 + (size_t)p * (TILE_BYTES / 2);
            _tile_loadd(6, b0 + off, 64);
            if (nt == 2) _tile_loadd(7, b1 + off, 64);
            _tile_dpbf16ps(0, 4, 6);
            if (nt == 2) _tile_dpbf16ps(1, 4, 7);
            if (nn == 2) _tile_dpbf16ps(2, 5, 6);
            if (nn == 2 && nt == 2) _tile_dpbf16ps(3, 5, 7);
        }
    }
}

/*
 * Rows n0 .. n0 + 16·nn − 1 of the output for token blocks tb .. tb + nt − 1
 * (nn, nt ∈ {1, 2}): the sum over the 32-column blocks, in each the parts x1,
 * x2, x3 in turn. Inlined into block(), whose calls pass the constants.
 */
TARGET_AMX static inline __attribute__((always_inline)) void block_nt(float *out, const ds3_tensor *w,
                                                                      const unsigned char *w0, size_t stride,
                                                                      const uint16_t *pack, int64_t n0,
                                                                      int64_t tb, int64_t tl, int T,
                                                                      const int nn, const int nt) {
    const int64_t kblocks = (w->cols + 31) / 32;
    const unsigned char *w1 = w0 + 16 * stride;
    const uint16_t *b0 = pack + tl * kblocks * KBLOCK_U16, *b1 = b0 + kblocks * KBLOCK_U16;
    tiles_sum(w0, w1, stride, b0, b1, 0, kblocks, nn, nt);
    float c[256] __attribute__((aligned(64)));
    _tile_stored(0, c, 64);
    scatter(out, w->rows, c, n0, tb * 16, T);
    if (nt == 2) {
        _tile_stored(1, c, 64);
        scatter(out, w->rows, c, n0, tb * 16 + 16, T);
    }
    if (nn == 2) {
        _tile_stored(2, c, 64);
        scatter(out, w->rows, c, n0 + 16, tb * 16, T);
    }
    if (nn == 2 && nt == 2) {
        _tile_stored(3, c, 64);
        scatter(out, w->rows, c, n0 + 16, tb * 16 + 16, T);
    }
}

/* acc[i] += s · (result tile i), through c. */
#define TILE_ADD(i, acc, s)                                                                    \
    do {                                                                                       \
        _tile_stored(i, c, 64);                                                                \
        for (int e = 0; e < 256; e += 16)                                                      \
            _mm512_store_ps(acc + e, _mm512_fmadd_ps(_mm512_load_ps(c + e), s, _mm512_load_ps(acc + e))); \
    } while (0)

/*
 * The same for FP8 weights (their codes as bf16, times 2^-8: fp8_to_bf16),
 * whose scale changes every 128 columns: each 128-column block's sum (four
 * 32-column blocks, the three parts in each) is a tile of its own, added to
 * the output times the block's scale·2^8 — w·x = Σ_b s_b · Σ_{k in b} q_k·x_k,
 * as DeepSeek's fp8_gemm applies its scales, the codes' products exact. The
 * 32 rows lie in one 128-row block, so one scale per tile and block.
 */
TARGET_AMX512 static inline __attribute__((always_inline)) void block_fp8_nt(float *out, const ds3_tensor *w,
                                                                          const unsigned char *w0, size_t stride,
                                                                          const uint16_t *pack, int64_t n0,
                                                                          int64_t tb, int64_t tl, int T,
                                                                          const int nn, const int nt) {
    const int64_t kblocks = (w->cols + 31) / 32, sblocks = (w->cols + DS3_FP8_BLOCK - 1) / DS3_FP8_BLOCK;
    const unsigned char *w1 = w0 + 16 * stride;
    const uint16_t *b0 = pack + tl * kblocks * KBLOCK_U16, *b1 = b0 + kblocks * KBLOCK_U16;
    const unsigned char *srow = (const unsigned char *)w->scale_inv + (size_t)(n0 / DS3_FP8_BLOCK) * sblocks * 4;
    float acc[4][256] __attribute__((aligned(64))), c[256] __attribute__((aligned(64)));
    memset(acc, 0, sizeof acc);
    for (int64_t sb = 0; sb < sblocks; sb++) {
        float sf;
        memcpy(&sf, srow + sb * 4, sizeof sf);
        const __m512 s = _mm512_set1_ps(sf * 256.0f);
        tiles_sum(w0, w1, stride, b0, b1, sb * 4, sb * 4 + 4 < kblocks ? sb * 4 + 4 : kblocks, nn, nt);
        TILE_ADD(0, acc[0], s);
        if (nt == 2) TILE_ADD(1, acc[1], s);
        if (nn == 2) TILE_ADD(2, acc[2], s);
        if (nn == 2 && nt == 2) TILE_ADD(3, acc[3], s);
    }
    scatter(out, w->rows, acc[0], n0, tb * 16, T);
    if (nt == 2) scatter(out, w->rows, acc[1], n0, tb * 16 + 16, T);
    if (nn == 2) scatter(out, w->rows, acc[2], n0 + 16, tb * 16, T);
    if (nn == 2 && nt == 2) scatter(out, w->rows, acc[3], n0 + 16, tb * 16 + 16, T);
}
#undef TILE_ADD

TARGET_AMX512 static void block(float *out, const ds3_tensor *w, const unsigned char *w0, size_t stride,
                             const uint16_t *pack, int64_t n0, int64_t tb, int64_t tl, int T, int nn, int nt) {
    if (w->dtype == DS3_DT_F8_E4M3) {
        if (nn == 2 && nt == 2) block_fp8_nt(out, w, w0, stride, pack, n0, tb, tl, T, 2, 2);
        else if (nn == 2) block_fp8_nt(out, w, w0, stride, pack, n0, tb, tl, T, 2, 1);
        else if (nt == 2) block_fp8_nt(out, w, w0, stride, pack, n0, tb, tl, T, 1, 2);
        else block_fp8_nt(out, w, w0, stride, pack, n0, tb, tl, T, 1, 1);
    } else if (nn == 2 && nt == 2) block_nt(out, w, w0, stride, pack, n0, tb, tl, T, 2, 2);
    else if (nn == 2) block_nt(out, w, w0, stride, pack, n0, tb, tl, T, 2, 1);
    else if (nt == 2) block_nt(out, w, w0, stride, pack, n0, tb, tl, T, 1, 2);
    else block_nt(out, w, w0, stride, pack, n0, tb, tl, T, 1, 1);
}

/*
 * n FP8 codes as bf16, zeros up to kpad: each code's value times 2^-8, exactly
 * (the caller multiplies the block scale by 2^8). An e4m3 code s eeee mmm
 * shifted into fp16's bit positions, s eeeee mmmmmmmmmm with the code's four
 * exponent bits in the low four, is the same number times 2^-8 (fp16's bias is
 * 15, e4m3's 7), subnormals included; fp16 → fp32 is exact, and so is keeping
 * the top 16 bits (at most 4 significant bits). NaN codes (0x7f, 0xff) become
 * a bf16 NaN. The codes are read from memory once per call: each line is
 * asked for 4 KiB ahead (the row block's rows are contiguous), as
 * copy_prefetch does for BF16 (a 512-token prefill of small fp8, two threads,
 * ten interleaved pairs: median ratio 1.05).
 */
#define TARGET_AVX512BWVL __attribute__((target("avx512f,avx512bw,avx512vl")))
/* Bytes ahead of a weight read that the copies below ask the cache for. */
#define PREFETCH_AHEAD 4096
TARGET_AVX512BWVL static void fp8_to_bf16(uint16_t *dst, const unsigned char *q, int64_t n, int64_t kpad) {
    const __m512i low7 = _mm512_set1_epi16(0x7f), sign = _mm512_set1_epi16(0x80), nan = _mm512_set1_epi16(0x7fc0);
    for (int64_t j = 0; j < kpad; j += 32) {
        const int64_t left = n - j;
        const __mmask32 m = left >= 32 ? 0xffffffffu : left > 0 ? (__mmask32)((1u << left) - 1) : 0;
        if ((j & 63) == 0) _mm_prefetch((const char *)q + j + PREFETCH_AHEAD, _MM_HINT_T0);
        const __m512i v = _mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(m, q + j));
        const __m512i mag = _mm512_and_si512(v, low7);
        const __m512i h = _mm512_or_si512(_mm512_slli_epi16(mag, 7), _mm512_slli_epi16(_mm512_and_si512(v, sign), 8));
        const __m512 lo = _mm512_cvtph_ps(_mm512_castsi512_si256(h)), hi = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1));
        const __m256i lo16 = _mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_castps_si512(lo), 16));
        const __m256i hi16 = _mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_castps_si512(hi), 16));
        const __m512i r = _mm512_inserti64x4(_mm512_castsi256_si512(lo16), hi16, 1);
        _mm512_storeu_si512((void *)(dst + j), _mm512_mask_mov_epi16(r, _mm512_cmpeq_epi16_mask(mag, low7), nan));
    }
}

/* The thread's buffer for a copy of 32 weight rows of kpad bf16 values, on a
 * 64-byte boundary (not cleared: the caller writes or zeroes what the tiles
 * read); NULL if it cannot be allocated. */
static uint16_t *edge_rows(int64_t kpad) {
    const size_t need = (size_t)(32 * kpad);  /* kpad is a multiple of 32: whole 64-byte lines */
    if (need > edge_cap) {
        free(edge_buf);
        edge_buf = aligned_alloc(64, need * sizeof *edge_buf);
        edge_cap = edge_buf ? need : 0;
        if (!edge_buf) return NULL;
    }
    return edge_buf;
}

/* n bytes (a multiple of 64) from src to the 64-byte aligned dst, asking for
 * the source 4 KiB ahead: a row block of an expert is read from memory once
 * per call, and this copy is where a prefill waits for it (a 512-token
 * prefill of small bf16, two threads, ten interleaved pairs against memcpy:
 * median ratio 1.03). */
TARGET_AVX512BW static void copy_prefetch(void *dst, const unsigned char *src, size_t n) {
    unsigned char *d = dst;
    for (size_t k = 0; k < n; k += 64) {
        _mm_prefetch((const char *)src + k + PREFETCH_AHEAD, _MM_HINT_T0);
        _mm512_store_si512((void *)(d + k), _mm512_loadu_si512((const void *)(src + k)));
    }
}

/* Where the tiles of weight rows n0 .. n0 + 16·nn − 1 are read: a BF16
 * tensor itself, or (at an edge, where its rows do not start on a 64-byte
 * boundary, and every FP8 block: its codes as bf16) the thread's zero-padded
 * copy; NULL if that copy cannot be allocated. A tile row that straddles two
 * cache lines costs two: safetensors aligns a tensor's data to 8 bytes only
 * (ds3 mkmodel's and the Hugging Face writers' files put small's weights 8
 * bytes past a line), and the dot-product loop over such rows ran 1.5x slower
 * (14.7 against 9.8 ns per TDPBF16PS, small's dense layer, one core) — more
 * than the copy, made once per row block and chunk of tokens, costs. */
static const unsigned char *row_block(const ds3_tensor *w, int64_t n0, int nn, size_t *stride) {
    const int64_t rows = w->rows, cols = w->cols, kpad = (cols + 31) / 32 * 32;
    if (w->dtype == DS3_DT_F8_E4M3) {
        uint16_t *e = edge_rows(kpad);
        if (!e) return NULL;
        /* each row written whole (zeros past cols); rows past the tensor zeroed */
        for (int64_t r = n0; r < n0 + 16 * nn; r++)
            if (r < rows)
                fp8_to_bf16(e + (r - n0) * kpad, (const unsigned char *)w->data + (size_t)r * (size_t)cols, cols, kpad);
            else
                memset(e + (r - n0) * kpad, 0, (size_t)kpad * sizeof *e);
        *stride = (size_t)kpad * 2;
        return (const unsigned char *)e;
    }
    if (cols == kpad && n0 + 16 * nn <= rows && (uintptr_t)w->data % 64 == 0) {
        *stride = (size_t)cols * 2;
        return (const unsigned char *)w->data + (size_t)n0 * (size_t)cols * 2;
    }
    if (!edge_rows(kpad)) return NULL;
    *stride = (size_t)kpad * 2;
    if (cols == kpad && n0 + 16 * nn <= rows) {  /* whole rows, one contiguous block */
        copy_prefetch(edge_buf, (const unsigned char *)w->data + (size_t)n0 * (size_t)cols * 2,
                      (size_t)(16 * nn) * (size_t)cols * 2);
        return (const unsigned char *)edge_buf;
    }
    /* each row copied whole, zeros past cols; rows past the tensor zeroed */
    for (int64_t r = n0; r < n0 + 16 * nn; r++) {
        uint16_t *e = edge_buf + (r - n0) * kpad;
        if (r < rows) {
            memcpy(e, (const unsigned char *)w->data + (size_t)r * (size_t)cols * 2, (size_t)cols * 2);
            memset(e + cols, 0, (size_t)(kpad - cols) * sizeof *e);
        } else {
            memset(e, 0, (size_t)kpad * sizeof *e);
        }
    }
    return (const unsigned char *)edge_buf;
}

/* ---- may AMX run here? ------------------------------------------------------------------ */

/* The CPU has AMX-TILE and AMX-BF16 and the OS saves the tile state (XCR0
 * bits 17 and 18), and AVX-512 F and BW, which the packing uses (every AMX CPU
 * has them; a hypervisor could hide them). */
bool ds3_cpu_has_amx(void) {
    if (!ds3_cpu_has_avx512() || !__builtin_cpu_supports("avx512bw")) return false;
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return false;  /* OSXSAVE */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    if (!(d & (1u << 24)) || !(d & (1u << 22))) return false;                 /* AMX-TILE, AMX-BF16 */
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (lo & (3u << 17)) == (3u << 17);
}

/* Linux hands a process the 8 KB tile state only when asked (5.16 on). */
static bool amx_permitted(void) {
    enum { ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18 };
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
}

/* -1 until asked; then whether AMX runs: the CPU has it, Linux granted it, and
 * DS3_NO_AMX is unset. Tests switch it (ds3_linear_select_amx). */
static int amx_state = -1;
static int amx_granted = -1;

static bool granted_decide(void) { return ds3_cpu_has_amx() && amx_permitted(); }
static bool granted(void) { return ds3_decided(&amx_granted, granted_decide); }
static bool amx_decide(void) { return !getenv("DS3_NO_AMX") && granted(); }
bool ds3_amx_ok(void) { return ds3_decided(&amx_state, amx_decide); }

bool ds3_linear_select_amx(bool on) {
    if (on && !granted()) return false;
    amx_state = on;
    return true;
}

bool ds3_linear_amx_fits(const ds3_tensor *w) {
    return (w->dtype == DS3_DT_BF16 || (w->dtype == DS3_DT_F8_E4M3 && w->scale_inv)) && w->rows > 0 && w->cols > 0;
}

/* ---- the product ------------------------------------------------------------------------ */

#ifdef _OPENMP
/* (linear.c's ds3_in_parallel: the files do not call each other both ways) */
static bool in_parallel(void) { return omp_in_parallel(); }
#endif

/* Token blocks whose packed activations fit in about 1 MiB, so that they stay
 * in the core's L2 while every weight row block runs over them (even: two
 * token blocks per step). */
static int64_t chunk_blocks(int64_t kblocks) {
    int64_t n = ((int64_t)1 << 20) / (kblocks * 3 * TILE_BYTES);
    n &= ~(int64_t)1;
    return n < 2 ? 2 : n;
}

int ds3_linear_amx(float *out, const float *in, const ds3_tensor *w, int T) {
    const int64_t rows = w->rows, cols = w->cols;
    const int64_t tblocks = (T + 15) / 16, rblocks = (rows + 15) / 16, kblocks = (cols + 31) / 32;
    const int64_t chunk = chunk_blocks(kblocks), rpairs = (rblocks + 1) / 2;
    /* one chunk of token blocks packed at a time: the buffer stays about 1 MiB
     * whatever T (V3's widest input, 18,432 columns, takes 3.4 MiB: two blocks) */
    const size_t need = (size_t)((chunk < tblocks ? chunk : tblocks) * kblocks) * 3 * TILE_BYTES;
    if (need > pack_cap) {
        free(pack_buf);
        pack_buf = aligned_alloc(64, need);
        pack_cap = pack_buf ? need : 0;
        if (!pack_buf) return -1;
    }
    uint16_t *pack = pack_buf;
    bool fail = false;
#pragma omp parallel if (rows * cols * (int64_t)T > 32768 && !in_parallel()) reduction(|| : fail)
    {
        tiles_configure();
        /* the thread's current row block (an edge block is copied once per call) */
        int64_t have = -1;
        const unsigned char *a = NULL;
        size_t stride = 0;
        for (int64_t t0 = 0; t0 < tblocks; t0 += chunk) {
            const int64_t t1 = t0 + chunk < tblocks ? t0 + chunk : tblocks, tpairs = (t1 - t0 + 1) / 2;
#pragma omp for schedule(static)
            for (int64_t tb = t0; tb < t1; tb++) pack_tokens(pack + (tb - t0) * kblocks * KBLOCK_U16, in, T, cols, tb);
            /* work items: (row pair, token pair), row pairs outer, split evenly; the
             * loop's barrier keeps the next chunk's packing from overwriting this one */
#pragma omp for schedule(static)
            for (int64_t it = 0; it < rpairs * tpairs; it++) {
                const int64_t rp = it / tpairs, tl = 2 * (it % tpairs);
                const int nn = 2 * rp + 1 < rblocks ? 2 : 1;
                if (rp != have) {
                    a = row_block(w, rp * 32, nn, &stride);
                    have = a ? rp : -1;
                }
                if (!a) {
                    fail = true;
                    continue;
                }
                block(out, w, a, stride, pack, rp * 32, t0 + tl, tl, T, nn, t0 + tl + 1 < t1 ? 2 : 1);
            }
        }
        tiles_release();
    }
    return fail ? -1 : 1;
}

void ds3_linear_amx_release(void) {
    free(pack_buf);
    pack_buf = NULL;
    pack_cap = 0;
    free(edge_buf);
    edge_buf = NULL;
    edge_cap = 0;
}

#else /* no AMX copy: x86-64 with GCC or clang, float build, not PLAIN_C */

bool ds3_cpu_has_amx(void) { return false; }
bool ds3_amx_ok(void) { return false; }
bool ds3_linear_select_amx(bool on) { return !on; }
bool ds3_linear_amx_fits(const ds3_tensor *w) { (void)w; return false; }
int ds3_linear_amx(ds3_real *out, const ds3_real *in, const ds3_tensor *w, int T) {
    (void)out, (void)in, (void)w, (void)T;
    return 0;
}
void ds3_linear_amx_release(void) {}

#endif

/*
 * lanes.h — the lane kernel of linear.c, included twice: by linear.c (built for
 * any x86-64 or other CPU) and by linear_avx2.c (built with -mavx2). LANES_FN(name)
 * gives each copy its own names. The kernels use only IEEE multiply and add in
 * a fixed order (no FMA: -ffp-contract=off), so both copies give the same bits;
 * AVX2 only makes each vector operation one instruction instead of two.
 *
 * The vector operations are simd.h's: GCC/clang vector extensions, or plain C
 * loops over the same lanes (DS3_PLAIN_C), the same bits either way.
 *
 * Before including, the file defines LANES_FN and, for float builds,
 * `static inline void LANES_FN(fp8x8)(vreal *out, const unsigned char *q)`: the
 * exact e4m3 values of 8 codes (a table lookup, or AVX2 bit arithmetic);
 * `LANES_FN(bf16x8)` likewise for 8 bf16 values (simd.h's VBF16X8, or one AVX2
 * widening: gcc spells the portable one as four shuffles); and the faster FP8
 * pair below (fp8_finite, fp8x8_half; a copy without one says "never").
 *
 * The rule every kernel here follows, whatever T or the thread count:
 *   out[t][i] = Σ_k lane_k,  lane_k = Σ_{j ≡ k mod LANES, in order} x[t][j]·w[i][j]
 * combined by a fixed tree (lanes_sum), with a ragged end zero-padded.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#ifndef DS3_LANES_TYPES
#define DS3_LANES_TYPES
#include "simd.h"
/* 32 bytes of scalars (simd.h): 8 floats or 4 doubles. */
#define LANES VREAL_N
/* Tokens whose partial sums are kept at once for one weight row. */
#define TOK_CHUNK 16
/* Columns decoded at once: one FP8 scale block. */
#define LANE_BLOCK DS3_FP8_BLOCK
/* Calls of at least this many tokens go through lanes_tiles (fewer: dot_rows4_fused,
 * which decodes as it goes and was as fast or faster for 2-4 tokens on BF16). */
#define LANES_TILE_MIN_T 5
/* Keep a loaded vector in a register rather than load it again for each use
 * (a hint to the compiler; linear_avx2.c defines it, nothing else needs to). */
#ifndef LANES_IN_REG
#define LANES_IN_REG(v) ((void)0)
#endif
/* An unaligned vector load. */
#define VLOAD(v, p) memcpy(&(v), (p), sizeof(vreal))
#endif

/* The fixed combining tree of the lanes. (Vectors go by pointer: passing
 * 32-byte vectors by value would depend on whether AVX is enabled.) */
static inline ds3_real LANES_FN(lanes_sum)(const vreal *v) {
    const ds3_real *a = (const ds3_real *)v;
#ifdef DS3_F64
    return (a[0] + a[2]) + (a[1] + a[3]);
#else
    return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
#endif
}


#ifndef DS3_F64
/*
 * The scale an FP8 block is multiplied by, and which decoder it uses. The exact
 * decoder (fp8x8) gives each code's value v; then v·s is rounded once. A copy
 * may also have fp8x8_half, which gives v·2⁻⁸ (exact: IEEE half holds every
 * e4m3 value that way, linear_avx2.c) in fewer instructions but knows no NaN
 * codes. Where the block has none (fp8_finite) it is used with the scale s·2⁸:
 * (v·2⁻⁸)·(s·2⁸) is the same real number as v·s, rounded once, so the same
 * bits — unless s·2⁸ overflows where s did not, which keeps the exact path.
 */
static inline float LANES_FN(fp8_scale_for)(bool finite, float sc, bool *half) {
    const float s8 = sc * 256.0f;
    *half = finite && !(isinf(s8) && !isinf(sc));
    return *half ? s8 : sc;
}
static inline float LANES_FN(fp8_block_scale)(const unsigned char *q, int64_t n, float sc, bool *half) {
    return LANES_FN(fp8_scale_for)(LANES_FN(fp8_finite)(q, n), sc, half);
}
/*
 * Whether a block holds a NaN code is a property of the checkpoint, so it need
 * not be scanned at every use: fp8_learn_blocks scans each 128×128 block of
 * rows [i0, i1) not seen before (all its rows, once) and keeps the answer in
 * w->fp8_seen; lanes_rows calls it before its loops. Threads that meet an
 * unseen block at once scan it alike and store the same byte. Either decoder
 * gives the same bits: this only saves the scan, an eighth of the FP8 decode.
 */
static void LANES_FN(fp8_learn_blocks)(const ds3_tensor *w, int64_t i0, int64_t i1) {
    const int64_t scols = (w->cols + DS3_FP8_BLOCK - 1) / DS3_FP8_BLOCK;
    for (int64_t rb = i0 / DS3_FP8_BLOCK; rb * DS3_FP8_BLOCK < i1; rb++)
        for (int64_t cb = 0; cb < scols; cb++) {
            _Atomic unsigned char *seen = &w->fp8_seen[rb * scols + cb];
            if (atomic_load_explicit(seen, memory_order_relaxed)) continue;
            const int64_t r1 = (rb + 1) * DS3_FP8_BLOCK < w->rows ? (rb + 1) * DS3_FP8_BLOCK : w->rows;
            const int64_t c0 = cb * DS3_FP8_BLOCK;
            const int64_t n = c0 + DS3_FP8_BLOCK < w->cols ? DS3_FP8_BLOCK : w->cols - c0;
            bool clean = true;
            for (int64_t r = rb * DS3_FP8_BLOCK; r < r1 && clean; r++)
                clean = LANES_FN(fp8_finite)((const unsigned char *)w->data + (size_t)(r * w->cols + c0), n);
            atomic_store_explicit(seen, clean ? 1 : 2, memory_order_relaxed);
        }
}

/* fp8_block_scale for row i of w, columns [j0, j0 + n) of one block: from
 * what fp8_learn_blocks kept where it can, else by scanning the codes. */
static inline float LANES_FN(fp8_block_scale_w)(const ds3_tensor *w, int64_t i, int64_t j0, int64_t n, float sc,
                                                bool *half) {
    unsigned char v = 0;
    if (LANES_HAVE_HALF && w->fp8_seen) {
        const int64_t scols = (w->cols + DS3_FP8_BLOCK - 1) / DS3_FP8_BLOCK;
        v = atomic_load_explicit(&w->fp8_seen[(i / DS3_FP8_BLOCK) * scols + j0 / DS3_FP8_BLOCK], memory_order_relaxed);
    }
    if (v == 0) return LANES_FN(fp8_block_scale)((const unsigned char *)w->data + (size_t)(i * w->cols + j0), n, sc, half);
    return LANES_FN(fp8_scale_for)(v == 1, sc, half);
}
/* Eight codes decoded by the decoder fp8_block_scale chose. */
#define FP8X8(half, v, q)                                  \
    do {                                                   \
        if (half) LANES_FN(fp8x8_half)(v, q);              \
        else LANES_FN(fp8x8)(v, q);                        \
    } while (0)
#endif

/* Weight rows [i0, i1) for all T tokens. */
static void LANES_FN(lanes_block)(ds3_real *out, const ds3_real *in, const ds3_tensor *w, int T, int64_t i0, int64_t i1) {
    const int64_t rows = w->rows, cols = w->cols;
    /* one dequantised 128-column block of the row, zero-padded to whole lanes */
    _Alignas(32) ds3_real buf[LANE_BLOCK + 8];
    vreal acc[TOK_CHUNK];
    for (int64_t i = i0; i < i1; i++) {
        for (int t0 = 0; t0 < T; t0 += TOK_CHUNK) {
            int nt = T - t0 < TOK_CHUNK ? T - t0 : TOK_CHUNK;
            for (int t = 0; t < nt; t++) VZERO(acc[t]);
            for (int64_t j0 = 0; j0 < cols; j0 += LANE_BLOCK) {
                int nb = (int)(cols - j0 < LANE_BLOCK ? cols - j0 : LANE_BLOCK);
                int nfull = nb / LANES * LANES;
                ds3_tensor_block(buf, w, i, j0, nb);
                for (int j = nb; j < nfull + LANES; j++) buf[j] = 0;
                for (int t = 0; t < nt; t++) {
                    const ds3_real *x = in + (int64_t)(t0 + t) * cols + j0;
                    vreal a = acc[t], xv, wv;
                    for (int j = 0; j < nfull; j += LANES) {
                        VLOAD(xv, x + j);
                        VLOAD(wv, buf + j);
                        VMULADD(a, xv, wv);
                    }
                    if (nfull < nb) {  /* the ragged end, zero-padded: adds exact zeros */
                        ds3_real xt[LANES] = {0};
                        memcpy(xt, x + nfull, (size_t)(nb - nfull) * sizeof(ds3_real));
                        VLOAD(xv, xt);
                        VLOAD(wv, buf + nfull);
                        VMULADD(a, xv, wv);
                    }
                    acc[t] = a;
                }
            }
            for (int t = 0; t < nt; t++) out[(int64_t)(t0 + t) * rows + i] = LANES_FN(lanes_sum)(&acc[t]);
        }
    }
}

/*
 * One token, one weight row, decoding fused into the dot product: the decode
 * path's hot loop. Lane k still sums the products j ≡ k (mod LANES) in order
 * and the ragged end is zero-padded exactly as in lanes_rows, so the result
 * is bit-identical to it (and so to every T); only the buffer round trip is
 * gone. Float builds only; the f64 oracle build keeps the buffered loop.
 */
#ifndef DS3_F64

static float LANES_FN(dot_row_fused)(const ds3_tensor *w, int64_t i, const float *x) {
    const int64_t cols = w->cols;
    const int64_t nfull = cols / 8 * 8;
    vreal a, xv, wv;
    VZERO(a);
    _Alignas(32) float wt[8];
    switch (w->dtype) {
    case DS3_DT_BF16: {
        const unsigned char *p = (const unsigned char *)w->data + (size_t)(i * cols) * 2;
        for (int64_t j = 0; j < nfull; j += 8) {
            LANES_FN(bf16x8)(&wv, p + 2 * j);  /* bf16 → f32: the 16 bits become the top half of the word */
            VLOAD(xv, x + j);
            VMULADD(a, xv, wv);
        }
        break;
    }
    case DS3_DT_F8_E4M3: {
        const unsigned char *p = (const unsigned char *)w->data + (size_t)(i * cols);
        const int64_t scols = (cols + DS3_FP8_BLOCK - 1) / DS3_FP8_BLOCK;
        const unsigned char *srow = (const unsigned char *)w->scale_inv + 4 * (size_t)((i / DS3_FP8_BLOCK) * scols);
        for (int64_t j0 = 0; j0 < nfull; j0 += DS3_FP8_BLOCK) {
            float sc = 1.0f;
            bool half;
            if (w->scale_inv) memcpy(&sc, srow + 4 * (j0 / DS3_FP8_BLOCK), 4);
            int64_t j1 = j0 + DS3_FP8_BLOCK < nfull ? j0 + DS3_FP8_BLOCK : nfull;
            sc = LANES_FN(fp8_block_scale_w)(w, i, j0, j1 - j0, sc, &half);
            for (int64_t j = j0; j < j1; j += 8) {
                FP8X8(half, &wv, p + j);  /* the e4m3 values (· 2⁻⁸ when half) */
                VSCALE(wv, sc);           /* value · scale, rounded once, as in ds3_tensor_block */
                VLOAD(xv, x + j);
                VMULADD(a, xv, wv);
            }
        }
        break;
    }
    default: {  /* F32, F16: decode 8 at a time */
        for (int64_t j = 0; j < nfull; j += 8) {
            ds3_tensor_block(wt, w, i, j, 8);
            VLOAD(wv, wt);
            VLOAD(xv, x + j);
            VMULADD(a, xv, wv);
        }
        break;
    }
    }
    if (nfull < cols) {  /* ragged end, zero-padded as in lanes_rows */
        float xt[8] = {0};
        memset(wt, 0, sizeof wt);
        ds3_tensor_block(wt, w, i, nfull, cols - nfull);
        memcpy(xt, x + nfull, (size_t)(cols - nfull) * sizeof(float));
        VLOAD(wv, wt);
        VLOAD(xv, xt);
        VMULADD(a, xv, wv);
    }
    return LANES_FN(lanes_sum)(&a);
}
#endif

#ifndef DS3_F64
/*
 * A few tokens (nt <= 4), one weight row, decoding fused: each group of 8
 * weights is decoded once and multiplied into every token's lanes. For each
 * token the operations are dot_row_fused's, in its order, so every output has
 * the bits of a one-token decode; the weights are read once for the nt tokens
 * (speculative verification, spec.c, runs a few tokens through here). The
 * accumulators are four named variables, so they stay in registers: kept in an
 * array, their store-to-load chain rather than the arithmetic sets the speed.
 */
static void LANES_FN(dot_rows4_fused)(ds3_real *out, int64_t ostride, const ds3_tensor *w, int64_t i,
                                      const float *x, int nt) {
    const int64_t cols = w->cols;
    const int64_t nfull = cols / 8 * 8;
    const float *x0 = x, *x1 = x + cols, *x2 = x + 2 * cols, *x3 = x + 3 * cols;
    vreal a0, a1, a2, a3, xv, wv;
    VZERO(a0), VZERO(a1), VZERO(a2), VZERO(a3);
    _Alignas(32) float wt[8];
    /* the products of one decoded group into every token's lanes */
#define LANES_TOKENS(j)                                      \
    do {                                                     \
        VLOAD(xv, x0 + (j));                                 \
        VMULADD(a0, xv, wv);                                 \
        if (nt > 1) { VLOAD(xv, x1 + (j)); VMULADD(a1, xv, wv); }  \
        if (nt > 2) { VLOAD(xv, x2 + (j)); VMULADD(a2, xv, wv); }  \
        if (nt > 3) { VLOAD(xv, x3 + (j)); VMULADD(a3, xv, wv); }  \
    } while (0)
    switch (w->dtype) {
    case DS3_DT_BF16: {
        const unsigned char *p = (const unsigned char *)w->data + (size_t)(i * cols) * 2;
        for (int64_t j = 0; j < nfull; j += 8) {
            LANES_FN(bf16x8)(&wv, p + 2 * j);
            LANES_TOKENS(j);
        }
        break;
    }
    case DS3_DT_F8_E4M3: {
        const unsigned char *p = (const unsigned char *)w->data + (size_t)(i * cols);
        const int64_t scols = (cols + DS3_FP8_BLOCK - 1) / DS3_FP8_BLOCK;
        const unsigned char *srow = (const unsigned char *)w->scale_inv + 4 * (size_t)((i / DS3_FP8_BLOCK) * scols);
        for (int64_t j0 = 0; j0 < nfull; j0 += DS3_FP8_BLOCK) {
            float sc = 1.0f;
            bool half;
            if (w->scale_inv) memcpy(&sc, srow + 4 * (j0 / DS3_FP8_BLOCK), 4);
            int64_t j1 = j0 + DS3_FP8_BLOCK < nfull ? j0 + DS3_FP8_BLOCK : nfull;
            sc = LANES_FN(fp8_block_scale_w)(w, i, j0, j1 - j0, sc, &half);
            for (int64_t j = j0; j < j1; j += 8) {
                FP8X8(half, &wv, p + j);
                VSCALE(wv, sc);
                LANES_TOKENS(j);
            }
        }
        break;
    }
    default: {
        for (int64_t j = 0; j < nfull; j += 8) {
            ds3_tensor_block(wt, w, i, j, 8);
            VLOAD(wv, wt);
            LANES_TOKENS(j);
        }
        break;
    }
    }
    if (nfull < cols) {  /* ragged end, zero-padded as in dot_row_fused */
        memset(wt, 0, sizeof wt);
        ds3_tensor_block(wt, w, i, nfull, cols - nfull);
        VLOAD(wv, wt);
        float xt[4][8];
        memset(xt, 0, sizeof xt);
        for (int t = 0; t < nt; t++) memcpy(xt[t], x + (int64_t)t * cols + nfull, (size_t)(cols - nfull) * sizeof(float));
        x0 = xt[0], x1 = xt[1], x2 = xt[2], x3 = xt[3];
        LANES_TOKENS(0);
    }
#undef LANES_TOKENS
    out[0] = LANES_FN(lanes_sum)(&a0);
    if (nt > 1) out[ostride] = LANES_FN(lanes_sum)(&a1);
    if (nt > 2) out[2 * ostride] = LANES_FN(lanes_sum)(&a2);
    if (nt > 3) out[3 * ostride] = LANES_FN(lanes_sum)(&a3);
}
#endif

#ifndef DS3_F64
/*
 * One token, four weight rows at once: decode's T = 1 on BF16 and FP8 weights.
 * Each row's operations are dot_row_fused's, in its order (lane k sums the
 * products j ≡ k mod 8 in column order), so each output has its bits. What
 * changes is the schedule: one row alone is a single chain of vector adds, each
 * waiting for the one before, so the core idles between them; four rows are
 * four independent chains the core overlaps, and each group of eight inputs is
 * loaded once for the four. Whole groups of eight only (cols % 8 == 0); the
 * caller sends anything else to dot_row_fused.
 */
static void LANES_FN(dot_4rows_fused)(ds3_real *out, const ds3_tensor *w, int64_t i, const float *x) {
    const int64_t cols = w->cols;
    vreal a0, a1, a2, a3, xv, w0, w1, w2, w3;
    VZERO(a0); VZERO(a1); VZERO(a2); VZERO(a3);
    /* The next four rows follow these in memory: ask for their lines while
     * these are summed, where the tensor has them. Four rows read side by
     * side are four short streams the hardware prefetchers barely pick up; one
     * line requested per row and 64 bytes keeps the memory busy. The next rows
     * are asked for across the end of the caller's chunk of rows too: with
     * OpenMP's static schedule the next chunk is usually this thread's next. */
    const bool ahead = i + 8 <= w->rows;
    const size_t rowb = (size_t)cols * (w->dtype == DS3_DT_BF16 ? 2 : 1);
    const unsigned char *pn = (const unsigned char *)w->data + (size_t)(i + 4) * rowb;
#define PREFETCH_NEXT4(off)                                              \
    do {                                                                 \
        PREFETCH(pn + (off)); PREFETCH(pn + rowb + (off));               \
        PREFETCH(pn + 2 * rowb + (off)); PREFETCH(pn + 3 * rowb + (off)); \
    } while (0)
    if (w->dtype == DS3_DT_BF16 && w->rows4) {
        /* The interleaved copy: this group's 64 bytes per eight columns in one
         * stream, each line asked for 8 KB ahead while these are summed. */
        const unsigned char *g = (const unsigned char *)w->rows4 + (size_t)i * cols * 2;
        const unsigned char *end = (const unsigned char *)w->rows4 + (size_t)w->rows * cols * 2;
        for (int64_t j = 0; j < cols; j += 8) {
            const unsigned char *q = g + 8 * j;
            if (q + 8192 < end) PREFETCH(q + 8192);
            VLOAD(xv, x + j);
            LANES_FN(bf16x8)(&w0, q); LANES_FN(bf16x8)(&w1, q + 16);
            LANES_FN(bf16x8)(&w2, q + 32); LANES_FN(bf16x8)(&w3, q + 48);
            VMULADD(a0, xv, w0); VMULADD(a1, xv, w1); VMULADD(a2, xv, w2); VMULADD(a3, xv, w3);
        }
    } else if (w->dtype == DS3_DT_BF16) {
        const unsigned char *p0 = (const unsigned char *)w->data + (size_t)(i * cols) * 2;
        const unsigned char *p1 = p0 + 2 * cols, *p2 = p1 + 2 * cols, *p3 = p2 + 2 * cols;
        for (int64_t j = 0; j < cols; j += 8) {
            if (ahead && (j & 31) == 0) PREFETCH_NEXT4(2 * j);
            VLOAD(xv, x + j);
            LANES_FN(bf16x8)(&w0, p0 + 2 * j); LANES_FN(bf16x8)(&w1, p1 + 2 * j);
            LANES_FN(bf16x8)(&w2, p2 + 2 * j); LANES_FN(bf16x8)(&w3, p3 + 2 * j);
            VMULADD(a0, xv, w0); VMULADD(a1, xv, w1); VMULADD(a2, xv, w2); VMULADD(a3, xv, w3);
        }
    } else {  /* DS3_DT_F8_E4M3 */
        const unsigned char *p0 = (const unsigned char *)w->data + (size_t)(i * cols);
        const unsigned char *p1 = p0 + cols, *p2 = p1 + cols, *p3 = p2 + cols;
        const int64_t scols = (cols + DS3_FP8_BLOCK - 1) / DS3_FP8_BLOCK;
        /* each row's block scales (F32, maybe unaligned: read with memcpy) */
        const unsigned char *s0 = NULL, *s1 = NULL, *s2 = NULL, *s3 = NULL;
        if (w->scale_inv) {
            const unsigned char *sc = (const unsigned char *)w->scale_inv;
            s0 = sc + 4 * (size_t)((i / DS3_FP8_BLOCK) * scols);
            s1 = sc + 4 * (size_t)(((i + 1) / DS3_FP8_BLOCK) * scols);
            s2 = sc + 4 * (size_t)(((i + 2) / DS3_FP8_BLOCK) * scols);
            s3 = sc + 4 * (size_t)(((i + 3) / DS3_FP8_BLOCK) * scols);
        }
        for (int64_t j0 = 0; j0 < cols; j0 += DS3_FP8_BLOCK) {
            float c0 = 1.0f, c1 = 1.0f, c2 = 1.0f, c3 = 1.0f;
            if (s0) {
                const int64_t b = 4 * (j0 / DS3_FP8_BLOCK);
                memcpy(&c0, s0 + b, 4); memcpy(&c1, s1 + b, 4); memcpy(&c2, s2 + b, 4); memcpy(&c3, s3 + b, 4);
            }
            const int64_t j1 = j0 + DS3_FP8_BLOCK < cols ? j0 + DS3_FP8_BLOCK : cols;
            bool h0, h1, h2, h3;  /* one decoder for the four rows: the half one if all allow it */
            const float e0 = LANES_FN(fp8_block_scale_w)(w, i + 0, j0, j1 - j0, c0, &h0);
            const float e1 = LANES_FN(fp8_block_scale_w)(w, i + 1, j0, j1 - j0, c1, &h1);
            const float e2 = LANES_FN(fp8_block_scale_w)(w, i + 2, j0, j1 - j0, c2, &h2);
            const float e3 = LANES_FN(fp8_block_scale_w)(w, i + 3, j0, j1 - j0, c3, &h3);
            const bool half = h0 && h1 && h2 && h3;
            if (half) c0 = e0, c1 = e1, c2 = e2, c3 = e3;
            int64_t j = j0;
#ifdef LANES_FP8_4ROWS
            /* a whole block 512 bits wide where the CPU has it (linear_avx2.c) */
            if (half && j1 - j0 == DS3_FP8_BLOCK && LANES_FP8_4ROWS_OK()) {
                if (ahead) { PREFETCH_NEXT4(j0); PREFETCH_NEXT4(j0 + 64); }
                LANES_FP8_4ROWS(&a0, &a1, &a2, &a3, p0 + j0, p1 + j0, p2 + j0, p3 + j0, x + j0, c0);
                continue;
            }
#endif
            if (half) {
                /* sixteen codes of each row decoded at once (fp8x16_half: one
                 * integer step per sixteen instead of per eight), then the two
                 * groups of eight in column order, as below */
                vreal xh, v0, v1, v2, v3;
                for (; j + 16 <= j1; j += 16) {
                    if (ahead && (j & 63) == 0) PREFETCH_NEXT4(j);
                    LANES_FN(fp8x16_half)(&w0, &v0, p0 + j); LANES_FN(fp8x16_half)(&w1, &v1, p1 + j);
                    LANES_FN(fp8x16_half)(&w2, &v2, p2 + j); LANES_FN(fp8x16_half)(&w3, &v3, p3 + j);
                    VLOAD(xv, x + j);
                    VLOAD(xh, x + j + 8);
                    VSCALE(w0, c0); VSCALE(w1, c1); VSCALE(w2, c2); VSCALE(w3, c3);
                    VMULADD(a0, xv, w0); VMULADD(a1, xv, w1); VMULADD(a2, xv, w2); VMULADD(a3, xv, w3);
                    VSCALE(v0, c0); VSCALE(v1, c1); VSCALE(v2, c2); VSCALE(v3, c3);
                    VMULADD(a0, xh, v0); VMULADD(a1, xh, v1); VMULADD(a2, xh, v2); VMULADD(a3, xh, v3);
                }
            }
            for (; j < j1; j += 8) {
                if (ahead && (j & 63) == 0) PREFETCH_NEXT4(j);
                VLOAD(xv, x + j);
                FP8X8(half, &w0, p0 + j); FP8X8(half, &w1, p1 + j);
                FP8X8(half, &w2, p2 + j); FP8X8(half, &w3, p3 + j);
                VSCALE(w0, c0); VSCALE(w1, c1); VSCALE(w2, c2); VSCALE(w3, c3);
                VMULADD(a0, xv, w0); VMULADD(a1, xv, w1); VMULADD(a2, xv, w2); VMULADD(a3, xv, w3);
            }
        }
    }
#undef PREFETCH_NEXT4
    out[i] = LANES_FN(lanes_sum)(&a0); out[i + 1] = LANES_FN(lanes_sum)(&a1);
    out[i + 2] = LANES_FN(lanes_sum)(&a2); out[i + 3] = LANES_FN(lanes_sum)(&a3);
}
#endif

/*
 * Many tokens, four weight rows at a time: the lane rule blocked for a prefill.
 * dot_rows4_fused decodes a row's weights again for every four tokens and keeps
 * four sums in registers; here four rows are decoded once into `wb` (the values
 * the fused loops use: ds3_tensor_rows is bit-identical to them, test_dtype),
 * and each group of eight weights, loaded once, goes into the lanes of two
 * tokens: eight sums in registers (with the four weights, the input and a
 * product: fourteen of AVX2's sixteen; twelve sums would spill), each input
 * group loaded once for four rows. Per element the operations are
 * dot_row_fused's, in its order (lane k sums x[j]·w[j] for j ≡ k mod LANES in
 * column order, then lanes_sum), so every output has the bits of a one-token
 * decode, whatever T. Eight independent chains keep a core whose multiplies and
 * adds issue on separate ports (AMD Zen) busy on both. Whole groups of LANES
 * columns only (the caller checks).
 */
#define TILE_TOKEN(a0, a1, a2, a3, xp)                                          \
    do {                                                                        \
        VLOAD(xv, (xp) + j);                                                    \
        VMULADD(a0, xv, w0); VMULADD(a1, xv, w1);                               \
        VMULADD(a2, xv, w2); VMULADD(a3, xv, w3);                               \
    } while (0)
#define TILE_WEIGHTS()                                                          \
    do {                                                                        \
        VLOAD(w0, wb + j); VLOAD(w1, wb + cols + j);                            \
        VLOAD(w2, wb + 2 * cols + j); VLOAD(w3, wb + 3 * cols + j);             \
        LANES_IN_REG(w0); LANES_IN_REG(w1); LANES_IN_REG(w2); LANES_IN_REG(w3); \
    } while (0)
#define TILE_STORE(o, a0, a1, a2, a3)                                           \
    do {                                                                        \
        (o)[0] = LANES_FN(lanes_sum)(&a0); (o)[1] = LANES_FN(lanes_sum)(&a1);   \
        (o)[2] = LANES_FN(lanes_sum)(&a2); (o)[3] = LANES_FN(lanes_sum)(&a3);   \
    } while (0)

/* Two tokens (x, x + cols) into out[0..3] and out[rows..rows+3]. */
static void LANES_FN(tile_4x2)(ds3_real *out, int64_t rows, const ds3_real *wb, const ds3_real *x, int64_t cols) {
    vreal a00, a10, a20, a30, a01, a11, a21, a31, w0, w1, w2, w3, xv;
    VZERO(a00); VZERO(a10); VZERO(a20); VZERO(a30);
    VZERO(a01); VZERO(a11); VZERO(a21); VZERO(a31);
    for (int64_t j = 0; j < cols; j += LANES) {
        TILE_WEIGHTS();
        TILE_TOKEN(a00, a10, a20, a30, x);
        TILE_TOKEN(a01, a11, a21, a31, x + cols);
    }
    TILE_STORE(out, a00, a10, a20, a30);
    TILE_STORE(out + rows, a01, a11, a21, a31);
}

/* One token: an odd T's last. */
static void LANES_FN(tile_4x1)(ds3_real *out, const ds3_real *wb, const ds3_real *x, int64_t cols) {
    vreal a00, a10, a20, a30, w0, w1, w2, w3, xv;
    VZERO(a00); VZERO(a10); VZERO(a20); VZERO(a30);
    for (int64_t j = 0; j < cols; j += LANES) {
        TILE_WEIGHTS();
        TILE_TOKEN(a00, a10, a20, a30, x);
    }
    TILE_STORE(out, a00, a10, a20, a30);
}
#undef TILE_TOKEN
#undef TILE_WEIGHTS
#undef TILE_STORE

/* Tokens whose inputs are multiplied by one set of four decoded rows before the
 * next set is decoded: 64 rows of 1,024 floats (256 KB) stay in a Zen 3 core's L2. */
#define TILE_TOKENS 64

/* Weight rows [i0, i1) (a multiple of four) for all T tokens, through tile_4x2;
 * wb holds four decoded rows. */
static void LANES_FN(lanes_tiles)(ds3_real *out, const ds3_real *in, const ds3_tensor *w, int T, int64_t i0,
                                  int64_t i1, ds3_real *wb) {
    const int64_t rows = w->rows, cols = w->cols;
    for (int t0 = 0; t0 < T; t0 += TILE_TOKENS) {
        const int t1 = t0 + TILE_TOKENS < T ? t0 + TILE_TOKENS : T;
        for (int64_t i = i0; i < i1; i += 4) {
            ds3_tensor_rows(wb, w, i, 4);
            int t = t0;
#ifdef LANES_TILE_4X4
            /* four tokens at a time, 512 bits wide (linear_avx2.c): the same bits */
            if (LANES_TILE_4X4_OK())
                for (; t + 4 <= t1; t += 4)
                    LANES_TILE_4X4(out + (int64_t)t * rows + i, rows, wb, in + (int64_t)t * cols, cols);
#endif
            for (; t + 2 <= t1; t += 2)
                LANES_FN(tile_4x2)(out + (int64_t)t * rows + i, rows, wb, in + (int64_t)t * cols, cols);
            if (t < t1) LANES_FN(tile_4x1)(out + (int64_t)t * rows + i, wb, in + (int64_t)t * cols, cols);
        }
    }
}

/* Weight rows [i0, i1) for all T tokens: the fused loops in float builds. */
static void LANES_FN(lanes_rows)(ds3_real *out, const ds3_real *in, const ds3_tensor *w, int T, int64_t i0,
                                 int64_t i1) {
#ifndef DS3_F64
    if (LANES_HAVE_HALF && w->dtype == DS3_DT_F8_E4M3 && w->fp8_seen) LANES_FN(fp8_learn_blocks)(w, i0, i1);
    if (T == 1) {
        int64_t i = i0;
        if ((w->dtype == DS3_DT_BF16 || w->dtype == DS3_DT_F8_E4M3) && w->cols % 8 == 0)
            for (; i + 4 <= i1; i += 4) LANES_FN(dot_4rows_fused)(out, w, i, in);
        for (; i < i1; i++) out[i] = LANES_FN(dot_row_fused)(w, i, in);
        return;
    }
#endif
    /* Several tokens: whole groups of four rows through the tiles (the same bits;
     * without scratch memory the loops below, the same bits again). */
    ds3_real *wb;
    if (T >= LANES_TILE_MIN_T && w->cols % LANES == 0 && i1 - i0 >= 4 && (wb = ds3_lanes_scratch(4 * w->cols))) {
        const int64_t i4 = i0 + (i1 - i0) / 4 * 4;
        LANES_FN(lanes_tiles)(out, in, w, T, i0, i4, wb);
        i0 = i4;
    }
#ifndef DS3_F64
    for (int64_t i = i0; i < i1; i++)
        for (int t0 = 0; t0 < T; t0 += 4)
            LANES_FN(dot_rows4_fused)(out + (int64_t)t0 * w->rows + i, w->rows, w, i, in + (int64_t)t0 * w->cols,
                                      T - t0 < 4 ? T - t0 : 4);
    return;
#endif
    if (i0 < i1) LANES_FN(lanes_block)(out, in, w, T, i0, i1);
}

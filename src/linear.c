/*
 * linear.c — out = in · Wᵀ for weights kept in their checkpoint dtype.
 *
 *   out[T][rows] = in[T][cols] · w[rows][cols]ᵀ        (PyTorch's nn.Linear, no bias)
 *
 * Every projection of the model goes through here. Weights stay as stored
 * (F32, BF16, F16 or block-scaled F8_E4M3) and are dequantised exactly into
 * the scalar type as they are read (SPEC §1, §7), so the arithmetic is that of
 * a float (or double) model holding the dequantised weights.
 *
 * Two implementations, held together by tests/test_linear.c:
 *   - ds3_linear_ref: plain loops. Each output element is one sequential sum
 *     over j = 0..cols-1, computed by one thread, so its bits depend on neither
 *     the thread count nor T. OpenMP splits the output rows.
 *   - the BLAS path (T > 1 only): rows are dequantised 128 at a time into a
 *     buffer and multiplied with one single-threaded sgemm (dgemm in the f64
 *     build); OpenMP runs the tiles in parallel. The tiling is fixed, so the
 *     bits do not depend on the thread count either (see linear_blas).
 * A single token (decode) always takes the plain path: a matrix-vector product
 * reads each weight once either way, and dequantising into a buffer first
 * would only add a pass.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#ifdef DS3_BLAS
#include <cblas.h>
bool ds3_use_blas = true;
#else
bool ds3_use_blas = false;
#endif

bool ds3_have_blas(void) {
#ifdef DS3_BLAS
    return true;
#else
    return false;
#endif
}

/* Columns decoded at once in the plain path: one FP8 scale block. */
#define COL_BLOCK DS3_FP8_BLOCK

/* out[n] = w[r][c0 .. c0+n), dequantised; [c0, c0+n) lies in one scale block. */
static void tensor_block(ds3_real *out, const ds3_tensor *w, int64_t r, int64_t c0, int64_t n) {
    const unsigned char *p = (const unsigned char *)w->data + (size_t)(r * w->cols + c0) * ds3_dtype_size(w->dtype);
    switch (w->dtype) {
    case DS3_DT_F32:
        for (int64_t j = 0; j < n; j++) { float v; memcpy(&v, p + 4 * j, 4); out[j] = (ds3_real)v; }
        break;
    case DS3_DT_F64:
        for (int64_t j = 0; j < n; j++) { double v; memcpy(&v, p + 8 * j, 8); out[j] = (ds3_real)v; }
        break;
    case DS3_DT_BF16:
        for (int64_t j = 0; j < n; j++) { uint16_t v; memcpy(&v, p + 2 * j, 2); out[j] = (ds3_real)ds3_bf16_to_f32(v); }
        break;
    case DS3_DT_F16:
        for (int64_t j = 0; j < n; j++) { uint16_t v; memcpy(&v, p + 2 * j, 2); out[j] = (ds3_real)ds3_f16_to_f32(v); }
        break;
    case DS3_DT_F8_E4M3: {
        /* W = e4m3(q) · scale_inv[r/128][c/128]: one scale for the whole block. */
        int64_t scols = (w->cols + DS3_FP8_BLOCK - 1) / DS3_FP8_BLOCK;
        float sc;
        memcpy(&sc, (const unsigned char *)w->scale_inv +
                        4 * (size_t)((r / DS3_FP8_BLOCK) * scols + c0 / DS3_FP8_BLOCK), 4);
        for (int64_t j = 0; j < n; j++) out[j] = (ds3_real)ds3_e4m3_to_f32(p[j]) * (ds3_real)sc;
        break;
    }
    default:
        DS3_ASSERT(!"unsupported weight dtype");
    }
}

void ds3_linear_ref(ds3_real *out, const ds3_real *in, const ds3_tensor *w, int T) {
    const int64_t rows = w->rows, cols = w->cols;
    for (int64_t i = 0; i < (int64_t)T * rows; i++) out[i] = 0;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < rows; i++) {
        ds3_real buf[COL_BLOCK];  /* row i, columns [j0, j0+nb), dequantised */
        for (int64_t j0 = 0; j0 < cols; j0 += COL_BLOCK) {
            int64_t nb = cols - j0 < COL_BLOCK ? cols - j0 : COL_BLOCK;
            tensor_block(buf, w, i, j0, nb);
            /* out[t][i] carries the running sum, so each element is one
             * sequential sum in column order whatever the blocking. */
            for (int t = 0; t < T; t++) {
                const ds3_real *x = in + (int64_t)t * cols + j0;
                ds3_real s = out[(int64_t)t * rows + i];
                for (int64_t j = 0; j < nb; j++) s += x[j] * buf[j];
                out[(int64_t)t * rows + i] = s;
            }
        }
    }
}

#ifdef DS3_BLAS
/*
 * Tile buffer for the BLAS path, one per thread, grown to the largest tile
 * seen and then reused: after the first forward pass no call allocates.
 */
static _Thread_local ds3_real *tile_buf;
static _Thread_local size_t tile_cap;

/* Rows per tile: one FP8 scale block, large enough for an efficient GEMM. */
#define TILE_ROWS 128

/*
 * OpenBLAS's own threading is switched off. Measured on OpenBLAS 0.3.21: a
 * threaded sgemm gives different bits for 1 and 2 threads on most shapes
 * (M=64, N=512, K=320, say), because how it splits the work changes
 * which kernel computes which element. ds3 instead splits the output into
 * fixed 128-row tiles, one single-threaded GEMM each, run in parallel by
 * OpenMP: an element is always computed by the same call on the same data,
 * whatever the thread count. In an OpenMP build of OpenBLAS a call from inside
 * a parallel region is single-threaded anyway; a pthreads build needs telling.
 */
static void blas_single_threaded(void) {
    /* 1: pthreads build. Checked on every call, in case the program changed it. */
    if (openblas_get_parallel() == 1 && openblas_get_num_threads() != 1) openblas_set_num_threads(1);
}

static void linear_blas(ds3_real *out, const ds3_real *in, const ds3_tensor *w, int T) {
    const int64_t rows = w->rows, cols = w->cols;
    const int64_t ntiles = (rows + TILE_ROWS - 1) / TILE_ROWS;
    blas_single_threaded();
    bool fail = false;
#pragma omp parallel for schedule(static) reduction(|| : fail)
    for (int64_t tile = 0; tile < ntiles; tile++) {
        int64_t r0 = tile * TILE_ROWS;
        int64_t nr = rows - r0 < TILE_ROWS ? rows - r0 : TILE_ROWS;
        size_t need = (size_t)TILE_ROWS * (size_t)cols;
        if (need > tile_cap) {
            ds3_real *nb = realloc(tile_buf, need * sizeof(ds3_real));
            if (!nb) { fail = true; continue; }
            tile_buf = nb;
            tile_cap = need;
        }
        ds3_tensor_rows(tile_buf, w, r0, nr);
        /* out[:, r0:r0+nr] = in · tileᵀ; ldc = rows writes into the full output. */
#ifdef DS3_F64
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, (int)nr, (int)cols, 1.0, in,
                    (int)cols, tile_buf, (int)cols, 0.0, out + r0, (int)rows);
#else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, (int)nr, (int)cols, 1.0f, in,
                    (int)cols, tile_buf, (int)cols, 0.0f, out + r0, (int)rows);
#endif
    }
    /* Out of memory for a tile buffer: the plain path needs none. */
    if (fail) ds3_linear_ref(out, in, w, T);
}
#endif

void ds3_linear(ds3_real *out, const ds3_real *in, const ds3_tensor *w, int T) {
#ifdef DS3_BLAS
    if (ds3_use_blas && T > 1) {
        linear_blas(out, in, w, T);
        return;
    }
#endif
    ds3_linear_ref(out, in, w, T);
}

void ds3_linear_release(void) {
#ifdef DS3_BLAS
    /* every thread of the team frees its own buffer */
#pragma omp parallel
    {
        free(tile_buf);
        tile_buf = NULL;
        tile_cap = 0;
    }
#endif
}

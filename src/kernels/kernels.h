/*
 * kernels.h — element types, weight views, and the kernels every projection
 * and attention product runs on (src/kernels/). Not API.
 *
 *   dtype.c        BF16/F16/F8_E4M3 decoding, block-scaled FP8 dequantisation
 *   linear.c       out = in · Wᵀ in three implementations (fast, deterministic, ref)
 *   lanes.h        the deterministic SIMD lane kernel, built portably in linear.c
 *                  and with AVX2 in linear_avx2.c (same bits)
 *   vecops.c/.h    the dot product and axpy attention uses, in a fixed order
 *
 * Kernel convention: op(out, in…, weights…, dims…), output first, row-major,
 * weights stored (out, in) as in PyTorch. Which implementation runs is the
 * caller's `ds3_kernels` argument (a state carries one: docs/ARCHITECTURE.md §6);
 * nothing here is a process-wide mode.
 */
#ifndef DS3_KERNELS_H
#define DS3_KERNELS_H

#include "error.h"

/* ========================================================================== */
/* dtype.c — element types and their decoding (docs/MODEL.md §1)               */
/* ========================================================================== */

typedef enum {
    DS3_DT_F32 = 0,
    DS3_DT_F16,
    DS3_DT_BF16,
    DS3_DT_F8_E4M3,
    DS3_DT_F64,
    DS3_DT_I32,
    DS3_DT_I64,
    DS3_DT_U8,
    DS3_DT_COUNT
} ds3_dtype;

/* The scalar type's dtype, for dumps. */
#ifdef DS3_F64
#define DS3_DT_REAL DS3_DT_F64
#else
#define DS3_DT_REAL DS3_DT_F32
#endif

/* "F32", "BF16", "F8_E4M3" … as written in safetensors headers. */
const char *ds3_dtype_name(ds3_dtype dt);
/* Parse a safetensors dtype string; returns -1 if unknown. */
int ds3_dtype_parse(const char *s);
size_t ds3_dtype_size(ds3_dtype dt);

float ds3_bf16_to_f32(uint16_t h);
uint16_t ds3_f32_to_bf16(float f);            /* round to nearest even, NaN kept NaN */
float ds3_f16_to_f32(uint16_t h);
uint16_t ds3_f32_to_f16(float f);             /* round to nearest even */
float ds3_e4m3_to_f32(uint8_t b);             /* e4m3fn, NaN for 0x7f/0xff */
uint8_t ds3_f32_to_e4m3(float f);             /* round to nearest even, saturate at ±448 */

/*
 * A 1-D or 2-D weight as stored. 2-D weights are row-major [rows][cols], stored
 * (out, in) as in PyTorch. A 1-D tensor has rows == 1.
 * For F8_E4M3 weights, scale_inv points to the F32 block scales
 * [ceil(rows/128)][ceil(cols/128)]; W[i][j] = e4m3(q[i][j]) * scale_inv[i/128][j/128].
 * Data may be unaligned (safetensors does not promise alignment): read it with
 * the ds3_tensor_* functions, which use memcpy.
 */
typedef struct {
    const char *name;        /* checkpoint name, for messages (owned by the model) */
    ds3_dtype dtype;
    int64_t rows, cols;
    const void *data;
    const void *scale_inv;   /* F32 [ceil(rows/128)][ceil(cols/128)], or NULL */
} ds3_tensor;

#define DS3_FP8_BLOCK 128

/* Dequantise rows [r0, r0+n) of w into out[n][w->cols]. */
void ds3_tensor_rows(ds3_real *out, const ds3_tensor *w, int64_t r0, int64_t n);
/* out[n] = w[r][c0 .. c0+n), dequantised; the segment must lie inside one
 * 128-column scale block. The unit the kernels decode at a time. */
void ds3_tensor_block(ds3_real *out, const ds3_tensor *w, int64_t r, int64_t c0, int64_t n);
/* One element, dequantised (slow; for tests and small vectors). */
double ds3_tensor_get(const ds3_tensor *w, int64_t r, int64_t c);
/* All 256 e4m3fn values (NaN at 0x7f and 0xff). */
extern const float ds3_e4m3_table[256];

/* Whether the AVX2 copies of ds3_tensor_rows (BF16/FP8), ds3_dot and ds3_axpy
 * run (CPU has AVX2, no DS3_NO_AVX2; same bits as the portable ones); tests
 * switch them (false if AVX2 is asked for and missing). */
bool ds3_rows_avx2_ok(void);
bool ds3_rows_select_avx2(bool on);
/* The CPU has AVX2 and F16C (what linear_avx2.c is built with). */
bool ds3_cpu_has_avx2_f16c(void);

/* ========================================================================== */
/* linear.c — out[T][w.rows] = in[T][w.cols] · wᵀ                              */
/* ========================================================================== */

/* With the kernels `k` (ds3.h: fast, deterministic, ref); every mode gives the
 * same bits for any thread count. */
void ds3_linear(ds3_kernels k, ds3_real *out, const ds3_real *in, const ds3_tensor *w, int T);
/* The plain loops: one sequential sum per output (what DS3_KERNELS_REF runs). */
void ds3_linear_ref(ds3_real *out, const ds3_real *in, const ds3_tensor *w, int T);
/* Tests: use the AVX2 (true) or portable (false) copy of the lane kernel;
 * false if AVX2 was asked for and the CPU lacks it. */
bool ds3_lanes_select_avx2(bool on);
/* Free this thread's (team's) BLAS tile buffers (regrown on the next call). */
void ds3_linear_release(void);
/* Tile buffers of TILE_ROWS x max_cols on every thread of the team, and
 * (once) a probe that OpenBLAS's own buffers fit in the address space;
 * DS3_ERR_NOMEM with a message when not. ds3_state_new calls it. */
ds3_status ds3_linear_prepare(int64_t max_cols);
/* How many BLAS calls so far could not get a tile buffer (their output was
 * not computed): ds3_forward compares it before and after a pass. */
unsigned ds3_linear_failures(void);
/* Tests: false sends fast mode's several-token calls to the lane kernel too
 * (default true when built with BLAS). */
extern bool ds3_use_blas;
bool ds3_have_blas(void);

/* ========================================================================== */
/* vecops.c — attention's small products                                       */
/* ========================================================================== */

/* a·b in a fixed SIMD-friendly order (same bits for any caller), or the plain
 * sequential sum (ds3_dot_ref) with DS3_KERNELS_REF. */
ds3_real ds3_dot(ds3_kernels k, const ds3_real *a, const ds3_real *b, int n);
ds3_real ds3_dot_ref(const ds3_real *a, const ds3_real *b, int n);
/* y[i] += a·x[i], vectorised (elementwise: the bits of the plain loop). */
void ds3_axpy(ds3_real *restrict y, ds3_real a, const ds3_real *restrict x, int n);

#endif /* DS3_KERNELS_H */

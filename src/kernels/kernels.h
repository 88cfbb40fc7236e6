/*
 * kernels.h — element types, weight views, and the kernels every projection
 * and attention product runs on (src/kernels/). Not API.
 *
 *   fpenv.c        the IEEE environment every computing entry runs in
 *   dmath.c        exp, log, pow, sin, cos of ds3's own (no platform libm in the bits)
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

/*
 * Vector extensions or plain C (docs/PORTABILITY.md). The lane kernel and the
 * dot product are written with GCC/clang vector types (simd.h); a compiler
 * without them, or `make PLAIN_C=1` (DS3_PLAIN_C), gets plain C loops over
 * the same lanes in the same order: the same bits. The AVX2 copies exist
 * only with vector extensions on x86-64.
 */
#if !defined(DS3_PLAIN_C) && !defined(__GNUC__)
#define DS3_PLAIN_C 1
#endif
#if defined(__x86_64__) && defined(__GNUC__) && !defined(DS3_PLAIN_C)
#define DS3_AVX2_COPY 1
#else
#define DS3_AVX2_COPY 0
#endif
/* linear_amx.c's AMX product exists where the AVX2 copies do, in float builds. */
#if DS3_AVX2_COPY && !defined(DS3_F64)
#define DS3_AMX_COPY 1
#else
#define DS3_AMX_COPY 0
#endif

/* ========================================================================== */
/* dmath.c — exp, log, pow, sin, cos of ds3's own (the same bits on any libc)  */
/* ========================================================================== */

/* Within one ulp of the exact value (tests/mpfr/check_math.c). ds3_pow: x > 0;
 * ds3_sin/ds3_cos: accurate for |x| < 1.6e6 (deterministic beyond). */
double ds3_exp(double x);
double ds3_log(double x);
double ds3_pow(double x, double y);
double ds3_sin(double x);
double ds3_cos(double x);
/* y[i] = ds3_exp(x[i]), the same bits, several at a time (y may be x). */
void ds3_exp_n(double *y, const double *x, int n);

/* ========================================================================== */
/* fpenv.c — the floating-point environment of a computing entry              */
/* ========================================================================== */

/* A thread's rounding mode and control register (MXCSR / FPCR), as saved. */
typedef struct {
    int round;
    uint64_t csr;
    int workers;  /* this entry set the OpenMP workers' environments too */
} ds3_fpenv;

/* Save the caller's floating-point environment into *e and set IEEE defaults
 * (round to nearest, no FTZ/DAZ) on this thread and OpenMP's workers; refuse
 * (DS3_ERR_PLATFORM, environment unchanged) a build that contracts a*b+c or a
 * big-endian host. Every public function that computes brackets its work with
 * this and ds3_fpenv_leave (the pattern: the top of fpenv.c). */
ds3_status ds3_fpenv_enter(ds3_fpenv *e);
/* The same for the calling thread only (entries that run no parallel region). */
ds3_status ds3_fpenv_enter_serial(ds3_fpenv *e);
/* Restore what ds3_fpenv_enter saved (after a successful enter only). */
void ds3_fpenv_leave(const ds3_fpenv *e);

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
    /* FP8 only, or NULL: what the kernels learned of each 128×128 block, one
     * byte per block in scale_inv's layout: 0 not looked at yet, 1 no NaN code,
     * 2 some NaN code (lanes.h, fp8_block_scale_w). The loader gives every FP8
     * weight one; without it each row's block is scanned at every use. */
    _Atomic unsigned char *fp8_seen;
    /* BF16 only, or NULL: the same weight with each group of four rows
     * interleaved eight columns at a time — for row group g and columns
     * j..j+7, rows 4g..4g+3's values side by side, 64 bytes — which decode's
     * four-row loop reads as one contiguous stream instead of four (lanes.h).
     * The same values, so the same bits; every other reader uses `data`.
     * ds3_model_prepare_decode makes one for lm_head (loader.c). */
    const void *rows4;
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
/* A choice made once: *state is -1 until asked, then decide()'s answer, 0 or 1
 * (which copy of a kernel runs: AVX2, AVX-512, AMX; tests set *state through
 * their select functions to compare the copies). Threads that ask at once get
 * the same answer. */
static inline bool ds3_decided(int *state, bool (*decide)(void)) {
    int v;
#pragma omp atomic read
    v = *state;
    if (v < 0) {
        v = decide();
#pragma omp atomic write
        *state = v;
    }
    return v;
}

/* Whether the caller runs inside an OpenMP parallel region (false without
 * OpenMP): loops that split their own work across the threads stay on the
 * calling thread there (experts run in parallel). */
bool ds3_in_parallel(void);
/* Element-wise and per-token loops over at least this many values split them
 * across the threads (src/model): the same bits, each value's operations its
 * own; fewer stay on one thread, where a fork would cost more than it saves. */
#define DS3_PAR_MIN 32768

/* The CPU has AVX2 and F16C (what linear_avx2.c is built with). */
bool ds3_cpu_has_avx2_f16c(void);
/* The CPU has AVX-512 F, VL and DQ (and AVX2 and F16C): linear_avx2.c's wide tiles. */
bool ds3_cpu_has_avx512(void);

/* linear_amx.c — fast mode's several-token product for BF16 and FP8 weights on
 * Intel AMX, the activations split exactly into three bf16 parts (see there). */
/* The CPU has AMX-TILE and AMX-BF16 and the OS saves their state. */
bool ds3_cpu_has_amx(void);
/* AMX runs: the CPU has it, Linux granted the process its state, DS3_NO_AMX
 * unset (false in builds without the AMX copy). Tests switch it; false if on is
 * asked for and AMX cannot run. */
bool ds3_amx_ok(void);
bool ds3_linear_select_amx(bool on);
/* The weight is one the AMX product takes: BF16, or FP8 with its block scales. */
bool ds3_linear_amx_fits(const ds3_tensor *w);
/* out = in · wᵀ on AMX (w fits); 1 done, -1 out of memory (out incomplete: the
 * caller reports it, as for the BLAS tiles). Call only when ds3_amx_ok. */
int ds3_linear_amx(ds3_real *out, const ds3_real *in, const ds3_tensor *w, int T);
/* Frees the calling thread's buffers (packed activations, padded edge block). */
void ds3_linear_amx_release(void);

/* linear_fp8.c — fast mode's product of a few tokens (decode steps) for FP8
 * weights with AVX-512 (see there): out = in · wᵀ, each 128-column block's sum
 * over the exact code values times its scale, each element the same operations
 * whatever T or the thread count. Call only when ds3_fp8_rows_ok: float build,
 * AVX-512 F, BW and VL, DS3_NO_AVX512 and DS3_NO_AVX2 unset; tests switch it
 * (false if on is asked for and missing). */
bool ds3_fp8_rows_ok(void);
bool ds3_fp8_rows_select(bool on);
void ds3_linear_fp8_rows(ds3_real *out, const ds3_real *in, const ds3_tensor *w, int T);

/* attend.c — fast mode's attention of a decode step with AVX-512 fused
 * multiply-adds (see there), G heads against P cached positions:
 *   sc[g·lds + u] = qc[g·ldqc ..]·c[u·C ..] (C values) + qr[g·ldqr ..]·kr[u·Dr ..] (Dr values)
 *   oc[g·ldo + k] = Σ_u p[g·ldp + u] · c[u·C + k]
 * Each element the same operations whatever G, P or the thread count. Call
 * only when ds3_attend_ok: float build, AVX-512 F, DS3_NO_AVX512 and
 * DS3_NO_AVX2 unset; tests switch it (false if on is asked for and missing). */
bool ds3_attend_ok(void);
bool ds3_attend_select(bool on);
void ds3_attend_scores(ds3_real *sc, size_t lds, const ds3_real *qc, size_t ldqc, const ds3_real *qr, size_t ldqr,
                       int G, const ds3_real *c, int C, const ds3_real *kr, int Dr, int P);
void ds3_attend_values(ds3_real *oc, size_t ldo, const ds3_real *p, size_t ldp, int G, const ds3_real *c, int C,
                       int P);

/* ========================================================================== */
/* linear.c — out[T][w.rows] = in[T][w.cols] · wᵀ                              */
/* ========================================================================== */

/* With the kernels `k` (ds3.h: fast, deterministic, ref); every mode gives the
 * same bits for any thread count. */
void ds3_linear(ds3_kernels k, ds3_real *out, const ds3_real *in, const ds3_tensor *w, int T);
/* The product of a fast decode step, for each of T rows alike (src/model/ops.c:
 * a fast state's one-token calls and a verification's rows, decode_rows):
 * linear_fp8.c's for FP8 weights where it runs (BLAS on, as fast mode's other
 * kernels), else the lane kernel — ds3_linear(DS3_KERNELS_FAST, …, 1)'s product
 * for any T. An element's bits depend on its own input row only. */
void ds3_linear_decode(ds3_real *out, const ds3_real *in, const ds3_tensor *w, int T);
/* The plain loops: one sequential sum per output (what DS3_KERNELS_REF runs). */
void ds3_linear_ref(ds3_real *out, const ds3_real *in, const ds3_tensor *w, int T);
/* Tests: use the AVX2 (true) or portable (false) copy of the lane kernel;
 * false if AVX2 was asked for and the CPU lacks it. */
bool ds3_lanes_select_avx2(bool on);
/* Tests: let the AVX2 copy's tiles run 512 bits wide (true) or not; false if
 * asked for and the CPU (or the build) lacks it. The same bits either way. */
bool ds3_lanes_select_avx512(bool on);
/* The calling thread's scratch for the lane kernel's decoded rows, at least n
 * reals (grown as needed, kept for the next call); NULL when memory runs out
 * (the kernel then takes its unbuffered loops: the same bits). */
ds3_real *ds3_lanes_scratch(int64_t n);
/* Free this thread's (team's) BLAS tile buffers and lane scratch (regrown on the next call). */
void ds3_linear_release(void);
/* Tile buffers of TILE_ROWS x max_cols on every thread of the team, and
 * (once) a probe that OpenBLAS's own buffers fit in the address space;
 * DS3_ERR_NOMEM with a message when not. ds3_state_new calls it. */
ds3_status ds3_linear_prepare(int64_t max_cols);
/* How many BLAS calls so far could not get a tile buffer (their output was
 * not computed): ds3_forward compares it before and after a pass. */
unsigned ds3_linear_failures(void);
/*
 * C[M][N] = A[M][K] · op(B) + beta · C, row-major with leading dimensions,
 * op(B) = Bᵀ for B[N][K] (transb) or B[K][N]: one single-threaded OpenBLAS
 * GEMM (dgemm in the f64 build), for fast mode's attention over several
 * tokens (model/mla.c). ds3_gemm_ok: a BLAS build with BLAS on; only then may
 * ds3_gemm be called. ds3_gemm_prepare: once before GEMMs are issued from
 * several threads (OpenBLAS's own threading off, as for ds3_linear).
 */
bool ds3_gemm_ok(void);
void ds3_gemm_prepare(void);
void ds3_gemm(bool transb, int M, int N, int K, const ds3_real *A, int lda, const ds3_real *B, int ldb,
              ds3_real beta, ds3_real *C, int ldc);
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
/* out[g] = ds3_dot(k, a + g·lda, b, n) for g = 0..m-1: the bits of m ds3_dot
 * calls, b read once for several rows where the CPU has AVX-512 (attention's
 * scores: one cached row against a group of heads' queries). */
void ds3_dot_rows(ds3_kernels k, ds3_real *out, const ds3_real *a, size_t lda, int m, const ds3_real *b, int n);
/* y[i] += a·x[i], vectorised (elementwise: the bits of the plain loop). */
void ds3_axpy(ds3_real *restrict y, ds3_real a, const ds3_real *restrict x, int n);
/* y[i] += a[d]·x[d·ldx + i] for d = 0..m-1 in turn: the bits of m ds3_axpy
 * calls, with y loaded and stored once per four rows. */
void ds3_axpy_rows(ds3_real *restrict y, const ds3_real *a, const ds3_real *restrict x, int m, size_t ldx, int n);

#endif /* DS3_KERNELS_H */

/*
 * linear.c — out = in · Wᵀ for weights kept in their checkpoint dtype.
 *
 *   out[T][rows] = in[T][cols] · w[rows][cols]ᵀ        (PyTorch's nn.Linear, no bias)
 *
 * Every projection of the model goes through here. Weights stay as stored
 * (F32, BF16, F16 or block-scaled F8_E4M3, mmap'd) and are dequantised exactly
 * into the scalar type as they are read (docs/MODEL.md §1, §7), 128 columns at a time,
 * so each weight byte is read once per call.
 *
 * Implementations of the same product:
 *   - ds3_linear_ref: the plain loops. Each output element is one sequential
 *     sum over j = 0..cols-1. The slow, obviously-right twin the tests hold the
 *     others to (and the path of DS3_KERNELS_REF).
 *   - the lane kernel (linear_lanes): each element is the sum of LANES
 *     partial sums — lane k adds the products j ≡ k (mod LANES) in order —
 *     combined by a fixed tree. Written with GCC/clang vector extensions so the
 *     compiler emits SIMD without intrinsics; no FMA contraction (the Makefile
 *     passes -ffp-contract=off), so the bits are the same on every x86-64 and
 *     every compiler. It serves decode (T = 1), calls of up to LANES_MAX_T
 *     tokens in fast mode (but FP8 weights on AVX-512: below), and every T in
 *     deterministic mode and in BLAS=none builds.
 *   - the BLAS path (more tokens): rows are dequantised 128 at a time into a tile
 *     and each tile is one single-threaded sgemm (dgemm in the f64 build);
 *     OpenMP runs the tiles in parallel.
 *   - the AMX product (linear_amx.c): in fast mode, BF16 and FP8 weights and 2
 *     tokens or more on a CPU with AMX, the activations split exactly into three bf16
 *     parts; it takes the place of the other two there.
 *   - the FP8 product of a few tokens (linear_fp8.c): in fast mode, FP8 weights
 *     and up to FP8_ROWS_MAX_T tokens (decode steps, most experts of a prefill)
 *     on a CPU with AVX-512, each 128-column block's sum over the exact codes
 *     times its scale. A row's bits never depend on T, so it is also the
 *     product of every row of a verification of drafts (ds3_linear_decode;
 *     src/model/ops.c decides which rows are a decode step's).
 *
 * Determinism. An element's value depends only on its input row and weight
 * row, never on T or on the thread count: OpenMP splits output rows (and
 * tiles), and no reduction crosses threads. The lane kernel also gives the
 * same bits for any T, so in deterministic mode a full prefill and
 * prefill-then-decode produce byte-identical logits. OpenBLAS's GEMM does not
 * promise that across M (its kernels block the reduction by M-dependent
 * paths), which is why deterministic mode exists; it is off by default
 * because it makes prefill several times slower (docs/ARCHITECTURE.md §6).
 */
#define _DEFAULT_SOURCE   /* MAP_ANONYMOUS */
#include "kernels/kernels.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#ifdef _OPENMP
#include <omp.h>
#endif

/* Inside another parallel region (experts run in parallel) the kernels stay
 * on the calling thread rather than rely on the nesting setting. (Without
 * OpenMP the pragmas that ask are ignored.) */
bool ds3_in_parallel(void) {
#ifdef _OPENMP
    return omp_in_parallel();
#else
    return false;
#endif
}

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

/* ---- the build and the threads (ds3.h) ---------------------------------------- */

ds3_status ds3_set_threads(int n) {
    if (n < 1) return ds3_fail(DS3_ERR_ARG, "threads: %d is not a positive count", n);
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
#ifdef DS3_BLAS
    openblas_set_num_threads(n);
#endif
    return DS3_OK;
}

int ds3_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

void ds3_get_build_info(ds3_build_info *out) {
    if (!out) return;
#ifdef DS3_F64
    out->precision = "f64";
#else
    out->precision = "f32";
#endif
#ifdef DS3_BLAS
    const char *cfg = openblas_get_config();
    out->blas = cfg ? cfg : "OpenBLAS";
#else
    out->blas = "none (plain loops)";
#endif
#ifdef _OPENMP
    out->openmp = _OPENMP;
#else
    out->openmp = 0;
#endif
#if defined(__x86_64__) && defined(__GNUC__) && !defined(DS3_F64)   /* as dtype.c */
    out->simd_built = 1;
#else
    out->simd_built = 0;
#endif
    out->simd = ds3_rows_avx2_ok() ? "avx2+f16c" : "portable";
#ifdef DS3_BLAS
    out->amx = ds3_use_blas && ds3_amx_ok();
    out->avx512 = ds3_use_blas && ds3_attend_ok() && ds3_fp8_rows_ok();
#else
    out->amx = 0;
    out->avx512 = 0;
#endif
}

/* Columns decoded at once in the plain path: one FP8 scale block. */
#define COL_BLOCK DS3_FP8_BLOCK

void ds3_linear_ref(ds3_real *out, const ds3_real *in, const ds3_tensor *w, int T) {
    const int64_t rows = w->rows, cols = w->cols;
    for (int64_t i = 0; i < (int64_t)T * rows; i++) out[i] = 0;
#pragma omp parallel for schedule(static) if (!ds3_in_parallel())
    for (int64_t i = 0; i < rows; i++) {
        ds3_real buf[COL_BLOCK];  /* row i, columns [j0, j0+nb), dequantised */
        for (int64_t j0 = 0; j0 < cols; j0 += COL_BLOCK) {
            int64_t nb = cols - j0 < COL_BLOCK ? cols - j0 : COL_BLOCK;
            ds3_tensor_block(buf, w, i, j0, nb);
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

/* ========================================================================== */
/* The lane kernel (src/kernels/lanes.h), built portably here and with AVX2 in         */
/* linear_avx2.c; the CPU picks at run time. Same arithmetic, same bits.       */
/* ========================================================================== */

#define LANES_FN(name) name##_portable
#include "simd.h"
#ifndef DS3_F64
/* Eight e4m3 codes to their exact values, by table (float builds' fused loops). */
static inline void fp8x8_portable(vreal *out, const unsigned char *q) {
    float v[8];
    for (int k = 0; k < 8; k++) v[k] = ds3_e4m3_table[q[k]];
    memcpy(out, v, sizeof v);
}
/* No faster FP8 decoder here (lanes.h's fp8_block_scale): the table is exact
 * for every code. */
static inline bool fp8_finite_portable(const unsigned char *q, int64_t n) { (void)q, (void)n; return false; }
#define LANES_HAVE_HALF 0
static inline void fp8x8_half_portable(vreal *out, const unsigned char *q) { fp8x8_portable(out, q); }
static inline void fp8x16_half_portable(vreal *lo, vreal *hi, const unsigned char *q) {
    fp8x8_portable(lo, q);
    fp8x8_portable(hi, q + 8);
}
/* Eight bf16 values, exactly (simd.h). */
static inline void bf16x8_portable(vreal *out, const unsigned char *p) { VBF16X8(*out, p); }
#endif
#include "lanes.h"
#undef LANES_FN
#undef LANES_HAVE_HALF

typedef void lanes_fn(ds3_real *out, const ds3_real *in, const ds3_tensor *w, int T, int64_t i0, int64_t i1);
#if DS3_AVX2_COPY
lanes_fn ds3_lanes_rows_avx2;  /* linear_avx2.c */
#endif

static bool have_avx2(void) {
#if DS3_AVX2_COPY
    return ds3_cpu_has_avx2_f16c();  /* what linear_avx2.c is built with */
#else
    return false;
#endif
}

static _Thread_local ds3_real *lanes_buf;
static _Thread_local int64_t lanes_cap;

ds3_real *ds3_lanes_scratch(int64_t n) {
    if (n > lanes_cap) {
        ds3_real *nb = realloc(lanes_buf, (size_t)n * sizeof(ds3_real));
        if (!nb) return NULL;
        lanes_buf = nb;
        lanes_cap = n;
    }
    return lanes_buf;
}

/* The kernel copy in use: NULL until the first call picks the AVX2 one where
 * the CPU has it (no FMA: the bits do not change) and DS3_NO_AVX2 is unset. */
static lanes_fn *lanes_kernel;

static lanes_fn *pick_lanes(void) {
    lanes_fn *k;
#pragma omp atomic read
    k = lanes_kernel;
    if (k) return k;
#if DS3_AVX2_COPY
    k = !getenv("DS3_NO_AVX2") && have_avx2() ? ds3_lanes_rows_avx2 : lanes_rows_portable;
#else
    k = lanes_rows_portable;
#endif
#pragma omp atomic write
    lanes_kernel = k;
    return k;
}

bool ds3_lanes_select_avx2(bool on) {
    if (on && !have_avx2()) return false;
#if DS3_AVX2_COPY
    lanes_kernel = on ? ds3_lanes_rows_avx2 : lanes_rows_portable;
#else
    lanes_kernel = lanes_rows_portable;
#endif
    return true;
}

/* Rows handed to one OpenMP iteration: small enough to balance, large enough
 * that the loop overhead does not show on small matrices. */
#define ROW_CHUNK 16

static void linear_lanes(ds3_real *out, const ds3_real *in, const ds3_tensor *w, int T) {
    lanes_fn *k = pick_lanes();
    const int64_t rows = w->rows;
    const int64_t nchunks = (rows + ROW_CHUNK - 1) / ROW_CHUNK;
#pragma omp parallel for schedule(static) if (rows * w->cols * (int64_t)T > 32768 && !ds3_in_parallel())
    for (int64_t c = 0; c < nchunks; c++) {
        int64_t i0 = c * ROW_CHUNK, i1 = i0 + ROW_CHUNK < rows ? i0 + ROW_CHUNK : rows;
        k(out, in, w, T, i0, i1);
    }
}

#ifdef DS3_BLAS
/*
 * Tile buffer for the BLAS path, one per thread, allocated by
 * ds3_linear_prepare (ds3_state_new) for the widest matrix of the model on
 * every thread of the team, so a forward pass does not allocate. A thread
 * that meets a wider tile (or was not in that team: another program thread)
 * grows its own; if that fails the call's output is not computed and
 * tile_failures counts it, which ds3_forward turns into an error. (It used to
 * fall back to the plain loops, which give other bits: a silent change of
 * results under memory pressure.)
 */
static _Thread_local ds3_real *tile_buf;
static _Thread_local size_t tile_cap;
static atomic_uint tile_failures;

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
#pragma omp parallel for schedule(static) reduction(|| : fail) if (!ds3_in_parallel())
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
    /* Out of memory for a tile buffer: some tiles were not computed. No
     * fallback to another kernel (other bits); the caller reports it. */
    if (fail) atomic_fetch_add(&tile_failures, 1);
}

/* Bytes OpenBLAS 0.3.21 maps per GEMM buffer on x86-64: BUFFER_SIZE (128 MiB)
 * plus two pages, seen as the size of its mmap/malloc in blas_memory_alloc.
 * Builds for other CPUs use 32 or 64 MiB; probing for 128 covers them. */
#define OPENBLAS_BUFFER_BYTES ((size_t)134225920)

/* Can `n` OpenBLAS buffers be mapped now? (mapped, then unmapped: OpenBLAS
 * maps its own on first use, one per thread calling a GEMM at once). */
static bool openblas_room(int n, int *err) {
    void *maps[1025];
    int got = 0;
    if (n > 1024) n = 1024;
    for (; got < n; got++) {
        maps[got] = mmap(NULL, OPENBLAS_BUFFER_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (maps[got] == MAP_FAILED) {
            *err = errno;
            break;
        }
    }
    for (int i = 0; i < got; i++) munmap(maps[i], OPENBLAS_BUFFER_BYTES);
    return got == n;
}
#endif

/* ---- a plain product of activations (attention's GEMMs in fast mode) ------------------ */

bool ds3_gemm_ok(void) {
#ifdef DS3_BLAS
    return ds3_use_blas;
#else
    return false;
#endif
}

void ds3_gemm_prepare(void) {
#ifdef DS3_BLAS
    blas_single_threaded();
#endif
}

void ds3_gemm(bool transb, int M, int N, int K, const ds3_real *A, int lda, const ds3_real *B, int ldb,
              ds3_real beta, ds3_real *C, int ldc) {
#ifdef DS3_BLAS
#ifdef DS3_F64
    cblas_dgemm(CblasRowMajor, CblasNoTrans, transb ? CblasTrans : CblasNoTrans, M, N, K, 1.0, A, lda, B, ldb, beta,
                C, ldc);
#else
    cblas_sgemm(CblasRowMajor, CblasNoTrans, transb ? CblasTrans : CblasNoTrans, M, N, K, 1.0f, A, lda, B, ldb,
                beta, C, ldc);
#endif
#else
    (void)transb, (void)M, (void)N, (void)K, (void)A, (void)lda, (void)B, (void)ldb, (void)beta, (void)C, (void)ldc;
    DS3_ASSERT(!"ds3_gemm without BLAS (ds3_gemm_ok is false)");
#endif
}

unsigned ds3_linear_failures(void) {
#ifdef DS3_BLAS
    return atomic_load(&tile_failures);
#else
    return 0;
#endif
}

/*
 * Before a state runs fast kernels: every thread of the team gets a tile
 * buffer for `max_cols` columns, and (once per process) the address space
 * OpenBLAS will need is probed. OpenBLAS 0.3.21 allocates a 128 MiB buffer
 * per concurrent GEMM on first use and, when that allocation fails, retries
 * forever (blas_memory_alloc loops over its allocators until one succeeds):
 * under `ulimit -v` a run would hang, not fail. So ds3 maps as many buffers
 * as it has threads itself first and fails with a message if it cannot.
 * (OpenBLAS's own server threads, OPENBLAS_NUM_THREADS - 1 of them, took
 * their buffers when the library was loaded; ds3 never uses them.)
 */
ds3_status ds3_linear_prepare(int64_t max_cols) {
#ifdef DS3_BLAS
    if (!ds3_use_blas) return DS3_OK;
    const size_t need = (size_t)TILE_ROWS * (size_t)max_cols;
    bool fail = false;
#pragma omp parallel reduction(|| : fail)
    {
        if (need > tile_cap) {
            ds3_real *nb = realloc(tile_buf, need * sizeof(ds3_real));
            if (nb) {
                tile_buf = nb;
                tile_cap = need;
            } else {
                fail = true;
            }
        }
    }
    if (fail)
        return ds3_fail(DS3_ERR_NOMEM, "out of memory for the BLAS tile buffers (%zu kB per thread)",
                        need * sizeof(ds3_real) >> 10);
    static atomic_int probed;
    if (!atomic_load(&probed)) {
#ifdef _OPENMP
        int n = omp_get_max_threads();   /* GEMMs at once: one per thread of the team */
#else
        int n = 1;
#endif
        int err = 0;
        if (!openblas_room(n, &err))
            return ds3_fail(DS3_ERR_NOMEM, "not enough address space for OpenBLAS: its GEMMs need a %zu MB buffer "
                            "per thread (%d threads) and mapping them failed (%s); OpenBLAS 0.3.21 would "
                            "retry forever instead of failing. Raise the limit (ulimit -v), lower "
                            "OMP_NUM_THREADS, or use --kernels deterministic (no BLAS)",
                            OPENBLAS_BUFFER_BYTES >> 20, n, strerror(err));
        atomic_store(&probed, 1);
    }
#else
    (void)max_cols;
#endif
    return DS3_OK;
}

/* ========================================================================== */
/* Threads                                                                     */
/* ========================================================================== */

#ifdef _OPENMP
static void *idle_thread(void *arg) { return arg; }
#endif

ds3_status ds3_threads_start(void) {
#ifdef _OPENMP
    /* libgomp, when it cannot create a thread, prints "libgomp: Thread creation
     * failed" and exits. Create as many threads as the team will need (with
     * the same default attributes) and join them; then start the team, which
     * libgomp keeps for later parallel regions. */
    int n = omp_get_max_threads();
    pthread_t t[256];
    int made = 0, err = 0;
    for (; made < n - 1 && made < 256; made++)
        if ((err = pthread_create(&t[made], NULL, idle_thread, NULL)) != 0) break;
    for (int i = 0; i < made; i++) pthread_join(t[i], NULL);
    if (err)
        return ds3_fail(DS3_ERR_NOMEM, "cannot start %d threads (OMP_NUM_THREADS): the %dth failed: %s; lower "
                        "OMP_NUM_THREADS or raise the limits on memory or processes (ulimit -v, ulimit -u)", n,
                        made + 2, strerror(err));
    int team = 0;
#pragma omp parallel
    {
#pragma omp atomic
        team++;
    }
    (void)team;
#endif
    return DS3_OK;
}

/* Calls of at most this many tokens use the lane kernel in fast mode too. */
#define LANES_MAX_T 32
/* Calls of at least this many tokens with BF16 or FP8 weights use AMX, where it runs. */
#define AMX_MIN_T 2
/* Calls of fewer tokens with FP8 weights take linear_fp8.c's product in fast
 * mode, where it runs: it decodes the codes for two tokens at a time, AMX
 * converts the whole weight to bf16 first. Measured on small's experts (all of
 * them, one call each, one core of the Xeon with AMX): 3.3x AMX's speed at 2
 * tokens, 1.7x at 4, 1.8x at 6, 0.73x at 8; 1.3–2.8x the lane kernel's at 2–8
 * tokens, about even at 16 (docs/BENCHMARKS.md). */
#define FP8_ROWS_MAX_T 7

/* The weight is one linear_fp8.c takes, and it runs (BLAS on, as fast mode's
 * other kernels). */
static bool fp8_rows_take(const ds3_tensor *w) {
#ifdef DS3_BLAS
    return ds3_use_blas && w->dtype == DS3_DT_F8_E4M3 && ds3_fp8_rows_ok();
#else
    (void)w;
    return false;
#endif
}

ds3_status ds3_kernels_parse(const char *name, ds3_kernels *out) {
    static const char *const names[] = {"fast", "deterministic", "ref"};
    for (int i = 0; i < 3; i++)
        if (name && strcmp(name, names[i]) == 0) {
            *out = (ds3_kernels)i;
            return DS3_OK;
        }
    return ds3_fail(DS3_ERR_ARG, "unknown kernels '%s' (expected fast, deterministic or ref)", name ? name : "");
}

void ds3_linear(ds3_kernels k, ds3_real *out, const ds3_real *in, const ds3_tensor *w, int T) {
    switch (k) {
    case DS3_KERNELS_REF:
        ds3_linear_ref(out, in, w, T);
        return;
    case DS3_KERNELS_FAST:
#ifdef DS3_BLAS
        /* FP8 weights and a few tokens on a CPU with AVX-512: each block's sum
         * over the exact codes times its scale (linear_fp8.c), the product of a
         * decode step (ds3_linear_decode). */
        if (T <= FP8_ROWS_MAX_T && fp8_rows_take(w)) {
            ds3_linear_fp8_rows(out, in, w, T);
            return;
        }
        /* BF16 and FP8 weights on a CPU with AMX: from two tokens on, the AMX product
         * (linear_amx.c), the activations split exactly into three bf16 parts.
         * Like the BLAS tiles it is off with ds3_use_blas, where fast mode is the
         * lane kernel throughout. */
        if (ds3_use_blas && T >= AMX_MIN_T && ds3_linear_amx_fits(w) && ds3_amx_ok()) {
            if (ds3_linear_amx(out, in, w, T) < 0) atomic_fetch_add(&tile_failures, 1);
            return;
        }
        /* A GEMM on a dequantised tile pays for the dequantisation and the
         * packing once per call; up to LANES_MAX_T tokens the lane kernel,
         * which decodes each weight once per call and multiplies it into
         * two tokens at a time (lanes.h, lanes_tiles), is as fast or faster
         * (measured on small's shapes, one Zen 5 core: 1.3-2.6x at 5-8 tokens,
         * 1.0-1.5x at 16, about even at 32, BLAS ahead from 48). Most experts
         * of a prefill see that few tokens. */
        if (ds3_use_blas && T > LANES_MAX_T) {
            linear_blas(out, in, w, T);
            return;
        }
#endif
        /* fall through - a few tokens, or no BLAS */
    case DS3_KERNELS_DETERMINISTIC:
        linear_lanes(out, in, w, T);
        return;
    }
}

void ds3_linear_decode(ds3_real *out, const ds3_real *in, const ds3_tensor *w, int T) {
    if (fp8_rows_take(w)) ds3_linear_fp8_rows(out, in, w, T);
    else linear_lanes(out, in, w, T);
}

void ds3_linear_release(void) {
    /* every thread of the team frees its own buffers */
#pragma omp parallel
    {
#ifdef DS3_BLAS
        free(tile_buf);
        tile_buf = NULL;
        tile_cap = 0;
#endif
        free(lanes_buf);
        lanes_buf = NULL;
        lanes_cap = 0;
        ds3_linear_amx_release();
    }
}

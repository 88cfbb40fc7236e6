/*
 * error.h — what every file of ds3 uses: the status-and-message error style,
 * the internal assert, allocation that records its failure (error.c).
 *
 * The source tree, one folder per layer, each with one small header; a folder
 * includes only the headers of the folders before it in this list, so there
 * is no circle of imports (tests/check_layout.sh checks it):
 *
 *   src/error.h              this file
 *   src/kernels/kernels.h    element types, weight views, the matrix and vector kernels
 *   src/io/io.h              safetensors files, whole output files
 *   src/check/check.h        activation dumps, GPU rounding emulation, comparison
 *   src/model/model.h        config, weights, state, the forward pass (the architecture)
 *   src/generate/generate.h  sampling, speculative decoding
 *   src/tools/               model summaries and synthetic checkpoints (public API only)
 *   src/tokenizer/tokenizer.h  the tokenizer (needs only this file)
 *
 * None of these is API: programs use include/ds3.h; tests may include them.
 */
#ifndef DS3_ERROR_H
#define DS3_ERROR_H

/*
 * Evaluation method: every float and double operation rounds to its own type.
 * x87 arithmetic (32-bit x86 without SSE2 math: FLT_EVAL_METHOD 2) keeps
 * intermediates in 80 bits and rounds twice, which changes the dumps' bits.
 * 16 (gcc's gnu modes with AVX512-FP16, e.g. -march=sapphirerapids) says only
 * _Float16 is evaluated differently (TS 18661-3): float and double keep their
 * own. Checked first, before any other header can fail on such a target.
 */
#include <float.h>
#if !defined(FLT_EVAL_METHOD) || (FLT_EVAL_METHOD != 0 && FLT_EVAL_METHOD != 16)
#error "ds3 needs float and double evaluated in their own precision (FLT_EVAL_METHOD 0: SSE2 math on x86, e.g. -msse2 -mfpmath=sse); docs/PORTABILITY.md"
#endif

#include "ds3.h"

#include <fenv.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/*
 * ---- what keeps the bits (docs/PORTABILITY.md) ----------------------------
 *
 * Byte order: weights are read and dumps written in host order, and the files
 * are little-endian, so a big-endian host would compute from garbage. Refused
 * here where the compiler says its order, and at run time by ds3_fpenv_enter
 * (src/kernels/fpenv.c) where it does not.
 */
#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "ds3 reads and writes little-endian files in host order: big-endian hosts are not supported (docs/PORTABILITY.md)"
#endif

/*
 * Contraction: every a*b+c in ds3 is two roundings, never one fused
 * multiply-add; the dumps' bits depend on it. The Makefile passes
 * -ffp-contract=off, but another build system may not: clang honours the
 * standard pragma below for every file that includes this header; gcc ignores
 * it, and contracts by default outside ISO C mode (-std=gnu11) wherever the
 * target has FMA. So each file also carries a probe, run before main (or at
 * dlopen): a*a+c whose result is 0 with two roundings and a tiny non-zero
 * number when fused, in float and in double. A file built to contract records
 * its name in ds3_fp_contracted, and every computing entry refuses to run
 * (ds3_fpenv_enter: "built with floating-point contraction").
 */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

/* The first source file whose probe saw a fused multiply-add, or NULL. */
extern const char *volatile ds3_fp_contracted;

#if defined(__GNUC__)
__attribute__((constructor, used)) static void ds3_contract_probe(void) {
    /* f32: (1+2^-12)^2 = 1 + 2^-11 + 2^-24 rounds (a tie, to even) to 1 + 2^-11.
     * f64: (1+2^-27)^2 = 1 + 2^-26 + 2^-54 rounds to 1 + 2^-26. Volatile so
     * that nothing is folded at compile time. Round to nearest for the probe:
     * another library's constructor may have set another mode before ours. */
    int mode = fegetround();
    if (mode != FE_TONEAREST) fesetround(FE_TONEAREST);
    volatile float af = 1.0f + 0x1p-12f, cf = -(1.0f + 0x1p-11f);
    volatile double ad = 1.0 + 0x1p-27, cd = -(1.0 + 0x1p-26);
    float rf = af * af + cf;
    double rd = ad * ad + cd;
    if (mode != FE_TONEAREST) fesetround(mode);
    if (rf != 0.0f || rd != 0.0) ds3_fp_contracted = __BASE_FILE__;
}
#endif

/* Report progress to the hook of ds3_set_progress (nothing when none is set). */
void ds3_progress(const char *what, double done, double total);

/* Record a formatted message for ds3_last_error() and return the status, so
 * that call sites read `return ds3_fail(DS3_ERR_SHAPE, "%s: shape …", name);` */
ds3_status ds3_fail(ds3_status st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Internal invariant: a broken one is a bug in ds3, not bad input. Reports
 * file:line and aborts (the only place the library may stop the process). */
#define DS3_ASSERT(cond)                                                        \
    do {                                                                        \
        if (!(cond)) ds3_assert_fail(#cond, __FILE__, __LINE__);                \
    } while (0)
void ds3_assert_fail(const char *expr, const char *file, int line) __attribute__((noreturn));

/* malloc/calloc that record DS3_ERR_NOMEM on failure (caller still checks). */
void *ds3_malloc(size_t bytes);
void *ds3_calloc(size_t n, size_t size);

#endif /* DS3_ERROR_H */

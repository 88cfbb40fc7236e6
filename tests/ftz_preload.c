/*
 * ftz_preload.c — a library that does what a -ffast-math library's
 * constructor does to a process (crtfastmath.o): flush-to-zero and
 * denormals-are-zero on (x86-64 MXCSR bits 15 and 6; aarch64 FPCR FZ), and,
 * with FTZ_PRELOAD_ROUND=up, rounding upward too. scripts/bit-matrix.sh
 * LD_PRELOADs it into the CLI: the dumps must keep their bits
 * (src/kernels/fpenv.c). Not a test program; built by the script.
 */
#include <fenv.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <xmmintrin.h>
#endif

__attribute__((constructor)) static void ftz_on(void) {
#if defined(__x86_64__)
    _mm_setcsr(_mm_getcsr() | (1u << 15) | (1u << 6));
#elif defined(__aarch64__)
    uint64_t v;
    __asm__ volatile("mrs %0, fpcr" : "=r"(v));
    v |= 1ull << 24;
    __asm__ volatile("msr fpcr, %0" : : "r"(v));
#endif
    const char *r = getenv("FTZ_PRELOAD_ROUND");
    if (r && strcmp(r, "up") == 0) fesetround(FE_UPWARD);
}

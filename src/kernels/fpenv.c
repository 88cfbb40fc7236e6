/*
 * fpenv.c — the floating-point environment every computing entry runs in
 * (docs/PORTABILITY.md).
 *
 * ds3's bits assume IEEE 754 defaults: round to nearest even, subnormals kept
 * (no flush-to-zero of results, no denormals-are-zero on inputs). A process
 * may have changed them — any library built with -ffast-math sets FTZ/DAZ from
 * its constructor (crtfastmath.o), a caller may set another rounding mode —
 * and then the same call would give other numbers, silently. So each public
 * function that computes brackets its work:
 *
 *     ds3_fpenv env;
 *     ds3_status st = ds3_fpenv_enter(&env);   // saves, sets the defaults
 *     if (st != DS3_OK) return st;             // a build that contracts, a big-endian host
 *     st = the_work(...);
 *     ds3_fpenv_leave(&env);                   // restores the caller's environment
 *     return st;
 *
 * (ds3_forward, ds3_forward_mtp, ds3_generate_spec, ds3_replay_layer,
 * ds3_model_load, ds3_mkmodel, ds3_sample and ds3_cmp_files, the comparison
 * behind ds3 compare and ds3 replay, do; a new entry that computes should too.)
 * Calls nest: an inner enter saves the defaults and its leave restores them.
 *
 * What is set: the C rounding mode (fesetround) everywhere; on x86-64 the
 * MXCSR's FTZ (bit 15), DAZ (bit 6) and rounding field (bits 13-14); on
 * aarch64 the FPCR's FZ (24), FZ16 (19), DN (25, default NaN), AH and FIZ
 * (1, 0) and RMode (22-23). Exception flags and trap masks are left alone.
 * The environment is per thread, and OpenMP's worker threads may predate the
 * call (created by the host, or by an earlier call, with its environment), so
 * when the caller's environment is not the defaults enter also runs a parallel region in which every worker saves its own and
 * sets the defaults, and leave one in which each restores what it saved.
 */
#include "kernels/kernels.h"

#include <fenv.h>
#include <stdint.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h>
#define FPENV_CSR 1
/* FTZ, the rounding field, DAZ */
#define FPENV_CSR_BITS ((1u << 15) | (3u << 13) | (1u << 6))
static uint64_t csr_get(void) { return _mm_getcsr(); }
static void csr_set(uint64_t v) { _mm_setcsr((unsigned)v); }
#elif defined(__aarch64__)
#define FPENV_CSR 1
/* DN, FZ, RMode, FZ16, AH, FIZ */
#define FPENV_CSR_BITS ((1ull << 25) | (1ull << 24) | (3ull << 22) | (1ull << 19) | (1ull << 1) | 1ull)
static uint64_t csr_get(void) {
    uint64_t v;
    __asm__ volatile("mrs %0, fpcr" : "=r"(v));
    return v;
}
static void csr_set(uint64_t v) { __asm__ volatile("msr fpcr, %0" : : "r"(v)); }
#else
#define FPENV_CSR 0
#endif

/* This thread's environment into *e, then the IEEE defaults. */
static void save_and_set(ds3_fpenv *e) {
    e->round = fegetround();
    if (e->round != FE_TONEAREST) fesetround(FE_TONEAREST);
#if FPENV_CSR
    e->csr = csr_get();
    if (e->csr & FPENV_CSR_BITS) csr_set(e->csr & ~(uint64_t)FPENV_CSR_BITS);
#else
    e->csr = 0;
#endif
}

static void restore(const ds3_fpenv *e) {
#if FPENV_CSR
    if (csr_get() != e->csr) csr_set(e->csr);
#endif
    if (fegetround() != e->round) fesetround(e->round);
}

/* Entries open on this thread: only the outermost one sets the workers. */
static _Thread_local int depth;

#ifdef _OPENMP
/* A worker's own saved environment, between one call's enter and leave. */
static _Thread_local ds3_fpenv worker_env;
static _Thread_local int worker_saved;
#endif

static ds3_status enter(ds3_fpenv *e, int workers);

ds3_status ds3_fpenv_enter(ds3_fpenv *e) { return enter(e, 1); }

/* The calling thread only: for entries that run no parallel region (a parallel
 * region here would start OpenMP's pool in a process that never used it, and
 * libgomp's pool does not survive fork(): a child that then computes hangs). */
ds3_status ds3_fpenv_enter_serial(ds3_fpenv *e) { return enter(e, 0); }

static ds3_status enter(ds3_fpenv *e, int workers) {
    const uint16_t one = 1;
    unsigned char low;
    memcpy(&low, &one, 1);
    e->workers = 0;
    save_and_set(e);
    if (low != 1) {
        restore(e);
        return ds3_fail(DS3_ERR_PLATFORM, "this host is big-endian: ds3 reads and writes little-endian files "
                                          "in host order and would compute wrong numbers (docs/PORTABILITY.md)");
    }
    if (ds3_fp_contracted) {
        restore(e);
        return ds3_fail(DS3_ERR_PLATFORM, "ds3 was built with floating-point contraction (%s fuses a*b+c "
                        "into one rounding), which changes its bits: build it with -ffp-contract=off "
                        "(docs/PORTABILITY.md)", ds3_fp_contracted);
    }
    depth++;
#ifdef _OPENMP
    /* Only the outermost entry, from outside a parallel region (inside one,
     * the team is the caller's and already runs in this environment). */
    /* Only when this thread's environment was not the defaults: the workers
     * were made from it or live beside it. In the usual case no parallel region
     * runs here, so no OpenMP pool is started that a later fork() would break. */
    const int hostile = e->round != FE_TONEAREST
#if FPENV_CSR
                        || (e->csr & FPENV_CSR_BITS)
#endif
        ;
    if (workers && hostile && depth == 1 && !omp_in_parallel()) {
        e->workers = 1;
#pragma omp parallel
        {
            if (omp_get_thread_num() != 0 && !worker_saved) {
                save_and_set(&worker_env);
                worker_saved = 1;
            }
        }
    }
#else
    (void)workers;  /* no threads but the caller's */
#endif
    return DS3_OK;
}

void ds3_fpenv_leave(const ds3_fpenv *e) {
    depth--;
#ifdef _OPENMP
    if (e->workers) {
#pragma omp parallel
        {
            if (worker_saved) {
                restore(&worker_env);
                worker_saved = 0;
            }
        }
    }
#endif
    restore(e);
}

/*
 * test_fpenv.c — the floating-point environment guard (src/kernels/fpenv.c,
 * docs/PORTABILITY.md):
 *   - the hostile environment a host process may leave behind — FTZ and DAZ
 *     on (what a -ffast-math library's constructor does), rounding upward — set
 *     on this thread and on every OpenMP worker, is really hostile: plain
 *     arithmetic and ds3's own dot product give other numbers in it;
 *   - ds3_forward (deterministic and ref kernels, f32 and fp8 weights, 1 and 2
 *     threads), ds3_forward_mtp and ds3_sample give, inside it, the bits they
 *     give in the IEEE defaults;
 *   - inside a call every thread runs in the defaults; after it every thread
 *     has the caller's environment back;
 *   - the build does not contract (ds3_fp_contracted stays NULL), and a
 *     contracting build is refused with a message naming the file.
 * The same check on the CLI, with the environment set by an LD_PRELOAD'ed
 * library's constructor, is part of scripts/bit-matrix.sh.
 */
#include "harness.h"
#include "model/model.h"

#include <fenv.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__)
#include <xmmintrin.h>
#define HOSTILE_CSR ((1u << 15) | (1u << 6)) /* FTZ, DAZ */
static uint64_t csr_get(void) { return _mm_getcsr(); }
static void csr_set(uint64_t v) { _mm_setcsr((unsigned)v); }
#elif defined(__aarch64__)
#define HOSTILE_CSR (1ull << 24) /* FZ */
static uint64_t csr_get(void) {
    uint64_t v;
    __asm__ volatile("mrs %0, fpcr" : "=r"(v));
    return v;
}
static void csr_set(uint64_t v) { __asm__ volatile("msr fpcr, %0" : : "r"(v)); }
#else
#define HOSTILE_CSR 0
static uint64_t csr_get(void) { return 0; }
static void csr_set(uint64_t v) { (void)v; }
#endif

static void set_threads(int n) {
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
    (void)n;
}

/* This thread: FTZ/DAZ on (where the CPU has them), rounding upward; or back. */
static void hostile_here(int on) {
    if (on) {
        csr_set(csr_get() | HOSTILE_CSR);
        fesetround(FE_UPWARD);
    } else {
        csr_set(csr_get() & ~(uint64_t)HOSTILE_CSR);
        fesetround(FE_TONEAREST);
    }
}

/* Every thread of the team. */
static void hostile(int on) {
    hostile_here(on);
#ifdef _OPENMP
#pragma omp parallel
    hostile_here(on);
#endif
}

/* Threads of the team whose environment is (hostile) or is not the hostile one. */
static int threads_not(int want_hostile) {
    int bad = 0;
#ifdef _OPENMP
#pragma omp parallel reduction(+ : bad)
#endif
    {
        int h = fegetround() == FE_UPWARD && (csr_get() & HOSTILE_CSR) == HOSTILE_CSR;
        int d = fegetround() == FE_TONEAREST && (csr_get() & HOSTILE_CSR) == 0;
        bad += want_hostile ? !h : !d;
    }
    return bad;
}

static ds3_model *load(const char *dir, const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    ds3_model *m = NULL;
    ds3_status st = ds3_model_load(path, &m);
    CHECK(st == DS3_OK, "load %s: %s", path, ds3_last_error());
    return m;
}

/* Logits of a 7-token prompt (all rows) and of MTP depth 0, or NULL. */
static ds3_real *logits(const ds3_model *m, ds3_kernels k, int with_mtp) {
    static const int32_t toks[7] = {1, 5, 9, 2, 6, 5, 3};
    const int V = ds3_model_vocab_size(m), T = 7;
    ds3_real *lg = calloc((size_t)2 * T * V, sizeof *lg);
    ds3_state *s = NULL;
    ds3_status st = ds3_state_new(m, 16, DS3_ATTN_ABSORB, &s);
    if (!st) st = ds3_state_set_kernels(s, k);
    if (!st && with_mtp) st = ds3_state_set_mtp(s, 1);
    if (!st) st = ds3_forward(s, toks, T, 0, lg);
    if (!st && with_mtp) st = ds3_forward_mtp(s, 0, toks + 1, T - 1, 0, lg + (size_t)T * V);
    CHECK(st == DS3_OK, "forward: %s", ds3_last_error());
    ds3_state_free(s);
    if (st) {
        free(lg);
        return NULL;
    }
    return lg;
}

int main(void) {
    const char *models = getenv("DS3_MODELS");
    if (!models) {
        fprintf(stderr, "DS3_MODELS is not set\n");
        return 1;
    }

    th_section("the build does not contract a*b+c");
    CHECK(ds3_fp_contracted == NULL, "built with contraction: %s", ds3_fp_contracted);

    th_section("the hostile environment is hostile");
    hostile(1);
    CHECK(threads_not(1) == 0, "%d threads did not take the hostile environment", threads_not(1));
    volatile float one = 1.0f, tiny = 0x1p-25f, sub = 0x1p-140f, half = 0.5f;
    CHECK(one + tiny > 1.0f, "rounding upward: 1 + 2^-25 rounded to 1");
    if (HOSTILE_CSR) CHECK(sub * half == 0.0f, "FTZ/DAZ: 2^-140 * 0.5 = %a, not flushed", (double)(sub * half));
    /* ds3's own kernels, called outside an entry, feel it */
    enum { N = 100 };
    ds3_real a[N], b[N];
    for (int i = 0; i < N; i++) a[i] = (ds3_real)(0.1 * (i + 1)), b[i] = (ds3_real)(0.3 / (i + 1));
    ds3_real hot = ds3_dot(DS3_KERNELS_REF, a, b, N);
    hostile(0);
    ds3_real cold = ds3_dot(DS3_KERNELS_REF, a, b, N);
    CHECK(memcmp(&hot, &cold, sizeof hot) != 0, "a dot product gave the same bits rounding upward");

    ds3_fpenv e;
    th_section("inside ds3_fpenv_enter every thread runs in the defaults");
    hostile(1);
    CHECK(ds3_fpenv_enter(&e) == DS3_OK, "enter: %s", ds3_last_error());
    CHECK(threads_not(0) == 0, "%d threads not in the IEEE defaults inside an entry", threads_not(0));
    ds3_fpenv inner;  /* nested: the inner leave keeps the defaults */
    CHECK(ds3_fpenv_enter(&inner) == DS3_OK, "nested enter: %s", ds3_last_error());
    ds3_fpenv_leave(&inner);
    CHECK(threads_not(0) == 0, "%d threads left the defaults after a nested leave", threads_not(0));
    ds3_fpenv_leave(&e);
    CHECK(threads_not(1) == 0, "%d threads did not get the caller's environment back", threads_not(1));
    hostile(0);

    th_section("a contracting build is refused");
    ds3_fp_contracted = "src/model/ops.c";
    ds3_status st = ds3_fpenv_enter(&e);
    CHECK(st == DS3_ERR_PLATFORM && strstr(ds3_last_error(), "src/model/ops.c") &&
              strstr(ds3_last_error(), "-ffp-contract=off"),
          "status %s: %s", ds3_status_name(st), ds3_last_error());
    ds3_fp_contracted = NULL;

    static const char *names[] = {"tiny-f32", "tiny-fp8", "tiny-mtp2"};
    static const ds3_kernels ks[] = {DS3_KERNELS_DETERMINISTIC, DS3_KERNELS_REF};
    for (size_t mi = 0; mi < sizeof names / sizeof *names; mi++) {
        ds3_model *m = load(models, names[mi]);
        if (!m) continue;
        const int V = ds3_model_vocab_size(m), mtp = ds3_model_num_mtp(m) > 0;
        const size_t n = (size_t)(mtp ? 14 : 7) * V;
        for (size_t ki = 0; ki < 2; ki++)
            for (int threads = 1; threads <= 2; threads++) {
                th_section("%s, %s kernels, %d thread(s): same bits with FTZ/DAZ and rounding upward",
                           names[mi], ki ? "ref" : "deterministic", threads);
                set_threads(threads);
                ds3_real *want = logits(m, ks[ki], mtp);
                hostile(1);
                ds3_real *got = logits(m, ks[ki], mtp);
                CHECK(threads_not(1) == 0, "the environment was not restored after the calls");
                ds3_sampler *smp = NULL;
                int tok_hot = -1, tok_cold = -2;
                if (got && ds3_sampler_new(0.8f, 0.9f, 7, &smp) == DS3_OK) tok_hot = ds3_sample(smp, got, V);
                ds3_sampler_free(smp);
                hostile(0);
                if (want && ds3_sampler_new(0.8f, 0.9f, 7, &smp) == DS3_OK) tok_cold = ds3_sample(smp, want, V);
                ds3_sampler_free(smp);
                if (want && got) {
                    size_t diff = 0;
                    for (size_t i = 0; i < n; i++) diff += memcmp(&want[i], &got[i], sizeof *got) != 0;
                    CHECK(diff == 0, "%zu of %zu logits differ in the hostile environment", diff, n);
                }
                CHECK(tok_hot == tok_cold, "sampled token %d in the hostile environment, %d without", tok_hot,
                      tok_cold);
                free(want);
                free(got);
            }
        ds3_model_free(m);
    }
    set_threads(2);
    return th_finish();
}

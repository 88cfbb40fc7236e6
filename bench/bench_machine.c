/*
 * bench_machine.c — this machine's own limits, measured in the same run as the
 * model benchmarks (STYLE rule 11), so every ds3 figure can be stated as a
 * fraction of what the hardware could do at best.
 *
 *   read bandwidth   OpenMP threads sum a buffer much larger than the last-level
 *                    cache (1 GiB by default), each thread its own contiguous
 *                    slice: the rate at which decode can stream weights.
 *   sgemm peak       cblas_sgemm GFLOP/s on a square 2048³ product and on the
 *                    shapes ds3 runs (a 512×1024×1024 layer, its 128-row tiles),
 *                    in two ways:
 *                      sgemm_omp       t OpenMP threads, each running its own
 *                                      single-threaded sgemm concurrently — how
 *                                      ds3 runs its tiles;
 *                      sgemm_openblas  one sgemm split by OpenBLAS's own threads.
 *
 * The limits the model benchmarks divide by are written as rows of their own:
 * limit_read_bw (GB/s) and limit_sgemm (GFLOP/s, the best of every shape and
 * both ways) for each thread count measured.
 *
 * usage: bench_machine --csv FILE [--mib N] [--runs R]
 */
#include "bench.h"

#include <stdint.h>

#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef DS3_BLAS
#include <cblas.h>
#endif

static int max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static void set_threads(int t) {
#ifdef _OPENMP
    omp_set_num_threads(t);
#else
    (void)t;
#endif
}

/* ========================================================================== */
/* Read bandwidth                                                              */
/* ========================================================================== */

/* The read loops, sum_words and sum_words_prefetch, and read_bandwidth are
 * bench.h's: bench_ds3 measures the bandwidth around each decode cell too. */

/* ========================================================================== */
/* sgemm peak                                                                  */
/* ========================================================================== */

#ifdef DS3_BLAS
/* One GEMM shape: C[M][N] = A[M][K] · B, with B [K][N] or, as ds3's tiles
 * are (weights stored [out][in]), [N][K] transposed. */
typedef struct {
    const char *name;
    int M, N, K;
    int transb;
} gemm_shape;

static const gemm_shape shapes[] = {
    {"2048x2048x2048", 2048, 2048, 2048, 0},  /* the classic peak */
    {"512x1024x1024-NT", 512, 1024, 1024, 1}, /* one 1024x1024 projection on 512 tokens */
    {"512x128x1024-NT", 512, 128, 1024, 1},   /* ds3's 128-row tile of it */
    {"64x128x1024-NT", 64, 128, 1024, 1},     /* the same tile at prefill 64 */
};
#define N_SHAPES (int)(sizeof shapes / sizeof shapes[0])

/* Matrices for one thread, filled with small values (no denormals, no overflow). */
typedef struct {
    float *a, *b, *c;
} gemm_bufs;

static int gemm_alloc(gemm_bufs *g, const gemm_shape *s) {
    size_t na = (size_t)s->M * s->K, nb = (size_t)s->K * s->N, nc = (size_t)s->M * s->N;
    g->a = malloc(na * sizeof(float));
    g->b = malloc(nb * sizeof(float));
    g->c = malloc(nc * sizeof(float));
    if (!g->a || !g->b || !g->c) return 0;
    for (size_t i = 0; i < na; i++) g->a[i] = (float)((i * 7 % 13) - 6) / 16.0f;
    for (size_t i = 0; i < nb; i++) g->b[i] = (float)((i * 5 % 11) - 5) / 16.0f;
    memset(g->c, 0, nc * sizeof(float));
    return 1;
}

static void gemm_free(gemm_bufs *g) {
    free(g->a);
    free(g->b);
    free(g->c);
}

static void gemm_once(const gemm_bufs *g, const gemm_shape *s) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, s->transb ? CblasTrans : CblasNoTrans, s->M, s->N, s->K, 1.0f,
                g->a, s->K, g->b, s->transb ? s->K : s->N, 0.0f, g->c, s->N);
}

/* OpenBLAS's own thread count: the pthreads build listens to
 * openblas_set_num_threads; the OpenMP build to the OpenMP setting. */
static void blas_threads(int t) {
    openblas_set_num_threads(t);
    set_threads(t);
}

/*
 * GFLOP/s of `threads` concurrent single-threaded sgemms (omp = 1) or of one
 * sgemm threaded by OpenBLAS (omp = 0). Each run repeats the product `reps`
 * times, chosen so a run lasts about 0.1 s; the median of `runs` runs.
 */
static bench_stat gemm_rate(const gemm_shape *s, int threads, int omp, int runs) {
    const double flops = 2.0 * s->M * s->N * s->K;
    gemm_bufs g[64];
    int nb = omp ? threads : 1, ok = 1;
    memset(g, 0, sizeof g);
    for (int i = 0; i < nb; i++) ok &= gemm_alloc(&g[i], s);
    bench_stat st = {0, NAN, NAN, NAN, NAN};
    if (!ok) goto out;

    if (omp) blas_threads(1);
    else blas_threads(threads);
    set_threads(threads);

    /* One call to size the repetitions (and warm up). */
    double t0 = bench_now();
    gemm_once(&g[0], s);
    double one = bench_now() - t0;
    int reps = one > 0 ? (int)(0.1 / one) + 1 : 1;
    if (reps > 1000) reps = 1000;

    double v[64];
    bench_mark m0 = bench_mark_now();
    for (int r = 0; r < runs; r++) {
        t0 = bench_now();
        if (omp) {
#pragma omp parallel num_threads(threads)
            {
#ifdef _OPENMP
                int me = omp_get_thread_num();
#else
                int me = 0;
#endif
                for (int k = 0; k < reps; k++) gemm_once(&g[me], s);
            }
        } else {
            for (int k = 0; k < reps; k++) gemm_once(&g[0], s);
        }
        v[r] = bench_now() - t0;
    }
    st = bench_rate(bench_done(v, runs, m0), (omp ? threads : 1) * reps * flops / 1e9);
out:
    for (int i = 0; i < nb; i++) gemm_free(&g[i]);
    blas_threads(1);
    set_threads(threads);
    return st;
}
#endif /* DS3_BLAS */

/* ========================================================================== */
/* main                                                                        */
/* ========================================================================== */

static void usage(void) {
    fprintf(stderr, "usage: bench_machine --csv FILE [--mib N] [--runs R]\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *csv = NULL;
    long mib = 1024;
    int runs = 5;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--csv") && i + 1 < argc) csv = argv[++i];
        else if (!strcmp(argv[i], "--mib") && i + 1 < argc) mib = atol(argv[++i]);
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc) runs = atoi(argv[++i]);
        else usage();
    }
    if (!csv || mib < 64 || runs < 1 || runs > 64) usage();
    FILE *f = bench_csv_open(csv);
    if (!f) {
        fprintf(stderr, "bench_machine: cannot open %s\n", csv);
        return 1;
    }

    /* Thread counts: 1, 2 and all (deduplicated). */
    const int nmax = max_threads() > 64 ? 64 : max_threads();
    int tlist[3], nt = 0;
    tlist[nt++] = 1;
    if (nmax >= 2) tlist[nt++] = 2;
    if (nmax > 2) tlist[nt++] = nmax;

    /* ---- read bandwidth ------------------------------------------------------ */
    size_t n = (size_t)mib << 17;  /* 64-bit words in mib MiB (a multiple of 8) */
    uint64_t *a = malloc(n * sizeof *a), sink = 0;
    if (!a) {
        fprintf(stderr, "bench_machine: cannot allocate %ld MiB\n", mib);
        return 1;
    }
    /* First touch by all threads with the same static split as the reads. */
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) a[i] = i;
    for (int k = 0; k < nt; k++) {
        set_threads(tlist[k]);
        bench_stat s = read_bandwidth(sum_words, a, n, runs, &sink);
        bench_stat sp = read_bandwidth(sum_words_prefetch, a, n, runs, &sink);
        bench_row(f, "read_bw", "machine", "u64", tlist[k], -1, -1, s, "GB/s", NAN, 1);
        bench_row(f, "read_bw_prefetch", "machine", "u64", tlist[k], -1, -1, sp, "GB/s", NAN, 1);
        bench_row(f, "limit_read_bw", "machine", "u64", tlist[k], -1, -1, bench_one(s.med > sp.med ? s.med : sp.med),
                  "GB/s", NAN, 1);
        fprintf(stderr, "read bandwidth, %d thread(s): %.2f GB/s (min %.2f, max %.2f); with prefetch %.2f GB/s (min "
                "%.2f, max %.2f); %ld MiB; others busy %.2f cores\n",
                tlist[k], s.med, s.min, s.max, sp.med, sp.min, sp.max, mib, (s.busy_other + sp.busy_other) / 2);
    }
    free(a);
    set_threads(nmax);

    /* ---- sgemm peak ------------------------------------------------------------ */
#ifdef DS3_BLAS
    int par = openblas_get_parallel();
    fprintf(stderr, "OpenBLAS: %s; core %s; threading %s\n", openblas_get_config(), openblas_get_corename(),
            par == 0 ? "none (sequential build)" : par == 1 ? "pthreads" : "OpenMP");
    bench_row(f, "openblas_threading", "machine", "-", -1, -1, -1, bench_one(par),
              "0=sequential;1=pthreads;2=openmp", NAN, 1);
    for (int k = 0; k < nt; k++) {
        int t = tlist[k];
        double best = 0;
        for (int i = 0; i < N_SHAPES; i++) {
            bench_stat s = gemm_rate(&shapes[i], t, 1, runs);
            bench_row(f, "sgemm_omp", shapes[i].name, "f32", t, -1, -1, s, "GFLOP/s", NAN, 1);
            fprintf(stderr, "sgemm %-18s %d thread(s), one sgemm each:     %6.1f GFLOP/s (min %.1f, max %.1f; others %.2f)\n",
                    shapes[i].name, t, s.med, s.min, s.max, s.busy_other);
            if (s.med > best) best = s.med;
            if (t == 1) continue;  /* one thread: the two ways are the same call */
            s = gemm_rate(&shapes[i], t, 0, runs);
            bench_row(f, "sgemm_openblas", shapes[i].name, "f32", t, -1, -1, s, "GFLOP/s", NAN, 1);
            fprintf(stderr, "sgemm %-18s %d thread(s), OpenBLAS-threaded: %6.1f GFLOP/s (min %.1f, max %.1f; others %.2f)\n",
                    shapes[i].name, t, s.med, s.min, s.max, s.busy_other);
            if (s.med > best) best = s.med;
        }
        bench_row(f, "limit_sgemm", "machine", "f32", t, -1, -1, bench_one(best), "GFLOP/s", NAN, 1);
    }
#else
    fprintf(stderr, "bench_machine: built without BLAS (BLAS=none): no sgemm peak\n");
#endif
    fclose(f);
    /* The sum must be used, or the reads could be optimised away. */
    return sink == 42 ? 3 : 0;
}

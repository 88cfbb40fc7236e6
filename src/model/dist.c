/*
 * dist.c — expert parallelism across processes (docs/ARCHITECTURE.md §10):
 * the MPI job, the partition of the routed experts, the one exchange.
 *
 * DeepSeek serves V3 with its routed experts spread over devices ("expert
 * parallelism", technical report §3.4); ds3 does the same across MPI
 * processes. Every process holds and runs everything else (embedding,
 * attention, dense layers, router, shared experts, head), so every process
 * routes every token identically; process r holds the routed experts
 * [lo_r, hi_r) of every MoE layer (MTP's included) and runs them on the
 * (token, k) rows that chose them. ds3_moe groups those rows by expert, so
 * rank r's rows are one contiguous block of the [T·K][D] output; one
 * MPI_Allgatherv of those blocks gives every process every row, and the
 * combine then runs in k order exactly as in one process.
 *
 * Why the bits cannot depend on the number of processes: each row is one
 * expert on one token, computed by the same code on the same input wherever it
 * runs (an element's bits depend only on its own row: docs/MODEL.md, kernels),
 * and the gather copies rows, it adds nothing. An MPI_Allreduce would sum the
 * partial outputs in an order the library chooses; there is none here.
 *
 * Without MPI (the default build, -DDS3_MPI absent) every function below is
 * the single process's: rank 0 of 1, all experts, nothing to exchange.
 */
#include "model/model.h"

#include <stdlib.h>
#include <string.h>

/* Routed experts [lo, hi) of rank r of n: contiguous, sizes differing by at
 * most one. When n divides n_group (and n_group divides E) each range is a
 * whole number of groups, as DeepSeek places them (one group per node). */
void ds3_dist_range(int E, int r, int n, int *lo, int *hi) {
    *lo = (int)((long long)E * r / n);
    *hi = (int)((long long)E * (r + 1) / n);
}

#ifdef DS3_MPI
#include <mpi.h>

static int g_rank = 0, g_size = 1;
static bool g_started;          /* ds3_dist_init ran MPI_Init_thread */
static bool g_joined;           /* this process is in an MPI job ds3 uses */
static int *g_counts, *g_displs;  /* [size] the gather's rows per rank and first rows */
static MPI_Datatype g_row = MPI_DATATYPE_NULL;  /* D contiguous ds3_real */
static int g_row_d = 0;

#define DS3_MPI_REAL (sizeof(ds3_real) == 8 ? MPI_DOUBLE : MPI_FLOAT)

ds3_status ds3_dist_init(void) {
    if (g_joined) return DS3_OK;
    int inited = 0, provided = 0;
    MPI_Initialized(&inited);
    if (!inited) {
        /* Only the main thread calls MPI (OpenMP regions never do). */
        if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
            return ds3_fail(DS3_ERR_IO, "MPI_Init_thread failed");
        g_started = true;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    g_counts = malloc((size_t)g_size * sizeof(int));
    g_displs = malloc((size_t)g_size * sizeof(int));
    if (!g_counts || !g_displs) {
        free(g_counts);
        free(g_displs);
        g_counts = g_displs = NULL;
        g_rank = 0;
        g_size = 1;
        return ds3_fail(DS3_ERR_NOMEM, "ds3_dist_init: out of memory");
    }
    g_joined = true;
    return DS3_OK;
}

int ds3_dist_rank(void) { return g_rank; }
int ds3_dist_size(void) { return g_size; }

ds3_status ds3_dist_bcast(void *buf, size_t n) {
    if (g_size <= 1) return DS3_OK;
    /* In pieces of at most 1 GiB: MPI counts are int. */
    for (size_t at = 0; at < n;) {
        size_t k = n - at < ((size_t)1 << 30) ? n - at : ((size_t)1 << 30);
        if (MPI_Bcast((char *)buf + at, (int)k, MPI_BYTE, 0, MPI_COMM_WORLD) != MPI_SUCCESS)
            return ds3_fail(DS3_ERR_IO, "MPI_Bcast failed");
        at += k;
    }
    return DS3_OK;
}

void ds3_dist_abort(int status) {
    if (g_size > 1) {
        fflush(stdout);
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, status);
    }
    exit(status);
}

void ds3_dist_finalize(void) {
    if (!g_joined) return;
    g_joined = false;
    if (g_row != MPI_DATATYPE_NULL) MPI_Type_free(&g_row);
    free(g_counts);
    free(g_displs);
    g_counts = g_displs = NULL;
    int fin = 0;
    MPI_Finalized(&fin);
    if (g_started && !fin) MPI_Finalize();
    g_rank = 0;
    g_size = 1;
}

/*
 * The exchange. rows [T·K][D] holds the (token, k) rows grouped by expert,
 * expert e's at off[e]..off[e+1]; this rank has filled its experts' rows. Rank
 * r's block is rows off[lo_r]..off[hi_r]: contiguous, because the ranges are
 * and the rows are grouped in expert order. Each block is copied into place on
 * every process (MPI_IN_PLACE: this rank's own block stays where it is).
 */
void ds3_dist_gather_rows(ds3_real *rows, const int32_t *off, int E, int D, int n) {
    if (n <= 1) return;
    DS3_ASSERT(n == g_size);
    if (g_row_d != D) {
        if (g_row != MPI_DATATYPE_NULL) MPI_Type_free(&g_row);
        MPI_Type_contiguous(D, DS3_MPI_REAL, &g_row);
        MPI_Type_commit(&g_row);
        g_row_d = D;
    }
    for (int r = 0; r < g_size; r++) {
        int lo, hi;
        ds3_dist_range(E, r, g_size, &lo, &hi);
        g_displs[r] = off[lo];
        g_counts[r] = off[hi] - off[lo];
    }
    MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, rows, g_counts, g_displs, g_row, MPI_COMM_WORLD);
}

#else /* one process */

ds3_status ds3_dist_init(void) { return DS3_OK; }
int ds3_dist_rank(void) { return 0; }
int ds3_dist_size(void) { return 1; }
ds3_status ds3_dist_bcast(void *buf, size_t n) {
    (void)buf;
    (void)n;
    return DS3_OK;
}
void ds3_dist_abort(int status) { exit(status); }
void ds3_dist_finalize(void) {}
void ds3_dist_gather_rows(ds3_real *rows, const int32_t *off, int E, int D, int n) {
    (void)n;
    (void)rows;
    (void)off;
    (void)E;
    (void)D;
}

#endif

int ds3_model_experts(const ds3_model *m, int *lo, int *hi) {
    int l, h;
    ds3_dist_range(m->cfg.n_routed_experts, m->ep_rank, m->ep_size, &l, &h);
    if (lo) *lo = l;
    if (hi) *hi = h;
    return h - l;
}

/*
 * bench.h — what the benchmark programs share: a clock, the median of runs,
 * and the results CSV with its fixed columns.
 *
 * Every figure is one CSV row (STYLE rule 11):
 *
 *   metric,model,dtype,threads,tokens,context,runs,value,min,max,unit,machine_limit,fraction_of_limit,busy_other
 *
 *   value          the median of `runs` timed runs (after a warm-up); min and
 *                  max show the spread, which on a shared machine is the noise
 *   machine_limit  what this machine could do at best, in the row's own unit,
 *                  from limits measured in the same run (bench_machine): read
 *                  bandwidth for weight-streaming work, sgemm peak for GEMMs
 *   fraction_of_limit  how close the row comes to that limit: value/limit for
 *                  rates (tok/s, GB/s), limit/value for times (ms), so 1.0 is
 *                  always "at the limit" and higher is better; for peak RSS it is
 *                  value/limit against the memory cap (≤ 1 is within it)
 *   busy_other     how many cores' worth of CPU other processes (and the
 *                  hypervisor, as steal time) used while the row's runs were
 *                  timed: /proc/stat's busy time minus this process's own CPU
 *                  time, over the wall time. ~0 on a quiet machine; a row with
 *                  busy_other near 1 on 2 cores was measured on half a machine
 *
 * Empty fields mean "does not apply". docs/BENCHMARKS.md lists every metric.
 */
#ifndef DS3_BENCH_H
#define DS3_BENCH_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define BENCH_CSV_HEADER \
    "metric,model,dtype,threads,tokens,context,runs,value,min,max,unit,machine_limit,fraction_of_limit,busy_other"

static inline double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int bench_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* ---- contention: CPU the rest of the machine used meanwhile ------------------ */

typedef struct {
    double wall;   /* bench_now() */
    double busy;   /* seconds of busy CPU on the whole machine (all cores), NaN if unknown */
    double self;   /* this process's user + system CPU seconds, all threads */
} bench_mark;

static inline bench_mark bench_mark_now(void) {
    bench_mark m = {bench_now(), NAN, 0};
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        m.self = (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_sec +
                 1e-6 * (double)ru.ru_stime.tv_usec;
    FILE *f = fopen("/proc/stat", "r");
    if (f) {
        /* cpu  user nice system idle iowait irq softirq steal ... (USER_HZ ticks) */
        unsigned long long v[8] = {0};
        if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                   &v[6], &v[7]) == 8) {
            long hz = sysconf(_SC_CLK_TCK);
            m.busy = (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)(hz > 0 ? hz : 100);
        }
        fclose(f);
    }
    return m;
}

/* Cores' worth of CPU used by everything but this process between a and b. */
static inline double bench_busy_other(bench_mark a, bench_mark b) {
    double dt = b.wall - a.wall;
    if (isnan(a.busy) || isnan(b.busy) || dt <= 0) return NAN;
    double o = ((b.busy - a.busy) - (b.self - a.self)) / dt;
    return o < 0 ? 0 : o;  /* tick granularity can make a quiet machine read slightly negative */
}

/* Summary of n timed runs: median, min, max (v is sorted in place), and the
 * contention while they ran (NaN: not measured). */
typedef struct {
    int runs;
    double med, min, max;
    double busy_other;
} bench_stat;

static inline bench_stat bench_summarise(double *v, int n) {
    bench_stat s = {n, NAN, NAN, NAN, NAN};
    if (n <= 0) return s;
    qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
    s.med = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
    s.min = v[0];
    s.max = v[n - 1];
    return s;
}

/* The stat of n runs timed since `start`, with the contention meanwhile. */
static inline bench_stat bench_done(double *v, int n, bench_mark start) {
    bench_stat s = bench_summarise(v, n);
    s.busy_other = bench_busy_other(start, bench_mark_now());
    return s;
}

/* A stat of times turned into a stat of rates work/time (min and max swap). */
static inline bench_stat bench_rate(bench_stat t, double work) {
    bench_stat r = {t.runs, work / t.med, work / t.max, work / t.min, t.busy_other};
    return r;
}

/* A stat scaled by a constant factor (> 0). */
static inline bench_stat bench_scale(bench_stat t, double k) {
    bench_stat r = {t.runs, t.med * k, t.min * k, t.max * k, t.busy_other};
    return r;
}

/* Open the CSV for appending; writes the header if the file is new or empty. */
static inline FILE *bench_csv_open(const char *path) {
    FILE *f = fopen(path, "a+");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    if (ftell(f) == 0) fprintf(f, "%s\n", BENCH_CSV_HEADER);
    return f;
}

static inline void bench_field(FILE *f, double v) {
    if (isnan(v)) fprintf(f, ",");
    else fprintf(f, ",%.6g", v);
}

static inline void bench_int_field(FILE *f, int v) {
    if (v < 0) fprintf(f, ",");
    else fprintf(f, ",%d", v);
}

/*
 * One row. Negative threads/tokens/context and NaN numbers are written as
 * empty fields. `higher_is_better` says how the fraction is formed (rates:
 * value/limit; times: limit/value); pass -1 for "value/limit, lower is
 * better" (memory).
 */
static inline void bench_row(FILE *f, const char *metric, const char *model, const char *dtype,
                             int threads, int tokens, int context, bench_stat s, const char *unit,
                             double limit, int higher_is_better) {
    fprintf(f, "%s,%s,%s", metric, model, dtype);
    bench_int_field(f, threads);
    bench_int_field(f, tokens);
    bench_int_field(f, context);
    bench_int_field(f, s.runs);
    bench_field(f, s.med);
    bench_field(f, s.min);
    bench_field(f, s.max);
    fprintf(f, ",%s", unit);
    double frac = NAN;
    if (!isnan(limit) && limit > 0 && !isnan(s.med) && s.med > 0)
        frac = higher_is_better > 0 ? s.med / limit : higher_is_better == 0 ? limit / s.med : s.med / limit;
    bench_field(f, limit);
    bench_field(f, frac);
    if (isnan(s.busy_other)) fprintf(f, ",");
    else fprintf(f, ",%.2f", s.busy_other);
    fprintf(f, "\n");
    fflush(f);
}

/* A single value (a count, a derived figure): runs = 1, min = max = value. */
static inline bench_stat bench_one(double v) {
    bench_stat s = {1, v, v, v, NAN};
    return s;
}

/*
 * Look up a machine limit written earlier into the same CSV: the value of the
 * last row with this metric and thread count. NaN if there is none (e.g. a
 * BLAS=none build has no sgemm peak).
 */
static inline double bench_csv_lookup(const char *path, const char *metric, int threads) {
    FILE *f = fopen(path, "r");
    if (!f) return NAN;
    char line[1024];
    double found = NAN;
    size_t ml = strlen(metric);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, metric, ml) != 0 || line[ml] != ',') continue;
        /* fields: metric,model,dtype,threads,tokens,context,runs,value,... */
        char *p = line;
        const char *field[14];
        int nf = 0;
        while (nf < 14) {
            field[nf++] = p;
            char *c = strchr(p, ',');
            if (!c) break;
            *c = '\0';
            p = c + 1;
        }
        if (nf < 8 || atoi(field[3]) != threads || field[7][0] == '\0') continue;
        found = atof(field[7]);
    }
    fclose(f);
    return found;
}

/* ========================================================================== */
/* Read bandwidth (bench_machine's limit; bench_ds3 around each decode cell)   */
/* ========================================================================== */

/*
 * Sum n 64-bit words (n a multiple of 4) with the current thread count, each
 * thread over its own contiguous slice (the static schedule). Four independent
 * sums keep two loads in flight per cycle even without vectorisation: 16 B per
 * cycle per core, well above what memory delivers, so the loop measures memory.
 */
static inline uint64_t sum_words(const uint64_t *a, size_t n) {
    uint64_t s = 0;
#pragma omp parallel for schedule(static) reduction(+ : s)
    for (size_t i = 0; i < n; i += 4) s += (a[i] + a[i + 1]) ^ (a[i + 2] + a[i + 3]);
    return s;
}

/*
 * The same sum, asking for each cache line 4 KiB ahead (__builtin_prefetch: a
 * hint). On some machines (the 2-vCPU EPYC VM of docs/BENCHMARKS.md) the
 * hardware prefetchers alone keep fewer reads in flight than memory can serve,
 * and ds3's decode loop, which prefetches, read faster than the plain sum: a
 * "limit" below what a kernel reaches is no limit, so the larger of the two is.
 */
static inline uint64_t sum_words_prefetch(const uint64_t *a, size_t n) {
    uint64_t s = 0;
#pragma omp parallel for schedule(static) reduction(+ : s)
    for (size_t i = 0; i < n; i += 8) {
#if defined(__GNUC__) || defined(__clang__)
        if (i + 512 < n) __builtin_prefetch(a + i + 512);
#endif
        s += (a[i] + a[i + 1]) ^ (a[i + 2] + a[i + 3]);
        s += (a[i + 4] + a[i + 5]) ^ (a[i + 6] + a[i + 7]);
    }
    return s;
}

/* GB/s (1e9 bytes) of `runs` reads of the buffer by `sum`, after one warm-up read. */
static inline bench_stat read_bandwidth(uint64_t (*sum)(const uint64_t *, size_t), const uint64_t *a, size_t n, int runs,
                                 uint64_t *sink) {
    double v[64];
    *sink += sum(a, n);  /* warm-up: TLB, thread team */
    bench_mark m0 = bench_mark_now();
    for (int r = 0; r < runs; r++) {
        double t0 = bench_now();
        *sink += sum(a, n);
        v[r] = bench_now() - t0;
    }
    return bench_rate(bench_done(v, runs, m0), (double)n * sizeof *a / 1e9);
}

/* The read bandwidth now at the current thread count, GB/s: the larger of the
 * plain and the prefetching sum's medians over `runs` reads of a[n], as
 * bench_machine's limit_read_bw. */
static inline double bench_read_bw_now(const uint64_t *a, size_t n, int runs, uint64_t *sink) {
    bench_stat s = read_bandwidth(sum_words, a, n, runs, sink), sp = read_bandwidth(sum_words_prefetch, a, n, runs, sink);
    return s.med > sp.med ? s.med : sp.med;
}

#endif /* DS3_BENCH_H */

/*
 * bench_index.c — the cost of a large model.safetensors.index.json: loading an
 * index of N entries over F shard files (one thread).
 *
 *   bench_index [--csv FILE] [--files F] [--entries N] [--runs R] [--dir DIR] [--keep]
 *
 * Writes DIR (default: a fresh directory under $TMPDIR or /tmp): F shards
 * "s00001"... holding N/F tensors each (F32 [1], named "tI"), the index
 * mapping every tensor to its shard, and a config.json (the built-in tiny).
 * Names are short so that 1.8 M entries stay under the loader's 64 MB limit
 * on an index (38 MB). Then times ds3_model_load(DIR) R times
 * (after one warm-up) in this process's CPU time: parsing the index, opening
 * and validating every shard, hashing every tensor name, up to the first
 * tensor the config needs, which these shards do not hold (the load then
 * fails, as expected: what is measured is everything an index of this size
 * costs before the weights are bound).
 *
 * Row (bench/bench.h columns; docs/BENCHMARKS.md): index_load (ms-cpu),
 * tokens = entries, context = files. The default size (180,000 entries over
 * 6,000 files) runs in seconds; issue 20's case is --files 60000 --entries
 * 1800000 (needs vm.max_map_count above 60,000: each shard is mapped).
 * A loader that scanned the open files per entry took 1,247 s there.
 */
#include "ds3.h"
#include "bench.h"
#include "model/model.h"   /* ds3_builtin_config_json */

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "bench_index: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* A growing string. */
typedef struct {
    char *s;
    size_t n, cap;
} buf;

static void putf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(buf *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->s ? b->s + b->n : NULL, b->s ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) die("vsnprintf");
        if (b->s && b->n + (size_t)k < b->cap) {
            b->n += (size_t)k;
            return;
        }
        b->cap = b->cap ? 2 * b->cap + (size_t)k : 4096 + (size_t)k;
        b->s = realloc(b->s, b->cap);
        if (!b->s) die("realloc");
    }
}

static void write_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0) die(path);
}

/* Shard s of F holds tensors [first, end). */
static void write_shard(const char *dir, int s, long first, long end) {
    buf h = {0};
    putf(&h, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (long i = first; i < end; i++)
        putf(&h, ",\"t%ld\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[%ld,%ld]}", i,
             4 * (i - first), 4 * (i - first + 1));
    putf(&h, "}");
    while (h.n % 8) putf(&h, " ");   /* data 8-byte aligned, as writers do */
    size_t data = (size_t)(end - first) * 4;
    size_t total = 8 + h.n + data;
    unsigned char *f = calloc(total, 1);
    if (!f) die("calloc");
    uint64_t hl = h.n;
    for (int k = 0; k < 8; k++) f[k] = (unsigned char)(hl >> (8 * k));
    memcpy(f + 8, h.s, h.n);
    char path[4200];
    snprintf(path, sizeof path, "%.4096s/s%05d", dir, s + 1);
    write_file(path, f, total);
    free(f);
    free(h.s);
}

int main(int argc, char **argv) {
    const char *csv = NULL, *dir_arg = NULL;
    long F = 6000, N = 180000;
    int runs = 3;
    bool keep = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--csv") && i + 1 < argc) csv = argv[++i];
        else if (!strcmp(argv[i], "--files") && i + 1 < argc) F = atol(argv[++i]);
        else if (!strcmp(argv[i], "--entries") && i + 1 < argc) N = atol(argv[++i]);
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc) runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc) dir_arg = argv[++i];
        else if (!strcmp(argv[i], "--keep")) keep = true;
        else {
            fprintf(stderr, "usage: bench_index [--csv FILE] [--files F] [--entries N] [--runs R] [--dir DIR] [--keep]\n");
            return 2;
        }
    }
    if (F < 1 || F > 99999 || N < F || runs < 1) {
        fprintf(stderr, "bench_index: need 1 <= files <= 99999, entries >= files, runs >= 1\n");
        return 2;
    }
    char dir[4096];
    if (dir_arg) {
        snprintf(dir, sizeof dir, "%s", dir_arg);
        if (mkdir(dir, 0755) != 0 && errno != EEXIST) die(dir);
    } else {
        const char *t = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/ds3-bench-index-XXXXXX", t && *t ? t : "/tmp");
        if (!mkdtemp(dir)) die("mkdtemp");
    }

    /* The files: shards, index, config. */
    double t0 = bench_now();
    buf ix = {0};
    putf(&ix, "{\n  \"metadata\": {\"total_size\": %ld},\n  \"weight_map\": {", 4 * N);
    long per = N / F, rest = N % F, next = 0;
    for (int s = 0; s < F; s++) {
        long end = next + per + (s < rest);
        write_shard(dir, s, next, end);
        for (long i = next; i < end; i++)
            putf(&ix, "%s\n\"t%ld\":\"s%05d\"", i ? "," : "", i, s + 1);
        next = end;
    }
    putf(&ix, "\n  }\n}\n");
    char path[4200];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    write_file(path, ix.s, ix.n);
    free(ix.s);
    const char *cfg = ds3_builtin_config_json("tiny");
    snprintf(path, sizeof path, "%s/config.json", dir);
    write_file(path, cfg, strlen(cfg));
    fprintf(stderr, "bench_index: %ld entries over %ld files in %s (written in %.1f s)\n", N, F, dir,
            bench_now() - t0);

    /* The loads: CPU time of this process (user + system), so a shared
     * machine's load does not count. */
    double *ms = malloc((size_t)runs * sizeof *ms);
    if (!ms) die("malloc");
    char err[512] = "";
    bench_mark start = bench_mark_now();
    for (int r = -1; r < runs; r++) {
        double c0 = cpu_s();
        ds3_model *m = NULL;
        ds3_status st = ds3_model_load(dir, &m);
        double c1 = cpu_s();
        if (st == DS3_OK) snprintf(err, sizeof err, "loaded");
        else snprintf(err, sizeof err, "%s", ds3_last_error());
        ds3_model_free(m);
        if (r >= 0) ms[r] = 1e3 * (c1 - c0);
        fprintf(stderr, "bench_index: %s load: %.1f ms CPU\n", r < 0 ? "warm-up" : "timed", 1e3 * (c1 - c0));
    }
    /* the expected end: the shards hold no weight of the config */
    fprintf(stderr, "bench_index: the load ended with: %.200s\n", err);
    bench_stat sst = bench_done(ms, runs, start);
    fprintf(stderr, "bench_index: index_load %.1f ms CPU (median of %d; %.1f..%.1f)\n", sst.med, runs, sst.min,
            sst.max);
    if (csv) {
        FILE *f = bench_csv_open(csv);
        if (!f) die(csv);
        bench_row(f, "index_load", "synthetic-index", "f32", 1, (int)N, (int)F, sst, "ms-cpu", NAN, 0);
        fclose(f);
    }
    free(ms);
    if (!keep) {
        for (int s = 0; s < F; s++) {
            snprintf(path, sizeof path, "%s/s%05d", dir, s + 1);
            unlink(path);
        }
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
        unlink(path);
        snprintf(path, sizeof path, "%s/config.json", dir);
        unlink(path);
        rmdir(dir);
    }
    return 0;
}

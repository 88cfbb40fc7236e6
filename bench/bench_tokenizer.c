/*
 * bench_tokenizer.c — encode and decode speed of ds3's tokenizer (one thread).
 *
 *   bench_tokenizer [--csv FILE] [--tokenizer DIR] [--runs R] [--cpu] [--text FILE]...
 *
 * Texts (each encoded in one call, as a program encodes a document):
 *   docs-src   README.md and the .md files of docs/, the .c and .h files of src/,
 *              joined:
 *              English prose and C code
 *   corpus     every case of ref_data/tokenizer/deepseek-v3.json joined with
 *              newlines: many scripts, emoji, numbers, special tokens, random
 *              code points and invalid UTF-8 (the golden corpus)
 *   corpus-x16 the corpus 16 times over: a few MB in one call
 *   --text F   any file, as it is
 * Rows (bench/bench.h columns; docs/BENCHMARKS.md): tok_load (ms),
 * tok_encode (MB/s of input text; tokens = ids produced), tok_decode (MB/s of
 * output text). The median of --runs runs (default 5) after one warm-up.
 * A summary goes to stderr. --cpu times with this process's CPU time
 * instead of the wall clock: on a machine shared with busy jobs it shows the
 * work done, not the share of a core we got (the CSV says which: unit
 * "MB/s-cpu").
 */
#include "ds3.h"
#include "bench.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdbool.h>

typedef struct {
    char *s;
    size_t n, cap;
} buf;

static void put(buf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        while (b->n + n + 1 > b->cap) b->cap = b->cap ? 2 * b->cap : 1 << 20;
        b->s = realloc(b->s, b->cap);
        if (!b->s) {
            fprintf(stderr, "bench_tokenizer: out of memory\n");
            exit(1);
        }
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = '\0';
}

static bool read_into(buf *b, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    char chunk[65536];
    size_t r;
    while ((r = fread(chunk, 1, sizeof chunk, f)) > 0) put(b, chunk, r);
    fclose(f);
    return true;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Every file of dir ending in suffix, in name order. */
static void read_dir(buf *b, const char *dir, const char *suffix) {
    DIR *d = opendir(dir);
    if (!d) return;
    char *names[1024];
    int n = 0;
    struct dirent *e;
    size_t sl = strlen(suffix);
    while ((e = readdir(d)) && n < 1024) {
        size_t l = strlen(e->d_name);
        if (l > sl && strcmp(e->d_name + l - sl, suffix) == 0) names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    for (int i = 0; i < n; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        read_into(b, path);
        free(names[i]);
    }
}

static int hexval(char c) { return c <= '9' ? c - '0' : c - 'a' + 10; }

static bool read_corpus(buf *b, const char *path) {
    buf j = {0};
    if (!read_into(&j, path)) return false;
    cJSON *root = cJSON_ParseWithLength(j.s, j.n);
    free(j.s);
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(root, "cases")) {
        const char *h = cJSON_GetStringValue(cJSON_GetObjectItem(c, "text"));
        for (size_t i = 0; h && h[i] && h[i + 1]; i += 2) {
            char ch = (char)(hexval(h[i]) * 16 + hexval(h[i + 1]));
            put(b, &ch, 1);
        }
        put(b, "\n", 1);
    }
    cJSON_Delete(root);
    return b->n > 0;
}

static FILE *csv;
static int runs = 5;
static bool cpu_time;

static double clock_s(void) {
    if (!cpu_time) return bench_now();
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void bench_text(const ds3_tokenizer *t, const char *name, const char *text, size_t n) {
    double v[64];
    int32_t *ids = NULL;
    size_t n_ids = 0;
    /* warm-up, and the ids for decoding */
    if (ds3_tokenizer_encode(t, text, n, 0, &ids, &n_ids) != DS3_OK) {
        fprintf(stderr, "bench_tokenizer: %s: %s\n", name, ds3_last_error());
        exit(1);
    }
    bench_mark m0 = bench_mark_now();
    for (int r = 0; r < runs; r++) {
        int32_t *x = NULL;
        size_t nx = 0;
        double t0 = clock_s();
        ds3_tokenizer_encode(t, text, n, 0, &x, &nx);
        v[r] = clock_s() - t0;
        free(x);
    }
    bench_stat enc = bench_rate(bench_done(v, runs, m0), (double)n / 1e6);

    m0 = bench_mark_now();
    size_t out_n = 0;
    for (int r = 0; r < runs; r++) {
        char *s = NULL;
        double t0 = clock_s();
        ds3_tokenizer_decode(t, ids, n_ids, &s, &out_n);
        v[r] = clock_s() - t0;
        free(s);
    }
    bench_stat dec = bench_rate(bench_done(v, runs, m0), (double)out_n / 1e6);
    if (csv) {
        bench_row(csv, "tok_encode", name, "", 1, (int)n_ids, -1, enc, cpu_time ? "MB/s-cpu" : "MB/s", NAN, 1);
        bench_row(csv, "tok_decode", name, "", 1, (int)n_ids, -1, dec, cpu_time ? "MB/s-cpu" : "MB/s", NAN, 1);
    }
    fprintf(stderr, "%-12s %9zu bytes %8zu ids (%.2f bytes/id)  encode %7.2f MB/s (%.2f..%.2f)  %8.0f ids/s  "
            "decode %7.1f MB/s\n", name, n, n_ids, n_ids ? (double)n / (double)n_ids : 0.0, enc.med, enc.min, enc.max,
            enc.med * 1e6 / ((double)n / (double)(n_ids ? n_ids : 1)), dec.med);
    free(ids);
}

int main(int argc, char **argv) {
    const char *csv_path = NULL, *dir = "data/tokenizers/deepseek-v3";
    const char *texts[16];
    int n_texts = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--csv") && i + 1 < argc) csv_path = argv[++i];
        else if (!strcmp(argv[i], "--tokenizer") && i + 1 < argc) dir = argv[++i];
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc) runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--cpu")) cpu_time = true;
        else if (!strcmp(argv[i], "--text") && i + 1 < argc && n_texts < 16) texts[n_texts++] = argv[++i];
        else {
            fprintf(stderr, "usage: bench_tokenizer [--csv FILE] [--tokenizer DIR] [--runs R] [--cpu] [--text FILE]...\n");
            return 2;
        }
    }
    if (runs < 1 || runs > 64) runs = 5;
    if (csv_path && !(csv = bench_csv_open(csv_path))) {
        fprintf(stderr, "bench_tokenizer: cannot open %s\n", csv_path);
        return 1;
    }

    double v[64];
    ds3_tokenizer *t = NULL;
    bench_mark m0 = bench_mark_now();
    for (int r = 0; r < runs; r++) {
        ds3_tokenizer_free(t);
        t = NULL;
        double t0 = clock_s();
        if (ds3_tokenizer_load(dir, &t) != DS3_OK) {
            fprintf(stderr, "bench_tokenizer: %s\n", ds3_last_error());
            return 1;
        }
        v[r] = (clock_s() - t0) * 1e3;
    }
    bench_stat load = bench_done(v, runs, m0);
    if (csv) bench_row(csv, "tok_load", "deepseek-v3", "", 1, -1, -1, load, cpu_time ? "ms-cpu" : "ms", NAN, 0);
    fprintf(stderr, "load %s: %.0f ms (%.0f..%.0f)\n", dir, load.med, load.min, load.max);

    if (n_texts) {
        for (int i = 0; i < n_texts; i++) {
            buf b = {0};
            if (!read_into(&b, texts[i])) {
                fprintf(stderr, "bench_tokenizer: cannot read %s\n", texts[i]);
                return 1;
            }
            const char *slash = strrchr(texts[i], '/');
            bench_text(t, slash ? slash + 1 : texts[i], b.s ? b.s : "", b.n);
            free(b.s);
        }
    } else {
        buf b = {0};
        read_into(&b, "README.md");
        read_dir(&b, "docs", ".md");
        read_dir(&b, "src", ".c");
        read_dir(&b, "src", ".h");
        if (b.n) bench_text(t, "docs-src", b.s, b.n);
        free(b.s);
        buf c = {0};
        if (read_corpus(&c, "ref_data/tokenizer/deepseek-v3.json")) {
            bench_text(t, "corpus", c.s, c.n);
            buf x = {0};
            for (int k = 0; k < 16; k++) put(&x, c.s, c.n);
            bench_text(t, "corpus-x16", x.s, x.n);
            free(x.s);
        }
        free(c.s);
    }
    ds3_tokenizer_free(t);
    if (csv) fclose(csv);
    return 0;
}

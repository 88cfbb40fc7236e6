/*
 * test_cli.c — the ds3 command-line tool as a user meets it: exit statuses
 * (0 ok, 1 runtime error, 2 usage error), "ds3: " error messages that name
 * the problem, strict parsing of --tokens and numeric options, help and
 * version, `info`, and — when the synthetic model $DS3_MODELS/tiny-f32
 * exists — `run` output, `dump` files (read back with the safetensors reader)
 * and failures that must leave no file behind.
 *
 * The binary is $DS3_CLI (tests/run.sh sets it to the build's own ds3); it is
 * run with fork/exec, stdout and stderr captured in temporary files
 * (tests/cli_run.h).
 */
#ifndef _XOPEN_SOURCE
#define _XOPEN_SOURCE 700   /* realpath */
#endif
#include "generate/generate.h"
#include "harness.h"
#include "cli_run.h"

#include <stdbool.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

/* A usage error: exit 2 and a "ds3: " message containing `want`. */
static void expect_usage(const char *want, result r, const char *what) {
    CHECK(r.rc == 2, "%s: exit %d, want 2 (stderr: %s)", what, r.rc, r.err);
    CHECK(strncmp(r.err, "ds3: ", 5) == 0 || has(r.err, "\nds3: "), "%s: no 'ds3: ' message: %s", what, r.err);
    CHECK(has(r.err, want), "%s: stderr lacks \"%s\": %s", what, want, r.err);
    CHECK(r.out[0] == '\0', "%s: printed to stdout: %s", what, r.out);
    done(&r);
}

/* The last non-empty line of s (static buffer). */
static const char *last_line(const char *s) {
    static char line[4096];
    const char *end = s + strlen(s);
    while (end > s && end[-1] == '\n') end--;
    const char *start = end;
    while (start > s && start[-1] != '\n') start--;
    size_t n = (size_t)(end - start) < sizeof line - 1 ? (size_t)(end - start) : sizeof line - 1;
    memcpy(line, start, n);
    line[n] = '\0';
    return line;
}

/* "12,0,7": how many ids, or -1 if the line is not that shape. */
static int count_ids(const char *line) {
    int n = 0;
    const char *p = line;
    if (!*p) return 0;
    for (;;) {
        if (*p < '0' || *p > '9') return -1;
        while (*p >= '0' && *p <= '9') p++;
        n++;
        if (*p == '\0') return n;
        if (*p++ != ',') return -1;
    }
}

/* ========================================================================== */

static void test_usage(void) {
    th_section("usage errors, help, version");
    result r = run_in(NULL, 0, (const char *const[]){NULL});
    CHECK(r.rc == 2, "no arguments: exit %d, want 2", r.rc);
    CHECK(has(r.err, "ds3: missing command"), "no arguments: %s", r.err);
    done(&r);

    expect_usage("unknown command 'frobnicate'", RUN("frobnicate"), "unknown command");
    expect_usage("unknown command '--frob'", RUN("--frob"), "unknown top-level option");

    const char *helps[][2] = {{"--help", NULL}, {"-h", NULL},       {"help", NULL},   {"help", "run"},
                              {"run", "--help"}, {"dump", "--help"}, {"info", "-h"}, {"mkmodel", "--help"}};
    for (size_t i = 0; i < sizeof helps / sizeof helps[0]; i++) {
        r = helps[i][1] ? RUN(helps[i][0], helps[i][1]) : RUN(helps[i][0]);
        CHECK(r.rc == 0 && has(r.out, "usage: ds3"), "'%s %s': exit %d, stdout %s", helps[i][0],
              helps[i][1] ? helps[i][1] : "", r.rc, r.out);
        done(&r);
    }
    r = RUN("help", "run");
    CHECK(has(r.out, "--tokens") && has(r.out, "--top-p"), "run help lacks its options: %s", r.out);
    done(&r);
    expect_usage("unknown command 'nosuch'", RUN("help", "nosuch"), "help nosuch");
    /* --help wins even after other options */
    r = RUN("run", "-m", "x", "--help");
    CHECK(r.rc == 0, "run -m x --help: exit %d", r.rc);
    done(&r);

    /* --version: the version and commit on the first line, then what the build uses */
    r = RUN("--version");
    const char *prec = sizeof(ds3_real) == 8 ? "f64 build)" : "f32 build)";
    CHECK(r.rc == 0 && strncmp(r.out, "ds3 0.1.0 (commit ", 18) == 0 && has(r.out, prec), "--version: exit %d, '%s'",
          r.rc, r.out);
    CHECK(has(r.out, "\nBLAS: ") && has(r.out, "\nOpenMP: ") && has(r.out, "\nSIMD: lane kernel ") &&
              has(r.out, sizeof(ds3_real) == 8 ? "precision: f64" : "precision: f32"),
          "--version lacks BLAS, OpenMP, SIMD or precision: %s", r.out);
    done(&r);
}

static void test_tokens_syntax(void) {
    th_section("--tokens and numeric options, checked before loading");
    /* The model directory does not exist: syntax errors must be found first (exit 2). */
    const char *nom = "/nonexistent/model";
    expect_usage("empty entry at index 1", RUN("run", "-m", nom, "--tokens", "1,,2"), "1,,2");
    expect_usage("empty entry at index 2", RUN("run", "-m", nom, "--tokens", "1,2,"), "1,2,");
    expect_usage("empty entry at index 0", RUN("run", "-m", nom, "--tokens", ",1"), ",1");
    expect_usage("empty", RUN("run", "-m", nom, "--tokens", ""), "empty list");
    expect_usage("empty", RUN("run", "-m", nom, "--tokens", "  "), "blank list");
    expect_usage("'-2' at index 1", RUN("run", "-m", nom, "--tokens", "1,-2"), "1,-2");
    expect_usage("'abc' at index 0", RUN("run", "-m", nom, "--tokens", "abc"), "abc");
    expect_usage("'12abc' at index 0", RUN("run", "-m", nom, "--tokens", "12abc"), "12abc");
    expect_usage("'+3' at index 2", RUN("run", "-m", nom, "--tokens", "1,2,+3"), "+3");
    expect_usage("'1.5' at index 0", RUN("run", "-m", nom, "--tokens", "1.5"), "1.5");
    expect_usage("too large", RUN("run", "-m", nom, "--tokens", "99999999999999999999"), "huge");
    expect_usage("too large", RUN("run", "-m", nom, "--tokens", "1,2147483648"), "2^31");
    expect_usage("'1 2' at index 0", RUN("run", "-m", nom, "--tokens", "1 2"), "space-separated");
    expect_usage("empty entry at index 1", RUN("dump", "-m", nom, "--tokens", "1,,2", "-o", "x"), "dump 1,,2");

    /* Well-formed lists (blanks around entries are fine) reach the loader: exit 1. */
    result r = RUN("run", "-m", nom, "--tokens", " 1 , 2,3 ", "-n", "2");
    CHECK(r.rc == 1, "' 1 , 2,3 ' should parse and fail at load: exit %d, %s", r.rc, r.err);
    CHECK(strncmp(r.err, "ds3: ", 5) == 0 && has(r.err, nom), "load failure message: %s", r.err);
    done(&r);
    r = RUN("run", "-m", nom, "--tokens=0,2147483647");
    CHECK(r.rc == 1, "--tokens=0,2147483647 should parse: exit %d, %s", r.rc, r.err);
    done(&r);

    expect_usage("not an integer", RUN("run", "-m", nom, "--tokens", "1", "-n", "12abc"), "-n 12abc");
    expect_usage("out of range", RUN("run", "-m", nom, "--tokens", "1", "-n", "-1"), "-n -1");
    expect_usage("out of range", RUN("run", "-m", nom, "--tokens", "1", "-n", "99999999999999999999"),
                 "-n huge");
    expect_usage("not a", RUN("run", "-m", nom, "--tokens", "1", "--temp", "nan"), "--temp nan");
    expect_usage("not a", RUN("run", "-m", nom, "--tokens", "1", "--temp", "inf"), "--temp inf");
    expect_usage("not a", RUN("run", "-m", nom, "--tokens", "1", "--temp", "0.5x"), "--temp 0.5x");
    expect_usage("negative", RUN("run", "-m", nom, "--tokens", "1", "--temp", "-1"), "--temp -1");
    expect_usage("(0, 1]", RUN("run", "-m", nom, "--tokens", "1", "--top-p", "0"), "--top-p 0");
    expect_usage("(0, 1]", RUN("run", "-m", nom, "--tokens", "1", "--top-p", "1.5"), "--top-p 1.5");
    expect_usage("not a non-negative", RUN("run", "-m", nom, "--tokens", "1", "--seed", "-1"), "--seed -1");
    expect_usage("too large", RUN("run", "-m", nom, "--tokens", "1", "--seed", "18446744073709551616"),
                 "--seed 2^64");
    expect_usage("naive, absorb", RUN("run", "-m", nom, "--tokens", "1", "--attn", "fast"), "--attn fast");
    expect_usage("needs a value", RUN("run", "-m", nom, "--tokens", "1", "-n"), "-n without value");
    expect_usage("unknown option '--frob'", RUN("run", "-m", nom, "--tokens", "1", "--frob"), "--frob");
    expect_usage("unexpected argument 'extra'", RUN("run", "-m", nom, "--tokens", "1", "extra"), "positional");
    expect_usage("missing -m", RUN("run", "--tokens", "1"), "run without -m");
    expect_usage("missing --tokens", RUN("run", "-m", nom), "run without --tokens");

    expect_usage("missing -o", RUN("dump", "-m", nom, "--tokens", "1"), "dump without -o");
    expect_usage("out of range", RUN("dump", "-m", nom, "--tokens", "1,2", "-o", "x", "--decode-from", "0"),
                 "--decode-from 0");
    expect_usage("more than the 2 tokens",
                 RUN("dump", "-m", nom, "--tokens", "1,2", "-o", "x", "--decode-from", "3"), "--decode-from 3");

    expect_usage("exactly one", RUN("info"), "info without a source");
    expect_usage("exactly one", RUN("info", "--list", "--config", "v3"), "info with two sources");
    expect_usage("missing --config", RUN("mkmodel", "-o", "x"), "mkmodel without --config");
    expect_usage("missing -o", RUN("mkmodel", "--config", "tiny"), "mkmodel without -o");
    expect_usage("f32, bf16, fp8", RUN("mkmodel", "--config", "tiny", "--dtype", "f16", "-o", "x"), "--dtype f16");
    expect_usage("not a number", RUN("mkmodel", "--config", "tiny", "--bias-shift", "abc", "-o", "x"),
                 "--bias-shift abc");
}

static void test_info(void) {
    th_section("info");
    result r = RUN("info", "--config", "v3");
    CHECK(r.rc == 0, "info --config v3: exit %d: %s", r.rc, r.err);
    CHECK(has(r.out, "70272") || has(r.out, "70,272"), "info --config v3 does not mention the 70,272-byte "
          "KV cache per token:\n%s", r.out);
    done(&r);

    r = RUN("info", "--list");
    CHECK(r.rc == 0 && has(r.out, "v3\n") && has(r.out, "tiny\n"), "info --list: exit %d: %s", r.rc, r.out);
    done(&r);

    r = RUN("info", "--config", "no-such-config");
    CHECK(r.rc == 1 && strncmp(r.err, "ds3: ", 5) == 0, "unknown config: exit %d: %s", r.rc, r.err);
    done(&r);

    r = RUN("info", "-m", "/nonexistent/model");
    CHECK(r.rc == 1 && strncmp(r.err, "ds3: ", 5) == 0 && has(r.err, "/nonexistent/model"),
          "info on a missing model: exit %d: %s", r.rc, r.err);
    done(&r);
}

/* ========================================================================== */
/* With a model                                                                */
/* ========================================================================== */

/* Open a dump and check what every dump must have. Returns NULL on failure. */
static ds3_st_file *open_dump(const char *path, int T, const char *what) {
    ds3_st_file *f = NULL;
    ds3_status st = ds3_st_open(path, &f);
    CHECK(st == DS3_OK, "%s: cannot read back %s: %s", what, path, ds3_last_error());
    if (st != DS3_OK) return NULL;
    const ds3_st_entry *lg = ds3_st_find(f, "logits");
    CHECK(lg && lg->ndim == 2 && lg->shape[0] == T && lg->dtype == DS3_DT_REAL,
          "%s: 'logits' missing or not [%d, V] of the build's real type", what, T);
    CHECK(ds3_st_find(f, "embed") && ds3_st_find(f, "norm") && ds3_st_find(f, "layers.0.out") &&
              ds3_st_find(f, "layers.0.attn.out") && ds3_st_find(f, "layers.0.ffn.out"),
          "%s: a main activation is missing", what);
#ifdef DS3_F64
    const char *prec = "f64";
#else
    const char *prec = "f32";
#endif
    const char *m = ds3_st_meta(f, "ds3_precision");
    CHECK(m && strcmp(m, prec) == 0, "%s: ds3_precision %s, want %s", what, m ? m : "(none)", prec);
    m = ds3_st_meta(f, "ds3_incomplete");
    CHECK(m && m[0] == '\0', "%s: ds3_incomplete = '%s'", what, m ? m : "(none)");
    m = ds3_st_meta(f, "ds3_rows_dropped");
    CHECK(m && strcmp(m, "0") == 0, "%s: ds3_rows_dropped = %s", what, m ? m : "(none)");
    char rows[16];
    snprintf(rows, sizeof rows, "%d", T);
    m = ds3_st_meta(f, "ds3_rows");
    CHECK(m && strcmp(m, rows) == 0, "%s: ds3_rows = %s, want %d", what, m ? m : "(none)", T);
    m = ds3_st_meta(f, "command");
    CHECK(m && has(m, " dump "), "%s: command metadata '%s'", what, m ? m : "(none)");
    /* The routing tensors of MoE layers: I32 indices, one row per position. */
    int n_moe = 0;
    for (int i = 0; i < f->n; i++) {
        const ds3_st_entry *e = &f->entries[i];
        size_t len = strlen(e->name), sl = strlen(".moe.topk_idx");
        if (len < sl || strcmp(e->name + len - sl, ".moe.topk_idx") != 0) continue;
        n_moe++;
        /* MTP depth k: row i predicts token i+2+k, so T-1-k rows (docs/DUMP_FORMAT.md) */
        int k, rows = T;
        if (sscanf(e->name, "mtp.%d.", &k) == 1) rows = T - 1 - k;
        CHECK(e->dtype == DS3_DT_I32 && e->ndim == 2 && e->shape[0] == rows, "%s: %s is not I32 [%d, K]", what,
              e->name, rows);
    }
    CHECK(n_moe > 0, "%s: no layers.N.moe.topk_idx in the dump of an MoE model", what);
    return f;
}

/* Expert choices are indices: they compare exactly. */
static void compare_topk(ds3_st_file *a, ds3_st_file *b, const char *what) {
    for (int i = 0; i < a->n; i++) {
        const ds3_st_entry *ea = &a->entries[i];
        if (ea->dtype != DS3_DT_I32) continue;
        const ds3_st_entry *eb = ds3_st_find(b, ea->name);
        CHECK(eb && eb->nbytes == ea->nbytes && memcmp(ea->data, eb->data, ea->nbytes) == 0,
              "%s: %s differs", what, ea->name);
    }
}

static void read_real(double *out, const ds3_st_entry *e, size_t n) {
    for (size_t i = 0; i < n; i++) {
        ds3_real v;
        memcpy(&v, (const char *)e->data + i * sizeof v, sizeof v);
        out[i] = (double)v;
    }
}

/* Two dumps' tensor `name` agree within tolerance (same shape required). */
static void compare_dumps(ds3_st_file *a, ds3_st_file *b, const char *name, const char *what) {
    const ds3_st_entry *ea = ds3_st_find(a, name), *eb = ds3_st_find(b, name);
    CHECK(ea && eb && ea->nbytes == eb->nbytes && ea->dtype == DS3_DT_REAL, "%s: '%s' missing or shapes differ",
          what, name);
    if (!ea || !eb || ea->nbytes != eb->nbytes || ea->dtype != DS3_DT_REAL) return;
    size_t n = ea->nbytes / sizeof(ds3_real);
    double *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    read_real(x, ea, n);
    read_real(y, eb, n);
#ifdef DS3_F64
    double atol = 1e-10, rtol = 1e-9;
#else
    double atol = 1e-4, rtol = 1e-3;
#endif
    char label[128];
    snprintf(label, sizeof label, "%s %s", what, name);
    th_check_close(label, x, y, (long)n, atol, rtol);
    free(x);
    free(y);
}

static void test_with_model(const char *models) {
    char model[512];
    snprintf(model, sizeof model, "%s/tiny-f32", models);
    char cfg[600];
    snprintf(cfg, sizeof cfg, "%s/config.json", model);
    if (!exists(cfg)) {
        fprintf(stderr, "-- %s not found: skipping the tests that need a model (run make models)\n", model);
        return;
    }
    th_section("run on %s", model);

    result r = RUN("run", "-m", model, "--tokens", "1,2,3", "-n", "5");
    CHECK(r.rc == 0, "run: exit %d: %s", r.rc, r.err);
    CHECK(count_ids(last_line(r.out)) == 5, "run -n 5: last stdout line '%s' is not 5 ids", last_line(r.out));
    CHECK(has(r.err, "prefill") && has(r.err, "tok/s"), "run: no timing on stderr: %s", r.err);
    char first[4096];
    snprintf(first, sizeof first, "%s", last_line(r.out));
    done(&r);

    r = RUN("run", "-m", model, "--tokens", "1,2,3", "-n", "5");
    CHECK(r.rc == 0 && strcmp(last_line(r.out), first) == 0, "greedy run is not repeatable: '%s' vs '%s'",
          last_line(r.out), first);
    done(&r);

    r = RUN("run", "-m", model, "--tokens", "1,2,3", "-n", "1");
    CHECK(r.rc == 0 && count_ids(last_line(r.out)) == 1, "run -n 1: exit %d, '%s'", r.rc, r.out);
    done(&r);

    r = RUN("run", "-m", model, "--tokens", "7", "-n", "6", "--temp", "0.9", "--top-p", "0.9", "--seed", "42",
            "--attn", "naive");
    CHECK(r.rc == 0 && count_ids(last_line(r.out)) == 6, "sampled naive run: exit %d, '%s' %s", r.rc, r.out,
          r.err);
    snprintf(first, sizeof first, "%s", last_line(r.out));
    done(&r);
    r = RUN("run", "-m", model, "--tokens", "7", "-n", "6", "--temp", "0.9", "--top-p", "0.9", "--seed", "42",
            "--attn", "naive");
    CHECK(r.rc == 0 && strcmp(last_line(r.out), first) == 0, "same seed, different output: '%s' vs '%s'",
          last_line(r.out), first);
    done(&r);

    r = RUN("run", "-m", model, "--tokens", "1,2,100000000", "-n", "2");
    CHECK(r.rc == 1, "out-of-range token: exit %d, want 1", r.rc);
    CHECK(has(r.err, "ds3: token 100000000 at index 2 is out of range (vocab "), "out-of-range message: %s",
          r.err);
    done(&r);

    r = RUN("run", "-m", model, "--tokens", "1", "-n", "2000000000");
    CHECK(r.rc == 1 && has(r.err, "max_position_embeddings"), "too many positions: exit %d: %s", r.rc, r.err);
    done(&r);

    r = RUN("info", "-m", model);
    CHECK(r.rc == 0 && r.out[0], "info -m: exit %d: %s", r.rc, r.err);
    done(&r);

    th_section("dump");
    char full[256], naive[256], dec[256], dec1[256];
    snprintf(full, sizeof full, "%s/full.safetensors", tmpdir);
    snprintf(naive, sizeof naive, "%s/naive.safetensors", tmpdir);
    snprintf(dec, sizeof dec, "%s/dec.safetensors", tmpdir);
    snprintf(dec1, sizeof dec1, "%s/dec1.safetensors", tmpdir);
    const char *toks = "5,1,4,1,5,9,2";
    const int T = 7;

    r = RUN("dump", "-m", model, "--tokens", toks, "-o", full);
    CHECK(r.rc == 0 && exists(full), "dump: exit %d: %s", r.rc, r.err);
    done(&r);
    r = RUN("dump", "-m", model, "--tokens", toks, "-o", naive, "--attn", "naive");
    CHECK(r.rc == 0 && exists(naive), "dump --attn naive: exit %d: %s", r.rc, r.err);
    done(&r);
    r = RUN("dump", "-m", model, "--tokens", toks, "-o", dec, "--decode-from", "3");
    CHECK(r.rc == 0 && exists(dec), "dump --decode-from 3: exit %d: %s", r.rc, r.err);
    done(&r);
    r = RUN("dump", "-m", model, "--tokens", toks, "-o", dec1, "--decode-from", "1", "--attn", "naive");
    CHECK(r.rc == 0 && exists(dec1), "dump --decode-from 1 --attn naive: exit %d: %s", r.rc, r.err);
    done(&r);

    ds3_st_file *ff = open_dump(full, T, "full"), *fn = open_dump(naive, T, "naive"),
                *fd = open_dump(dec, T, "decode-from 3"), *fd1 = open_dump(dec1, T, "decode-from 1 naive");
    if (ff) {
        const char *m = ds3_st_meta(ff, "tokens");
        CHECK(m && strcmp(m, toks) == 0, "tokens metadata '%s'", m ? m : "(none)");
        m = ds3_st_meta(ff, "attn");
        CHECK(m && strcmp(m, "absorb") == 0, "attn metadata '%s'", m ? m : "(none)");
    }
    if (fd) {
        const char *m = ds3_st_meta(fd, "decode_from");
        CHECK(m && strcmp(m, "3") == 0, "decode_from metadata '%s'", m ? m : "(none)");
    }
    /* Row i is position i however the positions were split across calls,
     * and both attention forms compute the same function. */
    if (ff && fn) compare_dumps(ff, fn, "logits", "absorb vs naive");
    if (ff && fd) compare_dumps(ff, fd, "logits", "prefill vs decode-from 3");
    if (ff && fd) compare_dumps(ff, fd, "layers.0.out", "prefill vs decode-from 3");
    if (ff && fd1) compare_dumps(ff, fd1, "logits", "prefill vs decode-from 1 naive");
    if (ff && fd) compare_topk(ff, fd, "prefill vs decode-from 3");
    if (ff && fn) compare_topk(ff, fn, "absorb vs naive");
    ds3_st_close(ff);
    ds3_st_close(fn);
    ds3_st_close(fd);
    ds3_st_close(fd1);

    th_section("--kernels");
    {
        /* deterministic: a prefill and a token-by-token run write the same
         * logits bytes; ref (the plain loops) stays close to the default. */
        char kd_full[256], kd_dec[256], kref[256];
        snprintf(kd_full, sizeof kd_full, "%s/kd_full.safetensors", tmpdir);
        snprintf(kd_dec, sizeof kd_dec, "%s/kd_dec.safetensors", tmpdir);
        snprintf(kref, sizeof kref, "%s/kref.safetensors", tmpdir);
        r = RUN("dump", "-m", model, "--tokens", toks, "-o", kd_full, "--kernels", "deterministic");
        CHECK(r.rc == 0, "dump --kernels deterministic: exit %d: %s", r.rc, r.err);
        done(&r);
        r = RUN("dump", "-m", model, "--tokens", toks, "-o", kd_dec, "--kernels", "deterministic", "--decode-from", "1");
        CHECK(r.rc == 0, "dump --kernels deterministic --decode-from 1: exit %d: %s", r.rc, r.err);
        done(&r);
        r = RUN("dump", "-m", model, "--tokens", toks, "-o", kref, "--kernels", "ref");
        CHECK(r.rc == 0, "dump --kernels ref: exit %d: %s", r.rc, r.err);
        done(&r);
        ds3_st_file *a = open_dump(kd_full, T, "deterministic"), *b = open_dump(kd_dec, T, "deterministic decode"),
                    *c = open_dump(kref, T, "ref"), *f0 = open_dump(full, T, "full");
        if (a && b) {
            const ds3_st_entry *la = ds3_st_find(a, "logits"), *lb = ds3_st_find(b, "logits");
            CHECK(la && lb && la->nbytes == lb->nbytes && memcmp(la->data, lb->data, la->nbytes) == 0,
                  "deterministic kernels: prefill and decode-from 1 logits are not byte-identical");
            const char *m = ds3_st_meta(a, "kernels");
            CHECK(m && strcmp(m, "deterministic") == 0, "kernels metadata '%s'", m ? m : "(none)");
        }
        if (c && f0) compare_dumps(f0, c, "logits", "fast vs ref kernels");
        ds3_st_close(a);
        ds3_st_close(b);
        ds3_st_close(c);
        ds3_st_close(f0);
        expect_usage("--kernels: 'quick' is not one of fast, deterministic, ref",
                     RUN("run", "-m", model, "--tokens", "1", "--kernels", "quick"), "--kernels quick");
        /* the same greedy tokens from every kernel set */
        result k0 = RUN("run", "-m", model, "--tokens", toks, "-n", "6");
        result k1 = RUN("run", "-m", model, "--tokens", toks, "-n", "6", "--kernels", "ref");
        char ids0[256];
        snprintf(ids0, sizeof ids0, "%s", last_line(k0.out));  /* last_line's buffer is static */
        CHECK(k0.rc == 0 && k1.rc == 0 && ids0[0] && strcmp(ids0, last_line(k1.out)) == 0,
              "run --kernels ref: '%s' vs fast '%s'", last_line(k1.out), ids0);
        done(&k0);
        done(&k1);
    }

    th_section("dump failures leave no file");
    r = RUN("dump", "-m", model, "--tokens", "1,2", "-o", "/nonexistent/dir/x.safetensors");
    CHECK(r.rc == 1, "dump to a missing directory: exit %d, want 1", r.rc);
    CHECK(strncmp(r.err, "ds3: ", 5) == 0 && has(r.err, "/nonexistent/dir"), "message does not name the "
          "directory: %s", r.err);
    CHECK(!exists("/nonexistent/dir/x.safetensors") && !exists("/nonexistent/dir/x.safetensors.tmp"),
          "a file was left behind");
    done(&r);

    char bad[256];
    snprintf(bad, sizeof bad, "%s/bad.safetensors", tmpdir);
    r = RUN("dump", "-m", model, "--tokens", "1,100000000", "-o", bad);
    CHECK(r.rc == 1 && has(r.err, "out of range"), "dump with a bad token: exit %d: %s", r.rc, r.err);
    CHECK(!exists(bad), "dump with a bad token left %s", bad);
    done(&r);

    r = RUN("dump", "-m", model, "--tokens", "1,2", "-o", tmpdir);
    CHECK(r.rc == 1 && has(r.err, "directory"), "dump onto a directory: exit %d: %s", r.rc, r.err);
    done(&r);

    th_section("mkmodel");
    char out[256];
    snprintf(out, sizeof out, "%s/m", tmpdir);
    r = RUN("mkmodel", "--config", "tiny", "--dtype", "bf16", "--seed", "3", "-o", out);
    snprintf(cfg, sizeof cfg, "%s/config.json", out);
    CHECK(r.rc == 0 && exists(cfg), "mkmodel: exit %d: %s", r.rc, r.err);
    done(&r);
    r = RUN("run", "-m", out, "--tokens", "1,2", "-n", "3");
    CHECK(r.rc == 0 && count_ids(last_line(r.out)) == 3, "run on a fresh bf16 model: exit %d: %s", r.rc, r.err);
    done(&r);
    r = RUN("mkmodel", "--config", "no-such-config", "-o", out);
    CHECK(r.rc == 1 && strncmp(r.err, "ds3: ", 5) == 0, "mkmodel with a bad config: exit %d: %s", r.rc, r.err);
    done(&r);
}

/* ========================================================================== */
/* Errors that name the cause, and failed writes (issue 18)                    */
/* ========================================================================== */

/* A runtime error: exit 1 and a "ds3: " message containing `want` (and `want2`). */
static void expect_runtime(const char *want, const char *want2, result r, const char *what) {
    CHECK(r.rc == 1, "%s: exit %d, want 1 (stderr: %s)", what, r.rc, r.err);
    CHECK(has(r.err, "ds3: "), "%s: no 'ds3: ' message: %s", what, r.err);
    CHECK(has(r.err, want) && (!want2 || has(r.err, want2)), "%s: stderr lacks \"%s\"%s%s: %s", what, want,
          want2 ? " / " : "", want2 ? want2 : "", r.err);
    done(&r);
}

/* The options llama.cpp and transformers users type (issue 18), on --tokens runs. */
static void test_run_options(const char *models) {
    char model[512], cfg[600];
    snprintf(model, sizeof model, "%s/tiny-f32", models);
    snprintf(cfg, sizeof cfg, "%s/config.json", model);
    if (!exists(cfg)) return;
    th_section("run: -n2 -n=2 --n-predict, -s, -t, -c, --top-k, --quiet, generation_config.json, dump -o -");
    result r = RUN("run", "-m", model, "--tokens", "1,2,3", "-n", "4");
    char base[256];
    snprintf(base, sizeof base, "%s", last_line(r.out));
    CHECK(r.rc == 0 && count_ids(base) == 4, "run -n 4: %s", r.err);
    CHECK(has(r.err, "system: ") && has(r.err, " thread") && has(r.err, "BLAS ") && has(r.err, "lane kernel "),
          "no system line on stderr: %s", r.err);
    done(&r);
    const char *forms[][2] = {{"-n4", NULL}, {"-n=4", NULL}, {"--n-predict=4", NULL}, {"--n-predict", "4"}};
    for (int i = 0; i < 4; i++) {
        r = forms[i][1] ? RUN("run", "-m", model, "--tokens", "1,2,3", forms[i][0], forms[i][1])
                        : RUN("run", "-m", model, "--tokens", "1,2,3", forms[i][0]);
        CHECK(r.rc == 0 && strcmp(last_line(r.out), base) == 0, "%s: exit %d, '%s' vs '%s': %s", forms[i][0], r.rc,
              last_line(r.out), base, r.err);
        done(&r);
    }
    /* -t: the same bits for 1 and 2 threads, and the count printed */
    r = RUN("run", "-m", model, "--tokens", "1,2,3", "-n", "4", "-t1");
    CHECK(r.rc == 0 && strcmp(last_line(r.out), base) == 0 && has(r.err, "1 thread,"), "-t1: '%s': %s",
          last_line(r.out), r.err);
    done(&r);
    r = RUN("run", "-m", model, "--tokens", "1,2,3", "-n", "4", "--threads", "2");
    CHECK(r.rc == 0 && strcmp(last_line(r.out), base) == 0 && has(r.err, "2 threads,"), "--threads 2: %s", r.err);
    done(&r);
    expect_usage("--threads: 0 is out of range", RUN("run", "-m", model, "--tokens", "1", "-t", "0"), "-t 0");
    /* --quiet: nothing on stderr */
    r = RUN("run", "-m", model, "--tokens", "1,2,3", "-n", "4", "--quiet");
    CHECK(r.rc == 0 && r.err[0] == '\0', "--quiet printed: %s", r.err);
    done(&r);
    /* -s is --seed */
    r = RUN("run", "-m", model, "--tokens", "1,2,3", "-n", "6", "--temp", "1.5", "-s7");
    char seeded[256];
    snprintf(seeded, sizeof seeded, "%s", last_line(r.out));
    done(&r);
    r = RUN("run", "-m", model, "--tokens", "1,2,3", "-n", "6", "--temp", "1.5", "--seed", "7");
    CHECK(r.rc == 0 && strcmp(last_line(r.out), seeded) == 0, "-s7 vs --seed 7: '%s' vs '%s'", seeded,
          last_line(r.out));
    done(&r);
    /* --top-k 1 at any temperature is the argmax: the greedy output */
    r = RUN("run", "-m", model, "--tokens", "1,2,3", "-n", "4", "--temp", "5", "--top-k", "1", "-s", "3");
    CHECK(r.rc == 0 && strcmp(last_line(r.out), base) == 0, "--top-k 1 is not greedy: '%s' vs '%s'",
          last_line(r.out), base);
    done(&r);
    r = RUN("run", "-m", model, "--tokens", "1,2,3", "-n", "4", "--temp", "5", "--min-p", "1", "-s", "3");
    CHECK(r.rc == 0 && strcmp(last_line(r.out), base) == 0, "--min-p 1 is not greedy: '%s'", last_line(r.out));
    done(&r);
    expect_usage("--top-k: -1 is out of range", RUN("run", "-m", model, "--tokens", "1", "--top-k", "-1"), "--top-k -1");
    expect_usage("--min-p: 2 is outside [0, 1]", RUN("run", "-m", model, "--tokens", "1", "--min-p", "2"), "--min-p 2");
    expect_usage("--repeat-penalty: 0 is not positive", RUN("run", "-m", model, "--tokens", "1", "--repeat-penalty", "0"),
                 "--repeat-penalty 0");
    expect_usage("not supported with --mtp",
                 RUN("run", "-m", model, "--tokens", "1", "--mtp", "--repeat-penalty", "1.3"), "penalty with --mtp");
    r = RUN("run", "-m", model, "--tokens", "1,2,3", "-n", "4", "--repeat-penalty", "1.3", "--repeat-last-n", "-1");
    CHECK(r.rc == 0 && count_ids(last_line(r.out)) == 4, "--repeat-penalty: exit %d: %s", r.rc, r.err);
    done(&r);
    /* -c: the prompt and the output share the positions */
    r = RUN("run", "-m", model, "--tokens", "1,2,3", "-n", "10", "-c", "5");
    CHECK(r.rc == 0 && count_ids(last_line(r.out)) == 2 && strncmp(last_line(r.out), base, strlen(last_line(r.out))) == 0 &&
              has(r.err, "context is full (-c 5)"),
          "-c 5: '%s': %s", last_line(r.out), r.err);
    done(&r);
    r = RUN("run", "-m", model, "--tokens", "1,2,3", "-c", "2");
    CHECK(r.rc == 1 && has(r.err, "the prompt has 3 tokens, more than -c 2"), "-c 2: exit %d: %s", r.rc, r.err);
    done(&r);

    /* generation_config.json: the defaults, printed, overridden by options */
    char gdir[600], p[700];
    snprintf(gdir, sizeof gdir, "%s/with-genconfig", tmpdir);
    mkdir(gdir, 0755);
    const char *files[] = {"config.json", "model.safetensors"};
    for (int i = 0; i < 2; i++) {
        char target[700];
        snprintf(target, sizeof target, "%s/%s", model, files[i]);
        char *abs = realpath(target, NULL);
        snprintf(p, sizeof p, "%s/%s", gdir, files[i]);
        CHECK(abs && symlink(abs, p) == 0, "link %s", p);
        free(abs);
    }
    snprintf(p, sizeof p, "%s/generation_config.json", gdir);
    FILE *f = fopen(p, "w");
    fputs("{\"do_sample\": true, \"temperature\": 0.9, \"top_p\": 0.8, \"top_k\": 20}\n", f);
    fclose(f);
    r = RUN("run", "-m", model, "--tokens", "1,2,3", "-n", "6", "--temp", "0.9", "--top-p", "0.8", "--top-k", "20", "-s", "5");
    snprintf(seeded, sizeof seeded, "%s", last_line(r.out));
    done(&r);
    r = RUN("run", "-m", gdir, "--tokens", "1,2,3", "-n", "6", "-s", "5");
    CHECK(r.rc == 0 && strcmp(last_line(r.out), seeded) == 0, "generation_config.json not applied: '%s' vs '%s'",
          last_line(r.out), seeded);
    CHECK(has(r.err, "sampling: temp 0.9, top-p 0.8, top-k 20") && has(r.err, "from generation_config.json"),
          "generation_config.json not printed: %s", r.err);
    done(&r);
    r = RUN("run", "-m", gdir, "--tokens", "1,2,3", "-n", "4", "--temp", "0");
    CHECK(r.rc == 0 && strcmp(last_line(r.out), base) == 0, "--temp 0 does not override it: '%s'", last_line(r.out));
    done(&r);
    f = fopen(p, "w");
    fputs("{\"do_sample\": false, \"temperature\": 0.9}\n", f);
    fclose(f);
    r = RUN("run", "-m", gdir, "--tokens", "1,2,3", "-n", "4");
    CHECK(r.rc == 0 && strcmp(last_line(r.out), base) == 0 && has(r.err, "sampling: greedy"),
          "do_sample false is not greedy: '%s': %s", last_line(r.out), r.err);
    done(&r);
    f = fopen(p, "w");
    fputs("[1, 2]\n", f);
    fclose(f);
    r = RUN("run", "-m", gdir, "--tokens", "1,2,3", "-n", "4");
    CHECK(r.rc == 1 && has(r.err, "generation_config.json: not a JSON object"), "a broken generation_config.json: %s",
          r.err);
    done(&r);

    /* dump -o -: the dump on stdout, the same tensors as a file */
    char file[600];
    snprintf(file, sizeof file, "%s/o-file.safetensors", tmpdir);
    r = RUN("dump", "-m", model, "--tokens", "1,2,3", "-o", file);
    CHECK(r.rc == 0, "dump -o FILE: %s", r.err);
    done(&r);
    r = RUN("dump", "-m", model, "--tokens", "1,2,3", "-o", "-");
    CHECK(r.rc == 0 && r.out_n > 1000 && has(r.err, "bytes to stdout"), "dump -o -: exit %d, %zu bytes: %s", r.rc,
          r.out_n, r.err);
    char piped[600];
    snprintf(piped, sizeof piped, "%s/o-stdout.safetensors", tmpdir);
    f = fopen(piped, "wb");
    fwrite(r.out, 1, r.out_n, f);
    fclose(f);
    done(&r);
    CHECK(!exists("-"), "dump -o - wrote a file named '-'");
    r = RUN("compare", file, piped, "--atol", "0", "--rtol", "0");
    CHECK(r.rc == 0 && has(r.out, "PASS"), "dump -o - differs from dump -o FILE: %s", r.out);
    done(&r);
}

static void test_next_step_errors(const char *models) {
    th_section("errors that name the cause and the next step");
    char missing[600], file[600], model[512];
    snprintf(missing, sizeof missing, "%s/smal-fp8", tmpdir);
    snprintf(model, sizeof model, "%s/tiny-f32", models);
    snprintf(file, sizeof file, "%s/tiny-f32/config.json", models);
    /* A mistyped folder says it does not exist: not "no tokenizer.json", not "no config.json". */
    expect_runtime("no such directory", missing, RUN("run", "-m", missing, "-p", "Hello"), "run -p, missing -m");
    expect_runtime("no such directory", missing, RUN("run", "-m", missing, "--tokens", "1"), "run --tokens, missing -m");
    expect_runtime("no such directory", missing, RUN("info", "-m", missing), "info, missing -m");
    expect_runtime("no such directory", missing, RUN("tokenize", "-m", missing), "tokenize, missing -m");
    if (exists(file)) {
        /* A file where a folder is expected says so. */
        expect_runtime("is a file, not a model directory", NULL, RUN("run", "-m", file, "--tokens", "1"),
                       "run, -m FILE");
        expect_runtime("is a file, not a model directory", NULL, RUN("run", "-m", file, "-p", "x"), "run -p, -m FILE");
        expect_runtime("is a file, not a model directory", NULL, RUN("info", "-m", file), "info, -m FILE");
    }
    /* An unknown config name lists the built-ins. */
    expect_runtime("'V3' is not a built-in config", "v3, r1, v3.1", RUN("info", "--config", "V3"), "info --config V3");
    expect_runtime("ds3 info --list", NULL, RUN("mkmodel", "--config", "tinny", "-o", missing), "mkmodel --config tinny");
    CHECK(!exists(missing), "mkmodel with an unknown config created %s", missing);
    char nojson[600];
    snprintf(nojson, sizeof nojson, "%s/nope.json", tmpdir);
    expect_runtime("no such file", nojson, RUN("info", "--config", nojson), "info --config missing.json");

    /* mkmodel checks before writing: a tokenizer that does not load writes nothing. */
    char out[600];
    snprintf(out, sizeof out, "%s/tok-model", tmpdir);
    expect_runtime("/nonexistent", NULL, RUN("mkmodel", "--config", "tiny", "--tokenizer", "/nonexistent", "-o", out),
                   "mkmodel --tokenizer /nonexistent");
    CHECK(!exists(out), "mkmodel with a tokenizer that does not load wrote %s", out);
    /* The free space: V3 in fp8 needs ~689 GB; refused with both numbers where
     * there is less (checked only when the file system here has less). */
    struct statvfs vs;
    if (statvfs(tmpdir, &vs) == 0 && (double)vs.f_bavail * (double)vs.f_frsize < 680e9) {
        result r = RUN("mkmodel", "--config", "v3", "--dtype", "fp8", "-o", out);
        CHECK(r.rc == 1 && has(r.err, "needs 688.") && has(r.err, "GB free") && has(r.err, "--force"),
              "mkmodel v3 into too little space: exit %d: %s", r.rc, r.err);
        CHECK(!exists(out), "mkmodel refused for space but created %s", out);
        done(&r);
    } else fprintf(stderr, "-- the file system of %s has 680 GB free: free-space refusal not tested\n", tmpdir);

    /* compare: a file that is not a dump is refused in one line. */
    if (exists(file)) {
        char ckpt[600];
        snprintf(ckpt, sizeof ckpt, "%s/tiny-f32/model.safetensors", models);
        result r = RUN("compare", ckpt, ckpt);
        CHECK(r.rc == 1 && has(r.err, "is not a ds3-style dump") && has(r.err, "model.embed_tokens.weight"),
              "compare of a checkpoint: exit %d: %s", r.rc, r.err);
        CHECK(r.out[0] == '\0' && !has(r.out, "MISSING"), "compare of a checkpoint printed: %.200s", r.out);
        done(&r);
        char mdir[600];
        snprintf(mdir, sizeof mdir, "%s/tiny-f32", models);
        r = RUN("replay", "-m", mdir, ckpt);
        CHECK(r.rc == 1 && has(r.err, "BUILD: ") && has(r.err, "is not a ds3-style dump"),
              "replay of a checkpoint: exit %d: %s", r.rc, r.err);
        done(&r);
    }
    (void)model;
}

/* Every command with stdout on /dev/full exits non-zero and says why. */
static void test_write_failures(const char *models) {
    th_section("stdout on /dev/full: every command fails");
    if (access("/dev/full", W_OK) != 0) {
        fprintf(stderr, "-- no writable /dev/full: skipped\n");
        return;
    }
    char model[512], cfg[600], ref[600], tok[600];
    snprintf(model, sizeof model, "%s/tiny-f32", models);
    snprintf(cfg, sizeof cfg, "%s/config.json", model);
    snprintf(ref, sizeof ref, "%s/full-ref.safetensors", tmpdir);
    snprintf(tok, sizeof tok, "%s", "data/tokenizers/deepseek-v3");
    bool have_model = exists(cfg);
    if (have_model) {
        result r = RUN("dump", "-m", model, "--tokens", "1,2,3", "-o", ref);
        CHECK(r.rc == 0, "dump for the compare case: %s", r.err);
        done(&r);
        /* the fp32 profile's cosine bound (1 - 2e-12) does not print as 1 */
        r = RUN("compare", ref, ref);
        CHECK(r.rc == 0 && has(r.out, "cos >= 1-") && !has(r.out, "cos >= 1,"), "compare header: %.400s", r.out);
        done(&r);
    }
    struct {
        const char *what;
        const char *const args[12];
        bool needs_model;
    } cases[] = {
        {"--help", {"--help"}, false},
        {"--version", {"--version"}, false},
        {"run --help", {"run", "--help"}, false},
        {"info --list", {"info", "--list"}, false},
        {"info --config", {"info", "--config", "tiny"}, false},
        {"info -m", {"info", "-m", model}, true},
        {"run --tokens", {"run", "-m", model, "--tokens", "1,2", "-n", "2"}, true},
        {"run --json", {"run", "-m", model, "--tokens", "1,2", "-n", "2", "--json"}, true},
        {"compare", {"compare", ref, ref}, true},
        {"compare --json", {"compare", ref, ref, "--json"}, true},
        {"replay", {"replay", "-m", model, ref}, true},
        {"dump -o -", {"dump", "-m", model, "--tokens", "1,2,3", "-o", "-"}, true},
        {"tokenize", {"tokenize", "--tokenizer", tok}, false},
        {"detokenize", {"detokenize", "--tokenizer", tok}, false},
    };
    stdout_to = "/dev/full";
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (cases[i].needs_model && !have_model) continue;
        const char *in = strncmp(cases[i].what, "detok", 5) == 0 ? "19923,14" : "Hello";
        result r = run_in(in, strlen(in), cases[i].args);
        CHECK(r.rc == 1 && has(r.err, "ds3: writing stdout: "),
              "%s > /dev/full: exit %d, stderr: %s", cases[i].what, r.rc, r.err);
        done(&r);
    }
    stdout_to = NULL;
}

int main(void) {
    cli = getenv("DS3_CLI");
    if (!cli || !*cli) cli = "build/ds3";
    const char *models = getenv("DS3_MODELS");
    if (!models || !*models) models = "build/models";
    CHECK(access(cli, X_OK) == 0, "DS3_CLI=%s is not an executable", cli);
    if (access(cli, X_OK) != 0) return th_finish();

    snprintf(tmpdir, sizeof tmpdir, "/tmp/ds3-test-cli.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_usage();
    test_tokens_syntax();
    test_info();
    test_with_model(models);
    test_run_options(models);
    test_next_step_errors(models);
    test_write_failures(models);
    remove_tmpdir();
    return th_finish();
}

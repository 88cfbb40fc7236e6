/*
 * test_errors.c — hostile inputs that the other tests do not already cover
 * (docs/ROBUSTNESS.md maps every error class to its test). Each case breaks
 * one thing and expects a status, a message naming the file or field and what
 * is wrong, no model or state handed out, and — for the CLI — an exit status
 * of 1 or 2 and no output file, complete or partial.
 *
 *   checkpoint  Inf block scales, a weight stored as I32, a scale of the wrong
 *               shape, an FP8 weight without scales, one tensor in two shards,
 *               index files that are not JSON, lack weight_map, name shards
 *               with "/" or "..", config.json that is a directory or 16 MB
 *   config      combinations found by fuzz_config: rope_theta 1, YaRN betas
 *               and mscales that make NaN or Inf positions, heads x head dims
 *               wider than any matrix the kernels size
 *   runtime     positions beyond the state (the KV cache), token ids out of
 *               range, dumps longer than the state, absurd state sizes
 *   output      a full disk (RLIMIT_FSIZE) while writing safetensors, while
 *               `ds3 dump` writes, while `ds3 mkmodel` writes over an existing
 *               model; an output path under a regular file
 *
 * Needs $DS3_MODELS/tiny-f32 and tiny-fp8 (make models) and $DS3_CLI.
 */
#include "harness.h"
#include "cli_run.h"
#include "generate/generate.h"
#include "fuzz/micro_model.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdarg.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *models;   /* cli, tmpdir: cli_run.h */

/* ========================================================================== */
/* Helpers                                                                     */
/* ========================================================================== */

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0) { perror(path); exit(1); }
    fclose(f);
}

/* <tmp>/<name>, created empty, holding a copy of src's config.json. */
static const char *new_dir(const char *name, const char *src) {
    static char d[8][256];
    static int k;
    char *p = d[k++ % 8];
    snprintf(p, sizeof d[0], "%s/%s", tmpdir, name);
    mkdir(p, 0755);
    if (src) {
        char a[600], b[600];
        ds3_config c;
        snprintf(a, sizeof a, "%s/config.json", src);
        snprintf(b, sizeof b, "%s/config.json", p);
        if (ds3_config_load(a, &c) != DS3_OK) { fprintf(stderr, "%s\n", ds3_last_error()); exit(1); }
        char *js = ds3_config_to_json(&c);
        write_text(b, js);
        free(js);
    }
    return p;
}

/*
 * Copy src/model.safetensors to dst/<file> through the writer, calling edit on
 * every entry: it may change the dtype, shape or data (a private copy of
 * nbytes it can scribble on), or return false to drop the entry. `only`, when
 * not NULL, keeps just that tensor.
 */
typedef bool (*edit_fn)(const char *name, ds3_dtype *dt, int64_t *shape, unsigned char *data, uint64_t nbytes);

static void rewrite(const char *src, const char *dst, const char *file, edit_fn edit, const char *only) {
    char p[600];
    snprintf(p, sizeof p, "%s/model.safetensors", src);
    ds3_st_file *f = NULL;
    if (ds3_st_open(p, &f) != DS3_OK) { fprintf(stderr, "%s\n", ds3_last_error()); exit(1); }
    ds3_st_writer *w = ds3_stw_new();
    unsigned char **copies = calloc((size_t)f->n, sizeof *copies);
    for (int i = 0; i < f->n; i++) {
        const ds3_st_entry *e = &f->entries[i];
        if (only && strcmp(e->name, only) != 0) continue;
        ds3_dtype dt = e->dtype;
        int64_t shape[8];
        memcpy(shape, e->shape, sizeof shape);
        copies[i] = malloc(e->nbytes + 1);
        memcpy(copies[i], e->data, e->nbytes);
        if (edit && !edit(e->name, &dt, shape, copies[i], e->nbytes)) continue;
        if (ds3_stw_add(w, e->name, dt, e->ndim, shape, copies[i]) != DS3_OK) {
            fprintf(stderr, "rewrite: %s\n", ds3_last_error());
            exit(1);
        }
    }
    snprintf(p, sizeof p, "%s/%s", dst, file);
    if (ds3_stw_write(w, p) != DS3_OK) { fprintf(stderr, "%s\n", ds3_last_error()); exit(1); }
    ds3_stw_free(w);
    for (int i = 0; i < f->n; i++) free(copies[i]);
    free(copies);
    ds3_st_close(f);
}

/* Load dir: expect status want, no model, and each needle in the message. */
static void expect_load(const char *what, const char *dir, ds3_status want, const char *n1, const char *n2) {
    ds3_model *m = (ds3_model *)&m;
    ds3_status st = ds3_model_load(dir, &m);
    const char *msg = ds3_last_error();
    CHECK(st == want, "%s: status %s, expected %s (%s)", what, ds3_status_name(st), ds3_status_name(want), msg);
    CHECK(m == NULL, "%s: no model on failure", what);
    CHECK(!n1 || strstr(msg, n1), "%s: message lacks '%s': %s", what, n1, msg);
    CHECK(!n2 || strstr(msg, n2), "%s: message lacks '%s': %s", what, n2, msg);
    fprintf(stderr, "   %-34s %s\n", what, msg);
    if (st == DS3_OK) ds3_model_free(m);
}

/* ---- edits ---- */

static const char *target;   /* the tensor an edit applies to */

static bool edit_inf_scale(const char *name, ds3_dtype *dt, int64_t *shape, unsigned char *d, uint64_t n) {
    (void)dt, (void)shape;
    if (strcmp(name, target) == 0 && n >= 8) {
        float inf = INFINITY, ninf = -INFINITY;
        memcpy(d + n - 4, &inf, 4);     /* the last block: edge blocks are checked too */
        memcpy(d, &ninf, 4);
    }
    return true;
}

static bool edit_as_i32(const char *name, ds3_dtype *dt, int64_t *shape, unsigned char *d, uint64_t n) {
    (void)shape, (void)d, (void)n;
    if (strcmp(name, target) == 0) *dt = DS3_DT_I32;   /* F32 -> I32: same size */
    return true;
}

static bool edit_scale_shape(const char *name, ds3_dtype *dt, int64_t *shape, unsigned char *d, uint64_t n) {
    (void)dt, (void)d, (void)n;
    if (strcmp(name, target) == 0) {   /* [a, b] -> [b, a]: same bytes, wrong shape */
        int64_t t = shape[0];
        shape[0] = shape[1];
        shape[1] = t;
    }
    return true;
}

static bool edit_drop(const char *name, ds3_dtype *dt, int64_t *shape, unsigned char *d, uint64_t n) {
    (void)dt, (void)shape, (void)d, (void)n;
    return strcmp(name, target) != 0;
}

/* ========================================================================== */
/* Checkpoints                                                                 */
/* ========================================================================== */

static void test_checkpoint(void) {
    th_section("broken checkpoints");
    char f32[512], fp8[512], p[700];
    snprintf(f32, sizeof f32, "%s/tiny-f32", models);
    snprintf(fp8, sizeof fp8, "%s/tiny-fp8", models);
    const char *d;

    d = new_dir("infscale", fp8);
    target = "model.layers.1.mlp.experts.3.down_proj.weight_scale_inv";
    rewrite(fp8, d, "model.safetensors", edit_inf_scale, NULL);
    expect_load("Inf block scale", d, DS3_ERR_FORMAT, target, "inf");

    d = new_dir("i32weight", f32);
    target = "model.layers.0.self_attn.kv_b_proj.weight";
    rewrite(f32, d, "model.safetensors", edit_as_i32, NULL);
    expect_load("weight stored as I32", d, DS3_ERR_SHAPE, target, "not a weight dtype");

    d = new_dir("scaleshape", fp8);
    target = "model.layers.0.self_attn.q_a_proj.weight_scale_inv";
    rewrite(fp8, d, "model.safetensors", edit_scale_shape, NULL);
    expect_load("block scales of the wrong shape", d, DS3_ERR_SHAPE, target, "expected F32 [1,2]");

    d = new_dir("noscale", fp8);
    target = "model.layers.2.self_attn.o_proj.weight_scale_inv";
    rewrite(fp8, d, "model.safetensors", edit_drop, NULL);
    expect_load("F8 weight without scales", d, DS3_ERR_MISSING, "model.layers.2.self_attn.o_proj.weight",
                "without its block scales");

    /* One tensor in two shards: ambiguous, so an error naming both files. */
    d = new_dir("twice", f32);
    rewrite(f32, d, "a.safetensors", NULL, NULL);
    rewrite(f32, d, "b.safetensors", NULL, "model.norm.weight");
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", d);
    write_text(p, "{\"weight_map\": {\"model.embed_tokens.weight\": \"a.safetensors\", "
                  "\"model.norm.weight\": \"b.safetensors\"}}");
    expect_load("tensor in two shards", d, DS3_ERR_FORMAT, "'model.norm.weight' appears twice", "a.safetensors");

    /* Index files. */
    const struct {
        const char *what, *text;
        ds3_status st;
        const char *needle;
    } idx[] = {
        {"index not JSON", "{\"weight_map\": {", DS3_ERR_FORMAT, "not valid JSON"},
        {"index without weight_map", "{\"metadata\": {}}", DS3_ERR_FORMAT, "weight_map"},
        {"weight_map not an object", "{\"weight_map\": [\"a.safetensors\"]}", DS3_ERR_FORMAT, "weight_map"},
        {"shard name not a string", "{\"weight_map\": {\"x\": 3}}", DS3_ERR_FORMAT, "not a file name"},
        {"shard name with a slash", "{\"weight_map\": {\"x\": \"../tiny-f32/model.safetensors\"}}",
         DS3_ERR_FORMAT, "plain file name"},
        {"shard name ..", "{\"weight_map\": {\"x\": \"..\"}}", DS3_ERR_FORMAT, "plain file name"},
        {"shard that is not safetensors", "{\"weight_map\": {\"x\": \"config.json\"}}", DS3_ERR_IO, "config.json"},
        {"empty weight_map", "{\"weight_map\": {}}", DS3_ERR_MISSING, "model.embed_tokens.weight"},
    };
    d = new_dir("index", f32);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", d);
    for (size_t i = 0; i < sizeof idx / sizeof idx[0]; i++) {
        write_text(p, idx[i].text);
        expect_load(idx[i].what, d, idx[i].st, "", idx[i].needle);
        if (idx[i].st == DS3_ERR_FORMAT || idx[i].st == DS3_ERR_IO)
            CHECK(strstr(ds3_last_error(), d) != NULL, "%s: message names the directory: %s", idx[i].what,
                  ds3_last_error());
    }

    /* config.json that is not a file, or far too big to be one. */
    d = new_dir("configdir", NULL);
    snprintf(p, sizeof p, "%s/config.json", d);
    mkdir(p, 0755);
    expect_load("config.json is a directory", d, DS3_ERR_IO, "config.json is a directory, not a regular file", NULL);
    d = new_dir("bigconfig", NULL);
    snprintf(p, sizeof p, "%s/config.json", d);
    FILE *f = fopen(p, "w");
    for (int i = 0; i < (17 << 20) / 64; i++) fputs("                                                              \n", f);
    fclose(f);
    expect_load("config.json of 17 MB", d, DS3_ERR_FORMAT, "config.json", "larger than");
}

/* ========================================================================== */
/* Configs (regressions from fuzz_config)                                      */
/* ========================================================================== */

/* The tiny config with top-level fields replaced: "field", "JSON value", …,
 * NULL. */
static void expect_config(const char *what, const char *needle, ...) {
    cJSON *root = cJSON_Parse(ds3_builtin_config_json("tiny"));
    va_list ap;
    va_start(ap, needle);
    for (const char *field; (field = va_arg(ap, const char *));)
        cJSON_ReplaceItemInObjectCaseSensitive(root, field, cJSON_Parse(va_arg(ap, const char *)));
    va_end(ap);
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    ds3_config c;
    ds3_status st = ds3_config_parse(json, "cfg/config.json", &c);
    const char *msg = ds3_last_error();
    CHECK(st == DS3_ERR_CONFIG, "%s: status %s (%s)", what, ds3_status_name(st), msg);
    CHECK(strncmp(msg, "cfg/config.json: ", 17) == 0 && strstr(msg, needle), "%s: message lacks '%s': %s", what,
          needle, msg);
    fprintf(stderr, "   %-34s %s\n", what, msg);
    cJSON_free(json);
}

static void test_config(void) {
    th_section("configs that parse field by field but combine into NaN or overflow");
    expect_config("rope_theta 1 (YaRN divides by ln 1)", "rope_theta", "rope_theta", "1.0", NULL);
    expect_config("rope_theta below 1", "rope_theta", "rope_theta", "0.5", NULL);
    expect_config("YaRN beta_fast 1e-320", "not a finite number", "rope_scaling",
                  "{\"type\": \"yarn\", \"factor\": 4, \"original_max_position_embeddings\": 32, "
                  "\"beta_fast\": 1e-320, \"beta_slow\": 1, \"mscale\": 1.0, \"mscale_all_dim\": 1.0}", NULL);
    expect_config("YaRN mscale_all_dim 1e300", "finite and positive", "rope_scaling",
                  "{\"type\": \"yarn\", \"factor\": 4, \"original_max_position_embeddings\": 32, "
                  "\"beta_fast\": 32, \"beta_slow\": 1, \"mscale\": 1.0, \"mscale_all_dim\": 1e300}", NULL);
    expect_config("heads x head dims > 2^20", "num_attention_heads x", "num_attention_heads", "100000", NULL);
    expect_config("shared experts x width > 2^20", "n_shared_experts x", "n_shared_experts", "1000",
                  "moe_intermediate_size", "2000", NULL);
}

/* ========================================================================== */
/* Runtime arguments                                                           */
/* ========================================================================== */

static void expect_arg(const char *what, ds3_status st, const char *needle) {
    const char *msg = ds3_last_error();
    CHECK(st == DS3_ERR_ARG, "%s: status %s (%s)", what, ds3_status_name(st), msg);
    CHECK(strstr(msg, needle) != NULL, "%s: message lacks '%s': %s", what, needle, msg);
    fprintf(stderr, "   %-34s %s\n", what, msg);
}

static void test_runtime(void) {
    th_section("runtime arguments: contexts beyond the cache, token ids");
    char dir[512];
    snprintf(dir, sizeof dir, "%s/tiny-f32", models);
    ds3_model *m = NULL;
    if (ds3_model_load(dir, &m) != DS3_OK) { CHECK(0, "load %s: %s", dir, ds3_last_error()); return; }
    const int V = ds3_model_vocab_size(m);
    ds3_state *s = NULL;
    CHECK(ds3_state_new(m, 4, DS3_ATTN_ABSORB, &s) == DS3_OK, "state: %s", ds3_last_error());
    if (!s) { ds3_model_free(m); return; }
    int32_t tok[6] = {1, 2, 3, 4, 5, 6};
    ds3_real *lg = calloc((size_t)6 * V, sizeof *lg);

    expect_arg("5 positions in a 4-position state", ds3_forward(s, tok, 5, 0, lg), "exceed the state's 4");
    CHECK(ds3_forward(s, tok, 3, 0, lg) == DS3_OK, "3 positions fit: %s", ds3_last_error());
    expect_arg("decode past the cache", ds3_forward(s, tok, 2, 3, lg), "positions 3..4");
    expect_arg("negative start", ds3_forward(s, tok, 1, -1, lg), "positions -1");
    expect_arg("no tokens", ds3_forward(s, tok, 0, 0, lg), "0 tokens");
    int32_t bad[2] = {1, V};
    expect_arg("token id = vocab", ds3_forward(s, bad, 2, 0, lg), "out of range");
    bad[1] = -1;
    expect_arg("negative token id", ds3_forward(s, bad, 2, 0, lg), "out of range");
    expect_arg("dump longer than the state", ds3_dump_begin(s, 5), "the state holds 1..4");
    expect_arg("dump_write without dump_begin", ds3_dump_write(s, "x.safetensors", NULL), "no dump in progress");
    ds3_state_free(s);

    s = (ds3_state *)&s;
    expect_arg("state of 0 positions", ds3_state_new(m, 0, DS3_ATTN_ABSORB, &s), "max_seq");
    CHECK(s == NULL, "no state on failure");
    /* 2^31-1 positions of KV cache: hundreds of GB, refused, not crashed. */
    ds3_status st = ds3_state_new(m, 0x7fffffff, DS3_ATTN_NAIVE, &s);
    CHECK(st == DS3_ERR_NOMEM && s == NULL, "state of 2^31-1 positions: %s (%s)", ds3_status_name(st),
          ds3_last_error());
    fprintf(stderr, "   %-34s %s\n", "state of 2^31-1 positions", ds3_last_error());
    if (st == DS3_OK) ds3_state_free(s);
    free(lg);
    ds3_model_free(m);
}

/* ========================================================================== */
/* Output files: full disks, unwritable paths                                  */
/* ========================================================================== */

/* The CLI with a file-size limit (0: none; SIGXFSZ ignored, so a write past
 * it fails with EFBIG), through cli_run.h; done() the result. */
static result run_cli(long fsize, const char *const *args) {
    run_opts.fsize = fsize;
    result r = run_in(NULL, 0, args);
    run_opts.fsize = 0;
    return r;
}
#define CLI(fsize, ...) run_cli(fsize, (const char *const[]){__VA_ARGS__, NULL})

static void expect_cli_fail(const char *what, result r, const char *needle) {
    CHECK(r.rc >= 1 && r.rc <= 125, "%s: exit %d, want 1..125: %s", what, r.rc, r.err);
    CHECK(r.rc == 1, "%s: exit %d, want 1 (a runtime error): %s", what, r.rc, r.err);
    CHECK(strncmp(r.err, "ds3: ", 5) == 0 && strstr(r.err, needle), "%s: stderr lacks 'ds3: ... %s': %s", what,
          needle, r.err);
    fprintf(stderr, "   %-34s %s", what, r.err);
}

/* What a failed mkmodel leaves in dir must not load as a model, or load as
 * one run's files only (every shard's "seed" metadata the same). */
static void expect_unmixed(const char *what, const char *dir) {
    ds3_model *m = NULL;
    if (ds3_model_load(dir, &m) != DS3_OK) {
        fprintf(stderr, "   %-34s leaves no loadable model: %s\n", what, ds3_last_error());
        return;
    }
    const char *seed0 = ds3_st_meta(m->files[0], "seed");
    bool same = seed0 != NULL;
    for (int i = 1; i < m->n_files && same; i++) {
        const char *s = ds3_st_meta(m->files[i], "seed");
        same = s && strcmp(s, seed0) == 0;
    }
    CHECK(same, "%s: the directory loads as a model mixing files of two runs", what);
    ds3_model_free(m);
}

static unsigned char *slurp(const char *path, size_t *n);

static void test_output(void) {
    th_section("full disks and unwritable paths leave no file behind");
    char model[512], out[600], p[700];
    snprintf(model, sizeof model, "%s/tiny-f32", models);

    /* The writer, in a child whose files may not exceed 64 kB. */
    const char *d = new_dir("full", NULL);
    snprintf(out, sizeof out, "%s/big.safetensors", d);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        struct rlimit rl = {65536, 65536};
        signal(SIGXFSZ, SIG_IGN);
        setrlimit(RLIMIT_FSIZE, &rl);
        static float big[100000];
        ds3_st_writer *w = ds3_stw_new();
        ds3_stw_add(w, "big", DS3_DT_F32, 1, (int64_t[]){100000}, big);
        ds3_status st = ds3_stw_write(w, out);
        const char *msg = ds3_last_error();
        int ok = st == DS3_ERR_IO && strstr(msg, out) && strstr(msg, "File too large");
        if (!ok) fprintf(stderr, "writer on a full disk: %s: %s\n", ds3_status_name(st), msg);
        ds3_stw_free(w);   /* valgrind checks the child's leaks at _exit too */
        _exit(ok ? 0 : 1);
    }
    int status = 1;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "writer on a full disk: IO error naming the file");
    CHECK(!exists(out) && count_tmp(d) == 0, "writer on a full disk left %s or a .tmp", out);

    if (!cli || access(cli, X_OK) != 0) {
        fprintf(stderr, "-- no CLI at DS3_CLI: skipping the CLI cases\n");
        return;
    }
    result r = CLI(8192, "dump", "-m", model, "--tokens", "1,2,3", "-o", out);
    expect_cli_fail("dump onto a full disk", r, "big.safetensors");
    CHECK(!exists(out) && count_tmp(d) == 0, "dump onto a full disk left a file");

    /* An output path below a regular file. */
    snprintf(p, sizeof p, "%s/file", d);
    write_text(p, "x");
    snprintf(out, sizeof out, "%s/file/x.safetensors", d);
    done(&r);
    r = CLI(0, "dump", "-m", model, "--tokens", "1,2", "-o", out);
    expect_cli_fail("dump below a regular file", r, "/file");
    snprintf(out, sizeof out, "%s/file/m", d);
    done(&r);
    r = CLI(0, "mkmodel", "--config", "tiny", "-o", out);
    expect_cli_fail("mkmodel below a regular file", r, "/file");

    /* mkmodel over an existing model, failing mid-way (a full disk): no .tmp
     * file or directory may remain, and the earlier model is there as it was
     * (the new one is built in a sibling directory, src/io/outfile.c). */
    snprintf(out, sizeof out, "%s/m", d);
    done(&r);
    r = CLI(0, "mkmodel", "--config", "tiny", "--seed", "1", "-o", out);
    CHECK(r.rc == 0, "mkmodel: %s", r.err);
    size_t n_before = 0, n_after = 0;
    snprintf(p, sizeof p, "%s/model.safetensors", out);
    unsigned char *before = slurp(p, &n_before);
    done(&r);
    r = CLI(1 << 20, "mkmodel", "--config", "tiny", "--seed", "2", "-o", out);
    expect_cli_fail("mkmodel onto a full disk", r, "model.safetensors");
    CHECK(count_tmp(out) == 0 && count_tmp(d) == 0, "mkmodel onto a full disk left a .tmp file in %s", d);
    unsigned char *after = slurp(p, &n_after);
    CHECK(before && after && n_before == n_after && memcmp(before, after, n_before) == 0,
          "mkmodel onto a full disk: the earlier model is still there, byte for byte");
    free(before);
    free(after);
    expect_unmixed("mkmodel onto a full disk", out);

    snprintf(out, sizeof out, "%s/sharded", d);
    setenv("DS3_MKMODEL_SHARD_MB", "1", 1);
    done(&r);
    r = CLI(0, "mkmodel", "--config", "tiny", "--seed", "1", "-o", out);
    CHECK(r.rc == 0, "sharded mkmodel: %s", r.err);
    char shard3[1100] = "", inside[1200];
    DIR *dd = opendir(out);
    for (struct dirent *e; dd && (e = readdir(dd));)
        if (strncmp(e->d_name, "model-00003-of-", 15) == 0)
            snprintf(shard3, sizeof shard3, "%s/%s", out, e->d_name);
    if (dd) closedir(dd);
    CHECK(shard3[0] != '\0', "sharded mkmodel wrote no third shard");
    if (shard3[0]) {
        /* the third shard's name is taken by a directory that is not empty:
         * mkmodel replaces the whole directory, so it refuses one holding
         * anything but a model's files before it writes (this once made the
         * rename of shard 3 fail half-way) */
        unlink(shard3);
        mkdir(shard3, 0755);
        snprintf(inside, sizeof inside, "%s/keep", shard3);
        write_text(inside, "x");
        done(&r);
        r = CLI(0, "mkmodel", "--config", "tiny", "--seed", "2", "-o", out);
        expect_cli_fail("a directory at shard 3's name", r, "model-00003-of-");
        CHECK(exists(inside), "the directory at shard 3's name and its file are untouched");
        unlink(inside);
        rmdir(shard3);
        CHECK(count_tmp(out) == 0 && count_tmp(d) == 0, "failed sharded mkmodel left a .tmp file in %s", d);
        expect_unmixed("a directory at shard 3's name", out);
    }
    done(&r);
    unsetenv("DS3_MKMODEL_SHARD_MB");
}

/* ========================================================================== */
/* Every error class through the CLI                                           */
/* ========================================================================== */

/*
 * One case per class of bad input (docs/ROBUSTNESS.md's table), end to end: a
 * broken copy of the micro model (tests/fuzz/micro_model.h: fp8 with block
 * scales, a few kB) or a bad command line, given to
 *     ds3 dump -m DIR --tokens IDS -o OUT
 * Each expects an exit status in 1..125 (1: runtime, 2: usage), stderr
 * starting "ds3: " and naming the file (or option) and what is wrong, and no
 * OUT and no OUT.tmp left behind.
 */

static const char *micro;   /* the intact micro model */

static unsigned char *slurp(const char *path, size_t *n) {
    unsigned char *p = th_read_file(path, n);
    if (!p) { perror(path); exit(1); }
    return p;
}

static void spill(const char *path, const void *p, size_t n) {
    if (micro_write(path, p, n) != 0) { perror(path); exit(1); }
}

/* <tmp>/<name>: a copy of the micro model's config.json and a symlink to its
 * weights, for the caller to break one of them. */
static const char *micro_copy(const char *name) {
    const char *d = new_dir(name, NULL);
    char a[600], b[600];
    size_t n;
    snprintf(a, sizeof a, "%s/config.json", micro);
    unsigned char *cfg = slurp(a, &n);
    snprintf(b, sizeof b, "%s/config.json", d);
    spill(b, cfg, n);
    free(cfg);
    snprintf(a, sizeof a, "%s/model.safetensors", micro);
    snprintf(b, sizeof b, "%s/model.safetensors", d);
    unlink(b);
    if (symlink(a, b) != 0) { perror(b); exit(1); }
    return d;
}

/* Rewrite d/model.safetensors from the micro model's with its header JSON
 * edited (the data section unchanged): returns the header's root for `edit`. */
typedef void (*header_fn)(cJSON *root);

static void edit_header(const char *d, header_fn edit) {
    char p[600];
    size_t n;
    snprintf(p, sizeof p, "%s/model.safetensors", micro);
    unsigned char *f = slurp(p, &n);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | f[i];
    cJSON *root = cJSON_ParseWithLength((const char *)f + 8, (size_t)hlen);
    if (!root) { fprintf(stderr, "edit_header: %s: bad header\n", p); exit(1); }
    edit(root);
    char *js = cJSON_PrintUnformatted(root);
    size_t jl = strlen(js);
    unsigned char *o = malloc(8 + jl + (n - 8 - hlen));
    for (int i = 0; i < 8; i++) o[i] = (unsigned char)((uint64_t)jl >> (8 * i));
    memcpy(o + 8, js, jl);
    memcpy(o + 8 + jl, f + 8 + hlen, n - 8 - hlen);
    snprintf(p, sizeof p, "%s/model.safetensors", d);
    unlink(p);   /* the symlink */
    spill(p, o, 8 + jl + (n - 8 - hlen));
    cJSON_Delete(root);
    cJSON_free(js);
    free(o);
    free(f);
}

/* Rewrite d/config.json with field set to the JSON value (NULL: removed). */
static void edit_config(const char *d, const char *field, const char *value) {
    char p[600];
    size_t n;
    snprintf(p, sizeof p, "%s/config.json", d);
    unsigned char *f = slurp(p, &n);
    cJSON *root = cJSON_Parse((const char *)f);
    if (!root) { fprintf(stderr, "edit_config: %s: not JSON\n", p); exit(1); }
    cJSON_DeleteItemFromObjectCaseSensitive(root, field);
    if (value) cJSON_AddItemToObject(root, field, cJSON_Parse(value));
    char *js = cJSON_Print(root);
    spill(p, js, strlen(js));
    cJSON_Delete(root);
    cJSON_free(js);
    free(f);
}

/* The two tensors of the same shape and dtype the offset cases play with. */
#define TA "model.layers.0.input_layernorm.weight"
#define TB "model.layers.0.post_attention_layernorm.weight"

static cJSON *entry(cJSON *root, const char *name) {
    cJSON *e = cJSON_GetObjectItemCaseSensitive(root, name);
    if (!e) { fprintf(stderr, "micro model has no %s\n", name); exit(1); }
    return e;
}

static void set_offsets(cJSON *root, const char *name, double b, double e) {
    cJSON *o = cJSON_CreateArray();
    cJSON_AddItemToArray(o, cJSON_CreateNumber(b));
    cJSON_AddItemToArray(o, cJSON_CreateNumber(e));
    cJSON_ReplaceItemInObjectCaseSensitive(entry(root, name), "data_offsets", o);
}

static double offset(cJSON *root, const char *name, int i) {
    return cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(entry(root, name), "data_offsets"), i)->valuedouble;
}

static void hdr_overlap(cJSON *r) {   /* TB's bytes start inside TA's */
    double a0 = offset(r, TA, 0), b0 = offset(r, TB, 0), b1 = offset(r, TB, 1);
    set_offsets(r, TB, a0 + 4, a0 + 4 + (b1 - b0));
}
static void hdr_reversed(cJSON *r) { set_offsets(r, TA, offset(r, TA, 1), offset(r, TA, 0)); }
static void hdr_outside(cJSON *r) {   /* shifted 1 MB on: past the end of the file */
    set_offsets(r, TA, offset(r, TA, 0) + 1048576, offset(r, TA, 1) + 1048576);
}
static void set_shape(cJSON *r, const char *shape) {
    cJSON_ReplaceItemInObjectCaseSensitive(entry(r, TA), "shape", cJSON_Parse(shape));
}
static void hdr_shape_bytes(cJSON *r) { set_shape(r, "[9]"); }   /* 8 elements stored */
static void hdr_shape_overflow(cJSON *r) { set_shape(r, "[4294967296, 4294967296, 16]"); }
static void hdr_negative_dim(cJSON *r) { set_shape(r, "[-8]"); }
static void hdr_unknown_dtype(cJSON *r) {
    cJSON_ReplaceItemInObjectCaseSensitive(entry(r, TA), "dtype", cJSON_CreateString("Q4_K"));
}

static bool edit_nan_scale(const char *name, ds3_dtype *dt, int64_t *shape, unsigned char *d, uint64_t n) {
    (void)dt, (void)shape;
    if (strcmp(name, target) == 0 && n >= 4) {
        float nan = NAN;
        memcpy(d, &nan, 4);
    }
    return true;
}

/* Run `ds3 dump -m dir --tokens tokens -o out` (out NULL: dir/out.safetensors)
 * and expect exit status want (1 or 2), "ds3: " with both needles, no output. */
static void expect_class(const char *what, const char *dir, const char *tokens, const char *out, int want,
                         const char *n1, const char *n2) {
    char o[700];
    if (!out) snprintf(o, sizeof o, "%s/out.safetensors", dir);
    else snprintf(o, sizeof o, "%s", out);
    result r = CLI(0, "dump", "-m", dir, "--tokens", tokens, "-o", o);
    CHECK(r.rc >= 1 && r.rc <= 125 && r.rc == want, "%s: exit %d, want %d: %s", what, r.rc, want, r.err);
    CHECK(strncmp(r.err, "ds3: ", 5) == 0, "%s: stderr does not start 'ds3: ': %s", what, r.err);
    CHECK(!n1 || strstr(r.err, n1), "%s: stderr lacks '%s': %s", what, n1, r.err);
    CHECK(!n2 || strstr(r.err, n2), "%s: stderr lacks '%s': %s", what, n2, r.err);
    char tmp[720];
    snprintf(tmp, sizeof tmp, "%s.tmp", o);
    CHECK(!exists(o) && !exists(tmp), "%s: left %s or its .tmp", what, o);
    const char *nl = strchr(r.err, '\n');
    fprintf(stderr, "   %-34s exit %d: %.*s\n", what, r.rc, nl ? (int)(nl - r.err) : (int)strlen(r.err), r.err);
    done(&r);
}

static void test_classes(void) {
    th_section("every error class through the CLI: exit 1..125, the file and the fault named, no output");
    if (!cli || access(cli, X_OK) != 0) {
        fprintf(stderr, "-- no CLI at DS3_CLI: skipping\n");
        return;
    }
    micro = micro_model_make(DS3_WEIGHTS_FP8, 0);
    char st[700], cfg[700], p[700];
    const char *d;
    size_t n;

    /* The intact copy works: every failure below is the one thing broken. */
    d = micro_copy("c-intact");
    result r = CLI(0, "dump", "-m", d, "--tokens", "1,2,3", "-o", "/dev/null/x");
    CHECK(r.rc == 1 && strstr(r.err, "/dev/null"), "control: an unwritable path is refused: %s", r.err);
    snprintf(p, sizeof p, "%s/ok.safetensors", d);
    done(&r);
    r = CLI(0, "dump", "-m", d, "--tokens", "1,2,3", "-o", p);
    CHECK(r.rc == 0 && exists(p), "control: the intact micro model dumps: exit %d: %s", r.rc, r.err);
    unlink(p);
    done(&r);

    /* Container (safetensors) classes. */
    snprintf(p, sizeof p, "%s/model.safetensors", micro);
    unsigned char *file = slurp(p, &n);

    d = micro_copy("c-hlen");
    snprintf(st, sizeof st, "%s/model.safetensors", d);
    unlink(st);
    unsigned char *bad = malloc(n);
    memcpy(bad, file, n);
    uint64_t big = (uint64_t)n + 1000;
    for (int i = 0; i < 8; i++) bad[i] = (unsigned char)(big >> (8 * i));
    spill(st, bad, n);
    expect_class("header length beyond the file", d, "1,2", NULL, 1, st, "runs past the end of the file");

    d = micro_copy("c-trunc");
    snprintf(st, sizeof st, "%s/model.safetensors", d);
    unlink(st);
    spill(st, file, n - 40);   /* the last tensors' bytes cut off */
    expect_class("truncated file", d, "1,2", NULL, 1, st, "file truncated?");
    free(bad);
    free(file);

    static const struct {
        const char *what, *name;
        header_fn edit;
        const char *needle;
    } hdr[] = {
        {"overlapping offsets", "c-overlap", hdr_overlap, "overlap"},
        {"reversed offsets", "c-reversed", hdr_reversed, "are reversed"},
        {"offsets beyond the file", "c-outside", hdr_outside, "run past the end of the data section"},
        {"shape x dtype size mismatch", "c-shapebytes", hdr_shape_bytes, "hold 16 bytes, shape [9]"},
        {"integer overflow in a shape", "c-overflow", hdr_shape_overflow, "byte size overflows 64 bits"},
        {"negative dimension", "c-negdim", hdr_negative_dim, "dimension 0 is -8"},
        {"unknown dtype", "c-dtype", hdr_unknown_dtype, "unknown dtype 'Q4_K'"},
    };
    for (size_t i = 0; i < sizeof hdr / sizeof hdr[0]; i++) {
        d = micro_copy(hdr[i].name);
        edit_header(d, hdr[i].edit);
        snprintf(st, sizeof st, "%s/model.safetensors", d);
        expect_class(hdr[i].what, d, "1,2", NULL, 1, st, hdr[i].needle);
    }

    /* Loader classes. */
    d = micro_copy("c-nanscale");
    snprintf(st, sizeof st, "%s/model.safetensors", d);
    unlink(st);
    target = "model.layers.1.mlp.experts.2.up_proj.weight_scale_inv";
    rewrite(micro, d, "model.safetensors", edit_nan_scale, NULL);
    expect_class("NaN in a block scale", d, "1,2", NULL, 1, target, "nan");

    static const struct {
        const char *what, *name, *field, *value, *needle;
    } conf[] = {
        {"wrong JSON type in config.json", "c-type", "hidden_size", "\"8\"", "hidden_size"},
        {"missing field in config.json", "c-missing", "num_hidden_layers", NULL, "num_hidden_layers"},
        {"absurd layer count", "c-layers", "num_hidden_layers", "1000000", "num_hidden_layers"},
        {"top-k larger than the experts", "c-topk", "num_experts_per_tok", "5", "num_experts_per_tok"},
    };
    for (size_t i = 0; i < sizeof conf / sizeof conf[0]; i++) {
        d = micro_copy(conf[i].name);
        edit_config(d, conf[i].field, conf[i].value);
        snprintf(cfg, sizeof cfg, "%s/config.json", d);
        expect_class(conf[i].what, d, "1,2", NULL, 1, cfg, conf[i].needle);
    }

    d = micro_copy("c-vocab");
    edit_config(d, "vocab_size", "24");
    snprintf(st, sizeof st, "%s/model.safetensors", d);
    expect_class("vocab_size vs the embedding", d, "1,2", NULL, 1, "model.embed_tokens.weight",
                 "expected [24,8]");

    /* An index naming a second shard that is not there. */
    d = micro_copy("c-shard");
    snprintf(p, sizeof p, "%s/model.safetensors", d);
    snprintf(st, sizeof st, "%s/model-00001-of-00002.safetensors", d);
    if (rename(p, st) != 0) { perror(st); exit(1); }
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", d);
    write_text(p, "{\"weight_map\": {\"model.embed_tokens.weight\": \"model-00001-of-00002.safetensors\", "
                  "\"lm_head.weight\": \"model-00002-of-00002.safetensors\"}}");
    expect_class("index naming a missing shard", d, "1,2", NULL, 1, "model-00002-of-00002.safetensors", d);

    /* Command-line classes, against the intact model. */
    d = micro_copy("c-cli");
    expect_class("token id out of range", d, "1,16", NULL, 1, "token 16", "out of range (vocab 16)");
    expect_class("malformed token list", d, "1,,2", NULL, 2, "--tokens", "empty");
    char many[200] = "0";
    for (int i = 1; i < 33; i++) strcat(many, ",1");
    expect_class("context beyond the cache", d, many, NULL, 1, "33 positions", "max_position_embeddings 32");
    snprintf(p, sizeof p, "%s/no-such-dir/out.safetensors", d);
    expect_class("unwritable output path", d, "1,2", p, 1, p, "does not exist");
}

int main(void) {
    models = getenv("DS3_MODELS");
    if (!models || !*models) models = "build/models";
    cli = getenv("DS3_CLI");
    char probe[600];
    snprintf(probe, sizeof probe, "%s/tiny-fp8/config.json", models);
    if (!exists(probe)) {
        fprintf(stderr, "-- %s not found: run make models\n", probe);
        CHECK(0, "models present");
        return th_finish();
    }
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ds3-test-errors.XXXXXX");
    if (!mkdtemp(tmpdir)) { perror("mkdtemp"); return 1; }
    test_checkpoint();
    test_config();
    test_runtime();
    test_output();
    test_classes();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    CHECK(system(cmd) == 0, "cleanup");
    return th_finish();
}

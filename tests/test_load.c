/*
 * test_load.c — a broken checkpoint is an error that names the tensor, the
 * file and what was expected, never a crash or garbage: missing tensor, wrong
 * shape, vocabulary disagreeing with the embedding, truncated file, bad
 * config, missing shard, NaN block scale. Each case is a copy of a synthetic
 * model with one thing broken.
 */
#include "harness.h"
#include "generate/generate.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[256];

static int copy_file(const char *from, const char *to, long limit) {
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    if (!a || !b) { if (a) fclose(a); if (b) fclose(b); return -1; }
    char buf[1 << 16];
    long done = 0;
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, a)) > 0) {
        if (limit >= 0 && done + (long)n > limit) n = (size_t)(limit - done);
        fwrite(buf, 1, n, b);
        done += (long)n;
        if (limit >= 0 && done >= limit) break;
    }
    fclose(a);
    fclose(b);
    return 0;
}

/* A fresh directory <tmp>/<name> holding src's config.json. */
static void make_dir(char *out, size_t n, const char *name, const char *src) {
    snprintf(out, n, "%s/%s", tmpdir, name);
    mkdir(out, 0755);
    char a[1100], b[1100];
    snprintf(a, sizeof a, "%s/config.json", src);
    snprintf(b, sizeof b, "%s/config.json", out);
    copy_file(a, b, -1);
}

/*
 * Rewrite src's model.safetensors into dst: `drop` is left out; `reshape`
 * gets its first dimension halved (and half its data); `nan_scale` gets its
 * first element replaced by NaN.
 */
static void rewrite(const char *src, const char *dst, const char *drop, const char *reshape,
                    const char *nan_scale) {
    char p[1024];
    snprintf(p, sizeof p, "%s/model.safetensors", src);
    ds3_st_file *f = NULL;
    if (ds3_st_open(p, &f) != DS3_OK) { CHECK(0, "open %s: %s", p, ds3_last_error()); return; }
    ds3_st_writer *w = ds3_stw_new();
    void *copy = NULL;
    for (int i = 0; i < f->n; i++) {
        const ds3_st_entry *e = &f->entries[i];
        if (drop && strcmp(e->name, drop) == 0) continue;
        int64_t shape[8];
        memcpy(shape, e->shape, sizeof shape);
        const void *data = e->data;
        if (reshape && strcmp(e->name, reshape) == 0) shape[0] /= 2;
        if (nan_scale && strcmp(e->name, nan_scale) == 0) {
            copy = malloc(e->nbytes);
            memcpy(copy, e->data, e->nbytes);
            float nan = NAN;
            memcpy(copy, &nan, 4);
            data = copy;
        }
        ds3_stw_add(w, e->name, e->dtype, e->ndim, shape, data);
    }
    snprintf(p, sizeof p, "%s/model.safetensors", dst);
    CHECK(ds3_stw_write(w, p) == DS3_OK, "write %s: %s", p, ds3_last_error());
    ds3_stw_free(w);
    free(copy);
    ds3_st_close(f);
}

/* Load dir, expect status `want` and every needle in the message. */
static void expect(const char *what, const char *dir, ds3_status want, const char *n1, const char *n2) {
    ds3_model *m = NULL;
    ds3_status st = ds3_model_load(dir, &m);
    const char *msg = ds3_last_error();
    CHECK(st == want, "%s: status %s, expected %s (%s)", what, ds3_status_name(st), ds3_status_name(want), msg);
    CHECK(m == NULL, "%s: no model returned on failure", what);
    CHECK(!n1 || strstr(msg, n1), "%s: message names '%s': %s", what, n1, msg);
    CHECK(!n2 || strstr(msg, n2), "%s: message names '%s': %s", what, n2, msg);
    fprintf(stderr, "   %s -> %s\n", what, msg);
    ds3_model_free(m);
}

int main(void) {
    const char *models = getenv("DS3_MODELS");
    if (!models) models = "build/models";
    char f32[512], fp8[512], d[768], p[1024], q[1024];
    snprintf(f32, sizeof f32, "%s/tiny-f32", models);
    snprintf(fp8, sizeof fp8, "%s/tiny-fp8", models);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ds3-test-load-XXXXXX");
    if (!mkdtemp(tmpdir)) { perror("mkdtemp"); return 1; }

    ds3_model *m = NULL;
    CHECK(ds3_model_load(f32, &m) == DS3_OK, "the intact model loads: %s", ds3_last_error());
    ds3_model_free(m);

    make_dir(d, sizeof d, "missing", f32);
    rewrite(f32, d, "model.layers.1.mlp.experts.17.up_proj.weight", NULL, NULL);
    expect("missing tensor", d, DS3_ERR_MISSING, "model.layers.1.mlp.experts.17.up_proj.weight", "[24,200]");

    make_dir(d, sizeof d, "shape", f32);
    rewrite(f32, d, NULL, "model.layers.2.mlp.gate.weight", NULL);
    expect("wrong shape", d, DS3_ERR_SHAPE, "model.layers.2.mlp.gate.weight: shape [128,200]", "expected [256,200]");

    make_dir(d, sizeof d, "nanscale", fp8);
    rewrite(fp8, d, NULL, NULL, "model.layers.0.self_attn.o_proj.weight_scale_inv");
    expect("NaN block scale", d, DS3_ERR_FORMAT, "o_proj.weight_scale_inv", "nan");

    make_dir(d, sizeof d, "truncated", f32);
    snprintf(p, sizeof p, "%s/model.safetensors", f32);
    snprintf(q, sizeof q, "%s/model.safetensors", d);
    struct stat sb;
    stat(p, &sb);
    copy_file(p, q, (long)sb.st_size / 2);
    expect("truncated file", d, DS3_ERR_IO, "truncated/model.safetensors", NULL);

    /* config problems */
    snprintf(d, sizeof d, "%s/badconfig", tmpdir);
    mkdir(d, 0755);
    snprintf(q, sizeof q, "%s/config.json", d);
    FILE *cf = fopen(q, "w");
    fputs("{\"hidden_size\": \"abc\", \"vocab_size\": 512}", cf);
    fclose(cf);
    expect("bad config", d, DS3_ERR_CONFIG, "hidden_size", NULL);

    snprintf(d, sizeof d, "%s/noconfig", tmpdir);
    mkdir(d, 0755);
    expect("no config.json", d, DS3_ERR_IO, "config.json", NULL);
    expect("no such directory", "/nonexistent/ds3-model", DS3_ERR_IO, "/nonexistent/ds3-model", NULL);

    /* vocab in config.json disagrees with the embedding */
    make_dir(d, sizeof d, "vocab", f32);
    snprintf(p, sizeof p, "%s/config.json", d);
    ds3_config c;
    CHECK(ds3_config_load(p, &c) == DS3_OK, "config reloads");
    c.vocab_size = 600;
    char *js = ds3_config_to_json(&c);
    cf = fopen(p, "w");
    fputs(js, cf);
    fclose(cf);
    free(js);
    snprintf(p, sizeof p, "%s/model.safetensors", f32);
    snprintf(q, sizeof q, "%s/model.safetensors", d);
    copy_file(p, q, -1);
    expect("vocab mismatch", d, DS3_ERR_SHAPE, "model.embed_tokens.weight: shape [512,200]", "expected [600,200]");

    /* an index naming a shard that is not there */
    make_dir(d, sizeof d, "shard", f32);
    snprintf(q, sizeof q, "%s/model.safetensors.index.json", d);
    cf = fopen(q, "w");
    fputs("{\"metadata\": {}, \"weight_map\": {\"model.norm.weight\": \"model-00002-of-00002.safetensors\"}}", cf);
    fclose(cf);
    expect("missing shard", d, DS3_ERR_IO, "model-00002-of-00002.safetensors", NULL);

    /* leave nothing behind */
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    CHECK(system(cmd) == 0, "cleanup");
    return th_finish();
}

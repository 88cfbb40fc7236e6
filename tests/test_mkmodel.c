/*
 * test_mkmodel.c — the synthetic checkpoints (src/tools/mkmodel.c, docs/MKMODEL.md)
 * and the architecture report (src/tools/info.c).
 *
 * What must hold:
 *   - same (config, dtype, seed) → byte-identical files, also with one thread;
 *     another seed → other bytes;
 *   - every tensor the config implies is there with the docs/MODEL.md §1 name, shape and
 *     dtype, and nothing else; fp8 projections carry [ceil(out/128), ceil(in/128)]
 *     block scales;
 *   - the values follow the documented PRNG (pinned here from an independent
 *     Python evaluation of the formula), bf16 is the rounding of f32, fp8
 *     dequantises to within one e4m3 rounding step of f32, the MTP repeats equal
 *     the main embedding and head, the bias shift is applied;
 *   - small shard limits give shards + an index that maps every tensor to the
 *     shard holding it, with the same tensor bytes as the single file;
 *   - config.json round-trips; `describe v3` prints docs/MODEL.md's 70,272 bytes.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include "generate/generate.h"
#include "harness.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* ========================================================================== */
/* Helpers: temp dirs, files, tensors                                          */
/* ========================================================================== */

#define MAXDIRS 32
static char *g_dirs[MAXDIRS];
static int g_ndirs;

static const char *tmpdir_new(void) {
    const char *base = getenv("TMPDIR");
    char tmpl[512];
    snprintf(tmpl, sizeof tmpl, "%s/ds3-mkmodel-XXXXXX", base && *base ? base : "/tmp");
    char *d = mkdtemp(tmpl);
    if (!d || g_ndirs == MAXDIRS) {
        fprintf(stderr, "cannot create a temp dir\n");
        exit(1);
    }
    g_dirs[g_ndirs] = strdup(d);
    return g_dirs[g_ndirs++];
}

/* Remove a directory of plain files (what mkmodel writes). */
static void rm_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        char p[1024];
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

static char *path2(char *buf, const char *dir, const char *file) {
    snprintf(buf, 1024, "%s/%s", dir, file);
    return buf;
}

static int file_exists(const char *dir, const char *file) {
    char p[1024];
    struct stat sb;
    return stat(path2(p, dir, file), &sb) == 0;
}

/* 1: same bytes, 0: differ, -1: one is missing. */
static int same_file(const char *da, const char *db, const char *file) {
    char pa[1024], pb[1024];
    size_t na, nb;
    unsigned char *a = th_read_file(path2(pa, da, file), &na), *b = th_read_file(path2(pb, db, file), &nb);
    int r = (!a || !b) ? -1 : (na == nb && memcmp(a, b, na) == 0);
    free(a);
    free(b);
    return r;
}

static ds3_status mk(const char *config, ds3_weight_dtype dt, uint64_t seed, double shift, const char *dir) {
    ds3_mkmodel_opts o = {config, dt, seed, shift, 0.0, NULL};
    ds3_status st = ds3_mkmodel(&o, dir);
    if (st) fprintf(stderr, "mkmodel %s: %s\n", config, ds3_last_error());
    return st;
}

static ds3_st_file *open_single(const char *dir) {
    char p[1024];
    ds3_st_file *f = NULL;
    if (ds3_st_open(path2(p, dir, "model.safetensors"), &f)) {
        fprintf(stderr, "st_open %s: %s\n", p, ds3_last_error());
        return NULL;
    }
    return f;
}

static int64_t numel(const ds3_st_entry *e) {
    int64_t n = 1;
    for (int d = 0; d < e->ndim; d++) n *= e->shape[d];
    return n;
}

/* Element i of an entry, decoded (the test host is little-endian, as the file). */
static double elem(const ds3_st_entry *e, int64_t i) {
    const unsigned char *p = e->data;
    switch (e->dtype) {
    case DS3_DT_F32: { float f; memcpy(&f, p + 4 * i, 4); return f; }
    case DS3_DT_BF16: { uint16_t h; memcpy(&h, p + 2 * i, 2); return ds3_bf16_to_f32(h); }
    case DS3_DT_F8_E4M3: return ds3_e4m3_to_f32(p[i]);
    default: return NAN;
    }
}

static int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* ========================================================================== */
/* The expected checkpoint, enumerated independently of mkmodel.c              */
/* ========================================================================== */

typedef enum { PROJ, PLAIN, BIAS } cls;
typedef struct { char name[128]; int ndim; int64_t r, c; cls k; } want;

static want g_want[4096];
static int g_nwant;

static void w_add(cls k, int ndim, int64_t r, int64_t c, const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void w_add(cls k, int ndim, int64_t r, int64_t c, const char *fmt, ...) {
    if (g_nwant == (int)(sizeof g_want / sizeof g_want[0])) return;
    want *w = &g_want[g_nwant++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->name, sizeof w->name, fmt, ap);
    va_end(ap);
    w->ndim = ndim;
    w->r = r;
    w->c = c;
    w->k = k;
}

static void w_layer(const ds3_config *c, int i) {
    const int64_t D = c->hidden_size, H = c->num_attention_heads, Dn = c->qk_nope_head_dim;
    const int64_t Dr = c->qk_rope_head_dim, Dv = c->v_head_dim, C = c->kv_lora_rank, Im = c->moe_intermediate_size;
    w_add(PLAIN, 1, 1, D, "model.layers.%d.input_layernorm.weight", i);
    w_add(PLAIN, 1, 1, D, "model.layers.%d.post_attention_layernorm.weight", i);
    if (c->q_lora_rank) {
        w_add(PROJ, 2, c->q_lora_rank, D, "model.layers.%d.self_attn.q_a_proj.weight", i);
        w_add(PLAIN, 1, 1, c->q_lora_rank, "model.layers.%d.self_attn.q_a_layernorm.weight", i);
        w_add(PROJ, 2, H * (Dn + Dr), c->q_lora_rank, "model.layers.%d.self_attn.q_b_proj.weight", i);
    } else {
        w_add(PROJ, 2, H * (Dn + Dr), D, "model.layers.%d.self_attn.q_proj.weight", i);
    }
    w_add(PROJ, 2, C + Dr, D, "model.layers.%d.self_attn.kv_a_proj_with_mqa.weight", i);
    w_add(PLAIN, 1, 1, C, "model.layers.%d.self_attn.kv_a_layernorm.weight", i);
    w_add(PROJ, 2, H * (Dn + Dv), C, "model.layers.%d.self_attn.kv_b_proj.weight", i);
    w_add(PROJ, 2, D, H * Dv, "model.layers.%d.self_attn.o_proj.weight", i);
    /* docs/MODEL.md §1's rule, written out rather than calling ds3_layer_is_moe. */
    int moe = c->n_routed_experts > 0 && i >= c->first_k_dense_replace && i % c->moe_layer_freq == 0;
    const char *pj[3] = {"gate_proj", "up_proj", "down_proj"};
    if (!moe) {
        for (int p = 0; p < 3; p++)
            w_add(PROJ, 2, p < 2 ? c->intermediate_size : D, p < 2 ? D : c->intermediate_size,
                  "model.layers.%d.mlp.%s.weight", i, pj[p]);
        return;
    }
    w_add(PLAIN, 2, c->n_routed_experts, D, "model.layers.%d.mlp.gate.weight", i);
    if (c->topk_method == DS3_TOPK_NOAUX_TC)
        w_add(BIAS, 1, 1, c->n_routed_experts, "model.layers.%d.mlp.gate.e_score_correction_bias", i);
    for (int j = 0; j < c->n_routed_experts; j++)
        for (int p = 0; p < 3; p++)
            w_add(PROJ, 2, p < 2 ? Im : D, p < 2 ? D : Im, "model.layers.%d.mlp.experts.%d.%s.weight", i, j, pj[p]);
    const int64_t S = (int64_t)c->n_shared_experts * Im;
    if (S)
        for (int p = 0; p < 3; p++)
            w_add(PROJ, 2, p < 2 ? S : D, p < 2 ? D : S, "model.layers.%d.mlp.shared_experts.%s.weight", i, pj[p]);
}

static void w_all(const ds3_config *c) {
    const int64_t D = c->hidden_size, V = c->vocab_size, L = c->num_hidden_layers;
    g_nwant = 0;
    w_add(PLAIN, 2, V, D, "model.embed_tokens.weight");
    for (int i = 0; i < L; i++) w_layer(c, i);
    w_add(PLAIN, 1, 1, D, "model.norm.weight");
    w_add(PLAIN, 2, V, D, "lm_head.weight");
    for (int k = 0; k < c->num_nextn_predict_layers; k++) {
        int i = (int)L + k;
        w_layer(c, i);
        w_add(PLAIN, 1, 1, D, "model.layers.%d.enorm.weight", i);
        w_add(PLAIN, 1, 1, D, "model.layers.%d.hnorm.weight", i);
        w_add(PLAIN, 2, D, 2 * D, "model.layers.%d.eh_proj.weight", i);
        w_add(PLAIN, 1, 1, D, "model.layers.%d.shared_head.norm.weight", i);
        w_add(PLAIN, 2, V, D, "model.layers.%d.shared_head.head.weight", i);
        w_add(PLAIN, 2, V, D, "model.layers.%d.embed_tokens.weight", i);
    }
}

/* Every expected tensor with its shape and dtype; nothing unexpected. */
static void check_layout(const ds3_st_file *f, ds3_weight_dtype wdt, const char *what) {
    int bad = 0, n_expected = 0;
    for (int i = 0; i < g_nwant; i++) {
        const want *w = &g_want[i];
        const ds3_st_entry *e = ds3_st_find(f, w->name);
        ds3_dtype dt = w->k == BIAS || wdt == DS3_WEIGHTS_F32 ? DS3_DT_F32
                       : w->k == PROJ && wdt == DS3_WEIGHTS_FP8 ? DS3_DT_F8_E4M3
                                                                : DS3_DT_BF16;
        n_expected++;
        if (!e) {
            if (bad++ < 5) CHECK(0, "%s: %s missing", what, w->name);
            continue;
        }
        int shape_ok = e->ndim == w->ndim &&
                       (w->ndim == 1 ? e->shape[0] == w->c : e->shape[0] == w->r && e->shape[1] == w->c);
        if (!shape_ok || e->dtype != dt) {
            if (bad++ < 5)
                CHECK(0, "%s: %s ndim %d [%lld,%lld] %s, expected [%lld,%lld] %s", what, w->name, e->ndim,
                      (long long)e->shape[0], (long long)(e->ndim > 1 ? e->shape[1] : 0),
                      ds3_dtype_name(e->dtype), (long long)w->r, (long long)w->c, ds3_dtype_name(dt));
        }
        if (dt == DS3_DT_F8_E4M3) {
            char sn[160];
            if (snprintf(sn, sizeof sn, "%s_scale_inv", w->name) >= (int)sizeof sn) continue;
            const ds3_st_entry *s = ds3_st_find(f, sn);
            n_expected++;
            if (!s || s->dtype != DS3_DT_F32 || s->ndim != 2 || s->shape[0] != cdiv(w->r, 128) ||
                s->shape[1] != cdiv(w->c, 128)) {
                if (bad++ < 5) CHECK(0, "%s: %s missing or wrong shape/dtype", what, sn);
            }
        }
    }
    CHECK(bad == 0, "%s: %d layout problems", what, bad);
    CHECK(f->n == n_expected, "%s: %d tensors in the file, %d expected", what, f->n, n_expected);
}

/* ========================================================================== */
/* Tests                                                                       */
/* ========================================================================== */

static const char *DT_NAME[3] = {"f32", "bf16", "fp8"};

/* The documented PRNG, evaluated independently in Python (docs/MKMODEL.md):
 * the first four elements of two tensors for seed 1. */
static void test_pinned_values(const ds3_st_file *f32) {
    th_section("values follow the documented PRNG (pinned from Python)");
    static const uint32_t emb[4] = {0xbf2f7988, 0xbf2480cc, 0xbd3cd9a0, 0xbd0ef280};
    static const uint32_t nrm[4] = {0x3f7bbc48, 0x3f794d38, 0x3f88d99d, 0x3f864d03};
    const ds3_st_entry *e = ds3_st_find(f32, "model.embed_tokens.weight");
    const ds3_st_entry *n = ds3_st_find(f32, "model.norm.weight");
    CHECK(e && n, "embed / norm present");
    if (!e || !n) return;
    for (int i = 0; i < 4; i++) {
        uint32_t a, b;
        memcpy(&a, (const char *)e->data + 4 * i, 4);
        memcpy(&b, (const char *)n->data + 4 * i, 4);
        CHECK(a == emb[i], "embed_tokens[%d] bits %08x, expected %08x", i, a, emb[i]);
        CHECK(b == nrm[i], "model.norm[%d] bits %08x, expected %08x", i, b, nrm[i]);
    }
}

/* Ranges of the scaling table, over the whole f32 checkpoint. */
static void test_ranges(const ds3_st_file *f) {
    th_section("value ranges follow the scaling table");
    int bad = 0;
    for (int t = 0; t < f->n; t++) {
        const ds3_st_entry *e = &f->entries[t];
        const char *nm = e->name;
        double lo, hi;
        if (strstr(nm, "norm.weight")) { lo = 0.9; hi = 1.1; }
        else if (strstr(nm, "e_score_correction_bias")) { lo = -0.1; hi = 0.1; }
        else if (strstr(nm, "embed_tokens")) { lo = -1; hi = 1; }
        else {
            int64_t in = e->shape[e->ndim - 1];
            hi = sqrt(3.0 / (double)in) * (1 + 1e-6);
            lo = -hi;
        }
        for (int64_t i = 0; i < numel(e); i++) {
            double v = elem(e, i);
            if (!(v >= lo && v <= hi)) {
                if (bad++ < 3) CHECK(0, "%s[%lld] = %g outside [%g, %g]", nm, (long long)i, v, lo, hi);
                break;
            }
        }
    }
    CHECK(bad == 0, "%d tensors outside their range", bad);
}

/* Same tensor in the f32 and bf16/fp8 checkpoints. */
static void test_cross_dtype(const ds3_st_file *f32, const ds3_st_file *b16, const ds3_st_file *f8) {
    th_section("bf16 = round(f32); fp8 within one e4m3 step of f32");
    long bad16 = 0, bad8 = 0, n8 = 0;
    double worst = 0;
    for (int t = 0; t < f32->n; t++) {
        const ds3_st_entry *a = &f32->entries[t];
        const ds3_st_entry *b = ds3_st_find(b16, a->name), *q = ds3_st_find(f8, a->name);
        if (!b || !q) {
            CHECK(0, "%s missing from bf16 or fp8", a->name);
            continue;
        }
        int64_t n = numel(a);
        for (int64_t i = 0; i < n; i++) {
            float x;
            memcpy(&x, (const char *)a->data + 4 * i, 4);
            double want16 = b->dtype == DS3_DT_F32 ? x : ds3_bf16_to_f32(ds3_f32_to_bf16(x));
            if (elem(b, i) != want16) bad16++;
        }
        if (q->dtype == DS3_DT_BF16 || q->dtype == DS3_DT_F32) {
            for (int64_t i = 0; i < n; i++)
                if (elem(q, i) != elem(b, i)) bad16++;
            continue;
        }
        char sn[160];
        snprintf(sn, sizeof sn, "%s_scale_inv", a->name);
        const ds3_st_entry *s = ds3_st_find(f8, sn);
        if (!s) continue;   /* reported by check_layout */
        const int64_t rows = a->shape[0], cols = a->shape[1], ncb = cdiv(cols, 128);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < cols; j++) {
                double scale = elem(s, (r / 128) * ncb + j / 128);
                double w = elem(a, r * cols + j), d = elem(q, r * cols + j) * scale;
                /* half an e4m3 ulp: 2^-4 relative for normals, 2^-10 absolute
                 * (in units of the scale) for subnormals */
                double tol = scale * fmax(fabs(w / scale) * 0x1p-4, 0x1p-10) * (1 + 1e-6);
                double err = fabs(d - w);
                if (err > tol) bad8++;
                if (err / (tol > 0 ? tol : 1) > worst) worst = err / tol;
                n8++;
            }
    }
    CHECK(bad16 == 0, "%ld bf16 values differ from round(f32)", bad16);
    CHECK(bad8 == 0 && n8 > 0, "%ld of %ld fp8 values beyond half an e4m3 step", bad8, n8);
    fprintf(stderr, "   fp8: %ld values, worst error %.3f of half a step\n", n8, worst);
}

/* The block scales are amax/448 per block, so each block's largest |q| is 448. */
static void test_fp8_blocks(const ds3_st_file *f8) {
    th_section("fp8 block scales: amax/448, partial edge blocks");
    int checked = 0, bad = 0;
    for (int t = 0; t < f8->n; t++) {
        const ds3_st_entry *q = &f8->entries[t];
        if (q->dtype != DS3_DT_F8_E4M3) continue;
        char sn[160];
        snprintf(sn, sizeof sn, "%s_scale_inv", q->name);
        const ds3_st_entry *s = ds3_st_find(f8, sn);
        if (!s) continue;
        const int64_t rows = q->shape[0], cols = q->shape[1], nrb = cdiv(rows, 128), ncb = cdiv(cols, 128);
        for (int64_t rb = 0; rb < nrb; rb++)
            for (int64_t cb = 0; cb < ncb; cb++) {
                double amax = 0;
                for (int64_t r = rb * 128; r < rows && r < rb * 128 + 128; r++)
                    for (int64_t j = cb * 128; j < cols && j < cb * 128 + 128; j++)
                        amax = fmax(amax, fabs(elem(q, r * cols + j)));
                if (amax != 448 || !(elem(s, rb * ncb + cb) > 0)) bad++;
                checked++;
            }
    }
    CHECK(bad == 0 && checked > 0, "%d of %d blocks without a 448 element", bad, checked);
}

static void test_mtp_repeats(const ds3_st_file *f, const ds3_config *c) {
    if (c->num_nextn_predict_layers == 0) return;
    th_section("MTP embed_tokens / shared_head.head repeat the main tensors");
    char n1[128], n2[128];
    snprintf(n1, sizeof n1, "model.layers.%d.embed_tokens.weight", c->num_hidden_layers);
    snprintf(n2, sizeof n2, "model.layers.%d.shared_head.head.weight", c->num_hidden_layers);
    const ds3_st_entry *e = ds3_st_find(f, "model.embed_tokens.weight"), *h = ds3_st_find(f, "lm_head.weight");
    const ds3_st_entry *me = ds3_st_find(f, n1), *mh = ds3_st_find(f, n2);
    CHECK(e && h && me && mh, "all four present");
    if (!(e && h && me && mh)) return;
    CHECK(me->nbytes == e->nbytes && !memcmp(me->data, e->data, e->nbytes), "%s == embed_tokens", n1);
    CHECK(mh->nbytes == h->nbytes && !memcmp(mh->data, h->data, h->nbytes), "%s == lm_head", n2);
    CHECK(memcmp(e->data, h->data, e->nbytes < h->nbytes ? e->nbytes : h->nbytes) != 0,
          "embed_tokens and lm_head differ (own streams)");
}

static void test_metadata(const ds3_st_file *f, const char *dt) {
    const char *fmt = ds3_st_meta(f, "format"), *gen = ds3_st_meta(f, "generator");
    const char *cf = ds3_st_meta(f, "config"), *d = ds3_st_meta(f, "dtype"), *sd = ds3_st_meta(f, "seed");
    CHECK(fmt && !strcmp(fmt, "pt"), "metadata format %s", fmt ? fmt : "(none)");
    CHECK(gen && !strcmp(gen, "ds3 mkmodel"), "metadata generator %s", gen ? gen : "(none)");
    CHECK(cf && !strcmp(cf, "tiny"), "metadata config %s", cf ? cf : "(none)");
    CHECK(d && !strcmp(d, dt), "metadata dtype %s, expected %s", d ? d : "(none)", dt);
    CHECK(sd && !strcmp(sd, "1"), "metadata seed %s", sd ? sd : "(none)");
}

static void test_bias_shift(const ds3_st_file *base, const char *dir, const ds3_config *c) {
    th_section("bias_shift is added to every e_score_correction_bias (and nothing else)");
    if (c->topk_method != DS3_TOPK_NOAUX_TC || c->n_routed_experts == 0) return;
    ds3_st_file *f = open_single(dir);
    CHECK(f != NULL, "open shifted model");
    if (!f) return;
    int nbias = 0, bad = 0, other = 0;
    for (int t = 0; t < f->n; t++) {
        const ds3_st_entry *e = &f->entries[t], *b = ds3_st_find(base, e->name);
        if (!b) { bad++; continue; }
        if (!strstr(e->name, "e_score_correction_bias")) {
            if (e->nbytes != b->nbytes || memcmp(e->data, b->data, e->nbytes)) other++;
            continue;
        }
        nbias++;
        CHECK(e->dtype == DS3_DT_F32, "%s is F32", e->name);
        for (int64_t i = 0; i < numel(e); i++) {
            double d = elem(e, i) - elem(b, i);
            if (fabs(d + 4.0) > 1e-6 || elem(e, i) > -3.9 || elem(e, i) < -4.1) bad++;
        }
    }
    CHECK(nbias > 0 && bad == 0, "%d bias tensors, %d values not shifted by -4", nbias, bad);
    CHECK(other == 0, "%d other tensors changed with the bias shift", other);
    ds3_st_close(f);
}

static void test_config_roundtrip(const char *dir, const ds3_config *c) {
    th_section("config.json round-trips through ds3_config_load");
    char p[1024];
    ds3_config back;
    ds3_status st = ds3_config_load(path2(p, dir, "config.json"), &back);
    CHECK(st == DS3_OK, "ds3_config_load: %s", ds3_last_error());
    if (st) return;
    char *a = ds3_config_to_json(c), *b = ds3_config_to_json(&back);
    CHECK(a && b && !strcmp(a, b), "config differs after the round trip");
    CHECK(back.hidden_size == c->hidden_size && back.num_hidden_layers == c->num_hidden_layers &&
          back.n_routed_experts == c->n_routed_experts && back.q_lora_rank == c->q_lora_rank &&
          back.num_nextn_predict_layers == c->num_nextn_predict_layers,
          "key fields differ after the round trip");
    free(a);
    free(b);
}

/* --dtype fp8 writes DeepSeek-V3's quantization_config (other tools find
 * the block scales by it); f32/bf16 do not; it survives a load and a rewrite. */
static void test_quantization_config(const char *const dirs[3]) {
    th_section("quantization_config: written for fp8 only, as DeepSeek-V3's release has it");
    for (int d = 0; d < 3; d++) {
        char p[1024];
        FILE *fp = fopen(path2(p, dirs[d], "config.json"), "rb");
        char buf[8192] = {0};
        size_t n = fp ? fread(buf, 1, sizeof buf - 1, fp) : 0;
        if (fp) fclose(fp);
        bool has = strstr(buf, "\"quantization_config\"") != NULL;
        CHECK(n > 0 && has == (d == DS3_WEIGHTS_FP8), "%s: quantization_config %s", DT_NAME[d],
              d == DS3_WEIGHTS_FP8 ? "present" : "absent");
        if (d == DS3_WEIGHTS_FP8)
            CHECK(strstr(buf, "\"quant_method\": \"fp8\"") && strstr(buf, "\"fmt\": \"e4m3\"") &&
                      strstr(buf, "\"activation_scheme\": \"dynamic\"") &&
                      strstr(buf, "\"weight_block_size\": [\n      128,\n      128\n    ]"),
                  "fp8: quant_method fp8, fmt e4m3, weight_block_size [128, 128], activation_scheme dynamic");
        ds3_config back;
        CHECK(ds3_config_load(p, &back) == DS3_OK && back.fp8_block_quant == (d == DS3_WEIGHTS_FP8),
              "%s: read back as %s", DT_NAME[d], d == DS3_WEIGHTS_FP8 ? "fp8 block-quantised" : "not quantised");
    }
}

/* A tiny shard limit: several shards + an index naming the shard of every
 * tensor; each tensor's bytes equal the single-file checkpoint's. */
static void test_shards(const ds3_st_file *single) {
    th_section("sharding: index + shards, same tensors as the single file");
    const char *dir = tmpdir_new();
    setenv("DS3_MKMODEL_SHARD_MB", "1", 1);
    ds3_status st = mk("tiny", DS3_WEIGHTS_FP8, 1, 0.0, dir);
    unsetenv("DS3_MKMODEL_SHARD_MB");
    CHECK(st == DS3_OK, "mkmodel sharded");
    if (st) return;
    CHECK(!file_exists(dir, "model.safetensors"), "no model.safetensors beside the shards");
    char p[1024];
    size_t n;
    char *text = (char *)th_read_file(path2(p, dir, "model.safetensors.index.json"), &n);
    CHECK(text != NULL, "index written");
    if (!text) return;
    cJSON *root = cJSON_Parse(text);
    free(text);
    CHECK(root != NULL, "index is valid JSON");
    if (!root) return;
    cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    cJSON *meta = cJSON_GetObjectItemCaseSensitive(root, "metadata");
    cJSON *ts = meta ? cJSON_GetObjectItemCaseSensitive(meta, "total_size") : NULL;
    CHECK(cJSON_IsObject(map) && cJSON_IsNumber(ts), "weight_map and metadata.total_size present");

    /* Open every shard once. */
    ds3_st_file *files[256];
    char names[256][64];
    int nfiles = 0, bad_map = 0, bad_bytes = 0, mapped = 0;
    uint64_t total = 0;
    for (cJSON *it = map ? map->child : NULL; it; it = it->next) {
        const char *fn = cJSON_GetStringValue(it);
        if (!fn) { bad_map++; continue; }
        int k;
        for (k = 0; k < nfiles; k++)
            if (!strcmp(names[k], fn)) break;
        if (k == nfiles && nfiles < 256) {
            snprintf(names[nfiles], sizeof names[0], "%s", fn);
            files[nfiles] = NULL;
            if (ds3_st_open(path2(p, dir, fn), &files[nfiles])) {
                CHECK(0, "shard %s (for %s) does not open: %s", fn, it->string, ds3_last_error());
                bad_map++;
                continue;
            }
            nfiles++;
        }
        if (k >= nfiles) continue;
        const ds3_st_entry *e = ds3_st_find(files[k], it->string), *s = ds3_st_find(single, it->string);
        if (!e || !s) { bad_map++; continue; }
        if (e->nbytes != s->nbytes || memcmp(e->data, s->data, e->nbytes)) bad_bytes++;
        mapped++;
    }
    int in_files = 0;
    for (int k = 0; k < nfiles; k++) {
        in_files += files[k]->n;
        for (int t = 0; t < files[k]->n; t++) total += files[k]->entries[t].nbytes;
        char want_name[64];
        snprintf(want_name, sizeof want_name, "model-%05d-of-%05d.safetensors", k + 1, nfiles);
        CHECK(!strcmp(names[k], want_name), "shard %d is %s, expected %s", k, names[k], want_name);
    }
    fprintf(stderr, "   %d shards, %d tensors mapped\n", nfiles, mapped);
    CHECK(nfiles >= 3, "only %d shards with a 1 MiB limit", nfiles);
    CHECK(bad_map == 0, "%d index entries not found in their shard", bad_map);
    CHECK(bad_bytes == 0, "%d tensors differ from the single-file checkpoint", bad_bytes);
    CHECK(mapped == single->n && in_files == single->n, "%d mapped, %d in shards, %d in the single file", mapped,
          in_files, single->n);
    CHECK(ts && (uint64_t)ts->valuedouble == total, "total_size %.0f, shards hold %llu", ts ? ts->valuedouble : -1.0,
          (unsigned long long)total);
    for (int k = 0; k < nfiles; k++) ds3_st_close(files[k]);
    cJSON_Delete(root);

    /* A shard-less rewrite into the same directory leaves one checkpoint. */
    st = mk("tiny", DS3_WEIGHTS_FP8, 1, 0.0, dir);
    CHECK(st == DS3_OK && file_exists(dir, "model.safetensors") && !file_exists(dir, "model.safetensors.index.json") &&
              !file_exists(dir, "model-00001-of-00003.safetensors") &&
              !file_exists(dir, names[0]),
          "stale shards / index removed after an unsharded rewrite");
}

static char *capture_describe(const char *name) {
    FILE *f = tmpfile();
    if (!f) return NULL;
    ds3_status st = ds3_config_describe(name, f);
    CHECK(st == DS3_OK, "describe %s: %s", name, ds3_last_error());
    long n = ftell(f);
    rewind(f);
    char *s = calloc((size_t)n + 1, 1);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) s[0] = 0;
    fclose(f);
    return s;
}

static void test_describe(void) {
    th_section("describe: V3 sizes from docs/MODEL.md §7");
    char *s = capture_describe("v3");
    CHECK(s && (strstr(s, "70,272") || strstr(s, "70272")), "v3 describe lacks the 70,272 bytes/token");
    /* 671B total main model, ~37B active (DeepSeek-V3 tech report). */
    CHECK(s && strstr(s, "671.03 B"), "v3 describe lacks 671.03 B parameters");
    CHECK(s && strstr(s, "0.13523378"), "v3 describe lacks the softmax scale 0.13523378");
    if (s && getenv("DS3_TEST_VERBOSE")) fputs(s, stderr);
    free(s);
    s = capture_describe("tiny");
    CHECK(s && strstr(s, "KV cache"), "tiny describe");
    free(s);
    FILE *f = tmpfile();
    CHECK(f && ds3_config_describe("/nonexistent/config.json", f) != DS3_OK, "describe of a missing file fails");
    if (f) fclose(f);
}

static void test_model_describe(const char *dir) {
    th_section("describe a loaded model: files and bytes per dtype");
    ds3_model *m = NULL;
    ds3_status st = ds3_model_load(dir, &m);
    CHECK(st == DS3_OK, "load %s: %s", dir, ds3_last_error());
    if (st) return;
    FILE *f = tmpfile();
    ds3_model_describe(m, f);
    long n = ftell(f);
    rewind(f);
    char *s = calloc((size_t)n + 1, 1);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) s[0] = 0;
    fclose(f);
    CHECK(s && strstr(s, "F8_E4M3") && strstr(s, "BF16") && strstr(s, "1 safetensors"),
          "model describe lists dtypes and files");
    free(s);
    ds3_model_free(m);
}

/* Entries of dir whose name ends in ".tmp" (a temporary left behind). */
static int count_tmp_in(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) {
        size_t l = strlen(e->d_name);
        n += l > 4 && strcmp(e->d_name + l - 4, ".tmp") == 0;
    }
    if (d) closedir(d);
    return n;
}

/* The target is built in a sibling and replaces a directory whole, so only a
 * new or empty directory or an earlier model may be written over. seed1: a
 * tiny f32 seed-1 model; seed2: seed 2's. */
static void test_replace(const char *seed1, const char *seed2) {
    th_section("what mkmodel writes over: a new, empty or model directory, as a whole");
    const char *base = tmpdir_new();
    char x[512], p[1024], q[1024];
    snprintf(x, sizeof x, "%.500s/m", base);
    CHECK(mk("tiny", DS3_WEIGHTS_F32, 1, 0.0, x) == DS3_OK && same_file(x, seed1, "model.safetensors") == 1,
          "into a new directory");
    CHECK(mk("tiny", DS3_WEIGHTS_F32, 2, 0.0, x) == DS3_OK && same_file(x, seed2, "model.safetensors") == 1,
          "over a model: replaced by the new one");
    /* a file that is not a model's: refused, nothing touched */
    FILE *f = fopen(path2(p, x, "notes.txt"), "w");
    if (f) fclose(f);
    ds3_status st = mk("tiny", DS3_WEIGHTS_F32, 1, 0.0, x);
    CHECK(st == DS3_ERR_IO && strstr(ds3_last_error(), "notes.txt") && strstr(ds3_last_error(), "not one of a model"),
          "a directory holding notes.txt is refused: %s", ds3_last_error());
    CHECK(file_exists(x, "notes.txt") && same_file(x, seed2, "model.safetensors") == 1,
          "and left as it was");
    unlink(path2(p, x, "notes.txt"));
    /* the config read from the directory it replaces */
    st = mk(path2(q, x, "config.json"), DS3_WEIGHTS_F32, 1, 0.0, x);
    ds3_model *m = NULL;
    /* (the shard's metadata names the config as given: not seed1's bytes) */
    CHECK(st == DS3_OK && same_file(x, seed2, "model.safetensors") == 0 && same_file(x, seed1, "config.json") == 1 &&
              ds3_model_load(x, &m) == DS3_OK,
          "--config DIR/config.json -o DIR: %s", ds3_last_error());
    ds3_model_free(m);
    /* through a symbolic link: the directory it names is replaced, the link kept */
    snprintf(p, sizeof p, "%s/link", base);
    CHECK(symlink("m", p) == 0, "symlink");
    st = mk("tiny", DS3_WEIGHTS_F32, 2, 0.0, p);
    struct stat sb;
    CHECK(st == DS3_OK && lstat(p, &sb) == 0 && S_ISLNK(sb.st_mode) && same_file(x, seed2, "model.safetensors") == 1,
          "-o LINK: the linked directory holds the new model, the link is a link: %s", ds3_last_error());
    unlink(p);
    /* an empty directory; a file where the directory should be */
    snprintf(p, sizeof p, "%s/empty", base);
    mkdir(p, 0755);
    CHECK(mk("tiny", DS3_WEIGHTS_F32, 1, 0.0, p) == DS3_OK && same_file(p, seed1, "model.safetensors") == 1,
          "into an empty directory");
    rm_dir(p);
    snprintf(p, sizeof p, "%s/file", base);
    f = fopen(p, "w");
    if (f) fclose(f);
    st = mk("tiny", DS3_WEIGHTS_F32, 1, 0.0, p);
    CHECK(st == DS3_ERR_IO && strstr(ds3_last_error(), "not a directory"), "a file as the output: %s",
          ds3_last_error());
    unlink(p);
    CHECK(count_tmp_in(base) == 0, "no temporary left beside the model");
    rm_dir(x);
}

int main(void) {
    const char *cfg_json = ds3_builtin_config_json("tiny");
    ds3_config c;
    CHECK(cfg_json && ds3_config_parse(cfg_json, "tiny", &c) == DS3_OK, "built-in tiny parses");
    if (!cfg_json) return th_finish();
    w_all(&c);

    const char *dir1[3], *dir2[3];
    th_section("determinism: two runs, same seed, byte-identical files");
    for (int d = 0; d < 3; d++) {
        dir1[d] = tmpdir_new();
        dir2[d] = tmpdir_new();
        CHECK(mk("tiny", (ds3_weight_dtype)d, 1, 0.0, dir1[d]) == DS3_OK, "mkmodel %s #1", DT_NAME[d]);
#ifdef _OPENMP
        /* The second run on one thread: the bytes must not depend on it. */
        int nt = omp_get_max_threads();
        omp_set_num_threads(1);
#endif
        CHECK(mk("tiny", (ds3_weight_dtype)d, 1, 0.0, dir2[d]) == DS3_OK, "mkmodel %s #2", DT_NAME[d]);
#ifdef _OPENMP
        omp_set_num_threads(nt);
#endif
        CHECK(same_file(dir1[d], dir2[d], "model.safetensors") == 1, "%s: model.safetensors differs", DT_NAME[d]);
        CHECK(same_file(dir1[d], dir2[d], "config.json") == 1, "%s: config.json differs", DT_NAME[d]);
        CHECK(!file_exists(dir1[d], "model.safetensors.index.json"), "%s: no index for one file", DT_NAME[d]);
    }
    const char *other = tmpdir_new();
    CHECK(mk("tiny", DS3_WEIGHTS_F32, 2, 0.0, other) == DS3_OK, "mkmodel seed 2");
    CHECK(same_file(dir1[0], other, "model.safetensors") == 0, "seed 2 gives the same bytes as seed 1");
    CHECK(same_file(dir1[0], other, "config.json") == 1, "config.json depends on the seed");

    /* mkdir -p */
    char deep[1024];
    snprintf(deep, sizeof deep, "%s/a/b", other);
    CHECK(mk("tiny", DS3_WEIGHTS_BF16, 1, 0.0, deep) == DS3_OK && same_file(deep, dir1[1], "model.safetensors") == 1,
          "nested output directory created, same bytes");
    rm_dir(deep);
    snprintf(deep, sizeof deep, "%s/a", other);
    rm_dir(deep);
    test_replace(dir1[0], other);
    test_config_roundtrip(dir1[0], &c);
    ds3_config c8 = c;
    c8.fp8_block_quant = true;  /* what --dtype fp8 writes */
    test_config_roundtrip(dir1[2], &c8);
    test_quantization_config(dir1);
    ds3_st_file *f[3] = {NULL, NULL, NULL};
    for (int d = 0; d < 3; d++) {
        f[d] = open_single(dir1[d]);
        CHECK(f[d] != NULL, "open %s", DT_NAME[d]);
    }
    if (f[0] && f[1] && f[2]) {
        th_section("layout: names, shapes, dtypes (%d tensors expected)", g_nwant);
        for (int d = 0; d < 3; d++) {
            check_layout(f[d], (ds3_weight_dtype)d, DT_NAME[d]);
            test_metadata(f[d], DT_NAME[d]);
        }
        test_pinned_values(f[0]);
        test_ranges(f[0]);
        test_cross_dtype(f[0], f[1], f[2]);
        test_fp8_blocks(f[2]);
        test_mtp_repeats(f[0], &c);
        test_mtp_repeats(f[2], &c);

        const char *shifted = tmpdir_new();
        CHECK(mk("tiny", DS3_WEIGHTS_F32, 1, -4.0, shifted) == DS3_OK, "mkmodel bias_shift -4");
        test_bias_shift(f[0], shifted, &c);
        test_shards(f[2]);
    }
    test_config_roundtrip(dir1[0], &c);

    /* ds3_mkmodel_estimate (mkmodel's free-space check): the size written,
     * within the 256 bytes per tensor it allows for the header, never below. */
    th_section("estimate: the bytes mkmodel writes");
    for (int d = 0; d < 3; d++) {
        ds3_mkmodel_opts eo = {"tiny", (ds3_weight_dtype)d, 1, 0.0, 0.0, NULL};
        uint64_t est = 0;
        int vocab = 0;
        char p[1100];
        snprintf(p, sizeof p, "%s/model.safetensors", dir1[d]);
        struct stat sb;
        CHECK(ds3_mkmodel_estimate(&eo, &est, &vocab) == DS3_OK && stat(p, &sb) == 0, "estimate %s", DT_NAME[d]);
        CHECK(vocab == c.vocab_size, "estimate %s: vocab %d, want %d", DT_NAME[d], vocab, c.vocab_size);
        CHECK(est >= (uint64_t)sb.st_size && est - (uint64_t)sb.st_size <= 256u * (uint64_t)g_nwant,
              "estimate %s: %llu bytes for a %lld-byte file (%d tensors)", DT_NAME[d], (unsigned long long)est,
              (long long)sb.st_size, g_nwant);
    }
    ds3_mkmodel_opts v3o = {"v3", DS3_WEIGHTS_FP8, 0, 0.0, 0.0, NULL};
    uint64_t v3b = 0;
    int v3v = 0;
    /* V3 in fp8: 671 B main-model parameters (docs/MODEL.md) and the MTP layer, nearly all one byte each, plus
     * BF16 embeddings, heads and norms: 680-700 GB. */
    CHECK(ds3_mkmodel_estimate(&v3o, &v3b, &v3v) == DS3_OK && v3b > 680e9 && v3b < 700e9 && v3v == 129280,
          "estimate v3 fp8: %llu bytes, vocab %d", (unsigned long long)v3b, v3v);

    /* Errors come back as statuses. */
    ds3_mkmodel_opts bad = {"no-such-config", DS3_WEIGHTS_F32, 1, 0.0, 0.0, NULL};
    CHECK(ds3_mkmodel(&bad, other) != DS3_OK, "unknown config rejected");
    CHECK(ds3_mkmodel(NULL, other) == DS3_ERR_ARG, "NULL opts rejected");

    test_describe();
    test_model_describe(dir1[2]);

    for (int d = 0; d < 3; d++) ds3_st_close(f[d]);
    for (int i = 0; i < g_ndirs; i++) {
        rm_dir(g_dirs[i]);
        free(g_dirs[i]);
    }
    return th_finish();
}

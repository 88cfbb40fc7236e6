/*
 * loader.c — binds a Hugging Face model directory to the weight structs
 * (docs/MODEL.md §1), with no conversion step:
 *
 *   DIR/config.json
 *   DIR/model.safetensors                  or
 *   DIR/model.safetensors.index.json  +  the shards its weight_map names
 *
 * Every file is mmap'd (safetensors.c); a ds3_tensor is a view into the
 * mapping, kept in its checkpoint dtype. Every tensor the config implies is
 * looked up by name and its shape checked against the config, so a wrong
 * checkpoint fails here, with the tensor's name, the shape found and the shape
 * expected, rather than as garbage logits later. Tensors the config does not
 * imply are ignored. Norm vectors are small and read on every token, so they
 * are dequantised once into the scalar type. ds3_model_prepare_decode gives a
 * BF16 lm_head a copy with its rows interleaved four at a time for decode.
 */
#define _DEFAULT_SOURCE   /* madvise */
#include "model/model.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ========================================================================== */
/* Allocations owned by the model                                              */
/* ========================================================================== */

typedef struct owned_block {
    struct owned_block *next;
    max_align_t data[];
} owned_block;

/* Zeroed memory freed with the model. */
static void *model_alloc(ds3_model *m, size_t bytes) {
    owned_block *b = ds3_calloc(1, sizeof(owned_block) + bytes);
    if (!b) return NULL;
    b->next = m->owned;
    m->owned = b;
    return b->data;
}

/* ========================================================================== */
/* Name lookup over all shards: open addressing on FNV-1a                      */
/* ========================================================================== */

typedef struct {
    ds3_model *m;
    const ds3_st_entry **slots;   /* [cap] */
    const char **slot_file;       /* [cap] path of the file holding each entry */
    size_t cap;
    bool elsewhere;               /* binding another process's expert: shapes only, its pages untouched */
} loader;

static uint64_t fnv1a(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static ds3_status index_build(loader *ld) {
    size_t n = 0;
    for (int f = 0; f < ld->m->n_files; f++) n += ld->m->files[f]->n;
    ld->cap = 16;
    while (ld->cap < 2 * n) ld->cap *= 2;
    ld->slots = ds3_calloc(ld->cap, sizeof *ld->slots);
    ld->slot_file = ds3_calloc(ld->cap, sizeof *ld->slot_file);
    if (!ld->slots || !ld->slot_file) return DS3_ERR_NOMEM;
    for (int f = 0; f < ld->m->n_files; f++) {
        const ds3_st_file *sf = ld->m->files[f];
        for (int i = 0; i < sf->n; i++) {
            size_t h = fnv1a(sf->entries[i].name) & (ld->cap - 1);
            while (ld->slots[h]) {
                if (strcmp(ld->slots[h]->name, sf->entries[i].name) == 0)
                    return ds3_fail(DS3_ERR_FORMAT, "%s: tensor '%s' appears twice (also in %s)",
                                    sf->path, sf->entries[i].name, ld->slot_file[h]);
                h = (h + 1) & (ld->cap - 1);
            }
            ld->slots[h] = &sf->entries[i];
            ld->slot_file[h] = sf->path;
        }
    }
    return DS3_OK;
}

static const ds3_st_entry *lookup(const loader *ld, const char *name, const char **file) {
    size_t h = fnv1a(name) & (ld->cap - 1);
    while (ld->slots[h]) {
        if (strcmp(ld->slots[h]->name, name) == 0) {
            if (file) *file = ld->slot_file[h];
            return ld->slots[h];
        }
        h = (h + 1) & (ld->cap - 1);
    }
    return NULL;
}

/* ========================================================================== */
/* Binding one tensor                                                          */
/* ========================================================================== */

static void shape_str(char *buf, size_t n, const int64_t *shape, int ndim) {
    size_t k = 0;
    k += snprintf(buf + k, n - k, "[");
    for (int i = 0; i < ndim && k < n; i++)
        k += snprintf(buf + k, n - k, "%s%lld", i ? "," : "", (long long)shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

/*
 * Bind `name` with expected shape [rows, cols] (cols == 0: a vector [rows]).
 * The name is copied into the model so messages can name it later.
 */
static ds3_status bind(loader *ld, ds3_tensor *t, const char *name, int64_t rows, int64_t cols) {
    int ndim = cols ? 2 : 1;
    int64_t want[2] = {rows, cols};
    char ws[64], gs[64];
    shape_str(ws, sizeof ws, want, ndim);

    const char *file = NULL;
    const ds3_st_entry *e = lookup(ld, name, &file);
    if (!e)
        return ds3_fail(DS3_ERR_MISSING, "%s: tensor missing from the checkpoint in %s (expected shape %s)",
                        name, ld->m->dir, ws);
    shape_str(gs, sizeof gs, e->shape, e->ndim);
    if (e->ndim != ndim || e->shape[0] != rows || (ndim == 2 && e->shape[1] != cols))
        return ds3_fail(DS3_ERR_SHAPE, "%s: shape %s, expected %s (in %s)", name, gs, ws, file);
    if (e->dtype != DS3_DT_F32 && e->dtype != DS3_DT_BF16 && e->dtype != DS3_DT_F16 &&
        e->dtype != DS3_DT_F8_E4M3 && e->dtype != DS3_DT_F64)
        return ds3_fail(DS3_ERR_SHAPE, "%s: dtype %s is not a weight dtype (F32, F64, BF16, F16, F8_E4M3) (in %s)",
                        name, ds3_dtype_name(e->dtype), file);

    size_t nl = strlen(name) + 1;
    char *own = model_alloc(ld->m, nl);
    if (!own) return DS3_ERR_NOMEM;
    memcpy(own, name, nl);
    t->name = own;
    t->dtype = e->dtype;
    t->rows = ndim == 2 ? rows : 1;
    t->cols = ndim == 2 ? cols : rows;
    t->data = e->data;
    t->scale_inv = NULL;
    t->fp8_seen = NULL;

    if (e->dtype == DS3_DT_F8_E4M3) {
        /* FP8 weights carry one F32 scale per 128×128 block: "<name>_scale_inv". */
        char sname[512];
        snprintf(sname, sizeof sname, "%s_scale_inv", name);
        int64_t sw[2] = {(t->rows + DS3_FP8_BLOCK - 1) / DS3_FP8_BLOCK,
                         (t->cols + DS3_FP8_BLOCK - 1) / DS3_FP8_BLOCK};
        char sws[64], sgs[64];
        shape_str(sws, sizeof sws, sw, 2);
        const ds3_st_entry *se = lookup(ld, sname, &file);
        if (!se)
            return ds3_fail(DS3_ERR_MISSING, "%s: F8_E4M3 weight without its block scales %s (expected F32 %s)",
                            name, sname, sws);
        shape_str(sgs, sizeof sgs, se->shape, se->ndim);
        if (se->dtype != DS3_DT_F32 || se->ndim != 2 || se->shape[0] != sw[0] || se->shape[1] != sw[1])
            return ds3_fail(DS3_ERR_SHAPE, "%s: %s %s, expected F32 %s (in %s)", sname,
                            ds3_dtype_name(se->dtype), sgs, sws, file);
        /* A NaN or Inf scale would silently poison every value of its block.
         * Another process's expert is checked there: reading its scales here
         * would fault in pages this process never needs (dist.c). */
        for (int64_t i = 0; i < (ld->elsewhere ? 0 : sw[0] * sw[1]); i++) {
            float v;
            memcpy(&v, (const unsigned char *)se->data + 4 * i, 4);
            if (!isfinite(v))
                return ds3_fail(DS3_ERR_FORMAT, "%s: block scale [%lld][%lld] is %g (in %s)", sname,
                                (long long)(i / sw[1]), (long long)(i % sw[1]), (double)v, file);
        }
        t->scale_inv = se->data;
        /* what the kernels learn of each block (kernels.h): zeroed = not seen */
        t->fp8_seen = model_alloc(ld->m, (size_t)(sw[0] * sw[1]));
        if (!t->fp8_seen) return DS3_ERR_NOMEM;
    }
    return DS3_OK;
}

/* Bind a vector [n] and dequantise it into a model-owned array. */
static ds3_status bind_vec(loader *ld, ds3_real **out, const char *name, int64_t n) {
    ds3_tensor t;
    ds3_status st = bind(ld, &t, name, n, 0);
    if (st) return st;
    *out = model_alloc(ld->m, (size_t)n * sizeof(ds3_real));
    if (!*out) return DS3_ERR_NOMEM;
    ds3_tensor_rows(*out, &t, 0, 1);
    return DS3_OK;
}

static bool has(const loader *ld, const char *name) { return lookup(ld, name, NULL) != NULL; }

#define TRY(x)                     \
    do {                           \
        ds3_status st_ = (x);      \
        if (st_) return st_;       \
    } while (0)

static ds3_status bind_ffn(loader *ld, ds3_ffn *f, const char *prefix, int64_t D, int64_t W) {
    char n[512];
    snprintf(n, sizeof n, "%s.gate_proj.weight", prefix);
    TRY(bind(ld, &f->gate_proj, n, W, D));
    snprintf(n, sizeof n, "%s.up_proj.weight", prefix);
    TRY(bind(ld, &f->up_proj, n, W, D));
    snprintf(n, sizeof n, "%s.down_proj.weight", prefix);
    TRY(bind(ld, &f->down_proj, n, D, W));
    return DS3_OK;
}

/* One decoder layer model.layers.<i>.*, dense or MoE by docs/MODEL.md §1's rule. */
static ds3_status bind_layer(loader *ld, ds3_layer *l, int i) {
    const ds3_config *c = &ld->m->cfg;
    const int64_t D = c->hidden_size, H = c->num_attention_heads, Rq = c->q_lora_rank,
                  C = c->kv_lora_rank, Dn = c->qk_nope_head_dim, Dr = c->qk_rope_head_dim,
                  Dv = c->v_head_dim, E = c->n_routed_experts, Im = c->moe_intermediate_size;
    char p[256], n[512];
    snprintf(p, sizeof p, "model.layers.%d", i);
#define NAME(fmt) (snprintf(n, sizeof n, "%s." fmt, p), n)
    TRY(bind_vec(ld, &l->input_layernorm, NAME("input_layernorm.weight"), D));
    TRY(bind_vec(ld, &l->post_attention_layernorm, NAME("post_attention_layernorm.weight"), D));

    if (Rq > 0) {
        TRY(bind(ld, &l->q_a_proj, NAME("self_attn.q_a_proj.weight"), Rq, D));
        TRY(bind_vec(ld, &l->q_a_layernorm, NAME("self_attn.q_a_layernorm.weight"), Rq));
        TRY(bind(ld, &l->q_b_proj, NAME("self_attn.q_b_proj.weight"), H * (Dn + Dr), Rq));
    } else {
        TRY(bind(ld, &l->q_proj, NAME("self_attn.q_proj.weight"), H * (Dn + Dr), D));
    }
    TRY(bind(ld, &l->kv_a_proj_with_mqa, NAME("self_attn.kv_a_proj_with_mqa.weight"), C + Dr, D));
    TRY(bind_vec(ld, &l->kv_a_layernorm, NAME("self_attn.kv_a_layernorm.weight"), C));
    TRY(bind(ld, &l->kv_b_proj, NAME("self_attn.kv_b_proj.weight"), H * (Dn + Dv), C));
    TRY(bind(ld, &l->o_proj, NAME("self_attn.o_proj.weight"), D, H * Dv));

    l->is_moe = ds3_layer_is_moe(c, i);
    if (!l->is_moe) {
        TRY(bind_ffn(ld, &l->mlp, NAME("mlp"), D, c->intermediate_size));
        return DS3_OK;
    }
    TRY(bind(ld, &l->gate, NAME("mlp.gate.weight"), E, D));
    if (c->topk_method == DS3_TOPK_NOAUX_TC)
        TRY(bind_vec(ld, &l->e_score_correction_bias, NAME("mlp.gate.e_score_correction_bias"), E));
    l->experts = model_alloc(ld->m, (size_t)E * sizeof(ds3_ffn));
    if (!l->experts) return DS3_ERR_NOMEM;
    /* Every expert is bound (a view: the header's shape and offsets); this
     * process reads only its own experts' bytes (dist.c). */
    int lo, hi;
    ds3_dist_range((int)E, ld->m->ep_rank, ld->m->ep_size, &lo, &hi);
    for (int j = 0; j < E; j++) {
        char ep[300];
        snprintf(ep, sizeof ep, "%s.mlp.experts.%d", p, j);
        ld->elsewhere = j < lo || j >= hi;
        ds3_status st = bind_ffn(ld, &l->experts[j], ep, D, Im);
        ld->elsewhere = false;
        TRY(st);
    }
    if (c->n_shared_experts > 0)
        TRY(bind_ffn(ld, &l->shared_experts, NAME("mlp.shared_experts"), D, (int64_t)c->n_shared_experts * Im));
#undef NAME
    return DS3_OK;
}

/*
 * MTP depth k lives at model.layers.<L+k>: a decoder layer plus enorm, hnorm,
 * eh_proj and shared_head (docs/MODEL.md §6). The released checkpoint repeats the
 * embedding there; when it does not, the main one is used.
 */
static ds3_status bind_mtp(loader *ld, ds3_mtp_layer *t, int i) {
    ds3_model *m = ld->m;
    const int64_t D = m->cfg.hidden_size, V = m->cfg.vocab_size;
    char n[512];
    TRY(bind_layer(ld, &t->block, i));
    snprintf(n, sizeof n, "model.layers.%d.enorm.weight", i);
    TRY(bind_vec(ld, &t->enorm, n, D));
    snprintf(n, sizeof n, "model.layers.%d.hnorm.weight", i);
    TRY(bind_vec(ld, &t->hnorm, n, D));
    snprintf(n, sizeof n, "model.layers.%d.eh_proj.weight", i);
    TRY(bind(ld, &t->eh_proj, n, D, 2 * D));
    snprintf(n, sizeof n, "model.layers.%d.shared_head.norm.weight", i);
    TRY(bind_vec(ld, &t->shared_head_norm, n, D));
    snprintf(n, sizeof n, "model.layers.%d.shared_head.head.weight", i);
    if (has(ld, n)) TRY(bind(ld, &t->shared_head_head, n, V, D));
    else t->shared_head_head = m->lm_head;
    snprintf(n, sizeof n, "model.layers.%d.embed_tokens.weight", i);
    if (has(ld, n)) TRY(bind(ld, &t->embed_tokens, n, V, D));
    else t->embed_tokens = m->embed_tokens;
    return DS3_OK;
}

/* ========================================================================== */
/* Files                                                                       */
/* ========================================================================== */

static char *path_join(const char *dir, const char *file) {
    size_t n = strlen(dir) + strlen(file) + 2;
    char *p = ds3_malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, file);
    return p;
}

static bool file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* Something that is not a regular file at path: say what it is (a FIFO must
 * not be opened: that would wait for a writer). DS3_OK when path is a regular
 * file or does not exist. */
static ds3_status not_a_file(const char *path) {
    struct stat sb;
    if (stat(path, &sb) != 0 || S_ISREG(sb.st_mode)) return DS3_OK;
    return ds3_fail(DS3_ERR_IO, "%s is %s, not a regular file", path, ds3_file_kind(sb.st_mode));
}

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && n < (64l << 20) && fseek(f, 0, SEEK_SET) == 0 &&
        (buf = ds3_malloc((size_t)n + 1)) && fread(buf, 1, (size_t)n, f) == (size_t)n) {
        buf[n] = 0;
    } else {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    return buf;
}

static ds3_status add_file(ds3_model *m, const char *path) {
    int n = m->n_files;
    if ((n & (n - 1)) == 0) {   /* 0, 1, 2, 4, ...: double the array */
        ds3_st_file **nf = realloc(m->files, (size_t)(n ? 2 * n : 1) * sizeof *nf);
        if (!nf) return ds3_fail(DS3_ERR_NOMEM, "out of memory opening %s", path);
        m->files = nf;
    }
    ds3_status st = ds3_st_open(path, &m->files[m->n_files]);
    if (!st) m->n_files++;
    return st;
}

/* The shard names already opened: open addressing on FNV-1a, so an index of
 * N entries over F files costs O(N), not O(N·F) (1.8 M entries over 60 k
 * files took 1,247 s with a scan of the open files per entry). */
typedef struct {
    const char **slots;   /* [cap] names (pointers into the index's JSON) */
    size_t cap, n;
} name_set;

/* Add name; true if it was new. false with *oom on allocation failure. */
static bool name_set_add(name_set *s, const char *name, bool *oom) {
    if (2 * (s->n + 1) > s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 64;
        const char **ns = ds3_calloc(cap, sizeof *ns);
        if (!ns) { *oom = true; return false; }
        for (size_t i = 0; i < s->cap; i++) {
            if (!s->slots[i]) continue;
            size_t h = fnv1a(s->slots[i]) & (cap - 1);
            while (ns[h]) h = (h + 1) & (cap - 1);
            ns[h] = s->slots[i];
        }
        free(s->slots);
        s->slots = ns;
        s->cap = cap;
    }
    size_t h = fnv1a(name) & (s->cap - 1);
    for (; s->slots[h]; h = (h + 1) & (s->cap - 1))
        if (strcmp(s->slots[h], name) == 0) return false;
    s->slots[h] = name;
    s->n++;
    return true;
}

/* The shards named by model.safetensors.index.json's weight_map, each once. */
static ds3_status open_index(ds3_model *m, const char *index_path) {
    char *text = read_text(index_path);
    if (!text) return ds3_fail(DS3_ERR_IO, "%s: cannot read", index_path);
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!root) return ds3_fail(DS3_ERR_FORMAT, "%s: not valid JSON", index_path);
    ds3_status st = DS3_OK;
    name_set seen = {0};
    cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(map)) {
        st = ds3_fail(DS3_ERR_FORMAT, "%s: no \"weight_map\" object", index_path);
        goto done;
    }
    for (cJSON *it = map->child; it && !st; it = it->next) {
        if (!cJSON_IsString(it) || !it->valuestring[0]) {
            st = ds3_fail(DS3_ERR_FORMAT, "%s: weight_map[\"%s\"] is not a file name", index_path, it->string);
            break;
        }
        const char *fn = it->valuestring;
        if (strchr(fn, '/') || strcmp(fn, "..") == 0 || strcmp(fn, ".") == 0) {
            st = ds3_fail(DS3_ERR_FORMAT, "%s: shard name \"%s\" must be a plain file name", index_path, fn);
            break;
        }
        bool oom = false;
        if (!name_set_add(&seen, fn, &oom)) {
            if (oom) st = DS3_ERR_NOMEM;
            continue;
        }
        char *p = path_join(m->dir, fn);
        if (!p) { st = DS3_ERR_NOMEM; break; }
        struct stat sb;
        if (stat(p, &sb) != 0)
            st = ds3_fail(DS3_ERR_IO, "%s: shard %s (for tensor %s) %s", index_path, fn, it->string,
                          errno == ENOENT ? "does not exist" : strerror(errno));
        else if (!S_ISREG(sb.st_mode))
            st = ds3_fail(DS3_ERR_IO, "%s: shard %s (for tensor %s) is %s, not a regular file", index_path, fn,
                          it->string, ds3_file_kind(sb.st_mode));
        else
            st = add_file(m, p);
        free(p);
    }
done:
    free(seen.slots);
    cJSON_Delete(root);
    return st;
}

/* ========================================================================== */
/* The model                                                                   */
/* ========================================================================== */

static ds3_status load(ds3_model *m, const char *dir) {
    ds3_config *c = &m->cfg;
    size_t dl = strlen(dir) + 1;
    m->dir = model_alloc(m, dl);
    if (!m->dir) return DS3_ERR_NOMEM;
    memcpy(m->dir, dir, dl);

    /* The folder itself first: a typo must not be reported as a missing file in it. */
    struct stat db;
    if (stat(dir, &db) != 0)
        return ds3_fail(DS3_ERR_IO, "%s: %s", dir,
                        errno == ENOENT ? "no such directory" : strerror(errno));
    if (!S_ISDIR(db.st_mode))
        return ds3_fail(DS3_ERR_IO, "%s is a file, not a model directory (give the folder that holds config.json)",
                        dir);
    char *cp = path_join(dir, "config.json");
    if (!cp) return DS3_ERR_NOMEM;
    ds3_status st = not_a_file(cp);
    if (!st) st = file_exists(cp) ? ds3_config_load(cp, c)
                                  : ds3_fail(DS3_ERR_IO, "%s: no config.json (is this a model directory?)", dir);
    free(cp);
    if (st) return st;
    if (c->n_routed_experts > DS3_MAX_EXPERTS || c->n_group > DS3_MAX_EXPERTS)
        return ds3_fail(DS3_ERR_CONFIG, "%s/config.json: n_routed_experts %d exceeds the supported %d", dir,
                        c->n_routed_experts, DS3_MAX_EXPERTS);

    char *ip = path_join(dir, "model.safetensors.index.json");
    char *sp = path_join(dir, "model.safetensors");
    if (!ip || !sp) st = DS3_ERR_NOMEM;
    else if ((st = not_a_file(ip)) || (st = not_a_file(sp))) {}
    else if (file_exists(ip)) st = open_index(m, ip);
    else if (file_exists(sp)) st = add_file(m, sp);
    else st = ds3_fail(DS3_ERR_IO, "%s: neither model.safetensors nor model.safetensors.index.json", dir);
    free(ip);
    free(sp);
    if (st) return st;

    /* The experts this process holds: its share when it is one of an MPI job
     * (ds3_dist_init), all of them alone. */
    m->ep_rank = ds3_dist_rank();
    m->ep_size = ds3_dist_size();
    loader ld = {.m = m};
    st = index_build(&ld);
    if (!st) {
        const int64_t D = c->hidden_size, V = c->vocab_size, L = c->num_hidden_layers;
        m->layers = model_alloc(m, (size_t)L * sizeof(ds3_layer));
        if (!m->layers) st = DS3_ERR_NOMEM;
        if (!st) st = bind(&ld, &m->embed_tokens, "model.embed_tokens.weight", V, D);
        for (int i = 0; i < L && !st; i++) st = bind_layer(&ld, &m->layers[i], i);
        if (!st) st = bind_vec(&ld, &m->norm, "model.norm.weight", D);
        if (!st) {
            if (c->tie_word_embeddings && !has(&ld, "lm_head.weight")) m->lm_head = m->embed_tokens;
            else st = bind(&ld, &m->lm_head, "lm_head.weight", V, D);
        }
        /* MTP layers: absent from many converted checkpoints, which is fine;
         * present but incomplete is an error (bind names what is missing). */
        char probe[128];
        snprintf(probe, sizeof probe, "model.layers.%d.eh_proj.weight", (int)L);
        if (!st && c->num_nextn_predict_layers > 0 && has(&ld, probe)) {
            m->n_mtp = c->num_nextn_predict_layers;
            m->mtp = model_alloc(m, (size_t)m->n_mtp * sizeof(ds3_mtp_layer));
            if (!m->mtp) st = DS3_ERR_NOMEM;
            for (int k = 0; k < m->n_mtp && !st; k++) st = bind_mtp(&ld, &m->mtp[k], (int)L + k);
        }
    }
    free(ld.slots);
    free(ld.slot_file);
    if (st) return st;

    m->rope_freqs = model_alloc(m, (size_t)(c->qk_rope_head_dim / 2) * sizeof(double));
    if (!m->rope_freqs) return DS3_ERR_NOMEM;
    ds3_yarn_freqs(m->rope_freqs, c);
    m->rope_attn_factor = ds3_rope_attn_factor(c);
    m->attn_scale = ds3_attn_softmax_scale(c);
    return DS3_OK;
}

/*
 * Decode's four-row loop reads rows 4g..4g+3 side by side: four streams, which
 * on some machines read markedly slower than one (docs/BENCHMARKS.md, "What
 * bounds the head's GEMV"). For lm_head, the largest weight a decode step reads
 * (BF16 in DeepSeek's checkpoints, FP8 ones included), ds3_model_prepare_decode
 * makes a copy (not the load: `ds3 info`, a replay or a dump need none)
 * in which each group of four rows is interleaved eight columns at a time
 * (kernels.h, ds3_tensor.rows4), read as one stream. The values are the same
 * bytes, so every output keeps its bits. The copy is built a slice at a time
 * and each slice's pages of the original are handed back to the page cache
 * (MADV_DONTNEED: a read-only file mapping; a later read faults them in again),
 * so the process does not hold the head twice: decode reads only the copy,
 * and only a caller asking for many rows' logits reads the original again.
 * Float builds only (the f64 build's decode does not use the fused loop). Not
 * made where the checkpoint and the copy would not both fit in memory (RAM or
 * a memory cgroup's limit: copy_fits), nor with DS3_NO_ROWS4=1, nor when it
 * cannot be allocated: the same bits either way.
 */
#ifndef DS3_F64
/* A memory cgroup's limit on this process, in bytes (INFINITY if none is
 * found): cgroup v2's memory.max or v1's memory.limit_in_bytes, of the
 * process's group and each group above it. */
static double cgroup_limit(void) {
    double limit = INFINITY;
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (!f) return limit;
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        const char *v2 = strncmp(line, "0::", 3) == 0 ? line + 3 : NULL;
        const char *v1 = strstr(line, ":memory:");
        const char *path = v2 ? v2 : v1 ? v1 + 8 : NULL;
        if (!path) continue;
        char dir[1024];
        snprintf(dir, sizeof dir, "%s", path);
        for (;;) {  /* this group, then each one above it */
            char file[1100];
            snprintf(file, sizeof file, v2 ? "/sys/fs/cgroup%s/memory.max" : "/sys/fs/cgroup/memory%s/memory.limit_in_bytes",
                     strcmp(dir, "/") ? dir : "");
            FILE *g = fopen(file, "r");
            double x;
            if (g && fscanf(g, "%lf", &x) == 1 && x > 0 && x < limit) limit = x;  /* "max" reads as no number */
            if (g) fclose(g);
            char *slash = strrchr(dir, '/');
            if (!slash || slash == dir) break;
            *slash = 0;
        }
    }
    fclose(f);
    return limit;
}

/* Whether the checkpoint and a copy of `bytes` fit in this machine's memory
 * (its RAM, and a memory cgroup's limit where there is one). Where they do not,
 * the checkpoint's pages stream from disk anyway, and an anonymous copy would
 * only hold memory the page cache needs (docs/ROBUSTNESS.md, resource limits). */
static bool copy_fits(const ds3_model *m, size_t bytes) {
    double need = (double)bytes;
    for (int f = 0; f < m->n_files; f++) need += (double)m->files[f]->map_size;
    const long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    double limit = pages > 0 && psz > 0 ? (double)pages * (double)psz : INFINITY;
    const double cg = cgroup_limit();
    if (cg < limit) limit = cg;
    return need <= limit;
}
#endif

ds3_status ds3_model_prepare_decode(ds3_model *m) {
    if (!m) return ds3_fail(DS3_ERR_ARG, "ds3_model_prepare_decode: model is NULL");
#ifndef DS3_F64
    ds3_tensor *w = &m->lm_head;
    if (w->rows4 || w->dtype != DS3_DT_BF16 || w->rows % 4 || w->cols % 8 || w->rows < 4 || getenv("DS3_NO_ROWS4"))
        return DS3_OK;
    const int64_t rows = w->rows, cols = w->cols;
    const size_t bytes = (size_t)rows * (size_t)cols * 2;
    if (!copy_fits(m, bytes)) return DS3_OK;
    void *copy = NULL;
    if (posix_memalign(&copy, 64, bytes) != 0) return DS3_OK;
    const unsigned char *src = w->data;
    unsigned char *dst = copy;
    /* the original's pages may be given back when the head is not also the
     * embedding (a tied checkpoint reads its rows at every token) */
    const bool give_back = w->data != m->embed_tokens.data;
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t given = ((uintptr_t)src + page - 1) & ~(page - 1);  /* first whole page not yet given back */
    const int64_t slice = 1024;  /* row groups per slice: 8 MB of small's head */
    for (int64_t g0 = 0; g0 < rows / 4; g0 += slice) {
        const int64_t g1 = g0 + slice < rows / 4 ? g0 + slice : rows / 4;
        for (int64_t g = g0; g < g1; g++)
            for (int64_t j = 0; j < cols; j += 8)
                for (int r = 0; r < 4; r++)
                    memcpy(dst + (size_t)g * 8 * cols + (size_t)j * 8 + (size_t)r * 16,
                           src + ((size_t)(4 * g + r) * cols + (size_t)j) * 2, 16);
        const uintptr_t done = ((uintptr_t)src + (size_t)g1 * 8 * cols) & ~(page - 1);
        if (give_back && done > given) {
            madvise((void *)given, done - given, MADV_DONTNEED);
            given = done;
        }
    }
    w->rows4 = copy;  /* freed with the model */
    for (int k = 0; k < m->n_mtp; k++)  /* MTP layers that share the main head (bind_mtp) */
        if (m->mtp[k].shared_head_head.data == w->data) m->mtp[k].shared_head_head.rows4 = copy;
#endif
    return DS3_OK;
}

static ds3_status model_load_body(const char *dir, ds3_model **out) {
    *out = NULL;
    if (!dir) return ds3_fail(DS3_ERR_ARG, "ds3_model_load: no directory given");
    ds3_model *m = ds3_calloc(1, sizeof *m);
    if (!m) return DS3_ERR_NOMEM;
    ds3_status st = load(m, dir);
    if (st) {
        ds3_model_free(m);
        return st;
    }
    *out = m;
    return DS3_OK;
}

/* The public entry: the work above in IEEE defaults (src/kernels/fpenv.c). */
ds3_status ds3_model_load(const char *dir, ds3_model **out) {
    ds3_fpenv env;
    ds3_status st = ds3_fpenv_enter_serial(&env);
    if (st != DS3_OK) return st;
    st = model_load_body(dir, out);
    ds3_fpenv_leave(&env);
    return st;
}

void ds3_model_free(ds3_model *m) {
    if (!m) return;
    free((void *)m->lm_head.rows4);  /* ds3_model_prepare_decode's copy, or NULL */
    for (int f = 0; f < m->n_files; f++) ds3_st_close(m->files[f]);
    free(m->files);
    for (owned_block *b = m->owned; b;) {
        owned_block *next = b->next;
        free(b);
        b = next;
    }
    free(m);
}

ds3_status ds3_model_check(const ds3_model *m) {
    if (!m) return ds3_fail(DS3_ERR_ARG, "ds3_model_check: model is NULL");
    for (int f = 0; f < m->n_files; f++) {
        ds3_status st = ds3_st_check(m->files[f]);
        if (st != DS3_OK) return st;
    }
    return DS3_OK;
}

/* [{"file": NAME, "bytes": N, "mtime_ns": T, "inode": I}, ...] in load order;
 * NAME relative to the model directory. Integers are written exactly (not as
 * doubles). */
char *ds3_model_shards_json(const ds3_model *m) {
    cJSON *arr = cJSON_CreateArray();
    bool ok = arr != NULL;
    for (int f = 0; f < m->n_files && ok; f++) {
        const ds3_st_file *sf = m->files[f];
        const char *base = strrchr(sf->path, '/');
        char num[3][32];
        snprintf(num[0], sizeof num[0], "%llu", (unsigned long long)sf->map_size);
        snprintf(num[1], sizeof num[1], "%lld", (long long)sf->id_mtime_ns);
        snprintf(num[2], sizeof num[2], "%llu", (unsigned long long)sf->id_ino);
        cJSON *o = cJSON_CreateObject();
        ok = o && cJSON_AddItemToArray(arr, o) && cJSON_AddStringToObject(o, "file", base ? base + 1 : sf->path) &&
             cJSON_AddRawToObject(o, "bytes", num[0]) && cJSON_AddRawToObject(o, "mtime_ns", num[1]) &&
             cJSON_AddRawToObject(o, "inode", num[2]);
    }
    char *s = ok ? cJSON_PrintUnformatted(arr) : NULL;
    cJSON_Delete(arr);
    return s;
}

int ds3_model_vocab_size(const ds3_model *m) { return m->cfg.vocab_size; }
int ds3_model_num_layers(const ds3_model *m) { return m->cfg.num_hidden_layers; }
int ds3_model_num_mtp(const ds3_model *m) { return m->n_mtp; }
int ds3_model_top_k(const ds3_model *m) { return m->cfg.n_routed_experts ? m->cfg.num_experts_per_tok : 0; }
int ds3_model_max_positions(const ds3_model *m) { return m->cfg.max_position_embeddings; }

/*
 * info.c — what a config or a loaded checkpoint amounts to: architecture,
 * parameter counts (total and active per token), the attention softmax scale
 * and the MLA KV-cache size per token (docs/MODEL.md §1, §3, §7).
 *
 * Everything here is counted from the config with the shapes of docs/MODEL.md §1 (the
 * same ones mkmodel writes and the loader checks), so `ds3 info v3` needs no
 * weights. For a loaded model the files' own entries are summed as well, which
 * doubles as a check that the checkpoint holds what the config implies.
 *
 * Conventions, chosen so the released models come out at their published sizes:
 *   - total parameters of the main model count every stored tensor except the
 *     MTP layers and the fp8 block scales: V3 671B (685B with MTP),
 *     V2-Lite 15.7B, Kimi K2 1.03T;
 *   - active parameters per token count what a token multiplies by: attention,
 *     dense FFNs, the router, K routed + the shared experts, norms and lm_head,
 *     but not the embedding table (a row lookup, not a matmul). This is the
 *     reading under which V3 is "37B activated", V2-Lite "2.4B" and K2 "32B";
 *     counting the embedding too would give 37.5B, 2.7B and 32.9B.
 */
#include "model/model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ========================================================================== */
/* Parameter counts from the config                                            */
/* ========================================================================== */

typedef struct {
    uint64_t embed;        /* model.embed_tokens */
    uint64_t attn;         /* self_attn.* incl. its q_a / kv_a layernorms */
    uint64_t dense;        /* dense-layer mlp.* */
    uint64_t router;       /* mlp.gate.weight + e_score_correction_bias */
    uint64_t experts;      /* all routed experts */
    uint64_t experts_act;  /* K routed experts per MoE layer */
    uint64_t shared;       /* shared experts */
    uint64_t norms;        /* input/post-attention layernorms + model.norm */
    uint64_t head;         /* lm_head (0 when tied) */
    uint64_t total, active;
    int n_dense, n_moe;
} info_counts;

static uint64_t info_attn(const ds3_config *c) {
    const uint64_t D = c->hidden_size, H = c->num_attention_heads, Rq = c->q_lora_rank;
    const uint64_t C = c->kv_lora_rank, Dn = c->qk_nope_head_dim, Dr = c->qk_rope_head_dim;
    const uint64_t Dv = c->v_head_dim;
    uint64_t q = Rq > 0 ? Rq * D + Rq + H * (Dn + Dr) * Rq : H * (Dn + Dr) * D;
    return q + (C + Dr) * D + C + H * (Dn + Dv) * C + D * H * Dv;
}

/* Adds decoder layer i (main or MTP) to n. */
static void info_layer(info_counts *n, const ds3_config *c, int i) {
    const uint64_t D = c->hidden_size, Im = c->moe_intermediate_size;
    const uint64_t E = c->n_routed_experts, K = c->num_experts_per_tok;
    n->attn += info_attn(c);
    n->norms += 2 * D;
    if (!ds3_layer_is_moe(c, i)) {
        n->dense += 3 * D * (uint64_t)c->intermediate_size;
        n->n_dense++;
        return;
    }
    n->router += E * D + (c->topk_method == DS3_TOPK_NOAUX_TC ? E : 0);
    n->experts += E * 3 * D * Im;
    n->experts_act += K * 3 * D * Im;
    n->shared += (uint64_t)c->n_shared_experts * 3 * D * Im;
    n->n_moe++;
}

/* The main model: embedding, layers 0..L-1, final norm, lm_head. */
static info_counts info_main(const ds3_config *c) {
    info_counts n;
    memset(&n, 0, sizeof n);
    const uint64_t VD = (uint64_t)c->vocab_size * (uint64_t)c->hidden_size;
    n.embed = VD;
    for (int i = 0; i < c->num_hidden_layers; i++) info_layer(&n, c, i);
    n.norms += (uint64_t)c->hidden_size;
    n.head = c->tie_word_embeddings ? 0 : VD;
    n.total = n.embed + n.attn + n.dense + n.router + n.experts + n.shared + n.norms + n.head;
    /* A tied head is the embedding matrix used as a matmul: active all the same. */
    n.active = n.attn + n.dense + n.router + n.experts_act + n.shared + n.norms + VD;
    return n;
}

/* One MTP depth as stored (docs/MODEL.md §6): its decoder layer, enorm, hnorm, eh_proj,
 * shared_head.norm, shared_head.head and the repeated embed_tokens. */
static void info_mtp(const ds3_config *c, int k, uint64_t *total, uint64_t *active) {
    info_counts n;
    memset(&n, 0, sizeof n);
    info_layer(&n, c, c->num_hidden_layers + k);
    const uint64_t D = c->hidden_size, VD = (uint64_t)c->vocab_size * D;
    uint64_t glue = 2 * D + 2 * D * D + D;   /* enorm, hnorm, eh_proj, shared_head.norm */
    uint64_t layer = n.attn + n.dense + n.router + n.experts + n.shared + n.norms;
    uint64_t layer_act = n.attn + n.dense + n.router + n.experts_act + n.shared + n.norms;
    *total = layer + glue + 2 * VD;
    *active = layer_act + glue + VD;
}

/* ========================================================================== */
/* Formatting                                                                  */
/* ========================================================================== */

/* 70272 → "70,272" (buf of at least 32). */
static const char *info_commas(char *buf, uint64_t v) {
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v), o = 0;
    for (int i = 0; i < n; i++) {
        if (i > 0 && (n - i) % 3 == 0) buf[o++] = ',';
        buf[o++] = tmp[i];
    }
    buf[o] = '\0';
    return buf;
}

/* 671026419200 → "671.03 B" (buf of at least 32); bytes: 1891544360 → "1.89 GB". */
static const char *info_scaled(char *buf, uint64_t v, bool bytes) {
    static const char *const count_unit[] = {"T", "B", "M", "K"}, *const byte_unit[] = {"TB", "GB", "MB", "kB"};
    static const double scale[] = {1e12, 1e9, 1e6, 1e3};
    double x = (double)v;
    for (int i = 0; i < 4; i++)
        if (x >= scale[i]) {
            snprintf(buf, 32, i == 0 && !bytes ? "%.3f %s" : "%.2f %s", x / scale[i],
                     bytes ? byte_unit[i] : count_unit[i]);
            return buf;
        }
    snprintf(buf, 32, bytes ? "%llu B" : "%llu", (unsigned long long)v);
    return buf;
}
static const char *info_human(char *buf, uint64_t v) { return info_scaled(buf, v, false); }
static const char *info_bytes(char *buf, uint64_t v) { return info_scaled(buf, v, true); }

static void info_row(FILE *f, const char *label, uint64_t v, const char *note) {
    char a[32], b[32];
    fprintf(f, "  %-22s %20s  (%s)%s%s\n", label, info_commas(a, v), info_human(b, v),
            note ? "  " : "", note ? note : "");
}

static const char *info_topk_name(ds3_topk_method m) {
    switch (m) {
    case DS3_TOPK_NOAUX_TC: return "noaux_tc";
    case DS3_TOPK_GREEDY: return "greedy";
    case DS3_TOPK_GROUP_LIMITED_GREEDY: return "group_limited_greedy";
    }
    return "?";
}

/* HF's yarn_get_mscale: 0.1·m·ln(s) + 1, and 1 when the factor does not stretch. */
static double info_mscale(double s, double m) { return s <= 1.0 ? 1.0 : 0.1 * m * log(s) + 1.0; }

/* ========================================================================== */
/* The report                                                                  */
/* ========================================================================== */

static void info_arch(const ds3_config *c, const info_counts *n, FILE *f) {
    fprintf(f, "architecture\n");
    fprintf(f, "  model_type             %s\n", c->model_type);
    fprintf(f, "  hidden size D          %d\n", c->hidden_size);
    fprintf(f, "  layers L               %d (%d dense + %d MoE)\n", c->num_hidden_layers, n->n_dense, n->n_moe);
    fprintf(f, "  vocab V                %d, max positions %d, rms_norm_eps %g%s\n", c->vocab_size,
            c->max_position_embeddings, c->rms_norm_eps, c->tie_word_embeddings ? ", tied embeddings" : "");
    fprintf(f, "  attention              MLA, H %d heads, ", c->num_attention_heads);
    if (c->q_lora_rank > 0) fprintf(f, "q-LoRA rank Rq %d", c->q_lora_rank);
    else fprintf(f, "plain q_proj (no q-LoRA)");
    fprintf(f, ", kv latent C %d, head dims Dn %d + Dr %d, Dv %d\n", c->kv_lora_rank, c->qk_nope_head_dim,
            c->qk_rope_head_dim, c->v_head_dim);
    if (n->n_dense > 0) fprintf(f, "  dense FFN              width I %d\n", c->intermediate_size);
    if (n->n_moe > 0) {
        fprintf(f, "  MoE                    E %d routed experts of width Im %d, K %d per token, %d shared",
                c->n_routed_experts, c->moe_intermediate_size, c->num_experts_per_tok, c->n_shared_experts);
        if (c->n_group > 1) fprintf(f, "; %d groups, keep %d", c->n_group, c->topk_group);
        fprintf(f, "\n");
        fprintf(f, "  routing                %s scores, topk_method %s, norm_topk_prob %s, routed_scaling_factor %g\n",
                c->scoring_func == DS3_SCORE_SIGMOID ? "sigmoid" : "softmax", info_topk_name(c->topk_method),
                c->norm_topk_prob ? "true" : "false", c->routed_scaling_factor);
        fprintf(f, "                         (layer i is MoE iff i >= first_k_dense_replace %d and i %% %d == 0)\n",
                c->first_k_dense_replace, c->moe_layer_freq);
    }
    fprintf(f, "  RoPE                   theta %g", c->rope_theta);
    if (c->rope_yarn)
        fprintf(f, ", YaRN factor %g, original_max_position_embeddings %d, beta_fast %g, beta_slow %g, "
                   "mscale %g, mscale_all_dim %g\n",
                c->yarn_factor, c->yarn_original_max_position_embeddings, c->yarn_beta_fast, c->yarn_beta_slow,
                c->yarn_mscale, c->yarn_mscale_all_dim);
    else
        fprintf(f, ", no scaling\n");

    /* The YaRN m² of docs/MODEL.md §3: long-context scaling sharpens the softmax. */
    const int dqk = c->qk_nope_head_dim + c->qk_rope_head_dim;
    double m = 1.0;
    if (c->rope_yarn && c->yarn_mscale_all_dim != 0.0) m = info_mscale(c->yarn_factor, c->yarn_mscale_all_dim);
    fprintf(f, "  softmax scale          %.8f = %d^-0.5 * m^2, m = %.8f\n", pow((double)dqk, -0.5) * m * m, dqk, m);
    fprintf(f, "  MTP depths             %d (layers %d..%d)\n", c->num_nextn_predict_layers, c->num_hidden_layers,
            c->num_hidden_layers + c->num_nextn_predict_layers - 1);
}

static void info_params(const ds3_config *c, const info_counts *n, FILE *f) {
    char note[128], a[32];
    fprintf(f, "parameters (fp8 block scales excluded)\n");
    info_row(f, "main model", n->total, NULL);
    info_row(f, "  embedding", n->embed, NULL);
    snprintf(note, sizeof note, "%s per layer", info_commas(a, info_attn(c)));
    info_row(f, "  attention", n->attn, note);
    if (n->n_dense) info_row(f, "  dense FFN", n->dense, NULL);
    if (n->n_moe) {
        info_row(f, "  router", n->router, NULL);
        info_row(f, "  routed experts", n->experts, NULL);
        if (n->shared) info_row(f, "  shared experts", n->shared, NULL);
    }
    info_row(f, "  norms", n->norms, NULL);
    info_row(f, "  lm_head", n->head, c->tie_word_embeddings ? "tied to the embedding" : NULL);

    uint64_t mtp = 0, mtp_act = 0;
    for (int k = 0; k < c->num_nextn_predict_layers; k++) {
        uint64_t t, a2;
        info_mtp(c, k, &t, &a2);
        mtp += t;
        mtp_act += a2;
    }
    if (c->num_nextn_predict_layers > 0) {
        snprintf(note, sizeof note, "%d depth(s), each with its own copy of embed_tokens and the head",
                 c->num_nextn_predict_layers);
        info_row(f, "MTP layers", mtp, note);
        info_row(f, "main + MTP", n->total + mtp, NULL);
    }
    info_row(f, "active per token", n->active, "main model; lm_head counted, embedding lookup not");
    if (c->num_nextn_predict_layers > 0) info_row(f, "MTP active per token", mtp_act, "per token, all depths");
}

static void info_kv(const ds3_config *c, FILE *f) {
    char a[32], b[32], d[32];
    const uint64_t L = c->num_hidden_layers, H = c->num_attention_heads;
    const uint64_t C = c->kv_lora_rank, Dr = c->qk_rope_head_dim;
    const uint64_t Dn = c->qk_nope_head_dim, Dv = c->v_head_dim;
    const uint64_t S = sizeof(ds3_real);
    uint64_t abs_v = L * (C + Dr), naive_v = L * H * (Dn + Dr + Dv);
    fprintf(f, "KV cache per token (main layers; each MTP depth adds one layer's worth)\n");
    fprintf(f, "  absorbed  %llu x (C+Dr = %llu) = %s values: %s bytes at 16 bits, %s bytes at %d bits (this build)\n",
            (unsigned long long)L, (unsigned long long)(C + Dr), info_commas(a, abs_v), info_commas(b, 2 * abs_v),
            info_commas(d, S * abs_v), (int)(8 * S));
    fprintf(f, "  naive     %llu x H %llu x (Dn+Dr+Dv = %llu) = %s values: %s bytes at 16 bits, %s bytes at %d bits\n",
            (unsigned long long)L, (unsigned long long)H, (unsigned long long)(Dn + Dr + Dv),
            info_commas(a, naive_v), info_commas(b, 2 * naive_v), info_commas(d, S * naive_v), (int)(8 * S));
    fprintf(f, "  ratio     %.1fx smaller absorbed\n", (double)naive_v / (double)abs_v);
}

static void info_all(const ds3_config *c, FILE *f) {
    info_counts n = info_main(c);
    info_arch(c, &n, f);
    info_params(c, &n, f);
    info_kv(c, f);
}

ds3_status ds3_config_describe(const char *name_or_path, FILE *f) {
    if (!name_or_path || !f) return ds3_fail(DS3_ERR_ARG, "config_describe: name and stream are required");
    ds3_config c;
    const char *json = ds3_builtin_config_json(name_or_path);
    ds3_status st = json ? ds3_config_parse(json, name_or_path, &c) : ds3_config_load(name_or_path, &c);
    if (st != DS3_OK) return st;
    fprintf(f, "config %s%s\n", name_or_path, json ? " (built-in)" : "");
    info_all(&c, f);
    return DS3_OK;
}

/* A loaded model adds what its files actually hold. */
void ds3_model_describe(const ds3_model *m, FILE *f) {
    if (!m || !f) return;
    fprintf(f, "model %s\n", m->dir ? m->dir : "(unnamed)");
    info_all(&m->cfg, f);

    uint64_t bytes[DS3_DT_COUNT] = {0}, count[DS3_DT_COUNT] = {0}, params = 0, tensors = 0;
    for (int i = 0; i < m->n_files; i++) {
        const ds3_st_file *sf = m->files[i];
        for (int j = 0; j < sf->n; j++) {
            const ds3_st_entry *e = &sf->entries[j];
            if ((int)e->dtype < 0 || e->dtype >= DS3_DT_COUNT) continue;
            bytes[e->dtype] += e->nbytes;
            count[e->dtype]++;
            tensors++;
            size_t len = strlen(e->name);
            if (len >= 10 && strcmp(e->name + len - 10, "_scale_inv") == 0) continue;
            uint64_t el = 1;
            for (int d = 0; d < e->ndim; d++) el *= (uint64_t)e->shape[d];
            params += el;
        }
    }
    char a[32], b[32], d3[32];
    uint64_t total = 0;
    fprintf(f, "checkpoint\n");
    fprintf(f, "  files                  %d safetensors, %s tensors, MTP depths loaded %d\n", m->n_files,
            info_commas(a, tensors), m->n_mtp);
    info_row(f, "parameters in files", params, "scale_inv excluded; includes MTP");
    for (int d = 0; d < DS3_DT_COUNT; d++) {
        if (!count[d]) continue;
        fprintf(f, "  %-22s %20s bytes (%s) in %s tensors\n", ds3_dtype_name((ds3_dtype)d),
                info_commas(a, bytes[d]), info_bytes(b, bytes[d]), info_commas(d3, count[d]));
        total += bytes[d];
    }
    fprintf(f, "  %-22s %20s bytes (%s)\n", "total", info_commas(a, total), info_bytes(b, total));
}

/* ========================================================================== */
/* As strings, for bindings (Python's ds3.info, Model.config)                  */
/* ========================================================================== */

/* Run describe(arg, f) into a memory stream; *text malloc'd, NUL-terminated. */
static ds3_status describe_str(ds3_status (*describe)(const void *arg, FILE *f), const void *arg, char **text) {
    if (!text) return ds3_fail(DS3_ERR_ARG, "describe: text is NULL");
    *text = NULL;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return ds3_fail(DS3_ERR_NOMEM, "describe: cannot open a memory stream");
    ds3_status st = describe(arg, f);
    if (fclose(f) != 0 && st == DS3_OK) st = ds3_fail(DS3_ERR_NOMEM, "describe: out of memory writing the text");
    if (st != DS3_OK) {
        free(buf);
        return st;
    }
    *text = buf;
    return DS3_OK;
}

static ds3_status describe_model(const void *m, FILE *f) {
    ds3_model_describe(m, f);
    return DS3_OK;
}
static ds3_status describe_config(const void *name, FILE *f) { return ds3_config_describe(name, f); }

ds3_status ds3_model_describe_str(const ds3_model *m, char **text) {
    if (!m) return ds3_fail(DS3_ERR_ARG, "ds3_model_describe_str: model is NULL");
    return describe_str(describe_model, m, text);
}

ds3_status ds3_config_describe_str(const char *name_or_path, char **text) {
    if (!name_or_path) return ds3_fail(DS3_ERR_ARG, "ds3_config_describe_str: name is NULL");
    return describe_str(describe_config, name_or_path, text);
}

ds3_status ds3_model_config_json(const ds3_model *m, char **json) {
    if (!m || !json) return ds3_fail(DS3_ERR_ARG, "ds3_model_config_json: model or json is NULL");
    *json = ds3_config_to_json(&m->cfg);
    return *json ? DS3_OK : DS3_ERR_NOMEM;
}

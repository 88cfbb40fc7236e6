/*
 * config.c — config.json, read and written as Hugging Face does (docs/MODEL.md §1).
 *
 * A model directory is described by the same config.json that HF
 * transformers and the engines read; there is no conversion step. This file:
 *   - parses it into ds3_config, with HF's defaults for absent fields and
 *     strict types (a field of the wrong type, or an absurd value, is an error
 *     naming the field and the file, never silently replaced by a default);
 *   - checks the architecture is consistent (K <= E, groups divide E, a
 *     top-k that the kept groups can fill, even rope dim, …) so that the
 *     kernels can trust the numbers;
 *   - writes a config back (ds3_config_to_json) — what the synthetic-model
 *     writer puts next to its weights — losslessly: parse(to_json(c)) == c;
 *   - holds the built-in configs: the published configs of the models this
 *     architecture covers, and our synthetic ones for tests and benchmarks.
 *
 * Absent/null conventions follow the HF config classes: q_lora_rank null means
 * no query compression (one q_proj); n_routed_experts null means a dense
 * model; rope_scaling null means plain RoPE. Only YaRN scaling is supported,
 * given as rope_scaling.type or the newer rope_scaling.rope_type (docs/MODEL.md §4);
 * transformers 5 writes the same object as "rope_parameters", also accepted.
 */
#include "model/model.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Upper bounds that reject garbage while leaving room for real models. */
#define MAX_DIM (1 << 20)
#define MAX_LAYERS 4096
#define MAX_POSITIONS (1 << 30)
#define MAX_NEXTN 64
#ifdef DS3_MAX_EXPERTS
#define MAX_EXPERTS DS3_MAX_EXPERTS
#else
#define MAX_EXPERTS 4096
#endif

/* ========================================================================== */
/* Field readers                                                              */
/* ========================================================================== */

/* Where a field lives, for messages: "config.json: field 'rope_scaling.factor' …". */
typedef struct {
    const char *src;     /* file name or path */
    const cJSON *obj;    /* the object holding the field */
    const char *prefix;  /* "" or "rope_scaling." */
} jctx;

/* A value as short JSON text: "\"abc\"", "-1", "[1,2]". */
static const char *snippet(char *buf, size_t size, const cJSON *v) {
    char *s = cJSON_PrintUnformatted(v);
    snprintf(buf, size, "%s", s ? s : "?");
    if (s && strlen(s) >= size && size > 4) memcpy(buf + size - 4, "...", 4);
    cJSON_free(s);
    return buf;
}

/* The field, or NULL when absent or JSON null (HF reads both as None). */
static const cJSON *field(const jctx *j, const char *name) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j->obj, name);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

static ds3_status missing(const jctx *j, const char *name) {
    return ds3_fail(DS3_ERR_CONFIG, "%s: missing required field '%s%s'", j->src, j->prefix, name);
}

/* An integer field in [lo, hi]. Integral JSON numbers written as 2048.0 count. */
static ds3_status get_int(const jctx *j, const char *name, bool required, int def, int lo, int hi, int *out) {
    char sn[64];
    const cJSON *v = field(j, name);
    const char *kind = lo > 0 ? "a positive integer" : "a non-negative integer";
    if (!v) {
        if (required && cJSON_GetObjectItemCaseSensitive(j->obj, name))
            return ds3_fail(DS3_ERR_CONFIG, "%s: field '%s%s' is null, expected %s", j->src, j->prefix, name, kind);
        if (required) return missing(j, name);
        *out = def;
        return DS3_OK;
    }
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!isfinite(d) || d != floor(d) || d < lo)
        return ds3_fail(DS3_ERR_CONFIG, "%s: field '%s%s' must be %s, got %s", j->src, j->prefix, name, kind,
                        snippet(sn, sizeof sn, v));
    if (d > hi)
        return ds3_fail(DS3_ERR_CONFIG, "%s: field '%s%s' is %s, at most %d is supported", j->src, j->prefix,
                        name, snippet(sn, sizeof sn, v), hi);
    *out = (int)d;
    return DS3_OK;
}

/* A finite number field; positive (> 0) or non-negative (>= 0). */
static ds3_status get_num(const jctx *j, const char *name, bool required, double def, bool positive,
                          double *out) {
    char sn[64];
    const cJSON *v = field(j, name);
    if (!v) {
        if (required) return missing(j, name);
        *out = def;
        return DS3_OK;
    }
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!isfinite(d) || (positive ? !(d > 0) : !(d >= 0)))
        return ds3_fail(DS3_ERR_CONFIG, "%s: field '%s%s' must be a %s number, got %s", j->src, j->prefix,
                        name, positive ? "positive" : "non-negative", snippet(sn, sizeof sn, v));
    *out = d;
    return DS3_OK;
}

static ds3_status get_bool(const jctx *j, const char *name, bool def, bool *out) {
    char sn[64];
    const cJSON *v = field(j, name);
    if (!v) { *out = def; return DS3_OK; }
    if (!cJSON_IsBool(v))
        return ds3_fail(DS3_ERR_CONFIG, "%s: field '%s%s' must be true or false, got %s", j->src, j->prefix,
                        name, snippet(sn, sizeof sn, v));
    *out = cJSON_IsTrue(v);
    return DS3_OK;
}

/* A string field; *out points into the JSON tree (or at def). */
static ds3_status get_str(const jctx *j, const char *name, const char *def, const char **out) {
    char sn[64];
    const cJSON *v = field(j, name);
    if (!v) { *out = def; return DS3_OK; }
    if (!cJSON_IsString(v))
        return ds3_fail(DS3_ERR_CONFIG, "%s: field '%s%s' must be a string, got %s", j->src, j->prefix, name,
                        snippet(sn, sizeof sn, v));
    *out = v->valuestring;
    return DS3_OK;
}

/* Stop at the first failure: every reader returns a status. */
#define TRY(expr)                               \
    do {                                        \
        ds3_status st_ = (expr);                \
        if (st_ != DS3_OK) return st_;          \
    } while (0)

/* ========================================================================== */
/* Parsing                                                                    */
/* ========================================================================== */

/* rope_scaling (or rope_parameters): YaRN or nothing (docs/MODEL.md §4). */
static ds3_status parse_rope_scaling(const jctx *top, const cJSON *rs, const char *key, ds3_config *c) {
    char sn[64];
    if (!cJSON_IsObject(rs))
        return ds3_fail(DS3_ERR_CONFIG, "%s: field '%s' must be an object or null, got %s", top->src, key,
                        snippet(sn, sizeof sn, rs));
    char prefix[40];
    snprintf(prefix, sizeof prefix, "%s.", key);
    jctx j = {top->src, rs, prefix};
    /* HF reads rope_type first and falls back to the older "type". */
    const char *type = NULL;
    TRY(get_str(&j, "rope_type", NULL, &type));
    if (!type) TRY(get_str(&j, "type", NULL, &type));
    if (!type || strcmp(type, "default") == 0) return DS3_OK; /* plain RoPE */
    if (strcmp(type, "yarn") != 0)
        return ds3_fail(DS3_ERR_CONFIG, "%s: field '%s' has type '%s', which is not supported (only \"yarn\" "
                        "RoPE scaling, as in DeepSeek-V2/V3)", top->src, key, type);
    c->rope_yarn = true;
    TRY(get_num(&j, "factor", true, 0, true, &c->yarn_factor));
    if (c->yarn_factor < 1)
        return ds3_fail(DS3_ERR_CONFIG, "%s: field '%sfactor' is %g, YaRN needs a factor >= 1", top->src,
                        prefix, c->yarn_factor);
    /* Without it HF takes max_position_embeddings as the pre-training length. */
    TRY(get_int(&j, "original_max_position_embeddings", false, c->max_position_embeddings, 1, MAX_POSITIONS,
                &c->yarn_original_max_position_embeddings));
    TRY(get_num(&j, "beta_fast", false, 32, true, &c->yarn_beta_fast));
    TRY(get_num(&j, "beta_slow", false, 1, true, &c->yarn_beta_slow));
    TRY(get_num(&j, "mscale", false, 1, false, &c->yarn_mscale));
    TRY(get_num(&j, "mscale_all_dim", false, 0, false, &c->yarn_mscale_all_dim));
    return DS3_OK;
}

/* The routed-expert fields and their consistency (docs/MODEL.md §5). */
static ds3_status parse_moe(const jctx *j, ds3_config *c) {
    const int E = c->n_routed_experts;
    const bool moe = E > 0;
    /* A dense model may omit (or null) every MoE field; with experts, their
     * width and count have no sensible default. */
    if (moe && !field(j, "moe_intermediate_size"))
        return ds3_fail(DS3_ERR_CONFIG, "%s: missing field 'moe_intermediate_size', required when "
                        "n_routed_experts (%d) > 0", j->src, E);
    if (moe && !field(j, "num_experts_per_tok"))
        return ds3_fail(DS3_ERR_CONFIG, "%s: missing field 'num_experts_per_tok', required when "
                        "n_routed_experts (%d) > 0", j->src, E);
    TRY(get_int(j, "moe_intermediate_size", moe, 0, moe ? 1 : 0, MAX_DIM, &c->moe_intermediate_size));
    TRY(get_int(j, "num_experts_per_tok", moe, 0, moe ? 1 : 0, MAX_EXPERTS, &c->num_experts_per_tok));
    TRY(get_int(j, "n_shared_experts", false, 0, 0, 1024, &c->n_shared_experts));
    TRY(get_int(j, "first_k_dense_replace", false, 0, 0, MAX_LAYERS, &c->first_k_dense_replace));
    TRY(get_int(j, "moe_layer_freq", false, 1, 1, MAX_LAYERS, &c->moe_layer_freq));
    TRY(get_int(j, "n_group", false, 1, 1, MAX_EXPERTS, &c->n_group));
    TRY(get_int(j, "topk_group", false, 1, 1, MAX_EXPERTS, &c->topk_group));
    TRY(get_bool(j, "norm_topk_prob", false, &c->norm_topk_prob));
    TRY(get_num(j, "routed_scaling_factor", false, 1.0, true, &c->routed_scaling_factor));

    const char *s;
    TRY(get_str(j, "scoring_func", "softmax", &s)); /* V2's default */
    if (strcmp(s, "sigmoid") == 0) c->scoring_func = DS3_SCORE_SIGMOID;
    else if (strcmp(s, "softmax") == 0) c->scoring_func = DS3_SCORE_SOFTMAX;
    else
        return ds3_fail(DS3_ERR_CONFIG, "%s: field 'scoring_func' is \"%s\", expected \"sigmoid\" or \"softmax\"",
                        j->src, s);
    TRY(get_str(j, "topk_method", "greedy", &s));
    if (strcmp(s, "noaux_tc") == 0) c->topk_method = DS3_TOPK_NOAUX_TC;
    else if (strcmp(s, "greedy") == 0) c->topk_method = DS3_TOPK_GREEDY;
    else if (strcmp(s, "group_limited_greedy") == 0) c->topk_method = DS3_TOPK_GROUP_LIMITED_GREEDY;
    else
        return ds3_fail(DS3_ERR_CONFIG, "%s: field 'topk_method' is \"%s\", expected \"noaux_tc\", \"greedy\" "
                        "or \"group_limited_greedy\"", j->src, s);

    if (!moe) return DS3_OK;
    const int K = c->num_experts_per_tok, G = c->n_group, TG = c->topk_group;
    if (K > E)
        return ds3_fail(DS3_ERR_CONFIG, "%s: field 'num_experts_per_tok' (%d) exceeds n_routed_experts (%d)",
                        j->src, K, E);
    if (E % G != 0)
        return ds3_fail(DS3_ERR_CONFIG, "%s: field 'n_routed_experts' (%d) is not divisible by n_group (%d)",
                        j->src, E, G);
    if (TG > G)
        return ds3_fail(DS3_ERR_CONFIG, "%s: field 'topk_group' (%d) exceeds n_group (%d)", j->src, TG, G);
    /* Group-limited routing picks the top K among the experts of the kept
     * groups only; there must be at least K of them. */
    if (G > 1 && K > TG * (E / G))
        return ds3_fail(DS3_ERR_CONFIG, "%s: field 'num_experts_per_tok' (%d) exceeds the %d experts in the "
                        "topk_group=%d kept groups of %d", j->src, K, TG * (E / G), TG, E / G);
    return DS3_OK;
}

/*
 * The rotary frequencies and the softmax scale each combine several fields,
 * and values that are each in range can still give NaN or Inf: rope_theta 1
 * makes YaRN divide by ln θ = 0, beta_fast 1e-320 makes its ramp inf/inf,
 * mscale_all_dim 1e300 an infinite scale. They are computed here, once, so
 * that a config that parses never yields a model whose every logit is NaN.
 */
static ds3_status check_rope(const ds3_config *c, const char *src, const char *theta_prefix) {
    if (!(c->rope_theta > 1))
        return ds3_fail(DS3_ERR_CONFIG, "%s: field '%srope_theta' is %g, expected a base > 1 (V3: 10000)", src,
                        theta_prefix, c->rope_theta);
    const char *rs = c->rope_yarn ? " and rope_scaling" : "";
    double *freqs = ds3_malloc((size_t)(c->qk_rope_head_dim / 2) * sizeof *freqs);
    if (!freqs) return DS3_ERR_NOMEM;
    ds3_yarn_freqs(freqs, c);
    for (int j = 0; j < c->qk_rope_head_dim / 2; j++)
        if (!isfinite(freqs[j])) {
            ds3_status st = ds3_fail(DS3_ERR_CONFIG, "%s: rope_theta%s give rotary frequency %d = %g, "
                                     "not a finite number", src, rs, j, freqs[j]);
            free(freqs);
            return st;
        }
    free(freqs);
    double scale = ds3_attn_softmax_scale(c), afac = ds3_rope_attn_factor(c);
    if (!(isfinite(scale) && scale > 0 && isfinite(afac) && afac > 0))
        return ds3_fail(DS3_ERR_CONFIG, "%s: rope_scaling gives an attention softmax scale of %g and a rotary "
                        "factor of %g; both must be finite and positive", src, scale, afac);
    return DS3_OK;
}

static ds3_status parse_root(const cJSON *root, const char *src, ds3_config *c) {
    jctx j = {src, root, ""};
    const char *mt;
    TRY(get_str(&j, "model_type", "deepseek_v3", &mt));
    if (strlen(mt) >= sizeof c->model_type)
        return ds3_fail(DS3_ERR_CONFIG, "%s: field 'model_type' (\"%s\") is longer than %zu characters", src, mt,
                        sizeof c->model_type - 1);
    /* An identifier ("deepseek_v3", "kimi_k2"): nothing to escape when written back. */
    for (const char *p = mt; *p; p++)
        if (!(*p == '_' || *p == '-' || *p == '.' || (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') ||
              (*p >= 'A' && *p <= 'Z')))
            return ds3_fail(DS3_ERR_CONFIG, "%s: field 'model_type' (\"%s\") must be an identifier", src, mt);
    memcpy(c->model_type, mt, strlen(mt) + 1);

    /* Required: the shapes no default could guess. */
    TRY(get_int(&j, "vocab_size", true, 0, 1, MAX_DIM, &c->vocab_size));
    TRY(get_int(&j, "hidden_size", true, 0, 1, MAX_DIM, &c->hidden_size));
    TRY(get_int(&j, "intermediate_size", true, 0, 1, MAX_DIM, &c->intermediate_size));
    TRY(get_int(&j, "num_hidden_layers", true, 0, 1, MAX_LAYERS, &c->num_hidden_layers));
    TRY(get_int(&j, "num_attention_heads", true, 0, 1, MAX_DIM, &c->num_attention_heads));
    TRY(get_int(&j, "kv_lora_rank", true, 0, 1, MAX_DIM, &c->kv_lora_rank));
    TRY(get_int(&j, "qk_nope_head_dim", true, 0, 1, MAX_DIM, &c->qk_nope_head_dim));
    TRY(get_int(&j, "qk_rope_head_dim", true, 0, 1, MAX_DIM, &c->qk_rope_head_dim));
    TRY(get_int(&j, "v_head_dim", true, 0, 1, MAX_DIM, &c->v_head_dim));
    if (c->qk_rope_head_dim % 2)
        return ds3_fail(DS3_ERR_CONFIG, "%s: field 'qk_rope_head_dim' must be even (RoPE rotates pairs), got %d",
                        src, c->qk_rope_head_dim);

    /* Optional, with the HF config classes' defaults. */
    TRY(get_int(&j, "q_lora_rank", false, 0, 0, MAX_DIM, &c->q_lora_rank));
    TRY(get_int(&j, "n_routed_experts", false, 0, 0, MAX_EXPERTS, &c->n_routed_experts));
    TRY(parse_moe(&j, c));
    TRY(get_int(&j, "max_position_embeddings", false, 4096, 1, MAX_POSITIONS, &c->max_position_embeddings));
    TRY(get_num(&j, "rms_norm_eps", false, 1e-6, true, &c->rms_norm_eps));
    if (c->rms_norm_eps >= 1)
        return ds3_fail(DS3_ERR_CONFIG, "%s: field 'rms_norm_eps' is %g, expected a small positive number", src,
                        c->rms_norm_eps);
    TRY(get_int(&j, "num_nextn_predict_layers", false, 0, 0, MAX_NEXTN, &c->num_nextn_predict_layers));
    TRY(get_bool(&j, "tie_word_embeddings", false, &c->tie_word_embeddings));
    /* quantization_config says how the release was quantised (for other
     * tools); each tensor's own dtype and scales are what ds3 reads. Noted
     * only so that mkmodel can write it back. */
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(root, "quantization_config");
    const cJSON *qm = cJSON_IsObject(q) ? cJSON_GetObjectItemCaseSensitive(q, "quant_method") : NULL;
    c->fp8_block_quant = cJSON_IsString(qm) && strcmp(qm->valuestring, "fp8") == 0;

    /* Each weight matrix is at most MAX_DIM wide, like each field: the state
     * multiplies these widths by up to MAX_POSITIONS positions, and the
     * products must stay far from size_t overflow (heads x head dims alone
     * could reach 2^41). V3's widest is 128 x (128 + 128) = 32768. */
    const struct {
        const char *what;
        int64_t v;
    } widths[] = {
        {"num_attention_heads x (qk_nope_head_dim + qk_rope_head_dim)",
         (int64_t)c->num_attention_heads * (c->qk_nope_head_dim + c->qk_rope_head_dim)},
        {"num_attention_heads x (qk_nope_head_dim + v_head_dim)",
         (int64_t)c->num_attention_heads * (c->qk_nope_head_dim + c->v_head_dim)},
        {"n_shared_experts x moe_intermediate_size", (int64_t)c->n_shared_experts * c->moe_intermediate_size},
    };
    for (size_t i = 0; i < sizeof widths / sizeof widths[0]; i++)
        if (widths[i].v > MAX_DIM)
            return ds3_fail(DS3_ERR_CONFIG, "%s: %s = %lld, a weight matrix dimension above the %d supported",
                            src, widths[i].what, (long long)widths[i].v, MAX_DIM);

    /* RoPE: transformers 5 moves rope_theta and the scaling into rope_parameters. */
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(root, "rope_parameters");
    const cJSON *theta_obj = field(&j, "rope_theta") || !cJSON_IsObject(params) ? root : params;
    jctx jt = {src, theta_obj, theta_obj == root ? "" : "rope_parameters."};
    TRY(get_num(&jt, "rope_theta", false, 10000.0, true, &c->rope_theta));
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    if (rs && !cJSON_IsNull(rs)) TRY(parse_rope_scaling(&j, rs, "rope_scaling", c));
    else if (!rs && params && !cJSON_IsNull(params)) TRY(parse_rope_scaling(&j, params, "rope_parameters", c));
    return check_rope(c, src, jt.prefix);
}

ds3_status ds3_config_parse(const char *json, const char *source, ds3_config *out) {
    /* Zeroed, padding included, so that two parses of one config compare
     * equal with memcmp (the round-trip test relies on it). */
    memset(out, 0, sizeof *out);
    const char *src = source ? source : "config.json";
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(json, &end, 1);
    if (!root)
        return ds3_fail(DS3_ERR_FORMAT, "%s: not valid JSON (parse error at byte %ld)", src,
                        end ? (long)(end - json) : 0L);
    ds3_status st = cJSON_IsObject(root) ? parse_root(root, src, out)
                                         : ds3_fail(DS3_ERR_FORMAT, "%s: not a JSON object", src);
    cJSON_Delete(root);
    if (st != DS3_OK) memset(out, 0, sizeof *out);
    return st;
}

ds3_status ds3_config_load(const char *path, ds3_config *out) {
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f && errno == ENOENT && !strchr(path, '/')) {
        /* A bare word: most likely a mistyped built-in name, not a file. */
        char names[256];
        size_t k = 0;
        for (const char *const *b = ds3_builtin_configs(); *b && k < sizeof names; b++)
            k += (size_t)snprintf(names + k, sizeof names - k, "%s%s", k ? ", " : "", *b);
        return ds3_fail(DS3_ERR_IO, "'%s' is not a built-in config (%s; ds3 info --list) nor an existing file", path,
                        names);
    }
    if (!f)
        return ds3_fail(DS3_ERR_IO, "%s: cannot open: %s", path,
                        errno == ENOENT ? "no such file" : strerror(errno));
    /* config.json is small; read it whole, bounded so a wrong path to a
     * weights file fails fast instead of reading gigabytes. The buffer grows
     * from 64 kB as needed (a fixed 16 MB one cost more than the parse). */
    enum { MAX_CONFIG = 16 << 20 };
    size_t cap = 0, n = 0;
    char *buf = NULL;
    do {
        cap = cap ? (cap > MAX_CONFIG / 2 ? MAX_CONFIG + 1 : 2 * cap) : 64 << 10;
        char *nb = realloc(buf, cap + 1);
        if (!nb) {
            free(buf);
            fclose(f);
            return ds3_fail(DS3_ERR_NOMEM, "%s: out of memory reading it", path);
        }
        buf = nb;
        n += fread(buf + n, 1, cap - n, f);
    } while (n == cap && cap <= MAX_CONFIG);
    int err = ferror(f) ? errno : 0;
    fclose(f);
    ds3_status st;
    if (err) st = ds3_fail(DS3_ERR_IO, "%s: read error: %s", path, strerror(err));
    else if (n > MAX_CONFIG) st = ds3_fail(DS3_ERR_FORMAT, "%s: larger than %d bytes, not a config.json", path, MAX_CONFIG);
    else {
        buf[n] = '\0';
        st = ds3_config_parse(buf, path, out);
    }
    free(buf);
    return st;
}

bool ds3_layer_is_moe(const ds3_config *c, int i) {
    return c->n_routed_experts > 0 && i >= c->first_k_dense_replace && i % c->moe_layer_freq == 0;
}

/* ========================================================================== */
/* Writing                                                                    */
/* ========================================================================== */

/* Shortest "%.Ng" that reads back as exactly d: "2.5", "1e-06", "0.707",
 * never the 17-digit "0.70699999999999996". A whole number keeps a ".0"
 * ("1.0", not "1"): transformers' config classes check types strictly and
 * refuse an integer where a float field is declared. */
static void fmt_double(char *buf, size_t size, double d) {
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, size, "%.*g", prec, d);
        if (strtod(buf, NULL) == d) break;
    }
    if (!strpbrk(buf, ".eEn") && strlen(buf) + 3 <= size) strcat(buf, ".0");
}

typedef struct {
    char *p;
    size_t len, cap;
    bool oom;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) { b->oom = true; return; }
    if (b->len + (size_t)n + 1 > b->cap) {
        size_t nc = b->cap ? 2 * b->cap : 2048;
        while (nc < b->len + (size_t)n + 1) nc *= 2;
        char *p = realloc(b->p, nc);
        if (!p) { b->oom = true; return; }
        b->p = p;
        b->cap = nc;
    }
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Keys in alphabetical order, two-space indent: what transformers'
 * save_pretrained writes, so a diff against a downloaded config is readable. */
char *ds3_config_to_json(const ds3_config *c) {
    static const char *const scoring[] = {[DS3_SCORE_SIGMOID] = "sigmoid", [DS3_SCORE_SOFTMAX] = "softmax"};
    static const char *const topk[] = {[DS3_TOPK_NOAUX_TC] = "noaux_tc", [DS3_TOPK_GREEDY] = "greedy",
                                       [DS3_TOPK_GROUP_LIMITED_GREEDY] = "group_limited_greedy"};
    const bool v2 = strcmp(c->model_type, "deepseek_v2") == 0;
    char eps[32], rsf[32], theta[32];
    fmt_double(eps, sizeof eps, c->rms_norm_eps);
    fmt_double(rsf, sizeof rsf, c->routed_scaling_factor);
    fmt_double(theta, sizeof theta, c->rope_theta);

    sbuf b = {0};
    sb_printf(&b, "{\n");
    sb_printf(&b, "  \"architectures\": [\n    \"%s\"\n  ],\n", v2 ? "DeepseekV2ForCausalLM" : "DeepseekV3ForCausalLM");
    sb_printf(&b, "  \"attention_bias\": false,\n");
    sb_printf(&b, "  \"first_k_dense_replace\": %d,\n", c->first_k_dense_replace);
    sb_printf(&b, "  \"hidden_act\": \"silu\",\n");
    sb_printf(&b, "  \"hidden_size\": %d,\n", c->hidden_size);
    sb_printf(&b, "  \"intermediate_size\": %d,\n", c->intermediate_size);
    sb_printf(&b, "  \"kv_lora_rank\": %d,\n", c->kv_lora_rank);
    sb_printf(&b, "  \"max_position_embeddings\": %d,\n", c->max_position_embeddings);
    sb_printf(&b, "  \"model_type\": \"%s\",\n", c->model_type);
    sb_printf(&b, "  \"moe_intermediate_size\": %d,\n", c->moe_intermediate_size);
    sb_printf(&b, "  \"moe_layer_freq\": %d,\n", c->moe_layer_freq);
    sb_printf(&b, "  \"n_group\": %d,\n", c->n_group);
    /* HF's dense-model spelling: no routed experts is null, not 0. */
    if (c->n_routed_experts) sb_printf(&b, "  \"n_routed_experts\": %d,\n", c->n_routed_experts);
    else sb_printf(&b, "  \"n_routed_experts\": null,\n");
    sb_printf(&b, "  \"n_shared_experts\": %d,\n", c->n_shared_experts);
    sb_printf(&b, "  \"norm_topk_prob\": %s,\n", c->norm_topk_prob ? "true" : "false");
    sb_printf(&b, "  \"num_attention_heads\": %d,\n", c->num_attention_heads);
    if (c->num_experts_per_tok) sb_printf(&b, "  \"num_experts_per_tok\": %d,\n", c->num_experts_per_tok);
    else sb_printf(&b, "  \"num_experts_per_tok\": null,\n");
    sb_printf(&b, "  \"num_hidden_layers\": %d,\n", c->num_hidden_layers);
    /* Unused by MLA, but HF's attention code reads it. */
    sb_printf(&b, "  \"num_key_value_heads\": %d,\n", c->num_attention_heads);
    sb_printf(&b, "  \"num_nextn_predict_layers\": %d,\n", c->num_nextn_predict_layers);
    if (c->q_lora_rank) sb_printf(&b, "  \"q_lora_rank\": %d,\n", c->q_lora_rank);
    else sb_printf(&b, "  \"q_lora_rank\": null,\n");
    sb_printf(&b, "  \"qk_nope_head_dim\": %d,\n", c->qk_nope_head_dim);
    sb_printf(&b, "  \"qk_rope_head_dim\": %d,\n", c->qk_rope_head_dim);
    /* As DeepSeek-V3's release writes it, so that other tools (transformers,
     * llama.cpp's converter) find the block scales. */
    if (c->fp8_block_quant)
        sb_printf(&b, "  \"quantization_config\": {\n    \"activation_scheme\": \"dynamic\",\n    \"fmt\": \"e4m3\",\n"
                  "    \"quant_method\": \"fp8\",\n    \"weight_block_size\": [\n      128,\n      128\n    ]\n  },\n");
    sb_printf(&b, "  \"rms_norm_eps\": %s,\n", eps);
    /* transformers' own deepseek_v3 de-interleaves only when told the
     * checkpoint is interleaved (docs/MODEL.md §3); deepseek_v2 always is. */
    if (!v2) sb_printf(&b, "  \"rope_interleave\": true,\n");
    if (c->rope_yarn) {
        char f[32], bf[32], bs[32], ms[32], msa[32];
        fmt_double(f, sizeof f, c->yarn_factor);
        fmt_double(bf, sizeof bf, c->yarn_beta_fast);
        fmt_double(bs, sizeof bs, c->yarn_beta_slow);
        fmt_double(ms, sizeof ms, c->yarn_mscale);
        fmt_double(msa, sizeof msa, c->yarn_mscale_all_dim);
        sb_printf(&b, "  \"rope_scaling\": {\n    \"beta_fast\": %s,\n    \"beta_slow\": %s,\n    \"factor\": %s,\n"
                  "    \"mscale\": %s,\n    \"mscale_all_dim\": %s,\n    \"original_max_position_embeddings\": %d,\n"
                  "    \"type\": \"yarn\"\n  },\n", bf, bs, f, ms, msa, c->yarn_original_max_position_embeddings);
    } else {
        sb_printf(&b, "  \"rope_scaling\": null,\n");
    }
    sb_printf(&b, "  \"rope_theta\": %s,\n", theta);
    sb_printf(&b, "  \"routed_scaling_factor\": %s,\n", rsf);
    sb_printf(&b, "  \"scoring_func\": \"%s\",\n", scoring[c->scoring_func]);
    sb_printf(&b, "  \"tie_word_embeddings\": %s,\n", c->tie_word_embeddings ? "true" : "false");
    sb_printf(&b, "  \"topk_group\": %d,\n", c->topk_group);
    sb_printf(&b, "  \"topk_method\": \"%s\",\n", topk[c->topk_method]);
    sb_printf(&b, "  \"torch_dtype\": \"bfloat16\",\n");
    sb_printf(&b, "  \"v_head_dim\": %d,\n", c->v_head_dim);
    sb_printf(&b, "  \"vocab_size\": %d\n", c->vocab_size);
    sb_printf(&b, "}\n");
    if (b.oom) {
        free(b.p);
        ds3_fail(DS3_ERR_NOMEM, "out of memory writing config.json");
        return NULL;
    }
    return b.p;
}

/* ========================================================================== */
/* Built-in configs                                                           */
/* ========================================================================== */

/*
 * The published config.json of each model on Hugging Face
 * (deepseek-ai/DeepSeek-V3, deepseek-ai/DeepSeek-V2, deepseek-ai/DeepSeek-V2-Lite,
 * moonshotai/Kimi-K2-Instruct, moonshotai/Moonlight-16B-A3B). Every field
 * that shapes the computation is as published; auto_map (remote-code class
 * names) is left out. DeepSeek-R1 and V3.1 have V3's architecture exactly and
 * are aliases of it.
 */
static const char V3_JSON[] =
    "{\n"
    "  \"architectures\": [\"DeepseekV3ForCausalLM\"],\n"
    "  \"attention_bias\": false, \"attention_dropout\": 0.0, \"aux_loss_alpha\": 0.001,\n"
    "  \"bos_token_id\": 0, \"eos_token_id\": 1, \"ep_size\": 1,\n"
    "  \"first_k_dense_replace\": 3, \"hidden_act\": \"silu\", \"hidden_size\": 7168,\n"
    "  \"initializer_range\": 0.02, \"intermediate_size\": 18432, \"kv_lora_rank\": 512,\n"
    "  \"max_position_embeddings\": 163840, \"model_type\": \"deepseek_v3\",\n"
    "  \"moe_intermediate_size\": 2048, \"moe_layer_freq\": 1, \"n_group\": 8,\n"
    "  \"n_routed_experts\": 256, \"n_shared_experts\": 1, \"norm_topk_prob\": true,\n"
    "  \"num_attention_heads\": 128, \"num_experts_per_tok\": 8, \"num_hidden_layers\": 61,\n"
    "  \"num_key_value_heads\": 128, \"num_nextn_predict_layers\": 1, \"pretraining_tp\": 1,\n"
    "  \"q_lora_rank\": 1536, \"qk_nope_head_dim\": 128, \"qk_rope_head_dim\": 64,\n"
    "  \"quantization_config\": {\"activation_scheme\": \"dynamic\", \"fmt\": \"e4m3\",\n"
    "                          \"quant_method\": \"fp8\", \"weight_block_size\": [128, 128]},\n"
    "  \"rms_norm_eps\": 1e-06,\n"
    "  \"rope_scaling\": {\"beta_fast\": 32, \"beta_slow\": 1, \"factor\": 40, \"mscale\": 1.0,\n"
    "                   \"mscale_all_dim\": 1.0, \"original_max_position_embeddings\": 4096,\n"
    "                   \"type\": \"yarn\"},\n"
    "  \"rope_theta\": 10000, \"routed_scaling_factor\": 2.5, \"scoring_func\": \"sigmoid\",\n"
    "  \"seq_aux\": true, \"tie_word_embeddings\": false, \"topk_group\": 4,\n"
    "  \"topk_method\": \"noaux_tc\", \"torch_dtype\": \"bfloat16\",\n"
    "  \"transformers_version\": \"4.46.3\", \"use_cache\": true, \"v_head_dim\": 128,\n"
    "  \"vocab_size\": 129280\n"
    "}\n";

static const char V2_JSON[] =
    "{\n"
    "  \"architectures\": [\"DeepseekV2ForCausalLM\"],\n"
    "  \"attention_bias\": false, \"attention_dropout\": 0.0, \"aux_loss_alpha\": 0.001,\n"
    "  \"bos_token_id\": 100000, \"eos_token_id\": 100001, \"ep_size\": 1,\n"
    "  \"first_k_dense_replace\": 1, \"hidden_act\": \"silu\", \"hidden_size\": 5120,\n"
    "  \"initializer_range\": 0.02, \"intermediate_size\": 12288, \"kv_lora_rank\": 512,\n"
    "  \"max_position_embeddings\": 163840, \"model_type\": \"deepseek_v2\",\n"
    "  \"moe_intermediate_size\": 1536, \"moe_layer_freq\": 1, \"n_group\": 8,\n"
    "  \"n_routed_experts\": 160, \"n_shared_experts\": 2, \"norm_topk_prob\": false,\n"
    "  \"num_attention_heads\": 128, \"num_experts_per_tok\": 6, \"num_hidden_layers\": 60,\n"
    "  \"num_key_value_heads\": 128, \"pretraining_tp\": 1, \"q_lora_rank\": 1536,\n"
    "  \"qk_nope_head_dim\": 128, \"qk_rope_head_dim\": 64, \"rms_norm_eps\": 1e-06,\n"
    "  \"rope_scaling\": {\"beta_fast\": 32, \"beta_slow\": 1, \"factor\": 40, \"mscale\": 0.707,\n"
    "                   \"mscale_all_dim\": 0.707, \"original_max_position_embeddings\": 4096,\n"
    "                   \"type\": \"yarn\"},\n"
    "  \"rope_theta\": 10000, \"routed_scaling_factor\": 16.0, \"scoring_func\": \"softmax\",\n"
    "  \"seq_aux\": true, \"tie_word_embeddings\": false, \"topk_group\": 3,\n"
    "  \"topk_method\": \"group_limited_greedy\", \"torch_dtype\": \"bfloat16\",\n"
    "  \"transformers_version\": \"4.39.3\", \"use_cache\": true, \"v_head_dim\": 128,\n"
    "  \"vocab_size\": 102400\n"
    "}\n";

static const char V2_LITE_JSON[] =
    "{\n"
    "  \"architectures\": [\"DeepseekV2ForCausalLM\"],\n"
    "  \"attention_bias\": false, \"attention_dropout\": 0.0, \"aux_loss_alpha\": 0.001,\n"
    "  \"bos_token_id\": 100000, \"eos_token_id\": 100001, \"first_k_dense_replace\": 1,\n"
    "  \"hidden_act\": \"silu\", \"hidden_size\": 2048, \"initializer_range\": 0.02,\n"
    "  \"intermediate_size\": 10944, \"kv_lora_rank\": 512, \"max_position_embeddings\": 163840,\n"
    "  \"model_type\": \"deepseek_v2\", \"moe_intermediate_size\": 1408, \"moe_layer_freq\": 1,\n"
    "  \"n_group\": 1, \"n_routed_experts\": 64, \"n_shared_experts\": 2, \"norm_topk_prob\": false,\n"
    "  \"num_attention_heads\": 16, \"num_experts_per_tok\": 6, \"num_hidden_layers\": 27,\n"
    "  \"num_key_value_heads\": 16, \"pretraining_tp\": 1, \"q_lora_rank\": null,\n"
    "  \"qk_nope_head_dim\": 128, \"qk_rope_head_dim\": 64, \"rms_norm_eps\": 1e-06,\n"
    "  \"rope_scaling\": {\"beta_fast\": 32, \"beta_slow\": 1, \"factor\": 40, \"mscale\": 0.707,\n"
    "                   \"mscale_all_dim\": 0.707, \"original_max_position_embeddings\": 4096,\n"
    "                   \"type\": \"yarn\"},\n"
    "  \"rope_theta\": 10000, \"routed_scaling_factor\": 1.0, \"scoring_func\": \"softmax\",\n"
    "  \"seq_aux\": true, \"tie_word_embeddings\": false, \"topk_group\": 1,\n"
    "  \"topk_method\": \"greedy\", \"torch_dtype\": \"bfloat16\", \"use_cache\": true,\n"
    "  \"v_head_dim\": 128,\n"
    "  \"vocab_size\": 102400\n"
    "}\n";

/* Kimi K2 reuses DeepseekV3ForCausalLM: half the heads, 384 experts in one
 * group, one dense layer, no MTP layer, and YaRN with beta_fast = 1. */
static const char KIMI_K2_JSON[] =
    "{\n"
    "  \"architectures\": [\"DeepseekV3ForCausalLM\"],\n"
    "  \"attention_bias\": false, \"attention_dropout\": 0.0, \"aux_loss_alpha\": 0.001,\n"
    "  \"bos_token_id\": 163584, \"eos_token_id\": 163585, \"first_k_dense_replace\": 1,\n"
    "  \"hidden_act\": \"silu\", \"hidden_size\": 7168, \"initializer_range\": 0.02,\n"
    "  \"intermediate_size\": 18432, \"kv_lora_rank\": 512, \"max_position_embeddings\": 131072,\n"
    "  \"model_type\": \"kimi_k2\", \"moe_intermediate_size\": 2048, \"moe_layer_freq\": 1,\n"
    "  \"n_group\": 1, \"n_routed_experts\": 384, \"n_shared_experts\": 1, \"norm_topk_prob\": true,\n"
    "  \"num_attention_heads\": 64, \"num_experts_per_tok\": 8, \"num_hidden_layers\": 61,\n"
    "  \"num_key_value_heads\": 64, \"num_nextn_predict_layers\": 0, \"pretraining_tp\": 1,\n"
    "  \"q_lora_rank\": 1536, \"qk_nope_head_dim\": 128, \"qk_rope_head_dim\": 64,\n"
    "  \"quantization_config\": {\"activation_scheme\": \"dynamic\", \"fmt\": \"e4m3\",\n"
    "                          \"quant_method\": \"fp8\", \"weight_block_size\": [128, 128]},\n"
    "  \"rms_norm_eps\": 1e-06, \"rope_theta\": 50000.0, \"routed_scaling_factor\": 2.827,\n"
    "  \"rope_scaling\": {\"beta_fast\": 1.0, \"beta_slow\": 1.0, \"factor\": 32.0, \"mscale\": 1.0,\n"
    "                   \"mscale_all_dim\": 1.0, \"original_max_position_embeddings\": 4096,\n"
    "                   \"type\": \"yarn\"},\n"
    "  \"scoring_func\": \"sigmoid\", \"seq_aux\": true, \"tie_word_embeddings\": false,\n"
    "  \"topk_group\": 1, \"topk_method\": \"noaux_tc\", \"torch_dtype\": \"bfloat16\",\n"
    "  \"transformers_version\": \"4.48.3\", \"use_cache\": true, \"v_head_dim\": 128,\n"
    "  \"vocab_size\": 163840\n"
    "}\n";

/* Moonlight: a V2-Lite-sized V3 (sigmoid + noaux_tc), no query compression,
 * no RoPE scaling, rms_norm_eps 1e-5. */
static const char MOONLIGHT_JSON[] =
    "{\n"
    "  \"architectures\": [\"DeepseekV3ForCausalLM\"],\n"
    "  \"attention_bias\": false, \"attention_dropout\": 0.0, \"aux_loss_alpha\": 0.001,\n"
    "  \"bos_token_id\": 163584, \"eos_token_id\": 163586, \"ep_size\": 1,\n"
    "  \"first_k_dense_replace\": 1, \"hidden_act\": \"silu\", \"hidden_size\": 2048,\n"
    "  \"initializer_range\": 0.02, \"intermediate_size\": 11264, \"kv_lora_rank\": 512,\n"
    "  \"max_position_embeddings\": 8192, \"model_type\": \"deepseek_v3\",\n"
    "  \"moe_intermediate_size\": 1408, \"moe_layer_freq\": 1, \"n_group\": 1,\n"
    "  \"n_routed_experts\": 64, \"n_shared_experts\": 2, \"norm_topk_prob\": true,\n"
    "  \"num_attention_heads\": 16, \"num_experts_per_tok\": 6, \"num_hidden_layers\": 27,\n"
    "  \"num_key_value_heads\": 16, \"num_nextn_predict_layers\": 0, \"pretraining_tp\": 1,\n"
    "  \"q_lora_rank\": null, \"qk_nope_head_dim\": 128, \"qk_rope_head_dim\": 64,\n"
    "  \"rms_norm_eps\": 1e-05, \"rope_theta\": 50000.0, \"routed_scaling_factor\": 2.446,\n"
    "  \"scoring_func\": \"sigmoid\", \"seq_aux\": true, \"tie_word_embeddings\": false,\n"
    "  \"topk_group\": 1, \"topk_method\": \"noaux_tc\", \"torch_dtype\": \"bfloat16\",\n"
    "  \"transformers_version\": \"4.46.3\", \"use_cache\": true, \"v_head_dim\": 128,\n"
    "  \"vocab_size\": 163840\n"
    "}\n";

/*
 * Synthetic configs (ours). "tiny" keeps every V3 mechanism at toy size: 256
 * experts in 8 groups keeping 4, top-8, a shared expert, MTP, YaRN; D = 200
 * and C = 72 are not multiples of 128, so FP8 edge blocks are partial.
 * max_position_embeddings = factor × original (128 = 4 × 32) because
 * transformers recomputes the YaRN factor from that ratio; keeping them
 * consistent makes HF and the official code agree.
 */
static const char TINY_JSON[] =
    "{\n"
    "  \"architectures\": [\"DeepseekV3ForCausalLM\"], \"model_type\": \"deepseek_v3\",\n"
    "  \"vocab_size\": 512, \"hidden_size\": 200, \"intermediate_size\": 320,\n"
    "  \"moe_intermediate_size\": 24, \"num_hidden_layers\": 3, \"first_k_dense_replace\": 1,\n"
    "  \"moe_layer_freq\": 1, \"num_attention_heads\": 4, \"num_key_value_heads\": 4,\n"
    "  \"q_lora_rank\": 96, \"kv_lora_rank\": 72, \"qk_nope_head_dim\": 24, \"qk_rope_head_dim\": 16,\n"
    "  \"v_head_dim\": 20, \"n_routed_experts\": 256, \"num_experts_per_tok\": 8,\n"
    "  \"n_shared_experts\": 1, \"n_group\": 8, \"topk_group\": 4, \"scoring_func\": \"sigmoid\",\n"
    "  \"topk_method\": \"noaux_tc\", \"norm_topk_prob\": true, \"routed_scaling_factor\": 2.5,\n"
    "  \"rope_theta\": 10000,\n"
    "  \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4, \"original_max_position_embeddings\": 32,\n"
    "                   \"beta_fast\": 32, \"beta_slow\": 1, \"mscale\": 1.0, \"mscale_all_dim\": 1.0},\n"
    "  \"max_position_embeddings\": 128, \"rms_norm_eps\": 1e-06, \"num_nextn_predict_layers\": 1,\n"
    "  \"tie_word_embeddings\": false, \"hidden_act\": \"silu\", \"attention_bias\": false,\n"
    "  \"rope_interleave\": true, \"torch_dtype\": \"bfloat16\"\n"
    "}\n";

/* The V2-Lite mechanisms at toy size: softmax + greedy, no query compression,
 * two shared experts, mscale 0.707 (so the softmax scale has m² != 1). */
static const char TINY_V2_JSON[] =
    "{\n"
    "  \"architectures\": [\"DeepseekV2ForCausalLM\"], \"model_type\": \"deepseek_v2\",\n"
    "  \"vocab_size\": 512, \"hidden_size\": 200, \"intermediate_size\": 320,\n"
    "  \"moe_intermediate_size\": 24, \"num_hidden_layers\": 3, \"first_k_dense_replace\": 1,\n"
    "  \"moe_layer_freq\": 1, \"num_attention_heads\": 4, \"num_key_value_heads\": 4,\n"
    "  \"q_lora_rank\": null, \"kv_lora_rank\": 72, \"qk_nope_head_dim\": 24, \"qk_rope_head_dim\": 16,\n"
    "  \"v_head_dim\": 20, \"n_routed_experts\": 64, \"num_experts_per_tok\": 6,\n"
    "  \"n_shared_experts\": 2, \"n_group\": 1, \"topk_group\": 1, \"scoring_func\": \"softmax\",\n"
    "  \"topk_method\": \"greedy\", \"norm_topk_prob\": false, \"routed_scaling_factor\": 1.0,\n"
    "  \"rope_theta\": 10000,\n"
    "  \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4, \"original_max_position_embeddings\": 32,\n"
    "                   \"beta_fast\": 32, \"beta_slow\": 1, \"mscale\": 0.707, \"mscale_all_dim\": 0.707},\n"
    "  \"max_position_embeddings\": 128, \"rms_norm_eps\": 1e-06, \"num_nextn_predict_layers\": 0,\n"
    "  \"tie_word_embeddings\": false, \"hidden_act\": \"silu\", \"attention_bias\": false,\n"
    "  \"torch_dtype\": \"bfloat16\"\n"
    "}\n";

/* For benchmarks: V3's vocabulary, routing and YaRN with narrow layers.
 * 1.09 B parameters: 0.83 GB of FP8 projections (3 MoE layers + the MTP
 * layer at 256 experts each, 1 dense layer) and 0.53 GB of BF16 embedding
 * and head, about 1.4 GB on disk (1.9 GB if the MTP layer carries its own
 * embedding and head, as V3's checkpoint does). */
static const char SMALL_JSON[] =
    "{\n"
    "  \"architectures\": [\"DeepseekV3ForCausalLM\"], \"model_type\": \"deepseek_v3\",\n"
    "  \"vocab_size\": 129280, \"hidden_size\": 1024, \"intermediate_size\": 2816,\n"
    "  \"moe_intermediate_size\": 256, \"num_hidden_layers\": 4, \"first_k_dense_replace\": 1,\n"
    "  \"moe_layer_freq\": 1, \"num_attention_heads\": 8, \"num_key_value_heads\": 8,\n"
    "  \"q_lora_rank\": 384, \"kv_lora_rank\": 256, \"qk_nope_head_dim\": 64, \"qk_rope_head_dim\": 32,\n"
    "  \"v_head_dim\": 64, \"n_routed_experts\": 256, \"num_experts_per_tok\": 8,\n"
    "  \"n_shared_experts\": 1, \"n_group\": 8, \"topk_group\": 4, \"scoring_func\": \"sigmoid\",\n"
    "  \"topk_method\": \"noaux_tc\", \"norm_topk_prob\": true, \"routed_scaling_factor\": 2.5,\n"
    "  \"rope_theta\": 10000,\n"
    "  \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 40, \"original_max_position_embeddings\": 4096,\n"
    "                   \"beta_fast\": 32, \"beta_slow\": 1, \"mscale\": 1.0, \"mscale_all_dim\": 1.0},\n"
    "  \"max_position_embeddings\": 163840, \"rms_norm_eps\": 1e-06, \"num_nextn_predict_layers\": 1,\n"
    "  \"tie_word_embeddings\": false, \"hidden_act\": \"silu\", \"attention_bias\": false,\n"
    "  \"rope_interleave\": true, \"torch_dtype\": \"bfloat16\"\n"
    "}\n";

/* For text in, text out at toy size (the README's tour, ds3 chat's tests):
 * V3's vocabulary, so DeepSeek-V3's tokenizer fits, with two narrow layers,
 * 8 experts top-2 in 2 groups, and an MTP layer. 17 M parameters, nearly
 * all in the BF16 embeddings and heads: about 35 MB on disk (65 MB in f32),
 * a second to write. */
static const char TINY_TEXT_JSON[] =
    "{\n"
    "  \"architectures\": [\"DeepseekV3ForCausalLM\"], \"model_type\": \"deepseek_v3\",\n"
    "  \"vocab_size\": 129280, \"hidden_size\": 32, \"intermediate_size\": 64,\n"
    "  \"moe_intermediate_size\": 8, \"num_hidden_layers\": 2, \"first_k_dense_replace\": 1,\n"
    "  \"moe_layer_freq\": 1, \"num_attention_heads\": 2, \"num_key_value_heads\": 2,\n"
    "  \"q_lora_rank\": 16, \"kv_lora_rank\": 16, \"qk_nope_head_dim\": 8, \"qk_rope_head_dim\": 8,\n"
    "  \"v_head_dim\": 8, \"n_routed_experts\": 8, \"num_experts_per_tok\": 2,\n"
    "  \"n_shared_experts\": 1, \"n_group\": 2, \"topk_group\": 1, \"scoring_func\": \"sigmoid\",\n"
    "  \"topk_method\": \"noaux_tc\", \"norm_topk_prob\": true, \"routed_scaling_factor\": 2.5,\n"
    "  \"rope_theta\": 10000,\n"
    "  \"max_position_embeddings\": 4096, \"rms_norm_eps\": 1e-06, \"num_nextn_predict_layers\": 1,\n"
    "  \"tie_word_embeddings\": false, \"hidden_act\": \"silu\", \"attention_bias\": false,\n"
    "  \"rope_interleave\": true, \"torch_dtype\": \"bfloat16\"\n"
    "}\n";

static const struct {
    const char *name;
    const char *json;
} builtins[] = {
    {"v3", V3_JSON},           {"r1", V3_JSON},           {"v3.1", V3_JSON},
    {"v2", V2_JSON},           {"v2-lite", V2_LITE_JSON}, {"kimi-k2", KIMI_K2_JSON},
    {"moonlight", MOONLIGHT_JSON},
    {"tiny", TINY_JSON},       {"tiny-v2", TINY_V2_JSON}, {"small", SMALL_JSON},
    {"tiny-text", TINY_TEXT_JSON},
};

/* Same order as builtins[]; keep the two in step. */
static const char *const builtin_names[] = {
    "v3", "r1", "v3.1", "v2", "v2-lite", "kimi-k2", "moonlight", "tiny", "tiny-v2", "small", "tiny-text", NULL,
};

const char *const *ds3_builtin_configs(void) { return builtin_names; }

const char *ds3_builtin_config_json(const char *name) {
    if (!name) return NULL;
    for (size_t i = 0; i < sizeof builtins / sizeof builtins[0]; i++)
        if (strcmp(builtins[i].name, name) == 0) return builtins[i].json;
    return NULL;
}

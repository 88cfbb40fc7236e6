/*
 * test_config.c — config.json parsing, validation, serialisation and the
 * built-in configs (config.c, docs/MODEL.md §1).
 *
 * Every built-in must parse to the numbers its model card publishes (spelled
 * out again here, so a typo in either place shows), survive to_json → parse
 * unchanged, and every rejected config must say which field and which file.
 */
#include "harness.h"
#include "generate/generate.h"

#include <cjson/cJSON.h>
#include <unistd.h>

/* ---- helpers --------------------------------------------------------------- */

/* base with one field replaced (value_json) or removed (NULL); "a.b" reaches
 * into an object. Returns malloc'd JSON text. */
static char *mutate(const char *base, const char *key, const char *value_json) {
    cJSON *root = cJSON_Parse(base);
    cJSON *obj = root;
    char k[128];
    snprintf(k, sizeof k, "%s", key);
    char *dot = strchr(k, '.');
    if (dot) {
        *dot = '\0';
        obj = cJSON_GetObjectItemCaseSensitive(root, k);
        memmove(k, dot + 1, strlen(dot + 1) + 1);
    }
    cJSON_DeleteItemFromObjectCaseSensitive(obj, k);
    if (value_json) cJSON_AddItemToObject(obj, k, cJSON_Parse(value_json));
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

/* Parsing must fail with st; the message must start with the source and
 * contain frag (the field). */
static void expect_bad(const char *what, const char *json, ds3_status st, const char *frag) {
    ds3_config c;
    memset(&c, 0x5a, sizeof c);
    ds3_status got = ds3_config_parse(json, "cfg/config.json", &c);
    const char *msg = ds3_last_error();
    CHECK(got == st, "%s: status %s, expected %s (%s)", what, ds3_status_name(got), ds3_status_name(st), msg);
    CHECK(strncmp(msg, "cfg/config.json: ", 17) == 0, "%s: message starts with the source: %s", what, msg);
    CHECK(strstr(msg, frag) != NULL, "%s: message mentions \"%s\": %s", what, frag, msg);
    ds3_config zero;
    memset(&zero, 0, sizeof zero);
    CHECK(memcmp(&c, &zero, sizeof c) == 0, "%s: output zeroed on failure", what);
    fprintf(stderr, "   %-34s %s\n", what, msg);
}

/* Same as expect_bad with one mutation of base. */
static void expect_bad_mut(const char *what, const char *base, const char *key, const char *value,
                           ds3_status st, const char *frag) {
    char *j = mutate(base, key, value);
    expect_bad(what, j, st, frag);
    cJSON_free(j);
}

static ds3_config parse_ok(const char *what, const char *json) {
    ds3_config c;
    ds3_status st = ds3_config_parse(json, what, &c);
    CHECK(st == DS3_OK, "%s parses: %s", what, ds3_last_error());
    return c;
}

/* ---- the built-ins against their published numbers ------------------------- */

/* One row per model: the fields of ds3_config in docs/MODEL.md §1 notation. */
typedef struct {
    const char *name, *model_type;
    int V, D, I, Im, L, first_dense, freq, H, Rq, C, Dn, Dr, Dv, E, K, shared, groups, keep;
    ds3_scoring scoring;
    ds3_topk_method topk;
    bool norm;
    double scaling, theta;
    bool yarn;
    double factor;
    int orig;
    double beta_fast, beta_slow, mscale, mscale_all;
    int max_pos;
    double eps;
    int nextn;
} expected;

static const expected want[] = {
    /* docs/MODEL.md §1 table */
    {"v3", "deepseek_v3", 129280, 7168, 18432, 2048, 61, 3, 1, 128, 1536, 512, 128, 64, 128, 256, 8, 1, 8, 4,
     DS3_SCORE_SIGMOID, DS3_TOPK_NOAUX_TC, true, 2.5, 10000, true, 40, 4096, 32, 1, 1.0, 1.0, 163840, 1e-6, 1},
    {"r1", "deepseek_v3", 129280, 7168, 18432, 2048, 61, 3, 1, 128, 1536, 512, 128, 64, 128, 256, 8, 1, 8, 4,
     DS3_SCORE_SIGMOID, DS3_TOPK_NOAUX_TC, true, 2.5, 10000, true, 40, 4096, 32, 1, 1.0, 1.0, 163840, 1e-6, 1},
    {"v3.1", "deepseek_v3", 129280, 7168, 18432, 2048, 61, 3, 1, 128, 1536, 512, 128, 64, 128, 256, 8, 1, 8, 4,
     DS3_SCORE_SIGMOID, DS3_TOPK_NOAUX_TC, true, 2.5, 10000, true, 40, 4096, 32, 1, 1.0, 1.0, 163840, 1e-6, 1},
    {"v2", "deepseek_v2", 102400, 5120, 12288, 1536, 60, 1, 1, 128, 1536, 512, 128, 64, 128, 160, 6, 2, 8, 3,
     DS3_SCORE_SOFTMAX, DS3_TOPK_GROUP_LIMITED_GREEDY, false, 16.0, 10000, true, 40, 4096, 32, 1, 0.707, 0.707,
     163840, 1e-6, 0},
    {"v2-lite", "deepseek_v2", 102400, 2048, 10944, 1408, 27, 1, 1, 16, 0, 512, 128, 64, 128, 64, 6, 2, 1, 1,
     DS3_SCORE_SOFTMAX, DS3_TOPK_GREEDY, false, 1.0, 10000, true, 40, 4096, 32, 1, 0.707, 0.707, 163840, 1e-6, 0},
    {"kimi-k2", "kimi_k2", 163840, 7168, 18432, 2048, 61, 1, 1, 64, 1536, 512, 128, 64, 128, 384, 8, 1, 1, 1,
     DS3_SCORE_SIGMOID, DS3_TOPK_NOAUX_TC, true, 2.827, 50000, true, 32, 4096, 1, 1, 1.0, 1.0, 131072, 1e-6, 0},
    {"moonlight", "deepseek_v3", 163840, 2048, 11264, 1408, 27, 1, 1, 16, 0, 512, 128, 64, 128, 64, 6, 2, 1, 1,
     DS3_SCORE_SIGMOID, DS3_TOPK_NOAUX_TC, true, 2.446, 50000, false, 0, 0, 0, 0, 0, 0, 8192, 1e-5, 0},
    {"tiny", "deepseek_v3", 512, 200, 320, 24, 3, 1, 1, 4, 96, 72, 24, 16, 20, 256, 8, 1, 8, 4,
     DS3_SCORE_SIGMOID, DS3_TOPK_NOAUX_TC, true, 2.5, 10000, true, 4, 32, 32, 1, 1.0, 1.0, 128, 1e-6, 1},
    {"tiny-v2", "deepseek_v2", 512, 200, 320, 24, 3, 1, 1, 4, 0, 72, 24, 16, 20, 64, 6, 2, 1, 1,
     DS3_SCORE_SOFTMAX, DS3_TOPK_GREEDY, false, 1.0, 10000, true, 4, 32, 32, 1, 0.707, 0.707, 128, 1e-6, 0},
    {"small", "deepseek_v3", 129280, 1024, 2816, 256, 4, 1, 1, 8, 384, 256, 64, 32, 64, 256, 8, 1, 8, 4,
     DS3_SCORE_SIGMOID, DS3_TOPK_NOAUX_TC, true, 2.5, 10000, true, 40, 4096, 32, 1, 1.0, 1.0, 163840, 1e-6, 1},
    {"tiny-text", "deepseek_v3", 129280, 32, 64, 8, 2, 1, 1, 2, 16, 16, 8, 8, 8, 8, 2, 1, 2, 1,
     DS3_SCORE_SIGMOID, DS3_TOPK_NOAUX_TC, true, 2.5, 10000, false, 0, 0, 0, 0, 0, 0, 4096, 1e-6, 1},
};

#define EQ(field, value)                                                                   \
    CHECK(c.field == (value), "%s: " #field " is %g, expected %g", w->name, (double)c.field, \
          (double)(value))

static void check_expected(const expected *w, const ds3_config *cp) {
    const ds3_config c = *cp;
    CHECK(strcmp(c.model_type, w->model_type) == 0, "%s: model_type %s", w->name, c.model_type);
    EQ(vocab_size, w->V); EQ(hidden_size, w->D); EQ(intermediate_size, w->I);
    EQ(moe_intermediate_size, w->Im); EQ(num_hidden_layers, w->L);
    EQ(first_k_dense_replace, w->first_dense); EQ(moe_layer_freq, w->freq);
    EQ(num_attention_heads, w->H); EQ(q_lora_rank, w->Rq); EQ(kv_lora_rank, w->C);
    EQ(qk_nope_head_dim, w->Dn); EQ(qk_rope_head_dim, w->Dr); EQ(v_head_dim, w->Dv);
    EQ(n_routed_experts, w->E); EQ(num_experts_per_tok, w->K); EQ(n_shared_experts, w->shared);
    EQ(n_group, w->groups); EQ(topk_group, w->keep);
    EQ(scoring_func, w->scoring); EQ(topk_method, w->topk); EQ(norm_topk_prob, w->norm);
    EQ(routed_scaling_factor, w->scaling); EQ(rope_theta, w->theta); EQ(rope_yarn, w->yarn);
    EQ(yarn_factor, w->factor); EQ(yarn_original_max_position_embeddings, w->orig);
    EQ(yarn_beta_fast, w->beta_fast); EQ(yarn_beta_slow, w->beta_slow);
    EQ(yarn_mscale, w->mscale); EQ(yarn_mscale_all_dim, w->mscale_all);
    EQ(max_position_embeddings, w->max_pos); EQ(rms_norm_eps, w->eps);
    EQ(num_nextn_predict_layers, w->nextn); EQ(tie_word_embeddings, false);
}

static void test_builtins(void) {
    th_section("built-in configs: published values and round trip");
    const char *const *names = ds3_builtin_configs();
    int count = 0;
    for (; names[count]; count++) {}
    const int nwant = (int)(sizeof want / sizeof want[0]);
    CHECK(count == nwant, "%d built-in names, %d expected", count, nwant);

    for (int i = 0; i < nwant; i++) {
        const expected *w = &want[i];
        int listed = 0;
        for (int k = 0; k < count; k++) listed |= strcmp(names[k], w->name) == 0;
        CHECK(listed, "%s is listed by ds3_builtin_configs", w->name);
        const char *json = ds3_builtin_config_json(w->name);
        CHECK(json != NULL, "%s has JSON", w->name);
        if (!json) continue;
        ds3_config c = parse_ok(w->name, json);
        check_expected(w, &c);

        /* YaRN: transformers derives the factor from max_pos / original, the
         * official code uses factor; the built-ins keep the two equal. */
        if (c.rope_yarn)
            CHECK(c.yarn_factor * c.yarn_original_max_position_embeddings == c.max_position_embeddings,
                  "%s: factor x original_max_position_embeddings == max_position_embeddings", w->name);

        /* Lossless round trip: the structs are memset before parsing, so
         * memcmp compares padding too. */
        char *out = ds3_config_to_json(&c);
        CHECK(out != NULL, "%s: to_json", w->name);
        if (!out) continue;
        ds3_config back;
        CHECK(ds3_config_parse(out, "round-trip", &back) == DS3_OK, "%s: to_json output parses: %s", w->name,
              ds3_last_error());
        CHECK(memcmp(&c, &back, sizeof c) == 0, "%s: parse(to_json(c)) == c", w->name);
        char *out2 = ds3_config_to_json(&back);
        CHECK(out2 && strcmp(out, out2) == 0, "%s: to_json is stable", w->name);

        /* HF-style extras in what we write. */
        cJSON *j = cJSON_Parse(out);
        const cJSON *arch = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "architectures"), 0);
        const char *want_arch = strcmp(w->model_type, "deepseek_v2") == 0 ? "DeepseekV2ForCausalLM"
                                                                           : "DeepseekV3ForCausalLM";
        CHECK(cJSON_IsString(arch) && strcmp(arch->valuestring, want_arch) == 0, "%s: architectures", w->name);
        CHECK(cJSON_GetObjectItem(j, "num_key_value_heads")->valuedouble == w->H, "%s: num_key_value_heads = H",
              w->name);
        CHECK(cJSON_IsString(cJSON_GetObjectItem(j, "hidden_act")), "%s: hidden_act", w->name);
        CHECK(cJSON_IsFalse(cJSON_GetObjectItem(j, "attention_bias")), "%s: attention_bias false", w->name);
        CHECK(w->Rq ? cJSON_IsNumber(cJSON_GetObjectItem(j, "q_lora_rank"))
                    : cJSON_IsNull(cJSON_GetObjectItem(j, "q_lora_rank")),
              "%s: q_lora_rank null iff 0", w->name);
        const cJSON *rs = cJSON_GetObjectItem(j, "rope_scaling");
        CHECK(w->yarn ? cJSON_IsString(cJSON_GetObjectItem(rs, "type")) &&
                            strcmp(cJSON_GetObjectItem(rs, "type")->valuestring, "yarn") == 0
                      : cJSON_IsNull(rs),
              "%s: rope_scaling", w->name);
        const cJSON *ri = cJSON_GetObjectItem(j, "rope_interleave");
        CHECK(strcmp(w->model_type, "deepseek_v2") == 0 ? ri == NULL : cJSON_IsTrue(ri), "%s: rope_interleave",
              w->name);
        cJSON_Delete(j);
        free(out);
        free(out2);
    }
    CHECK(ds3_builtin_config_json("v4") == NULL, "unknown name gives NULL");
    CHECK(ds3_builtin_config_json(NULL) == NULL, "NULL name gives NULL");
    CHECK(ds3_builtin_config_json("r1") == ds3_builtin_config_json("v3"), "r1 is V3's architecture");

    /* The numbers written are the short ones. */
    ds3_config c = parse_ok("v2", ds3_builtin_config_json("v2"));
    char *out = ds3_config_to_json(&c);
    CHECK(out && strstr(out, "\"mscale\": 0.707,") && strstr(out, "\"rms_norm_eps\": 1e-06,"),
          "doubles printed in shortest round-trip form");
    free(out);
}

/* ---- semantics ----------------------------------------------------------- */

static void test_layers(void) {
    th_section("ds3_layer_is_moe");
    ds3_config v3 = parse_ok("v3", ds3_builtin_config_json("v3"));
    int bad = 0;
    for (int i = 0; i < 61; i++) bad += ds3_layer_is_moe(&v3, i) != (i >= 3);
    CHECK(bad == 0, "V3: layers 0..2 dense, 3..60 MoE");
    ds3_config tiny = parse_ok("tiny", ds3_builtin_config_json("tiny"));
    CHECK(!ds3_layer_is_moe(&tiny, 0) && ds3_layer_is_moe(&tiny, 1) && ds3_layer_is_moe(&tiny, 2), "tiny: 0 dense, 1-2 MoE");
    ds3_config f = tiny;
    f.moe_layer_freq = 2;
    f.first_k_dense_replace = 1;
    CHECK(!ds3_layer_is_moe(&f, 1) && ds3_layer_is_moe(&f, 2) && !ds3_layer_is_moe(&f, 3), "freq 2: even layers only");
    f.n_routed_experts = 0;
    CHECK(!ds3_layer_is_moe(&f, 2), "no experts: no MoE layers");
}

/* Only the required fields: everything else takes HF's defaults. */
static const char MINIMAL[] =
    "{\"vocab_size\": 100, \"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 2,"
    " \"num_attention_heads\": 2, \"kv_lora_rank\": 16, \"qk_nope_head_dim\": 8, \"qk_rope_head_dim\": 4,"
    " \"v_head_dim\": 8}";

static void test_defaults(void) {
    th_section("defaults and null handling");
    ds3_config c = parse_ok("minimal", MINIMAL);
    CHECK(strcmp(c.model_type, "deepseek_v3") == 0, "model_type default");
    CHECK(c.q_lora_rank == 0 && c.n_routed_experts == 0 && c.num_experts_per_tok == 0 && c.n_shared_experts == 0,
          "no query compression, no experts");
    CHECK(c.first_k_dense_replace == 0 && c.moe_layer_freq == 1 && c.n_group == 1 && c.topk_group == 1, "MoE layout defaults");
    CHECK(c.scoring_func == DS3_SCORE_SOFTMAX && c.topk_method == DS3_TOPK_GREEDY && !c.norm_topk_prob &&
          c.routed_scaling_factor == 1.0, "routing defaults (V2's)");
    CHECK(c.rope_theta == 10000 && !c.rope_yarn && c.max_position_embeddings == 4096, "rope defaults");
    CHECK(c.rms_norm_eps == 1e-6 && c.num_nextn_predict_layers == 0 && !c.tie_word_embeddings, "other defaults");
    CHECK(!ds3_layer_is_moe(&c, 0) && !ds3_layer_is_moe(&c, 1), "dense model");

    char *out = ds3_config_to_json(&c);
    ds3_config back;
    CHECK(out && ds3_config_parse(out, "minimal round trip", &back) == DS3_OK && memcmp(&c, &back, sizeof c) == 0,
          "dense config round-trips (n_routed_experts null)");
    CHECK(out && strstr(out, "\"n_routed_experts\": null"), "no experts written as null");
    free(out);

    /* Explicit nulls read as absent. */
    const char *tiny = ds3_builtin_config_json("tiny");
    char *j = mutate(tiny, "n_shared_experts", "null");
    c = parse_ok("n_shared_experts null", j);
    CHECK(c.n_shared_experts == 0, "n_shared_experts null -> 0");
    cJSON_free(j);
    j = mutate(tiny, "rope_scaling", "null");
    c = parse_ok("rope_scaling null", j);
    CHECK(!c.rope_yarn && c.yarn_factor == 0, "rope_scaling null -> plain RoPE");
    cJSON_free(j);
    j = mutate(tiny, "q_lora_rank", "null");
    c = parse_ok("q_lora_rank null", j);
    CHECK(c.q_lora_rank == 0, "q_lora_rank null -> 0");
    cJSON_free(j);
    j = mutate(tiny, "n_routed_experts", "null");
    c = parse_ok("n_routed_experts null", j);
    CHECK(c.n_routed_experts == 0 && !ds3_layer_is_moe(&c, 1), "n_routed_experts null -> dense");
    cJSON_free(j);

    /* rope_type (newer spelling) and integral floats for integer fields. */
    j = mutate(tiny, "rope_scaling", "{\"rope_type\": \"yarn\", \"factor\": 4.0, \"original_max_position_embeddings\": 32.0}");
    c = parse_ok("rope_type yarn", j);
    CHECK(c.rope_yarn && c.yarn_factor == 4 && c.yarn_original_max_position_embeddings == 32 &&
          c.yarn_beta_fast == 32 && c.yarn_beta_slow == 1 && c.yarn_mscale == 1 && c.yarn_mscale_all_dim == 0,
          "rope_type accepted, YaRN defaults beta_fast 32, beta_slow 1, mscale 1, mscale_all_dim 0");
    cJSON_free(j);
    j = mutate(tiny, "rope_scaling", "{\"rope_type\": \"default\"}");
    c = parse_ok("rope_type default", j);
    CHECK(!c.rope_yarn, "rope_type default is plain RoPE");
    cJSON_free(j);

    /* transformers 5 layout: rope_parameters holds rope_theta and the scaling. */
    char *j1 = mutate(tiny, "rope_scaling", NULL);
    char *j2 = mutate(j1, "rope_theta", NULL);
    char *j3 = mutate(j2, "rope_parameters", "{\"rope_type\": \"yarn\", \"rope_theta\": 50000.0, \"factor\": 4,"
                                              " \"original_max_position_embeddings\": 32, \"beta_fast\": 1}");
    c = parse_ok("rope_parameters", j3);
    CHECK(c.rope_yarn && c.rope_theta == 50000 && c.yarn_beta_fast == 1 && c.yarn_factor == 4, "rope_parameters read");
    cJSON_free(j1); cJSON_free(j2); cJSON_free(j3);
}

static void test_errors(void) {
    th_section("rejected configs");
    const char *tiny = ds3_builtin_config_json("tiny");

    expect_bad_mut("missing required field", tiny, "hidden_size", NULL, DS3_ERR_CONFIG,
                   "missing required field 'hidden_size'");
    expect_bad_mut("string for an integer", tiny, "hidden_size", "\"abc\"", DS3_ERR_CONFIG,
                   "cfg/config.json: field 'hidden_size' must be a positive integer, got \"abc\"");
    expect_bad_mut("zero dimension", tiny, "hidden_size", "0", DS3_ERR_CONFIG, "'hidden_size'");
    expect_bad_mut("negative dimension", tiny, "kv_lora_rank", "-5", DS3_ERR_CONFIG, "'kv_lora_rank'");
    expect_bad_mut("fractional dimension", tiny, "v_head_dim", "2.5", DS3_ERR_CONFIG, "'v_head_dim'");
    expect_bad_mut("absurd dimension", tiny, "vocab_size", "2097152", DS3_ERR_CONFIG, "'vocab_size'");
    expect_bad_mut("too many layers", tiny, "num_hidden_layers", "5000", DS3_ERR_CONFIG, "'num_hidden_layers'");
    expect_bad_mut("boolean for an integer", tiny, "num_attention_heads", "true", DS3_ERR_CONFIG,
                   "'num_attention_heads'");
    expect_bad_mut("null required field", tiny, "vocab_size", "null", DS3_ERR_CONFIG, "'vocab_size'");
    expect_bad_mut("K > E", tiny, "num_experts_per_tok", "300", DS3_ERR_CONFIG, "'num_experts_per_tok'");
    expect_bad_mut("E not divisible by groups", tiny, "n_group", "7", DS3_ERR_CONFIG, "n_group");
    expect_bad_mut("topk_group > n_group", tiny, "topk_group", "9", DS3_ERR_CONFIG, "'topk_group'");
    {
        /* 256 experts in 8 groups of 32, keep 1 group: 40 > 32 experts reachable */
        char *a = mutate(tiny, "topk_group", "1");
        expect_bad_mut("K beyond the kept groups", a, "num_experts_per_tok", "40", DS3_ERR_CONFIG,
                       "'num_experts_per_tok'");
        cJSON_free(a);
    }
    expect_bad_mut("odd rope dim", tiny, "qk_rope_head_dim", "15", DS3_ERR_CONFIG, "'qk_rope_head_dim'");
    expect_bad_mut("unknown scoring_func", tiny, "scoring_func", "\"tanh\"", DS3_ERR_CONFIG, "'scoring_func'");
    expect_bad_mut("unknown topk_method", tiny, "topk_method", "\"best\"", DS3_ERR_CONFIG, "'topk_method'");
    expect_bad_mut("linear rope scaling", tiny, "rope_scaling", "{\"type\": \"linear\", \"factor\": 2}",
                   DS3_ERR_CONFIG, "'linear'");
    expect_bad_mut("dynamic rope scaling", tiny, "rope_scaling", "{\"rope_type\": \"dynamic\", \"factor\": 2}",
                   DS3_ERR_CONFIG, "rope_scaling");
    expect_bad_mut("yarn without factor", tiny, "rope_scaling.factor", NULL, DS3_ERR_CONFIG,
                   "'rope_scaling.factor'");
    expect_bad_mut("yarn factor < 1", tiny, "rope_scaling.factor", "0.5", DS3_ERR_CONFIG, "factor");
    expect_bad_mut("yarn beta as string", tiny, "rope_scaling.beta_fast", "\"32\"", DS3_ERR_CONFIG,
                   "'rope_scaling.beta_fast'");
    expect_bad_mut("rope_scaling a string", tiny, "rope_scaling", "\"yarn\"", DS3_ERR_CONFIG, "'rope_scaling'");
    expect_bad_mut("bool as string", tiny, "norm_topk_prob", "\"yes\"", DS3_ERR_CONFIG, "'norm_topk_prob'");
    expect_bad_mut("negative scaling factor", tiny, "routed_scaling_factor", "-1", DS3_ERR_CONFIG,
                   "'routed_scaling_factor'");
    expect_bad_mut("zero rope_theta", tiny, "rope_theta", "0", DS3_ERR_CONFIG, "'rope_theta'");
    expect_bad_mut("eps of 1", tiny, "rms_norm_eps", "1", DS3_ERR_CONFIG, "'rms_norm_eps'");
    expect_bad_mut("experts without width", tiny, "moe_intermediate_size", NULL, DS3_ERR_CONFIG,
                   "'moe_intermediate_size'");
    expect_bad_mut("experts without K", tiny, "num_experts_per_tok", NULL, DS3_ERR_CONFIG, "'num_experts_per_tok'");
    expect_bad_mut("model_type not a string", tiny, "model_type", "3", DS3_ERR_CONFIG, "'model_type'");
    expect_bad_mut("model_type with quotes", tiny, "model_type", "\"a\\\"b\"", DS3_ERR_CONFIG, "'model_type'");
    expect_bad_mut("too many MTP layers", tiny, "num_nextn_predict_layers", "1000", DS3_ERR_CONFIG,
                   "'num_nextn_predict_layers'");
    expect_bad("invalid JSON", "{\"hidden_size\": 12,", DS3_ERR_FORMAT, "not valid JSON");
    expect_bad("trailing garbage", "{} x", DS3_ERR_FORMAT, "not valid JSON");
    expect_bad("not an object", "[1, 2, 3]", DS3_ERR_FORMAT, "not a JSON object");
}

static void test_load(void) {
    th_section("ds3_config_load");
    char dir[] = "/tmp/ds3-cfg-XXXXXX";
    if (!mkdtemp(dir)) { perror("mkdtemp"); return; }
    char path[64];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    fputs(ds3_builtin_config_json("kimi-k2"), f);
    fclose(f);
    ds3_config c, ref = parse_ok("kimi-k2", ds3_builtin_config_json("kimi-k2"));
    CHECK(ds3_config_load(path, &c) == DS3_OK, "load: %s", ds3_last_error());
    CHECK(memcmp(&c, &ref, sizeof c) == 0, "loaded file equals the parsed text");

    f = fopen(path, "w");
    fputs("{\"hidden_size\": \"wide\"}", f);
    fclose(f);
    CHECK(ds3_config_load(path, &c) == DS3_ERR_CONFIG, "bad file rejected");
    CHECK(strncmp(ds3_last_error(), path, strlen(path)) == 0, "message names the path: %s", ds3_last_error());
    unlink(path);

    CHECK(ds3_config_load(path, &c) == DS3_ERR_IO, "missing file is an IO error");
    CHECK(strstr(ds3_last_error(), path) != NULL, "message names the path: %s", ds3_last_error());
    rmdir(dir);
}

int main(void) {
    test_builtins();
    test_layers();
    test_defaults();
    test_errors();
    test_load();
    return th_finish();
}

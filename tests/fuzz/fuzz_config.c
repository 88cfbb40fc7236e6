/*
 * fuzz_config.c — libFuzzer target for config.json (src/model/config.c): the input
 * is the file's text.
 *
 * A config that parses is what every later stage trusts — the loader sizes
 * tensors from it, the state sizes its caches from it, `ds3 info` multiplies
 * its fields — so the target checks, and aborts if not:
 *   - the consistency rules the kernels assume (K <= E, groups divide E, even
 *     RoPE dim, …) and the bound on every weight-matrix width, which keeps
 *     cache and scratch sizes (widths × positions) far from size_t overflow;
 *   - YaRN frequencies, the rope factor and the softmax scale are finite and
 *     positive (no silent NaN model from a config that "loaded");
 *   - to_json → parse gives the same struct (what mkmodel writes reads back);
 *   - the `ds3 info` report runs (info.c is included for its static printer)
 *     without undefined behaviour.
 * A failure must leave a message naming the source.
 */
#include "../../src/tools/info.c"

#include <stdio.h>
#include <stdlib.h>

#define FUZZ_REQUIRE(cond)                                                                     \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "fuzz_config: invariant broken: %s (line %d)\n", #cond, __LINE__); \
            abort();                                                                           \
        }                                                                                      \
    } while (0)

/* config.c's bound on a single dimension (MAX_DIM there). */
#define FUZZ_MAX_DIM (1 << 20)

static FILE *devnull;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!devnull && !(devnull = fopen("/dev/null", "w"))) abort();
    /* ds3_config_load hands the parser a NUL-terminated copy of the file. */
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';

    ds3_config c;
    ds3_status st = ds3_config_parse(text, "fuzz/config.json", &c);
    free(text);
    if (st != DS3_OK) {
        FUZZ_REQUIRE(strncmp(ds3_last_error(), "fuzz/config.json: ", 18) == 0);
        return 0;
    }

    /* What the loader and the kernels take for granted. */
    FUZZ_REQUIRE(c.vocab_size > 0 && c.hidden_size > 0 && c.intermediate_size > 0);
    FUZZ_REQUIRE(c.num_hidden_layers > 0 && c.num_attention_heads > 0 && c.kv_lora_rank > 0);
    FUZZ_REQUIRE(c.qk_nope_head_dim > 0 && c.qk_rope_head_dim > 0 && c.qk_rope_head_dim % 2 == 0);
    FUZZ_REQUIRE(c.v_head_dim > 0 && c.q_lora_rank >= 0);
    FUZZ_REQUIRE(c.max_position_embeddings > 0 && c.num_nextn_predict_layers >= 0);
    FUZZ_REQUIRE(c.n_routed_experts >= 0 && c.n_routed_experts <= DS3_MAX_EXPERTS);
    if (c.n_routed_experts > 0) {
        FUZZ_REQUIRE(c.num_experts_per_tok >= 1 && c.num_experts_per_tok <= c.n_routed_experts);
        FUZZ_REQUIRE(c.moe_intermediate_size > 0 && c.moe_layer_freq >= 1);
        FUZZ_REQUIRE(c.n_group >= 1 && c.n_routed_experts % c.n_group == 0);
        FUZZ_REQUIRE(c.topk_group >= 1 && c.topk_group <= c.n_group);
        FUZZ_REQUIRE(c.n_group == 1 ||
                     c.num_experts_per_tok <= c.topk_group * (c.n_routed_experts / c.n_group));
    }
    /* Every weight matrix's rows and columns (eh_proj's 2D aside): bounded
     * like a single field, so widths x positions cannot overflow. */
    const int64_t H = c.num_attention_heads, Dn = c.qk_nope_head_dim, Dr = c.qk_rope_head_dim,
                  Dv = c.v_head_dim, C = c.kv_lora_rank, D = c.hidden_size;
    const int64_t widths[] = {H * (Dn + Dr), H * (Dn + Dv), H * Dv, C + Dr, D,
                              (int64_t)c.n_shared_experts * c.moe_intermediate_size};
    for (size_t i = 0; i < sizeof widths / sizeof widths[0]; i++) FUZZ_REQUIRE(widths[i] <= FUZZ_MAX_DIM);
    FUZZ_REQUIRE(isfinite(c.rms_norm_eps) && c.rms_norm_eps > 0);
    FUZZ_REQUIRE(isfinite(c.routed_scaling_factor) && c.routed_scaling_factor > 0);

    /* RoPE: finite frequencies (0 when a huge factor underflows them); the
     * softmax scale and the rotary factor finite and positive. */
    static double *fr = NULL;   /* [Dr/2], Dr <= FUZZ_MAX_DIM */
    if (!fr && !(fr = malloc(sizeof(double) * (FUZZ_MAX_DIM / 2 + 1)))) abort();
    ds3_yarn_freqs(fr, &c);
    for (int j = 0; j < c.qk_rope_head_dim / 2; j++) FUZZ_REQUIRE(isfinite(fr[j]) && fr[j] >= 0);
    double scale = ds3_attn_softmax_scale(&c), afac = ds3_rope_attn_factor(&c);
    FUZZ_REQUIRE(isfinite(scale) && scale > 0 && isfinite(afac) && afac > 0);

    /* Round trip: the serialised config reads back identical. */
    char *json = ds3_config_to_json(&c);
    FUZZ_REQUIRE(json != NULL);
    ds3_config back;
    st = ds3_config_parse(json, "round-trip", &back);
    if (st != DS3_OK) fprintf(stderr, "round trip: %s\n%s\n", ds3_last_error(), json);
    FUZZ_REQUIRE(st == DS3_OK);
    FUZZ_REQUIRE(memcmp(&c, &back, sizeof c) == 0);
    free(json);

    /* `ds3 info --config`: parameter counts and KV-cache sizes. */
    info_all(&c, devnull);
    return 0;
}

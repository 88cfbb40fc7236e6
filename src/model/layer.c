/*
 * layer.c — one decoder layer (docs/MODEL.md §2), the unit the main model
 * stacks num_hidden_layers times and each MTP depth runs once (TRM_k of
 * equation (22)):
 *
 *   h = h + Attn(RMSNorm_in(h))          attention sublayer: MLA (mla.c)
 *   h = h + FFN(RMSNorm_post(h))         feed-forward sublayer: a dense SwiGLU
 *                                        (mlp.c) or DeepSeekMoE (moe.c), by
 *                                        the layer's index (ds3_layer_is_moe)
 *
 * Pre-norm residual blocks, as in the official Block.forward and
 * transformers' DeepseekV3DecoderLayer. The residual stream s->x [T][D] is
 * updated in place; s->xn holds the normalised input and s->y a sublayer's
 * output. Dumps: <prefix>.attn.out, .ffn.out, .out (docs/DUMP_FORMAT.md).
 *
 * The two sublayers are separate functions so that a replay (replay.c) can
 * run each from a build's own inputs with the same code.
 */
#include "model/model.h"

/* Attention sublayer: h = h + Attn(RMSNorm_in(h)); the output before the add
 * stays in s->y. kv holds positions 0..start-1 and gets start..start+T-1. */
void ds3_layer_attn(ds3_state *s, const ds3_layer *l, ds3_kv_cache *kv, int T, int start, const char *prefix) {
    const int D = s->m->cfg.hidden_size;
    const size_t n = (size_t)T * D;
#pragma omp parallel for schedule(static) if (n >= DS3_PAR_MIN && !ds3_in_parallel())
    for (int t = 0; t < T; t++) ds3_norm(s, s->xn + (size_t)t * D, s->x + (size_t)t * D, l->input_layernorm, D);
    ds3_mla(s, l, kv, s->y, s->xn, T, start);
    ds3_dump_act(s, DS3_DT_REAL, D, start, T, s->y, "%s.attn.out", prefix);
#pragma omp parallel for schedule(static) if (n >= DS3_PAR_MIN && !ds3_in_parallel())
    for (size_t i = 0; i < n; i++) s->x[i] += s->y[i];
    ds3_round(s, s->x, n, DS3_EMUL_RESIDUAL);
}

/* Feed-forward sublayer: h = h + FFN(RMSNorm_post(h)), dense or MoE by the
 * layer; the output before the add stays in s->y. */
void ds3_layer_ffn(ds3_state *s, const ds3_layer *l, int T, int start, const char *prefix) {
    const ds3_config *c = &s->m->cfg;
    const int D = c->hidden_size;
    const size_t n = (size_t)T * D;
#pragma omp parallel for schedule(static) if (n >= DS3_PAR_MIN && !ds3_in_parallel())
    for (int t = 0; t < T; t++)
        ds3_norm(s, s->xn + (size_t)t * D, s->x + (size_t)t * D, l->post_attention_layernorm, D);
    if (l->is_moe) {
        ds3_moe(s, l, s->y, s->xn, T, start, prefix);
    } else {
        ds3_arena a = ds3_scratch(s);
        ds3_mlp(s, s->y, s->xn, &l->mlp, c->intermediate_size, T, &a);
    }
    ds3_dump_act(s, DS3_DT_REAL, D, start, T, s->y, "%s.ffn.out", prefix);
#pragma omp parallel for schedule(static) if (n >= DS3_PAR_MIN && !ds3_in_parallel())
    for (size_t i = 0; i < n; i++) s->x[i] += s->y[i];
    ds3_round(s, s->x, n, DS3_EMUL_RESIDUAL);
    ds3_dump_act(s, DS3_DT_REAL, D, start, T, s->x, "%s.out", prefix);
}

void ds3_layer_forward(ds3_state *s, const ds3_layer *l, ds3_kv_cache *kv, int T, int start, const char *prefix) {
    ds3_layer_attn(s, l, kv, T, start, prefix);
    ds3_layer_ffn(s, l, T, start, prefix);
}

/*
 * model.c — the forward pass (SPEC §2) and the inference state.
 *
 *   h = embed_tokens[token]                     (no scaling)
 *   for each layer:  h = h + Attn(RMSNorm_in(h))
 *                    h = h + FFN(RMSNorm_post(h))      FFN: dense SwiGLU or MoE
 *   logits = lm_head · RMSNorm_final(h)
 *
 * A call runs T tokens at positions start..start+T-1 against the KV caches,
 * which must already hold positions 0..start-1: prefill, chunked prefill and
 * decode are the same code with different T. Calls longer than the state's
 * scratch (max_T tokens) are split into chunks, which is the same computation.
 *
 * The state owns everything the pass writes: caches sized for max_seq
 * positions, and scratch sized once for max_T tokens from the sublayers'
 * own accounting (ds3_*_work_size). Nothing is allocated while running.
 *
 * The final-normed hidden states RMSNorm_final(h) of a chunk stay in the state
 * (s->hfinal) after the call, with the row of the position before the chunk:
 * the MTP module reads them (mtp.c, SPEC §6). When MTP runs with the forward
 * pass (ds3_state_set_mtp, or while dumping), each chunk ends with the MTP
 * depths on the rows whose next token the chunk supplies.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* Tokens per forward chunk: bounds the scratch, big enough for efficient GEMMs. */
#define DS3_MAX_CHUNK 256

/* ========================================================================== */
/* State                                                                       */
/* ========================================================================== */

ds3_status ds3_state_new(const ds3_model *m, int max_seq, ds3_attn_mode attn, ds3_state **out) {
    *out = NULL;
    const ds3_config *c = &m->cfg;
    if (max_seq <= 0)
        return ds3_fail(DS3_ERR_ARG, "ds3_state_new: max_seq must be positive, got %d", max_seq);
    if (attn != DS3_ATTN_ABSORB && attn != DS3_ATTN_NAIVE)
        return ds3_fail(DS3_ERR_ARG, "ds3_state_new: unknown attention mode %d", (int)attn);

    ds3_state *s = ds3_calloc(1, sizeof *s);
    if (!s) return DS3_ERR_NOMEM;
    s->m = m;
    s->max_seq = max_seq;
    s->attn = attn;
    s->max_T = max_seq < DS3_MAX_CHUNK ? max_seq : DS3_MAX_CHUNK;

    const size_t D = c->hidden_size, H = c->num_attention_heads, C = c->kv_lora_rank,
                 Dn = c->qk_nope_head_dim, Dr = c->qk_rope_head_dim, Dv = c->v_head_dim, S = max_seq;
    const int n_cache = c->num_hidden_layers + m->n_mtp;
    s->cache = ds3_calloc((size_t)n_cache, sizeof *s->cache);
    bool ok = s->cache != NULL;
    for (int i = 0; i < n_cache && ok; i++) {
        ds3_kv_cache *kv = &s->cache[i];
        if (attn == DS3_ATTN_ABSORB) {
            kv->c = ds3_calloc(S * C, sizeof(ds3_real));
            kv->k_pe = ds3_calloc(S * Dr, sizeof(ds3_real));
            ok = kv->c && kv->k_pe;
        } else {
            kv->k = ds3_calloc(S * H * (Dn + Dr), sizeof(ds3_real));
            kv->v = ds3_calloc(S * H * Dv, sizeof(ds3_real));
            ok = kv->k && kv->v;
        }
    }
    size_t T = s->max_T;
    size_t wm = ds3_mla_work_size(c, (int)T, max_seq, attn), wf = ds3_ffn_work_size(c, (int)T);
    s->work_size = wm > wf ? wm : wf;
    /* the MTP input [enorm(e) | hnorm(h)] is 2D per row (mtp.c) */
    if (m->n_mtp > 0 && s->work_size < 2 * T * D) s->work_size = 2 * T * D;
    s->iwork_size = ds3_moe_iwork_size(c, (int)T);
    if (ok) {
        s->x = ds3_calloc(T * D, sizeof(ds3_real));
        s->xn = ds3_calloc(T * D, sizeof(ds3_real));
        s->y = ds3_calloc(T * D, sizeof(ds3_real));
        s->work = ds3_calloc(s->work_size, sizeof(ds3_real));
        s->iwork = ds3_calloc(s->iwork_size, sizeof(int32_t));
        s->hfinal.rows = ds3_calloc((T + 1) * D, sizeof(ds3_real));
        ok = s->x && s->xn && s->y && s->work && s->iwork && s->hfinal.rows;
    }
    if (ok && m->n_mtp > 0) {
        s->hmtp = ds3_calloc((size_t)m->n_mtp, sizeof *s->hmtp);
        ok = s->hmtp != NULL;
        for (int k = 0; ok && k < m->n_mtp; k++)
            ok = (s->hmtp[k].rows = ds3_calloc((T + 1) * D, sizeof(ds3_real))) != NULL;
    }
    if (!ok) {
        ds3_state_free(s);
        return ds3_fail(DS3_ERR_NOMEM, "out of memory for the state of %d positions", max_seq);
    }
    *out = s;
    return DS3_OK;
}

void ds3_state_free(ds3_state *s) {
    if (!s) return;
    int n_cache = s->m->cfg.num_hidden_layers + s->m->n_mtp;
    for (int i = 0; s->cache && i < n_cache; i++) {
        free(s->cache[i].c);
        free(s->cache[i].k_pe);
        free(s->cache[i].k);
        free(s->cache[i].v);
    }
    free(s->cache);
    free(s->x);
    free(s->xn);
    free(s->y);
    free(s->work);
    free(s->iwork);
    free(s->hfinal.rows);
    for (int k = 0; s->hmtp && k < s->m->n_mtp; k++) free(s->hmtp[k].rows);
    free(s->hmtp);
    free(s->dump_logits);
    ds3_dumper_free(s->dump);
    ds3_emul_free(s->emul);
    ds3_emul_release();
    ds3_linear_release();
    free(s);
}

/* ========================================================================== */
/* Dumps                                                                       */
/* ========================================================================== */

void ds3_dump_act(ds3_state *s, ds3_dtype dt, int ninner, const int64_t *inner, int start, int T,
                  const void *data, const char *fmt, ...) {
    if (!s->dump) return;
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    ds3_dump_rows(s->dump, name, dt, ninner, inner, start, T, data);
}

/* A [T][D] activation in the scalar type. */
#define DUMP_D(s, start, T, data, ...)                                               \
    do {                                                                             \
        if ((s)->dump) {                                                             \
            int64_t d_ = (s)->m->cfg.hidden_size;                                    \
            ds3_dump_act((s), DS3_DT_REAL, 1, &d_, (start), (T), (data), __VA_ARGS__); \
        }                                                                            \
    } while (0)

/* ========================================================================== */
/* Forward                                                                     */
/* ========================================================================== */

/*
 * One decoder layer on the residual stream s->x [T][D], in place. `prefix`
 * names its dumps ("layers.3", "mtp.0"); `kv` is its own cache.
 */
void ds3_layer_forward(ds3_state *s, const ds3_layer *l, ds3_kv_cache *kv, int T, int start,
                       const char *prefix) {
    const ds3_config *c = &s->m->cfg;
    const int D = c->hidden_size;

    /* attention sublayer */
    for (int t = 0; t < T; t++)
        ds3_rmsnorm_em(s, s->xn + (size_t)t * D, s->x + (size_t)t * D, l->input_layernorm, D, c->rms_norm_eps);
    ds3_mla(s, l, kv, s->y, s->xn, T, start);
    DUMP_D(s, start, T, s->y, "%s.attn.out", prefix);
    for (size_t i = 0; i < (size_t)T * D; i++) s->x[i] += s->y[i];
    ds3_emul_round(s, s->x, (size_t)T * D, DS3_EMUL_RESIDUAL);

    /* feed-forward sublayer */
    for (int t = 0; t < T; t++)
        ds3_rmsnorm_em(s, s->xn + (size_t)t * D, s->x + (size_t)t * D, l->post_attention_layernorm, D,
                       c->rms_norm_eps);
    if (l->is_moe) ds3_moe(s, l, s->y, s->xn, T, start, prefix);
    else ds3_mlp_em(s, s->y, s->xn, &l->mlp, c->intermediate_size, T, s->work);
    DUMP_D(s, start, T, s->y, "%s.ffn.out", prefix);
    for (size_t i = 0; i < (size_t)T * D; i++) s->x[i] += s->y[i];
    ds3_emul_round(s, s->x, (size_t)T * D, DS3_EMUL_RESIDUAL);
    DUMP_D(s, start, T, s->x, "%s.out", prefix);
}

/* T <= max_T tokens; logits [T][V] or NULL. */
static void forward_chunk(ds3_state *s, const int32_t *tokens, int T, int start, ds3_real *logits) {
    const ds3_model *m = s->m;
    const ds3_config *c = &m->cfg;
    const int D = c->hidden_size;

    for (int t = 0; t < T; t++) ds3_tensor_rows(s->x + (size_t)t * D, &m->embed_tokens, tokens[t], 1);
    ds3_emul_round(s, s->x, (size_t)T * D, DS3_EMUL_RESIDUAL);
    DUMP_D(s, start, T, s->x, "embed");

    char prefix[32];
    for (int i = 0; i < c->num_hidden_layers; i++) {
        snprintf(prefix, sizeof prefix, "layers.%d", i);
        ds3_layer_forward(s, &m->layers[i], &s->cache[i], T, start, prefix);
    }

    /* RMSNorm_final(h) stays in the state: the MTP rows read it (SPEC §6). */
    ds3_real *hn = ds3_hwin_begin(&s->hfinal, start, D);
    for (int t = 0; t < T; t++)
        ds3_rmsnorm_em(s, hn + (size_t)t * D, s->x + (size_t)t * D, m->norm, D, c->rms_norm_eps);
    s->hfinal.n += T;
    DUMP_D(s, start, T, hn, "norm");

    if (!logits && s->dump) logits = s->dump_logits;
    if (logits) {
        ds3_linear_em(s, logits, hn, &m->lm_head, T);
        int64_t v = c->vocab_size;
        ds3_dump_act(s, DS3_DT_REAL, 1, &v, start, T, logits, "logits");
    }

    if (m->n_mtp > 0 && (s->mtp_on || s->dump)) ds3_mtp_chunk(s, tokens, T, start);
}

ds3_status ds3_forward(ds3_state *s, const int32_t *tokens, int n, int start, ds3_real *logits) {
    const ds3_config *c = &s->m->cfg;
    if (n <= 0) return ds3_fail(DS3_ERR_ARG, "ds3_forward: %d tokens (need at least 1)", n);
    if (start < 0 || (int64_t)start + n > s->max_seq)
        return ds3_fail(DS3_ERR_ARG, "ds3_forward: positions %d..%d exceed the state's %d positions", start,
                        start + n - 1, s->max_seq);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
            return ds3_fail(DS3_ERR_ARG, "token %d at index %d is out of range (vocab %d)", tokens[i], i,
                            c->vocab_size);
    /* Dumps record logits even when the caller wants none: give them a buffer,
     * once, before the pass (not inside it). */
    if (s->dump && (!logits || s->m->n_mtp > 0) && !s->dump_logits) {
        s->dump_logits = ds3_calloc((size_t)s->max_T * c->vocab_size, sizeof(ds3_real));
        if (!s->dump_logits) return DS3_ERR_NOMEM;
    }
    for (int off = 0; off < n; off += s->max_T) {
        int T = n - off < s->max_T ? n - off : s->max_T;
        forward_chunk(s, tokens + off, T, start + off,
                      logits ? logits + (size_t)off * c->vocab_size : NULL);
    }
    return DS3_OK;
}

/* ========================================================================== */
/* Positions                                                                   */
/* ========================================================================== */

ds3_real *ds3_hwin_begin(ds3_hwin *w, int first, int D) {
    int keep = first - 1;
    if (w->n > 0 && keep >= w->pos && keep < w->pos + w->n) {
        if (keep > w->pos)
            memmove(w->rows, w->rows + (size_t)(keep - w->pos) * D, (size_t)D * sizeof(ds3_real));
        w->pos = keep;
        w->n = 1;
        return w->rows + D;
    }
    w->pos = first;
    w->n = 0;
    return w->rows;
}

/* Keep only the rows of positions < end. */
static void hwin_trim(ds3_hwin *w, int end) {
    if (w->pos + w->n > end) w->n = end > w->pos ? end - w->pos : 0;
}

/*
 * Rollback. The caches are positional: position p's entry is written by the
 * forward call that runs p, and attention at p reads entries 0..p only, so the
 * entries of forgotten positions are never read before they are overwritten.
 * What must go are the hidden states the MTP would read: RMSNorm_final(h) of
 * positions >= n, and MTP rows that used a token at a position >= n (row i of
 * depth k used the token at i+1+k).
 */
ds3_status ds3_state_truncate(ds3_state *s, int n) {
    if (!s) return ds3_fail(DS3_ERR_ARG, "ds3_state_truncate: state is NULL");
    if (n < 0 || n > s->max_seq)
        return ds3_fail(DS3_ERR_ARG, "ds3_state_truncate: %d positions, the state holds 0..%d", n, s->max_seq);
    hwin_trim(&s->hfinal, n);
    for (int k = 0; s->hmtp && k < s->m->n_mtp; k++) hwin_trim(&s->hmtp[k], n - 1 - k);
    if (s->mtp_done > n - 1) s->mtp_done = n > 0 ? n - 1 : 0;
    return DS3_OK;
}

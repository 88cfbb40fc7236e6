/*
 * mtp.c — multi-token prediction (docs/MODEL.md §6: equations (21)-(23)
 * of the DeepSeek-V3 technical report, §2.2).
 *
 * The checkpoint carries num_nextn_predict_layers extra layers after the main
 * ones (model.layers.L+k for depth k). The official inference code skips them;
 * serving engines (vLLM deepseek_mtp.py, SGLang deepseek_nextn.py) run them to
 * draft tokens. Row i of depth 0 joins what the main model knows at position i
 * with the token that follows it, and predicts the token after that:
 *
 *   u_i    = eh_proj · [ enorm(Emb(t_{i+1})) | hnorm(RMSNorm_final(h_i)) ]   (21)  eh_proj: D × 2D
 *   x_i    = Block_{L+k}(u_i) at position i     (22) a whole decoder layer, MLA + MoE (or dense,
 *                                               by its layer index), with a KV cache of its own
 *   logits = shared_head.head · shared_head.norm(x_i)     (23) predicts t_{i+2}
 *
 * Why the concat order is [embedding | hidden]: the paper's equation (21)
 * writes [RMSNorm(h); RMSNorm(Emb)], but eh_proj is a trained matrix, and a
 * matrix only works with the column order it was trained with. The released
 * weights were trained with the embedding in columns 0..D-1 (Megatron-style
 * concat(decoder_input, hidden)); SGLang and vLLM use that order and measure
 * DeepSeek's reported acceptance with it, and DeepSeek-V3 issue #712 ("MTP
 * inference confuse") points out the paper's order is the other one. The
 * hidden state is the main model's after model.norm, as both engines pass it.
 * The layer's own embed_tokens and shared_head.head are used (the released
 * checkpoint repeats them under layer L; loader.c falls back to the main ones).
 * vLLM zeroes the embedding at position 0; that is an engine shortcut, not the
 * model, and is not done here.
 *
 * Depth k > 0 (a checkpoint with num_nextn_predict_layers > 1; V3 has 1)
 * chains: row i of depth k takes depth k-1's output at row i in place of h_i,
 * and the token t_{i+1+k}; it predicts t_{i+2+k}. **Choice**: the hidden state
 * passed on is the one a head reads, after shared_head.norm — as depth 0
 * receives h after model.norm, and as SGLang's NextN model returns it. vLLM
 * passes the block output before shared_head.norm (both go through hnorm
 * next, so the two differ by shared_head.norm's weight). Every depth keeps
 * row i at position i of its own cache, as in the paper's training setup.
 *
 * Speculative decoding (spec.c) re-applies depth 0 to its own output to
 * draft several tokens, as the engines do with V3's single MTP layer.
 *
 * Rows and windows. A forward call over positions [s, s+T) knows the tokens
 * t_s..t_{s+T-1}, so depth k can run rows i with i+1+k in that range:
 * [s-1-k, s+T-1-k). Row s-1-k needs an input from the previous call, which is
 * why each window (RMSNorm_final(h) in s->hfinal, depth k's outputs in
 * s->hmtp[k]) keeps the row before the current chunk. A dump made by one
 * prefill and one made token by token therefore hold the same MTP rows.
 */
#include "model/model.h"

#include <string.h>

/* ========================================================================== */
/* One MTP depth on n rows                                                     */
/* ========================================================================== */

/* The scratch of the block's input, [n][2D]; eh_proj consumes it before the
 * decoder layer takes the scratch for its own buffers. */
static void plan(ds3_real **cat, ds3_arena *a, const ds3_config *c, int T) {
    *cat = ds3_take(a, (size_t)T * 2 * c->hidden_size);
}

void ds3_mtp_reserve(ds3_arena *a, const ds3_config *c, int T) {
    ds3_real *cat;
    plan(&cat, a, c, T);
}

void ds3_mtp_in(ds3_state *s, int k, const ds3_real *in, const int32_t *tok, int n) {
    const ds3_config *c = &s->m->cfg;
    const ds3_mtp_layer *t = &s->m->mtp[k];
    const int D = c->hidden_size;
    DS3_ASSERT(k >= 0 && k < s->m->n_mtp && n >= 1 && n <= s->max_T);
    ds3_real *cat;
    ds3_arena a = ds3_scratch(s);
    plan(&cat, &a, c, n);
    /* (21): [enorm(Emb(t)) | hnorm(h)], embedding first (see the top of the file). */
    for (int r = 0; r < n; r++) {
        ds3_real *row = cat + (size_t)r * 2 * D;
        ds3_tensor_rows(row, &t->embed_tokens, tok[r], 1);
        ds3_round(s, row, (size_t)D, DS3_EMUL_RESIDUAL);
        ds3_norm(s, row, row, t->enorm, D);
        ds3_norm(s, row + D, in + (size_t)r * D, t->hnorm, D);
    }
    ds3_proj(s, s->x, cat, &t->eh_proj, n);
}

void ds3_mtp_block(ds3_state *s, int k, const ds3_real *in, const int32_t *tok, int n, int r0, ds3_real *out,
                   ds3_real *logits, int n_logits, bool dump) {
    const ds3_model *m = s->m;
    const ds3_config *c = &m->cfg;
    const ds3_mtp_layer *t = &m->mtp[k];
    const int D = c->hidden_size, V = c->vocab_size;
    DS3_ASSERT(k >= 0 && k < m->n_mtp && n >= 1 && n <= s->max_T && n_logits >= 0 && n_logits <= n);

    /* Drafting steps are not rows of the sequence: they must not be dumped. */
    ds3_dumper *saved = s->dump;
    if (!dump) s->dump = NULL;
    char prefix[32];
    snprintf(prefix, sizeof prefix, "mtp.%d", k);

    ds3_mtp_in(s, k, in, tok, n);
    ds3_dump_act(s, DS3_DT_REAL, D, r0, n, s->x, "%s.in", prefix);

    /* (22): the block, an ordinary decoder layer with its own cache at positions r0.. */
    ds3_layer_forward(s, &t->block, &s->cache[c->num_hidden_layers + k], n, r0, prefix);

    /* (23): the head on shared_head.norm(x) */
    for (int r = 0; r < n; r++) ds3_norm(s, out + (size_t)r * D, s->x + (size_t)r * D, t->shared_head_norm, D);
    if (s->dump) {
        ds3_dump_act(s, DS3_DT_REAL, D, r0, n, out, "%s.norm", prefix);
        /* Dumps want every row's logits; the caller may want only the last. */
        ds3_real *lg = (logits && n_logits == n) ? logits : s->dump_logits;
        DS3_ASSERT(lg != NULL);
        ds3_proj(s, lg, out, &t->shared_head_head, n);
        ds3_dump_act(s, DS3_DT_REAL, V, r0, n, lg, "%s.logits", prefix);
        if (logits && lg != logits)
            memcpy(logits, lg + (size_t)(n - n_logits) * V, (size_t)n_logits * V * sizeof(ds3_real));
    } else if (logits && n_logits > 0) {
        ds3_proj(s, logits, out + (size_t)(n - n_logits) * D, &t->shared_head_head, n_logits);
    }
    s->dump = saved;
}

/* ========================================================================== */
/* Rows of the sequence, through the windows                                   */
/* ========================================================================== */

void ds3_mtp_rows(ds3_state *s, int k, const int32_t *tok, int n, int r0, ds3_real *logits, int n_logits) {
    const int D = s->m->cfg.hidden_size;
    const ds3_hwin *in = k == 0 ? &s->hfinal : &s->hmtp[k - 1];
    DS3_ASSERT(r0 >= in->pos && r0 + n <= in->pos + in->n);
    ds3_hwin *w = &s->hmtp[k];
    ds3_real *out = ds3_hwin_begin(w, r0, D);
    ds3_mtp_block(s, k, in->rows + (size_t)(r0 - in->pos) * D, tok, n, r0, out, logits, n_logits, true);
    w->n += n;
    if (k == 0 && r0 <= s->mtp_done && r0 + n > s->mtp_done) s->mtp_done = r0 + n;
}

void ds3_mtp_chunk(ds3_state *s, const int32_t *tok, int T, int start) {
    for (int k = 0; k < s->m->n_mtp; k++) {
        const ds3_hwin *in = k == 0 ? &s->hfinal : &s->hmtp[k - 1];
        /* rows whose token t_{i+1+k} is in this chunk, from 0, with an input */
        int lo = start - 1 - k, hi = start + T - 1 - k;
        if (lo < 0) lo = 0;
        if (lo < in->pos) lo = in->pos;
        if (hi > in->pos + in->n) hi = in->pos + in->n;
        if (hi <= lo) continue;
        ds3_mtp_rows(s, k, tok + (lo + 1 + k - start), hi - lo, lo, NULL, 0);
    }
}

/* ========================================================================== */
/* Windows and rollback                                                        */
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
 * This holds for the main model's caches and the MTP layers' alike, which is
 * why speculative decoding (generate/spec.c) rolls both back by this call
 * alone. What must go are the hidden states the MTP would read:
 * RMSNorm_final(h) of positions >= n, and MTP rows that used a token at a
 * position >= n (row i of depth k used the token at i+1+k).
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

/* ========================================================================== */
/* Public entry points (ds3.h)                                                 */
/* ========================================================================== */

static ds3_status forward_mtp_body(ds3_state *s, int depth, const int32_t *tokens, int n, int start, ds3_real *logits) {
    if (!s || !tokens) return ds3_fail(DS3_ERR_ARG, "ds3_forward_mtp: %s is NULL", s ? "tokens" : "state");
    const ds3_model *m = s->m;
    if (m->n_mtp == 0) return ds3_fail(DS3_ERR_ARG, "ds3_forward_mtp: the model has no MTP layers (%s)", m->dir);
    if (depth < 0 || depth >= m->n_mtp)
        return ds3_fail(DS3_ERR_ARG, "ds3_forward_mtp: depth %d, the model has depths 0..%d", depth, m->n_mtp - 1);
    if (n < 1 || n > s->max_T)
        return ds3_fail(DS3_ERR_ARG, "ds3_forward_mtp: %d rows (1..%d at a time)", n, s->max_T);
    if (start < 0 || (int64_t)start + n > s->max_seq)
        return ds3_fail(DS3_ERR_ARG, "ds3_forward_mtp: positions %d..%d exceed the state's %d positions", start,
                        start + n - 1, s->max_seq);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= m->cfg.vocab_size)
            return ds3_fail(DS3_ERR_ARG, "token %d at index %d is out of range (vocab %d)", tokens[i], i,
                            m->cfg.vocab_size);
    const ds3_hwin *in = depth == 0 ? &s->hfinal : &s->hmtp[depth - 1];
    if (start < in->pos || start + n > in->pos + in->n) {
        if (in->n == 0)
            return ds3_fail(DS3_ERR_ARG, "ds3_forward_mtp: rows %d..%d of depth %d: no input hidden states are held "
                            "(run ds3_forward%s first)", start, start + n - 1, depth,
                            depth ? " and the lower depths" : "");
        return ds3_fail(DS3_ERR_ARG, "ds3_forward_mtp: rows %d..%d of depth %d: the state holds the input hidden "
                        "states of positions %d..%d only (the last forward chunk and the one before it)",
                        start, start + n - 1, depth, in->pos, in->pos + in->n - 1);
    }
    if (s->dump && !s->dump_logits) {
        s->dump_logits = ds3_calloc((size_t)s->max_T * m->cfg.vocab_size, sizeof(ds3_real));
        if (!s->dump_logits) return DS3_ERR_NOMEM;
    }
    ds3_mtp_rows(s, depth, tokens, n, start, logits, logits ? n : 0);
    return DS3_OK;
}

/* The public entry: the work above in IEEE defaults (src/kernels/fpenv.c). */
ds3_status ds3_forward_mtp(ds3_state *s, int depth, const int32_t *tokens, int n, int start, ds3_real *logits) {
    ds3_fpenv env;
    ds3_status st = ds3_fpenv_enter(&env);
    if (st != DS3_OK) return st;
    st = forward_mtp_body(s, depth, tokens, n, start, logits);
    ds3_fpenv_leave(&env);
    return st;
}

/*
 * model.c — the forward pass (docs/MODEL.md §2):
 *
 *   h = embed_tokens[token]                     (no scaling)
 *   for each layer:  h = h + Attn(RMSNorm_in(h))         (layer.c)
 *                    h = h + FFN(RMSNorm_post(h))      FFN: dense SwiGLU or MoE
 *   logits = lm_head · RMSNorm_final(h)
 *
 * A call runs T tokens at positions start..start+T-1 against the KV caches,
 * which must already hold positions 0..start-1: prefill, chunked prefill and
 * decode are the same code with different T. Calls longer than the state's
 * scratch (max_T tokens) are split into chunks, which is the same computation.
 * The state (state.c) owns everything the pass writes; nothing is allocated
 * while running.
 *
 * The final-normed hidden states RMSNorm_final(h) of a chunk stay in the state
 * (s->hfinal) after the call, with the row of the position before the chunk:
 * the MTP module reads them (mtp.c, docs/MODEL.md §6). When MTP runs with the
 * forward pass (ds3_state_set_mtp, or while dumping), each chunk ends with the
 * MTP depths on the rows whose next token the chunk supplies.
 */
#include "model/model.h"

#include <stdio.h>
#include <string.h>

/* T <= max_T tokens; logits [T - from][V] for rows from..T-1 (none when from
 * >= T), or NULL. */
static void forward_chunk(ds3_state *s, const int32_t *tokens, int T, int start, ds3_real *logits, int from,
                          int done, int n, const char *what) {
    const ds3_model *m = s->m;
    const ds3_config *c = &m->cfg;
    const int D = c->hidden_size;

    for (int t = 0; t < T; t++) ds3_tensor_rows(s->x + (size_t)t * D, &m->embed_tokens, tokens[t], 1);
    ds3_round(s, s->x, (size_t)T * D, DS3_EMUL_RESIDUAL);
    ds3_dump_act(s, DS3_DT_REAL, D, start, T, s->x, "embed");

    char prefix[32];
    for (int i = 0; i < c->num_hidden_layers; i++) {
        snprintf(prefix, sizeof prefix, "layers.%d", i);
        ds3_layer_forward(s, &m->layers[i], &s->cache[i], T, start, prefix);
        /* progress: the call's earlier chunks, then this chunk's layers */
        const double L = c->num_hidden_layers;
        ds3_progress(what, (double)done * L + (double)T * (i + 1), (double)n * L);
    }

    /* RMSNorm_final(h) stays in the state: the MTP rows read it (docs/MODEL.md §6). */
    ds3_real *hn = ds3_hwin_begin(&s->hfinal, start, D);
#pragma omp parallel for schedule(static) if ((size_t)T * D >= DS3_PAR_MIN && !ds3_in_parallel())
    for (int t = 0; t < T; t++) ds3_norm(s, hn + (size_t)t * D, s->x + (size_t)t * D, m->norm, D);
    s->hfinal.n += T;
    ds3_dump_act(s, DS3_DT_REAL, D, start, T, hn, "norm");

    /* The head on the rows asked for; a dump records every row's, and the
     * caller then gets its rows from the dump's buffer. */
    const size_t V = (size_t)c->vocab_size;
    if (s->dump) {
        ds3_proj(s, s->dump_logits, hn, &m->lm_head, T);
        ds3_dump_act(s, DS3_DT_REAL, c->vocab_size, start, T, s->dump_logits, "logits");
        if (logits && from < T)
            memcpy(logits, s->dump_logits + (size_t)from * V, (size_t)(T - from) * V * sizeof(ds3_real));
    } else if (logits && from < T) {
        ds3_proj(s, logits, hn + (size_t)from * D, &m->lm_head, T - from);
    }

    if (m->n_mtp > 0 && (s->mtp_on || s->dump)) ds3_mtp_chunk(s, tokens, T, start);
}

/* Positions start..start+n-1; logits for rows `from`..n-1 of the call (none
 * when from >= n or logits is NULL), [n - from][V]. */
static ds3_status forward(ds3_state *s, const char *fn, const int32_t *tokens, int n, int start, ds3_real *logits,
                          int from) {
    const ds3_config *c = &s->m->cfg;
    if (n <= 0) return ds3_fail(DS3_ERR_ARG, "%s: %d tokens (need at least 1)", fn, n);
    if (start < 0 || (int64_t)start + n > s->max_seq)
        return ds3_fail(DS3_ERR_ARG, "%s: positions %d..%d exceed the state's %d positions", fn, start,
                        start + n - 1, s->max_seq);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
            return ds3_fail(DS3_ERR_ARG, "token %d at index %d is out of range (vocab %d)", tokens[i], i,
                            c->vocab_size);
    /* Dumps record every row's logits, whatever the caller wants: give them a
     * buffer, once, before the pass (not inside it). */
    if (s->dump && !s->dump_logits) {
        s->dump_logits = ds3_calloc((size_t)s->max_T * c->vocab_size, sizeof(ds3_real));
        if (!s->dump_logits) return DS3_ERR_NOMEM;
    }
    const unsigned failures = ds3_linear_failures();
    char what[64];   /* progress (ds3_set_progress): token-layers of this call */
    snprintf(what, sizeof what, "forward: %d tokens x %d layers", n, c->num_hidden_layers);
    for (int off = 0; off < n; off += s->max_T) {
        const int T = n - off < s->max_T ? n - off : s->max_T;
        /* rows of this chunk that get logits: from - off.. (clamped) */
        const int lo = from - off < 0 ? 0 : from - off;
        ds3_real *out = logits && lo < T ? logits + (size_t)(off + lo - from) * c->vocab_size : NULL;
        forward_chunk(s, tokens + off, T, start + off, out, lo, off, n, what);
    }
    /* A product that could not get its tile buffer was not computed. (The
     * count is per process: another state failing at the same moment fails
     * this call too, which errs on the side of an error.) */
    if (ds3_linear_failures() != failures)
        return ds3_fail(DS3_ERR_NOMEM, "out of memory for a BLAS tile buffer during the forward pass: the logits "
                        "and caches of positions %d..%d were not computed", start, start + n - 1);
    return DS3_OK;
}

/* The work above in IEEE defaults (src/kernels/fpenv.c), for the public entries. */
static ds3_status forward_guarded(ds3_state *s, const char *fn, const int32_t *tokens, int n, int start,
                                  ds3_real *logits, int from) {
    ds3_fpenv env;
    ds3_status st = ds3_fpenv_enter(&env);
    if (st != DS3_OK) return st;
    st = forward(s, fn, tokens, n, start, logits, from);
    ds3_fpenv_leave(&env);
    return st;
}

ds3_status ds3_forward(ds3_state *s, const int32_t *tokens, int n, int start, ds3_real *logits) {
    return forward_guarded(s, "ds3_forward", tokens, n, start, logits, 0);
}

ds3_status ds3_forward_last(ds3_state *s, const int32_t *tokens, int n, int start, ds3_real *logits) {
    return forward_guarded(s, "ds3_forward_last", tokens, n, start, logits, n - 1);
}

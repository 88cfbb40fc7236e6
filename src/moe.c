/*
 * moe.c — the DeepSeekMoE layer: router, routed experts, shared experts
 * (DeepSeek-V3 paper §2.1.2, SPEC §5; official inference/model.py `Gate`, `MoE`).
 *
 *   s    = sigmoid(gate · x)            (softmax for V2-style scoring)
 *   sel  = s + e_score_correction_bias  — the bias steers WHICH experts are
 *          chosen (it is DeepSeek's auxiliary-loss-free load balancing, tuned
 *          during training) but never how much they weigh
 *   groups: experts come in n_group groups (one per node in training); a
 *          group's score is the sum of its two best sel (V3) or its best s (V2);
 *          only the topk_group best groups stay, the others' sel become −inf
 *   idx  = top-K of sel;  w = s[idx], normalised to sum 1 when norm_topk_prob,
 *          then multiplied by routed_scaling_factor (2.5 for V3: it restores the
 *          magnitude the normalisation took away)
 *   y    = Σ_k w_k · Expert_idx_k(x) + Σ shared experts(x)
 *
 * Every top-k here breaks ties towards the lowest index (SPEC §5, Choice).
 * Masking with −inf (the official code and SGLang) rather than 0.0 (older
 * transformers) matters when all kept sel are negative: a 0.0 would let a
 * masked expert win. tests/test_moe.c holds both facts.
 *
 * Computation: tokens are grouped per expert so each expert runs one GEMM over
 * the tokens that chose it; each (token, k) result lands in its own slot and
 * the weighted sum runs over k in order, so the bits do not depend on which
 * expert ran first or on which thread.
 */
#include "internal.h"

#include <math.h>
#include <string.h>

/* Index of the largest v[i] among i in [0,n) with !taken[i]; ties → lowest i. */
static int argmax_free(const ds3_real *v, const unsigned char *taken, int n) {
    int best = -1;
    for (int i = 0; i < n; i++) {
        if (taken[i]) continue;
        /* strict > keeps the first (lowest) index among equals; a NaN never wins
         * over a number, and an all-NaN row falls back to the lowest index. */
        if (best < 0 || v[i] > v[best] || (isnan(v[best]) && !isnan(v[i]))) best = i;
    }
    return best;
}

void ds3_moe_route(int32_t *idx, ds3_real *weight, ds3_real *s, const ds3_real *logits,
                   const ds3_real *bias, const ds3_config *c, ds3_real *scratch) {
    ds3_moe_scores(s, logits, c);
    ds3_moe_select(idx, weight, s, bias, c, scratch);
}

void ds3_moe_scores(ds3_real *s, const ds3_real *logits, const ds3_config *c) {
    const int E = c->n_routed_experts;
    /* Scores, computed in double and rounded once. */
    if (c->scoring_func == DS3_SCORE_SIGMOID) {
        for (int e = 0; e < E; e++) s[e] = (ds3_real)(1.0 / (1.0 + exp(-(double)logits[e])));
    } else {
        for (int e = 0; e < E; e++) s[e] = logits[e];
        ds3_softmax(s, E);
    }
}

void ds3_moe_select(int32_t *idx, ds3_real *weight, const ds3_real *s, const ds3_real *bias, const ds3_config *c,
                    ds3_real *scratch) {
    const int E = c->n_routed_experts, K = c->num_experts_per_tok;
    const int G = c->n_group > 0 ? c->n_group : 1, per = E / G;
    ds3_real *sel = scratch;         /* [E] selection scores */
    ds3_real *gs = scratch + E;      /* [G] group scores */
    unsigned char taken[DS3_MAX_EXPERTS];  /* E, G <= DS3_MAX_EXPERTS (checked at load) */

    /* The correction bias exists only for noaux_tc and only steers selection. */
    for (int e = 0; e < E; e++) sel[e] = s[e] + (bias ? bias[e] : 0);

    /* Group-limited routing: keep the topk_group best groups. */
    bool grouped = G > 1 && (c->topk_method == DS3_TOPK_NOAUX_TC ||
                             c->topk_method == DS3_TOPK_GROUP_LIMITED_GREEDY);
    if (grouped) {
        for (int g = 0; g < G; g++) {
            const ds3_real *v = sel + (size_t)g * per;
            if (c->topk_method == DS3_TOPK_NOAUX_TC) {
                /* sum of the two largest (with bias): robust to one lucky expert */
                ds3_real a = -INFINITY, b = -INFINITY;
                for (int i = 0; i < per; i++) {
                    if (v[i] > a) { b = a; a = v[i]; }
                    else if (v[i] > b) b = v[i];
                }
                gs[g] = per >= 2 ? a + b : a;
            } else {
                /* V2: the best plain score in the group */
                ds3_real a = -INFINITY;
                for (int i = 0; i < per; i++) if (s[(size_t)g * per + i] > a) a = s[(size_t)g * per + i];
                gs[g] = a;
            }
        }
        memset(taken, 0, (size_t)G);
        for (int k = 0; k < c->topk_group; k++) taken[argmax_free(gs, taken, G)] = 1;
        /* taken[g] now marks the kept groups; mask the others with −inf. */
        for (int g = 0; g < G; g++)
            if (!taken[g])
                for (int i = 0; i < per; i++) sel[(size_t)g * per + i] = -INFINITY;
    }

    /* Top-K of sel, in descending order. */
    memset(taken, 0, (size_t)E);
    for (int k = 0; k < K; k++) {
        int e = argmax_free(sel, taken, E);
        taken[e] = 1;
        idx[k] = e;
        weight[k] = s[e];
    }
    if (c->norm_topk_prob) {
        ds3_real sum = 0;
        for (int k = 0; k < K; k++) sum += weight[k];
        for (int k = 0; k < K; k++) weight[k] /= sum;
    }
    for (int k = 0; k < K; k++) weight[k] *= (ds3_real)c->routed_scaling_factor;
}

size_t ds3_moe_iwork_size(const ds3_config *c, int T) {
    /* idx [T][K], slot of each (t,k) [T][K], token of each slot [T·K],
     * offsets [E+1], fill cursors [E] */
    return 3 * (size_t)T * c->num_experts_per_tok + 2 * (size_t)c->n_routed_experts + 1;
}

size_t ds3_ffn_work_size(const ds3_config *c, int T) {
    size_t D = c->hidden_size, E = c->n_routed_experts, K = c->num_experts_per_tok,
           Im = c->moe_intermediate_size, S = c->n_shared_experts;
    size_t dense = 2 * (size_t)T * c->intermediate_size;
    if (E == 0) return dense;
    /* logits+scores [T][E], route scratch [E+G], weights [T][K], gathered inputs
     * and outputs [T·K][D] each, expert hidden 2·[T·K][Im], shared output [T][D]
     * and hidden 2·[T][S·Im]. */
    size_t moe = 2 * T * E + E + c->n_group + T * K + 2 * T * K * D + 2 * T * K * Im + T * D +
                 2 * T * S * Im;
    return dense > moe ? dense : moe;
}

void ds3_moe(ds3_state *s, const ds3_layer *l, ds3_real *out, const ds3_real *x, int T, int start,
             const char *prefix) {
    const ds3_config *c = &s->m->cfg;
    const int D = c->hidden_size, E = c->n_routed_experts, K = c->num_experts_per_tok,
              Im = c->moe_intermediate_size, S = c->n_shared_experts;

    ds3_real *cur = s->work;
    ds3_real *logits = cur; cur += (size_t)T * E;   /* [T][E] gate · x */
    ds3_real *scores = cur; cur += (size_t)T * E;   /* [T][E] s */
    ds3_real *rs = cur; cur += E + c->n_group;       /* route scratch */
    ds3_real *w = cur; cur += (size_t)T * K;         /* [T][K] */
    ds3_real *xe = cur; cur += (size_t)T * K * D;    /* [T·K][D] inputs, by expert */
    ds3_real *ye = cur; cur += (size_t)T * K * D;    /* [T·K][D] outputs, by expert */
    ds3_real *hid = cur; cur += 2 * (size_t)T * K * Im;  /* [T·K][2·Im]: gate|up rows, by expert */
    ds3_real *shared = cur; cur += (size_t)T * D;
    ds3_real *shid = cur; cur += 2 * (size_t)T * S * Im;
    DS3_ASSERT((size_t)(cur - s->work) <= s->work_size);

    int32_t *idx = s->iwork;                         /* [T][K] chosen experts */
    int32_t *slot = idx + (size_t)T * K;             /* [T][K] row of (t,k) in xe/ye */
    int32_t *tok = slot + (size_t)T * K;             /* [T·K] token of each row */
    int32_t *off = tok + (size_t)T * K;              /* [E+1] first row of each expert */
    int32_t *next = off + E + 1;                     /* [E] fill cursor */

    /* ---- route --------------------------------------------------------------- */
    ds3_router_logits_em(s, logits, x, &l->gate, T);
    for (int t = 0; t < T; t++) {
        ds3_real *st = scores + (size_t)t * E, *wt = w + (size_t)t * K;
        int32_t *it = idx + (size_t)t * K;
        ds3_moe_scores(st, logits + (size_t)t * E, c);
        ds3_router_scores_em(s, st, E);
        ds3_moe_select(it, wt, st, l->e_score_correction_bias, c, rs);
        ds3_router_weights_em(s, wt, st, it);
    }
    if (s->dump) {
        int64_t kk = K, ee = E;
        ds3_dump_act(s, DS3_DT_I32, 1, &kk, start, T, idx, "%s.moe.topk_idx", prefix);
        ds3_dump_act(s, DS3_DT_REAL, 1, &kk, start, T, w, "%s.moe.topk_weight", prefix);
        ds3_dump_act(s, DS3_DT_REAL, 1, &ee, start, T, scores, "%s.moe.scores", prefix);
    }

    /* ---- group the (token, k) pairs by expert: a counting sort ------------- */
    memset(off, 0, (size_t)(E + 1) * sizeof(int32_t));
    for (int i = 0; i < T * K; i++) off[idx[i] + 1]++;
    for (int e = 0; e < E; e++) off[e + 1] += off[e];
    /* Stable: the rows of an expert appear in (t, k) order. */
    memcpy(next, off, (size_t)E * sizeof(int32_t));
    for (int i = 0; i < T * K; i++) {
        int r = next[idx[i]]++;
        slot[i] = r;
        tok[r] = i / K;
    }
    for (int r = 0; r < T * K; r++) memcpy(xe + (size_t)r * D, x + (size_t)tok[r] * D, D * sizeof(ds3_real));

    /* ---- each expert on the tokens that chose it, experts in parallel ----- */
    /* Expert e owns rows off[e].. of xe, ye and hid, so the threads write
     * disjoint memory; inside the region ds3_linear runs single-threaded (and
     * OpenBLAS always is), which is what makes this the better split: 8 experts
     * of 3 small matrices each per token rather than 24 tiny parallel loops. */
#pragma omp parallel for schedule(dynamic, 1)
    for (int e = 0; e < E; e++) {
        int n = off[e + 1] - off[e];
        if (n == 0) continue;  /* only the routed experts' weights are touched */
        ds3_mlp_em(s, ye + (size_t)off[e] * D, xe + (size_t)off[e] * D, &l->experts[e], Im, n,
                   hid + 2 * (size_t)off[e] * Im);
    }

    /* ---- combine in a fixed order: k = 0..K-1, then the shared experts ----- */
    if (S > 0) ds3_mlp_em(s, shared, x, &l->shared_experts, S * Im, T, shid);
    if (ds3_emul_has(s, DS3_EMUL_COMBINE)) {
        ds3_combine_em(s, out, ye, slot, idx, w, S > 0 ? shared : NULL, T, K, D);
        return;
    }
    for (int t = 0; t < T; t++) {
        ds3_real *o = out + (size_t)t * D;
        for (int d = 0; d < D; d++) o[d] = 0;
        for (int k = 0; k < K; k++) {
            ds3_real wk = w[(size_t)t * K + k];
            const ds3_real *yk = ye + (size_t)slot[(size_t)t * K + k] * D;
            for (int d = 0; d < D; d++) o[d] += wk * yk[d];
        }
        if (S > 0)
            for (int d = 0; d < D; d++) o[d] += shared[(size_t)t * D + d];
    }
}

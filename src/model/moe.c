/*
 * moe.c — the DeepSeekMoE layer: router, routed experts, shared experts
 * (docs/MODEL.md §5: equations (12)-(16) of the DeepSeek-V3 technical report,
 * §2.1.2; official inference/model.py `Gate`, `MoE`).
 *
 *   s    = sigmoid(gate · x)            (15)  (softmax for V2-style scoring)
 *   sel  = s + e_score_correction_bias  (16) — the bias steers WHICH experts are
 *          chosen (it is DeepSeek's auxiliary-loss-free load balancing, tuned
 *          during training) but never how much they weigh
 *   groups: experts come in n_group groups (one per node in training); a
 *          group's score is the sum of its two best sel (V3) or its best s (V2);
 *          only the topk_group best groups stay, the others' sel become −inf
 *   idx  = top-K of sel (14);  w = s[idx], normalised to sum 1 when norm_topk_prob (13),
 *          then multiplied by routed_scaling_factor (2.5 for V3: it restores the
 *          magnitude the normalisation took away)
 *   y    = Σ_k w_k · Expert_idx_k(x) + Σ shared experts(x)            (12)
 *
 * Every top-k here breaks ties towards the lowest index (docs/MODEL.md §5, Choice).
 * Masking with −inf (the official code and SGLang) rather than 0.0 (older
 * transformers) matters when all kept sel are negative: a 0.0 would let a
 * masked expert win. tests/test_moe.c holds both facts.
 *
 * Computation: tokens are grouped per expert so each expert runs one GEMM over
 * the tokens that chose it; each (token, k) result lands in its own slot and
 * the weighted sum runs over k in order, so the bits do not depend on which
 * expert ran first, on which thread, or in which process: with expert
 * parallelism (dist.c) each process runs its own experts' rows and the rows are
 * gathered, copied, before the same combine.
 */
#include "model/model.h"

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
        double z[DS3_MAX_EXPERTS] = {0};  /* E <= DS3_MAX_EXPERTS (checked at load) */
        for (int e = 0; e < E; e++) z[e] = -(double)logits[e];
        ds3_exp_n(z, z, E);  /* each ds3_exp's bits, several at a time */
        for (int e = 0; e < E; e++) s[e] = (ds3_real)(1.0 / (1.0 + z[e]));
    } else {
        for (int e = 0; e < E; e++) s[e] = logits[e];
        ds3_softmax(s, E);
    }
}

/*
 * Group-limited routing: experts come in G groups (one per node in training,
 * so that a token's experts sit on at most topk_group nodes); a group's score
 * is the sum of its two best sel (V3, noaux_tc) or its best plain score (V2,
 * group_limited_greedy). The topk_group best groups stay; every other
 * expert's sel becomes −inf, so it can never be chosen (a 0.0 would let a
 * masked expert win when every kept sel is negative).
 */
static void moe_keep_groups(ds3_real *sel, const ds3_real *s, const ds3_config *c, ds3_real *gs) {
    const int E = c->n_routed_experts, G = c->n_group, per = E / G;
    unsigned char taken[DS3_MAX_EXPERTS];  /* G <= DS3_MAX_EXPERTS (checked at load) */
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
    for (int g = 0; g < G; g++) taken[g] = 0;  /* (a loop: gcc's SAN build read memset's size as possibly negative) */
    for (int k = 0; k < c->topk_group; k++) taken[argmax_free(gs, taken, G)] = 1;
    /* taken[g] now marks the kept groups; mask the others with −inf. */
    for (int g = 0; g < G; g++)
        if (!taken[g])
            for (int i = 0; i < per; i++) sel[(size_t)g * per + i] = -INFINITY;
}

/* (16) the choice on s + bias, (14) the top K, (13) their weights. */
void ds3_moe_select(int32_t *idx, ds3_real *weight, const ds3_real *s, const ds3_real *bias, const ds3_config *c,
                    ds3_real *scratch) {
    const int E = c->n_routed_experts, K = c->num_experts_per_tok;
    const int G = c->n_group > 0 ? c->n_group : 1;
    ds3_real *sel = scratch;         /* [E] selection scores */
    ds3_real *gs = scratch + E;      /* [G] group scores */
    unsigned char taken[DS3_MAX_EXPERTS];  /* E <= DS3_MAX_EXPERTS (checked at load) */

    /* The correction bias exists only for noaux_tc and only steers selection. */
    for (int e = 0; e < E; e++) sel[e] = s[e] + (bias ? bias[e] : 0);

    if (G > 1 && (c->topk_method == DS3_TOPK_NOAUX_TC || c->topk_method == DS3_TOPK_GROUP_LIMITED_GREEDY))
        moe_keep_groups(sel, s, c, gs);

    /* Top-K of sel, in descending order. */
    memset(taken, 0, (size_t)E);
    for (int k = 0; k < K; k++) {
        int e = argmax_free(sel, taken, E);
        taken[e] = 1;
        idx[k] = e;
    }
    ds3_moe_weights(weight, s, idx, c);
}

/* (13): w = s[idx], normalised to sum 1 if norm_topk_prob, times the scaling factor. */
void ds3_moe_weights(ds3_real *weight, const ds3_real *s, const int32_t *idx, const ds3_config *c) {
    const int K = c->num_experts_per_tok;
    for (int k = 0; k < K; k++) weight[k] = s[idx[k]];
    if (c->norm_topk_prob) {
        ds3_real sum = 0;
        for (int k = 0; k < K; k++) sum += weight[k];
        for (int k = 0; k < K; k++) weight[k] /= sum;
    }
    for (int k = 0; k < K; k++) weight[k] *= (ds3_real)c->routed_scaling_factor;
}

/* ========================================================================== */
/* The layer                                                                   */
/* ========================================================================== */

/* The scratch of one call, for T tokens. */
typedef struct {
    ds3_real *logits;   /* [T][E] gate · x */
    ds3_real *scores;   /* [T][E] s */
    ds3_real *rs;       /* [T][E + n_group] routing scratch (ds3_moe_select), a row per token */
    ds3_real *w;        /* [T][K] routing weights */
    ds3_real *xe;       /* [T·K][D] inputs, grouped by expert */
    ds3_real *ye;       /* [T·K][D] outputs, grouped by expert */
    ds3_real *hid;      /* [T·K] rows of the experts' SwiGLU scratch (ds3_mlp_need) */
    ds3_real *shared;   /* [T][D] the shared experts' output */
    ds3_real *shid;     /* the shared experts' SwiGLU scratch */
    int32_t *idx;       /* [T][K] chosen experts */
    int32_t *slot;      /* [T][K] row of (t,k) in xe/ye */
    int32_t *tok;       /* [T·K] token of each row */
    int32_t *off;       /* [E+1] first row of each expert */
    int32_t *next;      /* [E] fill cursor */
    int32_t *order;     /* [T][K] the combine order of each token */
    int32_t *items;     /* [E+1] the parallel loop's work: -1 the shared experts, else an expert */
} moe_bufs;

static void plan(moe_bufs *b, ds3_arena *a, const ds3_config *c, int T) {
    const size_t D = c->hidden_size, E = c->n_routed_experts, K = c->num_experts_per_tok,
                 Im = c->moe_intermediate_size, S = c->n_shared_experts, TK = (size_t)T * K;
    b->logits = ds3_take(a, T * E);
    b->scores = ds3_take(a, T * E);
    b->rs = ds3_take(a, (size_t)T * (E + c->n_group));
    b->w = ds3_take(a, TK);
    b->xe = ds3_take(a, TK * D);
    b->ye = ds3_take(a, TK * D);
    b->hid = ds3_take(a, ds3_mlp_need((int)TK, (int)Im));
    b->shared = ds3_take(a, T * D);
    b->shid = ds3_take(a, S > 0 ? ds3_mlp_need(T, (int)(S * Im)) : 0);
    b->idx = ds3_take_i32(a, TK);
    b->slot = ds3_take_i32(a, TK);
    b->tok = ds3_take_i32(a, TK);
    b->off = ds3_take_i32(a, E + 1);
    b->next = ds3_take_i32(a, E);
    b->order = ds3_take_i32(a, (size_t)T * K);
    b->items = ds3_take_i32(a, E + 1);
}

void ds3_moe_reserve(ds3_arena *a, const ds3_config *c, int T) {
    moe_bufs b;
    plan(&b, a, c, T);
}

void ds3_moe_combine(const ds3_state *s, ds3_real *out, ds3_real *ye, const int32_t *slot, const int32_t *idx,
                     const ds3_real *w, const ds3_real *shared, int32_t *order, int T) {
    const ds3_config *c = &s->m->cfg;
    const int D = c->hidden_size, K = c->num_experts_per_tok;
    /* tokens in parallel: each writes its own row of out, its own rows of ye
     * (its (t, k) slots) and its own K of order */
#pragma omp parallel for schedule(static) if ((size_t)T * D >= DS3_PAR_MIN && !ds3_in_parallel())
    for (int t = 0; t < T; t++) {
        ds3_real *o = out + (size_t)t * D;
        int32_t *order_t = order + (size_t)t * K;
        ds3_emul_combine_order(s->emul, order_t, idx + (size_t)t * K, K);
        for (int d = 0; d < D; d++) o[d] = 0;
        for (int a = 0; a < K; a++) {
            const int k = order_t[a];
            const ds3_real wk = w[(size_t)t * K + k];
            ds3_real *yk = ye + (size_t)slot[(size_t)t * K + k] * D;  /* this (t,k)'s own row */
            for (int d = 0; d < D; d++) yk[d] *= wk;
            ds3_round(s, yk, (size_t)D, DS3_EMUL_COMBINE);
            for (int d = 0; d < D; d++) o[d] += yk[d];
            ds3_round(s, o, (size_t)D, DS3_EMUL_COMBINE);
        }
        if (shared) {
            for (int d = 0; d < D; d++) o[d] += shared[(size_t)t * D + d];
            ds3_round(s, o, (size_t)D, DS3_EMUL_COMBINE);
        }
    }
}

/* The shared experts on all T tokens: one MLP of width S·Im into b->shared. */
static void moe_shared(ds3_state *s, const ds3_layer *l, const moe_bufs *b, const ds3_real *x, int T) {
    const int W = s->m->cfg.n_shared_experts * s->m->cfg.moe_intermediate_size;
    ds3_arena sa = ds3_arena_over(b->shid, ds3_mlp_need(T, W));
    ds3_mlp(s, b->shared, x, &l->shared_experts, W, T, &sa);
}

void ds3_moe(ds3_state *s, const ds3_layer *l, ds3_real *out, const ds3_real *x, int T, int start,
             const char *prefix) {
    const ds3_config *c = &s->m->cfg;
    const int D = c->hidden_size, E = c->n_routed_experts, K = c->num_experts_per_tok,
              Im = c->moe_intermediate_size, S = c->n_shared_experts;
    moe_bufs b;
    ds3_arena a = ds3_scratch(s);
    plan(&b, &a, c, T);
    int32_t *idx = b.idx, *slot = b.slot, *tok = b.tok, *off = b.off, *next = b.next;

    /* ---- route: the scores (15), the choice (16), (14) and the weights (13) - */
    ds3_proj_router(s, b.logits, x, &l->gate, T);
    /* tokens in parallel from DS3_PAR_MIN scores: each writes its own rows
     * (scores, choice, weights, routing scratch, the hook's rows) */
#pragma omp parallel for schedule(static) if ((size_t)T * E >= DS3_PAR_MIN && !ds3_in_parallel())
    for (int t = 0; t < T; t++) {
        ds3_real *st = b.scores + (size_t)t * E, *wt = b.w + (size_t)t * K;
        int32_t *it = idx + (size_t)t * K;
        ds3_moe_scores(st, b.logits + (size_t)t * E, c);
        /* the official bf16 Gate: sigmoid of bf16 logits is a bf16 op; softmax(dtype=float32) is not */
        if (c->scoring_func == DS3_SCORE_SIGMOID) ds3_round(s, st, (size_t)E, DS3_EMUL_ROUTER);
        ds3_moe_select(it, wt, st, l->e_score_correction_bias, c, b.rs + (size_t)t * (E + c->n_group));
        const ds3_route_hook *h = s->route;
        if (h) {
            /* A replay (replay.c): report the router's own choice, then run the
             * experts it was given, weighted by this router's scores at them. */
            const size_t p = (size_t)(start + t);
            if (h->own_idx) memcpy(h->own_idx + p * K, it, (size_t)K * sizeof(int32_t));
            if (h->scores) memcpy(h->scores + p * E, st, (size_t)E * sizeof(ds3_real));
            if (h->force_idx) {
                memcpy(it, h->force_idx + p * K, (size_t)K * sizeof(int32_t));
                ds3_moe_weights(wt, st, it, c);
            }
        }
        ds3_emul_router_weights(s->emul, wt, st, it, K, c->scoring_func == DS3_SCORE_SIGMOID, c->norm_topk_prob,
                                c->routed_scaling_factor);
        if (h && h->weight) memcpy(h->weight + (size_t)(start + t) * K, wt, (size_t)K * sizeof(ds3_real));
    }
    ds3_dump_act(s, DS3_DT_I32, K, start, T, idx, "%s.moe.topk_idx", prefix);
    ds3_dump_act(s, DS3_DT_REAL, K, start, T, b.w, "%s.moe.topk_weight", prefix);
    ds3_dump_act(s, DS3_DT_REAL, E, start, T, b.scores, "%s.moe.scores", prefix);

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
    /* In an MPI job this process runs only its own experts [lo, hi), whose
     * rows are off[lo]..off[hi]; then every process's rows are gathered
     * (dist.c: copies, never sums). Alone, lo..hi is every expert. */
    int lo, hi;
    ds3_dist_range(E, s->m->ep_rank, s->m->ep_size, &lo, &hi);
#pragma omp parallel for schedule(static) if ((size_t)(off[hi] - off[lo]) * D >= DS3_PAR_MIN && !ds3_in_parallel())
    for (int r = off[lo]; r < off[hi]; r++) memcpy(b.xe + (size_t)r * D, x + (size_t)tok[r] * D, D * sizeof(ds3_real));

    /* ---- each expert on the tokens that chose it, experts in parallel ----- */
    /* The work items: the shared experts (one MLP of width S·Im on every
     * token, item -1) when they are no more than a thread's share of the work
     * (S ≤ K / threads: the routed experts hold T·K rows, the shared ones T),
     * then the experts that were chosen (a decode step chooses 8 of 256: the
     * others are not even handed out). Dynamic scheduling starts the largest,
     * the shared experts, first. Expert e owns rows off[e].. of xe, ye and hid,
     * the shared experts their own buffers, so the threads write disjoint
     * memory; inside the region the kernels run single-threaded (and OpenBLAS
     * always is), which is what makes this the better split: 9 small MLPs per
     * token in one parallel loop rather than 27 tiny ones. Which thread runs an
     * item changes none of its operations. */
    int32_t *items = b.items, n_items = 0;
    const bool shared_inside = S > 0 && S * ds3_threads() <= K;
    if (shared_inside) items[n_items++] = -1;
    for (int e = lo; e < hi; e++)
        if (off[e + 1] > off[e]) items[n_items++] = e;  /* only the routed experts' weights are touched */
#pragma omp parallel for schedule(dynamic, 1)
    for (int it = 0; it < n_items; it++) {
        const int e = items[it];
        if (e < 0) {
            moe_shared(s, l, &b, x, T);
            continue;
        }
        int n = off[e + 1] - off[e];
        ds3_arena ea = ds3_arena_over(b.hid + ds3_mlp_need(off[e], Im), ds3_mlp_need(n, Im));
        ds3_mlp(s, b.ye + (size_t)off[e] * D, b.xe + (size_t)off[e] * D, &l->experts[e], Im, n, &ea);
    }
    ds3_dist_gather_rows(b.ye, off, E, D, s->m->ep_size);

    /* ---- the shared experts (if not above), then the combination ---------- */
    if (S > 0 && !shared_inside) moe_shared(s, l, &b, x, T);
    ds3_moe_combine(s, out, b.ye, b.slot, idx, b.w, S > 0 ? b.shared : NULL, b.order, T);
}

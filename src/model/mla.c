/*
 * mla.c — multi-head latent attention (docs/MODEL.md §3: equations (1)-(11)
 * of the DeepSeek-V3 technical report; DeepSeek-V2 paper §2.1).
 *
 * For each token x (already RMS-normalised) at position p:
 *   c^Q  = RMSNorm_qa(q_a_proj · x)                              (6)  [Rq]
 *   q    = q_b_proj · c^Q  (or q_proj · x)  = H × [q^C (7) | q^R]  [H][Dn+Dr]
 *   q^R  = RoPE(q^R, p)                                          (8), q = [q^C; q^R] (9)
 *   [c | k^R] = kv_a_proj_with_mqa · x                                [C+Dr]
 *   c^KV = RMSNorm_kva(c)     the compressed latent              (1): all the
 *                             per-head information the cache keeps
 *   k^R  = RoPE(k^R, p)       one rotary key shared by all heads (3)
 * and then, with kv_b_proj viewed as H × [W^UK (Dn rows) | W^UV (Dv rows)] × C,
 *
 *   naive:    k^C[h] = W^UK[h]·c^KV (2),  k = [k^C; k^R] (4),  v[h] = W^UV[h]·c^KV (5),
 *             cached per head; score = q·k · scale
 *   absorbed: score = ((W^UK[h]ᵀ q^C)·c^KV + q^R·k^R) · scale
 *             o[h]  = W^UV[h] · Σ_t P_t c^KV_t
 *   o[h] = Σ_t softmax(score)_t v_t                              (10)
 *   out  = o_proj · [o_1 … o_H]                                  (11)
 *
 * The two forms are the same sums regrouped; the absorbed one (the official
 * code's default) caches C + Dr values per token and layer instead of
 * H·(Dn+Dr+Dv). Both are kept: the naive form is the one that reads like the
 * paper and is what tests hold the absorbed form to.
 *
 * The softmax scale (Dn+Dr)^-0.5 · m² (rope.c: YaRN's m) is applied in one
 * place, mla_scale_scores, for both forms. Scratch: the buffers of `mla_bufs`,
 * laid out once by `plan`.
 */
#include "model/model.h"

#include <string.h>

/* The scratch of one call, for T tokens and a cache of S positions. */
typedef struct {
    ds3_real *q;        /* [T][H][Dn+Dr] queries [q^C | q^R] */
    ds3_real *kv;       /* [T][C+Dr] [c^KV | k^R] of the new tokens */
    ds3_real *scores;   /* [T][H][S] attention scores, then probabilities */
    ds3_real *o;        /* [T][H][Dv] per-head outputs */
    ds3_real *cq;       /* [T][Rq] c^Q (q-LoRA) */
    ds3_real *wkvb;     /* absorbed: [H][Dn+Dv][C] kv_b_proj, dequantised */
    ds3_real *qc;       /* absorbed: [T][H][C] W^UKᵀ q^C */
    ds3_real *oc;       /* absorbed: [T][H][C] Σ_t P_t c^KV_t */
    ds3_real *kvb;      /* naive: [T][H][Dn+Dv] [k^C | v] of the new tokens */
} mla_bufs;

static void plan(mla_bufs *b, ds3_arena *a, const ds3_config *c, int T, int S, ds3_attn_mode attn) {
    const size_t H = c->num_attention_heads, C = c->kv_lora_rank, Dn = c->qk_nope_head_dim,
                 Dr = c->qk_rope_head_dim, Dv = c->v_head_dim, Rq = c->q_lora_rank;
    memset(b, 0, sizeof *b);
    b->q = ds3_take(a, T * H * (Dn + Dr));
    b->kv = ds3_take(a, T * (C + Dr));
    b->scores = ds3_take(a, T * H * (size_t)S);
    b->o = ds3_take(a, T * H * Dv);
    b->cq = ds3_take(a, T * Rq);
    if (attn == DS3_ATTN_ABSORB) {
        b->wkvb = ds3_take(a, H * (Dn + Dv) * C);
        b->qc = ds3_take(a, T * H * C);
        b->oc = ds3_take(a, T * H * C);
    } else {
        b->kvb = ds3_take(a, T * H * (Dn + Dv));
    }
}

void ds3_mla_reserve(ds3_arena *a, const ds3_config *c, int T, int max_seq, ds3_attn_mode attn) {
    mla_bufs b;
    plan(&b, a, c, T, max_seq, attn);
}

/* ========================================================================== */
/* Projections in                                                              */
/* ========================================================================== */

/* (6)-(9): q = [q^C | RoPE(q^R)] per head, through the low-rank c^Q (q-LoRA)
 * or one projection when q_lora_rank is null (V2-Lite). */
static void mla_queries(const ds3_state *s, const ds3_layer *l, const mla_bufs *b, const ds3_real *x, int T,
                        int start) {
    const ds3_config *c = &s->m->cfg;
    const int H = c->num_attention_heads, Dn = c->qk_nope_head_dim, Dr = c->qk_rope_head_dim,
              Rq = c->q_lora_rank, Dq = Dn + Dr;
    /* the per-token loops split across the threads from DS3_PAR_MIN values
     * (each token's operations its own: the same bits) */
    if (Rq > 0) {
        ds3_proj(s, b->cq, x, &l->q_a_proj, T);
#pragma omp parallel for schedule(static) if ((size_t)T * Rq >= DS3_PAR_MIN && !ds3_in_parallel())
        for (int t = 0; t < T; t++) ds3_norm(s, b->cq + (size_t)t * Rq, b->cq + (size_t)t * Rq, l->q_a_layernorm, Rq);
        ds3_proj(s, b->q, b->cq, &l->q_b_proj, T);
    } else {
        ds3_proj(s, b->q, x, &l->q_proj, T);
    }
#pragma omp parallel for schedule(static) if ((size_t)T * H * Dq >= DS3_PAR_MIN && !ds3_in_parallel())
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++) ds3_rotate(s, b->q + ((size_t)t * H + h) * Dq + Dn, start + t);
    ds3_round(s, b->q, (size_t)T * H * Dq, DS3_EMUL_ROPE);  /* q^R (q^C is bf16 already) */
}

/* (1) and (3): [c^KV | k^R] per token, the latent normalised, the key rotated. */
static void mla_latent(const ds3_state *s, const ds3_layer *l, const mla_bufs *b, const ds3_real *x, int T,
                       int start) {
    const ds3_config *c = &s->m->cfg;
    const int C = c->kv_lora_rank, Dr = c->qk_rope_head_dim;
    ds3_proj(s, b->kv, x, &l->kv_a_proj_with_mqa, T);
#pragma omp parallel for schedule(static) if ((size_t)T * (C + Dr) >= DS3_PAR_MIN && !ds3_in_parallel())
    for (int t = 0; t < T; t++) {
        ds3_real *row = b->kv + (size_t)t * (C + Dr);
        ds3_norm(s, row, row, l->kv_a_layernorm, C);  /* c^KV */
        ds3_rotate(s, row + C, start + t);            /* k^R */
    }
    ds3_round(s, b->kv, (size_t)T * (C + Dr), DS3_EMUL_ROPE);  /* k^R (c^KV is bf16 already) */
}

/* ========================================================================== */
/* Scores                                                                      */
/* ========================================================================== */

/* (10)'s 1/√(Dn+Dr), times YaRN's m² (ds3_attn_softmax_scale), applied to
 * the n scores q·k of one (token, head): the only place the scale is applied.
 * A bf16 build rounds q·k (a matmul result) and the product (a bf16 op). */
static void mla_scale_scores(const ds3_state *s, ds3_real *sc, int n) {
    const ds3_real scale = (ds3_real)s->m->attn_scale;
    ds3_round(s, sc, (size_t)n, DS3_EMUL_SCORES);
    for (int u = 0; u < n; u++) sc[u] *= scale;
    ds3_round(s, sc, (size_t)n, DS3_EMUL_SCORES);
}

/* Scores of n positions, then softmax: the probabilities, in place. */
static void mla_softmax(const ds3_state *s, ds3_real *sc, int n) {
    mla_scale_scores(s, sc, n);
    ds3_softmax(sc, n);
    ds3_round(s, sc, (size_t)n, DS3_EMUL_PROBS);
}

/* ========================================================================== */
/* The two forms                                                               */
/* ========================================================================== */

/*
 * Naive: expand the latent into per-head keys and values, cache those, and
 * attend as ordinary multi-head attention.
 *   k^C, v = kv_b_proj · c^KV (2), (5);  k = [k^C; k^R] (4);  (10)
 */
static void mla_attend_naive(const ds3_state *s, const ds3_layer *l, const mla_bufs *b, ds3_kv_cache *kv, int T,
                             int start) {
    const ds3_config *c = &s->m->cfg;
    const int H = c->num_attention_heads, C = c->kv_lora_rank, Dn = c->qk_nope_head_dim,
              Dr = c->qk_rope_head_dim, Dv = c->v_head_dim, S = s->max_seq, Dq = Dn + Dr;
    /* The shared rotary key goes into every head's cached key [k^C | k^R]. */
    for (int t = 0; t < T; t++) {
        size_t pos = (size_t)(start + t);
        const ds3_real *kpe = b->kv + (size_t)t * (C + Dr) + C;
        for (int h = 0; h < H; h++) memcpy(kv->k + (pos * H + h) * Dq + Dn, kpe, Dr * sizeof(ds3_real));
    }
    /* Pack the latents c^KV contiguously ([T][C]) as the GEMM's input. */
    for (int t = 0; t < T; t++)
        memmove(b->kv + (size_t)t * C, b->kv + (size_t)t * (C + Dr), C * sizeof(ds3_real));
    ds3_proj(s, b->kvb, b->kv, &l->kv_b_proj, T);
    for (int t = 0; t < T; t++) {
        size_t pos = (size_t)(start + t);
        for (int h = 0; h < H; h++) {
            const ds3_real *src = b->kvb + ((size_t)t * H + h) * (Dn + Dv);
            memcpy(kv->k + (pos * H + h) * Dq, src, Dn * sizeof(ds3_real));                /* k^C */
            memcpy(kv->v + (pos * H + h) * Dv, src + Dn, Dv * sizeof(ds3_real));           /* v */
        }
    }

    /* Each (token, head) pair is independent and writes only its own rows.
     * Round robin (chunks of one), as in the absorbed form below: a later
     * token attends to more keys. */
#pragma omp parallel for schedule(static, 1)
    for (int th = 0; th < T * H; th++) {
        const int t = th / H, h = th % H, pos = start + t;
        const ds3_real *qh = b->q + (size_t)th * Dq;
        ds3_real *sc = b->scores + (size_t)th * S;
        /* Causal: position pos sees keys 0..pos. */
        for (int u = 0; u <= pos; u++) sc[u] = ds3_sdot(s, qh, kv->k + ((size_t)u * H + h) * Dq, Dq);
        mla_softmax(s, sc, pos + 1);
        ds3_real *oh = b->o + (size_t)th * Dv;
        for (int e = 0; e < Dv; e++) oh[e] = 0;
        ds3_axpy_rows(oh, sc, kv->v + (size_t)h * Dv, pos + 1, (size_t)H * Dv, Dv);  /* Σ_u P_u v_u, in u order */
        ds3_round(s, oh, (size_t)Dv, DS3_EMUL_ATTN);
    }
}

/* Heads [h0, h0 + n) of kv_b_proj dequantised into their rows of b->wkvb,
 * [H][Dn+Dv][C] (rounded as a GPU build would when emulating one). */
static void absorbed_weights(const ds3_state *s, const ds3_layer *l, const mla_bufs *b, int h0, int n) {
    const ds3_config *c = &s->m->cfg;
    const int C = c->kv_lora_rank, R = c->qk_nope_head_dim + c->v_head_dim;  /* rows per head */
    ds3_real *w = b->wkvb + (size_t)h0 * R * C;
    ds3_tensor_rows(w, &l->kv_b_proj, (int64_t)h0 * R, (int64_t)n * R);
    ds3_round_weights(s, w, (size_t)n * R * C, l->kv_b_proj.dtype);
}

/* What both absorbed forms do first: the T new latents and rope keys into the
 * cache, and (several tokens) kv_b_proj dequantised once per call, every head:
 * every work item needs them all. A decode step's items each dequantise their
 * own heads instead (mla_attend_absorbed): in parallel, and in the cache that
 * uses them — the same values. */
static void absorbed_begin(const ds3_state *s, const ds3_layer *l, const mla_bufs *b, ds3_kv_cache *kv, int T,
                           int start) {
    const ds3_config *c = &s->m->cfg;
    const int C = c->kv_lora_rank, Dr = c->qk_rope_head_dim;
    for (int t = 0; t < T; t++) {
        const ds3_real *row = b->kv + (size_t)t * (C + Dr);
        memcpy(kv->c + (size_t)(start + t) * C, row, C * sizeof(ds3_real));
        memcpy(kv->k_pe + (size_t)(start + t) * Dr, row + C, Dr * sizeof(ds3_real));
    }
    if (T > 1) absorbed_weights(s, l, b, 0, c->num_attention_heads);
}

/*
 * Absorbed: W^UK is absorbed into the query and W^UV applied after the
 * weighted sum, so attention runs in the latent space and the cache holds
 * only c^KV and k^R:
 *   q·k = q^C·(W^UK c^KV) + q^R·k^R = (W^UKᵀ q^C)·c^KV + q^R·k^R
 *   o   = Σ_t P_t W^UV c^KV_t = W^UV (Σ_t P_t c^KV_t)
 */
static void mla_attend_absorbed(const ds3_state *s, const ds3_layer *l, const mla_bufs *b, ds3_kv_cache *kv,
                                int T, int start) {
    const ds3_config *c = &s->m->cfg;
    const int H = c->num_attention_heads, C = c->kv_lora_rank, Dn = c->qk_nope_head_dim,
              Dr = c->qk_rope_head_dim, Dv = c->v_head_dim, S = s->max_seq, Dq = Dn + Dr;
    absorbed_begin(s, l, b, kv, T, start);
    const ds3_real *q = b->q, *wkvb = b->wkvb;
    ds3_real *qc = b->qc, *oc = b->oc, *scores = b->scores, *o = b->o;

    /*
     * Each (token, head) pair is independent and writes only its own rows.
     * A work item is one token and a group of G heads: all heads of a
     * token read the same cached latents, so each cache row is loaded once
     * for the G heads instead of G times. Prefill has tokens enough to keep
     * every thread busy with G = H; a decode step (T = 1) splits the heads
     * into as many groups as there are threads (the largest divisor of H
     * not above it), each of which reads the cache once. Every head does
     * the same operations in the same order either way, so G changes no bit.
     *
     * Items go round robin (chunks of one): the causal item of position p
     * costs p + 1 keys, so contiguous halves (schedule(static)) gave the
     * second of two threads three quarters of a prefill's attention. Which
     * thread runs an item changes none of its operations.
     */
    int groups = 1;
    if (T == 1)
        for (int n = ds3_threads() < H ? ds3_threads() : H; n >= 1; n--)
            if (H % n == 0) {
                groups = n;
                break;
            }
    const int G = H / groups;
    /* A fast decode step's scores and o_c (attend.c), where the CPU has AVX-512:
     * not the lane order's bits, fast mode's own (with BLAS, as its other
     * products); every element still the same operations whatever G or T, so
     * a verification of drafts (decode_rows) has a decode step's bits. */
    const bool fused = ds3_decode_step(s, T) && ds3_gemm_ok() && ds3_attend_ok();
#pragma omp parallel for schedule(static, 1)
    for (int tg = 0; tg < T * groups; tg++) {
        const int t = tg / groups, h0 = (tg % groups) * G, pos = start + t;
        const size_t th0 = (size_t)t * H + h0;  /* first (token, head) of the item */
        if (T == 1) absorbed_weights(s, l, b, h0, G);  /* (absorbed_begin) */

        /* Absorb W^UK into the query: q_c = W^UKᵀ q^C (length C). */
        for (int g = 0; g < G; g++) {
            const ds3_real *qh = q + (th0 + g) * Dq;                        /* [q^C | q^R] */
            const ds3_real *wuk = wkvb + (size_t)(h0 + g) * (Dn + Dv) * C;  /* [Dn][C] */
            ds3_real *qch = qc + (th0 + g) * C;
            for (int k = 0; k < C; k++) qch[k] = 0;
            ds3_axpy_rows(qch, qh, wuk, Dn, (size_t)C, C);  /* Σ_d q^C_d W^UK_d, in d order */
            ds3_round(s, qch, (size_t)C, DS3_EMUL_ATTN);
        }

        /* Causal: position pos sees keys 0..pos. The score is the sum of two
         * products (two einsums in the official code, each a bf16 result).
         * A fast decode step: one chain of fused multiply-adds (attend.c). */
        if (fused)
            ds3_attend_scores(scores + th0 * S, (size_t)S, qc + th0 * C, (size_t)C, q + th0 * Dq + Dn, (size_t)Dq, G,
                              kv->c, C, kv->k_pe, Dr, pos + 1);
        else {
            for (int u = 0; u <= pos; u++) {
                const ds3_real *cu = kv->c + (size_t)u * C, *ku = kv->k_pe + (size_t)u * Dr;
                for (int g0 = 0; g0 < G; g0 += 16) {  /* the item's heads against this row, 16 at a time */
                    const int ng = G - g0 < 16 ? G - g0 : 16;
                    ds3_real nope[16], rope[16];
                    ds3_sdot_rows(s, nope, qc + (th0 + g0) * C, (size_t)C, ng, cu, C);
                    ds3_sdot_rows(s, rope, q + (th0 + g0) * Dq + Dn, (size_t)Dq, ng, ku, Dr);
                    for (int g = 0; g < ng; g++)
                        scores[(th0 + g0 + g) * S + u] = ds3_round_add(s, nope[g], rope[g], DS3_EMUL_SCORES);
                }
            }
        }
        for (int g = 0; g < G; g++) mla_softmax(s, scores + (th0 + g) * S, pos + 1);

        /* Attend in latent space, then expand with W^UV. */
        if (fused) ds3_attend_values(oc + th0 * C, (size_t)C, scores + th0 * S, (size_t)S, G, kv->c, C, pos + 1);
        else {
            for (int g = 0; g < G; g++)
                for (int k = 0; k < C; k++) oc[(th0 + g) * C + k] = 0;
            /* Σ_u P_u c^KV_u in u order, a block of cached rows at a time for
             * all the item's heads: 32 KB of them, which stay in a core's L1
             * for the heads (32 rows of small's 256 latents; each element's
             * sum is in u order whatever the block). */
            const int blk = C * (int)sizeof(ds3_real) >= 8192 ? 4 : 32768 / (C * (int)sizeof(ds3_real));
            for (int u0 = 0; u0 <= pos; u0 += blk) {
                const int nu = pos + 1 - u0 < blk ? pos + 1 - u0 : blk;
                for (int g = 0; g < G; g++)
                    ds3_axpy_rows(oc + (th0 + g) * C, scores + (th0 + g) * S + u0, kv->c + (size_t)u0 * C, nu,
                                  (size_t)C, C);
            }
        }
        for (int g = 0; g < G; g++) {
            const ds3_real *wuv = wkvb + ((size_t)(h0 + g) * (Dn + Dv) + Dn) * C;  /* [Dv][C] */
            ds3_real *och = oc + (th0 + g) * C, *oh = o + (th0 + g) * Dv;
            ds3_round(s, och, (size_t)C, DS3_EMUL_ATTN);
            ds3_sdot_rows(s, oh, wuv, (size_t)C, Dv, och, C);  /* oh[e] = W^UV_e · o_c */
            ds3_round(s, oh, (size_t)Dv, DS3_EMUL_ATTN);
        }
    }
}

/* Query rows per causal block of mla_attend_absorbed_gemm. */
#define ATTN_ROWS 64

/*
 * Absorbed, fast kernels, several tokens: the same sums as blocked GEMMs,
 * one head at a time (OpenBLAS, single-threaded; heads in parallel). For
 * head h, with its T queries' rows (row t of each matrix is (token t, head h)
 * of the scratch buffers, H rows apart) and the P = start + T cached positions:
 *
 *   q_c    = q^C · W^UK                 [T][Dn] · [Dn][C]
 *   scores = q_c · c^KVᵀ + q^R · k^Rᵀ   [T][C] · [C][P], then += [T][Dr] · [Dr][P]
 *   P      = softmax of each row's causal prefix (position p: keys 0..p, the
 *            rest set to exact zeros), as mla_softmax does it
 *   o_c    = P · c^KV                   [T][P] · [P][C]
 *   o      = o_c · W^UVᵀ                [T][C] · [C][Dv]
 *
 * The scores, softmax and o_c run over blocks of ATTN_ROWS query rows, each
 * block over the positions its last row sees (start + t0 + n), not all P: a
 * block's rows see no later position, so what is skipped is what the mask
 * would have zeroed. The blocks are fixed (not by thread), so the bits still
 * do not depend on the thread count.
 *
 * A GEMM sums each product with fused multiply-adds in an order its kernel
 * blocks, so these are not the lane order's bits (mla_attend_absorbed):
 * fast mode's attention then differs from decode's, and from another
 * chunking's, within rounding, as its projections already did
 * (docs/ARCHITECTURE.md §6). Every head is the same calls on the same data
 * whatever the thread count, so the bits do not depend on it. Deterministic
 * and ref kernels, a decode step, the naive form and the emulation of a GPU
 * build's rounding points (which round between these products) keep the
 * lane order.
 */
static void mla_attend_absorbed_gemm(const ds3_state *s, const ds3_layer *l, const mla_bufs *b, ds3_kv_cache *kv,
                                     int T, int start) {
    const ds3_config *c = &s->m->cfg;
    const int H = c->num_attention_heads, C = c->kv_lora_rank, Dn = c->qk_nope_head_dim,
              Dr = c->qk_rope_head_dim, Dv = c->v_head_dim, S = s->max_seq, Dq = Dn + Dr;
    absorbed_begin(s, l, b, kv, T, start);
    ds3_gemm_prepare();
#pragma omp parallel for schedule(static)
    for (int h = 0; h < H; h++) {
        const ds3_real *wuk = b->wkvb + (size_t)h * (Dn + Dv) * C, *wuv = wuk + (size_t)Dn * C;
        ds3_real *qc = b->qc + (size_t)h * C, *sc = b->scores + (size_t)h * S, *oc = b->oc + (size_t)h * C;
        const ds3_real *q = b->q + (size_t)h * Dq;
        ds3_gemm(false, T, C, Dn, q, H * Dq, wuk, C, 0, qc, H * C);
        /* Query rows in blocks of ATTN_ROWS: rows t0 .. t0 + n − 1 see positions
         * below pb = start + t0 + n only, so the scores and o_c products skip the
         * masked part (in a prefill about half of their work) */
        for (int t0 = 0; t0 < T; t0 += ATTN_ROWS) {
            const int n = T - t0 < ATTN_ROWS ? T - t0 : ATTN_ROWS, pb = start + t0 + n;
            ds3_real *sb = sc + (size_t)t0 * H * S;
            ds3_gemm(true, n, pb, C, qc + (size_t)t0 * H * C, H * C, kv->c, C, 0, sb, H * S);
            ds3_gemm(true, n, pb, Dr, q + Dn + (size_t)t0 * H * Dq, H * Dq, kv->k_pe, Dr, 1, sb, H * S);
            for (int t = t0; t < t0 + n; t++) {
                ds3_real *row = sc + (size_t)t * H * S;
                const int pos = start + t;
                mla_softmax(s, row, pos + 1);
                for (int u = pos + 1; u < pb; u++) row[u] = 0;  /* the future: no weight */
            }
            ds3_gemm(false, n, C, pb, sb, H * S, kv->c, C, 0, oc + (size_t)t0 * H * C, H * C);
        }
        ds3_gemm(true, T, Dv, C, oc, H * C, wuv, C, 0, b->o + (size_t)h * Dv, H * Dv);
    }
}

/* ========================================================================== */
/* The sublayer                                                                */
/* ========================================================================== */

/* Calls of at most this many tokens keep the lane order in fast mode too, as
 * ds3_linear keeps its lane kernel for them (a GEMM's setup would dominate). */
#define ATTN_GEMM_MIN_T 5

void ds3_mla(ds3_state *s, const ds3_layer *l, ds3_kv_cache *kv, ds3_real *out, const ds3_real *x, int T,
             int start) {
    mla_bufs b;
    ds3_arena a = ds3_scratch(s);
    plan(&b, &a, &s->m->cfg, T, s->max_seq, s->attn);

    mla_queries(s, l, &b, x, T, start);
    mla_latent(s, l, &b, x, T, start);
    if (s->attn == DS3_ATTN_NAIVE) mla_attend_naive(s, l, &b, kv, T, start);
    else if (s->kernels == DS3_KERNELS_FAST && T >= ATTN_GEMM_MIN_T && !s->emul && ds3_gemm_ok())
        mla_attend_absorbed_gemm(s, l, &b, kv, T, start);
    else mla_attend_absorbed(s, l, &b, kv, T, start);

    /* (11): out = o_proj · [o_1 … o_H] */
    ds3_proj(s, out, b.o, &l->o_proj, T);
}

/*
 * mla.c — multi-head latent attention (DeepSeek-V2 paper §2.1, SPEC §3).
 *
 * For each token x (already RMS-normalised) at position p:
 *   q    = q_b_proj · RMSNorm_qa(q_a_proj · x)     (or q_proj · x)   H × [nope Dn | rope Dr]
 *   kv   = kv_a_proj_with_mqa · x                                      [latent C | rope Dr]
 *   c    = RMSNorm_kva(kv[0:C])         the compressed latent: the only per-head
 *                                       information the cache has to keep
 *   k_pe = RoPE(kv[C:], p)              one rotary key shared by all heads
 *   q_pe = RoPE(q[h][Dn:], p)
 * and then, with kv_b_proj viewed as H × [W_UK (Dn rows) | W_UV (Dv rows)] × C,
 *
 *   naive:    k_nope[h] = W_UK[h]·c,  v[h] = W_UV[h]·c, cached per head;
 *             score = (q_nope·k_nope + q_pe·k_pe)·scale
 *   absorbed: score = ((W_UK[h]ᵀ q_nope)·c + q_pe·k_pe)·scale
 *             o[h]  = W_UV[h] · Σ_t P_t c_t
 *
 * The two forms are the same sums regrouped; the absorbed one (the official
 * code's default) caches C + Dr values per token and layer instead of
 * H·(Dn+Dr+Dv). Both are kept: the naive form is the one that reads like the
 * paper and is what tests hold the absorbed form to.
 *
 * Work (scratch from the state), for T tokens and a cache of S positions:
 *   qa [T][Rq], q [T][H][Dn+Dr], kv [T][C+Dr], scores [T][H][S], o [T][H][Dv];
 *   absorbed: wkvb [H][Dn+Dv][C], qc [T][H][C], oc [T][H][C];
 *   naive:    kvb [T][H][Dn+Dv].
 */
#include "internal.h"

#include <math.h>
#include <string.h>

/* Take n elements from the scratch cursor. */
static ds3_real *carve(ds3_real **cur, size_t n) {
    ds3_real *p = *cur;
    *cur += n;
    return p;
}

size_t ds3_mla_work_size(const ds3_config *c, int T, int max_seq, ds3_attn_mode attn) {
    size_t H = c->num_attention_heads, C = c->kv_lora_rank, Dn = c->qk_nope_head_dim,
           Dr = c->qk_rope_head_dim, Dv = c->v_head_dim, Rq = c->q_lora_rank;
    size_t n = T * Rq + T * H * (Dn + Dr) + T * (C + Dr) + (size_t)T * H * max_seq + T * H * Dv;
    if (attn == DS3_ATTN_ABSORB) n += H * (Dn + Dv) * C + 2 * (size_t)T * H * C;
    else n += (size_t)T * H * (Dn + Dv);
    return n;
}

/* ops.c's fixed-order SIMD dot product (the plain sum in DS3_KERNELS_REF mode). */
static ds3_real dot(const ds3_real *a, const ds3_real *b, int n) { return ds3_dot(a, b, n); }

void ds3_mla(ds3_state *s, const ds3_layer *l, ds3_kv_cache *kv, ds3_real *out, const ds3_real *x,
             int T, int start) {
    const ds3_config *c = &s->m->cfg;
    const int H = c->num_attention_heads, C = c->kv_lora_rank, Dn = c->qk_nope_head_dim,
              Dr = c->qk_rope_head_dim, Dv = c->v_head_dim, Rq = c->q_lora_rank, S = s->max_seq;
    const int Dq = Dn + Dr;  /* one head's query width */
    const ds3_real scale = (ds3_real)s->m->attn_scale;
    const ds3_real smul = ds3_emul_score_scale(s, scale);  /* scale, or 1 when emulation scales later */
    const double *freqs = s->m->rope_freqs;
    const double afac = s->m->rope_attn_factor;

    ds3_real *cur = s->work;
    ds3_real *q = carve(&cur, (size_t)T * H * Dq);
    ds3_real *kvx = carve(&cur, (size_t)T * (C + Dr));
    ds3_real *scores = carve(&cur, (size_t)T * H * S);
    ds3_real *o = carve(&cur, (size_t)T * H * Dv);

    /* ---- queries: low-rank (q-LoRA) or one projection ---------------------- */
    if (Rq > 0) {
        ds3_real *qa = carve(&cur, (size_t)T * Rq);
        ds3_linear_em(s, qa, x, &l->q_a_proj, T);
        for (int t = 0; t < T; t++)
            ds3_rmsnorm_em(s, qa + (size_t)t * Rq, qa + (size_t)t * Rq, l->q_a_layernorm, Rq, c->rms_norm_eps);
        ds3_linear_em(s, q, qa, &l->q_b_proj, T);
    } else {
        ds3_linear_em(s, q, x, &l->q_proj, T);
    }

    /* ---- the latent and the shared rotary key, into the cache -------------- */
    ds3_linear_em(s, kvx, x, &l->kv_a_proj_with_mqa, T);
    for (int t = 0; t < T; t++) {
        int pos = start + t;
        ds3_real *row = kvx + (size_t)t * (C + Dr);
        ds3_rmsnorm_em(s, row, row, l->kv_a_layernorm, C, c->rms_norm_eps);  /* c: latent */
        ds3_rope_em(s, row + C, freqs, afac, Dr, pos);                 /* k_pe */
        for (int h = 0; h < H; h++) ds3_rope_em(s, q + ((size_t)t * H + h) * Dq + Dn, freqs, afac, Dr, pos);
    }
    ds3_emul_round(s, q, (size_t)T * H * Dq, DS3_EMUL_ROPE);       /* q_pe (q_nope is bf16 already) */
    ds3_emul_round(s, kvx, (size_t)T * (C + Dr), DS3_EMUL_ROPE);   /* k_pe (c is bf16 already) */

    if (s->attn == DS3_ATTN_ABSORB) {
        for (int t = 0; t < T; t++) {
            const ds3_real *row = kvx + (size_t)t * (C + Dr);
            memcpy(kv->c + (size_t)(start + t) * C, row, C * sizeof(ds3_real));
            memcpy(kv->k_pe + (size_t)(start + t) * Dr, row + C, Dr * sizeof(ds3_real));
        }
        /* kv_b_proj dequantised once per call: [H][Dn+Dv][C]. */
        ds3_real *wkvb = carve(&cur, (size_t)H * (Dn + Dv) * C);
        ds3_real *qc = carve(&cur, (size_t)T * H * C);
        ds3_real *oc = carve(&cur, (size_t)T * H * C);
        DS3_ASSERT((size_t)(cur - s->work) <= s->work_size);
        ds3_tensor_rows(wkvb, &l->kv_b_proj, 0, (int64_t)H * (Dn + Dv));
        ds3_emul_weights(s, wkvb, (size_t)H * (Dn + Dv) * C, l->kv_b_proj.dtype);

        /*
         * Each (token, head) pair is independent and writes only its own rows.
         * A work item is one token and a group of G heads: all heads of a
         * token read the same cached latents, so in prefill (G = H) each
         * cache row is loaded once for the H heads instead of H times; a
         * decode step (T = 1, G = 1) keeps the heads as its parallel items.
         * Every head does the same operations in the same order either way,
         * so G changes no bit.
         */
        const int G = T > 1 ? H : 1, groups = H / G;
#pragma omp parallel for schedule(static)
        for (int tg = 0; tg < T * groups; tg++) {
            const int t = tg / groups, h0 = (tg % groups) * G, pos = start + t;
            const size_t th0 = (size_t)t * H + h0;  /* first (token, head) of the item */

            /* Absorb W_UK into the query: q_c = W_UKᵀ q_nope (length C). */
            for (int g = 0; g < G; g++) {
                const ds3_real *qh = q + (th0 + g) * Dq;                    /* [q_nope | q_pe] */
                const ds3_real *wuk = wkvb + (size_t)(h0 + g) * (Dn + Dv) * C;  /* [Dn][C] */
                ds3_real *qch = qc + (th0 + g) * C;
                for (int k = 0; k < C; k++) qch[k] = 0;
                for (int d = 0; d < Dn; d++) ds3_axpy(qch, qh[d], wuk + (size_t)d * C, C);
                ds3_emul_round(s, qch, (size_t)C, DS3_EMUL_ATTN);
            }

            /* Causal: position pos sees keys 0..pos. */
            for (int u = 0; u <= pos; u++) {
                const ds3_real *cu = kv->c + (size_t)u * C, *ku = kv->k_pe + (size_t)u * Dr;
                for (int g = 0; g < G; g++) {
                    const ds3_real nope = dot(qc + (th0 + g) * C, cu, C);
                    const ds3_real rope = dot(q + (th0 + g) * Dq + Dn, ku, Dr);
                    scores[(th0 + g) * S + u] = s->emul ? ds3_emul_score2(s, nope, rope) : (nope + rope) * scale;
                }
            }
            for (int g = 0; g < G; g++) {
                ds3_real *sc = scores + (th0 + g) * S;
                ds3_emul_scores(s, sc, (size_t)pos + 1, scale);
                ds3_softmax(sc, pos + 1);
                ds3_emul_round(s, sc, (size_t)pos + 1, DS3_EMUL_PROBS);
            }

            /* Attend in latent space, then expand with W_UV. */
            for (int g = 0; g < G; g++)
                for (int k = 0; k < C; k++) oc[(th0 + g) * C + k] = 0;
            for (int u = 0; u <= pos; u++) {
                const ds3_real *cu = kv->c + (size_t)u * C;
                for (int g = 0; g < G; g++) ds3_axpy(oc + (th0 + g) * C, scores[(th0 + g) * S + u], cu, C);
            }
            for (int g = 0; g < G; g++) {
                const ds3_real *wuv = wkvb + ((size_t)(h0 + g) * (Dn + Dv) + Dn) * C;  /* [Dv][C] */
                ds3_real *och = oc + (th0 + g) * C, *oh = o + (th0 + g) * Dv;
                ds3_emul_round(s, och, (size_t)C, DS3_EMUL_ATTN);
                for (int e = 0; e < Dv; e++) oh[e] = dot(wuv + (size_t)e * C, och, C);
                ds3_emul_round(s, oh, (size_t)Dv, DS3_EMUL_ATTN);
            }
        }
    } else {
        /* Naive: expand the latent into per-head keys and values, cache those. */
        ds3_real *kvb = carve(&cur, (size_t)T * H * (Dn + Dv));
        DS3_ASSERT((size_t)(cur - s->work) <= s->work_size);
        /* The shared rotary key goes into every head's cached key [k_nope | k_pe]. */
        for (int t = 0; t < T; t++) {
            size_t pos = (size_t)(start + t);
            const ds3_real *kpe = kvx + (size_t)t * (C + Dr) + C;
            for (int h = 0; h < H; h++) memcpy(kv->k + (pos * H + h) * Dq + Dn, kpe, Dr * sizeof(ds3_real));
        }
        /* Pack the latents c contiguously ([T][C]) as the GEMM's input. */
        for (int t = 0; t < T; t++)
            memmove(kvx + (size_t)t * C, kvx + (size_t)t * (C + Dr), C * sizeof(ds3_real));
        ds3_linear_em(s, kvb, kvx, &l->kv_b_proj, T);
        for (int t = 0; t < T; t++) {
            size_t pos = (size_t)(start + t);
            for (int h = 0; h < H; h++) {
                const ds3_real *src = kvb + ((size_t)t * H + h) * (Dn + Dv);
                ds3_real *kd = kv->k + (pos * H + h) * Dq;
                memcpy(kd, src, Dn * sizeof(ds3_real));                            /* k_nope */
                memcpy(kv->v + (pos * H + h) * Dv, src + Dn, Dv * sizeof(ds3_real)); /* v */
            }
        }

#pragma omp parallel for schedule(static)
        for (int th = 0; th < T * H; th++) {
            int t = th / H, h = th % H, pos = start + t;
            const ds3_real *qh = q + (size_t)th * Dq;
            ds3_real *sc = scores + (size_t)th * S;
            for (int u = 0; u <= pos; u++) sc[u] = dot(qh, kv->k + ((size_t)u * H + h) * Dq, Dq) * smul;
            ds3_emul_scores(s, sc, (size_t)pos + 1, scale);
            ds3_softmax(sc, pos + 1);
            ds3_emul_round(s, sc, (size_t)pos + 1, DS3_EMUL_PROBS);
            ds3_real *oh = o + (size_t)th * Dv;
            for (int e = 0; e < Dv; e++) oh[e] = 0;
            for (int u = 0; u <= pos; u++) ds3_axpy(oh, sc[u], kv->v + ((size_t)u * H + h) * Dv, Dv);
            ds3_emul_round(s, oh, (size_t)Dv, DS3_EMUL_ATTN);
        }
    }

    /* out = o_proj · concat_h o[h] */
    ds3_linear_em(s, out, o, &l->o_proj, T);
}

/*
 * emulate.c — rounding where a GPU build rounds (docs/MODEL.md §7; docs/COMPARING.md,
 * "Emulation"). Off by default: without ds3_set_emulation nothing here runs
 * and the forward pass keeps its bits.
 *
 * A bf16 build of DeepSeek-V3 (the official inference/model.py with
 * torch.set_default_dtype(torch.bfloat16), transformers in bfloat16, the
 * engines) holds every activation in bfloat16 and accumulates GEMMs in fp32.
 * So every tensor an operator writes is rounded to bf16 (8 significant bits,
 * relative step 2^-8, rounding error up to 2^-9), at these points:
 *
 *   residual  the embedding and the residual stream after each add (h = h + y)
 *   norm      RMSNorm: normalised in fp32, rounded, times the bf16 weight,
 *             rounded again (transformers' DeepseekV3RMSNorm does exactly
 *             this; so does PyTorch's composite F.rms_norm)
 *   linear    every projection's output (F.linear of bf16 inputs: fp32
 *             accumulation, bf16 result), the logits included
 *   weights   weights as the build holds them: F32/F16 weights, and F8_E4M3
 *             weights dequantised for a bf16 GEMM (official weight_dequant
 *             returns bf16), rounded to bf16; BF16 weights are exact
 *   rope      q_pe and k_pe after the rotation (the official code rotates in
 *             fp32 and casts back); flavour rope-bf16: as transformers does
 *             it, cos/sin rounded to bf16 and each product and sum rounded
 *   scores    attention scores before the softmax: q·k is a bf16 matmul
 *             result, then ·scale another bf16 op (absorbed form: the two
 *             einsums q_c·c and q_pe·k_pe each rounded, then their sum)
 *   probs     attention probabilities: softmax in fp32, cast to bf16
 *   attn      per-head attention outputs, and the absorbed form's q_c and o_c
 *             (einsum results)
 *   act       silu(gate) and silu(gate)·up (two bf16 ops)
 *   router    the official Gate in bf16: logits = linear(x, W) in bf16,
 *             sigmoid in bf16 (softmax scoring: fp32), selection with the fp32
 *             bias in fp32, weights gathered in bf16, their sum, the quotient
 *             and the route_scale product each rounded (softmax: rounded once
 *             at the end, .type_as(x)). transformers and several engines run
 *             the router in fp32 instead: leave this point out (router-f32)
 *   combine   the MoE sum in bf16: y += expert(x)·w per expert in ascending
 *             expert index (as both the official MoE.forward and transformers
 *             loop), each product and each sum rounded, then y + shared
 *
 * fp8 (the official w8a8 path, gemm_impl = "fp8") adds, before each linear
 * whose weight is F8_E4M3:
 *   actquant  the input quantised per row in blocks of 128 columns (the last
 *             block may be shorter): s = amax/448, q = e4m3(x/s) round to
 *             nearest even, x' = q·s (official kernel.py act_quant); with
 *             ue8m0, s is rounded up to a power of two (DeepSeek-V3.1/3.2's
 *             scale_fmt "ue8m0"); an all-zero block stays zero. The weight is
 *             then used exactly (FP8 × its F32 block scale), as fp8_gemm does.
 *
 * The emulation rounds values; it does not reorder ds3's sums. What remains
 * between ds3 --emulate and a GPU build is summation order inside fp32
 * accumulations and the rare rounding that tips the other way because of it.
 *
 * Scratch: the tiles of rounded weights and the quantised inputs live in
 * thread-local buffers grown on first use (the experts of an MoE layer run in
 * parallel, each thread with its own), released with ds3_emul_release.
 */
#include "check/check.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct ds3_emul {
    ds3_emulate_mode mode;
    unsigned points;           /* DS3_EMUL_* bits in effect */
    bool ue8m0;
};

/* ========================================================================== */
/* Configuration                                                               */
/* ========================================================================== */

static const struct {
    const char *name;
    unsigned bit;
} point_names[] = {
    {"residual", DS3_EMUL_RESIDUAL}, {"norm", DS3_EMUL_NORM},       {"linear", DS3_EMUL_LINEAR},
    {"weights", DS3_EMUL_WEIGHTS},   {"rope", DS3_EMUL_ROPE},       {"scores", DS3_EMUL_SCORES},
    {"probs", DS3_EMUL_PROBS},       {"attn", DS3_EMUL_ATTN},       {"act", DS3_EMUL_ACT},
    {"router", DS3_EMUL_ROUTER},     {"combine", DS3_EMUL_COMBINE}, {"actquant", DS3_EMUL_ACTQUANT},
};

ds3_status ds3_emulation_parse(const char *spec, ds3_emulation *out) {
    memset(out, 0, sizeof *out);
    if (!spec || !spec[0]) return ds3_fail(DS3_ERR_ARG, "emulation: empty specification");
    char buf[256];
    if (strlen(spec) >= sizeof buf) return ds3_fail(DS3_ERR_ARG, "emulation: specification too long");
    strcpy(buf, spec);
    unsigned only = 0, drop = 0, flavour = 0;
    int i = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save), i++) {
        if (i == 0) {
            if (strcmp(tok, "none") == 0) out->mode = DS3_EMULATE_NONE;
            else if (strcmp(tok, "bf16") == 0) out->mode = DS3_EMULATE_BF16;
            else if (strcmp(tok, "fp8") == 0) out->mode = DS3_EMULATE_FP8;
            else return ds3_fail(DS3_ERR_ARG, "emulation: '%s' is not one of none, bf16, fp8", tok);
            continue;
        }
        if (strcmp(tok, "ue8m0") == 0) {
            if (out->mode != DS3_EMULATE_FP8) return ds3_fail(DS3_ERR_ARG, "emulation: ue8m0 needs fp8");
            out->ue8m0 = 1;
            continue;
        }
        if (strcmp(tok, "router-f32") == 0 || strcmp(tok, "hf") == 0) drop |= DS3_EMUL_ROUTER;
        if (strcmp(tok, "rope-bf16") == 0 || strcmp(tok, "hf") == 0) flavour |= DS3_EMUL_ROPE_BF16;
        if (strcmp(tok, "router-f32") == 0 || strcmp(tok, "rope-bf16") == 0 || strcmp(tok, "hf") == 0) continue;
        bool neg = tok[0] == '-';
        const char *nm = tok + neg;
        unsigned bit = 0;
        for (size_t k = 0; k < sizeof point_names / sizeof point_names[0]; k++)
            if (strcmp(nm, point_names[k].name) == 0) bit = point_names[k].bit;
        if (!bit)
            return ds3_fail(DS3_ERR_ARG, "emulation: '%s' is not ue8m0, router-f32, rope-bf16, hf or a rounding point "
                            "(residual, norm, linear, weights, rope, scores, probs, attn, act, router, combine, "
                            "actquant; '-NAME' leaves one out)", tok);
        if (bit == DS3_EMUL_ACTQUANT && out->mode != DS3_EMULATE_FP8)
            return ds3_fail(DS3_ERR_ARG, "emulation: actquant needs fp8");
        if (neg) drop |= bit;
        else only |= bit;
    }
    if (out->mode == DS3_EMULATE_NONE && i > 1) return ds3_fail(DS3_ERR_ARG, "emulation: 'none' takes no options");
    unsigned all = DS3_EMUL_ALL & ~(out->mode == DS3_EMULATE_FP8 ? 0u : DS3_EMUL_ACTQUANT);
    out->points = ((only ? only : all) & ~drop) | flavour;
    return DS3_OK;
}

ds3_status ds3_emul_new(const ds3_emulation *e, ds3_emul **out) {
    *out = NULL;
    if (!e || e->mode == DS3_EMULATE_NONE) return DS3_OK;
    if (e->mode != DS3_EMULATE_BF16 && e->mode != DS3_EMULATE_FP8)
        return ds3_fail(DS3_ERR_ARG, "ds3_set_emulation: unknown mode %d", (int)e->mode);
    if (e->points & ~(DS3_EMUL_ALL | DS3_EMUL_ROPE_BF16))
        return ds3_fail(DS3_ERR_ARG, "ds3_set_emulation: unknown point bits %#x", e->points);
    if (e->mode != DS3_EMULATE_FP8 && (e->ue8m0 || (e->points & DS3_EMUL_ACTQUANT)))
        return ds3_fail(DS3_ERR_ARG, "ds3_set_emulation: ue8m0 and actquant need fp8");
    ds3_emul *m = ds3_calloc(1, sizeof *m);
    if (!m) return DS3_ERR_NOMEM;
    m->mode = e->mode;
    unsigned all = DS3_EMUL_ALL & ~(e->mode == DS3_EMULATE_FP8 ? 0u : DS3_EMUL_ACTQUANT);
    m->points = e->points & DS3_EMUL_ALL ? e->points : all | (e->points & DS3_EMUL_ROPE_BF16);
    m->ue8m0 = e->ue8m0 != 0;
    *out = m;
    return DS3_OK;
}

void ds3_emul_free(ds3_emul *e) { free(e); }

bool ds3_emul_has(const ds3_emul *e, unsigned point) { return e && (e->points & point); }

/* ========================================================================== */
/* Rounding                                                                    */
/* ========================================================================== */

/* Round to bfloat16, nearest even; the result is exact in the scalar type. */
static inline ds3_real bf16(ds3_real v) {
#ifdef DS3_F64
    /* via float would round twice; round the double to 8 significant bits */
    if (v == 0 || !isfinite(v)) return v;
    int ex;
    frexp(v, &ex);
    if (ex < -125) ex = -125;                   /* bf16 subnormals: a fixed step of 2^-133 */
    double q = nearbyint(ldexp(v, 8 - ex));
    double r = ldexp(q, ex - 8);
    return fabs(r) > 0x1.fep127 ? copysign(INFINITY, v) : r;
#else
    return ds3_bf16_to_f32(ds3_f32_to_bf16(v));
#endif
}

void ds3_emul_round(const ds3_emul *e, ds3_real *x, size_t n, unsigned point) {
    if (!ds3_emul_has(e, point)) return;
    for (size_t i = 0; i < n; i++) x[i] = bf16(x[i]);
}

void ds3_emul_rmsnorm(const ds3_emul *e, ds3_real *out, const ds3_real *x, const ds3_real *w, int n, double eps) {
    /* the same sum of squares as src/model/ops.c's ds3_rmsnorm, then two roundings */
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * (double)x[i];
    ds3_real inv = (ds3_real)(1.0 / sqrt(ss / n + eps));
    bool rw = ds3_emul_has(e, DS3_EMUL_WEIGHTS);
    for (int i = 0; i < n; i++) out[i] = bf16((rw ? bf16(w[i]) : w[i]) * bf16(x[i] * inv));
}

/* ========================================================================== */
/* Attention                                                                   */
/* ========================================================================== */

ds3_real ds3_emul_add(const ds3_emul *e, ds3_real a, ds3_real b, unsigned point) {
    /* official absorbed form: two einsums, each a bf16 result, then their sum */
    return ds3_emul_has(e, point) ? bf16(bf16(a) + bf16(b)) : a + b;
}

void ds3_emul_rope(ds3_real *x, const double *freqs, double attn_factor, int Dr, int pos) {
    /* transformers in bf16: angle = pos · inv_freq in fp32, cos/sin in fp32
     * times attention_scaling, cast to bf16; then y0 = x0·c - x1·s and
     * y1 = x1·c + x0·s with every product and sum a bf16 op. */
    for (int j = 0; j < Dr / 2; j++) {
        float theta = (float)pos * (float)freqs[j];
        ds3_real cs = bf16((ds3_real)(float)((float)ds3_cos((double)theta) * (float)attn_factor));
        ds3_real sn = bf16((ds3_real)(float)((float)ds3_sin((double)theta) * (float)attn_factor));
        ds3_real x0 = x[2 * j], x1 = x[2 * j + 1];
        x[2 * j] = bf16(bf16(x0 * cs) - bf16(x1 * sn));
        x[2 * j + 1] = bf16(bf16(x1 * cs) + bf16(x0 * sn));
    }
}

/* ========================================================================== */
/* Linear layers                                                               */
/* ========================================================================== */

/* This thread's scratch, grown on demand. */
static _Thread_local ds3_real *tl_xq;      /* quantised inputs [T][cols] */
static _Thread_local size_t tl_xq_n;
static _Thread_local float *tl_tile;       /* rounded weight rows [128][cols] */
static _Thread_local size_t tl_tile_n;
static _Thread_local ds3_real *tl_out;     /* the tile's outputs [T][128] */
static _Thread_local size_t tl_out_n;
static _Thread_local ds3_real *tl_row;     /* one dequantised weight row [cols] */
static _Thread_local size_t tl_row_n;

static void *grow(void *p, size_t *have, size_t need, size_t elem) {
    if (need <= *have) return p;
    void *q = realloc(p, need * elem);
    DS3_ASSERT(q != NULL);  /* emulation scratch: a few MB at most for real models */
    *have = need;
    return q;
}

void ds3_emul_release(void) {
    /* every thread of the team frees its own buffers (the MoE experts run in
     * parallel, each with its own scratch) */
#pragma omp parallel
    {
        free(tl_xq);
        free(tl_tile);
        free(tl_out);
        free(tl_row);
        tl_xq = NULL;
        tl_tile = NULL;
        tl_out = NULL;
        tl_row = NULL;
        tl_xq_n = tl_tile_n = tl_out_n = tl_row_n = 0;
    }
}

/*
 * FP8 activation quantisation of one row x[n] into q[n] (official act_quant):
 * per block of 128, s = amax/448 in fp32 (ue8m0: the next power of two at or
 * above), q = e4m3(x/s)·s.
 */
static void act_quant_row(ds3_real *q, const ds3_real *x, int64_t n, bool ue8m0) {
    for (int64_t c0 = 0; c0 < n; c0 += DS3_FP8_BLOCK) {
        int64_t nb = n - c0 < DS3_FP8_BLOCK ? n - c0 : DS3_FP8_BLOCK;
        float amax = 0;
        for (int64_t j = 0; j < nb; j++) {
            float a = fabsf((float)x[c0 + j]);
            if (a > amax) amax = a;
        }
        if (amax == 0 || !isfinite(amax)) {
            for (int64_t j = 0; j < nb; j++) q[c0 + j] = amax == 0 ? 0 : x[c0 + j];
            continue;
        }
        float sc = amax / 448.0f;
        if (ue8m0) {
            int ex;
            float m = frexpf(sc, &ex);               /* sc = m·2^ex, m in [0.5, 1) */
            sc = m == 0.5f ? sc : ldexpf(1.0f, ex);  /* a power of two stays; else round up */
        }
        for (int64_t j = 0; j < nb; j++)
            q[c0 + j] = (ds3_real)ds3_e4m3_to_f32(ds3_f32_to_e4m3((float)x[c0 + j] / sc)) * (ds3_real)sc;
    }
}

/* out = in · wᵀ with the weight rounded to bf16 first: 128-row tiles are
 * dequantised, rounded (bf16 values are exact in F32), and each tile goes
 * through ds3_linear as an F32 weight. */
static void linear_bf16_weight(ds3_kernels k, ds3_real *out, const ds3_real *in, const ds3_tensor *w, int T) {
    const int64_t cols = w->cols, rows = w->rows, TR = DS3_FP8_BLOCK;
    tl_tile = grow(tl_tile, &tl_tile_n, (size_t)(TR * cols), sizeof(float));
    tl_out = grow(tl_out, &tl_out_n, (size_t)T * (size_t)TR, sizeof(ds3_real));
    tl_row = grow(tl_row, &tl_row_n, (size_t)cols, sizeof(ds3_real));
    for (int64_t r0 = 0; r0 < rows; r0 += TR) {
        int64_t nr = rows - r0 < TR ? rows - r0 : TR;
        for (int64_t r = 0; r < nr; r++) {
            ds3_tensor_rows(tl_row, w, r0 + r, 1);
            for (int64_t j = 0; j < cols; j++) tl_tile[r * cols + j] = (float)bf16(tl_row[j]);
        }
        ds3_tensor tile = {w->name, DS3_DT_F32, nr, cols, tl_tile, NULL, NULL, NULL};
        ds3_linear(k, tl_out, in, &tile, T);
        for (int t = 0; t < T; t++)
            memcpy(out + (size_t)t * rows + r0, tl_out + (size_t)t * nr, (size_t)nr * sizeof(ds3_real));
    }
}

void ds3_emul_linear(const ds3_emul *e, ds3_kernels k, ds3_real *out, const ds3_real *in, const ds3_tensor *w,
                     int T, unsigned point) {
    if (!e) {
        ds3_linear(k, out, in, w, T);
        return;
    }
    /* The router is never FP8-quantised (a BF16 weight in V3; the official
     * linear() only quantises for element_size 1). */
    const bool router = point == DS3_EMUL_ROUTER;
    const bool fp8_weight = w->dtype == DS3_DT_F8_E4M3 && !router;
    const ds3_real *x = in;
    if (fp8_weight && (e->points & DS3_EMUL_ACTQUANT)) {
        tl_xq = grow(tl_xq, &tl_xq_n, (size_t)T * (size_t)w->cols, sizeof(ds3_real));
        for (int t = 0; t < T; t++)
            act_quant_row(tl_xq + (size_t)t * w->cols, in + (size_t)t * w->cols, w->cols, e->ue8m0);
        x = tl_xq;
    }
    /* Which weights a build holds differently from the checkpoint: bf16 builds
     * hold everything in bf16; the fp8 path keeps FP8 weights as FP8. */
    bool exact = w->dtype == DS3_DT_BF16 || (fp8_weight && e->mode == DS3_EMULATE_FP8);
    if (exact || !(e->points & DS3_EMUL_WEIGHTS)) ds3_linear(k, out, x, w, T);
    else linear_bf16_weight(k, out, x, w, T);
    ds3_emul_round(e, out, (size_t)T * (size_t)w->rows, point);
}

void ds3_emul_weights(const ds3_emul *e, ds3_real *w, size_t n, ds3_dtype stored) {
    if (!ds3_emul_has(e, DS3_EMUL_WEIGHTS) || stored == DS3_DT_BF16) return;
    for (size_t i = 0; i < n; i++) w[i] = bf16(w[i]);
}

/* ========================================================================== */
/* MoE: the router and the combination                                         */
/* ========================================================================== */

void ds3_emul_router_weights(const ds3_emul *e, ds3_real *w, const ds3_real *scores, const int32_t *idx, int K,
                             bool sigmoid, bool norm_topk_prob, double routed_scaling_factor) {
    if (!ds3_emul_has(e, DS3_EMUL_ROUTER)) return;
    if (sigmoid) {
        /* weights = original_scores.gather (bf16); /= sum (bf16); *= route_scale (bf16) */
        ds3_real sum = 0;
        for (int k = 0; k < K; k++) w[k] = scores[idx[k]];
        if (norm_topk_prob) {
            for (int k = 0; k < K; k++) sum += w[k];     /* fp32 accumulation, one rounding */
            sum = bf16(sum);
            for (int k = 0; k < K; k++) w[k] = bf16(w[k] / sum);
        }
        /* a Python float scalar: PyTorch multiplies in fp32 with the scalar unrounded */
        for (int k = 0; k < K; k++) w[k] = bf16(w[k] * (ds3_real)(float)routed_scaling_factor);
    } else {
        /* fp32 throughout, then .type_as(x) */
        for (int k = 0; k < K; k++) w[k] = bf16(w[k]);
    }
}

void ds3_emul_combine_order(const ds3_emul *e, int32_t *order, const int32_t *idx, int K) {
    for (int k = 0; k < K; k++) order[k] = k;
    if (!ds3_emul_has(e, DS3_EMUL_COMBINE)) return;
    /* ascending expert index: the order of both reference loops (insertion sort, K is small) */
    for (int a = 1; a < K; a++)
        for (int b = a; b > 0 && idx[order[b - 1]] > idx[order[b]]; b--) {
            int32_t tmp = order[b];
            order[b] = order[b - 1];
            order[b - 1] = tmp;
        }
}

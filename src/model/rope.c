/*
 * rope.c — rotary position embedding with YaRN (docs/MODEL.md §3, §4).
 *
 * DeepSeek applies RoPE to a small slice of each query and to one key slice
 * shared by all heads (the "decoupled" RoPE of MLA, paper §2.1.1): qk_rope_head_dim
 * (Dr) values, rotated in interleaved pairs (2j, 2j+1) exactly as the
 * checkpoint lays them out. transformers instead de-interleaves and uses
 * rotate_half; the rotated vectors differ in layout but their dot products,
 * hence the attention scores, are the same.
 *
 * YaRN stretches the low frequencies by `factor` (they would otherwise see
 * positions beyond the trained context) while leaving the high ones alone, with
 * a linear ramp between; the attention logits are then sharpened by m² (see
 * ds3_attn_softmax_scale). Everything here is computed in double, once.
 */
#include "model/model.h"

#include <math.h>

/* YaRN's attention sharpening m = 0.1·mscale·ln(s) + 1 (1 when s <= 1). */
double ds3_yarn_mscale(double scale, double mscale) {
    if (scale <= 1.0) return 1.0;
    return 0.1 * mscale * ds3_log(scale) + 1.0;
}

/* The dimension index whose wavelength completes `rot` turns in L0 positions. */
static double yarn_corr_dim(double rot, int Dr, double base, double L0) {
    const double pi = 3.14159265358979323846;
    return Dr * ds3_log(L0 / (2.0 * pi * rot)) / (2.0 * ds3_log(base));
}

/*
 * f_j = base^(-2j/Dr) and, with YaRN,
 *   f'_j = f_j/factor · ramp_j + f_j · (1 − ramp_j)
 * where ramp_j rises from 0 at dimension `low` to 1 at `high` (docs/MODEL.md §4). Pairs
 * below `low` rotate fast enough to be left untouched (extrapolation); pairs
 * above `high` are slowed by `factor` (interpolation).
 */
void ds3_yarn_freqs(double *freqs, const ds3_config *c) {
    int Dr = c->qk_rope_head_dim;
    double base = c->rope_theta;
    for (int j = 0; j < Dr / 2; j++) freqs[j] = ds3_pow(base, -2.0 * j / Dr);
    if (!c->rope_yarn) return;

    double L0 = c->yarn_original_max_position_embeddings;
    double low = floor(yarn_corr_dim(c->yarn_beta_fast, Dr, base, L0));
    double high = ceil(yarn_corr_dim(c->yarn_beta_slow, Dr, base, L0));
    if (low < 0) low = 0;
    if (high > Dr - 1) high = Dr - 1;
    if (low == high) high += 0.001;  /* avoid a zero-width ramp */
    for (int j = 0; j < Dr / 2; j++) {
        double ramp = (j - low) / (high - low);
        if (ramp < 0) ramp = 0;
        if (ramp > 1) ramp = 1;
        freqs[j] = freqs[j] / c->yarn_factor * ramp + freqs[j] * (1.0 - ramp);
    }
}

/*
 * transformers scales cos and sin by mscale(f, mscale)/mscale(f, mscale_all_dim)
 * when both are given — exactly 1 for V3, V2 and Kimi, whose two values agree —
 * and by mscale(f, 1) when mscale_all_dim is absent. The official V3 code has no
 * such factor; it matters only for configs outside the released ones.
 */
double ds3_rope_attn_factor(const ds3_config *c) {
    if (!c->rope_yarn) return 1.0;
    if (c->yarn_mscale != 0 && c->yarn_mscale_all_dim != 0)
        return ds3_yarn_mscale(c->yarn_factor, c->yarn_mscale) /
               ds3_yarn_mscale(c->yarn_factor, c->yarn_mscale_all_dim);
    return ds3_yarn_mscale(c->yarn_factor, 1.0);
}

/*
 * The softmax scale (Dn+Dr)^-0.5 · m², m = mscale(factor, mscale_all_dim).
 * Squared because YaRN's factor multiplies both q and k in the paper; here it
 * is folded into the single scale (docs/MODEL.md §3: V3 gives 0.13523378).
 */
double ds3_attn_softmax_scale(const ds3_config *c) {
    double s = 1.0 / sqrt((double)(c->qk_nope_head_dim + c->qk_rope_head_dim));
    if (c->rope_yarn && c->yarn_mscale_all_dim != 0) {
        double m = ds3_yarn_mscale(c->yarn_factor, c->yarn_mscale_all_dim);
        s *= m * m;
    }
    return s;
}

/*
 * Rotate x[Dr] in place: for each pair (x0, x1) = (x[2j], x[2j+1]),
 *   y0 = x0·cos θ − x1·sin θ,  y1 = x0·sin θ + x1·cos θ,  θ = pos·f'_j.
 * y0 is computed as x0·cos θ + (−x1)·sin θ, the same bits: with a subtraction
 * in one lane and an addition in the other, gcc 12's SLP vectorizer (f64,
 * -march with AVX-512, -O2 or -O3) forms one vfmaddsub instruction, fused in
 * spite of -ffp-contract=off (docs/PORTABILITY.md, the bit matrix).
 */
void ds3_rope(ds3_real *x, const double *freqs, double attn_factor, int Dr, int pos) {
    for (int j = 0; j < Dr / 2; j++) {
        double theta = (double)pos * freqs[j];
        ds3_real cs = (ds3_real)(ds3_cos(theta) * attn_factor);
        ds3_real sn = (ds3_real)(ds3_sin(theta) * attn_factor);
        ds3_real x0 = x[2 * j], x1 = x[2 * j + 1], nx1 = -x1;
        x[2 * j] = x0 * cs + nx1 * sn;
        x[2 * j + 1] = x0 * sn + x1 * cs;
    }
}

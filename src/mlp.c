/*
 * mlp.c — the SwiGLU feed-forward (SPEC §2), used by the dense layers, by each
 * routed expert and by the shared expert(s):
 *
 *   FFN(x) = down_proj · (silu(gate_proj · x) ⊙ up_proj · x)
 *
 * x [T][D] → out [T][D] through a hidden width W (intermediate_size for dense
 * layers, moe_intermediate_size per expert, n_shared · that for the shared one).
 */
#include "internal.h"

/* work: 2·T·W elements (gate and up activations). */
void ds3_mlp(ds3_real *out, const ds3_real *x, const ds3_ffn *f, int W, int T, ds3_real *work) {
    ds3_real *g = work;                   /* [T][W] gate_proj · x, then the product */
    ds3_real *u = work + (size_t)T * W;   /* [T][W] up_proj · x */
    ds3_linear(g, x, &f->gate_proj, T);
    ds3_linear(u, x, &f->up_proj, T);
    for (size_t i = 0; i < (size_t)T * W; i++) g[i] = ds3_silu(g[i]) * u[i];
    ds3_linear(out, g, &f->down_proj, T);
}

/* The same with the state's emulation (emulate.c): projections through
 * ds3_linear_em, and silu(g) and silu(g)·u each rounded to bf16, as two bf16
 * ops are. Without emulation, exactly ds3_mlp. */
void ds3_mlp_em(const ds3_state *s, ds3_real *out, const ds3_real *x, const ds3_ffn *f, int W, int T,
                ds3_real *work) {
    if (!s->emul) {
        ds3_mlp(out, x, f, W, T, work);
        return;
    }
    ds3_real *g = work;                   /* [T][W] */
    ds3_real *u = work + (size_t)T * W;   /* [T][W] */
    ds3_linear_em(s, g, x, &f->gate_proj, T);
    ds3_linear_em(s, u, x, &f->up_proj, T);
    const size_t n = (size_t)T * W;
    for (size_t i = 0; i < n; i++) g[i] = ds3_silu(g[i]);
    ds3_emul_round(s, g, n, DS3_EMUL_ACT);
    for (size_t i = 0; i < n; i++) g[i] *= u[i];
    ds3_emul_round(s, g, n, DS3_EMUL_ACT);
    ds3_linear_em(s, out, g, &f->down_proj, T);
}

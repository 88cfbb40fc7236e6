/*
 * mlp.c — the SwiGLU feed-forward (docs/MODEL.md §2), used by the dense
 * layers, by each routed expert and by the shared expert(s):
 *
 *   FFN(x) = down_proj · (silu(gate_proj · x) ⊙ up_proj · x)
 *
 * x [T][D] → out [T][D] through a hidden width W (intermediate_size for dense
 * layers, moe_intermediate_size per expert, n_shared · that for the shared one).
 * A bf16 build rounds silu(g) and silu(g)·u, each a bf16 op (the act point).
 */
#include "model/model.h"

/* The scratch of one call: the gate and up activations. */
typedef struct {
    ds3_real *g;   /* [T][W] gate_proj · x, then silu(g) ⊙ u */
    ds3_real *u;   /* [T][W] up_proj · x */
} mlp_bufs;

static void plan(mlp_bufs *b, ds3_arena *a, int T, int W) {
    b->g = ds3_take(a, (size_t)T * W);
    b->u = ds3_take(a, (size_t)T * W);
}

size_t ds3_mlp_need(int T, int W) {
    mlp_bufs b;
    ds3_arena a = {0};
    plan(&b, &a, T, W);
    return a.nr;
}

void ds3_mlp(const ds3_state *s, ds3_real *out, const ds3_real *x, const ds3_ffn *f, int W, int T, ds3_arena *a) {
    mlp_bufs b;
    plan(&b, a, T, W);
    const size_t n = (size_t)T * W;
    ds3_proj(s, b.g, x, &f->gate_proj, T);
    ds3_proj(s, b.u, x, &f->up_proj, T);
    ds3_silu_n(b.g, n);
    ds3_round(s, b.g, n, DS3_EMUL_ACT);
#pragma omp parallel for schedule(static) if (n >= DS3_PAR_MIN && !ds3_in_parallel())
    for (size_t i = 0; i < n; i++) b.g[i] *= b.u[i];
    ds3_round(s, b.g, n, DS3_EMUL_ACT);
    ds3_proj(s, out, b.g, &f->down_proj, T);
}

/*
 * mkmodel.c — deterministic synthetic checkpoints in Hugging Face layout
 * (docs/MODEL.md §1; the generator and its scaling table are documented in
 * docs/MKMODEL.md).
 *
 * Every test and benchmark of ds3 needs weights, and real DeepSeek weights are
 * too big to ship and cannot be made tiny. So we write checkpoints that have
 * exactly the names, shapes and dtypes of the released V3 checkpoint (fp8
 * projections with 128x128 block scales included) for any config, filled with
 * random values whose bytes are a pure function of (config, dtype, seed,
 * bias_shift): the same files on every machine, compiler and thread count.
 *
 * Portability of the bytes rests on four things:
 *   - each tensor has its own PRNG stream, seeded from its *name* (not from its
 *     position in the file), so adding a tensor never shifts another's values;
 *   - splitmix64 has O(1) random access (state_i = state_0 + i·gamma), so
 *     element i is the same whichever thread computes it;
 *   - every value is u·a + b evaluated in double with no fused multiply-add
 *     (FP_CONTRACT OFF, separate statements), then rounded once to float;
 *   - data is serialised little-endian byte by byte, not by memcpy of host words.
 *
 * Memory stays bounded by about one shard: tensors are planned first (names,
 * shapes, bytes, shard), then generated shard by shard and freed after each
 * shard is written.
 *
 * --mtp-agree (opts->mtp_agree > 0) builds a model on which MTP speculative
 * decoding has something to accept: random weights give a main model and an
 * MTP layer that disagree on almost every token. The main model is made close
 * to a fixed function of the current token, next = f(t) for a permutation f of
 * the vocabulary, and the MTP layer computes the same function of the token it
 * is given, so it predicts what the main model will say next (docs/MKMODEL.md,
 * "A model on which MTP helps"). Same architecture, same tensors, same sizes.
 */
#include "model/model.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

/* No a*u+b → fma(a,u,b): it would change bits between machines. GCC ignores
 * this pragma but does not contract in ISO (-std=c11) mode; clang obeys it. */
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

/* Threads only for tensors big enough to pay for a parallel region: most
 * tensors of a small model are a few KB, and waking a team per tensor costs
 * more than generating them (badly so when the cores are shared). */
#define MK_PAR_MIN (1 << 18)
#ifdef _OPENMP
#define MK_OMP_FOR(n) _Pragma("omp parallel for schedule(static) if ((n) >= MK_PAR_MIN)")
#else
#define MK_OMP_FOR(n) (void)(n);
#endif

/* Default largest shard, in bytes of tensor data; DS3_MKMODEL_SHARD_MB
 * (a decimal number of MiB, fractions allowed) overrides it, for tests. */
static const uint64_t MK_SHARD_BYTES_DEFAULT = 512ull << 20;

/* ========================================================================== */
/* The PRNG (docs/MKMODEL.md)                                                  */
/* ========================================================================== */

#define MK_GAMMA 0x9E3779B97F4A7C15ull

static uint64_t mk_fnv1a64(const char *s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ull;
    }
    return h;
}

/* splitmix64's output function applied to state_0 + (i+1)·gamma: the i-th
 * (0-based) output of the generator, without running through 0..i-1. */
static uint64_t mk_splitmix_at(uint64_t state0, uint64_t i) {
    uint64_t z = state0 + (i + 1) * MK_GAMMA;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* u in [-1, 1) from the top 24 bits: exact in double (k·2^-23 - 1). */
static double mk_uniform(uint64_t r) {
    double k = (double)(r >> 40);
    return k * 0x1p-24 * 2.0 - 1.0;
}

/* ========================================================================== */
/* The plan: every tensor's name, shape, init and storage                      */
/* ========================================================================== */

/* Storage class: which dtype the tensor gets under each ds3_weight_dtype. */
typedef enum {
    MK_PROJ,     /* F32 / BF16 / F8_E4M3 + _scale_inv: a quantised projection in V3 */
    MK_PLAIN,    /* F32 / BF16 / BF16: embeddings, norms, router, head, MTP glue */
    MK_FP32,     /* always F32: e_score_correction_bias */
} mk_class;

#define MK_NAME_MAX 112

/* --mtp-agree: the successor permutation f(t) = (mul·t + add) mod V, its
 * inverse's multiplier, and the share of token pairs the MTP head keeps. */
typedef struct {
    int64_t V, mul, add, inv;
    double agree;
} mk_agree;

/* Row maps of --mtp-agree: whose row of the source stream a row repeats. */
typedef enum {
    MK_ROWS_OWN = 0,   /* row r is row r of its own stream */
    MK_ROWS_SUCC,      /* row v is row f⁻¹(v): a head whose argmax follows f */
    MK_ROWS_SUCC_PAIRS /* row v is row f⁻¹(π(v)), π swapping some pairs (2m, 2m+1) */
} mk_rows;

typedef struct {
    char name[MK_NAME_MAX];
    char seed_name[MK_NAME_MAX];  /* whose PRNG stream (the main name for MTP repeats) */
    int ndim;                     /* 1 or 2; a 1-D tensor has rows == 1 */
    int64_t rows, cols;
    double a, b;                  /* value = b + a·u */
    double diag;                  /* added where row == col (--mtp-agree's eh_proj), else 0 */
    mk_rows rowmap;               /* --mtp-agree heads, else MK_ROWS_OWN */
    const mk_agree *agree;        /* for rowmap */
    mk_class cls;
    uint64_t bytes;               /* data (+ scale_inv) bytes in the chosen dtype */
    int shard;                    /* 0-based */
} mk_tensor;

typedef struct {
    const ds3_config *c;
    ds3_weight_dtype wdt;
    double bias_shift;
    mk_tensor *t;
    int n, cap;
    bool agree_on;                /* --mtp-agree */
    mk_agree agree;
} mk_plan;

static int64_t mk_ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

static ds3_dtype mk_dtype(const mk_plan *p, mk_class cls) {
    if (cls == MK_FP32 || p->wdt == DS3_WEIGHTS_F32) return DS3_DT_F32;
    if (cls == MK_PROJ && p->wdt == DS3_WEIGHTS_FP8) return DS3_DT_F8_E4M3;
    return DS3_DT_BF16;
}

/* snprintf into a name buffer. A truncated name is MK_NAME_MAX-1 long, which
 * mk_add rejects as too long, so truncation cannot pass silently. */
__attribute__((format(printf, 2, 3)))
static char *mk_fmt(char *buf, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, MK_NAME_MAX, fmt, ap);
    va_end(ap);
    return buf;
}

static ds3_status mk_add(mk_plan *p, const char *name, const char *seed_name, int ndim,
                         int64_t rows, int64_t cols, double a, double b, mk_class cls) {
    if (p->n == p->cap) {
        int cap = p->cap ? 2 * p->cap : 256;
        mk_tensor *t = realloc(p->t, (size_t)cap * sizeof *t);
        if (!t) return ds3_fail(DS3_ERR_NOMEM, "mkmodel: out of memory planning %d tensors", cap);
        p->t = t;
        p->cap = cap;
    }
    if (strlen(name) + sizeof "_scale_inv" > MK_NAME_MAX || strlen(seed_name) >= MK_NAME_MAX)
        return ds3_fail(DS3_ERR_ARG, "mkmodel: tensor name too long: %s", name);
    mk_tensor *t = &p->t[p->n++];
    memset(t, 0, sizeof *t);
    strcpy(t->name, name);
    strcpy(t->seed_name, seed_name);
    t->ndim = ndim;
    t->rows = rows;
    t->cols = cols;
    t->a = a;
    t->b = b;
    t->cls = cls;
    ds3_dtype dt = mk_dtype(p, cls);
    t->bytes = (uint64_t)rows * (uint64_t)cols * ds3_dtype_size(dt);
    if (dt == DS3_DT_F8_E4M3)
        t->bytes += (uint64_t)mk_ceil_div(rows, DS3_FP8_BLOCK) * (uint64_t)mk_ceil_div(cols, DS3_FP8_BLOCK) * 4u;
    return DS3_OK;
}

/*
 * The scaling table (docs/MKMODEL.md). Projections get std 1/sqrt(in), so
 * activations keep their size through the network and the logits of a random
 * model are neither flat nor saturated; norms sit near 1 so RMSNorm is not the
 * identity yet cannot flip signs.
 */
static ds3_status mk_proj(mk_plan *p, const char *name, int64_t out, int64_t in) {
    return mk_add(p, name, name, 2, out, in, sqrt(3.0 / (double)in), 0.0, MK_PROJ);
}

/* --mtp-agree: how much the projections that write into the residual stream
 * (o_proj, every down_proj, and eh_proj's random part) are scaled down, so
 * that h stays close to the token's embedding through every layer. */
#define MK_AGREE_RESIDUAL 0.05

/* A projection that writes into the residual stream: o_proj, down_proj. */
static ds3_status mk_proj_out(mk_plan *p, const char *name, int64_t out, int64_t in) {
    ds3_status st = mk_proj(p, name, out, in);
    if (st == DS3_OK && p->agree_on) p->t[p->n - 1].a *= MK_AGREE_RESIDUAL;
    return st;
}

/* --mtp-agree's heads: row v repeats (times the head scale) the embedding row
 * of the token whose successor v is, so logits = head · RMSNorm(e_t + small)
 * peak at v = f(t) (the own row's dot product is about D/3 times the head
 * scale, the others about sqrt(D)/3: a wide margin). */
static ds3_status mk_agree_head(mk_plan *p, const char *name, mk_rows map) {
    const int64_t D = p->c->hidden_size, V = p->c->vocab_size;
    ds3_status st = mk_add(p, name, "model.embed_tokens.weight", 2, V, D, sqrt(3.0 / (double)D), 0.0, MK_PLAIN);
    if (st == DS3_OK) {
        p->t[p->n - 1].rowmap = map;
        p->t[p->n - 1].agree = &p->agree;
    }
    return st;
}
static ds3_status mk_norm(mk_plan *p, const char *name, int64_t n) {
    return mk_add(p, name, name, 1, 1, n, 0.1, 1.0, MK_PLAIN);
}

/* A SwiGLU block (dense MLP, one expert, or the shared experts) of width W. */
static ds3_status mk_ffn(mk_plan *p, const char *prefix, int64_t W, int64_t D) {
    char n[MK_NAME_MAX];
    ds3_status st;
    if ((st = mk_proj(p, mk_fmt(n, "%s.gate_proj.weight", prefix), W, D))) return st;
    if ((st = mk_proj(p, mk_fmt(n, "%s.up_proj.weight", prefix), W, D))) return st;
    return mk_proj_out(p, mk_fmt(n, "%s.down_proj.weight", prefix), D, W);
}

/* model.layers.{i}.*: norms, MLA, then a dense or MoE FFN (docs/MODEL.md §1, ds3_layer). */
static ds3_status mk_layer(mk_plan *p, int i) {
    const ds3_config *c = p->c;
    const int64_t D = c->hidden_size, H = c->num_attention_heads, Rq = c->q_lora_rank;
    const int64_t C = c->kv_lora_rank, Dn = c->qk_nope_head_dim, Dr = c->qk_rope_head_dim;
    const int64_t Dv = c->v_head_dim, E = c->n_routed_experts, Im = c->moe_intermediate_size;
    char pre[MK_NAME_MAX], n[MK_NAME_MAX];
    ds3_status st;
    mk_fmt(pre, "model.layers.%d", i);

#define MK_NAME(...) mk_fmt(n, __VA_ARGS__)
#define MK_TRY(call) do { if ((st = (call)) != DS3_OK) return st; } while (0)
    MK_TRY(mk_norm(p, MK_NAME("%s.input_layernorm.weight", pre), D));
    MK_TRY(mk_norm(p, MK_NAME("%s.post_attention_layernorm.weight", pre), D));
    if (Rq > 0) {
        MK_TRY(mk_proj(p, MK_NAME("%s.self_attn.q_a_proj.weight", pre), Rq, D));
        MK_TRY(mk_norm(p, MK_NAME("%s.self_attn.q_a_layernorm.weight", pre), Rq));
        MK_TRY(mk_proj(p, MK_NAME("%s.self_attn.q_b_proj.weight", pre), H * (Dn + Dr), Rq));
    } else {
        MK_TRY(mk_proj(p, MK_NAME("%s.self_attn.q_proj.weight", pre), H * (Dn + Dr), D));
    }
    MK_TRY(mk_proj(p, MK_NAME("%s.self_attn.kv_a_proj_with_mqa.weight", pre), C + Dr, D));
    MK_TRY(mk_norm(p, MK_NAME("%s.self_attn.kv_a_layernorm.weight", pre), C));
    MK_TRY(mk_proj(p, MK_NAME("%s.self_attn.kv_b_proj.weight", pre), H * (Dn + Dv), C));
    MK_TRY(mk_proj_out(p, MK_NAME("%s.self_attn.o_proj.weight", pre), D, H * Dv));

    if (!ds3_layer_is_moe(c, i)) {
        MK_TRY(mk_ffn(p, MK_NAME("%s.mlp", pre), c->intermediate_size, D));
        return DS3_OK;
    }
    /* The router stays BF16 in V3 (it is not in the fp8 list); std 1/sqrt(D). */
    MK_NAME("%s.mlp.gate.weight", pre);
    MK_TRY(mk_add(p, n, n, 2, E, D, sqrt(3.0 / (double)D), 0.0, MK_PLAIN));
    if (c->topk_method == DS3_TOPK_NOAUX_TC) {
        MK_NAME("%s.mlp.gate.e_score_correction_bias", pre);
        MK_TRY(mk_add(p, n, n, 1, 1, E, 0.1, p->bias_shift, MK_FP32));
    }
    char ep[MK_NAME_MAX];
    for (int j = 0; j < E; j++) {
        mk_fmt(ep, "%s.mlp.experts.%d", pre, j);
        MK_TRY(mk_ffn(p, ep, Im, D));
    }
    if (c->n_shared_experts > 0)
        MK_TRY(mk_ffn(p, MK_NAME("%s.mlp.shared_experts", pre), (int64_t)c->n_shared_experts * Im, D));
    return DS3_OK;
}

/* MTP depth k at index L+k (docs/MODEL.md §6): a full decoder layer plus the glue. The
 * embedding and head repeats draw from the main tensors' streams, so they hold
 * the same values as model.embed_tokens / lm_head, as in the released V3. */
static ds3_status mk_mtp(mk_plan *p, int k) {
    const ds3_config *c = p->c;
    const int64_t D = c->hidden_size, V = c->vocab_size;
    const int i = c->num_hidden_layers + k;
    char pre[MK_NAME_MAX], n[MK_NAME_MAX];
    ds3_status st;
    mk_fmt(pre, "model.layers.%d", i);
    MK_TRY(mk_layer(p, i));
    MK_TRY(mk_norm(p, MK_NAME("%s.enorm.weight", pre), D));
    MK_TRY(mk_norm(p, MK_NAME("%s.hnorm.weight", pre), D));
    MK_NAME("%s.eh_proj.weight", pre);
    MK_TRY(mk_add(p, n, n, 2, D, 2 * D, sqrt(3.0 / (double)(2 * D)), 0.0, MK_PLAIN));
    if (p->agree_on) {
        /* [I | 0] plus a little noise: u ≈ enorm(Emb(t_{i+1})), so the MTP
         * layer sees mostly the token it must find the successor of. */
        p->t[p->n - 1].a *= MK_AGREE_RESIDUAL;
        p->t[p->n - 1].diag = 1.0;
    }
    MK_TRY(mk_norm(p, MK_NAME("%s.shared_head.norm.weight", pre), D));
    if (p->agree_on)
        MK_TRY(mk_agree_head(p, MK_NAME("%s.shared_head.head.weight", pre), MK_ROWS_SUCC_PAIRS));
    else if (c->tie_word_embeddings)
        MK_TRY(mk_add(p, MK_NAME("%s.shared_head.head.weight", pre), "model.embed_tokens.weight",
                      2, V, D, 1.0, 0.0, MK_PLAIN));
    else
        MK_TRY(mk_add(p, MK_NAME("%s.shared_head.head.weight", pre), "lm_head.weight",
                      2, V, D, sqrt(3.0 / (double)D), 0.0, MK_PLAIN));
    MK_TRY(mk_add(p, MK_NAME("%s.embed_tokens.weight", pre), "model.embed_tokens.weight",
                  2, V, D, 1.0, 0.0, MK_PLAIN));
    return DS3_OK;
}

/* The whole checkpoint, in the order the tensors are written. */
static ds3_status mk_plan_all(mk_plan *p) {
    const ds3_config *c = p->c;
    const int64_t D = c->hidden_size, V = c->vocab_size;
    ds3_status st;
    /* Embeddings are unit-scale: the first RMSNorm removes the scale anyway. */
    MK_TRY(mk_add(p, "model.embed_tokens.weight", "model.embed_tokens.weight", 2, V, D, 1.0, 0.0, MK_PLAIN));
    for (int i = 0; i < c->num_hidden_layers; i++) MK_TRY(mk_layer(p, i));
    MK_TRY(mk_norm(p, "model.norm.weight", D));
    /* Tied models store no lm_head (the Hugging Face convention). */
    if (p->agree_on)
        MK_TRY(mk_agree_head(p, "lm_head.weight", MK_ROWS_SUCC));
    else if (!c->tie_word_embeddings)
        MK_TRY(mk_add(p, "lm_head.weight", "lm_head.weight", 2, V, D, sqrt(3.0 / (double)D), 0.0, MK_PLAIN));
    for (int k = 0; k < c->num_nextn_predict_layers; k++) MK_TRY(mk_mtp(p, k));
    return DS3_OK;
#undef MK_NAME
#undef MK_TRY
}

/* Greedy sharding in plan order; a weight and its scale_inv stay together and a
 * tensor larger than the limit gets a shard of its own. Returns the count. */
static int mk_assign_shards(mk_plan *p, uint64_t limit) {
    int shard = 0;
    uint64_t used = 0;
    for (int i = 0; i < p->n; i++) {
        if (used > 0 && used + p->t[i].bytes > limit) {
            shard++;
            used = 0;
        }
        p->t[i].shard = shard;
        used += p->t[i].bytes;
    }
    return p->n ? shard + 1 : 0;
}

/* ========================================================================== */
/* Generating one tensor                                                       */
/* ========================================================================== */

static uint64_t mk_stream(const mk_tensor *t, uint64_t seed) {
    return mk_fnv1a64(t->seed_name) ^ (seed * MK_GAMMA);
}

/* --mtp-agree: f⁻¹(v) = inv·(v − add) mod V. */
static int64_t mk_succ_inv(const mk_agree *g, int64_t v) {
    int64_t d = ((v - g->add) % g->V + g->V) % g->V;
    return (int64_t)(((uint64_t)d * (uint64_t)g->inv) % (uint64_t)g->V);   /* < 2^62: V < 2^31 */
}

/* --mtp-agree: π swaps the pair (2m, 2m+1) unless the pair is among the
 * `agree` share kept (decided by a hash of m); the last id of an odd V stays. */
static int64_t mk_pair_swap(const mk_agree *g, int64_t v) {
    int64_t m = v / 2;
    if (2 * m + 1 >= g->V) return v;
    double u = (double)(mk_splitmix_at(0x6d74702d61677265ull, (uint64_t)m) >> 11) * 0x1p-53;
    return u < g->agree ? v : v ^ 1;
}

/* Element `idx` (row-major) of the tensor as a float. */
static float mk_value(const mk_tensor *t, uint64_t state0, uint64_t idx) {
    uint64_t src = idx;
    if (t->rowmap != MK_ROWS_OWN) {
        int64_t r = (int64_t)(idx / (uint64_t)t->cols), c = (int64_t)(idx % (uint64_t)t->cols);
        if (t->rowmap == MK_ROWS_SUCC_PAIRS) r = mk_pair_swap(t->agree, r);
        src = (uint64_t)(mk_succ_inv(t->agree, r) * t->cols + c);
    }
    double u = mk_uniform(mk_splitmix_at(state0, src));
    double au = t->a * u;     /* rounded once here ... */
    double v = t->b + au;     /* ... and once here: no FMA */
    if (t->diag != 0.0 && idx / (uint64_t)t->cols == idx % (uint64_t)t->cols) v = v + t->diag;
    return (float)v;
}

static void mk_put_le32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static uint32_t mk_f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* F32 or BF16: one pass, element by element, rows in parallel. */
static void mk_fill_plain(unsigned char *out, const mk_tensor *t, ds3_dtype dt, uint64_t state0) {
    const int64_t rows = t->rows, cols = t->cols, n = rows * cols;
    MK_OMP_FOR(n)
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t j = 0; j < cols; j++) {
            uint64_t idx = (uint64_t)(r * cols + j);
            float v = mk_value(t, state0, idx);
            if (dt == DS3_DT_F32) {
                mk_put_le32(out + 4 * idx, mk_f32_bits(v));
            } else {
                uint16_t h = ds3_f32_to_bf16(v);
                out[2 * idx] = (unsigned char)h;
                out[2 * idx + 1] = (unsigned char)(h >> 8);
            }
        }
    }
}

/*
 * F8_E4M3 with block scales, as the released V3 was quantised: per 128x128
 * block scale = amax/448 (so the largest element maps to e4m3's max),
 * q = e4m3(w/scale), and the stored "scale_inv" is that scale (it multiplies on
 * dequantisation, docs/MODEL.md §1). Works on 128-row stripes, so scratch is 128·cols.
 */
static void mk_fill_fp8(unsigned char *q, unsigned char *sinv, const mk_tensor *t, uint64_t state0,
                        float *stripe) {
    const int64_t rows = t->rows, cols = t->cols, B = DS3_FP8_BLOCK;
    const int64_t ncb = mk_ceil_div(cols, B);
    for (int64_t r0 = 0; r0 < rows; r0 += B) {
        const int64_t nr = rows - r0 < B ? rows - r0 : B, n = nr * cols;
        MK_OMP_FOR(n)
        for (int64_t r = 0; r < nr; r++)
            for (int64_t j = 0; j < cols; j++)
                stripe[r * cols + j] = mk_value(t, state0, (uint64_t)((r0 + r) * cols + j));
        MK_OMP_FOR(n)
        for (int64_t cb = 0; cb < ncb; cb++) {
            const int64_t j0 = cb * B, j1 = j0 + B < cols ? j0 + B : cols;
            float amax = 0.0f;
            for (int64_t r = 0; r < nr; r++)
                for (int64_t j = j0; j < j1; j++) {
                    float a = fabsf(stripe[r * cols + j]);
                    if (a > amax) amax = a;
                }
            /* Division through double is correctly rounded to float whatever
             * FLT_EVAL_METHOD is, so scale and w/scale are portable. */
            float scale = amax > 0.0f ? (float)((double)amax / 448.0) : 1.0f;
            for (int64_t r = 0; r < nr; r++)
                for (int64_t j = j0; j < j1; j++)
                    q[(r0 + r) * cols + j] =
                        ds3_f32_to_e4m3((float)((double)stripe[r * cols + j] / (double)scale));
            mk_put_le32(sinv + 4 * ((r0 / B) * ncb + cb), mk_f32_bits(scale));
        }
    }
}

/* ========================================================================== */
/* Files                                                                       */
/* ========================================================================== */

static char *mk_path(const char *dir, const char *file) {
    size_t n = strlen(dir) + strlen(file) + 2;
    char *p = ds3_malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, file);
    return p;
}

/* Write text to dir/file through a temporary and a rename (outfile.c), so a
 * reader never sees half a file. */
static ds3_status mk_write_text(const char *dir, const char *file, const char *text) {
    char *path = mk_path(dir, file);
    if (!path) return DS3_ERR_NOMEM;
    ds3_outfile o;
    ds3_status st = ds3_outfile_open(&o, path);
    if (st == DS3_OK) {
        size_t len = strlen(text);
        bool ok = fwrite(text, 1, len, o.fp) == len;
        st = ds3_outfile_close(&o, ok, errno);
    }
    free(path);
    return st;
}

static void mk_shard_name(char *buf, size_t n, int shard, int nshards) {
    if (nshards == 1) snprintf(buf, n, "model.safetensors");
    else snprintf(buf, n, "model-%05d-of-%05d.safetensors", shard + 1, nshards);
}

/* Is `s` "model-NNNNN-of-MMMMM.safetensors"? Returns MMMMM, or 0. */
static int mk_shard_total(const char *s) {
    const char *pat = "model-#####-of-#####.safetensors";
    if (strlen(s) != strlen(pat)) return 0;
    int total = 0;
    for (size_t i = 0; pat[i]; i++) {
        if (pat[i] == '#') {
            if (s[i] < '0' || s[i] > '9') return 0;
            if (i >= 14) total = total * 10 + (s[i] - '0');
        } else if (s[i] != pat[i]) {
            return 0;
        }
    }
    return total;
}

/* What may be in a directory mkmodel replaces: its own files (any shard
 * count), a tokenizer, and temporaries ds3's writers left there (a SIGKILL
 * while an older ds3 wrote in place). Anything else stops the run. */
static bool mk_replaceable(const char *name) {
    static const char *const own[] = {"config.json", "model.safetensors", "model.safetensors.index.json",
                                      "tokenizer.json", "tokenizer_config.json"};
    size_t len = strlen(name);
    char base[64];
    /* "NAME.XXXXXX.tmp" is NAME's temporary */
    if (len > 11 && len - 11 < sizeof base && strcmp(name + len - 4, ".tmp") == 0 && name[len - 11] == '.') {
        memcpy(base, name, len - 11);
        base[len - 11] = '\0';
        name = base;
    }
    for (size_t i = 0; i < sizeof own / sizeof *own; i++)
        if (strcmp(name, own[i]) == 0) return true;
    return mk_shard_total(name) > 0;
}

/* Copy file src to dir/name (an outfile: whole or not at all). */
static ds3_status mk_copy(const char *src, const char *dir, const char *name) {
    FILE *in = fopen(src, "rb");
    if (!in) return ds3_fail(DS3_ERR_IO, "%s: %s", src, strerror(errno));
    char *path = mk_path(dir, name);
    ds3_outfile o;
    ds3_status st = path ? ds3_outfile_open(&o, path) : DS3_ERR_NOMEM;
    if (st == DS3_OK) {
        char buf[1 << 16];
        size_t n;
        bool ok = true;
        int err = 0;
        while (ok && (n = fread(buf, 1, sizeof buf, in)) > 0)
            if (fwrite(buf, 1, n, o.fp) != n) { ok = false; err = errno; }
        if (ok && ferror(in)) {
            fclose(in);
            in = NULL;
            ds3_outfile_close(&o, false, 0);
            st = ds3_fail(DS3_ERR_IO, "%s: read error", src);
        } else {
            st = ds3_outfile_close(&o, ok, err);
        }
    }
    if (in) fclose(in);
    free(path);
    return st;
}

/* opts->tokenizer (a tokenizer.json or its directory) into dir: tokenizer.json,
 * and tokenizer_config.json when one is beside it. */
static ds3_status mk_copy_tokenizer(const char *tok, const char *dir) {
    struct stat sb;
    if (stat(tok, &sb) != 0) return ds3_fail(DS3_ERR_IO, "%s: %s", tok, strerror(errno));
    char *json, *cfg;
    if (S_ISDIR(sb.st_mode)) {
        json = mk_path(tok, "tokenizer.json");
        cfg = mk_path(tok, "tokenizer_config.json");
    } else {
        const char *slash = strrchr(tok, '/');
        json = ds3_malloc(strlen(tok) + 1);
        if (json) strcpy(json, tok);
        cfg = ds3_malloc((size_t)(slash ? slash - tok : 1) + sizeof "/tokenizer_config.json");
        if (cfg) sprintf(cfg, "%.*s/tokenizer_config.json", slash ? (int)(slash - tok) : 1, slash ? tok : ".");
    }
    ds3_status st = json && cfg ? mk_copy(json, dir, "tokenizer.json") : DS3_ERR_NOMEM;
    if (st == DS3_OK && stat(cfg, &sb) == 0 && S_ISREG(sb.st_mode)) st = mk_copy(cfg, dir, "tokenizer_config.json");
    free(json);
    free(cfg);
    return st;
}

/* model.safetensors.index.json, written by hand (not cJSON_Print) so that its
 * bytes do not depend on the cJSON version. Names need no escaping. */
static ds3_status mk_write_index(const char *dir, const mk_plan *p, int nshards) {
    uint64_t total = 0;
    size_t len = 128;
    for (int i = 0; i < p->n; i++) {
        total += p->t[i].bytes;
        len += 2 * (strlen(p->t[i].name) + 64);
    }
    char *s = ds3_malloc(len), *w = s, shard[64];
    if (!s) return DS3_ERR_NOMEM;
    w += sprintf(w, "{\n  \"metadata\": {\n    \"total_size\": %llu\n  },\n  \"weight_map\": {",
                 (unsigned long long)total);
    const char *sep = "\n";
    for (int i = 0; i < p->n; i++) {
        const mk_tensor *t = &p->t[i];
        mk_shard_name(shard, sizeof shard, t->shard, nshards);
        w += sprintf(w, "%s    \"%s\": \"%s\"", sep, t->name, shard);
        sep = ",\n";
        if (mk_dtype(p, t->cls) == DS3_DT_F8_E4M3)
            w += sprintf(w, "%s    \"%s_scale_inv\": \"%s\"", sep, t->name, shard);
    }
    sprintf(w, "\n  }\n}\n");
    ds3_status st = mk_write_text(dir, "model.safetensors.index.json", s);
    free(s);
    return st;
}

/* ========================================================================== */
/* ds3_mkmodel                                                                 */
/* ========================================================================== */

static const char *mk_dtype_label(ds3_weight_dtype d) {
    return d == DS3_WEIGHTS_F32 ? "f32" : d == DS3_WEIGHTS_BF16 ? "bf16" : "fp8";
}

static uint64_t mk_shard_limit(void) {
    const char *e = getenv("DS3_MKMODEL_SHARD_MB");
    if (e && *e) {
        char *end;
        double mb = strtod(e, &end);
        if (end != e && mb > 0) return (uint64_t)(mb * 1048576.0) ? (uint64_t)(mb * 1048576.0) : 1;
    }
    return MK_SHARD_BYTES_DEFAULT;
}

/* One shard: generate its tensors, hand them to the writer, write, free. */
/* Progress (ds3_set_progress): a tensor's bytes count half when generated and
 * half when its shard is written, so the total is each byte once. */
typedef struct {
    double done, total;
} mk_progress;

static double mk_tensor_bytes(const mk_plan *p, const mk_tensor *t) {
    ds3_dtype dt = mk_dtype(p, t->cls);
    double b = (double)t->rows * (double)t->cols * (double)ds3_dtype_size(dt);
    if (dt == DS3_DT_F8_E4M3) b += 4.0 * (double)mk_ceil_div(t->rows, DS3_FP8_BLOCK) * (double)mk_ceil_div(t->cols, DS3_FP8_BLOCK);
    return b;
}

static ds3_status mk_write_shard(const mk_plan *p, int first, int end, const char *path,
                                 const char *const *meta, uint64_t seed, mk_progress *pr) {
    ds3_status st = DS3_OK;
    ds3_st_writer *w = ds3_stw_new();
    int nb = 0;
    void **bufs = ds3_calloc((size_t)(2 * (end - first) + 1), sizeof *bufs);
    int64_t max_cols = 0;
    for (int i = first; i < end; i++)
        if (p->t[i].cols > max_cols) max_cols = p->t[i].cols;
    float *stripe = ds3_malloc((size_t)(DS3_FP8_BLOCK * max_cols) * sizeof *stripe);
    if (!w || !bufs || !stripe) {
        st = w ? DS3_ERR_NOMEM : ds3_fail(DS3_ERR_NOMEM, "mkmodel: cannot create a safetensors writer");
        goto done;
    }
    for (int i = first; i < end; i++) {
        const mk_tensor *t = &p->t[i];
        ds3_dtype dt = mk_dtype(p, t->cls);
        uint64_t state0 = mk_stream(t, seed);
        int64_t shape[2] = {t->rows, t->cols};
        const int64_t *shp = t->ndim == 1 ? &shape[1] : shape;
        unsigned char *data = ds3_malloc((size_t)(t->rows * t->cols) * ds3_dtype_size(dt));
        if (!data) {
            st = DS3_ERR_NOMEM;
            goto done;
        }
        bufs[nb++] = data;
        if (dt == DS3_DT_F8_E4M3) {
            int64_t sshape[2] = {mk_ceil_div(t->rows, DS3_FP8_BLOCK), mk_ceil_div(t->cols, DS3_FP8_BLOCK)};
            unsigned char *sinv = ds3_malloc((size_t)(sshape[0] * sshape[1]) * 4);
            if (!sinv) {
                st = DS3_ERR_NOMEM;
                goto done;
            }
            bufs[nb++] = sinv;
            mk_fill_fp8(data, sinv, t, state0, stripe);
            char sname[MK_NAME_MAX];
            mk_fmt(sname, "%s_scale_inv", t->name);
            if ((st = ds3_stw_add(w, t->name, dt, 2, shape, data))) goto done;
            if ((st = ds3_stw_add(w, sname, DS3_DT_F32, 2, sshape, sinv))) goto done;
        } else {
            mk_fill_plain(data, t, dt, state0);
            if ((st = ds3_stw_add(w, t->name, dt, t->ndim, shp, data))) goto done;
        }
        pr->done += 0.5 * mk_tensor_bytes(p, t);
        ds3_progress("mkmodel", pr->done, pr->total);
    }
    for (int k = 0; meta[k]; k += 2)
        if ((st = ds3_stw_meta(w, meta[k], meta[k + 1]))) goto done;
    st = ds3_stw_write(w, path);
    if (st == DS3_OK) {
        for (int i = first; i < end; i++) pr->done += 0.5 * mk_tensor_bytes(p, &p->t[i]);
        ds3_progress("mkmodel", pr->done, pr->total);
    }
done:
    ds3_stw_free(w);   /* the writer references the buffers: free it first */
    if (bufs)
        for (int k = 0; k < nb; k++) free(bufs[k]);
    free(bufs);
    free(stripe);
    return st;
}

/*
 * --mtp-agree's successor permutation f(t) = (mul·t + add) mod V: mul is the
 * first integer >= 0.618·V coprime with V (so f is a bijection that scatters
 * neighbouring ids), add = V/3; inv = mul⁻¹ mod V by Euclid.
 */
static mk_agree mk_agree_perm(int64_t V, double agree) {
    mk_agree g = {V, 0, V / 3, 1, agree};
    int64_t mul = (int64_t)(0.6180339887498949 * (double)V);
    if (mul < 1) mul = 1;
    for (;; mul++) {
        int64_t a = mul, b = V;
        while (b) { int64_t t = a % b; a = b; b = t; }
        if (a == 1) break;
    }
    g.mul = mul % V;
    /* extended Euclid: inv·mul ≡ 1 (mod V) */
    int64_t r0 = V, r1 = g.mul, s0 = 0, s1 = 1;
    while (r1) {
        int64_t q = r0 / r1, t;
        t = r0 - q * r1; r0 = r1; r1 = t;
        t = s0 - q * s1; s0 = s1; s1 = t;
    }
    g.inv = ((s0 % V) + V) % V;
    if (V == 1) g.inv = 0;
    return g;
}

/* The config and the plan of every tensor (plan->t malloc'd, also on failure). */
static ds3_status mk_prepare(const ds3_mkmodel_opts *opts, ds3_config *cfgp, mk_plan *planp) {
    if (opts->dtype != DS3_WEIGHTS_F32 && opts->dtype != DS3_WEIGHTS_BF16 && opts->dtype != DS3_WEIGHTS_FP8)
        return ds3_fail(DS3_ERR_ARG, "mkmodel: unknown weight dtype %d", (int)opts->dtype);
    ds3_config *c = cfgp;
    const char *builtin = ds3_builtin_config_json(opts->config);
    ds3_status st = builtin ? ds3_config_parse(builtin, opts->config, c) : ds3_config_load(opts->config, c);
    if (st != DS3_OK) return st;
    *planp = (mk_plan){c, opts->dtype, opts->bias_shift, NULL, 0, 0, false, {0}};
    if (opts->mtp_agree != 0.0) {
        if (!(opts->mtp_agree > 0.0 && opts->mtp_agree <= 1.0))
            return ds3_fail(DS3_ERR_ARG, "mkmodel: --mtp-agree %g is outside (0, 1]", opts->mtp_agree);
        if (c->num_nextn_predict_layers < 1 || c->tie_word_embeddings)
            return ds3_fail(DS3_ERR_ARG, "mkmodel: --mtp-agree needs a config with an MTP layer and an untied "
                            "lm_head (%s has %d MTP layers%s)", opts->config, c->num_nextn_predict_layers,
                            c->tie_word_embeddings ? ", tied embeddings" : "");
        planp->agree_on = true;
        planp->agree = mk_agree_perm(c->vocab_size, opts->mtp_agree);
    }
    return mk_plan_all(planp);
}

ds3_status ds3_mkmodel_estimate(const ds3_mkmodel_opts *opts, uint64_t *bytes, int *vocab_size) {
    if (!opts || !opts->config || !bytes || !vocab_size)
        return ds3_fail(DS3_ERR_ARG, "mkmodel_estimate: options, config name and outputs are required");
    ds3_config cfg;
    mk_plan plan;
    plan.t = NULL;
    ds3_status st = mk_prepare(opts, &cfg, &plan);
    if (st == DS3_OK) {
        /* the tensors' bytes, plus each tensor's header entry (name, dtype, shape,
         * offsets: under 256 bytes) */
        uint64_t b = 0;
        for (int i = 0; i < plan.n; i++) b += plan.t[i].bytes + 256;
        *bytes = b;
        *vocab_size = cfg.vocab_size;
    }
    free(plan.t);
    return st;
}

static ds3_status mkmodel_body(const ds3_mkmodel_opts *opts, const char *outdir) {
    if (!opts || !opts->config || !outdir)
        return ds3_fail(DS3_ERR_ARG, "mkmodel: config name and output directory are required");
    ds3_config cfg;
    mk_plan plan;
    plan.t = NULL;
    char *json = NULL;
    char **names = NULL;
    ds3_outdir od = {0};
    ds3_status st = mk_prepare(opts, &cfg, &plan);
    if (st != DS3_OK) goto done;
    cfg.fp8_block_quant = opts->dtype == DS3_WEIGHTS_FP8;
    json = ds3_config_to_json(&cfg);
    if (!json) {
        st = ds3_fail(DS3_ERR_NOMEM, "mkmodel: cannot serialise the config");
        goto done;
    }
    int nshards = mk_assign_shards(&plan, mk_shard_limit());

    /* The whole model is built in a fresh sibling of outdir and renamed into
     * place when every file is written (src/io/outfile.c, ds3_outdir): a run
     * that fails or is killed leaves outdir as it was (an earlier model, or
     * nothing), and two runs at once leave one of them whole. The names of
     * every file it may write go to the signal handler first. */
    names = ds3_calloc((size_t)nshards + 5, sizeof *names);   /* NULL-terminated */
    if (!names) {
        st = DS3_ERR_NOMEM;
        goto done;
    }
    int n_names = 0;
    for (int s = 0; s < nshards; s++) {
        char name[64];
        mk_shard_name(name, sizeof name, s, nshards);
        if (!(names[n_names++] = strdup(name))) {
            st = DS3_ERR_NOMEM;
            goto done;
        }
    }
    const char *fixed[] = {"model.safetensors.index.json", "config.json", "tokenizer.json", "tokenizer_config.json"};
    for (int k = 0; k < 4; k++)
        if (!(names[n_names++] = strdup(fixed[k]))) {
            st = DS3_ERR_NOMEM;
            goto done;
        }
    if ((st = ds3_outdir_open(&od, outdir, (const char *const *)names, n_names, mk_replaceable)) != DS3_OK)
        goto done;

    /* Metadata, the same in every shard: enough to regenerate the files. */
    char seed_s[32], shift_s[40];
    snprintf(seed_s, sizeof seed_s, "%llu", (unsigned long long)opts->seed);
    snprintf(shift_s, sizeof shift_s, "%.17g", opts->bias_shift);
    char agree_s[40];
    snprintf(agree_s, sizeof agree_s, "%.17g", opts->mtp_agree);
    const char *meta[] = {"format", "pt", "generator", "ds3 mkmodel", "config", opts->config,
                          "dtype", mk_dtype_label(opts->dtype), "seed", seed_s,
                          "bias_shift", shift_s,
                          plan.agree_on ? "mtp_agree" : NULL, agree_s, NULL};

    mk_progress pr = {0, 0};
    for (int i = 0; i < plan.n; i++) pr.total += mk_tensor_bytes(&plan, &plan.t[i]);
    for (int s = 0, i = 0; s < nshards; s++) {
        int end = i;
        while (end < plan.n && plan.t[end].shard == s) end++;
        char *path = mk_path(od.tmp, names[s]);
        if (!path) {
            st = DS3_ERR_NOMEM;
            break;
        }
        st = mk_write_shard(&plan, i, end, path, meta, opts->seed, &pr);
        free(path);
        if (st != DS3_OK) break;
        i = end;
    }
    if (st == DS3_OK && nshards > 1) st = mk_write_index(od.tmp, &plan, nshards);
    if (st == DS3_OK) st = mk_write_text(od.tmp, "config.json", json);
    if (st == DS3_OK && opts->tokenizer) st = mk_copy_tokenizer(opts->tokenizer, od.tmp);
    if (st != DS3_OK) {
        ds3_outdir_close(&od, false);
        goto done;
    }
    st = ds3_outdir_close(&od, true);
done:
    if (names)
        for (int k = 0; names[k]; k++) free(names[k]);
    free(names);
    free(json);
    free(plan.t);
    return st;
}

/* The public entry: the work above in IEEE defaults (src/kernels/fpenv.c). */
ds3_status ds3_mkmodel(const ds3_mkmodel_opts *opts, const char *outdir) {
    ds3_fpenv env;
    ds3_status st = ds3_fpenv_enter(&env);
    if (st != DS3_OK) return st;
    st = mkmodel_body(opts, outdir);
    ds3_fpenv_leave(&env);
    return st;
}

/*
 * model.h — the architecture (src/model/): config, weights, inference state
 * and the forward pass. Not API. docs/MODEL.md states every equation and
 * names the function that computes it; read the files in this order:
 *
 *   model.c    the forward pass: embedding, the layers, final norm, head
 *   layer.c    one decoder layer: h += Attn(norm(h)); h += FFN(norm(h))
 *   mla.c      multi-head latent attention, naive and absorbed      eq. (1)-(11)
 *   rope.c     rotary embedding with YaRN, the softmax scale
 *   moe.c      the router and the routed + shared experts           eq. (12)-(16)
 *   mlp.c      the SwiGLU feed-forward
 *   mtp.c      multi-token prediction                               eq. (21)-(23)
 *   ops.c      RMSNorm, SiLU, softmax; and the operations as a state runs them
 *              (its kernels, its GPU rounding points)
 * and the plumbing: config.c (config.json), loader.c (checkpoint → structs),
 * state.c (caches, scratch, windows, the state's settings).
 *
 * Notation used in shape comments (docs/MODEL.md §1):
 *   D  hidden_size          V  vocab_size        H  num_attention_heads
 *   Rq q_lora_rank          C  kv_lora_rank      Dn qk_nope_head_dim
 *   Dr qk_rope_head_dim     Dv v_head_dim        E  n_routed_experts
 *   K  num_experts_per_tok  I  intermediate_size Im moe_intermediate_size
 *   T  tokens in this forward call               S  positions the state holds
 */
#ifndef DS3_MODEL_H
#define DS3_MODEL_H

#include "check/check.h"

/* ========================================================================== */
/* config.c — config.json (docs/MODEL.md §1)                                   */
/* ========================================================================== */

typedef enum { DS3_SCORE_SIGMOID = 0, DS3_SCORE_SOFTMAX } ds3_scoring;
typedef enum {
    DS3_TOPK_NOAUX_TC = 0,           /* V3: sigmoid + bias for selection, group score = top-2 sum */
    DS3_TOPK_GREEDY,                 /* V2-Lite: plain top-K */
    DS3_TOPK_GROUP_LIMITED_GREEDY,   /* V2: group score = max */
} ds3_topk_method;

typedef struct {
    char model_type[32];             /* "deepseek_v3", "deepseek_v2", "kimi_k2" … */
    int vocab_size;                  /* V */
    int hidden_size;                 /* D */
    int intermediate_size;           /* I: dense FFN width */
    int moe_intermediate_size;       /* Im: one expert's width */
    int num_hidden_layers;           /* L (MTP layers come after these) */
    int first_k_dense_replace;
    int moe_layer_freq;
    int num_attention_heads;         /* H */
    int q_lora_rank;                 /* Rq; 0 when null: plain q_proj */
    int kv_lora_rank;                /* C */
    int qk_nope_head_dim;            /* Dn */
    int qk_rope_head_dim;            /* Dr */
    int v_head_dim;                  /* Dv */
    int n_routed_experts;            /* E; 0: no MoE layers */
    int num_experts_per_tok;         /* K */
    int n_shared_experts;
    int n_group, topk_group;
    ds3_scoring scoring_func;
    ds3_topk_method topk_method;
    bool norm_topk_prob;
    double routed_scaling_factor;
    double rope_theta;
    bool rope_yarn;                  /* rope_scaling.type (or rope_type) == "yarn" */
    double yarn_factor;
    int yarn_original_max_position_embeddings;
    double yarn_beta_fast, yarn_beta_slow, yarn_mscale, yarn_mscale_all_dim;
    int max_position_embeddings;
    double rms_norm_eps;
    int num_nextn_predict_layers;
    bool tie_word_embeddings;
    bool fp8_block_quant;            /* quantization_config: fp8, e4m3, 128×128 blocks (written by
                                        mkmodel --dtype fp8; the tensors' own dtypes are what is read) */
} ds3_config;

/* Parse config.json text; `source` names it in messages. Validates ranges and
 * consistency (K <= E, groups divide E, topk_group <= n_group, …). */
ds3_status ds3_config_parse(const char *json, const char *source, ds3_config *out);
ds3_status ds3_config_load(const char *path, ds3_config *out);
/* Built-in configs by name: the JSON text (as a config.json would hold it), or NULL. */
const char *ds3_builtin_config_json(const char *name);
/* Serialise to config.json text (malloc'd): what mkmodel writes. */
char *ds3_config_to_json(const ds3_config *c);

/* Routed experts the kernels handle (the largest released model has 384). */
#define DS3_MAX_EXPERTS 4096

/* Is main layer i an MoE layer (docs/MODEL.md §1)? */
bool ds3_layer_is_moe(const ds3_config *c, int i);

/* ========================================================================== */
/* Weights: views into the mapped checkpoint, named as in it (loader.c)        */
/* ========================================================================== */

/* A SwiGLU feed-forward: down · (silu(gate·x) ⊙ up·x). */
typedef struct {
    ds3_tensor gate_proj;            /* [W, D] */
    ds3_tensor up_proj;              /* [W, D] */
    ds3_tensor down_proj;            /* [D, W] */
} ds3_ffn;

/* One decoder layer, named as in the checkpoint (model.layers.N.*). */
typedef struct {
    ds3_real *input_layernorm;           /* [D] */
    ds3_real *post_attention_layernorm;  /* [D] */

    /* self_attn (MLA, docs/MODEL.md §3) */
    ds3_tensor q_a_proj;                 /* [Rq, D]        when Rq > 0 */
    ds3_real *q_a_layernorm;             /* [Rq]           when Rq > 0 */
    ds3_tensor q_b_proj;                 /* [H*(Dn+Dr), Rq] when Rq > 0 */
    ds3_tensor q_proj;                   /* [H*(Dn+Dr), D]  when Rq == 0 */
    ds3_tensor kv_a_proj_with_mqa;       /* [C+Dr, D] */
    ds3_real *kv_a_layernorm;            /* [C] */
    ds3_tensor kv_b_proj;                /* [H*(Dn+Dv), C] */
    ds3_tensor o_proj;                   /* [D, H*Dv] */

    /* mlp: dense, or MoE (docs/MODEL.md §5) */
    bool is_moe;
    ds3_ffn mlp;                         /* dense: W = I */
    ds3_tensor gate;                     /* [E, D] router */
    ds3_real *e_score_correction_bias;   /* [E], noaux_tc only, else NULL */
    ds3_ffn *experts;                    /* [E], W = Im */
    ds3_ffn shared_experts;              /* W = n_shared * Im; absent if n_shared == 0 */
} ds3_layer;

/* A multi-token-prediction depth (docs/MODEL.md §6): an ordinary layer plus the
 * projections that feed it and the head that reads it. */
typedef struct {
    ds3_layer block;                     /* model.layers.{L+k}.* decoder layer */
    ds3_real *enorm;                     /* [D] */
    ds3_real *hnorm;                     /* [D] */
    ds3_tensor eh_proj;                  /* [D, 2D] */
    ds3_tensor embed_tokens;             /* [V, D] own copy or the main one */
    ds3_real *shared_head_norm;          /* [D] */
    ds3_tensor shared_head_head;         /* [V, D] own head or lm_head */
} ds3_mtp_layer;

struct ds3_model {
    ds3_config cfg;
    char *dir;
    int n_files;
    ds3_st_file **files;                 /* the mapped shards */
    ds3_tensor embed_tokens;             /* [V, D] */
    ds3_layer *layers;                   /* [L] */
    ds3_real *norm;                      /* [D] model.norm */
    ds3_tensor lm_head;                  /* [V, D] */
    int n_mtp;
    ds3_mtp_layer *mtp;                  /* [n_mtp] */
    double *rope_freqs;                  /* [Dr/2] f'_j, YaRN-corrected (rope.c) */
    double rope_attn_factor;             /* cos/sin multiplier (1 when mscale == mscale_all_dim) */
    double attn_scale;                   /* (Dn+Dr)^-0.5 · m² */
    void *owned;                         /* allocations freed with the model */
    /* expert parallelism (dist.c): this process is rank ep_rank of ep_size and
     * holds routed experts ds3_dist_range(E, ep_rank, ep_size); 0 of 1 alone */
    int ep_rank, ep_size;
};

/* The shards' names and identities at load as a JSON array (malloc'd; NULL
 * when out of memory), for the dump's ds3_shards metadata (loader.c). */
char *ds3_model_shards_json(const ds3_model *m);

/* ========================================================================== */
/* dist.c — expert parallelism across MPI processes (docs/ARCHITECTURE.md §10) */
/* ========================================================================== */

/* Routed experts [lo, hi) of rank r of n: contiguous, whole groups when n divides n_group. */
void ds3_dist_range(int E, int r, int n, int *lo, int *hi);
/* rows [T·K][D], grouped by expert (expert e's rows at off[e]..off[e+1]), of
 * which this rank filled its experts' block: copy every rank's block to every
 * rank (MPI_Allgatherv: copies, no sums). n: the model's ep_size; a no-op at 1. */
void ds3_dist_gather_rows(ds3_real *rows, const int32_t *off, int E, int D, int n);

/* ========================================================================== */
/* Scratch: one arena, each sublayer declaring its layout once                 */
/* ========================================================================== */

/*
 * A cursor over the state's scratch. Each sublayer lists its buffers in one
 * `plan` function that takes them from an arena in order; run on a counting
 * arena (no memory) the same function says how much it needs, which is how
 * ds3_state_new sizes the scratch. So there is no size formula that must
 * agree with the carving code elsewhere: the plan is both.
 */
typedef struct {
    ds3_real *r;                         /* reals: NULL while counting */
    int32_t *i;                          /* integers: NULL while counting */
    size_t nr, ni;                       /* taken so far */
    size_t cap_r, cap_i;                 /* capacity (unbounded while counting) */
} ds3_arena;

/* n reals / n integers from the arena (NULL while counting). */
static inline ds3_real *ds3_take(ds3_arena *a, size_t n) {
    ds3_real *p = NULL;
    if (a->r) {
        DS3_ASSERT(a->nr + n <= a->cap_r);
        p = a->r + a->nr;
    }
    a->nr += n;
    return p;
}
static inline int32_t *ds3_take_i32(ds3_arena *a, size_t n) {
    int32_t *p = NULL;
    if (a->i) {
        DS3_ASSERT(a->ni + n <= a->cap_i);
        p = a->i + a->ni;
    }
    a->ni += n;
    return p;
}
/* An arena over a buffer of n reals (the experts' slices of one block). */
static inline ds3_arena ds3_arena_over(ds3_real *r, size_t n) {
    ds3_arena a = {0};
    a.r = r;
    a.cap_r = n;
    return a;
}

/* ========================================================================== */
/* Inference state (state.c)                                                   */
/* ========================================================================== */

/* Per-layer MLA cache. Absorbed: c [S][C] and k_pe [S][Dr].
 * Naive: k [S][H][Dn+Dr] and v [S][H][Dv]. */
typedef struct {
    ds3_real *c, *k_pe;
    ds3_real *k, *v;
} ds3_kv_cache;

/* A window of hidden-state rows [D] for consecutive positions pos..pos+n-1,
 * in rows[0..n); capacity max_T + 1 rows (a chunk and the row before it). */
typedef struct {
    ds3_real *rows;
    int pos, n;
} ds3_hwin;

/* A replay's hold on the router (replay.c; NULL in a forward pass): rows by
 * position. ds3_moe copies its own choice and scores out, then runs the
 * experts of force_idx instead of its own, with weights (13) from its own
 * scores at them. Every pointer may be NULL. */
typedef struct {
    const int32_t *force_idx;            /* [S][K] the experts to run, or NULL: the own choice */
    int32_t *own_idx;                    /* [S][K] out: the router's own choice */
    ds3_real *scores;                    /* [S][E] out: s */
    ds3_real *weight;                    /* [S][K] out: the weights of the experts that ran */
} ds3_route_hook;

struct ds3_state {
    const ds3_model *m;
    int max_seq;                         /* S */
    ds3_attn_mode attn;
    ds3_kernels kernels;                 /* which kernels this state's products run */
    bool decode_rows;                    /* every row as a fast decode step computes it (ops.c's
                                          * ds3_decode_step; set by spec.c's verification of a fast state) */
    ds3_emul *emul;                      /* GPU rounding points (check/emulate.c); NULL: off */
    ds3_kv_cache *cache;                 /* [L + n_mtp] */
    int max_T;                           /* tokens per forward call the scratch holds */
    /* scratch, sized once (no allocation in the forward pass) */
    ds3_real *x;                         /* [max_T][D] residual stream */
    ds3_real *xn;                        /* [max_T][D] normalised input */
    ds3_real *y;                         /* [max_T][D] sublayer output */
    ds3_real *work;                      /* [work_n] the sublayers' scratch (ds3_scratch) */
    int32_t *iwork;                      /* [iwork_n] integer scratch: expert routing */
    size_t work_n, iwork_n;
    ds3_real *dump_logits;               /* [max_T][V] while dumping without a caller buffer, and a replay's */
    ds3_dumper *dump;                    /* NULL: not dumping */

    /* MTP (mtp.c, docs/MODEL.md §6). The MTP rows of position i need the main
     * model's final-normed hidden state h_i, which the forward pass keeps here
     * for the positions of its last chunk and the one before it. */
    ds3_hwin hfinal;                     /* RMSNorm_final(h) of the last chunk (+ the row before) */
    ds3_hwin *hmtp;                      /* [n_mtp] depth k's outputs after its shared_head.norm */
    bool mtp_on;                         /* ds3_state_set_mtp: forward calls run the MTP depths too */
    int mtp_done;                        /* depth-0 rows 0..mtp_done-1 hold their true inputs */
    const ds3_route_hook *route;         /* replay only (replay.c); NULL otherwise */
};

/* An arena over the state's whole scratch, from its start: each sublayer call
 * takes its buffers afresh (sublayers run one after another). */
static inline ds3_arena ds3_scratch(const ds3_state *s) {
    ds3_arena a = {0};
    a.r = s->work;
    a.cap_r = s->work_n;
    a.i = s->iwork;
    a.cap_i = s->iwork_n;
    return a;
}

/* ========================================================================== */
/* ops.c — the elementwise math, and the operations as the state runs them     */
/* ========================================================================== */

/* RMSNorm(x) = w ⊙ x / sqrt(mean(x²) + eps); out may alias x. */
void ds3_rmsnorm(ds3_real *out, const ds3_real *x, const ds3_real *w, int n, double eps);
ds3_real ds3_silu(ds3_real a);
/* ds3_silu of n values in place (the same bits, the exps several at a time). */
void ds3_silu_n(ds3_real *x, size_t n);
void ds3_softmax(ds3_real *x, int n);                  /* in place, max-subtracted */

/* The forward pass calls these: each is the plain operation with the state's
 * kernels, and rounds where a GPU build rounds when the state emulates one
 * (a no-op otherwise; check/emulate.c). */
/* Whether these T rows are computed as a fast decode step computes its one
 * token: a fast state's one-token call, or every row of a verification of
 * drafts (decode_rows, spec.c); never under emulation. Their projections take
 * ds3_linear_decode and their attention attend.c's kernels. */
bool ds3_decode_step(const ds3_state *s, int T);
/* out[T][w.rows] = in[T][w.cols] · wᵀ: a projection (rounding point: linear). */
void ds3_proj(const ds3_state *s, ds3_real *out, const ds3_real *in, const ds3_tensor *w, int T);
/* The router's logits: a projection whose rounding point is the router's. */
void ds3_proj_router(const ds3_state *s, ds3_real *out, const ds3_real *in, const ds3_tensor *w, int T);
/* RMSNorm with the model's eps (rounding point: norm). */
void ds3_norm(const ds3_state *s, ds3_real *out, const ds3_real *x, const ds3_real *w, int n);
/* RoPE of x[Dr] at position pos (rope.c; the rope-bf16 flavour when emulated). */
void ds3_rotate(const ds3_state *s, ds3_real *x, int pos);
/* a·b with the state's kernels. */
ds3_real ds3_sdot(const ds3_state *s, const ds3_real *a, const ds3_real *b, int n);
/* out[g] = ds3_sdot(s, a + g·lda, b, n) for g < m, the same bits (b read once for several rows). */
void ds3_sdot_rows(const ds3_state *s, ds3_real *out, const ds3_real *a, size_t lda, int m, const ds3_real *b, int n);
/* Record a [T][width] activation of positions start.. under a printf-style
 * name, if the state is dumping (docs/DUMP_FORMAT.md); nothing otherwise. */
void ds3_dump_act(const ds3_state *s, ds3_dtype dt, int64_t width, int start, int T, const void *data,
                  const char *fmt, ...) __attribute__((format(printf, 7, 8)));
/* A GPU rounding point: x[n] to bf16 if the state emulates `point` (DS3_EMUL_*). */
void ds3_round(const ds3_state *s, ds3_real *x, size_t n, unsigned point);
/* a + b, rounded as the sum of two bf16 results at `point`. */
ds3_real ds3_round_add(const ds3_state *s, ds3_real a, ds3_real b, unsigned point);
/* Weights dequantised outside a projection, as the build holds them. */
void ds3_round_weights(const ds3_state *s, ds3_real *w, size_t n, ds3_dtype stored);

/* ========================================================================== */
/* rope.c — YaRN frequencies (docs/MODEL.md §4), computed in double            */
/* ========================================================================== */

void ds3_yarn_freqs(double *freqs, const ds3_config *c);          /* [Dr/2] */
double ds3_yarn_mscale(double scale, double mscale);              /* 0.1·m·ln(s)+1, 1 if s<=1 */
double ds3_attn_softmax_scale(const ds3_config *c);               /* (Dn+Dr)^-0.5 · m² */
/* HF's cos/sin multiplier: mscale(f, mscale)/mscale(f, mscale_all_dim) when both
 * are set (1 for every released config), else mscale(f, 1); 1 without YaRN. */
double ds3_rope_attn_factor(const ds3_config *c);
/* Interleaved-pair rotation of x[Dr] in place at position pos (docs/MODEL.md
 * §3): angles pos·f'_j and their cos/sin are computed in double. */
void ds3_rope(ds3_real *x, const double *freqs, double attn_factor, int Dr, int pos);

/* ========================================================================== */
/* The sublayers and the layer                                                 */
/* ========================================================================== */

/* mla.c: out[T][D] = MLA(x[T][D]) for positions start..start+T-1, updating kv. */
void ds3_mla(ds3_state *s, const ds3_layer *l, ds3_kv_cache *kv, ds3_real *out, const ds3_real *x, int T,
             int start);
/* What ds3_mla takes from the scratch for T tokens. */
void ds3_mla_reserve(ds3_arena *a, const ds3_config *c, int T, int max_seq, ds3_attn_mode attn);

/* mlp.c: out[T][D] = SwiGLU FFN of hidden width W; its scratch from `a`. */
void ds3_mlp(const ds3_state *s, ds3_real *out, const ds3_real *x, const ds3_ffn *f, int W, int T, ds3_arena *a);
/* Reals ds3_mlp takes for T tokens of width W (linear in T). */
size_t ds3_mlp_need(int T, int W);

/* moe.c: routing for one token (docs/MODEL.md §5). scratch holds E + n_group
 * values. Writes s[E] (the scores: sigmoid or softmax of the gate logits),
 * idx[K] (descending by selection score, ties → lowest index) and weight[K]
 * (s at idx, normalised if norm_topk_prob, times routed_scaling_factor). */
void ds3_moe_route(int32_t *idx, ds3_real *weight, ds3_real *s, const ds3_real *logits,
                   const ds3_real *bias, const ds3_config *c, ds3_real *scratch);
/* Its two halves: s[E] from the logits (15), then idx and weight from s
 * (16), (14), (13); emulation rounds s in between. */
void ds3_moe_scores(ds3_real *s, const ds3_real *logits, const ds3_config *c);
void ds3_moe_select(int32_t *idx, ds3_real *weight, const ds3_real *s, const ds3_real *bias, const ds3_config *c,
                    ds3_real *scratch);
/* (13) alone: weight[K] from s at the experts idx[K]. */
void ds3_moe_weights(ds3_real *weight, const ds3_real *s, const int32_t *idx, const ds3_config *c);
/* (12)'s weighted sum, in a fixed order: out[t] = Σ_k w[t][k] · ye[slot[t][k]]
 * (+ shared[t] when not NULL), k = 0..K-1, whichever thread ran which expert;
 * a bf16 build adds in ascending expert index, each product and sum rounded
 * (the combine point). Scales the rows of ye in place; order [T][K] scratch.
 * Tokens in parallel when there are enough (DS3_PAR_MIN): the same bits. */
void ds3_moe_combine(const ds3_state *s, ds3_real *out, ds3_real *ye, const int32_t *slot, const int32_t *idx,
                     const ds3_real *w, const ds3_real *shared, int32_t *order, int T);
/* out[T][D] = routed experts + shared experts (12); dumps "<prefix>.moe.*". */
void ds3_moe(ds3_state *s, const ds3_layer *l, ds3_real *out, const ds3_real *x, int T, int start,
             const char *prefix);
/* What ds3_moe takes from the scratch for T tokens. */
void ds3_moe_reserve(ds3_arena *a, const ds3_config *c, int T);

/* layer.c: one decoder layer on the residual stream s->x [T][D], in place, at
 * positions start..; kv is its cache; `prefix` names its dumps ("layers.3",
 * "mtp.0"). Used by the main layers and by the MTP block. */
void ds3_layer_forward(ds3_state *s, const ds3_layer *l, ds3_kv_cache *kv, int T, int start, const char *prefix);
/* Its two halves, on s->x in place; each leaves its output before the residual
 * add in s->y. ds3_layer_forward is attn then ffn. */
void ds3_layer_attn(ds3_state *s, const ds3_layer *l, ds3_kv_cache *kv, int T, int start, const char *prefix);
void ds3_layer_ffn(ds3_state *s, const ds3_layer *l, int T, int start, const char *prefix);

/* ========================================================================== */
/* mtp.c — multi-token prediction (docs/MODEL.md §6)                           */
/* ========================================================================== */

/* Depth k on n rows at positions r0.. :
 *   u = eh_proj · [enorm(Emb(tok[r])) | hnorm(in[r])],  x = Block(u),
 *   out[r] = shared_head.norm(x),  logits = shared_head.head · out (last
 *   n_logits rows, into logits [n_logits][V]; none if logits is NULL).
 * in [n][D] and out [n][D] must not be state scratch. dump: record mtp.k.*
 * rows r0.. when the state is dumping (the chained draft steps do not). */
void ds3_mtp_block(ds3_state *s, int k, const ds3_real *in, const int32_t *tok, int n, int r0, ds3_real *out,
                   ds3_real *logits, int n_logits, bool dump);
/* (21) alone: the block's input u [n][D] into s->x, from in [n][D] (not
 * state scratch) and the tokens tok[n]. */
void ds3_mtp_in(ds3_state *s, int k, const ds3_real *in, const int32_t *tok, int n);
/* What ds3_mtp_block takes from the scratch (before the block's own). */
void ds3_mtp_reserve(ds3_arena *a, const ds3_config *c, int T);
/* Depth k on rows r0..r0+n-1 whose inputs are in the window (hfinal for
 * depth 0, hmtp[k-1] beyond); tok[r] is the token at position r+1+k. The
 * outputs go to hmtp[k]. */
void ds3_mtp_rows(ds3_state *s, int k, const int32_t *tok, int n, int r0, ds3_real *logits, int n_logits);
/* After a main chunk [start, start+T): every depth on the rows whose tokens
 * this chunk supplies (row i at depth k needs token i+1+k). */
void ds3_mtp_chunk(ds3_state *s, const int32_t *tok, int T, int start);
/* Start writing a window at position `first`: keeps the row of first-1 when
 * the window holds it (as row 0) and returns where the row of `first` goes;
 * the caller then adds the rows it writes to w->n. */
ds3_real *ds3_hwin_begin(ds3_hwin *w, int first, int D);

/* ========================================================================== */
/* replay.c — a build's dump replayed layer by layer (ds3 replay)              */
/* ========================================================================== */

/* Layers a replay could not check: "layers.3: NOT CHECKED (no layers.2.out in
 * BUILD)"; and the tensors it compared as it went (the logits). */
typedef struct {
    int n_not_checked;
    char **not_checked;
    int n_done;
    ds3_cmp_result *done;  /* [n_done] ds3_cmp_entry's results, for ds3_cmp_opts.done */
} ds3_replay_report;
void ds3_replay_report_free(ds3_replay_report *r);

/* Every tensor of docs/DUMP_FORMAT.md recomputed from BUILD's own inputs
 * (replay.c's opening comment says from which), captured into d (a dumper of
 * T rows) in forward order. tok[T] are the tokens; routing_build: MoE layers
 * run the build's topk_idx. Inputs BUILD lacks are listed in *rep (free with
 * ds3_replay_report_free); a shape or dtype that does not fit is an error
 * naming the tensor.
 * cmp, if not NULL, is the comparison the caller will make (ds3_replay_compare):
 * a logits tensor computed in one chunk is compared against BUILD's then,
 * while it is at hand (rep->done), and kept in d as well only if
 * keep_compared (to write it, -o); without cmp every tensor is kept. */
ds3_status ds3_replay_dump(ds3_state *s, const ds3_st_file *b, const int32_t *tok, int T, bool routing_build,
                           const ds3_cmp_opts *cmp, bool keep_compared, ds3_dumper *d, ds3_replay_report *rep);
/* ds3_cmp_files of what ds3_replay_dump captured in d (REF) against BUILD
 * (TEST), with the results it made already (gaps->done). */
ds3_status ds3_replay_compare(const ds3_dumper *d, const ds3_st_file *b, const ds3_cmp_opts *o,
                              const ds3_replay_report *gaps, ds3_cmp_report *out);

/* ========================================================================== */
/* replay_text.c — the replay's report as text (ds3 replay, ds3_replay_mem)    */
/* ========================================================================== */

/* Does BUILD hold any routing choice (a *.topk_idx tensor)? */
bool ds3_replay_has_topk_idx(const ds3_st_file *b);
/* ds3 replay's table: the first line, compare's table, the layers not checked,
 * the counts, the first tensor outside, PASS or FAIL. */
void ds3_replay_print(FILE *f, const ds3_cmp_report *rep, const ds3_cmp_opts *o, const ds3_replay_report *gaps,
                      const char *build, const char *model, int T, bool routing_build);
/* ds3 replay --json's object (cJSON_Delete it), NULL if out of memory. */
struct cJSON *ds3_replay_json(const ds3_cmp_report *rep, const ds3_cmp_opts *o, const ds3_replay_report *gaps,
                              const char *build, bool routing_build);

#endif /* DS3_MODEL_H */

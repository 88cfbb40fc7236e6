/*
 * internal.h — structs and functions shared between ds3's source files.
 * Not API: tests may include it, programs should use include/ds3.h.
 *
 * Layout follows llama2.c: the config (ds3_config), the weights (ds3_layer,
 * ds3_mtp_layer, ds3_model) and the inference state (ds3_state) are apart.
 * Weights are views into mmap'd checkpoint files, kept in their checkpoint
 * dtype; kernels dequantise as they read (SPEC §1, §7).
 *
 * Notation used in shape comments (SPEC §1):
 *   D  hidden_size          V  vocab_size        H  num_attention_heads
 *   Rq q_lora_rank          C  kv_lora_rank      Dn qk_nope_head_dim
 *   Dr qk_rope_head_dim     Dv v_head_dim        E  n_routed_experts
 *   K  num_experts_per_tok  I  intermediate_size Im moe_intermediate_size
 *   T  tokens in this forward call
 */
#ifndef DS3_INTERNAL_H
#define DS3_INTERNAL_H

#include "ds3.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ========================================================================== */
/* Errors and invariants                                                       */
/* ========================================================================== */

/* Record a formatted message for ds3_last_error() and return the status, so
 * that call sites read `return ds3_fail(DS3_ERR_SHAPE, "%s: shape …", name);` */
ds3_status ds3_fail(ds3_status st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Internal invariant: a broken one is a bug in ds3, not bad input. Reports
 * file:line and aborts (the only place the library may stop the process). */
#define DS3_ASSERT(cond)                                                        \
    do {                                                                        \
        if (!(cond)) ds3_assert_fail(#cond, __FILE__, __LINE__);                \
    } while (0)
void ds3_assert_fail(const char *expr, const char *file, int line) __attribute__((noreturn));

/* malloc/calloc that record DS3_ERR_NOMEM on failure (caller still checks). */
void *ds3_malloc(size_t bytes);
void *ds3_calloc(size_t n, size_t size);

/* ========================================================================== */
/* dtype.c — element types and their decoding (SPEC §1)                        */
/* ========================================================================== */

typedef enum {
    DS3_DT_F32 = 0,
    DS3_DT_F16,
    DS3_DT_BF16,
    DS3_DT_F8_E4M3,
    DS3_DT_F64,
    DS3_DT_I32,
    DS3_DT_I64,
    DS3_DT_U8,
    DS3_DT_COUNT
} ds3_dtype;

/* "F32", "BF16", "F8_E4M3" … as written in safetensors headers. */
const char *ds3_dtype_name(ds3_dtype dt);
/* Parse a safetensors dtype string; returns -1 if unknown. */
int ds3_dtype_parse(const char *s);
size_t ds3_dtype_size(ds3_dtype dt);

float ds3_bf16_to_f32(uint16_t h);
uint16_t ds3_f32_to_bf16(float f);            /* round to nearest even, NaN kept NaN */
float ds3_f16_to_f32(uint16_t h);
uint16_t ds3_f32_to_f16(float f);             /* round to nearest even */
float ds3_e4m3_to_f32(uint8_t b);             /* e4m3fn, NaN for 0x7f/0xff */
uint8_t ds3_f32_to_e4m3(float f);             /* round to nearest even, saturate at ±448 */

/* ========================================================================== */
/* Tensors: a view into a checkpoint (or any buffer)                           */
/* ========================================================================== */

/*
 * A 1-D or 2-D weight as stored. 2-D weights are row-major [rows][cols], stored
 * (out, in) as in PyTorch. A 1-D tensor has rows == 1.
 * For F8_E4M3 weights, scale_inv points to the F32 block scales
 * [ceil(rows/128)][ceil(cols/128)]; W[i][j] = e4m3(q[i][j]) * scale_inv[i/128][j/128].
 * Data may be unaligned (safetensors does not promise alignment): read it with
 * the ds3_tensor_* functions, which use memcpy.
 */
typedef struct {
    const char *name;        /* checkpoint name, for messages (owned by the model) */
    ds3_dtype dtype;
    int64_t rows, cols;
    const void *data;
    const void *scale_inv;   /* F32 [ceil(rows/128)][ceil(cols/128)], or NULL */
} ds3_tensor;

#define DS3_FP8_BLOCK 128

/* Dequantise rows [r0, r0+n) of w into out[n][w->cols]. */
void ds3_tensor_rows(ds3_real *out, const ds3_tensor *w, int64_t r0, int64_t n);
/* Whether the AVX2 copies of ds3_tensor_rows (BF16/FP8), ds3_dot and ds3_axpy
 * run (CPU has AVX2, no DS3_NO_AVX2; same bits as the portable ones); tests
 * switch them (false if AVX2 is asked for and missing). */
bool ds3_rows_avx2_ok(void);
/* The CPU has AVX2 and F16C (what linear_avx2.c is built with). */
bool ds3_cpu_has_avx2_f16c(void);
bool ds3_rows_select_avx2(bool on);
/* out[n] = w[r][c0 .. c0+n), dequantised; the segment must lie inside one
 * 128-column scale block. The unit the kernels decode at a time. */
void ds3_tensor_block(ds3_real *out, const ds3_tensor *w, int64_t r, int64_t c0, int64_t n);
/* All 256 e4m3fn values (NaN at 0x7f and 0xff). */
extern const float ds3_e4m3_table[256];
/* One element, dequantised (slow; for tests and small vectors). */
double ds3_tensor_get(const ds3_tensor *w, int64_t r, int64_t c);

/* ========================================================================== */
/* safetensors.c — reading (mmap) and writing                                   */
/* ========================================================================== */

typedef struct {
    char *name;
    ds3_dtype dtype;
    int ndim;
    int64_t shape[8];
    const void *data;        /* into the mapping */
    uint64_t nbytes;
} ds3_st_entry;

typedef struct {
    char *path;
    void *map;               /* whole file, read-only */
    size_t map_size;
    int n;
    ds3_st_entry *entries;   /* in header order */
    char *metadata_json;     /* the __metadata__ object as JSON text, or NULL */
} ds3_st_file;

/* Open and validate a safetensors file: header length within the file, JSON
 * well formed, every offset pair ordered, inside the data section and equal to
 * shape x dtype size. Errors name the file and the tensor. */
ds3_status ds3_st_open(const char *path, ds3_st_file **out);
void ds3_st_close(ds3_st_file *f);
const ds3_st_entry *ds3_st_find(const ds3_st_file *f, const char *name);
/* Value of a __metadata__ key, or NULL (pointer valid until ds3_st_close). */
const char *ds3_st_meta(const ds3_st_file *f, const char *key);

/* outfile.c — a whole output file: written to <file>.tmp and renamed over
 * <file> when every byte is out (symbolic links followed to the file they
 * name; a FIFO or device written in place). open, write to o->fp, then close
 * with ok = every write succeeded (err: errno of the first failure, 0 for a
 * short write); close removes the .tmp on failure. Errors name `path`. */
typedef struct {
    FILE *fp;
    const char *path;  /* as given (not copied) */
    char *dst, *tmp;   /* the file links lead to and its .tmp; NULL when in place */
} ds3_outfile;
ds3_status ds3_outfile_open(ds3_outfile *o, const char *path);
ds3_status ds3_outfile_close(ds3_outfile *o, bool ok, int err);

/* Writer: collect tensors (the data is referenced, not copied, until write),
 * then write header + data as an outfile (path.tmp renamed to path). */
typedef struct ds3_st_writer ds3_st_writer;
ds3_st_writer *ds3_stw_new(void);
/* name is copied. shape has ndim entries. */
ds3_status ds3_stw_add(ds3_st_writer *w, const char *name, ds3_dtype dt, int ndim,
                       const int64_t *shape, const void *data);
ds3_status ds3_stw_meta(ds3_st_writer *w, const char *key, const char *value);
ds3_status ds3_stw_write(ds3_st_writer *w, const char *path);
void ds3_stw_free(ds3_st_writer *w);

/* ========================================================================== */
/* config.c — config.json (SPEC §1)                                            */
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

/* Is main layer i an MoE layer (SPEC §1)? */
bool ds3_layer_is_moe(const ds3_config *c, int i);

/* ========================================================================== */
/* Weights                                                                     */
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

    /* self_attn (MLA, SPEC §3) */
    ds3_tensor q_a_proj;                 /* [Rq, D]        when Rq > 0 */
    ds3_real *q_a_layernorm;             /* [Rq]           when Rq > 0 */
    ds3_tensor q_b_proj;                 /* [H*(Dn+Dr), Rq] when Rq > 0 */
    ds3_tensor q_proj;                   /* [H*(Dn+Dr), D]  when Rq == 0 */
    ds3_tensor kv_a_proj_with_mqa;       /* [C+Dr, D] */
    ds3_real *kv_a_layernorm;            /* [C] */
    ds3_tensor kv_b_proj;                /* [H*(Dn+Dv), C] */
    ds3_tensor o_proj;                   /* [D, H*Dv] */

    /* mlp: dense, or MoE (SPEC §5) */
    bool is_moe;
    ds3_ffn mlp;                         /* dense: W = I */
    ds3_tensor gate;                     /* [E, D] router */
    ds3_real *e_score_correction_bias;   /* [E], noaux_tc only, else NULL */
    ds3_ffn *experts;                    /* [E], W = Im */
    ds3_ffn shared_experts;              /* W = n_shared * Im; absent if n_shared == 0 */
} ds3_layer;

/* A multi-token-prediction depth (SPEC §6): an ordinary layer plus the
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
};

/* ========================================================================== */
/* Kernels — op(out, in…, weights…, dims…); row-major; output first            */
/* ========================================================================== */

/* linear.c: out[T][w.rows] = in[T][w.cols] · wᵀ. BLAS (sgemm/dgemm on
 * dequantised row tiles) or plain loops, chosen by ds3_use_blas. */
void ds3_linear(ds3_real *out, const ds3_real *in, const ds3_tensor *w, int T);
/* The plain-loop twin, always available (tests hold the two together). */
void ds3_linear_ref(ds3_real *out, const ds3_real *in, const ds3_tensor *w, int T);
/* The kernels ds3_linear runs (ds3_set_kernels in ds3.h). */
extern ds3_kernels ds3_kernel_mode;
/* Tests: use the AVX2 (true) or portable (false) copy of the lane kernel;
 * false if AVX2 was asked for and the CPU lacks it. */
bool ds3_lanes_select_avx2(bool on);
/* Free this thread's BLAS tile buffer (it is regrown on the next call). */
void ds3_linear_release(void);
/* Run-time switch: true (default when built with BLAS) → BLAS path. */
extern bool ds3_use_blas;
bool ds3_have_blas(void);

/* ops.c */
void ds3_rmsnorm(ds3_real *out, const ds3_real *x, const ds3_real *w, int n, double eps);
ds3_real ds3_silu(ds3_real a);
void ds3_softmax(ds3_real *x, int n);                  /* in place, max-subtracted */
/* a·b in a fixed SIMD-friendly order (same bits for any caller), or the plain
 * sequential sum (ds3_dot_ref) in DS3_KERNELS_REF mode. */
ds3_real ds3_dot(const ds3_real *a, const ds3_real *b, int n);
ds3_real ds3_dot_ref(const ds3_real *a, const ds3_real *b, int n);
/* y[i] += a·x[i], vectorised (elementwise: the bits of the plain loop). */
void ds3_axpy(ds3_real *restrict y, ds3_real a, const ds3_real *restrict x, int n);

/* rope.c: YaRN frequencies (SPEC §4), computed in double. */
void ds3_yarn_freqs(double *freqs, const ds3_config *c);          /* [Dr/2] */
double ds3_yarn_mscale(double scale, double mscale);              /* 0.1·m·ln(s)+1, 1 if s<=1 */
double ds3_attn_softmax_scale(const ds3_config *c);               /* (Dn+Dr)^-0.5 · m² */
/* HF's cos/sin multiplier: mscale(f, mscale)/mscale(f, mscale_all_dim) when both
 * are set (1 for every released config), else mscale(f, 1); 1 without YaRN. */
double ds3_rope_attn_factor(const ds3_config *c);
/* Interleaved-pair rotation of x[Dr] in place at position pos (SPEC §3):
 * angles pos·f'_j and their cos/sin are computed in double. */
void ds3_rope(ds3_real *x, const double *freqs, double attn_factor, int Dr, int pos);

/* moe.c: routing for one token (SPEC §5). scratch holds E + n_group values.
 * Writes s[E] (the scores: sigmoid or softmax of the gate logits), idx[K]
 * (descending by selection score, ties → lowest index) and weight[K]
 * (s at idx, normalised if norm_topk_prob, times routed_scaling_factor). */
void ds3_moe_route(int32_t *idx, ds3_real *weight, ds3_real *s, const ds3_real *logits,
                   const ds3_real *bias, const ds3_config *c, ds3_real *scratch);
/* Its two halves (ds3_moe_route is scores then select): s[E] from the logits,
 * then idx and weight from s; emulation rounds s in between. */
void ds3_moe_scores(ds3_real *s, const ds3_real *logits, const ds3_config *c);
void ds3_moe_select(int32_t *idx, ds3_real *weight, const ds3_real *s, const ds3_real *bias, const ds3_config *c,
                    ds3_real *scratch);

/* ========================================================================== */
/* Inference state                                                             */
/* ========================================================================== */

typedef struct ds3_dumper ds3_dumper;
typedef struct ds3_emul ds3_emul;

/* Per-layer MLA cache. Absorbed: c [max_seq][C] and k_pe [max_seq][Dr].
 * Naive: k [max_seq][H][Dn+Dr] and v [max_seq][H][Dv]. */
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

/* The scalar type's dtype, for dumps. */
#ifdef DS3_F64
#define DS3_DT_REAL DS3_DT_F64
#else
#define DS3_DT_REAL DS3_DT_F32
#endif

struct ds3_state {
    const ds3_model *m;
    int max_seq;
    ds3_attn_mode attn;
    ds3_kv_cache *cache;                 /* [L + n_mtp] */
    int max_T;                           /* tokens per forward call the scratch holds */
    /* scratch, sized once (no allocation in the forward pass) */
    ds3_real *x;                         /* [max_T][D] residual stream */
    ds3_real *xn;                        /* [max_T][D] normalised input */
    ds3_real *y;                         /* [max_T][D] sublayer output */
    ds3_real *work;                      /* scratch carved by each sublayer (ds3_*_work_size) */
    size_t work_size;                    /* elements */
    int32_t *iwork;                      /* integer scratch: expert routing */
    size_t iwork_size;                   /* elements */
    ds3_real *dump_logits;               /* [max_T][V] while dumping without a caller buffer */
    ds3_dumper *dump;                    /* NULL: not dumping */

    /* MTP (mtp.c, SPEC §6). The MTP rows of position i need the main model's
     * final-normed hidden state h_i, which the forward pass keeps here for the
     * positions of its last chunk and the one before it. */
    ds3_hwin hfinal;                     /* RMSNorm_final(h) of the last chunk (+ the row before) */
    ds3_hwin *hmtp;                      /* [n_mtp] depth k's outputs after its shared_head.norm */
    bool mtp_on;                         /* ds3_state_set_mtp: forward calls run the MTP depths too */
    int mtp_done;                        /* depth-0 rows 0..mtp_done-1 hold their true inputs */

    ds3_emul *emul;                      /* ds3_set_emulation; NULL: off (emulate.c) */
};

/* Sublayers (mla.c, mlp.c, moe.c). Each carves its scratch from s->work; the
 * _work_size functions say how much for T tokens, so the state can size it once. */
size_t ds3_mla_work_size(const ds3_config *c, int T, int max_seq, ds3_attn_mode attn);
size_t ds3_ffn_work_size(const ds3_config *c, int T);
size_t ds3_moe_iwork_size(const ds3_config *c, int T);
/* out[T][D] = MLA(x[T][D]) for positions start..start+T-1, updating kv. */
void ds3_mla(ds3_state *s, const ds3_layer *l, ds3_kv_cache *kv, ds3_real *out,
             const ds3_real *x, int T, int start);
/* out[T][D] = SwiGLU FFN of width W; work holds 2·T·W. */
void ds3_mlp(ds3_real *out, const ds3_real *x, const ds3_ffn *f, int W, int T, ds3_real *work);
/* out[T][D] = routed experts + shared experts; dumps "<prefix>.moe.*". */
void ds3_moe(ds3_state *s, const ds3_layer *l, ds3_real *out, const ds3_real *x, int T,
             int start, const char *prefix);
/* Capture one activation [T][inner...] at rows start.. under a printf-style name. */
void ds3_dump_act(ds3_state *s, ds3_dtype dt, int ninner, const int64_t *inner, int start, int T,
                  const void *data, const char *fmt, ...) __attribute__((format(printf, 8, 9)));

/* model.c: one decoder layer on the residual stream s->x [T][D], in place, at
 * positions start..; kv is its cache; `prefix` names its dumps ("layers.3",
 * "mtp.0"). Used by the main layers and by the MTP block. */
void ds3_layer_forward(ds3_state *s, const ds3_layer *l, ds3_kv_cache *kv, int T, int start,
                       const char *prefix);
/* Start writing a window at position `first`: keeps the row of first-1 when
 * the window holds it (as row 0) and returns where the row of `first` goes;
 * the caller then adds the rows it writes to w->n. */
ds3_real *ds3_hwin_begin(ds3_hwin *w, int first, int D);

/* mtp.c (SPEC §6). ds3_mtp_block: depth k on n rows at positions r0.. :
 *   u = eh_proj · [enorm(Emb(tok[r])) | hnorm(in[r])],  x = Block(u),
 *   out[r] = shared_head.norm(x),  logits = shared_head.head · out (last
 *   n_logits rows, into logits [n_logits][V]; none if logits is NULL).
 * in [n][D] and out [n][D] must not be state scratch. dump: record mtp.k.*
 * rows r0.. when the state is dumping (the chained draft steps do not). */
void ds3_mtp_block(ds3_state *s, int k, const ds3_real *in, const int32_t *tok, int n, int r0,
                   ds3_real *out, ds3_real *logits, int n_logits, bool dump);
/* Depth k on rows r0..r0+n-1 whose inputs are in the window (hfinal for
 * depth 0, hmtp[k-1] beyond); tok[r] is the token at position r+1+k. The
 * outputs go to hmtp[k]. */
void ds3_mtp_rows(ds3_state *s, int k, const int32_t *tok, int n, int r0, ds3_real *logits, int n_logits);
/* After a main chunk [start, start+T): every depth on the rows whose tokens
 * this chunk supplies (row i at depth k needs token i+1+k). */
void ds3_mtp_chunk(ds3_state *s, const int32_t *tok, int T, int start);

/* sample.c, for speculative sampling (spec.c). */
bool ds3_sampler_greedy(const ds3_sampler *s);
/* p[V] = the exact distribution ds3_sample draws from (softmax(l/temp), the
 * top-p nucleus renormalised, 0 outside it). -1 on NaN logits or no memory. */
int ds3_sampler_probs(ds3_sampler *s, const ds3_real *logits, int vocab, double *p);
/* The next uniform in [0, 1) of the sampler's stream. */
double ds3_sampler_uniform(ds3_sampler *s);
/* Inverse CDF of p[V] (index order) at u·Σp; the last token with p > 0 if
 * rounding leaves none. */
int ds3_sample_from(const double *p, int vocab, double u);

/* spec.c: the speculative-sampling acceptance rule for one verification
 * (Leviathan et al. 2023; Chen et al. 2023). p [n+1][V]: the target's
 * distributions at the n drafted positions and the one after; q [n][V]: the
 * distributions the drafts were drawn from; draft [n]. Writes the accepted
 * drafts and then one more token (the residual draw on a rejection, the bonus
 * draw from p[n] when all pass) to out, and returns how many (1..n+1). The
 * uniforms come from smp. scratch [V]. */
int ds3_spec_accept(ds3_sampler *smp, const double *p, const double *q, const int32_t *draft, int n,
                    int vocab, int32_t *out, double *scratch);

/* dump.c: named activations for positions [0, total). */
ds3_dumper *ds3_dumper_new(int total);
void ds3_dumper_free(ds3_dumper *d);
/* Store rows [row0, row0+nrows) of tensor `name` with per-row shape inner[ninner]. */
void ds3_dump_rows(ds3_dumper *d, const char *name, ds3_dtype dt, int ninner, const int64_t *inner,
                   int row0, int nrows, const void *data);
ds3_status ds3_dumper_write(ds3_dumper *d, const char *path, const char *const *metadata_kv);

/* ========================================================================== */
/* ---- emulation ---- (emulate.c): GPU rounding points, off unless set          */
/* ========================================================================== */
/* Each function is the plain one when the state's emulation is off (or the
 * point is not selected), so call sites read the same either way. */

/* Is rounding point `point` (DS3_EMUL_*) on for this state? */
bool ds3_emul_has(const ds3_state *s, unsigned point);
/* Round x[n] to bf16 in place if `point` is on. */
void ds3_emul_round(const ds3_state *s, ds3_real *x, size_t n, unsigned point);
/* Weights dequantised outside ds3_linear (absorbed MLA's kv_b_proj): to bf16
 * unless stored as BF16. */
void ds3_emul_weights(const ds3_state *s, ds3_real *w, size_t n, ds3_dtype stored);
/* Attention scores with the scores point: the loop computes unscaled dot
 * products times ds3_emul_score_scale (the scale itself when off, 1 when
 * emulating), then ds3_emul_scores rounds q·k, scales and rounds again
 * (nothing when off). The absorbed form sums its two dot products with
 * ds3_emul_score2 when emulating. */
ds3_real ds3_emul_score_scale(const ds3_state *s, ds3_real scale);
void ds3_emul_scores(const ds3_state *s, ds3_real *sc, size_t n, ds3_real scale);
ds3_real ds3_emul_score2(const ds3_state *s, ds3_real d1, ds3_real d2);
/* ds3_rope, or with DS3_EMUL_ROPE_BF16 transformers' bf16 rotation. */
void ds3_rope_em(const ds3_state *s, ds3_real *x, const double *freqs, double attn_factor, int Dr, int pos);
/* ds3_rmsnorm with the norm point's two roundings. */
void ds3_rmsnorm_em(const ds3_state *s, ds3_real *out, const ds3_real *x, const ds3_real *w, int n, double eps);
/* ds3_linear with FP8 input quantisation, bf16 weights and a bf16 output. */
void ds3_linear_em(const ds3_state *s, ds3_real *out, const ds3_real *in, const ds3_tensor *w, int T);
/* ds3_mlp through ds3_linear_em, with the act point (mlp.c). */
void ds3_mlp_em(const ds3_state *s, ds3_real *out, const ds3_real *x, const ds3_ffn *f, int W, int T,
                ds3_real *work);
/* The router (moe.c calls these around ds3_moe_scores / ds3_moe_select). */
void ds3_router_logits_em(const ds3_state *s, ds3_real *logits, const ds3_real *x, const ds3_tensor *gate, int T);
void ds3_router_scores_em(const ds3_state *s, ds3_real *scores, int E);
void ds3_router_weights_em(const ds3_state *s, ds3_real *w, const ds3_real *scores, const int32_t *idx);
/* y = Σ_k w·expert_k in bf16, ascending expert index, + shared (may be NULL). */
void ds3_combine_em(const ds3_state *s, ds3_real *out, const ds3_real *ye, const int32_t *slot, const int32_t *idx,
                    const ds3_real *w, const ds3_real *shared, int T, int K, int D);
void ds3_emul_free(ds3_emul *e);
/* Free this thread's emulation scratch (regrown on the next call). */
void ds3_emul_release(void);

#endif /* DS3_INTERNAL_H */

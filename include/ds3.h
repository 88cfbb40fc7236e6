/*
 * ds3.h — the whole public API of ds3, a CPU reference implementation of the
 * DeepSeek-V3 architecture (MLA, group-limited MoE, MTP).
 *
 * Conventions (after sqlite and ggml):
 *   - every public name starts with ds3_ / DS3_;
 *   - handles are opaque; functions return a ds3_status and fill out-parameters;
 *   - on failure, ds3_last_error() gives a message naming the file, the tensor
 *     and what was expected; the library never calls exit();
 *   - ds3_x_free(NULL) is a no-op.
 * Anything not declared in this header is not API and may change.
 *
 * Precision: the library is built either with float (default) or double
 * (PRECISION=f64, which defines DS3_F64) as its scalar type, ds3_real.
 * A program must be compiled with the same DS3_F64 setting as the library.
 */
#ifndef DS3_H
#define DS3_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifdef DS3_F64
typedef double ds3_real;
#else
typedef float ds3_real;
#endif

typedef enum {
    DS3_OK = 0,
    DS3_ERR_IO,       /* file missing, unreadable, unwritable, truncated */
    DS3_ERR_FORMAT,   /* malformed safetensors / JSON */
    DS3_ERR_CONFIG,   /* config.json missing a field or inconsistent */
    DS3_ERR_MISSING,  /* a tensor the config implies is absent */
    DS3_ERR_SHAPE,    /* a tensor has the wrong shape or dtype */
    DS3_ERR_NOMEM,    /* allocation failed */
    DS3_ERR_ARG,      /* bad argument from the caller (token id, position …) */
    DS3_ERR_PLATFORM, /* this build or host cannot give ds3's bits (contraction, byte order) */
} ds3_status;

/* The message of the last failure on this thread ("" if none). */
const char *ds3_last_error(void);
/* A short name for a status code ("io error", "shape mismatch", …). */
const char *ds3_status_name(ds3_status s);

/* ---- models ------------------------------------------------------------- */

typedef struct ds3_model ds3_model;

/* Load a Hugging Face model directory: config.json plus model.safetensors or
 * model.safetensors.index.json and shards. Tensors are mmap'd, bound by name
 * and shape-checked. */
ds3_status ds3_model_load(const char *dir, ds3_model **out);
void ds3_model_free(ds3_model *m);

/* Before decoding many tokens (optional, once): lay lm_head out for one-token
 * steps — a copy with its rows interleaved four at a time, which decode reads
 * as one stream (docs/ARCHITECTURE.md §6) — handing the original's pages back
 * as it goes. The same bits with or without it; it only costs the copy's time
 * and, for a caller that also asks for many rows' logits, the copy's memory.
 * Skipped (still DS3_OK) for a head that is not BF16, in the f64 build, with
 * DS3_NO_ROWS4=1, where the checkpoint and the copy would not fit in RAM or the
 * memory cgroup, or when the copy cannot be allocated. Call it with no forward
 * running on the model; a second call does nothing. `ds3 run`, `ds3 chat` and
 * the Python package's generate call it; a replay or a dump need not. */
ds3_status ds3_model_prepare_decode(ds3_model *m);

/* Are the model's files still the ones loaded? DS3_ERR_IO naming the file when
 * one was truncated under the mapping ("FILE changed size while mapped": the
 * pages that vanished read as zeros, so a run finishes instead of dying of
 * SIGBUS) or now has another inode, size or modification time (rewritten,
 * replaced). Whatever was computed since the load must then be discarded.
 * One stat per file; ds3_dump_write calls it before writing. */
ds3_status ds3_model_check(const ds3_model *m);

/* Start the OpenMP threads now, so that failing to create them (a memory or
 * process limit) is this error rather than libgomp's own message and exit
 * in the middle of a run. Optional: programs that skip it get libgomp's
 * behaviour. The ds3 CLI calls it first. */
ds3_status ds3_threads_start(void);

int ds3_model_vocab_size(const ds3_model *m);
int ds3_model_num_layers(const ds3_model *m);      /* main layers, MTP excluded */
int ds3_model_num_mtp(const ds3_model *m);         /* MTP depths present */
int ds3_model_top_k(const ds3_model *m);           /* routed experts per token, 0 if no MoE */
int ds3_model_max_positions(const ds3_model *m);   /* max_position_embeddings */

/* Print the architecture summary (parameters, active parameters, bytes per
 * dtype, KV-cache bytes per token) of a loaded model. */
void ds3_model_describe(const ds3_model *m, FILE *f);
/* The same for a built-in config name (v3, v2-lite, kimi-k2, …, tiny, small)
 * or a config.json path, without weights. */
ds3_status ds3_config_describe(const char *name_or_path, FILE *f);
/* Names of the built-in configs, NULL-terminated. */
const char *const *ds3_builtin_configs(void);

/* ---- synthetic reference models ------------------------------------------ */

typedef enum { DS3_WEIGHTS_F32, DS3_WEIGHTS_BF16, DS3_WEIGHTS_FP8 } ds3_weight_dtype;

typedef struct {
    const char *config;          /* built-in name or path to a config.json */
    ds3_weight_dtype dtype;      /* projection dtype; norms stay BF16/F32 as in V3 */
    uint64_t seed;
    double bias_shift;           /* added to every e_score_correction_bias (0: none) */
    double mtp_agree;            /* 0: random weights. In (0, 1]: a model whose MTP layer predicts
                                    what the main model says next, for that share of tokens
                                    (docs/MKMODEL.md); needs an MTP layer and an untied lm_head */
    const char *tokenizer;       /* NULL, or a tokenizer.json (or its directory) copied into the
                                    model with the weights (with tokenizer_config.json when one is
                                    beside it); not checked here: load it first */
} ds3_mkmodel_opts;

/* Write a deterministic synthetic checkpoint in HF layout to outdir. The model
 * is built in a fresh sibling directory and renamed into place when complete
 * (over an existing model: exchanged with it atomically where the system can),
 * so outdir holds a whole model or is as it was, even if the process is
 * killed. An existing outdir may hold only a model's files. */
ds3_status ds3_mkmodel(const ds3_mkmodel_opts *opts, const char *outdir);
/* What ds3_mkmodel would write, without writing: *bytes, the total size of its
 * files (within a few kB per tensor), and the config's vocab_size. Checks the
 * options as ds3_mkmodel does. */
ds3_status ds3_mkmodel_estimate(const ds3_mkmodel_opts *opts, uint64_t *bytes, int *vocab_size);

/* ---- inference state ------------------------------------------------------ */

typedef enum { DS3_ATTN_ABSORB = 0, DS3_ATTN_NAIVE = 1 } ds3_attn_mode;

typedef struct ds3_state ds3_state;

/* KV caches and scratch for up to max_seq positions, sized once. */
ds3_status ds3_state_new(const ds3_model *m, int max_seq, ds3_attn_mode attn, ds3_state **out);
void ds3_state_free(ds3_state *s);

/* Run tokens[0..n) at positions start..start+n-1 (the cache must already hold
 * positions 0..start-1). logits, if not NULL, receives [n][vocab]. */
ds3_status ds3_forward(ds3_state *s, const int32_t *tokens, int n, int start, ds3_real *logits);
/* The same, with the logits of the last position only: logits, if not NULL,
 * receives [vocab]. Generation needs no more, and the head (vocab × hidden,
 * the largest matrix) then runs on one row instead of n. The head then uses
 * the one-token kernel, so with DS3_KERNELS_FAST the logits may differ in the
 * last place from row n-1 of ds3_forward (OpenBLAS on several rows); the
 * deterministic and ref kernels give the same bits. Dumps are unchanged. */
ds3_status ds3_forward_last(ds3_state *s, const int32_t *tokens, int n, int start, ds3_real *logits);

/* ---- kernels ---------------------------------------------------------------- */

/*
 * Which matrix kernels a state's products use (default FAST):
 *   DS3_KERNELS_FAST           up to 32 tokens: the SIMD lane kernel; more:
 *                              OpenBLAS GEMMs on dequantised tiles (and, from 5
 *                              tokens, attention as per-head GEMMs);
 *   DS3_KERNELS_DETERMINISTIC  the lane kernel for any number of tokens, so a
 *                              full prefill and prefill-then-decode give
 *                              byte-identical logits (prefill is slower);
 *   DS3_KERNELS_REF            the plain loops: one sequential sum per output.
 * Every mode gives the same bits for any thread count. The mode belongs to the
 * state, not the process: two states may run in two threads at once with
 * different modes, each getting its own mode's bits.
 */
typedef enum { DS3_KERNELS_FAST = 0, DS3_KERNELS_DETERMINISTIC = 1, DS3_KERNELS_REF = 2 } ds3_kernels;
ds3_status ds3_state_set_kernels(ds3_state *s, ds3_kernels k);
ds3_kernels ds3_state_kernels(const ds3_state *s);
/* "fast", "deterministic", "ref" → the mode; DS3_ERR_ARG for other names. */
ds3_status ds3_kernels_parse(const char *name, ds3_kernels *out);

/* ---- the build and the threads ------------------------------------------------ */

/* What this library was built with, and what it uses on this CPU. */
typedef struct {
    const char *precision;  /* "f32", or "f64" (PRECISION=f64) */
    const char *blas;       /* OpenBLAS's own description (version, core, threads), or "none (plain loops)" */
    int openmp;             /* the _OPENMP date (e.g. 201511), 0 without OpenMP */
    int simd_built;         /* 1 where the AVX2+F16C lane kernel is compiled in (x86-64) */
    const char *simd;       /* the lane kernel used on this CPU: "avx2+f16c" or "portable" */
    int amx;                /* 1 where fast mode's several-token products with BF16 and FP8 weights
                               run on Intel AMX (the CPU has it, Linux grants it, DS3_NO_AMX unset) */
    int avx512;             /* 1 where a fast decode step's attention and FP8 products run AVX-512
                               fused multiply-adds (float build with BLAS, the CPU has AVX-512 F,
                               BW and VL, DS3_NO_AVX512 unset) */
} ds3_build_info;
void ds3_get_build_info(ds3_build_info *out);

/* Threads for OpenMP loops and OpenBLAS (n >= 1); default: OpenMP's (the cores,
 * or OMP_NUM_THREADS). Results are the same bits for any count. */
ds3_status ds3_set_threads(int n);
int ds3_threads(void);

/* ---- progress of long work --------------------------------------------------- */

/* fn(user, what, done, total) is called on the calling thread as long work
 * advances: ds3_mkmodel ("mkmodel": bytes done of the total) and every forward
 * call ("forward: N tokens x L layers": token-layers done of N·L). NULL
 * (the default): no calls. One hook per process; the ds3 CLI sets it when
 * stderr is a terminal. */
typedef void (*ds3_progress_fn)(void *user, const char *what, double done, double total);
void ds3_set_progress(ds3_progress_fn fn, void *user);

/* ---- expert parallelism across processes (MPI) ------------------------------ */

/* Join the MPI job this process was started in (mpirun -np N), in a build made
 * with `make MPI=1`; elsewhere a no-op, and every function below is the single
 * process's (rank 0 of 1). A model loaded after it holds and runs only this
 * process's share of the routed experts (ds3_model_experts), so every
 * ds3_forward on it (and every call that runs one: generation, replay) is a
 * collective call: all processes make it with the same arguments. The results
 * are the same bits as one process, for any N (docs/ARCHITECTURE.md §10). */
ds3_status ds3_dist_init(void);
int ds3_dist_rank(void);    /* this process's rank: 0 alone */
int ds3_dist_size(void);    /* processes in the job: 1 alone */
/* Copy n bytes of rank 0's buf into every process's buf (collective). */
ds3_status ds3_dist_bcast(void *buf, size_t n);
/* End the whole job now with this exit status (MPI_Abort; exit alone). */
void ds3_dist_abort(int status);
/* Leave the MPI job (once, at exit; later calls do nothing). */
void ds3_dist_finalize(void);
/* The routed experts [*lo, *hi) this process holds (all of them alone);
 * returns their number. */
int ds3_model_experts(const ds3_model *m, int *lo, int *hi);

/* ---- activation dumps ----------------------------------------------------- */

/* Start capturing named activations for positions 0..total-1 (see
 * docs/DUMP_FORMAT.md); every later ds3_forward writes its rows. */
ds3_status ds3_dump_begin(ds3_state *s, int total);
/* Write what was captured to a safetensors file (via a temporary name and a
 * rename), with metadata key/value pairs (NULL-terminated list, may be NULL),
 * and stop capturing. Refused, with no file written, when ds3_model_check
 * fails (a weight file changed during the run); the shards' identities are
 * recorded in the file (ds3_shards). */
ds3_status ds3_dump_write(ds3_state *s, const char *path, const char *const *metadata_kv);

/* ---- sampling -------------------------------------------------------------- */

typedef struct ds3_sampler ds3_sampler;

/* temp <= 0: greedy (argmax, lowest index on ties). Otherwise softmax(logits/temp)
 * restricted to the smallest set with mass >= top_p, drawn with a seeded PRNG. */
ds3_status ds3_sampler_new(float temp, float top_p, uint64_t seed, ds3_sampler **out);
void ds3_sampler_free(ds3_sampler *s);
int ds3_sample(ds3_sampler *s, const ds3_real *logits, int vocab);
/* Filters of the nucleus (src/generate/sample.c has the exact steps): keep the
 * top_k most likely tokens (0: off), then those with p >= min_p · p_max (0:
 * off), then top_p of what is left. Greedy ignores them. */
ds3_status ds3_sampler_set_filters(ds3_sampler *s, int top_k, float min_p);
/* Repetition penalty (1: off): the logits of the ids among the last `window`
 * of the history (-1: all of it; 0: off) are divided by penalty when positive,
 * multiplied when not, before temperature (greedy included). The history is
 * ds3_sampler_add_history's ids (the prompt), then every token ds3_sample
 * returns. ds3_generate_spec refuses a sampler with a penalty (DS3_ERR_ARG). */
ds3_status ds3_sampler_set_repeat_penalty(ds3_sampler *s, float penalty, int window);
ds3_status ds3_sampler_add_history(ds3_sampler *s, const int32_t *ids, int n);

/* ---- MTP: multi-token prediction and speculative decoding ------------------ */

/*
 * The checkpoint's MTP depths (docs/MODEL.md §6, docs/ARCHITECTURE.md §9). Row i of
 * depth k joins the main model's final-normed hidden state at position i
 * (depth 0) or depth k-1's output at row i (depth k > 0) with the token at
 * position i+1+k, runs one decoder layer with its own KV cache at position i,
 * and predicts the token at position i+2+k. ds3_model_num_mtp() says how many
 * depths a model has (0: these calls return DS3_ERR_ARG).
 */

/* on != 0: from now on every ds3_forward also runs each MTP depth on the rows
 * whose token that call supplies (rows of the call's positions, and the row
 * before them), keeping the MTP caches in step with the main one. Needed
 * before the prompt's forward for ds3_generate_spec. Dumps do it anyway. */
ds3_status ds3_state_set_mtp(ds3_state *s, int on);

/* MTP depth `depth` on rows start..start+n-1 explicitly (n <= 256); tokens[r]
 * is the token at position start+r+1+depth. The input hidden states must be
 * the last ds3_forward's (its last chunk of up to 256 positions and the
 * position before it) or, for depth > 0, the lower depth's last call. logits,
 * if not NULL, receives [n][vocab]. */
ds3_status ds3_forward_mtp(ds3_state *s, int depth, const int32_t *tokens, int n, int start, ds3_real *logits);

/* Forget positions n and later: the next ds3_forward starts at n (or before).
 * The caches are positional, so this only drops the hidden states the MTP
 * would read; cache entries past n are overwritten before anything reads them. */
ds3_status ds3_state_truncate(ds3_state *s, int n);

/* Counts of one ds3_generate_spec call. Acceptance rate = accepted / drafted. */
typedef struct {
    long rounds;      /* verification forwards */
    long drafted;     /* draft tokens proposed */
    long accepted;    /* drafts accepted */
    long generated;   /* tokens produced (accepted drafts, corrections, bonus tokens, the first) */
} ds3_spec_stats;

/* Called with each token as soon as it is final; non-zero stops generation. */
typedef int (*ds3_token_fn)(void *user, int32_t token);

/*
 * Self-speculative decoding: generate n_gen tokens after positions
 * 0..n_past-1, which the state has just run with ds3_state_set_mtp(s, 1) on;
 * logits are the main model's at position n_past-1. Each round drafts n_draft
 * (1..16) tokens with MTP depth 0, re-applied to its own output, and verifies
 * them with one forward of n_draft+1 tokens; rejected drafts are rolled back
 * in both caches. With a greedy sampler the output equals ds3_forward +
 * ds3_sample one token at a time, token for token; with temperature, drafts
 * are accepted by the speculative-sampling rule (src/generate/spec.c), which keeps the
 * output distribution. out (n_gen entries) and on_token may be NULL. The state
 * needs n_past + n_gen - 1 positions.
 */
ds3_status ds3_generate_spec(ds3_state *s, ds3_sampler *smp, int n_past, const ds3_real *logits, int n_gen,
                             int n_draft, int32_t *out, ds3_token_fn on_token, void *user, ds3_spec_stats *stats);

/* ---- tokenizer ------------------------------------------------------------- */

/*
 * DeepSeek-V3's tokenizer: byte-level BPE read from a Hugging Face
 * tokenizer.json, giving the same ids as the `tokenizers` library
 * (docs/TOKENIZER.md). Text is UTF-8; ids are int32_t.
 *
 * A loaded tokenizer is read-only: encode and decode may run on many threads
 * at once. Arrays and strings the library returns through `**out` parameters
 * are malloc'd: release them with free().
 */
typedef struct ds3_tokenizer ds3_tokenizer;

/* Load a tokenizer.json (path to the file, or to a directory holding one).
 * tokenizer_config.json beside it, if present, names the BOS and EOS tokens.
 * Features the DeepSeek-V3 kind does not use (other normalizers, Metaspace,
 * byte fallback, …) are refused with DS3_ERR_FORMAT, never ignored. */
ds3_status ds3_tokenizer_load(const char *path, ds3_tokenizer **out);
/* The same from memory: json[0..len) is a tokenizer.json, config[0..config_len)
 * a tokenizer_config.json (NULL: none). Neither needs a terminating NUL. Any
 * bytes give either a tokenizer or DS3_ERR_FORMAT with a message. */
ds3_status ds3_tokenizer_load_mem(const char *json, size_t len, const char *config, size_t config_len,
                                  ds3_tokenizer **out);
void ds3_tokenizer_free(ds3_tokenizer *t);

/* Ids are 0 .. n_ids-1 (128815 for DeepSeek-V3; a model's vocab_size may be
 * larger, padded with ids that have no token). */
int ds3_tokenizer_n_ids(const ds3_tokenizer *t);
int32_t ds3_tokenizer_bos(const ds3_tokenizer *t);     /* -1 if none */
int32_t ds3_tokenizer_eos(const ds3_tokenizer *t);     /* -1 if none */
/* The id whose token is exactly these bytes (an added token's content, or a
 * vocabulary token's bytes), or -1. */
int32_t ds3_tokenizer_token_id(const ds3_tokenizer *t, const char *text, size_t len);
/* The bytes of one token (not NUL-terminated), or NULL if id is not a token. */
const char *ds3_tokenizer_token(const ds3_tokenizer *t, int32_t id, size_t *len);
/* 1 if id is an added token marked special (BOS, EOS, <｜place▁holder…｜>), else 0. */
int ds3_tokenizer_is_special(const ds3_tokenizer *t, int32_t id);
/* tokenizer_config.json's chat_template (a Jinja template), or NULL. */
const char *ds3_tokenizer_chat_template(const ds3_tokenizer *t);
/* The DeepSeek-V3 chat prompt for one user turn, as its chat_template renders
 * it with add_generation_prompt: BOS, the system text (may be NULL), then
 * "<｜User｜>" user "<｜Assistant｜>". *text is malloc'd and NUL-terminated;
 * encode it to get the ids (the markers become their tokens). DS3_ERR_FORMAT
 * when the tokenizer lacks those tokens or its chat_template is another
 * model's (ds3 renders this one format, it does not run Jinja). */
ds3_status ds3_tokenizer_chat_prompt(const ds3_tokenizer *t, const char *system, const char *user, char **text,
                                     size_t *len);

/* Flags for ds3_tokenizer_encode. */
#define DS3_TOKENIZE_BOS             1u  /* put the BOS token first (DS3_ERR_ARG if none) */
#define DS3_TOKENIZE_SPECIAL_AS_TEXT 2u  /* special tokens' strings in the text are plain text */

/* Encode len bytes of text (need not be NUL-terminated) into *ids (malloc'd,
 * *n_ids entries; NULL when there are none). Added tokens written in the text
 * ("<｜User｜>") become their ids. Bytes that are not valid UTF-8 are read as
 * U+FFFD, one per maximal ill-formed subsequence, as Python's
 * bytes.decode("utf-8", "replace") does; ds3_utf8_valid_prefix finds them. */
ds3_status ds3_tokenizer_encode(const ds3_tokenizer *t, const char *text, size_t len, unsigned flags,
                                int32_t **ids, size_t *n_ids);

/* Decode ids into their exact bytes (*text malloc'd, NUL-terminated, *len
 * bytes without the NUL). DS3_ERR_ARG names the first id that is not a token.
 * The bytes may be invalid UTF-8 when the ids are (a model can stop inside a
 * character); they are returned as they are. */
ds3_status ds3_tokenizer_decode(const ds3_tokenizer *t, const int32_t *ids, size_t n, char **text,
                                size_t *len);

/* Streaming decoding, one id at a time: each push gives the bytes that are
 * now complete, holding back the start of a UTF-8 character whose remaining
 * bytes have not arrived (a character may span tokens). Bytes that cannot
 * become a valid character are given out at once, as they are. Everything
 * pushed, then flushed, is exactly ds3_tokenizer_decode of the same ids.
 * The returned pointer is valid until the next call on the same decoder. */
typedef struct ds3_detokenizer ds3_detokenizer;
ds3_status ds3_detokenizer_new(const ds3_tokenizer *t, ds3_detokenizer **out);
ds3_status ds3_detokenizer_push(ds3_detokenizer *d, int32_t id, const char **text, size_t *len);
/* End of stream: the held-back bytes (an unfinished character), as they are. */
void ds3_detokenizer_flush(ds3_detokenizer *d, const char **text, size_t *len);
void ds3_detokenizer_free(ds3_detokenizer *d);

/* Length of the longest prefix of s[0..len) that is valid UTF-8 (len if all). */
size_t ds3_utf8_valid_prefix(const char *s, size_t len);

/* ---- emulation of GPU rounding ---------------------------------------------- */

/*
 * Round where a GPU build rounds (docs/MODEL.md §7), so that ds3 can stand in for a
 * bf16 or FP8 build, or show which rounding explains a difference
 * (docs/COMPARING.md, "Emulation"). Off by default; when off, nothing changes
 * in the forward pass.
 *   DS3_EMULATE_BF16  bf16 activations at every point below, fp32 accumulation;
 *   DS3_EMULATE_FP8   the same, plus the official w8a8 path's FP8 quantisation
 *                     of the inputs of F8_E4M3 linears (per 128, amax/448).
 * `points` selects the rounding points (0: all of the mode's). Not thread-safe
 * against a forward pass running on the same state.
 */
typedef enum { DS3_EMULATE_NONE = 0, DS3_EMULATE_BF16, DS3_EMULATE_FP8 } ds3_emulate_mode;

enum {
    DS3_EMUL_RESIDUAL = 1u << 0,   /* embedding and residual stream after each add */
    DS3_EMUL_NORM = 1u << 1,       /* RMSNorm outputs (normalised, rounded, times weight, rounded) */
    DS3_EMUL_LINEAR = 1u << 2,     /* every projection's output, logits included */
    DS3_EMUL_WEIGHTS = 1u << 3,    /* F32/F16 weights (and F8 in bf16 mode) held as bf16 */
    DS3_EMUL_ROPE = 1u << 4,       /* q_pe, k_pe after the rotation */
    DS3_EMUL_SCORES = 1u << 5,     /* attention scores before the softmax */
    DS3_EMUL_PROBS = 1u << 6,      /* attention probabilities */
    DS3_EMUL_ATTN = 1u << 7,       /* per-head attention outputs (absorbed: q_c, o_c too) */
    DS3_EMUL_ACT = 1u << 8,        /* silu(gate) and silu(gate)·up */
    DS3_EMUL_ROUTER = 1u << 9,     /* the router as the official code computes it in bf16 */
    DS3_EMUL_COMBINE = 1u << 10,   /* MoE sum in bf16, ascending expert index, then + shared */
    DS3_EMUL_ACTQUANT = 1u << 11,  /* fp8 only: FP8 inputs of F8_E4M3 linears */
    DS3_EMUL_ALL = (1u << 12) - 1,
    /* A flavour, not in ALL: RoPE as transformers computes it in bf16 (cos/sin
     * rounded to bf16, each product and sum rounded) instead of the official
     * code's fp32 rotation rounded once. */
    DS3_EMUL_ROPE_BF16 = 1u << 12,
};

typedef struct {
    ds3_emulate_mode mode;
    int ue8m0;          /* fp8: activation scales rounded up to a power of two */
    unsigned points;    /* DS3_EMUL_* bits; 0 = all of the mode's */
} ds3_emulation;

/* Set (or, with NULL or DS3_EMULATE_NONE, clear) the state's emulation. */
ds3_status ds3_set_emulation(ds3_state *s, const ds3_emulation *e);
/* Parse "none", "bf16", "fp8" followed by comma-separated options: "ue8m0"
 * (fp8), "router-f32" (leave the router in fp32, as transformers does),
 * "rope-bf16" (DS3_EMUL_ROPE_BF16), "hf" (both: transformers' flavour), point
 * names (residual, norm, linear, weights, rope, scores, probs, attn, act,
 * router, combine, actquant) to keep only those, "-NAME" to leave one out. */
ds3_status ds3_emulation_parse(const char *spec, ds3_emulation *out);

/* ---- replay: one layer from given inputs ------------------------------------ */

/*
 * Run one decoder layer on a build's own values instead of ds3's, so that each
 * of its outputs measures the error of that layer alone (`ds3 replay`,
 * docs/COMPARING.md "Replay"). Shapes: T positions, D hidden size, K experts
 * per token, E routed experts.
 */
typedef struct {
    const ds3_real *in;        /* [T][D] the residual stream entering the layer (required) */
    const ds3_real *attn_out;  /* [T][D] the build's attention output: the FFN sublayer runs on
                                  in + attn_out (rounded as the residual stream when emulating);
                                  NULL: on in + ds3's own attention output */
    const int32_t *topk_idx;   /* [T][K] MoE layers: run these experts, weighted by ds3's router
                                  scores at them as its own choice would be (normalised, scaled);
                                  NULL: ds3's own choice. Ignored by dense layers */
} ds3_replay_inputs;

typedef struct {               /* every pointer may be NULL (not wanted) */
    ds3_real *attn_out;        /* [T][D] the attention sublayer's output from `in` */
    ds3_real *ffn_out;         /* [T][D] the FFN sublayer's output */
    ds3_real *out;             /* [T][D] the residual stream after the layer */
    int32_t *topk_idx;         /* [T][K] MoE layers: ds3's own choice of experts */
    ds3_real *topk_weight;     /* [T][K] MoE layers: the weights of the experts that ran */
    ds3_real *scores;          /* [T][E] MoE layers: the router scores */
} ds3_replay_outputs;

/* Layer `layer` (0..L-1 a main layer, L+k the block of MTP depth k) at
 * positions 0..T-1 (T <= the state's max_seq), attention over all T rows of
 * in->in. Uses the state's kernels, attention form and emulation. The state's
 * caches hold no sequence afterwards (the next ds3_forward starts at 0). */
ds3_status ds3_replay_layer(ds3_state *s, int layer, int T, const ds3_replay_inputs *in,
                            ds3_replay_outputs *out);

/* ---- results in memory, for bindings (the Python package) ------------------ */

/*
 * Everything below returns malloc'd memory through its out-parameters: release
 * it with ds3_free (plain free() works too; ds3_free spares a binding from
 * finding the C library that allocated it).
 */
void ds3_free(void *p);

/* ds3_dump_write's file, as bytes: *buf gets the safetensors image (*len
 * bytes) instead of a path. Capturing stops whether or not it succeeds. */
ds3_status ds3_dump_write_mem(ds3_state *s, const char *const *metadata_kv, void **buf, size_t *len);

/* ds3_model_describe / ds3_config_describe into a NUL-terminated string. */
ds3_status ds3_model_describe_str(const ds3_model *m, char **text);
ds3_status ds3_config_describe_str(const char *name_or_path, char **text);
/* The model's config as config.json text, HF's defaults filled in (what
 * ds3 mkmodel writes; the loaded model's view of its config). */
ds3_status ds3_model_config_json(const ds3_model *m, char **json);

/* What `ds3 compare` takes (docs/COMPARING.md). Zeroed: profile fp32, the
 * profile's bounds, every tensor, routing-divergent rows left out. */
typedef struct {
    const char *profile;  /* "fp32" (also NULL), "bf16", "fp8" */
    int elementwise;      /* non-zero: |t-r| <= atol + rtol*|r| per element replaces the scaled bound */
    double atol, rtol;    /* finite, >= 0 */
    const char *names;    /* --names globs ("layers.*,!mtp.*"); NULL or "": all */
    int all_rows;         /* non-zero: --all-rows */
} ds3_compare_opts;

/* ds3 compare on two safetensors images in memory (ref[0..ref_len),
 * test[0..test_len), named in the report by the labels, NULL: "REF"/"TEST").
 * *pass gets 1 when the comparison passes (ds3 compare's exit status 0);
 * *table the text ds3 compare prints, *json its --json object (each may be
 * NULL when not wanted). A malformed image is DS3_ERR_IO/FORMAT with REF: or
 * TEST: before the message; an unknown profile or a bad tolerance DS3_ERR_ARG. */
ds3_status ds3_compare_mem(const void *ref, size_t ref_len, const char *ref_label, const void *test, size_t test_len,
                           const char *test_label, const ds3_compare_opts *opts, int *pass, char **table,
                           char **json);

/* What `ds3 replay` takes (docs/COMPARING.md, "Replay"). Zeroed: the fp32
 * replay profile, routing chosen from BUILD. The labels only name things in
 * the report. */
typedef struct {
    const char *profile;      /* replay profiles: "fp32" (also NULL), "bf16", "fp8" */
    int elementwise;          /* non-zero: |t-r| <= atol + rtol*|r| per element replaces the scaled bound */
    double atol, rtol;        /* finite, >= 0 */
    int routing;              /* 0: BUILD's experts when it has topk_idx, else ds3's; 1: BUILD's; 2: ds3's */
    const char *build_label;  /* BUILD in the report (NULL: "BUILD") */
    const char *model_label;  /* the model in the table's first line (NULL: "the model") */
    const char *tokens_from;  /* where the tokens came from ("--tokens", "BUILD's metadata") */
} ds3_replay_opts;

/* ds3 replay on a build's dump held in memory (a safetensors image): every
 * layer recomputed by ds3 from BUILD's own inputs, on the state s (max_seq >=
 * T; its kernels, attention form and emulation are used), then compared with
 * BUILD's values. tokens[T] are the ids BUILD ran. *pass, *table (the text
 * `ds3 replay` prints) and *json (its --json object) as ds3_compare_mem. */
ds3_status ds3_replay_mem(ds3_state *s, const void *build, size_t len, const ds3_replay_opts *opts,
                          const int32_t *tokens, int T, int *pass, char **table, char **json);

#ifdef __cplusplus
}
#endif
#endif /* DS3_H */

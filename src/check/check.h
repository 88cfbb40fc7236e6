/*
 * check.h — checking numerics (src/check/): named activation dumps, the
 * emulation of a GPU build's rounding, and the comparison of two dumps. Not
 * API: the model, the CLI and the tests include it.
 *
 *   dump.c      the dumper: rows of named tensors, written as safetensors
 *   emulate.c   rounding where a bf16 / FP8 GPU build rounds (--emulate)
 *   compare.c   two dumps, tensor by tensor (ds3 compare)
 *   report.c    a comparison as the table and JSON ds3 compare prints;
 *               ds3_compare_mem (ds3.h) for bindings
 */
#ifndef DS3_CHECK_H
#define DS3_CHECK_H

#include "io/io.h"

/* ========================================================================== */
/* dump.c — named activations for positions [0, total)                         */
/* ========================================================================== */

typedef struct ds3_dumper ds3_dumper;
ds3_dumper *ds3_dumper_new(int total);
void ds3_dumper_free(ds3_dumper *d);
/* Store rows [row0, row0+nrows) of tensor `name` with per-row shape inner[ninner]. */
void ds3_dump_rows(ds3_dumper *d, const char *name, ds3_dtype dt, int ninner, const int64_t *inner,
                   int row0, int nrows, const void *data);
ds3_status ds3_dumper_write(ds3_dumper *d, const char *path, const char *const *metadata_kv);
/* The same file's bytes into *buf (malloc'd, *len bytes) instead of a path. */
ds3_status ds3_dumper_write_mem(ds3_dumper *d, const char *const *metadata_kv, void **buf, size_t *len);
/* A tensor compared already and not kept (ds3 replay's logits without -o):
 * its name and shape take their place in the view, with no data (the
 * comparison gets its result from ds3_cmp_opts.done); such a dumper cannot
 * be written. */
void ds3_dump_compared(ds3_dumper *d, const char *name, ds3_dtype dt, int ninner, const int64_t *inner);
/* The captured tensors as an opened file, without writing one: the entries
 * point into the dumper (valid while it lives and captures nothing more); no
 * metadata. Free with ds3_dumper_view_free, never ds3_st_close. */
ds3_status ds3_dumper_view(const ds3_dumper *d, ds3_st_file **out);
void ds3_dumper_view_free(ds3_st_file *f);
/* The `ds3_shards` metadata value (copied): the files the weights came from. */
ds3_status ds3_dumper_set_shards(ds3_dumper *d, const char *json);

/* ========================================================================== */
/* emulate.c — GPU rounding points (docs/MODEL.md §7, docs/COMPARING.md)       */
/* ========================================================================== */
/*
 * A ds3_emul says which rounding points (DS3_EMUL_* in ds3.h) are on; NULL
 * means none. Every function here is exactly the plain computation when its
 * point is off, so the model calls them unconditionally (through
 * src/model/ops.c) and keeps its bits when emulation is off.
 */
typedef struct ds3_emul ds3_emul;

/* From a parsed ds3_emulation (ds3.h); NULL with DS3_EMULATE_NONE. */
ds3_status ds3_emul_new(const ds3_emulation *spec, ds3_emul **out);
void ds3_emul_free(ds3_emul *e);
/* Free this thread's (team's) emulation scratch (regrown on the next call). */
void ds3_emul_release(void);

/* Is rounding point `point` on? (false for e == NULL) */
bool ds3_emul_has(const ds3_emul *e, unsigned point);
/* Round x[n] to bf16 in place if `point` is on. */
void ds3_emul_round(const ds3_emul *e, ds3_real *x, size_t n, unsigned point);
/* a + b, or with `point` on bf16(bf16(a) + bf16(b)): the sum of two bf16
 * matmul results (the absorbed attention's two score einsums). */
ds3_real ds3_emul_add(const ds3_emul *e, ds3_real a, ds3_real b, unsigned point);
/* out = in · wᵀ as the build computes it: FP8 input quantisation (actquant),
 * weights held as bf16 (weights), the output rounded at `point` (DS3_EMUL_LINEAR
 * for projections; DS3_EMUL_ROUTER for the router, never FP8-quantised). */
void ds3_emul_linear(const ds3_emul *e, ds3_kernels k, ds3_real *out, const ds3_real *in, const ds3_tensor *w,
                     int T, unsigned point);
/* Weights dequantised outside a linear (absorbed MLA's kv_b_proj): to bf16
 * unless stored as BF16. */
void ds3_emul_weights(const ds3_emul *e, ds3_real *w, size_t n, ds3_dtype stored);
/* RMSNorm with the norm point's two roundings (only called with it on). */
void ds3_emul_rmsnorm(const ds3_emul *e, ds3_real *out, const ds3_real *x, const ds3_real *w, int n, double eps);
/* RoPE as transformers computes it in bf16 (DS3_EMUL_ROPE_BF16 only). */
void ds3_emul_rope(ds3_real *x, const double *freqs, double attn_factor, int Dr, int pos);
/* The router's weights w[K] recomputed from scores[idx[k]] as the official
 * bf16 Gate does (router point); nothing when the point is off. */
void ds3_emul_router_weights(const ds3_emul *e, ds3_real *w, const ds3_real *scores, const int32_t *idx, int K,
                             bool sigmoid, bool norm_topk_prob, double routed_scaling_factor);
/* The order in which the MoE combine adds a token's K expert outputs: k order
 * (0..K-1), or with the combine point ascending expert index, as the
 * reference loops over experts. order[K]. */
void ds3_emul_combine_order(const ds3_emul *e, int32_t *order, const int32_t *idx, int K);

/* ========================================================================== */
/* compare.c — two dumps, tensor by tensor (what `ds3 compare` decides)        */
/* ========================================================================== */
/*
 * Two dumps are matched by name (docs/DUMP_FORMAT.md); each pair must have
 * the same shape, and any dtype the dumps may hold (F32, F64, BF16, F16, and
 * I32/I64 for indices) is read as double. Per kind of tensor:
 *
 *   float   max |t-r|, max |t-r|/|r|, max |t-r| / max|r| ("scaled"), cosine
 *           similarity, NMSE = Σ(t-r)² / Σr², and the worst element;
 *           NaN/Inf positions must be equal (tests/harness.h's rule);
 *   index   layers.N.moe.topk_idx: each row's K experts as a set, and the
 *           share of rows whose sets are equal; topk_weight is compared
 *           after pairing the weights by expert, on the rows whose sets agree;
 *   logits  also the share of rows with the same argmax and the mean overlap
 *           of the top-5 sets.
 *
 * Routing divergence: once two builds choose different experts for a row (a
 * near-tie that rounding tips the other way), that row's later activations
 * differ by the difference between two experts, not by rounding. Such rows are
 * counted against the routing threshold where they first diverge and left out
 * of the statistics of every tensor downstream (later layers, the final norm,
 * logits, MTP), so that those measure precision; all_rows keeps them in.
 *
 * A profile (fp32, bf16, fp8) sets the thresholds; docs/COMPARING.md says
 * where each number was measured and what each profile catches. With explicit
 * atol/rtol, the scaled bound is replaced by the elementwise rule of
 * tests/harness.h: |t - r| <= atol + rtol·|r| for every element.
 */

typedef struct {
    const char *name;      /* "fp32", "bf16", "fp8" */
    const char *what;      /* one line: the build this profile is for */
    double max_scaled;     /* float tensors: max|t-r| <= max_scaled · max|r| */
    double min_cos;        /* float tensors: cosine similarity >= */
    double max_nmse;       /* float tensors: NMSE <= */
    double min_idx_rows;   /* topk_idx: share of rows with the same expert set >= */
    double min_idx_overlap;/* topk_idx: mean share of a row's K experts both chose >= */
    double min_argmax;     /* logits: share of rows with the same argmax >= */
    double min_top5;       /* logits: mean |top5(t) ∩ top5(r)| / 5 >= */
} ds3_cmp_profile;

/* The built-in profiles, NULL-terminated list and lookup by name (NULL if unknown). */
extern const ds3_cmp_profile *const ds3_cmp_profiles[];
const ds3_cmp_profile *ds3_cmp_profile_find(const char *name);
/* The replay's profiles (ds3 replay: one layer's error, not the sum of all
 * before it), the same names. */
extern const ds3_cmp_profile *const ds3_cmp_replay_profiles[];
const ds3_cmp_profile *ds3_cmp_replay_profile_find(const char *name);

typedef enum { DS3_CMP_FLOAT = 0, DS3_CMP_INDEX, DS3_CMP_INT } ds3_cmp_kind;

/* The outcome for one tensor. */
typedef struct {
    char name[192];
    ds3_cmp_kind kind;
    int ndim;
    int64_t shape[8];
    long n;                /* elements */
    bool ok;
    char why[256];         /* first reason it failed, "" if ok */

    /* float (and the weights of an index pair) */
    double max_abs;        /* over finite pairs */
    double max_rel;        /* over finite pairs with r != 0 */
    double max_ref;        /* max |r| over finite r */
    double scaled;         /* max_abs / max_ref (max_abs if max_ref == 0) */
    double cos;            /* over finite pairs; 1 when both are all zero */
    double nmse;           /* over finite pairs; 0 when both are all zero */
    long worst;            /* flat index of the worst element (largest |t-r| / bound), -1 if none */
    double worst_got, worst_ref;
    long n_bad;            /* elements outside the elementwise bound */
    long n_nonfinite;      /* positions where t and r are not the same non-finite value */

    /* index tensors: rows whose K-sets agree (of `rows` compared) */
    long rows, rows_same;
    double overlap;        /* mean over those rows of |set(t) ∩ set(r)| / K */
    /* rows left out because the routing differed upstream (see ds3_cmp_opts.all_rows) */
    long rows_excluded;
    /* every row was left out (routing differed upstream, or, for topk_weight,
       no row has the same expert set) and nothing else failed: no value was
       compared, which is no pass (ok = false) */
    bool nothing_compared;

    /* logits */
    long argmax_same;      /* rows with the same argmax (ties to the lowest index) */
    long argmax_near_tie;  /* of the differing rows: those where r's two candidates are within the bound */
    double top5;           /* mean overlap of the top-5 sets, 0..1 */
} ds3_cmp_result;

typedef struct {
    const ds3_cmp_profile *profile;  /* never NULL */
    bool elementwise;                /* atol/rtol given: they replace profile->max_scaled */
    double atol, rtol;
    const char *names;               /* comma-separated globs, "!GLOB" excludes; NULL = all */
    bool all_rows;                   /* false (default): a row whose experts differ in some MoE
                                        layer is left out of every tensor downstream of it */
    /* ds3 replay (REF the replay, TEST the build): */
    bool weights_at_test_idx;        /* REF's topk_weight are the weights of TEST's experts, in
                                        TEST's order: compared row by row, every row */
    bool ignore_test_only;           /* a tensor only in TEST is not "missing" (the replay
                                        reports the layers it could not check itself) */
    const ds3_cmp_result *done;      /* [n_done] results made already by ds3_cmp_entry (the
                                        replay's logits, compared while at hand): a REF entry of
                                        such a name takes its result, its data is never read */
    int n_done;
} ds3_cmp_opts;

typedef struct {
    int n;
    ds3_cmp_result *r;               /* [n], in REF's order */
    int n_missing;
    char **missing;                  /* [n_missing] "NAME (only in REF)" / "(only in TEST)" */
    char tokens_note[256];           /* token sequences of the two dumps: a mismatch fails */
    bool tokens_differ;
    int n_fail;                      /* tensors outside the thresholds */
    bool ok;                         /* every tensor within, nothing missing, same tokens */
} ds3_cmp_report;

/* Does `name` pass the --names filter (NULL or "" passes everything)? */
bool ds3_cmp_name_selected(const char *names, const char *name);

/* Values of a dump entry as doubles (F32, F64, BF16, F16, F8_E4M3, I32, I64,
 * U8). malloc'd; *n gets the element count. NULL (with ds3_last_error) on an
 * allocation failure. */
double *ds3_cmp_read(const ds3_st_entry *e, long *n);

/* The statistics of float tensors and the elementwise bound
 * |t - r| <= atol + rtol·|r| (non-finite values must match exactly). Fills
 * the float fields of r and sets r->ok from n_bad and n_nonfinite only. */
void ds3_cmp_floats(ds3_cmp_result *r, const double *got, const double *ref, long n, double atol,
                    double rtol);

/* Compare every selected tensor of two opened dumps. Fills *out (free with
 * ds3_cmp_report_free). Fails only on allocation errors. */
ds3_status ds3_cmp_files(const ds3_st_file *ref, const ds3_st_file *test, const ds3_cmp_opts *o,
                         ds3_cmp_report *out);
void ds3_cmp_report_free(ds3_cmp_report *rep);
/* One float tensor (not a routing one) compared as ds3_cmp_files compares
 * it with o->all_rows set: *r is the result it would put in its report, so
 * a caller that holds a tensor only for a moment (ds3 replay's logits) can
 * compare it then and pass the result on in o->done. TEST's entry te is the
 * one of the same name. Fails only on allocation errors. */
ds3_status ds3_cmp_entry(ds3_cmp_result *r, const ds3_st_entry *re, const ds3_st_entry *te, const ds3_cmp_opts *o);

/* ========================================================================== */
/* report.c — the report as text (ds3 compare, ds3 replay, ds3_compare_mem)    */
/* ========================================================================== */

/* The header and one line per tensor, then the missing names; no summary. */
void ds3_cmp_print_table(FILE *f, const ds3_cmp_report *rep, const ds3_cmp_opts *o, const char *ref_path,
                         const char *test_path);
/* The closing lines: counts, then PASS or FAIL. */
void ds3_cmp_print_summary(FILE *f, const ds3_cmp_report *rep);
/* The report as a cJSON object (the caller may add keys; cJSON_Delete it), NULL
 * if out of memory. */
struct cJSON *ds3_cmp_json(const ds3_cmp_report *rep, const ds3_cmp_opts *o, const char *ref_path,
                           const char *test_path);

/* A report as a malloc'd string (ds3_compare_mem, ds3_replay_mem): open a
 * memory stream, print into t.f (the table, or ds3_text_json's object), then
 * ds3_text_close. `what` names the caller in messages ("compare", "replay"). */
typedef struct {
    FILE *f;
    char *buf;
    size_t len;
    const char *what;
} ds3_text;
ds3_status ds3_text_open(ds3_text *t, const char *what);
/* Print a cJSON object and a newline into t (root is deleted; NULL: out of memory). */
ds3_status ds3_text_json(ds3_text *t, struct cJSON *root);
/* Close t; st is the status so far: DS3_OK puts the string in *out, anything
 * else frees it and is returned. */
ds3_status ds3_text_close(ds3_text *t, ds3_status st, char **out);

#endif /* DS3_CHECK_H */

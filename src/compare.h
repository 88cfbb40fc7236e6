/*
 * compare.h — comparing two activation dumps tensor by tensor: what
 * `ds3 compare` prints and decides, and what tests/test_compare.c checks.
 * Not API (like internal.h): the CLI and the tests include it.
 *
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
#ifndef DS3_COMPARE_H
#define DS3_COMPARE_H

#include "internal.h"

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

#endif /* DS3_COMPARE_H */

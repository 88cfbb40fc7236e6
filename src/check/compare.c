/*
 * compare.c — two activation dumps, tensor by tensor (compare.h; the CLI is
 * cli/compare.c, the workflow docs/COMPARING.md).
 *
 * The point is to say precisely where a GPU build departs from the reference
 * and by how much, with statistics that mean the same for any tensor size and
 * scale:
 *   - max |t-r| and the element where the bound is most exceeded (what a
 *     kernel developer looks at first);
 *   - max |t-r| / max|r|, "scaled": the error in units of the tensor's own
 *     magnitude, the quantity the profiles bound (a relative error per element
 *     is meaningless where r crosses zero, which every activation does);
 *   - cosine similarity and NMSE = Σ(t-r)²/Σr²: the error spread over the
 *     whole tensor, which separates a few bad elements from a uniform drift;
 *   - for routing indices, set agreement per row (the order of equal-score
 *     experts is an implementation detail; the set is the computation), and
 *     the weights paired by expert;
 *   - for logits, what a user sees: the same next token (argmax) and the same
 *     top-5 candidates.
 * Non-finite values must sit at the same positions with the same value (NaN
 * with NaN, +Inf with +Inf), as in tests/harness.h: a NaN is never "close".
 *
 * The profiles below are to be measurements with a margin, not guesses; where
 * each number comes from is docs/COMPARING.md ("Profiles").
 */
#include "check/check.h"

#include <fnmatch.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ========================================================================== */
/* Profiles                                                                    */
/* ========================================================================== */

/*
 * Measured (tools/measure_profiles.py; the tables are in docs/COMPARING.md,
 * "Profiles"): ds3 dump (plain fp32, absorbed attention) as REF against, as
 * TEST, transformers on the CPU — float32 for fp32, bfloat16 for bf16,
 * bfloat16 with the official w8a8 FP8 activation path for fp8 — on the
 * synthetic checkpoints tiny-f32, tiny-bf16, tiny-fp8, tiny-v2, tiny-negbias
 * and two more seeds (21 cases), and ds3 --emulate bf16 / fp8 standing in for
 * the build on small-fp8 (3 cases; too large for transformers' float64 loader
 * here); prompts of 12, 32 and 64 tokens, every tensor of the dump, MTP
 * included. Each bound is the worst value measured with 50% headroom: errors
 * times 1.5, shortfalls from 1 (1 - cos, 1 - a share) times 1.5, rounded
 * outwards to two digits. The worst values, in the order of the fields:
 *   fp32  1.92e-6, 1 - 1.1e-12, 2.54e-12, 1, 1, 1, 1
 *   bf16  0.1735, 0.98948, 0.0211, 0.27, 0.852, 0.6, 0.8
 *   fp8   0.334, 0.94651, 0.109, 0 (0 of 5 rows), 0.8, 0.6, 0.6
 * The exact-set share of routing rows is no test for bf16 and fp8 (their
 * measured minimum is near 0 on these synthetic routers, which are full of
 * near ties); the mean expert overlap is.
 */

static const ds3_cmp_profile profile_fp32 = {
    "fp32", "a float32 build (weights dequantised exactly, fp32 activations and accumulation)",
    3e-6, 0.999999999998, 4e-12, 1.0, 1.0, 1.0, 1.0,
};
static const ds3_cmp_profile profile_bf16 = {
    "bf16", "a bfloat16 build (bf16 activations and residual stream, fp32 accumulation)",
    0.27, 0.984, 0.032, 0.0, 0.77, 0.4, 0.7,
};
static const ds3_cmp_profile profile_fp8 = {
    "fp8", "an FP8 w8a8 build (bf16 activations, e4m3 GEMM inputs with per-128 scales)",
    0.51, 0.919, 0.17, 0.0, 0.7, 0.4, 0.4,
};

const ds3_cmp_profile *const ds3_cmp_profiles[] = {&profile_fp32, &profile_bf16, &profile_fp8, NULL};

const ds3_cmp_profile *ds3_cmp_profile_find(const char *name) {
    for (int i = 0; ds3_cmp_profiles[i]; i++)
        if (strcmp(ds3_cmp_profiles[i]->name, name) == 0) return ds3_cmp_profiles[i];
    return NULL;
}

/*
 * Replay profiles (ds3 replay): each tensor is one layer's error from the
 * build's own inputs, so they are far tighter than the ones above. Measured
 * with `tools/measure_profiles.py --replay` and the ref_data goldens
 * (docs/COMPARING.md, "Replay profiles"): ds3 replay (plain fp32) against
 *   bf16  transformers in bfloat16 (ref_data/emulate, tiny-bf16, 12 tokens)
 *         and ds3 --emulate bf16 on tiny-f32, -bf16, -fp8, -v2, -negbias,
 *         prompts of 12, 32, 64 tokens (16 cases);
 *   fp8   transformers bf16 + the w8a8 FP8 path (ref_data/emulate, tiny-fp8)
 *         and ds3 --emulate fp8 on tiny-fp8, 3 prompts (4 cases).
 * Worst values, in the order of the fields:
 *   bf16  0.013095, 1 - 4.41e-5, 8.97e-5, 0.75, 0.953125, 0.9032, 0.98125
 *   fp8   0.066106, 1 - 1.902e-3, 3.816e-3, 0.6667, 0.947917, 0.9841, 0.9875
 * with the same 50% headroom as above. fp32 keeps the end-to-end bounds
 * (measured against transformers in float32, which bound one layer's error
 * too): one layer's worst is 9.1e-7 scaled against transformers in float32
 * (tiny-f32 x 3 prompts, tiny-bf16 x 1) and 7.4e-7 against the float64
 * oracle (ref_data/tiny-*.safetensors, 6 checkpoints), NMSE <= 2.9e-13,
 * every router set the same: 3.3x inside the bound.
 */
static const ds3_cmp_profile replay_fp32 = {
    "fp32", "a float32 build, one layer at a time (the end-to-end fp32 bounds)",
    3e-6, 0.999999999998, 4e-12, 1.0, 1.0, 1.0, 1.0,
};
static const ds3_cmp_profile replay_bf16 = {
    "bf16", "a bfloat16 build, one layer at a time", 0.020, 0.999934, 1.4e-4, 0.62, 0.92, 0.85, 0.97,
};
static const ds3_cmp_profile replay_fp8 = {
    "fp8", "an FP8 w8a8 build, one layer at a time", 0.10, 0.9971, 0.0058, 0.5, 0.92, 0.97, 0.98,
};

const ds3_cmp_profile *const ds3_cmp_replay_profiles[] = {&replay_fp32, &replay_bf16, &replay_fp8, NULL};

const ds3_cmp_profile *ds3_cmp_replay_profile_find(const char *name) {
    for (int i = 0; ds3_cmp_replay_profiles[i]; i++)
        if (strcmp(ds3_cmp_replay_profiles[i]->name, name) == 0) return ds3_cmp_replay_profiles[i];
    return NULL;
}

/* ========================================================================== */
/* Reading                                                                     */
/* ========================================================================== */

/* Values [off, off + cnt) of an entry as doubles into dst: one loop per
 * dtype (the switch hoisted out: dumps hold millions of values). */
static void read_into(double *v, const ds3_st_entry *e, long off, long cnt) {
    const unsigned char *p = (const unsigned char *)e->data + (size_t)off * ds3_dtype_size(e->dtype);
    switch (e->dtype) {
    case DS3_DT_F64: memcpy(v, p, sizeof(double) * (size_t)cnt); break;
    case DS3_DT_F32: for (long i = 0; i < cnt; i++) { float f; memcpy(&f, p + 4 * i, 4); v[i] = f; } break;
    case DS3_DT_BF16: for (long i = 0; i < cnt; i++) { uint16_t h; memcpy(&h, p + 2 * i, 2); v[i] = ds3_bf16_to_f32(h); } break;
    case DS3_DT_F16: for (long i = 0; i < cnt; i++) { uint16_t h; memcpy(&h, p + 2 * i, 2); v[i] = ds3_f16_to_f32(h); } break;
    case DS3_DT_F8_E4M3: for (long i = 0; i < cnt; i++) v[i] = ds3_e4m3_to_f32(p[i]); break;
    case DS3_DT_I32: for (long i = 0; i < cnt; i++) { int32_t k; memcpy(&k, p + 4 * i, 4); v[i] = k; } break;
    case DS3_DT_I64: for (long i = 0; i < cnt; i++) { int64_t k; memcpy(&k, p + 8 * i, 8); v[i] = (double)k; } break;
    case DS3_DT_U8: for (long i = 0; i < cnt; i++) v[i] = p[i]; break;
    default: for (long i = 0; i < cnt; i++) v[i] = NAN; break;
    }
}

/* The dtypes a float holds exactly: a tensor pair of these is compared from
 * floats (compare_rows), F32 read in place. */
static bool in_float(ds3_dtype dt) {
    return dt == DS3_DT_F32 || dt == DS3_DT_BF16 || dt == DS3_DT_F16 || dt == DS3_DT_F8_E4M3;
}

/* Values [off, off + cnt) of an entry of such a dtype as floats into v. */
static void read_floats(float *v, const ds3_st_entry *e, long off, long cnt) {
    const unsigned char *p = (const unsigned char *)e->data + (size_t)off * ds3_dtype_size(e->dtype);
    switch (e->dtype) {
    case DS3_DT_F32: memcpy(v, p, sizeof(float) * (size_t)cnt); break;
    case DS3_DT_BF16: for (long i = 0; i < cnt; i++) { uint16_t h; memcpy(&h, p + 2 * i, 2); v[i] = ds3_bf16_to_f32(h); } break;
    case DS3_DT_F16: for (long i = 0; i < cnt; i++) { uint16_t h; memcpy(&h, p + 2 * i, 2); v[i] = ds3_f16_to_f32(h); } break;
    case DS3_DT_F8_E4M3: for (long i = 0; i < cnt; i++) v[i] = ds3_e4m3_to_f32(p[i]); break;
    default: DS3_ASSERT(in_float(e->dtype)); break;
    }
}

/* Values [off, off + cnt) of an entry as floats (f32) or doubles: in place
 * when the entry holds that type already (aligned), else converted into buf. */
static const void *block_of(void *buf, const ds3_st_entry *e, bool f32, long off, long cnt) {
    const unsigned char *p = (const unsigned char *)e->data + (size_t)off * ds3_dtype_size(e->dtype);
    if (e->dtype == (f32 ? DS3_DT_F32 : DS3_DT_F64) && (uintptr_t)p % (f32 ? _Alignof(float) : _Alignof(double)) == 0)
        return p;
    if (f32) read_floats(buf, e, off, cnt);
    else read_into(buf, e, off, cnt);
    return buf;
}

double *ds3_cmp_read(const ds3_st_entry *e, long *n) {
    long cnt = 1;
    for (int i = 0; i < e->ndim; i++) cnt *= (long)e->shape[i];
    *n = cnt;
    double *v = ds3_malloc(sizeof(double) * (size_t)(cnt ? cnt : 1));
    if (v) read_into(v, e, 0, cnt);
    return v;
}

static bool is_int_dtype(ds3_dtype dt) { return dt == DS3_DT_I32 || dt == DS3_DT_I64 || dt == DS3_DT_U8; }

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

bool ds3_cmp_name_selected(const char *names, const char *name) {
    if (!names || !names[0]) return true;
    bool any_positive = false, included = false;
    const char *p = names;
    while (*p) {
        const char *q = strchr(p, ',');
        size_t len = q ? (size_t)(q - p) : strlen(p);
        char glob[256];
        if (len >= sizeof glob) len = sizeof glob - 1;
        memcpy(glob, p, len);
        glob[len] = '\0';
        if (glob[0] == '!') {
            if (fnmatch(glob + 1, name, 0) == 0) return false;  /* an exclusion wins */
        } else if (glob[0]) {
            any_positive = true;
            if (fnmatch(glob, name, 0) == 0) included = true;
        }
        if (!q) break;
        p = q + 1;
    }
    return included || !any_positive;
}

/* ========================================================================== */
/* Statistics                                                                  */
/* ========================================================================== */

/*
 * The statistics accumulate over pieces (a tensor is compared a block of rows
 * at a time, compare_rows below): acc_add takes the elements [base, base + n)
 * in order, so every sum is formed in index order as in one pass, and the
 * result is the same for any block size.
 */
typedef struct {
    double worst_ratio, d_worst, dot, gg, rr, dd;
} cmp_acc;

static void acc_begin(ds3_cmp_result *r, cmp_acc *a) {
    r->max_abs = r->max_rel = r->max_ref = 0;
    r->worst = -1;
    r->worst_got = r->worst_ref = 0;
    r->n_bad = r->n_nonfinite = 0;
    *a = (cmp_acc){-1, -1, 0, 0, 0, 0};
}

/*
 * The hot loops below are written once for both element types: `f32` says
 * whether a block holds floats (the dtypes a float holds exactly: F32 in
 * place, BF16, F16, E4M3 converted) or doubles (F64, integers). SPECIALISED
 * inlines a loop into each caller, where f32 is a constant, so each caller
 * gets a loop of its own type and the running values stay in registers.
 * Every computation is on doubles either way (a float converts exactly), so
 * the results do not depend on the path.
 */
#define SPECIALISED static inline __attribute__((always_inline))

SPECIALISED double at(const void *v, long i, bool f32) {
    return f32 ? (double)((const float *)v)[i] : ((const double *)v)[i];
}

/* Is any of v[i, i + CHUNK) above x (never a NaN), or with `absolute` any
 * finite |v[j]| above x? For the loops that look for the rare element above
 * a running maximum: a loop of known length over one type, which gcc and
 * clang turn into vector compares at -O2. x is a value of v (or 0), so a
 * float when v holds floats, and the float compare is the double one. */
enum { CHUNK = 32 };
SPECIALISED bool any_above(const void *v, long i, bool f32, bool absolute, double x) {
    int any = 0;
    if (f32) {
        const float *p = (const float *)v + i, xf = (float)x;
        for (int j = 0; j < CHUNK; j++) {
            const float y = absolute ? fabsf(p[j]) : p[j];
            any |= (y > xf) & (!absolute || y <= FLT_MAX);
        }
    } else {
        const double *p = (const double *)v + i;
        for (int j = 0; j < CHUNK; j++) {
            const double y = absolute ? fabs(p[j]) : p[j];
            any |= (y > x) & (!absolute || y <= DBL_MAX);
        }
    }
    return any;
}

/*
 * The loop over the elements. Most elements of a large comparison change
 * nothing but the four sums (dot, gg, rr, dd), and the loop is built so that
 * those cost little more than the sums: a test lets an element through to
 * the sums alone only where none of the full steps could change a result,
 * so the results are those of the full steps on every element
 * (tests/test_compare.c checks them against tests/harness.h's plain loop).
 *
 * The full steps skip their two divisions in the same way:
 *   - d/|e| > max_rel needs d > max_rel·|e| in exact arithmetic; the product
 *     rounded, shrunk by 2^-50, is below that exact value while it is a
 *     normal number (relative error < 2^-52 twice), so the division is
 *     skipped only where d is at most that, or where the product is not
 *     normal enough for the argument (below 2^-960: divide);
 *   - with a bound that is the same for every element (rtol = 0: the
 *     profiles), d/bound rounds monotonically in d, so an element needs the
 *     division only if d > bound (it may be outside) or d exceeds the d of
 *     the worst element so far (it may be the new worst). Equal d gives an
 *     equal ratio, which never replaces the earlier element.
 *
 * With one bound for all, an element goes to the sums alone where
 *   d <= lim = min(max_abs, atol, d_worst): no new max_abs, within the bound,
 *     no new worst; lim is also at most DBL_MAX, so g and e are finite;
 *   |e| <= max_ref: no new max_ref;
 *   |e| >= a_rel, the least |e| at which max_rel·|e| > max_abs >= d in exact
 *     arithmetic (a_rel = max_abs/max_rel rounded up by 2^-48: the quotient
 *     and the product are each within 2^-53 of exact; at least 2^-1000, so
 *     a quotient that is not a normal number still errs upwards): d/|e| <
 *     max_rel, so no new max_rel. With max_rel = 0: a_rel = 0 while max_abs
 *     = 0 (d <= lim <= max_abs keeps d = 0), else +Inf (no element passes:
 *     an error at e = 0, or a quotient below the least double, leaves
 *     max_rel at 0 but not max_abs).
 * With rtol > 0, lim = -1: every element takes the full steps.
 *
 * Floats are tested a chunk at a time first, in float arithmetic (a vector
 * compare): |g - e| rounded to float <= lim_f, the float below the largest
 * float <= lim, gives |g - e| < that largest float, so d <= lim (at lim_f = 0,
 * |g - e| rounds to 0 only when g = e: a difference of floats that small is
 * exact); |e| <= max_ref_f, the largest float <= max_ref, and |e| >= a_rel_f,
 * the least float >= a_rel. So a chunk passes only if each of its elements
 * would (in IEEE defaults: ds3_cmp_files sets them).
 */
typedef struct {
    double lim, max_ref, a_rel;
    float lim_f, max_ref_f, a_rel_f;
    double from[4];  /* the max_abs, max_ref, max_rel and d_worst it was made from */
} acc_screen;

static float float_down(double x) {  /* the largest float <= x (x not NaN) */
    float f = (float)x;
    return (double)f > x ? nextafterf(f, -INFINITY) : f;
}

static float float_up(double x) {  /* the least float >= x (x not NaN) */
    float f = (float)x;
    return (double)f < x ? nextafterf(f, INFINITY) : f;
}

/* The screen from the running values (no NaN among them). */
static void screen_make(acc_screen *c, bool flat, double atol, double max_abs, double max_ref, double max_rel,
                        double d_worst) {
#define MIN(x, y) ((y) < (x) ? (y) : (x))
    c->lim = flat ? MIN(MIN(max_abs, atol), MIN(d_worst, DBL_MAX)) : -1;
    c->max_ref = max_ref;
    c->a_rel = max_rel > 0 ? -MIN(-max_abs / max_rel * (1 + 0x1p-48), -0x1p-1000) : max_abs > 0 ? INFINITY : 0;
#undef MIN
    const float top = float_down(c->lim);
    c->lim_f = top > 0 ? nextafterf(top, 0) : top;
    c->max_ref_f = float_down(max_ref);
    c->a_rel_f = float_up(c->a_rel);
    c->from[0] = max_abs;
    c->from[1] = max_ref;
    c->from[2] = max_rel;
    c->from[3] = d_worst;
}

/* ... made again only when they changed (an element outside the bound
 * usually changes none of them). */
SPECIALISED void screen_update(acc_screen *c, bool flat, double atol, double max_abs, double max_ref,
                               double max_rel, double d_worst) {
    if (max_abs != c->from[0] || max_ref != c->from[1] || max_rel != c->from[2] || d_worst != c->from[3])
        screen_make(c, flat, atol, max_abs, max_ref, max_rel, d_worst);
}

/* Does every element of the chunk of floats at i pass the screen? */
SPECIALISED bool chunk_quiet(const float *got, const float *ref, long i, const acc_screen *c) {
    int out = 0;
    for (int j = 0; j < CHUNK; j++) {
        const float d = fabsf(got[i + j] - ref[i + j]), ae = fabsf(ref[i + j]);
        out |= !(d <= c->lim_f) | !(ae <= c->max_ref_f) | !(ae >= c->a_rel_f);
    }
    return !out;
}

/* The four products of a chunk of floats, in doubles (vector multiplies; the
 * same products as one at a time): g·e, g², e², (g - e)². */
SPECIALISED void chunk_products(double (*restrict p)[CHUNK], const float *got, const float *ref) {
    for (int j = 0; j < CHUNK; j++) {
        const double g = got[j], e = ref[j];
        p[0][j] = g * e;
        p[1][j] = g * g;
        p[2][j] = e * e;
        p[3][j] = (g - e) * (g - e);
    }
}

/* From element i on, the elements that go to the sums alone, added to
 * sum[4] (dot, gg, rr, dd); returns the first that does not (n if none).
 * (The sums run in locals: in the larger loop around this the compiler kept
 * them in memory, a store and a load on each sum's chain.) */
SPECIALISED long sums_run(double *sum, const void *got, const void *ref, bool f32, long i, long n,
                          const acc_screen *c) {
    double dot = sum[0], gg = sum[1], rr = sum[2], dd = sum[3];
    while (i < n) {
        if (f32 && i % CHUNK == 0 && i + CHUNK <= n && chunk_quiet(got, ref, i, c)) {
            double p[4][CHUNK];
            chunk_products(p, (const float *)got + i, (const float *)ref + i);
            for (int j = 0; j < CHUNK; j++) {
                dot += p[0][j];
                gg += p[1][j];
                rr += p[2][j];
                dd += p[3][j];
            }
            i += CHUNK;
            continue;
        }
        /* element by element, to the end of the chunk (doubles: to the end) */
        const long stop = f32 && i - i % CHUNK + CHUNK < n ? i - i % CHUNK + CHUNK : n;
        for (; i < stop; i++) {
            const double g = at(got, i, f32), e = at(ref, i, f32);
            const double d = fabs(g - e), ae = fabs(e);
            if (!(d <= c->lim && ae <= c->max_ref && ae >= c->a_rel)) break;
            dot += g * e;
            gg += g * g;
            rr += e * e;
            dd += (g - e) * (g - e);
        }
        if (i < stop) break;
    }
    sum[0] = dot;
    sum[1] = gg;
    sum[2] = rr;
    sum[3] = dd;
    return i;
}

/* (The running values live in locals: through r they would be stored and
 * reloaded every element, as r might alias got or ref.) */
SPECIALISED void acc_add_as(ds3_cmp_result *r, cmp_acc *a, const void *got, const void *ref, bool f32, long n,
                            long base, double atol, double rtol) {
    double max_abs = r->max_abs, max_ref = r->max_ref, max_rel = r->max_rel, worst_ratio = a->worst_ratio;
    double sum[4] = {a->dot, a->gg, a->rr, a->dd};
    long n_bad = r->n_bad, n_nonfinite = r->n_nonfinite, worst = -1;
    const bool flat = rtol == 0 && atol > 0;  /* one bound for all: the skips above apply */
    /* flat: ratios of finite elements with d <= d_worst cannot beat worst_ratio
     * (-1 before any element; the d of a finite worst; 0 after a matching
     * non-finite pair, whose ratio is 0; +Inf after a mismatching one) */
    double d_worst = a->d_worst;
    acc_screen c;
    screen_make(&c, flat, atol, max_abs, max_ref, max_rel, d_worst);
    for (long i = 0; i < n; i++) {
        double g = at(got, i, f32), e = at(ref, i, f32);
        /* it and the elements after it that go to the sums alone (a run of
         * elements that do not is not sent there one at a time) */
        if (fabs(g - e) <= c.lim && fabs(e) <= c.max_ref && fabs(e) >= c.a_rel) {
            i = sums_run(sum, got, ref, f32, i, n, &c);
            if (i == n) break;
            g = at(got, i, f32);
            e = at(ref, i, f32);
        }
        /* element i: the full steps */
        double ratio;
        if (!isfinite(g) || !isfinite(e)) {
            bool same = (isnan(g) && isnan(e)) || (isinf(g) && isinf(e) && (g > 0) == (e > 0));
            ratio = same ? 0 : INFINITY;
            if (!same) n_nonfinite++;
            if (ratio > 1) n_bad++;
            if (ratio > worst_ratio) {
                worst_ratio = ratio;
                worst = i;
                d_worst = ratio;  /* 0 or +Inf, as the comment above says */
                screen_update(&c, flat, atol, max_abs, max_ref, max_rel, d_worst);
            }
            continue;
        }
        const double d = fabs(g - e), ae = fabs(e);
        if (d > max_abs) max_abs = d;
        if (ae > max_ref) max_ref = ae;
        if (e != 0) {
            const double t = max_rel * ae;
            if (d > t * (1 - 0x1p-50) || t < 0x1p-960)
                if (d / ae > max_rel) max_rel = d / ae;
        }
        sum[0] += g * e;
        sum[1] += g * g;
        sum[2] += e * e;
        sum[3] += (g - e) * (g - e);
        if (flat) {
            if (!(d > atol || d > d_worst)) {
                screen_update(&c, flat, atol, max_abs, max_ref, max_rel, d_worst);
                continue;
            }
            ratio = d / atol;
        } else {
            const double bound = atol + rtol * ae;
            ratio = bound > 0 ? d / bound : (d > 0 ? INFINITY : 0);
        }
        if (ratio > 1) n_bad++;
        if (ratio > worst_ratio) {
            worst_ratio = ratio;
            worst = i;
            d_worst = d;
        }
        if (flat) screen_update(&c, flat, atol, max_abs, max_ref, max_rel, d_worst);
    }
    if (worst >= 0) {
        r->worst = base + worst;
        r->worst_got = at(got, worst, f32);
        r->worst_ref = at(ref, worst, f32);
    }
    r->max_abs = max_abs;
    r->max_ref = max_ref;
    r->max_rel = max_rel;
    r->n_bad = n_bad;
    r->n_nonfinite = n_nonfinite;
    *a = (cmp_acc){worst_ratio, d_worst, sum[0], sum[1], sum[2], sum[3]};
}

/* The loop above for each element type, each a function of its own: inlined
 * into a larger function it lost registers to the code around it. */
__attribute__((noinline)) static void acc_add_f32(ds3_cmp_result *r, cmp_acc *a, const float *got,
                                                  const float *ref, long n, long base, double atol, double rtol) {
    acc_add_as(r, a, got, ref, true, n, base, atol, rtol);
}
__attribute__((noinline)) static void acc_add_f64(ds3_cmp_result *r, cmp_acc *a, const double *got,
                                                  const double *ref, long n, long base, double atol, double rtol) {
    acc_add_as(r, a, got, ref, false, n, base, atol, rtol);
}

static void acc_end(ds3_cmp_result *r, const cmp_acc *a, long n) {
    r->n = n;
    r->scaled = r->max_ref > 0 ? r->max_abs / r->max_ref : r->max_abs;
    if (a->gg == 0 && a->rr == 0) r->cos = 1;
    else if (a->gg == 0 || a->rr == 0) r->cos = 0;
    else r->cos = a->dot / (sqrt(a->gg) * sqrt(a->rr));
    r->nmse = a->rr > 0 ? a->dd / a->rr : (a->dd > 0 ? INFINITY : 0);
    r->ok = r->n_bad == 0 && r->n_nonfinite == 0;
}

void ds3_cmp_floats(ds3_cmp_result *r, const double *got, const double *ref, long n, double atol,
                    double rtol) {
    cmp_acc a;
    acc_begin(r, &a);
    acc_add_f64(r, &a, got, ref, n, 0, atol, rtol);
    acc_end(r, &a, n);
}

/* Sort each row's K indices ascending, carrying w (may be NULL) along. */
static void sort_rows(double *idx, double *w, long rows, long K) {
    for (long r = 0; r < rows; r++) {
        double *a = idx + r * K, *b = w ? w + r * K : NULL;
        for (long i = 1; i < K; i++)
            for (long j = i; j > 0 && a[j - 1] > a[j]; j--) {
                double t = a[j]; a[j] = a[j - 1]; a[j - 1] = t;
                if (b) { t = b[j]; b[j] = b[j - 1]; b[j - 1] = t; }
            }
    }
}

static bool row_equal(const double *a, const double *b, long K) {
    for (long k = 0; k < K; k++)
        if (a[k] != b[k]) return false;
    return true;
}

/* |a ∩ b| of two sorted rows of K distinct ids. */
static long row_common(const double *a, const double *b, long K) {
    long i = 0, j = 0, n = 0;
    while (i < K && j < K) {
        if (a[i] == b[j]) { n++; i++; j++; }
        else if (a[i] < b[j]) i++;
        else j++;
    }
    return n;
}

/* The k largest values of v[n] that are finite or +Inf, their indices in
 * top[k] in descending order, ties to the lowest index (what k successive
 * argmaxes give), in one pass; slots without a value get -1. */
SPECIALISED void top_k(long *top, int k, const void *v, bool f32, long n) {
    int have = 0;
    double low = 0;  /* v[top[k - 1]] once the k slots are full */
    for (long i = 0; i < n; i++) {
        /* full: whole chunks with nothing above the lowest held are passed over */
        if (have == k && i % CHUNK == 0)
            while (i + CHUNK <= n && !any_above(v, i, f32, false, low)) i += CHUNK;
        if (i == n) break;
        const double x = at(v, i, f32);
        /* full: one test leaves out what is not above the lowest held, NaN
         * and -Inf included (no comparison with them is true) */
        if (have == k && !(x > low)) continue;
        if (!isfinite(x) && !(isinf(x) && x > 0)) continue;
        int j = have < k ? have++ : k - 1;
        /* strict >: an equal value already held has the lower index and stays ahead */
        for (; j > 0 && x > at(v, top[j - 1], f32); j--) top[j] = top[j - 1];
        top[j] = i;
        if (have == k) low = at(v, top[k - 1], f32);
    }
    for (int j = have; j < k; j++) top[j] = -1;
}

/* Argmax and top-5 agreement of one row of logits [V], added to r's counts
 * and *overlap (r->top5 is their mean over the rows); `bound` is the
 * per-element error the check allows, used to tell a near-tie from a real
 * flip. */
SPECIALISED void logits_row(ds3_cmp_result *r, double *overlap, const void *g, const void *e, bool f32, long V,
                            double bound) {
    const int k5 = V < 5 ? (int)V : 5;
    long tg[5], te[5];
    top_k(tg, k5, g, f32, V);
    top_k(te, k5, e, f32, V);
    if (k5 > 0 && tg[0] == te[0]) r->argmax_same++;
    else if (k5 > 0 && tg[0] >= 0 && te[0] >= 0 && at(e, te[0], f32) - at(e, tg[0], f32) <= 2 * bound)
        r->argmax_near_tie++;
    int common = 0;
    for (int a = 0; a < k5; a++)
        for (int b = 0; b < k5; b++) common += tg[a] == te[b] && tg[a] >= 0;
    *overlap += k5 ? (double)common / k5 : 1;
}

static void fail(ds3_cmp_result *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(ds3_cmp_result *r, const char *fmt, ...) {
    if (r->ok || !r->why[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->why, sizeof r->why, fmt, ap);
        va_end(ap);
    }
    r->ok = false;
}

static void shape_str(char *buf, size_t size, const int64_t *shape, int ndim) {
    size_t k = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < ndim && k < size; i++)
        k += (size_t)snprintf(buf + k, size - k, "%s%lld", i ? "," : "", (long long)shape[i]);
    if (k < size) snprintf(buf + k, size - k, "]");
}

/* The verdict on float statistics already in r (r->ok from the elementwise
 * bound on entry): the profile's (or atol/rtol's) tests, each failure named. */
static void float_verdict(ds3_cmp_result *r, const ds3_cmp_opts *o) {
    const ds3_cmp_profile *p = o->profile;
    bool elem_ok = r->ok;
    r->ok = true;
    if (r->n_nonfinite) fail(r, "%ld non-finite value(s) (NaN/Inf) where the other dump differs", r->n_nonfinite);
    if (!elem_ok && r->n_bad > r->n_nonfinite) {
        if (o->elementwise)
            fail(r, "%ld element(s) outside atol %.3g + rtol %.3g·|ref|", r->n_bad - r->n_nonfinite, o->atol, o->rtol);
        else
            fail(r, "max|t-r|/max|r| = %.3g > %.3g", r->scaled, p->max_scaled);
    }
    if (!o->elementwise) {
        if (!(r->cos >= p->min_cos)) {
            /* a bound within 1e-6 of 1 prints as 1 in %.9f: give its distance to 1 */
            if (1 - p->min_cos < 1e-6) fail(r, "cosine 1-%.3g < 1-%.3g", 1 - r->cos, 1 - p->min_cos);
            else fail(r, "cosine %.9f < %.9f", r->cos, p->min_cos);
        }
        if (!(r->nmse <= p->max_nmse)) fail(r, "NMSE %.3g > %.3g", r->nmse, p->max_nmse);
    }
}

/* ========================================================================== */
/* Routing divergence: which rows to leave out downstream                      */
/* ========================================================================== */

/*
 * Where a tensor sits in the forward pass, from its name (docs/DUMP_FORMAT.md):
 * group 0 the main layers (layer -1 = embed, 2^30 = norm/logits), group 1
 * MTP depth `layer`, group 2 a name this does not know (downstream of
 * everything). `before` marks what a layer computes before its own routing
 * (attn.out, moe.scores, and the routing tensors themselves; mtp.K.in too).
 */
typedef struct {
    int group, layer;
    bool before;
} stage;

static stage stage_of(const char *name) {
    stage st = {2, 0, false};
    int n = 0, used = 0;
    if (strcmp(name, "embed") == 0) return (stage){0, -1, false};
    if (strcmp(name, "norm") == 0 || strcmp(name, "logits") == 0) return (stage){0, 1 << 30, false};
    bool mtp = sscanf(name, "mtp.%d.%n", &n, &used) == 1 && used > 0;
    if (!mtp && !(sscanf(name, "layers.%d.%n", &n, &used) == 1 && used > 0)) return st;
    const char *rest = name + used;
    st.group = mtp ? 1 : 0;
    st.layer = n;
    st.before = strcmp(rest, "attn.out") == 0 || strcmp(rest, "in") == 0 || strncmp(rest, "moe.", 4) == 0;
    return st;
}

/* Is routing tensor r (a topk_idx) upstream of tensor x? */
static bool upstream(stage r, stage x) {
    if (x.group == 2) return true;
    if (r.group == 0) {
        if (x.group == 1) return true;  /* MTP reads the main model's final hidden state */
        return r.layer < x.layer || (r.layer == x.layer && !x.before);
    }
    return x.group == 1 && (r.layer < x.layer || (r.layer == x.layer && !x.before));
}

typedef struct {
    stage st;
    long rows;
    unsigned char *differs;   /* [rows] 1 where the expert sets differ */
} route_flags;

/* Rows of a tensor at stage x to leave out: those where any upstream routing
 * differs. out[rows] is filled; returns how many are set. */
static long excluded_rows(unsigned char *out, long rows, stage x, const route_flags *rf, int nrf) {
    memset(out, 0, (size_t)rows);
    long n = 0;
    for (int i = 0; i < nrf; i++) {
        if (!upstream(rf[i].st, x)) continue;
        for (long t = 0; t < rows && t < rf[i].rows; t++) out[t] |= rf[i].differs[t];
    }
    for (long t = 0; t < rows; t++) n += out[t];
    return n;
}

/* Drop the rows marked in excl from v [rows][cols] in place; returns rows kept. */
static long keep_rows(double *v, long rows, long cols, const unsigned char *excl) {
    long kept = 0;
    for (long t = 0; t < rows; t++)
        if (!excl[t]) {
            if (kept != t) memmove(v + kept * cols, v + t * cols, sizeof(double) * (size_t)cols);
            kept++;
        }
    return kept;
}

/* Positions of a row left out where the dumps differ by a non-finite value:
 * a NaN is never excused, not even in a row whose routing diverged. */
SPECIALISED long nonfinite_differs(const void *ev, const void *gv, bool f32, long cols) {
    long n = 0;
    for (long j = 0; j < cols; j++) {
        const double e = at(ev, j, f32), g = at(gv, j, f32);
        if (isfinite(e) && isfinite(g)) continue;
        n += !((isnan(g) && isnan(e)) || (isinf(g) && isinf(e) && (g > 0) == (e > 0)));
    }
    return n;
}

/*
 * A float tensor [rows][cols] compared a block of rows at a time: a logits
 * tensor is millions of values, and holding both dumps' as doubles cost more
 * than the comparison (the fresh pages of two large arrays per tensor). A
 * pair of float tensors (F32, BF16, F16, E4M3; the common case) is read as
 * floats, F32 in place, anything else as doubles into two small buffers. Two
 * passes: the largest |r| of the rows kept (the profile's bound is a share of
 * it), then the statistics, the non-finite check of the rows left out, and
 * for logits each row's argmax and top-5. The result equals the whole-tensor
 * computation's (sums in index order); r->worst is the element's index in
 * the tensor, rows left out counted.
 */
typedef struct {
    long kept, nf_out;  /* rows compared; non-finite mismatches in rows left out */
    double overlap;     /* logits: the sum of the rows' top-5 overlaps */
} rows_tally;

SPECIALISED rows_tally rows_as(ds3_cmp_result *r, const ds3_st_entry *re, const ds3_st_entry *te, bool f32,
                               long rows, long cols, long block, void *be, void *bg, const unsigned char *excl,
                               const ds3_cmp_opts *o) {
    const bool logits = (strcmp(re->name, "logits") == 0 || ends_with(re->name, ".logits")) && re->ndim == 2;
    double mx = 0;  /* max |r| over the finite values of the rows kept */
    for (long t0 = 0; t0 < rows; t0 += block) {
        const long nb = rows - t0 < block ? rows - t0 : block;
        const void *e = block_of(be, re, f32, t0 * cols, nb * cols);
        for (long t = 0; t < nb; t++) {
            if (excl && excl[t0 + t]) continue;
            for (long j = t * cols; j < (t + 1) * cols; j++) {
                /* whole chunks with no finite |r| above mx are passed over */
                if ((j - t * cols) % CHUNK == 0)
                    while (j + CHUNK <= (t + 1) * cols && !any_above(e, j, f32, true, mx)) j += CHUNK;
                if (j == (t + 1) * cols) break;
                const double x = fabs(at(e, j, f32));
                if (x > mx && x <= DBL_MAX) mx = x;
            }
        }
    }
    const double atol = o->elementwise ? o->atol : o->profile->max_scaled * mx,
                 rtol = o->elementwise ? o->rtol : 0;
    cmp_acc acc;
    acc_begin(r, &acc);
    rows_tally n = {0, 0, 0};
    /* logits: the per-element error the check allows (max_ref = mx once every row is seen) */
    const double bound = o->elementwise ? o->atol + o->rtol * mx : o->profile->max_scaled * mx;
    r->argmax_same = r->argmax_near_tie = 0;
    const size_t size = f32 ? sizeof(float) : sizeof(double);
    for (long t0 = 0; t0 < rows; t0 += block) {
        const long nb = rows - t0 < block ? rows - t0 : block;
        const unsigned char *e = block_of(be, re, f32, t0 * cols, nb * cols),
                            *g = block_of(bg, te, f32, t0 * cols, nb * cols);
        for (long t = 0; t < nb; t++) {
            const void *et = e + (size_t)(t * cols) * size, *gt = g + (size_t)(t * cols) * size;
            if (excl && excl[t0 + t]) {
                n.nf_out += nonfinite_differs(et, gt, f32, cols);
                continue;
            }
            if (f32) acc_add_f32(r, &acc, gt, et, cols, (t0 + t) * cols, atol, rtol);
            else acc_add_f64(r, &acc, gt, et, cols, (t0 + t) * cols, atol, rtol);
            if (logits) logits_row(r, &n.overlap, gt, et, f32, cols, bound);
            n.kept++;
        }
    }
    acc_end(r, &acc, n.kept * cols);
    return n;
}

static ds3_status compare_rows(ds3_cmp_result *r, const ds3_st_entry *re, const ds3_st_entry *te, long rows,
                               long cols, const unsigned char *excl, const ds3_cmp_opts *o) {
    const long block = cols >= 16384 ? 1 : 16384 / (cols ? cols : 1);  /* rows per block: ~128 KB */
    const long cap = block * cols > 0 ? block * cols : 1;
    double *e = ds3_malloc(sizeof(double) * (size_t)cap), *g = ds3_malloc(sizeof(double) * (size_t)cap);
    if (!e || !g) {
        free(e);
        free(g);
        return DS3_ERR_NOMEM;
    }
    const rows_tally n = in_float(re->dtype) && in_float(te->dtype)
                             ? rows_as(r, re, te, true, rows, cols, block, e, g, excl, o)
                             : rows_as(r, re, te, false, rows, cols, block, e, g, excl, o);
    free(e);
    free(g);
    float_verdict(r, o);
    if (n.nf_out) {
        r->n_nonfinite += n.nf_out;
        fail(r, "%ld non-finite value(s) (NaN/Inf) where the other dump differs, in rows left out", n.nf_out);
    }
    if ((strcmp(re->name, "logits") == 0 || ends_with(re->name, ".logits")) && re->ndim == 2) {
        const ds3_cmp_profile *p = o->profile;
        r->rows = n.kept;
        r->top5 = n.kept ? n.overlap / (double)n.kept : 1;
        double am = n.kept ? (double)r->argmax_same / (double)n.kept : 1;
        if (am < p->min_argmax)
            fail(r, "argmax differs on %ld of %ld rows (%.3f < %.3f)", n.kept - r->argmax_same, n.kept, am,
                 p->min_argmax);
        if (r->top5 < p->min_top5) fail(r, "top-5 overlap %.3f < %.3f", r->top5, p->min_top5);
    }
    return DS3_OK;
}

/* A float pair held whole as doubles, g and e [rows][cols] (the routing
 * weights, once paired by expert): compared as a tensor of its own, every
 * row kept. */
static ds3_status compare_held(ds3_cmp_result *r, const ds3_st_entry *like, const double *g, const double *e,
                               long rows, long cols, const ds3_cmp_opts *o) {
    ds3_st_entry re = {.name = like->name, .dtype = DS3_DT_F64, .ndim = 2, .shape = {rows, cols}, .data = e},
                 te = re;
    te.data = g;
    return compare_rows(r, &re, &te, rows, cols, NULL, o);
}

/* Compare one pair of entries with the same name. */
static ds3_status compare_pair(ds3_cmp_result *r, const ds3_st_file *ref, const ds3_st_file *test,
                               const ds3_st_entry *re, const ds3_st_entry *te, const ds3_cmp_opts *o,
                               const route_flags *rf, int nrf) {
    const ds3_cmp_profile *p = o->profile;
    snprintf(r->name, sizeof r->name, "%s", re->name);
    r->ndim = re->ndim;
    memcpy(r->shape, re->shape, sizeof r->shape);
    r->ok = true;
    r->worst = -1;
    r->rows = -1;
    r->cos = 1;
    if (re->ndim != te->ndim || memcmp(re->shape, te->shape, sizeof(int64_t) * (size_t)re->ndim) != 0) {
        char a[96], b[96];
        shape_str(a, sizeof a, re->shape, re->ndim);
        shape_str(b, sizeof b, te->shape, te->ndim);
        fail(r, "shape %s in REF, %s in TEST", a, b);
        return DS3_OK;
    }
    long n = 1;
    for (int i = 0; i < re->ndim; i++) n *= (long)re->shape[i];
    r->n = n;
    long rows = re->ndim >= 1 ? (long)re->shape[0] : 1;
    const long cols = rows ? n / rows : 0;
    ds3_status st = DS3_OK;

    /* Rows whose routing differed upstream measure that, not precision. */
    unsigned char *excl = NULL;
    if (!o->all_rows && nrf > 0 && re->ndim >= 2 && rows > 0) {
        excl = ds3_malloc((size_t)rows);
        if (!excl) return DS3_ERR_NOMEM;
        r->rows_excluded = excluded_rows(excl, rows, stage_of(re->name), rf, nrf);
    }

    const bool idx = ends_with(re->name, "topk_idx") && re->ndim == 2,
               ints = is_int_dtype(re->dtype) && is_int_dtype(te->dtype),
               weights = ends_with(re->name, "topk_weight") && re->ndim == 2;
    if (!idx && !ints && !weights) {
        /* activations, logits: a block of rows at a time */
        r->kind = DS3_CMP_FLOAT;
        st = compare_rows(r, re, te, rows, cols, excl, o);
        r->n = n;
    } else {
        /* routing tensors and integers: small, held whole */
        long m;
        double *e = ds3_cmp_read(re, &m), *g = e ? ds3_cmp_read(te, &m) : NULL;
        if (!e || !g) {
            free(e);
            free(g);
            free(excl);
            return DS3_ERR_NOMEM;
        }
        if (idx) {
            /* routing: sets per row */
            r->kind = DS3_CMP_INDEX;
            sort_rows(e, NULL, rows, cols);
            sort_rows(g, NULL, rows, cols);
            if (excl) {
                keep_rows(e, rows, cols, excl);
                rows = keep_rows(g, rows, cols, excl);
            }
            r->rows = rows;
            r->rows_same = 0;
            long common = 0;
            for (long t = 0; t < rows; t++) {
                r->rows_same += row_equal(e + t * cols, g + t * cols, cols);
                common += row_common(e + t * cols, g + t * cols, cols);
            }
            for (long t = 0; t < rows && r->worst < 0; t++)  /* the first row that differs */
                if (!row_equal(e + t * cols, g + t * cols, cols)) r->worst = t * cols;
            r->overlap = rows && cols ? (double)common / ((double)rows * (double)cols) : 1;
            double rate = rows ? (double)r->rows_same / (double)rows : 1;
            if (rate < p->min_idx_rows)
                fail(r, "%ld of %ld rows choose other experts (%.3f < %.3f)", rows - r->rows_same, rows, rate,
                     p->min_idx_rows);
            if (r->overlap < p->min_idx_overlap)
                fail(r, "the rows share %.3f of their experts on average (< %.3f)", r->overlap, p->min_idx_overlap);
        } else if (ints) {
            r->kind = DS3_CMP_INT;
            for (long i = 0; i < n; i++)
                if (e[i] != g[i]) {
                    if (r->worst < 0) { r->worst = i; r->worst_got = g[i]; r->worst_ref = e[i]; }
                    r->n_bad++;
                }
            if (r->n_bad) fail(r, "%ld of %ld integers differ", r->n_bad, n);
        } else {
            /* weights: paired by expert, on the rows whose expert sets agree */
            r->kind = DS3_CMP_FLOAT;
            char iname[200];
            snprintf(iname, sizeof iname, "%.*sidx", (int)(strlen(re->name) - strlen("weight")), re->name);
            const ds3_st_entry *ri = ds3_st_find(ref, iname), *ti = ds3_st_find(test, iname);
            bool paired = ri && ti && ri->ndim == 2 && ti->ndim == 2 && ri->shape[0] == rows &&
                          ri->shape[1] == cols && ti->shape[0] == rows && ti->shape[1] == cols;
            if (paired) {
                long ni, mi;
                double *ei = ds3_cmp_read(ri, &ni), *gi = ds3_cmp_read(ti, &mi);
                if (!ei || !gi) {
                    st = DS3_ERR_NOMEM;
                } else {
                    if (o->weights_at_test_idx) memcpy(ei, gi, sizeof(double) * (size_t)(rows * cols));
                    sort_rows(ei, e, rows, cols);
                    sort_rows(gi, g, rows, cols);
                    long kept = 0;
                    for (long t = 0; t < rows; t++)
                        if (row_equal(ei + t * cols, gi + t * cols, cols) && !(excl && excl[t])) {
                            memmove(e + kept * cols, e + t * cols, sizeof(double) * (size_t)cols);
                            memmove(g + kept * cols, g + t * cols, sizeof(double) * (size_t)cols);
                            kept++;
                        }
                    r->rows = kept;
                    st = compare_held(r, re, g, e, kept, cols, o);
                    r->n = n;
                }
                free(ei);
                free(gi);
            } else {
                if (excl) {
                    keep_rows(e, rows, cols, excl);
                    rows = keep_rows(g, rows, cols, excl);
                }
                st = compare_held(r, re, g, e, rows, cols, o);
                r->n = n;
            }
        }
        free(e);
        free(g);
    }
    /* A check that compared no value cannot pass: say so instead of "ok" (a
     * tensor that already failed, e.g. by a NaN in a row left out, was checked).
     * No value: every row left out, or (topk_weight, index tensors) no row kept;
     * integer tensors are compared whole. */
    const long rows_in = re->ndim >= 1 ? (long)re->shape[0] : 0;
    r->nothing_compared = r->ok && r->kind != DS3_CMP_INT && rows_in > 0 &&
                          (r->rows_excluded == rows_in || r->rows == 0);
    if (r->nothing_compared)
        fail(r, "%s",
             r->kind == DS3_CMP_FLOAT && ends_with(re->name, "topk_weight")
                 ? "no row has the same experts in both dumps, here and upstream: nothing compared"
                 : "every row is left out, its experts differ in an earlier layer: nothing compared "
                   "(--all-rows compares them)");
    free(excl);
    return st;
}

/* The token ids of a dump as "1,2,3": the "tokens" metadata, or a "tokens" tensor. */
static char *tokens_of(const ds3_st_file *f) {
    const char *meta = ds3_st_meta(f, "tokens");
    if (meta) {
        char *s = ds3_malloc(strlen(meta) + 1);
        if (s) strcpy(s, meta);
        return s;
    }
    const ds3_st_entry *e = ds3_st_find(f, "tokens");
    if (!e || !is_int_dtype(e->dtype)) return NULL;
    long n;
    double *v = ds3_cmp_read(e, &n);
    char *s = v ? ds3_malloc((size_t)n * 21 + 1) : NULL;
    if (s) {
        size_t len = 0;
        s[0] = '\0';
        for (long i = 0; i < n; i++) len += (size_t)sprintf(s + len, i ? ",%.0f" : "%.0f", v[i]);
    }
    free(v);
    return s;
}

static ds3_status add_missing(ds3_cmp_report *rep, const char *name, const char *where) {
    char **nm = realloc(rep->missing, sizeof(char *) * (size_t)(rep->n_missing + 1));
    if (!nm) return ds3_fail(DS3_ERR_NOMEM, "out of memory");
    rep->missing = nm;
    size_t len = strlen(name) + strlen(where) + 4;
    char *s = ds3_malloc(len);
    if (!s) return DS3_ERR_NOMEM;
    snprintf(s, len, "%s (%s)", name, where);
    rep->missing[rep->n_missing++] = s;
    return DS3_OK;
}

/* The result made already for REF's tensor `name` (ds3_cmp_opts.done), or NULL. */
static const ds3_cmp_result *done_for(const ds3_cmp_opts *o, const char *name) {
    for (int i = 0; i < o->n_done; i++)
        if (strcmp(o->done[i].name, name) == 0) return &o->done[i];
    return NULL;
}

static ds3_status cmp_files_body(const ds3_st_file *ref, const ds3_st_file *test, const ds3_cmp_opts *o,
                                 ds3_cmp_report *rep) {
    DS3_ASSERT(o->profile != NULL);
    rep->r = ds3_calloc((size_t)(ref->n ? ref->n : 1), sizeof *rep->r);
    if (!rep->r) return DS3_ERR_NOMEM;

    /* Same inputs? A comparison of different token sequences means nothing. */
    char *ta = tokens_of(ref), *tb = tokens_of(test);
    if (ta && tb && strcmp(ta, tb) != 0) {
        rep->tokens_differ = true;
        snprintf(rep->tokens_note, sizeof rep->tokens_note, "the dumps are of different tokens: REF %.100s, TEST %.100s",
                 ta, tb);
    } else if (ta && tb) {
        snprintf(rep->tokens_note, sizeof rep->tokens_note, "same tokens in both dumps");
    } else {
        snprintf(rep->tokens_note, sizeof rep->tokens_note, "tokens not recorded in %s",
                 !ta && !tb ? "either dump" : !ta ? "REF" : "TEST");
    }
    free(ta);
    free(tb);

    /* Which rows choose other experts in which MoE layer (selected or not). */
    route_flags *rf = ds3_calloc((size_t)(ref->n ? ref->n : 1), sizeof *rf);
    if (!rf) return DS3_ERR_NOMEM;
    int nrf = 0;
    ds3_status st = DS3_OK;
    for (int i = 0; i < ref->n && st == DS3_OK; i++) {
        const ds3_st_entry *re = &ref->entries[i], *te = ds3_st_find(test, re->name);
        if (!ends_with(re->name, "topk_idx") || re->ndim != 2 || !te || te->ndim != 2 ||
            te->shape[0] != re->shape[0] || te->shape[1] != re->shape[1])
            continue;
        long n, m, rows = (long)re->shape[0], K = (long)re->shape[1];
        double *a = ds3_cmp_read(re, &n), *b = ds3_cmp_read(te, &m);
        unsigned char *d = ds3_malloc((size_t)(rows ? rows : 1));
        if (a && b && d) {
            sort_rows(a, NULL, rows, K);
            sort_rows(b, NULL, rows, K);
            for (long t = 0; t < rows; t++) d[t] = !row_equal(a + t * K, b + t * K, K);
            rf[nrf++] = (route_flags){stage_of(re->name), rows, d};
        } else {
            free(d);
            st = DS3_ERR_NOMEM;
        }
        free(a);
        free(b);
    }

    /* The pairs in REF's order, then each compared on its own (in parallel:
     * one tensor per iteration, each writing only its own result, so the
     * report does not depend on the thread count). */
    const ds3_st_entry **tes = st == DS3_OK ? ds3_calloc((size_t)(ref->n ? ref->n : 1), sizeof *tes) : NULL;
    int *which = tes ? ds3_calloc((size_t)(ref->n ? ref->n : 1), sizeof *which) : NULL;
    if (st == DS3_OK && (!tes || !which)) st = DS3_ERR_NOMEM;
    for (int i = 0; i < ref->n && st == DS3_OK; i++) {
        const ds3_st_entry *re = &ref->entries[i];
        if (strcmp(re->name, "tokens") == 0 || !ds3_cmp_name_selected(o->names, re->name)) continue;
        const ds3_st_entry *te = ds3_st_find(test, re->name);
        if (!te) {
            st = add_missing(rep, re->name, "only in REF");
            continue;
        }
        tes[rep->n] = te;
        which[rep->n++] = i;
    }
    int nomem = 0;
    if (st == DS3_OK) {
#pragma omp parallel for schedule(dynamic, 1) reduction(+ : nomem)
        for (int j = 0; j < rep->n; j++) {
            const ds3_st_entry *re = &ref->entries[which[j]];
            const ds3_cmp_result *d = done_for(o, re->name);
            if (d) rep->r[j] = *d;  /* compared already, as compare_pair would (ds3_cmp_entry) */
            else {
                DS3_ASSERT(re->data != NULL);  /* a tensor held by nobody (ds3_dump_compared) has a result */
                nomem += compare_pair(&rep->r[j], ref, test, re, tes[j], o, rf, nrf) != DS3_OK;
            }
        }
        if (nomem) st = ds3_fail(DS3_ERR_NOMEM, "compare: out of memory");
        for (int j = 0; j < rep->n; j++) rep->n_fail += !rep->r[j].ok;
    }
    free(tes);
    free(which);
    for (int i = 0; i < test->n && st == DS3_OK; i++) {
        const ds3_st_entry *te = &test->entries[i];
        if (strcmp(te->name, "tokens") == 0 || !ds3_cmp_name_selected(o->names, te->name)) continue;
        if (!ds3_st_find(ref, te->name) && !o->ignore_test_only) st = add_missing(rep, te->name, "only in TEST");
    }
    for (int i = 0; i < nrf; i++) free(rf[i].differs);
    free(rf);
    rep->ok = st == DS3_OK && rep->n_fail == 0 && rep->n_missing == 0 && !rep->tokens_differ && rep->n > 0;
    return st;
}

/* The work above in IEEE defaults (src/kernels/fpenv.c): the statistics
 * loop's test on chunks of floats relies on them (acc_add_as). */
ds3_status ds3_cmp_files(const ds3_st_file *ref, const ds3_st_file *test, const ds3_cmp_opts *o,
                         ds3_cmp_report *rep) {
    memset(rep, 0, sizeof *rep);
    ds3_fpenv env;
    ds3_status st = ds3_fpenv_enter(&env);
    if (st != DS3_OK) return st;
    st = cmp_files_body(ref, test, o, rep);
    ds3_fpenv_leave(&env);
    return st;
}

/* One pair as cmp_files_body compares it: with o->all_rows no row is left
 * out, so compare_pair needs neither the routing flags nor, for a tensor
 * other than topk_weight, the two files. */
ds3_status ds3_cmp_entry(ds3_cmp_result *r, const ds3_st_entry *re, const ds3_st_entry *te, const ds3_cmp_opts *o) {
    DS3_ASSERT(o->all_rows && !ends_with(re->name, "topk_idx") && !ends_with(re->name, "topk_weight"));
    memset(r, 0, sizeof *r);  /* as cmp_files_body's calloc'd results */
    ds3_fpenv env;
    ds3_status st = ds3_fpenv_enter(&env);
    if (st != DS3_OK) return st;
    st = compare_pair(r, NULL, NULL, re, te, o, NULL, 0);
    ds3_fpenv_leave(&env);
    return st;
}

void ds3_cmp_report_free(ds3_cmp_report *rep) {
    if (!rep) return;
    for (int i = 0; i < rep->n_missing; i++) free(rep->missing[i]);
    free(rep->missing);
    free(rep->r);
    memset(rep, 0, sizeof *rep);
}

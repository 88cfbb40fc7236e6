/*
 * sample.c — choosing the next token from a row of logits.
 *
 * Greedy (temp <= 0): argmax, the lowest index on ties, so that greedy output
 * is a pure function of the logits (docs/MODEL.md §5's tie rule, applied to tokens).
 *
 * Otherwise, nucleus (top-p) sampling, defined exactly so that another
 * implementation (tools/gen_ref.py, a test) can reproduce every draw:
 *
 *   1. p_i = exp((l_i - max l) / temp) / Σ_j exp((l_j - max l) / temp),
 *      in double, the sum taken in index order.
 *   2. Order the tokens by p descending, ties by index ascending.
 *   3. Keep the shortest prefix of that order whose cumulative mass c_k
 *      reaches top_p (at least one token; all of them when top_p == 1 or
 *      when rounding keeps the total just below top_p).
 *   4. Draw u in [0,1) from the PRNG; r = u · c_k; return the first token of
 *      the prefix whose cumulative mass exceeds r (the last one if rounding
 *      leaves none).
 *
 * Optional steps (off by default; off, the draws are exactly the ones above):
 *
 *   0. Repetition penalty (ds3_sampler_set_repeat_penalty; CTRL, Keskar et
 *      al. 2019, as transformers' RepetitionPenaltyLogitsProcessor and
 *      llama.cpp's --repeat-penalty apply it): before step 1, and before the
 *      argmax when greedy, the logit l of every distinct id among the last
 *      `window` ids of the history becomes l / penalty if l > 0, else
 *      l · penalty. The history is what ds3_sampler_add_history gave (the
 *      prompt) followed by every token ds3_sample returned.
 *   3a. top-k (ds3_sampler_set_filters): keep only the first k of the order.
 *   3b. min-p: keep only the tokens with p >= min_p · p_max.
 *   Then step 3's nucleus is taken within what 3a/3b kept, against top_p
 *   times the kept mass (the filters renormalise, as applying transformers'
 *   warpers one after the other does); step 4 draws within the nucleus.
 *
 * PRNG: splitmix64 (Steele, Lea, Flood 2014; the constants of Vigna's
 * reference C code), state initialised to the seed, one 64-bit output per
 * draw, u = (output >> 11) · 2^-53. Any seed, 0 included, is fine.
 *
 * Logits that are NaN are an upstream bug, reported rather than sampled
 * around. +Inf logits share all the mass; -Inf logits get none.
 */
#include "generate/generate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A token and its probability, sorted together. */
struct tok_prob {
    double p;
    int id;
};

struct ds3_sampler {
    float temp;            /* <= 0: greedy */
    float top_p;           /* (0, 1] */
    int top_k;             /* 0: off */
    float min_p;           /* 0: off */
    float penalty;         /* 1: off */
    int window;            /* the penalty's look-back in ids; -1: the whole history */
    int32_t *hist;         /* the history (only kept while the penalty is on) */
    int n_hist, cap_hist;
    ds3_real *pen;         /* [cap] the penalised logits */
    int pen_cap;
    uint64_t state;        /* splitmix64 */
    /* scratch grown to the largest vocab seen: sorting needs it */
    int cap;
    struct tok_prob *tp;   /* [2 * cap]: the tokens, then the sort's second array */
    double *pr;            /* [cap] the probabilities in id order */
};

/* ---- PRNG ------------------------------------------------------------------ */

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* A double in [0, 1): the top 53 bits, so every value is exact. */
static double next_unit(uint64_t *state) {
    return (double)(splitmix64(state) >> 11) * 0x1.0p-53;
}

/* ---- construction ------------------------------------------------------------ */

ds3_status ds3_sampler_new(float temp, float top_p, uint64_t seed, ds3_sampler **out) {
    if (!out) return ds3_fail(DS3_ERR_ARG, "ds3_sampler_new: out is NULL");
    *out = NULL;
    if (isnan(temp) || isinf(temp))
        return ds3_fail(DS3_ERR_ARG, "sampler: temperature %g is not a finite number", (double)temp);
    if (!(top_p > 0.0f && top_p <= 1.0f))
        return ds3_fail(DS3_ERR_ARG, "sampler: top_p %g is outside (0, 1]", (double)top_p);
    ds3_sampler *s = ds3_calloc(1, sizeof *s);
    if (!s) return DS3_ERR_NOMEM;
    s->temp = temp;
    s->top_p = top_p;
    s->state = seed;
    *out = s;
    return DS3_OK;
}

void ds3_sampler_free(ds3_sampler *s) {
    if (!s) return;
    free(s->tp);
    free(s->pr);
    free(s->hist);
    free(s->pen);
    free(s);
}

ds3_status ds3_sampler_set_filters(ds3_sampler *s, int top_k, float min_p) {
    if (!s) return ds3_fail(DS3_ERR_ARG, "ds3_sampler_set_filters: sampler is NULL");
    if (top_k < 0) return ds3_fail(DS3_ERR_ARG, "sampler: top_k %d is negative (0 = off)", top_k);
    if (!(min_p >= 0.0f && min_p <= 1.0f))
        return ds3_fail(DS3_ERR_ARG, "sampler: min_p %g is outside [0, 1]", (double)min_p);
    s->top_k = top_k;
    s->min_p = min_p;
    return DS3_OK;
}

ds3_status ds3_sampler_set_repeat_penalty(ds3_sampler *s, float penalty, int window) {
    if (!s) return ds3_fail(DS3_ERR_ARG, "ds3_sampler_set_repeat_penalty: sampler is NULL");
    if (!(penalty > 0.0f) || isinf(penalty))
        return ds3_fail(DS3_ERR_ARG, "sampler: repeat penalty %g is not a positive finite number (1 = off)",
                        (double)penalty);
    if (window < -1) return ds3_fail(DS3_ERR_ARG, "sampler: repeat window %d is below -1 (-1 = all)", window);
    s->penalty = penalty;
    s->window = window;
    return DS3_OK;
}

bool ds3_sampler_penalised(const ds3_sampler *s) { return s->penalty != 1.0f && s->window != 0; }

ds3_status ds3_sampler_add_history(ds3_sampler *s, const int32_t *ids, int n) {
    if (!s || (n > 0 && !ids) || n < 0) return ds3_fail(DS3_ERR_ARG, "ds3_sampler_add_history: bad arguments");
    if (n > s->cap_hist - s->n_hist) {
        int cap = s->cap_hist ? s->cap_hist : 256;
        while (cap - s->n_hist < n) {
            if (cap > (1 << 29)) return ds3_fail(DS3_ERR_NOMEM, "sampler: history too long");
            cap *= 2;
        }
        int32_t *h = realloc(s->hist, (size_t)cap * sizeof *h);
        if (!h) return ds3_fail(DS3_ERR_NOMEM, "sampler: out of memory for the history");
        s->hist = h;
        s->cap_hist = cap;
    }
    if (n) memcpy(s->hist + s->n_hist, ids, (size_t)n * sizeof *ids);
    s->n_hist += n;
    return DS3_OK;
}

/* Step 0: the logits to sample from (the penalised copy, or logits itself). */
static const ds3_real *penalise(ds3_sampler *s, const ds3_real *logits, int vocab) {
    if (!ds3_sampler_penalised(s) || s->n_hist == 0) return logits;
    if (vocab > s->pen_cap) {
        ds3_real *p = ds3_malloc((size_t)vocab * sizeof *p);
        if (!p) return NULL;
        free(s->pen);
        s->pen = p;
        s->pen_cap = vocab;
    }
    memcpy(s->pen, logits, (size_t)vocab * sizeof *logits);
    int from = s->window < 0 || s->window >= s->n_hist ? 0 : s->n_hist - s->window;
    /* Each distinct id once: the penalised value is computed from the original
     * logit, so an id seen twice gets the same value again. */
    for (int i = from; i < s->n_hist; i++) {
        int id = s->hist[i];
        if (id < 0 || id >= vocab) continue;
        ds3_real l = logits[id];
        s->pen[id] = l > 0 ? (ds3_real)(l / s->penalty) : (ds3_real)(l * s->penalty);
    }
    return s->pen;
}

/* Append a returned token to the history (when the penalty is on). */
static int remember(ds3_sampler *s, int tok) {
    if (tok >= 0 && ds3_sampler_penalised(s)) {
        int32_t t = tok;
        if (ds3_sampler_add_history(s, &t, 1) != DS3_OK) return -1;
    }
    return tok;
}

/* Steps 3, 3a, 3b on the sorted tp[0..vocab): how many tokens the nucleus
 * keeps, and its mass. */
static int nucleus(const ds3_sampler *s, const struct tok_prob *tp, int vocab, double *mass_out) {
    int kept = vocab;
    if (s->top_k > 0 && s->top_k < kept) kept = s->top_k;
    if (s->min_p > 0.0f) {
        double floor_p = (double)s->min_p * tp[0].p;
        int k = 1;
        while (k < kept && tp[k].p >= floor_p) k++;
        kept = k;
    }
    double thr = (double)s->top_p;
    if (kept < vocab) {
        double m = 0.0;
        for (int k = 0; k < kept; k++) m += tp[k].p;
        thr *= m;
    }
    int keep = kept;
    double mass = 0.0;
    for (int k = 0; k < kept; k++) {
        mass += tp[k].p;
        if (s->top_p < 1.0f && mass >= thr) {
            keep = k + 1;
            break;
        }
    }
    *mass_out = mass;
    return keep;
}

/* ---- sampling ------------------------------------------------------------------ */

/* The first maximum (no NaN: the callers refuse those first). The largest value
 * is found by eight independent running maxima, not one chain (a decode step
 * does this over the whole vocabulary on one thread while the others wait),
 * then the first index holding a value equal to it: the same index as the
 * one-pass loop `if (logits[i] > logits[best]) best = i`, ties (+0 and -0
 * included) going to the lowest index. */
static int argmax(const ds3_real *logits, int vocab) {
    ds3_real m[8];
    int i = 0;
    for (int k = 0; k < 8; k++) m[k] = logits[k < vocab ? k : 0];
    for (; i + 8 <= vocab; i += 8)
        for (int k = 0; k < 8; k++) m[k] = logits[i + k] > m[k] ? logits[i + k] : m[k];
    for (; i < vocab; i++) m[0] = logits[i] > m[0] ? logits[i] : m[0];
    ds3_real mx = m[0];
    for (int k = 1; k < 8; k++) mx = m[k] > mx ? m[k] : mx;
    int best = 0;
    while (!(logits[best] == mx)) best++;
    return best;
}

/* The first NaN logit, or -1: blocks of 256 tested with no branch (a loop of
 * known length the compiler can run eight at a time), then the block searched. */
static int first_nan(const ds3_real *logits, int vocab) {
    int i0 = 0;
    for (; i0 + 256 <= vocab; i0 += 256) {
        int any = 0;
        for (int i = 0; i < 256; i++) any |= logits[i0 + i] != logits[i0 + i];
        if (any) break;
    }
    for (int i = i0; i < vocab; i++)
        if (isnan(logits[i])) return i;
    return -1;
}

/*
 * The nucleus order: descending probability, ties by ascending id — a total
 * order, so any correct sort gives the same permutation. tp[] arrives in id
 * order (tp[i].id == i) and a stable sort by descending probability keeps equal
 * probabilities in it. An LSD radix sort on the bits of p does that: for p >= 0
 * (every probability here; -0 is read as +0) the bits of a double grow with its
 * value, so ascending order of their complement is descending p. Six passes
 * of 11 bits, a pass skipped where every key has the same digit; tmp is a
 * second array of n. (qsort with a comparator took 20-23 ms on 129,280 tokens,
 * twice a decode step of `small`; this takes about 1.)
 */
static uint64_t prob_key(double p) {
    p += 0.0;  /* -0 → +0 */
    uint64_t u;
    memcpy(&u, &p, sizeof u);
    return ~u;
}

static void sort_by_prob(struct tok_prob *tp, struct tok_prob *tmp, int n) {
    struct tok_prob *src = tp, *dst = tmp;
    for (int shift = 0; shift < 64; shift += 11) {  /* six passes of 11 bits */
        int count[2049] = {0};
        for (int i = 0; i < n; i++) count[((prob_key(src[i].p) >> shift) & 0x7ff) + 1]++;
        if (count[((prob_key(src[0].p) >> shift) & 0x7ff) + 1] == n) continue;  /* one digit for all */
        for (int d = 0; d < 2048; d++) count[d + 1] += count[d];
        for (int i = 0; i < n; i++) dst[count[(prob_key(src[i].p) >> shift) & 0x7ff]++] = src[i];
        struct tok_prob *t = src;
        src = dst;
        dst = t;
    }
    if (src != tp) memcpy(tp, src, (size_t)n * sizeof *tp);
}

/* tp[] and the sort's second array, 2 x vocab. */
static bool reserve(ds3_sampler *s, int vocab) {
    if (vocab <= s->cap) return true;
    struct tok_prob *tp = ds3_malloc(2 * (size_t)vocab * sizeof *tp);
    double *pr = ds3_malloc((size_t)vocab * sizeof *pr);
    if (!tp || !pr) {
        free(tp);
        free(pr);
        return false;
    }
    free(s->tp);
    free(s->pr);
    s->tp = tp;
    s->pr = pr;
    s->cap = vocab;
    return true;
}

/* Step 1: p = softmax(logits / t) in double, in id order. x == max handles +Inf
 * (all +Inf share the mass) and the all -Inf row (uniform) without computing
 * Inf - Inf. The exps four at a time (ds3_exp_n: ds3_exp's bits); the sum in id
 * order. */
static void softmax(const ds3_real *logits, int vocab, double t, double *p) {
    const double mx = (double)logits[argmax(logits, vocab)];
    if (isinf(mx)) {
        for (int i = 0; i < vocab; i++) p[i] = (double)logits[i] == mx ? 1.0 : 0.0;
    } else {
        for (int i = 0; i < vocab; i++) p[i] = ((double)logits[i] - mx) / t;
        ds3_exp_n(p, p, vocab);
        for (int i = 0; i < vocab; i++)
            if ((double)logits[i] == mx) p[i] = 1.0;
    }
    double sum = 0.0;
    for (int i = 0; i < vocab; i++) sum += p[i];
    for (int i = 0; i < vocab; i++) p[i] /= sum;
}

static int sample_body(ds3_sampler *s, const ds3_real *logits, int vocab) {
    if (!s || !logits || vocab <= 0) {
        ds3_fail(DS3_ERR_ARG, "ds3_sample: %s", !s ? "sampler is NULL" : !logits ? "logits is NULL"
                                                                                : "vocab must be positive");
        return -1;
    }
    const int nan_at = first_nan(logits, vocab);
    if (nan_at >= 0) {
        ds3_fail(DS3_ERR_ARG, "ds3_sample: logits[%d] is NaN", nan_at);
        return -1;
    }
    logits = penalise(s, logits, vocab);
    if (!logits) return -1;
    if (s->temp <= 0.0f) return remember(s, argmax(logits, vocab));
    if (!reserve(s, vocab)) return -1;

    /* 1. softmax(l / temp) in double. */
    softmax(logits, vocab, (double)s->temp, s->pr);
    struct tok_prob *tp = s->tp;
    for (int i = 0; i < vocab; i++) {
        tp[i].p = s->pr[i];
        tp[i].id = i;
    }

    /* 2. the nucleus order. */
    sort_by_prob(tp, tp + s->cap, vocab);

    /* 3. the nucleus: top-k, min-p, then the shortest prefix with mass >= top_p
     *    (all when top_p is 1, so that rounding cannot drop the tail there). */
    double mass = 0.0;
    int keep = nucleus(s, tp, vocab, &mass);

    /* 4. inverse CDF over the nucleus, renormalised by its mass. */
    double r = next_unit(&s->state) * mass, c = 0.0;
    for (int k = 0; k < keep; k++) {
        c += tp[k].p;
        if (c > r) return remember(s, tp[k].id);
    }
    return remember(s, tp[keep - 1].id);
}

/* The public entry: the work above in IEEE defaults (src/kernels/fpenv.c). */
int ds3_sample(ds3_sampler *s, const ds3_real *logits, int vocab) {
    ds3_fpenv env;
    if (ds3_fpenv_enter_serial(&env) != DS3_OK) return -1;
    int r = sample_body(s, logits, vocab);
    ds3_fpenv_leave(&env);
    return r;
}

/* ---- distributions, for speculative sampling (spec.c) ------------------------ */

bool ds3_sampler_greedy(const ds3_sampler *s) { return s->temp <= 0.0f; }

double ds3_sampler_uniform(ds3_sampler *s) { return next_unit(&s->state); }

/*
 * The distribution ds3_sample draws from, written out: steps 1-3 above, then
 * each nucleus token's p divided by the nucleus mass (step 4 draws r = u·mass
 * from the unnormalised masses, the same thing). Greedy: one-hot at the argmax.
 */
int ds3_sampler_probs(ds3_sampler *s, const ds3_real *logits, int vocab, double *p) {
    const int nan_at = first_nan(logits, vocab);
    if (nan_at >= 0) {
        ds3_fail(DS3_ERR_ARG, "ds3_sampler_probs: logits[%d] is NaN", nan_at);
        return -1;
    }
    logits = penalise(s, logits, vocab);
    if (!logits) return -1;
    if (s->temp <= 0.0f) {
        for (int i = 0; i < vocab; i++) p[i] = 0.0;
        p[argmax(logits, vocab)] = 1.0;
        return 0;
    }
    softmax(logits, vocab, (double)s->temp, p);
    if (s->top_p >= 1.0f && s->top_k == 0 && s->min_p == 0.0f) return 0;

    /* The nucleus, chosen exactly as ds3_sample chooses it. */
    if (!reserve(s, vocab)) return -1;
    struct tok_prob *tp = s->tp;
    for (int i = 0; i < vocab; i++) {
        tp[i].p = p[i];
        tp[i].id = i;
    }
    sort_by_prob(tp, tp + s->cap, vocab);
    double mass = 0.0;
    int keep = nucleus(s, tp, vocab, &mass);
    for (int k = keep; k < vocab; k++) p[tp[k].id] = 0.0;
    for (int k = 0; k < keep; k++) p[tp[k].id] = tp[k].p / mass;
    return 0;
}

int ds3_sample_from(const double *p, int vocab, double u) {
    double sum = 0.0;
    int last = 0;
    for (int i = 0; i < vocab; i++) {
        sum += p[i];
        if (p[i] > 0) last = i;
    }
    double r = u * sum, c = 0.0;
    for (int i = 0; i < vocab; i++) {
        c += p[i];
        if (p[i] > 0 && c > r) return i;
    }
    return last;
}

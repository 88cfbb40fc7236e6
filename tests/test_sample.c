/*
 * test_sample.c — the sampler (src/generate/sample.c): greedy ties, the exact draw
 * procedure and PRNG documented there, nucleus membership, frequencies
 * against a known distribution, temperature, determinism, argument errors.
 *
 * Frequency checks use a fixed seed, so they are deterministic; the bound
 * (5 standard deviations of the binomial count) is what a correct sampler
 * would meet with any seed, so a failure means the distribution is wrong,
 * not that the seed was unlucky.
 */
#include "generate/generate.h"
#include "harness.h"

#include <math.h>
#include <string.h>

#define NDRAW 20000

/* The PRNG as documented in sample.c, reimplemented here so the test pins the
 * documentation, not just the code. */
static uint64_t ref_splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double ref_unit(uint64_t *state) { return (double)(ref_splitmix64(state) >> 11) * 0x1.0p-53; }

static ds3_sampler *make(float temp, float top_p, uint64_t seed) {
    ds3_sampler *s = NULL;
    ds3_status st = ds3_sampler_new(temp, top_p, seed, &s);
    CHECK(st == DS3_OK && s, "ds3_sampler_new(%g, %g, %llu): %s", (double)temp, (double)top_p,
          (unsigned long long)seed, ds3_last_error());
    return s;
}

/* Draw NDRAW tokens; counts[vocab]. Returns the number of out-of-range results. */
static int draw_counts(ds3_sampler *s, const ds3_real *logits, int vocab, long *counts) {
    int bad = 0;
    memset(counts, 0, (size_t)vocab * sizeof *counts);
    for (int i = 0; i < NDRAW; i++) {
        int t = ds3_sample(s, logits, vocab);
        if (t < 0 || t >= vocab) bad++;
        else counts[t]++;
    }
    return bad;
}

/* counts[i] within 5 binomial standard deviations of NDRAW·want[i]; want 0 → never. */
static void check_freqs(const char *what, const long *counts, const double *want, int vocab) {
    for (int i = 0; i < vocab; i++) {
        double mean = NDRAW * want[i];
        double sd = sqrt(NDRAW * want[i] * (1 - want[i]));
        if (want[i] == 0)
            CHECK(counts[i] == 0, "%s: token %d is outside the nucleus but was drawn %ld times", what, i,
                  counts[i]);
        else
            CHECK(fabs((double)counts[i] - mean) <= 5 * sd + 1, "%s: token %d drawn %ld times, expected %.0f ± %.0f",
                  what, i, counts[i], mean, 5 * sd);
    }
}

static void test_args(void) {
    th_section("argument checks");
    ds3_sampler *s = (ds3_sampler *)1;
    CHECK(ds3_sampler_new(NAN, 1.0f, 0, &s) == DS3_ERR_ARG && s == NULL, "NaN temperature accepted");
    CHECK(strstr(ds3_last_error(), "temperature") != NULL, "message: %s", ds3_last_error());
    CHECK(ds3_sampler_new(INFINITY, 1.0f, 0, &s) == DS3_ERR_ARG, "infinite temperature accepted");
    CHECK(ds3_sampler_new(1.0f, 0.0f, 0, &s) == DS3_ERR_ARG, "top_p 0 accepted");
    CHECK(strstr(ds3_last_error(), "top_p") != NULL, "message: %s", ds3_last_error());
    CHECK(ds3_sampler_new(1.0f, -0.5f, 0, &s) == DS3_ERR_ARG, "top_p -0.5 accepted");
    CHECK(ds3_sampler_new(1.0f, 1.0001f, 0, &s) == DS3_ERR_ARG, "top_p > 1 accepted");
    CHECK(ds3_sampler_new(1.0f, NAN, 0, &s) == DS3_ERR_ARG, "top_p NaN accepted");
    CHECK(ds3_sampler_new(0.0f, 2.0f, 0, &s) == DS3_ERR_ARG, "top_p 2 accepted with greedy");
    CHECK(ds3_sampler_new(1.0f, 1.0f, 0, NULL) == DS3_ERR_ARG, "NULL out accepted");
    ds3_sampler_free(NULL); /* no-op */

    s = make(1.0f, 1.0f, 0);
    ds3_real l[3] = {0, NAN, 1};
    CHECK(ds3_sample(s, l, 0) == -1, "vocab 0 sampled");
    CHECK(ds3_sample(s, NULL, 3) == -1, "NULL logits sampled");
    CHECK(ds3_sample(NULL, l, 3) == -1, "NULL sampler sampled");
    CHECK(ds3_sample(s, l, 3) == -1, "NaN logit sampled");
    CHECK(strstr(ds3_last_error(), "logits[1]") != NULL, "message does not name logits[1]: %s",
          ds3_last_error());
    ds3_sampler_free(s);
}

static void test_greedy(void) {
    th_section("greedy");
    ds3_sampler *g = make(0.0f, 1.0f, 7), *neg = make(-1.0f, 0.5f, 7);
    ds3_real a[5] = {1, 3, 2, 3, -5};
    CHECK(ds3_sample(g, a, 5) == 1, "argmax of {1,3,2,3,-5} is %d, want 1 (lowest index on ties)",
          ds3_sample(g, a, 5));
    CHECK(ds3_sample(neg, a, 5) == 1, "temp < 0 is not greedy");
    ds3_real same[4] = {0.5, 0.5, 0.5, 0.5};
    CHECK(ds3_sample(g, same, 4) == 0, "all equal: %d, want 0", ds3_sample(g, same, 4));
    ds3_real ninf[3] = {-INFINITY, -INFINITY, -7};
    CHECK(ds3_sample(g, ninf, 3) == 2, "-inf row: %d, want 2", ds3_sample(g, ninf, 3));
    ds3_real allninf[2] = {-INFINITY, -INFINITY};
    CHECK(ds3_sample(g, allninf, 2) == 0, "all -inf: want 0");
    ds3_real last[3] = {-1, -2, 10};
    CHECK(ds3_sample(g, last, 3) == 2, "max at the end missed");
    /* Greedy never consumes the PRNG, so repeated calls agree. */
    int first = ds3_sample(g, a, 5), same_again = 1;
    for (int i = 0; i < 100; i++) same_again &= ds3_sample(g, a, 5) == first;
    CHECK(same_again, "greedy is not a pure function of the logits");
    /* Against the one-pass rule (`if (l[i] > l[best]) best = i`) on many rows:
     * lengths around the eight running maxima's blocks, values drawn from a few
     * so that ties are common, +0 and -0 and infinities among them; and a NaN at
     * any position is found and named. */
    static ds3_real r[1000];
    static const ds3_real pool[] = {0.0, -0.0, 1.0, -1.0, 2.5, INFINITY, -INFINITY, 0.75};
    uint64_t st = 12345;
    int wrong = 0, nan_wrong = 0;
    for (int trial = 0; trial < 2000; trial++) {
        const int n = 1 + (int)(ref_splitmix64(&st) % (trial < 1000 ? 40 : 1000));
        const int kinds = 2 + (int)(ref_splitmix64(&st) % 7);
        for (int i = 0; i < n; i++) r[i] = pool[ref_splitmix64(&st) % (uint64_t)kinds];
        int want = 0;
        for (int i = 1; i < n; i++)
            if (r[i] > r[want]) want = i;
        wrong += ds3_sample(g, r, n) != want;
        const int at = (int)(ref_splitmix64(&st) % (uint64_t)n);
        const ds3_real keep = r[at];
        r[at] = NAN;
        char name[32];
        snprintf(name, sizeof name, "logits[%d]", at);
        nan_wrong += ds3_sample(g, r, n) != -1 || !strstr(ds3_last_error(), name);
        r[at] = keep;
    }
    CHECK(wrong == 0, "argmax: %d of 2000 random rows differ from the one-pass rule", wrong);
    CHECK(nan_wrong == 0, "a NaN anywhere is refused and named: %d of 2000 missed", nan_wrong);
    ds3_sampler_free(g);
    ds3_sampler_free(neg);
}

/* Equal logits make every cumulative mass exact (k/4), so each draw is
 * predictable from the documented PRNG and inverse-CDF rule: token = floor(4u). */
static void test_exact_draws(void) {
    th_section("draws follow the documented splitmix64 + inverse CDF");
    for (uint64_t seed = 0; seed < 3; seed++) {
        ds3_sampler *s = make(1.0f, 1.0f, seed);
        ds3_real l[4] = {0.25, 0.25, 0.25, 0.25};
        uint64_t st = seed;
        int mismatches = 0;
        for (int i = 0; i < 1000; i++) {
            int want = (int)floor(4.0 * ref_unit(&st));
            if (ds3_sample(s, l, 4) != want) mismatches++;
        }
        CHECK(mismatches == 0, "seed %llu: %d of 1000 draws differ from the documented procedure",
              (unsigned long long)seed, mismatches);
        ds3_sampler_free(s);
    }
    /* The first splitmix64 output of seed 0 (Vigna's reference value). */
    uint64_t st = 0;
    CHECK(ref_splitmix64(&st) == 0xE220A8397B1DCDAFull, "reference splitmix64 is wrong");
}

static void test_nucleus(void) {
    th_section("top-p nucleus and frequencies");
    /* A known distribution, shuffled so the nucleus order differs from index order:
     * p = {0.15, 0.5, 0.05, 0.3}. The top_p values stay clear of the cumulative
     * masses (0.5, 0.8, 0.95, 1), where rounding decides. */
    const double p[4] = {0.15, 0.5, 0.05, 0.3};
    ds3_real l[4];
    for (int i = 0; i < 4; i++) l[i] = (ds3_real)log(p[i]);
    long counts[5];   /* the +inf case below draws from 5 logits */

    struct {
        float top_p;
        double want[4];
    } cases[] = {
        {1.0f, {0.15, 0.5, 0.05, 0.3}},                 /* everything */
        {0.9f, {0.15 / 0.95, 0.5 / 0.95, 0, 0.3 / 0.95}}, /* 0.5+0.3 < 0.9 <= 0.95 */
        {0.75f, {0, 0.5 / 0.8, 0, 0.3 / 0.8}},          /* 0.5 < 0.75 <= 0.8 */
        {0.4f, {0, 1, 0, 0}},                           /* the top token alone */
        {1e-6f, {0, 1, 0, 0}},                          /* at least one token */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char what[64];
        snprintf(what, sizeof what, "top_p %g", (double)cases[c].top_p);
        ds3_sampler *s = make(1.0f, cases[c].top_p, 1234 + c);
        CHECK(draw_counts(s, l, 4, counts) == 0, "%s: out-of-range token", what);
        check_freqs(what, counts, cases[c].want, 4);
        ds3_sampler_free(s);
    }

    /* Temperature: logits {0, ln 3} give 1:3 at temp 1 and 1:9 at temp 0.5. */
    ds3_real t2[2] = {0, (ds3_real)log(3.0)};
    ds3_sampler *s1 = make(1.0f, 1.0f, 99), *s05 = make(0.5f, 1.0f, 99), *s2 = make(2.0f, 1.0f, 99);
    draw_counts(s1, t2, 2, counts);
    check_freqs("temp 1", counts, (double[]){0.25, 0.75}, 2);
    draw_counts(s05, t2, 2, counts);
    check_freqs("temp 0.5", counts, (double[]){0.1, 0.9}, 2);
    draw_counts(s2, t2, 2, counts);
    check_freqs("temp 2", counts, (double[]){1 / (1 + sqrt(3.0)), sqrt(3.0) / (1 + sqrt(3.0))}, 2);
    ds3_sampler_free(s1);
    ds3_sampler_free(s05);
    ds3_sampler_free(s2);

    /* Infinite logits: +Inf entries share the mass, -Inf entries get none. */
    ds3_real inf[5] = {1, INFINITY, 2, INFINITY, -INFINITY};
    ds3_sampler *si = make(1.0f, 1.0f, 5);
    CHECK(draw_counts(si, inf, 5, counts) == 0, "+inf row: out-of-range token");
    check_freqs("+inf logits", counts, (double[]){0, 0.5, 0, 0.5, 0}, 5);
    ds3_real ninf[3] = {-INFINITY, 0, -INFINITY};
    CHECK(draw_counts(si, ninf, 3, counts) == 0 && counts[1] == NDRAW, "-inf logits were drawn");
    ds3_sampler_free(si);
}

static void test_determinism(void) {
    th_section("determinism");
    enum { V = 1000, N = 500 };
    static ds3_real l[V];
    uint64_t st = 42;
    for (int i = 0; i < V; i++) l[i] = (ds3_real)(4.0 * ref_unit(&st));
    ds3_sampler *a = make(0.8f, 0.9f, 2026), *b = make(0.8f, 0.9f, 2026), *c = make(0.8f, 0.9f, 2027);
    int same_ab = 1, same_ac = 1, in_range = 1;
    for (int i = 0; i < N; i++) {
        int ta = ds3_sample(a, l, V), tb = ds3_sample(b, l, V), tc = ds3_sample(c, l, V);
        same_ab &= ta == tb;
        same_ac &= ta == tc;
        in_range &= ta >= 0 && ta < V && tc >= 0 && tc < V;
    }
    CHECK(same_ab, "same seed, different draws");
    CHECK(!same_ac, "seeds 2026 and 2027 gave identical sequences of %d draws", N);
    CHECK(in_range, "token out of range");
    /* A sampler used on a larger vocabulary after a smaller one (scratch regrowth). */
    ds3_real one = 3;
    CHECK(ds3_sample(a, &one, 1) == 0, "vocab 1 must give token 0");
    ds3_sampler_free(a);
    ds3_sampler_free(b);
    ds3_sampler_free(c);
}

/* top-k, min-p, the repetition penalty (issue 18): the distribution each
 * defines, drawn and as ds3_sampler_probs writes it out (what speculative
 * decoding accepts against). */
/* The documented procedure written out with qsort, for the large-vocabulary check
 * below: softmax in double with ds3_exp, the order (p desc, id asc), top-k, min-p,
 * top-p, the inverse CDF with the documented PRNG. */
struct ref_tp {
    double p;
    int id;
};
static int ref_cmp(const void *a, const void *b) {
    const struct ref_tp *x = a, *y = b;
    if (x->p != y->p) return x->p > y->p ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}
static int ref_sample(const ds3_real *l, int n, double t, int top_k, double min_p, double top_p, uint64_t *st,
                      struct ref_tp *tp) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (l[i] > l[best]) best = i;
    const double mx = (double)l[best];
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        const double x = (double)l[i];
        tp[i].p = x == mx ? 1.0 : isinf(mx) ? 0.0 : ds3_exp((x - mx) / t);
        tp[i].id = i;
        sum += tp[i].p;
    }
    for (int i = 0; i < n; i++) tp[i].p /= sum;
    qsort(tp, (size_t)n, sizeof *tp, ref_cmp);
    int kept = n;
    if (top_k > 0 && top_k < kept) kept = top_k;
    if (min_p > 0) {
        int k = 1;
        while (k < kept && tp[k].p >= min_p * tp[0].p) k++;
        kept = k;
    }
    double thr = top_p;
    if (kept < n) {
        double m = 0.0;
        for (int k = 0; k < kept; k++) m += tp[k].p;
        thr *= m;
    }
    int keep = kept;
    double mass = 0.0;
    for (int k = 0; k < kept; k++) {
        mass += tp[k].p;
        if (top_p < 1.0 && mass >= thr) {
            keep = k + 1;
            break;
        }
    }
    const double r = ref_unit(st) * mass;
    double c = 0.0;
    for (int k = 0; k < keep; k++) {
        c += tp[k].p;
        if (c > r) return tp[k].id;
    }
    return tp[keep - 1].id;
}

/* A vocabulary of DeepSeek-V3's size class, logits full of ties: the draws are the
 * documented procedure's, one for one (the sampler sorts with a radix sort; any
 * sort gives the one permutation of that total order). */
static void test_large_vocab(void) {
    th_section("a large vocabulary: draws equal the documented procedure's, tie for tie");
    enum { V = 30000 };
    static ds3_real l[V];
    static struct ref_tp tp[V];
    uint64_t g = 99;
    for (int i = 0; i < V; i++) {
        const uint64_t u = ref_splitmix64(&g);
        l[i] = u % 97 == 0 ? -INFINITY : (ds3_real)((double)(u % 41) * 0.25 - 6.0);  /* 41 values: ties */
    }
    static const struct { float temp, top_p, min_p; int top_k; } cases[] = {
        {0.8f, 1.0f, 0.0f, 0}, {1.3f, 0.9f, 0.0f, 0}, {0.6f, 1.0f, 0.0f, 50}, {1.0f, 0.95f, 0.05f, 0}, {2.0f, 0.5f, 0.0f, 0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        ds3_sampler *s = make(cases[c].temp, cases[c].top_p, 7 + c);
        CHECK(ds3_sampler_set_filters(s, cases[c].top_k, cases[c].min_p) == DS3_OK, "filters");
        uint64_t st = 7 + c;
        int differ = 0;
        for (int d = 0; d < 60; d++) {
            const int want = ref_sample(l, V, (double)cases[c].temp, cases[c].top_k, (double)cases[c].min_p,
                                        (double)cases[c].top_p, &st, tp);
            differ += ds3_sample(s, l, V) != want;
        }
        CHECK(differ == 0, "temp %g top-p %g top-k %d min-p %g: %d of 60 draws differ from the procedure's",
              (double)cases[c].temp, (double)cases[c].top_p, cases[c].top_k, (double)cases[c].min_p, differ);
        ds3_sampler_free(s);
    }
}

static void test_filters(void) {
    th_section("top-k, min-p, repetition penalty");
    /* logits ln(p) for p = .4 .3 .15 .1 .05: softmax gives p back at temp 1 */
    const double p[5] = {0.4, 0.3, 0.15, 0.1, 0.05};
    ds3_real l[5];
    for (int i = 0; i < 5; i++) l[i] = (ds3_real)log(p[i]);
    long counts[5];
    double want[5], got[5];
    /* The distribution of the logits as stored (ds3_real): p up to the float rounding of ln p. */
    double pe[5], z = 0;
    for (int i = 0; i < 5; i++) z += exp((double)l[i]);
    for (int i = 0; i < 5; i++) pe[i] = exp((double)l[i]) / z;
    struct {
        const char *what;
        int top_k;
        float min_p, top_p;
        int keep[5];   /* the tokens the rule keeps (then renormalised) */
    } cases[] = {
        /* top-k 2: .4 .3 */
        {"top-k 2", 2, 0.0f, 1.0f, {1, 1, 0, 0, 0}},
        /* min-p 0.3: p >= .12 keeps .4 .3 .15 */
        {"min-p 0.3", 0, 0.3f, 1.0f, {1, 1, 1, 0, 0}},
        /* top-k 3 then top-p 0.8 of the kept .85 (0.68): .4 .3 reach .7 >= .68 */
        {"top-k 3, top-p 0.8", 3, 0.0f, 0.8f, {1, 1, 0, 0, 0}},
        /* top-k 4, min-p 0.2 (>= .08: .4 .3 .15 .1), top-p 0.9 of .95 (.855): .4 .3 .15 = .85 < .855, so 4 */
        {"top-k 4, min-p 0.2, top-p 0.9", 4, 0.2f, 0.9f, {1, 1, 1, 1, 0}},
        /* top-k larger than the vocabulary: all */
        {"top-k 9", 9, 0.0f, 1.0f, {1, 1, 1, 1, 1}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        ds3_sampler *s = make(1.0f, cases[c].top_p, 11);
        if (!s) continue;
        double kept = 0;
        for (int i = 0; i < 5; i++) kept += cases[c].keep[i] ? pe[i] : 0;
        for (int i = 0; i < 5; i++) want[i] = cases[c].keep[i] ? pe[i] / kept : 0;
        CHECK(ds3_sampler_set_filters(s, cases[c].top_k, cases[c].min_p) == DS3_OK, "%s: set", cases[c].what);
        CHECK(draw_counts(s, l, 5, counts) == 0, "%s: out-of-range draws", cases[c].what);
        check_freqs(cases[c].what, counts, want, 5);
        CHECK(ds3_sampler_probs(s, l, 5, got) == 0, "%s: probs", cases[c].what);
        double worst = 0;
        for (int i = 0; i < 5; i++) worst = fmax(worst, fabs(got[i] - want[i]));
        CHECK(worst < 1e-12, "%s: ds3_sampler_probs off by %.3g", cases[c].what, worst);
        ds3_sampler_free(s);
    }
    /* Off, the draws are the same bits as without the calls. */
    ds3_sampler *a = make(0.8f, 0.9f, 5), *b = make(0.8f, 0.9f, 5);
    if (a && b) {
        CHECK(ds3_sampler_set_filters(b, 0, 0.0f) == DS3_OK && ds3_sampler_set_repeat_penalty(b, 1.0f, 64) == DS3_OK,
              "filters off");
        bool same = true;
        for (int i = 0; i < 500; i++) same &= ds3_sample(a, l, 5) == ds3_sample(b, l, 5);
        CHECK(same, "filters and penalty off change the draws");
    }
    ds3_sampler_free(a);
    ds3_sampler_free(b);

    /* Errors. */
    ds3_sampler *s = make(1.0f, 1.0f, 1);
    if (s) {
        CHECK(ds3_sampler_set_filters(s, -1, 0.0f) == DS3_ERR_ARG, "top_k -1 refused");
        CHECK(ds3_sampler_set_filters(s, 0, 1.5f) == DS3_ERR_ARG, "min_p 1.5 refused");
        CHECK(ds3_sampler_set_filters(s, 0, NAN) == DS3_ERR_ARG, "min_p NaN refused");
        CHECK(ds3_sampler_set_repeat_penalty(s, 0.0f, 64) == DS3_ERR_ARG, "penalty 0 refused");
        CHECK(ds3_sampler_set_repeat_penalty(s, INFINITY, 64) == DS3_ERR_ARG, "penalty inf refused");
        CHECK(ds3_sampler_set_repeat_penalty(s, 1.1f, -2) == DS3_ERR_ARG, "window -2 refused");
        ds3_sampler_free(s);
    }

    /* Repetition penalty, greedy: l = 3, 2.9, -1, 1 with id 0 in the history and
     * penalty 1.2: 3 / 1.2 = 2.5 < 2.9, so id 1 wins. */
    ds3_real r[4] = {3.0f, 2.9f, -1.0f, 1.0f};
    s = make(0.0f, 1.0f, 1);
    if (s) {
        int32_t h0 = 0;
        CHECK(ds3_sample(s, r, 4) == 0, "greedy without penalty: 0");
        CHECK(ds3_sampler_set_repeat_penalty(s, 1.2f, 64) == DS3_OK && ds3_sampler_add_history(s, &h0, 1) == DS3_OK,
              "penalty set");
        CHECK(ds3_sample(s, r, 4) == 1, "penalised 0: greedy picks 1");
        /* 1 was returned, so it is in the history now: 2.9 / 1.2 = 2.42 < 2.5: back to 0 */
        CHECK(ds3_sample(s, r, 4) == 0, "1 returned then penalised: 0 (2.5) beats 1 (2.42)");
        double q[4];
        CHECK(ds3_sampler_probs(s, r, 4, q) == 0 && q[0] == 1.0, "greedy probs one-hot at the penalised argmax");
        ds3_sampler_free(s);
    }
    /* Negative logits are multiplied; the window looks back that many ids. */
    ds3_real n[3] = {-1.0f, -1.1f, -3.0f};
    s = make(0.0f, 1.0f, 1);
    if (s) {
        int32_t h[3] = {0, 2, 2};
        CHECK(ds3_sampler_set_repeat_penalty(s, 1.2f, 2) == DS3_OK && ds3_sampler_add_history(s, h, 3) == DS3_OK, "set");
        /* window 2: only 2 is penalised; 0 stays the argmax */
        CHECK(ds3_sample(s, n, 3) == 0, "window 2 leaves id 0 alone");
        ds3_sampler_free(s);
    }
    s = make(0.0f, 1.0f, 1);
    if (s) {
        int32_t h[3] = {0, 2, 2};
        CHECK(ds3_sampler_set_repeat_penalty(s, 1.2f, -1) == DS3_OK && ds3_sampler_add_history(s, h, 3) == DS3_OK, "set");
        /* all: 0 becomes -1.2 < -1.1 */
        CHECK(ds3_sample(s, n, 3) == 1, "window -1 penalises id 0: -1.2 < -1.1");
        ds3_sampler_free(s);
    }
    /* Sampled: the frequencies follow softmax of the penalised logits. */
    s = make(1.0f, 1.0f, 3);
    if (s) {
        /* history {0}, penalty 2, window -1; but every draw joins the history,
         * so fix the history by penalising all: ids 0..4 all in it. */
        int32_t h[5] = {0, 1, 2, 3, 4};
        CHECK(ds3_sampler_set_repeat_penalty(s, 2.0f, -1) == DS3_OK && ds3_sampler_add_history(s, h, 5) == DS3_OK, "set");
        /* every logit ln p_i < 0 is doubled: p_i^2 renormalised */
        double z2 = 0;
        for (int i = 0; i < 5; i++) z2 += p[i] * p[i];
        for (int i = 0; i < 5; i++) want[i] = p[i] * p[i] / z2;
        CHECK(draw_counts(s, l, 5, counts) == 0, "penalised draws in range");
        check_freqs("penalty 2 on every id", counts, want, 5);
        ds3_sampler_free(s);
    }
}

int main(void) {
    test_args();
    test_greedy();
    test_exact_draws();
    test_nucleus();
    test_determinism();
    test_large_vocab();
    test_filters();
    return th_finish();
}

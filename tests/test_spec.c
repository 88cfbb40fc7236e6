/*
 * test_spec.c — the speculative-sampling acceptance rule (src/generate/spec.c) on
 * hand-made distributions whose answer is known, apart from any model:
 *   - one drafted position: drafts drawn from q, accepted with min(1, p/q),
 *     rejected ones replaced from norm(max(0, p - q)): the emitted token is
 *     distributed as p, and drafts are accepted with probability Σ min(p, q);
 *   - a two-token Markov chain with two drafts per round, rounds repeated
 *     until two tokens exist: their joint distribution is p1(x)·p2(y|x) (this
 *     exercises the bonus token and a rejection at the second draft);
 *   - p == q accepts everything; one-hot p and q (greedy) accept iff equal;
 *   - ds3_sampler_probs is the distribution ds3_sample draws from.
 * Statistics use a fixed seed (the result is deterministic); bounds are 5
 * standard deviations per cell and a chi-square at p = 1e-6.
 */
#include "harness.h"
#include "generate/generate.h"

#include <stdlib.h>

enum { M = 200000 };

/* chi-square critical values at p = 1e-6 for df = 1..8 */
static const double CHI2_1E6[] = {0, 23.93, 27.63, 30.66, 33.38, 35.89, 38.26, 40.52, 42.70};

/* counts[n] against probabilities p[n] over `total` draws. */
static void check_freq(const char *what, const long *counts, const double *p, int n, long total) {
    double chi2 = 0;
    int df = -1, bad = 0;
    for (int i = 0; i < n; i++) {
        double e = p[i] * (double)total, sd = sqrt((double)total * p[i] * (1 - p[i]));
        if (p[i] == 0) {
            bad += counts[i] != 0;
            continue;
        }
        df++;
        chi2 += ((double)counts[i] - e) * ((double)counts[i] - e) / e;
        if (fabs((double)counts[i] - e) > 5 * sd + 1e-9) bad++;
    }
    CHECK(bad == 0, "%s: %d cells outside 5 sd (or a count where p = 0)", what, bad);
    CHECK(df >= 1 && df <= 8 && chi2 < CHI2_1E6[df], "%s: chi-square %.2f with %d df (limit %.2f)", what, chi2, df,
          df >= 1 && df <= 8 ? CHI2_1E6[df] : 0);
    fprintf(stderr, "%s %-52s chi2 %.2f (df %d)\n", bad == 0 ? "ok  " : "FAIL", what, chi2, df);
}

/* One position: emitted ~ p, acceptance = Σ min(p, q). */
static void one_position(void) {
    th_section("one drafted position");
    enum { V = 5 };
    const double p[V] = {0.10, 0.40, 0.20, 0.25, 0.05};
    const double q[V] = {0.30, 0.10, 0.40, 0.00, 0.20};
    double pp[2 * V], scratch[V];
    /* p for the drafted position, and the bonus row (unused with one draft
     * when it is rejected; any distribution) */
    for (int i = 0; i < V; i++) pp[i] = p[i], pp[V + i] = 1.0 / V;
    ds3_sampler *smp = NULL;
    ds3_sampler_new(1.0f, 1.0f, 42, &smp);
    long counts[V] = {0}, bonus[V] = {0}, accepted = 0, altered = 0;
    for (long t = 0; t < M; t++) {
        int32_t d = ds3_sample_from(q, V, ds3_sampler_uniform(smp)), out[2];
        int n = ds3_spec_accept(smp, pp, q, &d, 1, V, out, scratch);
        counts[out[0]]++;
        if (n == 2) {
            accepted++;
            altered += out[0] != d;
            bonus[out[1]]++;
        }
    }
    CHECK(altered == 0, "an accepted draft is emitted as drawn (%ld were not)", altered);
    check_freq("emitted token ~ p", counts, p, V, M);
    double acc = 0;
    for (int i = 0; i < V; i++) acc += p[i] < q[i] ? p[i] : q[i];
    double sd = sqrt(M * acc * (1 - acc));
    CHECK(fabs((double)accepted - acc * M) < 5 * sd, "acceptance %.4f, expected Σ min(p,q) = %.4f",
          (double)accepted / M, acc);
    fprintf(stderr, "ok   acceptance %.4f (Σ min(p,q) = %.4f)\n", (double)accepted / M, acc);
    double u[V] = {0.2, 0.2, 0.2, 0.2, 0.2};
    check_freq("bonus token ~ the last row of p", bonus, u, V, accepted);
    ds3_sampler_free(smp);
}

/* Two tokens from a Markov chain, two drafts per round. */
static void two_tokens(void) {
    th_section("two tokens, two drafts per round");
    enum { V = 3 };
    const double p1[V] = {0.5, 0.3, 0.2};
    const double p2[V][V] = {{0.1, 0.6, 0.3}, {0.7, 0.2, 0.1}, {0.3, 0.3, 0.4}};  /* p2[x][y] */
    const double q1[V] = {0.2, 0.2, 0.6};
    const double q2[V][V] = {{0.5, 0.5, 0.0}, {0.2, 0.2, 0.6}, {0.1, 0.8, 0.1}};
    const double p3[V] = {0.25, 0.25, 0.5};  /* a third token, if a round produces one */
    ds3_sampler *smp = NULL;
    ds3_sampler_new(1.0f, 1.0f, 7, &smp);
    long joint[V * V] = {0}, rounds = 0;
    double p[3 * V], q[2 * V], scratch[V];
    for (long t = 0; t < M; t++) {
        int32_t seq[4];
        int have = 0;
        while (have < 2) {
            /* draft from the position after `have` tokens */
            int32_t d[2];
            int nd = 2 - have;   /* never draft past the second token */
            if (have == 0) {
                memcpy(q, q1, sizeof q1);
                d[0] = ds3_sample_from(q1, V, ds3_sampler_uniform(smp));
                memcpy(q + V, q2[d[0]], sizeof q2[0]);
                d[1] = ds3_sample_from(q2[d[0]], V, ds3_sampler_uniform(smp));
                memcpy(p, p1, sizeof p1);
                memcpy(p + V, p2[d[0]], sizeof p2[0]);
                memcpy(p + 2 * V, p3, sizeof p3);
            } else {
                memcpy(q, q2[seq[0]], sizeof q2[0]);
                d[0] = ds3_sample_from(q, V, ds3_sampler_uniform(smp));
                memcpy(p, p2[seq[0]], sizeof p2[0]);
                memcpy(p + V, p3, sizeof p3);
            }
            int32_t out[3];
            int n = ds3_spec_accept(smp, p, q, d, nd, V, out, scratch);
            for (int i = 0; i < n && have < 4; i++) seq[have++] = out[i];
            rounds++;
        }
        joint[seq[0] * V + seq[1]]++;
    }
    double want[V * V];
    for (int x = 0; x < V; x++)
        for (int y = 0; y < V; y++) want[x * V + y] = p1[x] * p2[x][y];
    check_freq("(t1, t2) ~ p1(x) p2(y|x)", joint, want, V * V, M);
    fprintf(stderr, "     %.3f rounds per two tokens\n", (double)rounds / M);
    ds3_sampler_free(smp);
}

static void degenerate(void) {
    th_section("p == q; one-hot (greedy) p and q");
    enum { V = 4 };
    const double p[2 * V] = {0.1, 0.2, 0.3, 0.4, 0.25, 0.25, 0.25, 0.25};
    double scratch[V];
    ds3_sampler *smp = NULL;
    ds3_sampler_new(1.0f, 1.0f, 3, &smp);
    long acc = 0;
    for (int t = 0; t < 10000; t++) {
        int32_t d = ds3_sample_from(p, V, ds3_sampler_uniform(smp)), out[2];
        acc += ds3_spec_accept(smp, p, p, &d, 1, V, out, scratch) == 2;
    }
    CHECK(acc == 10000, "p == q: every draft accepted (%ld of 10000)", acc);

    const double oh2[2 * V] = {0, 0, 1, 0, 0, 1, 0, 0};   /* target argmax 2, then 1 */
    const double q2[V] = {0, 0, 1, 0}, q1[V] = {0, 1, 0, 0};
    int32_t out[2], d = 2;
    int n = ds3_spec_accept(smp, oh2, q2, &d, 1, V, out, scratch);
    CHECK(n == 2 && out[0] == 2 && out[1] == 1, "one-hot, draft = argmax: accepted, bonus = next argmax");
    d = 1;
    n = ds3_spec_accept(smp, oh2, q1, &d, 1, V, out, scratch);
    CHECK(n == 1 && out[0] == 2, "one-hot, draft != argmax: rejected, the argmax emitted (got %d, %d)", n, out[0]);
    ds3_sampler_free(smp);
}

/* ds3_sampler_probs describes what ds3_sample does, top-p included. */
static void probs_match_sampler(void) {
    th_section("ds3_sampler_probs is ds3_sample's distribution");
    enum { V = 8 };
    const ds3_real logits[V] = {1.0, 2.5, -0.5, 2.5, 0.3, 1.7, -3.0, 0.9};
    const float temps[] = {0.7f, 1.3f}, tops[] = {1.0f, 0.8f};
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 2; b++) {
            ds3_sampler *smp = NULL;
            ds3_sampler_new(temps[a], tops[b], 99 + a * 2 + b, &smp);
            double p[V], sum = 0;
            CHECK(ds3_sampler_probs(smp, logits, V, p) == 0, "probs");
            int nz = 0;
            for (int i = 0; i < V; i++) sum += p[i], nz += p[i] > 0;
            CHECK(fabs(sum - 1) < 1e-12, "probabilities sum to 1 (%.17g)", sum);
            CHECK(tops[b] < 1 ? nz < V : nz == V, "top-p %.1f keeps %d of %d tokens", tops[b], nz, V);
            long counts[V] = {0};
            for (long t = 0; t < M; t++) counts[ds3_sample(smp, logits, V)]++;
            char what[96];
            snprintf(what, sizeof what, "ds3_sample ~ probs (temp %.1f, top-p %.1f)", temps[a], tops[b]);
            check_freq(what, counts, p, V, M);
            ds3_sampler_free(smp);
        }
    ds3_sampler *g = NULL;
    ds3_sampler_new(0.0f, 1.0f, 0, &g);
    double p[V];
    ds3_sampler_probs(g, logits, V, p);
    CHECK(ds3_sampler_greedy(g) && p[1] == 1.0 && p[3] == 0.0, "greedy: one-hot at the first argmax");
    ds3_sampler_free(g);
}

int main(void) {
    th_quiet = 1;
    one_position();
    two_tokens();
    degenerate();
    probs_match_sampler();
    return th_finish();
}

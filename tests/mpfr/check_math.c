/*
 * check_math.c — ds3's own exp, log, pow, sin, cos (src/kernels/dmath.c)
 * against MPFR's correctly rounded values (docs/PORTABILITY.md). Not part of
 * the default build or of `make test`: `make check-math` builds and runs it
 * (MPFR from `MPFR=1 sh scripts/install-deps.sh`).
 *
 * Inputs:
 *   - every input the RoPE code produces for each built-in config: the
 *     frequencies base^(−2j/Dr) (ds3_pow), YaRN's logs, and the angles
 *     θ = p·f_j for every position p < max_position_embeddings (sin, cos),
 *     computed exactly as src/model/rope.c computes them;
 *   - 10^7 random inputs per function over the ranges the code can reach
 *     (exp: the whole finite range and the softmax/SiLU ranges; log: every
 *     binade; sin/cos: |x| < 1.6e6 and |x| < π).
 * For each set: the largest error in ulps of the exact value, and how many
 * results are not the correctly rounded one. A result an ulp or more away
 * fails (exit 1). Ends with "N passed, N failed".
 */
#include "model/model.h"

#include <math.h>
#include <mpfr.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int passed, failed;

typedef int (*mpfr_fn)(mpfr_ptr, mpfr_srcptr, mpfr_rnd_t);

typedef struct {
    const char *name;
    double max_ulp;      /* largest |ours − exact| / ulp(exact) */
    double worst_x;      /* where */
    long n, not_cr;      /* inputs; results that are not the correctly rounded double */
} stat;

static mpfr_t X, Y, E, T;

/* Error of `got` against the exact value in E, in ulps of the exact value's
 * double binade; counts a miss of the correctly rounded double. */
static void account(stat *s, double x, double got) {
    s->n++;
    double cr = mpfr_get_d(E, MPFR_RNDN);
    if (isnan(cr) || isinf(cr) || cr == 0) {
        if (!(got == cr || (isnan(got) && isnan(cr)))) {
            s->not_cr++;
            if (s->max_ulp < INFINITY) s->max_ulp = INFINITY, s->worst_x = x;
        }
        return;
    }
    if (got != cr) s->not_cr++;
    int ex;
    frexp(cr, &ex);                               /* |cr| in [2^(ex-1), 2^ex) */
    int ulp_exp = ex - 53 < -1074 ? -1074 : ex - 53;
    mpfr_set_d(T, got, MPFR_RNDN);
    mpfr_sub(T, T, E, MPFR_RNDN);
    mpfr_abs(T, T, MPFR_RNDN);
    mpfr_mul_2si(T, T, -ulp_exp, MPFR_RNDN);
    double u = mpfr_get_d(T, MPFR_RNDN);
    if (u > s->max_ulp) s->max_ulp = u, s->worst_x = x;
}

static void one(stat *s, mpfr_fn f, double (*ours)(double), double x) {
    mpfr_set_d(X, x, MPFR_RNDN);
    f(E, X, MPFR_RNDN);
    account(s, x, ours(x));
}

static void report(const stat *s, double bound) {
    fflush(stderr);
    int ok = s->max_ulp < bound;
    printf("%-4s %-44s %10ld inputs  max %.3f ulp (at %.17g)  %ld not correctly rounded (%.2g%%)\n",
           ok ? "ok" : "FAIL", s->name, s->n, s->max_ulp, s->worst_x, s->not_cr,
           s->n ? 100.0 * (double)s->not_cr / (double)s->n : 0.0);
    if (ok) passed++;
    else failed++;
    fflush(stdout);
}

/* xorshift64*: reproducible inputs */
static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next(void) {
    rng ^= rng >> 12, rng ^= rng << 25, rng ^= rng >> 27;
    return rng * 0x2545f4914f6cdd1dull;
}
static double uniform(double a, double b) { return a + (b - a) * ((double)(next() >> 11) * 0x1p-53); }

int main(int argc, char **argv) {
    long N = argc > 1 ? atol(argv[1]) : 10000000;
    mpfr_inits2(128, X, Y, E, T, (mpfr_ptr)0);  /* 75 bits past double: ulp errors to 2^-70 */

    /* ---- the RoPE frequencies and YaRN logs of every built-in config ---- */
    const char *const *names = ds3_builtin_configs();
    stat pw = {"pow: RoPE frequencies base^(-2j/Dr)", 0, 0, 0, 0};
    stat lg = {"log: YaRN mscale and correction dims", 0, 0, 0, 0};
    for (int i = 0; names[i]; i++) {
        ds3_config c;
        if (ds3_config_parse(ds3_builtin_config_json(names[i]), names[i], &c) != DS3_OK) {
            fprintf(stderr, "%s: %s\n", names[i], ds3_last_error());
            failed++;
            continue;
        }
        const int Dr = c.qk_rope_head_dim;
        for (int j = 0; j < Dr / 2; j++) {
            double y = -2.0 * j / Dr;  /* as rope.c computes it */
            mpfr_set_d(X, c.rope_theta, MPFR_RNDN);
            mpfr_set_d(Y, y, MPFR_RNDN);
            mpfr_pow(E, X, Y, MPFR_RNDN);
            account(&pw, y, ds3_pow(c.rope_theta, y));
        }
        if (c.rope_yarn) {
            const double pi = 3.14159265358979323846, L0 = c.yarn_original_max_position_embeddings;
            double in[4] = {c.yarn_factor, c.rope_theta, L0 / (2.0 * pi * c.yarn_beta_fast),
                            L0 / (2.0 * pi * c.yarn_beta_slow)};
            for (int k = 0; k < 4; k++) one(&lg, mpfr_log, ds3_log, in[k]);
        }
    }
    report(&pw, 1.0);
    report(&lg, 1.0);

    /* ---- random inputs, one function at a time (each reported as it ends) ---- */
    fprintf(stderr, "check_math: %ld random inputs per function\n", N);
    stat e1 = {"exp: random, the finite range [-745, 709.78]", 0, 0, 0, 0};
    stat e2 = {"exp: random float-valued in [-104, 0] (softmax)", 0, 0, 0, 0};
    for (long i = 0; i < N; i++) {
        one(&e1, mpfr_exp, ds3_exp, uniform(-745.1, 709.78));
        one(&e2, mpfr_exp, ds3_exp, (double)(float)uniform(-104, 0));
    }
    report(&e1, 1.0);
    report(&e2, 1.0);
    stat l1 = {"log: random, every binade", 0, 0, 0, 0};
    stat l2 = {"log: random in [0.5, 2]", 0, 0, 0, 0};
    for (long i = 0; i < N; i++) {
        uint64_t b = (next() % 0x7fe0000000000000ull) + 0x0010000000000000ull;  /* a normal positive double */
        double lx;
        memcpy(&lx, &b, sizeof lx);
        one(&l1, mpfr_log, ds3_log, lx);
        one(&l2, mpfr_log, ds3_log, uniform(0.5, 2));
    }
    report(&l1, 1.0);
    report(&l2, 1.0);
    stat s1 = {"sin: random in [-1.6e6, 1.6e6]", 0, 0, 0, 0};
    stat c1 = {"cos: random in [-1.6e6, 1.6e6]", 0, 0, 0, 0};
    for (long i = 0; i < N; i++) {
        double x = uniform(-1.6e6, 1.6e6);
        one(&s1, mpfr_sin, ds3_sin, x);
        one(&c1, mpfr_cos, ds3_cos, x);
    }
    report(&s1, 1.0);
    report(&c1, 1.0);
    stat s2 = {"sin: random in [-pi, pi]", 0, 0, 0, 0};
    stat c2 = {"cos: random in [-pi, pi]", 0, 0, 0, 0};
    for (long i = 0; i < N; i++) {
        double x = uniform(-3.141592653589793, 3.141592653589793);
        one(&s2, mpfr_sin, ds3_sin, x);
        one(&c2, mpfr_cos, ds3_cos, x);
    }
    report(&s2, 1.0);
    report(&c2, 1.0);
    stat p1 = {"pow: random base in [2, 1e7], exponent in [-1, 0]", 0, 0, 0, 0};
    for (long i = 0; i < N; i++) {
        double base = uniform(2, 1e7), y = uniform(-1, 0);
        mpfr_set_d(X, base, MPFR_RNDN);
        mpfr_set_d(Y, y, MPFR_RNDN);
        mpfr_pow(E, X, Y, MPFR_RNDN);
        account(&p1, y, ds3_pow(base, y));
    }
    report(&p1, 1.0);
    /* ---- sin and cos of every RoPE angle of every built-in config (the slow part) ---- */
    stat sn = {"sin: RoPE angles p*f_j, every position", 0, 0, 0, 0};
    stat cs = {"cos: RoPE angles p*f_j, every position", 0, 0, 0, 0};
    double done_keys[64][4];
    int ndone = 0;
    for (int i = 0; names[i]; i++) {
        ds3_config c;
        if (ds3_config_parse(ds3_builtin_config_json(names[i]), names[i], &c) != DS3_OK) continue;
        const int Dr = c.qk_rope_head_dim;
        /* one pass per distinct (theta, Dr, YaRN factor, positions) */
        double key[4] = {c.rope_theta, Dr, c.rope_yarn ? c.yarn_factor : 0, c.max_position_embeddings};
        int seen = 0;
        for (int d = 0; d < ndone; d++) seen |= memcmp(done_keys[d], key, sizeof key) == 0;
        if (seen || ndone == 64) continue;
        memcpy(done_keys[ndone++], key, sizeof key);
        double *f = malloc((size_t)(Dr / 2) * sizeof *f);
        ds3_yarn_freqs(f, &c);
        stat ps = {names[i], 0, 0, 0, 0}, pc = {names[i], 0, 0, 0, 0};
        for (int p = 0; p < c.max_position_embeddings; p++)
            for (int j = 0; j < Dr / 2; j++) {
                double theta = (double)p * f[j];
                one(&ps, mpfr_sin, ds3_sin, theta);
                one(&pc, mpfr_cos, ds3_cos, theta);
            }
        fprintf(stderr, "check_math: %s: %d positions x %d frequencies: sin max %.3f ulp, %ld not CR; "
                "cos max %.3f ulp, %ld not CR\n", names[i], c.max_position_embeddings, Dr / 2, ps.max_ulp,
                ps.not_cr, pc.max_ulp, pc.not_cr);
        sn.n += ps.n, sn.not_cr += ps.not_cr, cs.n += pc.n, cs.not_cr += pc.not_cr;
        if (ps.max_ulp > sn.max_ulp) sn.max_ulp = ps.max_ulp, sn.worst_x = ps.worst_x;
        if (pc.max_ulp > cs.max_ulp) cs.max_ulp = pc.max_ulp, cs.worst_x = pc.worst_x;
        free(f);
    }
    report(&sn, 1.0);
    report(&cs, 1.0);
    mpfr_clears(X, Y, E, T, (mpfr_ptr)0);
    mpfr_free_cache();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}

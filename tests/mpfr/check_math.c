/*
 * check_math.c — ds3's own exp, log, pow, sin, cos (src/kernels/dmath.c)
 * against MPFR's correctly rounded values (docs/PORTABILITY.md). Not part of
 * the default build or of `make test`: `make check-math` builds and runs it
 * (MPFR from `MPFR=1 sh scripts/install-deps.sh`).
 *
 * Inputs:
 *   - every input the RoPE code produces for each built-in config and each
 *     config.json named on the command line (`make check-math` names
 *     ref_data/configs/: with the built-ins, every checkpoint ds3's tests
 *     make): the frequencies base^(−2j/Dr) (ds3_pow), YaRN's logs (the
 *     correction dimensions and mscale), and the angles θ = p·f_j for every
 *     position p < max_position_embeddings (sin, cos), computed exactly as
 *     src/model/rope.c computes them, and as src/check/emulate.c does (θ a
 *     float product, (float)p·(float)f_j);
 *   - N random inputs per set (default 10^7) over the ranges the code can
 *     reach (exp: the whole finite range, float-valued arguments of SiLU and
 *     the sigmoid router, and the softmax range; log: every binade and
 *     [0.5, 2]; sin/cos: |x| < 1.6e6 and |x| < π; pow: the RoPE bases and
 *     exponents).
 * For each set: the largest error in ulps of the exact value, and how many
 * results are not the correctly rounded one. A result an ulp or more away
 * fails (exit 1). Ends with "N passed, N failed".
 *
 *   check_math [-n N] [--part P[,P...]] [CONFIG.json...]
 *   parts: tables (pow and log of the RoPE setup), angles (sin and cos of
 *   every RoPE angle: the slow part), exp, log, sincos, pow; default all.
 */
#include "model/model.h"

#include <math.h>
#include <mpfr.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
    printf("%-4s %-58s %10ld inputs  max %.3f ulp (at %.17g)  %ld not correctly rounded (%.2g%%)\n",
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
/* Each random part starts from its own seed: the same inputs whichever parts run. */
static void seed(uint64_t s) { rng = 0x9e3779b97f4a7c15ull ^ (s * 0xbf58476d1ce4e5b9ull); }
static double uniform(double a, double b) { return a + (b - a) * ((double)(next() >> 11) * 0x1p-53); }

/* The configs: the built-ins, then the files. */
typedef struct {
    char name[256];
    ds3_config c;
} named_config;

static int load_configs(named_config **out, char **files, int nfiles) {
    const char *const *names = ds3_builtin_configs();
    int nb = 0;
    while (names[nb]) nb++;
    named_config *v = calloc((size_t)(nb + nfiles), sizeof *v);
    int n = 0;
    for (int i = 0; i < nb; i++) {
        if (ds3_config_parse(ds3_builtin_config_json(names[i]), names[i], &v[n].c) != DS3_OK) {
            fprintf(stderr, "check_math: %s: %s\n", names[i], ds3_last_error());
            failed++;
            continue;
        }
        snprintf(v[n++].name, sizeof v->name, "%s", names[i]);
    }
    for (int i = 0; i < nfiles; i++) {
        FILE *f = fopen(files[i], "rb");
        char *buf = NULL;
        long len = -1;
        if (f && fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
            buf = malloc((size_t)len + 1);
            if (fread(buf, 1, (size_t)len, f) != (size_t)len) len = -1;
            else buf[len] = 0;
        }
        if (f) fclose(f);
        if (len < 0 || ds3_config_parse(buf, files[i], &v[n].c) != DS3_OK) {
            fprintf(stderr, "check_math: %s: %s\n", files[i], len < 0 ? "cannot read" : ds3_last_error());
            failed++;
        } else {
            snprintf(v[n++].name, sizeof v->name, "%s", files[i]);
        }
        free(buf);
    }
    *out = v;
    return n;
}

static double cpu_s(void) { return (double)clock() / CLOCKS_PER_SEC; }

static void part_tables(const named_config *cf, int ncf) {
    stat pw = {"pow: RoPE frequencies base^(-2j/Dr) (at the exponent)", 0, 0, 0, 0};
    stat lg = {"log: YaRN correction dims and mscale", 0, 0, 0, 0};
    for (int i = 0; i < ncf; i++) {
        const ds3_config *c = &cf[i].c;
        const int Dr = c->qk_rope_head_dim;
        for (int j = 0; j < Dr / 2; j++) {
            double y = -2.0 * j / Dr;  /* as rope.c computes it */
            mpfr_set_d(X, c->rope_theta, MPFR_RNDN);
            mpfr_set_d(Y, y, MPFR_RNDN);
            mpfr_pow(E, X, Y, MPFR_RNDN);
            account(&pw, y, ds3_pow(c->rope_theta, y));
        }
        if (c->rope_yarn) {
            /* rope.c: log(L0/(2π·beta)) for both betas, log(base), and
             * ds3_yarn_mscale's log(factor) (its only argument) */
            const double pi = 3.14159265358979323846, L0 = c->yarn_original_max_position_embeddings;
            double in[4] = {c->yarn_factor, c->rope_theta, L0 / (2.0 * pi * c->yarn_beta_fast),
                            L0 / (2.0 * pi * c->yarn_beta_slow)};
            for (int k = 0; k < 4; k++) one(&lg, mpfr_log, ds3_log, in[k]);
        }
    }
    report(&pw, 1.0);
    report(&lg, 1.0);
}

/* sin and cos of every RoPE angle of every config, once per distinct
 * (frequency table, positions). */
static void part_angles(const named_config *cf, int ncf) {
    stat sn = {"sin: RoPE angles p*f_j (rope.c, double)", 0, 0, 0, 0};
    stat cs = {"cos: RoPE angles p*f_j (rope.c, double)", 0, 0, 0, 0};
    stat sf = {"sin: RoPE angles (float)p*(float)f_j (emulate.c)", 0, 0, 0, 0};
    stat cf32 = {"cos: RoPE angles (float)p*(float)f_j (emulate.c)", 0, 0, 0, 0};
    double **seen_f = calloc((size_t)ncf, sizeof *seen_f);
    int *seen_dr = calloc((size_t)ncf, sizeof *seen_dr), *seen_p = calloc((size_t)ncf, sizeof *seen_p);
    int nseen = 0;
    for (int i = 0; i < ncf; i++) {
        const ds3_config *c = &cf[i].c;
        const int Dr = c->qk_rope_head_dim, P = c->max_position_embeddings;
        double *f = malloc((size_t)(Dr / 2) * sizeof *f);
        ds3_yarn_freqs(f, c);
        int dup = -1;
        for (int d = 0; d < nseen && dup < 0; d++)
            if (seen_dr[d] == Dr && seen_p[d] >= P && memcmp(seen_f[d], f, (size_t)(Dr / 2) * sizeof *f) == 0) dup = d;
        if (dup >= 0) {
            fprintf(stderr, "check_math: %s: the same angles as an earlier config\n", cf[i].name);
            free(f);
            continue;
        }
        seen_f[nseen] = f, seen_dr[nseen] = Dr, seen_p[nseen++] = P;
        stat ps = {0}, pc = {0}, qs = {0}, qc = {0};
        double t0 = cpu_s();
        for (int p = 0; p < P; p++)
            for (int j = 0; j < Dr / 2; j++) {
                double theta = (double)p * f[j];   /* rope.c */
                one(&ps, mpfr_sin, ds3_sin, theta);
                one(&pc, mpfr_cos, ds3_cos, theta);
                float tf = (float)p * (float)f[j];  /* emulate.c */
                one(&qs, mpfr_sin, ds3_sin, (double)tf);
                one(&qc, mpfr_cos, ds3_cos, (double)tf);
            }
        fprintf(stderr,
                "check_math: %s: %d positions x %d frequencies (%.0f s CPU): double angles: sin max %.3f ulp, "
                "%ld not CR; cos max %.3f ulp, %ld not CR; float angles: sin max %.3f ulp, %ld not CR; "
                "cos max %.3f ulp, %ld not CR\n",
                cf[i].name, P, Dr / 2, cpu_s() - t0, ps.max_ulp, ps.not_cr, pc.max_ulp, pc.not_cr, qs.max_ulp,
                qs.not_cr, qc.max_ulp, qc.not_cr);
        const stat *from[4] = {&ps, &pc, &qs, &qc};
        stat *to[4] = {&sn, &cs, &sf, &cf32};
        for (int k = 0; k < 4; k++) {
            to[k]->n += from[k]->n, to[k]->not_cr += from[k]->not_cr;
            if (from[k]->max_ulp > to[k]->max_ulp) to[k]->max_ulp = from[k]->max_ulp, to[k]->worst_x = from[k]->worst_x;
        }
    }
    for (int d = 0; d < nseen; d++) free(seen_f[d]);
    free(seen_f), free(seen_dr), free(seen_p);
    report(&sn, 1.0);
    report(&cs, 1.0);
    report(&sf, 1.0);
    report(&cf32, 1.0);
}

static void part_exp(long N) {
    seed(1);
    stat e1 = {"exp: random, the finite range [-745, 709.78]", 0, 0, 0, 0};
    stat e2 = {"exp: random float-valued in [-745, 709.78] (SiLU, router)", 0, 0, 0, 0};
    stat e3 = {"exp: random float-valued in [-104, 0] (softmax)", 0, 0, 0, 0};
    for (long i = 0; i < N; i++) {
        one(&e1, mpfr_exp, ds3_exp, uniform(-745.1, 709.78));
        one(&e2, mpfr_exp, ds3_exp, (double)(float)uniform(-745.1, 709.78));
        one(&e3, mpfr_exp, ds3_exp, (double)(float)uniform(-104, 0));
    }
    report(&e1, 1.0);
    report(&e2, 1.0);
    report(&e3, 1.0);
}

static void part_log(long N) {
    seed(2);
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
}

static void part_sincos(long N) {
    seed(3);
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
}

static void part_pow(long N) {
    seed(4);
    stat p1 = {"pow: random base in [2, 1e7], exponent y in [-1, 0] (at y)", 0, 0, 0, 0};
    for (long i = 0; i < N; i++) {
        double base = uniform(2, 1e7), y = uniform(-1, 0);
        mpfr_set_d(X, base, MPFR_RNDN);
        mpfr_set_d(Y, y, MPFR_RNDN);
        mpfr_pow(E, X, Y, MPFR_RNDN);
        account(&p1, y, ds3_pow(base, y));
    }
    report(&p1, 1.0);
}

static int has_part(const char *parts, const char *p) {
    size_t n = strlen(p);
    for (const char *s = parts; (s = strstr(s, p)) != NULL; s += n)
        if ((s == parts || s[-1] == ',') && (s[n] == 0 || s[n] == ',')) return 1;
    return 0;
}

static void usage(FILE *f) {
    fprintf(f, "usage: check_math [-n N] [--part P[,P...]] [CONFIG.json...]\n"
               "  N random inputs per set (default 10000000); parts: tables, angles, exp, log,\n"
               "  sincos, pow, all (default). The RoPE parts use every built-in config and the\n"
               "  config.json files named.\n");
}

int main(int argc, char **argv) {
    long N = 10000000;
    const char *parts = "all";
    char **files = calloc((size_t)argc, sizeof *files);
    int nfiles = 0;
    for (int i = 1; i < argc; i++) {
        char *end = NULL;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "-n") && i + 1 < argc) {
            N = strtol(argv[++i], &end, 10);
            if (*end || N < 0) {
                fprintf(stderr, "check_math: -n wants a count >= 0, got '%s'\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(argv[i], "--part") && i + 1 < argc) {
            parts = argv[++i];
        } else if (argv[i][0] == '-') {
            usage(stderr);
            return 2;
        } else {
            files[nfiles++] = argv[i];
        }
    }
    static const char *const known[] = {"all", "tables", "angles", "exp", "log", "sincos", "pow"};
    for (const char *s = parts; *s;) {
        size_t n = strcspn(s, ",");
        int ok = 0;
        for (size_t k = 0; k < sizeof known / sizeof *known; k++) ok |= strlen(known[k]) == n && !strncmp(s, known[k], n);
        if (!ok) {
            fprintf(stderr, "check_math: unknown part '%.*s' (tables, angles, exp, log, sincos, pow, all)\n", (int)n, s);
            return 2;
        }
        s += n + (s[n] == ',');
    }
    int all = has_part(parts, "all");
    mpfr_inits2(128, X, Y, E, T, (mpfr_ptr)0);  /* 75 bits past double: ulp errors to 2^-70 */
    named_config *cf;
    int ncf = load_configs(&cf, files, nfiles);
    fprintf(stderr, "check_math: %d configs, %ld random inputs per set\n", ncf, N);
    double t0 = cpu_s();
    if (all || has_part(parts, "tables")) part_tables(cf, ncf);
    if (all || has_part(parts, "exp")) part_exp(N);
    if (all || has_part(parts, "log")) part_log(N);
    if (all || has_part(parts, "sincos")) part_sincos(N);
    if (all || has_part(parts, "pow")) part_pow(N);
    if (all || has_part(parts, "angles")) part_angles(cf, ncf);
    fprintf(stderr, "check_math: %.0f s CPU\n", cpu_s() - t0);
    free(cf);
    free(files);
    mpfr_clears(X, Y, E, T, (mpfr_ptr)0);
    mpfr_free_cache();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}

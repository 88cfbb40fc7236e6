/*
 * test_dmath.c — ds3's own exp, log, pow, sin, cos (src/kernels/dmath.c):
 * special values, agreement with the platform's libm, and their bits pinned.
 *
 * The bits: a 64-bit FNV-1a hash of every result's bit pattern over fixed
 * inputs (xorshift, no libm) and over RoPE angles of built-in configs, against
 * the value measured on x86-64 (gcc and clang, f32 and f64 builds, PLAIN_C)
 * and on aarch64 under qemu (scripts/cross-check.sh runs this test there).
 * These functions are what keeps the transcendental part of a dump the same
 * on every platform; a change to them that moves a bit changes the hash, and
 * must say so (docs/PORTABILITY.md).
 *
 * The accuracy: against libm only as a sanity check (both are within one ulp
 * of the exact value, so within two of each other); the measurement against
 * MPFR's correctly rounded values is `make check-math` (tests/mpfr/).
 */
#include "harness.h"
#include "model/model.h"

static uint64_t rng = 0x243f6a8885a308d3ull;
static uint64_t next(void) {
    rng ^= rng >> 12, rng ^= rng << 25, rng ^= rng >> 27;
    return rng * 0x2545f4914f6cdd1dull;
}
static double uniform(double a, double b) { return a + (b - a) * ((double)(next() >> 11) * 0x1p-53); }

static uint64_t fnv = 0xcbf29ce484222325ull;
static void hash(double r) {
    uint64_t u;
    memcpy(&u, &r, sizeof u);
    for (int i = 0; i < 8; i++) fnv = (fnv ^ ((u >> (8 * i)) & 0xff)) * 0x100000001b3ull;
}

/* |a − b| in ulps of b's binade (both finite). */
static double ulps(double a, double b) {
    int e;
    frexp(b, &e);
    int ue = e - 53 < -1074 ? -1074 : e - 53;
    return fabs(a - b) / ldexp(1.0, ue);
}

typedef struct {
    const char *name;
    double worst;
    long n, differ;
} agree;

static void vs_libm(agree *a, double ours, double libm) {
    a->n++;
    if (ours != libm) a->differ++;
    double u = ulps(ours, libm);
    if (u > a->worst) a->worst = u;
}

static void report(const agree *a) {
    CHECK(a->worst < 2.0, "%s: %.3f ulp from libm (bound: 2, each within one of the exact value)", a->name, a->worst);
    fprintf(stderr, "   %-4s %ld inputs: max %.3f ulp from libm, %ld differ in the last place\n", a->name, a->n,
            a->worst, a->differ);
}

int main(void) {
    th_section("special values");
    CHECK(ds3_exp(0.0) == 1.0, "exp(0) = 1");
    CHECK(ds3_exp(-INFINITY) == 0.0, "exp(-inf) = 0");
    CHECK(ds3_exp(INFINITY) == INFINITY, "exp(inf) = inf");
    CHECK(ds3_exp(710.0) == INFINITY, "exp(710) overflows");
    CHECK(ds3_exp(-746.0) == 0.0, "exp(-746) underflows to 0");
    CHECK(ds3_exp(-740.0) > 0 && ds3_exp(-740.0) < 0x1p-1022, "exp(-740) is subnormal: %g", ds3_exp(-740.0));
    CHECK(isnan(ds3_exp(NAN)), "exp(nan) is nan");
    CHECK(ds3_exp(1e-300) == 1.0, "exp(tiny) = 1");
    CHECK(ds3_log(1.0) == 0.0, "log(1) = 0");
    CHECK(ds3_log(0.0) == -INFINITY, "log(0) = -inf");
    CHECK(isnan(ds3_log(-1.0)), "log(-1) is nan");
    CHECK(ds3_log(INFINITY) == INFINITY, "log(inf) = inf");
    CHECK(fabs(ds3_log(0x1p-1074) - (-744.44007192138126)) < 1e-12, "log of the smallest subnormal: %.17g",
          ds3_log(0x1p-1074));
    CHECK(ds3_pow(10000.0, 0.0) == 1.0 && ds3_pow(1.0, -0.5) == 1.0, "pow(x, 0) = pow(1, y) = 1");
    CHECK(ds3_pow(4.0, 0.5) == 2.0 && ds3_pow(10000.0, -0.5) == 0.01, "pow exact cases: %.17g %.17g",
          ds3_pow(4.0, 0.5), ds3_pow(10000.0, -0.5));
    CHECK(ds3_pow(0.0, -1.0) == INFINITY && ds3_pow(0.0, 1.0) == 0.0, "pow(0, y)");
    CHECK(ds3_sin(0.0) == 0.0 && ds3_cos(0.0) == 1.0, "sin(0) = 0, cos(0) = 1");
    CHECK(signbit(ds3_sin(-0.0)), "sin(-0) = -0");
    CHECK(isnan(ds3_sin(INFINITY)) && isnan(ds3_cos(-INFINITY)) && isnan(ds3_sin(NAN)), "sin/cos of inf, nan");

    th_section("against libm (a sanity check; MPFR: make check-math)");
    agree ae = {"exp", 0, 0, 0}, al = {"log", 0, 0, 0}, ap = {"pow", 0, 0, 0}, as = {"sin", 0, 0, 0},
          ac = {"cos", 0, 0, 0};
    for (int i = 0; i < 20000; i++) {
        double x = uniform(-708, 709);
        vs_libm(&ae, ds3_exp(x), exp(x));
        x = uniform(-104, 0);
        vs_libm(&ae, ds3_exp(x), exp(x));
        uint64_t b = (next() % 0x7fe0000000000000ull) + 0x0010000000000000ull;
        memcpy(&x, &b, sizeof x);
        vs_libm(&al, ds3_log(x), log(x));
        x = uniform(0.5, 2);
        vs_libm(&al, ds3_log(x), log(x));
        double base = uniform(2, 1e7), y = uniform(-1, 0);
        vs_libm(&ap, ds3_pow(base, y), pow(base, y));
        x = uniform(-1.6e6, 1.6e6);
        vs_libm(&as, ds3_sin(x), sin(x));
        vs_libm(&ac, ds3_cos(x), cos(x));
        x = uniform(-4, 4);
        vs_libm(&as, ds3_sin(x), sin(x));
        vs_libm(&ac, ds3_cos(x), cos(x));
    }
    report(&ae), report(&al), report(&ap), report(&as), report(&ac);

    th_section("the bits: one hash of every result, the same on every platform");
    rng = 0x243f6a8885a308d3ull;
    for (int i = 0; i < 20000; i++) {
        hash(ds3_exp(uniform(-745.5, 710)));
        hash(ds3_exp((double)(float)uniform(-104, 0)));
        uint64_t b = (next() % 0x7ff0000000000000ull);  /* every positive finite double, subnormals too */
        double x;
        memcpy(&x, &b, sizeof x);
        hash(ds3_log(x));
        double base = uniform(2, 1e7);  /* two statements: argument order is unspecified */
        double y = uniform(-1, 0);
        hash(ds3_pow(base, y));
        x = uniform(-1.6e6, 1.6e6);
        hash(ds3_sin(x)), hash(ds3_cos(x));
        x = uniform(-4, 4);
        hash(ds3_sin(x)), hash(ds3_cos(x));
    }
    /* the RoPE tables: frequencies, YaRN's factor, and sin/cos of the angles
     * (every position of tiny; every 61st of v3, whose table is 163840 x 32) */
    const char *cfgs[] = {"tiny", "tiny-v2", "v3", "kimi-k2"};
    for (int k = 0; k < 4; k++) {
        ds3_config c;
        CHECK(ds3_config_parse(ds3_builtin_config_json(cfgs[k]), cfgs[k], &c) == DS3_OK, "%s parses", cfgs[k]);
        double f[256];
        int half = c.qk_rope_head_dim / 2;
        if (half > 256) continue;
        ds3_yarn_freqs(f, &c);
        for (int j = 0; j < half; j++) hash(f[j]);
        hash(ds3_rope_attn_factor(&c));
        hash(ds3_attn_softmax_scale(&c));
        int stride = c.max_position_embeddings > 4096 ? 61 : 1;
        for (int p = 0; p < c.max_position_embeddings; p += stride)
            for (int j = 0; j < half; j++) {
                double t = (double)p * f[j];
                hash(ds3_sin(t)), hash(ds3_cos(t));
                float tf = (float)p * (float)f[j];
                hash(ds3_sin((double)tf)), hash(ds3_cos((double)tf));
            }
    }
    /* Measured: x86-64 (gcc 12 and clang 14; f32, f64, PLAIN_C builds) and
     * aarch64 (gcc 12 cross, qemu-user). A change here moves dump bits. */
    const uint64_t expected = 0xec79c9e79cd3ddb3ull;
    CHECK(fnv == expected, "dmath hash %016llx, expected %016llx: ds3's exp/log/pow/sin/cos give other bits "
          "than on the machines measured (docs/PORTABILITY.md)", (unsigned long long)fnv, (unsigned long long)expected);
    fprintf(stderr, "   hash %016llx\n", (unsigned long long)fnv);
    th_section("ds3_exp_n: every lane the bits of ds3_exp");
    {
        enum { N = 1 << 16 };
        static double xs[N], ys[N];
        const double edge[] = {0.0, -0.0, 0x1p-29, -0x1p-29, 0x1p-28, -0x1p-28, 0.34657359027997264,
                               -0.34657359027997264, 0.3465735902799727, -0.3465735902799726, -708.0, -708.0000001,
                               -707.9999999, 709.0, 709.0000001, 709.78, -745.2, -745.0, 1e300, -1e300, INFINITY,
                               -INFINITY, NAN, 0.5, -0.5, 1.0, -1.0, 2.0, -2.0, 0x1p-1074, -0x1p-1074};
        const int ne = (int)(sizeof edge / sizeof edge[0]);
        for (int i = 0; i < N; i++) {
            switch (i % 4) {
            case 0: xs[i] = uniform(-750, 712); break;
            case 1: xs[i] = (double)(float)uniform(-104, 0); break;   /* softmax's float differences */
            case 2: xs[i] = uniform(-1, 1) * ldexp(1.0, (int)(next() % 40) - 36); break;  /* near 0 */
            default: xs[i] = edge[next() % (uint64_t)ne]; break;
            }
        }
        /* the loop's two copies, baseline and AVX2 (where the CPU has it) */
        const int copies = ds3_rows_select_avx2(true) ? 2 : 1;
        for (int c = 0; c < copies; c++) {
            ds3_rows_select_avx2(c == 1);
            long bad = 0;
            for (int off = 0; off < 4; off++) {  /* every alignment of the groups of four */
                ds3_exp_n(ys, xs + off, N - off);
                for (int i = 0; i < N - off; i++) {
                    double want = ds3_exp(xs[off + i]);
                    if (isnan(want) ? !isnan(ys[i]) : memcmp(&want, &ys[i], sizeof want) != 0) {
                        if (bad++ < 3) fprintf(stderr, "   x=%a: got %a want %a\n", xs[off + i], ys[i], want);
                    }
                }
            }
            CHECK(bad == 0, "%s copy: %d values x 4 alignments: %ld differ from ds3_exp", c ? "AVX2" : "baseline", N,
                  bad);
        }
        if (copies == 1) fprintf(stderr, "   (no AVX2 on this CPU or in this build: one copy)\n");
        ds3_exp_n(xs, xs, N);  /* in place */
    }
    return th_finish();
}

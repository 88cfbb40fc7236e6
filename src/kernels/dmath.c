/*
 * dmath.c — ds3's own exp, log, pow, sin and cos in double (docs/PORTABILITY.md).
 *
 * The platform's libm need not be correctly rounded, and glibc, musl and
 * macOS differ in the last place on some inputs; every result of ds3 that goes
 * through a transcendental function (SiLU, softmax, the sigmoid router, top-p
 * sampling, the RoPE frequencies and angles) would then differ in its bits
 * from one libc to the next. These are written with IEEE +, −, ×, ÷ only, in
 * a fixed order (no contraction: src/error.h), so they give the same bits
 * everywhere. They are the classic table-free algorithms — Cody–Waite range
 * reduction and minimax polynomials on a small interval, with the
 * coefficients of Sun's fdlibm (public mathematical constants) — accurate to
 * within one ulp; tests/mpfr/check_math.c measures them against MPFR's
 * correctly rounded values (`make check-math`: every input the RoPE tables of
 * the built-in configs produce, and 10^7 random inputs per function).
 *
 * They assume round-to-nearest, which every computing entry sets
 * (src/kernels/fpenv.c).
 */
#include "kernels/kernels.h"

#include <math.h>
#include <string.h>

static uint64_t bits_of(double x) {
    uint64_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static double from_bits(uint64_t u) {
    double x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* x · 2^k for a y near 1 and any k the callers produce (−1100 < k < 1100). */
static double scale2(double y, int k) {
    if (k > 1023) {
        y *= 0x1p1023;
        k -= 1023;
        if (k > 1023) k = 1023;
    } else if (k < -1022) {
        y *= 0x1p-969;  /* 2^-1022 · 2^53: keeps the product normal until the last step */
        k += 969;
        if (k < -1022) k = -1022;
    }
    return y * from_bits((uint64_t)(k + 1023) << 52);
}

/* ln 2 in two parts; the high one has 32 low zero bits, so k·ln2_hi is exact. */
static const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
static const double inv_ln2 = 1.44269504088896338700e+00;

/*
 * exp(x): x = k·ln2 + r, |r| <= ln2/2, k = round(x/ln2); exp(r) from the
 * Remez rational form c(r) = r − r²·P(r²), exp(r) = 1 + 2r/(2 − c) evaluated
 * as 1 − ((lo − r·c/(2 − c)) − hi) to keep r's two parts apart; then × 2^k.
 */
static const double P1 = 1.66666666666666019037e-01, P2 = -2.77777777770155933842e-03,
                    P3 = 6.61375632143793436117e-05, P4 = -1.65339022054652515390e-06,
                    P5 = 4.13813679705723846039e-08;
static const double half_ln2 = 0.5 * 6.93147180559945286227e-01;

/* exp(x + xl), xl a tail below half an ulp of x (0 for a plain exp). */
static double exp_tail(double x, double xl) {
    if (x != x) return x;                         /* NaN */
    if (x > 709.782712893383973096) return HUGE_VAL;
    if (x < -745.13321910194110842) return 0.0;
    double ax = x < 0 ? -x : x;
    if (ax < 0x1p-28) return 1.0 + (x + xl);      /* exp(x) = 1 + x to within half an ulp */
    double hi, lo;
    int k;
    if (ax < half_ln2) {
        k = 0, hi = x, lo = -xl;
    } else {
        double kd = x * inv_ln2;
        kd = kd < 0 ? kd - 0.5 : kd + 0.5;
        k = (int)kd;                              /* round half away from zero */
        hi = x - k * ln2_hi;                      /* exact */
        lo = k * ln2_lo - xl;
    }
    double r = hi - lo;
    double z = r * r;
    double c = r - z * (P1 + z * (P2 + z * (P3 + z * (P4 + z * P5))));
    double y = 1.0 - ((lo - (r * c) / (2.0 - c)) - hi);
    return k == 0 ? y : scale2(y, k);
}

double ds3_exp(double x) { return exp_tail(x, 0.0); }

/*
 * ds3_exp of n values, four at a time with GCC/clang vectors where it can: the
 * same IEEE operations as exp_tail(x, 0) lane by lane, hence the same bits
 * (tests/test_dmath.c compares every lane with ds3_exp). exp_tail's branches
 * become selects: the tiny case (1 + x) is computed beside the general one and
 * chosen per lane; |x| < ln2/2 is the general formula with k = 0 (lo is then
 * +0 where the branch has −0, which no later operation can tell apart: r = x,
 * and lo − t has t ≠ 0 for |x| >= 2^-28); the scale 2^k is one exact product
 * (k = 0: × 1).
 * A group with a NaN or an x whose result overflows or is not normal
 * (x > 709.78 or x < −708) goes through exp_tail instead.
 */
#ifndef DS3_PLAIN_C
typedef double v4d __attribute__((vector_size(32)));
typedef int64_t v4l __attribute__((vector_size(32)));
typedef int32_t v4i __attribute__((vector_size(16)));

/* a where m is all ones, b where it is zero (a macro: 32-byte vectors by
 * value would depend on whether AVX is enabled) */
#define SEL4(m, a, b) ((v4d)(((v4l)(a) & (m)) | ((v4l)(b) & ~(m))))

static inline __attribute__((always_inline)) bool exp4(double *y, const double *x) {
    for (int i = 0; i < 4; i++)
        if (!(x[i] >= -708.0 && x[i] <= 709.0)) return false;  /* NaN too */
    v4d v, kd;
    memcpy(&v, x, sizeof v);
    const v4d zero = {0, 0, 0, 0};
    const v4l neg = v < zero;
    const v4d ax = SEL4(neg, -v, v);
    kd = v * inv_ln2;
    kd = SEL4(kd < zero, kd - 0.5, kd + 0.5);
    const v4i k = __builtin_convertvector(kd, v4i);  /* truncation, as (int)kd */
    const v4d kf = __builtin_convertvector(k, v4d);
    const v4d hi = v - kf * ln2_hi;
    const v4d lo = kf * ln2_lo - 0.0;  /* k = 0: +0 where exp_tail's branch has -0, the same in every use below */  /* exp_tail's k = 0 branch: lo = -xl */
    const v4d r = hi - lo, z = r * r;
    const v4d c = r - z * (P1 + z * (P2 + z * (P3 + z * (P4 + z * P5))));
    const v4d g = 1.0 - ((lo - (r * c) / (2.0 - c)) - hi);
    /* 2^k (a normal number here): k + 1023 lands in the low mantissa bits of
     * 2^52 + k + 1023 (exact), and a shift moves it into the exponent field */
    const v4d p2 = (v4d)((v4l)(kf + (0x1p52 + 1023.0)) << 52);
    const v4d out = SEL4(ax < 0x1p-28, 1.0 + (v + 0.0), g * p2);
    memcpy(y, &out, sizeof out);
    return true;
}

/* The groups of four: the loop compiled twice, for the baseline (two SSE2
 * halves per vector) and, where the CPU has it, for AVX2 (one 256-bit
 * register): the same operations on the same lanes, so the same bits; the
 * AVX2 copy runs where ds3_rows_avx2_ok says (DS3_NO_AVX2 unset). */
static inline __attribute__((always_inline)) int exp_groups(double *y, const double *x, int n) {
    int i = 0;
    for (; i + 4 <= n; i += 4)
        if (!exp4(y + i, x + i))
            for (int j = i; j < i + 4; j++) y[j] = exp_tail(x[j], 0.0);
    return i;
}

static int exp_groups_base(double *y, const double *x, int n) { return exp_groups(y, x, n); }
#if DS3_AVX2_COPY
__attribute__((target("avx2"))) static int exp_groups_avx2(double *y, const double *x, int n) {
    return exp_groups(y, x, n);
}
#endif
#endif

void ds3_exp_n(double *y, const double *x, int n) {
    int i = 0;
#ifndef DS3_PLAIN_C
#if DS3_AVX2_COPY
    i = ds3_rows_avx2_ok() ? exp_groups_avx2(y, x, n) : exp_groups_base(y, x, n);
#else
    i = exp_groups_base(y, x, n);
#endif
#endif
    for (; i < n; i++) y[i] = exp_tail(x[i], 0.0);
}

/*
 * log(x): x = 2^k·(1 + f), sqrt(2)/2 <= 1 + f < sqrt(2); with s = f/(2 + f),
 * log(1 + f) = 2·atanh(s) = f − f²/2 + s·(f²/2 + R(s²)), R a minimax
 * polynomial; k·ln2 is added in two parts.
 */
/* The reduction of log: x = 2^k·(1 + f), sqrt(2)/2 <= 1 + f < sqrt(2) (x finite, > 0). */
static void log_reduce(double x, int *k, double *f) {
    int e = 0;
    uint64_t u = bits_of(x);
    if ((u >> 52) == 0) {                         /* subnormal: scale into the normal range */
        x *= 0x1p54;
        e -= 54;
        u = bits_of(x);
    }
    e += (int)(u >> 52) - 1023;
    double m = from_bits((u & 0x000fffffffffffffull) | 0x3ff0000000000000ull);  /* [1, 2) */
    if (m > 1.41421356237309504880) {
        m *= 0.5;
        e += 1;
    }
    *k = e;
    *f = m - 1.0;                                 /* exact */
}

/* s·(f²/2 + R(s²)) with s = f/(2 + f): log(1 + f) = f − f²/2 + this. */
static double log_poly(double f, double hfsq) {
    static const double Lg1 = 6.666666666666735130e-01, Lg2 = 3.999999999940941908e-01,
                        Lg3 = 2.857142874366239149e-01, Lg4 = 2.222219843214978396e-01,
                        Lg5 = 1.818357216161805012e-01, Lg6 = 1.531383769920937332e-01,
                        Lg7 = 1.479819860511658591e-01;
    double s = f / (2.0 + f);
    double z = s * s, w = z * z;
    double t1 = w * (Lg2 + w * (Lg4 + w * Lg6));
    double t2 = z * (Lg1 + w * (Lg3 + w * (Lg5 + w * Lg7)));
    return s * (hfsq + (t2 + t1));
}

double ds3_log(double x) {
    if (x != x) return x;
    if (x < 0) return NAN;
    if (x == 0) return -HUGE_VAL;
    if (x == HUGE_VAL) return x;
    int k;
    double f;
    log_reduce(x, &k, &f);
    double hfsq = 0.5 * f * f;
    double dk = k;
    return dk * ln2_hi - ((hfsq - (log_poly(f, hfsq) + dk * ln2_lo)) - f);
}

/* ---- pow through log and exp in double-double ------------------------------ */

/* a + b = s + e exactly (Knuth's two-sum). */
static void two_sum(double a, double b, double *s, double *e) {
    double t = a + b, bb = t - a;
    *s = t;
    *e = (a - (t - bb)) + (b - bb);
}

/* a·b = p + e exactly (Dekker's product with Veltkamp's split; no FMA). */
static void two_prod(double a, double b, double *p, double *e) {
    const double split = 134217729.0;  /* 2^27 + 1 */
    double t = split * a, ah = t - (t - a), al = a - ah;
    t = split * b;
    double bh = t - (t - b), bl = b - bh;
    *p = a * b;
    *e = ((ah * bh - *p) + ah * bl + al * bh) + al * bl;
}

/* log(x) as hi + lo, about 2^-60 relative, for x finite and > 0. The terms
 * k·ln2_hi, f and f²/2 are added exactly; the small ones in double. */
static void log_dd(double x, double *hi, double *lo) {
    int k;
    double f;
    log_reduce(x, &k, &f);
    double dk = k, ff, ffl;
    two_prod(f, f, &ff, &ffl);                    /* f² = ff + ffl */
    double hfsq = 0.5 * ff;                       /* exact halving */
    double s1, e1, s2, e2;
    two_sum(dk * ln2_hi, f, &s1, &e1);            /* k·ln2_hi exact */
    two_sum(s1, -hfsq, &s2, &e2);
    double small = e1 + e2 + (log_poly(f, hfsq) - 0.5 * ffl + dk * ln2_lo);
    two_sum(s2, small, hi, lo);
}

/*
 * x^y for x > 0 (what RoPE needs: base^(−2j/Dr)): exp(y·log x) with log x
 * and the product in double-double, so the only large error left is exp's
 * own (y·log x can be ~10, where one ulp of it is ~10 ulps of the result).
 * Other x: libm's special cases are not followed.
 */
double ds3_pow(double x, double y) {
    if (y == 0) return 1.0;
    if (x == 1.0) return 1.0;
    if (!(x > 0)) return x == 0 ? (y > 0 ? 0.0 : HUGE_VAL) : NAN;
    if (x == HUGE_VAL) return y > 0 ? HUGE_VAL : 0.0;
    double lh, ll, ph, pl;
    log_dd(x, &lh, &ll);
    two_prod(y, lh, &ph, &pl);
    pl += y * ll;
    double h, l;
    two_sum(ph, pl, &h, &l);
    return exp_tail(h, l);
}

/* ---- sin and cos ----------------------------------------------------------- */

/* sin(x + y) on |x + y| <= π/4, y the tail of a reduced argument (|y| < ulp(x)/2). */
static double k_sin(double x, double y) {
    static const double S1 = -1.66666666666666324348e-01, S2 = 8.33333333332248946124e-03,
                        S3 = -1.98412698298579493134e-04, S4 = 2.75573137070700676789e-06,
                        S5 = -2.50507602534068634195e-08, S6 = 1.58969099521155010221e-10;
    double z = x * x, v = z * x;
    double r = S2 + z * (S3 + z * (S4 + z * (S5 + z * S6)));
    return x - ((z * (0.5 * y - v * r) - y) - v * S1);
}

/* cos(x + y) on |x + y| <= π/4. 1 − z/2 is split so its rounding error is kept. */
static double k_cos(double x, double y) {
    static const double C1 = 4.16666666666666019037e-02, C2 = -1.38888888888741095749e-03,
                        C3 = 2.48015872894767294178e-05, C4 = -2.75573143513906633035e-07,
                        C5 = 2.08757232129817482790e-09, C6 = -1.13596475577881948265e-11;
    double z = x * x, w = z * z;
    double r = z * (C1 + z * (C2 + z * C3)) + w * w * (C4 + z * (C5 + z * C6));
    double hz = 0.5 * z;
    double one_hz = 1.0 - hz;
    return one_hz + (((1.0 - one_hz) - hz) + (z * r - x * y));
}

/*
 * x = n·π/2 + (y0 + y1), |y0 + y1| <= π/4 (about), n returned. π/2 in three
 * 33-bit parts and their tails (Cody–Waite): n·part is exact for |n| < 2^20,
 * and each further part is subtracted while the reduction has cancelled
 * bits. Accurate for |x| < 2^20·π/2 ≈ 1.6e6 (every RoPE angle of a position
 * below that: θ = p·f, f <= 1); beyond, the results stay deterministic but
 * lose accuracy (no Payne–Hanek reduction).
 */
static int reduce_pio2(double x, double *y0, double *y1) {
    static const double inv_pio2 = 6.36619772367581382433e-01,
                        pio2_1 = 1.57079632673412561417e+00, pio2_1t = 6.07710050650619224932e-11,
                        pio2_2 = 6.07710050630396597660e-11, pio2_2t = 2.02226624879595063154e-21,
                        pio2_3 = 2.02226624871116645580e-21, pio2_3t = 8.47842766036889956997e-32;
    double fn = x * inv_pio2;
    fn = fn < 0 ? fn - 0.5 : fn + 0.5;
    fn = (double)(int64_t)fn;                     /* round half away from zero */
    double r = x - fn * pio2_1;
    double w = fn * pio2_1t;
    double y = r - w;
    int ex = (int)((bits_of(x) >> 52) & 0x7ff);
    if (ex - (int)((bits_of(y) >> 52) & 0x7ff) > 16) {   /* cancellation: second part */
        double t = r;
        w = fn * pio2_2;
        r = t - w;
        w = fn * pio2_2t - ((t - r) - w);
        y = r - w;
        if (ex - (int)((bits_of(y) >> 52) & 0x7ff) > 49) {  /* and the third */
            t = r;
            w = fn * pio2_3;
            r = t - w;
            w = fn * pio2_3t - ((t - r) - w);
            y = r - w;
        }
    }
    *y0 = y;
    *y1 = (r - y) - w;
    return (int)((int64_t)fn & 3);
}

double ds3_sin(double x) {
    double ax = x < 0 ? -x : x;
    if (!(ax < HUGE_VAL)) return x - x;          /* NaN for Inf and NaN */
    if (ax < 0x1p-27) return x;
    if (ax <= 0.785398163397448279) return k_sin(x, 0.0);
    double y0, y1;
    switch (reduce_pio2(x, &y0, &y1)) {
    case 0: return k_sin(y0, y1);
    case 1: return k_cos(y0, y1);
    case 2: return -k_sin(y0, y1);
    default: return -k_cos(y0, y1);
    }
}

double ds3_cos(double x) {
    double ax = x < 0 ? -x : x;
    if (!(ax < HUGE_VAL)) return x - x;
    if (ax < 0x1p-27) return 1.0;
    if (ax <= 0.785398163397448279) return k_cos(x, 0.0);
    double y0, y1;
    switch (reduce_pio2(x, &y0, &y1)) {
    case 0: return k_cos(y0, y1);
    case 1: return -k_sin(y0, y1);
    case 2: return -k_cos(y0, y1);
    default: return k_sin(y0, y1);
    }
}

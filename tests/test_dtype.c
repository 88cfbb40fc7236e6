/*
 * test_dtype.c — element types (docs/MODEL.md §1): e4m3fn, bf16 and f16 decoding and
 * round-to-nearest-even encoding, and block-scaled FP8 row dequantisation.
 *
 * Every decoder is held against an independent formula written here with
 * ldexp; every encoder against a brute-force "nearest representable value,
 * ties to the even code" search, so neither side can share a bug.
 */
#include "harness.h"
#include "generate/generate.h"

#include <float.h>

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next_u64(void) { /* xorshift64*: deterministic, no libc rand() */
    rng ^= rng >> 12; rng ^= rng << 25; rng ^= rng >> 27;
    return rng * 0x2545f4914f6cdd1dull;
}
static double next_unit(void) { return (double)(next_u64() >> 11) * 0x1p-53; }

static float f32_of(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* docs/MODEL.md §1 written out directly: sign, exponent bias 7, subnormal m·2^-9. */
static double ref_e4m3(int b) {
    int s = b >> 7, e = (b >> 3) & 15, m = b & 7;
    if (e == 15 && m == 7) return NAN;
    double v = e == 0 ? ldexp(m, -9) : ldexp(1.0 + m / 8.0, e - 7);
    return s ? -v : v;
}

/* IEEE half: bias 15, subnormal m·2^-24, e == 31 Inf/NaN. */
static double ref_f16(int h) {
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v;
    if (e == 31) v = m ? NAN : INFINITY;
    else if (e == 0) v = ldexp(m, -24);
    else v = ldexp(1.0 + m / 1024.0, e - 15);
    return s ? -v : v;
}

/* Same value and, for zeros, the same sign. */
static int same_value(double a, double b) {
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
    return a == b && !signbit(a) == !signbit(b); /* signbit's nonzero value varies */
}

/* Brute force: the finite e4m3 code nearest to x, ties to the even code, and
 * saturating at ±448. */
static uint8_t brute_e4m3(float x) {
    if (isnan(x)) return 0x7f;
    int best = -1;
    double bestd = INFINITY;
    for (int b = 0; b < 256; b++) {
        double v = ref_e4m3(b);
        if (isnan(v) || (v == 0 && !signbit(v) != !signbit(x))) continue;
        if ((v > 0 && x < 0) || (v < 0 && x > 0)) continue;
        double d = fabs((double)x - v);
        if (d < bestd || (d == bestd && (b & 1) == 0)) { bestd = d; best = b; }
    }
    return (uint8_t)best;
}

static void test_names(void) {
    th_section("dtype names and sizes");
    const char *names[] = {"F32", "F16", "BF16", "F8_E4M3", "F64", "I32", "I64", "U8"};
    const size_t sizes[] = {4, 2, 2, 1, 8, 4, 8, 1};
    for (int i = 0; i < DS3_DT_COUNT; i++) {
        CHECK(strcmp(ds3_dtype_name((ds3_dtype)i), names[i]) == 0, "name of %d is %s", i, ds3_dtype_name((ds3_dtype)i));
        CHECK(ds3_dtype_parse(names[i]) == i, "parse %s", names[i]);
        CHECK(ds3_dtype_size((ds3_dtype)i) == sizes[i], "size of %s", names[i]);
    }
    CHECK(ds3_dtype_parse("F8_E5M2") == -1, "F8_E5M2 is not supported");
    CHECK(ds3_dtype_parse("f32") == -1, "dtype names are case-sensitive");
    CHECK(ds3_dtype_parse("") == -1, "empty dtype");
}

static void test_e4m3_decode(void) {
    th_section("e4m3fn: all 256 codes against the formula");
    int bad = 0;
    for (int b = 0; b < 256; b++) {
        double got = ds3_e4m3_to_f32((uint8_t)b), ref = ref_e4m3(b);
        if (!same_value(got, ref)) {
            bad++;
            fprintf(stderr, "code 0x%02x: got %.9g, ref %.9g\n", b, got, ref);
        }
    }
    CHECK(bad == 0, "%d of 256 e4m3 codes decode wrong", bad);

    /* The values docs/MODEL.md §1 names, so a wrong bias or subnormal rule is obvious. */
    CHECK(ds3_e4m3_to_f32(0x7e) == 448.0f, "0x7e = 448 (max)");
    CHECK(ds3_e4m3_to_f32(0xfe) == -448.0f, "0xfe = -448");
    CHECK(ds3_e4m3_to_f32(0x08) == 0x1p-6f, "0x08 = 2^-6 (smallest normal)");
    CHECK(ds3_e4m3_to_f32(0x07) == 7 * 0x1p-9f, "0x07 = 7*2^-9 (largest subnormal)");
    CHECK(ds3_e4m3_to_f32(0x01) == 0x1p-9f, "0x01 = 2^-9 (smallest subnormal)");
    CHECK(ds3_e4m3_to_f32(0x38) == 1.0f, "0x38 = 1");
    CHECK(ds3_e4m3_to_f32(0x00) == 0.0f && !signbit(ds3_e4m3_to_f32(0x00)), "0x00 = +0");
    CHECK(ds3_e4m3_to_f32(0x80) == 0.0f && signbit(ds3_e4m3_to_f32(0x80)), "0x80 = -0");
    CHECK(isnan(ds3_e4m3_to_f32(0x7f)), "0x7f is NaN");
    CHECK(isnan(ds3_e4m3_to_f32(0xff)), "0xff is NaN");
    CHECK(ds3_e4m3_to_f32(0x78) == 256.0f, "0x78 = 256 (e=15 is finite in e4m3fn)");
}

static void test_e4m3_encode(void) {
    th_section("e4m3fn: encoding, rounding, saturation");
    int bad = 0;
    for (int b = 0; b < 256; b++) {
        if ((b & 0x7f) == 0x7f) continue;
        uint8_t back = ds3_f32_to_e4m3(ds3_e4m3_to_f32((uint8_t)b));
        if (back != b) { bad++; fprintf(stderr, "code 0x%02x encodes back to 0x%02x\n", b, back); }
    }
    CHECK(bad == 0, "%d finite codes do not round-trip", bad);

    /* Midpoints between neighbouring codes are ties: the even code wins. Just
     * off the midpoint, the nearer one. Codes are monotone in value for b < 0x7f,
     * so b and b+1 are neighbours across binade boundaries too. */
    int bad_tie = 0, bad_near = 0;
    for (int b = 0; b < 0x7e; b++) {
        float lo = ds3_e4m3_to_f32((uint8_t)b), hi = ds3_e4m3_to_f32((uint8_t)(b + 1));
        float mid = (lo + hi) / 2; /* exact: few significant bits */
        uint8_t even = (b & 1) ? (uint8_t)(b + 1) : (uint8_t)b;
        if (ds3_f32_to_e4m3(mid) != even) bad_tie++;
        if (ds3_f32_to_e4m3(-mid) != (even | 0x80)) bad_tie++;
        if (ds3_f32_to_e4m3(nextafterf(mid, 0)) != b) bad_near++;
        if (ds3_f32_to_e4m3(nextafterf(mid, INFINITY)) != b + 1) bad_near++;
    }
    CHECK(bad_tie == 0, "%d midpoints did not round to the even code", bad_tie);
    CHECK(bad_near == 0, "%d near-midpoint values did not round to the nearer code", bad_near);

    CHECK(ds3_f32_to_e4m3(0x1p-10f) == 0x00, "2^-10 (tie 0 / 2^-9) -> 0");
    CHECK(ds3_f32_to_e4m3(3 * 0x1p-10f) == 0x02, "3*2^-10 (tie 1 / 2 units) -> 2");
    CHECK(ds3_f32_to_e4m3(0x1p-30f) == 0x00, "tiny -> +0");
    CHECK(ds3_f32_to_e4m3(-0x1p-30f) == 0x80, "-tiny -> -0");
    CHECK(ds3_f32_to_e4m3(-0.0f) == 0x80, "-0 -> 0x80");
    CHECK(ds3_f32_to_e4m3(FLT_MIN / 4) == 0x00, "f32 subnormal -> 0");
    CHECK(ds3_f32_to_e4m3(448.0f) == 0x7e, "448 -> 0x7e");
    CHECK(ds3_f32_to_e4m3(449.0f) == 0x7e, "449 saturates");
    CHECK(ds3_f32_to_e4m3(464.0f) == 0x7e, "464 saturates");
    CHECK(ds3_f32_to_e4m3(1e30f) == 0x7e, "1e30 saturates");
    CHECK(ds3_f32_to_e4m3(INFINITY) == 0x7e, "+Inf saturates to 448");
    CHECK(ds3_f32_to_e4m3(-INFINITY) == 0xfe, "-Inf saturates to -448");
    CHECK(ds3_f32_to_e4m3(-500.0f) == 0xfe, "-500 saturates to -448");
    CHECK(ds3_f32_to_e4m3(NAN) == 0x7f, "NaN -> 0x7f");
    CHECK(ds3_f32_to_e4m3(-NAN) == 0x7f, "-NaN -> 0x7f");
    CHECK(ds3_f32_to_e4m3(432.0f) == 0x7e, "432 (tie 416/448) -> 448, the even code");

    /* Random values over the whole range (log-uniform magnitudes, both signs)
     * against the brute-force search. */
    int bad_rand = 0;
    for (int i = 0; i < 20000; i++) {
        /* separate statements: argument evaluation order is unspecified */
        double frac = next_unit();
        int ex = (int)(next_u64() % 30) - 20;
        float x = (float)ldexp(1.0 + frac, ex);
        if (next_u64() & 1) x = -x;
        uint8_t got = ds3_f32_to_e4m3(x), want = brute_e4m3(x);
        if (got != want) {
            if (bad_rand < 5) fprintf(stderr, "x=%.9g: got 0x%02x want 0x%02x\n", x, got, want);
            bad_rand++;
        }
    }
    CHECK(bad_rand == 0, "%d of 20000 random values encode differently from brute force", bad_rand);
}

static void test_bf16(void) {
    th_section("bf16: all codes, round trips, ties");
    int bad_dec = 0, bad_rt = 0;
    for (int h = 0; h < 65536; h++) {
        float f = ds3_bf16_to_f32((uint16_t)h);
        /* bf16 is f32 with 16 fewer mantissa bits: the reference is the f32
         * with those bits zero, independent of the shift in dtype.c. */
        double ref = f32_of((uint32_t)h << 16);
        int e = (h >> 7) & 0xff, m = h & 0x7f;
        if (e != 0 && e != 255) {
            double v = ldexp(1.0 + m / 128.0, e - 127);
            ref = (h & 0x8000) ? -v : v;
        }
        if (!same_value(f, ref)) bad_dec++;
        uint16_t back = ds3_f32_to_bf16(f);
        if (isnan(f) ? !isnan(ds3_bf16_to_f32(back)) : back != h) bad_rt++;
    }
    CHECK(bad_dec == 0, "%d bf16 codes decode wrong", bad_dec);
    CHECK(bad_rt == 0, "%d bf16 codes do not round-trip", bad_rt);

    CHECK(ds3_f32_to_bf16(f32_of(0x3f808000u)) == 0x3f80, "tie 1+2^-8 -> 1 (even)");
    CHECK(ds3_f32_to_bf16(f32_of(0x3f818000u)) == 0x3f82, "tie with odd lsb rounds up to even");
    CHECK(ds3_f32_to_bf16(f32_of(0x3f808001u)) == 0x3f81, "just above the tie rounds up");
    CHECK(ds3_f32_to_bf16(f32_of(0x3f807fffu)) == 0x3f80, "just below the tie rounds down");
    CHECK(ds3_f32_to_bf16(f32_of(0xbf818000u)) == 0xbf82, "negative tie to even");
    CHECK(ds3_f32_to_bf16(f32_of(0x7f7fffffu)) == 0x7f80, "FLT_MAX rounds to +Inf");
    CHECK(ds3_f32_to_bf16(INFINITY) == 0x7f80, "+Inf");
    CHECK(isnan(ds3_bf16_to_f32(ds3_f32_to_bf16(f32_of(0x7f800001u)))), "NaN with low payload stays NaN");
    CHECK(isnan(ds3_bf16_to_f32(ds3_f32_to_bf16(f32_of(0xffffffffu)))), "negative NaN stays NaN");
    CHECK(ds3_f32_to_bf16(f32_of(0x00008000u)) == 0x0000, "subnormal tie to even (0)");
    CHECK(ds3_f32_to_bf16(f32_of(0x00018000u)) == 0x0002, "subnormal tie to even (2)");
}

static void test_f16(void) {
    th_section("f16: all codes, round trips, ties, overflow");
    int bad_dec = 0, bad_rt = 0;
    for (int h = 0; h < 65536; h++) {
        float f = ds3_f16_to_f32((uint16_t)h);
        if (!same_value(f, ref_f16(h))) bad_dec++;
        uint16_t back = ds3_f32_to_f16(f);
        if (isnan(f) ? !isnan(ds3_f16_to_f32(back)) : back != h) bad_rt++;
    }
    CHECK(bad_dec == 0, "%d f16 codes decode wrong", bad_dec);
    CHECK(bad_rt == 0, "%d f16 codes do not round-trip", bad_rt);

    CHECK(ds3_f32_to_f16(1.0f + 0x1p-11f) == 0x3c00, "tie 1+2^-11 -> 1 (even)");
    CHECK(ds3_f32_to_f16(1.0f + 3 * 0x1p-11f) == 0x3c02, "tie 1+3*2^-11 -> even up");
    CHECK(ds3_f32_to_f16(65504.0f) == 0x7bff, "65504 is the max");
    CHECK(ds3_f32_to_f16(65519.0f) == 0x7bff, "65519 rounds to the max");
    CHECK(ds3_f32_to_f16(65520.0f) == 0x7c00, "65520 (tie to 2^16) overflows to Inf");
    CHECK(ds3_f32_to_f16(-1e9f) == 0xfc00, "-1e9 -> -Inf");
    CHECK(ds3_f32_to_f16(0x1p-25f) == 0x0000, "2^-25 (tie 0 / 2^-24) -> 0");
    CHECK(ds3_f32_to_f16(3 * 0x1p-25f) == 0x0002, "3*2^-25 -> 2 units (even)");
    CHECK(ds3_f32_to_f16(0x1p-14f - 0x1p-25f) == 0x0400, "tie below 2^-14 rounds up into the normals");
    CHECK(ds3_f32_to_f16(-0.0f) == 0x8000, "-0");
    CHECK(isnan(ds3_f16_to_f32(ds3_f32_to_f16(NAN))), "NaN stays NaN");

    /* Random floats: the result must be at least as near as both neighbours,
     * and on an exact tie the even code. */
    int bad_rand = 0;
    for (int i = 0; i < 20000; i++) {
        double frac = next_unit();
        int ex = (int)(next_u64() % 40) - 26;
        float x = (float)ldexp(1.0 + frac, ex);
        uint16_t h = ds3_f32_to_f16(x);
        double d = fabs(ref_f16(h) - x);
        double dlo = h > 0 ? fabs(ref_f16(h - 1) - x) : INFINITY;
        double dhi = h < 0x7bff ? fabs(ref_f16(h + 1) - x) : INFINITY;
        int ok = d <= dlo && d <= dhi && !((d == dlo || d == dhi) && (h & 1));
        if (!ok) bad_rand++;
    }
    CHECK(bad_rand == 0, "%d of 20000 random values not rounded to nearest even", bad_rand);
}

/* ds3_tensor_rows on a [300 x 200] F8 weight: 300 = 2·128 + 44 rows and
 * 200 = 128 + 72 columns, so both edges have partial scale blocks. Data and
 * scales sit at odd addresses, as they may inside a safetensors mapping. */
static void test_fp8_rows(void) {
    th_section("F8_E4M3 [300 x 200] block-scaled rows");
    enum { R = 300, C = 200, RB = 3, CB = 2 };
    unsigned char *qbuf = malloc(R * C + 1), *sbuf = malloc(RB * CB * 4 + 3);
    float scales[RB * CB];
    uint8_t *q = qbuf + 1;
    for (int k = 0; k < R * C; k++) {
        uint8_t b;
        do b = (uint8_t)next_u64(); while ((b & 0x7f) == 0x7f); /* no NaN weights */
        q[k] = b;
    }
    for (int k = 0; k < RB * CB; k++) { /* arbitrary f32 scales, not powers of two */
        double frac = next_unit();
        scales[k] = (float)ldexp(0.5 + 0.5 * frac, (int)(next_u64() % 12) - 14);
    }
    memcpy(sbuf + 3, scales, sizeof scales);

    ds3_tensor w = {"test.fp8", DS3_DT_F8_E4M3, R, C, q, sbuf + 3, NULL, NULL};
    double *got = malloc(sizeof(double) * R * C), *ref = malloc(sizeof(double) * R * C);
    ds3_real *out = malloc(sizeof(ds3_real) * R * C);
    ds3_tensor_rows(out, &w, 0, R);
    for (int i = 0; i < R; i++)
        for (int j = 0; j < C; j++) {
            got[i * C + j] = out[i * C + j];
            ref[i * C + j] = ref_e4m3(q[i * C + j]) * (double)scales[(i / 128) * CB + j / 128];
        }
    /* The f64 build's product is exact; the f32 build rounds it once. */
    double rtol = sizeof(ds3_real) == 8 ? 0.0 : 0x1p-24;
    th_check_close("fp8 rows vs value*scale in double", got, ref, (long)R * C, 0.0, rtol);

    /* Spot the block each edge element used: the last row block holds rows 256..299. */
    CHECK(got[299 * C + 199] == (double)(ds3_real)((ds3_real)ref_e4m3(q[299 * C + 199]) * (ds3_real)scales[2 * CB + 1]),
          "element [299][199] uses scale block [2][1]");
    CHECK(got[128 * C + 127] == (double)(ds3_real)((ds3_real)ref_e4m3(q[128 * C + 127]) * (ds3_real)scales[1 * CB + 0]),
          "element [128][127] uses scale block [1][0]");

    /* Sub-ranges that start mid-block and cross block edges agree with the full read. */
    int64_t ranges[][2] = {{250, 50}, {127, 2}, {0, 1}, {299, 1}, {128, 128}};
    for (size_t r = 0; r < sizeof ranges / sizeof ranges[0]; r++) {
        int64_t r0 = ranges[r][0], n = ranges[r][1];
        ds3_real *part = malloc(sizeof(ds3_real) * n * C);
        ds3_tensor_rows(part, &w, r0, n);
        CHECK(memcmp(part, out + r0 * C, sizeof(ds3_real) * n * C) == 0,
              "rows [%lld, +%lld) match the full read", (long long)r0, (long long)n);
        free(part);
    }
    /* ds3_tensor_get gives exactly the element the rows path produces. */
    int bad_get = 0;
    for (int i = 0; i < R; i += 7)
        for (int j = 0; j < C; j += 3)
            if (ds3_tensor_get(&w, i, j) != (double)out[i * C + j]) bad_get++;
    CHECK(bad_get == 0, "%d ds3_tensor_get values differ from ds3_tensor_rows", bad_get);

    /* Without scales the weight is plain e4m3. */
    ds3_tensor w1 = {"test.fp8.unscaled", DS3_DT_F8_E4M3, R, C, q, NULL, NULL, NULL};
    CHECK(ds3_tensor_get(&w1, 5, 6) == ref_e4m3(q[5 * C + 6]), "unscaled F8 element");

    free(qbuf); free(sbuf); free(got); free(ref); free(out);
}

/* BF16, F16, F32 and F64 rows from unaligned data, element by element. */
static void test_other_rows(void) {
    th_section("BF16 / F16 / F32 / F64 rows");
    enum { R = 5, C = 7, N = R * C };
    float vals[N];
    for (int k = 0; k < N; k++) vals[k] = (float)((next_unit() - 0.5) * 100.0);

    unsigned char buf[N * 8 + 1];
    ds3_real out[N];
    double got[N], ref[N];

    /* BF16: the reference is the decoded code, computed by the formula above. */
    for (int k = 0; k < N; k++) {
        uint16_t h = ds3_f32_to_bf16(vals[k]);
        memcpy(buf + 1 + 2 * k, &h, 2);
        ref[k] = f32_of((uint32_t)h << 16);
    }
    ds3_tensor wb = {"bf16", DS3_DT_BF16, R, C, buf + 1, NULL, NULL, NULL};
    ds3_tensor_rows(out, &wb, 0, R);
    for (int k = 0; k < N; k++) got[k] = out[k];
    th_check_close("bf16 rows", got, ref, N, 0, 0);
    ds3_tensor_rows(out, &wb, 3, 2);
    for (int k = 0; k < 2 * C; k++) got[k] = out[k];
    th_check_close("bf16 rows 3..4", got, ref + 3 * C, 2 * C, 0, 0);

    for (int k = 0; k < N; k++) {
        uint16_t h = ds3_f32_to_f16(vals[k]);
        memcpy(buf + 1 + 2 * k, &h, 2);
        ref[k] = ref_f16(h);
    }
    ds3_tensor wh = {"f16", DS3_DT_F16, R, C, buf + 1, NULL, NULL, NULL};
    ds3_tensor_rows(out, &wh, 0, R);
    for (int k = 0; k < N; k++) got[k] = out[k];
    th_check_close("f16 rows", got, ref, N, 0, 0);

    memcpy(buf + 1, vals, sizeof vals);
    for (int k = 0; k < N; k++) ref[k] = vals[k];
    ds3_tensor wf = {"f32", DS3_DT_F32, R, C, buf + 1, NULL, NULL, NULL};
    ds3_tensor_rows(out, &wf, 1, 4);
    for (int k = 0; k < 4 * C; k++) got[k] = out[k];
    th_check_close("f32 rows 1..4", got, ref + C, 4 * C, 0, 0);
    CHECK(ds3_tensor_get(&wf, 4, 6) == vals[4 * C + 6], "f32 get");

    double dv[N];
    for (int k = 0; k < N; k++) dv[k] = vals[k] / 3.0;
    memcpy(buf + 1, dv, sizeof dv);
    ds3_tensor wd = {"f64", DS3_DT_F64, R, C, buf + 1, NULL, NULL, NULL};
    ds3_tensor_rows(out, &wd, 0, R);
    for (int k = 0; k < N; k++) { got[k] = out[k]; ref[k] = (double)(ds3_real)dv[k]; }
    th_check_close("f64 rows (in the scalar type)", got, ref, N, 0, 0);

    /* A 1-D tensor is one row. */
    ds3_tensor w1 = {"vec", DS3_DT_F32, 1, N, buf + 1, NULL, NULL, NULL};
    memcpy(buf + 1, vals, sizeof vals);
    ds3_tensor_rows(out, &w1, 0, 1);
    CHECK(out[N - 1] == (ds3_real)vals[N - 1], "1-D tensor read as one row");
}

/*
 * ds3_tensor_rows has AVX2 loops for BF16 and F8_E4M3 (linear_avx2.c) next to
 * the scalar ones: every bit must agree, for all 256 e4m3 codes under
 * arbitrary scales, ragged edge blocks and starts in the middle of a block.
 */
static void test_rows_avx2(void) {
    th_section("ds3_tensor_rows: AVX2 loops vs scalar loops");
    if (!ds3_rows_select_avx2(true)) {
        fprintf(stderr, "   (no AVX2 on this CPU, or the f64 build: one copy only)\n");
        return;
    }
    enum { R = 260, C = 300, RB = 3, CB = 3 };
    unsigned char *q = malloc(R * C), *h = malloc(2 * R * C + 2);
    float scales[RB * CB];
    for (int k = 0; k < R * C; k++) q[k] = (uint8_t)(k < 256 ? (uint64_t)k : next_u64()); /* every code, NaNs too */
    for (int k = 0; k < 2 * R * C + 2; k++) h[k] = (uint8_t)next_u64();
    for (int k = 0; k < RB * CB; k++) scales[k] = (float)ldexp(0.5 + 0.5 * next_unit(), (int)(next_u64() % 40) - 20);
    ds3_tensor w8 = {"t.fp8", DS3_DT_F8_E4M3, R, C, q, scales, NULL, NULL};
    ds3_tensor w8u = {"t.fp8u", DS3_DT_F8_E4M3, R, C, q, NULL, NULL, NULL};
    ds3_tensor wb = {"t.bf16", DS3_DT_BF16, R, C, h + 1, NULL, NULL, NULL}; /* unaligned */
    /* no NaN codes (every block may take the half decoder), and a scale of
     * 2^121, whose product with 2^8 overflows: that block must not */
    unsigned char *qf = malloc(R * C);
    float scales_f[RB * CB];
    for (int k = 0; k < R * C; k++) qf[k] = (q[k] & 0x7f) == 0x7f ? 0x3a : q[k];
    for (int k = 0; k < RB * CB; k++) scales_f[k] = k == 4 ? 0x1p121f : scales[k];
    ds3_tensor w8f = {"t.fp8-finite", DS3_DT_F8_E4M3, R, C, qf, scales_f, NULL, NULL};
    /* the same two with a block record as the loader gives them (kernels.h
     * fp8_seen): what the first call learns the later ones decode by */
    static _Atomic unsigned char seen[RB * CB], seen_f[RB * CB];
    ds3_tensor w8s = w8, w8fs = w8f;
    w8s.name = "t.fp8 (blocks learned)", w8s.fp8_seen = seen;
    w8fs.name = "t.fp8-finite (blocks learned)", w8fs.fp8_seen = seen_f;
    const ds3_tensor *ws[] = {&w8, &w8u, &wb, &w8f, &w8s, &w8fs};
    ds3_real *a = malloc(sizeof(ds3_real) * R * C), *b = malloc(sizeof(ds3_real) * R * C);
    int64_t ranges[][2] = {{0, R}, {127, 3}, {255, 5}, {1, 1}};
    for (int k = 0; k < 6; k++)
        for (size_t r = 0; r < sizeof ranges / sizeof ranges[0]; r++) {
            int64_t r0 = ranges[r][0], n = ranges[r][1];
            ds3_rows_select_avx2(true);
            ds3_tensor_rows(a, ws[k], r0, n);
            ds3_rows_select_avx2(false);
            ds3_tensor_rows(b, ws[k], r0, n);
            long bad = 0;  /* bit-identical, or NaN on both sides (the NaN codes) */
            for (int64_t e = 0; e < n * C; e++)
                bad += isnan(a[e]) ? !isnan(b[e]) : memcmp(&a[e], &b[e], sizeof a[e]) != 0;
            CHECK(bad == 0, "%s rows [%lld, +%lld): same bits (%ld differ)", ws[k]->name, (long long)r0,
                  (long long)n, bad);
        }
    ds3_rows_select_avx2(true);
    free(q); free(qf); free(h); free(a); free(b);
}

int main(void) {
    test_names();
    test_e4m3_decode();
    test_e4m3_encode();
    test_bf16();
    test_f16();
    test_fp8_rows();
    test_other_rows();
    test_rows_avx2();
    return th_finish();
}

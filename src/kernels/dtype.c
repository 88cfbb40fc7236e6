/*
 * dtype.c — element types of a checkpoint and how to read them (docs/MODEL.md §1, §7).
 *
 * Weights stay in their checkpoint dtype and are dequantised as they are read:
 * F32/F64 as is, BF16 and F16 widened exactly, and F8_E4M3 (e4m3fn) through
 * its 128×128 block scales:
 *
 *     W[i][j] = e4m3(q[i][j]) * scale_inv[i/128][j/128]      (the "_inv" multiplies)
 *
 * Edge blocks are partial when a dimension is not a multiple of 128 (a 576-row
 * kv_a_proj has 5 row blocks, the last one 64 rows tall).
 *
 * The product is taken in the scalar type, which reproduces what PyTorch does:
 * `q.to(float32) * s` rounds once to float; in the f64 build both factors are
 * exact in double (4-bit × 24-bit significands) so the product is exact.
 *
 * Also here: the round-to-nearest-even encoders (f32 → bf16/f16/e4m3) that the
 * synthetic-model writer and the emulation modes use. Data pointers into a
 * safetensors mapping carry no alignment promise, so every multi-byte read
 * goes through memcpy (compilers turn it into a plain load).
 */
#include "kernels/kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#endif

/* ========================================================================== */
/* Names and sizes                                                            */
/* ========================================================================== */

static const struct {
    const char *name;   /* as written in a safetensors header */
    size_t size;        /* bytes per element */
} dtype_info[DS3_DT_COUNT] = {
    [DS3_DT_F32] = {"F32", 4},    [DS3_DT_F16] = {"F16", 2},
    [DS3_DT_BF16] = {"BF16", 2},  [DS3_DT_F8_E4M3] = {"F8_E4M3", 1},
    [DS3_DT_F64] = {"F64", 8},    [DS3_DT_I32] = {"I32", 4},
    [DS3_DT_I64] = {"I64", 8},    [DS3_DT_U8] = {"U8", 1},
};

const char *ds3_dtype_name(ds3_dtype dt) {
    return (unsigned)dt < DS3_DT_COUNT ? dtype_info[dt].name : "?";
}

int ds3_dtype_parse(const char *s) {
    for (int i = 0; i < DS3_DT_COUNT; i++)
        if (strcmp(s, dtype_info[i].name) == 0) return i;
    return -1;
}

size_t ds3_dtype_size(ds3_dtype dt) {
    DS3_ASSERT((unsigned)dt < DS3_DT_COUNT);
    return dtype_info[dt].size;
}

/* ========================================================================== */
/* Scalar conversions                                                         */
/* ========================================================================== */

static inline float f32_from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

/* bf16 is the top half of an f32, so widening is a shift. */
float ds3_bf16_to_f32(uint16_t h) { return f32_from_bits((uint32_t)h << 16); }

uint16_t ds3_f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    /* Rounding could carry a NaN's payload into the exponent and turn it into
     * Inf; keep the top payload bits and force the quiet bit instead. */
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u);
    /* Round to nearest even at bit 16: add just under half, plus one if the
     * kept lsb is odd. A carry into the exponent is correct (and ends in Inf
     * above the bf16 maximum, as IEEE rounding does). */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* IEEE binary16: 1 sign, 5 exponent (bias 15), 10 mantissa bits. */
float ds3_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0) {
        /* zero or subnormal: m · 2^-24, exact in f32 */
        float v = (float)m * 0x1p-24f;
        return f32_from_bits(f32_bits(v) | sign);
    }
    if (e == 31) return f32_from_bits(sign | 0x7f800000u | (m << 13)); /* Inf, NaN */
    return f32_from_bits(sign | ((e + 112u) << 23) | (m << 13));       /* rebias 15 → 127 */
}

uint16_t ds3_f32_to_f16(float f) {
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7e00u;            /* NaN stays (quiet) NaN */
    /* 65520 is the midpoint between the largest half (65504) and 2^16; the tie
     * goes to the even neighbour 2^16, which is Inf. */
    if (a >= 0x477ff000u) return sign | 0x7c00u;
    if (a >= 0x38800000u) {                                  /* >= 2^-14: a normal half */
        a += 0xfffu + ((a >> 13) & 1u);                      /* RNE at bit 13 */
        return sign | (uint16_t)((a - (112u << 23)) >> 13);
    }
    /* Subnormal half: quantum 2^-24. a·2^24 < 1024 is exact, and rintf rounds
     * ties to even in the default rounding mode; 1024 lands on the smallest
     * normal, whose encoding is exactly 0x400. */
    return sign | (uint16_t)rintf(f32_from_bits(a) * 0x1p24f);
}

/*
 * e4m3fn (docs/MODEL.md §1): sign b>>7, exponent e=(b>>3)&15 with bias 7, mantissa m=b&7;
 * e==0 is subnormal m·2^-9; e==15 && m==7 is NaN; there is no Inf; max 448.
 *
 * A table of all 256 values, built as constant expressions so that there is
 * nothing to initialise at run time (and no race between threads doing so).
 * With n = (e ? 8+m : m) — the significand as an integer — every magnitude is
 * n · 2^(max(e,1) - 10) = (n << (max(e,1) - 1)) · 2^-9, exactly.
 */
#define E4M3_E(b) (((b) >> 3) & 15)
#define E4M3_MAG(b)                                                            \
    ((float)((E4M3_E(b) ? 8 + ((b) & 7) : ((b) & 7)) << (E4M3_E(b) ? E4M3_E(b) - 1 : 0)) * 0x1p-9f)
#define E4M3_VAL(b) \
    (((b) & 0x7f) == 0x7f ? NAN : ((b) & 0x80) ? -E4M3_MAG(b) : E4M3_MAG(b))
#define E4M3_4(b) E4M3_VAL(b), E4M3_VAL((b) + 1), E4M3_VAL((b) + 2), E4M3_VAL((b) + 3)
#define E4M3_16(b) E4M3_4(b), E4M3_4((b) + 4), E4M3_4((b) + 8), E4M3_4((b) + 12)
#define E4M3_64(b) E4M3_16(b), E4M3_16((b) + 16), E4M3_16((b) + 32), E4M3_16((b) + 48)

const float ds3_e4m3_table[256] = {E4M3_64(0), E4M3_64(64), E4M3_64(128), E4M3_64(192)};

float ds3_e4m3_to_f32(uint8_t b) { return ds3_e4m3_table[b]; }

uint8_t ds3_f32_to_e4m3(float f) {
    uint32_t u = f32_bits(f);
    uint8_t sign = (uint8_t)((u >> 24) & 0x80u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return 0x7f;                 /* NaN → the canonical NaN code */
    /* Saturate rather than overflow: the FP8 quantiser of the official code
     * scales by amax/448, so anything beyond 448 (Inf included) means "max". */
    if (a > 0x43e00000u) return sign | 0x7e;          /* |f| > 448 */
    if (a < 0x3c800000u) {
        /* Below 2^-6 the e4m3 grid is uniform with step 2^-9: round |f|·512
         * (exact) to an integer 0..8; 8 is 2^-6 = code 0x08, the first normal. */
        return sign | (uint8_t)rintf(f32_from_bits(a) * 512.0f);
    }
    /* Normal: keep 3 of the 23 mantissa bits, ties to even; a carry bumps the
     * exponent, which is what rounding up to the next binade means. Then
     * rebias the exponent from 127 to 7 (120 << 3 in the shifted layout). */
    a += 0x7ffffu + ((a >> 20) & 1u);
    return sign | (uint8_t)((a >> 20) - (120u << 3));
}

/* ========================================================================== */
/* Tensor views                                                               */
/* ========================================================================== */

static inline float rd_f32(const unsigned char *p) { float v; memcpy(&v, p, 4); return v; }
static inline uint16_t rd_u16(const unsigned char *p) { uint16_t v; memcpy(&v, p, 2); return v; }

/* Scale of block (i/128, j/128), read from the F32 [ceil(rows/128)][ceil(cols/128)] grid. */
static inline float fp8_scale(const ds3_tensor *w, int64_t i, int64_t j) {
    if (!w->scale_inv) return 1.0f; /* unscaled e4m3 (tests, tools) */
    int64_t ncb = (w->cols + DS3_FP8_BLOCK - 1) / DS3_FP8_BLOCK;
    int64_t k = (i / DS3_FP8_BLOCK) * ncb + j / DS3_FP8_BLOCK;
    return rd_f32((const unsigned char *)w->scale_inv + 4 * k);
}

/* One element, the same arithmetic as ds3_tensor_rows, so the two agree bit for bit. */
static ds3_real tensor_elem(const ds3_tensor *w, int64_t r, int64_t c) {
    const unsigned char *p = (const unsigned char *)w->data;
    int64_t k = r * w->cols + c;
    switch (w->dtype) {
    case DS3_DT_F32: return (ds3_real)rd_f32(p + 4 * k);
    case DS3_DT_F16: return (ds3_real)ds3_f16_to_f32(rd_u16(p + 2 * k));
    case DS3_DT_BF16: return (ds3_real)ds3_bf16_to_f32(rd_u16(p + 2 * k));
    case DS3_DT_F8_E4M3: return (ds3_real)ds3_e4m3_table[p[k]] * (ds3_real)fp8_scale(w, r, c);
    case DS3_DT_F64: { double v; memcpy(&v, p + 8 * k, 8); return (ds3_real)v; }
    case DS3_DT_I32: { int32_t v; memcpy(&v, p + 4 * k, 4); return (ds3_real)v; }
    case DS3_DT_I64: { int64_t v; memcpy(&v, p + 8 * k, 8); return (ds3_real)v; }
    case DS3_DT_U8: return (ds3_real)p[k];
    case DS3_DT_COUNT: break;
    }
    DS3_ASSERT(!"tensor has an unknown dtype");
    return 0;
}

double ds3_tensor_get(const ds3_tensor *w, int64_t r, int64_t c) {
    DS3_ASSERT(r >= 0 && r < w->rows && c >= 0 && c < w->cols);
    return (double)tensor_elem(w, r, c);
}

/*
 * out[n] = w[r][c0 .. c0+n), dequantised, for a segment that does not cross a
 * 128-column scale block: the unit linear.c's kernels decode at a time. The
 * arithmetic is ds3_tensor_rows', so both give the same values.
 */
void ds3_tensor_block(ds3_real *out, const ds3_tensor *w, int64_t r, int64_t c0, int64_t n) {
    DS3_ASSERT(n >= 0 && c0 >= 0 && c0 + n <= w->cols && r >= 0 && r < w->rows);
    DS3_ASSERT(n == 0 || c0 / DS3_FP8_BLOCK == (c0 + n - 1) / DS3_FP8_BLOCK);
    const unsigned char *p = (const unsigned char *)w->data + (size_t)(r * w->cols + c0) * ds3_dtype_size(w->dtype);
    switch (w->dtype) {
    case DS3_DT_F32:
        for (int64_t j = 0; j < n; j++) out[j] = (ds3_real)rd_f32(p + 4 * j);
        return;
    case DS3_DT_BF16:
        /* bf16 is the top half of an f32: a shift, inlined here for the hot loop */
        for (int64_t j = 0; j < n; j++) out[j] = (ds3_real)f32_from_bits((uint32_t)rd_u16(p + 2 * j) << 16);
        return;
    case DS3_DT_F8_E4M3: {
        const ds3_real s = (ds3_real)fp8_scale(w, r, c0);
        for (int64_t j = 0; j < n; j++) out[j] = (ds3_real)ds3_e4m3_table[p[j]] * s;
        return;
    }
    default:
        for (int64_t j = 0; j < n; j++) out[j] = tensor_elem(w, r, c0 + j);
        return;
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
/* AVX2 and F16C, what linear_avx2.c is built with. F16C is read from CPUID
 * (leaf 1, ECX bit 29): clang's __builtin_cpu_supports does not know it. */
bool ds3_cpu_has_avx2_f16c(void) {
    unsigned a, b, c, d;
    if (!__builtin_cpu_supports("avx2") || !__get_cpuid(1, &a, &b, &c, &d)) return false;
    return (c >> 29) & 1u;
}
bool ds3_cpu_has_avx512(void) {
    return ds3_cpu_has_avx2_f16c() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512dq");
}
#else
bool ds3_cpu_has_avx2_f16c(void) { return false; }
bool ds3_cpu_has_avx512(void) { return false; }
#endif

#if DS3_AVX2_COPY && !defined(DS3_F64)
bool ds3_tensor_rows_avx2(float *out, const ds3_tensor *w, int64_t r0, int64_t n);  /* linear_avx2.c */

/* -1 until asked; then whether the CPU has AVX2 and F16C (linear_avx2.c is
 * built with both) and DS3_NO_AVX2 is unset.
 * Tests flip it with ds3_rows_select_avx2 to compare the two loops. */
static int rows_avx2 = -1;

static bool rows_avx2_decide(void) { return ds3_cpu_has_avx2_f16c() && !getenv("DS3_NO_AVX2"); }
bool ds3_rows_avx2_ok(void) { return ds3_decided(&rows_avx2, rows_avx2_decide); }

bool ds3_rows_select_avx2(bool on) {
    if (on && !ds3_cpu_has_avx2_f16c()) return false;
    rows_avx2 = on;
    return true;
}
#else
bool ds3_rows_avx2_ok(void) { return false; }
bool ds3_rows_select_avx2(bool on) { return !on; }
#endif

/*
 * out[n][cols] = rows r0..r0+n-1 of w, dequantised. This is the inner loop of
 * every projection (linear.c dequantises a tile of rows, then multiplies), so
 * each dtype gets a straight loop over contiguous memory.
 */
void ds3_tensor_rows(ds3_real *out, const ds3_tensor *w, int64_t r0, int64_t n) {
    DS3_ASSERT(r0 >= 0 && n >= 0 && r0 + n <= w->rows);
#if DS3_AVX2_COPY && !defined(DS3_F64)
    /* BF16 and FP8 eight at a time where the CPU has AVX2 (linear_avx2.c):
     * the same values, several times faster than the loops below. */
    if (ds3_rows_avx2_ok() && ds3_tensor_rows_avx2(out, w, r0, n)) return;
#endif
    const int64_t cols = w->cols;
    const int64_t count = n * cols;
    const unsigned char *p = (const unsigned char *)w->data + (size_t)(r0 * cols) * ds3_dtype_size(w->dtype);

    switch (w->dtype) {
    case DS3_DT_F32:
#ifdef DS3_F64
        for (int64_t k = 0; k < count; k++) out[k] = rd_f32(p + 4 * k);
#else
        memcpy(out, p, (size_t)count * sizeof(float));
#endif
        return;
    case DS3_DT_BF16:
        for (int64_t k = 0; k < count; k++) out[k] = ds3_bf16_to_f32(rd_u16(p + 2 * k));
        return;
    case DS3_DT_F16:
        for (int64_t k = 0; k < count; k++) out[k] = ds3_f16_to_f32(rd_u16(p + 2 * k));
        return;
    case DS3_DT_F8_E4M3:
        for (int64_t i = 0; i < n; i++) {
            const unsigned char *q = p + i * cols;
            ds3_real *o = out + i * cols;
            /* One scale per 128-column block of this row; the last block may
             * be narrower. */
            for (int64_t j0 = 0; j0 < cols; j0 += DS3_FP8_BLOCK) {
                const ds3_real s = (ds3_real)fp8_scale(w, r0 + i, j0);
                const int64_t j1 = j0 + DS3_FP8_BLOCK < cols ? j0 + DS3_FP8_BLOCK : cols;
                for (int64_t j = j0; j < j1; j++) o[j] = (ds3_real)ds3_e4m3_table[q[j]] * s;
            }
        }
        return;
    default:
        /* F64 and the integer types are rare as weights: the general path. */
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < cols; j++) out[i * cols + j] = tensor_elem(w, r0 + i, j);
        return;
    }
}

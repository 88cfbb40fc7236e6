/*
 * simd.h — the 32-byte vectors of lanes.h and vecops.h, and the four things
 * the kernels do with them, as GCC/clang vector extensions or, without them
 * (DS3_PLAIN_C: a compiler that lacks them, or `make PLAIN_C=1`), as plain C
 * loops over the lanes. Every operation is element-wise — lane l of the
 * result is the IEEE operation on lane l of the operands, rounded once — so
 * the two forms give the same bits (scripts/bit-matrix.sh compares the dumps).
 *
 *   vreal       8 floats or 4 doubles
 *   VZERO(v)            v = 0 in every lane
 *   VSET1(v, s)         v = s in every lane
 *   VMULADD(a, x, w)    a += x·w, lane by lane: a product rounded, then a sum rounded
 *   VSCALE(v, s)        v *= s, lane by lane
 *   VTREE4(t, a, b, c, d)  t = (a + c) + (b + d), lane by lane
 *   VBF16X8(v, p)       v = the 8 bf16 values at p (little-endian bytes), exactly
 *   PREFETCH(p)         a hint to bring p's cache line in (no arithmetic; nothing
 *                       without GCC/clang's builtin)
 */
#ifndef DS3_SIMD_H
#define DS3_SIMD_H

#include <stdint.h>
#include <string.h>

#define VREAL_N ((int)(32 / sizeof(ds3_real)))

#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH(p) __builtin_prefetch(p)
#else
#define PREFETCH(p) ((void)(p))
#endif

#ifndef DS3_PLAIN_C
typedef ds3_real vreal __attribute__((vector_size(32)));
#define VZERO(v) ((v) = (vreal){0})
#define VSET1(v, s) ((v) = (vreal){0} + (s))
#define VMULADD(a, x, w) ((a) += (x) * (w))
#define VSCALE(v, s) ((v) *= (s))
#define VTREE4(t, a, b, c, d) ((t) = ((a) + (c)) + ((b) + (d)))
#ifndef DS3_F64
typedef uint16_t v8u16 __attribute__((vector_size(16)));
typedef uint32_t v8u32 __attribute__((vector_size(32)));
/* bf16 → f32: the 16 bits become the top half of the word */
#define VBF16X8(v, p)                                            \
    do {                                                         \
        v8u16 h_;                                                \
        memcpy(&h_, (p), sizeof h_);                             \
        v8u32 u_ = __builtin_convertvector(h_, v8u32) << 16;     \
        memcpy(&(v), &u_, sizeof(v));                            \
    } while (0)
#endif
#else
typedef struct {
    ds3_real l[32 / sizeof(ds3_real)];
} vreal;
#define VLANES_(i) for (int i = 0; i < VREAL_N; i++)
#define VZERO(v) memset(&(v), 0, sizeof(vreal))
#define VSET1(v, s) do { VLANES_(l_) (v).l[l_] = (s); } while (0)
#define VMULADD(a, x, w) do { VLANES_(l_) (a).l[l_] += (x).l[l_] * (w).l[l_]; } while (0)
#define VSCALE(v, s) do { VLANES_(l_) (v).l[l_] *= (s); } while (0)
#define VTREE4(t, a, b, c, d) \
    do { VLANES_(l_) (t).l[l_] = ((a).l[l_] + (c).l[l_]) + ((b).l[l_] + (d).l[l_]); } while (0)
#define VBF16X8(v, p)                                                                   \
    do {                                                                                \
        const unsigned char *b_ = (const unsigned char *)(p);                           \
        for (int l_ = 0; l_ < 8; l_++) {                                                \
            uint32_t u_ = (uint32_t)(b_[2 * l_] | b_[2 * l_ + 1] << 8) << 16;           \
            memcpy(&(v).l[l_], &u_, 4);                                                 \
        }                                                                               \
    } while (0)
#endif

#endif /* DS3_SIMD_H */

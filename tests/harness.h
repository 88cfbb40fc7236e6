/*
 * harness.h — the test harness: counters, CHECK macros and the one tensor
 * checker every test uses. Header-only; include it once per test program.
 *
 *   int main(void) { ...; CHECK(x == 1, "x is %d", x); ...; return th_finish(); }
 *
 * th_finish() prints "N passed, N failed" and returns non-zero on any failure.
 */
#ifndef DS3_TEST_HARNESS_H
#define DS3_TEST_HARNESS_H

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int th_passed, th_failed;
static int th_quiet; /* set to 1 to silence passes (checker self-test) */

/* One check: counts, and on failure prints file:line and the message. */
#define CHECK(cond, ...)                                                        \
    do {                                                                        \
        if (cond) {                                                             \
            th_passed++;                                                        \
        } else {                                                                \
            th_failed++;                                                        \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                \
            fprintf(stderr, __VA_ARGS__);                                       \
            fprintf(stderr, "\n");                                              \
        }                                                                       \
    } while (0)

/* Print progress of a named section. */
static inline void th_section(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "-- ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

/* Result of comparing a tensor to its reference. */
typedef struct {
    int ok;              /* every element within atol + rtol·|ref|, NaN/Inf positions equal */
    double max_abs;      /* max |got - ref| over finite pairs */
    double max_rel;      /* max |got - ref| / |ref| over finite pairs with ref != 0 */
    double max_ref;      /* max |ref| */
    long worst;          /* index with the largest |got-ref| / bound (first such; -1 if n == 0) */
    long n_bad;          /* elements outside the bound */
} th_cmp;

/*
 * The checker. got and ref are doubles (callers convert), n elements.
 * Element i passes when both are finite and |got-ref| <= atol + rtol·|ref|, or
 * both are the same non-finite value (NaN with NaN, +Inf with +Inf …).
 */
static inline th_cmp th_compare(const double *got, const double *ref, long n, double atol, double rtol) {
    th_cmp r = {1, 0.0, 0.0, 0.0, -1, 0};
    double worst_ratio = -1;  /* |got-ref| / bound: > 1 is outside */
    for (long i = 0; i < n; i++) {
        double g = got[i], e = ref[i], ratio;
        if (!isfinite(g) || !isfinite(e)) {
            int same = (isnan(g) && isnan(e)) || (isinf(g) && isinf(e) && (g > 0) == (e > 0));
            ratio = same ? 0 : INFINITY;
        } else {
            double d = fabs(g - e), bound = atol + rtol * fabs(e);
            if (d > r.max_abs) r.max_abs = d;
            if (fabs(e) > r.max_ref) r.max_ref = fabs(e);
            if (e != 0 && d / fabs(e) > r.max_rel) r.max_rel = d / fabs(e);
            ratio = d <= bound ? (bound > 0 ? d / bound : 0) : (bound > 0 ? d / bound : INFINITY);
        }
        if (ratio > 1) { r.ok = 0; r.n_bad++; }
        if (ratio > worst_ratio) { worst_ratio = ratio; r.worst = i; }
    }
    return r;
}

/* Compare and count one check, printing the summary line. */
static inline int th_check_close(const char *what, const double *got, const double *ref, long n,
                                 double atol, double rtol) {
    th_cmp r = th_compare(got, ref, n, atol, rtol);
    if (r.ok) th_passed++; else th_failed++;
    if (!r.ok || !th_quiet) {
        fprintf(stderr, "%s %-40s n=%ld max_abs=%.3e max_rel=%.3e max|ref|=%.3e worst=%ld",
                r.ok ? "ok  " : "FAIL", what, n, r.max_abs, r.max_rel, r.max_ref, r.worst);
        if (r.worst >= 0) fprintf(stderr, " (got %.9g ref %.9g)", got[r.worst], ref[r.worst]);
        if (!r.ok) fprintf(stderr, " bad=%ld (atol %.1e rtol %.1e)", r.n_bad, atol, rtol);
        fprintf(stderr, "\n");
    }
    return r.ok;
}

/* The whole file at path, NUL-terminated after its *n bytes (n may be NULL);
 * NULL, and *n = 0, if it cannot be opened or read whole. Free with free(). */
static inline void *th_read_file(const char *path, size_t *n) {
    if (n) *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = len < 0 ? NULL : malloc((size_t)len + 1);
    if (b && fread(b, 1, (size_t)len, f) != (size_t)len) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (!b) return NULL;
    b[len] = 0;
    if (n) *n = (size_t)len;
    return b;
}

/* Closing line and exit status. */
static inline int th_finish(void) {
    printf("%d passed, %d failed\n", th_passed, th_failed);
    return th_failed ? 1 : 0;
}

#endif /* DS3_TEST_HARNESS_H */

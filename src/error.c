/*
 * error.c — the two levels of error handling (STYLE §6).
 *
 *   1. Bad input (a truncated file, a config field of the wrong type, an
 *      unknown tensor) is the caller's problem: the library records a message
 *      naming the file, the tensor and what was expected, and returns a status.
 *      ds3_fail() does both in one expression; ds3_last_error() reads it back.
 *   2. A broken internal invariant is ds3's own bug: DS3_ASSERT reports
 *      expression, file and line, then aborts. It is the only place the library
 *      stops the process; nothing here calls exit().
 *
 * The message buffer is thread-local (C11 _Thread_local), so threads that load
 * or run different models never see each other's errors.
 */
#include "error.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Long enough for a path, a tensor name and two shapes. */
#define DS3_ERRMSG_MAX 2048

static _Thread_local char last_error[DS3_ERRMSG_MAX];

/* Set before main by the contraction probe of error.h, in any file built to fuse. */
const char *volatile ds3_fp_contracted;

ds3_status ds3_fail(ds3_status st, const char *fmt, ...) {
    /* Format into a scratch buffer first: callers often wrap the previous
     * message ("loading x: %s", ds3_last_error()), and vsnprintf from a buffer
     * into itself is undefined. */
    char tmp[DS3_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    memcpy(last_error, tmp, strlen(tmp) + 1);
    return st;
}

const char *ds3_last_error(void) { return last_error; }

const char *ds3_status_name(ds3_status s) {
    switch (s) {
    case DS3_OK: return "ok";
    case DS3_ERR_IO: return "io error";
    case DS3_ERR_FORMAT: return "format error";
    case DS3_ERR_CONFIG: return "config error";
    case DS3_ERR_MISSING: return "missing tensor";
    case DS3_ERR_SHAPE: return "shape mismatch";
    case DS3_ERR_NOMEM: return "out of memory";
    case DS3_ERR_ARG: return "bad argument";
    case DS3_ERR_PLATFORM: return "platform error";
    }
    return "unknown status";
}

void ds3_assert_fail(const char *expr, const char *file, int line) {
    fprintf(stderr, "ds3: internal error: %s at %s:%d\n", expr, file, line);
    fflush(stderr);
    abort();
}

/* ---- allocation ----------------------------------------------------------- */

/* For bindings: the library's own free, so a caller in another language never
 * has to find the C library that malloc'd the buffer. */
void ds3_free(void *p) { free(p); }

void *ds3_malloc(size_t bytes) {
    /* malloc(0) may legally return NULL, which callers would read as failure. */
    void *p = malloc(bytes ? bytes : 1);
    if (!p) ds3_fail(DS3_ERR_NOMEM, "out of memory allocating %zu bytes", bytes);
    return p;
}

void *ds3_calloc(size_t n, size_t size) {
    /* calloc checks n*size itself on glibc, but not everywhere; and we want the
     * message to say what was asked for. */
    if (size && n > SIZE_MAX / size) {
        ds3_fail(DS3_ERR_NOMEM, "out of memory: %zu x %zu bytes overflows size_t", n, size);
        return NULL;
    }
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) ds3_fail(DS3_ERR_NOMEM, "out of memory allocating %zu x %zu bytes", n, size);
    return p;
}

/* ---- progress (ds3_set_progress) ---- */

static ds3_progress_fn progress_fn;
static void *progress_user;

void ds3_set_progress(ds3_progress_fn fn, void *user) {
    progress_fn = fn;
    progress_user = user;
}

void ds3_progress(const char *what, double done, double total) {
    if (progress_fn) progress_fn(progress_user, what, done, total);
}

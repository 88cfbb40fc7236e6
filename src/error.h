/*
 * error.h — what every file of ds3 uses: the status-and-message error style,
 * the internal assert, allocation that records its failure (error.c).
 *
 * The source tree, one folder per layer, each with one small header; a folder
 * includes only the headers of the folders before it in this list, so there
 * is no circle of imports (tests/check_layout.sh checks it):
 *
 *   src/error.h              this file
 *   src/kernels/kernels.h    element types, weight views, the matrix and vector kernels
 *   src/io/io.h              safetensors files, whole output files
 *   src/check/check.h        activation dumps, GPU rounding emulation, comparison
 *   src/model/model.h        config, weights, state, the forward pass (the architecture)
 *   src/generate/generate.h  sampling, speculative decoding
 *   src/tools/               model summaries and synthetic checkpoints (public API only)
 *   src/tokenizer/tokenizer.h  the tokenizer (needs only this file)
 *
 * None of these is API: programs use include/ds3.h; tests may include them.
 */
#ifndef DS3_ERROR_H
#define DS3_ERROR_H

#include "ds3.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Record a formatted message for ds3_last_error() and return the status, so
 * that call sites read `return ds3_fail(DS3_ERR_SHAPE, "%s: shape …", name);` */
ds3_status ds3_fail(ds3_status st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Internal invariant: a broken one is a bug in ds3, not bad input. Reports
 * file:line and aborts (the only place the library may stop the process). */
#define DS3_ASSERT(cond)                                                        \
    do {                                                                        \
        if (!(cond)) ds3_assert_fail(#cond, __FILE__, __LINE__);                \
    } while (0)
void ds3_assert_fail(const char *expr, const char *file, int line) __attribute__((noreturn));

/* malloc/calloc that record DS3_ERR_NOMEM on failure (caller still checks). */
void *ds3_malloc(size_t bytes);
void *ds3_calloc(size_t n, size_t size);

#endif /* DS3_ERROR_H */

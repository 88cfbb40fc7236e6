/*
 * args.c — the --tokens parser (see args.h). Strict on purpose: a token list
 * is data for a reference run, and "1,,2" or "12abc" silently read as
 * something else would give a wrong answer that looks right.
 */
#include "args.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

/* Length of entry `s` (up to the next comma) for a message, cut to 40. */
static int entry_len(const char *s) {
    int n = 0;
    while (s[n] && s[n] != ',' && n < 40) n++;
    return n;
}

int cli_parse_tokens(const char *s, int32_t **out, int *n_out, char *err, size_t errsize) {
    int n = 0, cap = 0, rc = CLI_ARGS_USAGE;
    int32_t *t = NULL;
    const char *p = s;
    *out = NULL;
    *n_out = 0;
    for (;;) {
        while (*p == ' ' || *p == '\t') p++;
        if (*p == ',' || *p == '\0') {
            if (n == 0 && *p == '\0') snprintf(err, errsize, "--tokens: the list is empty");
            else snprintf(err, errsize, "--tokens: empty entry at index %d", n);
            goto fail;
        }
        if (n == CLI_MAX_TOKENS) {
            snprintf(err, errsize, "--tokens: more than %d tokens", CLI_MAX_TOKENS);
            goto fail;
        }
        /* strtol alone would take "+3", "-0" and " 3": digits must come first. */
        if (*p < '0' || *p > '9') {
            snprintf(err, errsize, "--tokens: '%.*s' at index %d is not a non-negative integer",
                     entry_len(p), p, n);
            goto fail;
        }
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (errno == ERANGE || v > INT32_MAX) {
            snprintf(err, errsize, "--tokens: '%.*s' at index %d is too large", entry_len(p), p, n);
            goto fail;
        }
        const char *q = end;
        while (*q == ' ' || *q == '\t') q++;
        if (*q != ',' && *q != '\0') {
            snprintf(err, errsize, "--tokens: '%.*s' at index %d is not a non-negative integer",
                     entry_len(p), p, n);
            goto fail;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            if (cap > CLI_MAX_TOKENS) cap = CLI_MAX_TOKENS;
            int32_t *nt = realloc(t, (size_t)cap * sizeof *nt);
            if (!nt) {
                snprintf(err, errsize, "out of memory reading --tokens");
                rc = CLI_ARGS_RUNTIME;
                goto fail;
            }
            t = nt;
        }
        t[n++] = (int32_t)v;
        if (*q == '\0') break;
        p = q + 1;
    }
    *out = t;
    *n_out = n;
    return CLI_ARGS_OK;
fail:
    free(t);
    return rc;
}

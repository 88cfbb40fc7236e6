/*
 * fuzz_tokens.c — libFuzzer target for the CLI's --tokens parser
 * (cli/args.c): the input is the option's value.
 *
 * Checks, aborting if not:
 *   - success gives 1..CLI_MAX_TOKENS ids, each in [0, INT32_MAX];
 *   - printing the ids back as "a,b,c" and parsing that gives the same ids;
 *   - failure gives no array, a usage code and a message starting "--tokens:"
 *     (or the out-of-memory one).
 */
#include "../../cli/args.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_REQUIRE(cond)                                                                     \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "fuzz_tokens: invariant broken: %s (line %d)\n", #cond, __LINE__); \
            abort();                                                                           \
        }                                                                                      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* argv strings end at the first NUL: so does the parser's input. */
    char *s = malloc(size + 1);
    if (!s) return 0;
    memcpy(s, data, size);
    s[size] = '\0';

    int32_t *t = (int32_t *)(void *)s;   /* must be overwritten */
    int n = -1;
    char err[160];
    int rc = cli_parse_tokens(s, &t, &n, err, sizeof err);
    free(s);
    if (rc != CLI_ARGS_OK) {
        FUZZ_REQUIRE(t == NULL && n == 0);
        FUZZ_REQUIRE((rc == CLI_ARGS_USAGE && strncmp(err, "--tokens: ", 10) == 0) || rc == CLI_ARGS_RUNTIME);
        return 0;
    }
    FUZZ_REQUIRE(t != NULL && n >= 1 && n <= CLI_MAX_TOKENS);
    for (int i = 0; i < n; i++) FUZZ_REQUIRE(t[i] >= 0);

    /* Canonical form round trip. */
    char *canon = malloc((size_t)n * 12 + 1);
    if (!canon) abort();
    size_t len = 0;
    for (int i = 0; i < n; i++) len += (size_t)sprintf(canon + len, i ? ",%d" : "%d", (int)t[i]);
    int32_t *u = NULL;
    int m = 0;
    FUZZ_REQUIRE(cli_parse_tokens(canon, &u, &m, err, sizeof err) == CLI_ARGS_OK);
    FUZZ_REQUIRE(m == n && memcmp(t, u, (size_t)n * sizeof *t) == 0);
    free(u);
    free(canon);
    free(t);
    return 0;
}

/*
 * args.h — parsers for command-line values that carry data rather than a
 * setting, kept out of cli/ds3.c so that a fuzz target
 * (tests/fuzz/fuzz_tokens.c) can link them without the rest of the CLI.
 *
 * They never exit and never print: they return a code and a message, and
 * ds3.c turns that into "ds3: message" and the exit status.
 */
#ifndef DS3_CLI_ARGS_H
#define DS3_CLI_ARGS_H

#include <stddef.h>
#include <stdint.h>

/* A prompt longer than this is surely a mistake (and its logits would not fit). */
#define CLI_MAX_TOKENS 1000000

/* Return codes, the CLI's exit statuses. */
enum { CLI_ARGS_OK = 0, CLI_ARGS_RUNTIME = 1, CLI_ARGS_USAGE = 2 };

/*
 * --tokens: comma-separated non-negative decimal integers that fit in int32,
 * blanks (space, tab) allowed around each, no empty entries, at most
 * CLI_MAX_TOKENS. On success *out is a malloc'd array of *n ids (the caller
 * frees it). On failure *out is NULL, nothing is left allocated, and err holds
 * one line naming the entry and its index: CLI_ARGS_USAGE for a malformed
 * list, CLI_ARGS_RUNTIME when memory runs out.
 */
int cli_parse_tokens(const char *s, int32_t **out, int *n, char *err, size_t errsize);

#endif /* DS3_CLI_ARGS_H */

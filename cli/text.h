/*
 * text.h — the CLI's text side (cli/text.c): `ds3 tokenize`, `ds3 detokenize`,
 * finding a model's tokenizer, copying DeepSeek-V3's into a synthetic model,
 * and the helpers `ds3 run -p` streams its output with.
 *
 * Functions that are not commands never exit: they return 0 or a CLI exit
 * status (1 runtime, 2 usage) with a one-line message in err, which ds3.c
 * prints as "ds3: message".
 */
#ifndef DS3_CLI_TEXT_H
#define DS3_CLI_TEXT_H

#include "ds3.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* The commands (argv after the command name). */
int cli_tokenize(int argc, char **argv);
int cli_detokenize(int argc, char **argv);
extern const char *const cli_help_tokenize, *const cli_help_detokenize;

/*
 * Load the tokenizer: `path` (a tokenizer.json or its directory) if given,
 * else model_dir/tokenizer.json. *t is NULL and 0 is returned when path is
 * NULL and the model directory has no tokenizer.json and !required.
 */
int cli_load_tokenizer(const char *path, const char *model_dir, bool required, ds3_tokenizer **t, char *err,
                       size_t errsize);

/* All of a file ("-": stdin) as bytes, NUL-terminated (*len without it); NULL
 * with errno on failure. */
char *cli_read_file(const char *path, size_t *len);

/* Where ds3's data lives (data/tokenizers/…): $DS3_DATA_DIR, else the source
 * tree's data/ as it was when this binary was built. */
const char *cli_data_dir(void);

/*
 * The tokenizer of a model `ds3 mkmodel` writes: `tokenizer` (a file or
 * directory) if given, else DeepSeek-V3's from cli_data_dir() when vocab is
 * V3's (129280). Loads it and checks that its ids fit vocab (before any weight
 * is written); *src (malloc'd) is then the path to copy into the model
 * (ds3_mkmodel_opts.tokenizer), or NULL when there is none.
 */
int cli_mkmodel_tokenizer(const char *tokenizer, long vocab, char **src, char *err, size_t errsize);

/* Write s[0..n) as a JSON string (quotes included); bytes that are not UTF-8
 * become U+FFFD, so the output is always valid JSON. */
void cli_json_string(FILE *f, const char *s, size_t n);

#endif /* DS3_CLI_TEXT_H */

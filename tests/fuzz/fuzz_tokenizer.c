/*
 * fuzz_tokenizer.c — libFuzzer target for loading a tokenizer
 * (ds3_tokenizer_load_mem, src/tokenizer/tokenizer.c): the input is a tokenizer.json,
 * optionally followed by a NUL byte and a tokenizer_config.json.
 *
 * A failure must be an error with a message naming the file and hand out no
 * tokenizer. A tokenizer that loads must keep what its users rely on, checked
 * on a fixed set of texts (ASCII, CJK, emoji, invalid UTF-8, the added
 * tokens' own strings); the target aborts (a crash libFuzzer reports) if not:
 *   - BOS / EOS are -1 or tokens; every id encode gives is a token;
 *   - decode(encode(text)) is the text, invalid UTF-8 read as U+FFFD per
 *     maximal ill-formed subsequence (byte-level BPE loses nothing else), with
 *     and without DS3_TOKENIZE_SPECIAL_AS_TEXT; encode may fail only with a
 *     message (a fuzzed Split regex can exceed PCRE2's match limits);
 *   - the streaming detokenizer, pushed every id and flushed, gives the same
 *     bytes as decode;
 *   - ds3_tokenizer_token_id finds every added token's bytes again, and
 *     whatever it finds for a token's bytes is a token of those bytes.
 */
#include "tokenizer/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_REQUIRE(cond)                                                                        \
    do {                                                                                          \
        if (!(cond)) {                                                                            \
            fprintf(stderr, "fuzz_tokenizer: invariant broken: %s (line %d)\n", #cond, __LINE__); \
            abort();                                                                              \
        }                                                                                         \
    } while (0)

#include "tokenizer_checks.h"

static const char *const texts[] = {
    "Hello, world! 123456 tokens",
    "  leading spaces\ttabs\r\nand lines\n\n",
    "\xe4\xbd\xa0\xe5\xa5\xbd\xe4\xb8\x96\xe7\x95\x8c\xe3\x81\x93\xe3\x82\x93\xe3\x81\xab\xe3\x81\xa1\xe3\x81\xaf", /* CJK, kana */
    "\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x92\xbb emoji \xf0\x9f\x87\xa9\xf0\x9f\x87\xaa",
    "bad \xff\xfe utf-8 \xe4\xbd \xc0\xaf \xed\xa0\x80 end \xf0\x9f",
    "<\xef\xbd\x9c" "begin\xe2\x96\x81" "of\xe2\x96\x81" "sentence\xef\xbd\x9c>Hi<\xef\xbd\x9c" "User\xef\xbd\x9c>x"
    "<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>",
    "",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    size_t jlen = nul ? (size_t)(nul - data) : size;
    const char *cfg = nul ? (const char *)nul + 1 : NULL;
    size_t clen = nul ? size - jlen - 1 : 0;

    ds3_tokenizer *t = (ds3_tokenizer *)1;
    ds3_status st = ds3_tokenizer_load_mem((const char *)data, jlen, cfg, clen, &t);
    if (st != DS3_OK) {
        const char *msg = ds3_last_error();
        FUZZ_REQUIRE(t == NULL);
        FUZZ_REQUIRE(st == DS3_ERR_NOMEM || strstr(msg, "tokenizer.json") || strstr(msg, "tokenizer_config.json"));
        return 0;
    }
    FUZZ_REQUIRE(t != NULL);
    int n = ds3_tokenizer_n_ids(t);
    FUZZ_REQUIRE(n >= 256);
    int32_t bos = ds3_tokenizer_bos(t), eos = ds3_tokenizer_eos(t);
    FUZZ_REQUIRE(bos == -1 || ds3_tokenizer_token(t, bos, &(size_t){0}) != NULL);
    FUZZ_REQUIRE(eos == -1 || ds3_tokenizer_token(t, eos, &(size_t){0}) != NULL);

    /* Looking a token's bytes up gives a token of those bytes; every added
     * token is found (a vocabulary token spelled outside the byte-level
     * alphabet is not: BPE never produces it). The first 2000 ids and the
     * last 200, where the added tokens sit. */
    for (int id = 0; id < n; id++) {
        if (id == 2000 && n > 2200) id = n - 200;
        size_t len = 0;
        const char *b = ds3_tokenizer_token(t, id, &len);
        if (!b) continue;
        int32_t back = ds3_tokenizer_token_id(t, b, len);
        FUZZ_REQUIRE(back >= 0 || !(t->id_flags[id] & DS3_TOK_ADDED));
        if (back < 0) continue;
        size_t blen = 0;
        const char *bb = ds3_tokenizer_token(t, back, &blen);
        FUZZ_REQUIRE(bb && blen == len && memcmp(b, bb, len) == 0);
    }

    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        check_round_trip(t, texts[i], strlen(texts[i]), 0, 0);
        check_round_trip(t, texts[i], strlen(texts[i]), DS3_TOKENIZE_SPECIAL_AS_TEXT, 0);
    }
    /* The added tokens' strings, each on its own and glued together. */
    char glue[512];
    size_t gl = 0;
    for (int id = n > 200 ? n - 200 : 0; id < n; id++) {
        size_t len = 0;
        const char *b = ds3_tokenizer_token(t, id, &len);
        if (!b || !ds3_tokenizer_is_special(t, id)) continue;
        check_round_trip(t, b, len, 0, 0);
        if (gl + len < sizeof glue) {
            memcpy(glue + gl, b, len);
            gl += len;
        }
    }
    check_round_trip(t, glue, gl, 0, 0);

    ds3_tokenizer_free(t);
    return 0;
}

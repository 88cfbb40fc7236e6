/*
 * fuzz_tokenize.c — libFuzzer target for encoding and decoding arbitrary
 * bytes with DeepSeek-V3's own tokenizer (src/tokenizer/tokenizer.c,
 * src/tokenizer/encode.c).
 *
 * The tokenizer is loaded once: $FUZZ_TOKENIZER, else
 * data/tokenizers/deepseek-v3/ (run from the repository root, as
 * tests/fuzz/run.sh does), else the small DeepSeek-shaped seed
 * tests/fuzz/corpus/tokenizer/deepseek-mini.json.
 *
 * Each input is used three ways; the target aborts if a check fails:
 *   - as text: encode (plain, and with special tokens as text) must succeed;
 *     every id is a token; decode gives the text with invalid UTF-8 replaced
 *     by U+FFFD (per maximal ill-formed subsequence), and the streaming
 *     detokenizer the same bytes; the text with the replacement done first
 *     encodes to the same ids;
 *   - as little-endian int32 ids (folded to [-4, n_ids + 4)): decode fails
 *     with DS3_ERR_ARG naming the first non-token exactly when there is one,
 *     else matches the concatenated token bytes, and so does the stream;
 *   - with DS3_TOKENIZE_BOS: the BOS id first, then the plain ids.
 */
#include "tokenizer/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FUZZ_REQUIRE(cond)                                                                       \
    do {                                                                                         \
        if (!(cond)) {                                                                           \
            fprintf(stderr, "fuzz_tokenize: invariant broken: %s (line %d)\n", #cond, __LINE__); \
            abort();                                                                             \
        }                                                                                        \
    } while (0)

#include "tokenizer_checks.h"

static ds3_tokenizer *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    const char *paths[] = {getenv("FUZZ_TOKENIZER"), "data/tokenizers/deepseek-v3",
                           "tests/fuzz/corpus/tokenizer/deepseek-mini.json"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0] && !tok; i++) {
        if (!paths[i] || access(paths[i], R_OK) != 0) continue;
        if (ds3_tokenizer_load(paths[i], &tok) != DS3_OK) {
            fprintf(stderr, "fuzz_tokenize: %s\n", ds3_last_error());
            abort();
        }
        fprintf(stderr, "fuzz_tokenize: %s, %d ids\n", paths[i], ds3_tokenizer_n_ids(tok));
    }
    if (!tok) {
        fprintf(stderr, "fuzz_tokenize: no tokenizer found (set FUZZ_TOKENIZER)\n");
        abort();
    }
    return 0;
}

static void check_ids(const uint8_t *data, size_t size) {
    const int n = ds3_tokenizer_n_ids(tok);
    size_t k = size / 4;
    int32_t *ids = malloc((k ? k : 1) * sizeof *ids);
    if (!ids) abort();
    size_t first_bad = k, want = 0;
    for (size_t i = 0; i < k; i++) {
        uint32_t v = (uint32_t)data[4 * i] | (uint32_t)data[4 * i + 1] << 8 | (uint32_t)data[4 * i + 2] << 16 |
                     (uint32_t)data[4 * i + 3] << 24;
        ids[i] = (int32_t)(v % ((uint32_t)n + 8)) - 4;
        size_t tl = 0;
        if (ds3_tokenizer_token(tok, ids[i], &tl) == NULL) {
            if (first_bad == k) first_bad = i;
        } else {
            want += tl;
        }
    }
    char *text = NULL;
    size_t len = 0;
    ds3_status st = ds3_tokenizer_decode(tok, ids, k, &text, &len);
    if (first_bad < k) {
        char needle[64];
        snprintf(needle, sizeof needle, "at index %zu ", first_bad);
        FUZZ_REQUIRE(st == DS3_ERR_ARG && strstr(ds3_last_error(), needle));
        free(ids);
        return;
    }
    FUZZ_REQUIRE(st == DS3_OK && text && text[len] == '\0' && len == want);
    size_t off = 0;
    ds3_detokenizer *d = NULL;
    FUZZ_REQUIRE(ds3_detokenizer_new(tok, &d) == DS3_OK);
    size_t streamed = 0;
    for (size_t i = 0; i < k; i++) {
        size_t tl = 0;
        const char *b = ds3_tokenizer_token(tok, ids[i], &tl);
        FUZZ_REQUIRE(memcmp(text + off, b, tl) == 0);
        off += tl;
        const char *p = NULL;
        size_t pl = 0;
        FUZZ_REQUIRE(ds3_detokenizer_push(d, ids[i], &p, &pl) == DS3_OK);
        FUZZ_REQUIRE(streamed + pl <= len && (pl == 0 || memcmp(p, text + streamed, pl) == 0));
        streamed += pl;
    }
    const char *p = NULL;
    size_t pl = 0;
    ds3_detokenizer_flush(d, &p, &pl);
    FUZZ_REQUIRE(streamed + pl == len && (pl == 0 || memcmp(p, text + streamed, pl) == 0));
    /* A non-token pushed is refused and changes nothing. */
    FUZZ_REQUIRE(ds3_detokenizer_push(d, -1, &p, &pl) == DS3_ERR_ARG);
    ds3_detokenizer_free(d);
    free(text);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *text = (const char *)data;
    size_t k = check_round_trip(tok, text, size, 0, 1);
    check_round_trip(tok, text, size, DS3_TOKENIZE_SPECIAL_AS_TEXT, 1);

    /* Invalid bytes read as U+FFFD: the replaced text gives the same ids. */
    size_t rl;
    char *rep = utf8_replace(text, size, &rl);
    int32_t *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    FUZZ_REQUIRE(ds3_tokenizer_encode(tok, text, size, 0, &a, &na) == DS3_OK && na == k);
    FUZZ_REQUIRE(ds3_tokenizer_encode(tok, rep, rl, 0, &b, &nb) == DS3_OK);
    FUZZ_REQUIRE(na == nb && (na == 0 || memcmp(a, b, na * sizeof *a) == 0));
    free(b);
    free(rep);

    /* With BOS: the same ids after it. */
    int32_t bos = ds3_tokenizer_bos(tok);
    int32_t *c = NULL;
    size_t nc = 0;
    ds3_status st = ds3_tokenizer_encode(tok, text, size, DS3_TOKENIZE_BOS, &c, &nc);
    if (bos < 0) {
        FUZZ_REQUIRE(st == DS3_ERR_ARG && c == NULL);
    } else {
        FUZZ_REQUIRE(st == DS3_OK && nc == na + 1 && c[0] == bos && (na == 0 || memcmp(c + 1, a, na * sizeof *a) == 0));
    }
    free(c);
    free(a);

    check_ids(data, size);
    return 0;
}

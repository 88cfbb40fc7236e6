/*
 * tokenizer_checks.h — the invariants the tokenizer fuzz targets check on a
 * loaded tokenizer (fuzz_tokenizer.c, fuzz_tokenize.c). Header-only; include
 * it once, after defining FUZZ_REQUIRE(cond) (abort when cond is false).
 */
#ifndef DS3_FUZZ_TOKENIZER_CHECKS_H
#define DS3_FUZZ_TOKENIZER_CHECKS_H

#include "tokenizer/tokenizer.h"

#include <stdlib.h>
#include <string.h>

/* s[0..n) with each maximal ill-formed UTF-8 subsequence, and a sequence cut
 * short by the end, replaced by U+FFFD: Python's bytes.decode("utf-8",
 * "replace"), which is what encode reads. malloc'd, length in *out_len. */
static char *utf8_replace(const char *s, size_t n, size_t *out_len) {
    char *r = malloc(3 * n + 1);   /* a replaced byte grows to 3 at most */
    if (!r) abort();
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, o = 0, k;
    while (i < n) {
        int v = ds3_utf8_seq(u + i, n - i, &k);
        if (v == 1) {
            memcpy(r + o, s + i, k);
            o += k;
        } else {
            memcpy(r + o, "\xef\xbf\xbd", 3);
            o += 3;
        }
        i += k;
    }
    r[o] = '\0';
    *out_len = o;
    return r;
}

/* Encode text, then check: ids are tokens; decode gives utf8_replace(text);
 * the streaming detokenizer gives the same bytes. strict: encode must
 * succeed (else an encode error with a message passes: a fuzzed Split regex
 * can exceed PCRE2's match limits). Returns the number of ids. */
static size_t check_round_trip(const ds3_tokenizer *t, const char *text, size_t len, unsigned flags, int strict) {
    int32_t *ids = (int32_t *)1;
    size_t k = 99;
    ds3_status st = ds3_tokenizer_encode(t, text, len, flags, &ids, &k);
    if (st != DS3_OK) {
        FUZZ_REQUIRE(!strict);
        FUZZ_REQUIRE(ids == NULL && k == 0 && ds3_last_error()[0]);
        return 0;
    }
    FUZZ_REQUIRE(k == 0 || ids != NULL);
    FUZZ_REQUIRE(len == 0 || k > 0);
    const int n = ds3_tokenizer_n_ids(t);
    for (size_t i = 0; i < k; i++) {
        size_t tl;
        FUZZ_REQUIRE(ids[i] >= 0 && ids[i] < n && ds3_tokenizer_token(t, ids[i], &tl) != NULL);
    }

    char *dec = NULL;
    size_t dl = 0;
    FUZZ_REQUIRE(ds3_tokenizer_decode(t, ids, k, &dec, &dl) == DS3_OK);
    FUZZ_REQUIRE(dec != NULL && dec[dl] == '\0');
    size_t rl;
    char *rep = utf8_replace(text, len, &rl);
    FUZZ_REQUIRE(dl == rl && memcmp(dec, rep, rl) == 0);
    free(rep);

    /* The same bytes one id at a time. */
    ds3_detokenizer *d = NULL;
    FUZZ_REQUIRE(ds3_detokenizer_new(t, &d) == DS3_OK && d);
    char *acc = malloc(dl + 1);
    if (!acc) abort();
    size_t al = 0;
    for (size_t i = 0; i < k; i++) {
        const char *p = NULL;
        size_t pl = 0;
        FUZZ_REQUIRE(ds3_detokenizer_push(d, ids[i], &p, &pl) == DS3_OK);
        FUZZ_REQUIRE(al + pl <= dl && (pl == 0 || p != NULL));
        memcpy(acc + al, p, pl);
        al += pl;
    }
    const char *p = NULL;
    size_t pl = 0;
    ds3_detokenizer_flush(d, &p, &pl);
    FUZZ_REQUIRE(al + pl == dl && (pl == 0 || p != NULL));
    if (pl) memcpy(acc + al, p, pl);
    FUZZ_REQUIRE(memcmp(acc, dec, dl) == 0);
    free(acc);
    ds3_detokenizer_free(d);
    free(dec);
    free(ids);
    return k;
}

#endif /* DS3_FUZZ_TOKENIZER_CHECKS_H */

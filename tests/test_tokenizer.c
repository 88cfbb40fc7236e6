/*
 * test_tokenizer.c — ds3's DeepSeek-V3 tokenizer against the Hugging Face
 * `tokenizers` library: every case of ref_data/tokenizer/deepseek-v3.json
 * (tools/gen_tok_ref.py) must give exactly HF's ids, with special tokens
 * matched and as plain text, and decode back to the text (the replaced text
 * for invalid UTF-8, as HF saw it); streaming decoding must give the same
 * bytes in pieces that never split a character; the chat prompt must be what
 * transformers' apply_chat_template renders. Then the errors: malformed
 * tokenizer.json files are refused with a message, bad ids are refused, and
 * arbitrary bytes encode and decode without trouble.
 *
 * The tokenizer is data/tokenizers/deepseek-v3 ($DS3_TOKENIZER overrides);
 * the goldens are $DS3_REF/tokenizer/deepseek-v3.json.
 */
#include "tokenizer/tokenizer.h"
#include "harness.h"

#include <cjson/cJSON.h>
#include <stdbool.h>

/* ---- helpers ---------------------------------------------------------------- */

static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 20, n = 0;
    char *s = malloc(cap + 1);
    for (;;) {
        n += fread(s + n, 1, cap - n, f);
        if (n < cap) break;
        cap *= 2;
        s = realloc(s, cap + 1);
        if (!s) abort();
    }
    fclose(f);
    s[n] = '\0';
    *len = n;
    return s;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Hex string -> bytes (malloc'd, NUL-terminated for printing). */
static unsigned char *unhex(const char *h, size_t *n) {
    size_t l = strlen(h);
    unsigned char *b = malloc(l / 2 + 1);
    if (!b) abort();
    for (size_t i = 0; i + 1 < l; i += 2) b[i / 2] = (unsigned char)(hexval(h[i]) * 16 + hexval(h[i + 1]));
    b[l / 2] = 0;
    *n = l / 2;
    return b;
}

static int32_t *json_ids(const cJSON *a, size_t *n) {
    *n = (size_t)cJSON_GetArraySize(a);
    int32_t *ids = malloc((*n + 1) * sizeof *ids);
    if (!ids) abort();
    size_t k = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, a) ids[k++] = (int32_t)it->valueint;
    return ids;
}

/* First index where two id lists differ (or the shorter length). */
static size_t first_diff(const int32_t *a, size_t na, const int32_t *b, size_t nb) {
    size_t i = 0;
    while (i < na && i < nb && a[i] == b[i]) i++;
    return i;
}

static void print_ids(const char *what, const int32_t *ids, size_t n, size_t from) {
    fprintf(stderr, "    %s (%zu ids) from %zu:", what, n, from);
    for (size_t i = from; i < n && i < from + 12; i++) fprintf(stderr, " %d", (int)ids[i]);
    fprintf(stderr, "\n");
}

/* Compare ids with the golden; print the first difference. */
static bool same_ids(const char *name, const char *mode, const int32_t *got, size_t ng, const int32_t *ref,
                     size_t nr) {
    if (ng == nr && (nr == 0 || memcmp(got, ref, nr * sizeof *ref) == 0)) return true;
    size_t d = first_diff(got, ng, ref, nr);
    fprintf(stderr, "  %s [%s]: ids differ at %zu\n", name, mode, d);
    print_ids("ds3", got, ng, d > 3 ? d - 3 : 0);
    print_ids("HF ", ref, nr, d > 3 ? d - 3 : 0);
    return false;
}

/* ---- the goldens ------------------------------------------------------------ */

static void test_goldens(const ds3_tokenizer *t, const char *ref_path) {
    size_t len;
    char *text = read_all(ref_path, &len);
    CHECK(text != NULL, "cannot read %s (run tools/gen_tok_ref.py)", ref_path);
    if (!text) return;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    CHECK(root != NULL, "%s: not JSON", ref_path);
    if (!root) return;
    const cJSON *meta = cJSON_GetObjectItem(root, "meta");
    const cJSON *cases = cJSON_GetObjectItem(root, "cases");
    th_section("goldens: %d cases from tokenizers %s", cJSON_GetArraySize(cases),
               cJSON_GetStringValue(cJSON_GetObjectItem(meta, "tokenizers_version")));

    long n_cases = 0, ok_ids = 0, ok_raw = 0, ok_dec = 0, ok_stream = 0, ok_rt = 0, n_valid = 0;
    size_t total_bytes = 0, total_ids = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cases) {
        const char *name = cJSON_GetStringValue(cJSON_GetObjectItem(c, "name"));
        size_t nt, nd, nr, nraw;
        unsigned char *in = unhex(cJSON_GetStringValue(cJSON_GetObjectItem(c, "text")), &nt);
        unsigned char *dec_ref = unhex(cJSON_GetStringValue(cJSON_GetObjectItem(c, "decoded")), &nd);
        int32_t *ref = json_ids(cJSON_GetObjectItem(c, "ids"), &nr);
        int32_t *ref_raw = json_ids(cJSON_GetObjectItem(c, "ids_special_as_text"), &nraw);
        bool valid = cJSON_IsTrue(cJSON_GetObjectItem(c, "valid_utf8"));
        n_cases++;
        n_valid += valid;
        total_bytes += nt;
        total_ids += nr;

        /* the ids, special tokens matched */
        int32_t *ids = NULL;
        size_t n = 0;
        ds3_status st = ds3_tokenizer_encode(t, (const char *)in, nt, 0, &ids, &n);
        if (st == DS3_OK && same_ids(name, "special", ids, n, ref, nr)) ok_ids++;
        else if (st != DS3_OK) fprintf(stderr, "  %s: encode failed: %s\n", name, ds3_last_error());

        /* the ids, special tokens as text */
        int32_t *ids2 = NULL;
        size_t n2 = 0;
        st = ds3_tokenizer_encode(t, (const char *)in, nt, DS3_TOKENIZE_SPECIAL_AS_TEXT, &ids2, &n2);
        if (st == DS3_OK && same_ids(name, "as-text", ids2, n2, ref_raw, nraw)) ok_raw++;
        free(ids2);

        /* decoding HF's ids: HF's decoded text; for valid UTF-8, the input itself */
        char *dec = NULL;
        size_t ndec = 0;
        st = ds3_tokenizer_decode(t, ref, nr, &dec, &ndec);
        if (st == DS3_OK && ndec == nd && memcmp(dec, dec_ref, nd) == 0) ok_dec++;
        else fprintf(stderr, "  %s: decode differs from HF's (%zu vs %zu bytes)\n", name, ndec, nd);
        if (valid) {
            if (st == DS3_OK && ndec == nt && memcmp(dec, in, nt) == 0) ok_rt++;
            else fprintf(stderr, "  %s: decode(ids) is not the text\n", name);
        }

        /* streaming: the same bytes, every piece whole characters (the text
         * decoded is valid UTF-8 in every case: invalid input became U+FFFD) */
        ds3_detokenizer *d = NULL;
        bool sok = ds3_detokenizer_new(t, &d) == DS3_OK;
        size_t got = 0;
        for (size_t i = 0; sok && i < nr; i++) {
            const char *piece;
            size_t pl;
            sok = ds3_detokenizer_push(d, ref[i], &piece, &pl) == DS3_OK && got + pl <= ndec &&
                  memcmp(dec + got, piece, pl) == 0 && ds3_utf8_valid_prefix(piece, pl) == pl;
            got += pl;
        }
        if (sok) {
            const char *piece;
            size_t pl;
            ds3_detokenizer_flush(d, &piece, &pl);
            sok = pl == 0 && got == ndec;   /* nothing held back at the end of valid text */
        }
        ds3_detokenizer_free(d);
        if (sok) ok_stream++;
        else fprintf(stderr, "  %s: streaming decode differs\n", name);

        free(dec);
        free(ids);
        free(in);
        free(dec_ref);
        free(ref);
        free(ref_raw);
    }
    fprintf(stderr, "   %ld cases (%ld valid UTF-8), %zu bytes, %zu ids\n", n_cases, n_valid, total_bytes, total_ids);
    fprintf(stderr, "   ids: %ld/%ld  special-as-text: %ld/%ld  decode: %ld/%ld  round trip: %ld/%ld  stream: %ld/%ld\n",
            ok_ids, n_cases, ok_raw, n_cases, ok_dec, n_cases, ok_rt, n_valid, ok_stream, n_cases);
    CHECK(n_cases >= 700, "only %ld golden cases", n_cases);
    CHECK(ok_ids == n_cases, "ids: %ld of %ld cases match HF", ok_ids, n_cases);
    CHECK(ok_raw == n_cases, "special tokens as text: %ld of %ld cases match HF", ok_raw, n_cases);
    CHECK(ok_dec == n_cases, "decode: %ld of %ld cases match HF", ok_dec, n_cases);
    CHECK(ok_rt == n_valid, "round trip: %ld of %ld valid cases", ok_rt, n_valid);
    CHECK(ok_stream == n_cases, "streaming decode: %ld of %ld cases", ok_stream, n_cases);

    /* The chat template, as transformers renders and encodes it. */
    const cJSON *chats = cJSON_GetObjectItem(root, "chat");
    CHECK(cJSON_GetArraySize(chats) >= 3, "only %d chat cases", cJSON_GetArraySize(chats));
    cJSON_ArrayForEach(c, chats) {
        const char *name = cJSON_GetStringValue(cJSON_GetObjectItem(c, "name"));
        size_t nren, nr;
        unsigned char *ren = unhex(cJSON_GetStringValue(cJSON_GetObjectItem(c, "rendered")), &nren);
        int32_t *ref = json_ids(cJSON_GetObjectItem(c, "ids"), &nr);
        int32_t *ids = NULL;
        size_t n = 0;
        ds3_status st = ds3_tokenizer_encode(t, (const char *)ren, nren, 0, &ids, &n);
        CHECK(st == DS3_OK && same_ids(name, "chat", ids, n, ref, nr), "%s: the rendered chat's ids", name);
        free(ids);
        /* One user turn (after an optional system message): ds3's own rendering. */
        const cJSON *msgs = cJSON_GetObjectItem(c, "messages"), *m;
        const char *system = NULL, *user = NULL;
        int turns = 0;
        cJSON_ArrayForEach(m, msgs) {
            const char *role = cJSON_GetStringValue(cJSON_GetObjectItem(m, "role"));
            const char *content = cJSON_GetStringValue(cJSON_GetObjectItem(m, "content"));
            if (strcmp(role, "system") == 0) system = content;
            else user = content, turns++;
        }
        if (turns == 1) {
            char *p = NULL;
            size_t pl = 0;
            st = ds3_tokenizer_chat_prompt(t, system, user, &p, &pl);
            CHECK(st == DS3_OK && pl == nren && memcmp(p, ren, nren) == 0, "%s: ds3_tokenizer_chat_prompt gives \"%s\"",
                  name, p ? p : ds3_last_error());
            free(p);
        }
        free(ren);
        free(ref);
    }
    cJSON_Delete(root);
}

/* ---- the API around the goldens ---------------------------------------------- */

static void test_api(const ds3_tokenizer *t) {
    char how[256];
    ds3_tok_uclasses_describe(t, how, sizeof how);
    th_section("API (Unicode classes against PCRE2's: %s)", how);
    CHECK(how[0] != '\0', "the Split regexes' classes were compared with PCRE2's");
    CHECK(ds3_tokenizer_n_ids(t) == 128815, "n_ids %d", ds3_tokenizer_n_ids(t));
    CHECK(ds3_tokenizer_bos(t) == 0, "bos %d", (int)ds3_tokenizer_bos(t));
    CHECK(ds3_tokenizer_eos(t) == 1, "eos %d", (int)ds3_tokenizer_eos(t));
    CHECK(ds3_tokenizer_chat_template(t) && strstr(ds3_tokenizer_chat_template(t), "<｜User｜>"),
          "chat_template read from tokenizer_config.json");
    const char *u = "<｜User｜>";
    CHECK(ds3_tokenizer_token_id(t, u, strlen(u)) == 128803, "<｜User｜> is %d",
          (int)ds3_tokenizer_token_id(t, u, strlen(u)));
    CHECK(ds3_tokenizer_token_id(t, " the", 4) >= 0, "\" the\" is a token");
    CHECK(ds3_tokenizer_token_id(t, "no such token at all", 20) == -1, "unknown token text gives -1");
    /* tokenizer.json marks BOS special, <｜User｜> an added token but not special */
    CHECK(ds3_tokenizer_is_special(t, 0) == 1 && ds3_tokenizer_is_special(t, 128803) == 0,
          "BOS is special, <｜User｜> is not");
    CHECK(!ds3_tokenizer_is_special(t, 100) && !ds3_tokenizer_is_special(t, -1) && !ds3_tokenizer_is_special(t, 1 << 30),
          "ordinary and out-of-range ids are not special");
    size_t len;
    const char *s = ds3_tokenizer_token(t, 0, &len);
    CHECK(s && len == strlen("<｜begin▁of▁sentence｜>") && memcmp(s, "<｜begin▁of▁sentence｜>", len) == 0,
          "token 0 is BOS");
    CHECK(ds3_tokenizer_token(t, 128815, &len) == NULL && len == 0, "id past the end has no token");

    /* BOS flag */
    int32_t *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    CHECK(ds3_tokenizer_encode(t, "Hi there", 8, 0, &a, &na) == DS3_OK, "encode");
    CHECK(ds3_tokenizer_encode(t, "Hi there", 8, DS3_TOKENIZE_BOS, &b, &nb) == DS3_OK, "encode with BOS");
    CHECK(nb == na + 1 && b[0] == 0 && memcmp(a, b + 1, na * sizeof *a) == 0, "BOS flag puts 0 first");
    free(a);
    free(b);
    a = NULL;
    CHECK(ds3_tokenizer_encode(t, "", 0, 0, &a, &na) == DS3_OK && na == 0 && a == NULL, "empty text: no ids");
    CHECK(ds3_tokenizer_encode(t, "x", 1, 0x80, &a, &na) == DS3_ERR_ARG, "unknown flag refused");
    CHECK(ds3_tokenizer_encode(t, NULL, 3, 0, &a, &na) == DS3_ERR_ARG, "NULL text refused");

    /* decoding bad ids */
    int32_t bad[3] = {100, 128815, 5};
    char *dec = NULL;
    CHECK(ds3_tokenizer_decode(t, bad, 3, &dec, &len) == DS3_ERR_ARG && dec == NULL, "decode refuses id 128815");
    CHECK(strstr(ds3_last_error(), "128815") && strstr(ds3_last_error(), "index 1"), "message names the id: %s",
          ds3_last_error());
    bad[1] = -7;
    CHECK(ds3_tokenizer_decode(t, bad, 3, &dec, &len) == DS3_ERR_ARG, "decode refuses id -7");
    CHECK(ds3_tokenizer_decode(t, bad, 0, &dec, &len) == DS3_OK && len == 0 && dec && dec[0] == 0,
          "decode of nothing is the empty string");
    free(dec);

    /* streaming: a character cut across pushes is held back, then completed */
    ds3_detokenizer *d = NULL;
    CHECK(ds3_detokenizer_new(t, &d) == DS3_OK, "detokenizer");
    /* "€" is E2 82 AC; the byte tokens of E2, 82, AC one at a time */
    const char *piece;
    size_t pl;
    int32_t e2 = t->byte_id[0xE2], x82 = t->byte_id[0x82], xac = t->byte_id[0xAC];
    CHECK(ds3_detokenizer_push(d, e2, &piece, &pl) == DS3_OK && pl == 0, "E2 held back (%zu bytes out)", pl);
    CHECK(ds3_detokenizer_push(d, x82, &piece, &pl) == DS3_OK && pl == 0, "E2 82 held back (%zu bytes out)", pl);
    CHECK(ds3_detokenizer_push(d, xac, &piece, &pl) == DS3_OK && pl == 3 && memcmp(piece, "€", 3) == 0,
          "E2 82 AC given out whole");
    /* an unfinished character at the end comes out of flush as it is */
    CHECK(ds3_detokenizer_push(d, e2, &piece, &pl) == DS3_OK && pl == 0, "E2 held back again");
    ds3_detokenizer_flush(d, &piece, &pl);
    CHECK(pl == 1 && (unsigned char)piece[0] == 0xE2, "flush gives the held byte");
    /* a held start that cannot be completed is given out with what follows */
    CHECK(ds3_detokenizer_push(d, e2, &piece, &pl) == DS3_OK && pl == 0, "E2 held");
    CHECK(ds3_detokenizer_push(d, t->byte_id['A'], &piece, &pl) == DS3_OK && pl == 2 &&
              memcmp(piece, "\xE2" "A", 2) == 0,
          "E2 then A: both out, as they are");
    CHECK(ds3_detokenizer_push(d, 1 << 20, &piece, &pl) == DS3_ERR_ARG, "push refuses a bad id");
    ds3_detokenizer_free(d);
    ds3_detokenizer_free(NULL);

    /* chat prompt */
    char *p = NULL;
    CHECK(ds3_tokenizer_chat_prompt(t, NULL, "Hi", &p, &len) == DS3_OK &&
              strcmp(p, "<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜>") == 0,
          "chat prompt for one turn: %s", p ? p : "(none)");
    free(p);
}

/* ---- arbitrary bytes --------------------------------------------------------- */

static uint64_t lcg(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

static void test_arbitrary(const ds3_tokenizer *t) {
    th_section("arbitrary bytes");
    uint64_t seed = 42;
    long ok = 0, ok_valid = 0, n_valid = 0, N = 3000;
    unsigned char buf[256];
    for (long k = 0; k < N; k++) {
        size_t n = lcg(&seed) % sizeof buf;
        int mode = (int)(lcg(&seed) % 3);
        for (size_t i = 0; i < n; i++) {
            uint64_t r = lcg(&seed);
            /* mode 0: any byte; 1: mostly ASCII; 2: UTF-8-ish lead/continuation bytes */
            buf[i] = mode == 0 ? (unsigned char)r
                   : mode == 1 ? (unsigned char)(r % 8 ? 0x20 + r % 95 : r)
                               : (unsigned char)(r % 2 ? 0x80 + (r >> 1) % 64 : 0xC0 + (r >> 1) % 64);
        }
        int32_t *ids = NULL;
        size_t ni = 0;
        char *dec = NULL;
        size_t nd = 0;
        bool good = ds3_tokenizer_encode(t, (const char *)buf, n, 0, &ids, &ni) == DS3_OK &&
                    ds3_tokenizer_decode(t, ids, ni, &dec, &nd) == DS3_OK && ds3_utf8_valid_prefix(dec, nd) == nd;
        bool valid = ds3_utf8_valid_prefix((const char *)buf, n) == n;
        n_valid += valid;
        if (good && valid && nd == n && memcmp(dec, buf, n) == 0) ok_valid++;
        ok += good;
        free(ids);
        free(dec);
    }
    CHECK(ok == N, "%ld of %ld random byte strings encode and decode to valid UTF-8", ok, N);
    CHECK(ok_valid == n_valid, "%ld of %ld valid ones round-trip exactly", ok_valid, n_valid);
}

/* ---- malformed tokenizer.json ------------------------------------------------- */

/* A small valid byte-level tokenizer: the 256 byte tokens (GPT-2's map), "ab"
 * from one merge, one added token. Built as text so that the broken variants
 * below are one edit away from a good file. */
static char *small_json(const char *model_extra, const char *merges, const char *added, const char *pre) {
    static char buf[1 << 16];
    size_t k = 0;
    k += (size_t)snprintf(buf + k, sizeof buf - k, "{\"version\":\"1.0\",\"added_tokens\":%s,\"normalizer\":null,"
                          "\"pre_tokenizer\":%s,\"decoder\":{\"type\":\"ByteLevel\"},"
                          "\"model\":{\"type\":\"BPE\"%s,\"vocab\":{",
                          added, pre, model_extra);
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int c;
        if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) c = b;
        else c = 0x100 + n++;
        char u[8];
        if (c < 0x80) {
            if (c == '"' || c == '\\') snprintf(u, sizeof u, "\\%c", c);
            else snprintf(u, sizeof u, "%c", c);
        } else snprintf(u, sizeof u, "%c%c", 0xC0 | (c >> 6), 0x80 | (c & 0x3F));
        k += (size_t)snprintf(buf + k, sizeof buf - k, "\"%s\":%d,", u, b);
    }
    k += (size_t)snprintf(buf + k, sizeof buf - k, "\"ab\":256,\"Ġa\":257},\"merges\":%s}}", merges);
    return buf;
}

#define GOOD_PRE "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\p{L}+\"}," \
                 "\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":false," \
                 "\"use_regex\":false}]}"
#define GOOD_ADDED "[{\"id\":258,\"content\":\"<X>\",\"special\":true,\"normalized\":false}]"
#define GOOD_MERGES "[\"a b\",\"Ġ a\"]"

static void expect_bad(const char *json, size_t len, const char *want, const char *what) {
    ds3_tokenizer *t = (ds3_tokenizer *)1;
    ds3_status st = ds3_tokenizer_load_mem(json, len, NULL, 0, &t);
    CHECK(st == DS3_ERR_FORMAT && t == NULL, "%s: status %s", what, ds3_status_name(st));
    CHECK(strstr(ds3_last_error(), want) != NULL, "%s: message \"%s\" lacks \"%s\"", what, ds3_last_error(), want);
    if (st == DS3_OK) ds3_tokenizer_free(t);
}

static void test_malformed(const char *real, size_t real_len) {
    th_section("malformed tokenizer.json");
    /* the small one is good */
    char *j = small_json("", GOOD_MERGES, GOOD_ADDED, GOOD_PRE);
    ds3_tokenizer *t = NULL;
    ds3_status st = ds3_tokenizer_load_mem(j, strlen(j), NULL, 0, &t);
    CHECK(st == DS3_OK, "the small tokenizer loads: %s", ds3_last_error());
    if (t) {
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK(ds3_tokenizer_encode(t, "ab <X>a", 7, 0, &ids, &n) == DS3_OK, "small: encode");
        /* "ab" merges; " " is a Split gap, then <X> (added), then "a" */
        CHECK(n == 4 && ids[0] == 256 && ids[1] == ' ' && ids[2] == 258 && ids[3] == 'a',
              "small: ids %d %d %d %d (n %zu)", n > 0 ? ids[0] : -1, n > 1 ? ids[1] : -1, n > 2 ? ids[2] : -1,
              n > 3 ? ids[3] : -1, n);
        free(ids);
        CHECK(ds3_tokenizer_bos(t) == -1, "small: no BOS without a config");
        ds3_tokenizer_free(t);
    }
    /* with a config naming its BOS */
    const char *cfg = "{\"bos_token\":{\"content\":\"<X>\"},\"eos_token\":null}";
    t = NULL;
    CHECK(ds3_tokenizer_load_mem(j, strlen(j), cfg, strlen(cfg), &t) == DS3_OK && ds3_tokenizer_bos(t) == 258,
          "small: BOS from the config");
    ds3_tokenizer_free(t);
    t = NULL;
    cfg = "{\"bos_token\":\"<nope>\"}";
    CHECK(ds3_tokenizer_load_mem(j, strlen(j), cfg, strlen(cfg), &t) == DS3_ERR_FORMAT && !t &&
              strstr(ds3_last_error(), "<nope>"),
          "config naming a missing BOS: %s", ds3_last_error());
    CHECK(ds3_tokenizer_load_mem(j, strlen(j), "{", 1, &t) == DS3_ERR_FORMAT && !t, "config not JSON");

    expect_bad("", 0, "not a JSON object", "empty file");
    expect_bad("[1,2]", 5, "not a JSON object", "a list");
    expect_bad("{\"model\":", 9, "not a JSON object", "cut short");
    expect_bad(real, real_len / 2, "not a JSON object", "the real file cut in half");
    expect_bad("{}", 2, "model", "no model");
    j = small_json(",\"dropout\":0.1", GOOD_MERGES, GOOD_ADDED, GOOD_PRE);
    expect_bad(j, strlen(j), "dropout", "BPE dropout");
    j = small_json(",\"byte_fallback\":true", GOOD_MERGES, GOOD_ADDED, GOOD_PRE);
    expect_bad(j, strlen(j), "byte_fallback", "byte fallback");
    j = small_json("", "[\"a c\"]", GOOD_ADDED, GOOD_PRE);
    expect_bad(j, strlen(j), "not in the vocab", "merge result not in vocab");
    j = small_json("", "[\"a\"]", GOOD_ADDED, GOOD_PRE);
    expect_bad(j, strlen(j), "not two tokens", "merge of one token");
    j = small_json("", "[\"a zz\"]", GOOD_ADDED, GOOD_PRE);
    expect_bad(j, strlen(j), "not a byte-level vocabulary token", "merge of an unknown token");
    j = small_json("", "[\"a b\", 7]", GOOD_ADDED, GOOD_PRE);
    expect_bad(j, strlen(j), "merge 1", "merge that is a number");
    j = small_json("", "{}", GOOD_ADDED, GOOD_PRE);
    expect_bad(j, strlen(j), "merges", "merges not a list");
    j = small_json("", "[\"\xff\xfe b\"]", GOOD_ADDED, GOOD_PRE);
    expect_bad(j, strlen(j), "merge 0", "invalid UTF-8 in a merge");
    j = small_json("", GOOD_MERGES, "[{\"id\":-1,\"content\":\"<X>\"}]", GOOD_PRE);
    expect_bad(j, strlen(j), "added_tokens", "negative added id");
    j = small_json("", GOOD_MERGES, "[{\"id\":258,\"content\":\"\"}]", GOOD_PRE);
    expect_bad(j, strlen(j), "added_tokens", "empty added token");
    j = small_json("", GOOD_MERGES, "[{\"id\":5,\"content\":\"<X>\"}]", GOOD_PRE);
    expect_bad(j, strlen(j), "has the id of", "added token on another token's id");
    j = small_json("", GOOD_MERGES, "[{\"id\":258,\"content\":\"<X>\",\"lstrip\":true}]", GOOD_PRE);
    expect_bad(j, strlen(j), "lstrip", "added token with lstrip");
    j = small_json("", GOOD_MERGES, "[{\"id\":1e300,\"content\":\"<X>\"}]", GOOD_PRE);
    expect_bad(j, strlen(j), "added_tokens", "added id 1e300");
    j = small_json("", GOOD_MERGES, "{\"id\":3}", GOOD_PRE);
    expect_bad(j, strlen(j), "not a list", "added_tokens an object");
    j = small_json("", GOOD_MERGES, GOOD_ADDED, "{\"type\":\"Metaspace\"}");
    expect_bad(j, strlen(j), "Metaspace", "Metaspace pre-tokenizer");
    j = small_json("", GOOD_MERGES, GOOD_ADDED, "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"},\"behavior\":\"Isolated\"}");
    expect_bad(j, strlen(j), "does not compile", "regex that does not compile");
    j = small_json("", GOOD_MERGES, GOOD_ADDED, "{\"type\":\"Split\",\"pattern\":{\"String\":\" \"},\"behavior\":\"Isolated\"}");
    expect_bad(j, strlen(j), "Regex", "Split on a string");
    j = small_json("", GOOD_MERGES, GOOD_ADDED, "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"a\"},\"behavior\":\"Removed\"}");
    expect_bad(j, strlen(j), "Isolated", "Split behaviour Removed");
    j = small_json("", GOOD_MERGES, GOOD_ADDED, "{\"type\":\"Sequence\",\"pretokenizers\":[]}");
    expect_bad(j, strlen(j), "no ByteLevel", "no ByteLevel pre-tokenizer");
    j = small_json("", GOOD_MERGES, GOOD_ADDED, "{\"type\":\"ByteLevel\",\"add_prefix_space\":true}");
    expect_bad(j, strlen(j), "add_prefix_space", "ByteLevel with a prefix space");
    j = small_json("", GOOD_MERGES, GOOD_ADDED,
                   "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"ByteLevel\"},{\"type\":\"Split\","
                   "\"pattern\":{\"Regex\":\"a\"},\"behavior\":\"Isolated\"}]}");
    expect_bad(j, strlen(j), "after ByteLevel", "Split after ByteLevel");
    j = small_json("", GOOD_MERGES, GOOD_ADDED, "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Sequence\","
                   "\"pretokenizers\":[{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Sequence\",\"pretokenizers\":"
                   "[{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"ByteLevel\"}]}]}]}]}]}");
    expect_bad(j, strlen(j), "too deep", "nested Sequences");
    j = small_json(",\"type2\":1", GOOD_MERGES, GOOD_ADDED, GOOD_PRE);
    {
        /* a vocab id that is not an integer */
        char *p = strstr(j, "\"ab\":256");
        memcpy(p, "\"ab\":2.5", 8);
        expect_bad(j, strlen(j), "not an integer", "vocab id 2.5");
        memcpy(p, "\"ab\":\"x\"", 8);
        expect_bad(j, strlen(j), "not an integer", "vocab id a string");
        memcpy(p, "\"ab\":255", 8);
        expect_bad(j, strlen(j), "given to both", "two tokens with one id");
    }
    {
        /* a byte missing from the vocabulary: drop "a" (id 97) */
        j = small_json("", "[]", GOOD_ADDED, GOOD_PRE);
        char *p = strstr(j, "\"a\":97,");
        memmove(p, p + 7, strlen(p + 7) + 1);
        expect_bad(j, strlen(j), "byte 0x61", "a byte without a token");
    }
    j = small_json("", GOOD_MERGES, GOOD_ADDED, GOOD_PRE);
    {
        char *p = strstr(j, "\"decoder\":{\"type\":\"ByteLevel\"}");
        memcpy(p, "\"decoder\":{\"type\":\"Metaspace\"}", 30);
        expect_bad(j, strlen(j), "decoder", "decoder Metaspace");
    }
    j = small_json("", GOOD_MERGES, GOOD_ADDED, GOOD_PRE);
    {
        char *p = strstr(j, "\"type\":\"BPE\"");
        memcpy(p, "\"type\":\"WPE\"", 12);
        expect_bad(j, strlen(j), "WPE", "model WordPiece");
    }
    j = small_json("", GOOD_MERGES, GOOD_ADDED, GOOD_PRE);
    {
        char *p = strstr(j, "\"normalizer\":null");
        memcpy(p, "\"normalizer\":{}  ", 17);
        expect_bad(j, strlen(j), "normalizer", "a normalizer");
    }

    /* files: missing, a directory without tokenizer.json, not JSON */
    CHECK(ds3_tokenizer_load("/nonexistent/tokenizer.json", &t) == DS3_ERR_IO && !t &&
              strstr(ds3_last_error(), "/nonexistent/tokenizer.json"),
          "missing file: %s", ds3_last_error());
    CHECK(ds3_tokenizer_load("/", &t) == DS3_ERR_IO && !t && strstr(ds3_last_error(), "//tokenizer.json"),
          "directory without tokenizer.json: %s", ds3_last_error());
    CHECK(ds3_tokenizer_load("/dev/null", &t) == DS3_ERR_FORMAT && !t, "empty file: %s", ds3_last_error());
    CHECK(ds3_tokenizer_load(NULL, &t) == DS3_ERR_ARG, "NULL path");
    CHECK(ds3_tokenizer_load_mem(NULL, 5, NULL, 0, &t) == DS3_ERR_ARG, "NULL buffer with a length");
}

int main(void) {
    const char *dir = getenv("DS3_TOKENIZER");
    if (!dir) dir = "data/tokenizers/deepseek-v3";
    const char *refdir = getenv("DS3_REF");
    if (!refdir) refdir = "ref_data";
    char ref[512], path[512];
    snprintf(ref, sizeof ref, "%s/tokenizer/deepseek-v3.json", refdir);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);

    ds3_tokenizer *t = NULL;
    ds3_status st = ds3_tokenizer_load(dir, &t);
    CHECK(st == DS3_OK, "loading %s: %s", dir, ds3_last_error());
    if (st != DS3_OK) return th_finish();
    test_api(t);
    test_goldens(t, ref);
    test_arbitrary(t);
    size_t len = 0;
    char *real = read_all(path, &len);
    CHECK(real != NULL, "reading %s", path);
    if (real) test_malformed(real, len);
    free(real);
    ds3_tokenizer_free(t);
    return th_finish();
}

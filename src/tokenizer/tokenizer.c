/*
 * tokenizer.c — DeepSeek-V3's tokenizer, read from a Hugging Face
 * tokenizer.json: loading, the tables, and decoding ids back to bytes
 * (whole, or streamed one id at a time). Encoding is tokenizer_encode.c.
 *
 * The format (tokenizers' serialisation of a TokenizerImpl), as DeepSeek-V3
 * uses it:
 *   model          BPE: "vocab" {token: id}, "merges" ["a b", …] (or [["a","b"], …]),
 *                  a merge's rank is its index; no dropout, no byte fallback;
 *   added_tokens   [{id, content, special, normalized, lstrip, rstrip, single_word}];
 *   normalizer     none (an empty Sequence);
 *   pre_tokenizer  Sequence of Split(Regex, "Isolated") … then ByteLevel(use_regex=false);
 *   decoder        ByteLevel.
 * Anything else is refused with a message naming the field: a tokenizer read
 * half-right would give plausible but wrong ids, which is worse than none.
 *
 * Byte level (GPT-2's bytes_to_unicode): every byte is written as one
 * printable character in the JSON, e.g. ' ' as 'Ġ' (U+0120) and '\n' as 'Ċ'.
 * We undo that once, here: inside ds3 a token is its raw bytes, and BPE runs
 * on bytes. Decoding follows tokenizers' ByteLevel decoder: a token whose
 * characters are all byte-level characters becomes those bytes; any other
 * (the added tokens "<｜User｜>" …) is its own UTF-8 text.
 */
#include "tokenizer.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Ids beyond this are surely a broken file (and would allocate gigabytes). */
#define DS3_TOK_MAX_IDS (1 << 24)
/* A tokenizer.json is a few MB; a wrong path to a weights file must fail fast. */
#define DS3_TOK_MAX_FILE ((size_t)512 << 20)

/* ========================================================================== */
/* UTF-8                                                                       */
/* ========================================================================== */

int ds3_utf8_seq(const unsigned char *s, size_t n, size_t *len) {
    unsigned c = s[0];
    if (c < 0x80) {
        *len = 1;
        return 1;
    }
    /* Table 3-7: the lead byte fixes the length and the range of the second
     * byte (no overlongs, no surrogates, nothing above U+10FFFF). */
    size_t need;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) need = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        *len = 1;   /* 80..C1, F5..FF can start nothing */
        return 0;
    }
    for (size_t i = 1; i < need; i++) {
        if (i >= n) {
            *len = n;
            return -1;
        }
        unsigned b = s[i];
        if (b < lo || b > hi) {
            *len = i;
            return 0;
        }
        lo = 0x80, hi = 0xBF;
    }
    *len = need;
    return 1;
}

size_t ds3_utf8_valid_prefix(const char *s, size_t len) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, k;
    while (i < len) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        if (ds3_utf8_seq(u + i, len - i, &k) != 1) return i;
        i += k;
    }
    return len;
}

/* Decode one code point of s[0..end) and step past it. cJSON does not check
 * that strings are UTF-8, so a broken sequence is possible: it reads as
 * UINT32_MAX (a character no byte-level token has) and one byte is skipped. */
static uint32_t utf8_next(const unsigned char **p, const unsigned char *end) {
    const unsigned char *s = *p;
    size_t n;
    if (ds3_utf8_seq(s, (size_t)(end - s), &n) != 1) {
        *p = s + 1;
        return UINT32_MAX;
    }
    uint32_t c = s[0];
    if (n == 2) c &= 0x1F;
    else if (n == 3) c &= 0x0F;
    else if (n == 4) c &= 0x07;
    for (size_t i = 1; i < n; i++) c = (c << 6) | (s[i] & 0x3F);
    *p = s + n;
    return c;
}

/* ========================================================================== */
/* Byte level                                                                  */
/* ========================================================================== */

/* GPT-2's bytes_to_unicode, inverted: the byte a code point stands for, or -1.
 * Printable bytes (! .. ~, ¡ .. ¬, ® .. ÿ) stand for themselves; the other 68
 * bytes are U+0100 + their rank among the non-printable ones. */
static int byte_of_char(uint32_t c) {
    if ((c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF)) return (int)c;
    if (c < 0x100 || c >= 0x100 + 68) return -1;
    int rank = (int)(c - 0x100);
    for (int b = 0; b < 256; b++) {
        if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) continue;
        if (rank-- == 0) return b;
    }
    return -1;
}

/* The bytes a token string (UTF-8 from the JSON) decodes to, as tokenizers'
 * ByteLevel decoder does it: all characters byte-level -> those bytes;
 * otherwise the string itself. Writes to out (room for strlen(s)) and returns
 * the length; *byte_level says which case it was. */
static size_t token_bytes(const char *s, unsigned char *out, const int *inv, bool *byte_level) {
    const unsigned char *p = (const unsigned char *)s, *end = p + strlen(s);
    size_t n = 0;
    while (p < end) {
        uint32_t c = utf8_next(&p, end);
        int b = c < 0x144 ? inv[c] : -1;
        if (b < 0) {
            size_t len = strlen(s);
            memcpy(out, s, len);
            *byte_level = false;
            return len;
        }
        out[n++] = (unsigned char)b;
    }
    *byte_level = true;
    return n;
}

/* ========================================================================== */
/* Hash tables                                                                 */
/* ========================================================================== */

static uint64_t hash_bytes(const unsigned char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;   /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

static ds3_status strmap_init(ds3_tok_strmap *m, size_t entries) {
    m->cap = pow2_at_least(2 * entries + 1);
    m->key = ds3_calloc(m->cap, sizeof *m->key);
    m->len = ds3_calloc(m->cap, sizeof *m->len);
    m->id = ds3_calloc(m->cap, sizeof *m->id);
    return m->key && m->len && m->id ? DS3_OK : DS3_ERR_NOMEM;
}

static void strmap_free(ds3_tok_strmap *m) {
    free(m->key);
    free(m->len);
    free(m->id);
}

/* Insert; returns the id already there for the same key, or -1 if new. */
static int32_t strmap_put(ds3_tok_strmap *m, const unsigned char *s, size_t n, int32_t id) {
    size_t i = hash_bytes(s, n) & (m->cap - 1);
    for (; m->key[i]; i = (i + 1) & (m->cap - 1))
        if (m->len[i] == n && memcmp(m->key[i], s, n) == 0) return m->id[i];
    m->key[i] = s;
    m->len[i] = (uint32_t)n;
    m->id[i] = id;
    return -1;
}

int32_t ds3_tok_strmap_get(const ds3_tok_strmap *m, const unsigned char *s, size_t n) {
    if (!m->cap) return -1;
    size_t i = hash_bytes(s, n) & (m->cap - 1);
    for (; m->key[i]; i = (i + 1) & (m->cap - 1))
        if (m->len[i] == n && memcmp(m->key[i], s, n) == 0) return m->id[i];
    return -1;
}

static uint64_t pair_hash(uint64_t k) { return (k * 0x9E3779B97F4A7C15ull) >> 17; }

static ds3_status pairmap_init(ds3_tok_pairmap *m, size_t entries) {
    m->cap = pow2_at_least(2 * entries + 1);
    m->key = ds3_malloc(m->cap * sizeof *m->key);
    m->rank = ds3_malloc(m->cap * sizeof *m->rank);
    m->merged = ds3_malloc(m->cap * sizeof *m->merged);
    if (!m->key || !m->rank || !m->merged) return DS3_ERR_NOMEM;
    memset(m->key, 0xFF, m->cap * sizeof *m->key);
    return DS3_OK;
}

static void pairmap_free(ds3_tok_pairmap *m) {
    free(m->key);
    free(m->rank);
    free(m->merged);
}

/* A later duplicate overwrites an earlier one, as building tokenizers' HashMap does. */
static void pairmap_put(ds3_tok_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t merged) {
    uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t i = pair_hash(k) & (m->cap - 1);
    while (m->key[i] != UINT64_MAX && m->key[i] != k) i = (i + 1) & (m->cap - 1);
    m->key[i] = k;
    m->rank[i] = rank;
    m->merged[i] = merged;
}

/* ========================================================================== */
/* Added-token tries                                                           */
/* ========================================================================== */

static ds3_status trie_init(ds3_tok_trie *tr) {
    tr->cap = 256;
    tr->node = ds3_malloc((size_t)tr->cap * sizeof *tr->node);
    if (!tr->node) return DS3_ERR_NOMEM;
    tr->n = 1;
    tr->node[0] = (ds3_tok_trie_node){-1, -1, -1, 0};
    memset(tr->first, 0, sizeof tr->first);
    return DS3_OK;
}

static ds3_status trie_add(ds3_tok_trie *tr, const unsigned char *s, size_t n, int32_t id) {
    int32_t cur = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t c = tr->node[cur].child;
        while (c >= 0 && tr->node[c].byte != s[i]) c = tr->node[c].sibling;
        if (c < 0) {
            if (tr->n == tr->cap) {
                ds3_tok_trie_node *nn = realloc(tr->node, (size_t)tr->cap * 2 * sizeof *nn);
                if (!nn) return ds3_fail(DS3_ERR_NOMEM, "out of memory building the added-token trie");
                tr->node = nn;
                tr->cap *= 2;
            }
            c = tr->n++;
            tr->node[c] = (ds3_tok_trie_node){-1, tr->node[cur].child, -1, s[i]};
            tr->node[cur].child = c;
        }
        cur = c;
    }
    tr->node[cur].token = id;
    tr->first[s[0]] = true;
    return DS3_OK;
}

/* ========================================================================== */
/* Reading the JSON                                                            */
/* ========================================================================== */

static ds3_status read_file(const char *path, size_t max, char **out, size_t *len) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return ds3_fail(DS3_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) == 0 && S_ISDIR(sb.st_mode)) {
        fclose(f);
        return ds3_fail(DS3_ERR_IO, "%s: is a directory", path);
    }
    /* A regular file's size is known: refuse it before reading a byte (a
     * stream is read up to the limit, then refused). */
    if (S_ISREG(sb.st_mode) && (uint64_t)sb.st_size > (uint64_t)max) {
        fclose(f);
        return ds3_fail(DS3_ERR_FORMAT, "%s: larger than %zu MB (%lld bytes), not a tokenizer file", path,
                        max >> 20, (long long)sb.st_size);
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = ds3_malloc(cap + 1);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap || cap > max) break;
        char *nb = realloc(buf, 2 * cap + 1);
        if (!nb) {
            free(buf);
            buf = NULL;
            ds3_fail(DS3_ERR_NOMEM, "%s: out of memory reading", path);
            break;
        }
        buf = nb;
        cap *= 2;
    }
    int err = ferror(f) ? errno : 0;
    fclose(f);
    if (!buf) return DS3_ERR_NOMEM;
    if (err) {
        free(buf);
        return ds3_fail(DS3_ERR_IO, "%s: read error: %s", path, strerror(err));
    }
    if (n > max) {
        free(buf);
        return ds3_fail(DS3_ERR_FORMAT, "%s: larger than %zu MB, not a tokenizer file", path, max >> 20);
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return DS3_OK;
}

static const char *type_of(const cJSON *o) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "type");
    return cJSON_IsString(t) ? t->valuestring : NULL;
}

/* A field that must be absent, null, false or the given value ("" for strings). */
static bool is_off(const cJSON *o, const char *field) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, field);
    return !v || cJSON_IsNull(v) || cJSON_IsFalse(v) || (cJSON_IsString(v) && !v->valuestring[0]);
}

/* The normalizer must do nothing: tokenizers would otherwise rewrite the text
 * (NFC, lowercase …) before every step below. */
static ds3_status check_normalizer(const cJSON *n, const char *path) {
    if (!n || cJSON_IsNull(n)) return DS3_OK;
    const char *ty = type_of(n);
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "normalizers");
    if (ty && strcmp(ty, "Sequence") == 0 && cJSON_IsArray(list) && cJSON_GetArraySize(list) == 0) return DS3_OK;
    return ds3_fail(DS3_ERR_FORMAT, "%s: normalizer '%s' is not supported (ds3 reads tokenizers without a normalizer)",
                    path, ty ? ty : "?");
}

static ds3_status add_split(ds3_tokenizer *t, const cJSON *p, const char *path) {
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(p, "pattern");
    const cJSON *re = cJSON_GetObjectItemCaseSensitive(pat, "Regex");
    const cJSON *beh = cJSON_GetObjectItemCaseSensitive(p, "behavior");
    if (!cJSON_IsString(re))
        return ds3_fail(DS3_ERR_FORMAT, "%s: Split pre-tokenizer without a \"Regex\" pattern", path);
    if (!cJSON_IsString(beh) || strcmp(beh->valuestring, "Isolated") != 0 || !is_off(p, "invert"))
        return ds3_fail(DS3_ERR_FORMAT, "%s: Split pre-tokenizer: only behavior \"Isolated\" without invert is supported",
                        path);
    if (t->n_split == DS3_TOK_MAX_SPLITS)
        return ds3_fail(DS3_ERR_FORMAT, "%s: more than %d Split pre-tokenizers", path, DS3_TOK_MAX_SPLITS);
    /* tokenizers compiles these with Oniguruma: see tokenizer_regex.c. */
    pcre2_code *code = NULL, *ascii = NULL;
    ds3_status st = ds3_tok_compile_split(t, re->valuestring, &code, &ascii);
    if (st != DS3_OK) return st;
    t->split_ascii[t->n_split] = ascii;
    t->split[t->n_split++] = code;
    return DS3_OK;
}

/* One pre-tokenizer: Split (kept), ByteLevel (must be last and regex-free),
 * Sequence (recursed). *seen_bytelevel tracks the order. */
static ds3_status add_pretok(ds3_tokenizer *t, const cJSON *p, const char *path, bool *seen_bytelevel, int depth) {
    const char *ty = type_of(p);
    if (!ty) return ds3_fail(DS3_ERR_FORMAT, "%s: pre_tokenizer without a type", path);
    if (strcmp(ty, "Sequence") == 0) {
        if (depth >= 4) return ds3_fail(DS3_ERR_FORMAT, "%s: pre_tokenizer Sequences nested too deep", path);
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(p, "pretokenizers"), *it;
        if (!cJSON_IsArray(list)) return ds3_fail(DS3_ERR_FORMAT, "%s: Sequence pre_tokenizer without a list", path);
        cJSON_ArrayForEach(it, list) {
            ds3_status st = add_pretok(t, it, path, seen_bytelevel, depth + 1);
            if (st != DS3_OK) return st;
        }
        return DS3_OK;
    }
    if (*seen_bytelevel)
        return ds3_fail(DS3_ERR_FORMAT, "%s: pre-tokenizer '%s' after ByteLevel is not supported", path, ty);
    if (strcmp(ty, "Split") == 0) return add_split(t, p, path);
    if (strcmp(ty, "ByteLevel") == 0) {
        if (!is_off(p, "add_prefix_space") || !is_off(p, "use_regex"))
            return ds3_fail(DS3_ERR_FORMAT, "%s: ByteLevel pre-tokenizer with add_prefix_space or use_regex is not "
                            "supported", path);
        *seen_bytelevel = true;
        return DS3_OK;
    }
    return ds3_fail(DS3_ERR_FORMAT, "%s: pre-tokenizer '%s' is not supported (ds3 reads byte-level BPE "
                    "tokenizers of the DeepSeek-V3 kind)", path, ty);
}

static ds3_status check_model(const cJSON *m, const char *path) {
    if (!cJSON_IsObject(m)) return ds3_fail(DS3_ERR_FORMAT, "%s: no \"model\" object", path);
    const char *ty = type_of(m);
    if (ty && strcmp(ty, "BPE") != 0)
        return ds3_fail(DS3_ERR_FORMAT, "%s: model type '%s' is not supported (only BPE)", path, ty);
    const cJSON *drop = cJSON_GetObjectItemCaseSensitive(m, "dropout");
    if (drop && !cJSON_IsNull(drop) && !(cJSON_IsNumber(drop) && drop->valuedouble == 0))
        return ds3_fail(DS3_ERR_FORMAT, "%s: BPE dropout is not supported", path);
    const char *off[] = {"byte_fallback", "continuing_subword_prefix", "end_of_word_suffix", "ignore_merges"};
    for (size_t i = 0; i < sizeof off / sizeof *off; i++)
        if (!is_off(m, off[i])) return ds3_fail(DS3_ERR_FORMAT, "%s: BPE option '%s' is not supported", path, off[i]);
    return DS3_OK;
}

/* ========================================================================== */
/* Loading                                                                     */
/* ========================================================================== */

/* The strings of every id, gathered before the tables are built. */
typedef struct {
    const char **str;            /* [n_ids] token string from the JSON, NULL: hole */
    uint8_t *added_normalized;   /* [n_ids] for added tokens: matched in the second pass */
} id_strings;

static ds3_status gather_ids(ds3_tokenizer *t, const cJSON *vocab, const cJSON *added, id_strings *ids) {
    const char *path = t->path;
    const cJSON *it;
    long max_id = -1;
    cJSON_ArrayForEach(it, vocab) {
        if (!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble >= DS3_TOK_MAX_IDS ||
            it->valuedouble != (double)it->valueint)
            return ds3_fail(DS3_ERR_FORMAT, "%s: vocab entry \"%.60s\": id is not an integer in [0, %d)", path,
                            it->string, DS3_TOK_MAX_IDS);
        if (it->valueint > max_id) max_id = it->valueint;
    }
    cJSON_ArrayForEach(it, added) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(it, "content");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= DS3_TOK_MAX_IDS ||
            id->valuedouble != (double)id->valueint || !cJSON_IsString(content) || !content->valuestring[0])
            return ds3_fail(DS3_ERR_FORMAT, "%s: added_tokens: an entry without an integer id in [0, %d) and a "
                            "non-empty content", path, DS3_TOK_MAX_IDS);
        const char *opt[] = {"lstrip", "rstrip", "single_word"};
        for (int k = 0; k < 3; k++)
            if (!is_off(it, opt[k]))
                return ds3_fail(DS3_ERR_FORMAT, "%s: added token %d (\"%.60s\"): option '%s' is not supported", path,
                                id->valueint, content->valuestring, opt[k]);
        if (id->valueint > max_id) max_id = id->valueint;
    }
    if (max_id < 0) return ds3_fail(DS3_ERR_FORMAT, "%s: the vocabulary is empty", path);
    t->n_ids = (int)max_id + 1;
    ids->str = ds3_calloc((size_t)t->n_ids, sizeof *ids->str);
    ids->added_normalized = ds3_calloc((size_t)t->n_ids, 1);
    t->id_flags = ds3_calloc((size_t)t->n_ids, 1);
    if (!ids->str || !ids->added_normalized || !t->id_flags) return DS3_ERR_NOMEM;

    cJSON_ArrayForEach(it, vocab) {
        if (ids->str[it->valueint])
            return ds3_fail(DS3_ERR_FORMAT, "%s: vocab: id %d is given to both \"%.60s\" and \"%.60s\"", path,
                            it->valueint, ids->str[it->valueint], it->string);
        ids->str[it->valueint] = it->string;
        t->id_flags[it->valueint] = DS3_TOK_EXISTS;
    }
    cJSON_ArrayForEach(it, added) {
        int id = cJSON_GetObjectItemCaseSensitive(it, "id")->valueint;
        const char *content = cJSON_GetObjectItemCaseSensitive(it, "content")->valuestring;
        /* An added token may re-use a vocabulary id (DeepSeek's 0, 1, 2) only
         * with the same string: otherwise BPE could produce an id that
         * decodes to something else. */
        if (ids->str[id] && strcmp(ids->str[id], content) != 0)
            return ds3_fail(DS3_ERR_FORMAT, "%s: added token %d \"%.60s\" has the id of \"%.60s\"", path, id, content,
                            ids->str[id]);
        ids->str[id] = content;
        t->id_flags[id] = DS3_TOK_EXISTS | DS3_TOK_ADDED |
                          (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "special")) ? DS3_TOK_SPECIAL : 0);
        ids->added_normalized[id] = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "normalized"));
    }
    return DS3_OK;
}

/* The decode table and the vocabulary map, from the strings. */
static ds3_status build_tables(ds3_tokenizer *t, const id_strings *ids, const int *inv) {
    size_t total = 0, n_model = 0;
    for (int i = 0; i < t->n_ids; i++)
        if (ids->str[i]) total += strlen(ids->str[i]), n_model++;
    if (total > UINT32_MAX) return ds3_fail(DS3_ERR_FORMAT, "%s: token strings too long", t->path);
    t->bytes = ds3_malloc(total + 1);
    t->dec_off = ds3_malloc(((size_t)t->n_ids + 1) * sizeof *t->dec_off);
    if (!t->bytes || !t->dec_off) return DS3_ERR_NOMEM;
    ds3_status st = strmap_init(&t->vocab, n_model);
    if (st != DS3_OK) return st;

    size_t off = 0;
    for (int i = 0; i < t->n_ids; i++) {
        t->dec_off[i] = (uint32_t)off;
        if (!ids->str[i]) continue;
        bool byte_level;
        size_t n = token_bytes(ids->str[i], t->bytes + off, inv, &byte_level);
        /* Only byte-level vocabulary tokens take part in BPE. The map is keyed
         * by bytes; GPT-2's byte map is one-to-one, so no two differ only in
         * spelling. */
        if (byte_level && !(t->id_flags[i] & DS3_TOK_ADDED) && n > 0) {
            int32_t prev = strmap_put(&t->vocab, t->bytes + off, n, i);
            if (prev >= 0)
                return ds3_fail(DS3_ERR_FORMAT, "%s: vocab ids %d and %d are the same bytes", t->path, prev, i);
        }
        off += n;
    }
    t->dec_off[t->n_ids] = (uint32_t)off;

    for (int b = 0; b < 256; b++) {
        unsigned char c = (unsigned char)b;
        t->byte_id[b] = ds3_tok_strmap_get(&t->vocab, &c, 1);
        if (t->byte_id[b] < 0)
            return ds3_fail(DS3_ERR_FORMAT, "%s: vocab lacks the byte-level token of byte 0x%02x", t->path, b);
    }
    return DS3_OK;
}

/* One merge's side, from its JSON string to the id of its bytes. */
static int32_t merge_side(const ds3_tokenizer *t, const char *s, size_t n, const int *inv, unsigned char *buf,
                          size_t *blen) {
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    size_t k = 0;
    while (p < end) {
        uint32_t c = utf8_next(&p, end);
        int b = c < 0x144 ? inv[c] : -1;
        if (b < 0) return -1;
        buf[k++] = (unsigned char)b;
    }
    *blen = k;
    return ds3_tok_strmap_get(&t->vocab, buf, k);
}

static ds3_status build_merges(ds3_tokenizer *t, const cJSON *merges, const int *inv) {
    if (!cJSON_IsArray(merges)) return ds3_fail(DS3_ERR_FORMAT, "%s: model has no \"merges\" list", t->path);
    int n = cJSON_GetArraySize(merges);
    ds3_status st = pairmap_init(&t->merges, (size_t)n);
    if (st != DS3_OK) return st;
    /* Scratch for one merge: its two sides and their concatenation, in bytes
     * (never longer than the JSON strings). */
    size_t cap = 256;
    unsigned char *buf = ds3_malloc(3 * cap);
    if (!buf) return DS3_ERR_NOMEM;
    const cJSON *it;
    int rank = 0;
    cJSON_ArrayForEach(it, merges) {
        const char *a, *b;
        size_t na, nb;
        if (cJSON_IsString(it)) {        /* "a b": the sides contain no space (it is 'Ġ') */
            a = it->valuestring;
            const char *sp = strchr(a, ' ');
            if (!sp || strchr(sp + 1, ' ')) {
                st = ds3_fail(DS3_ERR_FORMAT, "%s: merge %d \"%.60s\" is not two tokens", t->path, rank, a);
                break;
            }
            na = (size_t)(sp - a), b = sp + 1, nb = strlen(b);
        } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 && cJSON_IsString(it->child) &&
                   cJSON_IsString(it->child->next)) {
            a = it->child->valuestring, b = it->child->next->valuestring;
            na = strlen(a), nb = strlen(b);
        } else {
            st = ds3_fail(DS3_ERR_FORMAT, "%s: merge %d is neither \"a b\" nor [\"a\", \"b\"]", t->path, rank);
            break;
        }
        if (na + nb > cap) {
            cap = 2 * (na + nb);
            unsigned char *nbuf = realloc(buf, 3 * cap);
            if (!nbuf) {
                st = ds3_fail(DS3_ERR_NOMEM, "out of memory reading merges");
                break;
            }
            buf = nbuf;
        }
        size_t la = 0, lb = 0;
        int32_t ia = merge_side(t, a, na, inv, buf, &la);
        int32_t ib = merge_side(t, b, nb, inv, buf + cap, &lb);
        if (ia < 0 || ib < 0) {
            st = ds3_fail(DS3_ERR_FORMAT, "%s: merge %d: \"%.*s\" is not a byte-level vocabulary token", t->path, rank,
                          (int)(ia < 0 ? na : nb), ia < 0 ? a : b);
            break;
        }
        memcpy(buf + 2 * cap, buf, la);
        memcpy(buf + 2 * cap + la, buf + cap, lb);
        int32_t im = ds3_tok_strmap_get(&t->vocab, buf + 2 * cap, la + lb);
        if (im < 0) {
            st = ds3_fail(DS3_ERR_FORMAT, "%s: merge %d \"%.*s\" + \"%.*s\": the result is not in the vocab", t->path,
                          rank, (int)na, a, (int)nb, b);
            break;
        }
        pairmap_put(&t->merges, ia, ib, rank, im);
        rank++;
    }
    t->n_merges = rank;
    free(buf);
    return st;
}

static ds3_status build_added(ds3_tokenizer *t, const id_strings *ids) {
    size_t n_added = 0;
    for (int i = 0; i < t->n_ids; i++) n_added += (t->id_flags[i] & DS3_TOK_ADDED) != 0;
    ds3_status st;
    if ((st = trie_init(&t->trie_raw)) != DS3_OK || (st = trie_init(&t->trie_norm)) != DS3_OK ||
        (st = strmap_init(&t->added, n_added)) != DS3_OK)
        return st;
    for (int i = 0; i < t->n_ids; i++) {
        if (!(t->id_flags[i] & DS3_TOK_ADDED)) continue;
        /* the JSON string itself (cJSON's memory is gone after loading, so
         * the content is copied into the tokenizer's own block) */
        const unsigned char *s = (const unsigned char *)t->added_text + t->added_off[i];
        size_t n = strlen((const char *)s);
        if ((st = trie_add(ids->added_normalized[i] ? &t->trie_norm : &t->trie_raw, s, n, i)) != DS3_OK) return st;
        strmap_put(&t->added, s, n, i);
    }
    return DS3_OK;
}

/* tokenizer_config.json (its text, or NULL when there is none): BOS and EOS
 * from bos_token / eos_token (a string, or an object with "content"), and the
 * chat_template string. Without a config, DeepSeek's own BOS/EOS names, if
 * this tokenizer has them. */
static ds3_status read_config(ds3_tokenizer *t, const char *text, size_t len, const char *name) {
    t->bos = t->eos = -1;
    if (!text) {
        const char *b = "<｜begin▁of▁sentence｜>", *e = "<｜end▁of▁sentence｜>";
        t->bos = ds3_tokenizer_token_id(t, b, strlen(b));
        t->eos = ds3_tokenizer_token_id(t, e, strlen(e));
        return DS3_OK;
    }
    ds3_status st = DS3_OK;
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!cJSON_IsObject(root)) st = ds3_fail(DS3_ERR_FORMAT, "%s: not a JSON object", name);
    const char *keys[2] = {"bos_token", "eos_token"};
    int32_t *dst[2] = {&t->bos, &t->eos};
    for (int k = 0; k < 2 && st == DS3_OK; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, keys[k]);
        if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
        if (!v || cJSON_IsNull(v)) continue;
        if (!cJSON_IsString(v)) {
            st = ds3_fail(DS3_ERR_FORMAT, "%s: %s is not a string", name, keys[k]);
            break;
        }
        *dst[k] = ds3_tokenizer_token_id(t, v->valuestring, strlen(v->valuestring));
        if (*dst[k] < 0)
            st = ds3_fail(DS3_ERR_FORMAT, "%s: %s \"%.60s\" is not a token of %s", name, keys[k], v->valuestring,
                          t->path);
    }
    const cJSON *tpl = cJSON_GetObjectItemCaseSensitive(root, "chat_template");
    if (st == DS3_OK && tpl && !cJSON_IsNull(tpl)) {
        /* A list of named templates is Hugging Face's other form: take "default". */
        if (cJSON_IsArray(tpl)) {
            const cJSON *it, *found = NULL;
            cJSON_ArrayForEach(it, tpl) {
                const cJSON *nm = cJSON_GetObjectItemCaseSensitive(it, "name");
                if (cJSON_IsString(nm) && strcmp(nm->valuestring, "default") == 0)
                    found = cJSON_GetObjectItemCaseSensitive(it, "template");
            }
            tpl = found;
        }
        if (!cJSON_IsString(tpl)) st = ds3_fail(DS3_ERR_FORMAT, "%s: chat_template is not a string", name);
        else if (!(t->chat_template = ds3_malloc(strlen(tpl->valuestring) + 1))) st = DS3_ERR_NOMEM;
        else strcpy(t->chat_template, tpl->valuestring);
    }
    cJSON_Delete(root);
    return st;
}

/* Everything but the config, from the text of a tokenizer.json. */
static ds3_status parse_tokenizer(ds3_tokenizer *t, const char *text, size_t len) {
    ds3_status st = DS3_OK;
    id_strings ids = {NULL, NULL};
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!cJSON_IsObject(root)) {
        st = ds3_fail(DS3_ERR_FORMAT, "%s: not a JSON object (parse error near byte %ld)", t->path,
                      root ? 0L : end ? (long)(end - text) : 0L);
        goto done;
    }

    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(root, "decoder");
    if ((st = check_model(model, t->path)) != DS3_OK) goto done;
    if ((st = check_normalizer(cJSON_GetObjectItemCaseSensitive(root, "normalizer"), t->path)) != DS3_OK) goto done;
    if (!dec || !type_of(dec) || strcmp(type_of(dec), "ByteLevel") != 0) {
        st = ds3_fail(DS3_ERR_FORMAT, "%s: decoder must be ByteLevel", t->path);
        goto done;
    }
    bool seen_bytelevel = false;
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    if (pre && !cJSON_IsNull(pre) && (st = add_pretok(t, pre, t->path, &seen_bytelevel, 0)) != DS3_OK) goto done;
    if (!seen_bytelevel) {
        st = ds3_fail(DS3_ERR_FORMAT, "%s: no ByteLevel pre-tokenizer (ds3 reads byte-level BPE only)", t->path);
        goto done;
    }
    if (!cJSON_IsObject(vocab)) {
        st = ds3_fail(DS3_ERR_FORMAT, "%s: model has no \"vocab\" object", t->path);
        goto done;
    }
    if (added && !cJSON_IsNull(added) && !cJSON_IsArray(added)) {
        st = ds3_fail(DS3_ERR_FORMAT, "%s: \"added_tokens\" is not a list", t->path);
        goto done;
    }

    int inv[0x144];
    for (uint32_t c = 0; c < 0x144; c++) inv[c] = byte_of_char(c);
    if ((st = gather_ids(t, vocab, cJSON_IsArray(added) ? added : NULL, &ids)) != DS3_OK) goto done;
    if ((st = build_tables(t, &ids, inv)) != DS3_OK) goto done;

    /* The added tokens' contents, kept for matching (the decode table may
     * hold their byte-level reading instead). */
    size_t atotal = 0;
    for (int i = 0; i < t->n_ids; i++)
        if (t->id_flags[i] & DS3_TOK_ADDED) atotal += strlen(ids.str[i]) + 1;
    if (atotal > UINT32_MAX) {
        st = ds3_fail(DS3_ERR_FORMAT, "%s: added tokens too long", t->path);
        goto done;
    }
    t->added_text = ds3_malloc(atotal + 1);
    t->added_off = ds3_calloc((size_t)t->n_ids, sizeof *t->added_off);
    if (!t->added_text || !t->added_off) {
        st = DS3_ERR_NOMEM;
        goto done;
    }
    for (size_t i = 0, off = 0; i < (size_t)t->n_ids; i++) {
        if (!(t->id_flags[i] & DS3_TOK_ADDED)) continue;
        size_t n = strlen(ids.str[i]) + 1;
        memcpy(t->added_text + off, ids.str[i], n);
        t->added_off[i] = (uint32_t)off;
        off += n;
    }
    if ((st = build_added(t, &ids)) != DS3_OK) goto done;
    st = build_merges(t, cJSON_GetObjectItemCaseSensitive(model, "merges"), inv);

done:
    cJSON_Delete(root);
    free(ids.str);
    free(ids.added_normalized);
    return st;
}

static ds3_tokenizer *tokenizer_new(const char *path) {
    ds3_tokenizer *t = ds3_calloc(1, sizeof *t);
    if (!t) return NULL;
    t->bos = t->eos = -1;
    t->path = ds3_malloc(strlen(path) + 1);
    if (!t->path) {
        free(t);
        return NULL;
    }
    strcpy(t->path, path);
    return t;
}

ds3_status ds3_tokenizer_load_mem(const char *json, size_t len, const char *config, size_t config_len,
                                  ds3_tokenizer **out) {
    if (!out || (!json && len)) return ds3_fail(DS3_ERR_ARG, "ds3_tokenizer_load_mem: NULL argument");
    *out = NULL;
    ds3_tokenizer *t = tokenizer_new("tokenizer.json (memory)");
    if (!t) return DS3_ERR_NOMEM;
    ds3_status st = parse_tokenizer(t, json ? json : "", len);
    if (st == DS3_OK) st = read_config(t, config, config ? config_len : 0, "tokenizer_config.json (memory)");
    if (st != DS3_OK) {
        ds3_tokenizer_free(t);
        return st;
    }
    *out = t;
    return DS3_OK;
}

ds3_status ds3_tokenizer_load(const char *path, ds3_tokenizer **out) {
    if (!path || !out) return ds3_fail(DS3_ERR_ARG, "ds3_tokenizer_load: NULL argument");
    *out = NULL;

    /* A directory means its tokenizer.json. */
    struct stat sb;
    size_t pl = strlen(path);
    bool is_dir = stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
    char *file = ds3_malloc(pl + sizeof "/tokenizer.json");
    if (!file) return DS3_ERR_NOMEM;
    snprintf(file, pl + sizeof "/tokenizer.json", is_dir ? "%s/tokenizer.json" : "%s", path);
    ds3_tokenizer *t = tokenizer_new(file);
    free(file);
    if (!t) return DS3_ERR_NOMEM;

    char *text = NULL, *cfg = NULL, *ctext = NULL;
    size_t len = 0, clen = 0;
    ds3_status st = read_file(t->path, DS3_TOK_MAX_FILE, &text, &len);
    if (st == DS3_OK) st = parse_tokenizer(t, text, len);
    free(text);

    /* tokenizer_config.json beside it, when there is one. */
    if (st == DS3_OK) {
        const char *slash = strrchr(t->path, '/');
        size_t dl = slash ? (size_t)(slash - t->path) : 1;
        cfg = ds3_malloc(dl + sizeof "/tokenizer_config.json");
        if (!cfg) st = DS3_ERR_NOMEM;
        else {
            if (slash) memcpy(cfg, t->path, dl);
            else cfg[0] = '.';
            strcpy(cfg + dl, "/tokenizer_config.json");
            if (stat(cfg, &sb) == 0) st = read_file(cfg, 16 << 20, &ctext, &clen);
        }
    }
    if (st == DS3_OK) st = read_config(t, ctext, clen, cfg);
    free(ctext);
    free(cfg);
    if (st != DS3_OK) {
        ds3_tokenizer_free(t);
        return st;
    }
    *out = t;
    return DS3_OK;
}

void ds3_tokenizer_free(ds3_tokenizer *t) {
    if (!t) return;
    for (int i = 0; i < t->n_split; i++) {
        pcre2_code_free(t->split[i]);
        pcre2_code_free(t->split_ascii[i]);
    }
    strmap_free(&t->vocab);
    strmap_free(&t->added);
    pairmap_free(&t->merges);
    free(t->trie_raw.node);
    free(t->trie_norm.node);
    free(t->added_text);
    free(t->added_off);
    free(t->bytes);
    free(t->dec_off);
    free(t->id_flags);
    free(t->path);
    free(t->chat_template);
    free(t);
}

/* ========================================================================== */
/* Queries                                                                     */
/* ========================================================================== */

int ds3_tokenizer_n_ids(const ds3_tokenizer *t) { return t ? t->n_ids : 0; }
int32_t ds3_tokenizer_bos(const ds3_tokenizer *t) { return t ? t->bos : -1; }
int32_t ds3_tokenizer_eos(const ds3_tokenizer *t) { return t ? t->eos : -1; }

int32_t ds3_tokenizer_token_id(const ds3_tokenizer *t, const char *text, size_t len) {
    if (!t || !text) return -1;
    int32_t id = ds3_tok_strmap_get(&t->added, (const unsigned char *)text, len);
    return id >= 0 ? id : ds3_tok_strmap_get(&t->vocab, (const unsigned char *)text, len);
}

const char *ds3_tokenizer_token(const ds3_tokenizer *t, int32_t id, size_t *len) {
    if (!t || id < 0 || id >= t->n_ids || !(t->id_flags[id] & DS3_TOK_EXISTS)) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = t->dec_off[id + 1] - t->dec_off[id];
    return (const char *)t->bytes + t->dec_off[id];
}

int ds3_tokenizer_is_special(const ds3_tokenizer *t, int32_t id) {
    return t && id >= 0 && id < t->n_ids && (t->id_flags[id] & DS3_TOK_SPECIAL) != 0;
}

const char *ds3_tokenizer_chat_template(const ds3_tokenizer *t) { return t ? t->chat_template : NULL; }

ds3_status ds3_tokenizer_chat_prompt(const ds3_tokenizer *t, const char *system, const char *user, char **text,
                                     size_t *len) {
    if (!t || !user || !text || !len) return ds3_fail(DS3_ERR_ARG, "ds3_tokenizer_chat_prompt: NULL argument");
    *text = NULL;
    *len = 0;
    static const char u[] = "<｜User｜>", a[] = "<｜Assistant｜>";
    if (t->bos < 0 || ds3_tokenizer_token_id(t, u, strlen(u)) < 0 || ds3_tokenizer_token_id(t, a, strlen(a)) < 0)
        return ds3_fail(DS3_ERR_FORMAT, "%s: no DeepSeek-V3 chat tokens (BOS, %s, %s)", t->path, u, a);
    /* DeepSeek-V3's template writes {{bos_token}}{{ns.system_prompt}}, then
     * '<｜User｜>' + content per user turn and '<｜Assistant｜>' for the
     * generation prompt. Another model's template would need Jinja. */
    const char *tpl = t->chat_template;
    if (tpl && !(strstr(tpl, "bos_token") && strstr(tpl, u) && strstr(tpl, a)))
        return ds3_fail(DS3_ERR_FORMAT, "%s: chat_template is not DeepSeek-V3's (ds3 renders only that format)",
                        t->path);
    size_t nb = t->dec_off[t->bos + 1] - t->dec_off[t->bos], ns = system ? strlen(system) : 0, nu = strlen(user);
    size_t n = nb + ns + strlen(u) + nu + strlen(a);
    char *s = ds3_malloc(n + 1);
    if (!s) return DS3_ERR_NOMEM;
    size_t k = 0;
    memcpy(s + k, t->bytes + t->dec_off[t->bos], nb), k += nb;
    if (ns) memcpy(s + k, system, ns), k += ns;
    memcpy(s + k, u, strlen(u)), k += strlen(u);
    memcpy(s + k, user, nu), k += nu;
    memcpy(s + k, a, strlen(a)), k += strlen(a);
    s[k] = '\0';
    *text = s;
    *len = k;
    return DS3_OK;
}

/* ========================================================================== */
/* Decoding                                                                    */
/* ========================================================================== */

static ds3_status bad_id(const ds3_tokenizer *t, int32_t id, size_t index) {
    return ds3_fail(DS3_ERR_ARG, "id %ld at index %zu is not a token (the tokenizer has ids 0..%d)", (long)id, index,
                    t->n_ids - 1);
}

ds3_status ds3_tokenizer_decode(const ds3_tokenizer *t, const int32_t *ids, size_t n, char **text, size_t *len) {
    if (!t || !text || !len || (n && !ids)) return ds3_fail(DS3_ERR_ARG, "ds3_tokenizer_decode: NULL argument");
    *text = NULL;
    *len = 0;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_ids || !(t->id_flags[ids[i]] & DS3_TOK_EXISTS)) return bad_id(t, ids[i], i);
        total += t->dec_off[ids[i] + 1] - t->dec_off[ids[i]];
    }
    char *s = ds3_malloc(total + 1);
    if (!s) return DS3_ERR_NOMEM;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t a = t->dec_off[ids[i]], b = t->dec_off[ids[i] + 1];
        memcpy(s + k, t->bytes + a, b - a);
        k += b - a;
    }
    s[k] = '\0';
    *text = s;
    *len = k;
    return DS3_OK;
}

struct ds3_detokenizer {
    const ds3_tokenizer *t;
    size_t n_held;               /* bytes of an unfinished character at the start of buf */
    unsigned char *buf;          /* [cap] held bytes + the last token; what a call returns */
    size_t cap;
    unsigned char held[4];
};

ds3_status ds3_detokenizer_new(const ds3_tokenizer *t, ds3_detokenizer **out) {
    if (!t || !out) return ds3_fail(DS3_ERR_ARG, "ds3_detokenizer_new: NULL argument");
    ds3_detokenizer *d = ds3_calloc(1, sizeof *d);
    if (!d) return DS3_ERR_NOMEM;
    d->t = t;
    d->cap = 256;
    d->buf = ds3_malloc(d->cap);
    if (!d->buf) {
        free(d);
        return DS3_ERR_NOMEM;
    }
    *out = d;
    return DS3_OK;
}

/* How many bytes at the end of s[0..n) start a character that more bytes
 * could still complete (0 .. 3). */
static size_t unfinished_tail(const unsigned char *s, size_t n) {
    for (size_t k = 1; k <= 3 && k <= n; k++) {
        unsigned char c = s[n - k];
        if ((c & 0xC0) == 0x80) continue;   /* a continuation byte: look further back */
        size_t len;
        return ds3_utf8_seq(s + n - k, k, &len) == -1 ? k : 0;
    }
    return 0;
}

ds3_status ds3_detokenizer_push(ds3_detokenizer *d, int32_t id, const char **text, size_t *len) {
    if (!d || !text || !len) return ds3_fail(DS3_ERR_ARG, "ds3_detokenizer_push: NULL argument");
    *text = "";
    *len = 0;
    const ds3_tokenizer *t = d->t;
    if (id < 0 || id >= t->n_ids || !(t->id_flags[id] & DS3_TOK_EXISTS))
        return ds3_fail(DS3_ERR_ARG, "id %ld is not a token (the tokenizer has ids 0..%d)", (long)id, t->n_ids - 1);
    size_t tl = t->dec_off[id + 1] - t->dec_off[id];
    if (d->n_held + tl > d->cap) {
        size_t cap = 2 * (d->n_held + tl);
        unsigned char *nb = realloc(d->buf, cap);
        if (!nb) return ds3_fail(DS3_ERR_NOMEM, "out of memory decoding");
        d->buf = nb;
        d->cap = cap;
    }
    memcpy(d->buf, d->held, d->n_held);
    memcpy(d->buf + d->n_held, t->bytes + t->dec_off[id], tl);
    size_t n = d->n_held + tl;
    size_t keep = unfinished_tail(d->buf, n);
    memcpy(d->held, d->buf + n - keep, keep);
    d->n_held = keep;
    *text = (const char *)d->buf;
    *len = n - keep;
    return DS3_OK;
}

void ds3_detokenizer_flush(ds3_detokenizer *d, const char **text, size_t *len) {
    if (!d) {
        if (text) *text = "";
        if (len) *len = 0;
        return;
    }
    memcpy(d->buf, d->held, d->n_held);
    if (text) *text = (const char *)d->buf;
    if (len) *len = d->n_held;
    d->n_held = 0;
}

void ds3_detokenizer_free(ds3_detokenizer *d) {
    if (!d) return;
    free(d->buf);
    free(d);
}

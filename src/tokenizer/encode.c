/*
 * tokenizer_encode.c — text to ids, step for step as the Hugging Face
 * `tokenizers` library encodes with DeepSeek-V3's tokenizer.json
 * (TokenizerImpl::encode_single_sequence):
 *
 *   0. Bytes that are not UTF-8 become U+FFFD (tokenizers only takes valid
 *      strings; this is what a Python caller's bytes.decode("utf-8",
 *      "replace") hands it).
 *   1. Added tokens ("<｜User｜>", "<｜begin▁of▁sentence｜>" …) are cut out of
 *      the text first, leftmost-longest, in two passes as AddedVocabulary
 *      does: the tokens with normalized=false over the whole text, then those
 *      with normalized=true over what is left between them.
 *   2. Each stretch between added tokens is pre-tokenised by the Split
 *      regexes in order. Each one cuts every piece made by the previous ones
 *      into its matches and the gaps between them ("Isolated"): DeepSeek's
 *      first cuts runs of 1-3 digits, the second runs of CJK and kana, the
 *      third words, punctuation runs and whitespace. A regex sees one piece
 *      only, so the (?!\S) lookahead stops at the piece's end.
 *   3. ByteLevel: a piece is its UTF-8 bytes, each byte one initial symbol.
 *   4. BPE: repeatedly merge the adjacent pair with the lowest merge rank
 *      (leftmost among equal ranks), with a min-heap of candidate pairs and a
 *      linked list of symbols (tokenizers' Word::merge_all): O(n log n) in
 *      the piece length, not the O(n²) of rescanning all pairs per merge.
 *
 * The regexes are PCRE2's (tokenizers uses Oniguruma): the same Unicode
 * general categories for \p{L} \p{N} \p{P} \p{S} \p{M}, the same
 * leftmost-first alternation; docs/TOKENIZER.md has the measured agreement.
 */
#include "tokenizer.h"

#include <stdlib.h>
#include <string.h>

/* Pieces at most this long are remembered per call: a long text repeats its
 * words, and a cached piece skips BPE. */
#define CACHE_MAX_PIECE 48
#define CACHE_MIN_TEXT 4096

/* ========================================================================== */
/* Per-call state                                                              */
/* ========================================================================== */

typedef struct {
    uint64_t hash;
    uint32_t key_off, key_len;   /* into cache_bytes */
    uint32_t ids_off, ids_n;     /* into cache_ids */
} cache_slot;

typedef struct {
    const ds3_tokenizer *t;
    unsigned flags;
    int32_t *ids;                /* [cap] the output */
    size_t n, cap;
    pcre2_match_data *md;

    /* BPE scratch for one piece of up to sym_cap bytes */
    int32_t *sym;                /* [sym_cap] token of each symbol; -1: merged into its left neighbour */
    int32_t *next, *prev;        /* [sym_cap] linked list of live symbols */
    size_t sym_cap;
    uint64_t *heap;              /* [heap_cap] candidate merges: rank << 32 | left symbol */
    size_t heap_cap;

    /* Piece cache (long texts only): piece bytes -> their ids. */
    cache_slot *slot;            /* [cache_cap] hash == 0: empty */
    size_t cache_cap, cache_used;
    unsigned char *cache_bytes;
    size_t cb_n, cb_cap;
    int32_t *cache_ids;
    size_t ci_n, ci_cap;
} enc;

static ds3_status grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return DS3_OK;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *np = realloc(*p, c * elem);
    if (!np) return ds3_fail(DS3_ERR_NOMEM, "out of memory encoding (%zu x %zu bytes)", c, elem);
    *p = np;
    *cap = c;
    return DS3_OK;
}

static ds3_status emit(enc *e, int32_t id) {
    if (e->n == e->cap) {
        ds3_status st = grow((void **)&e->ids, &e->cap, e->n + 1, sizeof *e->ids);
        if (st != DS3_OK) return st;
    }
    e->ids[e->n++] = id;
    return DS3_OK;
}

/* ========================================================================== */
/* BPE                                                                         */
/* ========================================================================== */

static bool merge_of(const ds3_tokenizer *t, int32_t a, int32_t b, int32_t *rank, int32_t *merged) {
    const ds3_tok_pairmap *m = &t->merges;
    uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t i = ((k * 0x9E3779B97F4A7C15ull) >> 17) & (m->cap - 1);
    for (; m->key[i] != UINT64_MAX; i = (i + 1) & (m->cap - 1))
        if (m->key[i] == k) {
            *rank = m->rank[i];
            *merged = m->merged[i];
            return true;
        }
    return false;
}

static void heap_push(uint64_t *h, size_t *n, uint64_t v) {
    size_t i = (*n)++;
    while (i > 0 && h[(i - 1) / 2] > v) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = v;
}

static uint64_t heap_pop(uint64_t *h, size_t *n) {
    uint64_t top = h[0], v = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && h[c + 1] < h[c]) c++;
        if (h[c] >= v) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = v;
    return top;
}

/* Queue the pair (symbol i, its right neighbour) if it is a merge. The heap
 * key orders by rank, then by position: tokenizers' order. */
static void queue_pair(enc *e, size_t *hn, int32_t i) {
    int32_t j = e->next[i], rank, merged;
    if (j >= 0 && merge_of(e->t, e->sym[i], e->sym[j], &rank, &merged))
        heap_push(e->heap, hn, (uint64_t)(uint32_t)rank << 32 | (uint32_t)i);
}

/* The ids of one piece's bytes, appended to the output. */
static ds3_status bpe(enc *e, const unsigned char *s, size_t n) {
    const ds3_tokenizer *t = e->t;
    if (n == 1) return emit(e, t->byte_id[s[0]]);
    if (n > INT32_MAX) return ds3_fail(DS3_ERR_ARG, "encode: a single piece of %zu bytes is too long", n);
    ds3_status st;
    if (n > e->sym_cap) {
        size_t c = e->sym_cap;
        if ((st = grow((void **)&e->sym, &c, n, sizeof *e->sym)) != DS3_OK) return st;
        c = e->sym_cap;
        if ((st = grow((void **)&e->next, &c, n, sizeof *e->next)) != DS3_OK) return st;
        c = e->sym_cap;
        if ((st = grow((void **)&e->prev, &c, n, sizeof *e->prev)) != DS3_OK) return st;
        e->sym_cap = c;
    }
    /* At most n-1 pairs to start with; each merge pops one entry and pushes
     * at most two, and there are at most n-1 merges: 2n entries at most. */
    if ((st = grow((void **)&e->heap, &e->heap_cap, 2 * n, sizeof *e->heap)) != DS3_OK) return st;
    int32_t m = (int32_t)n;
    for (int32_t i = 0; i < m; i++) {
        e->sym[i] = t->byte_id[s[i]];
        e->prev[i] = i - 1;
        e->next[i] = i + 1 < m ? i + 1 : -1;
    }
    /* Every adjacent pair starts as a candidate. */
    size_t hn = 0;
    for (int32_t i = 0; i + 1 < m; i++) queue_pair(e, &hn, i);
    while (hn) {
        uint64_t top = heap_pop(e->heap, &hn);
        int32_t i = (int32_t)(uint32_t)top, rank, merged;
        int32_t j = e->sym[i] >= 0 ? e->next[i] : -1;
        /* A stale entry: one side has merged since it was queued. The pair
         * now at i has another rank (ranks are unique per pair). */
        if (j < 0 || !merge_of(t, e->sym[i], e->sym[j], &rank, &merged) || (uint32_t)rank != (uint32_t)(top >> 32))
            continue;
        e->sym[i] = merged;
        e->sym[j] = -1;
        e->next[i] = e->next[j];
        if (e->next[j] >= 0) e->prev[e->next[j]] = i;
        if (e->prev[i] >= 0) queue_pair(e, &hn, e->prev[i]);
        queue_pair(e, &hn, i);
    }
    for (int32_t i = 0; i >= 0; i = e->next[i])
        if ((st = emit(e, e->sym[i])) != DS3_OK) return st;
    return DS3_OK;
}

/* ========================================================================== */
/* Piece cache                                                                 */
/* ========================================================================== */

static uint64_t piece_hash(const unsigned char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ull;
    return h | 1;   /* 0 marks an empty slot */
}

/* BPE through the cache: a piece seen before copies its ids. */
static ds3_status bpe_cached(enc *e, const unsigned char *s, size_t n) {
    if (!e->cache_cap || n > CACHE_MAX_PIECE || n == 1) return bpe(e, s, n);
    uint64_t h = piece_hash(s, n);
    size_t i = h & (e->cache_cap - 1);
    for (; e->slot[i].hash; i = (i + 1) & (e->cache_cap - 1)) {
        cache_slot *c = &e->slot[i];
        if (c->hash == h && c->key_len == n && memcmp(e->cache_bytes + c->key_off, s, n) == 0) {
            ds3_status st = grow((void **)&e->ids, &e->cap, e->n + c->ids_n, sizeof *e->ids);
            if (st != DS3_OK) return st;
            memcpy(e->ids + e->n, e->cache_ids + c->ids_off, c->ids_n * sizeof *e->ids);
            e->n += c->ids_n;
            return DS3_OK;
        }
    }
    size_t before = e->n;
    ds3_status st = bpe(e, s, n);
    if (st != DS3_OK) return st;
    /* Remember it while the table is at most half full; after that, the
     * words that matter are in already. */
    if (2 * (e->cache_used + 1) > e->cache_cap) return DS3_OK;
    size_t k = e->n - before;
    if (grow((void **)&e->cache_bytes, &e->cb_cap, e->cb_n + n, 1) != DS3_OK ||
        grow((void **)&e->cache_ids, &e->ci_cap, e->ci_n + k, sizeof *e->cache_ids) != DS3_OK)
        return DS3_OK;   /* the cache is an optimisation: no room, no entry */
    memcpy(e->cache_bytes + e->cb_n, s, n);
    memcpy(e->cache_ids + e->ci_n, e->ids + before, k * sizeof *e->ids);
    e->slot[i] = (cache_slot){h, (uint32_t)e->cb_n, (uint32_t)n, (uint32_t)e->ci_n, (uint32_t)k};
    e->cb_n += n;
    e->ci_n += k;
    e->cache_used++;
    return DS3_OK;
}

/* ========================================================================== */
/* Pre-tokenisation                                                            */
/* ========================================================================== */

static size_t utf8_len(unsigned char c) { return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }

/* No byte >= 0x80 in s[0..n), eight at a time. */
static bool all_ascii(const unsigned char *s, size_t n) {
    size_t i = 0;
    uint64_t acc = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        acc |= w;
    }
    for (; i < n; i++) acc |= s[i];
    return (acc & 0x8080808080808080ull) == 0;
}

/* Cut s[0..n) by Split regex `level` and hand every match and every gap
 * between matches, in order, to the next level; after the last, to BPE. */
static ds3_status split(enc *e, const unsigned char *s, size_t n, int level) {
    if (n == 0) return DS3_OK;
    if (level == e->t->n_split) return bpe_cached(e, s, n);
    const pcre2_code *re = e->t->split_ascii[level] && all_ascii(s, n) ? e->t->split_ascii[level] : e->t->split[level];
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
    size_t pos = 0, prev = 0;
    ds3_status st;
    while (pos < n) {
        int rc = pcre2_match(re, s, n, pos, PCRE2_NO_UTF_CHECK, e->md, NULL);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT)   /* a pathological piece: the interpreter has a heap */
            rc = pcre2_match(re, s, n, pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, e->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return ds3_fail(DS3_ERR_NOMEM, "encode: Split regex %d failed on a piece of %zu bytes: %s", level, n,
                            (const char *)msg);
        }
        size_t ms = ov[0], me = ov[1];
        if (me == ms) {   /* an empty match cuts nothing; look again one character on */
            pos = ms + utf8_len(s[ms]);
            continue;
        }
        if (ms > prev && (st = split(e, s + prev, ms - prev, level + 1)) != DS3_OK) return st;
        if ((st = split(e, s + ms, me - ms, level + 1)) != DS3_OK) return st;
        prev = pos = me;
    }
    return prev < n ? split(e, s + prev, n - prev, level + 1) : DS3_OK;
}

/* ========================================================================== */
/* Added tokens                                                                */
/* ========================================================================== */

/* The longest added token of `tr` starting at s[0..n): its id and length, or -1. */
static int32_t longest_at(const ds3_tok_trie *tr, const unsigned char *s, size_t n, size_t *len) {
    int32_t cur = 0, best = -1;
    for (size_t i = 0; i < n; i++) {
        int32_t c = tr->node[cur].child;
        while (c >= 0 && tr->node[c].byte != s[i]) c = tr->node[c].sibling;
        if (c < 0) break;
        cur = c;
        if (tr->node[c].token >= 0) {
            best = tr->node[c].token;
            *len = i + 1;
        }
    }
    return best;
}

/* Pass `pass` (0: normalized=false tokens, 1: normalized=true) over s[0..n):
 * each added token found becomes its id; the text around goes to the next
 * pass, then to pre-tokenisation. */
static ds3_status added_pass(enc *e, const unsigned char *s, size_t n, int pass) {
    if (pass == 2) return split(e, s, n, 0);
    const ds3_tok_trie *tr = pass == 0 ? &e->t->trie_raw : &e->t->trie_norm;
    size_t gap = 0, i = 0;
    ds3_status st;
    while (i < n) {
        if (!tr->first[s[i]]) {
            i++;
            continue;
        }
        size_t len = 0;
        int32_t id = longest_at(tr, s + i, n - i, &len);
        if (id < 0) {
            i++;
            continue;
        }
        /* Special tokens as text: the match is skipped whole, as tokenizers
         * skips it (its matches never overlap, so nothing inside is found). */
        if ((e->flags & DS3_TOKENIZE_SPECIAL_AS_TEXT) && (e->t->id_flags[id] & DS3_TOK_SPECIAL)) {
            i += len;
            continue;
        }
        if (i > gap && (st = added_pass(e, s + gap, i - gap, pass + 1)) != DS3_OK) return st;
        if ((st = emit(e, id)) != DS3_OK) return st;
        i += len;
        gap = i;
    }
    return gap < n ? added_pass(e, s + gap, n - gap, pass + 1) : DS3_OK;
}

/* ========================================================================== */
/* Entry point                                                                 */
/* ========================================================================== */

/* s with every maximal ill-formed subsequence replaced by U+FFFD (EF BF BD). */
static unsigned char *repair_utf8(const unsigned char *s, size_t n, size_t *out_n) {
    if (n > (SIZE_MAX - 1) / 3) return NULL;
    unsigned char *r = ds3_malloc(3 * n + 1);
    if (!r) return NULL;
    size_t i = 0, k = 0, len;
    while (i < n) {
        if (ds3_utf8_seq(s + i, n - i, &len) == 1) {
            memcpy(r + k, s + i, len);
            k += len;
        } else {
            r[k++] = 0xEF, r[k++] = 0xBF, r[k++] = 0xBD;
        }
        i += len;
    }
    *out_n = k;
    return r;
}

ds3_status ds3_tokenizer_encode(const ds3_tokenizer *t, const char *text, size_t len, unsigned flags,
                                int32_t **ids, size_t *n_ids) {
    if (!t || !ids || !n_ids || (len && !text)) return ds3_fail(DS3_ERR_ARG, "ds3_tokenizer_encode: NULL argument");
    *ids = NULL;
    *n_ids = 0;
    if (flags & ~(unsigned)(DS3_TOKENIZE_BOS | DS3_TOKENIZE_SPECIAL_AS_TEXT))
        return ds3_fail(DS3_ERR_ARG, "ds3_tokenizer_encode: unknown flags 0x%x", flags);
    if ((flags & DS3_TOKENIZE_BOS) && t->bos < 0)
        return ds3_fail(DS3_ERR_ARG, "%s: no BOS token (no bos_token in a tokenizer_config.json beside it)", t->path);

    const unsigned char *s = (const unsigned char *)text;
    unsigned char *fixed = NULL;
    if (ds3_utf8_valid_prefix(text, len) < len) {
        fixed = repair_utf8(s, len, &len);
        if (!fixed) return ds3_fail(DS3_ERR_NOMEM, "out of memory encoding %zu bytes", len);
        s = fixed;
    }

    enc e;
    memset(&e, 0, sizeof e);
    e.t = t;
    e.flags = flags;
    ds3_status st = DS3_OK;
    e.md = pcre2_match_data_create(4, NULL);
    if (!e.md) st = ds3_fail(DS3_ERR_NOMEM, "out of memory encoding");
    /* About one token per 3-4 bytes of text; grown when needed. */
    if (st == DS3_OK) st = grow((void **)&e.ids, &e.cap, len / 3 + 16, sizeof *e.ids);
    if (st == DS3_OK && len >= CACHE_MIN_TEXT) {
        e.cache_cap = 1;
        while (e.cache_cap < len / 4 && e.cache_cap < ((size_t)1 << 17)) e.cache_cap <<= 1;
        e.slot = ds3_calloc(e.cache_cap, sizeof *e.slot);
        if (!e.slot) e.cache_cap = 0;   /* no cache, same ids */
    }
    if (st == DS3_OK && (flags & DS3_TOKENIZE_BOS)) st = emit(&e, t->bos);
    if (st == DS3_OK) st = added_pass(&e, s, len, 0);

    pcre2_match_data_free(e.md);
    free(e.sym);
    free(e.next);
    free(e.prev);
    free(e.heap);
    free(e.slot);
    free(e.cache_bytes);
    free(e.cache_ids);
    free(fixed);
    if (st != DS3_OK) {
        free(e.ids);
        return st;
    }
    if (e.n == 0) {
        free(e.ids);
        e.ids = NULL;
    }
    *ids = e.ids;
    *n_ids = e.n;
    return DS3_OK;
}

/*
 * tokenizer.h — the tokenizer's internal structures, shared by tokenizer.c
 * (loading, decoding) and tokenizer_encode.c (encoding). Not API: programs use
 * the "tokenizer" section of include/ds3.h; tests may include this.
 *
 * Everything is built once by ds3_tokenizer_load and read-only afterwards, so
 * one tokenizer can encode and decode on many threads at once.
 */
#ifndef DS3_TOKENIZER_H
#define DS3_TOKENIZER_H

#include "error.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

/* ---- hash tables ------------------------------------------------------------ */

/* Byte string -> id, open addressing (linear probing). Keys point into memory
 * the tokenizer owns (its decode table), so the table stores no copies. */
typedef struct {
    const unsigned char **key;   /* [cap] NULL: empty slot */
    uint32_t *len;               /* [cap] */
    int32_t *id;                 /* [cap] */
    size_t cap;                  /* a power of two, at least twice the entries */
} ds3_tok_strmap;

/* The merges: (left id, right id) -> (rank, merged id). */
typedef struct {
    uint64_t *key;               /* [cap] (left << 32) | right; UINT64_MAX: empty */
    int32_t *rank;               /* [cap] position in the merges list: lower merges first */
    int32_t *merged;             /* [cap] id of left+right */
    size_t cap;                  /* a power of two */
} ds3_tok_pairmap;

/* ---- added tokens ------------------------------------------------------------ */

/* A byte trie over the added tokens' contents, one per matching pass. Nodes
 * are first-child / next-sibling lists: the tokens share long prefixes
 * ("<｜place▁holder▁no▁"), so this stays small. */
typedef struct {
    int32_t child;               /* first child node, -1: none */
    int32_t sibling;             /* next sibling node, -1: none */
    int32_t token;               /* id of the token ending here, -1: none */
    unsigned char byte;          /* the byte on the edge into this node */
} ds3_tok_trie_node;

typedef struct {
    ds3_tok_trie_node *node;     /* [n] node 0 is the root */
    int n, cap;
    bool first[256];             /* bytes some token starts with: a quick skip */
} ds3_tok_trie;

/* ---- the tokenizer ---------------------------------------------------------- */

/* id_flags bits */
#define DS3_TOK_EXISTS  1u       /* the id names a token (ids may have holes) */
#define DS3_TOK_ADDED   2u       /* an added token (matched in the text before BPE) */
#define DS3_TOK_SPECIAL 4u       /* an added token marked "special" */

#define DS3_TOK_MAX_SPLITS 8     /* Split pre-tokenizers in the Sequence */

struct ds3_tokenizer {
    char *path;                  /* the tokenizer.json read, for messages */
    int n_ids;                   /* ids are 0..n_ids-1 */

    /* Decoding: the bytes of every id, concatenated. */
    unsigned char *bytes;        /* [dec_off[n_ids]] */
    uint32_t *dec_off;           /* [n_ids + 1] id i is bytes[dec_off[i] .. dec_off[i+1]) */
    uint8_t *id_flags;           /* [n_ids] DS3_TOK_* */

    /* The BPE model. */
    int32_t byte_id[256];        /* the token of each single byte (the ByteLevel alphabet) */
    ds3_tok_strmap vocab;        /* bytes of a model (non-added) token -> id */
    ds3_tok_pairmap merges;
    int n_merges;

    /* Added tokens, matched before pre-tokenisation in two passes, as
     * tokenizers' AddedVocabulary does: first those with normalized=false on
     * the raw text, then those with normalized=true in what is left. */
    ds3_tok_trie trie_raw, trie_norm;
    ds3_tok_strmap added;        /* content -> id, for ds3_tokenizer_token_id */
    char *added_text;            /* the added tokens' contents, NUL-terminated, one after another */
    uint32_t *added_off;         /* [n_ids] where an added token's content starts in added_text */

    /* Pre-tokenisation: the Split regexes, applied in order, each to every
     * piece the previous ones produced. */
    pcre2_code *split[DS3_TOK_MAX_SPLITS];
    pcre2_code *split_ascii[DS3_TOK_MAX_SPLITS];   /* the same for all-ASCII pieces; NULL: use split[] */
    int n_split;
    const void *uclasses;        /* tokenizer_regex.c: PCRE2's Unicode classes against tokenizers' (shared, static) */

    int32_t bos, eos;            /* -1: none */
    char *chat_template;         /* tokenizer_config.json's chat_template, NULL: none */
};

/* ---- shared helpers ----------------------------------------------------------- */

/* One UTF-8 sequence at s[0..n), n >= 1, by Table 3-7 of the Unicode standard.
 *   returns 1: a well-formed sequence of *len bytes;
 *   returns 0: ill-formed; *len is its maximal subpart (>= 1 bytes), which a
 *              decoder replaces with one U+FFFD (as Python's errors="replace");
 *   returns -1: a well-formed prefix cut short by the end of s (*len = n). */
int ds3_utf8_seq(const unsigned char *s, size_t n, size_t *len);

int32_t ds3_tok_strmap_get(const ds3_tok_strmap *m, const unsigned char *s, size_t n);

/* tokenizer_regex.c: compile a Split regex with PCRE2 (JIT), its Unicode
 * classes made to hold what they hold for Hugging Face tokenizers; *ascii
 * (may be NULL) is a faster form for subjects that are all ASCII. */
ds3_status ds3_tok_compile_split(ds3_tokenizer *t, const char *pattern, pcre2_code **full, pcre2_code **ascii);
/* How each class is written ("L:pcre2+35 N:pcre2+10 … s:ranges"); "" if none. */
void ds3_tok_uclasses_describe(const ds3_tokenizer *t, char *buf, size_t size);

#endif /* DS3_TOKENIZER_H */

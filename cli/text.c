/*
 * text.c — text in, text out on the command line (docs/TOKENIZER.md):
 *
 *   ds3 tokenize   (--tokenizer PATH | -m DIR) [--bos] [--special-as-text]  < text
 *   ds3 detokenize (--tokenizer PATH | -m DIR)                              < ids
 *
 * `tokenize` reads all of stdin as bytes and prints the ids comma-separated
 * on one line; `detokenize` reads comma-separated ids (blanks and newlines
 * around them allowed) and writes the exact bytes, with no newline added, so
 * that `ds3 tokenize … | ds3 detokenize …` gives back its input byte for byte
 * (invalid UTF-8 excepted: it is read as U+FFFD, as Hugging Face reads it).
 *
 * Also here: finding a model's tokenizer (-m DIR looks for DIR/tokenizer.json),
 * copying DeepSeek-V3's tokenizer into the models `ds3 mkmodel` writes with
 * its vocabulary, and the JSON string writer of `ds3 run --json`.
 */
#include "text.h"
#include "common.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef DS3_DATA_DIR
#define DS3_DATA_DIR "data"   /* the Makefile bakes in the source tree's absolute path */
#endif
#ifndef PATH_MAX
#define PATH_MAX 4096
#endif

/* DeepSeek-V3's vocab_size: a model with it gets DeepSeek-V3's tokenizer. */
#define V3_VOCAB 129280

enum { TEXT_OK = 0, TEXT_RUNTIME = 1, TEXT_USAGE = 2 };

const char *const cli_help_tokenize =
    "usage: ds3 tokenize (--tokenizer PATH | -m DIR) [--bos] [--special-as-text]\n"
    "\n"
    "Read text from stdin (all of it, as bytes) and print its token ids on one\n"
    "line, comma-separated (an empty line for empty input).\n"
    "\n"
    "  --tokenizer PATH   a tokenizer.json, or a directory holding one\n"
    "  -m, --model DIR    a model directory with a tokenizer.json\n"
    "  --bos              put the BOS token first (none by default)\n"
    "  --special-as-text  special tokens written in the text (\"<｜end▁of▁sentence｜>\")\n"
    "                     are plain text, not their ids\n"
    "\n"
    "Bytes that are not UTF-8 are read as U+FFFD, as Hugging Face tokenizers reads\n"
    "Python's bytes.decode(\"utf-8\", \"replace\"). docs/TOKENIZER.md\n";

const char *const cli_help_detokenize =
    "usage: ds3 detokenize (--tokenizer PATH | -m DIR)\n"
    "\n"
    "Read comma-separated token ids from stdin (blanks and newlines around them\n"
    "allowed) and write the exact bytes they stand for to stdout, with no newline\n"
    "added. An id that is not a token is an error (exit 1).\n"
    "\n"
    "  --tokenizer PATH   a tokenizer.json, or a directory holding one\n"
    "  -m, --model DIR    a model directory with a tokenizer.json\n";

/* ========================================================================== */
/* Files                                                                       */
/* ========================================================================== */

/* All of f, NUL-terminated (*len without it); NULL on a read error or no memory. */
static char *read_stream(FILE *f, size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *s = malloc(cap + 1);
    while (s) {
        n += fread(s + n, 1, cap - n, f);
        if (n < cap) break;
        char *ns = realloc(s, 2 * cap + 1);
        if (!ns) {
            free(s);
            return NULL;
        }
        s = ns;
        cap *= 2;
    }
    if (!s || ferror(f)) {
        free(s);
        return NULL;
    }
    s[n] = '\0';
    *len = n;
    return s;
}

char *cli_read_file(const char *path, size_t *len) {
    if (strcmp(path, "-") == 0) return read_stream(stdin, len);
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *s = read_stream(f, len);
    int e = errno;
    fclose(f);
    errno = e;
    return s;
}

static bool is_file(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* dir + "/" + name, malloc'd. */
static char *join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s/%s", dir, name);
    return s;
}

/* ========================================================================== */
/* Finding and loading a tokenizer                                             */
/* ========================================================================== */

/* DIR/tokenizers is a directory. */
static bool has_tokenizers(const char *dir) {
    char p[PATH_MAX + 16];
    struct stat st;
    if (snprintf(p, sizeof p, "%s/tokenizers", dir) >= (int)sizeof p) return false;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/*
 * ds3's data (data/tokenizers/): $DS3_DATA_DIR if set; else found from the
 * binary's own location, so that an installed or moved tree works —
 * BIN/../share/ds3 (`make install`: PREFIX/bin/ds3 and PREFIX/share/ds3), then
 * BIN/../data (the build tree: build/ds3 and data/); else the directory baked
 * in at build time (the source tree's data/). /proc/self/exe is Linux's; other
 * systems go straight to the baked-in path.
 */
const char *cli_data_dir(void) {
    const char *d = getenv("DS3_DATA_DIR");
    if (d && d[0]) return d;
    static char found[PATH_MAX + 16];
    if (found[0]) return found;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            static const char *const rel[] = {"../share/ds3", "../data"};
            for (size_t i = 0; i < sizeof rel / sizeof *rel; i++) {
                if (snprintf(found, sizeof found, "%s/%s", exe, rel[i]) < (int)sizeof found && has_tokenizers(found))
                    return found;
            }
        }
    }
    found[0] = '\0';
    return DS3_DATA_DIR;
}

int cli_load_tokenizer(const char *path, const char *model_dir, bool required, ds3_tokenizer **t, char *err,
                       size_t errsize) {
    *t = NULL;
    char *own = NULL;
    if (!path) {
        if (!model_dir) {
            snprintf(err, errsize, "no tokenizer: give --tokenizer PATH or -m DIR");
            return TEXT_USAGE;
        }
        /* The folder first: "no tokenizer.json" would send a typo the wrong way. */
        struct stat sb;
        if (stat(model_dir, &sb) != 0) {
            snprintf(err, errsize, "%s: %s", model_dir, errno == ENOENT ? "no such directory" : strerror(errno));
            return TEXT_RUNTIME;
        }
        if (!S_ISDIR(sb.st_mode)) {
            snprintf(err, errsize, "%s is a file, not a model directory (give the folder that holds config.json)",
                     model_dir);
            return TEXT_RUNTIME;
        }
        own = join(model_dir, "tokenizer.json");
        if (!own) {
            snprintf(err, errsize, "out of memory");
            return TEXT_RUNTIME;
        }
        if (!is_file(own)) {
            free(own);
            if (!required) return TEXT_OK;
            snprintf(err, errsize, "%s has no tokenizer.json; give --tokenizer PATH (e.g. %s/tokenizers/deepseek-v3)",
                     model_dir, cli_data_dir());
            return TEXT_RUNTIME;
        }
        path = own;
    }
    ds3_status st = ds3_tokenizer_load(path, t);
    free(own);
    if (st != DS3_OK) {
        snprintf(err, errsize, "loading tokenizer: %s", ds3_last_error());
        return TEXT_RUNTIME;
    }
    return TEXT_OK;
}

int cli_mkmodel_tokenizer(const char *tokenizer, long vocab, char **src, char *err, size_t errsize) {
    *src = NULL;
    char *v3 = NULL;
    if (!tokenizer) {
        if (vocab != V3_VOCAB) return TEXT_OK;   /* not DeepSeek-V3's vocabulary: nothing to copy */
        v3 = join(cli_data_dir(), "tokenizers/deepseek-v3");
        if (!v3) {
            snprintf(err, errsize, "out of memory");
            return TEXT_RUNTIME;
        }
        tokenizer = v3;
    }
    /* Load it: a broken tokenizer is refused here, not at the first run. */
    ds3_tokenizer *t = NULL;
    int rc = cli_load_tokenizer(tokenizer, NULL, true, &t, err, errsize);
    if (rc != TEXT_OK && v3) {
        size_t l = strlen(err);
        snprintf(err + l, errsize - l, " (DeepSeek-V3's tokenizer for vocab_size %d; set DS3_DATA_DIR to ds3's data/)",
                 V3_VOCAB);
    }
    if (rc == TEXT_OK && ds3_tokenizer_n_ids(t) > vocab) {
        snprintf(err, errsize, "tokenizer %s has %d ids, more than the model's vocab_size %ld", tokenizer,
                 ds3_tokenizer_n_ids(t), vocab);
        rc = TEXT_RUNTIME;
    }
    ds3_tokenizer_free(t);
    if (rc == TEXT_OK && !(*src = v3 ? v3 : strdup(tokenizer))) {
        snprintf(err, errsize, "out of memory");
        rc = TEXT_RUNTIME;
    }
    if (rc != TEXT_OK) free(v3);
    return rc;
}

/* ========================================================================== */
/* JSON                                                                        */
/* ========================================================================== */

void cli_json_string(FILE *f, const char *s, size_t n) {
    fputc('"', f);
    size_t i = 0;
    while (i < n) {
        size_t ok = ds3_utf8_valid_prefix(s + i, n - i);
        for (size_t k = i; k < i + ok; k++) {
            unsigned char c = (unsigned char)s[k];
            if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
            else if (c == '\n') fputs("\\n", f);
            else if (c == '\r') fputs("\\r", f);
            else if (c == '\t') fputs("\\t", f);
            else if (c < 0x20 || c == 0x7F) fprintf(f, "\\u%04x", c);
            else fputc(c, f);
        }
        i += ok;
        if (i < n) {   /* a byte that does not start a valid character */
            fputs("\\ufffd", f);
            i++;
        }
    }
    fputc('"', f);
}

/* ========================================================================== */
/* tokenize, detokenize                                                        */
/* ========================================================================== */

/* The options both commands share; returns the tokenizer. */
static ds3_tokenizer *open_tokenizer(const char *path, const char *model) {
    if (path && model) cli_usage("give --tokenizer PATH or -m DIR, not both");
    if (!path && !model) cli_usage("missing --tokenizer PATH (or -m DIR)");
    char err[512];
    ds3_tokenizer *t = NULL;
    int rc = cli_load_tokenizer(path, model, true, &t, err, sizeof err);
    if (rc == TEXT_USAGE) cli_usage("%s", err);
    if (rc != TEXT_OK) cli_die("%s", err);
    return t;
}

int cli_tokenize(int argc, char **argv) {
    const char *path = NULL, *model = NULL, *v;
    unsigned flags = 0;
    for (int i = 0; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            fputs(cli_help_tokenize, stdout);
            return 0;
        } else if ((v = cli_opt_value(argc, argv, &i, NULL, "--tokenizer"))) path = v;
        else if ((v = cli_opt_value(argc, argv, &i, "-m", "--model"))) model = v;
        else if (strcmp(argv[i], "--bos") == 0) flags |= DS3_TOKENIZE_BOS;
        else if (strcmp(argv[i], "--special-as-text") == 0) flags |= DS3_TOKENIZE_SPECIAL_AS_TEXT;
        else if (argv[i][0] == '-') cli_usage("unknown option '%s'", argv[i]);
        else cli_usage("unexpected argument '%s' (the text is read from stdin)", argv[i]);
    }
    ds3_tokenizer *t = open_tokenizer(path, model);
    size_t len = 0;
    char *text = read_stream(stdin, &len);
    if (!text) cli_die("cannot read stdin");
    int32_t *ids = NULL;
    size_t n = 0;
    ds3_status st = ds3_tokenizer_encode(t, text, len, flags, &ids, &n);
    if (st != DS3_OK) cli_die("tokenize: %s", ds3_last_error());
    for (size_t i = 0; i < n; i++) printf(i ? ",%d" : "%d", (int)ids[i]);
    printf("\n");
    free(ids);
    free(text);
    ds3_tokenizer_free(t);
    cli_flush_stdout();
    return 0;
}

static bool blank(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Length of the entry at p for a message: up to a comma or blank, at most 20. */
static int entry_len(const char *p, const char *end) {
    int n = 0;
    while (p + n < end && n < 20 && p[n] != ',' && !blank(p[n])) n++;
    return n ? n : 1;
}

int cli_detokenize(int argc, char **argv) {
    const char *path = NULL, *model = NULL, *v;
    for (int i = 0; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            fputs(cli_help_detokenize, stdout);
            return 0;
        } else if ((v = cli_opt_value(argc, argv, &i, NULL, "--tokenizer"))) path = v;
        else if ((v = cli_opt_value(argc, argv, &i, "-m", "--model"))) model = v;
        else if (argv[i][0] == '-') cli_usage("unknown option '%s'", argv[i]);
        else cli_usage("unexpected argument '%s' (the ids are read from stdin)", argv[i]);
    }
    ds3_tokenizer *t = open_tokenizer(path, model);
    size_t len = 0;
    char *in = read_stream(stdin, &len);
    if (!in) cli_die("cannot read stdin");

    /* id (, id)*, blanks around each; nothing at all is no ids. Strict like
     * --tokens: "1,,2" or "12abc" is an error, not something else. */
    size_t cap = 256, n = 0;
    int32_t *ids = malloc(cap * sizeof *ids);
    if (!ids) cli_die("out of memory");
    const char *p = in, *end = in + len;
    while (p < end && blank(*p)) p++;
    while (p < end) {
        if (*p < '0' || *p > '9') cli_die("detokenize: '%.*s' at index %zu is not a token id", entry_len(p, end), p, n);
        long long id = 0;
        while (p < end && *p >= '0' && *p <= '9') {
            id = id * 10 + (*p++ - '0');
            if (id > INT32_MAX) cli_die("detokenize: the id at index %zu is too large", n);
        }
        if (n == cap) {
            int32_t *ni = realloc(ids, 2 * cap * sizeof *ids);
            if (!ni) cli_die("out of memory");
            ids = ni;
            cap *= 2;
        }
        ids[n++] = (int32_t)id;
        while (p < end && blank(*p)) p++;
        if (p == end) break;
        if (*p != ',') cli_die("detokenize: '%.*s' after index %zu is not a comma", entry_len(p, end), p, n - 1);
        p++;
        while (p < end && blank(*p)) p++;
        if (p == end) cli_die("detokenize: the list ends with a comma");
    }
    char *text = NULL;
    size_t tl = 0;
    ds3_status st = ds3_tokenizer_decode(t, ids, n, &text, &tl);
    if (st != DS3_OK) cli_die("detokenize: %s", ds3_last_error());
    fwrite(text, 1, tl, stdout);
    cli_flush_stdout();
    free(text);
    free(ids);
    free(in);
    ds3_tokenizer_free(t);
    return 0;
}

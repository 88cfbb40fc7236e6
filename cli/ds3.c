/*
 * ds3.c — the command-line tool: make a synthetic model, describe a model or
 * config, generate tokens, dump activations. It uses only include/ds3.h, the
 * public API, so it doubles as the example of how a program drives the
 * library (load → state → forward → sample).
 *
 *   ds3 mkmodel --config NAME|PATH [--dtype f32|bf16|fp8] [--seed N] [--bias-shift X] [--mtp-agree[=P]]
 *               [--tokenizer PATH] -o DIR
 *   ds3 info    -m DIR | --config NAME|PATH | --list
 *   ds3 run     -m DIR (--tokens 1,2,3 | -p TEXT | -f FILE [--chat [--system TEXT]]) [--tokenizer PATH]
 *               [-n N] [-c N] [--stop S]... [--temp T] [--top-p P] [--top-k K] [--min-p P]
 *               [--repeat-penalty R [--repeat-last-n N]] [-s S] [-t N] [--attn naive|absorb]
 *               [--mtp [--draft N]] [--kernels fast|deterministic|ref] [--ignore-eos] [--quiet] [--json]
 *   ds3 dump    -m DIR --tokens 1,2,3 -o OUT.safetensors [--attn naive|absorb] [--decode-from K]
 *               [--emulate bf16|fp8[,OPTIONS]] [--kernels fast|deterministic|ref]
 *
 *   ds3 chat    (cli/chat.c), ds3 compare (cli/compare.c), ds3 replay (cli/replay.c),
 *   ds3 tokenize / detokenize   (cli/text.c); sampling options: cli/sampling.c
 *
 * Output contract, relied on by scripts and tests/test_cli.c, test_text.c:
 *   - `run --tokens` prints the generated ids as ONE comma-separated line on
 *     stdout (its last line); `run -p` streams the generated text, then a
 *     newline; `--json` prints one JSON object instead; timings go to stderr
 *     (none with --quiet);
 *   - every error is one line on stderr starting "ds3: ";
 *   - exit status 0 success, 1 runtime error (a file, the model, a token out
 *     of the model's vocabulary), 2 usage error (the command line itself).
 *
 * Everything on the command line is checked before a model is loaded, so a
 * typo costs nothing even with a 600 GB checkpoint; only what needs the model
 * (token ids against the vocabulary, lengths against max_position_embeddings)
 * is checked after.
 */
#include "ds3.h"
#include "args.h"
#include "chat.h"
#include "common.h"
#include "sampling.h"
#include "text.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define DS3_VERSION "0.1.0"
#ifndef DS3_COMMIT
#define DS3_COMMIT "unknown"   /* the Makefile passes git describe's */
#endif

#define MAX_TOKENS CLI_MAX_TOKENS

/* ========================================================================== */
/* Errors                                                                      */
/* ========================================================================== */

/* A library call failed: its message (which names the file / tensor) and exit 1. */
static void __attribute__((noreturn)) lib_die(ds3_status st, const char *what) {
    const char *msg = ds3_last_error();
    if (!msg || !msg[0]) msg = ds3_status_name(st);
    cli_die("%s: %s", what, msg);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ========================================================================== */
/* Strict parsing of option values                                             */
/* ========================================================================== */

static ds3_attn_mode parse_attn(const char *s) {
    if (strcmp(s, "absorb") == 0) return DS3_ATTN_ABSORB;
    if (strcmp(s, "naive") == 0) return DS3_ATTN_NAIVE;
    cli_usage("--attn: '%s' is not one of naive, absorb", s);
}

/* --kernels: which implementation of the products runs (set on the state
 * with ds3_state_set_kernels once it exists). */
static ds3_kernels kernels = DS3_KERNELS_FAST;
static void set_kernels(const char *s) {
    if (ds3_kernels_parse(s, &kernels) != DS3_OK)
        cli_usage("--kernels: '%s' is not one of fast, deterministic, ref", s);
}

/* --tokens (cli/args.c): a malformed list is a usage error naming the entry. */
static int32_t *parse_tokens(const char *s, int *n_out) {
    char err[160];
    int32_t *t = NULL;
    int rc = cli_parse_tokens(s, &t, n_out, err, sizeof err);
    if (rc == CLI_ARGS_USAGE) cli_usage("%s", err);
    if (rc != CLI_ARGS_OK) cli_die("%s", err);
    return t;
}

/* Token ids against the loaded model's vocabulary: a runtime error (exit 1),
 * since the command line was well formed. */
static void check_vocab(const int32_t *t, int n, int vocab) {
    for (int i = 0; i < n; i++)
        if (t[i] >= vocab) cli_die("token %d at index %d is out of range (vocab %d)", (int)t[i], i, vocab);
}

/* ========================================================================== */
/* Option scanning                                                             */
/* ========================================================================== */

static void __attribute__((noreturn)) unknown_arg(const char *a) {
    if (a[0] == '-') cli_usage("unknown option '%s'", a);
    cli_usage("unexpected argument '%s'", a);
}

/* The output file's directory must exist: checked before the (possibly long)
 * forward pass, not after. */
static void check_output_path(const char *path) {
    size_t n = strlen(path);
    if (n == 0) cli_usage("-o: empty path");
    if (path[n - 1] == '/') cli_die("cannot write '%s': it names a directory", path);
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) cli_die("cannot write '%s': it is a directory", path);
    const char *slash = strrchr(path, '/');
    if (!slash) return;  /* the current directory */
    size_t dl = slash == path ? 1 : (size_t)(slash - path);
    char *dir = malloc(dl + 1);
    if (!dir) cli_die("out of memory");
    memcpy(dir, path, dl);
    dir[dl] = '\0';
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        cli_die("cannot write '%s': directory '%s' does not exist", path, dir);
    free(dir);
}

/* ========================================================================== */
/* Help                                                                        */
/* ========================================================================== */

static const char *const help_main =
    "usage: ds3 COMMAND [OPTIONS]\n"
    "\n"
    "A CPU reference implementation of the DeepSeek-V3 architecture.\n"
    "\n"
    "commands:\n"
    "  mkmodel   write a deterministic synthetic checkpoint\n"
    "  info      describe a model directory or a config (parameters, KV cache)\n"
    "  run       generate tokens from a prompt of token ids or text\n"
    "  chat      talk with a model, turn by turn (DeepSeek-V3's chat format)\n"
    "  dump      run a prompt and write named activations to a safetensors file\n"
    "  compare   compare two dumps tensor by tensor (docs/COMPARING.md)\n"
    "  replay    check a build's dump one layer at a time, on its own inputs\n"
    "  tokenize  text on stdin to token ids (docs/TOKENIZER.md)\n"
    "  detokenize\n"
    "            token ids on stdin to the exact text\n"
    "  help      this text, or 'ds3 help COMMAND'\n"
    "\n"
    "options:\n"
    "  -h, --help     show help (also 'ds3 COMMAND --help')\n"
    "  --version      print the version, the commit and what the build uses\n"
    "\n"
    "exit status: 0 success, 1 runtime error, 2 usage error\n";

static const char *const help_mkmodel =
    "usage: ds3 mkmodel --config NAME|PATH [--dtype f32|bf16|fp8] [--seed N] [--bias-shift X]\n"
    "                   [--mtp-agree[=P]] [--tokenizer PATH] [--force] -o DIR\n"
    "\n"
    "Write a deterministic synthetic checkpoint (config.json + safetensors, Hugging\n"
    "Face layout) to DIR. A model with DeepSeek-V3's vocabulary (vocab_size 129280,\n"
    "e.g. --config small) gets DeepSeek-V3's tokenizer.json and tokenizer_config.json.\n"
    "\n"
    "  --config NAME|PATH  a built-in config (ds3 info --list) or a config.json\n"
    "  --dtype D           projection weights: f32 (default), bf16 or fp8 (e4m3 with\n"
    "                      128x128 block scales, as released V3)\n"
    "  --seed N            weight seed, unsigned 64-bit (default 0)\n"
    "  --bias-shift X      added to every e_score_correction_bias (default 0)\n"
    "  --mtp-agree[=P]     weights on which MTP speculative decoding helps: the main model\n"
    "                      follows a fixed next-token function and the MTP layer predicts\n"
    "                      it, for a share P in (0, 1] of the tokens (default 1);\n"
    "                      docs/MKMODEL.md\n"
    "  --tokenizer PATH    copy this tokenizer (a tokenizer.json or its directory) into\n"
    "                      DIR instead; its ids must fit the vocabulary\n"
    "  -o, --output DIR    output directory (created if missing). The model is built\n"
    "                      beside it and renamed into place whole, so DIR must be\n"
    "                      new, empty, or hold only an earlier model's files\n"
    "  --force             write even when the file system has less free space than\n"
    "                      the model needs (checked first: both sizes are printed)\n"
    "\n"
    "Checked before anything is written: the config, the free space, and that the\n"
    "tokenizer loads and its ids fit the vocabulary.\n";

static const char *const help_info =
    "usage: ds3 info -m DIR | --config NAME|PATH | --list\n"
    "\n"
    "Describe an architecture: parameters (total and active per token), bytes per\n"
    "dtype, MLA KV-cache bytes per token.\n"
    "\n"
    "  -m, --model DIR     a model directory (loads and checks the weights)\n"
    "  --config NAME|PATH  a built-in config or a config.json, no weights needed\n"
    "  --list              list the built-in configs\n";

#define KERNELS_HELP                                                                       \
    "  --kernels K         fast (default: OpenBLAS beyond 32 tokens, AMX from 2 for\n"     \
    "                      BF16 and FP8 weights, a decode step's attention and FP8\n"      \
    "                      products in fused multiply-adds where the CPU has them),\n"     \
    "                      deterministic (a prefill has the bits of token-by-token\n"      \
    "                      decoding) or ref (the plain loops); docs/ARCHITECTURE.md\n"     \
    "                      section 6\n"

static const char *const help_run =
    "usage: ds3 run -m DIR (--tokens IDS | -p TEXT | -f FILE) [-n N] [-c N] [sampling options]\n"
    "               [--chat [--system TEXT]] [--stop STRING]... [--tokenizer PATH] [-t N]\n"
    "               [--attn naive|absorb] [--mtp [--draft N]] [--kernels K] [--ignore-eos]\n"
    "               [--quiet] [--json]\n"
    "\n"
    "Prefill the prompt in one forward call, then decode N tokens one at a time.\n"
    "With --tokens the generated ids go to stdout as one comma-separated line; with\n"
    "-p or -f the generated text is streamed to stdout as it is decoded, then a\n"
    "newline. On stderr: a 'system:' line (build, threads, BLAS, lane kernel), then\n"
    "prefill and decode tok/s and peak memory.\n"
    "\n"
    "  -m, --model DIR     model directory (config.json, safetensors, tokenizer.json)\n"
    "  --tokens IDS        prompt token ids, comma-separated (e.g. 1,2,3)\n"
    "  -p, --prompt TEXT   prompt text, encoded with the tokenizer after BOS; generation\n"
    "                      stops at EOS (docs/TOKENIZER.md). '-p -' reads stdin\n"
    "  -f, --file FILE     the prompt text from a file ('-': stdin)\n"
    "  --chat              wrap the prompt in DeepSeek-V3's chat format: BOS, <｜User｜>,\n"
    "                      TEXT, <｜Assistant｜> (for a conversation: ds3 chat)\n"
    "  --system TEXT       with --chat: a system prompt, after BOS\n"
    "  --stop STRING       end the text before STRING (repeatable, up to 16)\n"
    "  --tokenizer PATH    tokenizer.json (or its directory) for a model without one;\n"
    "                      default DIR/tokenizer.json\n"
    "  --ignore-eos        with -p, do not stop at EOS\n"
    "  --quiet             nothing on stderr but errors\n"
    "  --json              one JSON object on stdout at the end instead: prompt and\n"
    "                      generated ids, text, stop reason, timings, peak memory\n"
    "  -n, --n-predict N   tokens to generate (default 16); also -n16, -n=16\n"
    "  -c, --ctx-size N    positions of the KV cache: the prompt and the generated\n"
    "                      tokens together (default: exactly those); fewer ends early\n"
    CLI_SAMPLING_HELP
    "                      DIR/generation_config.json, when present, sets the\n"
    "                      defaults of temp, top-p, top-k, min-p and repeat-penalty\n"
    "                      (printed on stderr); the options above override it\n"
    "  --attn MODE         absorb (default, caches the latent) or naive (caches k, v)\n"
    "  --mtp               speculative decoding: the checkpoint's MTP layer drafts tokens,\n"
    "                      one main forward verifies them; greedy output is identical,\n"
    "                      sampled output has the same distribution. Acceptance on stderr\n"
    "                      (not with --repeat-penalty)\n"
    "  --draft N           tokens drafted per step with --mtp, 1..16 (default 1)\n"
    KERNELS_HELP;

static const char *const help_dump =
    "usage: ds3 dump -m DIR --tokens IDS -o OUT.safetensors [--attn naive|absorb] [--decode-from K]\n"
    "                [--emulate bf16|fp8[,OPTIONS]] [--kernels fast|deterministic|ref]\n"
    "\n"
    "Run the prompt and write the named activations of every position (embed,\n"
    "layers.N.*, norm, logits, and mtp.K.* for each MTP depth the checkpoint has;\n"
    "see docs/DUMP_FORMAT.md) to OUT.safetensors.\n"
    "\n"
    "  -m, --model DIR     model directory\n"
    "  --tokens IDS        token ids, comma-separated\n"
    "  -o, --output FILE   output file (written via a temporary name); '-': stdout\n"
    "  --attn MODE         absorb (default) or naive\n"
    "  --decode-from K     forward the first K tokens in one call, then the rest one\n"
    "                      at a time (0 < K <= number of tokens); default: one call\n"
    "  --emulate SPEC      round where a GPU build rounds: bf16, or fp8 (bf16 plus FP8\n"
    "                      inputs of FP8 linears); options ue8m0, router-f32, point\n"
    "                      names to keep only those (docs/COMPARING.md, Emulation)\n"
    KERNELS_HELP;

static void help_exit(const char *text) {
    fputs(text, stdout);
    exit(0);
}

/* ========================================================================== */
/* mkmodel                                                                     */
/* ========================================================================== */

/* Free bytes for an unprivileged writer on the file system that holds path,
 * or the nearest folder above it that exists; false if none can be asked. */
static bool free_space(const char *path, uint64_t *avail) {
    char *p = strdup(path);
    if (!p) return false;
    bool ok = false;
    for (;;) {
        struct statvfs vs;
        if (statvfs(p, &vs) == 0) {
            *avail = (uint64_t)vs.f_bavail * (uint64_t)vs.f_frsize;
            ok = true;
            break;
        }
        char *slash = strrchr(p, '/');
        if (!slash) {
            ok = statvfs(".", &vs) == 0;
            if (ok) *avail = (uint64_t)vs.f_bavail * (uint64_t)vs.f_frsize;
            break;
        }
        if (slash == p) {
            p[1] = '\0';
            ok = statvfs(p, &vs) == 0;
            if (ok) *avail = (uint64_t)vs.f_bavail * (uint64_t)vs.f_frsize;
            break;
        }
        *slash = '\0';
    }
    free(p);
    return ok;
}

static const char *const dtype_name[] = {"f32", "bf16", "fp8"};

static int cmd_mkmodel(int argc, char **argv) {
    ds3_mkmodel_opts o = {NULL, DS3_WEIGHTS_F32, 0, 0.0, 0.0, NULL};
    const char *out = NULL, *tokenizer = NULL, *v;
    bool force = false;
    for (int i = 0; i < argc; i++) {
        if (cli_is_help(argv[i])) help_exit(help_mkmodel);
        else if ((v = cli_opt_value(argc, argv, &i, NULL, "--config"))) o.config = v;
        else if ((v = cli_opt_value(argc, argv, &i, "-o", "--output"))) out = v;
        else if ((v = cli_opt_value(argc, argv, &i, NULL, "--seed"))) o.seed = cli_parse_u64("--seed", v);
        else if ((v = cli_opt_value(argc, argv, &i, NULL, "--tokenizer"))) tokenizer = v;
        else if (strcmp(argv[i], "--force") == 0) force = true;
        else if ((v = cli_opt_value(argc, argv, &i, NULL, "--bias-shift"))) o.bias_shift = cli_parse_real("--bias-shift", v);
        else if (strcmp(argv[i], "--mtp-agree") == 0) o.mtp_agree = 1.0;
        else if (strncmp(argv[i], "--mtp-agree=", 12) == 0) {
            o.mtp_agree = cli_parse_real("--mtp-agree", argv[i] + 12);
            if (!(o.mtp_agree > 0 && o.mtp_agree <= 1)) cli_usage("--mtp-agree: %s is outside (0, 1]", argv[i] + 12);
        }
        else if ((v = cli_opt_value(argc, argv, &i, NULL, "--dtype"))) {
            if (strcmp(v, "f32") == 0) o.dtype = DS3_WEIGHTS_F32;
            else if (strcmp(v, "bf16") == 0) o.dtype = DS3_WEIGHTS_BF16;
            else if (strcmp(v, "fp8") == 0) o.dtype = DS3_WEIGHTS_FP8;
            else cli_usage("--dtype: '%s' is not one of f32, bf16, fp8", v);
        } else unknown_arg(argv[i]);
    }
    if (!o.config) cli_usage("missing --config NAME|PATH");
    if (!out) cli_usage("missing -o DIR");
    cli_signals_start();   /* SIGINT/TERM/HUP: a message, no temporary left */
    /* What can fail is checked before the first byte is written: the config,
     * the space it needs, the tokenizer. */
    uint64_t need = 0;
    int vocab = 0;
    ds3_status st = ds3_mkmodel_estimate(&o, &need, &vocab);
    if (st != DS3_OK) lib_die(st, "mkmodel");
    uint64_t avail = 0;
    if (free_space(out, &avail) && need > avail) {
        if (!force)
            cli_die("mkmodel: %s in %s needs %.1f GB, %s has %.1f GB free (--force to try anyway)", o.config,
                    dtype_name[o.dtype], need / 1e9, out, avail / 1e9);
        fprintf(stderr, "mkmodel: --force: writing %.1f GB into %.1f GB free\n", need / 1e9, avail / 1e9);
    }
    char err[512], *tok_src = NULL;
    if (cli_mkmodel_tokenizer(tokenizer, vocab, &tok_src, err, sizeof err) != 0) cli_die("mkmodel: %s", err);
    if (need > ((uint64_t)1 << 30))
        fprintf(stderr, "mkmodel: writing %.1f GB to %s\n", need / 1e9, out);
    /* The tokenizer (cli/text.c: DeepSeek-V3's for its vocabulary, or
     * --tokenizer) goes into the model with the weights. */
    o.tokenizer = tok_src;
    st = ds3_mkmodel(&o, out);
    bool copied = tok_src != NULL;
    free(tok_src);
    if (st != DS3_OK) lib_die(st, "mkmodel");
    fprintf(stderr, "mkmodel: wrote %s%s\n", out, copied ? " (with tokenizer.json)" : "");
    return 0;
}

/* ========================================================================== */
/* info                                                                        */
/* ========================================================================== */

static int cmd_info(int argc, char **argv) {
    const char *model = NULL, *config = NULL, *v;
    bool list = false;
    for (int i = 0; i < argc; i++) {
        if (cli_is_help(argv[i])) help_exit(help_info);
        else if ((v = cli_opt_value(argc, argv, &i, "-m", "--model"))) model = v;
        else if ((v = cli_opt_value(argc, argv, &i, NULL, "--config"))) config = v;
        else if (strcmp(argv[i], "--list") == 0) list = true;
        else unknown_arg(argv[i]);
    }
    if ((model != NULL) + (config != NULL) + list != 1) cli_usage("give exactly one of -m DIR, --config NAME|PATH, --list");

    if (list) {
        for (const char *const *c = ds3_builtin_configs(); c && *c; c++) printf("%s\n", *c);
        return 0;
    }
    if (config) {
        ds3_status st = ds3_config_describe(config, stdout);
        if (st != DS3_OK) lib_die(st, "info");
        return 0;
    }
    ds3_model *m = NULL;
    ds3_status st = ds3_model_load(model, &m);
    if (st != DS3_OK) lib_die(st, "loading model");
    ds3_model_describe(m, stdout);
    ds3_model_free(m);
    return 0;
}

/* ========================================================================== */
/* run                                                                         */
/* ========================================================================== */

/* Positions needed against max_position_embeddings (0: no limit known). */
static void check_positions(const ds3_model *m, long long need, const char *what) {
    int maxpos = ds3_model_max_positions(m);
    if (maxpos > 0 && need > maxpos)
        cli_die("%s needs %lld positions, the model has max_position_embeddings %d", what, need, maxpos);
    if (need > INT_MAX) cli_die("%s needs %lld positions, more than this build can index", what, need);
}

/* Where each generated token goes: the ids line (--tokens), the decoded text
 * streamed as it becomes whole characters (-p), or, with --json, collected
 * for the object printed at the end. Called from the decode loop and as
 * ds3_generate_spec's callback (--mtp), so both stream the same way. */
typedef struct {
    const ds3_tokenizer *tok;    /* NULL: no text */
    ds3_detokenizer *detok;
    bool text;                   /* -p: text on stdout, not ids */
    bool json;                   /* collect; print nothing until the end */
    int32_t stop_id;             /* EOS ends generation (text mode), -1: never */
    int32_t *ids;                /* [cap] the generated ids */
    long n, cap;
    char *out;                   /* --json: the generated text */
    size_t out_n, out_cap;
    long no_token;               /* ids without a token (a padded vocabulary) */
    bool stopped;                /* stop_id was sampled */
    const ds3_model *m;          /* checked before each token is let out */
    const char *const *stops;    /* --stop strings (n_stops) */
    int n_stops;
    char *hold;                  /* text held back: it may be the start of a stop string */
    size_t hold_n, hold_cap;
    int stopped_at;              /* the --stop string found, or -1 */
} sink;

static void sink_emit(sink *k, const char *s, size_t len) {
    if (!len) return;
    if (!k->json) {
        fwrite(s, 1, len, stdout);
        cli_flush_stdout();
        return;
    }
    if (k->out_n + len + 1 > k->out_cap) {
        size_t cap = 2 * (k->out_n + len + 1);
        char *o = realloc(k->out, cap);
        if (!o) cli_die("out of memory for the generated text");
        k->out = o;
        k->out_cap = cap;
    }
    memcpy(k->out + k->out_n, s, len);
    k->out_n += len;
}

/* Text on its way out: with --stop strings, held back while it may still
 * become one; a stop string found ends the output before it (true). */
static bool sink_text(sink *k, const char *s, size_t len) {
    if (!k->n_stops) {
        sink_emit(k, s, len);
        return false;
    }
    if (k->hold_n + len + 1 > k->hold_cap) {
        size_t cap = 2 * (k->hold_n + len + 1);
        char *h = realloc(k->hold, cap);
        if (!h) cli_die("out of memory for the generated text");
        k->hold = h;
        k->hold_cap = cap;
    }
    memcpy(k->hold + k->hold_n, s, len);
    k->hold_n += len;
    /* the earliest stop string in the held text */
    size_t cut = k->hold_n;
    for (int j = 0; j < k->n_stops; j++) {
        size_t sl = strlen(k->stops[j]);
        for (size_t at = 0; at + sl <= k->hold_n && at < cut; at++)
            if (memcmp(k->hold + at, k->stops[j], sl) == 0) {
                cut = at;
                k->stopped_at = j;
                break;
            }
    }
    if (k->stopped_at >= 0) {
        sink_emit(k, k->hold, cut);
        k->hold_n = 0;
        return true;
    }
    /* keep the longest tail that is the start of a stop string */
    size_t keep = 0;
    for (int j = 0; j < k->n_stops; j++) {
        size_t sl = strlen(k->stops[j]);
        for (size_t t = sl - 1 < k->hold_n ? sl - 1 : k->hold_n; t > keep; t--)
            if (memcmp(k->hold + k->hold_n - t, k->stops[j], t) == 0) {
                keep = t;
                break;
            }
    }
    sink_emit(k, k->hold, k->hold_n - keep);
    memmove(k->hold, k->hold + k->hold_n - keep, keep);
    k->hold_n = keep;
    return false;
}

static int sink_token(void *user, int32_t tok) {
    sink *k = user;
    /* A weight file truncated or rewritten since the load: this token may
     * come from other weights, so it is not printed (one stat per file). */
    if (k->m && ds3_model_check(k->m) != DS3_OK) {
        if (!k->json && k->n) printf("\n");
        cli_die("%s", ds3_last_error());
    }
    if (tok == k->stop_id) {
        k->stopped = true;
        return 1;
    }
    if (k->n == k->cap) {
        k->cap = k->cap ? 2 * k->cap : 256;
        int32_t *ni = realloc(k->ids, (size_t)k->cap * sizeof *ni);
        if (!ni) cli_die("out of memory for the generated ids");
        k->ids = ni;
    }
    k->ids[k->n++] = tok;
    if (!k->text) {
        if (!k->json) {
            printf(k->n > 1 ? ",%d" : "%d", (int)tok);
            cli_flush_stdout();
        }
        if (!k->tok) return 0;
    }
    /* A model's vocabulary may be padded past the tokenizer's ids (V3: 129280
     * vs 128815); such an id has no text. */
    if (!ds3_tokenizer_token(k->tok, tok, NULL)) {
        k->no_token++;
        return 0;
    }
    const char *s;
    size_t len;
    if (ds3_detokenizer_push(k->detok, tok, &s, &len) != DS3_OK) lib_die(DS3_ERR_ARG, "decoding");
    if ((k->text || k->json) && sink_text(k, s, len)) return 1;
    return 0;
}

/* The end of the stream: an unfinished character, as it is. */
static void sink_flush(sink *k) {
    if (!k->detok) return;
    const char *s;
    size_t len;
    ds3_detokenizer_flush(k->detok, &s, &len);
    if (k->stopped_at < 0 && (k->text || k->json)) sink_text(k, s, len);
    if (k->stopped_at < 0) sink_emit(k, k->hold, k->hold_n);   /* the end: a partial stop string is text */
    k->hold_n = 0;
}

static double peak_rss_mb(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
#ifdef __APPLE__
    return (double)ru.ru_maxrss / 1048576.0;   /* bytes */
#else
    return (double)ru.ru_maxrss / 1024.0;      /* kilobytes */
#endif
}

static void json_ids(const char *key, const int32_t *ids, long n) {
    printf("\"%s\":[", key);
    for (long i = 0; i < n; i++) printf(i ? ",%d" : "%d", (int)ids[i]);
    printf("]");
}

/* The options of `ds3 run`, as the command line gives them. */
#define MAX_STOPS 16

typedef struct {
    const char *model, *tokstr, *prompt, *prompt_file, *system, *tokpath;
    char *prompt_buf;   /* -f FILE or -p - read whole */
    size_t prompt_len;
    bool mtp, chat, quiet, json, ignore_eos;
    long n_draft;   /* 0: not given (1 after run_parse_opts) */
    long n_gen;
    long ctx;       /* -c: positions of the KV cache, 0: prompt + n */
    bool ctx_cut;   /* -c made -n smaller */
    cli_sampling so;
    const char *stops[MAX_STOPS];
    int n_stops;
    ds3_attn_mode attn;
} run_opts;

/* What the steps of a run hand on to the next: the prompt, the objects made
 * for it, the sink, the logits and the timings. */
typedef struct {
    ds3_tokenizer *tok;    /* NULL: none loaded */
    int32_t *tokens;       /* [T] the prompt ids */
    int T;
    ds3_sampler *smp;
    ds3_model *m;
    int V;                 /* the model's vocabulary size */
    ds3_state *s;
    sink out;
    ds3_real *logits;      /* the prefill's rows, then one row per decode step */
    ds3_real *last;        /* the row the next token is sampled from */
    double t1, tp, td;     /* end of the prefill; prefill and decode seconds */
    long sampled;          /* tokens sampled, EOS included */
    long n_dec;            /* tokens decoded (the first came from the prefill's logits) */
    ds3_spec_stats sst;    /* --mtp */
    double mem;            /* peak RSS, MB */
} run_ctx;

/* Parse run's command line and check the options against each other (usage errors, exit 2). */
static void run_parse_opts(int argc, char **argv, run_opts *o) {
    const char *v;
    *o = (run_opts){.n_gen = 16, .attn = DS3_ATTN_ABSORB};
    cli_sampling_defaults(&o->so);
    for (int i = 0; i < argc; i++) {
        if (cli_is_help(argv[i])) help_exit(help_run);
        else if (cli_sampling_opt(argc, argv, &i, &o->so)) continue;
        else if ((v = cli_opt_value(argc, argv, &i, "-m", "--model"))) o->model = v;
        else if ((v = cli_opt_value(argc, argv, &i, NULL, "--tokens"))) o->tokstr = v;
        else if ((v = cli_opt_value(argc, argv, &i, "-p", "--prompt"))) o->prompt = v;
        else if ((v = cli_opt_value(argc, argv, &i, NULL, "--system"))) o->system = v;
        else if ((v = cli_opt_value(argc, argv, &i, NULL, "--tokenizer"))) o->tokpath = v;
        else if (strcmp(argv[i], "--chat") == 0) o->chat = true;
        else if (strcmp(argv[i], "--quiet") == 0) o->quiet = true;
        else if (strcmp(argv[i], "--json") == 0) o->json = true;
        else if (strcmp(argv[i], "--ignore-eos") == 0) o->ignore_eos = true;
        else if ((v = cli_opt_value(argc, argv, &i, "-n", "--n-predict")))
            o->n_gen = cli_parse_long("-n", v, 0, INT_MAX - MAX_TOKENS);
        else if ((v = cli_opt_value(argc, argv, &i, "-f", "--file"))) o->prompt_file = v;
        else if ((v = cli_opt_value(argc, argv, &i, "-c", "--ctx-size"))) o->ctx = cli_parse_long("--ctx-size", v, 1, INT_MAX);
        else if ((v = cli_opt_value(argc, argv, &i, NULL, "--stop"))) {
            if (!v[0]) cli_usage("--stop: empty string");
            if (o->n_stops == MAX_STOPS) cli_usage("--stop: at most %d strings", MAX_STOPS);
            o->stops[o->n_stops++] = v;
        } else if ((v = cli_opt_value(argc, argv, &i, NULL, "--attn"))) o->attn = parse_attn(v);
        else if ((v = cli_opt_value(argc, argv, &i, NULL, "--kernels"))) set_kernels(v);
        else if (strcmp(argv[i], "--mtp") == 0) o->mtp = true;
        else if ((v = cli_opt_value(argc, argv, &i, NULL, "--draft"))) o->n_draft = cli_parse_long("--draft", v, 1, 16);
        else unknown_arg(argv[i]);
    }
    if (!o->model) cli_usage("missing -m DIR");
    if (o->prompt && o->prompt_file) cli_usage("give -p TEXT or -f FILE, not both");
    if (o->tokstr && (o->prompt || o->prompt_file)) cli_usage("give --tokens IDS or -p TEXT / -f FILE, not both");
    if (!o->tokstr && !o->prompt && !o->prompt_file) cli_usage("missing --tokens IDS, -p TEXT or -f FILE");
    if (o->n_stops && o->tokstr) cli_usage("--stop needs text: -p TEXT or -f FILE");
    if (o->mtp && o->so.penalty != 1 && o->so.last_n != 0)
        cli_usage("--repeat-penalty is not supported with --mtp (speculative decoding verifies against one "
                  "distribution per position)");
    /* -f FILE, or -p - (stdin): the prompt is the file's bytes. */
    const char *from = o->prompt_file ? o->prompt_file : o->prompt && strcmp(o->prompt, "-") == 0 ? "-" : NULL;
    if (from) {
        /* Under mpirun only rank 0 has stdin: it reads, every rank gets its bytes. */
        if (ds3_dist_rank() == 0) {
            o->prompt_buf = cli_read_file(from, &o->prompt_len);
            if (!o->prompt_buf) cli_die("cannot read %s: %s", strcmp(from, "-") == 0 ? "stdin" : from, strerror(errno));
        }
        if (ds3_dist_size() > 1) {
            uint64_t n = o->prompt_len;
            if (ds3_dist_bcast(&n, sizeof n) != DS3_OK) cli_die("%s", ds3_last_error());
            if (ds3_dist_rank() != 0 && !(o->prompt_buf = malloc((size_t)n + 1))) cli_die("out of memory");
            o->prompt_len = (size_t)n;
            if (ds3_dist_bcast(o->prompt_buf, (size_t)n + 1) != DS3_OK) cli_die("%s", ds3_last_error());
        }
        o->prompt = o->prompt_buf;
    } else if (o->prompt) o->prompt_len = strlen(o->prompt);
    if (o->chat && !o->prompt) cli_usage("--chat needs -p TEXT");
    if (o->system && !o->chat) cli_usage("--system needs --chat");
    if (o->ignore_eos && !o->prompt) cli_usage("--ignore-eos needs -p TEXT (--tokens never stops at EOS)");
    if (o->n_draft && !o->mtp) cli_usage("--draft needs --mtp");
    if (!o->n_draft) o->n_draft = 1;
}

/* Load the tokenizer: needed for -p; for --tokens, used by --json's text when
 * there is one (--tokenizer, or the model's own). */
static void run_load_tokenizer(const run_opts *o, run_ctx *r) {
    if (o->n_stops && !o->prompt) cli_usage("--stop needs text: -p TEXT or -f FILE");
    char err[512];
    int rc = 0;
    if (o->prompt || o->tokpath || o->json)
        rc = cli_load_tokenizer(o->tokpath, o->model, o->prompt != NULL, &r->tok, err, sizeof err);
    if (rc == CLI_ARGS_USAGE) cli_usage("%s", err);
    if (rc != 0) cli_die("%s", err);
}

/* Build the prompt ids: -p TEXT encoded (after BOS, or in the chat format with
 * --chat), or the --tokens list. */
static void run_prompt_ids(const run_opts *o, run_ctx *r) {
    if (!o->prompt) {
        r->tokens = parse_tokens(o->tokstr, &r->T);
        return;
    }
    ds3_status st;
    char *text = NULL;
    size_t len = o->prompt_len;
    unsigned flags = 0;
    if (o->chat) {
        if ((st = ds3_tokenizer_chat_prompt(r->tok, o->system, o->prompt, &text, &len)) != DS3_OK) lib_die(st, "--chat");
    } else if (ds3_tokenizer_bos(r->tok) >= 0) flags = DS3_TOKENIZE_BOS;
    size_t n = 0;
    if ((st = ds3_tokenizer_encode(r->tok, text ? text : o->prompt, len, flags, &r->tokens, &n)) != DS3_OK)
        lib_die(st, "encoding the prompt");
    free(text);
    if (n == 0) cli_die("-p: the prompt has no tokens");
    if (n > MAX_TOKENS) cli_die("-p: the prompt has %zu tokens, more than %d", n, MAX_TOKENS);
    r->T = (int)n;
}

/* Make the sampler, load the model, check the prompt against it and make the
 * state (with the MTP layer's cache for --mtp). */
static void run_load_model(run_opts *o, run_ctx *r) {
    ds3_status st;
    r->smp = cli_sampler_new(&o->so);

    if ((st = ds3_model_load(o->model, &r->m)) != DS3_OK) lib_die(st, "loading model");
    if ((st = ds3_model_prepare_decode(r->m)) != DS3_OK) lib_die(st, "preparing the model for decode");
    const int V = r->V = ds3_model_vocab_size(r->m);
    for (int i = 0; i < r->T && o->prompt; i++)
        if (r->tokens[i] >= V)
            cli_die("token %d at index %d of the encoded prompt is out of range (vocab %d): is the tokenizer the model's?",
                (int)r->tokens[i], i, V);
    check_vocab(r->tokens, r->T, V);
    if (ds3_sampler_add_history(r->smp, r->tokens, r->T) != DS3_OK) lib_die(DS3_ERR_NOMEM, "sampler");
    /* -c: the prompt and the generated tokens share that many positions. */
    if (o->ctx && r->T > o->ctx) cli_die("the prompt has %d tokens, more than -c %ld", r->T, o->ctx);
    if (o->ctx && r->T + o->n_gen > o->ctx) {
        o->n_gen = o->ctx - r->T;
        o->ctx_cut = true;
    }
    long long max_seq = (long long)r->T + o->n_gen;
    check_positions(r->m, max_seq, o->ctx ? "-c" : "the prompt plus -n");

    if ((st = ds3_state_new(r->m, (int)max_seq, o->attn, &r->s)) != DS3_OK) lib_die(st, "creating state");
    if ((st = ds3_state_set_kernels(r->s, kernels)) != DS3_OK) lib_die(st, "--kernels");
    /* --mtp: the prefill also runs the MTP layer over the prompt, filling its cache. */
    if (o->mtp && ds3_model_num_mtp(r->m) == 0) cli_die("--mtp: the model in %s has no MTP layers", o->model);
    if (o->mtp && (st = ds3_state_set_mtp(r->s, 1)) != DS3_OK) lib_die(st, "--mtp");
}

/* Open the sink the generated tokens go to: ids, text (stopping at EOS for -p), or --json's collection. */
static void run_open_sink(const run_opts *o, run_ctx *r) {
    ds3_status st;
    r->out = (sink){r->tok, NULL, o->prompt != NULL, o->json, -1, NULL, 0, 0, NULL, 0, 0, 0, false, r->m,
                    o->stops, o->n_stops, NULL, 0, 0, -1};
    if (o->prompt && !o->ignore_eos) r->out.stop_id = ds3_tokenizer_eos(r->tok);
    if (r->tok && (st = ds3_detokenizer_new(r->tok, &r->out.detok)) != DS3_OK) lib_die(st, "decoding");
}

/* Prefill: the whole prompt in one call, with the logits of its last
 * position only (all generation needs). Prints the prefill line as soon as it
 * is done. */
static void run_prefill(const run_opts *o, run_ctx *r) {
    ds3_status st;
    const int T = r->T, V = r->V;
    r->logits = malloc((size_t)V * sizeof *r->logits);
    if (!r->logits) cli_die("out of memory for logits (%d)", V);
    double t0 = now_s();
    if ((st = ds3_forward_last(r->s, r->tokens, T, 0, r->logits)) != DS3_OK) lib_die(st, "prefill");
    r->last = r->logits;
    r->t1 = now_s();
    r->tp = r->t1 - t0;
    /* Progress: the prefill line as soon as the prefill is done. */
    if (!o->quiet) fprintf(stderr, "prefill: %d tokens in %.3f s (%.1f tok/s)\n", T, r->tp, r->tp > 0 ? T / r->tp : 0.0);
}

/* A decode step failed: end the ids or text line (none with --json), then the error. */
static void __attribute__((noreturn)) run_decode_die(const run_opts *o, ds3_status st, const char *what) {
    if (!o->json) printf("\n");
    lib_die(st, what);
}

/* Plain decode: each token goes to the sink as soon as it exists (which may
 * stop at EOS) and is fed back at the next position, except the last, which
 * nothing reads. */
static void run_decode_plain(const run_opts *o, run_ctx *r) {
    ds3_status st;
    for (long k = 0; k < o->n_gen; k++) {
        int tok_id = ds3_sample(r->smp, r->last, r->V);
        if (tok_id < 0) run_decode_die(o, DS3_ERR_ARG, "sampling");
        r->sampled++;
        if (sink_token(&r->out, tok_id)) break;
        if (k + 1 < o->n_gen) {
            int32_t t32 = tok_id;
            if ((st = ds3_forward(r->s, &t32, 1, r->T + (int)k, r->logits)) != DS3_OK) run_decode_die(o, st, "decode");
            r->last = r->logits;
        }
    }
}

/* --mtp decode: the same, in rounds of draft + verify by ds3_generate_spec,
 * which calls the sink for each token it makes final. */
static void run_decode_mtp(const run_opts *o, run_ctx *r) {
    ds3_status st = ds3_generate_spec(r->s, r->smp, r->T, r->last, (int)o->n_gen, (int)o->n_draft, NULL, sink_token,
                                      &r->out, &r->sst);
    if (st != DS3_OK) run_decode_die(o, st, "decode");
    r->sampled = r->out.n + r->out.stopped;
}

/* Decode (plain or --mtp), flush the sink's unfinished character, and time it. */
static void run_decode(const run_opts *o, run_ctx *r) {
    if (o->mtp) run_decode_mtp(o, r);
    else run_decode_plain(o, r);
    sink_flush(&r->out);
    r->td = now_s() - r->t1;
    r->n_dec = r->sampled > 1 ? r->sampled - 1 : 0;   /* the first token came from the prefill's logits */
    r->mem = peak_rss_mb();
}

/* --json: the one object on stdout (prompt and generated ids, text, stop reason, timings, memory). */
static void run_print_json(const run_opts *o, const run_ctx *r) {
    const sink *out = &r->out;
    double tp = r->tp, td = r->td;
    long n_dec = r->n_dec;
    printf("{\"model\":");
    cli_json_string(stdout, o->model, strlen(o->model));
    printf(",");
    json_ids("prompt_ids", r->tokens, r->T);
    printf(",");
    json_ids("ids", out->ids, out->n);
    printf(",\"text\":");
    if (r->tok) cli_json_string(stdout, out->out ? out->out : "", out->out_n);
    else printf("null");
    printf(",\"stop\":\"%s\",\"n_prompt\":%d,\"n_generated\":%ld,\"ids_without_token\":%ld",
           out->stopped ? "eos" : out->stopped_at >= 0 ? "stop_string" : o->ctx_cut ? "context" : "length", r->T, out->n,
           out->no_token);
    printf(",\"prefill_s\":%.6f,\"prefill_tok_s\":%.3f,\"decode_s\":%.6f,\"decode_tokens\":%ld,\"decode_tok_s\":%.3f",
           tp, tp > 0 ? r->T / tp : 0.0, td, n_dec, td > 0 && n_dec ? (double)n_dec / td : 0.0);
    printf(",\"peak_rss_mb\":%.1f", r->mem);
    if (o->mtp)
        printf(",\"mtp\":{\"draft\":%ld,\"drafted\":%ld,\"accepted\":%ld,\"rounds\":%ld}", o->n_draft, r->sst.drafted,
               r->sst.accepted, r->sst.rounds);
    printf("}\n");
}

/* The report on stderr: decode speed, MTP acceptance, memory, why it stopped. */
static void run_print_stats(const run_opts *o, const run_ctx *r) {
    const ds3_spec_stats *sst = &r->sst;
    double td = r->td;
    long n_dec = r->n_dec;
    if (n_dec > 0)
        fprintf(stderr, "decode: %ld tokens in %.3f s (%.1f tok/s)\n", n_dec, td, td > 0 ? (double)n_dec / td : 0.0);
    if (o->mtp)
        fprintf(stderr, "mtp: %ld drafts per step, %ld of %ld accepted (%.1f%%), %ld verification steps, "
                "%.2f tokens per step\n", o->n_draft, sst->accepted, sst->drafted,
                sst->drafted ? 100.0 * (double)sst->accepted / (double)sst->drafted : 0.0, sst->rounds,
                sst->rounds ? (double)(sst->generated - 1) / (double)sst->rounds : 0.0);
    fprintf(stderr, "memory: peak RSS %.1f MB\n", r->mem);
    if (r->out.stopped) fprintf(stderr, "stop: EOS after %ld tokens\n", r->out.n);
    else if (r->out.stopped_at >= 0)
        fprintf(stderr, "stop: --stop string %d after %ld tokens\n", r->out.stopped_at + 1, r->out.n);
    else if (o->ctx_cut) fprintf(stderr, "stop: the context is full (-c %ld) after %ld tokens\n", o->ctx, r->out.n);
    if (r->out.no_token)
        fprintf(stderr, "note: %ld generated ids have no token in the tokenizer (vocabulary padding)\n", r->out.no_token);
}

/* Report: end stdout (the ids or text line's newline, or the --json object), then stderr's (none with --quiet). */
static void run_report(const run_opts *o, const run_ctx *r) {
    if (o->json) run_print_json(o, r);
    else printf("\n");
    cli_flush_stdout();
    if (!o->quiet) run_print_stats(o, r);
}

/* Free everything the run made. */
static void run_free(run_ctx *r) {
    free(r->logits);
    free(r->out.ids);
    free(r->out.out);
    ds3_detokenizer_free(r->out.detok);
    ds3_tokenizer_free(r->tok);
    ds3_state_free(r->s);
    ds3_model_free(r->m);
    ds3_sampler_free(r->smp);
    free(r->tokens);
    free(r->out.hold);
}

/* ds3 run: every option is checked before the model is loaded; the prompt is
 * prefilled in one forward call, then the tokens are decoded one at a time
 * (or drafted and verified with --mtp). */
static int cmd_run(int argc, char **argv) {
    run_opts o;
    run_ctx r = {0};

    run_parse_opts(argc, argv, &o);      /* the command line (usage errors, exit 2) */
    cli_sampling_from_model(&o.so, o.model);   /* generation_config.json for what the options left */
    if (o.mtp && o.so.penalty != 1 && o.so.last_n != 0)
        cli_die("--mtp: the repetition penalty of generation_config.json is not supported with speculative decoding "
                "(give --repeat-penalty 1)");
    cli_threads(&o.so);                  /* -t */
    run_load_tokenizer(&o, &r);          /* for -p, or --json's text */
    run_prompt_ids(&o, &r);              /* --tokens, -p TEXT or --chat */
    run_load_model(&o, &r);              /* sampler, model, state; the prompt checked against it */
    cli_banner(&o.so, o.quiet);          /* the "system:" line on stderr */
    run_open_sink(&o, &r);               /* where the generated tokens go */

    run_prefill(&o, &r);                 /* the whole prompt; "prefill:" on stderr */
    run_decode(&o, &r);                  /* -n tokens (plain or --mtp), streamed to the sink */
    run_report(&o, &r);                  /* stdout's end or --json; timings on stderr */

    run_free(&r);
    free(o.prompt_buf);
    return 0;
}

/* ========================================================================== */
/* dump                                                                        */
/* ========================================================================== */


/* The token ids as a canonical "1,2,3" (no blanks), for the metadata. */
static char *join_tokens(const int32_t *t, int n) {
    char *s = malloc((size_t)n * 11 + 1);
    if (!s) cli_die("out of memory");
    size_t len = 0;
    for (int i = 0; i < n; i++) len += (size_t)sprintf(s + len, i ? ",%d" : "%d", (int)t[i]);
    s[len] = '\0';
    return s;
}

static int cmd_dump(int argc, char **argv, int full_argc, char **full_argv) {
    const char *model = NULL, *tokstr = NULL, *out = NULL, *v;
    ds3_attn_mode attn = DS3_ATTN_ABSORB;
    long decode_from = 0;   /* 0: one call for all positions */
    const char *emulate = NULL;
    ds3_emulation emu = {DS3_EMULATE_NONE, 0, 0};
    for (int i = 0; i < argc; i++) {
        if (cli_is_help(argv[i])) help_exit(help_dump);
        else if ((v = cli_opt_value(argc, argv, &i, NULL, "--emulate"))) {
            if (ds3_emulation_parse(v, &emu) != DS3_OK) cli_usage("--emulate: %s", ds3_last_error());
            emulate = v;
        }
        else if ((v = cli_opt_value(argc, argv, &i, "-m", "--model"))) model = v;
        else if ((v = cli_opt_value(argc, argv, &i, NULL, "--tokens"))) tokstr = v;
        else if ((v = cli_opt_value(argc, argv, &i, "-o", "--output"))) out = v;
        else if ((v = cli_opt_value(argc, argv, &i, NULL, "--attn"))) attn = parse_attn(v);
        else if ((v = cli_opt_value(argc, argv, &i, NULL, "--kernels"))) set_kernels(v);
        else if ((v = cli_opt_value(argc, argv, &i, NULL, "--decode-from")))
            decode_from = cli_parse_long("--decode-from", v, 1, MAX_TOKENS);
        else unknown_arg(argv[i]);
    }
    if (!model) cli_usage("missing -m DIR");
    if (!tokstr) cli_usage("missing --tokens IDS");
    if (!out) cli_usage("missing -o OUT.safetensors");
    cli_signals_start();   /* SIGINT/TERM/HUP: a message, no temporary left */
    int T;
    int32_t *tokens = parse_tokens(tokstr, &T);
    if (decode_from > T) cli_usage("--decode-from: %ld is more than the %d tokens", decode_from, T);
    /* -o -: the dump is made in memory, then written to stdout (no temporary
     * file, which a signal could leave behind). */
    const bool to_stdout = strcmp(out, "-") == 0;
    /* Under mpirun, rank 0 alone writes (the others compute their experts). */
    const bool writer = ds3_dist_rank() == 0;
    if (writer && !to_stdout) check_output_path(out);

    ds3_model *m = NULL;
    ds3_status st = ds3_model_load(model, &m);
    if (st != DS3_OK) lib_die(st, "loading model");
    check_vocab(tokens, T, ds3_model_vocab_size(m));
    check_positions(m, T, "the token list");

    ds3_state *s = NULL;
    if ((st = ds3_state_new(m, T, attn, &s)) != DS3_OK) lib_die(st, "creating state");
    if ((st = ds3_state_set_kernels(s, kernels)) != DS3_OK) lib_die(st, "--kernels");
    if ((st = ds3_set_emulation(s, &emu)) != DS3_OK) lib_die(st, "--emulate");
    if ((st = ds3_dump_begin(s, T)) != DS3_OK) lib_die(st, "dump");

    /* Logits are captured by the forward pass itself while dumping; row i of
     * every tensor is position i however the calls split the positions. */
    if (decode_from == 0) {
        if ((st = ds3_forward(s, tokens, T, 0, NULL)) != DS3_OK) lib_die(st, "forward");
    } else {
        int K = (int)decode_from;
        if ((st = ds3_forward(s, tokens, K, 0, NULL)) != DS3_OK) lib_die(st, "forward");
        for (int p = K; p < T; p++) {
            if ((st = ds3_forward(s, tokens + p, 1, p, NULL)) != DS3_OK) lib_die(st, "forward");
            cli_progress_report("dump: decoding token by token", p + 1 - K, T - K);
        }
    }

    /* The weights must still be the files loaded (ds3_dump_write checks too). */
    if ((st = ds3_model_check(m)) != DS3_OK) cli_die("%s", ds3_last_error());
    char *cmdline = cli_join_args(full_argc, full_argv);
    char *canon = join_tokens(tokens, T);
    char dfrom[32];
    snprintf(dfrom, sizeof dfrom, "%ld", decode_from);
    const char *meta[] = {
        "command", cmdline,
        "model_dir", model,
        "tokens", canon,
        "attn", attn == DS3_ATTN_NAIVE ? "naive" : "absorb",
        "decode_from", dfrom,
        "emulate", emulate ? emulate : "none",
        "kernels", (const char *[]){"fast", "deterministic", "ref"}[ds3_state_kernels(s)],
        NULL,
    };
    if (!writer) {
    } else if (to_stdout) {
        void *bytes = NULL;
        size_t n = 0;
        if ((st = ds3_dump_write_mem(s, meta, &bytes, &n)) != DS3_OK) lib_die(st, "dump");
        fwrite(bytes, 1, n, stdout);
        ds3_free(bytes);
        cli_flush_stdout();
        fprintf(stderr, "dump: wrote %zu bytes to stdout (%d positions)\n", n, T);
    } else {
        if ((st = ds3_dump_write(s, out, meta)) != DS3_OK) lib_die(st, "dump");
        fprintf(stderr, "dump: wrote %s (%d positions)\n", out, T);
    }

    free(cmdline);
    free(canon);
    ds3_state_free(s);
    ds3_model_free(m);
    free(tokens);
    return 0;
}

/* ========================================================================== */
/* main                                                                        */
/* ========================================================================== */

static const char *help_for(const char *cmd) {
    if (strcmp(cmd, "mkmodel") == 0) return help_mkmodel;
    if (strcmp(cmd, "info") == 0) return help_info;
    if (strcmp(cmd, "run") == 0) return help_run;
    if (strcmp(cmd, "dump") == 0) return help_dump;
    if (strcmp(cmd, "tokenize") == 0) return cli_help_tokenize;
    if (strcmp(cmd, "detokenize") == 0) return cli_help_detokenize;
    if (strcmp(cmd, "chat") == 0) return cli_help_chat;
    return NULL;
}

int main(int argc, char **argv) {
    cli_check_stdout_at_exit();   /* a failed write to stdout is exit 1, for every command */
    cli_dist_start();             /* under mpirun: join the job; ranks > 0 silent */
    cli_progress_start();         /* long work's progress when stderr is a terminal */
    if (argc < 2) {
        fputs(help_main, stderr);
        cli_usage("missing command");
    }
    const char *cmd = argv[1];
    if (cli_is_help(cmd)) help_exit(help_main);
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        ds3_build_info b;
        ds3_get_build_info(&b);
        printf("ds3 %s (commit %s, %s build)\n", DS3_VERSION, DS3_COMMIT, b.precision);
        printf("precision: %s (ds3_real is %s)\n", b.precision, sizeof(ds3_real) == 8 ? "double" : "float");
        printf("BLAS: %s\n", b.blas);
        printf("OpenMP: %s, %d threads by default\n", b.openmp ? "yes" : "no (one thread)", ds3_threads());
        printf("SIMD: lane kernel %s on this CPU (AVX2+F16C copy %s)\n", b.simd,
               b.simd_built ? "built in" : "not built: not x86-64, or the f64 build");
        printf("AMX: %s\n",
               b.amx ? "BF16 and FP8 weights, fast mode, calls of 2 tokens or more (DS3_NO_AMX=1 turns it off)"
                     : "not used (not on this CPU, not granted by the kernel, not in this build, or DS3_NO_AMX)");
        printf("AVX-512: %s\n",
               b.avx512 ? "a fast decode step's attention and FP8 products (DS3_NO_AVX512=1 turns it off)"
                        : "not used by fast mode's decode steps (not on this CPU, not in this build, or "
                          "DS3_NO_AVX512)");
        printf("compiler: %s\n", __VERSION__);
        return 0;
    }
    /* The OpenMP threads first: a limit that stops them is ds3's error, not
     * libgomp's "Thread creation failed" and exit half-way. */
    if (ds3_threads_start() != DS3_OK) cli_die("%s", ds3_last_error());
    /* ds3 compare lives in cli/compare.c, with its own help. */
    int ds3_cli_compare(int argc, char **argv);
    if (strcmp(cmd, "compare") == 0) {
        cli_command = cmd;
        return ds3_cli_compare(argc - 2, argv + 2);
    }
    if (strcmp(cmd, "help") == 0 && argc == 3 && strcmp(argv[2], "compare") == 0)
        return ds3_cli_compare(1, (char *[]){"--help", NULL});
    /* ds3 replay: cli/replay.c. */
    int ds3_cli_replay(int argc, char **argv, int full_argc, char **full_argv);
    if (strcmp(cmd, "replay") == 0) {
        cli_command = cmd;
        return ds3_cli_replay(argc - 2, argv + 2, argc, argv);
    }
    if (strcmp(cmd, "help") == 0 && argc == 3 && strcmp(argv[2], "replay") == 0)
        return ds3_cli_replay(1, (char *[]){"--help", NULL}, 0, NULL);
    if (strcmp(cmd, "help") == 0) {
        if (argc == 2) help_exit(help_main);
        const char *h = help_for(argv[2]);
        if (!h || argc > 3) cli_usage("help: unknown command '%s'", argv[2]);
        help_exit(h);
    }
    if (!help_for(cmd)) cli_usage("unknown command '%s'", cmd);
    cli_command = cmd;
    /* Under mpirun: chat reads its turns from a terminal rank 0 alone has, and
     * N copies of mkmodel would write one directory: both are one-process work. */
    if (ds3_dist_size() > 1 && (strcmp(cmd, "chat") == 0 || strcmp(cmd, "mkmodel") == 0))
        cli_usage("%s runs in one process, not under mpirun (%d processes): run it without mpirun", cmd,
                  ds3_dist_size());
    if (strcmp(cmd, "mkmodel") == 0) return cmd_mkmodel(argc - 2, argv + 2);
    if (strcmp(cmd, "info") == 0) return cmd_info(argc - 2, argv + 2);
    if (strcmp(cmd, "run") == 0) return cmd_run(argc - 2, argv + 2);
    if (strcmp(cmd, "chat") == 0) return cli_chat(argc - 2, argv + 2);
    if (strcmp(cmd, "tokenize") == 0) return cli_tokenize(argc - 2, argv + 2);
    if (strcmp(cmd, "detokenize") == 0) return cli_detokenize(argc - 2, argv + 2);
    return cmd_dump(argc - 2, argv + 2, argc, argv);
}

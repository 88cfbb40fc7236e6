/*
 * chat.c — `ds3 chat -m DIR`: an interactive conversation in DeepSeek-V3's
 * chat format (tokenizer_config.json's chat_template, rendered by hand):
 *
 *   BOS [system] <｜User｜>u1<｜Assistant｜>a1<｜end▁of▁sentence｜><｜User｜>u2<｜Assistant｜>…
 *
 * The KV cache is kept between turns: a turn prefills only what is new since
 * the last token in the cache (the end of the previous answer: its last
 * token if it was not fed yet, and <｜end▁of▁sentence｜> closing it, then
 * <｜User｜>, the line, <｜Assistant｜>), never the history again. The
 * answer's own ids stay as generated (not re-encoded from its text), as
 * llama.cpp and serving engines keep them.
 *
 * Lines come from stdin (a prompt "> " is shown when it is a terminal);
 * "/exit" or end of input ends the chat. Ctrl-C (SIGINT) ends the answer
 * being generated and returns to the prompt; at the prompt it clears the
 * line. --verbose prints each turn's prefill on stderr:
 *
 *   turn 2: prefill 12 new tokens at positions 40..51 (2 closing the last answer, 10 of this turn); 40 reused
 */
#include "chat.h"
#include "common.h"
#include "sampling.h"
#include "text.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

const char *const cli_help_chat =
    "usage: ds3 chat -m DIR [--system TEXT] [-n N] [-c N] [sampling options] [-t N]\n"
    "                [--tokenizer PATH] [--verbose] [--quiet]\n"
    "\n"
    "A conversation in DeepSeek-V3's chat format: each line read from stdin is a\n"
    "user turn, the answer is streamed to stdout. The KV cache is kept between\n"
    "turns, so a turn prefills only its own new tokens, never the history.\n"
    "'/exit' or end of input (Ctrl-D) ends the chat; Ctrl-C ends the answer\n"
    "being written and returns to the prompt.\n"
    "\n"
    "  -m, --model DIR     model directory with tokenizer.json (DeepSeek-V3's format)\n"
    "  --system TEXT       a system prompt, after BOS\n"
    "  -n, --n-predict N   the longest answer in tokens (default 256); an answer also\n"
    "                      ends at <｜end▁of▁sentence｜>\n"
    "  -c, --ctx-size N    positions of the KV cache for the whole conversation\n"
    "                      (default 4096, at most the model's max_position_embeddings);\n"
    "                      when it is full the chat ends\n"
    CLI_SAMPLING_HELP
    "                      generation_config.json sets the defaults, as for ds3 run\n"
    "  --tokenizer PATH    tokenizer.json (or its directory) for a model without one\n"
    "  --verbose           each turn's prefill (new tokens, positions, reused) and\n"
    "                      decode speed on stderr\n"
    "  --quiet             nothing on stderr but errors\n";

/* Ctrl-C: set by the handler, read between tokens. */
static volatile sig_atomic_t interrupted;

static void on_sigint(int sig) {
    (void)sig;
    interrupted = 1;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void __attribute__((noreturn)) lib_die(const char *what) {
    const char *msg = ds3_last_error();
    cli_die("%s: %s", what, msg && msg[0] ? msg : "failed");
}

typedef struct {
    const char *model, *system, *tokpath;
    long n_gen, ctx;
    bool verbose, quiet;
    cli_sampling so;
} chat_opts;

static void parse_opts(int argc, char **argv, chat_opts *o) {
    const char *v;
    *o = (chat_opts){.n_gen = 256};
    cli_sampling_defaults(&o->so);
    for (int i = 0; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            fputs(cli_help_chat, stdout);
            exit(0);
        } else if (cli_sampling_opt(argc, argv, &i, &o->so)) continue;
        else if ((v = cli_opt_value(argc, argv, &i, "-m", "--model"))) o->model = v;
        else if ((v = cli_opt_value(argc, argv, &i, NULL, "--system"))) o->system = v;
        else if ((v = cli_opt_value(argc, argv, &i, NULL, "--tokenizer"))) o->tokpath = v;
        else if ((v = cli_opt_value(argc, argv, &i, "-n", "--n-predict"))) o->n_gen = cli_parse_long("-n", v, 1, 1L << 30);
        else if ((v = cli_opt_value(argc, argv, &i, "-c", "--ctx-size"))) o->ctx = cli_parse_long("--ctx-size", v, 2, 1L << 30);
        else if (strcmp(argv[i], "--verbose") == 0) o->verbose = true;
        else if (strcmp(argv[i], "--quiet") == 0) o->quiet = true;
        else if (argv[i][0] == '-') cli_usage("unknown option '%s'", argv[i]);
        else cli_usage("unexpected argument '%s' (the chat reads its lines from stdin)", argv[i]);
    }
    if (!o->model) cli_usage("missing -m DIR");
    if (o->verbose && o->quiet) cli_usage("give --verbose or --quiet, not both");
}

/* The conversation: the model, its cache and what is in it. */
typedef struct {
    ds3_model *m;
    ds3_state *s;
    ds3_tokenizer *tok;
    ds3_sampler *smp;
    int V, ctx;
    int pos;                 /* positions in the cache */
    int32_t pending[2];      /* not yet in the cache: the last answer's last token, its closing EOS */
    int n_pending;
    int32_t eos, user_id, assistant_id;
    ds3_real *logits;        /* [V] */
} chat;

/* Encode text into *ids (malloc'd); exit 1 on failure. */
static size_t encode(const chat *c, const char *text, size_t len, unsigned flags, int32_t **ids) {
    size_t n = 0;
    if (ds3_tokenizer_encode(c->tok, text, len, flags, ids, &n) != DS3_OK) lib_die("encoding the turn");
    return n;
}

/* This turn's ids: the whole first prompt, or what follows the cache. */
static size_t turn_ids(const chat *c, const chat_opts *o, const char *line, bool first, int32_t **ids) {
    if (first) {
        char *text = NULL;
        size_t len = 0;
        if (ds3_tokenizer_chat_prompt(c->tok, o->system, line, &text, &len) != DS3_OK) lib_die("chat format");
        size_t n = encode(c, text, len, 0, ids);
        free(text);
        return n;
    }
    size_t ll = strlen(line), n = 0;
    char *text = malloc(ll + 64);
    if (!text) cli_die("out of memory");
    int k = snprintf(text, ll + 64, "<｜User｜>%s<｜Assistant｜>", line);
    n = encode(c, text, (size_t)k, 0, ids);
    free(text);
    return n;
}

/* Prefill ids at c->pos; the last row's logits in c->logits. */
static void prefill(chat *c, const int32_t *ids, int n) {
    if (n > 1 && ds3_forward(c->s, ids, n - 1, c->pos, NULL) != DS3_OK) lib_die("prefill");
    if (ds3_forward(c->s, ids + n - 1, 1, c->pos + n - 1, c->logits) != DS3_OK) lib_die("prefill");
    c->pos += n;
}

/* One answer, streamed; returns the tokens generated. */
static long answer(chat *c, const chat_opts *o) {
    ds3_detokenizer *d = NULL;
    if (ds3_detokenizer_new(c->tok, &d) != DS3_OK) lib_die("decoding");
    long n = 0;
    int32_t last = -1;
    const char *why = "length";
    for (;;) {
        if (interrupted) {
            why = "interrupted";
            break;
        }
        int t = ds3_sample(c->smp, c->logits, c->V);
        if (t < 0) lib_die("sampling");
        if (t == c->eos) {
            why = "eos";
            break;
        }
        n++;
        last = t;
        if (ds3_tokenizer_token(c->tok, t, NULL)) {
            const char *s;
            size_t len;
            if (ds3_detokenizer_push(d, t, &s, &len) != DS3_OK) lib_die("decoding");
            fwrite(s, 1, len, stdout);
            cli_flush_stdout();
        }
        /* room for this token and the EOS that closes the answer */
        if (n >= o->n_gen || c->pos + 2 > c->ctx) {
            why = n >= o->n_gen ? "length" : "context";
            break;
        }
        int32_t t32 = t;
        if (ds3_forward(c->s, &t32, 1, c->pos, c->logits) != DS3_OK) lib_die("decode");
        c->pos++;
        last = -1;   /* in the cache now */
    }
    const char *s;
    size_t len;
    ds3_detokenizer_flush(d, &s, &len);
    fwrite(s, 1, len, stdout);
    ds3_detokenizer_free(d);
    fputs("\n", stdout);
    cli_flush_stdout();
    /* Close the answer as the template does: its last token (if sampled but
     * not fed) and <｜end▁of▁sentence｜>, prefilled with the next turn. */
    c->n_pending = 0;
    if (last >= 0) c->pending[c->n_pending++] = last;
    c->pending[c->n_pending++] = c->eos;
    if (o->verbose || strcmp(why, "interrupted") == 0)
        if (!o->quiet) fprintf(stderr, "[answer: %ld tokens, stop: %s]\n", n, why);
    return n;
}

int cli_chat(int argc, char **argv) {
    chat_opts o;
    parse_opts(argc, argv, &o);
    cli_sampling_from_model(&o.so, o.model);
    cli_threads(&o.so);

    chat c = {0};
    char err[512];
    int rc = cli_load_tokenizer(o.tokpath, o.model, true, &c.tok, err, sizeof err);
    if (rc == 2) cli_usage("%s", err);
    if (rc != 0) cli_die("%s", err);
    c.eos = ds3_tokenizer_eos(c.tok);
    if (c.eos < 0) cli_die("the tokenizer has no EOS token: ds3 chat needs DeepSeek-V3's chat format");
    /* the format check: the first turn's prompt renders or says why not */
    char *probe = NULL;
    size_t probe_n = 0;
    if (ds3_tokenizer_chat_prompt(c.tok, NULL, "", &probe, &probe_n) != DS3_OK) lib_die("chat format");
    free(probe);

    if (ds3_model_load(o.model, &c.m) != DS3_OK) lib_die("loading model");
    if (ds3_model_prepare_decode(c.m) != DS3_OK) lib_die("preparing the model for decode");
    c.V = ds3_model_vocab_size(c.m);
    if (ds3_tokenizer_n_ids(c.tok) > c.V)
        cli_die("the tokenizer has %d ids, more than the model's vocabulary %d: is it the model's?",
                ds3_tokenizer_n_ids(c.tok), c.V);
    int maxpos = ds3_model_max_positions(c.m);
    long ctx = o.ctx ? o.ctx : 4096;
    if (maxpos > 0 && ctx > maxpos) {
        if (o.ctx) cli_die("-c %ld is more than the model's max_position_embeddings %d", o.ctx, maxpos);
        ctx = maxpos;
    }
    c.ctx = (int)ctx;
    if (ds3_state_new(c.m, c.ctx, DS3_ATTN_ABSORB, &c.s) != DS3_OK) lib_die("creating state");
    c.smp = cli_sampler_new(&o.so);
    cli_banner(&o.so, o.quiet);
    c.logits = malloc((size_t)c.V * sizeof *c.logits);
    if (!c.logits) cli_die("out of memory");

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;   /* no SA_RESTART: Ctrl-C at the prompt interrupts the read */
    sigaction(SIGINT, &sa, NULL);

    bool tty = isatty(0);
    if (!o.quiet)
        fprintf(stderr, "chat: %d positions; /exit or Ctrl-D ends, Ctrl-C stops an answer\n", c.ctx);
    char *line = NULL;
    size_t cap = 0;
    int turn = 0;
    for (;;) {
        if (tty) {
            fputs("> ", stdout);
            cli_flush_stdout();
        }
        interrupted = 0;
        errno = 0;
        ssize_t got = getline(&line, &cap, stdin);
        if (got < 0) {
            if (errno == EINTR && interrupted) {   /* Ctrl-C at the prompt: a fresh line */
                clearerr(stdin);
                fputs("\n", stdout);
                continue;
            }
            if (tty) fputs("\n", stdout);
            break;
        }
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r')) line[--got] = '\0';
        if (strcmp(line, "/exit") == 0 || strcmp(line, "/quit") == 0) break;
        if (got == 0) continue;

        int32_t *ids = NULL;
        size_t n = turn_ids(&c, &o, line, turn == 0, &ids);
        size_t total = n + (size_t)c.n_pending;
        if ((long)c.pos + (long)total + 1 > c.ctx) {
            free(ids);
            fprintf(stderr, "ds3: the conversation fills the context (%d of -c %d positions): start a new chat\n",
                    c.pos, c.ctx);
            break;
        }
        int32_t *all = malloc(total * sizeof *all);
        if (!all) cli_die("out of memory");
        memcpy(all, c.pending, (size_t)c.n_pending * sizeof *all);
        memcpy(all + c.n_pending, ids, n * sizeof *all);
        free(ids);
        turn++;
        int reused = c.pos;
        double t0 = now_s();
        /* the history of --repeat-penalty: ds3_sample added the answer's tokens already */
        int skip = c.n_pending == 2 ? 1 : 0;
        if (ds3_sampler_add_history(c.smp, all + skip, (int)total - skip) != DS3_OK) lib_die("sampler");
        prefill(&c, all, (int)total);
        double t1 = now_s();
        if (o.verbose)
            fprintf(stderr, "turn %d: prefill %zu new tokens at positions %d..%d (%d closing the last answer, %zu of "
                    "this turn); %d reused (%.1f tok/s)\n", turn, total, reused, c.pos - 1, c.n_pending, n, reused,
                    t1 > t0 ? (double)total / (t1 - t0) : 0.0);
        free(all);
        c.n_pending = 0;
        long made = answer(&c, &o);
        double t2 = now_s();
        if (o.verbose && made > 0)
            fprintf(stderr, "turn %d: %ld tokens in %.3f s\n", turn, made, t2 - t1);
    }
    free(line);
    free(c.logits);
    ds3_sampler_free(c.smp);
    ds3_state_free(c.s);
    ds3_model_free(c.m);
    ds3_tokenizer_free(c.tok);
    return 0;
}

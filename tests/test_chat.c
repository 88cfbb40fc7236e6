/*
 * test_chat.c — `ds3 chat` (cli/chat.c) through a pseudo-terminal, as a user
 * at a terminal meets it:
 *
 *   - a five-turn conversation in which every turn after the first prefills
 *     only its new tokens: what closes the previous answer (its last token if
 *     it was not fed, and <｜end▁of▁sentence｜>) and "<｜User｜>LINE<｜Assistant｜>",
 *     counted here with the library's tokenizer; the positions before them
 *     are reused (--verbose's "turn K: prefill …" lines on stderr);
 *   - Ctrl-C written to the terminal ends the answer being generated and
 *     the chat goes on with the next line; /exit ends it with status 0;
 *   - usage errors and a model without the chat format.
 *
 * The model: the built-in tiny-text config (narrow layers with DeepSeek-V3's
 * vocabulary, 129,280 ids, and its tokenizer), made here by `ds3 mkmodel`
 * (random weights: the answers are gibberish, only their mechanics are
 * tested). Every wait is bounded (poll
 * with a deadline; the child is killed past it), so a hang fails, it does
 * not stall the suite.
 */
#ifndef _XOPEN_SOURCE
#define _XOPEN_SOURCE 700   /* posix_openpt, grantpt, unlockpt, ptsname */
#endif
#include "ds3.h"
#include "harness.h"
#include "cli_run.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DEADLINE_S 120.0

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A chat running on a pseudo-terminal: its output (the terminal's, echo
 * included) read from the master, its stderr in a file. */
typedef struct {
    pid_t pid;
    int master;
    char errpath[128];
    char *out;
    size_t out_n, out_cap;
    bool timed_out;
    double deadline;
} session;

static bool start(session *ss, const char *const *args) {
    memset(ss, 0, sizeof *ss);
    ss->deadline = now_s() + DEADLINE_S;
    ss->master = posix_openpt(O_RDWR | O_NOCTTY);
    if (ss->master < 0 || grantpt(ss->master) != 0 || unlockpt(ss->master) != 0) return false;
    const char *slave = ptsname(ss->master);
    if (!slave) return false;
    char sl[128];
    snprintf(sl, sizeof sl, "%s", slave);
    snprintf(ss->errpath, sizeof ss->errpath, "%s/chat-stderr.XXXXXX", tmpdir);
    int fe = mkstemp(ss->errpath);
    if (fe < 0) return false;
    char *argv[64];
    cli_argv(argv, args);
    fflush(NULL);
    ss->pid = fork();
    if (ss->pid == 0) {
        setsid();   /* a new session: the terminal opened next becomes its controlling one */
        int fd = open(sl, O_RDWR);
        if (fd < 0) _exit(126);
        dup2(fd, 0);
        dup2(fd, 1);
        dup2(fe, 2);
        close(ss->master);
        execv(cli, argv);
        _exit(127);
    }
    close(fe);
    return ss->pid > 0;
}

/* Read what the terminal has for up to ms milliseconds. */
static void pump(session *ss, int ms) {
    struct pollfd p = {ss->master, POLLIN, 0};
    if (poll(&p, 1, ms) <= 0) return;
    char buf[4096];
    ssize_t r = read(ss->master, buf, sizeof buf);
    if (r <= 0) return;
    if (ss->out_n + (size_t)r + 1 > ss->out_cap) {
        ss->out_cap = 2 * (ss->out_n + (size_t)r + 1);
        ss->out = realloc(ss->out, ss->out_cap);
        if (!ss->out) abort();
    }
    memcpy(ss->out + ss->out_n, buf, (size_t)r);
    ss->out_n += (size_t)r;
    ss->out[ss->out_n] = '\0';
}

static char *read_err(const session *ss) {
    FILE *f = fopen(ss->errpath, "rb");
    if (!f) return strdup("");
    size_t cap = 1 << 16, n = 0;
    char *s = malloc(cap);
    for (;;) {
        n += fread(s + n, 1, cap - n - 1, f);
        if (n < cap - 1) break;
        cap *= 2;
        s = realloc(s, cap);
    }
    fclose(f);
    s[n] = '\0';
    return s;
}

static int count(const char *s, const char *sub) {
    int n = 0;
    for (const char *p = s; (p = strstr(p, sub)); p += strlen(sub)) n++;
    return n;
}

/* Wait until stderr holds `n` copies of `sub` (reading the terminal meanwhile). */
static bool wait_err(session *ss, const char *sub, int n) {
    while (now_s() < ss->deadline) {
        pump(ss, 20);
        char *e = read_err(ss);
        int k = count(e, sub);
        free(e);
        if (k >= n) return true;
    }
    ss->timed_out = true;
    return false;
}

/* Wait until the terminal output grows past `n` bytes. */
static bool wait_out(session *ss, size_t n) {
    while (now_s() < ss->deadline) {
        pump(ss, 20);
        if (ss->out_n > n) return true;
    }
    ss->timed_out = true;
    return false;
}

static void type(session *ss, const char *s) {
    size_t n = strlen(s);
    if (write(ss->master, s, n) != (ssize_t)n) abort();
}

/* Wait for the child (killed past the deadline); its exit status, or 128+signal. */
static int finish(session *ss) {
    int status = 0;
    for (;;) {
        pid_t w = waitpid(ss->pid, &status, WNOHANG);
        if (w == ss->pid) break;
        if (now_s() > ss->deadline) {
            ss->timed_out = true;
            kill(ss->pid, SIGKILL);
            waitpid(ss->pid, &status, 0);
            break;
        }
        pump(ss, 20);
    }
    close(ss->master);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void cleanup(session *ss) {
    unlink(ss->errpath);
    free(ss->out);
}

/* Tokens of text with the model's tokenizer. */
static int n_tokens(const ds3_tokenizer *t, const char *text) {
    int32_t *ids = NULL;
    size_t n = 0;
    if (ds3_tokenizer_encode(t, text, strlen(text), 0, &ids, &n) != DS3_OK) return -1;
    free(ids);
    return (int)n;
}

/* ---- five turns ---------------------------------------------------------------- */

static void test_five_turns(const char *model, const ds3_tokenizer *tok) {
    th_section("five turns through a pseudo-terminal: each prefill only the new tokens");
    const char *lines[5] = {"Hello there!", "What is 2 + 2?", "Tell me about the sea, in one line.",
                            "Merci beaucoup, au revoir.", "你好，世界"};
    session ss;
    CHECK(start(&ss, (const char *const[]){"chat", "-m", model, "--verbose", "-n", "12", "-c", "1024", NULL}),
          "start the chat on a pseudo-terminal");
    for (int k = 0; k < 5 && !ss.timed_out; k++) {
        char line[256];
        snprintf(line, sizeof line, "%s\n", lines[k]);
        type(&ss, line);
        CHECK(wait_err(&ss, "[answer:", k + 1), "turn %d: no answer within %.0f s", k + 1, DEADLINE_S);
    }
    type(&ss, "/exit\n");
    int rc = finish(&ss);
    CHECK(!ss.timed_out && rc == 0, "/exit: exit %d%s", rc, ss.timed_out ? " (timed out)" : "");
    char *err = read_err(&ss);
    CHECK(count(ss.out, "> ") >= 5, "the prompt '> ' was not shown on the terminal: %.300s", ss.out);

    /* Parse the turn lines and check each against the tokenizer. */
    const char *p = err;
    int prev_end = -1, prev_answer = 0;
    for (int k = 1; k <= 5; k++) {
        char key[32];
        snprintf(key, sizeof key, "turn %d: prefill ", k);
        const char *q = strstr(p, key);
        CHECK(q != NULL, "no '%s' line in stderr: %s", key, err);
        if (!q) break;
        int total = -1, a = -1, b = -1, closing = -1, mine = -1, reused = -1;
        int got = sscanf(q + strlen(key), "%d new tokens at positions %d..%d (%d closing the last answer, %d of this turn); %d reused",
                         &total, &a, &b, &closing, &mine, &reused);
        CHECK(got == 6, "turn %d: line not parsed (%d fields): %.200s", k, got, q);
        if (got != 6) break;
        char text[512];
        if (k == 1) snprintf(text, sizeof text, "<｜begin▁of▁sentence｜><｜User｜>%s<｜Assistant｜>", lines[0]);
        else snprintf(text, sizeof text, "<｜User｜>%s<｜Assistant｜>", lines[k - 1]);
        int want = n_tokens(tok, text);
        CHECK(mine == want, "turn %d: %d tokens of this turn prefilled, the tokenizer gives %d for %s", k, mine, want,
              text);
        CHECK(total == closing + mine && b - a + 1 == total && a == reused, "turn %d: counts disagree: %.200s", k, q);
        if (k == 1) CHECK(reused == 0 && closing == 0, "turn 1: reused %d, closing %d", reused, closing);
        else {
            /* the answer's tokens were fed while decoding, except the last when
             * it ended by length (then it closes the answer with the EOS) */
            CHECK(closing == 1 || closing == 2, "turn %d: %d tokens close the last answer", k, closing);
            int fed = prev_answer - (closing - 1);
            CHECK(reused == prev_end + 1 + fed, "turn %d: %d positions reused, want %d (the cache up to the last answer)",
                  k, reused, prev_end + 1 + fed);
            CHECK(total < reused, "turn %d: prefilled %d, not fewer than the %d reused", k, total, reused);
        }
        prev_end = b;
        const char *ans = strstr(q, "[answer: ");
        CHECK(ans && sscanf(ans, "[answer: %d tokens", &prev_answer) == 1, "turn %d: no answer line", k);
        p = q + 1;
    }
    free(err);
    cleanup(&ss);
}

/* ---- Ctrl-C ---------------------------------------------------------------------- */

static void test_ctrl_c(const char *model) {
    th_section("Ctrl-C ends the answer, not the chat");
    session ss;
    /* -n large: the answer runs until Ctrl-C (or, if the signal were lost, the context) */
    CHECK(start(&ss, (const char *const[]){"chat", "-m", model, "--verbose", "-n", "100000", "-c", "4096", NULL}),
          "start");
    type(&ss, "Write forever.\n");
    /* wait for the answer to stream (the echo of the line comes first) */
    CHECK(wait_err(&ss, "turn 1: prefill", 1) && wait_out(&ss, ss.out_n + 200), "the answer did not start");
    type(&ss, "\003");   /* Ctrl-C: the terminal sends SIGINT to the chat */
    CHECK(wait_err(&ss, "stop: interrupted]", 1), "Ctrl-C did not end the answer");
    char *err = read_err(&ss);
    int n = -1;
    const char *a = strstr(err, "[answer: ");
    CHECK(a && sscanf(a, "[answer: %d tokens", &n) == 1 && n > 0 && n < 4000,
          "interrupted answer: %d tokens: %.300s", n, err);
    free(err);
    /* the chat goes on */
    type(&ss, "Are you still there?\n");
    CHECK(wait_err(&ss, "turn 2: prefill", 1), "no second turn after Ctrl-C");
    type(&ss, "\003");
    CHECK(wait_err(&ss, "stop: interrupted]", 2), "second Ctrl-C did not end the answer");
    type(&ss, "/exit\n");
    int rc = finish(&ss);
    CHECK(!ss.timed_out && rc == 0, "after Ctrl-C, /exit: exit %d%s", rc, ss.timed_out ? " (timed out)" : "");
    cleanup(&ss);
}

/* ---- errors and pipes ---------------------------------------------------------------- */

static void test_errors(const char *model, const char *models) {
    th_section("usage errors, no chat format, stdin from a pipe");
    result r = RUN("chat");
    CHECK(r.rc == 2 && has(r.err, "missing -m DIR"), "chat without -m: exit %d: %s", r.rc, r.err);
    done(&r);
    r = RUN("chat", "-m", model, "--frob");
    CHECK(r.rc == 2 && has(r.err, "unknown option '--frob'"), "chat --frob: exit %d: %s", r.rc, r.err);
    done(&r);
    r = RUN("chat", "--help");
    CHECK(r.rc == 0 && has(r.out, "usage: ds3 chat") && has(r.out, "/exit"), "chat --help: %s", r.out);
    done(&r);
    char tiny[512];
    snprintf(tiny, sizeof tiny, "%s/tiny-f32/config.json", models);
    if (exists(tiny)) {
        snprintf(tiny, sizeof tiny, "%s/tiny-f32", models);
        r = RUN("chat", "-m", tiny);
        CHECK(r.rc == 1 && has(r.err, "tokenizer.json"), "chat on a model without a tokenizer: exit %d: %s", r.rc,
              r.err);
        done(&r);
    }
    /* Not a terminal: no prompt, lines from the pipe, the end of input ends it. */
    const char *in = "First line\nSecond line\n";
    r = RUN_IN(in, strlen(in), "chat", "-m", model, "-n", "4", "--verbose");
    CHECK(r.rc == 0 && has(r.err, "turn 2: prefill") && !has(r.err, "turn 3") && !has(r.out, "> "),
          "chat from a pipe: exit %d, stdout %.200s, stderr %.300s", r.rc, r.out, r.err);
    done(&r);
    /* stdout on /dev/full: exit 1 */
    stdout_to = "/dev/full";
    if (access("/dev/full", W_OK) == 0) {
        r = RUN_IN(in, strlen(in), "chat", "-m", model, "-n", "4");
        CHECK(r.rc == 1 && has(r.err, "ds3: writing stdout"), "chat > /dev/full: exit %d: %s", r.rc, r.err);
        done(&r);
        /* run -p streams text: it stops at the first failed write */
        r = RUN("run", "-m", model, "-p", "Hello", "-n", "8");
        CHECK(r.rc == 1 && has(r.err, "ds3: writing stdout"), "run -p > /dev/full: exit %d: %s", r.rc, r.err);
        done(&r);
        r = RUN("run", "-m", model, "-p", "Hello", "-n", "8", "--json");
        CHECK(r.rc == 1 && has(r.err, "ds3: writing stdout"), "run -p --json > /dev/full: exit %d: %s", r.rc, r.err);
        done(&r);
    }
    stdout_to = NULL;
}

/* ---- run's text options on the same model ----------------------------------------- */

static void test_run_text(const char *model) {
    th_section("run: -f FILE, -p - (stdin), --stop");
    const char *prompt = "The capital of France is";
    result r = RUN("run", "-m", model, "-p", prompt, "-n", "12", "--quiet");
    CHECK(r.rc == 0 && r.out_n > 1, "run -p: exit %d: %s", r.rc, r.err);
    char *text = strdup(r.out);
    done(&r);
    char path[300];
    snprintf(path, sizeof path, "%s/prompt.txt", tmpdir);
    FILE *f = fopen(path, "w");
    fputs(prompt, f);
    fclose(f);
    r = RUN("run", "-m", model, "-f", path, "-n", "12", "--quiet");
    CHECK(r.rc == 0 && strcmp(r.out, text) == 0, "-f FILE differs from -p: '%s' vs '%s'", r.out, text);
    done(&r);
    r = RUN_IN(prompt, strlen(prompt), "run", "-m", model, "-p", "-", "-n", "12", "--quiet");
    CHECK(r.rc == 0 && strcmp(r.out, text) == 0, "-p - differs from -p: '%s' vs '%s'", r.out, text);
    done(&r);
    r = RUN_IN(prompt, strlen(prompt), "run", "-m", model, "-f", "-", "-n", "12", "--quiet");
    CHECK(r.rc == 0 && strcmp(r.out, text) == 0, "-f - differs from -p: %s", r.out);
    done(&r);
    r = RUN("run", "-m", model, "-f", "/nonexistent/prompt.txt");
    CHECK(r.rc == 1 && has(r.err, "cannot read /nonexistent/prompt.txt"), "-f missing: exit %d: %s", r.rc, r.err);
    done(&r);
    r = RUN("run", "-m", model, "-f", path, "-p", "x");
    CHECK(r.rc == 2 && has(r.err, "not both"), "-f and -p: exit %d: %s", r.rc, r.err);
    done(&r);

    /* --stop: the text ends before the first occurrence of the string */
    size_t tl = strlen(text);
    CHECK(tl > 8, "the text is too short to test --stop: '%s'", text);
    if (tl > 8) {
        char stop[4];
        memcpy(stop, text + tl / 2, 3);
        stop[3] = '\0';
        const char *at = strstr(text, stop);
        size_t want = (size_t)(at - text);
        r = RUN("run", "-m", model, "-p", prompt, "-n", "12", "--quiet", "--stop", "\x01never", "--stop", stop);
        CHECK(r.rc == 0 && r.out_n == want + 1 && memcmp(r.out, text, want) == 0 && r.out[want] == '\n',
              "--stop '%s': got '%s', want the first %zu bytes of '%s'", stop, r.out, want, text);
        done(&r);
        r = RUN("run", "-m", model, "-p", prompt, "-n", "12", "--json", "--stop", stop);
        CHECK(r.rc == 0 && has(r.out, "\"stop\":\"stop_string\""), "--json --stop: %s", r.out);
        done(&r);
    }
    r = RUN("run", "-m", model, "--tokens", "1,2", "--stop", "x");
    CHECK(r.rc == 2 && has(r.err, "--stop needs text"), "--stop with --tokens: exit %d: %s", r.rc, r.err);
    done(&r);
    free(text);
}

int main(void) {
    cli = getenv("DS3_CLI");
    if (!cli || !*cli) cli = "build/ds3";
    const char *models = getenv("DS3_MODELS");
    if (!models || !*models) models = "build/models";
    CHECK(access(cli, X_OK) == 0, "DS3_CLI=%s is not an executable", cli);
    if (access(cli, X_OK) != 0) return th_finish();
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ds3-test-chat.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    char model[256];
    snprintf(model, sizeof model, "%s/tiny-text", tmpdir);
    result r = RUN("mkmodel", "--config", "tiny-text", "--dtype", "bf16", "--seed", "3", "-o", model);
    CHECK(r.rc == 0 && has(r.err, "with tokenizer.json"), "mkmodel of the chat model: exit %d: %s", r.rc, r.err);
    done(&r);
    ds3_tokenizer *tok = NULL;
    CHECK(ds3_tokenizer_load(model, &tok) == DS3_OK, "the chat model's tokenizer: %s", ds3_last_error());
    if (tok) {
        test_five_turns(model, tok);
        test_ctrl_c(model);
        test_errors(model, models);
        test_run_text(model);
        ds3_tokenizer_free(tok);
    }
    remove_tmpdir();
    return th_finish();
}

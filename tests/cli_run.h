/*
 * cli_run.h — running the ds3 binary from a test, as a user would: fork/exec
 * with an argument list, stdin from a byte buffer (empty by default), stdout
 * and stderr captured whole through temporary files (stdout with its length:
 * text may hold NULs). Header-only like harness.h; include it once per test
 * program, after harness.h.
 *
 * The test sets `cli` (the binary: $DS3_CLI, which tests/run.sh points at the
 * build's own ds3) and makes `tmpdir` with mkdtemp before the first run;
 * remove_tmpdir() removes it and everything in it at the end.
 *
 *   result r = RUN("info", "--list");                          stdin empty
 *   result r = RUN_IN(text, len, "tokenize", "--tokenizer", dir);
 *   CHECK(r.rc == 0 && has(r.out, "…"), "…: %s", r.err);
 *   done(&r);
 *
 * Used by test_cli.c, test_compare.c and test_text.c.
 */
#ifndef DS3_TEST_CLI_RUN_H
#define DS3_TEST_CLI_RUN_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *cli;   /* the ds3 binary */
/* When set, the next runs' stdout goes to this file (e.g. "/dev/full")
 * instead of being captured; r.out is then empty. */
static const char *stdout_to;
static char tmpdir[64];   /* the test's mkdtemp directory */

typedef struct {
    int rc;          /* exit status; 128+signal if killed; -1 if it could not run */
    char *out, *err; /* NUL-terminated */
    size_t out_n;    /* stdout may hold NULs */
} result;

/* All of fd from its start, NUL-terminated (*len without it, if len). */
static inline char *slurp_fd(int fd, size_t *len) {
    off_t n = lseek(fd, 0, SEEK_END);
    if (n < 0) n = 0;
    char *s = malloc((size_t)n + 1);
    if (!s) abort();
    lseek(fd, 0, SEEK_SET);
    ssize_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, s + got, (size_t)(n - got));
        if (r <= 0) break;
        got += r;
    }
    s[got] = '\0';
    if (len) *len = (size_t)got;
    return s;
}

/* An open, already unlinked file in tmpdir. */
static inline int temp_fd(const char *what) {
    char p[128];
    snprintf(p, sizeof p, "%s/%s.XXXXXX", tmpdir, what);
    int fd = mkstemp(p);
    if (fd < 0) abort();
    unlink(p);
    return fd;
}

/* Run the CLI with args (NULL-terminated, at most 62) and stdin[0..in_n). */
static inline result run_in(const char *in, size_t in_n, const char *const *args) {
    result r = {-1, NULL, NULL, 0};
    int fi = temp_fd("stdin"), fo = temp_fd("stdout"), fe = temp_fd("stderr");
    if (in_n && write(fi, in, in_n) != (ssize_t)in_n) abort();
    lseek(fi, 0, SEEK_SET);
    char *argv[64];
    int n = 0;
    argv[n++] = (char *)cli;
    for (; args[n - 1] && n < 63; n++) argv[n] = (char *)args[n - 1];
    argv[n] = NULL;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fi, 0);
        if (stdout_to) {
            int fd = open(stdout_to, O_WRONLY);
            if (fd < 0) _exit(126);
            dup2(fd, 1);
        } else dup2(fo, 1);
        dup2(fe, 2);
        execv(cli, argv);
        _exit(127);
    }
    int status = 0;
    if (pid > 0 && waitpid(pid, &status, 0) == pid)
        r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    r.out = slurp_fd(fo, &r.out_n);
    r.err = slurp_fd(fe, NULL);
    close(fi);
    close(fo);
    close(fe);
    return r;
}

#define RUN(...) run_in(NULL, 0, (const char *const[]){__VA_ARGS__, NULL})
#define RUN_IN(in, n, ...) run_in(in, n, (const char *const[]){__VA_ARGS__, NULL})

static inline void done(result *r) {
    free(r->out);
    free(r->err);
}

static inline bool has(const char *s, const char *sub) { return s && strstr(s, sub) != NULL; }

static inline bool exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* rm -rf tmpdir. */
static inline void remove_tmpdir(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
}

#endif /* DS3_TEST_CLI_RUN_H */

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
 * A run that must go on while the test acts on it (a signal, a file changed
 * under it, a second writer) starts with run_start, its stdin and stdout
 * /dev/null and stderr in a file of the test's choosing, and ends with
 * run_wait:
 *
 *   pid_t pid = RUN_START(errfile, "dump", "-m", dir, "--tokens", "1,2", "-o", out);
 *   ...                                           kill(pid, SIGINT), say
 *   int rc = run_wait(pid);                       128 + signal if killed
 *
 * run_opts says how the next runs start (limits, environment, an alarm): set
 * what a case needs, reset it after. count_tmp(dir) counts what a writer left
 * behind ("*.tmp": a file or a directory).
 *
 * Used by test_cli.c, test_compare.c, test_text.c, test_chat.c,
 * test_errors.c and test_robust.c.
 */
#ifndef DS3_TEST_CLI_RUN_H
#define DS3_TEST_CLI_RUN_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *cli;   /* the ds3 binary */
/* When set, the next runs' stdout goes to this file (e.g. "/dev/full")
 * instead of being captured; r.out is then empty. */
static const char *stdout_to;
static char tmpdir[64];   /* the test's mkdtemp directory */

/* How the next runs start (RUN, RUN_IN, RUN_START). In every child SIGINT,
 * SIGTERM and SIGHUP are at their default actions, as in a shell. */
static struct {
    long fsize;          /* > 0: RLIMIT_FSIZE in bytes; SIGXFSZ ignored, so a write past it fails (EFBIG)... */
    bool xfsz_kills;     /* ...unless set: SIGXFSZ at its default (kills), as a shell's `ulimit -f` leaves it */
    long as;             /* > 0: RLIMIT_AS in bytes, and OPENBLAS_NUM_THREADS=1 (OpenBLAS's own threads
                            each map a 128 MB buffer when it loads: alone they would exceed a small limit) */
    const char *env[4];  /* "NAME=VALUE" each, set in the child (NULL entries skipped) */
    unsigned alarm_s;    /* > 0: SIGALRM after that many seconds, so a hang ends as status 142 */
} run_opts;

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

/* In the child, before execv: run_opts. */
static inline void run_child_setup(void) {
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    signal(SIGXFSZ, run_opts.fsize > 0 && !run_opts.xfsz_kills ? SIG_IGN : SIG_DFL);
    if (run_opts.fsize > 0) {
        struct rlimit rl = {(rlim_t)run_opts.fsize, (rlim_t)run_opts.fsize};
        setrlimit(RLIMIT_FSIZE, &rl);
    }
    if (run_opts.as > 0) {
        struct rlimit rl = {(rlim_t)run_opts.as, (rlim_t)run_opts.as};
        setrlimit(RLIMIT_AS, &rl);
        setenv("OPENBLAS_NUM_THREADS", "1", 1);
    }
    for (int i = 0; i < 4; i++) {
        if (!run_opts.env[i]) continue;
        char name[64];
        const char *eq = strchr(run_opts.env[i], '=');
        if (!eq || eq - run_opts.env[i] >= (long)sizeof name) continue;
        snprintf(name, sizeof name, "%.*s", (int)(eq - run_opts.env[i]), run_opts.env[i]);
        setenv(name, eq + 1, 1);
    }
    if (run_opts.alarm_s) alarm(run_opts.alarm_s);
}

/* Exit status as a shell shows it: 128 + signal when killed; -1 if pid is not a child. */
static inline int run_wait(pid_t pid) {
    int status = 0;
    if (pid <= 0 || waitpid(pid, &status, 0) != pid) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* argv[64] for execv: the CLI, then args (NULL-terminated, at most 62). */
static inline void cli_argv(char *argv[64], const char *const *args) {
    int n = 0;
    argv[n++] = (char *)cli;
    for (; args[n - 1] && n < 63; n++) argv[n] = (char *)args[n - 1];
    argv[n] = NULL;
}

/* Start the CLI with args (NULL-terminated, at most 62) and return at once:
 * stdin and stdout /dev/null, stderr to errfile (created or truncated). */
static inline pid_t run_start(const char *errfile, const char *const *args) {
    char *argv[64];
    cli_argv(argv, args);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        int nul = open("/dev/null", O_RDWR);
        int fe = open(errfile, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(nul, 0);
        dup2(nul, 1);
        dup2(fe >= 0 ? fe : nul, 2);
        run_child_setup();
        execv(cli, argv);
        _exit(127);
    }
    return pid;
}
#define RUN_START(errfile, ...) run_start(errfile, (const char *const[]){__VA_ARGS__, NULL})

/* Entries of dir whose name ends in ".tmp": what a writer left behind (a
 * temporary file, or mkmodel's sibling directory). 0 if dir cannot be read. */
static inline int count_tmp(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    if (!d) return 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t l = strlen(e->d_name);
        if (l > 4 && strcmp(e->d_name + l - 4, ".tmp") == 0) n++;
    }
    closedir(d);
    return n;
}

/* Run the CLI with args (NULL-terminated, at most 62) and stdin[0..in_n). */
static inline result run_in(const char *in, size_t in_n, const char *const *args) {
    result r = {-1, NULL, NULL, 0};
    int fi = temp_fd("stdin"), fo = temp_fd("stdout"), fe = temp_fd("stderr");
    if (in_n && write(fi, in, in_n) != (ssize_t)in_n) abort();
    lseek(fi, 0, SEEK_SET);
    char *argv[64];
    cli_argv(argv, args);
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
        run_child_setup();
        execv(cli, argv);
        _exit(127);
    }
    r.rc = run_wait(pid);
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

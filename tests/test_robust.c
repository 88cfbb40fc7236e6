/*
 * test_robust.c — outputs that survive other writers, signals and limits, and
 * a checkpoint that changes under a running process (docs/ROBUSTNESS.md,
 * "Other writers, signals, limits"). Each case is adversarial beyond one bad
 * input:
 *
 *   temporaries   a symbolic link, a FIFO and a file already at the names the
 *                 writer tries first: none is followed, blocked on or reused
 *   signals       SIGINT, SIGTERM, SIGHUP while a file is being written (in
 *                 the library, and `ds3 dump` / `ds3 mkmodel` killed while a
 *                 temporary exists): the process dies of the signal, no
 *                 temporary is left
 *   writers       two `ds3 dump` to one path at once (different contents), 20
 *                 rounds: the file is one writer's bytes every time; two
 *                 `ds3 mkmodel` (seeds 1 and 2) into one directory, 20
 *                 rounds: one complete model equal to one seed's, the loser
 *                 exits 1 and says why
 *   limits        `ulimit -f` under dump and mkmodel with SIGXFSZ at its
 *                 default (which kills): exit 1, "File too large", no file
 *
 * Needs $DS3_MODELS/tiny-fp8 and $DS3_CLI; makes the micro model
 * (tests/fuzz/micro_model.h) for the cases that run many times. Linux: /proc for the checkpoint
 * cases.
 */
#include "harness.h"
#include "io/io.h"
#include "fuzz/micro_model.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char tmpdir[64];
static const char *models, *cli;

/* ========================================================================== */
/* Helpers                                                                     */
/* ========================================================================== */

static bool exists(const char *path) {
    struct stat sb;
    return lstat(path, &sb) == 0;
}

/* Files in dir whose name ends in ".tmp" (a temporary left behind). */
static int count_tmp(const char *dir) {
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

/* All of a file (NULL if it cannot be read); *n its length. */
static unsigned char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)len + 1);
    if (!b || fread(b, 1, (size_t)len, f) != (size_t)len) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *n = (size_t)len;
    return b;
}

static bool same_bytes(const unsigned char *a, size_t na, const unsigned char *b, size_t nb) {
    return a && b && na == nb && memcmp(a, b, na) == 0;
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0) { perror(path); exit(1); }
    fclose(f);
}

static void rm_rf(const char *p) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", p);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", p);
}

/* A CLI child: stdout to /dev/null, stderr to errfile; fsize > 0 sets
 * RLIMIT_FSIZE with SIGXFSZ at its default action (which kills), as a shell's
 * `ulimit -f` leaves it. env: "NAME=VALUE" or NULL. */
static pid_t spawn(const char *errfile, long fsize, const char *env, const char *const *args) {
    char *argv[32];
    int n = 0;
    argv[n++] = (char *)cli;
    while (args[n - 1] && n < 31) { argv[n] = (char *)args[n - 1]; n++; }
    argv[n] = NULL;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        int nul = open("/dev/null", O_RDWR);
        int fe = open(errfile, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(nul, 0);
        dup2(nul, 1);
        dup2(fe >= 0 ? fe : nul, 2);
        signal(SIGXFSZ, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        if (fsize > 0) {
            struct rlimit rl = {(rlim_t)fsize, (rlim_t)fsize};
            setrlimit(RLIMIT_FSIZE, &rl);
        }
        /* Threads that sleep when idle: on a loaded machine libgomp's spinning
         * makes each run of the micro model take 0.6 s instead of 0.04 s.
         * (Not a change of bits: the thread count and schedule are the same.) */
        setenv("OMP_WAIT_POLICY", "passive", 0);
        if (env) {
            char name[64];
            const char *eq = strchr(env, '=');
            snprintf(name, sizeof name, "%.*s", (int)(eq - env), env);
            setenv(name, eq + 1, 1);
        }
        execv(cli, argv);
        _exit(127);
    }
    return pid;
}
#define SPAWN(errfile, fsize, env, ...) spawn(errfile, fsize, env, (const char *const[]){__VA_ARGS__, NULL})

/* Exit status as a shell shows it: 128 + signal when killed. */
static int wait_rc(pid_t pid) {
    int status = 0;
    if (waitpid(pid, &status, 0) != pid) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static char *read_err(const char *errfile) {
    size_t n;
    char *s = (char *)slurp(errfile, &n);
    if (!s) return strdup("");
    s[n] = '\0';
    return s;
}

/* ========================================================================== */
/* The library's writer                                                        */
/* ========================================================================== */

static const char *const planted_tags[] = {"aaaaaa", "bbbbbb", "cccccc", "dddddd"};
static int tag_calls;
static void planted_tag(char tag[7]) {
    memcpy(tag, planted_tags[tag_calls < 4 ? tag_calls : 3], 7);
    tag_calls++;
}

static void test_temporaries(void) {
    th_section("what sits at a temporary's name is never followed, blocked on or reused");
    char d[128], out[200], victim[200], p[260];
    snprintf(d, sizeof d, "%s/temps", tmpdir);
    mkdir(d, 0755);
    snprintf(out, sizeof out, "%s/out.safetensors", d);
    snprintf(victim, sizeof victim, "%s/victim", d);
    write_file(victim, "victim's bytes");
    snprintf(p, sizeof p, "%s.aaaaaa.tmp", out);
    CHECK(symlink(victim, p) == 0, "symlink %s", p);
    snprintf(p, sizeof p, "%s.bbbbbb.tmp", out);
    CHECK(mkfifo(p, 0644) == 0, "mkfifo %s", p);
    snprintf(p, sizeof p, "%s.cccccc.tmp", out);
    write_file(p, "someone else's temporary");

    /* In a child with an alarm: a writer that opened the FIFO would block. */
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        alarm(20);
        ds3_outfile_tag_hook = planted_tag;
        float x[4] = {1, 2, 3, 4};
        ds3_st_writer *w = ds3_stw_new();
        ds3_stw_add(w, "x", DS3_DT_F32, 1, (int64_t[]){4}, x);
        ds3_status st = ds3_stw_write(w, out);
        if (st) fprintf(stderr, "writer: %s\n", ds3_last_error());
        ds3_stw_free(w);
        _exit(st == DS3_OK && tag_calls == 4 ? 0 : 1);
    }
    int rc = wait_rc(pid);
    CHECK(rc == 0, "the writer skipped the three planted names and wrote (exit %d; 142 = blocked)", rc);
    size_t n;
    unsigned char *v = slurp(victim, &n);
    CHECK(same_bytes(v, n, (const unsigned char *)"victim's bytes", 14), "the link's target is untouched");
    free(v);
    struct stat sb;
    snprintf(p, sizeof p, "%s.aaaaaa.tmp", out);
    CHECK(lstat(p, &sb) == 0 && S_ISLNK(sb.st_mode), "the link is still a link");
    snprintf(p, sizeof p, "%s.bbbbbb.tmp", out);
    CHECK(lstat(p, &sb) == 0 && S_ISFIFO(sb.st_mode), "the FIFO is still a FIFO");
    snprintf(p, sizeof p, "%s.cccccc.tmp", out);
    v = slurp(p, &n);
    CHECK(same_bytes(v, n, (const unsigned char *)"someone else's temporary", 24), "the other file is untouched");
    free(v);
    snprintf(p, sizeof p, "%s.dddddd.tmp", out);
    CHECK(!exists(p), "the writer's own temporary was renamed away");
    ds3_st_file *f = NULL;
    CHECK(ds3_st_open(out, &f) == DS3_OK && f->n == 1, "the output is complete: %s", ds3_last_error());
    ds3_st_close(f);
}

/* The library's handler: a signal while a temporary exists removes it, and the
 * process still dies of that signal. */
static void test_library_signals(void) {
    th_section("SIGINT, SIGTERM, SIGHUP during a write: the temporary goes, the signal still kills");
    const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
    for (int k = 0; k < 3; k++) {
        char d[128], out[200];
        snprintf(d, sizeof d, "%s/libsig%d", tmpdir, k);
        mkdir(d, 0755);
        snprintf(out, sizeof out, "%s/out.bin", d);
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            signal(sigs[k], SIG_DFL);
            ds3_outfile o;
            if (ds3_outfile_open(&o, out) != DS3_OK) _exit(2);
            fputs("half a file", o.fp);
            fflush(o.fp);
            if (count_tmp(d) != 1) _exit(3);   /* the temporary exists now */
            raise(sigs[k]);
            _exit(4);   /* not reached: the handler re-raises with the default action */
        }
        int rc = wait_rc(pid);
        CHECK(rc == 128 + sigs[k], "signal %d: the writer died of it (status %d)", sigs[k], rc);
        CHECK(count_tmp(d) == 0 && !exists(out), "signal %d: no temporary and no output left", sigs[k]);
    }
}

/* ========================================================================== */
/* Two writers at once                                                         */
/* ========================================================================== */

static void test_concurrent_dumps(void) {
    th_section("two `ds3 dump` to one path at once, 20 rounds");
    char d[128], out[200], e1[200], e2[200], model[256];
    snprintf(d, sizeof d, "%s/dumps", tmpdir);
    mkdir(d, 0755);
    snprintf(out, sizeof out, "%s/out.safetensors", d);
    snprintf(e1, sizeof e1, "%s/err1", tmpdir);
    snprintf(e2, sizeof e2, "%s/err2", tmpdir);
    /* the micro model (fp8, 16 kB): a dump in milliseconds, 20 rounds in seconds */
    snprintf(model, sizeof model, "%s", micro_model_make(DS3_WEIGHTS_FP8, 0));
    const char *toks = "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,0,1,2,3,4,5,6,7,8";
    /* Each writer's bytes alone (the metadata names the command, -o included). */
    size_t na = 0, nb = 0;
    int rc = wait_rc(SPAWN(e1, 0, NULL, "dump", "-m", model, "--tokens", toks, "-o", out));
    unsigned char *a = rc == 0 ? slurp(out, &na) : NULL;
    rc = wait_rc(SPAWN(e1, 0, NULL, "dump", "-m", model, "--tokens", toks, "--attn", "naive", "-o", out));
    unsigned char *b = rc == 0 ? slurp(out, &nb) : NULL;
    CHECK(a && b && !same_bytes(a, na, b, nb), "the two writers' files exist and differ");
    int rounds_ok = 0, failures = 0;
    for (int r = 0; r < 20 && a && b; r++) {
        unlink(out);
        pid_t p1 = SPAWN(e1, 0, NULL, "dump", "-m", model, "--tokens", toks, "-o", out);
        pid_t p2 = SPAWN(e2, 0, NULL, "dump", "-m", model, "--tokens", toks, "--attn", "naive", "-o", out);
        int r1 = wait_rc(p1), r2 = wait_rc(p2);
        size_t n;
        unsigned char *got = slurp(out, &n);
        bool is_a = same_bytes(got, n, a, na), is_b = same_bytes(got, n, b, nb);
        /* the file is one writer's, and that writer succeeded; a writer that
         * failed said so (exit 1, a message) */
        bool ok = (is_a && r1 == 0) || (is_b && r2 == 0);
        char *m1 = read_err(e1), *m2 = read_err(e2);
        ok = ok && (r1 == 0 || (r1 == 1 && strncmp(m1, "ds3: ", 5) == 0)) &&
             (r2 == 0 || (r2 == 1 && strncmp(m2, "ds3: ", 5) == 0)) && count_tmp(d) == 0;
        if (!ok)
            fprintf(stderr, "round %d: exits %d %d, file %s (%zu bytes), %d .tmp; %s%s\n", r, r1, r2,
                    is_a ? "= writer 1" : is_b ? "= writer 2" : "is neither writer's", n, count_tmp(d), m1, m2);
        failures += (r1 != 0) + (r2 != 0);
        rounds_ok += ok;
        free(m1);
        free(m2);
        free(got);
    }
    CHECK(rounds_ok == 20, "20 rounds of two concurrent dumps: %d gave one writer's complete file", rounds_ok);
    fprintf(stderr, "   %d of 40 writers failed (both rename: the last one's file stays)\n", failures);
    free(a);
    free(b);
}

/* Every file of a model directory, concatenated in name order (dot files left
 * out), so two directories compare by one memcmp. */
static unsigned char *dir_bytes(const char *dir, size_t *n) {
    struct dirent **names = NULL;
    int k = scandir(dir, &names, NULL, alphasort);
    size_t cap = 1, len = 0;
    unsigned char *all = malloc(cap);
    for (int i = 0; i < k; i++) {
        if (names[i]->d_name[0] != '.') {
            char p[600];
            size_t m;
            snprintf(p, sizeof p, "%s/%s", dir, names[i]->d_name);
            unsigned char *b = slurp(p, &m);
            size_t nl = strlen(names[i]->d_name) + 1;
            all = realloc(all, cap = len + nl + (b ? m : 0) + 1);
            memcpy(all + len, names[i]->d_name, nl);
            len += nl;
            if (b) memcpy(all + len, b, m), len += m;
            free(b);
        }
        free(names[i]);
    }
    free(names);
    *n = len;
    return all;
}

static void test_concurrent_mkmodel(void) {
    th_section("two `ds3 mkmodel` (seeds 1, 2) into one directory at once, 20 rounds");
    char cfg[200], d[200], e1[200], e2[200];
    snprintf(cfg, sizeof cfg, "%s/micro.json", tmpdir);
    write_file(cfg, MICRO_CONFIG);
    snprintf(d, sizeof d, "%s/model", tmpdir);
    snprintf(e1, sizeof e1, "%s/err1", tmpdir);
    snprintf(e2, sizeof e2, "%s/err2", tmpdir);
    /* several shards, so a mixture would be possible */
    const char *shards = "DS3_MKMODEL_SHARD_MB=0.002";
    size_t n1 = 0, n2 = 0;
    rm_rf(d);
    int rc = wait_rc(SPAWN(e1, 0, shards, "mkmodel", "--config", cfg, "--dtype", "fp8", "--seed", "1", "-o", d));
    unsigned char *m1 = rc == 0 ? dir_bytes(d, &n1) : NULL;
    rm_rf(d);
    rc = wait_rc(SPAWN(e1, 0, shards, "mkmodel", "--config", cfg, "--dtype", "fp8", "--seed", "2", "-o", d));
    unsigned char *m2 = rc == 0 ? dir_bytes(d, &n2) : NULL;
    CHECK(m1 && m2 && !same_bytes(m1, n1, m2, n2), "seeds 1 and 2 give different models");
    int rounds_ok = 0, lost = 0;
    for (int r = 0; r < 20 && m1 && m2; r++) {
        rm_rf(d);
        pid_t p1 = SPAWN(e1, 0, shards, "mkmodel", "--config", cfg, "--dtype", "fp8", "--seed", "1", "-o", d);
        pid_t p2 = SPAWN(e2, 0, shards, "mkmodel", "--config", cfg, "--dtype", "fp8", "--seed", "2", "-o", d);
        int r1 = wait_rc(p1), r2 = wait_rc(p2);
        size_t n;
        unsigned char *got = dir_bytes(d, &n);
        bool is1 = same_bytes(got, n, m1, n1), is2 = same_bytes(got, n, m2, n2);
        char *s1 = read_err(e1), *s2 = read_err(e2);
        bool ok = ((is1 && r1 == 0) || (is2 && r2 == 0)) && count_tmp(d) == 0;
        /* a loser exits 1 and says another mkmodel has the directory */
        if (r1) ok = ok && r1 == 1 && strstr(s1, "another ds3 mkmodel");
        if (r2) ok = ok && r2 == 1 && strstr(s2, "another ds3 mkmodel");
        if (!ok)
            fprintf(stderr, "round %d: exits %d %d, model %s; %s%s\n", r, r1, r2,
                    is1 ? "= seed 1" : is2 ? "= seed 2" : "is neither seed's", s1, s2);
        lost += (r1 != 0) + (r2 != 0);
        rounds_ok += ok;
        free(s1);
        free(s2);
        free(got);
    }
    CHECK(rounds_ok == 20, "20 rounds of two concurrent mkmodels: %d left one seed's complete model", rounds_ok);
    fprintf(stderr, "   %d of 20 rounds overlapped (the second run found the directory locked)\n", lost);
    free(m1);
    free(m2);
}

/* ========================================================================== */
/* Limits and signals through the CLI                                          */
/* ========================================================================== */

static void test_file_size_limit(void) {
    th_section("`ulimit -f` with SIGXFSZ at its default: exit 1 and a message, not death by signal");
    char d[128], out[200], e[200], model[256];
    snprintf(d, sizeof d, "%s/fsize", tmpdir);
    mkdir(d, 0755);
    snprintf(out, sizeof out, "%s/out.safetensors", d);
    snprintf(e, sizeof e, "%s/err", tmpdir);
    snprintf(model, sizeof model, "%s/tiny-fp8", models);
    int rc = wait_rc(SPAWN(e, 65536, NULL, "dump", "-m", model, "--tokens", "1,2,3,4,5,6,7,8", "-o", out));
    char *msg = read_err(e);
    CHECK(rc == 1 && strncmp(msg, "ds3: ", 5) == 0 && strstr(msg, "File too large"),
          "dump under a 64 kB limit: exit %d (153 = killed by SIGXFSZ): %s", rc, msg);
    CHECK(!exists(out) && count_tmp(d) == 0, "dump under a 64 kB limit left its output or a temporary");
    free(msg);

    char md[200];
    snprintf(md, sizeof md, "%s/model", d);
    rc = wait_rc(SPAWN(e, 1 << 20, NULL, "mkmodel", "--config", "tiny", "--dtype", "fp8", "-o", md));
    msg = read_err(e);
    CHECK(rc == 1 && strncmp(msg, "ds3: ", 5) == 0 && strstr(msg, "File too large"),
          "mkmodel under a 1 MB limit: exit %d: %s", rc, msg);
    CHECK(count_tmp(md) == 0, "mkmodel under a 1 MB limit left a temporary");
    free(msg);
}

/* Start the command, watch dir for a temporary and send sig the moment one
 * appears. Returns 1 when the signal landed while a temporary existed and the
 * process died of it, 0 when the command finished first (no verdict), -1 on a
 * broken promise. */
static int kill_while_writing(const char *dir, const char *out, int sig, const char *env,
                              const char *const *args) {
    char e[200];
    snprintf(e, sizeof e, "%s/err", tmpdir);
    pid_t pid = spawn(e, 0, env, args);
    bool sent = false;
    for (;;) {
        if (count_tmp(dir) > 0) {
            kill(pid, sig);
            sent = true;
            break;
        }
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            /* finished before a temporary was seen */
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return -1;
            return 0;
        }
    }
    int rc = wait_rc(pid);
    if (!sent) return 0;
    if (rc == 0) return count_tmp(dir) == 0 ? 0 : -1;   /* it renamed just before the signal */
    if (rc != 128 + sig) {
        fprintf(stderr, "signal %d: status %d\n", sig, rc);
        return -1;
    }
    if (count_tmp(dir) != 0) {
        fprintf(stderr, "signal %d: a temporary was left in %s\n", sig, dir);
        return -1;
    }
    if (out && exists(out)) {
        fprintf(stderr, "signal %d: %s exists\n", sig, out);
        return -1;
    }
    return 1;
}

static void test_cli_signals(void) {
    th_section("SIGINT, SIGTERM, SIGHUP while `ds3 dump` and `ds3 mkmodel` write: no temporary left");
    char model[256];
    snprintf(model, sizeof model, "%s/tiny-fp8", models);
    const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
    for (int k = 0; k < 3; k++) {
        int hits = 0, broken = 0;
        for (int attempt = 0; attempt < 30 && hits < 2; attempt++) {
            char d[128], out[200];
            snprintf(d, sizeof d, "%s/sigdump%d_%d", tmpdir, k, attempt);
            mkdir(d, 0755);
            snprintf(out, sizeof out, "%s/out.safetensors", d);
            int v = kill_while_writing(d, out, sigs[k], NULL,
                                       (const char *const[]){"dump", "-m", model, "--tokens",
                                                             "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16", "-o",
                                                             out, NULL});
            hits += v == 1;
            broken += v < 0;
        }
        CHECK(broken == 0 && hits > 0, "dump, signal %d: %d kills while writing, %d broken promises", sigs[k], hits,
              broken);
        hits = broken = 0;
        for (int attempt = 0; attempt < 30 && hits < 2; attempt++) {
            char d[128];
            snprintf(d, sizeof d, "%s/sigmk%d_%d", tmpdir, k, attempt);
            int v = kill_while_writing(d, NULL, sigs[k], "DS3_MKMODEL_SHARD_MB=1",
                                       (const char *const[]){"mkmodel", "--config", "tiny", "--dtype", "fp8",
                                                             "-o", d, NULL});
            hits += v == 1;
            broken += v < 0;
        }
        CHECK(broken == 0 && hits > 0, "mkmodel, signal %d: %d kills while writing, %d broken promises", sigs[k],
              hits, broken);
    }
}

int main(void) {
    models = getenv("DS3_MODELS");
    cli = getenv("DS3_CLI");
    if (!models) models = "build/models";
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ds3_robust_XXXXXX");
    if (!mkdtemp(tmpdir)) { perror("mkdtemp"); return 1; }

    test_temporaries();
    test_library_signals();
    if (cli && access(cli, X_OK) == 0) {
        test_concurrent_dumps();
        test_concurrent_mkmodel();
        test_file_size_limit();
        test_cli_signals();
    } else {
        fprintf(stderr, "-- no CLI at DS3_CLI: skipping the CLI cases\n");
    }
    rm_rf(tmpdir);
    return th_finish();
}

/*
 * test_robust.c — outputs that survive other writers, signals and limits, and
 * a checkpoint that changes under a running process (docs/ROBUSTNESS.md,
 * "Other writers, signals, limits"). Each case is adversarial beyond one bad
 * input:
 *
 *   temporaries   a symbolic link, a FIFO and a file already at the names the
 *                 writer tries first (a file's temporary, mkmodel's sibling
 *                 directory): none is followed, blocked on or reused
 *   signals       SIGINT, SIGTERM, SIGHUP while a file is being written (in
 *                 the library, and `ds3 dump` / `ds3 mkmodel` killed while a
 *                 temporary file or directory exists): the process dies of
 *                 the signal, says so and what it removed, no temporary is
 *                 left; SIGKILL during mkmodel: nothing at a new target, the
 *                 earlier model byte for byte over an old one
 *   writers       two `ds3 dump` to one path at once (different contents), 20
 *                 rounds: the file is one writer's bytes every time; two
 *                 `ds3 mkmodel` (seeds 1 and 2) into one directory, 20
 *                 rounds: one complete model equal to one seed's, the loser
 *                 exits 1 and says why
 *   limits        `ulimit -f` under dump and mkmodel with SIGXFSZ at its
 *                 default (which kills): exit 1, "File too large", no file
 *   checkpoint    a shard truncated, rewritten in place with another seed's
 *                 bytes, or replaced by a rename while a model is loaded (in
 *                 the library) or while `ds3 run` / `ds3 dump` runs (stopped
 *                 once it maps the shard, changed, continued): no SIGBUS
 *                 death, exit 1 naming the file, no output
 *
 *   resources     `ulimit -v` too small for OpenBLAS's buffers or for
 *                 OMP_NUM_THREADS threads: exit 1 with ds3's message (it hung
 *                 in OpenBLAS, or libgomp exited with its own); a BLAS tile
 *                 buffer that cannot be allocated mid-pass (RLIMIT_DATA): an
 *                 error, not the plain loops' other bits
 *
 * Needs $DS3_MODELS/tiny-fp8 and $DS3_CLI; makes the micro model
 * (tests/fuzz/micro_model.h) for the cases that run many times. Linux: /proc for the checkpoint
 * cases.
 */
#include "harness.h"
#include "cli_run.h"
#include "io/io.h"
#include "model/model.h"
#include "fuzz/micro_model.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#if defined(__linux__) && defined(__GLIBC__)
#include <malloc.h>   /* mallopt: the tile-buffer case */
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

static const char *models;   /* cli, tmpdir: cli_run.h */

/* ========================================================================== */
/* Helpers                                                                     */
/* ========================================================================== */

/* Is there anything at path (a link, even a dangling one, counts)? */
static bool lexists(const char *path) {
    struct stat sb;
    return lstat(path, &sb) == 0;
}

/* All of a file (NULL if it cannot be read); *n its length. */
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

/* A CLI child (cli_run.h's run_start: stdout to /dev/null, stderr to
 * errfile); fsize > 0 sets RLIMIT_FSIZE with SIGXFSZ at its default action
 * (which kills), as a shell's `ulimit -f` leaves it (main sets xfsz_kills).
 * env: one "NAME=VALUE" or NULL. Every child also gets an alarm (a hang fails
 * the case, status 142, instead of the test) and OMP_WAIT_POLICY=passive:
 * threads that sleep when idle (on a loaded machine libgomp's spinning makes
 * each run of the micro model take 0.6 s instead of 0.04 s; not a change of
 * bits: the thread count and schedule are the same). */
static pid_t spawn(const char *errfile, long fsize, const char *env, const char *const *args) {
    run_opts.fsize = fsize;
    run_opts.env[1] = env;
    pid_t pid = run_start(errfile, args);
    run_opts.fsize = 0;
    run_opts.env[1] = NULL;
    return pid;
}
#define SPAWN(errfile, fsize, env, ...) spawn(errfile, fsize, env, (const char *const[]){__VA_ARGS__, NULL})

static char *read_err(const char *errfile) {
    size_t n;
    char *s = (char *)th_read_file(errfile, &n);
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
    int rc = run_wait(pid);
    CHECK(rc == 0, "the writer skipped the three planted names and wrote (exit %d; 142 = blocked)", rc);
    size_t n;
    unsigned char *v = th_read_file(victim, &n);
    CHECK(same_bytes(v, n, (const unsigned char *)"victim's bytes", 14), "the link's target is untouched");
    free(v);
    struct stat sb;
    snprintf(p, sizeof p, "%s.aaaaaa.tmp", out);
    CHECK(lstat(p, &sb) == 0 && S_ISLNK(sb.st_mode), "the link is still a link");
    snprintf(p, sizeof p, "%s.bbbbbb.tmp", out);
    CHECK(lstat(p, &sb) == 0 && S_ISFIFO(sb.st_mode), "the FIFO is still a FIFO");
    snprintf(p, sizeof p, "%s.cccccc.tmp", out);
    v = th_read_file(p, &n);
    CHECK(same_bytes(v, n, (const unsigned char *)"someone else's temporary", 24), "the other file is untouched");
    free(v);
    snprintf(p, sizeof p, "%s.dddddd.tmp", out);
    CHECK(!lexists(p), "the writer's own temporary was renamed away");
    ds3_st_file *f = NULL;
    CHECK(ds3_st_open(out, &f) == DS3_OK && f->n == 1, "the output is complete: %s", ds3_last_error());
    ds3_st_close(f);
}

/* mkmodel's sibling directory is made by mkdir, which fails on any name that
 * exists: a link (to a directory an attacker would like filled), a FIFO, a
 * file at the names tried first are skipped, for a new target and for one
 * that holds a model. */
static void test_dir_temporaries(void) {
    th_section("what sits at mkmodel's sibling directory names is never followed or reused");
    char d[128], m[200], victim[200], p[260], cfg[200];
    snprintf(d, sizeof d, "%s/dirtemps", tmpdir);
    mkdir(d, 0755);
    snprintf(m, sizeof m, "%s/m", d);
    snprintf(victim, sizeof victim, "%s/victim", d);
    mkdir(victim, 0755);
    snprintf(cfg, sizeof cfg, "%s/micro-dirtemps.json", tmpdir);
    write_file(cfg, MICRO_CONFIG);
    for (int round = 0; round < 2; round++) {   /* 0: a new target; 1: over the model of round 0 */
        snprintf(p, sizeof p, "%s.aaaaaa.tmp", m);
        unlink(p);
        CHECK(symlink(victim, p) == 0, "symlink %s", p);
        snprintf(p, sizeof p, "%s.bbbbbb.tmp", m);
        unlink(p);
        CHECK(mkfifo(p, 0644) == 0, "mkfifo %s", p);
        snprintf(p, sizeof p, "%s.cccccc.tmp", m);
        write_file(p, "someone else's");
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            alarm(60);
            tag_calls = 0;
            ds3_outfile_tag_hook = planted_tag;
            ds3_mkmodel_opts o = {.config = cfg, .dtype = DS3_WEIGHTS_FP8, .seed = (uint64_t)round + 1};
            ds3_status st = ds3_mkmodel(&o, m);
            if (st) fprintf(stderr, "mkmodel: %s\n", ds3_last_error());
            _exit(st == DS3_OK ? 0 : 1);
        }
        int rc = run_wait(pid);
        CHECK(rc == 0, "round %d: mkmodel skipped the three planted names (exit %d)", round, rc);
        DIR *vd = opendir(victim);
        int inside = 0;
        for (struct dirent *e; vd && (e = readdir(vd));) inside += e->d_name[0] != '.';
        if (vd) closedir(vd);
        CHECK(inside == 0, "round %d: the linked directory is still empty (%d entries)", round, inside);
        struct stat sb;
        snprintf(p, sizeof p, "%s.aaaaaa.tmp", m);
        CHECK(lstat(p, &sb) == 0 && S_ISLNK(sb.st_mode), "round %d: the link is still a link", round);
        snprintf(p, sizeof p, "%s.bbbbbb.tmp", m);
        CHECK(lstat(p, &sb) == 0 && S_ISFIFO(sb.st_mode), "round %d: the FIFO is still a FIFO", round);
        snprintf(p, sizeof p, "%s.cccccc.tmp", m);
        size_t n;
        unsigned char *v = th_read_file(p, &n);
        CHECK(same_bytes(v, n, (const unsigned char *)"someone else's", 14), "round %d: the file is untouched",
              round);
        free(v);
        snprintf(p, sizeof p, "%s.dddddd.tmp", m);
        CHECK(!lexists(p), "round %d: the sibling mkmodel made is gone (renamed, or the old model removed)", round);
        ds3_model *mm = NULL;
        CHECK(ds3_model_load(m, &mm) == DS3_OK, "round %d: the model loads: %s", round, ds3_last_error());
        ds3_model_free(mm);
    }
}

/* The library's handler: a signal while a temporary exists removes it, and the
 * process still dies of that signal. */
/* How the handler names SIGINT, SIGTERM, SIGHUP (src/io/outfile.c). */
static const char *const sig_words[] = {"ds3: interrupted by SIGINT", "ds3: terminated by SIGTERM",
                                        "ds3: hung up (SIGHUP)"};

static void test_library_signals(void) {
    th_section("SIGINT, SIGTERM, SIGHUP during a write: the temporary goes, the signal still kills");
    const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
    for (int k = 0; k < 3; k++) {
        char d[128], out[200];
        snprintf(d, sizeof d, "%s/libsig%d", tmpdir, k);
        mkdir(d, 0755);
        snprintf(out, sizeof out, "%s/out.bin", d);
        char errf[200];
        snprintf(errf, sizeof errf, "%s/err", d);
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            int fe = open(errf, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (fe < 0 || dup2(fe, 2) < 0) _exit(5);
            signal(sigs[k], SIG_DFL);
            ds3_outfile o;
            if (ds3_outfile_open(&o, out) != DS3_OK) _exit(2);
            fputs("half a file", o.fp);
            fflush(o.fp);
            if (count_tmp(d) != 1) _exit(3);   /* the temporary exists now */
            raise(sigs[k]);
            _exit(4);   /* not reached: the handler re-raises with the default action */
        }
        int rc = run_wait(pid);
        CHECK(rc == 128 + sigs[k], "signal %d: the writer died of it (status %d)", sigs[k], rc);
        CHECK(count_tmp(d) == 0 && !lexists(out), "signal %d: no temporary and no output left", sigs[k]);
        /* what the handler said, with write(2) only: the signal and the file */
        char *msg = read_err(errf), want[300];
        snprintf(want, sizeof want, "%s; removed unfinished %s.", sig_words[k], out);
        CHECK(strncmp(msg, want, strlen(want)) == 0 && strstr(msg, ".tmp\n"), "signal %d: stderr '%s' starts "
              "with '%s' and names the .tmp", sigs[k], msg, want);
        free(msg);
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
    int rc = run_wait(SPAWN(e1, 0, NULL, "dump", "-m", model, "--tokens", toks, "-o", out));
    unsigned char *a = rc == 0 ? th_read_file(out, &na) : NULL;
    rc = run_wait(SPAWN(e1, 0, NULL, "dump", "-m", model, "--tokens", toks, "--attn", "naive", "-o", out));
    unsigned char *b = rc == 0 ? th_read_file(out, &nb) : NULL;
    CHECK(a && b && !same_bytes(a, na, b, nb), "the two writers' files exist and differ");
    int rounds_ok = 0, failures = 0;
    for (int r = 0; r < 20 && a && b; r++) {
        unlink(out);
        pid_t p1 = SPAWN(e1, 0, NULL, "dump", "-m", model, "--tokens", toks, "-o", out);
        pid_t p2 = SPAWN(e2, 0, NULL, "dump", "-m", model, "--tokens", toks, "--attn", "naive", "-o", out);
        int r1 = run_wait(p1), r2 = run_wait(p2);
        size_t n;
        unsigned char *got = th_read_file(out, &n);
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
            unsigned char *b = th_read_file(p, &m);
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
    /* the model is built in a sibling of d: the parent is where a
     * temporary would be left */
    char parent[200];
    snprintf(parent, sizeof parent, "%s/conc", tmpdir);
    mkdir(parent, 0755);
    snprintf(d, sizeof d, "%.150s/model", parent);
    snprintf(e1, sizeof e1, "%s/err1", tmpdir);
    snprintf(e2, sizeof e2, "%s/err2", tmpdir);
    /* several shards, so a mixture would be possible */
    const char *shards = "DS3_MKMODEL_SHARD_MB=0.001";
    size_t n1 = 0, n2 = 0;
    rm_rf(d);
    int rc = run_wait(SPAWN(e1, 0, shards, "mkmodel", "--config", cfg, "--dtype", "fp8", "--seed", "1", "-o", d));
    unsigned char *m1 = rc == 0 ? dir_bytes(d, &n1) : NULL;
    rm_rf(d);
    rc = run_wait(SPAWN(e1, 0, shards, "mkmodel", "--config", cfg, "--dtype", "fp8", "--seed", "2", "-o", d));
    unsigned char *m2 = rc == 0 ? dir_bytes(d, &n2) : NULL;
    CHECK(m1 && m2 && !same_bytes(m1, n1, m2, n2), "seeds 1 and 2 give different models");
    int rounds_ok = 0, lost = 0;
    for (int r = 0; r < 20 && m1 && m2; r++) {
        rm_rf(d);
        pid_t p1 = SPAWN(e1, 0, shards, "mkmodel", "--config", cfg, "--dtype", "fp8", "--seed", "1", "-o", d);
        pid_t p2 = SPAWN(e2, 0, shards, "mkmodel", "--config", cfg, "--dtype", "fp8", "--seed", "2", "-o", d);
        int r1 = run_wait(p1), r2 = run_wait(p2);
        size_t n;
        unsigned char *got = dir_bytes(d, &n);
        bool is1 = same_bytes(got, n, m1, n1), is2 = same_bytes(got, n, m2, n2);
        char *s1 = read_err(e1), *s2 = read_err(e2);
        bool ok = ((is1 && r1 == 0) || (is2 && r2 == 0)) && count_tmp(parent) == 0 && count_tmp(d) == 0;
        /* a loser exits 1 and says another mkmodel has the directory (it
         * found it locked) or published it first */
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
    fprintf(stderr, "   %d of 20 rounds had a loser (the directory locked, or published first)\n", lost);
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
    int rc = run_wait(SPAWN(e, 65536, NULL, "dump", "-m", model, "--tokens", "1,2,3,4,5,6,7,8", "-o", out));
    char *msg = read_err(e);
    CHECK(rc == 1 && strncmp(msg, "ds3: ", 5) == 0 && strstr(msg, "File too large"),
          "dump under a 64 kB limit: exit %d (153 = killed by SIGXFSZ): %s", rc, msg);
    CHECK(!lexists(out) && count_tmp(d) == 0, "dump under a 64 kB limit left its output or a temporary");
    free(msg);

    char md[200];
    snprintf(md, sizeof md, "%s/model", d);
    rc = run_wait(SPAWN(e, 1 << 20, NULL, "mkmodel", "--config", "tiny", "--dtype", "fp8", "-o", md));
    msg = read_err(e);
    CHECK(rc == 1 && strncmp(msg, "ds3: ", 5) == 0 && strstr(msg, "File too large"),
          "mkmodel under a 1 MB limit: exit %d: %s", rc, msg);
    CHECK(count_tmp(d) == 0 && !lexists(md), "mkmodel under a 1 MB limit left a temporary or a directory");
    free(msg);
}

/* Does dir hold a model that loads? (the test's own check, in a child: a
 * broken file must not take the test down) */
static bool loads(const char *dir) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        ds3_model *m = NULL;
        ds3_status st = ds3_model_load(dir, &m);
        ds3_model_free(m);
        _exit(st == DS3_OK ? 0 : 1);
    }
    return run_wait(pid) == 0;
}

/* Start the command, watch `watch` for a temporary (a file or directory whose
 * name ends in .tmp) and send sig the moment one appears. out: the file or
 * directory the command makes. Returns 1 when the signal landed while a
 * temporary existed and the process died of it, saying so; 0 when the
 * command finished first (no verdict); -1 on a broken promise. */
static int kill_while_writing(const char *watch, const char *out, bool out_is_dir, int sig, const char *word,
                              const char *env, const char *const *args) {
    char e[200];
    snprintf(e, sizeof e, "%s/err", tmpdir);
    pid_t pid = spawn(e, 0, env, args);
    bool sent = false;
    for (;;) {
        if (count_tmp(watch) > 0) {
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
    int rc = run_wait(pid);
    char *msg = read_err(e);
    int verdict = 1;
    if (!sent) verdict = 0;
    else if (rc == 0) verdict = count_tmp(watch) == 0 ? 0 : -1;   /* it renamed just before the signal */
    else if (rc != 128 + sig) {
        fprintf(stderr, "signal %d: status %d: %s\n", sig, rc, msg);
        verdict = -1;
    } else if (count_tmp(watch) != 0) {
        fprintf(stderr, "signal %d: a temporary was left in %s\n", sig, watch);
        verdict = -1;
    } else if (!strstr(msg, word)) {
        /* the handler said which signal, whenever it came (after the
         * command's own last line, if it came that late) */
        fprintf(stderr, "signal %d: stderr '%s' does not say '%s'\n", sig, msg, word);
        verdict = -1;
    } else if (lexists(out)) {
        /* the signal came after the rename: the output is complete (or the
         * promise is broken) and this kill was not "while writing" */
        bool whole = true;
        if (out_is_dir) {
            whole = loads(out);
        } else {
            ds3_st_file *f = NULL;
            whole = ds3_st_open(out, &f) == DS3_OK;
            ds3_st_close(f);
        }
        if (!whole) fprintf(stderr, "signal %d: %s is not whole\n", sig, out);
        verdict = whole ? 0 : -1;
    } else if (!strstr(msg, "; removed unfinished ") || !strstr(msg, ".tmp\n")) {
        /* killed while writing: the message names what it removed */
        fprintf(stderr, "signal %d: stderr '%s' does not name the removed temporary\n", sig, msg);
        verdict = -1;
    }
    free(msg);
    return verdict;
}

static void test_cli_signals(void) {
    th_section("SIGINT, SIGTERM, SIGHUP while `ds3 dump` and `ds3 mkmodel` write: a message, no temporary left");
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
            int v = kill_while_writing(d, out, false, sigs[k], sig_words[k], NULL,
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
            /* the model is built in a sibling directory of the target */
            char d[128], m[160];
            snprintf(d, sizeof d, "%s/sigmk%d_%d", tmpdir, k, attempt);
            mkdir(d, 0755);
            snprintf(m, sizeof m, "%s/m", d);
            int v = kill_while_writing(d, m, true, sigs[k], sig_words[k], "DS3_MKMODEL_SHARD_MB=1",
                                       (const char *const[]){"mkmodel", "--config", "tiny", "--dtype", "fp8",
                                                             "-o", m, NULL});
            hits += v == 1;
            broken += v < 0;
        }
        CHECK(broken == 0 && hits > 0, "mkmodel, signal %d: %d kills while writing, %d broken promises", sigs[k],
              hits, broken);
    }
}

/* SIGKILL cannot be caught: what a killed mkmodel leaves is decided by the
 * order of its steps. Into a new directory: nothing at the target. Over an
 * existing model: that model, byte for byte. */
static void test_mkmodel_sigkill(void) {
    th_section("SIGKILL during `ds3 mkmodel`: the target holds nothing, or the earlier model whole");
    char d[128], m[160], e[200];
    snprintf(d, sizeof d, "%s/kill9", tmpdir);
    mkdir(d, 0755);
    snprintf(m, sizeof m, "%s/m", d);
    snprintf(e, sizeof e, "%s/err", tmpdir);
    int hits = 0;
    for (int attempt = 0; attempt < 20 && hits < 2; attempt++) {
        rm_rf(m);
        pid_t pid = SPAWN(e, 0, "DS3_MKMODEL_SHARD_MB=1", "mkmodel", "--config", "tiny", "--dtype", "fp8", "-o", m);
        bool sent = false;
        for (;;) {
            if (count_tmp(d) > 0) {
                kill(pid, SIGKILL);
                sent = true;
                break;
            }
            int status;
            if (waitpid(pid, &status, WNOHANG) == pid) break;
        }
        if (!sent) continue;
        int rc = run_wait(pid);
        if (rc != 128 + SIGKILL) continue;   /* it finished first */
        /* it may have published just before the kill: then a whole model */
        bool ok = !lexists(m) || loads(m);
        CHECK(ok, "SIGKILL into a new directory: %s is absent or a whole model", m);
        hits += !lexists(m);
    }
    CHECK(hits > 0, "SIGKILL while building a new model: %d kills left nothing at the target", hits);

    /* over an earlier model (seed 1), killed while building seed 2 */
    rm_rf(m);
    int rc = run_wait(SPAWN(e, 0, "DS3_MKMODEL_SHARD_MB=1", "mkmodel", "--config", "tiny", "--dtype", "fp8", "--seed",
                           "1", "-o", m));
    size_t n1 = 0;
    unsigned char *m1 = rc == 0 ? dir_bytes(m, &n1) : NULL;
    CHECK(m1 != NULL, "the seed-1 model");
    hits = 0;
    int broken = 0;
    for (int attempt = 0; attempt < 20 && hits < 2 && m1; attempt++) {
        /* leftovers of the last kill out of the way, so the watch sees this one's */
        DIR *dd = opendir(d);
        for (struct dirent *x; dd && (x = readdir(dd));) {
            size_t l = strlen(x->d_name);
            if (l > 4 && strcmp(x->d_name + l - 4, ".tmp") == 0) {
                char p[400];
                snprintf(p, sizeof p, "%s/%s", d, x->d_name);
                rm_rf(p);
            }
        }
        if (dd) closedir(dd);
        pid_t pid = SPAWN(e, 0, "DS3_MKMODEL_SHARD_MB=1", "mkmodel", "--config", "tiny", "--dtype", "fp8", "--seed",
                          "2", "-o", m);
        bool sent = false;
        for (;;) {
            if (count_tmp(d) > 0) {
                kill(pid, SIGKILL);
                sent = true;
                break;
            }
            int status;
            if (waitpid(pid, &status, WNOHANG) == pid) break;
        }
        if (!sent) continue;
        if (run_wait(pid) != 128 + SIGKILL) {
            /* seed 2 published: back to seed 1 for the next try */
            rm_rf(m);
            run_wait(SPAWN(e, 0, "DS3_MKMODEL_SHARD_MB=1", "mkmodel", "--config", "tiny", "--dtype", "fp8", "--seed",
                          "1", "-o", m));
            continue;
        }
        size_t n;
        unsigned char *got = dir_bytes(m, &n);
        bool is1 = same_bytes(got, n, m1, n1);
        /* killed after the exchange: a whole seed-2 model (the old one at the
         * temporary's name) is the other allowed outcome */
        if (!is1 && !loads(m)) broken++;
        hits += is1;
        free(got);
        if (!is1) {
            rm_rf(m);
            run_wait(SPAWN(e, 0, "DS3_MKMODEL_SHARD_MB=1", "mkmodel", "--config", "tiny", "--dtype", "fp8", "--seed",
                          "1", "-o", m));
        }
    }
    CHECK(broken == 0 && hits > 0, "SIGKILL while replacing a model: %d kills left the earlier model byte for byte, "
          "%d left neither model whole", hits, broken);
    free(m1);
}

/* ========================================================================== */
/* A checkpoint that changes under a running process                          */
/* ========================================================================== */

static void copy_file(const char *src, const char *dst) {
    size_t n;
    unsigned char *b = th_read_file(src, &n);
    FILE *f = fopen(dst, "wb");
    if (!b || !f || fwrite(b, 1, n, f) != n) { perror(dst); exit(1); }
    fclose(f);
    free(b);
}

/* dst's bytes replaced by src's, in place (same inode; src of the same size). */
static void rewrite_in_place(const char *dst, const char *src) {
    size_t n;
    unsigned char *b = th_read_file(src, &n);
    int fd = open(dst, O_WRONLY);
    if (!b || fd < 0 || write(fd, b, n) != (ssize_t)n) { perror(dst); exit(1); }
    close(fd);
    free(b);
}

/* A copy of model dir src in dst (config.json + model.safetensors), its
 * files dated 100 s back, so that a rewrite now has another mtime even on a
 * file system with a coarse clock. */
static void copy_model(const char *src, const char *dst) {
    char a[600], b[600];
    mkdir(dst, 0755);
    const char *files[] = {"config.json", "model.safetensors"};
    for (int i = 0; i < 2; i++) {
        snprintf(a, sizeof a, "%s/%s", src, files[i]);
        snprintf(b, sizeof b, "%s/%s", dst, files[i]);
        copy_file(a, b);
        struct timespec t[2];
        clock_gettime(CLOCK_REALTIME, &t[0]);
        t[0].tv_sec -= 100;
        t[1] = t[0];
        utimensat(AT_FDCWD, b, t, 0);
    }
}

/* In a child (a broken guard kills it, not the test): load dir, run, apply
 * `change` to its shard, run again, and expect ds3_model_check to fail with
 * `needle`. Exit 0 when everything held. */
static void library_change(const char *what, const char *dir, const char *other, int change, const char *needle) {
    char shard[600];
    snprintf(shard, sizeof shard, "%s/model.safetensors", dir);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        alarm(60);
        ds3_model *m = NULL;
        ds3_state *s = NULL;
        int32_t toks[8] = {1, 2, 3, 4, 5, 6, 7, 8};
        if (ds3_model_load(dir, &m) || ds3_state_new(m, 16, DS3_ATTN_ABSORB, &s) || ds3_forward(s, toks, 8, 0, NULL))
            _exit(10);
        if (ds3_model_check(m) != DS3_OK) _exit(11);   /* nothing changed yet */
        if (change == 0) {
            if (truncate(shard, 4096) != 0) _exit(12);
        } else if (change == 1) {
            rewrite_in_place(shard, other);
        } else {
            char tmp[700];
            snprintf(tmp, sizeof tmp, "%s.new", shard);
            copy_file(other, tmp);
            if (rename(tmp, shard) != 0) _exit(12);
        }
        /* every weight is read again: after a truncation that is a SIGBUS in
         * each vanished page, which must not kill the process */
        if (ds3_forward(s, toks, 8, 8, NULL) != DS3_OK) _exit(13);
        ds3_status st = ds3_model_check(m);
        const char *msg = ds3_last_error();
        bool ok = st == DS3_ERR_IO && strstr(msg, shard) && strstr(msg, needle);
        if (!ok) fprintf(stderr, "%s: %s: %s\n", what, ds3_status_name(st), msg);
        /* a dump is refused */
        char out[700];
        snprintf(out, sizeof out, "%s/dump.safetensors", dir);
        ok = ok && ds3_dump_begin(s, 8) == DS3_OK && ds3_forward(s, toks, 8, 0, NULL) == DS3_OK &&
             ds3_dump_write(s, out, NULL) == DS3_ERR_IO && !lexists(out);
        ds3_state_free(s);
        ds3_model_free(m);
        _exit(ok ? 0 : 14);
    }
    int rc = run_wait(pid);
    CHECK(rc == 0, "%s: the run survived, ds3_model_check and ds3_dump_write refused (child status %d; 135 = "
          "SIGBUS)", what, rc);
}

/* Is path mapped by process pid? (/proc/PID/maps) */
static bool mapped_by(pid_t pid, const char *path) {
    char maps[64], line[1200];
    snprintf(maps, sizeof maps, "/proc/%d/maps", (int)pid);
    FILE *f = fopen(maps, "r");
    bool found = false;
    while (f && !found && fgets(line, sizeof line, f)) found = strstr(line, path) != NULL;
    if (f) fclose(f);
    return found;
}

/* Run the CLI on the model in dir; once it maps the shard, stop it, apply
 * `change`, let it go on. 1: the run ended with exit 1, the message, and no
 * output file; 0: it finished before it could be stopped (no verdict); -1:
 * a broken promise. */
static int cli_change(const char *dir, const char *other, int change, const char *out,
                      const char *const *args) {
    char shard[600], e[200];
    snprintf(shard, sizeof shard, "%s/model.safetensors", dir);
    snprintf(e, sizeof e, "%s/err", tmpdir);
    pid_t pid = spawn(e, 0, NULL, args);
    bool stopped = false;
    for (;;) {
        int status;
        if (mapped_by(pid, shard)) {
            kill(pid, SIGSTOP);
            stopped = true;
            break;
        }
        if (waitpid(pid, &status, WNOHANG) == pid) return 0;
    }
    if (change == 0) {
        if (truncate(shard, 4096) != 0) return -1;
    } else {
        rewrite_in_place(shard, other);
    }
    kill(pid, SIGCONT);
    int rc = run_wait(pid);
    char *msg = read_err(e);
    const char *needle = change == 0 ? "changed size while mapped" : "changed while in use";
    bool ok = stopped && rc == 1 && strstr(msg, "ds3: ") && strstr(msg, shard) && strstr(msg, needle) &&
              (!out || !lexists(out));
    if (!ok) fprintf(stderr, "%s: exit %d: %s", args[0], rc, msg);
    free(msg);
    return ok ? 1 : -1;
}

/* A signal while `ds3 dump` computes (its shard mapped, nothing written
 * yet): it says so, dies of the signal, and leaves no file. */
static void test_signal_computing(void) {
    th_section("SIGINT, SIGTERM, SIGHUP while `ds3 dump` computes: a message, exit 128 + signal, no file");
    char model[256], e[200];
    snprintf(model, sizeof model, "%s/tiny-fp8", models);
    snprintf(e, sizeof e, "%s/err", tmpdir);
    const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
    const char *toks = "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32";
    for (int k = 0; k < 3; k++) {
        char d[128], out[200], shard[400];
        snprintf(d, sizeof d, "%s/sigcomp%d", tmpdir, k);
        mkdir(d, 0755);
        snprintf(out, sizeof out, "%s/out.safetensors", d);
        snprintf(shard, sizeof shard, "%s/model.safetensors", model);
        int verdict = 0, tries = 0;
        for (; tries < 5 && verdict == 0; tries++) {
            unlink(out);
            pid_t pid = SPAWN(e, 0, NULL, "dump", "-m", model, "--tokens", toks, "--decode-from", "8", "-o", out);
            bool sent = false;
            for (;;) {
                /* once it maps the shard (after the handlers went in) */
                if (mapped_by(pid, shard)) {
                    kill(pid, sigs[k]);
                    sent = true;
                    break;
                }
                int status;
                if (waitpid(pid, &status, WNOHANG) == pid) break;
            }
            if (!sent) continue;   /* finished before it could be caught mapping: no verdict */
            int rc = run_wait(pid);
            char *msg = read_err(e);
            bool ok = rc == 128 + sigs[k] && strstr(msg, sig_words[k]) && count_tmp(d) == 0;
            /* the signal may come after the rename: then the file is whole */
            ds3_st_file *f = NULL;
            if (ok && lexists(out)) ok = ds3_st_open(out, &f) == DS3_OK;
            ds3_st_close(f);
            if (!ok) fprintf(stderr, "signal %d: exit %d: %s", sigs[k], rc, msg);
            verdict = ok ? 1 : -1;
            free(msg);
        }
        CHECK(verdict == 1, "dump computing, signal %d: exit 128+%d, '%s', no temporary (%d tries)", sigs[k], sigs[k],
              sig_words[k], tries);
    }
}

static void test_changing_checkpoint(void) {
    th_section("a shard truncated, rewritten in place or replaced while a model runs on it");
    char d1[200], d2[200], other[300], dir[200];
    snprintf(d1, sizeof d1, "%s", micro_model_make(DS3_WEIGHTS_FP8, 0));
    /* the same model with seed 2: the same size, other bytes */
    snprintf(d2, sizeof d2, "%s/seed2", tmpdir);
    char cfg[300];
    snprintf(cfg, sizeof cfg, "%s/micro2.json", tmpdir);
    write_file(cfg, MICRO_CONFIG);
    ds3_mkmodel_opts mo = {.config = cfg, .dtype = DS3_WEIGHTS_FP8, .seed = 2};
    CHECK(ds3_mkmodel(&mo, d2) == DS3_OK, "micro model, seed 2: %s", ds3_last_error());
    snprintf(other, sizeof other, "%s/model.safetensors", d2);

    const char *what[] = {"truncated", "rewritten in place", "replaced by rename"};
    const char *needle[] = {"changed size while mapped", "changed while in use", "another file"};
    for (int c = 0; c < 3; c++) {
        snprintf(dir, sizeof dir, "%s/lib%d", tmpdir, c);
        copy_model(d1, dir);
        library_change(what[c], dir, other, c, needle[c]);
    }
    if (!cli || access(cli, X_OK) != 0) return;

    /* Through the CLI, on tiny-fp8 (13 MB: a run long enough to stop). */
    char tiny[300], tiny2[300], tiny2_shard[400];
    snprintf(tiny, sizeof tiny, "%s/tiny-fp8", models);
    snprintf(tiny2, sizeof tiny2, "%s/tiny-fp8-seed2", tmpdir);
    char e[200];
    snprintf(e, sizeof e, "%s/err", tmpdir);
    int rc = run_wait(SPAWN(e, 0, NULL, "mkmodel", "--config", "tiny", "--dtype", "fp8", "--seed", "2", "-o", tiny2));
    CHECK(rc == 0, "tiny-fp8 with seed 2");
    snprintf(tiny2_shard, sizeof tiny2_shard, "%s/model.safetensors", tiny2);
    const char *toks = "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24";
    for (int c = 0; c < 2; c++) {
        int verdict = 0, tries = 0;
        for (; tries < 5 && verdict == 0; tries++) {
            snprintf(dir, sizeof dir, "%s/cli-run%d-%d", tmpdir, c, tries);
            copy_model(tiny, dir);
            verdict = cli_change(dir, tiny2_shard, c, NULL,
                                 (const char *const[]){"run", "-m", dir, "--tokens", toks, "-n", "40", NULL});
        }
        CHECK(verdict == 1, "ds3 run on a shard %s: exit 1 naming it (%d tries)", what[c], tries);
        verdict = 0;
        for (tries = 0; tries < 5 && verdict == 0; tries++) {
            char out[300];
            snprintf(dir, sizeof dir, "%s/cli-dump%d-%d", tmpdir, c, tries);
            copy_model(tiny, dir);
            snprintf(out, sizeof out, "%s/out.safetensors", dir);
            verdict = cli_change(dir, tiny2_shard, c, out,
                                 (const char *const[]){"dump", "-m", dir, "--tokens", toks, "-o", out, NULL});
        }
        CHECK(verdict == 1, "ds3 dump on a shard %s: exit 1 naming it, no output (%d tries)", what[c], tries);
    }
}

/* ========================================================================== */
/* Smaller: what a path is, a big tokenizer                                    */
/* ========================================================================== */

/* Load dir in a child with an alarm (a FIFO opened for reading would wait for
 * a writer); expect a failure whose message holds needle. */
static void expect_load_fails(const char *what, const char *dir, const char *needle) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        alarm(20);
        ds3_model *m = NULL;
        ds3_status st = ds3_model_load(dir, &m);
        bool ok = st == DS3_ERR_IO && !m && strstr(ds3_last_error(), needle);
        if (!ok) fprintf(stderr, "%s: %s: %s\n", what, ds3_status_name(st), ds3_last_error());
        ds3_model_free(m);
        _exit(ok ? 0 : 1);
    }
    int rc = run_wait(pid);
    CHECK(rc == 0, "%s: refused, naming what it is (status %d; 142 = hung)", what, rc);
}

static void test_path_kinds(void) {
    th_section("shards that are a FIFO, a directory or a device: named as such, not 'does not exist'");
    const char *sharded = micro_model_make(DS3_WEIGHTS_FP8, 1);
    const char *kinds[] = {"a FIFO", "a directory", "a character device"};
    for (int k = 0; k < 3; k++) {
        char dir[200], p[600], q[600];
        snprintf(dir, sizeof dir, "%s/kinds%d", tmpdir, k);
        mkdir(dir, 0755);
        DIR *d = opendir(sharded);
        char victim[600] = "";
        for (struct dirent *e; d && (e = readdir(d));) {
            if (e->d_name[0] == '.') continue;
            snprintf(p, sizeof p, "%s/%s", sharded, e->d_name);
            snprintf(q, sizeof q, "%s/%s", dir, e->d_name);
            if (!victim[0] && strncmp(e->d_name, "model-00002-of-", 15) == 0) {
                snprintf(victim, sizeof victim, "%s", q);
                continue;
            }
            copy_file(p, q);
        }
        if (d) closedir(d);
        CHECK(victim[0] != '\0', "the sharded micro model has a second shard");
        if (!victim[0]) continue;
        if (k == 0) mkfifo(victim, 0644);
        else if (k == 1) mkdir(victim, 0755);
        else CHECK(symlink("/dev/null", victim) == 0, "link to /dev/null");
        char needle[64];
        snprintf(needle, sizeof needle, "is %s, not a regular file", kinds[k]);
        expect_load_fails(kinds[k], dir, needle);
    }
    /* model.safetensors itself a FIFO */
    char dir[200], p[400], q[400];
    const char *single = micro_model_make(DS3_WEIGHTS_FP8, 0);
    snprintf(dir, sizeof dir, "%s/kinds-single", tmpdir);
    mkdir(dir, 0755);
    snprintf(p, sizeof p, "%s/config.json", single);
    snprintf(q, sizeof q, "%s/config.json", dir);
    copy_file(p, q);
    snprintf(q, sizeof q, "%s/model.safetensors", dir);
    mkfifo(q, 0644);
    expect_load_fails("model.safetensors a FIFO", dir, "model.safetensors is a FIFO, not a regular file");
}

static void test_big_tokenizer(void) {
    th_section("a 600 MB tokenizer.json is refused before it is read");
    char p[200];
    snprintf(p, sizeof p, "%s/tokenizer.json", tmpdir);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0 && ftruncate(fd, 600ll << 20) == 0, "a sparse 600 MB file");
    if (fd >= 0) close(fd);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        ds3_tokenizer *t = NULL;
        ds3_status st = ds3_tokenizer_load(p, &t);
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        bool ok = st != DS3_OK && !t && strstr(ds3_last_error(), "larger than 512 MB") && ru.ru_maxrss < 200 * 1024;
        if (!ok) fprintf(stderr, "big tokenizer: %s, peak RSS %ld kB\n", ds3_last_error(), ru.ru_maxrss);
        _exit(ok ? 0 : 1);
    }
    CHECK(run_wait(pid) == 0, "refused, naming the limit, with a peak RSS under 200 MB (it read nothing)");
    unlink(p);
}

/* ========================================================================== */
/* Resource exhaustion: an error within seconds, not a hang                    */
/* ========================================================================== */

static void test_address_space(void) {
#if defined(__SANITIZE_ADDRESS__)
    th_section("ulimit -v: skipped under ASan (its shadow memory needs terabytes of address space)");
    return;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
    th_section("ulimit -v: skipped under ASan (its shadow memory needs terabytes of address space)");
    return;
#endif
#endif
    th_section("ulimit -v: OpenBLAS's buffers and OpenMP's threads are an error, not a hang or libgomp's exit");
    char model[256], e[200], out[300];
    snprintf(model, sizeof model, "%s/tiny-fp8", models);
    snprintf(e, sizeof e, "%s/err", tmpdir);
    snprintf(out, sizeof out, "%s/as.safetensors", tmpdir);
    /* 250 MB: the model and the state fit, two OpenBLAS buffers do not.
     * OpenBLAS 0.3.21 then retried its allocation forever (this hung:
     * measured, killed after 20 s). */
    run_opts.as = 250l << 20;
    run_opts.env[2] = "OMP_NUM_THREADS=2";
    time_t t0 = time(NULL);
    int rc = run_wait(SPAWN(e, 0, NULL, "dump", "-m", model, "--tokens", "1,2,3,4,5,6,7,8,9,10,11,12", "-o", out));
    char *msg = read_err(e);
    if (ds3_have_blas())
        CHECK(rc == 1 && strncmp(msg, "ds3: ", 5) == 0 && strstr(msg, "not enough address space for OpenBLAS"),
              "dump under ulimit -v 250 MB: exit %d (142 = hung until the alarm): %s", rc, msg);
    else
        CHECK(rc == 0 || (rc == 1 && strncmp(msg, "ds3: ", 5) == 0), "dump under ulimit -v 250 MB (no BLAS): exit %d: %s",
              rc, msg);
    fprintf(stderr, "   answered in %lld s: %s", (long long)(time(NULL) - t0), msg);
    CHECK(!lexists(out), "no output");
    free(msg);
    /* 64 threads of 8 MB stacks do not fit in 300 MB: libgomp used to print
     * "libgomp: Thread creation failed" and exit */
    run_opts.as = 300l << 20;
    run_opts.env[2] = "OMP_NUM_THREADS=64";
    rc = run_wait(SPAWN(e, 0, NULL, "dump", "-m", model, "--tokens", "1,2,3,4,5,6,7,8,9,10,11,12", "-o", out));
    msg = read_err(e);
#ifdef _OPENMP
    CHECK(rc == 1 && strncmp(msg, "ds3: cannot start 64 threads", 28) == 0,
          "64 threads under ulimit -v 300 MB: exit %d: %s", rc, msg);
#else
    CHECK(rc == 0 || (rc == 1 && strncmp(msg, "ds3: ", 5) == 0), "no OpenMP: exit %d: %s", rc, msg);
#endif
    fprintf(stderr, "   %s", msg);
    free(msg);
    run_opts.as = 0;
    run_opts.env[2] = NULL;
}

/* ---- a tile buffer that cannot be grown during a pass ---------------------- */

/* VmData of this process in bytes (Linux: /proc/self/status), 0 if unknown. */
static long long vm_data(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long long kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmData: %lld kB", &kb) == 1) break;
    if (f) fclose(f);
    return kb * 1024;
}

/* Tokens of the call that needs a tile buffer: more than fast mode sends to the
 * lane kernel (linear.c, LANES_MAX_T = 32), which needs none. */
enum { OOM_T = 36 };

typedef struct {
    ds3_state *s;
    const int32_t *toks;
    ds3_real *logits, *ref;   /* [8 * V] */
    int V;
    int verdict;              /* 0 pass, 1 the limit does not bind here (no verdict), -1 fail */
    char msg[600];
} oom_case;

/* In a thread of its own, outside the team ds3_state_new gave tile buffers:
 * positions 0..3 (the lane kernel: no tile), then RLIMIT_DATA set just above
 * what the process holds, then positions 4..11 (T = 8: BLAS tiles, whose
 * buffer this thread must now allocate and cannot). */
static void *oom_thread(void *arg) {
    oom_case *c = arg;
#ifdef _OPENMP
    omp_set_num_threads(1);   /* no new threads to create under the limit */
#endif
    if (ds3_forward(c->s, c->toks, 4, 0, NULL) != DS3_OK) {
        snprintf(c->msg, sizeof c->msg, "positions 0..3: %s", ds3_last_error());
        c->verdict = -1;
        return NULL;
    }
    struct rlimit old, rl;
    getrlimit(RLIMIT_DATA, &old);
    rl = old;
    rl.rlim_cur = (rlim_t)(vm_data() + (16 << 10));
    setrlimit(RLIMIT_DATA, &rl);
    /* Take every free block of 64 kB or more that malloc still has (the
     * heap's free chunks: the limit stops new address space, not reuse), so
     * the tile buffer (128 rows x 200 columns of tiny: 100 kB) can come only
     * from new address space, which the limit refuses. If 4096 blocks
     * (256 MB) still come, the limit does not bind here (valgrind, for one,
     * keeps its own books): no verdict. */
    enum { FILL = 4096 };
    void **fill = calloc(FILL, sizeof *fill);
    int nfill = 0;
    while (fill && nfill < FILL && (fill[nfill] = malloc(64 << 10))) nfill++;
    if (!fill || nfill == FILL) {
        for (int i = 0; fill && i < nfill; i++) free(fill[i]);
        free(fill);
        setrlimit(RLIMIT_DATA, &old);
        c->verdict = 1;
        return NULL;
    }
    ds3_status st = ds3_forward(c->s, c->toks + 4, OOM_T, 4, c->logits);
    snprintf(c->msg, sizeof c->msg, "%s: %s", ds3_status_name(st), ds3_last_error());
    for (int i = 0; i < nfill; i++) free(fill[i]);
    free(fill);
    setrlimit(RLIMIT_DATA, &old);
    bool refused = st == DS3_ERR_NOMEM && strstr(c->msg, "tile buffer") && strstr(c->msg, "not computed");
    /* the limit lifted, the same call computes the reference's bits */
    st = ds3_forward(c->s, c->toks + 4, OOM_T, 4, c->logits);
    bool same = st == DS3_OK && memcmp(c->logits, c->ref, (size_t)OOM_T * c->V * sizeof(ds3_real)) == 0;
    if (!same) snprintf(c->msg + strlen(c->msg), sizeof c->msg - strlen(c->msg), "; after: %s, %s",
                        ds3_status_name(st), st ? ds3_last_error() : "logits differ from the reference");
    c->verdict = refused && same ? 0 : -1;
    return NULL;
}

static void test_tile_oom(void) {
    th_section("a BLAS tile buffer that cannot be allocated: ds3_forward fails, no other kernel's bits");
#if defined(__SANITIZE_ADDRESS__)
    fprintf(stderr, "   skipped under ASan (its allocator dies rather than return NULL at a limit)\n");
    return;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
    fprintf(stderr, "   skipped under ASan (its allocator dies rather than return NULL at a limit)\n");
    return;
#endif
#endif
#if !defined(M_MMAP_THRESHOLD)
    fprintf(stderr, "   skipped: needs glibc's mallopt (M_MMAP_THRESHOLD) to route the buffer to mmap\n");
    return;
#else
    if (!ds3_have_blas()) {
        fprintf(stderr, "   skipped: no BLAS in this build (no tile buffers)\n");
        return;
    }
    char model[256];
    snprintf(model, sizeof model, "%s/tiny-fp8", models);
    fflush(NULL);
    int fds[2];
    if (pipe(fds) != 0) return;
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        alarm(60);
        /* Every block of 4 kB or more its own mapping, so a tile buffer is
         * new address space (counted by RLIMIT_DATA), never a reuse of the
         * heap. */
        mallopt(M_MMAP_THRESHOLD, 4096);
        ds3_model *m = NULL;
        ds3_state *r = NULL, *s = NULL;
        int32_t toks[4 + OOM_T];
        for (int i = 0; i < 4 + OOM_T; i++) toks[i] = 1 + i;
        oom_case c = {0};
        if (ds3_model_load(model, &m) || ds3_state_new(m, 4 + OOM_T, DS3_ATTN_ABSORB, &r) ||
            ds3_state_new(m, 4 + OOM_T, DS3_ATTN_ABSORB, &s))
            _exit(10);
        c.V = ds3_model_vocab_size(m);
        c.ref = malloc((size_t)OOM_T * c.V * sizeof(ds3_real));
        c.logits = malloc((size_t)OOM_T * c.V * sizeof(ds3_real));
        /* the reference, in this thread (whose team has its buffers) */
        if (!c.ref || !c.logits || ds3_forward(r, toks, 4, 0, NULL) || ds3_forward(r, toks + 4, OOM_T, 4, c.ref)) _exit(11);
        c.s = s;
        c.toks = toks;
        pthread_t t;
        if (pthread_create(&t, NULL, oom_thread, &c) != 0) _exit(12);
        pthread_join(t, NULL);
        dprintf(fds[1], "%s", c.msg);
        _exit(c.verdict == 0 ? 0 : c.verdict == 1 ? 3 : 1);
    }
    close(fds[1]);
    char msg[700] = "";
    ssize_t n = read(fds[0], msg, sizeof msg - 1);
    msg[n > 0 ? n : 0] = '\0';
    close(fds[0]);
    int rc = run_wait(pid);
    if (rc == 3) {
        fprintf(stderr, "   skipped: RLIMIT_DATA does not bind in this environment (valgrind?)\n");
        return;
    }
    CHECK(rc == 0, "under RLIMIT_DATA: DS3_ERR_NOMEM naming the tile buffer, then the reference's bits once "
          "lifted (child status %d): %s", rc, msg);
    fprintf(stderr, "   %s\n", msg);
#endif
}

int main(void) {
    models = getenv("DS3_MODELS");
    cli = getenv("DS3_CLI");
    if (!models) models = "build/models";
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ds3_robust_XXXXXX");
    if (!mkdtemp(tmpdir)) { perror("mkdtemp"); return 1; }
    /* every CLI child: see spawn() */
    run_opts.xfsz_kills = true;
    run_opts.alarm_s = 120;
    run_opts.env[0] = "OMP_WAIT_POLICY=passive";

    test_temporaries();
    test_dir_temporaries();
    test_library_signals();
    test_changing_checkpoint();
    test_path_kinds();
    test_big_tokenizer();
    test_tile_oom();
    if (cli && access(cli, X_OK) == 0) {
        test_concurrent_dumps();
        test_concurrent_mkmodel();
        test_file_size_limit();
        test_cli_signals();
        test_signal_computing();
        test_mkmodel_sigkill();
        test_address_space();
    } else {
        fprintf(stderr, "-- no CLI at DS3_CLI: skipping the CLI cases\n");
    }
    rm_rf(tmpdir);
    return th_finish();
}

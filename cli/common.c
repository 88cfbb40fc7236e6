/*
 * common.c — the error exits and option scanning every ds3 command shares
 * (cli/ds3.c, cli/text.c, cli/compare.c); see common.h.
 */
#include "common.h"

#include "ds3.h"
#include "io/io.h"   /* ds3_outfile_signals */

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

const char *cli_command = NULL;

/* Where errors go: stderr, or in an MPI job's rank > 0 (whose stderr is
 * /dev/null) the stderr it was started with. */
static FILE *err_out;

static void vmsg(const char *fmt, va_list ap) {
    FILE *f = err_out ? err_out : stderr;
    if (ds3_dist_size() > 1) fprintf(f, "ds3: rank %d of %d: ", ds3_dist_rank(), ds3_dist_size());
    else fprintf(f, "ds3: ");
    vfprintf(f, fmt, ap);
    fprintf(f, "\n");
    fflush(f);
}

void cli_die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vmsg(fmt, ap);
    va_end(ap);
    /* In an MPI job the others may be waiting for this process in a
     * collective: end them all now (rank 0's partial output file, a
     * temporary, is removed by its SIGTERM handler: src/io/outfile.c). */
    ds3_dist_abort(1);
    exit(1);
}

void cli_usage(const char *fmt, ...) {
    /* A bad command line is bad on every rank: rank 0 says so. */
    if (ds3_dist_rank() == 0) {
        va_list ap;
        va_start(ap, fmt);
        vmsg(fmt, ap);
        va_end(ap);
        if (cli_command) fprintf(stderr, "ds3: see 'ds3 %s --help'\n", cli_command);
        else fprintf(stderr, "ds3: see 'ds3 --help'\n");
    }
    exit(2);
}

static void dist_end(void) { ds3_dist_finalize(); }

void cli_dist_start(void) {
    if (ds3_dist_init() != DS3_OK) cli_die("%s", ds3_last_error());
    atexit(dist_end);   /* MPI_Finalize at exit (a no-op without MPI) */
    if (ds3_dist_rank() == 0) return;
    /* rank > 0: silent, except for its own error */
    int fd = dup(STDERR_FILENO);
    if (fd >= 0) err_out = fdopen(fd, "w");
    if (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "w", stderr))
        cli_die("cannot redirect rank %d's output to /dev/null", ds3_dist_rank());
}

const char *cli_opt_value(int argc, char **argv, int *i, const char *shrt, const char *lng) {
    const char *a = argv[*i];
    size_t ll = lng ? strlen(lng) : 0;
    if (lng && strncmp(a, lng, ll) == 0 && a[ll] == '=') return a + ll + 1;
    /* "-n2" and "-n=2", as getopt and llama.cpp take them (short names are one letter) */
    if (shrt && shrt[2] == '\0' && a[0] == '-' && a[1] == shrt[1] && a[2] != '\0')
        return a[2] == '=' ? a + 3 : a + 2;
    if ((shrt && strcmp(a, shrt) == 0) || (lng && strcmp(a, lng) == 0)) {
        if (*i + 1 >= argc) cli_usage("option '%s' needs a value", a);
        return argv[++*i];
    }
    return NULL;
}

/* Flush stdout at exit; a failed write (a full disk, /dev/full, a closed pipe
 * reader) turns the exit status into 1, whatever the command returned. */
static bool stdout_reported;   /* cli_flush_stdout already said so */

static void check_stdout(void) {
    errno = 0;
    if (stdout_reported || (fflush(stdout) == 0 && !ferror(stdout))) return;
    int e = errno;
    fprintf(stderr, "ds3: writing stdout: %s\n", e ? strerror(e) : "write error");
    _exit(1);
}

void cli_check_stdout_at_exit(void) { atexit(check_stdout); }

void cli_flush_stdout(void) {
    errno = 0;
    if (fflush(stdout) == 0 && !ferror(stdout)) return;
    int e = errno;
    stdout_reported = true;
    cli_die("writing stdout: %s", e ? strerror(e) : "write error");
}

bool cli_is_help(const char *a) { return strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0; }

/* An integer in [lo, hi], the whole string, decimal. */
long cli_parse_long(const char *opt, const char *s, long lo, long hi) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    /* strtol skips leading blanks and accepts "+": neither is a number here */
    if (end == s || *end || !(s[0] == '-' || (s[0] >= '0' && s[0] <= '9')))
        cli_usage("%s: '%s' is not an integer", opt, s);
    if (errno == ERANGE || v < lo || v > hi) cli_usage("%s: %s is out of range (%ld..%ld)", opt, s, lo, hi);
    return v;
}

/* A seed: any unsigned 64-bit decimal. strtoull would quietly wrap "-1". */
uint64_t cli_parse_u64(const char *opt, const char *s) {
    char *end;
    if (!(s[0] >= '0' && s[0] <= '9')) cli_usage("%s: '%s' is not a non-negative integer", opt, s);
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end) cli_usage("%s: '%s' is not a non-negative integer", opt, s);
    if (errno == ERANGE) cli_usage("%s: %s is too large (at most %llu)", opt, s, (unsigned long long)UINT64_MAX);
    return (uint64_t)v;
}

/* A finite real number, the whole string. */
double cli_parse_real(const char *opt, const char *s) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || s[0] == ' ' || s[0] == '\t') cli_usage("%s: '%s' is not a number", opt, s);
    /* "nan", "inf" and overflow to ±HUGE_VAL; an underflow to 0 is harmless */
    if (!isfinite(v)) cli_usage("%s: '%s' is not a finite number", opt, s);
    return v;
}

char *cli_join_args(int argc, char **argv) {
    size_t len = 1;
    for (int i = 0; i < argc; i++) len += strlen(argv[i]) + 1;
    char *s = malloc(len);
    if (!s) cli_die("out of memory");
    s[0] = '\0';
    for (int i = 0; i < argc; i++) {
        if (i) strcat(s, " ");
        strcat(s, argv[i]);
    }
    return s;
}

/* ---- progress on a terminal ---------------------------------------------------- */

/* One line on stderr, rewritten in place: what, how far, the time left at the
 * rate so far. Shown only once a piece of work has run a second (decode steps
 * never show), at most 4 times a second, and cleared when the work is done. */
static struct {
    char what[96];
    double t0, last;
    bool on, shown;
} prog;

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void fmt_left(char *buf, size_t n, double s) {
    if (s < 60) snprintf(buf, n, "%.0fs", s);
    else if (s < 3600) snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)s % 60);
    else snprintf(buf, n, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
}

void cli_progress_report(const char *what, double done, double total) {
    if (!prog.on) return;
    double now = mono_s();
    if (strncmp(prog.what, what, sizeof prog.what - 1) != 0 || done <= 0) {
        if (prog.shown) fprintf(stderr, "\r\033[K");
        snprintf(prog.what, sizeof prog.what, "%s", what);
        prog.t0 = now;
        prog.shown = false;
        prog.last = 0;
    }
    if (done >= total) {
        if (prog.shown) fprintf(stderr, "\r\033[K");
        prog.shown = false;
        prog.what[0] = '\0';
        return;
    }
    if (now - prog.t0 < 1.0 || now - prog.last < 0.25) return;
    prog.last = now;
    prog.shown = true;
    char left[32] = "?";
    if (done > 0) fmt_left(left, sizeof left, (now - prog.t0) * (total - done) / done);
    if (strcmp(what, "mkmodel") == 0)
        fprintf(stderr, "\r%s: %.2f of %.2f GB (%.0f%%), %s left\033[K", what, done / 1e9, total / 1e9,
                100 * done / total, left);
    else fprintf(stderr, "\r%s: %.0f%%, %s left\033[K", what, 100 * done / total, left);
    fflush(stderr);
}

static void progress_hook(void *user, const char *what, double done, double total) {
    (void)user;
    cli_progress_report(what, done, total);
}

void cli_progress_start(void) {
    if (ds3_dist_rank() != 0 || !isatty(STDERR_FILENO)) return;
    prog.on = true;
    ds3_set_progress(progress_hook, NULL);
}

void cli_signals_start(void) { ds3_outfile_signals(); }

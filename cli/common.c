/*
 * common.c — the error exits and option scanning every ds3 command shares
 * (cli/ds3.c, cli/text.c, cli/compare.c); see common.h.
 */
#include "common.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *cli_command = NULL;

static void vmsg(const char *fmt, va_list ap) {
    fprintf(stderr, "ds3: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
}

void cli_die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vmsg(fmt, ap);
    va_end(ap);
    exit(1);
}

void cli_usage(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vmsg(fmt, ap);
    va_end(ap);
    if (cli_command) fprintf(stderr, "ds3: see 'ds3 %s --help'\n", cli_command);
    else fprintf(stderr, "ds3: see 'ds3 --help'\n");
    exit(2);
}

const char *cli_opt_value(int argc, char **argv, int *i, const char *shrt, const char *lng) {
    const char *a = argv[*i];
    size_t ll = lng ? strlen(lng) : 0;
    if (lng && strncmp(a, lng, ll) == 0 && a[ll] == '=') return a + ll + 1;
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

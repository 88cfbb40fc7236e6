/*
 * common.h — what every ds3 command shares (cli/common.c): the error exits,
 * which print "ds3: message" on stderr, and option scanning.
 *
 *   exit 1  cli_die:   a runtime failure (the command line was well formed)
 *   exit 2  cli_usage: a bad command line; adds "ds3: see 'ds3 CMD --help'"
 *
 * Unlike cli/args.c (linked alone into a fuzz target), these exit.
 */
#ifndef DS3_CLI_COMMON_H
#define DS3_CLI_COMMON_H

#include <stdbool.h>
#include <stdint.h>

/* Contraction off in the CLI too, for clang without -ffp-contract=off (another
 * build system; src/error.h's pragma reaches only the library's files). Its
 * arithmetic is timing and printing, no dumped bit, but with this the bit
 * matrix's object scan (docs/PORTABILITY.md) finds no fused instruction in any
 * object, cli/ included. Every cli/ file with floating-point arithmetic
 * includes this one (cli/args.c has none). */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

/* The command being run ("run", "compare", …), named in cli_usage's pointer
 * to its help; NULL (the default) points at 'ds3 --help'. */
extern const char *cli_command;

void cli_die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
/* Under mpirun (a `make MPI=1` build; docs/ARCHITECTURE.md §10): join the job.
 * Rank 0 prints and writes; the others' stdout and stderr go to /dev/null,
 * except their own error. A runtime error on any rank (cli_die) prints
 * "ds3: rank R of N: message" and ends the whole job (exit 1 everywhere);
 * a usage error is printed by rank 0 only (every rank sees the same one). */
void cli_dist_start(void);
/* When stderr is a terminal (rank 0 only): show the library's progress of long
 * work (mkmodel's bytes, a forward call's tokens and layers) with the time
 * left, on one line that is cleared when the work is done. Nothing otherwise. */
void cli_progress_start(void);
/* One report to that line (cmd_dump's token-by-token decode uses it too);
 * nothing unless cli_progress_start found a terminal. */
void cli_progress_report(const char *what, double done, double total);
void cli_usage(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
/* For a command that writes files (dump, mkmodel): from now on SIGINT, SIGTERM
 * and SIGHUP say so on stderr, remove its temporaries and kill it as they would
 * have (src/io/outfile.c), while it computes as well as while it writes. */
void cli_signals_start(void);

/*
 * Does argv[*i] name this option: `shrt` ("-m", or NULL) or `lng` ("--model",
 * or NULL) followed by its value, or "--model=V", "-mV", "-m=V"? If so, return the value and
 * advance *i past it; NULL if not. A value may start with '-'
 * ("--bias-shift -4"). A missing value is a usage error.
 */
const char *cli_opt_value(int argc, char **argv, int *i, const char *shrt, const char *lng);

/* At exit, flush stdout: if any write to it failed, print "ds3: writing
 * stdout: REASON" and exit 1 instead (every command; main calls it first). */
void cli_check_stdout_at_exit(void);
/* Flush stdout now; if a write to it has failed, cli_die (a streaming command
 * stops at once instead of computing output nobody can read). */
void cli_flush_stdout(void);

/* Strict option values (usage error, naming opt, on anything else): an
 * integer in [lo, hi], the whole string, decimal; any unsigned 64-bit decimal
 * (a seed: "-1" is refused, not wrapped); a finite real number. */
long cli_parse_long(const char *opt, const char *s, long lo, long hi);
uint64_t cli_parse_u64(const char *opt, const char *s);
double cli_parse_real(const char *opt, const char *s);

/* The command line as one malloc'd string (argv joined by spaces), for a
 * dump's "command" metadata. */
char *cli_join_args(int argc, char **argv);

/* "--help" or "-h". */
bool cli_is_help(const char *a);

#endif /* DS3_CLI_COMMON_H */

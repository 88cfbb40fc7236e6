/*
 * sampling.h — what `ds3 run` and `ds3 chat` share (cli/sampling.c): the
 * sampling and thread options, a checkpoint's generation_config.json as their
 * defaults, the sampler made from them, and the start-up line on stderr.
 */
#ifndef DS3_CLI_SAMPLING_H
#define DS3_CLI_SAMPLING_H

#include "ds3.h"

#include <stdbool.h>
#include <stdint.h>

/* Which options the command line set (generation_config.json fills the rest). */
enum {
    CLI_SO_TEMP = 1u << 0,
    CLI_SO_TOP_P = 1u << 1,
    CLI_SO_TOP_K = 1u << 2,
    CLI_SO_MIN_P = 1u << 3,
    CLI_SO_PENALTY = 1u << 4,
};

typedef struct {
    double temp, top_p, min_p, penalty;
    long top_k, last_n;   /* last_n: the penalty's window, -1 all */
    long threads;         /* 0: OpenMP's default */
    uint64_t seed;
    unsigned given;       /* CLI_SO_* */
    const char *from_config;  /* "temperature, top_p" taken from generation_config.json, or NULL */
} cli_sampling;

/* temp 0 (greedy), top-p 1, top-k 0, min-p 0, penalty 1 over the last 64, seed 0. */
void cli_sampling_defaults(cli_sampling *so);

/* If argv[*i] is a sampling or thread option (--temp, --top-p, --top-k,
 * --min-p, --repeat-penalty, --repeat-last-n, -s/--seed, -t/--threads),
 * consume it (and its value) into so and return true. */
bool cli_sampling_opt(int argc, char **argv, int *i, cli_sampling *so);

/* DIR/generation_config.json, when present: its temperature, top_p, top_k,
 * min_p, repetition_penalty (do_sample false: greedy) for each option the
 * command line did not give. A file that is not JSON is an error (exit 1). */
void cli_sampling_from_model(cli_sampling *so, const char *model_dir);

/* The sampler (exit 1 on failure). */
ds3_sampler *cli_sampler_new(const cli_sampling *so);

/* Apply -t (before the model is loaded). */
void cli_threads(const cli_sampling *so);
/* Unless quiet, print on stderr one line with the build and the threads
 * ("system: ..."), and one with the sampling when generation_config.json set
 * part of it: once the model is loaded, so that a failed start prints only
 * its error. */
void cli_banner(const cli_sampling *so, bool quiet);

/* "sampling: greedy" / "sampling: temp 0.7, top-p 0.9, ..." into buf. */
void cli_sampling_describe(const cli_sampling *so, char *buf, size_t size);

#define CLI_SAMPLING_HELP                                                                    \
    "  --temp T            temperature; 0 = greedy (default 0, or the checkpoint's\n"        \
    "                      generation_config.json)\n"                                         \
    "  --top-p P           nucleus mass in (0, 1] (default 1)\n"                              \
    "  --top-k K           keep the K most likely tokens, 0 = all (default 0)\n"              \
    "  --min-p P           keep tokens with p >= P * p_max, in [0, 1] (default 0)\n"          \
    "  --repeat-penalty R  divide (multiply, if negative) the logits of recent tokens by\n"   \
    "                      R > 0; 1 = off (default 1; also with greedy)\n"                    \
    "  --repeat-last-n N   the tokens it looks back at, prompt included; -1 = all,\n"         \
    "                      0 = off (default 64)\n"                                            \
    "  -s, --seed S        sampling seed, unsigned 64-bit (default 0)\n"                      \
    "  -t, --threads N     threads (default: the cores, or OMP_NUM_THREADS); the results\n"   \
    "                      are the same bits for any count\n"

#endif /* DS3_CLI_SAMPLING_H */

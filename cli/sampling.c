/*
 * sampling.c — the sampling and thread options of `ds3 run` and `ds3 chat`,
 * a checkpoint's generation_config.json as their defaults, and the start-up
 * line; see sampling.h. The sampler itself is the library's
 * (src/generate/sample.c documents every step exactly).
 */
#include "sampling.h"
#include "common.h"
#include "text.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cli_sampling_defaults(cli_sampling *so) {
    *so = (cli_sampling){.temp = 0.0, .top_p = 1.0, .min_p = 0.0, .penalty = 1.0, .top_k = 0, .last_n = 64};
}

bool cli_sampling_opt(int argc, char **argv, int *i, cli_sampling *so) {
    const char *v;
    if ((v = cli_opt_value(argc, argv, i, NULL, "--temp"))) {
        so->temp = cli_parse_real("--temp", v);
        if (so->temp < 0) cli_usage("--temp: %s is negative (0 means greedy)", v);
        so->given |= CLI_SO_TEMP;
    } else if ((v = cli_opt_value(argc, argv, i, NULL, "--top-p"))) {
        so->top_p = cli_parse_real("--top-p", v);
        if (!(so->top_p > 0 && so->top_p <= 1)) cli_usage("--top-p: %s is outside (0, 1]", v);
        so->given |= CLI_SO_TOP_P;
    } else if ((v = cli_opt_value(argc, argv, i, NULL, "--top-k"))) {
        so->top_k = cli_parse_long("--top-k", v, 0, 1L << 30);
        so->given |= CLI_SO_TOP_K;
    } else if ((v = cli_opt_value(argc, argv, i, NULL, "--min-p"))) {
        so->min_p = cli_parse_real("--min-p", v);
        if (!(so->min_p >= 0 && so->min_p <= 1)) cli_usage("--min-p: %s is outside [0, 1]", v);
        so->given |= CLI_SO_MIN_P;
    } else if ((v = cli_opt_value(argc, argv, i, NULL, "--repeat-penalty"))) {
        so->penalty = cli_parse_real("--repeat-penalty", v);
        if (!(so->penalty > 0)) cli_usage("--repeat-penalty: %s is not positive (1 = off)", v);
        so->given |= CLI_SO_PENALTY;
    } else if ((v = cli_opt_value(argc, argv, i, NULL, "--repeat-last-n"))) {
        so->last_n = cli_parse_long("--repeat-last-n", v, -1, 1L << 30);
    } else if ((v = cli_opt_value(argc, argv, i, "-s", "--seed"))) {
        so->seed = cli_parse_u64("--seed", v);
    } else if ((v = cli_opt_value(argc, argv, i, "-t", "--threads"))) {
        so->threads = cli_parse_long("--threads", v, 1, 4096);
    } else
        return false;
    return true;
}

/* A number field of generation_config.json, if present; a field of another
 * type is an error (exit 1) naming the file. */
static bool num_field(const cJSON *root, const char *key, const char *path, double *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) return false;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        cli_die("%s: field '%s' is not a number", path, key);
    *out = v->valuedouble;
    return true;
}

/* Append a field name to the list of what came from the file. */
static void note(char *buf, size_t size, const char *key) {
    size_t n = strlen(buf);
    snprintf(buf + n, size - n, "%s%s", n ? ", " : "", key);
}

void cli_sampling_from_model(cli_sampling *so, const char *model_dir) {
    static char used[160];
    char path[4096];
    snprintf(path, sizeof path, "%s/generation_config.json", model_dir);
    size_t len = 0;
    char *text = cli_read_file(path, &len);
    if (!text) {
        if (errno == ENOENT || errno == ENOTDIR) return;
        cli_die("%s: %s", path, strerror(errno));
    }
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cJSON_IsObject(root)) cli_die("%s: not a JSON object", path);
    used[0] = '\0';
    double v;
    const cJSON *ds = cJSON_GetObjectItemCaseSensitive(root, "do_sample");
    bool greedy = cJSON_IsBool(ds) && cJSON_IsFalse(ds);
    if (!(so->given & CLI_SO_TEMP)) {
        if (greedy) {
            so->temp = 0;
            note(used, sizeof used, "do_sample");
        } else if (num_field(root, "temperature", path, &v)) {
            if (v < 0) cli_die("%s: temperature %g is negative", path, v);
            so->temp = v;
            note(used, sizeof used, "temperature");
        }
    }
    if (!(so->given & CLI_SO_TOP_P) && num_field(root, "top_p", path, &v)) {
        if (!(v > 0 && v <= 1)) cli_die("%s: top_p %g is outside (0, 1]", path, v);
        so->top_p = v;
        note(used, sizeof used, "top_p");
    }
    if (!(so->given & CLI_SO_TOP_K) && num_field(root, "top_k", path, &v)) {
        if (!(v >= 0 && v <= (double)(1L << 30)) || v != floor(v)) cli_die("%s: top_k %g is not a count", path, v);
        so->top_k = (long)v;
        note(used, sizeof used, "top_k");
    }
    if (!(so->given & CLI_SO_MIN_P) && num_field(root, "min_p", path, &v)) {
        if (!(v >= 0 && v <= 1)) cli_die("%s: min_p %g is outside [0, 1]", path, v);
        so->min_p = v;
        note(used, sizeof used, "min_p");
    }
    if (!(so->given & CLI_SO_PENALTY) && num_field(root, "repetition_penalty", path, &v)) {
        if (!(v > 0)) cli_die("%s: repetition_penalty %g is not positive", path, v);
        so->penalty = v;
        note(used, sizeof used, "repetition_penalty");
    }
    cJSON_Delete(root);
    so->from_config = used[0] ? used : NULL;
}

ds3_sampler *cli_sampler_new(const cli_sampling *so) {
    ds3_sampler *smp = NULL;
    ds3_status st = ds3_sampler_new((float)so->temp, (float)so->top_p, so->seed, &smp);
    if (st == DS3_OK) st = ds3_sampler_set_filters(smp, (int)so->top_k, (float)so->min_p);
    if (st == DS3_OK) st = ds3_sampler_set_repeat_penalty(smp, (float)so->penalty, (int)so->last_n);
    if (st != DS3_OK) cli_die("sampler: %s", ds3_last_error());
    return smp;
}

void cli_sampling_describe(const cli_sampling *so, char *buf, size_t size) {
    size_t n = 0;
    if (so->temp <= 0) n = (size_t)snprintf(buf, size, "sampling: greedy");
    else {
        n = (size_t)snprintf(buf, size, "sampling: temp %g, top-p %g", so->temp, so->top_p);
        if (so->top_k && n < size) n += (size_t)snprintf(buf + n, size - n, ", top-k %ld", so->top_k);
        if (so->min_p > 0 && n < size) n += (size_t)snprintf(buf + n, size - n, ", min-p %g", so->min_p);
        if (n < size) n += (size_t)snprintf(buf + n, size - n, ", seed %llu", (unsigned long long)so->seed);
    }
    if (so->penalty != 1 && so->last_n != 0 && n < size)
        n += (size_t)snprintf(buf + n, size - n, ", repeat-penalty %g over the last %ld", so->penalty, so->last_n);
    if (so->from_config && n < size)
        snprintf(buf + n, size - n, " (%s from generation_config.json; options override)", so->from_config);
}

void cli_threads(const cli_sampling *so) {
    if (so->threads && ds3_set_threads((int)so->threads) != DS3_OK) cli_die("--threads: %s", ds3_last_error());
}

void cli_banner(const cli_sampling *so, bool quiet) {
    if (quiet) return;
    ds3_build_info b;
    ds3_get_build_info(&b);
    fprintf(stderr, "system: %s build, %d thread%s, OpenMP %s, BLAS %s, lane kernel %s%s%s\n", b.precision,
            ds3_threads(), ds3_threads() == 1 ? "" : "s", b.openmp ? "on" : "off", b.blas, b.simd,
            b.amx ? ", AMX for BF16 and FP8" : "", b.avx512 ? ", AVX-512 decode" : "");
    if (so->from_config) {
        char line[512];
        cli_sampling_describe(so, line, sizeof line);
        fprintf(stderr, "%s\n", line);
    }
}

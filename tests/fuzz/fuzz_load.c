/*
 * fuzz_load.c — libFuzzer target for a whole checkpoint file: the input is
 * model.safetensors of the micro model (micro_model.h), loaded against its
 * config.json and, when it loads, run for three tokens.
 *
 * This goes past the container (fuzz_safetensors.c) into what the loader
 * binds — names, shapes, dtypes, F8 block scales and their NaN/Inf check —
 * and into the forward pass on weights that are arbitrary bytes: NaN, Inf and
 * subnormal weights must give NaN or Inf numbers, never a crash or an
 * out-of-range expert index (the router must cope with NaN scores).
 *
 * FUZZ_SEED_OUT=path writes the valid file to path at startup (the seed).
 */
#include "micro_model.h"

static const char *dir;
static char st_path[300];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    dir = micro_model_make(DS3_WEIGHTS_FP8, 0);
    snprintf(st_path, sizeof st_path, "%s/model.safetensors", dir);
    const char *seed = getenv("FUZZ_SEED_OUT");
    if (seed) {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "cp '%s' '%s'", st_path, seed);
        if (system(cmd) != 0) abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* Replace, not rewrite in place: a mapping of the old file may not see
     * a truncation of the same inode. */
    char tmp[320];
    snprintf(tmp, sizeof tmp, "%s.new", st_path);
    if (micro_write(tmp, data, size) != 0 || rename(tmp, st_path) != 0) abort();
    ds3_model *m = NULL;
    if (ds3_model_load(dir, &m) != DS3_OK) {
        if (m || !ds3_last_error()[0]) abort();
        return 0;
    }
    ds3_state *s = NULL;
    if (ds3_state_new(m, 4, DS3_ATTN_ABSORB, &s) == DS3_OK) {
        const int32_t tok[3] = {1, 15, 0};
        ds3_real logits[3 * 16];
        if (ds3_forward(s, tok, 2, 0, logits) != DS3_OK) abort();
        if (ds3_forward(s, tok + 2, 1, 2, logits) != DS3_OK) abort();
        ds3_state_free(s);
    }
    ds3_model_free(m);
    return 0;
}

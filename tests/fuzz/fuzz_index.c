/*
 * fuzz_index.c — libFuzzer target for model.safetensors.index.json: the input
 * is the index file of a sharded checkpoint, loaded by ds3_model_load
 * (src/model/loader.c) together with real shards.
 *
 * Setup (once): the micro model (micro_model.h) written in shards of ~1 kB,
 * so a valid index names several files. Each input replaces the index and
 * the directory is loaded: shards named twice, missing shards, names with
 * "/" or "..", a tensor in two shards, non-string entries and so on must all
 * be errors with a message, never a crash; a load that succeeds is freed (the
 * leak checker sees every path).
 *
 * FUZZ_SEED_OUT=path writes the valid index to path at startup: how the seed
 * in tests/fuzz/corpus/index/ was made.
 */
#include "micro_model.h"

static const char *dir;
static char index_path[300];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    dir = micro_model_make(DS3_WEIGHTS_FP8, 1);
    snprintf(index_path, sizeof index_path, "%s/model.safetensors.index.json", dir);
    const char *seed = getenv("FUZZ_SEED_OUT");
    if (seed) {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "cp '%s' '%s'", index_path, seed);
        if (system(cmd) != 0) abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (micro_write(index_path, data, size) != 0) abort();
    ds3_model *m = (ds3_model *)1;
    ds3_status st = ds3_model_load(dir, &m);
    if (st == DS3_OK) {
        if (!m || m->n_files < 1) abort();
        ds3_model_free(m);
    } else if (m != NULL || !ds3_last_error()[0]) {
        fprintf(stderr, "fuzz_index: failed load without a message or with a model\n");
        abort();
    }
    return 0;
}

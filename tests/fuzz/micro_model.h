/*
 * micro_model.h — a checkpoint small enough to load thousands of times a
 * second, for the fuzz targets that drive the whole loader (fuzz_index.c,
 * fuzz_load.c). Header-only; include it once.
 *
 * The config keeps every mechanism the loader binds (q-LoRA, a dense layer and
 * an MoE layer with noaux_tc bias, a shared expert, groups, YaRN, one MTP
 * layer) at widths of 2..16, so a model is ~100 tensors and a few kB.
 * micro_model_make() writes it with ds3_mkmodel into a fresh directory under
 * /dev/shm (else $TMPDIR or /tmp), removed at exit.
 */
#ifndef DS3_FUZZ_MICRO_MODEL_H
#define DS3_FUZZ_MICRO_MODEL_H

#include "generate/generate.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char MICRO_CONFIG[] =
    "{\"model_type\": \"deepseek_v3\", \"vocab_size\": 16, \"hidden_size\": 8,\n"
    " \"intermediate_size\": 8, \"moe_intermediate_size\": 4, \"num_hidden_layers\": 2,\n"
    " \"first_k_dense_replace\": 1, \"moe_layer_freq\": 1, \"num_attention_heads\": 2,\n"
    " \"q_lora_rank\": 4, \"kv_lora_rank\": 4, \"qk_nope_head_dim\": 4, \"qk_rope_head_dim\": 2,\n"
    " \"v_head_dim\": 4, \"n_routed_experts\": 4, \"num_experts_per_tok\": 2,\n"
    " \"n_shared_experts\": 1, \"n_group\": 2, \"topk_group\": 1, \"scoring_func\": \"sigmoid\",\n"
    " \"topk_method\": \"noaux_tc\", \"norm_topk_prob\": true, \"routed_scaling_factor\": 2.5,\n"
    " \"rope_theta\": 10000, \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4,\n"
    " \"original_max_position_embeddings\": 8, \"beta_fast\": 32, \"beta_slow\": 1,\n"
    " \"mscale\": 1.0, \"mscale_all_dim\": 1.0}, \"max_position_embeddings\": 32,\n"
    " \"rms_norm_eps\": 1e-06, \"num_nextn_predict_layers\": 1, \"tie_word_embeddings\": false}\n";

static char micro_dirs[4][128];
static int micro_ndirs;

static void micro_rm_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        char p[512];
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
                unlink(p);
            }
        closedir(d);
    }
    rmdir(dir);
}

static void micro_cleanup(void) {
    for (int i = 0; i < micro_ndirs; i++) micro_rm_dir(micro_dirs[i]);
}

/* Write path with len bytes; 0 on success. */
static int micro_write(const char *path, const void *p, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    int bad = fwrite(p, 1, len, f) != len;
    bad |= fclose(f) != 0;
    return bad ? -1 : 0;
}

/* A fresh directory holding the micro model in `dtype`, in shards of about
 * shard_kb kB (0: one file). Returns the directory (static storage); aborts
 * if it cannot be made. */
static const char *micro_model_make(ds3_weight_dtype dtype, double shard_kb) {
    if (micro_ndirs == (int)(sizeof micro_dirs / sizeof micro_dirs[0])) abort();
    char *dir = micro_dirs[micro_ndirs];
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(dir, sizeof micro_dirs[0], "%s/ds3-fuzz-XXXXXX", base);
    if (!mkdtemp(dir)) { perror("mkdtemp"); abort(); }
    if (micro_ndirs++ == 0) atexit(micro_cleanup);

    char cfg[256];
    /* beside the directory: ds3_mkmodel replaces it whole, and refuses one
     * holding a file that is not a model's */
    snprintf(cfg, sizeof cfg, "%s.micro-config.json", dir);
    if (micro_write(cfg, MICRO_CONFIG, strlen(MICRO_CONFIG)) != 0) abort();
    if (shard_kb > 0) {
        char mb[32];
        snprintf(mb, sizeof mb, "%g", shard_kb / 1024.0);
        setenv("DS3_MKMODEL_SHARD_MB", mb, 1);
    }
    ds3_mkmodel_opts o = {.config = cfg, .dtype = dtype, .seed = 1};
    ds3_status st = ds3_mkmodel(&o, dir);
    unsetenv("DS3_MKMODEL_SHARD_MB");
    unlink(cfg);
    if (st != DS3_OK) {
        fprintf(stderr, "micro_model_make: %s\n", ds3_last_error());
        abort();
    }
    return dir;
}

#endif /* DS3_FUZZ_MICRO_MODEL_H */

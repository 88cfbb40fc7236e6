/*
 * replay.c — `ds3 replay -m DIR BUILD`: a build's dump checked one layer at a
 * time, each layer recomputed by ds3 from the build's own inputs
 * (src/model/replay.c), then compared tensor by tensor with the build's values
 * (src/check/compare.c, the replay profiles). docs/COMPARING.md, "Replay".
 *
 * Exit status: 0 every tensor within the bounds and every layer checked;
 * 1 a tensor outside, a layer not checked (an input missing from BUILD), a
 * file that cannot be read or written; 2 usage error.
 */
#include "model/model.h"
#include "args.h"
#include "common.h"
#include "compare.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const help_replay =
    "usage: ds3 replay -m DIR BUILD.safetensors [--tokens IDS] [--profile fp32|bf16|fp8]\n"
    "                  [--atol A --rtol R] [--routing build|own] [-o OUT.safetensors]\n"
    "                  [--json] [--kernels K] [--emulate SPEC] [--attn absorb|naive]\n"
    "\n"
    "Check a build one layer at a time: ds3 recomputes every layer from the build's\n"
    "own values in BUILD (a dump in the names of docs/DUMP_FORMAT.md: ds3 dump,\n"
    "tools/dump_torch.py, any engine) and compares each tensor with the build's, so\n"
    "errors do not accumulate and every row is compared. The attention sublayer of\n"
    "layer N runs on the build's layer input (embed, or layers.{N-1}.out), the FFN\n"
    "sublayer on that input plus the build's layers.N.attn.out; norm from the build's\n"
    "last layers.*.out, logits from the build's norm; mtp.K.* from the build's inputs\n"
    "of each depth.\n"
    "\n"
    "  -m, --model DIR   the checkpoint the build ran\n"
    "  --tokens IDS      the token ids (default: BUILD's metadata 'tokens')\n"
    "  --profile P       bounds for a build: fp32 (default), bf16 or fp8; the replay\n"
    "                    profiles, much tighter than compare's (docs/COMPARING.md)\n"
    "  --atol A --rtol R elementwise bound |t-r| <= A + R·|r| on float tensors instead\n"
    "  --routing R       build: MoE layers run BUILD's experts (topk_idx), weighted by\n"
    "                    ds3's scores at them, so an expert kernel is checked where a\n"
    "                    near-tie flipped the choice; the router is judged by its\n"
    "                    scores and by the rows choosing the same set (default when\n"
    "                    BUILD has topk_idx). own: ds3's own choice\n"
    "  -o OUT            write ds3's replayed values under the same names (a file: stdout\n"
    "                    carries the report)\n"
    "  --json            one JSON object on stdout instead of the table\n"
    "  --kernels K       fast (default), deterministic or ref\n"
    "  --emulate SPEC    round where a bf16 / FP8 build rounds (as ds3 dump --emulate)\n"
    "  --attn A          absorb (default) or naive attention\n"
    "\n"
    "exit status: 0 every tensor within the bounds, 1 a tensor outside them or a\n"
    "layer not checked (an input missing from BUILD), 2 usage error\n";

static int32_t *tokens_from(const char *s, const char *what, int *n) {
    int32_t *tok = NULL;
    char err[256];
    int rc = cli_parse_tokens(s, &tok, n, err, sizeof err);
    /* the parser names --tokens itself; a bad --tokens is the command line's
     * fault (usage), bad metadata the file's (runtime) */
    const char *msg = strncmp(err, "--tokens: ", 10) == 0 ? err + 10 : err;
    if (rc == CLI_ARGS_USAGE && strcmp(what, "--tokens") == 0) cli_usage("%s: %s", what, msg);
    if (rc != CLI_ARGS_OK) cli_die("%s: %s", what, msg);
    return tok;
}


/* argv[0] is the first argument after "replay". */
int ds3_cli_replay(int argc, char **argv, int full_argc, char **full_argv) {
    const char *model = NULL, *build = NULL, *tokstr = NULL, *out = NULL, *emulate = NULL, *v;
    const char *routing = NULL;
    bool json = false;
    ds3_attn_mode attn = DS3_ATTN_ABSORB;
    ds3_kernels kernels = DS3_KERNELS_FAST;
    ds3_emulation emu = {DS3_EMULATE_NONE, 0, 0};
    ds3_cmp_opts o = {.profile = ds3_cmp_replay_profile_find("fp32"), .all_rows = true, .ignore_test_only = true};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (cli_is_help(a)) {
            fputs(help_replay, stdout);
            return 0;
        } else if ((v = cli_opt_value(argc, argv, &i, "-m", "--model"))) {
            model = v;
        } else if ((v = cli_opt_value(argc, argv, &i, NULL, "--tokens"))) {
            tokstr = v;
        } else if (cmp_parse_bound_opt(argc, argv, &i, &o, ds3_cmp_replay_profile_find)) {
        } else if ((v = cli_opt_value(argc, argv, &i, NULL, "--routing"))) {
            if (strcmp(v, "build") != 0 && strcmp(v, "own") != 0)
                cli_usage("--routing: '%s' is not one of build, own", v);
            routing = v;
        } else if ((v = cli_opt_value(argc, argv, &i, "-o", "--output"))) {
            /* stdout carries the report (the table or --json): no room for a dump */
            if (strcmp(v, "-") == 0)
                cli_usage("-o -: replay prints its report on stdout; give -o a file for the replayed values");
            out = v;
        } else if (strcmp(a, "--json") == 0) {
            json = true;
        } else if ((v = cli_opt_value(argc, argv, &i, NULL, "--kernels"))) {
            if (ds3_kernels_parse(v, &kernels) != DS3_OK) cli_usage("--kernels: %s", ds3_last_error());
        } else if ((v = cli_opt_value(argc, argv, &i, NULL, "--emulate"))) {
            if (ds3_emulation_parse(v, &emu) != DS3_OK) cli_usage("--emulate: %s", ds3_last_error());
            emulate = v;
        } else if ((v = cli_opt_value(argc, argv, &i, NULL, "--attn"))) {
            if (strcmp(v, "absorb") == 0) attn = DS3_ATTN_ABSORB;
            else if (strcmp(v, "naive") == 0) attn = DS3_ATTN_NAIVE;
            else cli_usage("--attn: '%s' is not one of absorb, naive", v);
        } else if (a[0] == '-' && a[1] != '\0') {
            cli_usage("unknown option '%s'", a);
        } else {
            if (build) cli_usage("unexpected argument '%s' (give one BUILD dump)", a);
            build = a;
        }
    }
    if (!model) cli_usage("missing -m DIR");
    if (!build) cli_usage("missing BUILD.safetensors (the build's dump)");

    ds3_st_file *b = NULL;
    ds3_status st = ds3_st_open(build, &b);
    if (st != DS3_OK) cli_die("BUILD: %s", ds3_last_error());
    cmp_check_dump("BUILD", build, b);
    const char *meta_tok = ds3_st_meta(b, "tokens");
    if (!tokstr && !meta_tok) cli_usage("no tokens: give --tokens IDS (BUILD has no 'tokens' metadata)");
    int T = 0;
    int32_t *tok = tokens_from(tokstr ? tokstr : meta_tok, tokstr ? "--tokens" : "BUILD's tokens metadata", &T);
    if (tokstr && meta_tok) {
        int T2;
        int32_t *t2 = tokens_from(meta_tok, "BUILD's tokens metadata", &T2);
        if (T2 != T || memcmp(t2, tok, sizeof(int32_t) * (size_t)T) != 0)
            cli_die("--tokens differ from BUILD's tokens metadata (%.80s): the replay would be of other inputs",
                    meta_tok);
        free(t2);
    }
    bool routing_build = routing ? strcmp(routing, "build") == 0 : ds3_replay_has_topk_idx(b);
    o.weights_at_test_idx = routing_build;

    ds3_model *m = NULL;
    if ((st = ds3_model_load(model, &m)) != DS3_OK) cli_die("loading model: %s", ds3_last_error());
    if (T > ds3_model_max_positions(m))
        cli_die("%d tokens exceed the model's max_position_embeddings %d", T, ds3_model_max_positions(m));
    ds3_state *s = NULL;
    if ((st = ds3_state_new(m, T, attn, &s)) != DS3_OK) cli_die("creating state: %s", ds3_last_error());
    if ((st = ds3_state_set_kernels(s, kernels)) != DS3_OK) cli_die("--kernels: %s", ds3_last_error());
    if ((st = ds3_set_emulation(s, &emu)) != DS3_OK) cli_die("--emulate: %s", ds3_last_error());

    ds3_dumper *d = ds3_dumper_new(T);
    if (!d) cli_die("out of memory");
    ds3_replay_report gaps;
    /* the logits are compared as they are computed, and kept only for -o */
    if ((st = ds3_replay_dump(s, b, tok, T, routing_build, &o, out != NULL, d, &gaps)) != DS3_OK)
        cli_die("replay: %s", ds3_last_error());

    ds3_cmp_report rep;
    if ((st = ds3_replay_compare(d, b, &o, &gaps, &rep)) != DS3_OK) cli_die("compare: %s", ds3_last_error());
    /* the replay has no metadata of its own: it ran on the tokens named here */
    snprintf(rep.tokens_note, sizeof rep.tokens_note, "tokens from %s", tokstr ? "--tokens" : "BUILD's metadata");
    bool ok = rep.ok && gaps.n_not_checked == 0;

    if (out && ds3_dist_rank() == 0) {   /* under mpirun, rank 0 alone writes */
        char *cmdline = cli_join_args(full_argc, full_argv);
        const char *meta[] = {
            "command", cmdline,
            "model_dir", model,
            "tokens", tokstr ? tokstr : meta_tok,
            "replay_of", build,
            "routing", routing_build ? "build" : "own",
            "attn", attn == DS3_ATTN_NAIVE ? "naive" : "absorb",
            "emulate", emulate ? emulate : "none",
            "kernels", (const char *[]){"fast", "deterministic", "ref"}[kernels],
            NULL,
        };
        st = ds3_dumper_write(d, out, meta);
        free(cmdline);
        if (st != DS3_OK) cli_die("-o: %s", ds3_last_error());
    }

    if (json) {
        cJSON *root = ds3_replay_json(&rep, &o, &gaps, build, routing_build);
        if (!root) cli_die("out of memory writing JSON");
        cmp_json_print(root);
    } else {
        ds3_replay_print(stdout, &rep, &o, &gaps, build, model, T, routing_build);
    }
    cli_flush_stdout();

    ds3_cmp_report_free(&rep);
    ds3_dumper_free(d);
    ds3_replay_report_free(&gaps);
    ds3_state_free(s);
    ds3_model_free(m);
    ds3_st_close(b);
    free(tok);
    return ok ? 0 : 1;
}

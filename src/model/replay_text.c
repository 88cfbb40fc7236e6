/*
 * replay_text.c — `ds3 replay`'s report as text (the table and the JSON object
 * the CLI prints, cli/replay.c), and ds3_replay_mem (ds3.h): the whole replay of
 * a build's dump held in memory, for bindings (the Python package's
 * Model.replay). The replay itself is replay.c; the comparison
 * src/check/compare.c with the replay profiles.
 */
#include "model/model.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* "layers.17.ffn.out (row 5, col 812)": the first tensor outside the bounds, or "none". */
static void first_outside(char *buf, size_t size, const ds3_cmp_report *rep) {
    for (int i = 0; i < rep->n; i++) {
        const ds3_cmp_result *r = &rep->r[i];
        if (r->ok) continue;
        long cols = r->ndim >= 2 ? (long)r->shape[1] : 1;
        if (r->worst >= 0 && r->kind == DS3_CMP_INDEX)
            snprintf(buf, size, "%s (row %ld)", r->name, r->worst / cols);
        else if (r->worst >= 0 && r->ndim == 2 && !(r->max_abs == 0 && r->n_nonfinite == 0))
            snprintf(buf, size, "%s (row %ld, col %ld)", r->name, r->worst / cols, r->worst % cols);
        else
            snprintf(buf, size, "%s", r->name);
        return;
    }
    snprintf(buf, size, "none");
}

void ds3_replay_print(FILE *f, const ds3_cmp_report *rep, const ds3_cmp_opts *o, const ds3_replay_report *gaps,
                      const char *build, const char *model, int T, bool routing_build) {
    char first[256];
    first_outside(first, sizeof first, rep);
    const char *bound = o->elementwise ? "the bounds" : o->profile->name;
    bool ok = rep->ok && gaps->n_not_checked == 0;
    fprintf(f, "replay of %s on %s, %d positions, routing %s\n", build, model, T,
            routing_build ? "build (BUILD's experts run; the router judged by its scores and sets)"
                          : "own (ds3's experts run)");
    ds3_cmp_print_table(f, rep, o, "ds3 replay", build);
    for (int i = 0; i < gaps->n_not_checked; i++) fprintf(f, "%s\n", gaps->not_checked[i]);
    fprintf(f, "\n%d compared: %d within, %d outside; %d missing; %d not checked\n", rep->n, rep->n - rep->n_fail,
            rep->n_fail, rep->n_missing, gaps->n_not_checked);
    if (strcmp(first, "none") != 0) fprintf(f, "first outside %s: %s\n", bound, first);
    else if (gaps->n_not_checked) fprintf(f, "first not checked: %s\n", gaps->not_checked[0]);
    else fprintf(f, "every tensor within %s\n", bound);
    fprintf(f, "%s\n", ok ? "PASS" : "FAIL");
}

struct cJSON *ds3_replay_json(const ds3_cmp_report *rep, const ds3_cmp_opts *o, const ds3_replay_report *gaps,
                              const char *build, bool routing_build) {
    char first[256];
    first_outside(first, sizeof first, rep);
    cJSON *root = ds3_cmp_json(rep, o, "replay", build);
    if (!root) return NULL;
    cJSON_AddStringToObject(root, "routing", routing_build ? "build" : "own");
    cJSON *nc = cJSON_AddArrayToObject(root, "not_checked");
    for (int i = 0; i < gaps->n_not_checked; i++) cJSON_AddItemToArray(nc, cJSON_CreateString(gaps->not_checked[i]));
    if (strcmp(first, "none") != 0) cJSON_AddStringToObject(root, "first_outside", first);
    else cJSON_AddNullToObject(root, "first_outside");
    cJSON_ReplaceItemInObject(root, "pass", cJSON_CreateBool(rep->ok && gaps->n_not_checked == 0));
    return root;
}

/* Does BUILD hold any routing choice? */
bool ds3_replay_has_topk_idx(const ds3_st_file *b) {
    for (int i = 0; i < b->n; i++) {
        size_t n = strlen(b->entries[i].name);
        if (n >= 9 && strcmp(b->entries[i].name + n - 9, ".topk_idx") == 0) return true;
    }
    return false;
}

/* ========================================================================== */
/* ds3_replay_mem                                                              */
/* ========================================================================== */

/* The table, or the JSON object, into *out. */
static ds3_status text_of(char **out, const ds3_cmp_report *rep, const ds3_cmp_opts *o, const ds3_replay_report *gaps,
                          const char *build, const char *model, int T, bool routing_build, bool json) {
    ds3_text t;
    ds3_status st = ds3_text_open(&t, "replay");
    if (st != DS3_OK) return st;
    if (json) st = ds3_text_json(&t, ds3_replay_json(rep, o, gaps, build, routing_build));
    else ds3_replay_print(t.f, rep, o, gaps, build, model, T, routing_build);
    return ds3_text_close(&t, st, out);
}

ds3_status ds3_replay_mem(ds3_state *s, const void *build, size_t len, const ds3_replay_opts *opts,
                          const int32_t *tokens, int T, int *pass, char **table, char **json) {
    if (table) *table = NULL;
    if (json) *json = NULL;
    if (pass) *pass = 0;
    if (!s || !tokens || T <= 0) return ds3_fail(DS3_ERR_ARG, "ds3_replay_mem: state, tokens and T > 0 are required");
    ds3_replay_opts z = {0};
    const ds3_replay_opts *ro = opts ? opts : &z;
    const char *label = ro->build_label ? ro->build_label : "BUILD";
    ds3_cmp_opts o = {.profile = ds3_cmp_replay_profile_find(ro->profile ? ro->profile : "fp32"), .all_rows = true,
                      .ignore_test_only = true};
    if (!o.profile) return ds3_fail(DS3_ERR_ARG, "replay: profile '%s' is not one of fp32, bf16, fp8", ro->profile);
    o.elementwise = ro->elementwise != 0;
    o.atol = ro->atol;
    o.rtol = ro->rtol;
    if (o.elementwise && (!isfinite(o.atol) || o.atol < 0 || !isfinite(o.rtol) || o.rtol < 0))
        return ds3_fail(DS3_ERR_ARG, "replay: atol %g and rtol %g must be finite and non-negative", o.atol, o.rtol);
    if (ro->routing < 0 || ro->routing > 2)
        return ds3_fail(DS3_ERR_ARG, "replay: routing %d is not 0 (auto), 1 (build) or 2 (own)", ro->routing);

    ds3_st_file *b = NULL;
    ds3_status st = ds3_st_open_mem(build, len, label, &b);
    if (st != DS3_OK) return ds3_fail(st, "BUILD: %s", ds3_last_error());
    bool routing_build = ro->routing == 1 || (ro->routing == 0 && ds3_replay_has_topk_idx(b));
    o.weights_at_test_idx = routing_build;

    ds3_dumper *d = ds3_dumper_new(T);
    ds3_replay_report gaps = {0};
    ds3_cmp_report rep;
    bool have_rep = false;
    if (!d) st = DS3_ERR_NOMEM;
    /* the logits compared as they are computed, not kept (nothing is written) */
    if (st == DS3_OK) st = ds3_replay_dump(s, b, tokens, T, routing_build, &o, false, d, &gaps);
    if (st == DS3_OK && (st = ds3_replay_compare(d, b, &o, &gaps, &rep)) == DS3_OK) have_rep = true;
    if (have_rep) {
        snprintf(rep.tokens_note, sizeof rep.tokens_note, "tokens from %s",
                 ro->tokens_from ? ro->tokens_from : "the caller");
        const char *model = ro->model_label ? ro->model_label : "the model";
        if (table) st = text_of(table, &rep, &o, &gaps, label, model, T, routing_build, false);
        if (st == DS3_OK && json) st = text_of(json, &rep, &o, &gaps, label, model, T, routing_build, true);
        if (st == DS3_OK && pass) *pass = rep.ok && gaps.n_not_checked == 0;
        if (st != DS3_OK && table) {
            free(*table);
            *table = NULL;
        }
        ds3_cmp_report_free(&rep);
    }
    ds3_dumper_free(d);
    ds3_replay_report_free(&gaps);
    ds3_st_close(b);
    return st;
}

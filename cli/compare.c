/*
 * compare.c — `ds3 compare REF TEST`: two activation dumps (docs/DUMP_FORMAT.md),
 * typically `ds3 dump` on the CPU (REF) and a GPU build's dump written with the
 * same names by tools/dump_torch.py (TEST), compared tensor by tensor.
 *
 *   ds3 compare REF TEST [--profile fp32|bf16|fp8] [--atol A --rtol R]
 *                        [--names GLOB[,GLOB...]] [--json]
 *
 * Prints one line per tensor (max abs, max rel, cosine, NMSE, worst element,
 * verdict), routing as set agreement per row, logits with argmax and top-5
 * agreement, and a closing verdict. The statistics and the profiles are
 * src/check/compare.c; docs/COMPARING.md is the workflow and the measurements.
 *
 * Exit status: 0 every tensor within the thresholds; 1 any tensor outside,
 * a non-finite value where the other dump differs, a tensor in only one dump,
 * different token sequences, or a file that cannot be read; 2 usage error.
 */
#include "check/check.h"
#include "common.h"
#include "compare.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { CMP_OK = 0, CMP_OUTSIDE = 1, CMP_USAGE = 2 };

static const char *const help_compare =
    "usage: ds3 compare REF TEST [--profile fp32|bf16|fp8] [--atol A --rtol R]\n"
    "                            [--names GLOB[,GLOB...]] [--json]\n"
    "\n"
    "Compare two activation dumps tensor by tensor (ds3 dump, tools/dump_torch.py,\n"
    "tools/gen_ref.py all write the same names). Float tensors: max abs and max rel\n"
    "error, max|t-r|/max|r|, cosine similarity, NMSE and the worst element; routing\n"
    "indices (topk_idx) as sets per row; logits also argmax and top-5 agreement.\n"
    "Dtypes F32, F64, BF16, F16 and I32/I64 are all read.\n"
    "\n"
    "  --profile P     thresholds for a build: fp32 (default), bf16 or fp8\n"
    "                  (measured, see docs/COMPARING.md)\n"
    "  --atol A        elementwise bound |t-r| <= A + R·|r| on float tensors, instead\n"
    "  --rtol R        of the profile's max|t-r|/max|r|, cosine and NMSE bounds\n"
    "                  (routing and logits thresholds still come from the profile)\n"
    "  --names GLOBS   compare only matching names; '!GLOB' excludes\n"
    "                  (e.g. 'layers.*' or '*,!mtp.*')\n"
    "  --all-rows      keep rows whose experts differ in an earlier MoE layer in the\n"
    "                  statistics of later tensors (default: left out and counted;\n"
    "                  a tensor with every row left out is NOT CHECKED, which fails)\n"
    "  --json          one JSON object on stdout instead of the table\n"
    "\n"
    "exit status: 0 within the thresholds, 1 outside them (a NaN, a tensor missing\n"
    "from either dump, different tokens, a tensor not checked, an unreadable file),\n"
    "2 usage error\n";

/* A finite non-negative number, the whole string. */
double cmp_parse_tol(const char *opt, const char *s) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || s[0] == ' ' || s[0] == '\t') cli_usage("%s: '%s' is not a number", opt, s);
    if (!isfinite(v) || v < 0) cli_usage("%s: '%s' is not a finite non-negative number", opt, s);
    return v;
}

/* ========================================================================== */
/* Output                                                                      */
/* ========================================================================== */

static void shape_str(char *buf, size_t size, const ds3_cmp_result *r) {
    size_t k = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < r->ndim && k < size; i++)
        k += (size_t)snprintf(buf + k, size - k, "%s%lld", i ? "," : "", (long long)r->shape[i]);
    if (k < size) snprintf(buf + k, size - k, "]");
}

/* The worst element's position as "[row,col]" (row-major over the shape). */
static void index_str(char *buf, size_t size, const ds3_cmp_result *r) {
    if (r->worst < 0 || (r->max_abs == 0 && r->n_nonfinite == 0)) {
        snprintf(buf, size, "-");
        return;
    }
    int64_t idx[8];
    long rem = r->worst;
    for (int i = r->ndim - 1; i >= 0; i--) {
        idx[i] = r->shape[i] ? rem % r->shape[i] : 0;
        rem = r->shape[i] ? rem / r->shape[i] : 0;
    }
    size_t k = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < r->ndim && k < size; i++)
        k += (size_t)snprintf(buf + k, size - k, "%s%lld", i ? "," : "", (long long)idx[i]);
    if (k < size) snprintf(buf + k, size - k, "]");
}

void cmp_print_table(const ds3_cmp_report *rep, const ds3_cmp_opts *o, const char *ref_path,
                     const char *test_path) {
    const ds3_cmp_profile *p = o->profile;
    printf("REF  %s\nTEST %s\n", ref_path, test_path);
    if (o->elementwise)
        printf("bounds: |t-r| <= %.3g + %.3g*|r| per element; routing and logits from profile %s\n", o->atol, o->rtol,
               p->name);
    else
        printf("profile %s: scaled = max|t-r|/max|r| <= %.3g, cos >= %.9g, nmse <= %.3g\n", p->name, p->max_scaled, p->min_cos,
               p->max_nmse);
    printf("         routing rows same >= %.3g, expert overlap >= %.3g; logits argmax >= %.3g, top-5 overlap >= %.3g\n",
           p->min_idx_rows, p->min_idx_overlap, p->min_argmax, p->min_top5);
    printf("%s\n\n", rep->tokens_note);
    printf("%-28s %-10s %10s %10s %10s %12s %10s  %-10s %s\n", "tensor", "shape", "max_abs", "max_rel", "scaled",
           "cos", "nmse", "worst", "");
    for (int i = 0; i < rep->n; i++) {
        const ds3_cmp_result *r = &rep->r[i];
        char shp[64], wi[64];
        shape_str(shp, sizeof shp, r);
        index_str(wi, sizeof wi, r);
        const char *verdict = r->ok ? "ok" : "OUTSIDE";
        if (r->nothing_compared) {
            printf("%-28s %-10s nothing compared  NOT CHECKED\n", r->name, shp);
        } else if (r->kind == DS3_CMP_INDEX) {
            printf("%-28s %-10s rows with the same experts %ld/%ld (%.3f), expert overlap %.3f  %s\n", r->name, shp,
                   r->rows_same, r->rows, r->rows ? (double)r->rows_same / (double)r->rows : 1.0, r->overlap, verdict);
            if (r->rows_excluded)
                printf("%-28s %-10s   %ld more rows left out: their experts differ in an earlier layer\n", "", "",
                       r->rows_excluded);
        } else if (r->kind == DS3_CMP_INT) {
            printf("%-28s %-10s integers differing %ld of %ld  %s\n", r->name, shp, r->n_bad, r->n, verdict);
        } else {
            printf("%-28s %-10s %10.3e %10.3e %10.3e %12.9f %10.3e  %-10s %s", r->name, shp, r->max_abs, r->max_rel,
                   r->scaled, r->cos, r->nmse, wi, verdict);
            if (r->worst >= 0 && (r->max_abs > 0 || r->n_nonfinite)) printf("  (t %.7g r %.7g)", r->worst_got, r->worst_ref);
            printf("\n");
            if (r->rows_excluded && !strstr(r->name, "topk_weight"))
                printf("%-28s %-10s   %ld of %lld rows left out: their experts differ upstream\n", "", "",
                       r->rows_excluded, (long long)r->shape[0]);
            if (strstr(r->name, "topk_weight") && r->rows >= 0 && o->weights_at_test_idx)
                printf("%-28s %-10s   the weights of TEST's experts, every row\n", "", "");
            else if (strstr(r->name, "topk_weight") && r->rows >= 0)
                printf("%-28s %-10s   paired by expert on the %ld rows whose expert sets agree (here and upstream)\n",
                       "", "", r->rows);
            if (r->rows > 0 && (strcmp(r->name, "logits") == 0 || strstr(r->name, ".logits")))
                printf("%-28s %-10s   argmax same %ld/%ld (%ld near-tie flips), top-5 overlap %.4f\n", "", "",
                       r->argmax_same, r->rows, r->argmax_near_tie, r->top5);
        }
        if (!r->ok) printf("%-28s   -> %s\n", "", r->why);
    }
    for (int i = 0; i < rep->n_missing; i++) printf("%-28s MISSING\n", rep->missing[i]);
}

static void print_summary(const ds3_cmp_report *rep) {
    int empty = 0;
    for (int i = 0; i < rep->n; i++) empty += rep->r[i].nothing_compared;
    printf("\n%d compared: %d within, %d outside, %d not checked; %d missing%s\n", rep->n, rep->n - rep->n_fail,
           rep->n_fail - empty, empty, rep->n_missing, rep->tokens_differ ? "; tokens differ" : "");
    if (rep->n == 0) printf("no tensors compared (check --names and the dumps' names)\n");
    printf("%s\n", rep->ok ? "PASS" : "FAIL");
}

/* JSON numbers cannot be NaN/Inf: those become null. */
static void add_num(cJSON *o, const char *k, double v) {
    if (isfinite(v)) cJSON_AddNumberToObject(o, k, v);
    else cJSON_AddNullToObject(o, k);
}

cJSON *cmp_json(const ds3_cmp_report *rep, const ds3_cmp_opts *o, const char *ref_path, const char *test_path) {
    const ds3_cmp_profile *p = o->profile;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "ref", ref_path);
    cJSON_AddStringToObject(root, "test", test_path);
    cJSON *pj = cJSON_AddObjectToObject(root, "profile");
    cJSON_AddStringToObject(pj, "name", p->name);
    add_num(pj, "max_scaled", p->max_scaled);
    add_num(pj, "min_cos", p->min_cos);
    add_num(pj, "max_nmse", p->max_nmse);
    add_num(pj, "min_idx_rows", p->min_idx_rows);
    add_num(pj, "min_idx_overlap", p->min_idx_overlap);
    add_num(pj, "min_argmax", p->min_argmax);
    add_num(pj, "min_top5", p->min_top5);
    if (o->elementwise) {
        add_num(root, "atol", o->atol);
        add_num(root, "rtol", o->rtol);
    }
    cJSON_AddStringToObject(root, "tokens", rep->tokens_note);
    cJSON *arr = cJSON_AddArrayToObject(root, "tensors");
    for (int i = 0; i < rep->n; i++) {
        const ds3_cmp_result *r = &rep->r[i];
        cJSON *t = cJSON_CreateObject();
        cJSON_AddStringToObject(t, "name", r->name);
        cJSON *sh = cJSON_AddArrayToObject(t, "shape");
        for (int d = 0; d < r->ndim; d++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)r->shape[d]));
        cJSON_AddStringToObject(t, "kind", r->kind == DS3_CMP_INDEX ? "index" : r->kind == DS3_CMP_INT ? "int" : "float");
        cJSON_AddBoolToObject(t, "ok", r->ok);
        add_num(t, "rows_excluded", (double)r->rows_excluded);
        cJSON_AddBoolToObject(t, "nothing_compared", r->nothing_compared);
        if (!r->ok) cJSON_AddStringToObject(t, "why", r->why);
        if (r->kind == DS3_CMP_INDEX) {
            add_num(t, "rows", (double)r->rows);
            add_num(t, "rows_same", (double)r->rows_same);
            add_num(t, "overlap", r->overlap);
        } else if (r->kind == DS3_CMP_INT) {
            add_num(t, "differing", (double)r->n_bad);
        } else {
            add_num(t, "max_abs", r->max_abs);
            add_num(t, "max_rel", r->max_rel);
            add_num(t, "max_ref", r->max_ref);
            add_num(t, "scaled", r->scaled);
            add_num(t, "cos", r->cos);
            add_num(t, "nmse", r->nmse);
            add_num(t, "nonfinite_mismatches", (double)r->n_nonfinite);
            if (r->worst >= 0) {
                cJSON *w = cJSON_AddArrayToObject(t, "worst_index");
                long rem = r->worst;
                double idx[8];
                for (int d = r->ndim - 1; d >= 0; d--) {
                    idx[d] = r->shape[d] ? (double)(rem % r->shape[d]) : 0;
                    rem = r->shape[d] ? rem / (long)r->shape[d] : 0;
                }
                for (int d = 0; d < r->ndim; d++) cJSON_AddItemToArray(w, cJSON_CreateNumber(idx[d]));
                add_num(t, "worst_test", r->worst_got);
                add_num(t, "worst_ref", r->worst_ref);
            }
            if (strcmp(r->name, "logits") == 0 || strstr(r->name, ".logits")) {
                add_num(t, "argmax_same", (double)r->argmax_same);
                add_num(t, "argmax_near_tie", (double)r->argmax_near_tie);
                add_num(t, "rows", (double)r->rows);
                add_num(t, "top5_overlap", r->top5);
            }
        }
        cJSON_AddItemToArray(arr, t);
    }
    cJSON *miss = cJSON_AddArrayToObject(root, "missing");
    for (int i = 0; i < rep->n_missing; i++) cJSON_AddItemToArray(miss, cJSON_CreateString(rep->missing[i]));
    cJSON_AddBoolToObject(root, "tokens_differ", rep->tokens_differ);
    add_num(root, "compared", rep->n);
    add_num(root, "outside", rep->n_fail);
    cJSON_AddBoolToObject(root, "pass", rep->ok);
    return root;
}

void cmp_json_print(cJSON *root) {
    char *s = cJSON_Print(root);
    if (!s) cli_die("out of memory writing JSON");
    printf("%s\n", s);
    free(s);
    cJSON_Delete(root);
}

/* ========================================================================== */
/* Entry point (dispatched from cli/ds3.c)                                     */
/* ========================================================================== */

/* argv[0] is the first argument after "compare". */
int ds3_cli_compare(int argc, char **argv) {
    const char *paths[2] = {NULL, NULL}, *v;
    int npaths = 0;
    bool json = false, have_atol = false, have_rtol = false;
    ds3_cmp_opts o = {.profile = ds3_cmp_profile_find("fp32")};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (cli_is_help(a)) {
            fputs(help_compare, stdout);
            return CMP_OK;
        } else if ((v = cli_opt_value(argc, argv, &i, NULL, "--profile"))) {
            o.profile = ds3_cmp_profile_find(v);
            if (!o.profile) cli_usage("--profile: '%s' is not one of fp32, bf16, fp8", v);
        } else if ((v = cli_opt_value(argc, argv, &i, NULL, "--atol"))) {
            o.atol = cmp_parse_tol("--atol", v);
            have_atol = true;
        } else if ((v = cli_opt_value(argc, argv, &i, NULL, "--rtol"))) {
            o.rtol = cmp_parse_tol("--rtol", v);
            have_rtol = true;
        } else if ((v = cli_opt_value(argc, argv, &i, NULL, "--names"))) {
            if (!v[0]) cli_usage("--names: empty pattern");
            o.names = v;
        } else if (strcmp(a, "--all-rows") == 0) {
            o.all_rows = true;
        } else if (strcmp(a, "--json") == 0) {
            json = true;
        } else if (a[0] == '-' && a[1] != '\0') {
            cli_usage("unknown option '%s'", a);
        } else {
            if (npaths == 2) cli_usage("unexpected argument '%s' (give REF and TEST)", a);
            paths[npaths++] = a;
        }
    }
    if (npaths < 2) cli_usage("give two dumps: REF and TEST");
    o.elementwise = have_atol || have_rtol;

    ds3_st_file *ref = NULL, *test = NULL;
    ds3_status st = ds3_st_open(paths[0], &ref);
    if (st != DS3_OK) cli_die("REF: %s", ds3_last_error());
    if ((st = ds3_st_open(paths[1], &test)) != DS3_OK) cli_die("TEST: %s", ds3_last_error());

    ds3_cmp_report rep;
    if ((st = ds3_cmp_files(ref, test, &o, &rep)) != DS3_OK) cli_die("compare: %s", ds3_last_error());
    if (json) {
        cmp_json_print(cmp_json(&rep, &o, paths[0], paths[1]));
    } else {
        cmp_print_table(&rep, &o, paths[0], paths[1]);
        print_summary(&rep);
    }
    fflush(stdout);
    int rc = rep.ok ? CMP_OK : CMP_OUTSIDE;
    ds3_cmp_report_free(&rep);
    ds3_st_close(ref);
    ds3_st_close(test);
    return rc;
}

/*
 * report.c — a comparison's report as text: the table `ds3 compare` prints,
 * its --json object, and ds3_compare_mem, the public entry point that
 * compares two dumps held in memory and returns both (the Python package's
 * ds3.compare). The statistics themselves are compare.c.
 */
#include "check/check.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

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

void ds3_cmp_print_table(FILE *f, const ds3_cmp_report *rep, const ds3_cmp_opts *o, const char *ref_path,
                         const char *test_path) {
    const ds3_cmp_profile *p = o->profile;
    fprintf(f, "REF  %s\nTEST %s\n", ref_path, test_path);
    if (o->elementwise)
        fprintf(f, "bounds: |t-r| <= %.3g + %.3g*|r| per element; routing and logits from profile %s\n", o->atol, o->rtol,
               p->name);
    else
    {
        /* a bound within 1e-6 of 1 would print as 1 in %.9g: "1-2e-12" */
        char cb[32];
        if (p->min_cos < 1 && 1 - p->min_cos < 1e-6) snprintf(cb, sizeof cb, "1-%.3g", 1 - p->min_cos);
        else snprintf(cb, sizeof cb, "%.9g", p->min_cos);
        fprintf(f, "profile %s: scaled = max|t-r|/max|r| <= %.3g, cos >= %s, nmse <= %.3g\n", p->name, p->max_scaled,
                cb, p->max_nmse);
    }
    fprintf(f, "         routing rows same >= %.3g, expert overlap >= %.3g; logits argmax >= %.3g, top-5 overlap >= %.3g\n",
           p->min_idx_rows, p->min_idx_overlap, p->min_argmax, p->min_top5);
    fprintf(f, "%s\n\n", rep->tokens_note);
    fprintf(f, "%-28s %-10s %10s %10s %10s %12s %10s  %-10s %s\n", "tensor", "shape", "max_abs", "max_rel", "scaled",
           "cos", "nmse", "worst", "");
    for (int i = 0; i < rep->n; i++) {
        const ds3_cmp_result *r = &rep->r[i];
        char shp[64], wi[64];
        shape_str(shp, sizeof shp, r);
        index_str(wi, sizeof wi, r);
        const char *verdict = r->ok ? "ok" : "OUTSIDE";
        if (r->nothing_compared) {
            fprintf(f, "%-28s %-10s nothing compared  NOT CHECKED\n", r->name, shp);
        } else if (r->kind == DS3_CMP_INDEX) {
            fprintf(f, "%-28s %-10s rows with the same experts %ld/%ld (%.3f), expert overlap %.3f  %s\n", r->name, shp,
                   r->rows_same, r->rows, r->rows ? (double)r->rows_same / (double)r->rows : 1.0, r->overlap, verdict);
            if (r->rows_excluded)
                fprintf(f, "%-28s %-10s   %ld more rows left out: their experts differ in an earlier layer\n", "", "",
                       r->rows_excluded);
        } else if (r->kind == DS3_CMP_INT) {
            fprintf(f, "%-28s %-10s integers differing %ld of %ld  %s\n", r->name, shp, r->n_bad, r->n, verdict);
        } else {
            fprintf(f, "%-28s %-10s %10.3e %10.3e %10.3e %12.9f %10.3e  %-10s %s", r->name, shp, r->max_abs, r->max_rel,
                   r->scaled, r->cos, r->nmse, wi, verdict);
            if (r->worst >= 0 && (r->max_abs > 0 || r->n_nonfinite)) fprintf(f, "  (t %.7g r %.7g)", r->worst_got, r->worst_ref);
            fprintf(f, "\n");
            if (r->rows_excluded && !strstr(r->name, "topk_weight"))
                fprintf(f, "%-28s %-10s   %ld of %lld rows left out: their experts differ upstream\n", "", "",
                       r->rows_excluded, (long long)r->shape[0]);
            if (strstr(r->name, "topk_weight") && r->rows >= 0 && o->weights_at_test_idx)
                fprintf(f, "%-28s %-10s   the weights of TEST's experts, every row\n", "", "");
            else if (strstr(r->name, "topk_weight") && r->rows >= 0)
                fprintf(f, "%-28s %-10s   paired by expert on the %ld rows whose expert sets agree (here and upstream)\n",
                       "", "", r->rows);
            if (r->rows > 0 && (strcmp(r->name, "logits") == 0 || strstr(r->name, ".logits")))
                fprintf(f, "%-28s %-10s   argmax same %ld/%ld (%ld near-tie flips), top-5 overlap %.4f\n", "", "",
                       r->argmax_same, r->rows, r->argmax_near_tie, r->top5);
        }
        if (!r->ok) fprintf(f, "%-28s   -> %s\n", "", r->why);
    }
    for (int i = 0; i < rep->n_missing; i++) fprintf(f, "%-28s MISSING\n", rep->missing[i]);
}

void ds3_cmp_print_summary(FILE *f, const ds3_cmp_report *rep) {
    int empty = 0;
    for (int i = 0; i < rep->n; i++) empty += rep->r[i].nothing_compared;
    fprintf(f, "\n%d compared: %d within, %d outside, %d not checked; %d missing%s\n", rep->n, rep->n - rep->n_fail,
           rep->n_fail - empty, empty, rep->n_missing, rep->tokens_differ ? "; tokens differ" : "");
    if (rep->n == 0) fprintf(f, "no tensors compared (check --names and the dumps' names)\n");
    fprintf(f, "%s\n", rep->ok ? "PASS" : "FAIL");
}

/* JSON numbers cannot be NaN/Inf: those become null. */
static void add_num(cJSON *o, const char *k, double v) {
    if (isfinite(v)) cJSON_AddNumberToObject(o, k, v);
    else cJSON_AddNullToObject(o, k);
}

cJSON *ds3_cmp_json(const ds3_cmp_report *rep, const ds3_cmp_opts *o, const char *ref_path, const char *test_path) {
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

/* ========================================================================== */
/* ds3_compare_mem: two dumps in memory, the verdict and both texts            */
/* ========================================================================== */

ds3_status ds3_text_open(ds3_text *t, const char *what) {
    *t = (ds3_text){NULL, NULL, 0, what};
    t->f = open_memstream(&t->buf, &t->len);
    return t->f ? DS3_OK : ds3_fail(DS3_ERR_NOMEM, "%s: cannot open a memory stream", what);
}

ds3_status ds3_text_json(ds3_text *t, struct cJSON *root) {
    char *s = root ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (!s) return ds3_fail(DS3_ERR_NOMEM, "%s: out of memory writing JSON", t->what);
    fprintf(t->f, "%s\n", s);
    free(s);
    return DS3_OK;
}

ds3_status ds3_text_close(ds3_text *t, ds3_status st, char **out) {
    if (fclose(t->f) != 0 && st == DS3_OK) st = ds3_fail(DS3_ERR_NOMEM, "%s: out of memory writing the report", t->what);
    if (st != DS3_OK) {
        free(t->buf);
        return st;
    }
    *out = t->buf;
    return DS3_OK;
}

/* The table and summary, or the JSON object, into *out (NULL out: skipped). */
static ds3_status report_str(bool json, const ds3_cmp_report *rep, const ds3_cmp_opts *o, const char *ref,
                             const char *test, char **out) {
    if (!out) return DS3_OK;
    ds3_text t;
    ds3_status st = ds3_text_open(&t, "compare");
    if (st != DS3_OK) return st;
    if (json) {
        st = ds3_text_json(&t, ds3_cmp_json(rep, o, ref, test));
    } else {
        ds3_cmp_print_table(t.f, rep, o, ref, test);
        ds3_cmp_print_summary(t.f, rep);
    }
    return ds3_text_close(&t, st, out);
}

ds3_status ds3_compare_mem(const void *ref, size_t ref_len, const char *ref_label, const void *test, size_t test_len,
                           const char *test_label, const ds3_compare_opts *opts, int *pass, char **table,
                           char **json) {
    if (table) *table = NULL;
    if (json) *json = NULL;
    if (pass) *pass = 0;
    if (!ref_label) ref_label = "REF";
    if (!test_label) test_label = "TEST";
    ds3_cmp_opts o = {.profile = ds3_cmp_profile_find("fp32")};
    if (opts) {
        if (opts->profile && !(o.profile = ds3_cmp_profile_find(opts->profile)))
            return ds3_fail(DS3_ERR_ARG, "compare: profile '%s' is not one of fp32, bf16, fp8", opts->profile);
        o.elementwise = opts->elementwise != 0;
        o.atol = opts->atol;
        o.rtol = opts->rtol;
        if (o.elementwise && (!isfinite(o.atol) || o.atol < 0 || !isfinite(o.rtol) || o.rtol < 0))
            return ds3_fail(DS3_ERR_ARG, "compare: atol %g and rtol %g must be finite and non-negative", o.atol,
                            o.rtol);
        o.names = opts->names && opts->names[0] ? opts->names : NULL;
        o.all_rows = opts->all_rows != 0;
    }

    ds3_st_file *r = NULL, *t = NULL;
    ds3_status st = ds3_st_open_mem(ref, ref_len, ref_label, &r);
    if (st != DS3_OK) return ds3_fail(st, "REF: %s", ds3_last_error());
    if ((st = ds3_st_open_mem(test, test_len, test_label, &t)) != DS3_OK) {
        ds3_st_close(r);
        return ds3_fail(st, "TEST: %s", ds3_last_error());
    }
    ds3_cmp_report rep;
    if ((st = ds3_cmp_files(r, t, &o, &rep)) == DS3_OK) {
        st = report_str(false, &rep, &o, ref_label, test_label, table);
        if (st == DS3_OK) st = report_str(true, &rep, &o, ref_label, test_label, json);
        if (st == DS3_OK && pass) *pass = rep.ok;
        if (st != DS3_OK && table) {
            free(*table);
            *table = NULL;
        }
        ds3_cmp_report_free(&rep);
    }
    ds3_st_close(r);
    ds3_st_close(t);
    return st;
}

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
 * src/check/compare.c, the table and the JSON src/check/report.c (the Python
 * package prints the same); docs/COMPARING.md is the workflow and the measurements.
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
#include <stdbool.h>
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

bool cmp_parse_bound_opt(int argc, char **argv, int *i, ds3_cmp_opts *o,
                         const ds3_cmp_profile *(*find)(const char *name)) {
    const char *v;
    if ((v = cli_opt_value(argc, argv, i, NULL, "--profile"))) {
        o->profile = find(v);
        if (!o->profile) cli_usage("--profile: '%s' is not one of fp32, bf16, fp8", v);
    } else if ((v = cli_opt_value(argc, argv, i, NULL, "--atol"))) {
        o->atol = cmp_parse_tol("--atol", v);
        o->elementwise = true;
    } else if ((v = cli_opt_value(argc, argv, i, NULL, "--rtol"))) {
        o->rtol = cmp_parse_tol("--rtol", v);
        o->elementwise = true;
    } else {
        return false;
    }
    return true;
}

/* ========================================================================== */
/* Output: the library's (src/check/report.c), on stdout                       */
/* ========================================================================== */

void cmp_print_table(const ds3_cmp_report *rep, const ds3_cmp_opts *o, const char *ref_path,
                     const char *test_path) {
    ds3_cmp_print_table(stdout, rep, o, ref_path, test_path);
}

cJSON *cmp_json(const ds3_cmp_report *rep, const ds3_cmp_opts *o, const char *ref_path, const char *test_path) {
    cJSON *root = ds3_cmp_json(rep, o, ref_path, test_path);
    if (!root) cli_die("out of memory writing JSON");
    return root;
}

void cmp_json_print(cJSON *root) {
    char *s = cJSON_Print(root);
    if (!s) cli_die("out of memory writing JSON");
    printf("%s\n", s);
    free(s);
    cJSON_Delete(root);
}

/* Does the name follow docs/DUMP_FORMAT.md: embed, norm, logits, layers.N.*, mtp.K.*? */
static bool dump_name(const char *n) {
    if (strcmp(n, "embed") == 0 || strcmp(n, "norm") == 0 || strcmp(n, "logits") == 0) return true;
    if (strncmp(n, "layers.", 7) == 0) return n[7] >= '0' && n[7] <= '9';
    if (strncmp(n, "mtp.", 4) == 0) return n[4] >= '0' && n[4] <= '9';
    return false;
}

/* A file with no tensor of a dump's names (a checkpoint, another tool's
 * file) is refused in one line, not compared into a page of MISSING lines. */
void cmp_check_dump(const char *which, const char *path, const ds3_st_file *f) {
    for (int i = 0; i < f->n; i++)
        if (dump_name(f->entries[i].name)) return;
    cli_die("%s: %s is not a ds3-style dump: none of its %d tensors is named embed, layers.N.*, norm, logits "
            "or mtp.K.*%s%s%s (make dumps with 'ds3 dump' or tools/dump_torch.py; docs/DUMP_FORMAT.md)",
            which, path, f->n, f->n ? " (the first is '" : "", f->n ? f->entries[0].name : "", f->n ? "')" : "");
}

/* ========================================================================== */
/* Entry point (dispatched from cli/ds3.c)                                     */
/* ========================================================================== */

/* argv[0] is the first argument after "compare". */
int ds3_cli_compare(int argc, char **argv) {
    const char *paths[2] = {NULL, NULL}, *v;
    int npaths = 0;
    bool json = false;
    ds3_cmp_opts o = {.profile = ds3_cmp_profile_find("fp32")};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (cli_is_help(a)) {
            fputs(help_compare, stdout);
            return CMP_OK;
        } else if (cmp_parse_bound_opt(argc, argv, &i, &o, ds3_cmp_profile_find)) {
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

    ds3_st_file *ref = NULL, *test = NULL;
    ds3_status st = ds3_st_open(paths[0], &ref);
    if (st != DS3_OK) cli_die("REF: %s", ds3_last_error());
    if ((st = ds3_st_open(paths[1], &test)) != DS3_OK) cli_die("TEST: %s", ds3_last_error());
    cmp_check_dump("REF", paths[0], ref);
    cmp_check_dump("TEST", paths[1], test);

    ds3_cmp_report rep;
    if ((st = ds3_cmp_files(ref, test, &o, &rep)) != DS3_OK) cli_die("compare: %s", ds3_last_error());
    if (json) {
        cmp_json_print(cmp_json(&rep, &o, paths[0], paths[1]));
    } else {
        cmp_print_table(&rep, &o, paths[0], paths[1]);
        ds3_cmp_print_summary(stdout, &rep);
    }
    cli_flush_stdout();
    int rc = rep.ok ? CMP_OK : CMP_OUTSIDE;
    ds3_cmp_report_free(&rep);
    ds3_st_close(ref);
    ds3_st_close(test);
    return rc;
}

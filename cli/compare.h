/*
 * compare.h — the comparison's output, shared by `ds3 compare` (cli/compare.c)
 * and `ds3 replay` (cli/replay.c): the table, the JSON object, option values.
 */
#ifndef DS3_CLI_COMPARE_H
#define DS3_CLI_COMPARE_H

#include "check/check.h"

#include <cjson/cJSON.h>

/* --atol/--rtol values: a finite non-negative number (usage error otherwise). */
double cmp_parse_tol(const char *opt, const char *s);
/* The bound options both commands take, at argv[*i]: --profile P (looked up
 * with `find`: compare's profiles or the replay's), --atol A, --rtol R (either
 * makes the check elementwise). True if argv[*i] was one of them (*i moved
 * past its value); usage errors exit 2. */
bool cmp_parse_bound_opt(int argc, char **argv, int *i, ds3_cmp_opts *o,
                         const ds3_cmp_profile *(*find)(const char *name));
/* The header and one line per tensor, then the missing names; no summary. */
void cmp_print_table(const ds3_cmp_report *rep, const ds3_cmp_opts *o, const char *ref_path,
                     const char *test_path);
/* The report as a JSON object (the caller may add keys), and printing it (frees it). */
cJSON *cmp_json(const ds3_cmp_report *rep, const ds3_cmp_opts *o, const char *ref_path, const char *test_path);
void cmp_json_print(cJSON *root);
/* A file with no tensor of a dump's names (embed, norm, logits, layers.N.*,
 * mtp.K.*: a checkpoint, another tool's file) is refused in one line (exit 1),
 * `which` naming its role ("REF", "BUILD"). */
void cmp_check_dump(const char *which, const char *path, const ds3_st_file *f);

#endif /* DS3_CLI_COMPARE_H */

/*
 * test_dump.c — the activation dumper (src/check/dump.c) without a model: rows land
 * at their positions whatever the call split, unwritten rows are reported in
 * ds3_incomplete, MTP tensors are T-1-K rows long, rows outside a tensor are
 * counted in ds3_rows_dropped, first-seen order is file order, metadata keys
 * are checked, and a failed write leaves no file. Everything is read back
 * with the safetensors reader, as the reference comparisons do.
 */
#include "generate/generate.h"
#include "harness.h"

#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[64];

static const char *meta(const ds3_st_file *f, const char *key) {
    const char *v = ds3_st_meta(f, key);
    return v ? v : "(missing)";
}

static void test_dumper(void) {
    th_section("dumper: rows, order, incomplete, MTP, dropped rows");
    enum { T = 4 };
    ds3_dumper *d = ds3_dumper_new(T);
    CHECK(d != NULL, "ds3_dumper_new");

    /* "zeta" first: file order is first-seen order, not alphabetical. */
    int64_t three = 3, two = 2, five = 5;
    ds3_real z[T][3];
    for (int i = 0; i < T; i++)
        for (int j = 0; j < 3; j++) z[i][j] = (ds3_real)(10 * i + j);
    ds3_dump_rows(d, "zeta", DS3_DT_REAL, 1, &three, 0, 1, z[0]);   /* a prefill of 1 … */
    ds3_dump_rows(d, "zeta", DS3_DT_REAL, 1, &three, 1, 2, z[1]);   /* … then 2 … */
    ds3_dump_rows(d, "zeta", DS3_DT_REAL, 1, &three, 3, 1, z[3]);   /* … then 1 */

    int32_t idx[2][2] = {{7, 8}, {9, 10}};
    ds3_dump_rows(d, "alpha.idx", DS3_DT_I32, 1, &two, 1, 2, idx);  /* rows 0 and 3 never written */

    /* A per-row scalar (no inner dims); row -1 and row 4 are outside. */
    float sc[6] = {-1, 0.5f, 1.5f, 2.5f, 3.5f, 99};
    ds3_dump_rows(d, "scalar", DS3_DT_F32, 0, NULL, -1, 6, sc);

    /* MTP depth 1 has T-1-1 = 2 rows; a third offered row is dropped. */
    ds3_real mt[3][5];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 5; j++) mt[i][j] = (ds3_real)(100 * i + j);
    ds3_dump_rows(d, "mtp.1.logits", DS3_DT_REAL, 1, &five, 0, 3, mt);

    char path[128];
    snprintf(path, sizeof path, "%s/d.safetensors", tmpdir);
    const char *kv[] = {"tool", "test_dump", "note", "", NULL};
    ds3_status st = ds3_dumper_write(d, path, kv);
    CHECK(st == DS3_OK, "ds3_dumper_write: %s", ds3_last_error());
    ds3_dumper_free(d);

    ds3_st_file *f = NULL;
    st = ds3_st_open(path, &f);
    CHECK(st == DS3_OK, "reading the dump back: %s", ds3_last_error());
    if (st != DS3_OK) return;

    CHECK(f->n == 4, "%d tensors, want 4", f->n);
    const char *order[] = {"zeta", "alpha.idx", "scalar", "mtp.1.logits"};
    for (int i = 0; i < 4 && i < f->n; i++)
        CHECK(strcmp(f->entries[i].name, order[i]) == 0, "tensor %d is '%s', want '%s'", i, f->entries[i].name,
              order[i]);

    const ds3_st_entry *e = ds3_st_find(f, "zeta");
    CHECK(e && e->ndim == 2 && e->shape[0] == T && e->shape[1] == 3 && e->dtype == DS3_DT_REAL,
          "zeta: shape or dtype");
    if (e) CHECK(memcmp(e->data, z, sizeof z) == 0, "zeta: rows not at their positions");

    e = ds3_st_find(f, "alpha.idx");
    CHECK(e && e->ndim == 2 && e->shape[0] == T && e->shape[1] == 2 && e->dtype == DS3_DT_I32,
          "alpha.idx: shape or dtype");
    if (e) {
        int32_t got[T][2];
        memcpy(got, e->data, sizeof got);
        CHECK(got[0][0] == 0 && got[0][1] == 0 && got[3][0] == 0 && got[3][1] == 0, "unwritten rows not zero");
        CHECK(got[1][0] == 7 && got[1][1] == 8 && got[2][0] == 9 && got[2][1] == 10, "alpha.idx rows 1..2");
    }

    e = ds3_st_find(f, "scalar");
    CHECK(e && e->ndim == 1 && e->shape[0] == T && e->dtype == DS3_DT_F32, "scalar: shape or dtype");
    if (e) CHECK(memcmp(e->data, sc + 1, 4 * sizeof(float)) == 0, "scalar: rows 0..3 wrong");

    e = ds3_st_find(f, "mtp.1.logits");
    CHECK(e && e->ndim == 2 && e->shape[0] == T - 2 && e->shape[1] == 5, "mtp.1.logits: shape should be [%d, 5]",
          T - 2);
    if (e) CHECK(memcmp(e->data, mt, 2 * sizeof mt[0]) == 0, "mtp.1.logits rows");

    CHECK(strcmp(meta(f, "ds3_incomplete"), "alpha.idx") == 0, "ds3_incomplete = '%s'", meta(f, "ds3_incomplete"));
    CHECK(strcmp(meta(f, "ds3_rows_dropped"), "3") == 0, "ds3_rows_dropped = %s, want 3 (rows -1 and 4 of "
          "scalar, row 2 of mtp.1)", meta(f, "ds3_rows_dropped"));
    CHECK(strcmp(meta(f, "ds3_rows"), "4") == 0, "ds3_rows = %s", meta(f, "ds3_rows"));
    CHECK(strcmp(meta(f, "ds3_dump_version"), "1") == 0, "ds3_dump_version = %s", meta(f, "ds3_dump_version"));
#ifdef DS3_F64
    CHECK(strcmp(meta(f, "ds3_precision"), "f64") == 0, "ds3_precision = %s", meta(f, "ds3_precision"));
#else
    CHECK(strcmp(meta(f, "ds3_precision"), "f32") == 0, "ds3_precision = %s", meta(f, "ds3_precision"));
#endif
    CHECK(strcmp(meta(f, "tool"), "test_dump") == 0 && strcmp(meta(f, "note"), "") == 0, "caller metadata");
    ds3_st_close(f);

    /* A complete dump says so with an empty list. */
    d = ds3_dumper_new(2);
    ds3_dump_rows(d, "x", DS3_DT_REAL, 1, &three, 0, 2, z);
    ds3_dump_rows(d, "mtp.0.out", DS3_DT_REAL, 1, &three, 0, 1, z); /* 2-1-0 = 1 row */
    ds3_dump_rows(d, "mtp.3.out", DS3_DT_REAL, 1, &three, 0, 1, z); /* no rows at all: all dropped */
    st = ds3_dumper_write(d, path, NULL);
    CHECK(st == DS3_OK, "second write: %s", ds3_last_error());
    ds3_dumper_free(d);
    if (ds3_st_open(path, &f) == DS3_OK) {
        CHECK(strcmp(meta(f, "ds3_incomplete"), "") == 0, "complete dump: ds3_incomplete = '%s'",
              meta(f, "ds3_incomplete"));
        const ds3_st_entry *m3 = ds3_st_find(f, "mtp.3.out");
        CHECK(m3 && m3->shape[0] == 0, "mtp.3.out with T=2 should have 0 rows");
        ds3_st_close(f);
    } else {
        CHECK(0, "second dump unreadable: %s", ds3_last_error());
    }
}

static void test_errors(void) {
    th_section("dumper: metadata and write errors, the state API");
    ds3_dumper *d = ds3_dumper_new(1);
    int64_t one = 1;
    ds3_real v = 1;
    ds3_dump_rows(d, "x", DS3_DT_REAL, 1, &one, 0, 1, &v);
    char path[128];
    snprintf(path, sizeof path, "%s/e.safetensors", tmpdir);

    const char *reserved[] = {"ds3_precision", "f16", NULL};
    CHECK(ds3_dumper_write(d, path, reserved) == DS3_ERR_ARG, "a ds3_ key was accepted from the caller");
    const char *novalue[] = {"key", NULL};
    CHECK(ds3_dumper_write(d, path, novalue) == DS3_ERR_ARG, "a key without a value was accepted");
    CHECK(access(path, F_OK) != 0, "a rejected write created %s", path);

    const char *missing = "/nonexistent/dir/x.safetensors";
    CHECK(ds3_dumper_write(d, missing, NULL) == DS3_ERR_IO, "writing into a missing directory");
    CHECK(strstr(ds3_last_error(), "/nonexistent/dir") != NULL, "message: %s", ds3_last_error());
    CHECK(access(missing, F_OK) != 0, "file left behind");
    ds3_dumper_free(d);
    ds3_dumper_free(NULL);

    /* The public pair, on a bare state (no model needed for the dump itself). */
    struct ds3_state s;
    memset(&s, 0, sizeof s);
    s.max_seq = 3;
    CHECK(ds3_dump_write(&s, path, NULL) == DS3_ERR_ARG, "ds3_dump_write without ds3_dump_begin");
    CHECK(ds3_dump_begin(&s, 0) == DS3_ERR_ARG, "ds3_dump_begin(0)");
    CHECK(ds3_dump_begin(&s, 4) == DS3_ERR_ARG, "ds3_dump_begin beyond max_seq");
    CHECK(ds3_dump_begin(NULL, 1) == DS3_ERR_ARG, "ds3_dump_begin(NULL)");
    CHECK(ds3_dump_begin(&s, 3) == DS3_OK && s.dump, "ds3_dump_begin(3): %s", ds3_last_error());
    ds3_dump_rows(s.dump, "x", DS3_DT_REAL, 1, &one, 0, 1, &v);
    CHECK(ds3_dump_begin(&s, 2) == DS3_OK && s.dump, "a second ds3_dump_begin starts over");
    ds3_dump_rows(s.dump, "y", DS3_DT_REAL, 1, &one, 0, 2, (ds3_real[]){1, 2});
    CHECK(ds3_dump_write(&s, missing, NULL) == DS3_ERR_IO && s.dump == NULL,
          "a failed ds3_dump_write must still stop capturing");
    CHECK(ds3_dump_begin(&s, 2) == DS3_OK, "begin after a failed write");
    ds3_dump_rows(s.dump, "y", DS3_DT_REAL, 1, &one, 0, 2, (ds3_real[]){1, 2});
    CHECK(ds3_dump_write(&s, path, NULL) == DS3_OK && s.dump == NULL, "ds3_dump_write: %s", ds3_last_error());
    ds3_st_file *f = NULL;
    if (ds3_st_open(path, &f) == DS3_OK) {
        CHECK(f->n == 1 && ds3_st_find(f, "y") && !ds3_st_find(f, "x"), "the restarted dump holds only 'y'");
        ds3_st_close(f);
    } else {
        CHECK(0, "reading %s: %s", path, ds3_last_error());
    }
}

/* The in-memory writer (ds3_dump_write_mem, for bindings) gives the file's bytes,
 * ds3_st_open_mem reads them with the same checks, and ds3_compare_mem compares two. */
static void test_memory(void) {
    const int64_t three = 3;
    ds3_real z[2][3] = {{1, 2, 3}, {4, 5, 6}};
    const char *kv[] = {"tool", "test_dump", NULL};
    char path[160];
    snprintf(path, sizeof path, "%s/m.safetensors", tmpdir);

    ds3_dumper *d = ds3_dumper_new(2);
    ds3_dump_rows(d, "x", DS3_DT_REAL, 1, &three, 0, 2, z);
    ds3_dump_rows(d, "mtp.0.out", DS3_DT_REAL, 1, &three, 0, 1, z);
    CHECK(ds3_dumper_write(d, path, kv) == DS3_OK, "write: %s", ds3_last_error());
    void *buf = NULL;
    size_t len = 0;
    CHECK(ds3_dumper_write_mem(d, kv, &buf, &len) == DS3_OK && buf, "write_mem: %s", ds3_last_error());
    ds3_dumper_free(d);

    FILE *fp = fopen(path, "rb");
    unsigned char file[4096];
    size_t n = fp ? fread(file, 1, sizeof file, fp) : 0;
    if (fp) fclose(fp);
    CHECK(n > 8 && n == len && memcmp(file, buf, n) == 0, "memory image (%zu bytes) != file (%zu bytes)", len, n);

    ds3_st_file *f = NULL;
    CHECK(ds3_st_open_mem(buf, len, "mem", &f) == DS3_OK, "st_open_mem: %s", ds3_last_error());
    if (f) {
        const ds3_st_entry *e = ds3_st_find(f, "x");
        CHECK(e && e->shape[0] == 2 && memcmp(e->data, z, sizeof z) == 0, "x read back from memory");
        CHECK(strcmp(meta(f, "tool"), "test_dump") == 0, "metadata read back from memory");
        ds3_st_close(f);
    }
    CHECK(ds3_st_open_mem(buf, 7, "short", &f) == DS3_ERR_IO && strstr(ds3_last_error(), "short"),
          "7 bytes: %s", ds3_last_error());
    CHECK(ds3_st_open_mem(buf, len - 1, "cut", &f) != DS3_OK, "a truncated image was accepted");

    /* The same image twice passes; one changed value fails, and the table says where. */
    int pass = 0;
    char *table = NULL, *json = NULL;
    ds3_compare_opts o = {"fp32", 0, 0, 0, NULL, 0};
    CHECK(ds3_compare_mem(buf, len, "a", buf, len, "b", &o, &pass, &table, &json) == DS3_OK && pass,
          "compare_mem same: %s", ds3_last_error());
    CHECK(table && strstr(table, "REF  a\nTEST b\n") == table && strstr(table, "\nPASS\n"), "table:\n%s",
          table ? table : "(null)");
    CHECK(json && strstr(json, "\"pass\":\ttrue"), "json: %s", json ? json : "(null)");
    ds3_free(table);
    ds3_free(json);
    unsigned char *other = malloc(len);
    if (other) {
        memcpy(other, buf, len);
        ds3_real two = 2.5;
        memcpy(other + len - 2 * 3 * sizeof(ds3_real) - 3 * sizeof(ds3_real) + sizeof(ds3_real), &two, sizeof two);
        CHECK(ds3_compare_mem(buf, len, NULL, other, len, NULL, NULL, &pass, &table, NULL) == DS3_OK && !pass,
              "a changed value passed");
        CHECK(table && strstr(table, "OUTSIDE") && strstr(table, "\nFAIL\n"), "table:\n%s", table ? table : "");
        ds3_free(table);
        free(other);
    }
    o.profile = "fp4";
    CHECK(ds3_compare_mem(buf, len, NULL, buf, len, NULL, &o, &pass, NULL, NULL) == DS3_ERR_ARG, "profile fp4");
    o.profile = NULL;
    o.elementwise = 1;
    o.atol = -1;
    CHECK(ds3_compare_mem(buf, len, NULL, buf, len, NULL, &o, &pass, NULL, NULL) == DS3_ERR_ARG, "atol -1");
    CHECK(ds3_compare_mem(buf, len, NULL, "garbage!", 8, "g", NULL, &pass, &table, NULL) != DS3_OK &&
              strncmp(ds3_last_error(), "TEST: g", 7) == 0 && table == NULL,
          "garbage TEST: %s", ds3_last_error());
    ds3_free(buf);
    unlink(path);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ds3-test-dump.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_dumper();
    test_errors();
    test_memory();
    char p[160];
    snprintf(p, sizeof p, "%s/d.safetensors", tmpdir);
    unlink(p);
    snprintf(p, sizeof p, "%s/e.safetensors", tmpdir);
    unlink(p);
    rmdir(tmpdir);
    return th_finish();
}

/*
 * test_safetensors.c — the checkpoint container (safetensors.c).
 *
 * A round trip through the writer and the reader (names, dtypes, shapes, data,
 * metadata, header alignment), then one hand-crafted bad file per check the
 * reader makes: each must fail with the right status and a message that names
 * the file and the offending tensor or field, because that message is all a
 * user with a broken 700 GB download gets.
 */
#include "harness.h"
#include "generate/generate.h"

#include <cjson/cJSON.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[64];
static char paths[64][256];
static int npaths;

/* A path in the temp dir, remembered for cleanup. */
static const char *tmp_path(const char *name) {
    snprintf(paths[npaths], sizeof paths[npaths], "%s/%s", dir, name);
    return paths[npaths++];
}

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n) { perror(path); exit(1); }
    fclose(f);
}

static unsigned char *read_bytes(const char *path, size_t *n) {
    unsigned char *p = th_read_file(path, n);
    if (!p) { perror(path); exit(1); }
    return p;
}

/* A file with the given header text (length field = its length unless
 * hlen_field is non-zero) followed by data_len zero bytes. */
static const char *craft(const char *name, const char *header, uint64_t hlen_field, size_t data_len) {
    const char *path = tmp_path(name);
    size_t hl = strlen(header);
    uint64_t field = hlen_field ? hlen_field : hl;
    unsigned char *buf = calloc(1, 8 + hl + data_len);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(field >> (8 * i));
    memcpy(buf + 8, header, hl);
    write_bytes(path, buf, 8 + hl + data_len);
    free(buf);
    return path;
}

/* Open must fail with status st, and the message must name the file and
 * contain each of the given fragments. */
static void expect_fail(const char *what, const char *path, ds3_status st, const char *frag1, const char *frag2) {
    ds3_st_file *f = (ds3_st_file *)1;
    ds3_status got = ds3_st_open(path, &f);
    const char *msg = ds3_last_error();
    CHECK(got == st, "%s: status %s, expected %s (%s)", what, ds3_status_name(got), ds3_status_name(st), msg);
    CHECK(f == NULL, "%s: out-parameter cleared on failure", what);
    CHECK(strstr(msg, path) != NULL, "%s: message names the file: %s", what, msg);
    if (frag1) CHECK(strstr(msg, frag1) != NULL, "%s: message mentions \"%s\": %s", what, frag1, msg);
    if (frag2) CHECK(strstr(msg, frag2) != NULL, "%s: message mentions \"%s\": %s", what, frag2, msg);
    if (got == DS3_OK) ds3_st_close(f);
    fprintf(stderr, "   %-28s %s\n", what, msg);
}

/* ---- round trip ---------------------------------------------------------- */

static void test_round_trip(void) {
    th_section("writer -> reader round trip");
    float a[15];
    for (int i = 0; i < 15; i++) a[i] = (float)i * 0.25f - 1.0f;
    uint16_t b[4] = {0x3f80, 0xbf80, 0x0000, 0x7f80};
    uint8_t c[6] = {0x38, 0x7e, 0x01, 0x80, 0xfe, 0x08};
    int64_t scalar = -1234567890123ll;
    uint8_t u8[7] = {1, 2, 3, 4, 5, 6, 7};
    double d[2] = {1.0 / 3.0, -2.5};

    struct { const char *name; ds3_dtype dt; int ndim; int64_t shape[3]; const void *data; size_t nbytes; } t[] = {
        {"model.layers.0.a.weight", DS3_DT_F32, 2, {3, 5}, a, sizeof a},
        {"b", DS3_DT_BF16, 1, {4}, b, sizeof b},
        {"c.weight_fp8", DS3_DT_F8_E4M3, 2, {2, 3}, c, sizeof c},
        {"empty", DS3_DT_F32, 2, {0, 4}, NULL, 0},
        {"scalar", DS3_DT_I64, 0, {0}, &scalar, sizeof scalar},
        {"odd \"name\" \\ with/escapes", DS3_DT_U8, 1, {7}, u8, sizeof u8},
        {"d", DS3_DT_F64, 1, {2}, d, sizeof d},
    };
    const int nt = (int)(sizeof t / sizeof t[0]);

    ds3_st_writer *w = ds3_stw_new();
    CHECK(w != NULL, "writer allocated");
    for (int i = 0; i < nt; i++)
        CHECK(ds3_stw_add(w, t[i].name, t[i].dt, t[i].ndim, t[i].shape, t[i].data) == DS3_OK,
              "add %s: %s", t[i].name, ds3_last_error());
    const char *gen = "test_safetensors \"quoted\" \\ tab\t newline\n end";
    CHECK(ds3_stw_meta(w, "format", "pt") == DS3_OK, "meta format");
    CHECK(ds3_stw_meta(w, "generator", "placeholder") == DS3_OK, "meta generator");
    CHECK(ds3_stw_meta(w, "generator", gen) == DS3_OK, "meta generator replaced");
    CHECK(ds3_stw_meta(w, "unicode", "h\xc3\xa9llo \xe2\x9c\x93") == DS3_OK, "meta unicode");

    /* Writer argument errors. */
    int64_t neg[2] = {2, -1};
    CHECK(ds3_stw_add(w, "b", DS3_DT_F32, 1, t[1].shape, b) == DS3_ERR_ARG, "duplicate name rejected");
    CHECK(strstr(ds3_last_error(), "'b'") != NULL, "duplicate message names it: %s", ds3_last_error());
    CHECK(ds3_stw_add(w, "neg", DS3_DT_F32, 2, neg, a) == DS3_ERR_ARG, "negative dim rejected");
    CHECK(ds3_stw_add(w, "__metadata__", DS3_DT_F32, 1, t[1].shape, a) == DS3_ERR_ARG, "reserved name rejected");
    CHECK(ds3_stw_add(w, "nodata", DS3_DT_F32, 1, t[1].shape, NULL) == DS3_ERR_ARG, "missing data rejected");

    const char *path = tmp_path("good.safetensors");
    CHECK(ds3_stw_write(w, path) == DS3_OK, "write: %s", ds3_last_error());
    char tmpname[300];
    snprintf(tmpname, sizeof tmpname, "%s.tmp", path);
    CHECK(access(tmpname, F_OK) != 0, "no .tmp left behind");
    /* Writing again replaces the file in place. */
    CHECK(ds3_stw_write(w, path) == DS3_OK, "rewrite over an existing file: %s", ds3_last_error());

    /* Unwritable destination: the message names the path. */
    char bad[300];
    snprintf(bad, sizeof bad, "%s/no/such/dir/x.safetensors", dir);
    CHECK(ds3_stw_write(w, bad) == DS3_ERR_IO, "write into a missing directory fails");
    CHECK(strstr(ds3_last_error(), bad) != NULL, "write error names the path: %s", ds3_last_error());
    ds3_stw_free(w);
    ds3_stw_free(NULL);

    ds3_st_file *f = NULL;
    CHECK(ds3_st_open(path, &f) == DS3_OK, "open: %s", ds3_last_error());
    if (!f) return;
    CHECK(f->n == nt, "%d tensors, expected %d", f->n, nt);
    for (int i = 0; i < nt && i < f->n; i++) {
        const ds3_st_entry *e = &f->entries[i];
        CHECK(strcmp(e->name, t[i].name) == 0, "entry %d is '%s' (header order = insertion order)", i, e->name);
        CHECK(e->dtype == t[i].dt, "%s dtype", t[i].name);
        CHECK(e->ndim == t[i].ndim, "%s ndim %d", t[i].name, e->ndim);
        int same_shape = 1;
        for (int k = 0; k < t[i].ndim; k++) same_shape &= e->shape[k] == t[i].shape[k];
        CHECK(same_shape, "%s shape", t[i].name);
        CHECK(e->nbytes == t[i].nbytes, "%s nbytes %llu", t[i].name, (unsigned long long)e->nbytes);
        CHECK(t[i].nbytes == 0 || memcmp(e->data, t[i].data, t[i].nbytes) == 0, "%s data", t[i].name);
        CHECK(ds3_st_find(f, t[i].name) == e, "find %s", t[i].name);
    }
    CHECK(ds3_st_find(f, "missing") == NULL, "find of an absent name is NULL");
    CHECK(ds3_st_find(f, "") == NULL, "find of the empty name is NULL");

    const char *v = ds3_st_meta(f, "format");
    CHECK(v && strcmp(v, "pt") == 0, "meta format = %s", v ? v : "(null)");
    v = ds3_st_meta(f, "generator");
    CHECK(v && strcmp(v, gen) == 0, "meta generator survives escaping: %s", v ? v : "(null)");
    v = ds3_st_meta(f, "unicode");
    CHECK(v && strcmp(v, "h\xc3\xa9llo \xe2\x9c\x93") == 0, "meta UTF-8 passes through");
    CHECK(ds3_st_meta(f, "absent") == NULL, "absent meta key is NULL");
    cJSON *mj = f->metadata_json ? cJSON_Parse(f->metadata_json) : NULL;
    CHECK(mj && cJSON_IsString(cJSON_GetObjectItem(mj, "format")), "metadata_json is the JSON object");
    cJSON_Delete(mj);

    /* Alignment: 8 + N is a multiple of 8, padding is spaces, and the first
     * tensor starts the data section. */
    const unsigned char *map = f->map;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | map[i];
    CHECK((8 + hlen) % 8 == 0, "data section starts 8-byte aligned (header %llu bytes)", (unsigned long long)hlen);
    CHECK(map[8] == '{', "header starts with {");
    size_t k = 8 + hlen;
    while (k > 8 && map[k - 1] == ' ') k--;
    CHECK(map[k - 1] == '}', "header is JSON followed only by spaces");
    CHECK((const unsigned char *)f->entries[0].data == map + 8 + hlen, "first tensor at the data section start");
    CHECK((size_t)(8 + hlen) + 15 * 4 + 8 + 6 + 0 + 8 + 7 + 16 == f->map_size, "file is header + data, no gaps");
    ds3_st_close(f);
    ds3_st_close(NULL);

    /* No metadata at all. */
    w = ds3_stw_new();
    ds3_stw_add(w, "only", DS3_DT_F32, 1, (int64_t[]){2}, a);
    const char *p2 = tmp_path("nometa.safetensors");
    CHECK(ds3_stw_write(w, p2) == DS3_OK, "write without metadata");
    ds3_stw_free(w);
    CHECK(ds3_st_open(p2, &f) == DS3_OK, "open without metadata: %s", ds3_last_error());
    if (f) {
        CHECK(f->metadata_json == NULL && ds3_st_meta(f, "format") == NULL, "no metadata");
        ds3_st_close(f);
    }

    /* A file with no tensors is valid. */
    w = ds3_stw_new();
    const char *p3 = tmp_path("empty.safetensors");
    CHECK(ds3_stw_write(w, p3) == DS3_OK, "write an empty file");
    ds3_stw_free(w);
    CHECK(ds3_st_open(p3, &f) == DS3_OK && f->n == 0, "open an empty file: %s", ds3_last_error());
    if (f) { CHECK(ds3_st_find(f, "x") == NULL, "find in an empty file"); ds3_st_close(f); }
}

/* Hand-written headers the reader must accept: holes between tensors, an
 * empty tensor inside another's bytes, extra keys, whitespace padding. */
static void test_lenient(void) {
    th_section("valid hand-crafted files");
    const char *p = craft("holes.safetensors",
                          "{\"__metadata__\":{\"k\":\"v\"},"
                          "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                          "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
                          "\"b\":{\"dtype\":\"BF16\",\"shape\":[1,2],\"data_offsets\":[16,20],\"extra\":1}}   \n",
                          0, 24);
    ds3_st_file *f = NULL;
    CHECK(ds3_st_open(p, &f) == DS3_OK, "holes, empty tensor, extra keys: %s", ds3_last_error());
    if (f) {
        const ds3_st_entry *b = ds3_st_find(f, "b");
        CHECK(b && b->data == (const unsigned char *)f->map + f->map_size - 8, "offsets are relative to the data section");
        CHECK(ds3_st_find(f, "z") && ds3_st_find(f, "z")->nbytes == 0, "empty tensor");
        CHECK(ds3_st_meta(f, "k") && strcmp(ds3_st_meta(f, "k"), "v") == 0, "metadata read");
        ds3_st_close(f);
    }
}

/* ---- failures ------------------------------------------------------------ */

static void test_errors(void) {
    th_section("malformed files");
    const char *good = tmp_path("good.safetensors"); /* written by test_round_trip */
    npaths--;                                          /* same name: do not remove twice */
    size_t n;
    unsigned char *bytes = read_bytes(good, &n);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | bytes[i];

    /* Cut in the middle of the data: the last tensor ('d') runs off the end. */
    const char *p = tmp_path("trunc_data.safetensors");
    write_bytes(p, bytes, n - 10);
    expect_fail("truncated in the data", p, DS3_ERR_IO, "'d'", "truncated");

    /* Cut in the middle of the header. */
    p = tmp_path("trunc_header.safetensors");
    write_bytes(p, bytes, 8 + hlen / 2);
    expect_fail("truncated in the header", p, DS3_ERR_IO, "header length", "past the end");
    free(bytes);

    p = craft("hlen_beyond.safetensors", "{}", 1000, 0);
    expect_fail("header length beyond file", p, DS3_ERR_IO, "1000", "past the end");

    p = craft("hlen_huge.safetensors", "{}", 0xffffffffffffffffull, 0);
    expect_fail("header length 2^64-1", p, DS3_ERR_IO, "header length", NULL);

    p = tmp_path("short.safetensors");
    write_bytes(p, "\x02\0\0\0\0", 5);
    expect_fail("file shorter than 8 bytes", p, DS3_ERR_IO, "5 bytes", NULL);

    p = tmp_path("zero.safetensors");
    write_bytes(p, "", 0);
    expect_fail("zero-length file", p, DS3_ERR_IO, "0 bytes", NULL);

    p = tmp_path("does_not_exist.safetensors");
    expect_fail("missing file", p, DS3_ERR_IO, "cannot open", NULL);

    expect_fail("a directory", dir, DS3_ERR_IO, "not a regular file", NULL);

    p = craft("reversed.safetensors", "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 0, 8);
    expect_fail("offsets reversed", p, DS3_ERR_FORMAT, "'x'", "reversed");

    p = craft("outside.safetensors", "{\"x\":{\"dtype\":\"F32\",\"shape\":[200],\"data_offsets\":[0,800]}}", 0, 8);
    expect_fail("offsets out of the file", p, DS3_ERR_IO, "'x'", "[0,800]");

    p = craft("overlap.safetensors",
              "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
              "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 0, 12);
    expect_fail("overlapping tensors", p, DS3_ERR_FORMAT, "'a' [0,8] and 'b' [4,12]", "overlap");

    p = craft("overlap_nested.safetensors",
              "{\"big\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
              "\"mid\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[16,20]},"
              "\"in\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[4,6]}}", 0, 20);
    expect_fail("tensor inside another", p, DS3_ERR_FORMAT, "'big'", "'in'");

    p = craft("mismatch.safetensors", "{\"x.weight\":{\"dtype\":\"F32\",\"shape\":[5,6],\"data_offsets\":[0,100]}}",
              0, 100);
    expect_fail("shape x dtype size mismatch", p, DS3_ERR_FORMAT,
                "tensor 'x.weight': data_offsets [0,100] hold 100 bytes, shape [5,6] of F32 needs 120", NULL);

    p = craft("dtype.safetensors", "{\"w\":{\"dtype\":\"F8_E5M2\",\"shape\":[2],\"data_offsets\":[0,2]}}", 0, 2);
    expect_fail("unknown dtype", p, DS3_ERR_FORMAT, "'w'", "'F8_E5M2'");

    p = craft("dtype_type.safetensors", "{\"w\":{\"dtype\":7,\"shape\":[2],\"data_offsets\":[0,2]}}", 0, 2);
    expect_fail("dtype not a string", p, DS3_ERR_FORMAT, "'w'", "dtype");

    p = craft("negdim.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,-3],\"data_offsets\":[0,0]}}", 0, 0);
    expect_fail("negative dim", p, DS3_ERR_FORMAT, "'w'", "-3");

    p = craft("fracdim.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,10]}}", 0, 10);
    expect_fail("fractional dim", p, DS3_ERR_FORMAT, "'w'", "2.5");

    p = craft("overflow.safetensors",
              "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,2],\"data_offsets\":[0,0]}}", 0, 0);
    expect_fail("shape product overflow", p, DS3_ERR_FORMAT, "'w'", "overflows");

    p = craft("overflow_size.safetensors",
              "{\"w\":{\"dtype\":\"F64\",\"shape\":[4294967296,536870912],\"data_offsets\":[0,0]}}", 0, 0);
    expect_fail("count x dtype size overflow", p, DS3_ERR_FORMAT, "'w'", "overflows");

    p = craft("ndim.safetensors", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 0, 1);
    expect_fail("nine dimensions", p, DS3_ERR_FORMAT, "'w'", "9 dimensions");

    p = craft("noshape.safetensors", "{\"w\":{\"dtype\":\"U8\",\"data_offsets\":[0,1]}}", 0, 1);
    expect_fail("missing shape", p, DS3_ERR_FORMAT, "'w'", "shape");

    p = craft("nooffsets.safetensors", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0]}}", 0, 1);
    expect_fail("one offset", p, DS3_ERR_FORMAT, "'w'", "data_offsets");

    p = craft("badjson.safetensors", "{\"x\": {\"dtype\": \"F32\",      ", 0, 8);
    expect_fail("invalid JSON", p, DS3_ERR_FORMAT, "not valid JSON", NULL);

    p = craft("notobject.safetensors", "[1,2]   ", 0, 0);
    expect_fail("header not an object", p, DS3_ERR_FORMAT, "not a JSON object", NULL);

    p = craft("trailing.safetensors", "{}  x", 0, 0);
    expect_fail("garbage after the JSON", p, DS3_ERR_FORMAT, "after the header", NULL);

    p = craft("dup.safetensors",
              "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
              "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 0, 2);
    expect_fail("duplicate tensor name", p, DS3_ERR_FORMAT, "'a'", "twice");

    p = craft("meta.safetensors", "{\"__metadata__\":{\"n\":3}}", 0, 0);
    expect_fail("non-string metadata", p, DS3_ERR_FORMAT, "'n'", "__metadata__");

    p = craft("entry.safetensors", "{\"w\":[1,2]}", 0, 0);
    expect_fail("entry not an object", p, DS3_ERR_FORMAT, "'w'", NULL);
}

/* ---- where the writer puts its bytes ------------------------------------- */

/* The file a one-tensor writer produces, for comparison. */
static unsigned char *expected_bytes(ds3_st_writer *w, size_t *n) {
    const char *path = tmp_path("expected.safetensors");
    if (ds3_stw_write(w, path) != DS3_OK) { fprintf(stderr, "%s\n", ds3_last_error()); exit(1); }
    return read_bytes(path, n);
}

static bool is_link(const char *path) {
    struct stat sb;
    return lstat(path, &sb) == 0 && S_ISLNK(sb.st_mode);
}

static void test_output_paths(void) {
    th_section("output paths: symbolic links, FIFOs");
    float a[6] = {1, 2, 3, 4, 5, 6};
    int64_t shape[2] = {2, 3};
    ds3_st_writer *w = ds3_stw_new();
    CHECK(ds3_stw_add(w, "a", DS3_DT_F32, 2, shape, a) == DS3_OK, "add: %s", ds3_last_error());
    size_t n_exp;
    unsigned char *exp = expected_bytes(w, &n_exp);
    char tmpname[300];

    /* A link (relative, and a link to that link) has its target replaced;
     * the links stay links and no .tmp is left beside either. */
    CHECK(mkdir(tmp_path("sub"), 0755) == 0, "mkdir sub");
    const char *target = tmp_path("sub/real.safetensors");
    const char *link = tmp_path("link.safetensors"), *link2 = tmp_path("link2.safetensors");
    CHECK(symlink("sub/real.safetensors", link) == 0 && symlink("link.safetensors", link2) == 0, "symlinks made");
    write_bytes(target, "old", 3);
    CHECK(ds3_stw_write(w, link2) == DS3_OK, "write through two links: %s", ds3_last_error());
    CHECK(is_link(link) && is_link(link2), "the links are still links");
    size_t n;
    unsigned char *got = read_bytes(target, &n);
    CHECK(n == n_exp && memcmp(got, exp, n) == 0, "the link's target holds the file (%zu bytes)", n);
    free(got);
    snprintf(tmpname, sizeof tmpname, "%s.tmp", target);
    CHECK(access(tmpname, F_OK) != 0, "no .tmp beside the target");
    snprintf(tmpname, sizeof tmpname, "%s.tmp", link2);
    CHECK(access(tmpname, F_OK) != 0, "no .tmp beside the link");

    /* A dangling link: the file is created where it points. */
    unlink(target);
    CHECK(ds3_stw_write(w, link) == DS3_OK, "write through a dangling link: %s", ds3_last_error());
    CHECK(is_link(link) && access(target, F_OK) == 0, "dangling link: target created, link kept");

    /* A loop of links is an error naming the path, and nothing is replaced. */
    const char *l1 = tmp_path("loop1"), *l2 = tmp_path("loop2");
    CHECK(symlink("loop2", l1) == 0 && symlink("loop1", l2) == 0, "link loop made");
    CHECK(ds3_stw_write(w, l1) == DS3_ERR_IO, "a link loop fails");
    CHECK(strstr(ds3_last_error(), l1) && strstr(ds3_last_error(), "symbolic links"), "loop message: %s",
          ds3_last_error());
    CHECK(is_link(l1) && is_link(l2), "the loop's links are untouched");

    /* A FIFO is written in place (a reader gets every byte) and stays a FIFO:
     * renaming over it would leave a regular file where it was. */
    const char *fifo = tmp_path("fifo");
    CHECK(mkfifo(fifo, 0600) == 0, "mkfifo");
    int pfd[2];
    CHECK(pipe(pfd) == 0, "pipe");
    pid_t pid = fork();
    if (pid == 0) {
        ds3_stw_free(w); /* the child's copies: valgrind counts them at _exit */
        free(exp);
        size_t total = 0, k;
        char buf[4096];
        FILE *in = fopen(fifo, "rb");
        if (in) {
            while ((k = fread(buf, 1, sizeof buf, in)) > 0) total += k;
            fclose(in);
        }
        if (write(pfd[1], &total, sizeof total) != (ssize_t)sizeof total) _exit(1);
        _exit(0);
    }
    CHECK(ds3_stw_write(w, fifo) == DS3_OK, "write into a FIFO: %s", ds3_last_error());
    struct stat sb;
    bool still_fifo = lstat(fifo, &sb) == 0 && S_ISFIFO(sb.st_mode);
    CHECK(still_fifo, "the FIFO is still a FIFO");
    if (!still_fifo) kill(pid, SIGKILL); /* its reader would wait for a writer forever */
    size_t read_total = 0;
    int status = 0;
    if (still_fifo)
        CHECK(read(pfd[0], &read_total, sizeof read_total) == (ssize_t)sizeof read_total, "reader reported");
    waitpid(pid, &status, 0);
    close(pfd[0]);
    close(pfd[1]);
    CHECK(read_total == n_exp, "the FIFO's reader got %zu bytes, expected %zu", read_total, n_exp);
    snprintf(tmpname, sizeof tmpname, "%s.tmp", fifo);
    CHECK(access(tmpname, F_OK) != 0, "no .tmp beside the FIFO");

    free(exp);
    ds3_stw_free(w);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/ds3-st-XXXXXX");
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
    test_round_trip();
    test_lenient();
    test_errors();
    test_output_paths();
    for (int i = npaths - 1; i >= 0; i--)
        if (unlink(paths[i]) != 0) rmdir(paths[i]); /* sub/ after its file */
    CHECK(rmdir(dir) == 0, "temp dir %s removed (no stray files)", dir);
    return th_finish();
}

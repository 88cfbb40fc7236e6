/*
 * dump.c — capturing named activations of a forward pass into a safetensors
 * file, the way llm.c writes its debug state: the same reader that loads
 * weights loads the dump, and tools/gen_ref.py writes references with the
 * same names, so a test compares tensor by tensor. docs/DUMP_FORMAT.md lists
 * the names, shapes, dtypes and metadata keys.
 *
 * A dump covers positions [0, total). Row i of every tensor is position i,
 * whichever ds3_forward call (a prefill of many positions, a decode of one)
 * produced it, so a dump made by prefill and one made by token-at-a-time
 * decoding must agree row for row.
 *
 * Per name the dumper keeps one zero-filled buffer [rows][inner...] created on
 * the first call, together with a flag per row saying whether it was written.
 * rows is total, except for MTP depth K ("mtp.K.*"), whose row i predicts token
 * i+2+K and so exists only for i < total-1-K (docs/MODEL.md §6). A replay
 * that compares a tensor the moment it has it (its logits, src/model/replay.c)
 * lists it without values (ds3_dump_compared): the name keeps its place in
 * the view, and such a dumper is not written.
 *
 * Nothing here can fail in the middle of a forward pass: ds3_dump_rows returns
 * nothing, so an allocation failure is remembered and reported by
 * ds3_dumper_write; rows outside [0, rows) are counted, not stored (a caller
 * may run positions past the dump's end); a tensor that reappears with another
 * dtype or row shape is a bug in ds3 and asserts.
 *
 * Not thread-safe: the forward pass calls ds3_dump_rows outside its parallel
 * regions. The state's entry points (ds3_dump_begin, ds3_dump_write) are in
 * src/model/state.c.
 */
#include "check/check.h"

#include <stdlib.h>
#include <string.h>

#define DUMP_MAX_INNER 7   /* a safetensors shape here holds 8 dims, one is the row */

typedef struct {
    char *name;
    ds3_dtype dt;
    int ninner;
    int64_t inner[DUMP_MAX_INNER];
    int rows;                  /* expected rows: total, or total-1-K for mtp.K.* */
    size_t row_bytes;
    unsigned char *data;       /* [rows][row_bytes], zero-filled; NULL: compared, not kept */
    unsigned char *written;    /* [rows] 1 once the row was stored */
} dump_tensor;

struct ds3_dumper {
    int total;
    int n, cap;
    dump_tensor *t;            /* [n] in first-seen order: the file's order */
    int hint;                  /* where the last lookup ended: names recur in order */
    int64_t dropped;           /* rows outside [0, rows) that were offered */
    bool failed;               /* an allocation failed; errmsg says which */
    char errmsg[320];
    char *shards;              /* ds3_shards: the weights' files and identities (JSON), or NULL */
};

/* ========================================================================== */
/* Capture                                                                     */
/* ========================================================================== */

ds3_dumper *ds3_dumper_new(int total) {
    DS3_ASSERT(total >= 0);
    ds3_dumper *d = ds3_calloc(1, sizeof *d);
    if (d) d->total = total;
    return d;
}

void ds3_dumper_free(ds3_dumper *d) {
    if (!d) return;
    for (int i = 0; i < d->n; i++) {
        free(d->t[i].name);
        free(d->t[i].data);
        free(d->t[i].written);
    }
    free(d->t);
    free(d->shards);
    free(d);
}

/* Rows a tensor of this name has: MTP depth K predicts token i+2+K from
 * position i, so only positions i < total-1-K have a target. */
static int expected_rows(const char *name, int total) {
    int k = -1, used = 0;
    if (sscanf(name, "mtp.%d.%n", &k, &used) == 1 && used > 0 && k >= 0) {
        int rows = total - 1 - k;
        return rows > 0 ? rows : 0;
    }
    return total;
}

static void fail(ds3_dumper *d, const char *name, size_t bytes) {
    d->failed = true;
    snprintf(d->errmsg, sizeof d->errmsg, "dump: out of memory capturing '%.200s' (%zu bytes)", name, bytes);
}

static dump_tensor *find(ds3_dumper *d, const char *name) {
    for (int j = 0; j < d->n; j++) {
        int i = (d->hint + j) % d->n;
        if (strcmp(d->t[i].name, name) == 0) {
            d->hint = (i + 1) % d->n;
            return &d->t[i];
        }
    }
    return NULL;
}

/* The first sight of a name: record its dtype and row shape, allocate its
 * rows unless `held` is false (ds3_dump_compared). */
static dump_tensor *add(ds3_dumper *d, const char *name, ds3_dtype dt, int ninner, const int64_t *inner, bool held) {
    size_t row_bytes = ds3_dtype_size(dt);
    for (int i = 0; i < ninner; i++) {
        DS3_ASSERT(inner[i] >= 0);
        if (inner[i] > 0 && row_bytes > SIZE_MAX / (size_t)inner[i]) {
            fail(d, name, SIZE_MAX);
            return NULL;
        }
        row_bytes *= (size_t)inner[i];
    }
    int rows = expected_rows(name, d->total);
    if (rows > 0 && row_bytes > SIZE_MAX / (size_t)rows) {
        fail(d, name, SIZE_MAX);
        return NULL;
    }
    if (d->n == d->cap) {
        int cap = d->cap ? 2 * d->cap : 64;
        dump_tensor *t = realloc(d->t, (size_t)cap * sizeof *t);
        if (!t) {
            fail(d, name, (size_t)cap * sizeof *t);
            return NULL;
        }
        d->t = t;
        d->cap = cap;
    }
    dump_tensor *t = &d->t[d->n];
    memset(t, 0, sizeof *t);
    t->name = malloc(strlen(name) + 1);
    /* +1: a zero-row tensor still gets a valid (unused) data pointer */
    t->data = held ? calloc(1, row_bytes * (size_t)rows + 1) : NULL;
    t->written = calloc((size_t)rows + 1, 1);
    if (!t->name || (held && !t->data) || !t->written) {
        free(t->name);
        free(t->data);
        free(t->written);
        fail(d, name, row_bytes * (size_t)rows);
        return NULL;
    }
    strcpy(t->name, name);
    t->dt = dt;
    t->ninner = ninner;
    for (int i = 0; i < ninner; i++) t->inner[i] = inner[i];
    t->rows = rows;
    t->row_bytes = row_bytes;
    d->hint = 0;
    d->n++;
    return t;
}

void ds3_dump_rows(ds3_dumper *d, const char *name, ds3_dtype dt, int ninner, const int64_t *inner,
                   int row0, int nrows, const void *data) {
    DS3_ASSERT(d && name);
    DS3_ASSERT(ninner >= 0 && ninner <= DUMP_MAX_INNER && (ninner == 0 || inner));
    DS3_ASSERT((int)dt >= 0 && dt < DS3_DT_COUNT);
    DS3_ASSERT(nrows >= 0 && (nrows == 0 || data));
    if (d->failed) return;   /* already reporting an error; the dump is lost */

    dump_tensor *t = find(d, name);
    if (t) {
        /* The same name must always carry the same kind of row. */
        DS3_ASSERT(t->dt == dt);
        DS3_ASSERT(t->ninner == ninner);
        for (int i = 0; i < ninner; i++) DS3_ASSERT(t->inner[i] == inner[i]);
    } else {
        t = add(d, name, dt, ninner, inner, true);
        if (!t) return;
    }
    DS3_ASSERT(t->data != NULL);  /* not a tensor compared and let go */

    int64_t lo = row0, hi = (int64_t)row0 + nrows;
    if (lo < 0) lo = 0;
    if (hi > t->rows) hi = t->rows;
    if (hi <= lo) {
        d->dropped += nrows;
        return;
    }
    d->dropped += nrows - (hi - lo);
    memcpy(t->data + (size_t)lo * t->row_bytes,
           (const unsigned char *)data + (size_t)(lo - row0) * t->row_bytes,
           (size_t)(hi - lo) * t->row_bytes);
    memset(t->written + lo, 1, (size_t)(hi - lo));
}

void ds3_dump_compared(ds3_dumper *d, const char *name, ds3_dtype dt, int ninner, const int64_t *inner) {
    DS3_ASSERT(d && name && !find(d, name));
    DS3_ASSERT(ninner >= 0 && ninner <= DUMP_MAX_INNER && (ninner == 0 || inner));
    if (d->failed) return;
    dump_tensor *t = add(d, name, dt, ninner, inner, false);
    if (t) memset(t->written, 1, (size_t)t->rows);  /* complete: nothing is missing, it is elsewhere */
}

/* ========================================================================== */
/* Writing                                                                     */
/* ========================================================================== */

static bool complete(const dump_tensor *t) {
    for (int r = 0; r < t->rows; r++)
        if (!t->written[r]) return false;
    return true;
}

/* "a,b,c" of the incomplete tensors' names (malloc'd, "" when none). */
static char *incomplete_list(const ds3_dumper *d) {
    size_t len = 1;
    for (int i = 0; i < d->n; i++)
        if (!complete(&d->t[i])) len += strlen(d->t[i].name) + 1;
    char *s = ds3_malloc(len);
    if (!s) return NULL;
    s[0] = '\0';
    for (int i = 0; i < d->n; i++) {
        if (complete(&d->t[i])) continue;
        if (s[0]) strcat(s, ",");
        strcat(s, d->t[i].name);
    }
    return s;
}

ds3_status ds3_dumper_set_shards(ds3_dumper *d, const char *json) {
    size_t n = strlen(json) + 1;
    char *c = ds3_malloc(n);
    if (!c) return DS3_ERR_NOMEM;
    memcpy(c, json, n);
    free(d->shards);
    d->shards = c;
    return DS3_OK;
}

/* Write to `path`, or (path NULL) into *buf / *len. */
static ds3_status dumper_write(ds3_dumper *d, const char *path, const char *const *metadata_kv, void **buf,
                               size_t *len) {
    const char *where = path ? path : "memory";
    if (!d) return ds3_fail(DS3_ERR_ARG, "dump: nothing captured (no dump in progress)");
    if (!buf && (!path || !path[0])) return ds3_fail(DS3_ERR_ARG, "dump: no output path");
    if (d->failed) return ds3_fail(DS3_ERR_NOMEM, "%s", d->errmsg);
    for (int i = 0; i < d->n; i++)
        if (!d->t[i].data)
            return ds3_fail(DS3_ERR_ARG, "dump: '%s' was compared and not kept: nothing to write", d->t[i].name);

    /* The caller's pairs come first; the ds3_ keys are ours, so a caller
     * cannot shadow them. */
    for (int i = 0; metadata_kv && metadata_kv[i]; i += 2) {
        const char *k = metadata_kv[i], *v = metadata_kv[i + 1];
        if (!v) return ds3_fail(DS3_ERR_ARG, "dump: metadata key '%s' has no value", k);
        if (!k[0] || strncmp(k, "ds3_", 4) == 0)
            return ds3_fail(DS3_ERR_ARG, "dump: metadata key '%s' is reserved or empty", k);
    }

    ds3_st_writer *w = ds3_stw_new();
    char *incomplete = incomplete_list(d);
    if (!w || !incomplete) {
        ds3_stw_free(w);
        free(incomplete);
        return ds3_fail(DS3_ERR_NOMEM, "dump: out of memory preparing %s", where);
    }

    ds3_status st = DS3_OK;
    for (int i = 0; i < d->n && st == DS3_OK; i++) {
        const dump_tensor *t = &d->t[i];
        int64_t shape[1 + DUMP_MAX_INNER];
        shape[0] = t->rows;
        for (int j = 0; j < t->ninner; j++) shape[1 + j] = t->inner[j];
        st = ds3_stw_add(w, t->name, t->dt, 1 + t->ninner, shape, t->data);
    }
    for (int i = 0; metadata_kv && metadata_kv[i] && st == DS3_OK; i += 2)
        st = ds3_stw_meta(w, metadata_kv[i], metadata_kv[i + 1]);

    char rows[32], dropped[32];
    snprintf(rows, sizeof rows, "%d", d->total);
    snprintf(dropped, sizeof dropped, "%lld", (long long)d->dropped);
#ifdef DS3_F64
    const char *precision = "f64";
#else
    const char *precision = "f32";
#endif
    const char *ours[] = {
        "ds3_dump_version", "1",
        "ds3_precision", precision,
        "ds3_rows", rows,
        "ds3_incomplete", incomplete,
        "ds3_rows_dropped", dropped,
        d->shards ? "ds3_shards" : NULL, d->shards,
    };
    for (size_t i = 0; i < sizeof ours / sizeof ours[0] && ours[i] && st == DS3_OK; i += 2)
        st = ds3_stw_meta(w, ours[i], ours[i + 1]);

    if (st == DS3_OK) st = path ? ds3_stw_write(w, path) : ds3_stw_write_mem(w, buf, len);
    ds3_stw_free(w);
    free(incomplete);
    return st;
}

ds3_status ds3_dumper_write(ds3_dumper *d, const char *path, const char *const *metadata_kv) {
    return dumper_write(d, path, metadata_kv, NULL, NULL);
}

ds3_status ds3_dumper_write_mem(ds3_dumper *d, const char *const *metadata_kv, void **buf, size_t *len) {
    *buf = NULL;
    *len = 0;
    return dumper_write(d, NULL, metadata_kv, buf, len);
}

/* ========================================================================== */
/* In memory                                                                   */
/* ========================================================================== */

ds3_status ds3_dumper_view(const ds3_dumper *d, ds3_st_file **out) {
    *out = NULL;
    if (d->failed) return ds3_fail(DS3_ERR_NOMEM, "%s", d->errmsg);
    ds3_st_file *f = ds3_calloc(1, sizeof *f);
    if (!f) return DS3_ERR_NOMEM;
    /* ds3_st_find's name-sorted index follows the entries (safetensors.c) */
    f->entries = ds3_calloc(1, (size_t)(d->n ? d->n : 1) * (sizeof *f->entries + sizeof(int32_t)));
    if (!f->entries) {
        free(f);
        return DS3_ERR_NOMEM;
    }
    for (int i = 0; i < d->n; i++) {
        const dump_tensor *t = &d->t[i];
        ds3_st_entry *e = &f->entries[f->n++];
        e->name = t->name;  /* borrowed from the dumper */
        e->dtype = t->dt;
        e->ndim = 1 + t->ninner;
        e->shape[0] = t->rows;
        for (int j = 0; j < t->ninner; j++) e->shape[1 + j] = t->inner[j];
        e->data = t->data;  /* NULL for a tensor compared and not kept */
        e->nbytes = (uint64_t)t->rows * t->row_bytes;
    }
    int32_t *idx = (int32_t *)(void *)(f->entries + d->n);
    for (int i = 0; i < d->n; i++) {  /* insertion sort: a dump has hundreds of names */
        int j = i;
        for (; j > 0 && strcmp(d->t[idx[j - 1]].name, d->t[i].name) > 0; j--) idx[j] = idx[j - 1];
        idx[j] = i;
    }
    *out = f;
    return DS3_OK;
}

void ds3_dumper_view_free(ds3_st_file *f) {
    if (!f) return;
    free(f->entries);
    free(f);
}

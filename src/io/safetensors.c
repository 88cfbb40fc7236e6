/*
 * safetensors.c — the checkpoint container, read by mmap and written whole.
 *
 * Format (huggingface/safetensors): an 8-byte little-endian header length N,
 * N bytes of JSON, then the data section. The JSON maps each tensor name to
 *     {"dtype": "BF16", "shape": [7168, 7168], "data_offsets": [begin, end]}
 * with offsets relative to the data section, plus an optional "__metadata__"
 * object of string → string. Hugging Face pads the header with spaces so the
 * data section starts 8-byte aligned; nothing else is aligned, so tensors are
 * read through memcpy (dtype.c).
 *
 * Reading maps the whole file read-only and validates every entry before any
 * pointer is handed out: a bad checkpoint must fail here with a message that
 * names the file and the tensor, not later as a crash in a kernel. Checks:
 * header length inside the file, JSON well formed, dtype known, shape
 * non-negative with ndim <= 8, shape × dtype size computed without overflow
 * and equal to end - begin, offsets ordered and inside the data section,
 * names unique, tensors not overlapping.
 *
 * A file that changes under the mapping. Another process may truncate or
 * rewrite a shard while ds3 runs on it. Truncation makes the vanished pages
 * raise SIGBUS on their next touch, which may be in any OpenMP worker or
 * inside OpenBLAS. ds3 does not jump out of that thread (siglongjmp from a
 * worker would leave the team and OpenBLAS's locks broken): the SIGBUS
 * handler, on a fault inside one of these mappings, maps anonymous zero pages
 * over the rest of that mapping (so the thread resumes, reading zeros), marks
 * the file, and returns. Every shard also keeps its identity at open (device,
 * inode, size, mtime). ds3_st_check reports a marked file as "changed size
 * while mapped" and any file whose identity differs now; callers check before
 * they report success (a dump is refused, `run` stops before printing a token
 * computed from changed weights). A fault outside every mapping goes to the
 * action the program had before (the default: the process dies of SIGBUS).
 *
 * Status codes: a file that ends too early (shorter than 8 bytes, header or
 * tensor running past the end) is DS3_ERR_IO — "truncated"; a file whose
 * contents contradict themselves is DS3_ERR_FORMAT.
 *
 * Writing (golden data, dumps, synthetic checkpoints) collects tensors by
 * reference, then writes header and data through outfile.c (a temporary of
 * its own, fsync'd and renamed over path), so a reader never sees half a file
 * (links followed, a FIFO or device written in place), or into one buffer in
 * memory (ds3_stw_write_mem; ds3_st_open_mem reads such a buffer back with the
 * same checks).
 */
#define _DEFAULT_SOURCE   /* MAP_ANONYMOUS */
#include "io/io.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* The same bound as the reference Rust implementation (MAX_HEADER_SIZE). */
#define ST_MAX_HEADER 100000000ull
#define ST_MAX_DIMS 8
/* JSON numbers are doubles; integers above 2^53 are no longer exact. */
#define ST_MAX_INT 9007199254740992.0

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = ds3_malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

/* "[5,6]" for messages. */
static const char *shape_str(char *buf, size_t size, const int64_t *shape, int ndim) {
    size_t k = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < ndim && k < size; i++)
        k += (size_t)snprintf(buf + k, size - k, "%s%lld", i ? "," : "", (long long)shape[i]);
    if (k < size) snprintf(buf + k, size - k, "]");
    return buf;
}

/* A JSON value as short text for messages ("-1", "\"abc\"", "[1,2]"). */
static const char *json_snippet(char *buf, size_t size, const cJSON *v) {
    char *s = v ? cJSON_PrintUnformatted(v) : NULL;
    snprintf(buf, size, "%s", s ? s : "missing");
    if (s && strlen(s) >= size && size > 4) memcpy(buf + size - 4, "...", 4);
    cJSON_free(s);
    return buf;
}

/* A JSON number that is an exact non-negative integer (<= 2^53), else -1. */
static int64_t json_uint(const cJSON *v) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0 && d <= ST_MAX_INT) || d != (double)(int64_t)d) return -1;
    return (int64_t)d;
}

/* count · size, or false when it does not fit in 64 bits. */
static bool mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
    if (a && b > UINT64_MAX / a) return false;
    *out = a * b;
    return true;
}

/* ========================================================================== */
/* Reading                                                                    */
/* ========================================================================== */

/*
 * Private layout behind the public struct, kept in the same allocations so
 * that ds3_st_file stays as declared in io/io.h:
 *   - entries[0..n) is followed by n int32 indices sorted by name, which give
 *     ds3_st_find a binary search (a V3 shard holds thousands of tensors);
 *   - metadata_json is the __metadata__ JSON text, NUL, then the decoded pairs
 *     as "\1key\0value\0"..., then a final NUL: ds3_st_meta returns pointers
 *     into it, valid until ds3_st_close.
 */
static const int32_t *name_index(const ds3_st_file *f) {
    return (const int32_t *)(const void *)(f->entries + f->n);
}

/* Entries' offsets, for the overlap check. */
typedef struct {
    uint64_t begin, end;
    int i;
} st_span;

static int cmp_span(const void *a, const void *b) {
    const st_span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->i - y->i;
}

/* qsort has no context argument: the entries being sorted by name. */
static _Thread_local const ds3_st_entry *sort_entries;
static int cmp_name(const void *a, const void *b) {
    return strcmp(sort_entries[*(const int32_t *)a].name, sort_entries[*(const int32_t *)b].name);
}

/* One tensor's header entry → e (name already set); data pointer from base. */
static ds3_status parse_entry(const ds3_st_file *f, const cJSON *item, ds3_st_entry *e,
                              const unsigned char *data, uint64_t data_size,
                              uint64_t *begin_out, uint64_t *end_out) {
    char sn[96], sh[160];
    const char *path = f->path, *name = e->name;
    if (!cJSON_IsObject(item))
        return ds3_fail(DS3_ERR_FORMAT, "%s: tensor '%s': entry is %s, expected an object with "
                        "dtype, shape and data_offsets", path, name, json_snippet(sn, sizeof sn, item));

    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    if (!cJSON_IsString(dt))
        return ds3_fail(DS3_ERR_FORMAT, "%s: tensor '%s': dtype is %s, expected a string such as \"BF16\"",
                        path, name, json_snippet(sn, sizeof sn, dt));
    int dtype = ds3_dtype_parse(dt->valuestring);
    if (dtype < 0)
        return ds3_fail(DS3_ERR_FORMAT, "%s: tensor '%s': unknown dtype '%s' (supported: F32, F16, "
                        "BF16, F8_E4M3, F64, I32, I64, U8)", path, name, dt->valuestring);
    e->dtype = (ds3_dtype)dtype;

    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
    if (!cJSON_IsArray(shape))
        return ds3_fail(DS3_ERR_FORMAT, "%s: tensor '%s': shape is %s, expected an array of integers",
                        path, name, json_snippet(sn, sizeof sn, shape));
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > ST_MAX_DIMS)
        return ds3_fail(DS3_ERR_FORMAT, "%s: tensor '%s': shape %s has %d dimensions, at most %d supported",
                        path, name, json_snippet(sn, sizeof sn, shape), ndim, ST_MAX_DIMS);
    e->ndim = ndim;
    /* The element count is a product of up to 8 numbers below 2^53: check
     * every multiplication, then the one by the element size. */
    uint64_t count = 1;
    bool overflow = false;
    int d = 0;
    for (const cJSON *v = shape->child; v; v = v->next, d++) {
        int64_t n = json_uint(v);
        if (n < 0)
            return ds3_fail(DS3_ERR_FORMAT, "%s: tensor '%s': shape %s: dimension %d is %s, expected a "
                            "non-negative integer", path, name, json_snippet(sn, sizeof sn, shape), d,
                            json_snippet(sh, sizeof sh, v));
        e->shape[d] = n;
        if (!mul_u64(count, (uint64_t)n, &count)) overflow = true;
    }
    uint64_t nbytes = 0;
    if (overflow || !mul_u64(count, ds3_dtype_size(e->dtype), &nbytes))
        return ds3_fail(DS3_ERR_FORMAT, "%s: tensor '%s': shape %s of %s: byte size overflows 64 bits",
                        path, name, shape_str(sh, sizeof sh, e->shape, ndim), ds3_dtype_name(e->dtype));

    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    int64_t b = -1, en = -1;
    if (cJSON_IsArray(offs) && cJSON_GetArraySize(offs) == 2) {
        b = json_uint(cJSON_GetArrayItem(offs, 0));
        en = json_uint(cJSON_GetArrayItem(offs, 1));
    }
    if (b < 0 || en < 0)
        return ds3_fail(DS3_ERR_FORMAT, "%s: tensor '%s': data_offsets is %s, expected [begin, end] "
                        "with non-negative integers", path, name, json_snippet(sn, sizeof sn, offs));
    uint64_t begin = (uint64_t)b, end = (uint64_t)en;
    if (begin > end)
        return ds3_fail(DS3_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu,%llu] are reversed",
                        path, name, (unsigned long long)begin, (unsigned long long)end);
    if (end > data_size)
        return ds3_fail(DS3_ERR_IO, "%s: tensor '%s': data_offsets [%llu,%llu] run past the end of the "
                        "data section (%llu bytes): file truncated?", path, name,
                        (unsigned long long)begin, (unsigned long long)end, (unsigned long long)data_size);
    if (end - begin != nbytes)
        return ds3_fail(DS3_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu,%llu] hold %llu bytes, "
                        "shape %s of %s needs %llu", path, name, (unsigned long long)begin,
                        (unsigned long long)end, (unsigned long long)(end - begin),
                        shape_str(sh, sizeof sh, e->shape, ndim), ds3_dtype_name(e->dtype),
                        (unsigned long long)nbytes);
    e->data = data + begin;
    e->nbytes = nbytes;
    *begin_out = begin;
    *end_out = end;
    return DS3_OK;
}

/* __metadata__: string values only (the format's HashMap<String, String>). */
static ds3_status parse_metadata(ds3_st_file *f, const cJSON *meta) {
    char sn[96];
    if (!cJSON_IsObject(meta))
        return ds3_fail(DS3_ERR_FORMAT, "%s: __metadata__ is %s, expected an object of strings",
                        f->path, json_snippet(sn, sizeof sn, meta));
    size_t pairs = 1; /* the closing NUL */
    for (const cJSON *v = meta->child; v; v = v->next) {
        if (!cJSON_IsString(v))
            return ds3_fail(DS3_ERR_FORMAT, "%s: __metadata__ value of '%s' is %s, expected a string",
                            f->path, v->string, json_snippet(sn, sizeof sn, v));
        pairs += 1 + strlen(v->string) + 1 + strlen(v->valuestring) + 1;
    }
    char *json = cJSON_PrintUnformatted(meta);
    if (!json) return ds3_fail(DS3_ERR_NOMEM, "%s: out of memory printing __metadata__", f->path);
    size_t jlen = strlen(json);
    char *buf = ds3_malloc(jlen + 1 + pairs);
    if (!buf) { cJSON_free(json); return DS3_ERR_NOMEM; }
    memcpy(buf, json, jlen + 1);
    cJSON_free(json);
    char *p = buf + jlen + 1;
    for (const cJSON *v = meta->child; v; v = v->next) {
        size_t kl = strlen(v->string) + 1, vl = strlen(v->valuestring) + 1;
        *p++ = '\1';
        memcpy(p, v->string, kl); p += kl;
        memcpy(p, v->valuestring, vl); p += vl;
    }
    *p = '\0';
    f->metadata_json = buf;
    return DS3_OK;
}

/* Everything after the mapping: header JSON → entries. */
static ds3_status parse_header(ds3_st_file *f) {
    const unsigned char *map = f->map;
    const uint64_t size = f->map_size;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | map[i]; /* little-endian on any host */

    /* Compare against what is left rather than computing 8 + hlen, which a
     * garbage length (the first 8 bytes of some other file) would overflow. */
    if (hlen > size - 8)
        return ds3_fail(DS3_ERR_IO, "%s: header length %llu runs past the end of the file (%llu bytes): "
                        "truncated, or not a safetensors file", f->path, (unsigned long long)hlen,
                        (unsigned long long)size);
    if (hlen > ST_MAX_HEADER)
        return ds3_fail(DS3_ERR_FORMAT, "%s: header length %llu exceeds the %llu-byte limit: not a "
                        "safetensors file?", f->path, (unsigned long long)hlen, ST_MAX_HEADER);
    if (hlen < 2)
        return ds3_fail(DS3_ERR_FORMAT, "%s: header length %llu cannot hold a JSON object",
                        f->path, (unsigned long long)hlen);

    const char *header = (const char *)map + 8;
    const unsigned char *data = map + 8 + hlen;
    const uint64_t data_size = size - 8 - hlen;

    /* The header is not NUL-terminated (data follows it): parse by length. */
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(header, (size_t)hlen, &end, 0);
    if (!root) {
        long at = end ? (long)(end - header) : 0;
        return ds3_fail(DS3_ERR_FORMAT, "%s: header is not valid JSON (parse error at byte %ld of %llu)",
                        f->path, at, (unsigned long long)hlen);
    }
    /* Only whitespace may follow the object (HF pads with spaces). */
    for (const char *p = end; p < header + hlen; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            cJSON_Delete(root);
            return ds3_fail(DS3_ERR_FORMAT, "%s: unexpected byte 0x%02x after the header JSON at byte %ld",
                            f->path, (unsigned char)*p, (long)(p - header));
        }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return ds3_fail(DS3_ERR_FORMAT, "%s: header is not a JSON object", f->path);
    }

    int n = 0;
    for (const cJSON *v = root->child; v; v = v->next)
        if (strcmp(v->string, "__metadata__") != 0) n++;

    /* Entries, then the name index behind them (see above). */
    ds3_status st = DS3_OK;
    st_span *spans = NULL;
    f->entries = ds3_calloc(1, (size_t)n * (sizeof(ds3_st_entry) + sizeof(int32_t)));
    spans = ds3_calloc((size_t)n + 1, sizeof *spans);
    if (!f->entries || !spans) { st = DS3_ERR_NOMEM; goto done; }

    for (const cJSON *v = root->child; v; v = v->next) {
        if (strcmp(v->string, "__metadata__") == 0) {
            if (f->metadata_json)
                st = ds3_fail(DS3_ERR_FORMAT, "%s: __metadata__ appears twice in the header", f->path);
            else
                st = parse_metadata(f, v);
            if (st != DS3_OK) goto done;
            continue;
        }
        ds3_st_entry *e = &f->entries[f->n];
        if (!(e->name = dup_str(v->string))) { st = DS3_ERR_NOMEM; goto done; }
        f->n++; /* counted now, so ds3_st_close frees the name on any error */
        st = parse_entry(f, v, e, data, data_size, &spans[f->n - 1].begin, &spans[f->n - 1].end);
        if (st != DS3_OK) goto done;
        spans[f->n - 1].i = f->n - 1;
    }

    /* Names are unique: sort an index by name and compare neighbours. */
    int32_t *idx = (int32_t *)(void *)(f->entries + n);
    for (int i = 0; i < n; i++) idx[i] = i;
    sort_entries = f->entries;
    qsort(idx, (size_t)n, sizeof *idx, cmp_name);
    for (int i = 1; i < n; i++)
        if (strcmp(f->entries[idx[i - 1]].name, f->entries[idx[i]].name) == 0) {
            st = ds3_fail(DS3_ERR_FORMAT, "%s: tensor '%s' appears twice in the header", f->path,
                          f->entries[idx[i]].name);
            goto done;
        }

    /* No two tensors share a byte: sorted by begin, each starts at or after
     * the furthest end so far. Empty tensors own no bytes and may sit anywhere. */
    qsort(spans, (size_t)n, sizeof *spans, cmp_span);
    uint64_t reach = 0;
    int owner = -1;
    for (int i = 0; i < n; i++) {
        if (spans[i].begin == spans[i].end) continue;
        if (owner >= 0 && spans[i].begin < reach) {
            const st_span *a = NULL;
            for (int j = 0; j < n; j++) if (spans[j].i == owner) a = &spans[j];
            st = ds3_fail(DS3_ERR_FORMAT, "%s: tensors '%s' [%llu,%llu] and '%s' [%llu,%llu] overlap",
                          f->path, f->entries[owner].name, (unsigned long long)a->begin,
                          (unsigned long long)a->end, f->entries[spans[i].i].name,
                          (unsigned long long)spans[i].begin, (unsigned long long)spans[i].end);
            goto done;
        }
        if (spans[i].end > reach) { reach = spans[i].end; owner = spans[i].i; }
    }

done:
    free(spans);
    cJSON_Delete(root);
    return st;
}

/* ========================================================================== */
/* Mappings that may change underneath: the SIGBUS guard                       */
/* ========================================================================== */

/* One per open file, in a list the handler walks. Nodes are never freed (a
 * closed file's node is reused by the next open), so the handler never reads
 * freed memory; state: 0 free, 1 being set up, 2 guarding [base, base+size).
 * Free nodes are also on a stack of their own (a spin lock: never taken in the
 * handler), so an open finds one in O(1): scanning the list for one made
 * loading F shards cost O(F^2) (measured: 60,000 shards, bench_index). */
typedef struct st_guard {
    atomic_int state;
    atomic_int faulted;          /* a SIGBUS landed in this mapping */
    uintptr_t base;
    size_t size;
    struct st_guard *next;       /* set once, before the node is published */
    struct st_guard *free_next;  /* on the free stack: under free_lock */
} st_guard;

static _Atomic(st_guard *) guards;
static st_guard *free_guards;
static atomic_flag free_lock = ATOMIC_FLAG_INIT;

static void free_lock_take(void) {
    while (atomic_flag_test_and_set_explicit(&free_lock, memory_order_acquire)) {}
}
static void free_lock_give(void) { atomic_flag_clear_explicit(&free_lock, memory_order_release); }
static struct sigaction sigbus_before;   /* the program's action, for faults not ours */
static size_t page_size;

static void on_sigbus(int sig, siginfo_t *si, void *ctx) {
    (void)ctx;
    uintptr_t a = (uintptr_t)si->si_addr;
    for (st_guard *g = atomic_load(&guards); g; g = g->next) {
        if (atomic_load(&g->state) != 2 || a < g->base || a - g->base >= g->size) continue;
        /* Zeros from the faulting page to the end of the mapping: the file
         * shrank, so every later page would fault too. mmap is a plain system
         * call here (not on POSIX's async-signal-safe list, but it takes no
         * user-space lock). */
        uintptr_t page = a & ~(uintptr_t)(page_size - 1);
        size_t len = g->base + g->size - page;
        if (mmap((void *)page, len, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != MAP_FAILED) {
            atomic_store(&g->faulted, 1);
            return;   /* the faulting access runs again and reads zeros */
        }
        break;
    }
    /* Not ours (or no memory for zeros): what the program had before. The
     * access faults again on return and meets that action. */
    sigaction(sig, &sigbus_before, NULL);
}

static st_guard *guard_add(void *map, size_t size) {
    static atomic_int installed;
    if (!atomic_exchange(&installed, 1)) {
        long ps = sysconf(_SC_PAGESIZE);
        page_size = ps > 0 ? (size_t)ps : 4096;
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_sigbus;
        sa.sa_flags = SA_SIGINFO;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGBUS, &sa, &sigbus_before);
    }
    free_lock_take();
    st_guard *g = free_guards;
    if (g) {
        free_guards = g->free_next;
        atomic_store(&g->state, 1);
    }
    free_lock_give();
    if (!g) {
        if (!(g = calloc(1, sizeof *g))) return NULL;
        atomic_store(&g->state, 1);
        g->next = atomic_load(&guards);
        while (!atomic_compare_exchange_weak(&guards, &g->next, g)) {}
    }
    g->base = (uintptr_t)map;
    g->size = size;
    atomic_store(&g->faulted, 0);
    atomic_store(&g->state, 2);
    return g;
}

const char *ds3_file_kind(unsigned mode) {
    return S_ISDIR(mode)    ? "a directory"
           : S_ISFIFO(mode) ? "a FIFO"
           : S_ISCHR(mode)  ? "a character device"
           : S_ISBLK(mode)  ? "a block device"
           : S_ISSOCK(mode) ? "a socket"
           : S_ISLNK(mode)  ? "a symbolic link"
           : S_ISREG(mode)  ? "a regular file"
                            : "not a regular file";
}

static int64_t mtime_ns(const struct stat *sb) {
    return (int64_t)sb->st_mtim.tv_sec * 1000000000 + sb->st_mtim.tv_nsec;
}

ds3_status ds3_st_check(const ds3_st_file *f) {
    const st_guard *g = f->guard;
    struct stat sb;
    if (g && atomic_load(&g->faulted)) {
        char now[48] = "";
        if (stat(f->path, &sb) == 0) snprintf(now, sizeof now, ", %llu now", (unsigned long long)sb.st_size);
        return ds3_fail(DS3_ERR_IO, "%s changed size while mapped (%llu bytes when loaded%s); what was computed "
                        "from it is refused", f->path, (unsigned long long)f->map_size, now);
    }
    if (stat(f->path, &sb) != 0)
        return ds3_fail(DS3_ERR_IO, "%s changed while in use: it is gone (%s); what was computed from it is refused",
                        f->path, strerror(errno));
    if ((uint64_t)sb.st_dev != f->id_dev || (uint64_t)sb.st_ino != f->id_ino)
        return ds3_fail(DS3_ERR_IO, "%s changed while in use: another file (inode %llu, was %llu) has its name; "
                        "what was computed from it is refused", f->path, (unsigned long long)sb.st_ino,
                        (unsigned long long)f->id_ino);
    if ((uint64_t)sb.st_size != f->map_size)
        return ds3_fail(DS3_ERR_IO, "%s changed size while mapped (%llu bytes when loaded, %llu now); what was "
                        "computed from it is refused", f->path, (unsigned long long)f->map_size,
                        (unsigned long long)sb.st_size);
    if (mtime_ns(&sb) != f->id_mtime_ns)
        return ds3_fail(DS3_ERR_IO, "%s changed while in use (rewritten: modification time %lld.%09lld, was "
                        "%lld.%09lld); what was computed from it is refused", f->path,
                        (long long)(mtime_ns(&sb) / 1000000000), (long long)(mtime_ns(&sb) % 1000000000),
                        (long long)(f->id_mtime_ns / 1000000000), (long long)(f->id_mtime_ns % 1000000000));
    return DS3_OK;
}

/* ========================================================================== */
/* Opening                                                                     */
/* ========================================================================== */

ds3_status ds3_st_open(const char *path, ds3_st_file **out) {
    *out = NULL;
    /* O_NONBLOCK: a FIFO in the model's place must not hang the open; it is
     * refused below, by name. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return ds3_fail(DS3_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int err = errno;
        close(fd);
        return ds3_fail(DS3_ERR_IO, "%s: cannot stat: %s", path, strerror(err));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return ds3_fail(DS3_ERR_IO, "%s: is %s, not a regular file", path, ds3_file_kind(sb.st_mode));
    }
    if (sb.st_size < 8) {
        close(fd);
        return ds3_fail(DS3_ERR_IO, "%s: file is %lld bytes, too short for the 8-byte header length "
                        "(empty or truncated)", path, (long long)sb.st_size);
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        close(fd);
        return ds3_fail(DS3_ERR_IO, "%s: file of %lld bytes does not fit in the address space", path,
                        (long long)sb.st_size);
    }
    size_t size = (size_t)sb.st_size;
    /* Map, don't read: a V3 shard is ~4 GB and a forward pass touches only the
     * experts it routes to, so pages come in on demand and stay shared with
     * the page cache. Read-only: a stray write into weights faults at once. */
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int err = errno;
    close(fd); /* the mapping keeps the file alive */
    if (map == MAP_FAILED) {
        /* Mapping needs address space, not memory: a limit on it (ulimit -v,
         * RLIMIT_AS) smaller than the checkpoint is the usual cause. */
        struct rlimit rl;
        if (err == ENOMEM && getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
            return ds3_fail(DS3_ERR_IO, "%s: cannot mmap %zu bytes: %s (the address-space limit, ulimit -v, is "
                            "%.1f GB; ds3 maps every shard whole: raise the limit, or use a memory limit instead, "
                            "under which the pages are read as needed)", path, size, strerror(err),
                            (double)rl.rlim_cur / 1e9);
        return ds3_fail(DS3_ERR_IO, "%s: cannot mmap %zu bytes: %s", path, size, strerror(err));
    }

    ds3_st_file *f = ds3_calloc(1, sizeof *f);
    if (!f) { munmap(map, size); return DS3_ERR_NOMEM; }
    f->map = map;
    f->map_size = size;
    f->id_dev = (uint64_t)sb.st_dev;
    f->id_ino = (uint64_t)sb.st_ino;
    f->id_mtime_ns = mtime_ns(&sb);
    if (!(f->path = dup_str(path)) || !(f->guard = guard_add(map, size))) {
        ds3_st_close(f);
        return DS3_ERR_NOMEM;
    }
    ds3_status st = parse_header(f);
    /* truncated while the header was being read: say so, not "bad JSON" */
    if (st != DS3_OK && atomic_load(&((st_guard *)f->guard)->faulted)) st = ds3_st_check(f);
    if (st != DS3_OK) { ds3_st_close(f); return st; }
    *out = f;
    return DS3_OK;
}

/* The same checks on bytes the caller holds (a dump made in memory, or one a
 * binding read): nothing is copied, so buf must outlive the file. */
ds3_status ds3_st_open_mem(const void *buf, size_t len, const char *label, ds3_st_file **out) {
    *out = NULL;
    if (!label) label = "(memory)";
    if (!buf || len < 8)
        return ds3_fail(DS3_ERR_IO, "%s: %zu bytes, too short for the 8-byte header length (empty or truncated)",
                        label, buf ? len : 0);
    ds3_st_file *f = ds3_calloc(1, sizeof *f);
    if (!f) return DS3_ERR_NOMEM;
    f->map = (void *)(uintptr_t)buf;   /* read only, like the mapping */
    f->map_size = len;
    f->borrowed = true;
    if (!(f->path = dup_str(label))) { ds3_st_close(f); return DS3_ERR_NOMEM; }
    ds3_status st = parse_header(f);
    if (st != DS3_OK) { ds3_st_close(f); return st; }
    *out = f;
    return DS3_OK;
}

void ds3_st_close(ds3_st_file *f) {
    if (!f) return;
    if (f->guard) {
        st_guard *g = f->guard;
        atomic_store(&g->state, 0);   /* before the range can be reused */
        free_lock_take();
        g->free_next = free_guards;
        free_guards = g;
        free_lock_give();
    }
    if (f->map && !f->borrowed) munmap(f->map, f->map_size);
    for (int i = 0; i < f->n; i++) free(f->entries[i].name);
    free(f->entries);
    free(f->metadata_json);
    free(f->path);
    free(f);
}

const ds3_st_entry *ds3_st_find(const ds3_st_file *f, const char *name) {
    const int32_t *idx = name_index(f);
    int lo = 0, hi = f->n; /* binary search over the name-sorted index */
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(f->entries[idx[mid]].name, name);
        if (c == 0) return &f->entries[idx[mid]];
        if (c < 0) lo = mid + 1; else hi = mid;
    }
    return NULL;
}

const char *ds3_st_meta(const ds3_st_file *f, const char *key) {
    if (!f->metadata_json) return NULL;
    const char *p = f->metadata_json + strlen(f->metadata_json) + 1;
    while (*p == '\1') {
        const char *k = p + 1, *v = k + strlen(k) + 1;
        if (strcmp(k, key) == 0) return v;
        p = v + strlen(v) + 1;
    }
    return NULL;
}

/* ========================================================================== */
/* Writing                                                                    */
/* ========================================================================== */

typedef struct {
    char *name;
    ds3_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data;        /* the caller's, until ds3_stw_write */
    uint64_t nbytes;
} stw_tensor;

struct ds3_st_writer {
    int n, cap;
    stw_tensor *t;           /* in insertion order = file order */
    int nmeta, capmeta;
    char **meta;             /* [nmeta][2]: key, value */
};

ds3_st_writer *ds3_stw_new(void) { return ds3_calloc(1, sizeof(ds3_st_writer)); }

void ds3_stw_free(ds3_st_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) free(w->t[i].name);
    for (int i = 0; i < 2 * w->nmeta; i++) free(w->meta[i]);
    free(w->t);
    free(w->meta);
    free(w);
}

/* Grow *arr (of *cap elements of size elem) to hold need. */
static bool grow(void **arr, int *cap, int need, size_t elem) {
    if (need <= *cap) return true;
    int nc = *cap ? *cap * 2 : 64;
    while (nc < need) nc *= 2;
    void *p = realloc(*arr, (size_t)nc * elem);
    if (!p) { ds3_fail(DS3_ERR_NOMEM, "out of memory growing the safetensors writer"); return false; }
    *arr = p;
    *cap = nc;
    return true;
}

ds3_status ds3_stw_add(ds3_st_writer *w, const char *name, ds3_dtype dt, int ndim,
                       const int64_t *shape, const void *data) {
    char sh[160];
    if (!name || !*name || strcmp(name, "__metadata__") == 0)
        return ds3_fail(DS3_ERR_ARG, "safetensors writer: invalid tensor name '%s'", name ? name : "(null)");
    if ((unsigned)dt >= DS3_DT_COUNT)
        return ds3_fail(DS3_ERR_ARG, "safetensors writer: tensor '%s': invalid dtype %d", name, (int)dt);
    if (ndim < 0 || ndim > ST_MAX_DIMS)
        return ds3_fail(DS3_ERR_ARG, "safetensors writer: tensor '%s': %d dimensions, at most %d",
                        name, ndim, ST_MAX_DIMS);
    uint64_t count = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0 || !mul_u64(count, (uint64_t)shape[d], &count))
            return ds3_fail(DS3_ERR_ARG, "safetensors writer: tensor '%s': bad shape %s", name,
                            shape_str(sh, sizeof sh, shape, ndim));
    }
    uint64_t nbytes;
    if (!mul_u64(count, ds3_dtype_size(dt), &nbytes) || nbytes > (uint64_t)ST_MAX_INT)
        return ds3_fail(DS3_ERR_ARG, "safetensors writer: tensor '%s': shape %s of %s is too large",
                        name, shape_str(sh, sizeof sh, shape, ndim), ds3_dtype_name(dt));
    if (nbytes && !data)
        return ds3_fail(DS3_ERR_ARG, "safetensors writer: tensor '%s': no data", name);
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return ds3_fail(DS3_ERR_ARG, "safetensors writer: tensor '%s' added twice", name);

    if (!grow((void **)&w->t, &w->cap, w->n + 1, sizeof *w->t)) return DS3_ERR_NOMEM;
    stw_tensor *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    if (!(t->name = dup_str(name))) return DS3_ERR_NOMEM;
    t->dtype = dt;
    t->ndim = ndim;
    for (int d = 0; d < ndim; d++) t->shape[d] = shape[d];
    t->data = data;
    t->nbytes = nbytes;
    w->n++;
    return DS3_OK;
}

ds3_status ds3_stw_meta(ds3_st_writer *w, const char *key, const char *value) {
    char *v = dup_str(value);
    if (!v) return DS3_ERR_NOMEM;
    for (int i = 0; i < w->nmeta; i++)
        if (strcmp(w->meta[2 * i], key) == 0) { /* a repeated key replaces the value */
            free(w->meta[2 * i + 1]);
            w->meta[2 * i + 1] = v;
            return DS3_OK;
        }
    int cap2 = w->capmeta;
    char *k = dup_str(key);
    if (!k || !grow((void **)&w->meta, &cap2, 2 * (w->nmeta + 1), sizeof(char *))) {
        free(k); free(v);
        return DS3_ERR_NOMEM;
    }
    w->capmeta = cap2;
    w->meta[2 * w->nmeta] = k;
    w->meta[2 * w->nmeta + 1] = v;
    w->nmeta++;
    return DS3_OK;
}

/* A growing string for the header. */
typedef struct {
    char *p;
    size_t len, cap;
    bool oom;
} strbuf;

static void sb_put(strbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 4096;
        while (nc < b->len + n + 1) nc *= 2;
        char *p = realloc(b->p, nc);
        if (!p) { b->oom = true; return; }
        b->p = p;
        b->cap = nc;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}
static void sb_puts(strbuf *b, const char *s) { sb_put(b, s, strlen(s)); }
static void sb_u64(strbuf *b, uint64_t v) {
    char tmp[32];
    sb_put(b, tmp, (size_t)snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v));
}

/* A JSON string literal: quotes, backslashes and control bytes escaped;
 * other bytes (UTF-8 included) pass through. */
static void sb_json_str(strbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            sb_put(b, e, 2);
        } else if (c < 0x20) {
            char e[8];
            sb_put(b, e, (size_t)snprintf(e, sizeof e, "\\u%04x", c));
        } else {
            sb_put(b, (const char *)&c, 1);
        }
    }
    sb_put(b, "\"", 1);
}

/* The header JSON: __metadata__ first (as HF writes it), then the tensors in
 * insertion order with contiguous offsets; padded with spaces so that
 * 8 + length is a multiple of 8 and the data section starts aligned. */
static bool build_header(const ds3_st_writer *w, strbuf *b) {
    sb_puts(b, "{");
    if (w->nmeta) {
        sb_puts(b, "\"__metadata__\":{");
        for (int i = 0; i < w->nmeta; i++) {
            if (i) sb_puts(b, ",");
            sb_json_str(b, w->meta[2 * i]);
            sb_puts(b, ":");
            sb_json_str(b, w->meta[2 * i + 1]);
        }
        sb_puts(b, "}");
    }
    uint64_t off = 0;
    for (int i = 0; i < w->n; i++) {
        const stw_tensor *t = &w->t[i];
        if (i || w->nmeta) sb_puts(b, ",");
        sb_json_str(b, t->name);
        sb_puts(b, ":{\"dtype\":\"");
        sb_puts(b, ds3_dtype_name(t->dtype));
        sb_puts(b, "\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            if (d) sb_puts(b, ",");
            sb_u64(b, (uint64_t)t->shape[d]);
        }
        sb_puts(b, "],\"data_offsets\":[");
        sb_u64(b, off);
        sb_puts(b, ",");
        sb_u64(b, off + t->nbytes);
        sb_puts(b, "]}");
        off += t->nbytes;
    }
    sb_puts(b, "}");
    while (!b->oom && (8 + b->len) % 8 != 0) sb_puts(b, " ");
    return !b->oom;
}

/* The same bytes into one malloc'd buffer (dumps handed to a binding). */
ds3_status ds3_stw_write_mem(ds3_st_writer *w, void **buf, size_t *len) {
    *buf = NULL;
    *len = 0;
    strbuf hb = {0};
    if (!build_header(w, &hb)) {
        free(hb.p);
        return ds3_fail(DS3_ERR_NOMEM, "out of memory building the safetensors header");
    }
    if (hb.len > ST_MAX_HEADER) {
        free(hb.p);
        return ds3_fail(DS3_ERR_ARG, "header of %zu bytes exceeds the %llu-byte limit readers accept", hb.len,
                        ST_MAX_HEADER);
    }
    size_t total = 8 + hb.len;
    for (int i = 0; i < w->n; i++) total += (size_t)w->t[i].nbytes;
    unsigned char *out = malloc(total);
    if (!out) {
        free(hb.p);
        return ds3_fail(DS3_ERR_NOMEM, "out of memory for a %zu-byte safetensors buffer", total);
    }
    for (int i = 0; i < 8; i++) out[i] = (unsigned char)((uint64_t)hb.len >> (8 * i));
    memcpy(out + 8, hb.p, hb.len);
    size_t at = 8 + hb.len;
    for (int i = 0; i < w->n; i++) {
        if (w->t[i].nbytes) memcpy(out + at, w->t[i].data, (size_t)w->t[i].nbytes);
        at += (size_t)w->t[i].nbytes;
    }
    free(hb.p);
    *buf = out;
    *len = total;
    return DS3_OK;
}

ds3_status ds3_stw_write(ds3_st_writer *w, const char *path) {
    strbuf hb = {0};
    if (!build_header(w, &hb)) {
        free(hb.p);
        return ds3_fail(DS3_ERR_NOMEM, "%s: out of memory building the safetensors header", path);
    }
    if (hb.len > ST_MAX_HEADER) {
        free(hb.p);
        return ds3_fail(DS3_ERR_ARG, "%s: header of %zu bytes exceeds the %llu-byte limit readers accept",
                        path, hb.len, ST_MAX_HEADER);
    }

    ds3_outfile o;
    ds3_status st = ds3_outfile_open(&o, path);
    if (st != DS3_OK) {
        free(hb.p);
        return st;
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)hb.len >> (8 * i));
    bool ok = fwrite(len8, 1, 8, o.fp) == 8 && fwrite(hb.p, 1, hb.len, o.fp) == hb.len;
    for (int i = 0; ok && i < w->n; i++)
        if (w->t[i].nbytes) ok = fwrite(w->t[i].data, 1, (size_t)w->t[i].nbytes, o.fp) == w->t[i].nbytes;
    int err = errno;
    free(hb.p);
    return ds3_outfile_close(&o, ok, err);
}

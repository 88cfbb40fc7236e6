/*
 * fuzz_safetensors.c — libFuzzer target for the safetensors header and offset
 * parser (src/io/safetensors.c): the input is a whole file.
 *
 * The parser is reached below the mmap: this file includes safetensors.c to
 * call its static parse_header() on the input placed so that its last byte
 * sits right before a PROT_NONE guard page. A read one byte past the end of
 * the "file" — by our code or by cJSON, which the distribution ships without
 * instrumentation — faults at once, as it would past the end of a mapping.
 *
 * On success the target checks what every later user of the entries relies
 * on, and aborts (a crash libFuzzer reports) if it does not hold:
 *   - every entry's bytes lie inside the data section, and equal shape × dtype;
 *   - no two non-empty entries overlap;
 *   - ds3_st_find finds every entry by name; metadata lookups terminate.
 * Every byte of every tensor is read, so a bad pointer cannot hide.
 */
/* MAP_ANONYMOUS is not POSIX: ask for the system's extensions first. */
#define _DEFAULT_SOURCE
#include "../../src/io/safetensors.c"

#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#define FUZZ_REQUIRE(cond)                                                        \
    do {                                                                          \
        if (!(cond)) {                                                            \
            fprintf(stderr, "fuzz_safetensors: invariant broken: %s (line %d)\n", \
                    #cond, __LINE__);                                             \
            abort();                                                              \
        }                                                                         \
    } while (0)

/* A buffer of `cap` bytes followed by an inaccessible page. */
static unsigned char *region;
static size_t region_cap;

static unsigned char *place(const uint8_t *data, size_t size) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    if (size > region_cap) {
        if (region) munmap(region, region_cap + page);
        region_cap = (size + page - 1) / page * page;
        region = mmap(NULL, region_cap + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (region == MAP_FAILED) abort();
        if (mprotect(region + region_cap, page, PROT_NONE) != 0) abort();
    }
    unsigned char *p = region + region_cap - size;
    memcpy(p, data, size);
    return p;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* ds3_st_open refuses files shorter than the 8-byte length before parsing. */
    if (size < 8) return 0;
    const unsigned char *map = place(data, size);

    ds3_st_file *f = calloc(1, sizeof *f);
    if (!f) return 0;
    f->path = dup_str("fuzz.safetensors");
    f->map = (void *)map;
    f->map_size = size;
    ds3_status st = parse_header(f);
    /* A failure leaves a message naming the file. */
    if (st != DS3_OK) FUZZ_REQUIRE(strstr(ds3_last_error(), "fuzz.safetensors") != NULL || st == DS3_ERR_NOMEM);

    if (st == DS3_OK) {
        uint64_t hlen = 0;
        for (int i = 7; i >= 0; i--) hlen = hlen << 8 | map[i];
        const unsigned char *dstart = map + 8 + hlen, *dend = map + size;
        volatile unsigned sum = 0;
        for (int i = 0; i < f->n; i++) {
            const ds3_st_entry *e = &f->entries[i];
            const unsigned char *b = e->data;
            FUZZ_REQUIRE(b >= dstart && b <= dend && e->nbytes <= (uint64_t)(dend - b));
            FUZZ_REQUIRE(e->ndim >= 0 && e->ndim <= ST_MAX_DIMS);
            uint64_t count = 1;
            for (int d = 0; d < e->ndim; d++) {
                FUZZ_REQUIRE(e->shape[d] >= 0);
                count *= (uint64_t)e->shape[d];
            }
            FUZZ_REQUIRE(count * ds3_dtype_size(e->dtype) == e->nbytes);
            for (uint64_t k = 0; k < e->nbytes; k++) sum += b[k];
            FUZZ_REQUIRE(ds3_st_find(f, e->name) == e);
            for (int j = 0; j < i; j++) {
                const ds3_st_entry *o = &f->entries[j];
                const unsigned char *ob = o->data;
                bool disjoint = !e->nbytes || !o->nbytes || b + e->nbytes <= ob || ob + o->nbytes <= b;
                FUZZ_REQUIRE(disjoint);
            }
        }
        (void)sum;
        (void)ds3_st_find(f, "");
        (void)ds3_st_find(f, "model.embed_tokens.weight");
        (void)ds3_st_meta(f, "format");
        (void)ds3_st_meta(f, "");
    }

    f->map = NULL;   /* borrowed: not ours to munmap */
    ds3_st_close(f);
    return 0;
}

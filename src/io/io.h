/*
 * io.h — files (src/io/): reading and writing safetensors, and writing any
 * whole output file so that it appears complete or not at all. Not API.
 */
#ifndef DS3_IO_H
#define DS3_IO_H

#include "kernels/kernels.h"

/* ========================================================================== */
/* safetensors.c — reading (mmap) and writing                                  */
/* ========================================================================== */

typedef struct {
    char *name;
    ds3_dtype dtype;
    int ndim;
    int64_t shape[8];
    const void *data;        /* into the mapping */
    uint64_t nbytes;
} ds3_st_entry;

typedef struct {
    char *path;
    void *map;               /* whole file, read-only */
    size_t map_size;
    int n;
    ds3_st_entry *entries;   /* in header order */
    char *metadata_json;     /* the __metadata__ object as JSON text, or NULL */
} ds3_st_file;

/* Open and validate a safetensors file: header length within the file, JSON
 * well formed, every offset pair ordered, inside the data section and equal to
 * shape x dtype size. Errors name the file and the tensor. */
ds3_status ds3_st_open(const char *path, ds3_st_file **out);
void ds3_st_close(ds3_st_file *f);
const ds3_st_entry *ds3_st_find(const ds3_st_file *f, const char *name);
/* Value of a __metadata__ key, or NULL (pointer valid until ds3_st_close). */
const char *ds3_st_meta(const ds3_st_file *f, const char *key);

/* Writer: collect tensors (the data is referenced, not copied, until write),
 * then write header + data as an outfile (below). */
typedef struct ds3_st_writer ds3_st_writer;
ds3_st_writer *ds3_stw_new(void);
/* name is copied. shape has ndim entries. */
ds3_status ds3_stw_add(ds3_st_writer *w, const char *name, ds3_dtype dt, int ndim,
                       const int64_t *shape, const void *data);
ds3_status ds3_stw_meta(ds3_st_writer *w, const char *key, const char *value);
ds3_status ds3_stw_write(ds3_st_writer *w, const char *path);
void ds3_stw_free(ds3_st_writer *w);

/* ========================================================================== */
/* outfile.c — a whole output file                                             */
/* ========================================================================== */

/* Written to <file>.tmp and renamed over <file> when every byte is out
 * (symbolic links followed to the file they name; a FIFO or device written in
 * place). open, write to o->fp, then close with ok = every write succeeded
 * (err: errno of the first failure, 0 for a short write); close removes the
 * .tmp on failure. Errors name `path`. */
typedef struct {
    FILE *fp;
    const char *path;  /* as given (not copied) */
    char *dst, *tmp;   /* the file links lead to and its .tmp; NULL when in place */
} ds3_outfile;
ds3_status ds3_outfile_open(ds3_outfile *o, const char *path);
ds3_status ds3_outfile_close(ds3_outfile *o, bool ok, int err);

#endif /* DS3_IO_H */

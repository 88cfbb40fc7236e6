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
    bool borrowed;           /* map is the caller's buffer (ds3_st_open_mem), not a mapping */
    /* identity at open, checked again by ds3_st_check */
    uint64_t id_dev, id_ino;
    int64_t id_mtime_ns;     /* modification time, ns since the epoch */
    void *guard;             /* the SIGBUS guard's record of the mapping */
} ds3_st_file;

/* Open and validate a safetensors file: header length within the file, JSON
 * well formed, every offset pair ordered, inside the data section and equal to
 * shape x dtype size. Errors name the file and the tensor. */
ds3_status ds3_st_open(const char *path, ds3_st_file **out);
/* The same on len bytes at buf (not copied: buf must outlive the file);
 * label names it in messages. */
ds3_status ds3_st_open_mem(const void *buf, size_t len, const char *label, ds3_st_file **out);
void ds3_st_close(ds3_st_file *f);
/* Is f still the file that was mapped? DS3_ERR_IO naming the file when a
 * SIGBUS landed in its mapping ("changed size while mapped": it was truncated;
 * the handler put zeros there so the run could finish) or when its path now
 * has another inode, size or modification time. Cheap: one stat. */
ds3_status ds3_st_check(const ds3_st_file *f);
/* "a FIFO", "a directory", "a character device"... for messages (st_mode). */
const char *ds3_file_kind(unsigned mode);
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
/* The same bytes into *buf (malloc'd, *len bytes). */
ds3_status ds3_stw_write_mem(ds3_st_writer *w, void **buf, size_t *len);
void ds3_stw_free(ds3_st_writer *w);

/* ========================================================================== */
/* outfile.c — a whole output file                                             */
/* ========================================================================== */

/* Written to a temporary of this writer's own, "<file>.XXXXXX.tmp" (created
 * with O_EXCL|O_NOFOLLOW: whatever is at a name is never followed or reused),
 * fsync'd and renamed over <file> when every byte is out (symbolic links
 * followed to the file they name; a FIFO or device written in place). open,
 * write to o->fp, then close with ok = every write succeeded (err: errno of
 * the first failure, 0 for a short write); close removes the temporary on
 * failure, and SIGINT/SIGTERM/SIGHUP remove it before the process dies (their
 * handler is installed where the action was the default; SIGXFSZ is ignored
 * so that `ulimit -f` is a write error). Errors name `path`. */
typedef struct {
    FILE *fp;
    const char *path;  /* as given (not copied) */
    char *dst, *tmp;   /* the file links lead to and the temporary; NULL when in place */
    int slot;          /* the temporary's entry in the signal handler's table, or -1 */
} ds3_outfile;
ds3_status ds3_outfile_open(ds3_outfile *o, const char *path);
ds3_status ds3_outfile_close(ds3_outfile *o, bool ok, int err);
/* Install the signal handlers now (where the actions are the defaults), not
 * at the first open: a command that will write calls it first, so a signal
 * while it computes says so too ("ds3: interrupted by SIGINT"). */
void ds3_outfile_signals(void);
/* A whole directory written so that it appears complete or not at all: the
 * files go into a fresh sibling "<dir>.XXXXXX.tmp", which close(ok) renames
 * over <dir> (exchanging it atomically with an existing <dir>, whose old
 * contents are then removed) or removes. An existing <dir> is locked (flock)
 * from open to close: a second writer fails at once saying so; a <dir> that
 * appeared or changed meanwhile is left as it is and close fails saying so.
 * It may hold only regular files that replaceable(name) accepts (it is
 * replaced whole, so nothing else in it is ever removed by accident).
 * names: every file that may be written into tmp (open's copy), which
 * SIGINT/SIGTERM/SIGHUP's handler removes with the directory. Write into
 * d->tmp (each file an outfile); errors name `path`. */
typedef struct {
    const char *path;  /* as given (not copied) */
    char *dst, *tmp;   /* the target (real path when it exists) and the sibling being built */
    char **names;
    int n_names;
    int slot, fd, lock_fd;
    bool existed;      /* dst was a directory at open (locked; dev, ino) */
    uint64_t dev, ino;
} ds3_outdir;
ds3_status ds3_outdir_open(ds3_outdir *d, const char *path, const char *const *names, int n_names,
                           bool (*replaceable)(const char *name));
ds3_status ds3_outdir_close(ds3_outdir *d, bool ok);

/* Tests only: when set, gives the six characters of each temporary name tried
 * (so a test can put a link or a FIFO where the writer will look first). */
extern void (*ds3_outfile_tag_hook)(char tag[7]);

#endif /* DS3_IO_H */

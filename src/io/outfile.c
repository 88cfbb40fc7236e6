/*
 * outfile.c — writing a whole output file so that no reader ever sees half of
 * it: the bytes go to "<file>.tmp", which is renamed over <file> only after
 * every write, the flush and the close succeeded; on any failure the .tmp is
 * removed and <file> is as it was.
 *
 * Two cases need care, because rename() replaces whatever directory entry has
 * the name:
 *   - a symbolic link: renaming over it would replace the link and leave its
 *     target as it was. The links are followed first and the .tmp goes beside
 *     the file they lead to (a dangling link: where it points, so the file is
 *     created there); a loop of links is an error.
 *   - a FIFO or a device (/dev/null, /dev/stdout into a pipe, /dev/full): there
 *     is no file to replace, and renaming would put a regular file where the
 *     device was (as root, /dev/full became a regular file this way). These
 *     are written in place; a stream can of course receive part of a file.
 * Used by the safetensors writer (dumps, checkpoints) and mkmodel's text files.
 */
#include "io/io.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* path with the symbolic links of its last component followed (malloc'd; NULL
 * when out of memory). A dangling link gives the path it points to; a loop
 * stops after 40 links (the caller refuses a path that is still a link). */
static char *follow_links(const char *path) {
    size_t len = strlen(path);
    char *cur = ds3_malloc(len + 1);
    if (!cur) return NULL;
    memcpy(cur, path, len + 1);
    struct stat sb;
    for (int hop = 0; hop < 40 && lstat(cur, &sb) == 0 && S_ISLNK(sb.st_mode); hop++) {
        size_t cap = sb.st_size > 0 ? (size_t)sb.st_size + 1 : 4096;
        char *link = ds3_malloc(cap);
        ssize_t n = link ? readlink(cur, link, cap) : -1;
        if (n < 0 || (size_t)n >= cap) { free(link); break; }  /* changed under us: use cur */
        /* a relative link is relative to the link's directory */
        const char *slash = link[0] == '/' ? NULL : strrchr(cur, '/');
        size_t dir = slash ? (size_t)(slash - cur) + 1 : 0;
        char *next = ds3_malloc(dir + (size_t)n + 1);
        if (!next) { free(link); free(cur); return NULL; }
        memcpy(next, cur, dir);
        memcpy(next + dir, link, (size_t)n);
        next[dir + (size_t)n] = '\0';
        free(link);
        free(cur);
        cur = next;
    }
    return cur;
}

static void forget_names(ds3_outfile *o) {
    free(o->tmp);
    free(o->dst);
    o->tmp = o->dst = NULL;
}

ds3_status ds3_outfile_open(ds3_outfile *o, const char *path) {
    memset(o, 0, sizeof *o);
    o->path = path;
    /* Straight into a FIFO or device (reached through links or not: /dev/stdout
     * is one), else beside the regular file the links lead to. */
    struct stat sb;
    if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode) && !S_ISDIR(sb.st_mode)) {
        o->fp = fopen(path, "wb");
        if (!o->fp) return ds3_fail(DS3_ERR_IO, "%s: cannot open for writing: %s", path, strerror(errno));
        return DS3_OK;
    }
    o->dst = follow_links(path);
    if (!o->dst) return DS3_ERR_NOMEM;
    if (lstat(o->dst, &sb) == 0 && S_ISLNK(sb.st_mode)) {
        forget_names(o);
        return ds3_fail(DS3_ERR_IO, "%s: too many levels of symbolic links (a loop?)", path);
    }
    size_t len = strlen(o->dst);
    o->tmp = ds3_malloc(len + 5);
    if (!o->tmp) {
        forget_names(o);
        return DS3_ERR_NOMEM;
    }
    memcpy(o->tmp, o->dst, len);
    memcpy(o->tmp + len, ".tmp", 5);
    o->fp = fopen(o->tmp, "wb");
    if (!o->fp) {
        ds3_status st = ds3_fail(DS3_ERR_IO, "%s: cannot create %s: %s", path, o->tmp, strerror(errno));
        forget_names(o);
        return st;
    }
    return DS3_OK;
}

ds3_status ds3_outfile_close(ds3_outfile *o, bool ok, int err) {
    if (!o->fp) return DS3_ERR_ARG;
    if (ok) err = 0;
    /* fclose flushes: a full disk often shows up only here. */
    if (fflush(o->fp) != 0 && ok) { ok = false; err = errno; }
    if (fclose(o->fp) != 0 && ok) { ok = false; err = errno; }
    o->fp = NULL;
    ds3_status st = DS3_OK;
    if (!ok) {
        if (o->tmp) remove(o->tmp);
        st = ds3_fail(DS3_ERR_IO, "%s: writing %s failed: %s", o->path, o->tmp ? o->tmp : "it",
                      err ? strerror(err) : "short write");
    } else if (o->tmp && rename(o->tmp, o->dst) != 0) {
        err = errno;
        remove(o->tmp);
        st = ds3_fail(DS3_ERR_IO, "%s: cannot rename %s into place: %s", o->path, o->tmp, strerror(err));
    }
    forget_names(o);
    return st;
}

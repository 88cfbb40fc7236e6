/*
 * outfile.c — writing a whole output file so that no reader ever sees half of
 * it, whoever else is writing the same name: the bytes go to a temporary of
 * this writer's own, "<file>.XXXXXX.tmp" (six random characters), created with
 * O_CREAT|O_EXCL|O_NOFOLLOW in the file's directory, so nothing that already
 * sits at that name (a file, a symbolic link, a FIFO, another writer's
 * temporary) is followed, reused or blocked on: an existing name is skipped
 * and another drawn. After every write succeeded the temporary is flushed,
 * fsync'd, closed and renamed over <file> (then the directory is fsync'd);
 * on any failure it is removed and <file> is as it was.
 *
 * Two writers of one name each write their own temporary and each rename is
 * atomic, so <file> is always one writer's complete bytes: the last to rename
 * wins, and a reader sees the old file or a new one, never a mixture or a
 * file still growing.
 *
 * Signals. While a temporary exists its name is in a table the signal handler
 * reads: SIGINT, SIGTERM and SIGHUP remove every temporary of the process,
 * then the signal is raised again with its default action (so the process
 * still dies of it, with the status a shell expects). The handler is installed
 * the first time a file is opened, and only for signals whose action is still
 * the default: a program's own handler, or a signal ignored under nohup, is
 * left alone. SIGXFSZ (a file-size limit, `ulimit -f`) is set to ignored if it
 * was the default, so the write that crosses the limit fails with EFBIG and is
 * reported like a full disk, instead of the process being killed with the
 * temporary left behind. SIGKILL cannot be caught: it leaves the temporary
 * (and <file> intact).
 *
 * Two cases need care, because rename() replaces whatever directory entry has
 * the name:
 *   - a symbolic link: renaming over it would replace the link and leave its
 *     target as it was. The links are followed first and the temporary goes
 *     beside the file they lead to (a dangling link: where it points, so the
 *     file is created there); a loop of links is an error.
 *   - a FIFO or a device (/dev/null, /dev/stdout into a pipe, /dev/full): there
 *     is no file to replace, and renaming would put a regular file where the
 *     device was (as root, /dev/full became a regular file this way). These
 *     are written in place; a stream can of course receive part of a file.
 * Used by the safetensors writer (dumps, checkpoints), mkmodel's text files
 * and the CLI's tokenizer copies.
 */
#include "io/io.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ========================================================================== */
/* The temporaries a signal removes                                            */
/* ========================================================================== */

/* A fixed table in static storage, so the handler neither allocates nor reads
 * memory that another thread may free: slot k is 0 (free), 1 (being filled)
 * or 2 (names a live temporary). */
#define OUT_SLOTS 64
#define OUT_NAME_MAX 4096
static char slot_name[OUT_SLOTS][OUT_NAME_MAX];
static atomic_int slot_state[OUT_SLOTS];

static const int cleanup_signals[] = {SIGINT, SIGTERM, SIGHUP};

static void on_signal(int sig) {
    int saved = errno;
    for (int k = 0; k < OUT_SLOTS; k++)
        if (atomic_load(&slot_state[k]) == 2) unlink(slot_name[k]);
    /* The default action, raised again: the signal is blocked while this runs,
     * so it is delivered (and kills) as soon as the handler returns. */
    signal(sig, SIG_DFL);
    raise(sig);
    errno = saved;
}

/* Once per process: our handler where the action is the default; SIGXFSZ
 * ignored where it would kill. */
static void install_handlers(void) {
    static atomic_int done;
    if (atomic_exchange(&done, 1)) return;
    struct sigaction now, ours;
    memset(&ours, 0, sizeof ours);
    ours.sa_handler = on_signal;
    sigemptyset(&ours.sa_mask);
    for (size_t i = 0; i < sizeof cleanup_signals / sizeof *cleanup_signals; i++)
        sigaddset(&ours.sa_mask, cleanup_signals[i]);
    for (size_t i = 0; i < sizeof cleanup_signals / sizeof *cleanup_signals; i++)
        if (sigaction(cleanup_signals[i], NULL, &now) == 0 && !(now.sa_flags & SA_SIGINFO) &&
            now.sa_handler == SIG_DFL)
            sigaction(cleanup_signals[i], &ours, NULL);
    if (sigaction(SIGXFSZ, NULL, &now) == 0 && !(now.sa_flags & SA_SIGINFO) && now.sa_handler == SIG_DFL)
        signal(SIGXFSZ, SIG_IGN);
}

/* Claim a slot for `name`; -1 when every slot is taken or the name is too long. */
static int slot_claim(const char *name) {
    size_t len = strlen(name);
    if (len >= OUT_NAME_MAX) return -1;
    for (int k = 0; k < OUT_SLOTS; k++) {
        int expect = 0;
        if (atomic_compare_exchange_strong(&slot_state[k], &expect, 1)) {
            memcpy(slot_name[k], name, len + 1);
            atomic_store(&slot_state[k], 2);
            return k;
        }
    }
    return -1;
}

static void slot_release(int k) {
    if (k >= 0) atomic_store(&slot_state[k], 0);
}

/* ========================================================================== */
/* Names                                                                       */
/* ========================================================================== */

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

/* Six characters of [0-9a-z] that differ between processes, threads and
 * calls: pid, a counter, the clock and an address mixed by splitmix64. They
 * need not be unpredictable, only unlikely to repeat: O_EXCL decides. */
void (*ds3_outfile_tag_hook)(char tag[7]);

static void random_tag(char out[7]) {
    if (ds3_outfile_tag_hook) {
        ds3_outfile_tag_hook(out);
        return;
    }
    static atomic_ullong counter;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    unsigned long long x = (unsigned long long)getpid() * 0x9E3779B97F4A7C15ull ^
                           (atomic_fetch_add(&counter, 1) + 1) * 0xBF58476D1CE4E5B9ull ^
                           (unsigned long long)ts.tv_nsec ^ ((unsigned long long)ts.tv_sec << 30) ^
                           (unsigned long long)(uintptr_t)&ts;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    x ^= x >> 31;
    for (int i = 0; i < 6; i++, x /= 36) out[i] = "0123456789abcdefghijklmnopqrstuvwxyz"[x % 36];
    out[6] = '\0';
}

static void forget_names(ds3_outfile *o) {
    free(o->tmp);
    free(o->dst);
    o->tmp = o->dst = NULL;
}

/* fsync the directory holding `file`, so the rename itself is on disk. Best
 * effort: the file is already in place, and some file systems cannot. */
static void sync_dir_of(const char *file) {
    const char *slash = strrchr(file, '/');
    char *dir = NULL;
    if (slash) {
        size_t n = slash == file ? 1 : (size_t)(slash - file);
        if (!(dir = malloc(n + 1))) return;
        memcpy(dir, file, n);
        dir[n] = '\0';
    }
    int fd = open(dir ? dir : ".", O_RDONLY | O_CLOEXEC);
    free(dir);
    if (fd < 0) return;
    (void)fsync(fd);
    close(fd);
}

/* ========================================================================== */
/* Open and close                                                              */
/* ========================================================================== */

ds3_status ds3_outfile_open(ds3_outfile *o, const char *path) {
    memset(o, 0, sizeof *o);
    o->path = path;
    o->slot = -1;
    install_handlers();
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
    o->tmp = ds3_malloc(len + 12);
    if (!o->tmp) {
        forget_names(o);
        return DS3_ERR_NOMEM;
    }
    /* A fresh name, created exclusively: a name that exists (whatever it is)
     * is never opened, only skipped. The slot is claimed before the file
     * exists, so there is no moment a signal could leave it behind. */
    int fd = -1, err = 0;
    for (int attempt = 0; attempt < 100 && fd < 0; attempt++) {
        char tag[7];
        random_tag(tag);
        memcpy(o->tmp, o->dst, len);
        snprintf(o->tmp + len, 12, ".%s.tmp", tag);
        if ((o->slot = slot_claim(o->tmp)) < 0) {
            ds3_status st = ds3_fail(DS3_ERR_IO, "%s: more than %d output files open at once in this process",
                                     path, OUT_SLOTS);
            forget_names(o);
            return st;
        }
        fd = open(o->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
        err = errno;
        if (fd < 0) {
            slot_release(o->slot);
            o->slot = -1;
            if (err != EEXIST) break;
        }
    }
    if (fd < 0) {
        ds3_status st = ds3_fail(DS3_ERR_IO, "%s: cannot create a temporary file %s: %s", path, o->tmp,
                                 strerror(err));
        forget_names(o);
        return st;
    }
    o->fp = fdopen(fd, "wb");
    if (!o->fp) {
        err = errno;
        close(fd);
        unlink(o->tmp);
        slot_release(o->slot);
        ds3_status st = ds3_fail(DS3_ERR_IO, "%s: cannot write %s: %s", path, o->tmp, strerror(err));
        forget_names(o);
        return st;
    }
    return DS3_OK;
}

ds3_status ds3_outfile_close(ds3_outfile *o, bool ok, int err) {
    if (!o->fp) return DS3_ERR_ARG;
    if (ok) err = 0;
    /* fflush and fsync: a full disk often shows up only here. */
    if (fflush(o->fp) != 0 && ok) { ok = false; err = errno; }
    if (ok && o->tmp && fsync(fileno(o->fp)) != 0) { ok = false; err = errno; }
    if (fclose(o->fp) != 0 && ok) { ok = false; err = errno; }
    o->fp = NULL;
    ds3_status st = DS3_OK;
    if (!ok) {
        if (o->tmp) unlink(o->tmp);
        st = ds3_fail(DS3_ERR_IO, "%s: writing %s failed: %s", o->path, o->tmp ? o->tmp : "it",
                      err == EFBIG ? "File too large (a file-size limit: ulimit -f?)"
                      : err        ? strerror(err)
                                   : "short write");
    } else if (o->tmp && rename(o->tmp, o->dst) != 0) {
        err = errno;
        unlink(o->tmp);
        st = ds3_fail(DS3_ERR_IO, "%s: cannot rename %s into place: %s", o->path, o->tmp, strerror(err));
    } else if (o->tmp) {
        sync_dir_of(o->dst);
    }
    slot_release(o->slot);
    o->slot = -1;
    forget_names(o);
    return st;
}

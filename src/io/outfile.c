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
 * say so on stderr with write(2) only ("ds3: interrupted by SIGINT; removed
 * NAME", every name stored before any signal could need it), then the signal
 * is raised again with its default action (so the process still dies of it,
 * with the status a shell expects). The handler is installed
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
 *
 * A whole directory (ds3_outdir: mkmodel's checkpoint) is built the same way
 * one level up: in a fresh sibling "<dir>.XXXXXX.tmp" (mkdir is exclusive),
 * then renamed into place. Over an existing directory the two are exchanged
 * in one atomic step (Linux renameat2 RENAME_EXCHANGE, macOS renamex_np
 * RENAME_SWAP), so <dir> holds the old model or the new one at every instant,
 * and the old one is removed after. Without an exchange (other systems, file
 * systems that refuse it) the old directory is first renamed aside: a
 * SIGKILL between the two renames leaves <dir> missing, the old model at
 * "<dir>.XXXXXX.tmp". Publishing runs with SIGINT/TERM/HUP deferred (the
 * handler notes the signal and the publisher acts on it when done), so a
 * caught signal never lands between the two renames or half-way through
 * removing the old directory.
 */
#define _DEFAULT_SOURCE   /* flock, syscall */
#ifdef __APPLE__
#define _DARWIN_C_SOURCE  /* renamex_np */
#endif
#include "io/io.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/syscall.h>
#endif

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

/* Directories being built (ds3_outdir): the handler removes the files it
 * was told may be in one (by name, relative to its open descriptor), then
 * the directory. */
#define DIR_SLOTS 8
static struct {
    atomic_int state;     /* as slot_state */
    int fd;               /* the directory, open */
    char path[OUT_NAME_MAX];
    char *const *names;   /* n base names (the outdir's own copy) */
    int n;
} dir_slot[DIR_SLOTS];

static const int cleanup_signals[] = {SIGINT, SIGTERM, SIGHUP};

/* While publishing a directory (two renames, removing the replaced one) a
 * signal is noted in `pending` and acted on when the publisher is done. */
static atomic_int defer_depth, pending;

/* write(2) of a NUL-terminated string: the only output a handler may make. */
static void say(const char *s) {
    size_t n = 0;
    while (s[n]) n++;
    while (n > 0) {
        ssize_t w = write(2, s, n);
        if (w <= 0) return;
        s += w;
        n -= (size_t)w;
    }
}

/* Remove every temporary and directory being built, say what was removed,
 * and die of sig with its default action. Async-signal-safe: unlink,
 * unlinkat, rmdir, write, signal, raise. */
static void cleanup_and_die(int sig) {
    say(sig == SIGINT ? "ds3: interrupted by SIGINT" : sig == SIGTERM ? "ds3: terminated by SIGTERM"
                                                                       : "ds3: hung up (SIGHUP)");
    const char *sep = "; removed unfinished ";
    for (int k = 0; k < OUT_SLOTS; k++)
        if (atomic_load(&slot_state[k]) == 2 && unlink(slot_name[k]) == 0) {
            say(sep);
            say(slot_name[k]);
            sep = ", ";
        }
    for (int k = 0; k < DIR_SLOTS; k++) {
        if (atomic_load(&dir_slot[k].state) != 2) continue;
        for (int i = 0; i < dir_slot[k].n; i++) (void)unlinkat(dir_slot[k].fd, dir_slot[k].names[i], 0);
        if (rmdir(dir_slot[k].path) == 0) {
            say(sep);
            say(dir_slot[k].path);
            sep = ", ";
        }
    }
    say("\n");
    /* The default action, raised again: in the handler the signal is blocked
     * while it runs, so it is delivered (and kills) as soon as it returns. */
    signal(sig, SIG_DFL);
    raise(sig);
}

static void on_signal(int sig) {
    int saved = errno;
    atomic_store(&pending, sig);
    /* Deferred: the publisher takes `pending` when it is done. The exchange
     * decides who acts, so a signal is acted on exactly once. */
    if (atomic_load(&defer_depth) == 0) {
        int s = atomic_exchange(&pending, 0);
        if (s) cleanup_and_die(s);
    }
    errno = saved;
}

static void defer_signals(void) { atomic_fetch_add(&defer_depth, 1); }

static void undefer_signals(void) {
    if (atomic_fetch_sub(&defer_depth, 1) == 1) {
        int s = atomic_exchange(&pending, 0);
        if (s) cleanup_and_die(s);
    }
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

void ds3_outfile_signals(void) { install_handlers(); }

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

/* ========================================================================== */
/* A whole directory                                                           */
/* ========================================================================== */

static int dir_slot_claim(const char *path, int fd, char *const *names, int n) {
    size_t len = strlen(path);
    if (len >= OUT_NAME_MAX) return -1;
    for (int k = 0; k < DIR_SLOTS; k++) {
        int expect = 0;
        if (atomic_compare_exchange_strong(&dir_slot[k].state, &expect, 1)) {
            memcpy(dir_slot[k].path, path, len + 1);
            dir_slot[k].fd = fd;
            dir_slot[k].names = names;
            dir_slot[k].n = n;
            atomic_store(&dir_slot[k].state, 2);
            return k;
        }
    }
    return -1;
}

/* Remove dir and the plain files in it (what a writer put there); best
 * effort: a subdirectory, which no writer makes, is left and so is dir. */
static void remove_dir_files(const char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        int fd = dirfd(d);
        for (struct dirent *e; (e = readdir(d));)
            if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) (void)unlinkat(fd, e->d_name, 0);
        closedir(d);
    }
    (void)rmdir(dir);
}

static void outdir_forget(ds3_outdir *d) {
    if (d->slot >= 0) atomic_store(&dir_slot[d->slot].state, 0);
    d->slot = -1;
    if (d->fd >= 0) close(d->fd);
    if (d->lock_fd >= 0) close(d->lock_fd);   /* releases the lock */
    d->fd = d->lock_fd = -1;
    for (int i = 0; i < d->n_names; i++) free(d->names[i]);
    free(d->names);
    free(d->dst);
    free(d->tmp);
    d->names = NULL;
    d->n_names = 0;
    d->dst = d->tmp = NULL;
}

/* mkdir -p of the directory holding `dst` (everything before its last '/'). */
static ds3_status make_parent(const char *path, const char *dst) {
    const char *slash = strrchr(dst, '/');
    if (!slash || slash == dst) return DS3_OK;
    size_t n = (size_t)(slash - dst);
    char *p = ds3_malloc(n + 1);
    if (!p) return DS3_ERR_NOMEM;
    memcpy(p, dst, n);
    p[n] = '\0';
    for (size_t i = 1; i <= n; i++) {
        if (p[i] != '/' && p[i] != '\0') continue;
        char saved = p[i];
        p[i] = '\0';
        struct stat sb;
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            ds3_status st = ds3_fail(DS3_ERR_IO, "%s: cannot create directory %s: %s", path, p, strerror(errno));
            free(p);
            return st;
        }
        if (stat(p, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
            ds3_status st = ds3_fail(DS3_ERR_IO, "%s: %s is not a directory", path, p);
            free(p);
            return st;
        }
        p[i] = saved;
    }
    free(p);
    return DS3_OK;
}

ds3_status ds3_outdir_open(ds3_outdir *d, const char *path, const char *const *names, int n_names,
                           bool (*replaceable)(const char *name)) {
    memset(d, 0, sizeof *d);
    d->path = path;
    d->slot = d->fd = d->lock_fd = -1;
    install_handlers();
    size_t plen = strlen(path);
    while (plen > 1 && path[plen - 1] == '/') plen--;
    if (plen == 0) return ds3_fail(DS3_ERR_ARG, "empty output directory name");
    char *given = ds3_malloc(plen + 1);
    if (!given) return DS3_ERR_NOMEM;
    memcpy(given, path, plen);
    given[plen] = '\0';
    /* The directory the name leads to: an existing one by its real path (so
     * "." or a link is replaced where it is), a new one with the links of
     * its last component followed. */
    struct stat sb;
    if (stat(given, &sb) == 0) {
        d->dst = realpath(given, NULL);
        if (!d->dst) {
            ds3_status st = ds3_fail(DS3_ERR_IO, "%s: %s", path, strerror(errno));
            free(given);
            return st;
        }
    } else {
        d->dst = follow_links(given);
    }
    free(given);
    if (!d->dst) return DS3_ERR_NOMEM;
    const char *base = strrchr(d->dst, '/');
    base = base ? base + 1 : d->dst;
    if (!*base || strcmp(base, ".") == 0 || strcmp(base, "..") == 0) {
        outdir_forget(d);
        return ds3_fail(DS3_ERR_ARG, "%s: cannot replace this directory (it has no name of its own)", path);
    }
    ds3_status st = DS3_OK;
    if (lstat(d->dst, &sb) == 0) {
        if (!S_ISDIR(sb.st_mode)) {
            st = S_ISLNK(sb.st_mode)
                     ? ds3_fail(DS3_ERR_IO, "%s: too many levels of symbolic links (a loop?)", path)
                     : ds3_fail(DS3_ERR_IO, "%s: exists and is not a directory", path);
            outdir_forget(d);
            return st;
        }
        /* One writer at a time: an exclusive lock on the directory itself,
         * held until close (the kernel drops it if the process dies). */
        d->lock_fd = open(d->dst, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (d->lock_fd < 0) {
            st = ds3_fail(DS3_ERR_IO, "%s: cannot open the directory: %s", path, strerror(errno));
        } else if (flock(d->lock_fd, LOCK_EX | LOCK_NB) != 0) {
            st = errno == EWOULDBLOCK ? ds3_fail(DS3_ERR_IO, "%s: another ds3 mkmodel is writing this directory now; "
                                                 "left it to that one", path)
                                      : ds3_fail(DS3_ERR_IO, "%s: cannot lock the directory: %s", path, strerror(errno));
        } else if (fstat(d->lock_fd, &sb) != 0) {
            st = ds3_fail(DS3_ERR_IO, "%s: %s", path, strerror(errno));
        } else {
            d->existed = true;
            d->dev = (uint64_t)sb.st_dev;
            d->ino = (uint64_t)sb.st_ino;
        }
        /* It is replaced whole: only what a writer of it puts there may be in it. */
        DIR *dir = st == DS3_OK ? opendir(d->dst) : NULL;
        if (st == DS3_OK && !dir) st = ds3_fail(DS3_ERR_IO, "%s: cannot read the directory: %s", path, strerror(errno));
        for (struct dirent *e; st == DS3_OK && dir && (e = readdir(dir));) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
            struct stat eb;
            bool plain = fstatat(dirfd(dir), e->d_name, &eb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(eb.st_mode);
            if (!plain || !replaceable || !replaceable(e->d_name))
                st = ds3_fail(DS3_ERR_IO, "%s holds %s, which is not %s: the directory is replaced whole, so "
                              "only a new or empty directory or an earlier model is written over (move it, or "
                              "choose another directory)", path, e->d_name,
                              plain ? "one of a model's files" : "a regular file");
        }
        if (dir) closedir(dir);
        if (st != DS3_OK) {
            outdir_forget(d);
            return st;
        }
    } else if ((st = make_parent(path, d->dst)) != DS3_OK) {
        outdir_forget(d);
        return st;
    }

    /* The names the handler removes, copied (before the directory exists). */
    d->names = ds3_calloc((size_t)n_names + 1, sizeof *d->names);
    if (!d->names) {
        outdir_forget(d);
        return DS3_ERR_NOMEM;
    }
    for (int i = 0; i < n_names; i++) {
        if (!(d->names[i] = strdup(names[i]))) {
            outdir_forget(d);
            return DS3_ERR_NOMEM;
        }
        d->n_names = i + 1;
    }
    size_t len = strlen(d->dst);
    d->tmp = ds3_malloc(len + 12);
    if (!d->tmp) {
        outdir_forget(d);
        return DS3_ERR_NOMEM;
    }
    /* A fresh sibling: mkdir fails on any name that exists. Its slot is
     * filled before it is made (fd -1: only rmdir), then given the fd. */
    int err = 0;
    bool made = false;
    for (int attempt = 0; attempt < 100 && !made; attempt++) {
        char tag[7];
        random_tag(tag);
        memcpy(d->tmp, d->dst, len);
        snprintf(d->tmp + len, 12, ".%s.tmp", tag);
        if ((d->slot = dir_slot_claim(d->tmp, -1, d->names, 0)) < 0) {
            outdir_forget(d);
            return ds3_fail(DS3_ERR_IO, "%s: more than %d output directories at once in this process", path,
                            DIR_SLOTS);
        }
        made = mkdir(d->tmp, 0777) == 0;
        err = errno;
        if (!made) {
            atomic_store(&dir_slot[d->slot].state, 0);
            d->slot = -1;
            if (err != EEXIST) break;
        }
    }
    if (!made) {
        st = ds3_fail(DS3_ERR_IO, "%s: cannot create a directory %s: %s", path, d->tmp, strerror(err));
        outdir_forget(d);
        return st;
    }
    d->fd = open(d->tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (d->fd < 0) {
        st = ds3_fail(DS3_ERR_IO, "%s: cannot open %s: %s", path, d->tmp, strerror(errno));
        rmdir(d->tmp);
        outdir_forget(d);
        return st;
    }
    /* fd first: until n is set the handler unlinks nothing, only rmdirs */
    dir_slot[d->slot].fd = d->fd;
    dir_slot[d->slot].n = d->n_names;
    return DS3_OK;
}

/* Exchange two directory entries atomically: 0, or -1 with errno (ENOSYS
 * where the system or the file system has no such operation). */
static int exchange(const char *a, const char *b) {
#if defined(__linux__) && defined(SYS_renameat2)
    if (syscall(SYS_renameat2, AT_FDCWD, a, AT_FDCWD, b, 2 /* RENAME_EXCHANGE */) == 0) return 0;
    if (errno != ENOSYS && errno != EINVAL) return -1;
#elif defined(__APPLE__)
    if (renamex_np(a, b, RENAME_SWAP) == 0) return 0;
    if (errno != ENOTSUP && errno != EINVAL) return -1;
#else
    (void)a;
    (void)b;
#endif
    errno = ENOSYS;
    return -1;
}

/* Publish (signals deferred by the caller): d->tmp becomes d->dst. */
static ds3_status outdir_publish(ds3_outdir *d) {
    const char *path = d->path;
    if (!d->existed) {
        /* Nothing was there: a plain rename, which fails on a directory that
         * is not empty, so a run that published meanwhile is never replaced. */
        if (rename(d->tmp, d->dst) == 0) return DS3_OK;
        int err = errno;
        if (err == EEXIST || err == ENOTEMPTY)
            return ds3_fail(DS3_ERR_IO, "%s appeared while this run was writing it (another ds3 mkmodel?); "
                            "left it as it is", path);
        return ds3_fail(DS3_ERR_IO, "%s: cannot rename %s into place: %s", path, d->tmp, strerror(err));
    }
    struct stat sb;
    if (lstat(d->dst, &sb) != 0 || (uint64_t)sb.st_dev != d->dev || (uint64_t)sb.st_ino != d->ino)
        return ds3_fail(DS3_ERR_IO, "%s was replaced or removed while this run was writing it (another ds3 "
                        "mkmodel?); left it as it is", path);
    if (exchange(d->tmp, d->dst) == 0) {
        remove_dir_files(d->tmp);   /* the old directory, now at tmp's name */
        return DS3_OK;
    }
    if (errno != ENOSYS)
        return ds3_fail(DS3_ERR_IO, "%s: cannot exchange %s with it: %s", path, d->tmp, strerror(errno));
    /* No exchange here: the old directory aside, then the new one in. */
    size_t len = strlen(d->dst);
    char *old = ds3_malloc(len + 12);
    if (!old) return DS3_ERR_NOMEM;
    int err = 0;
    for (int attempt = 0; attempt < 100; attempt++) {
        char tag[7];
        random_tag(tag);
        memcpy(old, d->dst, len);
        snprintf(old + len, 12, ".%s.tmp", tag);
        struct stat ob;
        if (lstat(old, &ob) == 0) continue;
        if (rename(d->dst, old) == 0) {
            err = 0;
            break;
        }
        err = errno;
    }
    ds3_status st = DS3_OK;
    if (err) {
        st = ds3_fail(DS3_ERR_IO, "%s: cannot move it aside: %s", path, strerror(err));
    } else if (rename(d->tmp, d->dst) != 0) {
        err = errno;
        (void)rename(old, d->dst);   /* put the old one back */
        st = ds3_fail(DS3_ERR_IO, "%s: cannot rename %s into place: %s", path, d->tmp, strerror(err));
    } else {
        remove_dir_files(old);
    }
    free(old);
    return st;
}

ds3_status ds3_outdir_close(ds3_outdir *d, bool ok) {
    if (!d->tmp) return DS3_ERR_ARG;
    ds3_status st = DS3_OK;
    defer_signals();
    if (ok) {
        /* the files are fsync'd (each an outfile); now the directory's entries */
        if (d->fd >= 0) (void)fsync(d->fd);
        st = outdir_publish(d);
        if (st == DS3_OK) sync_dir_of(d->dst);
    }
    if (!ok || st != DS3_OK) remove_dir_files(d->tmp);
    outdir_forget(d);
    undefer_signals();
    return st;
}

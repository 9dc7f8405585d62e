/*
 * reader.c - mapped and descriptor readers for the codecs (see reader.h).
 */
#include "reader.h"
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TD__RD_PIECE (8u << 20)

struct td__rd_buf {
    td__rd_buf *next;
    uint64_t off, n; /* the file bytes it holds */
    uint8_t bytes[];
};

void td__rd_fd(td__rd *r, int fd, uint64_t len, uint64_t budget, const char *fname)
{
    memset(r, 0, sizeof *r);
    r->len = len;
    r->fd = fd;
    r->budget = budget ? budget : TD__RD_BUDGET;
    r->fname = td__rd_name(fname);
}

/* Empty files are refused here: there is nothing to map or read, and no format allows them. */
_Static_assert(sizeof(td__file_id) == 7 * 8, "td__file_id has no padding (compared with memcmp)");

static void td__file_id_of(const struct stat *st, td__file_id *id)
{
    id->dev = (uint64_t)st->st_dev;
    id->ino = (uint64_t)st->st_ino;
    id->size = (uint64_t)st->st_size;
    id->mtime_sec = (int64_t)st->st_mtim.tv_sec;
    id->mtime_nsec = (int64_t)st->st_mtim.tv_nsec;
    id->ctime_sec = (int64_t)st->st_ctim.tv_sec;
    id->ctime_nsec = (int64_t)st->st_ctim.tv_nsec;
}

int td__file_id_at(int dirfd, const char *name, td__file_id *id)
{
    struct stat st;
    if (fstatat(dirfd, name, &st, 0) < 0)
        return -1;
    td__file_id_of(&st, id);
    return 0;
}

int td__file_id_same(const td__file_id *a, const td__file_id *b)
{
    return memcmp(a, b, sizeof *a) == 0;
}

int td__open_file_at(int dirfd, const char *name, const char *label, int *fd, uint64_t *size,
                     td_error *err)
{
    return td__open_file_id(dirfd, name, label, fd, size, NULL, err);
}

int td__open_file_id(int dirfd, const char *name, const char *label, int *fd, uint64_t *size,
                     td__file_id *id, td_error *err)
{
    /* O_NONBLOCK: a FIFO put where a file should be is refused below instead of blocking the
     * open until someone writes to it. */
    *fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (*fd < 0) {
        int e = errno;
        return td__err(err, td__err_from_errno(e), "%s: cannot open: %s", label, strerror(e));
    }
    struct stat st;
    int rc;
    if (fstat(*fd, &st) < 0) {
        int e = errno;
        rc = td__err(err, td__err_from_errno(e), "%s: cannot stat: %s", label, strerror(e));
    } else if (!S_ISREG(st.st_mode)) {
        rc = td__err(err, TD_EINVAL, "%s: not a regular file", label);
    } else if (st.st_size == 0) {
        rc = td__err(err, TD_ETRUNC, "%s: file is empty", label);
    } else {
        /* A regular file: back to blocking, for file systems (FUSE) that pass the flag on. */
        int fl = fcntl(*fd, F_GETFL);
        if (fl >= 0)
            fcntl(*fd, F_SETFL, fl & ~O_NONBLOCK);
        *size = (uint64_t)st.st_size;
        if (id)
            td__file_id_of(&st, id);
        return 0;
    }
    close(*fd);
    *fd = -1;
    return rc;
}

int td__pread_all(int fd, void *buf, uint64_t n, uint64_t off, const char *fname, td_error *err)
{
    uint64_t done = 0;
    while (done < n) {
        uint64_t want = n - done < TD__RD_PIECE ? n - done : TD__RD_PIECE;
        ssize_t k = pread(fd, (uint8_t *)buf + done, (size_t)want, (off_t)(off + done));
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            int e = errno;
            return td__err(err, td__err_from_errno(e), "%s: read failed at offset %llu: %s", fname,
                           (unsigned long long)(off + done), strerror(e));
        }
        if (k == 0)
            return td__err(err, TD_ETRUNC, "%s: the file shrank to %llu bytes while being read",
                           fname, (unsigned long long)(off + done));
        done += (uint64_t)k;
    }
    return 0;
}

int td__rd_get(td__rd *r, uint64_t off, uint64_t n, const uint8_t **p, td_error *err)
{
    static const uint8_t none[1];
    if (off > r->len || r->len - off < n)
        return td__err(err, TD_ETRUNC,
                       "%s: %llu bytes at offset %llu run past the end of the file (%llu bytes)",
                       r->fname, (unsigned long long)n, (unsigned long long)off,
                       (unsigned long long)r->len);
    if (r->base) {
        *p = r->base + off;
        return 0;
    }
    if (n == 0) {
        *p = none;
        return 0;
    }
    /* Codecs often read a fixed part, then the whole structure from the same offset: serve it
     * from the last copy when it holds the range. */
    const td__rd_buf *last = r->bufs;
    if (last && off >= last->off && off - last->off <= last->n &&
        n <= last->n - (off - last->off)) {
        *p = last->bytes + (off - last->off);
        return 0;
    }
    if (n > r->budget - r->copied)
        return td__err(err, TD_ELIMIT,
                       "%s: reading %llu bytes of metadata at offset %llu would copy more than "
                       "%llu bytes in all",
                       r->fname, (unsigned long long)n, (unsigned long long)off,
                       (unsigned long long)r->budget);
    if (n > SIZE_MAX - sizeof(td__rd_buf))
        return td__err(err, TD_ENOMEM, "%s: %llu bytes at offset %llu", r->fname,
                       (unsigned long long)n, (unsigned long long)off);
    td__rd_buf *b = malloc(sizeof *b + (size_t)n);
    if (!b)
        return td__err(err, TD_ENOMEM, "%s: out of memory reading %llu bytes at offset %llu",
                       r->fname, (unsigned long long)n, (unsigned long long)off);
    int rc = td__pread_all(r->fd, b->bytes, n, off, r->fname, err);
    if (rc) {
        free(b);
        return rc;
    }
    b->off = off;
    b->n = n;
    b->next = r->bufs;
    r->bufs = b;
    r->copied += n;
    *p = b->bytes;
    return 0;
}

void td__rd_close(td__rd *r)
{
    while (r->bufs) {
        td__rd_buf *next = r->bufs->next;
        free(r->bufs);
        r->bufs = next;
    }
    r->copied = 0;
}

/*
 * writer.c - buffered output for the format writers (see writer.h).
 */
#include "writer.h"
#include "common.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#define TD__WRITER_BUF    (1u << 20)
#define TD__WRITER_DIRECT (64u << 10)

int td__writer_init(td__writer *w, int fd, const char *path, td_error *err)
{
    memset(w, 0, sizeof *w);
    w->fd = fd;
    w->path = path ? path : "(memory)";
    w->err = err;
    w->cap = fd >= 0 ? TD__WRITER_BUF : 4096;
    w->buf = malloc(w->cap);
    if (!w->buf)
        return w->status = td__err(err, TD_ENOMEM, "%s: out of memory for a write buffer", w->path);
    return 0;
}

void td__writer_destroy(td__writer *w)
{
    free(w->buf);
    w->buf = NULL;
    w->len = w->cap = 0;
}

/* Writes all of p to the fd, at the file position (at < 0) or at offset at, retrying short
 * writes and EINTR. */
static int td__write_all(td__writer *w, const uint8_t *p, size_t n, int64_t at)
{
    while (n) {
        ssize_t k = at < 0 ? write(w->fd, p, n) : pwrite(w->fd, p, n, (off_t)at);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            return w->status = td__err(w->err, td__err_from_errno(e), "%s: write failed: %s",
                                       w->path, strerror(e));
        }
        p += k;
        n -= (size_t)k;
        if (at >= 0)
            at += k;
    }
    return 0;
}

int td__writer_flush(td__writer *w)
{
    if (w->status)
        return w->status;
    if (w->fd < 0 || !w->len)
        return 0;
    int rc = td__write_all(w, w->buf, w->len, -1);
    w->len = 0;
    return rc;
}

int td__writer_write(td__writer *w, const void *p, size_t n)
{
    if (w->status)
        return w->status;
    uint64_t pos;
    if (!td__add_u64(w->pos, n, &pos))
        return w->status = td__err(w->err, TD_ERANGE, "%s: file size overflows", w->path);
    if (w->fd >= 0) {
        /* Large blocks (tensor data) go straight to the file: copying them through the buffer
         * costs more than the extra write() saves. */
        if (n >= TD__WRITER_DIRECT || w->len + n > w->cap) {
            if (td__writer_flush(w))
                return w->status;
            if (n >= TD__WRITER_DIRECT) {
                if (td__write_all(w, p, n, -1))
                    return w->status;
                w->pos = pos;
                return 0;
            }
        }
    } else if (w->len + n > w->cap || w->len + n < w->len) {
        size_t cap = w->cap;
        while (cap < w->len + n) {
            if (cap > SIZE_MAX / 2)
                return w->status = td__err(w->err, TD_ENOMEM, "%s: too large", w->path);
            cap *= 2;
        }
        uint8_t *b = realloc(w->buf, cap);
        if (!b)
            return w->status = td__err(w->err, TD_ENOMEM, "%s: out of memory", w->path);
        w->buf = b;
        w->cap = cap;
    }
    if (n)
        memcpy(w->buf + w->len, p, n);
    w->len += n;
    w->pos = pos;
    return 0;
}

int td__writer_pad(td__writer *w, uint64_t align, uint8_t fill)
{
    static const uint8_t zeros[64];
    uint8_t tmp[64];
    const uint8_t *src = zeros;
    if (fill) {
        memset(tmp, fill, sizeof tmp);
        src = tmp;
    }
    uint64_t rem = align ? (align - w->pos % align) % align : 0;
    while (rem && !w->status) {
        size_t k = rem < sizeof tmp ? (size_t)rem : sizeof tmp;
        td__writer_write(w, src, k);
        rem -= k;
    }
    return w->status;
}

int td__writer_patch(td__writer *w, uint64_t at, const void *p, size_t n)
{
    if (w->status)
        return w->status;
    if (at > w->pos || n > w->pos - at)
        return w->status = td__err(w->err, TD_EINVAL, "%s: patch past the end", w->path);
    if (w->fd < 0) {
        memcpy(w->buf + at, p, n);
        return 0;
    }
    if (td__writer_flush(w))
        return w->status;
    return td__write_all(w, p, n, (int64_t)at);
}

uint8_t *td__writer_take(td__writer *w, size_t *len)
{
    uint8_t *b = w->buf;
    *len = w->len;
    w->buf = NULL;
    w->len = w->cap = 0;
    return b;
}

int td__writer_fail(const td__writer *w, const char *name, td_error *err)
{
    int rc = w->status ? w->status : TD_EIO;
    if (err && err != w->err)
        td__err(err, rc, "%s: write failed", name);
    return rc;
}

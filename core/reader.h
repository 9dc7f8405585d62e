/*
 * reader.h - how a codec reads the file it indexes.
 *
 * Two kinds of reader give the same bytes:
 *   - a mapped one (embedded mode, tensorctl): a pointer into the caller's mapping, no copy;
 *   - a descriptor one (the daemon): each request is read with pread into a buffer the reader
 *     owns. A client may truncate its file at any moment; through a mapping the next access
 *     would raise SIGBUS, through pread it is a short read and a clean TD_ETRUNC, and nothing
 *     the codec allocated is lost.
 * Codecs ask only for the bytes they parse (headers, directories, metadata), never for tensor
 * data, so a descriptor reader copies kilobytes to megabytes, not the file.
 */
#ifndef TD_READER_H
#define TD_READER_H

#include "tensord.h"

#include <stdint.h>

typedef struct td__rd_buf td__rd_buf;

typedef struct td__rd {
    const uint8_t *base; /* the mapped file (len bytes), or NULL: read fd */
    uint64_t len;        /* the file's size: every request must lie inside it */
    int fd;              /* with base NULL: the file, borrowed */
    uint64_t budget;     /* descriptor reader: most bytes it may copy in all (TD_ELIMIT) */
    uint64_t copied;     /* ... copied so far */
    td__rd_buf *bufs;    /* ... owned copies, freed by td__rd_close */
    const char *fname;   /* borrowed, for messages; never NULL after init */
} td__rd;

static inline const char *td__rd_name(const char *fname)
{
    return fname ? fname : "(file)";
}

/* A mapped reader over base[0..len), as a pointer to a compound literal (it owns nothing and
 * needs no td__rd_close): codec(TD__RD_MEM(p, n, "x.npz"), ...). */
#define TD__RD_MEM(base, len, fname)                                                               \
    (&(td__rd){(const uint8_t *)(base), (uint64_t)(len), -1, 0, 0, NULL, td__rd_name(fname)})

/* The default budget of a descriptor reader: more metadata than this is refused. */
#define TD__RD_BUDGET (1ull << 30)

/* A descriptor reader of fd (borrowed, any file offset; pread does not move it) whose size is
 * len. budget 0 means TD__RD_BUDGET. */
void td__rd_fd(td__rd *r, int fd, uint64_t len, uint64_t budget, const char *fname);

/* Points *p at the n bytes at offset off. They stay valid and unchanged until td__rd_close
 * (a mapped reader: for as long as the mapping). A request outside [0, len) is TD_ETRUNC naming
 * the file; a descriptor reader also gives TD_ETRUNC when the file turns out shorter than len,
 * TD_ELIMIT past its budget, TD_EIO and the like when the read fails. */
int td__rd_get(td__rd *r, uint64_t off, uint64_t n, const uint8_t **p, td_error *err);

/* Frees every copy a descriptor reader made; no operation for a mapped one. */
void td__rd_close(td__rd *r);

/* Opens name in the directory dirfd (AT_FDCWD: the working directory) read-only and
 * close-on-exec into *fd (the caller's to close) and gives its size; label names the file in
 * messages. Directories, other files that are not regular and empty files are refused
 * ("LABEL: not a regular file"), and *fd is then -1; a FIFO is refused without waiting for a
 * writer. Symbolic links are followed. */
int td__open_file_at(int dirfd, const char *name, const char *label, int *fd, uint64_t *size,
                     td_error *err);

/* What tells one version of a file from another without reading it: the device and inode
 * (a file replaced by rename is another inode), the size, and the modification and status
 * change times (a write in place moves both, and nobody can set the status change time back).
 * Two ids compare equal byte for byte (td__file_id_same): the fields leave no padding. A write
 * in place that keeps the size within one tick of the file system's clock goes unseen, as it
 * does for the daemon's cache key. */
typedef struct td__file_id {
    uint64_t dev, ino, size;
    int64_t mtime_sec, mtime_nsec, ctime_sec, ctime_nsec;
} td__file_id;

/* td__open_file_at that also fills *id (when not NULL) from the same fstat. */
int td__open_file_id(int dirfd, const char *name, const char *label, int *fd, uint64_t *size,
                     td__file_id *id, td_error *err);
/* The id of the file name names in dirfd now, symbolic links followed, without opening it: 0,
 * or -1 with errno set. */
int td__file_id_at(int dirfd, const char *name, td__file_id *id);
/* 1 when a and b name the same version of the same file. */
int td__file_id_same(const td__file_id *a, const td__file_id *b);

/* Reads n bytes at offset off of fd into buf, retrying short reads and EINTR, in pieces of at
 * most 8 MiB. A file that ends first is TD_ETRUNC ("FNAME: the file shrank to N bytes while
 * being read"). */
int td__pread_all(int fd, void *buf, uint64_t n, uint64_t off, const char *fname, td_error *err);

#endif

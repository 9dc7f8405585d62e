/*
 * writer.h - buffered, position-tracking output for the format writers.
 *
 * A writer writes to a file descriptor (fd >= 0) through a buffer, or, with fd == -1, collects
 * everything in memory (tests, fuzzing). It remembers the first error; later calls do nothing and
 * return it, so that a writer can emit a whole structure and check once.
 */
#ifndef TD_WRITER_H
#define TD_WRITER_H

#include "tensord.h"

#include <stddef.h>
#include <stdint.h>

typedef struct td__writer {
    int fd;           /* -1: memory */
    uint64_t pos;     /* bytes written so far (logical file position) */
    uint8_t *buf;     /* owned */
    size_t len, cap;  /* buffered bytes; for memory writers, everything */
    const char *path; /* for messages; borrowed */
    int status;       /* first error, or 0 */
    td_error *err;    /* where errors go; may be NULL */
} td__writer;

/* fd is borrowed (not closed by the writer). */
int td__writer_init(td__writer *w, int fd, const char *path, td_error *err);
/* Frees the buffer (not the fd). For a memory writer, td__writer_take() first keeps the bytes. */
void td__writer_destroy(td__writer *w);
int td__writer_write(td__writer *w, const void *p, size_t n);
/* Writes zero bytes (or `fill`) until pos is a multiple of align (a power of two). */
int td__writer_pad(td__writer *w, uint64_t align, uint8_t fill);
/* Writes the buffered bytes to the fd (no fsync). */
int td__writer_flush(td__writer *w);
/* Patches n bytes at absolute position at (< pos) - for headers whose CRC or sizes are known only
 * after the data. Flushes first for fd writers. */
int td__writer_patch(td__writer *w, uint64_t at, const void *p, size_t n);
/* For callers that report under a name of their own: returns w's first error (TD_EIO when it
 * has none), and when w reports to another td_error than err, fills err (when not NULL) with
 * "NAME: write failed", so that err always says something. */
int td__writer_fail(const td__writer *w, const char *name, td_error *err);
/* Memory writers: hands the collected bytes to the caller (free()), resets the writer. */
uint8_t *td__writer_take(td__writer *w, size_t *len);

#endif

/*
 * derive.h - derived buffers: memfds that are filled once and then sealed against writing,
 * shrinking and growing before anyone else sees them, plus the guard that turns a SIGBUS from
 * a file truncated under us into an error.
 */
#ifndef TD_DAEMON_DERIVE_H
#define TD_DAEMON_DERIVE_H

#include "common.h"

#include <setjmp.h>
#include <stdint.h>

/* Creates a memfd of size bytes (> 0) named "tensord:NAME" and maps it read-write. Huge pages
 * are asked for (MADV_HUGEPAGE) when the buffer is large; the kernel may decline. On success
 * the caller owns *fd and the mapping. */
int derive_memfd(const char *name, uint64_t size, int *fd, void **map, td_error *err);

/* Unmaps the writable mapping and seals fd (F_SEAL_WRITE | SHRINK | GROW | SEAL). On failure fd
 * is left open for the caller to close. */
int derive_seal(int fd, void *map, uint64_t size, td_error *err);

/* Copies size bytes of src_fd into a new sealed memfd with large sequential reads. A file that
 * turns out shorter is TD_ETRUNC. On success *fd is the caller's. */
int derive_snapshot(int src_fd, uint64_t size, const char *name, int *fd, td_error *err);

/* Reads n bytes at offset off of fd into buf, retrying short reads and EINTR. A file that ends
 * first is TD_ETRUNC ("NAME: the file shrank ..."). */
int derive_pread_all(int fd, void *buf, uint64_t n, uint64_t off, const char *name, td_error *err);

/* SIGBUS protection for code that reads client files through a mapping. Install once per
 * process; then wrap each access as
 *     if (sigsetjmp(*derive_bus_begin(&jb), 1)) { ...the file shrank... }
 *     ...touch the mapping...
 *     derive_bus_end();
 * The jump buffer is per thread. */
void derive_bus_install(void);
sigjmp_buf *derive_bus_begin(sigjmp_buf *jb);
void derive_bus_end(void);

#endif

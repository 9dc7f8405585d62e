/*
 * derive.h - derived buffers: memfds that are filled once and then sealed against writing,
 * shrinking and growing before anyone else sees them.
 */
#ifndef TD_DAEMON_DERIVE_H
#define TD_DAEMON_DERIVE_H

#include "common.h"

#include <stdint.h>

/* Creates a memfd of size bytes (> 0) named "tensord:NAME" and maps it read-write. Huge pages
 * are asked for (MADV_HUGEPAGE) when the buffer is large; the kernel may decline. On success
 * the caller owns *fd and the mapping. */
int td__derive_memfd(const char *name, uint64_t size, int *fd, void **map, td_error *err);

/* Unmaps the writable mapping and seals fd (F_SEAL_WRITE | SHRINK | GROW | SEAL). On failure fd
 * is left open for the caller to close. */
int td__derive_seal(int fd, void *map, uint64_t size, td_error *err);

/* Copies size bytes of src_fd into a new sealed memfd with large sequential reads. A file that
 * turns out shorter is TD_ETRUNC. On success *fd is the caller's. */
int td__derive_snapshot(int src_fd, uint64_t size, const char *name, int *fd, td_error *err);

#endif

/*
 * client.h - libtensord internals shared by the client modules: regions (the mappings arrays
 * view into), array construction, and the loader back ends.
 */
#ifndef TD_CLIENT_H
#define TD_CLIENT_H

#include "table.h"
#include "tensord.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* A reference-counted span of memory that arrays view into: a file mapping, a mapped memfd, a
 * decoded buffer. The last td__region_release calls release(ctx, base, len). */
typedef struct td__region {
    atomic_long refs;
    void *base;
    size_t len;
    void (*release)(void *ctx, void *base, size_t len);
    void *ctx;
    td_provenance provenance; /* of the arrays viewing it; TD_PROVENANCE_EMBEDDED by default */
} td__region;

/* Makes a region with one reference (the caller's). NULL when out of memory; release is not
 * called then. */
td__region *td__region_new(void *base, size_t len, void (*release)(void *, void *, size_t),
                           void *ctx);
td__region *td__region_retain(td__region *r);
void td__region_release(td__region *r);
/* A region over an munmap-able mapping. */
td__region *td__region_mmap(void *base, size_t len);

/* A read-only array viewing data (inside r) with r retained. */
int td__array_view(td__region *r, td_dtype dtype, uint32_t ndim, const int64_t *shape,
                   const void *data, uint64_t nbytes, td_array **out, td_error *err);
/* A writable, zeroed array of nbytes; used by decoders that fill an array in place. */
int td__array_alloc(td_dtype dtype, uint32_t ndim, const int64_t *shape, td_array **out,
                    td_error *err);

/* Fills item with a borrowed description of a. */
void td__array_item(const td_array *a, const char *name, td__item *item);

/* Makes room for n entries in all (index included), so that adding up to n allocates only the
 * names. TD_ENOMEM leaves d as it was. */
int td__dict_reserve(td_dict *d, size_t n);
/* td_dict_set that keeps name itself (malloc'd) instead of a copy: the dict's on success, still
 * the caller's on failure. */
int td__dict_set_taking(td_dict *d, char *name, td_array *a, td_error *err);

/* td_load's checks of its arguments (path and arrays set, a known format, no metadata asked of
 * npy or npz); *format receives the format, from opt or the extension. Clears *arrays, *meta. */
int td__load_check(const char *path, const td_load_options *opt, td_dict **arrays, td_meta **meta,
                   td_format *format, td_error *err);
/* Turns a table whose entries are all viewable (or decodable from region 0 = base/len) into a
 * dict, viewing into regions[entry.region]. Decodes entries with a layout into owned arrays.
 * The entries' names move into the dict (left NULL in t); t is destroyed by its owner after. */
int td__table_to_dict(td__table *t, td__region *const *regions, size_t nregions, const char *fname,
                      td_dict **out, td_error *err);

/* Opens path read-only (close-on-exec) into *fd; "PATH: cannot open: REASON" otherwise. */
int td__open_ro(const char *path, int *fd, td_error *err);

/* Opens path and maps it whole, read-only and shared. Empty files, directories and other
 * non-regular files are refused. On success the caller munmaps *base. */
int td__map_file(const char *path, void **base, size_t *len, td_error *err);

/* Embedded mode: open, map, index, validate, build the dict. */
int td__load_embedded(const char *path, td_format format, const td_load_options *opt,
                      td_dict **arrays, td_meta **meta, td_error *err);

/* Daemon mode (daemon.c): the socket path the options name, connecting, and a load through the
 * daemon. */
const char *td__socket_path(const td_load_options *opt);
int td__daemon_connect(const char *path, int *sock, td_error *err);
int td__daemon_load(const char *path, td_format format, const td_load_options *opt,
                    td_dict **arrays, td_meta **meta, td_error *err);

/* Which way saves take (client/save.c). A test hook: tests/unit/test_crashsafe.c sets it to
 * reach the fallbacks on a machine that has O_TMPFILE and /proc; nothing else changes it. Not
 * exported from the shared library (hidden like every td__ symbol). */
typedef enum td__save_way {
    TD__SAVE_AUTO = 0, /* an unnamed file (O_TMPFILE) when the file system has it */
    TD__SAVE_NAMED,    /* as on a file system without O_TMPFILE: a named temporary */
    TD__SAVE_PROC,     /* as where linkat(AT_EMPTY_PATH) is refused: linked through /proc */
    TD__SAVE_NO_LINK,  /* as where the unnamed file cannot be linked: written, dropped, and the
                          save starts again with a named temporary */
} td__save_way;
extern td__save_way td__save_force;

#endif

/*
 * view.c - what both load paths share: opening a file read-only, mapping it whole, and turning a
 * tensor table into a dict of views (decoding the entries that cannot be viewed as stored).
 *
 * Embedded mode (load.c) views into its own mapping of the file; daemon mode (remote_load.c)
 * views into the regions the daemon passed. Neither calls the other: both call this.
 */
#include "client.h"
#include "common.h"
#include "dequant.h"
#include "index.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int td__table_to_dict(td__table *t, td__region *const *regions, size_t nregions, unsigned threads,
                      const char *fname, td_dict **out, td_error *err)
{
    td_dict *d = td_dict_new();
    if (!d || td__dict_reserve(d, t->n)) {
        td_dict_free(d);
        return td__err(err, TD_ENOMEM, "%s: out of memory", fname);
    }
    int rc = 0;
    for (size_t i = 0; i < t->n && !rc; i++) {
        td__entry *e = &t->entries[i];
        td_array *a = NULL;
        if (e->layout) {
            rc = td__array_alloc(e->dtype, e->ndim, e->shape, &a, err);
            if (!rc && e->file >= nregions)
                rc = td__err(err, TD_EFORMAT, "%s: tensor '%s': file %u of %zu", fname,
                             e->name ? e->name : "", e->file, nregions);
            if (!rc)
                rc = td__decode_entry(e, regions[e->file]->base, regions[e->file]->len,
                                      td_array_data_mut(a), threads, fname, err);
        } else if (e->region >= nregions) {
            rc = td__err(err, TD_EFORMAT, "%s: tensor '%s': region %u of %zu", fname,
                         e->name ? e->name : "", e->region, nregions);
        } else {
            const td__region *r = regions[e->region];
            if (e->offset > r->len || r->len - e->offset < e->nbytes)
                rc = td__err(err, TD_EFORMAT, "%s: tensor '%s': bytes outside region %u", fname,
                             e->name ? e->name : "", e->region);
            else
                rc = td__array_view(regions[e->region], e->dtype, e->ndim, e->shape,
                                    (const uint8_t *)r->base + e->offset, e->nbytes, &a, err);
        }
        if (!rc && e->name) {
            rc = td__dict_set_taking(d, e->name, a, err);
            if (!rc)
                e->name = NULL; /* the dict's now */
        } else if (!rc) {
            rc = td_dict_push(d, a, err);
        }
        td_array_release(a);
    }
    if (rc) {
        td_dict_free(d);
        return rc;
    }
    *out = d;
    return 0;
}

int td__open_ro(const char *path, int *fd, td_error *err)
{
    *fd = open(path, O_RDONLY | O_CLOEXEC);
    if (*fd >= 0)
        return 0;
    int e = errno;
    return td__err(err, td__err_from_errno(e), "%s: cannot open: %s", path, strerror(e));
}

int td__open_file(const char *path, int *fd, uint64_t *size, td_error *err)
{
    return td__open_file_at(AT_FDCWD, path, path, fd, size, err);
}

int td__map_fd(int fd, uint64_t size, const char *label, void **base, size_t *len, td_error *err)
{
    if (size > SIZE_MAX)
        return td__err(err, TD_ERANGE, "%s: file too large to map", label);
    void *p = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        int e = errno;
        return td__err(err, td__err_from_errno(e), "%s: cannot map %llu bytes: %s", label,
                       (unsigned long long)size, strerror(e));
    }
    *base = p;
    *len = (size_t)size;
    return 0;
}

int td__map_file(const char *path, void **base, size_t *len, td_error *err)
{
    int fd = -1;
    uint64_t size = 0;
    int rc = td__open_file(path, &fd, &size, err);
    if (!rc) {
        rc = td__map_fd(fd, size, path, base, len, err);
        close(fd);
    }
    return rc;
}

int td__table_finish(td__table *t, td__region *const *regions, size_t nregions,
                     const td_load_options *opt, const char *path, td_dict **arrays, td_meta **meta,
                     td_error *err)
{
    int rc = 0;
    if (opt->dequantize)
        rc = td__table_dequant(t, (int)td__dequant_code(opt->dequantize), path, err);
    if (!rc)
        rc = td__table_to_dict(t, regions, nregions, opt->threads, path, arrays, err);
    if (!rc && meta) {
        *meta = t->meta ? t->meta : td_meta_new();
        t->meta = NULL;
        if (!*meta) {
            td_dict_free(*arrays);
            *arrays = NULL;
            rc = td__err(err, TD_ENOMEM, "%s: out of memory", path);
        }
    }
    return rc;
}

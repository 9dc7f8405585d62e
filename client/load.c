/*
 * load.c - td_load: choosing the format and the mode, the embedded loader, and turning a
 * tensor table into a dict of views.
 */
#include "client.h"
#include "common.h"
#include "index.h"
#include "dequant.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int td__table_to_dict(td__table *t, td__region *const *regions, size_t nregions, const char *fname,
                      td_dict **out, td_error *err)
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
            if (!rc)
                rc = td__decode_entry(e, regions[0]->base, regions[0]->len, td_array_data_mut(a),
                                      fname, err);
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

/* Opens and maps path read-only. Empty files are refused here: there is nothing to map and no
 * format allows them. */
int td__map_file(const char *path, void **base, size_t *len, td_error *err)
{
    int fd;
    int rc = td__open_ro(path, &fd, err);
    if (rc)
        return rc;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        rc = td__err(err, td__err_from_errno(e), "%s: cannot stat: %s", path, strerror(e));
    } else if (!S_ISREG(st.st_mode)) {
        rc = td__err(err, TD_EINVAL, "%s: not a regular file", path);
    } else if (st.st_size == 0) {
        rc = td__err(err, TD_ETRUNC, "%s: file is empty", path);
    } else if ((uint64_t)st.st_size > SIZE_MAX) {
        rc = td__err(err, TD_ERANGE, "%s: file too large to map", path);
    } else {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            rc = td__err(err, td__err_from_errno(e), "%s: cannot map %lld bytes: %s", path,
                         (long long)st.st_size, strerror(e));
        } else {
            *base = p;
            *len = (size_t)st.st_size;
        }
    }
    close(fd);
    return rc;
}

int td__load_embedded(const char *path, td_format format, const td_load_options *opt,
                      td_dict **arrays, td_meta **meta, td_error *err)
{
    void *base = NULL;
    size_t len = 0;
    int rc = td__map_file(path, &base, &len, err);
    if (rc)
        return rc;
    td__region *file = td__region_mmap(base, len);
    if (!file) {
        munmap(base, len);
        return td__err(err, TD_ENOMEM, "%s: out of memory", path);
    }
    td__table t;
    td__table_init(&t, format);
    rc = td__index(format, TD__RD_MEM(base, len, path), opt->max_inflated, &t, err);
    if (!rc && opt->dequantize)
        rc = td__table_dequant(&t, opt->dequantize, path, err);
    if (!rc)
        rc = td__table_to_dict(&t, &file, 1, path, arrays, err);
    if (!rc && meta) {
        *meta = t.meta ? t.meta : td_meta_new();
        t.meta = NULL;
        if (!*meta) {
            td_dict_free(*arrays);
            rc = td__err(err, TD_ENOMEM, "%s: out of memory", path);
        }
    }
    td__table_destroy(&t);
    td__region_release(file); /* the arrays hold their own references */
    return rc;
}

int td__load_check(const char *path, const td_load_options *opt, td_dict **arrays, td_meta **meta,
                   td_format *format, td_error *err)
{
    *format = TD_FORMAT_AUTO;
    if (!path || !arrays)
        return td__err(err, TD_EINVAL, "[load] path and arrays must not be NULL");
    *arrays = NULL;
    if (meta)
        *meta = NULL;
    *format = opt && opt->format ? opt->format : td_format_from_path(path);
    if (!td_format_name(*format))
        return td__err(err, TD_ENOTSUP,
                       "%s: could not infer the file format from the extension (expected .npy, "
                       ".npz, .safetensors or .gguf)",
                       path);
    if (meta && (*format == TD_FORMAT_NPY || *format == TD_FORMAT_NPZ))
        return td__err(err, TD_ENOMETA, "%s: %s files have no metadata", path,
                       td_format_name(*format));
    return 0;
}

int td_load(const char *path, const td_load_options *opt, td_dict **arrays, td_meta **meta,
            td_error *err)
{
    static const td_load_options defaults = TD_LOAD_OPTIONS_INIT;
    if (!opt)
        opt = &defaults;
    td_format format;
    int rc = td__load_check(path, opt, arrays, meta, &format, err);
    if (rc)
        return rc;
    if (opt->mode != TD_MODE_EMBEDDED && opt->mode != TD_MODE_DAEMON && opt->mode != TD_MODE_AUTO)
        return td__err(err, TD_EINVAL, "%s: unknown load mode %d", path, (int)opt->mode);
    switch (opt->mode) {
    case TD_MODE_EMBEDDED:
        return td__load_embedded(path, format, opt, arrays, meta, err);
    case TD_MODE_DAEMON:
        return td__daemon_load(path, format, opt, arrays, meta, err);
    case TD_MODE_AUTO: {
        rc = td__daemon_load(path, format, opt, arrays, meta, err);
        /* The daemon could not serve this (not there, gone, too busy, its memory budget or
         * this user's quota full of what clients hold, an older daemon that lacks a feature):
         * do it ourselves. What it found wrong with the file stands. */
        switch (rc) {
        case TD_ECONNECT:
        case TD_ECLOSED:
        case TD_EPROTO:
        case TD_EVERSION:
        case TD_ENOTSUP:
        case TD_ELIMIT:
        case TD_ENOMEM:
        case TD_ESYS:
        case TD_EAGAIN:
        case TD_EBUSY:
        case TD_EBUDGET:
            return td__load_embedded(path, format, opt, arrays, meta, err);
        default:
            return rc;
        }
    }
    default:
        return td__err(err, TD_EINVAL, "%s: unknown load mode %d", path, (int)opt->mode);
    }
}

int td_load_array(const char *path, const td_load_options *opt, td_array **out, td_error *err)
{
    if (!out)
        return td__err(err, TD_EINVAL, "[load] out must not be NULL");
    td_load_options o = opt ? *opt : (td_load_options)TD_LOAD_OPTIONS_INIT;
    if (!o.format)
        o.format = td_format_from_path(path);
    if (o.format != TD_FORMAT_NPY)
        return td__err(err, TD_EINVAL, "%s: td_load_array reads .npy files only", path);
    td_dict *d;
    int rc = td_load(path, &o, &d, NULL, err);
    if (rc)
        return rc;
    *out = td_array_retain(td_dict_at(d, 0, NULL));
    td_dict_free(d);
    return 0;
}

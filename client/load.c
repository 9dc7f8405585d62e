/*
 * load.c - td_load and td_load_array: choosing the mode (the daemon, else this process), and
 * the embedded loader: map the file, index it, dequantize on request, build the dict of views.
 */
#include "client.h"
#include "common.h"
#include "index.h"
#include "model.h"
#include "remote.h"

#include <sys/mman.h>

/* Embedded mode: map, index, validate, dequantize when asked, build the dict. opt is a whole
 * struct (td__load_check) whose format is known. */
static int td__load_embedded(const char *path, const td_load_options *opt, td_dict **arrays,
                             td_meta **meta, td_error *err)
{
    if (opt->format == TD_FORMAT_GGUF || td__model_is_hf_index(path))
        return td__load_model_embedded(path, opt, arrays, meta, err);
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
    td__table_init(&t, opt->format);
    rc = td__index(opt->format, TD__RD_MEM(base, len, path), opt->max_inflated, &t, err);
    if (!rc)
        rc = td__table_finish(&t, &file, 1, opt, path, arrays, meta, err);
    td__table_destroy(&t);
    td__region_release(file); /* the arrays hold their own references */
    return rc;
}

int td_load(const char *path, const td_load_options *opt, td_dict **arrays, td_meta **meta,
            td_error *err)
{
    td_load_options o;
    int rc = td__load_check(path, opt, arrays, meta, &o, err);
    if (rc)
        return rc;
    switch (o.mode) {
    case TD_MODE_EMBEDDED:
        return td__load_embedded(path, &o, arrays, meta, err);
    case TD_MODE_DAEMON:
        return td__remote_load(path, &o, arrays, meta, err);
    case TD_MODE_AUTO: {
        rc = td__remote_load(path, &o, arrays, meta, err);
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
            return td__load_embedded(path, &o, arrays, meta, err);
        default:
            return rc;
        }
    }
    default: /* td__load_options_copy refused it */
        return td__err(err, TD_EINVAL, "%s: unknown load mode %d", path, (int)o.mode);
    }
}

int td_load_array(const char *path, const td_load_options *opt, td_array **out, td_error *err)
{
    if (!out || !path)
        return td__err(err, TD_EINVAL, "[load] path and out must not be NULL");
    *out = NULL;
    td_load_options o;
    int rc = td__load_options_copy(opt, &o, path, err);
    if (rc)
        return rc;
    if (!o.format)
        o.format = td_format_from_path(path);
    if (o.format != TD_FORMAT_NPY)
        return td__err(err, TD_EINVAL, "%s: td_load_array reads .npy files only", path);
    td_dict *d;
    rc = td_load(path, &o, &d, NULL, err);
    if (rc)
        return rc;
    *out = td_array_retain(td_dict_at(d, 0, NULL));
    td_dict_free(d);
    return 0;
}

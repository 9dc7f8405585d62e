/*
 * index.c - one entry point from a mapped file of a known format to its tensor table, shared by
 * the embedded loader, tensorctl and the daemon.
 */
#include "common.h"
#include "gguf.h"
#include "npy.h"
#include "npz.h"
#include "safetensors.h"
#include "table.h"
#include "index.h"
#include "dtype.h"

const char *td_format_name(td_format f)
{
    switch (f) {
    case TD_FORMAT_NPY:
        return "npy";
    case TD_FORMAT_NPZ:
        return "npz";
    case TD_FORMAT_SAFETENSORS:
        return "safetensors";
    case TD_FORMAT_GGUF:
        return "gguf";
    default:
        return NULL;
    }
}

td_format td_format_from_path(const char *path)
{
    const char *dot = path ? strrchr(path, '.') : NULL;
    if (!dot || strchr(dot, '/'))
        return TD_FORMAT_AUTO;
    for (int f = TD_FORMAT_NPY; f <= TD_FORMAT_GGUF; f++)
        if (strcmp(dot + 1, td_format_name((td_format)f)) == 0)
            return (td_format)f;
    return TD_FORMAT_AUTO;
}

int td__index(td_format format, td__rd *r, uint64_t max_inflated, td__table *t, td_error *err)
{
    int rc;
    const char *fname = r->fname;
    switch (format) {
    case TD_FORMAT_NPY:
        rc = td__npy_index(r, t, err);
        break;
    case TD_FORMAT_NPZ:
        rc = td__npz_index(r, max_inflated ? max_inflated : TD__DEFAULT_MAX_INFLATED, t, err);
        break;
    case TD_FORMAT_SAFETENSORS:
        rc = td__st_index(r, t, err);
        break;
    case TD_FORMAT_GGUF:
        rc = td__gguf_index(r, t, err);
        break;
    default:
        return td__err(err, TD_ENOTSUP, "%s: unknown file format %d", fname, (int)format);
    }
    if (rc)
        return rc;
    /* Whatever the codec checked, a view handed out is always inside its region. */
    for (size_t i = 0; i < t->n; i++) {
        const td__entry *e = &t->entries[i];
        uint64_t at = e->layout ? e->src.offset : e->offset;
        uint64_t n = e->layout ? e->src.nbytes : e->nbytes;
        if (at > r->len || r->len - at < n)
            return td__err(err, TD_EFORMAT,
                           "%s: tensor '%s': bytes [%llu, +%llu) outside the "
                           "file of %llu bytes",
                           fname, e->name ? e->name : "", (unsigned long long)at,
                           (unsigned long long)n, (unsigned long long)r->len);
    }
    td__table_align(t);
    return 0;
}

void td__table_align(td__table *t)
{
    for (size_t i = 0; i < t->n; i++) {
        td__entry *e = &t->entries[i];
        uint32_t align = td__dtype_align(e->dtype);
        if (e->layout || e->region || !e->nbytes || align <= 1 || e->offset % align == 0)
            continue;
        e->layout = TD__LAYOUT_ALIGN;
        e->src.offset = e->offset;
        e->src.nbytes = e->nbytes;
    }
}

td_format td__detect_format(const uint8_t *base, size_t len)
{
    if (len >= 6 && memcmp(base, "\x93NUMPY", 6) == 0)
        return TD_FORMAT_NPY;
    if (len >= 4 && memcmp(base, "GGUF", 4) == 0)
        return TD_FORMAT_GGUF;
    if (len >= 4 && (memcmp(base, "PK\x03\x04", 4) == 0 || memcmp(base, "PK\x05\x06", 4) == 0))
        return TD_FORMAT_NPZ;
    if (len >= 9 && base[8] == '{')
        return TD_FORMAT_SAFETENSORS;
    return TD_FORMAT_AUTO;
}

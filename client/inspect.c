/*
 * inspect.c - td_inspect and td_verify: a file's table and metadata without its data, and the
 * complete check of a file.
 *
 * td_inspect reads the way the daemon does: a descriptor reader (core/reader.h) copies with
 * pread only the bytes the codec parses, so tensor data is never mapped or read and a file that
 * shrinks meanwhile is a clean TD_ETRUNC. The table is the one td_load builds (same codecs,
 * same checks, same messages), kept whole with its internal layout flags turned into td_layout
 * bits at the accessors.
 *
 * td_verify maps the file, like embedded td_load, because it reads every byte anyway: it
 * indexes, checks every npz member's CRC-32 (stored ones included) and decodes every entry
 * that needs decoding into a scratch buffer, one at a time.
 */
#include "client.h"
#include "common.h"
#include "dequant.h"
#include "index.h"
#include "zip.h"

#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

struct td_inspect_result {
    td__table t; /* entries and metadata, owned */
    uint64_t file_size;
};

/* The checks of td_inspect and td_verify: path set, valid options, a known format. *o receives
 * the options, its format resolved. */
static int td__inspect_check(const char *path, const td_load_options *opt, td_load_options *o,
                             td_error *err)
{
    if (!path)
        return td__err(err, TD_EINVAL, "[inspect] path must not be NULL");
    int rc = td__load_options_copy(opt, o, path, err);
    if (rc)
        return rc;
    if (!o->format)
        o->format = td_format_from_path(path);
    if (!td_format_name(o->format))
        return td__err(err, TD_ENOTSUP,
                       "%s: could not infer the file format from the extension (expected .npy, "
                       ".npz, .safetensors or .gguf)",
                       path);
    return 0;
}

int td_inspect(const char *path, const td_load_options *opt, td_inspect_result **out, td_error *err)
{
    if (!out)
        return td__err(err, TD_EINVAL, "[inspect] out must not be NULL");
    *out = NULL;
    td_load_options o;
    int rc = td__inspect_check(path, opt, &o, err);
    if (rc)
        return rc;
    int fd;
    uint64_t size;
    if ((rc = td__open_file(path, &fd, &size, err)))
        return rc;
    td_inspect_result *r = calloc(1, sizeof *r);
    if (!r) {
        close(fd);
        return td__err(err, TD_ENOMEM, "%s: out of memory", path);
    }
    r->file_size = size;
    td__table_init(&r->t, o.format);
    /* The caller's own file: no bound on the metadata copied but the file's size (the
     * daemon's budget protects it from its clients, which does not apply here). */
    td__rd rd;
    td__rd_fd(&rd, fd, size, UINT64_MAX, path);
    rc = td__index(o.format, &rd, o.max_inflated, &r->t, err);
    td__rd_close(&rd);
    close(fd);
    if (!rc && o.dequantize)
        rc = td__table_dequant(&r->t, (int)td__dequant_code(o.dequantize), path, err);
    if (rc) {
        td_inspect_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

void td_inspect_free(td_inspect_result *r)
{
    if (!r)
        return;
    td__table_destroy(&r->t);
    free(r);
}

td_format td_inspect_format(const td_inspect_result *r)
{
    return r ? r->t.format : TD_FORMAT_AUTO;
}

uint64_t td_inspect_file_size(const td_inspect_result *r)
{
    return r ? r->file_size : 0;
}

const td_meta *td_inspect_meta(const td_inspect_result *r)
{
    return r ? r->t.meta : NULL;
}

size_t td_inspect_ntensors(const td_inspect_result *r)
{
    return r ? r->t.n : 0;
}

static const td__entry *td__inspect_entry(const td_inspect_result *r, size_t i)
{
    return r && i < r->t.n ? &r->t.entries[i] : NULL;
}

const char *td_inspect_tensor_name(const td_inspect_result *r, size_t i)
{
    const td__entry *e = td__inspect_entry(r, i);
    return e ? e->name : NULL;
}

td_dtype td_inspect_tensor_dtype(const td_inspect_result *r, size_t i)
{
    const td__entry *e = td__inspect_entry(r, i);
    return e ? e->dtype : TD_DTYPE_COUNT;
}

int td_inspect_tensor_ndim(const td_inspect_result *r, size_t i)
{
    const td__entry *e = td__inspect_entry(r, i);
    return e ? (int)e->ndim : 0;
}

const int64_t *td_inspect_tensor_shape(const td_inspect_result *r, size_t i)
{
    static const int64_t none[1];
    const td__entry *e = td__inspect_entry(r, i);
    return e && e->shape ? e->shape : e ? none : NULL;
}

uint64_t td_inspect_tensor_nbytes(const td_inspect_result *r, size_t i)
{
    const td__entry *e = td__inspect_entry(r, i);
    return e ? e->nbytes : 0;
}

uint64_t td_inspect_tensor_offset(const td_inspect_result *r, size_t i)
{
    const td__entry *e = td__inspect_entry(r, i);
    return !e ? 0 : e->layout ? e->src.offset : e->offset;
}

uint64_t td_inspect_tensor_stored_nbytes(const td_inspect_result *r, size_t i)
{
    const td__entry *e = td__inspect_entry(r, i);
    return !e ? 0 : e->layout ? e->src.nbytes : e->nbytes;
}

td_dtype td_inspect_tensor_stored_dtype(const td_inspect_result *r, size_t i)
{
    const td__entry *e = td__inspect_entry(r, i);
    if (!e)
        return TD_DTYPE_COUNT;
    if (e->layout & (TD__LAYOUT_DEQUANT | TD__LAYOUT_MLX_W | TD__LAYOUT_MLX_S | TD__LAYOUT_MLX_B))
        return e->src.block;
    return e->dtype;
}

/* The one place the table's layout flags become the public td_layout bits. */
unsigned td_inspect_tensor_layout(const td_inspect_result *r, size_t i)
{
    const td__entry *e = td__inspect_entry(r, i);
    if (!e)
        return TD_LAYOUT_VIEW;
    unsigned l = TD_LAYOUT_VIEW;
    if (e->layout & TD__LAYOUT_SWAP)
        l |= TD_LAYOUT_BYTESWAP;
    if (e->layout & TD__LAYOUT_FORTRAN)
        l |= TD_LAYOUT_FORTRAN;
    if (e->layout & TD__LAYOUT_DEFLATE)
        l |= TD_LAYOUT_DEFLATE;
    if (e->layout & TD__LAYOUT_DEQUANT)
        l |= TD_LAYOUT_DEQUANTIZE;
    if (e->layout & (TD__LAYOUT_MLX_W | TD__LAYOUT_MLX_S | TD__LAYOUT_MLX_B))
        l |= TD_LAYOUT_MLX;
    if (e->layout & TD__LAYOUT_ALIGN)
        l |= TD_LAYOUT_ALIGN;
    return l;
}

int td_verify(const char *path, const td_load_options *opt, td_error *err)
{
    td_load_options o;
    int rc = td__inspect_check(path, opt, &o, err);
    if (rc)
        return rc;
    void *base;
    size_t len;
    if ((rc = td__map_file(path, &base, &len, err)))
        return rc;
    td__table t;
    td__table_init(&t, o.format);
    rc = td__index(o.format, TD__RD_MEM(base, len, path), o.max_inflated, &t, err);
    if (!rc && o.dequantize)
        rc = td__table_dequant(&t, (int)td__dequant_code(o.dequantize), path, err);
    if (!rc && o.format == TD_FORMAT_NPZ)
        rc = td__zip_verify(base, len, path, err);
    for (size_t i = 0; !rc && i < t.n; i++) {
        const td__entry *e = &t.entries[i];
        if (!e->layout)
            continue;
        if (e->nbytes > SIZE_MAX) {
            rc = td__err(err, TD_ERANGE, "%s: tensor '%s': %llu bytes do not fit in memory", path,
                         e->name ? e->name : "", (unsigned long long)e->nbytes);
            break;
        }
        void *buf = malloc(e->nbytes ? (size_t)e->nbytes : 1);
        if (!buf)
            rc = td__err(err, TD_ENOMEM, "%s: out of memory for %llu bytes", path,
                         (unsigned long long)e->nbytes);
        else
            rc = td__decode_entry(e, base, len, buf, o.threads, path, err);
        free(buf);
    }
    td__table_destroy(&t);
    munmap(base, len);
    return rc;
}

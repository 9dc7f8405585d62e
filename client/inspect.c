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
#include "model.h"
#include "zip.h"

#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

struct td_inspect_result {
    td__table t; /* entries and metadata, owned */
    uint64_t file_size;
    td__model_files files; /* a model's files (HF index, GGUF); n == 0 for other formats */
};

/* The checks of td_inspect and td_verify: path set, valid options, a known format. *o receives
 * the options, its format resolved. */
static int td__inspect_check(const char *path, const td_load_options *opt, td_load_options *o,
                             td_error *err)
{
    if (!path)
        return td__err(err, TD_EINVAL, "[inspect] path must not be NULL");
    return td__options_for(path, opt, o, err);
}

/* The table of one file of another format than GGUF, read with pread. */
static int td__inspect_file(const char *path, const td_load_options *o, td_inspect_result *r,
                            td_error *err)
{
    int fd;
    uint64_t size;
    int rc = td__open_file(path, &fd, &size, err);
    if (rc)
        return rc;
    r->file_size = size;
    /* The caller's own file: no bound on the metadata copied but the file's size (the
     * daemon's budget protects it from its clients, which does not apply here). */
    td__rd rd;
    td__rd_fd(&rd, fd, size, UINT64_MAX, path);
    rc = td__index(o->format, &rd, o->max_inflated, &r->t, err);
    td__rd_close(&rd);
    close(fd);
    return rc;
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
    td_inspect_result *r = calloc(1, sizeof *r);
    if (!r)
        return td__err(err, TD_ENOMEM, "%s: out of memory", path);
    td__table_init(&r->t, o.format);
    if (o.format == TD_FORMAT_GGUF || td__model_is_hf_index(path)) {
        /* Maybe a model of several files: every file read with pread, none mapped. */
        td__table_destroy(&r->t);
        rc = td__model_index_files(path, &o, 0, &r->files, &r->t, err);
        for (size_t k = 0; k < r->files.n; k++)
            r->file_size += r->files.sizes[k];
    } else {
        rc = td__inspect_file(path, &o, r, err);
    }
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
    td__model_files_free(&r->files);
    free(r);
}

size_t td_inspect_nfiles(const td_inspect_result *r)
{
    return !r ? 0 : r->files.n ? r->files.n : 1;
}

const char *td_inspect_file_name(const td_inspect_result *r, size_t k)
{
    return r && r->files.n > 1 && k < r->files.n ? r->files.names[k] : NULL;
}

size_t td_inspect_tensor_file(const td_inspect_result *r, size_t i)
{
    return r && i < r->t.n ? r->t.entries[i].file : 0;
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

/* Decodes into a scratch buffer every entry of t that needs decoding; files[e->file] holds
 * its stored bytes. */
static int td__verify_decode(const td__table *t, td__region *const *files, size_t nfiles,
                             const td_load_options *o, const char *path, td_error *err)
{
    int rc = 0;
    for (size_t i = 0; !rc && i < t->n; i++) {
        const td__entry *e = &t->entries[i];
        if (!e->layout)
            continue;
        if (e->nbytes > SIZE_MAX || e->file >= nfiles) {
            rc = td__err(err, TD_ERANGE, "%s: tensor '%s': %llu bytes do not fit in memory", path,
                         e->name ? e->name : "", (unsigned long long)e->nbytes);
            break;
        }
        void *buf = malloc(e->nbytes ? (size_t)e->nbytes : 1);
        if (!buf)
            rc = td__err(err, TD_ENOMEM, "%s: out of memory for %llu bytes", path,
                         (unsigned long long)e->nbytes);
        else
            rc = td__decode_entry(e, files[e->file]->base, files[e->file]->len, buf, o->threads,
                                  path, err);
        free(buf);
    }
    return rc;
}

/* td_verify of a GGUF file or an HF index: every file of the model, mapped. */
static int td__verify_model(const char *path, const td_load_options *o, td_error *err)
{
    td__model_files f = {0};
    td__table t;
    int rc = td__model_index_files(path, o, 1, &f, &t, err);
    if (!rc && o->dequantize)
        rc = td__table_dequant(&t, (int)td__dequant_code(o->dequantize), path, err);
    if (!rc)
        rc = td__verify_decode(&t, f.regions, f.n, o, path, err);
    td__table_destroy(&t);
    td__model_files_free(&f);
    return rc;
}

int td_verify(const char *path, const td_load_options *opt, td_error *err)
{
    td_load_options o;
    int rc = td__inspect_check(path, opt, &o, err);
    if (rc)
        return rc;
    if (o.format == TD_FORMAT_GGUF || td__model_is_hf_index(path))
        return td__verify_model(path, &o, err);
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
    if (!rc) {
        /* The mapping as a region of the stack: nothing outlives this call. */
        td__region file = {.base = base, .len = len};
        td__region *files[1] = {&file};
        rc = td__verify_decode(&t, files, 1, &o, path, err);
    }
    td__table_destroy(&t);
    munmap(base, len);
    return rc;
}

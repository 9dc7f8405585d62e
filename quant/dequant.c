/*
 * dequant.c - dequantize-on-load: turning a table's GGML block entries into entries to decode
 * (td__table_dequant), and decoding them (td__decode_dequant, called by td__decode_entry).
 * The same code serves the embedded loader and the daemon, which decodes once into a memfd.
 */
#include "common.h"
#include "dtype.h"
#include "ggml_quants.h"
#include "table.h"
#include "dequant.h"

#include <stdio.h>
#include <stdlib.h>

/* Appends an entry for NAME+suffix (or NAME when suffix is NULL) decoding e's blocks with
 * layout and dtype. */
static int dq_add(td__table *out, const td__entry *e, const char *suffix, uint32_t layout,
                  td_dtype dtype, uint32_t ndim, const int64_t *shape, const char *fname,
                  td_error *err)
{
    size_t n = strlen(e->name);
    int strip = suffix && n >= 7 && strcmp(e->name + n - 7, ".weight") == 0;
    size_t base = strip ? n - 7 : n;
    size_t slen = suffix ? strlen(suffix) : 0;
    char *name = malloc(base + slen + 1);
    if (!name)
        return td__err(err, TD_ENOMEM, "%s: out of memory", fname);
    memcpy(name, e->name, base);
    memcpy(name + base, suffix ? suffix : "", slen);
    name[base + slen] = '\0';
    td__entry *o = td__table_add(out, name, base + slen, err);
    free(name);
    if (!o)
        return err ? err->code : TD_ENOMEM;
    o->dtype = dtype;
    o->layout = layout;
    o->src.offset = e->offset;
    o->src.nbytes = e->nbytes;
    o->src.block = e->dtype;
    o->src.elems = 1;
    for (uint32_t i = 0; i < e->ndim; i++)
        o->src.elems *= (uint64_t)e->shape[i];
    o->src.row_elems = e->ndim ? (uint64_t)e->shape[e->ndim - 1] : 1;
    int rc = td__entry_set_shape(o, ndim, shape, err);
    if (!rc)
        rc = td__shape_nbytes(dtype, ndim, shape, &o->nbytes, err);
    return rc;
}

int td__table_dequant(td__table *t, int target, const char *fname, td_error *err)
{
    if (!td__dequant_target_ok(target))
        return td__err(err, TD_EINVAL,
                       "%s: dequantize to %d: not float32, float16, bfloat16 or the MLX form",
                       fname, target);
    td__table out;
    td__table_init(&out, t->format);
    int rc = 0;
    for (size_t i = 0; i < t->n && !rc; i++) {
        const td__entry *e = &t->entries[i];
        char label[160];
        snprintf(label, sizeof label, "%s: tensor '%s'", fname, e->name ? e->name : "");
        if (!td_dtype_is_block(e->dtype)) {
            td__entry *o = td__table_add(&out, e->name, e->name ? strlen(e->name) : 0, err);
            if (!o) {
                rc = err ? err->code : TD_ENOMEM;
                break;
            }
            char *name = o->name;
            *o = *e;
            o->name = name;
            o->shape = NULL;
            o->ndim = 0;
            rc = td__entry_set_shape(o, e->ndim, e->shape, err);
            continue;
        }
        if (e->layout & ~(uint32_t)TD__LAYOUT_ALIGN) {
            rc = td__err(err, TD_ENOTSUP, "%s: cannot dequantize an entry that is itself encoded",
                         label);
            break;
        }
        if (!td__gq_supported(e->dtype)) {
            rc = td__err(err, TD_EDTYPE, "%s: cannot dequantize %s (supported: %s)", label,
                         td_dtype_name(e->dtype), td__gq_supported_names());
            break;
        }
        if (target == TD__DEQUANT_MLX && td__gq_mlx_bits(e->dtype)) {
            int64_t ws[TD_MAX_DIMS], ss[TD_MAX_DIMS];
            rc = td__gq_mlx_shapes(e->dtype, (int)e->ndim, e->shape, ws, ss, label, err);
            if (!rc)
                rc = dq_add(&out, e, NULL, TD__LAYOUT_MLX_W, TD_UINT32, e->ndim, ws, fname, err);
            if (!rc)
                rc = dq_add(&out, e, ".scales", TD__LAYOUT_MLX_S, TD_FLOAT16, e->ndim, ss, fname,
                            err);
            if (!rc)
                rc = dq_add(&out, e, ".biases", TD__LAYOUT_MLX_B, TD_FLOAT16, e->ndim, ss, fname,
                            err);
        } else {
            td_dtype to = target == TD__DEQUANT_MLX ? TD_FLOAT16 : (td_dtype)target;
            rc = dq_add(&out, e, NULL, TD__LAYOUT_DEQUANT, to, e->ndim, e->shape, fname, err);
        }
    }
    if (!rc)
        rc = td__table_check_unique(&out, fname, err);
    if (rc) {
        td__table_destroy(&out);
        return rc;
    }
    out.meta = t->meta;
    t->meta = NULL;
    td__table_destroy(t);
    *t = out;
    return 0;
}

int td__decode_dequant(const td__entry *e, const uint8_t *file, size_t file_len, void *dst,
                       unsigned threads, const char *fname, td_error *err)
{
    char label[160];
    snprintf(label, sizeof label, "%s: tensor '%s'", fname, e->name ? e->name : "");
    if (e->src.offset > file_len || file_len - e->src.offset < e->src.nbytes)
        return td__err(err, TD_ETRUNC, "%s: data past the end of the file", label);
    const uint8_t *src = file + e->src.offset;
    td__gq_options gq = {.nthreads = td__gq_threads(e->src.elems, threads)};
    if (e->layout & TD__LAYOUT_DEQUANT)
        return td__gq_dequantize(e->src.block, src, e->src.nbytes, e->src.elems, e->src.row_elems,
                                 e->dtype, dst, e->nbytes, &gq, label, err);
    size_t be, bb;
    td_dtype_block(e->src.block, &be, &bb);
    uint64_t nblocks = e->src.elems / be;
    return td__gq_mlx_pack(e->src.block, src, e->src.nbytes, nblocks,
                           e->layout & TD__LAYOUT_MLX_W ? dst : NULL,
                           e->layout & TD__LAYOUT_MLX_S ? dst : NULL,
                           e->layout & TD__LAYOUT_MLX_B ? dst : NULL, label, err);
}

/*
 * options.c - td_load_options at the API boundary: initialising them, copying the caller's
 * struct by its size into one of this library's version, checking its fields, and turning the
 * public td_dequant into the dequantization code that quant/ and the wire protocol speak; and
 * the argument checks every load makes, embedded or through the daemon (td__load_check).
 *
 * Every public call that takes options copies them here first (td__load_options_copy), so that
 * the code below the API reads a whole struct of this version and never the caller's memory
 * past the size the caller gave.
 */
#include "client.h"
#include "common.h"
#include "model.h"

#include <stddef.h>

/* The size of the first version of td_load_options (0.2.0): up to the end of `flags`. Callers
 * always pass at least this much; later versions append fields after it. */
#define TD__LOAD_OPTIONS_SIZE_V1 (offsetof(td_load_options, flags) + sizeof(unsigned))

/* The flags this version knows: none yet. */
#define TD__LOAD_FLAGS_KNOWN 0u

void td_load_options_init(td_load_options *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->size = sizeof *o;
}

int td__load_options_copy(const td_load_options *in, td_load_options *out, const char *what,
                          td_error *err)
{
    memset(out, 0, sizeof *out);
    out->size = sizeof *out;
    if (!in)
        return 0;
    if (in->size < TD__LOAD_OPTIONS_SIZE_V1)
        return td__err(err, TD_EINVAL,
                       "%s: td_load_options.size is %zu, at least %zu expected: initialise the "
                       "options with TD_LOAD_OPTIONS_INIT (or td_load_options_init)",
                       what, in->size, (size_t)TD__LOAD_OPTIONS_SIZE_V1);
    memcpy(out, in, in->size < sizeof *out ? in->size : sizeof *out);
    out->size = sizeof *out;
    if (out->mode != TD_MODE_AUTO && out->mode != TD_MODE_EMBEDDED && out->mode != TD_MODE_DAEMON)
        return td__err(err, TD_EINVAL, "%s: td_load_options.mode: unknown load mode %d", what,
                       (int)out->mode);
    if ((unsigned)out->dequantize > TD_DEQUANT_MLX)
        return td__err(err, TD_EINVAL,
                       "%s: td_load_options.dequantize: %d is not a td_dequant value (NONE, F32, "
                       "F16, BF16 or MLX)",
                       what, (int)out->dequantize);
    if (out->flags & ~TD__LOAD_FLAGS_KNOWN)
        return td__err(err, TD_EINVAL,
                       "%s: td_load_options.flags: unknown flags 0x%x (this is libtensord %s)",
                       what, out->flags & ~TD__LOAD_FLAGS_KNOWN, td_version_string());
    return 0;
}

uint32_t td__dequant_code(td_dequant d)
{
    switch (d) {
    case TD_DEQUANT_F32:
        return TD_FLOAT32;
    case TD_DEQUANT_F16:
        return TD_FLOAT16;
    case TD_DEQUANT_BF16:
        return TD_BFLOAT16;
    case TD_DEQUANT_MLX:
        return TD__DEQUANT_MLX;
    default:
        return 0;
    }
}

int td__options_for(const char *path, const td_load_options *opt, td_load_options *o, td_error *err)
{
    int rc = td__load_options_copy(opt, o, path, err);
    if (rc)
        return rc;
    if (!o->format)
        o->format = td_format_from_path(path);
    if (!o->format && td__model_is_hf_index(path))
        o->format = TD_FORMAT_SAFETENSORS; /* a sharded model's index */
    if (!td_format_name(o->format))
        return td__err(err, TD_ENOTSUP,
                       "%s: could not infer the file format from the extension (expected .npy, "
                       ".npz, .safetensors or .gguf)",
                       path);
    return 0;
}

int td__load_check(const char *path, const td_load_options *opt, td_dict **arrays, td_meta **meta,
                   td_load_options *o, td_error *err)
{
    if (arrays)
        *arrays = NULL;
    if (meta)
        *meta = NULL;
    if (!path || !arrays)
        return td__err(err, TD_EINVAL, "[load] path and arrays must not be NULL");
    int rc = td__options_for(path, opt, o, err);
    if (rc)
        return rc;
    if (meta && (o->format == TD_FORMAT_NPY || o->format == TD_FORMAT_NPZ))
        return td__err(err, TD_ENOMETA, "%s: %s files have no metadata", path,
                       td_format_name(o->format));
    return 0;
}

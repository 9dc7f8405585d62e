/*
 * safetensors.c - safetensors reading (validation + indexing) and writing (see safetensors.h).
 *
 * The header is parsed with jansson: JSON_REJECT_DUPLICATES refuses repeated tensor names and
 * metadata keys, JSON_ALLOW_NUL lets metadata strings hold NUL as JSON allows (object keys with
 * NUL are still refused by jansson). Since jansson 2.8 objects iterate in insertion order, which
 * is how we keep the header (file) order of the tensors.
 *
 * Validation follows the Rust reference (safetensors/src/tensor.rs) and is stricter where the
 * format leaves no doubt: entries have exactly dtype, shape and data_offsets; shapes and offsets
 * are non-negative integers; sorted by offsets, the tensors tile the data buffer from 0 to its
 * end with no gap and no overlap; each tensor's size is prod(shape) * itemsize (checked).
 */
#include "safetensors.h"
#include "common.h"
#include "dtype.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#if JANSSON_VERSION_HEX < 0x020b00
#error "jansson >= 2.11 is needed (ordered objects, json_error_code)"
#endif

/* A tensor's range in the data buffer, for the tiling check. */
typedef struct st_range {
    uint64_t begin, end;
    size_t entry; /* index in the table */
} st_range;

/* What a JSON value is, for messages. */
static const char *st_jtype(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a real number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}

/* "[2, 3, 4]" into out. */
static const char *st_shape_str(const int64_t *shape, uint32_t ndim, char *out, size_t cap)
{
    size_t o = 0;
    int k = snprintf(out, cap, "[");
    o = k > 0 ? (size_t)k : 0;
    for (uint32_t i = 0; i < ndim && o < cap; i++) {
        k = snprintf(out + o, cap - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
        o += k > 0 ? (size_t)k : 0;
    }
    if (o < cap)
        snprintf(out + o, cap - o, "]");
    return out;
}

/* Reads a non-negative JSON integer. */
static int st_uint(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return -1;
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

/* Parses __metadata__ into meta: an object of strings. */
static int st_metadata(const json_t *md, td_meta *meta, const char *fname, td_error *err)
{
    const char *k;
    json_t *v;
    char q[80];
    if (!json_is_object(md))
        return td__err(err, TD_EFORMAT, "%s: %s: expected an object of strings, found %s", fname,
                       ST_METADATA_KEY, st_jtype(md));
    json_object_foreach((json_t *)md, k, v)
    {
        if (!*k)
            return td__err(err, TD_EFORMAT, "%s: %s: empty key", fname, ST_METADATA_KEY);
        if (!json_is_string(v))
            return td__err(err, TD_EFORMAT, "%s: %s: value of '%s' is %s, not a string", fname,
                           ST_METADATA_KEY, td__quote(k, strlen(k), q, sizeof q), st_jtype(v));
        int rc = td_meta_set_string(meta, k, json_string_value(v), json_string_length(v), err);
        if (rc)
            return td__err_prefix(err, rc, fname);
    }
    return 0;
}

/* Parses one tensor entry and appends it to t; fills *r (entry index, offsets). */
static int st_tensor(const char *name, const json_t *obj, uint64_t data_start, uint64_t data_len,
                     const char *fname, td__table *t, st_range *r, td_error *err)
{
    char q[80], q2[80], sh[256];
    const char *k;
    json_t *v;
    td__quote(name, strlen(name), q, sizeof q);
    if (!*name)
        return td__err(err, TD_EFORMAT, "%s: a tensor has an empty name", fname);
    if (!json_is_object(obj))
        return td__err(err, TD_EFORMAT, "%s: tensor '%s': entry is %s, not an object", fname, q,
                       st_jtype(obj));
    json_object_foreach((json_t *)obj, k, v)
    {
        if (strcmp(k, "dtype") && strcmp(k, "shape") && strcmp(k, "data_offsets"))
            return td__err(err, TD_EFORMAT, "%s: tensor '%s': unknown field '%s'", fname, q,
                           td__quote(k, strlen(k), q2, sizeof q2));
    }

    /* dtype */
    const json_t *jd = json_object_get(obj, "dtype");
    if (!jd)
        return td__err(err, TD_EFORMAT, "%s: tensor '%s': dtype: missing", fname, q);
    if (!json_is_string(jd))
        return td__err(err, TD_EFORMAT, "%s: tensor '%s': dtype: %s, not a string", fname, q,
                       st_jtype(jd));
    const char *ds = json_string_value(jd);
    size_t dslen = json_string_length(jd);
    td_dtype dtype;
    if (strlen(ds) != dslen || td__dtype_from_st_name(ds, &dtype))
        return td__err(err, TD_EDTYPE, "%s: tensor '%s': dtype: unknown dtype '%s'", fname, q,
                       td__quote(ds, dslen, q2, sizeof q2));

    /* shape */
    const json_t *js = json_object_get(obj, "shape");
    if (!js)
        return td__err(err, TD_EFORMAT, "%s: tensor '%s': shape: missing", fname, q);
    if (!json_is_array(js))
        return td__err(err, TD_EFORMAT, "%s: tensor '%s': shape: %s, not an array", fname, q,
                       st_jtype(js));
    size_t ndim = json_array_size(js);
    if (ndim > TD_MAX_DIMS)
        return td__err(err, TD_ELIMIT, "%s: tensor '%s': shape: %zu dimensions, at most %d", fname,
                       q, ndim, TD_MAX_DIMS);
    int64_t shape[TD_MAX_DIMS];
    for (size_t i = 0; i < ndim; i++) {
        const json_t *d = json_array_get(js, i);
        if (!json_is_integer(d))
            return td__err(err, TD_EFORMAT, "%s: tensor '%s': shape[%zu]: %s, not an integer",
                           fname, q, i, st_jtype(d));
        if (json_integer_value(d) < 0)
            return td__err(err, TD_EFORMAT, "%s: tensor '%s': shape[%zu]: %lld is negative", fname,
                           q, i, (long long)json_integer_value(d));
        shape[i] = (int64_t)json_integer_value(d);
    }

    /* data_offsets */
    const json_t *jo = json_object_get(obj, "data_offsets");
    uint64_t b, e;
    if (!jo)
        return td__err(err, TD_EFORMAT, "%s: tensor '%s': data_offsets: missing", fname, q);
    if (!json_is_array(jo) || json_array_size(jo) != 2)
        return td__err(err, TD_EFORMAT,
                       "%s: tensor '%s': data_offsets: expected [begin, end], found %s%s", fname, q,
                       st_jtype(jo), json_is_array(jo) ? " of another length" : "");
    for (size_t i = 0; i < 2; i++) {
        const json_t *x = json_array_get(jo, i);
        if (st_uint(x, i ? &e : &b)) {
            if (json_is_integer(x))
                return td__err(err, TD_EFORMAT,
                               "%s: tensor '%s': data_offsets[%zu]: %lld is "
                               "negative",
                               fname, q, i, (long long)json_integer_value(x));
            return td__err(err, TD_EFORMAT,
                           "%s: tensor '%s': data_offsets[%zu]: %s, not an integer", fname, q, i,
                           st_jtype(x));
        }
    }
    if (e < b)
        return td__err(err, TD_EFORMAT,
                       "%s: tensor '%s': data_offsets: [%llu, %llu) ends before it begins", fname,
                       q, (unsigned long long)b, (unsigned long long)e);

    /* size. An empty tensor's other dimensions must still multiply without overflow: a shape
     * like [2^62, 4, 0] is empty, but code that multiplies it out in int64 would not survive. */
    uint64_t nbytes, prod = 1;
    for (size_t i = 0; i < ndim; i++) {
        if (shape[i] && (!td__mul_u64(prod, (uint64_t)shape[i], &prod) || prod > INT64_MAX))
            return td__err(err, TD_ERANGE, "%s: tensor '%s': shape %s: element count overflows",
                           fname, q, st_shape_str(shape, (uint32_t)ndim, sh, sizeof sh));
    }
    td_error tmp = {0};
    int rc = td__shape_nbytes(dtype, (uint32_t)ndim, shape, &nbytes, &tmp);
    if (rc)
        return td__err(err, rc, "%s: tensor '%s': shape %s: %s", fname, q,
                       st_shape_str(shape, (uint32_t)ndim, sh, sizeof sh), tmp.message);
    if (e - b != nbytes)
        return td__err(
            err, TD_EFORMAT,
            "%s: tensor '%s': data_offsets: [%llu, %llu) holds %llu bytes, but shape "
            "%s of %s needs %llu",
            fname, q, (unsigned long long)b, (unsigned long long)e, (unsigned long long)(e - b),
            st_shape_str(shape, (uint32_t)ndim, sh, sizeof sh), ds, (unsigned long long)nbytes);
    if (e > data_len)
        return td__err(err, TD_ETRUNC,
                       "%s: tensor '%s': data_offsets: [%llu, %llu) runs past the end of the data "
                       "buffer (%llu bytes)",
                       fname, q, (unsigned long long)b, (unsigned long long)e,
                       (unsigned long long)data_len);

    td__entry *ent = td__table_add(t, name, strlen(name), err);
    if (!ent)
        return td__err_prefix(err, err ? err->code : TD_ENOMEM, fname);
    ent->dtype = dtype;
    ent->region = 0;
    ent->offset = data_start + b; /* cannot overflow: b <= data_len and start + len = file */
    ent->nbytes = nbytes;
    ent->layout = 0;
    rc = td__entry_set_shape(ent, (uint32_t)ndim, shape, err);
    if (rc)
        return td__err_prefix(err, rc, fname);
    r->begin = b;
    r->end = e;
    r->entry = t->n - 1;
    return 0;
}

static int st_range_cmp(const void *a, const void *b)
{
    const st_range *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return x->entry < y->entry ? -1 : x->entry > y->entry;
}

/* Sorted by offsets, the ranges must tile [0, data_len) exactly. Sorts r. */
static int st_check_tiling(st_range *r, size_t n, uint64_t data_len, const td__table *t,
                           const char *fname, td_error *err)
{
    char q[80], q2[80];
    qsort(r, n, sizeof *r, st_range_cmp);
    uint64_t expect = 0;
    const st_range *prev = NULL; /* the last non-empty range, which ends at expect */
    for (size_t i = 0; i < n; i++) {
        const char *name = t->entries[r[i].entry].name;
        if (r[i].begin < expect) {
            const char *other = prev ? t->entries[prev->entry].name : "?";
            return td__err(
                err, TD_EFORMAT,
                "%s: tensor '%s': data_offsets: [%llu, %llu) overlaps tensor '%s' "
                "[%llu, %llu)",
                fname, td__quote(name, strlen(name), q, sizeof q), (unsigned long long)r[i].begin,
                (unsigned long long)r[i].end, td__quote(other, strlen(other), q2, sizeof q2),
                prev ? (unsigned long long)prev->begin : 0ULL, (unsigned long long)expect);
        }
        if (r[i].begin > expect)
            return td__err(err, TD_EFORMAT,
                           "%s: tensor '%s': data_offsets: [%llu, %llu) leaves a gap: bytes "
                           "[%llu, %llu) of the data buffer belong to no tensor",
                           fname, td__quote(name, strlen(name), q, sizeof q),
                           (unsigned long long)r[i].begin, (unsigned long long)r[i].end,
                           (unsigned long long)expect, (unsigned long long)r[i].begin);
        if (r[i].end > r[i].begin) {
            expect = r[i].end;
            prev = &r[i];
        }
    }
    if (expect != data_len)
        return td__err(err, TD_EFORMAT,
                       "%s: data buffer: bytes [%llu, %llu) at the end belong to no tensor", fname,
                       (unsigned long long)expect, (unsigned long long)data_len);
    return 0;
}

int td__st_index(td__rd *r, td__table *t, td_error *err)
{
    json_t *root = NULL;
    st_range *ranges = NULL;
    const uint8_t *hdr;
    const char *fname = r->fname;
    uint64_t len = r->len;
    int rc;
    if (len < 8)
        return td__err(err, TD_ETRUNC,
                       "%s: header length: file is %llu bytes, shorter than the 8-byte header "
                       "length",
                       fname, (unsigned long long)len);
    if ((rc = td__rd_get(r, 0, 8, &hdr, err)))
        return rc;
    uint64_t n = td__le64(hdr);
    if (n > ST_MAX_HEADER)
        return td__err(err, TD_ELIMIT, "%s: header length: %llu bytes exceeds the limit of %u",
                       fname, (unsigned long long)n, ST_MAX_HEADER);
    if (n > len - 8)
        return td__err(err, TD_ETRUNC,
                       "%s: header length: %llu bytes runs past the end of the file (%llu bytes "
                       "after the length)",
                       fname, (unsigned long long)n, (unsigned long long)(len - 8));
    if (n && (rc = td__rd_get(r, 8, n, &hdr, err)))
        return rc;
    if (n == 0 || hdr[0] != '{')
        return td__err(err, TD_EFORMAT, "%s: header: does not start with '{' (%s)", fname,
                       n == 0 ? "it is empty" : "first byte differs");
    uint64_t data_start = 8 + n, data_len = len - data_start;

    json_error_t je;
    root = json_loadb((const char *)hdr, (size_t)n, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!root) {
        enum json_error_code c = json_error_code(&je);
        rc = c == json_error_duplicate_key   ? TD_EDUP
             : c == json_error_out_of_memory ? TD_ENOMEM
                                             : TD_EFORMAT;
        return td__err(err, rc, "%s: header: JSON error at byte %d: %s", fname, je.position,
                       je.text);
    }
    if (!json_is_object(root)) {
        rc = td__err(err, TD_EFORMAT, "%s: header: JSON is %s, not an object", fname,
                     st_jtype(root));
        goto done;
    }

    t->format = TD_FORMAT_SAFETENSORS;
    if (!t->meta) {
        t->meta = td_meta_new();
        if (!t->meta) {
            rc = td__err(err, TD_ENOMEM, "%s: out of memory", fname);
            goto done;
        }
    }
    size_t count = json_object_size(root);
    ranges = malloc((count ? count : 1) * sizeof *ranges);
    if (!ranges) {
        rc = td__err(err, TD_ENOMEM, "%s: out of memory for %zu tensors", fname, count);
        goto done;
    }
    size_t nt = 0;
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val)
    {
        if (strcmp(key, ST_METADATA_KEY) == 0)
            rc = st_metadata(val, t->meta, fname, err);
        else
            rc = st_tensor(key, val, data_start, data_len, fname, t, &ranges[nt++], err);
        if (rc)
            goto done;
    }
    rc = st_check_tiling(ranges, nt, data_len, t, fname, err);
done:
    free(ranges);
    json_decref(root);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Writing
 */

/* Data order: item size descending, then position (stable). */
typedef struct st_slot {
    size_t item;
    size_t size;
} st_slot;

static int st_slot_cmp(const void *a, const void *b)
{
    const st_slot *x = a, *y = b;
    if (x->size != y->size)
        return x->size > y->size ? -1 : 1;
    return x->item < y->item ? -1 : x->item > y->item;
}

/* Adds __metadata__ (strings only) to root. */
static int st_write_meta(json_t *root, const td_meta *meta, const char *fname, td_error *err)
{
    char q[80];
    json_t *md = json_object();
    if (!md)
        return td__err(err, TD_ENOMEM, "%s: out of memory", fname);
    for (size_t i = 0; i < td_meta_size(meta); i++) {
        const char *k;
        const td_value *v = td_meta_at(meta, i, &k);
        size_t slen;
        const char *s = td_value_string(v, &slen);
        if (!s) {
            const char *tn = td_meta_type_name(td_value_type(v));
            json_decref(md);
            return td__err(err, TD_EDTYPE,
                           "%s: metadata '%s': safetensors metadata holds strings only, not %s",
                           fname, td__quote(k, strlen(k), q, sizeof q), tn ? tn : "(invalid)");
        }
        json_t *js = json_stringn(s, slen);
        if (!js) {
            json_decref(md);
            return td__err(err, TD_EINVAL, "%s: metadata '%s': value is not valid UTF-8", fname,
                           td__quote(k, strlen(k), q, sizeof q));
        }
        if (json_object_set_new(md, k, js)) {
            json_decref(md);
            return td__err(err, TD_EINVAL, "%s: metadata key '%s' is not valid UTF-8", fname,
                           td__quote(k, strlen(k), q, sizeof q));
        }
    }
    if (json_object_set_new(root, ST_METADATA_KEY, md))
        return td__err(err, TD_ENOMEM, "%s: out of memory", fname);
    return 0;
}

/* The header entry {"dtype", "shape", "data_offsets"} of one item. */
static json_t *st_entry_json(const char *dtype, const td__item *it, uint64_t b, uint64_t e)
{
    json_t *o = json_object(), *shape = json_array(), *offs = json_array();
    if (!o || !shape || !offs)
        goto fail;
    for (int d = 0; d < it->ndim; d++) {
        if (json_array_append_new(shape, json_integer((json_int_t)it->shape[d])))
            goto fail;
    }
    if (json_array_append_new(offs, json_integer((json_int_t)b)) ||
        json_array_append_new(offs, json_integer((json_int_t)e)))
        goto fail;
    /* the _new setters take their value also on failure */
    int bad = json_object_set_new(o, "dtype", json_string(dtype));
    bad |= json_object_set_new(o, "shape", shape);
    shape = NULL;
    bad |= json_object_set_new(o, "data_offsets", offs);
    offs = NULL;
    if (bad)
        goto fail;
    return o;
fail:
    json_decref(shape);
    json_decref(offs);
    json_decref(o);
    return NULL;
}

int td__st_write(td__writer *w, const td__item *items, size_t n, const td_meta *meta,
                 const char *fname, td_error *err)
{
    char q[80];
    int rc = 0;
    json_t *root = NULL;
    st_slot *slots = NULL;
    uint64_t *begin = NULL;
    char *hdr = NULL;
    if (!fname)
        fname = "(safetensors)";
    if (!w || (!items && n))
        return td__err(err, TD_EINVAL, "%s: no writer or no items", fname);

    /* Check every item first, so that nothing is written for a bad one. */
    slots = malloc((n ? n : 1) * sizeof *slots);
    begin = malloc((n ? n : 1) * sizeof *begin);
    root = json_object();
    if (!slots || !begin || !root) {
        rc = td__err(err, TD_ENOMEM, "%s: out of memory for %zu tensors", fname, n);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        const td__item *it = &items[i];
        if (!it->name || !*it->name) {
            rc = td__err(err, TD_EINVAL, "%s: item %zu has no name; safetensors needs names", fname,
                         i);
            goto done;
        }
        td__quote(it->name, strlen(it->name), q, sizeof q);
        if (strcmp(it->name, ST_METADATA_KEY) == 0) {
            rc = td__err(err, TD_EINVAL, "%s: tensor '%s': the name is reserved for metadata",
                         fname, q);
            goto done;
        }
        if (!td__dtype_st_name(it->dtype)) {
            const char *dn = td_dtype_name(it->dtype);
            rc = td__err(err, TD_EDTYPE, "%s: tensor '%s': safetensors cannot hold dtype %s", fname,
                         q, dn ? dn : "(invalid)");
            goto done;
        }
        if (it->ndim < 0 || it->ndim > TD_MAX_DIMS || (it->ndim && !it->shape)) {
            rc = td__err(err, TD_EINVAL, "%s: tensor '%s': %d dimensions", fname, q, it->ndim);
            goto done;
        }
        uint64_t nb;
        td_error tmp = {0};
        rc = td__shape_nbytes(it->dtype, (uint32_t)it->ndim, it->shape, &nb, &tmp);
        if (rc) {
            rc = td__err(err, rc, "%s: tensor '%s': shape: %s", fname, q, tmp.message);
            goto done;
        }
        if (nb != it->nbytes || (nb && !it->data) || nb > SIZE_MAX) {
            rc = td__err(err, TD_EINVAL,
                         "%s: tensor '%s': %llu data bytes given, the shape needs %llu", fname, q,
                         (unsigned long long)it->nbytes, (unsigned long long)nb);
            goto done;
        }
        slots[i].item = i;
        slots[i].size = td_dtype_size(it->dtype);
    }

    /* Data layout: largest items first, so that every tensor is aligned to its item size. */
    qsort(slots, n, sizeof *slots, st_slot_cmp);
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        begin[slots[i].item] = off;
        if (!td__add_u64(off, items[slots[i].item].nbytes, &off) || off > (uint64_t)INT64_MAX) {
            rc = td__err(err, TD_ERANGE, "%s: total data size overflows", fname);
            goto done;
        }
    }

    if (meta && td_meta_size(meta) && (rc = st_write_meta(root, meta, fname, err)))
        goto done;
    for (size_t i = 0; i < n; i++) {
        const td__item *it = &items[i];
        td__quote(it->name, strlen(it->name), q, sizeof q);
        if (json_object_get(root, it->name)) {
            rc = td__err(err, TD_EDUP, "%s: tensor '%s' appears twice", fname, q);
            goto done;
        }
        json_t *e =
            st_entry_json(td__dtype_st_name(it->dtype), it, begin[i], begin[i] + it->nbytes);
        if (!e) {
            rc = td__err(err, TD_ENOMEM, "%s: tensor '%s': out of memory", fname, q);
            goto done;
        }
        if (json_object_set_new(root, it->name, e)) {
            rc = td__err(err, TD_EINVAL, "%s: tensor '%s': the name is not valid UTF-8", fname, q);
            goto done;
        }
    }

    hdr = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!hdr) {
        rc = td__err(err, TD_ENOMEM, "%s: out of memory for the header", fname);
        goto done;
    }
    size_t hl = strlen(hdr);
    size_t pad = (8 - hl % 8) % 8;
    if (hl + pad > ST_MAX_HEADER) {
        rc = td__err(err, TD_ELIMIT, "%s: header of %zu bytes exceeds the limit of %u", fname,
                     hl + pad, ST_MAX_HEADER);
        goto done;
    }
    uint8_t lenbuf[8];
    static const char spaces[8] = "        ";
    td__put64(lenbuf, (uint64_t)(hl + pad));
    td__writer_write(w, lenbuf, sizeof lenbuf);
    td__writer_write(w, hdr, hl);
    td__writer_write(w, spaces, pad);
    for (size_t i = 0; i < n; i++) {
        const td__item *it = &items[slots[i].item];
        if (it->nbytes)
            td__writer_write(w, it->data, (size_t)it->nbytes);
    }
    rc = w->status;
    if (rc && err && w->err != err)
        td__err(err, rc, "%s: write failed", fname);
done:
    free(hdr);
    json_decref(root);
    free(begin);
    free(slots);
    return rc;
}

/*
 * gguf.c - GGUF reader (td__gguf_index) and writer (td__gguf_write); see gguf.h for the layout.
 *
 * The reader trusts nothing: every count is compared with the bytes left before it sizes
 * anything, every sum and product is checked, nesting is bounded, and the tensor data is never
 * touched (only its place in the file is validated). The defences follow llama.cpp's GGUF CVEs:
 * huge n_tensors/n_kv, string and array lengths past the file, element count x type size
 * overflow, offsets past the end, unbounded alignment, duplicate keys, unknown type ids.
 */
#include "gguf.h"
#include "common.h"
#include "dtype.h"
#include "meta_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Metadata and tensor bytes are copied or viewed as they are: the host must be little-endian,
 * like every machine this project targets. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "gguf.c assumes a little-endian host");

/* Smallest possible encodings, used to bound counts by the bytes left. */
enum {
    GGUF_MIN_KV = 8 + 4 + 1,         /* empty key, type, one-byte value */
    GGUF_MIN_TENSOR = 8 + 4 + 4 + 8, /* empty name, n_dims 0, type, offset */
    GGUF_MIN_STRING = 8,             /* length only */
    GGUF_MIN_NESTED = 4 + 8,         /* element type and count of an inner array */
    GGUF_HEADER = 4 + 4 + 8 + 8,     /* magic, version, n_tensors, n_kv */
};

/* ---------------------------------------------------------------------------------------------
 * Reader
 */

/* Metadata is read through windows of at least this many bytes (a descriptor reader copies
 * each; a mapped reader has the whole file as its one window). */
#define GGUF_WINDOW (1u << 20)

/* A cursor over the file. */
typedef struct gguf_rd {
    td__rd *src;
    const uint8_t *win; /* file bytes [wlo, whi), valid until the reader closes */
    size_t wlo, whi;
    size_t len;
    size_t pos;
    const char *fname;
    td_error *err;
    uint64_t meta_items; /* strings in arrays and nested arrays so far (GGUF_MAX_META_ITEMS) */
} gguf_rd;

static size_t gguf_left(const gguf_rd *r)
{
    return r->len - r->pos;
}

/* Fails with TD_ETRUNC unless n more bytes are there (`what` names the field); then makes them
 * readable at gguf_at(r). */
static int gguf_need(gguf_rd *r, uint64_t n, const char *what)
{
    if (n > gguf_left(r))
        return td__err(r->err, TD_ETRUNC,
                       "%s: %s at offset %zu needs %" PRIu64 " bytes, the file has %zu left",
                       r->fname, what, r->pos, n, gguf_left(r));
    if (r->win && r->pos >= r->wlo && n <= r->whi - r->pos)
        return 0;
    /* A mapped reader shows the rest of the file at once. */
    size_t w = r->src->base ? gguf_left(r) : n > GGUF_WINDOW ? (size_t)n : GGUF_WINDOW;
    if (w > gguf_left(r))
        w = gguf_left(r);
    int rc = td__rd_get(r->src, r->pos, w, &r->win, r->err);
    if (rc) {
        r->win = NULL;
        return rc;
    }
    r->wlo = r->pos;
    r->whi = r->pos + w;
    return 0;
}

/* The byte at the cursor, after gguf_need. */
static const uint8_t *gguf_at(const gguf_rd *r)
{
    return r->win + (r->pos - r->wlo);
}

static int gguf_u32(gguf_rd *r, uint32_t *v, const char *what)
{
    int rc = gguf_need(r, 4, what);
    if (rc)
        return rc;
    *v = td__le32(gguf_at(r));
    r->pos += 4;
    return 0;
}

static int gguf_u64(gguf_rd *r, uint64_t *v, const char *what)
{
    int rc = gguf_need(r, 8, what);
    if (rc)
        return rc;
    *v = td__le64(gguf_at(r));
    r->pos += 8;
    return 0;
}

/* Reads a string: *s points into the mapping (not NUL-terminated), *n is its length, at most
 * max bytes. */
static int gguf_str(gguf_rd *r, uint64_t max, const uint8_t **s, uint64_t *n, const char *what)
{
    uint64_t len;
    int rc = gguf_u64(r, &len, what);
    if (rc)
        return rc;
    if (len > gguf_left(r))
        return td__err(r->err, TD_ETRUNC,
                       "%s: %s at offset %zu: length %" PRIu64 " is past the end of the file "
                       "(%zu bytes left)",
                       r->fname, what, r->pos - 8, len, gguf_left(r));
    if (len > max)
        return td__err(r->err, TD_ELIMIT,
                       "%s: %s at offset %zu: length %" PRIu64 " exceeds the limit of %" PRIu64
                       " bytes",
                       r->fname, what, r->pos - 8, len, max);
    if ((rc = gguf_need(r, len, what)))
        return rc;
    *s = gguf_at(r);
    *n = len;
    r->pos += (size_t)len;
    return 0;
}

/* "key 'NAME'" for messages. */
static const char *gguf_keyname(const uint8_t *key, uint64_t klen, char *out, size_t cap)
{
    char q[80];
    snprintf(out, cap, "key '%s'", td__quote((const char *)key, (size_t)klen, q, sizeof q));
    return out;
}

static const char *gguf_type_str(uint32_t t)
{
    const char *s = t < TD_META_COUNT ? td_meta_type_name((td_meta_type)t) : NULL;
    return s ? s : "?";
}

/* Bounds an element count by the bytes left, at min_size bytes per element. */
static int gguf_check_count(gguf_rd *r, uint64_t n, uint64_t min_size, const char *what)
{
    uint64_t need;
    if (!td__mul_u64(n, min_size, &need) || need > gguf_left(r))
        return td__err(r->err, TD_ETRUNC,
                       "%s: %s: %" PRIu64 " elements of at least %" PRIu64
                       " bytes each do not fit in the %zu bytes left",
                       r->fname, what, n, min_size, gguf_left(r));
    return 0;
}

/* Checks that bool bytes are 0 or 1. */
static int gguf_check_bools(gguf_rd *r, const uint8_t *p, uint64_t n, const char *what)
{
    for (uint64_t i = 0; i < n; i++)
        if (p[i] > 1)
            return td__err(r->err, TD_EFORMAT, "%s: %s: bool value %u is neither 0 nor 1", r->fname,
                           what, p[i]);
    return 0;
}

static int gguf_read_value(gguf_rd *r, uint32_t type, unsigned depth, const char *what,
                           td_value **out);

/* Reads an array body (element type, count, elements) at nesting depth `depth` (1 for a
 * top-level array) into a new array value. */
static int gguf_read_array(gguf_rd *r, unsigned depth, const char *what, td_value **out)
{
    uint32_t et;
    uint64_t n;
    int rc;
    td_value *arr = NULL;

    if (depth > TD_META_MAX_DEPTH)
        return td__err(r->err, TD_ELIMIT, "%s: %s: arrays nested deeper than %d levels", r->fname,
                       what, TD_META_MAX_DEPTH);
    if ((rc = gguf_u32(r, &et, what)) || (rc = gguf_u64(r, &n, what)))
        return rc;
    if (et >= TD_META_COUNT)
        return td__err(r->err, TD_EFORMAT, "%s: %s: unknown array element type %u", r->fname, what,
                       et);

    if (td__type_is_scalar((td_meta_type)et)) {
        size_t sz = td__type_size((td_meta_type)et);
        if ((rc = gguf_check_count(r, n, sz, what)) || (rc = gguf_need(r, n * sz, what)))
            return rc;
        const uint8_t *p = gguf_at(r);
        if (et == TD_META_BOOL && (rc = gguf_check_bools(r, p, n, what)))
            return rc;
        arr = td__value_new_array_packed((td_meta_type)et, p, (size_t)n);
        if (!arr)
            return td__err(r->err, TD_ENOMEM, "%s: %s: out of memory for %" PRIu64 " items",
                           r->fname, what, n);
        r->pos += (size_t)(n * sz);
        *out = arr;
        return 0;
    }

    /* Strings and inner arrays: each element costs an allocation, so they are bounded overall
     * as well as by the bytes left. */
    if ((rc = gguf_check_count(r, n, et == TD_META_STRING ? GGUF_MIN_STRING : GGUF_MIN_NESTED,
                               what)))
        return rc;
    if (n > GGUF_MAX_META_ITEMS - r->meta_items)
        return td__err(r->err, TD_ELIMIT,
                       "%s: %s: %" PRIu64 " more array elements exceed the metadata limit of %u",
                       r->fname, what, n, GGUF_MAX_META_ITEMS);
    r->meta_items += n;

    arr = td_value_new_array((td_meta_type)et);
    if (!arr)
        return td__err(r->err, TD_ENOMEM, "%s: %s: out of memory", r->fname, what);
    if ((rc = td__value_array_reserve(arr, (size_t)n, r->err))) {
        td__err_prefix(r->err, rc, r->fname);
        goto fail;
    }
    for (uint64_t i = 0; i < n; i++) {
        if (et == TD_META_STRING) {
            const uint8_t *s;
            uint64_t slen;
            if ((rc = gguf_str(r, UINT64_MAX, &s, &slen, what)))
                goto fail;
            if ((rc = td__value_array_push_string(arr, (const char *)s, (size_t)slen, r->err))) {
                td__err_prefix(r->err, rc, r->fname);
                goto fail;
            }
        } else {
            td_value *item = NULL;
            if ((rc = gguf_read_array(r, depth + 1, what, &item)))
                goto fail;
            if ((rc = td_value_array_push(arr, item, r->err))) { /* takes item */
                td__err_prefix(r->err, rc, r->fname);
                goto fail;
            }
        }
    }
    *out = arr;
    return 0;

fail:
    td_value_free(arr);
    return rc;
}

/* Reads one value of the given type (a key's value) into a new td_value. */
static int gguf_read_value(gguf_rd *r, uint32_t type, unsigned depth, const char *what,
                           td_value **out)
{
    int rc;
    if (type >= TD_META_COUNT)
        return td__err(r->err, TD_EFORMAT, "%s: %s: unknown value type %u", r->fname, what, type);
    if (type == TD_META_ARRAY)
        return gguf_read_array(r, depth, what, out);
    if (type == TD_META_STRING) {
        const uint8_t *s;
        uint64_t n;
        if ((rc = gguf_str(r, UINT64_MAX, &s, &n, what)))
            return rc;
        *out = td_value_new_string((const char *)s, (size_t)n);
    } else {
        size_t sz = td__type_size((td_meta_type)type);
        union {
            uint64_t u;
            double d;
            uint8_t b[8];
        } tmp = {0}; /* aligned copy of the value */
        if ((rc = gguf_need(r, sz, what)))
            return rc;
        memcpy(tmp.b, gguf_at(r), sz);
        if (type == TD_META_BOOL && (rc = gguf_check_bools(r, tmp.b, 1, what)))
            return rc;
        r->pos += sz;
        *out = td_value_new_scalar((td_meta_type)type, tmp.b);
    }
    if (!*out)
        return td__err(r->err, TD_ENOMEM, "%s: %s: out of memory", r->fname, what);
    return 0;
}

/* Reads the n_kv key-value pairs into m. */
static int gguf_read_kvs(gguf_rd *r, uint64_t n_kv, td_meta *m)
{
    int rc;
    char what[128];
    if ((rc = td__meta_reserve(m, (size_t)n_kv, r->err)))
        return td__err_prefix(r->err, rc, r->fname);
    for (uint64_t i = 0; i < n_kv; i++) {
        const uint8_t *key;
        uint64_t klen;
        uint32_t type;
        td_value *v = NULL;
        snprintf(what, sizeof what, "key %" PRIu64, i);
        if ((rc = gguf_str(r, GGUF_MAX_NAME_READ, &key, &klen, what)))
            return rc;
        if (klen == 0)
            return td__err(r->err, TD_EFORMAT, "%s: key %" PRIu64 " is empty", r->fname, i);
        if (memchr(key, '\0', (size_t)klen))
            return td__err(r->err, TD_EFORMAT, "%s: key %" PRIu64 " contains a NUL byte", r->fname,
                           i);
        gguf_keyname(key, klen, what, sizeof what);
        if ((rc = gguf_u32(r, &type, what)))
            return rc;
        if ((rc = gguf_read_value(r, type, 1, what, &v)))
            return rc;
        if ((rc = td__meta_add_taking(m, (const char *)key, (size_t)klen, v, r->err))) {
            char pre[160];
            snprintf(pre, sizeof pre, "%s: %s", r->fname, what);
            return td__err_prefix(r->err, rc, pre);
        }
    }
    return 0;
}

/* The alignment the metadata asks for: GGUF_DEFAULT_ALIGNMENT when the key is absent, else its
 * u32 value, which must be a power of two up to GGUF_MAX_ALIGNMENT. */
static int gguf_alignment(const td_meta *m, const char *fname, uint32_t *align, td_error *err)
{
    const td_value *v = m ? td_meta_get(m, GGUF_KEY_ALIGNMENT) : NULL;
    uint64_t a;
    *align = GGUF_DEFAULT_ALIGNMENT;
    if (!v)
        return 0;
    if (td_value_type(v) != TD_META_UINT32)
        return td__err(err, TD_EFORMAT, "%s: key '" GGUF_KEY_ALIGNMENT "' must be a uint32, not %s",
                       fname, gguf_type_str(td_value_type(v)));
    if (td_value_get_uint(v, &a) != 0)
        return td__err(err, TD_EFORMAT, "%s: key '" GGUF_KEY_ALIGNMENT "' is unreadable", fname);
    if (a == 0 || (a & (a - 1)) != 0)
        return td__err(err, TD_EFORMAT,
                       "%s: key '" GGUF_KEY_ALIGNMENT "' = %" PRIu64 " is not a power of two",
                       fname, a);
    if (a > GGUF_MAX_ALIGNMENT)
        return td__err(err, TD_ELIMIT,
                       "%s: key '" GGUF_KEY_ALIGNMENT "' = %" PRIu64 " exceeds the limit of %u",
                       fname, a, GGUF_MAX_ALIGNMENT);
    *align = (uint32_t)a;
    return 0;
}

/* Reads one tensor info into a new entry of t; e->offset holds the relative offset for now. */
static int gguf_read_tensor(gguf_rd *r, uint64_t i, td__table *t)
{
    const uint8_t *name;
    uint64_t nlen, ne[GGUF_MAX_DIMS], rel;
    uint32_t n_dims, type;
    char what[128], q[80];
    int rc;
    td_dtype dtype;

    snprintf(what, sizeof what, "tensor %" PRIu64 " name", i);
    if ((rc = gguf_str(r, GGUF_MAX_NAME_READ, &name, &nlen, what)))
        return rc;
    if (nlen == 0)
        return td__err(r->err, TD_EFORMAT, "%s: tensor %" PRIu64 " has an empty name", r->fname, i);
    if (memchr(name, '\0', (size_t)nlen))
        return td__err(r->err, TD_EFORMAT, "%s: tensor %" PRIu64 " name contains a NUL byte",
                       r->fname, i);
    td__quote((const char *)name, (size_t)nlen, q, sizeof q);
    snprintf(what, sizeof what, "tensor '%s'", q);

    if ((rc = gguf_u32(r, &n_dims, what)))
        return rc;
    if (n_dims > GGUF_MAX_DIMS)
        return td__err(r->err, TD_EFORMAT, "%s: tensor '%s': n_dims %u exceeds %d", r->fname, q,
                       n_dims, GGUF_MAX_DIMS);
    for (uint32_t j = 0; j < n_dims; j++) {
        if ((rc = gguf_u64(r, &ne[j], what)))
            return rc;
        if (ne[j] > (uint64_t)INT64_MAX)
            return td__err(r->err, TD_EFORMAT, "%s: tensor '%s': ne[%u] = %" PRId64 " is negative",
                           r->fname, q, j, (int64_t)ne[j]);
    }
    if ((rc = gguf_u32(r, &type, what)) || (rc = gguf_u64(r, &rel, what)))
        return rc;
    if (td__dtype_from_ggml_id(type, &dtype) != 0)
        return td__err(r->err, TD_EDTYPE, "%s: tensor '%s': unknown GGML type id %u", r->fname, q,
                       type);
    const td__dtype_desc *d = td__dtype_info(dtype);

    /* Element count and bytes, checked: the count must fit in an int64 (ggml's own rule), and
     * so must the product of the non-zero sizes, so that an empty tensor cannot carry a shape
     * whose other dimensions overflow (the table refuses those everywhere). */
    uint64_t nelem = 1, nonzero = 1, nbytes;
    for (uint32_t j = 0; j < n_dims; j++) {
        if ((ne[j] && (!td__mul_u64(nonzero, ne[j], &nonzero) || nonzero > (uint64_t)INT64_MAX)))
            return td__err(r->err, TD_ERANGE,
                           "%s: tensor '%s': element count overflows at "
                           "ne[%u] = %" PRIu64,
                           r->fname, q, j, ne[j]);
        nelem *= ne[j];
    }
    if (n_dims > 0 && ne[0] % d->block_elems != 0)
        return td__err(r->err, TD_EFORMAT,
                       "%s: tensor '%s': ne[0] = %" PRIu64
                       " is not a multiple of %s's block of %u elements",
                       r->fname, q, ne[0], d->name, d->block_elems);
    if (n_dims == 0 && d->block_elems != 1)
        return td__err(r->err, TD_EFORMAT, "%s: tensor '%s': a %s scalar is not a whole block",
                       r->fname, q, d->name);
    if (!td__mul_u64(nelem / d->block_elems, d->block_bytes, &nbytes) ||
        nbytes > (uint64_t)INT64_MAX)
        return td__err(r->err, TD_ERANGE,
                       "%s: tensor '%s': byte size overflows (%" PRIu64 " elements of %s)",
                       r->fname, q, nelem, d->name);

    td__entry *e = td__table_add(t, (const char *)name, (size_t)nlen, r->err);
    if (!e)
        return td__err_prefix(r->err, r->err ? r->err->code : TD_ENOMEM, r->fname);
    int64_t shape[GGUF_MAX_DIMS];
    for (uint32_t j = 0; j < n_dims; j++)
        shape[j] = (int64_t)ne[n_dims - 1 - j];
    if ((rc = td__entry_set_shape(e, n_dims, shape, r->err)))
        return td__err_prefix(r->err, rc, r->fname);
    e->dtype = dtype;
    e->region = 0;
    e->offset = rel;
    e->nbytes = nbytes;
    e->layout = 0;
    return 0;
}

/* Orders entries by offset, then size (so that an empty tensor sorts before one starting at the
 * same place). */
static int gguf_cmp_offset(const void *a, const void *b)
{
    const td__entry *x = *(const td__entry *const *)a, *y = *(const td__entry *const *)b;
    if (x->offset != y->offset)
        return x->offset < y->offset ? -1 : 1;
    return (x->nbytes > y->nbytes) - (x->nbytes < y->nbytes);
}

/* Places every tensor in the file: aligned, inside, no two overlapping. Turns the relative
 * offsets into absolute ones. */
static int gguf_place_tensors(gguf_rd *r, td__table *t, uint32_t align)
{
    uint64_t data_off;
    char q[80];
    if (!td__add_u64(r->pos, align - 1, &data_off))
        return td__err(r->err, TD_ERANGE, "%s: data section offset overflows", r->fname);
    data_off &= ~(uint64_t)(align - 1);
    if (t->n == 0)
        return 0;
    if (data_off > r->len)
        return td__err(r->err, TD_ETRUNC,
                       "%s: the data section would start at %" PRIu64
                       ", past the end of the file (size %zu)",
                       r->fname, data_off, r->len);
    uint64_t data_len = r->len - data_off;
    for (size_t i = 0; i < t->n; i++) {
        td__entry *e = &t->entries[i];
        const char *name = td__quote(e->name, strlen(e->name), q, sizeof q);
        if (e->offset % align != 0)
            return td__err(r->err, TD_EFORMAT,
                           "%s: tensor '%s': offset %" PRIu64 " is not aligned to %u", r->fname,
                           name, e->offset, align);
        if (e->offset > data_len || e->nbytes > data_len - e->offset)
            return td__err(r->err, TD_ETRUNC,
                           "%s: tensor '%s': data at offset %" PRIu64 " + %" PRIu64
                           " bytes is past the end of the file (data section holds %" PRIu64
                           " bytes)",
                           r->fname, name, e->offset, e->nbytes, data_len);
    }
    if (t->n > 1) {
        td__entry **v = malloc(t->n * sizeof *v);
        if (!v)
            return td__err(r->err, TD_ENOMEM, "%s: out of memory sorting %zu tensors", r->fname,
                           t->n);
        for (size_t i = 0; i < t->n; i++)
            v[i] = &t->entries[i];
        qsort(v, t->n, sizeof *v, gguf_cmp_offset);
        int rc = 0;
        for (size_t i = 1; i < t->n && !rc; i++) {
            if (v[i - 1]->offset + v[i - 1]->nbytes > v[i]->offset) {
                char q2[80];
                rc = td__err(r->err, TD_EFORMAT,
                             "%s: tensor '%s' (offset %" PRIu64 ", %" PRIu64
                             " bytes) overlaps tensor '%s' (offset %" PRIu64 ")",
                             r->fname, td__quote(v[i]->name, strlen(v[i]->name), q, sizeof q),
                             v[i]->offset, v[i]->nbytes,
                             td__quote(v[i - 1]->name, strlen(v[i - 1]->name), q2, sizeof q2),
                             v[i - 1]->offset);
            }
        }
        free(v);
        if (rc)
            return rc;
    }
    for (size_t i = 0; i < t->n; i++)
        t->entries[i].offset += data_off;
    return 0;
}

int td__gguf_index(td__rd *src, td__table *t, td_error *err)
{
    gguf_rd r = {.src = src, .len = (size_t)src->len, .fname = src->fname, .err = err};
    uint32_t version, align;
    uint64_t n_tensors, n_kv, need_kv, need_t, need;
    int rc;

    td__table_init(t, TD_FORMAT_GGUF);
    if (r.len < GGUF_MAGIC_LEN)
        return td__err(err, TD_ETRUNC, "%s: %zu bytes is too short for a GGUF file", r.fname,
                       r.len);
    if ((rc = gguf_need(&r, GGUF_MAGIC_LEN, "magic")))
        return rc;
    if (memcmp(gguf_at(&r), GGUF_MAGIC, GGUF_MAGIC_LEN) != 0) {
        char q[80];
        return td__err(err, TD_EFORMAT, "%s: not a GGUF file (magic '%s', expected 'GGUF')",
                       r.fname, td__quote((const char *)gguf_at(&r), GGUF_MAGIC_LEN, q, sizeof q));
    }
    r.pos = GGUF_MAGIC_LEN;
    if ((rc = gguf_u32(&r, &version, "version")))
        return rc;
    if (version == 1)
        return td__err(err, TD_EVERSION,
                       "%s: GGUF version 1 is not supported (only versions 2 and 3)", r.fname);
    if (version != 2 && version != 3) {
        if (version != 0 && (version & 0xffffu) == 0 && (version >> 24) <= 3)
            return td__err(err, TD_ENOTSUP,
                           "%s: GGUF version 0x%08x looks byte-swapped: big-endian GGUF files "
                           "are not supported",
                           r.fname, version);
        return td__err(err, TD_EVERSION,
                       "%s: GGUF version %u is not supported (only versions 2 and 3)", r.fname,
                       version);
    }
    if ((rc = gguf_u64(&r, &n_tensors, "n_tensors")) || (rc = gguf_u64(&r, &n_kv, "n_kv")))
        return rc;
    if (!td__mul_u64(n_tensors, GGUF_MIN_TENSOR, &need_t) ||
        !td__mul_u64(n_kv, GGUF_MIN_KV, &need_kv) || !td__add_u64(need_t, need_kv, &need) ||
        need > gguf_left(&r))
        return td__err(err, TD_EFORMAT,
                       "%s: header claims %" PRIu64 " tensors and %" PRIu64
                       " key-value pairs, more than the %zu bytes after the header can hold",
                       r.fname, n_tensors, n_kv, gguf_left(&r));

    t->meta = td_meta_new();
    if (!t->meta) {
        rc = td__err(err, TD_ENOMEM, "%s: out of memory", r.fname);
        goto fail;
    }
    if ((rc = gguf_read_kvs(&r, n_kv, t->meta)))
        goto fail;
    if ((rc = gguf_alignment(t->meta, r.fname, &align, err)))
        goto fail;
    for (uint64_t i = 0; i < n_tensors; i++)
        if ((rc = gguf_read_tensor(&r, i, t)))
            goto fail;
    if ((rc = td__table_check_unique(t, r.fname, err)))
        goto fail;
    if ((rc = gguf_place_tensors(&r, t, align)))
        goto fail;
    return 0;

fail:
    td__table_destroy(t);
    td__table_init(t, TD_FORMAT_GGUF);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Writer
 */

static void gguf_w32(td__writer *w, uint32_t v)
{
    uint8_t b[4];
    td__put32(b, v);
    td__writer_write(w, b, 4);
}

static void gguf_w64(td__writer *w, uint64_t v)
{
    uint8_t b[8];
    td__put64(b, v);
    td__writer_write(w, b, 8);
}

static void gguf_wstr(td__writer *w, const char *s, size_t n)
{
    gguf_w64(w, n);
    td__writer_write(w, s, n);
}

/* Checks a value before anything is written: known types, readable scalars, bounded depth. */
static int gguf_check_value(const td_value *v, unsigned depth, const char *fname, const char *key,
                            td_error *err)
{
    char q[80];
    td_meta_type type = td_value_type(v);
    if ((unsigned)type >= TD_META_COUNT)
        return td__err(err, TD_EINVAL, "%s: key '%s': invalid value type %d", fname,
                       td__quote(key, strlen(key), q, sizeof q), (int)type);
    if (type != TD_META_ARRAY)
        return 0;
    if (depth > TD_META_MAX_DEPTH)
        return td__err(err, TD_ELIMIT, "%s: key '%s': arrays nested deeper than %d levels", fname,
                       td__quote(key, strlen(key), q, sizeof q), TD_META_MAX_DEPTH);
    td_meta_type et = td_value_array_type(v);
    if ((unsigned)et >= TD_META_COUNT)
        return td__err(err, TD_EINVAL, "%s: key '%s': invalid array element type %d", fname,
                       td__quote(key, strlen(key), q, sizeof q), (int)et);
    if (et == TD_META_ARRAY) {
        size_t n = td_value_array_len(v);
        for (size_t i = 0; i < n; i++) {
            int rc = gguf_check_value(td_value_array_at(v, i), depth + 1, fname, key, err);
            if (rc)
                return rc;
        }
    }
    return 0;
}

/* Writes one scalar's bytes, exactly as the value holds them. */
static void gguf_write_scalar(td__writer *w, const td_value *v)
{
    uint8_t b[8];
    td__scalar_store(b, v);
    td__writer_write(w, b, td__type_size(td_value_type(v)));
}

static void gguf_write_value(td__writer *w, const td_value *v);

/* Writes an array body: element type, count, elements. */
static void gguf_write_array(td__writer *w, const td_value *v)
{
    td_meta_type et = td_value_array_type(v);
    size_t n = td_value_array_len(v);
    gguf_w32(w, (uint32_t)et);
    gguf_w64(w, n);
    if (td__type_is_scalar(et)) {
        const uint8_t *p = td_value_array_data(v);
        if (et == TD_META_BOOL) {
            for (size_t i = 0; i < n; i++) {
                uint8_t b = p[i] != 0;
                td__writer_write(w, &b, 1);
            }
        } else if (n) {
            td__writer_write(w, p, n * td__type_size(et));
        }
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const td_value *item = td_value_array_at(v, i);
        if (et == TD_META_STRING) {
            size_t len = 0;
            const char *s = td_value_string(item, &len);
            gguf_wstr(w, s ? s : "", s ? len : 0);
        } else {
            gguf_write_array(w, item);
        }
    }
}

/* Writes a value without its type tag. */
static void gguf_write_value(td__writer *w, const td_value *v)
{
    td_meta_type type = td_value_type(v);
    if (type == TD_META_ARRAY) {
        gguf_write_array(w, v);
    } else if (type == TD_META_STRING) {
        size_t len = 0;
        const char *s = td_value_string(v, &len);
        gguf_wstr(w, s ? s : "", s ? len : 0);
    } else {
        gguf_write_scalar(w, v);
    }
}

static int gguf_cmp_name(const void *a, const void *b)
{
    const td__item *x = *(const td__item *const *)a, *y = *(const td__item *const *)b;
    return strcmp(x->name, y->name);
}

/* Checks one item for GGUF; *nbytes receives its size from the shape. */
static int gguf_check_item(const td__item *it, size_t i, const char *fname, td_error *err)
{
    char q[80];
    if (!it->name)
        return td__err(err, TD_EINVAL, "%s: array %zu has no name (GGUF tensors are named)", fname,
                       i);
    size_t nlen = strlen(it->name);
    const char *name = td__quote(it->name, nlen, q, sizeof q);
    if (nlen == 0)
        return td__err(err, TD_EINVAL, "%s: array %zu has an empty name", fname, i);
    if (nlen > GGUF_MAX_NAME)
        return td__err(err, TD_ELIMIT,
                       "%s: tensor '%s': name is %zu bytes, GGUF (llama.cpp) allows at most %u",
                       fname, name, nlen, GGUF_MAX_NAME);
    const td__dtype_desc *d = td__dtype_info(it->dtype);
    if (!d)
        return td__err(err, TD_EDTYPE, "%s: tensor '%s': invalid dtype %d", fname, name,
                       (int)it->dtype);
    if (d->ggml < 0)
        return td__err(err, TD_EDTYPE,
                       "%s: tensor '%s': dtype %s cannot be stored in GGUF (it has no unsigned, "
                       "bool, complex or float8 tensor types)",
                       fname, name, d->name);
    if (it->ndim < 0 || it->ndim > GGUF_MAX_DIMS)
        return td__err(err, TD_ELIMIT, "%s: tensor '%s': %d dimensions, GGUF allows at most %d",
                       fname, name, it->ndim, GGUF_MAX_DIMS);
    uint64_t nbytes;
    int rc = td__shape_nbytes(it->dtype, (uint32_t)it->ndim, it->shape, &nbytes, err);
    if (rc) {
        char pre[160];
        snprintf(pre, sizeof pre, "%s: tensor '%s'", fname, name);
        return td__err_prefix(err, rc, pre);
    }
    if (nbytes != it->nbytes)
        return td__err(err, TD_EINVAL,
                       "%s: tensor '%s': %" PRIu64 " bytes given, the shape needs %" PRIu64, fname,
                       name, it->nbytes, nbytes);
    if (nbytes && !it->data)
        return td__err(err, TD_EINVAL, "%s: tensor '%s': no data", fname, name);
    return 0;
}

int td__gguf_write(td__writer *w, const td__item *items, size_t n, const td_meta *meta,
                   const char *fname, td_error *err)
{
    const char *f = fname ? fname : "(gguf)";
    size_t n_kv = meta ? td_meta_size(meta) : 0;
    uint32_t align;
    int rc;

    /* Everything is checked before the first byte goes out. */
    for (size_t i = 0; i < n; i++)
        if ((rc = gguf_check_item(&items[i], i, f, err)))
            return rc;
    if (n > 1) {
        const td__item **v = malloc(n * sizeof *v);
        if (!v)
            return td__err(err, TD_ENOMEM, "%s: out of memory checking %zu names", f, n);
        for (size_t i = 0; i < n; i++)
            v[i] = &items[i];
        qsort(v, n, sizeof *v, gguf_cmp_name);
        rc = 0;
        for (size_t i = 1; i < n && !rc; i++) {
            if (strcmp(v[i]->name, v[i - 1]->name) == 0) {
                char q[80];
                rc = td__err(err, TD_EDUP, "%s: tensor '%s' appears twice", f,
                             td__quote(v[i]->name, strlen(v[i]->name), q, sizeof q));
            }
        }
        free(v);
        if (rc)
            return rc;
    }
    for (size_t i = 0; i < n_kv; i++) {
        const char *key = NULL;
        const td_value *v = td_meta_at(meta, i, &key);
        if (!key || !*key)
            return td__err(err, TD_EINVAL, "%s: metadata key %zu is empty", f, i);
        if ((rc = gguf_check_value(v, 1, f, key, err)))
            return rc;
    }
    if ((rc = gguf_alignment(meta, f, &align, err)))
        return rc;

    /* Offsets: the running total of the padded sizes, as llama.cpp expects. */
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t padded;
        if (!td__add_u64(items[i].nbytes, align - 1, &padded) ||
            !td__add_u64(total, padded & ~(uint64_t)(align - 1), &total))
            return td__err(err, TD_ERANGE, "%s: total tensor size overflows", f);
    }

    td__writer_write(w, GGUF_MAGIC, GGUF_MAGIC_LEN);
    gguf_w32(w, GGUF_VERSION);
    gguf_w64(w, n);
    gguf_w64(w, n_kv);
    for (size_t i = 0; i < n_kv; i++) {
        const char *key = NULL;
        const td_value *v = td_meta_at(meta, i, &key);
        gguf_wstr(w, key, strlen(key));
        gguf_w32(w, (uint32_t)td_value_type(v));
        gguf_write_value(w, v);
    }
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const td__item *it = &items[i];
        gguf_wstr(w, it->name, strlen(it->name));
        gguf_w32(w, (uint32_t)it->ndim);
        for (int j = it->ndim - 1; j >= 0; j--)
            gguf_w64(w, (uint64_t)it->shape[j]);
        gguf_w32(w, (uint32_t)td__dtype_ggml_id(it->dtype));
        gguf_w64(w, off);
        off += (it->nbytes + align - 1) & ~(uint64_t)(align - 1);
    }
    td__writer_pad(w, align, 0);
    for (size_t i = 0; i < n && !w->status; i++) {
        const uint8_t *p = items[i].data;
        uint64_t left = items[i].nbytes;
        while (left && !w->status) { /* size_t-sized pieces */
            size_t k = left > ((size_t)1 << 30) ? ((size_t)1 << 30) : (size_t)left;
            td__writer_write(w, p, k);
            p += k;
            left -= k;
        }
        td__writer_pad(w, align, 0);
    }
    if (w->status && w->err != err)
        td__err(err, w->status, "%s: write failed (%s)", f, td_strerror(w->status));
    return w->status;
}

/*
 * meta.c - typed metadata: td_meta (ordered key -> value with a hash index) and td_value
 * (GGUF's value types, nested arrays). See tensord.h for the public contract and
 * meta_internal.h for the representation and the helpers the decoders use.
 *
 * Design notes:
 * - Scalars are stored in the td_value itself, widened: unsigned types and bool in .u, signed
 *   types in .i, float32 in .f32, float64 in .f64; the payload is zeroed first, so that two equal
 *   values have equal bits.
 * - A string is a record {size_t len; bytes; NUL}: one malloc for a lone string, one shared blob
 *   for all strings of a string array (tokenizers hold 150k of them).
 * - An array keeps an item td_value for each element, so td_value_array_at works for every
 *   element type without lazily building anything; numeric arrays also keep the packed C array
 *   that td_value_array_data returns. The two are written together by every push.
 * - A value that lives inside a meta entry or an array item slot has owned == 0: it is freed
 *   with its container, and td_value_free on it does nothing.
 */
#include "common.h"
#include "meta_internal.h"

#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

typedef struct td__str {
    size_t len;
    char bytes[]; /* len bytes, then a NUL */
} td__str;

typedef struct td__arr td__arr;

struct td_value {
    uint8_t type;  /* td_type */
    uint8_t owned; /* 1: allocated alone by a td_value_new_* builder */
    union {
        uint64_t u; /* UINT8..UINT64, BOOL (0/1) */
        int64_t i;  /* INT8..INT64 */
        float f32;
        double f64;
        td__str *s;
        td__arr *a;
    } v;
};

struct td__arr {
    uint8_t elem;    /* td_type of every item */
    uint8_t depth;   /* see td__value_depth */
    size_t len, cap; /* items in use, item slots allocated */
    td_value *items; /* cap slots, owned == 0 */
    void *data;      /* numeric: cap packed C values; strings: the record blob */
    size_t blob_len, blob_cap;
};

typedef struct td__kv {
    char *key; /* owned, NUL-terminated */
    size_t keylen;
    uint64_t hash;
    td_value val; /* owned == 0 */
} td__kv;

struct td_meta {
    size_t n, cap;
    td__kv *kv;
    uint32_t *slots; /* entry index + 1, 0 = empty; nslots is 0 or a power of two */
    size_t nslots;
    uint64_t seed;
};

/* Entries are indexed by uint32 slots. */
#define TD__META_MAX_ENTRIES ((size_t)UINT32_MAX - 1)

static const uint64_t td__empty_packed[1];

/* ---------------------------------------------------------------------------------------------
 * Types
 */

const char *td_type_name(td_type t)
{
    static const char *const names[TD_TYPE_COUNT] = {
        [TD_TYPE_UINT8] = "uint8",     [TD_TYPE_INT8] = "int8",     [TD_TYPE_UINT16] = "uint16",
        [TD_TYPE_INT16] = "int16",     [TD_TYPE_UINT32] = "uint32", [TD_TYPE_INT32] = "int32",
        [TD_TYPE_FLOAT32] = "float32", [TD_TYPE_BOOL] = "bool",     [TD_TYPE_STRING] = "string",
        [TD_TYPE_ARRAY] = "array",     [TD_TYPE_UINT64] = "uint64", [TD_TYPE_INT64] = "int64",
        [TD_TYPE_FLOAT64] = "float64",
    };
    if ((unsigned)t >= TD_TYPE_COUNT)
        return NULL;
    return names[t];
}

/* Name for messages: never NULL. */
static const char *td__tname(unsigned t)
{
    const char *s = td_type_name((td_type)t);
    return s ? s : "(invalid type)";
}

size_t td__type_size(td_type t)
{
    switch (t) {
    case TD_TYPE_UINT8:
    case TD_TYPE_INT8:
    case TD_TYPE_BOOL:
        return 1;
    case TD_TYPE_UINT16:
    case TD_TYPE_INT16:
        return 2;
    case TD_TYPE_UINT32:
    case TD_TYPE_INT32:
    case TD_TYPE_FLOAT32:
        return 4;
    case TD_TYPE_UINT64:
    case TD_TYPE_INT64:
    case TD_TYPE_FLOAT64:
        return 8;
    default:
        return 0;
    }
}

int td__type_is_scalar(td_type t)
{
    return td__type_size(t) != 0;
}

static int td__is_signed(unsigned t)
{
    return t == TD_TYPE_INT8 || t == TD_TYPE_INT16 || t == TD_TYPE_INT32 || t == TD_TYPE_INT64;
}

/* Reads a scalar of type t from its C type at p into v's payload (v->type set too). */
static void td__scalar_load(td_value *v, td_type t, const void *p)
{
    v->type = (uint8_t)t;
    v->v.u = 0;
    switch (t) {
    case TD_TYPE_UINT8: {
        uint8_t x;
        memcpy(&x, p, 1);
        v->v.u = x;
        break;
    }
    case TD_TYPE_BOOL: {
        uint8_t x;
        memcpy(&x, p, 1);
        v->v.u = x != 0;
        break;
    }
    case TD_TYPE_INT8: {
        int8_t x;
        memcpy(&x, p, 1);
        v->v.i = x;
        break;
    }
    case TD_TYPE_UINT16: {
        uint16_t x;
        memcpy(&x, p, 2);
        v->v.u = x;
        break;
    }
    case TD_TYPE_INT16: {
        int16_t x;
        memcpy(&x, p, 2);
        v->v.i = x;
        break;
    }
    case TD_TYPE_UINT32: {
        uint32_t x;
        memcpy(&x, p, 4);
        v->v.u = x;
        break;
    }
    case TD_TYPE_INT32: {
        int32_t x;
        memcpy(&x, p, 4);
        v->v.i = x;
        break;
    }
    case TD_TYPE_FLOAT32:
        memcpy(&v->v.f32, p, 4);
        break;
    case TD_TYPE_UINT64:
        memcpy(&v->v.u, p, 8);
        break;
    case TD_TYPE_INT64:
        memcpy(&v->v.i, p, 8);
        break;
    case TD_TYPE_FLOAT64:
        memcpy(&v->v.f64, p, 8);
        break;
    default:
        break;
    }
}

void td__scalar_store(void *p, const td_value *v)
{
    switch (v->type) {
    case TD_TYPE_UINT8:
    case TD_TYPE_BOOL: {
        uint8_t x = (uint8_t)v->v.u;
        memcpy(p, &x, 1);
        break;
    }
    case TD_TYPE_INT8: {
        int8_t x = (int8_t)v->v.i;
        memcpy(p, &x, 1);
        break;
    }
    case TD_TYPE_UINT16: {
        uint16_t x = (uint16_t)v->v.u;
        memcpy(p, &x, 2);
        break;
    }
    case TD_TYPE_INT16: {
        int16_t x = (int16_t)v->v.i;
        memcpy(p, &x, 2);
        break;
    }
    case TD_TYPE_UINT32: {
        uint32_t x = (uint32_t)v->v.u;
        memcpy(p, &x, 4);
        break;
    }
    case TD_TYPE_INT32: {
        int32_t x = (int32_t)v->v.i;
        memcpy(p, &x, 4);
        break;
    }
    case TD_TYPE_FLOAT32:
        memcpy(p, &v->v.f32, 4);
        break;
    case TD_TYPE_UINT64:
        memcpy(p, &v->v.u, 8);
        break;
    case TD_TYPE_INT64:
        memcpy(p, &v->v.i, 8);
        break;
    case TD_TYPE_FLOAT64:
        memcpy(p, &v->v.f64, 8);
        break;
    default:
        break;
    }
}

/* ---------------------------------------------------------------------------------------------
 * Strings
 */

/* Bytes a record of len string bytes takes in a blob (aligned so the next record's size_t is
 * aligned), or 0 on overflow. */
static size_t td__rec_size(size_t len)
{
    const size_t a = alignof(td__str);
    size_t n = offsetof(td__str, bytes);
    if (len > SIZE_MAX - n - 1 - (a - 1))
        return 0;
    n += len + 1;
    return (n + a - 1) / a * a;
}

/* Fills the record at r with s[0..len) and a NUL. */
static void td__rec_fill(td__str *r, const char *s, size_t len)
{
    r->len = len;
    if (len)
        memcpy(r->bytes, s, len);
    r->bytes[len] = '\0';
}

/* A lone record (malloc), or NULL when out of memory or too long. */
static td__str *td__str_new(const char *s, size_t len)
{
    size_t n = td__rec_size(len);
    if (!n)
        return NULL;
    td__str *r = malloc(n);
    if (r)
        td__rec_fill(r, s, len);
    return r;
}

/* ---------------------------------------------------------------------------------------------
 * Array bodies
 */

static void td__arr_free(td__arr *a);

/* Frees what v's payload owns (not v itself). */
static void td__value_clear(td_value *v)
{
    if (v->type == TD_TYPE_STRING)
        free(v->v.s);
    else if (v->type == TD_TYPE_ARRAY)
        td__arr_free(v->v.a);
    v->v.u = 0;
}

static void td__arr_free(td__arr *a)
{
    if (!a)
        return;
    if (a->elem == TD_TYPE_ARRAY) {
        for (size_t i = 0; i < a->len; i++)
            td__arr_free(a->items[i].v.a);
    }
    /* string items point into the blob (a->data): nothing to free one by one */
    free(a->items);
    free(a->data);
    free(a);
}

static td__arr *td__arr_new(td_type elem)
{
    td__arr *a = calloc(1, sizeof *a);
    if (a) {
        a->elem = (uint8_t)elem;
        a->depth = elem == TD_TYPE_ARRAY ? 2 : 1;
    }
    return a;
}

/* Points the string items at their records after the blob moved. Records are laid out in item
 * order, so each one's position follows from the lengths before it. */
static void td__arr_rebase(td__arr *a)
{
    char *blob = a->data;
    size_t off = 0;
    if (!blob)
        return; /* no strings yet */
    for (size_t i = 0; i < a->len; i++) {
        td__str *r = (td__str *)(void *)(blob + off);
        a->items[i].v.s = r;
        off += td__rec_size(r->len);
    }
}

/* Ensures room for `need` items in total (and their packed values). */
static int td__arr_grow_items(td__arr *a, size_t need)
{
    if (need <= a->cap)
        return 0;
    /* doubling for pushes one by one; exactly `need` for a reservation or a bulk copy */
    size_t cap = a->cap < 4 ? 4 : a->cap > SIZE_MAX / 2 ? SIZE_MAX : a->cap * 2;
    if (cap < need)
        cap = need;
    size_t esz = td__type_size((td_type)a->elem);
    if (cap > SIZE_MAX / sizeof(td_value) || (esz && cap > SIZE_MAX / esz))
        return TD_ENOMEM;
    td_value *items = realloc(a->items, cap * sizeof *items);
    if (!items)
        return TD_ENOMEM;
    a->items = items;
    if (esz) {
        void *data = realloc(a->data, cap * esz);
        if (!data)
            return TD_ENOMEM; /* items grew, cap did not: still consistent */
        a->data = data;
    }
    a->cap = cap;
    return 0;
}

/* Ensures `extra` more blob bytes for string records. */
static int td__arr_grow_blob(td__arr *a, size_t extra)
{
    if (extra > SIZE_MAX - a->blob_len)
        return TD_ENOMEM;
    size_t need = a->blob_len + extra;
    if (need <= a->blob_cap)
        return 0;
    size_t cap = a->blob_cap < 256 ? 256 : a->blob_cap > SIZE_MAX / 2 ? SIZE_MAX : a->blob_cap * 2;
    if (cap < need)
        cap = need;
    char *blob = realloc(a->data, cap);
    if (!blob)
        return TD_ENOMEM;
    a->data = blob;
    a->blob_cap = cap;
    td__arr_rebase(a); /* the blob may have moved; amortized O(1) per string with doubling */
    return 0;
}

/* Appends a copy of s[0..len) to a string array body. */
static int td__arr_push_string(td__arr *a, const char *s, size_t len)
{
    size_t rs = td__rec_size(len);
    if (!rs || a->len == SIZE_MAX)
        return TD_ENOMEM;
    int rc = td__arr_grow_items(a, a->len + 1);
    if (!rc)
        rc = td__arr_grow_blob(a, rs);
    if (rc)
        return rc;
    td__str *r = (td__str *)(void *)((char *)a->data + a->blob_len);
    td__rec_fill(r, s, len);
    a->blob_len += rs;
    td_value *it = &a->items[a->len++];
    it->type = TD_TYPE_STRING;
    it->owned = 0;
    it->v.s = r;
    return 0;
}

/* Appends the scalar (v->type == a->elem) to a numeric array body. */
static int td__arr_push_scalar(td__arr *a, const td_value *v)
{
    if (a->len == SIZE_MAX)
        return TD_ENOMEM;
    int rc = td__arr_grow_items(a, a->len + 1);
    if (rc)
        return rc;
    size_t esz = td__type_size((td_type)a->elem);
    td__scalar_store((char *)a->data + a->len * esz, v);
    a->items[a->len] = *v;
    a->items[a->len].owned = 0;
    a->len++;
    return 0;
}

/* A deep copy of an array body, or NULL when out of memory. */
static td__arr *td__arr_copy(const td__arr *src)
{
    td__arr *a = td__arr_new((td_type)src->elem);
    if (!a)
        return NULL;
    a->depth = src->depth;
    if (src->len == 0)
        return a;
    if (td__arr_grow_items(a, src->len))
        goto fail;
    if (src->elem == TD_TYPE_STRING) {
        /* one blob of the same size; the records are copied one by one */
        if (td__arr_grow_blob(a, src->blob_len))
            goto fail;
        for (size_t i = 0; i < src->len; i++) {
            const td__str *r = src->items[i].v.s;
            if (td__arr_push_string(a, r->bytes, r->len))
                goto fail; /* cannot happen: room reserved */
        }
    } else if (src->elem == TD_TYPE_ARRAY) {
        for (size_t i = 0; i < src->len; i++) {
            a->items[i] = src->items[i];
            a->items[i].v.a = td__arr_copy(src->items[i].v.a);
            if (!a->items[i].v.a)
                goto fail; /* a->len == i: exactly the copies made so far are freed */
            a->len = i + 1;
        }
    } else {
        size_t esz = td__type_size((td_type)src->elem);
        if (!a->data || !src->data)
            goto fail; /* cannot happen: both hold len > 0 packed items */
        memcpy(a->items, src->items, src->len * sizeof *a->items);
        memcpy(a->data, src->data, src->len * esz);
        a->len = src->len;
    }
    return a;
fail:
    td__arr_free(a);
    return NULL;
}

/* Deep-copies src's payload into *dst (type too; dst->owned is left as it is). */
static int td__value_copy_into(td_value *dst, const td_value *src)
{
    dst->type = src->type;
    if (src->type == TD_TYPE_STRING) {
        dst->v.s = td__str_new(src->v.s->bytes, src->v.s->len);
        return dst->v.s ? 0 : TD_ENOMEM;
    }
    if (src->type == TD_TYPE_ARRAY) {
        dst->v.a = td__arr_copy(src->v.a);
        return dst->v.a ? 0 : TD_ENOMEM;
    }
    dst->v = src->v;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Values: builders
 */

static td_value *td__value_alloc(td_type t)
{
    td_value *v = calloc(1, sizeof *v);
    if (v) {
        v->type = (uint8_t)t;
        v->owned = 1;
    }
    return v;
}

/* Returns NULL when out of memory, and also for a type that is not a scalar type. */
td_value *td_value_new_scalar(td_type type, const void *value)
{
    if (!td__type_is_scalar(type) || !value)
        return NULL;
    td_value *v = td__value_alloc(type);
    if (v)
        td__scalar_load(v, type, value);
    return v;
}

/* s may be NULL when len is 0. The bytes are copied; the copy is NUL-terminated. */
td_value *td_value_new_string(const char *s, size_t len)
{
    if (!s && len)
        return NULL;
    td_value *v = td__value_alloc(TD_TYPE_STRING);
    if (!v)
        return NULL;
    v->v.s = td__str_new(s, len);
    if (!v->v.s) {
        free(v);
        return NULL;
    }
    return v;
}

/* Returns NULL when out of memory, and also for elem_type outside the enum. */
td_value *td_value_new_array(td_type elem_type)
{
    if ((unsigned)elem_type >= TD_TYPE_COUNT)
        return NULL;
    td_value *v = td__value_alloc(TD_TYPE_ARRAY);
    if (!v)
        return NULL;
    v->v.a = td__arr_new(elem_type);
    if (!v->v.a) {
        free(v);
        return NULL;
    }
    return v;
}

td_value *td__value_new_array_packed(td_type elem_type, const void *items, size_t n)
{
    if (!td__type_is_scalar(elem_type) || (!items && n))
        return NULL;
    td_value *v = td_value_new_array(elem_type);
    if (!v)
        return NULL;
    td__arr *a = v->v.a;
    if (n) {
        size_t esz = td__type_size(elem_type);
        if (td__arr_grow_items(a, n)) {
            td_value_free(v);
            return NULL;
        }
        memcpy(a->data, items, n * esz);
        const char *p = a->data;
        for (size_t i = 0; i < n; i++) {
            td__scalar_load(&a->items[i], elem_type, p + i * esz);
            a->items[i].owned = 0;
        }
        if (elem_type == TD_TYPE_BOOL) {
            uint8_t *b = a->data;
            for (size_t i = 0; i < n; i++)
                b[i] = b[i] != 0;
        }
        a->len = n;
    }
    return v;
}

/* Frees v and everything it holds. No operation when v is NULL or when v is part of a meta or
 * an array (those are freed with their container). */
void td_value_free(td_value *v)
{
    if (!v || !v->owned)
        return;
    td__value_clear(v);
    free(v);
}

int td__value_array_reserve(td_value *arr, size_t n, td_error *err)
{
    if (!arr || arr->type != TD_TYPE_ARRAY)
        return td__err(err, TD_EINVAL, "metadata: reserve on a value that is not an array");
    td__arr *a = arr->v.a;
    if (n > SIZE_MAX - a->len || td__arr_grow_items(a, a->len + n))
        return td__err(err, TD_ENOMEM, "metadata: out of memory for an array of %zu items", n);
    return 0;
}

int td__value_array_push_scalar(td_value *arr, const void *p, td_error *err)
{
    if (!arr || arr->type != TD_TYPE_ARRAY || !p)
        return td__err(err, TD_EINVAL, "metadata: push on a value that is not an array");
    td__arr *a = arr->v.a;
    if (!td__type_is_scalar((td_type)a->elem))
        return td__err(err, TD_EDTYPE, "metadata: cannot push a scalar to an array of %s",
                       td__tname(a->elem));
    td_value tmp;
    td__scalar_load(&tmp, (td_type)a->elem, p);
    if (td__arr_push_scalar(a, &tmp))
        return td__err(err, TD_ENOMEM, "metadata: out of memory at array item %zu", a->len);
    return 0;
}

int td__value_array_push_string(td_value *arr, const char *s, size_t len, td_error *err)
{
    if (!arr || arr->type != TD_TYPE_ARRAY || (!s && len))
        return td__err(err, TD_EINVAL, "metadata: push on a value that is not an array");
    td__arr *a = arr->v.a;
    if (a->elem != TD_TYPE_STRING)
        return td__err(err, TD_EDTYPE, "metadata: cannot push a string to an array of %s",
                       td__tname(a->elem));
    if (td__arr_push_string(a, s, len))
        return td__err(err, TD_ENOMEM, "metadata: out of memory at array item %zu (%zu bytes)",
                       a->len, len);
    return 0;
}

unsigned td__value_depth(const td_value *v)
{
    return v && v->type == TD_TYPE_ARRAY ? v->v.a->depth : 0;
}

/* Scalars and strings are copied (the caller keeps item); an array item is taken: on success it
 * becomes part of arr, on failure it is freed. */
int td_value_array_push(td_value *arr, td_value *item, td_error *err)
{
    int rc;
    int take = item && item->type == TD_TYPE_ARRAY && item->owned;
    if (!arr || arr->type != TD_TYPE_ARRAY || !item) {
        rc =
            td__err(err, TD_EINVAL, "metadata: array push: %s", !item ? "no item" : "not an array");
        goto out;
    }
    td__arr *a = arr->v.a;
    if (item->type != a->elem) {
        rc = td__err(err, TD_EDTYPE, "metadata: cannot push a %s to an array of %s",
                     td__tname(item->type), td__tname(a->elem));
        goto out;
    }
    if (item->type == TD_TYPE_STRING) {
        rc = td__arr_push_string(a, item->v.s->bytes, item->v.s->len);
    } else if (item->type == TD_TYPE_ARRAY) {
        if (!item->owned) {
            return td__err(err, TD_EINVAL,
                           "metadata: cannot push an array that belongs to another container");
        }
        unsigned d = 1 + item->v.a->depth;
        if (d > TD_META_MAX_DEPTH) {
            rc = td__err(err, TD_ELIMIT, "metadata: arrays nested %u deep, at most %d allowed", d,
                         TD_META_MAX_DEPTH);
            goto out;
        }
        rc = a->len == SIZE_MAX ? TD_ENOMEM : td__arr_grow_items(a, a->len + 1);
        if (!rc) {
            td_value *slot = &a->items[a->len++];
            slot->type = TD_TYPE_ARRAY;
            slot->owned = 0;
            slot->v.a = item->v.a;
            if (d > a->depth)
                a->depth = (uint8_t)d;
            free(item); /* the body now lives in slot */
            return 0;
        }
    } else {
        rc = td__arr_push_scalar(a, item);
    }
    if (rc)
        rc = td__err(err, TD_ENOMEM, "metadata: out of memory at array item %zu", a->len);
    else
        return 0;
out:
    if (take)
        td_value_free(item);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Values: accessors (none of them writes anything)
 */

/* TD_TYPE_COUNT for NULL. */
td_type td_value_type(const td_value *v)
{
    return v ? (td_type)v->type : TD_TYPE_COUNT;
}

/* Floats convert when they hold an integer exactly and it fits; otherwise TD_ERANGE. */
int td_value_get_int(const td_value *v, int64_t *out)
{
    if (!v || !out)
        return TD_EINVAL;
    switch (v->type) {
    case TD_TYPE_UINT8:
    case TD_TYPE_UINT16:
    case TD_TYPE_UINT32:
    case TD_TYPE_UINT64:
    case TD_TYPE_BOOL:
        if (v->v.u > (uint64_t)INT64_MAX)
            return TD_ERANGE;
        *out = (int64_t)v->v.u;
        return 0;
    case TD_TYPE_INT8:
    case TD_TYPE_INT16:
    case TD_TYPE_INT32:
    case TD_TYPE_INT64:
        *out = v->v.i;
        return 0;
    case TD_TYPE_FLOAT32:
    case TD_TYPE_FLOAT64: {
        double d = v->type == TD_TYPE_FLOAT32 ? (double)v->v.f32 : v->v.f64;
        /* -2^63 is exact; 2^63 is the first double out of range */
        if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0) || (double)(int64_t)d != d)
            return TD_ERANGE;
        *out = (int64_t)d;
        return 0;
    }
    default:
        return TD_EINVAL;
    }
}

int td_value_get_uint(const td_value *v, uint64_t *out)
{
    if (!v || !out)
        return TD_EINVAL;
    switch (v->type) {
    case TD_TYPE_UINT8:
    case TD_TYPE_UINT16:
    case TD_TYPE_UINT32:
    case TD_TYPE_UINT64:
    case TD_TYPE_BOOL:
        *out = v->v.u;
        return 0;
    case TD_TYPE_INT8:
    case TD_TYPE_INT16:
    case TD_TYPE_INT32:
    case TD_TYPE_INT64:
        if (v->v.i < 0)
            return TD_ERANGE;
        *out = (uint64_t)v->v.i;
        return 0;
    case TD_TYPE_FLOAT32:
    case TD_TYPE_FLOAT64: {
        double d = v->type == TD_TYPE_FLOAT32 ? (double)v->v.f32 : v->v.f64;
        if (!(d >= 0.0 && d < 18446744073709551616.0) || (double)(uint64_t)d != d)
            return TD_ERANGE;
        *out = (uint64_t)d;
        return 0;
    }
    default:
        return TD_EINVAL;
    }
}

int td_value_get_float(const td_value *v, double *out)
{
    if (!v || !out)
        return TD_EINVAL;
    if (!td__type_is_scalar((td_type)v->type))
        return TD_EINVAL;
    if (v->type == TD_TYPE_FLOAT32)
        *out = (double)v->v.f32;
    else if (v->type == TD_TYPE_FLOAT64)
        *out = v->v.f64;
    else if (td__is_signed(v->type))
        *out = (double)v->v.i;
    else
        *out = (double)v->v.u;
    return 0;
}

const char *td_value_string(const td_value *v, size_t *len)
{
    if (!v || v->type != TD_TYPE_STRING) {
        if (len)
            *len = 0;
        return NULL;
    }
    if (len)
        *len = v->v.s->len;
    return v->v.s->bytes;
}

/* TD_TYPE_COUNT when v is not an array. */
td_type td_value_array_type(const td_value *v)
{
    return v && v->type == TD_TYPE_ARRAY ? (td_type)v->v.a->elem : TD_TYPE_COUNT;
}

/* 0 when v is not an array. */
size_t td_value_array_len(const td_value *v)
{
    return v && v->type == TD_TYPE_ARRAY ? v->v.a->len : 0;
}

/* For numeric arrays never NULL, also when empty. */
const void *td_value_array_data(const td_value *v)
{
    if (!v || v->type != TD_TYPE_ARRAY || !td__type_is_scalar((td_type)v->v.a->elem))
        return NULL;
    return v->v.a->data ? v->v.a->data : (const void *)td__empty_packed;
}

/* Item values are stored, not built here: the pointer stays valid until the array changes. */
const td_value *td_value_array_at(const td_value *v, size_t i)
{
    if (!v || v->type != TD_TYPE_ARRAY || i >= v->v.a->len)
        return NULL;
    return &v->v.a->items[i];
}

int td__value_equal(const td_value *a, const td_value *b)
{
    if (!a || !b)
        return a == b;
    if (a->type != b->type)
        return 0;
    if (a->type == TD_TYPE_STRING)
        return a->v.s->len == b->v.s->len && memcmp(a->v.s->bytes, b->v.s->bytes, a->v.s->len) == 0;
    if (a->type != TD_TYPE_ARRAY)
        return a->v.u == b->v.u; /* payloads are zero-extended, so bits compare */
    const td__arr *x = a->v.a, *y = b->v.a;
    if (x->elem != y->elem || x->len != y->len)
        return 0;
    size_t esz = td__type_size((td_type)x->elem);
    if (esz)
        return x->len == 0 || memcmp(x->data, y->data, x->len * esz) == 0;
    for (size_t i = 0; i < x->len; i++) {
        if (!td__value_equal(&x->items[i], &y->items[i]))
            return 0;
    }
    return 1;
}

/* ---------------------------------------------------------------------------------------------
 * Meta: hash index
 */

static inline uint64_t td__rotl(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

static uint64_t td__fmix(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return k;
}

/* A seeded 64-bit hash in the manner of MurmurHash3's 64-bit mixing. The seed differs per meta
 * (it comes from the object's address), so colliding keys cannot be precomputed cheaply. */
static uint64_t td__hash(const char *s, size_t n, uint64_t seed)
{
    const uint64_t c1 = 0x87c37b91114253d5ULL, c2 = 0x4cf5ad432745937fULL;
    uint64_t h = seed ^ ((uint64_t)n * 0x9e3779b97f4a7c15ULL);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t k;
        memcpy(&k, s + i, 8);
        k *= c1;
        k = td__rotl(k, 31);
        k *= c2;
        h ^= k;
        h = td__rotl(h, 27) * 5 + 0x52dce729;
    }
    uint64_t k = 0;
    for (size_t j = 0; i + j < n; j++)
        k |= (uint64_t)(unsigned char)s[i + j] << (8 * j);
    k *= c1;
    k = td__rotl(k, 31);
    k *= c2;
    h ^= k;
    return td__fmix(h);
}

/* The entry index of key, or SIZE_MAX. */
static size_t td__meta_find(const td_meta *m, const char *key, size_t keylen, uint64_t h)
{
    if (!m->nslots)
        return SIZE_MAX;
    size_t mask = m->nslots - 1;
    for (size_t s = (size_t)h & mask;; s = (s + 1) & mask) {
        uint32_t e = m->slots[s];
        if (!e)
            return SIZE_MAX;
        const td__kv *kv = &m->kv[e - 1];
        if (kv->hash == h && kv->keylen == keylen && memcmp(kv->key, key, keylen) == 0)
            return e - 1;
    }
}

static void td__meta_slot_insert(uint32_t *slots, size_t nslots, uint64_t h, size_t idx)
{
    size_t mask = nslots - 1;
    size_t s = (size_t)h & mask;
    while (slots[s])
        s = (s + 1) & mask;
    slots[s] = (uint32_t)(idx + 1);
}

/* Makes room for `need` entries in total: entry array and an index at most half full. */
static int td__meta_grow(td_meta *m, size_t need)
{
    if (need > TD__META_MAX_ENTRIES)
        return TD_ELIMIT;
    if (need > m->cap) {
        size_t cap = m->cap < 8 ? 8 : m->cap;
        while (cap < need)
            cap = cap > SIZE_MAX / 2 ? need : cap * 2;
        if (cap > SIZE_MAX / sizeof(td__kv))
            return TD_ENOMEM;
        td__kv *kv = realloc(m->kv, cap * sizeof *kv);
        if (!kv)
            return TD_ENOMEM;
        m->kv = kv;
        m->cap = cap;
    }
    if (need > m->nslots / 2) {
        size_t ns = m->nslots < 16 ? 16 : m->nslots;
        while (need > ns / 2) {
            if (ns > SIZE_MAX / 2 / sizeof(uint32_t))
                return TD_ENOMEM;
            ns *= 2;
        }
        uint32_t *slots = calloc(ns, sizeof *slots);
        if (!slots)
            return TD_ENOMEM;
        for (size_t i = 0; i < m->n; i++)
            td__meta_slot_insert(slots, ns, m->kv[i].hash, i);
        free(m->slots);
        m->slots = slots;
        m->nslots = ns;
    }
    return 0;
}

/* Checks a public key argument: non-NULL and non-empty. */
static int td__check_key(const char *key, td_error *err)
{
    if (key && *key)
        return 0;
    td__err(err, TD_EINVAL, "metadata: keys must be non-empty strings");
    return TD_EINVAL;
}

/* Stores content (a payload moved in; owned flag ignored) under key. Content is taken: on
 * failure it is cleared. With replace, an existing key gets the new value in place; without,
 * it is TD_EDUP. */
static int td__meta_put(td_meta *m, const char *key, size_t keylen, td_value content, int replace,
                        td_error *err)
{
    char q[80];
    int rc;
    content.owned = 0;
    uint64_t h = td__hash(key, keylen, m->seed);
    size_t i = td__meta_find(m, key, keylen, h);
    if (i != SIZE_MAX) {
        if (!replace) {
            rc = td__err(err, TD_EDUP, "metadata: key '%s' appears twice",
                         td__quote(key, keylen, q, sizeof q));
            goto fail;
        }
        td__value_clear(&m->kv[i].val);
        m->kv[i].val = content;
        return 0;
    }
    rc = td__meta_grow(m, m->n + 1);
    if (rc) {
        rc = td__err(err, rc, "metadata: cannot add key '%s' after %zu entries",
                     td__quote(key, keylen, q, sizeof q), m->n);
        goto fail;
    }
    char *k = malloc(keylen + 1);
    if (!k) {
        rc = td__err(err, TD_ENOMEM, "metadata: out of memory for key '%s'",
                     td__quote(key, keylen, q, sizeof q));
        goto fail;
    }
    memcpy(k, key, keylen);
    k[keylen] = '\0';
    td__kv *kv = &m->kv[m->n];
    kv->key = k;
    kv->keylen = keylen;
    kv->hash = h;
    kv->val = content;
    td__meta_slot_insert(m->slots, m->nslots, h, m->n);
    m->n++;
    return 0;
fail:
    td__value_clear(&content);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Meta: public
 */

td_meta *td_meta_new(void)
{
    td_meta *m = calloc(1, sizeof *m);
    if (m)
        m->seed = td__fmix((uint64_t)(uintptr_t)m ^ 0x2545f4914f6cdd1dULL);
    return m;
}

void td_meta_free(td_meta *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n; i++) {
        free(m->kv[i].key);
        td__value_clear(&m->kv[i].val);
    }
    free(m->kv);
    free(m->slots);
    free(m);
}

size_t td_meta_size(const td_meta *m)
{
    return m ? m->n : 0;
}

/* key may be NULL when the caller does not want it. */
const td_value *td_meta_at(const td_meta *m, size_t i, const char **key)
{
    if (!m || i >= m->n) {
        if (key)
            *key = NULL;
        return NULL;
    }
    if (key)
        *key = m->kv[i].key;
    return &m->kv[i].val;
}

const td_value *td_meta_get(const td_meta *m, const char *key)
{
    if (!m || !key)
        return NULL;
    size_t n = strlen(key);
    size_t i = td__meta_find(m, key, n, td__hash(key, n, m->seed));
    return i == SIZE_MAX ? NULL : &m->kv[i].val;
}

/* s may be NULL when len is 0. */
int td_meta_set_string(td_meta *m, const char *key, const char *s, size_t len, td_error *err)
{
    int rc = td__check_key(key, err);
    if (rc)
        return rc;
    if (!m || (!s && len))
        return td__err(err, TD_EINVAL, "metadata: set_string: no meta or no string");
    td_value c = {.type = TD_TYPE_STRING};
    c.v.s = td__str_new(s, len);
    if (!c.v.s)
        return td__err(err, TD_ENOMEM, "metadata: out of memory for a string of %zu bytes", len);
    return td__meta_put(m, key, strlen(key), c, 1, err);
}

int td_meta_set_scalar(td_meta *m, const char *key, td_type type, const void *value, td_error *err)
{
    int rc = td__check_key(key, err);
    if (rc)
        return rc;
    if (!m || !value)
        return td__err(err, TD_EINVAL, "metadata: set_scalar: no meta or no value");
    if (!td__type_is_scalar(type))
        return td__err(err, TD_EINVAL, "metadata: key '%s': %s is not a scalar type", key,
                       td__tname(type));
    td_value c;
    td__scalar_load(&c, type, value);
    return td__meta_put(m, key, strlen(key), c, 1, err);
}

int td_meta_set_array(td_meta *m, const char *key, td_type elem_type, const void *items, size_t n,
                      td_error *err)
{
    int rc = td__check_key(key, err);
    if (rc)
        return rc;
    if (!m || (!items && n))
        return td__err(err, TD_EINVAL, "metadata: set_array: no meta or no items");
    if (!td__type_is_scalar(elem_type))
        return td__err(err, TD_EINVAL,
                       "metadata: key '%s': set_array takes scalar element types, not %s", key,
                       td__tname(elem_type));
    if (n > SIZE_MAX / sizeof(td_value))
        return td__err(err, TD_ENOMEM, "metadata: key '%s': %zu items", key, n);
    td_value *v = td__value_new_array_packed(elem_type, items, n);
    if (!v)
        return td__err(err, TD_ENOMEM, "metadata: key '%s': out of memory for %zu items", key, n);
    td_value c = *v;
    free(v);
    return td__meta_put(m, key, strlen(key), c, 1, err);
}

/* All strings go into one blob sized up front. */
int td_meta_set_strings(td_meta *m, const char *key, const char *const *items, const size_t *lens,
                        size_t n, td_error *err)
{
    int rc = td__check_key(key, err);
    if (rc)
        return rc;
    if (!m || (!items && n))
        return td__err(err, TD_EINVAL, "metadata: set_strings: no meta or no items");
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (!items[i] && (!lens || lens[i]))
            return td__err(err, TD_EINVAL, "metadata: key '%s': item %zu is NULL", key, i);
        size_t len = lens ? lens[i] : (items[i] ? strlen(items[i]) : 0);
        size_t rs = td__rec_size(len);
        if (!rs || rs > SIZE_MAX - total)
            return td__err(err, TD_ENOMEM, "metadata: key '%s': strings too large", key);
        total += rs;
    }
    td_value c = {.type = TD_TYPE_ARRAY};
    c.v.a = td__arr_new(TD_TYPE_STRING);
    if (!c.v.a)
        return td__err(err, TD_ENOMEM, "metadata: out of memory");
    td__arr *a = c.v.a;
    if (n && (td__arr_grow_items(a, n) || td__arr_grow_blob(a, total))) {
        td__arr_free(a);
        return td__err(err, TD_ENOMEM, "metadata: key '%s': out of memory for %zu strings", key, n);
    }
    for (size_t i = 0; i < n; i++) {
        size_t len = lens ? lens[i] : (items[i] ? strlen(items[i]) : 0);
        td__arr_push_string(a, items[i], len); /* cannot fail: room reserved */
    }
    return td__meta_put(m, key, strlen(key), c, 1, err);
}

int td_meta_set_value(td_meta *m, const char *key, td_value *v, td_error *err)
{
    if (!v)
        return td__err(err, TD_EINVAL, "metadata: set_value: no value");
    if (!v->owned)
        return td__err(err, TD_EINVAL, "metadata: set_value: the value belongs to a container");
    int rc = td__check_key(key, err);
    if (rc || !m) {
        td_value_free(v);
        return rc ? rc : td__err(err, TD_EINVAL, "metadata: set_value: no meta");
    }
    td_value c = *v;
    free(v);
    return td__meta_put(m, key, strlen(key), c, 1, err);
}

int td__meta_add_taking(td_meta *m, const char *key, size_t keylen, td_value *v, td_error *err)
{
    char q[80];
    if (!v)
        return td__err(err, TD_EINVAL, "metadata: add: no value");
    if (!v->owned)
        return td__err(err, TD_EINVAL, "metadata: add: the value belongs to a container");
    if (!m || !key || !keylen || memchr(key, '\0', keylen)) {
        td_value_free(v);
        if (!m)
            return td__err(err, TD_EINVAL, "metadata: add: no meta");
        if (!key || !keylen)
            return td__err(err, TD_EFORMAT, "metadata: empty key");
        return td__err(err, TD_EFORMAT, "metadata: key '%s' contains a NUL byte",
                       td__quote(key, keylen, q, sizeof q));
    }
    td_value c = *v;
    free(v);
    return td__meta_put(m, key, keylen, c, 0, err);
}

int td__meta_reserve(td_meta *m, size_t n, td_error *err)
{
    if (!m)
        return td__err(err, TD_EINVAL, "metadata: reserve: no meta");
    int rc = n > TD__META_MAX_ENTRIES - m->n ? TD_ELIMIT : td__meta_grow(m, m->n + n);
    if (rc)
        return td__err(err, rc, "metadata: cannot make room for %zu more keys", n);
    return 0;
}

td_meta *td__meta_copy_without(const td_meta *m, const char *prefix)
{
    if (!m)
        return NULL;
    size_t plen = prefix ? strlen(prefix) : 0;
    td_meta *c = td_meta_new();
    if (!c || td__meta_grow(c, m->n))
        goto fail;
    for (size_t i = 0; i < m->n; i++) {
        const td__kv *s = &m->kv[i];
        if (plen && s->keylen >= plen && memcmp(s->key, prefix, plen) == 0)
            continue;
        size_t j = c->n;
        td__kv *d = &c->kv[j];
        d->key = malloc(s->keylen + 1);
        if (!d->key)
            goto fail;
        memcpy(d->key, s->key, s->keylen + 1);
        d->keylen = s->keylen;
        d->val.owned = 0;
        if (td__value_copy_into(&d->val, &s->val)) {
            free(d->key);
            goto fail;
        }
        d->hash = td__hash(d->key, d->keylen, c->seed);
        td__meta_slot_insert(c->slots, c->nslots, d->hash, j);
        c->n = j + 1;
    }
    return c;
fail:
    td_meta_free(c);
    return NULL;
}

td_meta *td_meta_copy(const td_meta *m)
{
    return td__meta_copy_without(m, NULL);
}

int td__meta_equal(const td_meta *a, const td_meta *b)
{
    if (!a || !b)
        return a == b;
    if (a->n != b->n)
        return 0;
    for (size_t i = 0; i < a->n; i++) {
        if (a->kv[i].keylen != b->kv[i].keylen ||
            memcmp(a->kv[i].key, b->kv[i].key, a->kv[i].keylen) != 0 ||
            !td__value_equal(&a->kv[i].val, &b->kv[i].val))
            return 0;
    }
    return 1;
}

int td_meta_get_string(const td_meta *m, const char *key, const char **s, size_t *len)
{
    const td_value *v = td_meta_get(m, key);
    if (!v)
        return TD_ENOTFOUND;
    if (v->type != TD_TYPE_STRING)
        return TD_EDTYPE;
    if (s)
        *s = v->v.s->bytes;
    if (len)
        *len = v->v.s->len;
    return 0;
}

/* TD_ERANGE when the number does not fit in int64 (or is a float that is not an integer). */
int td_meta_get_int(const td_meta *m, const char *key, int64_t *out)
{
    const td_value *v = td_meta_get(m, key);
    if (!v)
        return TD_ENOTFOUND;
    if (!td__type_is_scalar((td_type)v->type))
        return TD_EDTYPE;
    return td_value_get_int(v, out);
}

int td_meta_get_float(const td_meta *m, const char *key, double *out)
{
    const td_value *v = td_meta_get(m, key);
    if (!v)
        return TD_ENOTFOUND;
    if (!td__type_is_scalar((td_type)v->type))
        return TD_EDTYPE;
    return td_value_get_float(v, out);
}

int td_meta_get_array(const td_meta *m, const char *key, td_type *elem_type, size_t *n,
                      const void **items)
{
    const td_value *v = td_meta_get(m, key);
    if (!v)
        return TD_ENOTFOUND;
    if (v->type != TD_TYPE_ARRAY || td_value_array_type(v) == TD_TYPE_ARRAY)
        return TD_EDTYPE;
    if (elem_type)
        *elem_type = td_value_array_type(v);
    if (n)
        *n = td_value_array_len(v);
    if (items)
        *items = td_value_array_data(v);
    return 0;
}

int td_meta_get_string_at(const td_meta *m, const char *key, size_t i, const char **s, size_t *len)
{
    const td_value *v = td_meta_get(m, key);
    if (!v)
        return TD_ENOTFOUND;
    if (v->type != TD_TYPE_ARRAY || td_value_array_type(v) != TD_TYPE_STRING)
        return TD_EDTYPE;
    if (i >= td_value_array_len(v))
        return TD_ERANGE;
    const char *p = td_value_string(td_value_array_at(v, i), len);
    if (s)
        *s = p;
    return 0;
}

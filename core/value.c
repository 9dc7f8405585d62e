/*
 * value.c - td_value: one typed metadata value, GGUF's value types and nested arrays (see
 * tensord.h for the public contract, value_internal.h for the representation and the helpers
 * that td_meta (meta.c), the codecs and the wire protocol use).
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
#include "value_internal.h"

#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

struct td__str {
    size_t len;
    char bytes[]; /* len bytes, then a NUL */
};

struct td__arr {
    uint8_t elem;    /* td_meta_type of every item */
    uint8_t depth;   /* see td__value_depth */
    size_t len, cap; /* items in use, item slots allocated */
    td_value *items; /* cap slots, owned == 0 */
    void *data;      /* numeric: cap packed C values; strings: the record blob */
    size_t blob_len, blob_cap;
};

static const uint64_t td__empty_packed[1];

/* ---------------------------------------------------------------------------------------------
 * Types
 */

const char *td_meta_type_name(td_meta_type t)
{
    static const char *const names[TD_META_COUNT] = {
        [TD_META_UINT8] = "uint8",     [TD_META_INT8] = "int8",     [TD_META_UINT16] = "uint16",
        [TD_META_INT16] = "int16",     [TD_META_UINT32] = "uint32", [TD_META_INT32] = "int32",
        [TD_META_FLOAT32] = "float32", [TD_META_BOOL] = "bool",     [TD_META_STRING] = "string",
        [TD_META_ARRAY] = "array",     [TD_META_UINT64] = "uint64", [TD_META_INT64] = "int64",
        [TD_META_FLOAT64] = "float64",
    };
    if ((unsigned)t >= TD_META_COUNT)
        return NULL;
    return names[t];
}

const char *td__type_label(unsigned t)
{
    const char *s = td_meta_type_name((td_meta_type)t);
    return s ? s : "(invalid type)";
}

size_t td__type_size(td_meta_type t)
{
    switch (t) {
    case TD_META_UINT8:
    case TD_META_INT8:
    case TD_META_BOOL:
        return 1;
    case TD_META_UINT16:
    case TD_META_INT16:
        return 2;
    case TD_META_UINT32:
    case TD_META_INT32:
    case TD_META_FLOAT32:
        return 4;
    case TD_META_UINT64:
    case TD_META_INT64:
    case TD_META_FLOAT64:
        return 8;
    default:
        return 0;
    }
}

int td__type_is_scalar(td_meta_type t)
{
    return td__type_size(t) != 0;
}

static int td__is_signed(unsigned t)
{
    return t == TD_META_INT8 || t == TD_META_INT16 || t == TD_META_INT32 || t == TD_META_INT64;
}

void td__scalar_load(td_value *v, td_meta_type t, const void *p)
{
    v->type = (uint8_t)t;
    v->v.u = 0;
    switch (t) {
    case TD_META_UINT8: {
        uint8_t x;
        memcpy(&x, p, 1);
        v->v.u = x;
        break;
    }
    case TD_META_BOOL: {
        uint8_t x;
        memcpy(&x, p, 1);
        v->v.u = x != 0;
        break;
    }
    case TD_META_INT8: {
        int8_t x;
        memcpy(&x, p, 1);
        v->v.i = x;
        break;
    }
    case TD_META_UINT16: {
        uint16_t x;
        memcpy(&x, p, 2);
        v->v.u = x;
        break;
    }
    case TD_META_INT16: {
        int16_t x;
        memcpy(&x, p, 2);
        v->v.i = x;
        break;
    }
    case TD_META_UINT32: {
        uint32_t x;
        memcpy(&x, p, 4);
        v->v.u = x;
        break;
    }
    case TD_META_INT32: {
        int32_t x;
        memcpy(&x, p, 4);
        v->v.i = x;
        break;
    }
    case TD_META_FLOAT32:
        memcpy(&v->v.f32, p, 4);
        break;
    case TD_META_UINT64:
        memcpy(&v->v.u, p, 8);
        break;
    case TD_META_INT64:
        memcpy(&v->v.i, p, 8);
        break;
    case TD_META_FLOAT64:
        memcpy(&v->v.f64, p, 8);
        break;
    default:
        break;
    }
}

void td__scalar_store(void *p, const td_value *v)
{
    switch (v->type) {
    case TD_META_UINT8:
    case TD_META_BOOL: {
        uint8_t x = (uint8_t)v->v.u;
        memcpy(p, &x, 1);
        break;
    }
    case TD_META_INT8: {
        int8_t x = (int8_t)v->v.i;
        memcpy(p, &x, 1);
        break;
    }
    case TD_META_UINT16: {
        uint16_t x = (uint16_t)v->v.u;
        memcpy(p, &x, 2);
        break;
    }
    case TD_META_INT16: {
        int16_t x = (int16_t)v->v.i;
        memcpy(p, &x, 2);
        break;
    }
    case TD_META_UINT32: {
        uint32_t x = (uint32_t)v->v.u;
        memcpy(p, &x, 4);
        break;
    }
    case TD_META_INT32: {
        int32_t x = (int32_t)v->v.i;
        memcpy(p, &x, 4);
        break;
    }
    case TD_META_FLOAT32:
        memcpy(p, &v->v.f32, 4);
        break;
    case TD_META_UINT64:
        memcpy(p, &v->v.u, 8);
        break;
    case TD_META_INT64:
        memcpy(p, &v->v.i, 8);
        break;
    case TD_META_FLOAT64:
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

void td__value_clear(td_value *v)
{
    if (v->type == TD_META_STRING)
        free(v->v.s);
    else if (v->type == TD_META_ARRAY)
        td__arr_free(v->v.a);
    v->v.u = 0;
}

static void td__arr_free(td__arr *a)
{
    if (!a)
        return;
    if (a->elem == TD_META_ARRAY) {
        for (size_t i = 0; i < a->len; i++)
            td__arr_free(a->items[i].v.a);
    }
    /* string items point into the blob (a->data): nothing to free one by one */
    free(a->items);
    free(a->data);
    free(a);
}

static td__arr *td__arr_new(td_meta_type elem)
{
    td__arr *a = calloc(1, sizeof *a);
    if (a) {
        a->elem = (uint8_t)elem;
        a->depth = elem == TD_META_ARRAY ? 2 : 1;
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
    size_t esz = td__type_size((td_meta_type)a->elem);
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
    it->type = TD_META_STRING;
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
    size_t esz = td__type_size((td_meta_type)a->elem);
    td__scalar_store((char *)a->data + a->len * esz, v);
    a->items[a->len] = *v;
    a->items[a->len].owned = 0;
    a->len++;
    return 0;
}

/* A deep copy of an array body, or NULL when out of memory. */
static td__arr *td__arr_copy(const td__arr *src)
{
    td__arr *a = td__arr_new((td_meta_type)src->elem);
    if (!a)
        return NULL;
    a->depth = src->depth;
    if (src->len == 0)
        return a;
    if (td__arr_grow_items(a, src->len))
        goto fail;
    if (src->elem == TD_META_STRING) {
        /* one blob of the same size; the records are copied one by one */
        if (td__arr_grow_blob(a, src->blob_len))
            goto fail;
        for (size_t i = 0; i < src->len; i++) {
            const td__str *r = src->items[i].v.s;
            if (td__arr_push_string(a, r->bytes, r->len))
                goto fail; /* cannot happen: room reserved */
        }
    } else if (src->elem == TD_META_ARRAY) {
        for (size_t i = 0; i < src->len; i++) {
            a->items[i] = src->items[i];
            a->items[i].v.a = td__arr_copy(src->items[i].v.a);
            if (!a->items[i].v.a)
                goto fail; /* a->len == i: exactly the copies made so far are freed */
            a->len = i + 1;
        }
    } else {
        size_t esz = td__type_size((td_meta_type)src->elem);
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

int td__value_copy_into(td_value *dst, const td_value *src)
{
    dst->type = src->type;
    if (src->type == TD_META_STRING) {
        dst->v.s = td__str_new(src->v.s->bytes, src->v.s->len);
        return dst->v.s ? 0 : TD_ENOMEM;
    }
    if (src->type == TD_META_ARRAY) {
        dst->v.a = td__arr_copy(src->v.a);
        return dst->v.a ? 0 : TD_ENOMEM;
    }
    dst->v = src->v;
    return 0;
}

int td__value_init_string(td_value *v, const char *s, size_t len)
{
    memset(v, 0, sizeof *v);
    v->type = TD_META_STRING;
    v->v.s = td__str_new(s, len);
    return v->v.s ? 0 : TD_ENOMEM;
}

/* All strings go into one blob sized up front. */
int td__value_init_strings(td_value *v, const char *const *items, const size_t *lens, size_t n,
                           const char *key, td_error *err)
{
    memset(v, 0, sizeof *v);
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
    td__arr *a = td__arr_new(TD_META_STRING);
    if (!a)
        return td__err(err, TD_ENOMEM, "metadata: out of memory");
    if (n && (td__arr_grow_items(a, n) || td__arr_grow_blob(a, total))) {
        td__arr_free(a);
        return td__err(err, TD_ENOMEM, "metadata: key '%s': out of memory for %zu strings", key, n);
    }
    for (size_t i = 0; i < n; i++) {
        size_t len = lens ? lens[i] : (items[i] ? strlen(items[i]) : 0);
        td__arr_push_string(a, items[i], len); /* cannot fail: room reserved */
    }
    v->type = TD_META_ARRAY;
    v->v.a = a;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Values: builders
 */

static td_value *td__value_alloc(td_meta_type t)
{
    td_value *v = calloc(1, sizeof *v);
    if (v) {
        v->type = (uint8_t)t;
        v->owned = 1;
    }
    return v;
}

/* Returns NULL when out of memory, and also for a type that is not a scalar type. */
td_value *td_value_new_scalar(td_meta_type type, const void *value)
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
    td_value *v = td__value_alloc(TD_META_STRING);
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
td_value *td_value_new_array(td_meta_type elem_type)
{
    if ((unsigned)elem_type >= TD_META_COUNT)
        return NULL;
    td_value *v = td__value_alloc(TD_META_ARRAY);
    if (!v)
        return NULL;
    v->v.a = td__arr_new(elem_type);
    if (!v->v.a) {
        free(v);
        return NULL;
    }
    return v;
}

td_value *td__value_new_array_packed(td_meta_type elem_type, const void *items, size_t n)
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
        if (elem_type == TD_META_BOOL) {
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
    if (!arr || arr->type != TD_META_ARRAY)
        return td__err(err, TD_EINVAL, "metadata: reserve on a value that is not an array");
    td__arr *a = arr->v.a;
    if (n > SIZE_MAX - a->len || td__arr_grow_items(a, a->len + n))
        return td__err(err, TD_ENOMEM, "metadata: out of memory for an array of %zu items", n);
    return 0;
}

int td__value_array_push_scalar(td_value *arr, const void *p, td_error *err)
{
    if (!arr || arr->type != TD_META_ARRAY || !p)
        return td__err(err, TD_EINVAL, "metadata: push on a value that is not an array");
    td__arr *a = arr->v.a;
    if (!td__type_is_scalar((td_meta_type)a->elem))
        return td__err(err, TD_EDTYPE, "metadata: cannot push a scalar to an array of %s",
                       td__type_label(a->elem));
    td_value tmp;
    td__scalar_load(&tmp, (td_meta_type)a->elem, p);
    if (td__arr_push_scalar(a, &tmp))
        return td__err(err, TD_ENOMEM, "metadata: out of memory at array item %zu", a->len);
    return 0;
}

int td__value_array_push_string(td_value *arr, const char *s, size_t len, td_error *err)
{
    if (!arr || arr->type != TD_META_ARRAY || (!s && len))
        return td__err(err, TD_EINVAL, "metadata: push on a value that is not an array");
    td__arr *a = arr->v.a;
    if (a->elem != TD_META_STRING)
        return td__err(err, TD_EDTYPE, "metadata: cannot push a string to an array of %s",
                       td__type_label(a->elem));
    if (td__arr_push_string(a, s, len))
        return td__err(err, TD_ENOMEM, "metadata: out of memory at array item %zu (%zu bytes)",
                       a->len, len);
    return 0;
}

unsigned td__value_depth(const td_value *v)
{
    return v && v->type == TD_META_ARRAY ? v->v.a->depth : 0;
}

/* Scalars and strings are copied (the caller keeps item); an array item is taken: on success it
 * becomes part of arr, on failure it is freed. */
int td_value_array_push(td_value *arr, td_value *item, td_error *err)
{
    int rc;
    int take = item && item->type == TD_META_ARRAY && item->owned;
    if (!arr || arr->type != TD_META_ARRAY || !item) {
        rc =
            td__err(err, TD_EINVAL, "metadata: array push: %s", !item ? "no item" : "not an array");
        goto out;
    }
    td__arr *a = arr->v.a;
    if (item->type != a->elem) {
        rc = td__err(err, TD_EDTYPE, "metadata: cannot push a %s to an array of %s",
                     td__type_label(item->type), td__type_label(a->elem));
        goto out;
    }
    if (item->type == TD_META_STRING) {
        rc = td__arr_push_string(a, item->v.s->bytes, item->v.s->len);
    } else if (item->type == TD_META_ARRAY) {
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
            slot->type = TD_META_ARRAY;
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

/* TD_META_COUNT for NULL. */
td_meta_type td_value_type(const td_value *v)
{
    return v ? (td_meta_type)v->type : TD_META_COUNT;
}

/* Floats convert when they hold an integer exactly and it fits; otherwise TD_ERANGE. */
int td_value_get_int(const td_value *v, int64_t *out)
{
    if (!v || !out)
        return TD_EINVAL;
    switch (v->type) {
    case TD_META_UINT8:
    case TD_META_UINT16:
    case TD_META_UINT32:
    case TD_META_UINT64:
    case TD_META_BOOL:
        if (v->v.u > (uint64_t)INT64_MAX)
            return TD_ERANGE;
        *out = (int64_t)v->v.u;
        return 0;
    case TD_META_INT8:
    case TD_META_INT16:
    case TD_META_INT32:
    case TD_META_INT64:
        *out = v->v.i;
        return 0;
    case TD_META_FLOAT32:
    case TD_META_FLOAT64: {
        double d = v->type == TD_META_FLOAT32 ? (double)v->v.f32 : v->v.f64;
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
    case TD_META_UINT8:
    case TD_META_UINT16:
    case TD_META_UINT32:
    case TD_META_UINT64:
    case TD_META_BOOL:
        *out = v->v.u;
        return 0;
    case TD_META_INT8:
    case TD_META_INT16:
    case TD_META_INT32:
    case TD_META_INT64:
        if (v->v.i < 0)
            return TD_ERANGE;
        *out = (uint64_t)v->v.i;
        return 0;
    case TD_META_FLOAT32:
    case TD_META_FLOAT64: {
        double d = v->type == TD_META_FLOAT32 ? (double)v->v.f32 : v->v.f64;
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
    if (!td__type_is_scalar((td_meta_type)v->type))
        return TD_EINVAL;
    if (v->type == TD_META_FLOAT32)
        *out = (double)v->v.f32;
    else if (v->type == TD_META_FLOAT64)
        *out = v->v.f64;
    else if (td__is_signed(v->type))
        *out = (double)v->v.i;
    else
        *out = (double)v->v.u;
    return 0;
}

const char *td_value_string(const td_value *v, size_t *len)
{
    if (!v || v->type != TD_META_STRING) {
        if (len)
            *len = 0;
        return NULL;
    }
    if (len)
        *len = v->v.s->len;
    return v->v.s->bytes;
}

/* TD_META_COUNT when v is not an array. */
td_meta_type td_value_array_type(const td_value *v)
{
    return v && v->type == TD_META_ARRAY ? (td_meta_type)v->v.a->elem : TD_META_COUNT;
}

/* 0 when v is not an array. */
size_t td_value_array_len(const td_value *v)
{
    return v && v->type == TD_META_ARRAY ? v->v.a->len : 0;
}

/* For numeric arrays never NULL, also when empty. */
const void *td_value_array_data(const td_value *v)
{
    if (!v || v->type != TD_META_ARRAY || !td__type_is_scalar((td_meta_type)v->v.a->elem))
        return NULL;
    return v->v.a->data ? v->v.a->data : (const void *)td__empty_packed;
}

/* Item values are stored, not built here: the pointer stays valid until the array changes. */
const td_value *td_value_array_at(const td_value *v, size_t i)
{
    if (!v || v->type != TD_META_ARRAY || i >= v->v.a->len)
        return NULL;
    return &v->v.a->items[i];
}

int td__value_equal(const td_value *a, const td_value *b)
{
    if (!a || !b)
        return a == b;
    if (a->type != b->type)
        return 0;
    if (a->type == TD_META_STRING)
        return a->v.s->len == b->v.s->len && memcmp(a->v.s->bytes, b->v.s->bytes, a->v.s->len) == 0;
    if (a->type != TD_META_ARRAY)
        return a->v.u == b->v.u; /* payloads are zero-extended, so bits compare */
    const td__arr *x = a->v.a, *y = b->v.a;
    if (x->elem != y->elem || x->len != y->len)
        return 0;
    size_t esz = td__type_size((td_meta_type)x->elem);
    if (esz)
        return x->len == 0 || memcmp(x->data, y->data, x->len * esz) == 0;
    for (size_t i = 0; i < x->len; i++) {
        if (!td__value_equal(&x->items[i], &y->items[i]))
            return 0;
    }
    return 1;
}

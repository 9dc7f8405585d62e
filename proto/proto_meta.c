/*
 * proto_meta.c - typed metadata (td_meta) on the wire.
 *
 * msgpack packs every integer in its smallest form, so the value's td_meta_type travels with it:
 *   value  = [type, payload]
 *   scalar : payload is a msgpack int (in the type's range), float, or bool
 *   string : payload is a str
 *   array  = [9, elem_type, items]
 *            items is a bin of packed little-endian scalars for numeric and bool elements
 *            (one byte 0/1 per bool), an array of str for strings, an array of values for
 *            arrays (each [9, elem_type, items] again).
 * The metadata itself is a map key -> value in the td_meta's order. Packed scalar arrays keep
 * the large tokenizer arrays (150k scores) at their raw size and decode with one memcpy.
 */
#include "proto_internal.h"
#include "common.h"
#include "meta_internal.h"

#include <stdlib.h>
#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#define TD__PROTO_SWAP 1
#else
#define TD__PROTO_SWAP 0
#endif

#if TD__PROTO_SWAP
/* Reverses each esz-byte item of p[0..n*esz) into a new buffer (big-endian hosts only). */
static void *td__swap_copy(const void *p, size_t n, size_t esz)
{
    uint8_t *q = malloc(n * esz ? n * esz : 1);
    if (!q)
        return NULL;
    const uint8_t *s = p;
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < esz; k++)
            q[i * esz + k] = s[i * esz + esz - 1 - k];
    return q;
}
#endif

/* ---------------------------------------------------------------------------------------------
 * Encoding
 */

static int td__value_encode(td__proto_enc *e, const td_value *v, const char *key, td_error *err)
{
    char q[80];
    td_meta_type t = td_value_type(v);
    if (t >= TD_META_COUNT)
        return td__err(err, TD_EINVAL, "meta '%s': value of unknown type %d",
                       td__quote(key, strlen(key), q, sizeof q), (int)t);
    msgpack_packer *pk = &e->pk;
    if (t == TD_META_STRING) {
        size_t len;
        const char *s = td_value_string(v, &len);
        if (len > e->peer.max_str)
            return td__err(err, TD_ELIMIT, "meta '%s': string of %zu bytes (the peer takes %u)",
                           td__quote(key, strlen(key), q, sizeof q), len, e->peer.max_str);
        msgpack_pack_array(pk, 2);
        msgpack_pack_uint8(pk, (uint8_t)t);
        msgpack_pack_str_with_body(pk, s, len);
        return 0;
    }
    if (t != TD_META_ARRAY) {
        msgpack_pack_array(pk, 2);
        msgpack_pack_uint8(pk, (uint8_t)t);
        int64_t i;
        uint64_t u;
        double f;
        switch (t) {
        case TD_META_UINT8:
        case TD_META_UINT16:
        case TD_META_UINT32:
        case TD_META_UINT64:
            td_value_get_uint(v, &u);
            msgpack_pack_uint64(pk, u);
            break;
        case TD_META_INT8:
        case TD_META_INT16:
        case TD_META_INT32:
        case TD_META_INT64:
            td_value_get_int(v, &i);
            msgpack_pack_int64(pk, i);
            break;
        case TD_META_BOOL:
            td_value_get_int(v, &i);
            if (i)
                msgpack_pack_true(pk);
            else
                msgpack_pack_false(pk);
            break;
        case TD_META_FLOAT32:
            td_value_get_float(v, &f);
            msgpack_pack_float(pk, (float)f);
            break;
        default: /* TD_META_FLOAT64 */
            td_value_get_float(v, &f);
            msgpack_pack_double(pk, f);
            break;
        }
        return 0;
    }

    td_meta_type et = td_value_array_type(v);
    size_t n = td_value_array_len(v);
    if (et >= TD_META_COUNT)
        return td__err(err, TD_EINVAL, "meta '%s': array of unknown type %d",
                       td__quote(key, strlen(key), q, sizeof q), (int)et);
    msgpack_pack_array(pk, 3);
    msgpack_pack_uint8(pk, (uint8_t)t);
    msgpack_pack_uint8(pk, (uint8_t)et);
    if (td__type_is_scalar(et)) {
        size_t esz = td__type_size(et);
        if (n > e->peer.max_str / esz)
            return td__err(err, TD_ELIMIT,
                           "meta '%s': array of %zu %s (%zu bytes, the peer takes %u)",
                           td__quote(key, strlen(key), q, sizeof q), n, td_meta_type_name(et),
                           n * esz, e->peer.max_str);
        const void *data = td_value_array_data(v);
#if TD__PROTO_SWAP
        void *sw = td__swap_copy(data, n, esz);
        if (!sw)
            return td__err(err, TD_ENOMEM, "meta: out of memory");
        msgpack_pack_bin_with_body(pk, sw, n * esz);
        free(sw);
#else
        msgpack_pack_bin_with_body(pk, n ? data : "", n * esz);
#endif
        return 0;
    }
    if (n > e->peer.max_count)
        return td__err(err, TD_ELIMIT, "meta '%s': array of %zu items (the peer takes %u)",
                       td__quote(key, strlen(key), q, sizeof q), n, e->peer.max_count);
    msgpack_pack_array(pk, n);
    for (size_t i = 0; i < n && !e->status; i++) {
        const td_value *item = td_value_array_at(v, i);
        if (et == TD_META_STRING) {
            size_t len;
            const char *s = td_value_string(item, &len);
            if (!s)
                return td__err(err, TD_EINVAL, "meta '%s': item %zu is not a string",
                               td__quote(key, strlen(key), q, sizeof q), i);
            if (len > e->peer.max_str)
                return td__err(err, TD_ELIMIT,
                               "meta '%s': item %zu: string of %zu bytes (the peer takes %u)",
                               td__quote(key, strlen(key), q, sizeof q), i, len, e->peer.max_str);
            msgpack_pack_str_with_body(pk, s, len);
        } else {
            if (td_value_type(item) != TD_META_ARRAY)
                return td__err(err, TD_EINVAL, "meta '%s': item %zu is not an array",
                               td__quote(key, strlen(key), q, sizeof q), i);
            int rc = td__value_encode(e, item, key, err);
            if (rc)
                return rc;
        }
    }
    return 0;
}

int td__proto_meta_encode(td__proto_enc *e, const td_meta *m, td_error *err)
{
    size_t n = td_meta_size(m);
    if (n > e->peer.max_count)
        return td__err(err, TD_ELIMIT, "meta: %zu keys (the peer takes %u)", n, e->peer.max_count);
    msgpack_pack_map(&e->pk, n);
    for (size_t i = 0; i < n && !e->status; i++) {
        const char *key;
        const td_value *v = td_meta_at(m, i, &key);
        size_t klen = strlen(key);
        if (klen > TD__PROTO_NAME_MAX)
            return td__err(err, TD_ELIMIT, "meta: key of %zu bytes (limit %u)", klen,
                           TD__PROTO_NAME_MAX);
        msgpack_pack_str_with_body(&e->pk, key, klen);
        int rc = td__value_encode(e, v, key, err);
        if (rc)
            return rc;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Decoding
 */

/* Context for error messages: the message part and the (quoted) key. */
typedef struct td__mctx {
    const td__proto_dec *d;
    const char *what;
    char key[80];
} td__mctx;

/* A scalar of type t from o into its C type at c (8 bytes of room). */
static int td__scalar_decode(const td__mctx *c, const msgpack_object *o, td_meta_type t, void *out)
{
    static const struct {
        int64_t lo;
        uint64_t hi;
    } range[TD_META_COUNT] = {
        [TD_META_UINT8] = {0, UINT8_MAX},   [TD_META_INT8] = {INT8_MIN, INT8_MAX},
        [TD_META_UINT16] = {0, UINT16_MAX}, [TD_META_INT16] = {INT16_MIN, INT16_MAX},
        [TD_META_UINT32] = {0, UINT32_MAX}, [TD_META_INT32] = {INT32_MIN, INT32_MAX},
        [TD_META_UINT64] = {0, UINT64_MAX}, [TD_META_INT64] = {INT64_MIN, INT64_MAX},
    };
    switch (t) {
    case TD_META_FLOAT32:
    case TD_META_FLOAT64:
        if (o->type != MSGPACK_OBJECT_FLOAT32 && o->type != MSGPACK_OBJECT_FLOAT64)
            return td__err(c->d->err, TD_EPROTO, "%s '%s': %s value is not a float", c->what,
                           c->key, td_meta_type_name(t));
        if (t == TD_META_FLOAT32) {
            float f = (float)o->via.f64;
            memcpy(out, &f, sizeof f);
        } else {
            memcpy(out, &o->via.f64, sizeof o->via.f64);
        }
        return 0;
    case TD_META_BOOL:
        if (o->type != MSGPACK_OBJECT_BOOLEAN)
            return td__err(c->d->err, TD_EPROTO, "%s '%s': bool value is not a boolean", c->what,
                           c->key);
        *(uint8_t *)out = o->via.boolean ? 1 : 0;
        return 0;
    default:
        break;
    }
    int64_t i = 0;
    uint64_t u = 0;
    int neg;
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        u = o->via.u64;
        neg = 0;
        if (u > range[t].hi)
            goto range;
    } else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        i = o->via.i64;
        neg = 1;
        if (i < range[t].lo)
            goto range;
    } else {
        return td__err(c->d->err, TD_EPROTO, "%s '%s': %s value is not an integer", c->what, c->key,
                       td_meta_type_name(t));
    }
    switch (t) {
    case TD_META_UINT8:
        *(uint8_t *)out = (uint8_t)u;
        break;
    case TD_META_UINT16: {
        uint16_t x = (uint16_t)u;
        memcpy(out, &x, sizeof x);
        break;
    }
    case TD_META_UINT32: {
        uint32_t x = (uint32_t)u;
        memcpy(out, &x, sizeof x);
        break;
    }
    case TD_META_UINT64:
        memcpy(out, &u, sizeof u);
        break;
    case TD_META_INT8: {
        int8_t x = (int8_t)(neg ? i : (int64_t)u);
        memcpy(out, &x, sizeof x);
        break;
    }
    case TD_META_INT16: {
        int16_t x = (int16_t)(neg ? i : (int64_t)u);
        memcpy(out, &x, sizeof x);
        break;
    }
    case TD_META_INT32: {
        int32_t x = (int32_t)(neg ? i : (int64_t)u);
        memcpy(out, &x, sizeof x);
        break;
    }
    default: { /* TD_META_INT64 */
        int64_t x = neg ? i : (int64_t)u;
        memcpy(out, &x, sizeof x);
        break;
    }
    }
    return 0;
range:
    return td__err(c->d->err, TD_EPROTO, "%s '%s': %s%llu is out of range for %s", c->what, c->key,
                   neg ? "-" : "",
                   neg ? (unsigned long long)(-(i + 1)) + 1ull : (unsigned long long)u,
                   td_meta_type_name(t));
}

/* Decodes one value; depth is the array nesting level this value would have (1 at the top). */
static int td__value_decode(const td__mctx *c, const msgpack_object *o, unsigned depth,
                            td_value **out)
{
    const td__proto_dec *d = c->d;
    int rc;
    *out = NULL;
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size < 2)
        return td__err(d->err, TD_EPROTO, "%s '%s': value is not [type, payload]", c->what, c->key);
    const msgpack_object *x = o->via.array.ptr;
    if (x[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER || x[0].via.u64 >= TD_META_COUNT)
        return td__err(d->err, TD_EPROTO, "%s '%s': value type is not a known type", c->what,
                       c->key);
    td_meta_type t = (td_meta_type)x[0].via.u64;

    if (t == TD_META_STRING) {
        if (x[1].type != MSGPACK_OBJECT_STR)
            return td__err(d->err, TD_EPROTO, "%s '%s': string value is not a str", c->what,
                           c->key);
        *out = td_value_new_string(td__proto_bytes(&x[1]), x[1].via.str.size);
        return *out ? 0 : td__err(d->err, TD_ENOMEM, "%s '%s': out of memory", c->what, c->key);
    }
    if (t != TD_META_ARRAY) {
        uint64_t buf = 0;
        if ((rc = td__scalar_decode(c, &x[1], t, &buf)))
            return rc;
        *out = td_value_new_scalar(t, &buf);
        return *out ? 0 : td__err(d->err, TD_ENOMEM, "%s '%s': out of memory", c->what, c->key);
    }

    if (depth > TD_META_MAX_DEPTH)
        return td__err(d->err, TD_ELIMIT, "%s '%s': arrays nested deeper than %d", c->what, c->key,
                       TD_META_MAX_DEPTH);
    if (o->via.array.size < 3)
        return td__err(d->err, TD_EPROTO, "%s '%s': array value is not [9, elem_type, items]",
                       c->what, c->key);
    if (x[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER || x[1].via.u64 >= TD_META_COUNT)
        return td__err(d->err, TD_EPROTO, "%s '%s': array element type is not a known type",
                       c->what, c->key);
    td_meta_type et = (td_meta_type)x[1].via.u64;
    const msgpack_object *items = &x[2];

    if (td__type_is_scalar(et)) {
        if (items->type != MSGPACK_OBJECT_BIN)
            return td__err(d->err, TD_EPROTO, "%s '%s': array of %s: items are not a bin", c->what,
                           c->key, td_meta_type_name(et));
        size_t esz = td__type_size(et), nb = items->via.bin.size;
        if (nb % esz)
            return td__err(d->err, TD_EPROTO,
                           "%s '%s': array of %s: %zu bytes is not a multiple of %zu", c->what,
                           c->key, td_meta_type_name(et), nb, esz);
        const uint8_t *p = (const uint8_t *)td__proto_bytes(items);
        if (et == TD_META_BOOL)
            for (size_t i = 0; i < nb; i++)
                if (p[i] > 1)
                    return td__err(d->err, TD_EPROTO,
                                   "%s '%s': array of bool: item %zu is %u, not 0 or 1", c->what,
                                   c->key, i, p[i]);
#if TD__PROTO_SWAP
        void *sw = td__swap_copy(p, nb / esz, esz);
        if (!sw)
            return td__err(d->err, TD_ENOMEM, "%s '%s': out of memory", c->what, c->key);
        *out = td__value_new_array_packed(et, sw, nb / esz);
        free(sw);
#else
        *out = td__value_new_array_packed(et, nb ? p : NULL, nb / esz);
#endif
        return *out ? 0
                    : td__err(d->err, TD_ENOMEM, "%s '%s': out of memory for %zu bytes", c->what,
                              c->key, nb);
    }

    if (items->type != MSGPACK_OBJECT_ARRAY)
        return td__err(d->err, TD_EPROTO, "%s '%s': array of %s: items are not an array", c->what,
                       c->key, td_meta_type_name(et));
    uint32_t n = items->via.array.size;
    td_value *arr = td_value_new_array(et);
    if (!arr)
        return td__err(d->err, TD_ENOMEM, "%s '%s': out of memory", c->what, c->key);
    if ((rc = td__value_array_reserve(arr, n, d->err)))
        goto fail;
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *it = &items->via.array.ptr[i];
        if (et == TD_META_STRING) {
            if (it->type != MSGPACK_OBJECT_STR) {
                rc = td__err(d->err, TD_EPROTO, "%s '%s': array of string: item %u is not a str",
                             c->what, c->key, i);
                goto fail;
            }
            if ((rc = td__value_array_push_string(arr, td__proto_bytes(it), it->via.str.size,
                                                  d->err)))
                goto fail;
            continue;
        }
        /* Arrays of arrays: every item is an array value of its own. */
        if (it->type != MSGPACK_OBJECT_ARRAY || it->via.array.size < 1 ||
            it->via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
            it->via.array.ptr[0].via.u64 != TD_META_ARRAY) {
            rc = td__err(d->err, TD_EPROTO, "%s '%s': array of array: item %u is not an array",
                         c->what, c->key, i);
            goto fail;
        }
        td_value *child;
        if ((rc = td__value_decode(c, it, depth + 1, &child)))
            goto fail;
        if ((rc = td_value_array_push(arr, child, d->err))) /* takes child */
            goto fail;
    }
    *out = arr;
    return 0;
fail:
    td_value_free(arr);
    return rc;
}

int td__proto_meta_decode(const td__proto_dec *d, const msgpack_object *o, const char *what,
                          td_meta **out)
{
    td__mctx c = {d, what, ""};
    int rc;
    *out = NULL;
    if (o->type != MSGPACK_OBJECT_MAP)
        return td__err(d->err, TD_EPROTO, "%s: not a map", what);
    td_meta *m = td_meta_new();
    if (!m)
        return td__err(d->err, TD_ENOMEM, "%s: out of memory", what);
    if ((rc = td__meta_reserve(m, o->via.map.size, d->err)))
        goto fail;
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key;
        if (k->type != MSGPACK_OBJECT_STR || k->via.str.size == 0 ||
            k->via.str.size > TD__PROTO_NAME_MAX ||
            memchr(td__proto_bytes(k), '\0', k->via.str.size)) {
            rc = td__err(d->err, TD_EPROTO,
                         "%s: key %u is not a string of 1 to %u bytes without NUL", what, i,
                         TD__PROTO_NAME_MAX);
            goto fail;
        }
        td__quote(td__proto_bytes(k), k->via.str.size, c.key, sizeof c.key);
        td_value *v;
        if ((rc = td__value_decode(&c, &o->via.map.ptr[i].val, 1, &v)))
            goto fail;
        /* Takes v; a key seen twice is TD_EDUP. */
        if ((rc = td__meta_add_taking(m, td__proto_bytes(k), k->via.str.size, v, d->err))) {
            if (rc == TD_EDUP || rc == TD_EFORMAT)
                rc = td__err_prefix(d->err, rc, what);
            goto fail;
        }
    }
    *out = m;
    return 0;
fail:
    td_meta_free(m);
    return rc;
}

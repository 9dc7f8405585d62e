/*
 * value_internal.h - internal helpers around td_value (core/value.c): fast construction without a
 * temporary td_value per item, pre-sizing, comparison, and what td_meta (core/meta.c) needs to
 * hold values inside its entries.
 *
 * Representation:
 *   1. A td_value is 16 bytes: its type and an 8-byte payload (the scalar itself, a pointer to a
 *      length-prefixed string record, or a pointer to an array body). td_meta embeds td_values in
 *      its entries, so the struct is defined here; only value.c and meta.c touch its fields, and
 *      only value.c looks inside strings and array bodies.
 *   2. An array body holds `len` item td_values (so that td_value_array_at can hand out a
 *      pointer for every element type without building anything on a const path), plus:
 *      numeric elements: the same values packed as their C type (td_value_array_data);
 *      string elements: one blob of records {size_t len; bytes; NUL} aligned to 8, the items
 *      pointing into it (one allocation for all strings, not one per string);
 *      array elements: the items point at the nested bodies.
 * Nothing in a const accessor writes memory, so one value may be read from many threads.
 *
 * Every function here that can fail follows the public conventions: 0 or a negative TD_E* code,
 * *err filled when not NULL. The messages have no file name; decoders add it with
 * td__err_prefix().
 */
#ifndef TD_VALUE_INTERNAL_H
#define TD_VALUE_INTERNAL_H

#include "tensord.h"

#include <stddef.h>
#include <stdint.h>

typedef struct td__str td__str; /* a string record (value.c) */
typedef struct td__arr td__arr; /* an array body (value.c) */

struct td_value {
    uint8_t type;  /* td_meta_type */
    uint8_t owned; /* 1: allocated alone by a td_value_new_* builder; 0: inside a container */
    union {
        uint64_t u; /* UINT8..UINT64, BOOL (0/1) */
        int64_t i;  /* INT8..INT64 */
        float f32;
        double f64;
        td__str *s;
        td__arr *a;
    } v;
};

/* td_meta_type_name(t) for messages: never NULL ("(invalid type)"). */
const char *td__type_label(unsigned t);

/* Bytes of the C type that stores a scalar of type t (bool: 1); 0 for strings, arrays and
 * values outside the enum. */
size_t td__type_size(td_meta_type t);

/* 1 when t is one of the scalar types (numbers and bool), 0 otherwise. */
int td__type_is_scalar(td_meta_type t);

/* A new array value of n scalars of elem_type (a scalar type), copied from items packed as their
 * C types (see td_meta_set_scalar). Bool bytes other than 0 are stored as 1. Returns NULL when
 * out of memory or when elem_type is not a scalar type. */
td_value *td__value_new_array_packed(td_meta_type elem_type, const void *items, size_t n);

/* Makes room for n more items in arr (any element type). The caller bounds n first (e.g. by
 * the bytes left in the file): this allocates what it is asked. TD_EINVAL when arr is not an array.
 */
int td__value_array_reserve(td_value *arr, size_t n, td_error *err);

/* Appends one scalar to an array of scalars; p points at the element type's C type. No
 * td_value is made. TD_EDTYPE when arr's elements are not scalars. */
int td__value_array_push_scalar(td_value *arr, const void *p, td_error *err);

/* Appends a copy of s[0..len) (any bytes, NUL included) to an array of strings. TD_EDTYPE when
 * arr's elements are not strings. */
int td__value_array_push_string(td_value *arr, const char *s, size_t len, td_error *err);

/* Nesting depth: 0 for a scalar or string, 1 for an array of non-arrays, 1 + the deepest item
 * (at least 2) for an array of arrays. td_value_array_push refuses anything deeper than
 * TD_META_MAX_DEPTH with TD_ELIMIT. */
unsigned td__value_depth(const td_value *v);

/* Writes the scalar v as its C type to p (td__type_size(v->type) bytes), exactly as the value
 * holds it: a float keeps its bits (a signalling NaN stays one). */
void td__scalar_store(void *p, const td_value *v);

/* Deep equality: same type, same bits (floats are compared bit for bit, so NaN equals the same
 * NaN and 0.0 differs from -0.0), same strings, same arrays. NULL equals only NULL. */
int td__value_equal(const td_value *a, const td_value *b);

/* ---------------------------------------------------------------------------------------------
 * For td_meta: values held in place inside a container (owned == 0). The init functions fill *v
 * whole (owned 0); on failure *v holds nothing to free.
 */

/* Reads a scalar of type t (a scalar type) from its C type at p into v's type and payload
 * (v->owned is left as it is). */
void td__scalar_load(td_value *v, td_meta_type t, const void *p);

/* *v becomes a copy of s[0..len) (s may be NULL when len is 0). TD_ENOMEM. */
int td__value_init_string(td_value *v, const char *s, size_t len);

/* *v becomes an array of copies of the n strings items[i] (lens[i] bytes each, or NUL-terminated
 * when lens is NULL), all in one blob sized up front. Messages name `key`. TD_EINVAL for a NULL
 * item that is not empty, TD_ENOMEM. */
int td__value_init_strings(td_value *v, const char *const *items, const size_t *lens, size_t n,
                           const char *key, td_error *err);

/* Deep-copies src's payload into *dst (type too; dst->owned is left as it is). TD_ENOMEM, and
 * then dst holds nothing to free. */
int td__value_copy_into(td_value *dst, const td_value *src);

/* Frees what v's payload owns (not v itself) and zeroes the payload. */
void td__value_clear(td_value *v);

#endif

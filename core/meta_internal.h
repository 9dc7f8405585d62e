/*
 * meta_internal.h - internal helpers around td_meta / td_value (core/meta.c) for the codecs
 * and the wire protocol: fast construction without a temporary td_value per item, pre-sizing,
 * and comparison.
 *
 * Representation (for whoever reads meta.c):
 *   1. A td_value is 16 bytes: its type and an 8-byte payload (the scalar itself, a pointer to a
 *      length-prefixed string record, or a pointer to an array body).
 *   2. A td_meta is an array of {key, hash, td_value} in insertion order plus an open-addressing
 *      index of entry numbers (linear probing, load <= 1/2, seeded hash). Lookups are O(1).
 *   3. An array body holds `len` item td_values (so that td_value_array_at can hand out a
 *      pointer for every element type without building anything on a const path), plus:
 *      numeric elements: the same values packed as their C type (td_value_array_data);
 *      string elements: one blob of records {size_t len; bytes; NUL} aligned to 8, the items
 *      pointing into it (one allocation for all strings, not one per string);
 *      array elements: the items point at the nested bodies.
 * Nothing in a const accessor writes memory, so one td_meta may be read from many threads.
 *
 * Every function here follows the public conventions: 0 or a negative TD_E* code, *err filled
 * when not NULL. The messages have no file name; decoders add it with td__err_prefix().
 */
#ifndef TD_META_INTERNAL_H
#define TD_META_INTERNAL_H

#include "tensord.h"

#include <stddef.h>
#include <stdint.h>

/* Bytes of the C type that stores a scalar of type t (bool: 1); 0 for strings, arrays and
 * values outside the enum. */
size_t td__type_size(td_type t);

/* 1 when t is one of the scalar types (numbers and bool), 0 otherwise. */
int td__type_is_scalar(td_type t);

/* Appends key[0..keylen) -> v at the end of m. The key is copied; the value is TAKEN: after the
 * call v belongs to m (on success) or has been freed (on failure), whatever the outcome.
 * Unlike the public setters, an existing key is refused with TD_EDUP (decoders refuse files
 * with duplicate keys). An empty key or one containing a NUL byte is TD_EFORMAT; v == NULL is
 * TD_EINVAL; a v that is itself part of another meta or array is TD_EINVAL (and left alone). */
int td__meta_add_taking(td_meta *m, const char *key, size_t keylen, td_value *v, td_error *err);

/* Makes room for n more entries so that the next n appends do not reallocate. n must already be
 * bounded by the caller (e.g. by the bytes left in the file): this allocates what it is asked. */
int td__meta_reserve(td_meta *m, size_t n, td_error *err);

/* A new array value of n scalars of elem_type (a scalar type), copied from items packed as their
 * C types (see td_meta_set_scalar). Bool bytes other than 0 are stored as 1. Returns NULL when
 * out of memory or when elem_type is not a scalar type. */
td_value *td__value_new_array_packed(td_type elem_type, const void *items, size_t n);

/* Makes room for n more items in arr (any element type). As td__meta_reserve: the caller bounds
 * n first. TD_EINVAL when arr is not an array. */
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

/* A deep copy of m without the keys that start with prefix (NULL or "": every key), or NULL
 * when out of memory or when m is NULL. */
td_meta *td__meta_copy_without(const td_meta *m, const char *prefix);

/* Same keys in the same order with equal values. NULL equals only NULL. */
int td__meta_equal(const td_meta *a, const td_meta *b);

#endif

/*
 * meta_internal.h - internal helpers around td_meta (core/meta.c) for the codecs and the wire
 * protocol: appending without the public setters' copies, pre-sizing, comparison. It includes
 * value_internal.h, the helpers around td_value, since every user of one needs the other.
 *
 * Representation (for whoever reads meta.c): a td_meta is an array of {key, hash, td_value} in
 * insertion order plus an open-addressing index of entry numbers (linear probing, load <= 1/2),
 * hashed with td__hash (hash.h) under a seed of its own. Lookups are O(1). Nothing in a const
 * accessor writes memory, so one td_meta may be read from many threads.
 *
 * Every function here follows the public conventions: 0 or a negative TD_E* code, *err filled
 * when not NULL. The messages have no file name; decoders add it with td__err_prefix().
 */
#ifndef TD_META_INTERNAL_H
#define TD_META_INTERNAL_H

#include "tensord.h"
#include "value_internal.h"

#include <stddef.h>
#include <stdint.h>

/* Appends key[0..keylen) -> v at the end of m. The key is copied; the value is TAKEN: after the
 * call v belongs to m (on success) or has been freed (on failure), whatever the outcome.
 * Unlike the public setters, an existing key is refused with TD_EDUP (decoders refuse files
 * with duplicate keys). An empty key or one containing a NUL byte is TD_EFORMAT; v == NULL is
 * TD_EINVAL; a v that is itself part of another meta or array is TD_EINVAL (and left alone). */
int td__meta_add_taking(td_meta *m, const char *key, size_t keylen, td_value *v, td_error *err);

/* Makes room for n more entries so that the next n appends do not reallocate. n must already be
 * bounded by the caller (e.g. by the bytes left in the file): this allocates what it is asked. */
int td__meta_reserve(td_meta *m, size_t n, td_error *err);

/* A deep copy of m without the keys that start with prefix (NULL or "": every key), or NULL
 * when out of memory or when m is NULL. */
td_meta *td__meta_copy_without(const td_meta *m, const char *prefix);

/* Same keys in the same order with equal values. NULL equals only NULL. */
int td__meta_equal(const td_meta *a, const td_meta *b);

#endif

/*
 * meta.c - td_meta: typed metadata, an ordered list of key -> td_value (value.c) with a hash
 * index on the keys. See tensord.h for the public contract and meta_internal.h for the
 * representation and the helpers the decoders use.
 *
 * Keys come from hostile files, so the index is hashed with td__hash (hash.h) under a seed of
 * each meta's own: a file cannot be built to make every key of a meta land in one slot.
 */
#include "common.h"
#include "hash.h"
#include "meta_internal.h"

#include <stdlib.h>
#include <string.h>

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
    td__hash_seed seed; /* td__hash_seed_for(this meta) */
};

/* Entries are indexed by uint32 slots. */
#define TD__META_MAX_ENTRIES ((size_t)UINT32_MAX - 1)

/* ---------------------------------------------------------------------------------------------
 * Meta: hash index
 */

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
    uint64_t h = td__hash(m->seed, key, keylen);
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
        m->seed = td__hash_seed_for(m);
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
    size_t i = td__meta_find(m, key, n, td__hash(m->seed, key, n));
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
    td_value c;
    if (td__value_init_string(&c, s, len))
        return td__err(err, TD_ENOMEM, "metadata: out of memory for a string of %zu bytes", len);
    return td__meta_put(m, key, strlen(key), c, 1, err);
}

int td_meta_set_scalar(td_meta *m, const char *key, td_meta_type type, const void *value,
                       td_error *err)
{
    int rc = td__check_key(key, err);
    if (rc)
        return rc;
    if (!m || !value)
        return td__err(err, TD_EINVAL, "metadata: set_scalar: no meta or no value");
    if (!td__type_is_scalar(type))
        return td__err(err, TD_EINVAL, "metadata: key '%s': %s is not a scalar type", key,
                       td__type_label(type));
    td_value c;
    td__scalar_load(&c, type, value);
    return td__meta_put(m, key, strlen(key), c, 1, err);
}

int td_meta_set_array(td_meta *m, const char *key, td_meta_type elem_type, const void *items,
                      size_t n, td_error *err)
{
    int rc = td__check_key(key, err);
    if (rc)
        return rc;
    if (!m || (!items && n))
        return td__err(err, TD_EINVAL, "metadata: set_array: no meta or no items");
    if (!td__type_is_scalar(elem_type))
        return td__err(err, TD_EINVAL,
                       "metadata: key '%s': set_array takes scalar element types, not %s", key,
                       td__type_label(elem_type));
    if (n > SIZE_MAX / sizeof(td_value))
        return td__err(err, TD_ENOMEM, "metadata: key '%s': %zu items", key, n);
    td_value *v = td__value_new_array_packed(elem_type, items, n);
    if (!v)
        return td__err(err, TD_ENOMEM, "metadata: key '%s': out of memory for %zu items", key, n);
    td_value c = *v;
    free(v);
    return td__meta_put(m, key, strlen(key), c, 1, err);
}

int td_meta_set_strings(td_meta *m, const char *key, const char *const *items, const size_t *lens,
                        size_t n, td_error *err)
{
    int rc = td__check_key(key, err);
    if (rc)
        return rc;
    if (!m || (!items && n))
        return td__err(err, TD_EINVAL, "metadata: set_strings: no meta or no items");
    td_value c;
    rc = td__value_init_strings(&c, items, lens, n, key, err);
    if (rc)
        return rc;
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
        d->hash = td__hash(c->seed, d->key, d->keylen);
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
    if (v->type != TD_META_STRING)
        return TD_EDTYPE;
    const char *p = td_value_string(v, len);
    if (s)
        *s = p;
    return 0;
}

/* TD_ERANGE when the number does not fit in int64 (or is a float that is not an integer). */
int td_meta_get_int(const td_meta *m, const char *key, int64_t *out)
{
    const td_value *v = td_meta_get(m, key);
    if (!v)
        return TD_ENOTFOUND;
    if (!td__type_is_scalar((td_meta_type)v->type))
        return TD_EDTYPE;
    return td_value_get_int(v, out);
}

int td_meta_get_float(const td_meta *m, const char *key, double *out)
{
    const td_value *v = td_meta_get(m, key);
    if (!v)
        return TD_ENOTFOUND;
    if (!td__type_is_scalar((td_meta_type)v->type))
        return TD_EDTYPE;
    return td_value_get_float(v, out);
}

int td_meta_get_array(const td_meta *m, const char *key, td_meta_type *elem_type, size_t *n,
                      const void **items)
{
    const td_value *v = td_meta_get(m, key);
    if (!v)
        return TD_ENOTFOUND;
    if (v->type != TD_META_ARRAY || td_value_array_type(v) == TD_META_ARRAY)
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
    if (v->type != TD_META_ARRAY || td_value_array_type(v) != TD_META_STRING)
        return TD_EDTYPE;
    if (i >= td_value_array_len(v))
        return TD_ERANGE;
    const char *p = td_value_string(td_value_array_at(v, i), len);
    if (s)
        *s = p;
    return 0;
}

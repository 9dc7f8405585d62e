/*
 * dict.c - td_dict: an ordered list of (name, array) with a hash index on the names.
 *
 * The index is open addressing with linear probing over entry numbers (+1, 0 = empty), sized to
 * a power of two at least twice the entry count, hashed with td__hash (core/hash.h) under a seed
 * of each dict's own: names come from hostile files, and a file cannot pick names that pile up
 * in one slot without knowing the seed. Lookups on the 10,000-tensor dicts of large models stay
 * O(1).
 *
 * A dict a daemon load made stands on the load's flat table (tab.c): the first entries' names
 * are the table's own bytes, not copies, and lookups go through the table's index, until
 * something is added: the dict then builds an index of its own over every name. A dict of a
 * model a td_client keeps borrows the kept model's names the same way, and starts with a copy
 * of an index made once for them (td__dict_index).
 */
#include "client.h"
#include "common.h"
#include "hash.h"

#include <stdlib.h>

typedef struct td__dict_entry {
    char *name; /* owned (but borrowed below nborrowed); NULL for unnamed entries */
    td_array *a;
} td__dict_entry;

struct td_dict {
    td__dict_entry *v;
    size_t n, cap;
    uint32_t *index; /* entry number + 1, or 0; NULL while lookups use tab's index */
    size_t index_cap;
    td__hash_seed seed;  /* td__hash_seed_for(this dict) */
    const td__ftab *ft;  /* entries below nborrowed have its names, in its order; or NULL */
    td__region *ft_keep; /* held: what keeps ft's bytes (its mapping), or the borrowed names */
    size_t nborrowed;
};

td_dict *td_dict_new(void)
{
    td_dict *d = calloc(1, sizeof(td_dict));
    if (d)
        d->seed = td__hash_seed_for(d);
    return d;
}

void td_dict_free(td_dict *d)
{
    if (!d)
        return;
    for (size_t i = d->nborrowed; i < d->n; i++)
        free(d->v[i].name);
    if (d->n)
        td__arrays_release(&d->v[0].a, d->n, sizeof d->v[0]);
    free(d->v);
    free(d->index);
    td__region_release(d->ft_keep);
    free(d);
}

int td__dict_over_ftab(const td__ftab *ft, td__region *keep, td_array **arrays, size_t n,
                       td_dict **out, td_error *err)
{
    td_dict *d = td_dict_new();
    if (d && n && !(d->v = malloc(n * sizeof *d->v))) {
        free(d);
        d = NULL;
    }
    if (!d) {
        for (size_t i = 0; i < n; i++)
            td_array_release(arrays[i]);
        return td__err(err, TD_ENOMEM, "dict: out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        d->v[i].name = (char *)td__ftab_name(ft, (uint32_t)i); /* never written nor freed */
        d->v[i].a = arrays[i];
    }
    d->n = d->cap = d->nborrowed = n;
    d->ft = ft;
    d->ft_keep = td__region_retain(keep);
    *out = d;
    return 0;
}

/* A name index made once for names that many dicts share (a model a td_client keeps): what
 * td__dict_reindex would build for them, under a seed of its own, copied into each dict. */
struct td__dict_index {
    td__hash_seed seed;
    size_t cap;
    uint32_t slots[];
};

int td__dict_index_new(const char *const *names, size_t n, td__dict_index **out)
{
    size_t cap = 16;
    while (cap < n * 2)
        cap *= 2;
    if (n >= UINT32_MAX - 1)
        return TD_ELIMIT;
    td__dict_index *ix = calloc(1, sizeof *ix + cap * sizeof *ix->slots);
    if (!ix)
        return TD_ENOMEM;
    ix->seed = td__hash_seed_for(ix);
    ix->cap = cap;
    for (size_t i = 0; i < n; i++) {
        if (!names[i])
            continue;
        size_t k = (size_t)td__hash(ix->seed, names[i], strlen(names[i])) & (cap - 1);
        for (; ix->slots[k]; k = (k + 1) & (cap - 1)) {
            if (strcmp(names[ix->slots[k] - 1], names[i]) == 0) {
                free(ix);
                return TD_EDUP;
            }
        }
        ix->slots[k] = (uint32_t)(i + 1);
    }
    *out = ix;
    return 0;
}

void td__dict_index_free(td__dict_index *ix)
{
    free(ix);
}

int td__dict_over_index(const char *const *names, size_t n, const td__dict_index *ix,
                        td__region *keep, td_array **arrays, td_dict **out, td_error *err)
{
    td_dict *d = calloc(1, sizeof *d);
    td__dict_entry *v = n ? malloc(n * sizeof *v) : NULL;
    uint32_t *index = malloc(ix->cap * sizeof *index);
    if (!d || (n && !v) || !index) {
        free(d);
        free(v);
        free(index);
        for (size_t i = 0; i < n; i++)
            td_array_release(arrays[i]);
        return td__err(err, TD_ENOMEM, "dict: out of memory");
    }
    d->v = v;
    d->index = memcpy(index, ix->slots, ix->cap * sizeof *index);
    d->index_cap = ix->cap;
    d->seed = ix->seed; /* the index's: a name added later is hashed as the copied ones were */
    for (size_t i = 0; i < n; i++) {
        d->v[i].name = (char *)names[i]; /* never written nor freed: keep's */
        d->v[i].a = arrays[i];
    }
    d->n = d->cap = d->nborrowed = n;
    d->ft_keep = td__region_retain(keep);
    *out = d;
    return 0;
}

/* Slot of name in the index, or of the empty slot where it would go. */
static size_t td__dict_slot(const td_dict *d, const char *name)
{
    size_t mask = d->index_cap - 1, i = (size_t)td__hash(d->seed, name, strlen(name)) & mask;
    while (d->index[i] && strcmp(d->v[d->index[i] - 1].name, name) != 0)
        i = (i + 1) & mask;
    return i;
}

static int td__dict_reindex(td_dict *d, size_t want)
{
    size_t cap = 16;
    while (cap < want * 2)
        cap *= 2;
    uint32_t *idx = calloc(cap, sizeof *idx);
    if (!idx)
        return TD_ENOMEM;
    free(d->index);
    d->index = idx;
    d->index_cap = cap;
    for (size_t i = 0; i < d->n; i++)
        if (d->v[i].name)
            d->index[td__dict_slot(d, d->v[i].name)] = (uint32_t)(i + 1);
    return 0;
}

int td__dict_reserve(td_dict *d, size_t n)
{
    if (n > d->cap) {
        td__dict_entry *v = realloc(d->v, n * sizeof *v);
        if (!v)
            return TD_ENOMEM;
        d->v = v;
        d->cap = n;
    }
    if (n * 2 > d->index_cap && td__dict_reindex(d, n))
        return TD_ENOMEM;
    return 0;
}

/* Adds a under name (NULL: unnamed), storing `owned` as the name when it is not NULL (it then
 * holds the same text, and is the dict's on success only) and a copy otherwise. */
static int td__dict_insert(td_dict *d, const char *name, char *owned, const td_array *a,
                           td_error *err)
{
    if (!d || !a)
        return td__err(err, TD_EINVAL, "dict: NULL %s", d ? "array" : "dict");
    if (d->n >= UINT32_MAX - 1)
        return td__err(err, TD_ELIMIT, "dict: too many entries");
    if (name && !*name)
        return td__err(err, TD_EINVAL, "dict: empty name");
    if (td__dict_reserve(d, d->n == d->cap ? (d->cap ? d->cap * 2 : 16) : d->cap))
        return td__err(err, TD_ENOMEM, "dict: out of memory");
    char *copy = NULL;
    if (name) {
        size_t slot = td__dict_slot(d, name);
        if (d->index[slot]) {
            char q[80];
            return td__err(err, TD_EDUP, "dict: name '%s' already present",
                           td__quote(name, strlen(name), q, sizeof q));
        }
        if (!(copy = owned ? owned : strdup(name)))
            return td__err(err, TD_ENOMEM, "dict: out of memory");
        d->index[slot] = (uint32_t)(d->n + 1);
    }
    d->v[d->n].name = copy;
    d->v[d->n].a = td_array_retain(a);
    d->n++;
    return 0;
}

static int td__dict_add(td_dict *d, const char *name, const td_array *a, td_error *err)
{
    return td__dict_insert(d, name, NULL, a, err);
}

int td__dict_set_taking(td_dict *d, char *name, const td_array *a, td_error *err)
{
    if (!name)
        return td__err(err, TD_EINVAL, "dict: NULL name");
    return td__dict_insert(d, name, name, a, err);
}

int td_dict_set(td_dict *d, const char *name, const td_array *a, td_error *err)
{
    if (!name)
        return td__err(err, TD_EINVAL, "dict: NULL name (use td_dict_push for unnamed arrays)");
    return td__dict_add(d, name, a, err);
}

int td_dict_push(td_dict *d, const td_array *a, td_error *err)
{
    return td__dict_add(d, NULL, a, err);
}

size_t td_dict_size(const td_dict *d)
{
    return d ? d->n : 0;
}

const td_array *td_dict_get(const td_dict *d, const char *name)
{
    if (!d || !name)
        return NULL;
    if (!d->index && d->ft) {
        int64_t i = td__ftab_find(d->ft, name, strlen(name));
        return i >= 0 ? d->v[i].a : NULL;
    }
    if (!d->index_cap)
        return NULL;
    uint32_t k = d->index[td__dict_slot(d, name)];
    return k ? d->v[k - 1].a : NULL;
}

const td_array *td_dict_at(const td_dict *d, size_t i, const char **name)
{
    if (!d || i >= d->n)
        return NULL;
    if (name)
        *name = d->v[i].name;
    return d->v[i].a;
}

/*
 * table.c - the tensor table (see table.h).
 */
#include "table.h"
#include "common.h"
#include "dtype.h"
#include "meta_internal.h"

#include <stdlib.h>
#include <string.h>

void td__table_init(td__table *t, td_format format)
{
    memset(t, 0, sizeof *t);
    t->format = format;
}

void td__table_destroy(td__table *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->entries[i].name);
        free(t->entries[i].shape);
    }
    free(t->entries);
    td_meta_free(t->meta);
    t->entries = NULL;
    t->meta = NULL;
    t->n = t->cap = 0;
}

static int td__src_equal(const td__src *a, const td__src *b)
{
    return a->offset == b->offset && a->nbytes == b->nbytes && a->inflated == b->inflated &&
           a->skip == b->skip && a->crc32 == b->crc32 && a->block == b->block &&
           a->elems == b->elems && a->row_elems == b->row_elems;
}

int td__table_equal(const td__table *a, const td__table *b)
{
    if (a->format != b->format || a->n != b->n || !td__meta_equal(a->meta, b->meta))
        return 0;
    for (size_t i = 0; i < a->n; i++) {
        const td__entry *x = &a->entries[i], *y = &b->entries[i];
        if ((x->name == NULL) != (y->name == NULL) || (x->name && strcmp(x->name, y->name)) ||
            x->dtype != y->dtype || x->ndim != y->ndim || x->region != y->region ||
            x->file != y->file || x->offset != y->offset || x->nbytes != y->nbytes ||
            x->layout != y->layout ||
            (x->ndim && memcmp(x->shape, y->shape, x->ndim * sizeof *x->shape)) ||
            (x->layout && !td__src_equal(&x->src, &y->src)))
            return 0;
    }
    return 1;
}

int td__table_reserve(td__table *t, size_t cap, td_error *err)
{
    if (cap <= t->cap)
        return 0;
    if (cap > SIZE_MAX / sizeof *t->entries)
        return td__err(err, TD_ENOMEM, "tensor table: too many entries (%zu)", cap);
    td__entry *e = realloc(t->entries, cap * sizeof *e);
    if (!e)
        return td__err(err, TD_ENOMEM, "tensor table: out of memory for %zu entries", cap);
    t->entries = e;
    t->cap = cap;
    return 0;
}

td__entry *td__table_add(td__table *t, const char *name, size_t name_len, td_error *err)
{
    if (t->n == t->cap && td__table_reserve(t, t->cap ? t->cap * 2 : 16, err))
        return NULL;
    td__entry *e = &t->entries[t->n];
    memset(e, 0, sizeof *e);
    if (name) {
        if (memchr(name, '\0', name_len))
            return td__err(err, TD_EFORMAT, "tensor name contains a NUL byte"), NULL;
        e->name = malloc(name_len + 1);
        if (!e->name)
            return td__err(err, TD_ENOMEM, "tensor table: out of memory for a name"), NULL;
        memcpy(e->name, name, name_len);
        e->name[name_len] = '\0';
    }
    t->n++;
    return e;
}

int td__entry_set_shape(td__entry *e, uint32_t ndim, const int64_t *shape, td_error *err)
{
    if (ndim > TD_MAX_DIMS)
        return td__err(err, TD_ELIMIT, "%u dimensions, at most %d supported", ndim, TD_MAX_DIMS);
    free(e->shape);
    e->shape = NULL;
    e->ndim = 0;
    if (ndim) {
        e->shape = malloc(ndim * sizeof *shape);
        if (!e->shape)
            return td__err(err, TD_ENOMEM, "tensor table: out of memory for a shape");
        memcpy(e->shape, shape, ndim * sizeof *shape);
    }
    e->ndim = ndim;
    return 0;
}

static int td__name_cmp(const void *a, const void *b)
{
    const td__entry *x = *(const td__entry *const *)a, *y = *(const td__entry *const *)b;
    if (!x->name || !y->name)
        return (x->name != NULL) - (y->name != NULL);
    return strcmp(x->name, y->name);
}

int td__table_check_unique(const td__table *t, const char *file, td_error *err)
{
    if (t->n < 2)
        return 0;
    const td__entry **v = malloc(t->n * sizeof *v);
    if (!v)
        return td__err(err, TD_ENOMEM, "%s: out of memory checking %zu names", file, t->n);
    for (size_t i = 0; i < t->n; i++)
        v[i] = &t->entries[i];
    qsort(v, t->n, sizeof *v, td__name_cmp);
    int rc = 0;
    for (size_t i = 1; i < t->n; i++) {
        if (v[i]->name && v[i - 1]->name && strcmp(v[i]->name, v[i - 1]->name) == 0) {
            char q[80];
            rc = td__err(err, TD_EDUP, "%s: tensor '%s' appears twice", file,
                         td__quote(v[i]->name, strlen(v[i]->name), q, sizeof q));
            break;
        }
    }
    free(v);
    return rc;
}

int td__shape_nbytes(td_dtype dtype, uint32_t ndim, const int64_t *shape, uint64_t *nbytes,
                     td_error *err)
{
    const td__dtype_desc *d = td__dtype_info(dtype);
    if (!d)
        return td__err(err, TD_EDTYPE, "dtype %d is not a valid dtype", (int)dtype);
    if (ndim > TD_MAX_DIMS)
        return td__err(err, TD_ELIMIT, "%u dimensions, at most %d supported", ndim, TD_MAX_DIMS);
    /* The element count must fit in int64 even when another dimension is 0 (product of the
     * non-zero sizes), so that td_array_size never overflows. */
    uint64_t n = 1, nonzero = 1;
    for (uint32_t i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return td__err(err, TD_ERANGE, "shape[%u] = %lld is negative", i, (long long)shape[i]);
        if (shape[i] &&
            (!td__mul_u64(nonzero, (uint64_t)shape[i], &nonzero) || nonzero > (uint64_t)INT64_MAX))
            return td__err(err, TD_ERANGE, "shape product overflows at shape[%u] = %lld", i,
                           (long long)shape[i]);
        n *= (uint64_t)shape[i];
    }
    if (d->block_elems > 1) {
        int64_t inner = ndim ? shape[ndim - 1] : 1;
        if (inner % d->block_elems)
            return td__err(err, TD_EFORMAT,
                           "innermost size %lld is not a multiple of %s's block of %u",
                           (long long)inner, d->name, d->block_elems);
        n /= d->block_elems;
    }
    if (!td__mul_u64(n, d->block_bytes, &n) || n > (uint64_t)INT64_MAX)
        return td__err(err, TD_ERANGE, "byte size of the shape overflows");
    *nbytes = n;
    return 0;
}

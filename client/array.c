/*
 * array.c - td_array and the regions arrays view into.
 *
 * An array is one allocation: the header, then its shape. Its bytes live either in memory the
 * array owns (td_array_new), in caller memory (td_array_wrap), or inside a region it holds a
 * reference to (td_load's views). The views of one daemon load are made together, in one block
 * (td__ablock): one allocation for all of them, which holds their regions and the load's lease
 * until the last of its arrays goes.
 */
#include "client.h"
#include "common.h"
#include "dtype.h"

#include <stdlib.h>
#include <sys/mman.h>

struct td_array {
    atomic_long refs;
    td_dtype dtype;
    int ndim;
    int writable;
    void *data;
    uint64_t nbytes;
    td__region *region;                  /* held when the data is a view */
    td__ablock *block;                   /* the block this array lives in, or NULL */
    void (*release)(void *ctx, void *p); /* wrap: the caller's release */
    void *ctx;
    int owns_data; /* data was allocated by td_array_new */
    int64_t shape[];
};

static const uint8_t td__empty_data[64] __attribute__((aligned(64)));

td__region *td__region_new(void *base, size_t len, void (*release)(void *, void *, size_t),
                           void *ctx)
{
    td__region *r = malloc(sizeof *r);
    if (!r)
        return NULL;
    atomic_init(&r->refs, 1);
    r->base = base;
    r->len = len;
    r->release = release;
    r->ctx = ctx;
    r->provenance = TD_PROVENANCE_EMBEDDED;
    return r;
}

td__region *td__region_retain(td__region *r)
{
    atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
    return r;
}

td__region *td__region_try_retain(td__region *r)
{
    long n = atomic_load_explicit(&r->refs, memory_order_relaxed);
    while (n > 0)
        if (atomic_compare_exchange_weak_explicit(&r->refs, &n, n + 1, memory_order_acquire,
                                                  memory_order_relaxed))
            return r;
    return NULL;
}

void td__region_release(td__region *r)
{
    if (!r || atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (r->release)
        r->release(r->ctx, r->base, r->len);
    free(r);
}

static void td__munmap(void *ctx, void *base, size_t len)
{
    (void)ctx;
    munmap(base, len);
}

td__region *td__region_mmap(void *base, size_t len)
{
    return td__region_new(base, len, td__munmap, NULL);
}

/* Checks dtype and shape, and computes the byte size. */
static int td__array_check(td_dtype dtype, int ndim, const int64_t *shape, uint64_t *nbytes,
                           td_error *err)
{
    if (ndim < 0 || ndim > TD_MAX_DIMS)
        return td__err(err, TD_EINVAL, "array: %d dimensions, must be 0..%d", ndim, TD_MAX_DIMS);
    if (ndim && !shape)
        return td__err(err, TD_EINVAL, "array: shape is NULL for %d dimensions", ndim);
    int rc = td__shape_nbytes(dtype, (uint32_t)ndim, shape, nbytes, err);
    if (rc)
        return td__err_prefix(err, rc, "array");
    if (*nbytes > SIZE_MAX)
        return td__err(err, TD_ERANGE, "array: %llu bytes do not fit in memory",
                       (unsigned long long)*nbytes);
    return 0;
}

static td_array *td__array_header(td_dtype dtype, int ndim, const int64_t *shape, uint64_t nbytes)
{
    td_array *a = malloc(sizeof *a + (size_t)ndim * sizeof(int64_t));
    if (!a)
        return NULL;
    memset(a, 0, sizeof *a);
    atomic_init(&a->refs, 1);
    a->dtype = dtype;
    a->ndim = ndim;
    a->nbytes = nbytes;
    if (ndim)
        memcpy(a->shape, shape, (size_t)ndim * sizeof(int64_t));
    return a;
}

int td_array_new(td_dtype dtype, int ndim, const int64_t *shape, const void *data, td_array **out,
                 td_error *err)
{
    uint64_t nbytes;
    int rc = td__array_check(dtype, ndim, shape, &nbytes, err);
    if (rc)
        return rc;
    td_array *a = td__array_header(dtype, ndim, shape, nbytes);
    size_t cap = ((size_t)nbytes + 63) / 64 * 64;
    void *p = a ? aligned_alloc(64, cap ? cap : 64) : NULL;
    if (!p) {
        free(a);
        return td__err(err, TD_ENOMEM, "array: out of memory for %llu bytes",
                       (unsigned long long)nbytes);
    }
    if (data)
        memcpy(p, data, (size_t)nbytes);
    else
        memset(p, 0, (size_t)nbytes);
    a->data = p;
    a->owns_data = 1;
    a->writable = 1;
    *out = a;
    return 0;
}

int td_array_wrap(td_dtype dtype, int ndim, const int64_t *shape, void *data,
                  void (*release)(void *ctx, void *data), void *ctx, td_array **out, td_error *err)
{
    uint64_t nbytes;
    int rc = td__array_check(dtype, ndim, shape, &nbytes, err);
    if (rc)
        return rc;
    if (!data && nbytes)
        return td__err(err, TD_EINVAL, "array: data is NULL for %llu bytes",
                       (unsigned long long)nbytes);
    td_array *a = td__array_header(dtype, ndim, shape, nbytes);
    if (!a)
        return td__err(err, TD_ENOMEM, "array: out of memory");
    a->data = data ? data : (void *)td__empty_data;
    a->release = data ? release : NULL;
    a->ctx = ctx;
    a->writable = data != NULL;
    *out = a;
    return 0;
}

int td__array_view(td__region *r, td_dtype dtype, uint32_t ndim, const int64_t *shape,
                   const void *data, uint64_t nbytes, td_array **out, td_error *err)
{
    td_array *a = td__array_header(dtype, (int)ndim, shape, nbytes);
    if (!a)
        return td__err(err, TD_ENOMEM, "array: out of memory");
    a->data = nbytes ? (void *)data : (void *)td__empty_data;
    a->region = td__region_retain(r);
    *out = a;
    return 0;
}

int td__array_alloc(td_dtype dtype, uint32_t ndim, const int64_t *shape, td_array **out,
                    td_error *err)
{
    return td_array_new(dtype, (int)ndim, shape, NULL, out, err);
}

td_array *td_array_retain(const td_array *a)
{
    /* Arrays are always heap objects of this library, never const-defined: the count may
     * change through a const pointer. */
    td_array *m = (td_array *)a;
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
    return m;
}

struct td__ablock {
    atomic_long refs; /* live arrays, plus the builder's until td__ablock_done */
    td_provenance provenance;
    void (*end)(void *ctx); /* called once the last array is gone, after the regions went */
    void *ctx;
    size_t nregions;
    td__region **regions;  /* held; inside the block's allocation */
    uint8_t *next, *limit; /* room for the arrays still to add */
    size_t made;           /* arrays made and not yet counted in refs (td__ablock_done) */
};

/* Bytes of an array header with ndim sizes, padded so that the next one stays aligned. */
static size_t td__array_bytes(uint32_t ndim)
{
    size_t a = _Alignof(td_array), n = sizeof(td_array) + (size_t)ndim * sizeof(int64_t);
    return (n + a - 1) / a * a;
}

/* A block with room for body bytes of arrays after its head (the regions, each retained), one
 * reference of the builder's; NULL when out of memory (nothing retained). */
static td__ablock *td__ablock_alloc(size_t body, td__region *const *regions, size_t nregions,
                                    td_provenance provenance, void (*end)(void *ctx), void *ctx)
{
    size_t a = _Alignof(td_array);
    size_t head = (sizeof(td__ablock) + nregions * sizeof(td__region *) + a - 1) / a * a;
    td__ablock *b = malloc(head + body);
    if (!b)
        return NULL;
    atomic_init(&b->refs, 1);
    b->provenance = provenance;
    b->end = end;
    b->ctx = ctx;
    b->nregions = nregions;
    b->made = 0;
    b->regions = (td__region **)(b + 1);
    for (size_t i = 0; i < nregions; i++)
        b->regions[i] = td__region_retain(regions[i]);
    b->next = (uint8_t *)b + head;
    b->limit = b->next + body;
    return b;
}

td__ablock *td__ablock_new(size_t n, size_t ndims, td__region *const *regions, size_t nregions,
                           td_provenance provenance, void (*end)(void *ctx), void *ctx)
{
    size_t body = n * td__array_bytes(0) + ndims * sizeof(int64_t) + n * _Alignof(td_array);
    return td__ablock_alloc(body, regions, nregions, provenance, end, ctx);
}

td_array *td__ablock_add(td__ablock *b, td_dtype dtype, uint32_t ndim, const int64_t *shape,
                         const void *data, uint64_t nbytes)
{
    size_t size = td__array_bytes(ndim);
    if (size > (size_t)(b->limit - b->next))
        return NULL; /* more than td__ablock_new was told: a caller's bug */
    td_array *a = (td_array *)(void *)b->next;
    b->next += size;
    memset(a, 0, sizeof *a);
    atomic_init(&a->refs, 1);
    a->dtype = dtype;
    a->ndim = (int)ndim;
    a->nbytes = nbytes;
    a->data = nbytes ? (void *)data : (void *)td__empty_data;
    a->block = b;
    if (ndim)
        memcpy(a->shape, shape, (size_t)ndim * sizeof(int64_t));
    b->made++;
    return a;
}

/* The image of a block's arrays: their headers and shapes, laid out as a block body, with each
 * array's place in the body and its bytes' place in the regions. */
struct td__ablock_image {
    size_t n, made;
    size_t body; /* bytes of the body */
    struct td__image_item {
        uint32_t at;     /* the array's offset in the body */
        uint32_t region; /* its bytes: region, offset */
        uint64_t offset;
    } * items;
    uint8_t *bytes; /* the body */
};

td__ablock_image *td__ablock_image_new(size_t n, size_t ndims)
{
    size_t a = _Alignof(td_array);
    size_t body = n * td__array_bytes(0) + ndims * sizeof(int64_t) + n * a;
    if (body > UINT32_MAX)
        return NULL;
    td__ablock_image *im = malloc(sizeof *im + n * sizeof *im->items + body + a);
    if (!im)
        return NULL;
    im->n = n;
    im->made = 0;
    im->body = 0;
    im->items = (struct td__image_item *)(im + 1);
    uintptr_t p = (uintptr_t)(im->items + n);
    im->bytes = (uint8_t *)((p + a - 1) / a * a);
    return im;
}

int td__ablock_image_add(td__ablock_image *im, td_dtype dtype, uint32_t ndim, const int64_t *shape,
                         uint32_t region, uint64_t offset, uint64_t nbytes)
{
    if (im->made == im->n)
        return -1;
    td_array *a = (td_array *)(void *)(im->bytes + im->body);
    memset(a, 0, sizeof *a);
    atomic_init(&a->refs, 1);
    a->dtype = dtype;
    a->ndim = (int)ndim;
    a->nbytes = nbytes;
    if (ndim)
        memcpy(a->shape, shape, (size_t)ndim * sizeof(int64_t));
    im->items[im->made++] = (struct td__image_item){(uint32_t)im->body, region, offset};
    im->body += td__array_bytes(ndim);
    return 0;
}

void td__ablock_image_free(td__ablock_image *im)
{
    free(im);
}

td__ablock *td__ablock_from_image(const td__ablock_image *im, td__region *const *regions,
                                  size_t nregions, td_provenance provenance, void (*end)(void *ctx),
                                  void *ctx, td_array **arrays)
{
    td__ablock *b = td__ablock_alloc(im->body, regions, nregions, provenance, end, ctx);
    if (!b)
        return NULL;
    atomic_store_explicit(&b->refs, 1 + (long)im->made, memory_order_relaxed); /* + the arrays' */
    uint8_t *body = b->next;
    memcpy(body, im->bytes, im->body);
    b->next = b->limit;
    for (size_t i = 0; i < im->made; i++) {
        const struct td__image_item *it = &im->items[i];
        td_array *x = (td_array *)(void *)(body + it->at);
        x->data =
            x->nbytes ? (uint8_t *)regions[it->region]->base + it->offset : (void *)td__empty_data;
        x->block = b;
        arrays[i] = x;
    }
    return b;
}

/* Drops n references of b; the last one ends it. */
static void td__ablock_unref(td__ablock *b, long n)
{
    if (atomic_fetch_sub_explicit(&b->refs, n, memory_order_acq_rel) != n)
        return;
    for (size_t i = 0; i < b->nregions; i++)
        td__region_release(b->regions[i]);
    if (b->end)
        b->end(b->ctx);
    free(b);
}

void td__ablock_done(td__ablock *b)
{
    if (!b)
        return;
    /* The arrays made hold it from here on: counted once, not one atomic add each. */
    atomic_fetch_add_explicit(&b->refs, (long)b->made, memory_order_relaxed);
    b->made = 0;
    td__ablock_unref(b, 1);
}

void td__arrays_release(td_array *const *a, size_t n, size_t stride)
{
    td__ablock *b = NULL;
    long dead = 0;
    for (size_t i = 0; i < n; i++) {
        td_array *x = *(td_array *const *)(const void *)((const char *)a + i * stride);
        /* Held by nobody else (a count of 1 cannot rise: only a holder could retain it), in
         * the same block as the others: it dies with no atomic operation of its own. */
        if (x && x->block && (!b || x->block == b) &&
            atomic_load_explicit(&x->refs, memory_order_acquire) == 1) {
            b = x->block;
            dead++;
        } else {
            td_array_release(x);
        }
    }
    if (b)
        td__ablock_unref(b, dead);
}

void td_array_release(td_array *a)
{
    if (!a || atomic_fetch_sub_explicit(&a->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (a->block) {
        td__ablock_unref(a->block, 1); /* the block's memory holds a: it goes with the last */
        return;
    }
    if (a->owns_data)
        free(a->data);
    else if (a->release)
        a->release(a->ctx, a->data);
    td__region_release(a->region);
    free(a);
}

td_dtype td_array_dtype(const td_array *a)
{
    return a->dtype;
}

int td_array_ndim(const td_array *a)
{
    return a->ndim;
}

const int64_t *td_array_shape(const td_array *a)
{
    return a->shape;
}

int64_t td_array_size(const td_array *a)
{
    int64_t n = 1;
    for (int i = 0; i < a->ndim; i++)
        n *= a->shape[i];
    return n;
}

uint64_t td_array_nbytes(const td_array *a)
{
    return a->nbytes;
}

const void *td_array_data(const td_array *a)
{
    return a->data;
}

td_provenance td_array_provenance(const td_array *a)
{
    if (a->block)
        return a->block->provenance;
    if (a->region)
        return a->region->provenance;
    return a->owns_data ? TD_PROVENANCE_OWNED : TD_PROVENANCE_CALLER;
}

void *td_array_data_mut(td_array *a)
{
    return a->writable ? a->data : NULL;
}

void td__array_item(const td_array *a, const char *name, td__item *item)
{
    item->name = name;
    item->dtype = a->dtype;
    item->ndim = a->ndim;
    item->shape = a->shape;
    item->data = a->data;
    item->nbytes = a->nbytes;
}

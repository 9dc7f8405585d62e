/*
 * tab.c - a daemon load's flat table on the client side: the sealed memfd mapped and validated
 * once (td__tab), and what loads build over it: the dict of views (one block of arrays, the
 * table's names and index), the metadata, or a td__table for the model loader.
 */
#include "client.h"
#include "common.h"
#include "proto.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>

/* A table is a region (its mapping) whose context is this struct: the region's count is the
 * table's, and a dict over the table holds the region alone. */
struct td__tab {
    td__region *region;
    td__ftab ft;
    /* The sizes of every entry's shape added up: what the views hold. Not ft.nshapes, which
     * only bounds each shape: entries of a table may share their sizes. */
    uint64_t ndims;
    atomic_uint dicts;                 /* dicts built over it so far (up to 2) */
    _Atomic(td__ablock_image *) image; /* from the second dict on: the views, made once */
};

static void td__tab_gone(void *ctx, void *base, size_t len)
{
    td__tab *t = ctx;
    munmap(base, len);
    td__ablock_image_free(atomic_load_explicit(&t->image, memory_order_acquire));
    free(t);
}

void td__tab_image_add(const td__tab *t, td__ablock_image *im, uint32_t first_region)
{
    const td__ftab *ft = &t->ft;
    for (uint32_t i = 0; i < ft->n; i++) {
        td__ftab_entry e;
        int64_t shape[TD_MAX_DIMS];
        td__ftab_get(ft, i, &e);
        for (uint32_t k = 0; k < e.ndim; k++)
            shape[k] = td__ftab_dim(e.shape, k);
        td__ablock_image_add(im, e.dtype, e.ndim, shape, first_region + e.region, e.offset,
                             e.nbytes);
    }
}

/* The image of t's views, made the first time a table is used twice (a table used once, as
 * td_load's are, never pays for it). NULL when out of memory: the views are then made one by
 * one. */
static td__ablock_image *td__tab_image(td__tab *t)
{
    td__ablock_image *im = atomic_load_explicit(&t->image, memory_order_acquire);
    if (im || atomic_fetch_add_explicit(&t->dicts, 1, memory_order_relaxed) == 0)
        return im;
    if (!(im = td__ablock_image_new(t->ft.n, (size_t)t->ndims)))
        return NULL;
    td__tab_image_add(t, im, 0);
    td__ablock_image *none = NULL;
    if (!atomic_compare_exchange_strong_explicit(&t->image, &none, im, memory_order_acq_rel,
                                                 memory_order_acquire)) {
        td__ablock_image_free(im); /* another thread's came first */
        im = none;
    }
    return im;
}

int td__tab_map(int fd, uint64_t size, const uint64_t *region_sizes, uint32_t nregions,
                const char *what, td__tab **out, td_error *err)
{
    /* Validated once, the bytes must never change after: only a memfd sealed against writes,
     * shrinking and growing is taken. */
    int seals = fcntl(fd, F_GET_SEALS);
    int need = F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW;
    if (seals < 0 || (seals & need) != need)
        return td__err(err, TD_EPROTO, "%s: the table's memfd is not sealed (seals 0x%x)", what,
                       seals < 0 ? 0 : seals);
    /* The memfd's real size: a sealed file cannot change it, and a mapping past it would
     * fault. */
    struct stat st;
    if (size < TD__FTAB_HEADER || size > TD__FTAB_MAX_BYTES || size > SIZE_MAX ||
        fstat(fd, &st) < 0 || (uint64_t)st.st_size != size)
        return td__err(err, TD_EPROTO, "%s: a table of %llu bytes in a memfd of %lld", what,
                       (unsigned long long)size, (long long)st.st_size);
    td__tab *t = malloc(sizeof *t);
    if (!t)
        return td__err(err, TD_ENOMEM, "%s: out of memory", what);
    atomic_init(&t->dicts, 0);
    atomic_init(&t->image, NULL);
    void *base = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        int e = errno;
        free(t);
        return td__err(err, td__err_from_errno(e), "%s: cannot map the table: %s", what,
                       strerror(e));
    }
    if (!(t->region = td__region_new(base, (size_t)size, td__tab_gone, t))) {
        munmap(base, (size_t)size);
        free(t);
        return td__err(err, TD_ENOMEM, "%s: out of memory", what);
    }
    int rc = td__ftab_open(base, size, region_sizes, nregions, what, &t->ft, err);
    if (rc) {
        td__tab_release(t);
        return rc;
    }
    t->ndims = 0;
    for (uint32_t i = 0; i < t->ft.n; i++) {
        td__ftab_entry e;
        td__ftab_get(&t->ft, i, &e);
        t->ndims += e.ndim;
    }
    *out = t;
    return 0;
}

td__tab *td__tab_retain(td__tab *t)
{
    td__region_retain(t->region);
    return t;
}

void td__tab_release(td__tab *t)
{
    if (t)
        td__region_release(t->region); /* the last one frees t too (td__tab_gone) */
}

const td__ftab *td__tab_ftab(const td__tab *t)
{
    return &t->ft;
}

uint64_t td__tab_ndims(const td__tab *t)
{
    return t->ndims;
}

uint64_t td__tab_bytes(const td__tab *t)
{
    return t->region->len;
}

int td__tab_to_dict(td__tab *t, td__region *const *regions, size_t nregions,
                    td_provenance provenance, void (*end)(void *ctx), void *ctx, td_dict **out,
                    td_error *err)
{
    const td__ftab *ft = &t->ft;
    td_array **arrays = ft->n ? malloc(ft->n * sizeof *arrays) : NULL;
    td__ablock_image *im = ft->n && arrays ? td__tab_image(t) : NULL;
    td__ablock *b = NULL;
    if (im)
        b = td__ablock_from_image(im, regions, nregions, provenance, end, ctx, arrays);
    else if (!ft->n || arrays)
        b = td__ablock_new(ft->n, (size_t)t->ndims, regions, nregions, provenance, end, ctx);
    if (!b) {
        free(arrays);
        if (end)
            end(ctx);
        return td__err(err, TD_ENOMEM, "out of memory for %u arrays", ft->n);
    }
    for (uint32_t i = 0; !im && i < ft->n; i++) {
        td__ftab_entry e;
        int64_t shape[TD_MAX_DIMS];
        td__ftab_get(ft, i, &e);
        for (uint32_t k = 0; k < e.ndim; k++)
            shape[k] = td__ftab_dim(e.shape, k);
        /* td__ftab_open checked the bytes against the region's size, which is the mapping's. */
        arrays[i] = td__ablock_add(b, e.dtype, e.ndim, shape,
                                   (const uint8_t *)regions[e.region]->base + e.offset, e.nbytes);
    }
    td__ablock_done(b); /* the arrays hold it now (or it ends here, with no tensor) */
    int rc = td__dict_over_ftab(ft, t->region, arrays, ft->n, out, err);
    free(arrays);
    return rc;
}

int td__tab_meta(const td__tab *t, const char *what, td_meta **out, td_error *err)
{
    if (!t->ft.meta_len) {
        *out = td_meta_new();
        return *out ? 0 : td__err(err, TD_ENOMEM, "%s: out of memory", what);
    }
    return td__proto_meta_unpack(t->ft.meta, (size_t)t->ft.meta_len, what, out, err);
}

int td__tab_to_table(const td__tab *t, td__table *out, td_error *err)
{
    const td__ftab *ft = &t->ft;
    td__table_init(out, ft->format);
    int rc = td__table_reserve(out, ft->n, err);
    for (uint32_t i = 0; !rc && i < ft->n; i++) {
        td__ftab_entry e;
        int64_t shape[TD_MAX_DIMS];
        td__ftab_get(ft, i, &e);
        td__entry *x = td__table_add(out, e.name, e.name_len, err);
        if (!x) {
            rc = TD_ENOMEM; /* td__table_add's only failure */
            break;
        }
        for (uint32_t k = 0; k < e.ndim; k++)
            shape[k] = td__ftab_dim(e.shape, k);
        x->dtype = e.dtype;
        x->region = e.region;
        x->offset = e.offset;
        x->nbytes = e.nbytes;
        rc = td__entry_set_shape(x, e.ndim, shape, err);
    }
    if (rc)
        td__table_destroy(out);
    return rc;
}

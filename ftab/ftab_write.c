/*
 * ftab_write.c - writing a tensor table as a flat table (ftab.h): sizing it and laying it out,
 * with the hash index built under the writer's seed.
 */
#include "ftab.h"
#include "dtype.h"

#include <string.h>

/* Where each section starts, from the counts. */
typedef struct td__ftab_plan {
    uint64_t entries, index, shapes, nshapes, names, names_len, meta, total;
    uint32_t slots;
} td__ftab_plan;

static uint64_t td__ftab_pad8(uint64_t v)
{
    return (v + 7) & ~(uint64_t)7;
}

/* 0 when the table does not fit in TD__FTAB_MAX_BYTES. Every sum below stays far from 2^64: n
 * and every name and shape are bounded by what a td__table can hold in memory. */
static int td__ftab_plan_for(const td__table *t, uint64_t meta_len, td__ftab_plan *p)
{
    uint64_t slots = 8;
    while (slots <= (uint64_t)t->n * 2)
        slots *= 2;
    p->nshapes = 0;
    p->names_len = 0;
    for (size_t i = 0; i < t->n; i++) {
        p->nshapes += t->entries[i].ndim;
        if (t->entries[i].name)
            p->names_len += strlen(t->entries[i].name) + 1;
    }
    p->entries = TD__FTAB_HEADER;
    p->index = p->entries + (uint64_t)t->n * TD__FTAB_ENTRY;
    p->shapes = td__ftab_pad8(p->index + slots * 4);
    p->names = p->shapes + p->nshapes * 8;
    p->meta = td__ftab_pad8(p->names + p->names_len);
    p->total = p->meta + meta_len;
    p->slots = (uint32_t)slots;
    return t->n < UINT32_MAX / 4 && meta_len < TD__FTAB_MAX_BYTES && p->total <= TD__FTAB_MAX_BYTES;
}

uint64_t td__ftab_size(const td__table *t, uint64_t meta_len)
{
    td__ftab_plan p;
    return td__ftab_plan_for(t, meta_len, &p) ? p.total : 0;
}

int td__ftab_write(const td__table *t, uint32_t nregions, const void *meta, uint64_t meta_len,
                   td__hash_seed seed, uint8_t *out, uint64_t size, td_error *err)
{
    td__ftab_plan p;
    if (!td__ftab_plan_for(t, meta_len, &p) || p.total != size)
        return td__err(err, TD_EINVAL, "table: %llu bytes given, %llu needed",
                       (unsigned long long)size, (unsigned long long)p.total);
    memset(out, 0, (size_t)size);
    memcpy(out, TD__FTAB_MAGIC, 8);
    td__put32(out + 8, TD__FTAB_VERSION);
    td__put32(out + 12, TD__FTAB_HEADER);
    td__put64(out + 16, p.total);
    td__put32(out + 24, (uint32_t)t->format);
    td__put32(out + 28, (uint32_t)t->n);
    td__put32(out + 32, nregions);
    td__put32(out + 36, p.slots);
    td__put64(out + 40, seed.k0);
    td__put64(out + 48, seed.k1);
    td__put64(out + 56, p.entries);
    td__put64(out + 64, p.index);
    td__put64(out + 72, p.shapes);
    td__put64(out + 80, p.nshapes);
    td__put64(out + 88, p.names);
    td__put64(out + 96, p.names_len);
    td__put64(out + 104, meta_len ? p.meta : 0);
    td__put64(out + 112, meta_len);

    uint64_t shape_at = 0, name_at = 0;
    uint32_t mask = p.slots - 1;
    for (size_t i = 0; i < t->n; i++) {
        const td__entry *e = &t->entries[i];
        char q[80];
        if (e->layout || e->region >= nregions || e->ndim > TD_MAX_DIMS ||
            !td__dtype_info(e->dtype))
            return td__err(err, TD_EINVAL,
                           "table: tensor '%s': layout %u, region %u of %u, %u dimensions, dtype "
                           "%d: not a plain entry",
                           e->name ? td__quote(e->name, strlen(e->name), q, sizeof q) : "",
                           e->layout, e->region, nregions, e->ndim, (int)e->dtype);
        uint8_t *r = out + p.entries + i * TD__FTAB_ENTRY;
        td__put64(r, e->offset);
        td__put64(r + 8, e->nbytes);
        td__put32(r + 24, (uint32_t)e->dtype);
        td__put32(r + 28, e->ndim);
        td__put32(r + 32, (uint32_t)shape_at);
        td__put32(r + 36, e->region);
        for (uint32_t k = 0; k < e->ndim; k++)
            td__put64(out + p.shapes + 8 * (shape_at + k), (uint64_t)e->shape[k]);
        shape_at += e->ndim;
        if (!e->name) {
            td__put32(r + 16, TD__FTAB_UNNAMED);
            continue;
        }
        size_t len = strlen(e->name);
        uint64_t h = td__hash(seed, e->name, len);
        td__put32(r + 16, (uint32_t)name_at);
        td__put32(r + 20, (uint32_t)len);
        td__put32(r + 40, (uint32_t)h);
        memcpy(out + p.names + name_at, e->name, len); /* the NUL is the memset's */
        name_at += len + 1;
        uint32_t s = (uint32_t)h & mask;
        while (td__le32(out + p.index + 4 * (uint64_t)s))
            s = (s + 1) & mask;
        td__put32(out + p.index + 4 * (uint64_t)s, (uint32_t)i + 1);
    }
    if (meta_len)
        memcpy(out + p.meta, meta, (size_t)meta_len);
    return 0;
}

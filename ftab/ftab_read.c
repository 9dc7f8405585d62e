/*
 * ftab_read.c - reading a flat table (ftab.h): the one validation a reader makes before it
 * trusts the bytes, then entry access and lookups by name, which need no checks of their own.
 */
#include "ftab.h"
#include "dtype.h"

#include <string.h>

/* Checks that [off, off + count * unit) lies in [header, len) and that off is a multiple of
 * align. */
static int td__ftab_section(uint64_t len, uint64_t off, uint64_t count, uint64_t unit,
                            uint64_t align, const char *what, const char *field, td_error *err)
{
    uint64_t bytes, end;
    if (off < TD__FTAB_HEADER || off % align || !td__mul_u64(count, unit, &bytes) ||
        !td__add_u64(off, bytes, &end) || end > len)
        return td__err(err, TD_EPROTO,
                       "%s: table: %s at %llu (%llu x %llu bytes) is outside its %llu bytes or "
                       "not %llu-aligned",
                       what, field, (unsigned long long)off, (unsigned long long)count,
                       (unsigned long long)unit, (unsigned long long)len,
                       (unsigned long long)align);
    return 0;
}

static int td__ftab_header(const uint8_t *p, uint64_t len, uint32_t nregions, const char *what,
                           td__ftab *ft, td_error *err)
{
    if (len < TD__FTAB_HEADER || memcmp(p, TD__FTAB_MAGIC, 8) != 0)
        return td__err(err, TD_EPROTO, "%s: table: %llu bytes without the table's magic", what,
                       (unsigned long long)len);
    uint32_t version = td__le32(p + 8), hdr = td__le32(p + 12);
    if (version != TD__FTAB_VERSION)
        return td__err(err, version > TD__FTAB_VERSION ? TD_EVERSION : TD_EPROTO,
                       "%s: table: version %u, this library reads %u", what, version,
                       TD__FTAB_VERSION);
    if (hdr < TD__FTAB_HEADER || hdr > len)
        return td__err(err, TD_EPROTO, "%s: table: header of %u bytes", what, hdr);
    if (td__le64(p + 16) != len)
        return td__err(err, TD_EPROTO, "%s: table: says %llu bytes, has %llu", what,
                       (unsigned long long)td__le64(p + 16), (unsigned long long)len);
    uint32_t format = td__le32(p + 24);
    if (format < TD_FORMAT_NPY || format > TD_FORMAT_GGUF)
        return td__err(err, TD_EPROTO, "%s: table: format %u is not a file format", what, format);
    *ft = (td__ftab){
        .base = p,
        .len = len,
        .format = (td_format)format,
        .n = td__le32(p + 28),
        .nregions = td__le32(p + 32),
        .slots = td__le32(p + 36),
        .seed = {td__le64(p + 40), td__le64(p + 48)},
    };
    if (ft->nregions > nregions)
        return td__err(err, TD_EPROTO, "%s: table: %u regions, the reply has %u", what,
                       ft->nregions, nregions);
    if (ft->slots / 2 <= ft->n || (ft->slots & (ft->slots - 1)))
        return td__err(err, TD_EPROTO,
                       "%s: table: %u index slots for %u entries (a power of two above twice it)",
                       what, ft->slots, ft->n);
    uint64_t e_off = td__le64(p + 56), i_off = td__le64(p + 64), s_off = td__le64(p + 72);
    uint64_t nshapes = td__le64(p + 80), n_off = td__le64(p + 88), n_len = td__le64(p + 96);
    uint64_t m_off = td__le64(p + 104), m_len = td__le64(p + 112);
    int rc;
    if ((rc = td__ftab_section(len, e_off, ft->n, TD__FTAB_ENTRY, 8, what, "entries", err)) ||
        (rc = td__ftab_section(len, i_off, ft->slots, 4, 4, what, "index", err)) ||
        (rc = td__ftab_section(len, s_off, nshapes, 8, 8, what, "shapes", err)) ||
        (rc = td__ftab_section(len, n_off, n_len, 1, 1, what, "names", err)) ||
        (m_len && (rc = td__ftab_section(len, m_off, m_len, 1, 1, what, "metadata", err))))
        return rc;
    if (n_len && p[n_off + n_len - 1] != 0)
        return td__err(err, TD_EPROTO, "%s: table: the names do not end with a NUL", what);
    ft->entries = p + e_off;
    ft->index = p + i_off;
    ft->shapes = p + s_off;
    ft->nshapes = nshapes;
    ft->names = (const char *)p + n_off;
    ft->meta = m_len ? p + m_off : NULL;
    ft->meta_len = m_len;
    /* Kept for the entries' checks below: the shapes' and names' extents. */
    ft->len = len;
    return 0;
}

void td__ftab_get(const td__ftab *ft, uint32_t i, td__ftab_entry *out)
{
    const uint8_t *r = ft->entries + (size_t)i * TD__FTAB_ENTRY;
    out->offset = td__le64(r);
    out->nbytes = td__le64(r + 8);
    out->name = td__ftab_name(ft, i);
    out->name_len = out->name ? td__le32(r + 20) : 0;
    out->dtype = (td_dtype)td__le32(r + 24);
    out->ndim = td__le32(r + 28);
    out->shape = ft->shapes + 8 * (size_t)td__le32(r + 32);
    out->region = td__le32(r + 36);
}

/* td__ftab_find, adding the slots it looked at to *probes. */
static int64_t td__ftab_probe(const td__ftab *ft, const char *name, size_t len, uint64_t *probes)
{
    uint64_t h = td__hash(ft->seed, name, len);
    uint32_t mask = ft->slots - 1, s = (uint32_t)h & mask;
    for (uint32_t n = 0; n < ft->slots; n++, s = (s + 1) & mask) {
        uint32_t k = td__le32(ft->index + 4 * (size_t)s);
        ++*probes;
        if (!k)
            return -1;
        const uint8_t *r = ft->entries + (size_t)(k - 1) * TD__FTAB_ENTRY;
        uint32_t name_at = td__le32(r + 16);
        if (td__le32(r + 40) == (uint32_t)h && name_at != TD__FTAB_UNNAMED &&
            td__le32(r + 20) == len && memcmp(ft->names + name_at, name, len) == 0)
            return (int64_t)k - 1;
    }
    return -1;
}

int64_t td__ftab_find(const td__ftab *ft, const char *name, size_t len)
{
    uint64_t probes = 0;
    return td__ftab_probe(ft, name, len, &probes);
}

/* An entry's name for a message, quoted only when a message is made. */
static const char *td__ftab_label(const td__ftab_entry *e, char *q, size_t cap)
{
    return e->name ? td__quote(e->name, e->name_len, q, cap) : "";
}
#define TD__FTAB_LABEL td__ftab_label(&e, q, sizeof q)

/* One entry's checks. names_len and nshapes bound its name and shape. */
static int td__ftab_entry_check(const td__ftab *ft, uint32_t i, uint64_t names_len,
                                uint64_t nshapes, const uint64_t *region_sizes, const char *what,
                                uint32_t *named, td_error *err)
{
    const uint8_t *r = ft->entries + (size_t)i * TD__FTAB_ENTRY;
    uint32_t name_at = td__le32(r + 16), name_len = td__le32(r + 20);
    uint32_t shape_at = td__le32(r + 32);
    td__ftab_entry e;
    char q[80];
    if (name_at != TD__FTAB_UNNAMED) {
        if (!name_len || (uint64_t)name_at + name_len >= names_len)
            return td__err(err, TD_EPROTO, "%s: table: entries[%u]: name at %u of %u bytes", what,
                           i, name_at, name_len);
        const char *s = ft->names + name_at;
        if (memchr(s, 0, name_len) || s[name_len])
            return td__err(err, TD_EPROTO, "%s: table: entries[%u]: name of %u bytes with a NUL",
                           what, i, name_len);
        if (td__le32(r + 40) != (uint32_t)td__hash(ft->seed, s, name_len))
            return td__err(err, TD_EPROTO, "%s: table: entries[%u] '%s': hash 0x%08x is wrong",
                           what, i, td__quote(s, name_len, q, sizeof q), td__le32(r + 40));
        (*named)++;
    }
    td__ftab_get(ft, i, &e);
    if (!td__dtype_info(e.dtype))
        return td__err(err, TD_EPROTO, "%s: table: entries[%u] '%s': dtype %d is unknown", what, i,
                       TD__FTAB_LABEL, (int)e.dtype);
    if (e.ndim > TD_MAX_DIMS || (uint64_t)shape_at + e.ndim > nshapes)
        return td__err(err, TD_EPROTO,
                       "%s: table: entries[%u] '%s': %u dimensions from size %u of %llu", what, i,
                       TD__FTAB_LABEL, e.ndim, shape_at, (unsigned long long)nshapes);
    int64_t shape[TD_MAX_DIMS];
    for (uint32_t k = 0; k < e.ndim; k++)
        shape[k] = td__ftab_dim(e.shape, k);
    uint64_t nbytes, end;
    td_error tmp;
    if (td__shape_nbytes(e.dtype, e.ndim, shape, &nbytes, &tmp))
        return td__err(err, TD_EPROTO, "%s: table: entries[%u] '%s': shape: %s", what, i,
                       TD__FTAB_LABEL, tmp.message);
    if (nbytes != e.nbytes)
        return td__err(err, TD_EPROTO,
                       "%s: table: entries[%u] '%s': nbytes %llu, but %s x shape is %llu", what, i,
                       TD__FTAB_LABEL, (unsigned long long)e.nbytes, td_dtype_name(e.dtype),
                       (unsigned long long)nbytes);
    if (e.region >= ft->nregions)
        return td__err(err, TD_EPROTO, "%s: table: entries[%u] '%s': region %u of %u", what, i,
                       TD__FTAB_LABEL, e.region, ft->nregions);
    if (!td__add_u64(e.offset, e.nbytes, &end) || end > region_sizes[e.region])
        return td__err(err, TD_EPROTO,
                       "%s: table: entries[%u] '%s': bytes %llu + %llu are past the end of "
                       "region %u (%llu bytes)",
                       what, i, TD__FTAB_LABEL, (unsigned long long)e.offset,
                       (unsigned long long)e.nbytes, e.region,
                       (unsigned long long)region_sizes[e.region]);
    if (e.offset % td__dtype_align(e.dtype))
        return td__err(err, TD_EPROTO,
                       "%s: table: entries[%u] '%s': offset %llu is not aligned to %u for %s", what,
                       i, TD__FTAB_LABEL, (unsigned long long)e.offset, td__dtype_align(e.dtype),
                       td_dtype_name(e.dtype));
    return 0;
}

#undef TD__FTAB_LABEL

int td__ftab_open(const void *p, uint64_t len, const uint64_t *region_sizes, uint32_t nregions,
                  const char *what, td__ftab *ft, td_error *err)
{
    const uint8_t *b = p;
    int rc = td__ftab_header(b, len, nregions, what, ft, err);
    if (rc)
        return rc;
    uint64_t names_len = td__le64(b + 96), nshapes = ft->nshapes;
    uint32_t named = 0;
    for (uint32_t i = 0; i < ft->n; i++)
        if ((rc = td__ftab_entry_check(ft, i, names_len, nshapes, region_sizes, what, &named, err)))
            return rc;
    /* The index: its slots name entries, each named entry once, and every name's probe finds its
     * own entry (so no two entries share a name, and no lookup can run without an empty slot to
     * stop it: there are more slots than entries). */
    uint32_t used = 0;
    for (uint32_t s = 0; s < ft->slots; s++) {
        uint32_t k = td__le32(ft->index + 4 * (size_t)s);
        if (!k)
            continue;
        if (k > ft->n ||
            td__le32(ft->entries + (size_t)(k - 1) * TD__FTAB_ENTRY + 16) == TD__FTAB_UNNAMED)
            return td__err(err, TD_EPROTO, "%s: table: index slot %u names entry %u of %u", what, s,
                           k, ft->n);
        used++;
    }
    if (used != named)
        return td__err(err, TD_EPROTO, "%s: table: the index holds %u names, the entries %u", what,
                       used, named);
    if (ft->n > 1 && named != ft->n)
        return td__err(err, TD_EPROTO, "%s: table: %u of %u entries are unnamed", what,
                       ft->n - named, ft->n);
    /* A writer hashing under a seed of its own, at most half full, needs about 1.5 probes per
     * name; a table that needs many more was made to be slow, and is refused rather than scanned
     * (which could take n x slots steps). */
    uint64_t probes = 0, max_probes = 32 * (uint64_t)ft->n + 64;
    for (uint32_t i = 0; i < ft->n; i++) {
        td__ftab_entry e;
        td__ftab_get(ft, i, &e);
        if (!e.name)
            continue;
        int64_t at = td__ftab_probe(ft, e.name, e.name_len, &probes);
        if (probes > max_probes)
            return td__err(err, TD_EPROTO,
                           "%s: table: the index needs over %llu probes for %u names", what,
                           (unsigned long long)max_probes, named);
        if (at != (int64_t)i) {
            char q[80];
            return td__err(err, at < 0 ? TD_EPROTO : TD_EDUP, "%s: table: entries[%u] '%s' %s",
                           what, i, td__quote(e.name, e.name_len, q, sizeof q),
                           at < 0 ? "is not in the index" : "has the name of an earlier entry");
        }
    }
    return 0;
}

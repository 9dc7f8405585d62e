/*
 * ftab.h - the flat tensor table: one entry's table of tensors as a single block of bytes that
 * processes share read-only (the daemon writes it once into a sealed memfd; every client maps
 * it), with a hash index for lookups by name. It is the table of proto/PROTOCOL.md section 3.5.
 *
 * Layout, version 1. Every integer is little-endian; every offset counts from the first byte.
 *
 *   header, 128 bytes:
 *     0   magic "TDFTAB\0\1" (8 bytes)
 *     8   u32 version (1)            12  u32 header bytes (>= 128; readers skip the rest)
 *     16  u64 total bytes (the whole table; the memfd's size)
 *     24  u32 format (td_format)     28  u32 entries N
 *     32  u32 regions R (every entry's region is below R)
 *     36  u32 index slots S (a power of two, > 2N, >= 8)
 *     40  u64 seed k0                48  u64 seed k1 (td__hash's key for the index)
 *     56  u64 entries offset (8-aligned; N records of 48 bytes)
 *     64  u64 index offset (4-aligned; S u32 slots)
 *     72  u64 shapes offset (8-aligned)  80 u64 shape sizes (int64 count)
 *     88  u64 names offset           96  u64 names bytes
 *     104 u64 metadata offset        112 u64 metadata bytes (0: no metadata)
 *     120 8 bytes, zero
 *   entry, 48 bytes:
 *     0   u64 offset in its region   8   u64 nbytes
 *     16  u32 name offset in the names (0xffffffff: unnamed, the one array of a bare .npy)
 *     20  u32 name bytes (the NUL that follows the name is not counted)
 *     24  u32 dtype (td_dtype)       28  u32 dimensions (<= TD_MAX_DIMS)
 *     32  u32 first size in the shapes   36 u32 region
 *     40  u32 low 32 bits of td__hash(seed, name)   44 u32 zero
 *   index slot: 0 = empty, else entry number + 1; a name's probe starts at
 *     td__hash(seed, name) & (S - 1) and goes up by one, wrapping.
 *   shapes: int64 sizes, outermost first, each entry's ndim of them from its first size.
 *   names: each name's bytes then a NUL.
 *   metadata: opaque bytes for the layers above (the daemon writes the metadata as PROTOCOL.md's
 *     typed map, msgpack-encoded); this file never reads them.
 *
 * Every entry is plain: its bytes are C order, little-endian, viewable as they lie, and aligned
 * to its dtype (td__dtype_align) within its region. Readers validate a table once
 * (td__ftab_open); after that, lookups and reads cannot leave the bytes whatever they held.
 */
#ifndef TD_FTAB_H
#define TD_FTAB_H

#include "common.h"
#include "hash.h"
#include "table.h"
#include "tensord.h"

#include <stddef.h>
#include <stdint.h>

#define TD__FTAB_MAGIC   "TDFTAB\0\1"
#define TD__FTAB_VERSION 1u
#define TD__FTAB_HEADER  128u
#define TD__FTAB_ENTRY   48u
#define TD__FTAB_UNNAMED 0xffffffffu
/* Bound on the table's bytes, and so on its entries and names: what a LOAD_OK may carry. */
#define TD__FTAB_MAX_BYTES (1ull << 32)

/* A validated table (td__ftab_open): pointers into the bytes, which the caller keeps mapped. */
typedef struct td__ftab {
    const uint8_t *base;
    uint64_t len;
    td_format format;
    uint32_t n, nregions, slots;
    td__hash_seed seed;
    const uint8_t *entries; /* n records */
    const uint8_t *index;   /* slots u32 */
    const uint8_t *shapes;  /* int64 sizes */
    uint64_t nshapes;       /* sizes in all */
    const char *names;
    const uint8_t *meta;
    uint64_t meta_len;
} td__ftab;

/* One entry, decoded from its record. name is NULL for the unnamed entry; shape points into the
 * table (ndim little-endian int64s: read them with td__ftab_dim). */
typedef struct td__ftab_entry {
    const char *name;
    uint32_t name_len;
    td_dtype dtype;
    uint32_t ndim;
    const uint8_t *shape;
    uint32_t region;
    uint64_t offset, nbytes;
} td__ftab_entry;

/* Bytes td__ftab_write needs for t (every entry plain) and meta_len bytes of metadata; 0 when
 * the table would exceed TD__FTAB_MAX_BYTES. */
uint64_t td__ftab_size(const td__table *t, uint64_t meta_len);

/* Writes t as a flat table into out[0..size), size from td__ftab_size with the same meta_len,
 * with the index hashed under seed. Every entry must be plain (layout 0) and name regions below
 * nregions; TD_EINVAL names the first that is not. meta (may be NULL when meta_len is 0) is
 * copied as it is. */
int td__ftab_write(const td__table *t, uint32_t nregions, const void *meta, uint64_t meta_len,
                   td__hash_seed seed, uint8_t *out, uint64_t size, td_error *err);

/* Validates p[0..len) as a flat table whose regions hold region_sizes[0..nregions) bytes, and
 * fills *ft. Checks the header, every section's bounds, every entry (dtype, shape, nbytes equal
 * to dtype x shape, region, bytes inside the region and aligned to the dtype, name inside the
 * names with its NUL and no other), and the index: every named entry is found by its own name
 * and no two share one. what starts every message. TD_EPROTO (TD_EVERSION for a newer version,
 * TD_EDUP for a name twice) with the field, entry and value. p must stay mapped and unchanged
 * (a sealed memfd) while *ft is used. */
int td__ftab_open(const void *p, uint64_t len, const uint64_t *region_sizes, uint32_t nregions,
                  const char *what, td__ftab *ft, td_error *err);

/* Entry i (< ft->n) of a validated table. */
void td__ftab_get(const td__ftab *ft, uint32_t i, td__ftab_entry *out);

/* The name of entry i (< ft->n) of a validated table, NUL-terminated, or NULL when unnamed:
 * td__ftab_get's name alone. */
static inline const char *td__ftab_name(const td__ftab *ft, uint32_t i)
{
    uint32_t at = td__le32(ft->entries + (size_t)i * TD__FTAB_ENTRY + 16);
    return at == TD__FTAB_UNNAMED ? NULL : ft->names + at;
}

/* Size k of a shape from td__ftab_get. */
static inline int64_t td__ftab_dim(const uint8_t *shape, uint32_t k)
{
    return (int64_t)td__le64(shape + 8 * (size_t)k);
}

/* The entry number of name in a validated table, or -1. At most ft->slots probes. */
int64_t td__ftab_find(const td__ftab *ft, const char *name, size_t len);

#endif

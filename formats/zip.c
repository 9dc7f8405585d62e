/*
 * zip.c - zip reader, verifier, inflate helpers and writer (see zip.h).
 *
 * The reader trusts nothing: every field read from the archive is checked against the bytes
 * that are really there before it is used, sums are computed with checked arithmetic, and no
 * allocation is sized by a count before that count has been checked against the directory's
 * size (which itself lies inside the file).
 */
#include "zip.h"
#include "common.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef TD_HAVE_LIBDEFLATE
#include <libdeflate.h>
#endif

#define ZIP__U16_MAX 0xffffu
#define ZIP__U32_MAX 0xffffffffu
/* Bytes handed to zlib per call: its counters are 32-bit. */
#define ZIP__ZCHUNK (1u << 30)
/* Scratch for inflated bytes that are checked but not kept (td__zip_verify, npy headers). */
#define ZIP__SCRATCH (256u * 1024u)

/* Quotes a member name for messages. */
static const char *zip__q(const char *name, size_t len, char *out, size_t cap)
{
    return td__quote(name, len, out, cap);
}

uint32_t td__zip_crc32(uint32_t crc, const void *p, size_t n)
{
#ifdef TD_HAVE_LIBDEFLATE
    return libdeflate_crc32(crc, p, n); /* same CRC, about 4x faster than zlib's */
#else
    return (uint32_t)crc32_z(crc, (const Bytef *)p, n);
#endif
}

const char *td__zip_deflate_engine(void)
{
#ifdef TD_HAVE_LIBDEFLATE
    return "libdeflate";
#else
    return "zlib";
#endif
}

int td__zip_check_name(const char *name, size_t len, const char *fname, td_error *err)
{
    char q[80];
    if (len == 0)
        return td__err(err, TD_EFORMAT, "%s: a member has an empty name", fname);
    const char *why = NULL;
    if (memchr(name, '\0', len))
        why = "contains a NUL byte";
    else if (memchr(name, '\\', len))
        why = "contains a backslash";
    else if (name[0] == '/')
        why = "is an absolute path";
    else {
        /* Walk the '/'-separated components and refuse "..". */
        size_t i = 0;
        while (i <= len) {
            size_t j = i;
            while (j < len && name[j] != '/')
                j++;
            if (j - i == 2 && name[i] == '.' && name[i + 1] == '.') {
                why = "has a '..' component";
                break;
            }
            i = j + 1;
        }
    }
    if (why)
        return td__err(err, TD_EFORMAT, "%s: member name %s %s", fname,
                       zip__q(name, len, q, sizeof q), why);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Reader */

/* Finds the extra field `id` in extra[0..len). Like Python's zipfile, a field whose size runs
 * past the end is an error and fewer than 4 trailing bytes are ignored. *data is NULL when the
 * field is absent. */
static int zip__extra_find(const uint8_t *extra, size_t len, uint16_t id, const uint8_t **data,
                           size_t *dlen, const char *fname, const char *what, td_error *err)
{
    *data = NULL;
    *dlen = 0;
    size_t p = 0;
    while (len - p >= 4) {
        uint16_t fid = td__le16(extra + p), fsz = td__le16(extra + p + 2);
        if (fsz > len - p - 4)
            return td__err(err, TD_EFORMAT,
                           "%s: %s: extra field 0x%04x at byte %zu claims %u bytes, %zu left",
                           fname, what, fid, p, fsz, len - p - 4);
        if (fid == id && !*data) {
            *data = extra + p + 4;
            *dlen = fsz;
        }
        p += 4 + (size_t)fsz;
    }
    return 0;
}

/* Reads the 64-bit value that replaces an all-ones 32-bit field from a zip64 extra field,
 * advancing *pos; errors when the field is too short. */
static int zip__z64_take(const uint8_t *z64, size_t z64len, size_t *pos, uint64_t *v,
                         const char *fname, const char *what, const char *field, td_error *err)
{
    if (z64len < 8 || *pos > z64len - 8)
        return td__err(err, TD_EFORMAT,
                       "%s: %s: %s is 0xffffffff but the zip64 extra field (%zu bytes) lacks it",
                       fname, what, field, z64len);
    *v = td__le64(z64 + *pos);
    *pos += 8;
    return 0;
}

/* Finds the end record in the last 64 KiB + 22 bytes: *pos is its offset, *rec its bytes. */
static int zip__find_eocd(td__rd *r, uint64_t *pos, const uint8_t **rec, td_error *err)
{
    const char *fname = r->fname;
    uint64_t len = r->len;
    if (len < ZIP_EOCD_LEN)
        return td__err(err, TD_ETRUNC,
                       "%s: %llu bytes is too short for a zip archive (the end record alone is "
                       "%u)",
                       fname, (unsigned long long)len, ZIP_EOCD_LEN);
    uint64_t lo = len - ZIP_EOCD_LEN > ZIP_MAX_COMMENT ? len - ZIP_EOCD_LEN - ZIP_MAX_COMMENT : 0;
    const uint8_t *tail;
    int rc = td__rd_get(r, lo, len - lo, &tail, err);
    if (rc)
        return rc;
    /* Backwards, so that the record nearest the end wins; its comment must end the file. */
    for (size_t p = (size_t)(len - lo) - ZIP_EOCD_LEN + 1; p-- > 0;) {
        if (tail[p] == 'P' && td__le32(tail + p) == ZIP_SIG_EOCD &&
            lo + p + ZIP_EOCD_LEN + td__le16(tail + p + 20) == len) {
            *pos = lo + p;
            *rec = tail + p;
            return 0;
        }
    }
    return td__err(err, TD_EFORMAT,
                   "%s: no end of central directory record in the last %llu bytes: not a zip "
                   "archive, or truncated",
                   fname, (unsigned long long)(len - lo));
}

/* The end records: where the central directory is, how long, how many members. */
typedef struct zip__end {
    uint64_t n, cd_offset, cd_size;
    uint64_t limit; /* first byte after the room the central directory may use */
    int zip64;
} zip__end;

static int zip__read_end(td__rd *rd, zip__end *e, td_error *err)
{
    const char *fname = rd->fname;
    uint64_t eocd = 0;
    const uint8_t *r = NULL, *loc = NULL;
    int rc = zip__find_eocd(rd, &eocd, &r, err);
    if (rc)
        return rc;
    uint16_t disk = td__le16(r + 4), cd_disk = td__le16(r + 6);
    uint64_t n_disk = td__le16(r + 8), n = td__le16(r + 10);
    uint64_t cd_size = td__le32(r + 12), cd_offset = td__le32(r + 16);
    memset(e, 0, sizeof *e);
    e->limit = eocd;

    if (eocd >= ZIP_EOCD64_LOC_LEN &&
        (rc = td__rd_get(rd, eocd - ZIP_EOCD64_LOC_LEN, ZIP_EOCD64_LOC_LEN, &loc, err)))
        return rc;
    if (loc && td__le32(loc) == ZIP_SIG_EOCD64_LOC) {
        uint32_t z_disk = td__le32(loc + 4), z_disks = td__le32(loc + 16);
        uint64_t roff = td__le64(loc + 8);
        uint64_t loc_pos = eocd - ZIP_EOCD64_LOC_LEN;
        if (z_disk != 0 || z_disks > 1)
            return td__err(err, TD_ENOTSUP,
                           "%s: multi-disk zip archives are not supported (zip64 locator: disk "
                           "%u of %u)",
                           fname, z_disk, z_disks);
        if (roff > loc_pos || loc_pos - roff < ZIP_EOCD64_LEN)
            return td__err(err, TD_EFORMAT,
                           "%s: zip64 end record offset %llu leaves no room for the record "
                           "before its locator at %llu",
                           fname, (unsigned long long)roff, (unsigned long long)loc_pos);
        const uint8_t *z;
        if ((rc = td__rd_get(rd, roff, ZIP_EOCD64_LEN, &z, err)))
            return rc;
        if (td__le32(z) != ZIP_SIG_EOCD64)
            return td__err(err, TD_EFORMAT,
                           "%s: no zip64 end record at offset %llu (signature 0x%08x)", fname,
                           (unsigned long long)roff, td__le32(z));
        uint64_t zsize = td__le64(z + 4);
        if (zsize < ZIP_EOCD64_LEN - 12 || zsize > loc_pos - roff - 12)
            return td__err(err, TD_EFORMAT,
                           "%s: zip64 end record at %llu claims %llu bytes, %llu available", fname,
                           (unsigned long long)roff, (unsigned long long)zsize,
                           (unsigned long long)(loc_pos - roff - 12));
        uint32_t d1 = td__le32(z + 16), d2 = td__le32(z + 20);
        uint64_t zn_disk = td__le64(z + 24), zn = td__le64(z + 32);
        uint64_t zcd_size = td__le64(z + 40), zcd_offset = td__le64(z + 48);
        if (d1 != 0 || d2 != 0 || zn_disk != zn)
            return td__err(err, TD_ENOTSUP,
                           "%s: multi-disk zip archives are not supported (zip64 end record: "
                           "disk %u, directory disk %u, %llu of %llu members)",
                           fname, d1, d2, (unsigned long long)zn_disk, (unsigned long long)zn);
        /* Fields of the classic record that are not all ones must agree. */
        if ((n != ZIP__U16_MAX && n != zn) || (cd_size != ZIP__U32_MAX && cd_size != zcd_size) ||
            (cd_offset != ZIP__U32_MAX && cd_offset != zcd_offset))
            return td__err(err, TD_EFORMAT,
                           "%s: end record (%llu members, directory %llu bytes at %llu) "
                           "contradicts the zip64 end record (%llu, %llu at %llu)",
                           fname, (unsigned long long)n, (unsigned long long)cd_size,
                           (unsigned long long)cd_offset, (unsigned long long)zn,
                           (unsigned long long)zcd_size, (unsigned long long)zcd_offset);
        n = n_disk = zn;
        cd_size = zcd_size;
        cd_offset = zcd_offset;
        e->limit = roff;
        e->zip64 = 1;
    }
    if (!e->zip64 && (disk != 0 || cd_disk != 0 || n_disk != n))
        return td__err(err, TD_ENOTSUP,
                       "%s: multi-disk zip archives are not supported (disk %u, directory disk "
                       "%u, %llu of %llu members)",
                       fname, disk, cd_disk, (unsigned long long)n_disk, (unsigned long long)n);
    uint64_t cd_end;
    if (!td__add_u64(cd_offset, cd_size, &cd_end) || cd_end > e->limit)
        return td__err(err, TD_EFORMAT,
                       "%s: central directory (%llu bytes at offset %llu) runs past its end "
                       "record at %llu",
                       fname, (unsigned long long)cd_size, (unsigned long long)cd_offset,
                       (unsigned long long)e->limit);
    if (n > cd_size / ZIP_CENTRAL_LEN)
        return td__err(err, TD_EFORMAT,
                       "%s: end record claims %llu members, but the %llu-byte central "
                       "directory holds at most %llu",
                       fname, (unsigned long long)n, (unsigned long long)cd_size,
                       (unsigned long long)(cd_size / ZIP_CENTRAL_LEN));
    e->n = n;
    e->cd_offset = cd_offset;
    e->cd_size = cd_size;
    return 0;
}

/* Checks the data descriptor that follows a member written with flag bit 3: optional
 * signature, CRC-32, then both sizes as u32 or u64. The descriptor must repeat the central
 * directory's values; *end receives one past its last byte. `wide` says which size width to try
 * first (the local header had a zip64 field). */
static int zip__check_descriptor(td__rd *r, uint64_t at, uint64_t limit, const td__zip_member *m,
                                 int wide, uint64_t *end, const char *what, td_error *err)
{
    /* At most a signature, the CRC and two 64-bit sizes, all before limit. */
    uint64_t room = limit - at < 24 ? limit - at : 24;
    const uint8_t *d0;
    int rc = td__rd_get(r, at, room, &d0, err);
    if (rc)
        return rc;
    for (int sig = 1; sig >= 0; sig--) {
        uint64_t p = 0; /* from at */
        if (sig) {
            if (room < 4 || td__le32(d0) != ZIP_SIG_DESCRIPTOR)
                continue;
            p += 4;
        }
        for (int k = 0; k < 2; k++) {
            int w8 = k == 0 ? wide : !wide;
            uint64_t need = 4 + (w8 ? 16u : 8u);
            if (room - p < need)
                continue;
            const uint8_t *d = d0 + p;
            uint64_t cs = w8 ? td__le64(d + 4) : td__le32(d + 4);
            uint64_t us = w8 ? td__le64(d + 12) : td__le32(d + 8);
            if (td__le32(d) == m->crc32 && cs == m->csize && us == m->usize) {
                *end = at + p + need;
                return 0;
            }
        }
    }
    return td__err(err, TD_EFORMAT,
                   "%s: %s: the data descriptor at offset %llu is missing or does not match the "
                   "central directory (crc 0x%08x, sizes %llu/%llu)",
                   r->fname, what, (unsigned long long)at, m->crc32, (unsigned long long)m->csize,
                   (unsigned long long)m->usize);
}

/* Checks member m's local header against the central directory and fills data_offset and
 * end_offset. Everything the member occupies must lie before `limit` (the directory). */
static int zip__check_local(td__rd *r, uint64_t limit, td__zip_member *m, uint16_t cflags,
                            const char *what, td_error *err)
{
    const char *fname = r->fname;
    uint64_t lo = m->local_offset;
    int rc;
    if (lo > limit || limit - lo < ZIP_LOCAL_LEN)
        return td__err(err, TD_EFORMAT,
                       "%s: %s: local header offset %llu is past the start of the central "
                       "directory (%llu)",
                       fname, what, (unsigned long long)lo, (unsigned long long)limit);
    const uint8_t *h, *nx; /* the fixed header; its name and extra field */
    if ((rc = td__rd_get(r, lo, ZIP_LOCAL_LEN, &h, err)))
        return rc;
    if (td__le32(h) != ZIP_SIG_LOCAL)
        return td__err(err, TD_EFORMAT, "%s: %s: no local header at offset %llu (0x%08x)", fname,
                       what, (unsigned long long)lo, td__le32(h));
    uint16_t lflags = td__le16(h + 6), lmethod = td__le16(h + 8);
    uint32_t lcrc = td__le32(h + 14);
    uint64_t lcsize = td__le32(h + 18), lusize = td__le32(h + 22);
    uint64_t nlen = td__le16(h + 26), xlen = td__le16(h + 28);
    uint64_t data = lo + ZIP_LOCAL_LEN + nlen + xlen;
    if (data > limit)
        return td__err(err, TD_EFORMAT,
                       "%s: %s: local header at %llu (name %llu, extra %llu bytes) runs into the "
                       "central directory at %llu",
                       fname, what, (unsigned long long)lo, (unsigned long long)nlen,
                       (unsigned long long)xlen, (unsigned long long)limit);
    if ((rc = td__rd_get(r, lo + ZIP_LOCAL_LEN, nlen + xlen, &nx, err)))
        return rc;
    if (nlen != m->name_len || memcmp(nx, m->name, m->name_len) != 0)
        return td__err(err, TD_EFORMAT, "%s: %s: the local header at %llu names another file",
                       fname, what, (unsigned long long)lo);
    if (lflags & (ZIP_FLAG_ENCRYPTED | ZIP_FLAG_STRONG_ENC))
        return td__err(err, TD_ENOTSUP, "%s: %s is encrypted (local flags 0x%04x)", fname, what,
                       lflags);
    if (lmethod != m->method)
        return td__err(err, TD_EFORMAT, "%s: %s: local header says method %u, central directory %u",
                       fname, what, lmethod, m->method);
    const uint8_t *z64;
    size_t z64len;
    rc = zip__extra_find(nx + nlen, (size_t)xlen, ZIP_EXTRA_ZIP64, &z64, &z64len, fname, what, err);
    if (rc)
        return rc;
    uint64_t dend;
    if (!td__add_u64(data, m->csize, &dend) || dend > limit)
        return td__err(err, TD_EFORMAT,
                       "%s: %s: %llu bytes of data at offset %llu run past the start of the "
                       "central directory (%llu)",
                       fname, what, (unsigned long long)m->csize, (unsigned long long)data,
                       (unsigned long long)limit);
    m->data_offset = data;
    m->end_offset = dend;
    if ((lflags | cflags) & ZIP_FLAG_DESCRIPTOR)
        return zip__check_descriptor(r, dend, limit, m, z64 != NULL, &m->end_offset, what, err);
    /* No descriptor: the local header's own CRC and sizes must agree with the directory. */
    if (z64 && (lusize == ZIP__U32_MAX || lcsize == ZIP__U32_MAX)) {
        if (z64len >= 16) { /* a local zip64 field holds both sizes */
            lusize = td__le64(z64);
            lcsize = td__le64(z64 + 8);
        } else {
            size_t zp = 0;
            if (lusize == ZIP__U32_MAX &&
                (rc = zip__z64_take(z64, z64len, &zp, &lusize, fname, what, "local size", err)))
                return rc;
            if (lcsize == ZIP__U32_MAX && (rc = zip__z64_take(z64, z64len, &zp, &lcsize, fname,
                                                              what, "local compressed size", err)))
                return rc;
        }
    }
    if (lcrc != m->crc32 || lcsize != m->csize || lusize != m->usize)
        return td__err(err, TD_EFORMAT,
                       "%s: %s: local header (crc 0x%08x, sizes %llu/%llu) contradicts the "
                       "central directory (crc 0x%08x, sizes %llu/%llu)",
                       fname, what, lcrc, (unsigned long long)lcsize, (unsigned long long)lusize,
                       m->crc32, (unsigned long long)m->csize, (unsigned long long)m->usize);
    return 0;
}

static const char *zip__method_name(unsigned m)
{
    switch (m) {
    case 1:
        return "shrink";
    case 6:
        return "implode";
    case 9:
        return "deflate64";
    case 12:
        return "bzip2";
    case 14:
        return "lzma";
    case 93:
        return "zstd";
    case 95:
        return "xz";
    case 99:
        return "AES encryption";
    default:
        return "unknown";
    }
}

/* Reads central directory entry i, whose bytes cd[0..avail) start at file offset at, into m;
 * *used receives its length. */
static int zip__read_central(td__rd *r, const uint8_t *cd, uint64_t at, uint64_t avail, size_t i,
                             uint64_t limit, td__zip_member *m, uint64_t *used, td_error *err)
{
    const char *fname = r->fname;
    if (avail < ZIP_CENTRAL_LEN)
        return td__err(err, TD_EFORMAT,
                       "%s: central directory entry %zu at offset %llu is truncated (%llu bytes "
                       "left, need %u)",
                       fname, i, (unsigned long long)at, (unsigned long long)avail,
                       ZIP_CENTRAL_LEN);
    if (td__le32(cd) != ZIP_SIG_CENTRAL)
        return td__err(err, TD_EFORMAT,
                       "%s: central directory entry %zu at offset %llu has signature 0x%08x", fname,
                       i, (unsigned long long)at, td__le32(cd));
    uint16_t flags = td__le16(cd + 8), method = td__le16(cd + 10);
    uint64_t nlen = td__le16(cd + 28), xlen = td__le16(cd + 30), clen = td__le16(cd + 32);
    if (ZIP_CENTRAL_LEN + nlen + xlen + clen > avail)
        return td__err(err, TD_EFORMAT,
                       "%s: central directory entry %zu (name %llu, extra %llu, comment %llu "
                       "bytes) runs past the directory's end",
                       fname, i, (unsigned long long)nlen, (unsigned long long)xlen,
                       (unsigned long long)clen);
    *used = ZIP_CENTRAL_LEN + nlen + xlen + clen;
    memset(m, 0, sizeof *m);
    m->name = (const char *)cd + ZIP_CENTRAL_LEN;
    m->name_len = (size_t)nlen;
    m->flags = flags;
    m->method = method;
    m->crc32 = td__le32(cd + 16);
    m->csize = td__le32(cd + 20);
    m->usize = td__le32(cd + 24);
    m->local_offset = td__le32(cd + 42);
    uint32_t disk = td__le16(cd + 34);

    char q[80], what[128];
    snprintf(what, sizeof what, "member %s", zip__q(m->name, m->name_len, q, sizeof q));
    int rc = td__zip_check_name(m->name, m->name_len, fname, err);
    if (rc)
        return rc;
    if (flags & (ZIP_FLAG_ENCRYPTED | ZIP_FLAG_STRONG_ENC | ZIP_FLAG_CD_ENC))
        return td__err(err, TD_ENOTSUP, "%s: %s is encrypted (flags 0x%04x)", fname, what, flags);
    if (method != ZIP_METHOD_STORED && method != ZIP_METHOD_DEFLATE)
        return td__err(err, TD_ENOTSUP,
                       "%s: %s: compression method %u (%s) is not supported, only stored (0) and "
                       "deflate (8)",
                       fname, what, method, zip__method_name(method));

    const uint8_t *z64;
    size_t z64len, zp = 0;
    rc = zip__extra_find(cd + ZIP_CENTRAL_LEN + nlen, (size_t)xlen, ZIP_EXTRA_ZIP64, &z64, &z64len,
                         fname, what, err);
    if (rc)
        return rc;
    if (z64) {
        if (m->usize == ZIP__U32_MAX &&
            (rc = zip__z64_take(z64, z64len, &zp, &m->usize, fname, what, "size", err)))
            return rc;
        if (m->csize == ZIP__U32_MAX &&
            (rc = zip__z64_take(z64, z64len, &zp, &m->csize, fname, what, "compressed size", err)))
            return rc;
        if (m->local_offset == ZIP__U32_MAX &&
            (rc = zip__z64_take(z64, z64len, &zp, &m->local_offset, fname, what,
                                "local header offset", err)))
            return rc;
        if (disk == ZIP__U16_MAX) {
            if (z64len < 4 || zp > z64len - 4)
                return td__err(err, TD_EFORMAT, "%s: %s: zip64 extra field lacks the disk number",
                               fname, what);
            disk = td__le32(z64 + zp);
        }
    }
    if (disk != 0)
        return td__err(err, TD_ENOTSUP,
                       "%s: %s starts on disk %u: multi-disk archives are not "
                       "supported",
                       fname, what, disk);
    if (method == ZIP_METHOD_STORED && m->usize != m->csize)
        return td__err(err, TD_EFORMAT,
                       "%s: %s is stored but its sizes differ (%llu compressed, %llu not)", fname,
                       what, (unsigned long long)m->csize, (unsigned long long)m->usize);
    if (method == ZIP_METHOD_DEFLATE) {
        uint64_t most;
        if (!td__mul_u64(m->csize, ZIP_MAX_RATIO, &most) ||
            !td__add_u64(most, ZIP_RATIO_SLACK, &most))
            most = UINT64_MAX;
        if (m->usize > most)
            return td__err(err, TD_EFORMAT,
                           "%s: %s claims %llu bytes from %llu compressed, beyond deflate's "
                           "%u:1 limit (a zip bomb or a corrupt directory)",
                           fname, what, (unsigned long long)m->usize, (unsigned long long)m->csize,
                           ZIP_MAX_RATIO);
    }
    return zip__check_local(r, limit, m, flags, what, err);
}

typedef struct zip__span {
    uint64_t start, end;
    size_t index;
} zip__span;

static int zip__span_cmp(const void *a, const void *b)
{
    const zip__span *x = a, *y = b;
    return (x->start > y->start) - (x->start < y->start);
}

/* No two members may share bytes (a zip that overlaps members can make a few KiB expand to
 * gigabytes, and lets two names alias one buffer). */
static int zip__check_overlap(const td__zip_archive *z, const char *fname, td_error *err)
{
    if (z->n < 2)
        return 0;
    zip__span *s = malloc(z->n * sizeof *s);
    if (!s)
        return td__err(err, TD_ENOMEM, "%s: out of memory checking %zu members", fname, z->n);
    for (size_t i = 0; i < z->n; i++) {
        s[i].start = z->members[i].local_offset;
        s[i].end = z->members[i].end_offset;
        s[i].index = i;
    }
    qsort(s, z->n, sizeof *s, zip__span_cmp);
    int rc = 0;
    for (size_t i = 1; i < z->n; i++) {
        if (s[i].start < s[i - 1].end) {
            const td__zip_member *a = &z->members[s[i - 1].index], *b = &z->members[s[i].index];
            char qa[80], qb[80];
            rc = td__err(
                err, TD_EFORMAT, "%s: members %s (bytes %llu..%llu) and %s (from %llu) overlap",
                fname, zip__q(a->name, a->name_len, qa, sizeof qa),
                (unsigned long long)s[i - 1].start, (unsigned long long)s[i - 1].end,
                zip__q(b->name, b->name_len, qb, sizeof qb), (unsigned long long)s[i].start);
            break;
        }
    }
    free(s);
    return rc;
}

int td__zip_open(td__rd *r, td__zip_archive *z, td_error *err)
{
    memset(z, 0, sizeof *z);
    const char *fname = r->fname;
    zip__end e;
    const uint8_t *cd;
    int rc = zip__read_end(r, &e, err);
    if (!rc)
        rc = td__rd_get(r, e.cd_offset, e.cd_size, &cd, err);
    if (rc)
        return rc;
    if (e.n > SIZE_MAX / sizeof *z->members)
        return td__err(err, TD_ELIMIT, "%s: %llu members", fname, (unsigned long long)e.n);
    if (e.n) {
        z->members = calloc((size_t)e.n, sizeof *z->members);
        if (!z->members)
            return td__err(err, TD_ENOMEM, "%s: out of memory for %llu members", fname,
                           (unsigned long long)e.n);
    }
    z->cd_offset = e.cd_offset;
    z->zip64 = e.zip64;
    uint64_t p = e.cd_offset, end = e.cd_offset + e.cd_size;
    for (size_t i = 0; i < (size_t)e.n; i++) {
        uint64_t used = 0;
        rc = zip__read_central(r, cd + (p - e.cd_offset), p, end - p, i, e.cd_offset,
                               &z->members[i], &used, err);
        if (rc)
            goto fail;
        p += used;
        z->n = i + 1;
    }
    /* The directory must hold exactly the members the end record counts: Python's zipfile
     * goes by the directory's size, so leftover records would be members only it sees. */
    if (p != end) {
        rc = td__err(err, TD_EFORMAT,
                     "%s: central directory has %llu bytes after the %llu members the end record "
                     "counts",
                     fname, (unsigned long long)(end - p), (unsigned long long)e.n);
        goto fail;
    }
    rc = zip__check_overlap(z, fname, err);
    if (rc)
        goto fail;
    return 0;
fail:
    td__zip_close(z);
    return rc;
}

void td__zip_close(td__zip_archive *z)
{
    free(z->members);
    memset(z, 0, sizeof *z);
}

/* ------------------------------------------------------------------------------------------ */
/* Inflate */

static int zip__zerr(int zrc, const z_stream *zs, const char *what, uint64_t at, td_error *err)
{
    if (zrc == Z_MEM_ERROR)
        return td__err(err, TD_ENOMEM, "%s: out of memory inflating", what);
    return td__err(err, TD_EFORMAT, "%s: corrupt deflate stream after %llu inflated bytes: %s",
                   what, (unsigned long long)at,
                   zs->msg ? zs->msg : (zrc == Z_NEED_DICT ? "needs a dictionary" : "error"));
}

/* The one inflate loop. Output bytes [0, skip) go to scratch and are dropped, [skip,
 * skip+dst_len) to dst (when dst is NULL everything goes to scratch); the stream must end
 * after exactly skip + dst_len bytes. Every inflated byte is hashed into *crc. */
static int zip__inflate_loop(const uint8_t *src, uint64_t src_len, uint64_t skip, uint8_t *dst,
                             uint64_t dst_len, uint8_t *scratch, size_t scratch_cap, uint32_t *crc,
                             const char *what, td_error *err)
{
    uint64_t total;
    if (!td__add_u64(skip, dst_len, &total))
        return td__err(err, TD_ERANGE, "%s: inflated size overflows", what);
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    int zrc = inflateInit2(&zs, -MAX_WBITS);
    if (zrc != Z_OK)
        return td__err(err, zrc == Z_MEM_ERROR ? TD_ENOMEM : TD_EIO,
                       "%s: cannot start inflating (zlib %d)", what, zrc);
    const uint8_t *in = src;
    uint64_t in_left = src_len, out = 0;
    uint32_t c = 0;
    int rc = 0;
    for (;;) {
        if (zs.avail_in == 0 && in_left) {
            uInt k = in_left < ZIP__ZCHUNK ? (uInt)in_left : ZIP__ZCHUNK;
            zs.next_in = (Bytef *)(uintptr_t)in;
            zs.avail_in = k;
            in += k;
            in_left -= k;
        }
        uint8_t *o;
        uInt room;
        if (dst && out >= skip && out < total) {
            uint64_t left = total - out;
            o = dst + (out - skip);
            room = left < ZIP__ZCHUNK ? (uInt)left : ZIP__ZCHUNK;
        } else {
            /* Skipped header bytes, a checked-only stream, or output past the end (which
             * must not happen: any byte produced there is an error). */
            uint64_t left = out < skip ? skip - out : scratch_cap;
            o = scratch;
            room = left < scratch_cap ? (uInt)left : (uInt)scratch_cap;
        }
        zs.next_out = o;
        zs.avail_out = room;
        zrc = inflate(&zs, Z_NO_FLUSH);
        uInt made = room - zs.avail_out;
        if (made) {
            c = (uint32_t)crc32_z(c, o, made);
            out += made;
            if (out > total) {
                rc = td__err(err, TD_EFORMAT,
                             "%s: inflates to more than the declared %llu bytes (a zip bomb or "
                             "a corrupt directory)",
                             what, (unsigned long long)total);
                break;
            }
        }
        if (zrc == Z_STREAM_END)
            break;
        if (zrc == Z_OK)
            continue;
        if (zrc == Z_BUF_ERROR && zs.avail_in == 0 && in_left == 0) {
            rc = td__err(err, TD_ETRUNC,
                         "%s: the %llu compressed bytes end before the deflate stream does "
                         "(%llu bytes inflated)",
                         what, (unsigned long long)src_len, (unsigned long long)out);
            break;
        }
        if (zrc == Z_BUF_ERROR)
            continue;
        rc = zip__zerr(zrc, &zs, what, out, err);
        break;
    }
    inflateEnd(&zs);
    if (!rc && out != total)
        rc = td__err(err, TD_EFORMAT, "%s: inflates to %llu bytes, the directory says %llu", what,
                     (unsigned long long)out, (unsigned long long)total);
    if (!rc && crc)
        *crc = c;
    return rc;
}

int td__zip_inflate(const uint8_t *src, uint64_t src_len, uint64_t skip, uint8_t *dst,
                    uint64_t dst_len, uint32_t *crc, const char *what, td_error *err)
{
    uint8_t stack[4096];
    uint8_t *scratch = stack;
    size_t cap = sizeof stack;
    if (skip > sizeof stack) {
        cap = skip < ZIP__SCRATCH ? (size_t)skip : ZIP__SCRATCH;
        scratch = malloc(cap);
        if (!scratch)
            return td__err(err, TD_ENOMEM, "%s: out of memory inflating", what);
    }
    int rc = zip__inflate_loop(src, src_len, skip, dst, dst_len, scratch, cap, crc, what, err);
    if (scratch != stack)
        free(scratch);
    return rc;
}

int td__zip_inflate_prefix(const uint8_t *src, uint64_t src_len, uint8_t *out, size_t cap,
                           size_t *out_len, const char *what, td_error *err)
{
    *out_len = 0;
    if (cap > ZIP__ZCHUNK)
        cap = ZIP__ZCHUNK;
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    int zrc = inflateInit2(&zs, -MAX_WBITS);
    if (zrc != Z_OK)
        return td__err(err, zrc == Z_MEM_ERROR ? TD_ENOMEM : TD_EIO,
                       "%s: cannot start inflating (zlib %d)", what, zrc);
    const uint8_t *in = src;
    uint64_t in_left = src_len;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    int rc = 0;
    while (zs.avail_out) {
        if (zs.avail_in == 0 && in_left) {
            uInt k = in_left < ZIP__ZCHUNK ? (uInt)in_left : ZIP__ZCHUNK;
            zs.next_in = (Bytef *)(uintptr_t)in;
            zs.avail_in = k;
            in += k;
            in_left -= k;
        }
        zrc = inflate(&zs, Z_NO_FLUSH);
        if (zrc == Z_STREAM_END)
            break;
        if (zrc == Z_OK)
            continue;
        if (zrc == Z_BUF_ERROR && zs.avail_in == 0 && in_left == 0) {
            rc = td__err(err, TD_ETRUNC,
                         "%s: the %llu compressed bytes end before the deflate stream does", what,
                         (unsigned long long)src_len);
            break;
        }
        if (zrc == Z_BUF_ERROR)
            continue;
        rc = zip__zerr(zrc, &zs, what, cap - zs.avail_out, err);
        break;
    }
    *out_len = cap - zs.avail_out;
    inflateEnd(&zs);
    return rc;
}

int td__zip_inflate_whole(const uint8_t *src, uint64_t src_len, uint8_t *out, uint64_t out_len,
                          uint32_t *crc, const char *what, td_error *err)
{
#ifdef TD_HAVE_LIBDEFLATE
    if (src_len <= SIZE_MAX && out_len <= SIZE_MAX) {
        struct libdeflate_decompressor *d = libdeflate_alloc_decompressor();
        if (!d)
            return td__err(err, TD_ENOMEM, "%s: out of memory inflating", what);
        /* NULL actual_out: anything but exactly out_len bytes is an error */
        enum libdeflate_result r =
            libdeflate_deflate_decompress(d, src, (size_t)src_len, out, (size_t)out_len, NULL);
        libdeflate_free_decompressor(d);
        if (r == LIBDEFLATE_SUCCESS) {
            if (crc)
                *crc = libdeflate_crc32(0, out, (size_t)out_len);
            return 0;
        }
        /* Failures are rare: let zlib run again and name the problem exactly. */
    }
#endif
    return td__zip_inflate(src, src_len, 0, out, out_len, crc, what, err);
}

int td__zip_verify(const uint8_t *base, size_t len, const char *fname, td_error *err)
{
    if (!fname)
        fname = "(zip)";
    td__zip_archive z;
    int rc = td__zip_open(TD__RD_MEM(base, len, fname), &z, err);
    if (rc)
        return rc;
    uint8_t *scratch = malloc(ZIP__SCRATCH);
    if (!scratch) {
        td__zip_close(&z);
        return td__err(err, TD_ENOMEM, "%s: out of memory", fname);
    }
    for (size_t i = 0; i < z.n && !rc; i++) {
        const td__zip_member *m = &z.members[i];
        char q[80], what[400];
        snprintf(what, sizeof what, "%s: member %s", fname,
                 zip__q(m->name, m->name_len, q, sizeof q));
        uint32_t crc = 0;
        if (m->method == ZIP_METHOD_STORED)
            crc = td__zip_crc32(0, base + m->data_offset, (size_t)m->csize);
        else
            rc = zip__inflate_loop(base + m->data_offset, m->csize, m->usize, NULL, 0, scratch,
                                   ZIP__SCRATCH, &crc, what, err);
        if (!rc && crc != m->crc32)
            rc = td__err(err, TD_ECHECKSUM, "%s: CRC-32 is 0x%08x, the directory says 0x%08x", what,
                         crc, m->crc32);
    }
    free(scratch);
    td__zip_close(&z);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Writer */

struct td__zip__cd_rec {
    char *name; /* owned */
    size_t name_len;
    uint16_t method, flags;
    uint32_t crc32;
    uint64_t csize, usize, local_offset;
    int local_zip64; /* the local header has a zip64 field */
};

#define ZIP__VERSION_20 20u
#define ZIP__VERSION_45 45u              /* zip64 */
#define ZIP__MADE_BY    (3u << 8)        /* Unix */
#define ZIP__DOS_DATE   ((1u << 5) | 1)  /* 1980-01-01 */
#define ZIP__EXT_ATTR   (0100644u << 16) /* regular file, rw-r--r-- */
#define ZIP__ZBUF       (256u * 1024u)
/* libdeflate takes the last piece of a deflated member in one call when it is at least this
 * big (below, zlib is as quick) and at most ZIP__LD_MAX (its output buffer is as big as the
 * compressed piece; beyond, zlib streams in constant memory). */
#define ZIP__LD_MIN 4096u
#define ZIP__LD_MAX (1ull << 30)

void td__zip_writer_init(td__zip_writer *zw, td__writer *w, const char *fname)
{
    memset(zw, 0, sizeof *zw);
    zw->w = w;
    zw->fname = fname ? fname : "(zip)";
}

void td__zip_writer_destroy(td__zip_writer *zw)
{
    for (size_t i = 0; i < zw->n; i++)
        free(zw->recs[i].name);
    free(zw->recs);
    if (zw->zlib_ready)
        deflateEnd(&zw->zs);
#ifdef TD_HAVE_LIBDEFLATE
    libdeflate_free_compressor(zw->ld);
#endif
    free(zw->zbuf);
    memset(zw, 0, sizeof *zw);
}

/* The writer's status, making sure *err says something when the writer reported elsewhere. */
static int zip__wfail(td__zip_writer *zw, td_error *err)
{
    int rc = zw->w->status ? zw->w->status : TD_EIO;
    if (err && err != zw->w->err)
        td__err(err, rc, "%s: write failed", zw->fname);
    return rc;
}

static int zip__has_high_bit(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] & 0x80)
            return 1;
    return 0;
}

int td__zip_writer_begin(td__zip_writer *zw, const char *name, unsigned method, int level,
                         uint64_t usize, uint64_t align, uint64_t align_at, td_error *err)
{
    const char *fname = zw->fname;
    if (zw->open)
        return td__err(err, TD_EINVAL, "%s: zip member started before the last one ended", fname);
    size_t nlen = strlen(name);
    int rc = td__zip_check_name(name, nlen, fname, err);
    if (rc)
        return rc;
    if (nlen > ZIP__U16_MAX)
        return td__err(err, TD_ELIMIT, "%s: member name of %zu bytes, zip allows %u", fname, nlen,
                       ZIP__U16_MAX);
    if (method != ZIP_METHOD_STORED && method != ZIP_METHOD_DEFLATE)
        return td__err(err, TD_EINVAL, "%s: zip method %u not supported", fname, method);
    if (align > 1 && ((align & (align - 1)) || align > 32768))
        return td__err(err, TD_EINVAL, "%s: alignment %llu is not a power of two <= 32768", fname,
                       (unsigned long long)align);
    if (zw->n == zw->cap) {
        size_t cap = zw->cap ? zw->cap * 2 : 16;
        if (cap > SIZE_MAX / sizeof *zw->recs)
            return td__err(err, TD_ENOMEM, "%s: too many members", fname);
        td__zip__cd_rec *r = realloc(zw->recs, cap * sizeof *r);
        if (!r)
            return td__err(err, TD_ENOMEM, "%s: out of memory at %zu members", fname, zw->n);
        zw->recs = r;
        zw->cap = cap;
    }
    td__zip__cd_rec *r = &zw->recs[zw->n];
    memset(r, 0, sizeof *r);
    r->name = malloc(nlen + 1);
    if (!r->name)
        return td__err(err, TD_ENOMEM, "%s: out of memory", fname);
    memcpy(r->name, name, nlen + 1);
    zw->n++; /* from here on td__zip_writer_destroy frees the name */
    r->name_len = nlen;
    r->method = (uint16_t)method;
    r->flags = zip__has_high_bit(name, nlen) ? ZIP_FLAG_UTF8 : 0;
    r->usize = usize;
    r->local_offset = zw->w->pos;

    /* zip64 in the local header when a size could reach 4 GiB. Deflate's worst case is a little
     * over its input (zlib's deflateBound is below usize + usize/1024 + 64). */
    uint64_t worst = usize;
    if (method == ZIP_METHOD_DEFLATE &&
        (!td__add_u64(usize, usize / 1024, &worst) || !td__add_u64(worst, 64, &worst)))
        worst = UINT64_MAX;
    r->local_zip64 = zw->force_zip64 || worst >= ZIP__U32_MAX;

    uint8_t h[ZIP_LOCAL_LEN];
    size_t xlen = r->local_zip64 ? 20 : 0;
    size_t pad = 0;
    if (method == ZIP_METHOD_STORED && align > 1) {
        uint64_t at = r->local_offset + ZIP_LOCAL_LEN + nlen + xlen + align_at % align;
        pad = (size_t)((align - at % align) % align);
        while (pad && pad < 6) /* the alignment field needs 6 bytes */
            pad += (size_t)align;
    }
    td__put32(h, ZIP_SIG_LOCAL);
    td__put16(h + 4, (uint16_t)(r->local_zip64 ? ZIP__VERSION_45 : ZIP__VERSION_20));
    td__put16(h + 6, r->flags);
    td__put16(h + 8, r->method);
    td__put16(h + 10, 0);
    td__put16(h + 12, ZIP__DOS_DATE);
    td__put32(h + 14, 0); /* crc, patched */
    uint32_t size32 = r->local_zip64 ? ZIP__U32_MAX : (uint32_t)usize;
    td__put32(h + 18, method == ZIP_METHOD_STORED ? size32 : (r->local_zip64 ? ZIP__U32_MAX : 0));
    td__put32(h + 22, size32);
    td__put16(h + 26, (uint16_t)nlen);
    td__put16(h + 28, (uint16_t)(xlen + pad));
    td__writer_write(zw->w, h, sizeof h);
    td__writer_write(zw->w, name, nlen);
    if (r->local_zip64) {
        uint8_t x[20];
        td__put16(x, ZIP_EXTRA_ZIP64);
        td__put16(x + 2, 16);
        td__put64(x + 4, usize);
        td__put64(x + 12, method == ZIP_METHOD_STORED ? usize : 0);
        td__writer_write(zw->w, x, sizeof x);
    }
    if (pad) {
        uint8_t x[6];
        td__put16(x, ZIP_EXTRA_ALIGN);
        td__put16(x + 2, (uint16_t)(pad - 4));
        td__put16(x + 4, (uint16_t)align);
        td__writer_write(zw->w, x, sizeof x);
        static const uint8_t zeros[64];
        for (size_t left = pad - 6; left && !zw->w->status;) {
            size_t k = left < sizeof zeros ? left : sizeof zeros;
            td__writer_write(zw->w, zeros, k);
            left -= k;
        }
    }
    if (zw->w->status)
        return zip__wfail(zw, err);
    zw->data_pos = zw->w->pos;
    zw->stream_done = 0;
    zw->level = level;
    zw->crc = 0;
    zw->got = 0;
    zw->csize = 0;
    if (method == ZIP_METHOD_DEFLATE) {
        if (!zw->zbuf && !(zw->zbuf = malloc(ZIP__ZBUF)))
            return td__err(err, TD_ENOMEM, "%s: out of memory for deflate", fname);
        /* One deflate state serves every member (deflateReset), since setting one up costs
         * about 256 KiB of fresh memory: an archive of many small members would spend its
         * time in the allocator. */
        int zrc = Z_OK;
        if (zw->zlib_ready && zw->zlevel == level) {
            zrc = deflateReset(&zw->zs);
        } else {
            if (zw->zlib_ready)
                deflateEnd(&zw->zs);
            zw->zlib_ready = 0;
            memset(&zw->zs, 0, sizeof zw->zs);
            zrc = deflateInit2(&zw->zs, level, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
            if (zrc == Z_OK) {
                zw->zlib_ready = 1;
                zw->zlevel = level;
            }
        }
        if (zrc != Z_OK)
            return td__err(err, zrc == Z_MEM_ERROR ? TD_ENOMEM : TD_EINVAL,
                           "%s: cannot start deflate (zlib %d, level %d)", fname, zrc, level);
    }
    zw->open = 1;
    return 0;
}

/* Runs deflate over the pending input with `flush`, writing out whatever it produces. */
static int zip__deflate_run(td__zip_writer *zw, int flush, td_error *err)
{
    for (;;) {
        zw->zs.next_out = zw->zbuf;
        zw->zs.avail_out = ZIP__ZBUF;
        int zrc = deflate(&zw->zs, flush);
        if (zrc == Z_STREAM_ERROR)
            return td__err(err, TD_EIO, "%s: deflate failed", zw->fname);
        size_t made = ZIP__ZBUF - zw->zs.avail_out;
        if (made) {
            if (td__writer_write(zw->w, zw->zbuf, made))
                return zip__wfail(zw, err);
            zw->csize += made;
        }
        if (flush == Z_FINISH ? zrc == Z_STREAM_END : (zw->zs.avail_in == 0 && made < ZIP__ZBUF))
            return 0;
    }
}

int td__zip_writer_data(td__zip_writer *zw, const void *p, size_t n, td_error *err)
{
    if (!zw->open)
        return td__err(err, TD_EINVAL, "%s: zip data written outside a member", zw->fname);
    if (zw->stream_done && n)
        return td__err(err, TD_EINVAL, "%s: zip data after the last piece", zw->fname);
    td__zip__cd_rec *r = &zw->recs[zw->n - 1];
    if (n > r->usize - zw->got)
        return td__err(err, TD_EINVAL, "%s: member '%s' gets more than its declared %llu bytes",
                       zw->fname, r->name, (unsigned long long)r->usize);
    zw->crc = td__zip_crc32(zw->crc, p, n);
    zw->got += n;
    if (r->method == ZIP_METHOD_STORED) {
        if (td__writer_write(zw->w, p, n))
            return zip__wfail(zw, err);
        zw->csize += n;
        return 0;
    }
    const uint8_t *q = p;
    while (n) {
        uInt k = n < ZIP__ZCHUNK ? (uInt)n : ZIP__ZCHUNK;
        zw->zs.next_in = (Bytef *)(uintptr_t)q;
        zw->zs.avail_in = k;
        int rc = zip__deflate_run(zw, Z_NO_FLUSH, err);
        if (rc)
            return rc;
        q += k;
        n -= k;
    }
    return 0;
}

#ifdef TD_HAVE_LIBDEFLATE
/* The last piece of a deflated member in one libdeflate call. What zlib has taken so far is
 * flushed to a byte boundary first (Z_FULL_FLUSH: non-final blocks, no back-references across
 * the flush), so that libdeflate's blocks, the last one final, simply follow and the two form
 * one valid deflate stream. */
static int zip__deflate_last(td__zip_writer *zw, const void *p, size_t n, td_error *err)
{
    if (zw->got) {
        zw->zs.next_in = NULL;
        zw->zs.avail_in = 0;
        int rc = zip__deflate_run(zw, Z_FULL_FLUSH, err);
        if (rc)
            return rc;
    }
    int lvl = zw->level < 0 ? 6 : zw->level;
    if (zw->ld && zw->ld_level != lvl) {
        libdeflate_free_compressor(zw->ld);
        zw->ld = NULL;
    }
    if (!zw->ld && !(zw->ld = libdeflate_alloc_compressor(lvl)))
        return td__err(err, TD_ENOMEM, "%s: cannot set up libdeflate (level %d)", zw->fname, lvl);
    zw->ld_level = lvl;
    size_t bound = libdeflate_deflate_compress_bound(zw->ld, n);
    /* Pages of the bound that the output never reaches are never touched, so this costs the
     * compressed size, not the bound. */
    uint8_t *out = malloc(bound ? bound : 1);
    if (!out)
        return td__err(err, TD_ENOMEM, "%s: out of memory for %zu compressed bytes", zw->fname,
                       bound);
    size_t c = libdeflate_deflate_compress(zw->ld, p, n, out, bound);
    int rc = 0;
    if (!c)
        rc = td__err(err, TD_EIO, "%s: libdeflate failed on %zu bytes", zw->fname, n);
    else if (td__writer_write(zw->w, out, c))
        rc = zip__wfail(zw, err);
    free(out);
    if (rc)
        return rc;
    zw->crc = td__zip_crc32(zw->crc, p, n);
    zw->got += n;
    zw->csize += c;
    zw->stream_done = 1;
    return 0;
}
#endif

int td__zip_writer_data_last(td__zip_writer *zw, const void *p, size_t n, td_error *err)
{
#ifdef TD_HAVE_LIBDEFLATE
    if (zw->open && !zw->stream_done && zw->recs[zw->n - 1].method == ZIP_METHOD_DEFLATE &&
        n >= ZIP__LD_MIN && n <= ZIP__LD_MAX && n == zw->recs[zw->n - 1].usize - zw->got)
        return zip__deflate_last(zw, p, n, err);
#endif
    return td__zip_writer_data(zw, p, n, err);
}

int td__zip_writer_end(td__zip_writer *zw, td_error *err)
{
    if (!zw->open)
        return td__err(err, TD_EINVAL, "%s: zip member ended twice", zw->fname);
    td__zip__cd_rec *r = &zw->recs[zw->n - 1];
    if (zw->got != r->usize)
        return td__err(err, TD_EINVAL, "%s: member '%s' got %llu of its %llu bytes", zw->fname,
                       r->name, (unsigned long long)zw->got, (unsigned long long)r->usize);
    if (r->method == ZIP_METHOD_DEFLATE && !zw->stream_done) {
        zw->zs.next_in = NULL;
        zw->zs.avail_in = 0;
        int rc = zip__deflate_run(zw, Z_FINISH, err);
        if (rc)
            return rc;
    }
    r->crc32 = zw->crc;
    r->csize = zw->csize;
    if (!r->local_zip64 && r->csize >= ZIP__U32_MAX)
        return td__err(err, TD_ERANGE, "%s: member '%s' deflated to %llu bytes, past its bound",
                       zw->fname, r->name, (unsigned long long)r->csize);
    uint8_t p[12];
    td__put32(p, r->crc32);
    td__put32(p + 4, r->local_zip64 ? ZIP__U32_MAX : (uint32_t)r->csize);
    td__put32(p + 8, r->local_zip64 ? ZIP__U32_MAX : (uint32_t)r->usize);
    if (td__writer_patch(zw->w, r->local_offset + 14, p, sizeof p))
        return zip__wfail(zw, err);
    if (r->local_zip64) {
        uint8_t x[8];
        td__put64(x, r->csize);
        if (td__writer_patch(zw->w, r->local_offset + ZIP_LOCAL_LEN + r->name_len + 12, x, 8))
            return zip__wfail(zw, err);
    }
    zw->open = 0;
    return 0;
}

int td__zip_writer_finish(td__zip_writer *zw, td_error *err)
{
    if (zw->open)
        return td__err(err, TD_EINVAL, "%s: archive finished inside a member", zw->fname);
    td__writer *w = zw->w;
    uint64_t cd_offset = w->pos;
    for (size_t i = 0; i < zw->n; i++) {
        const td__zip__cd_rec *r = &zw->recs[i];
        uint8_t x[28];
        size_t xl = 4;
        uint32_t us = (uint32_t)r->usize, cs = (uint32_t)r->csize, off = (uint32_t)r->local_offset;
        int all = zw->force_zip64;
        if (all || r->usize >= ZIP__U32_MAX) {
            td__put64(x + xl, r->usize);
            xl += 8;
            us = ZIP__U32_MAX;
        }
        if (all || r->csize >= ZIP__U32_MAX) {
            td__put64(x + xl, r->csize);
            xl += 8;
            cs = ZIP__U32_MAX;
        }
        if (all || r->local_offset >= ZIP__U32_MAX) {
            td__put64(x + xl, r->local_offset);
            xl += 8;
            off = ZIP__U32_MAX;
        }
        if (xl == 4)
            xl = 0;
        else {
            td__put16(x, ZIP_EXTRA_ZIP64);
            td__put16(x + 2, (uint16_t)(xl - 4));
        }
        unsigned ver = (xl || r->local_zip64) ? ZIP__VERSION_45 : ZIP__VERSION_20;
        uint8_t h[ZIP_CENTRAL_LEN];
        td__put32(h, ZIP_SIG_CENTRAL);
        td__put16(h + 4, (uint16_t)(ZIP__MADE_BY | ver));
        td__put16(h + 6, (uint16_t)ver);
        td__put16(h + 8, r->flags);
        td__put16(h + 10, r->method);
        td__put16(h + 12, 0);
        td__put16(h + 14, ZIP__DOS_DATE);
        td__put32(h + 16, r->crc32);
        td__put32(h + 20, cs);
        td__put32(h + 24, us);
        td__put16(h + 28, (uint16_t)r->name_len);
        td__put16(h + 30, (uint16_t)xl);
        td__put16(h + 32, 0); /* comment */
        td__put16(h + 34, 0); /* disk */
        td__put16(h + 36, 0); /* internal attributes */
        td__put32(h + 38, ZIP__EXT_ATTR);
        td__put32(h + 42, off);
        td__writer_write(w, h, sizeof h);
        td__writer_write(w, r->name, r->name_len);
        td__writer_write(w, x, xl);
    }
    if (w->status)
        return zip__wfail(zw, err);
    uint64_t cd_size = w->pos - cd_offset, n = zw->n;
    int z64 = zw->force_zip64 || n >= ZIP__U16_MAX || cd_size >= ZIP__U32_MAX ||
              cd_offset >= ZIP__U32_MAX;
    if (z64) {
        uint64_t rec = w->pos;
        uint8_t z[ZIP_EOCD64_LEN + ZIP_EOCD64_LOC_LEN];
        td__put32(z, ZIP_SIG_EOCD64);
        td__put64(z + 4, ZIP_EOCD64_LEN - 12);
        td__put16(z + 12, (uint16_t)(ZIP__MADE_BY | ZIP__VERSION_45));
        td__put16(z + 14, ZIP__VERSION_45);
        td__put32(z + 16, 0);
        td__put32(z + 20, 0);
        td__put64(z + 24, n);
        td__put64(z + 32, n);
        td__put64(z + 40, cd_size);
        td__put64(z + 48, cd_offset);
        uint8_t *l = z + ZIP_EOCD64_LEN;
        td__put32(l, ZIP_SIG_EOCD64_LOC);
        td__put32(l + 4, 0);
        td__put64(l + 8, rec);
        td__put32(l + 16, 1);
        td__writer_write(w, z, sizeof z);
    }
    uint8_t e[ZIP_EOCD_LEN];
    td__put32(e, ZIP_SIG_EOCD);
    td__put16(e + 4, 0);
    td__put16(e + 6, 0);
    /* Fields too small for their value say "see the zip64 record" (all of them when forced). */
    int all = zw->force_zip64;
    uint16_t n16 = all || n >= ZIP__U16_MAX ? ZIP__U16_MAX : (uint16_t)n;
    td__put16(e + 8, n16);
    td__put16(e + 10, n16);
    td__put32(e + 12, all || cd_size >= ZIP__U32_MAX ? ZIP__U32_MAX : (uint32_t)cd_size);
    td__put32(e + 16, all || cd_offset >= ZIP__U32_MAX ? ZIP__U32_MAX : (uint32_t)cd_offset);
    td__put16(e + 20, 0);
    if (td__writer_write(w, e, sizeof e))
        return zip__wfail(zw, err);
    return 0;
}

/*
 * zip.c - the zip reader and verifier (see zip.h): end records, central directory, local headers,
 * data descriptors, overlap checks, and td__zip_verify's CRC pass over every member.
 *
 * The reader trusts nothing: every field read from the archive is checked against the bytes
 * that are really there before it is used, sums are computed with checked arithmetic, and no
 * allocation is sized by a count before that count has been checked against the directory's
 * size (which itself lies inside the file).
 */
#include "zip.h"
#include "common.h"
#include "flate.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Quotes a member name for messages. */
static const char *zip__q(const char *name, size_t len, char *out, size_t cap)
{
    return td__quote(name, len, out, cap);
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
        if ((n != ZIP_U16_MAX && n != zn) || (cd_size != ZIP_U32_MAX && cd_size != zcd_size) ||
            (cd_offset != ZIP_U32_MAX && cd_offset != zcd_offset))
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
    if (z64 && (lusize == ZIP_U32_MAX || lcsize == ZIP_U32_MAX)) {
        if (z64len >= 16) { /* a local zip64 field holds both sizes */
            lusize = td__le64(z64);
            lcsize = td__le64(z64 + 8);
        } else {
            size_t zp = 0;
            if (lusize == ZIP_U32_MAX &&
                (rc = zip__z64_take(z64, z64len, &zp, &lusize, fname, what, "local size", err)))
                return rc;
            if (lcsize == ZIP_U32_MAX && (rc = zip__z64_take(z64, z64len, &zp, &lcsize, fname, what,
                                                             "local compressed size", err)))
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
        if (m->usize == ZIP_U32_MAX &&
            (rc = zip__z64_take(z64, z64len, &zp, &m->usize, fname, what, "size", err)))
            return rc;
        if (m->csize == ZIP_U32_MAX &&
            (rc = zip__z64_take(z64, z64len, &zp, &m->csize, fname, what, "compressed size", err)))
            return rc;
        if (m->local_offset == ZIP_U32_MAX &&
            (rc = zip__z64_take(z64, z64len, &zp, &m->local_offset, fname, what,
                                "local header offset", err)))
            return rc;
        if (disk == ZIP_U16_MAX) {
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

int td__zip_verify(const uint8_t *base, size_t len, const char *fname, td_error *err)
{
    if (!fname)
        fname = "(zip)";
    td__zip_archive z;
    int rc = td__zip_open(TD__RD_MEM(base, len, fname), &z, err);
    if (rc)
        return rc;
    for (size_t i = 0; i < z.n && !rc; i++) {
        const td__zip_member *m = &z.members[i];
        char q[80], what[400];
        snprintf(what, sizeof what, "%s: member %s", fname,
                 zip__q(m->name, m->name_len, q, sizeof q));
        uint32_t crc = 0;
        if (m->method == ZIP_METHOD_STORED)
            crc = td__flate_crc32(0, base + m->data_offset, (size_t)m->csize);
        else /* all of it skipped: checked, not kept */
            rc = td__flate_inflate(base + m->data_offset, m->csize, m->usize, NULL, 0, &crc, what,
                                   err);
        if (!rc && crc != m->crc32)
            rc = td__err(err, TD_ECHECKSUM, "%s: CRC-32 is 0x%08x, the directory says 0x%08x", what,
                         crc, m->crc32);
    }
    td__zip_close(&z);
    return rc;
}

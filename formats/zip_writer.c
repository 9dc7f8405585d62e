/*
 * zip_writer.c - the zip writer (see zip_writer.h): local headers written as members begin and
 * patched when they end, then the central directory and the end records. Compression is
 * flate.c's; this file only lays out the records.
 */
#include "zip_writer.h"
#include "common.h"

#include <stdlib.h>
#include <string.h>

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

void td__zip_writer_init(td__zip_writer *zw, td__writer *w, const char *fname)
{
    memset(zw, 0, sizeof *zw);
    zw->w = w;
    zw->fname = fname ? fname : "(zip)";
    td__flate_deflater_init(&zw->df, w, zw->fname);
}

void td__zip_writer_destroy(td__zip_writer *zw)
{
    for (size_t i = 0; i < zw->n; i++)
        free(zw->recs[i].name);
    free(zw->recs);
    td__flate_deflater_destroy(&zw->df);
    memset(zw, 0, sizeof *zw);
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
    if (nlen > ZIP_U16_MAX)
        return td__err(err, TD_ELIMIT, "%s: member name of %zu bytes, zip allows %u", fname, nlen,
                       ZIP_U16_MAX);
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
    r->local_zip64 = zw->force_zip64 || worst >= ZIP_U32_MAX;

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
    uint32_t size32 = r->local_zip64 ? ZIP_U32_MAX : (uint32_t)usize;
    td__put32(h + 18, method == ZIP_METHOD_STORED ? size32 : (r->local_zip64 ? ZIP_U32_MAX : 0));
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
        return td__writer_fail(zw->w, zw->fname, err);
    zw->data_pos = zw->w->pos;
    zw->crc = 0;
    zw->got = 0;
    zw->csize = 0;
    if (method == ZIP_METHOD_DEFLATE && (rc = td__flate_deflate_begin(&zw->df, level, err)))
        return rc;
    zw->open = 1;
    return 0;
}

int td__zip_writer_data(td__zip_writer *zw, const void *p, size_t n, td_error *err)
{
    if (!zw->open)
        return td__err(err, TD_EINVAL, "%s: zip data written outside a member", zw->fname);
    td__zip__cd_rec *r = &zw->recs[zw->n - 1];
    if (r->method == ZIP_METHOD_DEFLATE && zw->df.done && n)
        return td__err(err, TD_EINVAL, "%s: zip data after the last piece", zw->fname);
    if (n > r->usize - zw->got)
        return td__err(err, TD_EINVAL, "%s: member '%s' gets more than its declared %llu bytes",
                       zw->fname, r->name, (unsigned long long)r->usize);
    zw->crc = td__flate_crc32(zw->crc, p, n);
    zw->got += n;
    if (r->method == ZIP_METHOD_DEFLATE)
        return td__flate_deflate_data(&zw->df, p, n, err);
    if (td__writer_write(zw->w, p, n))
        return td__writer_fail(zw->w, zw->fname, err);
    zw->csize += n;
    return 0;
}

int td__zip_writer_data_last(td__zip_writer *zw, const void *p, size_t n, td_error *err)
{
    if (!zw->open || zw->recs[zw->n - 1].method != ZIP_METHOD_DEFLATE || zw->df.done ||
        n != zw->recs[zw->n - 1].usize - zw->got)
        return td__zip_writer_data(zw, p, n, err);
    zw->crc = td__flate_crc32(zw->crc, p, n);
    zw->got += n;
    return td__flate_deflate_last(&zw->df, p, n, err);
}

int td__zip_writer_end(td__zip_writer *zw, td_error *err)
{
    if (!zw->open)
        return td__err(err, TD_EINVAL, "%s: zip member ended twice", zw->fname);
    td__zip__cd_rec *r = &zw->recs[zw->n - 1];
    if (zw->got != r->usize)
        return td__err(err, TD_EINVAL, "%s: member '%s' got %llu of its %llu bytes", zw->fname,
                       r->name, (unsigned long long)zw->got, (unsigned long long)r->usize);
    if (r->method == ZIP_METHOD_DEFLATE) {
        int rc = td__flate_deflate_end(&zw->df, err);
        if (rc)
            return rc;
        zw->csize = zw->df.out;
    }
    r->crc32 = zw->crc;
    r->csize = zw->csize;
    if (!r->local_zip64 && r->csize >= ZIP_U32_MAX)
        return td__err(err, TD_ERANGE, "%s: member '%s' deflated to %llu bytes, past its bound",
                       zw->fname, r->name, (unsigned long long)r->csize);
    uint8_t p[12];
    td__put32(p, r->crc32);
    td__put32(p + 4, r->local_zip64 ? ZIP_U32_MAX : (uint32_t)r->csize);
    td__put32(p + 8, r->local_zip64 ? ZIP_U32_MAX : (uint32_t)r->usize);
    if (td__writer_patch(zw->w, r->local_offset + 14, p, sizeof p))
        return td__writer_fail(zw->w, zw->fname, err);
    if (r->local_zip64) {
        uint8_t x[8];
        td__put64(x, r->csize);
        if (td__writer_patch(zw->w, r->local_offset + ZIP_LOCAL_LEN + r->name_len + 12, x, 8))
            return td__writer_fail(zw->w, zw->fname, err);
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
        if (all || r->usize >= ZIP_U32_MAX) {
            td__put64(x + xl, r->usize);
            xl += 8;
            us = ZIP_U32_MAX;
        }
        if (all || r->csize >= ZIP_U32_MAX) {
            td__put64(x + xl, r->csize);
            xl += 8;
            cs = ZIP_U32_MAX;
        }
        if (all || r->local_offset >= ZIP_U32_MAX) {
            td__put64(x + xl, r->local_offset);
            xl += 8;
            off = ZIP_U32_MAX;
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
        return td__writer_fail(zw->w, zw->fname, err);
    uint64_t cd_size = w->pos - cd_offset, n = zw->n;
    int z64 =
        zw->force_zip64 || n >= ZIP_U16_MAX || cd_size >= ZIP_U32_MAX || cd_offset >= ZIP_U32_MAX;
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
    uint16_t n16 = all || n >= ZIP_U16_MAX ? ZIP_U16_MAX : (uint16_t)n;
    td__put16(e + 8, n16);
    td__put16(e + 10, n16);
    td__put32(e + 12, all || cd_size >= ZIP_U32_MAX ? ZIP_U32_MAX : (uint32_t)cd_size);
    td__put32(e + 16, all || cd_offset >= ZIP_U32_MAX ? ZIP_U32_MAX : (uint32_t)cd_offset);
    td__put16(e + 20, 0);
    if (td__writer_write(w, e, sizeof e))
        return td__writer_fail(zw->w, zw->fname, err);
    return 0;
}

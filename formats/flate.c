/*
 * flate.c - raw deflate both ways and CRC-32: zlib's streaming inflate loop (the only one),
 * libdeflate's whole-buffer inflate and deflate when built with TD_HAVE_LIBDEFLATE, and the
 * piecewise deflater the zip writer uses (see flate.h).
 */
#include "flate.h"
#include "common.h"

#include <stdlib.h>
#include <string.h>

#ifdef TD_HAVE_LIBDEFLATE
#include <libdeflate.h>
#endif

/* Bytes handed to zlib per call: its counters are 32-bit. */
#define FLATE__ZCHUNK (1u << 30)
/* The most scratch memory for inflated bytes that are checked but not kept. */
#define FLATE__SCRATCH (256u * 1024u)
/* zlib's deflate output buffer. */
#define FLATE__ZBUF (256u * 1024u)
/* libdeflate takes the last piece of a stream in one call when it is at least this big (below,
 * zlib is as quick) and at most FLATE__LD_MAX (its output buffer is as big as the compressed
 * piece; beyond, zlib streams in constant memory). */
#define FLATE__LD_MIN 4096u
#define FLATE__LD_MAX (1ull << 30)

const char *td__flate_engine(void)
{
#ifdef TD_HAVE_LIBDEFLATE
    return "libdeflate";
#else
    return "zlib";
#endif
}

uint32_t td__flate_crc32(uint32_t crc, const void *p, size_t n)
{
#ifdef TD_HAVE_LIBDEFLATE
    return libdeflate_crc32(crc, p, n); /* same CRC, about 4x faster than zlib's */
#else
    return (uint32_t)crc32_z(crc, (const Bytef *)p, n);
#endif
}

/* ------------------------------------------------------------------------------------------ */
/* Inflate */

static int flate__zerr(int zrc, const z_stream *zs, const char *what, uint64_t at, td_error *err)
{
    if (zrc == Z_MEM_ERROR)
        return td__err(err, TD_ENOMEM, "%s: out of memory inflating", what);
    return td__err(err, TD_EFORMAT, "%s: corrupt deflate stream after %llu inflated bytes: %s",
                   what, (unsigned long long)at,
                   zs->msg ? zs->msg : (zrc == Z_NEED_DICT ? "needs a dictionary" : "error"));
}

/* Where the inflated bytes go, and when the stream must end. */
typedef struct flate__out {
    uint64_t skip;      /* the first skip bytes go to scratch and are dropped */
    uint8_t *dst;       /* the next dst_len bytes go here (NULL: to scratch as well) */
    uint64_t dst_len;   /* 0 when dst is NULL */
    int prefix;         /* stop after skip + dst_len bytes, and an earlier end is no error */
    uint8_t *scratch;   /* at least 1 byte */
    size_t scratch_cap; /* its size */
} flate__out;

/* The one inflate loop. Without o->prefix the stream must end after exactly skip + dst_len
 * bytes: output past that goes to scratch only to be refused at once. With o->prefix the loop
 * stops once skip + dst_len bytes have come, and a stream that ends before is fine. *produced
 * receives the bytes inflated (also on failure); *crc (when not NULL, on success) their CRC-32,
 * skipped ones included. */
static int flate__inflate_loop(const uint8_t *src, uint64_t src_len, const flate__out *o,
                               uint64_t *produced, uint32_t *crc, const char *what, td_error *err)
{
    *produced = 0;
    uint64_t total;
    if (!td__add_u64(o->skip, o->dst_len, &total))
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
        if (o->prefix && out == total)
            break;
        if (zs.avail_in == 0 && in_left) {
            uInt k = in_left < FLATE__ZCHUNK ? (uInt)in_left : FLATE__ZCHUNK;
            zs.next_in = (Bytef *)(uintptr_t)in;
            zs.avail_in = k;
            in += k;
            in_left -= k;
        }
        uint8_t *buf;
        uInt room;
        if (o->dst && out >= o->skip && out < total) {
            uint64_t left = total - out;
            buf = o->dst + (out - o->skip);
            room = left < FLATE__ZCHUNK ? (uInt)left : FLATE__ZCHUNK;
        } else {
            /* Skipped bytes, a checked-only stream, or output past the end (which must not
             * happen: any byte produced there is an error). */
            uint64_t left = out < o->skip ? o->skip - out : o->scratch_cap;
            buf = o->scratch;
            room = left < o->scratch_cap ? (uInt)left : (uInt)o->scratch_cap;
        }
        zs.next_out = buf;
        zs.avail_out = room;
        zrc = inflate(&zs, Z_NO_FLUSH);
        uInt made = room - zs.avail_out;
        if (made) {
            if (crc)
                c = (uint32_t)crc32_z(c, buf, made);
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
        rc = flate__zerr(zrc, &zs, what, out, err);
        break;
    }
    inflateEnd(&zs);
    *produced = out;
    if (!rc && !o->prefix && out != total)
        rc = td__err(err, TD_EFORMAT, "%s: inflates to %llu bytes, the directory says %llu", what,
                     (unsigned long long)out, (unsigned long long)total);
    if (!rc && crc)
        *crc = c;
    return rc;
}

/* Runs the loop with scratch memory for the bytes that are not kept: a 4 KiB stack buffer, or up
 * to FLATE__SCRATCH from the heap when more than that is dropped. */
static int flate__inflate_run(const uint8_t *src, uint64_t src_len, flate__out *o,
                              uint64_t *produced, uint32_t *crc, const char *what, td_error *err)
{
    uint8_t stack[4096];
    o->scratch = stack;
    o->scratch_cap = sizeof stack;
    if (o->skip > sizeof stack) {
        o->scratch_cap = o->skip < FLATE__SCRATCH ? (size_t)o->skip : FLATE__SCRATCH;
        o->scratch = malloc(o->scratch_cap);
        if (!o->scratch)
            return td__err(err, TD_ENOMEM, "%s: out of memory inflating", what);
    }
    int rc = flate__inflate_loop(src, src_len, o, produced, crc, what, err);
    if (o->scratch != stack)
        free(o->scratch);
    return rc;
}

int td__flate_inflate(const uint8_t *src, uint64_t src_len, uint64_t skip, uint8_t *dst,
                      uint64_t dst_len, uint32_t *crc, const char *what, td_error *err)
{
    flate__out o = {.skip = skip, .dst = dst, .dst_len = dst ? dst_len : 0};
    uint64_t produced;
    return flate__inflate_run(src, src_len, &o, &produced, crc, what, err);
}

int td__flate_inflate_prefix(const uint8_t *src, uint64_t src_len, uint8_t *out, size_t cap,
                             size_t *out_len, const char *what, td_error *err)
{
    flate__out o = {.dst = out, .dst_len = cap, .prefix = 1};
    uint64_t produced;
    int rc = flate__inflate_run(src, src_len, &o, &produced, NULL, what, err);
    *out_len = (size_t)produced; /* at most cap */
    return rc;
}

int td__flate_inflate_whole(const uint8_t *src, uint64_t src_len, uint8_t *out, uint64_t out_len,
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
    return td__flate_inflate(src, src_len, 0, out, out_len, crc, what, err);
}

/* ------------------------------------------------------------------------------------------ */
/* Deflate */

void td__flate_deflater_init(td__flate_deflater *d, td__writer *w, const char *fname)
{
    memset(d, 0, sizeof *d);
    d->w = w;
    d->fname = fname ? fname : "(deflate)";
}

void td__flate_deflater_destroy(td__flate_deflater *d)
{
    if (d->zlib_ready)
        deflateEnd(&d->zs);
#ifdef TD_HAVE_LIBDEFLATE
    libdeflate_free_compressor(d->ld);
#endif
    free(d->zbuf);
    memset(d, 0, sizeof *d);
}

int td__flate_deflate_begin(td__flate_deflater *d, int level, td_error *err)
{
    d->done = 0;
    d->level = level;
    d->in = 0;
    d->out = 0;
    if (!d->zbuf && !(d->zbuf = malloc(FLATE__ZBUF)))
        return td__err(err, TD_ENOMEM, "%s: out of memory for deflate", d->fname);
    int zrc = Z_OK;
    if (d->zlib_ready && d->zlevel == level) {
        zrc = deflateReset(&d->zs);
    } else {
        if (d->zlib_ready)
            deflateEnd(&d->zs);
        d->zlib_ready = 0;
        memset(&d->zs, 0, sizeof d->zs);
        zrc = deflateInit2(&d->zs, level, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
        if (zrc == Z_OK) {
            d->zlib_ready = 1;
            d->zlevel = level;
        }
    }
    if (zrc != Z_OK)
        return td__err(err, zrc == Z_MEM_ERROR ? TD_ENOMEM : TD_EINVAL,
                       "%s: cannot start deflate (zlib %d, level %d)", d->fname, zrc, level);
    return 0;
}

/* Runs zlib's deflate over the pending input with `flush`, writing out whatever it produces. */
static int flate__deflate_run(td__flate_deflater *d, int flush, td_error *err)
{
    for (;;) {
        d->zs.next_out = d->zbuf;
        d->zs.avail_out = FLATE__ZBUF;
        int zrc = deflate(&d->zs, flush);
        if (zrc == Z_STREAM_ERROR)
            return td__err(err, TD_EIO, "%s: deflate failed", d->fname);
        size_t made = FLATE__ZBUF - d->zs.avail_out;
        if (made) {
            if (td__writer_write(d->w, d->zbuf, made))
                return td__writer_fail(d->w, d->fname, err);
            d->out += made;
        }
        if (flush == Z_FINISH ? zrc == Z_STREAM_END : (d->zs.avail_in == 0 && made < FLATE__ZBUF))
            return 0;
    }
}

int td__flate_deflate_data(td__flate_deflater *d, const void *p, size_t n, td_error *err)
{
    if (d->done && n)
        return td__err(err, TD_EINVAL, "%s: deflate data after the last piece", d->fname);
    const uint8_t *q = p;
    while (n) {
        uInt k = n < FLATE__ZCHUNK ? (uInt)n : FLATE__ZCHUNK;
        d->zs.next_in = (Bytef *)(uintptr_t)q;
        d->zs.avail_in = k;
        int rc = flate__deflate_run(d, Z_NO_FLUSH, err);
        if (rc)
            return rc;
        d->in += k;
        q += k;
        n -= k;
    }
    return 0;
}

#ifdef TD_HAVE_LIBDEFLATE
/* The last piece in one libdeflate call, after a byte-aligned flush of what zlib took. */
static int flate__deflate_last_ld(td__flate_deflater *d, const void *p, size_t n, td_error *err)
{
    if (d->in) {
        d->zs.next_in = NULL;
        d->zs.avail_in = 0;
        int rc = flate__deflate_run(d, Z_FULL_FLUSH, err);
        if (rc)
            return rc;
    }
    int lvl = d->level < 0 ? 6 : d->level;
    if (d->ld && d->ld_level != lvl) {
        libdeflate_free_compressor(d->ld);
        d->ld = NULL;
    }
    if (!d->ld && !(d->ld = libdeflate_alloc_compressor(lvl)))
        return td__err(err, TD_ENOMEM, "%s: cannot set up libdeflate (level %d)", d->fname, lvl);
    d->ld_level = lvl;
    size_t bound = libdeflate_deflate_compress_bound(d->ld, n);
    /* Pages of the bound that the output never reaches are never touched, so this costs the
     * compressed size, not the bound. */
    uint8_t *out = malloc(bound ? bound : 1);
    if (!out)
        return td__err(err, TD_ENOMEM, "%s: out of memory for %zu compressed bytes", d->fname,
                       bound);
    size_t c = libdeflate_deflate_compress(d->ld, p, n, out, bound);
    int rc = 0;
    if (!c)
        rc = td__err(err, TD_EIO, "%s: libdeflate failed on %zu bytes", d->fname, n);
    else if (td__writer_write(d->w, out, c))
        rc = td__writer_fail(d->w, d->fname, err);
    free(out);
    if (rc)
        return rc;
    d->in += n;
    d->out += c;
    d->done = 1;
    return 0;
}
#endif

int td__flate_deflate_last(td__flate_deflater *d, const void *p, size_t n, td_error *err)
{
#ifdef TD_HAVE_LIBDEFLATE
    if (!d->done && n >= FLATE__LD_MIN && n <= FLATE__LD_MAX)
        return flate__deflate_last_ld(d, p, n, err);
#endif
    return td__flate_deflate_data(d, p, n, err);
}

int td__flate_deflate_end(td__flate_deflater *d, td_error *err)
{
    if (d->done)
        return 0;
    d->zs.next_in = NULL;
    d->zs.avail_in = 0;
    int rc = flate__deflate_run(d, Z_FINISH, err);
    if (!rc)
        d->done = 1;
    return rc;
}

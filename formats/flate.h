/*
 * flate.h - the engines under the zip reader and writer: raw deflate streams (RFC 1951, no
 * zlib or gzip wrapper) inflated and deflated, and CRC-32.
 *
 * zlib is the baseline and always there. Built with TD_HAVE_LIBDEFLATE, libdeflate takes the
 * whole-buffer paths, where the sizes are known up front (every npz member's are): inflating a
 * member in one call, deflating a member's last piece in one call, and CRC-32. It is about twice
 * zlib's speed at both, and four times at CRC-32. Streaming stays with zlib, in memory that does
 * not depend on the stream's size.
 *
 * Every zlib inflate goes through one loop (flate.c), whatever the caller wants of the output:
 * all of it in a buffer, only a prefix of it, or only its length and CRC-32. So a hostile
 * stream meets the same checks on every path: output beyond what was declared is refused as
 * soon as it is produced, never written, and a stream that stops short is named.
 *
 * `what` starts every message ("FILE: member 'NAME'"); the functions add no file name of their
 * own.
 */
#ifndef TD_FLATE_H
#define TD_FLATE_H

#include "tensord.h"
#include "writer.h"

#include <stddef.h>
#include <stdint.h>

#include <zlib.h>

/* "zlib", or "libdeflate" when built with TD_HAVE_LIBDEFLATE. */
const char *td__flate_engine(void);

/* CRC-32 (zlib's polynomial) of p[0..n), continuing from crc (start with 0); any n. */
uint32_t td__flate_crc32(uint32_t crc, const void *p, size_t n);

/* Inflates the raw deflate stream src[0..src_len) with zlib, streaming: the first `skip` bytes
 * it produces are hashed and dropped, the next dst_len go to dst, and the stream must then end
 * (compressed bytes after its end are ignored). dst may be NULL when dst_len is 0: the stream is
 * then only checked (its length must be skip, and *crc says what it held), in 256 KiB pieces.
 * *crc (when not NULL) receives the CRC-32 of all inflated bytes, skipped ones included; the
 * caller compares it. Never writes outside dst[0..dst_len). Errors: TD_EFORMAT for a corrupt
 * stream ("corrupt deflate stream"), for more output than skip + dst_len ("inflates to more than
 * the declared N bytes", detected as soon as it happens) and for less ("inflates to N bytes, the
 * directory says M"); TD_ETRUNC when src ends before the stream does; TD_ENOMEM. */
int td__flate_inflate(const uint8_t *src, uint64_t src_len, uint64_t skip, uint8_t *dst,
                      uint64_t dst_len, uint32_t *crc, const char *what, td_error *err);

/* As td__flate_inflate without a skip, in one whole-buffer call: libdeflate when built with
 * TD_HAVE_LIBDEFLATE, zlib otherwise. Any libdeflate failure is re-run through zlib so that the
 * error (and its message) is the same in both builds. */
int td__flate_inflate_whole(const uint8_t *src, uint64_t src_len, uint8_t *out, uint64_t out_len,
                            uint32_t *crc, const char *what, td_error *err);

/* Inflates at most cap bytes of the start of a raw deflate stream into out, for reading a header
 * without inflating the data behind it. *out_len receives the bytes produced: cap, or fewer when
 * the stream ends first (not an error here). zlib may read input past what it needs for those
 * bytes, so how much of the stream src holds can decide whether a corrupt stream shows here.
 * Errors as td__flate_inflate (TD_ETRUNC when src ends before cap bytes or the stream's end). */
int td__flate_inflate_prefix(const uint8_t *src, uint64_t src_len, uint8_t *out, size_t cap,
                             size_t *out_len, const char *what, td_error *err);

/* A deflate stream written piece by piece into a td__writer, one stream after another (one per
 * zip member). The zlib state is kept from one stream to the next (deflateReset), since setting
 * one up costs about 256 KiB of fresh memory: an archive of many small members would otherwise
 * spend its time in the allocator. Fields are private to flate.c except `out`. */
typedef struct td__flate_deflater {
    td__writer *w;     /* borrowed: compressed bytes go here */
    const char *fname; /* borrowed, for messages */
    int zlib_ready;    /* zs is initialised (deflateInit2 succeeded) */
    int zlevel;        /* the level zs was set up with */
    int level;         /* the current stream's level */
    int done;          /* the current stream is complete (its last piece went through libdeflate,
                          or td__flate_deflate_end ran) */
    void *ld;          /* owned: libdeflate compressor, when built with TD_HAVE_LIBDEFLATE */
    int ld_level;      /* its level */
    z_stream zs;       /* zlib's deflate state */
    uint8_t *zbuf;     /* owned: zlib's output buffer */
    uint64_t in;       /* uncompressed bytes taken by the current stream */
    uint64_t out;      /* compressed bytes of the current stream written to w */
} td__flate_deflater;

/* Prepares d to write through w (which stays the caller's); fname names the output in messages.
 * Allocates nothing: an unused deflater costs nothing. */
void td__flate_deflater_init(td__flate_deflater *d, td__writer *w, const char *fname);

/* Starts a new stream at zlib level `level` (-1: zlib's default, 6). TD_ENOMEM, or TD_EINVAL
 * for a level zlib refuses. */
int td__flate_deflate_begin(td__flate_deflater *d, int level, td_error *err);

/* Deflates p[0..n) into the stream, writing whatever comes out. */
int td__flate_deflate_data(td__flate_deflater *d, const void *p, size_t n, td_error *err);

/* As td__flate_deflate_data, for the stream's last bytes. Built with TD_HAVE_LIBDEFLATE, a last
 * piece of 4 KiB to 1 GiB is compressed by libdeflate in one call (about twice zlib's speed):
 * what zlib took before is flushed to a byte boundary (Z_FULL_FLUSH: no back-references across
 * it), and libdeflate's blocks, the last one final, follow to form one valid stream; nothing may
 * be added after it. Otherwise the same as td__flate_deflate_data. */
int td__flate_deflate_last(td__flate_deflater *d, const void *p, size_t n, td_error *err);

/* Ends the current stream (writes zlib's final block unless the stream is complete already).
 * d->out then holds the stream's compressed size. */
int td__flate_deflate_end(td__flate_deflater *d, td_error *err);

/* Frees what d owns, at any point (also after a failure or mid-stream). Not the writer. */
void td__flate_deflater_destroy(td__flate_deflater *d);

#endif

/*
 * zip.h - the zip container, as much of it as .npz needs: a reader that tells where each
 * member's bytes sit in the file, and a writer for stored and deflated members.
 *
 * On disk (PKWARE APPNOTE 6.3), all integers little-endian:
 *   1. per member: a local file header
 *        "PK\3\4", version needed u16, flags u16, method u16, time u16, date u16, crc32 u32,
 *        compressed size u32, uncompressed size u32, name length u16, extra length u16,
 *        name, extra fields (id u16, size u16, data)
 *      then the member data (compressed size bytes), then, when flag bit 3 is set, a data
 *      descriptor: ["PK\7\10"] crc32 u32, sizes as u32 or (zip64) u64.
 *   2. the central directory: per member
 *        "PK\1\2", version made by u16, version needed u16, flags u16, method u16, time, date,
 *        crc32 u32, compressed size u32, uncompressed size u32, name length u16, extra length
 *        u16, comment length u16, disk u16, internal attributes u16, external attributes u32,
 *        local header offset u32, name, extra, comment
 *   3. zip64 only: the zip64 end of central directory record ("PK\6\6") and its locator
 *      ("PK\6\7", which holds the record's offset)
 *   4. the end of central directory record "PK\5\6": disk numbers, member counts (u16),
 *      directory size and offset (u32), comment length u16, comment (up to 65535 bytes)
 *   A size, offset or count too large for its field is stored as all ones and the real value
 *   lives in the zip64 extra field (id 0x0001: uncompressed size, compressed size, local
 *   header offset, disk - each present only when its 32-bit field is all ones; a local
 *   header's zip64 field always holds both sizes) or in the zip64 end record.
 *
 * The reader goes by the central directory, supports methods 0 (stored) and 8 (deflate), and
 * refuses encryption, other methods, multi-disk archives, names that could escape a
 * directory, members that overlap each other or the directory, and anything that points
 * outside the file. It never reads member data (except for td__zip_verify).
 *
 * The writer writes stored or deflated members with sizes known up front, zip64 records only
 * where a field needs them, and can pad a stored member's local header (through an extra
 * field, like Android's zipalign) so that a chosen byte of its data falls on an aligned file
 * offset. Timestamps are fixed (1980-01-01 00:00) so that saving the same arrays twice gives
 * the same bytes.
 */
#ifndef TD_ZIP_H
#define TD_ZIP_H

#include "reader.h"
#include "tensord.h"
#include "writer.h"

#include <stddef.h>
#include <stdint.h>

#include <zlib.h>

#define ZIP_SIG_LOCAL       0x04034b50u
#define ZIP_SIG_CENTRAL     0x02014b50u
#define ZIP_SIG_EOCD        0x06054b50u
#define ZIP_SIG_EOCD64      0x06064b50u
#define ZIP_SIG_EOCD64_LOC  0x07064b50u
#define ZIP_SIG_DESCRIPTOR  0x08074b50u
#define ZIP_LOCAL_LEN       30u
#define ZIP_CENTRAL_LEN     46u
#define ZIP_EOCD_LEN        22u
#define ZIP_EOCD64_LEN      56u
#define ZIP_EOCD64_LOC_LEN  20u
#define ZIP_MAX_COMMENT     65535u
#define ZIP_METHOD_STORED   0u
#define ZIP_METHOD_DEFLATE  8u
#define ZIP_EXTRA_ZIP64     0x0001u
#define ZIP_EXTRA_ALIGN     0xd935u /* Android zipalign: u16 alignment, then zero padding */
#define ZIP_FLAG_ENCRYPTED  0x0001u
#define ZIP_FLAG_DESCRIPTOR 0x0008u
#define ZIP_FLAG_STRONG_ENC 0x0040u
#define ZIP_FLAG_UTF8       0x0800u
#define ZIP_FLAG_CD_ENC     0x2000u

/* Deflate cannot expand its input more than 1032:1; a member that claims more than this many
 * bytes per compressed byte (plus ZIP_RATIO_SLACK for tiny streams) is refused from the
 * directory alone. */
#define ZIP_MAX_RATIO   1032u
#define ZIP_RATIO_SLACK 1024u

/* One member, as the central directory describes it, with the positions checked. */
typedef struct td__zip_member {
    const char *name;      /* borrowed from the reader, NOT NUL-terminated */
    size_t name_len;       /* bytes of name */
    uint16_t method;       /* ZIP_METHOD_STORED or ZIP_METHOD_DEFLATE */
    uint16_t flags;        /* general purpose flags from the central directory */
    uint32_t crc32;        /* CRC-32 of the uncompressed bytes, as declared */
    uint64_t csize;        /* compressed (stored) bytes in the file */
    uint64_t usize;        /* uncompressed bytes, as declared */
    uint64_t local_offset; /* absolute offset of the local header */
    uint64_t data_offset;  /* absolute offset of the first data byte */
    uint64_t end_offset;   /* one past the member's last byte (data descriptor included) */
} td__zip_member;

/* An opened archive: the members in central-directory order. Member names point into bytes
 * the reader holds: the archive must be closed before the reader. */
typedef struct td__zip_archive {
    size_t n;
    td__zip_member *members; /* owned */
    uint64_t cd_offset;      /* where the central directory starts */
    int zip64;               /* the archive has a zip64 end record */
} td__zip_archive;

/* Parses and checks the archive r reads (r->fname names it in messages). On success *z
 * holds the members (release with td__zip_close); on failure *z is empty and nothing leaks.
 * Checks: end records found in the last 64 KiB + 22 bytes, the directory and every local
 * header inside the file, local and central headers agree (name, method; crc and sizes unless
 * a data descriptor follows, which is then checked instead), method stored or deflate, no
 * encryption, no '..'/absolute/backslash/NUL names, stored members have usize == csize,
 * deflated members claim at most ZIP_MAX_RATIO x csize (+ slack), no two members overlap and
 * none runs into the central directory. Member data itself is not read. */
int td__zip_open(td__rd *r, td__zip_archive *z, td_error *err);

/* Frees the member list; z can be reused. No operation on an empty or zeroed archive. */
void td__zip_close(td__zip_archive *z);

/* Checks that name[0..len) is a safe relative member name: non-empty, no NUL, no backslash,
 * no leading '/', no '..' component. Returns 0 or TD_EFORMAT naming fname and the name. */
int td__zip_check_name(const char *name, size_t len, const char *fname, td_error *err);

/* Opens the archive and checks every member's CRC-32 and size against its data: stored
 * members are hashed in place, deflated ones inflated in 256 KiB pieces (memory use does not
 * depend on member sizes). 0 when all is well; TD_ECHECKSUM, TD_EFORMAT, TD_ETRUNC ... naming
 * the member otherwise. */
int td__zip_verify(const uint8_t *base, size_t len, const char *fname, td_error *err);

/* CRC-32 (zlib's polynomial) of p[0..n), continuing from crc (start with 0); any n. */
uint32_t td__zip_crc32(uint32_t crc, const void *p, size_t n);

/* "zlib", or "libdeflate" when built with TD_HAVE_LIBDEFLATE (whole-buffer inflate and deflate,
 * and CRC-32, go through libdeflate; streaming stays with zlib). */
const char *td__zip_deflate_engine(void);

/* Inflates the raw deflate stream src[0..src_len) (zlib, streaming): the first `skip` bytes it
 * produces are hashed and dropped, the next dst_len go to dst, and the stream must then end
 * (compressed bytes after its end are ignored). *crc (when not NULL) receives the CRC-32 of all
 * inflated bytes, skipped ones included; the caller compares it. Never writes outside
 * dst[0..dst_len). `what` starts every message. Errors: TD_EFORMAT for a corrupt stream
 * ("corrupt deflate stream"), for more output than skip + dst_len ("inflates to more than the
 * declared N bytes", detected as soon as it happens) and for less ("inflates to N bytes, the
 * directory says M"); TD_ETRUNC when src ends before the stream does; TD_ENOMEM. */
int td__zip_inflate(const uint8_t *src, uint64_t src_len, uint64_t skip, uint8_t *dst,
                    uint64_t dst_len, uint32_t *crc, const char *what, td_error *err);

/* As td__zip_inflate without a skip, in one whole-buffer call: libdeflate when built with
 * TD_HAVE_LIBDEFLATE (about twice zlib's speed), zlib otherwise. Any libdeflate failure is
 * re-run through zlib so that the error (and its message) is the same in both builds. */
int td__zip_inflate_whole(const uint8_t *src, uint64_t src_len, uint8_t *out, uint64_t out_len,
                          uint32_t *crc, const char *what, td_error *err);

/* Inflates at most cap bytes of the start of a raw deflate stream into out, for reading a
 * header without inflating the data behind it. *out_len receives the bytes produced (less than
 * cap only when the stream ends first). */
int td__zip_inflate_prefix(const uint8_t *src, uint64_t src_len, uint8_t *out, size_t cap,
                           size_t *out_len, const char *what, td_error *err);

/* ------------------------------------------------------------------------------------------ */
/* Writer */

typedef struct td__zip__cd_rec td__zip__cd_rec;

typedef struct td__zip_writer {
    td__writer *w;         /* borrowed; every byte goes through it */
    int force_zip64;       /* set after init to write zip64 fields everywhere, as Python's
                              force_zip64 does (tests of readers' zip64 paths on small files) */
    const char *fname;     /* borrowed, for messages */
    td__zip__cd_rec *recs; /* owned: what the central directory will say */
    size_t n, cap;
    /* the member being written */
    int open;          /* td__zip_writer_begin called, td__zip_writer_end not yet */
    int zlib_ready;    /* zs is initialised (deflateInit2 succeeded); kept across members */
    int zlevel;        /* the level zs was set up with */
    int level;         /* the current member's level */
    int stream_done;   /* the current member's deflate stream is complete (libdeflate) */
    void *ld;          /* owned: libdeflate compressor, when built with TD_HAVE_LIBDEFLATE */
    int ld_level;      /* its level */
    z_stream zs;       /* deflate state for a deflated member */
    uint8_t *zbuf;     /* owned: deflate output buffer */
    uint32_t crc;      /* running CRC-32 of the member's uncompressed bytes */
    uint64_t got;      /* uncompressed bytes received so far */
    uint64_t csize;    /* compressed bytes written so far */
    uint64_t data_pos; /* file offset of the member data */
} td__zip_writer;

/* Prepares zw to write an archive through w (which stays the caller's). Use: begin, data...,
 * end for each member, then finish, then destroy. After any failure only td__zip_writer_destroy
 * may follow (the archive is unfinished; the caller discards the output). */
void td__zip_writer_init(td__zip_writer *zw, td__writer *w, const char *fname);

/* Starts member `name` (copied; checked with td__zip_check_name) holding exactly usize bytes,
 * stored (ZIP_METHOD_STORED) or deflated (ZIP_METHOD_DEFLATE, zlib level `level`, -1 for
 * zlib's default). For a stored member and align > 1 (a power of two <= 32768), the local
 * header is padded so that data byte number align_at falls on a multiple of align in the file.
 * Writes the local header (its CRC and compressed size are patched in by td__zip_writer_end). */
int td__zip_writer_begin(td__zip_writer *zw, const char *name, unsigned method, int level,
                         uint64_t usize, uint64_t align, uint64_t align_at, td_error *err);

/* Appends n bytes of the member's uncompressed content. */
int td__zip_writer_data(td__zip_writer *zw, const void *p, size_t n, td_error *err);

/* As td__zip_writer_data, for the member's last bytes (exactly what is left of usize). Built with
 * TD_HAVE_LIBDEFLATE, a deflated member's last piece (4 KiB to 1 GiB) is compressed by
 * libdeflate in one call, about twice as fast as zlib; otherwise the same as td__zip_writer_data.
 * No data may follow. */
int td__zip_writer_data_last(td__zip_writer *zw, const void *p, size_t n, td_error *err);

/* Ends the member: checks that exactly usize bytes came, flushes deflate, patches the local
 * header. */
int td__zip_writer_end(td__zip_writer *zw, td_error *err);

/* Writes the central directory and the end records (zip64 ones when needed). The caller then
 * flushes the td__writer. */
int td__zip_writer_finish(td__zip_writer *zw, td_error *err);

/* Frees what zw owns (also after a failure at any point). Not the td__writer. */
void td__zip_writer_destroy(td__zip_writer *zw);

#endif

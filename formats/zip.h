/*
 * zip.h - the zip container, as much of it as .npz needs: the on-disk layout, and the reader
 * that tells where each member's bytes sit in the file. The writer is zip_writer.h; the inflate
 * and deflate engines under both are flate.h.
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
 */
#ifndef TD_ZIP_H
#define TD_ZIP_H

#include "reader.h"
#include "tensord.h"

#include <stddef.h>
#include <stdint.h>

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
/* A field holding all ones says "the value is in the zip64 extra field or end record". */
#define ZIP_U16_MAX 0xffffu
#define ZIP_U32_MAX 0xffffffffu

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
 * members are hashed in place, deflated ones inflated (td__flate_inflate) in 256 KiB pieces
 * (memory use does not depend on member sizes). 0 when all is well; TD_ECHECKSUM, TD_EFORMAT,
 * TD_ETRUNC ... naming the member otherwise. */
int td__zip_verify(const uint8_t *base, size_t len, const char *fname, td_error *err);

#endif

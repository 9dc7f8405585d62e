/*
 * zip_writer.h - the zip writer, for .npz: stored or deflated members with sizes known up front,
 * zip64 records only where a field needs them (see zip.h for the layout).
 *
 * A stored member's local header can be padded (through an extra field, like Android's
 * zipalign) so that a chosen byte of its data falls on an aligned file offset: npz members are
 * viewed in place, so their data must be aligned for its dtype. Timestamps are fixed
 * (1980-01-01 00:00) so that saving the same arrays twice gives the same bytes. Deflated members
 * go through a td__flate_deflater (flate.h).
 */
#ifndef TD_ZIP_WRITER_H
#define TD_ZIP_WRITER_H

#include "flate.h"
#include "tensord.h"
#include "writer.h"
#include "zip.h"

#include <stddef.h>
#include <stdint.h>

typedef struct td__zip__cd_rec td__zip__cd_rec;

typedef struct td__zip_writer {
    td__writer *w;         /* borrowed; every byte goes through it */
    int force_zip64;       /* set after init to write zip64 fields everywhere, as Python's
                              force_zip64 does (tests of readers' zip64 paths on small files) */
    const char *fname;     /* borrowed, for messages */
    td__zip__cd_rec *recs; /* owned: what the central directory will say */
    size_t n, cap;
    td__flate_deflater df; /* owned state; its streams go to w */
    /* the member being written */
    int open;          /* td__zip_writer_begin called, td__zip_writer_end not yet */
    uint32_t crc;      /* running CRC-32 of the member's uncompressed bytes */
    uint64_t got;      /* uncompressed bytes received so far */
    uint64_t csize;    /* compressed bytes: counted as written (stored), or taken from df when
                          the member ends (deflated) */
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

/*
 * npz.h - NumPy's .npz: a zip archive (see zip.h) of .npy members (see npy.h).
 *
 * On disk:
 *   1. one zip member per array, named KEY.npy, stored (np.savez) or deflated
 *      (np.savez_compressed); its content is a whole .npy file (header, then data)
 *   2. the zip central directory and end records
 *
 * Loading: keys are member names minus ".npy", in central-directory (archive) order. Every
 * member must end in ".npy": numpy's NpzFile would hand other members back as raw bytes and MLX
 * fails on them, so we refuse them with a clear error rather than skip them silently.
 *   - A stored member whose array is C order and little-endian becomes a zero-copy entry
 *     (region 0, offset = absolute file offset of its data). Its data is not read, so its CRC is
 *     not checked on load (td__zip_verify does that, for `tensorctl verify`).
 *   - A stored big-endian or Fortran-order member gets TD__LAYOUT_SWAP / _FORTRAN with src
 *     pointing at its data.
 *   - A deflated member gets TD__LAYOUT_DEFLATE (| SWAP / FORTRAN) with src describing the
 *     compressed stream; only its npy header (a bounded prefix) is inflated while indexing.
 *     td__npz_inflate_entry inflates the rest later, checking CRC-32 and size.
 *
 * Writing: members KEY.npy, stored or deflated (zlib's default level, like numpy). In stored
 * members the npy data starts at a multiple of 64 in the file (padding goes into the local
 * header's extra field), so that loaded views are aligned. zip64 records appear only where a
 * size, offset or count needs them.
 */
#ifndef TD_NPZ_H
#define TD_NPZ_H

#include "table.h"
#include "writer.h"

#include <stddef.h>
#include <stdint.h>

/* Data of stored members starts at a multiple of this in files we write. */
#define NPZ_ALIGN 64u

/* Indexes the npz r reads into t (initialised by the caller, format NPZ).
 * max_inflated bounds the sum of the declared uncompressed sizes of the deflated members
 * (0 = 16 GiB); an archive that declares more is refused (TD_ELIMIT) before anything is
 * inflated. Each deflated member's declared size must also be within deflate's 1032:1 ratio
 * of its compressed size (td__zip_open). Duplicate keys are TD_EDUP. On failure t may hold some
 * entries: the caller destroys t either way. Entries hold offsets, not pointers. */
int td__npz_index(td__rd *r, uint64_t max_inflated, td__table *t, td_error *err);

/* Inflates the deflated member of entry e (layout has TD__LAYOUT_DEFLATE; e->src from
 * td__npz_index) from file[0..file_len) into dst, which holds e->nbytes: the member's bytes after
 * its npy header, still in the member's byte order and element order (the caller applies
 * SWAP / FORTRAN). Fails with TD_EFORMAT when the stream is corrupt or inflates to another size
 * than declared (nothing past e->nbytes is ever written), TD_ECHECKSUM when the CRC-32 differs.
 * On failure dst holds unspecified bytes. */
int td__npz_inflate_entry(const td__entry *e, const uint8_t *file, size_t file_len, uint8_t *dst,
                          const char *fname, td_error *err);

/* Bytes td__npz_inflate_entry allocates for e besides dst (libdeflate inflates a member of up to
 * 256 MiB whole, into a copy), 0 when it streams into dst. */
uint64_t td__npz_inflate_scratch(const td__entry *e);

/* As td__npz_inflate_entry, but buf holds e->src.inflated bytes and receives the whole member, npy
 * header included: the data lands at buf + e->src.skip (a multiple of 64 in files numpy or we
 * wrote; check before relying on it). One whole-buffer inflate with no scratch copy, which is
 * the fast path when built with libdeflate; the same checks and errors as td__npz_inflate_entry. */
int td__npz_inflate_member(const td__entry *e, const uint8_t *file, size_t file_len, uint8_t *buf,
                           const char *fname, td_error *err);

/* Writes an npz of items[0..n) to w: member items[i].name + ".npy", in order, deflated when
 * compressed is non-zero, else stored with 64-byte aligned data. Names must be set (the
 * caller maps MLX's unnamed entries to arr_K) and distinct (TD_EDUP otherwise); names zip
 * readers would refuse (empty, '..' components, leading '/', backslash) are TD_EFORMAT; dtypes
 * npy cannot hold are TD_EDTYPE. Items are borrowed. The caller flushes w. */
int td__npz_write(td__writer *w, const td__item *items, size_t n, int compressed, const char *fname,
                  td_error *err);

#endif

/*
 * index.h - the codecs behind one switch: indexing a file of any format into a tensor table,
 * recognising a format by its first bytes, and decoding an entry whose layout is not a plain
 * view (inflate, byte swap, Fortran order, and through quant/ dequantization).
 */
#ifndef TD_INDEX_H
#define TD_INDEX_H

#include "table.h"

/* npz: the default bound on inflated bytes when the caller gives none. */
#define TD__DEFAULT_MAX_INFLATED (16ull << 30)

/* Indexes the file r reads, of a known format, into t (every codec, one switch), then checks
 * that every entry's bytes lie inside the file. max_inflated bounds npz inflation (0: the
 * default). t must be initialised. */
int td__index(td_format format, td__rd *r, uint64_t max_inflated, td__table *t, td_error *err);

/* The format a file's first bytes announce (magic numbers; safetensors by its '{' at byte 8),
 * or TD_FORMAT_AUTO when none. */
td_format td__detect_format(const uint8_t *base, size_t len);

/* Decodes an entry with a non-zero layout into dst (e->nbytes bytes): inflates, byte-swaps, turns
 * Fortran into C order, or dequantizes (quant/dequant.h). `file` is region 0, file_len bytes;
 * fname names it in messages. A deflated member must inflate to exactly the size its directory
 * declared (which td__index bounded) and match its CRC-32 (td__npz_inflate_entry). */
int td__decode_entry(const td__entry *e, const uint8_t *file, size_t file_len, void *dst,
                     const char *fname, td_error *err);

#endif

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

/* Decodes an entry with a non-zero layout into dst (e->nbytes): inflates, byte-swaps, turns
 * Fortran into C order. `file` is region 0. max_inflated bounds the inflated stream. */
int td__decode_entry(const td__entry *e, const uint8_t *file, size_t file_len, void *dst,
                     const char *fname, td_error *err);

/* The most td__decode_entry allocates for e on the way (scratch copies it frees before it
 * returns): what a caller that bounds its memory must allow for besides dst. */
uint64_t td__decode_scratch(const td__entry *e);

#endif

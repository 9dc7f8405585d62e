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

/* Marks every plain entry of t that lies in the file at an offset that is not a multiple of
 * its dtype's alignment (td__dtype_align) as TD__LAYOUT_ALIGN, so that whoever builds views
 * copies it once into aligned memory: td_load's views are always aligned to their item size,
 * whatever the writer did (np.savez members at odd offsets, a float32 after three float16 in a
 * safetensors file). The file's mapping is page aligned, so the file offset decides. */
void td__table_align(td__table *t);

/* The format a file's first bytes announce (magic numbers; safetensors by its '{' at byte 8),
 * or TD_FORMAT_AUTO when none. */
td_format td__detect_format(const uint8_t *base, size_t len);

/* Decodes an entry with a non-zero layout into dst (e->nbytes bytes): inflates, byte-swaps, turns
 * Fortran into C order, copies misaligned bytes, or dequantizes (quant/dequant.h). `file` is
 * region 0, file_len bytes; fname names it in messages. threads bounds the threads that
 * dequantize (the caller's included; 0: automatic); the other decoders run in the caller's. A
 * deflated member must inflate to exactly the size its directory declared (which td__index
 * bounded) and match its CRC-32 (td__npz_inflate_entry). */
int td__decode_entry(const td__entry *e, const uint8_t *file, size_t file_len, void *dst,
                     unsigned threads, const char *fname, td_error *err);

/* The most td__decode_entry allocates for e on the way (scratch copies it frees before it
 * returns): what a caller that bounds its memory must allow for besides dst. */
uint64_t td__decode_scratch(const td__entry *e);

#endif

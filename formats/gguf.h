/*
 * gguf.h - GGUF (versions 2 and 3), the file format of ggml and llama.cpp.
 *
 * On disk, every number little-endian:
 *   1. magic "GGUF" (4 bytes)
 *   2. version (u32): 2 or 3 (version 1 had u32 counts and is refused)
 *   3. number of tensors (u64)
 *   4. number of key-value pairs (u64)
 *   5. for each key-value pair:
 *      1. the key (string)
 *      2. the value type (u32, enum td_meta_type: the numbers are GGUF's)
 *      3a. for TD_META_ARRAY: the element type (u32), the element count (u64), the elements
 *          (an element may itself be an array: element type, count, elements)
 *      3b. otherwise the value: u8 i8 u16 i16 u32 i32 f32 u64 i64 f64 as such, bool as one byte
 *          0 or 1, string as below
 *   6. for each tensor:
 *      1. the name (string)
 *      2. the number of dimensions n_dims (u32, at most 4)
 *      3. ne[0..n_dims) (i64 each, never negative), innermost (fastest-varying) dimension first
 *      4. the GGML type id (u32)
 *      5. the offset of its data from the start of the data section (u64), a multiple of the
 *         alignment
 *   7. zero padding to the alignment, then the data section: the tensors' bytes
 *
 * A string is its byte length (u64) followed by that many bytes, no NUL.
 * The alignment is the u32 value of the key "general.alignment" when present (a power of two),
 * else GGUF_DEFAULT_ALIGNMENT.
 *
 * What we expose: a tensor's shape in C order (ne reversed), in elements even for GGML block
 * types, whose bytes are viewed as they are (zero-copy; dequantizing is someone else's job).
 * Metadata keeps its GGUF types exactly (td_meta): a u16 stays a u16, a one-element array stays
 * an array, an array of strings stays one.
 *
 * What we write is what llama.cpp's gguf_init_from_file expects: version 3, tensor offsets the
 * running total of the previous tensors' sizes each padded to the alignment, and the file ends
 * with the last tensor's padding.
 */
#ifndef TD_GGUF_H
#define TD_GGUF_H

#include "table.h"
#include "writer.h"

#include <stddef.h>
#include <stdint.h>

#define GGUF_MAGIC             "GGUF"
#define GGUF_MAGIC_LEN         4
#define GGUF_VERSION           3 /* written; 2 and 3 are read */
#define GGUF_KEY_ALIGNMENT     "general.alignment"
#define GGUF_DEFAULT_ALIGNMENT 32u
/* Largest general.alignment accepted, read or written (ggml itself has no bound). */
#define GGUF_MAX_ALIGNMENT (1u << 20)
/* GGML_MAX_DIMS: tensors have at most this many dimensions. */
#define GGUF_MAX_DIMS 4
/* GGML_MAX_NAME counts the NUL: llama.cpp refuses names of 64 bytes or more, so we never write
 * them. On read any name up to GGUF_MAX_NAME_READ bytes is accepted. */
#define GGUF_MAX_NAME      63u
#define GGUF_MAX_NAME_READ 65536u
/* Bound on the total number of string and nested-array elements in a file's metadata (each
 * costs an allocation; real vocabularies hold a few hundred thousand). */
#define GGUF_MAX_META_ITEMS (1u << 22)

/* Indexes the whole GGUF file r reads: validates the header, every
 * key-value pair and every tensor info, and fills t. Reads the header bytes only, never the
 * tensor data.
 *
 * t must be freshly initialised (td__table_init, any format); the format is set to
 * TD_FORMAT_GGUF. On success t holds one entry per tensor in file order: name, dtype (plain or
 * GGML block type), shape in C order and in elements, region 0, offset = absolute file offset
 * of the bytes, nbytes, layout 0; and t->meta holds every key-value pair in file order (never
 * NULL, possibly empty). The table owns all of it (td__table_destroy).
 *
 * Checks, each failing with a message naming fname, the tensor or key and the value: magic,
 * version (1 is TD_EVERSION, a byte-swapped version TD_ENOTSUP), counts against the bytes that
 * are left, string lengths, array counts and nesting depth (TD_META_MAX_DEPTH), value types,
 * bool bytes (0 or 1), duplicate keys and tensor names (TD_EDUP), general.alignment (a u32
 * power of two up to GGUF_MAX_ALIGNMENT), n_dims (at most 4), negative or overflowing shapes,
 * unknown GGML type ids (TD_EDTYPE), block types whose innermost size is not a multiple of the
 * block, offsets that are misaligned, past the end of the file (TD_ETRUNC) or overlapping.
 *
 * Like llama.cpp, a file with tensors must reach the start of its data section, but may end
 * right after the last tensor's bytes (the padding after it is not required).
 *
 * On failure t is left empty (as after td__table_init) and *err is filled. Nothing in t points
 * into what r read. */
int td__gguf_index(td__rd *r, td__table *t, td_error *err);

/* Writes a whole GGUF v3 file to w: header, meta (may be NULL: no key-value pairs), the tensor
 * infos of items[0..n) in that order, then their bytes, each padded to the alignment.
 *
 * The alignment is GGUF_DEFAULT_ALIGNMENT, or meta's "general.alignment", which must then be a
 * u32 power of two up to GGUF_MAX_ALIGNMENT. The key is written only when meta has it.
 *
 * Everything is checked before the first byte is written: names (present, unique, at most
 * GGUF_MAX_NAME bytes), dtypes (f32 f16 bf16 f64 i8 i16 i32 i64 and every GGML block type;
 * unsigned, bool, complex and float8 are TD_EDTYPE naming the tensor and dtype), ndim (at most
 * 4), shapes (block types: innermost size a multiple of the block), nbytes against the shape,
 * and the metadata (non-empty keys, valid types, nesting depth). items and meta are borrowed.
 * On failure *err is filled and w may hold a partial file, which the caller discards. */
int td__gguf_write(td__writer *w, const td__item *items, size_t n, const td_meta *meta,
                   const char *fname, td_error *err);

#endif

/*
 * safetensors.h - the safetensors format (huggingface/safetensors, plus MLX's C64).
 *
 * On disk:
 *   1. N: u64 little-endian, the header length; N <= ST_MAX_HEADER and 8 + N <= file size
 *   2. header: N bytes of UTF-8 JSON, starting with '{', possibly padded with trailing spaces
 *      (the Rust writer pads so that 8 + N is a multiple of 8). One object:
 *        "__metadata__": {"key": "value", ...}             optional, strings only
 *        "NAME": {"dtype": "F32", "shape": [2, 3], "data_offsets": [BEGIN, END]}   per tensor
 *      No other fields; no duplicate keys. Tensor order in the header is the file order.
 *   3. the data buffer: the rest of the file. Offsets are relative to its start. The tensors'
 *      [BEGIN, END) ranges, sorted, are contiguous from 0 with no gaps and no overlaps and end
 *      exactly at the end of the file; END - BEGIN == prod(shape) * itemsize. Data order need
 *      not follow header order.
 *
 * dtypes: BOOL U8 I8 U16 I16 F16 BF16 U32 I32 F32 U64 I64 F64 F8_E4M3 F8_E5M2, and C64 (MLX).
 * Elements are little-endian, C order.
 */
#ifndef TD_SAFETENSORS_H
#define TD_SAFETENSORS_H

#include "table.h"
#include "writer.h"

#include <stddef.h>
#include <stdint.h>

/* The Rust reference's cap on the header length. */
#define ST_MAX_HEADER 100000000u
/* The key of the metadata object in the header. */
#define ST_METADATA_KEY "__metadata__"

/* Parses and validates the whole safetensors file r reads and appends its tensors
 * to t in header order: region 0, offset = absolute file offset of the data, layout 0. Sets
 * t->meta (which must be NULL on entry) to a new td_meta holding __metadata__'s strings in
 * header order, empty when the file has none. r->fname names the file in messages.
 * On failure t may hold some entries and a meta; the caller releases them with
 * td__table_destroy, as for every codec. Nothing else is allocated past the call. */
int td__st_index(td__rd *r, td__table *t, td_error *err);

/* Writes a whole safetensors file of n items to w: the header lists them in the given order,
 * __metadata__ first when meta has entries (strings only: any other value is TD_EDTYPE naming
 * its key). Data is laid out by item size, largest first (stable), so that every tensor starts
 * at a multiple of its item size in the file; the header is padded with spaces so that 8 + N
 * is a multiple of 8. Unnamed items are TD_EINVAL, repeated names TD_EDUP, dtypes safetensors
 * cannot hold (complex128, GGML blocks) TD_EDTYPE, an nbytes that does not match the shape
 * TD_EINVAL. items and meta are borrowed. The caller owns w (flush, fsync, rename). */
int td__st_write(td__writer *w, const td__item *items, size_t n, const td_meta *meta,
                 const char *fname, td_error *err);

#endif

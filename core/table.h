/*
 * table.h - the tensor table: what parsing any file yields, in every mode.
 *
 * A table is a flat list of entries {name, dtype, shape, region, offset, nbytes, layout} plus the
 * file's metadata. `region` names the mapped buffer that holds the bytes (0 = the file itself,
 * others = derived buffers the daemon made); `layout` says whether the bytes can be viewed as
 * they are (0: C order, little-endian, plain) or need decoding first. For an entry with a
 * non-zero layout, `src` describes the encoded bytes in region 0 and `offset`/`region` are
 * filled in by whoever decodes it.
 *
 * The embedded loader and the daemon build tables with the same codecs; the daemon sends them
 * over the socket (proto/) with every entry decoded (layout 0).
 */
#ifndef TD_TABLE_H
#define TD_TABLE_H

#include "reader.h"
#include "tensord.h"

#include <stddef.h>
#include <stdint.h>

/* Layout flags: what stands between the stored bytes and a C-order little-endian view. */
enum {
    TD__LAYOUT_SWAP = 1u << 0,    /* big-endian elements (complex: each half swapped) */
    TD__LAYOUT_FORTRAN = 1u << 1, /* column-major order */
    TD__LAYOUT_DEFLATE = 1u << 2, /* a deflated npz member: src holds the stream */
    TD__LAYOUT_DEQUANT = 1u << 3, /* GGML blocks of src.block, dequantized to dtype */
    TD__LAYOUT_MLX_W = 1u << 4,   /* MLX packed form of src.block: the uint32 weights */
    TD__LAYOUT_MLX_S = 1u << 5,   /* ... the float16 scales */
    TD__LAYOUT_MLX_B = 1u << 6,   /* ... the float16 biases */
    TD__LAYOUT_ALIGN = 1u << 7,   /* plain bytes stored at an offset that is not a multiple of
                                     the dtype's alignment: copied once into aligned memory */
};

/* Where the encoded bytes of a non-plain entry are, in region 0. */
typedef struct td__src {
    uint64_t offset;   /* first byte of the stored (maybe deflated) bytes in the file */
    uint64_t nbytes;   /* stored bytes */
    uint64_t inflated; /* DEFLATE: bytes the stream inflates to (npy header included) */
    uint64_t skip;     /* DEFLATE: bytes of npy header at the start of the inflated stream */
    uint32_t crc32;    /* DEFLATE: CRC-32 of the inflated stream */
    td_dtype block;    /* DEQUANT, MLX_*: the GGML block type stored */
    uint64_t elems;    /* DEQUANT, MLX_*: elements stored (the innermost size is row_elems) */
    uint64_t row_elems;
} td__src;

typedef struct td__entry {
    char *name;      /* owned, NUL-terminated UTF-8; NULL for a bare .npy */
    td_dtype dtype;  /* element or block type */
    uint32_t ndim;   /* 0..TD_MAX_DIMS */
    int64_t *shape;  /* owned, ndim sizes, C order, in elements; NULL when ndim == 0 */
    uint32_t region; /* 0 = the file */
    uint32_t file;   /* which file of a model holds the stored bytes (0: the only one) */
    uint64_t offset; /* of the viewable bytes in the region */
    uint64_t nbytes; /* of the decoded, C-order little-endian data */
    uint32_t layout; /* TD__LAYOUT_* flags; 0 = view as is */
    td__src src;     /* meaningful when layout != 0 */
} td__entry;

typedef struct td__table {
    td_format format;
    size_t n, cap;
    td__entry *entries;
    td_meta *meta; /* owned; NULL for formats without metadata */
} td__table;

/* Input to the writers: one array to save, borrowed from the caller. */
typedef struct td__item {
    const char *name; /* NULL only where the format allows unnamed entries */
    td_dtype dtype;
    int ndim;
    const int64_t *shape;
    const void *data; /* nbytes, C order, little-endian */
    uint64_t nbytes;
} td__item;

void td__table_init(td__table *t, td_format format);
/* Frees every entry, the metadata and the entry array; t can be reused after td__table_init. */
void td__table_destroy(td__table *t);
/* Makes room for cap entries in all (TD_ENOMEM leaves t as it was). */
int td__table_reserve(td__table *t, size_t cap, td_error *err);
/* Appends a zeroed entry whose name is a copy of name[0..name_len) (name may be NULL for no
 * name). Returns the entry, valid until the next append, or NULL with *err filled. */
td__entry *td__table_add(td__table *t, const char *name, size_t name_len, td_error *err);
/* Copies ndim sizes into e->shape. */
int td__entry_set_shape(td__entry *e, uint32_t ndim, const int64_t *shape, td_error *err);
/* 1 when a and b hold the same entries (every field, src included) and equal metadata. */
int td__table_equal(const td__table *a, const td__table *b);
/* Refuses (TD_EDUP) two entries with the same name, naming it and the file. O(n log n). */
int td__table_check_unique(const td__table *t, const char *file, td_error *err);

/* nbytes of dtype x shape with checked arithmetic: TD_ERANGE on overflow or a negative size,
 * TD_EFORMAT when a block type's innermost size is not a multiple of its block. */
int td__shape_nbytes(td_dtype dtype, uint32_t ndim, const int64_t *shape, uint64_t *nbytes,
                     td_error *err);

/* Dequantization targets inside the library and on the wire (proto/PROTOCOL.md, LOAD
 * "dequant"): 0 for none, the td_dtype to decode GGML blocks to (TD_FLOAT32, TD_FLOAT16,
 * TD_BFLOAT16), or TD__DEQUANT_MLX for MLX's packed form. The public td_dequant is turned into
 * this code at the API boundary, in one place (client/options.c). */
#define TD__DEQUANT_MLX 0x4d4c58u

/* 1 when target is a dequantization code other than 0. */
static inline int td__dequant_target_ok(long long target)
{
    return target == TD_FLOAT32 || target == TD_FLOAT16 || target == TD_BFLOAT16 ||
           target == TD__DEQUANT_MLX;
}

#endif

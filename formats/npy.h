/*
 * npy.h - the NumPy .npy format.
 *
 * On disk:
 *   1. magic "\x93NUMPY" (6 bytes)
 *   2. version: major, minor (1.0, 2.0 or 3.0)
 *   3. header length: u16 LE for 1.0, u32 LE for 2.0 and 3.0 (3.0: the header is UTF-8)
 *   4. header: a Python dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
 *      padded with spaces and ended by '\n'; numpy pads so that the data starts at a multiple
 *      of 64 (older writers: 16)
 *   5. data: prod(shape) items, C or Fortran order, byte order as descr says
 *
 * descr: byte order '<' '>' '|' '=' (or none), then kind and size: b1 i1 i2 i4 i8 u1 u2 u4 u8
 * f2 f4 f8 c8 c16, and V2, which MLX writes for bfloat16. Objects, strings, structured and
 * datetime dtypes are refused.
 */
#ifndef TD_NPY_H
#define TD_NPY_H

#include "table.h"
#include "writer.h"

#include <stdint.h>

#define NPY_MAGIC     "\x93NUMPY"
#define NPY_MAGIC_LEN 6
/* Headers longer than this are refused (numpy itself refuses 10000 bytes by default). */
#define NPY_MAX_HEADER 65536u
/* Room for any header td__npy_build_header writes. */
#define NPY_HEADER_CAP 2048u

typedef struct td__npy_header {
    td_dtype dtype;
    int big_endian; /* data needs byte swapping */
    int fortran;    /* data is column-major (only set when ndim >= 2) */
    uint32_t ndim;
    int64_t shape[TD_MAX_DIMS];
    uint64_t data_offset; /* bytes from the start of the .npy to the data */
    uint64_t nbytes;      /* data bytes */
} td__npy_header;

/* Parses the magic, version and header dict at p[0..len). len may cover only the header (npz
 * members are parsed from an inflated prefix); the data is not checked. what names the file or
 * member for messages. */
int td__npy_parse_header(const uint8_t *p, size_t len, const char *what, td__npy_header *h,
                         td_error *err);

/* How many bytes td__npy_parse_header reads, judging by the first got bytes of an npy (the magic,
 * version and header length): got itself while those are incomplete or invalid (the parser
 * then names the problem), at most 12 + NPY_MAX_HEADER + 1. */
size_t td__npy_header_need(const uint8_t *p, size_t got);

/* Reads and parses the npy header at offset off of r, whose npy is avail bytes long (an npz
 * member, or the whole file): fetches up to 4 KiB, then the rest of a longer header. */
int td__npy_read_header(td__rd *r, uint64_t off, uint64_t avail, const char *what,
                        td__npy_header *h, td_error *err);

/* Indexes a whole .npy file: one unnamed entry, region 0. Data that is big-endian or Fortran
 * order gets the layout flags, with src pointing at it. */
int td__npy_index(td__rd *r, td__table *t, td_error *err);

/* Builds the magic, version and header for dtype x shape into out (cap >= NPY_HEADER_CAP), so
 * that the data after it starts at a multiple of 64. Version 1.0 unless the header needs 2.0.
 * TD_EDTYPE when npy cannot hold dtype. */
int td__npy_build_header(td_dtype dtype, int ndim, const int64_t *shape, uint8_t *out, size_t cap,
                         size_t *out_len, const char *what, td_error *err);

/* Writes a whole .npy of item to w. */
int td__npy_write(td__writer *w, const td__item *item, const char *fname, td_error *err);

#endif

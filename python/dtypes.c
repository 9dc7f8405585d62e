/*
 * dtypes.c - how tensord's dtypes are spelled in the three array protocols Python speaks, both
 * ways: buffer-protocol formats (PEP 3118), numpy's __array_interface__ typestrs, and DLPack
 * data types.
 *
 * Exported (an Array seen from outside): plain types by their native spelling. numpy has no
 * bfloat16 and no float8, so, as MLX's npy writer does, bfloat16 is "<V2" (numpy gives it dtype
 * V2) and float8 is "|u1". The buffer protocol has no spelling for a 2-byte void that numpy
 * reads back as V2 ("2x" becomes an empty structured dtype), so bfloat16 has no buffer format:
 * a consumer asking for one gets a BufferError and numpy falls back to __array_interface__.
 * DLPack has bfloat16 (kDLBfloat); float8 goes out as uint8 there too. GGML block types go out
 * as their uint8 rows (see td__py_layout_of).
 *
 * Imported (what save accepts): every plain type, in either byte order (big-endian input is
 * swapped while it is copied into C order); "<V2" and "2x" are read as bfloat16, the reverse of
 * the export.
 */
#include "tdpy.h"

#include <string.h>

_Static_assert(sizeof(long) == 8, "the 64-bit buffer formats below are 'l' and 'L'");

/* DLPack 0.8's code for booleans; the 0.6 header Debian ships does not name it. */
#define TD__PY_DL_BOOL 6

static const td__py_spell td__py_bytes_spell = {"B", "|u1", kDLUInt, 8};

static const td__py_spell td__py_spells[] = {
    [TD_BOOL] = {"?", "|b1", TD__PY_DL_BOOL, 8},
    [TD_UINT8] = {"B", "|u1", kDLUInt, 8},
    [TD_UINT16] = {"H", "<u2", kDLUInt, 16},
    [TD_UINT32] = {"I", "<u4", kDLUInt, 32},
    [TD_UINT64] = {"L", "<u8", kDLUInt, 64},
    [TD_INT8] = {"b", "|i1", kDLInt, 8},
    [TD_INT16] = {"h", "<i2", kDLInt, 16},
    [TD_INT32] = {"i", "<i4", kDLInt, 32},
    [TD_INT64] = {"l", "<i8", kDLInt, 64},
    [TD_FLOAT16] = {"e", "<f2", kDLFloat, 16},
    [TD_BFLOAT16] = {NULL, "<V2", kDLBfloat, 16},
    [TD_FLOAT32] = {"f", "<f4", kDLFloat, 32},
    [TD_FLOAT64] = {"d", "<f8", kDLFloat, 64},
    [TD_COMPLEX64] = {"Zf", "<c8", kDLComplex, 64},
    [TD_COMPLEX128] = {"Zd", "<c16", kDLComplex, 128},
    [TD_FLOAT8_E4M3] = {"B", "|u1", kDLUInt, 8},
    [TD_FLOAT8_E5M2] = {"B", "|u1", kDLUInt, 8},
};
#define TD__PY_NSPELL (sizeof td__py_spells / sizeof td__py_spells[0])

const td__py_spell *td__py_spell_of(td_dtype t)
{
    if ((size_t)t < TD__PY_NSPELL && td__py_spells[t].typestr)
        return &td__py_spells[t];
    return &td__py_bytes_spell; /* block types */
}

void td__py_layout_of(const td_array *a, td__py_layout *l)
{
    td_dtype t = td_array_dtype(a);
    l->ndim = td_array_ndim(a);
    memcpy(l->shape, td_array_shape(a), (size_t)l->ndim * sizeof(int64_t));
    l->spell = td__py_spell_of(t);
    size_t be = 1, bb = 1;
    if (td_dtype_is_block(t) && td_dtype_block(t, &be, &bb) == 0 && be && l->ndim > 0) {
        /* The library guarantees the innermost dimension is a multiple of the block size. */
        l->shape[l->ndim - 1] = l->shape[l->ndim - 1] / (int64_t)be * (int64_t)bb;
        l->itemsize = 1;
    } else {
        l->itemsize = (Py_ssize_t)td_dtype_size(t);
    }
}

/* The dtype of a kind ('b' bool, 'i' signed, 'u' unsigned, 'f' float, 'c' complex, 'V' void)
 * and a size in bytes. */
static int td__py_dtype_of_kind(char kind, Py_ssize_t size, td_dtype *out)
{
    static const td_dtype ints[] = {TD_INT8, TD_INT16, TD_INT32, TD_INT64};
    static const td_dtype uints[] = {TD_UINT8, TD_UINT16, TD_UINT32, TD_UINT64};
    int lg = size == 1 ? 0 : size == 2 ? 1 : size == 4 ? 2 : size == 8 ? 3 : -1;
    switch (kind) {
    case 'b':
        if (size != 1)
            return -1;
        *out = TD_BOOL;
        return 0;
    case 'i':
    case 'u':
        if (lg < 0)
            return -1;
        *out = kind == 'i' ? ints[lg] : uints[lg];
        return 0;
    case 'f':
        if (size != 2 && size != 4 && size != 8)
            return -1;
        *out = size == 2 ? TD_FLOAT16 : size == 4 ? TD_FLOAT32 : TD_FLOAT64;
        return 0;
    case 'c':
        if (size != 8 && size != 16)
            return -1;
        *out = size == 8 ? TD_COMPLEX64 : TD_COMPLEX128;
        return 0;
    case 'V':
        if (size != 2)
            return -1;
        *out = TD_BFLOAT16;
        return 0;
    default:
        return -1;
    }
}

/* The byte-swap unit of a big-endian item of kind and size: the size, or half of it for a
 * complex number (two floats). */
static int td__py_swap_unit(char kind, Py_ssize_t size)
{
    if (size <= 1 || kind == 'V' || kind == 'b')
        return 0;
    return (int)(kind == 'c' ? size / 2 : size);
}

int td__py_dtype_from_format(const char *f, Py_ssize_t itemsize, td_dtype *out, int *swap)
{
    *swap = 0;
    if (!f)
        f = "B";
    /* Byte order: native ('@', '=' or none), '<' little, '>' and '!' big. */
    int big = 0;
    if (*f == '@' || *f == '=' || *f == '<')
        f++;
    else if (*f == '>' || *f == '!')
        big = 1, f++;
    char kind;
    size_t n = strlen(f);
    if (strcmp(f, "?") == 0)
        kind = 'b';
    else if (n == 1 && strchr("bhilqn", *f))
        kind = 'i';
    else if (n == 1 && strchr("BHILQN", *f))
        kind = 'u';
    else if (n == 1 && strchr("efd", *f))
        kind = 'f';
    else if (strcmp(f, "Zf") == 0 || strcmp(f, "Zd") == 0)
        kind = 'c';
    else if (strcmp(f, "2x") == 0 || strcmp(f, "xx") == 0)
        kind = 'V'; /* numpy's buffer spelling of V2 */
    else
        return -1;
    if (td__py_dtype_of_kind(kind, itemsize, out) < 0)
        return -1;
    *swap = big ? td__py_swap_unit(kind, itemsize) : 0;
    return 0;
}

int td__py_dtype_from_typestr(const char *ts, td_dtype *out, int *swap)
{
    *swap = 0;
    if (!ts || !ts[0] || !ts[1] || !strchr("<>|=", ts[0]))
        return -1;
    char *end;
    long size = strtol(ts + 2, &end, 10);
    if (*end || size <= 0 || size > 16)
        return -1;
    if (td__py_dtype_of_kind(ts[1], (Py_ssize_t)size, out) < 0)
        return -1;
    *swap = ts[0] == '>' ? td__py_swap_unit(ts[1], (Py_ssize_t)size) : 0;
    return 0;
}

int td__py_dtype_from_dl(DLDataType dt, td_dtype *out)
{
    if (dt.lanes != 1 || dt.bits % 8)
        return -1;
    Py_ssize_t size = dt.bits / 8;
    switch (dt.code) {
    case kDLInt:
        return td__py_dtype_of_kind('i', size, out);
    case kDLUInt:
        return td__py_dtype_of_kind('u', size, out);
    case kDLFloat:
        return td__py_dtype_of_kind('f', size, out);
    case kDLBfloat:
        return td__py_dtype_of_kind('V', size, out);
    case kDLComplex:
        return td__py_dtype_of_kind('c', size, out);
    case TD__PY_DL_BOOL:
        return td__py_dtype_of_kind('b', size, out);
    default:
        return -1;
    }
}

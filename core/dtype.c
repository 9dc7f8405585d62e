/*
 * dtype.c - the dtype table (see dtype.h).
 *
 * GGML block geometry follows ggml's type traits (ggml.c, ggml-common.h): QK4_0 = QK8_0 = 32,
 * QK_K = 256, IQ4_NL = 32, MXFP4 = 32.
 */
#include "dtype.h"
#include "common.h"

#include <string.h>

static const td__dtype_desc td__dtypes[TD_DTYPE_COUNT] = {
    /*                    name       be   bb  npy    st         ggml swap */
    [TD_BOOL] = {"bool", 1, 1, "b1", "BOOL", -1, 0},
    [TD_UINT8] = {"uint8", 1, 1, "u1", "U8", -1, 0},
    [TD_UINT16] = {"uint16", 1, 2, "u2", "U16", -1, 2},
    [TD_UINT32] = {"uint32", 1, 4, "u4", "U32", -1, 4},
    [TD_UINT64] = {"uint64", 1, 8, "u8", "U64", -1, 8},
    [TD_INT8] = {"int8", 1, 1, "i1", "I8", 24, 0},
    [TD_INT16] = {"int16", 1, 2, "i2", "I16", 25, 2},
    [TD_INT32] = {"int32", 1, 4, "i4", "I32", 26, 4},
    [TD_INT64] = {"int64", 1, 8, "i8", "I64", 27, 8},
    [TD_FLOAT16] = {"float16", 1, 2, "f2", "F16", 1, 2},
    [TD_BFLOAT16] = {"bfloat16", 1, 2, "V2", "BF16", 30, 2},
    [TD_FLOAT32] = {"float32", 1, 4, "f4", "F32", 0, 4},
    [TD_FLOAT64] = {"float64", 1, 8, "f8", "F64", 28, 8},
    [TD_COMPLEX64] = {"complex64", 1, 8, "c8", "C64", -1, 4},
    [TD_COMPLEX128] = {"complex128", 1, 16, "c16", NULL, -1, 8},
    [TD_FLOAT8_E4M3] = {"float8_e4m3", 1, 1, "u1", "F8_E4M3", -1, 0},
    [TD_FLOAT8_E5M2] = {"float8_e5m2", 1, 1, "u1", "F8_E5M2", -1, 0},
    [TD_Q4_0] = {"q4_0", 32, 18, NULL, NULL, 2, 0},
    [TD_Q4_1] = {"q4_1", 32, 20, NULL, NULL, 3, 0},
    [TD_Q5_0] = {"q5_0", 32, 22, NULL, NULL, 6, 0},
    [TD_Q5_1] = {"q5_1", 32, 24, NULL, NULL, 7, 0},
    [TD_Q8_0] = {"q8_0", 32, 34, NULL, NULL, 8, 0},
    [TD_Q8_1] = {"q8_1", 32, 36, NULL, NULL, 9, 0},
    [TD_Q2_K] = {"q2_k", 256, 84, NULL, NULL, 10, 0},
    [TD_Q3_K] = {"q3_k", 256, 110, NULL, NULL, 11, 0},
    [TD_Q4_K] = {"q4_k", 256, 144, NULL, NULL, 12, 0},
    [TD_Q5_K] = {"q5_k", 256, 176, NULL, NULL, 13, 0},
    [TD_Q6_K] = {"q6_k", 256, 210, NULL, NULL, 14, 0},
    [TD_Q8_K] = {"q8_k", 256, 292, NULL, NULL, 15, 0},
    [TD_IQ2_XXS] = {"iq2_xxs", 256, 66, NULL, NULL, 16, 0},
    [TD_IQ2_XS] = {"iq2_xs", 256, 74, NULL, NULL, 17, 0},
    [TD_IQ3_XXS] = {"iq3_xxs", 256, 98, NULL, NULL, 18, 0},
    [TD_IQ1_S] = {"iq1_s", 256, 50, NULL, NULL, 19, 0},
    [TD_IQ4_NL] = {"iq4_nl", 32, 18, NULL, NULL, 20, 0},
    [TD_IQ3_S] = {"iq3_s", 256, 110, NULL, NULL, 21, 0},
    [TD_IQ2_S] = {"iq2_s", 256, 82, NULL, NULL, 22, 0},
    [TD_IQ4_XS] = {"iq4_xs", 256, 136, NULL, NULL, 23, 0},
    [TD_IQ1_M] = {"iq1_m", 256, 56, NULL, NULL, 29, 0},
    [TD_TQ1_0] = {"tq1_0", 256, 54, NULL, NULL, 34, 0},
    [TD_TQ2_0] = {"tq2_0", 256, 66, NULL, NULL, 35, 0},
    [TD_MXFP4] = {"mxfp4", 32, 17, NULL, NULL, 39, 0},
    [TD_NVFP4] = {"nvfp4", 64, 36, NULL, NULL, 40, 0},
    [TD_Q1_0] = {"q1_0", 128, 18, NULL, NULL, 41, 0},
    [TD_Q2_0] = {"q2_0", 64, 18, NULL, NULL, 42, 0},
};

const td__dtype_desc *td__dtype_info(td_dtype t)
{
    if ((unsigned)t >= TD_DTYPE_COUNT)
        return NULL;
    return &td__dtypes[t];
}

uint32_t td__dtype_align(td_dtype t)
{
    const td__dtype_desc *d = td__dtype_info(t);
    if (!d)
        return 0;
    if (d->block_elems == 1)
        return d->block_bytes;
    switch (t) {
    case TD_Q8_K:
        return 4;
    case TD_MXFP4:
    case TD_NVFP4:
    case TD_Q1_0:
    case TD_Q2_0:
        return 1;
    default:
        return 2;
    }
}

const char *td_dtype_name(td_dtype t)
{
    const td__dtype_desc *d = td__dtype_info(t);
    return d ? d->name : NULL;
}

int td_dtype_from_name(const char *name, td_dtype *out)
{
    if (name) {
        for (int i = 0; i < TD_DTYPE_COUNT; i++) {
            if (strcmp(td__dtypes[i].name, name) == 0) {
                *out = (td_dtype)i;
                return 0;
            }
        }
    }
    return TD_EDTYPE;
}

size_t td_dtype_size(td_dtype t)
{
    const td__dtype_desc *d = td__dtype_info(t);
    return d && d->block_elems == 1 ? d->block_bytes : 0;
}

int td_dtype_is_block(td_dtype t)
{
    const td__dtype_desc *d = td__dtype_info(t);
    return d && d->block_elems > 1;
}

int td_dtype_block(td_dtype t, size_t *block_elems, size_t *block_bytes)
{
    const td__dtype_desc *d = td__dtype_info(t);
    if (block_elems)
        *block_elems = d ? d->block_elems : 0;
    if (block_bytes)
        *block_bytes = d ? d->block_bytes : 0;
    return d ? 0 : TD_EDTYPE;
}

const char *td__dtype_st_name(td_dtype t)
{
    const td__dtype_desc *d = td__dtype_info(t);
    return d ? d->st : NULL;
}

int td__dtype_from_st_name(const char *s, td_dtype *out)
{
    for (int i = 0; s && i < TD_DTYPE_COUNT; i++) {
        if (td__dtypes[i].st && strcmp(td__dtypes[i].st, s) == 0) {
            *out = (td_dtype)i;
            return 0;
        }
    }
    return TD_EDTYPE;
}

int32_t td__dtype_ggml_id(td_dtype t)
{
    const td__dtype_desc *d = td__dtype_info(t);
    return d ? d->ggml : -1;
}

int td__dtype_from_ggml_id(uint32_t id, td_dtype *out)
{
    for (int i = 0; i < TD_DTYPE_COUNT; i++) {
        if (td__dtypes[i].ggml >= 0 && (uint32_t)td__dtypes[i].ggml == id) {
            *out = (td_dtype)i;
            return 0;
        }
    }
    return TD_EDTYPE;
}

const char *td__dtype_npy_descr(td_dtype t, char *order)
{
    const td__dtype_desc *d = td__dtype_info(t);
    if (!d || !d->npy)
        return NULL;
    *order = d->block_bytes == 1 ? '|' : '<';
    return d->npy;
}

/*
 * dtype.h - the one dtype table: canonical name, item size, block geometry, and each format's
 * spelling (npy descr, safetensors name, GGML type id). Lookups in both directions.
 */
#ifndef TD_DTYPE_H
#define TD_DTYPE_H

#include "tensord.h"

#include <stdint.h>

typedef struct td__dtype_desc {
    const char *name;     /* canonical: "float32", "q4_k" */
    uint32_t block_elems; /* 1 for plain types */
    uint32_t block_bytes; /* item size for plain types */
    const char *npy;      /* npy descr without byte order ("f4", "b1"), NULL when npy has none */
    const char *st;       /* safetensors dtype ("F32"), NULL when safetensors has none */
    int32_t ggml;         /* GGML type id, -1 when GGUF has none */
    uint8_t swap;         /* byte-swap unit when stored big-endian (0: no swapping needed) */
} td__dtype_desc;

/* The entry for t, or NULL when t is not a valid dtype. */
const td__dtype_desc *td__dtype_info(td_dtype t);

/* The alignment every loaded view of dtype t has: the item size for plain types (1 to 16), and
 * for GGML block types the alignment of their C block struct (4 for q8_k, whose scale is a
 * float; 1 for mxfp4, nvfp4, q1_0 and q2_0; 2 for the rest, which start with an f16 scale).
 * 0 for an invalid dtype. */
uint32_t td__dtype_align(td_dtype t);

/* safetensors names. */
const char *td__dtype_st_name(td_dtype t);
int td__dtype_from_st_name(const char *s, td_dtype *out);

/* GGML type ids: -1 when none; lookup returns TD_EDTYPE for unknown or removed ids. */
int32_t td__dtype_ggml_id(td_dtype t);
int td__dtype_from_ggml_id(uint32_t id, td_dtype *out);

/* npy: the descr we write for t without byte order ("f4", "V2" for bfloat16, "u1" for float8),
 * and the byte-order character ('<' or '|'). NULL when npy cannot hold t (GGML blocks). */
const char *td__dtype_npy_descr(td_dtype t, char *order);

#endif

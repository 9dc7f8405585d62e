/*
 * dequant.h - GGML block entries of a tensor table turned into entries to decode (float32,
 * float16, bfloat16 or MLX's packed form), and the decoder of such entries.
 */
#ifndef TD_DEQUANT_H
#define TD_DEQUANT_H

#include "table.h"

/* Dequantize on load: rewrites every GGML block entry of t as entries to decode:
 * target TD_FLOAT32, TD_FLOAT16 or TD_BFLOAT16 gives one entry of that dtype; TD__DEQUANT_MLX
 * gives MLX's packed form (NAME uint32 weights, PREFIX.scales and PREFIX.biases float16, PREFIX
 * being NAME without ".weight") for q4_0, q4_1 and q8_0, and float16 for the other types.
 * Entries already decoded elsewhere (npz, npy) are refused: only GGUF holds blocks. */
int td__table_dequant(td__table *t, int target, const char *fname, td_error *err);

/* Decodes a DEQUANT or MLX_* entry into dst (e->nbytes), dequantizing on at most threads
 * threads (the caller's included; 0: automatic). */
int td__decode_dequant(const td__entry *e, const uint8_t *file, size_t file_len, void *dst,
                       unsigned threads, const char *fname, td_error *err);

#endif

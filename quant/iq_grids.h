/*
 * iq_grids.h - the lookup tables of GGML's grid-based i-quants, as llama.cpp decodes them.
 *
 * The data is in iq_grids.c, which quant/gen_iq_grids.py generates from llama.cpp's own
 * to_float (see there); nothing here is typed in by hand. Each grid entry is a small vector in
 * element order: entry k of td__gq_iq2xxs_grid gives elements 0..7 of a group whose stored
 * index is k. Read-only, shared by every thread.
 */
#ifndef TD_IQ_GRIDS_H
#define TD_IQ_GRIDS_H

#include <stdint.h>

extern const uint8_t td__gq_iq2xxs_grid[256][8]; /* iq2_xxs: magnitudes, signs apart */
extern const uint8_t td__gq_iq2xs_grid[512][8];  /* iq2_xs */
extern const uint8_t td__gq_iq2s_grid[1024][8];  /* iq2_s */
extern const uint8_t td__gq_iq3xxs_grid[256][4]; /* iq3_xxs: groups of 4 */
extern const uint8_t td__gq_iq3s_grid[512][4];   /* iq3_s */
extern const int8_t td__gq_iq1s_grid[2048][8];   /* iq1_s and iq1_m: -1, 0 or 1 */
/* iq2_xxs, iq2_xs, iq3_xxs store a group's 8 signs as a 7-bit index into this table: bit j
 * of td__gq_iq_ksigns[s] set means element j of the group is negated. */
extern const uint8_t td__gq_iq_ksigns[128];

#endif

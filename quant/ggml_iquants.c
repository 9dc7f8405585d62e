/*
 * ggml_iquants.c - portable kernels of GGML's grid-based i-quants (iq1_s, iq1_m, iq2_xxs,
 * iq2_xs, iq2_s, iq3_xxs, iq3_s), reached through td__gq_iq_kernel (see ggml_quants.h for the
 * block layouts).
 *
 * Each kernel is ggml's dequantize_row_* (ggml-quants.c) operation for operation, so the
 * floats are the same bits: a group's scale is formed the same way (an f16 d times a small
 * integer expression, in ggml's order), each element is that scale times the grid value, and a
 * sign bit negates the product afterwards. ggml writes the last step as a multiplication by
 * -1 or 1, which GCC (the compiler of the libggml-base.so we test against) turns into flipping
 * the sign bit; we flip the sign bit explicitly, so that a NaN product is negated too, as there.
 * The grids and the sign table come from iq_grids.c, generated from llama.cpp's to_float.
 */
#include "common.h"
#include "ggml_quants.h"
#include "iq_grids.h"

/* v with its sign flipped when bit (0 or 1) is set. */
static inline float gq_neg_if(float v, uint32_t bit)
{
    return gq_bits_f32(gq_f32_bits(v) ^ (bit << 31));
}

/* 8 elements: y[j] = +-(d * g[j]), negated where bit j of signs is set. */
static inline void gq_put8(float *restrict y, const uint8_t *restrict g, float d, uint32_t signs)
{
    for (int j = 0; j < 8; j++)
        y[j] = gq_neg_if(d * (float)g[j], (signs >> j) & 1u);
}

/* iq2_xxs, 66 bytes: half d; per 32 elements 8 bytes: four grid indices, then a u32 of four
 * 7-bit sign indices (bits 0-27) and a scale s (bits 28-31): db = d * (0.5 + s) * 0.25. */
static void gq_iq2_xxs_c(const uint8_t *restrict x, float *restrict y, uint64_t nb)
{
    for (uint64_t i = 0; i < nb; i++, x += 66) {
        const float d = gq_h2f(td__le16(x));
        const uint8_t *restrict q = x + 2;
        for (int ib = 0; ib < 8; ib++, q += 8) {
            const uint32_t aux = td__le32(q + 4);
            const float db = d * (0.5f + (float)(aux >> 28)) * 0.25f;
            for (int l = 0; l < 4; l++, y += 8)
                gq_put8(y, td__gq_iq2xxs_grid[q[l]], db, td__gq_iq_ksigns[(aux >> (7 * l)) & 127]);
        }
    }
}

/* iq2_xs, 74 bytes: half d; u16 qs[32] (9-bit grid index, 7-bit sign index); u8 scales[8]
 * (a 4-bit s per 16 elements): db = d * (0.5 + s) * 0.25. */
static void gq_iq2_xs_c(const uint8_t *restrict x, float *restrict y, uint64_t nb)
{
    for (uint64_t i = 0; i < nb; i++, x += 74) {
        const float d = gq_h2f(td__le16(x));
        const uint8_t *restrict qs = x + 2;
        const uint8_t *restrict sc = x + 66;
        for (int ib = 0; ib < 8; ib++) {
            const float db[2] = {d * (0.5f + (float)(sc[ib] & 15)) * 0.25f,
                                 d * (0.5f + (float)(sc[ib] >> 4)) * 0.25f};
            for (int l = 0; l < 4; l++, y += 8) {
                const unsigned v = td__le16(qs + 2 * (4 * ib + l));
                gq_put8(y, td__gq_iq2xs_grid[v & 511], db[l / 2], td__gq_iq_ksigns[v >> 9]);
            }
        }
    }
}

/* iq2_s, 82 bytes: half d; u8 qs[32] (grid index bits 0-7); u8 signs[32] (bit j: element j);
 * u8 qh[8] (index bits 8-9, two bits per group); u8 scales[8] (as iq2_xs). */
static void gq_iq2_s_c(const uint8_t *restrict x, float *restrict y, uint64_t nb)
{
    for (uint64_t i = 0; i < nb; i++, x += 82) {
        const float d = gq_h2f(td__le16(x));
        const uint8_t *restrict qs = x + 2;
        const uint8_t *restrict signs = x + 34;
        const uint8_t *restrict qh = x + 66;
        const uint8_t *restrict sc = x + 74;
        for (int ib = 0; ib < 8; ib++, qs += 4, signs += 4) {
            const float db[2] = {d * (0.5f + (float)(sc[ib] & 15)) * 0.25f,
                                 d * (0.5f + (float)(sc[ib] >> 4)) * 0.25f};
            for (int l = 0; l < 4; l++, y += 8) {
                const unsigned k = qs[l] | (((unsigned)qh[ib] << (8 - 2 * l)) & 0x300u);
                gq_put8(y, td__gq_iq2s_grid[k], db[l / 2], signs[l]);
            }
        }
    }
}

/* Two 4-element grid entries as 8 elements, signed by the 8 bits of signs. */
static inline void gq_put4x2(float *restrict y, const uint8_t *restrict g1,
                             const uint8_t *restrict g2, float d, uint32_t signs)
{
    for (int j = 0; j < 4; j++) {
        y[j] = gq_neg_if(d * (float)g1[j], (signs >> j) & 1u);
        y[j + 4] = gq_neg_if(d * (float)g2[j], (signs >> (j + 4)) & 1u);
    }
}

/* iq3_xxs, 98 bytes: half d; u8 qs[64] (a grid index per 4 elements); u32 [8] per 32
 * elements: four 7-bit sign indices and a scale s (bits 28-31): db = d * (0.5 + s) * 0.5. */
static void gq_iq3_xxs_c(const uint8_t *restrict x, float *restrict y, uint64_t nb)
{
    for (uint64_t i = 0; i < nb; i++, x += 98) {
        const float d = gq_h2f(td__le16(x));
        const uint8_t *restrict qs = x + 2;
        const uint8_t *restrict ss = x + 66;
        for (int ib = 0; ib < 8; ib++, qs += 8) {
            const uint32_t aux = td__le32(ss + 4 * ib);
            const float db = d * (0.5f + (float)(aux >> 28)) * 0.5f;
            for (int l = 0; l < 4; l++, y += 8)
                gq_put4x2(y, td__gq_iq3xxs_grid[qs[2 * l]], td__gq_iq3xxs_grid[qs[2 * l + 1]], db,
                          td__gq_iq_ksigns[(aux >> (7 * l)) & 127]);
        }
    }
}

/* iq3_s, 110 bytes: half d; u8 qs[64] (grid index bits 0-7); u8 qh[8] (bit 8 of each of the
 * 8 indices of 32 elements); u8 signs[32]; u8 scales[4] (a 4-bit s per 32 elements):
 * db = d * (1 + 2 s). */
static void gq_iq3_s_c(const uint8_t *restrict x, float *restrict y, uint64_t nb)
{
    for (uint64_t i = 0; i < nb; i++, x += 110) {
        const float d = gq_h2f(td__le16(x));
        const uint8_t *restrict qs = x + 2;
        const uint8_t *restrict qh = x + 66;
        const uint8_t *restrict signs = x + 74;
        const uint8_t *restrict sc = x + 106;
        for (int ib = 0; ib < 8; ib++, qs += 8, signs += 4) {
            const float db = d * (float)(1 + 2 * ((sc[ib / 2] >> (4 * (ib % 2))) & 15));
            const unsigned h = qh[ib];
            for (int l = 0; l < 4; l++, y += 8) {
                const unsigned k1 = qs[2 * l] | ((h << (8 - 2 * l)) & 256u);
                const unsigned k2 = qs[2 * l + 1] | ((h << (7 - 2 * l)) & 256u);
                gq_put4x2(y, td__gq_iq3s_grid[k1], td__gq_iq3s_grid[k2], db, signs[l]);
            }
        }
    }
}

/* 8 elements of the iq1 grid: y[j] = dl * (g[j] + delta). */
static inline void gq_put1(float *restrict y, const int8_t *restrict g, float dl, float delta)
{
    for (int j = 0; j < 8; j++)
        y[j] = dl * ((float)g[j] + delta);
}

/* ggml's IQ1S_DELTA (0.125) with the sign bit taken from bit 31 of s, without a branch: the
 * delta signs of quantized data are random, and a mispredicted branch costs more than the
 * group's arithmetic. */
static inline float gq_iq1_delta(uint32_t s)
{
    return gq_bits_f32(0x3e000000u | (s & 0x80000000u));
}

/* iq1_s, 50 bytes: half d; u8 qs[32] (grid index bits 0-7); u16 qh[8], per 32 elements:
 * index bits 8-10 of its 4 groups (3 bits each), s (bits 12-14), the sign of delta (bit 15):
 * y = d * (2 s + 1) * (grid + delta). */
static void gq_iq1_s_c(const uint8_t *restrict x, float *restrict y, uint64_t nb)
{
    for (uint64_t i = 0; i < nb; i++, x += 50) {
        const float d = gq_h2f(td__le16(x));
        const uint8_t *restrict qs = x + 2;
        const uint8_t *restrict qh = x + 34;
        for (int ib = 0; ib < 8; ib++, qs += 4) {
            const unsigned h = td__le16(qh + 2 * ib);
            const float dl = d * (float)(2 * ((h >> 12) & 7) + 1);
            const float delta = gq_iq1_delta(h << 16);
            for (int l = 0; l < 4; l++, y += 8)
                gq_put1(y, td__gq_iq1s_grid[qs[l] | (((h >> (3 * l)) & 7) << 8)], dl, delta);
        }
    }
}

/* The float16 scale of an iq1_m block: the top nibbles of its four u16 scale words. */
static inline uint16_t gq_iq1m_scale(const uint8_t *sc)
{
    return (uint16_t)((td__le16(sc) >> 12) | ((td__le16(sc + 2) >> 8) & 0x00f0u) |
                      ((td__le16(sc + 4) >> 4) & 0x0f00u) | (td__le16(sc + 6) & 0xf000u));
}

/* iq1_m, 56 bytes: u8 qs[32] (grid index bits 0-7); u8 qh[16] (per group: index bits 8-10
 * and the sign of delta, two groups a byte); u8 scales[8] as four u16: a 3-bit s per 16
 * elements, and the float16 d in the top nibbles. y = d * (2 s + 1) * (grid + delta). */
static void gq_iq1_m_c(const uint8_t *restrict x, float *restrict y, uint64_t nb)
{
    for (uint64_t i = 0; i < nb; i++, x += 56) {
        const uint8_t *restrict qs = x;
        const uint8_t *restrict qh = x + 32;
        const uint8_t *restrict sc = x + 48;
        const float d = gq_h2f(gq_iq1m_scale(sc));
        for (int ib = 0; ib < 8; ib++, qs += 4, qh += 2) {
            const unsigned s = td__le16(sc + 2 * (ib / 2));
            const float dl1 = d * (float)(2 * ((s >> (6 * (ib % 2))) & 7) + 1);
            const float dl2 = d * (float)(2 * ((s >> (6 * (ib % 2) + 3)) & 7) + 1);
            for (int l = 0; l < 4; l++, y += 8) {
                const unsigned h = qh[l / 2] >> (4 * (l % 2)); /* index bits, delta sign */
                gq_put1(y, td__gq_iq1s_grid[qs[l] | ((h & 7u) << 8)], l < 2 ? dl1 : dl2,
                        gq_iq1_delta(h << 28));
            }
        }
    }
}

td__gq_kernel td__gq_iq_kernel(td_dtype type)
{
    switch (type) {
    case TD_IQ2_XXS:
        return gq_iq2_xxs_c;
    case TD_IQ2_XS:
        return gq_iq2_xs_c;
    case TD_IQ2_S:
        return gq_iq2_s_c;
    case TD_IQ3_XXS:
        return gq_iq3_xxs_c;
    case TD_IQ3_S:
        return gq_iq3_s_c;
    case TD_IQ1_S:
        return gq_iq1_s_c;
    case TD_IQ1_M:
        return gq_iq1_m_c;
    default:
        return NULL;
    }
}

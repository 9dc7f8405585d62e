/*
 * ggml_quants.c - dequantizing GGML block types (see ggml_quants.h): float16/bfloat16 rounding,
 * the portable kernels, kernel selection (portable or AVX2, ggml_quants_avx2.c), the threaded
 * driver, and packing into MLX's weights/scales/biases form. The td_array entry points that use
 * them are in client/dequantize.c; dequantize-on-load is quant/dequant.c.
 *
 * Every kernel reproduces the arithmetic of ggml's dequantize_row_* (ggml-quants.c): the same
 * operands, multiplied and added in the same order, so that each float is bit-identical. Most
 * products are exact in float32 (a binary16 scale times a small integer), so fused or unfused
 * multiply-add give the same result. q6_k's (d * scale) * q is the one product that can round
 * (up to 25 significant bits); d * scale is exact, so it is one rounding of the exact product
 * whichever way it is grouped; we keep ggml's order anyway.
 *
 * The inner loops have constant trip counts and no aliasing (restrict), so that GCC's and
 * clang's -O2 vectorisers turn them into SIMD code without runtime checks.
 */
#include "ggml_quants.h"
#include "common.h"
#include "dtype.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------------------------------------
 * Scalars
 */

float td__gq_f16_to_f32(uint16_t h)
{
    return gq_h2f(h);
}

/* binary32 -> binary16, round to nearest even. Written with masks instead of branches so that
 * the row loop vectorises. */
static inline uint16_t gq_f2h(float f)
{
    uint32_t x = gq_f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    /* normal results: rebias the exponent, round the 13 dropped bits to nearest even; a carry
     * moves into the exponent as it should */
    uint32_t normal = (ax - 0x38000000u + 0x0fffu + ((ax >> 13) & 1u)) >> 13;
    /* subnormal results (|f| < 2^-14): adding 0.5 puts the binary16 unit 2^-24 at the last
     * place of a float32 with exponent -1, so the FPU rounds to nearest even for us */
    uint32_t sub = gq_f32_bits(gq_bits_f32(ax) + 0.5f) - 0x3f000000u;
    uint32_t nan = 0x7e00u | ((ax >> 13) & 0x3ffu);
    uint32_t is_sub = 0u - (uint32_t)(ax < 0x38800000u);
    uint32_t is_inf = 0u - (uint32_t)(ax >= 0x477ff000u); /* >= 65520 rounds to infinity */
    uint32_t is_nan = 0u - (uint32_t)(ax > 0x7f800000u);
    uint32_t r = (sub & is_sub) | (normal & ~is_sub);
    r = (0x7c00u & is_inf) | (r & ~is_inf);
    r = (nan & is_nan) | (r & ~is_nan);
    return (uint16_t)(r | sign);
}

uint16_t td__gq_f32_to_f16(float f)
{
    return gq_f2h(f);
}

/* binary32 -> bfloat16, round to nearest even; NaN made quiet. */
static inline uint16_t gq_f2bf(float f)
{
    uint32_t x = gq_f32_bits(f);
    uint32_t r = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
    uint32_t nan = (x >> 16) | 0x40u;
    uint32_t is_nan = 0u - (uint32_t)((x & 0x7fffffffu) > 0x7f800000u);
    return (uint16_t)((nan & is_nan) | (r & ~is_nan));
}

uint16_t td__gq_f32_to_bf16(float f)
{
    return gq_f2bf(f);
}

/* Row conversions: runs of 16 with a constant trip count (which the -O2 vectoriser takes),
 * then the tail. */
static void gq_f2h_row_c(const float *restrict in, uint16_t *restrict out, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 16; k++)
            out[i + k] = gq_f2h(in[i + k]);
    for (; i < n; i++)
        out[i] = gq_f2h(in[i]);
}

static void gq_f2bf_row_c(const float *restrict in, uint16_t *restrict out, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 16; k++)
            out[i + k] = gq_f2bf(in[i + k]);
    for (; i < n; i++)
        out[i] = gq_f2bf(in[i]);
}

/* ---------------------------------------------------------------------------------------------
 * Portable kernels: x points at nb whole blocks, y receives nb * block_elems floats.
 */

static const int8_t gq_kvalues_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                            1,    13,   25,  38,  53,  69,  89,  113};
/* e2m1 values times two (ggml's kvalues_mxfp4); the e8m0 scale is halved to match. */
static const int8_t gq_kvalues_mxfp4[16] = {0, 1,  2,  3,  4,  6,  8,  12,
                                            0, -1, -2, -3, -4, -6, -8, -12};

static void gq_q4_0_c(const uint8_t *restrict x, float *restrict y, uint64_t nb)
{
    for (uint64_t i = 0; i < nb; i++, x += 18, y += 32) {
        const float d = gq_h2f(td__le16(x));
        const uint8_t *restrict qs = x + 2;
        for (int j = 0; j < 16; j++) {
            y[j] = (float)((qs[j] & 15) - 8) * d;
            y[j + 16] = (float)((qs[j] >> 4) - 8) * d;
        }
    }
}

static void gq_q4_1_c(const uint8_t *restrict x, float *restrict y, uint64_t nb)
{
    for (uint64_t i = 0; i < nb; i++, x += 20, y += 32) {
        const float d = gq_h2f(td__le16(x));
        const float m = gq_h2f(td__le16(x + 2));
        const uint8_t *restrict qs = x + 4;
        for (int j = 0; j < 16; j++) {
            y[j] = (float)(qs[j] & 15) * d + m;
            y[j + 16] = (float)(qs[j] >> 4) * d + m;
        }
    }
}

/* The fifth bits of q5 blocks, bit j of qh for element j, as 0 or 16 per element. */
static inline void gq_q5_high(uint32_t qh, uint8_t *restrict hb)
{
    for (int j = 0; j < 32; j++)
        hb[j] = (uint8_t)(((qh >> j) & 1u) << 4);
}

static void gq_q5_0_c(const uint8_t *restrict x, float *restrict y, uint64_t nb)
{
    for (uint64_t i = 0; i < nb; i++, x += 22, y += 32) {
        const float d = gq_h2f(td__le16(x));
        uint8_t hb[32];
        gq_q5_high(td__le32(x + 2), hb);
        const uint8_t *restrict qs = x + 6;
        for (int j = 0; j < 16; j++) {
            y[j] = (float)(((qs[j] & 15) | hb[j]) - 16) * d;
            y[j + 16] = (float)(((qs[j] >> 4) | hb[j + 16]) - 16) * d;
        }
    }
}

static void gq_q5_1_c(const uint8_t *restrict x, float *restrict y, uint64_t nb)
{
    for (uint64_t i = 0; i < nb; i++, x += 24, y += 32) {
        const float d = gq_h2f(td__le16(x));
        const float m = gq_h2f(td__le16(x + 2));
        uint8_t hb[32];
        gq_q5_high(td__le32(x + 4), hb);
        const uint8_t *restrict qs = x + 8;
        for (int j = 0; j < 16; j++) {
            y[j] = (float)((qs[j] & 15) | hb[j]) * d + m;
            y[j + 16] = (float)((qs[j] >> 4) | hb[j + 16]) * d + m;
        }
    }
}

/* Blocks of bytes bytes: the f16 scale d first, 32 int8 values at qoff; value = q * d. */
static inline void gq_q8_blocks(const uint8_t *restrict x, float *restrict y, uint64_t nb,
                                size_t bytes, size_t qoff)
{
    for (uint64_t i = 0; i < nb; i++, x += bytes, y += 32) {
        const float d = gq_h2f(td__le16(x));
        const int8_t *restrict qs = (const int8_t *)(x + qoff);
        for (int j = 0; j < 32; j++)
            y[j] = (float)qs[j] * d;
    }
}

static void gq_q8_0_c(const uint8_t *restrict x, float *restrict y, uint64_t nb)
{
    gq_q8_blocks(x, y, nb, 34, 2);
}

/* q8_1: q8_0 with a second half s (d times the sum of qs, which ggml's dot products use)
 * before the values. ggml has no to_float for it; the value is x = qs * d, computed as q8_0's
 * to_float computes it. */
static void gq_q8_1_c(const uint8_t *restrict x, float *restrict y, uint64_t nb)
{
    gq_q8_blocks(x, y, nb, 36, 4);
}

/* q2_k: 16 groups of 16; group g uses scales[g] (low nibble: scale, high: min) and the 2-bit
 * field at shift 2*((g/2)%4) of qs[32*(g/8) + 16*(g%2) + l]. */
static void gq_q2_k_c(const uint8_t *restrict x, float *restrict y, uint64_t nb)
{
    for (uint64_t i = 0; i < nb; i++, x += 84) {
        const uint8_t *restrict sc = x;
        const uint8_t *restrict q = x + 16;
        const float d = gq_h2f(td__le16(x + 80));
        const float dmin = gq_h2f(td__le16(x + 82));
        int is = 0;
        for (int n = 0; n < 256; n += 128, q += 32) {
            for (int shift = 0; shift < 8; shift += 2) {
                for (int h = 0; h < 2; h++, is++, y += 16) {
                    const float dl = d * (float)(sc[is] & 15);
                    const float ml = dmin * (float)(sc[is] >> 4);
                    const uint8_t *restrict qq = q + 16 * h;
                    for (int l = 0; l < 16; l++)
                        y[l] = dl * (float)((qq[l] >> shift) & 3) - ml;
                }
            }
        }
    }
}

/* The 16 signed 6-bit scales of q3_k (stored as 12 bytes: low nibbles, then 2-bit highs). */
static inline void gq_q3_k_scales(const uint8_t *restrict s, int8_t *restrict out)
{
    for (int j = 0; j < 16; j++) {
        int lo = j < 8 ? (s[j] & 15) : (s[j - 8] >> 4);
        int hi = (s[8 + (j & 3)] >> (2 * (j >> 2))) & 3;
        out[j] = (int8_t)((lo | (hi << 4)) - 32);
    }
}

static void gq_q3_k_c(const uint8_t *restrict x, float *restrict y, uint64_t nb)
{
    for (uint64_t i = 0; i < nb; i++, x += 110) {
        const uint8_t *restrict hm = x;
        const uint8_t *restrict q = x + 32;
        const float d_all = gq_h2f(td__le16(x + 108));
        int8_t sc[16];
        gq_q3_k_scales(x + 96, sc);
        int is = 0;
        unsigned m = 1;
        for (int n = 0; n < 256; n += 128, q += 32) {
            for (int shift = 0; shift < 8; shift += 2, m <<= 1) {
                for (int h = 0; h < 2; h++, is++, y += 16) {
                    const float dl = d_all * (float)sc[is];
                    const uint8_t *restrict qq = q + 16 * h;
                    const uint8_t *restrict hh = hm + 16 * h;
                    for (int l = 0; l < 16; l++) {
                        int v = ((qq[l] >> shift) & 3) - ((hh[l] & m) ? 0 : 4);
                        y[l] = dl * (float)v;
                    }
                }
            }
        }
    }
}

/* The j-th 6-bit scale and min of q4_k and q5_k (ggml's get_scale_min_k4). */
static inline void gq_scale_min_k4(int j, const uint8_t *restrict q, uint8_t *d, uint8_t *m)
{
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

static void gq_q4_k_c(const uint8_t *restrict x, float *restrict y, uint64_t nb)
{
    for (uint64_t i = 0; i < nb; i++, x += 144) {
        const float d = gq_h2f(td__le16(x));
        const float dmin = gq_h2f(td__le16(x + 2));
        const uint8_t *restrict scales = x + 4;
        const uint8_t *restrict q = x + 16;
        for (int is = 0; is < 8; is += 2, q += 32, y += 64) {
            uint8_t sc, m;
            gq_scale_min_k4(is, scales, &sc, &m);
            const float d1 = d * (float)sc, m1 = dmin * (float)m;
            gq_scale_min_k4(is + 1, scales, &sc, &m);
            const float d2 = d * (float)sc, m2 = dmin * (float)m;
            for (int l = 0; l < 32; l++)
                y[l] = d1 * (float)(q[l] & 15) - m1;
            for (int l = 0; l < 32; l++)
                y[l + 32] = d2 * (float)(q[l] >> 4) - m2;
        }
    }
}

static void gq_q5_k_c(const uint8_t *restrict x, float *restrict y, uint64_t nb)
{
    for (uint64_t i = 0; i < nb; i++, x += 176) {
        const float d = gq_h2f(td__le16(x));
        const float dmin = gq_h2f(td__le16(x + 2));
        const uint8_t *restrict scales = x + 4;
        const uint8_t *restrict qh = x + 16;
        const uint8_t *restrict ql = x + 48;
        int u = 0;
        for (int is = 0; is < 8; is += 2, ql += 32, y += 64, u += 2) {
            uint8_t sc, m;
            gq_scale_min_k4(is, scales, &sc, &m);
            const float d1 = d * (float)sc, m1 = dmin * (float)m;
            gq_scale_min_k4(is + 1, scales, &sc, &m);
            const float d2 = d * (float)sc, m2 = dmin * (float)m;
            for (int l = 0; l < 32; l++)
                y[l] = d1 * (float)((ql[l] & 15) + (((qh[l] >> u) & 1) << 4)) - m1;
            for (int l = 0; l < 32; l++)
                y[l + 32] = d2 * (float)((ql[l] >> 4) + (((qh[l] >> (u + 1)) & 1) << 4)) - m2;
        }
    }
}

static void gq_q6_k_c(const uint8_t *restrict x, float *restrict y, uint64_t nb)
{
    for (uint64_t i = 0; i < nb; i++, x += 210) {
        const uint8_t *restrict ql = x;
        const uint8_t *restrict qh = x + 128;
        const int8_t *restrict sc = (const int8_t *)(x + 192);
        const float d = gq_h2f(td__le16(x + 208));
        for (int n = 0; n < 256; n += 128, ql += 64, qh += 32, sc += 8, y += 128) {
            for (int half = 0; half < 2; half++) {
                /* (d * scale) first, as ggml does (exact; the product with q rounds once) */
                const float s0 = d * (float)sc[half + 0];
                const float s1 = d * (float)sc[half + 2];
                const float s2 = d * (float)sc[half + 4];
                const float s3 = d * (float)sc[half + 6];
                const int o = 16 * half;
                for (int l = o; l < o + 16; l++) {
                    int q1 = ((ql[l] & 15) | (((qh[l] >> 0) & 3) << 4)) - 32;
                    int q2 = ((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32;
                    int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                    int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                    y[l] = s0 * (float)q1;
                    y[l + 32] = s1 * (float)q2;
                    y[l + 64] = s2 * (float)q3;
                    y[l + 96] = s3 * (float)q4;
                }
            }
        }
    }
}

static void gq_q8_k_c(const uint8_t *restrict x, float *restrict y, uint64_t nb)
{
    for (uint64_t i = 0; i < nb; i++, x += 292, y += 256) {
        const float d = gq_bits_f32(td__le32(x));
        const int8_t *restrict qs = (const int8_t *)(x + 4);
        for (int j = 0; j < 256; j++)
            y[j] = d * (float)qs[j];
    }
}

static void gq_iq4_nl_c(const uint8_t *restrict x, float *restrict y, uint64_t nb)
{
    for (uint64_t i = 0; i < nb; i++, x += 18, y += 32) {
        const float d = gq_h2f(td__le16(x));
        const uint8_t *restrict qs = x + 2;
        for (int j = 0; j < 16; j++) {
            y[j] = d * (float)gq_kvalues_iq4nl[qs[j] & 15];
            y[j + 16] = d * (float)gq_kvalues_iq4nl[qs[j] >> 4];
        }
    }
}

static void gq_iq4_xs_c(const uint8_t *restrict x, float *restrict y, uint64_t nb)
{
    for (uint64_t i = 0; i < nb; i++, x += 136) {
        const float d = gq_h2f(td__le16(x));
        const unsigned scales_h = td__le16(x + 2);
        const uint8_t *restrict scales_l = x + 4;
        const uint8_t *restrict qs = x + 8;
        for (int ib = 0; ib < 8; ib++, qs += 16, y += 32) {
            int ls =
                ((scales_l[ib / 2] >> (4 * (ib % 2))) & 15) | (((scales_h >> (2 * ib)) & 3) << 4);
            const float dl = d * (float)(ls - 32);
            for (int j = 0; j < 16; j++) {
                y[j] = dl * (float)gq_kvalues_iq4nl[qs[j] & 15];
                y[j + 16] = dl * (float)gq_kvalues_iq4nl[qs[j] >> 4];
            }
        }
    }
}

/* tq1_0 digit n (0..4) of a byte holding five base-3 digits scaled by 256/243: ggml's
 * ((uint8_t)(q * 3^n) * 3) >> 8. */
static inline int gq_tq1_digit(uint8_t q, uint8_t pow3)
{
    uint8_t v = (uint8_t)(q * pow3);
    return ((uint16_t)v * 3) >> 8;
}

static void gq_tq1_0_c(const uint8_t *restrict x, float *restrict y, uint64_t nb)
{
    static const uint8_t pow3[5] = {1, 3, 9, 27, 81};
    for (uint64_t i = 0; i < nb; i++, x += 54) {
        const uint8_t *restrict qs = x;
        const uint8_t *restrict qh = x + 48;
        const float d = gq_h2f(td__le16(x + 52));
        for (int n = 0; n < 5; n++, y += 32)
            for (int m = 0; m < 32; m++)
                y[m] = (float)(gq_tq1_digit(qs[m], pow3[n]) - 1) * d;
        for (int n = 0; n < 5; n++, y += 16)
            for (int m = 0; m < 16; m++)
                y[m] = (float)(gq_tq1_digit(qs[32 + m], pow3[n]) - 1) * d;
        for (int n = 0; n < 4; n++, y += 4)
            for (int j = 0; j < 4; j++)
                y[j] = (float)(gq_tq1_digit(qh[j], pow3[n]) - 1) * d;
    }
}

static void gq_tq2_0_c(const uint8_t *restrict x, float *restrict y, uint64_t nb)
{
    for (uint64_t i = 0; i < nb; i++, x += 66) {
        const uint8_t *restrict qs = x;
        const float d = gq_h2f(td__le16(x + 64));
        for (int j = 0; j < 64; j += 32)
            for (int l = 0; l < 4; l++, y += 32)
                for (int m = 0; m < 32; m++)
                    y[m] = (float)(((qs[j + m] >> (2 * l)) & 3) - 1) * d;
    }
}

/* ggml's GGML_E8M0_TO_FP32_HALF: 2^(e-128), with the two smallest codes subnormal. */
static inline float gq_e8m0_half(uint8_t e)
{
    uint32_t bits = e < 2 ? 0x00200000u << e : (uint32_t)(e - 1) << 23;
    return gq_bits_f32(bits);
}

static void gq_mxfp4_c(const uint8_t *restrict x, float *restrict y, uint64_t nb)
{
    for (uint64_t i = 0; i < nb; i++, x += 17, y += 32) {
        const float d = gq_e8m0_half(x[0]);
        const uint8_t *restrict qs = x + 1;
        for (int j = 0; j < 16; j++) {
            y[j] = (float)gq_kvalues_mxfp4[qs[j] & 15] * d;
            y[j + 16] = (float)gq_kvalues_mxfp4[qs[j] >> 4] * d;
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * Kernel selection
 */

static td__gq_kernel gq_portable_kernel(td_dtype type)
{
    switch (type) {
    case TD_Q4_0:
        return gq_q4_0_c;
    case TD_Q4_1:
        return gq_q4_1_c;
    case TD_Q5_0:
        return gq_q5_0_c;
    case TD_Q5_1:
        return gq_q5_1_c;
    case TD_Q8_0:
        return gq_q8_0_c;
    case TD_Q8_1:
        return gq_q8_1_c;
    case TD_Q2_K:
        return gq_q2_k_c;
    case TD_Q3_K:
        return gq_q3_k_c;
    case TD_Q4_K:
        return gq_q4_k_c;
    case TD_Q5_K:
        return gq_q5_k_c;
    case TD_Q6_K:
        return gq_q6_k_c;
    case TD_Q8_K:
        return gq_q8_k_c;
    case TD_IQ4_NL:
        return gq_iq4_nl_c;
    case TD_IQ4_XS:
        return gq_iq4_xs_c;
    case TD_TQ1_0:
        return gq_tq1_0_c;
    case TD_TQ2_0:
        return gq_tq2_0_c;
    case TD_MXFP4:
        return gq_mxfp4_c;
    default:
        return td__gq_iq_kernel(type); /* the i-quants, or NULL */
    }
}

int td__gq_supported(td_dtype type)
{
    return gq_portable_kernel(type) != NULL;
}

const char *td__gq_supported_names(void)
{
    return "q4_0, q4_1, q5_0, q5_1, q8_0, q8_1, q2_k, q3_k, q4_k, q5_k, q6_k, q8_k, iq1_s, "
           "iq1_m, iq2_xxs, iq2_xs, iq2_s, iq3_xxs, iq3_s, iq4_nl, iq4_xs, tq1_0, tq2_0, mxfp4";
}

/* The CPU probe: run once per process (pthread_once), then only read. */
static pthread_once_t gq_cpu_once = PTHREAD_ONCE_INIT;
static int gq_cpu_avx2;

static void gq_cpu_probe(void)
{
    gq_cpu_avx2 = td__gq_avx2_probe();
}

int td__gq_have_avx2(void)
{
    pthread_once(&gq_cpu_once, gq_cpu_probe);
    return gq_cpu_avx2;
}

/* Resolves AUTO and checks that AVX2 is there when asked for. */
static int gq_resolve_isa(td__gq_isa isa, td__gq_isa *out, td_error *err)
{
    switch (isa) {
    case GQ_ISA_AUTO:
        *out = td__gq_have_avx2() ? GQ_ISA_AVX2 : GQ_ISA_PORTABLE;
        return 0;
    case GQ_ISA_PORTABLE:
        *out = isa;
        return 0;
    case GQ_ISA_AVX2:
        if (!td__gq_have_avx2())
            return td__err(err, TD_ENOTSUP,
                           "dequantize: the AVX2 kernels need a CPU with AVX2, "
                           "FMA and F16C");
        *out = isa;
        return 0;
    default:
        return td__err(err, TD_EINVAL, "dequantize: unknown kernel set %d", (int)isa);
    }
}

/* The kernel for type under a resolved isa: AVX2 where there is one, else portable. */
static td__gq_kernel gq_pick(td_dtype type, td__gq_isa isa)
{
    td__gq_kernel k = isa == GQ_ISA_AVX2 ? td__gq_avx2_kernel(type) : NULL;
    return k ? k : gq_portable_kernel(type);
}

static int gq_unsupported(td_dtype type, const char *label, td_error *err)
{
    const char *name = td_dtype_name(type);
    if (!td_dtype_is_block(type))
        return td__err(err, TD_EDTYPE,
                       "%s%sdtype %s%s%s is not a GGML block type, nothing to dequantize",
                       label ? label : "", label ? ": " : "", name ? "'" : "",
                       name ? name : "(invalid)", name ? "'" : "");
    return td__err(err, TD_EDTYPE,
                   "%s%sdequantizing block type '%s' is not supported (supported: %s)",
                   label ? label : "", label ? ": " : "", name, td__gq_supported_names());
}

int td__gq_dequantize_blocks(td_dtype type, const void *blocks, uint64_t nblocks, float *out,
                             td__gq_isa isa, td_error *err)
{
    td__gq_isa r = GQ_ISA_PORTABLE;
    int rc = gq_resolve_isa(isa, &r, err);
    if (rc)
        return rc;
    td__gq_kernel k = gq_pick(type, r);
    if (!k)
        return gq_unsupported(type, NULL, err);
    if (nblocks && (!blocks || !out))
        return td__err(err, TD_EINVAL, "dequantize: NULL buffer for %llu blocks",
                       (unsigned long long)nblocks);
    if (nblocks)
        k(blocks, out, nblocks);
    return 0;
}

void td__gq_f32_to_f16_row(const float *in, uint16_t *out, size_t n, td__gq_isa isa)
{
    if (isa != GQ_ISA_PORTABLE && td__gq_have_avx2()) {
        td__gq_avx2_f32_to_f16(in, out, n);
        return;
    }
    gq_f2h_row_c(in, out, n);
}

void td__gq_f32_to_bf16_row(const float *in, uint16_t *out, size_t n, td__gq_isa isa)
{
    if (isa != GQ_ISA_PORTABLE && td__gq_have_avx2()) {
        td__gq_avx2_f32_to_bf16(in, out, n);
        return;
    }
    gq_f2bf_row_c(in, out, n);
}

/* ---------------------------------------------------------------------------------------------
 * The threaded driver
 */

/* Elements decoded per float32 tile when the output is float16 or bfloat16: a multiple of
 * every block size, and 8 KiB of floats, so that the tile and the largest lookup table (iq1's
 * grid, 16 KiB) fit in a 32 KiB L1 together: with 16 KiB tiles, iq1_s to float16 ran at
 * about 60% of its float32 speed. */
#define GQ_TILE_ELEMS 2048u

typedef struct gq_share {
    td__gq_kernel kernel;
    td__gq_isa isa;
    td_dtype out_type;
    const uint8_t *src; /* first block of this share */
    void *dst;          /* first output element of this share */
    uint64_t nblocks;
    uint32_t block_elems, block_bytes;
} gq_share;

static void gq_run_share(const gq_share *s)
{
    if (s->out_type == TD_FLOAT32) {
        if (s->nblocks)
            s->kernel(s->src, s->dst, s->nblocks);
        return;
    }
    float tile[GQ_TILE_ELEMS] __attribute__((aligned(64)));
    const uint64_t per_tile = GQ_TILE_ELEMS / s->block_elems;
    const uint8_t *src = s->src;
    uint16_t *dst = s->dst;
    for (uint64_t done = 0; done < s->nblocks;) {
        uint64_t nb = s->nblocks - done < per_tile ? s->nblocks - done : per_tile;
        size_t ne = (size_t)nb * s->block_elems;
        s->kernel(src, tile, nb);
        if (s->out_type == TD_FLOAT16)
            td__gq_f32_to_f16_row(tile, dst, ne, s->isa);
        else
            td__gq_f32_to_bf16_row(tile, dst, ne, s->isa);
        src += nb * s->block_bytes;
        dst += ne;
        done += nb;
    }
}

/* A whole call's work, handed out in chunks: every thread, the caller's included, takes the
 * next chunk until none is left. A thread the scheduler delays (a busy machine) then costs
 * nothing: the others take its chunks. */
typedef struct gq_job {
    gq_share proto;            /* kernel, isa, out_type, block geometry */
    const uint8_t *src;        /* the first block */
    uint8_t *dst;              /* the first output element */
    size_t osize;              /* output element bytes */
    uint64_t nblocks;          /* in all */
    uint64_t chunk_blocks;     /* per chunk: whole rows when rows are small enough */
    atomic_uint_fast64_t next; /* the next chunk to take */
} gq_job;

static void gq_work(gq_job *j)
{
    for (;;) {
        uint64_t c = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
        if (c >= (j->nblocks + j->chunk_blocks - 1) / j->chunk_blocks)
            return;
        uint64_t b0 = c * j->chunk_blocks;
        gq_share sh = j->proto;
        sh.src = j->src + b0 * sh.block_bytes;
        sh.dst = j->dst + b0 * sh.block_elems * j->osize;
        sh.nblocks = j->nblocks - b0 < j->chunk_blocks ? j->nblocks - b0 : j->chunk_blocks;
        gq_run_share(&sh);
    }
}

static void *gq_thread_main(void *arg)
{
    gq_work(arg);
    return NULL;
}

/* Threads to use for nelems elements: no more than one per GQ_MIN_ELEMS_PER_THREAD elements,
 * online CPUs (and this thread's affinity), at most GQ_MAX_THREADS. The CPU count is asked for
 * only when the size allows more than one thread: sysconf reads /sys, which costs about as much
 * as decoding a small tensor. */
static unsigned gq_auto_threads(uint64_t nelems)
{
    uint64_t by_size = nelems / GQ_MIN_ELEMS_PER_THREAD;
    if (by_size < 2)
        return 1;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0 && CPU_COUNT(&set) < n)
        n = CPU_COUNT(&set);
    if (n < 1)
        n = 1;
    if (n > GQ_MAX_THREADS)
        n = GQ_MAX_THREADS;
    if (by_size < (uint64_t)n)
        n = (long)by_size;
    return (unsigned)n;
}

unsigned td__gq_threads(uint64_t nelems, unsigned bound)
{
    unsigned n = gq_auto_threads(nelems);
    return bound && n > bound ? bound : n;
}

int td__gq_output_nbytes(td_dtype type, uint64_t nelems, td_dtype out_type, uint64_t *nbytes,
                         const char *label, td_error *err)
{
    if (!td__gq_supported(type))
        return gq_unsupported(type, label, err);
    if (out_type != TD_FLOAT32 && out_type != TD_FLOAT16 && out_type != TD_BFLOAT16) {
        const char *n = td_dtype_name(out_type);
        return td__err(err, TD_EDTYPE,
                       "%s%sdequantizing to dtype '%s' is not supported (float32, float16 or "
                       "bfloat16)",
                       label ? label : "", label ? ": " : "", n ? n : "(invalid)");
    }
    size_t be;
    td_dtype_block(type, &be, NULL);
    if (nelems % be)
        return td__err(err, TD_ERANGE,
                       "%s%s%llu elements are not a whole number of %s blocks of %zu",
                       label ? label : "", label ? ": " : "", (unsigned long long)nelems,
                       td_dtype_name(type), be);
    if (!td__mul_u64(nelems, td_dtype_size(out_type), nbytes))
        return td__err(err, TD_ERANGE, "%s%s%llu elements overflow the output size",
                       label ? label : "", label ? ": " : "", (unsigned long long)nelems);
    return 0;
}

int td__gq_dequantize(td_dtype type, const void *src, uint64_t src_bytes, uint64_t nelems,
                      uint64_t row_elems, td_dtype out_type, void *dst, uint64_t dst_bytes,
                      const td__gq_options *opt, const char *label, td_error *err)
{
    static const td__gq_options defaults = {0, GQ_ISA_AUTO};
    const char *lb = label ? label : "dequantize", *sep = ": ";
    if (!opt)
        opt = &defaults;
    uint64_t out_bytes;
    int rc = td__gq_output_nbytes(type, nelems, out_type, &out_bytes, label, err);
    if (rc)
        return rc;
    td__gq_isa isa = GQ_ISA_PORTABLE;
    rc = gq_resolve_isa(opt->isa, &isa, err);
    if (rc)
        return rc;
    const td__dtype_desc *info = td__dtype_info(type);
    const uint64_t nblocks = nelems / info->block_elems;
    /* No overflow: td__gq_output_nbytes checked nelems * 2 (at least), and no block type stores
     * more than 36 bytes per 32 elements. */
    const uint64_t in_bytes = nblocks * info->block_bytes;
    if (src_bytes < in_bytes)
        return td__err(err, TD_EINVAL, "%s%s%llu %s elements need %llu bytes, the source has %llu",
                       lb, sep, (unsigned long long)nelems, info->name,
                       (unsigned long long)in_bytes, (unsigned long long)src_bytes);
    if (dst_bytes < out_bytes)
        return td__err(err, TD_EINVAL,
                       "%s%s%llu %s elements need %llu bytes, the destination has %llu", lb, sep,
                       (unsigned long long)nelems, td_dtype_name(out_type),
                       (unsigned long long)out_bytes, (unsigned long long)dst_bytes);
    if (nblocks && (!src || !dst))
        return td__err(err, TD_EINVAL, "%s%sNULL buffer for %llu elements", lb, sep,
                       (unsigned long long)nelems);
    if (!nblocks)
        return 0;

    gq_job job = {
        .proto =
            {
                .kernel = gq_pick(type, isa),
                .isa = isa,
                .out_type = out_type,
                .block_elems = info->block_elems,
                .block_bytes = info->block_bytes,
            },
        .src = src,
        .dst = dst,
        .osize = td_dtype_size(out_type),
        .nblocks = nblocks,
    };
    unsigned nt = opt->nthreads ? opt->nthreads : gq_auto_threads(nelems);
    if (nt > GQ_MAX_THREADS)
        nt = GQ_MAX_THREADS;
    /* Chunks of about GQ_CHUNK_ELEMS elements, made of whole rows when a row fits, and at
     * least 4 per thread so that a late thread's share can be taken by the others. */
    uint64_t target = GQ_CHUNK_ELEMS / info->block_elems;
    if (target * 4 * nt > nblocks)
        target = nblocks / (4 * (uint64_t)nt);
    if (target < 1)
        target = 1;
    uint64_t row_blocks =
        row_elems && row_elems % info->block_elems == 0 ? row_elems / info->block_elems : 0;
    if (row_blocks && row_blocks <= target)
        target = target / row_blocks * row_blocks;
    job.chunk_blocks = target;
    atomic_init(&job.next, 0);
    uint64_t nchunks = (nblocks + target - 1) / target;
    if ((uint64_t)nt > nchunks)
        nt = (unsigned)nchunks;

    /* Threads 1..nt-1 are new; the caller works too. A thread that cannot be started is no
     * error: the others take its chunks. */
    pthread_t tids[GQ_MAX_THREADS];
    unsigned started = 0;
    for (unsigned t = 1; t < nt; t++) {
        if (pthread_create(&tids[started], NULL, gq_thread_main, &job) == 0)
            started++;
    }
    gq_work(&job);
    for (unsigned t = 0; t < started; t++)
        pthread_join(tids[t], NULL);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * MLX's packed form
 */

int td__gq_mlx_bits(td_dtype type)
{
    switch (type) {
    case TD_Q4_0:
    case TD_Q4_1:
        return 4;
    case TD_Q8_0:
        return 8;
    default:
        return 0;
    }
}

static int gq_no_mlx(td_dtype type, const char *label, td_error *err)
{
    const char *n = td_dtype_name(type);
    return td__err(err, TD_EDTYPE,
                   "%s%sdtype '%s' has no MLX packed form (only q4_0, q4_1 and q8_0 have)",
                   label ? label : "", label ? ": " : "", n ? n : "(invalid)");
}

int td__gq_mlx_shapes(td_dtype type, int ndim, const int64_t *shape, int64_t *wshape,
                      int64_t *sshape, const char *label, td_error *err)
{
    int bits = td__gq_mlx_bits(type);
    if (!bits)
        return gq_no_mlx(type, label, err);
    if (ndim < 1 || ndim > TD_MAX_DIMS || !shape)
        return td__err(err, TD_EINVAL, "%s%sMLX packed form needs 1..%d dimensions, not %d",
                       label ? label : "", label ? ": " : "", TD_MAX_DIMS, ndim);
    int64_t inner = shape[ndim - 1];
    if (inner < 0 || inner % 32)
        return td__err(err, TD_EINVAL,
                       "%s%sinnermost size %lld is not a multiple of MLX's group size 32",
                       label ? label : "", label ? ": " : "", (long long)inner);
    for (int i = 0; i < ndim; i++) {
        wshape[i] = shape[i];
        sshape[i] = shape[i];
    }
    wshape[ndim - 1] = inner / 32 * bits;
    sshape[ndim - 1] = inner / 32;
    return 0;
}

static void gq_mlx_q4(const uint8_t *restrict qs, uint32_t *restrict w)
{
    /* Element j is the low nibble of qs[j], element j+16 the high nibble; MLX wants elements
     * in order, eight per word, element 8k+i at bits 4i of word k. */
    for (int k = 0; k < 2; k++) {
        uint32_t lo = 0, hi = 0;
        for (int i = 0; i < 8; i++) {
            lo |= (uint32_t)(qs[8 * k + i] & 15) << (4 * i);
            hi |= (uint32_t)(qs[8 * k + i] >> 4) << (4 * i);
        }
        w[k] = lo;
        w[k + 2] = hi;
    }
}

int td__gq_mlx_pack(td_dtype type, const void *src, uint64_t src_bytes, uint64_t nblocks,
                    uint32_t *weights, uint16_t *scales, uint16_t *biases, const char *label,
                    td_error *err)
{
    int bits = td__gq_mlx_bits(type);
    if (!bits)
        return gq_no_mlx(type, label, err);
    size_t bb;
    td_dtype_block(type, NULL, &bb);
    uint64_t need;
    if (!td__mul_u64(nblocks, bb, &need) || src_bytes < need)
        return td__err(err, TD_EINVAL, "%s%s%llu %s blocks do not fit in %llu source bytes",
                       label ? label : "", label ? ": " : "", (unsigned long long)nblocks,
                       td_dtype_name(type), (unsigned long long)src_bytes);
    if (nblocks && !src)
        return td__err(err, TD_EINVAL, "%s%sNULL source for the MLX packed form",
                       label ? label : "", label ? ": " : "");
    const uint8_t *x = src;
    for (uint64_t i = 0; i < nblocks; i++, x += bb) {
        uint16_t d = td__le16(x);
        if (scales)
            scales[i] = d;
        switch (type) {
        case TD_Q4_0:
            if (biases)
                biases[i] = gq_f2h(-8.0f * gq_h2f(d));
            if (weights)
                gq_mlx_q4(x + 2, weights + 4 * i);
            break;
        case TD_Q4_1:
            if (biases)
                biases[i] = td__le16(x + 2);
            if (weights)
                gq_mlx_q4(x + 4, weights + 4 * i);
            break;
        default: /* TD_Q8_0 */
            if (biases)
                biases[i] = gq_f2h(-128.0f * gq_h2f(d));
            if (weights)
                for (int k = 0; k < 8; k++)
                    weights[8 * i + k] = td__le32(x + 2 + 4 * k) ^ 0x80808080u;
            break;
        }
    }
    return 0;
}

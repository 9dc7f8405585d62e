/*
 * ggml_iquants_avx2.c - x86-64 AVX2 kernels of the grid-based i-quants (iq1_s, iq1_m,
 * iq2_xxs, iq2_xs, iq2_s, iq3_xxs, iq3_s), chosen at run time like those of
 * ggml_quants_avx2.c (each function carries its own target attribute).
 *
 * A group of 8 elements is one vector: its grid entry (8 bytes, or two entries of 4) widened
 * to 8 floats, times the group's scale, then the sign bit flipped where the group's sign byte
 * says so. The scales are computed in scalar code exactly as in ggml_iquants.c, and the lane
 * arithmetic is the same single multiplication (iq1: one addition, then one multiplication),
 * so the results are the portable kernels' bits, NaNs included. What the vectors save is the
 * per-element conversion and the branch-free sign handling the compiler does not find.
 */
#include "common.h"
#include "ggml_quants.h"
#include "iq_grids.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#include <immintrin.h>

#define GQ_AVX2 __attribute__((target("avx2,fma,f16c")))

GQ_AVX2 static inline float gq_iq_h2f(uint16_t h)
{
    return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
}

/* The sign bit of lane j set when bit j of s is: a mask to XOR onto 8 floats. */
GQ_AVX2 static inline __m256 gq_signs8(uint32_t s)
{
    const __m256i shift = _mm256_setr_epi32(31, 30, 29, 28, 27, 26, 25, 24);
    const __m256i top = _mm256_set1_epi32(INT32_MIN);
    return _mm256_castsi256_ps(
        _mm256_and_si256(_mm256_sllv_epi32(_mm256_set1_epi32((int)s), shift), top));
}

/* 8 unsigned bytes at g -> 8 floats. */
GQ_AVX2 static inline __m256 gq_u8x8(const uint8_t *g)
{
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)g)));
}

/* Two 4-byte grid entries -> 8 floats. */
GQ_AVX2 static inline __m256 gq_u8x4x2(const uint8_t *g1, const uint8_t *g2)
{
    int32_t a, b;
    memcpy(&a, g1, 4);
    memcpy(&b, g2, 4);
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_setr_epi32(a, b, 0, 0)));
}

/* y[0..8) = +-(db * g), signs as in gq_signs8. */
GQ_AVX2 static inline void gq_put8s(float *y, __m256 g, __m256 db, uint32_t signs)
{
    _mm256_storeu_ps(y, _mm256_xor_ps(_mm256_mul_ps(db, g), gq_signs8(signs)));
}

GQ_AVX2 static void gq_iq2_xxs_avx2(const uint8_t *x, float *y, uint64_t nb)
{
    for (uint64_t i = 0; i < nb; i++, x += 66) {
        const float d = gq_iq_h2f(td__le16(x));
        const uint8_t *q = x + 2;
        for (int ib = 0; ib < 8; ib++, q += 8) {
            const uint32_t aux = td__le32(q + 4);
            const __m256 db = _mm256_set1_ps(d * (0.5f + (float)(aux >> 28)) * 0.25f);
            for (int l = 0; l < 4; l++, y += 8)
                gq_put8s(y, gq_u8x8(td__gq_iq2xxs_grid[q[l]]), db,
                         td__gq_iq_ksigns[(aux >> (7 * l)) & 127]);
        }
    }
}

GQ_AVX2 static void gq_iq2_xs_avx2(const uint8_t *x, float *y, uint64_t nb)
{
    for (uint64_t i = 0; i < nb; i++, x += 74) {
        const float d = gq_iq_h2f(td__le16(x));
        const uint8_t *qs = x + 2;
        const uint8_t *sc = x + 66;
        for (int ib = 0; ib < 8; ib++) {
            const __m256 db[2] = {_mm256_set1_ps(d * (0.5f + (float)(sc[ib] & 15)) * 0.25f),
                                  _mm256_set1_ps(d * (0.5f + (float)(sc[ib] >> 4)) * 0.25f)};
            for (int l = 0; l < 4; l++, y += 8) {
                const unsigned v = td__le16(qs + 2 * (4 * ib + l));
                gq_put8s(y, gq_u8x8(td__gq_iq2xs_grid[v & 511]), db[l / 2],
                         td__gq_iq_ksigns[v >> 9]);
            }
        }
    }
}

GQ_AVX2 static void gq_iq2_s_avx2(const uint8_t *x, float *y, uint64_t nb)
{
    for (uint64_t i = 0; i < nb; i++, x += 82) {
        const float d = gq_iq_h2f(td__le16(x));
        const uint8_t *qs = x + 2;
        const uint8_t *signs = x + 34;
        const uint8_t *qh = x + 66;
        const uint8_t *sc = x + 74;
        for (int ib = 0; ib < 8; ib++, qs += 4, signs += 4) {
            const __m256 db[2] = {_mm256_set1_ps(d * (0.5f + (float)(sc[ib] & 15)) * 0.25f),
                                  _mm256_set1_ps(d * (0.5f + (float)(sc[ib] >> 4)) * 0.25f)};
            for (int l = 0; l < 4; l++, y += 8) {
                const unsigned k = qs[l] | (((unsigned)qh[ib] << (8 - 2 * l)) & 0x300u);
                gq_put8s(y, gq_u8x8(td__gq_iq2s_grid[k]), db[l / 2], signs[l]);
            }
        }
    }
}

GQ_AVX2 static void gq_iq3_xxs_avx2(const uint8_t *x, float *y, uint64_t nb)
{
    for (uint64_t i = 0; i < nb; i++, x += 98) {
        const float d = gq_iq_h2f(td__le16(x));
        const uint8_t *qs = x + 2;
        const uint8_t *ss = x + 66;
        for (int ib = 0; ib < 8; ib++, qs += 8) {
            const uint32_t aux = td__le32(ss + 4 * ib);
            const __m256 db = _mm256_set1_ps(d * (0.5f + (float)(aux >> 28)) * 0.5f);
            for (int l = 0; l < 4; l++, y += 8)
                gq_put8s(
                    y, gq_u8x4x2(td__gq_iq3xxs_grid[qs[2 * l]], td__gq_iq3xxs_grid[qs[2 * l + 1]]),
                    db, td__gq_iq_ksigns[(aux >> (7 * l)) & 127]);
        }
    }
}

GQ_AVX2 static void gq_iq3_s_avx2(const uint8_t *x, float *y, uint64_t nb)
{
    for (uint64_t i = 0; i < nb; i++, x += 110) {
        const float d = gq_iq_h2f(td__le16(x));
        const uint8_t *qs = x + 2;
        const uint8_t *qh = x + 66;
        const uint8_t *signs = x + 74;
        const uint8_t *sc = x + 106;
        for (int ib = 0; ib < 8; ib++, qs += 8, signs += 4) {
            const __m256 db =
                _mm256_set1_ps(d * (float)(1 + 2 * ((sc[ib / 2] >> (4 * (ib % 2))) & 15)));
            const unsigned h = qh[ib];
            for (int l = 0; l < 4; l++, y += 8) {
                const unsigned k1 = qs[2 * l] | ((h << (8 - 2 * l)) & 256u);
                const unsigned k2 = qs[2 * l + 1] | ((h << (7 - 2 * l)) & 256u);
                gq_put8s(y, gq_u8x4x2(td__gq_iq3s_grid[k1], td__gq_iq3s_grid[k2]), db, signs[l]);
            }
        }
    }
}

/* y[0..8) = dl * (g + delta) for the 8 signed bytes of g. */
GQ_AVX2 static inline void gq_put1(float *y, const int8_t *g, __m256 dl, __m256 delta)
{
    __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)g)));
    _mm256_storeu_ps(y, _mm256_mul_ps(dl, _mm256_add_ps(v, delta)));
}

/* +-0.125 with the sign bit taken from bit 31 of s: branch-free, as the delta signs of
 * quantized data are random (a branch would be mispredicted half of the time). */
GQ_AVX2 static inline __m256 gq_delta(uint32_t s)
{
    return _mm256_castsi256_ps(_mm256_set1_epi32((int)(0x3e000000u | (s & 0x80000000u))));
}

GQ_AVX2 static void gq_iq1_s_avx2(const uint8_t *x, float *y, uint64_t nb)
{
    for (uint64_t i = 0; i < nb; i++, x += 50) {
        const float d = gq_iq_h2f(td__le16(x));
        const uint8_t *qs = x + 2;
        const uint8_t *qh = x + 34;
        for (int ib = 0; ib < 8; ib++, qs += 4) {
            const unsigned h = td__le16(qh + 2 * ib);
            const __m256 dl = _mm256_set1_ps(d * (float)(2 * ((h >> 12) & 7) + 1));
            const __m256 delta = gq_delta(h << 16);
            for (int l = 0; l < 4; l++, y += 8)
                gq_put1(y, td__gq_iq1s_grid[qs[l] | (((h >> (3 * l)) & 7) << 8)], dl, delta);
        }
    }
}

GQ_AVX2 static void gq_iq1_m_avx2(const uint8_t *x, float *y, uint64_t nb)
{
    for (uint64_t i = 0; i < nb; i++, x += 56) {
        const uint8_t *qs = x;
        const uint8_t *qh = x + 32;
        const uint8_t *sc = x + 48;
        const uint16_t dh =
            (uint16_t)((td__le16(sc) >> 12) | ((td__le16(sc + 2) >> 8) & 0x00f0u) |
                       ((td__le16(sc + 4) >> 4) & 0x0f00u) | (td__le16(sc + 6) & 0xf000u));
        const float d = gq_iq_h2f(dh);
        for (int ib = 0; ib < 8; ib++, qs += 4, qh += 2) {
            const unsigned s = td__le16(sc + 2 * (ib / 2));
            const __m256 dl[2] = {
                _mm256_set1_ps(d * (float)(2 * ((s >> (6 * (ib % 2))) & 7) + 1)),
                _mm256_set1_ps(d * (float)(2 * ((s >> (6 * (ib % 2) + 3)) & 7) + 1))};
            for (int l = 0; l < 4; l++, y += 8) {
                const unsigned h = qh[l / 2] >> (4 * (l % 2));
                gq_put1(y, td__gq_iq1s_grid[qs[l] | ((h & 7u) << 8)], dl[l / 2], gq_delta(h << 28));
            }
        }
    }
}

td__gq_kernel td__gq_iq_avx2_kernel(td_dtype type)
{
    switch (type) {
    case TD_IQ2_XXS:
        return gq_iq2_xxs_avx2;
    case TD_IQ2_XS:
        return gq_iq2_xs_avx2;
    case TD_IQ2_S:
        return gq_iq2_s_avx2;
    case TD_IQ3_XXS:
        return gq_iq3_xxs_avx2;
    case TD_IQ3_S:
        return gq_iq3_s_avx2;
    case TD_IQ1_S:
        return gq_iq1_s_avx2;
    case TD_IQ1_M:
        return gq_iq1_m_avx2;
    default:
        return NULL;
    }
}

#else /* not x86-64: no AVX2 kernels */

td__gq_kernel td__gq_iq_avx2_kernel(td_dtype type)
{
    (void)type;
    return NULL;
}

#endif

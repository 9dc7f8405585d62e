/*
 * ggml_quants_avx2.c - x86-64 AVX2 kernels for ggml_quants.c, chosen at run time.
 *
 * Each function carries __attribute__((target("avx2,fma,f16c"))), so the file needs no special
 * compiler flags and the rest of the library stays baseline x86-64. ggml_quants.c calls these
 * only after td__gq_have_avx2() said the CPU has the features.
 *
 * The arithmetic is the portable kernels' (and ggml's), lane by lane: integer values are formed
 * exactly, converted to float, multiplied by the same scale, and a bias added or subtracted
 * with a separate instruction (no FMA), so that results, NaN payloads included, are the same
 * bits. The tests compare both kernel sets with each other and with llama.cpp.
 */
#include "ggml_quants.h"
#include "common.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#include <cpuid.h>
#include <immintrin.h>

#define GQ_AVX2 __attribute__((target("avx2,fma,f16c")))

/* AVX2 and FMA through the compiler's CPU model (which also checks that the OS saves the YMM
 * registers); F16C from CPUID leaf 1 (ECX bit 29) directly, as clang 14 does not know the name
 * "f16c" in __builtin_cpu_supports. */
int td__gq_avx2_probe(void)
{
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
        return 0;
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    return (c & (1u << 29)) != 0;
}

GQ_AVX2 static inline float gq_h2f_avx(uint16_t h)
{
    return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
}

/* 16 signed bytes -> y[0..16) = q * d. */
GQ_AVX2 static inline void gq_st16(float *y, __m128i q, __m256 d)
{
    __m256 a = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
    __m256 b = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q, 8)));
    _mm256_storeu_ps(y, _mm256_mul_ps(a, d));
    _mm256_storeu_ps(y + 8, _mm256_mul_ps(b, d));
}

/* 16 signed bytes -> y[0..16) = q * d + m. */
GQ_AVX2 static inline void gq_st16_add(float *y, __m128i q, __m256 d, __m256 m)
{
    __m256 a = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
    __m256 b = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q, 8)));
    _mm256_storeu_ps(y, _mm256_add_ps(_mm256_mul_ps(a, d), m));
    _mm256_storeu_ps(y + 8, _mm256_add_ps(_mm256_mul_ps(b, d), m));
}

/* 16 signed bytes -> y[0..16) = d * q - m. */
GQ_AVX2 static inline void gq_st16_sub(float *y, __m128i q, __m256 d, __m256 m)
{
    __m256 a = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
    __m256 b = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q, 8)));
    _mm256_storeu_ps(y, _mm256_sub_ps(_mm256_mul_ps(d, a), m));
    _mm256_storeu_ps(y + 8, _mm256_sub_ps(_mm256_mul_ps(d, b), m));
}

GQ_AVX2 static inline __m128i gq_lo128(__m256i v)
{
    return _mm256_castsi256_si128(v);
}

GQ_AVX2 static inline __m128i gq_hi128(__m256i v)
{
    return _mm256_extracti128_si256(v, 1);
}

/* Byte k of the result is 0xFF when bit k of bits is set, else 0. */
GQ_AVX2 static inline __m256i gq_bitmask32(uint32_t bits)
{
    const __m256i shuf = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2,
                                          2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), shuf);
    return _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
}

GQ_AVX2 static void gq_q4_0_avx2(const uint8_t *x, float *y, uint64_t nb)
{
    const __m128i m4 = _mm_set1_epi8(15), off = _mm_set1_epi8(8);
    for (uint64_t i = 0; i < nb; i++, x += 18, y += 32) {
        const __m256 d = _mm256_set1_ps(gq_h2f_avx(td__le16(x)));
        __m128i qs = _mm_loadu_si128((const __m128i *)(x + 2));
        gq_st16(y, _mm_sub_epi8(_mm_and_si128(qs, m4), off), d);
        gq_st16(y + 16, _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(qs, 4), m4), off), d);
    }
}

GQ_AVX2 static void gq_q4_1_avx2(const uint8_t *x, float *y, uint64_t nb)
{
    const __m128i m4 = _mm_set1_epi8(15);
    for (uint64_t i = 0; i < nb; i++, x += 20, y += 32) {
        const __m256 d = _mm256_set1_ps(gq_h2f_avx(td__le16(x)));
        const __m256 m = _mm256_set1_ps(gq_h2f_avx(td__le16(x + 2)));
        __m128i qs = _mm_loadu_si128((const __m128i *)(x + 4));
        gq_st16_add(y, _mm_and_si128(qs, m4), d, m);
        gq_st16_add(y + 16, _mm_and_si128(_mm_srli_epi16(qs, 4), m4), d, m);
    }
}

/* The 32 five-bit values of a q5 block, in element order. */
GQ_AVX2 static inline __m256i gq_q5_values(const uint8_t *qs, uint32_t qh)
{
    const __m128i m4 = _mm_set1_epi8(15);
    __m128i v = _mm_loadu_si128((const __m128i *)qs);
    __m256i q = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_and_si128(v, m4)),
                                        _mm_and_si128(_mm_srli_epi16(v, 4), m4), 1);
    __m256i hb = _mm256_and_si256(gq_bitmask32(qh), _mm256_set1_epi8(16));
    return _mm256_or_si256(q, hb);
}

GQ_AVX2 static void gq_q5_0_avx2(const uint8_t *x, float *y, uint64_t nb)
{
    for (uint64_t i = 0; i < nb; i++, x += 22, y += 32) {
        const __m256 d = _mm256_set1_ps(gq_h2f_avx(td__le16(x)));
        __m256i q = _mm256_sub_epi8(gq_q5_values(x + 6, td__le32(x + 2)), _mm256_set1_epi8(16));
        gq_st16(y, gq_lo128(q), d);
        gq_st16(y + 16, gq_hi128(q), d);
    }
}

GQ_AVX2 static void gq_q5_1_avx2(const uint8_t *x, float *y, uint64_t nb)
{
    for (uint64_t i = 0; i < nb; i++, x += 24, y += 32) {
        const __m256 d = _mm256_set1_ps(gq_h2f_avx(td__le16(x)));
        const __m256 m = _mm256_set1_ps(gq_h2f_avx(td__le16(x + 2)));
        __m256i q = gq_q5_values(x + 8, td__le32(x + 4));
        gq_st16_add(y, gq_lo128(q), d, m);
        gq_st16_add(y + 16, gq_hi128(q), d, m);
    }
}

/* q8_0 and q8_1: blocks of bytes bytes, the f16 scale first, 32 int8 values at qoff. */
GQ_AVX2 static inline void gq_q8_blocks_avx2(const uint8_t *x, float *y, uint64_t nb, size_t bytes,
                                             size_t qoff)
{
    for (uint64_t i = 0; i < nb; i++, x += bytes, y += 32) {
        const __m256 d = _mm256_set1_ps(gq_h2f_avx(td__le16(x)));
        __m256i q = _mm256_loadu_si256((const __m256i *)(x + qoff));
        gq_st16(y, gq_lo128(q), d);
        gq_st16(y + 16, gq_hi128(q), d);
    }
}

GQ_AVX2 static void gq_q8_0_avx2(const uint8_t *x, float *y, uint64_t nb)
{
    gq_q8_blocks_avx2(x, y, nb, 34, 2);
}

GQ_AVX2 static void gq_q8_1_avx2(const uint8_t *x, float *y, uint64_t nb)
{
    gq_q8_blocks_avx2(x, y, nb, 36, 4);
}

GQ_AVX2 static void gq_q2_k_avx2(const uint8_t *x, float *y, uint64_t nb)
{
    const __m256i m3 = _mm256_set1_epi8(3);
    for (uint64_t i = 0; i < nb; i++, x += 84) {
        const uint8_t *sc = x;
        const float d = gq_h2f_avx(td__le16(x + 80));
        const float dmin = gq_h2f_avx(td__le16(x + 82));
        int is = 0;
        for (int n = 0; n < 2; n++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(x + 16 + 32 * n));
            for (int shift = 0; shift < 8; shift += 2, is += 2, y += 32) {
                __m256i v = _mm256_and_si256(_mm256_srl_epi16(q, _mm_cvtsi32_si128(shift)), m3);
                __m256 dl0 = _mm256_set1_ps(d * (float)(sc[is] & 15));
                __m256 ml0 = _mm256_set1_ps(dmin * (float)(sc[is] >> 4));
                __m256 dl1 = _mm256_set1_ps(d * (float)(sc[is + 1] & 15));
                __m256 ml1 = _mm256_set1_ps(dmin * (float)(sc[is + 1] >> 4));
                gq_st16_sub(y, gq_lo128(v), dl0, ml0);
                gq_st16_sub(y + 16, gq_hi128(v), dl1, ml1);
            }
        }
    }
}

GQ_AVX2 static void gq_q3_k_avx2(const uint8_t *x, float *y, uint64_t nb)
{
    const __m256i m3 = _mm256_set1_epi8(3), four = _mm256_set1_epi8(4);
    for (uint64_t i = 0; i < nb; i++, x += 110) {
        const __m256i hm = _mm256_loadu_si256((const __m256i *)x);
        const uint8_t *s = x + 96;
        const float d_all = gq_h2f_avx(td__le16(x + 108));
        int8_t sc[16];
        for (int j = 0; j < 16; j++) {
            int lo = j < 8 ? (s[j] & 15) : (s[j - 8] >> 4);
            int hi = (s[8 + (j & 3)] >> (2 * (j >> 2))) & 3;
            sc[j] = (int8_t)((lo | (hi << 4)) - 32);
        }
        int is = 0, bit = 0;
        for (int n = 0; n < 2; n++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(x + 32 + 32 * n));
            for (int shift = 0; shift < 8; shift += 2, is += 2, bit++, y += 32) {
                const __m256i mbit = _mm256_set1_epi8((char)(1 << bit));
                __m256i v = _mm256_and_si256(_mm256_srl_epi16(q, _mm_cvtsi32_si128(shift)), m3);
                __m256i clear =
                    _mm256_cmpeq_epi8(_mm256_and_si256(hm, mbit), _mm256_setzero_si256());
                v = _mm256_sub_epi8(v, _mm256_and_si256(clear, four));
                gq_st16(y, gq_lo128(v), _mm256_set1_ps(d_all * (float)sc[is]));
                gq_st16(y + 16, gq_hi128(v), _mm256_set1_ps(d_all * (float)sc[is + 1]));
            }
        }
    }
}

static inline void gq_scale_min_k4_avx(int j, const uint8_t *q, uint8_t *d, uint8_t *m)
{
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* 32 unsigned values below 128 -> y[0..32) = d * q - m. */
GQ_AVX2 static inline void gq_st32_sub(float *y, __m256i q, __m256 d, __m256 m)
{
    gq_st16_sub(y, gq_lo128(q), d, m);
    gq_st16_sub(y + 16, gq_hi128(q), d, m);
}

GQ_AVX2 static void gq_q4_k_avx2(const uint8_t *x, float *y, uint64_t nb)
{
    const __m256i m4 = _mm256_set1_epi8(15);
    for (uint64_t i = 0; i < nb; i++, x += 144) {
        const float d = gq_h2f_avx(td__le16(x));
        const float dmin = gq_h2f_avx(td__le16(x + 2));
        const uint8_t *scales = x + 4;
        const uint8_t *q = x + 16;
        for (int is = 0; is < 8; is += 2, q += 32, y += 64) {
            uint8_t sc, m;
            gq_scale_min_k4_avx(is, scales, &sc, &m);
            const __m256 d1 = _mm256_set1_ps(d * (float)sc), m1 = _mm256_set1_ps(dmin * (float)m);
            gq_scale_min_k4_avx(is + 1, scales, &sc, &m);
            const __m256 d2 = _mm256_set1_ps(d * (float)sc), m2 = _mm256_set1_ps(dmin * (float)m);
            __m256i v = _mm256_loadu_si256((const __m256i *)q);
            gq_st32_sub(y, _mm256_and_si256(v, m4), d1, m1);
            gq_st32_sub(y + 32, _mm256_and_si256(_mm256_srli_epi16(v, 4), m4), d2, m2);
        }
    }
}

GQ_AVX2 static void gq_q5_k_avx2(const uint8_t *x, float *y, uint64_t nb)
{
    const __m256i m4 = _mm256_set1_epi8(15), s16 = _mm256_set1_epi8(16);
    for (uint64_t i = 0; i < nb; i++, x += 176) {
        const float d = gq_h2f_avx(td__le16(x));
        const float dmin = gq_h2f_avx(td__le16(x + 2));
        const uint8_t *scales = x + 4;
        const __m256i qh = _mm256_loadu_si256((const __m256i *)(x + 16));
        const uint8_t *ql = x + 48;
        int u = 0;
        for (int is = 0; is < 8; is += 2, ql += 32, y += 64, u += 2) {
            uint8_t sc, m;
            gq_scale_min_k4_avx(is, scales, &sc, &m);
            const __m256 d1 = _mm256_set1_ps(d * (float)sc), m1 = _mm256_set1_ps(dmin * (float)m);
            gq_scale_min_k4_avx(is + 1, scales, &sc, &m);
            const __m256 d2 = _mm256_set1_ps(d * (float)sc), m2 = _mm256_set1_ps(dmin * (float)m);
            const __m256i b1 = _mm256_set1_epi8((char)(1 << u));
            const __m256i b2 = _mm256_set1_epi8((char)(1 << (u + 1)));
            __m256i v = _mm256_loadu_si256((const __m256i *)ql);
            __m256i h1 = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, b1), b1), s16);
            __m256i h2 = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, b2), b2), s16);
            gq_st32_sub(y, _mm256_or_si256(_mm256_and_si256(v, m4), h1), d1, m1);
            gq_st32_sub(y + 32, _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), m4), h2),
                        d2, m2);
        }
    }
}

GQ_AVX2 static void gq_q6_k_avx2(const uint8_t *x, float *y, uint64_t nb)
{
    const __m256i m4 = _mm256_set1_epi8(15), m3 = _mm256_set1_epi8(3), s32 = _mm256_set1_epi8(32);
    for (uint64_t i = 0; i < nb; i++, x += 210) {
        const uint8_t *ql = x;
        const uint8_t *qh = x + 128;
        const int8_t *sc = (const int8_t *)(x + 192);
        const float d = gq_h2f_avx(td__le16(x + 208));
        for (int n = 0; n < 2; n++, ql += 64, qh += 32, sc += 8, y += 128) {
            __m256i l0 = _mm256_loadu_si256((const __m256i *)ql);
            __m256i l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
            __m256i h = _mm256_loadu_si256((const __m256i *)qh);
            __m256i q[4];
            q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4),
                                   _mm256_slli_epi16(_mm256_and_si256(h, m3), 4));
            q[1] = _mm256_or_si256(
                _mm256_and_si256(l1, m4),
                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 2), m3), 4));
            q[2] = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 4), m3), 4));
            q[3] = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 6), m3), 4));
            for (int k = 0; k < 4; k++) {
                __m256i v = _mm256_sub_epi8(q[k], s32);
                /* (d * scale) first, as ggml does */
                gq_st16(y + 32 * k, gq_lo128(v), _mm256_set1_ps(d * (float)sc[2 * k]));
                gq_st16(y + 32 * k + 16, gq_hi128(v), _mm256_set1_ps(d * (float)sc[2 * k + 1]));
            }
        }
    }
}

GQ_AVX2 static void gq_q8_k_avx2(const uint8_t *x, float *y, uint64_t nb)
{
    for (uint64_t i = 0; i < nb; i++, x += 292) {
        float df;
        uint32_t bits = td__le32(x);
        memcpy(&df, &bits, sizeof df);
        const __m256 d = _mm256_set1_ps(df);
        for (int j = 0; j < 256; j += 32, y += 32) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(x + 4 + j));
            gq_st16(y, gq_lo128(q), d);
            gq_st16(y + 16, gq_hi128(q), d);
        }
    }
}

/* 16 packed nibble pairs -> 32 table values, elements j (low nibbles) then j+16 (high). */
GQ_AVX2 static inline void gq_lut16(float *y, const uint8_t *qs, __m128i table, __m256 d)
{
    const __m128i m4 = _mm_set1_epi8(15);
    __m128i v = _mm_loadu_si128((const __m128i *)qs);
    gq_st16(y, _mm_shuffle_epi8(table, _mm_and_si128(v, m4)), d);
    gq_st16(y + 16, _mm_shuffle_epi8(table, _mm_and_si128(_mm_srli_epi16(v, 4), m4)), d);
}

GQ_AVX2 static void gq_iq4_nl_avx2(const uint8_t *x, float *y, uint64_t nb)
{
    const __m128i table =
        _mm_setr_epi8(-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113);
    for (uint64_t i = 0; i < nb; i++, x += 18, y += 32)
        gq_lut16(y, x + 2, table, _mm256_set1_ps(gq_h2f_avx(td__le16(x))));
}

GQ_AVX2 static void gq_iq4_xs_avx2(const uint8_t *x, float *y, uint64_t nb)
{
    const __m128i table =
        _mm_setr_epi8(-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113);
    for (uint64_t i = 0; i < nb; i++, x += 136) {
        const float d = gq_h2f_avx(td__le16(x));
        const unsigned scales_h = td__le16(x + 2);
        const uint8_t *scales_l = x + 4;
        for (int ib = 0; ib < 8; ib++, y += 32) {
            int ls =
                ((scales_l[ib / 2] >> (4 * (ib % 2))) & 15) | (((scales_h >> (2 * ib)) & 3) << 4);
            gq_lut16(y, x + 8 + 16 * ib, table, _mm256_set1_ps(d * (float)(ls - 32)));
        }
    }
}

GQ_AVX2 static void gq_mxfp4_avx2(const uint8_t *x, float *y, uint64_t nb)
{
    const __m128i table = _mm_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12);
    for (uint64_t i = 0; i < nb; i++, x += 17, y += 32) {
        uint8_t e = x[0];
        uint32_t bits = e < 2 ? 0x00200000u << e : (uint32_t)(e - 1) << 23;
        float d;
        memcpy(&d, &bits, sizeof d);
        gq_lut16(y, x + 1, table, _mm256_set1_ps(d));
    }
}

GQ_AVX2 static void gq_tq2_0_avx2(const uint8_t *x, float *y, uint64_t nb)
{
    const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
    for (uint64_t i = 0; i < nb; i++, x += 66) {
        const __m256 d = _mm256_set1_ps(gq_h2f_avx(td__le16(x + 64)));
        for (int j = 0; j < 64; j += 32) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(x + j));
            for (int l = 0; l < 4; l++, y += 32) {
                __m256i v = _mm256_and_si256(_mm256_srl_epi16(q, _mm_cvtsi32_si128(2 * l)), m3);
                v = _mm256_sub_epi8(v, one);
                gq_st16(y, gq_lo128(v), d);
                gq_st16(y + 16, gq_hi128(v), d);
            }
        }
    }
}

td__gq_kernel td__gq_avx2_kernel(td_dtype type)
{
    switch (type) {
    case TD_Q4_0:
        return gq_q4_0_avx2;
    case TD_Q4_1:
        return gq_q4_1_avx2;
    case TD_Q5_0:
        return gq_q5_0_avx2;
    case TD_Q5_1:
        return gq_q5_1_avx2;
    case TD_Q8_0:
        return gq_q8_0_avx2;
    case TD_Q8_1:
        return gq_q8_1_avx2;
    case TD_Q2_K:
        return gq_q2_k_avx2;
    case TD_Q3_K:
        return gq_q3_k_avx2;
    case TD_Q4_K:
        return gq_q4_k_avx2;
    case TD_Q5_K:
        return gq_q5_k_avx2;
    case TD_Q6_K:
        return gq_q6_k_avx2;
    case TD_Q8_K:
        return gq_q8_k_avx2;
    case TD_IQ4_NL:
        return gq_iq4_nl_avx2;
    case TD_IQ4_XS:
        return gq_iq4_xs_avx2;
    case TD_MXFP4:
        return gq_mxfp4_avx2;
    case TD_TQ2_0:
        return gq_tq2_0_avx2;
    default:
        return td__gq_iq_avx2_kernel(type); /* the i-quants; NULL for tq1_0 (portable) */
    }
}

GQ_AVX2 void td__gq_avx2_f32_to_f16(const float *in, uint16_t *out, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m128i a = _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT);
        __m128i b = _mm256_cvtps_ph(_mm256_loadu_ps(in + i + 8), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128((__m128i *)(out + i), a);
        _mm_storeu_si128((__m128i *)(out + i + 8), b);
    }
    for (; i < n; i++)
        out[i] = td__gq_f32_to_f16(in[i]);
}

GQ_AVX2 void td__gq_avx2_f32_to_bf16(const float *in, uint16_t *out, size_t n)
{
    const __m256i bias = _mm256_set1_epi32(0x7fff), one = _mm256_set1_epi32(1);
    const __m256i absm = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
    const __m256i quiet = _mm256_set1_epi32(0x40);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i r[2];
        for (int k = 0; k < 2; k++) {
            __m256i x = _mm256_loadu_si256((const __m256i *)(in + i + 8 * k));
            __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), one);
            __m256i rn = _mm256_srli_epi32(_mm256_add_epi32(x, _mm256_add_epi32(bias, lsb)), 16);
            __m256i nan = _mm256_or_si256(_mm256_srli_epi32(x, 16), quiet);
            __m256i isnan = _mm256_cmpgt_epi32(_mm256_and_si256(x, absm), inf);
            r[k] = _mm256_blendv_epi8(rn, nan, isnan);
        }
        __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(r[0], r[1]), 0xD8);
        _mm256_storeu_si256((__m256i *)(out + i), p);
    }
    for (; i < n; i++)
        out[i] = td__gq_f32_to_bf16(in[i]);
}

#else /* not x86-64: no AVX2 kernels */

int td__gq_avx2_probe(void)
{
    return 0;
}

td__gq_kernel td__gq_avx2_kernel(td_dtype type)
{
    (void)type;
    return NULL;
}

void td__gq_avx2_f32_to_f16(const float *in, uint16_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = td__gq_f32_to_f16(in[i]);
}

void td__gq_avx2_f32_to_bf16(const float *in, uint16_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = td__gq_f32_to_bf16(in[i]);
}

#endif

/*
 * test_ggml_quants.c - dequantization without the llama.cpp oracle: the reference GGUF files
 * and their float32 results from gguf-py, MLX's packed form (formulas, nibble order, and an
 * independent numpy transcription of MLX's extract_q*_data), float16 and bfloat16 rounding
 * against numpy and an independent double-precision rounding, the portable kernels against the
 * AVX2 ones, the threaded driver, and the td_array API and its errors. The grid i-quants and
 * q8_1: known blocks with what llama.cpp decodes them to (a fixture generated once from its
 * to_float), invariants of the grids and of scaling, and loading and converting GGUF files of
 * those types with dequantization.
 */
#include "dtype.h"
#include "ggml_quants.h"
#include "iq_grids.h"
#include "testutil.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ---- */

static uint64_t g_rs = 0x1234567887654321ull;
static uint64_t rnd(void)
{
    uint64_t z = (g_rs += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint32_t fbits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bitsf(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Check records every passing ck_assert; loops over millions of values compare by hand.
 * Every bit must match, except that a NaN only has to meet a NaN: which operand's payload and
 * sign a NaN result carries (d * q + m with both d and m NaN) is the compiler's choice of
 * instruction operand order, and differs between GCC and clang builds. */
static void same_bits32(const char *what, const float *want, const float *got, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (fbits(want[i]) != fbits(got[i]) && !(isnan(want[i]) && isnan(got[i])))
            ck_abort_msg("%s: element %zu: want %.9g (0x%08x), got %.9g (0x%08x)", what, i,
                         (double)want[i], fbits(want[i]), (double)got[i], fbits(got[i]));
}

static const char *const g_ref_types[] = {"q4_0", "q4_1", "q5_0", "q5_1", "q8_0"};

typedef struct ref_tensor {
    td_array *q;   /* the blocks, as a block-typed array */
    td_array *ref; /* gguf-py's float32 result */
} ref_tensor;

/* Loads tensor k (0 or 1) of gguf/<type>.gguf from MANIFEST offsets, and its reference. */
static void load_ref(const char *type, int k, ref_tensor *out)
{
    char path[512], rel[128];
    json_error_t je;
    json_t *m = json_load_file(tu_testdata("MANIFEST.json", path, sizeof path),
                               JSON_DECODE_INT_AS_REAL, &je);
    ck_assert_msg(m != NULL, "MANIFEST.json: %s", je.text);
    snprintf(rel, sizeof rel, "gguf/%s.gguf", type);
    json_t *f = json_object_get(json_object_get(m, "files"), rel);
    ck_assert_ptr_nonnull(f);
    json_t *t = json_array_get(json_object_get(f, "tensors"), (size_t)k);
    ck_assert_ptr_nonnull(t);
    ck_assert_str_eq(json_string_value(json_object_get(t, "dtype")), type);
    json_t *shp = json_object_get(t, "shape");
    int64_t shape[4];
    int ndim = (int)json_array_size(shp);
    for (int i = 0; i < ndim; i++)
        shape[i] = (int64_t)json_number_value(json_array_get(shp, (size_t)i));
    size_t off = (size_t)json_number_value(json_object_get(t, "offset"));
    size_t nbytes = (size_t)json_number_value(json_object_get(t, "nbytes"));
    size_t len;
    uint8_t *file = tu_read_file(tu_testdata(rel, path, sizeof path), &len);
    ck_assert_ptr_nonnull(file);
    ck_assert_uint_le(off + nbytes, len);
    td_dtype dt;
    ck_assert_int_eq(td_dtype_from_name(type, &dt), 0);
    td_error err = {0};
    TU_OK(td_array_new(dt, ndim, shape, file + off, &out->q, &err), &err);
    ck_assert_uint_eq(td_array_nbytes(out->q), nbytes);
    free(file);
    const char *refrel = json_string_value(json_object_get(t, "dequantized_reference"));
    TU_OK(td_load_array(tu_testdata(refrel, path, sizeof path), NULL, &out->ref, &err), &err);
    ck_assert_int_eq(td_array_dtype(out->ref), TD_FLOAT32);
    ck_assert_int_eq(td_array_size(out->ref), td_array_size(out->q));
    json_decref(m);
}

static void free_ref(ref_tensor *r)
{
    td_array_release(r->q);
    td_array_release(r->ref);
}

/* ---- reference files ---- */

START_TEST(test_reference_files)
{
    int fds = tu_count_fds();
    for (size_t ti = 0; ti < sizeof g_ref_types / sizeof *g_ref_types; ti++) {
        for (int k = 0; k < 2; k++) {
            ref_tensor r;
            load_ref(g_ref_types[ti], k, &r);
            td_error err = {0};
            char what[96];
            size_t n = (size_t)td_array_size(r.q), be;
            td_dtype_block(td_array_dtype(r.q), &be, NULL);
            const float *want = td_array_data(r.ref);

            td_array *out;
            TU_OK(td_array_dequantize(r.q, TD_FLOAT32, 0, &out, &err), &err);
            ck_assert_int_eq(td_array_dtype(out), TD_FLOAT32);
            ck_assert_int_eq(td_array_ndim(out), td_array_ndim(r.q));
            for (int d = 0; d < td_array_ndim(out); d++)
                ck_assert_int_eq(td_array_shape(out)[d], td_array_shape(r.q)[d]);
            snprintf(what, sizeof what, "%s tensor %d td_array_dequantize", g_ref_types[ti], k);
            same_bits32(what, want, td_array_data(out), n);
            td_array_release(out);

            float *got = malloc(n * 4);
            for (int isa = GQ_ISA_PORTABLE; isa <= GQ_ISA_AVX2; isa++) {
                if (isa == GQ_ISA_AVX2 && !td__gq_have_avx2())
                    continue;
                TU_OK(td__gq_dequantize_blocks(td_array_dtype(r.q), td_array_data(r.q), n / be, got,
                                               (td__gq_isa)isa, &err),
                      &err);
                snprintf(what, sizeof what, "%s tensor %d isa %d", g_ref_types[ti], k, isa);
                same_bits32(what, want, got, n);
            }
            /* float16 / bfloat16 outputs are the rounded float32 reference */
            for (int o = 0; o < 2; o++) {
                TU_OK(td_array_dequantize(r.q, o ? TD_BFLOAT16 : TD_FLOAT16, 0, &out, &err), &err);
                const uint16_t *h = td_array_data(out);
                for (size_t i = 0; i < n; i++) {
                    uint16_t w = o ? td__gq_f32_to_bf16(want[i]) : td__gq_f32_to_f16(want[i]);
                    if (h[i] != w)
                        ck_abort_msg("%s tensor %d %s: element %zu: 0x%04x, want 0x%04x",
                                     g_ref_types[ti], k, o ? "bf16" : "f16", i, h[i], w);
                }
                td_array_release(out);
            }
            free(got);
            free_ref(&r);
        }
    }
    ck_assert_int_eq(tu_count_fds(), fds);
}
END_TEST

/* ---- MLX packed form ---- */

/* Checks MLX arrays for nblocks blocks of type at q against the formulas: scale is d's bits,
 * bias is half(-8d) / m / half(-128d), the weights hold the quantized values in element order,
 * and w * scale + bias equals want (the float32 dequantization) bit for bit. */
static void check_mlx(td_dtype type, const uint8_t *q, size_t nblocks, const uint32_t *w,
                      const uint16_t *s, const uint16_t *b, const float *want, int allow_inf)
{
    size_t bb;
    td_dtype_block(type, NULL, &bb);
    int bits = td__gq_mlx_bits(type);
    for (size_t i = 0; i < nblocks; i++) {
        const uint8_t *x = q + i * bb;
        uint16_t d = (uint16_t)(x[0] | x[1] << 8);
        ck_assert_uint_eq(s[i], d);
        float df = td__gq_f16_to_f32(d);
        uint16_t wantb = type == TD_Q4_1   ? (uint16_t)(x[2] | x[3] << 8)
                         : type == TD_Q4_0 ? td__gq_f32_to_f16(-8.0f * df)
                                           : td__gq_f32_to_f16(-128.0f * df);
        if (b[i] != wantb)
            ck_abort_msg("block %zu: bias 0x%04x, want 0x%04x", i, b[i], wantb);
        for (int e = 0; e < 32; e++) {
            unsigned qv, packed;
            if (bits == 4) {
                const uint8_t *qs = x + (type == TD_Q4_0 ? 2 : 4);
                qv = e < 16 ? qs[e] & 15u : qs[e - 16] >> 4;
                packed = (w[4 * i + e / 8] >> (4 * (e % 8))) & 15u;
            } else {
                qv = (uint8_t)(x[2 + e] ^ 0x80);
                packed = (w[8 * i + e / 4] >> (8 * (e % 4))) & 255u;
            }
            if (qv != packed)
                ck_abort_msg("block %zu element %d: packed %u, want %u", i, e, packed, qv);
            /* MLX dequantizes in float32: w * scale + bias */
            volatile float prod = (float)packed * td__gq_f16_to_f32(s[i]);
            float v = prod + td__gq_f16_to_f32(b[i]);
            float r = want[i * 32 + e];
            if (isinf(td__gq_f16_to_f32(b[i])) && allow_inf)
                continue; /* |d| too large for binary16 bias: MLX stores inf as well */
            /* Equal as numbers; the sign of a zero can differ: with d < 0 the reference's
             * (q - 8) * d is -0 where MLX's q * d + (-8 * d) is +0. */
            if (fbits(v) != fbits(r) && !(v == 0.0f && r == 0.0f))
                ck_abort_msg("block %zu element %d: w*scale+bias = %.9g, reference %.9g", i, e,
                             (double)v, (double)r);
        }
    }
}

START_TEST(test_mlx_reference_files)
{
    static const char *const types[] = {"q4_0", "q4_1", "q8_0"};
    for (int ti = 0; ti < 3; ti++) {
        for (int k = 0; k < 2; k++) {
            ref_tensor r;
            load_ref(types[ti], k, &r);
            td_error err = {0};
            td_array *w, *s, *b;
            TU_OK(td_array_to_mlx(r.q, &w, &s, &b, &err), &err);
            const int64_t *shape = td_array_shape(r.q);
            int bits = td__gq_mlx_bits(td_array_dtype(r.q));
            ck_assert_int_eq(td_array_dtype(w), TD_UINT32);
            ck_assert_int_eq(td_array_dtype(s), TD_FLOAT16);
            ck_assert_int_eq(td_array_dtype(b), TD_FLOAT16);
            ck_assert_int_eq(td_array_ndim(w), 2);
            ck_assert_int_eq(td_array_shape(w)[0], shape[0]);
            ck_assert_int_eq(td_array_shape(w)[1], shape[1] * bits / 32);
            ck_assert_int_eq(td_array_shape(s)[1], shape[1] / 32);
            ck_assert_int_eq(td_array_shape(b)[1], shape[1] / 32);
            check_mlx(td_array_dtype(r.q), td_array_data(r.q), (size_t)td_array_size(s),
                      td_array_data(w), td_array_data(s), td_array_data(b), td_array_data(r.ref),
                      0);
            td_array_release(w);
            td_array_release(s);
            td_array_release(b);
            free_ref(&r);
        }
    }
}
END_TEST

/* Random blocks, including huge and subnormal scales, NaN excluded from the value check. */
START_TEST(test_mlx_random_blocks)
{
    static const td_dtype types[] = {TD_Q4_0, TD_Q4_1, TD_Q8_0};
    const size_t nb = 20000;
    for (int ti = 0; ti < 3; ti++) {
        size_t bb;
        td_dtype_block(types[ti], NULL, &bb);
        uint8_t *q = malloc(nb * bb);
        for (size_t i = 0; i < nb * bb; i++)
            q[i] = (uint8_t)rnd();
        for (size_t i = 0; i < nb; i++) { /* no NaN/inf scales or mins: MLX would give NaN too */
            q[i * bb + 1] &= 0xfb;
            if (types[ti] == TD_Q4_1)
                q[i * bb + 3] &= 0xfb;
        }
        float *want = malloc(nb * 32 * 4);
        uint32_t *w = malloc(nb * 8 * 4);
        uint16_t *s = malloc(nb * 2), *b = malloc(nb * 2);
        td_error err = {0};
        TU_OK(td__gq_dequantize_blocks(types[ti], q, nb, want, GQ_ISA_PORTABLE, &err), &err);
        TU_OK(td__gq_mlx_pack(types[ti], q, nb * bb, nb, w, s, b, NULL, &err), &err);
        check_mlx(types[ti], q, nb, w, s, b, want, 1);
        /* one array at a time (NULL for the others) gives the same bytes */
        uint32_t *w1 = malloc(nb * 8 * 4);
        uint16_t *s1 = malloc(nb * 2), *b1 = malloc(nb * 2);
        TU_OK(td__gq_mlx_pack(types[ti], q, nb * bb, nb, w1, NULL, NULL, NULL, &err), &err);
        TU_OK(td__gq_mlx_pack(types[ti], q, nb * bb, nb, NULL, s1, NULL, NULL, &err), &err);
        TU_OK(td__gq_mlx_pack(types[ti], q, nb * bb, nb, NULL, NULL, b1, NULL, &err), &err);
        size_t wbytes = nb * (size_t)td__gq_mlx_bits(types[ti]) * 4; /* bits words per block */
        ck_assert_int_eq(memcmp(w, w1, wbytes), 0);
        ck_assert_int_eq(memcmp(s, s1, nb * 2), 0);
        ck_assert_int_eq(memcmp(b, b1, nb * 2), 0);
        free(w1);
        free(s1);
        free(b1);
        /* too few source bytes */
        ck_assert_int_eq(td__gq_mlx_pack(types[ti], q, nb * bb - 1, nb, w, s, b, "t", &err),
                         TD_EINVAL);
        free(q);
        free(want);
        free(w);
        free(s);
        free(b);
    }
    td_error err = {0};
    uint32_t w[8];
    uint16_t s, b;
    uint8_t blk[144] = {0};
    ck_assert_int_eq(
        td__gq_mlx_pack(TD_Q4_K, blk, sizeof blk, 1, w, &s, &b, "x.gguf: tensor 'a'", &err),
        TD_EDTYPE);
    ck_assert_ptr_nonnull(strstr(err.message, "q4_k"));
    ck_assert_ptr_nonnull(strstr(err.message, "x.gguf: tensor 'a'"));
}
END_TEST

/* An independent transcription of MLX's extract_q4_0/q4_1/q8_0_data in numpy (byte-level
 * nibble shuffling, float16 arithmetic for the biases) gives the same bytes as ours. */
START_TEST(test_mlx_matches_numpy_transcription)
{
    static const td_dtype types[] = {TD_Q4_0, TD_Q4_1, TD_Q8_0};
    char dir[64];
    tu_tmpdir(dir);
    for (int ti = 0; ti < 3; ti++) {
        const size_t nb = 4096;
        size_t bb;
        td_dtype_block(types[ti], NULL, &bb);
        uint8_t *q = malloc(nb * bb);
        for (size_t i = 0; i < nb * bb; i++)
            q[i] = (uint8_t)rnd();
        for (size_t i = 0; i < nb; i++) /* finite scales: NaN arithmetic is not MLX's concern */
            q[i * bb + 1] &= 0xfb;
        uint32_t *w = malloc(nb * 8 * 4);
        uint16_t *s = malloc(nb * 2), *b = malloc(nb * 2);
        td_error err = {0};
        TU_OK(td__gq_mlx_pack(types[ti], q, nb * bb, nb, w, s, b, NULL, &err), &err);
        char raw[128], wf[128], sf[128], bf[128];
        snprintf(raw, sizeof raw, "%s/raw", dir);
        snprintf(wf, sizeof wf, "%s/w", dir);
        snprintf(sf, sizeof sf, "%s/s", dir);
        snprintf(bf, sizeof bf, "%s/b", dir);
        ck_assert_int_eq(tu_write_file(raw, q, nb * bb), 0);
        ck_assert_int_eq(tu_write_file(wf, w, nb * (size_t)td__gq_mlx_bits(types[ti]) * 4), 0);
        ck_assert_int_eq(tu_write_file(sf, s, nb * 2), 0);
        ck_assert_int_eq(tu_write_file(bf, b, nb * 2), 0);
        const char *args[] = {td_dtype_name(types[ti]), raw, wf, sf, bf, NULL};
        ck_assert_int_eq(tu_py("ggml_quants.py", "mlx", args), 0);
        free(q);
        free(w);
        free(s);
        free(b);
    }
    tu_rmtree(dir);
}
END_TEST

/* ---- float16 and bfloat16 rounding ---- */

/* Values that stress rounding: random bit patterns, values next to every binary16 halfway
 * point, the subnormal and overflow boundaries, zeros, infinities, NaNs. */
static float *stress_values(size_t *n_out)
{
    size_t cap = (1u << 20) + 65536 * 6 + 64, n = 0;
    float *v = malloc(cap * 4);
    for (size_t i = 0; i < (1u << 20); i++)
        v[n++] = bitsf((uint32_t)rnd());
    for (uint32_t h = 0; h < 0x7c00; h++) {
        /* the midpoint between h and h+1, and its two float32 neighbours, both signs */
        float a = td__gq_f16_to_f32((uint16_t)h), b = td__gq_f16_to_f32((uint16_t)(h + 1));
        float mid = (float)(((double)a + (double)b) / 2);
        v[n++] = mid;
        v[n++] = nextafterf(mid, 0.0f);
        v[n++] = nextafterf(mid, INFINITY);
        v[n++] = -mid;
        v[n++] = -nextafterf(mid, 0.0f);
        v[n++] = -nextafterf(mid, INFINITY);
    }
    static const uint32_t special[] = {
        0,           0x80000000u, 0x7f800000u, 0xff800000u, 0x7fc00000u, 0xffc00001u,
        0x7f800001u, 0x7fbfffffu, 0x477fefffu, 0x477ff000u, 0x477ff001u, 0x38800000u,
        0x387fffffu, 0x33000000u, 0x33000001u, 0x32ffffffu, 0x00000001u, 0x7f7fffffu,
        0xff7fffffu, 0x3f7fffffu, 0x3f808000u, 0x3f818000u, 0x3f80ffffu};
    for (size_t i = 0; i < sizeof special / sizeof *special; i++)
        v[n++] = bitsf(special[i]);
    *n_out = n;
    return v;
}

START_TEST(test_f16_rounding_matches_numpy)
{
    size_t n;
    float *v = stress_values(&n);
    uint16_t *h = malloc(n * 2), *h2 = malloc(n * 2);
    char dir[64], in[128], out[128];
    tu_tmpdir(dir);
    snprintf(in, sizeof in, "%s/in", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    ck_assert_int_eq(tu_write_file(in, v, n * 4), 0);
    const char *args[] = {in, out, NULL};
    ck_assert_int_eq(tu_py("ggml_quants.py", "f32-to-f16", args), 0);
    size_t len;
    uint16_t *np16 = (uint16_t *)tu_read_file(out, &len);
    ck_assert_uint_eq(len, n * 2);
    td__gq_f32_to_f16_row(v, h, n, GQ_ISA_PORTABLE);
    td__gq_f32_to_f16_row(v, h2, n, GQ_ISA_AUTO);
    for (size_t i = 0; i < n; i++) {
        if (h[i] != h2[i])
            ck_abort_msg("0x%08x: portable 0x%04x, auto 0x%04x", fbits(v[i]), h[i], h2[i]);
        if (h[i] != td__gq_f32_to_f16(v[i]))
            ck_abort_msg("0x%08x: row 0x%04x, scalar 0x%04x", fbits(v[i]), h[i],
                         td__gq_f32_to_f16(v[i]));
        if (isnan(v[i])) { /* quiet NaN, sign and top payload kept */
            uint16_t w = (uint16_t)(((fbits(v[i]) >> 16) & 0x8000u) | 0x7e00u |
                                    ((fbits(v[i]) >> 13) & 0x3ffu));
            if (h[i] != w)
                ck_abort_msg("NaN 0x%08x -> 0x%04x, want 0x%04x", fbits(v[i]), h[i], w);
        } else if (h[i] != np16[i]) {
            ck_abort_msg("%.9g (0x%08x): ours 0x%04x, numpy 0x%04x", (double)v[i], fbits(v[i]),
                         h[i], np16[i]);
        }
    }
    free(np16);
    free(v);
    free(h);
    free(h2);
    tu_rmtree(dir);
}
END_TEST

START_TEST(test_f16_all_halves_round_trip)
{
    /* every binary16 value -> float32 (checked against numpy) -> binary16 unchanged */
    uint16_t *all = malloc(65536 * 2);
    float *f = malloc(65536 * 4);
    for (uint32_t i = 0; i < 65536; i++) {
        all[i] = (uint16_t)i;
        f[i] = td__gq_f16_to_f32((uint16_t)i);
    }
    char dir[64], in[128], out[128];
    tu_tmpdir(dir);
    snprintf(in, sizeof in, "%s/in", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    ck_assert_int_eq(tu_write_file(in, all, 65536 * 2), 0);
    const char *args[] = {in, out, NULL};
    ck_assert_int_eq(tu_py("ggml_quants.py", "f16-to-f32", args), 0);
    size_t len;
    float *np32 = (float *)tu_read_file(out, &len);
    ck_assert_uint_eq(len, 65536 * 4);
    for (uint32_t i = 0; i < 65536; i++) {
        int nan = (i & 0x7c00) == 0x7c00 && (i & 0x3ff);
        /* numpy keeps payloads, and so do we (a signalling NaN stays signalling) */
        if (fbits(f[i]) != fbits(np32[i]))
            ck_abort_msg("half 0x%04x: ours 0x%08x, numpy 0x%08x", i, fbits(f[i]), fbits(np32[i]));
        uint16_t back = td__gq_f32_to_f16(f[i]);
        uint16_t want = nan ? (uint16_t)(i | 0x200) : (uint16_t)i;
        if (back != want)
            ck_abort_msg("half 0x%04x -> 0x%04x", i, back);
    }
    free(np32);
    free(all);
    free(f);
    tu_rmtree(dir);
}
END_TEST

/* bfloat16 by an independent method: the two neighbours in double precision, ties to even. */
static uint16_t bf16_reference(float x)
{
    uint32_t u = fbits(x);
    if (isnan(x))
        return (uint16_t)((u >> 16) | 0x40);
    uint32_t lo = u & 0xffff0000u;
    uint32_t hi = lo + 0x10000u; /* next bfloat16 away from zero (may become infinity) */
    double dx = fabs((double)x), dl = fabs((double)bitsf(lo));
    double dh = (hi & 0x7f800000u) == 0x7f800000u && (lo & 0x7fffffffu) == 0x7f7f0000u
                    ? ldexp(1.0, 128) /* rounding up from the largest finite: infinity */
                    : fabs((double)bitsf(hi));
    if ((lo & 0x7fffffffu) == 0x7f800000u)
        return (uint16_t)(lo >> 16); /* infinity */
    double a = dx - dl, b = dh - dx;
    if (a < b)
        return (uint16_t)(lo >> 16);
    if (b < a)
        return (uint16_t)(hi >> 16);
    return (uint16_t)(((lo >> 16) & 1) ? hi >> 16 : lo >> 16);
}

START_TEST(test_bf16_rounding)
{
    size_t n;
    float *v = stress_values(&n);
    /* add bfloat16 halfway points */
    float *w = realloc(v, (n + 3 * 65536) * 4);
    ck_assert_ptr_nonnull(w);
    v = w;
    for (uint32_t k = 0; k < 65536; k++) {
        uint32_t mid = (k << 16) | 0x8000u;
        v[n++] = bitsf(mid);
        v[n++] = bitsf(mid - 1);
        v[n++] = bitsf(mid + 1);
    }
    uint16_t *a = malloc(n * 2), *b = malloc(n * 2);
    td__gq_f32_to_bf16_row(v, a, n, GQ_ISA_PORTABLE);
    td__gq_f32_to_bf16_row(v, b, n, GQ_ISA_AUTO);
    for (size_t i = 0; i < n; i++) {
        uint16_t r = bf16_reference(v[i]);
        if (a[i] != r || b[i] != r)
            ck_abort_msg("0x%08x: portable 0x%04x, auto 0x%04x, reference 0x%04x", fbits(v[i]),
                         a[i], b[i], r);
    }
    free(v);
    free(a);
    free(b);
}
END_TEST

/* ---- kernels ---- */

/* Portable and AVX2 kernels agree on random blocks of every supported type. */
START_TEST(test_portable_vs_avx2)
{
    if (!td__gq_have_avx2())
        return; /* tu_run_isas reports the run as skipped */
    int tested = 0;
    for (int t = 0; t < TD_DTYPE_COUNT; t++) {
        if (!td__gq_supported((td_dtype)t))
            continue;
        size_t be, bb, nb = 4096;
        td_dtype_block((td_dtype)t, &be, &bb);
        uint8_t *q = malloc(nb * bb);
        for (size_t i = 0; i < nb * bb; i++)
            q[i] = (uint8_t)rnd();
        float *a = malloc(nb * be * 4), *b = malloc(nb * be * 4);
        td_error err = {0};
        TU_OK(td__gq_dequantize_blocks((td_dtype)t, q, nb, a, GQ_ISA_PORTABLE, &err), &err);
        TU_OK(td__gq_dequantize_blocks((td_dtype)t, q, nb, b, GQ_ISA_AVX2, &err), &err);
        same_bits32(td_dtype_name((td_dtype)t), a, b, nb * be);
        free(q);
        free(a);
        free(b);
        tested++;
    }
    ck_assert_int_eq(tested, 24);
}
END_TEST

/* Hand-made blocks with known values, so that a wrong layout fails here even without the
 * oracle. */
START_TEST(test_known_blocks)
{
    td_error err = {0};
    float y[256];
    /* q4_0: d = 0.5 (0x3800); qs[j] = j | (15-j) << 4 -> x[j] = (j-8)/2, x[j+16] = (7-j)/2 */
    uint8_t b40[18] = {0x00, 0x38};
    for (int j = 0; j < 16; j++)
        b40[2 + j] = (uint8_t)(j | (15 - j) << 4);
    TU_OK(td__gq_dequantize_blocks(TD_Q4_0, b40, 1, y, GQ_ISA_AUTO, &err), &err);
    for (int j = 0; j < 16; j++) {
        ck_assert_float_eq(y[j], (float)(j - 8) * 0.5f);
        ck_assert_float_eq(y[j + 16], (float)(7 - j) * 0.5f);
    }
    /* q5_0: d = 1, qh = 0x80000001 -> x[0] = (0|16)-16 = 0 + qs, x[31] high bit */
    uint8_t b50[22] = {0x00, 0x3c, 0x01, 0x00, 0x00, 0x80};
    for (int j = 0; j < 16; j++)
        b50[6 + j] = 0x33;
    TU_OK(td__gq_dequantize_blocks(TD_Q5_0, b50, 1, y, GQ_ISA_AUTO, &err), &err);
    ck_assert_float_eq(y[0], 3.0f);   /* 3 | 16 - 16 */
    ck_assert_float_eq(y[1], -13.0f); /* 3 - 16 */
    ck_assert_float_eq(y[31], 3.0f);
    ck_assert_float_eq(y[30], -13.0f);
    /* q8_k: d = 0.25 as float32, qs[j] = j - 128 */
    uint8_t b8k[292] = {0};
    uint32_t quarter = fbits(0.25f);
    memcpy(b8k, &quarter, 4);
    for (int j = 0; j < 256; j++)
        b8k[4 + j] = (uint8_t)(j - 128);
    TU_OK(td__gq_dequantize_blocks(TD_Q8_K, b8k, 1, y, GQ_ISA_AUTO, &err), &err);
    for (int j = 0; j < 256; j++)
        ck_assert_float_eq(y[j], (float)(int8_t)(uint8_t)(j - 128) * 0.25f);
    /* iq4_nl: nibble 0 is -127, 15 is 113 */
    uint8_t bnl[18] = {0x00, 0x3c, 0xf0};
    TU_OK(td__gq_dequantize_blocks(TD_IQ4_NL, bnl, 1, y, GQ_ISA_AUTO, &err), &err);
    ck_assert_float_eq(y[0], -127.0f);
    ck_assert_float_eq(y[16], 113.0f);
}
END_TEST

/* ---- the grid i-quants and q8_1 ---- */

static const td_dtype g_iq_types[] = {TD_Q8_1,   TD_IQ1_S, TD_IQ1_M,   TD_IQ2_XXS,
                                      TD_IQ2_XS, TD_IQ2_S, TD_IQ3_XXS, TD_IQ3_S};
#define NIQ (sizeof g_iq_types / sizeof *g_iq_types)

typedef struct known_block {
    const char *type;
    uint64_t fnv;      /* FNV-1a 64 of the float32 results, as little-endian bytes */
    uint32_t first[8]; /* the bits of the first 8 results */
    const char *hex;   /* the block */
} known_block;

typedef struct known_bulk {
    const char *type;
    uint64_t fnv; /* of the results of BULK_BLOCKS blocks from xorshift_block */
} known_bulk;

/* Generated by `python3 quant/gen_iq_grids.py --fixture` from llama.cpp's to_float (q8_1:
 * q8_0's). */
static const known_block g_known[] = {
    {"q8_1",
     0xdd6ab93a10aacb25ull,
     {0xc217f680, 0xc1a7f580, 0xc17ff000, 0x42114c40, 0x409ff600, 0xc14ff300, 0xc16a9c00,
      0x42214b40},
     "5535b7368ec1d06d0fd9d4799526ccbf0adcb516fe077bcb009e7f5587a61d936e6836ca"},
    {"q8_1",
     0x6bd3ffd070806722ull,
     {0x4401efc0, 0x440fee00, 0xc357e500, 0xc39bec80, 0xc469e2c0, 0x4393ed80, 0x444be680,
      0x4383ef80},
     "ffc71f35bfb81b2775db9adf66d46d1b8fa2a988d3e6e58e65b138e0fb18e66fa5da9148"},
    {"iq1_m",
     0xc13c07cc890884eaull,
     {0xc057f280, 0xc057f280, 0xc057f280, 0xbebff400, 0xbebff400, 0x4027f580, 0xc057f280,
      0xbebff400},
     "362c5ac6e1cc173581d0ed425a0e58e4dfa88bec89389897d64f6f09193997e80bd3a86ddf249ef5c679af10"
     "a8d73a74ec5dfc5fc1581a36"},
    {"iq1_m",
     0x3264c1d2626205b5ull,
     {0xc2a1ebc0, 0xc10fee00, 0xc2a1ebc0, 0xc2a1ebc0, 0xc10fee00, 0xc2a1ebc0, 0xc10fee00,
      0xc2a1ebc0},
     "397f17514f7915ed5a2ada3baf5278946b7fb750ce0b89fa11f57e5c5872a41357df80e5067a54e8abd6b17c"
     "fe810a12ecf32df34f77d5ce"},
    {"iq1_s",
     0x02f6075de8a88f24ull,
     {0x4002a280, 0xbe954c00, 0xbe954c00, 0xbe954c00, 0x4002a280, 0xc027f580, 0x4002a280,
      0xbe954c00},
     "5535ecf7a2e76a929d36b6297faf0c2a1c4692f1e687acd5e0c1e2617109451d238724b2dfa6e97c162834c2"
     "7f01f5fac3ec"},
    {"iq1_s",
     0x15fd93c91e30b6feull,
     {0x409fec00, 0x4233e980, 0x409fec00, 0x4233e980, 0x4233e980, 0x409fec00, 0x4233e980,
      0x4233e980},
     "ffc749a930c627894c046aee2d852220fe315f0f9b745472a60f01b1d48348601064e8a51a1cec1fa1be9d52"
     "d6b9467cf081"},
    {"iq2_s",
     0xe7409eec9752e9f8ull,
     {0x40dff200, 0x41aef510, 0x41aef510, 0xc2167698, 0x42167698, 0xc1aef510, 0xc2167698,
      0xc1aef510},
     "553529ef442856be1733bdf63b63d79eada849992c4880570569a34e1250feb79ec3e83731a71096c3c6efd8"
     "9b20dc2501ad10c8a15af2a98e59e972321ae6f734d2e3ceed1ae66f59d38a0b27a590a9e419"},
    {"iq2_s",
     0x62a61c34f3256f34ull,
     {0xc360e3e0, 0x4360e3e0, 0xc28fee00, 0x4360e3e0, 0x4360e3e0, 0xc28fee00, 0x428fee00,
      0xc28fee00},
     "ffc72e5acc493f89886769b1acfdf2c15e22705c9671d78cd14c00dee10262d6916e5a72fea5461a8a49edd0"
     "475d2f2b95009a336d1d87ccfb0c4c286a8465934e0e748cd3f0599ba0c944eeefd2dfccddee"},
    {"iq2_xs",
     0x6b29934e4642dbf4ull,
     {0x40abf540, 0x3f7ff000, 0xc047f380, 0x40abf540, 0xc047f380, 0xc047f380, 0x4047f380,
      0xc0abf540},
     "5535d8695133dd42f0ab08f4cde63791ea894cf62dff4694b3b41b75f1921b29c77cae03335d93aa735f8d4e"
     "183e2ad02f6db51a329e79c9ca6f355fd1a649a76cae6199f08be8bb88d1"},
    {"iq2_xs",
     0xed3db6dd523a8e68ull,
     {0xc28fee00, 0x428fee00, 0x428fee00, 0xc28fee00, 0xc3c167d0, 0x428fee00, 0x428fee00,
      0xc3c167d0},
     "ffc7a6cd6cf8a55c6a24260aa4492fe7b6ad2030d6cfa6d5c839a7cecf1208ea814e90d936d66d7d31bb58e2"
     "b78eebb0c9e8711b471bbfb215a12cbed92e90adb4a5d40d9f9e35954e6c"},
    {"iq2_xxs",
     0x6d24702b1310e50eull,
     {0xc2331f78, 0x41054d00, 0xc1054d00, 0x41054d00, 0xc2331f78, 0x41054d00, 0xc2331f78,
      0x41054d00},
     "553576324ca6550b6bc7328203c57686376789f4e9e62ff98e4539ab1050ee7f21cb1a98734b9994bb8469d3"
     "a0f942080c5e14e2892a449a6dfbb0e3528ca1f6a3e2"},
    {"iq2_xxs",
     0x1ee2f341b5e95782ull,
     {0xc4212bd8, 0xc2efe200, 0xc2efe200, 0x43bb6890, 0xc3bb6890, 0xc2efe200, 0x43bb6890,
      0xc3bb6890},
     "ffc7b6ad282ac84dcd7e72aa1b4549476d3f53576317036b138d34906797c6d91056a8d54efe3931cb56d4b5"
     "02ae439b7a9499dac5e68d4e545ae0a9e80bd92826b2"},
    {"iq3_s",
     0x12cc54db89b4d7e8ull,
     {0xc281f7e0, 0xc16ff100, 0xc281f7e0, 0x420bf740, 0xc281f7e0, 0xc16ff100, 0xc233f4c0,
      0x420bf740},
     "5535544698b368ee9700567e9c3f618fac0ff524a6c1b6056be5d0dd309ccbd049515b3b05d3ecc93ae4137d"
     "d72090c594099db8dd0876e6577bf5241c0096915680e3121004ea6bad8477bd06b40d2f0fdf5080bd2a00f6"
     "ebd603eb7ac2ad6cc2b5043c562432e2395bb728d6af"},
    {"iq3_s",
     0xdca55b7684d19a08ull,
     {0x43b3e980, 0x43b3e980, 0xc2efe200, 0x4451e5c0, 0x4415ed40, 0xc415ed40, 0xc2efe200,
      0x4451e5c0},
     "ffc71a1efce9c6619364cc43fb840d99ca4dcb48ac0d939e7ba7aaeddc6559edf8433df73e76bc477b2193cc"
     "132dd3727e5248eabf50c0f7ba33c3921501fda66f4947a9bc1bd1669c1d9bda3bffae3bc36638829b46304a"
     "c65d7f59556351bd02b087946395cea9d837479fd617"},
    {"iq3_xxs",
     0x267434d90504ad7dull,
     {0x420bf740, 0xc243f3c0, 0xc0dff200, 0x41a7f580, 0xc0dff200, 0xc1a7f580, 0xc1a7f580,
      0xc20bf740},
     "5535416dc10ef0c7305448188c2555f93c987ff7ae4dc9bae11ade7ff90a7c6ad03937d79e65f97ade676185"
     "5862667e1ce6d778c227d7c4e1223ec873e9c6b7d0a7769cb5ac719bb4e5ea653f29675d9fd0a94ee61be5f8"
     "e1b2e98053b7027c6e86"},
    {"iq3_xxs",
     0x51bb91d35f5f840aull,
     {0x452a6ab0, 0xc52a6ab0, 0xc49aeca0, 0x449aeca0, 0x452a6ab0, 0x454966d0, 0xc377e100,
      0xc4d8e4e0},
     "ffc77c92e152866bc706fe497fa910ce91e83317bfdc2d2b1f97646ee6ed0adc2bfb7600d469e710b07b5557"
     "a920f6b1120ad6df5a2476c4e5325e5eb8675dd56ec4b9ccfbf4e5c0bd6eb6c9620c947d7f4d45a1f0f93826"
     "004e5a2e88c78e77edc0"},
};
#define BULK_SEED   0x2545f4914f6cdd1dull
#define BULK_BLOCKS 4096
static const known_bulk g_bulk[] = {
    {"q8_1", 0x1836fbbe4b3ab2dfull},   {"iq1_m", 0x9444fc4a87d39174ull},
    {"iq1_s", 0x408d39d9093bfdb9ull},  {"iq2_s", 0x34aaf009038fa984ull},
    {"iq2_xs", 0x6f50520fffed1d1full}, {"iq2_xxs", 0x0ad6cfa1eb40c9dbull},
    {"iq3_s", 0x64cb67a3f21c036aull},  {"iq3_xxs", 0xf7707a650cc515a2ull},
};

static uint64_t fnv1a64_f32(const float *y, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        uint32_t u = fbits(y[i]);
        for (int b = 0; b < 4; b++)
            h = (h ^ ((u >> (8 * b)) & 255u)) * 0x100000001b3ull;
    }
    return h;
}

/* Where the float16 scale d of a block of t goes: bytes 0-1, or for iq1_m the top nibbles of
 * its four 16-bit scale words (bytes 48..55). */
static void set_scale(td_dtype t, uint8_t *blk, uint16_t h)
{
    if (t != TD_IQ1_M) {
        blk[0] = (uint8_t)h;
        blk[1] = (uint8_t)(h >> 8);
        return;
    }
    for (int k = 0; k < 4; k++)
        blk[49 + 2 * k] = (uint8_t)((blk[49 + 2 * k] & 0x0f) | (((h >> (4 * k)) & 15) << 4));
}

/* The fixture's block stream (gen_iq_grids.py's XorShift): xorshift64, a byte per step. */
static uint8_t xorshift_byte(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return (uint8_t)*x;
}

/* bb random bytes, then a random finite scale below 2 (as XorShift.block with d None). */
static void xorshift_block(uint64_t *x, td_dtype t, uint8_t *blk, size_t bb)
{
    for (size_t i = 0; i < bb; i++)
        blk[i] = xorshift_byte(x);
    uint16_t lo = xorshift_byte(x), hi = xorshift_byte(x);
    set_scale(t, blk, (uint16_t)((lo | hi << 8) & 0xbfff));
}

/* Many blocks of each type, enough to use every grid entry and sign index (4096 blocks of 32
 * groups: each of iq1's 2048 grid entries about 64 times), decode to what llama.cpp decodes
 * them to, by the hash of all results: a wrong table entry anywhere fails here. */
START_TEST(test_bulk_iquant_blocks)
{
    ck_assert_uint_eq(sizeof g_bulk / sizeof *g_bulk, NIQ);
    for (size_t k = 0; k < NIQ; k++) {
        td_dtype t;
        ck_assert_int_eq(td_dtype_from_name(g_bulk[k].type, &t), 0);
        size_t be, bb;
        td_dtype_block(t, &be, &bb);
        uint8_t *q = malloc(BULK_BLOCKS * bb);
        float *y = malloc(BULK_BLOCKS * be * sizeof(float));
        ck_assert(q && y);
        uint64_t x = BULK_SEED + (uint64_t)td__dtype_ggml_id(t);
        for (size_t i = 0; i < BULK_BLOCKS; i++)
            xorshift_block(&x, t, q + i * bb, bb);
        for (int isa = GQ_ISA_PORTABLE; isa <= GQ_ISA_AVX2; isa++) {
            if (isa == GQ_ISA_AVX2 && !td__gq_have_avx2())
                continue;
            td_error err = {0};
            TU_OK(td__gq_dequantize_blocks(t, q, BULK_BLOCKS, y, (td__gq_isa)isa, &err), &err);
            ck_assert_msg(fnv1a64_f32(y, BULK_BLOCKS * be) == g_bulk[k].fnv,
                          "%s isa %d: %d blocks decode to other results than llama.cpp's",
                          g_bulk[k].type, isa, BULK_BLOCKS);
        }
        free(q);
        free(y);
    }
}
END_TEST

/* Blocks with known results: what llama.cpp decodes them to, from every kernel and the API. */
START_TEST(test_known_iquant_blocks)
{
    const size_t n = sizeof g_known / sizeof *g_known;
    ck_assert_uint_eq(n, 2 * NIQ);
    td_dtype seen[2 * NIQ];
    for (size_t k = 0; k < n; k++) {
        const known_block *kb = &g_known[k];
        td_dtype t;
        ck_assert_int_eq(td_dtype_from_name(kb->type, &t), 0);
        seen[k] = t;
        size_t be, bb;
        td_dtype_block(t, &be, &bb);
        ck_assert_uint_eq(strlen(kb->hex), 2 * bb);
        uint8_t blk[110];
        for (size_t i = 0; i < bb; i++) {
            unsigned v;
            ck_assert_int_eq(sscanf(kb->hex + 2 * i, "%2x", &v), 1);
            blk[i] = (uint8_t)v;
        }
        float y[256];
        td_error err = {0};
        for (int isa = GQ_ISA_PORTABLE; isa <= GQ_ISA_AVX2; isa++) {
            if (isa == GQ_ISA_AVX2 && !td__gq_have_avx2())
                continue;
            memset(y, 0xa5, sizeof y);
            TU_OK(td__gq_dequantize_blocks(t, blk, 1, y, (td__gq_isa)isa, &err), &err);
            for (int j = 0; j < 8; j++)
                ck_assert_msg(fbits(y[j]) == kb->first[j],
                              "%s block %zu isa %d: y[%d] 0x%08x, want 0x%08x", kb->type, k % 2,
                              isa, j, fbits(y[j]), kb->first[j]);
            ck_assert_msg(fnv1a64_f32(y, be) == kb->fnv, "%s block %zu isa %d: results differ",
                          kb->type, k % 2, isa);
        }
        const int64_t shape[1] = {(int64_t)be};
        td_array *a, *r;
        TU_OK(td_array_new(t, 1, shape, blk, &a, &err), &err);
        TU_OK(td_array_dequantize(a, TD_FLOAT32, 0, &r, &err), &err);
        ck_assert_uint_eq(fnv1a64_f32(td_array_data(r), be), kb->fnv);
        td_array_release(r);
        td_array_release(a);
    }
    for (size_t ti = 0; ti < NIQ; ti++) { /* two blocks of every type */
        int count = 0;
        for (size_t k = 0; k < n; k++)
            count += seen[k] == g_iq_types[ti];
        ck_assert_int_eq(count, 2);
    }
}
END_TEST

static int has_dup_rows(const uint8_t *g, size_t n, size_t w)
{
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            if (memcmp(g + i * w, g + j * w, w) == 0)
                return 1;
    return 0;
}

static int all_in(const uint8_t *g, size_t n, const uint8_t *set, size_t nset)
{
    for (size_t i = 0; i < n; i++)
        if (!memchr(set, g[i], nset))
            return 0;
    return 1;
}

/* The generated tables look like what they are: distinct grid entries built from each type's
 * few magnitudes, iq1 entries of -1, 0 and 1, and sign bytes whose low 7 bits are their index
 * and whose 8th bit makes the number of negated elements even. */
START_TEST(test_grid_invariants)
{
    static const uint8_t m2[] = {8, 25, 43};
    static const uint8_t m3xxs[] = {4, 12, 20, 28, 36, 44, 52, 62};
    static const uint8_t m3s[] = {1, 3, 5, 7, 9, 11, 13, 15};
    ck_assert(all_in(&td__gq_iq2xxs_grid[0][0], 256 * 8, m2, 3));
    ck_assert(all_in(&td__gq_iq2xs_grid[0][0], 512 * 8, m2, 3));
    ck_assert(all_in(&td__gq_iq2s_grid[0][0], 1024 * 8, m2, 3));
    ck_assert(all_in(&td__gq_iq3xxs_grid[0][0], 256 * 4, m3xxs, 8));
    ck_assert(all_in(&td__gq_iq3s_grid[0][0], 512 * 4, m3s, 8));
    ck_assert(!has_dup_rows(&td__gq_iq2xxs_grid[0][0], 256, 8));
    ck_assert(!has_dup_rows(&td__gq_iq2xs_grid[0][0], 512, 8));
    ck_assert(!has_dup_rows(&td__gq_iq2s_grid[0][0], 1024, 8));
    ck_assert(!has_dup_rows(&td__gq_iq3xxs_grid[0][0], 256, 4));
    ck_assert(!has_dup_rows(&td__gq_iq3s_grid[0][0], 512, 4));
    ck_assert(!has_dup_rows((const uint8_t *)&td__gq_iq1s_grid[0][0], 2048, 8));
    for (int k = 0; k < 2048; k++)
        for (int j = 0; j < 8; j++)
            ck_assert_int_le(abs(td__gq_iq1s_grid[k][j]), 1);
    for (int k = 0; k < 128; k++) {
        ck_assert_int_eq(td__gq_iq_ksigns[k] & 127, k);
        ck_assert_int_eq(__builtin_popcount(td__gq_iq_ksigns[k]) % 2, 0);
    }
}
END_TEST

/* Scaling a block's d scales every result exactly: -d flips each sign bit, 2d doubles (for
 * |d| in [2^-8, 2^8], where nothing overflows or underflows). Portable and AVX2 alike. */
START_TEST(test_iquant_scaling)
{
    const size_t nb = 512;
    for (size_t ti = 0; ti < NIQ; ti++) {
        td_dtype t = g_iq_types[ti];
        size_t be, bb;
        td_dtype_block(t, &be, &bb);
        uint8_t *q = malloc(nb * bb), *qn = malloc(nb * bb), *q2 = malloc(nb * bb);
        float *y = malloc(nb * be * 4), *yn = malloc(nb * be * 4), *y2 = malloc(nb * be * 4);
        ck_assert(q && qn && q2 && y && yn && y2);
        for (size_t i = 0; i < nb * bb; i++)
            q[i] = (uint8_t)rnd();
        memcpy(qn, q, nb * bb);
        memcpy(q2, q, nb * bb);
        for (size_t i = 0; i < nb; i++) {
            /* exponent 7..22 (2^-8 .. 2^7), any mantissa, any sign */
            uint16_t h = (uint16_t)(((7 + rnd() % 16) << 10) | (rnd() & 0x3ff) | (rnd() & 0x8000));
            set_scale(t, q + i * bb, h);
            set_scale(t, qn + i * bb, h ^ 0x8000);
            set_scale(t, q2 + i * bb, (uint16_t)(h + 0x400)); /* exponent + 1 */
        }
        for (int isa = GQ_ISA_PORTABLE; isa <= GQ_ISA_AVX2; isa++) {
            if (isa == GQ_ISA_AVX2 && !td__gq_have_avx2())
                continue;
            td_error err = {0};
            TU_OK(td__gq_dequantize_blocks(t, q, nb, y, (td__gq_isa)isa, &err), &err);
            TU_OK(td__gq_dequantize_blocks(t, qn, nb, yn, (td__gq_isa)isa, &err), &err);
            TU_OK(td__gq_dequantize_blocks(t, q2, nb, y2, (td__gq_isa)isa, &err), &err);
            for (size_t i = 0; i < nb * be; i++) {
                if (fbits(yn[i]) != (fbits(y[i]) ^ 0x80000000u) || y2[i] != 2.0f * y[i])
                    ck_abort_msg("%s isa %d element %zu: y %.9g, with -d %.9g, with 2d %.9g",
                                 td_dtype_name(t), isa, i, (double)y[i], (double)yn[i],
                                 (double)y2[i]);
            }
        }
        free(q);
        free(qn);
        free(q2);
        free(y);
        free(yn);
        free(y2);
    }
}
END_TEST

/* A GGUF file holding every grid i-quant and q8_1 loads dequantized (float32, float16, and
 * float16 where MLX's packed form does not exist), and converting it as `tensorctl convert
 * --dequantize f32` does turns it into a safetensors file with the same floats. */
static void load_deq(const char *path, td_dequant to, td_dict **d)
{
    td_load_options o = TD_LOAD_OPTIONS_INIT;
    o.mode = TD_MODE_EMBEDDED;
    o.dequantize = to;
    td_error err = {0};
    TU_OK(td_load(path, &o, d, NULL, &err), &err);
}

START_TEST(test_iquant_gguf_load_and_convert)
{
    char dir[64], src[128], dst[128];
    tu_tmpdir(dir);
    snprintf(src, sizeof src, "%s/iq.gguf", dir);
    snprintf(dst, sizeof dst, "%s/iq.safetensors", dir);
    td_dict *d = td_dict_new();
    td_array *want[NIQ];
    td_error err = {0};
    for (size_t ti = 0; ti < NIQ; ti++) {
        td_dtype t = g_iq_types[ti];
        size_t be, bb;
        td_dtype_block(t, &be, &bb);
        const int64_t shape[2] = {3, (int64_t)(2 * 256)};
        const size_t nb = (size_t)(shape[0] * shape[1]) / be;
        uint8_t *q = malloc(nb * bb);
        for (size_t i = 0; i < nb * bb; i++)
            q[i] = (uint8_t)rnd();
        for (size_t i = 0; i < nb; i++) /* finite scales: NaN != NaN in the comparisons */
            set_scale(t, q + i * bb, (uint16_t)(rnd() & 0xbbff));
        td_array *a;
        TU_OK(td_array_new(t, 2, shape, q, &a, &err), &err);
        TU_OK(td_array_dequantize(a, TD_FLOAT32, 0, &want[ti], &err), &err);
        TU_OK(td_dict_set(d, td_dtype_name(t), a, &err), &err);
        td_array_release(a);
        free(q);
    }
    TU_OK(td_save_gguf(src, d, NULL, &err), &err);
    td_dict_free(d);

    static const td_dequant targets[] = {TD_DEQUANT_F32, TD_DEQUANT_F16, TD_DEQUANT_MLX};
    for (int k = 0; k < 3; k++) {
        load_deq(src, targets[k], &d);
        for (size_t ti = 0; ti < NIQ; ti++) {
            const char *name = td_dtype_name(g_iq_types[ti]);
            const td_array *a = td_dict_get(d, name);
            ck_assert_msg(a != NULL, "%s missing after load", name);
            size_t n = (size_t)td_array_size(want[ti]);
            const float *w = td_array_data(want[ti]);
            ck_assert_int_eq(td_array_ndim(a), 2);
            ck_assert_int_eq(td_array_shape(a)[1], 512);
            if (targets[k] == TD_DEQUANT_F32) {
                ck_assert_int_eq(td_array_dtype(a), TD_FLOAT32);
                same_bits32(name, w, td_array_data(a), n);
            } else { /* MLX has no packed form for these: float16 */
                ck_assert_int_eq(td_array_dtype(a), TD_FLOAT16);
                const uint16_t *h = td_array_data(a);
                for (size_t i = 0; i < n; i++)
                    if (h[i] != td__gq_f32_to_f16(w[i]))
                        ck_abort_msg("%s f16 element %zu: 0x%04x", name, i, h[i]);
            }
        }
        td_dict_free(d);
    }

    /* What `tensorctl convert --dequantize f32` does (tests/integration/test_tensorctl.c runs
     * the command): load dequantized, save as safetensors, and the floats come back. */
    load_deq(src, TD_DEQUANT_F32, &d);
    TU_OK(td_save_safetensors(dst, d, NULL, &err), &err);
    td_dict_free(d);
    TU_OK(td_load(dst, NULL, &d, NULL, &err), &err);
    for (size_t ti = 0; ti < NIQ; ti++) {
        const td_array *a = td_dict_get(d, td_dtype_name(g_iq_types[ti]));
        ck_assert_ptr_nonnull(a);
        ck_assert_int_eq(td_array_dtype(a), TD_FLOAT32);
        same_bits32("converted", td_array_data(want[ti]), td_array_data(a),
                    (size_t)td_array_size(want[ti]));
        td_array_release(want[ti]);
    }
    td_dict_free(d);
    tu_rmtree(dir);
}
END_TEST

/* ---- the threaded driver ---- */

typedef struct conc_arg {
    const td_array *a;
    td_array *out;
    int rc;
} conc_arg;

static void *conc_main(void *p)
{
    conc_arg *c = p;
    td_error err;
    c->rc = td_array_dequantize(c->a, TD_FLOAT32, 0, &c->out, &err);
    return NULL;
}

START_TEST(test_threads_and_splits)
{
    const int64_t shape[2] = {1536, 2048}; /* 3M elements, split explicitly below */
    size_t bb;
    td_dtype_block(TD_Q4_K, NULL, &bb);
    size_t nb = (size_t)(shape[0] * shape[1] / 256);
    uint8_t *q = malloc(nb * bb);
    for (size_t i = 0; i < nb * bb; i++)
        q[i] = (uint8_t)rnd();
    td_error err = {0};
    td_array *a;
    TU_OK(td_array_new(TD_Q4_K, 2, shape, q, &a, &err), &err);
    size_t n = (size_t)(shape[0] * shape[1]);
    float *ref = malloc(n * 4), *got = malloc((n + 16) * 4);
    TU_OK(td__gq_dequantize_blocks(TD_Q4_K, q, nb, ref, GQ_ISA_PORTABLE, &err), &err);
    static const unsigned threads[] = {0, 1, 2, 3, 7, 16, 99};
    static const uint64_t rows[] = {0, 256, 2048, 1u << 20};
    for (size_t ti = 0; ti < sizeof threads / sizeof *threads; ti++) {
        for (size_t ri = 0; ri < sizeof rows / sizeof *rows; ri++) {
            td__gq_options o = {threads[ti], GQ_ISA_AUTO};
            for (int k = 0; k < 16; k++)
                got[n + (size_t)k] = 12345.0f; /* canary past the end */
            TU_OK(td__gq_dequantize(TD_Q4_K, q, nb * bb, n, rows[ri], TD_FLOAT32, got, n * 4, &o,
                                    NULL, &err),
                  &err);
            same_bits32("threaded", ref, got, n);
            for (int k = 0; k < 16; k++)
                ck_assert_float_eq(got[n + (size_t)k], 12345.0f);
        }
    }
    /* many callers at once on one array */
    pthread_t tid[4];
    conc_arg c[4];
    for (int i = 0; i < 4; i++) {
        c[i].a = a;
        ck_assert_int_eq(pthread_create(&tid[i], NULL, conc_main, &c[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(tid[i], NULL);
        ck_assert_int_eq(c[i].rc, 0);
        same_bits32("concurrent", ref, td_array_data(c[i].out), n);
        td_array_release(c[i].out);
    }
    td_array_release(a);
    free(q);
    free(ref);
    free(got);
}
END_TEST

START_TEST(test_driver_checks_sizes)
{
    td_error err = {0};
    uint8_t q[18 * 4] = {0};
    float out[128];
    uint16_t h[128];
    ck_assert_int_eq(td__gq_dequantize(TD_Q4_0, q, sizeof q - 1, 128, 32, TD_FLOAT32, out,
                                       sizeof out, NULL, "m.gguf: tensor 'w'", &err),
                     TD_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.message, "m.gguf: tensor 'w'"));
    ck_assert_int_eq(td__gq_dequantize(TD_Q4_0, q, sizeof q, 128, 32, TD_FLOAT32, out,
                                       sizeof out - 1, NULL, NULL, &err),
                     TD_EINVAL);
    ck_assert_int_eq(td__gq_dequantize(TD_Q4_0, q, sizeof q, 100, 32, TD_FLOAT32, out, sizeof out,
                                       NULL, NULL, &err),
                     TD_ERANGE);
    ck_assert_int_eq(td__gq_dequantize(TD_Q4_0, q, sizeof q, 128, 32, TD_INT8, out, sizeof out,
                                       NULL, NULL, &err),
                     TD_EDTYPE);
    ck_assert_ptr_nonnull(strstr(err.message, "int8"));
    ck_assert_int_eq(
        td__gq_dequantize(TD_Q4_0, q, sizeof q, 128, 32, TD_FLOAT16, h, sizeof h, NULL, NULL, &err),
        0);
    ck_assert_int_eq(
        td__gq_dequantize(TD_Q4_0, NULL, 0, 0, 0, TD_FLOAT32, NULL, 0, NULL, NULL, &err), 0);
    uint64_t nbytes;
    ck_assert_int_eq(
        td__gq_output_nbytes(TD_Q8_K, (UINT64_MAX / 256) * 256, TD_FLOAT32, &nbytes, NULL, &err),
        TD_ERANGE);
    ck_assert_int_eq(td__gq_output_nbytes(TD_Q8_K, 512, TD_BFLOAT16, &nbytes, NULL, &err), 0);
    ck_assert_uint_eq(nbytes, 1024);
}
END_TEST

/* ---- td_array API ---- */

START_TEST(test_array_api_errors)
{
    td_error err = {0};
    td_array *a, *r = (td_array *)1;
    const int64_t shape[2] = {2, 256};
    /* an unsupported block type is named, with the supported list */
    TU_OK(td_array_new(TD_NVFP4, 2, shape, NULL, &a, &err), &err);
    ck_assert_int_eq(td_array_dequantize(a, TD_FLOAT32, 0, &r, &err), TD_EDTYPE);
    ck_assert_ptr_null(r);
    ck_assert_ptr_nonnull(strstr(err.message, "nvfp4"));
    ck_assert_ptr_nonnull(strstr(err.message, "q4_k"));
    ck_assert_ptr_nonnull(strstr(err.message, "iq2_xxs"));
    ck_assert_ptr_nonnull(strstr(err.message, "q8_1"));
    td_array *w, *s, *b;
    ck_assert_int_eq(td_array_to_mlx(a, &w, &s, &b, &err), TD_EDTYPE);
    ck_assert_ptr_null(w);
    td_array_release(a);
    /* a plain array */
    TU_OK(td_array_new(TD_FLOAT32, 2, shape, NULL, &a, &err), &err);
    ck_assert_int_eq(td_array_dequantize(a, TD_FLOAT32, 0, &r, &err), TD_EDTYPE);
    ck_assert_ptr_nonnull(strstr(err.message, "float32"));
    td_array_release(a);
    /* a bad output dtype */
    TU_OK(td_array_new(TD_Q8_0, 2, shape, NULL, &a, &err), &err);
    ck_assert_int_eq(td_array_dequantize(a, TD_FLOAT64, 0, &r, &err), TD_EDTYPE);
    ck_assert_ptr_nonnull(strstr(err.message, "float64"));
    ck_assert_int_eq(td_array_dequantize(NULL, TD_FLOAT32, 0, &r, &err), TD_EINVAL);
    ck_assert_int_eq(td_array_dequantize(a, TD_FLOAT32, 0, NULL, &err), TD_EINVAL);
    /* outputs of each float type, with shape kept */
    static const td_dtype outs[] = {TD_FLOAT32, TD_FLOAT16, TD_BFLOAT16};
    for (int i = 0; i < 3; i++) {
        TU_OK(td_array_dequantize(a, outs[i], 0, &r, &err), &err);
        ck_assert_int_eq(td_array_dtype(r), outs[i]);
        ck_assert_int_eq(td_array_ndim(r), 2);
        ck_assert_int_eq(td_array_shape(r)[1], 256);
        ck_assert_uint_eq(td_array_nbytes(r), 512 * td_dtype_size(outs[i]));
        ck_assert_ptr_nonnull(td_array_data_mut(r));
        td_array_release(r);
    }
    td_array_release(a);
    /* empty arrays */
    const int64_t empty[2] = {0, 32};
    TU_OK(td_array_new(TD_Q4_0, 2, empty, NULL, &a, &err), &err);
    TU_OK(td_array_dequantize(a, TD_FLOAT16, 0, &r, &err), &err);
    ck_assert_int_eq(td_array_size(r), 0);
    td_array_release(r);
    TU_OK(td_array_to_mlx(a, &w, &s, &b, &err), &err);
    ck_assert_int_eq(td_array_shape(w)[1], 4);
    ck_assert_int_eq(td_array_shape(s)[1], 1);
    td_array_release(w);
    td_array_release(s);
    td_array_release(b);
    td_array_release(a);
    /* MLX shapes: 3-D, 8-bit */
    int64_t ws[3], ss[3];
    const int64_t s3[3] = {2, 3, 64};
    TU_OK(td__gq_mlx_shapes(TD_Q8_0, 3, s3, ws, ss, NULL, &err), &err);
    ck_assert_int_eq(ws[2], 16);
    ck_assert_int_eq(ss[2], 2);
    ck_assert_int_eq(ws[0], 2);
    ck_assert_int_eq(td__gq_mlx_shapes(TD_Q8_0, 0, s3, ws, ss, NULL, &err), TD_EINVAL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ggml_quants");
    TCase *tc = tcase_create("ggml_quants");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_reference_files);
    tcase_add_test(tc, test_mlx_reference_files);
    tcase_add_test(tc, test_mlx_random_blocks);
    tcase_add_test(tc, test_mlx_matches_numpy_transcription);
    tcase_add_test(tc, test_f16_rounding_matches_numpy);
    tcase_add_test(tc, test_f16_all_halves_round_trip);
    tcase_add_test(tc, test_bf16_rounding);
    tcase_add_test(tc, test_portable_vs_avx2);
    tcase_add_test(tc, test_known_blocks);
    tcase_add_test(tc, test_known_iquant_blocks);
    tcase_add_test(tc, test_bulk_iquant_blocks);
    tcase_add_test(tc, test_grid_invariants);
    tcase_add_test(tc, test_iquant_scaling);
    tcase_add_test(tc, test_iquant_gguf_load_and_convert);
    tcase_add_test(tc, test_threads_and_splits);
    tcase_add_test(tc, test_driver_checks_sizes);
    tcase_add_test(tc, test_array_api_errors);
    suite_add_tcase(s, tc);
    return tu_run_isas(s);
}

/*
 * test_ggml_quants_oracle.c - our dequantization against llama.cpp's own, bit for bit.
 *
 * The oracle is libggml-base.so from the npm package @node-llama-cpp/linux-x64@3.21.1
 * (scripts/install-oracle.sh), loaded with dlopen by tu_oracle (never linked). Without it the test
 * exits 77: ctest counts it as skipped, and CI fails on a skip.
 *
 * For every supported type: rows of many kinds (noise, zeros, huge and tiny magnitudes, negative
 * values, outliers, constants, subnormal scales) quantized by ggml_quantize_chunk (with an
 * importance matrix for the i-quants that need one; q8_k: quantize_row_q8_K_ref, q8_1:
 * quantize_row_q8_1_ref), plus blocks of raw random bytes (NaN and infinite scales included),
 * at least 10,000 blocks of each, plus, for the grid i-quants and q8_1, random blocks whose
 * scale is set to each edge value (zeros, subnormals, the largest finite, infinities, quiet and
 * signalling NaNs, both signs); then ggml's to_float and ours (portable, AVX2, threaded,
 * float16 and bfloat16 outputs) must agree in every bit.
 *
 * q8_1 has no to_float in ggml. Its reference is ggml's q8_0 to_float of the same blocks
 * without their s field (q8_1 is q8_0 plus s, and the value is d * q in both).
 *
 * struct ggml_type_traits is declared here as in ggml.h of that release; the layout is checked
 * at run time against ggml_blck_size / ggml_type_size / ggml_type_name for several types.
 */
#include "dtype.h"
#include "ggml_quants.h"
#include "testutil.h"

#include <ctype.h>
#include <dlfcn.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*gg_to_float_t)(const void *x, float *y, int64_t k);
typedef void (*gg_from_float_t)(const float *x, void *y, int64_t k);

/* ggml.h (llama.cpp of node-llama-cpp 3.21.1): struct ggml_type_traits. */
struct gg_type_traits {
    const char *type_name;
    int64_t blck_size;
    int64_t blck_size_interleave;
    size_t type_size;
    bool is_quantized;
    gg_to_float_t to_float;
    gg_from_float_t from_float_ref;
};

typedef struct oracle {
    void *lib;
    const struct gg_type_traits *(*get_type_traits)(int type);
    size_t (*quantize_chunk)(int type, const float *src, void *dst, int64_t start, int64_t nrows,
                             int64_t n_per_row, const float *imatrix);
    void (*quantize_init)(int type);
    int64_t (*blck_size)(int type);
    size_t (*type_size)(int type);
    const char *(*type_name)(int type);
    void (*fp32_to_fp16_row)(const float *x, uint16_t *y, int64_t n);
    void (*fp32_to_bf16_row_ref)(const float *x, uint16_t *y, int64_t n);
    bool (*requires_imatrix)(int type);
} oracle;

static oracle g_or; /* test-process state, set once in main */

#define SYM(field, name) *(void **)(&g_or.field) = tu_oracle_sym(name)

/* Opens the oracle (tu_oracle exits 77 when it is not installed) and finds its functions. */
static void load_oracle(void)
{
    g_or.lib = tu_oracle();
    SYM(get_type_traits, "ggml_get_type_traits");
    SYM(quantize_chunk, "ggml_quantize_chunk");
    SYM(quantize_init, "ggml_quantize_init");
    SYM(blck_size, "ggml_blck_size");
    SYM(type_size, "ggml_type_size");
    SYM(type_name, "ggml_type_name");
    SYM(fp32_to_fp16_row, "ggml_fp32_to_fp16_row");
    SYM(fp32_to_bf16_row_ref, "ggml_fp32_to_bf16_row_ref");
    SYM(requires_imatrix, "ggml_quantize_requires_imatrix");
}

static int strieq(const char *a, const char *b)
{
    for (; *a && *b; a++, b++)
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b))
            return 0;
    return *a == *b;
}

/* Every dtype with a GGML id: the library agrees on name, block size and block bytes (this
 * checks core/dtype.c against ggml), and the traits struct layout is the one declared. */
START_TEST(test_traits_layout_and_dtype_table)
{
    int checked = 0;
    for (int t = 0; t < TD_DTYPE_COUNT; t++) {
        int32_t id = td__dtype_ggml_id((td_dtype)t);
        if (id < 0)
            continue;
        const struct gg_type_traits *tr = g_or.get_type_traits(id);
        size_t be, bb;
        td_dtype_block((td_dtype)t, &be, &bb);
        /* block types share ggml's names (case aside); plain ones differ (f32 vs float32) */
        ck_assert_msg(!td_dtype_is_block((td_dtype)t) ||
                          strieq(g_or.type_name(id), td_dtype_name((td_dtype)t)),
                      "ggml type %d is '%s', our table says '%s'", id, g_or.type_name(id),
                      td_dtype_name((td_dtype)t));
        ck_assert_msg((size_t)g_or.blck_size(id) == be && g_or.type_size(id) == bb,
                      "%s: ggml block %lld elems / %zu bytes, ours %zu / %zu",
                      td_dtype_name((td_dtype)t), (long long)g_or.blck_size(id), g_or.type_size(id),
                      be, bb);
        /* the struct layout: the fields we read agree with the accessor functions */
        ck_assert_msg(tr->blck_size == g_or.blck_size(id) && tr->type_size == g_or.type_size(id) &&
                          strcmp(tr->type_name, g_or.type_name(id)) == 0,
                      "struct ggml_type_traits layout differs from the declared one (type %d)", id);
        if (td__gq_supported((td_dtype)t)) {
            ck_assert_msg(tr->is_quantized, "%s: not quantized in ggml", tr->type_name);
            if (t != TD_Q8_K && t != TD_Q8_1)
                ck_assert_msg(tr->to_float != NULL, "%s: ggml has no to_float", tr->type_name);
        }
        checked++;
    }
    ck_assert_int_ge(checked, 30);
}
END_TEST

/* ---- random data ---- */

typedef struct rng {
    uint64_t s;
} rng;

static uint64_t rnext(rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double runif(rng *r)
{
    return (double)(rnext(r) >> 11) * 0x1p-53;
}

static float rnorm(rng *r)
{
    double u = runif(r), v = runif(r);
    if (u < 1e-300)
        u = 1e-300;
    return (float)(sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v));
}

#define ROW_KINDS 14
static const char *const g_kind_names[ROW_KINDS] = {
    "normal",        "zeros",        "huge 1e30",     "near f16 max", "tiny 1e-30",
    "subnormal f16", "all negative", "sign by block", "constant",     "outlier",
    "scaled 1e4",    "linspace",     "mixed zeros",   "skewed"};

/* Fills row[0..n) with kind k. */
static void make_row(rng *r, int k, float *row, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        float g = rnorm(r);
        float v;
        switch (k) {
        case 0:
            v = g;
            break;
        case 1:
            v = 0.0f;
            break;
        case 2:
            v = g * 1e30f;
            break;
        case 3:
            v = g * 3e4f;
            break;
        case 4:
            v = g * 1e-30f;
            break;
        case 5:
            v = g * 3e-7f;
            break;
        case 6:
            v = -fabsf(g);
            break;
        case 7:
            v = ((i / 32) & 1) ? -fabsf(g) - 0.5f : fabsf(g) + 0.5f;
            break;
        case 8:
            v = (float)((i / 32) % 7) - 3.0f;
            break;
        case 9:
            v = (i % 29 == 0) ? g * 1000.0f : g * 0.01f;
            break;
        case 10:
            v = g * 1e4f;
            break;
        case 11:
            v = -3.0f + 8.0f * (float)i / (float)n;
            break;
        case 12:
            v = (i % 3) ? 0.0f : g;
            break;
        default:
            v = fabsf(g) * fabsf(g) + 0.1f * g;
            break;
        }
        row[i] = v;
    }
}

/* Bitwise comparison, reporting the first difference. NaN results (from NaN or infinite
 * scales in raw blocks) must be NaN, but their sign and payload may differ: when two operands
 * are NaN, which one the result carries is the compiler's choice of operand order (GCC builds
 * agree with the oracle in every bit, clang builds do not). They are counted and printed. */
static void expect_same(const char *what, const char *type, const float *want, const float *got,
                        size_t n, size_t block_elems, const int *row_kind, size_t row_elems)
{
    size_t nan_diff = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t a, b;
        memcpy(&a, &want[i], 4);
        memcpy(&b, &got[i], 4);
        if (a != b && isnan(want[i]) && isnan(got[i])) {
            nan_diff++;
        } else if (a != b) {
            const char *kind = row_kind ? g_kind_names[row_kind[i / row_elems]] : "raw bytes";
            ck_abort_msg("%s %s: element %zu (block %zu, %s): ggml %.9g (0x%08x), ours %.9g "
                         "(0x%08x)",
                         type, what, i, i / block_elems, kind, (double)want[i], a, (double)got[i],
                         b);
        }
    }
    if (nan_diff)
        fprintf(stderr, "note: %s %s: %zu NaN results differ in sign or payload only\n", type, what,
                nan_diff);
}

static int is_nan16(uint16_t h, int bf)
{
    return bf ? (h & 0x7f80) == 0x7f80 && (h & 0x7f) : (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
}

static void expect_same16(const char *what, const char *type, const uint16_t *want,
                          const uint16_t *got, size_t n, int bf)
{
    /* (ck_assert per element would be slow: Check records every passing assertion) */
    for (size_t i = 0; i < n; i++)
        if (want[i] != got[i] && !(is_nan16(want[i], bf) && is_nan16(got[i], bf)))
            ck_abort_msg("%s %s: element %zu: want 0x%04x, got 0x%04x", type, what, i, want[i],
                         got[i]);
}

/* The types we claim, each checked here. */
static const td_dtype g_types[] = {
    TD_Q4_0,  TD_Q4_1,  TD_Q5_0,  TD_Q5_1,    TD_Q8_0,   TD_Q8_1,   TD_Q2_K,    TD_Q3_K,
    TD_Q4_K,  TD_Q5_K,  TD_Q6_K,  TD_Q8_K,    TD_IQ4_NL, TD_IQ4_XS, TD_TQ1_0,   TD_TQ2_0,
    TD_MXFP4, TD_IQ1_S, TD_IQ1_M, TD_IQ2_XXS, TD_IQ2_XS, TD_IQ2_S,  TD_IQ3_XXS, TD_IQ3_S};
#define NTYPES (sizeof g_types / sizeof g_types[0])

/* The grid i-quants and q8_1, whose scales are also set to every edge value. */
static const td_dtype g_new_types[] = {TD_Q8_1,   TD_IQ1_S, TD_IQ1_M,   TD_IQ2_XXS,
                                       TD_IQ2_XS, TD_IQ2_S, TD_IQ3_XXS, TD_IQ3_S};
#define NNEW (sizeof g_new_types / sizeof g_new_types[0])

#define ROW_ELEMS  4096
#define MIN_BLOCKS 10240

static gg_to_float_t oracle_to_float(int id, const char *ggml_name)
{
    const struct gg_type_traits *tr = g_or.get_type_traits(id);
    gg_to_float_t f = tr->to_float;
    char sym[64];
    snprintf(sym, sizeof sym, "dequantize_row_%s", ggml_name);
    gg_to_float_t g = NULL;
    *(void **)(&g) = dlsym(g_or.lib, sym);
    if (f && g)
        ck_assert_msg(f == g, "%s: traits to_float is not %s", ggml_name, sym);
    return f ? f : g;
}

/* ggml's float32 result for nblocks blocks of t at q, into want. q8_1, for which ggml has no
 * to_float, is decoded by q8_0's: the same blocks without their s field. */
static void oracle_decode(td_dtype t, int id, const uint8_t *q, size_t nblocks, float *want)
{
    size_t be, bb;
    td_dtype_block(t, &be, &bb);
    const char *gname = g_or.type_name(id);
    gg_to_float_t to_float = oracle_to_float(id, gname);
    if (!to_float && t == TD_Q8_1) {
        to_float = oracle_to_float(td__dtype_ggml_id(TD_Q8_0), "q8_0");
        ck_assert_msg(to_float != NULL, "q8_0: no to_float in the oracle");
        uint8_t *q80 = malloc(nblocks * 34);
        ck_assert_ptr_nonnull(q80);
        for (size_t i = 0; i < nblocks; i++) {
            memcpy(q80 + 34 * i, q + 36 * i, 2);          /* d */
            memcpy(q80 + 34 * i + 2, q + 36 * i + 4, 32); /* qs; s dropped */
        }
        to_float(q80, want, (int64_t)(nblocks * be));
        free(q80);
        return;
    }
    ck_assert_msg(to_float != NULL, "%s: no to_float in the oracle", gname);
    to_float(q, want, (int64_t)(nblocks * be));
}

/* Checks all our paths on nblocks blocks at q against ggml's to_float. */
static void compare_all(td_dtype t, int id, const uint8_t *q, size_t nblocks, const int *row_kind,
                        const char *label)
{
    size_t be, bb;
    td_dtype_block(t, &be, &bb);
    const char *gname = g_or.type_name(id);
    size_t n = nblocks * be;
    float *want = malloc(n * sizeof(float));
    float *got = malloc(n * sizeof(float));
    uint16_t *h_want = malloc(n * 2), *h_got = malloc(n * 2);
    ck_assert(want && got && h_want && h_got);
    td_error err = {0};
    char what[128];

    oracle_decode(t, id, q, nblocks, want);

    memset(got, 0xa5, n * sizeof(float));
    TU_OK(td__gq_dequantize_blocks(t, q, nblocks, got, GQ_ISA_PORTABLE, &err), &err);
    snprintf(what, sizeof what, "%s portable", label);
    expect_same(what, gname, want, got, n, be, row_kind, ROW_ELEMS);

    if (td__gq_have_avx2()) {
        memset(got, 0xa5, n * sizeof(float));
        TU_OK(td__gq_dequantize_blocks(t, q, nblocks, got, GQ_ISA_AVX2, &err), &err);
        snprintf(what, sizeof what, "%s avx2", label);
        expect_same(what, gname, want, got, n, be, row_kind, ROW_ELEMS);
    }

    /* the threaded driver, forced to split into 3 shares of whole rows */
    td__gq_options o = {3, GQ_ISA_AUTO};
    memset(got, 0xa5, n * sizeof(float));
    TU_OK(td__gq_dequantize(t, q, nblocks * bb, n, ROW_ELEMS, TD_FLOAT32, got, n * 4, &o, gname,
                            &err),
          &err);
    snprintf(what, sizeof what, "%s threaded", label);
    expect_same(what, gname, want, got, n, be, row_kind, ROW_ELEMS);

    /* float16 and bfloat16 outputs: the float32 result, rounded (our scalar rounding, checked
     * against numpy and ggml in test_ggml_quants and below) */
    for (int k = 0; k < 2; k++) {
        td_dtype ot = k ? TD_BFLOAT16 : TD_FLOAT16;
        for (size_t i = 0; i < n; i++)
            h_want[i] = k ? td__gq_f32_to_bf16(want[i]) : td__gq_f32_to_f16(want[i]);
        for (int isa = GQ_ISA_PORTABLE; isa <= GQ_ISA_AVX2; isa++) {
            if (isa == GQ_ISA_AVX2 && !td__gq_have_avx2())
                continue;
            td__gq_options oo = {2, (td__gq_isa)isa};
            memset(h_got, 0xa5, n * 2);
            TU_OK(td__gq_dequantize(t, q, nblocks * bb, n, ROW_ELEMS, ot, h_got, n * 2, &oo, gname,
                                    &err),
                  &err);
            snprintf(what, sizeof what, "%s %s %s", label, td_dtype_name(ot),
                     isa == GQ_ISA_AVX2 ? "avx2" : "portable");
            expect_same16(what, gname, h_want, h_got, n, k);
        }
    }
    /* ggml's own rounding agrees with ours: bfloat16 everywhere, float16 except NaN payloads */
    g_or.fp32_to_bf16_row_ref(want, h_got, (int64_t)n);
    for (size_t i = 0; i < n; i++)
        if (h_got[i] != td__gq_f32_to_bf16(want[i]))
            ck_abort_msg("%s bf16 vs ggml at %zu: %04x %04x", gname, i, h_got[i],
                         td__gq_f32_to_bf16(want[i]));
    g_or.fp32_to_fp16_row(want, h_got, (int64_t)n);
    for (size_t i = 0; i < n; i++)
        if (!isnan(want[i]) && h_got[i] != td__gq_f32_to_f16(want[i]))
            ck_abort_msg("%s f16 vs ggml at %zu (%g): %04x %04x", gname, i, (double)want[i],
                         h_got[i], td__gq_f32_to_f16(want[i]));
    free(want);
    free(got);
    free(h_want);
    free(h_got);
}

/* Rows of every kind, quantized by ggml. */
START_TEST(test_quantized_rows)
{
    td_dtype t = g_types[_i];
    int id = td__dtype_ggml_id(t);
    size_t be, bb;
    td_dtype_block(t, &be, &bb);
    const size_t blocks_per_row = ROW_ELEMS / be;
    const size_t nrows = (MIN_BLOCKS + blocks_per_row - 1) / blocks_per_row;
    const size_t nblocks = nrows * blocks_per_row;
    ck_assert_uint_ge(nblocks, 10000);
    float *src = malloc(nrows * ROW_ELEMS * sizeof(float));
    uint8_t *q = malloc(nblocks * bb);
    int *kinds = malloc(nrows * sizeof(int));
    ck_assert(src && q && kinds);
    rng r = {0x5eed0000u + (uint64_t)t};
    /* ggml's quantizers of the grid i-quants abort (GGML_ASSERT(grid_index >= 0)) on rows of
     * 1e30, whose squares overflow float32: those types get normal rows instead (their
     * infinite and NaN scales are in test_edge_scales) */
    const int no_huge = td__gq_iq_kernel(t) != NULL;
    for (size_t i = 0; i < nrows; i++) {
        kinds[i] = (int)(i % ROW_KINDS);
        if (no_huge && kinds[i] == 2)
            kinds[i] = 0;
        make_row(&r, kinds[i], src + i * ROW_ELEMS, ROW_ELEMS);
    }
    if (t == TD_Q8_K || t == TD_Q8_1) {
        const char *sym = t == TD_Q8_K ? "quantize_row_q8_K_ref" : "quantize_row_q8_1_ref";
        gg_from_float_t qk = NULL;
        *(void **)(&qk) = tu_oracle_sym(sym);
        ck_assert_msg(qk != NULL, "oracle lacks %s", sym);
        qk(src, q, (int64_t)(nrows * ROW_ELEMS));
    } else {
        /* iq1_s, iq1_m, iq2_xxs and iq2_xs need an importance matrix: per column weights,
         * here positive and uneven (ggml asserts without one) */
        float *imatrix = NULL;
        if (g_or.requires_imatrix(id)) {
            imatrix = malloc(ROW_ELEMS * sizeof(float));
            ck_assert_ptr_nonnull(imatrix);
            for (int j = 0; j < ROW_ELEMS; j++)
                imatrix[j] = 0.25f + (float)runif(&r) * 4.0f;
        }
        g_or.quantize_init(id);
        size_t w = g_or.quantize_chunk(id, src, q, 0, (int64_t)nrows, ROW_ELEMS, imatrix);
        ck_assert_uint_eq(w, nblocks * bb);
        free(imatrix);
    }
    compare_all(t, id, q, nblocks, kinds, "quantized");
    fprintf(stderr, "oracle: %-7s %zu quantized blocks bit-identical\n", td_dtype_name(t), nblocks);
    free(src);
    free(q);
    free(kinds);
}
END_TEST

/* Blocks of random bytes: every field value, NaN and infinite scales, negative scales. */
START_TEST(test_random_blocks)
{
    td_dtype t = g_types[_i];
    int id = td__dtype_ggml_id(t);
    size_t be, bb;
    td_dtype_block(t, &be, &bb);
    const size_t nblocks = (MIN_BLOCKS * be / ROW_ELEMS + 1) * ROW_ELEMS / be;
    uint8_t *q = malloc(nblocks * bb);
    ck_assert(q);
    rng r = {0xb10c0000u + (uint64_t)t};
    for (size_t i = 0; i < nblocks * bb; i++)
        q[i] = (uint8_t)rnext(&r);
    compare_all(t, id, q, nblocks, NULL, "random bytes");
    fprintf(stderr, "oracle: %-7s %zu random blocks bit-identical\n", td_dtype_name(t), nblocks);
    free(q);
}
END_TEST

/* Where a block of t keeps its float16 scale d: the byte offset, or -1 for iq1_m, whose d is
 * the top nibbles of its four 16-bit scale words (bytes 48..55). */
static int scale_offset(td_dtype t)
{
    return t == TD_IQ1_M ? -1 : 0; /* every other type of g_new_types starts with d */
}

static void set_scale(td_dtype t, uint8_t *blk, uint16_t h)
{
    if (scale_offset(t) >= 0) {
        blk[0] = (uint8_t)h;
        blk[1] = (uint8_t)(h >> 8);
        return;
    }
    for (int k = 0; k < 4; k++) { /* nibble k of h is bits 12..15 of scale word k */
        blk[48 + 2 * k + 1] =
            (uint8_t)((blk[48 + 2 * k + 1] & 0x0f) | (((h >> (4 * k)) & 15) << 4));
    }
}

/* Random blocks of each grid i-quant and q8_1 with every edge scale: +-0, subnormals, the
 * smallest normal, +-1, the largest finite, +-infinity, quiet and signalling NaNs of both signs
 * (the oracle's NaN handling included: the sign flips of a NaN product must match too). */
START_TEST(test_edge_scales)
{
    static const uint16_t scales[] = {0x0000, 0x8000, 0x0001, 0x8001, 0x03ff, 0x0400, 0x3c00,
                                      0xbc00, 0x7bff, 0xfbff, 0x7c00, 0xfc00, 0x7e00, 0xfe00,
                                      0x7c01, 0xfc01, 0x7fff, 0xffff, 0x3555, 0xc7ff};
    const size_t nscales = sizeof scales / sizeof *scales;
    td_dtype t = g_new_types[_i];
    int id = td__dtype_ggml_id(t);
    size_t be, bb;
    td_dtype_block(t, &be, &bb);
    /* a whole number of ROW_ELEMS rows, at least 10,000 blocks, every scale on as many */
    const size_t per_row = ROW_ELEMS / be;
    const size_t nblocks = (MIN_BLOCKS / per_row + 1) * per_row;
    uint8_t *q = malloc(nblocks * bb);
    ck_assert_ptr_nonnull(q);
    rng r = {0xed9e0000u + (uint64_t)t};
    for (size_t i = 0; i < nblocks * bb; i++)
        q[i] = (uint8_t)rnext(&r);
    for (size_t i = 0; i < nblocks; i++)
        set_scale(t, q + i * bb, scales[i % nscales]);
    compare_all(t, id, q, nblocks, NULL, "edge scales");
    fprintf(stderr, "oracle: %-7s %zu blocks with %zu edge scales bit-identical\n",
            td_dtype_name(t), nblocks, nscales);
    free(q);
}
END_TEST

/* The block types we refuse (newer than the grids and kernels here) are refused by name. */
START_TEST(test_unsupported_are_named)
{
    for (int t = 0; t < TD_DTYPE_COUNT; t++) {
        if (!td_dtype_is_block((td_dtype)t) || td__gq_supported((td_dtype)t))
            continue;
        td_error err = {0};
        float y[256];
        uint8_t blk[512] = {0};
        ck_assert_int_eq(td__gq_dequantize_blocks((td_dtype)t, blk, 1, y, GQ_ISA_AUTO, &err),
                         TD_EDTYPE);
        ck_assert_msg(strstr(err.message, td_dtype_name((td_dtype)t)) != NULL, "%s", err.message);
    }
}
END_TEST

int main(void)
{
    load_oracle();
    Suite *s = suite_create("ggml_quants_oracle");
    TCase *tc = tcase_create("oracle");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_traits_layout_and_dtype_table);
    tcase_add_loop_test(tc, test_quantized_rows, 0, (int)NTYPES);
    tcase_add_loop_test(tc, test_random_blocks, 0, (int)NTYPES);
    tcase_add_loop_test(tc, test_edge_scales, 0, (int)NNEW);
    tcase_add_test(tc, test_unsupported_are_named);
    suite_add_tcase(s, tc);
    return tu_run_isas(s);
}

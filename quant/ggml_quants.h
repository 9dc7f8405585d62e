/*
 * ggml_quants.h - dequantizing GGML block types (internal prefix td__gq_).
 *
 * On disk, every block is little-endian; "half" is IEEE binary16, "e8m0" a bare exponent byte.
 * Elements of a block are numbered 0..n-1 in memory order of the decoded row.
 *   1. q4_0   32 elems, 18 bytes: half d; u8 qs[16]
 *             x[j] = ((qs[j] & 15) - 8) * d, x[j+16] = ((qs[j] >> 4) - 8) * d     (j < 16)
 *   2. q4_1   32 / 20: half d, m; u8 qs[16]                x = nibble * d + m
 *   3. q5_0   32 / 22: half d; u32 qh; u8 qs[16]           bit 4 of x[j] is bit j of qh, of
 *             x[j+16] bit j+16;                                 x = (q5 - 16) * d
 *   4. q5_1   32 / 24: half d, m; u32 qh; u8 qs[16]        x = q5 * d + m
 *   5. q8_0   32 / 34: half d; i8 qs[32]                   x = qs * d
 *   6. q2_k  256 / 84: u8 scales[16]; u8 qs[64]; half d, dmin
 *   7. q3_k  256 / 110: u8 hmask[32]; u8 qs[64]; u8 scales[12] (16 packed 6-bit); half d
 *   8. q4_k  256 / 144: half d, dmin; u8 scales[12] (8 x 6-bit scale + 6-bit min); u8 qs[128]
 *   9. q5_k  256 / 176: half d, dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]
 *  10. q6_k  256 / 210: u8 ql[128]; u8 qh[64]; i8 scales[16]; half d
 *  11. q8_k  256 / 292: float d; i8 qs[256]; i16 bsums[16]   x = d * qs
 *  12. iq4_nl 32 / 18: half d; u8 qs[16]                   x = d * kvalues[nibble]
 *  13. iq4_xs 256 / 136: half d; u16 scales_h; u8 scales_l[4]; u8 qs[128]
 *  14. tq1_0 256 / 54: u8 qs[48] (5 base-3 digits each); u8 qh[4] (4 digits each); half d
 *  15. tq2_0 256 / 66: u8 qs[64] (4 two-bit digits each); half d   x = (digit - 1) * d
 *  16. mxfp4  32 / 17: e8m0 e; u8 qs[16]                   x = kvalues_mxfp4[nibble] * 2^(e-128)
 *  17. q8_1   32 / 36: half d, s; i8 qs[32]                x = qs * d (s = d * sum(qs) is unused)
 * The grid-based i-quants (ggml_iquants.c; 256 elements, groups of 8 or 4 elements pick a
 * vector of a fixed grid, iq_grids.c): a group's scale dl, its grid entry g, and its signs:
 *  18. iq2_xxs 256 / 66: half d; per 32 elements u8 idx[4], u32 (4 x 7-bit sign index, 4-bit s)
 *             dl = d * (0.5 + s) * 0.25;                   x = +-(dl * g)
 *  19. iq2_xs 256 / 74: half d; u16 qs[32] (9-bit index, 7-bit sign index); u8 scales[8]
 *  20. iq2_s  256 / 82: half d; u8 qs[32]; u8 signs[32]; u8 qh[8] (index bits 8-9); scales[8]
 *  21. iq3_xxs 256 / 98: half d; u8 idx[64] (groups of 4); u32 [8] (sign indices, s)
 *             dl = d * (0.5 + s) * 0.5
 *  22. iq3_s  256 / 110: half d; u8 qs[64]; u8 qh[8] (index bit 8); u8 signs[32]; u8 scales[4]
 *             dl = d * (1 + 2 s)
 *  23. iq1_s  256 / 50: half d; u8 qs[32]; u16 qh[8] (index bits 8-10, 3-bit s, delta sign)
 *             x = d * (2 s + 1) * (g + delta), g in {-1, 0, 1}, delta = +-0.125
 *  24. iq1_m  256 / 56: u8 qs[32]; u8 qh[16] (index bits 8-10, delta sign per group);
 *             u16 scales[4] (3-bit s per 16 elements; their top nibbles make the half d)
 * The arithmetic of each type (operand order and rounding included) is exactly that of ggml's
 * dequantize_row_* in ggml-quants.c, so results are bit-identical to llama.cpp's to_float
 * (checked against libggml-base.so in tests/unit/test_ggml_quants_oracle.c). The one freedom
 * left is the NaN a NaN-producing block gives (NaN scales, hostile data): when two operands are
 * NaN, which payload and sign the result carries is the compiler's choice of operand order;
 * GCC builds match ggml's bits there too, clang builds give a NaN with another payload.
 * q8_1 has no to_float in ggml; we decode it as d * q, which is q8_0's to_float on the same d
 * and qs (the test checks exactly that).
 * Not supported (TD_EDTYPE, naming the type): the other block dtypes of tensord.h (nvfp4, q1_0,
 * q2_0).
 *
 * Outputs: float32, or float16 / bfloat16 rounded to nearest-even from the float32 result
 * (a NaN stays a quiet NaN with its sign and top payload bits; overflow gives infinity).
 *
 * MLX's packed form (mx.load of a GGUF file) exists for q4_0, q4_1 and q8_0: per group of 32
 * elements (one block) a float16 scale and bias, and the quantized values as uint32 words,
 * `bits` per element, element 32/bits*w + i in bits [bits*i, bits*(i+1)) of word w (so in
 * memory the values are in element order, low nibble first). Dequantized: w * scale + bias.
 *   q4_0: w = nibble,         scale = d, bias = half(-8 * d)
 *   q4_1: w = nibble,         scale = d, bias = m
 *   q8_0: w = qs + 128 (u8),  scale = d, bias = half(-128 * d)
 * half() rounds to nearest-even; -8*d and -128*d are exact unless they overflow binary16
 * (|d| >= 8192, resp. |d| >= 512), where MLX stores an infinite bias and so do we.
 * w * scale + bias equals the float32 dequantization exactly, except that a zero can come out
 * +0 where the reference has -0 (q * d + (-8 * d) is +0; (q - 8) * d is -0 for d < 0).
 * (Newer MLX also packs q4_k, rounding d * scale to float16, which is not exact; we don't.)
 * Shapes: weights (..., n*bits/32) uint32, scales and biases (..., n/32) float16.
 *
 * Kernels: portable C written so that GCC and clang vectorise the inner loops at -O2 (all but
 * the table lookups of iq4_nl, iq4_xs and mxfp4, which need a byte shuffle, and the grid
 * lookups of the i-quants), and, on x86-64, AVX2 kernels (ggml_quants_avx2.c and
 * ggml_iquants_avx2.c, every type but tq1_0) chosen at run time. The choice is a
 * CPU-feature probe done once per process under pthread_once and cached in a static; it is the only
 * static state of the module and is never written after that.
 *
 * Threads: td__gq_dequantize splits large inputs over up to GQ_MAX_THREADS pthreads (the caller's
 * thread works too), in chunks of whole rows (whole blocks when a row is longer than a chunk)
 * that each thread takes from a shared counter, so that a thread that starts late leaves its
 * share to the others (one preempted in the middle of a chunk is still waited for). Every
 * function is reentrant and may be called from many threads at once.
 */
#ifndef TD_GGML_QUANTS_H
#define TD_GGML_QUANTS_H

#include "tensord.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Upper bound on worker threads per call (including the caller's). */
#define GQ_MAX_THREADS 16
/* A call splits over threads only when each thread gets at least this many elements. */
#define GQ_MIN_ELEMS_PER_THREAD (1u << 22)
/* Threads take work in chunks of about this many elements (whole rows when a row fits). */
#define GQ_CHUNK_ELEMS (1u << 16)

/* Which kernels to run. AUTO picks AVX2 when the CPU has AVX2, FMA and F16C. */
typedef enum td__gq_isa {
    GQ_ISA_AUTO = 0,
    GQ_ISA_PORTABLE, /* plain C, the reference in the tests */
    GQ_ISA_AVX2      /* TD_ENOTSUP when the CPU lacks it */
} td__gq_isa;

/* Options for td__gq_dequantize; NULL means all zero. */
typedef struct td__gq_options {
    unsigned nthreads; /* 0: automatic (online CPUs, at most GQ_MAX_THREADS); 1: caller only */
    td__gq_isa isa;    /* GQ_ISA_AUTO */
} td__gq_options;

/* The threads td__gq_dequantize would choose for nelems elements (nthreads 0), at most bound
 * when bound is not 0: what to pass as nthreads to honour a caller's bound (the public API's
 * `threads`) without starting threads a small input would not get. */
unsigned td__gq_threads(uint64_t nelems, unsigned bound);

/* 1 when gq can dequantize type (a GGML block type listed above), else 0. */
int td__gq_supported(td_dtype type);

/* The supported type names, comma-separated, for messages. Static; never NULL. */
const char *td__gq_supported_names(void);

/* 1 when this CPU (and OS) can run the AVX2 kernels. Thread-safe (pthread_once). */
int td__gq_have_avx2(void);

/* Decodes nblocks whole blocks of type at blocks (nblocks * block_bytes readable bytes, any
 * alignment) into out[0 .. nblocks * block_elems) as float32, in the calling thread, with the
 * kernels isa names. blocks and out must not overlap.
 * Returns 0; TD_EDTYPE when type is not supported (the message names it); TD_ENOTSUP when
 * isa is GQ_ISA_AVX2 and the CPU lacks it; TD_EINVAL for NULL pointers with nblocks > 0. */
int td__gq_dequantize_blocks(td_dtype type, const void *blocks, uint64_t nblocks, float *out,
                             td__gq_isa isa, td_error *err);

/* The decoder the loader and the daemon use: decodes nelems elements of type from src
 * (src_bytes readable) into the caller's buffer dst (dst_bytes writable) as out_type
 * (TD_FLOAT32, TD_FLOAT16 or TD_BFLOAT16, native byte order = little-endian), splitting the
 * work over threads as opt says. row_elems is the innermost dimension (0: treat the input as
 * one row); thread shares are whole rows when there are enough of them.
 *
 * nelems must be a multiple of the block size, src_bytes must hold nelems / block_elems
 * blocks and dst_bytes nelems output elements (larger buffers are fine; the extra bytes are not
 * touched). label (may be NULL) starts every message, e.g. "model.gguf: tensor 'blk.0.w'".
 * Returns 0 or TD_EDTYPE (type or out_type not supported), TD_EINVAL (sizes), TD_ENOTSUP
 * (AVX2 asked for but missing). Thread-creation failures are not errors: the caller's thread
 * then does the remaining work itself. On failure dst may be partly written. */
int td__gq_dequantize(td_dtype type, const void *src, uint64_t src_bytes, uint64_t nelems,
                      uint64_t row_elems, td_dtype out_type, void *dst, uint64_t dst_bytes,
                      const td__gq_options *opt, const char *label, td_error *err);

/* Output bytes of nelems elements of type dequantized to out_type, with checked arithmetic.
 * Returns 0, TD_EDTYPE or TD_ERANGE (overflow, or nelems not a multiple of the block). */
int td__gq_output_nbytes(td_dtype type, uint64_t nelems, td_dtype out_type, uint64_t *nbytes,
                         const char *label, td_error *err);

/* Round-to-nearest-even conversions from float32, bit-exact between the portable and the F16C
 * paths (NaN: quiet, sign and top payload bits kept). The row versions convert n values. */
uint16_t td__gq_f32_to_f16(float f);
uint16_t td__gq_f32_to_bf16(float f);
float td__gq_f16_to_f32(uint16_t h);
void td__gq_f32_to_f16_row(const float *in, uint16_t *out, size_t n, td__gq_isa isa);
void td__gq_f32_to_bf16_row(const float *in, uint16_t *out, size_t n, td__gq_isa isa);

/* ---- MLX packed form ---- */

/* Bits per packed weight for type: 4 (q4_0, q4_1), 8 (q8_0), 0 when MLX has no packed form. */
int td__gq_mlx_bits(td_dtype type);

/* Shapes of the three MLX arrays for an array of type with shape[0..ndim) (in elements, ndim
 * >= 1, innermost a multiple of 32): wshape = shape with the innermost size times bits/32,
 * sshape (scales and biases) = shape with the innermost size / 32. Returns 0, TD_EDTYPE (no
 * packed form), TD_EINVAL (ndim 0, or an innermost size that is not a multiple of 32). */
int td__gq_mlx_shapes(td_dtype type, int ndim, const int64_t *shape, int64_t *wshape,
                      int64_t *sshape, const char *label, td_error *err);

/* Packs nblocks blocks of type at src (src_bytes readable) into weights (nblocks * bits
 * uint32 words: 4 per q4 block, 8 per q8_0 block), scales and biases (nblocks float16 bit
 * patterns each), all caller-provided. Any of the three may be NULL: that array is not
 * produced (so a caller that wants one array at a time needs no scratch for the others).
 * Returns 0, TD_EDTYPE (no packed form), TD_EINVAL (src_bytes too small, src NULL).
 * Single-threaded; the work is a few bytes per element. */
int td__gq_mlx_pack(td_dtype type, const void *src, uint64_t src_bytes, uint64_t nblocks,
                    uint32_t *weights, uint16_t *scales, uint16_t *biases, const char *label,
                    td_error *err);

/* ---- internal: the kernel interface shared with ggml_quants_avx2.c and ggml_iquants*.c ---- */

static inline float gq_bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint32_t gq_f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* Exact binary16 -> binary32 (NaN payloads kept, signalling NaNs stay signalling), as ggml's
 * GGML_FP16_TO_FP32. */
static inline float gq_h2f(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t em = h & 0x7fffu;
    uint32_t bits;
    if (em >= 0x7c00u)
        bits = 0x7f800000u | ((em & 0x3ffu) << 13);
    else if (em >= 0x0400u)
        bits = (em << 13) + 0x38000000u;
    else
        bits = gq_f32_bits((float)em * 0x1p-24f); /* subnormal or zero: exact */
    return gq_bits_f32(bits | sign);
}

/* Decodes nblocks whole blocks at x into y (nblocks * block_elems floats). */
typedef void (*td__gq_kernel)(const uint8_t *x, float *y, uint64_t nblocks);

/* The portable kernel of a grid-based i-quant (ggml_iquants.c), or NULL for other types. */
td__gq_kernel td__gq_iq_kernel(td_dtype type);
/* Its AVX2 kernel (ggml_iquants_avx2.c), or NULL; only after td__gq_have_avx2() returned 1. */
td__gq_kernel td__gq_iq_avx2_kernel(td_dtype type);

/* 1 when the CPU and OS support AVX2, FMA and F16C (0 on other architectures). Called once,
 * through td__gq_have_avx2. */
int td__gq_avx2_probe(void);
/* The AVX2 kernel for type, or NULL when there is none (the portable one is used then). Only
 * call it after td__gq_have_avx2() returned 1. */
td__gq_kernel td__gq_avx2_kernel(td_dtype type);
/* F16C / AVX2 row conversions, bit-identical to td__gq_f32_to_f16 and td__gq_f32_to_bf16. */
void td__gq_avx2_f32_to_f16(const float *in, uint16_t *out, size_t n);
void td__gq_avx2_f32_to_bf16(const float *in, uint16_t *out, size_t n);

#endif

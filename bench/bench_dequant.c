/*
 * bench_dequant.c - dequantization throughput: ours against ggml's to_float, same rows, same run.
 *
 * usage: bench_dequant [-n ELEMS] [-r REPS] [-t TYPE] [--markdown]
 *
 * The oracle is llama.cpp's libggml-base.so from @node-llama-cpp/linux-x64@3.21.1
 * (scripts/install-oracle.sh), at $TD_ORACLE_LIB (bench/run.sh sets it). Without it only our own
 * numbers are printed.
 *
 * For each type: ELEMS (default 4M) float32 values of Gaussian noise, quantized by ggml
 * (ggml_quantize_chunk, with an importance matrix of ones for the i-quants that need one; q8_k:
 * quantize_row_q8_K_ref; q8_1: quantize_row_q8_1_ref), then decoded REPS times (default 21) by
 * each contender, alternating, on one thread unless the column says otherwise. Reported: the
 * median time of each, as millions of output elements per second (and GB/s of float32 written),
 * and the ratio ours / ggml. Every result is compared bit for bit with ggml's before timing.
 * q8_1 has no to_float in ggml: its ggml column is q8_0's to_float on the same d and values
 * (the same values in 34-byte blocks, made before timing), the closest thing ggml has.
 *
 * Columns: ggml = to_float; portable = our plain C kernels; auto = our run-time choice (AVX2
 * when the CPU has it), one thread; threaded = td__gq_dequantize with automatic threads;
 * f16 = ours to float16 (decode + round, one thread) against ggml's to_float followed by
 * ggml_fp32_to_fp16_row.
 */
#include "dtype.h"
#include "ggml_quants.h"

#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef void (*to_float_t)(const void *x, float *y, int64_t k);
typedef void (*from_float_t)(const float *x, void *y, int64_t k);

/* ggml.h of that release: struct ggml_type_traits (checked at run time). */
struct gg_type_traits {
    const char *type_name;
    int64_t blck_size;
    int64_t blck_size_interleave;
    size_t type_size;
    _Bool is_quantized;
    to_float_t to_float;
    from_float_t from_float_ref;
};

static struct {
    void *lib;
    const struct gg_type_traits *(*traits)(int);
    size_t (*quantize_chunk)(int, const float *, void *, int64_t, int64_t, int64_t, const float *);
    void (*quantize_init)(int);
    int64_t (*blck_size)(int);
    size_t (*type_size)(int);
    void (*fp32_to_fp16_row)(const float *, uint16_t *, int64_t);
    _Bool (*requires_imatrix)(int);
} G;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static int load_oracle(void)
{
    const char *p = getenv("TD_ORACLE_LIB");
    if (!p || !*p) {
        fprintf(stderr, "bench_dequant: TD_ORACLE_LIB is not set: ggml columns left empty\n");
        return -1;
    }
    G.lib = dlopen(p, RTLD_NOW | RTLD_LOCAL);
    if (!G.lib) {
        fprintf(stderr, "bench_dequant: no oracle (%s): ggml columns left empty\n", dlerror());
        return -1;
    }
    *(void **)&G.traits = dlsym(G.lib, "ggml_get_type_traits");
    *(void **)&G.quantize_chunk = dlsym(G.lib, "ggml_quantize_chunk");
    *(void **)&G.quantize_init = dlsym(G.lib, "ggml_quantize_init");
    *(void **)&G.blck_size = dlsym(G.lib, "ggml_blck_size");
    *(void **)&G.type_size = dlsym(G.lib, "ggml_type_size");
    *(void **)&G.fp32_to_fp16_row = dlsym(G.lib, "ggml_fp32_to_fp16_row");
    *(void **)&G.requires_imatrix = dlsym(G.lib, "ggml_quantize_requires_imatrix");
    if (!G.traits || !G.quantize_chunk || !G.quantize_init || !G.blck_size || !G.type_size ||
        !G.fp32_to_fp16_row || !G.requires_imatrix) {
        fprintf(stderr, "bench_dequant: %s lacks symbols\n", p);
        dlclose(G.lib);
        G.lib = NULL;
        return -1;
    }
    const struct gg_type_traits *t = G.traits(2); /* q4_0 */
    if (t->blck_size != 32 || t->type_size != 18 || G.blck_size(12) != 256) {
        fprintf(stderr, "bench_dequant: unexpected struct ggml_type_traits layout\n");
        dlclose(G.lib);
        G.lib = NULL;
        return -1;
    }
    return 0;
}

static uint64_t g_rs = 42;
static float rnorm(void)
{
    uint64_t a = (g_rs = g_rs * 6364136223846793005ull + 1442695040888963407ull);
    uint64_t b = (g_rs = g_rs * 6364136223846793005ull + 1442695040888963407ull);
    double u = ((double)(a >> 11) + 1) * 0x1p-53, v = (double)(b >> 11) * 0x1p-53;
    return (float)(sqrt(-2 * log(u)) * cos(2 * M_PI * v));
}

/* Quantized rows of type: by ggml when it is there, else random bytes with sane scales. */
static void make_blocks(td_dtype t, const float *src, size_t n, uint8_t *q, size_t nbytes)
{
    int id = td__dtype_ggml_id(t);
    if (G.lib) {
        if (t == TD_Q8_K || t == TD_Q8_1) {
            from_float_t f;
            *(void **)&f =
                dlsym(G.lib, t == TD_Q8_K ? "quantize_row_q8_K_ref" : "quantize_row_q8_1_ref");
            if (f) {
                f(src, q, (int64_t)n);
                return;
            }
        } else {
            static float ones[4096];
            for (int i = 0; i < 4096; i++)
                ones[i] = 1.0f;
            G.quantize_init(id);
            G.quantize_chunk(id, src, q, 0, (int64_t)(n / 4096), 4096,
                             G.requires_imatrix(id) ? ones : NULL);
            return;
        }
    }
    for (size_t i = 0; i < nbytes; i++)
        q[i] = (uint8_t)(rnorm() * 50);
}

typedef struct row {
    double ggml, portable, autom, threaded, ggml16, ours16;
} row;

int main(int argc, char **argv)
{
    size_t n = 4u << 20;
    int reps = 21, markdown = 0;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-n") && i + 1 < argc)
            n = (size_t)strtoull(argv[++i], NULL, 0) / 4096 * 4096;
        else if (!strcmp(argv[i], "-r") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-t") && i + 1 < argc)
            only = argv[++i];
        else if (!strcmp(argv[i], "--markdown"))
            markdown = 1;
        else {
            fprintf(stderr, "usage: %s [-n ELEMS] [-r REPS] [-t TYPE] [--markdown]\n", argv[0]);
            return 2;
        }
    }
    if (n < 4096 || reps < 1 || reps > 1001) {
        fprintf(stderr, "bench_dequant: -n at least 4096, -r 1..1001\n");
        return 2;
    }
    load_oracle();
    float *src = malloc(n * 4), *ref = malloc(n * 4), *out = malloc(n * 4);
    uint16_t *h = malloc(n * 2);
    uint8_t *q = malloc(n / 256 * 292 + n / 32 * 36);
    uint8_t *q80 = malloc(n / 32 * 34); /* q8_1 as q8_0, for ggml's column */
    double *ts = malloc((size_t)reps * 6 * sizeof(double));
    if (!src || !ref || !out || !h || !q || !q80 || !ts) {
        fprintf(stderr, "bench_dequant: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < n; i++)
        src[i] = rnorm();

    printf("# dequantize %zu elements per call, median of %d, %s, ggml: %s\n", n, reps,
           td__gq_have_avx2() ? "AVX2 available" : "no AVX2",
           G.lib ? "libggml-base.so 3.21.1" : "none");
    if (markdown) {
        printf("| type | ggml to_float Melem/s | ours portable | ours auto | auto/ggml | "
               "threaded | f16: ggml+fp16_row | f16: ours | f16 ratio |\n");
        printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    } else {
        printf("%-7s %10s %10s %10s %8s %10s %10s %10s %8s  (Melem/s; ratio = ours/ggml)\n", "type",
               "ggml", "portable", "auto", "ratio", "threaded", "ggml-f16", "ours-f16", "ratio");
    }
    int bad = 0, q81 = 0;
    for (int t = 0; t < TD_DTYPE_COUNT; t++) {
        if (!td__gq_supported((td_dtype)t))
            continue;
        if (only && strcmp(only, td_dtype_name((td_dtype)t)))
            continue;
        size_t be, bb;
        td_dtype_block((td_dtype)t, &be, &bb);
        size_t nb = n / be;
        make_blocks((td_dtype)t, src, n, q, nb * bb);
        to_float_t tf = NULL;
        const void *gq = q; /* what ggml's column decodes */
        if (G.lib) {
            tf = G.traits(td__dtype_ggml_id((td_dtype)t))->to_float;
            if (!tf) {
                char sym[64];
                snprintf(sym, sizeof sym, "dequantize_row_%s",
                         G.traits(td__dtype_ggml_id((td_dtype)t))->type_name);
                *(void **)&tf = dlsym(G.lib, sym);
            }
            if (!tf && t == TD_Q8_1) {
                tf = G.traits(td__dtype_ggml_id(TD_Q8_0))->to_float;
                for (size_t i = 0; i < nb; i++) {
                    memcpy(q80 + 34 * i, q + 36 * i, 2);
                    memcpy(q80 + 34 * i + 2, q + 36 * i + 4, 32);
                }
                gq = q80;
            }
        }
        td_error err = {0};
        td__gq_options thr = {0, GQ_ISA_AUTO};
        /* correctness first */
        if (tf) {
            tf(gq, ref, (int64_t)n);
            td__gq_dequantize_blocks((td_dtype)t, q, nb, out, GQ_ISA_AUTO, &err);
            if (memcmp(ref, out, n * 4)) {
                fprintf(stderr, "%s: MISMATCH with ggml\n", td_dtype_name((td_dtype)t));
                bad = 1;
            }
        }
        double *tg = ts, *tp = ts + reps, *ta = ts + 2 * reps, *tt = ts + 3 * reps;
        double *tg16 = ts + 4 * reps, *to16 = ts + 5 * reps;
        for (int r = 0; r < reps; r++) {
            double t0;
            if (tf) {
                t0 = now();
                tf(gq, out, (int64_t)n);
                tg[r] = now() - t0;
                t0 = now();
                tf(gq, out, (int64_t)n);
                G.fp32_to_fp16_row(out, h, (int64_t)n);
                tg16[r] = now() - t0;
            }
            t0 = now();
            td__gq_dequantize_blocks((td_dtype)t, q, nb, out, GQ_ISA_PORTABLE, &err);
            tp[r] = now() - t0;
            t0 = now();
            td__gq_dequantize_blocks((td_dtype)t, q, nb, out, GQ_ISA_AUTO, &err);
            ta[r] = now() - t0;
            t0 = now();
            td__gq_dequantize((td_dtype)t, q, nb * bb, n, 4096, TD_FLOAT32, out, n * 4, &thr, NULL,
                              &err);
            tt[r] = now() - t0;
            td__gq_options one = {1, GQ_ISA_AUTO};
            t0 = now();
            td__gq_dequantize((td_dtype)t, q, nb * bb, n, 4096, TD_FLOAT16, h, n * 2, &one, NULL,
                              &err);
            to16[r] = now() - t0;
        }
        double me = (double)n * 1e-6;
        row rw = {tf ? me / median(tg, reps) : NAN,
                  me / median(tp, reps),
                  me / median(ta, reps),
                  me / median(tt, reps),
                  tf ? me / median(tg16, reps) : NAN,
                  me / median(to16, reps)};
        if (markdown)
            printf("| %s | %.0f | %.0f | %.0f | %.2fx | %.0f | %.0f | %.0f | %.2fx |\n",
                   td_dtype_name((td_dtype)t), rw.ggml, rw.portable, rw.autom, rw.autom / rw.ggml,
                   rw.threaded, rw.ggml16, rw.ours16, rw.ours16 / rw.ggml16);
        else
            printf("%-7s %10.0f %10.0f %10.0f %7.2fx %10.0f %10.0f %10.0f %7.2fx\n",
                   td_dtype_name((td_dtype)t), rw.ggml, rw.portable, rw.autom, rw.autom / rw.ggml,
                   rw.threaded, rw.ggml16, rw.ours16, rw.ours16 / rw.ggml16);
        fflush(stdout);
        if (t == TD_Q8_1 && tf)
            q81 = 1;
    }
    if (q81)
        printf("\nq8_1: ggml has no to_float for it; its ggml columns time q8_0's to_float on "
               "the same values (as 34-byte q8_0 blocks), which is also its reference.\n");
    free(src);
    free(ref);
    free(out);
    free(h);
    free(q);
    free(q80);
    free(ts);
    if (G.lib)
        dlclose(G.lib);
    return bad;
}

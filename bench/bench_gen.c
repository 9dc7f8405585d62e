/*
 * bench_gen - writes the model files the benchmarks load, with libtensord's own savers.
 *
 *   bench_gen --out PATH --format npy|npz|npzc|safetensors|gguf --bytes SIZE
 *             [--tensors K] [--fill random|weights|smooth] [--dtype float32|q4_0] [--seed N]
 *   bench_gen --out PATH --format FMT --from FILE
 *
 * The first form makes K one-dimensional float32 tensors (or K two-dimensional q4_0 tensors of
 * rows of 4096 elements) named "layers.NNNNN.weight" whose sizes add up to SIZE (rounded down
 * to whole elements or rows), filled as bench_util.h describes. "npzc" is a deflated npz
 * (td_savez_compressed). The second form loads FILE (embedded, zero-copy) and saves the same
 * tensors in another format, so that a 4 GiB model never needs a second 4 GiB in memory.
 *
 * The savers fsync, so a file is on disk and in the page cache when this returns.
 */
#include "tensord.h"

#include "bench_util.h"

#include <getopt.h>
#include <inttypes.h>

#define Q4_0_ROW 4096 /* elements per q4_0 row */

/* One q4_0 block is an f16 scale then 16 bytes of nibbles: keep the scales small and finite. */
static void fill_q4_0(uint8_t *p, size_t nbytes, uint64_t seed)
{
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 7;
    for (size_t off = 0; off + 18 <= nbytes; off += 18) {
        uint64_t r = bu_rand(&s);
        uint16_t scale = (uint16_t)(0x2000 + (r & 0x0fff)); /* about 0.008 .. 0.06 */
        memcpy(p + off, &scale, 2);
        uint64_t a = bu_rand(&s), b = bu_rand(&s);
        memcpy(p + off + 2, &a, 8);
        memcpy(p + off + 10, &b, 8);
    }
}

static int save(const char *fmt, const char *out, td_dict *d, td_error *err)
{
    if (!strcmp(fmt, "npy"))
        return td_save(out, td_dict_at(d, 0, NULL), err);
    if (!strcmp(fmt, "npz"))
        return td_savez(out, d, err);
    if (!strcmp(fmt, "npzc"))
        return td_savez_compressed(out, d, err);
    if (!strcmp(fmt, "safetensors"))
        return td_save_safetensors(out, d, NULL, err);
    if (!strcmp(fmt, "gguf"))
        return td_save_gguf(out, d, NULL, err);
    bu_die("unknown format '%s'", fmt);
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_gen --out PATH --format npy|npz|npzc|safetensors|gguf "
                    "(--bytes SIZE [--tensors K] [--fill random|weights|smooth] "
                    "[--dtype float32|q4_0] [--seed N] | --from FILE)\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *out = NULL, *fmt = NULL, *from = NULL, *dtype = "float32";
    uint64_t bytes = 0, tensors = 1, seed = 1;
    bu_fill fill = BU_FILL_RANDOM;
    static const struct option opts[] = {{"out", required_argument, 0, 'o'},
                                         {"format", required_argument, 0, 'f'},
                                         {"bytes", required_argument, 0, 'b'},
                                         {"tensors", required_argument, 0, 't'},
                                         {"fill", required_argument, 0, 'F'},
                                         {"dtype", required_argument, 0, 'd'},
                                         {"seed", required_argument, 0, 's'},
                                         {"from", required_argument, 0, 'r'},
                                         {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'o':
            out = optarg;
            break;
        case 'f':
            fmt = optarg;
            break;
        case 'b':
            if (bu_parse_size(optarg, &bytes))
                bu_die("bad --bytes '%s'", optarg);
            break;
        case 't':
            tensors = strtoull(optarg, NULL, 10);
            break;
        case 'F':
            if (bu_fill_parse(optarg, &fill))
                bu_die("bad --fill '%s'", optarg);
            break;
        case 'd':
            dtype = optarg;
            break;
        case 's':
            seed = strtoull(optarg, NULL, 10);
            break;
        case 'r':
            from = optarg;
            break;
        default:
            usage();
        }
    }
    if (!out || !fmt || (!from && (!bytes || !tensors)))
        usage();

    td_error err = {0};
    td_dict *d = NULL;
    uint64_t t0 = bu_now_ns();
    if (from) {
        td_load_options opt = TD_LOAD_OPTIONS_INIT;
        opt.mode = TD_MODE_EMBEDDED;
        td_dict *src;
        if (td_load(from, &opt, &src, NULL, &err))
            bu_die("%s", err.message);
        /* A bare .npy loads as one unnamed entry, which only npy and npz can save: name it. */
        d = td_dict_new();
        if (!d)
            bu_die("out of memory");
        for (size_t i = 0; i < td_dict_size(src); i++) {
            const char *name;
            const td_array *a = td_dict_at(src, i, &name);
            char def[32];
            if (!name) {
                snprintf(def, sizeof def, "tensor_%zu", i);
                name = def;
            }
            if (td_dict_set(d, name, a, &err))
                bu_die("%s", err.message);
        }
        td_dict_free(src);
    } else {
        int q4 = !strcmp(dtype, "q4_0");
        if (!q4 && strcmp(dtype, "float32"))
            bu_die("--dtype must be float32 or q4_0");
        /* Per-tensor size in units (elements, or rows for q4_0); the last takes the rest. */
        uint64_t unit = q4 ? Q4_0_ROW / 32 * 18 : 4;
        uint64_t units = bytes / unit;
        if (units < tensors)
            bu_die("%" PRIu64 " bytes cannot hold %" PRIu64 " tensors", bytes, tensors);
        d = td_dict_new();
        if (!d)
            bu_die("out of memory");
        for (uint64_t i = 0; i < tensors; i++) {
            uint64_t n = units / tensors + (i == tensors - 1 ? units % tensors : 0);
            int64_t shape[2] = {(int64_t)n, Q4_0_ROW};
            td_array *a;
            if (td_array_new(q4 ? TD_Q4_0 : TD_FLOAT32, q4 ? 2 : 1, shape, NULL, &a, &err))
                bu_die("%s", err.message);
            if (q4)
                fill_q4_0(td_array_data_mut(a), td_array_nbytes(a), seed + i);
            else
                bu_fill_bytes(td_array_data_mut(a), td_array_nbytes(a), fill, seed + i);
            char name[64];
            snprintf(name, sizeof name, "layers.%05" PRIu64 ".weight", i);
            if (td_dict_set(d, name, a, &err))
                bu_die("%s", err.message);
            td_array_release(a);
        }
    }
    uint64_t t1 = bu_now_ns();
    if (save(fmt, out, d, &err))
        bu_die("%s", err.message);
    uint64_t t2 = bu_now_ns();
    fprintf(stderr, "bench_gen: %s: %zu tensors, made in %.2f s, saved in %.2f s\n", out,
            td_dict_size(d), (double)(t1 - t0) / 1e9, (double)(t2 - t1) / 1e9);
    td_dict_free(d);
    return 0;
}

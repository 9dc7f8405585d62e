/*
 * bench_save - save throughput against a raw write() of the same bytes, and the deflate engine.
 *
 *   bench_save --dir DIR [--bytes SIZE] [--tensors K] [--zbytes SIZE] [--ztensors K]
 *              [--repeats N] [--export PATH]
 *
 * Plain saves: SIZE bytes of weight-like float32 (bench_util.h "weights"), as one array for
 * td_save (.npy) and as K arrays viewing slices of it for td_save_safetensors. The baseline is
 * the plainest durable write of the same bytes: open a new file, write() everything, fsync,
 * close (td_save* fsync too: a save is atomic and durable). The same raw write without fsync is
 * printed for information. The methods take turns within each repeat, and the files are
 * removed (untimed) after each save; the figure is the median throughput.
 *
 * Compressed saves: ZSIZE bytes (same fill) as ZK arrays, timed through td_savez_compressed.
 * --export writes these arrays as a stored npz, for bench/numpy_bench.py savez to time numpy's
 * savez_compressed on the very same arrays. Then the engines alone, on the same bytes: zlib's
 * deflate at level 6 and, when built with it, libdeflate at level 6, with their CRC-32s (the
 * result line of td_savez_compressed names the engine the library was built with).
 */
#include "tensord.h"

#include "bench_util.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <unistd.h>
#include <zlib.h>
#ifdef TD_BENCH_HAVE_LIBDEFLATE
#include <libdeflate.h>
#endif

#define MAX_REPEATS 64

/* The library's deflate engine ("zlib" or "libdeflate"), from formats/flate.c; weak, so that
 * this program still links (and says "unknown") should the function go. */
__attribute__((weak)) const char *td__flate_engine(void);

static void write_all(int fd, const uint8_t *p, size_t n, const char *path)
{
    while (n) {
        ssize_t k = write(fd, p, n > (1u << 30) ? (1u << 30) : n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            bu_die("%s: write: %s", path, strerror(errno));
        p += k;
        n -= (size_t)k;
    }
}

/* The raw baseline: a new file, write(), fsync (when sync), close. Returns seconds. */
static double raw_write(const char *path, const uint8_t *p, size_t n, int sync)
{
    uint64_t t0 = bu_now_ns();
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        bu_die("%s: %s", path, strerror(errno));
    write_all(fd, p, n, path);
    if (sync && fsync(fd) < 0)
        bu_die("%s: fsync: %s", path, strerror(errno));
    if (close(fd) < 0)
        bu_die("%s: close: %s", path, strerror(errno));
    double s = (double)(bu_now_ns() - t0) / 1e9;
    unlink(path);
    return s;
}

/* A dict of k arrays viewing consecutive slices of buf (n bytes of float32). */
static td_dict *slices(uint8_t *buf, size_t n, size_t k)
{
    td_dict *d = td_dict_new();
    td_error err = {0};
    size_t elems = n / 4, per = elems / k;
    for (size_t i = 0; i < k; i++) {
        int64_t len = (int64_t)(per + (i == k - 1 ? elems % k : 0));
        td_array *a;
        if (td_array_wrap(TD_FLOAT32, 1, &len, buf + i * per * 4, NULL, NULL, &a, &err))
            bu_die("%s", err.message);
        char name[48];
        snprintf(name, sizeof name, "layers.%05zu.weight", i);
        if (td_dict_set(d, name, a, &err))
            bu_die("%s", err.message);
        td_array_release(a);
    }
    return d;
}

typedef int (*save_fn)(const char *path, const td_dict *d, td_error *err);

static int save_npy(const char *path, const td_dict *d, td_error *err)
{
    return td_save(path, td_dict_at(d, 0, NULL), err);
}

static int save_st(const char *path, const td_dict *d, td_error *err)
{
    return td_save_safetensors(path, d, NULL, err);
}

static double timed_save(save_fn f, const char *path, const td_dict *d)
{
    td_error err = {0};
    uint64_t t0 = bu_now_ns();
    if (f(path, d, &err))
        bu_die("%s", err.message);
    double s = (double)(bu_now_ns() - t0) / 1e9;
    unlink(path);
    return s;
}

static void result(const char *what, size_t bytes, double *secs, int n, const char *extra)
{
    double med = bu_quantile(secs, (size_t)n, 0.5);
    printf("RESULT bench=save method=%s bytes=%zu n=%d median_s=%.4f mb_s=%.1f%s%s status=ok\n",
           what, bytes, n, med, (double)bytes / med / 1e6, extra ? " " : "", extra ? extra : "");
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_save --dir DIR [--bytes SIZE] [--tensors K] [--zbytes SIZE] "
                    "[--ztensors K] [--repeats N] [--export PATH]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *dir = NULL, *export = NULL;
    uint64_t bytes = 256u << 20, zbytes = 32u << 20;
    size_t tensors = 300, ztensors = 16;
    int repeats = 5;
    static const struct option opts[] = {
        {"dir", required_argument, 0, 'd'},      {"bytes", required_argument, 0, 'b'},
        {"tensors", required_argument, 0, 't'},  {"zbytes", required_argument, 0, 'z'},
        {"ztensors", required_argument, 0, 'Z'}, {"repeats", required_argument, 0, 'r'},
        {"export", required_argument, 0, 'e'},   {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            dir = optarg;
            break;
        case 'b':
            if (bu_parse_size(optarg, &bytes))
                usage();
            break;
        case 't':
            tensors = strtoull(optarg, NULL, 10);
            break;
        case 'z':
            if (bu_parse_size(optarg, &zbytes))
                usage();
            break;
        case 'Z':
            ztensors = strtoull(optarg, NULL, 10);
            break;
        case 'r':
            repeats = atoi(optarg);
            break;
        case 'e':
            export = optarg;
            break;
        default:
            usage();
        }
    }
    if (!dir || repeats < 1 || repeats > MAX_REPEATS || !tensors || !ztensors || bytes % 4 ||
        zbytes % 4)
        usage();

    /* ---- plain saves ---- */
    uint8_t *buf = malloc(bytes);
    if (!buf)
        bu_die("out of memory");
    bu_fill_bytes(buf, bytes, BU_FILL_WEIGHTS, 11);
    td_dict *one = slices(buf, bytes, 1), *many = slices(buf, bytes, tensors);
    char raw[1024], npy[1024], st[1024];
    snprintf(raw, sizeof raw, "%s/save-raw.bin", dir);
    snprintf(npy, sizeof npy, "%s/save.npy", dir);
    snprintf(st, sizeof st, "%s/save.safetensors", dir);
    /* One untimed round so that the allocator, the file system and the cache are warm. */
    raw_write(raw, buf, bytes, 1);
    timed_save(save_npy, npy, one);
    timed_save(save_st, st, many);
    double t_raw[MAX_REPEATS], t_nosync[MAX_REPEATS], t_npy[MAX_REPEATS], t_st[MAX_REPEATS];
    for (int r = 0; r < repeats; r++) {
        t_raw[r] = raw_write(raw, buf, bytes, 1);
        t_npy[r] = timed_save(save_npy, npy, one);
        t_st[r] = timed_save(save_st, st, many);
        t_nosync[r] = raw_write(raw, buf, bytes, 0);
    }
    double m_raw = bu_quantile(t_raw, (size_t)repeats, 0.5);
    char extra[128];
    result("raw_write_fsync", bytes, t_raw, repeats, NULL);
    result("raw_write_nofsync", bytes, t_nosync, repeats, NULL);
    snprintf(extra, sizeof extra, "vs_raw=%.3f tensors=1",
             m_raw / bu_quantile(t_npy, (size_t)repeats, 0.5));
    result("td_save", bytes, t_npy, repeats, extra);
    snprintf(extra, sizeof extra, "vs_raw=%.3f tensors=%zu",
             m_raw / bu_quantile(t_st, (size_t)repeats, 0.5), tensors);
    result("td_save_safetensors", bytes, t_st, repeats, extra);
    td_dict_free(one);
    td_dict_free(many);
    free(buf);

    /* ---- compressed saves ---- */
    uint8_t *zb = malloc(zbytes);
    if (!zb)
        bu_die("out of memory");
    bu_fill_bytes(zb, zbytes, BU_FILL_WEIGHTS, 23);
    td_dict *zd = slices(zb, zbytes, ztensors);
    td_error err = {0};
    if (export && td_savez(export, zd, &err))
        bu_die("%s", err.message);
    char npz[1024];
    snprintf(npz, sizeof npz, "%s/save.npz", dir);
    int zrep = repeats < 3 ? repeats : 3;
    double t_z[MAX_REPEATS];
    uint64_t csize = 0;
    for (int r = 0; r < zrep; r++) {
        uint64_t t0 = bu_now_ns();
        if (td_savez_compressed(npz, zd, &err))
            bu_die("%s", err.message);
        t_z[r] = (double)(bu_now_ns() - t0) / 1e9;
        FILE *f = fopen(npz, "rb");
        if (f) {
            fseek(f, 0, SEEK_END);
            csize = (uint64_t)ftell(f);
            fclose(f);
        }
        unlink(npz);
    }
    snprintf(extra, sizeof extra, "tensors=%zu compressed_bytes=%llu engine=%s", ztensors,
             (unsigned long long)csize, td__flate_engine ? td__flate_engine() : "unknown");
    result("td_savez_compressed", zbytes, t_z, zrep, extra);
    td_dict_free(zd);

    /* ---- the engines alone, same bytes, level 6 ---- */
    uLongf zcap = compressBound((uLong)zbytes);
    uint8_t *out = malloc(zcap);
    if (!out)
        bu_die("out of memory");
    double t_zlib[MAX_REPEATS], t_ld[MAX_REPEATS], t_zinf[MAX_REPEATS], t_ldinf[MAX_REPEATS];
    uint8_t *back = malloc(zbytes);
    if (!back)
        bu_die("out of memory");
    uLongf zlen = 0;
    for (int r = 0; r < zrep; r++) {
        uint64_t t0 = bu_now_ns();
        z_stream zs;
        memset(&zs, 0, sizeof zs);
        if (deflateInit2(&zs, 6, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
            bu_die("deflateInit2");
        zs.next_in = zb;
        zs.avail_in = (uInt)zbytes;
        zs.next_out = out;
        zs.avail_out = (uInt)zcap;
        if (deflate(&zs, Z_FINISH) != Z_STREAM_END)
            bu_die("deflate");
        zlen = zs.total_out;
        deflateEnd(&zs);
        volatile uLong crc = crc32(0, zb, (uInt)zbytes);
        (void)crc;
        t_zlib[r] = (double)(bu_now_ns() - t0) / 1e9;
        t0 = bu_now_ns();
        memset(&zs, 0, sizeof zs);
        if (inflateInit2(&zs, -MAX_WBITS) != Z_OK)
            bu_die("inflateInit2");
        zs.next_in = out;
        zs.avail_in = (uInt)zlen;
        zs.next_out = back;
        zs.avail_out = (uInt)zbytes;
        if (inflate(&zs, Z_FINISH) != Z_STREAM_END)
            bu_die("inflate");
        inflateEnd(&zs);
        crc = crc32(0, back, (uInt)zbytes);
        t_zinf[r] = (double)(bu_now_ns() - t0) / 1e9;
    }
    snprintf(extra, sizeof extra, "ratio=%.4f", (double)zlen / (double)zbytes);
    result("engine_zlib6_deflate_crc", zbytes, t_zlib, zrep, extra);
    result("engine_zlib_inflate_crc", zbytes, t_zinf, zrep, NULL);
#ifdef TD_BENCH_HAVE_LIBDEFLATE
    struct libdeflate_compressor *lc = libdeflate_alloc_compressor(6);
    struct libdeflate_decompressor *ld = libdeflate_alloc_decompressor();
    size_t lcap = libdeflate_deflate_compress_bound(lc, zbytes);
    uint8_t *lout = malloc(lcap);
    if (!lc || !ld || !lout)
        bu_die("libdeflate: out of memory");
    size_t llen = 0;
    for (int r = 0; r < zrep; r++) {
        uint64_t t0 = bu_now_ns();
        llen = libdeflate_deflate_compress(lc, zb, zbytes, lout, lcap);
        volatile uint32_t crc = libdeflate_crc32(0, zb, zbytes);
        (void)crc;
        t_ld[r] = (double)(bu_now_ns() - t0) / 1e9;
        if (!llen)
            bu_die("libdeflate_deflate_compress failed");
        t0 = bu_now_ns();
        if (libdeflate_deflate_decompress(ld, lout, llen, back, zbytes, NULL) != LIBDEFLATE_SUCCESS)
            bu_die("libdeflate_deflate_decompress failed");
        crc = libdeflate_crc32(0, back, zbytes);
        t_ldinf[r] = (double)(bu_now_ns() - t0) / 1e9;
    }
    snprintf(extra, sizeof extra, "ratio=%.4f", (double)llen / (double)zbytes);
    result("engine_libdeflate6_deflate_crc", zbytes, t_ld, zrep, extra);
    result("engine_libdeflate_inflate_crc", zbytes, t_ldinf, zrep, NULL);
    libdeflate_free_compressor(lc);
    libdeflate_free_decompressor(ld);
    free(lout);
#else
    (void)t_ld;
    (void)t_ldinf;
    printf("RESULT bench=save method=engine_libdeflate6_deflate_crc status=na\n");
#endif
    free(back);
    free(out);
    free(zb);
    return 0;
}

/*
 * bench_load - warm load latency of one file by one method.
 *
 *   bench_load --method METHOD --file PATH [--socket PATH] [--repeats N] [--warmup N]
 *              [--max-seconds S] [--min-repeats N] [--rss] [--label TEXT]
 *
 * METHOD:
 *   embedded     td_load, TD_MODE_EMBEDDED (maps the file, indexes it, builds views)
 *   daemon       td_load, TD_MODE_DAEMON through tensord at --socket ($TENSORD_SOCKET): a
 *                connection of its own per load
 *   client       td_client_load through one td_client kept open (connected before timing)
 *   readcopy     the plain loader: open, fstat, malloc the size, read() it all, close
 *   readcopy-thp the same into an anonymous mapping advised MADV_HUGEPAGE (what numpy does for
 *                large arrays): far fewer page faults, the best case of a copying loader
 *   llama        llama.cpp's gguf_init_from_file(no_alloc = true, with a ggml context): what
 *                llama.cpp does before it maps the data itself
 *   llama-alloc  gguf_init_from_file(no_alloc = false): reads every tensor into memory
 *
 * The llama methods dlopen libggml-base.so from @node-llama-cpp/linux-x64@3.21.1
 * (scripts/install-oracle.sh) at $TD_ORACLE_LIB (bench/run.sh sets it). When it is missing the
 * result says status=na.
 *
 * A measurement is: the load, timed; then the release of everything it returned, untimed.
 * --warmup loads (default 2) run first, so the file is in the page cache and the process warm;
 * then up to --repeats (default 31) timed loads, stopping early once --max-seconds (default 5)
 * have passed and at least --min-repeats (default 3) were taken. Prints the median, minimum and
 * 90th percentile.
 *
 * --rss: before the timed loads, also measure how much this process's resident set grows over
 * one load whose result is kept (VmRSS after minus before, and its anonymous and file-backed
 * parts: RssAnon is memory the load allocated, RssFile page-cache pages it mapped, e.g. the
 * header's page and the kernel's fault-around), which for a zero-copy loader must not depend on
 * the file's size.
 */
#include "tensord.h"

#include "bench_util.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ggml's ABI at @node-llama-cpp/linux-x64@3.21.1 (see tests/unit/test_gguf_llama.c). */
struct o_gguf_init_params {
    bool no_alloc;
    void **ctx;
};

typedef struct llama_api {
    void *(*init_from_file)(const char *, struct o_gguf_init_params);
    void (*gguf_free)(void *);
    void (*ggml_free)(void *);
    int64_t (*n_tensors)(const void *);
} llama_api;

typedef struct loader {
    const char *method;
    const char *file;
    td_load_options opt;
    llama_api ll;
    int no_alloc;
    td_client *client; /* method client */
} loader;

/* What one load returned, to release after the clock stops. */
typedef struct loaded {
    td_dict *dict;
    void *buf;
    size_t map_len; /* buf is an anonymous mapping of this size (readcopy-thp) */
    void *gguf, *ggml;
    size_t count; /* tensors (or bytes for readcopy) */
} loaded;

static int llama_open(llama_api *ll, char *path, size_t cap)
{
    const char *lib = getenv("TD_ORACLE_LIB");
    if (!lib || !*lib)
        return -1;
    snprintf(path, cap, "%s", lib);
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h)
        return -1;
    *(void **)&ll->init_from_file = dlsym(h, "gguf_init_from_file");
    *(void **)&ll->gguf_free = dlsym(h, "gguf_free");
    *(void **)&ll->ggml_free = dlsym(h, "ggml_free");
    *(void **)&ll->n_tensors = dlsym(h, "gguf_get_n_tensors");
    return ll->init_from_file && ll->gguf_free && ll->ggml_free && ll->n_tensors ? 0 : -1;
}

static int readcopy(const char *path, int thp, loaded *out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        close(fd);
        return -1;
    }
    size_t n = (size_t)st.st_size, got = 0, map_len = 0;
    uint8_t *buf;
    if (thp) {
        map_len = (n + (2u << 20) - 1) & ~(size_t)((2u << 20) - 1);
        buf = mmap(NULL, map_len ? map_len : 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
        if (buf == MAP_FAILED)
            buf = NULL;
        else
            madvise(buf, map_len, MADV_HUGEPAGE);
    } else {
        buf = malloc(n ? n : 1);
    }
    int ok = buf != NULL;
    while (ok && got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            ok = 0;
        else
            got += (size_t)r;
    }
    close(fd);
    if (!ok) {
        if (buf && thp)
            munmap(buf, map_len);
        else
            free(buf);
        return -1;
    }
    out->buf = buf;
    out->map_len = map_len;
    out->count = n;
    return 0;
}

/* One load by l's method into *out. Dies on failure: a benchmark of a failing load is void. */
static void load_once(loader *l, loaded *out)
{
    memset(out, 0, sizeof *out);
    td_error err = {0};
    if (l->client) {
        if (td_client_load(l->client, l->file, &l->opt, &out->dict, NULL, &err))
            bu_die("%s: %s (%s)", l->method, err.message, td_err_name(err.code));
        out->count = td_dict_size(out->dict);
    } else if (!strcmp(l->method, "embedded") || !strcmp(l->method, "daemon")) {
        if (td_load(l->file, &l->opt, &out->dict, NULL, &err))
            bu_die("%s: %s (%s)", l->method, err.message, td_err_name(err.code));
        out->count = td_dict_size(out->dict);
    } else if (!strncmp(l->method, "readcopy", 8)) {
        if (readcopy(l->file, !strcmp(l->method, "readcopy-thp"), out))
            bu_die("readcopy %s: %s", l->file, strerror(errno));
    } else {
        struct o_gguf_init_params p = {l->no_alloc, &out->ggml};
        out->gguf = l->ll.init_from_file(l->file, p);
        if (!out->gguf)
            bu_die("gguf_init_from_file(%s) failed", l->file);
        out->count = (size_t)l->ll.n_tensors(out->gguf);
    }
}

static void release(loader *l, loaded *x)
{
    td_dict_free(x->dict);
    if (x->map_len)
        munmap(x->buf, x->map_len);
    else
        free(x->buf);
    if (x->gguf)
        l->ll.gguf_free(x->gguf);
    if (x->ggml)
        l->ll.ggml_free(x->ggml);
}

static void usage(void)
{
    fprintf(
        stderr,
        "usage: bench_load --method embedded|daemon|client|readcopy|readcopy-thp|llama|llama-alloc "
        "--file PATH [--socket PATH] [--repeats N] [--warmup N] [--max-seconds S] "
        "[--min-repeats N] [--rss] [--label TEXT]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    loader l = {0};
    l.opt = (td_load_options)TD_LOAD_OPTIONS_INIT;
    const char *label = "-";
    int repeats = 31, warmup = 2, rss = 0, min_repeats = 3;
    double max_seconds = 5;
    static const struct option opts[] = {{"method", required_argument, 0, 'm'},
                                         {"file", required_argument, 0, 'f'},
                                         {"socket", required_argument, 0, 's'},
                                         {"repeats", required_argument, 0, 'r'},
                                         {"warmup", required_argument, 0, 'w'},
                                         {"max-seconds", required_argument, 0, 'S'},
                                         {"rss", no_argument, 0, 'R'},
                                         {"label", required_argument, 0, 'l'},
                                         {"min-repeats", required_argument, 0, 'M'},
                                         {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            l.method = optarg;
            break;
        case 'f':
            l.file = optarg;
            break;
        case 's':
            l.opt.socket_path = optarg;
            break;
        case 'r':
            repeats = atoi(optarg);
            break;
        case 'w':
            warmup = atoi(optarg);
            break;
        case 'S':
            max_seconds = atof(optarg);
            break;
        case 'M':
            min_repeats = atoi(optarg);
            break;
        case 'R':
            rss = 1;
            break;
        case 'l':
            label = optarg;
            break;
        default:
            usage();
        }
    }
    if (!l.method || !l.file || repeats < 1 || warmup < 0)
        usage();
    if (!strcmp(l.method, "embedded")) {
        l.opt.mode = TD_MODE_EMBEDDED;
    } else if (!strcmp(l.method, "daemon")) {
        l.opt.mode = TD_MODE_DAEMON;
    } else if (!strcmp(l.method, "client")) {
        td_error err = {0};
        if (td_client_connect(l.opt.socket_path, &l.client, &err))
            bu_die("client: %s", err.message);
    } else if (!strcmp(l.method, "llama") || !strcmp(l.method, "llama-alloc")) {
        l.no_alloc = !strcmp(l.method, "llama");
        char path[1024];
        if (llama_open(&l.ll, path, sizeof path)) {
            fprintf(stderr, "bench_load: llama.cpp oracle not available (%s)\n", path);
            printf("RESULT bench=load label=%s method=%s file=%s status=na\n", label, l.method,
                   l.file);
            return 0;
        }
    } else if (strcmp(l.method, "readcopy") && strcmp(l.method, "readcopy-thp")) {
        usage();
    }
    struct stat st;
    if (stat(l.file, &st) < 0)
        bu_die("%s: %s", l.file, strerror(errno));

    loaded x;
    for (int i = 0; i < warmup; i++) {
        load_once(&l, &x);
        release(&l, &x);
    }
    long long rss_growth = -1, anon_growth = -1, file_growth = -1;
    if (rss) {
        long long before = bu_rss_kib();
        long long anon0 = bu_proc_kib("/proc/self/status", "RssAnon");
        long long file0 = bu_proc_kib("/proc/self/status", "RssFile");
        load_once(&l, &x);
        rss_growth = bu_rss_kib() - before;
        anon_growth = bu_proc_kib("/proc/self/status", "RssAnon") - anon0;
        file_growth = bu_proc_kib("/proc/self/status", "RssFile") - file0;
        release(&l, &x);
    }
    double *us = calloc((size_t)repeats, sizeof *us);
    if (!us)
        bu_die("out of memory");
    int n = 0;
    size_t count = 0;
    uint64_t start = bu_now_ns();
    while (n < repeats) {
        uint64_t t0 = bu_now_ns();
        load_once(&l, &x);
        uint64_t t1 = bu_now_ns();
        count = x.count;
        release(&l, &x);
        us[n++] = (double)(t1 - t0) / 1e3;
        if (n >= min_repeats && (double)(bu_now_ns() - start) / 1e9 > max_seconds)
            break;
    }
    double med = bu_quantile(us, (size_t)n, 0.5);
    double p90 = bu_quantile(us, (size_t)n, 0.9);
    double mn = us[0];
    printf("RESULT bench=load label=%s method=%s file=%s bytes=%lld tensors=%zu n=%d "
           "median_us=%.2f min_us=%.2f p90_us=%.2f",
           label, l.method, l.file, (long long)st.st_size,
           strncmp(l.method, "readcopy", 8) ? count : (size_t)0, n, med, mn, p90);
    if (rss)
        printf(" rss_growth_kib=%lld rss_anon_kib=%lld rss_file_kib=%lld", rss_growth, anon_growth,
               file_growth);
    printf(" status=ok\n");
    free(us);
    td_client_close(l.client);
    return 0;
}

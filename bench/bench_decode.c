/*
 * bench_decode - "decode once": the first client's load of a file the daemon must decode
 * (a deflated npz; a GGUF dequantized on load) against the second client's.
 *
 *   bench_decode --file PATH --socket PATH [--rounds N] [--dequantize DTYPE] [--warm-file PATH]
 *                [--label TEXT]
 *
 * Each round: evict the file from the daemon's cache, then a first client process loads it in
 * daemon mode (the daemon decodes it into a sealed memfd) and holds it; then a second client
 * process loads it (served from the cache). Both times are taken inside the clients around
 * td_load alone. With --warm-file, each client first loads that (small, other) file through the
 * daemon, untimed, so that what is timed is the file's own cost and not the process's first
 * use of the library (lazy binding, allocator set-up, copy-on-write faults after fork). The
 * daemon's status confirms that the first load was a miss with one decode and the second a hit. For
 * reference, one embedded load of the same file is timed too: what every process pays for itself
 * without the daemon.
 *
 * When td_load refuses the request with TD_ENOTSUP (dequantization on load not available yet),
 * the result says status=na with the message.
 */
#include "tensord.h"

#include "bench_util.h"

#include <errno.h>
#include <getopt.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_ROUNDS 64

typedef struct report {
    double us;
    int code;
    char message[256];
} report;

/* A client: load, send the report, then hold the views until `hold` closes (hold < 0: exit).
 * The child closes `unused` (the write end of the hold pipe, -1 for none) so that the parent's
 * close is the last. */
static pid_t client(const char *file, const char *warm, const td_load_options *opt, int out,
                    int hold, int unused)
{
    pid_t pid = fork();
    if (pid < 0)
        bu_die("fork: %s", strerror(errno));
    if (pid)
        return pid;
    if (unused >= 0)
        close(unused);
    report r = {0};
    td_dict *d = NULL;
    td_error err = {0};
    if (warm) {
        td_load_options wo = *opt;
        wo.dequantize = TD_DEQUANT_NONE;
        if (td_load(warm, &wo, &d, NULL, &err) == 0)
            td_dict_free(d);
        d = NULL;
    }
    uint64_t t0 = bu_now_ns();
    r.code = td_load(file, opt, &d, NULL, &err);
    r.us = (double)(bu_now_ns() - t0) / 1e3;
    if (r.code)
        snprintf(r.message, sizeof r.message, "%s", err.message);
    if (write(out, &r, sizeof r) != (ssize_t)sizeof r)
        _exit(3);
    if (hold >= 0) {
        char c;
        while (read(hold, &c, 1) < 0 && errno == EINTR)
            ;
    }
    td_dict_free(d);
    _exit(r.code ? 1 : 0);
}

static report collect(int fd, pid_t pid)
{
    report r;
    ssize_t k;
    while ((k = read(fd, &r, sizeof r)) < 0 && errno == EINTR)
        ;
    if (k != (ssize_t)sizeof r)
        bu_die("a client died without reporting (pid %d)", (int)pid);
    return r;
}

static void reap(pid_t pid)
{
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
}

static void stats(td_client *c, uint64_t *misses, uint64_t *hits, uint64_t *decodes)
{
    td_status *s;
    td_error err = {0};
    if (td_client_status(c, &s, &err))
        bu_die("status: %s", err.message);
    *misses = td_status_get(s, TD_STATUS_MISSES);
    *hits = td_status_get(s, TD_STATUS_HITS);
    *decodes = td_status_get(s, TD_STATUS_DECODES);
    td_status_free(s);
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_decode --file PATH --socket PATH [--rounds N] "
                    "[--dequantize DTYPE] [--warm-file PATH] [--label TEXT]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *file = NULL, *label = "-", *warm = NULL;
    int rounds = 3;
    td_load_options opt = TD_LOAD_OPTIONS_INIT;
    static const struct option opts[] = {{"file", required_argument, 0, 'f'},
                                         {"socket", required_argument, 0, 's'},
                                         {"rounds", required_argument, 0, 'r'},
                                         {"dequantize", required_argument, 0, 'd'},
                                         {"label", required_argument, 0, 'l'},
                                         {"warm-file", required_argument, 0, 'w'},
                                         {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'f':
            file = optarg;
            break;
        case 's':
            opt.socket_path = optarg;
            break;
        case 'r':
            rounds = atoi(optarg);
            break;
        case 'd':
            opt.dequantize = !strcmp(optarg, "float32")    ? TD_DEQUANT_F32
                             : !strcmp(optarg, "float16")  ? TD_DEQUANT_F16
                             : !strcmp(optarg, "bfloat16") ? TD_DEQUANT_BF16
                             : !strcmp(optarg, "mlx")      ? TD_DEQUANT_MLX
                                                           : TD_DEQUANT_NONE;
            if (!opt.dequantize)
                bu_die("unknown dequantize target '%s' (float32, float16, bfloat16, mlx)", optarg);
            break;
        case 'l':
            label = optarg;
            break;
        case 'w':
            warm = optarg;
            break;
        default:
            usage();
        }
    }
    if (!file || !opt.socket_path || rounds < 1 || rounds > MAX_ROUNDS)
        usage();

    td_error err = {0};
    td_client *cl;
    if (td_client_connect(opt.socket_path, &cl, &err))
        bu_die("%s", err.message);

    opt.mode = TD_MODE_DAEMON;
    double first[MAX_ROUNDS], second[MAX_ROUNDS];
    int misses_ok = 1;
    for (int r = 0; r < rounds; r++) {
        /* The previous round's clients are gone, but the daemon may not have seen their
         * connections close yet: evict until the entry is gone (or was never there). */
        uint64_t ne = 0;
        for (int tries = 0; tries < 200; tries++) {
            uint64_t e = 0;
            if (td_client_evict(cl, file, &e, NULL, &err))
                bu_die("evict: %s", err.message);
            ne += e;
            if (e || r == 0)
                break;
            usleep(5000);
        }
        uint64_t m0, h0, d0, m1, h1, d1, m2, h2, d2;
        stats(cl, &m0, &h0, &d0);
        int p1[2], hold[2];
        if (pipe(p1) || pipe(hold))
            bu_die("pipe: %s", strerror(errno));
        pid_t a = client(file, warm, &opt, p1[1], hold[0], hold[1]);
        close(hold[0]);
        report ra = collect(p1[0], a);
        if (ra.code) {
            close(hold[1]);
            reap(a);
            if (ra.code == TD_ENOTSUP) {
                printf("RESULT bench=decode label=%s file=%s status=na code=%s reason=\"%s\"\n",
                       label, file, td_err_name(ra.code), ra.message);
                td_client_close(cl);
                return 0;
            }
            bu_die("first client: %s", ra.message);
        }
        stats(cl, &m1, &h1, &d1);
        pid_t b = client(file, warm, &opt, p1[1], -1, hold[1]);
        report rb = collect(p1[0], b);
        reap(b);
        stats(cl, &m2, &h2, &d2);
        close(hold[1]);
        reap(a);
        close(p1[0]);
        close(p1[1]);
        if (rb.code)
            bu_die("second client: %s", rb.message);
        /* One decode while the first client loaded, none and no miss for the second (the
         * warm-up file may add a miss for the first client of round 0 and hits to both). */
        (void)h0;
        if (m1 == m0 || d1 - d0 != 1 || h2 == h1 || m2 != m1 || d2 != d1)
            misses_ok = 0;
        first[r] = ra.us;
        second[r] = rb.us;
        fprintf(stderr, "bench_decode: round %d: first %.1f us, second %.1f us (evicted %llu)\n", r,
                ra.us, rb.us, (unsigned long long)ne);
    }
    /* The reference, last (so that the clients fork from a small process): this process
     * decoding for itself. */
    td_load_options eo = opt;
    eo.mode = TD_MODE_EMBEDDED;
    td_dict *d;
    double embedded_us = -1;
    uint64_t t0 = bu_now_ns();
    int erc = td_load(file, &eo, &d, NULL, &err);
    if (!erc) {
        embedded_us = (double)(bu_now_ns() - t0) / 1e3;
        td_dict_free(d);
    } else if (erc != TD_ENOTSUP) {
        bu_die("embedded load: %s", err.message);
    }

    td_client_close(cl);
    double f = bu_quantile(first, (size_t)rounds, 0.5);
    double s = bu_quantile(second, (size_t)rounds, 0.5);
    printf("RESULT bench=decode label=%s file=%s rounds=%d first_us=%.2f second_us=%.2f "
           "ratio=%.6f embedded_us=%.2f first_miss_second_hit=%s status=ok\n",
           label, file, rounds, f, s, s / f, embedded_us, misses_ok ? "yes" : "no");
    return 0;
}

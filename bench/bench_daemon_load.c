/*
 * bench_daemon_load - the daemon under load: N client processes loading the same cached model
 * through tensord as fast as they can.
 *
 *   bench_daemon_load --file PATH --socket PATH --clients N [--seconds S] [--daemon-pid PID]
 *                     [--label TEXT] [--client]
 *
 * Each client process makes one untimed load first (so the model is cached and the process
 * warm) and then waits at a barrier. Once every client is there, all of them loop for S seconds
 * (default 3): td_load in TD_MODE_DAEMON (connect, HELLO, LOAD with the descriptor, LOAD_OK with
 * the table and descriptors, map, build the views), timed, then td_dict_free (untimed: unmaps
 * and closes the connection, which ends the lease). With --client each process keeps one
 * td_client instead and loads with td_client_load (no connection or handshake per load; freeing
 * sends RELEASE). Latencies go to a shared anonymous mapping.
 *
 * Prints loads per second (loads completed / time from the start to the last completion), and
 * the 50th and 99th percentile and maximum latency over every load of every client. Also the CPU
 * time per load: of the clients (their user + system time over the timed loop, from
 * getrusage) and, with --daemon-pid, of the daemon (/proc/PID/stat over the same window).
 */
#include "tensord.h"

#include "bench_util.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_CLIENTS 256
#define TOTAL_CAP   (16u << 20) /* latencies kept, over all clients */

typedef struct shared {
    uint64_t start_ns, deadline_ns;
    uint64_t cpu_us[MAX_CLIENTS]; /* user + system time of the timed loop */
    uint64_t count[MAX_CLIENTS];
    uint64_t failures[MAX_CLIENTS];
    uint64_t last_ns[MAX_CLIENTS];
    uint32_t lat_ns[]; /* MAX_CLIENTS slices of cap entries */
} shared;

/* One load, through cl when there is one. */
static int load(td_client *cl, const char *file, const td_load_options *opt, td_dict **d,
                td_error *err)
{
    return cl ? td_client_load(cl, file, opt, d, NULL, err) : td_load(file, opt, d, NULL, err);
}

static void client(shared *sh, size_t cap, int idx, const char *file, const td_load_options *opt,
                   int use_client, int ready, int go)
{
    td_dict *d;
    td_error err = {0};
    td_client *cl = NULL;
    if (use_client && td_client_connect(opt->socket_path, &cl, &err)) {
        fprintf(stderr, "bench_daemon_load: client %d: %s\n", idx, err.message);
        _exit(1);
    }
    if (load(cl, file, opt, &d, &err)) {
        fprintf(stderr, "bench_daemon_load: client %d: %s\n", idx, err.message);
        _exit(1);
    }
    td_dict_free(d);
    char c = 'y';
    if (write(ready, &c, 1) != 1)
        _exit(3);
    while (read(go, &c, 1) < 0 && errno == EINTR)
        ;
    uint32_t *lat = sh->lat_ns + (size_t)idx * cap;
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    uint64_t n = 0, fails = 0, now = bu_now_ns(), deadline = sh->deadline_ns;
    while (now < deadline) {
        uint64_t t0 = now;
        int rc = load(cl, file, opt, &d, &err);
        now = bu_now_ns();
        if (rc) {
            fails++;
            if (fails < 5)
                fprintf(stderr, "bench_daemon_load: client %d: %s\n", idx, err.message);
            continue;
        }
        td_dict_free(d);
        uint64_t dt = now - t0;
        if (n < cap)
            lat[n] = dt > UINT32_MAX ? UINT32_MAX : (uint32_t)dt;
        n++;
        sh->last_ns[idx] = now;
        now = bu_now_ns();
    }
    getrusage(RUSAGE_SELF, &ru1);
    sh->cpu_us[idx] = (uint64_t)((ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) * 1000000 +
                                 (ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) +
                                 (ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) * 1000000 +
                                 (ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec));
    sh->count[idx] = n;
    sh->failures[idx] = fails;
    td_client_close(cl);
    _exit(0);
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_daemon_load --file PATH --socket PATH --clients N "
                    "[--seconds S] [--label TEXT] [--client]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *file = NULL, *label = "-";
    int clients = 0, daemon_pid = 0, use_client = 0;
    double seconds = 3;
    td_load_options opt = TD_LOAD_OPTIONS_INIT;
    opt.mode = TD_MODE_DAEMON;
    static const struct option opts[] = {
        {"file", required_argument, 0, 'f'},    {"socket", required_argument, 0, 's'},
        {"clients", required_argument, 0, 'n'}, {"seconds", required_argument, 0, 'S'},
        {"label", required_argument, 0, 'l'},   {"daemon-pid", required_argument, 0, 'p'},
        {"client", no_argument, 0, 'c'},        {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'f':
            file = optarg;
            break;
        case 's':
            opt.socket_path = optarg;
            break;
        case 'n':
            clients = atoi(optarg);
            break;
        case 'S':
            seconds = atof(optarg);
            break;
        case 'l':
            label = optarg;
            break;
        case 'p':
            daemon_pid = atoi(optarg);
            break;
        case 'c':
            use_client = 1;
            break;
        default:
            usage();
        }
    }
    if (!file || !opt.socket_path || clients < 1 || clients > MAX_CLIENTS || seconds <= 0)
        usage();
    signal(SIGPIPE, SIG_IGN);

    size_t cap = TOTAL_CAP / (size_t)clients;
    size_t size = sizeof(shared) + (size_t)clients * cap * sizeof(uint32_t);
    shared *sh = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED)
        bu_die("mmap: %s", strerror(errno));
    sh->deadline_ns = UINT64_MAX;
    int ready[2], go[2];
    if (pipe(ready) || pipe(go))
        bu_die("pipe: %s", strerror(errno));
    pid_t pids[MAX_CLIENTS];
    for (int i = 0; i < clients; i++) {
        pids[i] = fork();
        if (pids[i] < 0)
            bu_die("fork: %s", strerror(errno));
        if (pids[i] == 0) {
            close(ready[0]);
            close(go[1]);
            client(sh, cap, i, file, &opt, use_client, ready[1], go[0]);
        }
    }
    close(ready[1]);
    close(go[0]);
    for (int i = 0; i < clients; i++) {
        char ch;
        ssize_t k;
        while ((k = read(ready[0], &ch, 1)) < 0 && errno == EINTR)
            ;
        if (k != 1)
            bu_die("a client failed its first load");
    }
    long long dcpu0 = daemon_pid > 0 ? bu_proc_cpu_us(daemon_pid) : -1;
    sh->start_ns = bu_now_ns();
    sh->deadline_ns = sh->start_ns + (uint64_t)(seconds * 1e9);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    close(go[1]); /* everyone goes */
    int bad = 0;
    for (int i = 0; i < clients; i++) {
        int st;
        while (waitpid(pids[i], &st, 0) < 0 && errno == EINTR)
            ;
        bad += !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    long long dcpu1 = daemon_pid > 0 ? bu_proc_cpu_us(daemon_pid) : -1;
    if (bad)
        bu_die("%d clients failed", bad);
    uint64_t total = 0, fails = 0, end = sh->start_ns, ccpu = 0;
    for (int i = 0; i < clients; i++) {
        total += sh->count[i];
        ccpu += sh->cpu_us[i];
        fails += sh->failures[i];
        if (sh->last_ns[i] > end)
            end = sh->last_ns[i];
    }
    size_t kept = 0;
    double *v = malloc((total ? total : 1) * sizeof *v);
    if (!v)
        bu_die("out of memory");
    for (int i = 0; i < clients; i++) {
        uint64_t n = sh->count[i] < cap ? sh->count[i] : cap;
        for (uint64_t k = 0; k < n; k++)
            v[kept++] = (double)sh->lat_ns[(size_t)i * cap + k] / 1e3;
    }
    double window = (double)(end - sh->start_ns) / 1e9;
    double p50 = bu_quantile(v, kept, 0.5), p99 = bu_quantile(v, kept, 0.99);
    double mx = kept ? v[kept - 1] : 0;
    printf("RESULT bench=daemon_load label=%s file=%s clients=%d loads=%llu failures=%llu "
           "seconds=%.3f loads_per_s=%.1f p50_us=%.1f p99_us=%.1f max_us=%.1f "
           "client_cpu_us_per_load=%.1f daemon_cpu_us_per_load=%.1f status=ok\n",
           label, file, clients, (unsigned long long)total, (unsigned long long)fails, window,
           window > 0 ? (double)total / window : 0, p50, p99, mx,
           total ? (double)ccpu / (double)total : 0,
           total && dcpu0 >= 0 && dcpu1 >= 0 ? (double)(dcpu1 - dcpu0) / (double)total : -1.0);
    free(v);
    munmap(sh, size);
    return 0;
}

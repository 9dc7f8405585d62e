/*
 * bench_shards.c - a model of several files against the same model in one file, in this process
 * and through tensord.
 *
 *   bench_shards [--socket PATH | --tensord PATH | --no-daemon] DIR [SIZE_MIB [REPS]]
 *
 * Writes a SIZE_MIB model (64 float32 tensors) into DIR twice: one.safetensors, and shards of a
 * quarter of the model each (td_save_model: m-0000i-of-00004.safetensors and
 * m.safetensors.index.json). Then:
 *   warm   the load alone of the one file and of the index, pages cached, medians of REPS,
 *          three ways: embedded (td_load, TD_MODE_EMBEDDED), through the daemon with td_load
 *          (TD_MODE_DAEMON: a connection per load) and through one kept td_client
 *          (td_client_load);
 *   cold   before each repetition every shard's pages dropped (posix_fadvise DONTNEED), then
 *          the load of the index plus a read of every page of every array, one thread per
 *          shard: embedded, and through the daemon after td_client_evict of the shards' entries
 *          (so that the daemon indexes them again), against `dd` of the same shard files (one
 *          after the other, bs=1M, to /dev/null) in the same repetition.
 * The daemon is the one on --socket when given (it must be able to evict these files: nobody
 * else may hold them); otherwise a tensord of our own on DIR/tensord.sock (its log in
 * DIR/tensord.log), the binary --tensord, else $TENSORD_BENCH_DAEMON, else ../daemon/tensord
 * next to this program; stopped at the end. --no-daemon measures embedded only.
 * Prints RESULT lines (bench_util.h).
 */
#include "bench_util.h"

#include <tensord.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define NTENSORS 64
#define NSHARDS  4

static void die(const char *what, const td_error *err)
{
    fprintf(stderr, "bench_shards: %s: %s\n", what, err ? err->message : "failed");
    exit(1);
}

static void drop_pages(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        die(path, NULL);
    fdatasync(fd);
    if (posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED))
        die("posix_fadvise", NULL);
    close(fd);
}

typedef struct toucher {
    const td_dict *d;
    size_t first, last; /* entries [first, last) */
    uint64_t sum;
} toucher;

/* Reads one byte of every page of entries [first, last). */
static void *touch(void *arg)
{
    toucher *t = arg;
    uint64_t s = 0;
    for (size_t i = t->first; i < t->last; i++) {
        const td_array *a = td_dict_at(t->d, i, NULL);
        const volatile uint8_t *p = td_array_data(a);
        uint64_t n = td_array_nbytes(a);
        for (uint64_t k = 0; k < n; k += 4096)
            s += p[k];
    }
    t->sum = s;
    return NULL;
}

/* How a load is made: in this process, through the daemon with a connection of its own, or
 * through a kept td_client. */
typedef enum way { WAY_EMBEDDED, WAY_DAEMON, WAY_CLIENT } way;
static const char *const way_name[] = {"embedded", "daemon", "client"};

static const char *g_sock;   /* the daemon's socket */
static td_client *g_client;  /* the kept connection */
static td_provenance g_prov; /* of the last load's first array */

/* Loads path the given way and, with touch_all, reads every page, one thread per shard's share
 * of the tensors. Returns seconds (the free of the dict is not counted). */
static double load_once(const char *path, way w, int touch_all)
{
    td_load_options o = TD_LOAD_OPTIONS_INIT;
    o.mode = w == WAY_EMBEDDED ? TD_MODE_EMBEDDED : TD_MODE_DAEMON;
    o.socket_path = g_sock;
    td_dict *d;
    td_error err;
    uint64_t t0 = bu_now_ns();
    int rc = w == WAY_CLIENT ? td_client_load(g_client, path, &o, &d, NULL, &err)
                             : td_load(path, &o, &d, NULL, &err);
    if (rc)
        die(path, &err);
    if (touch_all) {
        pthread_t th[NSHARDS];
        toucher tt[NSHARDS];
        size_t n = td_dict_size(d);
        for (int s = 0; s < NSHARDS; s++) {
            tt[s] = (toucher){d, n * (size_t)s / NSHARDS, n * (size_t)(s + 1) / NSHARDS, 0};
            pthread_create(&th[s], NULL, touch, &tt[s]);
        }
        for (int s = 0; s < NSHARDS; s++)
            pthread_join(th[s], NULL);
    }
    double sec = (double)(bu_now_ns() - t0) / 1e9;
    g_prov = td_array_provenance(td_dict_at(d, 0, NULL));
    td_dict_free(d);
    return sec;
}

/* Starts tensord (bin) on sock, its standard error appended to logpath; waits until it answers.
 * Returns its pid. */
static pid_t daemon_start(const char *bin, const char *sock, const char *logpath)
{
    pid_t pid = fork();
    if (pid < 0)
        die("fork", NULL);
    if (pid == 0) {
        int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd >= 0)
            dup2(fd, 2);
        execl(bin, bin, "--socket", sock, "--log-level", "notice", (char *)NULL);
        fprintf(stderr, "bench_shards: cannot run %s: %s\n", bin, strerror(errno));
        _exit(127);
    }
    for (int i = 0; i < 500; i++) {
        td_client *c;
        if (td_client_connect(sock, &c, NULL) == 0) {
            td_client_close(c);
            return pid;
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid)
            bu_die("bench_shards: %s exited during start-up (see %s)", bin, logpath);
        usleep(10000);
    }
    bu_die("bench_shards: %s did not come up on %s (see %s)", bin, sock, logpath);
}

/* Drops the daemon's entries of the shards. A lease a td_load of another connection held ends
 * when the daemon sees that connection close, which may come just after our EVICT: retried
 * until all NSHARDS entries went (up to 2 s). Returns the number of tries. */
static int evict_shards(const char *dir)
{
    char file[4096];
    int tries = 0;
    int done[NSHARDS] = {0}, left = NSHARDS;
    while (left) {
        if (++tries > 200)
            bu_die("bench_shards: the daemon keeps %d shard entries after 2 s of evicting", left);
        for (int s = 0; s < NSHARDS; s++) {
            if (done[s])
                continue;
            snprintf(file, sizeof file, "%s/m-%05d-of-%05d.safetensors", dir, s + 1, NSHARDS);
            uint64_t entries = 0;
            td_error err;
            if (td_client_evict(g_client, file, &entries, NULL, &err))
                die("td_client_evict", &err);
            if (entries) {
                done[s] = 1;
                left--;
            }
        }
        if (left)
            usleep(10000);
    }
    return tries;
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_shards [--socket PATH | --tensord PATH | --no-daemon] DIR "
                    "[SIZE_MIB [REPS]]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *sock_opt = NULL, *tensord = getenv("TENSORD_BENCH_DAEMON");
    int use_daemon = 1;
    static const struct option longopts[] = {{"socket", required_argument, 0, 's'},
                                             {"tensord", required_argument, 0, 't'},
                                             {"no-daemon", no_argument, 0, 'n'},
                                             {0, 0, 0, 0}};
    for (int c; (c = getopt_long(argc, argv, "", longopts, NULL)) != -1;) {
        if (c == 's')
            sock_opt = optarg;
        else if (c == 't')
            tensord = optarg;
        else if (c == 'n')
            use_daemon = 0;
        else
            usage();
    }
    if (optind >= argc)
        usage();
    const char *dir = argv[optind];
    uint64_t mib = optind + 1 < argc ? strtoull(argv[optind + 1], NULL, 10) : 1024;
    int reps = optind + 2 < argc ? atoi(argv[optind + 2]) : 5;
    if (!mib || reps < 1)
        usage();
    char one[4096], shards[4096], index[4096], file[4096], sock[4096], logp[4096], bin[4096];
    snprintf(one, sizeof one, "%s/one.safetensors", dir);
    snprintf(shards, sizeof shards, "%s/m.safetensors", dir);
    snprintf(index, sizeof index, "%s/m.safetensors.index.json", dir);

    td_error err;
    td_dict *d = td_dict_new();
    int64_t elems = (int64_t)(mib << 20) / 4 / NTENSORS;
    uint64_t seed = 42;
    for (int i = 0; i < NTENSORS; i++) {
        td_array *a;
        if (td_array_new(TD_FLOAT32, 1, &elems, NULL, &a, &err))
            die("td_array_new", &err);
        bu_fill_bytes(td_array_data_mut(a), td_array_nbytes(a), BU_FILL_WEIGHTS,
                      seed + (uint64_t)i);
        char name[64];
        snprintf(name, sizeof name, "model.layers.%d.weight", i);
        if (td_dict_set(d, name, a, &err))
            die("td_dict_set", &err);
        td_array_release(a);
    }
    td_save_options so = TD_SAVE_OPTIONS_INIT;
    if (td_save_model(one, d, NULL, &so, &err))
        die(one, &err);
    so.max_shard_bytes = (mib << 20) / NSHARDS;
    if (td_save_model(shards, d, NULL, &so, &err))
        die(shards, &err);
    td_dict_free(d);

    /* The daemon: given, or our own. */
    pid_t dpid = -1;
    if (use_daemon && sock_opt) {
        g_sock = sock_opt;
    } else if (use_daemon) {
        if (!tensord) {
            char self[4096];
            ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
            if (n < 0)
                die("/proc/self/exe", NULL);
            self[n] = '\0';
            snprintf(bin, sizeof bin, "%s/../daemon/tensord", dirname(self));
            tensord = bin;
        }
        snprintf(sock, sizeof sock, "%s/tensord.sock", dir);
        snprintf(logp, sizeof logp, "%s/tensord.log", dir);
        unlink(sock);
        dpid = daemon_start(tensord, sock, logp);
        g_sock = sock;
        printf("tensord %s on %s (pid %d)\n", tensord, sock, (int)dpid);
    }
    if (use_daemon && td_client_connect(g_sock, &g_client, &err))
        die(g_sock, &err);
    int nways = use_daemon ? 3 : 1;

    double *a = calloc((size_t)reps, sizeof *a), *b = calloc((size_t)reps, sizeof *b);
    double *c = calloc((size_t)reps, sizeof *c);
    /* Warm: both files cached, and (daemon) indexed. */
    for (int w = 0; w < nways; w++) {
        load_once(one, (way)w, 1);
        load_once(index, (way)w, 1);
        if (w != WAY_EMBEDDED && g_prov != TD_PROVENANCE_DAEMON)
            bu_die("bench_shards: a %s load did not come from the daemon", way_name[w]);
        for (int r = 0; r < reps; r++) {
            a[r] = load_once(one, (way)w, 0);
            b[r] = load_once(index, (way)w, 0);
        }
        double w1 = bu_quantile(a, (size_t)reps, 0.5), w4 = bu_quantile(b, (size_t)reps, 0.5);
        printf("RESULT bench=shards case=warm_load method=%s files=1 mib=%llu median_us=%.1f\n",
               way_name[w], (unsigned long long)mib, w1 * 1e6);
        printf("RESULT bench=shards case=warm_load method=%s files=%d mib=%llu median_us=%.1f "
               "ratio_vs_one=%.3f\n",
               way_name[w], NSHARDS, (unsigned long long)mib, w4 * 1e6, w4 / w1);
    }

    /* Cold: pages dropped; the model read through, embedded and through the daemon, against dd
     * of the same files, all in each repetition. */
    int evict_tries = 0;
    for (int r = 0; r < reps; r++) {
        for (int s = 0; s < NSHARDS; s++) {
            snprintf(file, sizeof file, "%s/m-%05d-of-%05d.safetensors", dir, s + 1, NSHARDS);
            drop_pages(file);
        }
        b[r] = load_once(index, WAY_EMBEDDED, 1);
        if (use_daemon) {
            evict_tries += evict_shards(dir);
            for (int s = 0; s < NSHARDS; s++) {
                snprintf(file, sizeof file, "%s/m-%05d-of-%05d.safetensors", dir, s + 1, NSHARDS);
                drop_pages(file);
            }
            c[r] = load_once(index, WAY_DAEMON, 1);
        }
        char cmd[8192] = "";
        size_t len = 0;
        for (int s = 0; s < NSHARDS; s++) {
            snprintf(file, sizeof file, "%s/m-%05d-of-%05d.safetensors", dir, s + 1, NSHARDS);
            drop_pages(file);
            len += (size_t)snprintf(cmd + len, sizeof cmd - len,
                                    "dd if='%s' of=/dev/null bs=1M status=none; ", file);
        }
        uint64_t t0 = bu_now_ns();
        if (system(cmd) != 0)
            die("dd", NULL);
        a[r] = (double)(bu_now_ns() - t0) / 1e9;
    }
    double bytes = (double)(mib << 20);
    double dd = bu_quantile(a, (size_t)reps, 0.5), cold = bu_quantile(b, (size_t)reps, 0.5);
    printf(
        "RESULT bench=shards case=cold_read method=dd files=%d mib=%llu median_s=%.3f MBps=%.0f\n",
        NSHARDS, (unsigned long long)mib, dd, bytes / dd / 1e6);
    printf("RESULT bench=shards case=cold_read method=embedded files=%d mib=%llu median_s=%.3f "
           "MBps=%.0f ratio_vs_dd=%.3f\n",
           NSHARDS, (unsigned long long)mib, cold, bytes / cold / 1e6, dd / cold);
    if (use_daemon) {
        double dcold = bu_quantile(c, (size_t)reps, 0.5);
        printf("RESULT bench=shards case=cold_read method=daemon files=%d mib=%llu median_s=%.3f "
               "MBps=%.0f ratio_vs_dd=%.3f evict_tries=%d\n",
               NSHARDS, (unsigned long long)mib, dcold, bytes / dcold / 1e6, dd / dcold,
               evict_tries);
    }
    free(a);
    free(b);
    free(c);
    td_client_close(g_client);
    if (dpid > 0) {
        kill(dpid, SIGTERM);
        int st;
        while (waitpid(dpid, &st, 0) < 0 && errno == EINTR)
            ;
        unlink(sock);
    }
    return 0;
}

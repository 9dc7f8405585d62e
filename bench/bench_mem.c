/*
 * bench_mem - how much memory N processes holding the same model take together.
 *
 *   bench_mem --method embedded|daemon --file PATH --procs N [--socket PATH] [--daemon-pid PID]
 *   bench_mem --method cmd --procs N [--label TEXT] -- COMMAND ARGS...
 *
 * embedded and daemon: N forked children each td_load the file in that mode and read one byte
 * of every page of every tensor (so the whole model is resident in each of them), then report
 * ready and hold their views. cmd: N copies of COMMAND run with stdin and stdout on pipes; a
 * copy must load the model, print a line once it holds it, and exit when stdin reaches EOF
 * (bench/numpy_bench.py hold does this for numpy).
 *
 * Once all N are ready, the figure is the sum of their Pss (/proc/PID/smaps_rollup: every
 * resident page, shared ones divided among the processes that map them), plus the daemon's own
 * Pss when --daemon-pid is given. Shared pages therefore count once in the total, private copies
 * N times.
 */
#include "tensord.h"

#include "bench_util.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_PROCS 256

/* The child of embedded/daemon: load, touch, report, hold until the hold pipe closes. */
static void child(const char *file, td_load_options *opt, int report, int hold)
{
    td_dict *d;
    td_error err = {0};
    char ok = 'n';
    if (td_load(file, opt, &d, NULL, &err) == 0) {
        volatile uint8_t sink = 0;
        for (size_t i = 0; i < td_dict_size(d); i++) {
            const td_array *a = td_dict_at(d, i, NULL);
            const uint8_t *p = td_array_data(a);
            uint64_t n = td_array_nbytes(a);
            for (uint64_t k = 0; k < n; k += 4096)
                sink ^= p[k];
            if (n)
                sink ^= p[n - 1];
        }
        (void)sink;
        ok = 'y';
    } else {
        fprintf(stderr, "bench_mem: child load: %s\n", err.message);
    }
    if (write(report, &ok, 1) != 1)
        _exit(3);
    char c;
    while (read(hold, &c, 1) < 0 && errno == EINTR)
        ;
    _exit(ok == 'y' ? 0 : 1);
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_mem --method embedded|daemon --file PATH --procs N "
                    "[--socket PATH] [--daemon-pid PID] [--label TEXT]\n"
                    "       bench_mem --method cmd --procs N [--label TEXT] -- COMMAND ARGS...\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *method = NULL, *file = "-", *label = "-";
    int procs = 0, daemon_pid = 0;
    td_load_options opt = TD_LOAD_OPTIONS_INIT;
    static const struct option opts[] = {{"method", required_argument, 0, 'm'},
                                         {"file", required_argument, 0, 'f'},
                                         {"procs", required_argument, 0, 'n'},
                                         {"socket", required_argument, 0, 's'},
                                         {"daemon-pid", required_argument, 0, 'p'},
                                         {"label", required_argument, 0, 'l'},
                                         {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            method = optarg;
            break;
        case 'f':
            file = optarg;
            break;
        case 'n':
            procs = atoi(optarg);
            break;
        case 's':
            opt.socket_path = optarg;
            break;
        case 'p':
            daemon_pid = atoi(optarg);
            break;
        case 'l':
            label = optarg;
            break;
        default:
            usage();
        }
    }
    if (!method || procs < 1 || procs > MAX_PROCS)
        usage();
    int is_cmd = !strcmp(method, "cmd");
    if (is_cmd && optind >= argc)
        usage();
    if (!is_cmd) {
        if (!strcmp(method, "embedded"))
            opt.mode = TD_MODE_EMBEDDED;
        else if (!strcmp(method, "daemon"))
            opt.mode = TD_MODE_DAEMON;
        else
            usage();
    }
    signal(SIGPIPE, SIG_IGN);

    pid_t pids[MAX_PROCS];
    int outs[MAX_PROCS], ins[MAX_PROCS];
    int rep[2], hold[2];
    if (pipe(rep) || pipe(hold))
        bu_die("pipe: %s", strerror(errno));
    uint64_t t0 = bu_now_ns();
    for (int i = 0; i < procs; i++) {
        int o[2] = {-1, -1}, in[2] = {-1, -1};
        if (is_cmd && (pipe(o) || pipe(in)))
            bu_die("pipe: %s", strerror(errno));
        pid_t pid = fork();
        if (pid < 0)
            bu_die("fork: %s", strerror(errno));
        if (pid == 0) {
            close(rep[0]);
            close(hold[1]);
            for (int k = 0; k < i; k++)
                if (is_cmd) {
                    close(outs[k]);
                    close(ins[k]);
                }
            if (!is_cmd)
                child(file, &opt, rep[1], hold[0]);
            dup2(in[0], 0);
            dup2(o[1], 1);
            close(in[0]);
            close(in[1]);
            close(o[0]);
            close(o[1]);
            execvp(argv[optind], argv + optind);
            _exit(127);
        }
        pids[i] = pid;
        if (is_cmd) {
            close(o[1]);
            close(in[0]);
            outs[i] = o[0];
            ins[i] = in[1];
        }
    }
    close(rep[1]);
    close(hold[0]);
    int ready = 0;
    for (int i = 0; i < procs; i++) {
        if (is_cmd) {
            char buf[256];
            ssize_t k;
            while ((k = read(outs[i], buf, sizeof buf)) < 0 && errno == EINTR)
                ;
            ready += k > 0;
        } else {
            char ch = 0;
            ssize_t k;
            while ((k = read(rep[0], &ch, 1)) < 0 && errno == EINTR)
                ;
            ready += k == 1 && ch == 'y';
        }
    }
    uint64_t t1 = bu_now_ns();
    long long total = 0, maxp = 0;
    for (int i = 0; i < procs; i++) {
        long long p = bu_pss_kib(pids[i]);
        total += p > 0 ? p : 0;
        if (p > maxp)
            maxp = p;
    }
    long long dpss = daemon_pid > 0 ? bu_pss_kib(daemon_pid) : 0;
    /* Let them go. */
    close(hold[1]);
    for (int i = 0; i < procs; i++)
        if (is_cmd) {
            close(ins[i]);
            close(outs[i]);
        }
    int bad = 0;
    for (int i = 0; i < procs; i++) {
        int st;
        while (waitpid(pids[i], &st, 0) < 0 && errno == EINTR)
            ;
        bad += !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    if (ready != procs || bad)
        bu_die("%s: %d of %d processes got ready, %d failed", method, ready, procs, bad);
    printf("RESULT bench=mem label=%s method=%s file=%s procs=%d pss_total_kib=%lld "
           "pss_max_kib=%lld daemon_pss_kib=%lld total_kib=%lld ready_s=%.3f status=ok\n",
           label, method, file, procs, total, maxp, dpss, total + (dpss > 0 ? dpss : 0),
           (double)(t1 - t0) / 1e9);
    return 0;
}

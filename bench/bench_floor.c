/*
 * bench_floor - the floor under a warm daemon load: what the kernel charges for the least a
 * load through a daemon can do, measured with the same clocks as bench_daemon_load.
 *
 *   bench_floor --file PATH [--iters N] [--label TEXT]
 *   bench_floor --file PATH --clients N [--seconds S] [--server-nice K] [--label TEXT]
 *
 * Two processes on a Unix stream socket pair. Per round trip the client opens PATH, sends one
 * byte with the descriptor attached (SCM_RIGHTS); the server receives it, sends one byte back
 * with the same descriptor and closes its copy; the client receives it, maps the whole file
 * read-only, unmaps it, and closes both descriptors. That is one request/reply round trip
 * passing a descriptor each way plus an mmap/munmap, with no protocol, table or view at all.
 *
 * Prints the median wall time of a round trip and the CPU time per round trip of the client
 * and of the server (getrusage over the timed loop, each process its own), as one RESULT line.
 *
 * With --clients, the floor of a daemon under load: N client processes, each on a socket pair
 * of its own to one server process that waits in epoll (level-triggered) and answers every
 * client that is ready, as tensord does. The clients start together and loop for S seconds
 * (default 3), as bench_daemon_load's do. --server-nice runs the server at that niceness (as
 * tensord.service runs the daemon at -10). Prints loads (round trips) per second, the 50th and
 * 99th percentile of their latency, and the CPU per round trip of the clients and the server.
 */
#include "bench_util.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static void send_fd(int sock, int fd)
{
    char byte = 'f';
    struct iovec iov = {&byte, 1};
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } ctl;
    struct msghdr m = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    if (sendmsg(sock, &m, MSG_NOSIGNAL) != 1)
        bu_die("sendmsg: %s", strerror(errno));
}

/* The descriptor that came with the next byte; -1 at the end of the stream. */
static int recv_fd(int sock)
{
    char byte;
    struct iovec iov = {&byte, 1};
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } ctl;
    struct msghdr m = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf};
    ssize_t n = recvmsg(sock, &m, MSG_CMSG_CLOEXEC);
    if (n == 0)
        return -1;
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    if (n != 1 || !c || c->cmsg_type != SCM_RIGHTS)
        bu_die("recvmsg: no descriptor (%s)", n < 0 ? strerror(errno) : "short");
    int fd;
    memcpy(&fd, CMSG_DATA(c), sizeof fd);
    return fd;
}

static double cpu_us(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

/* One round trip of a client: open, pass the descriptor, get it back, map, unmap, close. */
static void round_trip(int sock, const char *file, size_t size)
{
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        bu_die("%s: %s", file, strerror(errno));
    send_fd(sock, fd);
    int back = recv_fd(sock);
    if (back < 0)
        bu_die("the server went away");
    void *p = mmap(NULL, size, PROT_READ, MAP_SHARED, back, 0);
    if (p == MAP_FAILED)
        bu_die("mmap: %s", strerror(errno));
    munmap(p, size);
    close(back);
    close(fd);
}

#define MAX_CLIENTS 256
#define TOTAL_CAP   (16u << 20) /* latencies kept, over all clients */

typedef struct shared {
    uint64_t deadline_ns;
    double cpu_us[MAX_CLIENTS];
    uint64_t count[MAX_CLIENTS];
    uint32_t lat_ns[]; /* MAX_CLIENTS slices of cap entries */
} shared;

/* The server of --clients: answers every ready client until all have closed, then reports its
 * CPU time from the start signal on. */
static void serve(const int *socks, int n, int go, int report)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        bu_die("epoll_create1: %s", strerror(errno));
    for (int i = 0; i < n; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, socks[i], &ev) < 0)
            bu_die("epoll_ctl: %s", strerror(errno));
    }
    char c;
    while (read(go, &c, 1) < 0 && errno == EINTR)
        ;
    double c0 = cpu_us();
    int open_ = n;
    struct epoll_event evs[MAX_CLIENTS];
    while (open_ > 0) {
        int k = epoll_wait(ep, evs, MAX_CLIENTS, -1);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            bu_die("epoll_wait: %s", strerror(errno));
        for (int j = 0; j < k; j++) {
            int s = socks[evs[j].data.u32];
            int fd = recv_fd(s);
            if (fd < 0) {
                epoll_ctl(ep, EPOLL_CTL_DEL, s, NULL);
                open_--;
                continue;
            }
            send_fd(s, fd);
            close(fd);
        }
    }
    double used = cpu_us() - c0;
    if (write(report, &used, sizeof used) != sizeof used)
        _exit(1);
    _exit(0);
}

static void floor_clients(const char *file, size_t size, int n, double seconds, int server_nice,
                          const char *label)
{
    size_t cap = TOTAL_CAP / (size_t)n;
    size_t bytes = sizeof(shared) + (size_t)n * cap * sizeof(uint32_t);
    shared *sh = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED)
        bu_die("mmap: %s", strerror(errno));
    int socks[MAX_CLIENTS], peers[MAX_CLIENTS], ready[2], go[2], sgo[2], report[2];
    for (int i = 0; i < n; i++) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
            bu_die("socketpair: %s", strerror(errno));
        socks[i] = sv[1];
        peers[i] = sv[0];
    }
    if (pipe(ready) < 0 || pipe(go) < 0 || pipe(sgo) < 0 || pipe(report) < 0)
        bu_die("pipe: %s", strerror(errno));
    pid_t server = fork();
    if (server < 0)
        bu_die("fork: %s", strerror(errno));
    if (server == 0) {
        for (int i = 0; i < n; i++)
            close(peers[i]);
        if (server_nice && setpriority(PRIO_PROCESS, 0, server_nice) < 0)
            bu_die("setpriority %d: %s", server_nice, strerror(errno));
        serve(socks, n, sgo[0], report[1]);
    }
    for (int i = 0; i < n; i++)
        close(socks[i]);
    pid_t kids[MAX_CLIENTS];
    for (int i = 0; i < n; i++) {
        if ((kids[i] = fork()) < 0)
            bu_die("fork: %s", strerror(errno));
        if (kids[i])
            continue;
        for (int j = 0; j < n; j++)
            if (j != i)
                close(peers[j]);
        char c = 'y';
        if (write(ready[1], &c, 1) != 1)
            _exit(3);
        while (read(go[0], &c, 1) < 0 && errno == EINTR)
            ;
        round_trip(peers[i], file, size); /* warm, untimed */
        uint32_t *lat = sh->lat_ns + (size_t)i * cap;
        double c0 = cpu_us();
        uint64_t k = 0, now = bu_now_ns();
        while (now < sh->deadline_ns) {
            uint64_t t0 = now;
            round_trip(peers[i], file, size);
            now = bu_now_ns();
            if (k < cap)
                lat[k] = now - t0 > UINT32_MAX ? UINT32_MAX : (uint32_t)(now - t0);
            k++;
        }
        sh->cpu_us[i] = cpu_us() - c0;
        sh->count[i] = k;
        _exit(0);
    }
    for (int i = 0; i < n; i++) {
        char c;
        if (read(ready[0], &c, 1) != 1)
            bu_die("a client did not start");
    }
    uint64_t start = bu_now_ns();
    sh->deadline_ns = start + (uint64_t)(seconds * 1e9);
    char gobuf[MAX_CLIENTS + 1];
    memset(gobuf, 'g', sizeof gobuf);
    if (write(sgo[1], gobuf, 1) != 1 || write(go[1], gobuf, (size_t)n) != (ssize_t)n)
        bu_die("cannot start the clients");
    for (int i = 0; i < n; i++)
        waitpid(kids[i], NULL, 0);
    uint64_t end = bu_now_ns();
    for (int i = 0; i < n; i++)
        close(peers[i]); /* the server sees every client go, and reports */
    double server_us = 0;
    if (read(report[0], &server_us, sizeof server_us) != sizeof server_us)
        bu_die("the server did not report");
    waitpid(server, NULL, 0);
    uint64_t total = 0, kept = 0;
    double client_us = 0;
    for (int i = 0; i < n; i++) {
        total += sh->count[i];
        client_us += sh->cpu_us[i];
    }
    double *lat = malloc((size_t)n * cap * sizeof *lat);
    if (!lat || !total)
        bu_die("no round trips");
    for (int i = 0; i < n; i++)
        for (uint64_t k = 0; k < sh->count[i] && k < cap; k++)
            lat[kept++] = sh->lat_ns[(size_t)i * cap + k] / 1e3;
    printf("RESULT bench=floor label=%s clients=%d loads=%llu seconds=%.3f loads_per_s=%.1f "
           "p50_us=%.1f p99_us=%.1f cpu_client_us=%.2f cpu_server_us=%.2f cpu_total_us=%.2f "
           "status=ok\n",
           label, n, (unsigned long long)total, (double)(end - start) / 1e9,
           (double)total / ((double)(end - start) / 1e9), bu_quantile(lat, kept, 0.5),
           bu_quantile(lat, kept, 0.99), client_us / (double)total, server_us / (double)total,
           (client_us + server_us) / (double)total);
    free(lat);
    munmap(sh, bytes);
}

int main(int argc, char **argv)
{
    const char *file = NULL, *label = "-";
    long iters = 20000;
    int clients = 0, server_nice = 0;
    double seconds = 3;
    static const struct option opts[] = {{"file", required_argument, NULL, 'f'},
                                         {"iters", required_argument, NULL, 'n'},
                                         {"label", required_argument, NULL, 'l'},
                                         {"clients", required_argument, NULL, 'c'},
                                         {"seconds", required_argument, NULL, 's'},
                                         {"server-nice", required_argument, NULL, 'N'},
                                         {0}};
    const char *use = "usage: bench_floor --file PATH [--iters N | --clients N [--seconds S] "
                      "[--server-nice K]] [--label TEXT]";
    for (int o; (o = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        if (o == 'f')
            file = optarg;
        else if (o == 'n')
            iters = atol(optarg);
        else if (o == 'l')
            label = optarg;
        else if (o == 'c')
            clients = atoi(optarg);
        else if (o == 's')
            seconds = atof(optarg);
        else if (o == 'N')
            server_nice = atoi(optarg);
        else
            bu_die("%s", use);
    }
    if (!file || iters < 10 || clients < 0 || clients > MAX_CLIENTS || seconds <= 0)
        bu_die("%s", use);
    struct stat st;
    if (stat(file, &st) < 0)
        bu_die("%s: %s", file, strerror(errno));
    if (clients) {
        floor_clients(file, (size_t)st.st_size, clients, seconds, server_nice, label);
        return 0;
    }
    int sv[2], report[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 || pipe(report) < 0)
        bu_die("socketpair: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0)
        bu_die("fork: %s", strerror(errno));
    if (pid == 0) { /* the server: echo each descriptor back */
        close(sv[0]);
        double c0 = 0;
        for (long i = 0;; i++) {
            if (i == 1)
                c0 = cpu_us(); /* from the first timed round trip on */
            int fd = recv_fd(sv[1]);
            if (fd < 0)
                break;
            send_fd(sv[1], fd);
            close(fd);
        }
        double used = cpu_us() - c0;
        if (write(report[1], &used, sizeof used) != sizeof used)
            _exit(1);
        _exit(0);
    }
    close(sv[1]);
    double *lat = malloc((size_t)iters * sizeof *lat);
    if (!lat)
        bu_die("out of memory");
    /* One untimed round trip warms both sides. */
    double c0 = 0;
    for (long i = 0; i <= iters; i++) {
        if (i == 1)
            c0 = cpu_us();
        uint64_t t0 = bu_now_ns();
        int fd = open(file, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            bu_die("%s: %s", file, strerror(errno));
        send_fd(sv[0], fd);
        int back = recv_fd(sv[0]);
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, back, 0);
        if (p == MAP_FAILED)
            bu_die("mmap: %s", strerror(errno));
        munmap(p, (size_t)st.st_size);
        close(back);
        close(fd);
        if (i)
            lat[i - 1] = (double)(bu_now_ns() - t0) / 1e3;
    }
    double client = (cpu_us() - c0) / (double)iters, server = 0;
    shutdown(sv[0], SHUT_WR);
    if (read(report[0], &server, sizeof server) != sizeof server)
        bu_die("the server did not report");
    waitpid(pid, NULL, 0);
    server /= (double)iters;
    printf("RESULT bench=floor label=%s iters=%ld p50_us=%.2f cpu_client_us=%.2f "
           "cpu_server_us=%.2f cpu_total_us=%.2f status=ok\n",
           label, iters, bu_quantile(lat, (size_t)iters, 0.5), client, server, client + server);
    free(lat);
    return 0;
}

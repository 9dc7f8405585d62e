/*
 * bench_floor - the floor under a warm daemon load: what the kernel charges for the least a
 * load through a daemon can do, measured with the same clocks as bench_daemon_load.
 *
 *   bench_floor --file PATH [--iters N] [--label TEXT]
 *
 * Two processes on a Unix stream socket pair. Per round trip the client opens PATH, sends one
 * byte with the descriptor attached (SCM_RIGHTS); the server receives it, sends one byte back
 * with the same descriptor and closes its copy; the client receives it, maps the whole file
 * read-only, unmaps it, and closes both descriptors. That is one request/reply round trip
 * passing a descriptor each way plus an mmap/munmap, with no protocol, table or view at all.
 *
 * Prints the median wall time of a round trip and the CPU time per round trip of the client
 * and of the server (getrusage over the timed loop, each process its own), as one RESULT line.
 */
#include "bench_util.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
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

int main(int argc, char **argv)
{
    const char *file = NULL, *label = "-";
    long iters = 20000;
    static const struct option opts[] = {{"file", required_argument, NULL, 'f'},
                                         {"iters", required_argument, NULL, 'n'},
                                         {"label", required_argument, NULL, 'l'},
                                         {0}};
    for (int o; (o = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        if (o == 'f')
            file = optarg;
        else if (o == 'n')
            iters = atol(optarg);
        else if (o == 'l')
            label = optarg;
        else
            bu_die("usage: bench_floor --file PATH [--iters N] [--label TEXT]");
    }
    if (!file || iters < 10)
        bu_die("usage: bench_floor --file PATH [--iters N] [--label TEXT]");
    struct stat st;
    if (stat(file, &st) < 0)
        bu_die("%s: %s", file, strerror(errno));
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

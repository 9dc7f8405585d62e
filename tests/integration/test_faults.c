/*
 * test_faults.c - fault injection against a real tensord.
 *
 * test_client_faults drives one daemon (--max-clients 48, --idle-timeout 1) through:
 *   1. 1,000 client processes that die at random points: before the handshake, in the middle of
 *      a frame, right after the first byte of a LOAD carried its descriptor, after the LOAD,
 *      after the LOAD_OK and before the RELEASE, after the RELEASE, or at a random moment of a
 *      library load (a timer signal);
 *   2. clients that send half a frame, with and without a descriptor, and stall;
 *   3. frames that claim enormous sizes (4 GiB, 1 GiB + 1, exactly max_frame with the body never
 *      coming, msgpack containers claiming 2^32 elements);
 *   4. descriptor floods: 200 descriptors on one frame, descriptors on the wrong byte or on a
 *      message that takes none, descriptors of the wrong kind in LOAD (a socket, a pipe, a
 *      directory, a character device, an O_PATH descriptor, a write-only file, an empty memfd),
 *      and 100 pipelined LOADs whose replies (each with its own descriptors) are never read;
 *   5. more clients than --max-clients.
 * Throughout, a well-behaved client process loads and checks a deflated npz (decoded by the
 * daemon into a shared memfd) and a stored one (zero-copy) in a loop, in auto mode. It must see
 * no failure at all, and every load must come from the daemon, except while the daemon is full
 * (phase 5), where auto mode falls back to loading in-process. Afterwards the daemon's
 * descriptor count and RSS return to their baseline, and it has no leases left.
 *
 * test_truncated_under_daemon truncates big client files while the daemon reads them (a
 * deflated npz and a big-endian npy, which it decodes; a GGUF with 27 MB of metadata, which it
 * spends its time indexing), in map and snapshot mode, at several delays after the LOAD: the
 * daemon answers each LOAD with an error or a result, never dies (it reads client files only
 * with pread), leaks nothing (the ASan job runs this test with leak checking on), and returns
 * to its descriptor baseline.
 */
#include "client.h"
#include "common.h"
#include "proto.h"
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_CLIENTS 48
#define DYING       1000
#define BATCH       24
#define NELEM_GOOD  (1 << 20) /* float32 elements of "a" in the good client's files */

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

static char dir[64], sock[128], logpath[160], npz_deflated[256], npz_stored[256];
static pid_t daemon_pid = -1;

/* ---------------------------------------------------------------------------------------------
 * The daemon
 */
static void start_daemon(const char *extra)
{
    daemon_pid = tu_daemon_start(sock, logpath, extra);
}

static void stop_daemon(void)
{
    if (daemon_pid <= 0)
        return;
    int st = tu_daemon_stop(daemon_pid, SIGTERM);
    daemon_pid = -1;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        /* The log goes with the temporary directory: show its end now. */
        size_t len;
        char *log = (char *)tu_read_file(logpath, &len);
        if (log) {
            size_t from = len > 6000 ? len - 6000 : 0;
            printf("faults: tensord exited with status 0x%x; the end of its log:\n%.*s\n", st,
                   (int)(len - from), log + from);
            free(log);
        }
    }
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                  "tensord exited badly (status 0x%x); see %s", st, logpath);
}

static void daemon_alive(void)
{
    ck_assert_msg(waitpid(daemon_pid, NULL, WNOHANG) == 0, "tensord died; see %s", logpath);
    td_client *c;
    td_error err = {0};
    TU_OK(td_client_connect(sock, &c, &err), &err);
    TU_OK(td_client_ping(c, &err), &err);
    td_client_close(c);
}

static long daemon_rss_kib(void)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)daemon_pid);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    long kib = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

static td_status *status(void)
{
    return tu_daemon_status(sock);
}

static void evict_all(void)
{
    td_client *c;
    td_error err = {0};
    TU_OK(td_client_connect(sock, &c, &err), &err);
    TU_OK(td_client_evict(c, NULL, NULL, NULL, &err), &err);
    td_client_close(c);
}

/* Waits until the daemon holds no lease and serves only our status connection, evicts every
 * entry, and waits for its descriptor count to reach want (or 5 s). Returns the count. */
static int settle(int want)
{
    for (int i = 0; i < 250; i++) {
        td_status *st = status();
        uint64_t leases = td_status_get(st, TD_STATUS_LEASES),
                 clients = td_status_get(st, TD_STATUS_CLIENTS);
        td_status_free(st);
        if (!leases && clients <= 1)
            break;
        usleep(20000);
    }
    evict_all();
    int n = -1;
    for (int i = 0; i < 250 && n != want; i++) {
        usleep(20000);
        n = tu_count_pid_fds(daemon_pid);
    }
    return n;
}

/* ---------------------------------------------------------------------------------------------
 * Files
 */
static void save_ramp_npz(const char *path, int compressed)
{
    td_error err = {0};
    int64_t n = NELEM_GOOD;
    td_array *a;
    TU_OK(td_array_new(TD_FLOAT32, 1, &n, NULL, &a, &err), &err);
    float *p = td_array_data_mut(a);
    for (int64_t i = 0; i < n; i++)
        p[i] = (float)i * 0.25f;
    td_dict *d = td_dict_new();
    TU_OK(td_dict_set(d, "a", a, &err), &err);
    TU_OK(compressed ? td_savez_compressed(path, d, &err) : td_savez(path, d, &err), &err);
    td_array_release(a);
    td_dict_free(d);
}

static int ramp_ok(const td_array *a)
{
    if (!a || td_array_dtype(a) != TD_FLOAT32 || td_array_size(a) != NELEM_GOOD)
        return 0;
    const float *p = td_array_data(a);
    for (int64_t i = 0; i < NELEM_GOOD; i++)
        if (p[i] != (float)i * 0.25f)
            return 0;
    return 1;
}

/* ---------------------------------------------------------------------------------------------
 * Raw protocol helpers (what a misbehaving client does by hand)
 */
static int raw_connect(void)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path, sock, strlen(sock) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* sendmsg of p[0..n) with nfds descriptors attached to its first byte. */
static ssize_t send_fds(int s, const void *p, size_t n, const int *fds, unsigned nfds)
{
    struct iovec iov = {(void *)p, n};
    struct msghdr mh = {0};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    char *cbuf = NULL;
    if (nfds) {
        size_t space = CMSG_SPACE(sizeof(int) * nfds);
        cbuf = calloc(1, space);
        mh.msg_control = cbuf;
        mh.msg_controllen = space;
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    ssize_t k = sendmsg(s, &mh, MSG_NOSIGNAL);
    free(cbuf);
    return k;
}

static void encode(const td__proto_msg *m, td__proto_out *o)
{
    td_error err = {0};
    TU_OK(td__proto_encode(m, NULL, o, &err), &err);
}

static void msg_hello(td__proto_msg *m)
{
    td__proto_msg_init(m, TD__PROTO_HELLO, 1);
    m->u.hello.version = TD__PROTO_VERSION;
    m->u.hello.min_version = TD__PROTO_MIN_VERSION;
    m->u.hello.features = TD__PROTO_F_ALL;
    m->u.hello.software = "test_faults";
}

static void msg_load(td__proto_msg *m, uint32_t id, int fd, uint32_t mode)
{
    td__proto_msg_init(m, TD__PROTO_LOAD, id);
    m->u.load.fd = fd;
    m->u.load.format = TD_FORMAT_AUTO;
    m->u.load.mode = mode;
    m->u.load.name = "fault.bin";
}

/* HELLO and its reply, blocking. 0 or a negative code. */
static int hello(int s)
{
    td__proto_msg m, r;
    td_error err = {0};
    msg_hello(&m);
    int rc = td__proto_send_msg(s, &m, NULL, 5000, &err);
    if (!rc)
        rc = td__proto_recv_msg(s, NULL, &r, 5000, &err);
    if (!rc) {
        rc = r.type == TD__PROTO_HELLO_OK ? 0 : TD_EPROTO;
        td__proto_msg_destroy(&r);
    }
    return rc;
}

/* Reads until the daemon closes the connection (0), or timeout_ms passes (-1). Frames it sends
 * first (an ERROR) are read and dropped, with their descriptors. */
static int wait_closed(int s, int timeout_ms)
{
    char buf[4096];
    for (;;) {
        struct pollfd p = {s, POLLIN, 0};
        if (poll(&p, 1, timeout_ms) <= 0)
            return -1;
        char cb[CMSG_SPACE(sizeof(int) * 8)];
        struct iovec iov = {buf, sizeof buf};
        struct msghdr mh = {0};
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        mh.msg_control = cb;
        mh.msg_controllen = sizeof cb;
        ssize_t k = recvmsg(s, &mh, MSG_CMSG_CLOEXEC);
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
                for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++)
                    close(((int *)CMSG_DATA(c))[i]);
        if (k == 0 || (k < 0 && errno == ECONNRESET))
            return 0;
        if (k < 0 && errno != EINTR)
            return -1;
    }
}

/* ---------------------------------------------------------------------------------------------
 * The well-behaved client
 */
enum { PH_WARM, PH_DYING, PH_STALL, PH_HUGE, PH_FDS, PH_FULL, PH_AFTER, PH_COUNT };
static const char *const phase_names[PH_COUNT] = {
    "warm-up",           "dying clients",    "half frames", "enormous frames",
    "descriptor floods", "over max-clients", "after"};

typedef struct good_shared {
    atomic_int phase;
    atomic_int stop;
    atomic_long by_daemon[PH_COUNT], fallback[PH_COUNT], failed[PH_COUNT];
    char first_failure[256];
} good_shared;

static good_shared *good;

static void good_client(void)
{
    td_load_options opt = TD_LOAD_OPTIONS_INIT;
    opt.socket_path = sock;
    for (unsigned i = 0; !atomic_load(&good->stop); i++) {
        int ph = atomic_load(&good->phase);
        td_dict *d;
        td_error err = {0};
        int rc = td_load(i & 1 ? npz_stored : npz_deflated, &opt, &d, NULL, &err);
        if (rc || !ramp_ok(td_dict_get(d, "a"))) {
            if (!atomic_fetch_add(&good->failed[ph], 1))
                snprintf(good->first_failure, sizeof good->first_failure, "%s",
                         rc ? err.message : "wrong values");
        } else if (td_array_provenance(td_dict_get(d, "a")) == TD_PROVENANCE_DAEMON) {
            atomic_fetch_add(&good->by_daemon[ph], 1);
        } else {
            atomic_fetch_add(&good->fallback[ph], 1);
        }
        if (!rc)
            td_dict_free(d);
    }
    _exit(0);
}

/* ---------------------------------------------------------------------------------------------
 * Phase 1: clients that die
 */
enum {
    DIE_BEFORE_HELLO,
    DIE_MID_HELLO,
    DIE_AFTER_FD_BYTE,
    DIE_AFTER_LOAD,
    DIE_BEFORE_RELEASE,
    DIE_AFTER_RELEASE,
    DIE_TIMER,
    DIE_KINDS
};
static const char *const die_names[DIE_KINDS] = {"before the handshake",
                                                 "in the middle of HELLO",
                                                 "after a descriptor (first LOAD byte)",
                                                 "after the LOAD",
                                                 "after LOAD_OK, before RELEASE",
                                                 "after RELEASE",
                                                 "at a random moment (timer)"};

static void die_now(unsigned r)
{
    if (r & 1)
        raise(SIGKILL);
    _exit(0);
}

static void dying_client(unsigned seed)
{
    srand(seed);
    unsigned r = (unsigned)rand();
    int kind = (int)(seed % DIE_KINDS);
    if (kind == DIE_TIMER) {
        /* A library load cut short by SIGALRM anywhere within its first 3 ms. */
        struct itimerval it = {{0, 0}, {0, (suseconds_t)(1 + r % 3000)}};
        signal(SIGALRM, SIG_DFL);
        setitimer(ITIMER_REAL, &it, NULL);
        td_load_options opt = TD_LOAD_OPTIONS_INIT;
        opt.mode = TD_MODE_DAEMON;
        opt.socket_path = sock;
        for (;;) {
            td_dict *d;
            if (td_load(r & 2 ? npz_stored : npz_deflated, &opt, &d, NULL, NULL) == 0)
                td_dict_free(d);
        }
    }
    int s = raw_connect();
    if (s < 0)
        _exit(3);
    if (kind == DIE_BEFORE_HELLO)
        die_now(r);
    td__proto_msg m;
    td__proto_out o;
    if (kind == DIE_MID_HELLO) {
        msg_hello(&m);
        encode(&m, &o);
        size_t cut = 1 + r % (o.len - 1);
        if (write(s, o.buf, cut) < 0)
            _exit(3);
        die_now(r >> 1);
    }
    if (hello(s))
        _exit(3);
    int file = open(r & 2 ? npz_stored : npz_deflated, O_RDONLY | O_CLOEXEC);
    msg_load(&m, 2, file, TD__PROTO_MODE_DEFAULT);
    encode(&m, &o);
    if (kind == DIE_AFTER_FD_BYTE) {
        send_fds(s, o.buf, 1 + r % 8, &file, 1);
        die_now(r >> 2);
    }
    if (send_fds(s, o.buf, o.len, &file, 1) != (ssize_t)o.len)
        _exit(3);
    if (kind == DIE_AFTER_LOAD)
        die_now(r >> 2);
    td__proto_msg reply;
    td_error err = {0};
    if (td__proto_recv_msg(s, NULL, &reply, 10000, &err) || reply.type != TD__PROTO_LOAD_OK)
        _exit(4);
    /* Map the regions, as a real client would, so that dying drops live mappings too. */
    for (uint32_t i = 0; i < reply.u.loaded.nregions; i++) {
        void *p = mmap(NULL, reply.u.loaded.regions[i].size, PROT_READ, MAP_SHARED,
                       reply.u.loaded.regions[i].fd, 0);
        (void)p;
    }
    if (kind == DIE_BEFORE_RELEASE)
        die_now(r >> 2);
    td__proto_msg rel;
    td__proto_msg_init(&rel, TD__PROTO_RELEASE, 3);
    rel.u.release.lease = reply.u.loaded.lease;
    td__proto_send_msg(s, &rel, NULL, 5000, &err);
    die_now(r >> 2);
}

/* ---------------------------------------------------------------------------------------------
 * The test
 */
static double t_start;

static void setup(void)
{
    t_start = tu_now_s();
    tu_tmpdir(dir);
    snprintf(sock, sizeof sock, "%s/tensord.sock", dir);
    snprintf(logpath, sizeof logpath, "%s/tensord.log", dir);
    snprintf(npz_deflated, sizeof npz_deflated, "%s/good_deflated.npz", dir);
    snprintf(npz_stored, sizeof npz_stored, "%s/good_stored.npz", dir);
    signal(SIGPIPE, SIG_IGN);
}

static void teardown(void)
{
    printf("faults: test took %.1f s\n", tu_now_s() - t_start);
    stop_daemon();
    tu_rmtree(dir);
}

static void set_phase(int ph)
{
    atomic_store(&good->phase, ph);
}

START_TEST(test_client_faults)
{
    char extra[64];
    snprintf(extra, sizeof extra, "--max-clients %d --idle-timeout 1", MAX_CLIENTS);
    start_daemon(extra);
    save_ramp_npz(npz_deflated, 1);
    save_ramp_npz(npz_stored, 0);

    /* Warm up: each file decoded a few times (so that every thread-pool thread has its malloc
     * arena), then everything evicted: the baseline is an idle, empty daemon. */
    td_load_options dm = TD_LOAD_OPTIONS_INIT;
    dm.mode = TD_MODE_DAEMON;
    dm.socket_path = sock;
    for (int i = 0; i < 8; i++) {
        td_dict *d;
        td_error err = {0};
        TU_OK(td_load(i & 1 ? npz_stored : npz_deflated, &dm, &d, NULL, &err), &err);
        ck_assert(ramp_ok(td_dict_get(d, "a")));
        td_dict_free(d);
        evict_all();
    }
    int base_fds = settle(-1);
    usleep(200000);
    base_fds = tu_count_pid_fds(daemon_pid);
    long base_rss = daemon_rss_kib();

    good = mmap(NULL, sizeof *good, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(good, MAP_FAILED);
    memset(good, 0, sizeof *good);
    pid_t good_pid = fork();
    ck_assert_int_ge(good_pid, 0);
    if (good_pid == 0)
        good_client();
    usleep(100000);

    /* 1. Clients that die. */
    set_phase(PH_DYING);
    unsigned seed0 = (unsigned)time(NULL);
    int died[DIE_KINDS] = {0}, bad_exit = 0;
    for (int b = 0; b < DYING; b += BATCH) {
        pid_t kids[BATCH];
        int n = 0;
        for (; n < BATCH && b + n < DYING; n++) {
            kids[n] = fork();
            ck_assert_int_ge(kids[n], 0);
            if (kids[n] == 0)
                dying_client(seed0 + (unsigned)(b + n));
            died[(seed0 + (unsigned)(b + n)) % DIE_KINDS]++;
        }
        for (int i = 0; i < n; i++) {
            int st;
            waitpid(kids[i], &st, 0);
            /* Exit codes 3 and 4 mean the client itself could not do its part. */
            if (WIFEXITED(st) && WEXITSTATUS(st) != 0)
                bad_exit++;
        }
    }
    printf("faults: %d clients died:", DYING);
    for (int k = 0; k < DIE_KINDS; k++)
        printf(" %d %s;", died[k], die_names[k]);
    printf(" %d could not reach their death point\n", bad_exit);
    ck_assert_int_eq(bad_exit, 0);
    daemon_alive();

    /* 2. Half frames that stall: a few bytes of HELLO; a HELLO, then half a LOAD with its
     * descriptor. The idle timeout (1 s) closes them. */
    set_phase(PH_STALL);
    int stall[16];
    td__proto_msg m;
    td__proto_out o;
    for (int i = 0; i < 16; i++) {
        stall[i] = raw_connect();
        ck_assert_int_ge(stall[i], 0);
        if (i < 8) {
            msg_hello(&m);
            encode(&m, &o);
            ck_assert_int_eq(write(stall[i], o.buf, 1 + (size_t)i * 2), 1 + i * 2);
        } else {
            ck_assert_int_eq(hello(stall[i]), 0);
            int f = open(npz_deflated, O_RDONLY | O_CLOEXEC);
            msg_load(&m, 2, f, 0);
            encode(&m, &o);
            ck_assert_int_eq(send_fds(stall[i], o.buf, o.len / 2, &f, 1), (ssize_t)(o.len / 2));
            close(f);
        }
        td__proto_out_destroy(&o);
    }
    int stall_closed = 0;
    for (int i = 0; i < 16; i++) {
        stall_closed += wait_closed(stall[i], 4000) == 0;
        close(stall[i]);
    }
    printf("faults: %d of 16 stalled half frames closed by the daemon's idle timeout\n",
           stall_closed);
    ck_assert_int_eq(stall_closed, 16);

    /* 3. Enormous sizes. */
    set_phase(PH_HUGE);
    static const uint8_t huge_frames[][16] = {
        {0xff, 0xff, 0xff, 0xff, 0x81},                      /* 4 GiB - 1 */
        {0x01, 0x00, 0x00, 0x40, 0x81},                      /* 1 GiB + 1 */
        {0x01, 0x00, 0x00, 0x04, 0x81},                      /* max_frame (64 MiB) + 1 */
        {0x05, 0, 0, 0, 0xdd, 0xff, 0xff, 0xff, 0xff},       /* array32 of 2^32 - 1 */
        {0x05, 0, 0, 0, 0xdf, 0xff, 0xff, 0xff, 0xff},       /* map32 of 2^32 - 1 */
        {0x06, 0, 0, 0, 0x81, 0xdb, 0xff, 0xff, 0xff, 0xff}, /* str32 of 4 GiB - 1 */
    };
    static const size_t huge_len[] = {5, 5, 5, 9, 9, 10};
    int huge_closed = 0;
    for (size_t i = 0; i < sizeof huge_len / sizeof huge_len[0]; i++) {
        int s = raw_connect();
        ck_assert_int_ge(s, 0);
        ck_assert_int_eq(hello(s), 0);
        ck_assert_int_eq(write(s, huge_frames[i], huge_len[i]), (ssize_t)huge_len[i]);
        huge_closed += wait_closed(s, 2000) == 0;
        close(s);
    }
    /* Eight clients announce exactly max_frame (64 MiB, allowed) and send 64 KiB of it: the
     * daemon must not have allocated 8 x 64 MiB for them. */
    int big[8];
    uint8_t *chunk = calloc(1, 65536);
    for (int i = 0; i < 8; i++) {
        big[i] = raw_connect();
        ck_assert_int_ge(big[i], 0);
        ck_assert_int_eq(hello(big[i]), 0);
        uint8_t prefix[4] = {0, 0, 0, 4};
        ck_assert_int_eq(write(big[i], prefix, 4), 4);
        ck_assert_int_eq(write(big[i], chunk, 65536), 65536);
    }
    free(chunk);
    usleep(100000);
    long rss_big = daemon_rss_kib();
    for (int i = 0; i < 8; i++) {
        huge_closed += wait_closed(big[i], 4000) == 0;
        close(big[i]);
    }
    printf("faults: %d of 14 enormous frames refused; 8 half-sent 64 MiB frames: daemon RSS %ld "
           "kB (baseline %ld kB)\n",
           huge_closed, rss_big, base_rss);
    ck_assert_int_eq(huge_closed, 14);
    ck_assert_msg(rss_big - base_rss < 64 * 1024 + (UNDER_ASAN ? 128 * 1024 : 0),
                  "RSS grew by %ld kB for 8 announced 64 MiB frames", rss_big - base_rss);

    /* 4. Descriptor floods. */
    set_phase(PH_FDS);
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    {
        /* 200 descriptors on one LOAD frame: far over the daemon's 2. */
        int many[200];
        for (int i = 0; i < 200; i++)
            many[i] = devnull;
        int s = raw_connect();
        ck_assert_int_eq(hello(s), 0);
        msg_load(&m, 2, devnull, 0);
        encode(&m, &o);
        ck_assert_int_eq(send_fds(s, o.buf, o.len, many, 200), (ssize_t)o.len);
        td__proto_out_destroy(&o);
        ck_assert_int_eq(wait_closed(s, 2000), 0);
        close(s);
        /* A descriptor on a byte well inside a frame, and one on a PING. The frame is longer
         * than the daemon's read buffer and the descriptor rides on byte 17000, so no read that
         * brings it can hold the frame's first byte. (On an early byte, the frame's first bytes
         * may be read together with it, and it then counts as the frame's, as anywhere in one
         * read that starts the frame: PROTOCOL.md section 1.) */
        s = raw_connect();
        ck_assert_int_eq(hello(s), 0);
        int f = open(npz_stored, O_RDONLY | O_CLOEXEC);
        static char long_name[20001];
        memset(long_name, 'x', sizeof long_name - 1);
        msg_load(&m, 2, f, 0);
        m.u.load.name = long_name;
        encode(&m, &o);
        const size_t fd_at = 17000;
        ck_assert_uint_gt(fd_at, TD__PROTO_RX_BUF);
        ck_assert_uint_gt(o.len, fd_at);
        ck_assert_int_eq(send_fds(s, o.buf, fd_at, NULL, 0), (ssize_t)fd_at);
        ck_assert_int_eq(send_fds(s, o.buf + fd_at, o.len - fd_at, &f, 1),
                         (ssize_t)(o.len - fd_at));
        td__proto_out_destroy(&o);
        ck_assert_int_eq(wait_closed(s, 2000), 0);
        close(s);
        s = raw_connect();
        ck_assert_int_eq(hello(s), 0);
        td__proto_msg_init(&m, TD__PROTO_PING, 7);
        encode(&m, &o);
        send_fds(s, o.buf, o.len, &f, 1);
        td__proto_out_destroy(&o);
        td__proto_msg r;
        td_error err = {0};
        int rc = td__proto_recv_msg(s, NULL, &r, 2000, &err);
        ck_assert_msg(rc != 0 || r.type == TD__PROTO_ERROR, "PING with a descriptor: %s",
                      rc ? err.message : td__proto_type_name(r.type));
        if (!rc)
            td__proto_msg_destroy(&r);
        close(s);
        close(f);
    }
    {
        /* Descriptors of the wrong kind in LOAD, each answered by an ERROR on a connection that
         * stays usable: the next LOAD of a real file works. */
        int sp[2], pp[2];
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
        ck_assert_int_eq(pipe2(pp, O_CLOEXEC), 0);
        char wpath[300];
        snprintf(wpath, sizeof wpath, "%s/writeonly.npz", dir);
        save_ramp_npz(wpath, 0);
        int kinds[7] = {
            sp[0],
            pp[0],
            open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC),
            devnull,
            open(npz_stored, O_PATH | O_CLOEXEC),
            open(wpath, O_WRONLY | O_CLOEXEC),
            memfd_create("empty", MFD_CLOEXEC),
        };
        static const char *kind_names[7] = {"a socket",      "a pipe",         "a directory",
                                            "/dev/null",     "an O_PATH file", "a write-only file",
                                            "an empty memfd"};
        int s = raw_connect();
        ck_assert_int_eq(hello(s), 0);
        for (int i = 0; i < 7; i++) {
            ck_assert_int_ge(kinds[i], 0);
            msg_load(&m, (uint32_t)(10 + i), kinds[i], 0);
            td__proto_msg r;
            td_error err = {0};
            int rc = td__proto_send_msg(s, &m, NULL, 2000, &err);
            ck_assert_msg(rc == 0, "%s: %s", kind_names[i], err.message);
            rc = td__proto_recv_msg(s, NULL, &r, 5000, &err);
            ck_assert_msg(rc == 0, "LOAD of %s: no reply: %s", kind_names[i], err.message);
            ck_assert_msg(r.type == TD__PROTO_ERROR && r.u.error.code < 0, "LOAD of %s answered %s",
                          kind_names[i], td__proto_type_name(r.type));
            printf("faults: LOAD of %s: %s: %s\n", kind_names[i], td_err_name(r.u.error.code),
                   r.u.error.message);
            td__proto_msg_destroy(&r);
        }
        int f = open(npz_stored, O_RDONLY | O_CLOEXEC);
        msg_load(&m, 30, f, 0);
        td__proto_msg r;
        td_error err = {0};
        TU_OK(td__proto_send_msg(s, &m, NULL, 2000, &err), &err);
        TU_OK(td__proto_recv_msg(s, NULL, &r, 5000, &err), &err);
        ck_assert_int_eq(r.type, TD__PROTO_LOAD_OK);
        td__proto_msg_destroy(&r);
        close(f);
        close(s);
        for (int i = 0; i < 7; i++)
            if (kinds[i] != devnull)
                close(kinds[i]);
        close(sp[1]);
        close(pp[1]);
    }
    {
        /* 100 pipelined LOADs, replies never read, then gone. */
        int s = raw_connect();
        ck_assert_int_eq(hello(s), 0);
        int f = open(npz_deflated, O_RDONLY | O_CLOEXEC);
        int sent = 0;
        for (int i = 0; i < 100; i++) {
            msg_load(&m, (uint32_t)(100 + i), f, 0);
            encode(&m, &o);
            struct pollfd p = {s, POLLOUT, 0};
            if (poll(&p, 1, 1000) <= 0 || send_fds(s, o.buf, o.len, &f, 1) != (ssize_t)o.len) {
                td__proto_out_destroy(&o);
                break;
            }
            td__proto_out_destroy(&o);
            sent++;
        }
        usleep(300000);
        close(s);
        close(f);
        printf("faults: %d pipelined LOADs with descriptors sent, replies never read\n", sent);
        ck_assert_int_ge(sent, 64);
    }
    close(devnull);
    daemon_alive();

    /* 5. More clients than --max-clients: silent connections fill the daemon; those over the
     * limit are closed at once. */
    set_phase(PH_FULL);
    int over[MAX_CLIENTS + 40], refused = 0, unconnected = 0;
    for (int i = 0; i < MAX_CLIENTS + 40; i++)
        unconnected += (over[i] = raw_connect()) < 0;
    /* Those over the limit are closed at once; the accepted ones only by the idle timeout
     * (1 s): count what closes within 0.8 s. */
    int closed[MAX_CLIENTS + 40] = {0};
    double t0 = tu_now_s();
    while (tu_now_s() - t0 < 0.8) {
        for (int i = 0; i < MAX_CLIENTS + 40; i++) {
            if (closed[i] || over[i] < 0)
                continue;
            struct pollfd p = {over[i], POLLIN, 0};
            char c;
            if (poll(&p, 1, 0) == 1 && read(over[i], &c, 1) <= 0)
                closed[i] = 1;
        }
        usleep(10000);
    }
    for (int i = 0; i < MAX_CLIENTS + 40; i++) {
        refused += closed[i];
        if (over[i] >= 0)
            close(over[i]);
    }
    printf("faults: %d connections over a limit of %d: %d closed at once, %d not connected\n",
           MAX_CLIENTS + 40, MAX_CLIENTS, refused, unconnected);
    /* Only connections the daemon accepted and then closed count as refused by it. */
    ck_assert_int_eq(unconnected, 0);
    ck_assert_int_ge(refused, 40);

    /* Afterwards. */
    set_phase(PH_AFTER);
    usleep(1500000); /* the good client is served by the daemon again */
    atomic_store(&good->stop, 1);
    int st;
    waitpid(good_pid, &st, 0);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    daemon_alive();
    long total_ok = 0, total_failed = 0;
    for (int ph = PH_DYING; ph < PH_COUNT; ph++) {
        printf("faults: good client during %-18s %4ld loads from the daemon, %3ld in-process "
               "(fallback), %ld failed\n",
               phase_names[ph], atomic_load(&good->by_daemon[ph]), atomic_load(&good->fallback[ph]),
               atomic_load(&good->failed[ph]));
        total_ok += atomic_load(&good->by_daemon[ph]) + atomic_load(&good->fallback[ph]);
        total_failed += atomic_load(&good->failed[ph]);
    }
    ck_assert_msg(total_failed == 0, "the good client failed %ld times: %s", total_failed,
                  good->first_failure);
    for (int ph = PH_DYING; ph < PH_COUNT; ph++) {
        if (ph == PH_FULL || ph == PH_AFTER)
            continue;
        ck_assert_msg(atomic_load(&good->fallback[ph]) == 0,
                      "during %s the good client fell back to in-process loads %ld times",
                      phase_names[ph], atomic_load(&good->fallback[ph]));
        ck_assert_msg(atomic_load(&good->by_daemon[ph]) > 0, "no good load during %s",
                      phase_names[ph]);
    }
    ck_assert_int_gt(atomic_load(&good->by_daemon[PH_AFTER]), 0);

    int after_fds = settle(base_fds);
    usleep(300000);
    long after_rss = daemon_rss_kib();
    td_status *sts = status();
    printf("faults: good client: %ld loads, 0 failures; daemon descriptors %d before, %d after; "
           "RSS %ld kB before, %ld kB after; leases %llu, errors answered %llu\n",
           total_ok, base_fds, after_fds, base_rss, after_rss,
           (unsigned long long)td_status_get(sts, TD_STATUS_LEASES),
           (unsigned long long)td_status_get(sts, TD_STATUS_ERRORS));
    ck_assert_uint_eq(td_status_get(sts, TD_STATUS_LEASES), 0);
    td_status_free(sts);
    ck_assert_int_eq(after_fds, base_fds);
    /* glibc keeps some freed memory in its arenas; ASan keeps freed memory in quarantine. */
    long slack = UNDER_ASAN ? 256 * 1024 : 16 * 1024;
    ck_assert_msg(after_rss - base_rss <= slack, "RSS %ld kB -> %ld kB", base_rss, after_rss);
    munmap(good, sizeof *good);
}
END_TEST

/* ---------------------------------------------------------------------------------------------
 * Files truncated while the daemon reads them
 */

/* Sends LOAD of path (opened here) with mode, truncates the file to 4 KiB delay_us later, and
 * returns the reply's code (0 for LOAD_OK, whose lease is released). */
static int load_and_truncate(const char *path, uint32_t mode, useconds_t delay_us)
{
    int s = raw_connect();
    ck_assert_int_ge(s, 0);
    ck_assert_int_eq(hello(s), 0);
    int f = open(path, O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(f, 0);
    td__proto_msg m, r;
    msg_load(&m, 2, f, mode);
    td_error err = {0};
    TU_OK(td__proto_send_msg(s, &m, NULL, 5000, &err), &err);
    close(f);
    if (delay_us)
        usleep(delay_us);
    ck_assert_int_eq(truncate(path, 4096), 0);
    int rc = td__proto_recv_msg(s, NULL, &r, 30000, &err);
    ck_assert_msg(rc == 0, "no answer to a LOAD whose file was truncated: %s", err.message);
    int code;
    if (r.type == TD__PROTO_LOAD_OK) {
        code = 0;
        td__proto_msg rel, rr;
        td__proto_msg_init(&rel, TD__PROTO_RELEASE, 3);
        rel.u.release.lease = r.u.loaded.lease;
        TU_OK(td__proto_send_msg(s, &rel, NULL, 5000, &err), &err);
        TU_OK(td__proto_recv_msg(s, NULL, &rr, 5000, &err), &err);
        td__proto_msg_destroy(&rr);
    } else {
        ck_assert_int_eq(r.type, TD__PROTO_ERROR);
        code = r.u.error.code;
        ck_assert_int_lt(code, 0);
    }
    td__proto_msg_destroy(&r);
    close(s);
    return code;
}

static int count_in_log(const char *needle)
{
    size_t len;
    char *s = (char *)tu_read_file(logpath, &len);
    if (!s)
        return 0;
    int n = 0;
    for (char *p = s; (p = memmem(p, len - (size_t)(p - s), needle, strlen(needle))); p++)
        n++;
    free(s);
    return n;
}

START_TEST(test_truncated_under_daemon)
{
    start_daemon("--max-memory 1G");
    /* A 64 MiB deflated npz (the daemon inflates it: ~0.3 s), a 64 MiB big-endian npy
     * (byte-swapped), and a GGUF whose 1.5 million vocabulary strings (27 MB) take the daemon
     * ~0.1 s to index, kept pristine and copied for each try. */
    char pristine_npz[300], pristine_npy[300], pristine_gguf[300];
    char work_npz[300], work_npy[300], work_gguf[300];
    snprintf(pristine_npz, sizeof pristine_npz, "%s/pristine.npz", dir);
    snprintf(pristine_npy, sizeof pristine_npy, "%s/pristine.npy", dir);
    snprintf(pristine_gguf, sizeof pristine_gguf, "%s/pristine.gguf", dir);
    snprintf(work_npz, sizeof work_npz, "%s/work.npz", dir);
    snprintf(work_npy, sizeof work_npy, "%s/work.npy", dir);
    snprintf(work_gguf, sizeof work_gguf, "%s/work.gguf", dir);
    const char *args[] = {pristine_npz, pristine_npy, pristine_gguf, NULL};
    ck_assert_int_eq(tu_py("faults.py", "big", args), 0);
    size_t npz_len, npy_len, gguf_len;
    uint8_t *npz = tu_read_file(pristine_npz, &npz_len),
            *npy = tu_read_file(pristine_npy, &npy_len),
            *gguf = tu_read_file(pristine_gguf, &gguf_len);
    ck_assert(npz && npy && gguf);
    const char *works[] = {work_npz, work_npy, work_gguf};
    const uint8_t *pristine[] = {npz, npy, gguf};
    const size_t lens[] = {npz_len, npy_len, gguf_len};
    daemon_alive();
    /* One whole load first: the loop's inotify instance (one descriptor for every watch, kept
     * for the loop's life) belongs to the baseline. */
    {
        char warm[300];
        snprintf(warm, sizeof warm, "%s/warm.npy", dir);
        ck_assert_int_eq(tu_write_file(warm, npy, npy_len), 0);
        td_load_options opt = TD_LOAD_OPTIONS_INIT;
        opt.mode = TD_MODE_DAEMON;
        opt.socket_path = sock;
        td_array *a;
        td_error err = {0};
        TU_OK(td_load_array(warm, &opt, &a, &err), &err);
        td_array_release(a);
        evict_all();
    }
    int base = settle(-1);
    usleep(200000);
    base = tu_count_pid_fds(daemon_pid);

    static const useconds_t delays[] = {0, 500, 2000, 10000, 40000};
    int errors = 0, results = 0, tries = 0;
    for (int snap = 0; snap < 2; snap++) {
        for (size_t i = 0; i < sizeof delays / sizeof delays[0]; i++) {
            for (int which = 0; which < 3; which++) {
                const char *work = works[which];
                unlink(work); /* a new inode each time: no cached entry to hit */
                ck_assert_int_eq(tu_write_file(work, pristine[which], lens[which]), 0);
                int code = load_and_truncate(
                    work, snap ? TD__PROTO_MODE_SNAPSHOT : TD__PROTO_MODE_MAP, delays[i]);
                tries++;
                if (code)
                    errors++;
                else
                    results++;
                ck_assert_msg(waitpid(daemon_pid, NULL, WNOHANG) == 0,
                              "tensord died on a truncated %s (%s mode, %u us); see %s", work,
                              snap ? "snapshot" : "map", (unsigned)delays[i], logpath);
            }
        }
    }
    daemon_alive();
    char needle[330];
    snprintf(needle, sizeof needle, "%s: the file shrank", work_gguf);
    int shrank = count_in_log("the file shrank"), indexing = count_in_log(needle);
    printf("faults: %d LOADs of files truncated under the daemon: %d answered with an error, %d "
           "with a result; reads found the file short %d times (%d of them the GGUF's metadata "
           "or its snapshot); daemon alive\n",
           tries, errors, results, shrank, indexing);
    /* The test did reach the daemon's defences, while indexing too. */
    ck_assert_int_gt(shrank, 0);
    ck_assert_int_gt(indexing, 0);
    /* Nothing left behind: the aborted decodes' memfds and mappings are gone. */
    evict_all();
    int after = -1;
    for (int i = 0; i < 150 && after != base; i++) {
        usleep(20000);
        after = tu_count_pid_fds(daemon_pid);
    }
    ck_assert_int_eq(after, base);
    /* And the daemon still serves a whole file. */
    unlink(work_npz);
    ck_assert_int_eq(tu_write_file(work_npz, npz, npz_len), 0);
    td_load_options dm = TD_LOAD_OPTIONS_INIT;
    dm.mode = TD_MODE_DAEMON;
    dm.socket_path = sock;
    td_dict *d;
    td_error err = {0};
    TU_OK(td_load(work_npz, &dm, &d, NULL, &err), &err);
    const float *p = td_array_data(td_dict_get(d, "a"));
    ck_assert(p[65520] == 65520.0f && p[65521] == 0.0f);
    td_dict_free(d);
    free(npz);
    free(npy);
    free(gguf);
}
END_TEST

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    Suite *s = suite_create("faults");
    TCase *tc = tcase_create("faults");
    tcase_set_timeout(tc, 180);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_client_faults);
    tcase_add_test(tc, test_truncated_under_daemon);
    suite_add_tcase(s, tc);
    return tu_run(s);
}

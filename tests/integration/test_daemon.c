/*
 * test_daemon.c - a real tensord process on a temporary socket, and real client processes
 * (fork) loading through it: shared decoded bytes, one decode for many clients, restarts,
 * replaced files, snapshot mode, misbehaving clients, and requests pipelined on a connection.
 */
#include "client.h"
#include "proto.h"
#include "remote.h"
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char dir[64], sock[128], logpath[160];
static pid_t daemon_pid = -1;

static void start_daemon(const char *extra)
{
    daemon_pid = tu_daemon_start(sock, logpath, extra);
}

static void stop_daemon(int sig)
{
    if (daemon_pid <= 0)
        return;
    int st = tu_daemon_stop(daemon_pid, sig);
    if (sig == SIGTERM)
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "tensord exited badly: %d", st);
    daemon_pid = -1;
}

static void setup(void)
{
    tu_tmpdir(dir);
    snprintf(sock, sizeof sock, "%s/tensord.sock", dir);
    snprintf(logpath, sizeof logpath, "%s/tensord.log", dir);
    setenv("TENSORD_SOCKET", sock, 1);
}

static void teardown(void)
{
    stop_daemon(SIGTERM);
    tu_rmtree(dir);
}

static td_status *status(void)
{
    return tu_daemon_status(sock);
}

/* A float32 array of n elements whose value i is i * scale. */
static td_array *ramp(int64_t n, float scale)
{
    td_array *a;
    td_error err = {0};
    TU_OK(td_array_new(TD_FLOAT32, 1, &n, NULL, &a, &err), &err);
    float *p = td_array_data_mut(a);
    for (int64_t i = 0; i < n; i++)
        p[i] = (float)i * scale;
    return a;
}

static void save_npz(const char *path, int64_t n, float scale, int compressed)
{
    td_dict *d = td_dict_new();
    td_error err = {0};
    td_array *a = ramp(n, scale), *b = ramp(n / 2, -scale);
    TU_OK(td_dict_set(d, "a", a, &err), &err);
    TU_OK(td_dict_set(d, "b", b, &err), &err);
    TU_OK(compressed ? td_savez_compressed(path, d, &err) : td_savez(path, d, &err), &err);
    td_array_release(a);
    td_array_release(b);
    td_dict_free(d);
}

static int check_ramp(const td_array *a, float scale)
{
    const float *p = td_array_data(a);
    for (int64_t i = 0; i < td_array_size(a); i++)
        if (p[i] != (float)i * scale)
            return 0;
    return 1;
}

/* Loads path in daemon mode in a child process; the child checks the bytes, reports over the
 * pipe, then waits for a byte on `hold` before exiting (so that it keeps its views). */
static pid_t child_load(const char *path, float scale, int report, int hold)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid)
        return pid;
    td_load_options opt = TD_LOAD_OPTIONS_INIT;
    opt.mode = TD_MODE_DAEMON;
    td_dict *d;
    td_error err = {0};
    char ok = 'n';
    if (td_load(path, &opt, &d, NULL, &err) == 0) {
        const td_array *a = td_dict_get(d, "a");
        if (a && check_ramp(a, scale) && td_array_provenance(a) == TD_PROVENANCE_DAEMON) {
            /* Touch every page, so that the mapping is resident in this process too. */
            volatile float sum = 0;
            for (int64_t i = 0; i < td_array_size(a); i += 1024)
                sum += ((const float *)td_array_data(a))[i];
            (void)sum;
            ok = 'y';
        }
    } else {
        fprintf(stderr, "child load: %s\n", err.message);
    }
    if (write(report, &ok, 1) != 1)
        _exit(3);
    char c;
    if (hold >= 0 && read(hold, &c, 1) < 0)
        _exit(4);
    _exit(ok == 'y' ? 0 : 1);
}

static uint64_t pss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/smaps_rollup", (int)pid);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    uint64_t kib = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "Pss_Shmem: %lu kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

START_TEST(test_shared_decode_once)
{
    start_daemon(NULL);
    char path[256];
    snprintf(path, sizeof path, "%s/model.npz", dir);
    const int64_t n = 16 << 20 >> 2; /* 16 MiB of float32 in "a" */
    save_npz(path, n, 0.5f, 1);
    int rep[2], hold[2];
    ck_assert_int_eq(pipe(rep), 0);
    ck_assert_int_eq(pipe(hold), 0);
    pid_t kids[4];
    for (int i = 0; i < 4; i++)
        kids[i] = child_load(path, 0.5f, rep[1], hold[0]);
    for (int i = 0; i < 4; i++) {
        char c;
        ck_assert_int_eq(read(rep[0], &c, 1), 1);
        ck_assert_int_eq(c, 'y');
    }
    /* The decoded "a" (16 MiB, every page touched by every child) is resident once: each
     * process's proportional share of it is about a quarter. */
    uint64_t total = 0;
    for (int i = 0; i < 4; i++) {
        uint64_t p = pss_kib(kids[i]);
        total += p;
        ck_assert_msg(p <= 16 * 1024 / 4 + 1024, "child %d: Pss_Shmem %lu kB", i, p);
    }
    ck_assert_msg(total >= 16 * 1024 && total <= 16 * 1024 + 4096, "total Pss_Shmem %lu kB", total);
    td_status *st = status();
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_ENTRIES), 1);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_MISSES), 1);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_HITS), 3);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_DECODES), 1);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_LEASES), 4);
    ck_assert_uint_eq(td_status_nfiles(st), 1);
    ck_assert_uint_eq(td_status_file_get(st, 0, TD_STATUS_FILE_LEASES), 4);
    ck_assert_str_eq(td_status_file_name(st, 0), path);
    ck_assert_int_eq(td_status_file_format(st, 0), TD_FORMAT_NPZ);
    ck_assert_str_eq(td_status_file_mode(st, 0), "map");
    ck_assert_uint_eq(td_status_file_get(st, 0, TD_STATUS_FILE_LOADS), 4);
    ck_assert_uint_ge(td_status_file_get(st, 0, TD_STATUS_FILE_DERIVED_BYTES), 16 << 20);
    /* Out of range and unknown keys: nothing, not a crash. */
    ck_assert_ptr_null(td_status_file_name(st, 1));
    ck_assert_uint_eq(td_status_file_get(st, 1, TD_STATUS_FILE_LEASES), 0);
    ck_assert_uint_eq(td_status_get(st, (td_status_key)1000), 0);
    /* One user (this test's uid) loaded it first, and is charged for its decoded bytes. */
    ck_assert_uint_eq(td_status_nusers(st), 1);
    ck_assert_uint_eq(td_status_user_get(st, 0, TD_STATUS_USER_UID), getuid());
    ck_assert_uint_eq(td_status_user_get(st, 0, TD_STATUS_USER_ENTRIES), 1);
    ck_assert_uint_ge(td_status_user_get(st, 0, TD_STATUS_USER_BYTES), 16 << 20);
    ck_assert_uint_eq(td_status_user_get(st, 1, TD_STATUS_USER_UID), 0); /* out of range */
    td_status_free(st);
    ck_assert_int_eq(write(hold[1], "xxxx", 4), 4);
    for (int i = 0; i < 4; i++) {
        int s;
        waitpid(kids[i], &s, 0);
        ck_assert(WIFEXITED(s) && WEXITSTATUS(s) == 0);
    }
    /* The leases went with the processes. */
    for (int tries = 0; tries < 100; tries++) {
        st = status();
        uint64_t leases = td_status_get(st, TD_STATUS_LEASES);
        td_status_free(st);
        if (!leases)
            break;
        usleep(10000);
    }
    st = status();
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_LEASES), 0);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_ENTRIES), 1); /* still warm */
    td_status_free(st);
    close(rep[0]);
    close(rep[1]);
    close(hold[0]);
    close(hold[1]);
}
END_TEST

/* Views survive the daemon's death; the next load reconnects to the new daemon. */
START_TEST(test_daemon_restart)
{
    start_daemon(NULL);
    char path[256];
    snprintf(path, sizeof path, "%s/be.npy", dir);
    /* A big-endian npy: decoded by the daemon into a memfd. */
    const char *args[] = {path, NULL};
    ck_assert_int_eq(tu_py("daemon.py", "be-ramp", args), 0);
    td_load_options opt = TD_LOAD_OPTIONS_INIT;
    opt.mode = TD_MODE_DAEMON;
    td_array *a;
    td_error err = {0};
    TU_OK(td_load_array(path, &opt, &a, &err), &err);
    ck_assert_int_eq(td_array_provenance(a), TD_PROVENANCE_DAEMON);
    ck_assert(check_ramp(a, 0.5f));
    stop_daemon(SIGKILL);
    ck_assert(check_ramp(a, 0.5f));
    /* No daemon: daemon mode fails cleanly, auto mode falls back to embedded. */
    td_array *b;
    ck_assert_int_eq(td_load_array(path, &opt, &b, &err), TD_ECONNECT);
    TU_OK(td_load_array(path, NULL, &b, &err), &err);
    ck_assert_int_eq(td_array_provenance(b), TD_PROVENANCE_OWNED);
    td_array_release(b);
    start_daemon(NULL); /* removes the stale socket */
    TU_OK(td_load_array(path, &opt, &b, &err), &err);
    ck_assert(check_ramp(b, 0.5f));
    ck_assert(check_ramp(a, 0.5f));
    td_array_release(a);
    td_array_release(b);
}
END_TEST

/* A file replaced by rename: the next load sees the new data, old views are unchanged. */
START_TEST(test_replaced_file)
{
    start_daemon(NULL);
    char path[256], tmp[256];
    snprintf(path, sizeof path, "%s/m.npz", dir);
    snprintf(tmp, sizeof tmp, "%s/m2.npz", dir);
    save_npz(path, 4096, 1.0f, 0);
    td_load_options opt = TD_LOAD_OPTIONS_INIT;
    opt.mode = TD_MODE_DAEMON;
    td_dict *d1, *d2;
    td_error err = {0};
    TU_OK(td_load(path, &opt, &d1, NULL, &err), &err);
    save_npz(tmp, 4096, 3.0f, 0);
    ck_assert_int_eq(rename(tmp, path), 0);
    TU_OK(td_load(path, &opt, &d2, NULL, &err), &err);
    ck_assert(check_ramp(td_dict_get(d1, "a"), 1.0f));
    ck_assert(check_ramp(td_dict_get(d2, "a"), 3.0f));
    td_dict_free(d1);
    /* The superseded entry goes once nobody holds it. */
    int entries = 0;
    for (int tries = 0; tries < 200; tries++) {
        td_status *st = status();
        entries = (int)td_status_get(st, TD_STATUS_ENTRIES);
        td_status_free(st);
        if (entries == 1)
            break;
        usleep(10000);
    }
    ck_assert_int_eq(entries, 1);
    td_dict_free(d2);
}
END_TEST

/* Snapshot mode: the views read the bytes as they were even after the file is truncated. */
START_TEST(test_snapshot_truncate)
{
    char conf[256];
    snprintf(conf, sizeof conf, "%s/tensord.conf", dir);
    char text[512];
    snprintf(text, sizeof text, "# test\nmode %s/snap/ = snapshot\nmax_memory = 64M\n", dir);
    ck_assert_int_eq(tu_write_file(conf, text, strlen(text)), 0);
    char extra[300];
    snprintf(extra, sizeof extra, "--config %s", conf);
    start_daemon(extra);
    char sub[256], path[300];
    snprintf(sub, sizeof sub, "%s/snap", dir);
    ck_assert_int_eq(mkdir(sub, 0755), 0);
    snprintf(path, sizeof path, "%s/w.safetensors", sub);
    td_dict *d = td_dict_new();
    td_error err = {0};
    td_array *a = ramp(1 << 20, 0.25f);
    TU_OK(td_dict_set(d, "a", a, &err), &err);
    TU_OK(td_save_safetensors(path, d, NULL, &err), &err);
    td_array_release(a);
    td_dict_free(d);
    td_load_options opt = TD_LOAD_OPTIONS_INIT;
    opt.mode = TD_MODE_DAEMON;
    TU_OK(td_load(path, &opt, &d, NULL, &err), &err);
    ck_assert_int_eq(truncate(path, 16), 0);
    ck_assert(check_ramp(td_dict_get(d, "a"), 0.25f));
    td_status *st = status();
    ck_assert_str_eq(td_status_file_mode(st, 0), "snapshot");
    td_status_free(st);
    td_dict_free(d);
}
END_TEST

static int raw_connect(void)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    ck_assert_uint_lt(strlen(sock), sizeof sa.sun_path);
    memcpy(sa.sun_path, sock, strlen(sock) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

/* Misbehaving clients: garbage, a half frame left hanging, a frame claiming 4 GiB, a client
 * that dies mid-request. The daemon keeps serving and its descriptors return to the baseline. */
START_TEST(test_hostile_clients)
{
    start_daemon("--idle-timeout 1");
    char path[256];
    snprintf(path, sizeof path, "%s/x.npz", dir);
    save_npz(path, 1000, 2.0f, 1);
    td_load_options opt = TD_LOAD_OPTIONS_INIT;
    opt.mode = TD_MODE_DAEMON;
    td_dict *d;
    td_error err = {0};
    TU_OK(td_load(path, &opt, &d, NULL, &err), &err);
    td_dict_free(d);
    usleep(100000);
    int base = tu_count_pid_fds(daemon_pid);

    int g = raw_connect();
    ck_assert_int_eq(write(g, "\x10\0\0\0garbage garbage!", 20), 20);
    int half = raw_connect();
    ck_assert_int_eq(write(half, "\x40\0\0\0\x82", 5), 5);
    int huge = raw_connect();
    ck_assert_int_eq(write(huge, "\xff\xff\xff\xff\xdd\xff\xff\xff\xff", 9), 9);
    int quiet = raw_connect(); /* never says HELLO */
    /* A client that dies right after sending its request. */
    pid_t k = fork();
    if (k == 0) {
        alarm(5);
        td_load(path, &opt, &d, NULL, NULL);
        _exit(0);
    }
    kill(k, SIGKILL);
    waitpid(k, NULL, 0);
    /* Meanwhile a good client is served. */
    for (int i = 0; i < 20; i++) {
        TU_OK(td_load(path, &opt, &d, NULL, &err), &err);
        ck_assert(check_ramp(td_dict_get(d, "a"), 2.0f));
        td_dict_free(d);
    }
    /* The garbage and the huge frame are refused at once; the half frame and the silent client
     * after idle_timeout (1 s). */
    char buf[256];
    ssize_t r = read(g, buf, sizeof buf);
    ck_assert_msg(r >= 0 || errno == ECONNRESET, "garbage: %s", strerror(errno));
    r = read(huge, buf, sizeof buf);
    ck_assert_msg(r >= 0 || errno == ECONNRESET, "huge frame: %s", strerror(errno));
    sleep(2);
    ck_assert_int_eq(read(half, buf, sizeof buf), 0);
    ck_assert_int_eq(read(quiet, buf, sizeof buf), 0);
    close(g);
    close(half);
    close(huge);
    close(quiet);
    int after = -1;
    for (int tries = 0; tries < 100 && after != base; tries++) {
        usleep(20000);
        after = tu_count_pid_fds(daemon_pid);
    }
    ck_assert_int_eq(after, base);
    TU_OK(td_load(path, &opt, &d, NULL, &err), &err);
    td_dict_free(d);
}
END_TEST

/* PINGs id first.. first + n - 1 (data = id * 3), encoded back to back into one buffer. */
static uint8_t *encode_pings(uint32_t first, uint32_t n, size_t *len)
{
    uint8_t *buf = NULL;
    size_t used = 0;
    td_error err = {0};
    for (uint32_t i = 0; i < n; i++) {
        td__proto_msg m;
        td__proto_msg_init(&m, TD__PROTO_PING, first + i);
        m.u.ping.data = (uint64_t)(first + i) * 3;
        td__proto_out o;
        TU_OK(td__proto_encode(&m, NULL, &o, &err), &err);
        buf = realloc(buf, used + o.len);
        ck_assert_ptr_nonnull(buf);
        memcpy(buf + used, o.buf, o.len);
        used += o.len;
        td__proto_out_destroy(&o);
    }
    *len = used;
    return buf;
}

/* Reads the PONGs of PINGs first.. first + n - 1, in order. */
static void expect_pongs(td__proto_receiver *rx, int s, uint32_t first, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        td__proto_msg r;
        td_error err = {0};
        int rc = td__proto_recv_msg_rx(rx, s, 10000, &r, &err);
        ck_assert_msg(rc == 0, "PONG %u of %u: %s", i, n, err.message);
        ck_assert_uint_eq(r.type, TD__PROTO_PONG);
        ck_assert_uint_eq(r.id, first + i);
        ck_assert_uint_eq(r.u.ping.data, (uint64_t)(first + i) * 3);
        td__proto_msg_destroy(&r);
    }
}

typedef struct ping_writer {
    int s;
    const uint8_t *buf;
    size_t len;
} ping_writer;

static void *ping_writer_thread(void *arg)
{
    ping_writer *w = arg;
    for (size_t at = 0; at < w->len;) {
        ssize_t k = write(w->s, w->buf + at, w->len - at < 4096 ? w->len - at : 4096);
        if (k <= 0)
            return (void *)1;
        at += (size_t)k;
    }
    return NULL;
}

/* Requests pipelined on one connection are all answered, in order. 40 PINGs in one write: the
 * daemon reads them with one recvmsg and answers 16 per turn of its loop, the rest out of its
 * read buffer while the socket has nothing more. Then 20,000 PINGs written by a thread while
 * this one starts reading late: the replies back up, the daemon stops reading with requests
 * buffered, and goes on once the replies drain. */
START_TEST(test_pipelined_requests)
{
    start_daemon(NULL);
    int s = raw_connect();
    td_error err = {0};
    TU_OK(td__remote_hello(s, &err), &err);
    td__proto_receiver rx;
    td__proto_receiver_init_buffered(&rx, NULL);
    td__proto_msg r;
    TU_OK(td__proto_recv_msg_rx(&rx, s, 5000, &r, &err), &err);
    ck_assert_uint_eq(r.type, TD__PROTO_HELLO_OK);
    td__proto_msg_destroy(&r);

    size_t len;
    uint8_t *buf = encode_pings(100, 40, &len);
    ck_assert_uint_lt(len, TD__PROTO_RX_BUF);
    ck_assert_int_eq(write(s, buf, len), (ssize_t)len);
    free(buf);
    expect_pongs(&rx, s, 100, 40);

    const uint32_t many = 20000;
    buf = encode_pings(1000, many, &len);
    ping_writer w = {s, buf, len};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, ping_writer_thread, &w), 0);
    usleep(300000);
    expect_pongs(&rx, s, 1000, many);
    void *wrc;
    pthread_join(th, &wrc);
    ck_assert_ptr_null(wrc);
    free(buf);
    td__proto_receiver_destroy(&rx);
    close(s);
}
END_TEST

/* The same dict from both modes; bad files are refused by the daemon with the file's name. */
START_TEST(test_modes_agree)
{
    start_daemon(NULL);
    static const char *files[] = {"npy/big_endian_f4.npy",
                                  "npy/fortran_f8.npy",
                                  "npz/named.npz",
                                  "npz/compressed.npz",
                                  "safetensors/dtypes_float.safetensors",
                                  "gguf/q4_0.gguf",
                                  "gguf/all_types.gguf"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char path[512];
        tu_testdata(files[i], path, sizeof path);
        td_load_options e = TD_LOAD_OPTIONS_INIT, dm = TD_LOAD_OPTIONS_INIT;
        e.mode = TD_MODE_EMBEDDED;
        dm.mode = TD_MODE_DAEMON;
        td_dict *a, *b;
        td_meta *ma = NULL, *mb = NULL;
        int has_meta = strstr(path, ".gguf") || strstr(path, ".safetensors");
        td_error err = {0};
        TU_OK(td_load(path, &e, &a, has_meta ? &ma : NULL, &err), &err);
        TU_OK(td_load(path, &dm, &b, has_meta ? &mb : NULL, &err), &err);
        ck_assert_uint_eq(td_dict_size(a), td_dict_size(b));
        for (size_t k = 0; k < td_dict_size(a); k++) {
            const char *na, *nb;
            const td_array *x = td_dict_at(a, k, &na), *y = td_dict_at(b, k, &nb);
            ck_assert((na == NULL) == (nb == NULL));
            if (na)
                ck_assert_str_eq(na, nb);
            ck_assert_int_eq(td_array_dtype(x), td_array_dtype(y));
            ck_assert_int_eq(td_array_ndim(x), td_array_ndim(y));
            ck_assert_uint_eq(td_array_nbytes(x), td_array_nbytes(y));
            ck_assert_mem_eq(td_array_data(x), td_array_data(y), td_array_nbytes(x));
            ck_assert_int_eq(td_array_provenance(y), TD_PROVENANCE_DAEMON);
        }
        if (has_meta)
            ck_assert_uint_eq(td_meta_size(ma), td_meta_size(mb));
        td_dict_free(a);
        td_dict_free(b);
        td_meta_free(ma);
        td_meta_free(mb);
    }
    /* A corrupt file: the daemon refuses it, naming the file; auto mode does not hide that. */
    char bad[256];
    snprintf(bad, sizeof bad, "%s/bad.safetensors", dir);
    ck_assert_int_eq(tu_write_file(bad, "\x08\0\0\0\0\0\0\0{\"a\":1}", 15), 0);
    td_dict *d;
    td_error err = {0};
    int rc = td_load(bad, NULL, &d, NULL, &err);
    ck_assert_int_lt(rc, 0);
    ck_assert_ptr_nonnull(strstr(err.message, "bad.safetensors"));
}
END_TEST

/* SIGHUP reloads the configuration; pin mode serves loads (locked or not, as RLIMIT_MEMLOCK
 * allows). */
START_TEST(test_reload_and_pin)
{
    char conf[256], text[512];
    snprintf(conf, sizeof conf, "%s/tensord.conf", dir);
    snprintf(text, sizeof text, "max_memory = 1M\nmode %s/ = pin\n", dir);
    ck_assert_int_eq(tu_write_file(conf, text, strlen(text)), 0);
    char extra[300];
    snprintf(extra, sizeof extra, "--config %s", conf);
    start_daemon(extra);
    td_status *st = status();
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_BUDGET), 1 << 20);
    td_status_free(st);
    char path[256];
    snprintf(path, sizeof path, "%s/p.npz", dir);
    save_npz(path, 1 << 16, 1.5f, 0);
    td_load_options opt = TD_LOAD_OPTIONS_INIT;
    opt.mode = TD_MODE_DAEMON;
    td_dict *d;
    td_error err = {0};
    TU_OK(td_load(path, &opt, &d, NULL, &err), &err);
    ck_assert(check_ramp(td_dict_get(d, "a"), 1.5f));
    st = status();
    ck_assert_str_eq(td_status_file_mode(st, 0), "pin");
    td_status_free(st);
    td_dict_free(d);
    /* A bad file is refused and the old settings stay. */
    ck_assert_int_eq(tu_write_file(conf, "max_memory = lots\n", 18), 0);
    kill(daemon_pid, SIGHUP);
    usleep(200000);
    st = status();
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_BUDGET), 1 << 20);
    td_status_free(st);
    snprintf(text, sizeof text, "max_memory = 2M\n");
    ck_assert_int_eq(tu_write_file(conf, text, strlen(text)), 0);
    kill(daemon_pid, SIGHUP);
    uint64_t budget = 0;
    for (int tries = 0; tries < 100 && budget != 2 << 20; tries++) {
        usleep(20000);
        st = status();
        budget = td_status_get(st, TD_STATUS_BUDGET);
        td_status_free(st);
    }
    ck_assert_uint_eq(budget, 2 << 20);
}
END_TEST

/* ---- td_client: one connection for many loads ---- */

typedef struct client_job {
    td_client *c;
    const char *path;
    int loads;
    int failures;
} client_job;

static void *client_thread(void *arg)
{
    client_job *j = arg;
    for (int i = 0; i < j->loads; i++) {
        td_dict *d;
        td_error err = {0};
        if (td_client_load(j->c, j->path, NULL, &d, NULL, &err)) {
            fprintf(stderr, "client thread: %s\n", err.message);
            j->failures++;
            continue;
        }
        const td_array *a = td_dict_get(d, "a");
        if (!a || !check_ramp(a, 0.25f) || td_array_provenance(a) != TD_PROVENANCE_DAEMON)
            j->failures++;
        td_dict_free(d); /* sends RELEASE over the shared connection */
    }
    return NULL;
}

START_TEST(test_client_connection)
{
    start_daemon(NULL);
    char path[256];
    snprintf(path, sizeof path, "%s/c.npz", dir);
    save_npz(path, 50000, 0.25f, 1); /* deflated: decoded once by the daemon */
    int fds = tu_count_fds();
    td_client *c;
    td_error err = {0};
    TU_OK(td_client_connect(sock, &c, &err), &err);

    /* 4 threads x 300 loads on one connection, each released when freed. */
    pthread_t th[4];
    client_job jobs[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (client_job){c, path, 300, 0};
        ck_assert_int_eq(pthread_create(&th[i], NULL, client_thread, &jobs[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(jobs[i].failures, 0);
    }
    /* STATUS goes over the same connection after every RELEASE: the daemon saw them all, and
     * this client is the only one connected (the loads made no connections of their own). */
    td_status *st;
    TU_OK(td_client_status(c, &st, &err), &err);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_LEASES), 0);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_CLIENTS), 1);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_HITS) + td_status_get(st, TD_STATUS_MISSES),
                      1200);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_DECODES), 1);
    td_status_free(st);

    /* Held arrays keep their leases; closing the client ends them, the arrays stay valid. */
    td_dict *held[3];
    for (int i = 0; i < 3; i++)
        TU_OK(td_client_load(c, path, NULL, &held[i], NULL, &err), &err);
    TU_OK(td_client_status(c, &st, &err), &err);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_LEASES), 3);
    td_status_free(st);
    td_client_close(c);
    for (int i = 0; i < 3; i++)
        ck_assert(check_ramp(td_dict_get(held[i], "a"), 0.25f));
    st = status();
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_LEASES), 0);
    td_status_free(st);
    for (int i = 0; i < 3; i++)
        td_dict_free(held[i]); /* nothing to release any more: the client is gone */

    /* The daemon restarts under a client: the next request reconnects by itself. */
    TU_OK(td_client_connect(sock, &c, &err), &err);
    td_dict *before;
    TU_OK(td_client_load(c, path, NULL, &before, NULL, &err), &err);
    stop_daemon(SIGKILL);
    start_daemon(NULL);
    td_dict *after;
    TU_OK(td_client_load(c, path, NULL, &after, NULL, &err), &err);
    ck_assert(check_ramp(td_dict_get(before, "a"), 0.25f));
    ck_assert(check_ramp(td_dict_get(after, "a"), 0.25f));
    td_dict_free(before); /* its lease died with the old daemon: no RELEASE is sent */
    TU_OK(td_client_status(c, &st, &err), &err);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_LEASES), 1);
    td_status_free(st);
    td_dict_free(after);
    TU_OK(td_client_ping(c, &err), &err); /* reads the RELEASE's reply on the way */
    TU_OK(td_client_status(c, &st, &err), &err);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_LEASES), 0);
    td_status_free(st);
    /* An error is the daemon's answer, not a broken connection. */
    char bad[256];
    snprintf(bad, sizeof bad, "%s/bad.npy", dir);
    ck_assert_int_eq(tu_write_file(bad, "not an npy file", 15), 0);
    ck_assert_int_eq(td_client_load(c, bad, NULL, &after, NULL, &err), TD_EFORMAT);
    ck_assert_msg(strstr(err.message, "bad.npy"), "%s", err.message);
    TU_OK(td_client_ping(c, &err), &err);
    TU_OK(td_client_status(c, &st, &err), &err);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_CLIENTS), 1);
    td_status_free(st);
    td_client_close(c);
    ck_assert_int_eq(tu_count_fds(), fds);
}
END_TEST

typedef struct slow_load {
    td_client *c;
    const char *path;
    double start, end; /* of the td_client_load call */
    int rc;
} slow_load;

static void *slow_load_thread(void *arg)
{
    slow_load *s = arg;
    td_dict *d;
    td_error err = {0};
    s->start = tu_now_s();
    s->rc = td_client_load(s->c, s->path, NULL, &d, NULL, &err);
    s->end = tu_now_s();
    if (!s->rc)
        td_dict_free(d);
    return NULL;
}

/* Freeing arrays never waits for another thread's request on the same td_client: while one
 * thread's first load of a big deflated npz keeps the connection (the daemon inflates 192 MiB),
 * another frees what it loaded earlier and returns at once, not when that load ends (the free
 * must take under a quarter of the load's time, which a free that waited could not); the lease
 * is given back right after that load. */
START_TEST(test_client_release_does_not_wait)
{
    start_daemon(NULL);
    char small[256], big[256];
    snprintf(small, sizeof small, "%s/small.npz", dir);
    snprintf(big, sizeof big, "%s/big.npz", dir);
    save_npz(small, 1000, 1.0f, 0);
    save_npz(big, 32 << 20, 1.0f, 1);
    td_client *c;
    td_error err = {0};
    TU_OK(td_client_connect(sock, &c, &err), &err);
    td_dict *held;
    TU_OK(td_client_load(c, small, NULL, &held, NULL, &err), &err);
    slow_load s = {c, big, 0, 0, -1};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, slow_load_thread, &s), 0);
    usleep(100000); /* the big LOAD is in flight, the connection taken */
    double t0 = tu_now_s();
    td_dict_free(held);
    double freed = tu_now_s() - t0;
    pthread_join(th, NULL);
    TU_OK(s.rc, &err);
    double load = s.end - s.start;
    /* The free happened while the other load was in flight, or it proves nothing. */
    ck_assert_msg(s.start < t0 && t0 + freed < s.end,
                  "the big load was not in flight during the free (load %.3f..%.3f s, free "
                  "%.3f..%.3f s)",
                  s.start, s.end, t0, t0 + freed);
    fprintf(stderr, "daemon: td_dict_free took %.3f ms during another thread's %.0f ms load\n",
            freed * 1e3, load * 1e3);
    ck_assert_msg(freed < load / 4, "td_dict_free waited %.0f ms for a %.0f ms load", freed * 1e3,
                  load * 1e3);
    td_status *st;
    TU_OK(td_client_status(c, &st, &err), &err);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_LEASES), 0);
    td_status_free(st);
    td_client_close(c);
}
END_TEST

/* A td_client used in a child after fork() makes its own connection: the child's loads work, its
 * frees of what the parent loaded send nothing, and the parent's connection is undisturbed. */
START_TEST(test_client_after_fork)
{
    start_daemon(NULL);
    char path[256];
    snprintf(path, sizeof path, "%s/f.npz", dir);
    save_npz(path, 5000, 2.0f, 1);
    td_client *c;
    td_error err = {0};
    TU_OK(td_client_connect(sock, &c, &err), &err);
    td_dict *parent;
    TU_OK(td_client_load(c, path, NULL, &parent, NULL, &err), &err);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int bad = 0;
        td_dict *d;
        td_status *st;
        if (td_client_load(c, path, NULL, &d, NULL, &err) || !check_ramp(td_dict_get(d, "a"), 2.0f))
            bad |= 1;
        else
            td_dict_free(d);
        td_dict_free(parent); /* the parent's lease: nothing is sent for it */
        if (td_client_status(c, &st, &err))
            bad |= 2;
        else {
            bad |= td_status_get(st, TD_STATUS_LEASES) != 1
                       ? 4
                       : 0; /* the parent's, still held by its connection */
            bad |= td_status_get(st, TD_STATUS_CLIENTS) != 2 ? 8 : 0;
            td_status_free(st);
        }
        td_client_close(c);
        _exit(bad);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child: status %d", status);
    td_dict *again;
    TU_OK(td_client_load(c, path, NULL, &again, NULL, &err), &err);
    ck_assert(check_ramp(td_dict_get(parent, "a"), 2.0f));
    td_status *st;
    TU_OK(td_client_status(c, &st, &err), &err);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_LEASES), 2);
    td_status_free(st);
    td_dict_free(parent);
    td_dict_free(again);
    TU_OK(td_client_status(c, &st, &err), &err);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_LEASES), 0);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_CLIENTS), 1);
    td_status_free(st);
    td_client_close(c);
}
END_TEST

/* 1 when the daemon closed fd at once (a refused connection), 0 when it keeps it open. */
static int closed_by_daemon(int fd)
{
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 1000) <= 0)
        return 0;
    char c;
    return read(fd, &c, 1) == 0;
}

/* max_clients_per_uid: one user's connections beyond it are refused, and a slot it frees is
 * taken again. */
START_TEST(test_clients_per_uid)
{
    char conf[256];
    snprintf(conf, sizeof conf, "%s/tensord.conf", dir);
    static const char text[] = "max_clients_per_uid = 3\n";
    ck_assert_int_eq(tu_write_file(conf, text, sizeof text - 1), 0);
    char extra[300];
    snprintf(extra, sizeof extra, "--config %s", conf);
    start_daemon(extra);
    /* The start-up check's connection may still count for a moment: retry a refused one. */
    int fds[3];
    for (int i = 0; i < 3; i++) {
        int tries = 0;
        while ((fds[i] = raw_connect()) >= 0 && closed_by_daemon(fds[i]) && ++tries < 20) {
            close(fds[i]);
            usleep(100000);
        }
        ck_assert_msg(tries < 20, "connection %d refused", i + 1);
    }
    int extra_fd = raw_connect();
    ck_assert_msg(closed_by_daemon(extra_fd), "a 4th connection of one uid was kept");
    close(extra_fd);
    td_client *c;
    td_error err = {0};
    ck_assert_int_ne(td_client_connect(sock, &c, &err), 0);
    close(fds[0]);
    usleep(200000);
    TU_OK(td_client_connect(sock, &c, &err), &err); /* the freed slot */
    TU_OK(td_client_ping(c, &err), &err);
    td_client_close(c);
    close(fds[1]);
    close(fds[2]);
    size_t len;
    char *log = (char *)tu_read_file(logpath, &len);
    ck_assert_ptr_nonnull(log);
    ck_assert_ptr_nonnull(memmem(log, len, "max_clients_per_uid", 19));
    free(log);
}
END_TEST

/* A reply the client cannot take (a metadata string over its 16 MiB limit) is an error, and the
 * lease the daemon was about to grant with it is not kept: the connection does not fill up. */
START_TEST(test_unsendable_reply_keeps_no_lease)
{
    start_daemon(NULL);
    char path[256];
    snprintf(path, sizeof path, "%s/bigstr.gguf", dir);
    size_t n = 17u << 20;
    char *big = malloc(n);
    ck_assert_ptr_nonnull(big);
    memset(big, 'x', n);
    td_meta *m = td_meta_new();
    td_error err = {0};
    TU_OK(td_meta_set_string(m, "big", big, n, &err), &err);
    free(big);
    td_dict *d = td_dict_new();
    td_array *a = ramp(16, 1.0f);
    TU_OK(td_dict_set(d, "a", a, &err), &err);
    TU_OK(td_save_gguf(path, d, m, &err), &err);
    td_array_release(a);
    td_dict_free(d);
    td_meta_free(m);

    td_client *c;
    TU_OK(td_client_connect(sock, &c, &err), &err);
    for (int i = 0; i < 3; i++) {
        td_meta *mm;
        ck_assert_int_eq(td_client_load(c, path, NULL, &d, &mm, &err), TD_ELIMIT);
        ck_assert_msg(strstr(err.message, "bigstr.gguf"), "%s", err.message);
    }
    td_status *st;
    TU_OK(td_client_status(c, &st, &err), &err);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_LEASES), 0);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_CLIENTS), 1); /* the same connection all along */
    td_status_free(st);
    td_client_close(c);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("daemon");
    TCase *tc = tcase_create("daemon");
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_shared_decode_once);
    tcase_add_test(tc, test_daemon_restart);
    tcase_add_test(tc, test_replaced_file);
    tcase_add_test(tc, test_snapshot_truncate);
    tcase_add_test(tc, test_hostile_clients);
    tcase_add_test(tc, test_pipelined_requests);
    tcase_add_test(tc, test_modes_agree);
    tcase_add_test(tc, test_reload_and_pin);
    tcase_add_test(tc, test_client_connection);
    tcase_add_test(tc, test_unsendable_reply_keeps_no_lease);
    tcase_add_test(tc, test_client_release_does_not_wait);
    tcase_add_test(tc, test_client_after_fork);
    tcase_add_test(tc, test_clients_per_uid);
    suite_add_tcase(s, tc);
    return tu_run(s);
}

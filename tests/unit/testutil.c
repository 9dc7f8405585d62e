/*
 * testutil.c - helpers for the Check tests (see testutil.h).
 */
#include "testutil.h"
#include "ggml_quants.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

const char *tu_testdata(const char *rel, char *out, size_t cap)
{
    const char *root = getenv("TD_TESTDATA");
    ck_assert_msg(root && *root, "TD_TESTDATA is not set (ctest sets it to tests/data)");
    snprintf(out, cap, "%s/%s", root, rel);
    return out;
}

const char *tu_tmpdir(char *out)
{
    const char *t = getenv("TMPDIR");
    snprintf(out, 64, "%s/tdtest-XXXXXX", t && strlen(t) < 40 ? t : "/tmp");
    if (!mkdtemp(out))
        ck_abort_msg("mkdtemp(%s): %s", out, strerror(errno));
    return out;
}

static int tu_rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p);
}

void tu_rmtree(const char *dir)
{
    nftw(dir, tu_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int tu_count_entries(const char *path)
{
    DIR *d = opendir(path);
    ck_assert_msg(d != NULL, "%s: %s", path, strerror(errno));
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

int tu_count_pid_fds(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    return tu_count_entries(path);
}

int tu_count_fds(void)
{
    return tu_count_pid_fds(getpid()) - 1; /* the directory's own descriptor */
}

int tu_count_maps(const char *what)
{
    FILE *f = fopen("/proc/self/maps", "r");
    ck_assert_ptr_nonnull(f);
    char line[4608];
    int n = 0;
    while (fgets(line, sizeof line, f))
        n += strstr(line, what) != NULL;
    fclose(f);
    return n;
}

ssize_t tu_sendmsg_fds(int sock, const void *p, size_t n, const int *fds, unsigned nfds, int flags)
{
    struct iovec iov = {(void *)p, n};
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int) * 253)];
    } cm;
    struct msghdr mh = {0};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    ck_assert_uint_le(nfds, 253);
    if (nfds) {
        memset(&cm, 0, sizeof cm);
        mh.msg_control = cm.b;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    return sendmsg(sock, &mh, flags);
}

double tu_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

uint8_t *tu_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    uint8_t *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : 65536;
            uint8_t *b = realloc(buf, cap);
            if (!b) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = b;
        }
        size_t k = fread(buf + n, 1, cap - n, f);
        n += k;
        if (k == 0)
            break;
    }
    fclose(f);
    *len = n;
    return buf;
}

int tu_write_file(const char *path, const void *p, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t k = fwrite(p, 1, len, f);
    return fclose(f) == 0 && k == len ? 0 : -1;
}

int tu_py(const char *script, const char *cmd, const char *const *args)
{
    const char *py = getenv("TD_PYTHON"), *src = getenv("TD_SOURCE_DIR");
    ck_assert_msg(py && *py && src && *src,
                  "TD_PYTHON or TD_SOURCE_DIR is not set (ctest sets both)");
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/py/%s", src, script);
    const char *argv[64];
    int n = 0;
    argv[n++] = py;
    argv[n++] = path;
    argv[n++] = cmd;
    for (; args && *args && n < 63; args++)
        argv[n++] = *args;
    argv[n] = NULL;
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        execv(py, (char *const *)argv);
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* SHA-256 (FIPS 180-4), for comparing tensor bytes with MANIFEST.json. */
static const uint32_t tu_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define TU_ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void tu_sha_block(uint32_t h[8], const uint8_t *p)
{
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = TU_ROR(w[i - 15], 7) ^ TU_ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = TU_ROR(w[i - 2], 17) ^ TU_ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = hh + (TU_ROR(e, 6) ^ TU_ROR(e, 11) ^ TU_ROR(e, 25)) + ((e & f) ^ (~e & g)) +
                      tu_k[i] + w[i];
        uint32_t t2 =
            (TU_ROR(a, 2) ^ TU_ROR(a, 13) ^ TU_ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        hh = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += hh;
}

void tu_sha256_hex(const void *data, size_t n, char hex[65])
{
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                     0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    const uint8_t *p = data;
    size_t left = n;
    for (; left >= 64; left -= 64, p += 64)
        tu_sha_block(h, p);
    uint8_t tail[128] = {0};
    memcpy(tail, p, left);
    tail[left] = 0x80;
    size_t tl = left + 9 <= 64 ? 64 : 128;
    uint64_t bits = (uint64_t)n * 8;
    for (int i = 0; i < 8; i++)
        tail[tl - 1 - i] = (uint8_t)(bits >> (8 * i));
    tu_sha_block(h, tail);
    if (tl == 128)
        tu_sha_block(h, tail + 64);
    for (int i = 0; i < 8; i++)
        snprintf(hex + 8 * i, 9, "%08x", h[i]);
}

int tu_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}

int tu_run_isas(Suite *s)
{
    int rc = tu_run(s);
    if (rc == 0 && !td__gq_have_avx2()) {
        printf("SKIP: this CPU lacks AVX2, FMA or F16C: the portable kernels passed, the AVX2 "
               "kernels were not compared\n");
        return TU_SKIP;
    }
    return rc;
}

static void *tu_oracle_handle;
static const char *tu_oracle_path;

void *tu_oracle(void)
{
    if (tu_oracle_handle)
        return tu_oracle_handle;
    const char *path = getenv("TD_ORACLE_LIB");
    if (!path || !*path || access(path, F_OK) != 0) {
        printf("SKIP: the llama.cpp oracle is not installed (%s); scripts/install-oracle.sh "
               "installs it, scripts/test.sh does that\n",
               path && *path ? path : "TD_ORACLE_LIB is not set");
        fflush(stdout);
        exit(TU_SKIP);
    }
    tu_oracle_handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!tu_oracle_handle) {
        fprintf(stderr, "FAIL: the llama.cpp oracle %s cannot be loaded: %s\n", path, dlerror());
        exit(1);
    }
    tu_oracle_path = path;
    printf("oracle: %s\n", path);
    return tu_oracle_handle;
}

void *tu_oracle_sym(const char *name)
{
    void *p = dlsym(tu_oracle(), name);
    if (!p) {
        fprintf(stderr, "FAIL: the llama.cpp oracle %s has no symbol %s\n", tu_oracle_path, name);
        exit(1);
    }
    return p;
}

pid_t tu_daemon_start(const char *sock, const char *logpath, const char *extra)
{
    const char *build = getenv("TD_BUILD_DIR");
    ck_assert_msg(build != NULL, "TD_BUILD_DIR is not set");
    char bin[512];
    snprintf(bin, sizeof bin, "%s/daemon/tensord", build);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int fd = open(logpath ? logpath : "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0)
            dup2(fd, 2);
        const char *argv[24] = {bin, "--socket", sock, "--log-level", "debug"};
        int n = 5;
        char buf[512];
        if (extra) {
            snprintf(buf, sizeof buf, "%s", extra);
            for (char *t = strtok(buf, " "); t && n < 23; t = strtok(NULL, " "))
                argv[n++] = t;
        }
        argv[n] = NULL;
        execv(bin, (char *const *)argv);
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
            ck_abort_msg("tensord exited during start-up (status %d)", st);
        usleep(10000);
    }
    ck_abort_msg("tensord did not come up on %s", sock);
    return -1;
}

int tu_daemon_stop(pid_t pid, int sig)
{
    int st = -1;
    if (pid <= 0)
        return st;
    kill(pid, sig);
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    return st;
}

td_status *tu_daemon_status(const char *sock)
{
    td_client *c;
    td_error err = {0};
    TU_OK(td_client_connect(sock, &c, &err), &err);
    td_status *st;
    TU_OK(td_client_status(c, &st, &err), &err);
    td_client_close(c);
    return st;
}

int tu_tensorctl(const char *args, char *out, size_t cap)
{
    const char *tc = getenv("TD_TENSORCTL");
    ck_assert_msg(tc != NULL, "TD_TENSORCTL is not set");
    size_t len = strlen(tc) + strlen(args) + 16;
    char *cmd = malloc(len);
    ck_assert_ptr_nonnull(cmd);
    snprintf(cmd, len, "'%s' %s 2>&1", tc, args);
    FILE *p = popen(cmd, "r");
    free(cmd);
    ck_assert_ptr_nonnull(p);
    size_t n = 0;
    char sink[4096];
    for (;;) { /* read to the end, so that the child never blocks on a full pipe */
        size_t room = n + 1 < cap ? cap - 1 - n : 0;
        size_t got = room ? fread(out + n, 1, room, p) : fread(sink, 1, sizeof sink, p);
        if (!got)
            break;
        if (room)
            n += got;
    }
    if (cap)
        out[n] = '\0';
    int st = pclose(p);
    return st >= 0 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

void tu_buf_put(tu_buf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        b->p = realloc(b->p, cap);
        ck_assert_ptr_nonnull(b->p);
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, p, n);
    b->len += n;
}

void tu_buf_u8(tu_buf *b, uint8_t v)
{
    tu_buf_put(b, &v, 1);
}

void tu_buf_u16(tu_buf *b, uint16_t v)
{
    uint8_t x[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    tu_buf_put(b, x, 2);
}

void tu_buf_u32(tu_buf *b, uint32_t v)
{
    tu_buf_u16(b, (uint16_t)v);
    tu_buf_u16(b, (uint16_t)(v >> 16));
}

void tu_buf_u64(tu_buf *b, uint64_t v)
{
    tu_buf_u32(b, (uint32_t)v);
    tu_buf_u32(b, (uint32_t)(v >> 32));
}

void tu_buf_zeros(tu_buf *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        tu_buf_u8(b, 0);
}

void tu_buf_pad(tu_buf *b, size_t align)
{
    while (b->len % align)
        tu_buf_u8(b, 0);
}

void tu_buf_set16(tu_buf *b, size_t at, uint16_t v)
{
    ck_assert_uint_le(at + 2, b->len);
    b->p[at] = (uint8_t)v;
    b->p[at + 1] = (uint8_t)(v >> 8);
}

void tu_buf_set32(tu_buf *b, size_t at, uint32_t v)
{
    ck_assert_uint_le(at + 4, b->len);
    for (int i = 0; i < 4; i++)
        b->p[at + i] = (uint8_t)(v >> (8 * i));
}

void tu_gguf_str(tu_buf *b, const char *s)
{
    tu_buf_u64(b, strlen(s));
    tu_buf_put(b, s, strlen(s));
}

void tu_gguf_header(tu_buf *b, uint32_t version, uint64_t nt, uint64_t nkv)
{
    tu_buf_put(b, "GGUF", 4);
    tu_buf_u32(b, version);
    tu_buf_u64(b, nt);
    tu_buf_u64(b, nkv);
}

void tu_gguf_tensor(tu_buf *b, const char *name, uint32_t ndims, const uint64_t *ne, uint32_t type,
                    uint64_t off)
{
    tu_gguf_str(b, name);
    tu_buf_u32(b, ndims);
    for (uint32_t i = 0; i < ndims; i++)
        tu_buf_u64(b, ne[i]);
    tu_buf_u32(b, type);
    tu_buf_u64(b, off);
}

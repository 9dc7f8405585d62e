/*
 * test_proto_hostile.c - the wire protocol against broken and hostile peers. Every truncation
 * point of every valid frame, random bytes and random mutations of valid frames, the 5-byte
 * bomb and its relatives, counts past the end, nesting bombs, oversized frames, descriptor
 * counts that disagree with the message (more, fewer, on the wrong byte, past the limit), to
 * exact and buffered receivers, unknown message types and every field check. Each must end in a
 * clean error code, no descriptor left open (/proc/self/fd is counted before and after), and no
 * allocation beyond what the frame's bytes justify.
 *
 * Allocation accounting: outside AddressSanitizer builds this program replaces malloc, calloc,
 * realloc and free (glibc supports that; the originals are __libc_*) to keep a running total of
 * live heap bytes and its peak. A malformed frame that the pre-walk refuses must allocate
 * nothing at all; anything else must stay under 64 bytes per frame byte plus 64 KiB.
 */
#include "common.h"
#include "meta_internal.h"
#include "proto.h"
#include "testutil.h"

#include <fcntl.h>
#include <malloc.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---------------------------------------------------------------------------------------------
 * Allocation accounting
 */
#if defined(__SANITIZE_ADDRESS__)
#define TRACK_ALLOC 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(memory_sanitizer)
#define TRACK_ALLOC 0
#endif
#endif
#ifndef TRACK_ALLOC
#define TRACK_ALLOC 1
#endif

#if TRACK_ALLOC
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t m);
extern void *__libc_realloc(void *p, size_t n);
extern void __libc_free(void *p);

/* The build hides symbols by default; the replacements must be visible to the shared libraries
 * (msgpack-c's zone allocates through them). */
#define TU_EXPORT __attribute__((visibility("default")))

/* volatile: the compiler assumes malloc and free leave globals alone, and would fold the
 * measurements away in optimized builds. */
static volatile long long g_live, g_peak;

static void account(long long d)
{
    g_live += d;
    if (g_live > g_peak)
        g_peak = g_live;
}

TU_EXPORT void *malloc(size_t n)
{
    void *p = __libc_malloc(n);
    if (p)
        account((long long)malloc_usable_size(p));
    return p;
}

TU_EXPORT void *calloc(size_t n, size_t m)
{
    void *p = __libc_calloc(n, m);
    if (p)
        account((long long)malloc_usable_size(p));
    return p;
}

TU_EXPORT void *realloc(void *p, size_t n)
{
    long long old = p ? (long long)malloc_usable_size(p) : 0;
    void *q = __libc_realloc(p, n);
    if (q) {
        account(-old);
        account((long long)malloc_usable_size(q));
    } else if (!n) {
        account(-old);
    }
    return q;
}

TU_EXPORT void free(void *p)
{
    if (p)
        account(-(long long)malloc_usable_size(p));
    __libc_free(p);
}
#endif

/* Starts a measurement; alloc_peak() is the most heap held since, beyond what was live. */
#if TRACK_ALLOC
static long long g_base;
#endif
static void alloc_mark(void)
{
#if TRACK_ALLOC
    g_peak = g_live;
    g_base = g_live;
#endif
}
static long long alloc_peak(void)
{
#if TRACK_ALLOC
    return g_peak - g_base;
#else
    return 0;
#endif
}

/* ---------------------------------------------------------------------------------------------
 * Helpers
 */

static int new_fd(void)
{
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    return fd;
}

static void close_fds(int *fds, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

/* Decodes body with nfds fresh descriptors; whatever the outcome, closes what is left and
 * frees the message. Returns the code. Checks the allocation bound: 0 when the pre-walk refuses
 * the bytes, 64 per byte + 64 KiB otherwise. */
static int decode_with(const uint8_t *body, size_t len, unsigned nfds, const td__proto_limits *lim,
                       td__proto_msg *keep)
{
    td_error err = {0};
    int fds[TD__PROTO_FDS_MAX];
    for (unsigned i = 0; i < nfds; i++)
        fds[i] = new_fd();
    unsigned n = nfds;
    td__proto_msg m;
    int walk = td__proto_prewalk(body, len, lim, NULL, NULL);
    alloc_mark();
    int rc = td__proto_decode(body, len, fds, &n, lim, &m, &err);
    long long peak = alloc_peak();
    if (walk)
        ck_assert_msg(peak == 0, "%lld bytes allocated for a frame the pre-walk refuses (%s)", peak,
                      err.message);
    else
        ck_assert_msg(peak <= 64 * (long long)len + 65536,
                      "%lld bytes allocated for a %zu-byte frame", peak, len);
    if (rc) {
        ck_assert_int_lt(rc, 0);
        ck_assert_uint_eq(n, nfds); /* the descriptors stay with the caller */
        ck_assert_msg(err.message[0] != '\0', "failure without a message");
        ck_assert_int_ne(rc, TD_ENOMEM);
    } else {
        ck_assert_uint_eq(n, 0);
    }
    close_fds(fds, n);
    if (keep && !rc)
        *keep = m;
    else if (!rc)
        td__proto_msg_destroy(&m);
    else if (keep)
        *keep = m;
    return rc;
}

/* Sends p[0..n): bytes before fd_at without descriptors, the rest with nfds descriptors
 * attached to byte fd_at. */
static void send_raw(int sock, const uint8_t *p, size_t n, const int *fds, unsigned nfds,
                     size_t fd_at)
{
    if (fd_at > 0) {
        size_t k = fd_at < n ? fd_at : n;
        ck_assert_int_eq(send(sock, p, k, MSG_NOSIGNAL), (ssize_t)k);
        p += k;
        n -= k;
    }
    if (!n)
        return;
    ck_assert_int_eq(tu_sendmsg_fds(sock, p, n, fds, nfds, MSG_NOSIGNAL), (ssize_t)n);
}

/* A msgpack buffer with a frame prefix. */
typedef struct buf {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} buf;

static void buf_init(buf *b)
{
    msgpack_sbuffer_init(&b->sb);
    msgpack_packer_init(&b->pk, &b->sb, msgpack_sbuffer_write);
}

static void pk_key(buf *b, const char *k)
{
    msgpack_pack_str_with_body(&b->pk, k, strlen(k));
}

static void pk_kv(buf *b, const char *k, uint64_t v)
{
    pk_key(b, k);
    msgpack_pack_uint64(&b->pk, v);
}

/* {type, id, fds, ...n more} */
static void pk_head(buf *b, size_t more, uint64_t type, uint64_t id, uint64_t fds)
{
    msgpack_pack_map(&b->pk, 3 + more);
    pk_kv(b, "type", type);
    pk_kv(b, "id", id);
    pk_kv(b, "fds", fds);
}

/* Valid frames of every type (prefix included), built by the encoder. */
typedef struct sample {
    uint8_t *p;
    size_t n;
    unsigned nfds;
} sample;

static size_t make_samples(sample *s, size_t cap)
{
    td_error err = {0};
    size_t k = 0;
    int fd = new_fd();
    td__proto_msg m;
    td__proto_out o;

#define ADD()                                                                                      \
    do {                                                                                           \
        TU_OK(td__proto_encode(&m, NULL, &o, &err), &err);                                         \
        ck_assert_uint_lt(k, cap);                                                                 \
        s[k].p = o.buf;                                                                            \
        s[k].n = o.len;                                                                            \
        s[k].nfds = o.nfds;                                                                        \
        o.buf = NULL;                                                                              \
        td__proto_out_destroy(&o);                                                                 \
        k++;                                                                                       \
    } while (0)

    td__proto_msg_init(&m, TD__PROTO_HELLO, 1);
    m.u.hello.version = 1;
    m.u.hello.features = TD__PROTO_F_ALL;
    m.u.hello.software = "libtensord 0.1.0";
    ADD();
    m.type = TD__PROTO_HELLO_OK;
    ADD();
    td__proto_msg_init(&m, TD__PROTO_LOAD, 2);
    m.u.load.fd = fd;
    m.u.load.format = TD_FORMAT_GGUF;
    m.u.load.mode = TD__PROTO_MODE_PIN;
    m.u.load.dequant = TD_FLOAT16;
    m.u.load.name = "m.gguf";
    ADD();

    /* LOAD_OK with 2 regions, a few entries and metadata of many types. */
    td__table t;
    td__table_init(&t, TD_FORMAT_GGUF);
    const char *names[] = {"tok_embd.weight", "blk.0.attn_q.weight", "output_norm.weight"};
    td_dtype dts[] = {TD_Q4_K, TD_FLOAT16, TD_FLOAT32};
    int64_t shapes[3][2] = {{4, 256}, {8, 8}, {16, 0}};
    uint32_t nd[] = {2, 2, 1};
    uint64_t off[2] = {0, 0};
    for (int i = 0; i < 3; i++) {
        td__entry *e = td__table_add(&t, names[i], strlen(names[i]), &err);
        TU_OK(td__entry_set_shape(e, nd[i], shapes[i], &err), &err);
        e->dtype = dts[i];
        TU_OK(td__shape_nbytes(e->dtype, e->ndim, e->shape, &e->nbytes, &err), &err);
        e->region = (uint32_t)(i % 2);
        e->offset = off[e->region];
        off[e->region] += e->nbytes;
    }
    t.meta = td_meta_new();
    uint32_t u32 = 7;
    float f = 0.5f;
    int8_t i8 = -5;
    uint8_t bl = 1;
    double d = 3.25;
    TU_OK(td_meta_set_scalar(t.meta, "general.alignment", TD_META_UINT32, &u32, &err), &err);
    TU_OK(td_meta_set_scalar(t.meta, "f", TD_META_FLOAT32, &f, &err), &err);
    TU_OK(td_meta_set_scalar(t.meta, "i8", TD_META_INT8, &i8, &err), &err);
    TU_OK(td_meta_set_scalar(t.meta, "b", TD_META_BOOL, &bl, &err), &err);
    TU_OK(td_meta_set_scalar(t.meta, "d", TD_META_FLOAT64, &d, &err), &err);
    TU_OK(td_meta_set_string(t.meta, "general.name", "tiny", 4, &err), &err);
    int32_t arr[4] = {1, -2, 3, -4};
    TU_OK(td_meta_set_array(t.meta, "ints", TD_META_INT32, arr, 4, &err), &err);
    const char *toks[] = {"a", "bb", "ccc"};
    TU_OK(td_meta_set_strings(t.meta, "toks", toks, NULL, 3, &err), &err);
    td_value *outer = td_value_new_array(TD_META_ARRAY);
    TU_OK(td_value_array_push(outer, td__value_new_array_packed(TD_META_INT32, arr, 2), &err),
          &err);
    TU_OK(td_meta_set_value(t.meta, "nested", outer, &err), &err);
    td__proto_region regions[2] = {{fd, off[0] + 100, 0}, {fd, off[1], 0}};
    td__proto_msg_init(&m, TD__PROTO_LOAD_OK, 3);
    m.u.loaded.lease = 77;
    m.u.loaded.table = &t;
    m.u.loaded.regions = regions;
    m.u.loaded.nregions = 2;
    ADD();
    td__table_destroy(&t);

    td__proto_msg_init(&m, TD__PROTO_RELEASE, 4);
    m.u.release.lease = 77;
    ADD();
    td__proto_msg_init(&m, TD__PROTO_STATUS_OK, 5);
    m.u.status.stats.hits = 10;
    td__proto_status_file sf = {"x.npz", TD_FORMAT_NPZ, 1, 2, 3, 4, 5, 6, 7, 8, 9, 1};
    m.u.status.files = &sf;
    m.u.status.nfiles = 1;
    td__proto_status_user su[2] = {{0, 1, 2, 3}, {65534, 4, 5, 6}};
    m.u.status.users = su;
    m.u.status.nusers = 2;
    ADD();
    td__proto_msg_init(&m, TD__PROTO_EVICT, 6);
    m.u.evict.fd = fd;
    ADD();
    td__proto_msg_init(&m, TD__PROTO_PING, 7);
    m.u.ping.data = 5;
    ADD();
    td__proto_msg_error(&m, 8, TD_EFORMAT, NULL);
    ADD();
#undef ADD
    close(fd);
    return k;
}

static void free_samples(sample *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(s[i].p);
}

/* ---------------------------------------------------------------------------------------------
 * Tests
 */

/* Every proper prefix of every valid frame is refused, allocating nothing and closing nothing
 * it does not own; the full frame still decodes. */
START_TEST(test_every_truncation_point)
{
    int fds0 = tu_count_fds();
    sample s[16];
    size_t ns = make_samples(s, 16);
    size_t tried = 0;
    for (size_t i = 0; i < ns; i++) {
        const uint8_t *body = s[i].p + 4;
        size_t blen = s[i].n - 4;
        for (size_t cut = 0; cut < blen; cut++) {
            int rc = decode_with(body, cut, s[i].nfds, NULL, NULL);
            ck_assert_msg(rc == TD_EPROTO, "sample %zu cut at %zu: %d", i, cut, rc);
            /* Framed: the prefix announces more than there is. */
            int fds[2] = {-1, -1};
            unsigned nf = 0;
            td__proto_msg m;
            ck_assert_int_eq(td__proto_parse(s[i].p, cut + 4, fds, &nf, NULL, &m, NULL), TD_EPROTO);
            tried++;
        }
        for (size_t cut = 0; cut < 4; cut++) {
            int fds[1];
            unsigned nf = 0;
            td__proto_msg m;
            ck_assert_int_eq(td__proto_parse(s[i].p, cut, fds, &nf, NULL, &m, NULL), TD_EPROTO);
        }
        ck_assert_int_eq(decode_with(body, blen, s[i].nfds, NULL, NULL), 0);
    }
    fprintf(stderr, "truncations: %zu cut points over %zu frames\n", tried, ns);
    free_samples(s, ns);
    ck_assert_int_eq(tu_count_fds(), fds0);
}
END_TEST

/* The same truncations over a socket: the peer sends part of a frame (with its descriptors) and
 * hangs up. The receiver reports TD_ECLOSED and keeps no descriptor. */
START_TEST(test_truncation_over_socket)
{
    int fds0 = tu_count_fds();
    sample s[16];
    size_t ns = make_samples(s, 16);
    td_error err = {0};
    for (size_t i = 0; i < ns; i++) {
        size_t step = s[i].n > 200 ? 7 : 1;
        for (size_t cut = 1; cut < s[i].n; cut += step) {
            int sv[2];
            ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
            int fds[2] = {new_fd(), new_fd()};
            send_raw(sv[0], s[i].p, cut, fds, s[i].nfds, 0);
            close_fds(fds, 2);
            close(sv[0]);
            td__proto_frame f;
            ck_assert_int_eq(td__proto_recv_frame(sv[1], NULL, &f, 1000, &err), TD_ECLOSED);
            ck_assert_ptr_nonnull(strstr(err.message, "inside a frame"));
            close(sv[1]);
            ck_assert_int_eq(tu_count_fds(), fds0);

            /* A buffered receiver: the cut frame is the first in its buffer. */
            ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
            fds[0] = new_fd();
            fds[1] = new_fd();
            send_raw(sv[0], s[i].p, cut, fds, s[i].nfds, 0);
            close_fds(fds, 2);
            close(sv[0]);
            td__proto_receiver r;
            td__proto_receiver_init_buffered(&r, NULL);
            int rc, zeros = 0;
            while ((rc = td__proto_receiver_step(&r, sv[1], &f, &err)) == 0)
                ck_assert_int_lt(++zeros, 2); /* one short read, then the close */
            ck_assert_int_eq(rc, TD_ECLOSED);
            ck_assert_ptr_nonnull(strstr(err.message, "inside a frame"));
            ck_assert(!td__proto_receiver_idle(&r));
            td__proto_receiver_destroy(&r);
            close(sv[1]);
            ck_assert_int_eq(tu_count_fds(), fds0);
        }
    }
    free_samples(s, ns);
}
END_TEST

/* The 5-byte bomb and its relatives: headers promising far more than the frame holds. */
START_TEST(test_bombs_and_counts_past_the_end)
{
    int fds0 = tu_count_fds();
    static const struct {
        const char *what;
        const char *bytes;
        size_t n;
        int code;     /* with the default limits */
        int code_big; /* with every limit at its largest */
    } cases[] = {
        {"array32 bomb", "\xdd\xff\xff\xff\xff", 5, TD_ELIMIT, TD_EPROTO},
        {"map32 bomb", "\xdf\xff\xff\xff\xff", 5, TD_ELIMIT, TD_EPROTO},
        {"str32 bomb", "\xdb\xff\xff\xff\xff", 5, TD_ELIMIT, TD_EPROTO},
        {"bin32 bomb", "\xc6\x7f\xff\xff\xff", 5, TD_ELIMIT, TD_EPROTO},
        {"array16 past the end", "\xdc\x03\xe8\x01\x02", 5, TD_EPROTO, TD_EPROTO},
        {"map16 past the end", "\xde\x00\x03\xa1x\x01", 6, TD_EPROTO, TD_EPROTO},
        {"str8 past the end", "\x81\xa1x\xd9\xc8hello", 10, TD_EPROTO, TD_EPROTO},
        {"fixarray past the end", "\x9f\x01", 2, TD_EPROTO, TD_EPROTO},
        {"inner fits, outer does not", "\x92\xdc\x00\x03\x01\x01\x01", 7, TD_EPROTO, TD_EPROTO},
        {"map missing its value", "\x81\xa1\x61", 3, TD_EPROTO, TD_EPROTO},
        {"bomb inside a map", "\x81\xa4type\xdd\x00\x10\x00\x00", 11, TD_EPROTO, TD_EPROTO},
        {"length bytes cut", "\xdc\x00", 2, TD_EPROTO, TD_EPROTO},
        {"uint64 cut", "\xcf\x00\x00", 3, TD_EPROTO, TD_EPROTO},
        {"never-used byte", "\x81\xa1x\xc1", 4, TD_EPROTO, TD_EPROTO},
        {"ext8", "\x81\xa1x\xc7\x01\x01\x00", 7, TD_EPROTO, TD_EPROTO},
        {"fixext1", "\xd4\x00\x00", 3, TD_EPROTO, TD_EPROTO},
        {"bytes after the message", "\x80\x00", 2, TD_EPROTO, TD_EPROTO},
        {"empty", "", 0, TD_EPROTO, TD_EPROTO},
    };
    td__proto_limits big = {TD__PROTO_FRAME_MAX, 0,          TD__PROTO_DEPTH_MAX,
                            UINT32_MAX,          UINT32_MAX, UINT32_MAX};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const uint8_t *p = (const uint8_t *)cases[i].bytes;
        td_error err = {0};
        int rc = td__proto_prewalk(p, cases[i].n, NULL, NULL, &err);
        ck_assert_msg(rc == cases[i].code, "%s: %d (%s)", cases[i].what, rc, err.message);
        rc = td__proto_prewalk(p, cases[i].n, &big, NULL, &err);
        ck_assert_msg(rc == cases[i].code_big, "%s, big limits: %d (%s)", cases[i].what, rc,
                      err.message);
        ck_assert_int_eq(decode_with(p, cases[i].n, 0, NULL, NULL), cases[i].code);
        ck_assert_int_eq(decode_with(p, cases[i].n, 1, &big, NULL), cases[i].code_big);
    }

    /* The bomb framed and sent over a socket. */
    td_error err = {0};
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    const uint8_t frame[] = {5, 0, 0, 0, 0xdd, 0xff, 0xff, 0xff, 0xff};
    ck_assert_int_eq(write(sv[0], frame, sizeof frame), (ssize_t)sizeof frame);
    td__proto_msg m;
    alloc_mark();
    int rc = td__proto_recv_msg(sv[1], NULL, &m, 1000, &err);
    long long peak = alloc_peak();
    ck_assert_int_eq(rc, TD_ELIMIT);
    ck_assert_int_le(peak, 32); /* a 5-byte body in a buffer of its size */
    close(sv[0]);
    close(sv[1]);
    ck_assert_int_eq(tu_count_fds(), fds0);
}
END_TEST

/* Nesting, object-count and per-limit checks. */
START_TEST(test_nesting_and_object_limits)
{
    uint8_t deep[64];
    for (int i = 0; i < 40; i++)
        deep[i] = 0x91; /* [[[[...]]]] */
    deep[40] = 0x00;
    td_error err = {0};
    ck_assert_int_eq(td__proto_prewalk(deep, 41, NULL, NULL, &err), TD_ELIMIT);
    ck_assert_ptr_nonnull(strstr(err.message, "nesting"));
    ck_assert_int_eq(decode_with(deep, 41, 0, NULL, NULL), TD_ELIMIT);
    /* Exactly at the limit is fine for the walk (and then not a message). */
    td__proto_limits l = {.max_depth = 24};
    ck_assert_int_eq(td__proto_prewalk(deep + 40 - 24, 25, &l, NULL, &err), 0);
    ck_assert_int_eq(td__proto_prewalk(deep + 40 - 25, 26, &l, NULL, &err), TD_ELIMIT);
    /* Empty containers count as a level too. */
    uint8_t deep_empty[26];
    memset(deep_empty, 0x91, 25);
    deep_empty[24] = 0x90;
    ck_assert_int_eq(td__proto_prewalk(deep_empty, 25, &l, NULL, &err), TD_ELIMIT);
    ck_assert_int_eq(td__proto_prewalk(deep_empty + 1, 24, &l, NULL, &err), 0);

    /* 100 nils in an array, with room for 50 objects. */
    uint8_t many[110];
    many[0] = 0xdc;
    many[1] = 0;
    many[2] = 100;
    memset(many + 3, 0xc0, 100);
    td__proto_walk w;
    ck_assert_int_eq(td__proto_prewalk(many, 103, NULL, &w, &err), 0);
    ck_assert_uint_eq(w.objects, 101);
    ck_assert_uint_eq(w.zone_bytes, 100 * sizeof(msgpack_object));
    td__proto_limits few = {.max_objects = 50};
    ck_assert_int_eq(td__proto_prewalk(many, 103, &few, NULL, &err), TD_ELIMIT);
    td__proto_limits shortarr = {.max_count = 99};
    ck_assert_int_eq(td__proto_prewalk(many, 103, &shortarr, NULL, &err), TD_ELIMIT);
    td__proto_limits shortstr = {.max_str = 3};
    ck_assert_int_eq(td__proto_prewalk((const uint8_t *)"\xa4"
                                                        "abcd",
                                       5, &shortstr, NULL, &err),
                     TD_ELIMIT);
    ck_assert_int_eq(
        td__proto_prewalk((const uint8_t *)"\xa3\x61\x62\x63", 4, &shortstr, NULL, &err), 0);
}
END_TEST

/* Random bytes, and random mutations of valid frames (which get much further in). */
START_TEST(test_random_bytes_and_mutations)
{
    int fds0 = tu_count_fds();
    uint64_t x = 0x9e3779b97f4a7c15ull;
#define RND() (x ^= x << 13, x ^= x >> 7, x ^= x << 17, x)
    uint8_t b[1024];
    int ok = 0;
    for (int it = 0; it < 20000; it++) {
        size_t n = RND() % sizeof b;
        for (size_t i = 0; i < n; i++)
            b[i] = (uint8_t)RND();
        if (it % 2 && n)
            b[0] = (uint8_t)(0x80 | (RND() & 0x0f)); /* at least start like a message */
        ok += decode_with(b, n, (unsigned)(RND() % 3), NULL, NULL) == 0;
    }
    sample s[16];
    size_t ns = make_samples(s, 16);
    int codes[32] = {0};
    for (int it = 0; it < 30000; it++) {
        const sample *sm = &s[RND() % ns];
        size_t n = sm->n - 4;
        if (n > sizeof b)
            n = sizeof b;
        memcpy(b, sm->p + 4, n);
        int flips = 1 + (int)(RND() % 4);
        for (int k = 0; k < flips; k++) {
            size_t at = RND() % n;
            switch (RND() % 3) {
            case 0:
                b[at] = (uint8_t)RND();
                break;
            case 1:
                b[at] ^= (uint8_t)(1u << (RND() % 8));
                break;
            default:
                b[at] = (uint8_t)(b[at] + 1);
                break;
            }
        }
        unsigned nfds = RND() % 4 == 0 ? (unsigned)(RND() % 3) : sm->nfds;
        int rc = decode_with(b, n, nfds, NULL, NULL);
        codes[-rc < 32 && rc <= 0 ? -rc : 31]++;
    }
    fprintf(stderr, "mutations: ok %d, EPROTO %d, ELIMIT %d, EDTYPE %d, EDUP %d, ENOTSUP %d\n",
            codes[0], codes[-TD_EPROTO], codes[-TD_ELIMIT], codes[-TD_EDTYPE], codes[-TD_EDUP],
            codes[-TD_ENOTSUP]);
    ck_assert_int_gt(codes[0], 0); /* some mutations land on harmless values */
    ck_assert_int_gt(codes[-TD_EPROTO], 0);
    free_samples(s, ns);
    (void)ok;
#undef RND
    ck_assert_int_eq(tu_count_fds(), fds0);
}
END_TEST

/* Frame lengths: 0, one past the limit, the maximum u32; exactly at the limit is accepted. */
START_TEST(test_oversized_frames)
{
    int fds0 = tu_count_fds();
    td_error err = {0};
    td__proto_msg m;
    td__proto_msg_init(&m, TD__PROTO_PING, 1);
    td__proto_out o;
    TU_OK(td__proto_encode(&m, NULL, &o, &err), &err);
    uint32_t blen = (uint32_t)(o.len - 4);

    for (int k = 0; k < 2; k++) {
        int sv[2];
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        ck_assert_int_eq(write(sv[0], o.buf, o.len), (ssize_t)o.len);
        td__proto_limits l = {.max_frame = blen - (uint32_t)k};
        td__proto_msg b;
        int rc = td__proto_recv_msg(sv[1], &l, &b, 1000, &err);
        if (k == 0) {
            TU_OK(rc, &err);
            td__proto_msg_destroy(&b);
        } else {
            ck_assert_int_eq(rc, TD_ELIMIT);
            ck_assert_ptr_nonnull(strstr(err.message, "limit"));
        }
        close(sv[0]);
        close(sv[1]);
    }

    const uint32_t lens[] = {0, TD__PROTO_DEFAULT_MAX_FRAME + 1, UINT32_MAX};
    for (size_t i = 0; i < 3; i++) {
        int sv[2];
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        uint8_t hdr[8];
        td__put32(hdr, lens[i]);
        memcpy(hdr + 4, "\x80\x80\x80\x80", 4);
        int fds[3] = {new_fd(), new_fd(), new_fd()};
        send_raw(sv[0], hdr, sizeof hdr, fds, 3, 0);
        close_fds(fds, 3);
        td__proto_receiver r;
        td__proto_receiver_init(&r, NULL);
        td__proto_frame f;
        alloc_mark();
        int rc = td__proto_receiver_step(&r, sv[1], &f, &err);
        long long peak = alloc_peak();
        ck_assert_int_eq(rc, lens[i] ? TD_ELIMIT : TD_EPROTO);
        ck_assert_int_eq(peak, 0); /* refused from the prefix alone */
        ck_assert_int_eq(td__proto_receiver_step(&r, sv[1], &f, &err), rc); /* sticky */
        td__proto_receiver_destroy(&r);
        close(sv[0]);
        close(sv[1]);
        ck_assert_int_eq(tu_count_fds(), fds0);

        /* In memory: td__proto_parse refuses from the prefix too. */
        unsigned nf = 0;
        alloc_mark();
        rc = td__proto_parse(hdr, sizeof hdr, fds, &nf, NULL, &m, &err);
        peak = alloc_peak(); /* before ck_assert, which allocates */
        ck_assert_int_eq(rc, lens[i] ? TD_ELIMIT : TD_EPROTO);
        ck_assert_int_eq(peak, 0);
    }

    /* The same lengths to a buffered receiver, after a good frame that came with the same
     * read: the good frame is handed out, then the bad length fails, stays failed, and the
     * descriptors that came on it are closed. Only the read buffer is allocated for it. */
    for (size_t i = 0; i < 3; i++) {
        int sv[2];
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        uint8_t hdr[8];
        td__put32(hdr, lens[i]);
        memcpy(hdr + 4, "\x80\x80\x80\x80", 4);
        int fds[3] = {new_fd(), new_fd(), new_fd()};
        send_raw(sv[0], o.buf, o.len, NULL, 0, 0);
        send_raw(sv[0], hdr, sizeof hdr, fds, 3, 0);
        close_fds(fds, 3);
        td__proto_receiver r;
        td__proto_receiver_init_buffered(&r, NULL);
        td__proto_frame f;
        alloc_mark();
        ck_assert_int_eq(td__proto_receiver_step(&r, sv[1], &f, &err), 1);
        ck_assert_uint_eq(f.len, blen);
        ck_assert(td__proto_receiver_ready(&r)); /* the bad length is there: no read needed */
        td__proto_frame_destroy(&f);
        int rc = td__proto_receiver_step(&r, sv[1], &f, &err);
        long long peak = alloc_peak();
        ck_assert_int_eq(rc, lens[i] ? TD_ELIMIT : TD_EPROTO);
        ck_assert_int_le(peak, TD__PROTO_RX_BUF + 4096);
        ck_assert_int_eq(td__proto_receiver_step(&r, sv[1], &f, &err), rc); /* sticky */
        ck_assert_int_eq(tu_count_fds(), fds0 + 2); /* the three are closed already */
        td__proto_receiver_destroy(&r);
        close(sv[0]);
        close(sv[1]);
        ck_assert_int_eq(tu_count_fds(), fds0);
    }

    /* A peer announcing a large frame and sending little: the buffer follows the bytes. */
    {
        int sv[2];
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv), 0);
        uint8_t hdr[4 + 100];
        td__put32(hdr, 60u << 20);
        memset(hdr + 4, 0xc0, 100);
        ck_assert_int_eq(write(sv[0], hdr, sizeof hdr), (ssize_t)sizeof hdr);
        for (int buffered = 0; buffered < 2; buffered++) {
            td__proto_receiver r;
            if (buffered) {
                td__proto_receiver_init_buffered(&r, NULL);
                ck_assert_int_eq(write(sv[0], hdr, sizeof hdr), (ssize_t)sizeof hdr);
            } else {
                td__proto_receiver_init(&r, NULL);
            }
            td__proto_frame f;
            char peek;
            alloc_mark();
            int rc;
            while ((rc = td__proto_receiver_step(&r, sv[1], &f, &err)) == 0 &&
                   recv(sv[1], &peek, 1, MSG_PEEK | MSG_DONTWAIT) > 0)
                ; /* past a short read, until the socket is empty */
            long long peak = alloc_peak();
            ck_assert_int_eq(rc, 0);
            ck_assert_int_le(peak, 128 * 1024 + (buffered ? TD__PROTO_RX_BUF : 0));
            td__proto_receiver_destroy(&r);
        }
        close(sv[0]);
        close(sv[1]);
    }

    /* decode itself bounds the body. */
    td__proto_limits small = {.max_frame = blen - 1};
    ck_assert_int_eq(decode_with(o.buf + 4, blen, 0, &small, NULL), TD_ELIMIT);
    td__proto_out_destroy(&o);
    ck_assert_int_eq(tu_count_fds(), fds0);
}
END_TEST

/* Descriptor counts that disagree with the message, over a real socket. */
START_TEST(test_wrong_descriptor_counts)
{
    int fds0 = tu_count_fds();
    td_error err = {0};
    sample s[16];
    size_t ns = make_samples(s, 16);
    const sample *ping = NULL, *load = NULL, *loaded = NULL;
    for (size_t i = 0; i < ns; i++) {
        uint8_t t = 0;
        td__proto_msg m;
        int fds[2] = {-1, -1};
        unsigned nf = s[i].nfds;
        for (unsigned k = 0; k < nf; k++)
            fds[k] = new_fd();
        if (td__proto_parse(s[i].p, s[i].n, fds, &nf, NULL, &m, &err) == 0) {
            t = (uint8_t)m.type;
            td__proto_msg_destroy(&m);
        }
        close_fds(fds, nf);
        if (t == TD__PROTO_PING)
            ping = &s[i];
        if (t == TD__PROTO_LOAD)
            load = &s[i];
        if (t == TD__PROTO_LOAD_OK)
            loaded = &s[i];
    }
    ck_assert(ping && load && loaded);
    ck_assert_int_eq(tu_count_fds(), fds0);

    /* Both calls are sent before the receiver reads, so the kernel glues them into one read.
     * An exact receiver reads the length prefix alone first: descriptors past it come with a
     * read that starts no frame. A buffered receiver reads both calls at once: the read starts
     * the frame, so the descriptors are the frame's (PROTOCOL.md section 1), and its declared
     * count decides. */
    static const struct {
        int which;      /* 0 ping, 1 load, 2 load_ok */
        unsigned nfds;  /* attached */
        size_t at;      /* byte they ride on */
        unsigned limit; /* receiver's max_fds (0: default) */
        int recv_rc;    /* from an exact receiver */
        int buf_rc;     /* from a buffered one */
        int dec_rc;     /* from the decoder when the frame arrived */
    } cases[] = {
        {0, 2, 0, 0, 0, 0, TD_EPROTO},         /* PING declares 0, 2 attached */
        {1, 0, 0, 0, 0, 0, TD_EPROTO},         /* LOAD declares 1, none attached */
        {1, 3, 0, 0, 0, 0, TD_EPROTO},         /* LOAD declares 1, 3 attached */
        {2, 1, 0, 0, 0, 0, TD_EPROTO},         /* LOAD_OK declares 2, 1 attached */
        {2, 3, 0, 0, 0, 0, TD_EPROTO},         /* LOAD_OK declares 2, 3 attached */
        {1, 1, 2, 0, 0, 0, 0},                 /* on the prefix's third byte */
        {1, 1, 4, 0, TD_EPROTO, 0, 0},         /* on the body's first byte */
        {1, 1, 9, 0, TD_EPROTO, 0, 0},         /* in the body */
        {0, 1, 9, 0, TD_EPROTO, 0, TD_EPROTO}, /* in a PING's body */
        {2, 6, 0, 4, TD_ELIMIT, TD_ELIMIT, 0}, /* more than the receiver takes: MSG_CTRUNC */
        {2, 2, 0, 1, TD_ELIMIT, TD_ELIMIT, 0}, /* the same at the smallest limit */
        {2, 2, 0, 0, 0, 0, 0},                 /* and the right count works */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const sample *sm = cases[i].which == 0 ? ping : cases[i].which == 1 ? load : loaded;
        int sv[2];
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        int fds[8];
        for (unsigned k = 0; k < cases[i].nfds; k++)
            fds[k] = new_fd();
        send_raw(sv[0], sm->p, sm->n, fds, cases[i].nfds, cases[i].at);
        close_fds(fds, cases[i].nfds);
        td__proto_limits lim = {.max_fds = cases[i].limit};
        td__proto_msg m;
        int rc = td__proto_recv_msg(sv[1], &lim, &m, 1000, &err);
        int want = cases[i].recv_rc ? cases[i].recv_rc : cases[i].dec_rc;
        ck_assert_msg(rc == want, "case %zu: %d (%s), want %d", i, rc, err.message, want);
        if (!rc)
            td__proto_msg_destroy(&m);
        close(sv[0]);
        close(sv[1]);
        ck_assert_msg(tu_count_fds() == fds0, "case %zu leaked %d descriptors", i,
                      tu_count_fds() - fds0);

        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        for (unsigned k = 0; k < cases[i].nfds; k++)
            fds[k] = new_fd();
        send_raw(sv[0], sm->p, sm->n, fds, cases[i].nfds, cases[i].at);
        close_fds(fds, cases[i].nfds);
        td__proto_receiver r;
        td__proto_receiver_init_buffered(&r, &lim);
        rc = td__proto_recv_msg_rx(&r, sv[1], 1000, &m, &err);
        want = cases[i].buf_rc ? cases[i].buf_rc : cases[i].dec_rc;
        ck_assert_msg(rc == want, "case %zu, buffered: %d (%s), want %d", i, rc, err.message, want);
        if (!rc)
            td__proto_msg_destroy(&m);
        td__proto_receiver_destroy(&r);
        close(sv[0]);
        close(sv[1]);
        ck_assert_msg(tu_count_fds() == fds0, "case %zu, buffered, leaked %d descriptors", i,
                      tu_count_fds() - fds0);
    }

    /* Descriptors arrive, then the peer hangs up inside the frame. */
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    int fds[2] = {new_fd(), new_fd()};
    send_raw(sv[0], loaded->p, loaded->n / 2, fds, 2, 0);
    close_fds(fds, 2);
    close(sv[0]);
    td__proto_receiver r;
    td__proto_receiver_init(&r, NULL);
    td__proto_frame f;
    /* The read of the body's half that came is short: that step says "wait" (0), the next one
     * reads the end of the stream. */
    ck_assert_int_eq(td__proto_receiver_step(&r, sv[1], &f, &err), 0);
    ck_assert_int_eq(td__proto_receiver_step(&r, sv[1], &f, &err), TD_ECLOSED);
    ck_assert(!td__proto_receiver_idle(&r)); /* not a clean disconnect */
    td__proto_receiver_destroy(&r);
    close(sv[1]);

    /* Descriptors held in a half-read frame are closed by destroy. */
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv), 0);
    fds[0] = new_fd();
    send_raw(sv[0], load->p, load->n - 3, fds, 1, 0);
    close(fds[0]);
    td__proto_receiver_init(&r, NULL);
    ck_assert_int_eq(td__proto_receiver_step(&r, sv[1], &f, &err), 0);
    ck_assert_uint_eq(r.nfds, 1);
    ck_assert(!td__proto_receiver_idle(&r));
    ck_assert_int_eq(tu_count_fds(), fds0 + 3);
    td__proto_receiver_destroy(&r);
    close(sv[0]);
    close(sv[1]);

    free_samples(s, ns);
    ck_assert_int_eq(tu_count_fds(), fds0);
}
END_TEST

/* Descriptors on a read in which no frame starts, to a buffered receiver: refused (TD_EPROTO)
 * and closed, whether the frame's start was read alone, or with a whole frame before it, or
 * the frame is longer than the buffer. Read together with the frame's start, the same
 * descriptors are the frame's. */
START_TEST(test_buffered_misplaced_descriptors)
{
    int fds0 = tu_count_fds();
    td_error err = {0};
    const size_t blen = 100, big = TD__PROTO_RX_BUF + 1000;
    uint8_t *p = malloc(TD__PROTO_PREFIX + big);
    for (int variant = 0; variant < 4; variant++) {
        size_t len = variant == 3 ? big : blen;
        td__put32(p, (uint32_t)len);
        memset(p + TD__PROTO_PREFIX, 0x5a, len);
        size_t n = TD__PROTO_PREFIX + len, cut = variant == 3 ? TD__PROTO_RX_BUF + 100 : 10;
        int sv[2];
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        td__proto_receiver r;
        td__proto_receiver_init_buffered(&r, NULL);
        td__proto_frame f;
        if (variant == 1) { /* a whole frame first, with the cut frame's start in one call */
            uint8_t two[2 * (TD__PROTO_PREFIX + 100)];
            memcpy(two, p, n);
            memcpy(two + n, p, cut);
            send_raw(sv[0], two, n + cut, NULL, 0, 0);
            ck_assert_int_eq(td__proto_receiver_step(&r, sv[1], &f, &err), 1);
            td__proto_frame_destroy(&f);
        } else {
            send_raw(sv[0], p, cut, NULL, 0, 0);
        }
        if (variant != 2) /* read what came: a short read, no frame whole */
            ck_assert_int_eq(td__proto_receiver_step(&r, sv[1], &f, &err), 0);
        int fds[2] = {new_fd(), new_fd()};
        send_raw(sv[0], p + cut, n - cut, fds, 2, 0);
        close_fds(fds, 2);
        int rc;
        while ((rc = td__proto_receiver_step(&r, sv[1], &f, &err)) == 0)
            ;               /* variant 3 reads the long frame's body in pieces */
        if (variant == 2) { /* both calls in one read, which starts the frame */
            ck_assert_int_eq(rc, 1);
            ck_assert_uint_eq(f.nfds, 2);
            td__proto_frame_destroy(&f);
        } else {
            ck_assert_msg(rc == TD_EPROTO, "variant %d: %d (%s)", variant, rc, err.message);
            ck_assert_ptr_nonnull(strstr(err.message, "after its first byte"));
            ck_assert_int_eq(tu_count_fds(), fds0 + 2); /* closed at once */
            ck_assert_int_eq(td__proto_receiver_step(&r, sv[1], &f, &err), TD_EPROTO);
        }
        td__proto_receiver_destroy(&r);
        close(sv[0]);
        close(sv[1]);
        ck_assert_int_eq(tu_count_fds(), fds0);
    }
    free(p);
}
END_TEST

/* Unknown message types: TD_ENOTSUP with the id kept, so the daemon can answer and go on. */
START_TEST(test_unknown_message_types)
{
    int fds0 = tu_count_fds();
    const uint64_t types[] = {0, 7, 0x42, 0x80, 0x87, 0xfe, 0x100, UINT32_MAX};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        for (unsigned nfds = 0; nfds < 2; nfds++) {
            buf b;
            buf_init(&b);
            pk_head(&b, 1, types[i], 4242, nfds);
            pk_kv(&b, "future_field", 1);
            td__proto_msg m;
            int rc = decode_with((const uint8_t *)b.sb.data, b.sb.size, nfds, NULL, &m);
            ck_assert_int_eq(rc, TD_ENOTSUP);
            ck_assert_uint_eq(m.type, (uint32_t)types[i]);
            ck_assert_uint_eq(m.id, 4242);
            msgpack_sbuffer_destroy(&b.sb);
        }
    }
    /* A type beyond 32 bits, or no type at all, is not a message. */
    buf b;
    buf_init(&b);
    pk_head(&b, 0, 1ull << 32, 1, 0);
    ck_assert_int_eq(decode_with((const uint8_t *)b.sb.data, b.sb.size, 0, NULL, NULL), TD_EPROTO);
    msgpack_sbuffer_destroy(&b.sb);
    buf_init(&b);
    msgpack_pack_map(&b.pk, 1);
    pk_kv(&b, "id", 3);
    ck_assert_int_eq(decode_with((const uint8_t *)b.sb.data, b.sb.size, 0, NULL, NULL), TD_EPROTO);
    msgpack_sbuffer_destroy(&b.sb);
    ck_assert_int_eq(tu_count_fds(), fds0);
}
END_TEST

/* A LOAD_OK with one entry and one region, every part replaceable. */
typedef struct bad_loaded {
    const char *name;
    size_t name_len;
    uint64_t dtype;
    uint32_t ndim;
    uint64_t region, offset, nbytes;
    uint64_t region_size;
    uint64_t lease;
    int dup_entry;
    int regions;    /* regions in the array (1) */
    int region_fd1; /* fd index of the second region */
} bad_loaded;

static void pack_loaded(buf *b, const bad_loaded *c, unsigned nfds)
{
    pk_head(b, 5, TD__PROTO_LOAD_OK, 9, nfds);
    pk_kv(b, "lease", c->lease);
    pk_kv(b, "format", TD_FORMAT_SAFETENSORS);
    pk_key(b, "regions");
    msgpack_pack_array(&b->pk, (size_t)c->regions);
    for (int r = 0; r < c->regions; r++) {
        msgpack_pack_array(&b->pk, 2);
        msgpack_pack_uint64(&b->pk, r ? (uint64_t)c->region_fd1 : 0);
        msgpack_pack_uint64(&b->pk, c->region_size);
    }
    pk_key(b, "entries");
    msgpack_pack_array(&b->pk, c->dup_entry ? 2 : 1);
    for (int k = 0; k < 1 + c->dup_entry; k++) {
        msgpack_pack_array(&b->pk, 6);
        msgpack_pack_str_with_body(&b->pk, c->name, c->name_len);
        msgpack_pack_uint64(&b->pk, c->dtype);
        msgpack_pack_array(&b->pk, c->ndim);
        for (uint32_t i = 0; i < c->ndim; i++)
            msgpack_pack_uint64(&b->pk, i == 0 ? 4 : 1);
        msgpack_pack_uint64(&b->pk, c->region);
        msgpack_pack_uint64(&b->pk, c->offset + (uint64_t)k * 16);
        msgpack_pack_uint64(&b->pk, c->nbytes);
    }
    pk_key(b, "meta");
    msgpack_pack_nil(&b->pk);
}

START_TEST(test_bad_loaded_fields)
{
    int fds0 = tu_count_fds();
    const bad_loaded good = {"w", 1, TD_FLOAT32, 2, 0, 0, 16, 64, 1, 0, 1, 1};
    struct {
        const char *what;
        bad_loaded c;
        int code;
    } cases[] = {
        {"good", good, 0},
        {"past the region", good, TD_EPROTO},
        {"nbytes mismatch", good, TD_EPROTO},
        {"dtype 999", good, TD_EDTYPE},
        {"33 dimensions", good, TD_EPROTO},
        {"NUL in a name", good, TD_EPROTO},
        {"empty name", good, TD_EPROTO},
        {"duplicate names", good, TD_EDUP},
        {"region out of range", good, TD_EPROTO},
        {"lease 0", good, TD_EPROTO},
        {"offset + nbytes wraps", good, TD_EPROTO},
        {"two regions, one fd index twice", good, TD_EPROTO},
        {"two regions, fine", good, 0},
    };
    cases[1].c.region_size = 15;
    cases[2].c.nbytes = 17;
    cases[3].c.dtype = 999;
    cases[4].c.ndim = 33;
    cases[5].c.name = "a\0b";
    cases[5].c.name_len = 3;
    cases[6].c.name_len = 0;
    cases[7].c.dup_entry = 1;
    cases[7].c.region_size = 64;
    cases[8].c.region = 1;
    cases[9].c.lease = 0;
    cases[10].c.offset = UINT64_MAX - 8;
    cases[10].c.region_size = UINT64_MAX;
    cases[11].c.regions = 2;
    cases[11].c.region_fd1 = 0;
    cases[12].c.regions = 2;
    cases[12].c.region_fd1 = 1;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        buf b;
        buf_init(&b);
        unsigned nfds = (unsigned)cases[i].c.regions;
        pack_loaded(&b, &cases[i].c, nfds);
        td__proto_msg m;
        int rc = decode_with((const uint8_t *)b.sb.data, b.sb.size, nfds, NULL, &m);
        ck_assert_msg(rc == cases[i].code, "%s: %d, want %d", cases[i].what, rc, cases[i].code);
        if (!rc)
            td__proto_msg_destroy(&m);
        /* The same with a declared count that is off by one. */
        msgpack_sbuffer_destroy(&b.sb);
        buf_init(&b);
        pack_loaded(&b, &cases[i].c, nfds + 1);
        ck_assert_int_eq(decode_with((const uint8_t *)b.sb.data, b.sb.size, nfds + 1, NULL, NULL),
                         TD_EPROTO);
        msgpack_sbuffer_destroy(&b.sb);
        ck_assert_int_eq(tu_count_fds(), fds0);
    }
}
END_TEST

/* Metadata values that cannot be what they claim. */
static int decode_meta_value(void (*packv)(msgpack_packer *pk), int dup)
{
    buf b;
    buf_init(&b);
    pk_head(&b, 5, TD__PROTO_LOAD_OK, 1, 0);
    pk_kv(&b, "lease", 1);
    pk_kv(&b, "format", TD_FORMAT_GGUF);
    pk_key(&b, "regions");
    msgpack_pack_array(&b.pk, 0);
    pk_key(&b, "entries");
    msgpack_pack_array(&b.pk, 0);
    pk_key(&b, "meta");
    msgpack_pack_map(&b.pk, dup ? 2 : 1);
    for (int k = 0; k <= dup; k++) {
        msgpack_pack_str_with_body(&b.pk, "key", 3);
        packv(&b.pk);
    }
    int rc = decode_with((const uint8_t *)b.sb.data, b.sb.size, 0, NULL, NULL);
    msgpack_sbuffer_destroy(&b.sb);
    return rc;
}

static void v_u8_300(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 2);
    msgpack_pack_uint8(pk, TD_META_UINT8);
    msgpack_pack_uint16(pk, 300);
}
static void v_i8_m129(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 2);
    msgpack_pack_uint8(pk, TD_META_INT8);
    msgpack_pack_int16(pk, -129);
}
static void v_i64_big(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 2);
    msgpack_pack_uint8(pk, TD_META_INT64);
    msgpack_pack_uint64(pk, (uint64_t)INT64_MAX + 1);
}
static void v_u32_neg(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 2);
    msgpack_pack_uint8(pk, TD_META_UINT32);
    msgpack_pack_int8(pk, -1);
}
static void v_f32_int(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 2);
    msgpack_pack_uint8(pk, TD_META_FLOAT32);
    msgpack_pack_uint8(pk, 1);
}
static void v_bool_int(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 2);
    msgpack_pack_uint8(pk, TD_META_BOOL);
    msgpack_pack_uint8(pk, 1);
}
static void v_type13(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 2);
    msgpack_pack_uint8(pk, 13);
    msgpack_pack_uint8(pk, 1);
}
static void v_string_bin(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 2);
    msgpack_pack_uint8(pk, TD_META_STRING);
    msgpack_pack_bin_with_body(pk, "ab", 2);
}
static void v_bool_array_2(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 3);
    msgpack_pack_uint8(pk, TD_META_ARRAY);
    msgpack_pack_uint8(pk, TD_META_BOOL);
    msgpack_pack_bin_with_body(pk, "\x00\x01\x02", 3);
}
static void v_u32_array_5bytes(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 3);
    msgpack_pack_uint8(pk, TD_META_ARRAY);
    msgpack_pack_uint8(pk, TD_META_UINT32);
    msgpack_pack_bin_with_body(pk, "\x00\x01\x02\x03\x04", 5);
}
static void v_string_array_int(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 3);
    msgpack_pack_uint8(pk, TD_META_ARRAY);
    msgpack_pack_uint8(pk, TD_META_STRING);
    msgpack_pack_array(pk, 2);
    msgpack_pack_str_with_body(pk, "a", 1);
    msgpack_pack_uint8(pk, 1);
}
static void v_array_of_array_holding_scalar(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 3);
    msgpack_pack_uint8(pk, TD_META_ARRAY);
    msgpack_pack_uint8(pk, TD_META_ARRAY);
    msgpack_pack_array(pk, 1);
    msgpack_pack_array(pk, 2);
    msgpack_pack_uint8(pk, TD_META_UINT8);
    msgpack_pack_uint8(pk, 1);
}
static void v_nested(msgpack_packer *pk, int depth)
{
    msgpack_pack_array(pk, 3);
    msgpack_pack_uint8(pk, TD_META_ARRAY);
    if (depth == 1) {
        msgpack_pack_uint8(pk, TD_META_UINT8);
        msgpack_pack_bin_with_body(pk, "\x07", 1);
        return;
    }
    msgpack_pack_uint8(pk, TD_META_ARRAY);
    msgpack_pack_array(pk, 1);
    v_nested(pk, depth - 1);
}
static void v_nested_max(msgpack_packer *pk)
{
    v_nested(pk, TD_META_MAX_DEPTH);
}
static void v_nested_too_deep(msgpack_packer *pk)
{
    v_nested(pk, TD_META_MAX_DEPTH + 1);
}
static void v_ok(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 2);
    msgpack_pack_uint8(pk, TD_META_INT16);
    msgpack_pack_int16(pk, -300);
}

START_TEST(test_bad_metadata)
{
    int fds0 = tu_count_fds();
    ck_assert_int_eq(decode_meta_value(v_ok, 0), 0);
    ck_assert_int_eq(decode_meta_value(v_ok, 1), TD_EDUP); /* the same key twice */
    ck_assert_int_eq(decode_meta_value(v_nested_max, 0), 0);
    ck_assert_int_eq(decode_meta_value(v_nested_too_deep, 0), TD_ELIMIT);
    void (*bad[])(msgpack_packer *) = {
        v_u8_300,       v_i8_m129,          v_i64_big,          v_u32_neg,
        v_f32_int,      v_bool_int,         v_type13,           v_string_bin,
        v_bool_array_2, v_u32_array_5bytes, v_string_array_int, v_array_of_array_holding_scalar,
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(decode_meta_value(bad[i], 0) == TD_EPROTO, "bad value %zu accepted", i);
    ck_assert_int_eq(tu_count_fds(), fds0);
}
END_TEST

/* Field-level checks of the other messages. */
START_TEST(test_bad_fields)
{
    int fds0 = tu_count_fds();
    buf b;

    /* Not a map. */
    buf_init(&b);
    msgpack_pack_array(&b.pk, 2);
    msgpack_pack_uint8(&b.pk, 1);
    msgpack_pack_uint8(&b.pk, 1);
    ck_assert_int_eq(decode_with((uint8_t *)b.sb.data, b.sb.size, 0, NULL, NULL), TD_EPROTO);
    msgpack_sbuffer_destroy(&b.sb);

    /* "id" twice. */
    buf_init(&b);
    pk_head(&b, 1, TD__PROTO_PING, 1, 0);
    pk_kv(&b, "id", 2);
    ck_assert_int_eq(decode_with((uint8_t *)b.sb.data, b.sb.size, 0, NULL, NULL), TD_EPROTO);
    msgpack_sbuffer_destroy(&b.sb);

    /* A key that is not a string. */
    buf_init(&b);
    pk_head(&b, 1, TD__PROTO_PING, 1, 0);
    msgpack_pack_uint8(&b.pk, 1);
    msgpack_pack_uint8(&b.pk, 1);
    ck_assert_int_eq(decode_with((uint8_t *)b.sb.data, b.sb.size, 0, NULL, NULL), TD_EPROTO);
    msgpack_sbuffer_destroy(&b.sb);

    /* id as a string. */
    buf_init(&b);
    msgpack_pack_map(&b.pk, 2);
    pk_kv(&b, "type", TD__PROTO_PING);
    pk_key(&b, "id");
    pk_key(&b, "one");
    ck_assert_int_eq(decode_with((uint8_t *)b.sb.data, b.sb.size, 0, NULL, NULL), TD_EPROTO);
    msgpack_sbuffer_destroy(&b.sb);

    /* Too many fields. */
    buf_init(&b);
    pk_head(&b, TD__PROTO_FIELDS_MAX, TD__PROTO_PING, 1, 0);
    for (unsigned i = 0; i < TD__PROTO_FIELDS_MAX; i++) {
        char k[16];
        snprintf(k, sizeof k, "x%u", i);
        pk_kv(&b, k, i);
    }
    ck_assert_int_eq(decode_with((uint8_t *)b.sb.data, b.sb.size, 0, NULL, NULL), TD_ELIMIT);
    msgpack_sbuffer_destroy(&b.sb);

    /* HELLO: version 0, min above version, 300 descriptors. */
    const uint64_t hello[][3] = {{0, 0, 1}, {2, 3, 1}, {1, 1, 300}};
    for (int i = 0; i < 3; i++) {
        buf_init(&b);
        pk_head(&b, 3, TD__PROTO_HELLO, 1, 0);
        pk_kv(&b, "version", hello[i][0]);
        pk_kv(&b, "min_version", hello[i][1]);
        pk_kv(&b, "max_fds", hello[i][2]);
        ck_assert_int_eq(decode_with((uint8_t *)b.sb.data, b.sb.size, 0, NULL, NULL), TD_EPROTO);
        msgpack_sbuffer_destroy(&b.sb);
    }

    /* LOAD: mode 9, format 9, dequant past the dtypes, a name with NUL, fds declared 2. */
    for (int i = 0; i < 5; i++) {
        buf_init(&b);
        pk_head(&b, 1, TD__PROTO_LOAD, 1, i == 4 ? 2 : 1);
        if (i == 0)
            pk_kv(&b, "mode", 9);
        else if (i == 1)
            pk_kv(&b, "format", 9);
        else if (i == 2)
            pk_kv(&b, "dequant", TD_DTYPE_COUNT);
        else if (i == 3) {
            pk_key(&b, "name");
            msgpack_pack_str_with_body(&b.pk, "a\0b", 3);
        } else
            pk_kv(&b, "mode", 1);
        ck_assert_msg(decode_with((uint8_t *)b.sb.data, b.sb.size, i == 4 ? 2 : 1, NULL, NULL) ==
                          TD_EPROTO,
                      "LOAD case %d", i);
        msgpack_sbuffer_destroy(&b.sb);
    }

    /* ERROR: a positive code, a missing message, an overlong message. */
    for (int i = 0; i < 3; i++) {
        buf_init(&b);
        pk_head(&b, 2, TD__PROTO_ERROR, 1, 0);
        pk_key(&b, "code");
        if (i == 0)
            msgpack_pack_int64(&b.pk, 5);
        else
            msgpack_pack_int64(&b.pk, TD_EIO);
        if (i == 1) {
            pk_kv(&b, "messag", 1);
        } else {
            pk_key(&b, "message");
            char big[2000];
            memset(big, 'x', sizeof big);
            msgpack_pack_str_with_body(&b.pk, big, i == 2 ? sizeof big : 10);
        }
        int want = i == 2 ? TD_ELIMIT : TD_EPROTO;
        ck_assert_int_eq(decode_with((uint8_t *)b.sb.data, b.sb.size, 0, NULL, NULL), want);
        msgpack_sbuffer_destroy(&b.sb);
    }
    /* An ERROR whose text has control characters gets them replaced. */
    buf_init(&b);
    pk_head(&b, 2, TD__PROTO_ERROR, 1, 0);
    pk_key(&b, "code");
    msgpack_pack_int64(&b.pk, TD_EIO);
    pk_key(&b, "message");
    msgpack_pack_str_with_body(&b.pk, "a\nb\x1b[31m", 8);
    td__proto_msg m;
    ck_assert_int_eq(decode_with((uint8_t *)b.sb.data, b.sb.size, 0, NULL, &m), 0);
    ck_assert_str_eq(m.u.error.message, "a?b?[31m");
    msgpack_sbuffer_destroy(&b.sb);

    /* RELEASE lease 0, STATUS_OK with a figure of the wrong type, files not arrays. */
    buf_init(&b);
    pk_head(&b, 1, TD__PROTO_RELEASE, 1, 0);
    pk_kv(&b, "lease", 0);
    ck_assert_int_eq(decode_with((uint8_t *)b.sb.data, b.sb.size, 0, NULL, NULL), TD_EPROTO);
    msgpack_sbuffer_destroy(&b.sb);
    for (int i = 0; i < 3; i++) {
        buf_init(&b);
        pk_head(&b, 2, TD__PROTO_STATUS_OK, 1, 0);
        pk_key(&b, "stats");
        msgpack_pack_map(&b.pk, 2);
        pk_kv(&b, "figure_from_the_future", 1);
        pk_key(&b, "hits");
        if (i == 0)
            msgpack_pack_int8(&b.pk, -1);
        else
            msgpack_pack_uint8(&b.pk, 1);
        pk_key(&b, "files");
        msgpack_pack_array(&b.pk, 1);
        if (i == 2) {
            msgpack_pack_array(&b.pk, 6);
            msgpack_pack_nil(&b.pk);
            for (int k = 0; k < 5; k++)
                msgpack_pack_uint8(&b.pk, 1);
        } else {
            msgpack_pack_uint8(&b.pk, 1);
        }
        td__proto_msg sm;
        int rc = decode_with((uint8_t *)b.sb.data, b.sb.size, 0, NULL, &sm);
        ck_assert_int_eq(rc, i == 2 ? 0 : TD_EPROTO);
        if (!rc) {
            ck_assert_uint_eq(sm.u.status.stats.hits, 1); /* the unknown figure is skipped */
            ck_assert_uint_eq(sm.u.status.nfiles, 1);
            td__proto_msg_destroy(&sm);
        }
        msgpack_sbuffer_destroy(&b.sb);
    }
    /* STATUS_OK users: not an array, an element not an array or too short, a uid past 2^32 - 1,
     * a negative or non-integer figure, a count past the end; a fifth element is skipped. */
    for (int i = 0; i < 8; i++) {
        buf_init(&b);
        pk_head(&b, 2, TD__PROTO_STATUS_OK, 1, 0);
        pk_key(&b, "stats");
        msgpack_pack_map(&b.pk, 0);
        pk_key(&b, "users");
        if (i == 0) {
            msgpack_pack_map(&b.pk, 0);
        } else if (i == 6) {
            /* 0xdd: an array that claims 2^32 - 1 users in a few bytes */
            const char bomb[] = {(char)0xdd, (char)0xff, (char)0xff, (char)0xff, (char)0xff};
            msgpack_sbuffer_write(&b.sb, bomb, sizeof bomb);
        } else {
            msgpack_pack_array(&b.pk, 2);
            msgpack_pack_array(&b.pk, 4);
            for (int k = 0; k < 4; k++)
                msgpack_pack_uint8(&b.pk, 7);
            if (i == 1) {
                msgpack_pack_uint8(&b.pk, 1);
            } else {
                msgpack_pack_array(&b.pk, i == 2 ? 3 : i == 7 ? 5 : 4);
                if (i == 3)
                    msgpack_pack_uint64(&b.pk, (uint64_t)UINT32_MAX + 1);
                else
                    msgpack_pack_uint32(&b.pk, 1000);
                msgpack_pack_uint8(&b.pk, 1);
                if (i == 4)
                    msgpack_pack_int8(&b.pk, -1);
                else if (i == 5)
                    msgpack_pack_str_with_body(&b.pk, "1", 1);
                else
                    msgpack_pack_uint64(&b.pk, UINT64_MAX);
                if (i != 2)
                    msgpack_pack_uint8(&b.pk, 9);
                if (i == 7)
                    pk_key(&b, "from a newer daemon");
            }
        }
        td__proto_msg sm;
        int rc = decode_with((uint8_t *)b.sb.data, b.sb.size, 0, NULL, &sm);
        /* The bomb is past max_count (TD_ELIMIT) before it is past the bytes left. */
        ck_assert_msg(rc == (i == 7   ? 0
                             : i == 6 ? TD_ELIMIT
                                      : TD_EPROTO),
                      "users case %d: %d", i, rc);
        if (!rc) {
            ck_assert_uint_eq(sm.u.status.nusers, 2);
            ck_assert_uint_eq(sm.u.status.users[1].uid, 1000);
            ck_assert_uint_eq(sm.u.status.users[1].bytes, UINT64_MAX);
            ck_assert_uint_eq(sm.u.status.users[1].quota, 9);
            td__proto_msg_destroy(&sm);
        }
        msgpack_sbuffer_destroy(&b.sb);
    }
    ck_assert_int_eq(tu_count_fds(), fds0);
}
END_TEST

/* Unknown fields and longer entry arrays from newer peers are ignored (PROTOCOL.md,
 * "Evolution"). */
START_TEST(test_forward_compatible)
{
    buf b;
    buf_init(&b);
    pk_head(&b, 7, TD__PROTO_LOAD_OK, 1, 1);
    pk_kv(&b, "lease", 3);
    pk_kv(&b, "format", TD_FORMAT_NPY);
    pk_kv(&b, "added_in_v2", 3);
    pk_key(&b, "regions");
    msgpack_pack_array(&b.pk, 1);
    msgpack_pack_array(&b.pk, 4);
    msgpack_pack_uint8(&b.pk, 0);
    msgpack_pack_uint8(&b.pk, 8);
    msgpack_pack_uint8(&b.pk, TD__PROTO_REGION_FILE);
    pk_key(&b, "region extra");
    pk_key(&b, "entries");
    msgpack_pack_array(&b.pk, 1);
    msgpack_pack_array(&b.pk, 7);
    msgpack_pack_nil(&b.pk);
    msgpack_pack_uint8(&b.pk, TD_UINT8);
    msgpack_pack_array(&b.pk, 1);
    msgpack_pack_uint8(&b.pk, 8);
    msgpack_pack_uint8(&b.pk, 0);
    msgpack_pack_uint8(&b.pk, 0);
    msgpack_pack_uint8(&b.pk, 8);
    pk_key(&b, "entry extra");
    pk_key(&b, "meta");
    msgpack_pack_nil(&b.pk);
    pk_key(&b, "another");
    msgpack_pack_map(&b.pk, 0);
    td__proto_msg m;
    ck_assert_int_eq(decode_with((uint8_t *)b.sb.data, b.sb.size, 1, NULL, &m), 0);
    ck_assert_uint_eq(m.u.loaded.table->n, 1);
    ck_assert_ptr_null(m.u.loaded.table->entries[0].name);
    ck_assert_uint_eq(m.u.loaded.table->entries[0].nbytes, 8);
    ck_assert_uint_eq(m.u.loaded.regions[0].flags, TD__PROTO_REGION_FILE);
    td__proto_msg_destroy(&m);
    msgpack_sbuffer_destroy(&b.sb);
}
END_TEST

/* The accounting itself works (so that the zero-allocation checks above can fail). */
START_TEST(test_allocation_accounting_works)
{
#if TRACK_ALLOC
    alloc_mark();
    void *volatile p = malloc(100000); /* volatile: an optimizer may drop malloc+free */
    long long peak = alloc_peak();
    free(p);
    ck_assert_int_ge(peak, 100000);
    /* A decode that passes the pre-walk allocates its zone: {"x": [nil x 100]}. */
    uint8_t many[106] = {0x81, 0xa1, 'x', 0xdc, 0, 100};
    memset(many + 6, 0xc0, 100);
    int fds[1];
    unsigned nf = 0;
    td__proto_msg m;
    alloc_mark();
    td_error err = {0};
    int rc = td__proto_decode(many, sizeof many, fds, &nf, NULL, &m, &err);
    peak = alloc_peak();
    ck_assert_msg(rc == TD_EPROTO, "%d %s", rc, err.message);
    ck_assert_int_ge(peak, 100 * (long long)sizeof(msgpack_object));
#else
    fprintf(stderr, "allocation accounting is off under AddressSanitizer\n");
#endif
}
END_TEST

static Suite *hostile_suite(void)
{
    Suite *s = suite_create("proto_hostile");
    TCase *tc = tcase_create("hostile");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_allocation_accounting_works);
    tcase_add_test(tc, test_every_truncation_point);
    tcase_add_test(tc, test_truncation_over_socket);
    tcase_add_test(tc, test_bombs_and_counts_past_the_end);
    tcase_add_test(tc, test_nesting_and_object_limits);
    tcase_add_test(tc, test_random_bytes_and_mutations);
    tcase_add_test(tc, test_oversized_frames);
    tcase_add_test(tc, test_wrong_descriptor_counts);
    tcase_add_test(tc, test_buffered_misplaced_descriptors);
    tcase_add_test(tc, test_unknown_message_types);
    tcase_add_test(tc, test_bad_loaded_fields);
    tcase_add_test(tc, test_bad_metadata);
    tcase_add_test(tc, test_bad_fields);
    tcase_add_test(tc, test_forward_compatible);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(hostile_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}

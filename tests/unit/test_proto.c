/*
 * test_proto.c - the wire protocol working as intended: every message type encoded and decoded
 * back to the same struct, a 100,000-tensor table, metadata of every type (nested arrays too),
 * descriptors over real socketpairs (LOAD's file, LOAD_OK's regions), the incremental receiver
 * fed a byte at a time and interleaved with a partial sender, back-to-back frames keeping their
 * own descriptors; the buffered receiver taking many frames from one read (descriptors given to
 * the right frame, frames straddling the buffer's end or longer than it, a byte at a time, the
 * end of the stream) and td__proto_recv_msg_rx; the exact one-shot receive leaving the next
 * frame in the socket; timeouts, SO_PEERCRED and version negotiation. Descriptor counts are
 * compared before and after every test.
 */
#include "common.h"
#include "meta_internal.h"
#include "proto.h"
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* A memfd of size bytes whose first bytes say which region it is. */
static int make_region(uint64_t size, int tag)
{
    int fd = memfd_create("td-test-region", MFD_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(ftruncate(fd, (off_t)size), 0);
    char b[16];
    int n = snprintf(b, sizeof b, "region%d", tag);
    if ((uint64_t)n <= size)
        ck_assert_int_eq(pwrite(fd, b, (size_t)n, 0), n);
    return fd;
}

/* Same open file description? (compares the inodes, enough for memfds and files). */
static void assert_same_file(int a, int b)
{
    struct stat sa, sb;
    ck_assert_int_eq(fstat(a, &sa), 0);
    ck_assert_int_eq(fstat(b, &sb), 0);
    ck_assert_uint_eq(sa.st_ino, sb.st_ino);
    ck_assert_uint_eq(sa.st_dev, sb.st_dev);
    ck_assert_int_ne(a, b);
    int fl = fcntl(b, F_GETFD);
    ck_assert_int_ge(fl, 0);
}

static void assert_cloexec(int fd)
{
    int fl = fcntl(fd, F_GETFD);
    ck_assert_int_ge(fl, 0);
    ck_assert_msg(fl & FD_CLOEXEC, "descriptor %d received without FD_CLOEXEC", fd);
}

/* dtypes to cycle through, with an innermost size that suits each (block types need 32/256). */
static const td_dtype k_dtypes[] = {TD_FLOAT32, TD_FLOAT16, TD_BFLOAT16,  TD_INT8,
                                    TD_UINT64,  TD_BOOL,    TD_Q4_0,      TD_Q8_0,
                                    TD_Q4_K,    TD_Q6_K,    TD_COMPLEX64, TD_FLOAT8_E4M3};

/* A table of n entries spread over nregions regions, entries packed one after the other in
 * each region; region sizes go to sizes[] (nregions of them). */
static td__table *make_table(size_t n, uint32_t nregions, uint64_t *sizes, int with_meta)
{
    td_error err = {0};
    td__table *t = malloc(sizeof *t);
    ck_assert_ptr_nonnull(t);
    td__table_init(t, TD_FORMAT_GGUF);
    for (uint32_t r = 0; r < nregions; r++)
        sizes[r] = 0;
    for (size_t i = 0; i < n; i++) {
        char name[64];
        int len =
            snprintf(name, sizeof name, "blk.%zu.ffn_%s.weight", i / 7, i % 2 ? "up" : "down");
        len += snprintf(name + len, sizeof name - (size_t)len, ".%zu", i);
        td__entry *e = td__table_add(t, i == 3 && n > 10 ? NULL : name, (size_t)len, &err);
        ck_assert_msg(e != NULL, "%s", err.message);
        td_dtype dt = k_dtypes[i % (sizeof k_dtypes / sizeof k_dtypes[0])];
        int64_t inner = td_dtype_is_block(dt) ? (dt == TD_Q4_K || dt == TD_Q6_K ? 256 : 64) : 3;
        uint32_t ndim = (uint32_t)(i % 4);
        int64_t shape[4] = {(int64_t)(i % 5) + 1, 2, 0, 0};
        if (ndim >= 3)
            shape[2] = 1 + (int64_t)(i % 3);
        if (ndim)
            shape[ndim - 1] = inner;
        if (i % 97 == 0 && ndim)
            shape[0] = 0; /* empty tensors travel too */
        TU_OK(td__entry_set_shape(e, ndim, shape, &err), &err);
        e->dtype = dt;
        if (td_dtype_is_block(dt) && ndim == 0) {
            e->ndim = 1;
            free(e->shape);
            e->shape = malloc(sizeof(int64_t));
            e->shape[0] = inner;
        }
        TU_OK(td__shape_nbytes(dt, e->ndim, e->shape, &e->nbytes, &err), &err);
        e->region = (uint32_t)(i % nregions);
        e->offset = sizes[e->region];
        sizes[e->region] += e->nbytes + (i % 3) * 16; /* some padding between tensors */
    }
    for (uint32_t r = 0; r < nregions; r++)
        sizes[r] += 4096;
    t->meta = with_meta ? td_meta_new() : NULL;
    return t;
}

static void free_table(td__table *t)
{
    td__table_destroy(t);
    free(t);
}

static void assert_tables_equal(const td__table *a, const td__table *b)
{
    ck_assert_int_eq(a->format, b->format);
    ck_assert_uint_eq(a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        const td__entry *x = &a->entries[i], *y = &b->entries[i];
        if (x->name)
            ck_assert_str_eq(x->name, y->name);
        else
            ck_assert_ptr_null(y->name);
        ck_assert_int_eq(x->dtype, y->dtype);
        ck_assert_uint_eq(x->ndim, y->ndim);
        for (uint32_t k = 0; k < x->ndim; k++)
            ck_assert_int_eq(x->shape[k], y->shape[k]);
        ck_assert_uint_eq(x->region, y->region);
        ck_assert_uint_eq(x->offset, y->offset);
        ck_assert_uint_eq(x->nbytes, y->nbytes);
        ck_assert_uint_eq(y->layout, 0);
    }
    ck_assert_msg(td__meta_equal(a->meta, b->meta), "metadata differs after the round trip");
}

/* Metadata with every type: each scalar type at its extremes, strings with NUL and non-ASCII
 * bytes, arrays of every element type (empty ones too), string arrays, nested arrays down to
 * TD_META_MAX_DEPTH. */
static td_meta *make_meta_every_type(void)
{
    td_error err = {0};
    td_meta *m = td_meta_new();
    ck_assert_ptr_nonnull(m);
    uint8_t u8 = 255, b1 = 1, b0 = 0;
    int8_t i8 = -128;
    uint16_t u16 = 65535;
    int16_t i16 = -32768;
    uint32_t u32 = 4294967295u;
    int32_t i32 = INT32_MIN;
    float f32 = -0.0f;
    uint64_t u64 = UINT64_MAX;
    int64_t i64 = INT64_MIN;
    double f64 = 1e-310; /* subnormal */
    float fnan = __builtin_nanf("0x123");
    TU_OK(td_meta_set_scalar(m, "general.u8", TD_META_UINT8, &u8, &err), &err);
    TU_OK(td_meta_set_scalar(m, "general.i8", TD_META_INT8, &i8, &err), &err);
    TU_OK(td_meta_set_scalar(m, "general.u16", TD_META_UINT16, &u16, &err), &err);
    TU_OK(td_meta_set_scalar(m, "general.i16", TD_META_INT16, &i16, &err), &err);
    TU_OK(td_meta_set_scalar(m, "general.u32", TD_META_UINT32, &u32, &err), &err);
    TU_OK(td_meta_set_scalar(m, "general.i32", TD_META_INT32, &i32, &err), &err);
    TU_OK(td_meta_set_scalar(m, "general.f32", TD_META_FLOAT32, &f32, &err), &err);
    TU_OK(td_meta_set_scalar(m, "general.nan", TD_META_FLOAT32, &fnan, &err), &err);
    TU_OK(td_meta_set_scalar(m, "general.true", TD_META_BOOL, &b1, &err), &err);
    TU_OK(td_meta_set_scalar(m, "general.false", TD_META_BOOL, &b0, &err), &err);
    TU_OK(td_meta_set_scalar(m, "general.u64", TD_META_UINT64, &u64, &err), &err);
    TU_OK(td_meta_set_scalar(m, "general.i64", TD_META_INT64, &i64, &err), &err);
    TU_OK(td_meta_set_scalar(m, "general.f64", TD_META_FLOAT64, &f64, &err), &err);
    int64_t small_pos = 5, small_neg = -3;
    TU_OK(td_meta_set_scalar(m, "i64.small", TD_META_INT64, &small_pos, &err), &err);
    TU_OK(td_meta_set_scalar(m, "i64.neg", TD_META_INT64, &small_neg, &err), &err);
    TU_OK(td_meta_set_string(m, "general.name", "Llama\0 \xc3\xa9t\xc3\xa9\n", 13, &err), &err);
    TU_OK(td_meta_set_string(m, "empty.string", "", 0, &err), &err);

    /* Arrays of every scalar type, 5 items, and one empty array per type. */
    for (int t = 0; t < TD_META_COUNT; t++) {
        if (!td__type_is_scalar((td_meta_type)t))
            continue;
        uint8_t items[5 * 8];
        for (size_t i = 0; i < sizeof items; i++)
            items[i] = (uint8_t)(i * 37 + (size_t)t);
        if (t == TD_META_BOOL)
            for (int i = 0; i < 5; i++)
                items[i] = (uint8_t)(i & 1);
        if (t == TD_META_FLOAT32) {
            float f[5] = {1.5f, -2.25f, 3e38f, 1e-45f, 0.0f};
            memcpy(items, f, sizeof f);
        }
        if (t == TD_META_FLOAT64) {
            double f[5] = {1.5, -2.25, 1e308, 5e-324, -0.0};
            memcpy(items, f, sizeof f);
        }
        char key[64];
        snprintf(key, sizeof key, "array.%s", td_meta_type_name((td_meta_type)t));
        TU_OK(td_meta_set_array(m, key, (td_meta_type)t, items, 5, &err), &err);
        snprintf(key, sizeof key, "array.empty.%s", td_meta_type_name((td_meta_type)t));
        TU_OK(td_meta_set_array(m, key, (td_meta_type)t, NULL, 0, &err), &err);
    }
    const char *toks[] = {"<s>", "</s>", "", "\xe2\x96\x81the", "a\0b"};
    size_t lens[] = {3, 4, 0, 6, 3};
    TU_OK(td_meta_set_strings(m, "tokenizer.ggml.tokens", toks, lens, 5, &err), &err);
    TU_OK(td_meta_set_strings(m, "array.empty.string", NULL, NULL, 0, &err), &err);

    /* [[1, 2], [], [[3]] ... ]: arrays of arrays with different element types. */
    td_value *outer = td_value_new_array(TD_META_ARRAY);
    int32_t a12[2] = {1, 2};
    TU_OK(td_value_array_push(outer, td__value_new_array_packed(TD_META_INT32, a12, 2), &err),
          &err);
    TU_OK(td_value_array_push(outer, td_value_new_array(TD_META_STRING), &err), &err);
    td_value *strs = td_value_new_array(TD_META_STRING);
    TU_OK(td__value_array_push_string(strs, "x", 1, &err), &err);
    TU_OK(td_value_array_push(outer, strs, &err), &err);
    TU_OK(td_meta_set_value(m, "nested.two", outer, &err), &err);

    /* The deepest nesting allowed: TD_META_MAX_DEPTH levels. */
    td_value *v = td__value_new_array_packed(TD_META_FLOAT64, &f64, 1);
    for (int d = 1; d < TD_META_MAX_DEPTH; d++) {
        td_value *up = td_value_new_array(TD_META_ARRAY);
        TU_OK(td_value_array_push(up, v, &err), &err);
        v = up;
    }
    ck_assert_uint_eq(td__value_depth(v), TD_META_MAX_DEPTH);
    TU_OK(td_meta_set_value(m, "nested.deepest", v, &err), &err);
    return m;
}

/* Encodes m, checks the frame's length prefix, and decodes it back with dup'ed copies of the
 * descriptors the encoder collected (a stand-in for SCM_RIGHTS). */
static void roundtrip(const td__proto_msg *m, td__proto_msg *back)
{
    td_error err = {0};
    td__proto_out o;
    TU_OK(td__proto_encode(m, NULL, &o, &err), &err);
    ck_assert_uint_ge(o.len, TD__PROTO_PREFIX + 1);
    ck_assert_uint_eq(td__le32(o.buf), o.len - TD__PROTO_PREFIX);
    int fds[TD__PROTO_FDS_MAX];
    unsigned nfds = o.nfds;
    for (unsigned i = 0; i < nfds; i++) {
        fds[i] = fcntl(o.fds[i], F_DUPFD_CLOEXEC, 0);
        ck_assert_int_ge(fds[i], 0);
    }
    td__proto_walk w;
    TU_OK(td__proto_prewalk(o.buf + TD__PROTO_PREFIX, o.len - TD__PROTO_PREFIX, NULL, &w, &err),
          &err);
    ck_assert_uint_ge(w.depth, 1);
    TU_OK(td__proto_parse(o.buf, o.len, fds, &nfds, NULL, back, &err), &err);
    ck_assert_uint_eq(nfds, 0);
    ck_assert_uint_eq(back->type, m->type);
    ck_assert_uint_eq(back->id, m->id);
    td__proto_out_destroy(&o);
}

START_TEST(test_roundtrip_every_type)
{
    int fds0 = tu_count_fds();
    td__proto_msg m, b;

    /* HELLO and HELLO_OK */
    uint32_t types_hello[] = {TD__PROTO_HELLO, TD__PROTO_HELLO_OK};
    for (int k = 0; k < 2; k++) {
        td__proto_msg_init(&m, types_hello[k], 1);
        m.u.hello.version = 7;
        m.u.hello.min_version = 2;
        m.u.hello.features = TD__PROTO_F_ALL | (1ull << 63);
        m.u.hello.max_frame = 1 << 20;
        m.u.hello.max_fds = 17;
        m.u.hello.software = k ? "tensord 0.1.0" : NULL;
        roundtrip(&m, &b);
        ck_assert_uint_eq(b.u.hello.version, 7);
        ck_assert_uint_eq(b.u.hello.min_version, 2);
        ck_assert_uint_eq(b.u.hello.features, TD__PROTO_F_ALL | (1ull << 63));
        ck_assert_uint_eq(b.u.hello.max_frame, 1 << 20);
        ck_assert_uint_eq(b.u.hello.max_fds, 17);
        if (k)
            ck_assert_str_eq(b.u.hello.software, "tensord 0.1.0");
        else
            ck_assert_ptr_null(b.u.hello.software);
        td__proto_msg_destroy(&b);
    }

    /* LOAD: the descriptor arrives as a new descriptor of the same file. */
    int file = make_region(1000, 0);
    td__proto_msg_init(&m, TD__PROTO_LOAD, 2);
    m.u.load.fd = file;
    m.u.load.format = TD_FORMAT_SAFETENSORS;
    m.u.load.mode = TD__PROTO_MODE_SNAPSHOT;
    m.u.load.dequant = TD_BFLOAT16;
    m.u.load.max_inflated = 1ull << 40;
    m.u.load.flags = TD__PROTO_LOAD_SHARD; /* one file of a model */
    m.u.load.name = "model-00001-of-00002.safetensors";
    roundtrip(&m, &b);
    assert_same_file(file, b.u.load.fd);
    ck_assert_int_eq(b.u.load.format, TD_FORMAT_SAFETENSORS);
    ck_assert_uint_eq(b.u.load.mode, TD__PROTO_MODE_SNAPSHOT);
    ck_assert_uint_eq(b.u.load.dequant, TD_BFLOAT16);
    ck_assert_uint_eq(b.u.load.max_inflated, 1ull << 40);
    ck_assert_uint_eq(b.u.load.flags, TD__PROTO_LOAD_SHARD);
    ck_assert_str_eq(b.u.load.name, "model-00001-of-00002.safetensors");
    td__proto_msg_destroy(&b);
    ck_assert_int_eq(b.u.load.fd, -1);
    ck_assert_int_eq(tu_count_fds(), fds0 + 1);

    /* LOAD_OK: 3 regions, 50 entries, metadata of every type. */
    uint64_t sizes[3];
    td__table *t = make_table(50, 3, sizes, 0);
    t->meta = make_meta_every_type();
    td__proto_region regions[3];
    for (int r = 0; r < 3; r++)
        regions[r] = (td__proto_region){make_region(sizes[r], r), sizes[r], 0};
    td__proto_msg_init(&m, TD__PROTO_LOAD_OK, 3);
    m.u.loaded.lease = 0xfeedfacecafebeefull;
    m.u.loaded.table = t;
    m.u.loaded.regions = regions;
    m.u.loaded.nregions = 3;
    roundtrip(&m, &b);
    ck_assert_uint_eq(b.u.loaded.lease, 0xfeedfacecafebeefull);
    ck_assert_uint_eq(b.u.loaded.nregions, 3);
    for (int r = 0; r < 3; r++) {
        ck_assert_uint_eq(b.u.loaded.regions[r].size, sizes[r]);
        assert_same_file(regions[r].fd, b.u.loaded.regions[r].fd);
    }
    assert_tables_equal(t, b.u.loaded.table);
    td__proto_msg_destroy(&b);
    for (int r = 0; r < 3; r++)
        close(regions[r].fd);
    free_table(t);

    /* LOAD_OK without metadata and without entries or regions. */
    td__table empty;
    td__table_init(&empty, TD_FORMAT_NPZ);
    td__proto_msg_init(&m, TD__PROTO_LOAD_OK, 4);
    m.u.loaded.lease = 1;
    m.u.loaded.table = &empty;
    roundtrip(&m, &b);
    ck_assert_uint_eq(b.u.loaded.table->n, 0);
    ck_assert_ptr_null(b.u.loaded.table->meta);
    ck_assert_int_eq(b.u.loaded.table->format, TD_FORMAT_NPZ);
    td__proto_msg_destroy(&b);

    /* RELEASE, RELEASE_OK */
    uint32_t types_rel[] = {TD__PROTO_RELEASE, TD__PROTO_RELEASE_OK};
    for (int k = 0; k < 2; k++) {
        td__proto_msg_init(&m, types_rel[k], 5);
        m.u.release.lease = UINT64_MAX;
        roundtrip(&m, &b);
        ck_assert_uint_eq(b.u.release.lease, UINT64_MAX);
        td__proto_msg_destroy(&b);
    }

    /* STATUS, STATUS_OK with figures and files. */
    td__proto_msg_init(&m, TD__PROTO_STATUS, 6);
    m.u.status_req.flags = TD__PROTO_STATUS_FILES;
    roundtrip(&m, &b);
    ck_assert_uint_eq(b.u.status_req.flags, TD__PROTO_STATUS_FILES);
    td__proto_msg_destroy(&b);

    td__proto_status_file files[2] = {
        {"a.gguf", TD_FORMAT_GGUF, TD__PROTO_MODE_PIN, 123, 4, 5, 300, 1u << 30, 77, 9, 1234,
         TD__PROTO_FILE_PRELOADED},
        {NULL, TD_FORMAT_NPZ, TD__PROTO_MODE_MAP, UINT64_MAX, 0, 0, 0, 0, 0, 0, UINT64_MAX, 0},
    };
    td__proto_msg_init(&m, TD__PROTO_STATUS_OK, 7);
    uint64_t k = 1;
#define TD__XX(name, text) m.u.status.stats.name = k++ * 1000003;
    TD__PROTO_STATS_MAP(TD__XX)
#undef TD__XX
    m.u.status.files = files;
    m.u.status.nfiles = 2;
    td__proto_status_user users[2] = {{0, 3, 4096, 1u << 20}, {UINT32_MAX, 1, UINT64_MAX, 0}};
    m.u.status.users = users;
    m.u.status.nusers = 2;
    roundtrip(&m, &b);
    ck_assert_mem_eq(&b.u.status.stats, &m.u.status.stats, sizeof m.u.status.stats);
    ck_assert_uint_eq(b.u.status.nusers, 2);
    for (int i = 0; i < 2; i++) {
        ck_assert_uint_eq(b.u.status.users[i].uid, users[i].uid);
        ck_assert_uint_eq(b.u.status.users[i].entries, users[i].entries);
        ck_assert_uint_eq(b.u.status.users[i].bytes, users[i].bytes);
        ck_assert_uint_eq(b.u.status.users[i].quota, users[i].quota);
    }
    ck_assert_uint_eq(b.u.status.nfiles, 2);
    ck_assert_str_eq(b.u.status.files[0].name, "a.gguf");
    ck_assert_ptr_null(b.u.status.files[1].name);
    ck_assert_int_eq(b.u.status.files[0].format, TD_FORMAT_GGUF);
    ck_assert_uint_eq(b.u.status.files[0].mode, TD__PROTO_MODE_PIN);
    ck_assert_uint_eq(b.u.status.files[0].bytes, 123);
    ck_assert_uint_eq(b.u.status.files[0].leases, 4);
    ck_assert_uint_eq(b.u.status.files[0].hits, 5);
    ck_assert_uint_eq(b.u.status.files[1].bytes, UINT64_MAX);
    ck_assert_uint_eq(b.u.status.files[0].tensors, 300);
    ck_assert_uint_eq(b.u.status.files[0].file_bytes, 1u << 30);
    ck_assert_uint_eq(b.u.status.files[0].derived_bytes, 77);
    ck_assert_uint_eq(b.u.status.files[0].loads, 9);
    ck_assert_uint_eq(b.u.status.files[0].idle_ms, 1234);
    ck_assert_uint_eq(b.u.status.files[1].idle_ms, UINT64_MAX);
    ck_assert_uint_eq(b.u.status.files[0].flags, TD__PROTO_FILE_PRELOADED);
    ck_assert_uint_eq(b.u.status.files[1].flags, 0);
    td__proto_msg_destroy(&b);
    m.u.status.files = NULL; /* figures only */
    m.u.status.nfiles = 0;
    m.u.status.users = NULL; /* a daemon without per-uid figures */
    m.u.status.nusers = 0;
    roundtrip(&m, &b);
    ck_assert_ptr_null(b.u.status.files);
    ck_assert_ptr_null(b.u.status.users);
    ck_assert_uint_eq(b.u.status.nusers, 0);
    td__proto_msg_destroy(&b);
    m.u.status.users = users; /* no uid has entries: an empty array, not an absent one */
    roundtrip(&m, &b);
    ck_assert_ptr_nonnull(b.u.status.users);
    ck_assert_uint_eq(b.u.status.nusers, 0);
    td__proto_msg_destroy(&b);

    /* EVICT with and without a file, EVICT_OK. */
    td__proto_msg_init(&m, TD__PROTO_EVICT, 8);
    roundtrip(&m, &b);
    ck_assert_int_eq(b.u.evict.fd, -1);
    td__proto_msg_destroy(&b);
    m.u.evict.fd = file;
    roundtrip(&m, &b);
    assert_same_file(file, b.u.evict.fd);
    td__proto_msg_destroy(&b);
    td__proto_msg_init(&m, TD__PROTO_EVICT_OK, 9);
    m.u.evicted.entries = 3;
    m.u.evicted.bytes = 1ull << 33;
    roundtrip(&m, &b);
    ck_assert_uint_eq(b.u.evicted.entries, 3);
    ck_assert_uint_eq(b.u.evicted.bytes, 1ull << 33);
    td__proto_msg_destroy(&b);

    /* PING, PONG */
    uint32_t types_ping[] = {TD__PROTO_PING, TD__PROTO_PONG};
    for (int j = 0; j < 2; j++) {
        td__proto_msg_init(&m, types_ping[j], UINT32_MAX);
        m.u.ping.data = 0x0123456789abcdefull;
        roundtrip(&m, &b);
        ck_assert_uint_eq(b.u.ping.data, 0x0123456789abcdefull);
        td__proto_msg_destroy(&b);
    }

    /* ERROR: built from a td_error, control characters made harmless on the way in. */
    td_error e = {0};
    td__err(&e, TD_EFORMAT, "model.gguf: tensor 'blk.0.weight': offset 12345 is not aligned");
    td__proto_msg_error(&m, 10, e.code, &e);
    roundtrip(&m, &b);
    ck_assert_int_eq(b.u.error.code, TD_EFORMAT);
    ck_assert_str_eq(b.u.error.message, e.message);
    td__proto_msg_destroy(&b);
    td__proto_msg_error(&m, 0, TD_ENOMEM, NULL);
    roundtrip(&m, &b);
    ck_assert_int_eq(b.u.error.code, TD_ENOMEM);
    ck_assert_str_eq(b.u.error.message, "out of memory");
    td__proto_msg_destroy(&b);

    close(file);
    ck_assert_int_eq(tu_count_fds(), fds0);
}
END_TEST

/* Every type name is known; unknown types are not. */
START_TEST(test_type_names)
{
    ck_assert_str_eq(td__proto_type_name(TD__PROTO_LOAD_OK), "LOAD_OK");
    ck_assert_str_eq(td__proto_type_name(TD__PROTO_ERROR), "ERROR");
    ck_assert_ptr_null(td__proto_type_name(0));
    ck_assert_ptr_null(td__proto_type_name(7));
    ck_assert_ptr_null(td__proto_type_name(0x87));
}
END_TEST

/* A table of 100,000 tensors with metadata, in one frame, and back. */
START_TEST(test_roundtrip_100k_tensors)
{
    int fds0 = tu_count_fds();
    td_error err = {0};
    uint64_t sizes[2];
    td__table *t = make_table(100000, 2, sizes, 0);
    t->meta = make_meta_every_type();
    /* A tokenizer-sized string array as well. */
    size_t nv = 150000;
    char **toks = malloc(nv * sizeof *toks);
    for (size_t i = 0; i < nv; i++) {
        toks[i] = malloc(16);
        snprintf(toks[i], 16, "tok%zu", i);
    }
    TU_OK(td_meta_set_strings(t->meta, "tokenizer.ggml.tokens.big", (const char *const *)toks, NULL,
                              nv, &err),
          &err);
    for (size_t i = 0; i < nv; i++)
        free(toks[i]);
    free(toks);
    float *scores = malloc(nv * sizeof *scores);
    for (size_t i = 0; i < nv; i++)
        scores[i] = (float)i * -0.5f;
    TU_OK(td_meta_set_array(t->meta, "tokenizer.ggml.scores", TD_META_FLOAT32, scores, nv, &err),
          &err);
    free(scores);

    td__proto_region regions[2] = {{make_region(sizes[0], 0), sizes[0], 0},
                                   {make_region(sizes[1], 1), sizes[1], 0}};
    td__proto_msg m, b;
    td__proto_msg_init(&m, TD__PROTO_LOAD_OK, 42);
    m.u.loaded.lease = 99;
    m.u.loaded.table = t;
    m.u.loaded.regions = regions;
    m.u.loaded.nregions = 2;
    double t0 = tu_now_s();
    td__proto_out o;
    TU_OK(td__proto_encode(&m, NULL, &o, &err), &err);
    double t1 = tu_now_s();
    int fds[2] = {dup(regions[0].fd), dup(regions[1].fd)};
    unsigned nfds = 2;
    TU_OK(td__proto_parse(o.buf, o.len, fds, &nfds, NULL, &b, &err), &err);
    double t2 = tu_now_s();
    fprintf(stderr, "100k tensors + 150k tokens: frame %zu bytes, encode %.1f ms, decode %.1f ms\n",
            o.len, (t1 - t0) * 1e3, (t2 - t1) * 1e3);
    assert_tables_equal(t, b.u.loaded.table);
    ck_assert_ptr_nonnull(td_meta_get(b.u.loaded.table->meta, "tokenizer.ggml.scores"));
    td__proto_msg_destroy(&b);

    /* What the daemon does for every later reply: the table's bytes spliced in as they are,
     * with another id and lease. The frame is the same but for those. */
    m.id = 43;
    m.u.loaded.lease = 100;
    m.u.loaded.tail = o.buf + o.tail;
    m.u.loaded.tail_len = o.len - o.tail;
    td__proto_out o2;
    double t3 = tu_now_s();
    TU_OK(td__proto_encode(&m, NULL, &o2, &err), &err);
    double t4 = tu_now_s();
    fprintf(stderr, "the same reply with the table's bytes spliced in: encode %.3f ms\n",
            (t4 - t3) * 1e3);
    ck_assert_uint_eq(o2.len, o.len);
    ck_assert_uint_eq(o2.tail, o.tail);
    ck_assert(memcmp(o2.buf + o2.tail, o.buf + o.tail, o.len - o.tail) == 0);
    int fds2[2] = {dup(regions[0].fd), dup(regions[1].fd)};
    nfds = 2;
    TU_OK(td__proto_parse(o2.buf, o2.len, fds2, &nfds, NULL, &b, &err), &err);
    ck_assert_uint_eq(b.id, 43);
    ck_assert_uint_eq(b.u.loaded.lease, 100);
    assert_tables_equal(t, b.u.loaded.table);
    td__proto_msg_destroy(&b);
    td__proto_out_destroy(&o2);
    td__proto_out_destroy(&o);
    close(regions[0].fd);
    close(regions[1].fd);
    free_table(t);
    ck_assert_int_eq(tu_count_fds(), fds0);
}
END_TEST

static void socketpair_nb(int sv[2])
{
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv), 0);
}

/* The blocking calls on a real socketpair: LOAD with the file, LOAD_OK with three regions whose
 * contents are read back through the received descriptors. */
START_TEST(test_socketpair_load_roundtrip)
{
    int fds0 = tu_count_fds();
    td_error err = {0};
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);

    int file = make_region(4096, 77);
    td__proto_msg m, b;
    td__proto_msg_init(&m, TD__PROTO_LOAD, 1);
    m.u.load.fd = file;
    m.u.load.name = "x.gguf";
    TU_OK(td__proto_send_msg(sv[0], &m, NULL, 1000, &err), &err);
    TU_OK(td__proto_recv_msg(sv[1], NULL, &b, 1000, &err), &err);
    ck_assert_uint_eq(b.type, TD__PROTO_LOAD);
    assert_same_file(file, b.u.load.fd);
    assert_cloexec(b.u.load.fd);
    char tag[8] = {0};
    ck_assert_int_eq(pread(b.u.load.fd, tag, 7, 0), 7);
    ck_assert_str_eq(tag, "region7");
    td__proto_msg_destroy(&b);

    uint64_t sizes[3];
    td__table *t = make_table(300, 3, sizes, 1);
    td__proto_region regions[3];
    for (int r = 0; r < 3; r++)
        regions[r] = (td__proto_region){make_region(sizes[r], r), sizes[r], 0};
    td__proto_msg_init(&m, TD__PROTO_LOAD_OK, 1);
    m.u.loaded.lease = 5;
    m.u.loaded.table = t;
    m.u.loaded.regions = regions;
    m.u.loaded.nregions = 3;
    TU_OK(td__proto_send_msg(sv[1], &m, NULL, 1000, &err), &err);
    TU_OK(td__proto_recv_msg(sv[0], NULL, &b, 1000, &err), &err);
    ck_assert_uint_eq(b.u.loaded.nregions, 3);
    for (int r = 0; r < 3; r++) {
        char want[16], got[16] = {0};
        int n = snprintf(want, sizeof want, "region%d", r);
        assert_cloexec(b.u.loaded.regions[r].fd);
        void *p = mmap(NULL, b.u.loaded.regions[r].size, PROT_READ, MAP_SHARED,
                       b.u.loaded.regions[r].fd, 0);
        ck_assert_ptr_ne(p, MAP_FAILED);
        memcpy(got, p, (size_t)n);
        ck_assert_str_eq(got, want);
        munmap(p, b.u.loaded.regions[r].size);
    }
    assert_tables_equal(t, b.u.loaded.table);
    ck_assert_uint_eq(td_meta_size(b.u.loaded.table->meta), 0);
    td__proto_msg_destroy(&b);
    for (int r = 0; r < 3; r++)
        close(regions[r].fd);
    free_table(t);
    close(file);
    close(sv[0]);
    close(sv[1]);
    ck_assert_int_eq(tu_count_fds(), fds0);
}
END_TEST

/* A large frame through a small socket buffer: the sender stops with TD_EAGAIN again and again,
 * the receiver says "need more" again and again, and both resume where they were. */
START_TEST(test_incremental_interleaved)
{
    int fds0 = tu_count_fds();
    td_error err = {0};
    int sv[2];
    socketpair_nb(sv);
    int small = 4096;
    ck_assert_int_eq(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
    ck_assert_int_eq(setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);

    uint64_t sizes[1];
    td__table *t = make_table(20000, 1, sizes, 1);
    td__proto_region reg = {make_region(sizes[0], 0), sizes[0], 0};
    td__proto_msg m, b;
    td__proto_msg_init(&m, TD__PROTO_LOAD_OK, 77);
    m.u.loaded.lease = 8;
    m.u.loaded.table = t;
    m.u.loaded.regions = &reg;
    m.u.loaded.nregions = 1;
    td__proto_out o;
    TU_OK(td__proto_encode(&m, NULL, &o, &err), &err);

    td__proto_receiver r;
    td__proto_receiver_init(&r, NULL);
    ck_assert(td__proto_receiver_idle(&r));
    td__proto_frame f;
    int eagain = 0, needmore = 0, done = 0;
    while (!done) {
        int rc = td__proto_send_step(sv[0], &o, &err);
        if (rc == TD_EAGAIN)
            eagain++;
        else
            ck_assert_int_eq(rc, 0);
        for (;;) {
            rc = td__proto_receiver_step(&r, sv[1], &f, &err);
            ck_assert_int_ge(rc, 0);
            if (rc == 1) {
                done = 1;
                break;
            }
            needmore++;
            break;
        }
        if (!done)
            ck_assert(!td__proto_receiver_idle(&r) || o.sent == 0);
    }
    ck_assert_uint_eq(o.sent, o.len);
    ck_assert_int_gt(eagain, 3);
    ck_assert_int_gt(needmore, 3);
    ck_assert(td__proto_receiver_idle(&r));
    ck_assert_uint_eq(f.nfds, 1);
    TU_OK(td__proto_decode_frame(&f, NULL, &b, &err), &err);
    ck_assert_uint_eq(f.nfds, 0);
    assert_tables_equal(t, b.u.loaded.table);
    assert_same_file(reg.fd, b.u.loaded.regions[0].fd);
    td__proto_msg_destroy(&b);
    td__proto_frame_destroy(&f);
    td__proto_receiver_destroy(&r);
    td__proto_out_destroy(&o);
    free_table(t);
    close(reg.fd);
    close(sv[0]);
    close(sv[1]);
    ck_assert_int_eq(tu_count_fds(), fds0);
}
END_TEST

/* Bytes trickling in one at a time: every call but the last says "need more". */
START_TEST(test_receiver_byte_at_a_time)
{
    int fds0 = tu_count_fds();
    td_error err = {0};
    int sv[2];
    socketpair_nb(sv);
    td__proto_msg m, b;
    td__proto_msg_init(&m, TD__PROTO_PING, 3);
    m.u.ping.data = 1234567;
    td__proto_out o;
    TU_OK(td__proto_encode(&m, NULL, &o, &err), &err);
    td__proto_receiver r;
    td__proto_receiver_init(&r, NULL);
    td__proto_frame f;
    for (size_t i = 0; i < o.len; i++) {
        ck_assert_int_eq(write(sv[0], o.buf + i, 1), 1);
        int rc = td__proto_receiver_step(&r, sv[1], &f, &err);
        ck_assert_int_eq(rc, i + 1 == o.len ? 1 : 0);
    }
    ck_assert_int_eq(td__proto_receiver_step(&r, sv[1], &f, &err) >= 0, 1);
    TU_OK(td__proto_decode_frame(&f, NULL, &b, &err), &err);
    ck_assert_uint_eq(b.u.ping.data, 1234567);
    td__proto_frame_destroy(&f);
    td__proto_msg_destroy(&b);

    /* A clean close between frames is TD_ECLOSED, and stays so. */
    close(sv[0]);
    ck_assert_int_eq(td__proto_receiver_step(&r, sv[1], &f, &err), TD_ECLOSED);
    ck_assert_int_eq(td__proto_receiver_step(&r, sv[1], &f, &err), TD_ECLOSED);
    ck_assert(td__proto_receiver_idle(&r)); /* a clean disconnect */
    td__proto_receiver_destroy(&r);
    td__proto_out_destroy(&o);
    close(sv[1]);
    ck_assert_int_eq(tu_count_fds(), fds0);
}
END_TEST

/* Frames sent back to back, each with its own descriptors: the receiver never reads into the
 * next frame, so the descriptors stay with the frame that carried them. */
START_TEST(test_back_to_back_frames_keep_their_fds)
{
    int fds0 = tu_count_fds();
    td_error err = {0};
    int sv[2];
    socketpair_nb(sv);
    int a = make_region(64, 1), c = make_region(64, 3);
    td__proto_msg m;
    for (int i = 0; i < 4; i++) {
        td__proto_msg_init(&m, i % 2 ? TD__PROTO_PING : TD__PROTO_LOAD, (uint32_t)i);
        if (i % 2 == 0)
            m.u.load.fd = i == 0 ? a : c;
        TU_OK(td__proto_send_msg(sv[0], &m, NULL, 1000, &err), &err);
    }
    td__proto_receiver r;
    td__proto_receiver_init(&r, NULL);
    for (int i = 0; i < 4; i++) {
        td__proto_frame f;
        ck_assert_int_eq(td__proto_receiver_step(&r, sv[1], &f, &err), 1);
        td__proto_msg b;
        TU_OK(td__proto_decode_frame(&f, NULL, &b, &err), &err);
        ck_assert_uint_eq(b.id, (uint32_t)i);
        if (i % 2 == 0)
            assert_same_file(i == 0 ? a : c, b.u.load.fd);
        td__proto_msg_destroy(&b);
        td__proto_frame_destroy(&f);
    }
    td__proto_frame f;
    ck_assert_int_eq(td__proto_receiver_step(&r, sv[1], &f, &err), 0);
    td__proto_receiver_destroy(&r);
    close(a);
    close(c);
    close(sv[0]);
    close(sv[1]);
    ck_assert_int_eq(tu_count_fds(), fds0);
}
END_TEST

/* ---------------------------------------------------------------------------------------------
 * Buffered receivers. The frames are raw bodies (a receiver does not decode): body byte i of
 * frame k is k * 31 + i (mod 256), so that a body cut or shifted shows, and frame k's
 * descriptors are memfds tagged 10 * k + j.
 */

typedef struct rx_spec {
    uint32_t len;  /* body bytes */
    unsigned nfds; /* descriptors on the frame (at most 4) */
} rx_spec;

typedef struct rx_run {
    td__proto_receiver r;
    int sv[2]; /* sv[0] sends, sv[1] receives */
    const rx_spec *specs;
    size_t n;
    int (*fds)[4];   /* the descriptors sent with each frame (the sender's copies) */
    size_t next;     /* frames received so far */
    int from_buffer; /* frames handed out without a read (td__proto_receiver_ready before) */
} rx_run;

static void rx_run_init(rx_run *x, const rx_spec *specs, size_t n, const td__proto_limits *lim)
{
    memset(x, 0, sizeof *x);
    /* A blocking pair: the sender uses MSG_DONTWAIT itself, the receiver always does. */
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, x->sv), 0);
    td__proto_receiver_init_buffered(&x->r, lim);
    x->specs = specs;
    x->n = n;
    x->fds = calloc(n, sizeof *x->fds);
    for (size_t k = 0; k < n; k++) {
        ck_assert_uint_le(specs[k].nfds, 4);
        for (unsigned j = 0; j < specs[k].nfds; j++)
            x->fds[k][j] = make_region(64, (int)(10 * k + j));
    }
}

static void rx_run_destroy(rx_run *x)
{
    for (size_t k = 0; k < x->n; k++)
        for (unsigned j = 0; j < x->specs[k].nfds; j++)
            close(x->fds[k][j]);
    free(x->fds);
    td__proto_receiver_destroy(&x->r);
    close(x->sv[0]);
    close(x->sv[1]);
}

/* Frame k with its prefix, malloc'd. */
static uint8_t *rx_frame_bytes(uint32_t len, size_t k)
{
    uint8_t *p = malloc(TD__PROTO_PREFIX + (size_t)len);
    ck_assert_ptr_nonnull(p);
    td__put32(p, len);
    for (uint32_t i = 0; i < len; i++)
        p[TD__PROTO_PREFIX + i] = (uint8_t)(k * 31 + i);
    return p;
}

/* Receives every frame there is now, checking each against its spec: body, and descriptors of
 * the same files in the same order. A step's 0 ends it only once poll() says the socket has
 * nothing either (a short read ends a step without looking further). */
static void rx_drain(rx_run *x)
{
    for (;;) {
        bool ready = td__proto_receiver_ready(&x->r);
        td__proto_frame f;
        td_error err = {0};
        int rc = td__proto_receiver_step(&x->r, x->sv[1], &f, &err);
        ck_assert_msg(rc >= 0, "at frame %zu: %s", x->next, err.message);
        if (rc == 0) {
            ck_assert(!ready);
            struct pollfd p = {x->sv[1], POLLIN, 0};
            if (poll(&p, 1, 0) > 0)
                continue;
            return;
        }
        size_t k = x->next++;
        ck_assert_uint_lt(k, x->n);
        x->from_buffer += ready;
        ck_assert_uint_eq(f.len, x->specs[k].len);
        for (uint32_t i = 0; i < f.len; i++)
            if (f.body[i] != (uint8_t)(k * 31 + i))
                ck_abort_msg("frame %zu: body byte %u is %u", k, i, f.body[i]);
        ck_assert_msg(f.nfds == x->specs[k].nfds, "frame %zu: %u descriptors, sent %u", k, f.nfds,
                      x->specs[k].nfds);
        for (unsigned j = 0; j < f.nfds; j++) {
            assert_same_file(x->fds[k][j], f.fds[j]);
            assert_cloexec(f.fds[j]);
        }
        td__proto_frame_destroy(&f);
    }
}

/* Sends p[0..n) with nfds descriptors on the first call that moves a byte, waiting for the
 * receiver (rx_drain) when the socket is full. */
static void rx_send(rx_run *x, const uint8_t *p, size_t n, const int *fds, unsigned nfds)
{
    while (n) {
        ssize_t k = tu_sendmsg_fds(x->sv[0], p, n, fds, nfds, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (k < 0) {
            ck_assert_msg(errno == EAGAIN || errno == EINTR, "sendmsg: %s", strerror(errno));
            rx_drain(x);
            continue;
        }
        p += k;
        n -= (size_t)k;
        nfds = 0;
    }
}

/* Sends every frame, in pieces of `piece` bytes (0: whole), each piece a sendmsg of its own and
 * the descriptors on the first; receives after every piece when `interleave`, else at the end
 * (and whenever the socket is full). With interleave, a frame must come exactly with its last
 * byte. */
static void rx_run_all(rx_run *x, size_t piece, int interleave)
{
    for (size_t k = 0; k < x->n; k++) {
        uint32_t len = x->specs[k].len;
        size_t total = TD__PROTO_PREFIX + (size_t)len;
        uint8_t *p = rx_frame_bytes(len, k);
        size_t step = piece ? piece : total;
        for (size_t at = 0; at < total; at += step) {
            size_t m = total - at < step ? total - at : step;
            rx_send(x, p + at, m, x->fds[k], at ? 0 : x->specs[k].nfds);
            if (interleave) {
                rx_drain(x);
                ck_assert_uint_eq(x->next, at + m == total ? k + 1 : k);
            }
        }
        free(p);
    }
    rx_drain(x);
    ck_assert_uint_eq(x->next, x->n);
    ck_assert(td__proto_receiver_idle(&x->r));
}

/* Frames written back to back (a sendmsg each, some with descriptors) before the receiver
 * reads: each frame gets exactly its own descriptors, in order, and frames are handed out of the
 * buffer without a read of their own. */
START_TEST(test_buffered_frames_keep_their_fds)
{
    int fds0 = tu_count_fds();
    static const rx_spec specs[] = {{20, 1}, {5, 0},  {7, 0}, {30, 2}, {1, 0},  {2, 0},
                                    {3, 0},  {40, 1}, {9, 0}, {11, 3}, {4, 0},  {6, 4},
                                    {8, 1},  {8, 1},  {8, 0}, {8, 0},  {100, 0}};
    rx_run x;
    rx_run_init(&x, specs, sizeof specs / sizeof specs[0], NULL);
    rx_run_all(&x, 0, 0);
    /* Reads stop at each frame with descriptors: 8 of them, so at most 8 reads for 17 frames. */
    ck_assert_int_ge(x.from_buffer, (int)(sizeof specs / sizeof specs[0]) - 8);
    rx_run_destroy(&x);
    ck_assert_int_eq(tu_count_fds(), fds0);
}
END_TEST

/* A frame with descriptors right after one without, both waiting: one read brings both, and
 * the descriptors go to the second. */
START_TEST(test_buffered_fds_go_to_the_later_frame)
{
    int fds0 = tu_count_fds();
    static const rx_spec specs[] = {{12, 0}, {12, 2}};
    rx_run x;
    rx_run_init(&x, specs, 2, NULL);
    for (size_t k = 0; k < 2; k++) {
        uint8_t *p = rx_frame_bytes(specs[k].len, k);
        rx_send(&x, p, TD__PROTO_PREFIX + specs[k].len, x.fds[k], specs[k].nfds);
        free(p);
    }
    td__proto_frame f;
    td_error err = {0};
    ck_assert_int_eq(td__proto_receiver_step(&x.r, x.sv[1], &f, &err), 1);
    ck_assert_uint_eq(f.nfds, 0);
    td__proto_frame_destroy(&f);
    ck_assert(td__proto_receiver_ready(&x.r)); /* the second came with the same read */
    x.next = 1;
    rx_drain(&x);
    ck_assert_uint_eq(x.next, 2);
    rx_run_destroy(&x);
    ck_assert_int_eq(tu_count_fds(), fds0);
}
END_TEST

/* Frames that straddle the end of the buffer (a length prefix too), one exactly as long as the
 * buffer, one a byte longer, one three times longer (read exactly, into a body of their own),
 * with and without descriptors. */
START_TEST(test_buffered_straddling_and_long_frames)
{
    int fds0 = tu_count_fds();
    const uint32_t B = TD__PROTO_RX_BUF;
    rx_spec specs[40];
    size_t n = 0;
    specs[n++] = (rx_spec){B - 6, 0}; /* the next prefix starts 2 bytes before the end */
    specs[n++] = (rx_spec){100, 1};
    for (unsigned k = 0; k < 30; k++)
        specs[n++] = (rx_spec){700 + 13 * k, k % 4 == 0};
    specs[n++] = (rx_spec){1, 0};
    rx_run x;
    rx_run_init(&x, specs, n, NULL);
    rx_run_all(&x, 0, 0);
    ck_assert_int_gt(x.from_buffer, 10);
    rx_run_destroy(&x);

    n = 0;
    specs[n++] = (rx_spec){B - TD__PROTO_PREFIX, 0}; /* exactly the buffer */
    specs[n++] = (rx_spec){B - TD__PROTO_PREFIX + 1, 2};
    specs[n++] = (rx_spec){3 * B, 1};
    specs[n++] = (rx_spec){10, 1};
    specs[n++] = (rx_spec){2 * B + 5, 0};
    specs[n++] = (rx_spec){3, 0};
    rx_run_init(&x, specs, n, NULL);
    rx_run_all(&x, 0, 0);
    rx_run_destroy(&x);
    /* The same, received as the bytes come, in 1000-byte pieces. */
    rx_run_init(&x, specs, n, NULL);
    rx_run_all(&x, 1000, 1);
    rx_run_destroy(&x);
    ck_assert_int_eq(tu_count_fds(), fds0);
}
END_TEST

/* One byte per sendmsg: received as each byte comes (a frame exactly with its last byte), and
 * all of them waiting before the first read. */
START_TEST(test_buffered_byte_at_a_time)
{
    int fds0 = tu_count_fds();
    static const rx_spec specs[] = {{3, 1}, {1, 0}, {9, 2}, {2, 0}, {5, 0}, {4, 1}, {30, 0}};
    for (int interleave = 1; interleave >= 0; interleave--) {
        rx_run x;
        rx_run_init(&x, specs, sizeof specs / sizeof specs[0], NULL);
        rx_run_all(&x, 1, interleave);
        rx_run_destroy(&x);
    }
    ck_assert_int_eq(tu_count_fds(), fds0);
}
END_TEST

/* The end of the stream: between frames a clean close (idle), inside one not, whether the
 * frame's start came with the read that saw the close or before. */
START_TEST(test_buffered_eof)
{
    int fds0 = tu_count_fds();
    static const rx_spec specs[] = {{10, 1}, {20, 0}};
    for (int cut = 0; cut < 4; cut++) {
        /* cut 0: two whole frames; 1: the second's first 2 bytes; 2: its prefix and 5 bytes;
         * 3: like 2, received before the close. */
        rx_run x;
        rx_run_init(&x, specs, 2, NULL);
        uint8_t *p = rx_frame_bytes(specs[0].len, 0);
        rx_send(&x, p, TD__PROTO_PREFIX + specs[0].len, x.fds[0], 1);
        free(p);
        p = rx_frame_bytes(specs[1].len, 1);
        size_t m = cut == 0 ? TD__PROTO_PREFIX + specs[1].len : cut == 1 ? 2 : 9;
        rx_send(&x, p, m, NULL, 0);
        free(p);
        if (cut == 3)
            rx_drain(&x);
        shutdown(x.sv[0], SHUT_WR);
        td__proto_frame f;
        td_error err = {0};
        int rc, frames = 0, zeros = 0;
        while ((rc = td__proto_receiver_step(&x.r, x.sv[1], &f, &err)) >= 0) {
            if (rc == 1) {
                frames++;
                td__proto_frame_destroy(&f);
            } else {
                ck_assert_int_lt(++zeros, 3);
            }
        }
        ck_assert_int_eq(rc, TD_ECLOSED);
        ck_assert_int_eq(frames + (cut == 3), cut == 0 ? 2 : 1);
        if (cut == 0) {
            ck_assert(td__proto_receiver_idle(&x.r));
        } else {
            ck_assert(!td__proto_receiver_idle(&x.r));
            ck_assert_ptr_nonnull(strstr(err.message, "inside a frame"));
            ck_assert_ptr_nonnull(strstr(err.message, cut == 1 ? "length prefix" : "of 24"));
        }
        ck_assert_int_eq(td__proto_receiver_step(&x.r, x.sv[1], &f, &err), TD_ECLOSED);
        rx_run_destroy(&x);
    }
    ck_assert_int_eq(tu_count_fds(), fds0);
}
END_TEST

/* td__proto_recv_msg (an exact receiver on the stack) never takes a byte of the next frame,
 * even when both came in one write: what it leaves in the socket is the second frame, whole. */
START_TEST(test_exact_recv_leaves_the_next_frame)
{
    int fds0 = tu_count_fds();
    td_error err = {0};
    int sv[2];
    socketpair_nb(sv);
    td__proto_out o[2];
    uint8_t both[256];
    size_t n = 0;
    for (int i = 0; i < 2; i++) {
        td__proto_msg m;
        td__proto_msg_init(&m, TD__PROTO_PING, (uint32_t)(i + 1));
        m.u.ping.data = 1000u + (uint32_t)i;
        TU_OK(td__proto_encode(&m, NULL, &o[i], &err), &err);
        ck_assert_uint_le(n + o[i].len, sizeof both);
        memcpy(both + n, o[i].buf, o[i].len);
        n += o[i].len;
    }
    ck_assert_int_eq(write(sv[0], both, n), (ssize_t)n);
    td__proto_msg b;
    TU_OK(td__proto_recv_msg(sv[1], NULL, &b, 1000, &err), &err);
    ck_assert_uint_eq(b.id, 1);
    td__proto_msg_destroy(&b);
    uint8_t rest[256];
    ck_assert_int_eq(recv(sv[1], rest, sizeof rest, MSG_DONTWAIT), (ssize_t)o[1].len);
    ck_assert_mem_eq(rest, o[1].buf, o[1].len);
    td__proto_out_destroy(&o[0]);
    td__proto_out_destroy(&o[1]);
    close(sv[0]);
    close(sv[1]);
    ck_assert_int_eq(tu_count_fds(), fds0);
}
END_TEST

static void on_alarm(int sig)
{
    (void)sig;
}

/* td_client's receiver waits in recvmsg itself (td__proto_receiver_block, SO_RCVTIMEO): a quiet
 * peer times out near the timeout (at most a second over), a frame sent later and in pieces
 * arrives whole, a longer timeout after a short one is honoured, and the peer closing between
 * frames is TD_ECLOSED. */
START_TEST(test_recv_msg_rx_blocking)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    td__proto_receiver r;
    td__proto_receiver_init_buffered(&r, NULL);
    td__proto_receiver_block(&r);
    td_error err = {0};
    td__proto_msg b;
    double t0 = tu_now_s();
    ck_assert_int_eq(td__proto_recv_msg_rx(&r, sv[1], 150, &b, &err), TD_EAGAIN);
    double dt = tu_now_s() - t0;
    ck_assert_msg(dt >= 0.14 && dt < 1.5, "timed out after %.3f s", dt);
    /* A signal every 50 ms (SA_RESTART: a timed socket wait ends with EINTR all the same) must
     * not make the wait start over: the deadline holds. */
    struct sigaction sa = {.sa_handler = on_alarm, .sa_flags = SA_RESTART}, old;
    ck_assert_int_eq(sigaction(SIGALRM, &sa, &old), 0);
    struct itimerval every = {{0, 50000}, {0, 50000}}, off = {{0, 0}, {0, 0}};
    ck_assert_int_eq(setitimer(ITIMER_REAL, &every, NULL), 0);
    t0 = tu_now_s();
    int rc = td__proto_recv_msg_rx(&r, sv[1], 300, &b, &err);
    dt = tu_now_s() - t0;
    setitimer(ITIMER_REAL, &off, NULL);
    sigaction(SIGALRM, &old, NULL);
    ck_assert_int_eq(rc, TD_EAGAIN);
    ck_assert_msg(dt >= 0.29 && dt < 1.5, "timed out after %.3f s under signals", dt);

    td__proto_msg m;
    td__proto_msg_init(&m, TD__PROTO_PING, 7);
    m.u.ping.data = 99;
    td__proto_out o;
    TU_OK(td__proto_encode(&m, NULL, &o, &err), &err);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) { /* the frame 300 ms from now, in three pieces 50 ms apart */
        usleep(300000);
        size_t third = o.len / 3;
        for (int k = 0; k < 3; k++) {
            size_t from = k * third, to = k == 2 ? o.len : from + third;
            if (write(sv[0], o.buf + from, to - from) != (ssize_t)(to - from))
                _exit(1);
            usleep(50000);
        }
        _exit(0);
    }
    td__proto_out_destroy(&o);
    /* The timeout set last was 150 ms: this call's is longer and must hold. */
    TU_OK(td__proto_recv_msg_rx(&r, sv[1], 5000, &b, &err), &err);
    ck_assert_uint_eq(b.type, TD__PROTO_PING);
    ck_assert_uint_eq(b.id, 7);
    ck_assert_uint_eq(b.u.ping.data, 99);
    td__proto_msg_destroy(&b);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    close(sv[0]);
    ck_assert_int_eq(td__proto_recv_msg_rx(&r, sv[1], 5000, &b, &err), TD_ECLOSED);
    td__proto_receiver_destroy(&r);
    close(sv[1]);
}
END_TEST

/* td__proto_recv_msg_rx on a buffered receiver: pipelined replies come with one read, and the
 * later ones are taken from the buffer without touching the socket (it is passed as -1). */
START_TEST(test_recv_msg_rx)
{
    int fds0 = tu_count_fds();
    td_error err = {0};
    int sv[2];
    socketpair_nb(sv);
    int file = make_region(64, 5);
    for (uint32_t i = 1; i <= 3; i++) {
        td__proto_msg m;
        td__proto_msg_init(&m, i == 2 ? TD__PROTO_LOAD : TD__PROTO_PING, i);
        if (i == 2)
            m.u.load.fd = file;
        TU_OK(td__proto_send_msg(sv[0], &m, NULL, 1000, &err), &err);
    }
    td__proto_receiver r;
    td__proto_receiver_init_buffered(&r, NULL);
    td__proto_msg b;
    TU_OK(td__proto_recv_msg_rx(&r, sv[1], 1000, &b, &err), &err);
    ck_assert_uint_eq(b.id, 1);
    td__proto_msg_destroy(&b);
    /* The read stopped at the LOAD's descriptor: PING 1 and the LOAD are held. */
    ck_assert(td__proto_receiver_ready(&r));
    TU_OK(td__proto_recv_msg_rx(&r, -1, 0, &b, &err), &err);
    ck_assert_uint_eq(b.type, TD__PROTO_LOAD);
    assert_same_file(file, b.u.load.fd);
    td__proto_msg_destroy(&b);
    ck_assert(!td__proto_receiver_ready(&r));
    TU_OK(td__proto_recv_msg_rx(&r, sv[1], 1000, &b, &err), &err);
    ck_assert_uint_eq(b.id, 3);
    td__proto_msg_destroy(&b);
    /* Nothing more: the wait times out. */
    ck_assert_int_eq(td__proto_recv_msg_rx(&r, sv[1], 20, &b, &err), TD_EAGAIN);
    /* A frame that does not decode fails alone; the stream goes on. */
    ck_assert_int_eq(write(sv[0], "\x01\0\0\0\xc1", 5), 5);
    ck_assert_int_eq(td__proto_recv_msg_rx(&r, sv[1], 1000, &b, &err), TD_EPROTO);
    td__proto_msg m;
    td__proto_msg_init(&m, TD__PROTO_PING, 4);
    TU_OK(td__proto_send_msg(sv[0], &m, NULL, 1000, &err), &err);
    TU_OK(td__proto_recv_msg_rx(&r, sv[1], 1000, &b, &err), &err);
    ck_assert_uint_eq(b.id, 4);
    td__proto_msg_destroy(&b);
    /* A broken stream keeps failing, without waiting. */
    ck_assert_int_eq(write(sv[0], "\0\0\0\0", 4), 4);
    ck_assert_int_eq(td__proto_recv_msg_rx(&r, sv[1], 1000, &b, &err), TD_EPROTO);
    ck_assert_int_eq(td__proto_recv_msg_rx(&r, sv[1], -1, &b, &err), TD_EPROTO);
    td__proto_receiver_destroy(&r);
    close(file);
    close(sv[0]);
    close(sv[1]);
    ck_assert_int_eq(tu_count_fds(), fds0);
}
END_TEST

START_TEST(test_timeouts)
{
    int fds0 = tu_count_fds();
    td_error err = {0};
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    td__proto_msg b;
    double t0 = tu_now_s();
    ck_assert_int_eq(td__proto_recv_msg(sv[1], NULL, &b, 50, &err), TD_EAGAIN);
    double dt = tu_now_s() - t0;
    ck_assert_msg(dt >= 0.045 && dt < 2.0, "timed out after %.3f s", dt);
    ck_assert_ptr_nonnull(strstr(err.message, "timed out"));

    /* A peer that never reads: the blocking sender times out with its progress kept. */
    int small = 4096;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    uint64_t sizes[1];
    td__table *t = make_table(5000, 1, sizes, 0);
    td__proto_region reg = {make_region(sizes[0], 0), sizes[0], 0};
    td__proto_msg m;
    td__proto_msg_init(&m, TD__PROTO_LOAD_OK, 1);
    m.u.loaded.lease = 1;
    m.u.loaded.table = t;
    m.u.loaded.regions = &reg;
    m.u.loaded.nregions = 1;
    td__proto_out o;
    TU_OK(td__proto_encode(&m, NULL, &o, &err), &err);
    ck_assert_int_eq(td__proto_send(sv[0], &o, 50, &err), TD_EAGAIN);
    ck_assert_uint_gt(o.sent, 0);
    ck_assert_uint_lt(o.sent, o.len);
    td__proto_out_destroy(&o);
    free_table(t);
    close(reg.fd);

    /* Sending to a closed peer is TD_ECLOSED, not SIGPIPE. */
    close(sv[1]);
    td__proto_msg_init(&m, TD__PROTO_PING, 1);
    ck_assert_int_eq(td__proto_send_msg(sv[0], &m, NULL, 100, &err), TD_ECLOSED);
    close(sv[0]);
    ck_assert_int_eq(tu_count_fds(), fds0);
}
END_TEST

START_TEST(test_peercred)
{
    td_error err = {0};
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    td__proto_cred c;
    TU_OK(td__proto_peercred(sv[1], &c, &err), &err);
    ck_assert_int_eq(c.pid, getpid());
    ck_assert_uint_eq(c.uid, getuid());
    ck_assert_uint_eq(c.gid, getgid());
    close(sv[0]);
    close(sv[1]);
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(td__proto_peercred(p[0], &c, &err), TD_ESYS);
    close(p[0]);
    close(p[1]);
}
END_TEST

START_TEST(test_negotiate)
{
    td_error err = {0};
    td__proto_hello h = {0};
    uint32_t v;
    uint64_t f;
    h.version = 3;
    h.min_version = 1;
    h.features = TD__PROTO_F_PIN | TD__PROTO_F_DEQUANT | (1ull << 40);
    TU_OK(td__proto_negotiate(&h, 1, 2, TD__PROTO_F_ALL, &v, &f, &err), &err);
    ck_assert_uint_eq(v, 2);
    ck_assert_uint_eq(f, TD__PROTO_F_PIN | TD__PROTO_F_DEQUANT);
    h.version = 1;
    TU_OK(td__proto_negotiate(&h, 1, 2, 0, &v, &f, &err), &err);
    ck_assert_uint_eq(v, 1);
    ck_assert_uint_eq(f, 0);
    /* An old client against a daemon that dropped version 1. */
    ck_assert_int_eq(td__proto_negotiate(&h, 2, 3, 0, &v, &f, &err), TD_EVERSION);
    ck_assert_ptr_nonnull(strstr(err.message, "1..1"));
    /* A client that only speaks versions newer than ours. */
    h.version = 9;
    h.min_version = 5;
    ck_assert_int_eq(td__proto_negotiate(&h, 1, 2, 0, &v, &f, &err), TD_EVERSION);
}
END_TEST

/* The encoder refuses what a decoder would refuse, and the peer's limits. */
START_TEST(test_encode_refuses)
{
    int fds0 = tu_count_fds();
    td_error err = {0};
    td__proto_msg m;
    td__proto_out o;
    uint64_t sizes[1];
    td__table *t = make_table(10, 1, sizes, 0);
    td__proto_region reg = {make_region(sizes[0], 0), sizes[0], 0};
    td__proto_msg_init(&m, TD__PROTO_LOAD_OK, 1);
    m.u.loaded.lease = 1;
    m.u.loaded.table = t;
    m.u.loaded.regions = &reg;
    m.u.loaded.nregions = 1;
    TU_OK(td__proto_encode(&m, NULL, &o, &err), &err);
    td__proto_out_destroy(&o);

    td__proto_limits tiny = {.max_frame = 64};
    ck_assert_int_eq(td__proto_encode(&m, &tiny, &o, &err), TD_ELIMIT);
    ck_assert_ptr_null(o.buf);
    td__proto_limits nofd = {.max_count = 5};
    ck_assert_int_eq(td__proto_encode(&m, &nofd, &o, &err), TD_ELIMIT);

    reg.size = t->entries[9].offset + t->entries[9].nbytes - 1;
    ck_assert_int_eq(td__proto_encode(&m, NULL, &o, &err), TD_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.message, "past the end of region"));
    reg.size = sizes[0];
    t->entries[2].nbytes++;
    ck_assert_int_eq(td__proto_encode(&m, NULL, &o, &err), TD_EINVAL);
    t->entries[2].nbytes--;
    t->entries[4].layout = TD__LAYOUT_SWAP;
    ck_assert_int_eq(td__proto_encode(&m, NULL, &o, &err), TD_EINVAL);
    t->entries[4].layout = 0;
    t->entries[5].region = 1;
    ck_assert_int_eq(td__proto_encode(&m, NULL, &o, &err), TD_EINVAL);
    t->entries[5].region = 0;
    m.u.loaded.lease = 0;
    ck_assert_int_eq(td__proto_encode(&m, NULL, &o, &err), TD_EINVAL);
    m.u.loaded.lease = 1;
    TU_OK(td__proto_encode(&m, NULL, &o, &err), &err);
    td__proto_out_destroy(&o);

    td__proto_msg_init(&m, TD__PROTO_LOAD, 1);
    ck_assert_int_eq(td__proto_encode(&m, NULL, &o, &err), TD_EINVAL); /* no descriptor */
    m.u.load.fd = reg.fd;
    m.u.load.mode = 9;
    ck_assert_int_eq(td__proto_encode(&m, NULL, &o, &err), TD_EINVAL);
    td__proto_msg_init(&m, TD__PROTO_ERROR, 1);
    ck_assert_int_eq(td__proto_encode(&m, NULL, &o, &err), TD_EINVAL); /* code 0 */
    td__proto_msg_init(&m, 0x42, 1);
    ck_assert_int_eq(td__proto_encode(&m, NULL, &o, &err), TD_EINVAL);
    free_table(t);
    close(reg.fd);
    ck_assert_int_eq(tu_count_fds(), fds0);
}
END_TEST

/* Limits resolve to defaults and clamp to the hard bounds. */
START_TEST(test_limits)
{
    td__proto_limits l;
    td__proto_limits_resolve(NULL, &l);
    ck_assert_uint_eq(l.max_frame, TD__PROTO_DEFAULT_MAX_FRAME);
    ck_assert_uint_eq(l.max_fds, TD__PROTO_FDS_MAX);
    ck_assert_uint_eq(l.max_depth, TD__PROTO_DEFAULT_MAX_DEPTH);
    td__proto_limits big = {UINT32_MAX, 9999, 999, 1, 2, 3};
    td__proto_limits_resolve(&big, &l);
    ck_assert_uint_eq(l.max_frame, TD__PROTO_FRAME_MAX);
    ck_assert_uint_eq(l.max_fds, TD__PROTO_FDS_MAX);
    ck_assert_uint_eq(l.max_depth, TD__PROTO_DEPTH_MAX);
    ck_assert_uint_eq(l.max_str, 1);
    ck_assert_uint_eq(l.max_count, 2);
    ck_assert_uint_eq(l.max_objects, 3);
}
END_TEST

static Suite *proto_suite(void)
{
    Suite *s = suite_create("proto");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_type_names);
    tcase_add_test(tc, test_limits);
    tcase_add_test(tc, test_roundtrip_every_type);
    tcase_add_test(tc, test_roundtrip_100k_tensors);
    tcase_add_test(tc, test_socketpair_load_roundtrip);
    tcase_add_test(tc, test_incremental_interleaved);
    tcase_add_test(tc, test_receiver_byte_at_a_time);
    tcase_add_test(tc, test_back_to_back_frames_keep_their_fds);
    tcase_add_test(tc, test_buffered_frames_keep_their_fds);
    tcase_add_test(tc, test_buffered_fds_go_to_the_later_frame);
    tcase_add_test(tc, test_buffered_straddling_and_long_frames);
    tcase_add_test(tc, test_buffered_byte_at_a_time);
    tcase_add_test(tc, test_buffered_eof);
    tcase_add_test(tc, test_exact_recv_leaves_the_next_frame);
    tcase_add_test(tc, test_recv_msg_rx);
    tcase_add_test(tc, test_recv_msg_rx_blocking);
    tcase_add_test(tc, test_timeouts);
    tcase_add_test(tc, test_peercred);
    tcase_add_test(tc, test_negotiate);
    tcase_add_test(tc, test_encode_refuses);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(proto_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}

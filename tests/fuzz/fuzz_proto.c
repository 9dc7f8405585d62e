/*
 * fuzz_proto.c - libFuzzer target for the wire protocol's receiving side.
 *
 * Input layout: byte 0 is a control byte, the rest is what a peer sends.
 *   bits 0-1  descriptors attached to the frame (0..3; /dev/null duplicates)
 *   bits 2-3  path: 0 = td__proto_parse on a whole frame (prefix + body)
 *                   1 = td__proto_decode on a bare body
 *                   2 = the bytes go through a socketpair into td__proto_receiver (any number
 *                       of frames, descriptors on the first byte), each frame decoded
 *                   3 = td__proto_decode with small limits (depth 6, 64 objects, 32-byte
 *                       strings, 16 elements, 2 descriptors)
 *   bits 4-7  path 2 only (the other paths ignore them):
 *     bit 4     the receiver is buffered (td__proto_receiver_init_buffered), not exact
 *     bits 5-6  the sender's calls: 0 = one sendmsg; 1, 2, 3 = pieces of 1, 7 or 61 bytes, a
 *               sendmsg each (the first 64 pieces; the rest in one), descriptors on the first
 *     bit 7     the receiver steps after every piece, not only once everything is sent
 *
 * Oracles, besides the sanitizers:
 *   - no descriptor survives an input: every descriptor number the target made is closed when
 *     it returns (fcntl says EBADF), on success and on failure;
 *   - a message that decodes re-encodes, and encode(decode(encode(m))) == encode(m) byte for
 *     byte (the decoder accepts only what the encoder can say, and says it one way);
 *   - failures return a negative TD_E* code and a message, never TD_ENOMEM for small inputs;
 *   - path 2: the frames handed out are the input's frames, in order, byte for byte, and a
 *     receiver asked again and again after the peer closed gets to the close (at most two 0s
 *     in a row: short reads).
 *
 * TD_FUZZ_WRITE_CORPUS=DIR writes the seed corpus (valid frames of every message type, for
 * each path) into DIR and exits; tests/fuzz/corpus_proto was made that way.
 */
#include "common.h"
#include "meta_internal.h"
#include "proto.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static int g_null = -1;

static void die(const char *what, const td_error *err)
{
    fprintf(stderr, "fuzz_proto: %s: %s\n", what, err ? err->message : "");
    abort();
}

/* Every descriptor in fds[0..n) must be closed by now. */
static void check_closed(const int *fds, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (fds[i] >= 0 && (fcntl(fds[i], F_GETFD) != -1 || errno != EBADF))
            die("descriptor leaked", NULL);
}

/* Re-encodes a decoded message and checks the encoding is stable. Destroys m. */
static void roundtrip(td__proto_msg *m)
{
    td_error err = {0};
    td__proto_out a, b;
    if (td__proto_encode(m, NULL, &a, &err))
        die("a decoded message does not re-encode", &err);
    int fds[TD__PROTO_FDS_MAX];
    unsigned n = a.nfds;
    for (unsigned i = 0; i < n; i++)
        if ((fds[i] = fcntl(a.fds[i], F_DUPFD_CLOEXEC, 0)) < 0)
            die("dup", NULL);
    td__proto_msg m2;
    if (td__proto_parse(a.buf, a.len, fds, &n, NULL, &m2, &err))
        die("a re-encoded message does not decode", &err);
    if (td__proto_encode(&m2, NULL, &b, &err))
        die("a twice-decoded message does not re-encode", &err);
    if (a.len != b.len || memcmp(a.buf, b.buf, a.len) != 0 || a.nfds != b.nfds)
        die("encode(decode(encode(m))) differs from encode(m)", NULL);
    td__proto_out_destroy(&a);
    td__proto_out_destroy(&b);
    td__proto_msg_destroy(&m2);
    td__proto_msg_destroy(m);
}

static void decode_one(const uint8_t *p, size_t n, int framed, unsigned nfds,
                       const td__proto_limits *lim)
{
    td_error err = {0};
    int fds[4], made[4];
    for (unsigned i = 0; i < nfds; i++)
        made[i] = fds[i] = fcntl(g_null, F_DUPFD_CLOEXEC, 0);
    unsigned left = nfds;
    td__proto_msg m;
    int rc = framed ? td__proto_parse(p, n, fds, &left, lim, &m, &err)
                    : td__proto_decode(p, n, fds, &left, lim, &m, &err);
    if (rc) {
        if (rc >= 0 || !err.message[0] || (rc == TD_ENOMEM && n < 65536))
            die("bad failure", &err);
        if (left != nfds)
            die("descriptors taken on failure", &err);
        for (unsigned i = 0; i < left; i++)
            close(fds[i]);
    } else {
        if (left != 0)
            die("descriptors left behind on success", NULL);
        roundtrip(&m);
    }
    check_closed(made, nfds);
}

/* Path 2's receiving side: the frames so far must be the input's, byte for byte. */
typedef struct stream {
    td__proto_receiver r;
    int sock;
    const uint8_t *p; /* the input */
    size_t n, off;    /* off: where the next frame starts in it */
    int failed;       /* the receiver returned an error */
    int frames;
} stream;

/* Steps until the receiver says 0 (or fails, or 64 frames came). Returns the last step's code
 * (1 when it stopped at 64 frames). */
static int stream_take(stream *st)
{
    td_error err = {0};
    while (!st->failed && st->frames < 64) {
        td__proto_frame f;
        int rc = td__proto_receiver_step(&st->r, st->sock, &f, &err);
        if (rc < 0) {
            if (!err.message[0])
                die("receiver failure without a message", NULL);
            st->failed = 1;
            return rc;
        }
        if (rc == 0)
            return 0;
        st->frames++;
        if (st->off + TD__PROTO_PREFIX + f.len > st->n || td__le32(st->p + st->off) != f.len ||
            memcmp(st->p + st->off + TD__PROTO_PREFIX, f.body, f.len) != 0)
            die("a frame handed out is not the input's next frame", NULL);
        st->off += TD__PROTO_PREFIX + f.len;
        td__proto_msg m;
        rc = td__proto_decode_frame(&f, NULL, &m, &err);
        if (!rc)
            roundtrip(&m);
        td__proto_frame_destroy(&f);
    }
    return 1;
}

static void send_piece(int sock, const uint8_t *p, size_t n, const int *fds, unsigned nfds)
{
    struct iovec iov = {(void *)p, n};
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int) * 4)];
    } cm;
    struct msghdr mh = {0};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
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
    if (sendmsg(sock, &mh, MSG_NOSIGNAL) != (ssize_t)n)
        die("sendmsg", NULL);
}

static void through_socket(const uint8_t *p, size_t n, unsigned nfds, uint8_t ctl)
{
    static const size_t pieces[4] = {0, 1, 7, 61};
    size_t piece = pieces[(ctl >> 5) & 3];
    int interleave = (ctl >> 7) & 1;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv))
        die("socketpair", NULL);
    int made[4];
    for (unsigned i = 0; i < nfds; i++)
        made[i] = fcntl(g_null, F_DUPFD_CLOEXEC, 0);
    stream st = {.sock = sv[1], .p = p, .n = n};
    if (ctl & 0x10)
        td__proto_receiver_init_buffered(&st.r, NULL);
    else
        td__proto_receiver_init(&st.r, NULL);
    /* At most 64 small pieces and the rest: the socket holds them all (16 KiB of input). */
    for (size_t at = 0, k = 0; at < n; k++) {
        size_t m = piece && k < 64 && n - at > piece ? piece : n - at;
        send_piece(sv[0], p + at, m, made, at ? 0 : nfds);
        at += m;
        if (interleave)
            stream_take(&st);
    }
    for (unsigned i = 0; i < nfds; i++)
        close(made[i]);
    close(sv[0]);

    /* The peer is gone: each call must make progress, but for the 0 a short read gives (one
     * read may stop at the descriptors, the next bring the rest; the one after sees the end). */
    int zeros = 0;
    while (!st.failed && st.frames < 64) {
        int before = st.frames;
        int rc = stream_take(&st);
        zeros = rc == 0 && st.frames == before ? zeros + 1 : 0;
        if (zeros > 2)
            die("receiver wants more from a closed peer", NULL);
    }
    td__proto_receiver_destroy(&st.r);
    close(sv[1]);
    check_closed(made, nfds);
    check_closed(sv, 2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t ctl = data[0];
    data++;
    size--;
    unsigned nfds = ctl & 3;
    static const td__proto_limits small = {.max_frame = 4096,
                                           .max_fds = 2,
                                           .max_depth = 6,
                                           .max_str = 32,
                                           .max_count = 16,
                                           .max_objects = 64};
    switch ((ctl >> 2) & 3) {
    case 0:
        decode_one(data, size, 1, nfds, NULL);
        break;
    case 1:
        decode_one(data, size, 0, nfds, NULL);
        break;
    case 2:
        through_socket(data, size, nfds, ctl);
        break;
    default:
        decode_one(data, size, 0, nfds > 2 ? 2 : nfds, &small);
        break;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Seed corpus
 */

static void write_seed(const char *dir, const char *name, uint8_t ctl, const td__proto_out *o,
                       int body_only)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f)
        die(path, NULL);
    fputc(ctl, f);
    size_t skip = body_only ? TD__PROTO_PREFIX : 0;
    fwrite(o->buf + skip, 1, o->len - skip, f);
    fclose(f);
}

static void make_corpus(const char *dir)
{
    td_error err = {0};
    td__proto_msg ms[24];
    const char *suffix[24] = {0}; /* told apart in the seed names: two forms of one type */
    size_t n = 0;
    int fd = g_null;

    td__proto_msg_init(&ms[n], TD__PROTO_HELLO, 1);
    ms[n].u.hello.version = 1;
    ms[n].u.hello.features = TD__PROTO_F_ALL;
    ms[n++].u.hello.software = "libtensord 0.1.0";
    ms[n] = ms[n - 1];
    ms[n++].type = TD__PROTO_HELLO_OK;
    td__proto_msg_init(&ms[n], TD__PROTO_LOAD, 2);
    ms[n].u.load.fd = fd;
    ms[n].u.load.format = TD_FORMAT_GGUF;
    ms[n].u.load.mode = TD__PROTO_MODE_SNAPSHOT;
    ms[n].u.load.dequant = TD_FLOAT16;
    ms[n].u.load.flags = TD__PROTO_LOAD_SHARD; /* one split of a model */
    ms[n++].u.load.name = "model-00001-of-00002.gguf";
    ms[n] = ms[n - 1]; /* feature LEAN: it keeps entry 9's table */
    ms[n].u.load.have = 9;
    suffix[n++] = "_have";

    td__table t;
    td__table_init(&t, TD_FORMAT_GGUF);
    const char *names[] = {"token_embd.weight", "blk.0.attn_q.weight", "output_norm.weight"};
    td_dtype dts[] = {TD_Q4_K, TD_BFLOAT16, TD_FLOAT32};
    int64_t shapes[3][2] = {{2, 256}, {4, 4}, {8, 0}};
    uint32_t nd[] = {2, 2, 1};
    uint64_t off = 0;
    for (int i = 0; i < 3; i++) {
        td__entry *e = td__table_add(&t, names[i], strlen(names[i]), &err);
        td__entry_set_shape(e, nd[i], shapes[i], &err);
        e->dtype = dts[i];
        td__shape_nbytes(e->dtype, e->ndim, e->shape, &e->nbytes, &err);
        e->region = (uint32_t)(i == 2);
        e->offset = i == 2 ? 0 : off;
        if (i != 2)
            off += e->nbytes;
    }
    t.meta = td_meta_new();
    uint32_t u32 = 32;
    int64_t i64 = -7;
    float f32 = 1e-5f;
    uint8_t b = 1;
    td_meta_set_scalar(t.meta, "general.alignment", TD_META_UINT32, &u32, &err);
    td_meta_set_scalar(t.meta, "i64", TD_META_INT64, &i64, &err);
    td_meta_set_scalar(t.meta, "llama.attention.layer_norm_rms_epsilon", TD_META_FLOAT32, &f32,
                       &err);
    td_meta_set_scalar(t.meta, "b", TD_META_BOOL, &b, &err);
    td_meta_set_string(t.meta, "general.architecture", "llama", 5, &err);
    const char *toks[] = {"<s>", "</s>", "a"};
    td_meta_set_strings(t.meta, "tokenizer.ggml.tokens", toks, NULL, 3, &err);
    float scores[3] = {0, -1, -2.5f};
    td_meta_set_array(t.meta, "tokenizer.ggml.scores", TD_META_FLOAT32, scores, 3, &err);
    td_value *outer = td_value_new_array(TD_META_ARRAY);
    int16_t pair[2] = {1, -1};
    td_value_array_push(outer, td__value_new_array_packed(TD_META_INT16, pair, 2), &err);
    td_meta_set_value(t.meta, "nested", outer, &err);
    td__proto_region regions[2] = {{fd, off + 64, TD__PROTO_REGION_FILE}, {fd, 32, 0}};
    td__proto_msg_init(&ms[n], TD__PROTO_LOAD_OK, 2);
    ms[n].u.loaded.lease = 5;
    ms[n].u.loaded.table = &t;
    ms[n].u.loaded.regions = regions;
    ms[n++].u.loaded.nregions = 2;

    /* The same reply in the flat form (feature TABLE): the table travels as a descriptor. */
    td__proto_msg_init(&ms[n], TD__PROTO_LOAD_OK, 2);
    ms[n].u.loaded.lease = 5;
    ms[n].u.loaded.format = TD_FORMAT_GGUF;
    ms[n].u.loaded.regions = regions;
    ms[n].u.loaded.nregions = 2;
    ms[n].u.loaded.table_fd = fd;
    ms[n].u.loaded.table_size = 4096;
    ms[n].u.loaded.entry = 9;
    suffix[n++] = "_flat";

    /* The warm reply under LEAN: the file is the LOAD's own descriptor and the table is kept,
     * so only the decoded region's descriptor travels. */
    static td__proto_region lean[2];
    lean[0] = (td__proto_region){-1, off + 64, TD__PROTO_REGION_FILE | TD__PROTO_REGION_OWN};
    lean[1] = regions[1];
    td__proto_msg_init(&ms[n], TD__PROTO_LOAD_OK, 2);
    ms[n].u.loaded.lease = 5;
    ms[n].u.loaded.format = TD_FORMAT_GGUF;
    ms[n].u.loaded.regions = lean;
    ms[n].u.loaded.nregions = 2;
    ms[n].u.loaded.table_kept = true;
    ms[n].u.loaded.table_size = 4096;
    ms[n].u.loaded.entry = 9;
    suffix[n++] = "_lean";

    td__proto_msg_init(&ms[n], TD__PROTO_RELEASE, 3);
    ms[n++].u.release.lease = 5;
    td__proto_msg_init(&ms[n], TD__PROTO_RELEASE, 3);
    ms[n].u.release.lease = 5;
    ms[n].u.release.flags = TD__PROTO_RELEASE_QUIET;
    suffix[n++] = "_quiet";
    td__proto_msg_init(&ms[n], TD__PROTO_RELEASE_OK, 3);
    ms[n++].u.release.lease = 5;
    td__proto_msg_init(&ms[n], TD__PROTO_STATUS, 4);
    ms[n++].u.status_req.flags = TD__PROTO_STATUS_FILES;
    static td__proto_status_file files[1] = {
        {"model.gguf", TD_FORMAT_GGUF, 1, 4096, 1, 2, 3, 4096, 0, 3, 10, 1}};
    td__proto_msg_init(&ms[n], TD__PROTO_STATUS_OK, 4);
    ms[n].u.status.stats.entries = 1;
    ms[n].u.status.stats.hits = 9;
    ms[n].u.status.files = files;
    ms[n].u.status.nfiles = 1;
    static td__proto_status_user users[2] = {{0, 1, 4096, 1u << 30}, {1000, 2, 8192, 1u << 30}};
    ms[n].u.status.users = users;
    ms[n++].u.status.nusers = 2;
    td__proto_msg_init(&ms[n], TD__PROTO_EVICT, 5);
    ms[n++].u.evict.fd = fd;
    td__proto_msg_init(&ms[n], TD__PROTO_EVICT_OK, 5);
    ms[n].u.evicted.entries = 1;
    ms[n++].u.evicted.bytes = 4096;
    td__proto_msg_init(&ms[n], TD__PROTO_PING, 6);
    ms[n++].u.ping.data = 42;
    td__proto_msg_init(&ms[n], TD__PROTO_PONG, 6);
    ms[n++].u.ping.data = 42;
    td__proto_msg_error(&ms[n++], 7, TD_EFORMAT, NULL);

    for (size_t i = 0; i < n; i++) {
        td__proto_out o;
        if (td__proto_encode(&ms[i], NULL, &o, &err))
            die("seed", &err);
        const char *tn = td__proto_type_name(ms[i].type);
        char name[64];
        uint8_t nf = (uint8_t)o.nfds;
        const char *sx = suffix[i] ? suffix[i] : "";
        snprintf(name, sizeof name, "frame_%s%s", tn, sx);
        write_seed(dir, name, (uint8_t)(0 << 2 | nf), &o, 0);
        snprintf(name, sizeof name, "body_%s%s", tn, sx);
        write_seed(dir, name, (uint8_t)(1 << 2 | nf), &o, 1);
        snprintf(name, sizeof name, "stream_%s%s", tn, sx);
        write_seed(dir, name, (uint8_t)(2 << 2 | nf), &o, 0);
        td__proto_out_destroy(&o);
    }

    /* Two hostile seeds: the 5-byte bomb, and three frames back to back on one stream. */
    td__proto_out bomb = {0};
    uint8_t bomb_bytes[] = {5, 0, 0, 0, 0xdd, 0xff, 0xff, 0xff, 0xff};
    bomb.buf = bomb_bytes;
    bomb.len = sizeof bomb_bytes;
    write_seed(dir, "frame_bomb", 0 << 2, &bomb, 0);
    write_seed(dir, "body_bomb", 1 << 2, &bomb, 1);
    td__proto_out three = {0};
    uint8_t *buf = NULL;
    size_t len = 0;
    const uint32_t kinds[3] = {TD__PROTO_LOAD, TD__PROTO_PING, TD__PROTO_HELLO};
    for (int k = 0; k < 3; k++) {
        td__proto_out o;
        size_t at = 0;
        while (at < n && ms[at].type != kinds[k])
            at++;
        if (at == n || td__proto_encode(&ms[at], NULL, &o, &err))
            die("seed", &err);
        buf = realloc(buf, len + o.len);
        memcpy(buf + len, o.buf, o.len);
        len += o.len;
        td__proto_out_destroy(&o);
    }
    three.buf = buf;
    three.len = len;
    write_seed(dir, "stream_pipelined", 2 << 2 | 1, &three, 0);
    /* The same stream to a buffered receiver (bit 4): in one call, a byte per call received as
     * it comes, 7-byte calls all sent first; and to an exact one in 61-byte calls. */
    write_seed(dir, "stream_pipelined_buffered", 0x10 | 2 << 2 | 1, &three, 0);
    write_seed(dir, "stream_pipelined_buffered_bytes", 0x80 | 0x20 | 0x10 | 2 << 2 | 1, &three, 0);
    write_seed(dir, "stream_pipelined_buffered_7", 0x40 | 0x10 | 2 << 2 | 1, &three, 0);
    write_seed(dir, "stream_pipelined_exact_61", 0x80 | 0x60 | 2 << 2 | 1, &three, 0);
    free(buf);
    td__table_destroy(&t);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    g_null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (g_null < 0)
        die("/dev/null", NULL);
    const char *dir = getenv("TD_FUZZ_WRITE_CORPUS");
    if (dir) {
        make_corpus(dir);
        exit(0);
    }
    return 0;
}

/*
 * bench_proto.c - what the wire protocol costs.
 *
 * 1. LOAD round trip on a socketpair between two processes: the client sends LOAD with one
 *    descriptor (an open file), the server receives and decodes it, answers LOAD_OK with a
 *    300-tensor table and one region descriptor, the client receives and decodes the reply and
 *    closes what it got. Timed per round trip (median, p99, mean), for a table without
 *    metadata, with 25 typical GGUF keys, and with a 32k-token vocabulary on top.
 * 2. Encode and decode throughput of a 300-tensor LOAD_OK (no socket): tables per second.
 *
 * Usage: bench_proto [iterations]   (default 20000 round trips; throughput runs ~1 s each)
 * Output: one line per figure, "name value unit", for bench/ scripts to collect.
 *
 * Build (from a Release build directory that has libtensord.a):
 *   cc -O2 -D_GNU_SOURCE -I include -I formats -I proto bench/bench_proto.c \
 *      BUILD/libtensord.a -lmsgpackc -lz -ljansson -lm -o bench_proto
 */
#include "common.h"
#include "proto.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void fail(const char *what, const td_error *err)
{
    fprintf(stderr, "bench_proto: %s: %s\n", what, err ? err->message : strerror(errno));
    exit(1);
}

/* A llama-like table: 300 tensors over 33 blocks, q4_k weights and f32 norms, in region 0. */
static void make_table(td__table *t, int meta_kind, uint64_t *region_size)
{
    td_error err = {0};
    td__table_init(t, TD_FORMAT_GGUF);
    static const char *parts[] = {"attn_q", "attn_k",   "attn_v",    "attn_output", "ffn_gate",
                                  "ffn_up", "ffn_down", "attn_norm", "ffn_norm"};
    uint64_t off = 0;
    for (int i = 0; i < 300; i++) {
        char name[64];
        int b = i / 9, p = i % 9;
        int len = snprintf(name, sizeof name, "blk.%d.%s.weight", b, parts[p]);
        td__entry *e = td__table_add(t, name, (size_t)len, &err);
        if (!e)
            fail("table", &err);
        int norm = p >= 7;
        int64_t shape[2] = {4096, p >= 4 && p <= 6 ? 11008 : 4096};
        e->dtype = norm ? TD_FLOAT32 : TD_Q4_K;
        if (td__entry_set_shape(e, norm ? 1 : 2, norm ? shape + 1 : shape, &err) ||
            td__shape_nbytes(e->dtype, e->ndim, e->shape, &e->nbytes, &err))
            fail("shape", &err);
        e->region = 0;
        e->offset = off;
        off += (e->nbytes + 31) & ~(uint64_t)31;
    }
    *region_size = off;
    if (!meta_kind)
        return;
    t->meta = td_meta_new();
    uint32_t u = 32;
    float f = 1e-5f;
    const char *arch = "llama";
    td_meta_set_string(t->meta, "general.architecture", arch, strlen(arch), &err);
    td_meta_set_string(t->meta, "general.name", "bench-7b", 8, &err);
    td_meta_set_scalar(t->meta, "general.alignment", TD_META_UINT32, &u, &err);
    td_meta_set_scalar(t->meta, "general.file_type", TD_META_UINT32, &u, &err);
    td_meta_set_scalar(t->meta, "general.quantization_version", TD_META_UINT32, &u, &err);
    static const char *ukeys[] = {"llama.context_length",
                                  "llama.embedding_length",
                                  "llama.block_count",
                                  "llama.feed_forward_length",
                                  "llama.rope.dimension_count",
                                  "llama.attention.head_count",
                                  "llama.attention.head_count_kv",
                                  "llama.vocab_size",
                                  "tokenizer.ggml.bos_token_id",
                                  "tokenizer.ggml.eos_token_id",
                                  "tokenizer.ggml.unknown_token_id",
                                  "tokenizer.ggml.padding_token_id"};
    for (size_t i = 0; i < sizeof ukeys / sizeof ukeys[0]; i++)
        td_meta_set_scalar(t->meta, ukeys[i], TD_META_UINT32, &u, &err);
    td_meta_set_scalar(t->meta, "llama.attention.layer_norm_rms_epsilon", TD_META_FLOAT32, &f,
                       &err);
    float base = 10000.0f;
    td_meta_set_scalar(t->meta, "llama.rope.freq_base", TD_META_FLOAT32, &base, &err);
    td_meta_set_string(t->meta, "tokenizer.ggml.model", "llama", 5, &err);
    td_meta_set_string(t->meta, "tokenizer.chat_template",
                       "{% for message in messages %}{{ message['content'] }}{% endfor %}", 65,
                       &err);
    uint8_t yes = 1;
    td_meta_set_scalar(t->meta, "tokenizer.ggml.add_bos_token", TD_META_BOOL, &yes, &err);
    td_meta_set_scalar(t->meta, "tokenizer.ggml.add_eos_token", TD_META_BOOL, &yes, &err);
    td_meta_set_string(t->meta, "general.license", "apache-2.0", 10, &err);
    if (meta_kind < 2)
        return;
    size_t nv = 32000;
    char **toks = malloc(nv * sizeof *toks);
    float *scores = malloc(nv * sizeof *scores);
    int32_t *types = malloc(nv * sizeof *types);
    for (size_t i = 0; i < nv; i++) {
        toks[i] = malloc(16);
        snprintf(toks[i], 16, "\xe2\x96\x81tok%zu", i);
        scores[i] = -(float)i;
        types[i] = 1;
    }
    td_meta_set_strings(t->meta, "tokenizer.ggml.tokens", (const char *const *)toks, NULL, nv,
                        &err);
    td_meta_set_array(t->meta, "tokenizer.ggml.scores", TD_META_FLOAT32, scores, nv, &err);
    td_meta_set_array(t->meta, "tokenizer.ggml.token_type", TD_META_INT32, types, nv, &err);
    for (size_t i = 0; i < nv; i++)
        free(toks[i]);
    free(toks);
    free(scores);
    free(types);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The server: answers every LOAD with the table and one region (a memfd of the right size). */
static void serve(int sock, int meta_kind)
{
    td_error err = {0};
    td__table t;
    uint64_t size;
    make_table(&t, meta_kind, &size);
    int region = memfd_create("bench-region", MFD_CLOEXEC);
    if (region < 0 || ftruncate(region, (off_t)size))
        fail("memfd", NULL);
    td__proto_region reg = {region, size, 0};
    td__proto_limits lim = {.max_frame = 1 << 16, .max_fds = 2};
    for (uint64_t lease = 1;; lease++) {
        td__proto_msg m;
        int rc = td__proto_recv_msg(sock, &lim, &m, -1, &err);
        if (rc == TD_ECLOSED)
            break;
        if (rc)
            fail("server receive", &err);
        td__proto_msg reply;
        td__proto_msg_init(&reply, TD__PROTO_LOAD_OK, m.id);
        reply.u.loaded.lease = lease;
        reply.u.loaded.table = &t;
        reply.u.loaded.regions = &reg;
        reply.u.loaded.nregions = 1;
        if (td__proto_send_msg(sock, &reply, NULL, -1, &err))
            fail("server send", &err);
        td__proto_msg_destroy(&m); /* closes the client's file descriptor */
    }
    td__table_destroy(&t);
    close(region);
}

static void bench_roundtrip(int iters, int meta_kind, const char *label)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
        fail("socketpair", NULL);
    pid_t pid = fork();
    if (pid < 0)
        fail("fork", NULL);
    if (pid == 0) {
        close(sv[0]);
        serve(sv[1], meta_kind);
        _exit(0);
    }
    close(sv[1]);
    int file = memfd_create("bench-file", MFD_CLOEXEC);
    if (file < 0)
        fail("memfd", NULL);
    double *lat = malloc((size_t)iters * sizeof *lat);
    td_error err = {0};
    size_t frame = 0;
    int warm = iters / 10 + 10;
    for (int i = -warm; i < iters; i++) {
        double t0 = now_ns();
        td__proto_msg m;
        td__proto_msg_init(&m, TD__PROTO_LOAD, (uint32_t)(i + warm + 1));
        m.u.load.fd = file;
        m.u.load.format = TD_FORMAT_GGUF;
        m.u.load.name = "bench-7b.gguf";
        if (td__proto_send_msg(sv[0], &m, NULL, -1, &err))
            fail("client send", &err);
        td__proto_msg b;
        if (td__proto_recv_msg(sv[0], NULL, &b, -1, &err))
            fail("client receive", &err);
        if (b.type != TD__PROTO_LOAD_OK || b.u.loaded.table->n != 300 || b.u.loaded.nregions != 1)
            fail("unexpected reply", NULL);
        td__proto_msg_destroy(&b); /* closes the region descriptor */
        double t1 = now_ns();
        if (i >= 0)
            lat[i] = t1 - t0;
    }
    /* One more, outside the timing, to report the reply's size. */
    {
        td__table t;
        uint64_t size;
        make_table(&t, meta_kind, &size);
        td__proto_region reg = {file, size, 0};
        td__proto_msg m;
        td__proto_msg_init(&m, TD__PROTO_LOAD_OK, 1);
        m.u.loaded.lease = 1;
        m.u.loaded.table = &t;
        m.u.loaded.regions = &reg;
        m.u.loaded.nregions = 1;
        td__proto_out o;
        if (td__proto_encode(&m, NULL, &o, &err))
            fail("encode", &err);
        frame = o.len;
        td__proto_out_destroy(&o);
        td__table_destroy(&t);
    }
    close(sv[0]);
    waitpid(pid, NULL, 0);
    close(file);
    qsort(lat, (size_t)iters, sizeof *lat, cmp_double);
    double sum = 0;
    for (int i = 0; i < iters; i++)
        sum += lat[i];
    printf("load_roundtrip_%s_frame_bytes %zu bytes\n", label, frame);
    printf("load_roundtrip_%s_median %.1f us\n", label, lat[iters / 2] / 1e3);
    printf("load_roundtrip_%s_p99 %.1f us\n", label, lat[(size_t)iters * 99 / 100] / 1e3);
    printf("load_roundtrip_%s_mean %.1f us\n", label, sum / iters / 1e3);
    free(lat);
}

static void bench_codec(int meta_kind, const char *label)
{
    td_error err = {0};
    td__table t;
    uint64_t size;
    make_table(&t, meta_kind, &size);
    int fd = memfd_create("bench-region", MFD_CLOEXEC);
    td__proto_region reg = {fd, size, 0};
    td__proto_msg m;
    td__proto_msg_init(&m, TD__PROTO_LOAD_OK, 1);
    m.u.loaded.lease = 1;
    m.u.loaded.table = &t;
    m.u.loaded.regions = &reg;
    m.u.loaded.nregions = 1;

    td__proto_out o;
    long n = 0;
    double t0 = now_ns(), t1;
    do {
        if (td__proto_encode(&m, NULL, &o, &err))
            fail("encode", &err);
        td__proto_out_destroy(&o);
        n++;
        t1 = now_ns();
    } while (t1 - t0 < 1e9);
    double enc = (double)n / ((t1 - t0) / 1e9);

    if (td__proto_encode(&m, NULL, &o, &err))
        fail("encode", &err);
    /* Decoding takes ownership of the descriptor each time: pass a fresh duplicate. The
     * duplicate and its close are part of the figure (as they are for a real receiver). */
    n = 0;
    t0 = now_ns();
    do {
        int fds[1] = {dup(fd)};
        unsigned nf = 1;
        td__proto_msg b;
        if (td__proto_parse(o.buf, o.len, fds, &nf, NULL, &b, &err))
            fail("decode", &err);
        td__proto_msg_destroy(&b);
        n++;
        t1 = now_ns();
    } while (t1 - t0 < 1e9);
    double dec = (double)n / ((t1 - t0) / 1e9);
    printf("encode_300_%s %.0f tables/s (%.1f MB/s)\n", label, enc, enc * (double)o.len / 1e6);
    printf("decode_300_%s %.0f tables/s (%.1f MB/s)\n", label, dec, dec * (double)o.len / 1e6);
    td__proto_out_destroy(&o);
    td__table_destroy(&t);
    close(fd);
}

int main(int argc, char **argv)
{
    int iters = argc > 1 ? atoi(argv[1]) : 20000;
    if (iters < 10)
        iters = 10;
    signal(SIGPIPE, SIG_IGN);
    bench_roundtrip(iters, 0, "nometa");
    bench_roundtrip(iters, 1, "meta25");
    bench_roundtrip(iters / 20 + 10, 2, "vocab32k");
    bench_codec(0, "nometa");
    bench_codec(1, "meta25");
    bench_codec(2, "vocab32k");
    return 0;
}

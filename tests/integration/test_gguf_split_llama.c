/*
 * test_gguf_split_llama.c - GGUF split sets written by llama.cpp itself, loaded by us embedded
 * and through a real tensord on a temporary socket, and what we write read back by llama.cpp.
 *
 * The sets are made at test time (nothing binary in the tree) with the GGUF API of llama.cpp's
 * libggml-base.so (the oracle, tu_oracle; the test exits 77 without it): gguf_init_empty,
 * gguf_set_val_*, gguf_add_tensor, gguf_write_to_file, in the layout llama.cpp's gguf-split
 * gives (tools/gguf-split): files PREFIX-%05d-of-%05d.gguf; in every split split.no (uint16,
 * 0-based), split.count (uint16) and split.tensors.count (int32, the total), set in gguf-split's
 * order (split.count a placeholder first, its value once the number of splits is known); the
 * model's metadata in the first split only; tensors assigned greedily by their size padded to
 * 32, data aligned to 32.
 *
 * Checked:
 *   - td_load of split 0, embedded and through the daemon: every tensor of every split in order,
 *     with its dtype, shape and bytes as written; the model's metadata without the split.* keys;
 *     a later split refused naming the first; a missing split refused naming it;
 *   - hostile sets made by editing llama.cpp's files in place (split.no out of range, split.count
 *     that disagrees, split.tensors.count wrong, a key renamed away, a tensor renamed to the name
 *     of one in another split): refused in both modes, naming the file;
 *   - tensorctl ls, verify and convert of split 0: one file that llama.cpp reads whole without
 *     split keys, and with --shard-size a new split set whose every split llama.cpp reads with
 *     the right split.no, split.count and split.tensors.count, the metadata in the first.
 */
#include "oracle_gguf.h"
#include "testutil.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ggml type ids and GGUF value type ids (ggml.h, gguf.h). */
enum { G_F32 = 0, G_F16 = 1, G_Q4_0 = 2, G_Q8_0 = 8 };
enum { GV_UINT16 = 2, GV_INT32 = 5 };

#define NT        10   /* tensors */
#define NMETA     8    /* model metadata keys, in the first split */
#define SPLIT_MAX 2000 /* bytes a split, as gguf-split --split-max-size counts: 3 splits */

typedef struct tensor_spec {
    const char *name;
    int type;
    int ndim;
    int64_t ne[2]; /* innermost first, as ggml counts */
    td_dtype dtype;
} tensor_spec;

/* Sizes padded to 32: 1632 160 128 560 192 | 160 128 560 192 | 1152 bytes. With SPLIT_MAX the
 * splits are {0, 1, 2}, {3 .. 8}, {9}. */
static const tensor_spec model[NT] = {
    {"token_embd.weight", G_Q8_0, 2, {64, 24}, TD_Q8_0},
    {"blk.0.attn_norm.weight", G_F32, 1, {33, 1}, TD_FLOAT32},
    {"blk.0.attn_q.weight", G_Q4_0, 2, {64, 3}, TD_Q4_0},
    {"blk.0.ffn_down.weight", G_F16, 2, {40, 7}, TD_FLOAT16},
    {"blk.0.ffn_up.weight", G_Q8_0, 2, {32, 5}, TD_Q8_0},
    {"blk.1.attn_norm.weight", G_F32, 1, {33, 1}, TD_FLOAT32},
    {"blk.1.attn_q.weight", G_Q4_0, 2, {64, 3}, TD_Q4_0},
    {"blk.1.ffn_down.weight", G_F16, 2, {40, 7}, TD_FLOAT16},
    {"blk.1.ffn_up.weight", G_Q8_0, 2, {32, 5}, TD_Q8_0},
    {"output.weight", G_F16, 2, {64, 9}, TD_FLOAT16},
};

static const tu_gguf_api *G;
static uint8_t *expect[NT]; /* the bytes each tensor was given */
static size_t expect_n[NT];
static char dir[64], sock[128], logp[128];
static pid_t daemon_pid;

/* ---------------------------------------------------------------------------------------------
 * Writing a split set with llama.cpp
 */

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* The model's metadata, as a converter puts it in the first split. */
static void set_model_meta(void *g)
{
    G->set_val_str(g, "general.architecture", "llama");
    G->set_val_str(g, "general.name", "split test \xe2\x98\x85");
    G->set_val_u32(g, "general.file_type", 7);
    G->set_val_u32(g, "llama.block_count", 2);
    G->set_val_u32(g, "llama.context_length", 128);
    G->set_val_f32(g, "llama.rope.freq_base", 10000.0f);
    const char *toks[3] = {"<s>", "</s>",
                           "\xe2\x96\x81"
                           "a"};
    G->set_arr_str(g, "tokenizer.ggml.tokens", toks, 3);
    float scores[3] = {0.0f, 0.0f, -1.5f};
    G->set_arr_data(g, "tokenizer.ggml.scores", 6 /* GGUF_TYPE_FLOAT32 */, scores, 3);
}

/* Writes the model as a split set DIR/PREFIX-0000i-of-0000N.gguf the way gguf-split does, with
 * at most max_bytes of padded tensor data a split (a tensor larger than that gets a split of its
 * own). Records each tensor's bytes in expect[]. Returns N. */
static int write_llama_splits(const char *where, const char *prefix, uint64_t max_bytes)
{
    size_t mem = 4096;
    for (int i = 0; i < NT; i++)
        mem += G->ggml_tensor_overhead() + 4096;
    tu_ggml_init_params gp = {mem, NULL, false};
    void *gctx = G->ggml_init(gp);
    ck_assert_ptr_nonnull(gctx);

    void *splits[NT];
    int n = 0;
    uint64_t cur = 0;
    for (int i = 0; i < NT; i++) {
        void *t = G->ggml_new_tensor(gctx, model[i].type, model[i].ndim, model[i].ne);
        ck_assert_ptr_nonnull(t);
        G->ggml_set_name(t, model[i].name);
        size_t nb = G->ggml_nbytes(t);
        uint8_t *p = G->ggml_get_data(t);
        uint64_t s = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1);
        for (size_t k = 0; k < nb; k++)
            p[k] = (uint8_t)(xorshift(&s) >> 32);
        free(expect[i]);
        expect[i] = malloc(nb);
        ck_assert_ptr_nonnull(expect[i]);
        memcpy(expect[i], p, nb);
        expect_n[i] = nb;

        uint64_t padded = (nb + 31) / 32 * 32;
        if (n == 0 || (cur > 0 && cur + padded > max_bytes)) {
            void *g = G->init_empty();
            if (n == 0)
                set_model_meta(g);
            G->set_val_u16(g, "split.no", (uint16_t)n);
            G->set_val_u16(g, "split.count", 0); /* a placeholder, as gguf-split has it */
            G->set_val_i32(g, "split.tensors.count", NT);
            splits[n++] = g;
            cur = 0;
        }
        cur += padded;
        G->add_tensor(splits[n - 1], t);
    }
    for (int k = 0; k < n; k++)
        G->set_val_u16(splits[k], "split.count", (uint16_t)n);
    for (int k = 0; k < n; k++) {
        char path[256];
        snprintf(path, sizeof path, "%s/%s-%05d-of-%05d.gguf", where, prefix, k + 1, n);
        ck_assert_msg(G->write_to_file(splits[k], path, false), "llama.cpp cannot write %s", path);
        G->free_ctx(splits[k]);
    }
    G->ggml_free(gctx);
    return n;
}

/* ---------------------------------------------------------------------------------------------
 * Editing llama.cpp's files in place
 */

/* The offset of the only occurrence of a GGUF string s (u64 length, bytes) in p[0..len). */
static size_t find_gguf_str(const uint8_t *p, size_t len, const char *s, const char *path)
{
    size_t sl = strlen(s), at = SIZE_MAX, hits = 0;
    uint8_t pat[128];
    ck_assert(sl + 8 <= sizeof pat);
    for (int k = 0; k < 8; k++)
        pat[k] = (uint8_t)((uint64_t)sl >> (8 * k));
    memcpy(pat + 8, s, sl);
    for (size_t i = 0; i + sl + 8 <= len; i++)
        if (memcmp(p + i, pat, sl + 8) == 0)
            at = i, hits++;
    ck_assert_msg(hits == 1, "%s: '%s' found %zu times", path, s, hits);
    return at;
}

/* Sets the value of key (of GGUF type vtype, 2 or 4 bytes) in the file at path. */
static void patch_kv(const char *path, const char *key, uint32_t vtype, int64_t value)
{
    size_t len;
    uint8_t *p = tu_read_file(path, &len);
    ck_assert_ptr_nonnull(p);
    size_t at = find_gguf_str(p, len, key, path) + 8 + strlen(key);
    uint32_t t = (uint32_t)p[at] | (uint32_t)p[at + 1] << 8 | (uint32_t)p[at + 2] << 16 |
                 (uint32_t)p[at + 3] << 24;
    ck_assert_msg(t == vtype, "%s: %s has type %u, not %u", path, key, t, vtype);
    size_t w = vtype == GV_UINT16 ? 2 : 4;
    for (size_t k = 0; k < w; k++)
        p[at + 4 + k] = (uint8_t)((uint64_t)value >> (8 * k));
    ck_assert_int_eq(tu_write_file(path, p, len), 0);
    free(p);
}

/* Renames a key or a tensor (from and to of the same length) in the file at path. */
static void patch_name(const char *path, const char *from, const char *to)
{
    ck_assert_uint_eq(strlen(from), strlen(to));
    size_t len;
    uint8_t *p = tu_read_file(path, &len);
    ck_assert_ptr_nonnull(p);
    memcpy(p + find_gguf_str(p, len, from, path) + 8, to, strlen(to));
    ck_assert_int_eq(tu_write_file(path, p, len), 0);
    free(p);
}

/* ---------------------------------------------------------------------------------------------
 * Loading and comparing
 */

static void setup(void)
{
    tu_tmpdir(dir);
    snprintf(sock, sizeof sock, "%s/s", dir);
    snprintf(logp, sizeof logp, "%s/log", dir);
    daemon_pid = tu_daemon_start(sock, logp, NULL);
    ck_assert_int_eq(write_llama_splits(dir, "m", SPLIT_MAX), 3);
}

static void teardown(void)
{
    ck_assert_int_eq(tu_daemon_stop(daemon_pid, SIGTERM), 0);
    tu_rmtree(dir);
}

static const char *mode_name(td_load_mode mode)
{
    return mode == TD_MODE_DAEMON ? "daemon" : "embedded";
}

static int load(const char *rel, td_load_mode mode, td_dict **d, td_meta **m, td_error *err)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    td_load_options o = TD_LOAD_OPTIONS_INIT;
    o.mode = mode;
    o.socket_path = sock;
    return td_load(path, &o, d, m, err);
}

/* d holds the model as written: every tensor, in order, with its dtype, shape and bytes. */
static void check_model(const td_dict *d, const char *what)
{
    ck_assert_msg(td_dict_size(d) == NT, "%s: %zu tensors", what, td_dict_size(d));
    for (int i = 0; i < NT; i++) {
        const char *name;
        const td_array *a = td_dict_at(d, (size_t)i, &name);
        ck_assert_msg(strcmp(name, model[i].name) == 0, "%s: tensor %d is %s, not %s", what, i,
                      name, model[i].name);
        ck_assert_msg(td_array_dtype(a) == model[i].dtype, "%s: %s is %s", what, name,
                      td_dtype_name(td_array_dtype(a)));
        int nd = model[i].ndim;
        ck_assert_int_eq(td_array_ndim(a), nd);
        for (int k = 0; k < nd; k++)
            ck_assert_int_eq(td_array_shape(a)[k], model[i].ne[nd - 1 - k]);
        ck_assert_uint_eq(td_array_nbytes(a), expect_n[i]);
        ck_assert_msg(memcmp(td_array_data(a), expect[i], expect_n[i]) == 0,
                      "%s: the bytes of %s differ", what, name);
    }
}

/* m is the first split's metadata without the split.* keys. */
static void check_meta(const td_meta *m, const char *what)
{
    ck_assert_msg(td_meta_size(m) == NMETA, "%s: %zu metadata keys", what, td_meta_size(m));
    for (size_t i = 0; i < td_meta_size(m); i++) {
        const char *key;
        td_meta_at(m, i, &key);
        ck_assert_msg(strncmp(key, "split.", 6) != 0, "%s: metadata has %s", what, key);
    }
    const char *s;
    size_t len;
    ck_assert_int_eq(td_meta_get_string(m, "general.architecture", &s, &len), 0);
    ck_assert(len == 5 && memcmp(s, "llama", 5) == 0);
    uint64_t u;
    ck_assert_int_eq(td_value_get_uint(td_meta_get(m, "llama.block_count"), &u), 0);
    ck_assert_uint_eq(u, 2);
    ck_assert_uint_eq(td_value_array_len(td_meta_get(m, "tokenizer.ggml.tokens")), 3);
}

/* Loads rel in mode and expects code, with every string of want (NULL-terminated) in the
 * message. */
static void expect_refusal(const char *rel, td_load_mode mode, int code, const char *const *want)
{
    td_dict *d = NULL;
    td_error err = {0};
    int rc = load(rel, mode, &d, NULL, &err);
    ck_assert_msg(rc == code, "%s (%s): %d (%s), want %s: %s", rel, mode_name(mode), rc,
                  td_err_name(rc), td_err_name(code), err.message);
    for (size_t i = 0; want[i]; i++)
        ck_assert_msg(strstr(err.message, want[i]), "%s (%s): '%s' not in: %s", rel,
                      mode_name(mode), want[i], err.message);
}

/* ---------------------------------------------------------------------------------------------
 * Tests
 */

START_TEST(test_load_whole_set)
{
    static const td_load_mode modes[2] = {TD_MODE_EMBEDDED, TD_MODE_DAEMON};
    for (int k = 0; k < 2; k++) {
        td_dict *d = NULL;
        td_meta *m = NULL;
        td_error err = {0};
        TU_OK(load("m-00001-of-00003.gguf", modes[k], &d, &m, &err), &err);
        check_model(d, mode_name(modes[k]));
        check_meta(m, mode_name(modes[k]));
        for (size_t i = 0; i < td_dict_size(d); i++)
            ck_assert_int_eq(td_array_provenance(td_dict_at(d, i, NULL)),
                             modes[k] == TD_MODE_DAEMON ? TD_PROVENANCE_DAEMON
                                                        : TD_PROVENANCE_EMBEDDED);
        if (modes[k] == TD_MODE_DAEMON) { /* one cache entry and one lease per split */
            td_status *st = tu_daemon_status(sock);
            ck_assert_uint_eq(td_status_get(st, TD_STATUS_ENTRIES), 3);
            ck_assert_uint_eq(td_status_get(st, TD_STATUS_LEASES), 3);
            td_status_free(st);
        }
        td_dict_free(d);
        td_meta_free(m);
    }
}
END_TEST

START_TEST(test_later_and_missing_split)
{
    static const td_load_mode modes[2] = {TD_MODE_EMBEDDED, TD_MODE_DAEMON};
    static const char *const first[] = {"m-00002-of-00003.gguf", "m-00001-of-00003.gguf", NULL};
    static const char *const first3[] = {"m-00003-of-00003.gguf", "m-00001-of-00003.gguf", NULL};
    for (int k = 0; k < 2; k++) {
        expect_refusal("m-00002-of-00003.gguf", modes[k], TD_EINVAL, first);
        expect_refusal("m-00003-of-00003.gguf", modes[k], TD_EINVAL, first3);
    }
    char path[256];
    snprintf(path, sizeof path, "%s/m-00002-of-00003.gguf", dir);
    ck_assert_int_eq(unlink(path), 0);
    static const char *const missing[] = {"m-00002-of-00003.gguf", NULL};
    for (int k = 0; k < 2; k++)
        expect_refusal("m-00001-of-00003.gguf", modes[k], TD_ENOENT, missing);
    /* nothing reached the daemon's cache */
    td_status *st = tu_daemon_status(sock);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_LEASES), 0);
    td_status_free(st);
}
END_TEST

/* One edit of a fresh llama.cpp-written set in a directory of its own, and what loading its
 * first split must say. */
typedef struct hostile {
    const char *what;
    int split;           /* 1-based file to edit */
    const char *key;     /* a key whose value is set, or NULL */
    uint32_t vtype;      /* its GGUF type */
    int64_t value;       /* the value */
    const char *from;    /* or a key or tensor renamed from ... */
    const char *to;      /* ... to this */
    int code;            /* the refusal */
    const char *want[4]; /* strings of the message, NULL-terminated */
} hostile;

/* The two kinds of edit: a key's value, or a key or tensor renamed. */
#define SET(split, key, vtype, value) split, key, vtype, value, NULL, NULL
#define RENAME(split, from, to)       split, NULL, 0, 0, from, to

static const hostile hostiles[] = {
    {"split.no of split 2 out of range",
     SET(2, "split.no", GV_UINT16, 7),
     TD_EFORMAT,
     {"m-00002-of-00003.gguf", "split.no is 7"}},
    {"split.no of split 2 says 3",
     SET(2, "split.no", GV_UINT16, 2),
     TD_EFORMAT,
     {"m-00002-of-00003.gguf", "split.no is 2"}},
    {"split.no of the first split out of range",
     SET(1, "split.no", GV_UINT16, 3),
     TD_EFORMAT,
     {"m-00001-of-00003.gguf", "split 4 of 3"}},
    {"split.count of split 3 is 4",
     SET(3, "split.count", GV_UINT16, 4),
     TD_EFORMAT,
     {"m-00003-of-00003.gguf", "split.count is 4"}},
    {"split.count of split 2 is 1",
     SET(2, "split.count", GV_UINT16, 1),
     TD_EFORMAT,
     {"m-00002-of-00003.gguf", "split.count is 1"}},
    {"split.count of the first split is 2",
     SET(1, "split.count", GV_UINT16, 2),
     TD_EFORMAT,
     {"m-00001-of-00003.gguf", "-00001-of-00002.gguf"}},
    {"split.tensors.count one too many",
     SET(1, "split.tensors.count", GV_INT32, NT + 1),
     TD_EFORMAT,
     {"m-00001-of-00003.gguf", "split.tensors.count is 11", "hold 10 tensors"}},
    {"split.tensors.count one too few",
     SET(1, "split.tensors.count", GV_INT32, NT - 1),
     TD_EFORMAT,
     {"m-00001-of-00003.gguf", "split.tensors.count is 9", "hold 10 tensors"}},
    {"split.tensors.count negative",
     SET(1, "split.tensors.count", GV_INT32, -1),
     TD_EFORMAT,
     {"m-00001-of-00003.gguf", "split.tensors.count is negative"}},
    {"split 3 without split.no",
     RENAME(3, "split.no", "split.nx"),
     TD_EFORMAT,
     {"m-00003-of-00003.gguf", "split.no is missing"}},
    {"a tensor of split 1 again in split 2",
     RENAME(2, "blk.1.attn_q.weight", "blk.0.attn_q.weight"),
     TD_EDUP,
     {"tensor 'blk.0.attn_q.weight' is in two splits", "m-00001-of-00003.gguf and "
                                                       "m-00002-of-00003.gguf"}},
};

START_TEST(test_hostile_sets)
{
    const hostile *h = &hostiles[_i];
    char sub[128], rel[160], path[256];
    snprintf(sub, sizeof sub, "%s/h", dir);
    ck_assert_int_eq(mkdir(sub, 0700), 0);
    ck_assert_int_eq(write_llama_splits(sub, "m", SPLIT_MAX), 3);
    snprintf(path, sizeof path, "%s/m-%05d-of-00003.gguf", sub, h->split);
    if (h->key)
        patch_kv(path, h->key, h->vtype, h->value);
    else
        patch_name(path, h->from, h->to);
    /* llama.cpp itself still reads the edited file */
    tu_gguf_init_params ip = {true, NULL};
    void *g = G->init_from_file(path, ip);
    ck_assert_msg(g != NULL, "%s: llama.cpp refuses the edited %s", h->what, path);
    G->free_ctx(g);
    snprintf(rel, sizeof rel, "h/m-00001-of-00003.gguf");
    expect_refusal(rel, TD_MODE_EMBEDDED, h->code, h->want);
    expect_refusal(rel, TD_MODE_DAEMON, h->code, h->want);
    td_status *st = tu_daemon_status(sock);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_LEASES), 0);
    td_status_free(st);
}
END_TEST

/* What llama.cpp reads from path: the split keys (-1 when absent) and, with seen, every tensor
 * compared with the model (type, ne, bytes) and marked in seen. Returns the number of tensors. */
static int64_t oracle_read(const char *path, int64_t *no, int64_t *count, int64_t *total,
                           int *has_meta, int *seen)
{
    void *gctx = NULL;
    tu_gguf_init_params ip = {false, &gctx};
    void *g = G->init_from_file(path, ip);
    ck_assert_msg(g != NULL, "llama.cpp refuses %s", path);
    ck_assert_uint_eq(G->get_alignment(g), 32);
    int64_t *outs[3] = {no, count, total};
    static const char *const keys[3] = {"split.no", "split.count", "split.tensors.count"};
    static const int types[3] = {GV_UINT16, GV_UINT16, GV_INT32};
    for (int k = 0; k < 3; k++) {
        int64_t id = G->find_key(g, keys[k]);
        *outs[k] = -1;
        if (id < 0)
            continue;
        ck_assert_msg(G->get_kv_type(g, id) == types[k], "%s: %s has type %d", path, keys[k],
                      G->get_kv_type(g, id));
        *outs[k] = types[k] == GV_UINT16 ? G->get_val_u16(g, id) : G->get_val_i32(g, id);
    }
    *has_meta = G->find_key(g, "general.architecture") >= 0;
    int64_t n = G->get_n_tensors(g);
    for (int64_t i = 0; i < n; i++) {
        const char *name = G->get_tensor_name(g, i);
        int j = 0;
        while (j < NT && strcmp(model[j].name, name) != 0)
            j++;
        ck_assert_msg(j < NT, "%s: tensor %s is not the model's", path, name);
        ck_assert_msg(!seen[j], "%s: tensor %s seen twice", path, name);
        seen[j] = 1;
        ck_assert_int_eq(G->get_tensor_type(g, i), model[j].type);
        const int64_t *ne = G->get_tensor_ne(g, i);
        ck_assert(ne[0] == model[j].ne[0] && ne[1] == model[j].ne[1] && ne[2] == 1 && ne[3] == 1);
        const void *t = G->ggml_get_tensor(gctx, name);
        ck_assert_ptr_nonnull(t);
        ck_assert_uint_eq(G->ggml_nbytes(t), expect_n[j]);
        ck_assert_msg(memcmp(G->ggml_get_data(t), expect[j], expect_n[j]) == 0,
                      "%s: the bytes of %s differ", path, name);
    }
    G->ggml_free(gctx);
    G->free_ctx(g);
    return n;
}

START_TEST(test_tensorctl)
{
    char args[512], out[16384], path[256];
    /* ls: every tensor, each with its split */
    snprintf(args, sizeof args, "ls '%s/m-00001-of-00003.gguf'", dir);
    ck_assert_msg(tu_tensorctl(args, out, sizeof out) == 0, "%s", out);
    for (int i = 0; i < NT; i++) {
        const char *line = strstr(out, model[i].name);
        ck_assert_msg(line, "%s not listed:\n%s", model[i].name, out);
        const char *eol = strchr(line, '\n');
        char want[32];
        snprintf(want, sizeof want, "m-%05d-of-00003.gguf", i < 3 ? 1 : i < 9 ? 2 : 3);
        const char *f = strstr(line, want);
        ck_assert_msg(f && (!eol || f < eol), "%s not shown in %s's line:\n%s", want, model[i].name,
                      out);
    }
    snprintf(args, sizeof args, "verify '%s/m-00001-of-00003.gguf'", dir);
    ck_assert_msg(tu_tensorctl(args, out, sizeof out) == 0, "%s", out);
    snprintf(args, sizeof args, "ls '%s/m-00002-of-00003.gguf'", dir);
    ck_assert_msg(tu_tensorctl(args, out, sizeof out) == 1, "%s", out);
    ck_assert_msg(strstr(out, "m-00001-of-00003.gguf"), "%s", out);

    /* convert to one file: the whole model, no split keys, which llama.cpp reads as one */
    snprintf(args, sizeof args, "convert '%s/m-00001-of-00003.gguf' '%s/one.gguf'", dir, dir);
    ck_assert_msg(tu_tensorctl(args, out, sizeof out) == 0, "%s", out);
    td_dict *d = NULL;
    td_meta *m = NULL;
    td_error err = {0};
    TU_OK(load("one.gguf", TD_MODE_EMBEDDED, &d, &m, &err), &err);
    check_model(d, "one.gguf");
    check_meta(m, "one.gguf");
    td_dict_free(d);
    td_meta_free(m);
    int seen[NT] = {0}, has_meta;
    int64_t no, count, total;
    snprintf(path, sizeof path, "%s/one.gguf", dir);
    ck_assert_int_eq(oracle_read(path, &no, &count, &total, &has_meta, seen), NT);
    ck_assert(no == -1 && count == -1 && total == -1 && has_meta);

    /* convert --shard-size: a new split set in gguf-split's layout, every split's header right */
    snprintf(args, sizeof args, "convert --shard-size 1000 '%s/m-00001-of-00003.gguf' '%s/re.gguf'",
             dir, dir);
    ck_assert_msg(tu_tensorctl(args, out, sizeof out) == 0, "%s", out);
    int n = 0;
    for (int k = 2; k < 100 && !n; k++) {
        snprintf(path, sizeof path, "%s/re-00001-of-%05d.gguf", dir, k);
        if (access(path, F_OK) == 0)
            n = k;
    }
    ck_assert_msg(n >= 4, "no split set re-00001-of-0000N.gguf (N >= 4) was written");
    memset(seen, 0, sizeof seen);
    int64_t sum = 0;
    for (int k = 0; k < n; k++) {
        snprintf(path, sizeof path, "%s/re-%05d-of-%05d.gguf", dir, k + 1, n);
        sum += oracle_read(path, &no, &count, &total, &has_meta, seen);
        ck_assert_msg(no == k && count == n && total == NT,
                      "%s: split.no %lld, split.count %lld, split.tensors.count %lld", path,
                      (long long)no, (long long)count, (long long)total);
        ck_assert_msg(has_meta == (k == 0), "%s: the model's metadata %s", path,
                      has_meta ? "in a later split" : "missing");
    }
    ck_assert_int_eq(sum, NT);
    for (int i = 0; i < NT; i++)
        ck_assert_msg(seen[i], "%s is in no split", model[i].name);
    /* and it loads back, through the daemon */
    char rel[64];
    snprintf(rel, sizeof rel, "re-00001-of-%05d.gguf", n);
    TU_OK(load(rel, TD_MODE_DAEMON, &d, &m, &err), &err);
    check_model(d, rel);
    check_meta(m, rel);
    td_dict_free(d);
    td_meta_free(m);
}
END_TEST

int main(void)
{
    G = tu_gguf_oracle();
    Suite *s = suite_create("gguf_split_llama");
    TCase *tc = tcase_create("gguf_split_llama");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_load_whole_set);
    tcase_add_test(tc, test_later_and_missing_split);
    tcase_add_loop_test(tc, test_hostile_sets, 0, (int)(sizeof hostiles / sizeof hostiles[0]));
    tcase_add_test(tc, test_tensorctl);
    suite_add_tcase(s, tc);
    int rc = tu_run(s);
    for (int i = 0; i < NT; i++)
        free(expect[i]);
    return rc;
}

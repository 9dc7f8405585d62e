/*
 * consumer.c - a program built against the installed libtensord-dev alone, the way a user would:
 *
 *     cc consumer.c $(pkg-config --cflags --libs tensord) && ./a.out DIR
 *
 * scripts/check-packages.sh builds and runs it after installing the Debian packages. In DIR it
 * saves a small model in every format (npy, npz stored, npz deflated, safetensors with metadata,
 * gguf with metadata and a q4_0 tensor), loads each file back, and checks every name, dtype,
 * shape and byte, and every metadata value. It prints one line per format saying how the load
 * went (a view of its own mapping, or of a buffer tensord shares) and exits 0 when everything
 * matched, 1 at the first difference (saying which).
 */
#include <tensord.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "consumer: " __VA_ARGS__);                                             \
            fputc('\n', stderr);                                                                   \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)
#define OK(call, err)                                                                              \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        CHECK(rc_ == 0, "%s: %s (%s)", #call, (err)->message, td_err_name(rc_));                   \
    } while (0)

/* The arrays saved: name, dtype, shape, bytes. */
typedef struct {
    const char *name;
    td_dtype dtype;
    int ndim;
    int64_t shape[2];
    const void *data;
    size_t nbytes;
} spec;

static float emb[4][8];
static uint16_t norm[8]; /* float16 bits */
static int64_t counts[3] = {-1, 0, 1LL << 40};
static uint8_t q4[2][18]; /* two q4_0 blocks of 32: a float16 scale and 16 bytes of nibbles */

static const spec arrays[] = {
    {"tok_embeddings.weight", TD_FLOAT32, 2, {4, 8}, emb, sizeof emb},
    {"norm.weight", TD_FLOAT16, 1, {8}, norm, sizeof norm},
    {"layers.0.counts", TD_INT64, 1, {3}, counts, sizeof counts},
};
static const spec block = {"blk.0.attn_q.weight", TD_Q4_0, 2, {2, 32}, q4, sizeof q4};

static td_array *make(const spec *s)
{
    td_error err;
    td_array *a;
    OK(td_array_new(s->dtype, s->ndim, s->shape, s->data, &a, &err), &err);
    return a;
}

/* Checks that a holds exactly what s describes. */
static void check_array(const char *file, const spec *s, const td_array *a)
{
    CHECK(a != NULL, "%s: no array %s", file, s->name);
    CHECK(td_array_dtype(a) == s->dtype, "%s: %s is %s, not %s", file, s->name,
          td_dtype_name(td_array_dtype(a)), td_dtype_name(s->dtype));
    CHECK(td_array_ndim(a) == s->ndim, "%s: %s has %d dimensions, not %d", file, s->name,
          td_array_ndim(a), s->ndim);
    for (int i = 0; i < s->ndim; i++)
        CHECK(td_array_shape(a)[i] == s->shape[i], "%s: %s: dimension %d is %lld, not %lld", file,
              s->name, i, (long long)td_array_shape(a)[i], (long long)s->shape[i]);
    CHECK(td_array_nbytes(a) == s->nbytes, "%s: %s has %llu bytes, not %zu", file, s->name,
          (unsigned long long)td_array_nbytes(a), s->nbytes);
    CHECK(memcmp(td_array_data(a), s->data, s->nbytes) == 0, "%s: %s: the bytes differ", file,
          s->name);
}

static const char *provenance(const td_array *a)
{
    return td_array_provenance(a) == TD_PROVENANCE_DAEMON ? "through tensord"
                                                          : "embedded (own mapping)";
}

/* Loads path, checks the n arrays of want (and nothing else); returns the metadata (or NULL
 * when with_meta is 0) and prints how the load went. */
static td_meta *load_and_check(const char *path, const spec *const *want, size_t n, int with_meta,
                               const char *what)
{
    td_load_options opt = TD_LOAD_OPTIONS_INIT;
    td_dict *d;
    td_meta *m = NULL;
    td_error err;
    OK(td_load(path, &opt, &d, with_meta ? &m : NULL, &err), &err);
    CHECK(td_dict_size(d) == n, "%s: %zu arrays, not %zu", path, td_dict_size(d), n);
    for (size_t i = 0; i < n; i++) {
        const char *name;
        const td_array *a = td_dict_at(d, i, &name);
        CHECK(name && strcmp(name, want[i]->name) == 0, "%s: entry %zu is %s, not %s", path, i,
              name ? name : "(unnamed)", want[i]->name);
        check_array(path, want[i], a);
    }
    printf("consumer: %-26s %zu arrays, every byte matches, %s\n", what, n,
           provenance(td_dict_at(d, 0, NULL)));
    td_dict_free(d);
    return m;
}

static void check_string(const char *file, const td_meta *m, const char *key, const char *want)
{
    const char *s;
    size_t len;
    int rc = td_meta_get_string(m, key, &s, &len);
    CHECK(rc == 0, "%s: metadata %s: %s", file, key, td_err_name(rc));
    CHECK(len == strlen(want) && memcmp(s, want, len) == 0, "%s: metadata %s is \"%.*s\", not %s",
          file, key, (int)len, s, want);
}

int main(int argc, char **argv)
{
    CHECK(argc == 2, "usage: consumer DIR");
    CHECK(td_version() == TD_VERSION_HEX, "the library is %s, the header %d.%d.%d",
          td_version_string(), TD_VERSION_MAJOR, TD_VERSION_MINOR, TD_VERSION_PATCH);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 8; j++)
            emb[i][j] = (float)(i * 8 + j) * 0.5f - 3.0f;
    for (int i = 0; i < 8; i++)
        norm[i] = (uint16_t)(0x3c00 + i * 0x100); /* 1.0, 1.25, ... in float16 */
    for (int b = 0; b < 2; b++) {
        q4[b][0] = 0x00;
        q4[b][1] = (uint8_t)(0x2c + b); /* scale 0.0625, 0.0664 */
        for (int k = 0; k < 16; k++)
            q4[b][2 + k] = (uint8_t)(k * 17 + b);
    }
    char path[4096];
    td_error err;
    const spec *all[] = {&arrays[0], &arrays[1], &arrays[2], &block};

    /* npy: one array. */
    td_array *a = make(&arrays[0]);
    snprintf(path, sizeof path, "%s/model.npy", argv[1]);
    OK(td_save(path, a, &err), &err);
    td_array *back;
    td_load_options opt = TD_LOAD_OPTIONS_INIT;
    OK(td_load_array(path, &opt, &back, &err), &err);
    check_array(path, &arrays[0], back);
    printf("consumer: %-26s 1 array, every byte matches, %s\n", "npy", provenance(back));
    td_array_release(back);
    td_array_release(a);

    /* npz, stored and deflated: the plain arrays. */
    td_dict *d = td_dict_new();
    for (size_t i = 0; i < 3; i++) {
        a = make(&arrays[i]);
        OK(td_dict_set(d, arrays[i].name, a, &err), &err);
        td_array_release(a);
    }
    snprintf(path, sizeof path, "%s/model.npz", argv[1]);
    OK(td_savez(path, d, &err), &err);
    load_and_check(path, all, 3, 0, "npz (stored)");
    snprintf(path, sizeof path, "%s/model-deflated.npz", argv[1]);
    OK(td_savez_compressed(path, d, &err), &err);
    load_and_check(path, all, 3, 0, "npz (deflated)");

    /* safetensors: string metadata. */
    td_meta *m = td_meta_new();
    OK(td_meta_set_string(m, "format", "pt", 2, &err), &err);
    OK(td_meta_set_string(m, "source", "check-packages", 14, &err), &err);
    snprintf(path, sizeof path, "%s/model.safetensors", argv[1]);
    OK(td_save_safetensors(path, d, m, &err), &err);
    td_meta_free(m);
    m = load_and_check(path, all, 3, 1, "safetensors + metadata");
    CHECK(td_meta_size(m) == 2, "%s: %zu metadata entries, not 2", path, td_meta_size(m));
    check_string(path, m, "format", "pt");
    check_string(path, m, "source", "check-packages");
    td_meta_free(m);

    /* gguf: typed metadata (a string, integers, a float, a string list, a float array) and a
     * q4_0 tensor, which loads as it is stored. */
    a = make(&block);
    OK(td_dict_set(d, block.name, a, &err), &err);
    td_array_release(a);
    m = td_meta_new();
    static const char *const tokens[] = {"<s>", "</s>", "hello"};
    static const float scores[] = {0.0f, -1.5f, 2.25f};
    uint32_t ctx = 4096;
    float base = 10000.0f;
    OK(td_meta_set_string(m, "general.architecture", "llama", 5, &err), &err);
    OK(td_meta_set_scalar(m, "llama.context_length", TD_META_UINT32, &ctx, &err), &err);
    OK(td_meta_set_scalar(m, "llama.rope.freq_base", TD_META_FLOAT32, &base, &err), &err);
    OK(td_meta_set_strings(m, "tokenizer.ggml.tokens", tokens, NULL, 3, &err), &err);
    OK(td_meta_set_array(m, "tokenizer.ggml.scores", TD_META_FLOAT32, scores, 3, &err), &err);
    snprintf(path, sizeof path, "%s/model.gguf", argv[1]);
    OK(td_save_gguf(path, d, m, &err), &err);
    td_meta_free(m);
    td_dict_free(d);
    m = load_and_check(path, all, 4, 1, "gguf + metadata");
    check_string(path, m, "general.architecture", "llama");
    int64_t iv;
    double fv;
    CHECK(td_meta_get_int(m, "llama.context_length", &iv) == 0 && iv == 4096,
          "%s: llama.context_length is not 4096", path);
    CHECK(td_meta_get_float(m, "llama.rope.freq_base", &fv) == 0 && fv == 10000.0,
          "%s: llama.rope.freq_base is not 10000", path);
    for (size_t i = 0; i < 3; i++) {
        const char *s;
        size_t len;
        CHECK(td_meta_get_string_at(m, "tokenizer.ggml.tokens", i, &s, &len) == 0 &&
                  len == strlen(tokens[i]) && memcmp(s, tokens[i], len) == 0,
              "%s: tokenizer.ggml.tokens[%zu] is not %s", path, i, tokens[i]);
    }
    td_meta_type et;
    size_t n;
    const void *items;
    CHECK(td_meta_get_array(m, "tokenizer.ggml.scores", &et, &n, &items) == 0 &&
              et == TD_META_FLOAT32 && n == 3 && memcmp(items, scores, sizeof scores) == 0,
          "%s: tokenizer.ggml.scores differs", path);
    td_meta_free(m);
    printf("consumer: every format saved, loaded and checked (libtensord %s)\n",
           td_version_string());
    return 0;
}

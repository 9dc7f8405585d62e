/*
 * test_api.c - the public API's contracts, through tensord.h only: load options that grow by
 * their size field, the td_dequant targets, the bound on decoding threads, td_inspect against
 * td_load, td_verify finding what a load does not read, and the error rule (every fallible
 * call that takes a td_error fills it).
 */
#include "testutil.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- options ---- */

START_TEST(test_options_init)
{
    td_load_options a = TD_LOAD_OPTIONS_INIT, b;
    memset(&b, 0xa5, sizeof b);
    td_load_options_init(&b);
    ck_assert_uint_eq(a.size, sizeof(td_load_options));
    ck_assert_uint_eq(b.size, sizeof(td_load_options));
    ck_assert_int_eq(b.format, TD_FORMAT_AUTO);
    ck_assert_int_eq(b.mode, TD_MODE_AUTO);
    ck_assert_ptr_null(b.socket_path);
    ck_assert_uint_eq(b.max_inflated, 0);
    ck_assert_int_eq(b.dequantize, TD_DEQUANT_NONE);
    ck_assert_uint_eq(b.threads, 0);
    ck_assert_uint_eq(b.flags, 0);
}
END_TEST

START_TEST(test_options_size)
{
    char path[512];
    tu_testdata("safetensors/dtypes_float.safetensors", path, sizeof path);
    td_dict *d;
    td_error err = {0};

    /* An options struct nobody initialised with the macro: refused, saying how to do it. */
    td_load_options o;
    memset(&o, 0, sizeof o);
    o.mode = TD_MODE_EMBEDDED;
    ck_assert_int_eq(td_load(path, &o, &d, NULL, &err), TD_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.message, "TD_LOAD_OPTIONS_INIT"));
    ck_assert_ptr_nonnull(strstr(err.message, path));
    o.size = sizeof o / 2;
    ck_assert_int_eq(td_load(path, &o, &d, NULL, &err), TD_EINVAL);

    /* A caller built against a later header: a larger struct whose unknown fields are set.
     * This library reads what it knows and ignores the rest. */
    struct {
        td_load_options o;
        uint64_t later[4];
    } big;
    memset(&big, 0, sizeof big);
    big.o.size = sizeof big;
    big.o.mode = TD_MODE_EMBEDDED;
    for (int i = 0; i < 4; i++)
        big.later[i] = ~0ull;
    TU_OK(td_load(path, &big.o, &d, NULL, &err), &err);
    ck_assert_uint_gt(td_dict_size(d), 0);
    td_dict_free(d);

    /* Values outside the enums and unknown flags are refused, naming the field. */
    td_load_options bad = TD_LOAD_OPTIONS_INIT;
    bad.mode = (td_load_mode)7;
    ck_assert_int_eq(td_load(path, &bad, &d, NULL, &err), TD_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.message, "mode"));
    bad = (td_load_options)TD_LOAD_OPTIONS_INIT;
    bad.dequantize = (td_dequant)(TD_DEQUANT_MLX + 1);
    ck_assert_int_eq(td_load(path, &bad, &d, NULL, &err), TD_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.message, "dequantize"));
    bad = (td_load_options)TD_LOAD_OPTIONS_INIT;
    bad.flags = 1u << 31;
    ck_assert_int_eq(td_load(path, &bad, &d, NULL, &err), TD_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.message, "flags"));
    td_array *a;
    ck_assert_int_eq(td_load_array(path, &bad, &a, &err), TD_EINVAL);
    td_inspect_result *r;
    ck_assert_int_eq(td_inspect(path, &bad, &r, &err), TD_EINVAL);
    ck_assert_int_eq(td_verify(path, &bad, &err), TD_EINVAL);
}
END_TEST

/* ---- dequantize targets ---- */

START_TEST(test_dequant_targets)
{
    char path[512];
    tu_testdata("gguf/q4_0.gguf", path, sizeof path);
    static const struct {
        td_dequant target;
        td_dtype dtype;
        size_t entries;
    } cases[] = {
        {TD_DEQUANT_NONE, TD_Q4_0, 2},   {TD_DEQUANT_F32, TD_FLOAT32, 2},
        {TD_DEQUANT_F16, TD_FLOAT16, 2}, {TD_DEQUANT_BF16, TD_BFLOAT16, 2},
        {TD_DEQUANT_MLX, TD_UINT32, 6},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        td_load_options o = TD_LOAD_OPTIONS_INIT;
        o.mode = TD_MODE_EMBEDDED;
        o.dequantize = cases[c].target;
        td_dict *d;
        td_error err = {0};
        TU_OK(td_load(path, &o, &d, NULL, &err), &err);
        ck_assert_uint_eq(td_dict_size(d), cases[c].entries);
        const td_array *w = td_dict_get(d, "blk.0.weight");
        ck_assert_ptr_nonnull(w);
        ck_assert_int_eq(td_array_dtype(w), cases[c].dtype);
        td_dict_free(d);

        /* td_inspect shows the same table, with the layout and the stored block type. */
        td_inspect_result *r;
        TU_OK(td_inspect(path, &o, &r, &err), &err);
        ck_assert_uint_eq(td_inspect_ntensors(r), cases[c].entries);
        ck_assert_int_eq(td_inspect_tensor_dtype(r, 0), cases[c].dtype);
        ck_assert_int_eq(td_inspect_tensor_stored_dtype(r, 0), TD_Q4_0);
        unsigned want = cases[c].target == TD_DEQUANT_NONE  ? TD_LAYOUT_VIEW
                        : cases[c].target == TD_DEQUANT_MLX ? TD_LAYOUT_MLX
                                                            : TD_LAYOUT_DEQUANTIZE;
        ck_assert_uint_eq(td_inspect_tensor_layout(r, 0), want);
        td_inspect_free(r);
        TU_OK(td_verify(path, &o, &err), &err);
    }
    ck_assert(td_dtype_dequantizable(TD_Q4_K));
    ck_assert(td_dtype_dequantizable(TD_IQ2_XXS));
    ck_assert(!td_dtype_dequantizable(TD_NVFP4));
    ck_assert(!td_dtype_dequantizable(TD_FLOAT32));
}
END_TEST

/* ---- the bound on decoding threads ---- */

/* Samples this process's thread count (/proc/self/status) until told to stop. */
typedef struct sampler {
    atomic_int stop, samples;
    int max;
} sampler;

static int thread_count(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    ck_assert_ptr_nonnull(f);
    char line[256];
    int n = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "Threads: %d", &n) == 1)
            break;
    fclose(f);
    return n;
}

static void *sample(void *arg)
{
    sampler *s = arg;
    while (!atomic_load(&s->stop)) {
        int n = thread_count();
        if (n > s->max)
            s->max = n;
        atomic_fetch_add(&s->samples, 1);
    }
    return NULL;
}

/* The most threads this process had while dequantizing a (16 Mi elements of q4_0, which the
 * automatic choice splits over up to 4 threads) with the given bound; the sampler is one of
 * them, the caller another. */
static int peak_threads(const td_array *a, unsigned threads, const td_array *expect)
{
    sampler s = {0};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, sample, &s), 0);
    while (atomic_load(&s.samples) < 2)
        usleep(100);
    td_array *out;
    td_error err = {0};
    TU_OK(td_array_dequantize(a, TD_FLOAT32, threads, &out, &err), &err);
    atomic_store(&s.stop, 1);
    pthread_join(t, NULL);
    if (expect)
        ck_assert(memcmp(td_array_data(out), td_array_data(expect), td_array_nbytes(out)) == 0);
    td_array_release(out);
    return s.max;
}

START_TEST(test_threads_bound)
{
    ck_assert_int_eq(thread_count(), 1);
    int64_t shape[2] = {512, 32768}; /* 16 Mi elements */
    td_array *a, *ref;
    td_error err = {0};
    TU_OK(td_array_new(TD_Q4_0, 2, shape, NULL, &a, &err), &err);
    /* Blocks with a scale of 1.0 (0x3c00) and varied nibbles, so the output is not all zero. */
    uint8_t *p = td_array_data_mut(a);
    for (uint64_t b = 0; b < td_array_nbytes(a) / 18; b++) {
        p[b * 18] = 0x00;
        p[b * 18 + 1] = 0x3c;
        for (int k = 2; k < 18; k++)
            p[b * 18 + k] = (uint8_t)(b * 7 + (uint64_t)k);
    }
    TU_OK(td_array_dequantize(a, TD_FLOAT32, 1, &ref, &err), &err);
    /* threads = 1: the caller's thread only; 2: one more at most. */
    ck_assert_int_le(peak_threads(a, 1, ref), 2);
    ck_assert_int_le(peak_threads(a, 2, ref), 3);
    /* The sampler does see decoding threads when there is no bound, on a machine with more
     * than one CPU: the check above is not blind. */
    if (sysconf(_SC_NPROCESSORS_ONLN) > 1) {
        int seen = 0;
        for (int i = 0; i < 20 && seen <= 2; i++)
            seen = peak_threads(a, 0, ref);
        ck_assert_int_gt(seen, 2);
    }

    /* The same bound on load: a GGUF of that tensor, dequantized in embedded mode. */
    char dir[64], path[128];
    tu_tmpdir(dir);
    snprintf(path, sizeof path, "%s/big.gguf", dir);
    td_dict *d = td_dict_new();
    TU_OK(td_dict_set(d, "w", a, &err), &err);
    TU_OK(td_save_gguf(path, d, NULL, &err), &err);
    td_dict_free(d);
    td_load_options o = TD_LOAD_OPTIONS_INIT;
    o.mode = TD_MODE_EMBEDDED;
    o.dequantize = TD_DEQUANT_F32;
    o.threads = 1;
    sampler s = {0};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, sample, &s), 0);
    while (atomic_load(&s.samples) < 2)
        usleep(100);
    TU_OK(td_load(path, &o, &d, NULL, &err), &err);
    atomic_store(&s.stop, 1);
    pthread_join(t, NULL);
    ck_assert_int_le(s.max, 2);
    const td_array *w = td_dict_get(d, "w");
    ck_assert(memcmp(td_array_data(w), td_array_data(ref), td_array_nbytes(ref)) == 0);
    td_dict_free(d);
    td_array_release(ref);
    td_array_release(a);
    tu_rmtree(dir);
}
END_TEST

/* ---- inspect ---- */

/* td_inspect gives what td_load gives, and the stored bytes of every view are the array's. */
static void check_inspect(const char *rel)
{
    char path[512];
    tu_testdata(rel, path, sizeof path);
    td_load_options o = TD_LOAD_OPTIONS_INIT;
    o.mode = TD_MODE_EMBEDDED;
    td_format f = td_format_from_path(path);
    int has_meta = f == TD_FORMAT_SAFETENSORS || f == TD_FORMAT_GGUF;
    td_dict *d;
    td_meta *m = NULL;
    td_error err = {0};
    TU_OK(td_load(path, &o, &d, has_meta ? &m : NULL, &err), &err);
    td_inspect_result *r;
    TU_OK(td_inspect(path, NULL, &r, &err), &err);
    size_t len;
    uint8_t *file = tu_read_file(path, &len);
    ck_assert_ptr_nonnull(file);
    ck_assert_int_eq(td_inspect_format(r), f);
    ck_assert_uint_eq(td_inspect_file_size(r), len);
    ck_assert_uint_eq(td_inspect_ntensors(r), td_dict_size(d));
    for (size_t i = 0; i < td_dict_size(d); i++) {
        const char *name;
        const td_array *a = td_dict_at(d, i, &name);
        const char *iname = td_inspect_tensor_name(r, i);
        ck_assert_msg((!name && !iname) || (name && iname && !strcmp(name, iname)), "%s: %zu", rel,
                      i);
        ck_assert_int_eq(td_inspect_tensor_dtype(r, i), td_array_dtype(a));
        ck_assert_int_eq(td_inspect_tensor_ndim(r, i), td_array_ndim(a));
        for (int k = 0; k < td_array_ndim(a); k++)
            ck_assert_int_eq(td_inspect_tensor_shape(r, i)[k], td_array_shape(a)[k]);
        ck_assert_uint_eq(td_inspect_tensor_nbytes(r, i), td_array_nbytes(a));
        uint64_t off = td_inspect_tensor_offset(r, i), n = td_inspect_tensor_stored_nbytes(r, i);
        ck_assert_uint_le(off + n, len);
        if (td_inspect_tensor_layout(r, i) == TD_LAYOUT_VIEW) {
            ck_assert_uint_eq(n, td_array_nbytes(a));
            ck_assert_msg(memcmp(file + off, td_array_data(a), n) == 0, "%s: tensor %s", rel,
                          name ? name : "(none)");
        }
    }
    ck_assert_uint_eq(td_inspect_ntensors(r), td_dict_size(d));
    ck_assert_ptr_null(td_inspect_tensor_name(r, td_dict_size(d)));
    ck_assert_int_eq(td_inspect_tensor_dtype(r, td_dict_size(d)), TD_DTYPE_COUNT);
    const td_meta *im = td_inspect_meta(r);
    if (!has_meta) {
        ck_assert_ptr_null(im);
    } else if (im) {
        ck_assert_uint_eq(td_meta_size(im), td_meta_size(m));
        for (size_t i = 0; i < td_meta_size(m); i++) {
            const char *k1, *k2;
            td_meta_at(m, i, &k1);
            td_meta_at(im, i, &k2);
            ck_assert_str_eq(k1, k2);
        }
    } else {
        ck_assert_uint_eq(td_meta_size(m), 0);
    }
    free(file);
    td_inspect_free(r);
    td_dict_free(d);
    td_meta_free(m);
    TU_OK(td_verify(path, NULL, &err), &err);
}

START_TEST(test_inspect)
{
    static const char *const files[] = {
        "npy/big_endian_f4.npy",
        "npy/fortran_f8.npy",
        "npy/scalar_0d.npy",
        "npy/empty_0x3.npy",
        "npz/named.npz",
        "npz/compressed.npz",
        "npz/positional.npz",
        "safetensors/with_metadata.safetensors",
        "safetensors/data_order.safetensors",
        "safetensors/scalar_and_empty.safetensors",
        "gguf/all_types.gguf",
        "gguf/aligned64.gguf",
        "gguf/q8_0.gguf",
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        check_inspect(files[i]);

    /* The layouts of the decoded kinds. */
    char path[512];
    td_inspect_result *r;
    td_error err = {0};
    TU_OK(td_inspect(tu_testdata("npy/big_endian_f4.npy", path, sizeof path), NULL, &r, &err),
          &err);
    ck_assert_uint_eq(td_inspect_tensor_layout(r, 0), TD_LAYOUT_BYTESWAP);
    ck_assert_ptr_null(td_inspect_tensor_name(r, 0));
    td_inspect_free(r);
    TU_OK(td_inspect(tu_testdata("npy/fortran_f8.npy", path, sizeof path), NULL, &r, &err), &err);
    ck_assert_uint_eq(td_inspect_tensor_layout(r, 0), TD_LAYOUT_FORTRAN);
    td_inspect_free(r);
    TU_OK(td_inspect(tu_testdata("npz/compressed.npz", path, sizeof path), NULL, &r, &err), &err);
    int deflated = 0;
    for (size_t i = 0; i < td_inspect_ntensors(r); i++)
        deflated += (td_inspect_tensor_layout(r, i) & TD_LAYOUT_DEFLATE) != 0;
    ck_assert_int_eq(deflated, (int)td_inspect_ntensors(r));
    td_inspect_free(r);

    /* The format comes from the options when the name has no extension; bad input fails as
     * td_load fails, with nothing returned. */
    char dir[64], copy[128];
    tu_tmpdir(dir);
    snprintf(copy, sizeof copy, "%s/model", dir);
    size_t len;
    uint8_t *bytes = tu_read_file(tu_testdata("gguf/q8_0.gguf", path, sizeof path), &len);
    ck_assert_int_eq(tu_write_file(copy, bytes, len), 0);
    r = (td_inspect_result *)1;
    ck_assert_int_eq(td_inspect(copy, NULL, &r, &err), TD_ENOTSUP);
    ck_assert_ptr_null(r);
    td_load_options o = TD_LOAD_OPTIONS_INIT;
    o.format = TD_FORMAT_GGUF;
    TU_OK(td_inspect(copy, &o, &r, &err), &err);
    ck_assert_int_eq(td_inspect_format(r), TD_FORMAT_GGUF);
    td_inspect_free(r);
    ck_assert_int_eq(tu_write_file(copy, bytes, len / 2), 0);
    ck_assert_int_lt(td_inspect(copy, &o, &r, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.message, copy));
    free(bytes);
    td_inspect_free(NULL);
    tu_rmtree(dir);
}
END_TEST

/* ---- verify ---- */

START_TEST(test_verify)
{
    char dir[64], stored[128], deflated[128];
    tu_tmpdir(dir);
    snprintf(stored, sizeof stored, "%s/s.npz", dir);
    snprintf(deflated, sizeof deflated, "%s/d.npz", dir);
    int64_t shape[1] = {4096};
    td_array *a;
    td_error err = {0};
    TU_OK(td_array_new(TD_INT32, 1, shape, NULL, &a, &err), &err);
    int32_t *v = td_array_data_mut(a);
    for (int i = 0; i < 4096; i++)
        v[i] = i * 2654435761u;
    td_dict *d = td_dict_new();
    TU_OK(td_dict_set(d, "x", a, &err), &err);
    TU_OK(td_savez(stored, d, &err), &err);
    TU_OK(td_savez_compressed(deflated, d, &err), &err);
    td_dict_free(d);
    td_array_release(a);
    TU_OK(td_verify(stored, NULL, &err), &err);
    TU_OK(td_verify(deflated, NULL, &err), &err);

    /* One byte of a stored member's data changed: a load does not read the CRC-32 of a stored
     * member and succeeds; td_verify finds the mismatch and names the member. */
    size_t len;
    uint8_t *p = tu_read_file(stored, &len);
    p[len / 2] ^= 0x40;
    ck_assert_int_eq(tu_write_file(stored, p, len), 0);
    free(p);
    td_load_options o = TD_LOAD_OPTIONS_INIT;
    o.mode = TD_MODE_EMBEDDED;
    TU_OK(td_load(stored, &o, &d, NULL, &err), &err);
    td_dict_free(d);
    ck_assert_int_eq(td_verify(stored, NULL, &err), TD_ECHECKSUM);
    ck_assert_ptr_nonnull(strstr(err.message, "x.npy"));
    ck_assert_ptr_nonnull(strstr(err.message, stored));

    /* And in a deflated member: the inflated bytes no longer match. */
    p = tu_read_file(deflated, &len);
    p[len / 2] ^= 0x40;
    ck_assert_int_eq(tu_write_file(deflated, p, len), 0);
    free(p);
    ck_assert_int_lt(td_verify(deflated, NULL, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.message, deflated));
    tu_rmtree(dir);
}
END_TEST

/* ---- the error rule ---- */

/* rc must be a negative code and *err must hold it with a message. */
#define FILLS(call)                                                                                \
    do {                                                                                           \
        td_error e_ = {0};                                                                         \
        td_error *err = &e_;                                                                       \
        int rc_ = (call);                                                                          \
        ck_assert_msg(rc_ < 0, "%s succeeded", #call);                                             \
        ck_assert_msg(e_.code == rc_ && e_.message[0], "%s -> %d: err holds %d '%s'", #call, rc_,  \
                      e_.code, e_.message);                                                        \
    } while (0)

START_TEST(test_error_rule)
{
    char dir[64], path[512], missing[128], nodir[160], sock[128];
    tu_tmpdir(dir);
    snprintf(missing, sizeof missing, "%s/missing.safetensors", dir);
    snprintf(nodir, sizeof nodir, "%s/no/such/dir/x.npy", dir);
    snprintf(sock, sizeof sock, "%s/nobody.sock", dir);
    int64_t shape[1] = {32};
    td_array *f32, *q, *out = NULL, *w, *s, *b;
    td_error e0 = {0};
    TU_OK(td_array_new(TD_FLOAT32, 1, shape, NULL, &f32, &e0), &e0);
    TU_OK(td_array_new(TD_Q4_0, 1, shape, NULL, &q, &e0), &e0);
    td_dict *d = td_dict_new();
    td_meta *m = td_meta_new();
    td_value *arr = td_value_new_array(TD_META_UINT32);
    td_value *str = td_value_new_string("x", 1);
    ck_assert_ptr_nonnull(d);
    ck_assert_ptr_nonnull(m);
    ck_assert_ptr_nonnull(arr);
    ck_assert_ptr_nonnull(str);
    uint32_t u = 7;
    td_dict *ld;
    td_meta *lm;
    td_array *la;
    td_client *c;
    td_inspect_result *r;

    FILLS(td_array_new(TD_FLOAT32, -1, shape, NULL, &out, err));
    FILLS(td_array_wrap(TD_FLOAT32, 1, shape, NULL, NULL, NULL, &out, err));
    FILLS(td_array_dequantize(f32, TD_FLOAT32, 0, &out, err));
    FILLS(td_array_dequantize(q, TD_INT8, 0, &out, err));
    FILLS(td_array_to_mlx(f32, &w, &s, &b, err));
    FILLS(td_dict_set(d, NULL, f32, err));
    FILLS(td_dict_set(d, "", f32, err));
    FILLS(td_dict_push(d, NULL, err));
    TU_OK(td_dict_set(d, "a", f32, &e0), &e0);
    FILLS(td_dict_set(d, "a", f32, err));
    FILLS(td_meta_set_string(m, "k", NULL, 3, err));
    FILLS(td_meta_set_scalar(m, "k", TD_META_STRING, &u, err));
    FILLS(td_meta_set_array(m, "k", TD_META_UINT32, NULL, 3, err));
    FILLS(td_meta_set_strings(m, "k", NULL, NULL, 2, err));
    FILLS(td_meta_set_value(m, "", td_value_new_string("y", 1), err));
    td_value *item = td_value_new_scalar(TD_META_UINT32, &u), *sitem = td_value_new_string("y", 1);
    FILLS(td_value_array_push(str, item, err)); /* scalars and strings are copied */
    FILLS(td_value_array_push(arr, sitem, err));
    td_value_free(item);
    td_value_free(sitem);
    FILLS(td_save(nodir, f32, err));
    FILLS(td_savez(nodir, d, err));
    FILLS(td_savez_compressed(nodir, d, err));
    TU_OK(td_meta_set_scalar(m, "n", TD_META_UINT32, &u, &e0), &e0);
    snprintf(path, sizeof path, "%s/x.safetensors", dir);
    FILLS(td_save_safetensors(path, d, m, err)); /* safetensors holds strings only */
    FILLS(td_save_gguf(nodir, d, NULL, err));
    FILLS(td_load(missing, NULL, &ld, NULL, err));
    FILLS(td_load(tu_testdata("npz/named.npz", path, sizeof path), NULL, &ld, &lm, err));
    FILLS(td_load_array(path, NULL, &la, err));
    FILLS(td_inspect(missing, NULL, &r, err));
    FILLS(td_verify(missing, NULL, err));
    FILLS(td_client_connect(sock, &c, err));

    /* The exempt lookups: a code, and the caller has every input. */
    int64_t i64;
    const char *sv;
    size_t n;
    ck_assert_int_eq(td_value_get_int(str, &i64), TD_EINVAL);
    ck_assert_int_eq(td_meta_get_string(m, "nope", &sv, &n), TD_ENOTFOUND);
    ck_assert_int_eq(td_meta_get_string(m, "n", &sv, &n), TD_EDTYPE);
    td_dtype dt;
    ck_assert_int_eq(td_dtype_from_name("float31", &dt), TD_EDTYPE);

    td_value_free(arr);
    td_value_free(str);
    td_meta_free(m);
    td_dict_free(d);
    td_array_release(f32);
    td_array_release(q);
    tu_rmtree(dir);
}
END_TEST

START_TEST(test_socket_default)
{
    ck_assert_str_eq(TD_DEFAULT_SOCKET, "/run/tensord/tensord.sock");
    /* With no explicit path, the client goes to $TENSORD_SOCKET and says so when nobody
     * answers there. */
    char dir[64], sock[128];
    tu_tmpdir(dir);
    snprintf(sock, sizeof sock, "%s/env.sock", dir);
    setenv("TENSORD_SOCKET", sock, 1);
    td_client *c;
    td_error err = {0};
    ck_assert_int_eq(td_client_connect(NULL, &c, &err), TD_ECONNECT);
    ck_assert_ptr_nonnull(strstr(err.message, sock));
    unsetenv("TENSORD_SOCKET");
    tu_rmtree(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("api");
    TCase *tc = tcase_create("api");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_options_init);
    tcase_add_test(tc, test_options_size);
    tcase_add_test(tc, test_dequant_targets);
    tcase_add_test(tc, test_threads_bound);
    tcase_add_test(tc, test_inspect);
    tcase_add_test(tc, test_verify);
    tcase_add_test(tc, test_error_rule);
    tcase_add_test(tc, test_socket_default);
    suite_add_tcase(s, tc);
    return tu_run(s);
}

/*
 * test_gguf.c - the GGUF codec (formats/gguf.c): the reference files against MANIFEST.json,
 * round trips of every dtype and metadata type, the writer's refusals, hostile files, every
 * prefix of valid files, and a 1 GiB sparse file whose data must not be read.
 */
#include "gguf.h"
#include "common.h"
#include "dtype.h"
#include "meta_internal.h"
#include "table.h"
#include "testutil.h"
#include "writer.h"

#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *const gguf_files[] = {
    "gguf/all_types.gguf", "gguf/aligned64.gguf", "gguf/nested_array.gguf", "gguf/q4_0.gguf",
    "gguf/q4_1.gguf",      "gguf/q5_0.gguf",      "gguf/q5_1.gguf",         "gguf/q8_0.gguf",
};
#define N_GGUF_FILES (sizeof gguf_files / sizeof gguf_files[0])

/* ---------------------------------------------------------------------------------------------
 * Helpers
 */

static uint8_t *read_testdata(const char *rel, size_t *len)
{
    char path[512];
    uint8_t *p = tu_read_file(tu_testdata(rel, path, sizeof path), len);
    ck_assert_msg(p != NULL, "cannot read %s", path);
    return p;
}

/* Writes items/meta with td__gguf_write into memory; returns the bytes (free()). */
static uint8_t *write_mem(const td__item *items, size_t n, const td_meta *meta, size_t *len,
                          int *rc, td_error *err)
{
    td__writer w;
    ck_assert_int_eq(td__writer_init(&w, -1, "mem.gguf", err), 0);
    *rc = td__gguf_write(&w, items, n, meta, "mem.gguf", err);
    uint8_t *p = td__writer_take(&w, len);
    td__writer_destroy(&w);
    return p;
}

/* Indexes a copy of p[0..len) in a buffer of exactly len bytes, so that ASan sees any read past
 * the end. */
static int index_exact(const uint8_t *p, size_t len, const char *fname, td__table *t, td_error *err)
{
    uint8_t *copy = malloc(len ? len : 1);
    ck_assert_ptr_nonnull(copy);
    if (len)
        memcpy(copy, p, len);
    td__table_init(t, TD_FORMAT_AUTO);
    int rc = td__gguf_index(TD__RD_MEM(copy, len, fname), t, err);
    free(copy);
    return rc;
}

/* Items viewing the table's tensors in base. */
static td__item *items_of(const td__table *t, const uint8_t *base)
{
    td__item *items = calloc(t->n ? t->n : 1, sizeof *items);
    ck_assert_ptr_nonnull(items);
    for (size_t i = 0; i < t->n; i++) {
        const td__entry *e = &t->entries[i];
        items[i].name = e->name;
        items[i].dtype = e->dtype;
        items[i].ndim = (int)e->ndim;
        items[i].shape = e->shape;
        items[i].data = base + e->offset;
        items[i].nbytes = e->nbytes;
    }
    return items;
}

/* The two tables hold the same tensors (names, dtypes, shapes, bytes) and equal metadata. */
static void assert_same_tables(const td__table *a, const uint8_t *abase, const td__table *b,
                               const uint8_t *bbase)
{
    ck_assert_uint_eq(a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        const td__entry *x = &a->entries[i], *y = &b->entries[i];
        ck_assert_str_eq(x->name, y->name);
        ck_assert_int_eq(x->dtype, y->dtype);
        ck_assert_uint_eq(x->ndim, y->ndim);
        for (uint32_t j = 0; j < x->ndim; j++)
            ck_assert_int_eq(x->shape[j], y->shape[j]);
        ck_assert_uint_eq(x->nbytes, y->nbytes);
        ck_assert_msg(memcmp(abase + x->offset, bbase + y->offset, x->nbytes) == 0,
                      "tensor %s: bytes differ", x->name);
        ck_assert_uint_eq(x->region, 0);
        ck_assert_uint_eq(x->layout, 0);
    }
    ck_assert_msg(td__meta_equal(a->meta, b->meta), "metadata differs");
}

typedef tu_buf gb;

/* ---------------------------------------------------------------------------------------------
 * The reference files against MANIFEST.json
 */

/* Loads MANIFEST.json. jansson refuses integers above INT64_MAX, and the manifest has two
 * (2^64-1), so every such literal is quoted first and compared as a string. */
static json_t *load_manifest(void)
{
    size_t len;
    uint8_t *p = read_testdata("MANIFEST.json", &len);
    static const char big[] = "18446744073709551615";
    size_t bl = sizeof big - 1;
    char *q = malloc(len * 2 + 1);
    ck_assert_ptr_nonnull(q);
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        if (i + bl <= len && memcmp(p + i, big, bl) == 0 &&
            (i == 0 || p[i - 1] < '0' || p[i - 1] > '9') &&
            (i + bl == len || p[i + bl] < '0' || p[i + bl] > '9')) {
            q[o++] = '"';
            memcpy(q + o, big, bl);
            o += bl;
            q[o++] = '"';
            i += bl;
        } else {
            q[o++] = (char)p[i++];
        }
    }
    q[o] = '\0';
    free(p);
    json_error_t je;
    json_t *m = json_loads(q, 0, &je);
    free(q);
    ck_assert_msg(m != NULL, "MANIFEST.json: %s (line %d)", je.text, je.line);
    return m;
}

static int type_from_manifest(const char *s)
{
    static const char *const names[] = {"UINT8",  "INT8",    "UINT16", "INT16",  "UINT32",
                                        "INT32",  "FLOAT32", "BOOL",   "STRING", "ARRAY",
                                        "UINT64", "INT64",   "FLOAT64"};
    for (int i = 0; i < TD_META_COUNT; i++)
        if (strcmp(names[i], s) == 0)
            return i;
    ck_abort_msg("unknown manifest type %s", s);
    return -1;
}

static uint64_t json_u64(const json_t *j)
{
    if (json_is_string(j))
        return strtoull(json_string_value(j), NULL, 10);
    ck_assert_msg(json_is_integer(j), "expected an integer");
    return (uint64_t)json_integer_value(j);
}

/* One scalar (type t) of ours against its JSON value. */
static void check_scalar(const char *key, int t, const td_value *v, const json_t *j)
{
    ck_assert_msg(td_value_type(v) == (td_meta_type)t, "%s: type %d, expected %d", key,
                  td_value_type(v), t);
    switch (t) {
    case TD_META_UINT8:
    case TD_META_UINT16:
    case TD_META_UINT32:
    case TD_META_UINT64: {
        uint64_t u;
        ck_assert_int_eq(td_value_get_uint(v, &u), 0);
        ck_assert_msg(u == json_u64(j), "%s: %" PRIu64 " != %" PRIu64, key, u, json_u64(j));
        break;
    }
    case TD_META_INT8:
    case TD_META_INT16:
    case TD_META_INT32:
    case TD_META_INT64: {
        int64_t s;
        ck_assert_int_eq(td_value_get_int(v, &s), 0);
        ck_assert_msg(json_is_integer(j) && s == json_integer_value(j), "%s: %" PRId64, key, s);
        break;
    }
    case TD_META_FLOAT32:
    case TD_META_FLOAT64: {
        double d;
        ck_assert_int_eq(td_value_get_float(v, &d), 0);
        double e = json_number_value(j);
        if (t == TD_META_FLOAT32)
            e = (float)e;
        ck_assert_msg(memcmp(&d, &e, 8) == 0, "%s: %.17g != %.17g", key, d, e);
        break;
    }
    case TD_META_BOOL: {
        uint64_t u;
        ck_assert_int_eq(td_value_get_uint(v, &u), 0);
        ck_assert_msg(json_is_boolean(j) && (u != 0) == json_is_true(j), "%s: bool", key);
        break;
    }
    case TD_META_STRING: {
        size_t n;
        const char *s = td_value_string(v, &n);
        ck_assert_ptr_nonnull(s);
        ck_assert_msg(json_is_string(j) && n == json_string_length(j) &&
                          memcmp(s, json_string_value(j), n) == 0,
                      "%s: string '%s' != '%s'", key, s, json_string_value(j));
        break;
    }
    default:
        ck_abort_msg("%s: unexpected type %d", key, t);
    }
}

/* A value of ours against a manifest value object {"type", ["element_type"], "value"}. */
static void check_value(const char *key, const td_value *v, const json_t *obj)
{
    int t = type_from_manifest(json_string_value(json_object_get(obj, "type")));
    const json_t *val = json_object_get(obj, "value");
    if (t != TD_META_ARRAY) {
        check_scalar(key, t, v, val);
        return;
    }
    ck_assert_int_eq(td_value_type(v), TD_META_ARRAY);
    int et = type_from_manifest(json_string_value(json_object_get(obj, "element_type")));
    ck_assert_msg(td_value_array_type(v) == (td_meta_type)et, "%s: element type %d, expected %d",
                  key, td_value_array_type(v), et);
    ck_assert_uint_eq(td_value_array_len(v), json_array_size(val));
    for (size_t i = 0; i < json_array_size(val); i++) {
        const td_value *item = td_value_array_at(v, i);
        ck_assert_ptr_nonnull(item);
        if (et == TD_META_ARRAY)
            check_value(key, item, json_array_get(val, i));
        else
            check_scalar(key, et, item, json_array_get(val, i));
    }
    if (td__type_is_scalar((td_meta_type)et)) { /* the packed form agrees with the items */
        const uint8_t *p = td_value_array_data(v);
        for (size_t i = 0; i < json_array_size(val); i++) {
            td_value *one =
                td_value_new_scalar((td_meta_type)et, p + i * td__type_size((td_meta_type)et));
            ck_assert(td__value_equal(one, td_value_array_at(v, i)));
            td_value_free(one);
        }
    }
}

START_TEST(test_manifest)
{
    json_t *man = load_manifest();
    json_t *files = json_object_get(man, "files");
    const char *rel;
    json_t *fe;
    int nfiles = 0;
    json_object_foreach(files, rel, fe)
    {
        if (strcmp(json_string_value(json_object_get(fe, "format")), "gguf") != 0)
            continue;
        nfiles++;
        size_t len;
        uint8_t *p = read_testdata(rel, &len);
        char hex[65];
        ck_assert_uint_eq(len, json_integer_value(json_object_get(fe, "size")));
        tu_sha256_hex(p, len, hex);
        ck_assert_str_eq(hex, json_string_value(json_object_get(fe, "sha256")));

        td__table t;
        td_error err = {0};
        td__table_init(&t, TD_FORMAT_AUTO);
        TU_OK(td__gguf_index(TD__RD_MEM(p, len, rel), &t, &err), &err);
        ck_assert_int_eq(t.format, TD_FORMAT_GGUF);
        ck_assert_ptr_nonnull(t.meta);

        /* metadata: same keys in the same order, same types, same values */
        json_t *md = json_object_get(fe, "metadata");
        ck_assert_uint_eq(td_meta_size(t.meta), json_object_size(md));
        const char *key;
        json_t *kv;
        size_t k = 0;
        json_object_foreach(md, key, kv)
        {
            const char *ours;
            const td_value *v = td_meta_at(t.meta, k++, &ours);
            ck_assert_str_eq(ours, key);
            check_value(key, v, kv);
        }

        /* alignment and data section as the manifest says */
        uint64_t align = (uint64_t)json_integer_value(json_object_get(fe, "alignment"));
        uint64_t dso = (uint64_t)json_integer_value(json_object_get(fe, "data_section_offset"));

        /* tensors */
        json_t *ts = json_object_get(fe, "tensors");
        ck_assert_uint_eq(t.n, json_array_size(ts));
        for (size_t i = 0; i < t.n; i++) {
            const td__entry *e = &t.entries[i];
            json_t *jt = json_array_get(ts, i);
            ck_assert_str_eq(e->name, json_string_value(json_object_get(jt, "name")));
            ck_assert_str_eq(td_dtype_name(e->dtype),
                             json_string_value(json_object_get(jt, "dtype")));
            ck_assert_int_eq(td__dtype_ggml_id(e->dtype),
                             json_integer_value(json_object_get(jt, "ggml_type_id")));
            json_t *shape = json_object_get(jt, "shape");
            ck_assert_uint_eq(e->ndim, json_array_size(shape));
            for (uint32_t j = 0; j < e->ndim; j++)
                ck_assert_int_eq(e->shape[j], json_integer_value(json_array_get(shape, j)));
            ck_assert_uint_eq(e->nbytes, json_integer_value(json_object_get(jt, "nbytes")));
            ck_assert_uint_eq(e->offset, json_integer_value(json_object_get(jt, "offset")));
            ck_assert_uint_eq(e->offset - dso,
                              json_integer_value(json_object_get(jt, "rel_offset")));
            ck_assert_uint_eq((e->offset - dso) % align, 0);
            ck_assert_uint_eq(e->region, 0);
            ck_assert_uint_eq(e->layout, 0);
            tu_sha256_hex(p + e->offset, e->nbytes, hex);
            ck_assert_str_eq(hex, json_string_value(json_object_get(jt, "sha256")));
        }
        td__table_destroy(&t);
        free(p);
    }
    ck_assert_int_eq(nfiles, (int)N_GGUF_FILES);
    json_decref(man);
}
END_TEST

/* The two uint64 values at 2^64-1, read back exactly. */
START_TEST(test_manifest_u64_max)
{
    size_t len;
    uint8_t *p = read_testdata("gguf/all_types.gguf", &len);
    td__table t;
    td_error err = {0};
    td__table_init(&t, TD_FORMAT_AUTO);
    TU_OK(td__gguf_index(TD__RD_MEM(p, len, "all_types.gguf"), &t, &err), &err);
    const td_value *v = td_meta_get(t.meta, "test.u64");
    uint64_t u;
    ck_assert_int_eq(td_value_type(v), TD_META_UINT64);
    ck_assert_int_eq(td_value_get_uint(v, &u), 0);
    ck_assert(u == UINT64_MAX);
    v = td_meta_get(t.meta, "test.arr_u64");
    ck_assert_int_eq(td_value_array_type(v), TD_META_UINT64);
    const uint64_t *a = td_value_array_data(v);
    ck_assert(a[0] == UINT64_MAX && a[1] == 0 && a[2] == 1234567890123456789ull);
    v = td_meta_get(t.meta, "test.arr_i64");
    const int64_t *s = td_value_array_data(v);
    ck_assert(s[0] == INT64_MIN && s[1] == INT64_MAX && s[2] == -1);
    /* the value after an f64 is read 8 bytes on (MLX's bug) */
    int64_t x;
    ck_assert_int_eq(td_meta_get_int(t.meta, "test.u8_after_f64", &x), 0);
    ck_assert_int_eq(x, 7);
    ck_assert_int_eq(td_value_type(td_meta_get(t.meta, "test.u8_after_f64")), TD_META_UINT8);
    td__table_destroy(&t);
    free(p);
}
END_TEST

/* Every reference file read, written back and read again is the same; and since gguf-py lays
 * files out as llama.cpp does (and so do we), the written file is byte for byte the original. */
START_TEST(test_rewrite_identical)
{
    for (size_t f = 0; f < N_GGUF_FILES; f++) {
        size_t len, olen;
        uint8_t *p = read_testdata(gguf_files[f], &len);
        td__table a, b;
        td_error err = {0};
        td__table_init(&a, TD_FORMAT_AUTO);
        TU_OK(td__gguf_index(TD__RD_MEM(p, len, gguf_files[f]), &a, &err), &err);
        td__item *items = items_of(&a, p);
        int rc;
        uint8_t *out = write_mem(items, a.n, a.meta, &olen, &rc, &err);
        TU_OK(rc, &err);
        td__table_init(&b, TD_FORMAT_AUTO);
        TU_OK(td__gguf_index(TD__RD_MEM(out, olen, "mem.gguf"), &b, &err), &err);
        assert_same_tables(&a, p, &b, out);
        ck_assert_msg(olen == len && memcmp(out, p, len) == 0,
                      "%s: rewritten file differs (%zu vs %zu bytes)", gguf_files[f], olen, len);
        td__table_destroy(&a);
        td__table_destroy(&b);
        free(items);
        free(out);
        free(p);
    }
}
END_TEST

/* ---------------------------------------------------------------------------------------------
 * Writer: every GGUF dtype, layout, refusals
 */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint8_t rnd8(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint8_t)(rng_state >> 24);
}

/* Every dtype GGUF can hold, block types included, with random bytes: written, read back the
 * same, laid out as llama.cpp wants (running padded offsets, file padded at the end). */
START_TEST(test_all_dtypes_roundtrip)
{
    td__item items[TD_DTYPE_COUNT];
    int64_t shapes[TD_DTYPE_COUNT][4];
    char names[TD_DTYPE_COUNT][32];
    uint8_t *datas[TD_DTYPE_COUNT];
    size_t n = 0;
    for (int d = 0; d < TD_DTYPE_COUNT; d++) {
        const td__dtype_desc *info = td__dtype_info((td_dtype)d);
        if (info->ggml < 0)
            continue;
        int ndim = 1 + (int)(n % 4);
        uint64_t nb = info->block_bytes;
        for (int j = 0; j < ndim; j++) {
            shapes[n][j] = j == ndim - 1 ? 3 * (int64_t)info->block_elems : 2 + j;
            nb *= j == ndim - 1 ? 3 : (uint64_t)(2 + j);
        }
        snprintf(names[n], sizeof names[n], "t.%s", info->name);
        datas[n] = malloc(nb);
        for (uint64_t i = 0; i < nb; i++)
            datas[n][i] = rnd8();
        items[n] = (td__item){names[n], (td_dtype)d, ndim, shapes[n], datas[n], nb};
        n++;
    }
    ck_assert_uint_ge(n, 30);
    td_error err = {0};
    size_t len;
    int rc;
    uint8_t *p = write_mem(items, n, NULL, &len, &rc, &err);
    TU_OK(rc, &err);
    td__table t;
    TU_OK(index_exact(p, len, "mem.gguf", &t, &err), &err);
    ck_assert_uint_eq(t.n, n);
    ck_assert_uint_eq(td_meta_size(t.meta), 0);
    uint64_t expect_off = t.entries[0].offset;
    ck_assert_uint_eq(expect_off % 32, 0);
    for (size_t i = 0; i < n; i++) {
        const td__entry *e = &t.entries[i];
        ck_assert_str_eq(e->name, items[i].name);
        ck_assert_int_eq(e->dtype, items[i].dtype);
        ck_assert_int_eq((int)e->ndim, items[i].ndim);
        for (int j = 0; j < items[i].ndim; j++)
            ck_assert_int_eq(e->shape[j], items[i].shape[j]);
        ck_assert_uint_eq(e->nbytes, items[i].nbytes);
        ck_assert_uint_eq(e->offset, expect_off);
        ck_assert(memcmp(p + e->offset, items[i].data, e->nbytes) == 0);
        expect_off += (e->nbytes + 31) / 32 * 32;
    }
    ck_assert_uint_eq(len, expect_off);
    td__table_destroy(&t);
    for (size_t i = 0; i < n; i++)
        free(datas[i]);
    free(p);
}
END_TEST

/* Scalars (0-d), empty tensors and size-1 dimensions keep their shapes. */
START_TEST(test_odd_shapes)
{
    float one = 1.5f;
    int64_t s_empty[2] = {0, 3}, s_ones[4] = {1, 1, 5, 1}, s_q[2] = {0, 64};
    float five[5] = {1, 2, 3, 4, 5};
    td__item items[] = {
        {"scalar", TD_FLOAT32, 0, NULL, &one, 4},
        {"empty", TD_INT16, 2, s_empty, NULL, 0},
        {"ones", TD_FLOAT32, 4, s_ones, five, 20},
        {"qempty", TD_Q4_0, 2, s_q, NULL, 0},
        {"after", TD_FLOAT32, 1, (int64_t[]){5}, five, 20},
    };
    td_error err = {0};
    size_t len;
    int rc;
    uint8_t *p = write_mem(items, 5, NULL, &len, &rc, &err);
    TU_OK(rc, &err);
    td__table t;
    TU_OK(index_exact(p, len, "mem.gguf", &t, &err), &err);
    ck_assert_uint_eq(t.n, 5);
    ck_assert_uint_eq(t.entries[0].ndim, 0);
    ck_assert_uint_eq(t.entries[0].nbytes, 4);
    ck_assert_uint_eq(t.entries[1].ndim, 2);
    ck_assert_int_eq(t.entries[1].shape[0], 0);
    ck_assert_int_eq(t.entries[1].shape[1], 3);
    ck_assert_uint_eq(t.entries[1].nbytes, 0);
    ck_assert_uint_eq(t.entries[2].ndim, 4);
    ck_assert_int_eq(t.entries[2].shape[2], 5);
    ck_assert_int_eq(t.entries[2].shape[3], 1);
    ck_assert(memcmp(p + t.entries[4].offset, five, 20) == 0);
    td__table_destroy(&t);
    free(p);
}
END_TEST

START_TEST(test_write_refusals)
{
    static const td_dtype bad[] = {TD_BOOL,       TD_UINT8,       TD_UINT16,
                                   TD_UINT32,     TD_UINT64,      TD_COMPLEX64,
                                   TD_COMPLEX128, TD_FLOAT8_E4M3, TD_FLOAT8_E5M2};
    uint8_t buf[64] = {0};
    int64_t shape1[1] = {2};
    td_error err;
    size_t len;
    int rc;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        td__item it = {"w.bad", bad[i], 1, shape1, buf, 2 * td_dtype_size(bad[i])};
        memset(&err, 0, sizeof err);
        free(write_mem(&it, 1, NULL, &len, &rc, &err));
        ck_assert_int_eq(rc, TD_EDTYPE);
        ck_assert_msg(strstr(err.message, "'w.bad'") && strstr(err.message, td_dtype_name(bad[i])),
                      "message: %s", err.message);
        ck_assert_msg(strncmp(err.message, "mem.gguf: ", 10) == 0, "message: %s", err.message);
    }
    /* names: too long (64 bytes), missing, empty, duplicate */
    char longname[65];
    memset(longname, 'n', 64);
    longname[64] = '\0';
    td__item it = {longname, TD_FLOAT32, 1, shape1, buf, 8};
    free(write_mem(&it, 1, NULL, &len, &rc, &err));
    ck_assert_int_eq(rc, TD_ELIMIT);
    ck_assert_ptr_nonnull(strstr(err.message, "64 bytes"));
    longname[63] = '\0'; /* 63 bytes is fine */
    free(write_mem(&it, 1, NULL, &len, &rc, &err));
    ck_assert_int_eq(rc, 0);
    it.name = NULL;
    free(write_mem(&it, 1, NULL, &len, &rc, &err));
    ck_assert_int_eq(rc, TD_EINVAL);
    it.name = "";
    free(write_mem(&it, 1, NULL, &len, &rc, &err));
    ck_assert_int_eq(rc, TD_EINVAL);
    td__item two[3] = {{"a", TD_FLOAT32, 1, shape1, buf, 8},
                       {"b", TD_FLOAT32, 1, shape1, buf, 8},
                       {"a", TD_FLOAT32, 1, shape1, buf, 8}};
    free(write_mem(two, 3, NULL, &len, &rc, &err));
    ck_assert_int_eq(rc, TD_EDUP);
    ck_assert_ptr_nonnull(strstr(err.message, "'a'"));
    /* five dimensions */
    int64_t shape5[5] = {1, 1, 1, 1, 2};
    td__item five = {"five", TD_FLOAT32, 5, shape5, buf, 8};
    free(write_mem(&five, 1, NULL, &len, &rc, &err));
    ck_assert_int_eq(rc, TD_ELIMIT);
    /* a block type whose innermost size is not a multiple of its block */
    int64_t sq[2] = {2, 48};
    td__item q = {"q", TD_Q4_0, 2, sq, buf, 36};
    free(write_mem(&q, 1, NULL, &len, &rc, &err));
    ck_assert_int_lt(rc, 0);
    ck_assert_ptr_nonnull(strstr(err.message, "'q'"));
    /* nbytes that disagrees with the shape */
    td__item wrong = {"wrong", TD_FLOAT32, 1, shape1, buf, 12};
    free(write_mem(&wrong, 1, NULL, &len, &rc, &err));
    ck_assert_int_eq(rc, TD_EINVAL);
}
END_TEST

/* general.alignment: honoured and written when set, absent (32) otherwise, refused when bad. */
START_TEST(test_write_alignment)
{
    uint8_t buf[40] = {1, 2, 3};
    int64_t s3[1] = {3}, s10[1] = {10};
    td__item items[] = {{"a", TD_INT8, 1, s3, buf, 3}, {"b", TD_FLOAT32, 1, s10, buf, 40}};
    td_error err = {0};
    size_t len;
    int rc;
    td__table t;

    uint8_t *p = write_mem(items, 2, NULL, &len, &rc, &err);
    TU_OK(rc, &err);
    TU_OK(index_exact(p, len, "mem.gguf", &t, &err), &err);
    ck_assert_ptr_null(td_meta_get(t.meta, GGUF_KEY_ALIGNMENT));
    ck_assert_uint_eq(t.entries[1].offset - t.entries[0].offset, 32);
    ck_assert_uint_eq(len % 32, 0);
    td__table_destroy(&t);
    free(p);

    td_meta *m = td_meta_new();
    uint32_t a = 64;
    TU_OK(td_meta_set_string(m, "general.architecture", "x", 1, &err), &err);
    TU_OK(td_meta_set_scalar(m, GGUF_KEY_ALIGNMENT, TD_META_UINT32, &a, &err), &err);
    p = write_mem(items, 2, m, &len, &rc, &err);
    TU_OK(rc, &err);
    TU_OK(index_exact(p, len, "mem.gguf", &t, &err), &err);
    ck_assert(td__meta_equal(m, t.meta));
    ck_assert_uint_eq(t.entries[0].offset % 64, 0);
    ck_assert_uint_eq(t.entries[1].offset - t.entries[0].offset, 64);
    ck_assert_uint_eq(len % 64, 0);
    ck_assert_uint_eq(len, t.entries[1].offset + 64);
    td__table_destroy(&t);
    free(p);

    static const uint32_t bad[] = {0, 3, 48, 1u << 31, GGUF_MAX_ALIGNMENT * 2};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        TU_OK(td_meta_set_scalar(m, GGUF_KEY_ALIGNMENT, TD_META_UINT32, &bad[i], &err), &err);
        free(write_mem(items, 2, m, &len, &rc, &err));
        ck_assert_msg(rc < 0, "alignment %u accepted", bad[i]);
        ck_assert_ptr_nonnull(strstr(err.message, GGUF_KEY_ALIGNMENT));
    }
    uint64_t a64 = 64;
    TU_OK(td_meta_set_scalar(m, GGUF_KEY_ALIGNMENT, TD_META_UINT64, &a64, &err), &err);
    free(write_mem(items, 2, m, &len, &rc, &err));
    ck_assert_int_eq(rc, TD_EFORMAT);
    td_meta_free(m);
}
END_TEST

/* Every metadata type round-trips with its type: u16 stays u16, a one-element array stays an
 * array, an array of strings stays one, nested arrays, empty arrays, strings with NUL bytes. */
START_TEST(test_meta_roundtrip)
{
    td_meta *m = td_meta_new();
    td_error err = {0};
    uint8_t u8 = 200;
    int8_t i8 = -100;
    uint16_t u16 = 65535;
    int16_t i16 = -32768;
    uint32_t u32 = 4000000000u;
    int32_t i32 = INT32_MIN;
    float f32 = -0.0f;
    uint8_t b = 1;
    uint64_t u64 = UINT64_MAX;
    int64_t i64 = INT64_MIN;
    double f64 = 1e-310; /* subnormal */
    float nanf_ = NAN;
    TU_OK(td_meta_set_scalar(m, "s.u8", TD_META_UINT8, &u8, &err), &err);
    TU_OK(td_meta_set_scalar(m, "s.i8", TD_META_INT8, &i8, &err), &err);
    TU_OK(td_meta_set_scalar(m, "s.u16", TD_META_UINT16, &u16, &err), &err);
    TU_OK(td_meta_set_scalar(m, "s.i16", TD_META_INT16, &i16, &err), &err);
    TU_OK(td_meta_set_scalar(m, "s.u32", TD_META_UINT32, &u32, &err), &err);
    TU_OK(td_meta_set_scalar(m, "s.i32", TD_META_INT32, &i32, &err), &err);
    TU_OK(td_meta_set_scalar(m, "s.f32", TD_META_FLOAT32, &f32, &err), &err);
    TU_OK(td_meta_set_scalar(m, "s.nan", TD_META_FLOAT32, &nanf_, &err), &err);
    TU_OK(td_meta_set_scalar(m, "s.bool", TD_META_BOOL, &b, &err), &err);
    TU_OK(td_meta_set_scalar(m, "s.u64", TD_META_UINT64, &u64, &err), &err);
    TU_OK(td_meta_set_scalar(m, "s.i64", TD_META_INT64, &i64, &err), &err);
    TU_OK(td_meta_set_scalar(m, "s.f64", TD_META_FLOAT64, &f64, &err), &err);
    TU_OK(td_meta_set_string(m, "s.str", "a\0b", 3, &err), &err);
    TU_OK(td_meta_set_string(m, "s.empty", "", 0, &err), &err);
    uint16_t one16[1] = {7};
    TU_OK(td_meta_set_array(m, "a.one_u16", TD_META_UINT16, one16, 1, &err), &err);
    TU_OK(td_meta_set_array(m, "a.empty_f32", TD_META_FLOAT32, NULL, 0, &err), &err);
    double d3[3] = {1.0 / 3, -2.5, INFINITY};
    TU_OK(td_meta_set_array(m, "a.f64", TD_META_FLOAT64, d3, 3, &err), &err);
    uint8_t bools[4] = {1, 0, 0, 1};
    TU_OK(td_meta_set_array(m, "a.bool", TD_META_BOOL, bools, 4, &err), &err);
    const char *strs[3] = {"tok", "", "\xe2\x96\x81the"};
    TU_OK(td_meta_set_strings(m, "a.str", strs, NULL, 3, &err), &err);
    const char *one_str[1] = {"only"};
    TU_OK(td_meta_set_strings(m, "a.one_str", one_str, NULL, 1, &err), &err);
    /* nested: [[1,2],[],[3]] of i32 and [[["x"]]] of strings, three deep */
    td_value *outer = td_value_new_array(TD_META_ARRAY);
    for (int k = 0; k < 3; k++) {
        td_value *inner = td_value_new_array(TD_META_INT32);
        for (int32_t x = 0; x < (k == 0 ? 2 : k == 2 ? 1 : 0); x++) {
            int32_t val = x + 1 + k;
            TU_OK(td__value_array_push_scalar(inner, &val, &err), &err);
        }
        TU_OK(td_value_array_push(outer, inner, &err), &err);
    }
    TU_OK(td_meta_set_value(m, "n.i32", outer, &err), &err);
    td_value *l3 = td_value_new_array(TD_META_STRING);
    TU_OK(td__value_array_push_string(l3, "x", 1, &err), &err);
    td_value *l2 = td_value_new_array(TD_META_ARRAY);
    TU_OK(td_value_array_push(l2, l3, &err), &err);
    td_value *l1 = td_value_new_array(TD_META_ARRAY);
    TU_OK(td_value_array_push(l1, l2, &err), &err);
    TU_OK(td_meta_set_value(m, "n.deep", l1, &err), &err);
    td_value *emptynest = td_value_new_array(TD_META_ARRAY);
    TU_OK(td_meta_set_value(m, "n.empty", emptynest, &err), &err);

    size_t len;
    int rc;
    uint8_t *p = write_mem(NULL, 0, m, &len, &rc, &err);
    TU_OK(rc, &err);
    td__table t;
    TU_OK(index_exact(p, len, "mem.gguf", &t, &err), &err);
    ck_assert_uint_eq(t.n, 0);
    ck_assert(td__meta_equal(m, t.meta));
    ck_assert_int_eq(td_value_type(td_meta_get(t.meta, "s.u16")), TD_META_UINT16);
    const td_value *one = td_meta_get(t.meta, "a.one_u16");
    ck_assert_int_eq(td_value_type(one), TD_META_ARRAY);
    ck_assert_uint_eq(td_value_array_len(one), 1);
    ck_assert_int_eq(td_value_array_type(td_meta_get(t.meta, "a.one_str")), TD_META_STRING);
    size_t sl;
    const char *s = td_value_string(td_meta_get(t.meta, "s.str"), &sl);
    ck_assert_uint_eq(sl, 3);
    ck_assert(memcmp(s, "a\0b", 3) == 0);
    /* written again from what was read: the same bytes */
    size_t len2;
    uint8_t *p2 = write_mem(NULL, 0, t.meta, &len2, &rc, &err);
    TU_OK(rc, &err);
    ck_assert(len2 == len && memcmp(p, p2, len) == 0);
    td__table_destroy(&t);
    td_meta_free(m);
    free(p);
    free(p2);
}
END_TEST

/* ---------------------------------------------------------------------------------------------
 * Hostile files
 */

/* Indexes b and expects code, a message that starts with the file name and contains want, and
 * an empty table. */
static void expect_fail(gb *b, int code, const char *want, const char *what)
{
    td__table t;
    td_error err = {0};
    int rc = index_exact(b->p, b->len, "hostile.gguf", &t, &err);
    ck_assert_msg(rc == code, "%s: got %d (%s: %s), expected %d (%s)", what, rc, td_err_name(rc),
                  err.message, code, td_err_name(code));
    ck_assert_int_eq(err.code, code);
    ck_assert_msg(strncmp(err.message, "hostile.gguf: ", 14) == 0, "%s: message '%s'", what,
                  err.message);
    ck_assert_msg(!want || strstr(err.message, want), "%s: message '%s' lacks '%s'", what,
                  err.message, want);
    ck_assert_uint_eq(t.n, 0);
    ck_assert_ptr_null(t.meta);
    ck_assert_ptr_null(t.entries);
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* A valid file with one key "k" (u32 1), one f32 tensor "t" of 4 elements; the builder is left
 * at the point where the data section starts (after padding). */
static void gb_valid(gb *b)
{
    uint64_t ne[1] = {4};
    tu_gguf_header(b, 3, 1, 1);
    tu_gguf_str(b, "k");
    tu_buf_u32(b, TD_META_UINT32);
    tu_buf_u32(b, 1);
    tu_gguf_tensor(b, "t", 1, ne, 0, 0);
    tu_buf_pad(b, 32);
}

START_TEST(test_hostile)
{
    gb b = {0};
    uint64_t ne1[1] = {4};

    /* sanity: the valid base works */
    gb_valid(&b);
    tu_buf_zeros(&b, 32);
    {
        td__table t;
        td_error err = {0};
        TU_OK(index_exact(b.p, b.len, "ok.gguf", &t, &err), &err);
        ck_assert_uint_eq(t.n, 1);
        td__table_destroy(&t);
        free(b.p);
        memset(&b, 0, sizeof b);
    }

    /* header */
    expect_fail(&b, TD_ETRUNC, NULL, "empty");
    tu_buf_put(&b, "GGML", 4);
    tu_buf_u32(&b, 3);
    expect_fail(&b, TD_EFORMAT, "magic", "magic");
    tu_gguf_header(&b, 1, 0, 0);
    expect_fail(&b, TD_EVERSION, "version 1", "v1");
    tu_gguf_header(&b, 4, 0, 0);
    expect_fail(&b, TD_EVERSION, "version 4", "v4");
    tu_gguf_header(&b, 0, 0, 0);
    expect_fail(&b, TD_EVERSION, NULL, "v0");
    tu_gguf_header(&b, 0x03000000u, 0, 0);
    expect_fail(&b, TD_ENOTSUP, "big-endian", "byte-swapped");
    tu_gguf_header(&b, 3, 1ull << 62, 0);
    expect_fail(&b, TD_EFORMAT, "4611686018427387904", "n_tensors 2^62");
    tu_gguf_header(&b, 3, 0, 1ull << 62);
    expect_fail(&b, TD_EFORMAT, "4611686018427387904", "n_kv 2^62");
    tu_gguf_header(&b, 3, UINT64_MAX, UINT64_MAX);
    expect_fail(&b, TD_EFORMAT, NULL, "counts 2^64-1");
    tu_gguf_header(&b, 3, 0, 2);
    tu_buf_zeros(&b, 20);
    expect_fail(&b, TD_EFORMAT, NULL, "n_kv past file");

    /* keys and values */
    tu_gguf_header(&b, 3, 0, 1);
    tu_buf_u64(&b, 1ull << 40);
    tu_buf_put(&b, "abcdefgh", 8);
    expect_fail(&b, TD_ETRUNC, "1099511627776", "key length 2^40");
    tu_gguf_header(&b, 3, 0, 1);
    tu_gguf_str(&b, "s");
    tu_buf_u32(&b, TD_META_STRING);
    tu_buf_u64(&b, 1ull << 40);
    tu_buf_zeros(&b, 16);
    expect_fail(&b, TD_ETRUNC, "1099511627776", "string length 2^40");
    tu_gguf_header(&b, 3, 0, 1);
    tu_gguf_str(&b, "s");
    tu_buf_u32(&b, TD_META_STRING);
    tu_buf_u64(&b, UINT64_MAX);
    expect_fail(&b, TD_ETRUNC, NULL, "string length 2^64-1");
    tu_gguf_header(&b, 3, 0, 1);
    tu_gguf_str(&b, "a");
    tu_buf_u32(&b, TD_META_ARRAY);
    tu_buf_u32(&b, TD_META_UINT8);
    tu_buf_u64(&b, 100);
    tu_buf_zeros(&b, 99);
    expect_fail(&b, TD_ETRUNC, "'a'", "u8 array count past the file");
    tu_gguf_header(&b, 3, 0, 1);
    tu_gguf_str(&b, "a");
    tu_buf_u32(&b, TD_META_ARRAY);
    tu_buf_u32(&b, TD_META_UINT64);
    tu_buf_u64(&b, 1ull << 61); /* x 8 bytes overflows */
    tu_buf_zeros(&b, 64);
    expect_fail(&b, TD_ETRUNC, NULL, "u64 array count x size overflows");
    tu_gguf_header(&b, 3, 0, 1);
    tu_gguf_str(&b, "a");
    tu_buf_u32(&b, TD_META_ARRAY);
    tu_buf_u32(&b, TD_META_STRING);
    tu_buf_u64(&b, 1ull << 62);
    tu_buf_zeros(&b, 64);
    expect_fail(&b, TD_ETRUNC, NULL, "string array count 2^62");
    tu_gguf_header(&b, 3, 0, 1);
    tu_gguf_str(&b, "a");
    tu_buf_u32(&b, TD_META_ARRAY);
    tu_buf_u32(&b, TD_META_STRING);
    tu_buf_u64(&b, 2);
    tu_gguf_str(&b, "x");
    tu_buf_u64(&b, 1ull << 40);
    expect_fail(&b, TD_ETRUNC, NULL, "string in array past the file");
    tu_gguf_header(&b, 3, 0, 1);
    tu_gguf_str(&b, "deep");
    tu_buf_u32(&b, TD_META_ARRAY);
    for (int i = 0; i < 1000; i++) {
        tu_buf_u32(&b, TD_META_ARRAY);
        tu_buf_u64(&b, 1);
    }
    tu_buf_u32(&b, TD_META_UINT8);
    tu_buf_u64(&b, 0);
    expect_fail(&b, TD_ELIMIT, "nested deeper", "arrays 1000 deep");
    tu_gguf_header(&b, 3, 0, 1);
    tu_gguf_str(&b, "deep");
    tu_buf_u32(&b, TD_META_ARRAY);
    for (int i = 0; i < TD_META_MAX_DEPTH; i++) { /* one level too deep */
        tu_buf_u32(&b, TD_META_ARRAY);
        tu_buf_u64(&b, 1);
    }
    tu_buf_u32(&b, TD_META_UINT8);
    tu_buf_u64(&b, 0);
    expect_fail(&b, TD_ELIMIT, NULL, "arrays MAX_DEPTH+1 deep");
    /* more strings than GGUF_MAX_META_ITEMS, all present in the file: refused before any is
     * allocated */
    tu_gguf_header(&b, 3, 0, 1);
    tu_gguf_str(&b, "many");
    tu_buf_u32(&b, TD_META_ARRAY);
    tu_buf_u32(&b, TD_META_STRING);
    tu_buf_u64(&b, (uint64_t)GGUF_MAX_META_ITEMS + 1);
    tu_buf_zeros(&b, ((size_t)GGUF_MAX_META_ITEMS + 1) * 8);
    expect_fail(&b, TD_ELIMIT, "limit", "too many strings");
    tu_gguf_header(&b, 3, 0, 1);
    tu_gguf_str(&b, "v");
    tu_buf_u32(&b, 13);
    tu_buf_zeros(&b, 8);
    expect_fail(&b, TD_EFORMAT, "13", "value type 13");
    tu_gguf_header(&b, 3, 0, 1);
    tu_gguf_str(&b, "v");
    tu_buf_u32(&b, 999);
    tu_buf_zeros(&b, 8);
    expect_fail(&b, TD_EFORMAT, "999", "value type 999");
    tu_gguf_header(&b, 3, 0, 1);
    tu_gguf_str(&b, "v");
    tu_buf_u32(&b, TD_META_ARRAY);
    tu_buf_u32(&b, 13);
    tu_buf_u64(&b, 0);
    expect_fail(&b, TD_EFORMAT, NULL, "array element type 13");
    tu_gguf_header(&b, 3, 0, 1);
    tu_gguf_str(&b, "v");
    tu_buf_u32(&b, TD_META_BOOL);
    tu_buf_u8(&b, 2);
    tu_buf_zeros(&b, 8);
    expect_fail(&b, TD_EFORMAT, "bool", "bool 2");
    tu_gguf_header(&b, 3, 0, 1);
    tu_gguf_str(&b, "v");
    tu_buf_u32(&b, TD_META_ARRAY);
    tu_buf_u32(&b, TD_META_BOOL);
    tu_buf_u64(&b, 3);
    tu_buf_u8(&b, 0);
    tu_buf_u8(&b, 1);
    tu_buf_u8(&b, 255);
    expect_fail(&b, TD_EFORMAT, "bool", "bool array 255");
    tu_gguf_header(&b, 3, 0, 1);
    tu_gguf_str(&b, "");
    tu_buf_u32(&b, TD_META_UINT8);
    tu_buf_u8(&b, 1);
    tu_buf_zeros(&b, 8);
    expect_fail(&b, TD_EFORMAT, "empty", "empty key");
    tu_gguf_header(&b, 3, 0, 1);
    tu_buf_u64(&b, 3);
    tu_buf_put(&b, "a\0b", 3);
    tu_buf_u32(&b, TD_META_UINT8);
    tu_buf_u8(&b, 1);
    tu_buf_zeros(&b, 8);
    expect_fail(&b, TD_EFORMAT, "NUL", "NUL in key");
    tu_gguf_header(&b, 3, 0, 2);
    tu_gguf_str(&b, "dup");
    tu_buf_u32(&b, TD_META_UINT8);
    tu_buf_u8(&b, 1);
    tu_gguf_str(&b, "dup");
    tu_buf_u32(&b, TD_META_UINT16);
    tu_buf_u32(&b, 2);
    expect_fail(&b, TD_EDUP, "dup", "duplicate keys");

    /* alignment */
    static const uint32_t bad_align[] = {0, 3, 48, 1u << 31};
    static const int bad_code[] = {TD_EFORMAT, TD_EFORMAT, TD_EFORMAT, TD_ELIMIT};
    for (int i = 0; i < 4; i++) {
        tu_gguf_header(&b, 3, 1, 1);
        tu_gguf_str(&b, "general.alignment");
        tu_buf_u32(&b, TD_META_UINT32);
        tu_buf_u32(&b, bad_align[i]);
        tu_gguf_tensor(&b, "t", 1, ne1, 0, 0);
        tu_buf_zeros(&b, 64);
        expect_fail(&b, bad_code[i], "general.alignment", "bad alignment");
    }
    tu_gguf_header(&b, 3, 0, 1);
    tu_gguf_str(&b, "general.alignment");
    tu_buf_u32(&b, TD_META_UINT64);
    tu_buf_u64(&b, 32);
    expect_fail(&b, TD_EFORMAT, "uint32", "alignment as u64");

    /* tensor infos */
    tu_gguf_header(&b, 3, 1, 0);
    tu_gguf_tensor(&b, "t999", 1, ne1, 999, 0);
    tu_buf_zeros(&b, 64);
    expect_fail(&b, TD_EDTYPE, "999", "type id 999");
    tu_gguf_header(&b, 3, 1, 0);
    tu_gguf_tensor(&b, "t4", 1, ne1, 4, 0); /* Q4_2, removed */
    tu_buf_zeros(&b, 64);
    expect_fail(&b, TD_EDTYPE, "'t4'", "removed type id 4");
    tu_gguf_header(&b, 3, 1, 0);
    tu_gguf_tensor(&b, "t5", 5, (uint64_t[]){1, 1, 1, 1, 4}, 0, 0);
    tu_buf_zeros(&b, 64);
    expect_fail(&b, TD_EFORMAT, "n_dims 5", "5 dims");
    tu_gguf_header(&b, 3, 1, 0);
    tu_gguf_tensor(&b, "big", 2, (uint64_t[]){1ull << 32, 1ull << 32}, 0, 0);
    tu_buf_zeros(&b, 64);
    expect_fail(&b, TD_ERANGE, "'big'", "ne product overflows");
    tu_gguf_header(&b, 3, 1, 0);
    tu_gguf_tensor(&b, "big", 1, (uint64_t[]){1ull << 62}, 0, 0);
    tu_buf_zeros(&b, 64);
    expect_fail(&b, TD_ERANGE, "'big'", "byte size overflows");
    tu_gguf_header(&b, 3, 1, 0);
    tu_gguf_tensor(&b, "big", 4, (uint64_t[]){1ull << 20, 1ull << 20, 1ull << 20, 1ull << 4}, 1, 0);
    tu_buf_zeros(&b, 64);
    expect_fail(&b, TD_ERANGE, "'big'", "4-D product overflows");
    tu_gguf_header(&b, 3, 1, 0);
    tu_gguf_tensor(&b, "neg", 2, (uint64_t[]){4, (uint64_t)-1}, 0, 0);
    tu_buf_zeros(&b, 64);
    expect_fail(&b, TD_EFORMAT, "negative", "negative ne");
    tu_gguf_header(&b, 3, 1, 0);
    tu_gguf_tensor(&b, "q", 2, (uint64_t[]){33, 2}, 2, 0);
    tu_buf_zeros(&b, 96);
    expect_fail(&b, TD_EFORMAT, "block", "q4_0 ne[0] 33");
    tu_gguf_header(&b, 3, 1, 0);
    tu_gguf_tensor(&b, "", 1, ne1, 0, 0);
    tu_buf_zeros(&b, 64);
    expect_fail(&b, TD_EFORMAT, "empty name", "empty tensor name");
    tu_gguf_header(&b, 3, 1, 0);
    tu_buf_u64(&b, 3);
    tu_buf_put(&b, "t\0x", 3);
    tu_buf_u32(&b, 1);
    tu_buf_u64(&b, 4);
    tu_buf_u32(&b, 0);
    tu_buf_u64(&b, 0);
    tu_buf_zeros(&b, 64);
    expect_fail(&b, TD_EFORMAT, "NUL", "NUL in tensor name");
    tu_gguf_header(&b, 3, 1, 0);
    tu_buf_u64(&b, 1ull << 40);
    tu_buf_zeros(&b, 64);
    expect_fail(&b, TD_ETRUNC, "1099511627776", "tensor name length 2^40");

    /* offsets */
    tu_gguf_header(&b, 3, 1, 0);
    tu_gguf_tensor(&b, "far", 1, ne1, 0, 1ull << 40);
    tu_buf_pad(&b, 32);
    tu_buf_zeros(&b, 64);
    expect_fail(&b, TD_ETRUNC, "'far'", "offset past EOF");
    tu_gguf_header(&b, 3, 1, 0);
    tu_gguf_tensor(&b, "wrap", 1, ne1, 0, UINT64_MAX - 31);
    tu_buf_pad(&b, 32);
    tu_buf_zeros(&b, 64);
    expect_fail(&b, TD_ETRUNC, "'wrap'", "offset + size wraps");
    tu_gguf_header(&b, 3, 1, 0);
    tu_gguf_tensor(&b, "tail", 1, (uint64_t[]){16}, 0, 32);
    tu_buf_pad(&b, 32);
    tu_buf_zeros(&b, 95); /* one byte short */
    expect_fail(&b, TD_ETRUNC, "'tail'", "data one byte short");
    tu_gguf_header(&b, 3, 1, 0);
    tu_gguf_tensor(&b, "mis", 1, ne1, 0, 4);
    tu_buf_pad(&b, 32);
    tu_buf_zeros(&b, 64);
    expect_fail(&b, TD_EFORMAT, "not aligned to 32", "misaligned offset");
    tu_gguf_header(&b, 3, 2, 0);
    tu_gguf_tensor(&b, "a", 1, (uint64_t[]){16}, 0, 0); /* 64 bytes */
    tu_gguf_tensor(&b, "b", 1, (uint64_t[]){8}, 0, 32);
    tu_buf_pad(&b, 32);
    tu_buf_zeros(&b, 128);
    expect_fail(&b, TD_EFORMAT, "overlaps", "overlapping tensors");
    tu_gguf_header(&b, 3, 3, 0);
    tu_gguf_tensor(&b, "late", 1, (uint64_t[]){8}, 0, 64);
    tu_gguf_tensor(&b, "early", 1, (uint64_t[]){24}, 0, 0); /* 96 bytes: into "late" */
    tu_gguf_tensor(&b, "other", 1, (uint64_t[]){8}, 0, 128);
    tu_buf_pad(&b, 32);
    tu_buf_zeros(&b, 192);
    expect_fail(&b, TD_EFORMAT, "overlaps", "overlap out of order");
    tu_gguf_header(&b, 3, 2, 0);
    tu_gguf_tensor(&b, "same", 1, ne1, 0, 0);
    tu_gguf_tensor(&b, "same", 1, ne1, 0, 32);
    tu_buf_pad(&b, 32);
    tu_buf_zeros(&b, 64);
    expect_fail(&b, TD_EDUP, "'same'", "duplicate tensor names");
    tu_gguf_header(&b, 3, 1, 0);
    tu_gguf_tensor(&b, "t", 1, ne1, 0, 0);
    expect_fail(&b, TD_ETRUNC, NULL, "no data section");

    /* legal corner cases: version 2, empty tensors sharing an offset, tensors out of order */
    tu_gguf_header(&b, 2, 3, 0);
    tu_gguf_tensor(&b, "z", 2, (uint64_t[]){4, 0}, 0, 32);
    tu_gguf_tensor(&b, "y", 1, (uint64_t[]){8}, 0, 32);
    tu_gguf_tensor(&b, "x", 1, (uint64_t[]){8}, 0, 0);
    tu_buf_pad(&b, 32);
    tu_buf_zeros(&b, 64);
    {
        td__table t;
        td_error err = {0};
        TU_OK(index_exact(b.p, b.len, "v2.gguf", &t, &err), &err);
        ck_assert_uint_eq(t.n, 3);
        ck_assert_uint_eq(t.entries[0].nbytes, 0);
        ck_assert_uint_eq(t.entries[1].offset, t.entries[2].offset + 32);
        td__table_destroy(&t);
        free(b.p);
        memset(&b, 0, sizeof b);
    }
}
END_TEST

/* A file with everything, written by us, for the prefix test. */
static uint8_t *everything_file(size_t *len)
{
    td_meta *m = td_meta_new();
    td_error err = {0};
    uint32_t a = 64;
    uint16_t u16s[3] = {1, 2, 3};
    const char *strs[2] = {"x", "yz"};
    double d = 2.5;
    TU_OK(td_meta_set_string(m, "general.architecture", "t", 1, &err), &err);
    TU_OK(td_meta_set_scalar(m, GGUF_KEY_ALIGNMENT, TD_META_UINT32, &a, &err), &err);
    TU_OK(td_meta_set_scalar(m, "f64", TD_META_FLOAT64, &d, &err), &err);
    TU_OK(td_meta_set_array(m, "u16s", TD_META_UINT16, u16s, 3, &err), &err);
    TU_OK(td_meta_set_strings(m, "strs", strs, NULL, 2, &err), &err);
    td_value *outer = td_value_new_array(TD_META_ARRAY);
    td_value *inner = td_value_new_array(TD_META_STRING);
    TU_OK(td__value_array_push_string(inner, "in", 2, &err), &err);
    TU_OK(td_value_array_push(outer, inner, &err), &err);
    TU_OK(td_meta_set_value(m, "nested", outer, &err), &err);
    uint8_t q[2 * 144] = {0}, f[12] = {0};
    for (size_t i = 0; i < sizeof q; i++)
        q[i] = (uint8_t)i;
    td__item items[] = {{"q4k", TD_Q4_K, 2, (int64_t[]){2, 256}, q, sizeof q},
                        {"f", TD_FLOAT32, 1, (int64_t[]){3}, f, 12}};
    int rc;
    uint8_t *p = write_mem(items, 2, m, len, &rc, &err);
    TU_OK(rc, &err);
    td_meta_free(m);
    return p;
}

/* Every prefix of every valid file fails cleanly, except those that only lose the padding after
 * the last tensor, which read the same as the whole file. */
START_TEST(test_every_prefix)
{
    for (size_t f = 0; f <= N_GGUF_FILES; f++) {
        size_t len;
        uint8_t *p = f < N_GGUF_FILES ? read_testdata(gguf_files[f], &len) : everything_file(&len);
        const char *name = f < N_GGUF_FILES ? gguf_files[f] : "everything.gguf";
        td__table full, t;
        td_error err = {0};
        TU_OK(index_exact(p, len, name, &full, &err), &err);
        uint64_t end = 0;
        for (size_t i = 0; i < full.n; i++)
            if (full.entries[i].offset + full.entries[i].nbytes > end)
                end = full.entries[i].offset + full.entries[i].nbytes;
        size_t ok = 0;
        for (size_t k = 0; k < len; k++) {
            memset(&err, 0, sizeof err);
            int rc = index_exact(p, k, name, &t, &err);
            if (rc == 0) {
                ck_assert_msg(k >= end,
                              "%s: prefix of %zu bytes (data ends at %" PRIu64 ") accepted", name,
                              k, end);
                assert_same_tables(&full, p, &t, p);
                td__table_destroy(&t);
                ok++;
                continue;
            }
            ck_assert_msg(rc < 0 && err.code == rc, "%s: prefix %zu: rc %d", name, k, rc);
            ck_assert_msg(strncmp(err.message, name, strlen(name)) == 0,
                          "%s: prefix %zu: message '%s'", name, k, err.message);
            ck_assert_msg(rc == TD_ETRUNC || rc == TD_EFORMAT, "%s: prefix %zu: %s: %s", name, k,
                          td_err_name(rc), err.message);
            ck_assert(t.n == 0 && t.meta == NULL);
        }
        ck_assert_uint_eq(ok, len - end);
        td__table_destroy(&full);
        free(p);
    }
}
END_TEST

/* Random byte changes in the header of valid files never crash or leak; whatever is accepted is
 * inside the file. */
START_TEST(test_mutations)
{
    for (size_t f = 0; f <= N_GGUF_FILES; f++) {
        size_t len;
        uint8_t *p = f < N_GGUF_FILES ? read_testdata(gguf_files[f], &len) : everything_file(&len);
        td__table full;
        td_error err = {0};
        TU_OK(index_exact(p, len, "m.gguf", &full, &err), &err);
        size_t hdr = full.n ? (size_t)full.entries[0].offset : len;
        for (size_t i = 0; i < full.n; i++)
            if (full.entries[i].offset < hdr)
                hdr = (size_t)full.entries[i].offset;
        td__table_destroy(&full);
        uint8_t *q = malloc(len);
        for (int iter = 0; iter < 3000; iter++) {
            memcpy(q, p, len);
            int nflip = 1 + rnd8() % 4;
            for (int k = 0; k < nflip; k++) {
                size_t at = ((size_t)rnd8() << 8 | rnd8()) % hdr;
                q[at] = (rnd8() & 1) ? rnd8() : (uint8_t)(q[at] ^ (1u << (rnd8() % 8)));
            }
            td__table t;
            int rc = index_exact(q, len, "m.gguf", &t, &err);
            if (rc == 0) {
                for (size_t i = 0; i < t.n; i++)
                    ck_assert(t.entries[i].offset + t.entries[i].nbytes <= len);
                td__table_destroy(&t);
            } else {
                ck_assert_int_lt(rc, 0);
            }
        }
        free(q);
        free(p);
    }
}
END_TEST

/* ---------------------------------------------------------------------------------------------
 * 1 GiB of tensor data, sparse: indexing reads the header only
 */

static long resident_kb(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, res = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &size, &res) != 2)
            res = 0;
        fclose(f);
    }
    return res * (sysconf(_SC_PAGESIZE) / 1024);
}

START_TEST(test_sparse_1gib)
{
    char dir[64], path[128];
    tu_tmpdir(dir);
    snprintf(path, sizeof path, "%s/big.gguf", dir);
    /* 256 f32 tensors of 1 MiB each, then one of 768 MiB: 1 GiB of data, all holes */
    gb b = {0};
    tu_gguf_header(&b, 3, 257, 1);
    tu_gguf_str(&b, "general.architecture");
    tu_buf_u32(&b, TD_META_STRING);
    tu_gguf_str(&b, "sparse");
    uint64_t off = 0;
    for (int i = 0; i < 256; i++) {
        char name[32];
        snprintf(name, sizeof name, "blk.%d.weight", i);
        tu_gguf_tensor(&b, name, 2, (uint64_t[]){512, 512}, 0, off);
        off += 1 << 20;
    }
    tu_gguf_tensor(&b, "big", 2, (uint64_t[]){16384, 12288}, 0, off);
    off += 768ull << 20;
    ck_assert_uint_eq(off, 1ull << 30);
    tu_buf_pad(&b, 32);
    size_t hdr = b.len;
    int fds = tu_count_fds();
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, b.p, b.len), (ssize_t)b.len);
    ck_assert_int_eq(ftruncate(fd, (off_t)(hdr + off)), 0);
    free(b.p);
    struct stat st;
    ck_assert_int_eq(fstat(fd, &st), 0);
    size_t len = (size_t)st.st_size;
    uint8_t *base = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    ck_assert(base != MAP_FAILED);
    close(fd);

    long rss0 = resident_kb();
    double t0 = (tu_now_s() * 1e3);
    td__table t;
    td_error err = {0};
    td__table_init(&t, TD_FORMAT_AUTO);
    TU_OK(td__gguf_index(TD__RD_MEM(base, len, "big.gguf"), &t, &err), &err);
    double t1 = (tu_now_s() * 1e3);
    long rss1 = resident_kb();
    ck_assert_uint_eq(t.n, 257);
    ck_assert_uint_eq(t.entries[256].nbytes, 768ull << 20);
    ck_assert_uint_eq(t.entries[256].offset + t.entries[256].nbytes, len);

    /* which pages of the mapping are resident: the header's only */
    size_t pg = (size_t)sysconf(_SC_PAGESIZE), npages = (len + pg - 1) / pg;
    unsigned char *vec = malloc(npages);
    ck_assert_int_eq(mincore(base, len, vec), 0);
    size_t resident = 0, hdr_pages = (hdr + pg - 1) / pg;
    for (size_t i = 0; i < npages; i++)
        if (vec[i] & 1) {
            resident++;
            ck_assert_msg(i < hdr_pages, "data page %zu of the mapping is resident", i);
        }
    printf("test_sparse_1gib: header %zu bytes, data 1 GiB, index %.3f ms, RSS %ld -> %ld KiB "
           "(+%ld), resident mapping pages %zu of %zu\n",
           hdr, t1 - t0, rss0, rss1, rss1 - rss0, resident, npages);
    ck_assert_int_lt(rss1 - rss0, 4096); /* far below the 1 GiB a read would cost */
    ck_assert(t1 - t0 < 1000);
    free(vec);

    /* the same through td_load: views, not copies */
    td_dict *d = NULL;
    td_meta *m = NULL;
    td_load_options opt = TD_LOAD_OPTIONS_INIT;
    opt.mode = TD_MODE_EMBEDDED;
    long rss2 = resident_kb();
    double t2 = (tu_now_s() * 1e3);
    TU_OK(td_load(path, &opt, &d, &m, &err), &err);
    double t3 = (tu_now_s() * 1e3);
    long rss3 = resident_kb();
    ck_assert_uint_eq(td_dict_size(d), 257);
    const td_array *big = td_dict_get(d, "big");
    ck_assert_ptr_nonnull(big);
    td_array *own = td_array_retain(big); /* a reference of our own, to ask for writing */
    ck_assert_ptr_null(td_array_data_mut(own));
    td_array_release(own);
    ck_assert_uint_eq(td_array_nbytes(big), 768ull << 20);
    printf("test_sparse_1gib: td_load %.3f ms, RSS %ld -> %ld KiB (+%ld)\n", t3 - t2, rss2, rss3,
           rss3 - rss2);
    ck_assert_int_lt(rss3 - rss2, 8192);
    td_dict_free(d);
    td_meta_free(m);

    td__table_destroy(&t);
    munmap(base, len);
    ck_assert_int_eq(tu_count_fds(), fds);
    tu_rmtree(dir);
}
END_TEST

/* ---------------------------------------------------------------------------------------------
 * Through the public API: td_load views, td_save_gguf keeps block data bit for bit
 */

START_TEST(test_public_roundtrip)
{
    char dir[64], a[128], b[128], path[512];
    tu_tmpdir(dir);
    snprintf(a, sizeof a, "%s/model.gguf", dir);
    snprintf(b, sizeof b, "%s/copy", dir); /* ".gguf" appended */
    int fds = tu_count_fds();
    td_error err = {0};

    /* a q4_k, a q6_k and an f16 array with metadata */
    td_dict *d = td_dict_new();
    td_meta *m = td_meta_new();
    int64_t sq[2] = {3, 512}, sh[1] = {7};
    td_array *q4k, *q6k, *h;
    TU_OK(td_array_new(TD_Q4_K, 2, sq, NULL, &q4k, &err), &err);
    TU_OK(td_array_new(TD_Q6_K, 2, sq, NULL, &q6k, &err), &err);
    TU_OK(td_array_new(TD_FLOAT16, 1, sh, NULL, &h, &err), &err);
    uint8_t *w = td_array_data_mut(q4k);
    for (uint64_t i = 0; i < td_array_nbytes(q4k); i++)
        w[i] = rnd8();
    w = td_array_data_mut(q6k);
    for (uint64_t i = 0; i < td_array_nbytes(q6k); i++)
        w[i] = rnd8();
    TU_OK(td_dict_set(d, "blk.0.attn_q.weight", q4k, &err), &err);
    TU_OK(td_dict_set(d, "blk.0.ffn_down.weight", q6k, &err), &err);
    TU_OK(td_dict_set(d, "output_norm.weight", h, &err), &err);
    uint16_t u16 = 513;
    TU_OK(td_meta_set_string(m, "general.architecture", "llama", 5, &err), &err);
    TU_OK(td_meta_set_scalar(m, "x.u16", TD_META_UINT16, &u16, &err), &err);
    TU_OK(td_save_gguf(a, d, m, &err), &err);

    td_dict *d2 = NULL;
    td_meta *m2 = NULL;
    td_load_options opt = TD_LOAD_OPTIONS_INIT;
    opt.mode = TD_MODE_EMBEDDED;
    TU_OK(td_load(a, &opt, &d2, &m2, &err), &err);
    ck_assert(td__meta_equal(m, m2));
    ck_assert_uint_eq(td_dict_size(d2), 3);
    const td_array *x = td_dict_get(d2, "blk.0.attn_q.weight");
    ck_assert_int_eq(td_array_dtype(x), TD_Q4_K);
    ck_assert_int_eq(td_array_ndim(x), 2);
    ck_assert_int_eq(td_array_shape(x)[0], 3);
    ck_assert_int_eq(td_array_shape(x)[1], 512);
    ck_assert_int_eq(td_array_size(x), 3 * 512);
    ck_assert_uint_eq(td_array_nbytes(x), 3 * 2 * 144);
    td_array *own = td_array_retain(x);
    ck_assert_ptr_null(td_array_data_mut(own)); /* a view into the mapping */
    td_array_release(own);
    ck_assert(memcmp(td_array_data(x), td_array_data(q4k), td_array_nbytes(x)) == 0);
    ck_assert(memcmp(td_array_data(td_dict_get(d2, "blk.0.ffn_down.weight")), td_array_data(q6k),
                     td_array_nbytes(q6k)) == 0);

    /* convert: load and save again gives the same file */
    TU_OK(td_save_gguf(b, d2, m2, &err), &err);
    snprintf(path, sizeof path, "%s.gguf", b);
    size_t la, lb;
    uint8_t *pa = tu_read_file(a, &la), *pb = tu_read_file(path, &lb);
    ck_assert(pa && pb && la == lb && memcmp(pa, pb, la) == 0);
    free(pa);
    free(pb);

    /* a reference file through td_load and back, bit for bit */
    for (size_t f = 0; f < N_GGUF_FILES; f++) {
        td_dict *d3 = NULL;
        td_meta *m3 = NULL;
        TU_OK(td_load(tu_testdata(gguf_files[f], path, sizeof path), &opt, &d3, &m3, &err), &err);
        TU_OK(td_save_gguf(b, d3, m3, &err), &err);
        snprintf(path, sizeof path, "%s.gguf", b);
        uint8_t *pc = tu_read_file(path, &lb);
        size_t lo;
        uint8_t *po = read_testdata(gguf_files[f], &lo);
        ck_assert_msg(pc && lo == lb && memcmp(pc, po, lo) == 0, "%s: convert differs",
                      gguf_files[f]);
        free(pc);
        free(po);
        td_dict_free(d3);
        td_meta_free(m3);
    }

    /* refusals through the public API name the tensor and dtype */
    td_dict *bad = td_dict_new();
    td_array *u;
    TU_OK(td_array_new(TD_UINT32, 1, sh, NULL, &u, &err), &err);
    TU_OK(td_dict_set(bad, "counts", u, &err), &err);
    ck_assert_int_eq(td_save_gguf(b, bad, NULL, &err), TD_EDTYPE);
    ck_assert_msg(strstr(err.message, "'counts'") && strstr(err.message, "uint32"), "%s",
                  err.message);
    td_array_release(u);
    td_dict_free(bad);

    td_array_release(q4k);
    td_array_release(q6k);
    td_array_release(h);
    td_dict_free(d);
    td_dict_free(d2);
    td_meta_free(m);
    td_meta_free(m2);
    ck_assert_int_eq(tu_count_fds(), fds);
    tu_rmtree(dir);
}
END_TEST

static Suite *gguf_suite(void)
{
    Suite *s = suite_create("gguf");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_manifest);
    tcase_add_test(tc, test_manifest_u64_max);
    tcase_add_test(tc, test_rewrite_identical);
    tcase_add_test(tc, test_all_dtypes_roundtrip);
    tcase_add_test(tc, test_odd_shapes);
    tcase_add_test(tc, test_write_refusals);
    tcase_add_test(tc, test_write_alignment);
    tcase_add_test(tc, test_meta_roundtrip);
    tcase_add_test(tc, test_hostile);
    tcase_add_test(tc, test_every_prefix);
    tcase_add_test(tc, test_mutations);
    tcase_add_test(tc, test_sparse_1gib);
    tcase_add_test(tc, test_public_roundtrip);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(gguf_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

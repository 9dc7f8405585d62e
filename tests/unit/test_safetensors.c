/*
 * test_safetensors.c - td__st_index / td__st_write against the reference files in MANIFEST.json,
 * round trips for every dtype (checked by an independent Python reader too), and hostile inputs:
 * every truncation, bad header lengths, malformed JSON and entries, offsets that overlap, leave
 * gaps or run past the end, overflowing shapes, duplicates, unknown dtypes, bad metadata, and
 * random corruption. Then the same through td_load / td_save_safetensors.
 */
#include "common.h"
#include "dtype.h"
#include "meta_internal.h"
#include "safetensors.h"
#include "testutil.h"

#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FN "t.safetensors"

/* 8-byte length + hdr + data_len bytes (0xab); malloc'd to its exact size, so that ASan sees
 * any read past the end. */
static uint8_t *mk(const char *hdr, size_t hdr_len, size_t data_len, size_t *len)
{
    *len = 8 + hdr_len + data_len;
    uint8_t *p = malloc(*len ? *len : 1);
    ck_assert_ptr_nonnull(p);
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)((uint64_t)hdr_len >> (8 * i));
    memcpy(p + 8, hdr, hdr_len);
    memset(p + 8 + hdr_len, 0xab, data_len);
    return p;
}

/* td__st_index on a fresh table; the table is destroyed before returning, n gets the count. */
static int run_index(const uint8_t *p, size_t len, td_error *err, size_t *n)
{
    td__table t;
    td__table_init(&t, TD_FORMAT_SAFETENSORS);
    memset(err, 0, sizeof *err);
    int rc = td__st_index(TD__RD_MEM(p, len, FN), &t, err);
    if (n)
        *n = t.n;
    if (!rc) {
        ck_assert_ptr_nonnull(t.meta);
        for (size_t i = 0; i < t.n; i++) /* every view inside the file */
            ck_assert(t.entries[i].offset <= len &&
                      len - t.entries[i].offset >= t.entries[i].nbytes);
    }
    td__table_destroy(&t);
    return rc;
}

/* Expects hdr + data_len to fail with code, and the message to hold the file name and the
 * needles (NULL: none). */
static void expect_fail_at(int line, const char *hdr, size_t data_len, int code, const char *n1,
                           const char *n2)
{
    size_t len;
    uint8_t *p = mk(hdr, strlen(hdr), data_len, &len);
    td_error err;
    int rc = run_index(p, len, &err, NULL);
    free(p);
    ck_assert_msg(rc == code, "line %d: %s: got %s (%s), want %s", line, hdr, td_err_name(rc),
                  err.message, td_err_name(code));
    ck_assert_int_eq(err.code, code);
    ck_assert_msg(strstr(err.message, FN), "line %d: no file name in: %s", line, err.message);
    ck_assert_msg(!n1 || strstr(err.message, n1), "line %d: no '%s' in: %s", line, n1, err.message);
    ck_assert_msg(!n2 || strstr(err.message, n2), "line %d: no '%s' in: %s", line, n2, err.message);
}
#define EXPECT_FAIL(hdr, dl, code, n1, n2) expect_fail_at(__LINE__, hdr, dl, code, n1, n2)

static void expect_ok_at(int line, const char *hdr, size_t data_len, size_t ntensors)
{
    size_t len, n;
    uint8_t *p = mk(hdr, strlen(hdr), data_len, &len);
    td_error err;
    int rc = run_index(p, len, &err, &n);
    free(p);
    ck_assert_msg(rc == 0, "line %d: %s: %s", line, hdr, err.message);
    ck_assert_uint_eq(n, ntensors);
}
#define EXPECT_OK(hdr, dl, n) expect_ok_at(__LINE__, hdr, dl, n)

/* ---------------------------------------------------------------------------------------------
 * The reference files
 */

static json_t *load_manifest(void)
{
    char path[4096];
    json_error_t je;
    /* the manifest has uint64 values above INT64_MAX (gguf metadata): read numbers as doubles;
     * every size and offset used here is far below 2^53 */
    json_t *m = json_load_file(tu_testdata("MANIFEST.json", path, sizeof path),
                               JSON_DECODE_INT_AS_REAL, &je);
    ck_assert_msg(m != NULL, "MANIFEST.json: %s", je.text);
    return m;
}

static uint64_t jnum(const json_t *v)
{
    ck_assert_msg(json_is_number(v), "manifest: expected a number");
    return (uint64_t)json_number_value(v);
}

START_TEST(test_manifest_files)
{
    json_t *man = load_manifest();
    const char *rel;
    json_t *f;
    int files = 0, tensors = 0;
    json_object_foreach(json_object_get(man, "files"), rel, f)
    {
        if (strcmp(json_string_value(json_object_get(f, "format")), "safetensors") != 0)
            continue;
        char path[4096], hex[65];
        size_t len;
        uint8_t *buf = tu_read_file(tu_testdata(rel, path, sizeof path), &len);
        ck_assert_msg(buf != NULL, "cannot read %s", path);
        ck_assert_uint_eq(len, jnum(json_object_get(f, "size")));
        tu_sha256_hex(buf, len, hex);
        ck_assert_str_eq(hex, json_string_value(json_object_get(f, "sha256")));
        uint64_t hlen = jnum(json_object_get(f, "header_len"));

        td__table t;
        td_error err = {0};
        td__table_init(&t, TD_FORMAT_SAFETENSORS);
        TU_OK(td__st_index(TD__RD_MEM(buf, len, rel), &t, &err), &err);
        json_t *jt = json_object_get(f, "tensors");
        ck_assert_uint_eq(t.n, json_array_size(jt));
        for (size_t i = 0; i < t.n; i++) {
            const td__entry *e = &t.entries[i];
            json_t *x = json_array_get(jt, i);
            ck_assert_str_eq(e->name, json_string_value(json_object_get(x, "name")));
            ck_assert_str_eq(td_dtype_name(e->dtype),
                             json_string_value(json_object_get(x, "dtype")));
            ck_assert_str_eq(td__dtype_st_name(e->dtype),
                             json_string_value(json_object_get(x, "format_dtype")));
            json_t *shape = json_object_get(x, "shape");
            ck_assert_uint_eq(e->ndim, json_array_size(shape));
            for (uint32_t d = 0; d < e->ndim; d++)
                ck_assert_int_eq(e->shape[d], (int64_t)jnum(json_array_get(shape, d)));
            ck_assert_uint_eq(e->offset, jnum(json_object_get(x, "offset")));
            ck_assert_uint_eq(e->nbytes, jnum(json_object_get(x, "nbytes")));
            json_t *offs = json_object_get(x, "data_offsets");
            ck_assert_uint_eq(e->offset - 8 - hlen, jnum(json_array_get(offs, 0)));
            ck_assert_uint_eq(e->offset - 8 - hlen + e->nbytes, jnum(json_array_get(offs, 1)));
            ck_assert_uint_eq(e->region, 0);
            ck_assert_uint_eq(e->layout, 0);
            tu_sha256_hex(buf + e->offset, e->nbytes, hex);
            ck_assert_str_eq(hex, json_string_value(json_object_get(x, "sha256")));
            tensors++;
        }
        /* data order: the offsets of the names data_order lists never decrease */
        json_t *order = json_object_get(f, "data_order");
        uint64_t last = 0;
        for (size_t k = 0; k < json_array_size(order); k++) {
            const char *want = json_string_value(json_array_get(order, k));
            size_t i = 0;
            while (i < t.n && strcmp(t.entries[i].name, want) != 0)
                i++;
            ck_assert_uint_lt(i, t.n);
            ck_assert_uint_ge(t.entries[i].offset, last);
            last = t.entries[i].offset;
        }
        /* metadata, in order, byte for byte */
        json_t *md = json_object_get(f, "metadata");
        ck_assert_ptr_nonnull(t.meta);
        if (json_is_null(md)) {
            ck_assert_uint_eq(td_meta_size(t.meta), 0);
        } else {
            ck_assert_uint_eq(td_meta_size(t.meta), json_object_size(md));
            const char *k;
            json_t *v;
            size_t i = 0;
            json_object_foreach(md, k, v)
            {
                const char *key;
                const td_value *tv = td_meta_at(t.meta, i++, &key);
                ck_assert_str_eq(key, k);
                size_t sl;
                const char *s = td_value_string(tv, &sl);
                ck_assert_ptr_nonnull(s);
                ck_assert_uint_eq(sl, json_string_length(v));
                ck_assert(memcmp(s, json_string_value(v), sl) == 0);
            }
        }
        td__table_destroy(&t);
        free(buf);
        files++;
    }
    ck_assert_int_eq(files, 7);
    ck_assert_int_ge(tensors, 20);
    json_decref(man);
}
END_TEST

/* data_order.safetensors: header order alpha beta gamma delta, data order delta gamma alpha
 * beta. The table keeps header order; the offsets follow the data order. */
START_TEST(test_header_order_kept)
{
    char path[4096];
    size_t len;
    uint8_t *buf =
        tu_read_file(tu_testdata("safetensors/data_order.safetensors", path, sizeof path), &len);
    ck_assert_ptr_nonnull(buf);
    td__table t;
    td_error err = {0};
    td__table_init(&t, TD_FORMAT_SAFETENSORS);
    TU_OK(td__st_index(TD__RD_MEM(buf, len, "data_order"), &t, &err), &err);
    ck_assert_uint_eq(t.n, 4);
    ck_assert_str_eq(t.entries[0].name, "alpha");
    ck_assert_str_eq(t.entries[1].name, "beta");
    ck_assert_str_eq(t.entries[2].name, "gamma");
    ck_assert_str_eq(t.entries[3].name, "delta");
    ck_assert(t.entries[3].offset < t.entries[2].offset);
    ck_assert(t.entries[2].offset < t.entries[0].offset);
    ck_assert(t.entries[0].offset < t.entries[1].offset);
    td__table_destroy(&t);
    free(buf);
}
END_TEST

/* Every proper prefix of every reference file is refused as truncated. */
START_TEST(test_every_truncation)
{
    json_t *man = load_manifest();
    const char *rel;
    json_t *f;
    size_t cases = 0;
    json_object_foreach(json_object_get(man, "files"), rel, f)
    {
        if (strcmp(json_string_value(json_object_get(f, "format")), "safetensors") != 0)
            continue;
        char path[4096];
        size_t len;
        uint8_t *buf = tu_read_file(tu_testdata(rel, path, sizeof path), &len);
        ck_assert_ptr_nonnull(buf);
        for (size_t k = 0; k < len; k++) {
            uint8_t *p = malloc(k ? k : 1);
            memcpy(p, buf, k);
            td_error err;
            int rc = run_index(p, k, &err, NULL);
            free(p);
            ck_assert_msg(rc == TD_ETRUNC, "%s cut at %zu: %s (%s)", rel, k, td_err_name(rc),
                          err.message);
            cases++;
        }
        free(buf);
    }
    ck_assert_uint_gt(cases, 2000);
    json_decref(man);
}
END_TEST

/* ---------------------------------------------------------------------------------------------
 * Hostile headers
 */

START_TEST(test_header_length)
{
    td_error err;
    uint8_t small[8] = {0};
    /* shorter than the length field */
    ck_assert_int_eq(run_index(small, 0, &err, NULL), TD_ETRUNC);
    ck_assert_int_eq(run_index(small, 7, &err, NULL), TD_ETRUNC);
    ck_assert_ptr_nonnull(strstr(err.message, "header length"));
    /* huge lengths */
    static const uint64_t huge[] = {UINT64_MAX, (uint64_t)1 << 63, 100000001, 1ull << 32};
    for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
        uint8_t p[16] = "........{}      ";
        td__put64(p, huge[i]);
        ck_assert_int_eq(run_index(p, sizeof p, &err, NULL), TD_ELIMIT);
        ck_assert_ptr_nonnull(strstr(err.message, "exceeds"));
    }
    /* at the limit but past the end of the file */
    uint8_t p[16] = "........{}      ";
    td__put64(p, 100000000);
    ck_assert_int_eq(run_index(p, sizeof p, &err, NULL), TD_ETRUNC);
    td__put64(p, 9);
    ck_assert_int_eq(run_index(p, sizeof p, &err, NULL), TD_ETRUNC);
    ck_assert_ptr_nonnull(strstr(err.message, "9 bytes"));
    td__put64(p, 8); /* "{}      " exactly: valid, no tensors */
    ck_assert_int_eq(run_index(p, sizeof p, &err, NULL), 0);
    td__put64(p, 0); /* empty header */
    ck_assert_int_eq(run_index(p, 8, &err, NULL), TD_EFORMAT);
    ck_assert_ptr_nonnull(strstr(err.message, "'{'"));
    ck_assert_int_eq(run_index(p, sizeof p, &err, NULL), TD_EFORMAT);
}
END_TEST

START_TEST(test_header_json)
{
    EXPECT_OK("{}", 0, 0);
    EXPECT_OK("{}        ", 0, 0); /* space padding */
    EXPECT_OK("{}\n\t\r ", 0, 0);  /* any JSON whitespace */
    EXPECT_FAIL(" {}", 0, TD_EFORMAT, "'{'", NULL);
    EXPECT_FAIL("[{}]", 0, TD_EFORMAT, "'{'", NULL);
    EXPECT_FAIL("\"{}\"", 0, TD_EFORMAT, "'{'", NULL);
    EXPECT_FAIL("{", 0, TD_EFORMAT, "JSON", NULL);
    EXPECT_FAIL("{}x", 0, TD_EFORMAT, "JSON", NULL);
    EXPECT_FAIL("{} {}", 0, TD_EFORMAT, "JSON", NULL);
    EXPECT_FAIL("{\"a\":1,}", 0, TD_EFORMAT, "JSON", NULL);
    /* NUL padding is not JSON whitespace */
    size_t len;
    uint8_t *p = mk("{}\0\0\0\0\0\0", 8, 0, &len);
    td_error err;
    ck_assert_int_eq(run_index(p, len, &err, NULL), TD_EFORMAT);
    free(p);
    /* invalid UTF-8 in a name */
    EXPECT_FAIL("{\"\xff\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, TD_EFORMAT,
                "JSON", NULL);
    /* no data but bytes after the header */
    EXPECT_FAIL("{}", 3, TD_EFORMAT, "[0, 3)", "no tensor");
}
END_TEST

START_TEST(test_entries)
{
    /* the smallest valid entry, then each way to break it */
    EXPECT_OK("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2, 1);
    EXPECT_OK("{\"a\":{\"data_offsets\":[0,2],\"shape\":[2],\"dtype\":\"U8\"}}", 2, 1);
    EXPECT_FAIL("{\"a\":1}", 0, TD_EFORMAT, "tensor 'a'", "not an object");
    EXPECT_FAIL("{\"a\":[]}", 0, TD_EFORMAT, "tensor 'a'", "not an object");
    EXPECT_FAIL("{\"a\":null}", 0, TD_EFORMAT, "tensor 'a'", "not an object");
    EXPECT_FAIL("{\"a\":{\"shape\":[2],\"data_offsets\":[0,2]}}", 2, TD_EFORMAT, "dtype",
                "missing");
    EXPECT_FAIL("{\"a\":{\"dtype\":\"U8\",\"data_offsets\":[0,2]}}", 2, TD_EFORMAT, "shape",
                "missing");
    EXPECT_FAIL("{\"a\":{\"dtype\":\"U8\",\"shape\":[2]}}", 2, TD_EFORMAT, "data_offsets",
                "missing");
    EXPECT_FAIL("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2],\"extra\":1}}", 2,
                TD_EFORMAT, "unknown field 'extra'", "tensor 'a'");
    EXPECT_FAIL("{\"a\":{\"dtype\":8,\"shape\":[2],\"data_offsets\":[0,2]}}", 2, TD_EFORMAT,
                "dtype", "not a string");
    EXPECT_FAIL("{\"a\":{\"dtype\":\"U8\",\"shape\":2,\"data_offsets\":[0,2]}}", 2, TD_EFORMAT,
                "shape", "not an array");
    EXPECT_FAIL("{\"a\":{\"dtype\":\"U8\",\"shape\":[2.0],\"data_offsets\":[0,2]}}", 2, TD_EFORMAT,
                "shape[0]", "not an integer");
    EXPECT_FAIL("{\"a\":{\"dtype\":\"U8\",\"shape\":[1,\"2\"],\"data_offsets\":[0,2]}}", 2,
                TD_EFORMAT, "shape[1]", "not an integer");
    EXPECT_FAIL("{\"a\":{\"dtype\":\"U8\",\"shape\":[true],\"data_offsets\":[0,1]}}", 1, TD_EFORMAT,
                "shape[0]", NULL);
    EXPECT_FAIL("{\"a\":{\"dtype\":\"U8\",\"shape\":[-2],\"data_offsets\":[0,2]}}", 2, TD_EFORMAT,
                "shape[0]", "-2 is negative");
    EXPECT_FAIL("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":{}}}", 2, TD_EFORMAT,
                "data_offsets", "[begin, end]");
    EXPECT_FAIL("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0]}}", 2, TD_EFORMAT,
                "data_offsets", "[begin, end]");
    EXPECT_FAIL("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2,4]}}", 2, TD_EFORMAT,
                "data_offsets", "[begin, end]");
    EXPECT_FAIL("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[-1,1]}}", 2, TD_EFORMAT,
                "data_offsets[0]", "-1 is negative");
    EXPECT_FAIL("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,\"2\"]}}", 2,
                TD_EFORMAT, "data_offsets[1]", "not an integer");
    EXPECT_FAIL("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2.5]}}", 2, TD_EFORMAT,
                "data_offsets[1]", "not an integer");
    EXPECT_FAIL("{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[2,0]}}", 2, TD_EFORMAT,
                "[2, 0)", "ends before it begins");
    EXPECT_FAIL("{\"\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2, TD_EFORMAT,
                "empty name", NULL);
    /* a name with NUL is refused by the JSON parser */
    EXPECT_FAIL("{\"a\\u0000b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2,
                TD_EFORMAT, "NUL", NULL);
}
END_TEST

START_TEST(test_dtypes_and_shapes)
{
    /* every safetensors dtype name is accepted, and sizes follow the item size */
    static const struct {
        const char *name;
        size_t size;
    } dt[] = {{"BOOL", 1}, {"U8", 1},  {"I8", 1},      {"U16", 2},    {"I16", 2}, {"F16", 2},
              {"BF16", 2}, {"U32", 4}, {"I32", 4},     {"F32", 4},    {"U64", 8}, {"I64", 8},
              {"F64", 8},  {"C64", 8}, {"F8_E4M3", 1}, {"F8_E5M2", 1}};
    for (size_t i = 0; i < sizeof dt / sizeof dt[0]; i++) {
        char h[256];
        snprintf(h, sizeof h, "{\"x\":{\"dtype\":\"%s\",\"shape\":[3,2],\"data_offsets\":[0,%zu]}}",
                 dt[i].name, 6 * dt[i].size);
        EXPECT_OK(h, 6 * dt[i].size, 1);
        /* one element short */
        snprintf(h, sizeof h, "{\"x\":{\"dtype\":\"%s\",\"shape\":[3,2],\"data_offsets\":[0,%zu]}}",
                 dt[i].name, 5 * dt[i].size);
        EXPECT_FAIL(h, 5 * dt[i].size, TD_EFORMAT, "tensor 'x'", "needs");
    }
    EXPECT_FAIL("{\"w\":{\"dtype\":\"Q4_0\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2, TD_EDTYPE,
                "unknown dtype 'Q4_0'", "tensor 'w'");
    EXPECT_FAIL("{\"w\":{\"dtype\":\"f32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, TD_EDTYPE,
                "'f32'", NULL);
    EXPECT_FAIL("{\"w\":{\"dtype\":\"C128\",\"shape\":[1],\"data_offsets\":[0,16]}}", 16, TD_EDTYPE,
                "'C128'", NULL);
    EXPECT_FAIL("{\"w\":{\"dtype\":\"\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, TD_EDTYPE,
                "dtype", NULL);
    EXPECT_FAIL("{\"w\":{\"dtype\":\"U8\\u0000\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
                TD_EDTYPE, "dtype", NULL);
    /* scalars and empty tensors */
    EXPECT_OK("{\"s\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[0,8]}}", 8, 1);
    EXPECT_OK("{\"e\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[0,0]}}", 0, 1);
    EXPECT_OK("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
              "\"e\":{\"dtype\":\"F32\",\"shape\":[4,0],\"data_offsets\":[2,2]}}",
              2, 2);
    /* overflowing products: refused by checked arithmetic, before any size comparison */
    EXPECT_FAIL(
        "{\"o\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}", 0,
        TD_ERANGE, "tensor 'o'", "overflow");
    EXPECT_FAIL(
        "{\"o\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,0]}}", 0,
        TD_ERANGE, "tensor 'o'", "shape");
    EXPECT_FAIL(
        "{\"o\":{\"dtype\":\"U8\",\"shape\":[9223372036854775807,2,0],\"data_offsets\":[0,0]}}", 0,
        TD_ERANGE, "tensor 'o'", NULL);
    /* an integer JSON cannot hold in 64 bits */
    EXPECT_FAIL(
        "{\"o\":{\"dtype\":\"U8\",\"shape\":[18446744073709551616],\"data_offsets\":[0,0]}}", 0,
        TD_EFORMAT, "JSON", NULL);
    /* too many dimensions */
    char h[512] = "{\"d\":{\"dtype\":\"U8\",\"shape\":[1";
    for (int i = 1; i < TD_MAX_DIMS + 1; i++)
        strcat(h, ",1");
    strcat(h, "],\"data_offsets\":[0,1]}}");
    EXPECT_FAIL(h, 1, TD_ELIMIT, "tensor 'd'", "33 dimensions");
    /* exactly TD_MAX_DIMS is fine */
    strcpy(h, "{\"d\":{\"dtype\":\"U8\",\"shape\":[1");
    for (int i = 1; i < TD_MAX_DIMS; i++)
        strcat(h, ",1");
    strcat(h, "],\"data_offsets\":[0,1]}}");
    EXPECT_OK(h, 1, 1);
}
END_TEST

START_TEST(test_offsets)
{
    /* overlapping: b starts inside a */
    EXPECT_FAIL("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                "\"b\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[4,16]}}",
                16, TD_EFORMAT, "tensor 'b': data_offsets: [4, 16) overlaps tensor 'a'", NULL);
    /* the same, listed the other way round: still names the later range */
    EXPECT_FAIL("{\"b\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[4,16]},"
                "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                16, TD_EFORMAT, "tensor 'b'", "overlaps tensor 'a'");
    /* identical ranges */
    EXPECT_FAIL("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
                "\"b\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}",
                8, TD_EFORMAT, "overlaps", NULL);
    /* one range inside another */
    EXPECT_FAIL("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
                "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]}}",
                8, TD_EFORMAT, "tensor 'b'", "overlaps tensor 'a'");
    /* an empty tensor inside another one (the Rust reference refuses it too) */
    EXPECT_FAIL("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
                "\"e\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,4]}}",
                8, TD_EFORMAT, "tensor 'e'", "overlaps tensor 'a'");
    /* empty tensors at a boundary are fine */
    EXPECT_OK("{\"e0\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]},"
              "\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
              "\"e1\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[8,8]},"
              "\"e2\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[8,8]}}",
              8, 4);
    /* gaps: at the start, in the middle */
    EXPECT_FAIL("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}", 8, TD_EFORMAT,
                "tensor 'a'", "bytes [0, 4)");
    EXPECT_FAIL("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[6,10]}}",
                10, TD_EFORMAT, "tensor 'b'", "gap");
    /* the data buffer is longer than the tensors */
    EXPECT_FAIL("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 5, TD_EFORMAT,
                "bytes [4, 5)", "no tensor");
    /* past the end of the data */
    EXPECT_FAIL("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 3, TD_ETRUNC,
                "tensor 'a'", "past the end");
    EXPECT_FAIL("{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[9,9]}}", 3, TD_ETRUNC,
                "tensor 'a'", "[9, 9)");
    EXPECT_FAIL("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],"
                "\"data_offsets\":[9223372036854775806,9223372036854775808]}}",
                3, TD_EFORMAT, "JSON", NULL);
    EXPECT_FAIL("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],"
                "\"data_offsets\":[9223372036854775805,9223372036854775807]}}",
                3, TD_ETRUNC, "tensor 'a'", NULL);
}
END_TEST

START_TEST(test_duplicates)
{
    EXPECT_FAIL("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
                2, TD_EDUP, "duplicate", "\"a\"");
    EXPECT_FAIL("{\"a\":{\"dtype\":\"U8\",\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
                1, TD_EDUP, "duplicate", "dtype");
    EXPECT_FAIL("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, TD_EDUP, "duplicate", NULL);
    EXPECT_FAIL("{\"__metadata__\":{},\"__metadata__\":{}}", 0, TD_EDUP, "duplicate", NULL);
}
END_TEST

START_TEST(test_metadata)
{
    size_t len;
    const char *h = "{\"x\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                    "\"__metadata__\":{\"b\":\"2\",\"a\":\"x\\u0000y\",\"e\":\"\"}}";
    uint8_t *p = mk(h, strlen(h), 1, &len);
    td__table t;
    td_error err = {0};
    td__table_init(&t, TD_FORMAT_SAFETENSORS);
    TU_OK(td__st_index(TD__RD_MEM(p, len, FN), &t, &err), &err);
    ck_assert_uint_eq(t.n, 1);
    ck_assert_uint_eq(td_meta_size(t.meta), 3);
    const char *k;
    td_meta_at(t.meta, 0, &k);
    ck_assert_str_eq(k, "b"); /* header order, not sorted */
    size_t sl;
    const char *s = td_value_string(td_meta_get(t.meta, "a"), &sl);
    ck_assert_uint_eq(sl, 3);
    ck_assert(memcmp(s, "x\0y", 3) == 0);
    td__table_destroy(&t);
    free(p);

    EXPECT_FAIL("{\"__metadata__\":{\"k\":1}}", 0, TD_EFORMAT, "__metadata__", "'k'");
    EXPECT_FAIL("{\"__metadata__\":{\"ok\":\"v\",\"n\":null}}", 0, TD_EFORMAT, "'n'",
                "not a string");
    EXPECT_FAIL("{\"__metadata__\":{\"o\":{\"x\":\"y\"}}}", 0, TD_EFORMAT, "'o'", "an object");
    EXPECT_FAIL("{\"__metadata__\":{\"l\":[\"y\"]}}", 0, TD_EFORMAT, "'l'", "an array");
    EXPECT_FAIL("{\"__metadata__\":[]}", 0, TD_EFORMAT, "__metadata__", "object of strings");
    EXPECT_FAIL("{\"__metadata__\":\"x\"}", 0, TD_EFORMAT, "__metadata__", NULL);
    EXPECT_FAIL("{\"__metadata__\":{\"\":\"x\"}}", 0, TD_EFORMAT, "__metadata__", "empty key");
}
END_TEST

/* Random corruption of the reference files: never a crash or a view outside the file, and
 * every failure has a message with the file name. */
START_TEST(test_random_corruption)
{
    static const char *const files[] = {
        "safetensors/with_metadata.safetensors", "safetensors/scalar_and_empty.safetensors",
        "safetensors/data_order.safetensors", "safetensors/dtypes_unsigned_bool.safetensors"};
    uint64_t s = 0x9e3779b97f4a7c15ull;
    size_t ok = 0, bad = 0;
    for (size_t fi = 0; fi < sizeof files / sizeof files[0]; fi++) {
        char path[4096];
        size_t len;
        uint8_t *buf = tu_read_file(tu_testdata(files[fi], path, sizeof path), &len);
        ck_assert_ptr_nonnull(buf);
        uint64_t hl = td__le64(buf);
        uint8_t *p = malloc(len);
        for (int round = 0; round < 3000; round++) {
            memcpy(p, buf, len);
            int flips = 1 + round % 3;
            for (int k = 0; k < flips; k++) {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                size_t at = (size_t)(s % (8 + hl)); /* the length and the header */
                static const uint8_t bytes[] = {'0', '9', '[', ']', '{',  '}', ',', ':',
                                                '"', '-', ' ', 0,   0xff, 'e', '.', '\\'};
                p[at] = (s >> 32) & 1 ? bytes[(s >> 40) % sizeof bytes] : (uint8_t)(s >> 48);
            }
            td_error err;
            int rc = run_index(p, len, &err, NULL); /* checks views when it succeeds */
            if (rc) {
                ck_assert_int_lt(rc, 0);
                ck_assert_ptr_nonnull(strstr(err.message, FN));
                bad++;
            } else {
                ok++;
            }
        }
        free(p);
        free(buf);
    }
    fprintf(stderr, "test_safetensors: corruption: %zu refused, %zu still valid\n", bad, ok);
    ck_assert_uint_gt(bad, 1000);
}
END_TEST

/* ---------------------------------------------------------------------------------------------
 * Writing
 */

/* Fills n bytes with the pattern the Python checker recomputes: byte j of tensor i. */
static void pattern(uint8_t *p, size_t n, size_t i)
{
    for (size_t j = 0; j < n; j++)
        p[j] = (uint8_t)(i * 31 + j * 7 + (j >> 8));
}

typedef struct tu_set {
    td__item items[32];
    uint8_t *bufs[32];
    int64_t shapes[32][3];
    char names[32][48];
    size_t n;
} tu_set;

/* One tensor of every safetensors dtype, with shapes that make odd byte counts, plus a scalar
 * and an empty tensor; declared in an order that mixes item sizes. */
static void make_set(tu_set *s)
{
    memset(s, 0, sizeof *s);
    for (int d = 0; d < TD_DTYPE_COUNT; d++) {
        if (!td__dtype_st_name((td_dtype)d))
            continue;
        size_t i = s->n++;
        snprintf(s->names[i], sizeof s->names[i], "t%zu.%s \"q\"\\/\xc2\xb5", i,
                 td_dtype_name((td_dtype)d));
        s->shapes[i][0] = 3;
        s->shapes[i][1] = (int64_t)(1 + i % 5);
        td__item *it = &s->items[i];
        it->name = s->names[i];
        it->dtype = (td_dtype)d;
        it->ndim = 2;
        it->shape = s->shapes[i];
        it->nbytes = (uint64_t)(3 * (1 + i % 5)) * td_dtype_size((td_dtype)d);
        s->bufs[i] = malloc(it->nbytes);
        pattern(s->bufs[i], it->nbytes, i);
        it->data = s->bufs[i];
    }
    size_t i = s->n++;
    snprintf(s->names[i], sizeof s->names[i], "scalar");
    s->items[i] = (td__item){s->names[i], TD_FLOAT64, 0, NULL, NULL, 8};
    s->bufs[i] = malloc(8);
    pattern(s->bufs[i], 8, i);
    s->items[i].data = s->bufs[i];
    i = s->n++;
    snprintf(s->names[i], sizeof s->names[i], "empty");
    s->shapes[i][0] = 0;
    s->shapes[i][1] = 5;
    s->items[i] = (td__item){s->names[i], TD_INT32, 2, s->shapes[i], NULL, 0};
}

static void free_set(tu_set *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->bufs[i]);
}

static td_meta *make_meta(void)
{
    td_meta *m = td_meta_new();
    td_error err = {0};
    TU_OK(td_meta_set_string(m, "format", "pt", 2, &err), &err);
    TU_OK(td_meta_set_string(m, "empty", "", 0, &err), &err);
    static const char esc[] = "q\" b\\ t\t n\n c\x01 nul\0!";
    static const char uni[] = "\xc2\xb5-\xce\xa9 \xf0\x9f\x98\x80";
    TU_OK(td_meta_set_string(m, "esc", esc, sizeof esc - 1, &err), &err);
    TU_OK(td_meta_set_string(m, "uni \xe2\x98\x85", uni, sizeof uni - 1, &err), &err);
    return m;
}

/* Writes the set to memory and returns the bytes. */
static uint8_t *write_mem(const td__item *items, size_t n, const td_meta *meta, size_t *len,
                          td_error *err, int *rc)
{
    td__writer w;
    ck_assert_int_eq(td__writer_init(&w, -1, FN, err), 0);
    *rc = td__st_write(&w, items, n, meta, FN, err);
    uint8_t *p = td__writer_take(&w, len);
    td__writer_destroy(&w);
    return p;
}

START_TEST(test_write_round_trip)
{
    tu_set s;
    make_set(&s);
    ck_assert_uint_eq(s.n, 18); /* 16 safetensors dtypes + scalar + empty */
    td_meta *meta = make_meta();
    td_error err = {0};
    size_t len;
    int rc;
    uint8_t *p = write_mem(s.items, s.n, meta, &len, &err, &rc);
    TU_OK(rc, &err);
    uint64_t hl = td__le64(p);
    ck_assert_uint_eq((8 + hl) % 8, 0);
    ck_assert_int_eq(p[8], '{');
    ck_assert_ptr_nonnull(memmem(p + 8, hl, "{\"__metadata__\":{\"format\":\"pt\"", 30));
    /* raw UTF-8, not \u escapes */
    ck_assert_ptr_nonnull(memmem(p + 8, hl, "\xc2\xb5", 2));

    td__table t;
    td__table_init(&t, TD_FORMAT_SAFETENSORS);
    TU_OK(td__st_index(TD__RD_MEM(p, len, FN), &t, &err), &err);
    ck_assert_uint_eq(t.n, s.n);
    for (size_t i = 0; i < s.n; i++) {
        const td__entry *e = &t.entries[i];
        const td__item *it = &s.items[i];
        ck_assert_str_eq(e->name, it->name); /* header order = the given order */
        ck_assert_int_eq(e->dtype, it->dtype);
        ck_assert_uint_eq(e->ndim, (uint32_t)it->ndim);
        for (int d = 0; d < it->ndim; d++)
            ck_assert_int_eq(e->shape[d], it->shape[d]);
        ck_assert_uint_eq(e->nbytes, it->nbytes);
        ck_assert_uint_eq(e->offset % td_dtype_size(e->dtype), 0); /* aligned in the file */
        ck_assert(it->nbytes == 0 || memcmp(p + e->offset, it->data, it->nbytes) == 0);
    }
    ck_assert(td__meta_equal(t.meta, meta));
    td__table_destroy(&t);

    /* the bytes do not depend on anything but the input */
    size_t len2;
    uint8_t *p2 = write_mem(s.items, s.n, meta, &len2, &err, &rc);
    TU_OK(rc, &err);
    ck_assert(len2 == len && memcmp(p, p2, len) == 0);
    free(p2);

    /* no metadata, and an empty meta, both write no __metadata__ */
    td_meta *empty = td_meta_new();
    p2 = write_mem(s.items, 1, empty, &len2, &err, &rc);
    TU_OK(rc, &err);
    ck_assert_ptr_null(memmem(p2, len2, "__metadata__", 12));
    free(p2);
    p2 = write_mem(s.items, 1, NULL, &len2, &err, &rc);
    TU_OK(rc, &err);
    ck_assert_ptr_null(memmem(p2, len2, "__metadata__", 12));
    free(p2);
    /* nothing at all: a valid file with no tensors */
    p2 = write_mem(NULL, 0, NULL, &len2, &err, &rc);
    TU_OK(rc, &err);
    ck_assert_uint_eq(len2, 16);
    ck_assert(memcmp(p2 + 8, "{}      ", 8) == 0);
    size_t nt;
    ck_assert_int_eq(run_index(p2, len2, &err, &nt), 0);
    ck_assert_uint_eq(nt, 0);
    free(p2);
    td_meta_free(empty);
    td_meta_free(meta);
    free(p);
    free_set(&s);
}
END_TEST

/* The file our writer makes, read by an independent reader written in Python from the spec. */

START_TEST(test_write_python_reader)
{
    tu_set s;
    make_set(&s);
    td_meta *meta = make_meta();
    char dir[64], path[128];
    tu_tmpdir(dir);
    snprintf(path, sizeof path, "%s/x.safetensors", dir);
    int fds = tu_count_fds();
    td_error err = {0};
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ck_assert_int_ge(fd, 0);
    td__writer w;
    TU_OK(td__writer_init(&w, fd, path, &err), &err);
    TU_OK(td__st_write(&w, s.items, s.n, meta, path, &err), &err);
    TU_OK(td__writer_flush(&w), &err);
    td__writer_destroy(&w);
    close(fd);
    ck_assert_int_eq(tu_count_fds(), fds);

    /* the expectation, as JSON for the script */
    json_t *want = json_object(), *names = json_array(), *dtypes = json_array(),
           *shapes = json_array(), *jm = json_object();
    for (size_t i = 0; i < s.n; i++) {
        json_array_append_new(names, json_string(s.items[i].name));
        json_array_append_new(dtypes, json_string(td__dtype_st_name(s.items[i].dtype)));
        json_t *sh = json_array();
        for (int d = 0; d < s.items[i].ndim; d++)
            json_array_append_new(sh, json_integer(s.items[i].shape[d]));
        json_array_append_new(shapes, sh);
    }
    for (size_t i = 0; i < td_meta_size(meta); i++) {
        const char *k;
        size_t sl;
        const char *v = td_value_string(td_meta_at(meta, i, &k), &sl);
        json_object_set_new(jm, k, json_stringn(v, sl));
    }
    json_object_set_new(want, "names", names);
    json_object_set_new(want, "dtypes", dtypes);
    json_object_set_new(want, "shapes", shapes);
    json_object_set_new(want, "meta", jm);
    char *js = json_dumps(want, JSON_COMPACT | JSON_ENSURE_ASCII);
    const char *args[] = {path, js, NULL};
    ck_assert_int_eq(tu_py("safetensors.py", "check", args), 0);
    free(js);
    json_decref(want);
    tu_rmtree(dir);
    td_meta_free(meta);
    free_set(&s);
}
END_TEST

START_TEST(test_write_refusals)
{
    tu_set s;
    make_set(&s);
    td_error err = {0};
    size_t len;
    int rc;
    uint8_t *p;
    td__item it[2] = {s.items[0], s.items[1]};
    uint8_t c128[16] = {0};
    int64_t one = 1, sh4[1] = {4};

    /* dtypes safetensors cannot hold */
    it[1] = (td__item){"zz", TD_COMPLEX128, 1, &one, c128, 16};
    p = write_mem(it, 2, NULL, &len, &err, &rc);
    free(p);
    ck_assert_int_eq(rc, TD_EDTYPE);
    ck_assert_ptr_nonnull(strstr(err.message, "'zz'"));
    ck_assert_ptr_nonnull(strstr(err.message, "complex128"));
    ck_assert_ptr_nonnull(strstr(err.message, FN));
    int64_t q32 = 32;
    uint8_t qb[18] = {0};
    it[1] = (td__item){"quant", TD_Q4_0, 1, &q32, qb, 18};
    p = write_mem(it, 2, NULL, &len, &err, &rc);
    free(p);
    ck_assert_int_eq(rc, TD_EDTYPE);
    ck_assert_ptr_nonnull(strstr(err.message, "q4_0"));
    it[1] = (td__item){"bad", (td_dtype)999, 1, &one, c128, 1};
    p = write_mem(it, 2, NULL, &len, &err, &rc);
    free(p);
    ck_assert_int_eq(rc, TD_EDTYPE);
    /* names: none, empty, reserved, repeated */
    it[1] = s.items[1];
    it[1].name = NULL;
    p = write_mem(it, 2, NULL, &len, &err, &rc);
    free(p);
    ck_assert_int_eq(rc, TD_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.message, "item 1"));
    it[1].name = "";
    p = write_mem(it, 2, NULL, &len, &err, &rc);
    free(p);
    ck_assert_int_eq(rc, TD_EINVAL);
    it[1].name = "__metadata__";
    p = write_mem(it, 2, NULL, &len, &err, &rc);
    free(p);
    ck_assert_int_eq(rc, TD_EINVAL);
    it[1].name = it[0].name;
    p = write_mem(it, 2, NULL, &len, &err, &rc);
    free(p);
    ck_assert_int_eq(rc, TD_EDUP);
    ck_assert_ptr_nonnull(strstr(err.message, "twice"));
    it[1].name = "bad \xff utf8";
    p = write_mem(it, 2, NULL, &len, &err, &rc);
    free(p);
    ck_assert_int_eq(rc, TD_EINVAL);
    /* sizes */
    it[1] = (td__item){"short", TD_FLOAT32, 1, sh4, s.bufs[0], 12};
    p = write_mem(it, 2, NULL, &len, &err, &rc);
    free(p);
    ck_assert_int_eq(rc, TD_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.message, "'short'"));
    int64_t neg = -1;
    it[1] = (td__item){"neg", TD_FLOAT32, 1, &neg, s.bufs[0], 0};
    p = write_mem(it, 2, NULL, &len, &err, &rc);
    free(p);
    ck_assert_int_eq(rc, TD_ERANGE);
    it[1] = (td__item){"nodata", TD_FLOAT32, 1, sh4, NULL, 16};
    p = write_mem(it, 2, NULL, &len, &err, &rc);
    free(p);
    ck_assert_int_eq(rc, TD_EINVAL);
    /* metadata that is not a string */
    td_meta *m = td_meta_new();
    TU_OK(td_meta_set_string(m, "fine", "x", 1, &err), &err);
    uint32_t v = 3;
    TU_OK(td_meta_set_scalar(m, "general.count", TD_META_UINT32, &v, &err), &err);
    p = write_mem(s.items, 1, m, &len, &err, &rc);
    free(p);
    ck_assert_int_eq(rc, TD_EDTYPE);
    ck_assert_ptr_nonnull(strstr(err.message, "'general.count'"));
    ck_assert_ptr_nonnull(strstr(err.message, "uint32"));
    td_meta_free(m);
    m = td_meta_new();
    const char *strs[] = {"a"};
    TU_OK(td_meta_set_strings(m, "list", strs, NULL, 1, &err), &err);
    p = write_mem(s.items, 1, m, &len, &err, &rc);
    free(p);
    ck_assert_int_eq(rc, TD_EDTYPE);
    ck_assert_ptr_nonnull(strstr(err.message, "'list'"));
    td_meta_free(m);
    m = td_meta_new();
    TU_OK(td_meta_set_string(m, "k", "\xff", 1, &err), &err);
    p = write_mem(s.items, 1, m, &len, &err, &rc);
    free(p);
    ck_assert_int_eq(rc, TD_EINVAL);
    td_meta_free(m);
    free_set(&s);
}
END_TEST

/* ---------------------------------------------------------------------------------------------
 * Through the public API
 */

START_TEST(test_td_load_reference)
{
    char path[4096];
    td_load_options opt = TD_LOAD_OPTIONS_INIT;
    opt.mode = TD_MODE_EMBEDDED;
    td_dict *d = NULL;
    td_meta *m = NULL;
    td_error err = {0};
    int fds = tu_count_fds();
    TU_OK(td_load(tu_testdata("safetensors/with_metadata.safetensors", path, sizeof path), &opt, &d,
                  &m, &err),
          &err);
    ck_assert_uint_eq(td_dict_size(d), 2);
    const char *name;
    const td_array *a = td_dict_at(d, 0, &name);
    ck_assert_str_eq(name, "embed.weight");
    ck_assert_int_eq(td_array_dtype(a), TD_FLOAT32);
    ck_assert_int_eq(td_array_ndim(a), 2);
    ck_assert_int_eq(td_array_shape(a)[0], 4);
    ck_assert_int_eq(td_array_shape(a)[1], 6);
    char hex[65];
    tu_sha256_hex(td_array_data(a), td_array_nbytes(a), hex);
    ck_assert_str_eq(hex, "800fb58f271100855ae106d5b58b426e38d63a128749e068b72358960511d89d");
    const char *s;
    size_t sl;
    ck_assert_int_eq(td_meta_get_string(m, "format", &s, &sl), 0);
    ck_assert_str_eq(s, "pt");
    ck_assert_uint_eq(td_meta_size(m), 6);
    td_dict_free(d);
    td_meta_free(m);
    /* a file without metadata gives an empty meta */
    TU_OK(td_load(tu_testdata("safetensors/scalar_and_empty.safetensors", path, sizeof path), &opt,
                  &d, &m, &err),
          &err);
    ck_assert_ptr_nonnull(m);
    ck_assert_uint_eq(td_meta_size(m), 0);
    ck_assert_uint_eq(td_dict_size(d), 5);
    ck_assert_int_eq(td_array_ndim(td_dict_get(d, "scalar")), 0);
    ck_assert_uint_eq(td_array_nbytes(td_dict_get(d, "empty_rows")), 0);
    td_dict_free(d);
    td_meta_free(m);
    ck_assert_int_eq(tu_count_fds(), fds);
}
END_TEST

START_TEST(test_td_save_load)
{
    char dir[64], path[128];
    tu_tmpdir(dir);
    int fds = tu_count_fds();
    td_error err = {0};
    td_dict *d = td_dict_new();
    int64_t shape[2] = {3, 4};
    float f[12];
    for (int i = 0; i < 12; i++)
        f[i] = (float)i * 0.5f;
    td_array *a;
    TU_OK(td_array_new(TD_FLOAT32, 2, shape, f, &a, &err), &err);
    TU_OK(td_dict_set(d, "w", a, &err), &err);
    td_array_release(a);
    int64_t s1 = 3;
    uint16_t h[3] = {0x3c00, 0x8000, 0x7c00};
    TU_OK(td_array_new(TD_BFLOAT16, 1, &s1, h, &a, &err), &err);
    TU_OK(td_dict_set(d, "b", a, &err), &err);
    td_array_release(a);
    td_meta *m = td_meta_new();
    TU_OK(td_meta_set_string(m, "format", "mlx", 3, &err), &err);
    snprintf(path, sizeof path, "%s/model", dir);
    TU_OK(td_save_safetensors(path, d, m, &err), &err); /* ".safetensors" appended */

    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    td_load_options opt = TD_LOAD_OPTIONS_INIT;
    opt.mode = TD_MODE_EMBEDDED;
    td_dict *d2 = NULL;
    td_meta *m2 = NULL;
    TU_OK(td_load(path, &opt, &d2, &m2, &err), &err);
    ck_assert_uint_eq(td_dict_size(d2), 2);
    const char *name;
    ck_assert_ptr_nonnull(td_dict_at(d2, 0, &name));
    ck_assert_str_eq(name, "w");
    ck_assert(memcmp(td_array_data(td_dict_get(d2, "w")), f, sizeof f) == 0);
    ck_assert(memcmp(td_array_data(td_dict_get(d2, "b")), h, sizeof h) == 0);
    ck_assert_int_eq(td_array_dtype(td_dict_get(d2, "b")), TD_BFLOAT16);
    ck_assert(td__meta_equal(m, m2));
    td_dict_free(d2);
    td_meta_free(m2);

    /* a non-string value refuses the save and leaves no file behind */
    uint8_t one = 1;
    TU_OK(td_meta_set_scalar(m, "flag", TD_META_BOOL, &one, &err), &err);
    snprintf(path, sizeof path, "%s/refused.safetensors", dir);
    ck_assert_int_eq(td_save_safetensors(path, d, m, &err), TD_EDTYPE);
    ck_assert_ptr_nonnull(strstr(err.message, "'flag'"));
    ck_assert_int_eq(access(path, F_OK), -1);
    /* a hostile file through td_load: refused, nothing leaks */
    size_t len;
    const char *hdr = "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                      "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[2,6]}}";
    uint8_t *p = mk(hdr, strlen(hdr), 6, &len);
    snprintf(path, sizeof path, "%s/overlap.safetensors", dir);
    ck_assert_int_eq(tu_write_file(path, p, len), 0);
    free(p);
    d2 = NULL;
    m2 = NULL;
    ck_assert_int_eq(td_load(path, &opt, &d2, &m2, &err), TD_EFORMAT);
    ck_assert_ptr_nonnull(strstr(err.message, "overlaps tensor 'a'"));
    ck_assert_ptr_null(d2);
    ck_assert_ptr_null(m2);
    td_meta_free(m);
    td_dict_free(d);
    ck_assert_int_eq(tu_count_fds(), fds);
    tu_rmtree(dir);
}
END_TEST

static Suite *st_suite(void)
{
    Suite *s = suite_create("safetensors");
    TCase *tc = tcase_create("index");
    tcase_add_test(tc, test_manifest_files);
    tcase_add_test(tc, test_header_order_kept);
    tcase_add_test(tc, test_every_truncation);
    tcase_add_test(tc, test_header_length);
    tcase_add_test(tc, test_header_json);
    tcase_add_test(tc, test_entries);
    tcase_add_test(tc, test_dtypes_and_shapes);
    tcase_add_test(tc, test_offsets);
    tcase_add_test(tc, test_duplicates);
    tcase_add_test(tc, test_metadata);
    tcase_add_test(tc, test_random_corruption);
    suite_add_tcase(s, tc);
    tc = tcase_create("write");
    tcase_add_test(tc, test_write_round_trip);
    tcase_add_test(tc, test_write_python_reader);
    tcase_add_test(tc, test_write_refusals);
    suite_add_tcase(s, tc);
    tc = tcase_create("api");
    tcase_add_test(tc, test_td_load_reference);
    tcase_add_test(tc, test_td_save_load);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(st_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}

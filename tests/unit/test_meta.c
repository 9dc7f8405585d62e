/*
 * test_meta.c - td_meta / td_value: every type, conversions and their range errors, strings with
 * NUL bytes, arrays of every element type, nested arrays and the depth bound, replace in place,
 * deep copy, key lookups at scale and a 150k-string array (a tokenizer's vocabulary).
 */
#include "meta_internal.h"
#include "testutil.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

START_TEST(test_type_names)
{
    static const char *const want[TD_META_COUNT] = {
        "uint8", "int8",   "uint16", "int16",  "uint32", "int32",  "float32",
        "bool",  "string", "array",  "uint64", "int64",  "float64"};
    for (int t = 0; t < TD_META_COUNT; t++)
        ck_assert_str_eq(td_meta_type_name((td_meta_type)t), want[t]);
    ck_assert_ptr_null(td_meta_type_name(TD_META_COUNT));
    ck_assert_ptr_null(td_meta_type_name((td_meta_type)-1));
    ck_assert_uint_eq(td__type_size(TD_META_BOOL), 1);
    ck_assert_uint_eq(td__type_size(TD_META_FLOAT64), 8);
    ck_assert_uint_eq(td__type_size(TD_META_STRING), 0);
    ck_assert_uint_eq(td__type_size(TD_META_ARRAY), 0);
}
END_TEST

/* One value of every scalar type, stored and read back exactly. */
START_TEST(test_scalars_every_type)
{
    td_error err = {0};
    td_meta *m = td_meta_new();
    ck_assert_ptr_nonnull(m);
    uint8_t u8 = 255, b = 1;
    int8_t i8 = -128;
    uint16_t u16 = 65535;
    int16_t i16 = -32768;
    uint32_t u32 = 4294967295u;
    int32_t i32 = INT32_MIN;
    float f32 = 0.1f;
    uint64_t u64 = UINT64_MAX;
    int64_t i64 = INT64_MIN;
    double f64 = -1e300;
    TU_OK(td_meta_set_scalar(m, "u8", TD_META_UINT8, &u8, &err), &err);
    TU_OK(td_meta_set_scalar(m, "i8", TD_META_INT8, &i8, &err), &err);
    TU_OK(td_meta_set_scalar(m, "u16", TD_META_UINT16, &u16, &err), &err);
    TU_OK(td_meta_set_scalar(m, "i16", TD_META_INT16, &i16, &err), &err);
    TU_OK(td_meta_set_scalar(m, "u32", TD_META_UINT32, &u32, &err), &err);
    TU_OK(td_meta_set_scalar(m, "i32", TD_META_INT32, &i32, &err), &err);
    TU_OK(td_meta_set_scalar(m, "f32", TD_META_FLOAT32, &f32, &err), &err);
    TU_OK(td_meta_set_scalar(m, "bool", TD_META_BOOL, &b, &err), &err);
    TU_OK(td_meta_set_string(m, "str", "hello", 5, &err), &err);
    TU_OK(td_meta_set_scalar(m, "u64", TD_META_UINT64, &u64, &err), &err);
    TU_OK(td_meta_set_scalar(m, "i64", TD_META_INT64, &i64, &err), &err);
    TU_OK(td_meta_set_scalar(m, "f64", TD_META_FLOAT64, &f64, &err), &err);
    ck_assert_uint_eq(td_meta_size(m), 12);

    static const char *const keys[] = {"u8",  "i8",   "u16", "i16", "u32", "i32",
                                       "f32", "bool", "str", "u64", "i64", "f64"};
    static const td_meta_type types[] = {TD_META_UINT8,   TD_META_INT8,   TD_META_UINT16,
                                         TD_META_INT16,   TD_META_UINT32, TD_META_INT32,
                                         TD_META_FLOAT32, TD_META_BOOL,   TD_META_STRING,
                                         TD_META_UINT64,  TD_META_INT64,  TD_META_FLOAT64};
    for (size_t i = 0; i < 12; i++) {
        const char *k;
        const td_value *v = td_meta_at(m, i, &k);
        ck_assert_ptr_nonnull(v);
        ck_assert_str_eq(k, keys[i]);
        ck_assert_int_eq(td_value_type(v), types[i]);
        ck_assert_ptr_eq(td_meta_get(m, keys[i]), v);
    }
    ck_assert_ptr_null(td_meta_at(m, 12, NULL));
    ck_assert_ptr_null(td_meta_get(m, "nope"));

    int64_t si;
    uint64_t ui;
    double d;
    ck_assert_int_eq(td_value_get_uint(td_meta_get(m, "u8"), &ui), 0);
    ck_assert_uint_eq(ui, 255);
    ck_assert_int_eq(td_value_get_int(td_meta_get(m, "i8"), &si), 0);
    ck_assert_int_eq(si, -128);
    ck_assert_int_eq(td_value_get_uint(td_meta_get(m, "u16"), &ui), 0);
    ck_assert_uint_eq(ui, 65535);
    ck_assert_int_eq(td_value_get_int(td_meta_get(m, "i16"), &si), 0);
    ck_assert_int_eq(si, -32768);
    ck_assert_int_eq(td_value_get_uint(td_meta_get(m, "u32"), &ui), 0);
    ck_assert_uint_eq(ui, 4294967295u);
    ck_assert_int_eq(td_value_get_int(td_meta_get(m, "i32"), &si), 0);
    ck_assert_int_eq(si, INT32_MIN);
    ck_assert_int_eq(td_value_get_float(td_meta_get(m, "f32"), &d), 0);
    ck_assert(d == (double)0.1f);
    ck_assert_int_eq(td_value_get_int(td_meta_get(m, "bool"), &si), 0);
    ck_assert_int_eq(si, 1);
    ck_assert_int_eq(td_value_get_uint(td_meta_get(m, "u64"), &ui), 0);
    ck_assert(ui == UINT64_MAX);
    ck_assert_int_eq(td_value_get_int(td_meta_get(m, "i64"), &si), 0);
    ck_assert(si == INT64_MIN);
    ck_assert_int_eq(td_value_get_float(td_meta_get(m, "f64"), &d), 0);
    ck_assert(d == -1e300);
    ck_assert_int_eq(td_meta_get_float(m, "i32", &d), 0);
    ck_assert(d == (double)INT32_MIN);
    ck_assert_int_eq(td_meta_get_float(m, "bool", &d), 0);
    ck_assert(d == 1.0);

    /* bool: any non-zero byte is true and stored as 1 */
    uint8_t two = 2;
    TU_OK(td_meta_set_scalar(m, "bool", TD_META_BOOL, &two, &err), &err);
    ck_assert_int_eq(td_meta_get_int(m, "bool", &si), 0);
    ck_assert_int_eq(si, 1);
    td_meta_free(m);
}
END_TEST

START_TEST(test_conversions_and_range)
{
    td_error err = {0};
    td_meta *m = td_meta_new();
    uint64_t big = (uint64_t)INT64_MAX + 1;
    int8_t neg = -1;
    float half = 2.5f, two = 2.0f, fnan = NAN, finf = INFINITY;
    double huge = 1e19, nzero = -0.0, m2p63 = -9223372036854775808.0, p2p63 = 9223372036854775808.0,
           p2p64 = 18446744073709551616.0;
    TU_OK(td_meta_set_scalar(m, "big", TD_META_UINT64, &big, &err), &err);
    TU_OK(td_meta_set_scalar(m, "neg", TD_META_INT8, &neg, &err), &err);
    TU_OK(td_meta_set_scalar(m, "half", TD_META_FLOAT32, &half, &err), &err);
    TU_OK(td_meta_set_scalar(m, "two", TD_META_FLOAT32, &two, &err), &err);
    TU_OK(td_meta_set_scalar(m, "nan", TD_META_FLOAT32, &fnan, &err), &err);
    TU_OK(td_meta_set_scalar(m, "inf", TD_META_FLOAT32, &finf, &err), &err);
    TU_OK(td_meta_set_scalar(m, "huge", TD_META_FLOAT64, &huge, &err), &err);
    TU_OK(td_meta_set_scalar(m, "nzero", TD_META_FLOAT64, &nzero, &err), &err);
    TU_OK(td_meta_set_scalar(m, "m2p63", TD_META_FLOAT64, &m2p63, &err), &err);
    TU_OK(td_meta_set_scalar(m, "p2p63", TD_META_FLOAT64, &p2p63, &err), &err);
    TU_OK(td_meta_set_scalar(m, "p2p64", TD_META_FLOAT64, &p2p64, &err), &err);
    TU_OK(td_meta_set_string(m, "s", "12", 2, &err), &err);
    uint8_t arr[2] = {1, 2};
    TU_OK(td_meta_set_array(m, "arr", TD_META_UINT8, arr, 2, &err), &err);

    int64_t si = 77;
    uint64_t ui = 77;
    double d;
    /* uint64 above INT64_MAX: fine as uint, out of range as int */
    ck_assert_int_eq(td_value_get_int(td_meta_get(m, "big"), &si), TD_ERANGE);
    ck_assert_int_eq(si, 77); /* untouched on failure */
    ck_assert_int_eq(td_meta_get_int(m, "big", &si), TD_ERANGE);
    ck_assert_int_eq(td_value_get_uint(td_meta_get(m, "big"), &ui), 0);
    ck_assert(ui == big);
    /* negative as uint */
    ck_assert_int_eq(td_value_get_uint(td_meta_get(m, "neg"), &ui), TD_ERANGE);
    ck_assert_int_eq(td_value_get_int(td_meta_get(m, "neg"), &si), 0);
    ck_assert_int_eq(si, -1);
    /* floats: exact integers convert, others are out of range */
    ck_assert_int_eq(td_value_get_int(td_meta_get(m, "half"), &si), TD_ERANGE);
    ck_assert_int_eq(td_value_get_int(td_meta_get(m, "two"), &si), 0);
    ck_assert_int_eq(si, 2);
    ck_assert_int_eq(td_value_get_uint(td_meta_get(m, "two"), &ui), 0);
    ck_assert_uint_eq(ui, 2);
    ck_assert_int_eq(td_value_get_int(td_meta_get(m, "nan"), &si), TD_ERANGE);
    ck_assert_int_eq(td_value_get_uint(td_meta_get(m, "nan"), &ui), TD_ERANGE);
    ck_assert_int_eq(td_value_get_int(td_meta_get(m, "inf"), &si), TD_ERANGE);
    ck_assert_int_eq(td_value_get_int(td_meta_get(m, "huge"), &si), TD_ERANGE);
    ck_assert_int_eq(td_value_get_uint(td_meta_get(m, "huge"), &ui), 0);
    ck_assert(ui == 10000000000000000000ull);
    ck_assert_int_eq(td_value_get_int(td_meta_get(m, "nzero"), &si), 0);
    ck_assert_int_eq(si, 0);
    ck_assert_int_eq(td_value_get_int(td_meta_get(m, "m2p63"), &si), 0);
    ck_assert(si == INT64_MIN);
    ck_assert_int_eq(td_value_get_int(td_meta_get(m, "p2p63"), &si), TD_ERANGE);
    ck_assert_int_eq(td_value_get_uint(td_meta_get(m, "p2p63"), &ui), 0);
    ck_assert(ui == (uint64_t)1 << 63);
    ck_assert_int_eq(td_value_get_uint(td_meta_get(m, "p2p64"), &ui), TD_ERANGE);
    ck_assert_int_eq(td_value_get_float(td_meta_get(m, "nan"), &d), 0);
    ck_assert(isnan(d));
    ck_assert_int_eq(td_value_get_float(td_meta_get(m, "big"), &d), 0);
    ck_assert(d == 9223372036854775808.0);
    /* not numbers */
    ck_assert_int_eq(td_value_get_int(td_meta_get(m, "s"), &si), TD_EINVAL);
    ck_assert_int_eq(td_value_get_uint(td_meta_get(m, "s"), &ui), TD_EINVAL);
    ck_assert_int_eq(td_value_get_float(td_meta_get(m, "arr"), &d), TD_EINVAL);
    ck_assert_int_eq(td_value_get_int(NULL, &si), TD_EINVAL);
    /* the key conveniences */
    const char *s;
    size_t len;
    ck_assert_int_eq(td_meta_get_int(m, "missing", &si), TD_ENOTFOUND);
    ck_assert_int_eq(td_meta_get_float(m, "missing", &d), TD_ENOTFOUND);
    ck_assert_int_eq(td_meta_get_string(m, "missing", &s, &len), TD_ENOTFOUND);
    ck_assert_int_eq(td_meta_get_int(m, "s", &si), TD_EDTYPE);
    ck_assert_int_eq(td_meta_get_float(m, "arr", &d), TD_EDTYPE);
    ck_assert_int_eq(td_meta_get_string(m, "two", &s, &len), TD_EDTYPE);
    ck_assert_int_eq(td_meta_get_string(m, "s", &s, &len), 0);
    ck_assert_uint_eq(len, 2);
    ck_assert_str_eq(s, "12");
    ck_assert_int_eq(td_meta_get_int(NULL, "s", &si), TD_ENOTFOUND);
    td_meta_free(m);
}
END_TEST

START_TEST(test_strings)
{
    td_error err = {0};
    td_meta *m = td_meta_new();
    static const char with_nul[] = "a\0b\0";
    TU_OK(td_meta_set_string(m, "nul", with_nul, 4, &err), &err);
    TU_OK(td_meta_set_string(m, "empty", NULL, 0, &err), &err);
    TU_OK(td_meta_set_string(m, "utf8", "\xc2\xb5-\xce\xa9", 5, &err), &err);
    ck_assert_int_eq(td_meta_set_string(m, "bad", NULL, 3, &err), TD_EINVAL);
    ck_assert_int_eq(err.code, TD_EINVAL);
    size_t len = 99;
    const char *s = td_value_string(td_meta_get(m, "nul"), &len);
    ck_assert_uint_eq(len, 4);
    ck_assert(memcmp(s, with_nul, 4) == 0);
    ck_assert_int_eq(s[4], '\0');
    s = td_value_string(td_meta_get(m, "empty"), &len);
    ck_assert_ptr_nonnull(s);
    ck_assert_uint_eq(len, 0);
    ck_assert_str_eq(s, "");
    /* not a string: NULL and len 0 */
    uint8_t one = 1;
    TU_OK(td_meta_set_scalar(m, "n", TD_META_UINT8, &one, &err), &err);
    len = 99;
    ck_assert_ptr_null(td_value_string(td_meta_get(m, "n"), &len));
    ck_assert_uint_eq(len, 0);
    ck_assert_ptr_null(td_value_string(NULL, NULL));
    /* a value built alone */
    td_value *v = td_value_new_string("xyz", 2);
    ck_assert_ptr_nonnull(v);
    ck_assert_str_eq(td_value_string(v, &len), "xy");
    ck_assert_ptr_null(td_value_new_string(NULL, 1));
    TU_OK(td_meta_set_value(m, "lone", v, &err), &err);
    ck_assert_str_eq(td_value_string(td_meta_get(m, "lone"), NULL), "xy");
    td_meta_free(m);
}
END_TEST

START_TEST(test_keys_and_arguments)
{
    td_error err = {0};
    td_meta *m = td_meta_new();
    uint32_t x = 1;
    ck_assert_int_eq(td_meta_set_scalar(m, "", TD_META_UINT32, &x, &err), TD_EINVAL);
    ck_assert_int_eq(td_meta_set_scalar(m, NULL, TD_META_UINT32, &x, &err), TD_EINVAL);
    ck_assert_int_eq(td_meta_set_scalar(m, "k", TD_META_STRING, &x, &err), TD_EINVAL);
    ck_assert_int_eq(td_meta_set_scalar(m, "k", TD_META_ARRAY, &x, &err), TD_EINVAL);
    ck_assert_int_eq(td_meta_set_scalar(m, "k", TD_META_COUNT, &x, &err), TD_EINVAL);
    ck_assert_int_eq(td_meta_set_scalar(m, "k", TD_META_UINT32, NULL, &err), TD_EINVAL);
    ck_assert_int_eq(td_meta_set_array(m, "k", TD_META_STRING, &x, 1, &err), TD_EINVAL);
    ck_assert_int_eq(td_meta_set_array(m, "k", TD_META_UINT32, NULL, 1, &err), TD_EINVAL);
    ck_assert_int_eq(td_meta_set_strings(m, "k", NULL, NULL, 1, &err), TD_EINVAL);
    const char *items[] = {"a", NULL};
    ck_assert_int_eq(td_meta_set_strings(m, "k", items, NULL, 2, &err), TD_EINVAL);
    ck_assert_int_eq(td_meta_set_value(m, "k", NULL, &err), TD_EINVAL);
    /* set_value takes the value also on failure (ASan would see a leak otherwise) */
    ck_assert_int_eq(td_meta_set_value(m, "", td_value_new_string("x", 1), &err), TD_EINVAL);
    ck_assert_int_eq(td_meta_set_value(NULL, "k", td_value_new_string("x", 1), &err), TD_EINVAL);
    ck_assert_uint_eq(td_meta_size(m), 0);
    /* builders */
    ck_assert_ptr_null(td_value_new_scalar(TD_META_STRING, &x));
    ck_assert_ptr_null(td_value_new_scalar(TD_META_UINT8, NULL));
    ck_assert_ptr_null(td_value_new_array(TD_META_COUNT));
    td_value_free(NULL);
    td_meta_free(NULL);
    ck_assert_uint_eq(td_meta_size(NULL), 0);
    ck_assert_ptr_null(td_meta_get(NULL, "k"));
    ck_assert_ptr_null(td_meta_get(m, NULL));
    ck_assert_ptr_null(td_meta_copy(NULL));
    ck_assert_int_eq(td_value_type(NULL), TD_META_COUNT);
    /* keys are bytes: similar keys stay apart */
    TU_OK(td_meta_set_scalar(m, "a.b", TD_META_UINT32, &x, &err), &err);
    x = 2;
    TU_OK(td_meta_set_scalar(m, "a.b.", TD_META_UINT32, &x, &err), &err);
    int64_t v;
    ck_assert_int_eq(td_meta_get_int(m, "a.b", &v), 0);
    ck_assert_int_eq(v, 1);
    ck_assert_int_eq(td_meta_get_int(m, "a.b.", &v), 0);
    ck_assert_int_eq(v, 2);
    ck_assert_ptr_null(td_meta_get(m, "a."));
    td_meta_free(m);
}
END_TEST

/* Packed arrays of every scalar type: data, items, bounds. */
START_TEST(test_arrays_every_type)
{
    td_error err = {0};
    td_meta *m = td_meta_new();
    uint8_t buf[8 * 5];
    for (int t = 0; t < TD_META_COUNT; t++) {
        size_t sz = td__type_size((td_meta_type)t);
        if (!sz)
            continue;
        for (size_t i = 0; i < sizeof buf; i++)
            buf[i] = (uint8_t)(i * 37 + (size_t)t);
        char key[32];
        snprintf(key, sizeof key, "arr.%s", td_meta_type_name((td_meta_type)t));
        TU_OK(td_meta_set_array(m, key, (td_meta_type)t, buf, 5, &err), &err);
        const td_value *v = td_meta_get(m, key);
        ck_assert_int_eq(td_value_type(v), TD_META_ARRAY);
        ck_assert_int_eq(td_value_array_type(v), t);
        ck_assert_uint_eq(td_value_array_len(v), 5);
        const uint8_t *data = td_value_array_data(v);
        ck_assert_ptr_nonnull(data);
        if (t == TD_META_BOOL) {
            for (size_t i = 0; i < 5; i++)
                ck_assert_uint_eq(data[i], buf[i] != 0);
        } else {
            ck_assert(memcmp(data, buf, 5 * sz) == 0);
        }
        for (size_t i = 0; i < 5; i++) {
            const td_value *it = td_value_array_at(v, i);
            ck_assert_ptr_nonnull(it);
            ck_assert_int_eq(td_value_type(it), t);
            /* the item's value equals the packed one */
            td_value *ref = td_value_new_scalar((td_meta_type)t, data + i * sz);
            ck_assert(td__value_equal(it, ref));
            td_value_free(ref);
            td_value_free((td_value *)it); /* no-op: the array owns it */
        }
        ck_assert_ptr_null(td_value_array_at(v, 5));
    }
    /* specific values through the items */
    int16_t i16[3] = {-5, 0, 32767};
    TU_OK(td_meta_set_array(m, "i16", TD_META_INT16, i16, 3, &err), &err);
    int64_t si;
    ck_assert_int_eq(td_value_get_int(td_value_array_at(td_meta_get(m, "i16"), 0), &si), 0);
    ck_assert_int_eq(si, -5);
    double f64[2] = {1.5, -0.25};
    TU_OK(td_meta_set_array(m, "f64", TD_META_FLOAT64, f64, 2, &err), &err);
    double d;
    ck_assert_int_eq(td_value_get_float(td_value_array_at(td_meta_get(m, "f64"), 1), &d), 0);
    ck_assert(d == -0.25);
    /* empty arrays: data is never NULL for numbers */
    TU_OK(td_meta_set_array(m, "empty", TD_META_UINT32, NULL, 0, &err), &err);
    ck_assert_uint_eq(td_value_array_len(td_meta_get(m, "empty")), 0);
    ck_assert_ptr_nonnull(td_value_array_data(td_meta_get(m, "empty")));
    ck_assert_ptr_null(td_value_array_at(td_meta_get(m, "empty"), 0));
    /* non-arrays */
    ck_assert_int_eq(td_value_array_type(td_value_array_at(td_meta_get(m, "f64"), 0)),
                     TD_META_COUNT);
    ck_assert_uint_eq(td_value_array_len(NULL), 0);
    ck_assert_ptr_null(td_value_array_data(NULL));
    td_meta_free(m);
}
END_TEST

START_TEST(test_string_arrays)
{
    td_error err = {0};
    td_meta *m = td_meta_new();
    const char *items[] = {"alpha", "", "g\0mma", "\xe2\x98\x85"};
    size_t lens[] = {5, 0, 5, 3};
    TU_OK(td_meta_set_strings(m, "with_lens", items, lens, 4, &err), &err);
    TU_OK(td_meta_set_strings(m, "nul_term", items, NULL, 4, &err), &err);
    TU_OK(td_meta_set_strings(m, "none", NULL, NULL, 0, &err), &err);
    const td_value *v = td_meta_get(m, "with_lens");
    ck_assert_int_eq(td_value_array_type(v), TD_META_STRING);
    ck_assert_uint_eq(td_value_array_len(v), 4);
    ck_assert_ptr_null(td_value_array_data(v));
    for (size_t i = 0; i < 4; i++) {
        size_t len;
        const char *s = td_value_string(td_value_array_at(v, i), &len);
        ck_assert_uint_eq(len, lens[i]);
        ck_assert(memcmp(s, items[i], len) == 0);
        ck_assert_int_eq(s[len], '\0');
    }
    v = td_meta_get(m, "nul_term");
    size_t len;
    ck_assert_str_eq(td_value_string(td_value_array_at(v, 2), &len), "g");
    ck_assert_uint_eq(len, 1);
    ck_assert_uint_eq(td_value_array_len(td_meta_get(m, "none")), 0);

    /* built item by item, public push and the internal one */
    td_value *a = td_value_new_array(TD_META_STRING);
    td_value *s = td_value_new_string("one", 3);
    TU_OK(td_value_array_push(a, s, &err), &err);
    TU_OK(td_value_array_push(a, s, &err), &err); /* copied: s still ours */
    td_value_free(s);
    TU_OK(td__value_array_push_string(a, "three", 5, &err), &err);
    uint32_t n = 7;
    td_value *num = td_value_new_scalar(TD_META_UINT32, &n);
    ck_assert_int_eq(td_value_array_push(a, num, &err), TD_EDTYPE);
    ck_assert_ptr_nonnull(strstr(err.message, "uint32"));
    td_value_free(num); /* a scalar is never taken */
    ck_assert_int_eq(td__value_array_push_scalar(a, &n, &err), TD_EDTYPE);
    ck_assert_uint_eq(td_value_array_len(a), 3);
    ck_assert_str_eq(td_value_string(td_value_array_at(a, 2), NULL), "three");
    TU_OK(td_meta_set_value(m, "pushed", a, &err), &err);
    ck_assert_str_eq(td_value_string(td_value_array_at(td_meta_get(m, "pushed"), 1), NULL), "one");
    td_meta_free(m);
}
END_TEST

/* Arrays of arrays with mixed inner types, the depth bound, ownership on push. */
START_TEST(test_nested_arrays)
{
    td_error err = {0};
    td_value *outer = td_value_new_array(TD_META_ARRAY);
    ck_assert_uint_eq(td__value_depth(outer), 2);
    int32_t xs[3] = {1, -2, 3};
    td_value *in1 = td__value_new_array_packed(TD_META_INT32, xs, 3);
    td_value *in2 = td_value_new_array(TD_META_STRING);
    TU_OK(td__value_array_push_string(in2, "x", 1, &err), &err);
    TU_OK(td_value_array_push(outer, in1, &err), &err); /* taken */
    TU_OK(td_value_array_push(outer, in2, &err), &err);
    ck_assert_uint_eq(td_value_array_len(outer), 2);
    const td_value *i0 = td_value_array_at(outer, 0);
    ck_assert_int_eq(td_value_type(i0), TD_META_ARRAY);
    ck_assert_int_eq(td_value_array_type(i0), TD_META_INT32);
    ck_assert(memcmp(td_value_array_data(i0), xs, sizeof xs) == 0);
    ck_assert_str_eq(td_value_string(td_value_array_at(td_value_array_at(outer, 1), 0), NULL), "x");
    ck_assert_ptr_null(td_value_array_data(outer));

    /* a scalar into an array of arrays: refused, not taken */
    uint8_t one = 1;
    td_value *sc = td_value_new_scalar(TD_META_UINT8, &one);
    ck_assert_int_eq(td_value_array_push(outer, sc, &err), TD_EDTYPE);
    td_value_free(sc);
    /* an array into an array of uint8: refused and freed (taken also on failure) */
    td_value *u8s = td_value_new_array(TD_META_UINT8);
    ck_assert_int_eq(td_value_array_push(u8s, td_value_new_array(TD_META_UINT8), &err), TD_EDTYPE);
    td_value_free(u8s);
    ck_assert_int_eq(td_value_array_push(NULL, td_value_new_array(TD_META_UINT8), &err), TD_EINVAL);

    /* depth: build the deepest allowed chain, then one more level is refused */
    td_value *chain = td_value_new_array(TD_META_UINT8);
    TU_OK(td__value_array_push_scalar(chain, &one, &err), &err);
    for (int d = 2; d <= TD_META_MAX_DEPTH; d++) {
        td_value *up = td_value_new_array(TD_META_ARRAY);
        TU_OK(td_value_array_push(up, chain, &err), &err);
        chain = up;
        ck_assert_uint_eq(td__value_depth(chain), (unsigned)d);
    }
    td_value *too_deep = td_value_new_array(TD_META_ARRAY);
    ck_assert_int_eq(td_value_array_push(too_deep, chain, &err), TD_ELIMIT); /* chain freed */
    ck_assert_ptr_nonnull(strstr(err.message, "nested"));
    td_value_free(too_deep);

    /* rebuild a max-depth chain and store it: copies and equality go all the way down */
    chain = td_value_new_array(TD_META_UINT8);
    TU_OK(td__value_array_push_scalar(chain, &one, &err), &err);
    for (int d = 2; d <= TD_META_MAX_DEPTH; d++) {
        td_value *up = td_value_new_array(TD_META_ARRAY);
        TU_OK(td_value_array_push(up, chain, &err), &err);
        chain = up;
    }
    td_meta *m = td_meta_new();
    TU_OK(td_meta_set_value(m, "deep", chain, &err), &err);
    TU_OK(td_meta_set_value(m, "outer", outer, &err), &err);
    td_meta *c = td_meta_copy(m);
    ck_assert_ptr_nonnull(c);
    ck_assert(td__meta_equal(m, c));
    const td_value *v = td_meta_get(c, "deep");
    for (int d = 1; d < TD_META_MAX_DEPTH; d++)
        v = td_value_array_at(v, 0);
    ck_assert_int_eq(td_value_array_type(v), TD_META_UINT8);
    ck_assert_uint_eq(((const uint8_t *)td_value_array_data(v))[0], 1);
    td_meta_free(m);
    td_meta_free(c);
}
END_TEST

START_TEST(test_replace_in_place)
{
    td_error err = {0};
    td_meta *m = td_meta_new();
    uint32_t x = 1;
    TU_OK(td_meta_set_scalar(m, "a", TD_META_UINT32, &x, &err), &err);
    TU_OK(td_meta_set_string(m, "b", "bee", 3, &err), &err);
    TU_OK(td_meta_set_scalar(m, "c", TD_META_UINT32, &x, &err), &err);
    /* replace b by every kind of value, many times: order and size stay */
    for (int round = 0; round < 100; round++) {
        const char *strs[] = {"p", "q"};
        switch (round % 4) {
        case 0:
            TU_OK(td_meta_set_strings(m, "b", strs, NULL, 2, &err), &err);
            break;
        case 1:
            TU_OK(td_meta_set_array(m, "b", TD_META_UINT32, &x, 1, &err), &err);
            break;
        case 2:
            TU_OK(td_meta_set_value(m, "b", td_value_new_array(TD_META_ARRAY), &err), &err);
            break;
        default:
            TU_OK(td_meta_set_string(m, "b", "new", 3, &err), &err);
            break;
        }
        ck_assert_uint_eq(td_meta_size(m), 3);
    }
    const char *k;
    td_meta_at(m, 1, &k);
    ck_assert_str_eq(k, "b");
    ck_assert_str_eq(td_value_string(td_meta_get(m, "b"), NULL), "new");
    td_meta_at(m, 2, &k);
    ck_assert_str_eq(k, "c");
    /* the internal append refuses duplicates instead, and frees the value */
    ck_assert_int_eq(td__meta_add_taking(m, "a", 1, td_value_new_string("z", 1), &err), TD_EDUP);
    ck_assert_ptr_nonnull(strstr(err.message, "'a'"));
    ck_assert_int_eq(td__meta_add_taking(m, "x\0y", 3, td_value_new_string("z", 1), &err),
                     TD_EFORMAT);
    ck_assert_int_eq(td__meta_add_taking(m, "", 0, td_value_new_string("z", 1), &err), TD_EFORMAT);
    /* the key is key[0..keylen), not NUL-terminated */
    TU_OK(td__meta_add_taking(m, "dxyz", 1, td_value_new_string("dee", 3), &err), &err);
    ck_assert_str_eq(td_value_string(td_meta_get(m, "d"), NULL), "dee");
    ck_assert_uint_eq(td_meta_size(m), 4);
    td_meta_free(m);
}
END_TEST

START_TEST(test_copy_is_deep)
{
    td_error err = {0};
    td_meta *m = td_meta_new();
    const char *strs[] = {"tok0", "tok1", "tok2"};
    float fs[3] = {0.5f, -1.0f, 2.0f};
    TU_OK(td_meta_set_string(m, "name", "model", 5, &err), &err);
    TU_OK(td_meta_set_strings(m, "tokens", strs, NULL, 3, &err), &err);
    TU_OK(td_meta_set_array(m, "scores", TD_META_FLOAT32, fs, 3, &err), &err);
    td_meta *c = td_meta_copy(m);
    ck_assert_ptr_nonnull(c);
    ck_assert(td__meta_equal(m, c));
    /* the copy shares nothing */
    ck_assert_ptr_ne(td_meta_get(m, "tokens"), td_meta_get(c, "tokens"));
    ck_assert_ptr_ne(td_value_string(td_value_array_at(td_meta_get(m, "tokens"), 1), NULL),
                     td_value_string(td_value_array_at(td_meta_get(c, "tokens"), 1), NULL));
    TU_OK(td_meta_set_string(m, "name", "changed", 7, &err), &err);
    ck_assert(!td__meta_equal(m, c));
    td_meta_free(m);
    ck_assert_str_eq(td_value_string(td_meta_get(c, "name"), NULL), "model");
    ck_assert_str_eq(td_value_string(td_value_array_at(td_meta_get(c, "tokens"), 2), NULL), "tok2");
    ck_assert(((const float *)td_value_array_data(td_meta_get(c, "scores")))[1] == -1.0f);
    /* a copy of an empty meta */
    td_meta *e = td_meta_new(), *ec = td_meta_copy(e);
    ck_assert_ptr_nonnull(ec);
    ck_assert_uint_eq(td_meta_size(ec), 0);
    ck_assert(td__meta_equal(e, ec));
    ck_assert(!td__meta_equal(e, c));
    td_meta_free(e);
    td_meta_free(ec);
    td_meta_free(c);
}
END_TEST

/* A tokenizer-sized string array three ways: set_strings (one blob sized up front), the internal
 * push (blob grows and moves), and the public push of td_values. */
#define TU_NTOK 150000
START_TEST(test_150k_strings)
{
    td_error err = {0};
    char(*words)[24] = malloc(TU_NTOK * sizeof *words);
    const char **items = malloc(TU_NTOK * sizeof *items);
    size_t *lens = malloc(TU_NTOK * sizeof *lens);
    ck_assert(words && items && lens);
    for (size_t i = 0; i < TU_NTOK; i++) {
        lens[i] = (size_t)snprintf(words[i], sizeof words[i], "tok%zu%s", i, i % 7 ? "" : "_x");
        items[i] = words[i];
    }
    td_meta *m = td_meta_new();
    double t0 = tu_now_s();
    TU_OK(td_meta_set_strings(m, "tokenizer.ggml.tokens", items, lens, TU_NTOK, &err), &err);
    double t1 = tu_now_s();
    /* no ck_assert inside timed loops: each one costs Check a write() */
    int rc = 0;
    td_value *a = td_value_new_array(TD_META_STRING);
    for (size_t i = 0; i < TU_NTOK; i++)
        rc |= td__value_array_push_string(a, items[i], lens[i], &err);
    double t2 = tu_now_s();
    TU_OK(rc, &err);
    td_value *b = td_value_new_array(TD_META_STRING);
    TU_OK(td__value_array_reserve(b, TU_NTOK, &err), &err);
    for (size_t i = 0; i < TU_NTOK; i++) {
        td_value *s = td_value_new_string(items[i], lens[i]);
        rc |= td_value_array_push(b, s, &err);
        td_value_free(s);
    }
    double t3 = tu_now_s();
    TU_OK(rc, &err);
    TU_OK(td_meta_set_value(m, "pushed", a, &err), &err);
    TU_OK(td_meta_set_value(m, "public", b, &err), &err);
    const td_value *v = td_meta_get(m, "tokenizer.ggml.tokens");
    ck_assert_uint_eq(td_value_array_len(v), TU_NTOK);
    ck_assert(td__value_equal(v, td_meta_get(m, "pushed")));
    ck_assert(td__value_equal(v, td_meta_get(m, "public")));
    for (size_t i = 0; i < TU_NTOK; i += 997) {
        size_t len;
        const char *s = td_value_string(td_value_array_at(td_meta_get(m, "pushed"), i), &len);
        ck_assert_uint_eq(len, lens[i]);
        ck_assert_str_eq(s, words[i]);
    }
    double t4 = tu_now_s();
    td_meta *c = td_meta_copy(m);
    double t5 = tu_now_s();
    ck_assert(td__meta_equal(m, c));
    fprintf(stderr,
            "test_meta: %d strings: set_strings %.1f ms, push_string %.1f ms, public push %.1f "
            "ms, copy of 3 arrays %.1f ms\n",
            TU_NTOK, (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3, (t5 - t4) * 1e3);
    /* generous bounds: a malloc per string or a quadratic step would blow them */
    ck_assert_msg(t1 - t0 < 2.0 && t2 - t1 < 2.0 && t5 - t4 < 2.0, "too slow");
    td_meta_free(c);
    td_meta_free(m);
    free(words);
    free(items);
    free(lens);
}
END_TEST

/* Many keys: lookups stay fast and exact, order is insertion order. */
START_TEST(test_many_keys)
{
    td_error err = {0};
    td_meta *m = td_meta_new();
    const size_t n = 100000;
    char key[64];
    int rc = 0;
    size_t bad = 0;
    double t0 = tu_now_s();
    for (size_t i = 0; i < n; i++) {
        snprintf(key, sizeof key, "blk.%zu.attn.weight", i);
        uint64_t v = i;
        rc |= td_meta_set_scalar(m, key, TD_META_UINT64, &v, &err);
    }
    double t1 = tu_now_s();
    TU_OK(rc, &err);
    for (size_t i = 0; i < n; i++) {
        snprintf(key, sizeof key, "blk.%zu.attn.weight", i);
        int64_t v = -1;
        const char *k;
        td_meta_at(m, i, &k);
        if (td_meta_get_int(m, key, &v) || v != (int64_t)i || strcmp(k, key))
            bad++;
    }
    double t2 = tu_now_s();
    ck_assert_uint_eq(bad, 0);
    ck_assert_ptr_null(td_meta_get(m, "blk.100000.attn.weight"));
    fprintf(stderr, "test_meta: %zu keys: insert %.1f ms, lookup %.1f ms\n", n, (t1 - t0) * 1e3,
            (t2 - t1) * 1e3);
    ck_assert_msg(t1 - t0 < 2.0 && t2 - t1 < 2.0, "lookups are not O(1)");
    td_meta_free(m);
}
END_TEST

/* Const readers on several threads at once: nothing in a getter writes. */
typedef struct tu_reader {
    const td_meta *m;
    int ok;
} tu_reader;

static void *tu_read_all(void *p)
{
    tu_reader *r = p;
    r->ok = 1;
    for (int round = 0; round < 20; round++) {
        for (size_t i = 0; i < td_meta_size(r->m); i++) {
            const char *k;
            const td_value *v = td_meta_at(r->m, i, &k);
            if (td_meta_get(r->m, k) != v)
                r->ok = 0;
            for (size_t j = 0; j < td_value_array_len(v); j++) {
                const td_value *it = td_value_array_at(v, j);
                size_t len;
                int64_t x;
                if (!td_value_string(it, &len) && td_value_get_int(it, &x))
                    r->ok = 0;
            }
        }
    }
    return NULL;
}

START_TEST(test_concurrent_readers)
{
    td_error err = {0};
    td_meta *m = td_meta_new();
    const char *strs[] = {"a", "bb", "ccc"};
    int32_t xs[4] = {1, 2, 3, 4};
    for (int i = 0; i < 50; i++) {
        char key[32];
        snprintf(key, sizeof key, "k%d", i);
        if (i % 2)
            TU_OK(td_meta_set_strings(m, key, strs, NULL, 3, &err), &err);
        else
            TU_OK(td_meta_set_array(m, key, TD_META_INT32, xs, 4, &err), &err);
    }
    pthread_t th[4];
    tu_reader r[4];
    for (int i = 0; i < 4; i++) {
        r[i].m = m;
        ck_assert_int_eq(pthread_create(&th[i], NULL, tu_read_all, &r[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ck_assert(r[i].ok);
    }
    td_meta_free(m);
}
END_TEST

/* The MLX-style conveniences: one number, one string, a 1-D array, a list of strings. */
START_TEST(test_convenience_accessors)
{
    td_meta *m = td_meta_new();
    td_error err = {0};
    uint32_t u = 7;
    int32_t ids[3] = {4, -5, 6};
    const char *vocab[] = {"<s>", "hello", ""};
    ck_assert_int_eq(td_meta_set_scalar(m, "n", TD_META_UINT32, &u, &err), 0);
    ck_assert_int_eq(td_meta_set_string(m, "name", "x", 1, &err), 0);
    ck_assert_int_eq(td_meta_set_array(m, "ids", TD_META_INT32, ids, 3, &err), 0);
    ck_assert_int_eq(td_meta_set_strings(m, "vocab", vocab, NULL, 3, &err), 0);
    td_meta_type t;
    size_t n, len;
    const void *items;
    const char *s;
    ck_assert_int_eq(td_meta_get_array(m, "ids", &t, &n, &items), 0);
    ck_assert_int_eq(t, TD_META_INT32);
    ck_assert_uint_eq(n, 3);
    ck_assert_mem_eq(items, ids, sizeof ids);
    ck_assert_int_eq(td_meta_get_array(m, "vocab", &t, &n, &items), 0);
    ck_assert_int_eq(t, TD_META_STRING);
    ck_assert_uint_eq(n, 3);
    ck_assert_ptr_null(items);
    ck_assert_int_eq(td_meta_get_string_at(m, "vocab", 1, &s, &len), 0);
    ck_assert_uint_eq(len, 5);
    ck_assert_mem_eq(s, "hello", 5);
    ck_assert_int_eq(td_meta_get_string_at(m, "vocab", 2, &s, &len), 0);
    ck_assert_uint_eq(len, 0);
    ck_assert_int_eq(td_meta_get_string_at(m, "vocab", 3, &s, &len), TD_ERANGE);
    ck_assert_int_eq(td_meta_get_string_at(m, "ids", 0, &s, &len), TD_EDTYPE);
    ck_assert_int_eq(td_meta_get_array(m, "n", &t, &n, &items), TD_EDTYPE);
    ck_assert_int_eq(td_meta_get_array(m, "missing", &t, &n, &items), TD_ENOTFOUND);
    int64_t v;
    ck_assert_int_eq(td_meta_get_int(m, "n", &v), 0);
    ck_assert_int_eq(v, 7);
    ck_assert_int_eq(td_meta_get_int(m, "name", &v), TD_EDTYPE);
    td_meta_free(m);
}
END_TEST

static Suite *meta_suite(void)
{
    Suite *s = suite_create("meta");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_type_names);
    tcase_add_test(tc, test_scalars_every_type);
    tcase_add_test(tc, test_conversions_and_range);
    tcase_add_test(tc, test_strings);
    tcase_add_test(tc, test_keys_and_arguments);
    tcase_add_test(tc, test_arrays_every_type);
    tcase_add_test(tc, test_string_arrays);
    tcase_add_test(tc, test_nested_arrays);
    tcase_add_test(tc, test_replace_in_place);
    tcase_add_test(tc, test_copy_is_deep);
    tcase_add_test(tc, test_150k_strings);
    tcase_add_test(tc, test_many_keys);
    tcase_add_test(tc, test_concurrent_readers);
    tcase_add_test(tc, test_convenience_accessors);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(meta_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}

/*
 * test_dict.c - td_dict: insertion order, lookups by name across index growth, duplicate and
 * empty names refused without changing the dict, unnamed entries, and what the loaders use:
 * the reserve and names handed over instead of copied.
 */
#include "client.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static td_array *scalar(float v)
{
    td_array *a;
    td_error err = {0};
    TU_OK(td_array_new(TD_FLOAT32, 0, NULL, &v, &a, &err), &err);
    return a;
}

static float value(const td_array *a)
{
    return *(const float *)td_array_data(a);
}

START_TEST(test_order_and_lookup)
{
    td_dict *d = td_dict_new();
    ck_assert_ptr_nonnull(d);
    td_error err = {0};
    char name[32];
    /* 10,000 names: the index grows many times on the way. */
    for (int i = 0; i < 10000; i++) {
        snprintf(name, sizeof name, "layers.%d.weight", i);
        td_array *a = scalar((float)i);
        TU_OK(td_dict_set(d, name, a, &err), &err);
        td_array_release(a);
    }
    ck_assert_uint_eq(td_dict_size(d), 10000);
    for (int i = 0; i < 10000; i++) {
        snprintf(name, sizeof name, "layers.%d.weight", i);
        const td_array *a = td_dict_get(d, name);
        ck_assert_ptr_nonnull(a);
        ck_assert(value(a) == (float)i);
        const char *at;
        ck_assert(value(td_dict_at(d, (size_t)i, &at)) == (float)i);
        ck_assert_str_eq(at, name);
    }
    ck_assert_ptr_null(td_dict_get(d, "layers.10000.weight"));
    ck_assert_ptr_null(td_dict_get(d, ""));
    ck_assert_ptr_null(td_dict_at(d, 10000, NULL));
    td_dict_free(d);
}
END_TEST

START_TEST(test_refusals)
{
    td_dict *d = td_dict_new();
    td_error err = {0};
    td_array *a = scalar(1), *b = scalar(2);
    TU_OK(td_dict_set(d, "w", a, &err), &err);
    ck_assert_int_eq(td_dict_set(d, "w", b, &err), TD_EDUP);
    ck_assert_msg(strstr(err.message, "'w'"), "%s", err.message);
    ck_assert_int_eq(td_dict_set(d, "", b, &err), TD_EINVAL);
    ck_assert_int_eq(td_dict_set(d, NULL, b, &err), TD_EINVAL);
    ck_assert_int_eq(td_dict_set(d, "x", NULL, &err), TD_EINVAL);
    /* Nothing of the refused ones stayed. */
    ck_assert_uint_eq(td_dict_size(d), 1);
    ck_assert(value(td_dict_get(d, "w")) == 1);
    /* Unnamed entries: in order, not found by any name. */
    TU_OK(td_dict_push(d, b, &err), &err);
    TU_OK(td_dict_push(d, b, &err), &err);
    const char *name = "?";
    ck_assert(value(td_dict_at(d, 2, &name)) == 2);
    ck_assert_ptr_null(name);
    ck_assert_uint_eq(td_dict_size(d), 3);
    td_array_release(a);
    td_array_release(b);
    td_dict_free(d);
}
END_TEST

START_TEST(test_set_taking)
{
    td_dict *d = td_dict_new();
    td_error err = {0};
    td_array *a = scalar(1), *b = scalar(2);
    char *name = strdup("w");
    TU_OK(td__dict_set_taking(d, name, a, &err), &err); /* the dict's now */
    char *again = strdup("w");
    ck_assert_int_eq(td__dict_set_taking(d, again, b, &err), TD_EDUP);
    free(again); /* refused: still ours (LeakSanitizer would see it otherwise) */
    ck_assert_int_eq(td__dict_set_taking(d, NULL, b, &err), TD_EINVAL);
    ck_assert(value(td_dict_get(d, "w")) == 1);
    ck_assert_uint_eq(td_dict_size(d), 1);
    td_array_release(a);
    td_array_release(b);
    td_dict_free(d);
}
END_TEST

START_TEST(test_reserve)
{
    td_dict *d = td_dict_new();
    td_error err = {0};
    ck_assert_int_eq(td__dict_reserve(d, 0), 0);
    ck_assert_ptr_null(td_dict_get(d, "a"));
    ck_assert_int_eq(td__dict_reserve(d, 300), 0);
    char name[16];
    for (int i = 0; i < 1000; i++) { /* past the reserve too */
        snprintf(name, sizeof name, "t%d", i);
        td_array *a = scalar((float)i);
        TU_OK(td_dict_set(d, name, a, &err), &err);
        td_array_release(a);
    }
    for (int i = 0; i < 1000; i++) {
        snprintf(name, sizeof name, "t%d", i);
        ck_assert(value(td_dict_get(d, name)) == (float)i);
    }
    td_dict_free(d);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("dict");
    TCase *tc = tcase_create("dict");
    tcase_add_test(tc, test_order_and_lookup);
    tcase_add_test(tc, test_refusals);
    tcase_add_test(tc, test_set_taking);
    tcase_add_test(tc, test_reserve);
    suite_add_tcase(s, tc);
    return tu_run(s);
}

/*
 * test_tensorctl.c - the tensorctl command line, run as a real process: exit codes, the listing
 * (table and JSON), and bit-exact conversion between formats for every dtype both sides hold.
 */
#include "testutil.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Runs tensorctl with args (a shell fragment), capturing stdout and stderr into files in dir.
 * Returns the exit status. */
static int run(const char *dir, const char *args)
{
    const char *tc = getenv("TD_TENSORCTL");
    ck_assert_msg(tc != NULL, "TD_TENSORCTL is not set");
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' %s > '%s/out.txt' 2> '%s/err.txt'", tc, args, dir, dir);
    int st = system(cmd);
    ck_assert(WIFEXITED(st));
    return WEXITSTATUS(st);
}

static char *slurp(const char *dir, const char *name)
{
    char path[256];
    size_t len;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *s = (char *)tu_read_file(path, &len);
    ck_assert_ptr_nonnull(s);
    s = realloc(s, len + 1);
    s[len] = '\0';
    return s;
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

START_TEST(test_exit_codes)
{
    char dir[64], args[512];
    tu_tmpdir(dir);
    ck_assert_int_eq(run(dir, ""), 2);
    ck_assert_int_eq(run(dir, "frobnicate x"), 2);
    ck_assert_int_eq(run(dir, "ls"), 2);
    ck_assert_int_eq(run(dir, "ls --bogus x.npy"), 2);
    ck_assert_int_eq(run(dir, "convert onlyone.npy"), 2);
    ck_assert_int_eq(run(dir, "--version"), 0);
    /* Bad input: exit 1 and exactly one line on stderr naming the file. */
    snprintf(args, sizeof args, "ls %s/missing.npy", dir);
    ck_assert_int_eq(run(dir, args), 1);
    char *err = slurp(dir, "err.txt");
    ck_assert_int_eq(count_lines(err), 1);
    ck_assert_ptr_nonnull(strstr(err, "missing.npy"));
    free(err);
    snprintf(args, sizeof args, "%s/junk.safetensors", dir);
    ck_assert_int_eq(tu_write_file(args, "\x10\0\0\0\0\0\0\0[1,2,3]         ", 24), 0);
    snprintf(args, sizeof args, "ls %s/junk.safetensors", dir);
    ck_assert_int_eq(run(dir, args), 1);
    err = slurp(dir, "err.txt");
    ck_assert_int_eq(count_lines(err), 1);
    ck_assert_ptr_nonnull(strstr(err, "junk.safetensors"));
    free(err);
    snprintf(args, sizeof args, "ls %s/noext", dir);
    ck_assert_int_eq(run(dir, args), 1);
    tu_rmtree(dir);
}
END_TEST

START_TEST(test_ls_reference)
{
    char dir[64], path[512], args[1024];
    tu_tmpdir(dir);
    snprintf(args, sizeof args, "ls --json '%s'",
             tu_testdata("safetensors/data_order.safetensors", path, sizeof path));
    ck_assert_int_eq(run(dir, args), 0);
    char *out = slurp(dir, "out.txt");
    json_error_t jerr;
    json_t *j = json_loads(out, 0, &jerr);
    ck_assert_msg(j != NULL, "invalid JSON: %s\n%s", jerr.text, out);
    ck_assert_str_eq(json_string_value(json_object_get(j, "format")), "safetensors");
    json_t *tensors = json_object_get(j, "tensors");
    ck_assert_int_eq(json_array_size(tensors), 4);
    /* Header order, as the manifest says: alpha, beta, gamma, delta. */
    static const char *order[] = {"alpha", "beta", "gamma", "delta"};
    for (size_t i = 0; i < 4; i++) {
        json_t *t = json_array_get(tensors, i);
        ck_assert_str_eq(json_string_value(json_object_get(t, "name")), order[i]);
        ck_assert_ptr_nonnull(json_object_get(t, "offset"));
        ck_assert_ptr_nonnull(json_object_get(t, "nbytes"));
        ck_assert_ptr_nonnull(json_object_get(t, "dtype"));
        ck_assert(json_is_array(json_object_get(t, "shape")));
    }
    json_decref(j);
    free(out);
    /* The table for people names every tensor too. */
    snprintf(args, sizeof args, "ls '%s'", path);
    ck_assert_int_eq(run(dir, args), 0);
    out = slurp(dir, "out.txt");
    for (size_t i = 0; i < 4; i++)
        ck_assert_ptr_nonnull(strstr(out, order[i]));
    ck_assert_ptr_nonnull(strstr(out, "safetensors"));
    free(out);
    /* Metadata with escapes comes out as valid JSON. */
    snprintf(args, sizeof args, "ls --json '%s'",
             tu_testdata("safetensors/with_metadata.safetensors", path, sizeof path));
    ck_assert_int_eq(run(dir, args), 0);
    out = slurp(dir, "out.txt");
    j = json_loads(out, 0, &jerr);
    ck_assert_msg(j != NULL, "invalid JSON: %s\n%s", jerr.text, out);
    ck_assert(json_object_size(json_object_get(j, "metadata")) > 0);
    json_decref(j);
    free(out);
    tu_rmtree(dir);
}
END_TEST

/* One random array of dtype, saved as npy; converted npy -> safetensors -> npz -> npy and
 * safetensors -> npy; every step keeps dtype, shape and bytes. */
START_TEST(test_convert_bit_exact)
{
    static const td_dtype types[] = {TD_BOOL,     TD_UINT8,   TD_UINT16,  TD_UINT32,   TD_UINT64,
                                     TD_INT8,     TD_INT16,   TD_INT32,   TD_INT64,    TD_FLOAT16,
                                     TD_BFLOAT16, TD_FLOAT32, TD_FLOAT64, TD_COMPLEX64};
    char dir[64], args[1024];
    tu_tmpdir(dir);
    unsigned seed = 99;
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        const char *dn = td_dtype_name(types[i]);
        int64_t shape[3] = {3, 1, 5};
        uint8_t buf[15 * 16];
        for (size_t k = 0; k < sizeof buf; k++) {
            seed = seed * 1664525u + 1013904223u;
            buf[k] = (uint8_t)(seed >> 24);
            if (types[i] == TD_BOOL)
                buf[k] &= 1;
        }
        td_array *a;
        td_error err = {0};
        TU_OK(td_array_new(types[i], 3, shape, buf, &a, &err), &err);
        char p0[256], p1[256], p2[256], p3[256], p4[256];
        snprintf(p0, sizeof p0, "%s/%s.npy", dir, dn);
        snprintf(p1, sizeof p1, "%s/%s.safetensors", dir, dn);
        snprintf(p2, sizeof p2, "%s/%s.npz", dir, dn);
        snprintf(p3, sizeof p3, "%s/%s.back.npy", dir, dn);
        snprintf(p4, sizeof p4, "%s/%s.back.safetensors", dir, dn);
        TU_OK(td_save(p0, a, &err), &err);
        const char *steps[][2] = {{p0, p1}, {p1, p2}, {p2, p3}, {p1, p4}};
        for (size_t s = 0; s < 4; s++) {
            snprintf(args, sizeof args, "convert%s '%s' '%s'", s == 1 ? " --compress" : "",
                     steps[s][0], steps[s][1]);
            int rc = run(dir, args);
            char *e = slurp(dir, "err.txt");
            ck_assert_msg(rc == 0, "%s: %s", args, e);
            free(e);
        }
        const char *check[] = {p1, p2, p3, p4};
        for (size_t c = 0; c < 4; c++) {
            td_dict *d;
            TU_OK(td_load(check[c], NULL, &d, NULL, &err), &err);
            ck_assert_uint_eq(td_dict_size(d), 1);
            const char *name;
            const td_array *b = td_dict_at(d, 0, &name);
            if (c != 2)
                ck_assert_str_eq(name, "arr_0");
            ck_assert_msg(td_array_dtype(b) == types[i], "%s: dtype %s", check[c],
                          td_dtype_name(td_array_dtype(b)));
            ck_assert_int_eq(td_array_ndim(b), 3);
            ck_assert_mem_eq(td_array_shape(b), shape, sizeof shape);
            ck_assert_uint_eq(td_array_nbytes(b), td_array_nbytes(a));
            ck_assert_msg(memcmp(td_array_data(b), td_array_data(a), td_array_nbytes(a)) == 0,
                          "%s: bytes differ", check[c]);
            td_dict_free(d);
        }
        td_array_release(a);
    }
    tu_rmtree(dir);
}
END_TEST

/* Converting a reference safetensors file to safetensors keeps its metadata and every tensor. */
START_TEST(test_convert_keeps_metadata)
{
    char dir[64], path[512], out[256], args[1024];
    tu_tmpdir(dir);
    tu_testdata("safetensors/with_metadata.safetensors", path, sizeof path);
    snprintf(out, sizeof out, "%s/copy.safetensors", dir);
    snprintf(args, sizeof args, "convert '%s' '%s'", path, out);
    ck_assert_int_eq(run(dir, args), 0);
    td_dict *d1, *d2;
    td_meta *m1, *m2;
    td_error err = {0};
    TU_OK(td_load(path, NULL, &d1, &m1, &err), &err);
    TU_OK(td_load(out, NULL, &d2, &m2, &err), &err);
    ck_assert_uint_eq(td_meta_size(m1), td_meta_size(m2));
    ck_assert_uint_gt(td_meta_size(m1), 0);
    for (size_t i = 0; i < td_meta_size(m1); i++) {
        const char *k1;
        const td_value *v1 = td_meta_at(m1, i, &k1);
        const td_value *v2 = td_meta_get(m2, k1);
        ck_assert_ptr_nonnull(v2);
        size_t n1, n2;
        const char *s1 = td_value_string(v1, &n1), *s2 = td_value_string(v2, &n2);
        ck_assert_uint_eq(n1, n2);
        ck_assert_mem_eq(s1, s2, n1);
    }
    ck_assert_uint_eq(td_dict_size(d1), td_dict_size(d2));
    for (size_t i = 0; i < td_dict_size(d1); i++) {
        const char *name;
        const td_array *a = td_dict_at(d1, i, &name);
        const td_array *b = td_dict_get(d2, name);
        ck_assert_ptr_nonnull(b);
        ck_assert_uint_eq(td_array_nbytes(a), td_array_nbytes(b));
        ck_assert_mem_eq(td_array_data(a), td_array_data(b), td_array_nbytes(a));
    }
    td_dict_free(d1);
    td_dict_free(d2);
    td_meta_free(m1);
    td_meta_free(m2);
    /* A format that cannot hold a dtype refuses it, exit 1, and leaves no file. */
    snprintf(args, sizeof args, "convert '%s' '%s/c.safetensors'",
             tu_testdata("npy/complex64.npy", path, sizeof path), dir);
    ck_assert_int_eq(run(dir, args), 0);
    snprintf(args, sizeof args, "convert '%s' '%s/bad.gguf'",
             tu_testdata("npy/complex64.npy", path, sizeof path), dir);
    ck_assert_int_eq(run(dir, args), 1);
    char probe[256];
    snprintf(probe, sizeof probe, "%s/bad.gguf", dir);
    ck_assert_int_ne(access(probe, F_OK), 0);
    tu_rmtree(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tensorctl");
    TCase *tc = tcase_create("tensorctl");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_exit_codes);
    tcase_add_test(tc, test_ls_reference);
    tcase_add_test(tc, test_convert_bit_exact);
    tcase_add_test(tc, test_convert_keeps_metadata);
    suite_add_tcase(s, tc);
    return tu_run(s);
}

/*
 * test_npy.c - .npy: the header parser, numpy interoperability in both directions (numpy runs
 * at test time), the reference files, hostile headers, and the embedded loader and saver
 * around npy (atomic files, extensions, descriptors).
 */
#include "client.h"
#include "dtype.h"
#include "npy.h"
#include "testutil.h"

#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Builds an npy file from a header dict string (padded to 64, version 1.0) and data. */
static uint8_t *mk_npy(const char *dict, const void *data, size_t dlen, size_t *len)
{
    size_t hl = strlen(dict);
    size_t total = (10 + hl + 1 + 63) / 64 * 64;
    uint8_t *p = malloc(total + dlen);
    memcpy(p, "\x93NUMPY\x01\x00", 8);
    p[8] = (uint8_t)((total - 10) & 0xff);
    p[9] = (uint8_t)((total - 10) >> 8);
    memcpy(p + 10, dict, hl);
    memset(p + 10 + hl, ' ', total - 10 - hl - 1);
    p[total - 1] = '\n';
    if (dlen)
        memcpy(p + total, data, dlen);
    *len = total + dlen;
    return p;
}

static int index_buf(const uint8_t *p, size_t len, td__table *t, td_error *err)
{
    td__table_init(t, TD_FORMAT_NPY);
    return td__npy_index(TD__RD_MEM(p, len, "mem.npy"), t, err);
}

START_TEST(test_header_variants)
{
    static const struct {
        const char *dict;
        td_dtype dtype;
        uint32_t ndim;
        int64_t d0, d1;
        uint32_t layout;
    } ok[] = {
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", TD_FLOAT32, 2, 2, 3, 0},
        {"{'shape': (2, 3), 'fortran_order': False, 'descr': '<f4'}", TD_FLOAT32, 2, 2, 3, 0},
        {"{ 'fortran_order' :False ,'shape':(2,3,),'descr':'<f4' , }", TD_FLOAT32, 2, 2, 3, 0},
        {"{\"descr\": \"<i2\", \"fortran_order\": False, \"shape\": (2L, 3L)}", TD_INT16, 2, 2, 3,
         0},
        {"{'descr': '>i2', 'fortran_order': False, 'shape': (2, 3)}", TD_INT16, 2, 2, 3,
         TD__LAYOUT_SWAP},
        {"{'descr': '>u1', 'fortran_order': False, 'shape': (2, 3)}", TD_UINT8, 2, 2, 3, 0},
        {"{'descr': '=f8', 'fortran_order': True, 'shape': (2, 3)}", TD_FLOAT64, 2, 2, 3,
         TD__LAYOUT_FORTRAN},
        {"{'descr': '<f8', 'fortran_order': True, 'shape': (6,)}", TD_FLOAT64, 1, 6, 0, 0},
        {"{'descr': '|b1', 'fortran_order': False, 'shape': ()}", TD_BOOL, 0, 0, 0, 0},
        {"{'descr': '<V2', 'fortran_order': False, 'shape': (2, 3)}", TD_BFLOAT16, 2, 2, 3, 0},
        {"{'descr': '>c8', 'fortran_order': True, 'shape': (2, 3)}", TD_COMPLEX64, 2, 2, 3,
         TD__LAYOUT_SWAP | TD__LAYOUT_FORTRAN},
        {"{'descr':'<c16','fortran_order':False,'shape':(0, 3)}", TD_COMPLEX128, 2, 0, 3, 0},
    };
    uint8_t data[6 * 16] = {0};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        size_t len;
        size_t isz = td_dtype_size(ok[i].dtype);
        size_t n = ok[i].ndim == 0   ? 1
                   : ok[i].ndim == 1 ? (size_t)ok[i].d0
                                     : (size_t)(ok[i].d0 * ok[i].d1);
        uint8_t *p = mk_npy(ok[i].dict, data, n * isz, &len);
        td__table t;
        td_error err = {0};
        int rc = index_buf(p, len, &t, &err);
        ck_assert_msg(rc == 0, "%s: %s", ok[i].dict, err.message);
        ck_assert_int_eq(t.n, 1);
        const td__entry *e = &t.entries[0];
        ck_assert_ptr_null(e->name);
        ck_assert_int_eq(e->dtype, ok[i].dtype);
        ck_assert_uint_eq(e->ndim, ok[i].ndim);
        ck_assert_uint_eq(e->layout, ok[i].layout);
        ck_assert_uint_eq(e->nbytes, n * isz);
        if (ok[i].ndim >= 1)
            ck_assert_int_eq(e->shape[0], ok[i].d0);
        if (ok[i].ndim >= 2)
            ck_assert_int_eq(e->shape[1], ok[i].d1);
        if (!e->layout)
            ck_assert_uint_eq(e->offset % 64, 0);
        td__table_destroy(&t);
        free(p);
    }
}
END_TEST

START_TEST(test_hostile_headers)
{
    static const struct {
        const char *dict;
        int code;
        const char *needle;
    } bad[] = {
        {"{'descr': '<f3', 'fortran_order': False, 'shape': (2,)}", TD_EDTYPE, "'<f3'"},
        {"{'descr': '|O', 'fortran_order': False, 'shape': (2,)}", TD_EDTYPE, "object"},
        {"{'descr': '<U4', 'fortran_order': False, 'shape': (2,)}", TD_EDTYPE, "string"},
        {"{'descr': '<M8[ns]', 'fortran_order': False, 'shape': (2,)}", TD_EDTYPE, "datetime"},
        {"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,)}", TD_EDTYPE,
         "structured"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (-2,)}", TD_ERANGE, "negative"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}", TD_ERANGE,
         "shape[0]"},
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296)}", TD_ERANGE,
         "overflow"},
        {"{'descr': '<f4', 'fortran_order': False}", TD_EFORMAT, "shape"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'extra': 1}", TD_EFORMAT,
         "extra"},
        {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}", TD_EFORMAT,
         "twice"},
        {"{'descr': '<f4', 'fortran_order': maybe, 'shape': (2,)}", TD_EFORMAT, "fortran_order"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2)}", TD_EFORMAT, "tuple"},
        {"['descr', '<f4']", TD_EFORMAT, "expected '{'"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} junk", TD_EFORMAT, "after"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,3", TD_EFORMAT, "npy header"},
    };
    uint8_t data[64] = {0};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t len;
        uint8_t *p = mk_npy(bad[i].dict, data, sizeof data, &len);
        td__table t;
        td_error err = {0};
        int rc = index_buf(p, len, &t, &err);
        ck_assert_msg(rc == bad[i].code, "%s: got %s (%s)", bad[i].dict, td_err_name(rc),
                      err.message);
        ck_assert_msg(strstr(err.message, bad[i].needle), "%s: message '%s' lacks '%s'",
                      bad[i].dict, err.message, bad[i].needle);
        ck_assert_msg(strstr(err.message, "mem.npy"), "message names the file: %s", err.message);
        td__table_destroy(&t);
        free(p);
    }
}
END_TEST

START_TEST(test_truncation_and_magic)
{
    float v[6] = {1, 2, 3, 4, 5, 6};
    size_t len;
    uint8_t *p =
        mk_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", v, sizeof v, &len);
    /* Every prefix fails cleanly. */
    for (size_t k = 0; k < len; k++) {
        uint8_t *q = malloc(k ? k : 1);
        memcpy(q, p, k);
        td__table t;
        td_error err = {0};
        int rc = index_buf(q, k, &t, &err);
        ck_assert_msg(rc < 0, "prefix %zu accepted", k);
        ck_assert_msg(rc == TD_ETRUNC || rc == TD_EFORMAT, "prefix %zu: %s", k, td_err_name(rc));
        td__table_destroy(&t);
        free(q);
    }
    td__table t;
    td_error err = {0};
    ck_assert_int_eq(index_buf(p, len, &t, &err), 0);
    td__table_destroy(&t);

    uint8_t *q = malloc(len);
    memcpy(q, p, len);
    q[1] = 'n'; /* bad magic */
    ck_assert_int_eq(index_buf(q, len, &t, &err), TD_EFORMAT);
    ck_assert_ptr_nonnull(strstr(err.message, "magic"));
    td__table_destroy(&t);
    memcpy(q, p, len);
    q[6] = 4; /* version 4.0 */
    ck_assert_int_eq(index_buf(q, len, &t, &err), TD_EVERSION);
    ck_assert_ptr_nonnull(strstr(err.message, "4.0"));
    td__table_destroy(&t);
    memcpy(q, p, len);
    q[6] = 2; /* 2.0 reads a u32 length: now far past the end */
    ck_assert_int_lt(index_buf(q, len, &t, &err), 0);
    td__table_destroy(&t);
    /* Huge header length. */
    memcpy(q, p, len);
    q[6] = 2;
    q[8] = q[9] = q[10] = q[11] = 0xff;
    ck_assert_int_eq(index_buf(q, len, &t, &err), TD_ELIMIT);
    td__table_destroy(&t);
    free(q);
    free(p);
}
END_TEST

/* numpy writes every variant; we load each and compare with the C-order little-endian bytes
 * numpy dumps beside it. */

START_TEST(test_numpy_writes_we_read)
{
    char dir[64];
    tu_tmpdir(dir);
    const char *args[] = {dir, NULL};
    ck_assert_int_eq(tu_py("npy.py", "write", args), 0);
    struct dirent **ents;
    int nents = scandir(dir, &ents, NULL, alphasort);
    ck_assert_int_ge(nents, 0);
    int count = 0, fds = tu_count_fds();
    char path[512];
    for (int k = 0; k < nents; k++) {
        size_t nl = strlen(ents[k]->d_name);
        if (nl < 4 || strcmp(ents[k]->d_name + nl - 4, ".npy") != 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, ents[k]->d_name);
        td_array *a = NULL;
        td_error err = {0};
        TU_OK(td_load_array(path, NULL, &a, &err), &err);
        char side[600];
        size_t rawlen, shlen;
        snprintf(side, sizeof side, "%.*s.raw", (int)(strlen(path) - 4), path);
        uint8_t *raw = tu_read_file(side, &rawlen);
        snprintf(side, sizeof side, "%.*s.shape", (int)(strlen(path) - 4), path);
        char *shape = (char *)tu_read_file(side, &shlen);
        ck_assert_ptr_nonnull(raw);
        ck_assert_ptr_nonnull(shape);
        shape = realloc(shape, shlen + 1);
        shape[shlen] = '\0';
        char *s = shape;
        int nd = 0;
        while (*s) {
            long long v = strtoll(s, &s, 10);
            ck_assert_int_lt(nd, td_array_ndim(a));
            ck_assert_int_eq(td_array_shape(a)[nd], v);
            nd++;
            while (*s == ' ')
                s++;
        }
        ck_assert_int_eq(nd, td_array_ndim(a));
        ck_assert_msg(td_array_nbytes(a) == rawlen, "%s: %llu bytes, numpy has %zu", path,
                      (unsigned long long)td_array_nbytes(a), rawlen);
        ck_assert_msg(memcmp(td_array_data(a), raw, rawlen) == 0, "%s: bytes differ", path);
        if (strstr(path, "/v2.npy"))
            ck_assert_int_eq(td_array_dtype(a), TD_BFLOAT16);
        ck_assert_uint_eq((uintptr_t)td_array_data(a) % 16, 0);
        td_array_release(a);
        free(raw);
        free(shape);
        count++;
    }
    for (int k = 0; k < nents; k++)
        free(ents[k]);
    free(ents);
    ck_assert_int_eq(count, 14 * 4 + 6 + 3);
    ck_assert_int_eq(tu_count_fds(), fds);
    tu_rmtree(dir);
}
END_TEST

/* We write every dtype npy holds; numpy reads each back and compares with the raw bytes. */

START_TEST(test_we_write_numpy_reads)
{
    char dir[64];
    tu_tmpdir(dir);
    static const td_dtype types[] = {
        TD_BOOL,      TD_UINT8,      TD_UINT16,   TD_UINT32,      TD_UINT64,     TD_INT8,
        TD_INT16,     TD_INT32,      TD_INT64,    TD_FLOAT16,     TD_FLOAT32,    TD_FLOAT64,
        TD_COMPLEX64, TD_COMPLEX128, TD_BFLOAT16, TD_FLOAT8_E4M3, TD_FLOAT8_E5M2};
    static const struct {
        const char *name;
        int ndim;
        int64_t shape[2];
    } shapes[] = {{"2x3", 2, {2, 3}}, {"0d", 0, {0, 0}}, {"empty", 2, {0, 5}}, {"1d", 1, {7, 0}}};
    unsigned seed = 1;
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        for (size_t s = 0; s < 4; s++) {
            uint8_t buf[7 * 16];
            for (size_t k = 0; k < sizeof buf; k++) {
                seed = seed * 1103515245u + 12345u;
                buf[k] = (uint8_t)(seed >> 16);
                if (types[i] == TD_BOOL)
                    buf[k] &= 1;
            }
            td_array *a;
            td_error err = {0};
            TU_OK(td_array_new(types[i], shapes[s].ndim, shapes[s].shape, buf, &a, &err), &err);
            char path[256];
            snprintf(path, sizeof path, "%s/%s_%s", dir, td_dtype_name(types[i]), shapes[s].name);
            TU_OK(td_save(path, a, &err), &err); /* .npy appended */
            snprintf(path, sizeof path, "%s/%s_%s.raw", dir, td_dtype_name(types[i]),
                     shapes[s].name);
            ck_assert_int_eq(tu_write_file(path, td_array_data(a), td_array_nbytes(a)), 0);
            td_array_release(a);
        }
    }
    const char *args[] = {dir, NULL};
    ck_assert_int_eq(tu_py("npy.py", "check", args), 0);
    tu_rmtree(dir);
}
END_TEST

/* Every npy in the reference set matches MANIFEST.json. */
START_TEST(test_reference_files)
{
    char path[512];
    json_error_t jerr;
    json_t *man = json_load_file(tu_testdata("MANIFEST.json", path, sizeof path),
                                 JSON_DECODE_INT_AS_REAL, &jerr);
    ck_assert_msg(man != NULL, "MANIFEST.json: %s", jerr.text);
    json_t *files = json_object_get(man, "files");
    const char *rel;
    json_t *entry;
    int checked = 0;
    json_object_foreach(files, rel, entry)
    {
        if (strcmp(json_string_value(json_object_get(entry, "format")), "npy") != 0)
            continue;
        json_t *tensor = json_array_get(json_object_get(entry, "tensors"), 0);
        td_array *a = NULL;
        td_error err = {0};
        TU_OK(td_load_array(tu_testdata(rel, path, sizeof path), NULL, &a, &err), &err);
        td_dtype want;
        ck_assert_int_eq(
            td_dtype_from_name(json_string_value(json_object_get(tensor, "dtype")), &want), 0);
        ck_assert_msg(td_array_dtype(a) == want, "%s: dtype", rel);
        json_t *shape = json_object_get(tensor, "shape");
        ck_assert_int_eq(td_array_ndim(a), (int)json_array_size(shape));
        for (size_t k = 0; k < json_array_size(shape); k++)
            ck_assert_int_eq(td_array_shape(a)[k],
                             (int64_t)json_number_value(json_array_get(shape, k)));
        ck_assert_uint_eq(td_array_nbytes(a),
                          (uint64_t)json_number_value(json_object_get(tensor, "nbytes")));
        char hex[65];
        tu_sha256_hex(td_array_data(a), td_array_nbytes(a), hex);
        ck_assert_str_eq(hex, json_string_value(json_object_get(tensor, "sha256")));
        /* The listing offset is the manifest's file offset. */
        void *base;
        size_t len;
        uint8_t *bytes = tu_read_file(path, &len);
        base = bytes;
        td__table t;
        td__table_init(&t, TD_FORMAT_NPY);
        TU_OK(td__npy_index(TD__RD_MEM(base, len, rel), &t, &err), &err);
        uint64_t off = t.entries[0].layout ? t.entries[0].src.offset : t.entries[0].offset;
        ck_assert_uint_eq(off, (uint64_t)json_number_value(json_object_get(tensor, "offset")));
        td__table_destroy(&t);
        free(bytes);
        td_array_release(a);
        checked++;
    }
    ck_assert_int_eq(checked, 17); /* 7 in npy/, 10 dequantized references in gguf/ */
    json_decref(man);
}
END_TEST

START_TEST(test_atomic_save_and_extensions)
{
    char dir[64], path[256], probe[300];
    tu_tmpdir(dir);
    int fds = tu_count_fds();
    td_error err = {0};
    int64_t shape[1] = {4};
    float v[4] = {1, 2, 3, 4};
    td_array *a, *q;
    TU_OK(td_array_new(TD_FLOAT32, 1, shape, v, &a, &err), &err);
    /* The extension is appended when missing, and not doubled. */
    snprintf(path, sizeof path, "%s/x", dir);
    TU_OK(td_save(path, a, &err), &err);
    snprintf(probe, sizeof probe, "%s/x.npy", dir);
    struct stat st;
    ck_assert_int_eq(stat(probe, &st), 0);
    TU_OK(td_save(probe, a, &err), &err);
    snprintf(probe, sizeof probe, "%s/x.npy.npy", dir);
    ck_assert_int_ne(stat(probe, &st), 0);
    /* Never appended on load. */
    td_dict *d = NULL;
    ck_assert_int_eq(td_load(path, NULL, &d, NULL, &err), TD_ENOTSUP);
    ck_assert_ptr_nonnull(strstr(err.message, "extension"));
    ck_assert_ptr_null(d);
    /* Metadata asked of npy is an error. */
    td_meta *m = NULL;
    snprintf(probe, sizeof probe, "%s/x.npy", dir);
    ck_assert_int_eq(td_load(probe, NULL, &d, &m, &err), TD_ENOMETA);
    /* The format option overrides the extension. */
    snprintf(probe, sizeof probe, "%s/x.npy", dir);
    snprintf(path, sizeof path, "%s/renamed.bin", dir);
    ck_assert_int_eq(rename(probe, path), 0);
    td_load_options opt = TD_LOAD_OPTIONS_INIT;
    opt.format = TD_FORMAT_NPY;
    TU_OK(td_load_array(path, &opt, &q, &err), &err);
    ck_assert_mem_eq(td_array_data(q), v, sizeof v);
    ck_assert_ptr_null(td_array_data_mut(q)); /* views are read-only */
    td_array_release(q);

    /* A failed save leaves the old file untouched and no temporary behind. */
    td_array *blocks;
    int64_t bshape[1] = {32};
    TU_OK(td_array_new(TD_Q4_0, 1, bshape, NULL, &blocks, &err), &err);
    size_t before_len, after_len;
    uint8_t *before = tu_read_file(path, &before_len);
    ck_assert_int_eq(td_save(path, blocks, &err), TD_EDTYPE);
    ck_assert_ptr_nonnull(strstr(err.message, "q4_0"));
    snprintf(probe, sizeof probe, "%s/renamed.bin.npy", dir);
    ck_assert_int_ne(stat(probe, &st), 0);
    uint8_t *after = tu_read_file(path, &after_len);
    ck_assert_uint_eq(before_len, after_len);
    ck_assert_mem_eq(before, after, before_len);
    free(before);
    free(after);
    ck_assert_msg(tu_count_entries(dir) == 1, "a temporary file was left behind in %s", dir);
    /* A directory we cannot write to fails cleanly (root ignores permissions, so use a path
     * whose parent does not exist). */
    snprintf(path, sizeof path, "%s/missing/y", dir);
    ck_assert_int_eq(td_save(path, a, &err), TD_ENOENT);
    ck_assert_ptr_nonnull(strstr(err.message, "missing"));
    td_array_release(blocks);
    td_array_release(a);
    ck_assert_int_eq(tu_count_fds(), fds);
    tu_rmtree(dir);
}
END_TEST

/* The mapping outlives the dict: arrays keep it alive; the file may even be removed. */
START_TEST(test_views_keep_mapping)
{
    char dir[64], path[256];
    tu_tmpdir(dir);
    td_error err = {0};
    int64_t shape[2] = {64, 64};
    td_array *a;
    TU_OK(td_array_new(TD_FLOAT64, 2, shape, NULL, &a, &err), &err);
    double *p = td_array_data_mut(a);
    for (int i = 0; i < 64 * 64; i++)
        p[i] = i * 0.25;
    snprintf(path, sizeof path, "%s/big.npy", dir);
    TU_OK(td_save(path, a, &err), &err);
    td_dict *d;
    TU_OK(td_load(path, NULL, &d, NULL, &err), &err);
    td_array *v = td_array_retain(td_dict_at(d, 0, NULL));
    td_dict_free(d);
    unlink(path);
    ck_assert_mem_eq(td_array_data(v), td_array_data(a), td_array_nbytes(a));
    ck_assert_uint_eq((uintptr_t)td_array_data(v) % 64, 0);
    td_array_release(v);
    td_array_release(a);
    tu_rmtree(dir);
}
END_TEST

START_TEST(test_load_errors_name_the_file)
{
    td_error err = {0};
    td_dict *d;
    ck_assert_int_eq(td_load("/nonexistent/x.npy", NULL, &d, NULL, &err), TD_ENOENT);
    ck_assert_ptr_nonnull(strstr(err.message, "/nonexistent/x.npy"));
    char dir[64], path[256];
    tu_tmpdir(dir);
    snprintf(path, sizeof path, "%s/empty.npy", dir);
    ck_assert_int_eq(tu_write_file(path, "", 0), 0);
    ck_assert_int_eq(td_load(path, NULL, &d, NULL, &err), TD_ETRUNC);
    snprintf(path, sizeof path, "%s/dir.npy", dir);
    ck_assert_int_eq(mkdir(path, 0755), 0);
    ck_assert_int_eq(td_load(path, NULL, &d, NULL, &err), TD_EINVAL);
    tu_rmtree(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("npy");
    TCase *tc = tcase_create("npy");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_header_variants);
    tcase_add_test(tc, test_hostile_headers);
    tcase_add_test(tc, test_truncation_and_magic);
    tcase_add_test(tc, test_numpy_writes_we_read);
    tcase_add_test(tc, test_we_write_numpy_reads);
    tcase_add_test(tc, test_reference_files);
    tcase_add_test(tc, test_atomic_save_and_extensions);
    tcase_add_test(tc, test_views_keep_mapping);
    tcase_add_test(tc, test_load_errors_name_the_file);
    suite_add_tcase(s, tc);
    return tu_run(s);
}

/*
 * test_npz.c - .npz: what numpy writes we read (np.savez, np.savez_compressed, streamed with
 * data descriptors, zip64 extras on every member, big-endian, Fortran, empty and 0-d members,
 * every npy dtype), what we write numpy reads bit for bit (stored and deflated, MLX's arr_N
 * naming, bfloat16 as V2, zip64), stored members served zero-copy from the mapping and aligned,
 * the reference files (MANIFEST.json) and two of PyWavelets' files, and hostile archives:
 * zip bombs by ratio, by bound and by lying sizes, CRC mismatches, bad names, duplicate keys,
 * bad members, truncation and corruption at every byte.
 */
#include "common.h"
#include "npy.h"
#include "npz.h"
#include "table.h"
#include "testutil.h"
#include "writer.h"
#include "flate.h"
#include "zip.h"
#include "zip_writer.h"
#include "index.h"

#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_dir[64];

/* tests/py/npz.py gen: numpy-written archives with expect.txt, hostile ones with bad.txt. */
static void suite_setup(void)
{
    tu_tmpdir(g_dir);
    const char *args[] = {g_dir, NULL};
    ck_assert_int_eq(tu_py("npz.py", "gen", args), 0);
}

static void suite_teardown(void)
{
    tu_rmtree(g_dir);
}

static int load_npz(const char *path, uint64_t max_inflated, td_dict **d, td_error *err)
{
    td_load_options o = TD_LOAD_OPTIONS_INIT;
    o.mode = TD_MODE_EMBEDDED;
    o.format = TD_FORMAT_NPZ;
    o.max_inflated = max_inflated;
    return td_load(path, &o, d, NULL, err);
}

static void shape_str(const td_array *a, char *out, size_t cap)
{
    int nd = td_array_ndim(a);
    const int64_t *s = td_array_shape(a);
    size_t n = 0;
    out[0] = '\0';
    for (int i = 0; i < nd; i++)
        n += (size_t)snprintf(out + n, cap - n, "%s%lld", i ? "," : "", (long long)s[i]);
    if (nd == 0)
        snprintf(out, cap, "-");
}

static void sha_of(const td_array *a, char hex[65])
{
    tu_sha256_hex(td_array_data(a), td_array_nbytes(a), hex);
}

/* Checks every line of an expectation file against td_load; returns the lines checked. */
static int check_expect(const char *expect, const char *dir)
{
    FILE *f = fopen(expect, "r");
    ck_assert_msg(f != NULL, "cannot open %s", expect);
    char line[2048], cur[1024] = "";
    td_dict *d = NULL;
    size_t idx = 0;
    int lines = 0;
    td_error err = {0};
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        char *fn = strtok(line, "\t"), *key = strtok(NULL, "\t"), *dt = strtok(NULL, "\t"),
             *shape = strtok(NULL, "\t"), *sha = strtok(NULL, "\t");
        ck_assert(fn && key && dt && shape && sha);
        if (strcmp(fn, cur) != 0) {
            if (d)
                ck_assert_msg(idx == td_dict_size(d), "%s: %zu arrays, expected %zu", cur,
                              td_dict_size(d), idx);
            td_dict_free(d);
            d = NULL;
            snprintf(cur, sizeof cur, "%s", fn);
            char path[1200];
            if (fn[0] == '/')
                snprintf(path, sizeof path, "%s", fn);
            else
                snprintf(path, sizeof path, "%s/%s", dir, fn);
            TU_OK(load_npz(path, 0, &d, &err), &err);
            idx = 0;
        }
        const char *name;
        const td_array *a = td_dict_at(d, idx++, &name);
        ck_assert_msg(a != NULL, "%s: no array %zu (%s)", fn, idx - 1, key);
        ck_assert_msg(name && strcmp(name, key) == 0, "%s: array %zu is '%s', expected '%s'", fn,
                      idx - 1, name ? name : "(null)", key);
        ck_assert_str_eq(td_dtype_name(td_array_dtype(a)), dt);
        char s[256], h[65];
        shape_str(a, s, sizeof s);
        ck_assert_msg(strcmp(s, shape) == 0, "%s: %s: shape %s, expected %s", fn, key, s, shape);
        sha_of(a, h);
        ck_assert_msg(strcmp(h, sha) == 0, "%s: %s: data differs from numpy's", fn, key);
        lines++;
    }
    if (d)
        ck_assert_uint_eq(idx, td_dict_size(d));
    td_dict_free(d);
    fclose(f);
    return lines;
}

/* Indexes a file with td__npz_index; returns the bytes (caller frees) and fills t. */
static uint8_t *index_file(const char *path, td__table *t, size_t *len)
{
    uint8_t *p = tu_read_file(path, len);
    ck_assert_msg(p != NULL, "cannot read %s", path);
    td__table_init(t, TD_FORMAT_NPZ);
    td_error err = {0};
    TU_OK(td__npz_index(TD__RD_MEM(p, *len, path), 0, t, &err), &err);
    return p;
}

START_TEST(test_numpy_writes_we_read)
{
    int fds = tu_count_fds();
    char expect[128];
    snprintf(expect, sizeof expect, "%s/expect.txt", g_dir);
    int n = check_expect(expect, g_dir);
    ck_assert_int_ge(n, 90);
    /* An archive with no members is an empty dict. */
    char path[128];
    snprintf(path, sizeof path, "%s/np_empty_archive.npz", g_dir);
    td_dict *d = NULL;
    td_error err = {0};
    TU_OK(load_npz(path, 0, &d, &err), &err);
    ck_assert_uint_eq(td_dict_size(d), 0);
    td_dict_free(d);
    ck_assert_int_eq(tu_count_fds(), fds);
}
END_TEST

/* The layout each numpy-written member must get, from the naming scheme of the generator. */
static uint32_t expected_layout(const td__entry *e, int deflated)
{
    uint32_t l = deflated ? TD__LAYOUT_DEFLATE : 0;
    if (strstr(e->name, "_be") && td_dtype_size(e->dtype) > 1)
        l |= TD__LAYOUT_SWAP;
    if (strstr(e->name, "fortran") && e->nbytes > 0)
        l |= TD__LAYOUT_FORTRAN;
    return l;
}

START_TEST(test_layouts)
{
    static const struct {
        const char *file;
        int deflated;
    } files[] = {{"np_savez.npz", 0},
                 {"np_compressed.npz", 1},
                 {"np_stream.npz", 0},
                 {"np_stream_compressed.npz", 1}};
    for (size_t k = 0; k < 4; k++) {
        char path[128];
        snprintf(path, sizeof path, "%s/%s", g_dir, files[k].file);
        td__table t;
        size_t len;
        uint8_t *p = index_file(path, &t, &len);
        ck_assert_uint_ge(t.n, 20);
        for (size_t i = 0; i < t.n; i++) {
            const td__entry *e = &t.entries[i];
            ck_assert_msg(e->layout == expected_layout(e, files[k].deflated),
                          "%s: %s: layout %u, expected %u", files[k].file, e->name, e->layout,
                          expected_layout(e, files[k].deflated));
            ck_assert_uint_eq(e->region, 0);
            if (!e->layout) {
                /* zero-copy: the view is the member's npy data, inside the file */
                ck_assert(e->offset + e->nbytes <= len);
            } else if (e->layout & TD__LAYOUT_DEFLATE) {
                ck_assert_uint_eq(e->src.inflated, e->src.skip + e->nbytes);
                ck_assert(e->src.offset + e->src.nbytes <= len);
                ck_assert_uint_eq(e->src.skip % 64, 0); /* numpy pads its headers */
                /* td__npz_inflate_entry gives the member's data bytes, header dropped */
                uint8_t *buf = malloc(e->nbytes ? e->nbytes : 1);
                td_error err = {0};
                TU_OK(td__npz_inflate_entry(e, p, len, buf, path, &err), &err);
                /* the whole member, header included, has the same data after the header */
                uint8_t *whole = malloc(e->src.inflated);
                TU_OK(td__npz_inflate_member(e, p, len, whole, path, &err), &err);
                ck_assert(memcmp(whole, "\x93NUMPY", 6) == 0);
                ck_assert(memcmp(whole + e->src.skip, buf, e->nbytes) == 0);
                free(whole);
                free(buf);
            } else {
                ck_assert_uint_eq(e->src.nbytes, e->nbytes);
                ck_assert(e->src.offset + e->src.nbytes <= len);
            }
        }
        td__table_destroy(&t);
        free(p);
    }
}
END_TEST

START_TEST(test_stored_members_are_zero_copy)
{
    /* Load a stored npz, then change the file under the mapping: a view into the mapping sees
     * the new bytes, a copy would not. The member is numpy's "big" (float32) saved again by
     * td_savez, whose stored
     * members are aligned: numpy puts members at any offset, and those are copied once into
     * aligned memory instead (test_align). */
    char src[128], dir[64], path[128];
    snprintf(src, sizeof src, "%s/np_savez.npz", g_dir);
    tu_tmpdir(dir);
    snprintf(path, sizeof path, "%s/zc.npz", dir);
    {
        td_dict *in = NULL, *out = td_dict_new();
        td_error e0 = {0};
        TU_OK(load_npz(src, 0, &in, &e0), &e0);
        TU_OK(td_dict_set(out, "big", td_dict_get(in, "big"), &e0), &e0);
        TU_OK(td_savez(path, out, &e0), &e0);
        td_dict_free(in);
        td_dict_free(out);
    }
    size_t len;
    uint8_t *bytes = tu_read_file(path, &len);
    td__table t;
    td__table_init(&t, TD_FORMAT_NPZ);
    td_error err = {0};
    TU_OK(td__npz_index(TD__RD_MEM(bytes, len, path), 0, &t, &err), &err);
    const td__entry *e = NULL;
    for (size_t i = 0; i < t.n; i++)
        if (strcmp(t.entries[i].name, "big") == 0)
            e = &t.entries[i];
    ck_assert(e && e->layout == 0 && e->nbytes == 280000);
    uint64_t off = e->offset;
    ck_assert_uint_eq(off % 4, 0);
    td__table_destroy(&t);

    td_dict *d = NULL;
    TU_OK(load_npz(path, 0, &d, &err), &err);
    const td_array *a = td_dict_get(d, "big");
    ck_assert(a && td_array_provenance(a) == TD_PROVENANCE_EMBEDDED);
    ck_assert(memcmp(td_array_data(a), bytes + off, 4096) == 0);
    uint8_t junk[4096];
    memset(junk, 0xA5, sizeof junk);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(pwrite(fd, junk, sizeof junk, (off_t)off), (ssize_t)sizeof junk);
    close(fd);
    ck_assert_msg(memcmp(td_array_data(a), junk, sizeof junk) == 0,
                  "the stored member is not a view of the file");
    td_dict_free(d);
    free(bytes);
    tu_rmtree(dir);
}
END_TEST

/* Arrays of every npy-able dtype, with deterministic bytes, plus 0-d, empty and unnamed. */
typedef struct made {
    const char *name; /* NULL: pushed unnamed */
    td_dtype dtype;
    int ndim;
    int64_t shape[3];
    const char *descr; /* what numpy must report */
} made;

static const made g_made[] = {
    {"t_bool", TD_BOOL, 2, {3, 4}, "|b1"},
    {"t_u8", TD_UINT8, 1, {17}, "|u1"},
    {"t_u16", TD_UINT16, 2, {2, 5}, "<u2"},
    {"t_u32", TD_UINT32, 1, {6}, "<u4"},
    {"t_u64", TD_UINT64, 3, {2, 1, 3}, "<u8"},
    {"t_i8", TD_INT8, 1, {9}, "|i1"},
    {"t_i16", TD_INT16, 1, {4}, "<i2"},
    {NULL, TD_INT32, 2, {3, 3}, "<i4"},
    {"t_i64", TD_INT64, 1, {5}, "<i8"},
    {"t_f16", TD_FLOAT16, 2, {2, 3}, "<f2"},
    {"t_bf16", TD_BFLOAT16, 2, {4, 4}, "|V2"},
    {"t_f32", TD_FLOAT32, 2, {100, 300}, "<f4"},
    {NULL, TD_FLOAT64, 1, {7}, "<f8"},
    {"t_c64", TD_COMPLEX64, 1, {3}, "<c8"},
    {"t_c128", TD_COMPLEX128, 2, {2, 2}, "<c16"},
    {"t_f8e4m3", TD_FLOAT8_E4M3, 1, {16}, "|u1"},
    {"t_f8e5m2", TD_FLOAT8_E5M2, 1, {16}, "|u1"},
    {"scalar", TD_FLOAT64, 0, {0}, "<f8"},
    {"empty", TD_FLOAT32, 2, {0, 3}, "<f4"},
    {"layer/0/w", TD_INT32, 1, {2}, "<i4"},
    {"na\xc3\xafve", TD_UINT16, 1, {1}, "<u2"},
};
#define N_MADE (sizeof g_made / sizeof g_made[0])

static td_dict *make_dict(void)
{
    td_dict *d = td_dict_new();
    td_error err = {0};
    for (size_t k = 0; k < N_MADE; k++) {
        const made *m = &g_made[k];
        size_t n = td_dtype_size(m->dtype);
        for (int i = 0; i < m->ndim; i++)
            n *= (size_t)m->shape[i];
        uint8_t *data = malloc(n ? n : 1);
        for (size_t j = 0; j < n; j++)
            data[j] = (uint8_t)(k * 31 + j * 7 + (j >> 8));
        if (m->dtype == TD_BOOL)
            for (size_t j = 0; j < n; j++)
                data[j] &= 1;
        td_array *a = NULL;
        TU_OK(td_array_new(m->dtype, m->ndim, m->shape, data, &a, &err), &err);
        if (m->name)
            TU_OK(td_dict_set(d, m->name, a, &err), &err);
        else
            TU_OK(td_dict_push(d, a, &err), &err);
        td_array_release(a);
        free(data);
    }
    return d;
}

/* numpy reads path; its listing must match the dict we saved, in order, bit for bit. */
static void numpy_check(const char *path, const td_dict *d)
{
    char out[256];
    snprintf(out, sizeof out, "%s.txt", path);
    const char *args[] = {path, out, NULL};
    ck_assert_msg(tu_py("npz.py", "read", args) == 0, "numpy cannot read %s", path);
    FILE *f = fopen(out, "r");
    ck_assert(f != NULL);
    char line[1024];
    size_t i = 0, unnamed = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        char *key = strtok(line, "\t"), *descr = strtok(NULL, "\t"), *shape = strtok(NULL, "\t"),
             *sha = strtok(NULL, "\t");
        ck_assert(key && descr && shape && sha);
        const char *name;
        const td_array *a = td_dict_at(d, i, &name);
        ck_assert(a != NULL);
        char want[64];
        if (!name) {
            snprintf(want, sizeof want, "arr_%zu", unnamed++);
            name = want;
        }
        ck_assert_str_eq(key, name);
        ck_assert_str_eq(descr, g_made[i].descr);
        char s[256], h[65];
        shape_str(a, s, sizeof s);
        ck_assert_str_eq(shape, s);
        sha_of(a, h);
        ck_assert_msg(strcmp(h, sha) == 0, "%s: %s differs in numpy", path, key);
        i++;
    }
    fclose(f);
    ck_assert_uint_eq(i, td_dict_size(d));
}

START_TEST(test_we_write_numpy_reads)
{
    int fds = tu_count_fds();
    char dir[64], path[128];
    tu_tmpdir(dir);
    td_dict *d = make_dict();
    td_error err = {0};
    for (int compressed = 0; compressed <= 1; compressed++) {
        snprintf(path, sizeof path, "%s/ours%d", dir, compressed); /* .npz appended */
        TU_OK(compressed ? td_savez_compressed(path, d, &err) : td_savez(path, d, &err), &err);
        strcat(path, ".npz");
        numpy_check(path, d);
        /* and we read it back: same arrays; stored data aligned and zero-copy */
        td__table t;
        size_t len;
        uint8_t *p = index_file(path, &t, &len);
        ck_assert_uint_eq(t.n, N_MADE);
        for (size_t i = 0; i < t.n; i++) {
            const td__entry *e = &t.entries[i];
            if (compressed) {
                ck_assert_uint_eq(e->layout, TD__LAYOUT_DEFLATE);
            } else {
                ck_assert_uint_eq(e->layout, 0);
                ck_assert_msg(e->offset % 64 == 0, "%s: data at %llu", e->name,
                              (unsigned long long)e->offset);
            }
        }
        td__table_destroy(&t);
        TU_OK(td__zip_verify(p, len, path, &err), &err);
        free(p);
        td_dict *back = NULL;
        TU_OK(load_npz(path, 0, &back, &err), &err);
        ck_assert_uint_eq(td_dict_size(back), N_MADE);
        size_t unnamed = 0;
        for (size_t i = 0; i < N_MADE; i++) {
            const char *n1, *n2;
            const td_array *a = td_dict_at(d, i, &n1), *b = td_dict_at(back, i, &n2);
            char want[32];
            if (!n1) {
                snprintf(want, sizeof want, "arr_%zu", unnamed++);
                n1 = want;
            }
            ck_assert_str_eq(n1, n2);
            /* bfloat16 and float8 come back as what npy stores them as (V2, u1) */
            td_dtype wt = td_array_dtype(a);
            if (wt == TD_FLOAT8_E4M3 || wt == TD_FLOAT8_E5M2)
                wt = TD_UINT8;
            ck_assert_int_eq(td_array_dtype(b), wt);
            ck_assert_uint_eq(td_array_nbytes(a), td_array_nbytes(b));
            ck_assert(memcmp(td_array_data(a), td_array_data(b), td_array_nbytes(a)) == 0);
            if (!compressed && td_array_nbytes(b))
                ck_assert_uint_eq((uintptr_t)td_array_data(b) % 64, 0);
        }
        td_dict_free(back);
    }
    td_dict_free(d);
    tu_rmtree(dir);
    ck_assert_int_eq(tu_count_fds(), fds);
}
END_TEST

START_TEST(test_savez_naming_and_refusals)
{
    char dir[64], path[128];
    tu_tmpdir(dir);
    td_error err = {0};
    int64_t shape[1] = {2};
    td_array *a = NULL;
    TU_OK(td_array_new(TD_FLOAT32, 1, shape, NULL, &a, &err), &err);
    /* an explicit arr_0 next to an unnamed array clashes, as in MLX: refused, no file */
    td_dict *d = td_dict_new();
    TU_OK(td_dict_push(d, a, &err), &err);
    TU_OK(td_dict_set(d, "arr_0", a, &err), &err);
    snprintf(path, sizeof path, "%s/clash.npz", dir);
    ck_assert_int_eq(td_savez(path, d, &err), TD_EDUP);
    ck_assert_int_eq(access(path, F_OK), -1);
    td_dict_free(d);
    /* arr_1 is fine with one unnamed array */
    d = td_dict_new();
    TU_OK(td_dict_push(d, a, &err), &err);
    TU_OK(td_dict_set(d, "arr_1", a, &err), &err);
    TU_OK(td_savez(path, d, &err), &err);
    td_dict_free(d);
    td_dict *back = NULL;
    TU_OK(load_npz(path, 0, &back, &err), &err);
    ck_assert(td_dict_get(back, "arr_0") && td_dict_get(back, "arr_1"));
    td_dict_free(back);
    /* names a zip reader would refuse are refused when writing */
    static const char *bad[] = {"../up", "/abs", "a\\b", "x/../../y"};
    for (size_t i = 0; i < 4; i++) {
        d = td_dict_new();
        TU_OK(td_dict_set(d, bad[i], a, &err), &err);
        snprintf(path, sizeof path, "%s/bad%zu.npz", dir, i);
        ck_assert_int_eq(td_savez(path, d, &err), TD_EFORMAT);
        ck_assert_int_eq(access(path, F_OK), -1);
        td_dict_free(d);
    }
    td_array_release(a);
    /* GGML block types have no npy spelling */
    int64_t qs[1] = {32};
    TU_OK(td_array_new(TD_Q4_0, 1, qs, NULL, &a, &err), &err);
    d = td_dict_new();
    TU_OK(td_dict_set(d, "q", a, &err), &err);
    snprintf(path, sizeof path, "%s/q.npz", dir);
    ck_assert_int_eq(td_savez_compressed(path, d, &err), TD_EDTYPE);
    ck_assert_int_eq(access(path, F_OK), -1);
    td_dict_free(d);
    td_array_release(a);
    /* td__npz_write itself refuses missing and repeated names */
    td__item items[2] = {{"x", TD_UINT8, 1, qs, "", 0}, {"x", TD_UINT8, 1, qs, "", 0}};
    int64_t z[1] = {0};
    items[0].shape = items[1].shape = z;
    td__writer w;
    TU_OK(td__writer_init(&w, -1, "mem", &err), &err);
    ck_assert_int_eq(td__npz_write(&w, items, 2, 0, "mem", &err), TD_EDUP);
    items[1].name = NULL;
    ck_assert_int_eq(td__npz_write(&w, items, 2, 0, "mem", &err), TD_EINVAL);
    items[1].name = "y";
    items[1].nbytes = 5; /* does not match the shape */
    ck_assert_int_eq(td__npz_write(&w, items, 2, 0, "mem", &err), TD_EINVAL);
    td__writer_destroy(&w);
    tu_rmtree(dir);
}
END_TEST

START_TEST(test_zip64_written_numpy_reads)
{
    /* zip64 fields everywhere (forced: real ones need 4 GiB; see test_zip's huge test). */
    td_dict *d = make_dict();
    td_error err = {0};
    td__writer w;
    TU_OK(td__writer_init(&w, -1, "z64.npz", &err), &err);
    td__zip_writer zw;
    td__zip_writer_init(&zw, &w, "z64.npz");
    zw.force_zip64 = 1;
    size_t unnamed = 0;
    for (size_t i = 0; i < td_dict_size(d); i++) {
        const char *name;
        const td_array *a = td_dict_at(d, i, &name);
        char mname[128];
        if (name)
            snprintf(mname, sizeof mname, "%s.npy", name);
        else
            snprintf(mname, sizeof mname, "arr_%zu.npy", unnamed++);
        uint8_t hdr[NPY_HEADER_CAP];
        size_t hl;
        TU_OK(td__npy_build_header(td_array_dtype(a), td_array_ndim(a), td_array_shape(a), hdr,
                                   sizeof hdr, &hl, mname, &err),
              &err);
        unsigned method = i % 2 ? ZIP_METHOD_DEFLATE : ZIP_METHOD_STORED;
        TU_OK(td__zip_writer_begin(&zw, mname, method, 9, hl + td_array_nbytes(a), 64, hl, &err),
              &err);
        TU_OK(td__zip_writer_data(&zw, hdr, hl, &err), &err);
        TU_OK(td__zip_writer_data(&zw, td_array_data(a), td_array_nbytes(a), &err), &err);
        TU_OK(td__zip_writer_end(&zw, &err), &err);
    }
    TU_OK(td__zip_writer_finish(&zw, &err), &err);
    td__zip_writer_destroy(&zw);
    size_t len;
    uint8_t *p = td__writer_take(&w, &len);
    td__writer_destroy(&w);
    char dir[64], path[128];
    tu_tmpdir(dir);
    snprintf(path, sizeof path, "%s/z64.npz", dir);
    ck_assert_int_eq(tu_write_file(path, p, len), 0);
    numpy_check(path, d);
    td__zip_archive z;
    TU_OK(td__zip_open(TD__RD_MEM(p, len, path), &z, &err), &err);
    ck_assert(z.zip64);
    td__zip_close(&z);
    free(p);
    td_dict_free(d);
    tu_rmtree(dir);
}
END_TEST

START_TEST(test_manifest)
{
    char mpath[512];
    tu_testdata("MANIFEST.json", mpath, sizeof mpath);
    json_error_t je;
    json_t *root = json_load_file(mpath, 0, &je);
    if (!root) {
        /* two gguf values exceed int64: jansson refuses the whole file; read it via Python */
        char out[128];
        snprintf(out, sizeof out, "%s/manifest_npz.json", g_dir);
        const char *args[] = {mpath, out, NULL};
        ck_assert_int_eq(tu_py("npz.py", "manifest", args), 0);
        root = json_load_file(out, 0, &je);
    }
    ck_assert_msg(root != NULL, "%s", je.text);
    json_t *files = json_object_get(root, "files");
    const char *rel;
    json_t *fe;
    int checked = 0;
    json_object_foreach(files, rel, fe)
    {
        if (strcmp(json_string_value(json_object_get(fe, "format")), "npz") != 0)
            continue;
        char path[512];
        tu_testdata(rel, path, sizeof path);
        td_dict *d = NULL;
        td_error err = {0};
        TU_OK(load_npz(path, 0, &d, &err), &err);
        td__table t;
        size_t len;
        uint8_t *p = index_file(path, &t, &len);
        TU_OK(td__zip_verify(p, len, path, &err), &err);
        json_t *tensors = json_object_get(fe, "tensors");
        ck_assert_uint_eq(td_dict_size(d), json_array_size(tensors));
        ck_assert_uint_eq(t.n, json_array_size(tensors));
        size_t i;
        json_t *te;
        json_array_foreach(tensors, i, te)
        {
            const char *name;
            const td_array *a = td_dict_at(d, i, &name);
            ck_assert_str_eq(name, json_string_value(json_object_get(te, "name")));
            ck_assert_str_eq(td_dtype_name(td_array_dtype(a)),
                             json_string_value(json_object_get(te, "dtype")));
            json_t *shape = json_object_get(te, "shape");
            ck_assert_int_eq(td_array_ndim(a), (int)json_array_size(shape));
            for (size_t k = 0; k < json_array_size(shape); k++)
                ck_assert_int_eq(td_array_shape(a)[k],
                                 json_integer_value(json_array_get(shape, k)));
            ck_assert_uint_eq(td_array_nbytes(a),
                              (uint64_t)json_integer_value(json_object_get(te, "nbytes")));
            char h[65];
            sha_of(a, h);
            ck_assert_msg(strcmp(h, json_string_value(json_object_get(te, "sha256"))) == 0,
                          "%s: %s: sha256 differs", rel, name);
            const td__entry *e = &t.entries[i];
            int compressed = json_is_true(json_object_get(te, "compressed"));
            int fortran = json_is_true(json_object_get(te, "fortran_order")) && e->ndim >= 2;
            int be = json_string_value(json_object_get(te, "format_dtype"))[0] == '>';
            ck_assert_int_eq(!!(e->layout & TD__LAYOUT_DEFLATE), compressed);
            ck_assert_int_eq(!!(e->layout & TD__LAYOUT_FORTRAN), fortran);
            ck_assert_int_eq(!!(e->layout & TD__LAYOUT_SWAP), be);
            checked++;
        }
        td__table_destroy(&t);
        free(p);
        td_dict_free(d);
    }
    json_decref(root);
    ck_assert_int_ge(checked, 16);
}
END_TEST

START_TEST(test_pywt)
{
    char pdir[512];
    tu_testdata("pywt", pdir, sizeof pdir);
    char out[128];
    snprintf(out, sizeof out, "%s/pywt.txt", g_dir);
    const char *args[] = {pdir, out, NULL};
    ck_assert_int_eq(tu_py("npz.py", "listing", args), 0);
    int n = check_expect(out, "/");
    ck_assert_int_eq(n, 2); /* one array in each of sst_nino3.npz (stored), camera.npz (deflated) */
    printf("pywt: %d arrays match numpy\n", n);
}
END_TEST

START_TEST(test_hostile)
{
    int fds = tu_count_fds();
    char path[256];
    snprintf(path, sizeof path, "%s/bad.txt", g_dir);
    FILE *f = fopen(path, "r");
    ck_assert(f != NULL);
    char line[512];
    int files = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        char *fn = strtok(line, "\t"), *stage = strtok(NULL, "\t"), *code = strtok(NULL, "\t"),
             *sub = strtok(NULL, "\t"), *bound = strtok(NULL, "\t");
        ck_assert(fn && stage && code && sub && bound);
        char fpath[256];
        snprintf(fpath, sizeof fpath, "%s/%s", g_dir, fn);
        uint64_t max = strtoull(bound, NULL, 10);
        td_dict *d = NULL;
        td_error err = {0};
        int rc = load_npz(fpath, max, &d, &err);
        if (strcmp(stage, "ok") == 0) {
            ck_assert_msg(rc == 0, "%s: %s", fn, err.message);
            td_dict_free(d);
            files++;
            continue;
        }
        if (strcmp(stage, "verify") == 0) {
            ck_assert_msg(rc == 0, "%s: load failed: %s", fn, err.message);
            td_dict_free(d);
            size_t len;
            uint8_t *p = tu_read_file(fpath, &len);
            rc = td__zip_verify(p, len, fpath, &err);
            free(p);
        } else {
            ck_assert_msg(rc != 0, "%s: loaded", fn);
            ck_assert(d == NULL);
        }
        ck_assert_msg(strcmp(td_err_name(rc), code) == 0, "%s: %s (%s), expected %s", fn,
                      td_err_name(rc), err.message, code);
        ck_assert_msg(strstr(err.message, sub) != NULL, "%s: message '%s' lacks '%s'", fn,
                      err.message, sub);
        ck_assert_msg(strstr(err.message, fn) != NULL, "%s: message '%s' lacks the file name", fn,
                      err.message);
        files++;
    }
    fclose(f);
    ck_assert_int_ge(files, 23);
    ck_assert_int_eq(tu_count_fds(), fds);
}
END_TEST

/* Indexes and decodes p[0..len) from an exact-size copy (ASan sees any overread); returns the
 * first error or 0. */
static int index_and_decode(const uint8_t *src, size_t len)
{
    uint8_t *p = malloc(len ? len : 1);
    memcpy(p, src, len);
    td__table t;
    td__table_init(&t, TD_FORMAT_NPZ);
    td_error err = {0};
    int rc = td__npz_index(TD__RD_MEM(p, len, "x.npz"), 1u << 24, &t, &err);
    for (size_t i = 0; !rc && i < t.n; i++) {
        const td__entry *e = &t.entries[i];
        if (!e->layout) {
            ck_assert(e->offset <= len && e->nbytes <= len - e->offset);
            continue;
        }
        ck_assert(e->src.offset <= len && e->src.nbytes <= len - e->src.offset);
        uint8_t *buf = malloc(e->nbytes ? e->nbytes : 1);
        rc = td__decode_entry(e, p, len, buf, 0, "x.npz", &err);
        free(buf);
    }
    if (rc)
        ck_assert(err.message[0] != '\0');
    td__table_destroy(&t);
    free(p);
    return rc;
}

/* A small npz of our own, stored or deflated, with a big-endian-free mix of members. */
static uint8_t *small_npz(int compressed, size_t *len)
{
    int64_t s1[2] = {3, 4}, s0[1] = {0};
    uint8_t data[48];
    for (int i = 0; i < 48; i++)
        data[i] = (uint8_t)(i * 5);
    td__item items[3] = {{"a", TD_FLOAT32, 2, s1, data, 48},
                         {"b", TD_INT16, 0, s0, data, 2},
                         {"c", TD_UINT8, 1, s0, data, 0}};
    td__writer w;
    td_error err = {0};
    TU_OK(td__writer_init(&w, -1, "small.npz", &err), &err);
    TU_OK(td__npz_write(&w, items, 3, compressed, "small.npz", &err), &err);
    uint8_t *p = td__writer_take(&w, len);
    td__writer_destroy(&w);
    return p;
}

START_TEST(test_truncation_and_corruption)
{
    long refused = 0, opened = 0;
    for (int k = 0; k < 3; k++) {
        size_t len;
        uint8_t *p;
        if (k < 2) {
            p = small_npz(k, &len);
        } else {
            char path[128];
            snprintf(path, sizeof path, "%s/np_positional.npz", g_dir);
            p = tu_read_file(path, &len);
        }
        ck_assert_int_eq(index_and_decode(p, len), 0);
        for (size_t n = 0; n < len; n++)
            ck_assert_msg(index_and_decode(p, n) != 0, "file %d cut at %zu accepted", k, n);
        uint8_t *c = malloc(len);
        static const uint8_t flips[] = {0x01, 0x10, 0x80, 0xff};
        for (size_t pos = 0; pos < len; pos++)
            for (size_t fl = 0; fl < sizeof flips; fl++) {
                memcpy(c, p, len);
                c[pos] ^= flips[fl];
                if (index_and_decode(c, len))
                    refused++;
                else
                    opened++;
            }
        free(c);
        free(p);
    }
    printf("npz corruption: %ld refused, %ld accepted (flips in stored data or padding)\n", refused,
           opened);
    ck_assert_int_gt(refused, opened);
}
END_TEST

START_TEST(test_bound_is_checked_before_inflating)
{
    /* 3 x 1 MB deflated members: a bound of 2.5 MB refuses from the directory alone, so a
     * corrupt stream behind it is never reached; 3.1 MB loads. */
    char path[128];
    snprintf(path, sizeof path, "%s/ok_bound.npz", g_dir);
    size_t len;
    uint8_t *p = tu_read_file(path, &len);
    td__zip_archive z;
    td_error err = {0};
    TU_OK(td__zip_open(TD__RD_MEM(p, len, path), &z, &err), &err);
    uint64_t at = z.members[0].data_offset;
    td__zip_close(&z);
    memset(p + at, 0xff, 8); /* corrupt the first stream */
    td__table t;
    td__table_init(&t, TD_FORMAT_NPZ);
    ck_assert_int_eq(td__npz_index(TD__RD_MEM(p, len, path), 2500000, &t, &err), TD_ELIMIT);
    ck_assert(strstr(err.message, "max_inflated") != NULL);
    ck_assert_uint_eq(t.n, 0);
    td__table_destroy(&t);
    td__table_init(&t, TD_FORMAT_NPZ);
    ck_assert_int_ne(td__npz_index(TD__RD_MEM(p, len, path), 3100000, &t, &err), TD_ELIMIT);
    td__table_destroy(&t);
    free(p);
}
END_TEST

static Suite *npz_suite(void)
{
    Suite *s = suite_create("npz");
    TCase *tc = tcase_create("npz");
    tcase_add_unchecked_fixture(tc, suite_setup, suite_teardown);
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_numpy_writes_we_read);
    tcase_add_test(tc, test_layouts);
    tcase_add_test(tc, test_stored_members_are_zero_copy);
    tcase_add_test(tc, test_we_write_numpy_reads);
    tcase_add_test(tc, test_savez_naming_and_refusals);
    tcase_add_test(tc, test_zip64_written_numpy_reads);
    tcase_add_test(tc, test_manifest);
    tcase_add_test(tc, test_pywt);
    tcase_add_test(tc, test_hostile);
    tcase_add_test(tc, test_truncation_and_corruption);
    tcase_add_test(tc, test_bound_is_checked_before_inflating);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    printf("deflate engine: %s\n", td__flate_engine());
    SRunner *sr = srunner_create(npz_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/*
 * test_align.c - every array td_load returns is aligned to its dtype's alignment, in embedded
 * mode and through a real tensord: numpy's npz members at odd offsets and a safetensors float32
 * after three float16 are copied once into aligned memory (layout "align"), with the bytes the
 * file holds; what td_savez and td_save_safetensors write stays a zero-copy view.
 */
#include "testutil.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[64], sock[128];

static void setup(void)
{
    tu_tmpdir(dir);
    /* numpy's np.savez, its members at offsets the name lengths move (tests/py/align.py). */
    const char *args[] = {dir, NULL};
    ck_assert_int_eq(tu_py("align.py", "odd-npz", args), 0);
}

static void teardown(void)
{
    tu_rmtree(dir);
}

/* Loads path in mode and checks every member against expect.txt: aligned to its item size,
 * the file's bytes. Returns how many members were stored off their alignment. */
static int check_odd_npz(td_load_mode mode, td_provenance view_prov)
{
    char path[128], exp[128];
    snprintf(path, sizeof path, "%s/odd.npz", dir);
    snprintf(exp, sizeof exp, "%s/expect.txt", dir);
    td_load_options o = TD_LOAD_OPTIONS_INIT;
    o.mode = mode;
    o.socket_path = sock;
    td_dict *d = NULL;
    td_error err = {0};
    TU_OK(td_load(path, &o, &d, NULL, &err), &err);
    FILE *f = fopen(exp, "r");
    ck_assert(f);
    char name[64], sha[65], got[65];
    unsigned isz;
    unsigned long long off;
    int n = 0, odd = 0;
    while (fscanf(f, "%63s %u %llu %64s", name, &isz, &off, sha) == 4) {
        const td_array *a = td_dict_get(d, name);
        ck_assert_msg(a, "%s missing", name);
        uintptr_t p = (uintptr_t)td_array_data(a);
        ck_assert_msg(p % isz == 0, "%s: data at %#lx is not aligned to %u", name, (unsigned long)p,
                      isz);
        tu_sha256_hex(td_array_data(a), (size_t)td_array_nbytes(a), got);
        ck_assert_str_eq(got, sha);
        if (off % isz) {
            odd++;
            /* A copy: of its own in embedded mode, the daemon's memfd in daemon mode. */
            ck_assert_int_eq(td_array_provenance(a),
                             mode == TD_MODE_DAEMON ? TD_PROVENANCE_DAEMON : TD_PROVENANCE_OWNED);
        } else {
            ck_assert_int_eq(td_array_provenance(a), view_prov);
        }
        n++;
    }
    fclose(f);
    ck_assert_int_eq(n, 28);
    ck_assert_uint_eq(td_dict_size(d), 28);
    td_dict_free(d);
    return odd;
}

START_TEST(test_numpy_npz_embedded)
{
    int odd = check_odd_npz(TD_MODE_EMBEDDED, TD_PROVENANCE_EMBEDDED);
    /* The names were chosen so that some members of every multi-byte dtype are off. */
    ck_assert_int_ge(odd, 10);
}
END_TEST

START_TEST(test_numpy_npz_daemon)
{
    snprintf(sock, sizeof sock, "%s/t.sock", dir);
    pid_t pid = tu_daemon_start(sock, NULL, NULL);
    int odd = check_odd_npz(TD_MODE_DAEMON, TD_PROVENANCE_DAEMON);
    ck_assert_int_ge(odd, 10);
    /* The aligned copies were made once, into the daemon's sealed memfd. */
    td_status *st = tu_daemon_status(sock);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_DECODES), 1);
    ck_assert_uint_gt(td_status_get(st, TD_STATUS_DERIVED_BYTES), 0);
    td_status_free(st);
    ck_assert_int_eq(tu_daemon_stop(pid, SIGTERM), 0);
    sock[0] = 0;
}
END_TEST

/* A float16[3] before a float32[2] in a safetensors file puts the float32 at offset 6. */
START_TEST(test_safetensors_f32_after_f16)
{
    char path[128];
    snprintf(path, sizeof path, "%s/odd.safetensors", dir);
    const char hdr[] = "{\"h\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[0,6]},"
                       "\"f\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[6,14]}}";
    tu_buf b = {0};
    tu_buf_u64(&b, sizeof hdr - 1);
    tu_buf_put(&b, hdr, sizeof hdr - 1);
    size_t data = b.len;
    ck_assert_uint_eq(data % 4, 0); /* so the float32 is off by 2 in the file too */
    uint16_t h[3] = {0x3c00, 0x4000, 0x4200};
    float fv[2] = {1.5f, -2.25f};
    tu_buf_put(&b, h, 6);
    tu_buf_put(&b, fv, 8);
    ck_assert_int_eq(tu_write_file(path, b.p, b.len), 0);
    free(b.p);
    for (int mode = 0; mode < 2; mode++) {
        pid_t pid = 0;
        if (mode) {
            snprintf(sock, sizeof sock, "%s/t.sock", dir);
            pid = tu_daemon_start(sock, NULL, NULL);
        }
        td_load_options o = TD_LOAD_OPTIONS_INIT;
        o.mode = mode ? TD_MODE_DAEMON : TD_MODE_EMBEDDED;
        o.socket_path = sock;
        td_dict *d = NULL;
        td_error err = {0};
        TU_OK(td_load(path, &o, &d, NULL, &err), &err);
        const td_array *f = td_dict_get(d, "f"), *hh = td_dict_get(d, "h");
        ck_assert_uint_eq((uintptr_t)td_array_data(f) % 4, 0);
        ck_assert(memcmp(td_array_data(f), fv, 8) == 0);
        ck_assert(memcmp(td_array_data(hh), h, 6) == 0);
        /* The float16 at offset 0 stays a view. */
        ck_assert_int_eq(td_array_provenance(hh),
                         mode ? TD_PROVENANCE_DAEMON : TD_PROVENANCE_EMBEDDED);
        td_dict_free(d);
        if (mode) {
            ck_assert_int_eq(tu_daemon_stop(pid, SIGTERM), 0);
            sock[0] = 0;
        }
    }
    /* tensorctl ls says which tensor is copied. */
    char cmd[512], line[512];
    snprintf(cmd, sizeof cmd, "%s ls '%s'", getenv("TD_TENSORCTL"), path);
    FILE *p = popen(cmd, "r");
    ck_assert(p);
    int seen_align = 0, seen_view = 0;
    while (fgets(line, sizeof line, p)) {
        if (strstr(line, "f ") == line || strstr(line, "  f ") || strstr(line, "\tf\t"))
            seen_align += strstr(line, "align") != NULL;
        if (strstr(line, "float16"))
            seen_view += strstr(line, "view") != NULL;
    }
    ck_assert_int_eq(pclose(p), 0);
    ck_assert_int_eq(seen_view, 1);
    ck_assert_int_eq(seen_align, 1);
}
END_TEST

/* What we write is aligned by construction: stored npz members and safetensors tensors of
 * every dtype load as views of the file, never copies. */
START_TEST(test_our_files_stay_zero_copy)
{
    td_dict *d = td_dict_new();
    td_error err = {0};
    const td_dtype types[] = {TD_UINT8,     TD_FLOAT16,    TD_FLOAT32, TD_FLOAT64,
                              TD_COMPLEX64, TD_COMPLEX128, TD_INT16,   TD_BOOL};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        int64_t shape[1] = {(int64_t)(3 + i)};
        td_array *a;
        TU_OK(td_array_new(types[i], 1, shape, NULL, &a, &err), &err);
        char name[32];
        snprintf(name, sizeof name, "t%.*s", (int)i, "xxxxxxxxx");
        TU_OK(td_dict_set(d, name, a, &err), &err);
        td_array_release(a);
    }
    char npz[128], st[128];
    snprintf(npz, sizeof npz, "%s/ours.npz", dir);
    snprintf(st, sizeof st, "%s/ours.safetensors", dir);
    TU_OK(td_savez(npz, d, &err), &err);
    td_dict_free(d);
    d = NULL;
    td_load_options o = TD_LOAD_OPTIONS_INIT;
    o.mode = TD_MODE_EMBEDDED;
    TU_OK(td_load(npz, &o, &d, NULL, &err), &err);
    for (size_t i = 0; i < td_dict_size(d); i++) {
        const char *name;
        const td_array *a = td_dict_at(d, i, &name);
        ck_assert_msg(td_array_provenance(a) == TD_PROVENANCE_EMBEDDED, "%s is a copy", name);
    }
    /* Saved again as safetensors (complex types have no safetensors dtype: drop them). */
    td_dict *s = td_dict_new();
    for (size_t i = 0; i < td_dict_size(d); i++) {
        const char *name;
        const td_array *a = td_dict_at(d, i, &name);
        td_dtype t = td_array_dtype(a);
        if (t != TD_COMPLEX64 && t != TD_COMPLEX128)
            TU_OK(td_dict_set(s, name, a, &err), &err);
    }
    TU_OK(td_save_safetensors(st, s, NULL, &err), &err);
    td_dict_free(s);
    td_dict_free(d);
    TU_OK(td_load(st, &o, &d, NULL, &err), &err);
    ck_assert_uint_eq(td_dict_size(d), 6);
    for (size_t i = 0; i < td_dict_size(d); i++) {
        const char *name;
        const td_array *a = td_dict_at(d, i, &name);
        ck_assert_msg(td_array_provenance(a) == TD_PROVENANCE_EMBEDDED, "%s is a copy", name);
    }
    td_dict_free(d);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("align");
    TCase *tc = tcase_create("align");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_numpy_npz_embedded);
    tcase_add_test(tc, test_numpy_npz_daemon);
    tcase_add_test(tc, test_safetensors_f32_after_f16);
    tcase_add_test(tc, test_our_files_stay_zero_copy);
    suite_add_tcase(s, tc);
    return tu_run(s);
}

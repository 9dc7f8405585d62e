/*
 * test_dequant_load.c - dequantize on load, embedded and through a real tensord: float32,
 * float16, bfloat16 and MLX's packed form, against the float32 references in testdata, and the
 * daemon decoding once for two clients.
 */
#include "testutil.h"

#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *types[] = {"q4_0", "q4_1", "q5_0", "q5_1", "q8_0"};
static const char *tensors[] = {"blk.0.weight", "blk.1.weight"};

static td_array *reference(const char *type, const char *tensor)
{
    char rel[128], path[512];
    snprintf(rel, sizeof rel, "gguf/%s.gguf.%s.f32.npy", type, tensor);
    td_array *a;
    td_error err = {0};
    TU_OK(td_load_array(tu_testdata(rel, path, sizeof path), NULL, &a, &err), &err);
    return a;
}

static float f16_to_f32(uint16_t h)
{
    uint32_t s = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 31, m = h & 1023, bits;
    if (e == 0 && m == 0)
        bits = s;
    else if (e == 0) { /* subnormal */
        float f = ldexpf((float)m, -24);
        return s ? -f : f;
    } else if (e == 31)
        bits = s | 0x7f800000u | (m << 13);
    else
        bits = s | ((e + 112) << 23) | (m << 13);
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static void check_load(td_load_mode mode)
{
    for (size_t t = 0; t < 5; t++) {
        char rel[64], path[512];
        snprintf(rel, sizeof rel, "gguf/%s.gguf", types[t]);
        tu_testdata(rel, path, sizeof path);
        td_load_options opt = TD_LOAD_OPTIONS_INIT;
        opt.mode = mode;
        opt.dequantize = TD_DEQUANT_F32;
        td_dict *d;
        td_error err = {0};
        TU_OK(td_load(path, &opt, &d, NULL, &err), &err);
        for (size_t k = 0; k < 2; k++) {
            td_array *ref = reference(types[t], tensors[k]);
            const td_array *a = td_dict_get(d, tensors[k]);
            ck_assert_ptr_nonnull(a);
            ck_assert_int_eq(td_array_dtype(a), TD_FLOAT32);
            ck_assert_int_eq(td_array_ndim(a), td_array_ndim(ref));
            ck_assert_mem_eq(td_array_shape(a), td_array_shape(ref), 16);
            ck_assert_msg(memcmp(td_array_data(a), td_array_data(ref), td_array_nbytes(ref)) == 0,
                          "%s %s: dequantized bytes differ from the reference", types[t],
                          tensors[k]);
            if (mode == TD_MODE_DAEMON)
                ck_assert_int_eq(td_array_provenance(a), TD_PROVENANCE_DAEMON);
            td_array_release(ref);
        }
        td_dict_free(d);

        /* float16: the float32 result rounded to nearest even (checked within half an ulp). */
        opt.dequantize = TD_DEQUANT_F16;
        TU_OK(td_load(path, &opt, &d, NULL, &err), &err);
        td_array *ref = reference(types[t], tensors[0]);
        const td_array *h = td_dict_get(d, tensors[0]);
        ck_assert_int_eq(td_array_dtype(h), TD_FLOAT16);
        const uint16_t *hp = td_array_data(h);
        const float *rp = td_array_data(ref);
        for (int64_t i = 0; i < td_array_size(ref); i++) {
            float x = rp[i], y = f16_to_f32(hp[i]);
            if (fabsf(x) < 65504.0f)
                ck_assert_msg(fabsf(x - y) <= fmaxf(fabsf(x) * 0x1p-11f, 0x1p-25f),
                              "%s[%lld]: %g -> %g", types[t], (long long)i, (double)x, (double)y);
        }
        td_array_release(ref);
        td_dict_free(d);

        /* MLX's packed form: weights, scales and biases that give the reference back. */
        opt.dequantize = TD_DEQUANT_MLX;
        TU_OK(td_load(path, &opt, &d, NULL, &err), &err);
        int packed = strcmp(types[t], "q4_0") == 0 || strcmp(types[t], "q4_1") == 0 ||
                     strcmp(types[t], "q8_0") == 0;
        if (!packed) {
            ck_assert_int_eq(td_array_dtype(td_dict_get(d, tensors[0])), TD_FLOAT16);
            td_dict_free(d);
            continue;
        }
        ck_assert_uint_eq(td_dict_size(d), 6);
        for (size_t k = 0; k < 2; k++) {
            char sn[64], bn[64];
            snprintf(sn, sizeof sn, "blk.%zu.scales", k);
            snprintf(bn, sizeof bn, "blk.%zu.biases", k);
            const td_array *w = td_dict_get(d, tensors[k]), *s = td_dict_get(d, sn),
                           *b = td_dict_get(d, bn);
            ck_assert_ptr_nonnull(w);
            ck_assert_ptr_nonnull(s);
            ck_assert_ptr_nonnull(b);
            ck_assert_int_eq(td_array_dtype(w), TD_UINT32);
            ck_assert_int_eq(td_array_dtype(s), TD_FLOAT16);
            td_array *r = reference(types[t], tensors[k]);
            int bits = strcmp(types[t], "q8_0") == 0 ? 8 : 4;
            int64_t n = td_array_size(r);
            ck_assert_int_eq(td_array_size(w), n * bits / 32);
            ck_assert_int_eq(td_array_size(s), n / 32);
            const uint32_t *wp = td_array_data(w);
            const uint16_t *sp = td_array_data(s), *bp = td_array_data(b);
            const float *ref_p = td_array_data(r);
            for (int64_t i = 0; i < n; i++) {
                uint32_t q = (wp[i * bits / 32] >> (bits * (i % (32 / bits)))) & ((1u << bits) - 1);
                float v = (float)q * f16_to_f32(sp[i / 32]) + f16_to_f32(bp[i / 32]);
                ck_assert_msg(v == ref_p[i] || (v == 0 && ref_p[i] == 0), "%s %s[%lld]: %g vs %g",
                              types[t], tensors[k], (long long)i, (double)v, (double)ref_p[i]);
            }
            td_array_release(r);
        }
        td_dict_free(d);
    }
}

START_TEST(test_embedded)
{
    check_load(TD_MODE_EMBEDDED);
    /* Bad targets and formats without blocks. */
    char path[512];
    td_load_options opt = TD_LOAD_OPTIONS_INIT;
    opt.dequantize = (td_dequant)99; /* not a td_dequant */
    td_dict *d;
    td_error err = {0};
    ck_assert_int_eq(
        td_load(tu_testdata("gguf/q4_0.gguf", path, sizeof path), &opt, &d, NULL, &err), TD_EINVAL);
    /* td_array_dequantize on a loaded block array agrees with the load option. */
    td_dict *raw;
    TU_OK(td_load(path, NULL, &raw, NULL, &err), &err);
    td_array *f;
    TU_OK(td_array_dequantize(td_dict_get(raw, "blk.1.weight"), TD_FLOAT32, 0, &f, &err), &err);
    td_array *ref = reference("q4_0", "blk.1.weight");
    ck_assert_mem_eq(td_array_data(f), td_array_data(ref), td_array_nbytes(ref));
    td_array_release(ref);
    td_array_release(f);
    td_dict_free(raw);
}
END_TEST

START_TEST(test_daemon)
{
    char dir[64], sock[128];
    tu_tmpdir(dir);
    snprintf(sock, sizeof sock, "%s/s.sock", dir);
    pid_t pid = tu_daemon_start(sock, NULL, NULL);
    td_client *c = NULL;
    td_error cerr = {0};
    TU_OK(td_client_connect(sock, &c, &cerr), &cerr);
    setenv("TENSORD_SOCKET", sock, 1);
    check_load(TD_MODE_DAEMON);
    /* A second round is served from the cache: no new decodes. */
    td_status *before, *after;
    td_error err = {0};
    TU_OK(td_client_status(c, &before, &err), &err);
    check_load(TD_MODE_DAEMON);
    TU_OK(td_client_status(c, &after, &err), &err);
    ck_assert_uint_eq(td_status_get(after, TD_STATUS_DECODES),
                      td_status_get(before, TD_STATUS_DECODES));
    ck_assert_uint_eq(td_status_get(after, TD_STATUS_MISSES),
                      td_status_get(before, TD_STATUS_MISSES));
    ck_assert_uint_gt(td_status_get(after, TD_STATUS_HITS), td_status_get(before, TD_STATUS_HITS));
    td_status_free(before);
    td_status_free(after);
    td_client_close(c);
    int st = tu_daemon_stop(pid, SIGTERM);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    tu_rmtree(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("dequant_load");
    TCase *tc = tcase_create("dequant_load");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_embedded);
    tcase_add_test(tc, test_daemon);
    suite_add_tcase(s, tc);
    return tu_run(s);
}

/*
 * td_demo - a short tour of libtensord, used by the quick start.
 *
 *   td_demo save DIR   writes a few arrays in every format into DIR
 *   td_demo load FILE...  loads each FILE (through tensord when one is reachable) and prints
 *                         each array (dtype, shape, first values, where it lives) and the
 *                         metadata
 */
#include "tensord.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int check(int rc, const td_error *err)
{
    if (rc)
        fprintf(stderr, "td_demo: %s (%s)\n", err->message, td_err_name(rc));
    return rc;
}

static int demo_save(const char *dir)
{
    td_error err = {0};
    char path[4096];
    int rc = 0;

    /* A 3x4 float32 matrix, an int64 vector, and a float16 scalar. */
    float w[12];
    for (int i = 0; i < 12; i++)
        w[i] = (float)i * 0.5f - 1.0f;
    int64_t ids[5] = {10, 20, 30, 40, 50};
    uint16_t half_one = 0x3c00; /* 1.0 in float16 */
    int64_t shape_w[2] = {3, 4}, shape_ids[1] = {5};
    td_array *a = NULL, *b = NULL, *c = NULL;
    td_dict *d = td_dict_new();
    td_meta *m = td_meta_new();
    if (!d || !m)
        return 1;
    rc = check(td_array_new(TD_FLOAT32, 2, shape_w, w, &a, &err), &err);
    rc = rc ? rc : check(td_array_new(TD_INT64, 1, shape_ids, ids, &b, &err), &err);
    rc = rc ? rc : check(td_array_new(TD_FLOAT16, 0, NULL, &half_one, &c, &err), &err);
    rc = rc ? rc : check(td_dict_set(d, "weight", a, &err), &err);
    rc = rc ? rc : check(td_dict_set(d, "ids", b, &err), &err);
    rc = rc ? rc : check(td_dict_set(d, "scale", c, &err), &err);
    rc = rc ? rc : check(td_meta_set_string(m, "model", "demo", 4, &err), &err);
    uint32_t version = 3;
    rc = rc ? rc
            : check(td_meta_set_scalar(m, "demo.version", TD_META_UINT32, &version, &err), &err);

    if (!rc) {
        snprintf(path, sizeof path, "%s/weight", dir); /* .npy is appended */
        rc = check(td_save(path, a, &err), &err);
    }
    if (!rc) {
        snprintf(path, sizeof path, "%s/stored", dir);
        rc = check(td_savez(path, d, &err), &err);
    }
    if (!rc) {
        snprintf(path, sizeof path, "%s/deflated", dir);
        rc = check(td_savez_compressed(path, d, &err), &err);
    }
    if (!rc) {
        td_meta *sm = td_meta_new();
        rc = check(sm ? td_meta_set_string(sm, "model", "demo", 4, &err) : TD_ENOMEM, &err);
        snprintf(path, sizeof path, "%s/model", dir);
        rc = rc ? rc : check(td_save_safetensors(path, d, sm, &err), &err);
        td_meta_free(sm);
    }
    if (!rc) {
        snprintf(path, sizeof path, "%s/model", dir);
        rc = check(td_save_gguf(path, d, m, &err), &err);
    }
    td_array_release(a);
    td_array_release(b);
    td_array_release(c);
    td_dict_free(d);
    td_meta_free(m);
    return rc ? 1 : 0;
}

static void print_values(const td_array *a)
{
    int64_t n = td_array_size(a);
    const void *p = td_array_data(a);
    printf("    values:");
    for (int64_t i = 0; i < n && i < 6; i++) {
        switch (td_array_dtype(a)) {
        case TD_FLOAT32:
            printf(" %g", (double)((const float *)p)[i]);
            break;
        case TD_FLOAT64:
            printf(" %g", ((const double *)p)[i]);
            break;
        case TD_INT64:
            printf(" %" PRId64, ((const int64_t *)p)[i]);
            break;
        case TD_INT32:
            printf(" %" PRId32, ((const int32_t *)p)[i]);
            break;
        case TD_FLOAT16:
        case TD_BFLOAT16:
            printf(" 0x%04x", ((const uint16_t *)p)[i]);
            break;
        default:
            printf(" 0x%02x", ((const uint8_t *)p)[i * (int64_t)td_dtype_size(td_array_dtype(a))]);
            break;
        }
    }
    printf("%s\n", n > 6 ? " ..." : "");
}

static int demo_load(const char *path)
{
    td_error err = {0};
    td_dict *d = NULL;
    td_meta *m = NULL;
    td_format f = td_format_from_path(path);
    int want_meta = f == TD_FORMAT_SAFETENSORS || f == TD_FORMAT_GGUF;
    if (check(td_load(path, NULL, &d, want_meta ? &m : NULL, &err), &err))
        return 1;
    const td_array *first = td_dict_at(d, 0, NULL);
    printf("[pid %d] %s: %zu array%s, %s\n", (int)getpid(), path, td_dict_size(d),
           td_dict_size(d) == 1 ? "" : "s",
           first && td_array_provenance(first) == TD_PROVENANCE_DAEMON ? "shared by tensord"
                                                                       : "loaded in this process");
    for (size_t i = 0; i < td_dict_size(d); i++) {
        const char *name;
        const td_array *a = td_dict_at(d, i, &name);
        printf("  %s: %s (", name ? name : "(unnamed)", td_dtype_name(td_array_dtype(a)));
        for (int k = 0; k < td_array_ndim(a); k++)
            printf("%s%" PRId64, k ? ", " : "", td_array_shape(a)[k]);
        printf("%s)\n", td_array_ndim(a) == 1 ? "," : "");
        print_values(a);
    }
    for (size_t i = 0; m && i < td_meta_size(m); i++) {
        const char *key;
        const td_value *v = td_meta_at(m, i, &key);
        size_t n;
        const char *s = td_value_string(v, &n);
        int64_t iv;
        if (s)
            printf("  meta %s = \"%.*s\"\n", key, (int)n, s);
        else if (td_value_get_int(v, &iv) == 0)
            printf("  meta %s = %" PRId64 " (%s)\n", key, iv, td_meta_type_name(td_value_type(v)));
    }
    td_dict_free(d);
    td_meta_free(m);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "save") == 0)
        return demo_save(argv[2]);
    if (argc >= 3 && strcmp(argv[1], "load") == 0) {
        for (int i = 2; i < argc; i++)
            if (demo_load(argv[i]))
                return 1;
        return 0;
    }
    fprintf(stderr, "usage: td_demo save DIR | td_demo load FILE...\n");
    return 2;
}

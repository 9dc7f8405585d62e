/*
 * test_shards.c - models of several files, written by td_save_model and loaded by td_load:
 * Hugging Face sharded safetensors (shards + index.json, symlinked shards as in the HF cache)
 * and gguf-split sets; the greedy assignment (a tensor over the limit gets a shard of its own);
 * every refusal a damaged set gets (a missing shard, a shard that is a directory, a later
 * split given first, an index naming a file outside its directory); converting a set back to
 * one file.
 */
#include "testutil.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[64];

static void setup(void)
{
    tu_tmpdir(dir);
}

static void teardown(void)
{
    tu_rmtree(dir);
}

/* t0 (10 floats), t1 (30), t2 (300: over the limit), t3 (10), t4 (20), each filled with k.i. */
static td_dict *model(void)
{
    static const int64_t sizes[5] = {10, 30, 300, 10, 20};
    td_dict *d = td_dict_new();
    td_error err = {0};
    for (int k = 0; k < 5; k++) {
        td_array *a;
        TU_OK(td_array_new(TD_FLOAT32, 1, &sizes[k], NULL, &a, &err), &err);
        float *p = td_array_data_mut(a);
        for (int64_t i = 0; i < sizes[k]; i++)
            p[i] = (float)k + (float)i / 1000.0f;
        char name[16];
        snprintf(name, sizeof name, "t%d", k);
        TU_OK(td_dict_set(d, name, a, &err), &err);
        td_array_release(a);
    }
    return d;
}

static void check_model(const td_dict *d)
{
    ck_assert_uint_eq(td_dict_size(d), 5);
    for (int k = 0; k < 5; k++) {
        const char *name;
        const td_array *a = td_dict_at(d, (size_t)k, &name);
        char want[16];
        snprintf(want, sizeof want, "t%d", k);
        ck_assert_str_eq(name, want); /* shard order, then file order: the saved order */
        const float *p = td_array_data(a);
        for (int64_t i = 0; i < td_array_size(a); i++)
            ck_assert(p[i] == (float)k + (float)i / 1000.0f);
    }
}

static int exists(const char *name)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    struct stat st;
    return stat(p, &st) == 0;
}

static td_meta *meta(void)
{
    td_meta *m = td_meta_new();
    td_error err = {0};
    TU_OK(td_meta_set_string(m, "format", "pt", 2, &err), &err);
    return m;
}

static int load(const char *name, td_dict **d, td_meta **m, td_error *err)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    td_load_options o = TD_LOAD_OPTIONS_INIT;
    o.mode = TD_MODE_EMBEDDED;
    return td_load(p, &o, d, m, err);
}

static void save(const char *name, uint64_t limit)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    td_dict *d = model();
    td_meta *m = meta();
    td_save_options o = TD_SAVE_OPTIONS_INIT;
    o.max_shard_bytes = limit;
    td_error err = {0};
    TU_OK(td_save_model(p, d, m, &o, &err), &err);
    td_dict_free(d);
    td_meta_free(m);
}

START_TEST(test_safetensors_shards)
{
    /* 160 bytes a shard: {t0, t1} (40 + 120), {t2} (1200, alone), {t3, t4} (40 + 80). */
    save("m.safetensors", 160);
    ck_assert(exists("m-00001-of-00003.safetensors"));
    ck_assert(exists("m-00003-of-00003.safetensors"));
    ck_assert(!exists("m.safetensors"));
    char p[256];
    snprintf(p, sizeof p, "%s/m.safetensors.index.json", dir);
    json_error_t je;
    json_t *idx = json_load_file(p, 0, &je);
    ck_assert_msg(idx, "%s", je.text);
    ck_assert_int_eq(
        json_integer_value(json_object_get(json_object_get(idx, "metadata"), "total_size")),
        (10 + 30 + 300 + 10 + 20) * 4);
    json_t *wm = json_object_get(idx, "weight_map");
    ck_assert_str_eq(json_string_value(json_object_get(wm, "t2")), "m-00002-of-00003.safetensors");
    ck_assert_str_eq(json_string_value(json_object_get(wm, "t4")), "m-00003-of-00003.safetensors");
    json_decref(idx);
    /* Each shard is a safetensors file of its own, with the metadata. */
    td_dict *d;
    td_meta *m;
    td_error err = {0};
    TU_OK(load("m-00002-of-00003.safetensors", &d, &m, &err), &err);
    ck_assert_uint_eq(td_dict_size(d), 1);
    ck_assert_uint_eq(td_meta_size(m), 1);
    td_dict_free(d);
    td_meta_free(m);
    /* The index loads the model. */
    TU_OK(load("m.safetensors.index.json", &d, &m, &err), &err);
    check_model(d);
    const char *s;
    size_t len;
    TU_OK(td_meta_get_string(m, "format", &s, &len), &err);
    ck_assert_str_eq(s, "pt");
    /* Saved again as one file: one whole file. */
    snprintf(p, sizeof p, "%s/one.safetensors", dir);
    TU_OK(td_save_safetensors(p, d, m, &err), &err);
    td_dict_free(d);
    td_meta_free(m);
    TU_OK(load("one.safetensors", &d, NULL, &err), &err);
    check_model(d);
    td_dict_free(d);
}
END_TEST

START_TEST(test_one_shard_is_a_plain_file)
{
    save("small.safetensors", 1u << 20);
    ck_assert(exists("small.safetensors"));
    ck_assert(!exists("small.safetensors.index.json"));
    ck_assert(!exists("small-00001-of-00001.safetensors"));
    save("small.gguf", 0);
    ck_assert(exists("small.gguf"));
    td_dict *d;
    td_meta *m;
    td_error err = {0};
    TU_OK(load("small.gguf", &d, &m, &err), &err);
    check_model(d);
    ck_assert(!td_meta_get(m, "split.count"));
    td_dict_free(d);
    td_meta_free(m);
}
END_TEST

START_TEST(test_gguf_splits)
{
    save("g.gguf", 160);
    ck_assert(exists("g-00001-of-00003.gguf") && exists("g-00003-of-00003.gguf"));
    td_dict *d;
    td_meta *m;
    td_error err = {0};
    TU_OK(load("g-00001-of-00003.gguf", &d, &m, &err), &err);
    check_model(d);
    /* The model's metadata, without the split keys. */
    ck_assert_uint_eq(td_meta_size(m), 1);
    ck_assert(td_meta_get(m, "format"));
    ck_assert(!td_meta_get(m, "split.count") && !td_meta_get(m, "split.no"));
    /* Saved again as one file: a plain GGUF, not a split. */
    char p[256];
    snprintf(p, sizeof p, "%s/one.gguf", dir);
    TU_OK(td_save_gguf(p, d, m, &err), &err);
    td_dict_free(d);
    td_meta_free(m);
    TU_OK(load("one.gguf", &d, &m, &err), &err);
    check_model(d);
    ck_assert_uint_eq(td_meta_size(m), 1);
    td_dict_free(d);
    td_meta_free(m);
    /* A later split: refused, naming the first. */
    ck_assert_int_eq(load("g-00002-of-00003.gguf", &d, NULL, &err), TD_EINVAL);
    ck_assert_msg(strstr(err.message, "g-00001-of-00003.gguf"), "%s", err.message);
    ck_assert_int_eq(load("g-00003-of-00003.gguf", &d, NULL, &err), TD_EINVAL);
    ck_assert_msg(strstr(err.message, "split 3 of 3"), "%s", err.message);
    /* A missing split: named. */
    snprintf(p, sizeof p, "%s/g-00003-of-00003.gguf", dir);
    ck_assert_int_eq(unlink(p), 0);
    ck_assert_int_eq(load("g-00001-of-00003.gguf", &d, NULL, &err), TD_ENOENT);
    ck_assert_msg(strstr(err.message, "g-00003-of-00003.gguf: cannot open"), "%s", err.message);
    /* A split that is a directory. */
    ck_assert_int_eq(mkdir(p, 0700), 0);
    ck_assert_int_eq(load("g-00001-of-00003.gguf", &d, NULL, &err), TD_EINVAL);
    ck_assert_msg(strstr(err.message, "g-00003-of-00003.gguf: not a regular file"), "%s",
                  err.message);
}
END_TEST

START_TEST(test_hf_cache_symlinks_and_hostile_indexes)
{
    /* The HF cache: snapshots/REV/NAME -> ../../blobs/SHA. */
    save("m.safetensors", 160);
    char p[512], q[512];
    snprintf(p, sizeof p, "%s/blobs", dir);
    ck_assert_int_eq(mkdir(p, 0700), 0);
    snprintf(p, sizeof p, "%s/snapshots", dir);
    ck_assert_int_eq(mkdir(p, 0700), 0);
    snprintf(p, sizeof p, "%s/snapshots/rev", dir);
    ck_assert_int_eq(mkdir(p, 0700), 0);
    const char *files[] = {"m-00001-of-00003.safetensors", "m-00002-of-00003.safetensors",
                           "m-00003-of-00003.safetensors", "m.safetensors.index.json"};
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        snprintf(q, sizeof q, "%s/blobs/sha%d", dir, i);
        ck_assert_int_eq(rename(p, q), 0);
        snprintf(p, sizeof p, "%s/snapshots/rev/%s", dir, files[i]);
        snprintf(q, sizeof q, "../../blobs/sha%d", i);
        ck_assert_int_eq(symlink(q, p), 0);
    }
    td_dict *d;
    td_error err = {0};
    TU_OK(load("snapshots/rev/m.safetensors.index.json", &d, NULL, &err), &err);
    check_model(d);
    td_dict_free(d);

    /* Hostile indexes, written next to the real shards: nothing outside the directory. */
    static const struct {
        const char *json;
        int code;
        const char *msg;
    } bad[] = {
        {"{\"weight_map\": {\"t0\": \"../blobs/sha0\"}}", TD_EFORMAT, "not a plain name"},
        {"{\"weight_map\": {\"t0\": \"/etc/passwd\"}}", TD_EFORMAT, "not a plain name"},
        {"{\"weight_map\": {\"t0\": \"rev/x\"}}", TD_EFORMAT, "not a plain name"},
        {"{\"weight_map\": {\"t0\": \"nothere.safetensors\"}}", TD_ENOENT,
         "nothere.safetensors: cannot open"},
        {"{\"weight_map\": {\"t0\": \"rev\"}}", TD_EINVAL, "rev: not a regular file"},
        {"{\"weight_map\": {\"t0\": \"m-00001-of-00003.safetensors\"}}", TD_EFORMAT,
         "tensor 't1' of"},
        {"{\"weight_map\": {\"t0\": \"m-00001-of-00003.safetensors\", \"t1\": "
         "\"m-00002-of-00003.safetensors\"}}",
         TD_EFORMAT,
         "weight_map puts tensor 't1' in m-00002-of-00003.safetensors, but it is in "
         "m-00001-of-00003.safetensors"},
        {"{\"weight_map\": {\"a_extra\": \"m-00001-of-00003.safetensors\", "
         "\"t0\": \"m-00001-of-00003.safetensors\", \"t1\": \"m-00001-of-00003.safetensors\", "
         "\"t2\": \"m-00002-of-00003.safetensors\", \"t3\": \"m-00003-of-00003.safetensors\", "
         "\"t4\": \"m-00003-of-00003.safetensors\"}}",
         TD_ENOTFOUND, "weight_map: tensor 'a_extra' is not in m-00001-of-00003.safetensors"},
    };
    snprintf(p, sizeof p, "%s/snapshots/rev", dir);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(q, sizeof q, "%s/snapshots/x.safetensors.index.json", dir);
        ck_assert_int_eq(tu_write_file(q, bad[i].json, strlen(bad[i].json)), 0);
        /* Shards next to the index: link the real ones into snapshots/. */
        for (int k = 0; k < 3; k++) {
            char l[512], t[64];
            snprintf(l, sizeof l, "%s/snapshots/%s", dir, files[k]);
            snprintf(t, sizeof t, "../blobs/sha%d", k);
            unlink(l);
            ck_assert_int_eq(symlink(t, l), 0);
        }
        int rc = load("snapshots/x.safetensors.index.json", &d, NULL, &err);
        ck_assert_msg(rc == bad[i].code, "%s -> %d %s", bad[i].json, rc, err.message);
        ck_assert_msg(strstr(err.message, bad[i].msg), "%s: %s", bad[i].json, err.message);
    }
}
END_TEST

START_TEST(test_index_through_auto_mode)
{
    /* No daemon on this socket: auto mode loads the model in this process. */
    save("m.safetensors", 160);
    char p[256], s[256];
    snprintf(p, sizeof p, "%s/m.safetensors.index.json", dir);
    snprintf(s, sizeof s, "%s/none.sock", dir);
    td_load_options o = TD_LOAD_OPTIONS_INIT;
    o.socket_path = s;
    td_dict *d;
    td_error err = {0};
    TU_OK(td_load(p, &o, &d, NULL, &err), &err);
    check_model(d);
    td_dict_free(d);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("shards");
    TCase *tc = tcase_create("shards");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_safetensors_shards);
    tcase_add_test(tc, test_one_shard_is_a_plain_file);
    tcase_add_test(tc, test_gguf_splits);
    tcase_add_test(tc, test_hf_cache_symlinks_and_hostile_indexes);
    tcase_add_test(tc, test_index_through_auto_mode);
    suite_add_tcase(s, tc);
    return tu_run(s);
}

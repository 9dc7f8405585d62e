/*
 * test_model.c - the multi-file model module (formats/model.c) on its own: Hugging Face
 * indexes, hostile ones included (traversal, absolute paths, subdirectories, duplicate keys,
 * values that are not strings, a huge index), GGUF split naming and split.* keys, and every
 * check of the merge of shard tables.
 */
#include "testutil.h"

#include "model.h"
#include "table.h"

#include <stdlib.h>
#include <string.h>

static int parse(const char *json, td__model *m, td_error *err)
{
    memset(m, 0, sizeof *m);
    return td__model_parse_hf((const uint8_t *)json, strlen(json), "m.safetensors.index.json", m,
                              err);
}

START_TEST(test_hf_index_ok)
{
    td__model m;
    td_error err = {0};
    TU_OK(
        parse("{\"metadata\": {\"total_size\": 123456789},"
              " \"weight_map\": {\"b\": \"m-00002-of-00002.safetensors\","
              " \"a\": \"m-00001-of-00002.safetensors\", \"c\": \"m-00002-of-00002.safetensors\"}}",
              &m, &err),
        &err);
    ck_assert_int_eq(m.kind, TD__MODEL_HF);
    ck_assert_uint_eq(m.nfiles, 2);
    /* Files in order of first appearance; the weight_map in the index's order. */
    ck_assert_str_eq(m.files[0], "m-00002-of-00002.safetensors");
    ck_assert_str_eq(m.files[1], "m-00001-of-00002.safetensors");
    ck_assert_uint_eq(m.nmap, 3);
    ck_assert_str_eq(m.map_names[0], "b");
    ck_assert_uint_eq(m.map_file[2], 0);
    td__model_destroy(&m);
    ck_assert(td__model_is_hf_index("/x/model.safetensors.index.json"));
    ck_assert(!td__model_is_hf_index("model.safetensors"));
    ck_assert(!td__model_is_hf_index(".safetensors.index.json"));
    ck_assert(td__model_is_split_name("/m/llama-00001-of-00003.gguf"));
    ck_assert(td__model_is_split_name("x-00002-of-00002.gguf"));
    ck_assert(!td__model_is_split_name("x-0001-of-00003.gguf"));
    ck_assert(!td__model_is_split_name("x-00001-of-0000a.gguf"));
    ck_assert(!td__model_is_split_name("model.gguf"));
    ck_assert(!td__model_is_split_name("-00001-of-00003.gguf"));
}
END_TEST

static const struct {
    const char *json;
    int code;
    const char *msg;
} hostile_indexes[] = {
    {"{\"weight_map\": {\"a\": \"../x.safetensors\"}}", TD_EFORMAT,
     "'../x.safetensors' is not a plain name"},
    {"{\"weight_map\": {\"a\": \"/etc/passwd\"}}", TD_EFORMAT, "'/etc/passwd' is not a plain name"},
    {"{\"weight_map\": {\"a\": \"sub/x.safetensors\"}}", TD_EFORMAT, "not a plain name"},
    {"{\"weight_map\": {\"a\": \"..\"}}", TD_EFORMAT, "not a plain name"},
    {"{\"weight_map\": {\"a\": \".\"}}", TD_EFORMAT, "not a plain name"},
    {"{\"weight_map\": {\"a\": \"\"}}", TD_EFORMAT, "not a plain name"},
    {"{\"weight_map\": {\"a\": \"x\\u0000y\"}}", TD_EFORMAT, "is not allowed"},
    {"{\"weight_map\": {\"a\": 3}}", TD_EFORMAT, "tensor 'a': the file is not a string"},
    {"{\"weight_map\": {\"a\": null}}", TD_EFORMAT, "tensor 'a': the file is not a string"},
    {"{\"weight_map\": {\"a\": [\"x\"]}}", TD_EFORMAT, "tensor 'a': the file is not a string"},
    {"{\"weight_map\": {\"a\": \"x\", \"a\": \"y\"}}", TD_EFORMAT, "duplicate object key"},
    {"{\"weight_map\": {}}", TD_EFORMAT, "weight_map is empty"},
    {"{\"metadata\": {}}", TD_EFORMAT, "weight_map: missing"},
    {"{\"weight_map\": [\"a\"]}", TD_EFORMAT, "weight_map: of the wrong type"},
    {"[1, 2]", TD_EFORMAT, "not a JSON object"},
    {"{\"weight_map\": {\"a\": \"x\"}", TD_EFORMAT, "not a JSON index"},
};

START_TEST(test_hf_index_hostile)
{
    for (size_t i = 0; i < sizeof hostile_indexes / sizeof hostile_indexes[0]; i++) {
        td__model m;
        td_error err = {0};
        int rc = parse(hostile_indexes[i].json, &m, &err);
        td__model_destroy(&m);
        ck_assert_msg(rc == hostile_indexes[i].code, "%s -> %d (%s)", hostile_indexes[i].json, rc,
                      err.message);
        ck_assert_msg(strstr(err.message, hostile_indexes[i].msg), "%s: '%s' lacks '%s'",
                      hostile_indexes[i].json, err.message, hostile_indexes[i].msg);
        ck_assert_msg(strstr(err.message, "m.safetensors.index.json"), "%s", err.message);
    }
    /* An index over the bound is refused before it is parsed. */
    size_t big = TD__MODEL_MAX_INDEX + 1;
    uint8_t *p = malloc(big);
    ck_assert(p);
    memset(p, ' ', big);
    td__model m = {0};
    td_error err = {0};
    ck_assert_int_eq(td__model_parse_hf(p, big, "huge.json", &m, &err), TD_ELIMIT);
    ck_assert(strstr(err.message, "huge.json"));
    free(p);
    td__model_destroy(&m);
}
END_TEST

/* A GGUF table with split keys of the given types. */
static void split_table(td__table *t, int64_t no, int64_t count, int64_t total,
                        td_meta_type no_type)
{
    td__table_init(t, TD_FORMAT_GGUF);
    t->meta = td_meta_new();
    td_error err = {0};
    TU_OK(td_meta_set_string(t->meta, "general.architecture", "llama", 5, &err), &err);
    uint16_t u16 = (uint16_t)no;
    uint32_t u32 = (uint32_t)no;
    TU_OK(td_meta_set_scalar(t->meta, "split.no", no_type,
                             no_type == TD_META_UINT16 ? (const void *)&u16 : (const void *)&u32,
                             &err),
          &err);
    uint16_t c = (uint16_t)count;
    int32_t tot = (int32_t)total;
    TU_OK(td_meta_set_scalar(t->meta, "split.count", TD_META_UINT16, &c, &err), &err);
    TU_OK(td_meta_set_scalar(t->meta, "split.tensors.count", TD_META_INT32, &tot, &err), &err);
}

static void add_tensor(td__table *t, const char *name)
{
    td_error err = {0};
    td__entry *e = td__table_add(t, name, strlen(name), &err);
    ck_assert_msg(e, "%s", err.message);
    e->dtype = TD_FLOAT32;
    int64_t shape[1] = {2};
    TU_OK(td__entry_set_shape(e, 1, shape, &err), &err);
    e->nbytes = 8;
    e->offset = 64;
}

START_TEST(test_gguf_split_naming)
{
    td__table t;
    td__model m = {0};
    td_error err = {0};
    split_table(&t, 0, 3, 5, TD_META_UINT16);
    TU_OK(td__model_gguf_split("llama-7b-00001-of-00003.gguf", &t, &m, &err), &err);
    ck_assert_uint_eq(m.nfiles, 3);
    ck_assert_str_eq(m.files[2], "llama-7b-00003-of-00003.gguf");
    td__model_destroy(&m);
    /* Split 0 under the name of split 2: the keys and the name disagree. */
    ck_assert_int_eq(td__model_gguf_split("llama-7b-00002-of-00003.gguf", &t, &m, &err),
                     TD_EFORMAT);
    td__model_destroy(&m);
    td__table_destroy(&t);
    /* Not the first split: the message says which file to load. */
    split_table(&t, 1, 3, 5, TD_META_UINT16);
    ck_assert_int_eq(td__model_gguf_split("llama-7b-00002-of-00003.gguf", &t, &m, &err), TD_EINVAL);
    ck_assert_msg(strstr(err.message, "llama-7b-00001-of-00003.gguf"), "%s", err.message);
    td__model_destroy(&m);
    /* A name that does not match split.count. */
    td__table_destroy(&t);
    split_table(&t, 0, 3, 5, TD_META_UINT16);
    ck_assert_int_eq(td__model_gguf_split("model.gguf", &t, &m, &err), TD_EFORMAT);
    ck_assert_msg(strstr(err.message, "-00001-of-00003.gguf"), "%s", err.message);
    td__model_destroy(&m);
    /* split.no of the wrong type. */
    td__table_destroy(&t);
    split_table(&t, 0, 3, 5, TD_META_UINT32);
    ck_assert_int_eq(td__model_gguf_split("m-00001-of-00003.gguf", &t, &m, &err), TD_EFORMAT);
    ck_assert_msg(strstr(err.message, "split.no is a uint32, not a uint16"), "%s", err.message);
    td__model_destroy(&m);
    td__table_destroy(&t);
    /* One split, or none: a plain file, whose split keys are stripped. */
    split_table(&t, 0, 1, 5, TD_META_UINT16);
    TU_OK(td__model_gguf_split("m.gguf", &t, &m, &err), &err);
    ck_assert_uint_eq(m.nfiles, 0);
    TU_OK(td__model_strip_split_keys(&t, &err), &err);
    ck_assert_uint_eq(td_meta_size(t.meta), 1);
    ck_assert(td_meta_get(t.meta, "general.architecture"));
    td__table_destroy(&t);
}
END_TEST

START_TEST(test_gguf_split_merge)
{
    td__model m = {0};
    td_error err = {0};
    td__table s[3], out;
    for (int round = 0; round < 5; round++) {
        split_table(&s[0], 0, 3, 5, TD_META_UINT16);
        TU_OK(td__model_gguf_split("x-00001-of-00003.gguf", &s[0], &m, &err), &err);
        split_table(&s[1], round == 1 ? 2 : 1, 3, 0, TD_META_UINT16);
        split_table(&s[2], 2, round == 2 ? 4 : 3, 0, TD_META_UINT16);
        add_tensor(&s[0], "a");
        add_tensor(&s[0], "b");
        add_tensor(&s[1], round == 3 ? "a" : "c");
        add_tensor(&s[2], "d");
        if (round != 4)
            add_tensor(&s[2], "e");
        td__table_init(&out, TD_FORMAT_GGUF);
        int rc = td__model_merge(&m, s, "x-00001-of-00003.gguf", &out, &err);
        switch (round) {
        case 0:
            TU_OK(rc, &err);
            ck_assert_uint_eq(out.n, 5);
            ck_assert_str_eq(out.entries[2].name, "c");
            ck_assert_uint_eq(out.entries[2].file, 1);
            ck_assert_uint_eq(out.entries[4].file, 2);
            ck_assert_uint_eq(out.entries[4].region, 2);
            ck_assert_uint_eq(td_meta_size(out.meta), 1); /* split.* gone */
            break;
        case 1:
            ck_assert_int_eq(rc, TD_EFORMAT);
            ck_assert_msg(strstr(err.message, "x-00002-of-00003.gguf: split.no is 2, expected 1"),
                          "%s", err.message);
            break;
        case 2:
            ck_assert_int_eq(rc, TD_EFORMAT);
            ck_assert_msg(strstr(err.message, "split.count is 4"), "%s", err.message);
            break;
        case 3:
            ck_assert_int_eq(rc, TD_EDUP);
            ck_assert_msg(strstr(err.message, "tensor 'a' is in two splits: "
                                              "x-00001-of-00003.gguf and x-00002-of-00003.gguf"),
                          "%s", err.message);
            break;
        case 4:
            ck_assert_int_eq(rc, TD_EFORMAT);
            ck_assert_msg(strstr(err.message, "split.tensors.count is 5, but the 3 splits hold 4"),
                          "%s", err.message);
            break;
        }
        td__table_destroy(&out);
        for (int i = 0; i < 3; i++)
            td__table_destroy(&s[i]);
        td__model_destroy(&m);
    }
}
END_TEST

START_TEST(test_hf_merge_checks)
{
    static const char *index = "{\"weight_map\": {\"a\": \"s1\", \"b\": \"s1\", \"c\": \"s2\"}}";
    static const struct {
        const char *s1[3], *s2[3];
        int code;
        const char *msg;
    } cases[] = {
        {{"a", "b"}, {"c"}, 0, NULL},
        {{"a"}, {"c"}, TD_ENOTFOUND, "weight_map: tensor 'b' is not in s1"},
        {{"a", "b"}, {"c", "b"}, TD_EDUP, "tensor 'b' is in two shards: s1 and s2"},
        {{"a", "b"}, {"c", "z"}, TD_EFORMAT, "tensor 'z' of s2 is missing from weight_map"},
        {{"a"}, {"c", "b"}, TD_EFORMAT, "weight_map puts tensor 'b' in s1, but it is in s2"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        td__model m;
        td_error err = {0};
        TU_OK(parse(index, &m, &err), &err);
        td__table s[2], out;
        for (int f = 0; f < 2; f++) {
            td__table_init(&s[f], TD_FORMAT_SAFETENSORS);
            s[f].meta = td_meta_new();
            for (int i = 0; i < 3; i++) {
                const char *n = f ? cases[k].s2[i] : cases[k].s1[i];
                if (n)
                    add_tensor(&s[f], n);
            }
        }
        TU_OK(td_meta_set_string(s[0].meta, "format", "pt", 2, &err), &err);
        TU_OK(td_meta_set_string(s[1].meta, "format", "np", 2, &err), &err);
        TU_OK(td_meta_set_string(s[1].meta, "extra", "yes", 3, &err), &err);
        td__table_init(&out, TD_FORMAT_SAFETENSORS);
        int rc = td__model_merge(&m, s, "m.safetensors.index.json", &out, &err);
        ck_assert_msg(rc == cases[k].code, "case %zu: %d %s", k, rc, err.message);
        if (!rc) {
            ck_assert_uint_eq(out.n, 3);
            const char *v;
            size_t len;
            /* The first shard's metadata wins; others add what is absent. */
            TU_OK(td_meta_get_string(out.meta, "format", &v, &len), &err);
            ck_assert_str_eq(v, "pt");
            TU_OK(td_meta_get_string(out.meta, "extra", &v, &len), &err);
            ck_assert_str_eq(v, "yes");
        } else {
            ck_assert_msg(strstr(err.message, cases[k].msg), "case %zu: %s", k, err.message);
            ck_assert_msg(strstr(err.message, "m.safetensors.index.json"), "%s", err.message);
        }
        td__table_destroy(&out);
        td__table_destroy(&s[0]);
        td__table_destroy(&s[1]);
        td__model_destroy(&m);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("model");
    tcase_add_test(tc, test_hf_index_ok);
    tcase_add_test(tc, test_hf_index_hostile);
    tcase_add_test(tc, test_gguf_split_naming);
    tcase_add_test(tc, test_gguf_split_merge);
    tcase_add_test(tc, test_hf_merge_checks);
    suite_add_tcase(s, tc);
    return tu_run(s);
}

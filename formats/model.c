/*
 * model.c - Hugging Face shard indexes and GGUF split sets: parsing, naming, checking, and
 * merging the shards' tables into one (see model.h).
 */
#include "model.h"

#include "common.h"
#include "meta_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int td__model_is_hf_index(const char *path)
{
    size_t n = path ? strlen(path) : 0, k = strlen(TD__MODEL_HF_SUFFIX);
    return n > k && strcmp(path + n - k, TD__MODEL_HF_SUFFIX) == 0;
}

int td__model_is_split_name(const char *path)
{
    /* "-00001-of-00003.gguf": 20 characters, digits where gguf-split prints %05d. */
    static const char form[] = "-#####-of-#####.gguf";
    size_t n = path ? strlen(path) : 0, k = sizeof form - 1;
    if (n <= k)
        return 0;
    const char *s = path + n - k;
    for (size_t i = 0; i < k; i++)
        if (form[i] == '#' ? !(s[i] >= '0' && s[i] <= '9') : s[i] != form[i])
            return 0;
    return 1;
}

void td__model_destroy(td__model *m)
{
    for (size_t i = 0; i < m->nfiles; i++)
        free(m->files[i]);
    for (size_t i = 0; i < m->nmap; i++)
        free(m->map_names[i]);
    free(m->files);
    free(m->map_names);
    free(m->map_file);
    memset(m, 0, sizeof *m);
}

char *td__model_file_label(const char *path, const char *name)
{
    const char *slash = strrchr(path, '/');
    size_t dlen = slash ? (size_t)(slash - path) + 1 : 0;
    size_t cap = dlen + strlen(name) + 1;
    char *s = malloc(cap);
    if (s) {
        memcpy(s, path, dlen);
        memcpy(s + dlen, name, cap - dlen);
    }
    return s;
}

int td__model_read_index(int fd, uint64_t size, const char *fname, uint8_t **out, size_t *len,
                         td_error *err)
{
    if (size > TD__MODEL_MAX_INDEX)
        return td__err(err, TD_ELIMIT, "%s: index of %llu bytes, over the bound of %u", fname,
                       (unsigned long long)size, TD__MODEL_MAX_INDEX);
    uint8_t *buf = malloc(size ? (size_t)size : 1);
    if (!buf)
        return td__err(err, TD_ENOMEM, "%s: out of memory", fname);
    int rc = td__pread_all(fd, buf, size, 0, fname, err);
    if (rc) {
        free(buf);
        return rc;
    }
    *out = buf;
    *len = (size_t)size;
    return 0;
}

/* A shard name is a plain name in the index's directory: nothing that leads elsewhere. */
static int model_plain_name(const char *s, size_t len)
{
    if (!len || len > TD__MODEL_MAX_NAME || memchr(s, '/', len) || memchr(s, '\0', len))
        return 0;
    return !(len == 1 && s[0] == '.') && !(len == 2 && s[0] == '.' && s[1] == '.');
}

int td__model_parse_hf(const uint8_t *json, size_t len, const char *fname, td__model *m,
                       td_error *err)
{
    char q[80], q2[80];
    if (len > TD__MODEL_MAX_INDEX)
        return td__err(err, TD_ELIMIT, "%s: index of %zu bytes, over the bound of %u", fname, len,
                       TD__MODEL_MAX_INDEX);
    json_error_t je;
    json_t *root = json_loadb((const char *)json, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return td__err(err, TD_EFORMAT, "%s: not a JSON index: %s (line %d, column %d)", fname,
                       je.text, je.line, je.column);
    int rc = 0;
    json_t *wm = json_is_object(root) ? json_object_get(root, "weight_map") : NULL;
    if (!json_is_object(root)) {
        rc = td__err(err, TD_EFORMAT, "%s: the index is not a JSON object", fname);
        goto out;
    }
    if (!json_is_object(wm)) {
        rc = td__err(err, TD_EFORMAT, "%s: weight_map: %s, not an object of tensor names", fname,
                     wm ? "of the wrong type" : "missing");
        goto out;
    }
    size_t n = json_object_size(wm);
    if (!n) {
        rc = td__err(err, TD_EFORMAT, "%s: weight_map is empty", fname);
        goto out;
    }
    m->kind = TD__MODEL_HF;
    m->map_names = calloc(n, sizeof *m->map_names);
    m->map_file = calloc(n, sizeof *m->map_file);
    m->files = calloc(n < TD__MODEL_MAX_FILES ? n : TD__MODEL_MAX_FILES, sizeof *m->files);
    if (!m->map_names || !m->map_file || !m->files) {
        rc = td__err(err, TD_ENOMEM, "%s: out of memory for %zu tensors", fname, n);
        goto out;
    }
    const char *key;
    json_t *v;
    json_object_foreach(wm, key, v)
    {
        size_t klen = strlen(key);
        if (!json_is_string(v)) {
            rc = td__err(err, TD_EFORMAT, "%s: weight_map: tensor '%s': the file is not a string",
                         fname, td__quote(key, klen, q, sizeof q));
            goto out;
        }
        const char *file = json_string_value(v);
        size_t flen = json_string_length(v);
        if (!model_plain_name(file, flen)) {
            rc = td__err(err, TD_EFORMAT,
                         "%s: weight_map: tensor '%s': file '%s' is not a plain name in the "
                         "index's directory",
                         fname, td__quote(key, klen, q, sizeof q),
                         td__quote(file, flen, q2, sizeof q2));
            goto out;
        }
        size_t f = 0;
        while (f < m->nfiles && strcmp(m->files[f], file) != 0)
            f++;
        if (f == m->nfiles) {
            if (m->nfiles == TD__MODEL_MAX_FILES) {
                rc = td__err(err, TD_ELIMIT, "%s: weight_map names more than %u files", fname,
                             TD__MODEL_MAX_FILES);
                goto out;
            }
            if (!(m->files[f] = strdup(file))) {
                rc = td__err(err, TD_ENOMEM, "%s: out of memory", fname);
                goto out;
            }
            m->nfiles++;
        }
        if (!(m->map_names[m->nmap] = strdup(key))) {
            rc = td__err(err, TD_ENOMEM, "%s: out of memory", fname);
            goto out;
        }
        m->map_file[m->nmap++] = (uint32_t)f;
    }
out:
    json_decref(root);
    return rc;
}

/* Reads a GGUF integer key of the given type into *out: 0, 1 when absent, or an error naming
 * the file, the key and the type found. */
static int model_split_key(const td_meta *meta, const char *file, const char *key,
                           td_meta_type want, int64_t *out, td_error *err)
{
    const td_value *v = meta ? td_meta_get(meta, key) : NULL;
    if (!v)
        return 1;
    if (td_value_type(v) != want)
        return td__err(err, TD_EFORMAT, "%s: %s is a %s, not a %s", file, key,
                       td_meta_type_name(td_value_type(v)), td_meta_type_name(want));
    return td_value_get_int(v, out) ? td__err(err, TD_EFORMAT, "%s: %s: unreadable", file, key) : 0;
}

int td__model_gguf_split(const char *base, const td__table *t0, td__model *m, td_error *err)
{
    int64_t no = 0, count = 1, total = 0;
    int rc = model_split_key(t0->meta, base, "split.count", TD_META_UINT16, &count, err);
    if (rc < 0)
        return rc;
    if (rc == 1 || count <= 1)
        return 0; /* not a split set */
    rc = model_split_key(t0->meta, base, "split.no", TD_META_UINT16, &no, err);
    if (rc < 0)
        return rc;
    if (rc == 1)
        return td__err(err, TD_EFORMAT, "%s: split.count is %lld but split.no is missing", base,
                       (long long)count);
    rc = model_split_key(t0->meta, base, "split.tensors.count", TD_META_INT32, &total, err);
    if (rc < 0)
        return rc;
    if (rc == 1 || total < 0)
        return td__err(err, TD_EFORMAT, "%s: split.tensors.count is %s", base,
                       rc == 1 ? "missing" : "negative");
    /* PREFIX-%05d-of-%05d.gguf: the suffix is 20 characters for counts up to 99999. */
    size_t len = strlen(base);
    char want[64];
    snprintf(want, sizeof want, "-%05lld-of-%05lld.gguf", (long long)(no + 1), (long long)count);
    size_t wl = strlen(want);
    if (len <= wl || strcmp(base + len - wl, want) != 0)
        return td__err(err, TD_EFORMAT,
                       "%s: split %lld of %lld, but the name does not end in '%s' as gguf-split "
                       "names splits",
                       base, (long long)no + 1, (long long)count, want);
    size_t plen = len - wl;
    if (no != 0)
        return td__err(err, TD_EINVAL,
                       "%s: split %lld of %lld: load the model from its first split, "
                       "%.*s-00001-of-%05lld.gguf",
                       base, (long long)no + 1, (long long)count, (int)plen, base,
                       (long long)count);
    m->kind = TD__MODEL_GGUF_SPLIT;
    m->files = calloc((size_t)count, sizeof *m->files);
    if (!m->files)
        return td__err(err, TD_ENOMEM, "%s: out of memory", base);
    for (int64_t i = 0; i < count; i++) {
        size_t cap = plen + wl + 1;
        char *f = malloc(cap);
        if (!f)
            return td__err(err, TD_ENOMEM, "%s: out of memory", base);
        snprintf(f, cap, "%.*s-%05lld-of-%05lld.gguf", (int)plen, base, (long long)(i + 1),
                 (long long)count);
        m->files[m->nfiles++] = f;
    }
    return 0;
}

typedef struct model_ref {
    const char *name;
    uint32_t file;
} model_ref;

/* By name, then file: the two files of a duplicate are named in shard order. */
static int model_ref_cmp(const void *a, const void *b)
{
    const model_ref *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->file > y->file) - (x->file < y->file);
}

/* The entries of out as (name, file) pairs sorted by name into *have (malloc'd, the caller
 * frees it whatever the outcome); a name in two files is refused, naming the tensor and both
 * files (unit: "shards" or "splits"). */
static int model_sorted_refs(const td__model *m, const td__table *out, const char *fname,
                             const char *unit, model_ref **have, td_error *err)
{
    char q[80];
    *have = malloc((out->n ? out->n : 1) * sizeof **have);
    if (!*have)
        return td__err(err, TD_ENOMEM, "%s: out of memory checking %zu tensors", fname, out->n);
    model_ref *h = *have;
    for (size_t i = 0; i < out->n; i++)
        h[i] = (model_ref){out->entries[i].name, out->entries[i].file};
    qsort(h, out->n, sizeof *h, model_ref_cmp);
    for (size_t i = 1; i < out->n; i++)
        if (strcmp(h[i].name, h[i - 1].name) == 0)
            return td__err(err, TD_EDUP, "%s: tensor '%s' is in two %s: %s and %s", fname,
                           td__quote(h[i].name, strlen(h[i].name), q, sizeof q), unit,
                           m->files[h[i - 1].file], m->files[h[i].file]);
    return 0;
}

/* Moves the entries of shards[0..n) into out, in shard order, marking each with its file. */
static int model_move_entries(const td__model *m, td__table *shards, const char *fname,
                              td__table *out, td_error *err)
{
    size_t total = 0;
    for (size_t f = 0; f < m->nfiles; f++)
        total += shards[f].n;
    int rc = td__table_reserve(out, total, err);
    if (rc)
        return rc;
    for (size_t f = 0; f < m->nfiles; f++) {
        for (size_t i = 0; i < shards[f].n; i++) {
            td__entry *e = &shards[f].entries[i];
            if (!e->name)
                return td__err(err, TD_EFORMAT, "%s: %s: a tensor without a name", fname,
                               m->files[f]);
            out->entries[out->n] = *e;
            td__entry *o = &out->entries[out->n++];
            o->file = (uint32_t)f;
            if (!o->layout)
                o->region = (uint32_t)f;
            /* out owns the name and shape now */
            e->name = NULL;
            e->shape = NULL;
            e->ndim = 0;
        }
        shards[f].n = 0;
    }
    return 0;
}

static int model_check_hf(const td__model *m, const td__table *out, const char *fname,
                          td_error *err)
{
    char q[80];
    model_ref *have = NULL;
    model_ref *want = malloc((m->nmap ? m->nmap : 1) * sizeof *want);
    int rc = model_sorted_refs(m, out, fname, "shards", &have, err);
    if (rc)
        goto out;
    if (!want) {
        rc = td__err(err, TD_ENOMEM, "%s: out of memory checking %zu tensors", fname, out->n);
        goto out;
    }
    for (size_t i = 0; i < m->nmap; i++)
        want[i] = (model_ref){m->map_names[i], m->map_file[i]};
    qsort(want, m->nmap, sizeof *want, model_ref_cmp);
    size_t i = 0, j = 0;
    while (i < out->n || j < m->nmap) {
        int c = i == out->n ? 1 : j == m->nmap ? -1 : strcmp(have[i].name, want[j].name);
        if (c < 0) {
            rc = td__err(err, TD_EFORMAT, "%s: tensor '%s' of %s is missing from weight_map", fname,
                         td__quote(have[i].name, strlen(have[i].name), q, sizeof q),
                         m->files[have[i].file]);
            goto out;
        }
        if (c > 0) {
            rc = td__err(err, TD_ENOTFOUND, "%s: weight_map: tensor '%s' is not in %s", fname,
                         td__quote(want[j].name, strlen(want[j].name), q, sizeof q),
                         m->files[want[j].file]);
            goto out;
        }
        if (have[i].file != want[j].file) {
            rc = td__err(err, TD_EFORMAT, "%s: weight_map puts tensor '%s' in %s, but it is in %s",
                         fname, td__quote(want[j].name, strlen(want[j].name), q, sizeof q),
                         m->files[want[j].file], m->files[have[i].file]);
            goto out;
        }
        i++, j++;
    }
out:
    free(have);
    free(want);
    return rc;
}

/* HF metadata: the first shard's, then every key of the later shards that is still absent. */
static int model_meta_hf(const td__model *m, td__table *shards, const char *fname, td__table *out,
                         td_error *err)
{
    out->meta = shards[0].meta;
    shards[0].meta = NULL;
    if (!out->meta && !(out->meta = td_meta_new()))
        return td__err(err, TD_ENOMEM, "%s: out of memory", fname);
    for (size_t f = 1; f < m->nfiles; f++) {
        const td_meta *sm = shards[f].meta;
        for (size_t i = 0; sm && i < td_meta_size(sm); i++) {
            const char *key;
            const td_value *v = td_meta_at(sm, i, &key);
            size_t len;
            const char *s = td_value_string(v, &len);
            if (td_meta_get(out->meta, key) || !s)
                continue; /* safetensors metadata holds strings only */
            int rc = td_meta_set_string(out->meta, key, s, len, err);
            if (rc)
                return td__err_prefix(err, rc, fname);
        }
    }
    return 0;
}

static int model_check_gguf(const td__model *m, td__table *shards, const td__table *out,
                            const char *fname, td_error *err)
{
    int64_t total = 0;
    for (size_t f = 0; f < m->nfiles; f++) {
        const char *file = m->files[f];
        int64_t no = -1, count = -1;
        int rc = model_split_key(shards[f].meta, file, "split.no", TD_META_UINT16, &no, err);
        if (rc < 0)
            return rc;
        int rc2 = model_split_key(shards[f].meta, file, "split.count", TD_META_UINT16, &count, err);
        if (rc2 < 0)
            return rc2;
        if (rc == 1 || rc2 == 1)
            return td__err(err, TD_EFORMAT, "%s: not a split of %s: split.%s is missing", file,
                           fname, rc == 1 ? "no" : "count");
        if (no != (int64_t)f)
            return td__err(err, TD_EFORMAT, "%s: split.no is %lld, expected %zu (split %zu of %zu)",
                           file, (long long)no, f, f + 1, m->nfiles);
        if (count != (int64_t)m->nfiles)
            return td__err(err, TD_EFORMAT, "%s: split.count is %lld, but %s has %zu splits", file,
                           (long long)count, fname, m->nfiles);
        if (f == 0) {
            rc = model_split_key(shards[0].meta, file, "split.tensors.count", TD_META_INT32, &total,
                                 err);
            if (rc < 0)
                return rc;
            if (rc == 1)
                return td__err(err, TD_EFORMAT, "%s: split.tensors.count is missing", file);
        }
    }
    model_ref *have = NULL;
    int rc = model_sorted_refs(m, out, fname, "splits", &have, err);
    free(have);
    if (rc)
        return rc;
    if ((uint64_t)total != out->n)
        return td__err(err, TD_EFORMAT,
                       "%s: split.tensors.count is %lld, but the %zu splits hold %zu tensors",
                       fname, (long long)total, m->nfiles, out->n);
    return 0;
}

int td__model_gguf_is_split(const td__table *t)
{
    int64_t count = 1;
    return model_split_key(t->meta, "", "split.count", TD_META_UINT16, &count, NULL) == 0 &&
           count > 1;
}

int td__model_strip_split_keys(td__table *t, td_error *err)
{
    if (!t->meta || !td_meta_get(t->meta, "split.count"))
        return 0;
    td_meta *c = td__meta_copy_without(t->meta, "split.");
    if (!c)
        return td__err(err, TD_ENOMEM, "out of memory");
    td_meta_free(t->meta);
    t->meta = c;
    return 0;
}

int td__model_merge(const td__model *m, td__table *shards, const char *fname, td__table *out,
                    td_error *err)
{
    if (!m->nfiles)
        return td__err(err, TD_EINVAL, "%s: a model of no files", fname);
    out->format = shards[0].format;
    int rc = model_move_entries(m, shards, fname, out, err);
    if (rc)
        return rc;
    if (m->kind == TD__MODEL_HF) {
        rc = model_check_hf(m, out, fname, err);
        if (!rc)
            rc = model_meta_hf(m, shards, fname, out, err);
        return rc;
    }
    rc = model_check_gguf(m, shards, out, fname, err);
    if (rc)
        return rc;
    out->meta = td__meta_copy_without(shards[0].meta, "split.");
    if (!out->meta)
        return td__err(err, TD_ENOMEM, "%s: out of memory", fname);
    return 0;
}

/*
 * shards.c - td_save_model: a dict saved as one safetensors or GGUF file, or, past a size
 * limit, as shards in the layouts the ecosystem loads:
 *   NAME.safetensors -> NAME-0000i-of-0000N.safetensors + NAME.safetensors.index.json (Hugging
 *                       Face: weight_map of every tensor, metadata.total_size = tensor bytes);
 *   NAME.gguf        -> NAME-0000i-of-0000N.gguf (llama.cpp's gguf-split: split.no, split.count,
 *                       split.tensors.count in every split, the model's metadata in the first).
 * Tensors are assigned greedily in dict order: a shard takes tensors while their bytes stay
 * within the limit, a tensor larger than the limit gets a shard of its own, and no tensor is
 * cut. Every file is saved atomically (td__save_atomic); the index, or the first split, is
 * written last, so that nobody sees it name a shard that is not there yet.
 */
#include "client.h"
#include "common.h"
#include "meta_internal.h"
#include "model.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void td_save_options_init(td_save_options *o)
{
    if (o) {
        memset(o, 0, sizeof *o);
        o->size = sizeof *o;
    }
}

/* NAME-%05d-of-%05d.EXT, malloc'd; stem is the path without ".EXT". */
static char *shard_name(const char *stem, size_t i, size_t n, const char *ext)
{
    size_t cap = strlen(stem) + strlen(ext) + 32;
    char *s = malloc(cap);
    if (s)
        snprintf(s, cap, "%s-%05zu-of-%05zu%s", stem, i + 1, n, ext);
    return s;
}

/* The Hugging Face index: weight_map (tensor -> shard's file name, sorted by tensor as HF
 * writes it) and metadata.total_size. Returns malloc'd JSON or NULL when out of memory. */
static char *hf_index_json(const td__item *items, const size_t *first, size_t nshards,
                           char *const *files)
{
    json_t *root = json_object(), *meta = json_object(), *wm = json_object();
    uint64_t total = 0;
    char *out = NULL;
    if (!root || !meta || !wm)
        goto done;
    for (size_t s = 0; s < nshards; s++) {
        const char *base = strrchr(files[s], '/');
        base = base ? base + 1 : files[s];
        for (size_t i = first[s]; i < first[s + 1]; i++) {
            total += items[i].nbytes;
            if (json_object_set_new(wm, items[i].name, json_string(base)))
                goto done;
        }
    }
    if (json_object_set_new(meta, "total_size", json_integer((json_int_t)total)) ||
        json_object_set(root, "metadata", meta) || json_object_set(root, "weight_map", wm))
        goto done;
    out = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS);
done:
    json_decref(meta);
    json_decref(wm);
    json_decref(root);
    return out;
}

/* The metadata of GGUF split s of nshards: the model's in the first, only the split keys in the
 * others. */
static td_meta *gguf_split_meta(const td_meta *meta, size_t s, size_t nshards, size_t ntensors)
{
    td_meta *m = s == 0 && meta ? td__meta_copy_without(meta, "split.") : td_meta_new();
    if (!m)
        return NULL;
    uint16_t no = (uint16_t)s, count = (uint16_t)nshards;
    int32_t total = (int32_t)ntensors;
    if (td_meta_set_scalar(m, "split.no", TD_META_UINT16, &no, NULL) ||
        td_meta_set_scalar(m, "split.count", TD_META_UINT16, &count, NULL) ||
        td_meta_set_scalar(m, "split.tensors.count", TD_META_INT32, &total, NULL)) {
        td_meta_free(m);
        return NULL;
    }
    return m;
}

int td_save_model(const char *path, const td_dict *arrays, const td_meta *meta,
                  const td_save_options *opt, td_error *err)
{
    if (!path || !arrays)
        return td__err(err, TD_EINVAL, "[save] path and arrays must not be NULL");
    td_save_options o = {0};
    if (opt) {
        if (opt->size < sizeof(size_t) + sizeof(uint64_t))
            return td__err(err, TD_EINVAL,
                           "%s: td_save_options.size is %zu: initialise the options with "
                           "TD_SAVE_OPTIONS_INIT",
                           path, opt->size);
        memcpy(&o, opt, opt->size < sizeof o ? opt->size : sizeof o);
    }
    td_format format = td_format_from_path(path);
    if (format != TD_FORMAT_SAFETENSORS && format != TD_FORMAT_GGUF)
        return td__err(err, TD_EINVAL,
                       "%s: a model is saved as .safetensors or .gguf (the name's extension)",
                       path);
    const char *ext = format == TD_FORMAT_GGUF ? ".gguf" : ".safetensors";
    size_t n = td_dict_size(arrays);
    td__item *items = NULL;
    char **names = NULL;
    int rc = td__save_collect(arrays, path, 0, &items, &names, err);
    size_t nshards = 0, *first = NULL;
    char **files = NULL;
    td_meta **metas = NULL;
    char *stem = NULL, *index = NULL, *json = NULL;
    if (rc)
        goto out;
    /* Greedy assignment: first[s] is the first item of shard s, first[nshards] == n. */
    first = malloc((n + 2) * sizeof *first);
    if (!first) {
        rc = td__err(err, TD_ENOMEM, "%s: out of memory", path);
        goto out;
    }
    first[0] = 0;
    uint64_t cur = 0;
    for (size_t i = 0; i < n; i++) {
        if (o.max_shard_bytes && i > first[nshards] && cur + items[i].nbytes > o.max_shard_bytes) {
            first[++nshards] = i;
            cur = 0;
        }
        cur += items[i].nbytes;
    }
    first[++nshards] = n;
    if (nshards > TD__MODEL_MAX_FILES) {
        rc = td__err(err, TD_ELIMIT,
                     "%s: %zu shards of at most %llu bytes, over the %u a split set can count",
                     path, nshards, (unsigned long long)o.max_shard_bytes, TD__MODEL_MAX_FILES);
        goto out;
    }
    if (nshards == 1) {
        /* One shard is enough: the plain single file. */
        td__save_job job = {.format = format, .items = items, .n = n, .meta = meta};
        rc = td__save_atomic(path, &job, err);
        goto out;
    }
    size_t plen = strlen(path), elen = strlen(ext);
    stem = strndup(path, plen - elen);
    files = calloc(nshards, sizeof *files);
    metas = calloc(nshards, sizeof *metas);
    if (!stem || !files || !metas) {
        rc = td__err(err, TD_ENOMEM, "%s: out of memory", path);
        goto out;
    }
    for (size_t s = 0; s < nshards; s++) {
        if (!(files[s] = shard_name(stem, s, nshards, ext))) {
            rc = td__err(err, TD_ENOMEM, "%s: out of memory", path);
            goto out;
        }
        if (format == TD_FORMAT_GGUF && !(metas[s] = gguf_split_meta(meta, s, nshards, n))) {
            rc = td__err(err, TD_ENOMEM, "%s: out of memory", path);
            goto out;
        }
    }
    /* Every shard but the first, then the first; for HF, the index last of all. */
    for (size_t k = 0; k < nshards && !rc; k++) {
        size_t s = (k + 1) % nshards;
        td__save_job job = {.format = format,
                            .items = items + first[s],
                            .n = first[s + 1] - first[s],
                            .meta = format == TD_FORMAT_GGUF ? metas[s] : meta};
        rc = td__save_atomic(files[s], &job, err);
    }
    if (!rc && format == TD_FORMAT_SAFETENSORS) {
        size_t cap = strlen(stem) + sizeof ".safetensors.index.json";
        index = malloc(cap);
        json = hf_index_json(items, first, nshards, files);
        if (!index || !json) {
            rc = td__err(err, TD_ENOMEM, "%s: out of memory", path);
            goto out;
        }
        snprintf(index, cap, "%s.safetensors.index.json", stem);
        td__save_job job = {.format = TD_FORMAT_AUTO, .raw = json, .raw_len = strlen(json)};
        rc = td__save_atomic(index, &job, err);
    }
out:
    for (size_t s = 0; files && s < nshards; s++)
        free(files[s]);
    for (size_t s = 0; metas && s < nshards; s++)
        td_meta_free(metas[s]);
    for (size_t i = 0; names && i < n; i++)
        free(names[i]);
    free(files);
    free(metas);
    free(names);
    free(items);
    free(first);
    free(stem);
    free(index);
    free(json);
    return rc;
}

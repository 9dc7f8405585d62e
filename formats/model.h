/*
 * model.h - models that span several files, and how their tables become one.
 *
 * Two layouts exist in the wild:
 *   1. Hugging Face sharded safetensors. An index NAME.safetensors.index.json:
 *        {"metadata": {"total_size": N, ...}, "weight_map": {"TENSOR": "FILE", ...}}
 *      names the shard of every tensor; the shards (usually NAME-00001-of-0000K.safetensors)
 *      are plain safetensors files in the index's directory. total_size is information only:
 *      some writers put the file sizes there.
 *   2. llama.cpp's gguf-split: PREFIX-00001-of-0000K.gguf ... PREFIX-0000K-of-0000K.gguf. Every
 *      split carries split.no (uint16, 0-based), split.count (uint16) and split.tensors.count
 *      (int32, the total over all splits); only the first carries the model's metadata. A
 *      model is loaded from its first split.
 * This module reads (from a descriptor it is given) and checks the index and the split keys,
 * names the files, and merges the shards' tables. It opens nothing: the caller opens the files it
 * names, which are always plain names in the directory of the index or first split (a hostile index
 * cannot reach anything else), and indexes each with td__index.
 */
#ifndef TD_MODEL_H
#define TD_MODEL_H

#include "table.h"

#include <stddef.h>
#include <stdint.h>

/* Bounds: the index's size (the largest published indexes are a few MB), the number of files
 * (gguf-split counts them in a uint16) and a shard name's length (NAME_MAX). */
#define TD__MODEL_MAX_INDEX (64u << 20)
#define TD__MODEL_MAX_FILES 65535u
#define TD__MODEL_MAX_NAME  255u

/* The suffix that marks a Hugging Face index. */
#define TD__MODEL_HF_SUFFIX ".safetensors.index.json"

typedef enum td__model_kind { TD__MODEL_HF = 1, TD__MODEL_GGUF_SPLIT } td__model_kind;

typedef struct td__model {
    td__model_kind kind;
    size_t nfiles;
    char **files; /* owned: plain file names in the index's directory, in shard order */
    /* HF only: the weight_map, in the index's order. */
    size_t nmap;
    char **map_names;   /* owned */
    uint32_t *map_file; /* owned: index into files */
} td__model;

/* 1 when path names a Hugging Face index (ends with TD__MODEL_HF_SUFFIX). */
int td__model_is_hf_index(const char *path);

/* 1 when path's name has gguf-split's form, PREFIX-NNNNN-of-MMMMM.gguf (digits), the only
 * names a split set's files have (td__model_gguf_split refuses others). */
int td__model_is_split_name(const char *path);

/* "DIR/NAME" for the file name of the model at path (NAME alone when path has no directory):
 * how messages, logs and the daemon's status name it. malloc'd; NULL when out of memory. */
char *td__model_file_label(const char *path, const char *name);

/* Reads a whole index from fd (borrowed; a regular file of size bytes, read with pread) into
 * *out (malloc'd, the caller's) and *len. An index over TD__MODEL_MAX_INDEX bytes is refused
 * before anything is allocated (TD_ELIMIT, naming fname). */
int td__model_read_index(int fd, uint64_t size, const char *fname, uint8_t **out, size_t *len,
                         td_error *err);

/* Parses a Hugging Face index (json[0..len), read from the file fname) into m, which the caller
 * zeroes first and frees with td__model_destroy whatever the outcome. The shards are the
 * distinct weight_map values in order of first appearance. Refused, naming the index, the
 * tensor and the value: JSON that is not one object, duplicate keys, a missing or non-object
 * weight_map, a value that is not a string, a file name that is not a plain name (empty, ".",
 * "..", a '/', a NUL byte, longer than TD__MODEL_MAX_NAME), an empty weight_map, more than
 * TD__MODEL_MAX_FILES shards, an index over TD__MODEL_MAX_INDEX bytes. */
int td__model_parse_hf(const uint8_t *json, size_t len, const char *fname, td__model *m,
                       td_error *err);

/* For a GGUF file whose table is t0, named base (its file name without directory): when its
 * split.count is above 1, fills m (zeroed by the caller) with the split set's file names
 * (PREFIX-%05d-of-%05d.gguf, 1-based) and returns 0; returns 0 with m->nfiles == 0 for a file
 * that is not part of a split set. Refused, naming the file and the key: split.* keys of the
 * wrong type or out of range, a file that is not the first split (the message names the file
 * to load instead), a name that does not follow the PREFIX-00001-of-0000K.gguf pattern with
 * K = split.count. */
int td__model_gguf_split(const char *base, const td__table *t0, td__model *m, td_error *err);

/* Merges the shards' tables (shards[i] for m->files[i], all indexed) into out (initialised,
 * empty): every entry in shard order, then file order, with `file` set to its shard's index
 * and, for views, `region` too. The names move from the shards into out. Checks, each naming
 * the index (fname), the tensor and the files:
 *   HF: a weight_map entry its shard does not hold, a tensor the weight_map puts in another
 *       shard, a tensor in two shards, a shard tensor missing from the weight_map;
 *       metadata: the first shard's, with keys of the others added when absent.
 *   GGUF: split.no of file i is i, split.count is the same everywhere, no tensor in two splits, the
 *       total is split.tensors.count; metadata: the first split's, without the split.* keys
 *       (a model saved again must not claim to be a split).
 * On failure out holds what was merged so far; the caller destroys it and the shards. */
int td__model_merge(const td__model *m, td__table *shards, const char *fname, td__table *out,
                    td_error *err);

/* 1 when t's metadata says it is one split of a gguf-split set of more than one file. */
int td__model_gguf_is_split(const td__table *t);

/* The split.* keys removed from t->meta (for a GGUF file loaded on its own that carries
 * split.count = 1). TD_ENOMEM leaves t as it was. */
int td__model_strip_split_keys(td__table *t, td_error *err);

/* Frees what m holds and zeroes it. */
void td__model_destroy(td__model *m);

#endif

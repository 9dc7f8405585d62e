/*
 * client.h - libtensord internals shared by the client modules: regions (the mappings arrays
 * view into) and array construction (array.c), dict helpers (dict.c), the options and argument
 * checks (options.c), the views both load paths build (view.c), a daemon's shared table
 * (tab.c) and the status (status.c).
 * Daemon mode's own internals are in remote.h.
 *
 * Who calls whom, with no circle: load.c (td_load) -> view.c, remote_load.c;
 * remote_client.c (td_client) -> remote_model.c, remote_load.c, view.c, status.c, tab.c;
 * remote_model.c -> remote_load.c, model_load.c, tab.c, array.c, dict.c; remote_load.c ->
 * view.c, tab.c; tab.c -> dict.c, array.c; every one of them -> options.c, array.c, dict.c;
 * dict.c -> array.c (its names may live in a table's mapping, held as a region).
 */
#ifndef TD_CLIENT_H
#define TD_CLIENT_H

#include "ftab.h"
#include "table.h"
#include "tensord.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* array.c: a reference-counted span of memory that arrays view into: a file mapping, a mapped
 * memfd, a decoded buffer. The last td__region_release calls release(ctx, base, len). */
typedef struct td__region {
    atomic_long refs;
    void *base;
    size_t len;
    void (*release)(void *ctx, void *base, size_t len);
    void *ctx;
    td_provenance provenance; /* of the arrays viewing it; TD_PROVENANCE_EMBEDDED by default */
} td__region;

/* Makes a region with one reference (the caller's). NULL when out of memory; release is not
 * called then. */
td__region *td__region_new(void *base, size_t len, void (*release)(void *, void *, size_t),
                           void *ctx);
td__region *td__region_retain(td__region *r);
/* A reference of r unless its last one is already gone (r is then on its way out: NULL). For
 * a cache that names regions without holding them, under the lock their release takes. */
td__region *td__region_try_retain(td__region *r);
void td__region_release(td__region *r);
/* A region over an munmap-able mapping. */
td__region *td__region_mmap(void *base, size_t len);

/* A read-only array viewing data (inside r) with r retained. */
int td__array_view(td__region *r, td_dtype dtype, uint32_t ndim, const int64_t *shape,
                   const void *data, uint64_t nbytes, td_array **out, td_error *err);
/* A writable, zeroed array of nbytes; used by decoders that fill an array in place. */
int td__array_alloc(td_dtype dtype, uint32_t ndim, const int64_t *shape, td_array **out,
                    td_error *err);

/* A block of arrays made at once (array.c): the views of one load, in one allocation. The block
 * holds a reference to each of regions[0..nregions) and, until the last of its arrays goes,
 * whatever end(ctx) gives back (a lease); then the regions are released and end(ctx) runs.
 * td__ablock_new makes room for n arrays with ndims sizes in all, and holds one reference of the
 * builder's; td__ablock_add makes one array (the caller's reference; NULL when the room is
 * used up); td__ablock_done drops the builder's reference (the block goes at once if no array
 * was made). NULL when out of memory: nothing is retained then. */
typedef struct td__ablock td__ablock;
td__ablock *td__ablock_new(size_t n, size_t ndims, td__region *const *regions, size_t nregions,
                           td_provenance provenance, void (*end)(void *ctx), void *ctx);
td_array *td__ablock_add(td__ablock *b, td_dtype dtype, uint32_t ndim, const int64_t *shape,
                         const void *data, uint64_t nbytes);
void td__ablock_done(td__ablock *b);
/* The image of a block (array.c): the headers and shapes of n arrays (ndims sizes in all), made
 * once per table with td__ablock_image_add (the array's bytes at offset of region; -1 when the
 * room is used up), then copied into a block per load by td__ablock_from_image, which sets
 * arrays[0..n) and each array's data, and is td__ablock_new + td__ablock_add + td__ablock_done
 * (the regions must hold every array's bytes: the caller checked them). An image is not
 * changed by use: threads may copy one at once. NULL when out of memory. */
typedef struct td__ablock_image td__ablock_image;
td__ablock_image *td__ablock_image_new(size_t n, size_t ndims);
int td__ablock_image_add(td__ablock_image *im, td_dtype dtype, uint32_t ndim, const int64_t *shape,
                         uint32_t region, uint64_t offset, uint64_t nbytes);
td__ablock *td__ablock_from_image(const td__ablock_image *im, td__region *const *regions,
                                  size_t nregions, td_provenance provenance, void (*end)(void *ctx),
                                  void *ctx, td_array **arrays);
void td__ablock_image_free(td__ablock_image *im);
/* td_array_release of n arrays, the i-th at *(a + i * stride bytes) (NULL ones skipped): those
 * of one block that nobody else holds drop the block's count once for all. */
void td__arrays_release(td_array *const *a, size_t n, size_t stride);

/* Fills item with a borrowed description of a. */
void td__array_item(const td_array *a, const char *name, td__item *item);

/* tab.c: a flat table (ftab/ftab.h) a daemon sent, mapped read-only and validated once, shared
 * by the loads and dicts built over it (reference counted; the last release unmaps it).
 * td__tab_map checks that fd is a memfd sealed against writing, shrinking and growing, of size
 * bytes, maps it and validates it against the regions' sizes (td__ftab_open); fd stays the
 * caller's. */
typedef struct td__tab td__tab;
int td__tab_map(int fd, uint64_t size, const uint64_t *region_sizes, uint32_t nregions,
                const char *what, td__tab **out, td_error *err);
td__tab *td__tab_retain(td__tab *t);
void td__tab_release(td__tab *t); /* NULL: nothing */
const td__ftab *td__tab_ftab(const td__tab *t);
/* The bytes it maps. */
/* The sizes of every entry's shape added up: what t's views hold (not the shapes section's
 * count, since entries may share their sizes). */
uint64_t td__tab_ndims(const td__tab *t);
/* Adds the views of every entry of t's table to im, their regions numbered from first_region
 * (a model's files' regions follow each other); im has room for them (td__tab_ndims). */
void td__tab_image_add(const td__tab *t, td__ablock_image *im, uint32_t first_region);
uint64_t td__tab_bytes(const td__tab *t);
/* The dict of a load over t: every entry a view into regions[entry.region] (mapped, each at
 * least the size the table was validated against), made in one block that holds the regions
 * and, until its last array goes, end(ctx) (see td__ablock). Names stay in the table. On
 * failure end(ctx) has run. */
int td__tab_to_dict(td__tab *t, td__region *const *regions, size_t nregions,
                    td_provenance provenance, void (*end)(void *ctx), void *ctx, td_dict **out,
                    td_error *err);
/* t's metadata as a new td_meta (empty when it has none). */
int td__tab_meta(const td__tab *t, const char *what, td_meta **out, td_error *err);
/* t's entries as a td__table (names and shapes copied), for merging a model's files. */
int td__tab_to_table(const td__tab *t, td__table *out, td_error *err);

/* dict.c: makes room for n entries in all (index included), so that adding up to n allocates only
 * the names. TD_ENOMEM leaves d as it was. */
int td__dict_reserve(td_dict *d, size_t n);
/* A dict over n arrays (taken: one reference each, also on failure) named and ordered as the
 * entries of the flat table ft, whose names it borrows and whose index it looks them up with;
 * it holds a reference of keep, the region that keeps ft and its bytes alive. */
int td__dict_over_ftab(const td__ftab *ft, td__region *keep, td_array **arrays, size_t n,
                       td_dict **out, td_error *err);
/* A name index made once for names[0..n) (each unique, or NULL: skipped), under a seed of its
 * own, to be copied into every dict over the same names (td__dict_over_index). TD_EDUP for a
 * name twice, TD_ENOMEM, TD_ELIMIT; no message (the caller knows what the names are). */
typedef struct td__dict_index td__dict_index;
int td__dict_index_new(const char *const *names, size_t n, td__dict_index **out);
void td__dict_index_free(td__dict_index *ix); /* NULL: nothing */
/* A dict over n arrays (taken: one reference each, also on failure) named names[0..n) (the
 * names ix was made for, borrowed: keep, of which the dict holds a reference, keeps them), whose
 * index starts as a copy of ix. */
int td__dict_over_index(const char *const *names, size_t n, const td__dict_index *ix,
                        td__region *keep, td_array **arrays, td_dict **out, td_error *err);
/* td_dict_set that keeps name itself (malloc'd) instead of a copy: the dict's on success, still
 * the caller's on failure. */
int td__dict_set_taking(td_dict *d, char *name, const td_array *a, td_error *err);

/* options.c: copies the caller's options (NULL: the defaults) into *out, a whole struct of this
 * version: size bytes of in, zeroes for the rest. A size under the first version's, an unknown
 * mode, td_dequant value or flag is TD_EINVAL, the message starting with what. */
int td__load_options_copy(const td_load_options *in, td_load_options *out, const char *what,
                          td_error *err);
/* The dequantization code (table.h) of a td_dequant: 0, TD_FLOAT32, TD_FLOAT16, TD_BFLOAT16 or
 * TD__DEQUANT_MLX. The one place the public enum meets the internal code. */
uint32_t td__dequant_code(td_dequant d);
/* Which way a save takes (client/save.c). Every save of the library takes TD__SAVE_AUTO; the
 * others exist so that tests reach the fallbacks on a machine that has O_TMPFILE and /proc
 * (td__save_with_way). */
typedef enum td__save_way {
    TD__SAVE_AUTO = 0, /* an unnamed file (O_TMPFILE) when the file system has it */
    TD__SAVE_NAMED,    /* as on a file system without O_TMPFILE: a named temporary */
    TD__SAVE_PROC,     /* as where linkat(AT_EMPTY_PATH) is refused: linked through /proc */
    TD__SAVE_NO_LINK,  /* as where the unnamed file cannot be linked: written, dropped, and the
                          save starts again with a named temporary */
} td__save_way;

/* One file to save: items in a format's layout, or (format TD_FORMAT_AUTO) raw bytes. Everything
 * is borrowed. */
typedef struct td__save_job {
    td_format format;
    const td__item *items;
    size_t n;
    const td_meta *meta;
    int compressed;  /* npz: deflated members */
    const void *raw; /* TD_FORMAT_AUTO: the bytes */
    size_t raw_len;
    td__save_way way; /* TD__SAVE_AUTO but in tests */
} td__save_job;

/* Writes job to path atomically: a temporary file in path's directory, fsync, rename over
 * path, fsync of the directory. On failure path is untouched and no temporary is left. */
int td__save_atomic(const char *path, const td__save_job *job, td_error *err);

/* td_save (format TD_FORMAT_NPY, the dict's one entry), td_savez, td_savez_compressed
 * (compressed), td_save_safetensors and td_save_gguf (no metadata), the way given: for tests. */
int td__save_with_way(td_format format, int compressed, const char *path, const td_dict *arrays,
                      td__save_way way, td_error *err);

/* Collects the dict's entries as writer items (borrowed views of the arrays). With arr_names,
 * unnamed entries become arr_K (K counting unnamed entries) and a named entry that takes one of
 * those names is refused, as MLX's savez does; without, unnamed entries are refused. *items and
 * *names (the malloc'd arr_K strings, td_dict_size(d) slots) are the caller's to free, also on
 * failure. */
int td__save_collect(const td_dict *d, const char *path, int arr_names, td__item **items,
                     char ***names, td_error *err);

/* The files of a model (model_load.c): their plain names in the directory of the index or
 * first split, their sizes and ids (from the fstat of the descriptor each was indexed from),
 * and (when mapped) one region per file; all owned. */
typedef struct td__model_files {
    size_t n;
    char **names;
    uint64_t *sizes;
    td__file_id *ids;
    td__region **regions; /* NULL entries when not mapped */
    int *fds;             /* TD__MODEL_KEEP_FDS: each file's open descriptor (-1: none), owned */
    int has_index;        /* a Hugging Face index was read: */
    td__file_id index_id; /* ... its id, from the descriptor it was read from */
} td__model_files;
void td__model_files_free(td__model_files *f);

/* Indexes the model path names: a Hugging Face index (every shard), or a GGUF file (the whole
 * set when it is the first split of one; a later split is refused with the first's name). Every
 * file is opened in the directory of path, then mapped (mapped) or read with pread (not: no
 * tensor data is read); *out receives the merged table (each entry's file set), *files the
 * files. opt is a whole struct whose format is known. On failure the caller still frees *files
 * and destroys *out. */
/* mapped: 0 read with pread, 1 mapped, TD__MODEL_KEEP_FDS read with pread and each file's
 * descriptor kept open in files->fds (to hand to the daemon). */
#define TD__MODEL_KEEP_FDS 2
int td__model_index_files(const char *path, const td_load_options *opt, int mapped,
                          td__model_files *files, td__table *out, td_error *err);

/* Embedded mode for a Hugging Face index or a GGUF file (a gguf-split set when it is the first
 * split of one): every shard opened in the directory of path, mapped, indexed and checked, one
 * dict over all of them (model_load.c). opt is a whole struct whose format is known. */
int td__load_model_embedded(const char *path, const td_load_options *opt, td_dict **arrays,
                            td_meta **meta, td_error *err);

/* The options for path (td__load_options_copy), the format resolved: from opt, else the
 * extension, else SAFETENSORS for a Hugging Face index; TD_ENOTSUP when none. */
int td__options_for(const char *path, const td_load_options *opt, td_load_options *o,
                    td_error *err);

/* Dequantizes t when opt asks, builds the dict over regions (td__table_to_dict) and hands t's
 * metadata to *meta (an empty td_meta when it has none) when meta is not NULL. t is the
 * caller's to destroy; on failure nothing is returned. */
int td__table_finish(td__table *t, td__region *const *regions, size_t nregions,
                     const td_load_options *opt, const char *path, td_dict **arrays, td_meta **meta,
                     td_error *err);

/* td_load's checks of its arguments (path and arrays set, valid options, a known format, no
 * metadata asked of npy or npz). *o receives a copy of the options (td__load_options_copy)
 * whose format is the one to load, from opt or the extension. Clears *arrays, *meta. */
int td__load_check(const char *path, const td_load_options *opt, td_dict **arrays, td_meta **meta,
                   td_load_options *o, td_error *err);

/* view.c: turns a table whose entries are all viewable (or decodable from region 0) into a
 * dict, viewing into regions[entry.region]. Decodes entries with a layout into owned arrays, on
 * at most threads threads (0: automatic). The entries' names move into the dict (left NULL in
 * t); t is destroyed by its owner after. */
int td__table_to_dict(td__table *t, td__region *const *regions, size_t nregions, unsigned threads,
                      const char *fname, td_dict **out, td_error *err);
/* view.c: opens path read-only (close-on-exec) into *fd; "PATH: cannot open: REASON" otherwise. */
int td__open_ro(const char *path, int *fd, td_error *err);
/* view.c: opens path read-only into *fd (the caller closes it) and gives its size. Empty files,
 * directories and other non-regular files are refused (td__open_file_at in core/reader.h, which
 * opens a name in a directory). */
int td__open_file(const char *path, int *fd, uint64_t *size, td_error *err);
/* view.c: maps size bytes of fd whole, read-only and shared (fd stays the caller's). On
 * success the caller munmaps *base. */
int td__map_fd(int fd, uint64_t size, const char *label, void **base, size_t *len, td_error *err);
/* view.c: opens path (td__open_file) and maps it whole, read-only and shared. On success the
 * caller munmaps *base. */
int td__map_file(const char *path, void **base, size_t *len, td_error *err);

/* status.c: a td_status holding a copy of a STATUS_OK's figures (proto/proto.h). */
typedef struct td__proto_status td__proto_status;
int td__status_from_proto(const td__proto_status *s, td_status **out, td_error *err);

#endif

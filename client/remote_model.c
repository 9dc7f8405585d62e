/*
 * remote_model.c - what a td_client keeps of the models of several files it loads (a Hugging
 * Face index and its shards, a gguf-split set), so that a warm load of one costs the files'
 * opens and one round trip, not a parse of the index and of every shard's header.
 *
 * A kept model is what the last full indexing of a path found (td__remote_model_index): the
 * files' names, the merged and checked table (its names, which file holds each tensor, the
 * model's metadata), and the id of every file involved (td__file_id: device, inode, size,
 * modification and status change times, from the fstat of the descriptor each was read from).
 * A later load of the path still opens every file, since the LOADs carry their descriptors and
 * a replaced file must be seen, and takes the index's id by stat; when every id is the one
 * kept, the files are those the kept table was made from, so nothing is read or parsed again.
 * Any difference (a shard or the index replaced, rewritten, gone; a file that cannot be opened)
 * indexes the model again, exactly as a first load does, errors and all: what reaches the
 * daemon has always been checked as a model.
 *
 * The kept model also turns the daemon's replies into a dict cheaply. The first load on a set of
 * daemon entries checks each file's flat table against the merged one (same names, in the same
 * order, file by file) and makes a view (td__kview): which entries and region sizes it was made
 * for, and an image of the model's arrays (array.c: their headers and shapes, laid out once, and
 * where each one's bytes lie among the regions of all the files). A later load whose replies
 * name the same entries with the same region sizes on the same connection copies the image
 * into one block (one allocation, one memcpy, a data pointer per array) and needs no check: the
 * tables of an entry never change while the daemon runs, and the region sizes the views were
 * checked against are compared. The dict borrows the names of the kept table and starts from a
 * copy of a name index made once (dict.c, td__dict_index); its metadata is a copy of the kept
 * one, which is what a load returned before anything was kept.
 *
 * Threads: the list of kept models and its figures are under td__kmodels.lock; a kept model is
 * immutable once made but for its view, which is under its own vlock (taken alone). A model
 * lives while the list, a load or a dict holds it (its keep region's count).
 */
#include "remote.h"
#include "common.h"
#include "model.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The arrays of a kept model as the daemon's tables of one set of entries describe them. */
typedef struct td__kview {
    atomic_long refs;
    uint64_t gen;       /* the connection the entries are of */
    uint64_t *entries;  /* per file, the daemon's entry */
    uint32_t *nregions; /* per file, its regions */
    uint64_t *sizes;    /* every file's regions' sizes, file after file */
    size_t total;       /* regions in all */
    td__ablock_image *image;
} td__kview;

struct td__kmodel {
    td__kmodel *prev, *next; /* in the list, most recently used first (under its lock) */
    td__region *keep;        /* the model's count (no memory of its own): see remote.h */
    char *path;
    uint64_t hash; /* of path, under the list's seed */
    td_format format;
    uint64_t max_inflated; /* with path and format, what the indexing depended on */
    size_t n;              /* files */
    char **names;          /* plain names in the index's directory */
    char **labels;         /* DIR/NAME, as td__model_file_label makes them */
    td__file_id *ids;      /* each file's, when it was indexed */
    int has_index;
    td__file_id index_id; /* the Hugging Face index's (a gguf-split set's first split is file 0) */
    td__table local;      /* the merged table, checked */
    const char **tnames;  /* local.n: each entry's name (local's) */
    td__dict_index *dindex; /* of tnames */
    uint64_t bytes;         /* about what it holds, for the list's bound */
    pthread_mutex_t vlock;
    td__kview *view; /* under vlock; or NULL */
};

static void td__kview_release(td__kview *v)
{
    if (!v || atomic_fetch_sub_explicit(&v->refs, 1, memory_order_acq_rel) != 1)
        return;
    td__ablock_image_free(v->image);
    free(v->entries);
    free(v->nregions);
    free(v->sizes);
    free(v);
}

static void td__kmodel_free(td__kmodel *km)
{
    for (size_t f = 0; f < km->n; f++) {
        if (km->names)
            free(km->names[f]);
        if (km->labels)
            free(km->labels[f]);
    }
    free(km->names);
    free(km->labels);
    free(km->ids);
    free(km->tnames);
    td__dict_index_free(km->dindex);
    td__table_destroy(&km->local);
    td__kview_release(km->view);
    pthread_mutex_destroy(&km->vlock);
    free(km->path);
    free(km);
}

/* The keep region's release: the last holder of the model is gone. */
static void td__kmodel_gone(void *ctx, void *base, size_t len)
{
    (void)base;
    (void)len;
    td__kmodel_free(ctx);
}

void td__kmodel_release(td__kmodel *km)
{
    if (km)
        td__region_release(km->keep);
}

size_t td__kmodel_nfiles(const td__kmodel *km)
{
    return km->n;
}

const char *td__kmodel_name(const td__kmodel *km, size_t f)
{
    return km->names[f];
}

const char *td__kmodel_label(const td__kmodel *km, size_t f)
{
    return km->labels[f];
}

/* A kept model made of what td__remote_model_index found (files and local, which give up what
 * it takes: the names, the merged table). On failure the caller still frees files and local. */
static int td__kmodel_new(const char *path, uint64_t hash, const td_load_options *opt,
                          td__model_files *files, td__table *local, td__kmodel **out, td_error *err)
{
    td__kmodel *km = calloc(1, sizeof *km);
    if (!km)
        return td__err(err, TD_ENOMEM, "%s: out of memory", path);
    pthread_mutex_init(&km->vlock, NULL);
    td__table_init(&km->local, local->format);
    km->hash = hash;
    km->format = opt->format;
    km->max_inflated = opt->max_inflated;
    km->n = files->n;
    km->has_index = files->has_index;
    km->index_id = files->index_id;
    km->path = strdup(path);
    km->names = calloc(files->n, sizeof *km->names);
    km->labels = calloc(files->n, sizeof *km->labels);
    km->ids = malloc(files->n * sizeof *km->ids);
    km->tnames = malloc((local->n ? local->n : 1) * sizeof *km->tnames);
    int rc = km->path && km->names && km->labels && km->ids && km->tnames ? 0 : TD_ENOMEM;
    uint64_t bytes = sizeof *km + strlen(path) + 1;
    for (size_t f = 0; !rc && f < files->n; f++) {
        km->names[f] = files->names[f]; /* ours now */
        files->names[f] = NULL;
        km->ids[f] = files->ids[f];
        if (!(km->labels[f] = td__model_file_label(path, km->names[f])))
            rc = TD_ENOMEM;
        else
            bytes += 2 * strlen(km->labels[f]) + sizeof(td__file_id) + 3 * sizeof(char *);
    }
    if (!rc) {
        km->local = *local; /* ours now */
        td__table_init(local, km->local.format);
        for (size_t i = 0; i < km->local.n; i++) {
            const td__entry *e = &km->local.entries[i];
            km->tnames[i] = e->name;
            /* the entry, its name and shape; its array's header and shape in the image */
            bytes += sizeof *e + (e->name ? strlen(e->name) + 1 : 0) +
                     2 * e->ndim * sizeof(int64_t) + sizeof(char *) + 128;
        }
        rc = td__dict_index_new(km->tnames, km->local.n, &km->dindex);
        /* The model's checks refuse a name twice and a dict's bound on entries: not seen. */
        if (rc && rc != TD_ENOMEM)
            rc = td__err(err, rc, "%s: the names of %zu tensors cannot be indexed", path,
                         km->local.n);
    }
    if (!rc) {
        bytes += (2 * km->local.n + 16) * sizeof(uint32_t);
        km->bytes = bytes;
        if (!(km->keep = td__region_new(NULL, 0, td__kmodel_gone, km)))
            rc = TD_ENOMEM;
    }
    if (rc) {
        td__kmodel_free(km);
        return rc == TD_ENOMEM ? td__err(err, rc, "%s: out of memory", path) : rc;
    }
    *out = km;
    return 0;
}

/* Descriptors of km's files opened again, in file order, when every file involved (the index by
 * stat, each file by the fstat of the descriptor opened) is still the one km was made from;
 * else NULL, with nothing held (the caller indexes the model again, and reports what is wrong).
 * The files are opened by their labels, which name them in the index's directory as the
 * indexing did; a label that reaches another file is seen by its id. */
static int *td__kmodel_reopen(const td__kmodel *km, const char *path)
{
    td__file_id id;
    if (km->has_index &&
        (td__file_id_at(AT_FDCWD, path, &id) != 0 || !td__file_id_same(&id, &km->index_id)))
        return NULL;
    int *fds = malloc(km->n * sizeof *fds);
    if (!fds)
        return NULL;
    size_t f = 0;
    for (; f < km->n; f++) {
        uint64_t size;
        if (td__open_file_id(AT_FDCWD, km->labels[f], km->labels[f], &fds[f], &size, &id, NULL))
            break;
        if (!td__file_id_same(&id, &km->ids[f])) {
            close(fds[f]);
            break;
        }
    }
    if (f == km->n)
        return fds;
    while (f--)
        close(fds[f]);
    free(fds);
    return NULL;
}

void td__kmodels_init(td__kmodels *ms)
{
    pthread_mutex_init(&ms->lock, NULL);
    ms->head = ms->tail = NULL;
    ms->n = 0;
    ms->bytes = 0;
    ms->seed = td__hash_seed_for(ms);
    atomic_init(&ms->reused, 0);
    atomic_init(&ms->indexed, 0);
    atomic_init(&ms->checked, 0);
    atomic_init(&ms->left_out, 0);
}

/* Unlinks km from the list. Under the lock. */
static void td__kmodels_unlink(td__kmodels *ms, td__kmodel *km)
{
    (km->prev ? &km->prev->next : &ms->head)[0] = km->next;
    (km->next ? &km->next->prev : &ms->tail)[0] = km->prev;
    km->prev = km->next = NULL;
    ms->n--;
    ms->bytes -= km->bytes;
}

/* Links km first. Under the lock. */
static void td__kmodels_link(td__kmodels *ms, td__kmodel *km)
{
    km->prev = NULL;
    km->next = ms->head;
    (ms->head ? &ms->head->prev : &ms->tail)[0] = km;
    ms->head = km;
    ms->n++;
    ms->bytes += km->bytes;
}

/* The kept model of (path, opt), or NULL. Under the lock. */
static td__kmodel *td__kmodels_find(td__kmodels *ms, uint64_t hash, const char *path,
                                    const td_load_options *opt)
{
    for (td__kmodel *km = ms->head; km; km = km->next)
        if (km->hash == hash && km->format == opt->format &&
            km->max_inflated == opt->max_inflated && strcmp(km->path, path) == 0)
            return km;
    return NULL;
}

/* Releases a chain of models linked by next (unlinked from the list). Outside the lock. */
static void td__kmodels_drop(td__kmodel *gone)
{
    while (gone) {
        td__kmodel *next = gone->next;
        td__kmodel_release(gone);
        gone = next;
    }
}

/* Keeps km (the list takes a reference of its own) in place of what was kept for its path,
 * letting the least recently used go beyond the bounds. */
static void td__kmodels_put(td__kmodels *ms, td__kmodel *km, const td_load_options *opt)
{
    td__kmodel *gone = NULL;
    td__region_retain(km->keep);
    pthread_mutex_lock(&ms->lock);
    td__kmodel *old = td__kmodels_find(ms, km->hash, km->path, opt);
    if (old) {
        td__kmodels_unlink(ms, old);
        old->next = gone;
        gone = old;
    }
    td__kmodels_link(ms, km);
    while (ms->tail != km && (ms->n > TD__MODELS_MAX || ms->bytes > TD__MODELS_BYTES)) {
        td__kmodel *last = ms->tail;
        td__kmodels_unlink(ms, last);
        last->next = gone;
        gone = last;
    }
    pthread_mutex_unlock(&ms->lock);
    td__kmodels_drop(gone);
}

/* Forgets what is kept for (path, opt), if anything. */
static void td__kmodels_forget(td__kmodels *ms, uint64_t hash, const char *path,
                               const td_load_options *opt)
{
    pthread_mutex_lock(&ms->lock);
    td__kmodel *km = td__kmodels_find(ms, hash, path, opt);
    if (km)
        td__kmodels_unlink(ms, km);
    pthread_mutex_unlock(&ms->lock);
    td__kmodel_release(km);
}

void td__kmodels_clear(td__kmodels *ms)
{
    pthread_mutex_lock(&ms->lock);
    td__kmodel *gone = ms->head;
    ms->head = ms->tail = NULL;
    ms->n = 0;
    ms->bytes = 0;
    pthread_mutex_unlock(&ms->lock);
    td__kmodels_drop(gone);
}

void td__kmodels_destroy(td__kmodels *ms)
{
    td__kmodels_clear(ms);
    pthread_mutex_destroy(&ms->lock);
}

size_t td__kmodels_count(td__kmodels *ms)
{
    pthread_mutex_lock(&ms->lock);
    size_t n = ms->n;
    pthread_mutex_unlock(&ms->lock);
    return n;
}

int td__kmodel_get(td__kmodels *ms, const char *path, const td_load_options *opt, td__kmodel **out,
                   int **fds, td_error *err)
{
    *out = NULL;
    *fds = NULL;
    if (!td__remote_is_model(path, opt))
        return 0;
    uint64_t hash = td__hash(ms->seed, path, strlen(path));
    pthread_mutex_lock(&ms->lock);
    td__kmodel *km = td__kmodels_find(ms, hash, path, opt);
    if (km) {
        td__region_retain(km->keep);
        if (km != ms->head) { /* most recently used first */
            td__kmodels_unlink(ms, km);
            td__kmodels_link(ms, km);
        }
    }
    pthread_mutex_unlock(&ms->lock);
    if (km) {
        if ((*fds = td__kmodel_reopen(km, path))) {
            atomic_fetch_add_explicit(&ms->reused, 1, memory_order_relaxed);
            *out = km;
            return 0;
        }
        td__kmodel_release(km); /* changed: replaced below, or forgotten */
    }
    td__model_files files = {0};
    td__table local;
    int several;
    int rc = td__remote_model_index(path, opt, &files, &local, &several, err);
    if (rc || !several) { /* nothing to keep: what was kept is out of date */
        td__kmodels_forget(ms, hash, path, opt);
        return rc;
    }
    atomic_fetch_add_explicit(&ms->indexed, 1, memory_order_relaxed);
    rc = td__kmodel_new(path, hash, opt, &files, &local, &km, err);
    if (!rc) {
        *fds = files.fds; /* the caller's now */
        files.fds = NULL;
        td__kmodels_put(ms, km, opt);
        *out = km;
    }
    td__table_destroy(&local);
    td__model_files_free(&files);
    return rc;
}

/* 1 when v was made from the entries and region sizes of these replies, on connection gen. */
static int td__kview_matches(const td__kview *v, size_t n, const td__proto_msg *replies,
                             uint64_t gen)
{
    if (v->gen != gen)
        return 0;
    size_t r = 0;
    for (size_t f = 0; f < n; f++) {
        const td__proto_loaded *ld = &replies[f].u.loaded;
        if (ld->entry != v->entries[f] || ld->nregions != v->nregions[f] ||
            v->total - r < ld->nregions)
            return 0;
        for (uint32_t i = 0; i < ld->nregions; i++)
            if (ld->regions[i].size != v->sizes[r++])
                return 0;
    }
    return r == v->total;
}

/* Checks the daemon's tables (tabs[f] of file f) against km's merged table: the same names, in
 * the same order, file by file, and nothing more. */
static int td__kmodel_check(const td__kmodel *km, const char *path, td__tab *const *tabs,
                            td_error *err)
{
    const td__table *local = &km->local;
    size_t k = 0;
    for (size_t f = 0; f < km->n; f++) {
        const td__ftab *ft = td__tab_ftab(tabs[f]);
        for (uint32_t i = 0; i < ft->n; i++, k++) {
            const char *name = td__ftab_name(ft, i);
            if (k >= local->n || local->entries[k].file != f || !name || !local->entries[k].name ||
                strcmp(name, local->entries[k].name) != 0)
                return td__err(err, TD_EPROTO, "%s: %s: the daemon's table differs from the file's",
                               path, km->names[f]);
        }
    }
    if (k != local->n)
        return td__err(err, TD_EPROTO, "%s: the daemon's tables hold %zu tensors, the files %zu",
                       path, k, local->n);
    return 0;
}

/* The view of km's arrays that these replies' tables give (checked against km already). */
static int td__kview_new(const td__kmodel *km, const char *path, const td__proto_msg *replies,
                         td__tab *const *tabs, uint64_t gen, td__kview **out, td_error *err)
{
    size_t total = 0, ndims = 0;
    for (size_t f = 0; f < km->n; f++) {
        total += replies[f].u.loaded.nregions;
        ndims += (size_t)td__tab_ndims(tabs[f]);
    }
    td__kview *v = calloc(1, sizeof *v);
    if (v) {
        atomic_init(&v->refs, 1);
        v->gen = gen;
        v->total = total;
        v->entries = malloc(km->n * sizeof *v->entries);
        v->nregions = malloc(km->n * sizeof *v->nregions);
        v->sizes = malloc((total ? total : 1) * sizeof *v->sizes);
        v->image = td__ablock_image_new(km->local.n, ndims);
    }
    if (!v || !v->entries || !v->nregions || !v->sizes || !v->image) {
        td__kview_release(v);
        return td__err(err, TD_ENOMEM, "%s: out of memory for the views of %zu tensors", path,
                       km->local.n);
    }
    size_t first = 0;
    for (size_t f = 0; f < km->n; f++) {
        const td__proto_loaded *ld = &replies[f].u.loaded;
        v->entries[f] = ld->entry;
        v->nregions[f] = ld->nregions;
        for (uint32_t i = 0; i < ld->nregions; i++)
            v->sizes[first + i] = ld->regions[i].size;
        /* td__ftab_open checked the bytes against this file's region sizes, now v's */
        td__tab_image_add(tabs[f], v->image, (uint32_t)first);
        first += ld->nregions;
    }
    *out = v;
    return 0;
}

int td__kmodel_adopt_tabs(td__kmodels *ms, td__kmodel *km, const char *path,
                          const td__proto_msg *replies, td__tab *const *tabs,
                          td__region *const *regions, uint64_t gen, td__lease *lease,
                          td_dict **arrays, td_meta **meta, td_error *err)
{
    size_t total = 0, n = km->local.n;
    for (size_t f = 0; f < km->n; f++)
        total += replies[f].u.loaded.nregions;
    pthread_mutex_lock(&km->vlock);
    td__kview *v = km->view;
    if (v)
        atomic_fetch_add_explicit(&v->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&km->vlock);
    if (!v || !td__kview_matches(v, km->n, replies, gen)) {
        /* Other entries than the view was made for (a first load, a shard loaded again by the
         * daemon, another connection): checked, and a view made for them. */
        td__kview_release(v);
        v = NULL;
        int rc = td__kmodel_check(km, path, tabs, err);
        if (!rc)
            rc = td__kview_new(km, path, replies, tabs, gen, &v, err);
        if (rc) {
            td__lease_unref(lease);
            return rc;
        }
        atomic_fetch_add_explicit(&ms->checked, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&v->refs, 1, memory_order_relaxed); /* km's */
        pthread_mutex_lock(&km->vlock);
        td__kview *old = km->view;
        km->view = v;
        pthread_mutex_unlock(&km->vlock);
        td__kview_release(old);
    }
    td_array **a = n ? malloc(n * sizeof *a) : NULL;
    td__ablock *b = NULL;
    if (a || !n)
        b = td__ablock_from_image(v->image, regions, total, TD_PROVENANCE_DAEMON,
                                  td__remote_block_end, lease, a);
    td__kview_release(v); /* the block is a copy */
    if (!b) {
        free(a);
        td__lease_unref(lease);
        return td__err(err, TD_ENOMEM, "%s: out of memory for %zu arrays", path, n);
    }
    td__ablock_done(b); /* the arrays hold it now (or it ends here, with no tensor) */
    int rc = td__dict_over_index(km->tnames, n, km->dindex, km->keep, a, arrays, err);
    free(a);
    if (!rc && meta) {
        *meta = km->local.meta ? td_meta_copy(km->local.meta) : td_meta_new();
        if (!*meta) {
            td_dict_free(*arrays);
            *arrays = NULL;
            rc = td__err(err, TD_ENOMEM, "%s: out of memory", path);
        }
    }
    return rc;
}

int td__kmodel_adopt_msgpack(td__kmodel *km, const char *path, td__proto_msg *replies,
                             td__lease *lease, td_dict **arrays, td_meta **meta, td_error *err)
{
    /* td__remote_adopt_model reads the files' names and the merged table and takes its
     * metadata: a shallow copy of each, with a metadata of its own. */
    td__model_files files = {.n = km->n, .names = km->names};
    td__table local = km->local;
    local.meta = NULL;
    if (meta && km->local.meta && !(local.meta = td_meta_copy(km->local.meta))) {
        for (size_t f = 0; f < km->n; f++)
            td__proto_msg_destroy(&replies[f]);
        td__lease_unref(lease);
        return td__err(err, TD_ENOMEM, "%s: out of memory", path);
    }
    int rc = td__remote_adopt_model(path, &files, &local, replies, lease, arrays, meta, err);
    td_meta_free(local.meta); /* unless the load took it */
    return rc;
}

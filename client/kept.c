/*
 * kept.c - what a td_client keeps per daemon entry: each entry's flat table, checked once (at
 * most TD__TABLES_MAX tables and TD__TABLES_BYTES bytes, least recently used first), the
 * mappings of the file that the loads of an entry share while any holds them, and the entry each
 * path's last load got, so that the next LOAD of the path names the table it keeps.
 */
#include "remote.h"
#include "common.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* The daemon's tables a td_client keeps mapped and checked (least recently used go first): at
 * most this many, and at most this many bytes of them. They are the daemon's memory, which a
 * kept mapping holds on to after the daemon let the entry go. */
#define TD__TABLES_MAX     1024u
#define TD__TABLES_BYTES   (64ull << 20)
#define TD__TABLES_BUCKETS 2048u

/* A daemon entry's table kept by a client, and the mappings of its regions that are the file
 * itself (TD__PROTO_REGION_FILE) while loads still hold them, so that loads of one entry that
 * overlap share one mapping. A file mapping is not kept beyond its last load: it would keep a
 * replaced or deleted file's pages and disk blocks for as long as the process lived. Regions
 * of the daemon's memory (decoded buffers, snapshots) are mapped per load and unmapped with
 * it. */
struct td__kept {
    struct td__kept *prev, *next; /* most recently used first */
    struct td__kept *chain;       /* in its hash bucket */
    uint64_t gen, entry;          /* the connection it came on, and the daemon's entry id */
    td__tab *tab;
    uint32_t nregions;
    uint64_t sizes[TD__TABLE_REGIONS];
    td__region *file[TD__TABLE_REGIONS]; /* FILE regions some load holds (no reference of
                                            ours: each clears its slot as it goes), or NULL */
};

/* What a file region made through a client needs to clear its slot in td__kept when it goes. */
typedef struct td__file_slot {
    td__keep *ks;
    uint64_t gen, entry;
    uint32_t idx;
    td__region *region;
} td__file_slot;

void td__keep_init(td__keep *ks, const void *owner)
{
    memset(ks, 0, sizeof *ks);
    pthread_mutex_init(&ks->lock, NULL);
    ks->seed = td__hash_seed_for(owner);
}

void td__keep_destroy(td__keep *ks)
{
    td__keep_clear(ks);
    free(ks->buckets);
    ks->buckets = NULL;
    free(ks->hints);
    ks->hints = NULL;
    pthread_mutex_destroy(&ks->lock);
}

static void td__kept_free(td__kept *k)
{
    td__tab_release(k->tab); /* the file regions are their loads', not ours */
    free(k);
}

static td__kept **td__kept_bucket(td__keep *ks, uint64_t gen, uint64_t entry)
{
    return &ks->buckets[(entry * 0x9e3779b97f4a7c15ull ^ gen) % TD__TABLES_BUCKETS];
}

/* Unlinks k from its bucket and the list. Under klock. */
static void td__kept_unlink(td__keep *ks, td__kept *k)
{
    td__kept **p = td__kept_bucket(ks, k->gen, k->entry);
    while (*p != k)
        p = &(*p)->chain;
    *p = k->chain;
    (k->prev ? &k->prev->next : &ks->head)[0] = k->next;
    (k->next ? &k->next->prev : &ks->tail)[0] = k->prev;
    ks->n--;
    ks->bytes -= td__tab_bytes(k->tab);
}

/* The table kept for entry on connection gen, or NULL. Under klock. */
static td__kept *td__kept_find(td__keep *ks, uint64_t gen, uint64_t entry)
{
    td__kept *k = ks->buckets ? *td__kept_bucket(ks, gen, entry) : NULL;
    while (k && (k->gen != gen || k->entry != entry))
        k = k->chain;
    return k;
}

/* Links k first in the list and into its bucket. Under klock, with ks->buckets allocated. */
static void td__kept_link(td__keep *ks, td__kept *k)
{
    td__kept **b = td__kept_bucket(ks, k->gen, k->entry);
    k->chain = *b;
    *b = k;
    k->prev = NULL;
    k->next = ks->head;
    (ks->head ? &ks->head->prev : &ks->tail)[0] = k;
    ks->head = k;
    ks->n++;
    ks->bytes += td__tab_bytes(k->tab);
}

/* The last load of a file region made through a client let it go: its slot in the kept table
 * (if the table is still kept, and the slot still names it) is cleared, then it is unmapped. */
static void td__file_gone(void *ctx, void *base, size_t len)
{
    td__file_slot *s = ctx;
    td__keep *ks = s->ks;
    pthread_mutex_lock(&ks->lock);
    td__kept *k = td__kept_find(ks, s->gen, s->entry);
    if (k && k->file[s->idx] == s->region)
        k->file[s->idx] = NULL;
    pthread_mutex_unlock(&ks->lock);
    if (base)
        munmap(base, len);
    free(s);
}

/* Maps region idx of a LOAD_OK, the file itself, as a region that loads of the same entry
 * share while any holds it; with known (the entry's table is kept), the kept table learns of it
 * here, else td__keep_add does. The client outlives the region: every load through it holds
 * a reference of c until its regions are gone. */
static int td__keep_map_file(td__keep *ks, uint64_t gen, uint64_t entry, const char *path,
                             const td__proto_region *r, uint32_t idx, td__region **out, int known,
                             td_error *err)
{
    td__region *plain;
    int rc = td__remote_map_region(path, r, idx, NULL, &plain, err);
    if (rc)
        return rc;
    td__file_slot *s = malloc(sizeof *s);
    td__region *shared = s ? td__region_new(plain->base, plain->len, td__file_gone, s) : NULL;
    if (!shared) {
        free(s);
        *out = plain; /* not shared, still a good mapping */
        return 0;
    }
    *s = (td__file_slot){ks, gen, entry, idx, shared};
    shared->provenance = plain->provenance;
    plain->release = NULL; /* the mapping is shared's now */
    td__region_release(plain);
    *out = shared;
    if (known) {
        pthread_mutex_lock(&ks->lock);
        td__kept *k = td__kept_find(ks, gen, entry);
        if (k && idx < k->nregions && !k->file[idx])
            k->file[idx] = shared;
        pthread_mutex_unlock(&ks->lock);
    }
    return 0;
}

/* Keeps tab, and the mappings of the regions flagged FILE, for later loads of the daemon's
 * entry ld->entry on connection gen; the least recently used go beyond the bounds. Keeping is
 * an optimisation: without memory for it, nothing is kept. */
static void td__keep_add(td__keep *ks, uint64_t gen, const td__proto_loaded *ld, td__tab *tab,
                         td__region *const *regions)
{
    td__kept *k = calloc(1, sizeof *k);
    if (!k)
        return;
    k->gen = gen;
    k->entry = ld->entry;
    k->nregions = ld->nregions;
    for (uint32_t i = 0; i < ld->nregions; i++) {
        k->sizes[i] = ld->regions[i].size;
        if (ld->regions[i].flags & TD__PROTO_REGION_FILE && regions[i]->release == td__file_gone)
            k->file[i] = regions[i];
    }
    k->tab = td__tab_retain(tab);
    pthread_mutex_lock(&ks->lock);
    if (!ks->buckets)
        ks->buckets = calloc(TD__TABLES_BUCKETS, sizeof *ks->buckets);
    if (!ks->buckets ||
        td__kept_find(ks, gen,
                      ld->entry)) { /* no room for the index, or another thread kept it first */
        pthread_mutex_unlock(&ks->lock);
        td__kept_free(k);
        return;
    }
    td__kept_link(ks, k);
    td__kept *gone = NULL;
    while (ks->tail != k && (ks->n > TD__TABLES_MAX || ks->bytes > TD__TABLES_BYTES)) {
        td__kept *old = ks->tail;
        td__kept_unlink(ks, old);
        old->chain = gone;
        gone = old;
    }
    pthread_mutex_unlock(&ks->lock);
    while (gone) { /* unmapped outside the lock */
        td__kept *next = gone->chain;
        td__kept_free(gone);
        gone = next;
    }
}

void td__keep_clear(td__keep *ks)
{
    pthread_mutex_lock(&ks->lock);
    for (td__kept *k = ks->head, *next; k; k = next) {
        next = k->next;
        td__kept_free(k);
    }
    ks->head = ks->tail = NULL;
    ks->n = 0;
    ks->bytes = 0;
    if (ks->buckets)
        memset(ks->buckets, 0, TD__TABLES_BUCKETS * sizeof *ks->buckets);
    pthread_mutex_unlock(&ks->lock);
}

/* The ways of path hash h's set: TD__HINT_WAYS slots, or NULL before the first hint. */
static td__hint *td__keep_hint_set_of(td__keep *ks, uint64_t h)
{
    return ks->hints ? ks->hints + ((h >> 32) & (TD__HINT_SETS - 1)) * TD__HINT_WAYS : NULL;
}

uint64_t td__keep_hint(td__keep *ks, const char *path, td__have *have)
{
    uint64_t h = td__hash(ks->seed, path, strlen(path)) | 1; /* never 0, the empty slot's */
    pthread_mutex_lock(&ks->lock);
    const td__hint *set = td__keep_hint_set_of(ks, h);
    td__kept *k = NULL;
    for (unsigned w = 0; set && w < TD__HINT_WAYS && !k; w++)
        if (set[w].path == h)
            k = td__kept_find(ks, set[w].gen, set[w].entry);
    if (k && k->nregions <= TD__TABLE_REGIONS) {
        have->entry = k->entry;
        have->gen = k->gen;
        have->tab = td__tab_retain(k->tab);
        have->nregions = k->nregions;
        memcpy(have->sizes, k->sizes, k->nregions * sizeof *k->sizes);
    }
    pthread_mutex_unlock(&ks->lock);
    return h;
}

void td__keep_hint_set(td__keep *ks, uint64_t h, const td__have *have, uint64_t gen, uint64_t entry)
{
    if (have->entry == entry && have->gen == gen)
        return; /* the hint named it already (were it taken by another path since, the next
                   load would carry the table's descriptor once: a hint is only a hint) */
    pthread_mutex_lock(&ks->lock);
    if (!ks->hints) /* a hint is an optimisation: without memory, none is kept */
        ks->hints = calloc(TD__HINT_SETS * TD__HINT_WAYS, sizeof *ks->hints);
    td__hint *set = td__keep_hint_set_of(ks, h);
    if (set) {
        /* The path's own way, else an empty one, else one picked by the entry (no order is
         * kept: a hint that goes costs one table descriptor on the next load of its path). */
        unsigned w = 0;
        while (w < TD__HINT_WAYS && set[w].path != h)
            w++;
        for (unsigned i = 0; w == TD__HINT_WAYS && i < TD__HINT_WAYS; i++)
            if (!set[i].path)
                w = i;
        if (w == TD__HINT_WAYS)
            w = (unsigned)(entry % TD__HINT_WAYS);
        set[w] = (td__hint){h, gen, entry};
    }
    pthread_mutex_unlock(&ks->lock);
}

int td__keep_tab_regions(td__keep *ks, const char *path, const td__proto_loaded *ld, uint64_t gen,
                         td__have *have, td__tab **tabp, td__region **regions, td_error *err)
{
    td__tab *tab = NULL;
    uint32_t n = ld->nregions;
    int rc = 0;
    for (uint32_t i = 0; i < n; i++)
        regions[i] = NULL;

    pthread_mutex_lock(&ks->lock);
    td__kept *k = td__kept_find(ks, gen, ld->entry);
    if (k && k->nregions == n) {
        for (uint32_t i = 0; k && i < n; i++)
            if (k->sizes[i] != ld->regions[i].size)
                k = NULL; /* the daemon's word changed: not the same entry */
    } else {
        k = NULL;
    }
    if (k) {
        tab = td__tab_retain(k->tab);
        for (uint32_t i = 0; i < n; i++)
            if (k->file[i]) /* NULL when its last load is just letting it go */
                regions[i] = td__region_try_retain(k->file[i]);
        if (k != ks->head) { /* most recently used first */
            td__kept_unlink(ks, k);
            td__kept_link(ks, k);
        }
    }
    pthread_mutex_unlock(&ks->lock);

    if (!tab && ld->table_kept) { /* let go of since the LOAD: the reference the LOAD took */
        int same = have->tab && have->nregions == n;
        for (uint32_t i = 0; same && i < n; i++)
            same = have->sizes[i] == ld->regions[i].size;
        if (same) {
            tab = have->tab;
            have->tab = NULL;
        } else {
            rc = td__err(err, TD_EPROTO,
                         "%s: the daemon left out the table of entry %llu with other regions "
                         "than it had",
                         path, (unsigned long long)ld->entry);
        }
    } else if (!tab) {
        rc = td__remote_map_tab(path, ld, &tab, err);
    }
    for (uint32_t i = 0; !rc && i < n; i++) {
        if (regions[i])
            continue;
        if ((ld->regions[i].flags & TD__PROTO_REGION_FILE) && n <= TD__TABLE_REGIONS)
            rc = td__keep_map_file(ks, gen, ld->entry, path, &ld->regions[i], i, &regions[i],
                                   k != NULL, err);
        else
            rc = td__remote_map_region(path, &ld->regions[i], i, NULL, &regions[i], err);
    }
    if (!rc && !k && n <= TD__TABLE_REGIONS)
        td__keep_add(ks, gen, ld, tab, regions);
    if (rc) {
        for (uint32_t i = 0; i < n; i++) {
            td__region_release(regions[i]);
            regions[i] = NULL;
        }
        td__tab_release(tab);
        tab = NULL;
    }
    *tabp = tab;
    return rc;
}

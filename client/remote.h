/*
 * remote.h - the client side of daemon mode, shared by its two users: the one-shot load of
 * td_load (remote_load.c, which also holds everything below) and td_client (remote_client.c).
 *
 * A load through the daemon: connect to its socket, open the file ourselves, send HELLO and
 * LOAD (the descriptor attached), read HELLO_OK and LOAD_OK, map each region the reply carries
 * read-only, close the descriptors, and build the same views as embedded mode (view.c).
 *
 * Every load holds a lease on its daemon entry until its last array goes. What giving the lease
 * back means depends on who made the load, so the lease carries its own `end`: td_load closes
 * the load's connection; a td_client sends RELEASE over its own. remote_load.c therefore never
 * calls into remote_client.c. What a td_client keeps per daemon entry is kept.c's, and what it
 * keeps per model of several files remote_model.c's.
 */
#ifndef TD_REMOTE_H
#define TD_REMOTE_H

#include "client.h"
#include "hash.h"
#include "proto.h"

#include <pthread.h>
#include <stdatomic.h>

/* Connecting and the handshake are quick or the daemon is not well; a LOAD may inflate or
 * decode gigabytes first. */
#define TD__HELLO_TIMEOUT_MS 5000
#define TD__LOAD_TIMEOUT_MS  600000

/* A load's hold on its daemon entry, shared by the regions of the load (one reference each,
 * plus the loader's until it adopts the reply). The last reference calls end(l), which gives
 * the lease back and frees l. */
typedef struct td__lease {
    atomic_long refs;
    void (*end)(struct td__lease *l);
    int sock;             /* td_load: the load's own connection, closed by end */
    void *owner;          /* td_client_load: the client, referenced */
    uint64_t id, gen;     /* ... the lease and the connection it was granted on */
    size_t nids;          /* td_client_load of a model: one lease per file, ... */
    uint64_t *ids, *gens; /* ... and the connection each was granted on; owned */
} td__lease;

/* Daemon mode for a model of several files (remote_load.c). td__remote_model_index: when path
 * is a Hugging Face index or a GGUF file, indexes and checks the whole model here, before
 * anything is sent, keeping each file's descriptor open in *files; *several says whether it is
 * a model of several files (else *files and *local are freed and the path loads as one file).
 * td__remote_adopt_model builds the model's dict from the daemon's LOAD_OK per file
 * (replies[f], consumed), checked against local, the table merged here; it takes one reference
 * of lease. */
int td__remote_model_index(const char *path, const td_load_options *opt, td__model_files *files,
                           td__table *local, int *several, td_error *err);
/* 1 when path may name a model of several files (a Hugging Face index, or a GGUF file named as
 * gguf-split names its files), by the name alone: what td__remote_model_index reads further. */
int td__remote_is_model(const char *path, const td_load_options *opt);
/* Prefixes err's message with name (the file, or a file of a model) unless it names it already
 * (the daemon names a file by its real path, which holds the client's relative one). Returns
 * rc. */
int td__remote_name_file(td_error *err, int rc, const char *name);
int td__remote_adopt_model(const char *path, const td__model_files *files, td__table *local,
                           td__proto_msg *replies, td__lease *lease, td_dict **arrays,
                           td_meta **meta, td_error *err);

/* The socket to use: explicit_path, else $TENSORD_SOCKET (secure_getenv), else
 * TD_DEFAULT_SOCKET. Never NULL. */
const char *td__socket_path(const char *explicit_path);
/* Connects a close-on-exec stream socket to path into *sock; TD_ECONNECT when nobody answers. */
int td__remote_connect(const char *path, int *sock, td_error *err);
/* Sends HELLO (request id 1) on sock. */
int td__remote_hello(int sock, td_error *err);
/* Checks that out answers request id with type want: 0, or the daemon's error code and message
 * (out is then destroyed). A reply of another type or id is TD_EPROTO (out destroyed too). */
int td__remote_reply_check(td__proto_msg *out, uint32_t id, uint32_t want, td_error *err);
/* Receives the reply to request id of type want on sock (td__remote_reply_check). */
int td__remote_reply(int sock, uint32_t id, uint32_t want, int timeout_ms, td__proto_msg *out,
                     td_error *err);
/* The LOAD request for fd (borrowed) with the options' format and decode wishes (opt is a whole
 * struct, td__load_check). m borrows path. */
void td__remote_load_msg(td__proto_msg *m, uint32_t id, int fd, const char *path,
                         const td_load_options *opt);
/* The descriptors a LOAD_OK left out (feature LEAN), checked against the LOAD it answers: *fd,
 * the LOAD's own descriptor, moves into the region flagged OWN (the reply then owns and closes
 * it; *fd becomes -1); a reply that names a kept table is right only when the LOAD's `have`
 * (0: none sent) is its entry. TD_EPROTO, naming path, for a reply that breaks either rule (a
 * second OWN region...); the reply and *fd are then left as they were. */
int td__remote_take_own(const char *path, td__proto_loaded *ld, int *fd, uint64_t have,
                        td_error *err);
/* Maps the regions of a LOAD_OK and builds the arrays (and metadata) over them. Consumes the
 * reply and the caller's reference on lease. In the msgpack form each region takes a reference
 * of the lease; in the flat form (the table's memfd) the load's block of arrays holds it. */
int td__remote_adopt(const char *path, td__proto_msg *reply, td__lease *lease, td_dict **arrays,
                     td_meta **meta, td_error *err);
/* Maps region i of a LOAD_OK (read-only, shared) as a region of its own, which unmaps it at its
 * end; with lease, the region also holds a reference of it (the msgpack form's loads), else
 * none (a block of arrays holds the lease). The descriptor is checked first: it must hold the
 * region's size, and the daemon's memory (not FILE) must be sealed against shrinking
 * (TD_EPROTO otherwise, naming path and the region). */
int td__remote_map_region(const char *path, const td__proto_region *r, uint32_t i, td__lease *lease,
                          td__region **out, td_error *err);
/* Maps and checks the flat table of a LOAD_OK against its regions' sizes (td__tab_map); each
 * region is checked against its descriptor when it is mapped (td__remote_map_region). */
int td__remote_map_tab(const char *path, const td__proto_loaded *ld, td__tab **out, td_error *err);
/* The flat form's last step: the dict over tab and regions[0..n) (each retained by the load's
 * block of arrays), and the metadata when meta is not NULL. Consumes one reference of lease
 * (the block holds it until its last array goes), also on failure. */
int td__remote_finish_tab(const char *path, td__tab *tab, td__region *const *regions, uint32_t n,
                          td__lease *lease, td_dict **arrays, td_meta **meta, td_error *err);
/* Drops a reference on l; the last one calls l->end. */
void td__lease_unref(td__lease *l);
/* The end of a block of arrays that holds a reference of a lease (ctx; td__ablock end). */
void td__remote_block_end(void *ctx);

/* The one-shot load of td_load: a connection of its own, which is the load's lease. opt is a
 * whole struct (td__load_check). */
int td__remote_load(const char *path, const td_load_options *opt, td_dict **arrays, td_meta **meta,
                    td_error *err);

/* remote_model.c: the models of several files a td_client keeps (see there). A kept model is
 * reference counted: the client's list holds one, each load that uses it one, and each dict
 * made over it one (its names are the model's). */
typedef struct td__kmodel td__kmodel;
/* A client's kept models, least recently used first to go: at most TD__MODELS_MAX of them and
 * about TD__MODELS_BYTES of what they hold. The lock is taken alone (never with the client's
 * others held, nor they under it). */
#define TD__MODELS_MAX   64u
#define TD__MODELS_BYTES (64ull << 20)
typedef struct td__kmodels {
    pthread_mutex_t lock;
    td__kmodel *head, *tail; /* most recently used first */
    size_t n;
    uint64_t bytes;
    td__hash_seed seed; /* of the paths */
    /* Loads that found their model kept and unchanged, that indexed it, the checks of the
     * daemon's tables against a kept model, and the files whose LOAD_OK left out the table
     * their LOAD said was kept: figures for tests. */
    atomic_uint_least64_t reused, indexed, checked, left_out;
} td__kmodels;
void td__kmodels_init(td__kmodels *ms);
/* Forgets every kept model (the dicts made over them keep theirs). */
void td__kmodels_clear(td__kmodels *ms);
/* td__kmodels_clear, and the lock goes. */
void td__kmodels_destroy(td__kmodels *ms);
/* The model path names through a td_client, its files opened: when ms keeps path's model and
 * every file (the index and each shard, opened again, symbolic links followed) is still the one
 * it was indexed from, the kept model; else the model indexed and checked now
 * (td__remote_model_index), and kept. *km receives a reference (td__kmodel_release), *fds a
 * malloc'd array of its files' descriptors, in file order (the caller closes those left and
 * frees it). *km is NULL, and nothing else is returned, when path is not a model of several
 * files. opt is a whole struct whose format is known. */
int td__kmodel_get(td__kmodels *ms, const char *path, const td_load_options *opt, td__kmodel **km,
                   int **fds, td_error *err);
void td__kmodel_release(td__kmodel *km);
size_t td__kmodel_nfiles(const td__kmodel *km);
/* File f's plain name (in the index's directory), and its label ("DIR/NAME": messages, the
 * LOAD's name). Borrowed from km. */
const char *td__kmodel_name(const td__kmodel *km, size_t f);
const char *td__kmodel_label(const td__kmodel *km, size_t f);
/* The model's dict (and metadata, when meta is not NULL) from the flat LOAD_OK of each file
 * (replies[f], on connection gen), whose tables (tabs[f], checked) and regions (regions, every
 * file's in file order) the caller holds. The daemon's tables are checked against the kept
 * merged table (same names, in the same order, file by file) once per set of entries; the
 * views are copied from an image of them made once, and the dict borrows the kept names. The
 * metadata is a copy of the merged table's. Consumes one reference of lease (the dict's block
 * holds it until its last array goes), also on failure. */
int td__kmodel_adopt_tabs(td__kmodels *ms, td__kmodel *km, const char *path,
                          const td__proto_msg *replies, td__tab *const *tabs,
                          td__region *const *regions, uint64_t gen, td__lease *lease,
                          td_dict **arrays, td_meta **meta, td_error *err);
/* The same from LOAD_OKs in msgpack form (a daemon without TABLE): td__remote_adopt_model over
 * the kept files and merged table. Consumes the replies and one reference of lease. */
int td__kmodel_adopt_msgpack(td__kmodel *km, const char *path, td__proto_msg *replies,
                             td__lease *lease, td_dict **arrays, td_meta **meta, td_error *err);
/* Models kept now. */
size_t td__kmodels_count(td__kmodels *ms);
/* ---------------------------------------------------------------------------------------------
 * What a td_client keeps per daemon entry (kept.c): each entry's checked flat table (least
 * recently used first, bounded), the mappings of the file that the loads of an entry share while
 * any holds them, and, per path, the entry its last load got (a hint, so that the next LOAD
 * names the table it keeps: feature LEAN). One lock guards it all; it is never taken before the
 * client's connection lock.
 */

/* Regions of one load a kept table remembers (the daemon sends one or two). */
#define TD__TABLE_REGIONS 4u
/* Paths remembered with the entry their last load got: sets of ways (the sets a power of two),
 * twice as many in all as the tables kept (kept.c's TD__TABLES_MAX), so that few paths of kept
 * tables lose their hint to another's. */
#define TD__HINT_SETS 512u
#define TD__HINT_WAYS 4u

typedef struct td__kept td__kept;

/* The entry the last load of a path got, so that the next LOAD of it can say it keeps that
 * entry's table (feature LEAN) and the daemon leaves the table's descriptor out. Only a hint:
 * the daemon decides by the file, and leaves the table out only when the entry is the same. */
typedef struct td__hint {
    uint64_t path; /* td__hash of the path; 0: empty */
    uint64_t gen, entry;
} td__hint;

/* The kept table a LOAD said it has (`have`), held from the send to the reply so that it cannot
 * go meanwhile, with the region sizes it was checked against. */
typedef struct td__have {
    uint64_t entry, gen; /* entry 0: none */
    td__tab *tab;        /* a reference, or NULL */
    uint32_t nregions;
    uint64_t sizes[TD__TABLE_REGIONS];
} td__have;

/* The set, embedded in its td_client, which outlives every region made through it (each load
 * holds a reference of the client until its regions are gone). */
typedef struct td__keep {
    pthread_mutex_t lock;
    td__kept **buckets;    /* TD__TABLES_BUCKETS chains, or NULL before the first */
    td__kept *head, *tail; /* most recently used first */
    size_t n;
    uint64_t bytes;
    td__hash_seed seed; /* of the hints */
    td__hint *hints;    /* TD__HINT_SETS * TD__HINT_WAYS, or NULL before the first */
} td__keep;

/* owner: whose address seeds the hints' hash. */
void td__keep_init(td__keep *ks, const void *owner);
/* Forgets every kept table (the arrays made over them keep what they use). */
void td__keep_clear(td__keep *ks);
void td__keep_destroy(td__keep *ks);
/* The entry path's last load got, when ks still keeps its table: *have receives it, with a
 * reference of the table (the caller releases have->tab). Returns the path's hash, for
 * td__keep_hint_set. */
uint64_t td__keep_hint(td__keep *ks, const char *path, td__have *have);
/* Remembers that path hash h's load got entry on connection gen; have is what td__keep_hint
 * gave for h (nothing is written when it named this entry already). */
void td__keep_hint_set(td__keep *ks, uint64_t h, const td__have *have, uint64_t gen,
                       uint64_t entry);
/* The table and regions of a flat LOAD_OK (ld, on connection gen): the entry's table and its
 * file mappings come from what ks keeps when it has them (nothing is mapped, decoded or checked
 * again), else they are mapped, validated and kept; the daemon's buffers are mapped for this
 * load. have is what the LOAD said it keeps (its table is taken when the reply leaves the table
 * out and ks let go of it meanwhile). *tabp and regions[0..ld->nregions) receive references of
 * the caller's; on failure nothing is held. */
int td__keep_tab_regions(td__keep *ks, const char *path, const td__proto_loaded *ld, uint64_t gen,
                         td__have *have, td__tab **tabp, td__region **regions, td_error *err);

/* c's kept models (remote_client.c): for tests. */
td__kmodels *td__client_kmodels(td_client *c);

#endif

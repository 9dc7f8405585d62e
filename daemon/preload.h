/*
 * preload.h - the files the daemon opens itself and keeps warm: the "preload PATH [MODE]" lines
 * of its configuration (config.h), read at start and on every reload.
 *
 * A line names a file, a Hugging Face index (NAME.safetensors.index.json) or the first split of
 * a gguf-split set (PREFIX-00001-of-0000N.gguf). These are the only paths the daemon opens by
 * name: they come from the administrator's configuration file, not from a client, and are
 * opened as the daemon's own user (O_RDONLY | O_CLOEXEC). The shards of a model are opened in
 * the directory of its index or first split, with the refusals a client makes (plain names
 * only, regular files only: formats/model.c); model-wide checks (a tensor in two shards, ...)
 * stay with the clients, which make them on every load. A preloaded entry is served only to a
 * client that passes a descriptor of the same file (the cache key), so a preload never gives a
 * client a file it could not open itself.
 *
 * Each file becomes a cache entry like any other (one per shard), built on the thread pool
 * with the mode of its line: pin or snapshot. Without a mode a file is pinned, unless the
 * configuration's mode rules (mode PREFIX = snapshot, matched against the path the kernel gives
 * for the open file) say snapshot: pinning keeps the file's own pages resident and copies
 * nothing, which is what a local disk wants; a path the administrator marked snapshot (a
 * network file system, a file that may be truncated) keeps that protection. map would keep
 * nothing warm and is not a preload mode.
 *
 * The builds run at most pool - 1 at a time (pool: libuv's thread pool, UV_THREADPOOL_SIZE,
 * 4 by default), so that the shards of a model are read, copied or locked in parallel while one
 * thread stays free for the loads of clients. Every build reserves its bytes against the
 * memory budget and the daemon's uid's quota as a client's load does; a refusal is logged.
 *
 * Once built, the daemon holds the entry (td__cache_hold): it is never evicted, by the LRU,
 * the budget or memory pressure, until a reload drops its line or its file is replaced. An
 * entry found cached in another mode is evicted and built again in the line's; when clients
 * hold it, it is kept warm in their mode and built again once they let go (looked at every few
 * seconds). Two lines that ask for one file in two modes get the first line's. The
 * daemon watches the directories of the preload paths: when a preloaded file, an index or a
 * missing path changes, the lines are read again a second later (as on SIGHUP), the new files
 * are preloaded and the old entries let go. Failures (a missing file, a hostile index, a
 * directory, a refusal of the budget) are logged with the line's path, the file and the reason,
 * and never stop the daemon.
 *
 * Everything here runs on the loop thread but the reading of the lines (opening the files,
 * reading an index, the header of a first split), which runs on the thread pool and touches
 * nothing but its own job.
 */
#ifndef TD_DAEMON_PRELOAD_H
#define TD_DAEMON_PRELOAD_H

#include "cache.h"
#include "config.h"

#include <uv.h>

typedef struct td__preload td__preload;

/* A preloader for cache on loop, reading its lines from *cfg (borrowed: reloaded in place).
 * NULL when out of memory. */
td__preload *td__preload_new(uv_loop_t *loop, td__cache *cache, const td__config *cfg);
/* Reads the preload lines of the configuration again (at start, after a reload): new files are
 * preloaded, files no line names any more are let go (they stay cached, evictable), and files
 * that are still named and unchanged stay as they are. Asynchronous: returns at once; a sync
 * asked for while one runs runs after it. No operation after td__preload_stop. */
void td__preload_sync(td__preload *p);
/* Lets every preloaded file go, cancels the builds it waits for (they finish in the cache,
 * unheld) and closes its handles; nothing is preloaded after it. Call before the cache is
 * destroyed (SIGTERM). Idempotent. */
void td__preload_stop(td__preload *p);
/* Frees p, after td__preload_stop and once the loop has run to its end (the jobs on the thread
 * pool and the close callbacks are done). No operation when p is NULL. */
void td__preload_free(td__preload *p);

#endif

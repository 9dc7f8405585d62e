/*
 * config.h - the daemon's settings: defaults, /etc/tensord/tensord.conf, command-line overrides.
 *
 * The file has one setting per line, '#' starts a comment:
 *   max_memory = 25%         budget for snapshot, derived and pinned bytes: a size (K, M, G, T
 *                            suffixes), a percentage of the memory the daemon may use (its
 *                            cgroup's limit, else MemTotal: see budget.h), or none (also 0)
 *   max_memory_per_uid = 50% what entries first loaded by one uid may hold: a size, a
 *                            percentage of the budget, or none
 *   max_clients = 256
 *   max_clients_per_uid = 128   connections one user (uid) may hold at once
 *   max_frame = 64M          largest request frame accepted
 *   max_leases = 4096        leases one client may hold
 *   max_entries = 1024       cached files
 *   idle_timeout = 10        seconds a client may take to send HELLO or finish a frame
 *   max_inflated = 16G       bound on the bytes an npz may inflate to
 *   log_level = info         error, warning, notice, info, debug
 *   mode /srv/models/ = snapshot   per-file mode by path prefix (map, snapshot, pin); the
 *                                  longest matching prefix wins; paths are the link targets of
 *                                  the descriptors clients pass (/proc/self/fd)
 *   preload /srv/models/m.safetensors.index.json pin
 *                            a file, a Hugging Face index or the first split of a gguf-split
 *                            set that the daemon opens itself, at start and on every reload,
 *                            and keeps warm (preload.h); the mode is pin or snapshot (default:
 *                            snapshot where a mode rule says snapshot, else pin). No '=': the
 *                            path has no spaces, the mode is an optional second word. Several
 *                            lines may be given; the lines replace one another on reload
 */
#ifndef TD_DAEMON_CONFIG_H
#define TD_DAEMON_CONFIG_H

#include "common.h"

#include <stddef.h>
#include <stdint.h>

typedef struct td__config_rule {
    char *prefix;  /* owned */
    uint32_t mode; /* TD__PROTO_MODE_MAP, _SNAPSHOT or _PIN */
} td__config_rule;

/* A preload line. */
typedef struct td__config_preload {
    char *path;    /* owned; absolute */
    uint32_t mode; /* TD__PROTO_MODE_PIN, _SNAPSHOT, or _DEFAULT (as preload.h says) */
    unsigned line; /* where the configuration file says it (0: elsewhere) */
} td__config_preload;

/* The defaults of max_memory (a share of the memory the daemon may use) and max_memory_per_uid
 * (a share of the budget). */
#define TD__CONFIG_DEFAULT_MEMORY_PERCENT  25
#define TD__CONFIG_DEFAULT_PER_UID_PERCENT 50

/* A memory setting as written: a size, a share of something the setting names, or none. */
typedef struct td__config_mem {
    uint64_t bytes;   /* percent == 0: the size in bytes (0: none) */
    uint32_t percent; /* 1..100: this share */
} td__config_mem;

typedef struct td__config {
    td__config_mem max_memory_set;         /* as written (default 25%) */
    td__config_mem max_memory_per_uid_set; /* as written (default 50%) */
    /* The two in bytes (0: none), filled in by td__budget_resolve from the settings above. */
    uint64_t max_memory;
    uint64_t max_memory_per_uid;
    uint32_t max_clients;
    uint32_t max_clients_per_uid;
    uint32_t max_frame;
    uint32_t max_leases;
    uint32_t max_entries;
    uint32_t idle_timeout_ms;
    uint64_t max_inflated;
    int log_level;
    td__config_rule *rules; /* owned */
    size_t nrules;
    td__config_preload *preloads; /* owned, in the file's order */
    size_t npreloads;
} td__config;

/* The built-in defaults. */
void td__config_defaults(td__config *c);
/* Frees the rules and the preload lines; c can be filled again with td__config_defaults. */
void td__config_destroy(td__config *c);
/* Reads path into c: its settings replace c's, its mode rules and preload lines replace c's. On
 * failure c is unchanged and *err names the file, the line and the setting. */
int td__config_load(const char *path, td__config *c, td_error *err);
/* Applies one "key = value" setting (the file's syntax, also used for --max-memory etc.). */
int td__config_set(td__config *c, const char *key, const char *value, td_error *err);
/* Adds the preload line whose words after "preload" are words ("PATH [MODE]"), said at line
 * line (for messages). TD_EINVAL naming the value for a path that is not absolute, a mode other
 * than pin or snapshot, or more words; TD_ENOMEM. */
int td__config_add_preload(td__config *c, const char *words, unsigned line, td_error *err);
/* "64M" -> 67108864; 0 or TD_EINVAL. */
int td__config_parse_size(const char *s, uint64_t *out);
/* A memory setting: a size, "N%" (1 <= N <= 100) or "none"; 0 or TD_EINVAL. */
int td__config_parse_mem(const char *s, td__config_mem *out);
/* The setting as it would be written ("25%", "8589934592", "none") into buf. */
const char *td__config_mem_text(const td__config_mem *m, char *buf, size_t cap);
/* The mode for a file path: the longest matching rule, else TD__PROTO_MODE_MAP. */
uint32_t td__config_mode_for(const td__config *c, const char *path);
/* "map", "snapshot", "pin" and back. */
const char *td__config_mode_name(uint32_t mode);
int td__config_parse_mode(const char *s, uint32_t *mode);

#endif

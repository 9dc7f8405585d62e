/*
 * config.c - see config.h.
 */
#include "config.h"
#include "log.h"
#include "proto.h"
#include "index.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

void td__config_defaults(td__config *c)
{
    memset(c, 0, sizeof *c);
    c->max_memory_set = (td__config_mem){.percent = TD__CONFIG_DEFAULT_MEMORY_PERCENT};
    c->max_memory_per_uid_set = (td__config_mem){.percent = TD__CONFIG_DEFAULT_PER_UID_PERCENT};
    c->max_clients = 256;
    c->max_clients_per_uid = 128;
    c->max_frame = TD__PROTO_DEFAULT_MAX_FRAME;
    c->max_leases = 4096;
    c->max_entries = 1024;
    c->idle_timeout_ms = 10000;
    c->max_inflated = TD__DEFAULT_MAX_INFLATED;
    c->log_level = LOG_LVL_INFO;
}

void td__config_destroy(td__config *c)
{
    for (size_t i = 0; i < c->nrules; i++)
        free(c->rules[i].prefix);
    free(c->rules);
    c->rules = NULL;
    c->nrules = 0;
    for (size_t i = 0; i < c->npreloads; i++)
        free(c->preloads[i].path);
    free(c->preloads);
    c->preloads = NULL;
    c->npreloads = 0;
}

int td__config_parse_size(const char *s, uint64_t *out)
{
    if (!s || !isdigit((unsigned char)*s))
        return TD_EINVAL;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return TD_EINVAL;
    unsigned shift = 0;
    switch (toupper((unsigned char)*end)) {
    case 'K':
        shift = 10;
        break;
    case 'M':
        shift = 20;
        break;
    case 'G':
        shift = 30;
        break;
    case 'T':
        shift = 40;
        break;
    case '\0':
        break;
    default:
        return TD_EINVAL;
    }
    if (*end) {
        end++;
        if (*end == 'i' || *end == 'I')
            end++;
        if (*end == 'b' || *end == 'B')
            end++;
    }
    if (*end || (shift && v > (UINT64_MAX >> shift)))
        return TD_EINVAL;
    *out = (uint64_t)v << shift;
    return 0;
}

int td__config_parse_mem(const char *s, td__config_mem *out)
{
    if (!s)
        return TD_EINVAL;
    if (strcmp(s, "none") == 0) {
        *out = (td__config_mem){0, 0};
        return 0;
    }
    size_t n = strlen(s);
    if (n >= 2 && s[n - 1] == '%') {
        unsigned pct = 0;
        for (size_t i = 0; i + 1 < n; i++) {
            if (!isdigit((unsigned char)s[i]) || pct > 100)
                return TD_EINVAL;
            pct = pct * 10 + (unsigned)(s[i] - '0');
        }
        if (pct < 1 || pct > 100)
            return TD_EINVAL;
        *out = (td__config_mem){0, pct};
        return 0;
    }
    uint64_t v;
    if (td__config_parse_size(s, &v))
        return TD_EINVAL;
    *out = (td__config_mem){v, 0};
    return 0;
}

const char *td__config_mem_text(const td__config_mem *m, char *buf, size_t cap)
{
    if (m->percent)
        snprintf(buf, cap, "%u%%", m->percent);
    else if (m->bytes)
        snprintf(buf, cap, "%llu", (unsigned long long)m->bytes);
    else
        snprintf(buf, cap, "none");
    return buf;
}

const char *td__config_mode_name(uint32_t mode)
{
    switch (mode) {
    case TD__PROTO_MODE_MAP:
        return "map";
    case TD__PROTO_MODE_SNAPSHOT:
        return "snapshot";
    case TD__PROTO_MODE_PIN:
        return "pin";
    default:
        return "default";
    }
}

int td__config_parse_mode(const char *s, uint32_t *mode)
{
    for (uint32_t m = TD__PROTO_MODE_MAP; m < TD__PROTO_MODE_COUNT; m++) {
        if (strcmp(s, td__config_mode_name(m)) == 0) {
            *mode = m;
            return 0;
        }
    }
    return TD_EINVAL;
}

static int td__config_u32(const char *key, const char *value, uint64_t min, uint64_t max,
                          uint32_t *out, td_error *err)
{
    uint64_t v;
    if (td__config_parse_size(value, &v) || v < min || v > max)
        return td__err(err, TD_EINVAL, "%s: '%s' is not a number in [%llu, %llu]", key, value,
                       (unsigned long long)min, (unsigned long long)max);
    *out = (uint32_t)v;
    return 0;
}

int td__config_set(td__config *c, const char *key, const char *value, td_error *err)
{
    if (strncmp(key, "mode ", 5) == 0) {
        const char *prefix = key + 5;
        while (*prefix == ' ')
            prefix++;
        uint32_t mode;
        if (*prefix != '/')
            return td__err(err, TD_EINVAL, "mode: prefix '%s' is not an absolute path", prefix);
        if (td__config_parse_mode(value, &mode))
            return td__err(err, TD_EINVAL, "mode %s: '%s' is not map, snapshot or pin", prefix,
                           value);
        td__config_rule *r = realloc(c->rules, (c->nrules + 1) * sizeof *r);
        if (!r)
            return td__err(err, TD_ENOMEM, "out of memory");
        c->rules = r;
        if (!(r[c->nrules].prefix = strdup(prefix)))
            return td__err(err, TD_ENOMEM, "out of memory");
        r[c->nrules++].mode = mode;
        return 0;
    }
    if (strcmp(key, "max_memory") == 0 || strcmp(key, "max_memory_per_uid") == 0) {
        td__config_mem m;
        if (td__config_parse_mem(value, &m))
            return td__err(err, TD_EINVAL,
                           "%s: '%s' is not a size (e.g. 512M, 8G), a percentage (1%% to 100%%) "
                           "or none",
                           key, value);
        *(key[10] ? &c->max_memory_per_uid_set : &c->max_memory_set) = m;
        return 0;
    }
    if (strcmp(key, "max_inflated") == 0) {
        if (td__config_parse_size(value, &c->max_inflated))
            return td__err(err, TD_EINVAL, "%s: '%s' is not a size (e.g. 512M, 8G)", key, value);
        return 0;
    }
    if (strcmp(key, "max_clients") == 0)
        return td__config_u32(key, value, 1, 65536, &c->max_clients, err);
    if (strcmp(key, "max_clients_per_uid") == 0)
        return td__config_u32(key, value, 1, 65536, &c->max_clients_per_uid, err);
    if (strcmp(key, "max_frame") == 0)
        return td__config_u32(key, value, 4096, TD__PROTO_FRAME_MAX, &c->max_frame, err);
    if (strcmp(key, "max_leases") == 0)
        return td__config_u32(key, value, 1, 1u << 20, &c->max_leases, err);
    if (strcmp(key, "max_entries") == 0)
        return td__config_u32(key, value, 1, 1u << 20, &c->max_entries, err);
    if (strcmp(key, "idle_timeout") == 0) {
        uint32_t s = 0;
        int rc = td__config_u32(key, value, 1, 86400, &s, err);
        if (!rc)
            c->idle_timeout_ms = s * 1000;
        return rc;
    }
    if (strcmp(key, "log_level") == 0) {
        if (td__log_parse_level(value, &c->log_level))
            return td__err(err, TD_EINVAL,
                           "log_level: '%s' is not error, warning, notice, info "
                           "or debug",
                           value);
        return 0;
    }
    return td__err(err, TD_EINVAL, "unknown setting '%s'", key);
}

int td__config_add_preload(td__config *c, const char *words, unsigned line, td_error *err)
{
    /* PATH, then an optional MODE: whitespace-separated words. */
    const char *w[3] = {NULL, NULL, NULL};
    size_t len[3] = {0, 0, 0}, n = 0;
    for (const char *s = words; *s && n < 3;) {
        while (isspace((unsigned char)*s))
            s++;
        if (!*s)
            break;
        w[n] = s;
        while (*s && !isspace((unsigned char)*s))
            s++;
        len[n] = (size_t)(s - w[n]);
        n++;
    }
    if (n == 0)
        return td__err(err, TD_EINVAL, "preload: expected 'preload PATH [pin|snapshot]'");
    if (n == 3)
        return td__err(err, TD_EINVAL,
                       "preload %.*s: '%.*s' is one word too many (expected 'preload PATH "
                       "[pin|snapshot]'; the path cannot hold spaces)",
                       (int)len[0], w[0], (int)len[2], w[2]);
    if (w[0][0] != '/')
        return td__err(err, TD_EINVAL, "preload: path '%.*s' is not an absolute path", (int)len[0],
                       w[0]);
    uint32_t mode = TD__PROTO_MODE_DEFAULT;
    if (n == 2) {
        char word[16] = "";
        if (len[1] < sizeof word)
            memcpy(word, w[1], len[1]);
        if (td__config_parse_mode(word, &mode) || mode == TD__PROTO_MODE_MAP)
            return td__err(err, TD_EINVAL,
                           "preload %.*s: mode '%.*s' is not pin or snapshot (map would keep "
                           "nothing warm)",
                           (int)len[0], w[0], (int)len[1], w[1]);
    }
    td__config_preload *p = realloc(c->preloads, (c->npreloads + 1) * sizeof *p);
    if (!p)
        return td__err(err, TD_ENOMEM, "out of memory");
    c->preloads = p;
    if (!(p[c->npreloads].path = strndup(w[0], len[0])))
        return td__err(err, TD_ENOMEM, "out of memory");
    p[c->npreloads].mode = mode;
    p[c->npreloads++].line = line;
    return 0;
}

static char *td__config_trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

int td__config_load(const char *path, td__config *c, td_error *err)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        int e = errno;
        return td__err(err, td__err_from_errno(e), "%s: cannot open: %s", path, strerror(e));
    }
    /* Parse into a copy so that a bad file changes nothing; the file's mode rules and preload
     * lines replace c's. */
    td__config n = *c;
    n.rules = NULL;
    n.nrules = 0;
    n.preloads = NULL;
    n.npreloads = 0;
    int rc = 0;
    char line[4096];
    unsigned lineno = 0;
    while (!rc && fgets(line, sizeof line, f)) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *s = td__config_trim(line);
        if (!*s)
            continue;
        char *eq = strchr(s, '=');
        if (strncmp(s, "preload", 7) == 0 && (!s[7] || isspace((unsigned char)s[7]))) {
            rc = td__config_add_preload(&n, s + 7, lineno, err);
        } else if (!eq) {
            rc = td__err(err, TD_EINVAL, "%s:%u: expected 'key = value'", path, lineno);
            break;
        } else {
            *eq = '\0';
            rc = td__config_set(&n, td__config_trim(s), td__config_trim(eq + 1), err);
        }
        if (rc) {
            char msg[sizeof err->message];
            snprintf(msg, sizeof msg, "%s:%u", path, lineno);
            td__err_prefix(err, rc, msg);
        }
    }
    fclose(f);
    if (rc) {
        td__config_destroy(&n);
        return rc;
    }
    td__config_destroy(c);
    *c = n;
    return 0;
}

uint32_t td__config_mode_for(const td__config *c, const char *path)
{
    uint32_t mode = TD__PROTO_MODE_MAP;
    size_t best = 0;
    for (size_t i = 0; path && i < c->nrules; i++) {
        size_t n = strlen(c->rules[i].prefix);
        if (n > best && strncmp(path, c->rules[i].prefix, n) == 0) {
            best = n;
            mode = c->rules[i].mode;
        }
    }
    return mode;
}

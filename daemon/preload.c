/*
 * preload.c - see preload.h.
 *
 * A sync is one job on the thread pool (pl_resolve) that reads every line: it opens the line's
 * files and gives back, per line, the candidates (an open descriptor, its cache key, its path)
 * and what could not be opened. Back on the loop, pl_commit matches the candidates against the
 * files preloaded now: an unchanged file (same key, same mode) stays as it is, a new one is
 * queued, and the files no candidate matches any more are let go. pl_pump hands the queue to
 * td__cache_acquire, at most p->cap builds at a time; pl_got makes the lease a built entry gives
 * a hold.
 *
 * A file's life: QUEUED (its descriptor open, waiting for a build slot) -> BUILDING (a waiter
 * on its cache entry) -> HELD (a hold on the entry) or FAILED (logged; tried again at the next
 * sync). An entry that comes in another mode than the file's (a client loaded the file first,
 * or the line's mode changed) makes it SWITCH (a lease on the entry): pl_process gives the
 * lease back, evicts the entry if nobody holds it, and queues the file again, once; an entry
 * clients hold is kept in their mode (HELD, its descriptor kept open) until they let go.
 *
 * The cache calls pl_done from inside td__cache_finish, which goes on with the entry's other
 * waiters afterwards, and from any call that gives memory back (td__cache_release,
 * td__cache_unhold, which finish builds waiting for room). So pl_done only changes the file's
 * state and asks for pl_process on the next turn of the loop, which is where everything that
 * changes the cache (releases, evictions, new loads) happens, besides syncs.
 */
#include "preload.h"
#include "index.h"
#include "log.h"
#include "model.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* After a change in a watched directory, the lines are read again this much later (the files of
 * a model being replaced one by one then come in one sync, or a few). */
#define PL_RECHECK_MS 1000
/* A file warm in another mode than its line's, because clients held it in theirs when it was
 * preloaded, is looked at this often, and built in its mode once they let go. */
#define PL_RETRY_MS 5000

enum { PL_QUEUED, PL_BUILDING, PL_SWITCH, PL_HELD, PL_FAILED };

typedef struct pl_file pl_file;
typedef struct pl_watch pl_watch;

/* One file a line names. */
struct pl_file {
    td__cache_waiter w; /* first: the waiter's done() finds the file */
    td__preload *p;
    pl_file *next;   /* in p->files */
    pl_file *qnext;  /* in the build queue */
    char *line;      /* the line's path, for messages (owned) */
    unsigned lineno; /* and where the configuration says it */
    char *label;     /* the file as opened: the line's path, or DIR/SHARD (owned) */
    td__cache_key key;
    uint32_t mode; /* TD__PROTO_MODE_PIN or _SNAPSHOT */
    int fd;        /* open until the entry is settled, else -1 */
    int retried;   /* evicted once to be built again in its mode */
    int state;
    td__cache_entry *e; /* PL_HELD: the entry we hold; PL_SWITCH: our lease on it */
};

/* A watched directory and the names in it that matter. */
struct pl_watch {
    uv_fs_event_t h;
    td__preload *p;
    pl_watch *next;
    char *dir;    /* owned */
    char **names; /* owned */
    size_t nnames;
};

/* What reading one line found: files to preload, and the files that could not be opened. */
typedef struct pl_cand {
    char *label; /* owned */
    char *real;  /* the kernel's path of the open file, for the mode rules (owned, may be NULL) */
    int fd;      /* owned until taken */
    td__cache_key key;
} pl_cand;

typedef struct pl_fail {
    char *label; /* owned */
    td_error err;
} pl_fail;

typedef struct pl_line {
    char *path; /* owned copy of the configuration's */
    uint32_t mode;
    unsigned lineno;
    int status; /* the line as a whole could not be read (err says why) */
    td_error err;
    pl_cand *cands;
    size_t ncands;
    pl_fail *fails; /* files of the line that could not be opened */
    size_t nfails;
} pl_line;

/* One sync's reading of every line, on the thread pool. */
typedef struct pl_job {
    uv_work_t work;
    td__preload *p;
    pl_line *lines;
    size_t nlines;
} pl_job;

struct td__preload {
    uv_loop_t *loop;
    td__cache *cache;
    const td__config *cfg;
    uint32_t uid;   /* the daemon's: preloaded bytes count against its quota */
    pl_file *files; /* what the lines name now */
    pl_file *qhead, *qtail;
    size_t inflight, cap;
    int busy;         /* a job is on the thread pool */
    int again;        /* a sync was asked for meanwhile */
    int report;       /* say what is warm once the builds of this sync are done */
    size_t unread;    /* files the last sync could not open, lines it could not read */
    int stopped;      /* td__preload_stop ran */
    uv_timer_t timer; /* recheck after a change in a watched directory */
    uv_timer_t kick;  /* pl_process on the next turn of the loop */
    uv_timer_t retry; /* pl_process later: files kept in another mode while clients hold them */
    pl_watch *watches;
};

/* ---- reading the lines, on the thread pool ---- */

/* Opens name in dirfd (label: how messages name it) and adds it to l's candidates; a file that
 * cannot be opened goes to l->fails instead. 0, or TD_ENOMEM. */
static int pl_add(pl_line *l, int dirfd, const char *name, const char *label)
{
    td_error err = {0};
    int fd = -1;
    uint64_t size;
    td__cache_key key;
    int rc = td__open_file_at(dirfd, name, label, &fd, &size, &err);
    if (!rc && (rc = td__cache_key_of(fd, 0, &key, &err)) != 0)
        td__err_prefix(&err, rc, label);
    if (rc) {
        if (fd >= 0)
            close(fd);
        pl_fail *f = realloc(l->fails, (l->nfails + 1) * sizeof *f);
        if (f)
            l->fails = f;
        char *copy = f ? strdup(label) : NULL;
        if (!copy)
            return TD_ENOMEM;
        f[l->nfails++] = (pl_fail){copy, err};
        return 0;
    }
    pl_cand *c = realloc(l->cands, (l->ncands + 1) * sizeof *c);
    char *copy = strdup(label);
    if (c)
        l->cands = c;
    if (!c || !copy) {
        free(copy);
        close(fd);
        return TD_ENOMEM;
    }
    c[l->ncands++] = (pl_cand){copy, td__cache_fd_path(fd), fd, key};
    return 0;
}

/* Opens the shards of a model, name by name, in dirfd (the directory of path). */
static int pl_add_shards(pl_line *l, int dirfd, const td__model *m, size_t first)
{
    for (size_t i = first; i < m->nfiles; i++) {
        char *label = td__model_file_label(l->path, m->files[i]);
        int rc = label ? pl_add(l, dirfd, m->files[i], label) : TD_ENOMEM;
        free(label);
        if (rc)
            return td__err(&l->err, rc, "%s: out of memory", l->path);
    }
    return 0;
}

/* A Hugging Face index: read with a bound, parsed and checked (plain shard names only), then
 * every shard opened in its directory. */
static int pl_read_hf(pl_line *l, int dirfd, const char *base)
{
    int fd;
    uint64_t size;
    uint8_t *json = NULL;
    size_t len = 0;
    td__model m = {0};
    int rc = td__open_file_at(dirfd, base, l->path, &fd, &size, &l->err);
    if (rc)
        return rc;
    rc = td__model_read_index(fd, size, l->path, &json, &len, &l->err);
    close(fd);
    if (!rc)
        rc = td__model_parse_hf(json, len, l->path, &m, &l->err);
    if (!rc)
        rc = pl_add_shards(l, dirfd, &m, 0);
    td__model_destroy(&m);
    free(json);
    return rc;
}

/* A file whose name has gguf-split's form: its header says whether it is the first split of a
 * set (then the set's files are opened too) or a later one (refused, naming the first). */
static int pl_read_split(pl_line *l, int dirfd, const char *base)
{
    int fd;
    uint64_t size;
    td__table t;
    td__model m = {0};
    int rc = td__open_file_at(dirfd, base, l->path, &fd, &size, &l->err);
    if (rc)
        return rc;
    td__table_init(&t, TD_FORMAT_GGUF);
    td__rd rd;
    td__rd_fd(&rd, fd, size, 0, l->path);
    rc = td__index(TD_FORMAT_GGUF, &rd, TD__DEFAULT_MAX_INFLATED, &t, &l->err);
    td__rd_close(&rd);
    close(fd);
    if (!rc)
        rc = td__model_gguf_split(base, &t, &m, &l->err);
    td__table_destroy(&t);
    /* The first file is opened again by name, like the others: one way for all. */
    if (!rc && (rc = pl_add(l, dirfd, base, l->path)) != 0)
        rc = td__err(&l->err, rc, "%s: out of memory", l->path);
    if (!rc)
        rc = pl_add_shards(l, dirfd, &m, 1);
    td__model_destroy(&m);
    return rc;
}

static void pl_resolve_line(pl_line *l)
{
    const char *slash = strrchr(l->path, '/'); /* the path is absolute */
    const char *base = slash + 1;
    if (!*base) {
        l->status = td__err(&l->err, TD_EINVAL, "%s: names a directory, not a file", l->path);
        return;
    }
    char *dir = strndup(l->path, slash == l->path ? 1 : (size_t)(slash - l->path));
    if (!dir) {
        l->status = td__err(&l->err, TD_ENOMEM, "%s: out of memory", l->path);
        return;
    }
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0) {
        int e = errno;
        l->status = td__err(&l->err, td__err_from_errno(e), "%s: cannot open its directory %s: %s",
                            l->path, dir, strerror(e));
        free(dir);
        return;
    }
    free(dir);
    int rc;
    if (td__model_is_hf_index(base)) {
        rc = pl_read_hf(l, dirfd, base);
    } else if (td__model_is_split_name(base)) {
        rc = pl_read_split(l, dirfd, base);
    } else if ((rc = pl_add(l, dirfd, base, l->path)) != 0) {
        rc = td__err(&l->err, rc, "%s: out of memory", l->path);
    }
    close(dirfd);
    l->status = rc;
}

static void pl_resolve(uv_work_t *w)
{
    pl_job *j = w->data;
    for (size_t i = 0; i < j->nlines; i++)
        pl_resolve_line(&j->lines[i]);
}

static void pl_job_free(pl_job *j)
{
    for (size_t i = 0; i < j->nlines; i++) {
        pl_line *l = &j->lines[i];
        for (size_t k = 0; k < l->ncands; k++) {
            if (l->cands[k].fd >= 0)
                close(l->cands[k].fd);
            free(l->cands[k].label);
            free(l->cands[k].real);
        }
        free(l->cands);
        for (size_t k = 0; k < l->nfails; k++)
            free(l->fails[k].label);
        free(l->fails);
        free(l->path);
    }
    free(j->lines);
    free(j);
}

/* ---- the files, on the loop ---- */

/* "preload (line N): MESSAGE" when the message starts with the line's path, else "preload PATH
 * (line N): MESSAGE" (lineno 0: no line number). */
static void pl_log_line(int level, const char *line, unsigned lineno, const char *message)
{
    char where[32] = "";
    if (lineno)
        snprintf(where, sizeof where, " (line %u)", lineno);
    if (strncmp(message, line, strlen(line)) == 0)
        td__log_msg(level, "preload%s: %s", where, message);
    else
        td__log_msg(level, "preload %s%s: %s", line, where, message);
}

/* A file's failure, its name added when the message does not name it. */
static void pl_log_failure(int level, const pl_file *f, const td_error *err)
{
    if (strstr(err->message, f->label)) {
        pl_log_line(level, f->line, f->lineno, err->message);
    } else {
        char text[sizeof err->message + 4096];
        snprintf(text, sizeof text, "%s: %s", f->label, err->message);
        pl_log_line(level, f->line, f->lineno, text);
    }
}

static void pl_process(uv_timer_t *t);

static void pl_close_fd(pl_file *f)
{
    if (f->fd >= 0)
        close(f->fd);
    f->fd = -1;
}

/* Once nothing is queued or building after a sync that changed something: what is warm. */
static void pl_report(td__preload *p)
{
    if (!p->report || p->inflight || p->qhead || p->busy || p->stopped ||
        uv_is_active((uv_handle_t *)&p->kick))
        return;
    p->report = 0;
    size_t held = 0, failed = 0;
    uint64_t bytes = 0;
    for (const pl_file *f = p->files; f; f = f->next) {
        held += f->state == PL_HELD;
        failed += f->state == PL_FAILED;
        const pl_file *o = p->files; /* an entry two lines hold counts once */
        while (o != f && !(o->state == PL_HELD && o->e == f->e))
            o = o->next;
        if (f->state == PL_HELD && o == f)
            bytes += td__cache_entry_bytes(f->e);
    }
    td__log_notice("preload: %zu files warm (%llu bytes held against the budget), %zu failed", held,
                   (unsigned long long)bytes, failed + p->unread);
}

static void pl_failed(pl_file *f, const td_error *err)
{
    f->state = PL_FAILED;
    pl_close_fd(f);
    pl_log_failure(LOG_LVL_WARN, f, err);
}

/* Runs pl_process on the next turn of the loop. */
static void pl_kick(td__preload *p)
{
    if (!p->stopped)
        uv_timer_start(&p->kick, pl_process, 0, 0);
}

/* f's load gave it a lease on e: kept as a hold, or (the first time) to be built again in f's
 * mode when e is cached in another (a client loaded the file first, or the line's mode changed):
 * pl_process does that. Never changes the cache: pl_done runs inside td__cache_finish. */
static void pl_got(td__preload *p, pl_file *f, td__cache_entry *e)
{
    uint32_t mode = td__cache_entry_mode(e);
    f->e = e;
    if (mode != f->mode && !f->retried) {
        f->state = PL_SWITCH;
        pl_kick(p);
        return;
    }
    if (mode != f->mode)
        td__log_notice("preload %s: %s is cached in mode %s and held by clients (or another "
                       "preload line): kept warm in that mode, and built in mode %s once they let "
                       "go",
                       f->line, f->label, td__config_mode_name(mode),
                       td__config_mode_name(f->mode));
    td__cache_hold(e);
    f->state = PL_HELD;
    if (mode == f->mode)
        pl_close_fd(f); /* else kept, to build it again in its mode later (pl_process) */
    char text[4096 + 64];
    snprintf(text, sizeof text, "%s: warm (mode %s, %llu bytes)", f->label,
             td__config_mode_name(mode), (unsigned long long)td__cache_entry_bytes(e));
    pl_log_line(LOG_LVL_INFO, f->line, f->lineno, text);
}

/* The build f waited for is done (e set, with a lease for f) or failed. This runs inside
 * td__cache_finish, which goes on with the entry's other waiters after it: f's state changes,
 * the rest waits for pl_process. */
static void pl_done(td__cache_waiter *w, td__cache_entry *e, int status, const td_error *err)
{
    pl_file *f = (pl_file *)w;
    td__preload *p = f->p;
    p->inflight--;
    if (status)
        pl_failed(f, err);
    else
        pl_got(p, f, e);
    pl_kick(p);
}

/* Asks the cache for f's entry: a hold at once, a build to wait for, or a failure. */
static void pl_acquire(td__preload *p, pl_file *f)
{
    td__cache_request q = {.fd = f->fd,
                           .name = f->label,
                           .format = TD_FORMAT_AUTO,
                           .mode = f->mode,
                           .dequant = 0,
                           .max_inflated = 0,
                           .uid = p->uid};
    td__cache_entry *e = NULL;
    td_error err = {0};
    memset(&f->w, 0, sizeof f->w);
    f->w.done = pl_done;
    f->state = PL_BUILDING;
    int rc = td__cache_acquire(p->cache, &q, &f->w, &e, &err);
    if (rc == 1)
        p->inflight++;
    else if (rc == 0)
        pl_got(p, f, e);
    else
        pl_failed(f, &err);
}

static void pl_enqueue(td__preload *p, pl_file *f, int front)
{
    f->state = PL_QUEUED;
    if (front) {
        f->qnext = p->qhead;
        p->qhead = f;
        if (!p->qtail)
            p->qtail = f;
        return;
    }
    f->qnext = NULL;
    if (p->qtail)
        p->qtail->qnext = f;
    else
        p->qhead = f;
    p->qtail = f;
}

static void pl_pump(td__preload *p)
{
    while (!p->stopped && p->inflight < p->cap && p->qhead) {
        pl_file *f = p->qhead;
        p->qhead = f->qnext;
        if (!p->qhead)
            p->qtail = NULL;
        f->qnext = NULL;
        pl_acquire(p, f);
    }
}

/* Whether f is warm in another mode than its line's (clients held the entry in theirs). */
static int pl_astray(const pl_file *f)
{
    return f->state == PL_HELD && td__cache_entry_mode(f->e) != f->mode;
}

/* Outside the cache's callbacks: the files whose entry came in another mode give their leases
 * back, and so do the files kept in another mode that no client holds any more; the entries
 * nobody holds then are evicted, and the files are built again in their mode (an entry clients
 * still hold stays, and is kept in its mode until they let go: looked at again every
 * PL_RETRY_MS). Then the queue is pumped. */
static void pl_process(uv_timer_t *t)
{
    td__preload *p = t->data;
    int again = 1;
    while (again && !p->stopped) {
        again = 0;
        for (pl_file *f = p->files; f; f = f->next) {
            td__cache_entry *e = f->e;
            if (f->state == PL_SWITCH && e) {
                f->e = NULL;
                td__cache_release(p->cache, e); /* may finish other builds: they only mark */
            } else if (pl_astray(f) && td__cache_entry_leases(e) == 0 &&
                       td__cache_entry_holds(e) == 1) {
                /* Nobody else holds it now (another line asking for it in another mode would:
                 * the first line's mode stays). */
                f->e = NULL;
                f->state = PL_SWITCH;
                td__cache_unhold(p->cache, e);
            }
        }
        for (pl_file *f = p->files; f; f = f->next) {
            if (f->state != PL_SWITCH || f->e) /* f->e: a build finished meanwhile: next round */
                continue;
            uint64_t n = 0, bytes = 0;
            td__cache_evict(p->cache, &f->key, &n, &bytes);
            if (n)
                td__log_info("preload %s: %s was cached in another mode: evicted, to be built in "
                             "mode %s",
                             f->line, f->label, td__config_mode_name(f->mode));
            f->retried = 1;
            pl_enqueue(p, f, 1);
        }
        pl_pump(p);
        for (const pl_file *f = p->files; f && !again; f = f->next)
            again = f->state == PL_SWITCH; /* a hit in pl_pump */
    }
    pl_report(p);
    int astray = 0;
    for (const pl_file *f = p->files; f && !astray; f = f->next)
        astray = pl_astray(f);
    if (astray && !p->stopped && !uv_is_active((uv_handle_t *)&p->retry))
        uv_timer_start(&p->retry, pl_process, PL_RETRY_MS, 0);
}

static void pl_unqueue(td__preload *p, pl_file *f)
{
    pl_file **pp = &p->qhead, *prev = NULL;
    while (*pp && *pp != f) {
        prev = *pp;
        pp = &(*pp)->qnext;
    }
    if (!*pp)
        return;
    *pp = f->qnext;
    if (p->qtail == f)
        p->qtail = prev;
    f->qnext = NULL;
}

static void pl_file_free(pl_file *f)
{
    pl_close_fd(f);
    free(f->line);
    free(f->label);
    free(f);
}

/* f is not wanted any more (why: for the log, NULL: say nothing): its hold goes (the entry stays
 * cached, evictable), its build is left to finish unwaited, or it leaves the queue. Frees f. */
static void pl_let_go(td__preload *p, pl_file *f, const char *why)
{
    switch (f->state) {
    case PL_HELD:
        if (why)
            td__log_info("preload: let go of %s (%s)", f->label, why);
        td__cache_unhold(p->cache, f->e);
        break;
    case PL_BUILDING:
        td__cache_cancel(&f->w);
        p->inflight--;
        break;
    case PL_SWITCH:
        if (f->e)
            td__cache_release(p->cache, f->e);
        break;
    case PL_QUEUED:
        pl_unqueue(p, f);
        break;
    default:
        break;
    }
    pl_file_free(f);
}

/* ---- watching the directories ---- */

static void pl_watch_closed(uv_handle_t *h)
{
    pl_watch *w = h->data;
    for (size_t i = 0; i < w->nnames; i++)
        free(w->names[i]);
    free(w->names);
    free(w->dir);
    free(w);
}

static void pl_watch_close_all(td__preload *p)
{
    while (p->watches) {
        pl_watch *w = p->watches;
        p->watches = w->next;
        uv_close((uv_handle_t *)&w->h, pl_watch_closed);
    }
}

static void pl_recheck(uv_timer_t *t)
{
    td__preload *p = t->data;
    td__log_debug("preload: a watched file changed; reading the preload lines again");
    td__preload_sync(p);
}

static void pl_watch_cb(uv_fs_event_t *h, const char *filename, int events, int status)
{
    (void)events;
    pl_watch *w = h->data;
    td__preload *p = w->p;
    if (status < 0 || p->stopped)
        return;
    int match = !filename;
    for (size_t i = 0; !match && i < w->nnames; i++)
        match = strcmp(filename, w->names[i]) == 0;
    if (match && !uv_is_active((uv_handle_t *)&p->timer))
        uv_timer_start(&p->timer, pl_recheck, PL_RECHECK_MS, 0);
}

/* Adds DIR/NAME of path to the watches (a new watch for a new directory). */
static void pl_watch_add(td__preload *p, const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash || !slash[1])
        return;
    size_t dlen = slash == path ? 1 : (size_t)(slash - path);
    pl_watch *w;
    for (w = p->watches; w; w = w->next)
        if (strlen(w->dir) == dlen && strncmp(w->dir, path, dlen) == 0)
            break;
    if (!w) {
        char *dir = strndup(path, dlen);
        w = calloc(1, sizeof *w);
        if (!dir || !w || uv_fs_event_init(p->loop, &w->h) != 0) {
            free(dir);
            free(w);
            return;
        }
        w->h.data = w;
        w->p = p;
        w->dir = dir;
        w->next = p->watches;
        p->watches = w;
        int rc = uv_fs_event_start(&w->h, pl_watch_cb, dir, 0);
        if (rc) {
            td__log_debug("preload: cannot watch %s (%s); its changes are seen at reloads only",
                          dir, uv_strerror(rc));
            return; /* kept, so that the directory is not tried again this sync */
        }
    }
    for (size_t i = 0; i < w->nnames; i++)
        if (strcmp(w->names[i], slash + 1) == 0)
            return;
    char **n = realloc(w->names, (w->nnames + 1) * sizeof *n);
    if (!n)
        return;
    w->names = n;
    if ((n[w->nnames] = strdup(slash + 1)) != NULL)
        w->nnames++;
}

/* ---- syncs ---- */

static int pl_same_key(const td__cache_key *a, const td__cache_key *b)
{
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime_sec == b->mtime_sec && a->mtime_nsec == b->mtime_nsec &&
           a->dequant == b->dequant;
}

/* Matches what the job found with the files preloaded now (see the top of the file). */
static void pl_commit(td__preload *p, pl_job *j)
{
    pl_file *old = p->files, **tail = &p->files;
    p->files = NULL;
    size_t kept = 0, added = 0, failed = 0, gone = 0;
    for (size_t i = 0; i < j->nlines; i++) {
        pl_line *l = &j->lines[i];
        if (l->status) {
            pl_log_line(LOG_LVL_WARN, l->path, l->lineno, l->err.message);
            failed++;
            continue;
        }
        for (size_t k = 0; k < l->nfails; k++) {
            pl_log_line(LOG_LVL_WARN, l->path, l->lineno, l->fails[k].err.message);
            failed++;
        }
        for (size_t k = 0; k < l->ncands; k++) {
            pl_cand *c = &l->cands[k];
            uint32_t mode = l->mode;
            if (mode == TD__PROTO_MODE_DEFAULT)
                mode = td__config_mode_for(p->cfg, c->real) == TD__PROTO_MODE_SNAPSHOT
                           ? TD__PROTO_MODE_SNAPSHOT
                           : TD__PROTO_MODE_PIN;
            pl_file **pf = &old, *f = NULL;
            for (; *pf; pf = &(*pf)->next) {
                const pl_file *o = *pf;
                /* A file kept in another mode than its line's (clients held it in theirs) is
                 * asked for again, to be built in its mode if nobody holds it now. */
                if (o->state != PL_FAILED && o->mode == mode &&
                    (o->state != PL_HELD || td__cache_entry_mode(o->e) == mode) &&
                    pl_same_key(&o->key, &c->key) && strcmp(o->line, l->path) == 0)
                    break;
            }
            if (*pf) {
                f = *pf; /* unchanged: stays as it is */
                *pf = f->next;
                kept++;
            } else if ((f = calloc(1, sizeof *f)) != NULL) {
                f->p = p;
                f->line = strdup(l->path);
                f->lineno = l->lineno;
                f->label = c->label;
                c->label = NULL;
                f->key = c->key;
                f->mode = mode;
                f->fd = c->fd;
                c->fd = -1;
                if (!f->line || !f->label) {
                    td__log_err("preload %s: out of memory", l->path);
                    pl_file_free(f);
                    continue;
                }
                pl_enqueue(p, f, 0);
                added++;
            } else {
                td__log_err("preload %s: out of memory", l->path);
                continue;
            }
            f->next = NULL;
            *tail = f;
            tail = &f->next;
        }
    }
    /* What no line names now (dropped lines, replaced files, changed modes) goes. */
    while (old) {
        pl_file *f = old;
        old = f->next;
        gone += f->state == PL_HELD;
        pl_let_go(p, f, "no preload line names it now, it was replaced, or its mode changed");
    }
    pl_watch_close_all(p);
    for (size_t i = 0; i < j->nlines; i++) {
        pl_watch_add(p, j->lines[i].path);
        for (size_t k = 0; k < j->lines[i].ncands; k++)
            if (j->lines[i].cands[k].label) /* taken labels are the files' now */
                pl_watch_add(p, j->lines[i].cands[k].label);
        for (size_t k = 0; k < j->lines[i].nfails; k++) /* to see it appear */
            pl_watch_add(p, j->lines[i].fails[k].label);
    }
    for (const pl_file *f = p->files; f; f = f->next)
        pl_watch_add(p, f->label);
    int changed = added || gone || failed;
    td__log_msg(changed ? LOG_LVL_NOTICE : LOG_LVL_DEBUG,
                "preload: %zu lines: %zu files unchanged, %zu to load, %zu let go, %zu failures",
                j->nlines, kept, added, gone, failed);
    p->report |= changed;
    p->unread = failed;
}

static void pl_after(uv_work_t *w, int status)
{
    pl_job *j = w->data;
    td__preload *p = j->p;
    p->busy = 0;
    if (!p->stopped && status == 0) {
        pl_commit(p, j);
        pl_pump(p);
    }
    pl_job_free(j);
    if (p->again && !p->stopped) {
        p->again = 0;
        td__preload_sync(p);
    }
    pl_report(p);
}

void td__preload_sync(td__preload *p)
{
    if (p->stopped)
        return;
    if (p->busy) {
        p->again = 1;
        return;
    }
    uv_timer_stop(&p->timer);
    if (!p->cfg->npreloads && !p->files && !p->watches)
        return; /* nothing to preload, nothing to let go */
    pl_job *j = calloc(1, sizeof *j);
    size_t n = p->cfg->npreloads;
    if (j)
        j->lines = calloc(n ? n : 1, sizeof *j->lines);
    if (!j || !j->lines) {
        free(j);
        td__log_err("preload: out of memory");
        return;
    }
    j->p = p;
    for (size_t i = 0; i < n; i++) {
        const td__config_preload *c = &p->cfg->preloads[i];
        j->lines[i].path = strdup(c->path);
        j->lines[i].mode = c->mode;
        j->lines[i].lineno = c->line;
        j->nlines = i + 1;
        if (!j->lines[i].path) {
            pl_job_free(j);
            td__log_err("preload: out of memory");
            return;
        }
    }
    j->work.data = j;
    int rc = uv_queue_work(p->loop, &j->work, pl_resolve, pl_after);
    if (rc) {
        td__log_err("preload: cannot queue the reading of the preload lines: %s", uv_strerror(rc));
        pl_job_free(j);
        return;
    }
    td__log_info("preload: reading %zu lines", n);
    p->busy = 1;
}

/* What libuv's thread pool has: UV_THREADPOOL_SIZE, read as libuv reads it, else 4. */
static size_t pl_pool_size(void)
{
    const char *s = getenv("UV_THREADPOOL_SIZE");
    long n = s ? strtol(s, NULL, 10) : 4;
    if (n < 1)
        n = 1;
    if (n > 1024)
        n = 1024;
    return (size_t)n;
}

td__preload *td__preload_new(uv_loop_t *loop, td__cache *cache, const td__config *cfg)
{
    td__preload *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->loop = loop;
    p->cache = cache;
    p->cfg = cfg;
    p->uid = (uint32_t)geteuid();
    size_t pool = pl_pool_size();
    p->cap = pool > 1 ? pool - 1 : 1;
    uv_timer_init(loop, &p->timer);
    uv_timer_init(loop, &p->kick);
    uv_timer_init(loop, &p->retry);
    p->timer.data = p->kick.data = p->retry.data = p;
    uv_unref((uv_handle_t *)&p->timer);
    uv_unref((uv_handle_t *)&p->retry);
    return p;
}

void td__preload_stop(td__preload *p)
{
    if (!p || p->stopped)
        return;
    p->stopped = 1;
    while (p->files) {
        pl_file *f = p->files;
        p->files = f->next;
        pl_let_go(p, f, NULL);
    }
    p->qhead = p->qtail = NULL;
    pl_watch_close_all(p);
    uv_timer_t *timers[] = {&p->timer, &p->kick, &p->retry};
    for (size_t i = 0; i < 3; i++)
        if (!uv_is_closing((uv_handle_t *)timers[i]))
            uv_close((uv_handle_t *)timers[i], NULL);
}

void td__preload_free(td__preload *p)
{
    free(p);
}

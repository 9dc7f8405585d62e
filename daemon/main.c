/*
 * tensord - the machine-wide, zero-copy weight cache.
 *
 *   tensord [--socket PATH] [--config FILE] [--max-memory SIZE] [--log-level LEVEL]
 *           [--max-clients N] [--idle-timeout SECONDS]
 *
 * Started by systemd, it serves the listening socket it is given (socket activation); started by
 * hand, it binds --socket itself (default $TENSORD_SOCKET, then TD_DEFAULT_SOCKET),
 * refusing to take over a socket a live daemon answers on and replacing a stale one.
 *
 * SIGTERM and SIGINT: stop accepting, finish what is in flight, exit 0. SIGHUP: reload the
 * configuration file (command-line settings still win), work out the memory budget again and
 * read the preload lines again (a configuration refused keeps its old lines, read again too).
 */
#include "budget.h"
#include "config.h"
#include "derive.h"
#include "log.h"
#include "preload.h"
#include "pressure.h"
#include "server.h"
#include "tensord.h"

#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#define DEFAULT_CONFIG "/etc/tensord/tensord.conf"
/* After SIGTERM, give requests in flight this long before exiting anyway. */
#define DRAIN_TIMEOUT_MS 10000

typedef struct daemon_state {
    uv_loop_t loop;
    td__config cfg;
    td__server srv;
    td__pressure pressure;
    td__preload *preload;
    const char *config_path; /* NULL: none */
    int config_explicit;     /* --config given: a missing file is an error */
    char **overrides;        /* "key=value" settings from the command line */
    int noverrides;
    const char *socket_path;
    int own_socket; /* we bound socket_path and remove it on exit */
    uv_signal_t sigterm, sigint, sighup;
    uv_timer_t status_timer, drain_timer, deadline;
    int exit_code;
} daemon_state;

static void usage(FILE *f)
{
    fprintf(f, "usage: tensord [--socket PATH] [--config FILE] [--max-memory SIZE]\n"
               "               [--log-level error|warning|notice|info|debug]\n"
               "               [--max-clients N] [--idle-timeout SECONDS] [--version]\n");
}

/* Defaults, then the file, then the command line. */
static int load_config(daemon_state *d, td__config *out, td_error *err)
{
    td__config_defaults(out);
    if (d->config_path && (d->config_explicit || access(d->config_path, F_OK) == 0)) {
        int rc = td__config_load(d->config_path, out, err);
        if (rc) {
            td__config_destroy(out);
            return rc;
        }
    }
    for (int i = 0; i < d->noverrides; i++) {
        char *eq = strchr(d->overrides[i], '=');
        *eq = '\0';
        int rc = td__config_set(out, d->overrides[i], eq + 1, err);
        *eq = '=';
        if (rc) {
            td__config_destroy(out);
            return rc;
        }
    }
    return 0;
}

static void notify_status(daemon_state *d)
{
    td__proto_stats st;
    td__server_stats(&d->srv, &st);
    sd_notifyf(0, "STATUS=%llu files, %llu bytes derived, %llu clients, %llu hits, %llu misses",
               (unsigned long long)st.entries, (unsigned long long)st.derived_bytes,
               (unsigned long long)st.clients, (unsigned long long)st.hits,
               (unsigned long long)st.misses);
}

static void on_status_timer(uv_timer_t *t)
{
    notify_status(t->data);
}

static void close_handle(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void on_drained(td__server *srv)
{
    daemon_state *d = (daemon_state *)((char *)srv - offsetof(daemon_state, srv));
    td__log_notice("stopped");
    td__preload_stop(d->preload);
    td__server_destroy(&d->srv);
    td__pressure_stop(&d->pressure);
    uv_walk(&d->loop, close_handle, NULL);
}

/* Memory is short: what nobody holds goes now, before the kernel has to kill anything. */
static void on_pressure(td__pressure *p, const char *why)
{
    daemon_state *d = p->data;
    td__cache_relieve(&d->srv.cache, why);
}

/* Thread-pool work ending does not call back into the server: look again now and then. */
static void on_drain_timer(uv_timer_t *t)
{
    daemon_state *d = t->data;
    td__server_check_drained(&d->srv);
}

static void on_drain_deadline(uv_timer_t *t)
{
    daemon_state *d = t->data;
    td__log_warn("requests still in flight after %d ms; exiting anyway", DRAIN_TIMEOUT_MS);
    d->srv.on_drained = NULL;
    uv_stop(&d->loop);
}

static void on_signal(uv_signal_t *s, int signum)
{
    daemon_state *d = s->data;
    if (signum == SIGHUP) {
        td__config fresh;
        td_error err = {0};
        if (load_config(d, &fresh, &err)) {
            td__log_err("reload refused, keeping the old settings: %s", err.message);
            td__preload_sync(d->preload); /* replaced files are preloaded again all the same */
            return;
        }
        td__config_destroy(&d->cfg);
        d->cfg = fresh; /* the server and cache point at d->cfg */
        td__log_set_level(d->cfg.log_level);
        td__budget_resolve(&d->cfg); /* a percentage follows the machine's memory now */
        td__cache_enforce_budget(&d->srv.cache);
        td__log_notice("configuration reloaded");
        td__preload_sync(d->preload);
        return;
    }
    if (d->srv.draining)
        return;
    td__log_notice("%s: draining", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    sd_notify(0, "STOPPING=1");
    td__preload_stop(d->preload); /* nothing more to load; what it held is evictable now */
    if (d->own_socket)
        unlink(d->socket_path);
    d->srv.on_drained = on_drained;
    td__server_drain(&d->srv);
    uv_timer_stop(&d->status_timer);
    uv_timer_start(&d->drain_timer, on_drain_timer, 50, 50);
    uv_timer_init(&d->loop, &d->deadline);
    d->deadline.data = d;
    uv_timer_start(&d->deadline, on_drain_deadline, DRAIN_TIMEOUT_MS, 0);
    uv_unref((uv_handle_t *)&d->deadline);
}

/* Binds path, or fails when a live daemon answers there. A stale socket file is replaced. */
static int bind_socket(const char *path, td_error *err)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path)
        return td__err(err, TD_EINVAL, "socket path too long (%zu), must be under %zu",
                       strlen(path), sizeof sa.sun_path);
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return td__err(err, TD_ESYS, "socket: %s", strerror(errno));
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        int e = errno;
        if (e != EADDRINUSE) {
            close(fd);
            return td__err(err, td__err_from_errno(e), "%s: bind: %s", path, strerror(e));
        }
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int live = probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof sa) == 0;
        if (probe >= 0)
            close(probe);
        struct stat st;
        if (live || (lstat(path, &st) == 0 && !S_ISSOCK(st.st_mode))) {
            close(fd);
            return td__err(err, live ? TD_EBUSY : TD_EEXIST,
                           live ? "%s: another daemon is serving this socket"
                                : "%s: exists and is not a socket",
                           path);
        }
        td__log_notice("%s: removing a stale socket", path);
        unlink(path);
        if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
            e = errno;
            close(fd);
            return td__err(err, td__err_from_errno(e), "%s: bind: %s", path, strerror(e));
        }
    }
    chmod(path, 0660);
    if (listen(fd, 128) < 0) {
        int e = errno;
        close(fd);
        unlink(path);
        return td__err(err, TD_ESYS, "%s: listen: %s", path, strerror(e));
    }
    return fd;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"socket", required_argument, NULL, 's'},
                                         {"config", required_argument, NULL, 'c'},
                                         {"max-memory", required_argument, NULL, 'm'},
                                         {"log-level", required_argument, NULL, 'l'},
                                         {"max-clients", required_argument, NULL, 'C'},
                                         {"idle-timeout", required_argument, NULL, 'i'},
                                         {"version", no_argument, NULL, 'V'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    static daemon_state d;
    char *ov[8];
    d.overrides = ov;
    d.config_path = DEFAULT_CONFIG;
    const char *env_socket = secure_getenv("TENSORD_SOCKET");
    d.socket_path = env_socket ? env_socket : TD_DEFAULT_SOCKET;
    int c;
    while ((c = getopt_long(argc, argv, "s:c:m:l:C:i:Vh", opts, NULL)) != -1) {
        const char *key = NULL;
        switch (c) {
        case 's':
            d.socket_path = optarg;
            break;
        case 'c':
            d.config_path = optarg;
            d.config_explicit = 1;
            break;
        case 'm':
            key = "max_memory";
            break;
        case 'l':
            key = "log_level";
            break;
        case 'C':
            key = "max_clients";
            break;
        case 'i':
            key = "idle_timeout";
            break;
        case 'V':
            printf("tensord %s\n", td_version_string());
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
        if (key && d.noverrides == (int)(sizeof ov / sizeof ov[0])) {
            fprintf(stderr, "tensord: too many options\n");
            return 2;
        }
        if (key) {
            size_t n = strlen(key) + strlen(optarg) + 2;
            ov[d.noverrides] = malloc(n);
            if (!ov[d.noverrides])
                return 1;
            snprintf(ov[d.noverrides++], n, "%s=%s", key, optarg);
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    /* The signals wait until the loop's handlers are in place: a SIGTERM during start-up then
     * drains like any other instead of killing the half-started daemon. */
    sigset_t sigs_mask, old_mask;
    sigemptyset(&sigs_mask);
    sigaddset(&sigs_mask, SIGTERM);
    sigaddset(&sigs_mask, SIGINT);
    sigaddset(&sigs_mask, SIGHUP);
    sigprocmask(SIG_BLOCK, &sigs_mask, &old_mask);
    td_error err = {0};
    if (load_config(&d, &d.cfg, &err)) {
        fprintf(stderr, "tensord: %s\n", err.message);
        return 1;
    }
    td__log_set_level(d.cfg.log_level);
    td__budget_resolve(&d.cfg);
    signal(SIGPIPE, SIG_IGN);
    /* A decode's scratch buffers (whole inflated members, pread copies) are counted against the
     * budget while it runs: when it ends they must really go back to the system, not stay in a
     * worker thread's malloc arena, as they would once glibc raised its mmap threshold. */
    mallopt(M_MMAP_THRESHOLD, 1 << 20);

    int fd = -1, n = sd_listen_fds(1);
    if (n > 1) {
        td__log_err("systemd passed %d sockets; expected one", n);
        return 1;
    }
    if (n == 1) {
        fd = SD_LISTEN_FDS_START;
        if (sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) <= 0) {
            td__log_err("the socket systemd passed is not a listening Unix stream socket");
            return 1;
        }
        td__log_info("serving the socket systemd passed");
    } else {
        fd = bind_socket(d.socket_path, &err);
        if (fd < 0) {
            td__log_err("%s", err.message);
            return 1;
        }
        d.own_socket = 1;
        td__log_info("serving %s", d.socket_path);
    }
    uv_loop_init(&d.loop);
    if (td__server_init(&d.srv, &d.loop, &d.cfg, fd, &err) || td__server_start(&d.srv, &err)) {
        td__log_err("%s", err.message);
        if (d.own_socket)
            unlink(d.socket_path);
        return 1;
    }
    if (!(d.preload = td__preload_new(&d.loop, &d.srv.cache, &d.cfg))) {
        td__log_err("out of memory");
        return 1;
    }
    uv_signal_t *sigs[] = {&d.sigterm, &d.sigint, &d.sighup};
    int signums[] = {SIGTERM, SIGINT, SIGHUP};
    for (int i = 0; i < 3; i++) {
        uv_signal_init(&d.loop, sigs[i]);
        sigs[i]->data = &d;
        uv_signal_start(sigs[i], on_signal, signums[i]);
    }
    sigprocmask(SIG_SETMASK, &old_mask, NULL);
    uv_timer_init(&d.loop, &d.status_timer);
    uv_timer_init(&d.loop, &d.drain_timer);
    d.status_timer.data = d.drain_timer.data = &d;
    uv_timer_start(&d.status_timer, on_status_timer, 5000, 5000);
    td__budget_base base;
    td__budget_probe(&base);
    td__pressure_start(&d.pressure, &d.loop, strcmp(base.source, "MemTotal") != 0, on_pressure, &d);
    /* Loaded on the thread pool while the daemon serves: a client asking for a preloaded file
     * meanwhile waits for the same build. */
    td__preload_sync(d.preload);
    td__log_notice("ready (budget %llu bytes, %llu per uid, max %u clients)",
                   (unsigned long long)d.cfg.max_memory,
                   (unsigned long long)d.cfg.max_memory_per_uid, d.cfg.max_clients);
    sd_notify(0, "READY=1");
    notify_status(&d);

    uv_run(&d.loop, UV_RUN_DEFAULT);
    if (!td__cache_idle(&d.srv.cache)) {
        /* The drain deadline passed with builds still running on the thread pool: they use
         * their entries until they end, so nothing may be freed under them. The kernel takes
         * back the memory, the memfds and the descriptors. */
        td__log_warn("exiting with %zu loads still being built", d.srv.cache.building);
        _exit(d.exit_code);
    }
    /* Close what uv_stop may have left, and let the close callbacks run. */
    td__preload_stop(d.preload);
    td__server_destroy(&d.srv);
    uv_walk(&d.loop, close_handle, NULL);
    uv_run(&d.loop, UV_RUN_DEFAULT);
    uv_loop_close(&d.loop);
    td__preload_free(d.preload);
    if (d.pressure.fd >= 0)
        close(d.pressure.fd); /* its handle went with the others */
    td__config_destroy(&d.cfg);
    for (int i = 0; i < d.noverrides; i++)
        free(ov[i]);
    return d.exit_code;
}

/*
 * test_preload.c - "preload PATH [MODE]" lines in tensord.conf, through a real tensord on a temp
 * socket with a temp configuration file: a single file, a Hugging Face sharded model (written
 * with td_save_model, and again in the Hugging Face cache's layout of symbolic links) and a
 * gguf-split set are cached before any client loads them, shown as preloaded by STATUS and
 * tensorctl, and a client's load of them is a hit; SIGHUP without the line lets them go
 * (evictable), with another mode builds them again in it; a preloaded file replaced by rename
 * is preloaded again without a reload; a file a client holds in another mode is kept in it, and
 * built in the line's mode once the client lets go; bad lines (a missing file, traversal in an
 * index, a directory, a FIFO, a later split, a refusal of the budget) are logged with the path and
 * the reason while the daemon goes on serving; configuration errors name the line and the value.
 */
#include "testutil.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define NT 6  /* tensors */
#define NE 64 /* float32 elements each: 256 bytes */

static char dir[64], sock[128], logp[128], conf[128];
static pid_t daemon_pid;

static void setup(void)
{
    tu_tmpdir(dir);
    snprintf(sock, sizeof sock, "%s/s", dir);
    snprintf(logp, sizeof logp, "%s/log", dir);
    snprintf(conf, sizeof conf, "%s/tensord.conf", dir);
    daemon_pid = 0;
}

static void teardown(void)
{
    if (daemon_pid > 0)
        ck_assert_int_eq(tu_daemon_stop(daemon_pid, SIGTERM), 0);
    tu_rmtree(dir);
}

/* Writes the configuration: text with every "@" replaced by the test's directory. */
static void write_conf(const char *text)
{
    char out[4096];
    size_t n = 0;
    for (const char *s = text; *s && n + sizeof dir < sizeof out; s++) {
        if (*s == '@')
            n += (size_t)snprintf(out + n, sizeof out - n, "%s", dir);
        else
            out[n++] = *s;
    }
    ck_assert_int_eq(tu_write_file(conf, out, n), 0);
}

static void start(void)
{
    char args[200];
    snprintf(args, sizeof args, "--config %s", conf);
    daemon_pid = tu_daemon_start(sock, logp, args);
}

static void reload(void)
{
    ck_assert_int_eq(kill(daemon_pid, SIGHUP), 0);
}

/* Tensor t_i holds i * 1000 + k + bias. */
static td_dict *model_dict(float bias)
{
    td_dict *d = td_dict_new();
    ck_assert(d);
    td_error err = {0};
    for (int i = 0; i < NT; i++) {
        float v[NE];
        for (int k = 0; k < NE; k++)
            v[k] = (float)(i * 1000 + k) + bias;
        int64_t shape[1] = {NE};
        td_array *a = NULL;
        TU_OK(td_array_new(TD_FLOAT32, 1, shape, v, &a, &err), &err);
        char name[16];
        snprintf(name, sizeof name, "t_%d", i);
        TU_OK(td_dict_set(d, name, a, &err), &err);
        td_array_release(a);
    }
    return d;
}

/* Saves the model as DIR/NAME: in shards of two tensors (.safetensors, .gguf) when shards. */
static void save_model(const char *name, float bias, int shards)
{
    char path[160];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    td_dict *d = model_dict(bias);
    td_save_options o = TD_SAVE_OPTIONS_INIT;
    o.max_shard_bytes = shards ? 2 * NE * sizeof(float) : 0;
    td_error err = {0};
    TU_OK(td_save_model(path, d, NULL, &o, &err), &err);
    td_dict_free(d);
}

static void check_values(const td_dict *d, float bias)
{
    ck_assert_uint_eq(td_dict_size(d), NT);
    for (int i = 0; i < NT; i++) {
        char name[16];
        snprintf(name, sizeof name, "t_%d", i);
        const td_array *a = td_dict_get(d, name);
        ck_assert_msg(a, "%s missing", name);
        ck_assert_int_eq(td_array_provenance(a), TD_PROVENANCE_DAEMON);
        const float *v = td_array_data(a);
        for (int k = 0; k < NE; k++)
            ck_assert_msg(v[k] == (float)(i * 1000 + k) + bias, "%s[%d] = %g", name, k,
                          (double)v[k]);
    }
}

static void load(const char *name, td_dict **d)
{
    char path[160];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    td_load_options o = TD_LOAD_OPTIONS_INIT;
    o.mode = TD_MODE_DAEMON;
    o.socket_path = sock;
    td_error err = {0};
    TU_OK(td_load(path, &o, d, NULL, &err), &err);
}

/* The entries STATUS lists: how many, how many preloaded, how many of those in mode. */
typedef struct counts {
    uint64_t entries, preloaded, in_mode, leases;
} counts;

static counts count(const char *mode)
{
    td_status *st = tu_daemon_status(sock);
    counts c = {td_status_nfiles(st), 0, 0, 0};
    for (size_t i = 0; i < c.entries; i++) {
        uint64_t pre = td_status_file_get(st, i, TD_STATUS_FILE_PRELOADED);
        ck_assert_uint_le(pre, 1);
        c.preloaded += pre;
        c.in_mode += pre && mode && strcmp(td_status_file_mode(st, i), mode) == 0;
        c.leases += td_status_file_get(st, i, TD_STATUS_FILE_LEASES);
    }
    td_status_free(st);
    return c;
}

/* Waits (up to 10 s) until STATUS lists entries entries, preloaded of them preloaded in mode. */
static void wait_for(uint64_t entries, uint64_t preloaded, const char *mode)
{
    counts c = {0, 0, 0, 0};
    for (int i = 0; i < 1000; i++) {
        c = count(mode);
        if (c.entries == entries && c.preloaded == preloaded && (!mode || c.in_mode == preloaded))
            return;
        usleep(10000);
    }
    ck_abort_msg("after 10 s: %llu entries, %llu preloaded (%llu in mode %s); waited for %llu, "
                 "%llu",
                 (unsigned long long)c.entries, (unsigned long long)c.preloaded,
                 (unsigned long long)c.in_mode, mode ? mode : "-", (unsigned long long)entries,
                 (unsigned long long)preloaded);
}

static uint64_t stat_of(td_status_key k)
{
    td_status *st = tu_daemon_status(sock);
    uint64_t v = td_status_get(st, k);
    td_status_free(st);
    return v;
}

/* The daemon's log so far (static buffer). */
static const char *log_text(void)
{
    static char text[1 << 16];
    size_t n = 0;
    uint8_t *p = tu_read_file(logp, &n);
    ck_assert(p);
    if (n >= sizeof text)
        n = sizeof text - 1;
    memcpy(text, p, n);
    text[n] = 0;
    free(p);
    return text;
}

/* Waits (up to 10 s) until the log holds a line with every one of the words. */
static void wait_log(const char *a, const char *b, const char *c)
{
    for (int i = 0; i < 1000; i++) {
        const char *t = log_text();
        for (const char *line = t; *line;) {
            const char *end = strchr(line, '\n');
            size_t n = end ? (size_t)(end - line) : strlen(line);
            char buf[4096];
            snprintf(buf, sizeof buf, "%.*s", (int)n, line);
            if (strstr(buf, a) && (!b || strstr(buf, b)) && (!c || strstr(buf, c)))
                return;
            line += n + (end != NULL);
        }
        usleep(10000);
    }
    ck_abort_msg("no log line with '%s', '%s', '%s' in:\n%s", a, b ? b : "", c ? c : "",
                 log_text());
}

static int evict_all(void)
{
    td_client *c;
    td_error err = {0};
    TU_OK(td_client_connect(sock, &c, &err), &err);
    uint64_t n = 0, bytes = 0;
    TU_OK(td_client_evict(c, NULL, &n, &bytes, &err), &err);
    td_client_close(c);
    return (int)n;
}

/* Runs tensorctl with args and returns its standard output (static buffer). */
static const char *tensorctl(const char *args)
{
    const char *tc = getenv("TD_TENSORCTL");
    ck_assert_msg(tc != NULL, "TD_TENSORCTL is not set");
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s --socket %s %s", tc, sock, args);
    FILE *p = popen(cmd, "r");
    ck_assert(p);
    static char out[16384];
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    ck_assert_int_eq(pclose(p), 0);
    return out;
}

/* One file, default mode (pin): warm before any client, a hit for the first client, shown by
 * tensorctl; a reload with mode snapshot builds it again in that mode; a reload without the
 * line lets it go, and an evict then takes it. */
START_TEST(test_single_file)
{
    save_model("f.safetensors", 0, 0);
    write_conf("# a comment\npreload @/f.safetensors\n");
    start();
    wait_for(1, 1, "pin");
    ck_assert_uint_eq(stat_of(TD_STATUS_MISSES), 1);
    ck_assert_uint_eq(stat_of(TD_STATUS_HITS), 0);
    ck_assert_uint_eq(stat_of(TD_STATUS_LEASES), 0); /* the daemon's hold is not a lease */
    ck_assert_int_eq(evict_all(), 0);                /* preloaded: not evictable */

    const char *out = tensorctl("status --json");
    ck_assert_msg(strstr(out, "\"mode\": \"pin\"") && strstr(out, "\"preloaded\": true"), "%s",
                  out);
    out = tensorctl("status");
    ck_assert_msg(strstr(out, "PRELOAD") && strstr(out, " pin      yes "), "%s", out);

    td_dict *d = NULL;
    load("f.safetensors", &d);
    check_values(d, 0);
    ck_assert_uint_eq(stat_of(TD_STATUS_HITS), 1);
    ck_assert_uint_eq(stat_of(TD_STATUS_MISSES), 1);
    ck_assert_uint_eq(count(NULL).leases, 1);
    td_dict_free(d);

    /* Another mode: built again in it (the pinned entry, held by nobody else, goes). */
    write_conf("preload @/f.safetensors snapshot\n");
    reload();
    wait_for(1, 1, "snapshot");
    ck_assert_uint_eq(stat_of(TD_STATUS_MISSES), 2);

    /* The line removed: let go, evictable. */
    write_conf("max_memory = 64M\n");
    reload();
    wait_for(1, 0, NULL);
    ck_assert_int_eq(evict_all(), 1);
    wait_for(0, 0, NULL);
    wait_log("preload: let go of", "f.safetensors", NULL);
}
END_TEST

/* A Hugging Face sharded model: every shard preloaded (snapshot, as the line says), a client's
 * load of the index three hits. The same model in the Hugging Face cache's layout (the index
 * and symbolic links in snapshots/REV/, the files in blobs/) preloads the same files. */
START_TEST(test_hf_sharded)
{
    save_model("m.safetensors", 0, 1);
    write_conf("preload @/m.safetensors.index.json snapshot\n");
    start();
    wait_for(3, 3, "snapshot");
    ck_assert_uint_eq(stat_of(TD_STATUS_MISSES), 3);
    td_dict *d = NULL;
    load("m.safetensors.index.json", &d);
    check_values(d, 0);
    ck_assert_uint_eq(stat_of(TD_STATUS_HITS), 3);
    ck_assert_uint_eq(stat_of(TD_STATUS_MISSES), 3);
    td_dict_free(d);
    wait_log("preload: 3 files warm", NULL, NULL);

    /* snapshots/r1/ holds the index and links to ../../blobs/. */
    char a[256], b[256];
    snprintf(a, sizeof a, "%s/blobs", dir);
    ck_assert_int_eq(mkdir(a, 0755), 0);
    snprintf(a, sizeof a, "%s/snapshots", dir);
    ck_assert_int_eq(mkdir(a, 0755), 0);
    snprintf(a, sizeof a, "%s/snapshots/r1", dir);
    ck_assert_int_eq(mkdir(a, 0755), 0);
    for (int i = 1; i <= 3; i++) {
        snprintf(a, sizeof a, "%s/m-%05d-of-00003.safetensors", dir, i);
        snprintf(b, sizeof b, "%s/blobs/sha%d", dir, i);
        ck_assert_int_eq(rename(a, b), 0);
        snprintf(a, sizeof a, "%s/snapshots/r1/m-%05d-of-00003.safetensors", dir, i);
        snprintf(b, sizeof b, "../../blobs/sha%d", i);
        ck_assert_int_eq(symlink(b, a), 0);
    }
    snprintf(a, sizeof a, "%s/m.safetensors.index.json", dir);
    snprintf(b, sizeof b, "%s/snapshots/r1/m.safetensors.index.json", dir);
    ck_assert_int_eq(rename(a, b), 0);
    write_conf("preload @/snapshots/r1/m.safetensors.index.json\n");
    reload();
    wait_for(3, 3, "pin"); /* the same files (renamed, not changed), in the default mode */
    load("snapshots/r1/m.safetensors.index.json", &d);
    check_values(d, 0);
    td_status *st = tu_daemon_status(sock);
    for (size_t i = 0; i < td_status_nfiles(st); i++)
        ck_assert_msg(strstr(td_status_file_name(st, i), "/blobs/sha"), "%s",
                      td_status_file_name(st, i));
    td_status_free(st);
    td_dict_free(d);
}
END_TEST

/* A gguf-split set, from its first split: every split preloaded, in snapshot mode because a
 * mode rule says so for the directory; a client's load of the set is three hits. */
START_TEST(test_gguf_split)
{
    save_model("g.gguf", 0, 1);
    write_conf("mode @/ = snapshot\npreload @/g-00001-of-00003.gguf\n");
    start();
    wait_for(3, 3, "snapshot");
    td_dict *d = NULL;
    load("g-00001-of-00003.gguf", &d);
    check_values(d, 0);
    ck_assert_uint_eq(stat_of(TD_STATUS_HITS), 3);
    ck_assert_uint_eq(stat_of(TD_STATUS_MISSES), 3);
    td_dict_free(d);
}
END_TEST

/* Bad lines are logged with the path and the reason, and the daemon goes on: it preloads the
 * good line and serves clients. */
START_TEST(test_bad_lines)
{
    save_model("good.safetensors", 0, 0);
    save_model("g.gguf", 0, 1);
    save_model("m.safetensors", 0, 1);
    char path[256];
    snprintf(path, sizeof path, "%s/h.safetensors.index.json", dir);
    const char *hostile = "{\"metadata\": {}, \"weight_map\": {\"t_0\": \"../x.safetensors\"}}";
    ck_assert_int_eq(tu_write_file(path, hostile, strlen(hostile)), 0);
    /* An index whose second shard is a directory and whose third is a FIFO. */
    snprintf(path, sizeof path, "%s/d.safetensors.index.json", dir);
    const char *index = "{\"weight_map\": {\"t_0\": \"m-00001-of-00003.safetensors\", "
                        "\"t_2\": \"sub\", \"t_4\": \"fifo\"}}";
    ck_assert_int_eq(tu_write_file(path, index, strlen(index)), 0);
    snprintf(path, sizeof path, "%s/sub", dir);
    ck_assert_int_eq(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/fifo", dir);
    ck_assert_int_eq(mkfifo(path, 0644), 0);
    write_conf("preload @/missing.safetensors\n"
               "preload @/h.safetensors.index.json\n"
               "preload @/sub\n"
               "preload @/fifo\n"
               "preload @/g-00002-of-00003.gguf\n"
               "preload @/d.safetensors.index.json pin\n"
               "preload @/nodir/x.gguf\n"
               "preload @/good.safetensors\n");
    start();
    /* good.safetensors and the first shard of d's index */
    wait_for(2, 2, "pin");
    wait_log("missing.safetensors", "cannot open", "No such file");
    wait_log("h.safetensors.index.json", "../x.safetensors", NULL);
    wait_log("/sub", "not a regular file", NULL);
    wait_log("/fifo", "not a regular file", NULL);
    wait_log("g-00002-of-00003.gguf", "g-00001-of-00003.gguf", NULL);
    wait_log("d.safetensors.index.json", "sub: not a regular file", NULL);
    wait_log("d.safetensors.index.json", "fifo: not a regular file", NULL);
    wait_log("nodir/x.gguf", "cannot open its directory", NULL);
    wait_log("preload: 2 files warm", "8 failed", NULL);
    td_client *c;
    td_error err = {0};
    TU_OK(td_client_connect(sock, &c, &err), &err);
    TU_OK(td_client_ping(c, &err), &err);
    td_client_close(c);
    td_dict *d = NULL;
    load("good.safetensors", &d);
    check_values(d, 0);
    ck_assert_uint_eq(stat_of(TD_STATUS_HITS), 1);
    td_dict_free(d);
    /* The missing file appears: the daemon sees it in the watched directory and preloads it
     * without a reload. */
    save_model("missing.safetensors", 0, 0);
    wait_for(3, 3, "pin");
}
END_TEST

/* A preloaded file replaced by rename is preloaded again (the directory is watched; no reload
 * needed), and the old entry goes once nobody holds it; a client still holding the old one
 * keeps its arrays. */
START_TEST(test_replace)
{
    save_model("f.safetensors", 0, 0);
    write_conf("preload @/f.safetensors\n");
    start();
    wait_for(1, 1, "pin");
    td_dict *old = NULL, *cur = NULL;
    load("f.safetensors", &old);
    char tmp[160], path[160];
    snprintf(tmp, sizeof tmp, "%s/new.safetensors", dir);
    snprintf(path, sizeof path, "%s/f.safetensors", dir);
    td_dict *n = model_dict(0.5f);
    td_error err = {0};
    TU_OK(td_save_safetensors(tmp, n, NULL, &err), &err);
    td_dict_free(n);
    ck_assert_int_eq(rename(tmp, path), 0);
    /* the new file preloaded; the old entry kept by the client's lease */
    wait_for(2, 1, "pin");
    uint64_t misses = stat_of(TD_STATUS_MISSES);
    ck_assert_uint_eq(misses, 2);
    load("f.safetensors", &cur);
    check_values(cur, 0.5f);
    ck_assert_uint_eq(stat_of(TD_STATUS_MISSES), misses); /* a hit */
    check_values(old, 0);
    td_dict_free(old);
    wait_for(1, 1, "pin"); /* the replaced file's entry went with its last lease */
    td_dict_free(cur);
}
END_TEST

/* A file a client holds in another mode when its preload line comes: kept warm in the client's
 * mode while the client holds it, built in the line's mode once it lets go (no reload). */
START_TEST(test_client_first)
{
    save_model("f.safetensors", 0, 0);
    write_conf("max_memory = 64M\n");
    start();
    td_dict *d = NULL;
    load("f.safetensors", &d); /* map: no rule says otherwise */
    write_conf("preload @/f.safetensors\n");
    reload();
    wait_for(1, 1, "map");
    wait_log("f.safetensors", "held by clients", "built in mode pin once they let go");
    check_values(d, 0);
    td_dict_free(d);
    wait_for(1, 1, "pin"); /* looked at again every 5 s */
    ck_assert_uint_eq(stat_of(TD_STATUS_MISSES), 2);
}
END_TEST

/* Preloaded bytes count against the budget (and the daemon's uid's quota): a pin over the
 * budget is refused and logged, the daemon goes on. */
START_TEST(test_budget)
{
    save_model("f.safetensors", 0, 0);
    save_model("big.safetensors", 0, 0);
    write_conf("max_memory = 1000\nmax_memory_per_uid = none\n"
               "preload @/big.safetensors pin\n");
    start();
    wait_log("preload", "big.safetensors", "more than the whole memory budget");
    wait_for(0, 0, NULL);
    td_dict *d = NULL;
    load("f.safetensors", &d); /* map mode: no budget needed */
    check_values(d, 0);
    td_dict_free(d);
}
END_TEST

/* Configuration errors name the file, the line and the value, and the daemon does not start. */
START_TEST(test_config_errors)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"preload relative/x.gguf\n", ":1: preload: path 'relative/x.gguf' is not an absolute"},
        {"\npreload /x.gguf map\n", ":2: preload /x.gguf: mode 'map' is not pin or snapshot"},
        {"preload /x.gguf fast\n", "mode 'fast' is not pin or snapshot"},
        {"preload /x y.gguf pin\n", "'pin' is one word too many"},
        {"preload\n", "expected 'preload PATH [pin|snapshot]'"},
    };
    const char *build = getenv("TD_BUILD_DIR");
    ck_assert(build);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_conf(cases[i].text);
        char cmd[600];
        snprintf(cmd, sizeof cmd, "%s/daemon/tensord --socket %s --config %s 2>&1", build, sock,
                 conf);
        FILE *p = popen(cmd, "r");
        ck_assert(p);
        char out[2048];
        size_t n = fread(out, 1, sizeof out - 1, p);
        out[n] = 0;
        int st = pclose(p);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 1, "%s: status %d", cases[i].text, st);
        ck_assert_msg(strstr(out, conf) && strstr(out, cases[i].want), "%s: %s", cases[i].text,
                      out);
    }
    /* A bad line at a reload is refused as a whole: the old lines stay. */
    save_model("f.safetensors", 0, 0);
    write_conf("preload @/f.safetensors\n");
    start();
    wait_for(1, 1, "pin");
    write_conf("preload f.safetensors\n");
    reload();
    wait_log("reload refused", "is not an absolute path", NULL);
    wait_for(1, 1, "pin");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("preload");
    TCase *tc = tcase_create("preload");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_single_file);
    tcase_add_test(tc, test_hf_sharded);
    tcase_add_test(tc, test_gguf_split);
    tcase_add_test(tc, test_bad_lines);
    tcase_add_test(tc, test_replace);
    tcase_add_test(tc, test_client_first);
    tcase_add_test(tc, test_budget);
    tcase_add_test(tc, test_config_errors);
    suite_add_tcase(s, tc);
    return tu_run(s);
}

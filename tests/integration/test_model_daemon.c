/*
 * test_model_daemon.c - models of several files through a real tensord on a temp socket: a
 * sharded safetensors model (written with td_save_model) shared by two client processes, one
 * cache entry per shard; a gguf-split set; two models sharing a shard share its entry; a
 * hostile index refused before anything reaches the daemon; a missing shard named; a shard
 * replaced by rename gives the new data on the next load while the old arrays stay valid.
 * Through a kept td_client: the model kept (nothing indexed or checked again while its files
 * are unchanged, each shard's table left out of the replies), read again when a shard or the
 * index changes, bounded, shared by threads, and nothing left behind after close.
 */
#include "meta_internal.h"
#include "remote.h"
#include "testutil.h"

#include <fcntl.h>
#include <pthread.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define NT 6  /* tensors */
#define NE 64 /* float32 elements each: 256 bytes */

static char dir[64], sock[128], logp[128];
static pid_t daemon_pid;

static void setup(void)
{
    tu_tmpdir(dir);
    snprintf(sock, sizeof sock, "%s/s", dir);
    snprintf(logp, sizeof logp, "%s/log", dir);
    daemon_pid = tu_daemon_start(sock, logp, NULL);
}

static void teardown(void)
{
    ck_assert_int_eq(tu_daemon_stop(daemon_pid, SIGTERM), 0);
    tu_rmtree(dir);
}

/* Tensors t_first .. t_(last - 1); t_i holds i * 1000 + k + bias. */
static td_dict *tensors_dict(int first, int last, float bias)
{
    td_dict *d = td_dict_new();
    ck_assert(d);
    td_error err = {0};
    for (int i = first; i < last; i++) {
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

/* The whole model's tensors. */
static td_dict *model_dict(float bias)
{
    return tensors_dict(0, NT, bias);
}

/* Saves the model as NAME (.safetensors or .gguf) in shards of two tensors each, with meta
 * (NULL: none). */
static void save_model_meta(const char *name, float bias, const td_meta *meta)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    td_dict *d = model_dict(bias);
    td_save_options o = TD_SAVE_OPTIONS_INIT;
    o.max_shard_bytes = 2 * NE * sizeof(float);
    td_error err = {0};
    TU_OK(td_save_model(path, d, meta, &o, &err), &err);
    td_dict_free(d);
}

static void save_model(const char *name, float bias)
{
    save_model_meta(name, bias, NULL);
}

static int load(const char *name, td_load_mode mode, td_dict **d, td_error *err)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    td_load_options o = TD_LOAD_OPTIONS_INIT;
    o.mode = mode;
    o.socket_path = sock;
    return td_load(path, &o, d, NULL, err);
}

/* Every tensor of d has its values (bias) and provenance prov. */
static void check_values(const td_dict *d, float bias, td_provenance prov)
{
    ck_assert_uint_eq(td_dict_size(d), NT);
    for (int i = 0; i < NT; i++) {
        char name[16];
        snprintf(name, sizeof name, "t_%d", i);
        const td_array *a = td_dict_get(d, name);
        ck_assert_msg(a, "%s missing", name);
        ck_assert_int_eq(td_array_provenance(a), prov);
        const float *v = td_array_data(a);
        for (int k = 0; k < NE; k++)
            ck_assert_msg(v[k] == (float)(i * 1000 + k) + bias, "%s[%d] = %g", name, k,
                          (double)v[k]);
    }
}

static uint64_t stat_of(td_status_key k)
{
    td_status *st = tu_daemon_status(sock);
    uint64_t v = td_status_get(st, k);
    td_status_free(st);
    return v;
}

/* Waits (up to 5 s) for the daemon to count want leases. */
static void wait_leases(uint64_t want)
{
    uint64_t v = 0;
    for (int i = 0; i < 500 && (v = stat_of(TD_STATUS_LEASES)) != want; i++)
        usleep(10000);
    ck_assert_uint_eq(v, want);
}

START_TEST(test_sharded_two_processes)
{
    save_model("m.safetensors", 0);
    td_error err = {0};
    td_dict *d = NULL;
    TU_OK(load("m.safetensors.index.json", TD_MODE_DAEMON, &d, &err), &err);
    check_values(d, 0, TD_PROVENANCE_DAEMON);
    /* one entry, one parse and one lease per shard */
    td_status *st = tu_daemon_status(sock);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_ENTRIES), 3);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_MISSES), 3);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_LEASES), 3);
    ck_assert_uint_eq(td_status_nfiles(st), 3);
    for (size_t i = 0; i < 3; i++)
        ck_assert_uint_eq(td_status_file_get(st, i, TD_STATUS_FILE_TENSORS), 2);
    td_status_free(st);

    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        td_dict *c = NULL;
        td_error e2 = {0};
        if (load("m.safetensors.index.json", TD_MODE_DAEMON, &c, &e2) != 0)
            _exit(2);
        check_values(c, 0, TD_PROVENANCE_DAEMON);
        /* both processes hold the model: 6 leases */
        td_status *s2 = tu_daemon_status(sock);
        int ok = td_status_get(s2, TD_STATUS_LEASES) == 6;
        td_status_free(s2);
        _exit(ok ? 0 : 3); /* the leases go with the process */
    }
    int ws;
    ck_assert_int_eq(waitpid(child, &ws, 0), child);
    ck_assert_msg(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "child: %d", ws);
    wait_leases(3);
    st = tu_daemon_status(sock);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_ENTRIES), 3);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_MISSES), 3);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_HITS), 3);
    td_status_free(st);
    td_dict_free(d);
    wait_leases(0);
}
END_TEST

START_TEST(test_gguf_split_set)
{
    save_model("g.gguf", 0);
    td_error err = {0};
    td_dict *d = NULL;
    TU_OK(load("g-00001-of-00003.gguf", TD_MODE_DAEMON, &d, &err), &err);
    check_values(d, 0, TD_PROVENANCE_DAEMON);
    ck_assert_uint_eq(stat_of(TD_STATUS_ENTRIES), 3);
    ck_assert_uint_eq(stat_of(TD_STATUS_LEASES), 3);
    td_dict_free(d);
    /* a later split is refused client-side, naming the first */
    ck_assert_int_ne(load("g-00002-of-00003.gguf", TD_MODE_DAEMON, &d, &err), 0);
    ck_assert_msg(strstr(err.message, "g-00001-of-00003.gguf"), "%s", err.message);
    wait_leases(0);
}
END_TEST

static void write_file(const char *name, const char *text)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    ck_assert(f);
    fputs(text, f);
    ck_assert_int_eq(fclose(f), 0);
}

START_TEST(test_shared_shard)
{
    save_model("m.safetensors", 0);
    /* a second index naming the same second shard and a shard of its own */
    td_error err = {0};
    td_dict *one = NULL, *two = NULL;
    TU_OK(load("m-00002-of-00003.safetensors", TD_MODE_EMBEDDED, &one, &err), &err);
    char path[128];
    snprintf(path, sizeof path, "%s/other.safetensors", dir);
    td_dict *o = td_dict_new();
    float v[NE] = {0};
    int64_t shape[1] = {NE};
    td_array *a = NULL;
    TU_OK(td_array_new(TD_FLOAT32, 1, shape, v, &a, &err), &err);
    TU_OK(td_dict_set(o, "other", a, &err), &err);
    td_array_release(a);
    TU_OK(td_save_safetensors(path, o, NULL, &err), &err);
    td_dict_free(o);
    td_dict_free(one);
    write_file("n.safetensors.index.json", "{\"metadata\": {\"total_size\": 768}, \"weight_map\": {"
                                           "\"t_2\": \"m-00002-of-00003.safetensors\", "
                                           "\"t_3\": \"m-00002-of-00003.safetensors\", "
                                           "\"other\": \"other.safetensors\"}}");
    TU_OK(load("m.safetensors.index.json", TD_MODE_DAEMON, &one, &err), &err);
    TU_OK(load("n.safetensors.index.json", TD_MODE_DAEMON, &two, &err), &err);
    ck_assert_uint_eq(td_dict_size(two), 3);
    ck_assert(td_dict_get(two, "t_3"));
    ck_assert_int_eq(td_array_provenance(td_dict_get(two, "other")), TD_PROVENANCE_DAEMON);
    td_status *st = tu_daemon_status(sock);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_ENTRIES), 4); /* 3 + other */
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_HITS), 1);    /* the shared shard */
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_LEASES), 5);
    td_status_free(st);
    td_dict_free(one);
    td_dict_free(two);
    wait_leases(0);
}
END_TEST

START_TEST(test_hostile_and_missing)
{
    save_model("m.safetensors", 0);
    write_file("h.safetensors.index.json",
               "{\"metadata\": {}, \"weight_map\": {\"t_0\": \"../x.safetensors\"}}");
    td_error err = {0};
    td_dict *d = NULL;
    ck_assert_int_ne(load("h.safetensors.index.json", TD_MODE_DAEMON, &d, &err), 0);
    ck_assert_msg(strstr(err.message, "../x.safetensors"), "%s", err.message);
    char path[128];
    snprintf(path, sizeof path, "%s/m-00003-of-00003.safetensors", dir);
    ck_assert_int_eq(unlink(path), 0);
    ck_assert_int_ne(load("m.safetensors.index.json", TD_MODE_DAEMON, &d, &err), 0);
    ck_assert_msg(strstr(err.message, "m-00003-of-00003.safetensors"), "%s", err.message);
    /* neither reached the daemon: refused before anything was sent */
    td_status *st = tu_daemon_status(sock);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_MISSES), 0);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_ERRORS), 0);
    td_status_free(st);
}
END_TEST

START_TEST(test_replace_shard)
{
    save_model("m.safetensors", 0);
    td_error err = {0};
    td_dict *old = NULL, *cur = NULL, *s2 = NULL;
    TU_OK(load("m.safetensors.index.json", TD_MODE_DAEMON, &old, &err), &err);
    /* the second shard again with other values, renamed over it */
    TU_OK(load("m-00002-of-00003.safetensors", TD_MODE_EMBEDDED, &s2, &err), &err);
    td_dict *n = td_dict_new();
    for (size_t i = 0; i < td_dict_size(s2); i++) {
        const char *name;
        const td_array *a = td_dict_at(s2, i, &name);
        float v[NE];
        memcpy(v, td_array_data(a), sizeof v);
        for (int k = 0; k < NE; k++)
            v[k] += 0.5f;
        int64_t shape[1] = {NE};
        td_array *b = NULL;
        TU_OK(td_array_new(TD_FLOAT32, 1, shape, v, &b, &err), &err);
        TU_OK(td_dict_set(n, name, b, &err), &err);
        td_array_release(b);
    }
    td_dict_free(s2);
    char tmp[128], path[128];
    snprintf(tmp, sizeof tmp, "%s/new.safetensors", dir);
    snprintf(path, sizeof path, "%s/m-00002-of-00003.safetensors", dir);
    TU_OK(td_save_safetensors(tmp, n, NULL, &err), &err);
    td_dict_free(n);
    ck_assert_int_eq(rename(tmp, path), 0);

    TU_OK(load("m.safetensors.index.json", TD_MODE_DAEMON, &cur, &err), &err);
    for (int i = 0; i < NT; i++) {
        char name[16];
        snprintf(name, sizeof name, "t_%d", i);
        const float *v = td_array_data(td_dict_get(cur, name));
        float bias = i == 2 || i == 3 ? 0.5f : 0;
        ck_assert_msg(v[1] == (float)(i * 1000 + 1) + bias, "%s: %g", name, (double)v[1]);
    }
    check_values(old, 0, TD_PROVENANCE_DAEMON);      /* the old arrays keep the old file's bytes */
    ck_assert_uint_eq(stat_of(TD_STATUS_MISSES), 4); /* the new shard was parsed */
    td_dict_free(old);
    td_dict_free(cur);
    wait_leases(0);
    /* the replaced shard's entry goes once nobody holds it (inotify on its path) */
    uint64_t entries = 0;
    for (int i = 0; i < 500 && (entries = stat_of(TD_STATUS_ENTRIES)) != 3; i++)
        usleep(10000);
    ck_assert_uint_eq(entries, 3);
}
END_TEST

START_TEST(test_client_load)
{
    save_model("m.safetensors", 0);
    save_model("g.gguf", 0);
    td_error err = {0};
    td_client *c = NULL;
    TU_OK(td_client_connect(sock, &c, &err), &err);
    char path[128];
    snprintf(path, sizeof path, "%s/m.safetensors.index.json", dir);
    td_load_options o = TD_LOAD_OPTIONS_INIT;
    td_dict *d = NULL, *g = NULL;
    TU_OK(td_client_load(c, path, &o, &d, NULL, &err), &err);
    snprintf(path, sizeof path, "%s/g-00001-of-00003.gguf", dir);
    TU_OK(td_client_load(c, path, &o, &g, NULL, &err), &err);
    check_values(d, 0, TD_PROVENANCE_DAEMON);
    check_values(g, 0, TD_PROVENANCE_DAEMON);
    ck_assert_uint_eq(stat_of(TD_STATUS_LEASES), 6);
    td_dict_free(d); /* every file's lease goes back with the model's last array */
    wait_leases(3);
    td_dict_free(g);
    TU_OK(td_client_ping(c, &err), &err); /* reads the RELEASEs' replies */
    wait_leases(0);
    td_client_close(c);
}
END_TEST

/* What a td_client keeps of a model (client/remote_model.c): its figures. */
enum { INDEXED, REUSED, CHECKED, LEFT_OUT };
static uint64_t kept_figure(td_client *c, int which)
{
    td__kmodels *ms = td__client_kmodels(c);
    atomic_uint_least64_t *f[] = {&ms->indexed, &ms->reused, &ms->checked, &ms->left_out};
    return atomic_load(f[which]);
}

static int client_load(td_client *c, const char *name, td_dict **d, td_meta **m, td_error *err)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    td_load_options o = TD_LOAD_OPTIONS_INIT;
    return td_client_load(c, path, &o, d, m, err);
}

/* a and b hold the same names in the same order, with the same dtypes, shapes and bytes. */
static void same_dicts(const td_dict *a, const td_dict *b)
{
    ck_assert_uint_eq(td_dict_size(a), td_dict_size(b));
    for (size_t i = 0; i < td_dict_size(a); i++) {
        const char *na, *nb;
        const td_array *x = td_dict_at(a, i, &na), *y = td_dict_at(b, i, &nb);
        ck_assert_str_eq(na, nb);
        ck_assert_ptr_eq(td_dict_get(b, na), y);
        ck_assert_int_eq(td_array_dtype(x), td_array_dtype(y));
        ck_assert_int_eq(td_array_ndim(x), td_array_ndim(y));
        for (int k = 0; k < td_array_ndim(x); k++)
            ck_assert_int_eq(td_array_shape(x)[k], td_array_shape(y)[k]);
        ck_assert_uint_eq(td_array_nbytes(x), td_array_nbytes(y));
        ck_assert(memcmp(td_array_data(x), td_array_data(y), td_array_nbytes(x)) == 0);
    }
}

/* Repeated loads of a model through one td_client: the first indexes it, the next ones find it
 * kept (no index or shard header read again, no check of the daemon's tables again: the same
 * entries), each shard's LOAD names the table kept for it and its reply leaves it out. Dicts and
 * metadata are those of the first load, and of an embedded load. */
START_TEST(test_client_kept_model)
{
    td_error err = {0};
    td_meta *meta = td_meta_new();
    TU_OK(td_meta_set_string(meta, "format", "pt", 2, &err), &err);
    TU_OK(td_meta_set_string(meta, "note", "kept", 4, &err), &err);
    save_model_meta("m.safetensors", 0, meta);
    td_meta_free(meta);
    char path[128];
    snprintf(path, sizeof path, "%s/m.safetensors.index.json", dir);
    td_load_options e = TD_LOAD_OPTIONS_INIT;
    e.mode = TD_MODE_EMBEDDED;
    td_dict *d0 = NULL, *d1 = NULL, *d2 = NULL;
    td_meta *m0 = NULL, *m1 = NULL, *m2 = NULL;
    TU_OK(td_load(path, &e, &d0, &m0, &err), &err);
    ck_assert_uint_ge(td_meta_size(m0), 2);

    td_client *c = NULL;
    TU_OK(td_client_connect(sock, &c, &err), &err);
    TU_OK(client_load(c, "m.safetensors.index.json", &d1, &m1, &err), &err);
    ck_assert_uint_eq(kept_figure(c, INDEXED), 1);
    ck_assert_uint_eq(kept_figure(c, REUSED), 0);
    ck_assert_uint_eq(kept_figure(c, CHECKED), 1);
    ck_assert_uint_eq(kept_figure(c, LEFT_OUT), 0);
    ck_assert_uint_eq(td__kmodels_count(td__client_kmodels(c)), 1);
    TU_OK(client_load(c, "m.safetensors.index.json", &d2, &m2, &err), &err);
    ck_assert_uint_eq(kept_figure(c, INDEXED), 1);
    ck_assert_uint_eq(kept_figure(c, REUSED), 1);
    ck_assert_uint_eq(kept_figure(c, CHECKED), 1);
    ck_assert_uint_eq(kept_figure(c, LEFT_OUT), 3); /* each shard's table, kept */
    check_values(d1, 0, TD_PROVENANCE_DAEMON);
    check_values(d2, 0, TD_PROVENANCE_DAEMON);
    same_dicts(d0, d1);
    same_dicts(d1, d2);
    ck_assert(td__meta_equal(m0, m1));
    ck_assert(td__meta_equal(m1, m2));
    ck_assert_ptr_ne(m1, m2);
    /* Two loads held at once: arrays of their own over one mapping of each shard, and one of
     * each shard's table. */
    ck_assert_ptr_ne(td_dict_get(d1, "t_0"), td_dict_get(d2, "t_0"));
    ck_assert_ptr_eq(td_array_data(td_dict_get(d1, "t_0")), td_array_data(td_dict_get(d2, "t_0")));
    for (int i = 1; i <= 3; i++) {
        char table[160];
        snprintf(table, sizeof table, "m-%05d-of-00003.safetensors (table)", i);
        ck_assert_int_eq(tu_count_maps(table), 1);
    }
    ck_assert_uint_eq(stat_of(TD_STATUS_LEASES), 6);
    /* A dict over the kept names grows like any other, and leaves the other loads' alone. */
    int64_t shape[1] = {1};
    float one = 1;
    td_array *x = NULL;
    TU_OK(td_array_new(TD_FLOAT32, 1, shape, &one, &x, &err), &err);
    TU_OK(td_dict_set(d2, "extra", x, &err), &err);
    ck_assert_int_eq(td_dict_set(d2, "t_1", x, &err), TD_EDUP);
    td_array_release(x);
    ck_assert_ptr_nonnull(td_dict_get(d2, "extra"));
    ck_assert_ptr_nonnull(td_dict_get(d2, "t_5"));
    ck_assert_ptr_null(td_dict_get(d1, "extra"));
    ck_assert_uint_eq(td_dict_size(d1), NT);
    td_dict_free(d1);
    td_dict_free(d2);
    td_meta_free(m1);
    td_meta_free(m2);

    /* A gguf-split set, from its first split, the same way (its metadata without split.*). */
    save_model("g.gguf", 0);
    snprintf(path, sizeof path, "%s/g-00001-of-00003.gguf", dir);
    td_dict_free(d0);
    td_meta_free(m0);
    TU_OK(td_load(path, &e, &d0, &m0, &err), &err);
    for (int i = 0; i < 3; i++) {
        TU_OK(client_load(c, "g-00001-of-00003.gguf", &d1, &m1, &err), &err);
        check_values(d1, 0, TD_PROVENANCE_DAEMON);
        same_dicts(d0, d1);
        ck_assert(td__meta_equal(m0, m1));
        ck_assert_ptr_null(td_meta_get(m1, "split.count"));
        td_dict_free(d1);
        td_meta_free(m1);
    }
    ck_assert_uint_eq(kept_figure(c, INDEXED), 2);
    ck_assert_uint_eq(kept_figure(c, REUSED), 3);
    ck_assert_uint_eq(td__kmodels_count(td__client_kmodels(c)), 2);
    td_dict_free(d0);
    td_meta_free(m0);

    /* The daemon restarts: a new connection and new entries. The files are the same, so the
     * model is not indexed again, but the new tables are checked against it once. */
    ck_assert_int_eq(tu_daemon_stop(daemon_pid, SIGTERM), 0);
    daemon_pid = tu_daemon_start(sock, logp, NULL);
    uint64_t checked = kept_figure(c, CHECKED);
    for (int i = 0; i < 2; i++) {
        TU_OK(client_load(c, "m.safetensors.index.json", &d1, NULL, &err), &err);
        check_values(d1, 0, TD_PROVENANCE_DAEMON);
        td_dict_free(d1);
    }
    ck_assert_uint_eq(kept_figure(c, INDEXED), 2);
    ck_assert_uint_eq(kept_figure(c, REUSED), 5);
    ck_assert_uint_eq(kept_figure(c, CHECKED), checked + 1);

    /* A child after fork() loads through the same client on a connection of its own. */
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        td_dict *cd = NULL;
        td_error e2 = {0};
        if (client_load(c, "m.safetensors.index.json", &cd, NULL, &e2) != 0)
            _exit(2);
        check_values(cd, 0, TD_PROVENANCE_DAEMON);
        td_dict_free(cd);
        _exit(kept_figure(c, REUSED) == 6 ? 0 : 3);
    }
    int ws;
    ck_assert_int_eq(waitpid(child, &ws, 0), child);
    ck_assert_msg(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "child: %d", ws);
    td_client_close(c);
    wait_leases(0);
}
END_TEST

/* A shard replaced by rename between two loads through a td_client: the kept model is not used
 * (the shard's id changed), the model is indexed again and the new data comes; the arrays of
 * the first load keep the old bytes. Then the new model is kept in turn. */
START_TEST(test_client_kept_shard_replaced)
{
    save_model("m.safetensors", 0);
    td_error err = {0};
    td_client *c = NULL;
    TU_OK(td_client_connect(sock, &c, &err), &err);
    td_dict *old = NULL, *cur = NULL;
    TU_OK(client_load(c, "m.safetensors.index.json", &old, NULL, &err), &err);
    TU_OK(client_load(c, "m.safetensors.index.json", &cur, NULL, &err), &err);
    td_dict_free(cur);
    ck_assert_uint_eq(kept_figure(c, REUSED), 1);

    /* the second shard (t_2, t_3) again, 0.5 higher, saved aside and renamed over it */
    td_dict *n = tensors_dict(2, 4, 0.5f);
    char tmp[128], path[128];
    snprintf(tmp, sizeof tmp, "%s/new.safetensors", dir);
    snprintf(path, sizeof path, "%s/m-00002-of-00003.safetensors", dir);
    TU_OK(td_save_safetensors(tmp, n, NULL, &err), &err);
    td_dict_free(n);
    ck_assert_int_eq(rename(tmp, path), 0);

    TU_OK(client_load(c, "m.safetensors.index.json", &cur, NULL, &err), &err);
    ck_assert_uint_eq(kept_figure(c, INDEXED), 2);
    ck_assert_uint_eq(kept_figure(c, REUSED), 1);
    for (int i = 0; i < NT; i++) {
        char name[16];
        snprintf(name, sizeof name, "t_%d", i);
        const float *v = td_array_data(td_dict_get(cur, name));
        float bias = i == 2 || i == 3 ? 0.5f : 0;
        ck_assert_msg(v[1] == (float)(i * 1000 + 1) + bias, "%s: %g", name, (double)v[1]);
    }
    check_values(old, 0, TD_PROVENANCE_DAEMON); /* the old arrays keep the old file's bytes */
    td_dict_free(cur);
    TU_OK(client_load(c, "m.safetensors.index.json", &cur, NULL, &err), &err);
    ck_assert_uint_eq(kept_figure(c, REUSED), 2);
    ck_assert_float_eq(((const float *)td_array_data(td_dict_get(cur, "t_3")))[0], 3000.5f);
    ck_assert_uint_eq(td__kmodels_count(td__client_kmodels(c)), 1);
    td_dict_free(cur);
    td_dict_free(old);
    td_client_close(c);
    wait_leases(0);
}
END_TEST

/* The index rewritten between loads through a td_client is read again: another shard list gives
 * another model; a hostile one is refused before anything reaches the daemon, and so is a
 * missing shard, named; what was kept for the path goes. */
START_TEST(test_client_kept_index_rewritten)
{
    save_model("m.safetensors", 0);
    td_error err = {0};
    td_client *c = NULL;
    TU_OK(td_client_connect(sock, &c, &err), &err);
    td_dict *d = NULL;
    TU_OK(client_load(c, "m.safetensors.index.json", &d, NULL, &err), &err);
    ck_assert_uint_eq(td_dict_size(d), NT);
    td_dict_free(d);
    wait_leases(0);

    /* a new index, renamed over the old one: the first and third shards only */
    write_file("new.json", "{\"metadata\": {}, \"weight_map\": {"
                           "\"t_0\": \"m-00001-of-00003.safetensors\", "
                           "\"t_1\": \"m-00001-of-00003.safetensors\", "
                           "\"t_4\": \"m-00003-of-00003.safetensors\", "
                           "\"t_5\": \"m-00003-of-00003.safetensors\"}}");
    char from[128], to[128];
    snprintf(from, sizeof from, "%s/new.json", dir);
    snprintf(to, sizeof to, "%s/m.safetensors.index.json", dir);
    ck_assert_int_eq(rename(from, to), 0);
    TU_OK(client_load(c, "m.safetensors.index.json", &d, NULL, &err), &err);
    ck_assert_uint_eq(kept_figure(c, INDEXED), 2);
    ck_assert_uint_eq(kept_figure(c, REUSED), 0);
    ck_assert_uint_eq(td_dict_size(d), 4);
    ck_assert_ptr_null(td_dict_get(d, "t_2"));
    ck_assert_float_eq(((const float *)td_array_data(td_dict_get(d, "t_4")))[1], 4001.0f);
    ck_assert_uint_eq(stat_of(TD_STATUS_LEASES), 2);
    td_dict_free(d);
    wait_leases(0);

    /* rewritten in place (not renamed) as a hostile index: refused before anything is sent,
     * and what was kept for the path goes */
    uint64_t misses = stat_of(TD_STATUS_MISSES), hits = stat_of(TD_STATUS_HITS),
             errors = stat_of(TD_STATUS_ERRORS);
    write_file("m.safetensors.index.json",
               "{\"metadata\": {}, \"weight_map\": {\"t_0\": \"../x.safetensors\"}}");
    ck_assert_int_ne(client_load(c, "m.safetensors.index.json", &d, NULL, &err), 0);
    ck_assert_msg(strstr(err.message, "../x.safetensors"), "%s", err.message);
    ck_assert_uint_eq(td__kmodels_count(td__client_kmodels(c)), 0);
    ck_assert_uint_eq(stat_of(TD_STATUS_MISSES), misses);
    ck_assert_uint_eq(stat_of(TD_STATUS_HITS), hits);
    ck_assert_uint_eq(stat_of(TD_STATUS_ERRORS), errors);
    /* a good index again, kept; then one of its shards gone: named, nothing sent */
    write_file("m.safetensors.index.json", "{\"metadata\": {}, \"weight_map\": {"
                                           "\"t_0\": \"m-00001-of-00003.safetensors\", "
                                           "\"t_1\": \"m-00001-of-00003.safetensors\", "
                                           "\"t_4\": \"m-00003-of-00003.safetensors\", "
                                           "\"t_5\": \"m-00003-of-00003.safetensors\"}}");
    TU_OK(client_load(c, "m.safetensors.index.json", &d, NULL, &err), &err);
    ck_assert_uint_eq(td_dict_size(d), 4);
    ck_assert_uint_eq(td__kmodels_count(td__client_kmodels(c)), 1);
    td_dict_free(d);
    wait_leases(0);
    misses = stat_of(TD_STATUS_MISSES);
    hits = stat_of(TD_STATUS_HITS);
    snprintf(to, sizeof to, "%s/m-00003-of-00003.safetensors", dir);
    ck_assert_int_eq(unlink(to), 0);
    ck_assert_int_ne(client_load(c, "m.safetensors.index.json", &d, NULL, &err), 0);
    ck_assert_msg(strstr(err.message, "m-00003-of-00003.safetensors"), "%s", err.message);
    ck_assert_uint_eq(td__kmodels_count(td__client_kmodels(c)), 0);
    ck_assert_uint_eq(stat_of(TD_STATUS_MISSES), misses);
    ck_assert_uint_eq(stat_of(TD_STATUS_HITS), hits);
    ck_assert_uint_eq(stat_of(TD_STATUS_ERRORS), errors);
    ck_assert_uint_eq(stat_of(TD_STATUS_LEASES), 0);
    td_client_close(c);
}
END_TEST

/* A td_client keeps at most TD__MODELS_MAX models, the least recently used going first. */
START_TEST(test_client_kept_bound)
{
    save_model("m.safetensors", 0);
    char from[128];
    snprintf(from, sizeof from, "%s/m.safetensors.index.json", dir);
    size_t len;
    uint8_t *index = tu_read_file(from, &len);
    ck_assert_ptr_nonnull(index);
    int n = (int)TD__MODELS_MAX + 6;
    for (int i = 0; i < n; i++) {
        char to[128];
        snprintf(to, sizeof to, "%s/i%d.safetensors.index.json", dir, i);
        ck_assert_int_eq(tu_write_file(to, index, len), 0);
    }
    free(index);
    td_error err = {0};
    td_client *c = NULL;
    TU_OK(td_client_connect(sock, &c, &err), &err);
    for (int i = 0; i < n; i++) {
        char name[64];
        snprintf(name, sizeof name, "i%d.safetensors.index.json", i);
        td_dict *d = NULL;
        TU_OK(client_load(c, name, &d, NULL, &err), &err);
        td_dict_free(d);
        ck_assert_uint_eq(td__kmodels_count(td__client_kmodels(c)),
                          (size_t)i < TD__MODELS_MAX ? (size_t)i + 1 : TD__MODELS_MAX);
    }
    ck_assert_uint_eq(kept_figure(c, INDEXED), (uint64_t)n);
    td_dict *d = NULL;
    /* the last one is kept; the first went */
    char last[64];
    snprintf(last, sizeof last, "i%d.safetensors.index.json", n - 1);
    TU_OK(client_load(c, last, &d, NULL, &err), &err);
    td_dict_free(d);
    ck_assert_uint_eq(kept_figure(c, REUSED), 1);
    TU_OK(client_load(c, "i0.safetensors.index.json", &d, NULL, &err), &err);
    check_values(d, 0, TD_PROVENANCE_DAEMON);
    td_dict_free(d);
    ck_assert_uint_eq(kept_figure(c, INDEXED), (uint64_t)n + 1);
    ck_assert_uint_eq(td__kmodels_count(td__client_kmodels(c)), TD__MODELS_MAX);
    td_client_close(c);
    wait_leases(0);
}
END_TEST

/* Many loads of models through a td_client, some held while others are made, then the client
 * closed with a dict still held: no descriptor and no mapping of the model's files or tables
 * is left once that dict goes. td_load of the same model keeps nothing either. */
START_TEST(test_client_kept_no_leak)
{
    save_model("m.safetensors", 0);
    save_model("g.gguf", 0);
    int fds = tu_count_fds();
    ck_assert_int_eq(tu_count_maps(dir), 0);
    td_error err = {0};
    td_client *c = NULL;
    TU_OK(td_client_connect(sock, &c, &err), &err);
    td_dict *held[4] = {0};
    for (int i = 0; i < 200; i++) {
        const char *name = i % 3 ? "m.safetensors.index.json" : "g-00001-of-00003.gguf";
        td_dict *d = NULL;
        td_meta *m = NULL;
        TU_OK(client_load(c, name, &d, i % 2 ? &m : NULL, &err), &err);
        ck_assert_uint_eq(td_dict_size(d), NT);
        td_meta_free(m);
        td_dict_free(held[i % 4]);
        held[i % 4] = d;
    }
    ck_assert_uint_eq(kept_figure(c, INDEXED), 2);
    ck_assert_uint_eq(kept_figure(c, REUSED), 198);
    for (int i = 0; i < 3; i++)
        td_dict_free(held[i]);
    td_client_close(c); /* held[3] still holds its model, arrays and mappings */
    check_values(held[3], 0, TD_PROVENANCE_DAEMON);
    ck_assert_int_gt(tu_count_maps(dir), 0);
    td_dict_free(held[3]);
    ck_assert_int_eq(tu_count_maps(dir), 0);
    ck_assert_int_eq(tu_count_fds(), fds);
    wait_leases(0);

    /* td_load: a connection of its own per load, nothing kept between loads */
    for (int i = 0; i < 20; i++) {
        td_dict *d = NULL;
        TU_OK(load(i % 2 ? "m.safetensors.index.json" : "g-00001-of-00003.gguf", TD_MODE_DAEMON, &d,
                   &err),
              &err);
        check_values(d, 0, TD_PROVENANCE_DAEMON);
        ck_assert_int_gt(tu_count_maps(dir), 0);
        td_dict_free(d);
        ck_assert_int_eq(tu_count_maps(dir), 0);
    }
    ck_assert_int_eq(tu_count_fds(), fds);
    wait_leases(0);
}
END_TEST

/* Threads loading two models through one td_client at once, holding each dict for a while: the
 * kept models, their views and the shards' kept tables are shared without a wrong array. */
typedef struct loader {
    td_client *c;
    pthread_barrier_t *go;
    int failures;
} loader;

static void *load_many(void *arg)
{
    loader *l = arg;
    pthread_barrier_wait(l->go);
    td_dict *held = NULL;
    for (int i = 0; i < 100; i++) {
        td_dict *d = NULL;
        td_error err = {0};
        const char *name = i % 2 ? "m.safetensors.index.json" : "g-00001-of-00003.gguf";
        if (client_load(l->c, name, &d, NULL, &err) != 0) {
            l->failures++;
            continue;
        }
        for (int t = 0; t < NT; t++) {
            char tn[16];
            snprintf(tn, sizeof tn, "t_%d", t);
            const td_array *a = td_dict_get(d, tn);
            const float *v = a ? td_array_data(a) : NULL;
            if (!v || v[NE - 1] != (float)(t * 1000 + NE - 1))
                l->failures++;
        }
        td_dict_free(held);
        held = d;
    }
    td_dict_free(held);
    return NULL;
}

START_TEST(test_client_kept_threads)
{
    save_model("m.safetensors", 0);
    save_model("g.gguf", 0);
    td_error err = {0};
    td_client *c = NULL;
    TU_OK(td_client_connect(sock, &c, &err), &err);
    enum { N = 4 };
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, N);
    loader l[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        l[i] = (loader){c, &go, 0};
        ck_assert_int_eq(pthread_create(&th[i], NULL, load_many, &l[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(pthread_join(th[i], NULL), 0);
        ck_assert_int_eq(l[i].failures, 0);
    }
    pthread_barrier_destroy(&go);
    ck_assert_uint_eq(kept_figure(c, INDEXED) + kept_figure(c, REUSED), N * 100);
    ck_assert_uint_le(kept_figure(c, INDEXED), 2 * N);
    ck_assert_uint_eq(td__kmodels_count(td__client_kmodels(c)), 2);
    td_client_close(c);
    wait_leases(0);
}
END_TEST

/* The end of a lease made by hand: counts, and frees it. */
static int leases_ended;
static void end_by_hand(td__lease *l)
{
    leases_ended++;
    free(l);
}

/* A kept model adopts replies in msgpack form too (a daemon that does not share its tables):
 * the same dict and metadata as from flat tables, on a connection that did not agree TABLE. */
START_TEST(test_kept_model_msgpack)
{
    td_error err = {0};
    td_meta *meta = td_meta_new();
    TU_OK(td_meta_set_string(meta, "format", "pt", 2, &err), &err);
    save_model_meta("m.safetensors", 0, meta);
    td_meta_free(meta);
    char path[128];
    snprintf(path, sizeof path, "%s/m.safetensors.index.json", dir);
    td_load_options o;
    td_dict *d = NULL;
    td_meta *m = NULL, *m0 = NULL;
    TU_OK(td__load_check(path, NULL, &d, &m, &o, &err), &err);
    td_load_options e = TD_LOAD_OPTIONS_INIT;
    e.mode = TD_MODE_EMBEDDED;
    td_dict *d0 = NULL;
    TU_OK(td_load(path, &e, &d0, &m0, &err), &err);
    td__kmodels ms;
    td__kmodels_init(&ms);

    int s = -1;
    TU_OK(td__remote_connect(sock, &s, &err), &err);
    td__proto_msg h;
    td__proto_msg_init(&h, TD__PROTO_HELLO, 1);
    h.u.hello.version = h.u.hello.min_version = TD__PROTO_VERSION;
    h.u.hello.features = TD__PROTO_F_ALL & ~(uint64_t)(TD__PROTO_F_TABLE | TD__PROTO_F_LEAN);
    TU_OK(td__proto_send_msg(s, &h, NULL, 5000, &err), &err);
    TU_OK(td__remote_reply(s, 1, TD__PROTO_HELLO_OK, 5000, &h, &err), &err);
    ck_assert_uint_eq(h.u.hello.features & TD__PROTO_F_TABLE, 0);
    td__proto_msg_destroy(&h);
    for (int round = 0; round < 2; round++) {
        td__kmodel *km = NULL;
        int *fds = NULL;
        TU_OK(td__kmodel_get(&ms, path, &o, &km, &fds, &err), &err);
        ck_assert_ptr_nonnull(km);
        ck_assert_uint_eq(atomic_load(&ms.reused), (uint64_t)round);
        size_t n = td__kmodel_nfiles(km);
        ck_assert_uint_eq(n, 3);
        td__proto_msg replies[3];
        for (size_t f = 0; f < n; f++) {
            td__proto_msg ld;
            td__remote_load_msg(&ld, (uint32_t)(2 + f), fds[f], td__kmodel_label(km, f), &o);
            ld.u.load.flags = TD__PROTO_LOAD_SHARD;
            TU_OK(td__proto_send_msg(s, &ld, NULL, 5000, &err), &err);
        }
        for (size_t k = 0; k < n; k++) {
            td__proto_msg r;
            TU_OK(td__proto_recv_msg(s, NULL, &r, 5000, &err), &err);
            ck_assert_uint_eq(r.type, TD__PROTO_LOAD_OK);
            ck_assert(r.id >= 2 && r.id < 2 + n);
            ck_assert_ptr_nonnull(r.u.loaded.table);
            replies[r.id - 2] = r;
        }
        for (size_t f = 0; f < n; f++)
            close(fds[f]);
        free(fds);
        td__lease *l = calloc(1, sizeof *l);
        ck_assert_ptr_nonnull(l);
        atomic_init(&l->refs, 1);
        l->end = end_by_hand;
        TU_OK(td__kmodel_adopt_msgpack(km, path, replies, l, &d, &m, &err), &err);
        td__kmodel_release(km);
        check_values(d, 0, TD_PROVENANCE_DAEMON);
        same_dicts(d0, d);
        ck_assert(td__meta_equal(m0, m));
        td_dict_free(d);
        td_meta_free(m);
        ck_assert_int_eq(leases_ended, round + 1);
    }
    close(s);
    td__kmodels_destroy(&ms);
    td_dict_free(d0);
    td_meta_free(m0);
    wait_leases(0);
}
END_TEST

/* A LOAD of one split as an older client sends it (no SHARD flag) gets TD_ENOTSUP, so that such
 * a client loads the whole set in embedded mode rather than a third of it; unknown flag bits
 * get TD_ENOTSUP; with SHARD the split is served as a file. Raw protocol, one connection. */
static int raw_load(int s, uint32_t id, const char *name, uint64_t flags, td_error *err)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    td_load_options o = TD_LOAD_OPTIONS_INIT;
    td__proto_msg m, r;
    td__remote_load_msg(&m, id, fd, name, &o);
    m.u.load.flags = flags;
    int rc = td__proto_send_msg(s, &m, NULL, 5000, err);
    close(fd);
    if (!rc)
        rc = td__remote_reply(s, id, TD__PROTO_LOAD_OK, 5000, &r, err);
    if (!rc)
        td__proto_msg_destroy(&r);
    return rc;
}

START_TEST(test_split_without_flag)
{
    save_model("g.gguf", 0);
    td_error err = {0};
    int s = -1;
    TU_OK(td__remote_connect(sock, &s, &err), &err);
    td__proto_msg h;
    TU_OK(td__remote_hello(s, &err), &err);
    TU_OK(td__remote_reply(s, 1, TD__PROTO_HELLO_OK, 5000, &h, &err), &err);
    ck_assert(h.u.hello.features & TD__PROTO_F_MODEL);
    td__proto_msg_destroy(&h);
    ck_assert_int_eq(raw_load(s, 2, "g-00002-of-00003.gguf", 0, &err), TD_ENOTSUP);
    ck_assert_msg(strstr(err.message, "g-00002-of-00003.gguf"), "%s", err.message);
    ck_assert_int_eq(raw_load(s, 3, "g-00001-of-00003.gguf", 0, &err), TD_ENOTSUP);
    ck_assert_int_eq(raw_load(s, 4, "g-00001-of-00003.gguf", 2, &err), TD_ENOTSUP);
    ck_assert_msg(strstr(err.message, "flags"), "%s", err.message);
    TU_OK(raw_load(s, 5, "g-00002-of-00003.gguf", TD__PROTO_LOAD_SHARD, &err), &err);
    ck_assert_uint_eq(stat_of(TD_STATUS_LEASES), 1); /* only the SHARD load holds an entry */
    close(s);
    wait_leases(0);
}
END_TEST

/* A shard the daemon refuses (its snapshot over the memory budget while the model's other
 * shards hold theirs) fails the whole load with that error, and nothing stays held; auto mode
 * then loads the model in this process. */
START_TEST(test_shard_refused)
{
    ck_assert_int_eq(tu_daemon_stop(daemon_pid, SIGTERM), 0);
    char conf[128], args[300];
    snprintf(conf, sizeof conf, "%s/tensord.conf", dir);
    FILE *f = fopen(conf, "w");
    ck_assert(f);
    fprintf(f, "mode %s/ = snapshot\nmax_memory = 1000\nmax_memory_per_uid = none\n", dir);
    ck_assert_int_eq(fclose(f), 0);
    snprintf(args, sizeof args, "--config %s", conf);
    daemon_pid = tu_daemon_start(sock, logp, args);
    save_model("m.safetensors", 0);
    td_error err = {0};
    td_dict *d = NULL;
    int rc = load("m.safetensors.index.json", TD_MODE_DAEMON, &d, &err);
    ck_assert_msg(rc == TD_EBUDGET, "%d: %s", rc, err.message);
    ck_assert_msg(strstr(err.message, "m.safetensors.index.json") &&
                      strstr(err.message, "-of-00003.safetensors"),
                  "%s", err.message);
    wait_leases(0);
    TU_OK(load("m.safetensors.index.json", TD_MODE_AUTO, &d, &err), &err);
    check_values(d, 0, TD_PROVENANCE_EMBEDDED);
    td_dict_free(d);
}
END_TEST

/* Runs tensorctl with args (a shell command line's tail) and returns its standard output. */
static char *tensorctl(const char *args)
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

/* tensorctl load INDEX prints the model and its files; status lists each shard's entry. */
START_TEST(test_tensorctl_load_status)
{
    save_model("m.safetensors", 0);
    char args[256];
    snprintf(args, sizeof args, "load %s/m.safetensors.index.json", dir);
    char *out = tensorctl(args);
    ck_assert_msg(strstr(out, "6 tensors") && strstr(out, "model of 3 files:") &&
                      strstr(out, "  m-00002-of-00003.safetensors: 2 tensors"),
                  "%s", out);
    out = tensorctl("status");
    for (int i = 1; i <= 3; i++) {
        char want[160];
        snprintf(want, sizeof want, "%s/m-%05d-of-00003.safetensors", dir, i);
        ck_assert_msg(strstr(out, want), "%s not in\n%s", want, out);
    }
}
END_TEST

START_TEST(test_auto_with_daemon)
{
    save_model("m.safetensors", 0);
    td_error err = {0};
    td_dict *d = NULL;
    TU_OK(load("m.safetensors.index.json", TD_MODE_AUTO, &d, &err), &err);
    check_values(d, 0, TD_PROVENANCE_DAEMON);
    td_dict_free(d);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("model_daemon");
    TCase *tc = tcase_create("model_daemon");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_sharded_two_processes);
    tcase_add_test(tc, test_gguf_split_set);
    tcase_add_test(tc, test_shared_shard);
    tcase_add_test(tc, test_hostile_and_missing);
    tcase_add_test(tc, test_replace_shard);
    tcase_add_test(tc, test_client_load);
    tcase_add_test(tc, test_client_kept_model);
    tcase_add_test(tc, test_client_kept_shard_replaced);
    tcase_add_test(tc, test_client_kept_index_rewritten);
    tcase_add_test(tc, test_client_kept_bound);
    tcase_add_test(tc, test_client_kept_no_leak);
    tcase_add_test(tc, test_client_kept_threads);
    tcase_add_test(tc, test_kept_model_msgpack);
    tcase_add_test(tc, test_split_without_flag);
    tcase_add_test(tc, test_shard_refused);
    tcase_add_test(tc, test_tensorctl_load_status);
    tcase_add_test(tc, test_auto_with_daemon);
    suite_add_tcase(s, tc);
    return tu_run(s);
}

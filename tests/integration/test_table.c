/*
 * test_table.c - the tensor table as shared memory, against a real tensord: what a td_client
 * keeps between loads (the table and the file's mapping, never the daemon's buffers), the
 * bound on what it keeps, both forms of LOAD_OK on the wire (a client that does not agree TABLE
 * still gets msgpack), and a hostile daemon whose tables must not get past the client.
 */
#include "client.h"
#include "ftab.h"
#include "proto.h"
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[64], sock[128], logpath[160];
static pid_t daemon_pid = -1;

static void setup(void)
{
    tu_tmpdir(dir);
    snprintf(sock, sizeof sock, "%s/tensord.sock", dir);
    snprintf(logpath, sizeof logpath, "%s/tensord.log", dir);
    setenv("TENSORD_SOCKET", sock, 1);
}

static void teardown(void)
{
    if (daemon_pid > 0) {
        int st = tu_daemon_stop(daemon_pid, SIGTERM);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "tensord exited badly: %d", st);
    }
    daemon_pid = -1;
    tu_rmtree(dir);
}

/* A safetensors file of n float32 vectors "w.K" of K + 1 elements, each filled with K, and
 * metadata {"kind": "test"}. */
static void save_st(const char *path, int n)
{
    td_dict *d = td_dict_new();
    td_error err = {0};
    for (int k = 0; k < n; k++) {
        float v[64];
        for (int i = 0; i <= k && i < 64; i++)
            v[i] = (float)k;
        int64_t shape[1] = {k < 64 ? k + 1 : 64};
        td_array *a;
        TU_OK(td_array_new(TD_FLOAT32, 1, shape, v, &a, &err), &err);
        char name[32];
        snprintf(name, sizeof name, "w.%d", k);
        TU_OK(td_dict_set(d, name, a, &err), &err);
        td_array_release(a);
    }
    td_meta *m = td_meta_new();
    TU_OK(td_meta_set_string(m, "kind", "test", 4, &err), &err);
    TU_OK(td_save_safetensors(path, d, m, &err), &err);
    td_meta_free(m);
    td_dict_free(d);
}

/* A repeated load through one td_client checks and maps no table again: the table is kept. The
 * file's mapping is shared by loads of it that overlap (the second load's arrays view the very
 * bytes of the first), and goes with the last of them: kept longer, it would hold a replaced or
 * deleted file's pages. td_load (a load of its own) unmaps all it mapped. */
START_TEST(test_client_keeps_table_and_file)
{
    daemon_pid = tu_daemon_start(sock, logpath, NULL);
    char path[256], table[300];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    snprintf(table, sizeof table, "%s (table)", path);
    save_st(path, 40);
    td_client *c;
    td_error err = {0};
    TU_OK(td_client_connect(sock, &c, &err), &err);
    int fds = tu_count_fds();
    ck_assert_int_eq(tu_count_maps(path), 0);

    td_dict *d1, *d2;
    td_meta *m;
    TU_OK(td_client_load(c, path, NULL, &d1, &m, &err), &err);
    ck_assert_uint_eq(td_dict_size(d1), 40);
    const td_value *kind = td_meta_get(m, "kind");
    ck_assert_ptr_nonnull(kind);
    td_meta_free(m);
    ck_assert_int_eq(tu_count_maps(path), 2); /* the file, and the table's memfd named after it */
    ck_assert_int_eq(tu_count_maps(table), 1);
    const void *p1 = td_array_data(td_dict_get(d1, "w.7"));
    ck_assert_float_eq(((const float *)p1)[7], 7.0f);
    ck_assert_int_eq(td_array_provenance(td_dict_get(d1, "w.7")), TD_PROVENANCE_DAEMON);

    TU_OK(td_client_load(c, path, NULL, &d2, NULL, &err), &err); /* while d1 holds the file */
    ck_assert_int_eq(tu_count_maps(path), 2);
    ck_assert_ptr_eq(td_array_data(td_dict_get(d2, "w.7")), p1);
    td_dict_free(d1);
    ck_assert_int_eq(tu_count_maps(path), 2); /* d2 still views it */
    for (int k = 0; k < 40; k++) {
        char name[32];
        snprintf(name, sizeof name, "w.%d", k);
        const td_array *a = td_dict_get(d2, name);
        ck_assert_ptr_nonnull(a);
        ck_assert_int_eq(td_array_shape(a)[0], k + 1);
        ck_assert_float_eq(((const float *)td_array_data(a))[k], (float)k);
    }
    td_dict_free(d2);
    ck_assert_int_eq(tu_count_maps(path), 1); /* the table alone */
    ck_assert_int_eq(tu_count_maps(table), 1);
    TU_OK(td_client_load(c, path, NULL, &d2, NULL, &err), &err); /* the file again, not the table */
    ck_assert_int_eq(tu_count_maps(path), 2);
    ck_assert_int_eq(tu_count_maps(table), 1);
    td_dict_free(d2);

    /* td_load has no client to keep anything in: it maps its own and unmaps it. */
    td_load_options o = TD_LOAD_OPTIONS_INIT;
    o.mode = TD_MODE_DAEMON;
    TU_OK(td_load(path, &o, &d1, NULL, &err), &err);
    ck_assert_int_eq(tu_count_maps(path), 3);
    ck_assert_int_eq(tu_count_maps(table), 2);
    td_dict_free(d1);
    ck_assert_int_eq(tu_count_maps(path), 1);
    ck_assert_int_eq(tu_count_fds(), fds);

    td_client_close(c); /* forgets what it kept */
    ck_assert_int_eq(tu_count_maps(path), 0);
    ck_assert_int_eq(tu_count_fds(), fds - 1);
}
END_TEST

/* A file replaced by rename while a client had loaded it: once the old file's last array goes,
 * the client holds nothing of it (no mapping keeps its blocks allocated). */
START_TEST(test_replaced_file_let_go)
{
    daemon_pid = tu_daemon_start(sock, logpath, NULL);
    char path[256], tmp[256];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    snprintf(tmp, sizeof tmp, "%s/new.safetensors", dir);
    save_st(path, 8);
    td_client *c;
    td_error err = {0};
    TU_OK(td_client_connect(sock, &c, &err), &err);
    td_dict *d;
    TU_OK(td_client_load(c, path, NULL, &d, NULL, &err), &err);
    td_dict_free(d);
    save_st(tmp, 9);
    ck_assert_int_eq(rename(tmp, path), 0);
    TU_OK(td_client_load(c, path, NULL, &d, NULL, &err), &err);
    ck_assert_uint_eq(td_dict_size(d), 9);
    td_dict_free(d);
    ck_assert_int_eq(tu_count_maps("model.safetensors (deleted)"), 0);
    td_client_close(c);
}
END_TEST

/* What the daemon decoded (a deflated npz) is its memory: a client maps it per load and lets
 * it go with the load, so that an evicted entry's pages are never held by an idle client. */
START_TEST(test_daemon_buffers_not_kept)
{
    daemon_pid = tu_daemon_start(sock, logpath, NULL);
    char path[256];
    snprintf(path, sizeof path, "%s/z.npz", dir);
    td_dict *d = td_dict_new();
    td_error err = {0};
    int64_t shape[1] = {100000};
    td_array *a;
    TU_OK(td_array_new(TD_FLOAT32, 1, shape, NULL, &a, &err), &err);
    TU_OK(td_dict_set(d, "a", a, &err), &err);
    td_array_release(a);
    TU_OK(td_savez_compressed(path, d, &err), &err);
    td_dict_free(d);

    td_client *c;
    TU_OK(td_client_connect(sock, &c, &err), &err);
    char derived[300];
    snprintf(derived, sizeof derived, "tensord:%s (deleted)", path); /* the decoded buffer */
    TU_OK(td_client_load(c, path, NULL, &d, NULL, &err), &err);
    ck_assert_int_eq(tu_count_maps(derived), 1);
    ck_assert_int_eq(tu_count_maps("z.npz (table)"), 1);
    td_dict_free(d);
    ck_assert_int_eq(tu_count_maps(derived), 0);
    ck_assert_int_eq(tu_count_maps("z.npz (table)"), 1);
    uint64_t entries = 0, bytes = 0;
    TU_OK(td_client_evict(c, NULL, &entries, &bytes, &err), &err);
    ck_assert_uint_eq(entries, 1);
    TU_OK(td_client_load(c, path, NULL, &d, NULL, &err), &err); /* a new entry, a new table */
    ck_assert_int_eq(tu_count_maps(derived), 1);
    td_dict_free(d);
    td_client_close(c);
    ck_assert_int_eq(tu_count_maps("z.npz (table)"), 0);
}
END_TEST

/* However many entries go through one client, it keeps at most 1024 tables. */
START_TEST(test_kept_tables_bounded)
{
    daemon_pid = tu_daemon_start(sock, logpath, NULL);
    td_client *c;
    td_error err = {0};
    TU_OK(td_client_connect(sock, &c, &err), &err);
    int fds = tu_count_fds();
    for (int k = 0; k < 1100; k++) {
        char path[256];
        snprintf(path, sizeof path, "%s/f%04d.npy", dir, k);
        td_dict *d = td_dict_new();
        int64_t shape[1] = {4};
        int32_t v[4] = {k, k, k, k};
        td_array *a;
        TU_OK(td_array_new(TD_INT32, 1, shape, v, &a, &err), &err);
        TU_OK(td_dict_push(d, a, &err), &err);
        td_array_release(a);
        TU_OK(td_save(path, td_dict_at(d, 0, NULL), &err), &err);
        td_dict_free(d);
        TU_OK(td_client_load(c, path, NULL, &d, NULL, &err), &err);
        ck_assert_int_eq(((const int32_t *)td_array_data(td_dict_at(d, 0, NULL)))[3], k);
        td_dict_free(d);
    }
    ck_assert_int_eq(tu_count_maps(".npy (table)"), 1024);
    ck_assert_int_eq(tu_count_fds(), fds); /* mappings, not descriptors */
    td_client_close(c);
    ck_assert_int_eq(tu_count_maps(".npy (table)"), 0);
}
END_TEST

/* A connection of its own to the daemon, with the given features agreed. */
static int raw_connect(uint64_t features)
{
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    ck_assert_uint_lt(strlen(sock), sizeof sa.sun_path);
    memcpy(sa.sun_path, sock, strlen(sock) + 1);
    ck_assert_int_eq(connect(s, (struct sockaddr *)&sa, sizeof sa), 0);
    td_error err = {0};
    td__proto_msg m, r;
    td__proto_msg_init(&m, TD__PROTO_HELLO, 1);
    m.u.hello.version = m.u.hello.min_version = TD__PROTO_VERSION;
    m.u.hello.features = features;
    TU_OK(td__proto_send_msg(s, &m, NULL, 5000, &err), &err);
    TU_OK(td__proto_recv_msg(s, NULL, &r, 5000, &err), &err);
    ck_assert_uint_eq(r.type, TD__PROTO_HELLO_OK);
    ck_assert_uint_eq(r.u.hello.features, features & TD__PROTO_F_ALL);
    td__proto_msg_destroy(&r);
    return s;
}

/* Sends LOAD of path (saying it keeps entry have's table, 0: none) on s and returns the reply. */
static void raw_load_on(int s, const char *path, uint64_t have, td__proto_msg *r)
{
    td_error err = {0};
    td__proto_msg m;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    td__proto_msg_init(&m, TD__PROTO_LOAD, 2);
    m.u.load.fd = fd;
    m.u.load.have = have;
    TU_OK(td__proto_send_msg(s, &m, NULL, 5000, &err), &err);
    close(fd);
    TU_OK(td__proto_recv_msg(s, NULL, r, 5000, &err), &err);
}

/* Speaks to the daemon on a connection of its own with the given features, loads path and
 * returns the LOAD_OK. */
static void raw_load(const char *path, uint64_t features, td__proto_msg *r)
{
    int s = raw_connect(features);
    raw_load_on(s, path, 0, r);
    ck_assert_uint_eq(r->type, TD__PROTO_LOAD_OK);
    close(s);
}

/* A client that does not know TABLE gets the table in msgpack, as before; one that does gets a
 * sealed memfd holding the same table and metadata. */
START_TEST(test_both_forms)
{
    daemon_pid = tu_daemon_start(sock, logpath, NULL);
    char path[256];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    save_st(path, 12);

    td__proto_msg r;
    uint64_t lean = TD__PROTO_F_LEAN; /* the file's descriptor comes back (test_lean) */
    raw_load(path, TD__PROTO_F_ALL & ~(uint64_t)(TD__PROTO_F_TABLE | lean), &r);
    ck_assert_int_eq(r.u.loaded.table_fd, -1);
    ck_assert_ptr_nonnull(r.u.loaded.table);
    ck_assert_uint_eq(r.u.loaded.table->n, 12);
    ck_assert_ptr_nonnull(td_meta_get(r.u.loaded.table->meta, "kind"));
    ck_assert_uint_eq(r.u.loaded.regions[0].flags, TD__PROTO_REGION_FILE);
    td__table old;
    td__table_init(&old, TD_FORMAT_AUTO);
    old = *r.u.loaded.table;
    r.u.loaded.table->entries = NULL; /* old owns them now */
    r.u.loaded.table->n = 0;
    r.u.loaded.table->meta = NULL;
    td__proto_msg_destroy(&r);

    raw_load(path, TD__PROTO_F_ALL & ~lean, &r);
    ck_assert_ptr_null(r.u.loaded.table);
    ck_assert_int_ge(r.u.loaded.table_fd, 0);
    ck_assert_uint_ne(r.u.loaded.entry, 0);
    int seals = fcntl(r.u.loaded.table_fd, F_GET_SEALS);
    ck_assert_int_eq(seals & (F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW),
                     F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW);
    uint64_t sizes[1] = {r.u.loaded.regions[0].size};
    td__tab *tab;
    td_error err = {0};
    TU_OK(td__tab_map(r.u.loaded.table_fd, r.u.loaded.table_size, sizes, 1, path, &tab, &err),
          &err);
    td__table flat;
    TU_OK(td__tab_to_table(tab, &flat, &err), &err);
    TU_OK(td__tab_meta(tab, path, &flat.meta, &err), &err);
    ck_assert_msg(td__table_equal(&old, &flat), "the two forms disagree");
    td__table_destroy(&flat);
    td__table_destroy(&old);
    td__tab_release(tab);
    uint64_t entry = r.u.loaded.entry;
    td__proto_msg_destroy(&r);
    raw_load(path, TD__PROTO_F_ALL & ~lean, &r); /* the same entry: the same id */
    ck_assert_uint_eq(r.u.loaded.entry, entry);
    td__proto_msg_destroy(&r);
}
END_TEST

/* LEAN: a reply passes no descriptor the client has. The file region is the LOAD's own
 * descriptor (OWN, none sent back), and a LOAD that says it keeps the entry's table (`have`)
 * gets no table descriptor either, so a warm load's reply carries none. `have` naming another
 * entry changes nothing, and without LEAN it is refused. */
START_TEST(test_lean)
{
    daemon_pid = tu_daemon_start(sock, logpath, NULL);
    char path[256];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    save_st(path, 12);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);

    int s = raw_connect(TD__PROTO_F_ALL);
    td__proto_msg r;
    raw_load_on(s, path, 0, &r);
    ck_assert_uint_eq(r.type, TD__PROTO_LOAD_OK);
    ck_assert_uint_eq(r.u.loaded.nregions, 1);
    ck_assert_uint_eq(r.u.loaded.regions[0].flags, TD__PROTO_REGION_FILE | TD__PROTO_REGION_OWN);
    ck_assert_int_eq(r.u.loaded.regions[0].fd, -1);
    ck_assert_uint_eq(r.u.loaded.regions[0].size, (uint64_t)st.st_size);
    ck_assert_int_ge(r.u.loaded.table_fd, 0);
    ck_assert(!r.u.loaded.table_kept);
    uint64_t entry = r.u.loaded.entry, tsize = r.u.loaded.table_size;
    td__proto_msg_destroy(&r);

    raw_load_on(s, path, entry, &r);
    ck_assert_uint_eq(r.type, TD__PROTO_LOAD_OK);
    ck_assert(r.u.loaded.table_kept);
    ck_assert_int_eq(r.u.loaded.table_fd, -1);
    ck_assert_int_eq(r.u.loaded.regions[0].fd, -1);
    ck_assert_uint_eq(r.u.loaded.entry, entry);
    ck_assert_uint_eq(r.u.loaded.table_size, tsize);
    td__proto_msg_destroy(&r);

    raw_load_on(s, path, entry + 1000, &r); /* another entry's table: this one's comes */
    ck_assert_uint_eq(r.type, TD__PROTO_LOAD_OK);
    ck_assert(!r.u.loaded.table_kept);
    ck_assert_int_ge(r.u.loaded.table_fd, 0);
    td__proto_msg_destroy(&r);
    close(s);

    s = raw_connect(TD__PROTO_F_ALL & ~(uint64_t)TD__PROTO_F_LEAN);
    raw_load_on(s, path, 0, &r);
    ck_assert_uint_eq(r.u.loaded.regions[0].flags, TD__PROTO_REGION_FILE);
    ck_assert_int_ge(r.u.loaded.regions[0].fd, 0);
    td__proto_msg_destroy(&r);
    raw_load_on(s, path, entry, &r);
    ck_assert_uint_eq(r.type, TD__PROTO_ERROR);
    ck_assert_int_eq(r.u.error.code, TD_ENOTSUP);
    ck_assert_ptr_nonnull(strstr(r.u.error.message, "have"));
    td__proto_msg_destroy(&r);
    close(s);

    /* Through a td_client, warm loads of the file agree with the first. */
    td_client *c;
    td_error err = {0};
    TU_OK(td_client_connect(sock, &c, &err), &err);
    for (int i = 0; i < 3; i++) {
        td_dict *d;
        TU_OK(td_client_load(c, path, NULL, &d, NULL, &err), &err);
        ck_assert_uint_eq(td_dict_size(d), 12);
        td_dict_free(d);
    }
    td_client_close(c);
}
END_TEST

/* A file the daemon refuses is named once in the error, whichever way it was loaded: the
 * daemon names it by its real path, which the client's name is part of. */
START_TEST(test_error_names_file_once)
{
    daemon_pid = tu_daemon_start(sock, logpath, NULL);
    char path[256];
    snprintf(path, sizeof path, "%s/broken.safetensors", dir);
    /* A header of 16 bytes, all there, whose JSON stops short. */
    static const char bad[] = "\x10\0\0\0\0\0\0\0{\"a\":{\"dtype\":\"F";
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(bad, 1, sizeof bad - 1, f), sizeof bad - 1);
    fclose(f);
    td_error err = {0};
    td_dict *d = NULL;
    td_client *c;
    TU_OK(td_client_connect(sock, &c, &err), &err);
    for (int way = 0; way < 2; way++) {
        int rc;
        if (way == 0) {
            rc = td_client_load(c, path, NULL, &d, NULL, &err);
        } else {
            td_load_options o = TD_LOAD_OPTIONS_INIT;
            o.mode = TD_MODE_DAEMON;
            rc = td_load(path, &o, &d, NULL, &err);
        }
        ck_assert_int_eq(rc, TD_EFORMAT);
        ck_assert_ptr_null(d);
        const char *first = strstr(err.message, "broken.safetensors");
        ck_assert_msg(first && !strstr(first + 1, "broken.safetensors"),
                      "way %d: the file named %s: %s", way, first ? "twice" : "not at all",
                      err.message);
    }
    td_client_close(c);
}
END_TEST

/* ---- a hostile daemon ---- */

typedef enum {
    BAD_UNSEALED,
    BAD_ENTRY,
    BAD_SIZE,
    BAD_NOT_MEMFD,
    BAD_KEPT,
    BAD_OWN_TWICE,
    BAD_REGION_SIZE,
    BAD_REGION_UNSEALED,
    BAD_LATER_UNSEALED
} bad_kind;

typedef struct fake {
    int listen_fd;
    bad_kind kind;
    const char *file;
} fake;

/* A table of one float32 [4] at offset off of region 0, written into a memfd. */
static int bad_table(bad_kind kind, uint64_t *size)
{
    td__table t;
    td_error err;
    td__table_init(&t, TD_FORMAT_NPY);
    td__entry *e = td__table_add(&t, "x", 1, &err);
    int64_t shape[1] = {4};
    td__entry_set_shape(e, 1, shape, &err);
    e->dtype = TD_FLOAT32;
    e->nbytes = 16;
    e->offset = 128;
    *size = td__ftab_size(&t, 0);
    uint8_t *p = malloc(*size);
    td__hash_seed seed = {1, 2};
    ck_assert_int_eq(td__ftab_write(&t, 1, NULL, 0, seed, p, *size, &err), 0);
    td__table_destroy(&t);
    if (kind == BAD_ENTRY) /* its bytes run past the file */
        td__put64(p + td__le64(p + 56), 1u << 30);
    int fd;
    if (kind == BAD_NOT_MEMFD) {
        char path[200];
        snprintf(path, sizeof path, "%s/table", dir);
        fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    } else {
        fd = memfd_create("fake table", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    }
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, p, (size_t)*size), (ssize_t)*size);
    free(p);
    if (kind != BAD_UNSEALED && kind != BAD_NOT_MEMFD)
        ck_assert_int_eq(fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW), 0);
    if (kind == BAD_SIZE)
        *size -= 8;
    return fd;
}

/* Answers HELLO agreeing TABLE, then every LOAD with a bad table, until the client goes. */
static void *fake_daemon(void *arg)
{
    fake *f = arg;
    int s = accept4(f->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (s < 0)
        return NULL;
    td__proto_msg m, r;
    td_error err = {0};
    int nloads = 0;
    while (td__proto_recv_msg(s, NULL, &m, 10000, &err) == 0) {
        if (m.type == TD__PROTO_HELLO) {
            td__proto_msg_init(&r, TD__PROTO_HELLO_OK, m.id);
            r.u.hello.version = r.u.hello.min_version = TD__PROTO_VERSION;
            r.u.hello.features = TD__PROTO_F_ALL;
            td__proto_send_msg(s, &r, NULL, 5000, &err);
        } else if (m.type == TD__PROTO_LOAD) {
            uint64_t size;
            int tfd = bad_table(f->kind, &size), mfd = -1;
            struct stat st;
            fstat(m.u.load.fd, &st);
            td__proto_region reg[2] = {{m.u.load.fd, (uint64_t)st.st_size, TD__PROTO_REGION_FILE}};
            td__proto_msg_init(&r, TD__PROTO_LOAD_OK, m.id);
            r.u.loaded.lease = 1;
            r.u.loaded.format = TD_FORMAT_NPY;
            r.u.loaded.regions = reg;
            r.u.loaded.nregions = 1;
            r.u.loaded.table_fd = tfd;
            r.u.loaded.table_size = size;
            r.u.loaded.entry = 7;
            if (f->kind == BAD_KEPT) { /* a table the client never had, left out */
                r.u.loaded.table_fd = -1;
                r.u.loaded.table_kept = true;
            } else if (f->kind == BAD_OWN_TWICE) { /* the LOAD's descriptor as two regions */
                reg[0].fd = -1;
                reg[0].flags |= TD__PROTO_REGION_OWN;
                reg[1] = reg[0];
                r.u.loaded.nregions = 2;
            } else if (f->kind == BAD_REGION_SIZE) { /* the file, said to be longer than it is */
                reg[0].size += 1 << 20;
            } else if (f->kind == BAD_REGION_UNSEALED || f->kind == BAD_LATER_UNSEALED) {
                /* daemon memory that may shrink (LATER: sealed in the first reply only, so
                 * that the second is a load of an entry the client keeps) */
                mfd = memfd_create("fake region", MFD_CLOEXEC | MFD_ALLOW_SEALING);
                ck_assert_int_ge(mfd, 0);
                ck_assert_int_eq(ftruncate(mfd, 4096), 0);
                if (f->kind == BAD_LATER_UNSEALED && ++nloads == 1)
                    ck_assert_int_eq(fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK), 0);
                reg[1] = (td__proto_region){mfd, 4096, 0};
                r.u.loaded.nregions = 2;
            }
            td__proto_send_msg(s, &r, NULL, 5000, &err);
            close(tfd);
            if (mfd >= 0)
                close(mfd);
        }
        td__proto_msg_destroy(&m);
    }
    close(s);
    return NULL;
}

static const struct {
    bad_kind kind;
    const char *says;
} bad_cases[] = {
    {BAD_UNSEALED, "not sealed"},
    {BAD_ENTRY, "past the end of region 0"},
    {BAD_SIZE, "in a memfd of"},
    {BAD_NOT_MEMFD, "not sealed"},
    {BAD_KEPT, "left out the table of entry 7"},
    {BAD_OWN_TWICE, "names the load's descriptor"},
    {BAD_REGION_SIZE, "but its descriptor holds"},
    {BAD_REGION_UNSEALED, "not sealed against shrinking"},
    {BAD_LATER_UNSEALED, "not sealed against shrinking"},
};

/* A daemon is trusted with the bytes, not with the client's memory: a table that is not sealed,
 * whose entries point outside the file, or whose size is not the memfd's, fails the load with
 * TD_EPROTO naming the file, leaving no descriptor and no mapping behind. Through a td_client
 * and through td_load. */
START_TEST(test_hostile_daemon_table)
{
    char path[256];
    snprintf(path, sizeof path, "%s/x.npy", dir);
    float v[4] = {1, 2, 3, 4};
    int64_t shape[1] = {4};
    td_array *a;
    td_error err = {0};
    TU_OK(td_array_new(TD_FLOAT32, 1, shape, v, &a, &err), &err);
    TU_OK(td_save(path, a, &err), &err);
    td_array_release(a);

    for (int via_client = 0; via_client < 2; via_client++) {
        bad_kind kind = bad_cases[_i].kind;
        if (kind == BAD_LATER_UNSEALED && !via_client)
            continue; /* a second load of a kept entry: td_load keeps nothing */
        int fds = tu_count_fds();
        int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        ck_assert_uint_lt(strlen(sock), sizeof sa.sun_path);
        memcpy(sa.sun_path, sock, strlen(sock) + 1);
        unlink(sock);
        ck_assert_int_eq(bind(l, (struct sockaddr *)&sa, sizeof sa), 0);
        ck_assert_int_eq(listen(l, 4), 0);
        fake f = {l, bad_cases[_i].kind, path};
        pthread_t th;
        int maps = tu_count_maps("/");
        pthread_create(&th, NULL, fake_daemon, &f);
        td_dict *d = NULL;
        int rc;
        if (via_client) {
            td_client *c;
            TU_OK(td_client_connect(sock, &c, &err), &err);
            if (kind == BAD_LATER_UNSEALED) { /* the first reply is sound */
                TU_OK(td_client_load(c, path, NULL, &d, NULL, &err), &err);
                td_dict_free(d);
                d = NULL;
            }
            rc = td_client_load(c, path, NULL, &d, NULL, &err);
            td_client_close(c);
        } else {
            td_load_options o = TD_LOAD_OPTIONS_INIT;
            o.mode = TD_MODE_DAEMON;
            rc = td_load(path, &o, &d, NULL, &err);
        }
        pthread_join(th, NULL);
        close(l);
        ck_assert_msg(rc == TD_EPROTO && strstr(err.message, bad_cases[_i].says) &&
                          strstr(err.message, "x.npy"),
                      "case %d (%s): %d %s", _i, via_client ? "td_client" : "td_load", rc,
                      err.message);
        ck_assert_ptr_null(d);
        ck_assert_int_eq(tu_count_fds(), fds);
        ck_assert_int_eq(tu_count_maps("/"), maps);
    }
}
END_TEST

static Suite *table_suite(void)
{
    Suite *s = suite_create("table");
    TCase *tc = tcase_create("daemon");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_client_keeps_table_and_file);
    tcase_add_test(tc, test_replaced_file_let_go);
    tcase_add_test(tc, test_daemon_buffers_not_kept);
    tcase_add_test(tc, test_kept_tables_bounded);
    tcase_add_test(tc, test_both_forms);
    tcase_add_test(tc, test_lean);
    tcase_add_test(tc, test_error_names_file_once);
    tcase_add_loop_test(tc, test_hostile_daemon_table, 0,
                        (int)(sizeof bad_cases / sizeof bad_cases[0]));
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(table_suite());
}

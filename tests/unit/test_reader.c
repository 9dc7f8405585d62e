/*
 * test_reader.c - the daemon's way of indexing (a descriptor reader: pread copies) against the
 * embedded way (a mapped reader), on real files: every reference file in the MANIFEST plus
 * numpy-written npz files (stored, deflated, zip64, data descriptors) and GGUF files whose
 * metadata spans many read windows.
 *
 *   - Same file, same table: every field of every entry and the metadata are identical.
 *   - The file shrinks under the reader (it was measured at its full size, then truncated, as a
 *     client can do to the daemon at any moment): cut at every byte of the first 512, every 7th
 *     to 4 KiB, and at 64 places beyond. Indexing either succeeds with the very same table (the
 *     cut fell in tensor data, which indexing never reads) or fails with TD_ETRUNC saying the
 *     file shrank. Nothing leaks (the ASan job runs this too) and no descriptor is left open.
 *   - Mutated files: 200 random mutations of each small file give the same code, message and
 *     table both ways.
 *   - A descriptor reader refuses to copy more than its budget, naming the file.
 */
#include "common.h"
#include "table.h"
#include "testutil.h"
#include "index.h"

#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_FILES 64

static char g_dir[64];
static char *g_files[MAX_FILES];
static size_t g_nfiles;

static void add_file(const char *path)
{
    ck_assert_uint_lt(g_nfiles, MAX_FILES);
    g_files[g_nfiles++] = strdup(path);
}

static void setup(void)
{
    tu_tmpdir(g_dir);
    char path[512];
    json_error_t je;
    json_t *man = json_load_file(tu_testdata("MANIFEST.json", path, sizeof path),
                                 JSON_DECODE_INT_AS_REAL, &je);
    ck_assert_msg(man != NULL, "MANIFEST.json: %s", je.text);
    const char *rel;
    json_t *v;
    json_object_foreach(json_object_get(man, "files"), rel, v)
    {
        if (td_format_from_path(rel) != TD_FORMAT_AUTO)
            add_file(tu_testdata(rel, path, sizeof path));
    }
    json_decref(man);

    char names[6][300];
    static const char *const base[] = {"stored.npz", "deflated.npz", "descriptors.npz",
                                       "zip64.npz",  "vocab.gguf",   "bigarray.gguf"};
    const char *args[7];
    for (int i = 0; i < 6; i++) {
        snprintf(names[i], sizeof names[i], "%s/%s", g_dir, base[i]);
        args[i] = names[i];
    }
    args[6] = NULL;
    ck_assert_int_eq(tu_py("reader.py", "files", args), 0);
    for (int i = 0; i < 6; i++)
        add_file(names[i]);
}

static void teardown(void)
{
    for (size_t i = 0; i < g_nfiles; i++)
        free(g_files[i]);
    g_nfiles = 0;
    tu_rmtree(g_dir);
}

/* Indexes bytes p[0..len) the embedded way. */
static int index_mem(td_format f, const uint8_t *p, size_t len, td__table *t, td_error *err)
{
    td__table_init(t, f);
    return td__index(f, TD__RD_MEM(p, len, "file"), 0, t, err);
}

/* Indexes fd, taken to be len bytes long, the daemon's way. */
static int index_fd(td_format f, int fd, uint64_t len, uint64_t budget, td__table *t, td_error *err)
{
    td__rd r;
    td__rd_fd(&r, fd, len, budget, "file");
    td__table_init(t, f);
    int rc = td__index(f, &r, 0, t, err);
    td__rd_close(&r);
    return rc;
}

static td_format format_of(const char *path)
{
    td_format f = td_format_from_path(path);
    ck_assert_int_ne(f, TD_FORMAT_AUTO);
    return f;
}

START_TEST(test_same_tables)
{
    int fds = tu_count_fds();
    for (size_t i = 0; i < g_nfiles; i++) {
        size_t len;
        uint8_t *p = tu_read_file(g_files[i], &len);
        ck_assert_ptr_nonnull(p);
        td_format f = format_of(g_files[i]);
        td__table a, b;
        td_error ea = {0}, eb = {0};
        int ra = index_mem(f, p, len, &a, &ea);
        int fd = open(g_files[i], O_RDONLY | O_CLOEXEC);
        ck_assert_int_ge(fd, 0);
        int rb = index_fd(f, fd, len, 0, &b, &eb);
        close(fd);
        ck_assert_msg(ra == rb && !strcmp(ea.message, eb.message), "%s: %d (%s) vs %d (%s)",
                      g_files[i], ra, ea.message, rb, eb.message);
        /* Every reference file is valid, except the one whose point is to be refused. */
        ck_assert_msg(ra == 0 || strstr(g_files[i], "nested") || strstr(g_files[i], "bad"),
                      "%s: %s", g_files[i], ea.message);
        ck_assert_msg(td__table_equal(&a, &b), "%s: tables differ", g_files[i]);
        td__table_destroy(&a);
        td__table_destroy(&b);
        free(p);
    }
    ck_assert_int_eq(tu_count_fds(), fds);
}
END_TEST

START_TEST(test_shrinking_file)
{
    int fds = tu_count_fds();
    char work[300];
    snprintf(work, sizeof work, "%s/work", g_dir);
    long total = 0, failed = 0;
    for (size_t i = 0; i < g_nfiles; i++) {
        size_t len;
        uint8_t *p = tu_read_file(g_files[i], &len);
        ck_assert_ptr_nonnull(p);
        td_format f = format_of(g_files[i]);
        td__table full;
        td_error err = {0};
        int rc = index_mem(f, p, len, &full, &err);
        if (rc) { /* a file refused whole: nothing to compare a cut with */
            td__table_destroy(&full);
            free(p);
            continue;
        }
        ck_assert_int_eq(tu_write_file(work, p, len), 0);
        int fd = open(work, O_RDWR | O_CLOEXEC);
        ck_assert_int_ge(fd, 0);
        /* Cuts from the end towards the start, so that the file only ever shrinks: 64 spread
         * over what lies past 4 KiB, every 7th byte below, every byte of the first 512. */
        size_t cut = len;
        for (;;) {
            if (cut > 4096)
                cut = cut - 4096 > (len - 4096) / 64 + 1 ? cut - ((len - 4096) / 64 + 1) : 4096;
            else if (cut > 512)
                cut = cut % 7 ? cut - cut % 7 : cut - 7;
            else if (cut > 0)
                cut--;
            else
                break;
            ck_assert_int_eq(ftruncate(fd, (off_t)cut), 0);
            td__table t;
            memset(&err, 0, sizeof err);
            rc = index_fd(f, fd, len, 0, &t, &err);
            total++;
            if (rc) {
                failed++;
                ck_assert_msg(rc == TD_ETRUNC && strstr(err.message, "shrank"),
                              "%s cut at %zu of %zu: %d %s", g_files[i], cut, len, rc, err.message);
            } else {
                ck_assert_msg(td__table_equal(&t, &full), "%s cut at %zu: another table",
                              g_files[i], cut);
            }
            td__table_destroy(&t);
        }
        close(fd);
        td__table_destroy(&full);
        free(p);
    }
    printf("reader: %ld indexings of files cut short under the reader: %ld refused as shrunk, "
           "%ld identical to the whole file's (the cut fell in tensor data)\n",
           total, failed, total - failed);
    ck_assert_int_gt(failed, 0);
    ck_assert_int_gt(total - failed, 0);
    ck_assert_int_eq(tu_count_fds(), fds);
}
END_TEST

START_TEST(test_mutations)
{
    char work[300];
    snprintf(work, sizeof work, "%s/mutant", g_dir);
    uint64_t x = 0x9e3779b97f4a7c15u;
    long runs = 0, refused = 0;
    for (size_t i = 0; i < g_nfiles; i++) {
        size_t len;
        uint8_t *p = tu_read_file(g_files[i], &len);
        ck_assert_ptr_nonnull(p);
        if (len > (1u << 20) || len == 0) {
            free(p);
            continue;
        }
        td_format f = format_of(g_files[i]);
        uint8_t *m = malloc(len);
        ck_assert_ptr_nonnull(m);
        for (int k = 0; k < 200; k++) {
            memcpy(m, p, len);
            for (int flips = 1 + k % 4; flips--;) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                /* Mostly where the metadata is: the first 4 KiB and (zip) the last 1 KiB. */
                size_t at = (x >> 8) % 3 == 0 ? (size_t)(x >> 20) % len
                            : (x >> 8) % 3 == 1
                                ? (size_t)(x >> 20) % (len < 4096 ? len : 4096)
                                : len - 1 - (size_t)(x >> 20) % (len < 1024 ? len : 1024);
                m[at] = (uint8_t)(x >> 40);
            }
            ck_assert_int_eq(tu_write_file(work, m, len), 0);
            int fd = open(work, O_RDONLY | O_CLOEXEC);
            ck_assert_int_ge(fd, 0);
            td__table a, b;
            td_error ea = {0}, eb = {0};
            int ra = index_mem(f, m, len, &a, &ea);
            int rb = index_fd(f, fd, len, 0, &b, &eb);
            close(fd);
            ck_assert_msg(ra == rb && !strcmp(ea.message, eb.message), "%s #%d: %d (%s) vs %d (%s)",
                          g_files[i], k, ra, ea.message, rb, eb.message);
            ck_assert_msg(ra || td__table_equal(&a, &b), "%s #%d: tables differ", g_files[i], k);
            runs++;
            refused += ra != 0;
            td__table_destroy(&a);
            td__table_destroy(&b);
        }
        free(m);
        free(p);
    }
    printf("reader: %ld mutated files indexed both ways alike (%ld refused, %ld accepted)\n", runs,
           refused, runs - refused);
    /* Both outcomes were compared, not only refusals. */
    ck_assert_int_gt(refused, 0);
    ck_assert_int_gt(runs - refused, 0);
}
END_TEST

START_TEST(test_budget)
{
    char path[300];
    snprintf(path, sizeof path, "%s/vocab.gguf", g_dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    off_t len = lseek(fd, 0, SEEK_END);
    td__table t;
    td_error err = {0};
    /* The vocabulary is 4.6 MB: a budget of 1 MiB cannot hold it. */
    int rc = index_fd(TD_FORMAT_GGUF, fd, (uint64_t)len, 1u << 20, &t, &err);
    ck_assert_int_eq(rc, TD_ELIMIT);
    ck_assert_msg(strstr(err.message, "file:") && strstr(err.message, "metadata"), "%s",
                  err.message);
    td__table_destroy(&t);
    memset(&err, 0, sizeof err);
    TU_OK(index_fd(TD_FORMAT_GGUF, fd, (uint64_t)len, 16u << 20, &t, &err), &err);
    ck_assert_uint_eq(t.n, 1);
    td__table_destroy(&t);
    close(fd);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("reader");
    TCase *tc = tcase_create("reader");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_same_tables);
    tcase_add_test(tc, test_shrinking_file);
    tcase_add_test(tc, test_mutations);
    tcase_add_test(tc, test_budget);
    suite_add_tcase(s, tc);
    return tu_run(s);
}

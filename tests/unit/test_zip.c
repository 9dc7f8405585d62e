/*
 * test_zip.c - the zip layer: archives written by Python's zipfile (stored, deflated, zip64 on
 * every member as numpy writes, data descriptors from a non-seekable stream, 66000 members),
 * hand-made archives with every field under control (zip64 directory and end records, and
 * some 60 hostile variants, each with the error it must give), truncation at every length,
 * single-byte corruption at every position, and the writer, read back by our reader, Python's
 * zipfile and Info-ZIP's unzip.
 */
#include "common.h"
#include "testutil.h"
#include "writer.h"
#include "flate.h"
#include "zip.h"
#include "zip_writer.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

static char g_dir[64];

/* tests/py/zip.py gen: good archives with good.txt (file, member count, then "name i size method"
 * per member; member i's content is content(i, size)), hostile ones with bad.txt (file, stage,
 * error, message part). */
static void suite_setup(void)
{
    tu_tmpdir(g_dir);
    const char *args[] = {g_dir, NULL};
    ck_assert_int_eq(tu_py("zip.py", "gen", args), 0);
}

static void suite_teardown(void)
{
    tu_rmtree(g_dir);
}

static uint8_t content_byte(unsigned i, size_t j)
{
    return (uint8_t)((i * 7u + j * 13u) % 251u);
}

static uint8_t *content(unsigned i, size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    for (size_t j = 0; j < n; j++)
        p[j] = content_byte(i, j);
    return p;
}

static uint8_t *load(const char *name, size_t *len)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    uint8_t *p = tu_read_file(path, len);
    ck_assert_msg(p != NULL, "cannot read %s", path);
    return p;
}

/* Checks every member's bytes (stored: in place; deflated: td__flate_inflate) and
 * td__zip_verify. */
static void check_members_content(const uint8_t *base, size_t len, const td__zip_archive *z)
{
    for (size_t i = 0; i < z->n; i++) {
        const td__zip_member *m = &z->members[i];
        ck_assert(m->data_offset + m->csize <= len);
        ck_assert(m->end_offset <= z->cd_offset);
        uint8_t *buf = malloc(m->usize ? m->usize : 1);
        uint32_t crc = 0;
        td_error err = {0};
        if (m->method == ZIP_METHOD_STORED) {
            memcpy(buf, base + m->data_offset, m->usize);
            crc = td__flate_crc32(0, buf, m->usize);
        } else {
            TU_OK(td__flate_inflate(base + m->data_offset, m->csize, 0, buf, m->usize, &crc, "t",
                                    &err),
                  &err);
            /* the whole-buffer path (libdeflate when built with it) agrees */
            uint8_t *buf2 = malloc(m->usize ? m->usize : 1);
            uint32_t crc2 = 0;
            TU_OK(td__flate_inflate_whole(base + m->data_offset, m->csize, buf2, m->usize, &crc2,
                                          "t", &err),
                  &err);
            ck_assert_uint_eq(crc2, crc);
            ck_assert(memcmp(buf, buf2, m->usize) == 0);
            free(buf2);
        }
        ck_assert_uint_eq(crc, m->crc32);
        free(buf);
    }
}

START_TEST(test_good_archives)
{
    char path[256];
    snprintf(path, sizeof path, "%s/good.txt", g_dir);
    FILE *f = fopen(path, "r");
    ck_assert(f != NULL);
    char fn[128];
    size_t count;
    int files = 0;
    while (fscanf(f, "%127s %zu", fn, &count) == 2) {
        size_t len;
        uint8_t *base = load(fn, &len);
        td__zip_archive z;
        td_error err = {0};
        int rc = td__zip_open(TD__RD_MEM(base, len, fn), &z, &err);
        ck_assert_msg(rc == 0, "%s: %s", fn, err.message);
        ck_assert_msg(z.n == count, "%s: %zu members, expected %zu", fn, z.n, count);
        for (size_t i = 0; i < count; i++) {
            char name[128];
            unsigned idx, method;
            size_t size;
            ck_assert_int_eq(fscanf(f, "%127s %u %zu %u", name, &idx, &size, &method), 4);
            const td__zip_member *m = &z.members[i];
            ck_assert_msg(m->name_len == strlen(name) && memcmp(m->name, name, m->name_len) == 0,
                          "%s: member %zu is '%.*s', expected '%s'", fn, i, (int)m->name_len,
                          m->name, name);
            ck_assert_uint_eq(m->usize, size);
            ck_assert_uint_eq(m->method, method);
            uint8_t *want = content(idx, size);
            uint8_t *got = malloc(size ? size : 1);
            uint32_t crc = 0;
            if (method == ZIP_METHOD_STORED) {
                ck_assert_uint_eq(m->csize, size);
                memcpy(got, base + m->data_offset, size);
            } else {
                TU_OK(td__flate_inflate(base + m->data_offset, m->csize, 0, got, size, &crc, name,
                                        &err),
                      &err);
                ck_assert_uint_eq(crc, m->crc32);
                /* and with a skip: the first bytes are dropped, the CRC still covers them */
                if (size > 10) {
                    uint32_t crc2 = 0;
                    TU_OK(td__flate_inflate(base + m->data_offset, m->csize, 10, got + 10,
                                            size - 10, &crc2, name, &err),
                          &err);
                    ck_assert_uint_eq(crc2, m->crc32);
                }
            }
            ck_assert_msg(memcmp(got, want, size) == 0, "%s: %s content differs", fn, name);
            free(got);
            free(want);
        }
        TU_OK(td__zip_verify(base, len, fn, &err), &err);
        if (strcmp(fn, "py_many.zip") == 0 || strcmp(fn, "craft_z64.zip") == 0)
            ck_assert_msg(z.zip64, "%s should have zip64 end records", fn);
        td__zip_close(&z);
        free(base);
        files++;
    }
    fclose(f);
    ck_assert_int_ge(files, 16);
}
END_TEST

START_TEST(test_bad_archives)
{
    char path[256];
    snprintf(path, sizeof path, "%s/bad.txt", g_dir);
    FILE *f = fopen(path, "r");
    ck_assert(f != NULL);
    char line[512];
    int files = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        char *fn = strtok(line, "\t"), *stage = strtok(NULL, "\t"), *code = strtok(NULL, "\t"),
             *sub = strtok(NULL, "\t");
        ck_assert(fn && stage && code && sub);
        size_t len;
        uint8_t *base = load(fn, &len);
        td__zip_archive z;
        td_error err = {0};
        int rc = td__zip_open(TD__RD_MEM(base, len, fn), &z, &err);
        if (strcmp(stage, "verify") == 0) {
            ck_assert_msg(rc == 0, "%s: open failed: %s", fn, err.message);
            /* inflating alone must fail too, except for a bad CRC, which only the CRC shows */
            for (size_t i = 0; i < z.n; i++) {
                const td__zip_member *m = &z.members[i];
                if (m->method != ZIP_METHOD_DEFLATE)
                    continue;
                uint8_t *buf = malloc(m->usize ? m->usize : 1);
                uint32_t crc;
                td_error e2 = {0};
                int r2 = td__flate_inflate(base + m->data_offset, m->csize, 0, buf, m->usize, &crc,
                                           fn, &e2);
                if (strcmp(code, "TD_ECHECKSUM") == 0)
                    ck_assert(r2 == 0 && crc != m->crc32);
                else
                    ck_assert_msg(r2 != 0, "%s: inflate passed", fn);
                /* the whole-buffer path fails the same way, with the same message */
                td_error e3 = {0};
                uint32_t crc3;
                int r3 = td__flate_inflate_whole(base + m->data_offset, m->csize, buf, m->usize,
                                                 &crc3, fn, &e3);
                ck_assert_int_eq(r3, r2);
                ck_assert_str_eq(e3.message, e2.message);
                if (r2 == 0)
                    ck_assert_uint_eq(crc3, crc);
                free(buf);
            }
            td__zip_close(&z);
            rc = td__zip_verify(base, len, fn, &err);
        } else if (rc == 0) {
            td__zip_close(&z);
        }
        ck_assert_msg(rc != 0, "%s: accepted", fn);
        ck_assert_msg(strcmp(td_err_name(rc), code) == 0, "%s: %s (%s), expected %s", fn,
                      td_err_name(rc), err.message, code);
        ck_assert_msg(strstr(err.message, sub) != NULL, "%s: message '%s' lacks '%s'", fn,
                      err.message, sub);
        ck_assert_msg(strstr(err.message, fn) != NULL, "%s: message '%s' lacks the file name", fn,
                      err.message);
        free(base);
        files++;
    }
    fclose(f);
    ck_assert_int_ge(files, 49);
}
END_TEST

/* Small good archives for the exhaustive tests. */
static const char *small_files[] = {"py_stored_s.zip",   "py_deflated_s.zip",    "py_force64_s.zip",
                                    "py_stream_s.zip",   "py_stream64_s.zip",    "craft_z64.zip",
                                    "craft_local64.zip", "craft_desc_nosig.zip", "py_empty.zip"};

/* Opens p[0..n) from an exact-size heap copy, so that ASan sees any read past the end. */
static int open_exact(const uint8_t *p, size_t n, td__zip_archive *z, td_error *err)
{
    uint8_t *c = malloc(n ? n : 1);
    memcpy(c, p, n);
    int rc = td__zip_open(TD__RD_MEM(c, n, "cut.zip"), z, err);
    if (rc == 0) {
        check_members_content(c, n, z);
        td__zip_close(z);
    }
    free(c);
    return rc;
}

START_TEST(test_truncation_everywhere)
{
    for (size_t k = 0; k < sizeof small_files / sizeof small_files[0]; k++) {
        size_t len;
        uint8_t *base = load(small_files[k], &len);
        td__zip_archive z;
        td_error err = {0};
        /* Every prefix (sampled inside the one long member's data): the end record is gone
         * or cut. */
        for (size_t n = 0; n < len; n++) {
            err.message[0] = '\0';
            ck_assert_msg(open_exact(base, n, &z, &err) != 0, "%s cut at %zu accepted",
                          small_files[k], n);
            ck_assert(err.message[0] != '\0');
        }
        /* The end records kept, everything from position c up to them dropped: central
         * directory entries, local headers and data cut at every byte. (None of these
         * files has a comment, so the end record is the last 22 bytes.) */
        size_t keep = 22;
        if (len >= 42 && memcmp(base + len - 42, "PK\x06\x07", 4) == 0)
            keep = len - (size_t)td__le64(base + len - 42 + 8);
        uint8_t *buf = malloc(len);
        for (size_t c = 0; c + keep < len; c++) {
            memcpy(buf, base, c);
            memcpy(buf + c, base + len - keep, keep);
            ck_assert_msg(open_exact(buf, c + keep, &z, &err) != 0,
                          "%s: cut at %zu with end records kept: accepted", small_files[k], c);
        }
        free(buf);
        free(base);
    }
}
END_TEST

START_TEST(test_corruption_everywhere)
{
    static const uint8_t flips[] = {0x01, 0x80, 0xff};
    long opened = 0, refused = 0;
    for (size_t k = 0; k < sizeof small_files / sizeof small_files[0]; k++) {
        size_t len;
        uint8_t *base = load(small_files[k], &len);
        /* Headers, descriptors and the directory are corrupted at every byte; member data
         * (which td__zip_open never reads) only near its ends. */
        td__zip_archive z;
        td_error err = {0};
        TU_OK(td__zip_open(TD__RD_MEM(base, len, small_files[k]), &z, &err), &err);
        uint8_t *in_data = calloc(len, 1);
        for (size_t i = 0; i < z.n; i++)
            for (uint64_t b = z.members[i].data_offset;
                 b < z.members[i].data_offset + z.members[i].csize; b++)
                in_data[b] = b - z.members[i].data_offset >= 16 &&
                             z.members[i].data_offset + z.members[i].csize - b > 16;
        td__zip_close(&z);
        for (size_t pos = 0; pos < len; pos++) {
            if (in_data[pos])
                continue;
            for (size_t f = 0; f < sizeof flips; f++) {
                uint8_t *c = malloc(len);
                memcpy(c, base, len);
                c[pos] ^= flips[f];
                int rc = td__zip_open(TD__RD_MEM(c, len, "mut.zip"), &z, &err);
                if (rc == 0) {
                    opened++;
                    for (size_t i = 0; i < z.n; i++) {
                        ck_assert(z.members[i].data_offset <= len);
                        ck_assert(z.members[i].csize <= len - z.members[i].data_offset);
                        ck_assert(z.members[i].end_offset <= z.cd_offset);
                    }
                    td__zip_close(&z);
                    td__zip_verify(c, len, "mut.zip", &err); /* may pass or fail; must not crash */
                } else {
                    refused++;
                    ck_assert(err.message[0] != '\0');
                }
                free(c);
            }
        }
        free(in_data);
        free(base);
    }
    ck_assert_int_gt(refused, 1000);
    printf("corruption: %ld mutated archives refused, %ld opened\n", refused, opened);
}
END_TEST

/* Writer ---------------------------------------------------------------------------------- */

typedef struct wmember {
    const char *name;
    unsigned idx;
    size_t size;
    unsigned method;
    uint64_t align_at; /* stored: data byte that must be 64-aligned */
} wmember;

/* Writes members with td__zip_writer into a memory writer, piece by piece (uneven pieces). */
static uint8_t *write_zip(const wmember *ms, size_t n, int force64, size_t *len)
{
    td__writer w;
    td_error err = {0};
    TU_OK(td__writer_init(&w, -1, "mem.zip", &err), &err);
    td__zip_writer zw;
    td__zip_writer_init(&zw, &w, "mem.zip");
    zw.force_zip64 = force64;
    for (size_t i = 0; i < n; i++) {
        uint8_t *d = content(ms[i].idx, ms[i].size);
        TU_OK(td__zip_writer_begin(&zw, ms[i].name, ms[i].method, -1, ms[i].size, 64,
                                   ms[i].align_at, &err),
              &err);
        size_t off = 0, piece = 1;
        while (off < ms[i].size) {
            size_t k = ms[i].size - off < piece ? ms[i].size - off : piece;
            /* the last piece through td__zip_writer_data_last: with libdeflate, a deflated member
             * is then zlib blocks (flushed) followed by libdeflate blocks */
            if (off + k == ms[i].size)
                TU_OK(td__zip_writer_data_last(&zw, d + off, k, &err), &err);
            else
                TU_OK(td__zip_writer_data(&zw, d + off, k, &err), &err);
            off += k;
            piece = piece * 3 + 1;
        }
        TU_OK(td__zip_writer_end(&zw, &err), &err);
        free(d);
    }
    TU_OK(td__zip_writer_finish(&zw, &err), &err);
    td__zip_writer_destroy(&zw);
    uint8_t *p = td__writer_take(&w, len);
    td__writer_destroy(&w);
    return p;
}

/* Checks a written archive with our reader, Python's zipfile and Info-ZIP's unzip. */
static void check_written(const uint8_t *p, size_t len, const wmember *ms, size_t n)
{
    td__zip_archive z;
    td_error err = {0};
    TU_OK(td__zip_open(TD__RD_MEM(p, len, "mem.zip"), &z, &err), &err);
    ck_assert_uint_eq(z.n, n);
    for (size_t i = 0; i < n; i++) {
        const td__zip_member *m = &z.members[i];
        ck_assert(m->name_len == strlen(ms[i].name) && !memcmp(m->name, ms[i].name, m->name_len));
        ck_assert_uint_eq(m->usize, ms[i].size);
        ck_assert_uint_eq(m->method, ms[i].method);
        if (ms[i].method == ZIP_METHOD_STORED)
            ck_assert_msg((m->data_offset + ms[i].align_at) % 64 == 0,
                          "%s: data at %llu, +%llu not aligned", ms[i].name,
                          (unsigned long long)m->data_offset, (unsigned long long)ms[i].align_at);
    }
    check_members_content(p, len, &z);
    td__zip_close(&z);
    TU_OK(td__zip_verify(p, len, "mem.zip", &err), &err);

    char dir[64], path[128];
    tu_tmpdir(dir);
    snprintf(path, sizeof path, "%s/w.zip", dir);
    ck_assert_int_eq(tu_write_file(path, p, len), 0);
    const char **args = calloc(n + 2, sizeof *args);
    char(*specs)[160] = calloc(n + 1, sizeof *specs);
    args[0] = path;
    for (size_t i = 0; i < n; i++) {
        snprintf(specs[i], sizeof specs[i], "%s:%u:%zu:%u:%lld", ms[i].name, ms[i].idx, ms[i].size,
                 ms[i].method, (long long)ms[i].align_at);
        args[i + 1] = specs[i];
    }
    ck_assert_msg(tu_py("zip.py", "check", args) == 0, "Python's zipfile disagrees with %s", path);
    ck_assert_msg(access("/usr/bin/unzip", X_OK) == 0,
                  "/usr/bin/unzip is missing: apt-get install unzip (scripts/install-deps.sh)");
    char cmd[256];
    snprintf(cmd, sizeof cmd, "/usr/bin/unzip -tqq %s >/dev/null 2>&1", path);
    ck_assert_msg(system(cmd) == 0, "unzip -t refuses %s", path);
    free(args);
    free(specs);
    tu_rmtree(dir);
}

START_TEST(test_writer_roundtrip)
{
    const wmember ms[] = {
        {"a.npy", 1, 1000, ZIP_METHOD_STORED, 128},
        {"b.npy", 2, 0, ZIP_METHOD_STORED, 0},
        {"dir/c.npy", 3, 100000, ZIP_METHOD_DEFLATE, 0},
        {"d.npy", 4, 7, ZIP_METHOD_STORED, 3},
        {"e.npy", 5, 0, ZIP_METHOD_DEFLATE, 0},
        {"f\xc3\xa9.npy", 6, 333, ZIP_METHOD_STORED, 64},
        {"g.npy", 7, 65536, ZIP_METHOD_STORED, 1},
    };
    size_t n = sizeof ms / sizeof ms[0];
    for (int force = 0; force <= 1; force++) {
        size_t len;
        uint8_t *p = write_zip(ms, n, force, &len);
        check_written(p, len, ms, n);
        td__zip_archive z;
        td_error err = {0};
        TU_OK(td__zip_open(TD__RD_MEM(p, len, "mem.zip"), &z, &err), &err);
        ck_assert_int_eq(z.zip64, force);
        td__zip_close(&z);
        /* Saving the same members twice gives the same bytes (fixed timestamps). */
        size_t len2;
        uint8_t *p2 = write_zip(ms, n, force, &len2);
        ck_assert(len == len2 && memcmp(p, p2, len) == 0);
        free(p2);
        free(p);
    }
}
END_TEST

START_TEST(test_writer_alignment_every_offset)
{
    /* A first member of every size from 0 to 130 moves the second member's header through
     * every residue mod 64; the second member's data must land aligned each time. */
    for (size_t s = 0; s <= 130; s++) {
        const wmember ms[] = {
            {"pad.bin", 1, s, ZIP_METHOD_STORED, 0},
            {"x.npy", 2, 200, ZIP_METHOD_STORED, 128},
        };
        size_t len;
        uint8_t *p = write_zip(ms, 2, 0, &len);
        td__zip_archive z;
        td_error err = {0};
        TU_OK(td__zip_open(TD__RD_MEM(p, len, "mem.zip"), &z, &err), &err);
        ck_assert_uint_eq((z.members[0].data_offset) % 64, 0);
        ck_assert_uint_eq((z.members[1].data_offset + 128) % 64, 0);
        check_members_content(p, len, &z);
        td__zip_close(&z);
        free(p);
    }
    /* and once through the outside readers */
    const wmember ms[] = {{"pad.bin", 1, 3, ZIP_METHOD_STORED, 0},
                          {"x.npy", 2, 200, ZIP_METHOD_STORED, 128}};
    size_t len;
    uint8_t *p = write_zip(ms, 2, 0, &len);
    check_written(p, len, ms, 2);
    free(p);
}
END_TEST

START_TEST(test_writer_many_members)
{
    /* 70000 members: more than a classic end record can count, so zip64 end records. */
    size_t n = 70000;
    wmember *ms = calloc(n, sizeof *ms);
    char(*names)[16] = calloc(n, sizeof *names);
    for (size_t i = 0; i < n; i++) {
        snprintf(names[i], sizeof names[i], "m%zu", i);
        ms[i] = (wmember){names[i], (unsigned)i, i % 3, i % 2 ? ZIP_METHOD_DEFLATE : 0, 0};
    }
    size_t len;
    uint8_t *p = write_zip(ms, n, 0, &len);
    td__zip_archive z;
    td_error err = {0};
    TU_OK(td__zip_open(TD__RD_MEM(p, len, "mem.zip"), &z, &err), &err);
    ck_assert_uint_eq(z.n, n);
    ck_assert_int_eq(z.zip64, 1);
    check_members_content(p, len, &z);
    td__zip_close(&z);
    char dir[64], path[128];
    tu_tmpdir(dir);
    snprintf(path, sizeof path, "%s/many.zip", dir);
    ck_assert_int_eq(tu_write_file(path, p, len), 0);
    const char *args[] = {path, NULL};
    ck_assert_int_eq(tu_py("zip.py", "many", args), 0);
    tu_rmtree(dir);
    free(p);
    free(names);
    free(ms);
}
END_TEST

START_TEST(test_writer_misuse)
{
    td__writer w;
    td_error err = {0};
    TU_OK(td__writer_init(&w, -1, "mem.zip", &err), &err);
    td__zip_writer zw;
    td__zip_writer_init(&zw, &w, "mem.zip");
    static const char *bad_names[] = {"", "../x.npy", "a/../../x", "/abs.npy", "a\\b.npy", ".."};
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++)
        ck_assert_int_eq(td__zip_writer_begin(&zw, bad_names[i], 0, -1, 1, 64, 0, &err),
                         TD_EFORMAT);
    ck_assert_int_eq(td__zip_writer_begin(&zw, "ok", 12, -1, 1, 64, 0, &err), TD_EINVAL);
    ck_assert_int_eq(td__zip_writer_begin(&zw, "ok", 0, -1, 1, 48, 0, &err), TD_EINVAL);
    ck_assert_int_eq(td__zip_writer_data(&zw, "x", 1, &err), TD_EINVAL);
    TU_OK(td__zip_writer_begin(&zw, "ok", 8, -1, 3, 64, 0, &err), &err);
    ck_assert_int_eq(td__zip_writer_begin(&zw, "again", 8, -1, 3, 64, 0, &err), TD_EINVAL);
    ck_assert_int_eq(td__zip_writer_data(&zw, "abcd", 4, &err), TD_EINVAL); /* more than declared */
    TU_OK(td__zip_writer_data(&zw, "ab", 2, &err), &err);
    ck_assert_int_eq(td__zip_writer_end(&zw, &err), TD_EINVAL); /* fewer than declared */
    ck_assert_int_eq(td__zip_writer_finish(&zw, &err), TD_EINVAL);
    td__zip_writer_destroy(&zw); /* mid-member, with zlib state: must not leak (ASan) */
    td__writer_destroy(&w);
}
END_TEST

START_TEST(test_writer_fd)
{
    /* Through a real file descriptor: the local headers are patched with pwrite. */
    int fds = tu_count_fds();
    char dir[64], path[128];
    tu_tmpdir(dir);
    snprintf(path, sizeof path, "%s/fd.zip", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ck_assert_int_ge(fd, 0);
    td__writer w;
    td_error err = {0};
    TU_OK(td__writer_init(&w, fd, path, &err), &err);
    td__zip_writer zw;
    td__zip_writer_init(&zw, &w, path);
    const wmember ms[] = {{"a.npy", 1, 3000000, ZIP_METHOD_STORED, 128},
                          {"b.npy", 2, 2000000, ZIP_METHOD_DEFLATE, 0}};
    for (size_t i = 0; i < 2; i++) {
        uint8_t *d = content(ms[i].idx, ms[i].size);
        TU_OK(td__zip_writer_begin(&zw, ms[i].name, ms[i].method, -1, ms[i].size, 64,
                                   ms[i].align_at, &err),
              &err);
        TU_OK(td__zip_writer_data(&zw, d, ms[i].size, &err), &err);
        TU_OK(td__zip_writer_end(&zw, &err), &err);
        free(d);
    }
    TU_OK(td__zip_writer_finish(&zw, &err), &err);
    TU_OK(td__writer_flush(&w), &err);
    td__zip_writer_destroy(&zw);
    td__writer_destroy(&w);
    close(fd);
    size_t len;
    uint8_t *p = tu_read_file(path, &len);
    check_written(p, len, ms, 2);
    free(p);
    tu_rmtree(dir);
    ck_assert_int_eq(tu_count_fds(), fds);
}
END_TEST

START_TEST(test_inflate_prefix)
{
    size_t len;
    uint8_t *base = load("py_deflated.zip", &len);
    td__zip_archive z;
    td_error err = {0};
    TU_OK(td__zip_open(TD__RD_MEM(base, len, "py_deflated.zip"), &z, &err), &err);
    const td__zip_member *m = &z.members[3]; /* 70000 bytes */
    ck_assert_uint_eq(m->usize, 70000);
    uint8_t buf[100];
    size_t got;
    TU_OK(td__flate_inflate_prefix(base + m->data_offset, m->csize, buf, 37, &got, "p", &err),
          &err);
    ck_assert_uint_eq(got, 37);
    for (size_t j = 0; j < 37; j++)
        ck_assert_uint_eq(buf[j], content_byte(3, j));
    /* a stream shorter than the cap ends early */
    m = &z.members[1]; /* 1 byte */
    TU_OK(td__flate_inflate_prefix(base + m->data_offset, m->csize, buf, 100, &got, "p", &err),
          &err);
    ck_assert_uint_eq(got, 1);
    /* a cut stream is refused */
    m = &z.members[3];
    ck_assert_int_eq(td__flate_inflate_prefix(base + m->data_offset, 3, buf, 100, &got, "p", &err),
                     TD_ETRUNC);
    td__zip_close(&z);
    free(base);
}
END_TEST

/* More than 4 GiB: a member whose size and a member whose offset need zip64, through a real
 * file. Writes about 4.3 GB into $TMPDIR: its own ctest test, test_zip_huge (label `slow`). */
START_TEST(test_writer_huge)
{
    char dir[64], path[128];
    tu_tmpdir(dir);
    struct statvfs vfs;
    ck_assert_int_eq(statvfs(dir, &vfs), 0);
    ck_assert_msg((uint64_t)vfs.f_bavail * vfs.f_frsize > (4ull << 30) + (256u << 20),
                  "test_writer_huge needs 4.4 GB free in %s (TMPDIR), it has %llu MB", dir,
                  (unsigned long long)((uint64_t)vfs.f_bavail * vfs.f_frsize >> 20));
    snprintf(path, sizeof path, "%s/huge.zip", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ck_assert_int_ge(fd, 0);
    td__writer w;
    td_error err = {0};
    TU_OK(td__writer_init(&w, fd, path, &err), &err);
    td__zip_writer zw;
    td__zip_writer_init(&zw, &w, path);
    uint64_t big = (4ull << 30) + 4096;
    size_t chunk = 64u << 20;
    uint8_t *d = content(9, chunk);
    TU_OK(td__zip_writer_begin(&zw, "big.bin", ZIP_METHOD_STORED, -1, big, 64, 0, &err), &err);
    for (uint64_t off = 0; off < big; off += chunk) {
        size_t k = big - off < chunk ? (size_t)(big - off) : chunk;
        TU_OK(td__zip_writer_data(&zw, d, k, &err), &err);
    }
    TU_OK(td__zip_writer_end(&zw, &err), &err);
    uint8_t *small = content(3, 1000);
    TU_OK(td__zip_writer_begin(&zw, "after.bin", ZIP_METHOD_DEFLATE, -1, 1000, 64, 0, &err), &err);
    TU_OK(td__zip_writer_data(&zw, small, 1000, &err), &err);
    TU_OK(td__zip_writer_end(&zw, &err), &err);
    TU_OK(td__zip_writer_finish(&zw, &err), &err);
    TU_OK(td__writer_flush(&w), &err);
    td__zip_writer_destroy(&zw);
    td__writer_destroy(&w);
    struct stat st;
    ck_assert_int_eq(fstat(fd, &st), 0);
    uint8_t *base = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    ck_assert(base != MAP_FAILED);
    td__zip_archive z;
    TU_OK(td__zip_open(TD__RD_MEM(base, (size_t)st.st_size, path), &z, &err), &err);
    ck_assert_uint_eq(z.n, 2);
    ck_assert_uint_eq(z.members[0].usize, big);
    ck_assert_uint_gt(z.members[1].local_offset, 0xffffffffull);
    ck_assert_int_eq(z.zip64, 1);
    td__zip_close(&z);
    TU_OK(td__zip_verify(base, (size_t)st.st_size, path, &err), &err);
    munmap(base, (size_t)st.st_size);
    close(fd);
    const char *args[] = {path, NULL};
    ck_assert_int_eq(tu_py("zip.py", "huge", args), 0);
    free(small);
    free(d);
    tu_rmtree(dir);
}
END_TEST

static Suite *zip_suite(void)
{
    Suite *s = suite_create("zip");
    TCase *tc = tcase_create("zip");
    tcase_add_unchecked_fixture(tc, suite_setup, suite_teardown);
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_good_archives);
    tcase_add_test(tc, test_bad_archives);
    tcase_add_test(tc, test_truncation_everywhere);
    tcase_add_test(tc, test_corruption_everywhere);
    tcase_add_test(tc, test_writer_roundtrip);
    tcase_add_test(tc, test_writer_alignment_every_offset);
    tcase_add_test(tc, test_writer_many_members);
    tcase_add_test(tc, test_writer_misuse);
    tcase_add_test(tc, test_writer_fd);
    tcase_add_test(tc, test_inflate_prefix);
    suite_add_tcase(s, tc);
    /* the 4.3 GB archive: tag `huge`, run by ctest as test_zip_huge */
    TCase *huge = tcase_create("huge");
    tcase_set_tags(huge, "huge");
    tcase_set_timeout(huge, 600);
    tcase_add_test(huge, test_writer_huge);
    suite_add_tcase(s, huge);
    return s;
}

int main(void)
{
    printf("deflate engine: %s\n", td__flate_engine());
    SRunner *sr = srunner_create(zip_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

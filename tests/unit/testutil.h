/*
 * testutil.h - helpers for the Check tests: paths, temporary directories, descriptor counts,
 * running numpy, the llama.cpp oracle.
 */
#ifndef TD_TESTUTIL_H
#define TD_TESTUTIL_H

#include "tensord.h"

#include <check.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The path of tests/data/rel ($TD_TESTDATA/rel; ctest sets TD_TESTDATA), written to out (cap
 * bytes); returns out. */
const char *tu_testdata(const char *rel, char *out, size_t cap);
/* A fresh temporary directory (mkdtemp under $TMPDIR or /tmp); out must hold 64 bytes. */
const char *tu_tmpdir(char *out);
/* Removes a directory tree made by tu_tmpdir. */
void tu_rmtree(const char *dir);
/* Number of entries in directory dir, "." and ".." aside; aborts the test if unreadable. */
int tu_count_entries(const char *dir);
/* Number of open descriptors of this process (/proc/self/fd). */
int tu_count_fds(void);
/* Number of open descriptors of process pid (/proc/PID/fd); aborts the test if unreadable. */
int tu_count_pid_fds(pid_t pid);
/* Number of mappings of this process whose line in /proc/self/maps contains what. */
int tu_count_maps(const char *what);
/* One sendmsg of p[0..n) with nfds (at most 253) descriptors attached; sendmsg's result. */
ssize_t tu_sendmsg_fds(int sock, const void *p, size_t n, const int *fds, unsigned nfds, int flags);
/* CLOCK_MONOTONIC in seconds. */
double tu_now_s(void);
/* Reads a whole file into malloc'd memory; NULL on failure. */
uint8_t *tu_read_file(const char *path, size_t *len);
/* Writes len bytes to path (truncating); 0 on success. */
int tu_write_file(const char *path, const void *p, size_t len);
/* Runs `$TD_PYTHON $TD_SOURCE_DIR/tests/py/SCRIPT CMD ARGS...` (args NULL-terminated, may be
 * NULL): the Python side of a test (numpy, zipfile), one subcommand of one script per C test.
 * Returns its exit status, or -1 when it could not run or was killed. */
int tu_py(const char *script, const char *cmd, const char *const *args);
/* SHA-256 of p[0..n) as 64 lower-case hex digits + NUL in hex[65]. */
void tu_sha256_hex(const void *p, size_t n, char hex[65]);

/* A growing byte buffer for hand-made (often hostile) files; integers little-endian. Every
 * function aborts the test when out of memory or out of bounds. Free p when done. */
typedef struct tu_buf {
    uint8_t *p;
    size_t len, cap;
} tu_buf;
void tu_buf_put(tu_buf *b, const void *p, size_t n);
void tu_buf_u8(tu_buf *b, uint8_t v);
void tu_buf_u16(tu_buf *b, uint16_t v);
void tu_buf_u32(tu_buf *b, uint32_t v);
void tu_buf_u64(tu_buf *b, uint64_t v);
void tu_buf_zeros(tu_buf *b, size_t n);
void tu_buf_pad(tu_buf *b, size_t align); /* zeros up to a multiple of align */
void tu_buf_set16(tu_buf *b, size_t at, uint16_t v);
void tu_buf_set32(tu_buf *b, size_t at, uint32_t v);
/* GGUF pieces: a string (u64 length, bytes), the header (version, tensor and KV counts), a
 * tensor info (name, ne innermost first, GGML type, offset). */
void tu_gguf_str(tu_buf *b, const char *s);
void tu_gguf_header(tu_buf *b, uint32_t version, uint64_t nt, uint64_t nkv);
void tu_gguf_tensor(tu_buf *b, const char *name, uint32_t ndims, const uint64_t *ne, uint32_t type,
                    uint64_t off);

/* Runs suite s (CK_NORMAL output) and returns the exit status for main: 0 when all passed. */
int tu_run(Suite *s);

/* tu_run for the kernel tests, which compare every kernel set the CPU can run (portable, and
 * AVX2 where the CPU has AVX2, FMA and F16C). The portable kernels run on every machine; where
 * the AVX2 ones cannot run, a run that passed returns TU_SKIP and says so, never 0. */
int tu_run_isas(Suite *s);

/* The exit status that tells ctest a test was skipped (SKIP_RETURN_CODE in tests/CMakeLists.txt);
 * .ci/run fails on any skip. */
#define TU_SKIP 77

/* llama.cpp's libggml-base.so, the oracle of the interoperability tests, at $TD_ORACLE_LIB
 * (tests/CMakeLists.txt sets it from the cache variable TD_ORACLE_LIB, by default where
 * scripts/install-oracle.sh installs it). Opened once with dlopen (RTLD_NOW | RTLD_LOCAL) and
 * kept open for the life of the process; returns the handle. When there is no file there, the
 * test cannot run: prints why and exits TU_SKIP. A file dlopen refuses exits 1. Call from main,
 * before the suite runs. */
void *tu_oracle(void);
/* The address of symbol name in the oracle (tu_oracle() first); exits 1 naming the symbol when
 * the library lacks it. */
void *tu_oracle_sym(const char *name);

/* Starts $TD_BUILD_DIR/daemon/tensord on sock with extra arguments (space-separated, may be
 * NULL), stderr appended to logpath (NULL: /dev/null), and waits until it answers a HELLO.
 * Returns its pid; aborts the test when it does not come up. */
pid_t tu_daemon_start(const char *sock, const char *logpath, const char *extra);
/* The STATUS of the daemon on sock, over a connection of its own (aborts the test on failure);
 * free with td_status_free. */
td_status *tu_daemon_status(const char *sock);
/* Sends sig and reaps the daemon; returns its wait status. */
int tu_daemon_stop(pid_t pid, int sig);

/* Runs `$TD_TENSORCTL ARGS` through the shell (args: a command line's tail, quoted as the shell
 * wants), its standard output and error together into out (cap bytes, NUL-terminated, cut when
 * longer). Returns its exit status, or -1 when it did not exit normally. */
int tu_tensorctl(const char *args, char *out, size_t cap);

/* Check assertion that an int call returned 0, printing the td_error message otherwise. */
#define TU_OK(call, errp)                                                                          \
    do {                                                                                           \
        int tu_rc_ = (call);                                                                       \
        ck_assert_msg(tu_rc_ == 0, "%s -> %d (%s): %s", #call, tu_rc_, td_err_name(tu_rc_),        \
                      (errp)->message);                                                            \
    } while (0)

#endif

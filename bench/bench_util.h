/*
 * bench_util.h - small helpers shared by the benchmark programs: a monotonic clock, medians and
 * percentiles, a fast deterministic fill, /proc readers (RSS of this process, Pss and CPU time
 * of another), and the result line every program prints.
 *
 * Result lines are what bench/run.sh parses: one line per measurement, starting with "RESULT",
 * then space-separated key=value pairs (values without spaces). Everything else a program
 * prints is commentary for the log.
 *
 * Everything here is static: each benchmark is one translation unit plus this header.
 */
#ifndef TD_BENCH_UTIL_H
#define TD_BENCH_UTIL_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Nanoseconds on the monotonic clock. */
static inline uint64_t bu_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int bu_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Sorts v[0..n) in place and returns the q-quantile (0 <= q <= 1) by the nearest-rank rule;
 * the median for q = 0.5 is the mean of the two middle values when n is even. 0 when n == 0. */
static inline double bu_quantile(double *v, size_t n, double q)
{
    if (!n)
        return 0;
    qsort(v, n, sizeof *v, bu_cmp_double);
    if (q == 0.5)
        return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    size_t k = (size_t)(q * (double)n + 0.999999);
    if (k < 1)
        k = 1;
    if (k > n)
        k = n;
    return v[k - 1];
}

/* xorshift64*: fast, deterministic, good enough to defeat zero pages and trivial compression. */
static inline uint64_t bu_rand(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* What a fill looks like:
 *   random   uniform random bits (incompressible, like nothing real but cheap to make);
 *   weights  float32 samples of roughly N(0, 0.02), like trained weights (deflate gets ~8%);
 *   smooth   float32 with 16 significant bits, slowly varying (deflate gets ~60%, fast) */
typedef enum bu_fill { BU_FILL_RANDOM, BU_FILL_WEIGHTS, BU_FILL_SMOOTH } bu_fill;

static inline int bu_fill_parse(const char *s, bu_fill *out)
{
    if (!strcmp(s, "random"))
        *out = BU_FILL_RANDOM;
    else if (!strcmp(s, "weights"))
        *out = BU_FILL_WEIGHTS;
    else if (!strcmp(s, "smooth"))
        *out = BU_FILL_SMOOTH;
    else
        return -1;
    return 0;
}

/* Fills n bytes at p (n a multiple of 4 for the float fills; a tail is filled randomly). */
static inline void bu_fill_bytes(void *p, size_t n, bu_fill kind, uint64_t seed)
{
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    uint8_t *b = p;
    size_t i = 0;
    if (kind == BU_FILL_WEIGHTS) {
        for (; i + 4 <= n; i += 4) {
            /* Sum of four uniforms: close enough to a normal for compression purposes. */
            uint64_t r = bu_rand(&s);
            double u = (double)(r & 0xffff) + (double)((r >> 16) & 0xffff) +
                       (double)((r >> 32) & 0xffff) + (double)(r >> 48);
            float f = (float)((u / 65536.0 - 2.0) * 0.035);
            memcpy(b + i, &f, 4);
        }
    } else if (kind == BU_FILL_SMOOTH) {
        for (; i + 4 <= n; i += 4) {
            float f = (float)((i / 4) % 4096) * 0.0009765625f - 2.0f;
            if ((i & 0xfffc) == 0)
                f += (float)(bu_rand(&s) & 0xff) * 0.00390625f;
            uint32_t u;
            memcpy(&u, &f, 4);
            u &= 0xffff0000u;
            memcpy(b + i, &u, 4);
        }
    }
    for (; i + 8 <= n; i += 8) {
        uint64_t r = bu_rand(&s);
        memcpy(b + i, &r, 8);
    }
    for (; i < n; i++)
        b[i] = (uint8_t)bu_rand(&s);
}

/* A field "Key:   N kB" of a /proc file, in KiB; -1 when missing or unreadable. */
static inline long long bu_proc_kib(const char *path, const char *key)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[256];
    size_t kl = strlen(key);
    long long v = -1;
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, key, kl) && line[kl] == ':') {
            v = strtoll(line + kl + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

/* Resident set of this process, KiB. */
static inline long long bu_rss_kib(void)
{
    return bu_proc_kib("/proc/self/status", "VmRSS");
}

/* Proportional set size of pid (all of it: anonymous, file and shared memory), KiB. */
static inline long long bu_pss_kib(int pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/smaps_rollup", pid);
    return bu_proc_kib(path, "Pss");
}

/* utime + stime of process pid in microseconds (/proc/PID/stat), or -1. */
static inline long long bu_proc_cpu_us(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t k = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[k] = '\0';
    char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    if (!p)
        return -1;
    unsigned long long ut = 0, st = 0;
    /* After ") ": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
     */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    long hz = sysconf(_SC_CLK_TCK);
    return (long long)((ut + st) * 1000000ull / (unsigned long long)(hz > 0 ? hz : 100));
}

/* Parses "123", "4K", "16M", "1G" (binary units). Returns 0 or -1. */
static inline int bu_parse_size(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s)
        return -1;
    unsigned shift = 0;
    switch (*end) {
    case '\0':
        break;
    case 'k':
    case 'K':
        shift = 10;
        break;
    case 'm':
    case 'M':
        shift = 20;
        break;
    case 'g':
    case 'G':
        shift = 30;
        break;
    default:
        return -1;
    }
    if (*end && end[1] && strcmp(end + 1, "iB") && strcmp(end + 1, "B"))
        return -1;
    *out = (uint64_t)v << shift;
    return 0;
}

/* Prints a fatal message and exits 1. */
__attribute__((format(printf, 1, 2), noreturn)) static inline void bu_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

#endif

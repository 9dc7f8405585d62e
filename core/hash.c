/*
 * hash.c - SipHash-1-3 and the per-table seeds (see hash.h for why this hash).
 */
#include "hash.h"
#include "common.h"

#include <sys/auxv.h>

static inline uint64_t hash__rotl(uint64_t x, int b)
{
    return (x << b) | (x >> (64 - b));
}

#define HASH__ROUND(v0, v1, v2, v3)                                                                \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = hash__rotl(v1, 13);                                                                   \
        v1 ^= v0;                                                                                  \
        v0 = hash__rotl(v0, 32);                                                                   \
        v2 += v3;                                                                                  \
        v3 = hash__rotl(v3, 16);                                                                   \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = hash__rotl(v3, 21);                                                                   \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = hash__rotl(v1, 17);                                                                   \
        v1 ^= v2;                                                                                  \
        v2 = hash__rotl(v2, 32);                                                                   \
    } while (0)

uint64_t td__hash(td__hash_seed seed, const void *p, size_t n)
{
    const uint8_t *s = p;
    uint64_t v0 = 0x736f6d6570736575ULL ^ seed.k0, v1 = 0x646f72616e646f6dULL ^ seed.k1;
    uint64_t v2 = 0x6c7967656e657261ULL ^ seed.k0, v3 = 0x7465646279746573ULL ^ seed.k1;
    size_t whole = n - n % 8;
    for (size_t i = 0; i < whole; i += 8) {
        uint64_t m = td__le64(s + i);
        v3 ^= m;
        HASH__ROUND(v0, v1, v2, v3); /* one compression round */
        v0 ^= m;
    }
    /* The last 0..7 bytes, and the length's low byte on top. */
    uint64_t b = (uint64_t)(n & 0xff) << 56;
    for (size_t j = 0; j < n % 8; j++)
        b |= (uint64_t)s[whole + j] << (8 * j);
    v3 ^= b;
    HASH__ROUND(v0, v1, v2, v3);
    v0 ^= b;
    v2 ^= 0xff;
    HASH__ROUND(v0, v1, v2, v3); /* three finalisation rounds */
    HASH__ROUND(v0, v1, v2, v3);
    HASH__ROUND(v0, v1, v2, v3);
    return v0 ^ v1 ^ v2 ^ v3;
}

td__hash_seed td__hash_seed_for(const void *owner)
{
    /* The process's secret. glibc takes its stack protector's canary from the AT_RANDOM bytes,
     * so they are not used as a key themselves but hashed into one (under fixed keys: the
     * digits of pi), which gives nothing of them away. Should the kernel not provide them, the
     * owner's address alone still varies the seed per table and per run (ASLR). */
    td__hash_seed proc = {0x243f6a8885a308d3ULL, 0x13198a2e03707344ULL};
    const uint8_t *r = (const uint8_t *)(uintptr_t)getauxval(AT_RANDOM);
    if (r) {
        td__hash_seed d0 = {0xa4093822299f31d0ULL, 0x082efa98ec4e6c89ULL};
        td__hash_seed d1 = {0x452821e638d01377ULL, 0xbe5466cf34e90c6cULL};
        proc.k0 = td__hash(d0, r, 16);
        proc.k1 = td__hash(d1, r, 16);
    }
    uint8_t msg[9];
    td__put64(msg, (uint64_t)(uintptr_t)owner);
    msg[8] = 0;
    td__hash_seed seed;
    seed.k0 = td__hash(proc, msg, sizeof msg);
    msg[8] = 1;
    seed.k1 = td__hash(proc, msg, sizeof msg);
    return seed;
}

/*
 * hash.h - the one hash for names: td_dict's index (client/dict.c), td_meta's index
 * (core/meta.c), and any later table keyed by tensor or metadata names.
 *
 * Names come from files nobody vetted. A hash anyone can compute lets a file pick thousands of
 * names that share one slot and turn every lookup into a scan (hash flooding). So the hash is
 * keyed: SipHash-1-3 (Aumasson and Bernstein; what Rust's HashMap and CPython's str hash use),
 * with a 128-bit seed the file's author does not know. Without the seed, which names collide
 * cannot be worked out, and an index stays O(1) per lookup whatever the names are.
 *
 * td__hash is a pure function of (seed, bytes, length): no state, no locale, the same value on
 * every machine and in every process that passes the same seed (words are read little-endian
 * whatever the host). That is what a table shared between processes needs: its writer chooses
 * a seed, stores it beside the table, and every reader hashes with the stored seed. The values
 * are pinned by tests/unit/test_hash.c (SipHash-1-3's reference answers); changing them would
 * change any such table's format.
 *
 * td__hash_seed_for gives each table its own seed. It holds no state either: it derives the
 * seed from the owner's address and the 16 random bytes the kernel hands every process at exec
 * (AT_RANDOM), which nothing ever writes. Two tables of one process get different seeds, so what
 * the timing of one might tell about its seed says nothing about another's.
 */
#ifndef TD_HASH_H
#define TD_HASH_H

#include <stddef.h>
#include <stdint.h>

/* SipHash's 128-bit key: k0 is bytes 0..7 of the reference key, k1 bytes 8..15, little-endian. */
typedef struct td__hash_seed {
    uint64_t k0, k1;
} td__hash_seed;

/* SipHash-1-3 of p[0..n) under seed. p may be NULL when n is 0. */
uint64_t td__hash(td__hash_seed seed, const void *p, size_t n);

/* A seed for the table at `owner` (any address the table owns, usually its own struct), unknown
 * outside this process. The same owner in the same process gets the same seed. */
td__hash_seed td__hash_seed_for(const void *owner);

#endif

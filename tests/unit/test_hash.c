/*
 * test_hash.c - td__hash, the name hash of td_dict and td_meta: SipHash-1-3's reference answers
 * (the values a table shared between processes relies on), every tail length, unaligned input,
 * and per-table seeds.
 */
#include "hash.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The reference key 00 01 .. 0f, as the SipHash paper and every implementation's tests use. */
static const td__hash_seed ref_seed = {0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL};

/* SipHash-1-3 of the message 00 01 02 .. (len bytes) under ref_seed: the reference answers
 * (Rust's SipHasher13 tests start with the first), each tail length 0..7 and whole words. */
START_TEST(test_reference_answers)
{
    static const struct {
        size_t len;
        uint64_t want;
    } cases[] = {
        {0, 0xabac0158050fc4dcULL},  {1, 0xc9f49bf37d57ca93ULL},  {7, 0xd3927d989bb11140ULL},
        {8, 0x369095118d299a8eULL},  {9, 0x25a48eb36c063de4ULL},  {15, 0xd320d86d2a519956ULL},
        {16, 0xcc4fdd1a7d908b66ULL}, {63, 0x9d199062b7bbb3a8ULL},
    };
    uint8_t msg[64];
    for (size_t i = 0; i < sizeof msg; i++)
        msg[i] = (uint8_t)i;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        uint64_t got = td__hash(ref_seed, msg, cases[k].len);
        if (got != cases[k].want)
            ck_abort_msg("%zu bytes: 0x%016llx, want 0x%016llx", cases[k].len,
                         (unsigned long long)got, (unsigned long long)cases[k].want);
    }
    /* A zero seed, on a tensor name: CPython 3.11 hashes bytes with SipHash-1-3 and, with
     * PYTHONHASHSEED=0, a zero key, and gives the same number. */
    static const char name[] = "model.layers.0.self_attn.q_proj.weight";
    td__hash_seed zero = {0, 0};
    ck_assert_uint_eq(td__hash(zero, name, strlen(name)), 0x8656cde91cac843bULL);
    ck_assert_uint_eq(td__hash(zero, NULL, 0), td__hash(zero, "", 0));
}
END_TEST

/* The value depends on the bytes only, not on where they sit, and on every byte and the length. */
START_TEST(test_bytes_and_length)
{
    const char *name = "blk.17.ffn_down.weight";
    size_t n = strlen(name);
    uint64_t h = td__hash(ref_seed, name, n);
    char *buf = malloc(n + 8);
    for (size_t off = 0; off < 8; off++) {
        memcpy(buf + off, name, n);
        ck_assert_uint_eq(td__hash(ref_seed, buf + off, n), h);
    }
    for (size_t i = 0; i < n; i++) {
        memcpy(buf, name, n);
        buf[i] ^= 1;
        ck_assert_uint_ne(td__hash(ref_seed, buf, n), h);
    }
    /* The same bytes one shorter, or with a NUL after them: other values. */
    memcpy(buf, name, n + 1);
    ck_assert_uint_ne(td__hash(ref_seed, buf, n - 1), h);
    ck_assert_uint_ne(td__hash(ref_seed, buf, n + 1), h);
    free(buf);
}
END_TEST

/* Each table gets a seed of its own; the same table always the same one. */
START_TEST(test_seeds)
{
    int a = 0, b = 0; /* only their addresses matter */
    td__hash_seed sa = td__hash_seed_for(&a), sa2 = td__hash_seed_for(&a);
    td__hash_seed sb = td__hash_seed_for(&b);
    ck_assert(sa.k0 == sa2.k0 && sa.k1 == sa2.k1);
    ck_assert(sa.k0 != sb.k0 || sa.k1 != sb.k1);
    ck_assert(sa.k0 != ref_seed.k0 || sa.k1 != ref_seed.k1);
    const char *name = "token_embd.weight";
    ck_assert_uint_ne(td__hash(sa, name, strlen(name)), td__hash(sb, name, strlen(name)));
    /* A seed is a 128-bit key: flipping a bit of either half changes the hash. */
    td__hash_seed s0 = {sa.k0 ^ 1, sa.k1}, s1 = {sa.k0, sa.k1 ^ (1ULL << 63)};
    uint64_t h = td__hash(sa, name, strlen(name));
    ck_assert_uint_ne(td__hash(s0, name, strlen(name)), h);
    ck_assert_uint_ne(td__hash(s1, name, strlen(name)), h);
}
END_TEST

/* Many similar names (what a model's tensor list looks like) spread over the low bits an index
 * uses: with 2^16 slots and 10,000 names, no slot gets more than a handful (about 4). */
START_TEST(test_spread)
{
    enum { SLOTS = 1 << 16, NAMES = 10000 };
    uint16_t *count = calloc(SLOTS, sizeof *count);
    td__hash_seed s = td__hash_seed_for(count);
    char name[64];
    unsigned most = 0;
    for (int i = 0; i < NAMES; i++) {
        int len = snprintf(name, sizeof name, "model.layers.%d.mlp.up_proj.weight", i);
        unsigned c = ++count[td__hash(s, name, (size_t)len) & (SLOTS - 1)];
        if (c > most)
            most = c;
    }
    free(count);
    ck_assert_uint_le(most, 8); /* more than 8 has odds below 1e-8 for a random hash */
}
END_TEST

static Suite *hash_suite(void)
{
    Suite *s = suite_create("hash");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_reference_answers);
    tcase_add_test(tc, test_bytes_and_length);
    tcase_add_test(tc, test_seeds);
    tcase_add_test(tc, test_spread);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(hash_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}

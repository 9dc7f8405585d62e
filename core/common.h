/*
 * common.h - internal helpers shared by every module: error reporting, checked arithmetic,
 * little-endian access. Nothing here holds state.
 */
#ifndef TD_COMMON_H
#define TD_COMMON_H

#include "tensord.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__)
#define TD__PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define TD__PRINTF(f, a)
#endif

/* Fills *err (when not NULL) with code and a formatted one-line message; returns code, so that
 * callers can write `return td__err(err, TD_EFORMAT, "%s: ...", file);`. Newlines and other
 * control characters in the formatted text are replaced by '?'. */
int td__err(td_error *err, int code, const char *fmt, ...) TD__PRINTF(3, 4);

/* Prepends "prefix: " to an error message already in *err; returns err->code (or code when err
 * is NULL). Used to add the file name to errors raised below the loader. */
int td__err_prefix(td_error *err, int code, const char *prefix);

/* Maps an errno value to a TD_E* code. */
int td__err_from_errno(int e);

/* Copies s into out (size cap) as a printable, quoted excerpt for messages: at most 48 bytes,
 * control characters and quotes escaped. Returns out. */
const char *td__quote(const char *s, size_t len, char *out, size_t cap);

/* Checked arithmetic: return false on overflow and leave *r unspecified. */
static inline bool td__mul_u64(uint64_t a, uint64_t b, uint64_t *r)
{
    return !__builtin_mul_overflow(a, b, r);
}
static inline bool td__add_u64(uint64_t a, uint64_t b, uint64_t *r)
{
    return !__builtin_add_overflow(a, b, r);
}

/* Little-endian loads and stores of unaligned bytes. */
static inline uint16_t td__le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint32_t td__le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t td__le64(const uint8_t *p)
{
    return (uint64_t)td__le32(p) | ((uint64_t)td__le32(p + 4) << 32);
}
static inline void td__put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static inline void td__put32(uint8_t *p, uint32_t v)
{
    td__put16(p, (uint16_t)v);
    td__put16(p + 2, (uint16_t)(v >> 16));
}
static inline void td__put64(uint8_t *p, uint64_t v)
{
    td__put32(p, (uint32_t)v);
    td__put32(p + 4, (uint32_t)(v >> 32));
}

#endif

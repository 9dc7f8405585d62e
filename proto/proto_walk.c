/*
 * proto_walk.c - the limits, and the pre-walk that checks untrusted msgpack bytes before
 * msgpack-c sees them.
 *
 * Why: msgpack-c's unpacker allocates n * sizeof(msgpack_object) from its zone as soon as it
 * reads an array header announcing n elements, before a single element has arrived. The 5-byte
 * body `dd ff ff ff ff` announces 2^32 - 1 elements, about 103 GB of objects (137 GB for a map).
 * The pre-walk reads every header once, keeps a running count of the elements still owed to
 * the open containers, and refuses any header whose promise cannot fit in the bytes that are
 * left (every element takes at least one byte). What passes needs at most 24 bytes of zone per
 * byte of frame (an array element is a 24-byte msgpack_object and takes at least one byte; a map
 * entry is 48 bytes and takes at least two), exactly the zone_bytes the walk reports.
 */
#include "proto.h"
#include "common.h"

#include <msgpack.h>

void td__proto_limits_resolve(const td__proto_limits *lim, td__proto_limits *out)
{
    td__proto_limits l = {0};
    if (lim)
        l = *lim;
    if (!l.max_frame)
        l.max_frame = TD__PROTO_DEFAULT_MAX_FRAME;
    if (l.max_frame > TD__PROTO_FRAME_MAX)
        l.max_frame = TD__PROTO_FRAME_MAX;
    if (!l.max_fds || l.max_fds > TD__PROTO_FDS_MAX)
        l.max_fds = TD__PROTO_FDS_MAX;
    if (!l.max_depth)
        l.max_depth = TD__PROTO_DEFAULT_MAX_DEPTH;
    if (l.max_depth > TD__PROTO_DEPTH_MAX)
        l.max_depth = TD__PROTO_DEPTH_MAX;
    if (!l.max_str)
        l.max_str = TD__PROTO_DEFAULT_MAX_STR;
    if (!l.max_count)
        l.max_count = TD__PROTO_DEFAULT_MAX_COUNT;
    if (!l.max_objects)
        l.max_objects = TD__PROTO_DEFAULT_MAX_OBJECTS;
    *out = l;
}

static uint32_t td__be16(const uint8_t *p)
{
    return (uint32_t)p[0] << 8 | p[1];
}

static uint32_t td__be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* What one header announces. */
enum { TD__W_SCALAR, TD__W_BYTES, TD__W_ARRAY, TD__W_MAP };

int td__proto_prewalk(const uint8_t *p, size_t n, const td__proto_limits *lim_in,
                      td__proto_walk *out, td_error *err)
{
    td__proto_limits lim;
    td__proto_limits_resolve(lim_in, &lim);

    /* rem[d] = elements still to read in the container open at depth d + 1. */
    uint64_t rem[TD__PROTO_DEPTH_MAX];
    uint32_t depth = 0, deepest = 0;
    uint64_t pending = 1; /* objects not yet started: the root */
    uint64_t objects = 0, zone = 0;
    size_t pos = 0;

    for (;;) {
        if (pos >= n)
            return td__err(err, TD_EPROTO, "message: truncated at byte %zu (an object is missing)",
                           pos);
        size_t at = pos;
        uint8_t b = p[pos++];
        pending--;
        if (++objects > lim.max_objects)
            return td__err(err, TD_ELIMIT, "message: more than %u objects (limit)",
                           lim.max_objects);

        int kind = TD__W_SCALAR;
        size_t hdr = 0;     /* bytes after the type byte that hold the length or value */
        uint64_t count = 0; /* payload bytes (str/bin/fixed) or elements (array/map) */
        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
            kind = TD__W_SCALAR;
        } else if (b <= 0x8f) {
            kind = TD__W_MAP;
            count = b & 0x0f;
        } else if (b <= 0x9f) {
            kind = TD__W_ARRAY;
            count = b & 0x0f;
        } else if (b <= 0xbf) {
            kind = TD__W_BYTES;
            count = b & 0x1f;
        } else {
            switch (b) {
            case 0xc4: /* bin 8 */
            case 0xd9: /* str 8 */
                kind = TD__W_BYTES;
                hdr = 1;
                break;
            case 0xc5:
            case 0xda:
                kind = TD__W_BYTES;
                hdr = 2;
                break;
            case 0xc6:
            case 0xdb:
                kind = TD__W_BYTES;
                hdr = 4;
                break;
            case 0xca: /* float 32 */
            case 0xce: /* uint 32 */
            case 0xd2: /* int 32 */
                kind = TD__W_BYTES;
                count = 4;
                break;
            case 0xcb:
            case 0xcf:
            case 0xd3:
                kind = TD__W_BYTES;
                count = 8;
                break;
            case 0xcc:
            case 0xd0:
                kind = TD__W_BYTES;
                count = 1;
                break;
            case 0xcd:
            case 0xd1:
                kind = TD__W_BYTES;
                count = 2;
                break;
            case 0xdc:
                kind = TD__W_ARRAY;
                hdr = 2;
                break;
            case 0xdd:
                kind = TD__W_ARRAY;
                hdr = 4;
                break;
            case 0xde:
                kind = TD__W_MAP;
                hdr = 2;
                break;
            case 0xdf:
                kind = TD__W_MAP;
                hdr = 4;
                break;
            case 0xc1:
                return td__err(err, TD_EPROTO, "message: byte 0xc1 (never used) at offset %zu", at);
            default: /* 0xc7-0xc9, 0xd4-0xd8: ext types */
                return td__err(err, TD_EPROTO,
                               "message: ext type 0x%02x at offset %zu is not used by the protocol",
                               b, at);
            }
        }
        if (hdr) {
            if (n - pos < hdr)
                return td__err(err, TD_EPROTO,
                               "message: header at offset %zu cut short (%zu of %zu length bytes)",
                               at, n - pos, hdr);
            count = hdr == 1 ? p[pos] : hdr == 2 ? td__be16(p + pos) : td__be32(p + pos);
            pos += hdr;
        }

        if (kind == TD__W_BYTES) {
            /* Fixed-width numbers were given kind BYTES with their width; only str and bin can
             * exceed max_str. */
            if (count > lim.max_str)
                return td__err(err, TD_ELIMIT,
                               "message: string of %llu bytes at offset %zu (limit %u)",
                               (unsigned long long)count, at, lim.max_str);
            /* The bytes of this object, and at least one byte for each pending object. */
            if (count > n - pos || pending > n - pos - count)
                return td__err(err, TD_EPROTO,
                               "message: %llu bytes announced at offset %zu, %zu left",
                               (unsigned long long)count, at, n - pos);
            pos += (size_t)count;
        } else if (kind == TD__W_ARRAY || kind == TD__W_MAP) {
            if (count > lim.max_count)
                return td__err(err, TD_ELIMIT,
                               "message: %s of %llu elements at offset %zu (limit %u)",
                               kind == TD__W_MAP ? "map" : "array", (unsigned long long)count, at,
                               lim.max_count);
            uint64_t elems = kind == TD__W_MAP ? 2 * count : count;
            if (elems > n - pos || pending > n - pos - elems)
                return td__err(err, TD_EPROTO,
                               "message: %s of %llu elements at offset %zu, only %zu bytes left",
                               kind == TD__W_MAP ? "map" : "array", (unsigned long long)count, at,
                               n - pos);
            zone +=
                count * (kind == TD__W_MAP ? sizeof(msgpack_object_kv) : sizeof(msgpack_object));
            if (elems) {
                if (depth >= lim.max_depth)
                    return td__err(err, TD_ELIMIT, "message: nesting deeper than %u at offset %zu",
                                   lim.max_depth, at);
                rem[depth++] = elems;
                if (depth > deepest)
                    deepest = depth;
                pending += elems;
                continue;
            }
            /* An empty container is complete at once; it still counts as a level. */
            if (depth + 1 > lim.max_depth)
                return td__err(err, TD_ELIMIT, "message: nesting deeper than %u at offset %zu",
                               lim.max_depth, at);
            if (depth + 1 > deepest)
                deepest = depth + 1;
        }

        /* An object is complete: close every container it completes. */
        while (depth > 0 && --rem[depth - 1] == 0)
            depth--;
        if (depth == 0)
            break;
    }
    if (pos != n)
        return td__err(err, TD_EPROTO, "message: %zu bytes after the end of the message at %zu",
                       n - pos, pos);
    if (out) {
        out->objects = objects;
        out->zone_bytes = zone;
        out->depth = deepest;
    }
    return 0;
}

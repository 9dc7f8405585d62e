/*
 * proto_internal.h - what the proto_*.c files share and nobody else needs: the encoder state
 * and the msgpack_object accessors the decoders use.
 */
#ifndef TD_PROTO_INTERNAL_H
#define TD_PROTO_INTERNAL_H

#include "proto.h"

#include <msgpack.h>

/* Encoder: a msgpack packer writing into a td__proto_out, with a size bound and a sticky
 * status, so that a message can be packed whole and checked once. */
typedef struct td__proto_enc {
    msgpack_packer pk;
    td__proto_out *out;
    size_t max;            /* bytes the out may reach, prefix included */
    int status;            /* 0, TD_ENOMEM or TD_ELIMIT */
    td__proto_limits peer; /* resolved receiver limits */
} td__proto_enc;

/* Decoder context: limits and where errors go. */
typedef struct td__proto_dec {
    const td__proto_limits *lim; /* resolved */
    td_error *err;
} td__proto_dec;

/* 1 when o is a str equal to the NUL-terminated s. */
/* The bytes of a msgpack str or bin, never NULL: msgpack-c leaves ptr NULL for an empty one, and
 * memcmp, memchr and memcpy must not be given NULL even with a length of 0. */
static inline const char *td__proto_bytes(const msgpack_object *o)
{
    const char *p = o->type == MSGPACK_OBJECT_BIN ? o->via.bin.ptr : o->via.str.ptr;
    return p ? p : "";
}

static inline int td__proto_str_is(const msgpack_object *o, const char *s)
{
    size_t n = strlen(s);
    return o->type == MSGPACK_OBJECT_STR && o->via.str.size == n &&
           memcmp(td__proto_bytes(o), s, n) == 0;
}

/* Packs the metadata m as the protocol's typed map (PROTOCOL.md, "Metadata"). Refuses what the
 * peer's limits would refuse (TD_ELIMIT) and values it cannot type (TD_EINVAL). */
int td__proto_meta_encode(td__proto_enc *e, const td_meta *m, td_error *err);

/* Builds a td_meta from the typed map o (a msgpack map). On success *out is new and owned by
 * the caller; on failure nothing is allocated. what names the message in errors. */
int td__proto_meta_decode(const td__proto_dec *d, const msgpack_object *o, const char *what,
                          td_meta **out);

/* Checks that a td__entry can travel in a LOAD_OK: layout 0, a valid dtype, at most TD_MAX_DIMS
 * non-negative dimensions, nbytes equal to dtype x shape, the region one of nregions and
 * offset + nbytes inside it. idx names the entry in messages. TD_EINVAL / TD_EPROTO as code. */
int td__proto_entry_check(const td__entry *e, size_t idx, const td__proto_region *regions,
                          uint32_t nregions, int code, const char *what, td_error *err);

#endif

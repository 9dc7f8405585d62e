/*
 * proto.h - the tensord wire protocol: messages as plain C structs, msgpack encoding and
 * strictly validated decoding, framing, and descriptor passing over Unix stream sockets.
 * PROTOCOL.md in this directory is the normative description; this header follows it.
 *
 * On the wire:
 *   1. A frame is a 4-byte little-endian body length L (1 <= L <= the receiver's max_frame),
 *      then L bytes holding exactly one msgpack map: the message.
 *   2. Descriptors travel as SCM_RIGHTS ancillary data on the sendmsg() that starts the frame and
 *      carries nothing of another frame; the message declares their number in its "fds" field.
 *   3. Every message has "type" (TD__PROTO_*) and "id" (the request id; a reply repeats it).
 *   4. A failed request is answered by an ERROR message {code, message} with a TD_E* code.
 *
 * The pieces, bottom up:
 *   - td__proto_prewalk: one pass over untrusted msgpack bytes that checks every declared
 *     length and count against the bytes left and against td__proto_limits, before msgpack-c
 *     allocates anything.
 *   - td__proto_encode / td__proto_decode: message <-> frame bytes.
 *   - td__proto_out + td__proto_send_step / td__proto_send: writing a frame with its
 *     descriptors, resumable on EAGAIN.
 *   - td__proto_receiver + td__proto_receiver_step: an incremental reader for nonblocking
 *     sockets, exact (one frame per read) or buffered (every waiting frame in one read; the
 *     daemon's per-client receiver, driven from uv_poll), and td__proto_recv_frame, the
 *     blocking form.
 *   - td__proto_send_msg / td__proto_recv_msg / td__proto_recv_msg_rx: the blocking one-call
 *     forms the client uses.
 *
 * proto/ opens no files and knows no file formats: it carries descriptors and tables.
 * Nothing here keeps global state; distinct objects may be used from distinct threads.
 */
#ifndef TD_PROTO_H
#define TD_PROTO_H

#include "tensord.h"
#include "table.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The protocol versions this code speaks. A peer agrees on one in the HELLO exchange. */
#define TD__PROTO_VERSION     1
#define TD__PROTO_MIN_VERSION 1

/* Bytes of the length prefix in front of every message. */
#define TD__PROTO_PREFIX 4

/* Hard bounds, whatever td__proto_limits says. */
#define TD__PROTO_FDS_MAX    253u                  /* the kernel's SCM_MAX_FD */
#define TD__PROTO_FRAME_MAX  (1024u * 1024 * 1024) /* 1 GiB */
#define TD__PROTO_DEPTH_MAX  32u                   /* msgpack-c's unpacker stack */
#define TD__PROTO_NAME_MAX   65535u                /* tensor names, metadata keys, file names */
#define TD__PROTO_TEXT_MAX   1024u                 /* error messages, software names */
#define TD__PROTO_FIELDS_MAX 64u                   /* keys in a message or options map */

/* Message types. A reply to request type T has type T | TD__PROTO_REPLY; ERROR answers any. */
enum {
    TD__PROTO_HELLO = 1,
    TD__PROTO_LOAD = 2,
    TD__PROTO_RELEASE = 3,
    TD__PROTO_STATUS = 4,
    TD__PROTO_EVICT = 5,
    TD__PROTO_PING = 6,
    TD__PROTO_REPLY = 0x80,
    TD__PROTO_HELLO_OK = TD__PROTO_REPLY | TD__PROTO_HELLO,
    TD__PROTO_LOAD_OK = TD__PROTO_REPLY | TD__PROTO_LOAD,
    TD__PROTO_RELEASE_OK = TD__PROTO_REPLY | TD__PROTO_RELEASE,
    TD__PROTO_STATUS_OK = TD__PROTO_REPLY | TD__PROTO_STATUS,
    TD__PROTO_EVICT_OK = TD__PROTO_REPLY | TD__PROTO_EVICT,
    TD__PROTO_PONG = TD__PROTO_REPLY | TD__PROTO_PING,
    TD__PROTO_ERROR = 0xff,
};

/* Feature bits exchanged in HELLO: a side uses a feature only when both announced it. */
enum {
    TD__PROTO_F_SNAPSHOT = 1u << 0,     /* LOAD mode SNAPSHOT is honoured */
    TD__PROTO_F_PIN = 1u << 1,          /* LOAD mode PIN is honoured */
    TD__PROTO_F_DEQUANT = 1u << 2,      /* LOAD "dequant" is honoured */
    TD__PROTO_F_EVICT_FILE = 1u << 3,   /* EVICT with a file descriptor */
    TD__PROTO_F_STATUS_FILES = 1u << 4, /* STATUS can list the cached files */
    TD__PROTO_F_MODEL = 1u << 5,        /* LOAD flag SHARD: one file of a model of several */
    TD__PROTO_F_TABLE = 1u << 6,        /* LOAD_OK carries the table as a shared memfd */
    TD__PROTO_F_QUIET = 1u << 7,        /* RELEASE flag QUIET: no RELEASE_OK */
    TD__PROTO_F_LEAN = 1u << 8          /* LOAD_OK passes no descriptor the client has */
};
#define TD__PROTO_F_ALL 0x1ffu

/* LOAD modes (PROTOCOL.md, LOAD; what each does: README.md, "The daemon"). */
enum {
    TD__PROTO_MODE_DEFAULT = 0, /* whatever the daemon's configuration says for the file */
    TD__PROTO_MODE_MAP = 1,
    TD__PROTO_MODE_SNAPSHOT = 2,
    TD__PROTO_MODE_PIN = 3,
    TD__PROTO_MODE_COUNT
};

/* STATUS request flags. */
enum {
    TD__PROTO_STATUS_FILES = 1u << 0 /* list the cached files too */
};

/* A cached file's flags in STATUS_OK. */
enum {
    TD__PROTO_FILE_PRELOADED = 1u << 0 /* a preload line of the daemon's configuration keeps it */
};

/* Receiving limits. Zero fields mean the default; every value is clamped to the hard bounds. */
typedef struct td__proto_limits {
    uint32_t max_frame;   /* body bytes of one frame; default 64 MiB */
    uint32_t max_fds;     /* descriptors on one frame; default 253 */
    uint32_t max_depth;   /* msgpack nesting (the message map is 1); default 24 */
    uint32_t max_str;     /* bytes of one str or bin; default 16 MiB */
    uint32_t max_count;   /* elements of one array or map; default 4 Mi */
    uint32_t max_objects; /* msgpack objects in one frame; default 8 Mi */
} td__proto_limits;

#define TD__PROTO_DEFAULT_MAX_FRAME   (64u * 1024 * 1024)
#define TD__PROTO_DEFAULT_MAX_DEPTH   24u
#define TD__PROTO_DEFAULT_MAX_STR     (16u * 1024 * 1024)
#define TD__PROTO_DEFAULT_MAX_COUNT   (4u * 1024 * 1024)
#define TD__PROTO_DEFAULT_MAX_OBJECTS (8u * 1024 * 1024)

/* Fills *out with lim's values, zeros replaced by the defaults and everything clamped to the
 * hard bounds. lim may be NULL (all defaults). */
void td__proto_limits_resolve(const td__proto_limits *lim, td__proto_limits *out);

/* ---------------------------------------------------------------------------------------------
 * Messages
 *
 * Ownership: a message filled by td__proto_decode owns everything it points to (strings,
 * tables, region arrays, descriptors); td__proto_msg_destroy releases it all and closes the
 * descriptors. A message built by a caller for td__proto_encode only lends its pointers and
 * descriptors: encoding copies the bytes and never closes or frees anything, and such a message
 * must not be passed to td__proto_msg_destroy.
 */

/* HELLO (client -> daemon) and HELLO_OK (daemon -> client). */
typedef struct td__proto_hello {
    uint32_t version;     /* request: highest version spoken; reply: the version agreed */
    uint32_t min_version; /* request: lowest version spoken; reply: = version */
    uint64_t features;    /* request: bits understood; reply: bits both sides will use */
    uint32_t max_frame;   /* the sender's receiving limits (0: not stated) */
    uint32_t max_fds;
    char *software; /* "libtensord 0.1.0"; may be NULL; at most TD__PROTO_TEXT_MAX bytes */
} td__proto_hello;

/* LOAD: the file travels as the frame's descriptor 0. */
typedef struct td__proto_load {
    int fd;                /* the client's open descriptor of the file */
    td_format format;      /* TD_FORMAT_AUTO: the daemon looks at the content */
    uint32_t mode;         /* TD__PROTO_MODE_* */
    uint32_t dequant;      /* 0, or the td_dtype to dequantize GGML blocks to */
    uint64_t max_inflated; /* 0: the daemon's default */
    uint64_t flags;        /* TD__PROTO_LOAD_* bits */
    char *name;            /* the file's name for messages and logs (never opened); may be NULL */
    uint64_t have;         /* feature LEAN: the entry whose flat table the client keeps from an
                              earlier LOAD_OK on this connection; 0: none */
} td__proto_load;

/* LOAD flags. SHARD: this file is one of a model the client has indexed and checked as a whole
 * (feature TD__PROTO_F_MODEL); a GGUF split other than a whole set is served as a file. */
#define TD__PROTO_LOAD_SHARD     1u
#define TD__PROTO_LOAD_FLAGS_ALL 1u
/* The most files of one model a client sends to the daemon (one LOAD and one lease each). */
#define TD__PROTO_MODEL_FILES_MAX 256u

/* One mapped buffer of a LOAD reply. */
typedef struct td__proto_region {
    int fd;         /* descriptor to mmap (read-only, MAP_SHARED) */
    uint64_t size;  /* bytes the client may map */
    uint32_t flags; /* TD__PROTO_REGION_* */
} td__proto_region;

/* Region flags. FILE: the region is the loaded file itself (not a buffer of the daemon's), so
 * a client may keep it mapped after the lease ends without holding any of the daemon's memory. */
#define TD__PROTO_REGION_FILE 1u
/* OWN (feature LEAN, only with FILE): the region is the LOAD's own descriptor, which the daemon
 * does not send back (nil on the wire, fd -1 once decoded): the client maps the descriptor it
 * sent. td__remote_take_own puts it in place. */
#define TD__PROTO_REGION_OWN 2u

/* LOAD_OK: entries name regions by their index in regions[]. The table comes in one of two
 * forms: as msgpack (`table`), or, once both sides agreed TD__PROTO_F_TABLE, as a flat table
 * (ftab/ftab.h) in a sealed memfd the client maps (`table_fd`), with the metadata inside. */
typedef struct td__proto_loaded {
    uint64_t lease;            /* non-zero; RELEASE gives it back */
    td_format format;          /* the file's format */
    td__table *table;          /* msgpack form: entries (layout 0) and meta; NULL otherwise */
    int table_fd;              /* flat form: the table's memfd; -1 otherwise */
    bool table_kept;           /* flat form, feature LEAN: the table is the one the client keeps
                                  (the LOAD's `have` is this entry): no descriptor, table_fd -1 */
    uint64_t table_size;       /* flat form: its bytes */
    uint64_t entry;            /* flat form: the daemon's entry, the same for every load of it
                                  while the daemon runs, never reused for another (non-zero) */
    td__proto_region *regions; /* nregions */
    uint32_t nregions;         /* <= FDS_MAX; each has a descriptor of the frame but OWN ones */
    /* Sending only: the bytes an earlier td__proto_encode of this same table, regions and peer
     * limits wrote after the regions (buf[tail..len) of its td__proto_out), spliced in as they
     * are instead of encoding and checking the table again; NULL to encode it. */
    const uint8_t *tail;
    size_t tail_len;
} td__proto_loaded;

/* RELEASE and RELEASE_OK. */
typedef struct td__proto_release {
    uint64_t lease;
    uint64_t flags; /* RELEASE: TD__PROTO_RELEASE_* */
} td__proto_release;

/* RELEASE flags. QUIET (feature TD__PROTO_F_QUIET): the daemon sends no RELEASE_OK. */
#define TD__PROTO_RELEASE_QUIET 1u

/* STATUS request. */
typedef struct td__proto_status_req {
    uint64_t flags; /* TD__PROTO_STATUS_* */
} td__proto_status_req;

/* The figures of a STATUS reply, one X-macro so that the field list, the wire keys and the
 * printing code cannot drift apart. Every figure is a uint64; absent ones decode as 0. */
#define TD__PROTO_STATS_MAP(XX)                                                                    \
    XX(entries, "cached files")                                                                    \
    XX(bytes, "bytes held (mapped files and derived buffers)")                                     \
    XX(derived_bytes, "bytes of derived buffers (decoded, dequantized, snapshots)")                \
    XX(budget, "memory budget in bytes (0: none)")                                                 \
    XX(quota, "bytes the entries one uid loaded first may hold (0: no quota)")                     \
    XX(hits, "loads served from the cache")                                                        \
    XX(misses, "loads that parsed a file")                                                         \
    XX(evictions, "entries evicted")                                                               \
    XX(clients, "connected clients")                                                               \
    XX(leases, "leases held by clients")                                                           \
    XX(decodes, "derived buffers made")                                                            \
    XX(decode_ns_total, "nanoseconds spent decoding")                                              \
    XX(decode_ns_max, "longest decode in nanoseconds")                                             \
    XX(errors, "requests answered with an error")                                                  \
    XX(refused, "loads refused because the budget or a quota was full")                            \
    XX(pressure, "memory pressure events the daemon dropped entries for")                          \
    XX(uptime_ms, "milliseconds since the daemon started")

typedef struct td__proto_stats {
#define TD__XX(name, text) uint64_t name;
    TD__PROTO_STATS_MAP(TD__XX)
#undef TD__XX
} td__proto_stats;

/* One cached file in a STATUS reply. */
typedef struct td__proto_status_file {
    char *name; /* the name the first client gave (owned after decode); may be NULL */
    td_format format;
    uint32_t mode;  /* TD__PROTO_MODE_* */
    uint64_t bytes; /* bytes held for the file */
    uint64_t leases;
    uint64_t hits;
    /* Since protocol 1 as trailing elements (0 when an older daemon leaves them out): */
    uint64_t tensors;       /* entries of its table */
    uint64_t file_bytes;    /* the file's size */
    uint64_t derived_bytes; /* decoded bytes in memfds */
    uint64_t loads;         /* loads served, first included */
    uint64_t idle_ms;       /* milliseconds since the last load or release */
    uint64_t flags;         /* TD__PROTO_FILE_* bits (0 from daemons that do not send them) */
} td__proto_status_file;

/* One uid in a STATUS reply: what the entries it loaded first hold. */
typedef struct td__proto_status_user {
    uint32_t uid;
    uint64_t entries; /* cached files it loaded first */
    uint64_t bytes;   /* what they hold against the budget */
    uint64_t quota;   /* what they may hold (0: no quota) */
} td__proto_status_user;

/* STATUS_OK. */
typedef struct td__proto_status {
    td__proto_stats stats;
    td__proto_status_file *files; /* nfiles; NULL when not asked for */
    uint32_t nfiles;
    td__proto_status_user *users; /* nusers; NULL when the daemon sent none */
    uint32_t nusers;
} td__proto_status;

/* EVICT: fd < 0 evicts every unreferenced entry; fd >= 0 (sent as descriptor 0) only the
 * entries of that file. */
typedef struct td__proto_evict {
    int fd;
} td__proto_evict;

/* EVICT_OK. */
typedef struct td__proto_evicted {
    uint64_t entries;
    uint64_t bytes;
} td__proto_evicted;

/* PING and PONG: the reply echoes data. */
typedef struct td__proto_ping {
    uint64_t data;
} td__proto_ping;

/* ERROR. */
typedef struct td__proto_error {
    int code;          /* a negative TD_E* code */
    char message[256]; /* one line, NUL-terminated (longer texts are cut) */
} td__proto_error;

typedef struct td__proto_msg {
    uint32_t type; /* TD__PROTO_* */
    uint32_t id;   /* request id; replies repeat it; 0 in an ERROR not tied to a request */
    union {
        td__proto_hello hello;           /* HELLO, HELLO_OK */
        td__proto_load load;             /* LOAD */
        td__proto_loaded loaded;         /* LOAD_OK */
        td__proto_release release;       /* RELEASE, RELEASE_OK */
        td__proto_status_req status_req; /* STATUS */
        td__proto_status status;         /* STATUS_OK */
        td__proto_evict evict;           /* EVICT */
        td__proto_evicted evicted;       /* EVICT_OK */
        td__proto_ping ping;             /* PING, PONG */
        td__proto_error error;           /* ERROR */
    } u;
} td__proto_msg;

/* Zeroes m and sets its type and id; descriptor fields are set to -1. Use before filling a
 * message by hand. */
void td__proto_msg_init(td__proto_msg *m, uint32_t type, uint32_t id);

/* Releases what a decoded message owns: strings, the table, regions, and closes every
 * descriptor it still holds. m is left initialised as an empty message of its type, so a
 * second call does nothing. For decoded messages only (see "Ownership" above). */
void td__proto_msg_destroy(td__proto_msg *m);

/* "HELLO", "LOAD_OK", ..., or NULL for an unknown type. */
const char *td__proto_type_name(uint32_t type);

/* Fills an ERROR reply for request id from a td_error (or from code and td_strerror(code) when
 * e is NULL or has no message). */
void td__proto_msg_error(td__proto_msg *m, uint32_t id, int code, const td_error *e);

/* The daemon's side of HELLO: picks the highest version both sides speak and the features both
 * sides have (ours & theirs). TD_EVERSION naming both ranges when there is none. */
int td__proto_negotiate(const td__proto_hello *theirs, uint32_t min_version, uint32_t max_version,
                        uint64_t features, uint32_t *version, uint64_t *agreed, td_error *err);

/* ---------------------------------------------------------------------------------------------
 * Pre-walk: the one pass that makes msgpack-c safe on untrusted bytes.
 */
typedef struct td__proto_walk {
    uint64_t objects;    /* msgpack objects in the message */
    uint64_t zone_bytes; /* bytes msgpack_unpack will take from its zone for containers */
    uint32_t depth;      /* deepest nesting (a scalar root is 0, the message map 1) */
} td__proto_walk;

/* Walks p[0..n) and checks that it is exactly one msgpack object: every header complete, every
 * str/bin length and array/map count within the bytes left (counting the elements still owed to
 * enclosing containers) and within lim, nesting within lim->max_depth, no ext types, no unused
 * byte 0xc1, no bytes after the object. Allocates nothing. lim is resolved (NULL: defaults).
 * Returns 0 and fills *out (may be NULL), or TD_EPROTO / TD_ELIMIT naming the byte offset. */
int td__proto_prewalk(const uint8_t *p, size_t n, const td__proto_limits *lim, td__proto_walk *out,
                      td_error *err);

/* ---------------------------------------------------------------------------------------------
 * Encoding
 */

/* An encoded frame on its way out. buf is owned; fds are borrowed from the message. */
typedef struct td__proto_out {
    uint8_t *buf;               /* prefix + body */
    size_t len;                 /* bytes in buf */
    size_t cap;                 /* allocated */
    size_t sent;                /* bytes written so far */
    int fds[TD__PROTO_FDS_MAX]; /* to attach to the first byte (borrowed, never closed) */
    unsigned nfds;
    size_t tail; /* LOAD_OK: where the table's entries and metadata start in buf */
} td__proto_out;

/* Encodes m as a frame into *out (initialised here; td__proto_out_destroy frees it, also after
 * a failure). peer states the receiver's limits (NULL: the defaults): a body larger than
 * peer->max_frame, or more descriptors than peer->max_fds, is TD_ELIMIT. Values the decoder would
 * refuse (a LOAD_OK entry past its region, a bad dtype, an unknown type...) are TD_EINVAL.
 * The message is only read; its descriptors are copied into out->fds, not duplicated. */
int td__proto_encode(const td__proto_msg *m, const td__proto_limits *peer, td__proto_out *out,
                     td_error *err);

/* Frees out->buf. Never closes out->fds (they belong to the message's owner). */
void td__proto_out_destroy(td__proto_out *out);

/* ---------------------------------------------------------------------------------------------
 * Decoding
 */

/* A received frame: the body without its length prefix, and the descriptors that came with it.
 * Both are owned; td__proto_frame_destroy frees the body and closes every descriptor. */
typedef struct td__proto_frame {
    uint8_t *body;
    size_t len;
    int fds[TD__PROTO_FDS_MAX];
    unsigned nfds;
} td__proto_frame;

/* Frees the body and closes every descriptor still held; leaves f empty. */
void td__proto_frame_destroy(td__proto_frame *f);

/* Decodes one message body (body[0..len), no prefix) that arrived with fds[0..*nfds).
 * Pre-walks, unpacks with msgpack-c into a zone sized by the pre-walk, and checks every field:
 * types, ranges, the declared descriptor count against *nfds, the expected count for the
 * message type, each LOAD_OK entry against its region, metadata types and nesting.
 * On success, *out owns the message and the descriptors have moved into it (*nfds = 0).
 * On failure, *out holds only out->type and out->id when they could be read (else 0), so that
 * an ERROR reply can be addressed; the descriptors stay in fds[] for the caller to close.
 * An unknown message type is TD_ENOTSUP (the connection can go on); every other failure is
 * TD_EPROTO, TD_ELIMIT, TD_EDTYPE, TD_EDUP or TD_ENOMEM. lim: NULL for the defaults. */
int td__proto_decode(const uint8_t *body, size_t len, int *fds, unsigned *nfds,
                     const td__proto_limits *lim, td__proto_msg *out, td_error *err);

/* td__proto_decode on a received frame: on success its descriptors move into *out; on failure
 * they stay in f (td__proto_frame_destroy closes them). The body is not freed. */
int td__proto_decode_frame(td__proto_frame *f, const td__proto_limits *lim, td__proto_msg *out,
                           td_error *err);

/* Decodes a whole frame held in memory: p[0..n) is the 4-byte prefix followed by exactly the
 * body it announces (the fuzz target's entry). Descriptors as in td__proto_decode. */
int td__proto_parse(const uint8_t *p, size_t n, int *fds, unsigned *nfds,
                    const td__proto_limits *lim, td__proto_msg *out, td_error *err);

/* ---------------------------------------------------------------------------------------------
 * Sending
 *
 * Frames are written with sendmsg(MSG_DONTWAIT | MSG_NOSIGNAL) whatever the socket's mode, so
 * the same code serves nonblocking and blocking sockets. The descriptors ride on the first
 * sendmsg that moves any byte; the caller must keep them open until then (out->sent > 0).
 */

/* Writes as much of out as the socket takes. Returns 0 when the whole frame is written,
 * TD_EAGAIN when the socket is full (call again when it is writable; out->sent says how far
 * it got), TD_ECLOSED when the peer is gone, TD_ESYS for other failures. EINTR is retried. */
int td__proto_send_step(int sock, td__proto_out *out, td_error *err);

/* Writes the whole frame, waiting with poll() while the socket is full. timeout_ms bounds the
 * whole call (-1: no bound); running out of time is TD_EAGAIN with a message saying so, and
 * leaves out->sent where it got to. */
int td__proto_send(int sock, td__proto_out *out, int timeout_ms, td_error *err);

/* Encodes m and sends it (blocking, as td__proto_send). */
int td__proto_send_msg(int sock, const td__proto_msg *m, const td__proto_limits *peer,
                       int timeout_ms, td_error *err);

/* ---------------------------------------------------------------------------------------------
 * Receiving
 *
 * A receiver works in one of two modes:
 *   - exact (td__proto_receiver_init): it reads the 4-byte length and then exactly the body,
 *     never a byte of the next frame, so it can be dropped between frames without losing
 *     anything. td__proto_recv_frame and td__proto_recv_msg use one on the stack.
 *   - buffered (td__proto_receiver_init_buffered): it reads as much as the socket has, up to
 *     TD__PROTO_RX_BUF bytes, and hands the frames out of that buffer; one recvmsg usually
 *     brings every frame that is waiting. Bytes read ahead live in the receiver, so it must be
 *     kept for as long as the connection (the daemon's per-client receiver, a td_client's).
 *     A frame longer than the buffer is read into a body of its own, exactly as in exact mode.
 * Descriptors that arrive with a read belong to the last frame whose first byte lies in that
 * read; descriptors with a read in which no frame starts, more than lim.max_fds on one frame
 * (MSG_CTRUNC), a length of 0 or above lim.max_frame are errors (PROTOCOL.md section 1 says why
 * this is exact). recvmsg uses MSG_CMSG_CLOEXEC | MSG_DONTWAIT. A body buffer grows with the
 * bytes that actually arrive (at most twice what came, or 64 KiB), never to the announced
 * length up front. Protocol sockets must not have SO_PASSCRED set (credentials would take the
 * control-buffer room sized for max_fds descriptors); use td__proto_peercred.
 */

/* The read-ahead buffer of a buffered receiver, allocated on its first read. */
#define TD__PROTO_RX_BUF (16u * 1024)

typedef struct td__proto_receiver {
    td__proto_limits lim; /* resolved */
    /* A frame read exactly (exact mode, or a frame longer than the buffer): */
    uint8_t hdr[TD__PROTO_PREFIX];
    uint32_t hdr_got;
    uint32_t body_len;
    uint32_t body_got;
    uint8_t *body;
    size_t cap;
    int fds[TD__PROTO_FDS_MAX]; /* the descriptors of the frame being read, or at lo */
    unsigned nfds;
    /* Buffered mode: buf[lo, hi) are bytes read and not handed out; a frame starts at lo. A read
     * happens only when no whole frame is buffered, so at most one partial frame is there before
     * it and the read's descriptors go to one frame: at most two frames of the buffer hold
     * descriptors, the one at lo (fds) and one later one starting at at2 (fds2). */
    bool buffered;
    bool dry;      /* the last read was short: the socket had nothing more then */
    bool blocking; /* td__proto_receiver_block: reads wait in recvmsg, not in poll */
    int rcvtimeo;  /* ms of SO_RCVTIMEO set on the socket by a blocking read; -2: none yet */
    uint8_t *buf;
    size_t lo, hi, at2;
    int fds2[TD__PROTO_FDS_MAX];
    unsigned nfds2;
    int status;     /* sticky: the first error, after which the stream is unusable */
    bool clean_eof; /* status is TD_ECLOSED from a close between frames */
} td__proto_receiver;

/* An exact receiver. lim: NULL for the defaults; copied. */
void td__proto_receiver_init(td__proto_receiver *r, const td__proto_limits *lim);
/* A buffered receiver, for a receiver that lives as long as its connection. */
void td__proto_receiver_init_buffered(td__proto_receiver *r, const td__proto_limits *lim);
/* Frees the partial body and the buffer, and closes any descriptors held (those of buffered
 * frames too). No operation on a destroyed one; init again to reuse it. */
void td__proto_receiver_destroy(td__proto_receiver *r);
/* True between frames: nothing of an unfinished frame held (a buffered receiver may hold whole
 * frames), and no failure other than the peer closing the connection between two frames (so
 * after TD_ECLOSED, idle tells a clean disconnect from one in the middle of a frame). */
bool td__proto_receiver_idle(const td__proto_receiver *r);
/* True when td__proto_receiver_step would return without reading the socket: a whole frame is
 * buffered, or the next buffered length prefix is bad. A caller that stops stepping while this
 * is true must come back without waiting for the socket, which may stay quiet. */
bool td__proto_receiver_ready(const td__proto_receiver *r);

/* Hands out a buffered frame, or reads from sock until a frame is complete or the socket has
 * nothing more. Returns 1 with *out filled (body and descriptors now owned by *out; call again,
 * more may be waiting), 0 when there is nothing more for now, or a negative code: TD_ECLOSED
 * when the peer closed (between frames: a clean close; inside a frame: the message says how far
 * it got), TD_ELIMIT / TD_EPROTO for a hostile or broken peer, TD_ENOMEM, TD_ESYS. Errors are
 * sticky: later calls return the same code. Every descriptor that arrives and is not handed on
 * in *out is closed before returning, or held by the receiver for a buffered frame.
 * 0 is returned without a further recvmsg after a read that brought fewer bytes than asked
 * (the socket was empty then, or the read stopped at descriptors): the caller must then wait
 * with a level-triggered readiness check (poll(2), epoll without EPOLLET, libuv's uv_poll),
 * which reports bytes that came meanwhile, before calling again. */
int td__proto_receiver_step(td__proto_receiver *r, int sock, td__proto_frame *out, td_error *err);

/* Receives one whole frame with an exact receiver, waiting with poll() (timeout_ms bounds the
 * whole call, -1: none; running out of time is TD_EAGAIN). Never reads a byte of the next
 * frame. Whatever the outcome nothing stays open but what *out holds on success. */
int td__proto_recv_frame(int sock, const td__proto_limits *lim, td__proto_frame *out,
                         int timeout_ms, td_error *err);

/* Receives and decodes one message (blocking, exact). On failure nothing is left open or
 * allocated; out->type and out->id are as td__proto_decode leaves them. */
int td__proto_recv_msg(int sock, const td__proto_limits *lim, td__proto_msg *out, int timeout_ms,
                       td_error *err);

/* Makes r's reads in td__proto_recv_msg_rx wait in recvmsg itself instead of in poll() before
 * it: one system call less per reply. Only for a blocking socket (no O_NONBLOCK) that nothing
 * else reads, whose SO_RCVTIMEO r may then set: the call's timeout, set again only when it
 * changes by more than a second (the deadline is checked after every read, so a call can run
 * over by at most that second). */
void td__proto_receiver_block(td__proto_receiver *r);

/* td__proto_recv_msg on a receiver kept for the connection (buffered or exact), decoding with
 * its limits: takes a buffered frame without a system call, and waits with poll() (or, after
 * td__proto_receiver_block, in recvmsg) only when none is there. After a failure of the stream (not
 * of the message's decoding) r keeps failing with the same code; the connection should be closed
 * and r destroyed. */
int td__proto_recv_msg_rx(td__proto_receiver *r, int sock, int timeout_ms, td__proto_msg *out,
                          td_error *err);

/* ---------------------------------------------------------------------------------------------
 * Metadata outside a message: the typed map of PROTOCOL.md section 3.3 as bytes of its own (the
 * flat table's metadata section, section 3.5).
 */

/* Encodes m into *out (malloc'd, *len bytes; the caller frees it). */
int td__proto_meta_pack(const td_meta *m, uint8_t **out, size_t *len, td_error *err);
/* Decodes p[0..n), untrusted, with the default limits (a whole frame's bytes allowed): exactly
 * one typed map. On success *out is new and the caller's; what starts every message. */
int td__proto_meta_unpack(const uint8_t *p, size_t n, const char *what, td_meta **out,
                          td_error *err);

/* ---------------------------------------------------------------------------------------------
 * Peer credentials
 */
typedef struct td__proto_cred {
    pid_t pid;
    uid_t uid;
    gid_t gid;
} td__proto_cred;

/* The credentials of the process at the other end of a connected Unix socket, as the kernel
 * recorded them at connect() / socketpair() time (SO_PEERCRED). TD_ESYS when the socket has
 * none (not a Unix socket, not connected). */
int td__proto_peercred(int sock, td__proto_cred *out, td_error *err);

#endif

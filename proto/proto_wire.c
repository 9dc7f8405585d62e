/*
 * proto_wire.c - frames on a Unix stream socket: sendmsg / recvmsg with SCM_RIGHTS, partial
 * transfers, EINTR and EAGAIN, and the peer's credentials.
 *
 * Descriptor placement. On a SOCK_STREAM Unix socket the kernel attaches SCM_RIGHTS data to
 * the first skb of the sendmsg() that carried them. A recvmsg() may glue skbs without
 * descriptors together, but once it has taken bytes of an skb with descriptors it takes the
 * descriptors and returns, right after that skb (net/unix/af_unix.c, unix_stream_read_generic:
 * "if (scm.fp) break;"). Our sender gives a frame's descriptors to the sendmsg() that starts the
 * frame and carries nothing of another frame (td__proto_send_step sends one frame per
 * td__proto_out). So the skb with descriptors begins with its frame's first byte, and a read
 * that brings descriptors ends inside that frame: they belong to the last frame whose first
 * byte lies in the read, and a read bringing descriptors with no frame start in it comes from
 * a broken or hostile peer (the descriptors are closed at once, and the stream fails).
 *
 * Two ways of reading follow from that rule. An exact receiver reads the 4-byte length, then
 * exactly the body, never a byte of the next frame (the one-shot td__proto_recv_frame needs
 * that: it keeps nothing between calls). A buffered receiver reads whatever is waiting, up to
 * TD__PROTO_RX_BUF bytes, walks the length prefixes to find the frames, and hands them out of
 * its buffer without reading again; a read happens only when no whole frame is buffered. A
 * read that returns fewer bytes than asked ends the step with 0 instead of trying again: the
 * socket was empty (or the read stopped at descriptors), and the caller waits with a
 * level-triggered readiness check, which reports bytes that came meanwhile. The daemon waits
 * with libuv's uv_poll, which on Linux is level-triggered epoll: uv__io_poll hands epoll_ctl the
 * watcher's events as they are, never with EPOLLET. A warm load thus costs the daemon one
 * recvmsg for the LOAD, and the quiet RELEASE before the next LOAD usually rides in that read.
 *
 * Protocol sockets must not have SO_PASSCRED set: credentials would take control-buffer room
 * meant for descriptors. The daemon learns its peer with SO_PEERCRED (td__proto_peercred).
 */
#include "proto.h"
#include "common.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* The body buffer starts at this size (or the frame's, if smaller) and doubles as bytes come. */
#define TD__RECV_FIRST_CAP (64u * 1024)

static const char *td__errstr(int e, char *buf, size_t cap)
{
    /* GNU strerror_r (we build with _GNU_SOURCE): returns the text, maybe not in buf. */
    return strerror_r(e, buf, cap);
}

static void td__close_all(int *fds, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        if (fds[i] >= 0)
            close(fds[i]);
        fds[i] = -1;
    }
}

/* Milliseconds left until deadline (CLOCK_MONOTONIC, ns), for poll(); -1 for no deadline. */
static int64_t td__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int td__poll_left(int64_t deadline)
{
    if (deadline < 0)
        return -1;
    int64_t left = deadline - td__now_ns();
    if (left <= 0)
        return 0;
    int64_t ms = (left + 999999) / 1000000;
    return ms > 1000000000 ? 1000000000 : (int)ms;
}

/* Waits until sock is ready for events. 1 ready, 0 timed out, negative error. */
static int td__wait(int sock, short events, int64_t deadline, td_error *err)
{
    for (;;) {
        struct pollfd p = {sock, events, 0};
        int ms = td__poll_left(deadline);
        if (deadline >= 0 && ms == 0)
            return 0;
        int k = poll(&p, 1, ms);
        if (k > 0)
            return 1;
        if (k == 0)
            return 0;
        if (errno != EINTR) {
            char b[128];
            int e = errno;
            return td__err(err, TD_ESYS, "poll on socket %d: %s", sock, td__errstr(e, b, sizeof b));
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * Sending
 */

int td__proto_send_step(int sock, td__proto_out *o, td_error *err)
{
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int) * TD__PROTO_FDS_MAX)];
    } cm;
    while (o->sent < o->len) {
        struct iovec iov = {o->buf + o->sent, o->len - o->sent};
        struct msghdr mh;
        memset(&mh, 0, sizeof mh);
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        if (o->sent == 0 && o->nfds) {
            size_t fdbytes = sizeof(int) * o->nfds;
            memset(cm.buf, 0, CMSG_SPACE(fdbytes));
            mh.msg_control = cm.buf;
            mh.msg_controllen = CMSG_SPACE(fdbytes);
            struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(fdbytes);
            memcpy(CMSG_DATA(c), o->fds, fdbytes);
        }
        ssize_t k = sendmsg(sock, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (k < 0) {
            int e = errno;
            char b[128];
            if (e == EINTR)
                continue;
            if (e == EAGAIN || e == EWOULDBLOCK)
                return td__err(err, TD_EAGAIN, "send: socket full after %zu of %zu bytes", o->sent,
                               o->len);
            if (e == EPIPE || e == ECONNRESET || e == ENOTCONN)
                return td__err(err, TD_ECLOSED,
                               "send: peer closed the connection after %zu of "
                               "%zu bytes",
                               o->sent, o->len);
            return td__err(err, TD_ESYS, "sendmsg (%zu bytes, %u descriptors): %s",
                           o->len - o->sent, o->sent ? 0 : o->nfds, td__errstr(e, b, sizeof b));
        }
        o->sent += (size_t)k;
    }
    return 0;
}

int td__proto_send(int sock, td__proto_out *o, int timeout_ms, td_error *err)
{
    int64_t deadline = timeout_ms < 0 ? -1 : td__now_ns() + (int64_t)timeout_ms * 1000000;
    for (;;) {
        int rc = td__proto_send_step(sock, o, err);
        if (rc != TD_EAGAIN)
            return rc;
        rc = td__wait(sock, POLLOUT, deadline, err);
        if (rc < 0)
            return rc;
        if (rc == 0)
            return td__err(err, TD_EAGAIN, "send: timed out after %d ms (%zu of %zu bytes sent)",
                           timeout_ms, o->sent, o->len);
    }
}

int td__proto_send_msg(int sock, const td__proto_msg *m, const td__proto_limits *peer,
                       int timeout_ms, td_error *err)
{
    td__proto_out o;
    int rc = td__proto_encode(m, peer, &o, err);
    if (!rc)
        rc = td__proto_send(sock, &o, timeout_ms, err);
    td__proto_out_destroy(&o);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Receiving
 */

void td__proto_frame_destroy(td__proto_frame *f)
{
    if (!f)
        return;
    free(f->body);
    f->body = NULL;
    f->len = 0;
    td__close_all(f->fds, f->nfds);
    f->nfds = 0;
}

void td__proto_receiver_init(td__proto_receiver *r, const td__proto_limits *lim)
{
    memset(r, 0, sizeof *r);
    td__proto_limits_resolve(lim, &r->lim);
}

void td__proto_receiver_init_buffered(td__proto_receiver *r, const td__proto_limits *lim)
{
    td__proto_receiver_init(r, lim);
    r->buffered = true;
}

/* Drops everything held: the partial body, the buffered bytes, every descriptor. */
static void td__recv_reset(td__proto_receiver *r)
{
    free(r->body);
    r->body = NULL;
    r->cap = 0;
    td__close_all(r->fds, r->nfds);
    r->nfds = 0;
    r->hdr_got = r->body_len = r->body_got = 0;
    free(r->buf);
    r->buf = NULL;
    r->lo = r->hi = r->at2 = 0;
    td__close_all(r->fds2, r->nfds2);
    r->nfds2 = 0;
    r->dry = false;
}

void td__proto_receiver_destroy(td__proto_receiver *r)
{
    if (r)
        td__recv_reset(r);
}

static bool td__recv_bad_len(const td__proto_receiver *r, uint32_t len)
{
    return len == 0 || len > r->lim.max_frame;
}

bool td__proto_receiver_idle(const td__proto_receiver *r)
{
    if (r->hdr_got || (r->status && !r->clean_eof))
        return false;
    if (!r->buffered)
        return r->nfds == 0;
    /* Idle when the buffered bytes are whole frames, however many. */
    for (size_t p = r->lo; p < r->hi;) {
        if (r->hi - p < TD__PROTO_PREFIX)
            return false;
        uint32_t len = td__le32(r->buf + p);
        if (td__recv_bad_len(r, len) || r->hi - p - TD__PROTO_PREFIX < len)
            return false;
        p += TD__PROTO_PREFIX + (size_t)len;
    }
    return true;
}

bool td__proto_receiver_ready(const td__proto_receiver *r)
{
    if (!r->buffered || r->hdr_got || r->status || r->hi - r->lo < TD__PROTO_PREFIX)
        return false;
    uint32_t len = td__le32(r->buf + r->lo);
    return td__recv_bad_len(r, len) || r->hi - r->lo - TD__PROTO_PREFIX >= len;
}

/* Records a fatal error: the stream cannot be resynchronised, so everything held is dropped. */
static int td__recv_fail(td__proto_receiver *r, int code)
{
    td__recv_reset(r);
    r->status = code;
    return code;
}

static int td__recv_len_error(td__proto_receiver *r, uint32_t len, td_error *err)
{
    if (len == 0)
        return td__err(err, td__recv_fail(r, TD_EPROTO), "receive: frame of length 0");
    return td__err(err, td__recv_fail(r, TD_ELIMIT), "receive: frame of %u bytes (limit %u)", len,
                   r->lim.max_frame);
}

/* Buffered mode, before reading: hands out the frame at lo when it is whole (1), fails on a bad
 * length prefix, moves a frame longer than the buffer to a body of its own (r->hdr_got is then
 * set and the rest of it is read exactly), or returns 0: the partial frame at lo needs bytes. */
static int td__recv_take(td__proto_receiver *r, td__proto_frame *out, td_error *err)
{
    size_t have = r->hi - r->lo;
    if (have < TD__PROTO_PREFIX)
        return 0;
    const uint8_t *p = r->buf + r->lo;
    uint32_t len = td__le32(p);
    if (td__recv_bad_len(r, len))
        return td__recv_len_error(r, len, err);
    size_t got = have - TD__PROTO_PREFIX;
    if (got >= len) {
        /* A body of its own, so that a frame owns what it points to whatever the receiver does
         * next. */
        uint8_t *body = malloc(len);
        if (!body)
            return td__err(err, td__recv_fail(r, TD_ENOMEM),
                           "receive: out of memory for a %u-byte frame", len);
        memcpy(body, p + TD__PROTO_PREFIX, len);
        out->body = body;
        out->len = len;
        memcpy(out->fds, r->fds, r->nfds * sizeof(int));
        out->nfds = r->nfds;
        r->nfds = 0;
        r->lo += TD__PROTO_PREFIX + (size_t)len;
        if (r->nfds2 && r->at2 == r->lo) { /* the later frame with descriptors is next */
            memcpy(r->fds, r->fds2, r->nfds2 * sizeof(int));
            r->nfds = r->nfds2;
            r->nfds2 = 0;
        }
        if (r->lo == r->hi)
            r->lo = r->hi = 0;
        return 1;
    }
    if ((size_t)TD__PROTO_PREFIX + len > TD__PROTO_RX_BUF) {
        /* Too long to buffer. It is the last frame in the buffer (it is partial), so it holds
         * the only descriptors there are, in r->fds, which stay its own. */
        size_t cap = got > TD__RECV_FIRST_CAP ? got : TD__RECV_FIRST_CAP;
        if (cap > len)
            cap = len;
        uint8_t *body = malloc(cap);
        if (!body)
            return td__err(err, td__recv_fail(r, TD_ENOMEM),
                           "receive: out of memory for %zu bytes of a %u-byte frame", cap, len);
        memcpy(body, p + TD__PROTO_PREFIX, got);
        memcpy(r->hdr, p, TD__PROTO_PREFIX);
        r->body = body;
        r->cap = cap;
        r->hdr_got = TD__PROTO_PREFIX;
        r->body_len = len;
        r->body_got = (uint32_t)got;
        r->lo = r->hi = 0;
    }
    return 0;
}

/* Buffered mode: the read brought buf[h0, hi) and n descriptors (got[]). They belong to the
 * last frame whose first byte lies in buf[h0, hi); frame starts are found by walking the length
 * prefixes from lo (the read happened because the frame at lo was not whole, so every later
 * start is in the read). Returns 0, or fails, closing got[], when no frame starts there. */
static int td__recv_attribute(td__proto_receiver *r, size_t h0, int *got, unsigned n, td_error *err)
{
    size_t p = r->lo, last = SIZE_MAX;
    for (;;) {
        if (p >= h0)
            last = p;
        if (r->hi - p < TD__PROTO_PREFIX)
            break;
        uint32_t len = td__le32(r->buf + p);
        /* A bad length fails when it is reached; nothing after it is a frame. */
        if (td__recv_bad_len(r, len) || r->hi - p - TD__PROTO_PREFIX <= len)
            break;
        p += TD__PROTO_PREFIX + (size_t)len;
    }
    bool first = last == r->lo; /* the buffer was empty: the frame at lo is new */
    if (last == SIZE_MAX || (first ? r->nfds : r->nfds2)) {
        /* (A frame given descriptors twice cannot happen: its first byte is in one read only.) */
        td__close_all(got, n);
        return td__err(err, td__recv_fail(r, TD_EPROTO),
                       "receive: %u descriptors attached at byte %zu of a frame, after its first "
                       "byte",
                       n, h0 - r->lo);
    }
    memcpy(first ? r->fds : r->fds2, got, n * sizeof(int));
    if (first) {
        r->nfds = n;
    } else {
        r->nfds2 = n;
        r->at2 = last;
    }
    return 0;
}

int td__proto_receiver_step(td__proto_receiver *r, int sock, td__proto_frame *out, td_error *err)
{
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int) * TD__PROTO_FDS_MAX)];
    } cm;
    if (r->status)
        return td__err(err, r->status, "receive: the connection already failed (%s)",
                       td_err_name(r->status));
    for (;;) {
        bool buffering = r->buffered && r->hdr_got == 0;
        if (buffering) {
            int rc = td__recv_take(r, out, err);
            if (rc)
                return rc;
            buffering = r->hdr_got == 0;
        }
        /* A short read emptied the socket (or stopped at descriptors): the caller's readiness
         * check, level-triggered, tells whether more came since, for one system call less. */
        if (r->dry) {
            r->dry = false;
            return 0;
        }
        uint8_t *dst;
        size_t want, at; /* at: frame offset of dst (buffered: of the frame at lo) */
        if (buffering) {
            if (!r->buf && !(r->buf = malloc(TD__PROTO_RX_BUF)))
                return td__err(err, td__recv_fail(r, TD_ENOMEM),
                               "receive: out of memory for a %u-byte buffer", TD__PROTO_RX_BUF);
            if (r->lo) { /* only the partial frame at lo is left: move it to the front */
                memmove(r->buf, r->buf + r->lo, r->hi - r->lo);
                r->hi -= r->lo;
                r->lo = 0;
            }
            dst = r->buf + r->hi;
            want = TD__PROTO_RX_BUF - r->hi; /* > 0: a frame filling the buffer is whole */
            at = r->hi;
        } else if (r->hdr_got < TD__PROTO_PREFIX) {
            dst = r->hdr + r->hdr_got;
            want = TD__PROTO_PREFIX - r->hdr_got;
            at = r->hdr_got;
        } else {
            if (r->body_got == r->cap) {
                size_t cap = r->cap ? r->cap * 2 : TD__RECV_FIRST_CAP;
                if (cap > r->body_len)
                    cap = r->body_len;
                uint8_t *nb = realloc(r->body, cap);
                if (!nb)
                    return td__err(err, td__recv_fail(r, TD_ENOMEM),
                                   "receive: out of memory for %zu bytes of a %u-byte frame", cap,
                                   r->body_len);
                r->body = nb;
                r->cap = cap;
            }
            dst = r->body + r->body_got;
            want = r->cap - r->body_got;
            at = TD__PROTO_PREFIX + (size_t)r->body_got;
        }

        struct iovec iov = {dst, want};
        struct msghdr mh;
        memset(&mh, 0, sizeof mh);
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        /* Room for max_fds descriptors (CMSG_SPACE may round it up a little): a peer sending
         * more gets MSG_CTRUNC, and the kernel closes what did not fit. */
        mh.msg_control = cm.buf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * r->lim.max_fds);
        ssize_t k = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | (r->blocking ? 0 : MSG_DONTWAIT));
        if (k < 0) {
            int e = errno;
            char b[128];
            if (e == EINTR && r->blocking)
                return 0; /* a signal ends a timed wait: the caller's deadline decides */
            if (e == EINTR)
                continue;
            if (e == EAGAIN || e == EWOULDBLOCK)
                return 0;
            if (e == ECONNRESET)
                return td__err(err, td__recv_fail(r, TD_ECLOSED),
                               "receive: connection reset by the peer");
            return td__err(err, td__recv_fail(r, TD_ESYS), "recvmsg on socket %d: %s", sock,
                           td__errstr(e, b, sizeof b));
        }

        /* Take every descriptor that came, whatever happens next, so that none can leak. */
        int got[TD__PROTO_FDS_MAX + 8];
        unsigned ngot = 0, lost = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                continue;
            size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            const uint8_t *data = CMSG_DATA(c);
            for (size_t i = 0; i < n; i++) {
                int fd;
                memcpy(&fd, data + i * sizeof(int), sizeof fd);
                if (ngot < sizeof got / sizeof got[0])
                    got[ngot++] = fd;
                else if (fd >= 0)
                    close(fd), lost++;
            }
        }
        if (mh.msg_flags & MSG_CTRUNC) {
            td__close_all(got, ngot);
            return td__err(err, td__recv_fail(r, TD_ELIMIT),
                           "receive: more than %u descriptors on one frame (control data "
                           "truncated; %u closed)",
                           r->lim.max_fds, ngot + lost);
        }
        if (lost || ngot > r->lim.max_fds) {
            td__close_all(got, ngot);
            return td__err(err, td__recv_fail(r, TD_ELIMIT),
                           "receive: %u descriptors on one frame (limit %u)", ngot + lost,
                           r->lim.max_fds);
        }

        if (k == 0) {
            td__close_all(got, ngot); /* none come without bytes; never keep one */
            bool in_prefix;
            uint32_t total = TD__PROTO_PREFIX;
            if (buffering) {
                at = r->hi - r->lo;
                in_prefix = at < TD__PROTO_PREFIX;
                if (!in_prefix)
                    total += td__le32(r->buf + r->lo);
            } else {
                in_prefix = r->hdr_got < TD__PROTO_PREFIX;
                if (!in_prefix)
                    total += r->body_len;
            }
            if (at == 0 && r->nfds == 0) {
                td__recv_fail(r, TD_ECLOSED);
                r->clean_eof = true;
                return td__err(err, TD_ECLOSED, "receive: the peer closed the connection");
            }
            return td__err(err, td__recv_fail(r, TD_ECLOSED),
                           "receive: the peer closed the connection inside a frame (byte %zu of "
                           "%s%u)",
                           at, in_prefix ? "the length prefix, " : "", total);
        }
        r->dry = (size_t)k < want;

        if (buffering) {
            size_t h0 = r->hi;
            r->hi += (size_t)k;
            int rc = ngot ? td__recv_attribute(r, h0, got, ngot, err) : 0;
            if (rc)
                return rc;
            continue;
        }

        /* Exact: a frame starts in this read only when it starts at the frame's first byte. */
        if (ngot) {
            if (at != 0) {
                td__close_all(got, ngot);
                return td__err(err, td__recv_fail(r, TD_EPROTO),
                               "receive: %u descriptors attached at byte %zu of a frame, after "
                               "its first byte",
                               ngot, at);
            }
            memcpy(r->fds, got, ngot * sizeof(int));
            r->nfds = ngot;
        }
        if (r->hdr_got < TD__PROTO_PREFIX) {
            r->hdr_got += (uint32_t)k;
            if (r->hdr_got < TD__PROTO_PREFIX)
                continue;
            uint32_t len = td__le32(r->hdr);
            if (td__recv_bad_len(r, len))
                return td__recv_len_error(r, len, err);
            r->body_len = len;
            r->body_got = 0;
            continue;
        }
        r->body_got += (uint32_t)k;
        if (r->body_got < r->body_len)
            continue;

        /* Complete: hand the body and the descriptors over, and start afresh. */
        out->body = r->body;
        out->len = r->body_len;
        memcpy(out->fds, r->fds, r->nfds * sizeof(int));
        out->nfds = r->nfds;
        r->body = NULL;
        r->cap = 0;
        r->nfds = 0;
        r->hdr_got = r->body_len = r->body_got = 0;
        return 1;
    }
}

void td__proto_receiver_block(td__proto_receiver *r)
{
    r->blocking = true;
    r->rcvtimeo = -2;
}

/* A blocking receiver's SO_RCVTIMEO for a read that may take ms (-1: forever), set when it is
 * not within a second of what is set. */
static int td__recv_timeo(td__proto_receiver *r, int sock, int ms, td_error *err)
{
    if (r->rcvtimeo != -2 &&
        (ms < 0 ? r->rcvtimeo < 0
                : r->rcvtimeo >= 0 && r->rcvtimeo >= ms && r->rcvtimeo - ms <= 1000))
        return 0;
    struct timeval tv = {0, 0}; /* 0: forever */
    if (ms >= 0) {
        tv.tv_sec = ms / 1000;
        tv.tv_usec = (ms % 1000) * 1000 + (ms == 0); /* 0 would mean forever */
    }
    if (setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0) {
        char b[128];
        int e = errno;
        return td__err(err, TD_ESYS, "SO_RCVTIMEO on socket %d: %s", sock,
                       td__errstr(e, b, sizeof b));
    }
    r->rcvtimeo = ms;
    return 0;
}

/* Receives one frame on r: a buffered one at once, else waiting with poll() before each read
 * (a reply is rarely there already: waiting first saves a read that would fail), or in the read
 * itself when r blocks. */
static int td__recv_frame_on(td__proto_receiver *r, int sock, td__proto_frame *out, int timeout_ms,
                             td_error *err)
{
    int64_t deadline = timeout_ms < 0 ? -1 : td__now_ns() + (int64_t)timeout_ms * 1000000;
    memset(out, 0, sizeof *out);
    for (;;) {
        if (r->blocking && !r->status && !td__proto_receiver_ready(r)) {
            int ms = (int)td__poll_left(deadline);
            if (deadline >= 0 && ms == 0)
                return td__err(err, TD_EAGAIN, "receive: timed out after %d ms", timeout_ms);
            int rc = td__recv_timeo(r, sock, ms, err);
            if (rc < 0)
                return rc;
            r->dry = false; /* the read itself waits */
        } else if (!r->status && !td__proto_receiver_ready(r)) {
            r->dry = false; /* the wait below says whether bytes came */
            int rc = td__wait(sock, POLLIN, deadline, err);
            if (rc < 0)
                return rc;
            if (rc == 0)
                return td__err(err, TD_EAGAIN, "receive: timed out after %d ms", timeout_ms);
        }
        int rc = td__proto_receiver_step(r, sock, out, err);
        if (rc == 1)
            return 0;
        if (rc < 0)
            return rc;
    }
}

int td__proto_recv_frame(int sock, const td__proto_limits *lim, td__proto_frame *out,
                         int timeout_ms, td_error *err)
{
    td__proto_receiver r;
    td__proto_receiver_init(&r, lim);
    int rc = td__recv_frame_on(&r, sock, out, timeout_ms, err);
    td__proto_receiver_destroy(&r);
    return rc;
}

/* Decodes a received frame into *out; nothing is left open or allocated on failure. */
static int td__recv_decode(td__proto_frame *f, const td__proto_limits *lim, td__proto_msg *out,
                           td_error *err)
{
    int rc = td__proto_decode_frame(f, lim, out, err);
    td__proto_frame_destroy(f); /* closes the descriptors a failed decode left */
    return rc;
}

int td__proto_recv_msg(int sock, const td__proto_limits *lim, td__proto_msg *out, int timeout_ms,
                       td_error *err)
{
    td__proto_frame f;
    memset(out, 0, sizeof *out);
    int rc = td__proto_recv_frame(sock, lim, &f, timeout_ms, err);
    return rc ? rc : td__recv_decode(&f, lim, out, err);
}

int td__proto_recv_msg_rx(td__proto_receiver *r, int sock, int timeout_ms, td__proto_msg *out,
                          td_error *err)
{
    td__proto_frame f;
    memset(out, 0, sizeof *out);
    int rc = td__recv_frame_on(r, sock, &f, timeout_ms, err);
    return rc ? rc : td__recv_decode(&f, &r->lim, out, err);
}

/* ---------------------------------------------------------------------------------------------
 * Peer credentials
 */

int td__proto_peercred(int sock, td__proto_cred *out, td_error *err)
{
    struct ucred uc;
    socklen_t len = sizeof uc;
    if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &uc, &len) < 0 || len != sizeof uc) {
        char b[128];
        int e = errno;
        return td__err(err, TD_ESYS, "SO_PEERCRED on socket %d: %s", sock,
                       td__errstr(e, b, sizeof b));
    }
    out->pid = uc.pid;
    out->uid = uc.uid;
    out->gid = uc.gid;
    return 0;
}

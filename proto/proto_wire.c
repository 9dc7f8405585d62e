/*
 * proto_wire.c - frames on a Unix stream socket: sendmsg / recvmsg with SCM_RIGHTS, partial
 * transfers, EINTR and EAGAIN, and the peer's credentials.
 *
 * Descriptor placement. On a SOCK_STREAM Unix socket the kernel attaches SCM_RIGHTS data to
 * the first skb of the sendmsg() that carried them, and a recvmsg() stops right after the skb
 * that brought descriptors. The sender therefore gives the descriptors to the sendmsg() that
 * carries the frame's first byte, and the receiver never reads past the end of the frame it is
 * reading (the 4-byte length first, then exactly the body). Descriptors can then only arrive
 * with a frame's first bytes; anything else is a broken or hostile peer, and those descriptors
 * are closed at once. (The check is "with the read of the length prefix", not "with byte 0":
 * the kernel glues a descriptor-less skb to the one after it within one read, so byte 0 and
 * bytes 1..3 cannot be told apart reliably, while anything past the prefix always can.)
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

/* Drops the partial frame: buffer freed, descriptors closed. */
static void td__recv_reset(td__proto_receiver *r)
{
    free(r->body);
    r->body = NULL;
    r->cap = 0;
    td__close_all(r->fds, r->nfds);
    r->nfds = 0;
    r->hdr_got = r->body_len = r->body_got = 0;
}

void td__proto_receiver_destroy(td__proto_receiver *r)
{
    if (r)
        td__recv_reset(r);
}

bool td__proto_receiver_idle(const td__proto_receiver *r)
{
    return r->hdr_got == 0 && r->nfds == 0 && (!r->status || r->clean_eof);
}

/* Records a fatal error: the stream cannot be resynchronised, so everything held is dropped. */
static int td__recv_fail(td__proto_receiver *r, int code)
{
    td__recv_reset(r);
    r->status = code;
    return code;
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
        uint8_t *dst;
        size_t want, at; /* at: frame offset of dst */
        if (r->hdr_got < TD__PROTO_PREFIX) {
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
        ssize_t k = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
        if (k < 0) {
            int e = errno;
            char b[128];
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
        if (ngot + lost) {
            if (at >= TD__PROTO_PREFIX) {
                td__close_all(got, ngot);
                return td__err(err, td__recv_fail(r, TD_EPROTO),
                               "receive: %u descriptors attached at byte %zu of a frame, past its "
                               "length prefix",
                               ngot + lost, at);
            }
            if (lost || r->nfds + ngot > r->lim.max_fds) {
                td__close_all(got, ngot);
                return td__err(err, td__recv_fail(r, TD_ELIMIT),
                               "receive: %u descriptors on one frame (limit %u)",
                               r->nfds + ngot + lost, r->lim.max_fds);
            }
            memcpy(r->fds + r->nfds, got, ngot * sizeof(int));
            r->nfds += ngot;
        }

        if (k == 0) {
            if (at == 0 && r->nfds == 0) {
                td__recv_fail(r, TD_ECLOSED);
                r->clean_eof = true;
                return td__err(err, TD_ECLOSED, "receive: the peer closed the connection");
            }
            return td__err(err, td__recv_fail(r, TD_ECLOSED),
                           "receive: the peer closed the connection inside a frame (byte %zu of "
                           "%s%u)",
                           at, r->hdr_got < TD__PROTO_PREFIX ? "the length prefix, " : "",
                           r->hdr_got < TD__PROTO_PREFIX ? TD__PROTO_PREFIX
                                                         : TD__PROTO_PREFIX + r->body_len);
        }

        if (r->hdr_got < TD__PROTO_PREFIX) {
            r->hdr_got += (uint32_t)k;
            if (r->hdr_got < TD__PROTO_PREFIX)
                continue;
            uint32_t len = td__le32(r->hdr);
            if (len == 0)
                return td__err(err, td__recv_fail(r, TD_EPROTO), "receive: frame of length 0");
            if (len > r->lim.max_frame)
                return td__err(err, td__recv_fail(r, TD_ELIMIT),
                               "receive: frame of %u bytes (limit %u)", len, r->lim.max_frame);
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

int td__proto_recv_frame(int sock, const td__proto_limits *lim, td__proto_frame *out,
                         int timeout_ms, td_error *err)
{
    td__proto_receiver r;
    int64_t deadline = timeout_ms < 0 ? -1 : td__now_ns() + (int64_t)timeout_ms * 1000000;
    int rc;
    memset(out, 0, sizeof *out);
    td__proto_receiver_init(&r, lim);
    /* A reply is rarely there already: wait first, rather than try a read that would fail. */
    if ((rc = td__wait(sock, POLLIN, deadline, err)) < 0) {
        td__proto_receiver_destroy(&r);
        return rc;
    }
    for (;;) {
        rc = td__proto_receiver_step(&r, sock, out, err);
        if (rc == 1) {
            rc = 0;
            break;
        }
        if (rc < 0)
            break;
        rc = td__wait(sock, POLLIN, deadline, err);
        if (rc < 0)
            break;
        if (rc == 0) {
            rc = td__err(err, TD_EAGAIN, "receive: timed out after %d ms", timeout_ms);
            break;
        }
    }
    td__proto_receiver_destroy(&r);
    return rc;
}

int td__proto_recv_msg(int sock, const td__proto_limits *lim, td__proto_msg *out, int timeout_ms,
                       td_error *err)
{
    td__proto_frame f;
    memset(out, 0, sizeof *out);
    int rc = td__proto_recv_frame(sock, lim, &f, timeout_ms, err);
    if (rc)
        return rc;
    rc = td__proto_decode_frame(&f, lim, out, err);
    td__proto_frame_destroy(&f); /* closes the descriptors a failed decode left */
    return rc;
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

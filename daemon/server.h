/*
 * server.h - the daemon's socket side: accepting clients, reading and answering their requests
 * on one libuv loop, leases, limits, and the orderly shutdown.
 *
 * Descriptors travel with sendmsg/recvmsg on the raw sockets (proto/), polled with uv_poll;
 * libuv's own IPC only passes sockets and pipes.
 */
#ifndef TD_DAEMON_SERVER_H
#define TD_DAEMON_SERVER_H

#include "cache.h"
#include "config.h"
#include "proto.h"

#include <uv.h>

typedef struct td__server_client td__server_client;

typedef struct td__server {
    uv_loop_t *loop;
    td__config *cfg; /* borrowed; reloaded in place on SIGHUP */
    td__cache cache;
    int listen_fd;
    uv_poll_t listen_poll;
    int listening;
    td__server_client *clients;
    size_t nclients;
    uint64_t next_client_id;
    uint64_t errors;
    uint64_t started_ms;
    int draining;
    void (*on_drained)(struct td__server *srv); /* called once when draining is complete */
} td__server;

/* Sets up the server on loop with a listening socket (taken: the server closes it). */
int td__server_init(td__server *srv, uv_loop_t *loop, td__config *cfg, int listen_fd,
                    td_error *err);
/* Starts accepting. */
int td__server_start(td__server *srv, td_error *err);
/* Stops accepting, lets requests in flight finish, closes clients as they go idle, and calls
 * on_drained when nothing is left (not before the thread pool is idle). */
void td__server_drain(td__server *srv);
/* Calls on_drained if draining is complete (the main loop asks after thread-pool work ends). */
void td__server_check_drained(td__server *srv);
/* Frees what is left (after the loop has stopped). */
void td__server_destroy(td__server *srv);
/* The figures of a STATUS reply. */
void td__server_stats(const td__server *srv, td__proto_stats *st);

#endif

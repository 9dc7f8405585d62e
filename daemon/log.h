/*
 * log.h - the daemon's log: one line per event on stderr. Under systemd (JOURNAL_STREAM set)
 * each line starts with the sd-daemon priority prefix "<N>", which journald turns into the
 * entry's priority; elsewhere with the level's name.
 *
 * The level is process state of the daemon (the library never logs).
 */
#ifndef TD_DAEMON_LOG_H
#define TD_DAEMON_LOG_H

#include "common.h"

enum { LOG_LVL_ERR = 3, LOG_LVL_WARN = 4, LOG_LVL_NOTICE = 5, LOG_LVL_INFO = 6, LOG_LVL_DEBUG = 7 };

/* Parses "error", "warning", "notice", "info" or "debug" (or a digit 3..7). 0 or TD_EINVAL. */
int td__log_parse_level(const char *s, int *level);
const char *td__log_level_name(int level);
void td__log_set_level(int level);
int td__log_get_level(void);
/* Writes one line (control characters in the text become '?') when level <= the set level. */
void td__log_msg(int level, const char *fmt, ...) TD__PRINTF(2, 3);

#define td__log_err(...)    td__log_msg(LOG_LVL_ERR, __VA_ARGS__)
#define td__log_warn(...)   td__log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define td__log_notice(...) td__log_msg(LOG_LVL_NOTICE, __VA_ARGS__)
#define td__log_info(...)   td__log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define td__log_debug(...)  td__log_msg(LOG_LVL_DEBUG, __VA_ARGS__)

#endif

/*
 * log.c - see log.h.
 */
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

static atomic_int log_level = LOG_LVL_INFO;

static const char *const td__log_names[] = {"emerg",   "alert",  "crit", "error",
                                            "warning", "notice", "info", "debug"};

int td__log_parse_level(const char *s, int *level)
{
    if (s && s[0] >= '3' && s[0] <= '7' && !s[1]) {
        *level = s[0] - '0';
        return 0;
    }
    for (int i = LOG_LVL_ERR; s && i <= LOG_LVL_DEBUG; i++) {
        if (strcasecmp(s, td__log_names[i]) == 0 || (i == LOG_LVL_ERR && !strcasecmp(s, "err")) ||
            (i == LOG_LVL_WARN && !strcasecmp(s, "warn"))) {
            *level = i;
            return 0;
        }
    }
    return TD_EINVAL;
}

const char *td__log_level_name(int level)
{
    return level >= 0 && level <= LOG_LVL_DEBUG ? td__log_names[level] : "?";
}

void td__log_set_level(int level)
{
    atomic_store(&log_level, level);
}

int td__log_get_level(void)
{
    return atomic_load(&log_level);
}

void td__log_msg(int level, const char *fmt, ...)
{
    if (level > atomic_load(&log_level))
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    for (char *p = line; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    /* One fprintf per line: stderr is unbuffered, so lines from the thread pool do not mix. */
    if (getenv("JOURNAL_STREAM"))
        fprintf(stderr, "<%d>%s\n", level, line);
    else
        fprintf(stderr, "tensord: %s: %s\n", td__log_level_name(level), line);
}

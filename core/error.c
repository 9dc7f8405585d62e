/*
 * error.c - the error table's strings, and the helpers that fill td_error.
 */
#include "common.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

const char *td_strerror(int code)
{
    switch (code) {
#define TD__XX(name, value, text)                                                                  \
    case value:                                                                                    \
        return text;
        TD_ERRNO_MAP(TD__XX)
#undef TD__XX
    case 0:
        return "success";
    default:
        return "unknown error";
    }
}

const char *td_err_name(int code)
{
    switch (code) {
#define TD__XX(name, value, text)                                                                  \
    case value:                                                                                    \
        return "TD_" #name;
        TD_ERRNO_MAP(TD__XX)
#undef TD__XX
    case 0:
        return "TD_OK";
    default:
        return "TD_UNKNOWN";
    }
}

const char *td_version_string(void)
{
#define TD__STR2(x) #x
#define TD__STR(x)  TD__STR2(x)
    return TD__STR(TD_VERSION_MAJOR) "." TD__STR(TD_VERSION_MINOR) "." TD__STR(TD_VERSION_PATCH);
}

unsigned td_version(void)
{
    return TD_VERSION_HEX;
}

/* Messages stay on one line: a file name or tensor name with a newline must not forge a second
 * log line. */
static void td__sanitize(char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f)
            *s = '?';
    }
}

int td__err(td_error *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
        td__sanitize(err->message);
        err->code = code;
    }
    return code;
}

int td__err_prefix(td_error *err, int code, const char *prefix)
{
    if (!err)
        return code;
    char tmp[sizeof err->message];
    size_t pl = strnlen(prefix, sizeof tmp - 3), ml = strnlen(err->message, sizeof tmp - 1);
    memcpy(tmp, prefix, pl);
    memcpy(tmp + pl, ": ", 2);
    size_t room = sizeof tmp - 1 - pl - 2;
    memcpy(tmp + pl + 2, err->message, ml < room ? ml : room);
    tmp[pl + 2 + (ml < room ? ml : room)] = '\0';
    memcpy(err->message, tmp, sizeof tmp);
    td__sanitize(err->message);
    return err->code;
}

int td__err_from_errno(int e)
{
    switch (e) {
    case ENOENT:
    case ENOTDIR:
        return TD_ENOENT;
    case EACCES:
    case EPERM:
    case EROFS:
        return TD_EACCES;
    case ENOMEM:
        return TD_ENOMEM;
    case ENOSPC:
    case EDQUOT:
        return TD_ENOSPC;
    case EEXIST:
        return TD_EEXIST;
    case EAGAIN:
        return TD_EAGAIN;
    case EINVAL:
        return TD_EINVAL;
    case EIO:
        return TD_EIO;
    case EBUSY:
        return TD_EBUSY;
    default:
        return TD_ESYS;
    }
}

const char *td__quote(const char *s, size_t len, char *out, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    if (cap < 8) {
        if (cap)
            out[0] = '\0';
        return out;
    }
    for (size_t i = 0; i < len && i < 48; i++) {
        unsigned char c = (unsigned char)s[i];
        if (o + 5 >= cap - 4)
            break;
        if (c < 0x20 || c == 0x7f || c == '\'' || c == '\\') {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        } else {
            out[o++] = (char)c;
        }
    }
    if (len > 48 && o + 3 < cap) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
    return out;
}

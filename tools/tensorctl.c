/*
 * tensorctl - inspect, convert and verify weight files.
 *
 *   tensorctl ls [--json] FILE
 *   tensorctl convert [--compress] [--dequantize f32|f16|bf16|mlx] SRC DST
 *   tensorctl verify FILE
 *   tensorctl [--socket PATH] status [--json]
 *   tensorctl [--socket PATH] load FILE
 *   tensorctl [--socket PATH] evict [FILE]
 *
 * Exit codes: 0 success, 1 bad input or a failed operation (one line on stderr), 2 usage.
 */
#include "client.h"
#include "common.h"
#include "dtype.h"
#include "ggml_quants.h"
#include "zip.h"
#include "index.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define TC_EXIT_FAIL  1
#define TC_EXIT_USAGE 2
/* Array values longer than this are cut short in the human table (--json gives them whole). */
#define TC_SHOW_ITEMS 8

static void tc_usage(FILE *f)
{
    fprintf(f, "usage: tensorctl ls [--json] FILE\n"
               "       tensorctl convert [--compress] [--dequantize f32|f16|bf16|mlx] SRC DST\n"
               "       tensorctl verify FILE\n"
               "       tensorctl [--socket PATH] status [--json]\n"
               "       tensorctl [--socket PATH] load FILE\n"
               "       tensorctl [--socket PATH] evict [FILE]\n"
               "       tensorctl --version\n"
               "\n"
               "Formats by extension: .npy .npz .safetensors .gguf\n"
               "The daemon's socket: --socket, else $TENSORD_SOCKET, else "
               "/run/tensord/tensord.sock\n");
}

static int tc_fail(const td_error *err)
{
    fprintf(stderr, "tensorctl: %s\n", err->message);
    return TC_EXIT_FAIL;
}

static double tc_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A mapped file and its table, for the commands that look at file offsets. */
typedef struct tc_file {
    void *base;
    size_t len;
    td__table t;
} tc_file;

static int tc_open(const char *path, tc_file *f, td_error *err)
{
    memset(f, 0, sizeof *f);
    td_format format = td_format_from_path(path);
    if (!format)
        return td__err(err, TD_ENOTSUP,
                       "%s: could not infer the file format from the extension (expected .npy, "
                       ".npz, .safetensors or .gguf)",
                       path);
    int rc = td__map_file(path, &f->base, &f->len, err);
    if (rc) {
        f->base = NULL;
        return rc;
    }
    td__table_init(&f->t, format);
    rc = td__index(format, TD__RD_MEM(f->base, f->len, path), 0, &f->t, err);
    if (rc) {
        td__table_destroy(&f->t);
        munmap(f->base, f->len);
        f->base = NULL;
    }
    return rc;
}

static void tc_close(tc_file *f)
{
    if (f->base) {
        td__table_destroy(&f->t);
        munmap(f->base, f->len);
    }
}

static const char *tc_layout(uint32_t layout)
{
    if (layout & TD__LAYOUT_DEFLATE)
        return "deflate";
    if ((layout & TD__LAYOUT_SWAP) && (layout & TD__LAYOUT_FORTRAN))
        return "byteswap+fortran";
    if (layout & TD__LAYOUT_SWAP)
        return "byteswap";
    if (layout & TD__LAYOUT_FORTRAN)
        return "fortran";
    return "view";
}

/* For a GGML block tensor tensord can dequantize: the bytes it takes as float32. */
static int tc_dequant_size(const td__entry *e, uint64_t *nbytes)
{
    if (!td_dtype_is_block(e->dtype) || !td__gq_supported(e->dtype))
        return 0;
    uint64_t n = 1;
    for (uint32_t i = 0; i < e->ndim; i++)
        n *= (uint64_t)e->shape[i];
    return td__gq_output_nbytes(e->dtype, n, TD_FLOAT32, nbytes, NULL, NULL) == 0;
}

static void tc_shape(const td__entry *e, char *out, size_t cap)
{
    size_t n = (size_t)snprintf(out, cap, "(");
    for (uint32_t i = 0; i < e->ndim && n < cap; i++)
        n += (size_t)snprintf(out + n, cap - n, "%s%" PRId64, i ? ", " : "", e->shape[i]);
    if (n < cap)
        snprintf(out + n, cap - n, "%s)", e->ndim == 1 ? "," : "");
}

/* ---- JSON output: written by hand, so that u64 values and invalid UTF-8 come out right. ---- */

static void tc_json_str(FILE *o, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    fputc('"', o);
    while (p < end) {
        unsigned c = *p;
        if (c == '"' || c == '\\') {
            fputc('\\', o);
            fputc((int)c, o);
            p++;
        } else if (c < 0x20 || c == 0x7f) {
            fprintf(o, "\\u%04x", c);
            p++;
        } else if (c < 0x80) {
            fputc((int)c, o);
            p++;
        } else {
            /* Copy a valid UTF-8 sequence; replace any invalid byte by U+FFFD. */
            size_t len = c >= 0xf0 && c < 0xf5 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c < 0xe0 ? 2 : 0;
            int ok = len && (size_t)(end - p) >= len;
            for (size_t i = 1; ok && i < len; i++)
                ok = (p[i] & 0xc0) == 0x80;
            if (ok && len == 3)
                ok = !(c == 0xe0 && p[1] < 0xa0) && !(c == 0xed && p[1] >= 0xa0);
            if (ok && len == 4)
                ok = !(c == 0xf0 && p[1] < 0x90) && !(c == 0xf4 && p[1] >= 0x90);
            if (ok) {
                fwrite(p, 1, len, o);
                p += len;
            } else {
                fputs("\\ufffd", o);
                p++;
            }
        }
    }
    fputc('"', o);
}

static void tc_json_double(FILE *o, double v)
{
    if (isnan(v))
        fputs("\"nan\"", o);
    else if (isinf(v))
        fputs(v > 0 ? "\"inf\"" : "\"-inf\"", o);
    else
        fprintf(o, "%.17g", v);
}

/* A scalar or string value (not an array) as JSON. */
static void tc_json_scalar(FILE *o, const td_value *v)
{
    td_type t = td_value_type(v);
    int64_t i;
    uint64_t u;
    double d;
    size_t n;
    const char *s;
    switch (t) {
    case TD_TYPE_BOOL:
        td_value_get_int(v, &i);
        fputs(i ? "true" : "false", o);
        break;
    case TD_TYPE_STRING:
        s = td_value_string(v, &n);
        tc_json_str(o, s, n);
        break;
    case TD_TYPE_FLOAT32:
    case TD_TYPE_FLOAT64:
        td_value_get_float(v, &d);
        tc_json_double(o, d);
        break;
    case TD_TYPE_UINT64:
        td_value_get_uint(v, &u);
        fprintf(o, "%" PRIu64, u);
        break;
    default:
        td_value_get_int(v, &i);
        fprintf(o, "%" PRId64, i);
        break;
    }
}

static void tc_json_value(FILE *o, const td_value *v)
{
    td_type t = td_value_type(v);
    if (t != TD_TYPE_ARRAY) {
        fprintf(o, "{\"type\": \"%s\", \"value\": ", td_type_name(t));
        tc_json_scalar(o, v);
        fputc('}', o);
        return;
    }
    td_type et = td_value_array_type(v);
    size_t n = td_value_array_len(v);
    fprintf(o, "{\"type\": \"array\", \"element_type\": \"%s\", \"value\": [", td_type_name(et));
    for (size_t i = 0; i < n; i++) {
        if (i)
            fputs(", ", o);
        const td_value *item = td_value_array_at(v, i);
        if (et == TD_TYPE_ARRAY)
            tc_json_value(o, item);
        else
            tc_json_scalar(o, item);
    }
    fputs("]}", o);
}

static void tc_ls_json(const char *path, const tc_file *f)
{
    FILE *o = stdout;
    fputs("{\"file\": ", o);
    tc_json_str(o, path, strlen(path));
    fprintf(o, ", \"format\": \"%s\", \"tensors\": [", td_format_name(f->t.format));
    for (size_t i = 0; i < f->t.n; i++) {
        const td__entry *e = &f->t.entries[i];
        fputs(i ? ",\n  {\"name\": " : "\n  {\"name\": ", o);
        if (e->name)
            tc_json_str(o, e->name, strlen(e->name));
        else
            fputs("null", o);
        fprintf(o, ", \"dtype\": \"%s\", \"shape\": [", td_dtype_name(e->dtype));
        for (uint32_t d = 0; d < e->ndim; d++)
            fprintf(o, "%s%" PRId64, d ? ", " : "", e->shape[d]);
        fprintf(o, "], \"offset\": %" PRIu64 ", \"nbytes\": %" PRIu64 ", \"layout\": \"%s\"",
                e->layout ? e->src.offset : e->offset, e->nbytes, tc_layout(e->layout));
        if (e->layout & TD__LAYOUT_DEFLATE)
            fprintf(o, ", \"stored_nbytes\": %" PRIu64, e->src.nbytes);
        uint64_t f32;
        if (tc_dequant_size(e, &f32))
            fprintf(o, ", \"dequantized_f32_nbytes\": %" PRIu64, f32);
        else if (td_dtype_is_block(e->dtype))
            fputs(", \"dequantized_f32_nbytes\": null", o);
        fputc('}', o);
    }
    fputs("],\n \"metadata\": ", o);
    if (!f->t.meta) {
        fputs("null", o);
    } else {
        fputc('{', o);
        for (size_t i = 0; i < td_meta_size(f->t.meta); i++) {
            const char *key;
            const td_value *v = td_meta_at(f->t.meta, i, &key);
            fputs(i ? ",\n  " : "\n  ", o);
            tc_json_str(o, key, strlen(key));
            fputs(": ", o);
            tc_json_value(o, v);
        }
        fputc('}', o);
    }
    fputs("}\n", o);
}

/* ---- human output ---- */

static void tc_text_str(FILE *o, const char *s, size_t n, size_t max)
{
    fputc('"', o);
    for (size_t i = 0; i < n && i < max; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            fprintf(o, "\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            fprintf(o, "\\x%02x", c);
        else
            fputc(c, o);
    }
    fputs(n > max ? "\"..." : "\"", o);
}

static void tc_text_scalar(FILE *o, const td_value *v)
{
    if (td_value_type(v) == TD_TYPE_STRING) {
        size_t n;
        const char *s = td_value_string(v, &n);
        tc_text_str(o, s, n, 200);
    } else {
        tc_json_scalar(o, v);
    }
}

static void tc_text_value(FILE *o, const td_value *v)
{
    if (td_value_type(v) != TD_TYPE_ARRAY) {
        tc_text_scalar(o, v);
        return;
    }
    size_t n = td_value_array_len(v);
    fputc('[', o);
    for (size_t i = 0; i < n && i < TC_SHOW_ITEMS; i++) {
        if (i)
            fputs(", ", o);
        tc_text_value(o, td_value_array_at(v, i));
    }
    if (n > TC_SHOW_ITEMS)
        fprintf(o, ", ... %zu more", n - TC_SHOW_ITEMS);
    fputc(']', o);
}

static void tc_type_desc(const td_value *v, char *out, size_t cap)
{
    if (td_value_type(v) != TD_TYPE_ARRAY) {
        snprintf(out, cap, "%s", td_type_name(td_value_type(v)));
        return;
    }
    char inner[64] = "";
    if (td_value_array_type(v) == TD_TYPE_ARRAY && td_value_array_len(v))
        tc_type_desc(td_value_array_at(v, 0), inner, sizeof inner);
    else
        snprintf(inner, sizeof inner, "%s", td_type_name(td_value_array_type(v)));
    snprintf(out, cap, "%s[%zu]", inner, td_value_array_len(v));
}

static void tc_ls_text(const char *path, const tc_file *f)
{
    uint64_t total = 0;
    size_t wname = 4, wdtype = 5, wshape = 5;
    char shape[TD_MAX_DIMS * 22 + 8];
    for (size_t i = 0; i < f->t.n; i++) {
        const td__entry *e = &f->t.entries[i];
        total += e->nbytes;
        size_t ln = e->name ? strlen(e->name) : 6;
        wname = ln > wname ? (ln < 60 ? ln : 60) : wname;
        size_t ld = strlen(td_dtype_name(e->dtype));
        wdtype = ld > wdtype ? ld : wdtype;
        tc_shape(e, shape, sizeof shape);
        wshape = strlen(shape) > wshape ? strlen(shape) : wshape;
    }
    printf("%s: %s, %zu tensor%s, %" PRIu64 " bytes of data\n", path, td_format_name(f->t.format),
           f->t.n, f->t.n == 1 ? "" : "s", total);
    printf("  %-*s  %-*s  %-*s  %12s  %12s  %s\n", (int)wname, "NAME", (int)wdtype, "DTYPE",
           (int)wshape, "SHAPE", "OFFSET", "NBYTES", "LAYOUT");
    for (size_t i = 0; i < f->t.n; i++) {
        const td__entry *e = &f->t.entries[i];
        tc_shape(e, shape, sizeof shape);
        char extra[64] = "";
        uint64_t f32;
        if (tc_dequant_size(e, &f32))
            snprintf(extra, sizeof extra, "  (%s blocks; %" PRIu64 " bytes as float32)",
                     td_dtype_name(e->dtype), f32);
        else if (td_dtype_is_block(e->dtype))
            snprintf(extra, sizeof extra, "  (%s blocks; not dequantizable)",
                     td_dtype_name(e->dtype));
        printf("  %-*s  %-*s  %-*s  %12" PRIu64 "  %12" PRIu64 "  %s%s\n", (int)wname,
               e->name ? e->name : "(none)", (int)wdtype, td_dtype_name(e->dtype), (int)wshape,
               shape, e->layout ? e->src.offset : e->offset, e->nbytes, tc_layout(e->layout),
               extra);
    }
    if (!f->t.meta)
        return;
    size_t n = td_meta_size(f->t.meta);
    printf("metadata: %zu key%s\n", n, n == 1 ? "" : "s");
    for (size_t i = 0; i < n; i++) {
        const char *key;
        const td_value *v = td_meta_at(f->t.meta, i, &key);
        char type[96];
        tc_type_desc(v, type, sizeof type);
        printf("  %s (%s) = ", key, type);
        tc_text_value(stdout, v);
        putchar('\n');
    }
}

static int tc_ls(int argc, char **argv)
{
    int json = 0;
    const char *path = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = 1;
        else if (argv[i][0] == '-' && argv[i][1])
            return tc_usage(stderr), TC_EXIT_USAGE;
        else if (path)
            return tc_usage(stderr), TC_EXIT_USAGE;
        else
            path = argv[i];
    }
    if (!path)
        return tc_usage(stderr), TC_EXIT_USAGE;
    td_error err = {0};
    tc_file f;
    if (tc_open(path, &f, &err))
        return tc_fail(&err);
    if (json)
        tc_ls_json(path, &f);
    else
        tc_ls_text(path, &f);
    tc_close(&f);
    return fflush(stdout) == 0 ? 0 : TC_EXIT_FAIL;
}

/* Metadata for the target: everything when source and target share a format; across
 * safetensors and gguf, the string values (the only kind both hold). Others are reported. */
static int tc_convert_meta(const td_meta *src, td_format from, td_format to, td_meta **out,
                           td_error *err)
{
    *out = NULL;
    if (!src || (to != TD_FORMAT_SAFETENSORS && to != TD_FORMAT_GGUF)) {
        if (src && td_meta_size(src))
            fprintf(stderr, "tensorctl: note: %s cannot hold metadata; %zu keys dropped\n",
                    td_format_name(to), td_meta_size(src));
        return 0;
    }
    if (from == to) {
        *out = td_meta_copy(src);
        return *out ? 0 : td__err(err, TD_ENOMEM, "out of memory");
    }
    td_meta *m = td_meta_new();
    if (!m)
        return td__err(err, TD_ENOMEM, "out of memory");
    size_t dropped = 0;
    for (size_t i = 0; i < td_meta_size(src); i++) {
        const char *key;
        const td_value *v = td_meta_at(src, i, &key);
        size_t n;
        const char *s = td_value_string(v, &n);
        if (!s) {
            dropped++;
            continue;
        }
        int rc = td_meta_set_string(m, key, s, n, err);
        if (rc) {
            td_meta_free(m);
            return rc;
        }
    }
    if (dropped)
        fprintf(stderr,
                "tensorctl: note: %zu non-string metadata keys dropped (%s holds strings "
                "only)\n",
                dropped, td_format_name(to));
    *out = m;
    return 0;
}

static int tc_convert(int argc, char **argv)
{
    int compress = 0, dequant = 0;
    const char *src = NULL, *dst = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--compress") == 0)
            compress = 1;
        else if (strcmp(argv[i], "--dequantize") == 0 && i + 1 < argc) {
            const char *t = argv[++i];
            dequant = !strcmp(t, "f32")    ? TD_FLOAT32
                      : !strcmp(t, "f16")  ? TD_FLOAT16
                      : !strcmp(t, "bf16") ? TD_BFLOAT16
                      : !strcmp(t, "mlx")  ? TD_DEQUANT_MLX
                                           : -1;
            if (dequant < 0)
                return tc_usage(stderr), TC_EXIT_USAGE;
        } else if (argv[i][0] == '-' && argv[i][1])
            return tc_usage(stderr), TC_EXIT_USAGE;
        else if (!src)
            src = argv[i];
        else if (!dst)
            dst = argv[i];
        else
            return tc_usage(stderr), TC_EXIT_USAGE;
    }
    if (!src || !dst)
        return tc_usage(stderr), TC_EXIT_USAGE;
    td_format from = td_format_from_path(src), to = td_format_from_path(dst);
    td_error err = {0};
    if (!to) {
        td__err(&err, TD_ENOTSUP,
                "%s: the destination needs an extension: .npy, .npz, "
                ".safetensors or .gguf",
                dst);
        return tc_fail(&err);
    }
    int tty = isatty(STDERR_FILENO);
    double t0 = tc_now();
    td_load_options opt = TD_LOAD_OPTIONS_INIT;
    opt.mode = TD_MODE_EMBEDDED;
    opt.dequantize = dequant;
    td_dict *arrays = NULL;
    td_meta *meta = NULL, *out_meta = NULL;
    int has_meta = from == TD_FORMAT_SAFETENSORS || from == TD_FORMAT_GGUF;
    int rc = td_load(src, &opt, &arrays, has_meta ? &meta : NULL, &err);
    if (!rc && tty && tc_now() - t0 > 0.5)
        fprintf(stderr, "tensorctl: loaded %zu tensors from %s in %.1f s, writing %s...\n",
                td_dict_size(arrays), src, tc_now() - t0, dst);
    if (!rc)
        rc = tc_convert_meta(meta, from, to, &out_meta, &err);
    /* Unnamed entries (a bare .npy) are named arr_0, arr_1, ... in every target, as savez does. */
    td_dict *named = NULL;
    if (!rc && to != TD_FORMAT_NPY && to != TD_FORMAT_NPZ) {
        named = td_dict_new();
        size_t unnamed = 0;
        for (size_t i = 0; !rc && i < td_dict_size(arrays); i++) {
            const char *name;
            td_array *a = td_dict_at(arrays, i, &name);
            char buf[32];
            if (!name) {
                snprintf(buf, sizeof buf, "arr_%zu", unnamed++);
                name = buf;
            }
            rc = named ? td_dict_set(named, name, a, &err)
                       : td__err(&err, TD_ENOMEM, "out of memory");
        }
    }
    if (!rc) {
        const td_dict *d = named ? named : arrays;
        switch (to) {
        case TD_FORMAT_NPY:
            if (td_dict_size(d) != 1)
                rc = td__err(&err, TD_EINVAL, "%s: .npy holds one array, %s has %zu", dst, src,
                             td_dict_size(d));
            else
                rc = td_save(dst, td_dict_at(d, 0, NULL), &err);
            break;
        case TD_FORMAT_NPZ:
            rc = compress ? td_savez_compressed(dst, d, &err) : td_savez(dst, d, &err);
            break;
        case TD_FORMAT_SAFETENSORS:
            rc = td_save_safetensors(dst, d, out_meta, &err);
            break;
        default:
            rc = td_save_gguf(dst, d, out_meta, &err);
            break;
        }
    }
    if (!rc && tty && tc_now() - t0 > 0.5)
        fprintf(stderr, "tensorctl: done in %.1f s\n", tc_now() - t0);
    td_dict_free(named);
    td_dict_free(arrays);
    td_meta_free(meta);
    td_meta_free(out_meta);
    return rc ? tc_fail(&err) : 0;
}

/* verify: index and validate everything, decode every entry that needs decoding, and check
 * every CRC-32 of an npz (stored members too, which a load does not read). */
static int tc_verify(int argc, char **argv)
{
    if (argc != 1 || argv[0][0] == '-')
        return tc_usage(stderr), TC_EXIT_USAGE;
    const char *path = argv[0];
    td_error err = {0};
    tc_file f;
    if (tc_open(path, &f, &err))
        return tc_fail(&err);
    int rc = 0;
    if (f.t.format == TD_FORMAT_NPZ)
        rc = td__zip_verify(f.base, f.len, path, &err);
    uint64_t decoded = 0;
    for (size_t i = 0; !rc && i < f.t.n; i++) {
        const td__entry *e = &f.t.entries[i];
        if (!e->layout)
            continue;
        void *buf = malloc(e->nbytes ? e->nbytes : 1);
        if (!buf)
            rc = td__err(&err, TD_ENOMEM, "%s: out of memory for %" PRIu64 " bytes", path,
                         e->nbytes);
        else
            rc = td__decode_entry(e, f.base, f.len, buf, path, &err);
        free(buf);
        decoded += e->nbytes;
    }
    if (!rc)
        printf("%s: ok (%s, %zu tensors, %" PRIu64 " bytes decoded)\n", path,
               td_format_name(f.t.format), f.t.n, decoded);
    tc_close(&f);
    return rc ? tc_fail(&err) : 0;
}

/* ---- the daemon ---- */

static int tc_status(const char *sock, int argc, char **argv)
{
    int json = argc == 1 && strcmp(argv[0], "--json") == 0;
    if (argc > 1 || (argc == 1 && !json))
        return tc_usage(stderr), TC_EXIT_USAGE;
    td_error err = {0};
    td_client *c;
    td_status *st;
    if (td_client_connect(sock, &c, &err))
        return tc_fail(&err);
    int rc = td_client_status(c, &st, &err);
    td_client_close(c);
    if (rc)
        return tc_fail(&err);
    if (json) {
        printf("{\"entries\": %" PRIu64 ", \"bytes\": %" PRIu64 ", \"derived_bytes\": %" PRIu64
               ", \"budget\": %" PRIu64 ", \"quota\": %" PRIu64 ", \"hits\": %" PRIu64
               ", \"misses\": %" PRIu64 ", \"evictions\": %" PRIu64 ", \"clients\": %" PRIu64
               ", \"leases\": %" PRIu64 ", \"decodes\": %" PRIu64 ", \"decode_ns_total\": %" PRIu64
               ", \"decode_ns_max\": %" PRIu64 ", \"errors\": %" PRIu64 ", \"refused\": %" PRIu64
               ", \"pressure\": %" PRIu64 ", \"uptime_ms\": %" PRIu64 ", \"users\": [",
               st->entries, st->bytes, st->derived_bytes, st->budget, st->quota, st->hits,
               st->misses, st->evictions, st->clients, st->leases, st->decodes, st->decode_ns_total,
               st->decode_ns_max, st->errors, st->refused, st->pressure, st->uptime_ms);
        for (size_t i = 0; i < st->nusers; i++) {
            const td_status_user *u = &st->users[i];
            printf("%s{\"uid\": %" PRIu32 ", \"entries\": %" PRIu64 ", \"bytes\": %" PRIu64
                   ", \"quota\": %" PRIu64 "}",
                   i ? ",\n  " : "\n  ", u->uid, u->entries, u->bytes, u->quota);
        }
        fputs("], \"files\": [", stdout);
        for (size_t i = 0; i < st->nfiles; i++) {
            const td_status_file *f = &st->files[i];
            fputs(i ? ",\n  {\"file\": " : "\n  {\"file\": ", stdout);
            tc_json_str(stdout, f->name, strlen(f->name));
            printf(", \"format\": \"%s\", \"mode\": \"%s\", \"tensors\": %" PRIu64
                   ", \"file_bytes\": %" PRIu64 ", \"derived_bytes\": %" PRIu64
                   ", \"bytes\": %" PRIu64 ", \"clients\": %" PRIu64 ", \"loads\": %" PRIu64
                   ", \"hits\": %" PRIu64 ", \"idle_ms\": %" PRIu64 "}",
                   td_format_name(f->format) ? td_format_name(f->format) : "unknown", f->mode,
                   f->tensors, f->file_bytes, f->derived_bytes, f->bytes, f->leases, f->loads,
                   f->hits, f->idle_ms);
        }
        fputs("]}\n", stdout);
    } else {
        char budget[32] = "none", quota[32] = "none";
        if (st->budget)
            snprintf(budget, sizeof budget, "%" PRIu64, st->budget);
        if (st->quota)
            snprintf(quota, sizeof quota, "%" PRIu64, st->quota);
        printf("tensord: %" PRIu64 " files cached, %" PRIu64 " bytes held (budget %s, per uid %s), "
               "%" PRIu64 " clients, %" PRIu64 " leases\n",
               st->entries, st->bytes, budget, quota, st->clients, st->leases);
        printf("loads: %" PRIu64 " hits, %" PRIu64 " misses, %" PRIu64 " decodes (%.1f ms in all, "
               "longest %.1f ms), %" PRIu64 " evictions, %" PRIu64
               " refused (budget full), %" PRIu64 " memory pressure events, %" PRIu64
               " errors; up %.1f s\n",
               st->hits, st->misses, st->decodes, (double)st->decode_ns_total / 1e6,
               (double)st->decode_ns_max / 1e6, st->evictions, st->refused, st->pressure,
               st->errors, (double)st->uptime_ms / 1e3);
        if (st->nusers)
            printf("  %-10s %7s %13s %13s\n", "UID", "ENTRIES", "BYTES", "QUOTA");
        for (size_t i = 0; i < st->nusers; i++) {
            const td_status_user *u = &st->users[i];
            char q[32] = "none";
            if (u->quota)
                snprintf(q, sizeof q, "%" PRIu64, u->quota);
            printf("  %-10" PRIu32 " %7" PRIu64 " %13" PRIu64 " %13s\n", u->uid, u->entries,
                   u->bytes, q);
        }
        if (st->nfiles)
            printf("  %-11s %-8s %7s %13s %13s %7s %6s %6s %9s  %s\n", "FORMAT", "MODE", "TENSORS",
                   "FILE BYTES", "DERIVED", "CLIENTS", "LOADS", "HITS", "IDLE", "FILE");
        for (size_t i = 0; i < st->nfiles; i++) {
            const td_status_file *f = &st->files[i];
            printf("  %-11s %-8s %7" PRIu64 " %13" PRIu64 " %13" PRIu64 " %7" PRIu64 " %6" PRIu64
                   " %6" PRIu64 " %8.1fs  %s\n",
                   td_format_name(f->format) ? td_format_name(f->format) : "?", f->mode, f->tensors,
                   f->file_bytes, f->derived_bytes, f->leases, f->loads, f->hits,
                   (double)f->idle_ms / 1e3, f->name);
        }
    }
    td_status_free(st);
    return fflush(stdout) == 0 ? 0 : TC_EXIT_FAIL;
}

static int tc_load(const char *sock, int argc, char **argv)
{
    if (argc != 1 || argv[0][0] == '-')
        return tc_usage(stderr), TC_EXIT_USAGE;
    td_load_options opt = TD_LOAD_OPTIONS_INIT;
    opt.mode = TD_MODE_DAEMON;
    opt.socket_path = sock;
    td_error err = {0};
    td_dict *d;
    double t0 = tc_now();
    if (td_load(argv[0], &opt, &d, NULL, &err))
        return tc_fail(&err);
    double ms = (tc_now() - t0) * 1e3;
    uint64_t total = 0;
    for (size_t i = 0; i < td_dict_size(d); i++)
        total += td_array_nbytes(td_dict_at(d, i, NULL));
    printf("%s: %zu tensors, %" PRIu64 " bytes, through tensord in %.3f ms\n", argv[0],
           td_dict_size(d), total, ms);
    for (size_t i = 0; i < td_dict_size(d); i++) {
        const char *name;
        const td_array *a = td_dict_at(d, i, &name);
        printf("  %s %s (", name ? name : "(none)", td_dtype_name(td_array_dtype(a)));
        for (int k = 0; k < td_array_ndim(a); k++)
            printf("%s%" PRId64, k ? ", " : "", td_array_shape(a)[k]);
        printf("%s) %" PRIu64 " bytes at %p\n", td_array_ndim(a) == 1 ? "," : "",
               td_array_nbytes(a), td_array_data(a));
    }
    td_dict_free(d);
    return fflush(stdout) == 0 ? 0 : TC_EXIT_FAIL;
}

static int tc_evict(const char *sock, int argc, char **argv)
{
    if (argc > 1 || (argc == 1 && argv[0][0] == '-'))
        return tc_usage(stderr), TC_EXIT_USAGE;
    td_error err = {0};
    td_client *c;
    if (td_client_connect(sock, &c, &err))
        return tc_fail(&err);
    uint64_t n = 0, bytes = 0;
    int rc = td_client_evict(c, argc ? argv[0] : NULL, &n, &bytes, &err);
    td_client_close(c);
    if (rc)
        return tc_fail(&err);
    printf("evicted %" PRIu64 " entr%s, %" PRIu64 " bytes\n", n, n == 1 ? "y" : "ies", bytes);
    return 0;
}

int main(int argc, char **argv)
{
    const char *sock = NULL;
    if (argc >= 3 && strcmp(argv[1], "--socket") == 0) {
        sock = argv[2];
        argc -= 2;
        argv += 2;
    }
    if (argc < 2)
        return tc_usage(stderr), TC_EXIT_USAGE;
    const char *cmd = argv[1];
    if (strcmp(cmd, "status") == 0)
        return tc_status(sock, argc - 2, argv + 2);
    if (strcmp(cmd, "load") == 0)
        return tc_load(sock, argc - 2, argv + 2);
    if (strcmp(cmd, "evict") == 0)
        return tc_evict(sock, argc - 2, argv + 2);
    if (strcmp(cmd, "ls") == 0)
        return tc_ls(argc - 2, argv + 2);
    if (strcmp(cmd, "convert") == 0)
        return tc_convert(argc - 2, argv + 2);
    if (strcmp(cmd, "verify") == 0)
        return tc_verify(argc - 2, argv + 2);
    if (strcmp(cmd, "--version") == 0) {
        printf("tensorctl %s\n", td_version_string());
        return 0;
    }
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        tc_usage(stdout);
        return 0;
    }
    fprintf(stderr, "tensorctl: unknown command '%s'\n", cmd);
    tc_usage(stderr);
    return TC_EXIT_USAGE;
}

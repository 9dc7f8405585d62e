/*
 * tensorctl - inspect, convert and verify weight files.
 *
 *   tensorctl ls [--json] FILE
 *   tensorctl convert [--compress] [--dequantize f32|f16|bf16|mlx] [--shard-size SIZE] SRC DST
 *   tensorctl verify FILE
 *   tensorctl [--socket PATH] status [--json]
 *   tensorctl [--socket PATH] load FILE
 *   tensorctl [--socket PATH] evict [FILE]
 *
 * Exit codes: 0 success, 1 bad input or a failed operation (one line on stderr), 2 usage.
 *
 * It is a client of the public API only (include/tensord.h, linked against libtensord.so):
 * ls is td_inspect, verify is td_verify, the daemon commands are td_client.
 */
#include <tensord.h>

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TC_EXIT_FAIL  1
#define TC_EXIT_USAGE 2
/* Array values longer than this are cut short in the human table (--json gives them whole). */
#define TC_SHOW_ITEMS 8

static void tc_usage(FILE *f)
{
    fprintf(f, "usage: tensorctl ls [--json] FILE\n"
               "       tensorctl convert [--compress] [--dequantize f32|f16|bf16|mlx]\n"
               "                         [--shard-size SIZE] SRC DST\n"
               "       tensorctl verify FILE\n"
               "       tensorctl [--socket PATH] status [--json]\n"
               "       tensorctl [--socket PATH] load FILE\n"
               "       tensorctl [--socket PATH] evict [FILE]\n"
               "       tensorctl --version\n"
               "\n"
               "Formats by extension: .npy .npz .safetensors .gguf; a model of several files\n"
               "by its NAME.safetensors.index.json or its first split NAME-00001-of-0000N.gguf\n"
               "SIZE: bytes, or K/M/G (powers of 1000), or KiB/MiB/GiB (powers of 1024)\n"
               "The daemon's socket: --socket, else $TENSORD_SOCKET, else " TD_DEFAULT_SOCKET "\n");
}

static int tc_fail(const td_error *err)
{
    fprintf(stderr, "tensorctl: %s\n", err->message);
    return TC_EXIT_FAIL;
}

/* Fills err as the library would, for tensorctl's own failures; returns code. */
__attribute__((format(printf, 3, 4))) static int tc_err(td_error *err, int code, const char *fmt,
                                                        ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    err->code = code;
    return code;
}

static double tc_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char *tc_layout(unsigned layout)
{
    if (layout & TD_LAYOUT_DEFLATE)
        return "deflate";
    if ((layout & TD_LAYOUT_BYTESWAP) && (layout & TD_LAYOUT_FORTRAN))
        return "byteswap+fortran";
    if (layout & TD_LAYOUT_BYTESWAP)
        return "byteswap";
    if (layout & TD_LAYOUT_FORTRAN)
        return "fortran";
    if (layout & TD_LAYOUT_ALIGN)
        return "align";
    return "view";
}

/* For a GGML block tensor tensord can dequantize: the bytes it takes as float32. */
static int tc_dequant_size(const td_inspect_result *r, size_t i, uint64_t *nbytes)
{
    td_dtype t = td_inspect_tensor_dtype(r, i);
    if (!td_dtype_dequantizable(t))
        return 0;
    const int64_t *shape = td_inspect_tensor_shape(r, i);
    uint64_t n = 1;
    for (int d = 0; d < td_inspect_tensor_ndim(r, i); d++)
        n *= (uint64_t)shape[d];
    return !__builtin_mul_overflow(n, (uint64_t)4, nbytes);
}

static void tc_shape(const td_inspect_result *r, size_t i, char *out, size_t cap)
{
    int ndim = td_inspect_tensor_ndim(r, i);
    const int64_t *shape = td_inspect_tensor_shape(r, i);
    size_t n = (size_t)snprintf(out, cap, "(");
    for (int d = 0; d < ndim && n < cap; d++)
        n += (size_t)snprintf(out + n, cap - n, "%s%" PRId64, d ? ", " : "", shape[d]);
    if (n < cap)
        snprintf(out + n, cap - n, "%s)", ndim == 1 ? "," : "");
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
    td_meta_type t = td_value_type(v);
    int64_t i;
    uint64_t u;
    double d;
    size_t n;
    const char *s;
    switch (t) {
    case TD_META_BOOL:
        td_value_get_int(v, &i);
        fputs(i ? "true" : "false", o);
        break;
    case TD_META_STRING:
        s = td_value_string(v, &n);
        tc_json_str(o, s, n);
        break;
    case TD_META_FLOAT32:
    case TD_META_FLOAT64:
        td_value_get_float(v, &d);
        tc_json_double(o, d);
        break;
    case TD_META_UINT64:
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
    td_meta_type t = td_value_type(v);
    if (t != TD_META_ARRAY) {
        fprintf(o, "{\"type\": \"%s\", \"value\": ", td_meta_type_name(t));
        tc_json_scalar(o, v);
        fputc('}', o);
        return;
    }
    td_meta_type et = td_value_array_type(v);
    size_t n = td_value_array_len(v);
    fprintf(o, "{\"type\": \"array\", \"element_type\": \"%s\", \"value\": [",
            td_meta_type_name(et));
    for (size_t i = 0; i < n; i++) {
        if (i)
            fputs(", ", o);
        const td_value *item = td_value_array_at(v, i);
        if (et == TD_META_ARRAY)
            tc_json_value(o, item);
        else
            tc_json_scalar(o, item);
    }
    fputs("]}", o);
}

static void tc_ls_json(const char *path, const td_inspect_result *r)
{
    FILE *o = stdout;
    const td_meta *meta = td_inspect_meta(r);
    fputs("{\"file\": ", o);
    tc_json_str(o, path, strlen(path));
    fprintf(o, ", \"format\": \"%s\", \"tensors\": [", td_format_name(td_inspect_format(r)));
    for (size_t i = 0; i < td_inspect_ntensors(r); i++) {
        const char *name = td_inspect_tensor_name(r, i);
        td_dtype dtype = td_inspect_tensor_dtype(r, i);
        const int64_t *shape = td_inspect_tensor_shape(r, i);
        unsigned layout = td_inspect_tensor_layout(r, i);
        fputs(i ? ",\n  {\"name\": " : "\n  {\"name\": ", o);
        if (name)
            tc_json_str(o, name, strlen(name));
        else
            fputs("null", o);
        fprintf(o, ", \"dtype\": \"%s\", \"shape\": [", td_dtype_name(dtype));
        for (int d = 0; d < td_inspect_tensor_ndim(r, i); d++)
            fprintf(o, "%s%" PRId64, d ? ", " : "", shape[d]);
        fprintf(o, "], \"offset\": %" PRIu64 ", \"nbytes\": %" PRIu64 ", \"layout\": \"%s\"",
                td_inspect_tensor_offset(r, i), td_inspect_tensor_nbytes(r, i), tc_layout(layout));
        if (layout & TD_LAYOUT_DEFLATE)
            fprintf(o, ", \"stored_nbytes\": %" PRIu64, td_inspect_tensor_stored_nbytes(r, i));
        if (td_inspect_nfiles(r) > 1) {
            const char *f = td_inspect_file_name(r, td_inspect_tensor_file(r, i));
            fputs(", \"file\": ", o);
            tc_json_str(o, f, strlen(f));
        }
        uint64_t f32;
        if (tc_dequant_size(r, i, &f32))
            fprintf(o, ", \"dequantized_f32_nbytes\": %" PRIu64, f32);
        else if (td_dtype_is_block(dtype))
            fputs(", \"dequantized_f32_nbytes\": null", o);
        fputc('}', o);
    }
    fputs("],\n", o);
    if (td_inspect_nfiles(r) > 1) {
        fputs(" \"files\": [", o);
        for (size_t k = 0; k < td_inspect_nfiles(r); k++) {
            const char *f = td_inspect_file_name(r, k);
            fputs(k ? ", " : "", o);
            tc_json_str(o, f, strlen(f));
        }
        fputs("],\n", o);
    }
    fputs(" \"metadata\": ", o);
    if (!meta) {
        fputs("null", o);
    } else {
        fputc('{', o);
        for (size_t i = 0; i < td_meta_size(meta); i++) {
            const char *key;
            const td_value *v = td_meta_at(meta, i, &key);
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
    if (td_value_type(v) == TD_META_STRING) {
        size_t n;
        const char *s = td_value_string(v, &n);
        tc_text_str(o, s, n, 200);
    } else {
        tc_json_scalar(o, v);
    }
}

static void tc_text_value(FILE *o, const td_value *v)
{
    if (td_value_type(v) != TD_META_ARRAY) {
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
    if (td_value_type(v) != TD_META_ARRAY) {
        snprintf(out, cap, "%s", td_meta_type_name(td_value_type(v)));
        return;
    }
    char inner[64] = "";
    if (td_value_array_type(v) == TD_META_ARRAY && td_value_array_len(v))
        tc_type_desc(td_value_array_at(v, 0), inner, sizeof inner);
    else
        snprintf(inner, sizeof inner, "%s", td_meta_type_name(td_value_array_type(v)));
    snprintf(out, cap, "%s[%zu]", inner, td_value_array_len(v));
}

static void tc_ls_text(const char *path, const td_inspect_result *r)
{
    uint64_t total = 0;
    size_t wname = 4, wdtype = 5, wshape = 5, n = td_inspect_ntensors(r);
    char shape[TD_MAX_DIMS * 22 + 8];
    for (size_t i = 0; i < n; i++) {
        const char *name = td_inspect_tensor_name(r, i);
        total += td_inspect_tensor_nbytes(r, i);
        size_t ln = name ? strlen(name) : 6;
        wname = ln > wname ? (ln < 60 ? ln : 60) : wname;
        size_t ld = strlen(td_dtype_name(td_inspect_tensor_dtype(r, i)));
        wdtype = ld > wdtype ? ld : wdtype;
        tc_shape(r, i, shape, sizeof shape);
        wshape = strlen(shape) > wshape ? strlen(shape) : wshape;
    }
    size_t nfiles = td_inspect_nfiles(r);
    printf("%s: %s, %zu tensor%s, %" PRIu64 " bytes of data", path,
           td_format_name(td_inspect_format(r)), n, n == 1 ? "" : "s", total);
    if (nfiles > 1)
        printf(", %zu files", nfiles);
    putchar('\n');
    printf("  %-*s  %-*s  %-*s  %12s  %12s  %s%s\n", (int)wname, "NAME", (int)wdtype, "DTYPE",
           (int)wshape, "SHAPE", "OFFSET", "NBYTES", nfiles > 1 ? "LAYOUT    " : "LAYOUT",
           nfiles > 1 ? "FILE" : "");
    for (size_t i = 0; i < n; i++) {
        const char *name = td_inspect_tensor_name(r, i);
        td_dtype dtype = td_inspect_tensor_dtype(r, i);
        tc_shape(r, i, shape, sizeof shape);
        char extra[64] = "";
        uint64_t f32;
        if (tc_dequant_size(r, i, &f32))
            snprintf(extra, sizeof extra, "  (%s blocks; %" PRIu64 " bytes as float32)",
                     td_dtype_name(dtype), f32);
        else if (td_dtype_is_block(dtype))
            snprintf(extra, sizeof extra, "  (%s blocks; not dequantizable)", td_dtype_name(dtype));
        const char *layout = tc_layout(td_inspect_tensor_layout(r, i));
        if (nfiles > 1)
            printf("  %-*s  %-*s  %-*s  %12" PRIu64 "  %12" PRIu64 "  %-8s  %s%s\n", (int)wname,
                   name ? name : "(none)", (int)wdtype, td_dtype_name(dtype), (int)wshape, shape,
                   td_inspect_tensor_offset(r, i), td_inspect_tensor_nbytes(r, i), layout,
                   td_inspect_file_name(r, td_inspect_tensor_file(r, i)), extra);
        else
            printf("  %-*s  %-*s  %-*s  %12" PRIu64 "  %12" PRIu64 "  %s%s\n", (int)wname,
                   name ? name : "(none)", (int)wdtype, td_dtype_name(dtype), (int)wshape, shape,
                   td_inspect_tensor_offset(r, i), td_inspect_tensor_nbytes(r, i), layout, extra);
    }
    const td_meta *meta = td_inspect_meta(r);
    if (!meta)
        return;
    size_t nkeys = td_meta_size(meta);
    printf("metadata: %zu key%s\n", nkeys, nkeys == 1 ? "" : "s");
    for (size_t i = 0; i < nkeys; i++) {
        const char *key;
        const td_value *v = td_meta_at(meta, i, &key);
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
    td_inspect_result *r;
    if (td_inspect(path, NULL, &r, &err))
        return tc_fail(&err);
    if (json)
        tc_ls_json(path, r);
    else
        tc_ls_text(path, r);
    td_inspect_free(r);
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
        return *out ? 0 : tc_err(err, TD_ENOMEM, "out of memory");
    }
    td_meta *m = td_meta_new();
    if (!m)
        return tc_err(err, TD_ENOMEM, "out of memory");
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

/* SIZE for --shard-size: bytes, K/M/G (decimal, as Hugging Face and gguf-split count) or
 * KiB/MiB/GiB; 0 and overflow are refused. */
static int tc_parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || errno || *s == '-')
        return -1;
    static const struct {
        const char *suffix;
        uint64_t mul;
    } units[] = {{"", 1},
                 {"B", 1},
                 {"K", 1000},
                 {"M", 1000000},
                 {"G", 1000000000},
                 {"KB", 1000},
                 {"MB", 1000000},
                 {"GB", 1000000000},
                 {"KiB", 1ull << 10},
                 {"MiB", 1ull << 20},
                 {"GiB", 1ull << 30}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (strcmp(end, units[i].suffix) == 0) {
            if (!v || v > UINT64_MAX / units[i].mul)
                return -1;
            *out = v * units[i].mul;
            return 0;
        }
    return -1;
}

static int tc_convert(int argc, char **argv)
{
    int compress = 0;
    uint64_t shard_size = 0;
    td_dequant dequant = TD_DEQUANT_NONE;
    const char *src = NULL, *dst = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--compress") == 0)
            compress = 1;
        else if (strcmp(argv[i], "--dequantize") == 0 && i + 1 < argc) {
            const char *t = argv[++i];
            dequant = !strcmp(t, "f32")    ? TD_DEQUANT_F32
                      : !strcmp(t, "f16")  ? TD_DEQUANT_F16
                      : !strcmp(t, "bf16") ? TD_DEQUANT_BF16
                      : !strcmp(t, "mlx")  ? TD_DEQUANT_MLX
                                           : TD_DEQUANT_NONE;
            if (!dequant)
                return tc_usage(stderr), TC_EXIT_USAGE;
        } else if (strcmp(argv[i], "--shard-size") == 0 && i + 1 < argc) {
            if (tc_parse_size(argv[++i], &shard_size)) {
                fprintf(stderr,
                        "tensorctl: --shard-size %s: not a size (bytes, K/M/G, "
                        "KiB/MiB/GiB)\n",
                        argv[i]);
                return TC_EXIT_USAGE;
            }
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
    if (!from && strlen(src) > strlen(".safetensors.index.json") &&
        strcmp(src + strlen(src) - strlen(".safetensors.index.json"), ".safetensors.index.json") ==
            0)
        from = TD_FORMAT_SAFETENSORS; /* a sharded model's index */
    if (shard_size && to != TD_FORMAT_SAFETENSORS && to != TD_FORMAT_GGUF) {
        tc_err(&err, TD_EINVAL, "%s: --shard-size writes .safetensors or .gguf models", dst);
        return tc_fail(&err);
    }
    if (!to) {
        tc_err(&err, TD_ENOTSUP,
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
            const td_array *a = td_dict_at(arrays, i, &name);
            char buf[32];
            if (!name) {
                snprintf(buf, sizeof buf, "arr_%zu", unnamed++);
                name = buf;
            }
            rc = named ? td_dict_set(named, name, a, &err)
                       : tc_err(&err, TD_ENOMEM, "out of memory");
        }
    }
    if (!rc) {
        const td_dict *d = named ? named : arrays;
        switch (to) {
        case TD_FORMAT_NPY:
            if (td_dict_size(d) != 1)
                rc = tc_err(&err, TD_EINVAL, "%s: .npy holds one array, %s has %zu", dst, src,
                            td_dict_size(d));
            else
                rc = td_save(dst, td_dict_at(d, 0, NULL), &err);
            break;
        case TD_FORMAT_NPZ:
            rc = compress ? td_savez_compressed(dst, d, &err) : td_savez(dst, d, &err);
            break;
        case TD_FORMAT_SAFETENSORS:
        case TD_FORMAT_GGUF: {
            /* One file, or shards past --shard-size (td_save_model writes the plain file when
             * one shard is enough). */
            td_save_options so = TD_SAVE_OPTIONS_INIT;
            so.max_shard_bytes = shard_size;
            rc = td_save_model(dst, d, out_meta, &so, &err);
            break;
        }
        default:
            rc = tc_err(&err, TD_ENOTSUP, "%s: unknown format", dst);
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
 * every CRC-32 of an npz (stored members too, which a load does not read). td_inspect first,
 * for the figures of the report. */
static int tc_verify(int argc, char **argv)
{
    if (argc != 1 || argv[0][0] == '-')
        return tc_usage(stderr), TC_EXIT_USAGE;
    const char *path = argv[0];
    td_error err = {0};
    td_inspect_result *r;
    if (td_inspect(path, NULL, &r, &err))
        return tc_fail(&err);
    uint64_t decoded = 0;
    for (size_t i = 0; i < td_inspect_ntensors(r); i++)
        if (td_inspect_tensor_layout(r, i) != TD_LAYOUT_VIEW)
            decoded += td_inspect_tensor_nbytes(r, i);
    int rc = td_verify(path, NULL, &err);
    if (!rc)
        printf("%s: ok (%s, %zu tensors, %" PRIu64 " bytes decoded)\n", path,
               td_format_name(td_inspect_format(r)), td_inspect_ntensors(r), decoded);
    td_inspect_free(r);
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
    uint64_t g[TD_STATUS_PRESSURE + 1];
    for (int k = 0; k <= TD_STATUS_PRESSURE; k++)
        g[k] = td_status_get(st, (td_status_key)k);
    size_t nfiles = td_status_nfiles(st), nusers = td_status_nusers(st);
    if (json) {
        printf("{\"entries\": %" PRIu64 ", \"bytes\": %" PRIu64 ", \"derived_bytes\": %" PRIu64
               ", \"budget\": %" PRIu64 ", \"quota\": %" PRIu64 ", \"hits\": %" PRIu64
               ", \"misses\": %" PRIu64 ", \"evictions\": %" PRIu64 ", \"clients\": %" PRIu64
               ", \"leases\": %" PRIu64 ", \"decodes\": %" PRIu64 ", \"decode_ns_total\": %" PRIu64
               ", \"decode_ns_max\": %" PRIu64 ", \"errors\": %" PRIu64 ", \"refused\": %" PRIu64
               ", \"pressure\": %" PRIu64 ", \"uptime_ms\": %" PRIu64 ", \"users\": [",
               g[TD_STATUS_ENTRIES], g[TD_STATUS_BYTES], g[TD_STATUS_DERIVED_BYTES],
               g[TD_STATUS_BUDGET], g[TD_STATUS_QUOTA], g[TD_STATUS_HITS], g[TD_STATUS_MISSES],
               g[TD_STATUS_EVICTIONS], g[TD_STATUS_CLIENTS], g[TD_STATUS_LEASES],
               g[TD_STATUS_DECODES], g[TD_STATUS_DECODE_NS_TOTAL], g[TD_STATUS_DECODE_NS_MAX],
               g[TD_STATUS_ERRORS], g[TD_STATUS_REFUSED], g[TD_STATUS_PRESSURE],
               g[TD_STATUS_UPTIME_MS]);
        for (size_t i = 0; i < nusers; i++)
            printf("%s{\"uid\": %" PRIu64 ", \"entries\": %" PRIu64 ", \"bytes\": %" PRIu64
                   ", \"quota\": %" PRIu64 "}",
                   i ? ",\n  " : "\n  ", td_status_user_get(st, i, TD_STATUS_USER_UID),
                   td_status_user_get(st, i, TD_STATUS_USER_ENTRIES),
                   td_status_user_get(st, i, TD_STATUS_USER_BYTES),
                   td_status_user_get(st, i, TD_STATUS_USER_QUOTA));
        fputs("], \"files\": [", stdout);
        for (size_t i = 0; i < nfiles; i++) {
            const char *name = td_status_file_name(st, i);
            const char *format = td_format_name(td_status_file_format(st, i));
            fputs(i ? ",\n  {\"file\": " : "\n  {\"file\": ", stdout);
            tc_json_str(stdout, name, strlen(name));
            printf(", \"format\": \"%s\", \"mode\": \"%s\", \"tensors\": %" PRIu64
                   ", \"file_bytes\": %" PRIu64 ", \"derived_bytes\": %" PRIu64
                   ", \"bytes\": %" PRIu64 ", \"clients\": %" PRIu64 ", \"loads\": %" PRIu64
                   ", \"hits\": %" PRIu64 ", \"idle_ms\": %" PRIu64 ", \"preloaded\": %s}",
                   format ? format : "unknown", td_status_file_mode(st, i),
                   td_status_file_get(st, i, TD_STATUS_FILE_TENSORS),
                   td_status_file_get(st, i, TD_STATUS_FILE_FILE_BYTES),
                   td_status_file_get(st, i, TD_STATUS_FILE_DERIVED_BYTES),
                   td_status_file_get(st, i, TD_STATUS_FILE_BYTES),
                   td_status_file_get(st, i, TD_STATUS_FILE_LEASES),
                   td_status_file_get(st, i, TD_STATUS_FILE_LOADS),
                   td_status_file_get(st, i, TD_STATUS_FILE_HITS),
                   td_status_file_get(st, i, TD_STATUS_FILE_IDLE_MS),
                   td_status_file_get(st, i, TD_STATUS_FILE_PRELOADED) ? "true" : "false");
        }
        fputs("]}\n", stdout);
    } else {
        char budget[32] = "none", quota[32] = "none";
        if (g[TD_STATUS_BUDGET])
            snprintf(budget, sizeof budget, "%" PRIu64, g[TD_STATUS_BUDGET]);
        if (g[TD_STATUS_QUOTA])
            snprintf(quota, sizeof quota, "%" PRIu64, g[TD_STATUS_QUOTA]);
        printf("tensord: %" PRIu64 " files cached, %" PRIu64 " bytes held (budget %s, per uid %s), "
               "%" PRIu64 " clients, %" PRIu64 " leases\n",
               g[TD_STATUS_ENTRIES], g[TD_STATUS_BYTES], budget, quota, g[TD_STATUS_CLIENTS],
               g[TD_STATUS_LEASES]);
        printf("loads: %" PRIu64 " hits, %" PRIu64 " misses, %" PRIu64 " decodes (%.1f ms in all, "
               "longest %.1f ms), %" PRIu64 " evictions, %" PRIu64
               " refused (budget full), %" PRIu64 " memory pressure events, %" PRIu64
               " errors; up %.1f s\n",
               g[TD_STATUS_HITS], g[TD_STATUS_MISSES], g[TD_STATUS_DECODES],
               (double)g[TD_STATUS_DECODE_NS_TOTAL] / 1e6, (double)g[TD_STATUS_DECODE_NS_MAX] / 1e6,
               g[TD_STATUS_EVICTIONS], g[TD_STATUS_REFUSED], g[TD_STATUS_PRESSURE],
               g[TD_STATUS_ERRORS], (double)g[TD_STATUS_UPTIME_MS] / 1e3);
        if (nusers)
            printf("  %-10s %7s %13s %13s\n", "UID", "ENTRIES", "BYTES", "QUOTA");
        for (size_t i = 0; i < nusers; i++) {
            char q[32] = "none";
            uint64_t uq = td_status_user_get(st, i, TD_STATUS_USER_QUOTA);
            if (uq)
                snprintf(q, sizeof q, "%" PRIu64, uq);
            printf("  %-10" PRIu64 " %7" PRIu64 " %13" PRIu64 " %13s\n",
                   td_status_user_get(st, i, TD_STATUS_USER_UID),
                   td_status_user_get(st, i, TD_STATUS_USER_ENTRIES),
                   td_status_user_get(st, i, TD_STATUS_USER_BYTES), q);
        }
        if (nfiles)
            printf("  %-11s %-8s %-7s %7s %13s %13s %7s %6s %6s %9s  %s\n", "FORMAT", "MODE",
                   "PRELOAD", "TENSORS", "FILE BYTES", "DERIVED", "CLIENTS", "LOADS", "HITS",
                   "IDLE", "FILE");
        for (size_t i = 0; i < nfiles; i++) {
            const char *format = td_format_name(td_status_file_format(st, i));
            printf("  %-11s %-8s %-7s %7" PRIu64 " %13" PRIu64 " %13" PRIu64 " %7" PRIu64
                   " %6" PRIu64 " %6" PRIu64 " %8.1fs  %s\n",
                   format ? format : "?", td_status_file_mode(st, i),
                   td_status_file_get(st, i, TD_STATUS_FILE_PRELOADED) ? "yes" : "-",
                   td_status_file_get(st, i, TD_STATUS_FILE_TENSORS),
                   td_status_file_get(st, i, TD_STATUS_FILE_FILE_BYTES),
                   td_status_file_get(st, i, TD_STATUS_FILE_DERIVED_BYTES),
                   td_status_file_get(st, i, TD_STATUS_FILE_LEASES),
                   td_status_file_get(st, i, TD_STATUS_FILE_LOADS),
                   td_status_file_get(st, i, TD_STATUS_FILE_HITS),
                   (double)td_status_file_get(st, i, TD_STATUS_FILE_IDLE_MS) / 1e3,
                   td_status_file_name(st, i));
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
    /* A model of several files: its files, each a cache entry of its own in the daemon (read
     * again here from their headers: the dict does not say which file a tensor came from). */
    td_inspect_result *r = NULL;
    td_load_options io = TD_LOAD_OPTIONS_INIT;
    if (td_inspect(argv[0], &io, &r, &err) == 0 && td_inspect_nfiles(r) > 1) {
        size_t nf = td_inspect_nfiles(r);
        printf("model of %zu files:\n", nf);
        for (size_t k = 0; k < nf; k++) {
            size_t nt = 0;
            for (size_t i = 0; i < td_inspect_ntensors(r); i++)
                nt += td_inspect_tensor_file(r, i) == k;
            printf("  %s: %zu tensors\n", td_inspect_file_name(r, k), nt);
        }
    }
    td_inspect_free(r);
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

/*
 * tensord.h - the public interface of libtensord.
 *
 * libtensord saves and loads n-dimensional arrays in the formats MLX speaks:
 *   .npy          one array                    td_save / td_load_array
 *   .npz          a zip of .npy members        td_savez / td_savez_compressed
 *   .safetensors  named arrays + string meta   td_save_safetensors
 *   .gguf         named arrays + typed meta    td_save_gguf
 * and td_load reads any of them.
 *
 * Loading gives zero-copy, read-only views into a shared mapping of the file (embedded mode) or
 * of buffers handed out by the tensord daemon (daemon mode). A view keeps its mapping alive: the
 * mapping is released when the last array that points into it is released.
 *
 * Conventions:
 * - Every function that can fail returns 0 or a negative TD_E* code, and fills *err when err is
 *   not NULL. The message names the file, the tensor, the field and the offending value.
 * - Objects are opaque. Arrays are reference counted (td_array_retain / td_array_release);
 *   dicts and metadata have one owner (td_dict_free / td_meta_free). *_free(NULL) is a no-op.
 * - Nothing here keeps global mutable state; distinct objects may be used from distinct threads
 *   freely, and arrays (including their reference counts) may be shared between threads.
 */
#ifndef TENSORD_H
#define TENSORD_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(TD_BUILDING_LIBRARY) && defined(__GNUC__)
#define TD_EXTERN __attribute__((visibility("default")))
#else
#define TD_EXTERN
#endif

#define TD_VERSION_MAJOR 0
#define TD_VERSION_MINOR 1
#define TD_VERSION_PATCH 0
#define TD_VERSION_HEX   ((TD_VERSION_MAJOR << 16) | (TD_VERSION_MINOR << 8) | TD_VERSION_PATCH)

/* The runtime version of the library, as "MAJOR.MINOR.PATCH" and as TD_VERSION_HEX. */
TD_EXTERN const char *td_version_string(void);
TD_EXTERN unsigned td_version(void);

/* ---------------------------------------------------------------------------------------------
 * Errors
 *
 * One table generates the codes, td_strerror() and td_err_name(). Codes are negative and stable.
 */
#define TD_ERRNO_MAP(XX)                                                                           \
    XX(EINVAL, -1, "invalid argument")                                                             \
    XX(ENOMEM, -2, "out of memory")                                                                \
    XX(EIO, -3, "input/output error")                                                              \
    XX(ENOENT, -4, "no such file or directory")                                                    \
    XX(EACCES, -5, "permission denied")                                                            \
    XX(ENOTSUP, -6, "operation or format not supported")                                           \
    XX(EFORMAT, -7, "malformed file")                                                              \
    XX(ETRUNC, -8, "file truncated")                                                               \
    XX(EDTYPE, -9, "data type not supported here")                                                 \
    XX(ERANGE, -10, "value out of range")                                                          \
    XX(ELIMIT, -11, "limit exceeded")                                                              \
    XX(EDUP, -12, "duplicate name")                                                                \
    XX(ENOTFOUND, -13, "no such entry")                                                            \
    XX(ECHECKSUM, -14, "checksum mismatch")                                                        \
    XX(EVERSION, -15, "unsupported version")                                                       \
    XX(EPROTO, -16, "protocol error")                                                              \
    XX(ECONNECT, -17, "daemon not reachable")                                                      \
    XX(ECLOSED, -18, "connection closed")                                                          \
    XX(EAGAIN, -19, "resource temporarily unavailable")                                            \
    XX(EEXIST, -20, "file exists")                                                                 \
    XX(ENOSPC, -21, "no space left on device")                                                     \
    XX(EBUSY, -22, "resource busy")                                                                \
    XX(ESYS, -23, "system call failed")                                                            \
    XX(ENOMETA, -24, "format has no metadata")

typedef enum td_errno {
#define TD__XX(name, value, text) TD_##name = value,
    TD_ERRNO_MAP(TD__XX)
#undef TD__XX
} td_errno;

/* Filled by failing calls. message is NUL-terminated and always holds one line. */
typedef struct td_error {
    int code;          /* 0 or a negative TD_E* code */
    char message[256]; /* "FILE: tensor 'NAME': FIELD: problem (value)" */
} td_error;

/* Static text for a code ("malformed file"), or "unknown error". Never NULL. */
TD_EXTERN const char *td_strerror(int code);
/* Static name for a code ("TD_EFORMAT"), or "TD_UNKNOWN". Never NULL. */
TD_EXTERN const char *td_err_name(int code);

/* ---------------------------------------------------------------------------------------------
 * Data types
 *
 * Plain element types, then GGML's block types. A block type stores `block_elems` elements in
 * `block_bytes` bytes; an array of a block type has its shape in elements, and its innermost
 * dimension must be a multiple of the block size. The enum values are stable.
 */
#define TD_DTYPE_MAP(XX)                                                                           \
    XX(BOOL, bool)                                                                                 \
    XX(UINT8, uint8)                                                                               \
    XX(UINT16, uint16)                                                                             \
    XX(UINT32, uint32)                                                                             \
    XX(UINT64, uint64)                                                                             \
    XX(INT8, int8)                                                                                 \
    XX(INT16, int16)                                                                               \
    XX(INT32, int32)                                                                               \
    XX(INT64, int64)                                                                               \
    XX(FLOAT16, float16)                                                                           \
    XX(BFLOAT16, bfloat16)                                                                         \
    XX(FLOAT32, float32)                                                                           \
    XX(FLOAT64, float64)                                                                           \
    XX(COMPLEX64, complex64)                                                                       \
    XX(COMPLEX128, complex128)                                                                     \
    XX(FLOAT8_E4M3, float8_e4m3)                                                                   \
    XX(FLOAT8_E5M2, float8_e5m2)                                                                   \
    XX(Q4_0, q4_0)                                                                                 \
    XX(Q4_1, q4_1)                                                                                 \
    XX(Q5_0, q5_0)                                                                                 \
    XX(Q5_1, q5_1)                                                                                 \
    XX(Q8_0, q8_0)                                                                                 \
    XX(Q8_1, q8_1)                                                                                 \
    XX(Q2_K, q2_k)                                                                                 \
    XX(Q3_K, q3_k)                                                                                 \
    XX(Q4_K, q4_k)                                                                                 \
    XX(Q5_K, q5_k)                                                                                 \
    XX(Q6_K, q6_k)                                                                                 \
    XX(Q8_K, q8_k)                                                                                 \
    XX(IQ2_XXS, iq2_xxs)                                                                           \
    XX(IQ2_XS, iq2_xs)                                                                             \
    XX(IQ3_XXS, iq3_xxs)                                                                           \
    XX(IQ1_S, iq1_s)                                                                               \
    XX(IQ4_NL, iq4_nl)                                                                             \
    XX(IQ3_S, iq3_s)                                                                               \
    XX(IQ2_S, iq2_s)                                                                               \
    XX(IQ4_XS, iq4_xs)                                                                             \
    XX(IQ1_M, iq1_m)                                                                               \
    XX(TQ1_0, tq1_0)                                                                               \
    XX(TQ2_0, tq2_0)                                                                               \
    XX(MXFP4, mxfp4)                                                                               \
    XX(NVFP4, nvfp4)                                                                               \
    XX(Q1_0, q1_0)                                                                                 \
    XX(Q2_0, q2_0)

typedef enum td_dtype {
#define TD__XX(upper, lower) TD_##upper,
    TD_DTYPE_MAP(TD__XX)
#undef TD__XX
        TD_DTYPE_COUNT
} td_dtype;

/* Canonical lower-case name ("float32", "q4_k"), or NULL for a value outside the enum. */
TD_EXTERN const char *td_dtype_name(td_dtype t);
/* Parses a canonical name. Returns 0 and sets *out, or TD_EDTYPE. */
TD_EXTERN int td_dtype_from_name(const char *name, td_dtype *out);
/* Bytes per element for plain types; 0 for block types and invalid values. */
TD_EXTERN size_t td_dtype_size(td_dtype t);
/* 1 for GGML block types, 0 otherwise. */
TD_EXTERN int td_dtype_is_block(td_dtype t);
/* Elements and bytes per block; (1, itemsize) for plain types; (0, 0) when unknown. */
TD_EXTERN int td_dtype_block(td_dtype t, size_t *block_elems, size_t *block_bytes);

/* ---------------------------------------------------------------------------------------------
 * Arrays
 *
 * A td_array is an immutable-shape, C-contiguous, native-endian n-d array. Arrays made by
 * td_array_new own writable memory; arrays from td_load are read-only views.
 */
#define TD_MAX_DIMS 32

typedef struct td_array td_array;

/* Allocates an array of `dtype` and `shape` (ndim entries, each >= 0; ndim may be 0 for a
 * scalar). When data is not NULL, nbytes of it are copied in; otherwise the memory is zeroed.
 * Block dtypes need the innermost dimension to be a multiple of the block size.
 * On success *out holds the only reference. */
TD_EXTERN int td_array_new(td_dtype dtype, int ndim, const int64_t *shape, const void *data,
                           td_array **out, td_error *err);

/* Wraps caller memory without copying. data must hold the array's nbytes and stay valid until
 * release(ctx, data) is called, which happens when the last reference goes (release may be NULL
 * when the caller manages the memory's lifetime itself). */
TD_EXTERN int td_array_wrap(td_dtype dtype, int ndim, const int64_t *shape, void *data,
                            void (*release)(void *ctx, void *data), void *ctx, td_array **out,
                            td_error *err);

/* Adds a reference and returns a. Thread-safe. */
TD_EXTERN td_array *td_array_retain(td_array *a);
/* Drops a reference; the last one frees the array and, with it, its share of the mapping.
 * Thread-safe. No operation when a is NULL. */
TD_EXTERN void td_array_release(td_array *a);

TD_EXTERN td_dtype td_array_dtype(const td_array *a);
TD_EXTERN int td_array_ndim(const td_array *a);
/* ndim sizes, C order (outermost first). Valid as long as a is. */
TD_EXTERN const int64_t *td_array_shape(const td_array *a);
/* Number of elements (product of the shape; 1 for a scalar). */
TD_EXTERN int64_t td_array_size(const td_array *a);
TD_EXTERN uint64_t td_array_nbytes(const td_array *a);
/* The bytes, C order, little-endian. Never NULL, even for an empty array. */
TD_EXTERN const void *td_array_data(const td_array *a);
/* The bytes for writing, or NULL when the array is a read-only view (td_load's arrays). */
TD_EXTERN void *td_array_data_mut(td_array *a);

/* Where an array's bytes live. */
typedef enum td_provenance {
    TD_PROVENANCE_OWNED = 0, /* memory of its own (td_array_new, decoded in embedded mode) */
    TD_PROVENANCE_CALLER,    /* caller memory (td_array_wrap) */
    TD_PROVENANCE_EMBEDDED,  /* a view of this process's own mapping of the file */
    TD_PROVENANCE_DAEMON     /* a view of a buffer tensord shares with every process */
} td_provenance;
TD_EXTERN td_provenance td_array_provenance(const td_array *a);

/* ---------------------------------------------------------------------------------------------
 * Dequantizing GGML block types: q4_0, q4_1, q5_0, q5_1, q8_0, q2_k, q3_k, q4_k, q5_k, q6_k,
 * q8_k, iq1_s, iq1_m, iq2_xxs, iq2_xs, iq2_s, iq3_xxs, iq3_s, iq4_nl, iq4_xs, tq1_0, tq2_0, mxfp4
 * (bit-identical to llama.cpp's to_float; float16 and bfloat16 round the float32 result to
 * nearest even), and q8_1, which ggml has no to_float for: x = d * q, as q8_0's to_float gives
 * for the same d and q. Not nvfp4, q1_0, q2_0. MLX's packed form (uint32 weights, float16
 * scales and biases, groups of 32, w * scale + bias) exists for q4_0, q4_1 and q8_0.
 */
/* Dequantizes an array of a GGML block type into a new array of the same shape and dtype out
 * (TD_FLOAT32, TD_FLOAT16 or TD_BFLOAT16). a is borrowed; on success *result holds the only
 * reference to a new, writable array. Large arrays are decoded on several threads.
 * Fails with TD_EDTYPE when a's dtype is not a supported block type or out is not a float
 * type, naming both; nothing is returned then. */
TD_EXTERN int td_array_dequantize(const td_array *a, td_dtype out, td_array **result,
                                  td_error *err);

/* MLX's packed form of an array of type q4_0, q4_1 or q8_0 (see above): three new arrays,
 * weights (uint32), scales and biases (float16), each holding one reference for the caller.
 * On failure none is returned. */
TD_EXTERN int td_array_to_mlx(const td_array *a, td_array **weights, td_array **scales,
                              td_array **biases, td_error *err);

/* ---------------------------------------------------------------------------------------------
 * Dicts: ordered name -> array. File order on load, insertion order on save.
 */
typedef struct td_dict td_dict;

TD_EXTERN td_dict *td_dict_new(void);
/* Releases every array the dict holds, then the dict. No operation when d is NULL. */
TD_EXTERN void td_dict_free(td_dict *d);
/* Adds name -> a. The name is copied and the dict takes a new reference to a (the caller keeps
 * its own). An existing name is TD_EDUP; names are non-empty UTF-8 without NUL. */
TD_EXTERN int td_dict_set(td_dict *d, const char *name, td_array *a, td_error *err);
/* Adds an unnamed entry, like MLX's positional savez arguments. td_savez names the k-th unnamed
 * entry "arr_k"; the other savers refuse unnamed entries. */
TD_EXTERN int td_dict_push(td_dict *d, td_array *a, td_error *err);
TD_EXTERN size_t td_dict_size(const td_dict *d);
/* The array stored under name (borrowed: valid while the dict holds it), or NULL. */
TD_EXTERN td_array *td_dict_get(const td_dict *d, const char *name);
/* Entry i in order; *name is NULL for an unnamed entry. Borrowed. NULL when i is out of range. */
TD_EXTERN td_array *td_dict_at(const td_dict *d, size_t i, const char **name);

/* ---------------------------------------------------------------------------------------------
 * Metadata: ordered key -> typed value, with GGUF's value types (safetensors uses strings only).
 * The type numbers are GGUF's.
 */
typedef enum td_type {
    TD_TYPE_UINT8 = 0,
    TD_TYPE_INT8 = 1,
    TD_TYPE_UINT16 = 2,
    TD_TYPE_INT16 = 3,
    TD_TYPE_UINT32 = 4,
    TD_TYPE_INT32 = 5,
    TD_TYPE_FLOAT32 = 6,
    TD_TYPE_BOOL = 7,
    TD_TYPE_STRING = 8,
    TD_TYPE_ARRAY = 9,
    TD_TYPE_UINT64 = 10,
    TD_TYPE_INT64 = 11,
    TD_TYPE_FLOAT64 = 12,
    TD_TYPE_COUNT
} td_type;

/* Arrays may nest (arrays of arrays) up to this depth; deeper ones are refused. */
#define TD_META_MAX_DEPTH 8

typedef struct td_meta td_meta;
typedef struct td_value td_value;

/* "uint8", ..., "array". NULL for a value outside the enum. */
TD_EXTERN const char *td_type_name(td_type t);

TD_EXTERN td_meta *td_meta_new(void);
TD_EXTERN void td_meta_free(td_meta *m);
TD_EXTERN size_t td_meta_size(const td_meta *m);
/* Entry i in order: its key through *key and its value. Borrowed; NULL when out of range. */
TD_EXTERN const td_value *td_meta_at(const td_meta *m, size_t i, const char **key);
/* The value under key (borrowed), or NULL. */
TD_EXTERN const td_value *td_meta_get(const td_meta *m, const char *key);

/* Setters copy key and value. An existing key is replaced in place (its position is kept). */
TD_EXTERN int td_meta_set_string(td_meta *m, const char *key, const char *s, size_t len,
                                 td_error *err);
/* For TD_TYPE_UINT8 .. TD_TYPE_FLOAT64 and TD_TYPE_BOOL: *value is read as that C type
 * (uint8_t, int8_t, ..., float, bool as uint8_t 0/1, double). */
TD_EXTERN int td_meta_set_scalar(td_meta *m, const char *key, td_type type, const void *value,
                                 td_error *err);
/* An array of n scalars of elem_type, packed as the C type above. */
TD_EXTERN int td_meta_set_array(td_meta *m, const char *key, td_type elem_type, const void *items,
                                size_t n, td_error *err);
/* An array of n strings; lens may be NULL for NUL-terminated strings. */
TD_EXTERN int td_meta_set_strings(td_meta *m, const char *key, const char *const *items,
                                  const size_t *lens, size_t n, td_error *err);
/* Stores v (any type, nested arrays too) under key; the meta takes ownership of v, also on
 * failure. */
TD_EXTERN int td_meta_set_value(td_meta *m, const char *key, td_value *v, td_error *err);
/* A deep copy, or NULL when out of memory. */
TD_EXTERN td_meta *td_meta_copy(const td_meta *m);

/* Values. Builders return NULL only when out of memory. A value stored in a meta is owned by it. */
TD_EXTERN td_value *td_value_new_scalar(td_type type, const void *value);
TD_EXTERN td_value *td_value_new_string(const char *s, size_t len);
/* An empty array of elem_type (any type, TD_TYPE_ARRAY for nesting). */
TD_EXTERN td_value *td_value_new_array(td_type elem_type);
/* Appends a copy of a scalar or string, or takes ownership of an array value (also on failure).
 * The item must match the array's element type. */
TD_EXTERN int td_value_array_push(td_value *arr, td_value *item, td_error *err);
TD_EXTERN void td_value_free(td_value *v);

TD_EXTERN td_type td_value_type(const td_value *v);
/* Scalar access: converts any integer or bool type to the asked form, failing with TD_ERANGE
 * when the value does not fit and TD_EINVAL when the value is not a number. */
TD_EXTERN int td_value_get_int(const td_value *v, int64_t *out);
TD_EXTERN int td_value_get_uint(const td_value *v, uint64_t *out);
/* Any numeric or bool type, as double. */
TD_EXTERN int td_value_get_float(const td_value *v, double *out);
/* Strings: borrowed bytes (NUL-terminated for convenience) and length; NULL for other types. */
TD_EXTERN const char *td_value_string(const td_value *v, size_t *len);
/* Arrays: element type, count, packed scalar items (NULL for string and array elements), and
 * item i as a value of its own (for every element type). */
TD_EXTERN td_type td_value_array_type(const td_value *v);
TD_EXTERN size_t td_value_array_len(const td_value *v);
TD_EXTERN const void *td_value_array_data(const td_value *v);
TD_EXTERN const td_value *td_value_array_at(const td_value *v, size_t i);

/* MLX-style conveniences on a key: a string, a list of strings, one number. They fail with
 * TD_ENOTFOUND for a missing key and TD_EDTYPE for a value of another type. */
TD_EXTERN int td_meta_get_string(const td_meta *m, const char *key, const char **s, size_t *len);
TD_EXTERN int td_meta_get_int(const td_meta *m, const char *key, int64_t *out);
TD_EXTERN int td_meta_get_float(const td_meta *m, const char *key, double *out);
/* A one-dimensional array: its element type, length, and packed items (NULL for an array of
 * strings). TD_EDTYPE for scalars, strings and arrays of arrays. */
TD_EXTERN int td_meta_get_array(const td_meta *m, const char *key, td_type *elem_type, size_t *n,
                                const void **items);
/* Item i of a list of strings (a tokenizer vocabulary, say): borrowed bytes and length.
 * TD_EDTYPE when the value is not an array of strings, TD_ERANGE when i is past its end. */
TD_EXTERN int td_meta_get_string_at(const td_meta *m, const char *key, size_t i, const char **s,
                                    size_t *len);

/* ---------------------------------------------------------------------------------------------
 * Save and load
 */
typedef enum td_format {
    TD_FORMAT_AUTO = 0, /* from the file name's extension */
    TD_FORMAT_NPY,
    TD_FORMAT_NPZ,
    TD_FORMAT_SAFETENSORS,
    TD_FORMAT_GGUF
} td_format;

/* "npy", "npz", "safetensors", "gguf"; NULL for AUTO or an invalid value. */
TD_EXTERN const char *td_format_name(td_format f);
/* The format a path's extension names, or TD_FORMAT_AUTO when it names none. */
TD_EXTERN td_format td_format_from_path(const char *path);

typedef enum td_load_mode {
    TD_MODE_AUTO = 0, /* the daemon when reachable, else embedded */
    TD_MODE_EMBEDDED, /* map the file in this process */
    TD_MODE_DAEMON    /* the daemon only; TD_ECONNECT when it is not there */
} td_load_mode;

typedef struct td_load_options {
    td_format format;        /* TD_FORMAT_AUTO: from the extension */
    td_load_mode mode;       /* TD_MODE_AUTO */
    const char *socket_path; /* NULL: $TENSORD_SOCKET, then /run/tensord/tensord.sock */
    uint64_t max_inflated;   /* npz: bound on all inflated bytes; 0 = 16 GiB */
    int dequantize;          /* 0: GGML blocks as stored; TD_FLOAT32, TD_FLOAT16, TD_BFLOAT16:
                                every block tensor dequantized; TD_DEQUANT_MLX: MLX's form */
    unsigned flags;          /* reserved, 0 */
} td_load_options;

/* td_load_options.dequantize: MLX's packed form, as mx.load gives GGUF files. q4_0, q4_1 and
 * q8_0 tensors NAME become NAME (uint32 weights), PREFIX.scales and PREFIX.biases (float16,
 * one per group of 32; w * scale + bias), PREFIX being NAME without ".weight"; other block
 * types become float16. */
#define TD_DEQUANT_MLX 0x4d4c58

/* The defaults: every field zero. */
#define TD_LOAD_OPTIONS_INIT                                                                       \
    {                                                                                              \
        TD_FORMAT_AUTO, TD_MODE_AUTO, NULL, 0, 0, 0                                                \
    }

/* Saves one array as .npy; ".npy" is appended to path when missing. Atomic: the file appears
 * whole under its name or not at all. */
TD_EXTERN int td_save(const char *path, const td_array *a, td_error *err);
/* Saves every entry as a stored .npz member ("NAME.npy"; unnamed entries are arr_0, arr_1, ...;
 * a named entry that clashes with one of those is TD_EDUP). ".npz" appended when missing. */
TD_EXTERN int td_savez(const char *path, const td_dict *arrays, td_error *err);
/* As td_savez, with deflated members. */
TD_EXTERN int td_savez_compressed(const char *path, const td_dict *arrays, td_error *err);
/* meta may be NULL; safetensors metadata holds strings only (others are TD_EDTYPE). */
TD_EXTERN int td_save_safetensors(const char *path, const td_dict *arrays, const td_meta *meta,
                                  td_error *err);
TD_EXTERN int td_save_gguf(const char *path, const td_dict *arrays, const td_meta *meta,
                           td_error *err);

/* Loads path. opt may be NULL for the defaults. On success *arrays is a new dict the caller
 * frees; when meta is not NULL, *meta receives the file's metadata (an empty td_meta when a
 * safetensors or gguf file has none), and asking for it from npy or npz is TD_ENOMETA.
 * On failure nothing is returned and nothing leaks. */
TD_EXTERN int td_load(const char *path, const td_load_options *opt, td_dict **arrays,
                      td_meta **meta, td_error *err);
/* Loads a single .npy and returns its array (one reference, the caller's). */
TD_EXTERN int td_load_array(const char *path, const td_load_options *opt, td_array **out,
                            td_error *err);

/* ---------------------------------------------------------------------------------------------
 * The daemon
 *
 * td_load talks to tensord by itself (td_load_options.mode), one connection per load. A td_client
 * is an explicit connection, kept open for every request made through it: loads (the fastest
 * way to load through the daemon: no connection set-up or handshake per load), status,
 * eviction, liveness. It is thread-safe, and reconnects by itself when the daemon restarts.
 */
typedef struct td_client td_client;

typedef struct td_status_file {
    const char *name; /* the file's path as the daemon saw it */
    td_format format;
    const char *mode;                   /* "map", "snapshot" or "pin" */
    uint64_t bytes;                     /* snapshot and derived bytes held for it */
    uint64_t leases;                    /* loads currently held by clients */
    uint64_t hits;                      /* loads served from the cache */
    uint64_t tensors;                   /* tensors in its table */
    uint64_t file_bytes, derived_bytes; /* the file's size; decoded bytes in memfds */
    uint64_t loads;                     /* loads served, the first included */
    uint64_t idle_ms;                   /* since the last load or release */
} td_status_file;

typedef struct td_status {
    uint64_t entries, bytes, derived_bytes, budget;
    uint64_t hits, misses, evictions, clients, leases, decodes;
    uint64_t decode_ns_total, decode_ns_max, errors, uptime_ms;
    size_t nfiles;
    td_status_file *files; /* most recently used first */
    char *names_;          /* internal */
} td_status;

/* Connects to socket_path (NULL: $TENSORD_SOCKET, then /run/tensord/tensord.sock).
 * TD_ECONNECT when no daemon answers. */
TD_EXTERN int td_client_connect(const char *socket_path, td_client **out, td_error *err);
TD_EXTERN void td_client_close(td_client *c);
/* td_load through this client's connection (opt->mode is ignored: always the daemon). The lease
 * is given back (RELEASE) when the last array of the load goes. Arrays stay valid after
 * td_client_close, which ends the leases still held. */
TD_EXTERN int td_client_load(td_client *c, const char *path, const td_load_options *opt,
                             td_dict **arrays, td_meta **meta, td_error *err);
TD_EXTERN int td_client_ping(td_client *c, td_error *err);
/* The daemon's figures; free with td_status_free. */
TD_EXTERN int td_client_status(td_client *c, td_status **out, td_error *err);
TD_EXTERN void td_status_free(td_status *s);
/* Drops cached entries nobody holds: of one file (path) or all (path NULL). Mappings clients
 * already have stay valid. */
TD_EXTERN int td_client_evict(td_client *c, const char *path, uint64_t *entries, uint64_t *bytes,
                              td_error *err);

#ifdef __cplusplus
}
#endif
#endif /* TENSORD_H */

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
 *   not NULL. The message names the file, the tensor, the field and the offending value. Two
 *   kinds of function are exempt, because a message would tell the caller nothing new:
 *   - the allocation-only constructors (td_dict_new, td_meta_new, td_meta_copy and the
 *     td_value_new_* builders) take no td_error and return NULL only when out of memory (the
 *     builders also for an argument outside their contract: a type that is not a scalar
 *     type, NULL data; the caller can check those beforehand);
 *   - the lookups on values the caller holds (td_value_get_*, td_meta_get_*,
 *     td_dtype_from_name) return a code (TD_ENOTFOUND, TD_EDTYPE, TD_ERANGE, TD_EINVAL) without
 *     a message: the caller has every input at hand.
 *   Functions returning a pointer or a count (td_dict_get, td_meta_at, td_status_get, ...)
 *   return NULL or 0 for what is not there.
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
#define TD_VERSION_MINOR 2
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
    XX(ENOMETA, -24, "format has no metadata")                                                     \
    XX(EBUDGET, -25, "daemon memory budget full")

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

/* Adds a reference and returns a. Thread-safe. It takes a const array (the borrowed arrays of
 * td_dict_get and td_dict_at are const) because the reference count is not part of the array's
 * value: the reference returned is the caller's own, to release. */
TD_EXTERN td_array *td_array_retain(const td_array *a);
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
 * reference to a new, writable array. Large arrays are decoded on up to `threads` threads, the
 * caller's included (0: automatic, the online CPUs up to 16; 1: the caller's thread only).
 * Fails with TD_EDTYPE when a's dtype is not a supported block type or out is not a float
 * type, naming both; nothing is returned then. */
TD_EXTERN int td_array_dequantize(const td_array *a, td_dtype out, unsigned threads,
                                  td_array **result, td_error *err);

/* 1 for the GGML block types td_array_dequantize decodes (listed above), 0 otherwise. */
TD_EXTERN int td_dtype_dequantizable(td_dtype t);

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
TD_EXTERN int td_dict_set(td_dict *d, const char *name, const td_array *a, td_error *err);
/* Adds an unnamed entry, like MLX's positional savez arguments. td_savez names the k-th unnamed
 * entry "arr_k"; the other savers refuse unnamed entries. */
TD_EXTERN int td_dict_push(td_dict *d, const td_array *a, td_error *err);
TD_EXTERN size_t td_dict_size(const td_dict *d);
/* The array stored under name (borrowed: valid while the dict holds it), or NULL. To keep it
 * longer, take a reference of your own with td_array_retain. */
TD_EXTERN const td_array *td_dict_get(const td_dict *d, const char *name);
/* Entry i in order; *name is NULL for an unnamed entry. Borrowed, as above. NULL when i is out
 * of range. */
TD_EXTERN const td_array *td_dict_at(const td_dict *d, size_t i, const char **name);

/* ---------------------------------------------------------------------------------------------
 * Metadata: ordered key -> typed value, with GGUF's value types (safetensors uses strings only).
 * The type numbers are GGUF's.
 */
typedef enum td_meta_type {
    TD_META_UINT8 = 0,
    TD_META_INT8 = 1,
    TD_META_UINT16 = 2,
    TD_META_INT16 = 3,
    TD_META_UINT32 = 4,
    TD_META_INT32 = 5,
    TD_META_FLOAT32 = 6,
    TD_META_BOOL = 7,
    TD_META_STRING = 8,
    TD_META_ARRAY = 9,
    TD_META_UINT64 = 10,
    TD_META_INT64 = 11,
    TD_META_FLOAT64 = 12,
    TD_META_COUNT
} td_meta_type;

/* Arrays may nest (arrays of arrays) up to this depth; deeper ones are refused. */
#define TD_META_MAX_DEPTH 8

typedef struct td_meta td_meta;
typedef struct td_value td_value;

/* "uint8", ..., "array". NULL for a value outside the enum. */
TD_EXTERN const char *td_meta_type_name(td_meta_type t);

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
/* For TD_META_UINT8 .. TD_META_FLOAT64 and TD_META_BOOL: *value is read as that C type
 * (uint8_t, int8_t, ..., float, bool as uint8_t 0/1, double). */
TD_EXTERN int td_meta_set_scalar(td_meta *m, const char *key, td_meta_type type, const void *value,
                                 td_error *err);
/* An array of n scalars of elem_type, packed as the C type above. */
TD_EXTERN int td_meta_set_array(td_meta *m, const char *key, td_meta_type elem_type,
                                const void *items, size_t n, td_error *err);
/* An array of n strings; lens may be NULL for NUL-terminated strings. */
TD_EXTERN int td_meta_set_strings(td_meta *m, const char *key, const char *const *items,
                                  const size_t *lens, size_t n, td_error *err);
/* Stores v (any type, nested arrays too) under key; the meta takes ownership of v, also on
 * failure. */
TD_EXTERN int td_meta_set_value(td_meta *m, const char *key, td_value *v, td_error *err);
/* A deep copy, or NULL when out of memory. */
TD_EXTERN td_meta *td_meta_copy(const td_meta *m);

/* Values. Builders return NULL only when out of memory, or for a type or NULL data outside their
 * contract (see Conventions). A value stored in a meta is owned by it. */
TD_EXTERN td_value *td_value_new_scalar(td_meta_type type, const void *value);
TD_EXTERN td_value *td_value_new_string(const char *s, size_t len);
/* An empty array of elem_type (any type, TD_META_ARRAY for nesting). */
TD_EXTERN td_value *td_value_new_array(td_meta_type elem_type);
/* Appends a copy of a scalar or string, or takes ownership of an array value (also on failure).
 * The item must match the array's element type. */
TD_EXTERN int td_value_array_push(td_value *arr, td_value *item, td_error *err);
TD_EXTERN void td_value_free(td_value *v);

TD_EXTERN td_meta_type td_value_type(const td_value *v);
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
TD_EXTERN td_meta_type td_value_array_type(const td_value *v);
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
TD_EXTERN int td_meta_get_array(const td_meta *m, const char *key, td_meta_type *elem_type,
                                size_t *n, const void **items);
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

/* td_load_options.dequantize: what GGML block tensors become on load. */
typedef enum td_dequant {
    TD_DEQUANT_NONE = 0, /* loaded as stored (zero-copy blocks) */
    TD_DEQUANT_F32,      /* every block tensor dequantized to float32 */
    TD_DEQUANT_F16,      /* ... to float16 (the float32 result rounded to nearest even) */
    TD_DEQUANT_BF16,     /* ... to bfloat16 (likewise) */
    /* MLX's packed form, as mx.load gives GGUF files: q4_0, q4_1 and q8_0 tensors NAME become
     * NAME (uint32 weights), PREFIX.scales and PREFIX.biases (float16, one per group of 32;
     * w * scale + bias), PREFIX being NAME without ".weight"; other block types become
     * float16. */
    TD_DEQUANT_MLX
} td_dequant;

/* Options of td_load, td_load_array, td_client_load, td_inspect and td_verify.
 *
 * Why a size field: the caller allocates the options (on the stack, nothing to free, no handle),
 * and the struct can still grow. `size` is sizeof(td_load_options) as the caller was compiled;
 * the library copies that many bytes into a struct of its own version and zeroes the rest, so a
 * program built against this header keeps working with a later library that appended fields,
 * whose zero values are always the defaults. Always initialise with TD_LOAD_OPTIONS_INIT (or
 * td_load_options_init), then set fields by name:
 *
 *     td_load_options o = TD_LOAD_OPTIONS_INIT;
 *     o.mode = TD_MODE_EMBEDDED;
 *
 * Rules the library keeps: fields are only appended, after the end (sizeof) of the previous
 * version's struct, never in its padding; an options struct whose size is 0 or smaller than
 * this first version's is TD_EINVAL. A caller built against a later header may pass a larger
 * struct: the fields this library does not know are ignored (td_version() tells which library
 * runs), except `flags`, whose unknown bits are refused with TD_EINVAL, so that a later option
 * that must not be ignored silently is a flag. */
typedef struct td_load_options {
    size_t size;             /* sizeof(td_load_options) as the caller compiled it */
    td_format format;        /* TD_FORMAT_AUTO: from the extension */
    td_load_mode mode;       /* TD_MODE_AUTO */
    const char *socket_path; /* NULL: $TENSORD_SOCKET, then TD_DEFAULT_SOCKET */
    uint64_t max_inflated;   /* npz: bound on all inflated bytes; 0 = 16 GiB */
    td_dequant dequantize;   /* TD_DEQUANT_NONE: GGML blocks as stored */
    unsigned threads;        /* embedded mode: most threads decoding at once, the caller's
                                included; 0 = automatic (online CPUs, at most 16), 1 = the
                                caller's thread only. The daemon decodes on its own. */
    unsigned flags;          /* none defined yet: 0 */
} td_load_options;

/* The defaults: size set, every other field zero. Compiled into the caller, so its size is
 * always the caller's own. */
#define TD_LOAD_OPTIONS_INIT                                                                       \
    {                                                                                              \
        .size = sizeof(td_load_options)                                                            \
    }

/* TD_LOAD_OPTIONS_INIT as a function, for callers that cannot use the macro. It zeroes *o as
 * this library knows the struct (sizeof(td_load_options) of the header it was built with) and
 * sets o->size to that, so *o must be at least that large: call it with the header of the
 * library that runs. A binding that declares the struct itself should rather do what the macro
 * does: zero its own struct and set size to its own sizeof. */
TD_EXTERN void td_load_options_init(td_load_options *o);

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

/* Saving a model in shards. max_shard_bytes bounds the tensor bytes of one shard (0: no
 * bound, one file); a tensor larger than the bound gets a shard of its own, and no tensor is
 * ever cut. The struct starts with its size, so that fields can be added without breaking
 * programs built against an older header: initialise it with TD_SAVE_OPTIONS_INIT or
 * td_save_options_init(). */
typedef struct td_save_options {
    size_t size;              /* sizeof(td_save_options) as the caller was compiled */
    uint64_t max_shard_bytes; /* 0: one file */
    unsigned flags;           /* reserved, 0 */
} td_save_options;
#define TD_SAVE_OPTIONS_INIT                                                                       \
    {                                                                                              \
        .size = sizeof(td_save_options)                                                            \
    }
TD_EXTERN void td_save_options_init(td_save_options *o);

/* Saves arrays and meta (may be NULL) as a .safetensors or .gguf model (the extension of path,
 * which is required). When everything fits in one shard, that is the plain file path. Else:
 *   NAME.safetensors gives NAME-00001-of-0000N.safetensors ... and NAME.safetensors.index.json,
 *     Hugging Face's layout (weight_map, metadata.total_size), meta in every shard;
 *   NAME.gguf gives NAME-00001-of-0000N.gguf ..., llama.cpp's gguf-split layout (split.no,
 *     split.count, split.tensors.count in each; meta in the first only).
 * Tensors go to shards greedily in dict order. Each file is written atomically, and the index
 * (or the first split) last: a reader never finds it naming a shard that is not there yet.
 * opt may be NULL (one file). */
TD_EXTERN int td_save_model(const char *path, const td_dict *arrays, const td_meta *meta,
                            const td_save_options *opt, td_error *err);

/* Loads path. opt may be NULL for the defaults. On success *arrays is a new dict the caller
 * frees; when meta is not NULL, *meta receives the file's metadata (an empty td_meta when a
 * safetensors or gguf file has none), and asking for it from npy or npz is TD_ENOMETA.
 * On failure nothing is returned and nothing leaks.
 * Every array's data is aligned to at least its item size (complex128: 16; GGML block types:
 * their block struct's alignment, 4 for q8_k, 2 or 1 for the others), in every mode: a tensor
 * the file stores at an offset that does not allow it (numpy's npz members, a float32 after an
 * odd number of float16 in a safetensors file) is copied once into aligned memory, its own in
 * embedded mode, a sealed memfd shared by every client through the daemon. */
TD_EXTERN int td_load(const char *path, const td_load_options *opt, td_dict **arrays,
                      td_meta **meta, td_error *err);
/* Loads a single .npy and returns its array (one reference, the caller's). */
TD_EXTERN int td_load_array(const char *path, const td_load_options *opt, td_array **out,
                            td_error *err);

/* ---------------------------------------------------------------------------------------------
 * Inspecting and verifying a file
 *
 * td_inspect gives a file's table (what td_load would return, without the data) and metadata,
 * reading only the bytes it parses (headers, directories, metadata) with pread: tensor data is
 * neither mapped nor read, so inspecting a 100 GB file reads kilobytes to megabytes. td_verify
 * reads everything. Both run in this process, whatever opt->mode says; of the options they use
 * format, max_inflated, dequantize and (td_verify) threads.
 */

/* What stands between a tensor's stored bytes and the array a load gives: a set of these bits.
 * Values are stable; new bits may be added. */
typedef enum td_layout {
    TD_LAYOUT_VIEW = 0,             /* none: viewed as stored (C order, little-endian) */
    TD_LAYOUT_BYTESWAP = 1u << 0,   /* big-endian elements, swapped on load */
    TD_LAYOUT_FORTRAN = 1u << 1,    /* column-major order, reordered on load */
    TD_LAYOUT_DEFLATE = 1u << 2,    /* a deflated npz member, inflated on load */
    TD_LAYOUT_DEQUANTIZE = 1u << 3, /* GGML blocks dequantized on load (opt->dequantize) */
    TD_LAYOUT_MLX = 1u << 4,        /* GGML blocks repacked into MLX's form on load */
    TD_LAYOUT_ALIGN = 1u << 5       /* stored off the dtype's alignment, copied on load */
} td_layout;

typedef struct td_inspect_result td_inspect_result;

/* Indexes and validates path as td_load does (every header, count, offset and size), reading
 * headers through the descriptor, never the tensor data. On success *out is a new result the
 * caller frees with td_inspect_free. With opt->dequantize, the table is the one a load with
 * that option gives (dequantized entries: TD_LAYOUT_DEQUANTIZE or TD_LAYOUT_MLX). */
TD_EXTERN int td_inspect(const char *path, const td_load_options *opt, td_inspect_result **out,
                         td_error *err);
/* No operation when r is NULL. */
TD_EXTERN void td_inspect_free(td_inspect_result *r);
/* The file's format, its size in bytes, and its metadata: borrowed (valid until
 * td_inspect_free), NULL for npy and npz, which have none. */
TD_EXTERN td_format td_inspect_format(const td_inspect_result *r);
TD_EXTERN uint64_t td_inspect_file_size(const td_inspect_result *r);
TD_EXTERN const td_meta *td_inspect_meta(const td_inspect_result *r);
/* The tensors, in file order, and tensor i's fields. Out of range: NULL, 0 or TD_DTYPE_COUNT. */
TD_EXTERN size_t td_inspect_ntensors(const td_inspect_result *r);
/* Its name (borrowed), or NULL for the entry of a bare .npy. */
TD_EXTERN const char *td_inspect_tensor_name(const td_inspect_result *r, size_t i);
/* The dtype, dimensions and shape (in elements) of the array a load gives. */
TD_EXTERN td_dtype td_inspect_tensor_dtype(const td_inspect_result *r, size_t i);
TD_EXTERN int td_inspect_tensor_ndim(const td_inspect_result *r, size_t i);
TD_EXTERN const int64_t *td_inspect_tensor_shape(const td_inspect_result *r, size_t i);
/* Bytes of the array a load gives. */
TD_EXTERN uint64_t td_inspect_tensor_nbytes(const td_inspect_result *r, size_t i);
/* Where the stored bytes start in the file and how many there are (they differ from nbytes
 * for deflated members and dequantized tensors). */
TD_EXTERN uint64_t td_inspect_tensor_offset(const td_inspect_result *r, size_t i);
TD_EXTERN uint64_t td_inspect_tensor_stored_nbytes(const td_inspect_result *r, size_t i);
/* The dtype as stored: the GGML block type of a dequantized tensor, else the dtype. */
TD_EXTERN td_dtype td_inspect_tensor_stored_dtype(const td_inspect_result *r, size_t i);
/* A model of several files (a Hugging Face index, a gguf-split set) has nfiles > 1; every other
 * file is 1. The file names are plain names in the directory of the index or first split
 * (NULL for a single file that is not a model's), and tensor i's bytes are in file
 * td_inspect_tensor_file(r, i). td_inspect_file_size is then the size of all files. */
TD_EXTERN size_t td_inspect_nfiles(const td_inspect_result *r);
TD_EXTERN const char *td_inspect_file_name(const td_inspect_result *r, size_t k);
TD_EXTERN size_t td_inspect_tensor_file(const td_inspect_result *r, size_t i);
/* td_layout bits: what a load does to the stored bytes. */
TD_EXTERN unsigned td_inspect_tensor_layout(const td_inspect_result *r, size_t i);

/* Validates path completely: everything td_inspect checks, then decodes every tensor that
 * needs decoding (inflating, byte-swapping, reordering, dequantizing with opt->dequantize) and
 * checks the CRC-32 and size of every npz member, stored members too (td_load does not read
 * those). 0 when all is well; otherwise the first problem, naming the file, member or tensor.
 * The file is mapped read-only while it is read, as in embedded td_load. */
TD_EXTERN int td_verify(const char *path, const td_load_options *opt, td_error *err);

/* ---------------------------------------------------------------------------------------------
 * The daemon
 *
 * td_load talks to tensord by itself (td_load_options.mode), one connection per load. A td_client
 * is an explicit connection, kept open for every request made through it: loads (the fastest
 * way to load through the daemon: no connection set-up or handshake per load), status,
 * eviction, liveness. It is thread-safe, and reconnects by itself when the daemon restarts.
 * It keeps, per cached file, the tensor table the daemon shares (checked once, at most 1,024
 * tables or 64 MiB, least recently used first), so that loading a file again costs a round trip
 * and no parsing; the file's own mapping lasts as long as some load of it holds it. Per model
 * of several files (at most 64 or about 64 MiB, least recently used first), it keeps what
 * indexing the model found and the identity of each of its files (device, inode, size,
 * modification and status change times): a later load opens every shard again and parses
 * nothing when all are unchanged, and indexes the model again, with every check, when one is
 * not.
 */
typedef struct td_client td_client;

/* The daemon's socket when neither the options (or the socket_path argument) nor the
 * environment variable TENSORD_SOCKET name one: where tensord.socket listens. TENSORD_SOCKET
 * is read with secure_getenv, so a set-user-ID or set-group-ID program ignores it. */
#define TD_DEFAULT_SOCKET "/run/tensord/tensord.sock"

/* The daemon's figures (td_client_status), opaque: read through the accessors below, keyed by
 * enums, so that a later daemon and library can add figures without changing the ABI. Key
 * values are stable and only appended; a key this library does not know gives 0. */
typedef struct td_status td_status;

typedef enum td_status_key {
    TD_STATUS_ENTRIES = 0,     /* cached files */
    TD_STATUS_BYTES,           /* bytes held (mapped files and derived buffers) */
    TD_STATUS_DERIVED_BYTES,   /* bytes of derived buffers (decoded, dequantized, snapshots) */
    TD_STATUS_BUDGET,          /* the memory budget in bytes (0: none) */
    TD_STATUS_HITS,            /* loads served from the cache */
    TD_STATUS_MISSES,          /* loads that parsed a file */
    TD_STATUS_EVICTIONS,       /* entries evicted */
    TD_STATUS_CLIENTS,         /* connected clients */
    TD_STATUS_LEASES,          /* leases held by clients */
    TD_STATUS_DECODES,         /* derived buffers made */
    TD_STATUS_DECODE_NS_TOTAL, /* nanoseconds spent decoding */
    TD_STATUS_DECODE_NS_MAX,   /* the longest decode, in nanoseconds */
    TD_STATUS_ERRORS,          /* requests answered with an error */
    TD_STATUS_UPTIME_MS,       /* milliseconds since the daemon started */
    TD_STATUS_QUOTA,           /* what the entries one uid loaded first may hold (0: no quota) */
    TD_STATUS_REFUSED,         /* loads refused: the budget or a quota full of held entries */
    TD_STATUS_PRESSURE         /* memory pressure events the daemon dropped entries for */
} td_status_key;

/* One figure of a cached file. */
typedef enum td_status_file_key {
    TD_STATUS_FILE_BYTES = 0,     /* snapshot and derived bytes held for it */
    TD_STATUS_FILE_LEASES,        /* loads of it currently held by clients */
    TD_STATUS_FILE_HITS,          /* loads served from the cache */
    TD_STATUS_FILE_TENSORS,       /* tensors in its table */
    TD_STATUS_FILE_FILE_BYTES,    /* the file's size */
    TD_STATUS_FILE_DERIVED_BYTES, /* decoded bytes in memfds */
    TD_STATUS_FILE_LOADS,         /* loads served, the first included */
    TD_STATUS_FILE_IDLE_MS,       /* milliseconds since its last load or release */
    TD_STATUS_FILE_PRELOADED      /* 1 when a preload line of the daemon's configuration keeps it
                                     warm (see tensord(8)), else 0 */
} td_status_file_key;

/* One figure of a user of the daemon (its budget of memory). */
typedef enum td_status_user_key {
    TD_STATUS_USER_UID = 0, /* the user's uid */
    TD_STATUS_USER_ENTRIES, /* cached files charged to the user */
    TD_STATUS_USER_BYTES,   /* bytes charged to the user */
    TD_STATUS_USER_QUOTA    /* the user's quota in bytes (0: none) */
} td_status_user_key;

/* A daemon-wide figure, or 0 for a key this library does not know. s must not be NULL. */
TD_EXTERN uint64_t td_status_get(const td_status *s, td_status_key k);
/* The cached files, most recently used first. */
TD_EXTERN size_t td_status_nfiles(const td_status *s);
/* File i's path as the daemon saw it (borrowed, valid until td_status_free; "" when the daemon
 * sent none), or NULL when i is out of range. */
TD_EXTERN const char *td_status_file_name(const td_status *s, size_t i);
/* File i's format, or TD_FORMAT_AUTO when i is out of range. */
TD_EXTERN td_format td_status_file_format(const td_status *s, size_t i);
/* File i's mode: "map", "snapshot" or "pin" (static), or NULL when i is out of range. */
TD_EXTERN const char *td_status_file_mode(const td_status *s, size_t i);
/* A figure of file i, or 0 when i is out of range or the key unknown. */
TD_EXTERN uint64_t td_status_file_get(const td_status *s, size_t i, td_status_file_key k);
/* The users the daemon accounts memory to, and a figure of user i (0 when i is out of range or
 * the key unknown). This version of the protocol carries no users: td_status_nusers is 0. */
TD_EXTERN size_t td_status_nusers(const td_status *s);
TD_EXTERN uint64_t td_status_user_get(const td_status *s, size_t i, td_status_user_key k);
/* Frees s. No operation when s is NULL. */
TD_EXTERN void td_status_free(td_status *s);

/* Connects to socket_path (NULL: $TENSORD_SOCKET, then TD_DEFAULT_SOCKET).
 * TD_ECONNECT when no daemon answers. */
TD_EXTERN int td_client_connect(const char *socket_path, td_client **out, td_error *err);
TD_EXTERN void td_client_close(td_client *c);
/* td_load through this client's connection (opt->mode is ignored: always the daemon). The lease
 * is given back (RELEASE) when the last array of the load goes. Arrays stay valid after
 * td_client_close, which ends the leases still held; the tables the client kept go when it is
 * closed and its last array is gone. */
TD_EXTERN int td_client_load(td_client *c, const char *path, const td_load_options *opt,
                             td_dict **arrays, td_meta **meta, td_error *err);
TD_EXTERN int td_client_ping(td_client *c, td_error *err);
/* The daemon's figures: *out is a new td_status (above) that the caller frees with
 * td_status_free. */
TD_EXTERN int td_client_status(td_client *c, td_status **out, td_error *err);
/* Drops cached entries nobody holds: of one file (path) or all (path NULL). Mappings clients
 * already have stay valid. */
TD_EXTERN int td_client_evict(td_client *c, const char *path, uint64_t *entries, uint64_t *bytes,
                              td_error *err);

#ifdef __cplusplus
}
#endif
#endif /* TENSORD_H */

/*
 * oracle_gguf.h - the GGUF and ggml functions of llama.cpp's libggml-base.so (the oracle, opened
 * by tu_oracle) that the interoperability tests call: its GGUF reader and writer, and the few
 * ggml calls that make the tensors a GGUF context is given.
 *
 * The signatures are those of ggml's gguf.h and ggml.h at the release scripts/install-oracle.sh
 * installs; enums are ints in the C ABI. The oracle aborts the process (GGML_ASSERT) when a
 * getter is asked for a key of another type, a key or tensor id out of range, or a name added
 * twice: check with kv_type / find_key first.
 */
#ifndef TD_ORACLE_GGUF_H
#define TD_ORACLE_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* struct gguf_init_params: no_alloc false loads the tensor data into a ggml context, which
 * gguf_init_from_file creates and stores in *ctx (the caller frees it with ggml_free). */
typedef struct tu_gguf_init_params {
    bool no_alloc;
    void **ctx; /* struct ggml_context ** */
} tu_gguf_init_params;

/* struct ggml_init_params: a context of mem_size bytes; with no_alloc false, the tensors made in
 * it get their data there too. */
typedef struct tu_ggml_init_params {
    size_t mem_size;
    void *mem_buffer;
    bool no_alloc;
} tu_ggml_init_params;

typedef struct tu_gguf_api {
    void *(*init_from_file)(const char *, tu_gguf_init_params);
    void *(*init_empty)(void);
    void (*free_ctx)(void *);
    uint32_t (*get_version)(const void *);
    size_t (*get_alignment)(const void *);
    size_t (*get_data_offset)(const void *);
    int64_t (*get_n_kv)(const void *);
    int64_t (*find_key)(const void *, const char *); /* -1 when absent */
    const char *(*get_key)(const void *, int64_t);
    int (*get_kv_type)(const void *, int64_t);
    int (*get_arr_type)(const void *, int64_t);
    size_t (*get_arr_n)(const void *, int64_t);
    const void *(*get_arr_data)(const void *, int64_t);
    const char *(*get_arr_str)(const void *, int64_t, size_t);
    const void *(*get_val_data)(const void *, int64_t);
    const char *(*get_val_str)(const void *, int64_t);
    uint16_t (*get_val_u16)(const void *, int64_t);
    int32_t (*get_val_i32)(const void *, int64_t);
    int64_t (*get_n_tensors)(const void *);
    const char *(*get_tensor_name)(const void *, int64_t);
    int (*get_tensor_type)(const void *, int64_t);
    size_t (*get_tensor_offset)(const void *, int64_t);
    size_t (*get_tensor_size)(const void *, int64_t);
    const int64_t *(*get_tensor_ne)(const void *, int64_t);
    void (*set_val_u8)(void *, const char *, uint8_t);
    void (*set_val_i8)(void *, const char *, int8_t);
    void (*set_val_u16)(void *, const char *, uint16_t);
    void (*set_val_i16)(void *, const char *, int16_t);
    void (*set_val_u32)(void *, const char *, uint32_t);
    void (*set_val_i32)(void *, const char *, int32_t);
    void (*set_val_f32)(void *, const char *, float);
    void (*set_val_u64)(void *, const char *, uint64_t);
    void (*set_val_i64)(void *, const char *, int64_t);
    void (*set_val_f64)(void *, const char *, double);
    void (*set_val_bool)(void *, const char *, bool);
    void (*set_val_str)(void *, const char *, const char *);
    void (*set_arr_data)(void *, const char *, int, const void *, size_t);
    void (*set_arr_str)(void *, const char *, const char **, size_t);
    void (*add_tensor)(void *, const void *);
    void (*set_tensor_data)(void *, const char *, const void *);
    bool (*write_to_file)(const void *, const char *, bool);
    void *(*ggml_init)(tu_ggml_init_params);
    void (*ggml_free)(void *);
    void *(*ggml_new_tensor)(void *, int, int, const int64_t *);
    void *(*ggml_set_name)(void *, const char *);
    void *(*ggml_get_tensor)(void *, const char *);
    void *(*ggml_get_data)(const void *);
    size_t (*ggml_nbytes)(const void *);
    size_t (*ggml_tensor_overhead)(void);
    int64_t (*ggml_blck_size)(int);
    size_t (*ggml_type_size)(int);
} tu_gguf_api;

/* The oracle's functions, found once (tu_oracle: exits 77 when the oracle is not installed,
 * 1 when a symbol is missing). Call from main, before the suite runs; the table lives as long as
 * the process. */
const tu_gguf_api *tu_gguf_oracle(void);

#endif

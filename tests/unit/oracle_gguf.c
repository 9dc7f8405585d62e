/*
 * oracle_gguf.c - finds the GGUF and ggml functions of the llama.cpp oracle (oracle_gguf.h) in
 * the library tu_oracle opened.
 */
#include "oracle_gguf.h"

#include "testutil.h"

static tu_gguf_api tu_gguf;
static int tu_gguf_found;

const tu_gguf_api *tu_gguf_oracle(void)
{
    if (tu_gguf_found)
        return &tu_gguf;
    tu_oracle();
#define SYM(field, name) *(void **)&tu_gguf.field = tu_oracle_sym(name)
    SYM(init_from_file, "gguf_init_from_file");
    SYM(init_empty, "gguf_init_empty");
    SYM(free_ctx, "gguf_free");
    SYM(get_version, "gguf_get_version");
    SYM(get_alignment, "gguf_get_alignment");
    SYM(get_data_offset, "gguf_get_data_offset");
    SYM(get_n_kv, "gguf_get_n_kv");
    SYM(find_key, "gguf_find_key");
    SYM(get_key, "gguf_get_key");
    SYM(get_kv_type, "gguf_get_kv_type");
    SYM(get_arr_type, "gguf_get_arr_type");
    SYM(get_arr_n, "gguf_get_arr_n");
    SYM(get_arr_data, "gguf_get_arr_data");
    SYM(get_arr_str, "gguf_get_arr_str");
    SYM(get_val_data, "gguf_get_val_data");
    SYM(get_val_str, "gguf_get_val_str");
    SYM(get_val_u16, "gguf_get_val_u16");
    SYM(get_val_i32, "gguf_get_val_i32");
    SYM(get_n_tensors, "gguf_get_n_tensors");
    SYM(get_tensor_name, "gguf_get_tensor_name");
    SYM(get_tensor_type, "gguf_get_tensor_type");
    SYM(get_tensor_offset, "gguf_get_tensor_offset");
    SYM(get_tensor_size, "gguf_get_tensor_size");
    SYM(get_tensor_ne, "gguf_get_tensor_ne");
    SYM(set_val_u8, "gguf_set_val_u8");
    SYM(set_val_i8, "gguf_set_val_i8");
    SYM(set_val_u16, "gguf_set_val_u16");
    SYM(set_val_i16, "gguf_set_val_i16");
    SYM(set_val_u32, "gguf_set_val_u32");
    SYM(set_val_i32, "gguf_set_val_i32");
    SYM(set_val_f32, "gguf_set_val_f32");
    SYM(set_val_u64, "gguf_set_val_u64");
    SYM(set_val_i64, "gguf_set_val_i64");
    SYM(set_val_f64, "gguf_set_val_f64");
    SYM(set_val_bool, "gguf_set_val_bool");
    SYM(set_val_str, "gguf_set_val_str");
    SYM(set_arr_data, "gguf_set_arr_data");
    SYM(set_arr_str, "gguf_set_arr_str");
    SYM(add_tensor, "gguf_add_tensor");
    SYM(set_tensor_data, "gguf_set_tensor_data");
    SYM(write_to_file, "gguf_write_to_file");
    SYM(ggml_init, "ggml_init");
    SYM(ggml_free, "ggml_free");
    SYM(ggml_new_tensor, "ggml_new_tensor");
    SYM(ggml_set_name, "ggml_set_name");
    SYM(ggml_get_tensor, "ggml_get_tensor");
    SYM(ggml_get_data, "ggml_get_data");
    SYM(ggml_nbytes, "ggml_nbytes");
    SYM(ggml_tensor_overhead, "ggml_tensor_overhead");
    SYM(ggml_blck_size, "ggml_blck_size");
    SYM(ggml_type_size, "ggml_type_size");
#undef SYM
    tu_gguf_found = 1;
    return &tu_gguf;
}

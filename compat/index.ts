// The Python-shaped surface: the names a ring-flash-attention / flash-attn user calls.
export {
  extract_local,
  zigzag_extract_local,
  stripe_extract_local,
  varlen_extract_local,
  zigzag_varlen_extract_local,
  zigzag_llama3_extract_local,
  usp_extract_local,
  update_out_and_lse,
} from './helpers.js';
export {
  save,
  load,
  encode,
  decode,
  FORMAT,
  VERSION,
  type SavableTensor,
  type LoadedTensor,
} from './tensor_file.js';
export { substitute_hf_flash_attn, update_ring_flash_attn_params } from './adapters.js';

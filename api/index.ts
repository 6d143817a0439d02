export {
  init,
  RingRuntime,
  type DriverResult,
  type DriverGrads,
  type FuncGrads,
  type KvPackedGrads,
  type QkvPackedGrads,
  type HostTensor,
} from './driver/driver.js';
export type * from './types.js';
export * from './ring/ring.js';
export * from './ring/ring_v2.js';
export * from './ring/zigzag_ring.js';
export * from './ring/stripe.js';
export * from './single.js';
export * from './varlen/single_varlen.js';
export * from './varlen/ring_varlen.js';
export * from './varlen/zigzag_ring_varlen.js';
export {
  ulysses_attn_func,
  ulysses_attn_kvpacked_func,
  ulysses_attn_qkvpacked_func,
  ulyssesAttnFunc,
  ulyssesAttnKvpackedFunc,
  ulyssesAttnQkvpackedFunc,
} from './usp/ulysses.js';
export {
  usp_attn_func,
  usp_attn_kvpacked_func,
  usp_attn_qkvpacked_func,
  uspAttnFunc,
  uspAttnKvpackedFunc,
  uspAttnQkvpackedFunc,
} from './usp/usp.js';
export {
  llama3_flash_attn_prepare_cu_seqlens,
  llama3_flash_attn_varlen_func,
  llama3_flash_attn_varlen_kvpacked_func,
  llama3_flash_attn_varlen_qkvpacked_func,
  llama3FlashAttnPrepareCuSeqlens,
  llama3FlashAttnVarlenFunc,
  llama3FlashAttnVarlenKvpackedFunc,
  llama3FlashAttnVarlenQkvpackedFunc,
} from './varlen/llama3.js';
export {
  zigzag_llama3_flash_attn_prepare_cu_seqlens,
  zigzag_llama3_flash_attn_varlen_func,
  zigzag_llama3_flash_attn_varlen_kvpacked_func,
  zigzag_llama3_flash_attn_varlen_qkvpacked_func,
  zigzagLlama3FlashAttnPrepareCuSeqlens,
  zigzagLlama3FlashAttnVarlenFunc,
  zigzagLlama3FlashAttnVarlenKvpackedFunc,
  zigzagLlama3FlashAttnVarlenQkvpackedFunc,
} from './varlen/zigzag_llama3.js';
export { layoutPositions, shard, gather, LAYOUTS, type LayoutName } from './driver/layouts.js';
export type { AttnKwargs } from './args.js';
export type { AttnResult } from './wrappers.js';
export { RING_FUNCTIONS } from './driver/registry.js';

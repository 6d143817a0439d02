export { init, RingRuntime, type DriverResult, type DriverGrads, type FuncGrads, type KvPackedGrads, type QkvPackedGrads, type HostTensor } from './driver.js';
export type * from './types.js';
export * from './ring.js';
export * from './ring_v2.js';
export * from './zigzag_ring.js';
export * from './stripe.js';
export * from './single.js';
export * from './single_varlen.js';
export * from './ring_varlen.js';
export * from './zigzag_ring_varlen.js';
export {
  llama3_flash_attn_prepare_cu_seqlens, llama3_flash_attn_varlen_func, llama3_flash_attn_varlen_kvpacked_func,
  llama3_flash_attn_varlen_qkvpacked_func, llama3FlashAttnPrepareCuSeqlens, llama3FlashAttnVarlenFunc,
  llama3FlashAttnVarlenKvpackedFunc, llama3FlashAttnVarlenQkvpackedFunc,
} from './llama3.js';
export { layoutPositions, shard, gather, LAYOUTS, type LayoutName } from './layouts.js';
export type { AttnKwargs } from './args.js';
export type { AttnResult } from './family.js';
export { RING_FUNCTIONS } from './registry.js';

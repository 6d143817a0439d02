// ring-flash-attn: ring attention on FlashAttention-style kernels for Node.js.
export * from './api/index.js';
export * from './compat/index.js';
export { RingFlashAttnError, type ErrorCode } from './runtime/errors.js';
export { DeviceTensor } from './runtime/tensor.js';
export { RankContext } from './runtime/context.js';
export type { Group } from './runtime/comm.js';
export type { DType } from './runtime/dtype.js';
export { visibleGpuCount, type InitOptions, type Transport } from './runtime/pool.js';
export type { RendezvousOptions } from './runtime/rendezvous.js';

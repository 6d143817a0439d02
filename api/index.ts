export { init, RingRuntime, type DriverResult, type DriverGrads } from './driver.js';
export * from './ring.js';
export * from './ring_v2.js';
export { updateOutAndLse } from './merge.js';
export { layoutPositions, shard, gather, LAYOUTS, type LayoutName } from './layouts.js';
export type { AttnKwargs } from './args.js';
export type { AttnResult } from './family.js';
export { RING_FUNCTIONS } from './registry.js';

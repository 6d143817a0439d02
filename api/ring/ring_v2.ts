// ring_flash_attn_*_v2: the pass-along ring (api/ring/pass_along.ts) on contiguous shards. A causal
// rank r attends causally to its own block and fully to the blocks of ranks before it.
import type { Group } from '../../runtime/comm.js';
import { attnFamily } from '../wrappers.js';
import { passAlongRing, type BlockPlan } from './pass_along.js';
import { contiguousPieces } from './positions.js';
import type { RingOptions, RingVariant } from '../variant.js';

export function ringV2Plan(step: number, group: Group, seqlen: number, o: RingOptions): BlockPlan | null {
  if (o.causal && step > group.rank) return null; // a block from a later rank is fully masked
  const all = { start: 0, length: seqlen };
  return { q: all, kv: all, causal: o.causal && step === 0 };
}

export const ringV2Variant: RingVariant = {
  name: 'ring_flash_attn',
  suffix: '_v2',
  layout: 'contiguous',
  ...passAlongRing(
    () => ringV2Plan,
    (_o, _g, s) => ({ pieces: contiguousPieces(s) }),
  ),
};

const family = attnFamily(ringV2Variant);

/** Pass-along ring attention over contiguous shards (b, s/world, h, d). */
export const ring_flash_attn_func_v2 = family.func;
/** Pass-along ring attention with packed kv (b, s/world, 2, h_k, d). */
export const ring_flash_attn_kvpacked_func_v2 = family.kvpacked;
/** Pass-along ring attention with packed qkv (b, s/world, 3, h, d). */
export const ring_flash_attn_qkvpacked_func_v2 = family.qkvpacked;
export const ringFlashAttnFuncV2 = ring_flash_attn_func_v2;
export const ringFlashAttnKvpackedFuncV2 = ring_flash_attn_kvpacked_func_v2;
export const ringFlashAttnQkvpackedFuncV2 = ring_flash_attn_qkvpacked_func_v2;

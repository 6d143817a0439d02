// ulysses_attn_*: DeepSpeed-Ulysses head parallelism (yunchang's UlyssesAttention). Each member
// holds a contiguous piece of the sequence with every head; an all-to-all over the group gives
// every member the whole sequence for nheads/world heads, the single-device kernel attends over
// it, and a second all-to-all brings out and lse back to the pieces. It is usp_attn_* with a ring
// of one (api/usp/usp.ts): backward mirrors the forward the same way.
import type { RingArgs } from '../types.js';
import type { RingVariant } from '../variant.js';
import { DENSE_FRAME, makeFamily } from '../wrappers.js';
import { checkUsp, uspBackward, uspForward, uspParse, type UspOptions } from './usp.js';

export const ulyssesVariant: RingVariant<UspOptions> = {
  name: 'ulysses_attn',
  layout: 'contiguous',
  check: checkUsp,
  forward: uspForward,
  backward: uspBackward,
};

const family = makeFamily<UspOptions, RingArgs>(
  ulyssesVariant,
  DENSE_FRAME,
  uspParse([], (_fn, _kw, size) => ({ ulysses: size, ring: 1, ringImpl: 'ring' })),
);

/**
 * ulysses_attn_func(q, k, v, dropout_p?, softmax_scale?, causal?, ..., group?): head-parallel
 * attention over contiguous shards (b, s/world, h, d) (extract_local); nheads and nheads_k must
 * be divisible by the group size.
 */
export const ulysses_attn_func = family.func;
/** ulysses_attn_func with packed kv (b, s/world, 2, h_k, d). */
export const ulysses_attn_kvpacked_func = family.kvpacked;
/** ulysses_attn_func with packed qkv (b, s/world, 3, h, d). */
export const ulysses_attn_qkvpacked_func = family.qkvpacked;
export const ulyssesAttnFunc = ulysses_attn_func;
export const ulyssesAttnKvpackedFunc = ulysses_attn_kvpacked_func;
export const ulyssesAttnQkvpackedFunc = ulysses_attn_qkvpacked_func;

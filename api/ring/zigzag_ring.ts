// zigzag_ring_flash_attn_*: the sequence is cut into 2·world chunks and rank r holds chunks r and
// 2·world−1−r, which balances causal work over the ranks. On the pass-along ring, the block of
// an earlier rank (step ≤ r) is seen by all local queries but only through its first chunk; the
// block of a later rank is seen only by the second half of the queries, but whole.
import type { Group } from '../../runtime/comm.js';
import { fail } from '../../runtime/errors.js';
import type { DeviceTensor } from '../../runtime/tensor.js';
import { attnFamily } from '../wrappers.js';
import { passAlongRing, type BlockPlan } from './pass_along.js';
import { zigzagPieces } from './positions.js';
import type { RingOptions, RingVariant } from '../variant.js';

export function zigzagPlan(step: number, group: Group, seqlen: number, o: RingOptions): BlockPlan | null {
  const all = { start: 0, length: seqlen };
  if (!o.causal) return { q: all, kv: all, causal: false };
  const half = seqlen / 2;
  if (step === 0) return { q: all, kv: all, causal: true };
  if (step <= group.rank) return { q: all, kv: { start: 0, length: half }, causal: false };
  return { q: { start: half, length: half }, kv: all, causal: false };
}

function checkZigzag(fn: string, q: DeviceTensor, k: DeviceTensor): void {
  const s = q.shape[1]!;
  if (s % 2 !== 0)
    fail(
      'E_SHAPE',
      `${fn}: the local seqlen (${s}) must be even: each rank holds two equal chunks (full seqlen divisible by 2·world)`,
    );
  if (k.shape[1] !== s) fail('E_SHAPE', `${fn}: k seqlen ${k.shape[1]} != q seqlen ${s}`);
}

export const zigzagVariant: RingVariant = {
  name: 'zigzag_ring_flash_attn',
  layout: 'zigzag',
  check: checkZigzag,
  ...passAlongRing(
    () => zigzagPlan,
    (_o, g, s) => ({ pieces: zigzagPieces(s, g.size) }),
  ),
};

const family = attnFamily(zigzagVariant);

/** Zigzag ring attention over zigzag shards (b, s/world, h, d): chunks r and 2·world−1−r. */
export const zigzag_ring_flash_attn_func = family.func;
/** Zigzag ring attention with packed kv (b, s/world, 2, h_k, d). */
export const zigzag_ring_flash_attn_kvpacked_func = family.kvpacked;
/** Zigzag ring attention with packed qkv (b, s/world, 3, h, d). */
export const zigzag_ring_flash_attn_qkvpacked_func = family.qkvpacked;
export const zigzagRingFlashAttnFunc = zigzag_ring_flash_attn_func;
export const zigzagRingFlashAttnKvpackedFunc = zigzag_ring_flash_attn_kvpacked_func;
export const zigzagRingFlashAttnQkvpackedFunc = zigzag_ring_flash_attn_qkvpacked_func;

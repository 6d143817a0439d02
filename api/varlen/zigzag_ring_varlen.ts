// zigzag_ring_flash_attn_varlen_*: every packed sequence is cut into 2·world chunks and rank r
// holds chunks r and 2·world−1−r of each (its local sequence i is those two chunks, back to
// back). On the pass-along ring, per sequence: the block of an earlier rank (step ≤ r) is seen
// by all local queries through its first chunk only; the block of a later rank is seen whole,
// by the second chunk of the queries only. Both are segment tables over the local layout.
import type { Group } from '../../runtime/comm.js';
import type { DeviceTensor } from '../../runtime/tensor.js';
import { checkSeqDivisible } from './cu_seqlens.js';
import { passAlongRing, type BlockPlan, type PlanFn } from '../ring/pass_along.js';
import { zigzagVarlenPieces } from '../ring/positions.js';
import { halves, segmentSpec, spansOf } from './segments.js';
import type { VarlenArgs } from '../types.js';
import { readCuSeqlens, varlenFamily, VARLEN_POSITIONAL, type VarlenOptions } from './wrappers.js';
import type { RingVariant } from '../variant.js';

export function zigzagVarlenPlan(o: VarlenOptions, group: Group): PlanFn {
  const seqs = spansOf(o.cuSeqlens);
  const all = { start: 0, length: o.cuSeqlens[o.cuSeqlens.length - 1]! };
  const whole = segmentSpec(seqs, seqs);
  const own: BlockPlan = { q: all, kv: all, causal: o.causal, seg: whole };
  if (!o.causal) return () => own;
  const earlier: BlockPlan = {
    q: all,
    kv: all,
    causal: false,
    seg: segmentSpec(seqs, halves(seqs, 'front')),
  };
  const later: BlockPlan = { q: all, kv: all, causal: false, seg: segmentSpec(halves(seqs, 'back'), seqs) };
  return (step) => (step === 0 ? own : step <= group.rank ? earlier : later);
}

function checkZigzagVarlen(fn: string, _q: DeviceTensor, _k: DeviceTensor, o: VarlenOptions): void {
  checkSeqDivisible(fn, 'cu_seqlens', o.cuSeqlens, 2, 'each rank holds two equal chunks of every sequence');
}

export const zigzagVarlenVariant: RingVariant<VarlenOptions> = {
  name: 'zigzag_ring_flash_attn_varlen',
  layout: 'zigzag_varlen',
  positional: VARLEN_POSITIONAL,
  check: checkZigzagVarlen,
  ...passAlongRing(zigzagVarlenPlan, (o, g) => ({
    pieces: zigzagVarlenPieces(o.cuSeqlens, g.size),
    seqTok: Array.from(o.cuSeqlens.subarray(0, -1), (x) => x * g.size),
  })),
};

const family = varlenFamily<VarlenOptions, VarlenArgs>(zigzagVarlenVariant, readCuSeqlens);

/**
 * zigzag_ring_flash_attn_varlen_func(q, k, v, cu_seqlens, max_seqlen, ...): q (total/world, h, d)
 * holding chunks r and 2·world−1−r of every sequence; cu_seqlens and max_seqlen local to the rank.
 */
export const zigzag_ring_flash_attn_varlen_func = family.func;
/** Zigzag varlen attention with packed kv (total/world, 2, h_k, d). */
export const zigzag_ring_flash_attn_varlen_kvpacked_func = family.kvpacked;
/** Zigzag varlen attention with packed qkv (total/world, 3, h, d). */
export const zigzag_ring_flash_attn_varlen_qkvpacked_func = family.qkvpacked;
export const zigzagRingFlashAttnVarlenFunc = zigzag_ring_flash_attn_varlen_func;
export const zigzagRingFlashAttnVarlenKvpackedFunc = zigzag_ring_flash_attn_varlen_kvpacked_func;
export const zigzagRingFlashAttnVarlenQkvpackedFunc = zigzag_ring_flash_attn_varlen_qkvpacked_func;

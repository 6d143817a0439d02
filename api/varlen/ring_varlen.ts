// ring_flash_attn_varlen_*: packed sequences (total_tokens, h, d), each split evenly over the
// ranks: rank r holds the r-th 1/world of every sequence, so every rank has the same local
// cu_seqlens (global / world). The pass-along ring of ring_v2 with one segment table for q and
// k: per sequence, a causal rank attends causally to its own piece and fully to the pieces of
// earlier ranks; later ranks' blocks are skipped.
import type { Group } from '../../runtime/comm.js';
import { passAlongRing, type BlockPlan, type PlanFn } from '../ring/pass_along.js';
import { varlenPieces } from '../ring/positions.js';
import { segmentSpec, spansOf } from './segments.js';
import type { VarlenArgs } from '../types.js';
import { readCuSeqlens, varlenFamily, VARLEN_POSITIONAL, type VarlenOptions } from './wrappers.js';
import type { RingVariant } from '../variant.js';

export function ringVarlenPlan(o: VarlenOptions, group: Group): PlanFn {
  const seqs = spansOf(o.cuSeqlens);
  const seg = segmentSpec(seqs, seqs);
  const all = { start: 0, length: o.cuSeqlens[o.cuSeqlens.length - 1]! };
  const own: BlockPlan = { q: all, kv: all, causal: o.causal, seg };
  const earlier: BlockPlan = { q: all, kv: all, causal: false, seg };
  return (step) => (step === 0 ? own : !o.causal || step <= group.rank ? earlier : null);
}

export const ringVarlenVariant: RingVariant<VarlenOptions> = {
  name: 'ring_flash_attn_varlen',
  layout: 'varlen',
  positional: VARLEN_POSITIONAL,
  ...passAlongRing(ringVarlenPlan, (o, g) => ({
    pieces: varlenPieces(o.cuSeqlens),
    seqTok: Array.from(o.cuSeqlens.subarray(0, -1), (x) => x * g.size),
  })),
};

const family = varlenFamily<VarlenOptions, VarlenArgs>(ringVarlenVariant, readCuSeqlens);

/**
 * ring_flash_attn_varlen_func(q, k, v, cu_seqlens, max_seqlen, dropout_p?, softmax_scale?, causal?, ...):
 * q (total/world, h, d), k/v (total/world, h_k, d) holding the r-th 1/world of every sequence;
 * cu_seqlens (Int32Array) and max_seqlen local to the rank. lse is (h, total/world).
 */
export const ring_flash_attn_varlen_func = family.func;
/** Ring varlen attention with packed kv (total/world, 2, h_k, d). */
export const ring_flash_attn_varlen_kvpacked_func = family.kvpacked;
/** Ring varlen attention with packed qkv (total/world, 3, h, d). */
export const ring_flash_attn_varlen_qkvpacked_func = family.qkvpacked;
export const ringFlashAttnVarlenFunc = ring_flash_attn_varlen_func;
export const ringFlashAttnVarlenKvpackedFunc = ring_flash_attn_varlen_kvpacked_func;
export const ringFlashAttnVarlenQkvpackedFunc = ring_flash_attn_varlen_qkvpacked_func;

// stripe_flash_attn_*: token i lives on rank i mod world (Striped Attention). Against the block
// of rank r' ≤ r, local query i sees local key j iff j ≤ i (causal); against a later rank's block
// it sees j ≤ i−1, i.e. queries 1.. attend causally to keys ..−1 (the diagonal shifted by one).
// Non-causal attention needs no mask, so every step is a full block.
import type { Group } from '../../runtime/comm.js';
import { attnFamily } from '../wrappers.js';
import { passAlongRing, type BlockPlan } from './pass_along.js';
import { stripePieces } from './positions.js';
import type { RingOptions, RingVariant } from '../variant.js';

export function stripePlan(step: number, group: Group, seqlen: number, o: RingOptions): BlockPlan | null {
  const all = { start: 0, length: seqlen };
  if (!o.causal || step <= group.rank) return { q: all, kv: all, causal: o.causal };
  if (seqlen < 2) return null;
  return { q: { start: 1, length: seqlen - 1 }, kv: { start: 0, length: seqlen - 1 }, causal: true };
}

export const stripeVariant: RingVariant = {
  name: 'stripe_flash_attn',
  layout: 'stripe',
  ...passAlongRing(
    () => stripePlan,
    (_o, g, s) => ({ pieces: stripePieces(s, g.size) }),
  ),
};

const family = attnFamily(stripeVariant);

/** Striped attention over stripe shards (b, s/world, h, d): token i on rank i mod world. */
export const stripe_flash_attn_func = family.func;
/** Striped attention with packed kv (b, s/world, 2, h_k, d). */
export const stripe_flash_attn_kvpacked_func = family.kvpacked;
/** Striped attention with packed qkv (b, s/world, 3, h, d). */
export const stripe_flash_attn_qkvpacked_func = family.qkvpacked;
export const stripeFlashAttnFunc = stripe_flash_attn_func;
export const stripeFlashAttnKvpackedFunc = stripe_flash_attn_kvpacked_func;
export const stripeFlashAttnQkvpackedFunc = stripe_flash_attn_qkvpacked_func;

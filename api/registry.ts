// Every public ring function by its Python name, with what driver mode needs to call it.
import { ATTN_POSITIONAL } from './args.js';
import type { AttnResult } from './family.js';
import type { LayoutName } from './layouts.js';
import * as ring from './ring.js';
import * as ringV2 from './ring_v2.js';
import * as single from './single.js';
import * as stripe from './stripe.js';
import * as zigzag from './zigzag_ring.js';
import type { RingVariant } from './variant.js';

export type Packing = 'func' | 'kvpacked' | 'qkvpacked';

export interface RegistryEntry {
  fn: (...args: any[]) => AttnResult;
  packing: Packing;
  /** How driver mode shards the sequence; 'single' runs unsharded on rank 0. */
  layout: LayoutName | 'single';
  /** Python positional order after the tensors. */
  positional: readonly string[];
}

/** Number of tensor arguments before the Python keyword arguments. */
export const TENSOR_COUNT: Record<Packing, number> = { func: 3, kvpacked: 2, qkvpacked: 1 };

const entries: Record<string, RegistryEntry> = {};

function register(variant: RingVariant, mod: Record<string, unknown>): void {
  const suffix = variant.suffix ?? '';
  for (const packing of ['func', 'kvpacked', 'qkvpacked'] as const) {
    const name = `${variant.name}_${packing === 'func' ? '' : `${packing}_`}func${suffix}`;
    const fn = mod[name];
    if (typeof fn !== 'function') throw new Error(`registry: ${name} is not exported`);
    entries[name] = { fn: fn as RegistryEntry['fn'], packing, layout: variant.layout, positional: variant.positional ?? ATTN_POSITIONAL };
  }
}

register(ring.ringVariant, ring);
register(ringV2.ringV2Variant, ringV2);
register(zigzag.zigzagVariant, zigzag);
register(stripe.stripeVariant, stripe);
register(single.singleVariant, single);

export const RING_FUNCTIONS: Readonly<Record<string, RegistryEntry>> = entries;

// Every public attention function by its Python name, with what driver mode needs to call it.
import { fail } from '../../runtime/errors.js';
import { describeValue } from '../../runtime/tensor.js';
import { ATTN_POSITIONAL } from '../args.js';
import type { AttnResult } from '../wrappers.js';
import * as llama3 from '../varlen/llama3.js';
import * as ring from '../ring/ring.js';
import * as ringV2 from '../ring/ring_v2.js';
import * as ringVarlen from '../varlen/ring_varlen.js';
import {
  layoutSharding,
  SINGLE_SHARDING,
  SINGLE_VARLEN_SHARDING,
  USP_SHARDING,
  type Sharding,
} from './sharding.js';
import * as single from '../single.js';
import * as singleVarlen from '../varlen/single_varlen.js';
import * as stripe from '../ring/stripe.js';
import * as ulysses from '../usp/ulysses.js';
import * as usp from '../usp/usp.js';
import {
  LLAMA3_SHARDING,
  RING_VARLEN_SHARDING,
  ZIGZAG_LLAMA3_SHARDING,
  ZIGZAG_VARLEN_SHARDING,
} from './varlen_sharding.js';
import * as zigzag from '../ring/zigzag_ring.js';
import * as zigzagVarlen from '../varlen/zigzag_ring_varlen.js';
import * as zigzagLlama3 from '../varlen/zigzag_llama3.js';
import type { RingVariant } from '../variant.js';

export type Packing = 'func' | 'kvpacked' | 'qkvpacked';

export interface RegistryEntry {
  fn: (...args: any[]) => AttnResult;
  packing: Packing;
  /** The variant's layout name ('single' runs unsharded on rank 0). */
  layout: RingVariant['layout'];
  /** How driver mode shards the call's tensors and arguments over the ranks. */
  sharding: Sharding;
  /** Python positional order after the tensors. */
  positional: readonly string[];
}

/** Number of tensor arguments before the Python keyword arguments. */
export const TENSOR_COUNT: Record<Packing, number> = { func: 3, kvpacked: 2, qkvpacked: 1 };

// No prototype: a lookup of '__proto__' or 'toString' finds nothing instead of Object's members.
const entries: Record<string, RegistryEntry> = Object.create(null) as Record<string, RegistryEntry>;

function register(variant: RingVariant<any>, mod: Record<string, unknown>, sharding: Sharding): void {
  const suffix = variant.suffix ?? '';
  for (const packing of ['func', 'kvpacked', 'qkvpacked'] as const) {
    const name = `${variant.name}_${packing === 'func' ? '' : `${packing}_`}func${suffix}`;
    const fn = mod[name];
    if (typeof fn !== 'function') throw new Error(`registry: ${name} is not exported`);
    entries[name] = {
      fn: fn as RegistryEntry['fn'],
      packing,
      layout: variant.layout,
      sharding,
      positional: (packing === 'qkvpacked' && variant.qkvPositional) || variant.positional || ATTN_POSITIONAL,
    };
  }
}

register(ring.ringVariant, ring, layoutSharding('contiguous'));
register(ringV2.ringV2Variant, ringV2, layoutSharding('contiguous'));
register(zigzag.zigzagVariant, zigzag, layoutSharding('zigzag'));
register(stripe.stripeVariant, stripe, layoutSharding('stripe'));
register(single.singleVariant, single, SINGLE_SHARDING);
register(ringVarlen.ringVarlenVariant, ringVarlen, RING_VARLEN_SHARDING);
register(zigzagVarlen.zigzagVarlenVariant, zigzagVarlen, ZIGZAG_VARLEN_SHARDING);
register(llama3.llama3Variant, llama3, LLAMA3_SHARDING);
register(zigzagLlama3.zigzagLlama3Variant, zigzagLlama3, ZIGZAG_LLAMA3_SHARDING);
register(singleVarlen.singleVarlenVariant, singleVarlen, SINGLE_VARLEN_SHARDING);
register(ulysses.ulyssesVariant, ulysses, layoutSharding('contiguous'));
register(usp.uspVariant, usp, USP_SHARDING);

export const RING_FUNCTIONS: Readonly<Record<string, RegistryEntry>> = Object.freeze(entries);

/** Every registered name, in registration order. */
export const RING_FUNCTION_NAMES: readonly string[] = Object.freeze(Object.keys(entries));

/** The entry of `name`, looked up among the registry's own names only; E_ARG for any other value. */
export function ringFunction(name: unknown): RegistryEntry {
  if (typeof name !== 'string') fail('E_ARG', `function name must be a string, got ${describeValue(name)}`);
  if (!Object.hasOwn(entries, name))
    fail('E_ARG', `unknown function '${name}'; known: ${RING_FUNCTION_NAMES.join(', ')}`);
  return entries[name]!;
}

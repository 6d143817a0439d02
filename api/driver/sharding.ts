// How driver mode splits a call's full tensors over the ranks and puts the results back. Every
// registry entry has one: the dense layouts cut the sequence axis of (b, s, h, d); the varlen
// shardings (api/driver/varlen_sharding.ts) cut the token axis of packed (total, h, d) tensors per
// sequence and hand every rank the arguments that describe its piece (its cu_seqlens, ...).
import { USP_KEYS } from '../usp/usp.js';
import { uspDegrees } from '../usp/grid.js';
import {
  checkDivisible,
  checkUspDivisible,
  layoutPositions,
  RING_IMPL_LAYOUT,
  uspPositions,
  type LayoutName,
} from './layouts.js';

export interface ShardPlan {
  /** Global rows (along the sequence axis) of `rank`'s shard, in local order; null: the whole tensors. */
  positions(rank: number): number[] | null;
  /** Keyword arguments of `rank`'s call, in place of the ones the sharding consumes. */
  kwargs(rank: number): Record<string, unknown>;
}

export interface Sharding {
  /** One device, no ring: driver mode runs it on rank 0 only. */
  readonly single?: boolean;
  /** Sequence axis of the full q/k/v: 1 for (b, s, h, d), 0 for packed (total, h, d). */
  readonly seqAxis: 0 | 1;
  /** Driver mode's positional order after the tensors, where it differs from the function's. */
  readonly positional?: readonly string[];
  /** Keyword-only options driver mode adds besides dtype (llama3's heads_k_stride). */
  readonly options?: readonly string[];
  /** Keywords the plan consumes: each rank gets `kwargs(rank)` instead. */
  readonly consumes?: readonly string[];
  /** Validates the call's arguments for `world` ranks and `total` rows (E_SHAPE/E_ARG), and plans the split. */
  plan(fn: string, total: number, kw: Record<string, unknown>, world: number): ShardPlan;
}

const NO_KWARGS = () => ({});

export function layoutSharding(layout: LayoutName): Sharding {
  return {
    seqAxis: 1,
    plan(_fn, total, _kw, world) {
      checkDivisible(layout, total, world);
      return { positions: (rank) => layoutPositions(layout, total, rank, world), kwargs: NO_KWARGS };
    },
  };
}

/** usp_attn_*: the grid's degrees and ring variant are the call's own keywords; every rank gets them too. */
export const USP_SHARDING: Sharding = {
  seqAxis: 1,
  options: USP_KEYS,
  plan(fn, total, kw, world) {
    const { ulysses, ring, ringImpl } = uspDegrees(fn, kw, world);
    const layout = RING_IMPL_LAYOUT[ringImpl];
    checkUspDivisible(layout, total, ulysses, ring);
    return { positions: (rank) => uspPositions(layout, total, rank, ulysses, ring), kwargs: NO_KWARGS };
  },
};

export const SINGLE_SHARDING: Sharding = {
  single: true,
  seqAxis: 1,
  plan: () => ({ positions: () => null, kwargs: NO_KWARGS }),
};

/** flash_attn_varlen_*: the whole packed tensors and their cu_seqlens, on rank 0. */
export const SINGLE_VARLEN_SHARDING: Sharding = {
  single: true,
  seqAxis: 0,
  plan: () => ({ positions: () => null, kwargs: NO_KWARGS }),
};

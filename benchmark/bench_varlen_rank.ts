// Rank-side half of the varlen table (the Python project's benchmark_varlen_kvpacked_func.py):
// packed documents, kvpacked, causal. Every rank holds `s` tokens; call i uses cu_seqlens set
// i mod 4. For the rings a set is the rank's LOCAL boundaries (each global sequence is world
// times longer, split evenly or zigzagged over the ranks); llama3 gets the GLOBAL boundaries
// (local × world) through llama3_flash_attn_prepare_cu_seqlens with heads_k_stride, as in Python;
// the theoretic column runs flash_attn_varlen on the local shard with the local sets.
import { maxSeqLength } from '../api/varlen/cu_seqlens.js';
import {
  llama3_flash_attn_prepare_cu_seqlens,
  llama3_flash_attn_varlen_kvpacked_func,
} from '../api/varlen/llama3.js';
import { zigzag_llama3_flash_attn_varlen_kvpacked_func } from '../api/varlen/zigzag_llama3.js';
import { ring_flash_attn_varlen_kvpacked_func } from '../api/varlen/ring_varlen.js';
import { flash_attn_varlen_kvpacked_func } from '../api/varlen/single_varlen.js';
import { zigzag_ring_flash_attn_varlen_kvpacked_func } from '../api/varlen/zigzag_ring_varlen.js';
import type { Group } from '../runtime/comm.js';
import type { RankContext } from '../runtime/context.js';
import type { DType } from '../runtime/dtype.js';
import type { DeviceTensor } from '../runtime/tensor.js';
import type { BenchResult, TimingPlan } from './bench_rank.js';
import { finishCall, seededTensor, timeCalls } from './bench_rank.js';
import { asSoloRank, type SoloRank } from './solo_comm.js';

/** The Python project's cu_seqlens sets for 8192 tokens per rank (benchmark_varlen_kvpacked_func.py). */
export const PYTHON_CU_SEQLENS_SETS = [
  [0, 8192],
  [0, 256, 7648, 8192],
  [0, 4096, 8192],
  [0, 3104, 6304, 7904, 8064, 8192],
];

export type VarlenColumn =
  'flash_attn_varlen' | 'ring_varlen' | 'zigzag_ring_varlen' | 'llama3' | 'zigzag_llama3';

export interface VarlenBenchTask extends TimingPlan {
  column: VarlenColumn;
  /** Tokens per rank; h query heads, hk kv heads, head dim d. */
  s: number;
  h: number;
  hk: number;
  d: number;
  dtype: DType;
  backward: boolean;
  /** Per-rank cu_seqlens sets (each ends at s), used in turn. */
  sets: number[][];
  headsKStride: number;
  seed: number;
  /** Run the ring columns as this one rank of a larger ring (solo_comm.ts). */
  solo?: SoloRank;
}

/** One call per set: the public function with the arguments the Python benchmark passes. */
function callsFor(
  ctx: RankContext,
  t: VarlenBenchTask,
  group: Group | null,
  q: DeviceTensor,
  kv: DeviceTensor,
): (() => DeviceTensor)[] {
  const opts = group ? { causal: true, group } : { causal: true };
  // The rank played: a solo run's, or this one of the runtime's world.
  const { rank, world } = t.solo ?? ctx;
  return t.sets.map((set) => {
    const cu = Int32Array.from(set);
    const max = maxSeqLength(cu);
    switch (t.column) {
      case 'flash_attn_varlen':
        return () => flash_attn_varlen_kvpacked_func(q, kv, cu, cu, max, max, opts) as DeviceTensor;
      case 'ring_varlen':
        return () => ring_flash_attn_varlen_kvpacked_func(q, kv, cu, max, opts) as DeviceTensor;
      case 'zigzag_ring_varlen':
        return () => zigzag_ring_flash_attn_varlen_kvpacked_func(q, kv, cu, max, opts) as DeviceTensor;
      case 'llama3': {
        const global = Int32Array.from(set, (x) => x * world);
        const [cuQ, cuK, maxQ, maxK, slice] = llama3_flash_attn_prepare_cu_seqlens(global, true, rank, world);
        return () =>
          llama3_flash_attn_varlen_kvpacked_func(
            q,
            kv,
            cuQ,
            cuK,
            maxQ,
            maxK,
            t.headsKStride,
            slice,
            opts,
          ) as DeviceTensor;
      }
      case 'zigzag_llama3':
        return () =>
          zigzag_llama3_flash_attn_varlen_kvpacked_func(q, kv, cu, max, t.headsKStride, opts) as DeviceTensor;
    }
  });
}

export function run(ctx: RankContext, t: VarlenBenchTask): BenchResult {
  const mk = (shape: number[], salt: number, grad: boolean) =>
    seededTensor(ctx, shape, t.seed * 31 + ctx.rank * 7 + salt, t.dtype, grad);
  const q = mk([t.s, t.h, t.d], 1, t.backward);
  const kv = mk([t.s, 2, t.hk, t.d], 2, t.backward);
  const dout = mk([t.s, t.h, t.d], 99, false);
  // The single-device column has no ring rank to play.
  const timing = asSoloRank(ctx, t.column === 'flash_attn_varlen' ? undefined : t.solo, (group) => {
    const calls = callsFor(ctx, t, group, q, kv);
    let i = 0;
    return timeCalls(
      ctx,
      () => finishCall(calls[i++ % calls.length]!(), t.backward ? dout : null, [q, kv]),
      t,
    );
  });
  for (const x of [q, kv, dout]) x.dispose();
  return { rank: ctx.rank, ...timing, peakBytes: ctx.backend.peakBytes() };
}

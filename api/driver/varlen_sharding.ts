// Driver-mode sharding of the packed varlen families. Full tensors are (total, h, d) with the
// GLOBAL cu_seqlens; each rank gets its rows and the varlen arguments its SPMD call expects:
//   ring varlen:   the r-th 1/world of every sequence; cu_seqlens / world
//   zigzag varlen: chunks r and 2·world−1−r of 2·world of every sequence; cu_seqlens / world
//   llama3:        the r-th contiguous 1/world of the tokens; its cu_seqlens_q/k, max_seqlens and
//                  local_k_slice from llama3_flash_attn_prepare_cu_seqlens, heads_k_stride an option
//   zigzag llama3: the zigzag varlen rows and arguments, heads_k_stride an option
import { fail } from '../../runtime/errors.js';
import { checkCuSeqlens, checkMaxSeqlen, checkSeqDivisible } from '../varlen/cu_seqlens.js';
import { llama3_flash_attn_prepare_cu_seqlens } from '../varlen/llama3.js';
import type { Sharding } from './sharding.js';
import { VARLEN_POSITIONAL } from '../varlen/wrappers.js';

const range = (start: number, n: number) => Array.from({ length: n }, (_, i) => start + i);

/** Rows of `rank`: of every sequence cut into `parts` equal chunks, the chunks `chunksOf(rank)`. */
function chunkPositions(cu: Int32Array, parts: number, chunks: readonly number[]): number[] {
  const rows: number[] = [];
  for (let i = 0; i + 1 < cu.length; i++) {
    const n = (cu[i + 1]! - cu[i]!) / parts;
    for (const c of chunks) rows.push(...range(cu[i]! + c * n, n));
  }
  return rows;
}

/**
 * Token rows `rank` holds of packed sequences `cu`: the rank-th 1/world of every sequence, or
 * (zigzag) its chunks rank and 2·world−1−rank of 2·world. Lengths must divide evenly.
 */
export function varlenPositions(cu: Int32Array, rank: number, world: number, zigzag: boolean): number[] {
  const parts = zigzag ? 2 * world : world;
  return chunkPositions(cu, parts, zigzag ? [rank, parts - 1 - rank] : [rank]);
}

/** The global cu_seqlens and max_seqlen of a driver call, checked against `total` tokens. */
function globalCuSeqlens(
  fn: string,
  total: number,
  kw: Record<string, unknown>,
): { cu: Int32Array; max: number } {
  if (kw.cu_seqlens === undefined) fail('E_ARG', `${fn}: cu_seqlens is required`);
  const cu = checkCuSeqlens(fn, 'cu_seqlens', kw.cu_seqlens, total, 'the total tokens of q');
  return { cu, max: checkMaxSeqlen(fn, 'max_seqlen', kw.max_seqlen, cu, 'cu_seqlens') };
}

function perSequence(zigzag: boolean): Sharding {
  return {
    seqAxis: 0,
    consumes: ['cu_seqlens', 'max_seqlen'],
    plan(fn, total, kw, world) {
      const { cu, max } = globalCuSeqlens(fn, total, kw);
      const parts = zigzag ? 2 * world : world;
      checkSeqDivisible(fn, 'cu_seqlens', cu, parts, zigzag ? '2·world' : 'world');
      const local = { cu_seqlens: cu.map((x) => x / world), max_seqlen: Math.floor(max / world) };
      return {
        positions: (rank) => varlenPositions(cu, rank, world, zigzag),
        kwargs: () => local,
      };
    },
  };
}

export const RING_VARLEN_SHARDING = perSequence(false);
export const ZIGZAG_VARLEN_SHARDING = perSequence(true);

/** Driver mode calls zigzag llama3 like zigzag varlen, heads_k_stride a keyword (default 1). */
export const ZIGZAG_LLAMA3_SHARDING: Sharding = {
  ...ZIGZAG_VARLEN_SHARDING,
  positional: VARLEN_POSITIONAL,
  options: ['heads_k_stride'],
};

/** Driver mode calls llama3 like ring varlen (global cu_seqlens, max_seqlen), heads_k_stride a keyword (default 1). */
export const LLAMA3_SHARDING: Sharding = {
  seqAxis: 0,
  positional: VARLEN_POSITIONAL,
  options: ['heads_k_stride'],
  consumes: ['cu_seqlens', 'max_seqlen', 'heads_k_stride'],
  plan(fn, total, kw, world) {
    const { cu } = globalCuSeqlens(fn, total, kw);
    if (total % world !== 0)
      fail('E_SHAPE', `${fn}: the total tokens (${total}) must be a multiple of world (${world})`);
    const perRank = total / world;
    const causal = kw.causal === true;
    return {
      positions: (rank) => range(rank * perRank, perRank),
      kwargs: (rank) => {
        const [cuQ, cuK, maxQ, maxK, slice] = llama3_flash_attn_prepare_cu_seqlens(cu, causal, rank, world);
        return {
          cu_seqlens_q: cuQ,
          cu_seqlens_k: cuK,
          max_seqlen_q: maxQ,
          max_seqlen_k: maxK,
          heads_k_stride: kw.heads_k_stride ?? 1,
          local_k_slice: slice,
        };
      },
    };
  },
};

// How a full sequence is split over the ranks of a ring. A layout is the list of global
// sequence positions each rank holds, in local order; shard and gather follow from it.
import { fail } from '../runtime/errors.js';

export type LayoutName = 'contiguous' | 'zigzag' | 'stripe';

export const LAYOUTS: readonly LayoutName[] = ['contiguous', 'zigzag', 'stripe'];

/** Positions of `seqlen` held by `rank` of `world`, in the order the rank stores them. */
export function layoutPositions(layout: LayoutName, seqlen: number, rank: number, world: number): number[] {
  checkDivisible(layout, seqlen, world);
  const n = seqlen / world;
  switch (layout) {
    case 'contiguous':
      return Array.from({ length: n }, (_, i) => rank * n + i);
    case 'zigzag': {
      // 2·world chunks; rank r holds chunk r then chunk 2·world−1−r (balances causal work).
      const c = n / 2;
      const first = Array.from({ length: c }, (_, i) => rank * c + i);
      const second = Array.from({ length: c }, (_, i) => (2 * world - 1 - rank) * c + i);
      return [...first, ...second];
    }
    case 'stripe':
      // Token i lives on rank i mod world.
      return Array.from({ length: n }, (_, i) => i * world + rank);
    default:
      fail('E_ARG', `unknown layout '${String(layout)}'; expected one of ${LAYOUTS.join(', ')}`);
  }
}

export function checkDivisible(layout: LayoutName, seqlen: number, world: number): void {
  const parts = layout === 'zigzag' ? 2 * world : world;
  if (!Number.isInteger(seqlen) || seqlen < parts || seqlen % parts !== 0)
    fail('E_SHAPE', `${layout} layout: seqlen ${seqlen} must be a positive multiple of ${layout === 'zigzag' ? '2·world' : 'world'} (${parts})`);
}

interface Dense<T extends Float32Array | Uint16Array> {
  data: T;
  shape: readonly number[];
}

/** Rows (positions) along `axis` of a C-order tensor, copied in the given order. */
function takeRows<T extends Float32Array | Uint16Array>(t: Dense<T>, axis: number, positions: readonly number[]): T {
  const outer = t.shape.slice(0, axis).reduce((a, b) => a * b, 1);
  const len = t.shape[axis]!;
  const inner = t.shape.slice(axis + 1).reduce((a, b) => a * b, 1);
  const out = new (t.data.constructor as { new (n: number): T })(outer * positions.length * inner);
  for (let o = 0; o < outer; o++)
    positions.forEach((p, i) => {
      const src = (o * len + p) * inner;
      out.set(t.data.subarray(src, src + inner), (o * positions.length + i) * inner);
    });
  return out;
}

/** The shard of a full tensor (C order) that `rank` holds, cutting the sequence `axis`. */
export function shard<T extends Float32Array | Uint16Array>(layout: LayoutName, t: Dense<T>, axis: number, rank: number, world: number): Dense<T> {
  const positions = layoutPositions(layout, t.shape[axis]!, rank, world);
  const shape = [...t.shape];
  shape[axis] = positions.length;
  return { data: takeRows(t, axis, positions), shape };
}

/** Reassembles full tensors from every rank's shard (inverse of shard). */
export function gather<T extends Float32Array | Uint16Array>(layout: LayoutName, shards: readonly Dense<T>[], axis: number): Dense<T> {
  const world = shards.length;
  const first = shards[0]!;
  const local = first.shape[axis]!;
  const shape = [...first.shape];
  shape[axis] = local * world;
  const outer = shape.slice(0, axis).reduce((a, b) => a * b, 1);
  const inner = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
  const out = new (first.data.constructor as { new (n: number): T })(outer * shape[axis]! * inner);
  shards.forEach((s, rank) => {
    const positions = layoutPositions(layout, shape[axis]!, rank, world);
    for (let o = 0; o < outer; o++)
      positions.forEach((p, i) => {
        const src = (o * local + i) * inner;
        out.set(s.data.subarray(src, src + inner), (o * shape[axis]! + p) * inner);
      });
  });
  return { data: out, shape };
}

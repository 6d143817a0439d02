// How a full sequence is split over the ranks of a ring. A layout is the list of global
// sequence positions each rank holds, in local order; shard and gather follow from it.
import { fail } from '../../runtime/errors.js';
import type { RingImpl } from '../types.js';

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
    fail(
      'E_SHAPE',
      `${layout} layout: seqlen ${seqlen} must be a positive multiple of ${layout === 'zigzag' ? '2·world' : 'world'} (${parts})`,
    );
}

/** The layout each ring variant of usp_attn_* deals the sequence over its ring ranks with. */
export const RING_IMPL_LAYOUT: Record<RingImpl, LayoutName> = {
  zigzag: 'zigzag',
  ring: 'contiguous',
  stripe: 'stripe',
};

/**
 * usp_attn_*: positions of `rank` = ring_index · ulysses + ulysses_index, in local order: the ring
 * shard of ring_index in `ringLayout` (a ring of one holds the whole sequence, in order), cut
 * into `ulysses` contiguous pieces, piece ulysses_index.
 */
export function uspPositions(
  ringLayout: LayoutName,
  seqlen: number,
  rank: number,
  ulysses: number,
  ring: number,
): number[] {
  checkUspDivisible(ringLayout, seqlen, ulysses, ring);
  const shard =
    ring === 1
      ? Array.from({ length: seqlen }, (_, i) => i)
      : layoutPositions(ringLayout, seqlen, Math.floor(rank / ulysses), ring);
  const n = shard.length / ulysses,
    u = rank % ulysses;
  return shard.slice(u * n, (u + 1) * n);
}

export function checkUspDivisible(
  ringLayout: LayoutName,
  seqlen: number,
  ulysses: number,
  ring: number,
): void {
  if (ring > 1) checkDivisible(ringLayout, seqlen, ring);
  if (!Number.isInteger(seqlen) || seqlen < 1 || (seqlen / ring) % ulysses !== 0)
    fail(
      'E_SHAPE',
      `usp layout: seqlen ${seqlen} must be a positive multiple of ring × ulysses (${ring} × ${ulysses}): each ring shard is cut into ulysses equal pieces`,
    );
}

export interface Dense<T extends Float32Array | Uint16Array> {
  data: T;
  shape: readonly number[];
}

const prod = (xs: readonly number[]) => xs.reduce((a, b) => a * b, 1);

/** Rows `positions` along `axis` of a C-order tensor, copied in that order. */
export function takeRows<T extends Float32Array | Uint16Array>(
  t: Dense<T>,
  axis: number,
  positions: readonly number[],
): Dense<T> {
  const outer = prod(t.shape.slice(0, axis));
  const len = t.shape[axis]!;
  const inner = prod(t.shape.slice(axis + 1));
  const out = new (t.data.constructor as { new (n: number): T })(outer * positions.length * inner);
  for (let o = 0; o < outer; o++)
    positions.forEach((p, i) => {
      const src = (o * len + p) * inner;
      out.set(t.data.subarray(src, src + inner), (o * positions.length + i) * inner);
    });
  const shape = [...t.shape];
  shape[axis] = positions.length;
  return { data: out, shape };
}

/** Inverse of takeRows over every shard: the rows of shards[i] go to positions[i], `total` rows in all. */
export function placeRows<T extends Float32Array | Uint16Array>(
  shards: readonly Dense<T>[],
  axis: number,
  positions: readonly (readonly number[])[],
  total: number,
): Dense<T> {
  const first = shards[0]!;
  const shape = [...first.shape];
  shape[axis] = total;
  const outer = prod(shape.slice(0, axis));
  const inner = prod(shape.slice(axis + 1));
  const out = new (first.data.constructor as { new (n: number): T })(outer * total * inner);
  shards.forEach((s, r) => {
    const pos = positions[r]!;
    for (let o = 0; o < outer; o++)
      pos.forEach((p, i) => {
        const src = (o * pos.length + i) * inner;
        out.set(s.data.subarray(src, src + inner), (o * total + p) * inner);
      });
  });
  return { data: out, shape };
}

/** The shard of a full tensor (C order) that `rank` holds, cutting the sequence `axis`. */
export function shard<T extends Float32Array | Uint16Array>(
  layout: LayoutName,
  t: Dense<T>,
  axis: number,
  rank: number,
  world: number,
): Dense<T> {
  return takeRows(t, axis, layoutPositions(layout, t.shape[axis]!, rank, world));
}

/** Reassembles full tensors from every rank's shard (inverse of shard). */
export function gather<T extends Float32Array | Uint16Array>(
  layout: LayoutName,
  shards: readonly Dense<T>[],
  axis: number,
): Dense<T> {
  const world = shards.length;
  const total = shards[0]!.shape[axis]! * world;
  return placeRows(
    shards,
    axis,
    shards.map((_, r) => layoutPositions(layout, total, r, world)),
    total,
  );
}

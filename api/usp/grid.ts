// The 2-D grid of unified sequence parallelism: a group of ulysses × ring members, member
// i = ring_index · ulysses + ulysses_index, so a Ulysses group is `ulysses` consecutive members
// (the fast links of one node in yunchang's default placement) and a ring group takes one member
// of every Ulysses group. The degrees and the ring variant come from the call's keywords.
import type { Group } from '../../runtime/comm.js';
import { fail } from '../../runtime/errors.js';
import { describeValue } from '../../runtime/tensor.js';
import type { RingImpl } from '../types.js';

export interface UspDegrees {
  ulysses: number;
  ring: number;
  ringImpl: RingImpl;
}

export const RING_IMPLS: readonly RingImpl[] = ['zigzag', 'ring', 'stripe'];
/** yunchang's ring_impl_type spellings of the same variants. */
const ALIASES: Record<string, RingImpl> = { basic: 'ring', strip: 'stripe' };

function degree(fn: string, kw: Record<string, unknown>, name: string): number | null {
  const x = kw[name];
  if (x === undefined || x === null) return null;
  if (typeof x !== 'number' || !Number.isInteger(x) || x < 1)
    fail('E_ARG', `${fn}: ${name} must be a positive integer, got ${describeValue(x)}`);
  return x;
}

/**
 * The call's `ulysses`, `ring` and `ring_impl` for a group of `size`: one degree given, the other
 * is size / it; neither, ulysses = size (pure head parallel). ring_impl defaults to 'zigzag'.
 */
export function uspDegrees(fn: string, kw: Record<string, unknown>, size: number): UspDegrees {
  let ulysses = degree(fn, kw, 'ulysses'),
    ring = degree(fn, kw, 'ring');
  if (ulysses === null && ring === null) [ulysses, ring] = [size, 1];
  else if (ring === null) {
    if (size % ulysses! !== 0)
      fail('E_ARG', `${fn}: ulysses (${ulysses}) must divide the group size (${size})`);
    ring = size / ulysses!;
  } else if (ulysses === null) {
    if (size % ring !== 0) fail('E_ARG', `${fn}: ring (${ring}) must divide the group size (${size})`);
    ulysses = size / ring;
  }
  if (ulysses! * ring !== size)
    fail(
      'E_ARG',
      `${fn}: ulysses (${ulysses}) × ring (${ring}) = ${ulysses! * ring} must equal the group size (${size})`,
    );
  const raw = kw.ring_impl ?? 'zigzag';
  const ringImpl =
    typeof raw === 'string' && (RING_IMPLS as readonly string[]).includes(raw)
      ? (raw as RingImpl)
      : typeof raw === 'string' && Object.hasOwn(ALIASES, raw)
        ? ALIASES[raw]!
        : fail(
            'E_ARG',
            `${fn}: ring_impl must be one of ${RING_IMPLS.map((x) => `'${x}'`).join(', ')} (or yunchang's 'basic', 'strip'), got ${describeValue(raw)}`,
          );
  return { ulysses: ulysses!, ring, ringImpl };
}

export interface UspGrid {
  /** This member's Ulysses group (consecutive members) and ring group (one per Ulysses group). */
  ulysses: Group;
  ring: Group;
}

/**
 * The two sub-groups of this member of `group`. Their keys extend the group's, with the degrees,
 * so every factorisation of one group has communicators of its own; a degree of 1 leaves the
 * other sub-group the group itself.
 */
export function uspGrid(group: Group, ulysses: number, ring: number): UspGrid {
  const u = group.rank % ulysses,
    r = Math.floor(group.rank / ulysses);
  // The sub-group of `n` members at(0..n-1), or the whole group where the other degree is 1.
  const sub = (whole: boolean, n: number, at: (i: number) => number, tag: string): Group => {
    if (whole) return group;
    const members = Array.from({ length: n }, (_, i) => at(i));
    return {
      ranks: members.map((i) => group.ranks[i]!),
      rank: members.indexOf(group.rank),
      size: members.length,
      key: `${group.key}/usp${ulysses}x${ring}${tag}`,
    };
  };
  return {
    ulysses: sub(ring === 1, ulysses, (i) => r * ulysses + i, `u${r}`),
    ring: sub(ulysses === 1, ring, (i) => i * ulysses + u, `r${u}`),
  };
}

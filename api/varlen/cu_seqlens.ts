// cu_seqlens of the packed varlen families: int32 offsets of every sequence in the packed
// tokens. They stay on the host and are checked once at the TS boundary; kernels only ever
// see segment tables built from them (api/varlen/segments.ts).
import { fail } from '../../runtime/errors.js';
import { checkHostView, denseData, describeValue } from '../../runtime/tensor.js';

/** An Int32Array, or a 1-d int32 ndarray ({ data, shape, stride?, offset? }). */
export type CuSeqlensLike =
  Int32Array | { data: Int32Array; shape: readonly number[]; stride?: readonly number[]; offset?: number };

/** A constructor's name for messages ('Float32Array', 'Array'), 'object' without one. */
function kindOf(x: object): string {
  const name = (Object.getPrototypeOf(x) as { constructor?: { name?: unknown } } | null)?.constructor?.name;
  return typeof name === 'string' && name !== '' ? name : 'object';
}

function describe(x: unknown): string {
  if (x === null || x === undefined) return String(x);
  if (typeof x !== 'object') return typeof x;
  const data = (x as { data?: unknown }).data;
  if (data !== undefined && data !== null && typeof data === 'object' && 'shape' in x)
    return `an ndarray over ${kindOf(data)}`;
  return kindOf(x);
}

/**
 * The values of a cu_seqlens argument (a copy); E_DTYPE unless it is int32. An ndarray is
 * checked like any host tensor (api/driver/host.ts): 1-d, exact data length or a view inside its data.
 */
export function toInt32(fn: string, name: string, x: unknown): Int32Array {
  if (x instanceof Int32Array) return x.slice();
  const nd = x as { data?: unknown; shape?: unknown; stride?: unknown; offset?: unknown } | null;
  if (nd && typeof nd === 'object' && nd.data instanceof Int32Array && Array.isArray(nd.shape)) {
    const view = checkHostView(`${fn}: ${name}`, nd, nd.data.length);
    if (view.shape.length !== 1)
      fail('E_SHAPE', `${fn}: ${name} must be 1-d, got shape (${view.shape.join(', ')})`);
    const values = denseData(nd.data, view);
    return values === nd.data ? values.slice() : values;
  }
  fail('E_DTYPE', `${fn}: ${name} must be int32 (an Int32Array or an int32 ndarray), got ${describe(x)}`);
}

/**
 * Checks cu_seqlens: at least one sequence, starts at 0, non-decreasing, and ends at `total`
 * (`end` names it: 'the total tokens of q'; null skips that check). Returns the values.
 */
export function checkCuSeqlens(
  fn: string,
  name: string,
  x: unknown,
  total: number | null,
  end: string,
): Int32Array {
  const cu = toInt32(fn, name, x);
  if (cu.length < 2)
    fail('E_SHAPE', `${fn}: ${name} must hold at least 2 entries (0 and the total), got ${cu.length}`);
  if (cu[0] !== 0) fail('E_ARG', `${fn}: ${name} must start at 0, got ${cu[0]}`);
  for (let i = 1; i < cu.length; i++)
    if (cu[i]! < cu[i - 1]!)
      fail('E_ARG', `${fn}: ${name} must be non-decreasing, got ${cu[i]} after ${cu[i - 1]} at index ${i}`);
  const last = cu[cu.length - 1]!;
  if (total !== null && last !== total)
    fail('E_SHAPE', `${fn}: ${name} must end at ${end} (${total}), got ${last}`);
  return cu;
}

export function seqLengths(cu: Int32Array): number[] {
  return Array.from({ length: cu.length - 1 }, (_, i) => cu[i + 1]! - cu[i]!);
}

/** The longest sequence of cu_seqlens (0 when there is none): its max_seqlen. */
export function maxSeqLength(cu: Int32Array): number {
  return Math.max(0, ...seqLengths(cu));
}

/** Every sequence must split into `parts` equal pieces (`why` says why, e.g. '2·world'). */
export function checkSeqDivisible(
  fn: string,
  name: string,
  cu: Int32Array,
  parts: number,
  why: string,
): void {
  seqLengths(cu).forEach((len, i) => {
    if (len % parts !== 0)
      fail(
        'E_SHAPE',
        `${fn}: sequence ${i} of ${name} has length ${len}, which must be a multiple of ${parts} (${why})`,
      );
  });
}

/** max_seqlen must be an integer covering the longest sequence of `cu`; returns it. */
export function checkMaxSeqlen(
  fn: string,
  name: string,
  value: unknown,
  cu: Int32Array,
  cuName: string,
): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0)
    fail(
      'E_ARG',
      `${fn}: ${name} must be a non-negative integer, got ${value === undefined ? 'nothing' : describeValue(value)}`,
    );
  const longest = maxSeqLength(cu);
  if (value < longest)
    fail('E_ARG', `${fn}: ${name} (${value}) must cover the longest sequence of ${cuName} (${longest})`);
  return value;
}

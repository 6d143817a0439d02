// Python-style arguments: positional in the order of the Python signature, or a trailing
// options object standing for keyword arguments; both may be mixed (positional first).
import type { Group } from '../runtime/comm.js';
import { fail } from '../runtime/errors.js';
import { currentContext } from '../runtime/context.js';
import { checkHostView, denseData, DeviceTensor, describeValue } from '../runtime/tensor.js';
import type { AlibiSlopesArg } from './types.js';
import type { RingOptions } from './variant.js';

/** Keyword arguments of the ring functions (Python spelling). */
export interface AttnKwargs {
  dropout_p?: number;
  softmax_scale?: number | null;
  causal?: boolean;
  window_size?: readonly [number, number] | null;
  softcap?: number;
  /** fp32 slopes, (nheads) or (batch, nheads): a Float32Array, number[], float32 ndarray or DeviceTensor. */
  alibi_slopes?: AlibiSlopesArg | null;
  /** The dropout mask's seed (a non-negative safe integer); without it each call draws a fresh one. */
  dropout_seed?: number | null;
  deterministic?: boolean;
  return_attn_probs?: boolean;
  /** A group from ctx.newGroup(ranks), or the ranks themselves. */
  group?: Group | readonly number[] | null;
}

/** The positional order after the tensors, as in ring_flash_attn_func(q, k, v, ...). */
export const ATTN_POSITIONAL = [
  'dropout_p',
  'softmax_scale',
  'causal',
  'window_size',
  'alibi_slopes',
  'deterministic',
  'return_attn_probs',
  'group',
] as const;

/** flash-attn 2.x's single-device order: softcap sits after window_size, and there is no group. */
export const FLASH_POSITIONAL = [
  'dropout_p',
  'softmax_scale',
  'causal',
  'window_size',
  'softcap',
  'alibi_slopes',
  'deterministic',
  'return_attn_probs',
] as const;

export interface AttnArgs {
  softmaxScale: number | null;
  causal: boolean;
  /** flash-attn's window_size as given ([-1, -1]: no window). */
  window: readonly [number, number];
  softcap: number;
  alibi: AlibiSlopes | null;
  dropoutP: number;
  /** null: a fresh seed per call (api/wrappers.ts draws it). */
  dropoutSeed: number | null;
  returnAttnProbs: boolean;
  deterministic: boolean;
  group: Group | readonly number[] | null;
}

/**
 * The options every family hands its kernels, from a call's parsed arguments: the softmax scale
 * (default 1/√head_dim), the causal mask and the backward's determinism.
 */
export function ringOptions(a: AttnArgs, headDim: number): RingOptions {
  return {
    softmaxScale: a.softmaxScale ?? 1 / Math.sqrt(headDim),
    causal: a.causal,
    deterministic: a.deterministic,
    // As flash-attn: causal is the window's right side 0.
    window: [a.window[0], a.causal ? 0 : a.window[1]],
    softcap: a.softcap,
    alibi: a.alibi,
    dropoutP: a.dropoutP,
    dropoutSeed: a.dropoutSeed ?? undefined,
  };
}

/** ALiBi slopes on the host, C order: shape (nheads) or (batch, nheads). */
export interface AlibiSlopes {
  values: Float32Array;
  shape: readonly number[];
}

/**
 * alibi_slopes as flash-attn takes them: fp32, (nheads) or (batch, nheads). Host arrays (a
 * Float32Array, number[], float32 ndarray) or a float32 DeviceTensor, whose values are read back.
 */
function parseAlibi(fn: string, x: unknown): AlibiSlopes | null {
  if (x === null || x === undefined) return null;
  let values: Float32Array, shape: readonly number[];
  if (x instanceof DeviceTensor) {
    if (x.dtype !== 'float32') fail('E_DTYPE', `${fn}: alibi_slopes must be float32, got ${x.dtype}`);
    values = currentContext().backend.download(x) as Float32Array;
    shape = x.shape;
  } else if (x instanceof Float32Array) [values, shape] = [x.slice(), [x.length]];
  else if (Array.isArray(x) && x.every((v) => typeof v === 'number' && Number.isFinite(v)))
    [values, shape] = [Float32Array.from(x as number[]), [x.length]];
  else if (typeof x === 'object' && (x as { data?: unknown }).data instanceof Float32Array) {
    const nd = x as { data: Float32Array; shape: readonly number[] };
    const view = checkHostView(`${fn}: alibi_slopes`, nd as never, nd.data.length);
    [values, shape] = [Float32Array.from(denseData(nd.data, view)), view.shape];
  } else
    fail(
      'E_DTYPE',
      `${fn}: alibi_slopes must be float32 (a Float32Array, a list of numbers, a float32 ndarray or DeviceTensor), got ${describeValue(x)}`,
    );
  if (shape.length !== 1 && shape.length !== 2)
    fail(
      'E_SHAPE',
      `${fn}: alibi_slopes must be (nheads) or (batch, nheads), got shape (${shape.join(', ')})`,
    );
  if (!values.every(Number.isFinite)) fail('E_ARG', `${fn}: alibi_slopes must be finite`);
  return { values, shape: [...shape] };
}

function isPlainObject(x: unknown): x is Record<string, unknown> {
  if (x === null || typeof x !== 'object' || Array.isArray(x) || x instanceof DeviceTensor) return false;
  const proto = Object.getPrototypeOf(x);
  return proto === Object.prototype || proto === null;
}

function isGroup(x: unknown): boolean {
  return isPlainObject(x) && Array.isArray(x.ranks) && typeof x.key === 'string';
}

/** Plain objects that are values, not keywords: an int32 ndarray literal, a { start, stop } slice. */
function isValueObject(x: Record<string, unknown>): boolean {
  if ('data' in x && 'shape' in x) return true;
  const keys = Object.keys(x);
  return (
    keys.includes('start') &&
    keys.includes('stop') &&
    keys.every((k) => k === 'start' || k === 'stop' || k === 'step')
  );
}

/**
 * Splits `rest` into keyword arguments: the trailing plain object (if any) is the kwargs, the
 * values before it fill `positional` in order. A keyword given both ways is an error.
 */
export function collectKwargs(
  fn: string,
  rest: readonly unknown[],
  positional: readonly string[],
  allowed: ReadonlySet<string>,
): Record<string, unknown> {
  let pos = rest;
  let kw: Record<string, unknown> = {};
  const last = rest[rest.length - 1];
  if (rest.length > 0 && isPlainObject(last) && !isGroup(last) && !isValueObject(last)) {
    kw = { ...last };
    pos = rest.slice(0, -1);
  }
  if (pos.length > positional.length)
    fail('E_ARG', `${fn}: takes at most ${positional.length} arguments after the tensors, got ${pos.length}`);
  for (const k of Object.keys(kw)) if (!allowed.has(k)) fail('E_ARG', `${fn}: unknown option '${k}'`);
  pos.forEach((value, i) => {
    const name = positional[i]!;
    if (value === undefined) return;
    if (name in kw) fail('E_ARG', `${fn}: ${name} given both by position and as an option`);
    kw[name] = value;
  });
  return kw;
}

/**
 * Validates the keyword arguments shared by every attention function; `positional` is the
 * function's Python order after the tensors (its names are keywords too, as in Python),
 * `extraKeys` keyword-only additions (driver mode's dtype). Returns the parsed values and the
 * raw keyword record (the family's own arguments, e.g. cu_seqlens, included).
 */
export function parseAttnArgs(
  fn: string,
  rest: readonly unknown[],
  positional: readonly string[] = ATTN_POSITIONAL,
  extraKeys: readonly string[] = [],
): AttnArgs & { kw: Record<string, unknown> } {
  const keys = new Set<string>([
    ...ATTN_POSITIONAL,
    ...FLASH_POSITIONAL,
    ...positional,
    ...extraKeys,
    'dropout_seed',
  ]);
  if (!positional.includes('group')) keys.delete('group');
  const kw = collectKwargs(fn, rest, positional, keys);
  const dropout = kw.dropout_p ?? 0;
  if (typeof dropout !== 'number' || !(dropout >= 0 && dropout < 1))
    fail('E_ARG', `${fn}: dropout_p must be a number in [0, 1), got ${describeValue(dropout)}`);
  const seed = kw.dropout_seed ?? null;
  if (seed !== null && !(typeof seed === 'number' && Number.isSafeInteger(seed) && seed >= 0))
    fail(
      'E_ARG',
      `${fn}: dropout_seed must be a non-negative safe integer or null, got ${describeValue(seed)}`,
    );
  const scale = kw.softmax_scale ?? null;
  if (scale !== null && (typeof scale !== 'number' || !Number.isFinite(scale) || scale <= 0))
    fail(
      'E_ARG',
      `${fn}: softmax_scale must be a positive finite number or null, got ${describeValue(scale)}`,
    );
  const causal = kw.causal ?? false;
  if (typeof causal !== 'boolean')
    fail('E_ARG', `${fn}: causal must be a boolean, got ${describeValue(causal)}`);
  const window = kw.window_size ?? [-1, -1];
  if (!Array.isArray(window) || window.length !== 2 || !window.every((w) => Number.isInteger(w)))
    fail(
      'E_ARG',
      `${fn}: window_size must be a pair of integers, got ${Array.isArray(window) ? `(${window.map(describeValue).join(', ')})` : describeValue(window)}`,
    );
  if (window.some((w) => w < -1 || w > 2 ** 31 - 1))
    fail(
      'E_ARG',
      `${fn}: window_size sides must be in [-1, 2^31 - 1] (-1: unbounded), got (${window.join(', ')})`,
    );
  const softcap = kw.softcap ?? 0;
  if (typeof softcap !== 'number' || !Number.isFinite(softcap) || softcap < 0)
    fail('E_ARG', `${fn}: softcap must be a finite number >= 0, got ${describeValue(softcap)}`);
  const alibi = parseAlibi(fn, kw.alibi_slopes);
  const deterministic = kw.deterministic ?? false;
  if (typeof deterministic !== 'boolean')
    fail('E_ARG', `${fn}: deterministic must be a boolean, got ${describeValue(deterministic)}`);
  const ret = kw.return_attn_probs ?? false;
  if (typeof ret !== 'boolean')
    fail('E_ARG', `${fn}: return_attn_probs must be a boolean, got ${describeValue(ret)}`);
  const group = (kw.group ?? null) as AttnArgs['group'];
  if (group !== null && !Array.isArray(group) && !isGroup(group))
    fail(
      'E_ARG',
      `${fn}: group must come from ctx.newGroup(ranks) or be a list of ranks, got ${describeValue(group)}`,
    );
  return {
    softmaxScale: scale as number | null,
    causal,
    window: [window[0], window[1]] as const,
    softcap,
    alibi,
    dropoutP: dropout,
    dropoutSeed: seed as number | null,
    returnAttnProbs: ret,
    deterministic,
    group,
    kw,
  };
}

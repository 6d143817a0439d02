// Shape and dtype checks at the TS boundary, before any kernel launch. Messages name the
// argument, what was expected and what came; tests assert on the codes.
import { fail } from '../runtime/errors.js';
import { DeviceTensor } from '../runtime/tensor.js';
import type { Packing } from './registry.js';

export const MAX_HEAD_DIM = 256;

/** The tensor arguments of each packing, as messages name them. */
export const TENSOR_NAMES: Record<Packing, readonly string[]> = { func: ['q', 'k', 'v'], kvpacked: ['q', 'kv'], qkvpacked: ['qkv'] };

export function checkTensor(fn: string, name: string, t: unknown, ndim: number, layout: string): DeviceTensor {
  if (!(t instanceof DeviceTensor))
    fail('E_ARG', `${fn}: ${name} must be a DeviceTensor (ctx.tensor(...)), got ${t === null ? 'null' : typeof t}`);
  if (t.ndim !== ndim) fail('E_SHAPE', `${fn}: ${name} must be ${ndim}-d ${layout}, got shape (${t.shape.join(', ')})`);
  if (t.strides[ndim - 1] !== 1) fail('E_SHAPE', `${fn}: ${name} must have a contiguous head_dim axis`);
  return t;
}

/**
 * q (b, s, h, d), k/v (b, s_k, h_k, d): the flash-attn 2.x contract; packed varlen tensors
 * (total, h, d) have no batch axis and are checked the same way.
 */
export function checkQkv(fn: string, q: DeviceTensor, k: DeviceTensor, v: DeviceTensor): void {
  const n = q.ndim;
  const [h, d] = q.shape.slice(-2) as [number, number];
  const [hk, dk] = k.shape.slice(-2) as [number, number];
  if (k.shape.join() !== v.shape.join()) fail('E_SHAPE', `${fn}: k (${k.shape.join(', ')}) and v (${v.shape.join(', ')}) must have the same shape`);
  if (n === 4 && k.shape[0] !== q.shape[0]) fail('E_SHAPE', `${fn}: k batch ${k.shape[0]} != q batch ${q.shape[0]}`);
  if (dk !== d) fail('E_SHAPE', `${fn}: k head_dim ${dk} != q head_dim ${d}`);
  if (hk < 1 || h % hk !== 0) fail('E_SHAPE', `${fn}: q heads (${h}) must be a multiple of k/v heads (${hk})`);
  if (d < 1 || d > MAX_HEAD_DIM) fail('E_UNSUPPORTED', `${fn}: head_dim ${d} is not supported (1..${MAX_HEAD_DIM})`);
  if (q.dtype !== k.dtype || q.dtype !== v.dtype) fail('E_DTYPE', `${fn}: q, k, v must share a dtype, got ${q.dtype}, ${k.dtype}, ${v.dtype}`);
  if ([...q.shape, ...k.shape].some((x) => x < 1)) fail('E_SHAPE', `${fn}: empty tensors are not supported`);
}

/**
 * Driver mode's full-sequence shape checks, so a bad call fails before any worker runs. Packed
 * varlen tensors (total, h, d) have no batch axis: they are checked as a batch of one.
 */
export function checkHostShapes(fn: string, packing: Packing, shapes: readonly (readonly number[])[], sameSeqlen: boolean, varlen: boolean): void {
  const lead = varlen ? 0 : 1;
  const want = (packing === 'func' ? [3, 3, 3] : packing === 'kvpacked' ? [3, 4] : [4]).map((n) => n + lead);
  shapes.forEach((x, i) => {
    if (x.length !== want[i]) fail('E_SHAPE', `${fn}: ${TENSOR_NAMES[packing][i]} must be ${want[i]}-d, got shape (${x.join(', ')})`);
  });
  const full = shapes.map((x) => (varlen ? [1, ...x] : [...x]));
  const P = 1 + lead; // axis of (k, v) / (q, k, v) in the caller's packed tensors
  let q: number[], k: number[], v: number[];
  if (packing === 'func') [q, k, v] = [full[0]!, full[1]!, full[2]!];
  else if (packing === 'kvpacked') {
    if (full[1]![2] !== 2) fail('E_SHAPE', `${fn}: kv axis ${P} must be 2 (k, v), got ${full[1]![2]}`);
    q = full[0]!;
    k = v = [full[1]![0]!, full[1]![1]!, full[1]![3]!, full[1]![4]!];
  } else {
    if (full[0]![2] !== 3) fail('E_SHAPE', `${fn}: qkv axis ${P} must be 3 (q, k, v), got ${full[0]![2]}`);
    const s = full[0]!;
    q = k = v = [s[0]!, s[1]!, s[3]!, s[4]!];
  }
  const show = (x: number[]) => (varlen ? x.slice(1) : x).join(', ');
  if (k.join() !== v.join()) fail('E_SHAPE', `${fn}: k (${show(k)}) and v (${show(v)}) must have the same shape`);
  if (q[0] !== k[0]) fail('E_SHAPE', `${fn}: k batch ${k[0]} != q batch ${q[0]}`);
  if (sameSeqlen && q[1] !== k[1]) fail('E_SHAPE', varlen ? `${fn}: k total_tokens ${k[1]} != q total_tokens ${q[1]}` : `${fn}: k seqlen ${k[1]} != q seqlen ${q[1]}`);
  if (q[3] !== k[3]) fail('E_SHAPE', `${fn}: k head_dim ${k[3]} != q head_dim ${q[3]}`);
  if ([...q, ...k].some((n) => n < 1)) fail('E_SHAPE', `${fn}: empty tensors are not supported (q (${show(q)}), k (${show(k)}))`);
  if (q[2]! % k[2]! !== 0) fail('E_SHAPE', `${fn}: q heads (${q[2]}) must be a multiple of k/v heads (${k[2]})`);
  if (q[3]! > MAX_HEAD_DIM) fail('E_UNSUPPORTED', `${fn}: head_dim ${q[3]} is not supported (1..${MAX_HEAD_DIM})`);
}

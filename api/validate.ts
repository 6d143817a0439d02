// Shape and dtype checks at the TS boundary, before any kernel launch. Messages name the
// argument, what was expected and what came; tests assert on the codes.
import { fail } from '../runtime/errors.js';
import { DeviceTensor } from '../runtime/tensor.js';

export const MAX_HEAD_DIM = 256;

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

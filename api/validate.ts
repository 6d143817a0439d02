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

/** q (b, s, h, d), k/v (b, s_k, h_k, d): the flash-attn 2.x contract. */
export function checkQkv(fn: string, q: DeviceTensor, k: DeviceTensor, v: DeviceTensor): void {
  const [b, , h, d] = q.shape as [number, number, number, number];
  const [bk, sk, hk, dk] = k.shape as [number, number, number, number];
  if (k.shape.join() !== v.shape.join()) fail('E_SHAPE', `${fn}: k (${k.shape.join(', ')}) and v (${v.shape.join(', ')}) must have the same shape`);
  if (bk !== b) fail('E_SHAPE', `${fn}: k batch ${bk} != q batch ${b}`);
  if (dk !== d) fail('E_SHAPE', `${fn}: k head_dim ${dk} != q head_dim ${d}`);
  if (hk < 1 || h % hk !== 0) fail('E_SHAPE', `${fn}: q heads (${h}) must be a multiple of k/v heads (${hk})`);
  if (d < 1 || d > MAX_HEAD_DIM) fail('E_UNSUPPORTED', `${fn}: head_dim ${d} is not supported (1..${MAX_HEAD_DIM})`);
  if (q.dtype !== k.dtype || q.dtype !== v.dtype) fail('E_DTYPE', `${fn}: q, k, v must share a dtype, got ${q.dtype}, ${k.dtype}, ${v.dtype}`);
  if (sk < 1 || q.shape[1]! < 1 || b < 1) fail('E_SHAPE', `${fn}: empty tensors are not supported`);
}

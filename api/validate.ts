// Shape and dtype checks at the TS boundary, before any kernel launch. Messages name the
// argument, what was expected and what came; tests assert on the codes.
import { fail } from '../runtime/errors.js';
import { DeviceTensor } from '../runtime/tensor.js';
import type { Packing } from './driver/registry.js';

export const MAX_HEAD_DIM = 256;

/** The tensor arguments of each packing, as messages name them. */
export const TENSOR_NAMES: Record<Packing, readonly string[]> = {
  func: ['q', 'k', 'v'],
  kvpacked: ['q', 'kv'],
  qkvpacked: ['qkv'],
};

export function checkTensor(
  fn: string,
  name: string,
  t: unknown,
  ndim: number,
  layout: string,
): DeviceTensor {
  if (!(t instanceof DeviceTensor))
    fail(
      'E_ARG',
      `${fn}: ${name} must be a DeviceTensor (ctx.tensor(...)), got ${t === null ? 'null' : typeof t}`,
    );
  if (t.ndim !== ndim)
    fail('E_SHAPE', `${fn}: ${name} must be ${ndim}-d ${layout}, got shape (${t.shape.join(', ')})`);
  if (t.strides[ndim - 1] !== 1) fail('E_SHAPE', `${fn}: ${name} must have a contiguous head_dim axis`);
  return t;
}

/**
 * The one shape rule of an attention call, over plain shapes: q (b, s, h, d), k and v
 * (b, s_k, h_k, d), the flash-attn 2.x contract. Packed varlen shapes (total, h, d) have no batch
 * axis (`varlen`); `sameSeqlen` asks for s_k = s (the ring shards, and q/k sharing cu_seqlens).
 * SPMD calls check their tensors' shapes with it, driver mode its full tensors' before any worker runs.
 */
export function checkAttnShapes(
  fn: string,
  q: readonly number[],
  k: readonly number[],
  v: readonly number[],
  o: { varlen: boolean; sameSeqlen: boolean },
): void {
  const full = (x: readonly number[]) => (o.varlen ? [1, ...x] : [...x]);
  const [fq, fk] = [full(q), full(k)];
  const show = (x: readonly number[]) => x.join(', ');
  if (k.join() !== v.join())
    fail('E_SHAPE', `${fn}: k (${show(k)}) and v (${show(v)}) must have the same shape`);
  if (fq[0] !== fk[0]) fail('E_SHAPE', `${fn}: k batch ${fk[0]} != q batch ${fq[0]}`);
  if (o.sameSeqlen && fq[1] !== fk[1])
    fail(
      'E_SHAPE',
      o.varlen
        ? `${fn}: k total_tokens ${fk[1]} != q total_tokens ${fq[1]}`
        : `${fn}: k seqlen ${fk[1]} != q seqlen ${fq[1]}`,
    );
  if (fq[3] !== fk[3]) fail('E_SHAPE', `${fn}: k head_dim ${fk[3]} != q head_dim ${fq[3]}`);
  if ([...fq, ...fk].some((n) => n < 1))
    fail('E_SHAPE', `${fn}: empty tensors are not supported (q (${show(q)}), k (${show(k)}))`);
  if (fq[2]! % fk[2]! !== 0)
    fail('E_SHAPE', `${fn}: q heads (${fq[2]}) must be a multiple of k/v heads (${fk[2]})`);
  if (fq[3]! > MAX_HEAD_DIM)
    fail('E_UNSUPPORTED', `${fn}: head_dim ${fq[3]} is not supported (1..${MAX_HEAD_DIM})`);
}

/** checkAttnShapes over an SPMD call's tensors (4-d, or 3-d packed varlen), and one dtype for all three. */
export function checkQkv(
  fn: string,
  q: DeviceTensor,
  k: DeviceTensor,
  v: DeviceTensor,
  sameSeqlen = false,
): void {
  checkAttnShapes(fn, q.shape, k.shape, v.shape, { varlen: q.ndim === 3, sameSeqlen });
  if (q.dtype !== k.dtype || q.dtype !== v.dtype)
    fail('E_DTYPE', `${fn}: q, k, v must share a dtype, got ${q.dtype}, ${k.dtype}, ${v.dtype}`);
}

/**
 * Driver mode's full-sequence checks: each tensor's rank for its packing, the packed axis, then
 * checkAttnShapes over the unpacked q, k, v shapes.
 */
export function checkHostShapes(
  fn: string,
  packing: Packing,
  shapes: readonly (readonly number[])[],
  sameSeqlen: boolean,
  varlen: boolean,
): void {
  const lead = varlen ? 0 : 1;
  const want = (packing === 'func' ? [3, 3, 3] : packing === 'kvpacked' ? [3, 4] : [4]).map((n) => n + lead);
  shapes.forEach((x, i) => {
    if (x.length !== want[i])
      fail('E_SHAPE', `${fn}: ${TENSOR_NAMES[packing][i]} must be ${want[i]}-d, got shape (${x.join(', ')})`);
  });
  const P = 1 + lead; // axis of (k, v) / (q, k, v) in the caller's packed tensors
  const unpack = (x: readonly number[]) => [...x.slice(0, P), ...x.slice(P + 1)];
  let q: readonly number[], k: readonly number[], v: readonly number[];
  if (packing === 'func') [q, k, v] = [shapes[0]!, shapes[1]!, shapes[2]!];
  else if (packing === 'kvpacked') {
    if (shapes[1]![P] !== 2) fail('E_SHAPE', `${fn}: kv axis ${P} must be 2 (k, v), got ${shapes[1]![P]}`);
    q = shapes[0]!;
    k = v = unpack(shapes[1]!);
  } else {
    if (shapes[0]![P] !== 3)
      fail('E_SHAPE', `${fn}: qkv axis ${P} must be 3 (q, k, v), got ${shapes[0]![P]}`);
    q = k = v = unpack(shapes[0]!);
  }
  checkAttnShapes(fn, q, k, v, { varlen, sameSeqlen });
}

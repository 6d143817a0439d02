// Helpers Python users of ring-flash-attention reach for, with their Python names.
import ndarray from 'ndarray';
import {
  RING_IMPL_LAYOUT,
  shard,
  takeRows,
  uspPositions,
  type Dense,
  type LayoutName,
} from '../api/driver/layouts.js';
import { uspDegrees } from '../api/usp/grid.js';
import type { RingImpl } from '../api/types.js';
import { currentContext } from '../runtime/context.js';
import { fail } from '../runtime/errors.js';
import { describeValue, type DeviceTensor } from '../runtime/tensor.js';
import { toDense } from '../api/driver/host.js';
import { checkCuSeqlens, checkSeqDivisible } from '../api/varlen/cu_seqlens.js';
import { varlenPositions } from '../api/driver/varlen_sharding.js';

type HostNd = ndarray.NdArray<Float32Array | Uint16Array>;

function checkExtract(fn: string, value: unknown, rank: number, worldSize: number, dim: number) {
  const t = toDense(fn, 'value', value);
  if (!Number.isInteger(dim) || dim < 0 || dim >= t.shape.length)
    fail('E_ARG', `${fn}: dim ${dim} out of range for a ${t.shape.length}-d tensor`);
  if (!Number.isInteger(worldSize) || worldSize < 1)
    fail('E_ARG', `${fn}: world_size must be a positive integer, got ${worldSize}`);
  if (!Number.isInteger(rank) || rank < 0 || rank >= worldSize)
    fail('E_ARG', `${fn}: rank ${rank} out of range [0, ${worldSize})`);
  return t;
}

/** A host ndarray over `s`, carrying a 16-bit dtype where there is one. */
function hostNd(s: Dense<Float32Array | Uint16Array>, dtype: string): HostNd {
  const out = ndarray(s.data, [...s.shape]) as HostNd;
  if (dtype !== 'float32') Object.defineProperty(out, 'dtype', { value: dtype, enumerable: true });
  return out;
}

function extract(
  layout: LayoutName,
  fn: string,
  value: unknown,
  rank: number,
  worldSize: number,
  dim: number,
): HostNd {
  const t = checkExtract(fn, value, rank, worldSize, dim);
  return hostNd(shard(layout, t, dim, rank, worldSize), t.dtype);
}

/** This rank's contiguous chunk of `value` along `dim` (test_ring_flash_attn_func's extract_local). */
export function extract_local(value: unknown, rank: number, world_size: number, dim = 1): HostNd {
  return extract('contiguous', 'extract_local', value, rank, world_size, dim);
}

/** Chunks `rank` and `2·world_size−1−rank` of 2·world_size, concatenated (the zigzag layout). */
export function zigzag_extract_local(value: unknown, rank: number, world_size: number, dim = 1): HostNd {
  return extract('zigzag', 'zigzag_extract_local', value, rank, world_size, dim);
}

/** Positions rank, rank + world_size, ... (the stripe layout). */
export function stripe_extract_local(value: unknown, rank: number, world_size: number, dim = 1): HostNd {
  return extract('stripe', 'stripe_extract_local', value, rank, world_size, dim);
}

/**
 * This rank's shard for usp_attn_* (yunchang's extract helpers with rd = ring, ud = ulysses): the
 * sequence dealt over the ring ranks ring_impl's way (zigzag, contiguous for 'ring', stripe), and
 * ring shard rank / ulysses cut contiguously into `ulysses` pieces, piece rank mod ulysses.
 */
export function usp_extract_local(
  value: unknown,
  rank: number,
  world_size: number,
  degrees: { ulysses?: number; ring?: number; ring_impl?: RingImpl | 'basic' | 'strip' } = {},
  dim = 1,
): HostNd {
  const fn = 'usp_extract_local';
  if (degrees === null || typeof degrees !== 'object')
    fail('E_ARG', `${fn}: degrees must be { ulysses, ring, ring_impl }, got ${describeValue(degrees)}`);
  const extra = Object.keys(degrees).filter((k) => !['ulysses', 'ring', 'ring_impl'].includes(k));
  if (extra.length) fail('E_ARG', `${fn}: unknown option '${extra[0]}'`);
  const t = checkExtract(fn, value, rank, world_size, dim);
  const { ulysses, ring, ringImpl } = uspDegrees(fn, degrees, world_size);
  const layout = RING_IMPL_LAYOUT[ringImpl];
  return hostNd(takeRows(t, dim, uspPositions(layout, t.shape[dim]!, rank, ulysses, ring)), t.dtype);
}

function extractVarlen(
  fn: string,
  zigzag: boolean,
  value: unknown,
  cuSeqlens: unknown,
  rank: number,
  worldSize: number,
): HostNd {
  const t = toDense(fn, 'value', value);
  if (!Number.isInteger(worldSize) || worldSize < 1)
    fail('E_ARG', `${fn}: world_size must be a positive integer, got ${worldSize}`);
  if (!Number.isInteger(rank) || rank < 0 || rank >= worldSize)
    fail('E_ARG', `${fn}: rank ${rank} out of range [0, ${worldSize})`);
  const cu = checkCuSeqlens(fn, 'cu_seqlens', cuSeqlens, t.shape[0]!, 'the total tokens of value');
  checkSeqDivisible(
    fn,
    'cu_seqlens',
    cu,
    zigzag ? 2 * worldSize : worldSize,
    zigzag ? '2·world_size' : 'world_size',
  );
  const rows = varlenPositions(cu, rank, worldSize, zigzag);
  const inner = t.shape.slice(1).reduce((a, b) => a * b, 1);
  const out = new (t.data.constructor as { new (n: number): Float32Array | Uint16Array })(
    rows.length * inner,
  );
  rows.forEach((r, i) => out.set(t.data.subarray(r * inner, (r + 1) * inner), i * inner));
  const nd = ndarray(out, [rows.length, ...t.shape.slice(1)]) as HostNd;
  if (t.dtype !== 'float32') Object.defineProperty(nd, 'dtype', { value: t.dtype, enumerable: true });
  return nd;
}

/**
 * This rank's rows of a packed (total, ...) tensor for ring_flash_attn_varlen_*: the rank-th
 * 1/world_size of every sequence (the Python project's varlen tests' extract_local(value, cu_seqlens, ...)).
 */
export function varlen_extract_local(
  value: unknown,
  cu_seqlens: unknown,
  rank: number,
  world_size: number,
): HostNd {
  return extractVarlen('varlen_extract_local', false, value, cu_seqlens, rank, world_size);
}

/** This rank's rows for zigzag_ring_flash_attn_varlen_*: chunks rank and 2·world_size−1−rank of every sequence. */
export function zigzag_varlen_extract_local(
  value: unknown,
  cu_seqlens: unknown,
  rank: number,
  world_size: number,
): HostNd {
  return extractVarlen('zigzag_varlen_extract_local', true, value, cu_seqlens, rank, world_size);
}

/** This rank's rows for zigzag_llama3_flash_attn_varlen_*: the zigzag varlen layout (chunks rank and 2·world_size−1−rank). */
export function zigzag_llama3_extract_local(
  value: unknown,
  cu_seqlens: unknown,
  rank: number,
  world_size: number,
): HostNd {
  return extractVarlen('zigzag_llama3_extract_local', true, value, cu_seqlens, rank, world_size);
}

/**
 * update_out_and_lse(out, lse, block_out, block_lse) inside SPMD code: merges a block's attention
 * result into the running one in fp32 with the stable form
 *   lse = lse − logsigmoid(lse − block_lse),  out = out − sigmoid(block_lse − lse) · (out − block_out).
 * `out` (b, s, h, d) and `lse` (b, h, s) are fp32 (pass null for the first block: copies of the
 * block are returned). Unlike the Python helper, lse keeps flash-attn's (b, h, s) layout.
 * Returns [out, lse] (updated in place when given).
 */
export function update_out_and_lse(
  out: DeviceTensor | null,
  lse: DeviceTensor | null,
  block_out: DeviceTensor,
  block_lse: DeviceTensor,
): [DeviceTensor, DeviceTensor] {
  const backend = currentContext().backend;
  const f32 = (t: DeviceTensor) => (t.dtype === 'float32' ? t : backend.cast(t, 'float32'));
  if (block_out.ndim !== 4 || block_lse.ndim !== 3)
    fail('E_SHAPE', 'update_out_and_lse: block_out must be (b, s, h, d) and block_lse (b, h, s)');
  const [b, s, h] = block_out.shape as [number, number, number];
  if (block_lse.shape.join() !== [b, h, s].join())
    fail(
      'E_SHAPE',
      `update_out_and_lse: block_lse (${block_lse.shape.join(', ')}) does not match block_out (b, h, s) = (${b}, ${h}, ${s})`,
    );
  if ((out === null) !== (lse === null))
    fail('E_ARG', 'update_out_and_lse: out and lse are both null or both given');
  if (block_lse.dtype !== 'float32')
    fail('E_DTYPE', 'update_out_and_lse: block_lse must be float32 (kernels return fp32 lse)');
  if (out === null || lse === null)
    return [
      block_out.dtype === 'float32' ? backend.contiguous(block_out) : backend.cast(block_out, 'float32'),
      backend.contiguous(block_lse),
    ];
  if (out.dtype !== 'float32' || lse.dtype !== 'float32')
    fail('E_DTYPE', 'update_out_and_lse: out and lse must be float32');
  if (out.shape.join() !== block_out.shape.join())
    fail(
      'E_SHAPE',
      `update_out_and_lse: out (${out.shape.join(', ')}) != block_out (${block_out.shape.join(', ')})`,
    );
  const bo = f32(block_out);
  backend.merge(out, lse, bo, block_lse);
  if (bo !== block_out) bo.dispose();
  return [out, lse];
}

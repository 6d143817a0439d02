// Host tensors at the driver-mode boundary: ndarray objects (or { data, shape }) over
// Float32Array, or over Uint16Array holding bf16/f16 bits with a `dtype` tag.
import ndarray from 'ndarray';
import { checkDType, fromFloat32, toFloat32, type DType, type HostData } from '../runtime/dtype.js';
import { fail } from '../runtime/errors.js';
import { contiguousStrides, numelOf } from '../runtime/tensor.js';

export interface DenseHost {
  data: HostData;
  shape: number[];
  dtype: DType;
}

type HostLike = { data: unknown; shape: unknown; stride?: unknown; offset?: unknown; dtype?: unknown };

/** A dense C-order copy (or the array itself when already dense) of an ndarray-like input. */
export function toDense(fn: string, name: string, x: unknown): DenseHost {
  const h = x as HostLike;
  if (!h || typeof h !== 'object' || !Array.isArray(h.shape))
    fail('E_ARG', `${fn}: ${name} must be an ndarray (or { data, shape }), got ${x === null ? 'null' : typeof x}`);
  const shape = (h.shape as unknown[]).map(Number);
  if (shape.some((n) => !Number.isInteger(n) || n < 0)) fail('E_SHAPE', `${fn}: ${name} has an invalid shape [${shape.join(', ')}]`);
  let dtype: DType;
  if (h.data instanceof Float32Array) dtype = 'float32';
  else if (h.data instanceof Uint16Array) dtype = checkDType((h as { dtype?: unknown }).dtype ?? (h.data as { dtype?: unknown }).dtype, `${fn}: ${name}.dtype of Uint16Array data`);
  else fail('E_DTYPE', `${fn}: ${name} data must be a Float32Array, or a Uint16Array of bfloat16/float16 bits`);
  if (dtype === 'float32' && h.dtype !== undefined && h.dtype !== 'float32' && typeof h.dtype === 'string' && h.dtype !== 'generic')
    fail('E_DTYPE', `${fn}: ${name} says dtype ${h.dtype} but holds a Float32Array`);
  const data = h.data as HostData;
  const n = numelOf(shape);
  const stride = Array.isArray(h.stride) ? (h.stride as number[]) : contiguousStrides(shape);
  const offset = typeof h.offset === 'number' ? h.offset : 0;
  const dense = offset === 0 && data.length === n && stride.every((s, i) => shape[i] === 1 || s === contiguousStrides(shape)[i]);
  if (dense) return { data, shape, dtype };
  const out = new (data.constructor as { new (n: number): HostData })(n);
  const idx = new Array<number>(shape.length).fill(0);
  for (let i = 0; i < n; i++) {
    let src = offset;
    for (let a = 0; a < shape.length; a++) src += idx[a]! * stride[a]!;
    if (src < 0 || src >= data.length) fail('E_SHAPE', `${fn}: ${name} strides reach outside its data`);
    out[i] = data[src]!;
    for (let a = shape.length - 1; a >= 0; a--) {
      if (++idx[a]! < shape[a]!) break;
      idx[a] = 0;
    }
  }
  return { data: out, shape, dtype };
}

/** Converts to the compute dtype (rounding float32 inputs through bf16/f16 when asked). */
export function toComputeDtype(t: DenseHost, dtype: DType): DenseHost {
  if (t.dtype === dtype) return t;
  return { data: fromFloat32(toFloat32(t.data, t.dtype), dtype), shape: t.shape, dtype };
}

/** A Float32 ndarray of any host result. */
export function toNdarray(t: { data: HostData; shape: readonly number[]; dtype: DType }): ndarray.NdArray<Float32Array> {
  return ndarray(toFloat32(t.data, t.dtype), [...t.shape]);
}

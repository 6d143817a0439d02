// Host tensors at the driver-mode boundary: ndarray objects (or { data, shape }) over
// Float32Array, or over Uint16Array holding bf16/f16 bits with a `dtype` tag.
import ndarray from 'ndarray';
import { fromFloat32, toFloat32, type DType, type HostData } from '../../runtime/dtype.js';
import { fail } from '../../runtime/errors.js';
import { checkHostView, denseData, describeValue } from '../../runtime/tensor.js';

export interface DenseHost {
  data: HostData;
  shape: number[];
  dtype: DType;
}

type HostLike = { data: unknown; shape: unknown; stride?: unknown; offset?: unknown; dtype?: unknown };

const shownTag = (tag: unknown) => (typeof tag === 'string' ? JSON.stringify(tag) : describeValue(tag));

/** The dtype of a host tensor's data: Float32Array, or Uint16Array bits whose tag says which. */
function hostDtype(where: string, h: HostLike): DType {
  if (h.data instanceof Float32Array) {
    // ndarray tags its arrays 'float32' (or 'generic' for plain arrays); a 16-bit tag is a mix-up.
    if (h.dtype != null && h.dtype !== 'float32' && h.dtype !== 'generic')
      fail('E_DTYPE', `${where}.dtype is ${shownTag(h.dtype)} but its data is a Float32Array`);
    return 'float32';
  }
  if (h.data instanceof Uint16Array) {
    // ndarray's own tag for a Uint16Array is 'uint16': the caller's tag says which 16-bit float.
    const tag = h.dtype ?? (h.data as { dtype?: unknown }).dtype;
    if (tag !== 'bfloat16' && tag !== 'float16')
      fail('E_DTYPE', `${where}.dtype of Uint16Array data must be bfloat16 or float16, got ${shownTag(tag)}`);
    return tag;
  }
  fail(
    'E_DTYPE',
    `${where} data must be a Float32Array, or a Uint16Array of bfloat16/float16 bits, got ${describeValue(h.data)}`,
  );
}

/**
 * A dense C-order copy (or the array itself when already dense) of an ndarray-like input;
 * shape, stride, offset and data length are checked before anything is copied.
 */
export function toDense(fn: string, name: string, x: unknown): DenseHost {
  const h = x as HostLike;
  if (!h || typeof h !== 'object' || !Array.isArray(h.shape))
    fail('E_ARG', `${fn}: ${name} must be an ndarray (or { data, shape }), got ${describeValue(x)}`);
  const where = `${fn}: ${name}`;
  const dtype = hostDtype(where, h);
  const data = h.data as HostData;
  const view = checkHostView(where, h, data.length);
  return { data: denseData(data, view), shape: view.shape, dtype };
}

/** Converts to the compute dtype (rounding float32 inputs through bf16/f16 when asked). */
export function toComputeDtype(t: DenseHost, dtype: DType): DenseHost {
  if (t.dtype === dtype) return t;
  return { data: fromFloat32(toFloat32(t.data, t.dtype), dtype), shape: t.shape, dtype };
}

/** A Float32 ndarray of any host result. */
export function toNdarray(t: {
  data: HostData;
  shape: readonly number[];
  dtype: DType;
}): ndarray.NdArray<Float32Array> {
  return ndarray(toFloat32(t.data, t.dtype), [...t.shape]);
}

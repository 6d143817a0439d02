// K/V (and dK/dV) travel between ranks as one contiguous (2, b, s, h_k, d) buffer, so one
// send moves both; k and v are views into it.
import type { Backend } from '../runtime/backend.js';
import type { DType } from '../runtime/dtype.js';
import type { DeviceTensor } from '../runtime/tensor.js';

export interface KvBuffer {
  buf: DeviceTensor;
  k: DeviceTensor;
  v: DeviceTensor;
}

export function kvViews(buf: DeviceTensor): KvBuffer {
  return { buf, k: buf.select(0, 0), v: buf.select(0, 1) };
}

export function emptyKv(backend: Backend, like: DeviceTensor, dtype: DType = like.dtype): KvBuffer {
  return kvViews(backend.empty([2, ...like.shape], dtype));
}

export function zerosKv(backend: Backend, like: DeviceTensor, dtype: DType = 'float32'): KvBuffer {
  return kvViews(backend.zeros([2, ...like.shape], dtype));
}

/** A contiguous copy of (k, v), ready to send. */
export function packKv(backend: Backend, k: DeviceTensor, v: DeviceTensor): KvBuffer {
  const kv = emptyKv(backend, k);
  backend.copy(kv.k, k);
  backend.copy(kv.v, v);
  return kv;
}

export function disposeAll(...ts: (DeviceTensor | KvBuffer | undefined | null)[]): void {
  for (const t of ts) {
    if (!t) continue;
    if ('buf' in t) t.buf.dispose();
    else t.dispose();
  }
}

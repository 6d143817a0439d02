// What crosses between a rank's worker thread and the main thread besides tasks: the results of
// user code (tensors as tagged host arrays, turned into ndarrays on arrival) and the errors
// that escape a task.
import { BroadcastChannel } from 'node:worker_threads';
import ndarray from 'ndarray';
import type { DType, HostData } from './dtype.js';

/** Marks a DeviceTensor downloaded by a worker, so the main thread can tell it from user data. */
export const TENSOR_TAG = '__ringFlashAttnTensor';

/** A result tensor as it arrives on the main thread: an ndarray whose `dtype` is the tensor's. */
export type HostResult = ndarray.NdArray<HostData> & { dtype: DType };

/**
 * Where `value` holds something structured clone refuses (a function, a symbol, a promise, a weak
 * collection), as a path like "result.loss.fn is a function"; null when it can be sent.
 */
export function uncloneablePath(value: unknown, path: string, seen = new Set<object>()): string | null {
  if (typeof value === 'function') return `${path} is a function`;
  if (typeof value === 'symbol') return `${path} is a symbol`;
  if (value === null || typeof value !== 'object' || seen.has(value)) return null;
  seen.add(value);
  for (const [type, name] of [
    [Promise, 'a Promise'],
    [WeakMap, 'a WeakMap'],
    [WeakSet, 'a WeakSet'],
    [WeakRef, 'a WeakRef'],
  ] as const)
    if (value instanceof type) return `${path} is ${name}`;
  if (ArrayBuffer.isView(value) || value instanceof ArrayBuffer) return null;
  if (value instanceof Map) {
    for (const [k, v] of value) {
      const bad =
        uncloneablePath(k, `${path} key`, seen) ?? uncloneablePath(v, `${path}.get(${String(k)})`, seen);
      if (bad) return bad;
    }
    return null;
  }
  if (value instanceof Set) {
    for (const v of value) {
      const bad = uncloneablePath(v, `${path} member`, seen);
      if (bad) return bad;
    }
    return null;
  }
  for (const [k, v] of Object.entries(value)) {
    const bad = uncloneablePath(v, Array.isArray(value) ? `${path}[${k}]` : `${path}.${k}`, seen);
    if (bad) return bad;
  }
  return null;
}

/** What a mapTree visitor returns to walk into a value instead of replacing it. */
export const WALK: unique symbol = Symbol('walk');

/**
 * `value` with each part that `visit` replaces replaced; the parts it answers WALK for are walked
 * into when they are arrays or plain objects (the shapes tasks and results are made of) and kept
 * as they are otherwise.
 */
export function mapTree(value: unknown, visit: (x: unknown) => unknown): unknown {
  const r = visit(value);
  if (r !== WALK) return r;
  if (Array.isArray(value)) return value.map((v) => mapTree(v, visit));
  if (value && typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype)
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, mapTree(v, visit)]));
  return value;
}

/** Turns the tagged tensors of a worker's result into ndarrays; everything else stays as it came. */
export function fromTransfer(value: unknown): unknown {
  return mapTree(value, (x) => {
    const v = x as Record<string, unknown> | null;
    if (!v || typeof v !== 'object' || v[TENSOR_TAG] !== true) return WALK;
    const nd = ndarray(v.data as HostData, v.shape as number[]);
    Object.defineProperty(nd, 'dtype', { value: v.dtype, enumerable: true });
    return nd as HostResult;
  });
}

/** An error that escaped a task on a worker (StrayError), as the worker reports it. */
export interface StrayError {
  rank: number;
  kind: 'uncaughtException' | 'unhandledRejection';
  message: string;
  stack?: string;
}

/** The channel a runtime's workers report stray errors on. */
export function workerErrorChannel(runtimeId: string): BroadcastChannel {
  return new BroadcastChannel(`ring-flash-attn/worker-errors/${runtimeId}`);
}

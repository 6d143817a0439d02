// K and V travel between ranks as two messages, k then v (the pass-along rings move their fp32
// dK/dV the same way). Only element counts travel, so a rank's layout never has to match its
// peer's: a sender reads its k and v where they lie when its comm can (contiguous, or the rows of
// a packed qkv/kv over the copy engines), and received blocks land in one contiguous
// (2, b, s, h_k, d) buffer with k and v as views into it.
import type { Backend } from '../../runtime/backend.js';
import type { Comm, P2POp } from '../../runtime/comm.js';
import type { DType } from '../../runtime/dtype.js';
import type { DeviceTensor } from '../../runtime/tensor.js';

export interface KvPair {
  k: DeviceTensor;
  v: DeviceTensor;
}

export interface KvBuffer extends KvPair {
  buf: DeviceTensor;
}

export function kvViews(buf: DeviceTensor): KvBuffer {
  return { buf, k: buf.select(0, 0), v: buf.select(0, 1) };
}

export function emptyKv(backend: Backend, like: DeviceTensor, dtype: DType = like.dtype): KvBuffer {
  return kvViews(backend.empty([2, ...like.shape], dtype));
}

/** The two messages that move a K/V pair to or from `peer`: k, then v. */
export function kvOps(peer: number, kv: KvPair): P2POp[] {
  return [
    { peer, tensor: kv.k },
    { peer, tensor: kv.v },
  ];
}

/**
 * The caller's k and v ready to send: the tensors themselves where `comm` reads them in place,
 * else a contiguous copy (`copy`, the caller disposes it; NCCL needs one for k/v sliced from a
 * packed tensor). Skipping the copy saves two copy kernels at the head of every ring call.
 */
export function sendableKv(
  backend: Backend,
  comm: Comm,
  k: DeviceTensor,
  v: DeviceTensor,
): { kv: KvPair; copy: KvBuffer | null } {
  if (comm.sendable(k) && comm.sendable(v)) return { kv: { k, v }, copy: null };
  const copy = emptyKv(backend, k);
  backend.copy(copy.k, k);
  backend.copy(copy.v, v);
  return { kv: copy, copy };
}

export function disposeAll(...ts: (DeviceTensor | KvBuffer | undefined | null)[]): void {
  for (const t of ts) {
    if (!t) continue;
    if ('buf' in t) t.buf.dispose();
    else t.dispose();
  }
}

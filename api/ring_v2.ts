// ring_flash_attn_*_v2: the pass-along ring. Every step each rank sends the block it holds to
// r+1 and receives the next from r−1; the transfer is issued before the current block is
// computed. In backward, each block's fp32 dK/dV accumulator travels with it and, after a
// full turn, arrives back at its owner holding every rank's contribution.
import type { Backend } from '../runtime/backend.js';
import type { Group, Pending } from '../runtime/comm.js';
import type { DeviceTensor } from '../runtime/tensor.js';
import { attnFamily } from './family.js';
import { disposeAll, emptyKv, packKv, ringPeer, zerosKv, type KvBuffer } from './kv_buffer.js';
import { updateOutAndLse } from './merge.js';
import type { RingForward, RingGrads, RingOptions, RingVariant } from './variant.js';

/** Passes `cur` to r+1 and receives the next block from r−1 into the other buffer. */
function passAlong(backend: Backend, group: Group, cur: KvBuffer, next: KvBuffer): Pending {
  return backend.comm(group).sendRecv(
    [{ peer: ringPeer(group.rank, 1, group.size), tensor: cur.buf }],
    [{ peer: ringPeer(group.rank, -1, group.size), tensor: next.buf }],
  );
}

export function ringV2Forward(backend: Backend, group: Group, q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, o: RingOptions): RingForward {
  const [b, s, h, d] = q.shape as [number, number, number, number];
  const W = group.size;
  const out = backend.empty([b, s, h, d], 'float32');
  const lse = backend.empty([b, h, s], 'float32');
  backend.flashFwd(q, k, v, out, lse, { softmaxScale: o.softmaxScale, causal: o.causal });
  if (W === 1) return { out, lse };
  const bufs = [packKv(backend, k, v), emptyKv(backend, k)];
  const blockOut = backend.empty([b, s, h, d], 'float32');
  const blockLse = backend.empty([b, h, s], 'float32');
  let pending = passAlong(backend, group, bufs[0]!, bufs[1]!);
  for (let step = 1; step < W; step++) {
    pending.wait();
    const cur = bufs[step % 2]!;
    if (step + 1 < W) pending = passAlong(backend, group, cur, bufs[(step + 1) % 2]!);
    if (o.causal && step > group.rank) continue; // a block from a later rank is fully masked
    backend.flashFwd(q, cur.k, cur.v, blockOut, blockLse, { softmaxScale: o.softmaxScale, causal: false });
    updateOutAndLse(backend, out, lse, blockOut, blockLse);
  }
  disposeAll(...bufs, blockOut, blockLse);
  return { out, lse };
}

export function ringV2Backward(backend: Backend, group: Group, dout: DeviceTensor, q: DeviceTensor, k: DeviceTensor, v: DeviceTensor,
  fwd: RingForward, o: RingOptions): RingGrads {
  const [b, s, h] = q.shape as [number, number, number, number];
  const W = group.size;
  const dq = backend.zeros(q.shape, 'float32');
  const dsum = backend.empty([b, h, s], 'float32');
  backend.flashBwdDot(dout, fwd.out, dsum);
  const attn = { softmaxScale: o.softmaxScale, accumulate: true };
  // Step 0: this rank's own block; its accumulator starts here.
  const first = zerosKv(backend, k);
  backend.flashBwd({ dout, q, k, v, lse: fwd.lse, dsum, dq, dk: first.k, dv: first.v }, { ...attn, causal: o.causal });
  if (W === 1) {
    disposeAll(dsum);
    return { dq, dk: first.k, dv: first.v };
  }
  const kvBufs = [packKv(backend, k, v), emptyKv(backend, k)];
  const travel = [first, emptyKv(backend, k, 'float32')];
  const block = emptyKv(backend, k, 'float32');
  let kvPending = passAlong(backend, group, kvBufs[0]!, kvBufs[1]!);
  let dkvPending = passAlong(backend, group, travel[0]!, travel[1]!);
  for (let step = 1; step < W; step++) {
    kvPending.wait();
    const cur = kvBufs[step % 2]!;
    if (step + 1 < W) kvPending = passAlong(backend, group, cur, kvBufs[(step + 1) % 2]!);
    const computes = !o.causal || step <= group.rank;
    if (computes) {
      backend.fill(block.buf, 0);
      backend.flashBwd({ dout, q, k: cur.k, v: cur.v, lse: fwd.lse, dsum, dq, dk: block.k, dv: block.v }, { ...attn, causal: false });
    }
    // The accumulator of the block we hold arrives from r−1; add our part and pass it on.
    dkvPending.wait();
    const acc = travel[step % 2]!;
    if (computes) backend.add(acc.buf, block.buf);
    dkvPending = passAlong(backend, group, acc, travel[(step + 1) % 2]!);
  }
  dkvPending.wait();
  const own = travel[W % 2]!;
  disposeAll(dsum, ...kvBufs, block, travel[(W + 1) % 2]);
  return { dq, dk: own.k, dv: own.v };
}

export const ringV2Variant: RingVariant = {
  name: 'ring_flash_attn', suffix: '_v2', layout: 'contiguous', forward: ringV2Forward, backward: ringV2Backward,
};

const family = attnFamily(ringV2Variant);

/** Pass-along ring attention over shards (b, s/world, h, d). */
export const ring_flash_attn_func_v2 = family.func;
export const ring_flash_attn_kvpacked_func_v2 = family.kvpacked;
export const ring_flash_attn_qkvpacked_func_v2 = family.qkvpacked;
export const ringFlashAttnFuncV2 = ring_flash_attn_func_v2;
export const ringFlashAttnKvpackedFuncV2 = ring_flash_attn_kvpacked_func_v2;
export const ringFlashAttnQkvpackedFuncV2 = ring_flash_attn_qkvpacked_func_v2;

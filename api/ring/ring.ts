// ring_flash_attn_*: the Python project's first communication pattern. At step s rank r attends to the
// K/V of rank r−s, which that rank sends directly (not passed along); a causal rank only needs
// ranks ≤ r, so transfers nobody will use are skipped. The transfer for step s+1 is issued before
// block s is computed. Backward sends each block's fp32 dK/dV straight back to its owner.
import type { Backend } from '../../runtime/backend.js';
import { DONE, ringPeer, type Comm, type Group, type Pending } from '../../runtime/comm.js';
import type { DeviceTensor } from '../../runtime/tensor.js';
import { attnFamily } from '../wrappers.js';
import { disposeAll, emptyKv, kvOps, sendableKv, type KvBuffer } from './kv_buffer.js';
import type { RingBackwardFn, RingForwardFn, RingOptions, RingVariant } from '../variant.js';
import { isPositional, positionFreeHooks } from '../hooks.js';
import { positionalBackward, positionalForward } from './positional_ring.js';
import { contiguousPieces } from './positions.js';

/** Which steps move data: rank r uses the block of r−s; rank r+s uses ours. */
function schedule(group: Group, causal: boolean) {
  const { rank, size } = group;
  return {
    uses: (step: number) => !causal || step <= rank,
    feeds: (step: number) => !causal || rank + step < size,
    src: (step: number) => ringPeer(rank, -step, size),
    dst: (step: number) => ringPeer(rank, step, size),
  };
}
type Schedule = ReturnType<typeof schedule>;

/**
 * The K/V ring of a call: our K/V ready to send, two receive buffers (none alone), and the
 * transfer of a step (ours to the rank that uses it, the block we use into recv[step % 2]).
 */
function kvRing(backend: Backend, comm: Comm, W: number, plan: Schedule, k: DeviceTensor, v: DeviceTensor) {
  const local = W > 1 ? sendableKv(backend, comm, k, v) : undefined;
  const recv: KvBuffer[] = W > 1 ? [emptyKv(backend, k), emptyKv(backend, k)] : [];
  const transfer = (step: number): Pending =>
    step >= W
      ? DONE
      : comm.sendRecv(
          plan.feeds(step) ? kvOps(plan.dst(step), local!.kv) : [],
          plan.uses(step) ? kvOps(plan.src(step), recv[step % 2]!) : [],
        );
  return { local, recv, transfer };
}

export const ringForward: RingForwardFn<RingOptions> = (backend, group, q, k, v, o) => {
  const [b, s, h, d] = q.shape as [number, number, number, number];
  const comm = backend.comm(group);
  const plan = schedule(group, o.causal);
  const out = backend.empty([b, s, h, d], 'float32');
  const lse = backend.empty([b, h, s], 'float32');
  const W = group.size;
  const { local, recv, transfer } = kvRing(backend, comm, W, plan, k, v);

  // The last block this rank uses writes the final out in q's dtype (every block covers all
  // rows), which saves a cast pass over out; a causal rank 0 uses only its own block.
  const lastStep = o.causal ? group.rank : W - 1;
  const final = q.dtype !== 'float32' ? backend.empty(q.shape, q.dtype) : null;
  let pending = transfer(1);
  const hooks = positionFreeHooks(o);
  backend.flashFwd(q, k, v, lastStep === 0 && final ? final : out, lse, {
    softmaxScale: o.softmaxScale,
    causal: o.causal,
    hooks,
  });
  for (let step = 1; step < W; step++) {
    pending.wait();
    pending = transfer(step + 1);
    if (!plan.uses(step)) continue;
    const kv = recv[step % 2]!;
    // The kernel merges the block into the running out/lse (update_out_and_lse, fused).
    const toFinal = step === lastStep && final !== null;
    backend.flashFwd(q, kv.k, kv.v, toFinal ? final : out, lse, {
      softmaxScale: o.softmaxScale,
      causal: false,
      hooks,
      merge: true,
      mergeFrom: toFinal ? out : undefined,
    });
  }
  pending.wait();
  disposeAll(local?.copy, ...recv, final ? out : undefined);
  return { out: final ?? out, lse };
};

export const ringBackward: RingBackwardFn<RingOptions> = (backend, group, dout, q, k, v, fwd, o) => {
  const [b, s, h] = q.shape as [number, number, number, number];
  const comm = backend.comm(group);
  const plan = schedule(group, o.causal);
  const W = group.size;
  const dq = backend.zeros(q.shape, 'float32');
  const own = emptyKv(backend, k, 'float32');
  const dsum = backend.empty([b, h, s], 'float32');
  backend.flashBwdDot(dout, fwd.out, dsum);
  const { local, recv, transfer } = kvRing(backend, comm, W, plan, k, v);
  const dkvOut: KvBuffer[] = W > 1 ? [emptyKv(backend, k, 'float32'), emptyKv(backend, k, 'float32')] : [];
  const dkvIn: KvBuffer[] = W > 1 ? [emptyKv(backend, k, 'float32'), emptyKv(backend, k, 'float32')] : [];
  // dq accumulates over the steps; every step's dK/dV (all key rows) is written into its own buffer.
  const attn = {
    softmaxScale: o.softmaxScale,
    hooks: positionFreeHooks(o),
    accumulate: true,
    overwriteKv: true,
    deterministic: o.deterministic,
  };

  // dK/dV of step s go back to the block's owner r−s; ours come from r+s.
  const returnGrads = (step: number): Pending =>
    comm.sendRecv(
      plan.uses(step) ? [{ peer: plan.src(step), tensor: dkvOut[step % 2]!.buf }] : [],
      plan.feeds(step) ? [{ peer: plan.dst(step), tensor: dkvIn[step % 2]!.buf }] : [],
    );
  const collect = (step: number, p: Pending) => {
    p.wait();
    if (plan.feeds(step)) backend.add(own.buf, dkvIn[step % 2]!.buf);
  };

  let pending = transfer(1);
  backend.flashBwd(
    { dout, q, k, v, lse: fwd.lse, dsum, dq, dk: own.k, dv: own.v },
    { ...attn, causal: o.causal },
  );
  let returning: Pending | undefined;
  for (let step = 1; step < W; step++) {
    pending.wait();
    pending = transfer(step + 1);
    if (plan.uses(step)) {
      const kv = recv[step % 2]!,
        dkv = dkvOut[step % 2]!;
      backend.flashBwd(
        { dout, q, k: kv.k, v: kv.v, lse: fwd.lse, dsum, dq, dk: dkv.k, dv: dkv.v },
        { ...attn, causal: false },
      );
    }
    const sent = returnGrads(step);
    if (returning) collect(step - 1, returning);
    returning = sent;
  }
  pending.wait();
  if (returning) collect(W - 1, returning);
  disposeAll(dsum, local?.copy, ...recv, ...dkvOut, ...dkvIn);
  return { dq, dk: own.k, dv: own.v };
};

const layoutOf = (s: number) => ({ pieces: contiguousPieces(s) });

export const ringVariant: RingVariant = {
  name: 'ring_flash_attn',
  layout: 'contiguous',
  // Options that read global positions take the positional ring: the same direct exchange, with
  // each step narrowed to what a window lets the local queries see.
  forward: (backend, group, q, k, v, o) =>
    isPositional(o)
      ? positionalForward(layoutOf(q.shape[1]!), backend, group, q, k, v, o)
      : ringForward(backend, group, q, k, v, o),
  backward: (backend, group, dout, q, k, v, fwd, o) =>
    isPositional(o)
      ? positionalBackward(layoutOf(q.shape[1]!), backend, group, dout, q, k, v, fwd, o)
      : ringBackward(backend, group, dout, q, k, v, fwd, o),
};

const family = attnFamily(ringVariant);

/** Ring attention (the Python project's pattern) over shards (b, s/world, h, d); see flash_attn_func. */
export const ring_flash_attn_func = family.func;
/** Ring attention with packed kv (b, s/world, 2, h_k, d). */
export const ring_flash_attn_kvpacked_func = family.kvpacked;
/** Ring attention with packed qkv (b, s/world, 3, h, d). */
export const ring_flash_attn_qkvpacked_func = family.qkvpacked;
export const ringFlashAttnFunc = ring_flash_attn_func;
export const ringFlashAttnKvpackedFunc = ring_flash_attn_kvpacked_func;
export const ringFlashAttnQkvpackedFunc = ring_flash_attn_qkvpacked_func;

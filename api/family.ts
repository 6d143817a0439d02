// The three public wrappers every ring variant exposes (func, kvpacked_func, qkvpacked_func),
// built once from the variant's forward and backward: argument parsing, validation, dtype
// handling and the minimal autograd of the Python API live here, the ring loops in the variants.
import type { Backend } from '../runtime/backend.js';
import type { Group } from '../runtime/comm.js';
import { currentContext } from '../runtime/context.js';
import { fail } from '../runtime/errors.js';
import { DeviceTensor } from '../runtime/tensor.js';
import { parseAttnArgs, type AttnArgs } from './args.js';
import { checkQkv, checkTensor } from './validate.js';
import type { RingArgs } from './types.js';
import type { RingForward, RingGrads, RingOptions, RingVariant } from './variant.js';

/** What a call returns: out, or [out, lse, null] with return_attn_probs (as in Python). */
export type AttnResult = DeviceTensor | [DeviceTensor, DeviceTensor, null];

export function resolveGroup(fn: string, group: AttnArgs['group']): Group {
  const ctx = currentContext();
  if (group === null) return ctx.group;
  if (Array.isArray(group)) return ctx.newGroup(group);
  const g = group as Group;
  if (g.rank < 0 || g.ranks[g.rank] !== ctx.rank) fail('E_ARG', `${fn}: group [${g.ranks.join(', ')}] was made for another rank`);
  return g;
}

function toDtype(backend: Backend, t: DeviceTensor, like: DeviceTensor): DeviceTensor {
  return t.dtype === like.dtype ? t : backend.cast(t, like.dtype);
}

/** Assigns the fp32 grads of (q, k, v) to whichever inputs require grad. */
type GradSink = (backend: Backend, grads: RingGrads) => void;

interface Call {
  fn: string;
  q: DeviceTensor;
  k: DeviceTensor;
  v: DeviceTensor;
  rest: readonly unknown[];
  inputs: readonly DeviceTensor[];
  sink: GradSink;
}

function attend(variant: RingVariant, c: Call): AttnResult {
  const single = variant.layout === 'single';
  const a = parseAttnArgs(c.fn, c.rest, variant.positional);
  checkQkv(c.fn, c.q, c.k, c.v);
  if (!single && c.k.shape[1] !== c.q.shape[1])
    fail('E_SHAPE', `${c.fn}: k seqlen ${c.k.shape[1]} != q seqlen ${c.q.shape[1]} (ring shards hold equal lengths)`);
  const group = single ? currentContext().newGroup([currentContext().rank]) : resolveGroup(c.fn, a.group);
  const backend = currentContext().backend;
  const o: RingOptions = { softmaxScale: a.softmaxScale ?? 1 / Math.sqrt(c.q.shape[3]!), causal: a.causal };
  variant.check?.(c.fn, c.q, c.k, o, group);
  const fwd: RingForward = variant.forward(backend, group, c.q, c.k, c.v, o);
  const out = toDtype(backend, fwd.out, c.q);
  out.gradFn = (dout: DeviceTensor) => {
    checkTensor(`${c.fn} backward`, 'dout', dout, 4, '(batch, seqlen, nheads, head_dim)');
    if (dout.shape.join() !== c.q.shape.join())
      fail('E_SHAPE', `${c.fn} backward: dout shape (${dout.shape.join(', ')}) != out shape (${c.q.shape.join(', ')})`);
    if (!c.inputs.some((t) => t.requiresGrad)) fail('E_ARG', `${c.fn} backward: none of the inputs requires grad`);
    const d = toDtype(backend, dout, c.q);
    const grads = variant.backward(backend, group, d, c.q, c.k, c.v, fwd, o);
    c.sink(backend, grads);
    // Free the fp32 grads no input kept (dk and dv may share one buffer).
    for (const g of [grads.dq, grads.dk, grads.dv]) if (!c.inputs.some((t) => t.grad?.storage === g.storage)) g.storage.release();
    if (d !== dout) d.dispose();
  };
  // The fp32 out (when the caller got a cast) and, unless returned, the lse live until out.dispose().
  out.releaseSaved = () => {
    if (fwd.out !== out) fwd.out.dispose();
    if (!a.returnAttnProbs) fwd.lse.dispose();
  };
  return a.returnAttnProbs ? [out, fwd.lse, null] : out;
}

/** The three wrappers; R is the Python positional/keyword tail after the tensors. */
export interface AttnFamily<R extends unknown[]> {
  func(q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, ...rest: R): AttnResult;
  kvpacked(q: DeviceTensor, kv: DeviceTensor, ...rest: R): AttnResult;
  qkvpacked(qkv: DeviceTensor, ...rest: R): AttnResult;
}

export function attnFamily<R extends unknown[] = RingArgs>(variant: RingVariant): AttnFamily<R> {
  const name = variant.name, suffix = variant.suffix ?? '';
  return {
    func(q, k, v, ...rest) {
      const fn = `${name}_func${suffix}`;
      checkTensor(fn, 'q', q, 4, '(batch, seqlen, nheads, head_dim)');
      checkTensor(fn, 'k', k, 4, '(batch, seqlen, nheads_k, head_dim)');
      checkTensor(fn, 'v', v, 4, '(batch, seqlen, nheads_k, head_dim)');
      return attend(variant, {
        fn, q, k, v, rest, inputs: [q, k, v],
        sink: (backend, g) => {
          if (q.requiresGrad) q.grad = toDtype(backend, g.dq, q);
          if (k.requiresGrad) k.grad = toDtype(backend, g.dk, k);
          if (v.requiresGrad) v.grad = toDtype(backend, g.dv, v);
        },
      });
    },
    kvpacked(q, kv, ...rest) {
      const fn = `${name}_kvpacked_func${suffix}`;
      checkTensor(fn, 'q', q, 4, '(batch, seqlen, nheads, head_dim)');
      checkTensor(fn, 'kv', kv, 5, '(batch, seqlen, 2, nheads_k, head_dim)');
      if (kv.shape[2] !== 2) fail('E_SHAPE', `${fn}: kv axis 2 must be 2 (k, v), got ${kv.shape[2]}`);
      return attend(variant, {
        fn, q, k: kv.select(2, 0), v: kv.select(2, 1), rest, inputs: [q, kv],
        sink: (backend, g) => {
          if (q.requiresGrad) q.grad = toDtype(backend, g.dq, q);
          if (kv.requiresGrad) kv.grad = packGrads(backend, kv, [g.dk, g.dv]);
        },
      });
    },
    qkvpacked(qkv, ...rest) {
      const fn = `${name}_qkvpacked_func${suffix}`;
      checkTensor(fn, 'qkv', qkv, 5, '(batch, seqlen, 3, nheads, head_dim)');
      if (qkv.shape[2] !== 3) fail('E_SHAPE', `${fn}: qkv axis 2 must be 3 (q, k, v), got ${qkv.shape[2]}`);
      return attend(variant, {
        fn, q: qkv.select(2, 0), k: qkv.select(2, 1), v: qkv.select(2, 2), rest, inputs: [qkv],
        sink: (backend, g) => {
          if (qkv.requiresGrad) qkv.grad = packGrads(backend, qkv, [g.dq, g.dk, g.dv]);
        },
      });
    },
  };
}

/** Stacks per-tensor grads along axis 2 into a tensor shaped like the packed input. */
function packGrads(backend: Backend, like: DeviceTensor, parts: DeviceTensor[]): DeviceTensor {
  const grad = backend.empty(like.shape, 'float32');
  parts.forEach((p, i) => backend.copy(grad.select(2, i), p));
  return like.dtype === 'float32' ? grad : backend.cast(grad, like.dtype);
}

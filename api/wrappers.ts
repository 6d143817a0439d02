// The three public wrappers every ring variant exposes (func, kvpacked_func, qkvpacked_func),
// built once from the variant's forward and backward: argument parsing, validation, dtype
// handling and the minimal autograd of the Python API live here, the ring loops in the variants.
// Dense (b, s, h, d) and packed varlen (total, h, d) families share it through a Frame, which
// says how the public tensors map onto the kernels' (b, s, h, d) views.
import type { Backend } from '../runtime/backend.js';
import type { Group } from '../runtime/comm.js';
import { currentContext } from '../runtime/context.js';
import { fail } from '../runtime/errors.js';
import { DeviceTensor } from '../runtime/tensor.js';
import { parseAttnArgs, ringOptions, type AttnArgs } from './args.js';
import { checkQkv, checkTensor } from './validate.js';
import { checkBackendSupports } from './hooks.js';
import type { RingArgs } from './types.js';
import type { RingForward, RingGrads, RingOptions, RingVariant } from './variant.js';

/** What a call returns: out, or [out, lse, null] with return_attn_probs (as in Python). */
export type AttnResult = DeviceTensor | [DeviceTensor, DeviceTensor, null];

export function resolveGroup(fn: string, group: AttnArgs['group']): Group {
  const ctx = currentContext();
  if (group === null) return ctx.group;
  if (Array.isArray(group)) return ctx.newGroup(group);
  const g = group as Group;
  if (g.rank < 0 || g.ranks[g.rank] !== ctx.rank)
    fail('E_ARG', `${fn}: group [${g.ranks.join(', ')}] was made for another rank`);
  return g;
}

function toDtype(backend: Backend, t: DeviceTensor, like: DeviceTensor): DeviceTensor {
  return t.dtype === like.dtype ? t : backend.cast(t, like.dtype);
}

/** How a family's public tensors map onto the kernels' (b, s, h, d) views. */
export interface Frame {
  /** Rank of q, k, v; kv and qkv have one more axis, at `packAxis`. */
  readonly ndim: number;
  readonly packAxis: number;
  /** Layouts named in shape errors. */
  readonly layouts: { readonly q: string; readonly k: string; readonly kv: string; readonly qkv: string };
  /** The kernel view of a public tensor (q/k/v/dout), and the public view of a kernel result (out, lse, grads). */
  toKernel(t: DeviceTensor): DeviceTensor;
  toPublic(t: DeviceTensor): DeviceTensor;
}

export const DENSE_FRAME: Frame = {
  ndim: 4,
  packAxis: 2,
  layouts: {
    q: '(batch, seqlen, nheads, head_dim)',
    k: '(batch, seqlen, nheads_k, head_dim)',
    kv: '(batch, seqlen, 2, nheads_k, head_dim)',
    qkv: '(batch, seqlen, 3, nheads, head_dim)',
  },
  toKernel: (t) => t,
  toPublic: (t) => t,
};

/** Packed varlen tensors are batch-1 views for the kernels; lse (1, h, total) is returned as (h, total). */
export const VARLEN_FRAME: Frame = {
  ndim: 3,
  packAxis: 1,
  layouts: {
    q: '(total_tokens, nheads, head_dim)',
    k: '(total_tokens, nheads_k, head_dim)',
    kv: '(total_tokens, 2, nheads_k, head_dim)',
    qkv: '(total_tokens, 3, nheads, head_dim)',
  },
  toKernel: (t) => t.unsqueeze(0),
  toPublic: (t) => t.select(0, 0),
};

/** A parsed call: the variant's options, the ring's group, and whether lse is returned. */
export interface ParsedCall<O extends RingOptions> {
  o: O;
  group: Group;
  returnAttnProbs: boolean;
}

/**
 * Parses the arguments after the tensors and validates them against the public q, k, v;
 * returns the variant's options. Runs before anything is launched.
 */
export type ParseArgs<O extends RingOptions> = (
  fn: string,
  rest: readonly unknown[],
  q: DeviceTensor,
  k: DeviceTensor,
  v: DeviceTensor,
) => ParsedCall<O>;

/** Assigns the fp32 grads of (q, k, v), in public layout, to whichever inputs require grad. */
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

interface FamilyDef<O extends RingOptions> {
  variant: RingVariant<O>;
  frame: Frame;
  parse: ParseArgs<O>;
}

/** Calls per group so far: the fresh dropout seeds of SPMD ranks, which must agree without talking. */
const seedCounters = new Map<string, number>();

/**
 * A dropout seed for a call that gave none: the same on every rank of `group` (ranks issue their
 * calls in the same order), different for each call. A 53-bit mix of the group and the count.
 */
function freshSeed(group: Group): number {
  const n = (seedCounters.get(group.key) ?? 0) + 1;
  seedCounters.set(group.key, n);
  let h1 = 0x9e3779b9 ^ n,
    h2 = 0x85ebca6b ^ Math.imul(n, 0x27d4eb2f);
  for (const ch of group.key) {
    const c = ch.charCodeAt(0);
    h1 = Math.imul(h1 ^ c, 0x01000193);
    h2 = Math.imul(h2 ^ c, 0x5bd1e995);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 0x85ebca6b) ^ Math.imul(h2 ^ (h2 >>> 13), 0xc2b2ae35);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 0xc2b2ae35) ^ h1;
  return (h2 >>> 0) * 2 ** 21 + (h1 >>> 11);
}

/** alibi_slopes must be (nheads) or (batch, nheads) of the call; a ring over varlen shards takes one slope per head. */
function checkAlibi(fn: string, layout: RingVariant['layout'], q: DeviceTensor, o: RingOptions): void {
  const a = o.alibi;
  if (!a) return;
  const [b, , h] = q.shape as [number, number, number];
  const varlen = layout === 'varlen' || layout === 'zigzag_varlen' || layout === 'llama3';
  const seqs = (o as { seg?: { qStart: unknown[] } }).seg?.qStart.length;
  const batch = seqs ?? b;
  if (a.shape.length === 2 && varlen)
    fail(
      'E_UNSUPPORTED',
      `${fn}: alibi_slopes of shape (batch, nheads) with a varlen ring is not supported; give one slope per head (nheads)`,
    );
  const want = a.shape.length === 2 ? [batch, h] : [h];
  if (a.shape.join() !== want.join())
    fail('E_SHAPE', `${fn}: alibi_slopes must be (${h}) or (${batch}, ${h}), got (${a.shape.join(', ')})`);
}

function attend<O extends RingOptions>({ variant, frame, parse }: FamilyDef<O>, c: Call): AttnResult {
  const a = parse(c.fn, c.rest, c.q, c.k, c.v);
  const backend = currentContext().backend;
  const [q, k, v] = [c.q, c.k, c.v].map(frame.toKernel) as [DeviceTensor, DeviceTensor, DeviceTensor];
  variant.check?.(c.fn, q, k, a.o, a.group);
  checkBackendSupports(c.fn, backend, a.o, q.shape[q.shape.length - 1]!);
  checkAlibi(c.fn, variant.layout, q, a.o);
  if ((a.o.dropoutP ?? 0) > 0 && a.o.dropoutSeed === undefined) a.o.dropoutSeed = freshSeed(a.group);
  const fwd: RingForward = variant.forward(backend, a.group, q, k, v, a.o);
  const out = toDtype(backend, frame.toPublic(fwd.out), c.q);
  if ((a.o.dropoutP ?? 0) > 0) out.dropoutSeed = a.o.dropoutSeed!;
  out.gradFn = (dout: DeviceTensor) => {
    checkTensor(`${c.fn} backward`, 'dout', dout, frame.ndim, frame.layouts.q);
    if (dout.shape.join() !== c.q.shape.join())
      fail(
        'E_SHAPE',
        `${c.fn} backward: dout shape (${dout.shape.join(', ')}) != out shape (${c.q.shape.join(', ')})`,
      );
    if (!c.inputs.some((t) => t.requiresGrad))
      fail('E_ARG', `${c.fn} backward: none of the inputs requires grad`);
    const d = toDtype(backend, dout, c.q);
    const grads = variant.backward(backend, a.group, frame.toKernel(d), q, k, v, fwd, a.o);
    c.sink(backend, {
      dq: frame.toPublic(grads.dq),
      dk: frame.toPublic(grads.dk),
      dv: frame.toPublic(grads.dv),
    });
    // Free the grads no input kept (dk and dv may share one buffer).
    for (const g of [grads.dq, grads.dk, grads.dv])
      if (!c.inputs.some((t) => t.grad?.storage === g.storage)) g.storage.release();
    if (d !== dout) d.dispose();
  };
  // The fp32 out (when the caller got a cast) and, unless returned, the lse live until out.dispose().
  out.releaseSaved = () => {
    if (fwd.out.storage !== out.storage) fwd.out.dispose();
    if (!a.returnAttnProbs) fwd.lse.dispose();
    fwd.release?.();
  };
  return a.returnAttnProbs ? [out, frame.toPublic(fwd.lse), null] : out;
}

/** The three wrappers; R is the Python positional/keyword tail after the tensors. */
export interface AttnFamily<R extends unknown[]> {
  func(q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, ...rest: R): AttnResult;
  kvpacked(q: DeviceTensor, kv: DeviceTensor, ...rest: R): AttnResult;
  qkvpacked(qkv: DeviceTensor, ...rest: R): AttnResult;
}

/** The wrappers of any family: `parse` reads the arguments after the tensors, `frame` maps the tensors. */
export function makeFamily<O extends RingOptions, R extends unknown[]>(
  variant: RingVariant<O>,
  frame: Frame,
  parse: ParseArgs<O>,
): AttnFamily<R> {
  const name = variant.name,
    suffix = variant.suffix ?? '';
  const def: FamilyDef<O> = { variant, frame, parse };
  const L = frame.layouts,
    P = frame.packAxis;
  return {
    func(q, k, v, ...rest) {
      const fn = `${name}_func${suffix}`;
      checkTensor(fn, 'q', q, frame.ndim, L.q);
      checkTensor(fn, 'k', k, frame.ndim, L.k);
      checkTensor(fn, 'v', v, frame.ndim, L.k);
      return attend(def, {
        fn,
        q,
        k,
        v,
        rest,
        inputs: [q, k, v],
        sink: (backend, g) => {
          if (q.requiresGrad) q.grad = toDtype(backend, g.dq, q);
          if (k.requiresGrad) k.grad = toDtype(backend, g.dk, k);
          if (v.requiresGrad) v.grad = toDtype(backend, g.dv, v);
        },
      });
    },
    kvpacked(q, kv, ...rest) {
      const fn = `${name}_kvpacked_func${suffix}`;
      checkTensor(fn, 'q', q, frame.ndim, L.q);
      checkTensor(fn, 'kv', kv, frame.ndim + 1, L.kv);
      if (kv.shape[P] !== 2) fail('E_SHAPE', `${fn}: kv axis ${P} must be 2 (k, v), got ${kv.shape[P]}`);
      return attend(def, {
        fn,
        q,
        k: kv.select(P, 0),
        v: kv.select(P, 1),
        rest,
        inputs: [q, kv],
        sink: (backend, g) => {
          if (q.requiresGrad) q.grad = toDtype(backend, g.dq, q);
          if (kv.requiresGrad) kv.grad = packGrads(backend, frame, kv, [g.dk, g.dv]);
        },
      });
    },
    qkvpacked(qkv, ...rest) {
      const fn = `${name}_qkvpacked_func${suffix}`;
      checkTensor(fn, 'qkv', qkv, frame.ndim + 1, L.qkv);
      if (qkv.shape[P] !== 3)
        fail('E_SHAPE', `${fn}: qkv axis ${P} must be 3 (q, k, v), got ${qkv.shape[P]}`);
      return attend(def, {
        fn,
        q: qkv.select(P, 0),
        k: qkv.select(P, 1),
        v: qkv.select(P, 2),
        rest,
        inputs: [qkv],
        sink: (backend, g) => {
          if (qkv.requiresGrad) qkv.grad = packGrads(backend, frame, qkv, [g.dq, g.dk, g.dv]);
        },
      });
    },
  };
}

/** The dense wrappers: tensors (b, s, h, d), the ring functions' positional tail. */
export function attnFamily<R extends unknown[] = RingArgs>(variant: RingVariant): AttnFamily<R> {
  const single = variant.layout === 'single';
  return makeFamily<RingOptions, R>(variant, DENSE_FRAME, (fn, rest, q, k, v) => {
    const a = parseAttnArgs(fn, rest, variant.positional);
    checkQkv(fn, q, k, v);
    if (!single && k.shape[1] !== q.shape[1])
      fail(
        'E_SHAPE',
        `${fn}: k seqlen ${k.shape[1]} != q seqlen ${q.shape[1]} (ring shards hold equal lengths)`,
      );
    const group = single ? currentContext().newGroup([currentContext().rank]) : resolveGroup(fn, a.group);
    return { o: ringOptions(a, q.shape[3]!), group, returnAttnProbs: a.returnAttnProbs };
  });
}

/** Stacks per-tensor grads (fp32 or already in the input's dtype) along the frame's pack axis into a tensor shaped like the packed input. */
function packGrads(backend: Backend, frame: Frame, like: DeviceTensor, parts: DeviceTensor[]): DeviceTensor {
  const grad = backend.empty(like.shape, like.dtype);
  parts.forEach((p, i) => {
    const dst = frame.toKernel(grad.select(frame.packAxis, i)),
      src = frame.toKernel(p);
    if (p.dtype === like.dtype) backend.copy(dst, src);
    else backend.castInto(dst, src);
  });
  return grad;
}

// llama3_flash_attn_varlen_*: the context parallelism of the Llama 3 report. The packed tokens
// are split contiguously over the ranks; instead of a ring, K/V are all-gathered, `heads_k_stride`
// KV heads at a time (the next group's gather is issued before the current group is computed),
// and each rank attends with its local queries to the slice of gathered keys they need
// (`local_k_slice`, from llama3_flash_attn_prepare_cu_seqlens). Backward reduce-scatters the
// fp32 dK/dV of every head group back to the ranks that own those keys.
import type { Backend } from '../../runtime/backend.js';
import type { Group } from '../../runtime/comm.js';
import { fail } from '../../runtime/errors.js';
import { describeValue, type DeviceTensor } from '../../runtime/tensor.js';
import { ATTN_POSITIONAL } from '../args.js';
import { checkCuSeqlens, checkMaxSeqlen, maxSeqLength } from './cu_seqlens.js';
import { HeadGroupGather, HeadGroupReduce } from './head_groups.js';
import { segmentSpec, spansOf } from './segments.js';
import type { KSlice, Llama3Args } from '../types.js';
import { varlenFamily, type ReadVarlen } from './wrappers.js';
import { CallHooks, isPositional, positionFreeHooks } from '../hooks.js';
import { maskOf } from '../ring/positional_ring.js';
import type { ScoreHooks } from '../../runtime/kernel_args.js';
import type { RingBackwardFn, RingForwardFn, RingOptions, RingVariant } from '../variant.js';

export interface Llama3Options extends RingOptions {
  cuSeqlensQ: Int32Array;
  /** Sequences of the gathered keys in `localKSlice`, one per sequence of cuSeqlensQ. */
  cuSeqlensK: Int32Array;
  maxSeqlenQ: number;
  maxSeqlenK: number;
  headsKStride: number;
  /** Rows [start, stop) of the gathered (world · local tokens) keys this rank attends to. */
  localKSlice: KSlice;
}

export const LLAMA3_POSITIONAL = [
  'cu_seqlens_q',
  'cu_seqlens_k',
  'max_seqlen_q',
  'max_seqlen_k',
  'heads_k_stride',
  'local_k_slice',
  ...ATTN_POSITIONAL,
] as const;

const PREPARE = 'llama3_flash_attn_prepare_cu_seqlens';

/** First index i with a[i] >= x (torch.searchsorted, left side). */
function searchsorted(a: Int32Array, x: number): number {
  let lo = 0,
    hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (a[mid]! < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * llama3_flash_attn_prepare_cu_seqlens(cu_seqlens, causal, rank, world_size): for the GLOBAL
 * cu_seqlens, rank's [cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, local_k_slice].
 * q is the rank's contiguous 1/world of the tokens; k starts at the beginning of its first
 * sequence and ends with its queries (causal) or at the end of its last sequence (not causal).
 */
export function llama3_flash_attn_prepare_cu_seqlens(
  cu_seqlens: unknown,
  causal: boolean,
  rank: number,
  world_size: number,
): [Int32Array, Int32Array, number, number, KSlice] {
  const cu = checkCuSeqlens(PREPARE, 'cu_seqlens', cu_seqlens, null, '');
  if (typeof causal !== 'boolean')
    fail('E_ARG', `${PREPARE}: causal must be a boolean, got ${describeValue(causal)}`);
  if (!Number.isInteger(world_size) || world_size < 1)
    fail('E_ARG', `${PREPARE}: world_size must be a positive integer, got ${world_size}`);
  if (!Number.isInteger(rank) || rank < 0 || rank >= world_size)
    fail('E_ARG', `${PREPARE}: rank ${rank} out of range [0, ${world_size})`);
  const total = cu[cu.length - 1]!;
  if (total < 1 || total % world_size !== 0)
    fail(
      'E_SHAPE',
      `${PREPARE}: the total tokens (${total}) must be a positive multiple of world_size (${world_size})`,
    );
  const perRank = total / world_size;
  const first = rank * perRank,
    last = (rank + 1) * perRank;
  let left = searchsorted(cu, first);
  const right = searchsorted(cu, last);
  if (cu[left] !== first) left -= 1; // the rank starts inside sequence `left`
  const cuQ = cu.slice(left, right + 1).map((x) => x - first);
  cuQ[0] = 0;
  cuQ[cuQ.length - 1] = perRank;
  const cuK = cu.slice(left, right + 1);
  const sliceLeft = cu[left]!,
    sliceRight = causal ? last : cu[right]!;
  cuK[cuK.length - 1] = sliceRight;
  for (let i = 0; i < cuK.length; i++) cuK[i] -= sliceLeft;
  return [cuQ, cuK, maxSeqLength(cuQ), maxSeqLength(cuK), { start: sliceLeft, stop: sliceRight }];
}

/** The slice as JSON where it has one, else its kind (a BigInt or a cycle has none). */
function showSlice(x: unknown): string {
  try {
    return JSON.stringify(x) ?? describeValue(x);
  } catch {
    return describeValue(x);
  }
}

function checkSlice(fn: string, x: unknown, gathered: number): KSlice {
  const s = x as Partial<KSlice> | null | undefined;
  const ok =
    !!s &&
    typeof s === 'object' &&
    Number.isInteger(s.start) &&
    Number.isInteger(s.stop) &&
    s.start! >= 0 &&
    s.start! <= s.stop! &&
    s.stop! <= gathered;
  if (!ok)
    fail(
      'E_ARG',
      `${fn}: local_k_slice must be { start, stop } within the ${gathered} gathered keys, got ${showSlice(x)}`,
    );
  return { start: s!.start!, stop: s!.stop! };
}

const readLlama3: ReadVarlen<Llama3Options> = (fn, kw, q, k, base, group) => {
  for (const name of ['cu_seqlens_q', 'cu_seqlens_k', 'heads_k_stride', 'local_k_slice'])
    if (kw[name] === undefined) fail('E_ARG', `${fn}: ${name} is required`);
  const hk = k.shape[1]!;
  const stride = kw.heads_k_stride;
  if (typeof stride !== 'number' || !Number.isInteger(stride) || stride < 1 || hk % stride !== 0)
    fail(
      'E_ARG',
      `${fn}: heads_k_stride must be a positive integer dividing nheads_k (${hk}), got ${describeValue(stride)}`,
    );
  const localKSlice = checkSlice(fn, kw.local_k_slice, k.shape[0]! * group.size);
  const cuSeqlensQ = checkCuSeqlens(
    fn,
    'cu_seqlens_q',
    kw.cu_seqlens_q,
    q.shape[0]!,
    'the total tokens of q',
  );
  const cuSeqlensK = checkCuSeqlens(
    fn,
    'cu_seqlens_k',
    kw.cu_seqlens_k,
    localKSlice.stop - localKSlice.start,
    'the length of local_k_slice',
  );
  if (cuSeqlensK.length !== cuSeqlensQ.length)
    fail(
      'E_ARG',
      `${fn}: cu_seqlens_q and cu_seqlens_k must describe the same sequences, got ${cuSeqlensQ.length - 1} and ${cuSeqlensK.length - 1}`,
    );
  return {
    ...base,
    cuSeqlensQ,
    cuSeqlensK,
    headsKStride: stride,
    localKSlice,
    maxSeqlenQ: checkMaxSeqlen(fn, 'max_seqlen_q', kw.max_seqlen_q, cuSeqlensQ, 'cu_seqlens_q'),
    maxSeqlenK: checkMaxSeqlen(fn, 'max_seqlen_k', kw.max_seqlen_k, cuSeqlensK, 'cu_seqlens_k'),
  };
};

/** The views of head group i: its query heads of a (1, s, h, d) or (1, h, s) tensor, and its rows of the gathered keys. */
function groupViews(q: DeviceTensor, k: DeviceTensor, o: Llama3Options, i: number) {
  const perGroup = o.headsKStride * (q.shape[2]! / k.shape[2]!);
  const { start, stop } = o.localKSlice;
  return {
    heads: (t: DeviceTensor) => t.narrow(2, i * perGroup, perGroup),
    lseHeads: (t: DeviceTensor) => t.narrow(1, i * perGroup, perGroup),
    keys: (t: DeviceTensor) => t.narrow(1, start, stop - start),
    // ALiBi slopes and dropout draws are by the global head index.
    hooks: (h: ScoreHooks | undefined) =>
      h ? { ...h, headOffset: (h.headOffset ?? 0) + i * perGroup } : undefined,
  };
}

/** One table for every head group: q sequences against their key slices. */
const specOf = (o: Llama3Options) => segmentSpec(spansOf(o.cuSeqlensQ), spansOf(o.cuSeqlensK));

/**
 * The hooks and the segment table of this rank's calls. With options that read positions: query
 * row i is packed token rank·s + i and the gathered key row j is token start + j, each sequence
 * starting at token start + cu_seqlens_k[t] (its keys begin with the sequence); with a window,
 * each sequence's key span shrinks to the keys its local queries can reach.
 */
function callsOf(backend: Backend, group: Group, s: number, o: Llama3Options) {
  const hooks = new CallHooks(backend, o);
  const spec = specOf(o);
  if (!isPositional(o)) return { hooks, at: positionFreeHooks(o), spec };
  const { cuSeqlensQ: cuQ, cuSeqlensK: cuK } = o;
  const first = group.rank * s,
    base = o.localKSlice.start;
  const q = new Int32Array(s),
    k = new Int32Array(o.localKSlice.stop - base);
  const seqTok: number[] = [];
  const { left, right } = maskOf(o);
  for (let t = 0; t + 1 < cuQ.length; t++) {
    const start = base + cuK[t]!;
    seqTok.push(start);
    for (let i = cuQ[t]!; i < cuQ[t + 1]!; i++) q[i] = first + i - start;
    for (let j = cuK[t]!; j < cuK[t + 1]!; j++) k[j] = j - cuK[t]!;
    const len = cuK[t + 1]! - cuK[t]!;
    if (cuQ[t + 1]! === cuQ[t]! || len === 0) continue;
    const lo = left < 0 ? 0 : Math.max(0, q[cuQ[t]!]! - left);
    const hi = right < 0 ? len - 1 : Math.min(len - 1, q[cuQ[t + 1]! - 1]! + right);
    spec.kStart[t] = cuK[t]! + lo;
    spec.kLen[t] = Math.max(0, hi - lo + 1);
  }
  return { hooks, at: hooks.at({ q, k, diag: 0, seqTok }), spec };
}

export const llama3Forward: RingForwardFn<Llama3Options> = (backend, group, q, k, v, o) => {
  const [, s, h, d] = q.shape as [number, number, number, number];
  const out = backend.empty([1, s, h, d], 'float32');
  const lse = backend.empty([1, h, s], 'float32');
  const hk = callsOf(backend, group, s, o);
  const seg = backend.segments(hk.spec);
  const attn = { softmaxScale: o.softmaxScale, causal: o.causal, seg };
  const gather = new HeadGroupGather(backend, group, k, v, o.headsKStride);
  for (let i = 0; i < gather.groups; i++) {
    const kv = gather.next();
    const g = groupViews(q, k, o, i);
    backend.flashFwd(g.heads(q), g.keys(kv.k), g.keys(kv.v), g.heads(out), g.lseHeads(lse), {
      ...attn,
      hooks: g.hooks(hk.at),
    });
  }
  gather.dispose();
  hk.hooks.release();
  seg.release();
  return { out, lse };
};

export const llama3Backward: RingBackwardFn<Llama3Options> = (backend, group, dout, q, k, v, fwd, o) => {
  const [, s, h] = q.shape as [number, number, number, number];
  const dq = backend.zeros(q.shape, 'float32');
  const dsum = backend.empty([1, h, s], 'float32');
  backend.flashBwdDot(dout, fwd.out, dsum);
  const hk = callsOf(backend, group, s, o);
  const seg = backend.segments(hk.spec);
  const attn = {
    softmaxScale: o.softmaxScale,
    causal: o.causal,
    seg,
    accumulate: true,
    deterministic: o.deterministic,
  };
  const gather = new HeadGroupGather(backend, group, k, v, o.headsKStride);
  const reduce = new HeadGroupReduce(backend, group, k, o.headsKStride);
  for (let i = 0; i < gather.groups; i++) {
    const kv = gather.next();
    const dkv = reduce.acquire(i);
    const g = groupViews(q, k, o, i);
    backend.flashBwd(
      {
        dout: g.heads(dout),
        q: g.heads(q),
        k: g.keys(kv.k),
        v: g.keys(kv.v),
        lse: g.lseHeads(fwd.lse),
        dsum: g.lseHeads(dsum),
        dq: g.heads(dq),
        dk: g.keys(dkv.k),
        dv: g.keys(dkv.v),
      },
      { ...attn, hooks: g.hooks(hk.at) },
    );
    reduce.scatter(i);
  }
  const { k: dk, v: dv } = reduce.finish();
  gather.dispose();
  hk.hooks.release();
  seg.release();
  dsum.dispose();
  return { dq, dk, dv };
};

export const llama3Variant: RingVariant<Llama3Options> = {
  name: 'llama3_flash_attn_varlen',
  layout: 'llama3',
  positional: LLAMA3_POSITIONAL,
  forward: llama3Forward,
  backward: llama3Backward,
};

const family = varlenFamily<Llama3Options, Llama3Args>(llama3Variant, readLlama3);

/**
 * llama3_flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
 * heads_k_stride, local_k_slice, dropout_p?, softmax_scale?, causal?, ...): q, k, v the rank's
 * contiguous 1/world of the packed tokens; the varlen arguments from llama3_flash_attn_prepare_cu_seqlens.
 */
export const llama3_flash_attn_varlen_func = family.func;
/** llama3 varlen attention with packed kv (total/world, 2, h_k, d). */
export const llama3_flash_attn_varlen_kvpacked_func = family.kvpacked;
/** llama3 varlen attention with packed qkv (total/world, 3, h, d). */
export const llama3_flash_attn_varlen_qkvpacked_func = family.qkvpacked;
export const llama3FlashAttnPrepareCuSeqlens = llama3_flash_attn_prepare_cu_seqlens;
export const llama3FlashAttnVarlenFunc = llama3_flash_attn_varlen_func;
export const llama3FlashAttnVarlenKvpackedFunc = llama3_flash_attn_varlen_kvpacked_func;
export const llama3FlashAttnVarlenQkvpackedFunc = llama3_flash_attn_varlen_qkvpacked_func;

// zigzag_llama3_flash_attn_varlen_*: llama3's all-gather of K/V (head group by head group, the
// next group's gather in flight) over the zigzag varlen layout: every packed sequence is cut into
// 2·world chunks and rank r holds chunks r and 2·world−1−r of each, so under a causal mask every
// rank attends to the same number of keys (llama3's contiguous split leaves the last rank the
// most work). The gathered keys arrive rank-major, and each rank's block is computed as the
// zigzag varlen ring's step that holds it would (blockSteps). Options that read global positions
// take the other path: one permutation puts each sequence's chunks back in order, after which a
// query chunk c of sequence i sees one contiguous key range (chunks 0..c, causal bottom-right);
// its backward permutes the fp32 dK/dV back to rank-major before the reduce-scatter returns them.
import type { Backend } from '../../runtime/backend.js';
import type { Group } from '../../runtime/comm.js';
import { fail } from '../../runtime/errors.js';
import { describeValue, type DeviceTensor } from '../../runtime/tensor.js';
import { ATTN_POSITIONAL } from '../args.js';
import type { KvPair } from '../ring/kv_buffer.js';
import { disposeAll } from '../ring/kv_buffer.js';
import type { ScoreHooks } from '../../runtime/kernel_args.js';
import { CallHooks, isPositional, positionFreeHooks } from '../hooks.js';
import type { ZigzagLlama3Args } from '../types.js';
import type { RingBackwardFn, RingForwardFn, RingOptions, RingVariant } from '../variant.js';
import { checkCuSeqlens, checkSeqDivisible, maxSeqLength } from './cu_seqlens.js';
import { HeadGroupGather, HeadGroupReduce } from './head_groups.js';
import { segmentSpec, SegmentTables, type SegmentSpec } from './segments.js';
import { zigzagVarlenPlan } from './zigzag_ring_varlen.js';
import { readCuSeqlens, varlenFamily, type VarlenOptions } from './wrappers.js';

export interface ZigzagLlama3Options extends VarlenOptions {
  headsKStride: number;
}

export const ZIGZAG_LLAMA3_POSITIONAL = [
  'cu_seqlens',
  'max_seqlen',
  'heads_k_stride',
  ...ATTN_POSITIONAL,
] as const;

const PREPARE = 'zigzag_llama3_flash_attn_prepare_cu_seqlens';

/**
 * zigzag_llama3_flash_attn_prepare_cu_seqlens(cu_seqlens, causal, rank, world_size): for the
 * GLOBAL cu_seqlens, the rank's [cu_seqlens, max_seqlen] (every sequence's length divided by
 * world: the same for every rank and either mask; the arguments mirror llama3's helper).
 */
export function zigzag_llama3_flash_attn_prepare_cu_seqlens(
  cu_seqlens: unknown,
  causal: boolean,
  rank: number,
  world_size: number,
): [Int32Array, number] {
  const cu = checkCuSeqlens(PREPARE, 'cu_seqlens', cu_seqlens, null, '');
  if (typeof causal !== 'boolean')
    fail('E_ARG', `${PREPARE}: causal must be a boolean, got ${describeValue(causal)}`);
  if (!Number.isInteger(world_size) || world_size < 1)
    fail('E_ARG', `${PREPARE}: world_size must be a positive integer, got ${describeValue(world_size)}`);
  if (!Number.isInteger(rank) || rank < 0 || rank >= world_size)
    fail('E_ARG', `${PREPARE}: rank ${describeValue(rank)} out of range [0, ${world_size})`);
  checkSeqDivisible(
    PREPARE,
    'cu_seqlens',
    cu,
    2 * world_size,
    'each sequence is cut into 2·world_size chunks',
  );
  const local = cu.map((x) => x / world_size);
  return [local, maxSeqLength(local)];
}

function readZigzagLlama3(
  fn: string,
  kw: Record<string, unknown>,
  q: DeviceTensor,
  k: DeviceTensor,
  base: RingOptions,
): ZigzagLlama3Options {
  const o = readCuSeqlens(fn, kw, q, k, base);
  const hk = k.shape[1]!;
  const stride = kw.heads_k_stride ?? 1;
  if (typeof stride !== 'number' || !Number.isInteger(stride) || stride < 1 || hk % stride !== 0)
    fail(
      'E_ARG',
      `${fn}: heads_k_stride must be a positive integer dividing nheads_k (${hk}), got ${describeValue(stride)}`,
    );
  return { ...o, headsKStride: stride };
}

function checkZigzagLlama3(fn: string, _q: DeviceTensor, _k: DeviceTensor, o: ZigzagLlama3Options): void {
  checkSeqDivisible(fn, 'cu_seqlens', o.cuSeqlens, 2, 'each rank holds two equal chunks of every sequence');
}

/** One chunk move of the permutation: `rows` rows at `gathered` (rank-major) and `ordered` (sequence order). */
interface ChunkMove {
  gathered: number;
  ordered: number;
  rows: number;
}

/**
 * Where the gathered keys' chunks go in sequence order. Rank r's block starts at r·s (s local
 * rows); in it, local sequence i (start L, length l) is chunk r then chunk 2W−1−r of l/2 rows;
 * in sequence order, sequence i starts at W·L and chunk c sits c·l/2 rows into it.
 */
export function chunkMoves(cuSeqlens: Int32Array, world: number): ChunkMove[] {
  const s = cuSeqlens[cuSeqlens.length - 1]!;
  const moves: ChunkMove[] = [];
  for (let r = 0; r < world; r++)
    for (let i = 0; i + 1 < cuSeqlens.length; i++) {
      const start = cuSeqlens[i]!,
        half = (cuSeqlens[i + 1]! - start) / 2;
      if (half === 0) continue;
      const seq = world * start;
      moves.push({ gathered: r * s + start, ordered: seq + r * half, rows: half });
      moves.push({ gathered: r * s + start + half, ordered: seq + (2 * world - 1 - r) * half, rows: half });
    }
  return moves;
}

/**
 * The local chunks against the keys they see in sequence order: chunks 0..c for global chunk c
 * when causal (bottom-right aligned: its own chunk is the last), the whole sequence otherwise.
 * `which` picks every sequence's first local chunk, its second, or both (the forward's one table).
 * The backward runs the two halves as separate calls: within one, key ranges of different
 * segments are disjoint, which the CUDA backward needs (it owns each key row in one segment).
 */
export function zigzagLlama3Spec(
  cuSeqlens: Int32Array,
  world: number,
  rank: number,
  causal: boolean,
  which: 'both' | 'front' | 'back' = 'both',
): SegmentSpec {
  const q = { start: [] as number[], len: [] as number[] };
  const k = { start: [] as number[], len: [] as number[] };
  const halves = which === 'both' ? [0, 1] : which === 'front' ? [0] : [1];
  for (let i = 0; i + 1 < cuSeqlens.length; i++) {
    const start = cuSeqlens[i]!,
      half = (cuSeqlens[i + 1]! - start) / 2;
    for (const j of halves) {
      const c = j === 0 ? rank : 2 * world - 1 - rank;
      q.start.push(start + j * half);
      q.len.push(half);
      k.start.push(world * start);
      k.len.push((causal ? c + 1 : 2 * world) * half);
    }
  }
  return segmentSpec(q, k);
}

/**
 * The option hooks of the ordered path's calls (options that read positions), one per segment
 * table (`which` as zigzagLlama3Spec), by head group: local query row j of sequence i (start L,
 * half c) sits at r·c + j in its first chunk and (2W−1−r)·c + j − c in its second; an ordered key
 * row sits at its offset from the sequence's start W·L, which is also its packed token base.
 */
function hooksOf(backend: Backend, group: Group, s: number, o: ZigzagLlama3Options) {
  const hooks = new CallHooks(backend, o);
  const W = group.size,
    r = group.rank,
    cu = o.cuSeqlens;
  const table = new Map<string, ScoreHooks>();
  const q = new Int32Array(s),
    k = new Int32Array(W * s);
  for (let i = 0; i + 1 < cu.length; i++) {
    const L = cu[i]!,
      c = (cu[i + 1]! - L) / 2;
    for (let j = 0; j < c; j++) {
      q[L + j] = r * c + j;
      q[L + c + j] = (2 * W - 1 - r) * c + j;
    }
    for (let j = 0; j < 2 * W * c; j++) k[W * L + j] = j;
  }
  const at = (which: 'both' | 'front' | 'back', headOffset: number): ScoreHooks => {
    let h = table.get(which);
    if (!h) {
      const seqTok: number[] = [];
      for (let i = 0; i + 1 < cu.length; i++)
        for (let n = which === 'both' ? 2 : 1; n > 0; n--) seqTok.push(W * cu[i]!);
      table.set(which, (h = hooks.at({ q, k, diag: 0, seqTok })));
    }
    return { ...h, headOffset: (o.headOffset ?? 0) + headOffset };
  };
  return { at, release: () => hooks.release() };
}

/** Copies a head group's gathered K/V (rank-major) into sequence order, or back (`toGathered`). */
function permute(backend: Backend, moves: ChunkMove[], from: KvPair, to: KvPair, toGathered: boolean): void {
  for (const m of moves) {
    const [src, dst] = toGathered ? [m.ordered, m.gathered] : [m.gathered, m.ordered];
    backend.copy(to.k.narrow(1, dst, m.rows), from.k.narrow(1, src, m.rows));
    backend.copy(to.v.narrow(1, dst, m.rows), from.v.narrow(1, src, m.rows));
  }
}

/** Query heads of head group i of a (1, s, h, d) tensor or its (1, h, s) lse. */
function headViews(q: DeviceTensor, k: DeviceTensor, stride: number, i: number) {
  const perGroup = stride * (q.shape[2]! / k.shape[2]!);
  return {
    heads: (t: DeviceTensor) => t.narrow(2, i * perGroup, perGroup),
    lseHeads: (t: DeviceTensor) => t.narrow(1, i * perGroup, perGroup),
    firstHead: i * perGroup,
  };
}

function orderedPair(
  backend: Backend,
  like: DeviceTensor,
  rows: number,
  stride: number,
  dtype = like.dtype,
): KvPair {
  const d = like.shape[3]!;
  return { k: backend.empty([1, rows, stride, d], dtype), v: backend.empty([1, rows, stride, d], dtype) };
}

/**
 * Without position-reading options the gathered keys need no reordering: rank j's block (rows
 * j·s.., its two chunks of every sequence) is what a zigzag varlen ring would hold at step
 * (r − j) mod W, so that step's block plan covers it, and the blocks merge through the lse as the
 * ring's steps do. One kernel call per block replaces a copy per chunk and sequence.
 */
function blockSteps(o: ZigzagLlama3Options, group: Group, s: number) {
  const plan = zigzagVarlenPlan(o, group);
  const W = group.size,
    r = group.rank;
  // The own block first: its call writes every query row, the others merge into them.
  return Array.from({ length: W }, (_, i) => {
    const j = (r - i + W) % W;
    return { rows: { start: j * s, length: s }, plan: plan(i, group, s, o)! };
  });
}

const gatheredForward: RingForwardFn<ZigzagLlama3Options> = (backend, group, q, k, v, o) => {
  const [, s, h, d] = q.shape as [number, number, number, number];
  const out = backend.empty([1, s, h, d], 'float32');
  const lse = backend.empty([1, h, s], 'float32');
  const tables = new SegmentTables(backend);
  const steps = blockSteps(o, group, s);
  const hooks = positionFreeHooks(o);
  const gather = new HeadGroupGather(backend, group, k, v, o.headsKStride);
  for (let i = 0; i < gather.groups; i++) {
    const kv = gather.next();
    const g = headViews(q, k, o.headsKStride, i);
    steps.forEach(({ rows, plan }, n) =>
      backend.flashFwd(
        g.heads(q),
        kv.k.narrow(1, rows.start, rows.length),
        kv.v.narrow(1, rows.start, rows.length),
        g.heads(out),
        g.lseHeads(lse),
        {
          softmaxScale: o.softmaxScale,
          causal: plan.causal,
          seg: tables.get(plan.seg),
          hooks,
          merge: n > 0,
        },
      ),
    );
  }
  gather.dispose();
  tables.release();
  return { out, lse };
};

const gatheredBackward: RingBackwardFn<ZigzagLlama3Options> = (backend, group, dout, q, k, v, fwd, o) => {
  const [, s, h] = q.shape as [number, number, number, number];
  const dq = backend.zeros(q.shape, 'float32');
  const dsum = backend.empty([1, h, s], 'float32');
  backend.flashBwdDot(dout, fwd.out, dsum);
  const tables = new SegmentTables(backend);
  const steps = blockSteps(o, group, s);
  const hooks = positionFreeHooks(o);
  const gather = new HeadGroupGather(backend, group, k, v, o.headsKStride);
  const reduce = new HeadGroupReduce(backend, group, k, o.headsKStride);
  for (let i = 0; i < gather.groups; i++) {
    const kv = gather.next();
    const acc = reduce.acquire(i); // zeroed, rank-major like the gathered keys
    const g = headViews(q, k, o.headsKStride, i);
    for (const { rows, plan } of steps) {
      const block = (t: DeviceTensor) => t.narrow(1, rows.start, rows.length);
      backend.flashBwd(
        {
          dout: g.heads(dout),
          q: g.heads(q),
          k: block(kv.k),
          v: block(kv.v),
          lse: g.lseHeads(fwd.lse),
          dsum: g.lseHeads(dsum),
          dq: g.heads(dq),
          dk: block(acc.k),
          dv: block(acc.v),
        },
        {
          softmaxScale: o.softmaxScale,
          causal: plan.causal,
          seg: tables.get(plan.seg),
          hooks,
          accumulate: true,
          deterministic: o.deterministic,
        },
      );
    }
    reduce.scatter(i);
  }
  const { k: dk, v: dv } = reduce.finish();
  gather.dispose();
  tables.release();
  dsum.dispose();
  return { dq, dk, dv };
};

const orderedForward: RingForwardFn<ZigzagLlama3Options> = (backend, group, q, k, v, o) => {
  const [, s, h, d] = q.shape as [number, number, number, number];
  const W = group.size;
  const out = backend.empty([1, s, h, d], 'float32');
  const lse = backend.empty([1, h, s], 'float32');
  const seg = backend.segments(zigzagLlama3Spec(o.cuSeqlens, W, group.rank, o.causal));
  const attn = { softmaxScale: o.softmaxScale, causal: o.causal, seg };
  const hooks = hooksOf(backend, group, s, o);
  const moves = chunkMoves(o.cuSeqlens, W);
  const ordered = orderedPair(backend, k, W * s, o.headsKStride);
  const gather = new HeadGroupGather(backend, group, k, v, o.headsKStride);
  for (let i = 0; i < gather.groups; i++) {
    permute(backend, moves, gather.next(), ordered, false);
    const g = headViews(q, k, o.headsKStride, i);
    backend.flashFwd(g.heads(q), ordered.k, ordered.v, g.heads(out), g.lseHeads(lse), {
      ...attn,
      hooks: hooks.at('both', g.firstHead),
    });
  }
  gather.dispose();
  disposeAll(ordered.k, ordered.v);
  hooks.release();
  seg.release();
  return { out, lse };
};

const orderedBackward: RingBackwardFn<ZigzagLlama3Options> = (backend, group, dout, q, k, v, fwd, o) => {
  const [, s, h] = q.shape as [number, number, number, number];
  const W = group.size;
  const dq = backend.zeros(q.shape, 'float32');
  const dsum = backend.empty([1, h, s], 'float32');
  backend.flashBwdDot(dout, fwd.out, dsum);
  const halves = ['front', 'back'] as const;
  const segs = halves.map((which) =>
    backend.segments(zigzagLlama3Spec(o.cuSeqlens, W, group.rank, o.causal, which)),
  );
  const hooks = hooksOf(backend, group, s, o);
  const moves = chunkMoves(o.cuSeqlens, W);
  const ordered = orderedPair(backend, k, W * s, o.headsKStride);
  const dOrdered = orderedPair(backend, k, W * s, o.headsKStride, 'float32');
  const gather = new HeadGroupGather(backend, group, k, v, o.headsKStride);
  const reduce = new HeadGroupReduce(backend, group, k, o.headsKStride);
  for (let i = 0; i < gather.groups; i++) {
    permute(backend, moves, gather.next(), ordered, false);
    backend.fill(dOrdered.k, 0);
    backend.fill(dOrdered.v, 0);
    const g = headViews(q, k, o.headsKStride, i);
    // Accumulate: key rows no local query sees (later chunks, under a causal mask) stay zero,
    // and the second half's call adds onto the first's.
    segs.forEach((seg, n) =>
      backend.flashBwd(
        {
          dout: g.heads(dout),
          q: g.heads(q),
          k: ordered.k,
          v: ordered.v,
          lse: g.lseHeads(fwd.lse),
          dsum: g.lseHeads(dsum),
          dq: g.heads(dq),
          dk: dOrdered.k,
          dv: dOrdered.v,
        },
        {
          softmaxScale: o.softmaxScale,
          causal: o.causal,
          seg,
          hooks: hooks.at(halves[n]!, g.firstHead),
          accumulate: true,
          deterministic: o.deterministic,
        },
      ),
    );
    permute(backend, moves, dOrdered, reduce.acquire(i), true);
    reduce.scatter(i);
  }
  const { k: dk, v: dv } = reduce.finish();
  gather.dispose();
  disposeAll(ordered.k, ordered.v, dOrdered.k, dOrdered.v);
  for (const seg of segs) seg.release();
  hooks.release();
  dsum.dispose();
  return { dq, dk, dv };
};

export const zigzagLlama3Forward: RingForwardFn<ZigzagLlama3Options> = (backend, group, q, k, v, o) =>
  (isPositional(o) ? orderedForward : gatheredForward)(backend, group, q, k, v, o);
export const zigzagLlama3Backward: RingBackwardFn<ZigzagLlama3Options> = (
  backend,
  group,
  dout,
  q,
  k,
  v,
  fwd,
  o,
) => (isPositional(o) ? orderedBackward : gatheredBackward)(backend, group, dout, q, k, v, fwd, o);

export const zigzagLlama3Variant: RingVariant<ZigzagLlama3Options> = {
  name: 'zigzag_llama3_flash_attn_varlen',
  layout: 'zigzag_varlen',
  positional: ZIGZAG_LLAMA3_POSITIONAL,
  check: checkZigzagLlama3,
  forward: zigzagLlama3Forward,
  backward: zigzagLlama3Backward,
};

const family = varlenFamily<ZigzagLlama3Options, ZigzagLlama3Args>(zigzagLlama3Variant, readZigzagLlama3);

/**
 * zigzag_llama3_flash_attn_varlen_func(q, k, v, cu_seqlens, max_seqlen, heads_k_stride?,
 * dropout_p?, softmax_scale?, causal?, ...): q (total/world, h, d) holding chunks r and
 * 2·world−1−r of every sequence (zigzag_llama3_extract_local); cu_seqlens and max_seqlen local to
 * the rank (zigzag_llama3_flash_attn_prepare_cu_seqlens); K/V gathered heads_k_stride heads at a time.
 */
export const zigzag_llama3_flash_attn_varlen_func = family.func;
/** zigzag llama3 varlen attention with packed kv (total/world, 2, h_k, d). */
export const zigzag_llama3_flash_attn_varlen_kvpacked_func = family.kvpacked;
/** zigzag llama3 varlen attention with packed qkv (total/world, 3, h, d). */
export const zigzag_llama3_flash_attn_varlen_qkvpacked_func = family.qkvpacked;
export const zigzagLlama3FlashAttnPrepareCuSeqlens = zigzag_llama3_flash_attn_prepare_cu_seqlens;
export const zigzagLlama3FlashAttnVarlenFunc = zigzag_llama3_flash_attn_varlen_func;
export const zigzagLlama3FlashAttnVarlenKvpackedFunc = zigzag_llama3_flash_attn_varlen_kvpacked_func;
export const zigzagLlama3FlashAttnVarlenQkvpackedFunc = zigzag_llama3_flash_attn_varlen_qkvpacked_func;

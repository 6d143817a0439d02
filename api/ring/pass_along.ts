// The pass-along ring shared by ring_v2, zigzag and stripe: every step each rank sends the K/V
// block it holds to r+1 and receives the next from r−1 (the transfer is issued before the current
// block is computed). A variant only says, per step, which rows of its queries attend to which
// rows of the block it holds (its BlockPlan). In backward each block's fp32 dK/dV accumulator
// travels with it and, after a full turn, arrives back at its owner with every contribution (on
// its last hop in k's dtype).
// Varlen variants add a segment table to a plan: the kernel then covers only the given spans of
// every sequence, and rows outside them keep what they had.
import type { Backend } from '../../runtime/backend.js';
import { ringPeer, type Group, type Pending } from '../../runtime/comm.js';
import type { DeviceTensor } from '../../runtime/tensor.js';
import { disposeAll, emptyKv, kvOps, sendableKv, type KvBuffer, type KvPair } from './kv_buffer.js';
import { coversQueries, SegmentTables, type SegmentSpec } from '../varlen/segments.js';
import { isPositional, positionFreeHooks } from '../hooks.js';
import { positionalBackward, positionalForward, type PositionalLayout } from './positional_ring.js';
import type {
  RingForward,
  RingGrads,
  RingOptions,
  RingVariant,
  RingBackwardFn,
  RingForwardFn,
} from '../variant.js';

/** Rows [start, start + length) of the sequence axis. */
export interface Rows {
  start: number;
  length: number;
}

/** What one step computes: query rows `q` against key/value rows `kv` of the held block. */
export interface BlockPlan {
  q: Rows;
  kv: Rows;
  causal: boolean;
  /** Packed sequences: per-sequence spans within the `q` and `kv` rows (causal applies per span). */
  seg?: SegmentSpec;
}

/**
 * The plan of `step` (0: the rank's own block; step s: the block of rank r−s) for a rank with
 * `seqlen` local tokens; null when nothing of the block is visible.
 */
export type PlanFn = (step: number, group: Group, seqlen: number, o: RingOptions) => BlockPlan | null;

function passAlong(backend: Backend, group: Group, cur: KvPair, next: KvPair): Pending {
  return backend
    .comm(group)
    .sendRecv(
      kvOps(ringPeer(group.rank, 1, group.size), cur),
      kvOps(ringPeer(group.rank, -1, group.size), next),
    );
}

/**
 * The buffers a pass-along ring receives K/V blocks into, alternately, and its first transfer
 * (the rank's own k and v, read in place where the comm can). A packing copy, when one is made,
 * becomes the first buffer: its send has completed before step 1 receives into it.
 */
function kvRing(
  backend: Backend,
  group: Group,
  k: DeviceTensor,
  v: DeviceTensor,
): { bufs: KvBuffer[]; first: Pending } {
  const { kv, copy } = sendableKv(backend, backend.comm(group), k, v);
  const bufs = [copy ?? emptyKv(backend, k), emptyKv(backend, k)];
  return { bufs, first: passAlong(backend, group, kv, bufs[1]!) };
}

/** Whether `r` is every one of `n` rows. */
const allRows = (r: Rows, n: number) => r.start === 0 && r.length === n;
const rowsOf = (t: DeviceTensor, r: Rows, axis = 1) =>
  allRows(r, t.shape[axis]!) ? t : t.narrow(axis, r.start, r.length);

export function passAlongForward(
  plan: PlanFn,
  ...[backend, group, q, k, v, o]: Parameters<RingForwardFn>
): RingForward {
  const [b, s, h, d] = q.shape as [number, number, number, number];
  const W = group.size;
  const out = backend.empty([b, s, h, d], 'float32');
  const lse = backend.empty([b, h, s], 'float32');
  const tables = new SegmentTables(backend);
  const hooks = positionFreeHooks(o);
  const attn = (p: BlockPlan) => ({
    softmaxScale: o.softmaxScale,
    causal: p.causal,
    seg: tables.get(p.seg),
    hooks,
  });
  const own = plan(0, group, s, o);
  if (!own || own.q.length !== s || (own.seg && !coversQueries(own.seg, s)))
    throw new Error('pass-along plan: step 0 must cover every query row');
  // The first transfer goes out before the own block is computed, so it overlaps that block
  // (issued after it, it waited for the whole block and then sat exposed before step 1).
  const ring = W > 1 ? kvRing(backend, group, k, v) : null;
  const bufs = ring?.bufs ?? [];
  let pending = ring?.first ?? null;
  backend.flashFwd(q, rowsOf(k, own.kv), rowsOf(v, own.kv), out, lse, attn(own));
  if (!pending) {
    tables.release();
    return { out, lse };
  }
  let final: DeviceTensor | null = null;
  for (let step = 1; step < W; step++) {
    pending.wait();
    const cur = bufs[step % 2]!;
    if (step + 1 < W) pending = passAlong(backend, group, cur, bufs[(step + 1) % 2]!);
    const p = plan(step, group, s, o);
    if (!p) continue;
    // The kernel merges the block into the running out/lse of its rows (update_out_and_lse,
    // fused); rows outside a varlen plan's spans are not touched. The last step writes the
    // merged rows straight into the final out in q's dtype, which saves a cast pass over out.
    const last = step === W - 1 && q.dtype !== 'float32' && (!p.seg || coversQueries(p.seg, p.q.length));
    if (last) final = backend.empty(q.shape, q.dtype);
    backend.flashFwd(
      rowsOf(q, p.q),
      rowsOf(cur.k, p.kv),
      rowsOf(cur.v, p.kv),
      rowsOf(final ?? out, p.q),
      rowsOf(lse, p.q, 2),
      { ...attn(p), merge: true, mergeFrom: final ? rowsOf(out, p.q) : undefined },
    );
    if (final) castRowsOutside(backend, out, final, p.q);
  }
  tables.release();
  disposeAll(...bufs, final ? out : undefined);
  return { out: final ?? out, lse };
}

/** Casts the rows of `src` outside `rows` into `dst` (the rows the last step did not see are final already). */
function castRowsOutside(backend: Backend, src: DeviceTensor, dst: DeviceTensor, rows: Rows): void {
  const s = src.shape[1]!;
  for (const r of [
    { start: 0, length: rows.start },
    { start: rows.start + rows.length, length: s - rows.start - rows.length },
  ])
    if (r.length > 0) backend.castInto(rowsOf(dst, r), rowsOf(src, r));
}

export function passAlongBackward(
  plan: PlanFn,
  ...[backend, group, dout, q, k, v, fwd, o]: Parameters<RingBackwardFn>
): RingGrads {
  const [b, s, h] = q.shape as [number, number, number, number];
  const W = group.size;
  const dq = backend.zeros(q.shape, 'float32');
  const dsum = backend.empty([b, h, s], 'float32');
  backend.flashBwdDot(dout, fwd.out, dsum);
  const tables = new SegmentTables(backend);
  // A dense plan's kernel writes every dK/dV row of its key rows (keys no query sees get zeros),
  // so it goes into a buffer as it is (dq still accumulates); a varlen plan's only covers its
  // spans, so it adds onto zeros.
  const blockGrads = (p: BlockPlan, cur: KvPair, into: KvBuffer) => {
    if (p.seg) backend.fill(into.buf, 0);
    backend.flashBwd(
      {
        dout: rowsOf(dout, p.q),
        q: rowsOf(q, p.q),
        k: rowsOf(cur.k, p.kv),
        v: rowsOf(cur.v, p.kv),
        lse: rowsOf(fwd.lse, p.q, 2),
        dsum: rowsOf(dsum, p.q, 2),
        dq: rowsOf(dq, p.q),
        dk: rowsOf(into.k, p.kv),
        dv: rowsOf(into.v, p.kv),
      },
      {
        softmaxScale: o.softmaxScale,
        causal: p.causal,
        seg: tables.get(p.seg),
        hooks: positionFreeHooks(o),
        accumulate: true,
        overwriteKv: !p.seg,
        deterministic: o.deterministic,
      },
    );
  };
  // The rows of a block's gradients that hold something: a dense plan's key rows, or all of them.
  const written = (p: BlockPlan): Rows => (p.seg ? { start: 0, length: s } : p.kv);
  // Step 0: this rank's own block; its accumulator starts here. The first K/V transfer is
  // issued before it so that it overlaps the block.
  const ring = W > 1 ? kvRing(backend, group, k, v) : null;
  const kvBufs = ring?.bufs ?? [];
  let kvPending = ring?.first ?? null;
  const travel = [emptyKv(backend, k, 'float32'), emptyKv(backend, k, 'float32')];
  const own = plan(0, group, s, o)!;
  // The accumulator travels whole: rows the own block's gradients leave unwritten start at zero.
  if (!allRows(written(own), s)) backend.fill(travel[0]!.buf, 0);
  blockGrads(own, { k, v }, travel[0]!);
  if (!kvPending) {
    tables.release();
    disposeAll(dsum, travel[1]);
    return { dq, dk: travel[0]!.k, dv: travel[0]!.v };
  }
  const block = emptyKv(backend, k, 'float32');
  let home: { out: KvBuffer; in: KvBuffer } | null = null;
  let dkvPending = passAlong(backend, group, travel[0]!, travel[1]!);
  for (let step = 1; step < W; step++) {
    kvPending!.wait();
    const cur = kvBufs[step % 2]!;
    if (step + 1 < W) kvPending = passAlong(backend, group, cur, kvBufs[(step + 1) % 2]!);
    const p = plan(step, group, s, o);
    if (p) blockGrads(p, cur, block);
    // The accumulator of the block we hold arrives from r−1; add our part and pass it on.
    dkvPending.wait();
    const acc = travel[step % 2]!;
    if (p) addRows(backend, acc, block, written(p));
    if (step < W - 1 || k.dtype === 'float32') {
      dkvPending = passAlong(backend, group, acc, travel[(step + 1) % 2]!);
    } else {
      // The last hop takes each block's finished gradients home. Nothing overlaps it, so where k
      // is 16-bit they travel cast (the owner would cast them anyway; the rounding is the same):
      // half the bytes. Its buffers take the place of the block buffer and of the accumulator
      // sent last (that send is complete), so the peak does not grow.
      disposeAll(block, travel[(step + 1) % 2]);
      home = { out: emptyKv(backend, k), in: emptyKv(backend, k) };
      backend.castInto(home.out.buf, acc.buf);
      dkvPending = passAlong(backend, group, home.out, home.in);
    }
  }
  dkvPending.wait();
  tables.release();
  if (home) {
    disposeAll(dsum, ...kvBufs, home.out, travel[(W - 1) % 2]); // the other went with the block
    return { dq, dk: home.in.k, dv: home.in.v };
  }
  const mine = travel[W % 2]!;
  disposeAll(dsum, ...kvBufs, block, travel[(W + 1) % 2]);
  return { dq, dk: mine.k, dv: mine.v };
}

/** dst += src over the sequence rows `r` of two fp32 K/V buffers: one add per batch entry, whose rows are contiguous. */
function addRows(backend: Backend, dst: KvBuffer, src: KvBuffer, r: Rows): void {
  const [b, s] = dst.k.shape as [number, number];
  if (allRows(r, s)) return backend.add(dst.buf, src.buf);
  for (const key of ['k', 'v'] as const)
    for (let i = 0; i < b; i++)
      backend.add(
        dst[key].select(0, i).narrow(0, r.start, r.length),
        src[key].select(0, i).narrow(0, r.start, r.length),
      );
}

/**
 * The forward and backward of a pass-along variant. `planFor` runs once per call, so a plan can
 * build its segment specs once (SegmentTables uploads each distinct spec once per call). Calls
 * whose options read global positions run the positional ring over `layoutFor`'s shard layout
 * instead (api/ring/positional_ring.ts).
 */
export function passAlongRing<O extends RingOptions>(
  planFor: (o: O, group: Group) => PlanFn,
  layoutFor: (o: O, group: Group, seqlen: number) => PositionalLayout,
): Pick<RingVariant<O>, 'forward' | 'backward'> {
  return {
    forward: (backend, group, q, k, v, o) =>
      isPositional(o)
        ? positionalForward(layoutFor(o, group, q.shape[1]!), backend, group, q, k, v, o)
        : passAlongForward(planFor(o, group), backend, group, q, k, v, o),
    backward: (backend, group, dout, q, k, v, fwd, o) =>
      isPositional(o)
        ? positionalBackward(layoutFor(o, group, q.shape[1]!), backend, group, dout, q, k, v, fwd, o)
        : passAlongBackward(planFor(o, group), backend, group, dout, q, k, v, fwd, o),
  };
}

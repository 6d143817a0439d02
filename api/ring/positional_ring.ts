// The ring of calls whose scores read global positions (window_size, alibi_slopes, dropout_p),
// for every dense and varlen ring family with its own shard layout (api/ring/positions.ts).
// Each rank fetches, straight from its owner, exactly the K/V blocks some local query sees, and
// computes only the rectangles of them that are visible; a step no local query reaches moves
// nothing and computes nothing, so a window's traffic shrinks with it. As in ring.ts, the
// transfer for step s+1 is issued before block s is computed, and backward sends each block's
// fp32 dK/dV straight back to its owner. Every rank derives every other rank's plan, so both
// sides of a transfer agree on whether it happens.
import type { Backend } from '../../runtime/backend.js';
import { DONE, ringPeer, type Group, type Pending } from '../../runtime/comm.js';
import type { DeviceTensor } from '../../runtime/tensor.js';
import { CallHooks, type RowPositions } from '../hooks.js';
import { SegmentTables, type SegmentSpec } from '../varlen/segments.js';
import type { RingForward, RingGrads, RingOptions } from '../variant.js';
import { disposeAll, emptyKv, kvOps, sendableKv, type KvBuffer } from './kv_buffer.js';
import type { Rows } from './pass_along.js';
import { blockRects, positionsOf, type Mask, type PiecesOf } from './positions.js';

/** Where a family's shards sit: the pieces of every rank, and for varlen each sequence's packed start. */
export interface PositionalLayout {
  pieces: PiecesOf;
  /** Varlen: the GLOBAL packed index of each local sequence's first token (dropout's token index). */
  seqTok?: readonly number[];
}

/** One kernel call of a step: query rows against key rows of the held block, at their positions. */
export interface BlockCall {
  q: Rows;
  kv: Rows;
  seg?: SegmentSpec;
  pos: RowPositions;
}

export function maskOf(o: RingOptions): Mask {
  const [left, right] = o.window ?? [-1, -1];
  return { left, right: o.causal ? 0 : right };
}

/**
 * The calls that queries of rank `qRank` (local `rows` rows) make against the block of rank
 * `kRank`: one per visible rectangle (dense), or one segment table per pair of sequence parts
 * (varlen: spans of different sequences never share rows). Empty: the block is not needed.
 */
export function blockCalls(
  layout: PositionalLayout,
  qRank: number,
  kRank: number,
  rows: number,
  m: Mask,
): BlockCall[] {
  const rects = blockRects(layout.pieces, qRank, kRank, m);
  const qp = layout.pieces(qRank),
    kp = layout.pieces(kRank);
  if (!layout.seqTok)
    return rects.map((r) => ({
      q: r.q,
      kv: r.kv,
      pos: { q: positionsOf(qp, r.q), k: positionsOf(kp, r.kv), diag: 0 },
    }));
  const all = { start: 0, length: rows };
  const groups = new Map<string, typeof rects>();
  for (const r of rects) {
    const key = `${r.qPart}.${r.kPart}`;
    groups.set(key, [...(groups.get(key) ?? []), r]);
  }
  const q = positionsOf(qp, all),
    k = positionsOf(kp, all);
  return [...groups.values()].map((g) => ({
    q: all,
    kv: all,
    seg: {
      qStart: g.map((r) => r.q.start),
      qLen: g.map((r) => r.q.length),
      kStart: g.map((r) => r.kv.start),
      kLen: g.map((r) => r.kv.length),
    },
    pos: { q, k, diag: 0, seqTok: g.map((r) => layout.seqTok![r.seq]!) },
  }));
}

const rowsOf = (t: DeviceTensor, r: Rows, axis = 1) =>
  r.start === 0 && r.length === t.shape[axis] ? t : t.narrow(axis, r.start, r.length);

/** Which steps move data and what each computes, for this rank. */
function schedule(layout: PositionalLayout, group: Group, rows: number, o: RingOptions) {
  const { rank, size } = group;
  const m = maskOf(o);
  const memo = new Map<string, BlockCall[]>();
  const calls = (qRank: number, kRank: number) => {
    const key = `${qRank}/${kRank}`;
    let c = memo.get(key);
    if (!c) memo.set(key, (c = blockCalls(layout, qRank, kRank, rows, m)));
    return c;
  };
  return {
    /** Our queries' calls against the block of rank r−step. */
    calls: (step: number) => calls(rank, ringPeer(rank, -step, size)),
    uses: (step: number) => calls(rank, ringPeer(rank, -step, size)).length > 0,
    feeds: (step: number) => calls(ringPeer(rank, step, size), rank).length > 0,
    src: (step: number) => ringPeer(rank, -step, size),
    dst: (step: number) => ringPeer(rank, step, size),
  };
}

export function positionalForward(
  layout: PositionalLayout,
  backend: Backend,
  group: Group,
  q: DeviceTensor,
  k: DeviceTensor,
  v: DeviceTensor,
  o: RingOptions,
): RingForward {
  const [b, s, h, d] = q.shape as [number, number, number, number];
  const comm = backend.comm(group);
  const plan = schedule(layout, group, s, o);
  const W = group.size;
  // Every call merges into the running result: rows no key reaches keep out 0 and lse -inf.
  const out = backend.zeros([b, s, h, d], 'float32');
  const lse = backend.full([b, h, s], 'float32', -Infinity);
  const hooks = new CallHooks(backend, o);
  const tables = new SegmentTables(backend);
  const local = W > 1 ? sendableKv(backend, comm, k, v) : undefined;
  const recv: KvBuffer[] = W > 1 ? [emptyKv(backend, k), emptyKv(backend, k)] : [];
  const transfer = (step: number): Pending =>
    step >= W
      ? DONE
      : comm.sendRecv(
          plan.feeds(step) ? kvOps(plan.dst(step), local!.kv) : [],
          plan.uses(step) ? kvOps(plan.src(step), recv[step % 2]!) : [],
        );
  let pending = transfer(1);
  for (let step = 0; step < W; step++) {
    if (step > 0) {
      pending.wait();
      pending = transfer(step + 1);
    }
    const kv = step === 0 ? { k, v } : recv[step % 2]!;
    for (const c of plan.calls(step))
      backend.flashFwd(
        rowsOf(q, c.q),
        rowsOf(kv.k, c.kv),
        rowsOf(kv.v, c.kv),
        rowsOf(out, c.q),
        rowsOf(lse, c.q, 2),
        {
          softmaxScale: o.softmaxScale,
          causal: false,
          seg: tables.get(c.seg),
          hooks: hooks.at(c.pos),
          merge: true,
        },
      );
  }
  pending.wait();
  hooks.release();
  tables.release();
  disposeAll(local?.copy, ...recv);
  return { out, lse };
}

export function positionalBackward(
  layout: PositionalLayout,
  backend: Backend,
  group: Group,
  dout: DeviceTensor,
  q: DeviceTensor,
  k: DeviceTensor,
  v: DeviceTensor,
  fwd: RingForward,
  o: RingOptions,
): RingGrads {
  const [b, s, h] = q.shape as [number, number, number, number];
  const comm = backend.comm(group);
  const plan = schedule(layout, group, s, o);
  const W = group.size;
  const dq = backend.zeros(q.shape, 'float32');
  const own = emptyKv(backend, k, 'float32');
  backend.fill(own.buf, 0);
  const dsum = backend.empty([b, h, s], 'float32');
  backend.flashBwdDot(dout, fwd.out, dsum);
  const hooks = new CallHooks(backend, o);
  const tables = new SegmentTables(backend);
  const local = W > 1 ? sendableKv(backend, comm, k, v) : undefined;
  const recv: KvBuffer[] = W > 1 ? [emptyKv(backend, k), emptyKv(backend, k)] : [];
  const dkvOut: KvBuffer[] = W > 1 ? [emptyKv(backend, k, 'float32'), emptyKv(backend, k, 'float32')] : [];
  const dkvIn: KvBuffer[] = W > 1 ? [emptyKv(backend, k, 'float32'), emptyKv(backend, k, 'float32')] : [];
  // A block's rectangles may share key rows: all of them add onto a zeroed gradient buffer.
  const blockGrads = (step: number, kv: { k: DeviceTensor; v: DeviceTensor }, into: KvBuffer) => {
    for (const c of plan.calls(step))
      backend.flashBwd(
        {
          dout: rowsOf(dout, c.q),
          q: rowsOf(q, c.q),
          k: rowsOf(kv.k, c.kv),
          v: rowsOf(kv.v, c.kv),
          lse: rowsOf(fwd.lse, c.q, 2),
          dsum: rowsOf(dsum, c.q, 2),
          dq: rowsOf(dq, c.q),
          dk: rowsOf(into.k, c.kv),
          dv: rowsOf(into.v, c.kv),
        },
        {
          softmaxScale: o.softmaxScale,
          causal: false,
          seg: tables.get(c.seg),
          hooks: hooks.at(c.pos),
          accumulate: true,
          deterministic: o.deterministic,
        },
      );
  };
  const transfer = (step: number): Pending =>
    step >= W
      ? DONE
      : comm.sendRecv(
          plan.feeds(step) ? kvOps(plan.dst(step), local!.kv) : [],
          plan.uses(step) ? kvOps(plan.src(step), recv[step % 2]!) : [],
        );
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
  blockGrads(0, { k, v }, own);
  let returning: Pending | undefined;
  for (let step = 1; step < W; step++) {
    pending.wait();
    pending = transfer(step + 1);
    if (plan.uses(step)) {
      const dkv = dkvOut[step % 2]!;
      backend.fill(dkv.buf, 0);
      blockGrads(step, recv[step % 2]!, dkv);
    }
    const sent = returnGrads(step);
    if (returning) collect(step - 1, returning);
    returning = sent;
  }
  pending.wait();
  if (returning) collect(W - 1, returning);
  hooks.release();
  tables.release();
  disposeAll(dsum, local?.copy, ...recv, ...dkvOut, ...dkvIn);
  return { dq, dk: own.k, dv: own.v };
}

// The ring of calls whose scores read global positions (window_size, alibi_slopes, dropout_p),
// for every dense and varlen ring family with its own shard layout (api/ring/positions.ts).
// Each rank fetches, straight from its owner, exactly the key rows of each block that some local
// query sees, and computes only the rectangles of them that are visible; a step no local query
// reaches moves nothing and computes nothing, so a window's traffic shrinks with it. As in
// ring.ts, the transfer for step s+1 is issued before block s is computed, and backward sends the
// fp32 dK/dV of those rows straight back to their owner. Every rank derives every other rank's plan, so both
// sides of a transfer agree on whether it happens.
import { LRUCache } from 'lru-cache';
import type { Backend } from '../../runtime/backend.js';
import { ringPeer, type Comm, type Group, type Pending } from '../../runtime/comm.js';
import type { DeviceTensor } from '../../runtime/tensor.js';
import { CallHooks, type RowPositions } from '../hooks.js';
import { SegmentTables, type SegmentSpec } from '../varlen/segments.js';
import type { RingForward, RingGrads, RingOptions, RingBackwardFn, RingForwardFn } from '../variant.js';
import { disposeAll, emptyKv, kvOps, kvViews, sendableKv, type KvBuffer, type KvPair } from './kv_buffer.js';
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

/**
 * What a rank needs of a block: `rows`, the key rows some call reads (only they travel), and the
 * calls with their key rows counted from `rows.start` (they run on the received rows).
 */
interface BlockNeed {
  rows: Rows;
  calls: BlockCall[];
}

function needOf(calls: BlockCall[], total: number): BlockNeed | null {
  if (calls.length === 0) return null;
  let lo = Infinity,
    hi = -Infinity;
  for (const c of calls) {
    const spans = c.seg
      ? c.seg.kStart.map((x, i) => [x, x + c.seg!.kLen[i]!] as const)
      : [[c.kv.start, c.kv.start + c.kv.length] as const];
    for (const [a, e] of spans) [lo, hi] = [Math.min(lo, a), Math.max(hi, e)];
  }
  const rows = { start: lo, length: hi - lo };
  if (rows.start === 0 && rows.length === total) return { rows, calls };
  return {
    rows,
    calls: calls.map((c) =>
      c.seg
        ? {
            ...c,
            kv: { start: 0, length: rows.length },
            seg: { ...c.seg, kStart: c.seg.kStart.map((x) => x - lo) },
            pos: { ...c.pos, k: c.pos.k.subarray(lo, hi) },
          }
        : { ...c, kv: { start: c.kv.start - lo, length: c.kv.length } },
    ),
  };
}

/** Which steps move data, which rows, and what each computes, for one rank. */
interface Schedule {
  /** What our queries need of the block of rank r−step; null: nothing. */
  uses(step: number): BlockNeed | null;
  /** The rows of our block that rank r+step needs; null: none. */
  feeds(step: number): Rows | null;
  src(step: number): number;
  dst(step: number): number;
  /** What its position tables hold on the host. */
  bytes: number;
}

/** The hull of the key rows of `rects` (the rows that travel); null when there are none. */
function keyRowsOf(rects: readonly { kv: Rows }[]): Rows | null {
  if (rects.length === 0) return null;
  const lo = Math.min(...rects.map((r) => r.kv.start));
  const hi = Math.max(...rects.map((r) => r.kv.start + r.kv.length));
  return { start: lo, length: hi - lo };
}

function buildSchedule(layout: PositionalLayout, group: Group, rows: number, m: Mask): Schedule {
  const { rank, size } = group;
  const src = (step: number) => ringPeer(rank, -step, size);
  const dst = (step: number) => ringPeer(rank, step, size);
  const steps = Array.from({ length: size }, (_, step) => step);
  const uses = steps.map((step) => needOf(blockCalls(layout, rank, src(step), rows, m), rows));
  const feeds = steps.map((step) => keyRowsOf(blockRects(layout.pieces, dst(step), rank, m)));
  let bytes = 0;
  for (const c of uses.flatMap((u) => u?.calls ?? [])) bytes += c.pos.q.byteLength + c.pos.k.byteLength;
  return { uses: (step) => uses[step]!, feeds: (step) => feeds[step]!, src, dst, bytes };
}

/**
 * Schedules of recent calls: a training loop repeats a few shapes, and a schedule's position
 * tables cost a pass over every row to build. Bounded by those tables' bytes.
 */
const schedules = new LRUCache<string, Schedule>({
  maxSize: 32 << 20,
  sizeCalculation: (sch) => Math.max(1, sch.bytes),
});

function schedule(layout: PositionalLayout, group: Group, rows: number, o: RingOptions): Schedule {
  const m = maskOf(o);
  const key = `${layout.pieces.key}|${group.rank}/${group.size}|${rows}|${m.left},${m.right}`;
  let sch = schedules.get(key);
  if (!sch) schedules.set(key, (sch = buildSchedule(layout, group, rows, m)));
  return sch;
}

/** A K/V buffer of `rows` key rows shaped like `k` otherwise. */
function rowsKv(backend: Backend, k: DeviceTensor, rows: number, dtype = k.dtype): KvBuffer {
  const [b, , hk, d] = k.shape as [number, number, number, number];
  return kvViews(backend.empty([2, b, rows, hk, d], dtype));
}

/**
 * The transfer of step `step`: our key rows that rank r+step needs go to it, and the rows we
 * need of rank r−step's block arrive into a new buffer (returned, with what to free once sent).
 */
function kvTransfer(
  backend: Backend,
  comm: Comm,
  plan: Schedule,
  step: number,
  k: DeviceTensor,
  v: DeviceTensor,
): { pending: Pending; recv: KvBuffer | null; sent: KvBuffer | null } {
  const out = plan.feeds(step),
    inn = plan.uses(step);
  const send = out ? sendableKv(backend, comm, rowsOf(k, out), rowsOf(v, out)) : null;
  const recv = inn ? rowsKv(backend, k, inn.rows.length) : null;
  const pending = comm.sendRecv(
    send ? kvOps(plan.dst(step), send.kv) : [],
    recv ? kvOps(plan.src(step), recv) : [],
  );
  return { pending, recv, sent: send?.copy ?? null };
}

export function positionalForward(
  layout: PositionalLayout,
  ...[backend, group, q, k, v, o]: Parameters<RingForwardFn>
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
  const attend = (need: BlockNeed, kv: KvPair) => {
    for (const c of need.calls)
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
  };
  let next = W > 1 ? kvTransfer(backend, comm, plan, 1, k, v) : null;
  const own = plan.uses(0);
  if (own) attend(own, { k: rowsOf(k, own.rows), v: rowsOf(v, own.rows) });
  for (let step = 1; step < W; step++) {
    const cur = next!;
    cur.pending.wait();
    next = step + 1 < W ? kvTransfer(backend, comm, plan, step + 1, k, v) : null;
    const need = plan.uses(step);
    if (need) attend(need, cur.recv!);
    disposeAll(cur.recv, cur.sent);
  }
  hooks.release();
  tables.release();
  return { out, lse };
}

/** dst rows `r` += src (all of its rows), over two fp32 K/V buffers: one add per batch entry. */
function addRowsInto(backend: Backend, dst: KvBuffer, src: KvBuffer, r: Rows): void {
  const [b, s] = dst.k.shape as [number, number];
  if (r.start === 0 && r.length === s) return backend.add(dst.buf, src.buf);
  for (const key of ['k', 'v'] as const)
    for (let i = 0; i < b; i++)
      backend.add(dst[key].select(0, i).narrow(0, r.start, r.length), src[key].select(0, i));
}

export function positionalBackward(
  layout: PositionalLayout,
  ...[backend, group, dout, q, k, v, fwd, o]: Parameters<RingBackwardFn>
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
  // A block's rectangles may share key rows: all of them add onto a zeroed gradient buffer.
  const blockGrads = (need: BlockNeed, kv: KvPair, into: KvPair) => {
    for (const c of need.calls)
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
  // dK/dV of the rows we used of step s's block go back to its owner r−s; ours come from r+s.
  const returnGrads = (step: number, grads: KvBuffer | null) => {
    const theirs = plan.feeds(step);
    const back = theirs ? rowsKv(backend, k, theirs.length, 'float32') : null;
    const pending = comm.sendRecv(
      grads ? [{ peer: plan.src(step), tensor: grads.buf }] : [],
      back ? [{ peer: plan.dst(step), tensor: back.buf }] : [],
    );
    return { pending, grads, back, rows: theirs };
  };
  const collect = (r: ReturnType<typeof returnGrads>) => {
    r.pending.wait();
    if (r.back) addRowsInto(backend, own, r.back, r.rows!);
    disposeAll(r.grads, r.back);
  };
  let next = W > 1 ? kvTransfer(backend, comm, plan, 1, k, v) : null;
  const mine = plan.uses(0);
  if (mine) {
    const rows = (t: DeviceTensor) => rowsOf(t, mine.rows);
    blockGrads(mine, { k: rows(k), v: rows(v) }, { k: rows(own.k), v: rows(own.v) });
  }
  let returning: ReturnType<typeof returnGrads> | undefined;
  for (let step = 1; step < W; step++) {
    const cur = next!;
    cur.pending.wait();
    next = step + 1 < W ? kvTransfer(backend, comm, plan, step + 1, k, v) : null;
    const need = plan.uses(step);
    let grads: KvBuffer | null = null;
    if (need) {
      grads = rowsKv(backend, k, need.rows.length, 'float32');
      backend.fill(grads.buf, 0);
      blockGrads(need, cur.recv!, grads);
    }
    disposeAll(cur.recv, cur.sent);
    const sent = returnGrads(step, grads);
    if (returning) collect(returning);
    returning = sent;
  }
  if (returning) collect(returning);
  hooks.release();
  tables.release();
  disposeAll(dsum);
  return { dq, dk: own.k, dv: own.v };
}

// Where a rank's rows sit in the global sequence, and which blocks of another rank's rows its
// queries can see under a window. Every layout is a few pieces of affine positions (contiguous:
// one; zigzag: two chunks; stripe: one with stride world; varlen: per sequence), so a piece pair's
// visible rectangle follows from its ends, and every rank computes every other rank's plan.
import type { Rows } from './pass_along.js';

/**
 * Local rows [row, row + len) sit at positions pos + step·i of sequence `seq` (dense: 0); `part`
 * is the piece's index within its sequence on the rank (zigzag: 0 or 1).
 */
export interface Piece {
  row: number;
  len: number;
  pos: number;
  step: number;
  seq: number;
  part: number;
}

/**
 * The pieces of rank `rank`'s rows; every rank's layout has the same rows (equal shards). `key`
 * names the layout and its sizes, so plans made for it can be kept for the next call.
 */
export interface PiecesOf {
  (rank: number): Piece[];
  readonly key: string;
}

const keyed = (key: string, of: (rank: number) => Piece[]): PiecesOf => Object.assign(of, { key });

/** flash-attn's window (left, right) by position, -1 unbounded; causal is right 0. */
export interface Mask {
  left: number;
  right: number;
}

/** Query rows `q` of part `qPart` see some of key rows `kv` of part `kPart` of sequence `seq` (rows absolute). */
export interface Rect {
  seq: number;
  qPart: number;
  kPart: number;
  q: Rows;
  kv: Rows;
}

export function contiguousPieces(seqlen: number): PiecesOf {
  return keyed(`contiguous/${seqlen}`, (rank) => [
    { row: 0, len: seqlen, pos: rank * seqlen, step: 1, seq: 0, part: 0 },
  ]);
}

/** Chunks rank and 2·world−1−rank of 2·world (zigzag). */
export function zigzagPieces(seqlen: number, world: number): PiecesOf {
  const c = seqlen / 2;
  return keyed(`zigzag/${seqlen}/${world}`, (rank) => [
    { row: 0, len: c, pos: rank * c, step: 1, seq: 0, part: 0 },
    { row: c, len: c, pos: (2 * world - 1 - rank) * c, step: 1, seq: 0, part: 1 },
  ]);
}

/** Token i on rank i mod world (stripe). */
export function stripePieces(seqlen: number, world: number): PiecesOf {
  return keyed(`stripe/${seqlen}/${world}`, (rank) => [
    { row: 0, len: seqlen, pos: rank, step: world, seq: 0, part: 0 },
  ]);
}

/** Ring varlen: rank r holds the r-th 1/world of every sequence of the local cu_seqlens. */
export function varlenPieces(cu: Int32Array): PiecesOf {
  return keyed(`varlen/${cu.join(',')}`, (rank) => {
    const out: Piece[] = [];
    for (let i = 0; i + 1 < cu.length; i++) {
      const len = cu[i + 1]! - cu[i]!;
      if (len > 0) out.push({ row: cu[i]!, len, pos: rank * len, step: 1, seq: i, part: 0 });
    }
    return out;
  });
}

/** Zigzag varlen: per sequence, chunks rank and 2·world−1−rank of 2·world. */
export function zigzagVarlenPieces(cu: Int32Array, world: number): PiecesOf {
  return keyed(`zigzag_varlen/${cu.join(',')}/${world}`, (rank) => {
    const out: Piece[] = [];
    for (let i = 0; i + 1 < cu.length; i++) {
      const c = (cu[i + 1]! - cu[i]!) / 2;
      if (c === 0) continue;
      out.push({ row: cu[i]!, len: c, pos: rank * c, step: 1, seq: i, part: 0 });
      out.push({ row: cu[i]! + c, len: c, pos: (2 * world - 1 - rank) * c, step: 1, seq: i, part: 1 });
    }
    return out;
  });
}

/**
 * The rows of `qp` that see some key of `kp`, and the keys they see, as one rectangle (rows
 * inside it may see nothing of the block; the kernel masks them); null when none sees any.
 * Query i sees keys jlo(i)..jhi(i), both nondecreasing in i, so the rectangle runs from the
 * first visible row's jlo to the last one's jhi. A row is visible when its window reaches the
 * block at all (rows ia..ib, from the two ends) and holds a key of the block's lattice, which
 * repeats every kp.step rows or fewer: the first and last visible rows lie within kp.step of
 * ia and ib, so the cost does not grow with the rows.
 */
export function visibleRect(qp: Piece, kp: Piece, m: Mask): { q: Rows; kv: Rows } | null {
  const pos = (i: number) => qp.pos + qp.step * i;
  const jlo = (i: number) => (m.left < 0 ? 0 : Math.max(0, Math.ceil((pos(i) - m.left - kp.pos) / kp.step)));
  const jhi = (i: number) =>
    m.right < 0 ? kp.len - 1 : Math.min(kp.len - 1, Math.floor((pos(i) + m.right - kp.pos) / kp.step));
  const lastKey = kp.pos + kp.step * (kp.len - 1);
  const ia = m.right < 0 ? 0 : Math.max(0, Math.ceil((kp.pos - m.right - qp.pos) / qp.step));
  const ib =
    m.left < 0 ? qp.len - 1 : Math.min(qp.len - 1, Math.floor((lastKey + m.left - qp.pos) / qp.step));
  const sees = (i: number) => jlo(i) <= jhi(i);
  let i0 = -1,
    i1 = -1;
  for (let i = ia; i <= Math.min(ib, ia + kp.step - 1) && i0 < 0; i++) if (sees(i)) i0 = i;
  if (i0 < 0) return null;
  for (let i = ib; i >= Math.max(i0, ib - kp.step + 1) && i1 < 0; i--) if (sees(i)) i1 = i;
  return {
    q: { start: qp.row + i0, length: i1 - i0 + 1 },
    kv: { start: kp.row + jlo(i0), length: jhi(i1) - jlo(i0) + 1 },
  };
}

/** What queries of rank `qRank` see of the rows of rank `kRank`: one rectangle per piece pair of a sequence. */
export function blockRects(pieces: PiecesOf, qRank: number, kRank: number, m: Mask): Rect[] {
  const qs = pieces(qRank),
    ks = pieces(kRank);
  const out: Rect[] = [];
  for (const qp of qs)
    for (const kp of ks) {
      if (qp.seq !== kp.seq) continue;
      const r = visibleRect(qp, kp, m);
      if (r) out.push({ seq: qp.seq, qPart: qp.part, kPart: kp.part, ...r });
    }
  return out;
}

/** Positions of `rows` (absolute) of a rank's pieces; rows outside every piece get 0 (never read). */
export function positionsOf(pieces: Piece[], rows: Rows): Int32Array {
  const out = new Int32Array(rows.length);
  for (const p of pieces) {
    const a = Math.max(p.row, rows.start),
      b = Math.min(p.row + p.len, rows.start + rows.length);
    for (let r = a; r < b; r++) out[r - rows.start] = p.pos + p.step * (r - p.row);
  }
  return out;
}

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

/** The pieces of rank `rank`'s rows; every rank's layout has the same rows (equal shards). */
export type PiecesOf = (rank: number) => Piece[];

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
  return (rank) => [{ row: 0, len: seqlen, pos: rank * seqlen, step: 1, seq: 0, part: 0 }];
}

/** Chunks rank and 2·world−1−rank of 2·world (zigzag). */
export function zigzagPieces(seqlen: number, world: number): PiecesOf {
  const c = seqlen / 2;
  return (rank) => [
    { row: 0, len: c, pos: rank * c, step: 1, seq: 0, part: 0 },
    { row: c, len: c, pos: (2 * world - 1 - rank) * c, step: 1, seq: 0, part: 1 },
  ];
}

/** Token i on rank i mod world (stripe). */
export function stripePieces(seqlen: number, world: number): PiecesOf {
  return (rank) => [{ row: 0, len: seqlen, pos: rank, step: world, seq: 0, part: 0 }];
}

/** Ring varlen: rank r holds the r-th 1/world of every sequence of the local cu_seqlens. */
export function varlenPieces(cu: Int32Array): PiecesOf {
  return (rank) => {
    const out: Piece[] = [];
    for (let i = 0; i + 1 < cu.length; i++) {
      const len = cu[i + 1]! - cu[i]!;
      if (len > 0) out.push({ row: cu[i]!, len, pos: rank * len, step: 1, seq: i, part: 0 });
    }
    return out;
  };
}

/** Zigzag varlen: per sequence, chunks rank and 2·world−1−rank of 2·world. */
export function zigzagVarlenPieces(cu: Int32Array, world: number): PiecesOf {
  return (rank) => {
    const out: Piece[] = [];
    for (let i = 0; i + 1 < cu.length; i++) {
      const c = (cu[i + 1]! - cu[i]!) / 2;
      if (c === 0) continue;
      out.push({ row: cu[i]!, len: c, pos: rank * c, step: 1, seq: i, part: 0 });
      out.push({ row: cu[i]! + c, len: c, pos: (2 * world - 1 - rank) * c, step: 1, seq: i, part: 1 });
    }
    return out;
  };
}

/**
 * The rows of `qp` that see some key of `kp`, and the keys they see, as one rectangle (rows
 * inside it may see nothing of the block; the kernel masks them); null when none sees any.
 */
export function visibleRect(qp: Piece, kp: Piece, m: Mask): { q: Rows; kv: Rows } | null {
  let i0 = -1,
    i1 = -1,
    j0 = Infinity,
    j1 = -Infinity;
  for (let i = 0; i < qp.len; i++) {
    const p = qp.pos + qp.step * i;
    const lo = m.left < 0 ? -Infinity : p - m.left;
    const hi = m.right < 0 ? Infinity : p + m.right;
    const jlo = Math.max(0, Math.ceil((lo - kp.pos) / kp.step));
    const jhi = Math.min(kp.len - 1, Math.floor((hi - kp.pos) / kp.step));
    if (jlo > jhi) continue;
    if (i0 < 0) i0 = i;
    i1 = i;
    j0 = Math.min(j0, jlo);
    j1 = Math.max(j1, jhi);
  }
  if (i0 < 0) return null;
  return {
    q: { start: qp.row + i0, length: i1 - i0 + 1 },
    kv: { start: kp.row + j0, length: j1 - j0 + 1 },
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

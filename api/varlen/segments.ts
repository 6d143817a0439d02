// Segment tables (native/attn_params.h Segments) of the varlen families: per-sequence spans of
// the query and key rows one kernel call covers. A ring step that sees part of every sequence
// (zigzag's halves) is a table of its own, not a gather of rows.
import type { Backend } from '../../runtime/backend.js';
import type { SegmentTable } from '../../runtime/kernel_args.js';

/** Sequence i spans rows [start[i], start[i] + len[i]). */
export interface Spans {
  start: number[];
  len: number[];
}

/** Query spans against key spans, one pair per sequence (the argument of backend.segments). */
export interface SegmentSpec {
  qStart: number[];
  qLen: number[];
  kStart: number[];
  kLen: number[];
}

export function spansOf(cuSeqlens: Int32Array): Spans {
  const n = cuSeqlens.length - 1;
  return {
    start: Array.from({ length: n }, (_, i) => cuSeqlens[i]!),
    len: Array.from({ length: n }, (_, i) => cuSeqlens[i + 1]! - cuSeqlens[i]!),
  };
}

/** The first or the second half of every span (span lengths are even). */
export function halves(s: Spans, which: 'front' | 'back'): Spans {
  return {
    start: s.start.map((x, i) => (which === 'front' ? x : x + s.len[i]! / 2)),
    len: s.len.map((l) => l / 2),
  };
}

export function segmentSpec(q: Spans, k: Spans): SegmentSpec {
  return { qStart: q.start, qLen: q.len, kStart: k.start, kLen: k.len };
}

/** Whether the (disjoint) query spans cover all `rows`: then the kernel writes every row. */
export function coversQueries(spec: SegmentSpec, rows: number): boolean {
  return spec.qLen.reduce((a, b) => a + b, 0) === rows;
}

/** The tables of one call: each distinct spec is uploaded once, all are released together. */
export class SegmentTables {
  private readonly tables = new Map<SegmentSpec, SegmentTable>();

  constructor(private readonly backend: Backend) {}

  get(spec: SegmentSpec): SegmentTable;
  get(spec: SegmentSpec | undefined): SegmentTable | undefined;
  get(spec: SegmentSpec | undefined): SegmentTable | undefined {
    if (!spec) return undefined;
    let t = this.tables.get(spec);
    if (!t) this.tables.set(spec, (t = this.backend.segments(spec)));
    return t;
  }

  release(): void {
    for (const t of this.tables.values()) t.release();
    this.tables.clear();
  }
}

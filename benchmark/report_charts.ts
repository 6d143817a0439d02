// The charts of a README-table result, drawn from the result file's rows, so that a run
// (readme_table.ts) and a redraw of an old file (render_chart.ts) draw the same thing.
import { groupTitle, RING_COLUMNS, shapeOf, type Mode, type Shape } from './cases.js';
import { barChart, PALETTE, type ChartGroup } from './chart.js';
import { pythonShares } from './python_results.js';

/** Short shape names for the companion chart's group titles. */
const SHAPE_NAMES: Record<Shape, string> = { qkvpacked: 'qkvpacked h=5', llama3: 'llama3-8B' };
/** "ours" first, in a colour none of the Python project's measurements gets. */
const SOURCE_PALETTE = [PALETTE[3]!, PALETTE[1]!, PALETTE[2]!, PALETTE[4]!];

export interface ResultRow {
  case: string;
  mode: string;
  column: string;
  iterPerSecPerRank: number;
}
export interface ResultDoc {
  machine: string;
  world: number;
  results: ResultRow[];
}

/** The rows of each (case, mode) in file order, with the table's rate and share of theoretic. */
function cells(
  doc: ResultDoc,
): { caseTitle: string; mode: string; rows: { column: string; rate: number; percent: number }[] }[] {
  const byKey = new Map<string, ResultRow[]>();
  for (const r of doc.results) {
    const key = `${r.case}\u0000${r.mode}`;
    byKey.set(key, [...(byKey.get(key) ?? []), r]);
  }
  return [...byKey.values()].map((rows) => {
    // The file keeps the single-GPU column's own rate; the table's theoretic is that ÷ world.
    const isTheoretic = (r: ResultRow) => r.column.startsWith('theoretic');
    const rate = (r: ResultRow) => (isTheoretic(r) ? r.iterPerSecPerRank / doc.world : r.iterPerSecPerRank);
    const theoretic = rate(rows.find(isTheoretic) ?? rows[0]!);
    return {
      caseTitle: rows[0]!.case,
      mode: rows[0]!.mode,
      rows: rows.map((r) => ({ column: r.column, rate: rate(r), percent: (100 * rate(r)) / theoretic })),
    };
  });
}

/** The table's chart: a group per (case, mode), bar height the share of theoretic, iter/s on each bar. */
export function tableChart(doc: ResultDoc): string {
  const groups: ChartGroup[] = cells(doc).map((c) => ({
    title: groupTitle(c.caseTitle, c.mode),
    bars: c.rows.map((r) => ({ label: r.column, percent: r.percent, note: r.rate.toFixed(1) })),
  }));
  return barChart(
    `ring-flash-attn, ${doc.machine}`,
    'bar height: % of theoretic flash_attn; label: iter/s per rank',
    groups,
  );
}

/**
 * Our ring columns' shares of theoretic beside every share the Python project measured for the
 * same cell; null when the run has no such cell (a CPU run, a varlen-only run).
 */
export function pythonChart(doc: ResultDoc): string | null {
  const groups: ChartGroup[] = [];
  for (const c of cells(doc)) {
    const shape = shapeOf(c.caseTitle);
    if (!shape) continue;
    for (const r of c.rows) {
      if (!(RING_COLUMNS as readonly string[]).includes(r.column)) continue;
      const python = pythonShares(shape, c.mode as Mode, r.column);
      if (!python.length) continue;
      groups.push({
        title: `${r.column}\n${SHAPE_NAMES[shape]} ${c.mode}`,
        bars: [
          { label: 'ours', percent: r.percent, note: `${r.percent.toFixed(1)}%` },
          ...python.map((p) => ({
            label: p.source,
            percent: 100 * p.share,
            note: `${(100 * p.share).toFixed(1)}%`,
          })),
        ],
      });
    }
  }
  if (!groups.length) return null;
  return barChart(
    `ring-flash-attn beside the Python project, % of each one's theoretic`,
    `ours: ${doc.machine}; qkvpacked: the Python project's benchmark shape; bar height and label: % of that run's theoretic flash_attn`,
    groups,
    SOURCE_PALETTE,
  );
}

// The Python project's measured cells, kept here once: issue_targets.ts checks a run against
// them and the companion chart (report_charts.ts) sets a run's shares of theoretic beside them.
// Keys: our dense case shapes (cases.ts), then the mode, then our column labels. The theoretic
// column is the table's own figure, the single-GPU rate already divided by the world.
import { THEORETIC, type Mode, type Shape } from './cases.js';

type Cells = Partial<Record<string, number>>;

/** The Python project at its HEAD on nvidia-h200-x4 (the README-table issue's table), iter/s per rank. */
export const PYTHON_X4: Record<Shape, Record<Mode, Cells>> = {
  qkvpacked: {
    fwd: { [THEORETIC]: 602.0, ring_attn: 414.1, zigzag_ring: 472.9, stripe_attn: 486.4 },
    fwdbwd: { [THEORETIC]: 163.1, ring_attn: 108.6, zigzag_ring: 149.7, stripe_attn: 146.8 },
  },
  llama3: {
    fwd: { [THEORETIC]: 144.2, ring_attn: 81.0, zigzag_ring: 127.5, stripe_attn: 112.8 },
    fwdbwd: { [THEORETIC]: 37.8, ring_attn: 21.9, zigzag_ring: 35.7, stripe_attn: 33.4 },
  },
};

/** The Python project's README table (benchmark_qkvpacked_func.py on 8×H800, forward only), iter/s per rank. */
export const PYTHON_README_H800: Partial<Record<Shape, Partial<Record<Mode, Cells>>>> = {
  qkvpacked: {
    fwd: {
      [THEORETIC]: 302.3,
      ring_attn: 208.8,
      ring_attn_v2: 208.0,
      zigzag_ring: 283.0,
      stripe_attn: 259.6,
    },
  },
};

/** The Python project's zigzag at world 2, share of its own theoretic (quoted in the issue). */
export const PYTHON_X2_ZIGZAG: Record<Shape, Record<Mode, number>> = {
  qkvpacked: { fwd: 0.936, fwdbwd: 0.898 },
  llama3: { fwd: 0.941, fwdbwd: 0.979 },
};

export interface PythonShare {
  /** Which measurement, as a chart legend names it. */
  source: string;
  /** iter/s ÷ that table's theoretic. */
  share: number;
}

function shareOf(cells: Cells | undefined, column: string): number | undefined {
  const value = cells?.[column],
    theoretic = cells?.[THEORETIC];
  return value === undefined || theoretic === undefined ? undefined : value / theoretic;
}

/** Every share of theoretic the Python project measured for a ring column's cell, largest world first. */
export function pythonShares(shape: Shape, mode: Mode, column: string): PythonShare[] {
  const found: [string, number | undefined][] = [
    ['Python 8×H800', shareOf(PYTHON_README_H800[shape]?.[mode], column)],
    ['Python 4×H200', shareOf(PYTHON_X4[shape][mode], column)],
    ['Python world 2', column === 'zigzag_ring' ? PYTHON_X2_ZIGZAG[shape][mode] : undefined],
  ];
  return found
    .filter((f): f is [string, number] => f[1] !== undefined)
    .map(([source, share]) => ({ source, share }));
}

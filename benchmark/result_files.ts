// Where the README table's results go and how they are named. readme_table.ts writes them and
// issue_targets.ts finds the newest world-4 one; both name files through here, so a suffix cannot
// be written by one and missed by the other (copy-engine runs once were).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { UsageError } from './cli_flags.js';

/** benchmark/results, from dist/benchmark: where committed results live. */
export const RESULTS_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../benchmark/results');

/**
 * Where a run writes and where the newest result is looked for: `--out DIR`, else
 * RFA_RESULTS_DIR, else RESULTS_DIR. Tests point it at a temporary directory so that a test run
 * leaves benchmark/results as it was.
 */
export function resultsDir(out?: string): string {
  return out ?? process.env.RFA_RESULTS_DIR ?? RESULTS_DIR;
}

/** A result path as a log names it: relative to the working directory when under it. */
export function displayPath(file: string): string {
  const rel = path.relative(process.cwd(), file);
  return rel.startsWith('..') || path.isAbsolute(rel) ? file : rel;
}

export interface StampParts {
  backend: string;
  solo: boolean;
  world: number;
  /** `--solo-rank R`: the one rank a solo run played; null for all. */
  soloRank: number | null;
  /** Transfers over the copy engines (or, solo, as same-device copies). */
  copyEngine: boolean;
}

/** `<UTC minute>-<backend>-<w|solo><world>[r<rank>][-ce]`: name order is time order. */
export function resultStamp(p: StampParts, when = new Date()): string {
  const minute = when.toISOString().slice(0, 16).replace(/[:T]/g, '-');
  return `${minute}-${p.backend}-${p.solo ? 'solo' : 'w'}${p.world}${p.soloRank !== null ? `r${p.soloRank}` : ''}${p.copyEngine ? '-ce' : ''}`;
}

/** The newest cuda world-4 ring result under `dir`, over either transport, or null. */
export function newestWorld4(dir: string): string | null {
  if (!fs.existsSync(dir)) return null;
  // What follows the minute in the stamps of such runs.
  const tails = [false, true].map(
    (copyEngine) =>
      `${resultStamp({ backend: 'cuda', solo: false, world: 4, soloRank: null, copyEngine }).slice(16)}.json`,
  );
  const names = fs
    .readdirSync(dir)
    .filter((f) => tails.some((t) => f.endsWith(t)))
    .sort();
  return names.length ? path.join(dir, names[names.length - 1]!) : null;
}

/** The charts drawn beside a result file: the table's, and the one set beside the Python project's cells. */
export function chartFiles(json: string): { table: string; python: string } {
  const base = json.replace(/\.json$/, '');
  return { table: `${base}.svg`, python: `${base}-vs-python.svg` };
}

/** Reads a result file named on a command line; a missing or foreign file is a UsageError. */
export function readResult<T extends { world: number; results: unknown[] }>(file: string): T {
  if (!file.endsWith('.json')) throw new UsageError(`${file}: expected a result file (.json)`);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    throw new UsageError(`${file}: no such result file`);
  }
  let doc: T | undefined;
  try {
    doc = JSON.parse(text) as T;
  } catch {
    doc = undefined;
  }
  if (!doc || !Array.isArray(doc.results) || typeof doc.world !== 'number')
    throw new UsageError(`${file}: not a README-table result (JSON with world and results)`);
  return doc;
}

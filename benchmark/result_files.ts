// Where the README table's results go and how they are named. readme_table.ts writes them and
// issue_targets.ts finds the newest world-4 one; both name files through here, so a suffix cannot
// be written by one and missed by the other (copy-engine runs once were).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** benchmark/results, from dist/benchmark. */
export const RESULTS_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../benchmark/results');

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
  const tails = [false, true].map((copyEngine) => `${resultStamp({ backend: 'cuda', solo: false, world: 4, soloRank: null, copyEngine }).slice(16)}.json`);
  const names = fs.readdirSync(dir).filter((f) => tails.some((t) => f.endsWith(t))).sort();
  return names.length ? path.join(dir, names[names.length - 1]!) : null;
}

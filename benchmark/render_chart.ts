// `node dist/benchmark/render_chart.js benchmark/results/<stamp>.json`: (re)draws the SVG bar
// chart of a README-table results file next to it.
import fs from 'node:fs';
import { barChart, type ChartGroup } from './chart.js';

interface Row { case: string; mode: string; column: string; iterPerSecPerRank: number }

const file = process.argv[2];
if (!file) throw new Error('usage: render_chart.js <results.json>');
const doc = JSON.parse(fs.readFileSync(file, 'utf8')) as { machine: string; world: number; results: Row[] };
const groups = new Map<string, Row[]>();
for (const r of doc.results) {
  const key = `${r.case.split(' (')[0]} ${r.mode}`;
  groups.set(key, [...(groups.get(key) ?? []), r]);
}
const chart: ChartGroup[] = [...groups].map(([title, rows]) => {
  // The theoretic column is stored per rank; the table divides it by the world.
  const theoretic = rows[0]!.iterPerSecPerRank / doc.world;
  return {
    title,
    bars: rows.map((r, i) => {
      const rate = i === 0 ? theoretic : r.iterPerSecPerRank;
      return { label: r.column, iterPerSec: rate, percent: (100 * rate) / theoretic };
    }),
  };
});
fs.writeFileSync(file.replace(/\.json$/, '.svg'), barChart(`ring-flash-attn, ${doc.machine}`, chart));
console.log(`wrote ${file.replace(/\.json$/, '.svg')}`);

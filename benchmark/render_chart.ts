// `ring-flash-attn bench:chart FILE...` (`node dist/benchmark/render_chart.js FILE...`): (re)draws
// the charts of README-table result files next to them, the table's and, where the run has cells
// the Python project measured, the one beside them; old files render too (cases.ts maps the
// titles they were written with).
import fs from 'node:fs';
import { exitWith, isMain, runCommand, type Command } from './cli_command.js';
import { pythonChart, tableChart, type ResultDoc } from './report_charts.js';
import { chartFiles, displayPath, readResult } from './result_files.js';

function render(files: string[]): void {
  // Every file is read before any chart is written: a bad name leaves nothing half done.
  const docs = files.map((f) => [f, readResult<ResultDoc>(f)] as const);
  for (const [file, doc] of docs) {
    const out = chartFiles(file);
    fs.writeFileSync(out.table, tableChart(doc));
    const beside = pythonChart(doc);
    if (beside) fs.writeFileSync(out.python, beside);
    console.log(`wrote ${displayPath(out.table)}${beside ? ` and ${displayPath(out.python)}` : ''}`);
  }
}

export const chartCommand: Command = {
  name: 'bench:chart',
  summary: 'redraws the charts of README-table result files next to them',
  description: '',
  flags: {},
  positionals: { usage: 'FILE...', help: 'result files (benchmark/results/*.json)', min: 1, max: Infinity },
  run: (_, files) => render(files),
};

if (isMain(import.meta.url)) exitWith(await runCommand(chartCommand, process.argv.slice(2)));

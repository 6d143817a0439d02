// `ring-flash-attn bench:targets [FILE]` (`node dist/benchmark/issue_targets.js [FILE]`): reads
// a README-table result (benchmark/results/*.json) against the bar of the README-table issue:
// on 4 GPUs, zigzag at >= 95% of theoretic in both modes on both shapes, and every cell above
// the Python project's measured cell (iter/s per rank, same machine kind, FlashAttention-2
// kernels). Prints one line per cell and a verdict; exits 0 either way (it reports, the issue
// decides). A world-2 run's zigzag cells are also set beside the Python project's own world-2
// percentages, which the issue quotes. The Python project's cells are in python_results.ts.
import path from 'node:path';
import { shapeOf, THEORETIC } from './cases.js';
import { exitWith, isMain, runCommand, type Command } from './cli_command.js';
import { PYTHON_X2_ZIGZAG, PYTHON_X4 } from './python_results.js';
import { newestWorld4, readResult, resultsDir } from './result_files.js';

export const ZIGZAG_BAR = 0.95;

interface Row {
  case: string;
  mode: string;
  column: string;
  iterPerSecPerRank: number;
}
export interface Report {
  machine: string;
  backend: string;
  world: number;
  results: Row[];
}

/** One line per cell with a target, then the verdict; `met` is true only for a 4-GPU run that passes every check. */
export function checkTargets(r: Report): { lines: string[]; met: boolean } {
  const lines: string[] = [];
  let ok = true,
    cells = 0;
  const solo = r.machine.startsWith('solo');
  for (const shape of ['qkvpacked', 'llama3'] as const) {
    for (const mode of ['fwd', 'fwdbwd'] as const) {
      const rows = r.results.filter((x) => shapeOf(x.case) === shape && x.mode === mode);
      // The JSON keeps the single-GPU column's own rate; the table's theoretic is that ÷ world.
      const value = (x: Row) =>
        x.column === THEORETIC ? x.iterPerSecPerRank / r.world : x.iterPerSecPerRank;
      const theoreticRow = rows.find((x) => x.column === THEORETIC);
      const theoretic = theoreticRow ? value(theoreticRow) : NaN;
      for (const row of rows) {
        const target = PYTHON_X4[shape][mode][row.column];
        const pct = value(row) / theoretic;
        const checks: string[] = [];
        if (target !== undefined) {
          const beats = value(row) > target;
          ok &&= beats;
          checks.push(`${beats ? 'beats' : 'BELOW'} Python's ${target}`);
        }
        if (row.column === 'zigzag_ring') {
          const high = pct >= ZIGZAG_BAR;
          ok &&= high;
          checks.push(
            `${(pct * 100).toFixed(1)}% of theoretic ${high ? '>=' : 'BELOW'} ${ZIGZAG_BAR * 100}%`,
          );
          // Information only (the bar is world 4's): Python's world-2 share on the same shape.
          if (r.world === 2) {
            const py = PYTHON_X2_ZIGZAG[shape][mode];
            checks.push(`${pct > py ? 'above' : 'not above'} Python's world-2 ${(py * 100).toFixed(1)}%`);
          }
        }
        if (checks.length === 0) continue;
        cells++;
        lines.push(
          `${shape} ${mode === 'fwd' ? 'fwd' : 'fwd+bwd'} ${row.column}: ${value(row).toFixed(1)} it/s, ${checks.join(', ')}`,
        );
      }
    }
  }
  const complete = cells === 16; // 4 columns with targets × 2 modes × 2 shapes
  const met = ok && complete && r.world === 4 && r.backend === 'cuda' && !solo;
  const why = !complete
    ? `only ${cells} of 16 cells present`
    : r.backend !== 'cuda'
      ? 'not a GPU run'
      : solo
        ? 'a solo run (transfers skipped): a ceiling, not the verdict'
        : r.world !== 4
          ? `world ${r.world}, the bar is set at world 4`
          : '';
  if (cells === 0)
    lines.push(
      "verdict: no cell with a target here (the Python project's qkvpacked and llama3-8B shapes of a GPU run)",
    );
  else
    lines.push(
      met
        ? 'verdict: every target met (world 4)'
        : ok && why
          ? `verdict: every present cell passes, but ${why}`
          : `verdict: targets NOT met${why ? ` (${why})` : ''}`,
    );
  return { lines, met };
}

function printTargets(file: string | undefined): void {
  const dir = resultsDir();
  const found = file ?? newestWorld4(dir);
  if (!found) {
    console.log(`issue targets: no cuda world-4 result under ${dir} (run npm run bench on 4 GPUs first)`);
    return;
  }
  const report = readResult<Report>(found);
  console.log(`issue targets, ${path.basename(found)} (${report.machine}):`);
  for (const line of checkTargets(report).lines) console.log(`  ${line}`);
}

export const targetsCommand: Command = {
  name: 'bench:targets',
  summary:
    "a README-table result against the README-table issue's bar (zigzag >= 95% of theoretic at world 4, every cell above the Python project's)",
  description: 'Reports and exits 0 whether the bar is met or not.',
  flags: {},
  positionals: {
    usage: '[FILE]',
    help: 'a result file (default: the newest cuda world-4 result in $RFA_RESULTS_DIR, else benchmark/results)',
    min: 0,
    max: 1,
  },
  run: (_, files) => printTargets(files[0]),
};

if (isMain(import.meta.url)) exitWith(await runCommand(targetsCommand, process.argv.slice(2)));

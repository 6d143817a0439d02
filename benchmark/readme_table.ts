// `ring-flash-attn bench` (`npm run bench`): the Python project's README table, measured here.
// For the world given (default: every visible GPU; without GPUs, the CPU backend at a small
// size, labelled as such) it prints, forward-only and forward+backward, iter/s per rank of
//   theoretic flash_attn | ring_attn | ring_attn_v2 | zigzag_ring | stripe_attn
// and the % of theoretic (the Python project's definition: our single-GPU kernel on one rank's
// shard, iter/s ÷ world); then the varlen table (flash_attn_varlen | ring_varlen |
// zigzag_ring_varlen | llama3_varlen over the Python project's cu_seqlens sets). The flags are
// in bench_flags.ts.
// `--solo W` runs on one device the share of each rank of a W-rank ring in turn, without
// transfers (benchmark/solo_comm.ts), and reports per column its slowest rank (a row names it),
// as a ring in lockstep runs at its slowest rank's pace: the table the ring would print if
// communication were free (an upper bound: a ring waits for the slowest rank of each step).
// The ranks differ: ring_attn's last rank does the most work; zigzag's do equal work in different
// shapes (rank 0 runs half blocks of half the queries and all keys, rank W−1 the reverse).
// The varlen table runs solo too (llama3's all-gather and reduce-scatter are skipped like the
// ring's transfers). With `--solo-transfers copy-engine` the transfers are real same-device
// copies instead (which the CUDA driver runs as SM kernels, not on a copy engine: a bound on
// SM-based transfers like NCCL's).
// Results go to <results dir>/<stamp>.json with the table's chart beside it and, for a GPU run,
// a chart of its shares of theoretic beside the Python project's (report_charts.ts).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { init, visibleGpuCount } from '../index.js';
import type { BenchResult, BenchTask } from './bench_rank.js';
import type { VarlenBenchTask } from './bench_varlen_rank.js';
import { BENCH_FLAGS, benchOptions, type BenchOptions } from './bench_flags.js';
import { ulyssesDegree, varlenCase, VARLEN_COLUMNS, type Mode } from './cases.js';
import { exitWith, isMain, runCommand, type Command } from './cli_command.js';
import { Progress } from './progress.js';
import { pythonChart, tableChart, type ResultRow } from './report_charts.js';
import { chartFiles, displayPath, resultStamp } from './result_files.js';

interface Cell {
  label: string;
  /** Why the column did not run on this case (a Ulysses degree the heads do not take); its figures are then absent. */
  skipped?: string;
  /** A Ulysses column's grid, "2 × 2". */
  grid?: string;
  iterPerSec: number;
  spread: number;
  tflops: number;
  peakGiB: number;
  slowestSoloRank?: number;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function readmeTable(o: BenchOptions): Promise<void> {
  const { onGpu, world, solo, soloRanks, iters } = o;
  const varlen = varlenCase(onGpu);
  const rt = await init({ backend: o.backend, world: solo ? 1 : world, transport: o.transport });
  const transport = rt.transport;
  const denseModule = new URL('./bench_rank.js', import.meta.url).href;
  const varlenModule = new URL('./bench_varlen_rank.js', import.meta.url).href;
  const device = onGpu
    ? `GPU (${process.env.RFA_GPU_NAME ?? 'NVIDIA H200'})`
    : `CPU backend, ${os.cpus().length} cores (not a GPU figure)`;
  const soloWho =
    o.oneSoloRank !== null
      ? `rank ${o.oneSoloRank} of ${world}`
      : `each rank of ${world} in turn (the slowest reported)`;
  const machine = solo
    ? `solo: ${soloWho} alone on one ${device}, ${o.loopback ? 'transfers as same-device copies (SM copy kernels)' : 'transfers skipped'}`
    : onGpu
      ? `${world}× ${device}, ${transport} transfers`
      : `${device}, world ${world}`;
  const progress = new Progress(
    o.modes.length * (o.cases.length * o.columns.length + (o.varlen ? VARLEN_COLUMNS.length : 0)),
  );
  progress.print(
    `# ring-flash-attn README table — ${machine}, ${o.dtype}, causal, ${o.tokens} tokens per rank, ${new Date().toISOString().slice(0, 10)}`,
  );
  const report: (ResultRow & Record<string, unknown>)[] = [];
  const ranks = Array.from({ length: solo ? 1 : world }, (_, i) => i);
  const timing = { iters, maxRepeats: o.maxRepeats, settle: o.settle };
  // Runs one column on every rank (the theoretic column too: as in the Python project's
  // benchmark, every rank runs the single-device kernel on its own shard at the same time) and
  // makes its cell. Solo: a ring column runs once per solo rank (the single-device column once; it has no rank).
  const measure = async (
    label: string,
    module: string,
    task: object,
    flopPerRank: number,
    single: boolean,
    extra: { case: string; mode: Mode; name: string },
  ): Promise<Cell> => {
    const played = solo && !single ? soloRanks : [null];
    const res: BenchResult[] = [];
    for (const r of played) {
      const t = r === null ? task : { ...task, solo: { world, rank: r, loopback: o.loopback } };
      res.push(
        ...((await rt.runEach(
          module,
          'run',
          ranks.map(() => t),
          ranks,
        )) as BenchResult[]),
      );
    }
    // Ring steps synchronise the ranks: the slowest rank's rate is the ring's rate.
    const perRank = res.map((r) => iters / median(r.repeats));
    const rate = Math.min(...perRank);
    const slowest = perRank.indexOf(rate);
    const slowestSoloRank = solo && !single ? soloRanks[slowest] : undefined;
    // Spread of the repeats behind the figure: every rank's in a real ring; in solo, the slowest
    // rank's (the differences between the ranks it played are not noise).
    const all = (slowestSoloRank === undefined ? res : [res[slowest]!]).flatMap((r) =>
      r.repeats.map((t) => iters / t),
    );
    const spread = (Math.max(...all) - Math.min(...all)) / rate;
    const tflops = (flopPerRank * rate) / 1e12;
    report.push({
      ...extra,
      column: label,
      iterPerSecPerRank: rate,
      spread,
      perRank,
      ...(slowestSoloRank !== undefined ? { soloRanks: played, slowestSoloRank } : {}),
      tflopsPerGpu: tflops,
      peakBytes: res.map((r) => r.peakBytes),
      warmupRepeats: res.map((r) => r.warmupRepeats),
    });
    return {
      label,
      iterPerSec: single ? rate / world : rate,
      spread,
      tflops,
      peakGiB: Math.max(...res.map((r) => r.peakBytes)) / 2 ** 30,
      slowestSoloRank,
    };
  };
  const print = (title: string, mode: Mode, row: Cell[]) => {
    const theoretic = row[0]!.iterPerSec;
    // A skipped cell shows a dash in every figure row.
    const fig = (r: Cell, text: string) => (r.skipped ? '—' : text);
    const lines = [
      `\n## ${title}, ${mode === 'fwd' ? 'forward' : 'forward + backward'}\n`,
      `|          | ${row.map((r) => r.label).join(' | ')} |`,
      `| -------- | ${row.map(() => '---').join(' | ')} |`,
      `| iter/sec | ${row.map((r, i) => (i === 0 ? `${(r.iterPerSec * world).toFixed(1)}/${world}=${r.iterPerSec.toFixed(1)}` : fig(r, r.iterPerSec.toFixed(1)))).join(' | ')} |`,
      `|          | | ${row
        .slice(1)
        .map((r) => fig(r, `${((100 * r.iterPerSec) / theoretic).toFixed(1)}%`))
        .join(' | ')} |`,
      `| ${onGpu ? 'TFLOP/s per GPU' : 'GFLOP/s per rank'} | ${row.map((r) => fig(r, onGpu ? r.tflops.toFixed(1) : (r.tflops * 1000).toFixed(2))).join(' | ')} |`,
      `| spread (max−min)/median | ${row.map((r) => fig(r, `${(100 * r.spread).toFixed(1)}%`)).join(' | ')} |`,
      `| peak memory per rank (MiB) | ${row.map((r) => fig(r, (r.peakGiB * 1024).toFixed(1))).join(' | ')} |`,
    ];
    if (row.some((r) => r.grid || r.skipped))
      lines.push(
        `| ulysses × ring | | ${row
          .slice(1)
          .map((r) => r.grid ?? (r.skipped ? `not run: ${r.skipped}` : ''))
          .join(' | ')} |`,
      );
    if (solo && soloRanks.length > 1)
      lines.push(
        `| slowest solo rank | | ${row
          .slice(1)
          .map((r) => r.slowestSoloRank)
          .join(' | ')} |`,
      );
    progress.print(lines.join('\n'));
  };
  try {
    for (const c of o.cases)
      for (const mode of o.modes) {
        const row: Cell[] = [];
        for (const col of o.columns) {
          progress.step(`${c.title.split(' ')[0]} ${mode} ${col.label}`);
          const name = `${col.prefix}_${c.packing}_func${col.suffix}`;
          let usp: BenchTask['usp'];
          if (col.usp) {
            const g = ulyssesDegree(col, world, c.h, c.hk, o.ulysses);
            if ('skip' in g) {
              row.push({
                label: col.label,
                skipped: g.skip,
                iterPerSec: 0,
                spread: 0,
                tflops: 0,
                peakGiB: 0,
              });
              continue;
            }
            usp = { ...g, ringImpl: col.usp.ringImpl };
          }
          const task: BenchTask = {
            name,
            b: c.b,
            s: c.s,
            h: c.h,
            hk: c.hk,
            d: c.d,
            causal: true,
            dtype: o.dtype,
            backward: mode === 'fwdbwd',
            ...timing,
            seed: 1,
            ...(usp ? { usp } : {}),
          };
          const single = col.prefix === 'flash_attn';
          // FLOP per rank per call: causal forward over the full sequence is 2·b·h·S²·d, split over the world.
          const S = single ? c.s : c.s * world;
          const flop = ((2 * c.b * c.h * S * S * c.d) / (single ? 1 : world)) * (mode === 'fwdbwd' ? 3.5 : 1);
          const cell = await measure(col.label, denseModule, task, flop, single, {
            case: c.title,
            mode,
            name,
          });
          if (usp) {
            cell.grid = `${usp.ulysses} × ${usp.ring}`;
            report[report.length - 1]!.grid = { ulysses: usp.ulysses, ring: usp.ring };
          }
          row.push(cell);
        }
        print(c.title, mode, row);
      }
    if (o.varlen)
      for (const mode of o.modes) {
        const row: Cell[] = [];
        for (const col of VARLEN_COLUMNS) {
          progress.step(`varlen ${mode} ${col.label}`);
          const v = varlen;
          const task: VarlenBenchTask = {
            column: col.column,
            s: v.s,
            h: v.h,
            hk: v.hk,
            d: v.d,
            dtype: o.dtype,
            backward: mode === 'fwdbwd',
            ...timing,
            sets: v.sets,
            headsKStride: v.headsKStride,
            seed: 1,
          };
          const single = col.column === 'flash_attn_varlen';
          // Mean over the sets of Σ causal 2·h·L²·d over the (global) sequences, per rank.
          const scale = single ? 1 : world;
          const flopSets = v.sets.map(
            (set) =>
              set.slice(1).reduce((acc, x, i) => acc + 2 * v.h * ((x - set[i]!) * scale) ** 2 * v.d, 0) /
              scale,
          );
          const flop =
            (flopSets.reduce((x, y) => x + y, 0) / flopSets.length) * (mode === 'fwdbwd' ? 3.5 : 1);
          row.push(
            await measure(col.label, varlenModule, task, flop, single, {
              case: v.title,
              mode,
              name: col.column,
            }),
          );
        }
        print(varlen.title, mode, row);
      }
    progress.finish();
  } finally {
    progress.stop();
    await rt.close();
  }
  fs.mkdirSync(o.outDir, { recursive: true });
  const stamp = resultStamp({
    backend: o.backend,
    solo,
    world,
    soloRank: o.oneSoloRank,
    copyEngine: (onGpu && transport === 'copy-engine') || o.loopback,
  });
  const json = path.join(o.outDir, `${stamp}.json`);
  const doc = {
    machine,
    backend: o.backend,
    world,
    transport,
    dtype: o.dtype,
    tokens: o.tokens,
    iters,
    results: report,
  };
  fs.writeFileSync(json, JSON.stringify(doc, null, 2));
  const charts = chartFiles(json);
  fs.writeFileSync(charts.table, tableChart(doc));
  const beside = pythonChart(doc);
  if (beside) fs.writeFileSync(charts.python, beside);
  console.log(`\nresults: ${displayPath(json)} (+ .svg${beside ? `, ${path.basename(charts.python)}` : ''})`);
}

export const benchCommand: Command<typeof BENCH_FLAGS> = {
  name: 'bench',
  summary: "the Python project's README table, measured here: iter/s per rank and % of theoretic",
  description:
    'Without GPUs it runs on the CPU backend at a small size, labelled so. Writes <stamp>.json and its charts.',
  flags: BENCH_FLAGS,
  run: (values) => readmeTable(benchOptions(values, visibleGpuCount())),
};

if (isMain(import.meta.url)) exitWith(await runCommand(benchCommand, process.argv.slice(2)));

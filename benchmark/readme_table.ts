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
import { BENCH_FLAGS, benchOptions, GPU_TOKENS, type BenchOptions } from './bench_flags.js';
import {
  causalPairs,
  ulyssesDegree,
  varlenCase,
  VARLEN_COLUMNS,
  type DenseCase,
  type Mode,
} from './cases.js';
import { exitWith, isMain, runCommand, type Command } from './cli_command.js';
import { Progress } from './progress.js';
import { unsupportedBy } from './unsupported.js';
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
  /** Mean over the ranks of the bytes one call sent from each. */
  sentBytes: number;
  /** The backend refused the call (E_UNSUPPORTED): its message; the figures are then absent. */
  unsupported?: string;
}

/** The figures of a cell that did not run. */
const NOT_RUN = { iterPerSec: 0, spread: 0, tflops: 0, peakGiB: 0, sentBytes: 0 };

/** Bytes in the unit that suits them. */
function bytesText(n: number): string {
  const [unit, div] = n >= 2 ** 30 ? ['GiB', 2 ** 30] : n >= 2 ** 20 ? ['MiB', 2 ** 20] : ['KiB', 2 ** 10];
  return `${(n / div).toFixed(1)} ${unit}`;
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
    o.modes.length *
      (o.cases.length * o.columns.length * (o.window ? 2 : 1) + (o.varlen ? VARLEN_COLUMNS.length : 0)),
  );
  progress.print(
    `# ring-flash-attn README table — ${machine}, ${o.dtype}, causal, ${o.tokens} tokens per rank, ${new Date().toISOString().slice(0, 10)}`,
  );
  const win = o.window;
  const windowText = (w: readonly number[]) => `(${w.join(', ')})`;
  if (win)
    progress.print(
      `# window_size ${windowText(win.used)} beside no window${
        win.used.join() === win.asked.join()
          ? ''
          : ` (asked ${windowText(win.asked)}, scaled by ${o.tokens}/${GPU_TOKENS} tokens per rank to the CPU size: the same share of the ${o.tokens * world}-token sequence)`
      }`,
    );
  const report: (ResultRow & Record<string, unknown>)[] = [];
  // The window's cells: apart from `report`, whose charts and targets are of the plain table.
  const windowReport: Record<string, unknown>[] = [];
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
    into: Record<string, unknown>[] = report,
  ): Promise<Cell> => {
    const played = solo && !single ? soloRanks : [null];
    const res: BenchResult[] = [];
    try {
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
    } catch (e) {
      // An option the backend does not take yet is a cell of the table, not the end of the run.
      const why = unsupportedBy(e);
      if (why === null) throw e;
      into.push({ ...extra, column: label, unsupported: why });
      return { ...NOT_RUN, label, unsupported: why };
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
    const sentBytes = res.reduce((a, r) => a + r.sentBytes, 0) / res.length;
    into.push({
      ...extra,
      column: label,
      iterPerSecPerRank: rate,
      spread,
      perRank,
      ...(slowestSoloRank !== undefined ? { soloRanks: played, slowestSoloRank } : {}),
      tflopsPerGpu: tflops,
      peakBytes: res.map((r) => r.peakBytes),
      sentBytes: res.map((r) => r.sentBytes),
      warmupRepeats: res.map((r) => r.warmupRepeats),
    });
    return {
      label,
      iterPerSec: single ? rate / world : rate,
      spread,
      tflops,
      peakGiB: Math.max(...res.map((r) => r.peakBytes)) / 2 ** 30,
      slowestSoloRank,
      sentBytes,
    };
  };
  const print = (title: string, mode: Mode, row: Cell[]) => {
    const theoretic = row[0]!.iterPerSec;
    // A skipped cell shows a dash in every figure row.
    const fig = (r: Cell, text: string) => (r.skipped ? '—' : r.unsupported ? 'E_UNSUPPORTED' : text);
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
    progress.print(lines.join('\n') + refusals(row));
  };
  // The refused cells' messages, once each below their table.
  const refusals = (row: Cell[]) =>
    row
      .filter((r) => r.unsupported)
      .map((r) => `\n${r.label}: E_UNSUPPORTED: ${r.unsupported}`)
      .join('');
  // The window's row beside the plain one of the same case and mode: rates, their ratio, and the
  // bytes each rank sent per call (the single-device column sends none).
  const printWindow = (title: string, mode: Mode, plain: Cell[], windowed: Cell[]) => {
    const w = windowText(win!.used);
    const cells = (f: (p: Cell, x: Cell, i: number) => string) =>
      windowed
        .map((x, i) => {
          const p = plain[i]!;
          if (x.skipped || p.skipped) return '—';
          if (x.unsupported || p.unsupported) return 'E_UNSUPPORTED';
          return f(p, x, i);
        })
        .join(' | ');
    const rate = (r: Cell, i: number) =>
      i === 0
        ? `${(r.iterPerSec * world).toFixed(1)}/${world}=${r.iterPerSec.toFixed(1)}`
        : r.iterPerSec.toFixed(1);
    const sent = (r: Cell, i: number) => (i === 0 ? '—' : bytesText(r.sentBytes));
    const lines = [
      `\n## ${title}, ${mode === 'fwd' ? 'forward' : 'forward + backward'}, window_size ${w} beside none\n`,
      `|          | ${windowed.map((r) => r.label).join(' | ')} |`,
      `| -------- | ${windowed.map(() => '---').join(' | ')} |`,
      `| iter/sec, no window | ${cells((p, _, i) => rate(p, i))} |`,
      `| iter/sec, window ${w} | ${cells((_, x, i) => rate(x, i))} |`,
      `| speed-up (window ÷ none) | ${cells((p, x) => `${(x.iterPerSec / p.iterPerSec).toFixed(2)}×`)} |`,
      `| sent per rank per call, no window | ${cells((p, _, i) => sent(p, i))} |`,
      `| sent per rank per call, window ${w} | ${cells((_, x, i) => sent(x, i))} |`,
      `| bytes saved | ${cells((p, x, i) => (i === 0 || p.sentBytes === 0 ? '—' : `${(100 * (1 - x.sentBytes / p.sentBytes)).toFixed(1)}%`))} |`,
    ];
    progress.print(lines.join('\n') + refusals(windowed));
  };
  // One row of a dense case: every column, with the window given or none.
  const denseRow = async (c: DenseCase, mode: Mode, window: [number, number] | null) => {
    const row: Cell[] = [];
    for (const col of o.columns) {
      progress.step(`${c.title.split(' ')[0]} ${mode} ${col.label}${window ? ' window' : ''}`);
      const name = `${col.prefix}_${c.packing}_func${col.suffix}`;
      let usp: BenchTask['usp'];
      if (col.usp) {
        const g = ulyssesDegree(col, world, c.h, c.hk, o.ulysses);
        if ('skip' in g) {
          row.push({ ...NOT_RUN, label: col.label, skipped: g.skip });
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
        ...(window ? { window } : {}),
      };
      const single = col.prefix === 'flash_attn';
      // FLOP per rank per call: 4·b·h·d per (query, key) pair the mask keeps, split over the
      // world; causal over the full sequence that is 2·b·h·S²·d.
      const S = single ? c.s : c.s * world;
      const flop =
        ((4 * c.b * c.h * c.d * causalPairs(S, window?.[0] ?? -1)) / (single ? 1 : world)) *
        (mode === 'fwdbwd' ? 3.5 : 1);
      const extra = { case: c.title, mode, name, ...(window ? { window } : {}) };
      const cell = await measure(
        col.label,
        denseModule,
        task,
        flop,
        single,
        extra,
        window ? windowReport : report,
      );
      if (usp && !cell.unsupported) {
        cell.grid = `${usp.ulysses} × ${usp.ring}`;
        const into = window ? windowReport : report;
        into[into.length - 1]!.grid = { ulysses: usp.ulysses, ring: usp.ring };
      }
      row.push(cell);
    }
    return row;
  };
  try {
    for (const c of o.cases)
      for (const mode of o.modes) {
        const row = await denseRow(c, mode, null);
        print(c.title, mode, row);
        if (o.window) printWindow(c.title, mode, row, await denseRow(c, mode, o.window.used));
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
    ...(win ? { window: { asked: win.asked, used: win.used, results: windowReport } } : {}),
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

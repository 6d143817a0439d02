// `npm run bench`: the Python project's README table, measured here. For the world given
// (default: every visible GPU; without GPUs, the CPU backend at a small size, labelled as
// such) it prints, forward-only and forward+backward, iter/s per rank of
//   theoretic flash_attn | ring_attn | ring_attn_v2 | zigzag_ring | stripe_attn
// and the % of theoretic (the seed's definition: our single-GPU kernel on one rank's shard,
// iter/s ÷ world); then the varlen table (flash_attn_varlen | ring_varlen | zigzag_ring_varlen |
// llama3_varlen over the seed's cu_seqlens sets; `--varlen off` skips it). Flags: --world,
// --backend, --tokens, --cases (indices of the dense cases; `none`: the varlen table only),
// --modes, --iters, --max-repeats, --settle, --transport (copy-engine, the runtime's default, or
// nccl: how ranks communicate on GPUs, see InitOptions.transport).
// `--solo W` runs on one device the share of each rank of a W-rank ring in turn, without
// transfers (benchmark/solo_comm.ts), and reports per column its slowest rank (a row names it),
// as a ring in lockstep runs at its slowest rank's pace: the table the ring would print if
// communication were free (an upper bound: a ring waits for the slowest rank of each step).
// The ranks differ: ring_attn's last rank does the most work; zigzag's do equal work in different
// shapes (rank 0 runs half blocks of half the queries and all keys, rank W−1 the reverse).
// The varlen table runs solo too (llama3's all-gather and reduce-scatter are skipped like the
// ring's transfers). `--solo-rank R` times rank R only. With `--solo-transfers copy-engine` the transfers are real
// same-device copies instead (which the CUDA driver runs as SM kernels, not on a copy engine: a
// bound on SM-based transfers like NCCL's).
// Results go to benchmark/results/<stamp>.json and an SVG chart beside it.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { init, visibleGpuCount, type Transport } from '../index.js';
import type { DType } from '../runtime/dtype.js';
import type { BenchResult, BenchTask } from './bench_rank.js';
import { SEED_SETS, type VarlenBenchTask, type VarlenColumn } from './bench_varlen_rank.js';
import { barChart, type ChartGroup } from './chart.js';
import { RESULTS_DIR, resultStamp } from './result_files.js';
import { Progress } from './progress.js';

interface Case {
  title: string;
  packing: 'qkvpacked' | 'kvpacked';
  b: number; s: number; h: number; hk: number; d: number;
}

const COLUMNS = [
  { label: 'theoretic flash_attn', prefix: 'flash_attn', suffix: '' },
  { label: 'ring_attn', prefix: 'ring_flash_attn', suffix: '' },
  { label: 'ring_attn_v2', prefix: 'ring_flash_attn', suffix: '_v2' },
  { label: 'zigzag_ring', prefix: 'zigzag_ring_flash_attn', suffix: '' },
  { label: 'stripe_attn', prefix: 'stripe_flash_attn', suffix: '' },
];

const VARLEN_COLUMNS: { label: string; column: VarlenColumn }[] = [
  { label: 'theoretic flash_attn_varlen', column: 'flash_attn_varlen' },
  { label: 'ring_varlen', column: 'ring_varlen' },
  { label: 'zigzag_ring_varlen', column: 'zigzag_ring_varlen' },
  { label: 'llama3_varlen', column: 'llama3' },
];

type Mode = 'fwd' | 'fwdbwd';
interface Cell { label: string; iterPerSec: number; spread: number; tflops: number; peakGiB: number; slowestSoloRank?: number }

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

/** The comma-separated values of --name (undefined when absent); any not in `known` is an error listing `choices`. */
function listArg(name: string, known: readonly string[], choices: string): string[] | undefined {
  const values = arg(name)?.split(',');
  const unknown = values?.filter((v) => !known.includes(v));
  if (unknown?.length) throw new Error(`--${name}: unknown ${unknown.join(', ')} (${choices})`);
  return values;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  const gpus = visibleGpuCount();
  const backend = (arg('backend') ?? (gpus > 0 ? 'cuda' : 'cpu')) as 'cuda' | 'cpu';
  const solo = arg('solo') ? Number(arg('solo')) : null;
  // --solo-transfers copy-engine: the solo rank's transfers become same-device copies (SM kernels).
  const loopback = arg('solo-transfers') === 'copy-engine';
  if (loopback && (!solo || backend !== 'cuda')) throw new Error('--solo-transfers copy-engine needs --solo W on the cuda backend');
  // In solo mode one device plays ranks of a W-rank ring (soloRanks); `world` is W for every figure.
  const world = solo ?? Number(arg('world') ?? (backend === 'cuda' ? gpus : 2));
  if (!Number.isInteger(world) || world < 1) throw new Error(`--world/--solo must be a positive integer, got ${world}`);
  if (arg('solo-rank') !== undefined && !solo) throw new Error('--solo-rank needs --solo W');
  const oneSoloRank = arg('solo-rank') === undefined || arg('solo-rank') === 'all' ? null : Number(arg('solo-rank'));
  if (oneSoloRank !== null && (!Number.isInteger(oneSoloRank) || oneSoloRank < 0 || oneSoloRank >= world))
    throw new Error(`--solo-rank must be 'all' or an integer in [0, ${world}), got ${arg('solo-rank')}`);
  // The ranks a solo run plays, one after another on the one device.
  const soloRanks = oneSoloRank !== null ? [oneSoloRank] : Array.from({ length: world }, (_, r) => r);
  const onGpu = backend === 'cuda';
  const dtype: DType = onGpu ? 'bfloat16' : 'float32';
  const tokens = Number(arg('tokens') ?? (onGpu ? 8192 : 128)); // per rank
  const cases: Case[] = onGpu
    ? [
      { title: 'seed qkvpacked (h=5, d=128)', packing: 'qkvpacked', b: 1, s: tokens, h: 5, hk: 5, d: 128 },
      { title: 'llama3-8B kvpacked (h=32, h_k=8, d=128)', packing: 'kvpacked', b: 1, s: tokens, h: 32, hk: 8, d: 128 },
    ]
    : [{ title: 'CPU backend, small (h=2, d=32)', packing: 'qkvpacked', b: 1, s: tokens, h: 2, hk: 2, d: 32 }];
  const indices = cases.map((_, i) => String(i));
  const only = listArg('cases', [...indices, 'none'], `indices 0..${cases.length - 1} of the dense cases, or none`);
  const selected = only ? cases.filter((_, i) => only.includes(indices[i]!)) : cases;
  const modes = (listArg('modes', ['fwd', 'fwdbwd'], 'fwd, fwdbwd') ?? ['fwd', 'fwdbwd']) as Mode[];
  // --columns zigzag_ring,stripe_attn: only those ring columns (theoretic always runs: the percentages need it).
  const ringLabels = COLUMNS.slice(1).map((c) => c.label);
  const onlyColumns = listArg('columns', COLUMNS.map((c) => c.label), `one of ${ringLabels.join(', ')}`);
  const columns = COLUMNS.filter((c, i) => i === 0 || !onlyColumns || onlyColumns.includes(c.label));
  const iters = Number(arg('iters') ?? (onGpu ? 20 : 4)); // a multiple of the 4 varlen sets
  const maxRepeats = Number(arg('max-repeats') ?? 8);
  const settle = Number(arg('settle') ?? 0.03);

  const varlen = (arg('varlen') ?? 'on') !== 'off';
  // The Python project's varlen benchmark: llama3-8B heads, 8192 tokens per rank, its four
  // cu_seqlens sets in turn, heads_k_stride 4 for llama3. On the CPU backend: small even sets.
  const varlenCase = onGpu
    ? { title: `varlen llama3-8B kvpacked (h=32, h_k=8, d=128, cu_seqlens ×4)`, s: 8192, h: 32, hk: 8, d: 128, headsKStride: 4, sets: SEED_SETS }
    : { title: 'varlen CPU backend, small (h=2, d=32)', s: 128, h: 2, hk: 2, d: 32, headsKStride: 1, sets: [[0, 128], [0, 32, 96, 128], [0, 64, 128], [0, 48, 80, 112, 120, 128]] };

  // Default: the runtime's own (copy-engine); --transport nccl times NCCL's kernels instead.
  const rt = await init({ backend, world: solo ? 1 : world, transport: arg('transport') as Transport | undefined });
  const transport = rt.transport;
  const denseModule = new URL('./bench_rank.js', import.meta.url).href;
  const varlenModule = new URL('./bench_varlen_rank.js', import.meta.url).href;
  const progress = new Progress(modes.length * (selected.length * columns.length + (varlen ? VARLEN_COLUMNS.length : 0)));
  const device = onGpu ? `GPU (${process.env.RFA_GPU_NAME ?? 'NVIDIA H200'})` : `CPU backend, ${os.cpus().length} cores (not a GPU figure)`;
  const soloWho = oneSoloRank !== null ? `rank ${oneSoloRank} of ${world}` : `each rank of ${world} in turn (the slowest reported)`;
  const machine = solo ? `solo: ${soloWho} alone on one ${device}, ${loopback ? 'transfers as same-device copies (SM copy kernels)' : 'transfers skipped'}` : onGpu ? `${world}× ${device}, ${transport} transfers` : `${device}, world ${world}`;
  console.log(`# ring-flash-attn README table — ${machine}, ${dtype}, causal, ${tokens} tokens per rank, ${new Date().toISOString().slice(0, 10)}`);
  const report: Record<string, unknown>[] = [];
  const chart: ChartGroup[] = [];
  const ranks = Array.from({ length: solo ? 1 : world }, (_, i) => i);
  // Runs one column on every rank (the theoretic column too: as in the seed's benchmark, every
  // rank runs the single-device kernel on its own shard at the same time) and makes its cell.
  // Solo: a ring column runs once per solo rank (the single-device column once; it has no rank).
  const measure = async (label: string, module: string, task: object, flopPerRank: number, single: boolean, extra: Record<string, unknown>): Promise<Cell> => {
    const played = solo && !single ? soloRanks : [null];
    const res: BenchResult[] = [];
    for (const r of played) {
      const t = r === null ? task : { ...task, solo: { world, rank: r, loopback } };
      res.push(...((await rt.runEach(module, 'run', ranks.map(() => t), ranks)) as BenchResult[]));
    }
    // Ring steps synchronise the ranks: the slowest rank's rate is the ring's rate.
    const perRank = res.map((r) => iters / median(r.repeats));
    const rate = Math.min(...perRank);
    const slowest = perRank.indexOf(rate);
    const slowestSoloRank = solo && !single ? soloRanks[slowest] : undefined;
    // Spread of the repeats behind the figure: every rank's in a real ring; in solo, the slowest
    // rank's (the differences between the ranks it played are not noise).
    const all = (slowestSoloRank === undefined ? res : [res[slowest]!]).flatMap((r) => r.repeats.map((t) => iters / t));
    const spread = (Math.max(...all) - Math.min(...all)) / rate;
    const tflops = (flopPerRank * rate) / 1e12;
    report.push({ ...extra, column: label, iterPerSecPerRank: rate, spread, perRank, ...(slowestSoloRank !== undefined ? { soloRanks: played, slowestSoloRank } : {}),
      tflopsPerGpu: tflops, peakBytes: res.map((r) => r.peakBytes), warmupRepeats: res.map((r) => r.warmupRepeats) });
    return { label, iterPerSec: single ? rate / world : rate, spread, tflops, peakGiB: Math.max(...res.map((r) => r.peakBytes)) / 2 ** 30, slowestSoloRank };
  };
  const print = (title: string, mode: Mode, row: Cell[]) => {
    const theoretic = row[0]!.iterPerSec;
    console.log(`\n## ${title}, ${mode === 'fwd' ? 'forward' : 'forward + backward'}\n`);
    console.log(`|          | ${row.map((r) => r.label).join(' | ')} |`);
    console.log(`| -------- | ${row.map(() => '---').join(' | ')} |`);
    console.log(`| iter/sec | ${row.map((r, i) => (i === 0 ? `${(r.iterPerSec * world).toFixed(1)}/${world}=${r.iterPerSec.toFixed(1)}` : r.iterPerSec.toFixed(1))).join(' | ')} |`);
    console.log(`|          | | ${row.slice(1).map((r) => `${((100 * r.iterPerSec) / theoretic).toFixed(1)}%`).join(' | ')} |`);
    console.log(`| ${onGpu ? 'TFLOP/s per GPU' : 'GFLOP/s per rank'} | ${row.map((r) => (onGpu ? r.tflops.toFixed(1) : (r.tflops * 1000).toFixed(2))).join(' | ')} |`);
    console.log(`| spread (max−min)/median | ${row.map((r) => `${(100 * r.spread).toFixed(1)}%`).join(' | ')} |`);
    console.log(`| peak memory per rank (MiB) | ${row.map((r) => (r.peakGiB * 1024).toFixed(1)).join(' | ')} |`);
    if (solo && soloRanks.length > 1) console.log(`| slowest solo rank | | ${row.slice(1).map((r) => r.slowestSoloRank).join(' | ')} |`);
    chart.push({ title: `${title.split(' (')[0]} ${mode}`, bars: row.map((r) => ({ label: r.label, iterPerSec: r.iterPerSec, percent: (100 * r.iterPerSec) / theoretic })) });
  };
  try {
    for (const c of selected)
      for (const mode of modes) {
        const row: Cell[] = [];
        for (const col of columns) {
          progress.step(`${c.title.split(' ')[0]} ${mode} ${col.label}`);
          const name = `${col.prefix}_${c.packing}_func${col.suffix}`;
          const task: BenchTask = { name, b: c.b, s: c.s, h: c.h, hk: c.hk, d: c.d, causal: true, dtype, backward: mode === 'fwdbwd', iters, maxRepeats, settle, seed: 1 };
          const single = col.prefix === 'flash_attn';
          // FLOP per rank per call: causal forward over the full sequence is 2·b·h·S²·d, split over the world.
          const S = single ? c.s : c.s * world;
          const flop = (2 * c.b * c.h * S * S * c.d) / (single ? 1 : world) * (mode === 'fwdbwd' ? 3.5 : 1);
          row.push(await measure(col.label, denseModule, task, flop, single, { case: c.title, mode, name }));
        }
        print(c.title, mode, row);
      }
    if (varlen)
      for (const mode of modes) {
        const row: Cell[] = [];
        for (const col of VARLEN_COLUMNS) {
          progress.step(`varlen ${mode} ${col.label}`);
          const v = varlenCase;
          const task: VarlenBenchTask = { column: col.column, s: v.s, h: v.h, hk: v.hk, d: v.d, dtype, backward: mode === 'fwdbwd', iters, maxRepeats, settle, sets: v.sets, headsKStride: v.headsKStride, seed: 1 };
          const single = col.column === 'flash_attn_varlen';
          // Mean over the sets of Σ causal 2·h·L²·d over the (global) sequences, per rank.
          const scale = single ? 1 : world;
          const flopSets = v.sets.map((set) => set.slice(1).reduce((acc, x, i) => acc + 2 * v.h * ((x - set[i]!) * scale) ** 2 * v.d, 0) / scale);
          const flop = (flopSets.reduce((x, y) => x + y, 0) / flopSets.length) * (mode === 'fwdbwd' ? 3.5 : 1);
          row.push(await measure(col.label, varlenModule, task, flop, single, { case: v.title, mode, name: col.column }));
        }
        print(varlenCase.title, mode, row);
      }
  } finally {
    await rt.close();
  }
  fs.mkdirSync(RESULTS_DIR, { recursive: true });
  const stamp = resultStamp({ backend, solo: Boolean(solo), world, soloRank: oneSoloRank, copyEngine: (onGpu && transport === 'copy-engine') || loopback });
  fs.writeFileSync(path.join(RESULTS_DIR, `${stamp}.json`), JSON.stringify({ machine, backend, world, transport, dtype, tokens, iters, results: report }, null, 2));
  fs.writeFileSync(path.join(RESULTS_DIR, `${stamp}.svg`), barChart(`ring-flash-attn, ${machine}`, chart));
  console.log(`\nresults: benchmark/results/${stamp}.json (+ .svg)`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});

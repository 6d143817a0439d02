// The flags of `ring-flash-attn bench` (readme_table.ts) and their reading into one options
// object. Everything a flag can get wrong, alone or with another flag, is rejected here, before
// the runtime starts; the defaults that depend on the backend are applied here too.
import type { DType } from '../runtime/dtype.js';
import type { Transport } from '../runtime/pool.js';
import {
  COLUMNS,
  DEFAULT_COLUMNS,
  denseCases,
  RING_COLUMNS,
  type Column,
  type DenseCase,
  type Mode,
} from './cases.js';
import { bad, choice, decimal, integer, list, text, UsageError, type FlagValues } from './cli_flags.js';
import { resultsDir } from './result_files.js';

/** `--cases`: indices or `none`; the indices are checked against the backend's cases later. */
function caseList(raw: string, flag: string): string[] {
  const items = raw.split(',');
  if (items.some((x) => !/^\d+$/.test(x) && x !== 'none') || (items.includes('none') && items.length > 1))
    throw bad(flag, raw, 'expected indices of the dense cases (0,1) or none');
  return items.map((x) => (x === 'none' ? x : String(Number(x))));
}

/** `--window L` (the causal sliding window (L, 0)) or `--window L,R`; R of -1 is unbounded. */
function windowSize(raw: string, flag: string): [number, number] {
  const m = /^(\d+)(?:,(-1|\d+))?$/.exec(raw);
  const sides = m ? [Number(m[1]), m[2] === undefined ? 0 : Number(m[2])] : [];
  if (!m || sides.some((x) => x > 2 ** 31 - 1))
    throw bad(flag, raw, 'expected L or L,R (L an integer >= 0, R an integer >= -1, -1: unbounded)');
  return sides as [number, number];
}

/** Tokens per rank of the dense cases by backend; a CPU run scales --window by their ratio. */
export const GPU_TOKENS = 8192,
  CPU_TOKENS = 128;

/** `--solo-rank`: `all` or a rank, checked against W later. */
function soloRank(raw: string, flag: string): number | 'all' {
  return raw === 'all' ? 'all' : integer({ min: 0 })(raw, flag);
}

export const BENCH_FLAGS = {
  backend: {
    value: 'cuda|cpu',
    help: 'where the ranks run',
    default: 'cuda when a GPU is visible, else cpu',
    parse: choice(['cuda', 'cpu'] as const),
  },
  world: {
    value: 'N',
    help: 'ranks of the ring, one per GPU',
    default: 'every visible GPU on cuda, 2 on cpu',
    parse: integer({ min: 1 }),
  },
  solo: {
    value: 'W',
    help: 'one device plays each rank of a W-rank ring in turn, transfers skipped (instead of --world)',
    parse: integer({ min: 1 }),
  },
  'solo-rank': { value: 'R|all', help: 'with --solo: play rank R only', default: 'all', parse: soloRank },
  'solo-transfers': {
    value: 'none|copy-engine',
    help: "with --solo on cuda: copy-engine makes the solo rank's transfers same-device copies (SM copy kernels)",
    default: 'none',
    parse: choice(['none', 'copy-engine'] as const),
  },
  transport: {
    value: 'copy-engine|nccl',
    help: 'how ranks communicate on cuda',
    default: 'copy-engine where every two GPUs have peer access, else nccl',
    parse: choice(['copy-engine', 'nccl'] as const),
  },
  tokens: {
    value: 'N',
    help: 'tokens per rank of the dense cases (even: zigzag halves each shard)',
    default: `${GPU_TOKENS} on cuda, ${CPU_TOKENS} on cpu`,
    parse: integer({ min: 2, even: true }),
  },
  cases: {
    value: 'LIST|none',
    help: "dense cases by index (cuda: 0 the Python project's qkvpacked shape, 1 llama3-8B; cpu: 0 a small one); none: the varlen table alone",
    default: 'all',
    parse: caseList,
  },
  columns: {
    value: 'LIST',
    help: `ring columns to time, of ${RING_COLUMNS.join(',')} (theoretic always runs: the percentages need it)`,
    default: DEFAULT_COLUMNS.slice(1).join(','),
    parse: list(RING_COLUMNS, `one of ${RING_COLUMNS.join(', ')}`),
  },
  ulysses: {
    value: 'U',
    help: 'the Ulysses degree of the usp_* columns (a divisor of the world; the ring takes the rest)',
    default: 'the largest divisor below the world that divides the heads',
    parse: integer({ min: 1 }),
  },
  modes: {
    value: 'LIST',
    help: 'of fwd,fwdbwd',
    default: 'fwd,fwdbwd',
    parse: list(['fwd', 'fwdbwd'] as const),
  },
  window: {
    value: 'L|L,R',
    help: 'also run every dense case with window_size (L, R) (L alone: (L, 0)) and print its saving in time and bytes sent per rank; the cpu backend scales L and R by its tokens per rank over 8192',
    default: 'no window table',
    parse: windowSize,
  },
  varlen: { value: 'on|off', help: 'the varlen table', default: 'on', parse: choice(['on', 'off'] as const) },
  iters: {
    value: 'N',
    help: 'calls per timed repeat (a multiple of 4 cycles the varlen sets evenly)',
    default: '20 on cuda, 4 on cpu',
    parse: integer({ min: 1 }),
  },
  'max-repeats': {
    value: 'N',
    help: "the warm-up's cap, in repeats",
    default: '8',
    parse: integer({ min: 1 }),
  },
  settle: {
    value: 'X',
    help: 'the warm-up ends when two repeats agree within this fraction',
    default: '0.03',
    parse: decimal({ min: 0 }),
  },
  out: {
    value: 'DIR',
    help: 'where the result file and its charts go',
    default: '$RFA_RESULTS_DIR, else benchmark/results',
    parse: text(),
  },
};

export interface BenchOptions {
  backend: 'cuda' | 'cpu';
  onGpu: boolean;
  dtype: DType;
  /** Ranks of the ring: --world, or W of --solo W (every figure is a W-rank ring's). */
  world: number;
  solo: boolean;
  /** Solo: the ranks one device plays, one after another. */
  soloRanks: number[];
  /** `--solo-rank R`: R; null for all. */
  oneSoloRank: number | null;
  /** Solo: transfers as same-device copies instead of skipped. */
  loopback: boolean;
  transport: Transport | undefined;
  tokens: number;
  cases: DenseCase[];
  modes: Mode[];
  columns: Column[];
  /** --ulysses: the usp columns' Ulysses degree; null picks one per case (cases.ts ulyssesDegree). */
  ulysses: number | null;
  /** --window: the window asked for and the one run (scaled on the CPU backend), or null. */
  window: { asked: [number, number]; used: [number, number] } | null;
  varlen: boolean;
  iters: number;
  maxRepeats: number;
  settle: number;
  outDir: string;
}

/** The options of a command line; throws UsageError for a bad combination. `gpus`: GPUs visible. */
export function benchOptions(v: FlagValues<typeof BENCH_FLAGS>, gpus: number): BenchOptions {
  const backend = v.backend ?? (gpus > 0 ? 'cuda' : 'cpu');
  const onGpu = backend === 'cuda';
  const solo = v.solo !== undefined;
  if (solo && v.world !== undefined)
    throw new UsageError(
      `--world ${v.world} and --solo ${v.solo} exclude each other (--solo W plays a W-rank ring on one device)`,
    );
  // Without a GPU, cuda's default world of 0 would fail as a bad world: one rank lets init say what is missing.
  const world = v.solo ?? v.world ?? (onGpu ? Math.max(gpus, 1) : 2);
  if (v['solo-rank'] !== undefined && !solo)
    throw new UsageError(`--solo-rank ${v['solo-rank']} needs --solo W`);
  const rank = v['solo-rank'] ?? 'all';
  if (rank !== 'all' && rank >= world)
    throw bad('--solo-rank', String(rank), `expected all or an integer in [0, ${world})`);
  const loopback = v['solo-transfers'] === 'copy-engine';
  if (loopback && (!solo || !onGpu))
    throw new UsageError('--solo-transfers copy-engine needs --solo W on the cuda backend');
  if (v.transport !== undefined && !onGpu)
    throw new UsageError(`--transport ${v.transport}: only the cuda backend has transports`);
  const tokens = v.tokens ?? (onGpu ? GPU_TOKENS : CPU_TOKENS);
  const all = denseCases(onGpu, tokens);
  const picked = v.cases ?? all.map((_, i) => String(i));
  const unknown = picked.filter((x) => x !== 'none' && Number(x) >= all.length);
  if (unknown.length)
    throw bad(
      '--cases',
      picked.join(','),
      `unknown ${unknown.join(', ')} (indices 0..${all.length - 1} of the dense cases on ${backend}, or none)`,
    );
  if (v.window !== undefined && picked.includes('none'))
    throw new UsageError(
      `--window ${v.window.join(',')} needs a dense case (--cases none runs the varlen table alone)`,
    );
  // On the CPU the window keeps the share of the sequence it has at the GPU size.
  const scaled = (w: number) => (w <= 0 || onGpu ? w : Math.max(1, Math.round((w * tokens) / GPU_TOKENS)));
  const onlyColumns: readonly string[] = v.columns ?? DEFAULT_COLUMNS;
  if (v.ulysses !== undefined) {
    if (world % v.ulysses !== 0)
      throw bad('--ulysses', String(v.ulysses), `expected a divisor of the world (${world})`);
    if (!onlyColumns.some((c) => c.startsWith('usp_')))
      throw new UsageError(
        `--ulysses ${v.ulysses} needs a usp column (--columns usp_zigzag, usp_ring or usp_stripe)`,
      );
  }
  return {
    backend,
    onGpu,
    dtype: onGpu ? 'bfloat16' : 'float32',
    world,
    solo,
    soloRanks: rank !== 'all' ? [rank] : Array.from({ length: world }, (_, r) => r),
    oneSoloRank: rank === 'all' ? null : rank,
    loopback,
    transport: v.transport,
    tokens,
    cases: all.filter((_, i) => picked.includes(String(i))),
    modes: v.modes ?? ['fwd', 'fwdbwd'],
    columns: COLUMNS.filter((c, i) => i === 0 || onlyColumns.includes(c.label)),
    ulysses: v.ulysses ?? null,
    window: v.window ? { asked: v.window, used: [scaled(v.window[0]), scaled(v.window[1])] } : null,
    varlen: (v.varlen ?? 'on') === 'on',
    iters: v.iters ?? (onGpu ? 20 : 4),
    maxRepeats: v['max-repeats'] ?? 8,
    settle: v.settle ?? 0.03,
    outDir: resultsDir(v.out),
  };
}

// `ring-flash-attn bench:kernel` (`node dist/benchmark/kernel.js`): our single-GPU kernel at
// the shapes of the kernel-speed issue (bf16, batch 1, head dim 128, and 64 and 256 at s=8192
// h=16; causal and not), forward and forward+backward iter/s and TFLOP/s (the forward alone where
// the backward has no kernel for the head dim), each checked in the same run against fp64 on a sample of
// rows (a fast wrong kernel is worth nothing). FLOP: causal forward 2·b·h·s²·d (half of
// 4·b·h·s²·d), backward 2.5×. `--options` adds a row per attention option under each plain one,
// with its rate as a ratio of the plain row's: what the option costs (or, for a window, saves).
// `--anchor FILE` reads the JSON lines of .device/anchors/sdpa_anchor.py, run in the same device
// call, and adds cuDNN's iter/s and ours ÷ cuDNN to each plain row.
import { readFileSync } from 'node:fs';
import { init } from '../index.js';
import { causalPairs } from './cases.js';
import { exitWith, isMain, runCommand, type Command } from './cli_command.js';
import { bad, list, text, UsageError } from './cli_flags.js';
import type { KernelMods, KernelTask } from './kernel_rank.js';
import { unsupportedBy } from './unsupported.js';

interface Shape {
  name: string;
  s: number;
  h: number;
  hk: number;
  /** head dim; 128 when absent */
  d?: number;
  /** the backward has no kernel for this head dim: time the forward alone */
  forwardOnly?: boolean;
}
const SHAPES: Shape[] = [
  { name: 's=8192 h=5', s: 8192, h: 5, hk: 5 },
  { name: 's=8192 h=32 h_k=8', s: 8192, h: 32, hk: 8 },
  { name: 's=65536 h=5', s: 65536, h: 5, hk: 5 },
  { name: 's=8192 h=16 d=64', s: 8192, h: 16, hk: 16, d: 64 },
  { name: 's=8192 h=16 d=256', s: 8192, h: 16, hk: 16, d: 256, forwardOnly: true },
];

/** The window of issue #26's kernel target: 4096 keys back, none ahead. */
const WINDOW: [number, number] = [4096, 0];

/** The attention options of --options, as flash-attn keywords for `h` heads. */
const OPTIONS = {
  window: {
    label: `window (${WINDOW.join(', ')})`,
    causalOnly: true,
    mods: (): KernelMods => ({ window_size: [...WINDOW] }),
  },
  softcap: { label: 'softcap 30', causalOnly: false, mods: (): KernelMods => ({ softcap: 30 }) },
  // ALiBi's geometric slopes, one per head.
  alibi: {
    label: 'alibi (nheads)',
    causalOnly: false,
    mods: (h: number): KernelMods => ({
      alibi_slopes: Array.from({ length: h }, (_, i) => 2 ** ((-8 * (i + 1)) / h)),
    }),
  },
  dropout: {
    label: 'dropout 0.1',
    causalOnly: false,
    mods: (): KernelMods => ({ dropout_p: 0.1, dropout_seed: 1 }),
  },
};
type OptionName = keyof typeof OPTIONS;
const OPTION_NAMES = Object.keys(OPTIONS) as OptionName[];

/**
 * fp64 attention of the last `rows` query rows of head 0 (batch 0), with the score hooks of
 * native/attn_params.h: a causal window's left side, softcap, head 0's ALiBi slope (flash-attn's
 * `slope·j` form under a purely causal mask, else `-slope·|i - j|`). Dropout has no reference
 * here (its mask is Philox's).
 */
function referenceRows(
  x: { q: Float32Array; k: Float32Array; v: Float32Array },
  s: number,
  d: number,
  rows: number,
  causal: boolean,
  mods: KernelMods = {},
) {
  const out = new Float64Array(rows * d),
    lse = new Float64Array(rows);
  const scale = 1 / Math.sqrt(d);
  const left = mods.window_size?.[0] ?? -1;
  const cap = mods.softcap ?? 0;
  const slope = mods.alibi_slopes?.[0];
  for (let r = 0; r < rows; r++) {
    const i = s - rows + r;
    const last = causal || left >= 0 ? i : s - 1;
    const first = left >= 0 ? Math.max(0, i - left) : 0;
    const sc = new Float64Array(last + 1);
    let mx = -Infinity;
    for (let j = first; j <= last; j++) {
      let dot = 0;
      for (let c = 0; c < d; c++) dot += x.q[r * d + c]! * x.k[j * d + c]!;
      let score = dot * scale;
      if (cap > 0) score = cap * Math.tanh(score / cap);
      if (slope !== undefined) score += causal && left < 0 ? slope * j : -slope * Math.abs(i - j);
      sc[j] = score;
      mx = Math.max(mx, score);
    }
    let sum = 0;
    for (let j = first; j <= last; j++) sum += Math.exp(sc[j]! - mx);
    for (let j = first; j <= last; j++) {
      const p = Math.exp(sc[j]! - mx) / sum;
      for (let c = 0; c < d; c++) out[r * d + c]! += p * x.v[j * d + c]!;
    }
    lse[r] = mx + Math.log(sum);
  }
  return { out, lse };
}

/** The sampled rows' relative L2 error of out and max error of lse against fp64. */
function sampleErrors(r: any, s: number, d: number, causal: boolean, mods: KernelMods) {
  const ref = referenceRows(r.sample, s, d, r.sample.rows, causal, mods);
  let num = 0,
    den = 0,
    lseErr = 0;
  for (let row = 0; row < r.sample.rows; row++) {
    for (let c = 0; c < d; c++) {
      const got = r.sample.out[row * d + c],
        want = ref.out[row * d + c]!;
      num += (got - want) ** 2;
      den += want ** 2;
    }
    lseErr = Math.max(lseErr, Math.abs(r.sample.lse[row] - ref.lse[row]!));
  }
  return { err: Math.sqrt(num / den), lseErr };
}

const KERNEL_FLAGS = {
  shape: {
    value: 'TEXT',
    help: `time only the shapes whose name contains TEXT (of: ${SHAPES.map((x) => x.name).join('; ')})`,
    default: 'every shape',
    parse: text(),
  },
  deterministic: { help: 'time the deterministic backward (dQ parts added in key-tile order)' },
  anchor: {
    value: 'FILE',
    help: "sdpa_anchor.py's output (JSON lines): adds cuDNN's iter/s and ours ÷ cuDNN to the plain rows",
    default: 'no anchor columns',
    parse: text(),
  },
  options: {
    value: 'LIST',
    help: `also time attention options beside the plain kernel, each row with its ratio to the plain row of its shape, of ${OPTION_NAMES.join(',')} (${OPTION_NAMES.map((n) => OPTIONS[n].label + (OPTIONS[n].causalOnly ? ', causal rows only' : '')).join('; ')})`,
    default: 'none',
    parse: list(OPTION_NAMES),
  },
};

/** cuDNN's iter/s per `shape|causal|mode` from sdpa_anchor.py's JSON lines (other lines skipped). */
export function readAnchor(file: string): Map<string, number> {
  const rates = new Map<string, number>();
  let raw: string;
  try {
    raw = readFileSync(file, 'utf8');
  } catch (e) {
    throw bad('--anchor', file, `expected a readable file (${(e as Error).message})`);
  }
  for (const line of raw.split('\n')) {
    let row;
    try {
      row = JSON.parse(line);
    } catch {
      continue; // the script's other output (warnings, a traceback)
    }
    if (row?.backend === 'CUDNN_ATTENTION' && typeof row.iters_per_s === 'number')
      rates.set(`${row.shape}|${row.causal}|${row.mode}`, row.iters_per_s);
  }
  if (!rates.size) throw bad('--anchor', file, 'expected JSON lines of sdpa_anchor.py with cuDNN rows');
  return rates;
}

/** ` cuDNN it/s | ours ÷ cuDNN |` for one cell, dashes where the anchor has no row. */
function anchorCells(anchor: Map<string, number>, key: string, ours: number | null): string {
  const theirs = anchor.get(key);
  if (theirs === undefined || ours === null) return ` ${theirs?.toFixed(1) ?? '—'} | — |`;
  return ` ${theirs.toFixed(1)} | ${(ours / theirs).toFixed(2)}× |`;
}

async function kernelTable(
  only: string | undefined,
  deterministic: boolean,
  options: OptionName[],
  anchor: Map<string, number> | null,
) {
  const shapes = SHAPES.filter((x) => !only || x.name.includes(only));
  if (!shapes.length) throw bad('--shape', only!, `matches none of ${SHAPES.map((x) => x.name).join('; ')}`);
  const rt = await init({ backend: 'cuda', world: 1 });
  if (deterministic) console.log('backward: deterministic (dQ parts added in key-tile order)\n');
  const ratios = options.length > 0;
  const fwdHead = ratios ? 'fwd it/s | fwd TFLOP/s | fwd ÷ plain' : 'fwd it/s | fwd TFLOP/s';
  const bwdHead = ratios
    ? 'fwd+bwd it/s | fwd+bwd TFLOP/s | fwd+bwd ÷ plain'
    : 'fwd+bwd it/s | fwd+bwd TFLOP/s';
  const cols = [
    'shape',
    'causal',
    ...(ratios ? ['option'] : []),
    fwdHead,
    ...(anchor ? ['cuDNN fwd it/s | fwd ÷ cuDNN'] : []),
    bwdHead,
    ...(anchor ? ['cuDNN fwd+bwd it/s | fwd+bwd ÷ cuDNN'] : []),
    'out rel err (sample) | lse max err',
  ];
  console.log(`| ${cols.join(' | ')} |`);
  console.log(`|${'---|'.repeat(cols.join(' | ').split(' | ').length)}`);
  try {
    for (const sh of shapes)
      for (const causal of [true, false]) {
        const d = sh.d ?? 128;
        const rows: { label: string; mods: KernelMods }[] = [
          { label: 'none', mods: {} },
          ...options
            .filter((n) => causal || !OPTIONS[n].causalOnly)
            .map((n) => ({ label: OPTIONS[n].label, mods: OPTIONS[n].mods(sh.h) })),
        ];
        let plain: { fwd: number; fwdbwd: number | null } | null = null;
        for (const { label, mods } of rows) {
          const task: KernelTask = {
            b: 1,
            s: sh.s,
            h: sh.h,
            hk: sh.hk,
            d,
            causal,
            iters: sh.s > 10000 ? 2 : 10,
            repeats: 5,
            deterministic,
            forwardOnly: sh.forwardOnly === true,
            mods,
          };
          const head = ratios ? `| ${sh.name} | ${causal} | ${label} |` : `| ${sh.name} | ${causal} |`;
          let r: any;
          try {
            [r] = (await rt.runEach(
              new URL('./kernel_rank.js', import.meta.url).href,
              'run',
              [task],
              [0],
            )) as any[];
          } catch (e) {
            const why = unsupportedBy(e);
            if (why === null) throw e;
            console.log(`${head} E_UNSUPPORTED: ${why.replace(/\|/g, '/')} |`);
            continue;
          }
          // 4·h·d per (query, key) pair the mask keeps: 2·h·s²·d causal, twice that without.
          const pairs =
            causal || mods.window_size ? causalPairs(sh.s, mods.window_size?.[0] ?? -1) : sh.s * sh.s;
          const flop = 4 * sh.h * d * pairs;
          const rate = { fwd: 1 / r.fwd.median, fwdbwd: r.fwdbwd ? 1 / r.fwdbwd.median : null };
          plain ??= rate;
          const ratio = (x: number | null, p: number | null) =>
            ratios ? ` ${x !== null && p !== null ? `${(x / p).toFixed(2)}×` : '—'} |` : '';
          const fwdbwd = r.fwdbwd
            ? `${rate.fwdbwd!.toFixed(1)} | ${((3.5 * flop) / r.fwdbwd.median / 1e12).toFixed(1)} |`
            : '— | — |';
          // The dropout mask is Philox's: no fp64 reference here.
          const check = mods.dropout_p
            ? 'not checked (random mask) | — |'
            : (() => {
                const { err, lseErr } = sampleErrors(r, sh.s, d, causal, mods);
                return `${err.toExponential(2)}${err < 5e-3 ? '' : ' FAIL'} | ${lseErr.toExponential(2)} |`;
              })();
          const vs = (mode: string, ours: number | null) =>
            anchor
              ? anchorCells(label === 'none' ? anchor : new Map(), `${sh.name}|${causal}|${mode}`, ours)
              : '';
          console.log(
            `${head} ${rate.fwd.toFixed(1)} | ${(flop / r.fwd.median / 1e12).toFixed(1)} |${ratio(rate.fwd, plain.fwd)}${vs('fwd', rate.fwd)} ${fwdbwd}${ratio(rate.fwdbwd, plain.fwdbwd)}${vs('fwdbwd', rate.fwdbwd)} ${check}`,
          );
        }
      }
  } finally {
    await rt.close();
  }
}

export const kernelCommand: Command<typeof KERNEL_FLAGS> = {
  name: 'bench:kernel',
  summary:
    "our single-GPU kernel at the kernel-speed issue's shapes: iter/s and TFLOP/s, checked against fp64",
  description: 'Needs a GPU (the cuda backend).',
  flags: KERNEL_FLAGS,
  positionals: {
    usage: '[SHAPE]',
    help: 'the same as --shape SHAPE (the recipes in benchmark/RESULTS.md pass it so)',
    min: 0,
    max: 1,
  },
  run: (v, [shape]) => {
    if (shape !== undefined && v.shape !== undefined)
      throw new UsageError(`${shape} and --shape ${v.shape}: give the shape once`);
    return kernelTable(
      v.shape ?? shape,
      v.deterministic === true,
      v.options ?? [],
      v.anchor !== undefined ? readAnchor(v.anchor) : null,
    );
  },
};

if (isMain(import.meta.url)) exitWith(await runCommand(kernelCommand, process.argv.slice(2)));

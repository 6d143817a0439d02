// `ring-flash-attn bench:kernel` (`node dist/benchmark/kernel.js`): our single-GPU kernel at
// the shapes of the kernel-speed issue (bf16, batch 1, head dim 128, and 64 and 256 at s=8192
// h=16; causal and not), forward and forward+backward iter/s and TFLOP/s (the forward alone where
// the backward has no kernel for the head dim), each checked in the same run against fp64 on a sample of
// rows (a fast wrong kernel is worth nothing). FLOP: causal forward 2·b·h·s²·d (half of
// 4·b·h·s²·d), backward 2.5×.
import { init } from '../index.js';
import { exitWith, isMain, runCommand, type Command } from './cli_command.js';
import { bad, text, UsageError } from './cli_flags.js';
import type { KernelTask } from './kernel_rank.js';

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

/** fp64 attention of the last `rows` query rows of head 0 (batch 0). */
function referenceRows(
  x: { q: Float32Array; k: Float32Array; v: Float32Array },
  s: number,
  d: number,
  rows: number,
  causal: boolean,
) {
  const out = new Float64Array(rows * d),
    lse = new Float64Array(rows);
  const scale = 1 / Math.sqrt(d);
  for (let r = 0; r < rows; r++) {
    const i = s - rows + r;
    const last = causal ? i : s - 1;
    const sc = new Float64Array(last + 1);
    let mx = -Infinity;
    for (let j = 0; j <= last; j++) {
      let dot = 0;
      for (let c = 0; c < d; c++) dot += x.q[r * d + c]! * x.k[j * d + c]!;
      sc[j] = dot * scale;
      mx = Math.max(mx, sc[j]!);
    }
    let sum = 0;
    for (let j = 0; j <= last; j++) sum += Math.exp(sc[j]! - mx);
    for (let j = 0; j <= last; j++) {
      const p = Math.exp(sc[j]! - mx) / sum;
      for (let c = 0; c < d; c++) out[r * d + c]! += p * x.v[j * d + c]!;
    }
    lse[r] = mx + Math.log(sum);
  }
  return { out, lse };
}

const KERNEL_FLAGS = {
  shape: {
    value: 'TEXT',
    help: `time only the shapes whose name contains TEXT (of: ${SHAPES.map((x) => x.name).join('; ')})`,
    default: 'every shape',
    parse: text(),
  },
  deterministic: { help: 'time the deterministic backward (dQ parts added in key-tile order)' },
};

async function kernelTable(only: string | undefined, deterministic: boolean) {
  const shapes = SHAPES.filter((x) => !only || x.name.includes(only));
  if (!shapes.length) throw bad('--shape', only!, `matches none of ${SHAPES.map((x) => x.name).join('; ')}`);
  const rt = await init({ backend: 'cuda', world: 1 });
  if (deterministic) console.log('backward: deterministic (dQ parts added in key-tile order)\n');
  console.log(
    '| shape | causal | fwd it/s | fwd TFLOP/s | fwd+bwd it/s | fwd+bwd TFLOP/s | out rel err (sample) | lse max err |',
  );
  console.log('|---|---|---|---|---|---|---|---|');
  try {
    for (const sh of shapes)
      for (const causal of [true, false]) {
        const d = sh.d ?? 128;
        const iters = sh.s > 10000 ? 2 : 10;
        const task: KernelTask = {
          b: 1,
          s: sh.s,
          h: sh.h,
          hk: sh.hk,
          d,
          causal,
          iters,
          repeats: 5,
          deterministic,
          forwardOnly: sh.forwardOnly === true,
        };
        const [r] = (await rt.runEach(
          new URL('./kernel_rank.js', import.meta.url).href,
          'run',
          [task],
          [0],
        )) as any[];
        const flop = 2 * sh.h * sh.s * sh.s * d * (causal ? 1 : 2);
        const ref = referenceRows(r.sample, sh.s, d, r.sample.rows, causal);
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
        const err = Math.sqrt(num / den);
        const fwdbwd = r.fwdbwd
          ? `${(1 / r.fwdbwd.median).toFixed(1)} | ${((3.5 * flop) / r.fwdbwd.median / 1e12).toFixed(1)}`
          : '— | —';
        console.log(
          `| ${sh.name} | ${causal} | ${(1 / r.fwd.median).toFixed(1)} | ${(flop / r.fwd.median / 1e12).toFixed(1)} | ${fwdbwd} | ${err.toExponential(2)}${err < 5e-3 ? '' : ' FAIL'} | ${lseErr.toExponential(2)} |`,
        );
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
    return kernelTable(v.shape ?? shape, v.deterministic === true);
  },
};

if (isMain(import.meta.url)) exitWith(await runCommand(kernelCommand, process.argv.slice(2)));

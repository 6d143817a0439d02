// Drives attention_layer.ts: a few SGD steps of the toy layer over a sequence split across
// `world` ranks. `node dist/compat/examples/train.js [world]` prints the loss per step.
import { fileURLToPath } from 'node:url';
import { init, RingFlashAttnError } from '../../index.js';
import { seededValues } from '../../runtime/random.js';
import type { LayerDims, StepArg, Weights } from './attention_layer.js';

/** The example's sequence length; train() splits it evenly over the ranks. */
export const SEQLEN = 48;
// init()'s upper bound on the world size.
const MAX_WORLD = 64;

/** World sizes train() accepts for a sequence length: each rank must get a whole slice of it. */
export function allowedWorlds(totalSeqlen = SEQLEN): number[] {
  return Array.from({ length: Math.min(totalSeqlen, MAX_WORLD) }, (_, i) => i + 1).filter(
    (w) => totalSeqlen % w === 0,
  );
}

/** Throws E_ARG unless `world` is one of allowedWorlds(totalSeqlen); `given` is how it came. */
export function checkWorld(world: number, totalSeqlen = SEQLEN, given: string = String(world)): void {
  const allowed = allowedWorlds(totalSeqlen);
  if (!allowed.includes(world))
    throw new RingFlashAttnError(
      'E_ARG',
      `train: world must divide the sequence length ${totalSeqlen}: one of ${allowed.join(', ')}; got ${given}`,
    );
}

export async function train(world: number, steps = 5, lr = 0.05, totalSeqlen = SEQLEN) {
  checkWorld(world, totalSeqlen);
  const dims: LayerDims = { seqlen: totalSeqlen / world, dModel: 16, heads: 4, kvHeads: 2, headDim: 8 };
  const { dModel: dm, heads: h, kvHeads: hk, headDim: d } = dims;
  let weights: Weights = {
    wq: seededValues(dm * h * d, 1, 0.3),
    wk: seededValues(dm * hk * d, 2, 0.3),
    wv: seededValues(dm * hk * d, 3, 0.3),
    wo: seededValues(h * d * dm, 4, 0.3),
  };
  const x = seededValues(totalSeqlen * dm, 5, 1),
    target = seededValues(totalSeqlen * dm, 6, 1);
  const slice = (t: Float32Array) =>
    Array.from({ length: world }, (_, r) => t.slice(r * dims.seqlen * dm, (r + 1) * dims.seqlen * dm));
  const rt = await init({ backend: 'cpu', world });
  const losses: number[] = [];
  let lastGrads: Weights | undefined;
  try {
    for (let step = 0; step < steps; step++) {
      const arg: StepArg = { dims, weights, x: slice(x), target: slice(target) };
      const results = (await rt.spmd(new URL('./attention_layer.js', import.meta.url), 'trainStep', arg)) as {
        loss: number;
        grads: Weights;
      }[];
      losses.push(results.reduce((acc, r) => acc + r.loss, 0));
      // The all-reduce of data parallel training, done on the host for this toy.
      const sum = (key: keyof Weights) =>
        results.reduce(
          (acc, r) => acc.map((v, i) => v + r.grads[key][i]!),
          new Float32Array(weights[key].length),
        );
      lastGrads = { wq: sum('wq'), wk: sum('wk'), wv: sum('wv'), wo: sum('wo') };
      const g = lastGrads;
      weights = {
        wq: weights.wq.map((v, i) => v - lr * g.wq[i]!),
        wk: weights.wk.map((v, i) => v - lr * g.wk[i]!),
        wv: weights.wv.map((v, i) => v - lr * g.wv[i]!),
        wo: weights.wo.map((v, i) => v - lr * g.wo[i]!),
      };
    }
  } finally {
    await rt.close();
  }
  return { losses, grads: lastGrads! };
}

/** The command line's world argument; anything but an allowed world size is a usage error (exit 2). */
function worldArg(arg = '4'): number {
  // Digits only: Number() would also take '', ' 4' and '0x4'.
  const world = /^[0-9]+$/.test(arg) ? Number(arg) : NaN;
  try {
    checkWorld(world, SEQLEN, JSON.stringify(arg));
  } catch (e) {
    console.error((e as Error).message); // one line and no stack: a usage error, not a crash
    process.exit(2);
  }
  return world;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { losses } = await train(worldArg(process.argv[2]));
  losses.forEach((l, i) => console.log(`step ${i}: loss ${l.toFixed(5)}`));
}

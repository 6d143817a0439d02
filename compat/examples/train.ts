// Drives attention_layer.ts: a few SGD steps of the toy layer over a sequence split across
// `world` ranks. `node dist/compat/examples/train.js [world]` prints the loss per step.
import { fileURLToPath } from 'node:url';
import { init } from '../../index.js';
import type { LayerDims, StepArg, Weights } from './attention_layer.js';

function seeded(n: number, seed: number, scale: number): Float32Array {
  let a = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    a = (a * 1664525 + 1013904223) >>> 0;
    return ((a / 4294967296) * 2 - 1) * scale;
  });
}

export async function train(world: number, steps = 5, lr = 0.05, totalSeqlen = 48) {
  const dims: LayerDims = { seqlen: totalSeqlen / world, dModel: 16, heads: 4, kvHeads: 2, headDim: 8 };
  const { dModel: dm, heads: h, kvHeads: hk, headDim: d } = dims;
  let weights: Weights = {
    wq: seeded(dm * h * d, 1, 0.3), wk: seeded(dm * hk * d, 2, 0.3), wv: seeded(dm * hk * d, 3, 0.3), wo: seeded(h * d * dm, 4, 0.3),
  };
  const x = seeded(totalSeqlen * dm, 5, 1), target = seeded(totalSeqlen * dm, 6, 1);
  const slice = (t: Float32Array) => Array.from({ length: world }, (_, r) => t.slice(r * dims.seqlen * dm, (r + 1) * dims.seqlen * dm));
  const rt = await init({ backend: 'cpu', world });
  const losses: number[] = [];
  let lastGrads: Weights | undefined;
  try {
    for (let step = 0; step < steps; step++) {
      const arg: StepArg = { dims, weights, x: slice(x), target: slice(target) };
      const results = (await rt.spmd(new URL('./attention_layer.js', import.meta.url), 'trainStep', arg)) as { loss: number; grads: Weights }[];
      losses.push(results.reduce((acc, r) => acc + r.loss, 0));
      // The all-reduce of data parallel training, done on the host for this toy.
      const sum = (key: keyof Weights) => results.reduce((acc, r) => acc.map((v, i) => v + r.grads[key][i]!), new Float32Array(weights[key].length));
      lastGrads = { wq: sum('wq'), wk: sum('wk'), wv: sum('wv'), wo: sum('wo') };
      const g = lastGrads;
      weights = {
        wq: weights.wq.map((v, i) => v - lr * g.wq[i]!), wk: weights.wk.map((v, i) => v - lr * g.wk[i]!),
        wv: weights.wv.map((v, i) => v - lr * g.wv[i]!), wo: weights.wo.map((v, i) => v - lr * g.wo[i]!),
      };
    }
  } finally {
    await rt.close();
  }
  return { losses, grads: lastGrads! };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const world = Number(process.argv[2] ?? 4);
  const { losses } = await train(world);
  losses.forEach((l, i) => console.log(`step ${i}: loss ${l.toFixed(5)}`));
}

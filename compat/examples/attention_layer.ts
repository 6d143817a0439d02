// A toy attention layer trained with ring attention, SPMD style: every rank holds a contiguous
// slice of the sequence, projects it on the host (tiny dims), runs ring_flash_attn_func on its
// shard, and returns its share of the weight gradients; the driver (train.ts) sums them.
//   q = x Wq, k = x Wk, v = x Wv, y = attn(q, k, v) Wo, loss = ½‖y − target‖²
import { ring_flash_attn_func, type DeviceTensor, type RankContext } from '../../index.js';

export interface LayerDims {
  seqlen: number; // per rank
  dModel: number;
  heads: number;
  kvHeads: number;
  headDim: number;
}

export interface Weights {
  wq: Float32Array; // (dModel, heads·headDim)
  wk: Float32Array; // (dModel, kvHeads·headDim)
  wv: Float32Array; // (dModel, kvHeads·headDim)
  wo: Float32Array; // (heads·headDim, dModel)
}

export interface StepArg {
  dims: LayerDims;
  weights: Weights;
  x: Float32Array[]; // per rank: (seqlen, dModel)
  target: Float32Array[]; // per rank: (seqlen, dModel)
}

/** c (m, n) = a (m, k) · b (k, n), or with a transposed: aᵀ (m, k) where a is (k, m). */
function matmul(
  a: Float32Array,
  b: Float32Array,
  m: number,
  k: number,
  n: number,
  transA = false,
  transB = false,
): Float32Array {
  const c = new Float32Array(m * n);
  for (let i = 0; i < m; i++)
    for (let p = 0; p < k; p++) {
      const av = transA ? a[p * m + i]! : a[i * k + p]!;
      if (av === 0) continue;
      for (let j = 0; j < n; j++) c[i * n + j]! += av * (transB ? b[j * k + p]! : b[p * n + j]!);
    }
  return c;
}

export function trainStep(ctx: RankContext, a: StepArg) {
  const { seqlen: s, dModel: dm, heads: h, kvHeads: hk, headDim: d } = a.dims;
  const x = a.x[ctx.rank]!,
    target = a.target[ctx.rank]!,
    w = a.weights;
  const host = (t: DeviceTensor) => ctx.backend.download(t) as Float32Array;
  const q = ctx.tensor({ data: matmul(x, w.wq, s, dm, h * d), shape: [1, s, h, d] }, 'float32', true);
  const k = ctx.tensor({ data: matmul(x, w.wk, s, dm, hk * d), shape: [1, s, hk, d] }, 'float32', true);
  const v = ctx.tensor({ data: matmul(x, w.wv, s, dm, hk * d), shape: [1, s, hk, d] }, 'float32', true);
  const out = ring_flash_attn_func(q, k, v, { causal: true }) as DeviceTensor;
  const o = host(out);
  const y = matmul(o, w.wo, s, h * d, dm);
  let loss = 0;
  const dy = y.map((yi, i) => {
    const r = yi - target[i]!;
    loss += 0.5 * r * r;
    return r;
  });
  const dout = ctx.tensor(
    { data: matmul(dy, w.wo, s, dm, h * d, false, true), shape: [1, s, h, d] },
    'float32',
  );
  out.backward(dout);
  const grads: Weights = {
    wq: matmul(x, host(q.grad!), dm, s, h * d, true),
    wk: matmul(x, host(k.grad!), dm, s, hk * d, true),
    wv: matmul(x, host(v.grad!), dm, s, hk * d, true),
    wo: matmul(o, dy, h * d, s, dm, true),
  };
  for (const t of [q, k, v, dout, out, q.grad!, k.grad!, v.grad!]) t.dispose();
  return { loss, grads };
}

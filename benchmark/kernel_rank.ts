// Rank-side half of benchmark/kernel.ts: one GPU, flash_attn_func on random bf16 inputs. Times
// forward and forward+backward (CUDA events around each repeat), and returns a sample of
// output rows with their inputs so the main thread can check them against fp64.
import { flash_attn_func } from '../api/single.js';
import type { RankContext } from '../runtime/context.js';
import { toFloat32 } from '../runtime/dtype.js';
import type { DeviceTensor } from '../runtime/tensor.js';
import { finishCall, seededTensor, type RankShape } from './bench_rank.js';

export interface KernelTask extends RankShape {
  iters: number;
  repeats: number;
  /** flash-attn's deterministic backward (ours: dq's parts added in key-tile order). */
  deterministic?: boolean;
  /** time the forward alone (head dims the backward has no kernel for); fwdbwd is then null */
  forwardOnly?: boolean;
  /** flash-attn keyword arguments of an attention option (bench:kernel --options), passed as given */
  mods?: KernelMods;
}

export interface KernelMods {
  window_size?: [number, number];
  softcap?: number;
  alibi_slopes?: number[];
  dropout_p?: number;
  dropout_seed?: number;
}

const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;

export function run(ctx: RankContext, t: KernelTask) {
  const be = ctx.backend;
  const [qShape, kvShape] = [
    [t.b, t.s, t.h, t.d],
    [t.b, t.s, t.hk, t.d],
  ];
  const q = seededTensor(ctx, qShape, 1, 'bfloat16', true),
    k = seededTensor(ctx, kvShape, 2, 'bfloat16', true),
    v = seededTensor(ctx, kvShape, 3, 'bfloat16', true),
    dout = seededTensor(ctx, qShape, 4, 'bfloat16', false);
  const time = (backward: boolean) => {
    const once = () =>
      finishCall(
        flash_attn_func(q, k, v, {
          ...t.mods,
          causal: t.causal,
          deterministic: t.deterministic === true,
        }) as DeviceTensor,
        backward ? dout : null,
        [q, k, v],
      );
    once();
    be.sync();
    const secs: number[] = [];
    for (let r = 0; r < t.repeats; r++) {
      const stop = be.startTimer();
      for (let i = 0; i < t.iters; i++) once();
      secs.push(stop() / t.iters);
    }
    return { median: median(secs), min: Math.min(...secs), max: Math.max(...secs) };
  };
  const fwd = time(false);
  const fwdbwd = t.forwardOnly ? null : time(true);
  // Accuracy sample: the last rows (they see the most keys under causal) of head 0, batch 0.
  const [out, lse] = flash_attn_func(q, k, v, { ...t.mods, causal: t.causal, return_attn_probs: true }) as [
    DeviceTensor,
    DeviceTensor,
    null,
  ];
  const outHost = toFloat32(be.download(out), out.dtype);
  const lseHost = be.download(lse) as Float32Array;
  const rows = Math.min(16, t.s);
  // Head 0 of batch 0 as dense (seqlen, d) float32.
  const head0 = (
    x: DeviceTensor,
    heads: number,
    from: number,
    n: number,
    data = toFloat32(be.download(x), x.dtype),
  ) => {
    const outRows = new Float32Array(n * t.d);
    for (let i = 0; i < n; i++)
      outRows.set(data.subarray((from + i) * heads * t.d, (from + i) * heads * t.d + t.d), i * t.d);
    return outRows;
  };
  const sample = {
    q: head0(q, t.h, t.s - rows, rows),
    k: head0(k, t.hk, 0, t.s),
    v: head0(v, t.hk, 0, t.s),
    out: head0(out, t.h, t.s - rows, rows, outHost),
    lse: lseHost.slice(t.s - rows, t.s),
    rows,
  };
  for (const x of [q, k, v, dout, out, lse]) x.dispose();
  return { fwd, fwdbwd, sample, peakBytes: be.peakBytes() };
}

// Runs on every rank (rt.runEach): builds this rank's random local shard once, then times N
// calls of one public function (forward, or forward + backward) between CUDA events (the host
// clock on the CPU backend), after a warm-up that lasts until two consecutive repeats agree
// (NCCL sets each peer pair up on first use, so a cold pass is far slower). Returns the timings;
// the main thread makes the table. timeCalls is shared with the varlen table (bench_varlen_rank.ts).
import { RING_FUNCTIONS } from '../api/driver/registry.js';
import type { RingImpl } from '../api/types.js';
import { uspGrid } from '../api/usp/grid.js';
import type { Group } from '../runtime/comm.js';
import type { RankContext } from '../runtime/context.js';
import type { DType } from '../runtime/dtype.js';
import type { DeviceTensor } from '../runtime/tensor.js';
import { seededValues } from '../runtime/random.js';
import { asSoloRank, type SoloRank } from './solo_comm.js';

/** The dims of a dense call on one rank: q (b, s, h, d), k and v (b, s, hk, d). */
export interface RankShape {
  b: number;
  s: number;
  h: number;
  hk: number;
  d: number;
  causal: boolean;
}

/** A tensor of `shape` holding seeded values: the same inputs on every run for one seed. */
export function seededTensor(
  ctx: RankContext,
  shape: number[],
  seed: number,
  dtype: DType,
  requiresGrad: boolean,
): DeviceTensor {
  return ctx.tensor(
    {
      data: seededValues(
        shape.reduce((x, y) => x * y, 1),
        seed,
      ),
      shape,
    },
    dtype,
    requiresGrad,
  );
}

/** A rank's task; the dims are those of its local shard. */
export interface BenchTask extends TimingPlan, RankShape {
  name: string;
  dtype: DType;
  backward: boolean;
  seed: number;
  /** Run ring functions as this one rank of a larger ring, without transfers (solo_comm.ts). */
  solo?: SoloRank;
  /** The Ulysses columns' grid; ringImpl null for ulysses_attn (a ring of one, no keywords). */
  usp?: { ulysses: number; ring: number; ringImpl: RingImpl | null };
  /** flash-attn's window_size, passed as given (bench --window). */
  window?: readonly [number, number];
}

export interface BenchResult {
  rank: number;
  /** Seconds per repeat of `iters` calls, after warm-up. */
  repeats: number[];
  warmupRepeats: number;
  peakBytes: number;
  /** Bytes this rank's point-to-point sends carried in one call (Backend.sentBytes). */
  sentBytes: number;
}

export function run(ctx: RankContext, t: BenchTask): BenchResult {
  const entry = RING_FUNCTIONS[t.name];
  if (!entry) throw new Error(`unknown function ${t.name}`);
  const mk = (shape: number[], salt: number) =>
    seededTensor(ctx, shape, t.seed * 31 + ctx.rank * 7 + salt, t.dtype, t.backward);
  const inputs: DeviceTensor[] =
    entry.packing === 'qkvpacked'
      ? [mk([t.b, t.s, 3, t.h, t.d], 1)]
      : entry.packing === 'kvpacked'
        ? [mk([t.b, t.s, t.h, t.d], 1), mk([t.b, t.s, 2, t.hk, t.d], 2)]
        : [mk([t.b, t.s, t.h, t.d], 1), mk([t.b, t.s, t.hk, t.d], 2), mk([t.b, t.s, t.hk, t.d], 3)];
  const dout = ctx.tensor(
    { data: seededValues(t.b * t.s * t.h * t.d, 99), shape: [t.b, t.s, t.h, t.d] },
    t.dtype,
  );
  // The single-device column has no ring rank to play.
  const u = t.usp;
  const grid = {
    ...(u?.ringImpl ? { ulysses: u.ulysses, ring: u.ring, ring_impl: u.ringImpl } : {}),
    ...(t.window ? { window_size: t.window } : {}),
  };
  // A solo Ulysses rank also plays its two sub-groups (api/usp/grid.ts), whose transfers are skipped alike.
  const subGroups = u
    ? (g: Group) => Object.values(uspGrid(g, u.ulysses, u.ring)).filter((x) => x !== g)
    : undefined;
  const timing = asSoloRank(
    ctx,
    entry.layout === 'single' ? undefined : t.solo,
    (group) =>
      timeCalls(
        ctx,
        () => {
          const out = entry.fn(
            ...inputs,
            group ? { causal: t.causal, group, ...grid } : { causal: t.causal, ...grid },
          ) as DeviceTensor;
          finishCall(out, t.backward ? dout : null, inputs);
        },
        t,
      ),
    subGroups,
  );
  for (const x of [...inputs, dout]) x.dispose();
  return { rank: ctx.rank, ...timing, peakBytes: ctx.backend.peakBytes() };
}

/**
 * The rest of one timed call after its forward returned `out`: with `dout`, the backward, whose
 * grads are dropped at once (the next call sets them again); then out goes.
 */
export function finishCall(
  out: DeviceTensor,
  dout: DeviceTensor | null,
  inputs: readonly DeviceTensor[],
): void {
  if (dout) {
    out.backward(dout);
    for (const x of inputs) {
      x.grad?.dispose();
      x.grad = null;
    }
  }
  out.dispose();
}

/** How long to time: calls per repeat, the warm-up's cap and its settle threshold. */
export interface TimingPlan {
  iters: number;
  maxRepeats: number;
  /** Two consecutive repeats within this relative spread end the warm-up. */
  settle: number;
}

/**
 * Times `once` (one call, forward or forward + backward): one cold call, then repeats of
 * `iters` calls (timed by Backend.startTimer: CUDA events on GPUs) until two consecutive repeats
 * agree (judged on the slowest rank, so every rank stops on the same repeat), then 4 more.
 * Returns this rank's seconds per repeat (the last warm-up repeat counts as the first), the
 * number of warm-up repeats and the bytes the cold call sent.
 */
export function timeCalls(
  ctx: RankContext,
  once: () => void,
  t: TimingPlan,
): { repeats: number[]; warmupRepeats: number; sentBytes: number } {
  const repeat = () => {
    const stop = ctx.backend.startTimer();
    for (let i = 0; i < t.iters; i++) once();
    return stop();
  };
  ctx.backend.resetPeak();
  const sentBefore = ctx.backend.sentBytes();
  once();
  ctx.backend.sync();
  const sentBytes = ctx.backend.sentBytes() - sentBefore;
  // The warm-up decision must be the same on every rank: a rank that stopped one repeat early
  // would leave its peers waiting inside a collective. Each rank shares its repeat time and all
  // of them judge the slowest rank's times.
  const slowest = slowestRepeat(ctx);
  let mine = repeat(),
    prev = slowest(mine),
    warmupRepeats = 1;
  for (; warmupRepeats < t.maxRepeats; warmupRepeats++) {
    mine = repeat();
    const cur = slowest(mine);
    const settled = Math.abs(cur - prev) / Math.min(cur, prev) <= t.settle;
    prev = cur;
    if (settled) break;
  }
  const repeats = [mine];
  for (let i = 0; i < 4; i++) repeats.push(repeat());
  return { repeats, warmupRepeats, sentBytes };
}

/** Returns a function that all-gathers one number per rank and gives back the largest. */
function slowestRepeat(ctx: RankContext): (seconds: number) => number {
  if (ctx.world === 1) return (x) => x;
  const comm = ctx.backend.comm(ctx.group);
  return (seconds) => {
    const send = ctx.tensor({ data: Float32Array.of(seconds), shape: [1] });
    const recv = ctx.backend.empty([ctx.world], 'float32');
    comm.allGather(send, recv).wait();
    const all = ctx.backend.download(recv) as Float32Array;
    send.dispose();
    recv.dispose();
    return Math.max(...all);
  };
}

// Driver mode: the main thread takes FULL-sequence host tensors, shards them the way the
// variant needs, runs every rank, and gathers full-layout results.
import type ndarray from 'ndarray';
import { checkDType, type DType } from '../runtime/dtype.js';
import { RingFlashAttnError, fail } from '../runtime/errors.js';
import { Runtime, type InitOptions } from '../runtime/runtime.js';
import { parseAttnArgs } from './args.js';
import type { ForwardTask, HostShard } from './driver_tasks.js';
import { toComputeDtype, toDense, toNdarray, type DenseHost } from './host.js';
import { checkDivisible, gather, shard, type LayoutName } from './layouts.js';
import { RING_FUNCTIONS, TENSOR_COUNT, type Packing } from './registry.js';
import type { DriverFlashArgs, VarlenName, DriverRingArgs, KvPackedName, QkvPackedName, RingName, UnpackedName } from './types.js';

const TASKS = new URL('./driver_tasks.js', import.meta.url).href;

type Nd = ndarray.NdArray<Float32Array>;

/** Gradients in full layout, named as the inputs of the packing. */
export type FuncGrads = { dq: Nd; dk: Nd; dv: Nd };
export type KvPackedGrads = { dq: Nd; dkv: Nd };
export type QkvPackedGrads = { dqkv: Nd };
export type DriverGrads = FuncGrads | KvPackedGrads | QkvPackedGrads;

/** A full-sequence host tensor: an ndarray (or { data, shape }) over Float32Array, or bf16/f16 bits with a dtype. */
export type HostTensor =
  | { data: Float32Array; shape: readonly number[]; stride?: readonly number[]; offset?: number }
  | { data: Uint16Array; shape: readonly number[]; stride?: readonly number[]; offset?: number; dtype: 'bfloat16' | 'float16' };

export interface DriverResult<G extends DriverGrads = DriverGrads> {
  /** (batch, seqlen, nheads, head_dim), float32 values of the output. */
  out: Nd;
  /** (batch, nheads, seqlen) fp32 log-sum-exp. */
  lse: Nd;
  /** Full-layout dout → full-layout gradients; may be called more than once. */
  backward(dout: HostTensor): Promise<G>;
  /** Frees the saved tensors on every rank. */
  dispose(): Promise<void>;
}

const GRAD_NAMES: Record<Packing, string[]> = { func: ['dq', 'dk', 'dv'], kvpacked: ['dq', 'dkv'], qkvpacked: ['dqkv'] };
const INPUT_NAMES: Record<Packing, string[]> = { func: ['q', 'k', 'v'], kvpacked: ['q', 'kv'], qkvpacked: ['qkv'] };

/** A Runtime that also runs the ring functions in driver mode. */
export class RingRuntime extends Runtime {
  private nextCallId = 1;

  static override async create(opts: InitOptions = {}): Promise<RingRuntime> {
    const rt = new RingRuntime(Runtime.resolve(opts));
    await rt.warmup();
    return rt;
  }

  /**
   * `rt.call('ring_flash_attn_func', q, k, v, { causal: true, dtype: 'float32' })`: the Python
   * signature with full-sequence tensors; options add `dtype`, the compute dtype of inputs
   * (default bfloat16 on cuda, float32 on cpu for float32 data).
   */
  call(name: Extract<UnpackedName, RingName>, q: HostTensor, k: HostTensor, v: HostTensor, ...rest: DriverRingArgs): Promise<DriverResult<FuncGrads>>;
  call(name: Extract<KvPackedName, RingName>, q: HostTensor, kv: HostTensor, ...rest: DriverRingArgs): Promise<DriverResult<KvPackedGrads>>;
  call(name: Extract<QkvPackedName, RingName>, qkv: HostTensor, ...rest: DriverRingArgs): Promise<DriverResult<QkvPackedGrads>>;
  call(name: 'flash_attn_func', q: HostTensor, k: HostTensor, v: HostTensor, ...rest: DriverFlashArgs): Promise<DriverResult<FuncGrads>>;
  call(name: 'flash_attn_kvpacked_func', q: HostTensor, kv: HostTensor, ...rest: DriverFlashArgs): Promise<DriverResult<KvPackedGrads>>;
  call(name: 'flash_attn_qkvpacked_func', qkv: HostTensor, ...rest: DriverFlashArgs): Promise<DriverResult<QkvPackedGrads>>;
  /** The varlen families (tensors, cu_seqlens, max_seqlen, ...), checked at run time. */
  call(name: VarlenName, ...args: unknown[]): Promise<DriverResult>;
  async call(name: string, ...args: unknown[]): Promise<DriverResult> {
    if (this.isClosed) throw new RingFlashAttnError('E_CLOSED', 'runtime is closed');
    const entry = RING_FUNCTIONS[name];
    if (!entry) fail('E_ARG', `unknown function '${String(name)}'; known: ${Object.keys(RING_FUNCTIONS).join(', ')}`);
    const nt = TENSOR_COUNT[entry.packing];
    if (args.length < nt) fail('E_ARG', `${name}: expected ${nt} tensor argument(s) (${INPUT_NAMES[entry.packing].join(', ')}), got ${args.length}`);
    const rest = args.slice(nt);
    const { kw } = parseAttnArgs(name, rest, entry.positional, ['dtype']);
    const ranks = entry.layout === 'single' ? [0] : this.groupRanks(name, kw.group);
    const world = ranks.length;
    let dense = args.slice(0, nt).map((x, i) => toDense(name, INPUT_NAMES[entry.packing][i]!, x));
    const dtype: DType = kw.dtype !== undefined ? checkDType(kw.dtype, `${name}: dtype`)
      : this.backend === 'cuda' ? 'bfloat16' : dense[0]!.dtype;
    dense = dense.map((t) => toComputeDtype(t, dtype));
    checkHostShapes(name, entry.packing, dense, entry.layout !== 'single');
    const seqlen = dense[0]!.shape[1]!;
    if (entry.layout !== 'single') checkDivisible(entry.layout, seqlen, world);
    const { dtype: _drop, group: _g, ...kwargs } = kw;
    if (kw.group != null) kwargs.group = ranks;
    const callId = this.nextCallId++;
    const tasks: ForwardTask[] = ranks.map((_, i) => ({
      callId, name, kwargs, tensors: dense.map((t) => ({ ...shardOf(entry.layout, t, i, world), dtype: t.dtype })),
    }));
    const results = (await this.runEach(TASKS, 'forward', tasks, ranks)) as { out: HostShard; lse: HostShard }[];
    const layout = entry.layout;
    const out = toNdarray(gatherShards(layout, results.map((r) => r.out), 1));
    const lse = toNdarray(gatherShards(layout, results.map((r) => r.lse), 2));
    let disposed = false;
    return {
      out, lse,
      backward: async (doutArg: HostTensor) => {
        if (disposed) fail('E_ARG', `${name}: backward after dispose()`);
        const dout = toComputeDtype(toDense(`${name} backward`, 'dout', doutArg), dtype);
        if (dout.shape.join() !== out.shape.join())
          fail('E_SHAPE', `${name} backward: dout shape (${dout.shape.join(', ')}) != out shape (${out.shape.join(', ')})`);
        const douts = ranks.map((_, i) => ({ callId, dout: { ...shardOf(layout, dout, i, world), dtype } }));
        const grads = (await this.runEach(TASKS, 'backward', douts, ranks)) as HostShard[][];
        const named: Record<string, Nd> = {};
        GRAD_NAMES[entry.packing].forEach((g, j) => {
          named[g] = toNdarray(gatherShards(layout, grads.map((r) => r[j]!), 1));
        });
        return named as DriverGrads;
      },
      dispose: async () => {
        if (disposed || this.isClosed) return;
        disposed = true;
        await this.runEach(TASKS, 'dispose', ranks.map(() => ({ callId })), ranks);
      },
    };
  }

  private groupRanks(name: string, group: unknown): number[] {
    if (group == null) return Array.from({ length: this.world }, (_, i) => i);
    if (!Array.isArray(group)) fail('E_ARG', `${name}: in driver mode group must be a list of ranks`);
    const ranks = [...new Set(group as number[])].sort((a, b) => a - b);
    if (ranks.length !== group.length || ranks.length === 0 || ranks.some((r) => !Number.isInteger(r) || r < 0 || r >= this.world))
      fail('E_ARG', `${name}: group must list distinct ranks in [0, ${this.world}), got [${group.join(', ')}]`);
    return ranks;
  }
}

function gatherShards(layout: LayoutName | 'single', shards: HostShard[], axis: number): HostShard {
  if (layout === 'single') return shards[0]!;
  const g = gather(layout, shards, axis);
  return { data: g.data, shape: [...g.shape], dtype: shards[0]!.dtype };
}

function shardOf(layout: LayoutName | 'single', t: DenseHost, rank: number, world: number) {
  const s = layout === 'single' ? t : shard(layout, t, 1, rank, world);
  return { data: s.data, shape: [...s.shape] };
}

/** Full-sequence shape checks, so a bad call fails before any worker runs. */
function checkHostShapes(fn: string, packing: Packing, t: DenseHost[], sameSeqlen: boolean): void {
  const want = packing === 'func' ? [4, 4, 4] : packing === 'kvpacked' ? [4, 5] : [5];
  t.forEach((x, i) => {
    const nm = INPUT_NAMES[packing][i]!;
    if (x.shape.length !== want[i]) fail('E_SHAPE', `${fn}: ${nm} must be ${want[i]}-d, got shape (${x.shape.join(', ')})`);
  });
  let q: number[], k: number[], v: number[];
  if (packing === 'func') [q, k, v] = [t[0]!.shape, t[1]!.shape, t[2]!.shape];
  else if (packing === 'kvpacked') {
    if (t[1]!.shape[2] !== 2) fail('E_SHAPE', `${fn}: kv axis 2 must be 2 (k, v), got ${t[1]!.shape[2]}`);
    q = t[0]!.shape;
    k = v = [t[1]!.shape[0]!, t[1]!.shape[1]!, t[1]!.shape[3]!, t[1]!.shape[4]!];
  } else {
    if (t[0]!.shape[2] !== 3) fail('E_SHAPE', `${fn}: qkv axis 2 must be 3 (q, k, v), got ${t[0]!.shape[2]}`);
    const s = t[0]!.shape;
    q = k = v = [s[0]!, s[1]!, s[3]!, s[4]!];
  }
  if (k.join() !== v.join()) fail('E_SHAPE', `${fn}: k (${k.join(', ')}) and v (${v.join(', ')}) must have the same shape`);
  if (q[0] !== k[0]) fail('E_SHAPE', `${fn}: k batch ${k[0]} != q batch ${q[0]}`);
  if (sameSeqlen && q[1] !== k[1]) fail('E_SHAPE', `${fn}: k seqlen ${k[1]} != q seqlen ${q[1]}`);
  if (q[3] !== k[3]) fail('E_SHAPE', `${fn}: k head_dim ${k[3]} != q head_dim ${q[3]}`);
  if (q[2]! % k[2]! !== 0) fail('E_SHAPE', `${fn}: q heads (${q[2]}) must be a multiple of k/v heads (${k[2]})`);
  if (q.some((n) => n < 1)) fail('E_SHAPE', `${fn}: empty tensors are not supported`);
  if (q[3]! > 256) fail('E_UNSUPPORTED', `${fn}: head_dim ${q[3]} is not supported (1..256)`);
}

/** Starts the runtime: one worker thread per rank (per GPU on cuda). */
export function init(opts: InitOptions = {}): Promise<RingRuntime> {
  return RingRuntime.create(opts);
}

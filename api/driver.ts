// Driver mode: the main thread takes FULL-sequence host tensors, shards them the way the
// variant needs, runs every rank, and gathers full-layout results.
import type ndarray from 'ndarray';
import { checkDType, type DType } from '../runtime/dtype.js';
import { RingFlashAttnError, fail } from '../runtime/errors.js';
import { Runtime, type CallOptions, type InitOptions } from '../runtime/runtime.js';
import { parseAttnArgs } from './args.js';
import type { ForwardTask, HostShard } from './driver_tasks.js';
import { toComputeDtype, toDense, toNdarray, type DenseHost } from './host.js';
import { placeRows, takeRows } from './layouts.js';
import { RING_FUNCTIONS, TENSOR_COUNT, type Packing } from './registry.js';
import type { DriverFlashArgs, DriverRingArgs, KvPackedName, QkvPackedName, RingName, UnpackedName, VarlenName } from './types.js';
import { MAX_HEAD_DIM } from './validate.js';

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
  /** (batch, seqlen, nheads, head_dim) (varlen: (total, nheads, head_dim)), float32 values of the output. */
  out: Nd;
  /** (batch, nheads, seqlen) (varlen: (nheads, total)) fp32 log-sum-exp. */
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
   * (default bfloat16 on cuda, float32 on cpu for float32 data), and `timeoutMs` / `signal`
   * (CallOptions: the call's deadline and cancellation, for its backward and dispose too).
   */
  call(name: Extract<UnpackedName, RingName>, q: HostTensor, k: HostTensor, v: HostTensor, ...rest: DriverRingArgs): Promise<DriverResult<FuncGrads>>;
  call(name: Extract<KvPackedName, RingName>, q: HostTensor, kv: HostTensor, ...rest: DriverRingArgs): Promise<DriverResult<KvPackedGrads>>;
  call(name: Extract<QkvPackedName, RingName>, qkv: HostTensor, ...rest: DriverRingArgs): Promise<DriverResult<QkvPackedGrads>>;
  call(name: 'flash_attn_func', q: HostTensor, k: HostTensor, v: HostTensor, ...rest: DriverFlashArgs): Promise<DriverResult<FuncGrads>>;
  call(name: 'flash_attn_kvpacked_func', q: HostTensor, kv: HostTensor, ...rest: DriverFlashArgs): Promise<DriverResult<KvPackedGrads>>;
  call(name: 'flash_attn_qkvpacked_func', qkv: HostTensor, ...rest: DriverFlashArgs): Promise<DriverResult<QkvPackedGrads>>;
  /**
   * The varlen families, checked at run time: full packed tensors (total, h, d) or packings, the
   * GLOBAL cu_seqlens (Int32Array or int32 ndarray) and max_seqlen, then the ring functions' tail.
   * llama3 is called the same way (driver mode prepares every rank's cu_seqlens_q/k and
   * local_k_slice) with `heads_k_stride` as an option (default 1). lse comes back as (h, total).
   */
  call(name: VarlenName, ...args: unknown[]): Promise<DriverResult>;
  async call(name: string, ...args: unknown[]): Promise<DriverResult> {
    if (this.isClosed) throw new RingFlashAttnError('E_CLOSED', 'runtime is closed');
    const entry = RING_FUNCTIONS[name];
    if (!entry) fail('E_ARG', `unknown function '${String(name)}'; known: ${Object.keys(RING_FUNCTIONS).join(', ')}`);
    const sharding = entry.sharding;
    const nt = TENSOR_COUNT[entry.packing];
    if (args.length < nt) fail('E_ARG', `${name}: expected ${nt} tensor argument(s) (${INPUT_NAMES[entry.packing].join(', ')}), got ${args.length}`);
    const rest = args.slice(nt);
    const { kw } = parseAttnArgs(name, rest, sharding.positional ?? entry.positional, ['dtype', 'timeoutMs', 'signal', ...(sharding.options ?? [])]);
    // The call's deadline and cancellation (CallOptions) cover its forward, backward and dispose.
    const callOpts: CallOptions = { timeoutMs: kw.timeoutMs as number | undefined, signal: kw.signal as AbortSignal | undefined };
    const ranks = sharding.single ? [0] : this.groupRanks(name, kw.group);
    const world = ranks.length;
    let dense = args.slice(0, nt).map((x, i) => toDense(name, INPUT_NAMES[entry.packing][i]!, x));
    const dtype: DType = kw.dtype !== undefined ? checkDType(kw.dtype, `${name}: dtype`)
      : this.backend === 'cuda' ? 'bfloat16' : dense[0]!.dtype;
    dense = dense.map((t) => toComputeDtype(t, dtype));
    const axis = sharding.seqAxis;
    checkHostShapes(name, entry.packing, dense, !sharding.single, axis === 0);
    const total = dense[0]!.shape[axis]!;
    const plan = sharding.plan(name, total, kw, world);
    const { dtype: _drop, group: _g, timeoutMs: _t, signal: _s, ...kwargs } = kw;
    for (const key of sharding.consumes ?? []) delete kwargs[key];
    if (kw.group != null) kwargs.group = ranks;
    const positions = ranks.map((_, i) => plan.positions(i));
    const cut = (t: DenseHost, i: number): HostShard => {
      const p = positions[i]!;
      const s = p ? takeRows(t, axis, p) : t;
      return { data: s.data, shape: [...s.shape], dtype: t.dtype };
    };
    const join = (shards: HostShard[], at: number) => {
      if (!positions[0]) return toNdarray(shards[0]!);
      return toNdarray({ ...placeRows(shards, at, positions as number[][], total), dtype: shards[0]!.dtype });
    };
    const callId = this.nextCallId++;
    const tasks: ForwardTask[] = ranks.map((_, i) => ({ callId, name, kwargs: { ...kwargs, ...plan.kwargs(i) }, tensors: dense.map((t) => cut(t, i)) }));
    const results = (await this.runEach(TASKS, 'forward', tasks, ranks, callOpts)) as { out: HostShard; lse: HostShard }[];
    // lse is (b, h, s) dense and (h, total) varlen: its sequence axis is the last.
    const out = join(results.map((r) => r.out), axis);
    const lse = join(results.map((r) => r.lse), results[0]!.lse.shape.length - 1);
    let disposed = false;
    return {
      out, lse,
      backward: async (doutArg: HostTensor) => {
        if (disposed) fail('E_ARG', `${name}: backward after dispose()`);
        const dout = toComputeDtype(toDense(`${name} backward`, 'dout', doutArg), dtype);
        if (dout.shape.join() !== out.shape.join())
          fail('E_SHAPE', `${name} backward: dout shape (${dout.shape.join(', ')}) != out shape (${out.shape.join(', ')})`);
        const douts = ranks.map((_, i) => ({ callId, dout: cut(dout, i) }));
        const grads = (await this.runEach(TASKS, 'backward', douts, ranks, callOpts)) as HostShard[][];
        const named: Record<string, Nd> = {};
        GRAD_NAMES[entry.packing].forEach((g, j) => {
          named[g] = join(grads.map((r) => r[j]!), axis);
        });
        return named as DriverGrads;
      },
      dispose: async () => {
        if (disposed || this.isClosed) return;
        disposed = true;
        await this.runEach(TASKS, 'dispose', ranks.map(() => ({ callId })), ranks, { timeoutMs: callOpts.timeoutMs });
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

/**
 * Full-sequence shape checks, so a bad call fails before any worker runs. Packed varlen tensors
 * (total, h, d) have no batch axis: they are checked as a batch of one.
 */
function checkHostShapes(fn: string, packing: Packing, t: DenseHost[], sameSeqlen: boolean, varlen: boolean): void {
  const lead = varlen ? 0 : 1;
  const want = (packing === 'func' ? [3, 3, 3] : packing === 'kvpacked' ? [3, 4] : [4]).map((n) => n + lead);
  t.forEach((x, i) => {
    const nm = INPUT_NAMES[packing][i]!;
    if (x.shape.length !== want[i]) fail('E_SHAPE', `${fn}: ${nm} must be ${want[i]}-d, got shape (${x.shape.join(', ')})`);
  });
  const shapes = t.map((x) => (varlen ? [1, ...x.shape] : x.shape));
  const P = 1 + lead; // axis of (k, v) / (q, k, v) in the caller's packed tensors
  let q: number[], k: number[], v: number[];
  if (packing === 'func') [q, k, v] = [shapes[0]!, shapes[1]!, shapes[2]!];
  else if (packing === 'kvpacked') {
    if (shapes[1]![2] !== 2) fail('E_SHAPE', `${fn}: kv axis ${P} must be 2 (k, v), got ${shapes[1]![2]}`);
    q = shapes[0]!;
    k = v = [shapes[1]![0]!, shapes[1]![1]!, shapes[1]![3]!, shapes[1]![4]!];
  } else {
    if (shapes[0]![2] !== 3) fail('E_SHAPE', `${fn}: qkv axis ${P} must be 3 (q, k, v), got ${shapes[0]![2]}`);
    const s = shapes[0]!;
    q = k = v = [s[0]!, s[1]!, s[3]!, s[4]!];
  }
  const show = (x: number[]) => (varlen ? x.slice(1) : x).join(', ');
  if (k.join() !== v.join()) fail('E_SHAPE', `${fn}: k (${show(k)}) and v (${show(v)}) must have the same shape`);
  if (q[0] !== k[0]) fail('E_SHAPE', `${fn}: k batch ${k[0]} != q batch ${q[0]}`);
  if (sameSeqlen && q[1] !== k[1]) fail('E_SHAPE', varlen ? `${fn}: k total_tokens ${k[1]} != q total_tokens ${q[1]}` : `${fn}: k seqlen ${k[1]} != q seqlen ${q[1]}`);
  if (q[3] !== k[3]) fail('E_SHAPE', `${fn}: k head_dim ${k[3]} != q head_dim ${q[3]}`);
  if (q[2]! % k[2]! !== 0) fail('E_SHAPE', `${fn}: q heads (${q[2]}) must be a multiple of k/v heads (${k[2]})`);
  if (q.some((n) => n < 1)) fail('E_SHAPE', `${fn}: empty tensors are not supported`);
  if (q[3]! > MAX_HEAD_DIM) fail('E_UNSUPPORTED', `${fn}: head_dim ${q[3]} is not supported (1..${MAX_HEAD_DIM})`);
}

/** Starts the runtime: one worker thread per rank (per GPU on cuda). */
export function init(opts: InitOptions = {}): Promise<RingRuntime> {
  return RingRuntime.create(opts);
}

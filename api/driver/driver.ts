// Driver mode: the main thread takes FULL-sequence host tensors, shards them the way the
// variant needs, runs every rank, and gathers full-layout results.
import { randomInt } from 'node:crypto';
import type ndarray from 'ndarray';
import { checkDType, DTYPES, type DType } from '../../runtime/dtype.js';
import { RingFlashAttnError, fail } from '../../runtime/errors.js';
import { Runtime, type CallOptions, type InitOptions } from '../../runtime/pool.js';
import { describeValue } from '../../runtime/tensor.js';
import { uncloneablePath } from '../../runtime/transfer.js';
import { parseAttnArgs } from '../args.js';
import type { ForwardTask, HostShard } from './tasks.js';
import { toComputeDtype, toDense, toNdarray, type DenseHost } from './host.js';
import { placeRows, takeRows } from './layouts.js';
import { RING_FUNCTION_NAMES, ringFunction, TENSOR_COUNT, type Packing } from './registry.js';
import type {
  CuSeqlens,
  DriverFlashArgs,
  DriverKwargs,
  DriverRingArgs,
  DriverUspArgs,
  FlashPositional,
  KvPackedName,
  PythonArgs,
  QkvPackedName,
  RingName,
  RingPositional,
  UnpackedName,
  VarlenName,
} from '../types.js';
import { checkHostShapes, TENSOR_NAMES } from '../validate.js';

const TASKS = new URL('./tasks.js', import.meta.url).href;

type Nd = ndarray.NdArray<Float32Array>;

/** Gradients in full layout, named as the inputs of the packing. */
export type FuncGrads = { dq: Nd; dk: Nd; dv: Nd };
export type KvPackedGrads = { dq: Nd; dkv: Nd };
export type QkvPackedGrads = { dqkv: Nd };
export type DriverGrads = FuncGrads | KvPackedGrads | QkvPackedGrads;

/** A full-sequence host tensor: an ndarray (or { data, shape }) over Float32Array, or bf16/f16 bits with a dtype. */
export type HostTensor =
  | { data: Float32Array; shape: readonly number[]; stride?: readonly number[]; offset?: number }
  | {
      data: Uint16Array;
      shape: readonly number[];
      stride?: readonly number[];
      offset?: number;
      dtype: 'bfloat16' | 'float16';
    };

export interface DriverResult<G extends DriverGrads = DriverGrads> {
  /** (batch, seqlen, nheads, head_dim) (varlen: (total, nheads, head_dim)), float32 values of the output. */
  out: Nd;
  /** (batch, nheads, seqlen) (varlen: (nheads, total)) fp32 log-sum-exp. */
  lse: Nd;
  /** Full-layout dout → full-layout gradients; may be called more than once. */
  backward(dout: HostTensor): Promise<G>;
  /** Frees the saved tensors on every rank. */
  dispose(): Promise<void>;
  /** With dropout_p > 0: the seed of the call's dropout mask (its dropout_seed, or the fresh one drawn for it). */
  dropoutSeed?: number;
}

const GRAD_NAMES: Record<Packing, string[]> = {
  func: ['dq', 'dk', 'dv'],
  kvpacked: ['dq', 'dkv'],
  qkvpacked: ['dqkv'],
};

type Func<A extends unknown[]> = (
  q: HostTensor,
  k: HostTensor,
  v: HostTensor,
  ...rest: A
) => Promise<DriverResult<FuncGrads>>;
type KvPacked<A extends unknown[]> = (
  q: HostTensor,
  kv: HostTensor,
  ...rest: A
) => Promise<DriverResult<KvPackedGrads>>;
type QkvPacked<A extends unknown[]> = (qkv: HostTensor, ...rest: A) => Promise<DriverResult<QkvPackedGrads>>;
type Packings<P extends string, F, K, Q> = { [N in `${P}_func`]: F } & { [N in `${P}_kvpacked_func`]: K } & {
  [N in `${P}_qkvpacked_func`]: Q;
};

/** Driver mode's varlen tail: the GLOBAL cu_seqlens and max_seqlen, then the ring functions' (llama3 and zigzag llama3 too). */
type DriverVarlenArgs = PythonArgs<
  [cu_seqlens: CuSeqlens, max_seqlen: number, ...RingPositional],
  DriverKwargs & { cu_seqlens?: CuSeqlens; max_seqlen?: number; heads_k_stride?: number }
>;
type FlashVarlenKw = Omit<DriverKwargs, 'group'>;
type FlashVarlenArgs = PythonArgs<
  [
    cu_seqlens_q: CuSeqlens,
    cu_seqlens_k: CuSeqlens,
    max_seqlen_q: number,
    max_seqlen_k: number,
    ...FlashPositional,
  ],
  FlashVarlenKw & {
    cu_seqlens_q?: CuSeqlens;
    cu_seqlens_k?: CuSeqlens;
    max_seqlen_q?: number;
    max_seqlen_k?: number;
  }
>;
type FlashVarlenQkvArgs = PythonArgs<
  [cu_seqlens: CuSeqlens, max_seqlen: number, ...FlashPositional],
  FlashVarlenKw & { cu_seqlens?: CuSeqlens; max_seqlen?: number }
>;

/** Every function of the registry by its Python name, with driver mode's parameter list. */
export type DriverFunctions = { [N in Extract<UnpackedName, RingName>]: Func<DriverRingArgs> } & {
  [N in Extract<KvPackedName, RingName>]: KvPacked<DriverRingArgs>;
} & { [N in Extract<QkvPackedName, RingName>]: QkvPacked<DriverRingArgs> } & Packings<
    'flash_attn',
    Func<DriverFlashArgs>,
    KvPacked<DriverFlashArgs>,
    QkvPacked<DriverFlashArgs>
  > &
  Packings<
    'flash_attn_varlen',
    Func<FlashVarlenArgs>,
    KvPacked<FlashVarlenArgs>,
    QkvPacked<FlashVarlenQkvArgs>
  > &
  Packings<
    | 'ring_flash_attn_varlen'
    | 'zigzag_ring_flash_attn_varlen'
    | 'llama3_flash_attn_varlen'
    | 'zigzag_llama3_flash_attn_varlen',
    Func<DriverVarlenArgs>,
    KvPacked<DriverVarlenArgs>,
    QkvPacked<DriverVarlenArgs>
  > &
  Packings<'ulysses_attn', Func<DriverRingArgs>, KvPacked<DriverRingArgs>, QkvPacked<DriverRingArgs>> &
  Packings<'usp_attn', Func<DriverUspArgs>, KvPacked<DriverUspArgs>, QkvPacked<DriverUspArgs>>;
export type DriverFunctionName = keyof DriverFunctions;

/** ring_flash_attn_func_v2 → ringFlashAttnFuncV2, as the SPMD functions' aliases are spelled. */
export type CamelCase<S extends string> = S extends `${infer H}_${infer T}`
  ? `${H}${Capitalize<CamelCase<T>>}`
  : S;
export function camelCase(name: string): string {
  return name.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

/** `rt.zigzag_ring_flash_attn_func(q, k, v, opts)` and `rt.zigzagRingFlashAttnFunc(...)`: rt.call by name. */
export type DriverMethods = DriverFunctions & {
  [N in DriverFunctionName as CamelCase<N>]: DriverFunctions[N];
};

/** A Runtime that also runs the ring functions in driver mode, by `call(name, ...)` or as methods. */
export interface RingRuntime extends DriverMethods {}
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
  call<N extends DriverFunctionName>(
    name: N,
    ...args: Parameters<DriverFunctions[N]>
  ): ReturnType<DriverFunctions[N]>;
  /**
   * The varlen families are also taken loosely (checked at run time): full packed tensors
   * (total, h, d) or packings, the GLOBAL cu_seqlens (Int32Array or int32 ndarray) and max_seqlen,
   * then the ring functions' tail. llama3 is called the same way (driver mode prepares every
   * rank's cu_seqlens_q/k and local_k_slice) with `heads_k_stride` as an option (default 1). lse
   * comes back as (h, total).
   */
  call(name: VarlenName, ...args: unknown[]): Promise<DriverResult>;
  async call(name: string, ...args: unknown[]): Promise<DriverResult> {
    if (this.isClosed) throw new RingFlashAttnError('E_CLOSED', 'runtime is closed');
    const entry = ringFunction(name);
    const sharding = entry.sharding;
    const nt = TENSOR_COUNT[entry.packing];
    if (args.length < nt)
      fail(
        'E_ARG',
        `${name}: expected ${nt} tensor argument(s) (${TENSOR_NAMES[entry.packing].join(', ')}), got ${args.length}`,
      );
    const rest = args.slice(nt);
    const { kw, alibi, dropoutP } = parseAttnArgs(name, rest, sharding.positional ?? entry.positional, [
      'dtype',
      'timeoutMs',
      'signal',
      ...(sharding.options ?? []),
    ]);
    // The call's deadline and cancellation (CallOptions) cover its forward, backward and dispose.
    const callOpts: CallOptions = {
      timeoutMs: kw.timeoutMs as number | undefined,
      signal: kw.signal as AbortSignal | undefined,
    };
    const ranks = sharding.single ? [0] : this.groupRanks(name, kw.group);
    const world = ranks.length;
    const inputs = args.slice(0, nt).map((x, i) => toDense(name, TENSOR_NAMES[entry.packing][i]!, x));
    const dtype = computeDtype(name, kw.dtype, this.backend === 'cuda' ? 'bfloat16' : inputs[0]!.dtype);
    const axis = sharding.seqAxis;
    checkHostShapes(
      name,
      entry.packing,
      inputs.map((t) => t.shape),
      !sharding.single,
      axis === 0,
    );
    const total = inputs[0]!.shape[axis]!;
    const plan = sharding.plan(name, total, kw, world);
    const { dtype: _drop, group: _g, timeoutMs: _t, signal: _s, ...kwargs } = kw;
    for (const key of sharding.consumes ?? []) delete kwargs[key];
    if (kw.group != null) kwargs.group = ranks;
    // The ranks get the slopes as a plain float32 ndarray, and one seed for all of them.
    if (alibi) kwargs.alibi_slopes = { data: alibi.values, shape: [...alibi.shape] };
    if (dropoutP > 0 && kwargs.dropout_seed == null) kwargs.dropout_seed = randomInt(2 ** 48 - 1);
    const dense = inputs.map((t) => toComputeDtype(t, dtype));
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
    const rankKwargs = ranks.map((_, i) => ({ ...kwargs, ...plan.kwargs(i) }));
    // What the ranks cannot receive fails here, named, rather than as a clone error in transit.
    const unsendable = uncloneablePath(rankKwargs[0], 'options');
    if (unsendable) fail('E_ARG', `${name}: ${unsendable}, which cannot be sent to the ranks`);
    const tasks: ForwardTask[] = ranks.map((_, i) => ({
      callId,
      name,
      kwargs: rankKwargs[i]!,
      tensors: dense.map((t) => cut(t, i)),
    }));
    const results = (await this.runEach(TASKS, 'forward', tasks, ranks, callOpts)) as {
      out: HostShard;
      lse: HostShard;
    }[];
    // lse is (b, h, s) dense and (h, total) varlen: its sequence axis is the last.
    const out = join(
      results.map((r) => r.out),
      axis,
    );
    const lse = join(
      results.map((r) => r.lse),
      results[0]!.lse.shape.length - 1,
    );
    let disposed = false;
    return {
      out,
      lse,
      ...(dropoutP > 0 ? { dropoutSeed: kwargs.dropout_seed as number } : {}),
      backward: async (doutArg: HostTensor) => {
        if (disposed) fail('E_ARG', `${name}: backward after dispose()`);
        const dout = toComputeDtype(toDense(`${name} backward`, 'dout', doutArg), dtype);
        if (dout.shape.join() !== out.shape.join())
          fail(
            'E_SHAPE',
            `${name} backward: dout shape (${dout.shape.join(', ')}) != out shape (${out.shape.join(', ')})`,
          );
        const douts = ranks.map((_, i) => ({ callId, dout: cut(dout, i) }));
        const grads = (await this.runEach(TASKS, 'backward', douts, ranks, callOpts)) as HostShard[][];
        const named: Record<string, Nd> = {};
        GRAD_NAMES[entry.packing].forEach((g, j) => {
          named[g] = join(
            grads.map((r) => r[j]!),
            axis,
          );
        });
        return named as DriverGrads;
      },
      dispose: async () => {
        if (disposed || this.isClosed) return;
        disposed = true;
        await this.runEach(
          TASKS,
          'dispose',
          ranks.map(() => ({ callId })),
          ranks,
          { timeoutMs: callOpts.timeoutMs },
        );
      },
    };
  }

  private groupRanks(name: string, group: unknown): number[] {
    if (group == null) return Array.from({ length: this.world }, (_, i) => i);
    if (!Array.isArray(group))
      fail('E_ARG', `${name}: in driver mode group must be a list of ranks, got ${describeValue(group)}`);
    const ranks = [...new Set(group as unknown[])];
    if (
      ranks.length !== group.length ||
      ranks.length === 0 ||
      ranks.some((r) => !Number.isInteger(r) || (r as number) < 0 || (r as number) >= this.world)
    )
      fail(
        'E_ARG',
        `${name}: group must list distinct ranks in [0, ${this.world}), got [${group.map(describeValue).join(', ')}]`,
      );
    return (ranks as number[]).sort((a, b) => a - b);
  }
}

/** The compute dtype option; `fallback` when it is not given. */
function computeDtype(fn: string, value: unknown, fallback: DType): DType {
  if (value === undefined) return fallback;
  if (typeof value !== 'string')
    fail('E_DTYPE', `${fn}: dtype must be one of ${DTYPES.join(', ')}, got ${describeValue(value)}`);
  return checkDType(value, `${fn}: dtype`);
}

// The typed methods: each registry name (and its camelCase alias) calls rt.call with that name.
for (const name of RING_FUNCTION_NAMES) {
  for (const key of new Set([name, camelCase(name)])) {
    const method = {
      [key](this: RingRuntime, ...args: unknown[]) {
        return this.call(name as VarlenName, ...args);
      },
    }[key]!;
    Object.defineProperty(RingRuntime.prototype, key, { value: method, writable: true, configurable: true });
  }
}

/** Starts the runtime: one worker thread per rank (per GPU on cuda). */
export function init(opts: InitOptions = {}): Promise<RingRuntime> {
  return RingRuntime.create(opts);
}

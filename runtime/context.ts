import type { Backend } from './backend.js';
import { makeGroup, type Group, type Transport } from './comm.js';
import { checkDType, fromFloat32, type DType, type HostData } from './dtype.js';
import { fail } from './errors.js';
import { checkHostView, denseData, describeValue, type DeviceTensor } from './tensor.js';

/** What a worker knows about itself; piscina's workerData carries it. */
export interface RankInfo {
  backend: 'cpu' | 'cuda';
  rank: number;
  world: number;
  device: number;
  timeoutMs: number;
  /** Unique per runtime in this process; part of every communicator's key. */
  runtimeId: string;
  /** How the cuda backend communicates (see InitOptions.transport). */
  transport: Transport;
  /** Global rank of the first rank this process runs; this process runs [rank0, rank0 + localWorld). */
  rank0: number;
  localWorld: number;
}

/** A host tensor the way callers hand it over: an ndarray-like object. */
export interface HostTensorLike {
  data: ArrayLike<number>;
  shape: readonly number[];
  dtype?: string;
}

/**
 * The per-worker view of the runtime, passed to SPMD code as its first argument and used by
 * the api/ functions. `group` is the world group; `newGroup(ranks)` makes sub-groups.
 */
export class RankContext {
  readonly group: Group;

  constructor(
    readonly info: RankInfo,
    readonly backend: Backend,
  ) {
    this.group = makeGroup(
      Array.from({ length: info.world }, (_, i) => i),
      info.rank,
      info.runtimeId,
    );
  }

  get rank(): number {
    return this.info.rank;
  }
  get world(): number {
    return this.info.world;
  }
  get device(): number {
    return this.info.device;
  }

  /** A sub-group; every member must create it (same ranks, any order of calls). */
  newGroup(ranks: readonly number[]): Group {
    const sorted = [...new Set(ranks)].sort((a, b) => a - b);
    if (
      sorted.length !== ranks.length ||
      sorted.some((r) => !Number.isInteger(r) || r < 0 || r >= this.world)
    )
      fail(
        'E_ARG',
        `group: ranks must be distinct integers in [0, ${this.world}), got [${ranks.join(', ')}]`,
      );
    if (!sorted.includes(this.rank))
      fail('E_ARG', `group: rank ${this.rank} is not a member of [${sorted.join(', ')}]`);
    return makeGroup(sorted, this.rank, this.info.runtimeId);
  }

  /**
   * Uploads a host tensor. Float32Array data is converted to `dtype` (default float32);
   * Uint16Array data must carry its dtype ('bfloat16' | 'float16').
   */
  tensor(host: HostTensorLike, dtype?: DType, requiresGrad = false): DeviceTensor {
    if (!host || typeof host !== 'object' || !ArrayBuffer.isView(host.data))
      fail('E_ARG', `ctx.tensor: host must be an ndarray (or { data, shape }), got ${describeValue(host)}`);
    // An ndarray view (offset, strides) uploads the elements it shows, in C order.
    const view = checkHostView(
      'ctx.tensor: host',
      host as Parameters<typeof checkHostView>[1],
      (host.data as ArrayLike<number>).length,
    );
    const dense = {
      ...host,
      data: denseData(host.data as Float32Array | Uint16Array, view),
      shape: view.shape,
    };
    const t = this.backend.upload(hostData(dense, dtype), dense.shape, resolveDType(dense, dtype));
    t.requiresGrad = requiresGrad;
    return t;
  }
}

function resolveDType(host: HostTensorLike, dtype?: DType): DType {
  if (host.data instanceof Uint16Array) return checkDType(host.dtype, 'dtype of Uint16Array data');
  return dtype ?? 'float32';
}

function hostData(host: HostTensorLike, dtype?: DType): HostData {
  const want = resolveDType(host, dtype);
  if (host.data instanceof Uint16Array) {
    if (dtype && dtype !== want) fail('E_DTYPE', `data is ${want}, asked for ${dtype}`);
    return host.data;
  }
  if (!(host.data instanceof Float32Array))
    fail('E_DTYPE', 'host tensors must be Float32Array or Uint16Array (bf16/f16 bits)');
  return want === 'float32' ? host.data : fromFloat32(host.data, want);
}

let current: RankContext | undefined;

export function setCurrentContext(ctx: RankContext): void {
  current = ctx;
}

/** The context of the calling worker; api functions fail outside a runtime worker. */
export function currentContext(): RankContext {
  if (!current)
    fail('E_DEVICE', 'no rank context: call this inside rt.spmd(...) code or through rt.call(...)');
  return current;
}

import { Piscina } from 'piscina';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { threadId, type BroadcastChannel, type Worker } from 'node:worker_threads';
import type { Transport } from './comm.js';
import type { RankInfo } from './context.js';
import { RingFlashAttnError, asRingError, fail } from './errors.js';
import { cudaNative } from './cuda_native.js';
import { native } from './native.js';
import { describeValue } from './tensor.js';
import { Processes } from './processes.js';
import { resolveRendezvous, type RendezvousOptions, type ResolvedRendezvous } from './rendezvous.js';
import { fromTransfer, workerErrorChannel, type StrayError } from './transfer.js';
import type { WorkerResult, WorkerTask } from './worker.js';

export interface InitOptions {
  /** Default: 'cuda' when a GPU is visible and the addon was built with CUDA, else 'cpu'. */
  backend?: 'cuda' | 'cpu';
  /** Ranks; default: the GPU count (cuda) or 2 (cpu). */
  world?: number;
  /** GPU index of each rank (cuda); default 0..world-1. */
  devices?: number[];
  /**
   * How long a rank waits on a peer before failing with E_WORKER/E_NCCL (ms), and how long the
   * other ranks of a call get to return once one rank has failed. Default 60000.
   */
  timeoutMs?: number;
  /**
   * The deadline of each call (ms), user SPMD code included, unless the call sets its own
   * (CallOptions.timeoutMs): the ranks still running are terminated and replaced, and the call
   * rejects with E_TIMEOUT naming them. 0: no deadline. Default 600000.
   */
  callTimeoutMs?: number;
  /**
   * Receives each error thrown on a worker outside any call (a stray timer or an unawaited
   * promise of user code), as an E_WORKER error naming the rank; that worker is replaced before
   * the next call. Default: one line on stderr.
   */
  onWorkerError?: (error: RingFlashAttnError) => void;
  /**
   * How ranks communicate on GPUs (cuda; the cpu backend ignores it): 'nccl' (NCCL's kernels) or
   * 'copy-engine' (cudaMemcpyPeerAsync between the workers of this process: no SM time taken
   * from the attention kernels, NCCL never loaded; the llama3 family's all-gather and
   * reduce-scatter become per-member pulls, the latter summed in fp32 on the comm stream). Default: see
   * defaultTransport. Ranks that share a GPU must use 'copy-engine' (NCCL refuses two ranks on one GPU).
   */
  transport?: Transport;
  /**
   * Joins a runtime that spans processes (and machines): the store of process 0 at host:port
   * (`'host:port'` takes process and processes from RANK and WORLD_SIZE). Default: the launcher's
   * variables (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, as torchrun sets them) when WORLD_SIZE
   * is above 1; false: this process alone, whatever the environment says.
   */
  rendezvous?: RendezvousOptions | string | false;
  /**
   * Ranks this process runs, in a runtime that spans processes (default: `devices`' length, else
   * 1: one GPU per process, GPU LOCAL_RANK, as torchrun starts them). Without a rendezvous it is
   * the same as `world`.
   */
  localWorld?: number;
  /**
   * Global rank of this process's first rank, when the caller knows it: checked against the
   * rendezvous (the processes before this one run that many ranks). `world` is checked the same
   * way against the total.
   */
  rank0?: number;
}

/** Per call: a deadline and a cancellation, as Node's APIs take them. */
export interface CallOptions {
  /** Deadline of this call (ms, 0: none); default InitOptions.callTimeoutMs. */
  timeoutMs?: number;
  /** Cancels the call: its running ranks are terminated and replaced, it rejects with E_ABORTED. */
  signal?: AbortSignal;
}

/** What init's options resolve to. */
export interface ResolvedInit {
  /** This process's ranks; with a rendezvous, numbered 0.. until it assigns their global ranks. */
  ranks: RankInfo[];
  rendezvous?: ResolvedRendezvous;
  /** world and rank0 as the options gave them, for the rendezvous to check. */
  expect?: { world?: number; rank0?: number };
  callTimeoutMs: number;
  onWorkerError: (error: RingFlashAttnError) => void;
}

const INIT_KEYS = new Set([
  'backend',
  'world',
  'devices',
  'timeoutMs',
  'callTimeoutMs',
  'onWorkerError',
  'transport',
  'rendezvous',
  'localWorld',
  'rank0',
]);
/** setTimeout's and the native waits' limit (a signed 32-bit millisecond count). */
const MAX_TIMEOUT_MS = 2 ** 31 - 1;
/** The longest the other ranks of a failed call get to return before they are terminated. */
const FAILURE_GRACE_MS = 10_000;
export type { Transport };
let runtimeCount = 0;

/** A whole number of milliseconds in [min, 2^31 - 1]: what setTimeout and the native waits take. */
export function checkTimeout(where: string, value: unknown, min: 0 | 1): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > MAX_TIMEOUT_MS)
    fail(
      'E_ARG',
      `${where} must be an integer number of milliseconds in [${min}, ${MAX_TIMEOUT_MS}], got ${typeof value === 'string' ? JSON.stringify(value) : describeValue(value)}`,
    );
  return value;
}

/** GPUs the CUDA backend can see (0 without a CUDA build, driver or device). */
export function visibleGpuCount(): number {
  return native().cuda ? cudaNative().deviceCount() : 0;
}

/**
 * The transport when InitOptions.transport is not given: 'copy-engine' when every two distinct
 * GPUs of the world can read each other's memory directly (NVLink or PCIe P2P: the copy engines
 * take no SMs from the attention kernels and beat NCCL in every dense cell of the README table,
 * benchmark/RESULTS.md), or when ranks share a GPU (NCCL refuses it);
 * else 'nccl', whose own transports do better than copies staged through host memory.
 */
export function defaultTransport(
  devices: readonly number[],
  peerAccess: (device: number, peer: number) => boolean,
): Transport {
  const gpus = [...new Set(devices)];
  if (gpus.length < devices.length) return 'copy-engine';
  for (const a of gpus) for (const b of gpus) if (a !== b && !peerAccess(a, b)) return 'nccl';
  return 'copy-engine';
}

function resolveOptions(opts: InitOptions): ResolvedInit {
  if (opts === null || typeof opts !== 'object') fail('E_ARG', 'init: options must be an object');
  for (const k of Object.keys(opts)) if (!INIT_KEYS.has(k)) fail('E_ARG', `init: unknown option '${k}'`);
  const gpus = visibleGpuCount();
  const backend = opts.backend ?? (gpus > 0 ? 'cuda' : 'cpu');
  if (backend !== 'cpu' && backend !== 'cuda')
    fail('E_ARG', `init: backend must be 'cuda' or 'cpu', got ${JSON.stringify(backend)}`);
  if (backend === 'cuda' && gpus === 0)
    fail(
      'E_DEVICE',
      native().cudaBuilt
        ? 'init: backend cuda asked for, but no GPU is visible'
        : `init: backend cuda asked for, but the addon was built without CUDA (${native().cudaOmitted})`,
    );
  const rendezvous = resolveRendezvous(opts.rendezvous);
  for (const key of ['localWorld', 'rank0'] as const) {
    const v = opts[key];
    if (v !== undefined && (!Number.isInteger(v) || v < (key === 'rank0' ? 0 : 1)))
      fail(
        'E_ARG',
        `init: ${key} must be ${key === 'rank0' ? 'a non-negative' : 'a positive'} integer, got ${describeValue(v)}`,
      );
  }
  if (rendezvous && opts.world !== undefined && (!Number.isInteger(opts.world) || opts.world < 1))
    fail(
      'E_ARG',
      `init: world must be an integer >= 1 (the ranks of every process), got ${describeValue(opts.world)}`,
    );
  if (!rendezvous && opts.rank0 !== undefined && opts.rank0 !== 0)
    fail('E_ARG', `init: rank0 ${opts.rank0} needs a rendezvous (a runtime of one process starts at rank 0)`);
  if (
    !rendezvous &&
    opts.localWorld !== undefined &&
    opts.world !== undefined &&
    opts.localWorld !== opts.world
  )
    fail(
      'E_ARG',
      `init: localWorld ${opts.localWorld} differs from world ${opts.world} in a runtime of one process`,
    );
  // With a rendezvous, this process runs `world` of the runtime's ranks ("local"); torchrun's
  // convention is one GPU per process, the GPU LOCAL_RANK.
  const localRank = Number(process.env.LOCAL_RANK ?? 0);
  const world = rendezvous
    ? (opts.localWorld ?? opts.devices?.length ?? 1)
    : (opts.world ?? opts.localWorld ?? (backend === 'cuda' ? (opts.devices?.length ?? gpus) : 2));
  if (!Number.isInteger(world) || world < 1 || world > 64)
    fail('E_ARG', `init: world must be an integer in [1, 64], got ${world}`);
  const devices =
    opts.devices ??
    Array.from({ length: world }, (_, i) =>
      backend !== 'cuda' ? 0 : rendezvous && world === 1 && Number.isInteger(localRank) ? localRank : i,
    );
  if (!Array.isArray(devices) || devices.length !== world)
    fail('E_ARG', `init: devices must list one device per rank (${world}), got ${JSON.stringify(devices)}`);
  if (opts.transport !== undefined && opts.transport !== 'nccl' && opts.transport !== 'copy-engine')
    fail('E_ARG', `init: transport must be 'nccl' or 'copy-engine', got ${JSON.stringify(opts.transport)}`);
  const sharedDevices = backend === 'cuda' && new Set(devices).size !== devices.length;
  if (backend === 'cuda') {
    for (const d of devices)
      if (!Number.isInteger(d) || d < 0 || d >= gpus)
        fail('E_DEVICE', `init: device ${d} is not a visible GPU (0..${gpus - 1})`);
    if (sharedDevices && rendezvous)
      fail(
        'E_DEVICE',
        'init: ranks that share a GPU cannot join a runtime that spans processes (its NCCL communicator refuses two ranks on one GPU)',
      );
    if (sharedDevices && opts.transport === 'nccl')
      fail(
        'E_DEVICE',
        "init: ranks that share a GPU need transport 'copy-engine' (NCCL refuses two ranks on one GPU)",
      );
    for (const d of new Set(devices)) checkDeviceSupported(d);
  }
  const transport: Transport =
    opts.transport ??
    (backend === 'cuda' ? defaultTransport(devices, (a, b) => cudaNative().peerAccess(a, b)) : 'copy-engine');
  const timeoutMs = checkTimeout('init: timeoutMs', opts.timeoutMs ?? 60_000, 1);
  const callTimeoutMs = checkTimeout('init: callTimeoutMs', opts.callTimeoutMs ?? 600_000, 0);
  if (opts.onWorkerError !== undefined && typeof opts.onWorkerError !== 'function')
    fail('E_ARG', `init: onWorkerError must be a function, got ${typeof opts.onWorkerError}`);
  // Unique in the process, across threads too: the scope of this runtime's communicators, aborts and resets.
  const runtimeId = `rt${threadId}.${++runtimeCount}`;
  return {
    ranks: devices.map((device, rank) => ({
      backend,
      rank,
      world,
      device,
      timeoutMs,
      runtimeId,
      transport,
      rank0: 0,
      localWorld: world,
    })),
    rendezvous,
    expect: { world: opts.world, rank0: opts.rank0 },
    callTimeoutMs,
    onWorkerError: opts.onWorkerError ?? ((e) => console.error(`ring-flash-attn: ${e.message}`)),
  };
}

/** E_DEVICE unless this build holds kernels GPU `device` can run (SASS for it, or PTX it can JIT). */
function checkDeviceSupported(device: number): void {
  const d = cudaNative().deviceInfo(device);
  if (!d.ok)
    fail(
      'E_DEVICE',
      `init: GPU ${device} (${d.name}, compute capability ${d.major}.${d.minor}) cannot run this build's kernels ` +
        `(${d.error}); supported: compute capability 8.0 and newer (sm_80, sm_86, sm_89 and sm_90a code, PTX for later GPUs)`,
    );
}

/** How one dispatched call is running: each rank's state, and how the call may be cut short. */
interface Flight {
  ranks: readonly number[];
  running: Set<number>;
  controllers: AbortController[];
  /** Why the call was cut short (deadline, signal, close, or ranks stuck after a failure). */
  stop?: RingFlashAttnError;
  /** The workers terminated by the cut; communicators are reset only once they have exited. */
  terminated: Worker[];
}

/**
 * One process, one worker thread per rank. Each rank has its own single-thread piscina pool,
 * so a task is pinned to its rank, and the runtime runs one job at a time, so every rank issues
 * its collectives in the same order (a shared pool would hand two ranks' tasks to one thread and
 * deadlock the ring). Idle workers must not sleep in Atomics.wait (atomics: 'disabled'): that
 * would block native completion callbacks.
 *
 * Every call is bounded: by its deadline and signal, and, once a rank has failed, by the time
 * the others get to return (timeoutMs, at most FAILURE_GRACE_MS); a rank still running then is
 * terminated (piscina aborts its task and starts a fresh worker). Aborts and resets touch this
 * runtime's communicators only (their scope is runtimeId).
 */
export class Runtime {
  readonly backend: 'cpu' | 'cuda';
  /** GPU of each of this process's ranks. */
  readonly devices: readonly number[];
  /** How the ranks communicate on GPUs (InitOptions.transport, resolved; the cpu backend ignores it). */
  readonly transport: Transport;
  private ranks: RankInfo[];
  private scope: string;
  /** The runtime's other processes, when it spans more than this one (set by the rendezvous). */
  private procs: Processes | undefined;
  private pendingRendezvous: ResolvedRendezvous | undefined;
  private readonly expect: ResolvedInit['expect'];
  /** Calls dispatched so far: every process of a runtime numbers its calls alike. */
  private calls = 0;
  private readonly timeoutMs: number;
  private readonly callTimeoutMs: number;
  private readonly onWorkerError: (error: RingFlashAttnError) => void;
  private pools: Piscina[] = [];
  private strays: BroadcastChannel | undefined;
  /** Ranks whose worker threw outside a call: replaced before the next call. */
  private readonly stale = new Set<number>();
  private queue: Promise<unknown> = Promise.resolve();
  private flight: Flight | undefined;
  private closed = false;

  protected constructor(init: ResolvedInit) {
    this.ranks = init.ranks;
    const first = init.ranks[0]!;
    this.backend = first.backend;
    this.devices = init.ranks.map((r) => r.device);
    this.transport = first.transport;
    this.scope = first.runtimeId;
    this.timeoutMs = first.timeoutMs;
    this.callTimeoutMs = init.callTimeoutMs;
    this.onWorkerError = init.onWorkerError;
    this.expect = init.expect;
    // A runtime that spans processes starts its workers once the rendezvous has numbered its ranks.
    if (init.rendezvous) this.pendingRendezvous = init.rendezvous;
    else this.start();
  }

  /** Ranks of the whole runtime, every process's. */
  get world(): number {
    return this.ranks[0]!.world;
  }

  /** Global rank of this process's first rank (0 unless the runtime spans processes). */
  get rank0(): number {
    return this.ranks[0]!.rank0;
  }

  /** The global ranks this process runs: rt.spmd runs on these and returns their results, in order. */
  get localRanks(): number[] {
    return this.ranks.map((r) => r.rank);
  }

  /** How many processes the runtime spans (1 without a rendezvous). */
  get processes(): number {
    return this.procs?.count ?? 1;
  }

  private pool(rank: number): Piscina | undefined {
    return this.pools[rank - this.rank0];
  }

  private start(): void {
    this.pools = this.ranks.map((info) => this.newPool(info));
    this.strays = workerErrorChannel(this.scope);
    this.strays.unref();
    this.strays.onmessage = (ev) => {
      const m = (ev as { data: StrayError }).data;
      this.workerFailedOutsideCall(m.rank, `${m.kind}: ${m.message}`, m.stack);
    };
  }

  private newPool(info: RankInfo): Piscina {
    const pool = new Piscina({
      filename: fileURLToPath(new URL('./worker.js', import.meta.url)),
      workerData: info,
      minThreads: 1,
      maxThreads: 1,
      concurrentTasksPerWorker: 1,
      idleTimeout: Number.MAX_SAFE_INTEGER,
      atomics: 'disabled',
    });
    // A worker that dies while idle (process.exit in user code, a crash at start-up): piscina
    // starts another one; without a listener its 'error' event would end the host process.
    pool.on('error', (err: unknown) => this.workerFailedOutsideCall(info.rank, asRingError(err).message));
    return pool;
  }

  private workerFailedOutsideCall(rank: number, message: string, stack?: string): void {
    if (this.closed) return;
    this.stale.add(rank);
    const e = new RingFlashAttnError(
      'E_WORKER',
      `rank ${rank}'s worker threw outside any call (${message}); it is replaced before the next call`,
      { rank },
    );
    if (stack) e.stack = stack;
    try {
      this.onWorkerError(e);
    } catch {
      // A throwing handler must not take the runtime (or the host process) down with it.
    }
  }

  static async create(opts: InitOptions = {}): Promise<Runtime> {
    const rt = new Runtime(resolveOptions(opts));
    await rt.warmup();
    return rt;
  }

  /** Joins the other processes (if any), then on GPUs the world communicator on every rank before any user call. */
  protected async warmup(): Promise<void> {
    if (this.pendingRendezvous) await this.rendezvous(this.pendingRendezvous);
    if (this.backend !== 'cuda') return;
    await this.spmd(new URL('./setup_tasks.js', import.meta.url).href, 'warmup');
  }

  private async rendezvous(r: ResolvedRendezvous): Promise<void> {
    this.pendingRendezvous = undefined;
    try {
      this.procs = await Processes.join(r, {
        ranks: this.ranks.length,
        backend: this.backend,
        expect: this.expect,
        abort: abortCommunicators,
        describe: rankList,
      });
    } catch (e) {
      this.closed = true;
      throw e;
    }
    const { rank0, world, scope } = this.procs;
    this.ranks = this.ranks.map((info, i) => ({ ...info, rank: rank0 + i, world, rank0, runtimeId: scope }));
    this.scope = scope;
    this.start();
  }

  protected static resolve(opts: InitOptions): ResolvedInit {
    return resolveOptions(opts);
  }

  /**
   * Runs `exportName` of `moduleUrl` on every rank with (ctx, arg) and resolves to the ranks'
   * results in rank order; DeviceTensors in them arrive as ndarrays (HostResult) whose `dtype`
   * is the tensor's (bf16/f16 as Uint16Array bits).
   */
  async spmd<T = unknown>(
    moduleUrl: string | URL,
    exportName: string,
    arg?: unknown,
    opts?: CallOptions,
  ): Promise<T[]> {
    const results = await this.runEach(
      String(moduleUrl),
      exportName,
      this.ranks.map(() => arg),
      undefined,
      opts,
    );
    return results.map(fromTransfer) as T[];
  }

  /**
   * Runs one task per listed rank (default every rank) and resolves to their results in rank
   * order. If any rank fails, the communicators are aborted so no rank waits forever, and the
   * call rejects once every rank has returned or been terminated; the runtime stays usable.
   */
  runEach(
    moduleUrl: string,
    exportName: string,
    args: readonly unknown[],
    ranks?: readonly number[],
    opts: CallOptions = {},
  ): Promise<unknown[]> {
    if (this.closed) return Promise.reject(new RingFlashAttnError('E_CLOSED', 'runtime is closed'));
    let timeoutMs: number;
    try {
      if (ranks !== undefined && this.procs && this.procs.self !== 0)
        fail(
          'E_ARG',
          `driver mode (rt.call and the rt.<function> methods) runs on the process of rank 0, and this is process ` +
            `${this.procs.self} of ${this.processes} (${rankList(this.localRanks)} of ${this.world}): call rt.serve() here ` +
            `while process 0 drives, or call the functions inside rt.spmd, each rank with its shard`,
        );
      if (opts === null || typeof opts !== 'object')
        fail('E_ARG', `call options must be an object, got ${opts === null ? 'null' : typeof opts}`);
      timeoutMs = checkTimeout('timeoutMs', opts.timeoutMs ?? this.callTimeoutMs, 0);
      if (opts.signal !== undefined && !(opts.signal instanceof AbortSignal))
        fail(
          'E_ARG',
          `signal must be an AbortSignal, got ${opts.signal === null ? 'null' : typeof opts.signal}`,
        );
    } catch (e) {
      return Promise.reject(e);
    }
    const on = ranks ?? this.localRanks;
    const procs = this.procs;
    return this.enqueue(() =>
      ranks !== undefined && procs
        ? procs.drive(moduleUrl, exportName, args, ranks, timeoutMs, (url, exp, a, r, ms, name) =>
            this.dispatch(url, exp, a, r, ms, opts.signal, name),
          )
        : this.dispatch(moduleUrl, exportName, args, on, timeoutMs, opts.signal),
    );
  }

  /** Runs `job` once every call queued before it has settled. */
  private enqueue<T>(job: () => Promise<T>): Promise<T> {
    const run = this.queue.then(job);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /**
   * On every process but rank 0's, in a runtime that spans processes: runs the driver-mode calls
   * of process 0 (rt.call there) on this process's ranks, until process 0 closes its runtime or
   * this one closes. Rejects with E_WORKER when process 0 is gone.
   */
  async serve(): Promise<void> {
    if (!this.procs)
      fail(
        'E_ARG',
        'rt.serve() runs the driver-mode calls of process 0 in a runtime that spans processes; this one does not',
      );
    await this.procs.serve((moduleUrl, exportName, args, ranks, timeoutMs, name) =>
      this.enqueue(() => this.dispatch(moduleUrl, exportName, args, ranks, timeoutMs, undefined, name)),
    );
  }

  private async dispatch(
    moduleUrl: string,
    exportName: string,
    args: readonly unknown[],
    ranks: readonly number[],
    timeoutMs: number,
    signal: AbortSignal | undefined,
    name = exportName,
  ): Promise<unknown[]> {
    if (this.closed) throw new RingFlashAttnError('E_CLOSED', 'runtime is closed');
    if (signal?.aborted) throw aborted(name, signal);
    if (this.procs?.broken) throw this.procs.brokenError();
    await this.replaceStaleWorkers();
    this.calls++;
    this.procs?.beginCall(this.calls);
    const flight: Flight = {
      ranks,
      running: new Set(ranks),
      controllers: ranks.map(() => new AbortController()),
      terminated: [],
    };
    this.flight = flight;
    let firstError: RingFlashAttnError | undefined;
    let grace: NodeJS.Timeout | undefined;
    // After ms, the ranks still running are terminated and replaced, the call failing with E_TIMEOUT.
    const cutAfter = (ms: number, message: (stuck: number[]) => string, cause?: RingFlashAttnError) =>
      setTimeout(
        () =>
          this.cut(
            flight,
            (stuck) => new RingFlashAttnError('E_TIMEOUT', message(stuck), { cause, rank: stuck[0] }),
          ),
        ms,
      );
    const deadline =
      timeoutMs > 0
        ? cutAfter(
            timeoutMs,
            (stuck) =>
              `'${name}' timed out after ${timeoutMs} ms: ${rankList(stuck)} had not returned; terminated and replaced`,
          )
        : undefined;
    const onAbort = () => this.cut(flight, () => aborted(name, signal!));
    signal?.addEventListener('abort', onAbort, { once: true });
    const onFailure = (e: RingFlashAttnError) => {
      if (firstError) return;
      firstError = e;
      const reason = `rank ${e.rank ?? '?'} failed: ${e.message}`;
      abortCommunicators(this.scope, reason);
      // NCCL communicators spanning processes cannot be remade: every process must stop.
      this.procs?.shareFailure(reason);
      // The other ranks' waits are woken by the abort; one still running after the grace is
      // stuck in user code (or a kernel that will not end) and is terminated.
      const graceMs = Math.min(this.timeoutMs, FAILURE_GRACE_MS);
      grace = cutAfter(
        graceMs,
        (stuck) =>
          `${rankList(stuck)} did not return within ${graceMs} ms after rank ${e.rank} failed (${e.code}: ${e.message}); terminated and replaced`,
        e,
      );
    };
    const settled = await Promise.all(
      ranks.map(async (rank, i) => {
        const task: WorkerTask = { moduleUrl, exportName, arg: args[i] };
        try {
          const r = (await this.pool(rank)!.run(task, {
            signal: flight.controllers[i]!.signal,
          })) as WorkerResult;
          if (!r.ok) {
            const e = new RingFlashAttnError(asRingError(r.error).code, r.error.message, { rank });
            if (r.error.stack) e.stack = r.error.stack;
            onFailure(e);
            return { ok: false as const, error: e };
          }
          return { ok: true as const, value: r.value };
        } catch (err) {
          const e = flight.stop ?? asRingError(err, 'E_WORKER', rank);
          onFailure(e);
          return { ok: false as const, error: e };
        } finally {
          flight.running.delete(rank);
        }
      }),
    );
    clearTimeout(deadline);
    clearTimeout(grace);
    signal?.removeEventListener('abort', onAbort);
    this.flight = undefined;
    if (!firstError) return settled.map((s) => (s.ok ? s.value : undefined));
    await this.settleAfterFailure(flight);
    if (flight.stop) throw flight.stop;
    const failures = settled.filter((s) => !s.ok).map((s) => (s as { error: RingFlashAttnError }).error);
    // Every rank failed the same way (e.g. the same validation error): that error, as is.
    if (failures.length === ranks.length && failures.every((f) => f.code === firstError!.code && !isAbort(f)))
      throw firstError;
    // A device-level failure keeps its code (E_NCCL for a stuck collective, E_CUDA), and so does
    // a transfer between ranks whose local shapes differ (E_SHAPE); anything else a rank threw is
    // reported as that worker's failure.
    const code =
      firstError.code === 'E_NCCL' || firstError.code === 'E_CUDA' || firstError.code === 'E_SHAPE'
        ? firstError.code
        : 'E_WORKER';
    throw new RingFlashAttnError(
      code,
      `rank ${firstError.rank} failed (${firstError.code}): ${firstError.message}`,
      {
        cause: firstError,
        rank: firstError.rank,
      },
    );
  }

  /**
   * Cuts a call short: aborts this runtime's communicators (waking every native wait), then
   * terminates the ranks still running; `why` gets their list. Idempotent per call.
   */
  private cut(flight: Flight, why: (stuck: number[]) => RingFlashAttnError): void {
    if (flight.stop) return;
    const stuck = flight.ranks.filter((r) => flight.running.has(r));
    flight.stop = why(stuck);
    abortCommunicators(this.scope, flight.stop.message);
    for (const r of stuck) {
      const worker = this.pool(r)?.threads[0];
      if (worker) flight.terminated.push(worker);
      flight.controllers[flight.ranks.indexOf(r)]!.abort(flight.stop);
    }
  }

  /**
   * After a failed call: once terminated workers have exited (their native waits could otherwise
   * take the next call's messages), the communicators start afresh.
   */
  private async settleAfterFailure(flight: Flight): Promise<void> {
    await waitForExit(flight.terminated, this.timeoutMs);
    resetCommunicators(this.scope);
  }

  private async replaceStaleWorkers(): Promise<void> {
    if (this.stale.size === 0) return;
    const ranks = [...this.stale];
    this.stale.clear();
    for (const r of ranks) {
      const i = r - this.rank0;
      const old = this.pools[i]!;
      this.pools[i] = this.newPool(this.ranks[i]!);
      await bounded(old.destroy(), this.timeoutMs);
    }
    // A replaced rank's communicators are gone: every rank makes fresh ones.
    resetCommunicators(this.scope);
  }

  /**
   * Stops every worker; later calls reject with E_CLOSED. A call in flight gets `timeoutMs`
   * (default InitOptions.timeoutMs) to finish, then is cut short with E_CLOSED, so close()
   * always ends.
   */
  async close(opts: { timeoutMs?: number } = {}): Promise<void> {
    if (this.closed) return;
    const waitMs = checkTimeout('close: timeoutMs', opts.timeoutMs ?? this.timeoutMs, 0);
    this.closed = true;
    if (!(await bounded(this.queue, waitMs)) && this.flight)
      this.cut(
        this.flight,
        () => new RingFlashAttnError('E_CLOSED', 'runtime closed while the call was running'),
      );
    await bounded(this.queue, this.timeoutMs);
    this.strays?.close();
    await Promise.all(this.pools.map((p) => bounded(p.destroy(), this.timeoutMs)));
    this.pools = [];
    await this.procs?.close();
  }

  get isClosed(): boolean {
    return this.closed;
  }
}

function aborted(exportName: string, signal: AbortSignal): RingFlashAttnError {
  const reason = signal.reason instanceof Error ? signal.reason.message : String(signal.reason);
  return new RingFlashAttnError('E_ABORTED', `'${exportName}' was aborted (${reason})`, {
    cause: signal.reason,
  });
}

function rankList(ranks: readonly number[]): string {
  return ranks.length === 1 ? `rank ${ranks[0]}` : `ranks ${ranks.join(', ')}`;
}

/** Whether `p` settled within `ms` (it is left running otherwise). */
async function bounded(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([
      p.then(
        () => true,
        () => true,
      ),
      timeout,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

async function waitForExit(workers: readonly Worker[], ms: number): Promise<void> {
  await bounded(Promise.all(workers.map((w) => (w.threadId < 0 ? undefined : once(w, 'exit')))), ms);
}

function isAbort(e: RingFlashAttnError): boolean {
  return e.message.includes('communicator aborted');
}

function abortCommunicators(scope: string, reason: string): void {
  const addon = native();
  addon.cpu.mailAbort(scope, reason);
  if (addon.cuda) cudaNative().abortAll(scope, reason);
}

function resetCommunicators(scope: string): void {
  const addon = native();
  addon.cpu.mailReset(scope);
  if (addon.cuda) cudaNative().resetAll(scope);
}

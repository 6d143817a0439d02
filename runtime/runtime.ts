import { Piscina } from 'piscina';
import { fileURLToPath } from 'node:url';
import type { Transport } from './comm.js';
import type { RankInfo } from './context.js';
import { RingFlashAttnError, asRingError, fail } from './errors.js';
import { native } from './native.js';
import type { WorkerResult, WorkerTask } from './worker.js';

export interface InitOptions {
  /** Default: 'cuda' when a GPU is visible and the addon was built with CUDA, else 'cpu'. */
  backend?: 'cuda' | 'cpu';
  /** Ranks; default: the GPU count (cuda) or 2 (cpu). */
  world?: number;
  /** GPU index of each rank (cuda); default 0..world-1. */
  devices?: number[];
  /** How long a rank waits on a peer before failing with E_WORKER/E_NCCL (ms). Default 60000. */
  timeoutMs?: number;
  /**
   * How ranks communicate on GPUs (cuda; the cpu backend ignores it): 'nccl' (NCCL's kernels) or
   * 'copy-engine' (cudaMemcpyPeerAsync between the workers of this process: no SM time taken
   * from the attention kernels, NCCL never loaded; the llama3 family's all-gather and
   * reduce-scatter become per-member pulls, the latter summed in fp32 on the comm stream). Default: see
   * defaultTransport. Ranks that share a GPU must use 'copy-engine' (NCCL refuses two ranks on one GPU).
   */
  transport?: Transport;
}

const INIT_KEYS = new Set(['backend', 'world', 'devices', 'timeoutMs', 'transport']);
export type { Transport };
let runtimeCount = 0;

/** GPUs the CUDA backend can see (0 without a CUDA build, driver or device). */
export function visibleGpuCount(): number {
  const cuda = native().cuda;
  return cuda ? (cuda.deviceCount() as number) : 0;
}

/**
 * The transport when InitOptions.transport is not given: 'copy-engine' when every two distinct
 * GPUs of the world can read each other's memory directly (NVLink or PCIe P2P; on 2 H200s the copy
 * engines beat NCCL in every dense cell of the README table, zigzag's seed forward 97.7% of
 * theoretic against 78.7%, benchmark/RESULTS.md), or when ranks share a GPU (NCCL refuses it);
 * else 'nccl', whose own transports do better than copies staged through host memory.
 */
export function defaultTransport(devices: readonly number[], peerAccess: (device: number, peer: number) => boolean): Transport {
  const gpus = [...new Set(devices)];
  if (gpus.length < devices.length) return 'copy-engine';
  for (const a of gpus) for (const b of gpus) if (a !== b && !peerAccess(a, b)) return 'nccl';
  return 'copy-engine';
}

function resolveOptions(opts: InitOptions): RankInfo[] {
  if (opts === null || typeof opts !== 'object') fail('E_ARG', 'init: options must be an object');
  for (const k of Object.keys(opts)) if (!INIT_KEYS.has(k)) fail('E_ARG', `init: unknown option '${k}'`);
  const gpus = visibleGpuCount();
  const backend = opts.backend ?? (gpus > 0 ? 'cuda' : 'cpu');
  if (backend !== 'cpu' && backend !== 'cuda') fail('E_ARG', `init: backend must be 'cuda' or 'cpu', got ${JSON.stringify(backend)}`);
  if (backend === 'cuda' && gpus === 0)
    fail('E_DEVICE', native().cudaBuilt ? 'init: backend cuda asked for, but no GPU is visible' : 'init: backend cuda asked for, but the addon was built without CUDA (nvcc not found at build time)');
  const world = opts.world ?? (backend === 'cuda' ? opts.devices?.length ?? gpus : 2);
  if (!Number.isInteger(world) || world < 1 || world > 64) fail('E_ARG', `init: world must be an integer in [1, 64], got ${world}`);
  const devices = opts.devices ?? Array.from({ length: world }, (_, i) => (backend === 'cuda' ? i : 0));
  if (!Array.isArray(devices) || devices.length !== world)
    fail('E_ARG', `init: devices must list one device per rank (${world}), got ${JSON.stringify(devices)}`);
  if (opts.transport !== undefined && opts.transport !== 'nccl' && opts.transport !== 'copy-engine')
    fail('E_ARG', `init: transport must be 'nccl' or 'copy-engine', got ${JSON.stringify(opts.transport)}`);
  const sharedDevices = backend === 'cuda' && new Set(devices).size !== devices.length;
  if (backend === 'cuda') {
    for (const d of devices) if (!Number.isInteger(d) || d < 0 || d >= gpus) fail('E_DEVICE', `init: device ${d} is not a visible GPU (0..${gpus - 1})`);
    if (sharedDevices && opts.transport === 'nccl')
      fail('E_DEVICE', "init: ranks that share a GPU need transport 'copy-engine' (NCCL refuses two ranks on one GPU)");
  }
  const transport: Transport = opts.transport ?? (backend === 'cuda' ? defaultTransport(devices, (a, b) => native().cuda!.peerAccess(a, b)) : 'copy-engine');
  const timeoutMs = opts.timeoutMs ?? 60_000;
  if (!(timeoutMs > 0)) fail('E_ARG', `init: timeoutMs must be positive, got ${timeoutMs}`);
  const runtimeId = `rt${++runtimeCount}`;
  return devices.map((device, rank) => ({ backend, rank, world, device, timeoutMs, runtimeId, transport }));
}

/**
 * One process, one worker thread per rank. Each rank has its own single-thread piscina pool,
 * so a task is pinned to its rank, and the runtime runs one job at a time, so every rank issues
 * its collectives in the same order (a shared pool would hand two ranks' tasks to one thread and
 * deadlock the ring). Idle workers must not sleep in Atomics.wait (atomics: 'disabled'): that
 * would block native completion callbacks.
 */
export class Runtime {
  readonly backend: 'cpu' | 'cuda';
  readonly world: number;
  readonly devices: readonly number[];
  /** How the ranks communicate on GPUs (InitOptions.transport, resolved; the cpu backend ignores it). */
  readonly transport: Transport;
  private pools: Piscina[];
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;

  protected constructor(ranks: RankInfo[]) {
    this.backend = ranks[0]!.backend;
    this.world = ranks.length;
    this.devices = ranks.map((r) => r.device);
    this.transport = ranks[0]!.transport;
    const filename = fileURLToPath(new URL('./worker.js', import.meta.url));
    this.pools = ranks.map((info) => new Piscina({
      filename, workerData: info, minThreads: 1, maxThreads: 1, concurrentTasksPerWorker: 1,
      idleTimeout: Number.MAX_SAFE_INTEGER, atomics: 'disabled',
    }));
  }

  static async create(opts: InitOptions = {}): Promise<Runtime> {
    const rt = new Runtime(resolveOptions(opts));
    await rt.warmup();
    return rt;
  }

  /** On GPUs, joins the world communicator on every rank before any user call. */
  protected async warmup(): Promise<void> {
    if (this.backend !== 'cuda') return;
    await this.spmd(new URL('./setup_tasks.js', import.meta.url).href, 'warmup');
  }

  protected static resolve(opts: InitOptions): RankInfo[] {
    return resolveOptions(opts);
  }

  /** Runs `exportName` of `moduleUrl` on every rank with ({rank, world, device, group, ...}, arg). */
  spmd(moduleUrl: string | URL, exportName: string, arg?: unknown): Promise<unknown[]> {
    return this.runEach(String(moduleUrl), exportName, Array.from({ length: this.world }, () => arg));
  }

  /**
   * Runs one task per listed rank (default every rank) and resolves to their results in rank
   * order. If any rank fails, the communicators are aborted so no rank waits forever, and the
   * call rejects once every rank has returned; the runtime stays usable.
   */
  runEach(moduleUrl: string, exportName: string, args: readonly unknown[], ranks?: readonly number[]): Promise<unknown[]> {
    if (this.closed) return Promise.reject(new RingFlashAttnError('E_CLOSED', 'runtime is closed'));
    const on = ranks ?? Array.from({ length: this.world }, (_, i) => i);
    const job = this.queue.then(() => this.dispatch(moduleUrl, exportName, args, on));
    this.queue = job.catch(() => undefined);
    return job;
  }

  private async dispatch(moduleUrl: string, exportName: string, args: readonly unknown[], ranks: readonly number[]): Promise<unknown[]> {
    if (this.closed) throw new RingFlashAttnError('E_CLOSED', 'runtime is closed');
    let firstError: RingFlashAttnError | undefined;
    const onFailure = (e: RingFlashAttnError) => {
      if (firstError) return;
      firstError = e;
      abortCommunicators(`rank ${e.rank ?? '?'} failed: ${e.message}`);
    };
    const settled = await Promise.all(ranks.map(async (rank, i) => {
      const task: WorkerTask = { moduleUrl, exportName, arg: args[i] };
      try {
        const r = (await this.pools[rank]!.run(task)) as WorkerResult;
        if (!r.ok) {
          const e = new RingFlashAttnError(asRingError(r.error).code, r.error.message, { rank });
          if (r.error.stack) e.stack = r.error.stack;
          onFailure(e);
          return { ok: false as const, error: e };
        }
        return { ok: true as const, value: r.value };
      } catch (err) {
        const e = asRingError(err, 'E_WORKER', rank);
        onFailure(e);
        return { ok: false as const, error: e };
      }
    }));
    if (!firstError) return settled.map((s) => (s.ok ? s.value : undefined));
    resetCommunicators();
    const failures = settled.filter((s) => !s.ok).map((s) => (s as { error: RingFlashAttnError }).error);
    // Every rank failed the same way (e.g. the same validation error): that error, as is.
    if (failures.length === ranks.length && failures.every((f) => f.code === firstError!.code && !isAbort(f))) throw firstError;
    // A device-level failure keeps its code (E_NCCL for a stuck collective, E_CUDA); anything
    // else a rank threw is reported as that worker's failure.
    const code = firstError.code === 'E_NCCL' || firstError.code === 'E_CUDA' ? firstError.code : 'E_WORKER';
    throw new RingFlashAttnError(code, `rank ${firstError.rank} failed (${firstError.code}): ${firstError.message}`, {
      cause: firstError, rank: firstError.rank,
    });
  }

  /** Stops every worker; later calls reject with E_CLOSED. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.queue;
    await Promise.all(this.pools.map((p) => p.destroy()));
    this.pools = [];
  }

  get isClosed(): boolean {
    return this.closed;
  }
}

function isAbort(e: RingFlashAttnError): boolean {
  return e.message.includes('communicator aborted');
}

function abortCommunicators(reason: string): void {
  const addon = native();
  addon.cpu.mailAbort(reason);
  addon.cuda?.abortAll?.(reason);
}

function resetCommunicators(): void {
  const addon = native();
  addon.cpu.mailReset();
  addon.cuda?.resetAll?.();
}

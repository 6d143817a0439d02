// How the processes of one runtime find each other: process 0 hosts the store (runtime/store.ts),
// every process says how many ranks it runs and where its CPU mailbox listens, and each one
// learns the others' ranks, so global rank = the ranks of the processes before it + local rank.
// The launcher conventions are torchrun's: RANK and WORLD_SIZE count processes, MASTER_ADDR and
// MASTER_PORT name the store, LOCAL_RANK picks the GPU of a one-GPU process.
import os from 'node:os';
import { randomBytes } from 'node:crypto';
import { RingFlashAttnError, fail } from './errors.js';
import { formatAddress, StoreClient, StoreServer } from './store.js';
import { describeValue } from './tensor.js';

export interface RendezvousOptions {
  /** Host of the store, the machine of process 0 (MASTER_ADDR; default 127.0.0.1). */
  host?: string;
  /** Port of the store (MASTER_PORT; default 29500). */
  port?: number;
  /** This process's index, 0 for the process that hosts the store (RANK). */
  process?: number;
  /** How many processes join the runtime (WORLD_SIZE). */
  processes?: number;
  /** How long a process waits for the others to arrive (ms); default 120000. */
  timeoutMs?: number;
}

export interface ResolvedRendezvous {
  host: string;
  port: number;
  process: number;
  processes: number;
  timeoutMs: number;
}

/** What each process says of itself at the rendezvous. */
export interface ProcessEntry {
  /** Ranks this process runs. */
  ranks: number;
  backend: 'cpu' | 'cuda';
  /** Where the others reach this process (the address it reaches the store from). */
  host: string;
  /** The port of its CPU mailbox (0 on cuda). */
  port: number;
  /** "host pid N", for messages. */
  name: string;
}

export interface Joined {
  /** The runtime id every process uses: the scope of its communicators. */
  scope: string;
  self: number;
  procs: ProcessEntry[];
  /** Global rank of each process's first rank. */
  firstRanks: number[];
  world: number;
  /** What process 0 handed out (the NCCL unique id on cuda). */
  shared: string;
  store: StoreClient;
  server?: StoreServer;
}

const RENDEZVOUS_KEYS = new Set(['host', 'port', 'process', 'processes', 'timeoutMs']);

function envInt(env: NodeJS.ProcessEnv, name: string): number | undefined {
  const v = env[name];
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0)
    fail('E_ARG', `environment: ${name} must be a non-negative integer, got '${v}'`);
  return n;
}

/**
 * The rendezvous of init's options, or of the launcher's variables when the options name none:
 * undefined for a runtime of one process.
 */
export function resolveRendezvous(
  opt: RendezvousOptions | string | false | undefined,
  env: NodeJS.ProcessEnv = process.env,
): ResolvedRendezvous | undefined {
  if (opt === false) return undefined;
  let r: RendezvousOptions;
  if (opt === undefined) {
    const processes = envInt(env, 'WORLD_SIZE');
    if (processes === undefined || processes <= 1) return undefined;
    const rank = envInt(env, 'RANK');
    if (rank === undefined)
      fail(
        'E_ARG',
        'environment: WORLD_SIZE is set but RANK is not (launch with ring-flash-attn launch or torchrun)',
      );
    r = { host: env.MASTER_ADDR || undefined, port: envInt(env, 'MASTER_PORT'), process: rank, processes };
  } else if (typeof opt === 'string') {
    const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(opt);
    if (!m) fail('E_ARG', `init: rendezvous must be 'host:port' or an object, got ${JSON.stringify(opt)}`);
    const processes = envInt(env, 'WORLD_SIZE'),
      rank = envInt(env, 'RANK');
    r = { host: m[1] ?? m[2], port: Number(m[3]), process: rank, processes };
  } else if (opt !== null && typeof opt === 'object') {
    for (const k of Object.keys(opt))
      if (!RENDEZVOUS_KEYS.has(k)) fail('E_ARG', `init: unknown rendezvous option '${k}'`);
    r = opt;
  } else fail('E_ARG', `init: rendezvous must be 'host:port', an object or false, got ${describeValue(opt)}`);
  const host = r.host ?? '127.0.0.1';
  if (typeof host !== 'string' || host === '')
    fail('E_ARG', `init: rendezvous.host must be a host name, got ${describeValue(host)}`);
  const port = r.port ?? 29500;
  if (!Number.isInteger(port) || port < 1 || port > 65535)
    fail('E_ARG', `init: rendezvous.port must be an integer in [1, 65535], got ${describeValue(port)}`);
  const processes = r.processes;
  if (!Number.isInteger(processes) || processes! < 1 || processes! > 1024)
    fail(
      'E_ARG',
      `init: rendezvous.processes must be an integer in [1, 1024], got ${describeValue(processes)}`,
    );
  const proc = r.process;
  if (!Number.isInteger(proc) || proc! < 0 || proc! >= processes!)
    fail(
      'E_ARG',
      `init: rendezvous.process must be an integer in [0, ${processes}), got ${describeValue(proc)}`,
    );
  const timeoutMs = r.timeoutMs ?? 120_000;
  if (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > 2 ** 31 - 1)
    fail(
      'E_ARG',
      `init: rendezvous.timeoutMs must be a positive integer number of milliseconds, got ${describeValue(timeoutMs)}`,
    );
  return { host, port, process: proc!, processes: processes!, timeoutMs };
}

export interface JoinHooks {
  ranks: number;
  backend: 'cpu' | 'cuda';
  /** Opens this process's CPU mailbox for the runtime `scope` and returns its port (cpu). */
  listen?: (scope: string) => number;
  /** Process 0's value for every process (the NCCL unique id). */
  share?: () => string;
}

/**
 * Joins the runtime: resolves once every process has arrived, or rejects with E_RENDEZVOUS
 * naming the store's address and the process that did not come within the timeout.
 */
export async function join(r: ResolvedRendezvous, hooks: JoinHooks): Promise<Joined> {
  const where = formatAddress(r.host, r.port);
  const deadline = Date.now() + r.timeoutMs;
  const left = () => Math.max(1, deadline - Date.now());
  const server = r.process === 0 ? await StoreServer.listen(r.host, r.port) : undefined;
  let store: StoreClient | undefined;
  try {
    store = await StoreClient.connect(r.host, r.port, left());
    const s = store;
    const absent = (p: number, what: string) => () =>
      `rendezvous at ${where}: process ${p} of ${r.processes} did not ${what} within ${r.timeoutMs} ms`;
    let scope: string;
    if (r.process === 0) {
      scope = `mp${randomBytes(6).toString('hex')}`;
      await s.set('scope', scope, left());
    } else scope = await s.get('scope', left(), absent(0, 'host the store'));
    const me: ProcessEntry = {
      ranks: hooks.ranks,
      backend: hooks.backend,
      host: s.localAddress,
      port: hooks.listen ? hooks.listen(scope) : 0,
      name: `${os.hostname()} pid ${process.pid}`,
    };
    await s.set(`proc/${r.process}`, JSON.stringify(me), left());
    const procs = await Promise.all(
      Array.from({ length: r.processes }, async (_, p) =>
        p === r.process
          ? me
          : (JSON.parse(await s.get(`proc/${p}`, left(), absent(p, 'arrive'))) as ProcessEntry),
      ),
    );
    for (const [p, e] of procs.entries())
      if (e.backend !== hooks.backend)
        fail(
          'E_RENDEZVOUS',
          `rendezvous at ${where}: process ${p} (${e.name}) runs backend ${e.backend}, process ${r.process} runs ${hooks.backend}; every process must use the same backend`,
        );
    const firstRanks: number[] = [];
    let world = 0;
    for (const e of procs) {
      firstRanks.push(world);
      world += e.ranks;
    }
    let shared = '';
    if (hooks.share) {
      if (r.process === 0) await s.set('shared', (shared = hooks.share()), left());
      else shared = await s.get('shared', left(), absent(0, 'hand out its communicator id'));
    }
    return { scope, self: r.process, procs, firstRanks, world, shared, store: s, server };
  } catch (e) {
    store?.close();
    server?.close();
    throw e instanceof RingFlashAttnError
      ? e
      : new RingFlashAttnError('E_RENDEZVOUS', `rendezvous at ${where}: ${String(e)}`);
  }
}

/** Every process sets `key/<its index>` and waits for the others' (E_RENDEZVOUS naming the first missing one). */
export async function barrier(j: Joined, r: ResolvedRendezvous, key: string, what: string): Promise<void> {
  const where = formatAddress(r.host, r.port);
  await j.store.set(`${key}/${j.self}`, '1', r.timeoutMs);
  await Promise.all(
    j.procs.map((e, p) =>
      p === j.self
        ? undefined
        : j.store.get(
            `${key}/${p}`,
            r.timeoutMs,
            () => `rendezvous at ${where}: process ${p} (${e.name}) did not ${what} within ${r.timeoutMs} ms`,
          ),
    ),
  );
}

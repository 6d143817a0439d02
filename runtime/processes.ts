// A runtime's link to its other processes, once the rendezvous (runtime/rendezvous.ts) has
// numbered the ranks: the CPU mailbox connections or the NCCL id, the store kept open for
// failures every process must hear of, and driver mode across processes (process 0 drives with
// rt.call, the others run its calls in rt.serve()).
import { RELAY_RANK, type RelayTask, type ServedTask } from './drive_tasks.js';
import { cudaNative } from './cuda_native.js';
import { RingFlashAttnError, asRingError, fail } from './errors.js';
import { native } from './native.js';
import { decodeSkeleton, encodeSkeleton, splitPayloads } from './payloads.js';
import { barrier, join, type Joined, type ResolvedRendezvous } from './rendezvous.js';

/**
 * Runs `exportName` of `moduleUrl` on this process's ranks `ranks` (in that order) and resolves to
 * their results within the call deadline `timeoutMs`; `name` is the call's export as its errors name it.
 */
export type RunLocal = (
  moduleUrl: string,
  exportName: string,
  args: readonly unknown[],
  ranks: readonly number[],
  timeoutMs: number,
  name: string,
) => Promise<unknown[]>;

export interface JoinOptions {
  ranks: number;
  backend: 'cpu' | 'cuda';
  /** world and rank0 as init was given them, checked against what the processes run. */
  expect?: { world?: number; rank0?: number };
  /** Aborts this runtime's communicators (scope: the runtime id every process uses). */
  abort: (scope: string, why: string) => void;
  /** How this process's ranks read in messages ("ranks 2, 3"). */
  describe: (ranks: number[]) => string;
}

/**
 * A driver-mode task for another process, and its answer: the store carries both, the tensors
 * (each typed array of the ranks' arguments and results) travel over the communicator
 * (drive_tasks.ts), so `args` holds each rank's argument with placeholders in their place.
 */
interface DriveTask {
  stop?: boolean;
  moduleUrl?: string;
  exportName?: string;
  timeoutMs?: number;
  ranks?: number[];
  args?: unknown[];
}
interface DriveReply {
  error?: { code: string; message: string; rank?: number };
}

const DRIVE_TASKS = new URL('./drive_tasks.js', import.meta.url).href;
const encode = (x: unknown) => Buffer.from(encodeSkeleton(x)).toString('base64');
const decode = (s: string) => decodeSkeleton(Buffer.from(s, 'base64'));

/** This package's dist/ folder: a module inside it travels by its path in the package, since other machines may install it elsewhere. */
const PACKAGE_DIST = new URL('../', import.meta.url).href;
const portableUrl = (url: string) =>
  url.startsWith(PACKAGE_DIST) ? `package:${url.slice(PACKAGE_DIST.length)}` : url;
const localUrl = (url: string) =>
  url.startsWith('package:') ? new URL(url.slice('package:'.length), PACKAGE_DIST).href : url;

export class Processes {
  /** Why the runtime can run no more calls: a process is gone, or a GPU failure every process shares. */
  broken: string | undefined;
  /** Driver-mode calls process 0 has handed out (every process numbers them alike). */
  private drives = 0;
  /** Waits on other processes' driver-mode results, failed when the runtime breaks. */
  private readonly onBroken = new Set<(why: string) => void>();
  private closed = false;

  private constructor(
    readonly joined: Joined,
    private readonly backend: 'cpu' | 'cuda',
    private readonly timeoutMs: number,
    private readonly abort: (scope: string, why: string) => void,
  ) {}

  get self(): number {
    return this.joined.self;
  }
  get count(): number {
    return this.joined.procs.length;
  }
  get world(): number {
    return this.joined.world;
  }
  get scope(): string {
    return this.joined.scope;
  }
  /** Global rank of this process's first rank. */
  get rank0(): number {
    return this.joined.firstRanks[this.joined.self]!;
  }

  /**
   * Joins the other processes: the rendezvous, the checks of init's world and rank0, then the
   * CPU mailbox connections (cpu) or the world NCCL id (cuda), and a barrier once every process
   * is connected. E_RENDEZVOUS naming the store's address when a process does not come.
   */
  static async join(r: ResolvedRendezvous, o: JoinOptions): Promise<Processes> {
    const cpu = native().cpu;
    let listening: string | undefined;
    const j = await join(r, {
      ranks: o.ranks,
      backend: o.backend,
      listen:
        o.backend === 'cpu'
          ? (scope) => {
              listening = scope;
              return cpu.netListen(scope, 0);
            }
          : undefined,
      share:
        o.backend === 'cuda' ? () => Buffer.from(cudaNative().ncclUniqueId()).toString('base64') : undefined,
    });
    try {
      const rank0 = j.firstRanks[j.self]!;
      const mismatch =
        o.expect?.world !== undefined && o.expect.world !== j.world
          ? `init asked for world ${o.expect.world}, the processes run ${j.world} ranks`
          : o.expect?.rank0 !== undefined && o.expect.rank0 !== rank0
            ? `init asked for rank0 ${o.expect.rank0}, the processes before this one run ${rank0} ranks`
            : undefined;
      if (mismatch)
        fail(
          'E_RENDEZVOUS',
          `rendezvous at ${j.store.address}: ${mismatch} (${j.procs.map((p, i) => `process ${i}: ${p.ranks}`).join(', ')})`,
        );
      const ranks = Array.from({ length: o.ranks }, (_, i) => rank0 + i);
      await j.store.hello(`process ${j.self} (${o.describe(ranks)}, ${j.procs[j.self]!.name})`, r.timeoutMs);
      if (o.backend === 'cpu') {
        cpu.netConnect({
          scope: j.scope,
          self: j.self,
          timeout_ms: r.timeoutMs,
          procs: j.procs.map((p, i) => ({
            host: p.host,
            port: p.port,
            first_rank: j.firstRanks[i]!,
            ranks: p.ranks,
            name: p.name,
          })),
        });
        while (!cpu.netPoll(j.scope)) await new Promise((done) => setTimeout(done, 5));
      } else
        cudaNative().ncclRegisterWorldId(j.scope, j.world, new Uint8Array(Buffer.from(j.shared, 'base64')));
      await barrier(j, r, 'ready', 'connect to the others');
    } catch (e) {
      if (listening) cpu.netClose(listening);
      j.store.close();
      j.server?.close();
      throw e;
    }
    const p = new Processes(j, o.backend, r.timeoutMs, o.abort);
    p.watchFailures();
    return p;
  }

  /**
   * A process that dies, or a failure the other processes must share (NCCL communicators spanning
   * processes cannot be remade), reaches every process through the store's key `failed`; so does
   * the loss of the store itself (process 0 died). Their calls in flight abort and later calls fail.
   */
  private watchFailures(): void {
    const store = this.joined.store;
    store
      .get('failed', 0, () => '')
      .then(
        (why) => this.fail(why),
        (e: Error) =>
          store.closedInOrder
            ? this.fail('process 0 closed its runtime', false)
            : this.fail(
                `the store of process 0 at ${store.address} is gone (${e.message}): process 0 exited or was killed`,
              ),
      );
  }

  /**
   * Later calls fail with `why`; with `abort`, so does the call in flight (a process that closed
   * its runtime in order has finished every call, and this one may still be finishing the last).
   */
  fail(why: string, abort = true): void {
    if (this.closed || this.broken) return;
    this.broken = why;
    for (const stop of this.onBroken) stop(why);
    if (abort) this.abort(this.scope, why);
  }

  /** A call failed here on GPUs: NCCL cannot remake the communicator, so every process must stop. */
  shareFailure(reason: string): void {
    if (this.backend !== 'cuda' || this.broken) return;
    this.broken = reason;
    const j = this.joined;
    j.store
      .set('failed', `process ${j.self} (${j.procs[j.self]!.name}): ${reason}`, this.timeoutMs)
      .catch(() => undefined);
  }

  /** The error of a call after the runtime broke. */
  brokenError(): RingFlashAttnError {
    return new RingFlashAttnError(
      'E_WORKER',
      `this runtime spans ${this.count} processes and can run no more calls: ${this.broken}`,
    );
  }

  /** Every process numbers its calls alike; the CPU mailbox keeps each call's messages apart. */
  beginCall(call: number): void {
    if (this.backend === 'cpu') native().cpu.netBeginCall(this.scope, call);
  }

  /**
   * Driver mode, on process 0: every other process gets its ranks' tasks through the store (each
   * one, even one with no rank in the call, so that every process numbers its calls alike), with
   * each typed array of their arguments replaced by a placeholder; this process's first rank
   * sends them the typed arrays over the communicator and takes their results back the same way
   * (drive_tasks.ts), while the store carries only whether each process's ranks succeeded.
   * Resolves to the results in the order of `ranks`.
   */
  async drive(
    moduleUrl: string,
    exportName: string,
    args: readonly unknown[],
    ranks: readonly number[],
    timeoutMs: number,
    runLocal: RunLocal,
  ): Promise<unknown[]> {
    if (this.broken) throw this.brokenError();
    const j = this.joined;
    const n = ++this.drives;
    const processOf = (rank: number) => j.firstRanks.filter((first) => first <= rank).length - 1;
    const mine = (q: number) => ranks.map((r, i) => [r, i] as const).filter(([r]) => processOf(r) === q);
    const others = j.procs.map((_, q) => q).filter((q) => q !== j.self);
    const remote = ranks.map((r, i) => [r, i] as const).filter(([r]) => processOf(r) !== j.self);
    const split = new Map(remote.map(([r, i]) => [r, splitPayloads(args[i])]));
    const url = portableUrl(moduleUrl);
    await Promise.all(
      others.map((q) => {
        const task: DriveTask = {
          moduleUrl: url,
          exportName,
          timeoutMs,
          ranks: mine(q).map(([r]) => r),
          args: mine(q).map(([r]) => split.get(r)!.skeleton),
        };
        return j.store.set(`drive/${q}/${n}`, encode(task), this.timeoutMs);
      }),
    );
    let stop: ((why: string) => void) | undefined;
    const broken = new Promise<never>((_, reject) => {
      stop = (why) =>
        reject(new RingFlashAttnError('E_WORKER', `driver mode across processes stopped: ${why}`));
    });
    broken.catch(() => undefined);
    this.onBroken.add(stop!);
    try {
      // The relay runs in the call even where the call has none of its ranks.
      const local: (readonly [number, number])[] = mine(j.self);
      if (remote.length > 0 && !local.some(([r]) => r === RELAY_RANK)) local.unshift([RELAY_RANK, -1]);
      const relayed = (r: number) => (r === RELAY_RANK ? remote : []);
      const tasks: RelayTask[] = local.map(([r, i]) => ({
        own: i < 0 ? undefined : { moduleUrl, exportName, arg: args[i] },
        outgoing: relayed(r).map(([to]) => ({ rank: to, payloads: split.get(to)!.payloads })),
        incoming: relayed(r).map(([from]) => from),
      }));
      const relayOnly = local.every(([, i]) => i < 0);
      let localDone = false;
      const here = runLocal(
        DRIVE_TASKS,
        'relay',
        tasks,
        local.map(([r]) => r),
        timeoutMs,
        exportName,
      ).finally(() => (localDone = true));
      const [ours, ...there] = await Promise.allSettled([
        here,
        ...others.map((q) =>
          Promise.race([j.store.take(`driven/${q}/${n}`, 0, () => ''), broken]).then((raw) => {
            const reply = decode(raw) as DriveReply;
            // A process whose ranks failed before they could abort this one's (its call never began).
            if (reply.error && !localDone)
              this.abort(this.scope, `process ${q} (${j.procs[q]!.name}): ${reply.error.message}`);
            return { q, reply };
          }),
        ),
      ]);
      const replyError = ({ q, reply }: { q: number; reply: DriveReply }) =>
        new RingFlashAttnError(
          asRingError(reply.error).code,
          `process ${q} (${j.procs[q]!.name}): ${reply.error!.message}`,
          { rank: reply.error!.rank },
        );
      const failed = there.find((t) => t.status === 'fulfilled' && t.value.reply.error);
      // A relay with no part of its own failed because a served rank did: that rank's error says why.
      if (ours!.status === 'rejected')
        throw failed?.status === 'fulfilled' && relayOnly ? replyError(failed.value) : ours!.reason;
      const results = ours!.value as { value: unknown; remote: unknown[] }[];
      const out: unknown[] = new Array(ranks.length);
      local.forEach(([r, i], k) => {
        if (i >= 0) out[i] = results[k]!.value;
        if (r === RELAY_RANK) remote.forEach(([, at], m) => (out[at] = results[k]!.remote[m]));
      });
      for (const t of there) {
        if (t.status === 'rejected') throw t.reason;
        if (t.value.reply.error) throw replyError(t.value);
      }
      return out;
    } finally {
      this.onBroken.delete(stop!);
    }
  }

  /**
   * On every process but rank 0's: runs process 0's driver-mode calls on this process's ranks
   * until process 0 closes its runtime or this one closes; E_WORKER when process 0 is gone.
   */
  async serve(run: RunLocal): Promise<void> {
    const j = this.joined;
    if (j.self === 0) fail('E_ARG', 'rt.serve(): process 0 drives (rt.call); the other processes serve');
    const gone = (e: unknown) =>
      new RingFlashAttnError(
        'E_WORKER',
        `rt.serve(): the store of process 0 is gone (${(e as Error).message}): process 0 exited or was killed`,
      );
    j.store.keepAlive(true);
    try {
      for (let n = 1; ; n++) {
        let raw: string;
        try {
          raw = await j.store.take(`drive/${j.self}/${n}`, 0, () => '');
        } catch (e) {
          if (this.closed || j.store.closedInOrder) return;
          throw gone(e);
        }
        const task = decode(raw) as DriveTask;
        if (task.stop) return;
        let reply: DriveReply = {};
        try {
          const served: ServedTask[] = task.args!.map((skeleton) => ({
            moduleUrl: localUrl(task.moduleUrl!),
            exportName: task.exportName!,
            skeleton,
          }));
          await run(DRIVE_TASKS, 'served', served, task.ranks!, task.timeoutMs!, task.exportName!);
        } catch (e) {
          const err = asRingError(e);
          reply = { error: { code: err.code, message: err.message, rank: err.rank } };
        }
        // The store goes with process 0: a process 0 that died mid-call is E_WORKER, as in the wait above.
        try {
          await j.store.set(`driven/${j.self}/${n}`, encode(reply), this.timeoutMs);
        } catch (e) {
          if (this.closed || j.store.closedInOrder) return;
          throw gone(e);
        }
      }
    } finally {
      j.store.keepAlive(false);
    }
  }

  /** Ends the other processes' serve() (process 0), closes the connections and the store. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const j = this.joined;
    if (j.self === 0)
      await Promise.all(
        j.procs.map((_, q) =>
          q === 0
            ? undefined
            : j.store
                .set(`drive/${q}/${this.drives + 1}`, encode({ stop: true }), this.timeoutMs)
                .catch(() => undefined),
        ),
      );
    if (this.backend === 'cpu') native().cpu.netClose(this.scope);
    await j.store.bye(this.timeoutMs).catch(() => undefined);
    j.store.close();
    j.server?.close();
  }
}

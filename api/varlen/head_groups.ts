// llama3's collectives over groups of `stride` KV heads: K/V are all-gathered one head group at a
// time into double buffers (the next group's gather is in flight while the current group is
// computed), and the fp32 dK/dV of each group are reduce-scattered back to the ranks that own
// those keys, also double-buffered. A head slice of a (1, s, h_k, d) tensor is rows of
// stride·d elements (contiguous when it holds every head of a contiguous tensor): the copy
// engines gather it in place, NCCL through a contiguous copy (Comm.sendable).
import type { Backend } from '../../runtime/backend.js';
import type { Group, Pending } from '../../runtime/comm.js';
import type { DeviceTensor } from '../../runtime/tensor.js';
import { disposeAll, type KvPair } from '../ring/kv_buffer.js';

const both = (a: Pending, b: Pending): Pending => ({
  wait: () => {
    a.wait();
    b.wait();
  },
});

/** All-gathers K/V of every head group in turn: next() returns group i's (1, world·s, stride, d) K and V. */
export class HeadGroupGather {
  readonly groups: number;
  private readonly recv: KvPair[];
  /** Contiguous send copies, when the comm cannot send a head group as it lies. */
  private readonly send: KvPair[] | null;
  private pending: Pending;
  private index = 0;

  constructor(
    private readonly backend: Backend,
    private readonly group: Group,
    private readonly k: DeviceTensor,
    private readonly v: DeviceTensor,
    private readonly stride: number,
  ) {
    const [, s, hk, d] = k.shape as [number, number, number, number];
    this.groups = hk / stride;
    const pair = (rows: number) => ({
      k: backend.empty([1, rows, stride, d], k.dtype),
      v: backend.empty([1, rows, stride, d], k.dtype),
    });
    this.recv = [pair(group.size * s), pair(group.size * s)];
    const comm = backend.comm(group),
      first = this.slice(0);
    this.send = comm.sendable(first.k) && comm.sendable(first.v) ? null : [pair(s), pair(s)];
    this.pending = this.issue(0);
  }

  /** Head group i of this rank's K/V, as views. */
  private slice(i: number): KvPair {
    return {
      k: this.k.narrow(2, i * this.stride, this.stride),
      v: this.v.narrow(2, i * this.stride, this.stride),
    };
  }

  private issue(i: number): Pending {
    let src = this.slice(i);
    if (this.send) {
      const copy = this.send[i % 2]!;
      this.backend.copy(copy.k, src.k);
      this.backend.copy(copy.v, src.v);
      src = copy;
    }
    const comm = this.backend.comm(this.group),
      dst = this.recv[i % 2]!;
    return both(comm.allGather(src.k, dst.k), comm.allGather(src.v, dst.v));
  }

  /** Waits for the next head group's K/V and issues the gather of the group after it. */
  next(): KvPair {
    const i = this.index++;
    this.pending.wait();
    if (i + 1 < this.groups) this.pending = this.issue(i + 1);
    return this.recv[i % 2]!;
  }

  dispose(): void {
    for (const p of [...this.recv, ...(this.send ?? [])]) disposeAll(p.k, p.v);
  }
}

/** Accumulates each head group's dK/dV over the gathered keys and reduce-scatters them into (1, s, h_k, d) fp32 grads. */
export class HeadGroupReduce {
  private readonly dk: DeviceTensor;
  private readonly dv: DeviceTensor;
  private readonly acc: KvPair[];
  /** Contiguous receive buffers, when a head group is not the whole tensor. */
  private readonly recv: KvPair[] | null;
  private readonly inFlight: ({ group: number; pending: Pending } | null)[] = [null, null];

  constructor(
    private readonly backend: Backend,
    private readonly group: Group,
    k: DeviceTensor,
    private readonly stride: number,
  ) {
    const [, s, hk, d] = k.shape as [number, number, number, number];
    this.dk = backend.empty([1, s, hk, d], 'float32');
    this.dv = backend.empty([1, s, hk, d], 'float32');
    const pair = (rows: number) => ({
      k: backend.empty([1, rows, stride, d], 'float32'),
      v: backend.empty([1, rows, stride, d], 'float32'),
    });
    this.acc = [pair(group.size * s), pair(group.size * s)];
    this.recv = stride === hk ? null : [pair(s), pair(s)];
  }

  /** Zeroed dK/dV accumulators for head group i (its slot's previous scatter completes first). */
  acquire(i: number): KvPair {
    this.complete(i % 2);
    const a = this.acc[i % 2]!;
    this.backend.fill(a.k, 0);
    this.backend.fill(a.v, 0);
    return a;
  }

  /** Issues the reduce-scatter of head group i's accumulators. */
  scatter(i: number): void {
    const slot = i % 2,
      comm = this.backend.comm(this.group),
      a = this.acc[slot]!;
    const dst: KvPair = this.recv ? this.recv[slot]! : { k: this.dk, v: this.dv };
    this.inFlight[slot] = {
      group: i,
      pending: both(comm.reduceScatter(a.k, dst.k), comm.reduceScatter(a.v, dst.v)),
    };
  }

  private complete(slot: number): void {
    const f = this.inFlight[slot];
    if (!f) return;
    this.inFlight[slot] = null;
    f.pending.wait();
    if (!this.recv) return;
    this.backend.copy(this.dk.narrow(2, f.group * this.stride, this.stride), this.recv[slot]!.k);
    this.backend.copy(this.dv.narrow(2, f.group * this.stride, this.stride), this.recv[slot]!.v);
  }

  /** Completes every scatter (oldest first) and returns the grads of this rank's keys. */
  finish(): KvPair {
    const order = [0, 1]
      .filter((s) => this.inFlight[s])
      .sort((a, b) => this.inFlight[a]!.group - this.inFlight[b]!.group);
    for (const slot of order) this.complete(slot);
    for (const p of [...this.acc, ...(this.recv ?? [])]) disposeAll(p.k, p.v);
    return { k: this.dk, v: this.dv };
  }
}

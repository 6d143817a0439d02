import { readsInPlace, transferLabel, type Comm, type Group, type P2POp, type Pending } from './comm.js';
import { dtypeBytes } from './dtype.js';
import { fail } from './errors.js';
import * as args from './kernel_args.js';
import type { NativeCpu } from './native.js';
import type { DeviceTensor } from './tensor.js';

/** A contiguous run of host elements, as the mailbox reads and writes them. */
type HostView = { data: Float32Array | Uint16Array; offset: number; strides: number[] };

/**
 * The elements of a tensor to send, contiguous: its own storage when it is contiguous, else a
 * host copy of its rows (the mailbox copies every message on send anyway).
 */
function sendView(t: DeviceTensor): HostView {
  if (t.isContiguous()) return args.flat(t, 'send buffer') as HostView;
  const layout = t.rowLayout();
  if (!layout) fail('E_SHAPE', 'send buffer must be contiguous or strided rows (comm.sendable)');
  const src = t.storage.data as Float32Array | Uint16Array;
  const { rows, width, pitch } = layout;
  const out = new (src.constructor as Float32ArrayConstructor | Uint16ArrayConstructor)(rows * width);
  for (let r = 0; r < rows; r++)
    out.set(src.subarray(t.offset + r * pitch, t.offset + r * pitch + width), r * width);
  return { data: out, offset: 0, strides: [1] };
}

/** A posted receive: NCCL matches receives in the order they were issued, and so do we. */
interface PostedRecv {
  peer: number;
  data: HostView;
  n: number;
  elemBytes: number;
  /** The tensor the sender is expected to send (transferLabel). */
  label: string;
  done: boolean;
}

/**
 * The CPU backend's communicator: buffered mailboxes between worker threads (native/cpu/mailbox).
 * Sends are delivered when issued. Receives are posted when issued and completed in issue
 * order when a `wait()` needs them, so a ring that issues its next transfer before computing
 * matches messages exactly as NCCL would.
 */
export class CpuComm implements Comm {
  private posted: PostedRecv[] = [];

  constructor(
    readonly group: Group,
    private readonly cpu: NativeCpu,
    private readonly timeoutMs: number,
  ) {}

  private global(peer: number): number {
    const g = this.group.ranks[peer];
    if (g === undefined) fail('E_ARG', `peer ${peer} is not in group [${this.group.ranks.join(', ')}]`);
    return g;
  }

  private send(peer: number, t: DeviceTensor, view: HostView = sendView(t)): void {
    this.cpu.mailSend({
      comm: this.group.key,
      src: this.global(this.group.rank),
      dst: this.global(peer),
      data: view,
      n: t.numel,
      elem_bytes: dtypeBytes(t.dtype),
      label: transferLabel(t),
    });
  }

  abandon(): void {
    this.posted = [];
  }

  sendable(t: DeviceTensor): boolean {
    return readsInPlace('mailbox', t);
  }

  private post(peer: number, t: DeviceTensor, label = transferLabel(t)): PostedRecv {
    const r: PostedRecv = {
      peer,
      data: args.flat(t, 'receive buffer') as PostedRecv['data'],
      n: t.numel,
      elemBytes: dtypeBytes(t.dtype),
      label,
      done: false,
    };
    this.posted.push(r);
    return r;
  }

  /** Completes every receive posted up to and including `last`, in issue order. */
  private complete(last: PostedRecv): void {
    if (last.done) return;
    while (this.posted.length > 0) {
      const r = this.posted.shift()!;
      this.cpu.mailRecv({
        comm: this.group.key,
        src: this.global(r.peer),
        dst: this.global(this.group.rank),
        data: r.data,
        n: r.n,
        elem_bytes: r.elemBytes,
        label: r.label,
        timeout_ms: this.timeoutMs,
      });
      r.done = true;
      if (r === last) return;
    }
  }

  private pending(recvs: PostedRecv[]): Pending {
    const last = recvs[recvs.length - 1];
    return {
      wait: () => {
        if (last) this.complete(last);
      },
    };
  }

  sendRecv(sends: readonly P2POp[], recvs: readonly P2POp[]): Pending {
    for (const s of sends) this.send(s.peer, s.tensor);
    return this.pending(recvs.map((r) => this.post(r.peer, r.tensor)));
  }

  allGather(send: DeviceTensor, recv: DeviceTensor): Pending {
    const n = send.numel;
    if (recv.numel !== n * this.group.size || recv.dtype !== send.dtype)
      fail('E_SHAPE', 'allGather: recv must hold size × send elements of the same dtype');
    const slots = recv.reshape([recv.numel]);
    const mine = sendView(send); // gathered once for every peer and for our own slot
    for (let p = 0; p < this.group.size; p++) if (p !== this.group.rank) this.send(p, send, mine);
    const own = slots.narrow(0, this.group.rank * n, n);
    (own.storage.data as Float32Array).set(mine.data.subarray(mine.offset, mine.offset + n), own.offset);
    const posted: PostedRecv[] = [];
    for (let p = 0; p < this.group.size; p++)
      if (p !== this.group.rank) posted.push(this.post(p, slots.narrow(0, p * n, n), transferLabel(send)));
    return this.pending(posted);
  }

  reduceScatter(send: DeviceTensor, recv: DeviceTensor): Pending {
    const n = recv.numel,
      size = this.group.size,
      me = this.group.rank;
    if (send.numel !== n * size || send.dtype !== 'float32' || recv.dtype !== 'float32')
      fail('E_SHAPE', 'reduceScatter: float32 send must hold size × recv elements');
    const flatSend = send.reshape([send.numel]);
    for (let p = 0; p < size; p++) if (p !== me) this.send(p, flatSend.narrow(0, p * n, n));
    const parts = new Float32Array(n * size);
    const partView = (p: number) => ({ data: parts, offset: p * n, strides: [1] });
    const posted: PostedRecv[] = [];
    for (let p = 0; p < size; p++) {
      if (p === me)
        parts.set(
          (send.storage.data as Float32Array).subarray(send.offset + p * n, send.offset + (p + 1) * n),
          p * n,
        );
      else {
        const r: PostedRecv = {
          peer: p,
          data: partView(p),
          n,
          elemBytes: 4,
          label: `(${n}) float32`,
          done: false,
        };
        this.posted.push(r);
        posted.push(r);
      }
    }
    const inner = this.pending(posted);
    return {
      wait: () => {
        inner.wait();
        // Sum in member order on every rank, so the result does not depend on arrival order.
        const out = recv.storage.data as Float32Array;
        for (let i = 0; i < n; i++) {
          let acc = 0;
          for (let p = 0; p < size; p++) acc += parts[p * n + i]!;
          out[recv.offset + i] = acc;
        }
      },
    };
  }
}

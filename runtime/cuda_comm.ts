import {
  readsInPlace,
  transferLabel,
  type Comm,
  type Group,
  type P2POp,
  type Pending,
  type Transport,
} from './comm.js';
import { DTYPE_CODE } from './dtype.js';
import { fail } from './errors.js';
import * as args from './kernel_args.js';
import type { NativeCuda } from './cuda_native.js';
import type { DeviceTensor } from './tensor.js';

/**
 * Communication of one group over NCCL or the copy engines (`transport`). NCCL: a communicator
 * created lazily on first use by every member (they share the NCCL unique id through the addon's
 * process-wide registry). Copy engines: every operation is a set of point-to-point pulls
 * (native/cuda/peer_copy.h), collectives included, so NCCL is never loaded. Each operation is
 * enqueued on the comm stream after the compute stream's queued work and records an event;
 * `wait()` makes the compute stream wait for that event, so transfers overlap the compute
 * issued between them.
 */
export class CudaComm implements Comm {
  constructor(
    readonly group: Group,
    private readonly cuda: NativeCuda,
    private readonly transport: Transport,
  ) {}

  private op(t: DeviceTensor, peer: number) {
    return {
      data: args.flat(t, 'transfer buffer'),
      n: t.numel,
      dtype: DTYPE_CODE[t.dtype],
      peer: this.peer(peer),
      label: transferLabel(t),
    };
  }

  /** A send: over the copy engines strided rows are read in place (one 2-D copy of `rows` rows, `pitch` apart). */
  private sendOp(t: DeviceTensor, peer: number) {
    const layout = this.transport === 'copy-engine' && !t.isContiguous() ? t.rowLayout() : null;
    if (!layout) return this.op(t, peer);
    return {
      data: { data: t.storage.data, offset: t.offset, strides: [layout.pitch] },
      n: t.numel,
      rows: layout.rows,
      dtype: DTYPE_CODE[t.dtype],
      peer: this.peer(peer),
      label: transferLabel(t),
    };
  }

  private peer(peer: number): number {
    if (peer < 0 || peer >= this.group.size)
      fail('E_ARG', `peer ${peer} is not in group [${this.group.ranks.join(', ')}]`);
    return peer;
  }

  sendable(t: DeviceTensor): boolean {
    return readsInPlace(this.transport, t);
  }

  /** Chunk `index` of `n` elements of a contiguous view (a rank's slot of a collective buffer). */
  private chunk(
    view: { data: unknown; offset: number; strides: number[] },
    index: number,
    n: number,
    dtype: number,
    peer: number,
    label = '',
  ) {
    return { data: { ...view, offset: view.offset + index * n }, n, dtype, peer, label };
  }

  /** `after` runs once, on the first wait(), once the compute stream waits for the transfer. */
  private pending(event: number, after?: () => void): Pending {
    let done = false;
    return {
      wait: () => {
        if (done) return;
        done = true;
        this.cuda.waitEvent(event);
        after?.();
      },
    };
  }

  private get id() {
    return { key: this.group.key, nranks: this.group.size, rank: this.group.rank, transport: this.transport };
  }

  private get members(): number[] {
    return Array.from({ length: this.group.size }, (_, j) => j);
  }

  /**
   * The members from this rank round: rank, rank + 1, ..., rank - 1. Pulled in this order, each
   * member's memory is read by one peer at a time, where member order would have every rank read
   * member 0 first (on NVSwitch a GPU's outbound bandwidth is shared by its readers). The
   * reduce-scatter sums in the same order (native copy_engine_reduce_scatter), fixed per rank.
   */
  private get rotatedMembers(): number[] {
    return this.members.map((i) => (this.group.rank + i) % this.group.size);
  }

  sendRecv(sends: readonly P2POp[], recvs: readonly P2POp[]): Pending {
    return this.pending(
      this.cuda.commSendRecv({
        ...this.id,
        sends: sends.map((s) => this.sendOp(s.tensor, s.peer)),
        recvs: recvs.map((r) => this.op(r.tensor, r.peer)),
      }),
    );
  }

  allGather(send: DeviceTensor, recv: DeviceTensor): Pending {
    if (recv.numel !== send.numel * this.group.size || recv.dtype !== send.dtype)
      fail('E_SHAPE', 'allGather: recv must hold size × send elements of the same dtype');
    const n = send.numel,
      dtype = DTYPE_CODE[send.dtype],
      dst = args.flat(recv, 'recv');
    if (this.transport === 'copy-engine')
      // Every member pulls every member's chunk, its own included (a send to itself), in rotated
      // order (rotatedMembers) so that no member's memory is read by all the others at once.
      return this.pending(
        this.cuda.commSendRecv({
          ...this.id,
          sends: this.members.map((j) => this.sendOp(send, j)),
          recvs: this.rotatedMembers.map((j) => this.chunk(dst, j, n, dtype, j, transferLabel(send))),
        }),
      );
    return this.pending(
      this.cuda.commAllGather({ ...this.id, send: args.flat(send, 'send'), recv: dst, n, dtype }),
    );
  }

  reduceScatter(send: DeviceTensor, recv: DeviceTensor): Pending {
    if (send.numel !== recv.numel * this.group.size || send.dtype !== 'float32' || recv.dtype !== 'float32')
      fail('E_SHAPE', 'reduceScatter: float32 send must hold size × recv elements');
    const n = recv.numel,
      dtype = DTYPE_CODE.float32,
      src = args.flat(send, 'send'),
      dst = args.flat(recv, 'recv');
    if (this.transport !== 'copy-engine')
      return this.pending(this.cuda.commReduceScatter({ ...this.id, send: src, recv: dst, n, dtype }));
    // Over the copy engines the addon pulls each member's chunk for us through one slot and sums
    // them into recv on the comm stream, from this rank round (fp32, an order fixed per rank).
    // The slot goes back once the compute stream waits for the sums (the allocator's rule).
    const slot = this.cuda.alloc(n * 4);
    let event: number;
    try {
      event = this.cuda.commReduceScatter({
        ...this.id,
        send: src,
        recv: dst,
        n,
        dtype,
        slot: { data: slot, offset: 0, strides: [1] },
      });
    } catch (e) {
      this.cuda.free(slot);
      throw e;
    }
    return this.pending(event, () => this.cuda.free(slot));
  }
}

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

/** The global ranks this process runs: [rank0, rank0 + localWorld). */
export interface Locality {
  rank0: number;
  localWorld: number;
}

/**
 * Communication of one group, by distance (native/cuda/transport.h): between two ranks of this
 * process over `transport` (the copy engines, or NCCL where the GPUs cannot read each other's
 * memory), between processes over NCCL. The ring order stays the order of global ranks, so in a
 * runtime of several processes only the hops across a process boundary take NCCL; a collective
 * takes NCCL as soon as its group spans processes. NCCL: a communicator created lazily on first
 * use by every member (the unique id comes from the addon's registry, or from process 0 through
 * the rendezvous). Copy engines: point-to-point pulls (native/cuda/peer_copy.h). Each operation
 * is enqueued on the comm stream after the compute stream's queued work and records an event;
 * `wait()` makes the compute stream wait for it, so transfers overlap the compute issued between
 * them.
 */
export class CudaComm implements Comm {
  /** Whether some member runs in another process. */
  private readonly spans: boolean;

  constructor(
    readonly group: Group,
    private readonly cuda: NativeCuda,
    private readonly transport: Transport,
    private readonly locality: Locality = { rank0: 0, localWorld: Infinity },
  ) {
    this.spans = group.ranks.some((r) => !this.isLocal(r));
  }

  private isLocal(globalRank: number): boolean {
    const { rank0, localWorld } = this.locality;
    return globalRank >= rank0 && globalRank < rank0 + localWorld;
  }

  /** The transport to group member `peer`. */
  private via(peer: number): Transport {
    return this.isLocal(this.group.ranks[peer]!) ? this.transport : 'nccl';
  }

  /** The transport of a collective: NCCL once the group spans processes. */
  private get collective(): Transport {
    return this.spans ? 'nccl' : this.transport;
  }

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
  private sendOp(t: DeviceTensor, peer: number, via: Transport = this.via(peer)) {
    const layout = via === 'copy-engine' && !t.isContiguous() ? t.rowLayout() : null;
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
    return readsInPlace(this.spans ? 'nccl' : this.transport, t);
  }

  /** `after` runs once, on the first wait(), once the compute stream waits for the transfers. */
  private pending(events: number[], after?: () => void): Pending {
    let done = false;
    return {
      wait: () => {
        if (done) return;
        done = true;
        for (const e of events) this.cuda.waitEvent(e);
        after?.();
      },
    };
  }

  private id(transport: Transport) {
    return { key: this.group.key, nranks: this.group.size, rank: this.group.rank, transport };
  }

  /**
   * NCCL's share of the operations first: once connected (the runtime's warm-up ring), NCCL only
   * enqueues, while a copy-engine send waits for its reader, so no rank can wait in a copy for a
   * peer that waits in NCCL for it.
   */
  sendRecv(sends: readonly P2POp[], recvs: readonly P2POp[]): Pending {
    const events: number[] = [];
    const kinds: Transport[] = ['nccl', 'copy-engine'];
    for (const kind of kinds) {
      const mine = (ops: readonly P2POp[]) => ops.filter((o) => this.via(o.peer) === kind);
      const [s, r] = [mine(sends), mine(recvs)];
      if (s.length === 0 && r.length === 0) continue;
      events.push(
        this.cuda.commSendRecv({
          ...this.id(kind),
          sends: s.map((o) => this.sendOp(o.tensor, o.peer)),
          recvs: r.map((o) => this.op(o.tensor, o.peer)),
        }),
      );
    }
    return this.pending(events);
  }

  allGather(send: DeviceTensor, recv: DeviceTensor): Pending {
    if (recv.numel !== send.numel * this.group.size || recv.dtype !== send.dtype)
      fail('E_SHAPE', 'allGather: recv must hold size × send elements of the same dtype');
    return this.pending([
      this.cuda.commAllGather({
        ...this.id(this.collective),
        send: this.sendOp(send, this.group.rank, this.collective),
        recv: args.flat(recv, 'recv'),
      }),
    ]);
  }

  reduceScatter(send: DeviceTensor, recv: DeviceTensor): Pending {
    if (send.numel !== recv.numel * this.group.size || send.dtype !== 'float32' || recv.dtype !== 'float32')
      fail('E_SHAPE', 'reduceScatter: float32 send must hold size × recv elements');
    const n = recv.numel,
      dtype = DTYPE_CODE.float32,
      src = args.flat(send, 'send'),
      dst = args.flat(recv, 'recv');
    if (this.collective !== 'copy-engine')
      return this.pending([
        this.cuda.commReduceScatter({ ...this.id(this.collective), send: src, recv: dst, n, dtype }),
      ]);
    // Over the copy engines the addon pulls each member's chunk for us through one slot and sums
    // them into recv on the comm stream, from this rank round (fp32, an order fixed per rank).
    // The slot goes back once the compute stream waits for the sums (the allocator's rule).
    const slot = this.cuda.alloc(n * 4);
    let event: number;
    try {
      event = this.cuda.commReduceScatter({
        ...this.id('copy-engine'),
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
    return this.pending([event], () => this.cuda.free(slot));
  }
}

import type { Comm, Group, P2POp, Pending, Transport } from './comm.js';
import { DTYPE_CODE } from './dtype.js';
import { fail } from './errors.js';
import * as args from './kernel_args.js';
import type { NativeCuda } from './cuda_native.js';
import type { DeviceTensor } from './tensor.js';

/**
 * Communication of one group. Collectives use an NCCL communicator created lazily on first use
 * by every member (they share the NCCL unique id through the addon's process-wide registry);
 * point-to-point transfers use NCCL or the copy engines (`transport`). Each operation is
 * enqueued on the comm stream after the compute stream's queued work and records an event;
 * `wait()` makes the compute stream wait for that event, so transfers overlap the compute
 * issued between them.
 */
export class CudaComm implements Comm {
  constructor(
    readonly group: Group,
    private readonly cuda: NativeCuda,
    private readonly transport: Transport,
    /** Ranks share a GPU: NCCL refuses that, so collectives are unsupported. */
    private readonly sharedDevices: boolean,
  ) {}

  private needNccl(what: string): void {
    if (this.sharedDevices)
      fail('E_UNSUPPORTED', `${what} needs NCCL, which refuses ranks that share a GPU (init devices): give every rank its own GPU`);
  }

  private op(t: DeviceTensor, peer: number) {
    if (peer < 0 || peer >= this.group.size) fail('E_ARG', `peer ${peer} is not in group [${this.group.ranks.join(', ')}]`);
    return { data: args.flat(t, 'transfer buffer'), n: t.numel, dtype: DTYPE_CODE[t.dtype], peer };
  }

  private pending(event: number): Pending {
    let done = false;
    return {
      wait: () => {
        if (done) return;
        done = true;
        this.cuda.waitEvent(event);
      },
    };
  }

  private get id() {
    return { key: this.group.key, nranks: this.group.size, rank: this.group.rank };
  }

  sendRecv(sends: readonly P2POp[], recvs: readonly P2POp[]): Pending {
    return this.pending(this.cuda.commSendRecv({
      ...this.id, transport: this.transport, sends: sends.map((s) => this.op(s.tensor, s.peer)), recvs: recvs.map((r) => this.op(r.tensor, r.peer)),
    }));
  }

  allGather(send: DeviceTensor, recv: DeviceTensor): Pending {
    this.needNccl('all-gather (llama3 family)');
    if (recv.numel !== send.numel * this.group.size || recv.dtype !== send.dtype) fail('E_SHAPE', 'allGather: recv must hold size × send elements of the same dtype');
    return this.pending(this.cuda.commAllGather({
      ...this.id, send: args.flat(send, 'send'), recv: args.flat(recv, 'recv'), n: send.numel, dtype: DTYPE_CODE[send.dtype],
    }));
  }

  reduceScatter(send: DeviceTensor, recv: DeviceTensor): Pending {
    this.needNccl('reduce-scatter (llama3 family)');
    if (send.numel !== recv.numel * this.group.size || send.dtype !== 'float32' || recv.dtype !== 'float32')
      fail('E_SHAPE', 'reduceScatter: float32 send must hold size × recv elements');
    return this.pending(this.cuda.commReduceScatter({
      ...this.id, send: args.flat(send, 'send'), recv: args.flat(recv, 'recv'), n: recv.numel, dtype: DTYPE_CODE.float32,
    }));
  }
}

// Tasks the runtime itself runs on every rank.
import { ringPeer } from './comm.js';
import type { RankContext } from './context.js';

/**
 * Creates the world communicator while every rank is known to be present (NCCL's init waits
 * for all members; the copy engines need no set-up), and exercises it once: later failures then
 * only abort live communicators.
 * A ring exchange then sets up the point-to-point path (NCCL connections or peer access), so a
 * first timed call does not pay for it.
 */
export function warmup(ctx: RankContext): void {
  if (ctx.world < 2) return;
  const be = ctx.backend;
  const comm = be.comm(ctx.group);
  const one = be.zeros([1], 'float32');
  const all = be.empty([ctx.world], 'float32');
  comm.allGather(one, all).wait();
  comm
    .sendRecv(
      [{ peer: ringPeer(ctx.rank, 1, ctx.world), tensor: one }],
      [{ peer: ringPeer(ctx.rank, -1, ctx.world), tensor: all.narrow(0, 0, 1) }],
    )
    .wait();
  be.sync();
  one.dispose();
  all.dispose();
}

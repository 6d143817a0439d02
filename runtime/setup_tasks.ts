// Tasks the runtime itself runs on every rank.
import type { RankContext } from './context.js';

/**
 * Creates the world communicator while every rank is known to be present (NCCL's init waits
 * for all members), and exercises it once: later failures then only abort live communicators.
 */
export function warmup(ctx: RankContext): void {
  if (ctx.world < 2) return;
  const be = ctx.backend;
  const one = be.zeros([1], 'float32');
  const all = be.empty([ctx.world], 'float32');
  be.comm(ctx.group).allGather(one, all).wait();
  be.sync();
  one.dispose();
  all.dispose();
}

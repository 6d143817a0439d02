// One rank of a ring, alone on one device: a group of `world` members in which only `rank` is
// real, and a communicator whose transfers move nothing. A ring function called with this group
// runs exactly the kernels, merges and host work of that rank, so the time it takes is the
// ring's cost without its transfers: the ceiling the real ring can reach on this device, and
// a way to tune the per-step overhead on a machine with one GPU (`npm run bench -- --solo 4`).
// Received buffers keep whatever the allocator gave them; kernels run at the same speed on any
// finite or non-finite data, and nothing here is checked for values.
// Collectives (llama3's all-gather and reduce-scatter) are skipped the same way: the output
// keeps what it held.
// With `loopback`, every transfer is a real copy on this device (each send into the receive of
// the same position; an all-gather copies the rank's block into every slot, a reduce-scatter its
// own slice). The CUDA driver runs same-device copies as SM kernels (measured: they wait
// for free SMs), so the solo table then shows what SM-based transfers such as NCCL's cost the
// kernels; a copy-engine ring between GPUs moves its blocks on the copy engines instead.
import { DONE, type Comm, type Group } from '../runtime/comm.js';
import type { RankContext } from '../runtime/context.js';
import { CudaComm } from '../runtime/cuda_comm.js';
import { cudaNative } from '../runtime/cuda_native.js';
import type { DeviceTensor } from '../runtime/tensor.js';

export interface SoloRank {
  world: number;
  rank: number;
  loopback?: boolean;
}

/** The group of `solo` with this context's rank at position `solo.rank` (other members are placeholders). */
export function soloGroup(ctx: RankContext, solo: SoloRank): Group {
  const ranks = Array.from({ length: solo.world }, (_, i) => (i === solo.rank ? ctx.rank : -1 - i));
  return { ranks, rank: solo.rank, size: solo.world, key: `solo/${solo.world}/${solo.rank}` };
}

/**
 * The communicator of the solo group: transfers skipped, or (loopback) same-device copies, which
 * the CUDA driver runs as SM kernels (a peer copy between GPUs would run on the copy engines).
 * `real` is the communicator the rank would use (its world group's).
 */
export function soloComm(group: Group, loopback: boolean, real: Comm): Comm {
  // What the rank can send without a packing copy is what `real`, the rank's own communicator
  // over the runtime's transport, can.
  if (!loopback)
    return {
      group,
      sendable: (t) => real.sendable(t),
      sendRecv: () => DONE,
      allGather: () => DONE,
      reduceScatter: () => DONE,
    };
  // A one-member copy-engine communicator: each receive is fed by the send of the same position,
  // or by itself where the rank receives more than it sends (ring v1's last rank only receives);
  // sends without a receive are dropped (a peer's copy engine would read them).
  const self: Group = { ranks: [group.ranks[group.rank]!], rank: 0, size: 1, key: `${group.key}/loopback` };
  const loop = new CudaComm(self, cudaNative(), 'copy-engine');
  const copy = (from: DeviceTensor[], to: DeviceTensor[]) =>
    loop.sendRecv(
      from.map((tensor) => ({ peer: 0, tensor })),
      to.map((tensor) => ({ peer: 0, tensor })),
    );
  // Slot i of a rank-major buffer holding `size` blocks.
  const slots = (t: DeviceTensor) =>
    Array.from({ length: group.size }, (_, i) => t.reshape([group.size, t.numel / group.size]).select(0, i));
  return {
    group,
    sendable: (t) => loop.sendable(t),
    sendRecv: (sends, recvs) =>
      copy(
        recvs.map((r, i) => sends[i]?.tensor ?? r.tensor),
        recvs.map((r) => r.tensor),
      ),
    allGather: (send, recv) => {
      const into = slots(recv);
      return copy(
        into.map(() => send),
        into,
      );
    },
    reduceScatter: (send, recv) => copy([slots(send)[group.rank]!], [recv]),
  };
}

/**
 * Runs `body` as solo rank `solo` of its ring: with the solo group, whose communicator stands in
 * for the rank's own until `body` returns; without `solo`, with no group (the rank's world).
 * `subGroups` names the groups a call makes from the solo group (the Ulysses families' grid):
 * their communicators are solo ones too.
 */
export function asSoloRank<T>(
  ctx: RankContext,
  solo: SoloRank | undefined,
  body: (group: Group | null) => T,
  subGroups?: (group: Group) => Group[],
): T {
  if (!solo) return body(null);
  const group = soloGroup(ctx, solo);
  const real = ctx.backend.comm(ctx.group);
  const restores = [group, ...(subGroups?.(group) ?? [])].map((g) =>
    ctx.backend.substituteComm(soloComm(g, solo.loopback ?? false, real)),
  );
  try {
    return body(group);
  } finally {
    for (const restore of restores.reverse()) restore();
  }
}

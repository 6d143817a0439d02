// One rank of a ring, alone on one device: a group of `world` members in which only `rank` is
// real, and a communicator whose transfers move nothing. A ring function called with this group
// runs exactly the kernels, merges and host work of that rank, so the time it takes is the
// ring's cost without its transfers: the ceiling the real ring can reach on this device, and
// a way to tune the per-step overhead on a machine with one GPU (`npm run bench -- --solo 4`).
// Received buffers keep whatever the allocator gave them; kernels run at the same speed on any
// finite or non-finite data, and nothing here is checked for values.
import type { Backend } from '../runtime/backend.js';
import { DONE, type Comm, type Group } from '../runtime/comm.js';
import type { RankContext } from '../runtime/context.js';

export interface SoloRank {
  world: number;
  rank: number;
}

/** The group of `solo` with this context's rank at position `solo.rank` (other members are placeholders). */
export function soloGroup(ctx: RankContext, solo: SoloRank): Group {
  const ranks = Array.from({ length: solo.world }, (_, i) => (i === solo.rank ? ctx.rank : -1 - i));
  return { ranks, rank: solo.rank, size: solo.world, key: `solo/${solo.world}/${solo.rank}` };
}

function soloComm(group: Group): Comm {
  const unsupported = () => { throw new Error('solo ring: only point-to-point rings can run alone (collectives need their peers)'); };
  return { group, sendRecv: () => DONE, allGather: unsupported, reduceScatter: unsupported };
}

/** Runs `body` with `backend.comm` answering the solo group with the empty communicator. */
export function withSoloComm<T>(backend: Backend, group: Group, body: () => T): T {
  const own = Object.getOwnPropertyDescriptor(backend, 'comm');
  const real = backend.comm.bind(backend);
  backend.comm = (g: Group) => (g.key === group.key ? soloComm(g) : real(g));
  try {
    return body();
  } finally {
    if (own) Object.defineProperty(backend, 'comm', own);
    else delete (backend as { comm?: unknown }).comm;
  }
}

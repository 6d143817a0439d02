// The Ulysses all-to-all: member j of a group of U receives, from every member, that member's
// j-th slice along one axis and places it at the sender's position along another. Over the
// sequence pieces of a group it trades a sequence shard with every head for the whole group's
// sequence with one U-th of the heads (seqToHeads), and back (headsToSeq). One Comm.sendRecv
// with one send and one receive per peer: NCCL groups them, the copy engines and the CPU
// mailbox run them as point-to-point transfers. The rank's own slice is copied locally while
// the transfers are in flight.
import type { Backend } from '../../runtime/backend.js';
import type { Group, P2POp } from '../../runtime/comm.js';
import type { DeviceTensor } from '../../runtime/tensor.js';
import { disposeAll } from '../ring/kv_buffer.js';

/**
 * x (4-d) cut into U equal slices along `split`; returns a new contiguous tensor whose `cat`
 * axis holds the U members' slices for this rank, in group order.
 */
export function allToAll(
  backend: Backend,
  group: Group,
  x: DeviceTensor,
  split: number,
  cat: number,
): DeviceTensor {
  const U = group.size;
  const n = x.shape[split]! / U,
    m = x.shape[cat]!;
  if (!Number.isInteger(n))
    throw new Error(`allToAll: axis ${split} (${x.shape[split]}) is not a multiple of ${U}`);
  const shape = [...x.shape];
  shape[split] = n;
  shape[cat] = m * U;
  const out = backend.empty(shape, x.dtype);
  const piece = (j: number) => x.narrow(split, j * n, n);
  const slot = (j: number) => out.narrow(cat, j * m, m);
  const comm = backend.comm(group);
  const peers = Array.from({ length: U }, (_, j) => j).filter((j) => j !== group.rank);
  // A slice the transport cannot read in place (NCCL: not contiguous) goes through a packed
  // copy; a slot it cannot fill in place (any non-contiguous receive) lands in one and is
  // copied into place after the transfer.
  const staged: DeviceTensor[] = [];
  const sends: P2POp[] = peers.map((peer) => {
    const p = piece(peer);
    if (comm.sendable(p)) return { peer, tensor: p };
    const c = backend.contiguous(p);
    staged.push(c);
    return { peer, tensor: c };
  });
  const landing = peers.map((j) => (slot(j).isContiguous() ? null : backend.empty(slot(j).shape, x.dtype)));
  const recvs: P2POp[] = peers.map((peer, i) => ({ peer, tensor: landing[i] ?? slot(peer) }));
  const pending = comm.sendRecv(sends, recvs);
  backend.copy(slot(group.rank), piece(group.rank));
  pending.wait();
  peers.forEach((j, i) => {
    if (landing[i]) backend.copy(slot(j), landing[i]!);
  });
  disposeAll(...staged, ...landing);
  return out;
}

/** (b, s, h, d), this rank's sequence piece with every head → (b, U·s, h/U, d): the group's pieces, this rank's heads. */
export function seqToHeads(backend: Backend, group: Group, x: DeviceTensor): DeviceTensor {
  return allToAll(backend, group, x, 2, 1);
}

/** Inverse of seqToHeads: (b, U·s, h/U, d) → (b, s, h, d). */
export function headsToSeq(backend: Backend, group: Group, x: DeviceTensor): DeviceTensor {
  return allToAll(backend, group, x, 1, 2);
}

/** lse (b, h/U, U·s) of the group's sequence → (b, h, s) of this rank's piece (as a trailing unit axis for the 4-d copies). */
export function lseToSeq(backend: Backend, group: Group, lse: DeviceTensor): DeviceTensor {
  return allToAll(backend, group, lse.unsqueeze(3), 2, 1).select(3, 0);
}

import type { DeviceTensor } from './tensor.js';

/**
 * A set of ranks that communicate. `ranks` are global ranks in group order; `rank` is this
 * rank's index in the group. `key` names the communicator (same on every member).
 */
export interface Group {
  readonly ranks: readonly number[];
  readonly rank: number;
  readonly size: number;
  readonly key: string;
}

/**
 * `runtimeId` keeps communicators of different runtimes apart (NCCL unique ids and CPU mailboxes
 * are process-wide; a closed runtime's id must never be reused by a new one).
 */
export function makeGroup(ranks: readonly number[], globalRank: number, runtimeId: string): Group {
  const rank = ranks.indexOf(globalRank);
  return { ranks: [...ranks], rank, size: ranks.length, key: `${runtimeId}/g${ranks.join('.')}` };
}

/** Group-local rank `offset` places after `rank` on a ring of `size`. */
export function ringPeer(rank: number, offset: number, size: number): number {
  return (((rank + offset) % size) + size) % size;
}

/** How the cuda backend moves point-to-point transfers (InitOptions.transport). */
export type Transport = 'nccl' | 'copy-engine';

/**
 * Whether a send over `how` reads `t` where it lies (Comm.sendable): NCCL moves contiguous
 * buffers only; the copy engines (a 2-D copy) and the CPU backend's mailboxes also read strided
 * rows, such as k and v sliced from a packed qkv.
 */
export function readsInPlace(how: Transport | 'mailbox', t: DeviceTensor): boolean {
  return how === 'nccl' ? t.isContiguous() : t.rowLayout() !== null;
}

/**
 * What a transfer says of its tensor, "(1, 128, 2, 16) float32": when the two sides' sizes differ
 * (SPMD ranks that passed local tensors of different shapes), the receiver's error names both.
 */
export function transferLabel(t: DeviceTensor): string {
  return `(${t.shape.join(', ')}) ${t.dtype}`;
}

/**
 * One side of a point-to-point transfer; `peer` is a group-local rank. A receive fills a
 * contiguous tensor; a send reads any tensor its comm's `sendable` accepts. Only the element
 * count and dtype travel, so the two sides' layouts may differ.
 */
export interface P2POp {
  peer: number;
  tensor: DeviceTensor;
}

/** A transfer in flight: `wait()` orders later compute after it (cpu: blocks until done). */
export interface Pending {
  wait(): void;
}

/**
 * NCCL semantics on either backend: operations between one ordered pair of ranks match in the
 * order they were issued; every member must issue the same collectives in the same order.
 */
export interface Comm {
  readonly group: Group;
  /**
   * Whether sendRecv can send `t` as it lies: contiguous tensors always; strided rows (k and v
   * sliced from packed qkv) where the transport reads them in place (copy engines, the CPU).
   * Anything else is copied to a contiguous tensor first (see api/ring/kv_buffer.ts sendableKv).
   */
  sendable(t: DeviceTensor): boolean;
  /** Issues all sends and receives as one group; returns before they complete. */
  sendRecv(sends: readonly P2POp[], recvs: readonly P2POp[]): Pending;
  /**
   * Forgets receives posted and never completed, after a call on this rank failed (the runtime
   * resets the transport itself), so a stale one cannot take the next call's first message.
   */
  abandon?(): void;
  /** recv (size × send.numel, rank-major) gets every member's `send`. */
  allGather(send: DeviceTensor, recv: DeviceTensor): Pending;
  /** recv (send.numel / size) gets this member's slice of the fp32 sum over members. */
  reduceScatter(send: DeviceTensor, recv: DeviceTensor): Pending;
}

export const DONE: Pending = { wait() {} };

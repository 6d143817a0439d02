// Worker side of driver mode across processes. The store carries each call's description to the
// other processes; the tensors go over the runtime's communicator, the transport the ring itself
// uses between processes: process 0's first rank (the relay) sends every rank of another process
// the typed arrays of its task before the call and takes back its results after it; such a rank
// takes its typed arrays, runs its part of the call, and sends back its result.
import type { Comm } from './comm.js';
import type { RankContext } from './context.js';
import {
  allocate,
  decodeSkeleton,
  encodeSkeleton,
  joinPayloads,
  placeholders,
  splitPayloads,
  type Payload,
  type Placeholder,
} from './payloads.js';
import { callExport } from './task_call.js';

/** Global rank of process 0's first rank, the relay. */
export const RELAY_RANK = 0;

/** 16-bit words of a result's header: the byte length of its skeleton, as a 32-bit count. */
const HEADER_WORDS = 2;

/**
 * The communicator of the driver's transfers. CPU: a mailbox of its own, so that no receive of a
 * ring can take a driver's message. CUDA: the world communicator, the one NCCL communicator of a
 * runtime that spans processes; NCCL has no tags, and both ends issue the driver's transfers
 * strictly before and after the call's own, which keeps them apart.
 */
function driveComm(ctx: RankContext): Comm {
  const g = ctx.group;
  return ctx.backend.comm(ctx.backend.name === 'cpu' ? { ...g, key: `${ctx.info.runtimeId}/drive` } : g);
}

/** A typed array's bytes as 16-bit words: the communicator moves bfloat16 tensors bit for bit. */
function words(p: ArrayBufferView): Uint16Array {
  if (p.byteOffset % 2 === 0 && p.byteLength % 2 === 0)
    return new Uint16Array(p.buffer, p.byteOffset, p.byteLength / 2);
  const w = new Uint16Array(Math.ceil(p.byteLength / 2));
  new Uint8Array(w.buffer).set(new Uint8Array(p.buffer, p.byteOffset, p.byteLength));
  return w;
}

function sendWords(ctx: RankContext, comm: Comm, peer: number, w: Uint16Array): void {
  if (w.length === 0) return;
  const t = ctx.backend.upload(w, [w.length], 'bfloat16');
  comm.sendRecv([{ peer, tensor: t }], []).wait();
  t.dispose();
}

function receiveWords(ctx: RankContext, comm: Comm, peer: number, n: number): Uint16Array {
  if (n === 0) return new Uint16Array(0);
  const t = ctx.backend.empty([n], 'bfloat16');
  try {
    comm.sendRecv([], [{ peer, tensor: t }]).wait();
    return ctx.backend.download(t) as Uint16Array;
  } finally {
    t.dispose();
  }
}

function receivePayload(ctx: RankContext, comm: Comm, peer: number, p: Placeholder): Payload {
  const out = allocate(p);
  const w = receiveWords(ctx, comm, peer, Math.ceil(out.byteLength / 2));
  new Uint8Array(out.buffer).set(new Uint8Array(w.buffer, w.byteOffset, out.byteLength));
  return out;
}

/** A value as header, skeleton and typed arrays, in that order. */
function sendValue(ctx: RankContext, comm: Comm, peer: number, value: unknown): void {
  const { skeleton, payloads } = splitPayloads(value);
  const bytes = encodeSkeleton(skeleton);
  sendWords(ctx, comm, peer, words(Uint32Array.of(bytes.byteLength)));
  sendWords(ctx, comm, peer, words(bytes));
  for (const p of payloads) sendWords(ctx, comm, peer, words(p));
}

function receiveValue(ctx: RankContext, comm: Comm, peer: number): unknown {
  const header = receiveWords(ctx, comm, peer, HEADER_WORDS);
  const length = new Uint32Array(header.slice().buffer)[0]!;
  const w = receiveWords(ctx, comm, peer, Math.ceil(length / 2));
  const skeleton = decodeSkeleton(new Uint8Array(w.buffer, w.byteOffset, length));
  return joinPayloads(
    skeleton,
    placeholders(skeleton).map((p) => receivePayload(ctx, comm, peer, p)),
  );
}

/** A rank of process 0 in a driver-mode call that spans processes. */
export interface RelayTask {
  /** This rank's own part of the call, unless it only relays. */
  own?: { moduleUrl: string; exportName: string; arg: unknown };
  /** The relay only: the typed arrays of each rank of another process, in the order of its task's placeholders. */
  outgoing: { rank: number; payloads: Payload[] }[];
  /** The relay only: the ranks of other processes whose results come back, in call order. */
  incoming: number[];
}

export async function relay(
  ctx: RankContext,
  task: RelayTask,
): Promise<{ value: unknown; remote: unknown[] }> {
  const comm = driveComm(ctx);
  for (const o of task.outgoing) for (const p of o.payloads) sendWords(ctx, comm, o.rank, words(p));
  const value = task.own
    ? await callExport(ctx, task.own.moduleUrl, task.own.exportName, task.own.arg)
    : null;
  return { value, remote: task.incoming.map((rank) => receiveValue(ctx, comm, rank)) };
}

/** A rank of another process in a driver-mode call: its task's skeleton came through the store. */
export interface ServedTask {
  moduleUrl: string;
  exportName: string;
  skeleton: unknown;
}

export async function served(ctx: RankContext, task: ServedTask): Promise<null> {
  const comm = driveComm(ctx);
  const payloads = placeholders(task.skeleton).map((p) => receivePayload(ctx, comm, RELAY_RANK, p));
  const value = await callExport(ctx, task.moduleUrl, task.exportName, joinPayloads(task.skeleton, payloads));
  sendValue(ctx, comm, RELAY_RANK, value);
  return null;
}

// The TypeScript half of the CUDA communicator (runtime/cuda_comm.ts), run against a recording
// stand-in for the addon: what each transport asks of the native side (the peers and order of
// the pulls, in-place strided sends, the reduce-scatter's scratch slot and when it goes back).
// The native side itself runs in the GPU suites.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { RingFlashAttnError } from '../index.js';
import { makeGroup, type Transport } from '../runtime/comm.js';
import { CudaComm } from '../runtime/cuda_comm.js';
import type { NativeCuda } from '../runtime/cuda_native.js';
import { contiguousStrides, DeviceTensor, numelOf } from '../runtime/tensor.js';
import type { DType } from '../runtime/dtype.js';
import { expectError } from './helpers.js';

const s = suite('cuda_comm');

interface Call {
  fn: string;
  arg: unknown;
}
type View = { data: bigint; offset: number; strides: number[] };
type Xfer = { data: View; n: number; peer: number; rows?: number };

/** Records every addon call; `throwOn` makes one entry point throw (a failed launch). */
function fakeCuda(throwOn?: string) {
  const calls: Call[] = [];
  let next = 0;
  const record = (fn: string) => (arg?: unknown) => {
    calls.push({ fn, arg });
    if (fn === throwOn) throw new RingFlashAttnError('E_CUDA', `${fn} failed`);
    return ++next;
  };
  const cuda = {
    commSendRecv: record('commSendRecv'),
    commAllGather: record('commAllGather'),
    commReduceScatter: record('commReduceScatter'),
    waitEvent: record('waitEvent'),
    alloc: (bytes: number) => (calls.push({ fn: 'alloc', arg: bytes }), BigInt(0x1000 + calls.length)),
    free: record('free'),
  } as unknown as NativeCuda;
  return { cuda, calls, of: (fn: string) => calls.filter((c) => c.fn === fn).map((c) => c.arg) };
}

const tensor = (shape: number[], dtype: DType = 'float32', ptr = 0x10n) =>
  new DeviceTensor(
    { data: ptr, dtype, numel: numelOf(shape), release() {} },
    shape,
    contiguousStrides(shape),
  );
const comm = (rank: number, size: number, transport: Transport, cuda: NativeCuda) =>
  new CudaComm(
    makeGroup(
      Array.from({ length: size }, (_, i) => i),
      rank,
      'rt',
    ),
    cuda,
    transport,
  );

s(
  'copy engines: all-gather is one collective of the copy-engine transport; a head slice goes out in place',
  () => {
    const f = fakeCuda();
    const n = 6;
    comm(2, 4, 'copy-engine', f.cuda).allGather(tensor([n]), tensor([4 * n], 'float32', 0x20n));
    const [p] = f.of('commAllGather') as {
      transport: string;
      rank: number;
      send: Xfer & { label: string };
      recv: View;
    }[];
    assert.equal(
      { transport: p!.transport, rank: p!.rank, n: p!.send.n, recv: p!.recv.data, label: p!.send.label },
      { transport: 'copy-engine', rank: 2, n, recv: 0x20n, label: '(6) float32' },
    );
    assert.equal(f.of('commSendRecv'), []);
    // llama3 gathers one KV head group of (1, s, h_k, d) at a time: rows of stride·d, h_k·d apart.
    const heads = tensor([1, 5, 4, 8], 'bfloat16').narrow(2, 2, 2);
    comm(0, 2, 'copy-engine', f.cuda).allGather(heads, tensor([2 * 5 * 2 * 8], 'bfloat16'));
    const [, q] = f.of('commAllGather') as { send: Xfer }[];
    assert.equal(
      { rows: q!.send.rows, n: q!.send.n, pitch: q!.send.data.strides },
      { rows: 5, n: 80, pitch: [32] },
    );
  },
);

/** Rank `rank` of a world of `world` ranks, this process running [rank0, rank0 + localWorld). */
const spanning = (rank: number, world: number, rank0: number, localWorld: number, cuda: NativeCuda) =>
  new CudaComm(
    makeGroup(
      Array.from({ length: world }, (_, i) => i),
      rank,
      'mp',
    ),
    cuda,
    'copy-engine',
    { rank0, localWorld },
  );

s(
  'across processes: a ring hop to another process takes NCCL, one within the process the copy engines, NCCL first',
  () => {
    const f = fakeCuda();
    // World 4 as 2 processes × 2 ranks; rank 1 sends to rank 2 (the other process), receives from rank 0 (this one).
    const pending = spanning(1, 4, 0, 2, f.cuda).sendRecv(
      [{ tensor: tensor([4]), peer: 2 }],
      [{ tensor: tensor([4], 'float32', 0x40n), peer: 0 }],
    );
    const ops = f.of('commSendRecv') as { transport: string; sends: Xfer[]; recvs: Xfer[] }[];
    assert.equal(
      ops.map((o) => [o.transport, o.sends.map((x) => x.peer), o.recvs.map((x) => x.peer)]),
      [
        ['nccl', [2], []],
        ['copy-engine', [], [0]],
      ],
    );
    pending.wait();
    assert.is(f.of('waitEvent').length, 2, 'the compute stream waits for both');
    // Rank 0's hops: from rank 3 (the other process) and to rank 1: NCCL receives, copy-engine sends.
    const g = fakeCuda();
    spanning(0, 4, 0, 2, g.cuda).sendRecv(
      [{ tensor: tensor([4]), peer: 1 }],
      [{ tensor: tensor([4]), peer: 3 }],
    );
    assert.equal(
      (g.of('commSendRecv') as { transport: string }[]).map((o) => o.transport),
      ['nccl', 'copy-engine'],
    );
  },
);

s('across processes: collectives take NCCL, strided sends are packed first', () => {
  const f = fakeCuda();
  const c = spanning(3, 4, 2, 2, f.cuda);
  c.allGather(tensor([4]), tensor([16]));
  c.reduceScatter(tensor([16]), tensor([4])).wait();
  assert.equal(
    [...f.of('commAllGather'), ...f.of('commReduceScatter')].map(
      (p) => (p as { transport: string }).transport,
    ),
    ['nccl', 'nccl'],
  );
  assert.equal(f.of('alloc'), [], 'NCCL needs no scratch slot');
  const k = tensor([1, 6, 2, 2, 8], 'bfloat16').select(2, 0);
  assert.not.ok(c.sendable(k));
  // A group of this process's ranks only stays on the copy engines.
  const local = new CudaComm(makeGroup([2, 3], 3, 'mp'), f.cuda, 'copy-engine', { rank0: 2, localWorld: 2 });
  assert.ok(local.sendable(k));
  local.allGather(tensor([4]), tensor([8]));
  assert.is((f.of('commAllGather')[1] as { transport: string }).transport, 'copy-engine');
});

s('NCCL: all-gather and reduce-scatter are NCCL collectives, no scratch', () => {
  const f = fakeCuda();
  const c = comm(1, 2, 'nccl', f.cuda);
  c.allGather(tensor([4]), tensor([8]));
  c.reduceScatter(tensor([8]), tensor([4])).wait();
  assert.is(f.of('commAllGather').length, 1);
  const [rs] = f.of('commReduceScatter') as { slot?: unknown; n: number }[];
  assert.is(rs!.n, 4);
  assert.is(rs!.slot, undefined);
  assert.equal(f.of('alloc'), []);
  assert.equal(f.of('commSendRecv'), []);
});

s('copy engines: the reduce-scatter slot holds one chunk and goes back once the compute stream waits', () => {
  const f = fakeCuda();
  const n = 5;
  const pending = comm(0, 3, 'copy-engine', f.cuda).reduceScatter(
    tensor([3 * n]),
    tensor([n], 'float32', 0x30n),
  );
  assert.equal(f.of('alloc'), [n * 4], 'one chunk of fp32, not one per member');
  const [p] = f.of('commReduceScatter') as { transport: string; n: number; slot: View; recv: View }[];
  assert.is(p!.transport, 'copy-engine');
  assert.is(p!.n, n);
  assert.is(p!.recv.data, 0x30n);
  assert.equal(f.of('free'), [], 'not before the wait');
  pending.wait();
  pending.wait();
  assert.equal(
    f.calls.slice(-2).map((c) => c.fn),
    ['waitEvent', 'free'],
    'the compute stream waits, then the slot goes back',
  );
  assert.equal(f.of('free'), [p!.slot.data], 'once');
});

s('copy engines: a reduce-scatter the addon refuses still returns its slot', () => {
  const f = fakeCuda('commReduceScatter');
  assert.throws(
    () => comm(1, 2, 'copy-engine', f.cuda).reduceScatter(tensor([8]), tensor([4])),
    /commReduceScatter failed/,
  );
  assert.is(f.of('alloc').length, 1);
  assert.is(f.of('free').length, 1);
});

s('reduce-scatter and all-gather check their shapes before any call (E_SHAPE)', async () => {
  const f = fakeCuda();
  const c = comm(0, 2, 'copy-engine', f.cuda);
  await expectError(
    () => c.reduceScatter(tensor([7]), tensor([4])),
    'E_SHAPE',
    /reduceScatter: float32 send must hold size × recv/,
  );
  await expectError(
    () => c.reduceScatter(tensor([8], 'bfloat16'), tensor([4])),
    'E_SHAPE',
    /reduceScatter: float32 send/,
  );
  await expectError(
    () => c.allGather(tensor([4]), tensor([9])),
    'E_SHAPE',
    /allGather: recv must hold size × send/,
  );
  assert.equal(f.calls, []);
});

s('send/recv: k sliced from packed kv goes out in place over the copy engines (rows, pitch)', () => {
  const kv = tensor([1, 6, 2, 2, 8], 'bfloat16'); // (b, s, 2, h_k, d)
  const k = kv.select(2, 0);
  const f = fakeCuda();
  comm(0, 2, 'copy-engine', f.cuda).sendRecv(
    [{ tensor: k, peer: 1 }],
    [{ tensor: tensor([1, 6, 2, 8], 'bfloat16'), peer: 1 }],
  );
  const [p] = f.of('commSendRecv') as { sends: Xfer[] }[];
  assert.equal(
    { rows: p!.sends[0]!.rows, n: p!.sends[0]!.n, pitch: p!.sends[0]!.data.strides },
    { rows: 6, n: 96, pitch: [32] },
  );
  assert.not.ok(comm(0, 2, 'nccl', f.cuda).sendable(k), 'NCCL needs it packed first');
});

s.run();

// Point-to-point transfers of strided tensors: which layouts a comm reads in place
// (DeviceTensor.rowLayout, Comm.sendable) and that rings receive the right elements from them.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { init } from '../index.js';
import { readsInPlace } from '../runtime/comm.js';
import { contiguousStrides, DeviceTensor, numelOf, type Storage } from '../runtime/tensor.js';
import { packedKvSlice } from './helpers.js';

const USER = new URL('./fixtures/spmd_user.js', import.meta.url).href;
const s = suite('transfers');

const storage = (numel: number): Storage => ({
  data: new Float32Array(numel),
  dtype: 'float32',
  numel,
  release() {},
});
const contiguous = (shape: number[]) =>
  new DeviceTensor(storage(numelOf(shape)), shape, contiguousStrides(shape));

s('rowLayout: contiguous tensors are one row; k/v of packed qkv and kv are rows one token apart', () => {
  assert.equal(contiguous([2, 5, 2, 4]).rowLayout(), { rows: 1, width: 80, pitch: 80 });
  const qkv = contiguous([2, 5, 3, 2, 4]);
  assert.equal(qkv.select(2, 1).rowLayout(), { rows: 10, width: 8, pitch: 24 });
  assert.equal(
    contiguous([1, 5, 3, 2, 4]).select(2, 2).narrow(1, 1, 3).rowLayout(),
    { rows: 3, width: 8, pitch: 24 },
    'a narrowed shard',
  );
  assert.is(
    qkv.select(2, 2).narrow(1, 1, 3).rowLayout(),
    null,
    'narrowed with two batches: the batch pitch differs',
  );
  assert.equal(contiguous([1, 5, 2, 2, 4]).select(2, 0).rowLayout(), { rows: 5, width: 8, pitch: 16 });
  assert.equal(
    contiguous([3, 1, 4]).select(1, 0).rowLayout(),
    { rows: 1, width: 12, pitch: 12 },
    'size-1 axes place nothing',
  );
  assert.equal(contiguous([2, 0, 4]).rowLayout(), { rows: 1, width: 0, pitch: 0 });
});

s('rowLayout: null when the elements do not form equal runs at one pitch', () => {
  const t = contiguous([2, 3, 4]);
  assert.is(
    new DeviceTensor(t.storage, [2, 3, 4], [4, 8, 1]).rowLayout(),
    null,
    'an outer axis inside an inner one',
  );
  assert.is(
    new DeviceTensor(t.storage, [3, 4], [2, 1]).rowLayout(),
    null,
    'rows overlapping (pitch below width)',
  );
  assert.is(new DeviceTensor(t.storage, [2, 2, 4], [12, 5, 1]).rowLayout(), null, 'two pitches');
});

s('readsInPlace: NCCL needs contiguous buffers; copy engines and mailboxes take rows', () => {
  const k = contiguous([1, 5, 3, 2, 4]).select(2, 1);
  assert.is(readsInPlace('nccl', k), false);
  assert.is(readsInPlace('copy-engine', k), true);
  assert.is(readsInPlace('mailbox', k), true);
  assert.is(readsInPlace('nccl', contiguous([5, 8])), true);
  const odd = new DeviceTensor(k.storage, [2, 3, 4], [4, 8, 1]);
  assert.is(readsInPlace('copy-engine', odd), false);
});

for (const world of [2, 3]) {
  s(
    `world ${world} (cpu): k and v sliced from packed qkv are sent in place and arrive contiguous`,
    async () => {
      const rt = await init({ backend: 'cpu', world });
      const got = (await rt.spmd(USER, 'sendPackedKv')) as {
        inPlace: boolean;
        k: { data: Float32Array; shape: number[] };
        v: { data: Float32Array };
      }[];
      got.forEach((g, r) => {
        const from = (r + world - 1) % world;
        assert.ok(g.inPlace);
        assert.equal(g.k.shape, [2, 5, 2, 4]);
        assert.equal(Array.from(g.k.data), Array.from(packedKvSlice(from, 1)), `rank ${r} k`);
        assert.equal(Array.from(g.v.data), Array.from(packedKvSlice(from, 2)), `rank ${r} v`);
      });
      await rt.close();
    },
  );
}

s('world 3 (cpu): all-gather of a strided head slice (llama3 head groups) reads it in place', async () => {
  const rt = await init({ backend: 'cpu', world: 3 });
  const got = (await rt.spmd(USER, 'gatherHeadSlice')) as { inPlace: boolean; all: { data: Float32Array } }[];
  const want: number[] = [];
  for (let r = 0; r < 3; r++)
    for (let t = 0; t < 5; t++) for (let i = 0; i < 4; i++) want.push(r * 1000 + t * 8 + 4 + i);
  for (const g of got) {
    assert.ok(g.inPlace);
    assert.equal(Array.from(g.all.data), want);
  }
  await rt.close();
});

s.run();

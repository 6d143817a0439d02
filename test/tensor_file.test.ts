// compat/tensor_file.ts: round trips, the version 2 layout byte for byte, version 1 files,
// checksums (a seeded byte-flip fuzz), exact messages for bad versions and bad tensors to save.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import ndarray from 'ndarray';
import { Packr } from 'msgpackr';
import {
  crc32c,
  decode,
  encode,
  load,
  save,
  type LoadedTensor,
  type SavableTensor,
} from '../compat/tensor_file.js';
import { RingFlashAttnError } from '../runtime/errors.js';
import { fromFloat32 } from '../runtime/dtype.js';
import { nd, randn, rng } from './helpers.js';

const s = suite('tensor_file');
const plain = new Packr({ useRecords: false, moreTypes: false, structuredClone: false });
// Written by the version 1 writer, before version 2 existed; the source tree holds it, not dist/.
const V1_FIXTURE = new URL('../../test/fixtures/tensors_v1.msgpack', import.meta.url);

/** CRC-32C bit by bit, independent of the table-driven library the format uses. */
function refCrc32c(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  }
  return (c ^ 0xffffffff) >>> 0;
}

/** `message` exactly, or a pattern where the text comes from msgpackr. */
function throwsExactly(run: () => unknown, code: string, message: string | RegExp) {
  try {
    run();
  } catch (e) {
    assert.instance(e, RingFlashAttnError, String(e));
    assert.is((e as RingFlashAttnError).code, code, (e as Error).message);
    if (typeof message === 'string') assert.is((e as Error).message, message);
    else assert.match((e as Error).message, message);
    return;
  }
  assert.unreachable(`expected ${code}: ${message}`);
}

function tmpFile(): { file: string; cleanup: () => void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rfa-'));
  return { file: path.join(dir, 't.msgpack'), cleanup: () => fs.rmSync(dir, { recursive: true }) };
}

s(
  'crc32c is CRC-32C: the check value of "123456789" is 0xe3069283, and it matches a bitwise reference',
  () => {
    const check = new TextEncoder().encode('123456789');
    assert.is(crc32c(check), 0xe3069283);
    assert.is(refCrc32c(check), 0xe3069283);
    const bytes = new Uint8Array(randn(rng(7), 257).buffer);
    assert.is(crc32c(bytes), refCrc32c(bytes));
    assert.is(crc32c(new Uint8Array(0)), 0);
  },
);

s('tensor files round-trip every dtype and strided views', async () => {
  const { file, cleanup } = tmpFile();
  const x = randn(rng(1), 24);
  const tensors = {
    f32: nd(x, [2, 3, 4]),
    bf16: { data: fromFloat32(x, 'bfloat16'), shape: [4, 6], dtype: 'bfloat16' },
    f16: { data: fromFloat32(x, 'float16'), shape: [24], dtype: 'float16' },
    f64: { data: Float64Array.from(x), shape: [6, 4] },
    cu_seqlens: { data: Int32Array.from([0, 3, 8]), shape: [3] },
    transposed: nd(x, [4, 6]).transpose(1, 0),
    offset: nd(x, [24]).lo(20), // contiguous, offset 20
    reversed: nd(x, [4, 6]).step(-1, 2), // negative stride, offset at the last row
    window: nd(x, [2, 3, 4]).hi(2, 2, 3).lo(1, 1, 1).transpose(2, 0, 1),
    empty: { data: new Float32Array(0), shape: [0, 5] },
  };
  await save(file, tensors);
  const back = await load(file);
  cleanup();
  assert.equal(Object.keys(back).sort(), Object.keys(tensors).sort());
  assert.equal(Array.from(back.f32!.data), Array.from(x));
  assert.equal(back.f32!.shape, [2, 3, 4]);
  assert.is(back.bf16!.dtype, 'bfloat16');
  assert.instance(back.bf16!.data, Uint16Array);
  assert.equal(Array.from(back.bf16!.data), Array.from(tensors.bf16.data));
  assert.is(back.f16!.dtype, 'float16');
  assert.instance(back.f64!.data, Float64Array);
  assert.equal(Array.from(back.cu_seqlens!.data), [0, 3, 8]);
  for (const key of ['transposed', 'offset', 'reversed', 'window'] as const)
    sameElements(key, back[key]!, tensors[key]);
  assert.equal(back.transposed!.shape, [6, 4]);
  assert.is(back.transposed!.get(2, 1), x[1 * 6 + 2]);
  assert.equal(back.reversed!.shape, [4, 3]);
  assert.equal(Array.from(back.reversed!.data.subarray(0, 3)), [x[18], x[20], x[22]]);
  assert.equal(back.window!.shape, [2, 1, 1]);
  assert.equal(back.empty!.shape, [0, 5]);
});

/** `back` holds, in C order, every element of the view `view`. */
function sameElements(key: string, back: LoadedTensor, view: ndarray.NdArray) {
  assert.equal(back.shape, view.shape, key);
  const n = view.shape.reduce((a, b) => a * b, 1);
  const idx = new Array<number>(view.shape.length).fill(0);
  for (let i = 0; i < n; i++) {
    assert.is(back.data[i], view.get(...idx), `${key}[${idx.join(', ')}]`);
    for (let a = idx.length - 1; a >= 0 && ++idx[a]! >= view.shape[a]!; a--) idx[a] = 0;
  }
}

s('version 2 layout: plain msgpack, a crc32c per tensor, the file crc32c as the last 4 bytes', () => {
  const bytes = encode({ a: { data: Float32Array.from([1, 2]), shape: [2] } });
  const data = Uint8Array.from([0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0x40]);
  const doc = plain.unpack(bytes) as Record<string, unknown>;
  assert.equal(Object.keys(doc), ['format', 'version', 'tensors', 'crc32c']);
  assert.equal(doc, {
    format: 'ring-flash-attn/tensors',
    version: 2,
    tensors: { a: { dtype: 'float32', shape: [2], data: Buffer.from(data), crc32c: 0x28c0c9b1 } },
    crc32c: refCrc32c(bytes.subarray(0, bytes.length - 4)),
  });
  assert.is(refCrc32c(data), 0x28c0c9b1);
  const end = bytes.length;
  assert.equal(Array.from(bytes.subarray(end - 12, end - 4)), [
    0xa6,
    ...new TextEncoder().encode('crc32c'),
    0xce,
  ]);
  assert.is(new DataView(bytes.buffer, bytes.byteOffset).getUint32(end - 4), doc.crc32c);
});

s('a version 1 file written before checksums existed still loads', async () => {
  const raw = fs.readFileSync(V1_FIXTURE);
  assert.is((plain.unpack(raw) as { version: number }).version, 1);
  const t = await load(V1_FIXTURE.pathname);
  assert.equal(Object.keys(t), ['f32', 'bf16', 'cu_seqlens', 'f64', 'empty']);
  assert.is(t.f32!.dtype, 'float32');
  assert.equal(t.f32!.shape, [2, 3]);
  assert.equal(Array.from(t.f32!.data), [0.5, -1.25, 2, 3.75, -4.5, Math.fround(1e-3)]);
  assert.is(t.bf16!.dtype, 'bfloat16');
  assert.equal(Array.from(t.bf16!.data), [0x3f80, 0xc000, 0x4049, 0x0000]);
  assert.equal(Array.from(t.cu_seqlens!.data), [0, 3, 8]);
  assert.instance(t.f64!.data, Float64Array);
  assert.equal(Array.from(t.f64!.data), [Math.PI, -Math.E]);
  assert.equal(t.empty!.shape, [0, 2]);
});

function flipFuzz(bytes: Uint8Array, flips: number, seed: number) {
  const rand = rng(seed);
  const loaded: string[] = [],
    otherErrors: string[] = [];
  for (let i = 0; i < flips; i++) {
    const at = Math.floor(rand() * bytes.length),
      xor = 1 + Math.floor(rand() * 255);
    const bad = Uint8Array.from(bytes);
    bad[at]! ^= xor;
    try {
      decode(bad);
      loaded.push(`byte ${at} ^ 0x${xor.toString(16)}`);
    } catch (e) {
      if (!(e instanceof RingFlashAttnError) || e.code !== 'E_FORMAT')
        otherErrors.push(`byte ${at}: ${String(e)}`);
    }
  }
  return { loaded, otherErrors };
}

s('5,000 seeded byte flips of a version 2 file: every one raises E_FORMAT, none loads', () => {
  const x = randn(rng(3), 12);
  const bytes = encode({
    f32: nd(x, [3, 4]),
    bf16: { data: fromFloat32(x.subarray(0, 6), 'bfloat16'), shape: [2, 3], dtype: 'bfloat16' },
    cu_seqlens: { data: Int32Array.from([0, 5, 12]), shape: [3] },
    empty: { data: new Float32Array(0), shape: [0, 5] },
  });
  const { loaded, otherErrors } = flipFuzz(bytes, 5000, 11);
  assert.equal(otherErrors, [], otherErrors.slice(0, 5).join('\n'));
  assert.equal(loaded.length, 0, `${loaded.length} flips loaded, e.g. ${loaded.slice(0, 5).join(', ')}`);
});

s('a corrupted tensor names itself and both checksums; a changed shape fails the file checksum', () => {
  const bytes = encode({
    a: { data: Float32Array.from([1, 2]), shape: [2] },
    e: { data: new Float32Array(0), shape: [0, 5] },
  });
  const dataAt = indexOf(bytes, [0xc4, 0x08]) + 2; // bin8 header of a's 8 data bytes
  const bad = Uint8Array.from(bytes);
  bad[dataAt] = 0x01;
  throwsExactly(
    () => decode(bad, 'x.msgpack'),
    'E_FORMAT',
    "load: x.msgpack: tensor 'a' fails its checksum: stored crc32c 0x28c0c9b1, computed 0x61fcb496",
  );
  // An empty tensor's shape (0, 5) -> (0, 7) leaves every tensor's data as it was.
  const shape = Uint8Array.from(bytes);
  shape[indexOf(bytes, [0x92, 0x00, 0x05]) + 2] = 0x07;
  const stored = new DataView(bytes.buffer, bytes.byteOffset).getUint32(bytes.length - 4);
  const computed = refCrc32c(shape.subarray(0, shape.length - 4));
  const hex = (v: number) => `0x${v.toString(16).padStart(8, '0')}`;
  throwsExactly(
    () => decode(shape, 'x.msgpack'),
    'E_FORMAT',
    `load: x.msgpack: the file fails its checksum (names, dtypes or shapes changed): stored crc32c ${hex(stored)}, computed ${hex(computed)}`,
  );
  // A version 2 file whose version byte became 1 keeps its checksum fields, which version 1 lacks.
  const v1 = Uint8Array.from(bytes);
  v1[indexOf(bytes, [0xa7, ...new TextEncoder().encode('version'), 0x02]) + 8] = 0x01;
  throwsExactly(
    () => decode(v1, 'x.msgpack'),
    'E_FORMAT',
    "load: x.msgpack: the file has an unexpected field 'crc32c' (version 1 has format, version, tensors)",
  );
});

function indexOf(bytes: Uint8Array, seq: number[]): number {
  const at = Buffer.from(bytes).indexOf(Buffer.from(seq));
  assert.ok(at >= 0, `bytes ${seq.join(' ')} not found`);
  return at;
}

s('a version that is not 1 or 2 is named with its type: the string "1" is not the number 1', () => {
  const doc = (version: unknown) => plain.pack({ format: 'ring-flash-attn/tensors', version, tensors: {} });
  throwsExactly(
    () => decode(doc('1'), 'f'),
    'E_FORMAT',
    `load: f: field 'version' is the string "1"; this reader knows 1 or 2`,
  );
  throwsExactly(
    () => decode(doc(9), 'f'),
    'E_FORMAT',
    "load: f: field 'version' is the number 9; this reader knows 1 or 2",
  );
  throwsExactly(
    () => decode(plain.pack({ format: 'ring-flash-attn/tensors', tensors: {} }), 'f'),
    'E_FORMAT',
    "load: f: field 'version' is missing; this reader knows 1 or 2",
  );
});

s('corrupt, truncated and unknown-dtype files give E_FORMAT', async () => {
  const good = encode({ a: nd(randn(rng(2), 10), [10]) });
  const p = new Packr({ useRecords: false });
  const v1 = (tensors: unknown) => p.pack({ format: 'ring-flash-attn/tensors', version: 1, tensors });
  throwsExactly(
    () => decode(good.subarray(0, good.length - 7), 'f'),
    'E_FORMAT',
    /^load: f: not a msgpack document \(.+\)$/,
  );
  throwsExactly(
    () => decode(new Uint8Array([0xc1, 0x00, 0x13]), 'f'),
    'E_FORMAT',
    /^load: f: not a msgpack document \(.+\)$/,
  );
  throwsExactly(
    () => decode(v1({ a: { dtype: 'complex64', shape: [1], data: Buffer.alloc(8) } }), 'f'),
    'E_FORMAT',
    `load: f: tensor 'a' has unknown dtype "complex64"`,
  );
  throwsExactly(
    () => decode(v1({ a: { dtype: 'float32', shape: [3], data: Buffer.alloc(8) } }), 'f'),
    'E_FORMAT',
    "load: f: tensor 'a' holds 8 bytes, float32 (3) needs 12",
  );
  throwsExactly(
    () => decode(v1({ a: { dtype: 'float32', shape: [-1], data: Buffer.alloc(0) } }), 'f'),
    'E_FORMAT',
    "load: f: tensor 'a' has an invalid shape",
  );
  throwsExactly(
    () => decode(v1({ a: { dtype: 'float32', shape: [1], data: Buffer.alloc(4), crc32c: 0 } }), 'f'),
    'E_FORMAT',
    "load: f: tensor 'a' has an unexpected field 'crc32c' (version 1 has dtype, shape, data)",
  );
  throwsExactly(
    () => decode(p.pack({ hello: 'world' }), 'f'),
    'E_FORMAT',
    'load: f: not a ring-flash-attn/tensors file',
  );
  throwsExactly(
    () => decode(v1([]), 'f'),
    'E_FORMAT',
    "load: f: field 'tensors' is an array, expected a map",
  );
  await load('/nonexistent/x').then(
    () => assert.unreachable(),
    (e) => assert.is(e.code, 'E_ARG'),
  );
});

/** A tensor save() must refuse, with the code and the exact message it throws. */
type Refusal = [tensor: unknown, code: string, message: string];

/** save() must throw each refusal's code and exact message for its tensor, and leave no file behind. */
async function saveRefuses(refusals: readonly Refusal[]) {
  for (const [tensor, code, message] of refusals) {
    const { file, cleanup } = tmpFile();
    try {
      await save(file, { t: tensor as SavableTensor }).then(
        () => assert.unreachable(`expected ${code}`),
        (e) => {
          assert.instance(e, RingFlashAttnError, String(e));
          assert.is(e.code, code, e.message);
          assert.is(e.message, message);
        },
      );
      assert.not.ok(fs.existsSync(file), 'a file was written');
    } finally {
      cleanup();
    }
  }
}

s('save() refuses data that does not fill its shape, before writing anything', async () => {
  await saveRefuses([
    [
      { data: new Float32Array(5), shape: [2, 3] },
      'E_SHAPE',
      "save: tensor 't' has 5 elements, its shape (2, 3) needs 6",
    ],
    [
      { data: new Float32Array(7), shape: [2, 3] },
      'E_SHAPE',
      "save: tensor 't' has 7 elements, its shape (2, 3) needs 6",
    ],
    // An ndarray over too little data: ndarray() does not check, so save() must.
    [
      ndarray(new Float32Array(5), [2, 3]),
      'E_SHAPE',
      "save: tensor 't' (shape (2, 3), stride (3, 1), offset 0) reaches data index 5, but its data has 5 elements",
    ],
    [
      ndarray(new Float32Array(4), [2], [1], 3),
      'E_SHAPE',
      "save: tensor 't' (shape (2), stride (1), offset 3) reaches data index 4, but its data has 4 elements",
    ],
    [
      ndarray(new Float32Array(6), [3], [-2], 3),
      'E_SHAPE',
      "save: tensor 't' (shape (3), stride (-2), offset 3) reaches data index -1, below 0",
    ],
    [
      ndarray(new Float32Array(6), [2, 3], [3, 1.5]),
      'E_ARG',
      "save: tensor 't' has stride (3, 1.5) for shape (2, 3): expected 2 safe integers",
    ],
  ]);
});

s('save() refuses shapes that are not non-negative safe integers or whose product is not safe', async () => {
  await saveRefuses([
    [
      { data: new Float32Array(1), shape: [-1, -1] },
      'E_SHAPE',
      "save: tensor 't' has shape (-1, -1): dimension 0 is the number -1, expected a non-negative safe integer",
    ],
    [
      { data: new Float32Array(5), shape: [2.5, 2] },
      'E_SHAPE',
      "save: tensor 't' has shape (2.5, 2): dimension 0 is the number 2.5, expected a non-negative safe integer",
    ],
    [
      { data: new Float32Array(3), shape: [3, '1'] },
      'E_SHAPE',
      `save: tensor 't' has shape (3, 1): dimension 1 is the string "1", expected a non-negative safe integer`,
    ],
    [
      { data: new Float32Array(0), shape: [2 ** 30, 2 ** 30, 2 ** 30] },
      'E_SHAPE',
      "save: tensor 't' has shape (1073741824, 1073741824, 1073741824): its element count 1.2379400392853803e+27 exceeds 9007199254740991",
    ],
    [
      { data: [1, 2], shape: [2] },
      'E_DTYPE',
      "save: tensor 't' has unsupported data (Float32Array, Float64Array, Int32Array or Uint16Array)",
    ],
    [{ shape: [2] }, 'E_ARG', "save: tensor 't' must be an ndarray or { data, shape }"],
  ]);
  // Zero-size views need no data at all, whatever their stride and offset.
  const { file, cleanup } = tmpFile();
  await save(file, {
    z: { data: new Float32Array(0), shape: [2 ** 30, 2 ** 30, 0] },
    v: ndarray(new Float32Array(0), [0, 4]),
  });
  assert.equal((await load(file)).z!.shape, [2 ** 30, 2 ** 30, 0]);
  cleanup();
});

s.run();

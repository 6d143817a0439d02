// compat/: extract_local helpers, update_out_and_lse, tensor files.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { decode, encode, extract_local, init, load, RingFlashAttnError, save, stripe_extract_local, substitute_hf_flash_attn, update_ring_flash_attn_params, varlen_extract_local, zigzag_extract_local, zigzag_varlen_extract_local } from '../index.js';
import { fromFloat32 } from '../runtime/dtype.js';
import { nd, randn, relL2, rng } from './helpers.js';

const s = suite('compat');

s('the transformers adapters exist by name and refuse with E_UNSUPPORTED, naming what to call instead', () => {
  for (const [name, fn] of [['substitute_hf_flash_attn', substitute_hf_flash_attn], ['update_ring_flash_attn_params', update_ring_flash_attn_params]] as const)
    assert.throws(() => fn(null, 1), (e: unknown) => e instanceof RingFlashAttnError && e.code === 'E_UNSUPPORTED' &&
      e.message.startsWith(name) && /llama3_flash_attn_varlen_func/.test(e.message) && /llama3_flash_attn_prepare_cu_seqlens/.test(e.message));
});

s('extract_local, zigzag_extract_local, stripe_extract_local pick the layout positions', () => {
  const x = nd(Float32Array.from({ length: 8 }, (_, i) => i), [1, 8]);
  assert.equal(Array.from(extract_local(x, 1, 2).data), [4, 5, 6, 7]);
  assert.equal(Array.from(zigzag_extract_local(x, 0, 2).data), [0, 1, 6, 7]);
  assert.equal(Array.from(stripe_extract_local(x, 1, 4).data), [1, 5]);
  assert.equal(Array.from(extract_local(nd(Float32Array.from({ length: 8 }, (_, i) => i), [2, 4]), 1, 2, 1).data), [2, 3, 6, 7]);
  assert.throws(() => extract_local(x, 2, 2), (e: unknown) => e instanceof RingFlashAttnError && e.code === 'E_ARG' && /rank 2 out of range/.test(e.message));
});

s('varlen_extract_local and zigzag_varlen_extract_local cut every sequence', () => {
  const x = nd(Float32Array.from({ length: 12 }, (_, i) => i), [12, 1]);
  const cu = Int32Array.from([0, 4, 12]);
  assert.equal(Array.from(varlen_extract_local(x, cu, 1, 2).data), [2, 3, 8, 9, 10, 11]);
  assert.equal(Array.from(zigzag_varlen_extract_local(x, cu, 0, 2).data), [0, 3, 4, 5, 10, 11]);
  assert.throws(() => varlen_extract_local(x, Int32Array.from([0, 3, 12]), 0, 2), (e: unknown) => e instanceof RingFlashAttnError && e.code === 'E_SHAPE');
});

s('update_out_and_lse: merging two key halves equals attending to all keys', async () => {
  const rt = await init({ backend: 'cpu', world: 1 });
  const rand = rng(21);
  const shape = [1, 12, 2, 16];
  const n = 12 * 2 * 16;
  const [r] = (await rt.spmd(new URL('./fixtures/compat_user.js', import.meta.url), 'mergeHalves',
    { q: randn(rand, n), k: randn(rand, n), v: randn(rand, n), shape })) as { merged: { data: Float32Array }; whole: { data: Float32Array }; mergedLse: { data: Float32Array }; wholeLse: { data: Float32Array } }[];
  assert.ok(relL2(r!.merged.data, r!.whole.data) < 1e-6, `out ${relL2(r!.merged.data, r!.whole.data)}`);
  assert.ok(relL2(r!.mergedLse.data, r!.wholeLse.data) < 1e-6);
  await rt.close();
});

s('tensor files round-trip every dtype and strided views', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rfa-'));
  const f = path.join(dir, 't.msgpack');
  const x = randn(rng(1), 24);
  const tensors = {
    f32: nd(x, [2, 3, 4]),
    bf16: { data: fromFloat32(x, 'bfloat16'), shape: [4, 6], dtype: 'bfloat16' },
    f16: { data: fromFloat32(x, 'float16'), shape: [24], dtype: 'float16' },
    f64: { data: Float64Array.from(x), shape: [6, 4] },
    cu_seqlens: { data: Int32Array.from([0, 3, 8]), shape: [3] },
    transposed: nd(x, [4, 6]).transpose(1, 0),
    empty: { data: new Float32Array(0), shape: [0, 5] },
  };
  await save(f, tensors);
  const back = await load(f);
  assert.equal(Object.keys(back).sort(), Object.keys(tensors).sort());
  assert.equal(Array.from(back.f32!.data), Array.from(x));
  assert.equal(back.f32!.shape, [2, 3, 4]);
  assert.is(back.bf16!.dtype, 'bfloat16');
  assert.instance(back.bf16!.data, Uint16Array);
  assert.equal(Array.from(back.bf16!.data), Array.from(tensors.bf16.data));
  assert.is(back.f16!.dtype, 'float16');
  assert.instance(back.f64!.data, Float64Array);
  assert.equal(Array.from(back.cu_seqlens!.data), [0, 3, 8]);
  const tr = back.transposed!;
  assert.equal(tr.shape, [6, 4]);
  assert.is(tr.get(2, 1), x[1 * 6 + 2]);
  assert.equal(back.empty!.shape, [0, 5]);
  fs.rmSync(dir, { recursive: true });
});

function formatError(bytes: Uint8Array, re: RegExp) {
  try {
    decode(bytes);
  } catch (e) {
    assert.instance(e, RingFlashAttnError);
    assert.is((e as RingFlashAttnError).code, 'E_FORMAT');
    assert.match((e as Error).message, re);
    return;
  }
  assert.unreachable('expected E_FORMAT');
}

s('corrupt, truncated and unknown-dtype files give E_FORMAT', async () => {
  const good = encode({ a: nd(randn(rng(2), 10), [10]) });
  formatError(good.subarray(0, good.length - 7), /./);
  formatError(new Uint8Array([0xc1, 0x00, 0x13]), /not a msgpack document|not a ring-flash-attn/);
  formatError(encode({}).subarray(0, 3), /./);
  const { Packr } = await import('msgpackr');
  const p = new Packr({ useRecords: false });
  formatError(p.pack({ format: 'ring-flash-attn/tensors', version: 1, tensors: { a: { dtype: 'complex64', shape: [1], data: Buffer.alloc(8) } } }), /unknown dtype "complex64"/);
  formatError(p.pack({ format: 'ring-flash-attn/tensors', version: 1, tensors: { a: { dtype: 'float32', shape: [3], data: Buffer.alloc(8) } } }), /holds 8 bytes, float32 \(3\) needs 12/);
  formatError(p.pack({ format: 'ring-flash-attn/tensors', version: 9, tensors: {} }), /unsupported version 9/);
  formatError(p.pack({ hello: 'world' }), /not a ring-flash-attn\/tensors file/);
  formatError(p.pack({ format: 'ring-flash-attn/tensors', version: 1, tensors: { a: { dtype: 'float32', shape: [-1], data: Buffer.alloc(0) } } }), /invalid shape/);
  await load('/nonexistent/x').then(() => assert.unreachable(), (e) => assert.is(e.code, 'E_ARG'));
});

s.run();

// flash_attn_* (one device, no ring): the kernels against the fp64 reference, including
// seqlen_q != seqlen_k with bottom-right causal alignment and rows that see no key.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { DType } from '../runtime/dtype.js';
import {
  suiteRuntime,
  callFunc,
  denseInputs,
  maxAbs,
  nd,
  pack,
  randn,
  relL2,
  rng,
  rounded,
  unpack,
} from './helpers.js';
import { referenceBackward, referenceForward, refInputOf, type Dims } from './reference.js';

const s = suite('flash_attn (single device)');
const rt = suiteRuntime(s, { backend: 'cpu', world: 2 });

interface C extends Dims {
  causal: boolean;
  dtype: DType;
  tol: number;
  gtol: number;
}

const cases: C[] = [
  { b: 2, sq: 13, sk: 13, h: 4, hk: 1, d: 32, causal: true, dtype: 'float32', tol: 1e-5, gtol: 1e-5 },
  { b: 1, sq: 9, sk: 17, h: 2, hk: 2, d: 64, causal: true, dtype: 'float32', tol: 1e-5, gtol: 1e-5 },
  { b: 1, sq: 17, sk: 6, h: 2, hk: 1, d: 16, causal: true, dtype: 'float32', tol: 1e-5, gtol: 1e-5 }, // 11 rows see no key
  { b: 1, sq: 5, sk: 40, h: 3, hk: 3, d: 128, causal: false, dtype: 'float32', tol: 1e-5, gtol: 1e-5 },
  { b: 1, sq: 33, sk: 33, h: 2, hk: 2, d: 64, causal: true, dtype: 'bfloat16', tol: 1e-2, gtol: 2e-2 },
  { b: 1, sq: 33, sk: 21, h: 4, hk: 2, d: 64, causal: false, dtype: 'float16', tol: 2e-3, gtol: 4e-3 },
];

cases.forEach((c, i) => {
  s(
    `flash_attn_func sq=${c.sq} sk=${c.sk} h=${c.h}/${c.hk} d=${c.d} ${c.causal ? 'causal' : 'full'} ${c.dtype}`,
    async () => {
      const inputs = denseInputs(rng(400 + i), c);
      const r = await callFunc(rt(), 'flash_attn_func', c, inputs, { causal: c.causal, dtype: c.dtype });
      const x = refInputOf(c, inputs);
      const ref = referenceForward(x);
      const refG = referenceBackward(x, c.dtype === 'float32' ? inputs.dout : rounded(inputs.dout, c.dtype));
      assert.ok(relL2(r.out, ref.out) <= c.tol, `out ${relL2(r.out, ref.out)}`);
      assert.ok(relL2(r.lse, ref.lse) <= c.tol, `lse ${relL2(r.lse, ref.lse)}`);
      assert.ok(
        maxAbs(r.lse, ref.lse) < 1e-1 && !Number.isNaN(maxAbs(r.lse, ref.lse)),
        'lse (including -inf rows)',
      );
      for (const [name, got, want] of [
        ['dq', r.dq, refG.dq],
        ['dk', r.dk, refG.dk],
        ['dv', r.dv, refG.dv],
      ] as const)
        assert.ok(relL2(got, want) <= c.gtol, `${name} ${relL2(got, want)}`);
    },
  );
});

s('rows that see no key: out 0, lse -inf, zero dq', async () => {
  const [sq, sk, h, d] = [6, 2, 1, 8];
  const rand = rng(3);
  const q = randn(rand, sq * h * d),
    k = randn(rand, sk * h * d);
  const r = await rt().call(
    'flash_attn_func',
    nd(q, [1, sq, h, d]),
    nd(k, [1, sk, h, d]),
    nd(k, [1, sk, h, d]),
    { causal: true },
  );
  for (let i = 0; i < sq - sk; i++) {
    assert.is(r.lse.data[i], -Infinity);
    for (let c = 0; c < d; c++) assert.is(r.out.data[i * h * d + c], 0);
  }
  const g = (await r.backward(nd(randn(rand, sq * h * d), [1, sq, h, d]))) as { dq: { data: Float32Array } };
  for (let i = 0; i < (sq - sk) * h * d; i++) assert.is(g.dq.data[i], 0);
  await r.dispose();
});

s('kvpacked and qkvpacked agree with the unpacked call', async () => {
  const [b, sq, h, d] = [1, 10, 2, 32];
  const rand = rng(8);
  const q = randn(rand, b * sq * h * d),
    k = randn(rand, b * sq * h * d),
    v = randn(rand, b * sq * h * d);
  const shape = [b, sq, h, d];
  const base = await rt().call('flash_attn_func', nd(q, shape), nd(k, shape), nd(v, shape), { causal: true });
  const kv = await rt().call(
    'flash_attn_kvpacked_func',
    nd(q, shape),
    nd(pack([k, v], b, sq, h, d), [b, sq, 2, h, d]),
    { causal: true },
  );
  const qkv = await rt().call(
    'flash_attn_qkvpacked_func',
    nd(pack([q, k, v], b, sq, h, d), [b, sq, 3, h, d]),
    0,
    null,
    true,
  );
  assert.ok(relL2(kv.out.data, base.out.data) < 1e-7);
  assert.ok(relL2(qkv.out.data, base.out.data) < 1e-7);
  const dout = nd(randn(rand, b * sq * h * d), shape);
  const g0 = (await base.backward(dout)) as { dk: { data: Float32Array } };
  const g1 = (await qkv.backward(dout)) as { dqkv: { data: Float32Array } };
  assert.ok(relL2(unpack(g1.dqkv.data, 1, 3, b, sq, h, d), g0.dk.data) < 1e-7);
  await Promise.all([base.dispose(), kv.dispose(), qkv.dispose()]);
});

s('flash-attn options: softcap is positional after window_size, as in flash-attn 2.x', async () => {
  const rand = rng(4);
  const x = nd(randn(rand, 64), [1, 4, 2, 8]),
    y = nd(randn(rand, 64), [1, 4, 2, 8]);
  const byName = await rt().call('flash_attn_func', x, y, y, { causal: true, softcap: 0.5 });
  const byPos = await rt().call('flash_attn_func', x, y, y, 0, null, true, [-1, -1], 0.5);
  const plain = await rt().call('flash_attn_func', x, y, y, { causal: true });
  assert.equal(Array.from(byPos.out.data), Array.from(byName.out.data));
  assert.ok(relL2(byName.out.data, plain.out.data) > 1e-3, 'softcap changed nothing');
  await Promise.all([byName.dispose(), byPos.dispose(), plain.dispose()]);
});

s.run();

// flash_attn_varlen_* (one device): per-sequence fp64 reference, q and k of different lengths
// per sequence (bottom-right causal per sequence), GQA, the three packings, bad cu_seqlens.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { RingFlashAttnError } from '../index.js';
import { nd, pack, randn, relL2, rng, suiteRuntime } from './helpers.js';
import { varlenReference } from './varlen_reference.js';

process.env.RFA_POISON = '1';
const s = suite('flash_attn_varlen (single device)');
const rt = suiteRuntime(s, { backend: 'cpu', world: 2 });

for (const causal of [true, false]) {
  s(
    `flash_attn_varlen_func: q and k lengths differ per sequence, GQA, ${causal ? 'causal' : 'full'}`,
    async () => {
      const [h, hk, d] = [4, 2, 32];
      const cuQ = [0, 5, 5, 17, 20],
        cuK = [0, 9, 12, 19, 30]; // includes an empty query sequence; a causal row without keys
      const rand = rng(causal ? 1 : 2);
      const q = randn(rand, 20 * h * d),
        k = randn(rand, 30 * hk * d),
        v = randn(rand, 30 * hk * d),
        dout = randn(rand, 20 * h * d);
      const r = await rt().call(
        'flash_attn_varlen_func',
        nd(q, [20, h, d]),
        nd(k, [30, hk, d]),
        nd(v, [30, hk, d]),
        Int32Array.from(cuQ),
        Int32Array.from(cuK),
        12,
        11,
        { causal },
      );
      const g = (await r.backward(nd(dout, [20, h, d]))) as {
        dq: { data: Float32Array };
        dk: { data: Float32Array };
        dv: { data: Float32Array };
      };
      await r.dispose();
      const ref = varlenReference({ q, k, v, cu: cuQ, cuK, h, hk, d, scale: 1 / Math.sqrt(d), causal }, dout);
      assert.equal(r.lse.shape, [h, 20]);
      for (const [name, got, want] of [
        ['out', r.out.data, ref.out],
        ['lse', r.lse.data, ref.lse],
        ['dq', g.dq.data, ref.dq],
        ['dk', g.dk.data, ref.dk],
        ['dv', g.dv.data, ref.dv],
      ] as const)
        assert.ok(relL2(got, want) <= 1e-5, `${name} ${relL2(got, want)}`);
    },
  );
}

s('flash_attn_varlen_qkvpacked_func (one cu_seqlens) and kvpacked agree with the unpacked call', async () => {
  const [h, d] = [2, 16];
  const cu = Int32Array.from([0, 7, 8, 19]);
  const rand = rng(5);
  const q = randn(rand, 19 * h * d),
    k = randn(rand, 19 * h * d),
    v = randn(rand, 19 * h * d);
  const shape = [19, h, d];
  const base = await rt().call(
    'flash_attn_varlen_func',
    nd(q, shape),
    nd(k, shape),
    nd(v, shape),
    cu,
    cu,
    11,
    11,
    0,
    null,
    true,
  );
  const qkv = await rt().call(
    'flash_attn_varlen_qkvpacked_func',
    nd(pack([q, k, v], 1, 19, h, d), [19, 3, h, d]),
    cu,
    11,
    0,
    null,
    true,
  );
  const kv = await rt().call(
    'flash_attn_varlen_kvpacked_func',
    nd(q, shape),
    nd(pack([k, v], 1, 19, h, d), [19, 2, h, d]),
    { cu_seqlens_q: cu, cu_seqlens_k: cu, max_seqlen_q: 11, max_seqlen_k: 11, causal: true },
  );
  assert.ok(relL2(qkv.out.data, base.out.data) < 1e-7);
  assert.ok(relL2(kv.out.data, base.out.data) < 1e-7);
  await Promise.all([base.dispose(), qkv.dispose(), kv.dispose()]);
});

s('bad cu_seqlens and max_seqlen raise typed errors naming the argument', async () => {
  const x = nd(new Float32Array(8 * 2 * 16).fill(0.1), [8, 2, 16]);
  const call = rt().call.bind(rt()) as (n: string, ...a: unknown[]) => Promise<unknown>;
  const cases: [unknown[], string, RegExp][] = [
    [
      [Int32Array.from([0, 8]), Int32Array.from([0, 4, 8]), 8, 8],
      'E_ARG',
      /cu_seqlens_q and cu_seqlens_k describe 1 and 2 sequences/,
    ],
    [[Int32Array.from([0, 3, 7]), Int32Array.from([0, 3, 8]), 4, 5], 'E_SHAPE', /cu_seqlens_q/],
    [[Int32Array.from([0, 8]), Int32Array.from([0, 8]), 4, 8], 'E_ARG', /max_seqlen_q/],
    [[[0, 8], Int32Array.from([0, 8]), 8, 8], 'E_DTYPE', /cu_seqlens_q/],
    [
      [Int32Array.from([0, 8]), Int32Array.from([0, 8]), 8, 8, 1],
      'E_ARG',
      /dropout_p must be a number in \[0, 1\)/,
    ],
  ];
  for (const [args, code, re] of cases) {
    try {
      await call('flash_attn_varlen_func', x, x, x, ...args);
      assert.unreachable(String(re));
    } catch (e) {
      assert.instance(e, RingFlashAttnError);
      assert.is((e as RingFlashAttnError).code, code, (e as Error).message);
      assert.match((e as Error).message, re);
    }
  }
});

s.run();

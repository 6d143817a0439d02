// ulysses_attn_*: head parallelism by two all-to-alls around the single-device kernel, against
// the fp64 reference on the full sequence (driver mode), in SPMD mode on extract_local shards, and
// its shape errors.
import * as assert from 'uvu/assert';
import { extract_local } from '../index.js';
import { denseInputs, expectError, familyNames, nd, poisonedSuite, randn, relL2, rng } from './helpers.js';
import { referenceBackward, referenceForward, refInputOf } from './reference.js';
import { bf16Single, assertWithinSingle, f32Cases, F32_TOL, runCase, type Case } from './ring_cases.js';
import { VARLEN_USER } from './varlen_spmd.js';

const NAMES = familyNames('ulysses_attn');

const { s, rts } = poisonedSuite('ulysses_attn');

const cases: Case[] = [];
for (const world of [1, 2, 3, 4, 5, 6, 7, 8])
  for (const causal of [true, false])
    cases.push({ world, b: 2, seqPerRank: 3, h: 2 * world, hk: world, d: 16, causal, packing: 'func' });
cases.push({ world: 4, b: 1, seqPerRank: 5, h: 4, hk: 4, d: 32, causal: true, packing: 'kvpacked' });
cases.push({
  world: 2,
  b: 1,
  seqPerRank: 7,
  h: 6,
  hk: 6,
  d: 64,
  causal: false,
  packing: 'qkvpacked',
  scale: 0.2,
});
cases.push({ world: 3, b: 1, seqPerRank: 4, h: 6, hk: 3, d: 16, causal: true, packing: 'kvpacked' });

const label = (c: Case) =>
  `world=${c.world} ${c.packing} b=${c.b} s=${c.world * c.seqPerRank} h=${c.h}/${c.hk} d=${c.d} ${c.causal ? 'causal' : 'full'}`;

f32Cases(s, rts, NAMES, cases, 500, label);

s(
  'bfloat16: the error stays at the single-device error (the all-to-alls move values, they do not round them again)',
  async () => {
    const c: Case = {
      world: 4,
      b: 1,
      seqPerRank: 16,
      h: 4,
      hk: 4,
      d: 64,
      causal: true,
      packing: 'func',
      dtype: 'bfloat16',
    };
    const single = await bf16Single(rts, NAMES, c, 91);
    assertWithinSingle(await runCase(await rts.get(4), NAMES, c, 91), single, 'world 4');
  },
);

s('SPMD: extract_local shards, positional arguments, GQA, backward', async () => {
  const [world, b, S, h, hk, d] = [4, 1, 16, 8, 4, 16];
  const dims = { b, sq: S, sk: S, h, hk, d };
  const { q, k, v, dout } = denseInputs(rng(17), dims);
  const local = (x: Float32Array, heads: number, r: number) => {
    const t = extract_local(nd(x, [b, S, heads, d]), r, world);
    return { data: t.data as Float32Array, shape: [...t.shape] };
  };
  const ranks = Array.from({ length: world }, (_, r) => r);
  const res = (await (
    await rts.get(world)
  ).spmd(VARLEN_USER, 'callVarlen', {
    name: 'ulysses_attn_func',
    tensors: ranks.map((r) => [local(q, h, r), local(k, hk, r), local(v, hk, r)]),
    args: ranks.map(() => [0, null, true]),
    dout: ranks.map((r) => local(dout, h, r)),
  })) as { out: { data: Float32Array }; grads: { data: Float32Array }[] }[];
  const x = refInputOf({ ...dims, causal: true }, { q, k, v });
  const ref = referenceForward(x),
    refG = referenceBackward(x, dout);
  // Contiguous shards of b = 1: concatenating the ranks' pieces is the full sequence.
  const cat = (parts: Float32Array[]) => Float32Array.from(parts.flatMap((p) => Array.from(p)));
  assert.ok(relL2(cat(res.map((r) => r.out.data)), ref.out) < F32_TOL, 'out');
  assert.ok(relL2(cat(res.map((r) => r.grads[0]!.data)), refG.dq) < F32_TOL, 'dq');
  assert.ok(relL2(cat(res.map((r) => r.grads[1]!.data)), refG.dk) < F32_TOL, 'dk');
  assert.ok(relL2(cat(res.map((r) => r.grads[2]!.data)), refG.dv) < F32_TOL, 'dv');
});

s('ulysses_attn_func is usp_attn_func with a ring of one, bit for bit', async () => {
  const rt = await rts.get(4);
  const rand = rng(3);
  const q = nd(randn(rand, 16 * 4 * 16), [1, 16, 4, 16]),
    k = nd(randn(rand, 16 * 4 * 16), [1, 16, 4, 16]),
    v = nd(randn(rand, 16 * 4 * 16), [1, 16, 4, 16]);
  const a = await rt.ulysses_attn_func(q, k, v, { causal: true });
  const b = await rt.usp_attn_func(q, k, v, { causal: true, ulysses: 4, ring: 1 });
  assert.equal(a.out.data, b.out.data);
  assert.equal(a.lse.data, b.lse.data);
  const ga = await a.backward(q),
    gb = await b.backward(q);
  assert.equal(ga.dq.data, gb.dq.data);
  assert.equal(ga.dk.data, gb.dk.data);
  await a.dispose();
  await b.dispose();
});

s(
  'head counts not divisible by the group size → E_SHAPE naming them; usp keywords are not options here; dropout → E_UNSUPPORTED',
  async () => {
    const rt = await rts.get(4);
    const t = (h: number) => nd(randn(rng(1), 8 * h * 16), [1, 8, h, 16]);
    await expectError(
      () => rt.ulysses_attn_func(t(6), t(2), t(2)),
      'E_SHAPE',
      /ulysses_attn_func: nheads \(6\) must be divisible by the Ulysses degree \(4\)/,
    );
    await expectError(
      () => rt.ulysses_attn_func(t(8), t(2), t(2)),
      'E_SHAPE',
      /ulysses_attn_func: nheads_k \(2\) must be divisible by the Ulysses degree \(4\)/,
    );
    await expectError(
      () => rt.call('ulysses_attn_func', t(4), t(4), t(4), { ulysses: 2 } as never),
      'E_ARG',
      /unknown option 'ulysses'/,
    );
    // dropout works here (test/masks.test.ts); a malformed seed is a typed error.
    await expectError(
      () => rt.ulysses_attn_func(t(4), t(4), t(4), { dropout_p: 0.5, dropout_seed: -1 }),
      'E_ARG',
      /ulysses_attn_func: dropout_seed must be a non-negative safe integer/,
    );
  },
);

s.run();

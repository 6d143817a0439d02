// usp_attn_*: Ulysses × ring. Every factorisation of worlds 2 to 8 with each ring
// variant, causal and not, GQA, against the fp64 reference on the full sequence (driver mode);
// SPMD calls on usp_extract_local shards, over a sub-group too; usp_extract_local against
// yunchang's definition; and the argument errors.
import * as assert from 'uvu/assert';
import { usp_extract_local } from '../index.js';
import { denseInputs, expectError, familyNames, nd, poisonedSuite, randn, relL2, rng } from './helpers.js';
import { referenceBackward, referenceForward, refInputOf } from './reference.js';
import { bf16Single, assertWithinSingle, f32Cases, F32_TOL, runCase, type Case } from './ring_cases.js';
import { VARLEN_USER } from './varlen_spmd.js';

const NAMES = familyNames('usp_attn');
const IMPLS = ['zigzag', 'ring', 'stripe'] as const;

const { s, rts } = poisonedSuite('usp_attn');

const factorisations = (world: number) =>
  Array.from({ length: world }, (_, i) => i + 1)
    .filter((u) => world % u === 0)
    .map((u) => ({ ulysses: u, ring: world / u }));

const cases: Case[] = [];
for (const world of [2, 3, 4, 5, 6, 7, 8])
  for (const { ulysses, ring } of factorisations(world))
    // A ring of one is the same call whatever ring_impl says.
    for (const ring_impl of ring === 1 ? (['zigzag'] as const) : IMPLS)
      for (const causal of [true, false])
        cases.push({
          world,
          b: 1,
          // The smallest shards every layout takes: zigzag cuts each ring shard in two.
          seqPerRank: 2,
          h: 2 * ulysses,
          hk: ulysses,
          d: 16,
          causal,
          packing: 'func',
          kwargs: { ulysses, ring, ring_impl },
        });
cases.push({
  world: 4,
  b: 2,
  seqPerRank: 3,
  h: 4,
  hk: 2,
  d: 32,
  causal: true,
  packing: 'kvpacked',
  kwargs: { ulysses: 2, ring_impl: 'stripe' },
});
cases.push({
  world: 4,
  b: 2,
  seqPerRank: 4,
  h: 6,
  hk: 6,
  d: 64,
  causal: true,
  packing: 'qkvpacked',
  scale: 0.3,
  kwargs: { ring: 2, ring_impl: 'zigzag' },
});
cases.push({
  world: 6,
  b: 1,
  seqPerRank: 4,
  h: 3,
  hk: 3,
  d: 16,
  causal: false,
  packing: 'qkvpacked',
  kwargs: { ulysses: 3, ring: 2, ring_impl: 'ring' },
});
cases.push({
  world: 8,
  b: 1,
  seqPerRank: 2,
  h: 8,
  hk: 2,
  d: 16,
  causal: true,
  packing: 'kvpacked',
  kwargs: { ulysses: 2, ring: 4, ring_impl: 'basic' },
});

const label = (c: Case) => {
  const k = c.kwargs!;
  return `world=${c.world} ${k.ulysses ?? '?'}×${k.ring ?? '?'} ${k.ring_impl} ${c.packing} b=${c.b} s=${c.world * c.seqPerRank} h=${c.h}/${c.hk} d=${c.d} ${c.causal ? 'causal' : 'full'}`;
};

f32Cases(s, rts, NAMES, cases, 700, label);

s('bfloat16: the error of every 2 × 2 grid stays within 1.1× the single-device error', async () => {
  const c: Case = {
    world: 4,
    b: 1,
    seqPerRank: 16,
    h: 4,
    hk: 2,
    d: 64,
    causal: true,
    packing: 'func',
    dtype: 'bfloat16',
  };
  const single = await bf16Single(rts, familyNames('flash_attn') as never, c, 93);
  for (const ring_impl of IMPLS) {
    const e = await runCase(
      await rts.get(4),
      NAMES,
      { ...c, kwargs: { ulysses: 2, ring: 2, ring_impl } },
      93,
    );
    assertWithinSingle(e, single, ring_impl);
  }
});

/** yunchang's extract helpers, written from their definitions: rows of (b, S, ...) for one rank. */
function yunchangRows(S: number, rank: number, ud: number, rd: number, impl: string): number[] {
  const all = Array.from({ length: S }, (_, i) => i);
  const chunk = (xs: number[], n: number) =>
    Array.from({ length: n }, (_, i) => xs.slice((i * xs.length) / n, ((i + 1) * xs.length) / n));
  const [r, u] = [Math.floor(rank / ud), rank % ud];
  if (impl === 'zigzag') {
    const c = chunk(all, 2 * rd);
    return chunk([...c[r]!, ...c[2 * rd - 1 - r]!], ud)[u]!;
  }
  if (impl === 'stripe') {
    // value.reshape(b, S/rd, rd, -1).transpose(1, 2): ring rank r first holds r, r + rd, ...
    const dealt = Array.from({ length: rd }, (_, rr) => all.filter((i) => i % rd === rr)).flat();
    return chunk(dealt, rd * ud)[rank]!;
  }
  return chunk(all, rd * ud)[rank]!;
}

s("usp_extract_local deals the rows as yunchang's extract helpers do", () => {
  const S = 24;
  const x = nd(
    Float32Array.from({ length: 2 * S * 3 }, (_, i) => i),
    [2, S, 3],
  );
  for (const [ulysses, ring] of [
    [2, 3],
    [3, 2],
    [1, 6],
    [6, 1],
  ] as const)
    for (const ring_impl of IMPLS)
      for (let rank = 0; rank < 6; rank++) {
        const got = usp_extract_local(x, rank, 6, { ulysses, ring, ring_impl });
        const rows = yunchangRows(S, rank, ulysses, ring, ring === 1 ? 'ring' : ring_impl);
        assert.equal(got.shape, [2, rows.length, 3]);
        const want = [0, 1].flatMap((b) => rows.flatMap((r) => [0, 1, 2].map((j) => (b * S + r) * 3 + j)));
        assert.equal(
          Array.from(got.data as Float32Array),
          want,
          `${ulysses}×${ring} ${ring_impl} rank ${rank}`,
        );
      }
  assert.equal(
    Array.from(usp_extract_local(x, 1, 2, { ring: 2, ring_impl: 'strip' }).data as Float32Array),
    Array.from(usp_extract_local(x, 1, 2, { ring: 2, ring_impl: 'stripe' }).data as Float32Array),
  );
});

s('SPMD: usp_extract_local shards on a sub-group of ranks, kwargs with the group, backward', async () => {
  const [b, S, h, hk, d] = [1, 24, 4, 2, 16];
  const members = [1, 2, 4, 5]; // ranks of a world of 6: a 2 × 2 grid over them
  const dims = { b, sq: S, sk: S, h, hk, d };
  const { q, k, v, dout } = denseInputs(rng(23), dims);
  const x = refInputOf({ ...dims, causal: true }, { q, k, v });
  const ref = referenceForward(x),
    refG = referenceBackward(x, dout);
  const rt = await rts.get(6);
  for (const ring_impl of IMPLS) {
    const degrees = { ulysses: 2, ring: 2, ring_impl };
    const local = (t: Float32Array, heads: number, r: number) => {
      const i = members.indexOf(r);
      if (i < 0) return { data: new Float32Array(heads * d), shape: [1, 1, heads, d] };
      const e = usp_extract_local(nd(t, [b, S, heads, d]), i, members.length, degrees);
      return { data: e.data as Float32Array, shape: [...e.shape] };
    };
    const ranks = Array.from({ length: 6 }, (_, r) => r);
    // Ranks outside the group attend alone (a group of one) so that every rank has a call.
    const res = (await rt.spmd(VARLEN_USER, 'callVarlen', {
      name: 'usp_attn_func',
      tensors: ranks.map((r) => [local(q, h, r), local(k, hk, r), local(v, hk, r)]),
      args: ranks.map((r) => [
        members.includes(r) ? { causal: true, group: members, ...degrees } : { causal: true, group: [r] },
      ]),
      dout: ranks.map((r) => local(dout, h, r)),
    })) as { out: { data: Float32Array }; grads: { data: Float32Array }[] }[];
    const full = (pick: (r: (typeof res)[number]) => Float32Array, heads: number) => {
      const out = new Float32Array(b * S * heads * d);
      members.forEach((r, i) => {
        const rows = yunchangRows(S, i, 2, 2, ring_impl);
        const data = pick(res[r]!);
        rows.forEach((row, j) => out.set(data.subarray(j * heads * d, (j + 1) * heads * d), row * heads * d));
      });
      return out;
    };
    const outputs = [
      ['out', h, ref.out, (r: (typeof res)[number]) => r.out.data],
      ['dq', h, refG.dq, (r: (typeof res)[number]) => r.grads[0]!.data],
      ['dk', hk, refG.dk, (r: (typeof res)[number]) => r.grads[1]!.data],
      ['dv', hk, refG.dv, (r: (typeof res)[number]) => r.grads[2]!.data],
    ] as const;
    for (const [name, heads, want, pick] of outputs)
      assert.ok(relL2(full(pick, heads), want) < F32_TOL, `${ring_impl} ${name}`);
  }
});

s('driver mode over a group of ranks; backward twice gives the same grads', async () => {
  const rt = await rts.get(3);
  const rand = rng(8);
  const [S, h, d] = [8, 2, 16];
  const t = () => nd(randn(rand, S * h * d), [1, S, h, d]);
  const [q, k, v, dout] = [t(), t(), t(), t()];
  const r = await rt.usp_attn_func(q, k, v, { causal: true, group: [0, 2], ulysses: 2 });
  const x = {
    q: q.data,
    k: k.data,
    v: v.data,
    b: 1,
    sq: S,
    sk: S,
    h,
    hk: h,
    d,
    scale: 1 / Math.sqrt(d),
    causal: true,
  };
  assert.ok(relL2(r.out.data, referenceForward(x).out) < F32_TOL);
  const g1 = await r.backward(dout),
    g2 = await r.backward(dout);
  assert.ok(relL2(g1.dk.data, referenceBackward(x, dout.data).dk) < F32_TOL);
  assert.equal(g1.dq.data, g2.dq.data);
  await r.dispose();
});

s('bad grids → E_ARG, head counts the Ulysses degree does not divide → E_SHAPE naming them', async () => {
  const rt = await rts.get(4);
  const t = (S: number, h: number) => nd(randn(rng(1), S * h * 16), [1, S, h, 16]);
  const [q, kv] = [t(16, 4), t(16, 4)];
  await expectError(
    () => rt.usp_attn_func(q, kv, kv, { ulysses: 2, ring: 3 }),
    'E_ARG',
    /usp_attn_func: ulysses \(2\) × ring \(3\) = 6 must equal the group size \(4\)/,
  );
  await expectError(
    () => rt.usp_attn_func(q, kv, kv, { ulysses: 3 }),
    'E_ARG',
    /ulysses \(3\) must divide the group size \(4\)/,
  );
  await expectError(
    () => rt.usp_attn_func(q, kv, kv, { ring: 0 }),
    'E_ARG',
    /ring must be a positive integer, got 0/,
  );
  await expectError(
    () => rt.usp_attn_func(q, kv, kv, { ulysses: 2, ring_impl: 'llama3' as never }),
    'E_ARG',
    /ring_impl must be one of 'zigzag', 'ring', 'stripe' .*got the string "llama3"/,
  );
  await expectError(
    () => rt.usp_attn_func(t(16, 6), t(16, 2), t(16, 2), { ulysses: 4 }),
    'E_SHAPE',
    /usp_attn_func: nheads \(6\) must be divisible by the Ulysses degree \(4\)/,
  );
  await expectError(
    () => rt.usp_attn_kvpacked_func(q, nd(randn(rng(2), 16 * 2 * 2 * 16), [1, 16, 2, 2, 16]), { ulysses: 4 }),
    'E_SHAPE',
    /usp_attn_kvpacked_func: nheads_k \(2\) must be divisible by the Ulysses degree \(4\)/,
  );
  await expectError(
    () => rt.usp_attn_func(t(10, 4), t(10, 4), t(10, 4), { ulysses: 2, ring_impl: 'zigzag' }),
    'E_SHAPE',
    /zigzag layout: seqlen 10 must be a positive multiple of 2·world \(4\)/,
  );
  await expectError(
    () => rt.usp_attn_func(t(6, 4), t(6, 4), t(6, 4), { ulysses: 2, ring_impl: 'ring' }),
    'E_SHAPE',
    /usp layout: seqlen 6 must be a positive multiple of ring × ulysses \(2 × 2\)/,
  );
  // dropout and ALiBi work here (test/masks.test.ts); their malformed forms are typed errors.
  await expectError(
    () => rt.usp_attn_func(q, kv, kv, { ulysses: 2, dropout_p: 1 }),
    'E_ARG',
    /usp_attn_func: dropout_p must be a number in \[0, 1\)/,
  );
  await expectError(
    () => rt.usp_attn_func(q, kv, kv, { ulysses: 2, alibi_slopes: [1, 1, 1, 1, 1, 1, 1] }),
    'E_SHAPE',
    /usp_attn_func: alibi_slopes must be \(\d+\) or \(\d+, \d+\), got \(7\)/,
  );
  await expectError(() => usp_extract_local(q, 0, 4, { ulysses: 3 }), 'E_ARG', /ulysses \(3\) must divide/);
  await expectError(
    () => usp_extract_local(q, 0, 4, { ulyses: 2 } as never),
    'E_ARG',
    /usp_extract_local: unknown option 'ulyses'/,
  );
});

// window_size and softcap reach the ring variant as they are: every grid of 4 with each ring
// variant against the fp64 masked reference.
s('window_size and softcap on every grid of 4', async () => {
  const rt = await rts.get(4);
  const [b, S, h, hk, d] = [2, 16, 8, 4, 8];
  const options: { name: string; kw: Record<string, unknown> }[] = [
    { name: 'causal window (5, 0)', kw: { causal: true, window_size: [5, 0] } },
    { name: 'window (3, 6)', kw: { window_size: [3, 6] } },
    { name: 'softcap 0.8', kw: { causal: true, softcap: 0.8 } },
  ];
  const dims = { b, sq: S, sk: S, h, hk, d };
  const { q, k, v, dout } = denseInputs(rng(61), dims);
  for (const opt of options) {
    const x = {
      q,
      k,
      v,
      b,
      sq: S,
      sk: S,
      h,
      hk,
      d,
      scale: 1 / Math.sqrt(d),
      causal: opt.kw.causal === true,
      window: opt.kw.window_size as [number, number] | undefined,
      softcap: opt.kw.softcap as number | undefined,
    };
    const ref = referenceForward(x),
      refG = referenceBackward(x, dout);
    for (const [ulysses, ring] of [
      [1, 4],
      [2, 2],
      [4, 1],
    ] as const)
      for (const ring_impl of ring === 1 ? (['ring'] as const) : IMPLS) {
        const what = `${opt.name} ${ulysses}×${ring} ${ring_impl}`;
        const r = await rt.usp_attn_func(nd(q, [b, S, h, d]), nd(k, [b, S, hk, d]), nd(v, [b, S, hk, d]), {
          ...opt.kw,
          ulysses,
          ring,
          ring_impl,
        });
        const g = await r.backward(nd(dout, [b, S, h, d]));
        await r.dispose();
        const finite = (a: ArrayLike<number>) => Array.from(a, (y) => (y === -Infinity ? 0 : y));
        for (const [key, got, want] of [
          ['out', r.out.data, ref.out],
          ['lse', finite(r.lse.data), finite(ref.lse)],
          ['dq', g.dq.data, refG.dq],
          ['dk', g.dk.data, refG.dk],
          ['dv', g.dv.data, refG.dv],
        ] as const) {
          const e = relL2(got, want);
          assert.ok(e <= F32_TOL, `${what} ${key}: rel L2 ${e.toExponential(2)}`);
        }
      }
  }
});

s('SPMD: an odd zigzag ring shard → E_SHAPE on every rank, before any transfer', async () => {
  const rt = await rts.get(4);
  const shard = { data: new Float32Array(3 * 2 * 16).fill(0.5), shape: [1, 3, 2, 16] };
  await expectError(
    () =>
      rt.spmd(VARLEN_USER, 'callVarlen', {
        name: 'usp_attn_func',
        tensors: [0, 1, 2, 3].map(() => [shard, shard, shard]),
        args: [0, 1, 2, 3].map(() => [{ causal: true, ulysses: 1, ring: 4 }]),
      }),
    'E_SHAPE',
    /ring_impl 'zigzag' needs an even ring shard, got ulysses \(1\) × local seqlen \(3\) = 3/,
  );
});

s.run();

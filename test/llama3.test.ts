// llama3_flash_attn_varlen_*: contiguous split of the packed tokens, K/V all-gathered per head
// group; and llama3_flash_attn_prepare_cu_seqlens against hand-computed values.
import * as assert from 'uvu/assert';
import { llama3_flash_attn_prepare_cu_seqlens as prepare, RingFlashAttnError } from '../index.js';
import { expectError, familyNames, nd, pack, poisonedSuite, randn, relL2, rng, unpack } from './helpers.js';
import { addStrideCases, addVarlenCases, SHARED_CU, varlenInputs, type VarlenNames } from './varlen_cases.js';
import { varlenReference } from './varlen_reference.js';
import { VARLEN_USER } from './varlen_spmd.js';

const { s, rts } = poisonedSuite('llama3_flash_attn_varlen');

const NAMES: VarlenNames = familyNames('llama3_flash_attn_varlen');
// The Python project's sets as fractions of the total: sequence boundaries fall anywhere, across ranks.
const FRACTIONS = [
  [0, 1],
  [0, 1 / 32, 0.93, 1],
  [0, 0.5, 1],
  [0, 0.38, 0.77, 0.96, 0.98, 1],
];
const pythonSets = (world: number) => FRACTIONS.map((f) => f.map((x) => Math.round(x * 64 * world)));

/** Sequences of 1, 2, 3, 1, 2, ... tokens over 4 tokens per rank (some cross ranks; one-token ones have dq = 0). */
function shortSequences(world: number): number[] {
  const cu = [0];
  for (let i = 0; cu[cu.length - 1]! < 4 * world; i++)
    cu.push(Math.min(4 * world, cu[cu.length - 1]! + 1 + (i % 3)));
  return cu;
}

addVarlenCases(s, rts, NAMES, {
  pythonSets,
  oneChunk: shortSequences,
  shared: SHARED_CU,
});

addStrideCases(s, rts, NAMES, pythonSets, 3000, () => 'func', [
  {
    world: 4,
    cu: pythonSets(4)[1]!,
    h: 4,
    hk: 2,
    d: 32,
    causal: true,
    packing: 'kvpacked',
    options: { heads_k_stride: 1 },
  },
  {
    world: 4,
    cu: pythonSets(4)[1]!,
    h: 2,
    hk: 2,
    d: 32,
    causal: false,
    packing: 'qkvpacked',
    options: { heads_k_stride: 2 },
  },
]);

type Prepared = [number[], number[], number, number, { start: number; stop: number }];
const run = (cu: number[], causal: boolean, rank: number, world: number): Prepared => {
  const [q, k, mq, mk, slice] = prepare(Int32Array.from(cu), causal, rank, world);
  assert.instance(q, Int32Array);
  assert.instance(k, Int32Array);
  return [Array.from(q), Array.from(k), mq, mk, slice];
};

s(
  'prepare_cu_seqlens: test_llama3_prepare_cu_seqlens.py case ([0, 7, 14, 16], world 8, causal), by hand',
  () => {
    const want: Prepared[] = [
      [[0, 2], [0, 2], 2, 2, { start: 0, stop: 2 }],
      [[0, 2], [0, 4], 2, 4, { start: 0, stop: 4 }],
      [[0, 2], [0, 6], 2, 6, { start: 0, stop: 6 }],
      [[0, 1, 2], [0, 7, 8], 1, 7, { start: 0, stop: 8 }],
      [[0, 2], [0, 3], 2, 3, { start: 7, stop: 10 }],
      [[0, 2], [0, 5], 2, 5, { start: 7, stop: 12 }],
      [[0, 2], [0, 7], 2, 7, { start: 7, stop: 14 }],
      [[0, 2], [0, 2], 2, 2, { start: 14, stop: 16 }],
    ];
    want.forEach((w, rank) => assert.equal(run([0, 7, 14, 16], true, rank, 8), w, `rank ${rank}`));
  },
);

s('prepare_cu_seqlens: not causal, keys run to the end of the last sequence', () => {
  assert.equal(run([0, 7, 14, 16], false, 3, 8), [[0, 1, 2], [0, 7, 14], 1, 7, { start: 0, stop: 14 }]);
  assert.equal(run([0, 7, 14, 16], false, 4, 8), [[0, 2], [0, 7], 2, 7, { start: 7, stop: 14 }]);
  assert.equal(run([0, 7, 14, 16], false, 7, 8), [[0, 2], [0, 2], 2, 2, { start: 14, stop: 16 }]);
});

s('prepare_cu_seqlens: a rank starting on a boundary, empty sequences, one rank', () => {
  assert.equal(run([0, 4, 4, 8], true, 1, 2), [[0, 0, 4], [0, 0, 4], 4, 4, { start: 4, stop: 8 }]);
  assert.equal(run([0, 4, 4, 8], true, 0, 2), [[0, 4], [0, 4], 4, 4, { start: 0, stop: 4 }]);
  assert.equal(run([0, 3, 10], false, 0, 1), [[0, 3, 10], [0, 3, 10], 7, 7, { start: 0, stop: 10 }]);
  // the Python project's GPU test set, world 4: 4232 / 4 = 1058 tokens per rank
  assert.equal(run([0, 120, 1248, 4232], true, 1, 4), [
    [0, 190, 1058],
    [0, 1128, 1996],
    868,
    1128,
    { start: 120, stop: 2116 },
  ]);
});

s('prepare_cu_seqlens: bad arguments', () => {
  const bad: [() => unknown, string, RegExp][] = [
    [() => prepare([0, 4, 8], true, 0, 2), 'E_DTYPE', /cu_seqlens must be int32/],
    [
      () => prepare(Int32Array.from([0, 5]), true, 0, 2),
      'E_SHAPE',
      /total tokens \(5\) must be a positive multiple of world_size \(2\)/,
    ],
    [() => prepare(Int32Array.from([1, 4]), true, 0, 2), 'E_ARG', /cu_seqlens must start at 0/],
    [() => prepare(Int32Array.from([0, 4, 2, 8]), true, 0, 2), 'E_ARG', /non-decreasing/],
    [() => prepare(Int32Array.from([0, 4]), true, 2, 2), 'E_ARG', /rank 2 out of range \[0, 2\)/],
    [() => prepare(Int32Array.from([0, 4]), true, 0, 0), 'E_ARG', /world_size must be a positive integer/],
  ];
  for (const [f, code, re] of bad) {
    try {
      f();
      assert.unreachable(`expected ${code}`);
    } catch (e) {
      assert.instance(e, RingFlashAttnError, String(e));
      assert.is((e as RingFlashAttnError).code, code, (e as Error).message);
      assert.match((e as Error).message, re);
    }
  }
});

s('SPMD: every rank prepares its cu_seqlens, as test_llama3_flash_attn_varlen_func.py does', async () => {
  const [world, h, d] = [4, 4, 16];
  const cu = [0, 5, 27, 30, 48]; // total 48, 12 tokens per rank; boundaries inside ranks
  const { T, q, k, v, dout } = varlenInputs({ cu, h, hk: h, d }, 41);
  const res = (await (
    await rts.get(world)
  ).spmd(VARLEN_USER, 'llama3Step', {
    qkv: { data: pack([q, k, v], 1, T, h, d), shape: [T, 3, h, d] },
    dout: { data: dout, shape: [T, h, d] },
    cu,
    causal: true,
    headsKStride: 2,
  })) as {
    out: { data: Float32Array };
    lse: { data: Float32Array; shape: number[] };
    nonCausal: { data: Float32Array };
    dqkv: { data: Float32Array };
  }[];
  const ref = varlenReference({ q, k, v, cu, h, hk: h, d, scale: 1 / Math.sqrt(d), causal: true }, dout);
  const cat = (parts: Float32Array[]) => Float64Array.from(parts.flatMap((p) => Array.from(p)));
  assert.ok(relL2(cat(res.map((r) => r.out.data)), ref.out) < 1e-5);
  const full = varlenReference({ q, k, v, cu, h, hk: h, d, scale: 1 / Math.sqrt(d), causal: false }, dout);
  assert.ok(relL2(cat(res.map((r) => r.nonCausal.data)), full.out) < 1e-5);
  assert.equal(res[0]!.lse.shape, [h, T / world]);
  const lse = new Float64Array(h * T);
  res.forEach((r, rank) => {
    for (let hi = 0; hi < h; hi++) lse.set(r.lse.data.subarray(hi * 12, (hi + 1) * 12), hi * T + rank * 12);
  });
  assert.ok(relL2(lse, ref.lse) < 1e-5);
  const dqkv = cat(res.map((r) => r.dqkv.data));
  for (const [j, want] of [
    [0, ref.dq],
    [1, ref.dk],
    [2, ref.dv],
  ] as const)
    assert.ok(relL2(unpack(dqkv, j, 3, 1, T, h, d), want) < 1e-5, `part ${j}`);
});

const L = 'llama3_flash_attn_varlen_func';
s('driver: bad arguments', async () => {
  const rt = await rts.get(2);
  const x = (n: number, heads: number) => nd(randn(rng(5), n * heads * 8), [n, heads, 8]);
  const [q, kv] = [x(16, 4), x(16, 2)];
  await expectError(
    () => rt.call(L, x(15, 4), x(15, 2), x(15, 2), Int32Array.from([0, 15]), 15),
    'E_SHAPE',
    /the total tokens \(15\) must be a multiple of world \(2\)/,
  );
  await expectError(
    () => rt.call(L, q, kv, kv, Int32Array.from([0, 7, 16]), 9, { heads_k_stride: 3 }),
    'E_ARG',
    /heads_k_stride must be a positive integer dividing nheads_k \(2\), got 3/,
  );
  await expectError(
    () => rt.call(L, q, kv, kv, Int32Array.from([0, 7, 16]), 9, { heads_k_stride: 0 }),
    'E_ARG',
    /heads_k_stride must be a positive integer/,
  );
  await expectError(
    () => rt.call(L, q, kv, kv, Int32Array.from([0, 7, 16]), 9, { heads_k_stride: {} as unknown as number }),
    'E_ARG',
    /heads_k_stride must be a positive integer dividing nheads_k \(2\), got an object$/,
  );
  await expectError(
    () => rt.call(L, q, kv, kv, new Uint32Array([0, 7, 16]), 9),
    'E_DTYPE',
    /cu_seqlens must be int32/,
  );
  await expectError(
    () => rt.call(L, q, kv, kv, Int32Array.from([0, 9, 7, 16]), 9),
    'E_ARG',
    /cu_seqlens must be non-decreasing/,
  );
  await expectError(
    () => rt.call(L, q, kv, kv, Int32Array.from([0, 7, 16]), 8),
    'E_ARG',
    /max_seqlen \(8\) must cover the longest sequence of cu_seqlens \(9\)/,
  );
});

s('SPMD: inconsistent prepared arguments', async () => {
  const rt = await rts.get(2);
  const x = (heads: number) => ({ data: new Float32Array(8 * heads * 8).fill(0.25), shape: [8, heads, 8] });
  const tensors = [x(4), x(2), x(2)];
  const cuQ = Int32Array.from([0, 3, 8]),
    cuK = Int32Array.from([0, 3, 8]);
  const call = (args: unknown[]) =>
    rt.spmd(VARLEN_USER, 'callVarlen', { name: L, tensors: [tensors, tensors], args: [args, args] });
  const slice = { start: 0, stop: 8 };
  await expectError(
    () => call([cuQ, Int32Array.from([0, 8]), 5, 8, 1, slice]),
    'E_ARG',
    /cu_seqlens_q and cu_seqlens_k must describe the same sequences, got 2 and 1/,
  );
  await expectError(
    () => call([cuQ, cuK, 5, 5, 1, { start: 4, stop: 20 }]),
    'E_ARG',
    /local_k_slice must be \{ start, stop \} within the 16 gathered keys/,
  );
  await expectError(
    () => call([cuQ, Int32Array.from([0, 3, 6]), 5, 5, 1, slice]),
    'E_SHAPE',
    /cu_seqlens_k must end at the length of local_k_slice \(8\), got 6/,
  );
  await expectError(() => call([cuQ, cuK, 5, 5]), 'E_ARG', /heads_k_stride is required/);
  await expectError(
    () => call([cuQ, cuK, 5, 4, 1, slice]),
    'E_ARG',
    /max_seqlen_k \(4\) must cover the longest sequence of cu_seqlens_k \(5\)/,
  );
  await expectError(
    () => call([cuQ, cuK, 5, 5, 1, slice, { causal: true, cu_seqlens: cuQ }]),
    'E_ARG',
    /unknown option 'cu_seqlens'/,
  );
});

s.run();

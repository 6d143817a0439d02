// ring_flash_attn_varlen_*: every sequence split evenly over the ranks.
import ndarray from 'ndarray';
import * as assert from 'uvu/assert';
import type { DriverResult } from '../index.js';
import { expectError, familyNames, poisonedSuite, randomNd, relL2, rng, unpack } from './helpers.js';
import { addVarlenCases, maxSeqlenOf, scaledSets } from './varlen_cases.js';
import { spmdVarlen, VARLEN_USER } from './varlen_spmd.js';

const { s, rts } = poisonedSuite('ring_flash_attn_varlen');

// The Python project's sets for 64 tokens per rank (it uses 8192): every sequence is a multiple of world.
addVarlenCases(
  s,
  rts,
  familyNames('ring_flash_attn_varlen'),
  scaledSets(
    [
      [0, 64],
      [0, 2, 60, 64],
      [0, 32, 64],
      [0, 24, 49, 62, 63, 64],
    ],
    [0, 1, 2, 3, 4, 5, 6],
  ),
);

s('SPMD: local shards, local cu_seqlens and positional arguments, as the Python test calls it', async () => {
  const c = { world: 4, cu: [0, 8, 28, 32, 48], h: 2, hk: 2, d: 16, zigzag: false, qkvpacked: true };
  const { world, cu, h, d } = c;
  const localCu = Int32Array.from(cu, (x) => x / world);
  const { T, res, ref, rows, placed } = await spmdVarlen(
    await rts.get(world),
    'ring_flash_attn_varlen_qkvpacked_func',
    c,
    21,
    () => [localCu, maxSeqlenOf(cu) / world, 0, null, true, [-1, -1], null, false, true],
  );
  assert.equal(res[0]!.lse!.shape, [h, T / world]);
  assert.ok(
    relL2(
      placed(
        res.map((r) => r.out.data),
        h * d,
      ),
      ref.out,
    ) < 1e-5,
  );
  const lse = new Float64Array(h * T);
  res.forEach((r, rank) =>
    rows[rank]!.forEach((row, i) => {
      for (let hi = 0; hi < h; hi++) lse[hi * T + row] = r.lse!.data[hi * (T / world) + i]!;
    }),
  );
  assert.ok(relL2(lse, ref.lse) < 1e-5);
  const dqkv = placed(
    res.map((r) => r.grads[0]!.data),
    3 * h * d,
  );
  assert.ok(relL2(unpack(dqkv, 0, 3, 1, T, h, d), ref.dq) < 1e-5);
  assert.ok(relL2(unpack(dqkv, 2, 3, 1, T, h, d), ref.dv) < 1e-5);
});

const F = 'ring_flash_attn_varlen_func';
const t = (shape: number[]) => randomNd(rng(3), shape);
const [q, k] = [t([16, 4, 8]), t([16, 2, 8])];
const cu16 = Int32Array.from([0, 8, 16]);
const bad: [
  string,
  (call: (...a: unknown[]) => Promise<DriverResult>) => Promise<unknown>,
  string,
  RegExp,
][] = [
  [
    'cu_seqlens of float32',
    (c) => c(F, q, k, k, Float32Array.from([0, 8, 16]), 8),
    'E_DTYPE',
    /cu_seqlens must be int32 \(an Int32Array or an int32 ndarray\), got Float32Array/,
  ],
  [
    'cu_seqlens as a plain array',
    (c) => c(F, q, k, k, [0, 8, 16], 8),
    'E_DTYPE',
    /cu_seqlens must be int32.*got Array/,
  ],
  ['cu_seqlens missing', (c) => c(F, q, k, k, { causal: true }), 'E_ARG', /cu_seqlens is required/],
  [
    'cu_seqlens not starting at 0',
    (c) => c(F, q, k, k, Int32Array.from([2, 8, 16]), 8),
    'E_ARG',
    /cu_seqlens must start at 0, got 2/,
  ],
  [
    'cu_seqlens decreasing',
    (c) => c(F, q, k, k, Int32Array.from([0, 10, 8, 16]), 8),
    'E_ARG',
    /cu_seqlens must be non-decreasing, got 8 after 10 at index 2/,
  ],
  [
    'cu_seqlens not ending at the total',
    (c) => c(F, q, k, k, Int32Array.from([0, 8, 12]), 8),
    'E_SHAPE',
    /cu_seqlens must end at the total tokens of q \(16\), got 12/,
  ],
  [
    'cu_seqlens with one entry',
    (c) => c(F, q, k, k, Int32Array.from([0]), 8),
    'E_SHAPE',
    /cu_seqlens must hold at least 2 entries/,
  ],
  [
    'a sequence not divisible by world',
    (c) => c(F, q, k, k, Int32Array.from([0, 5, 16]), 11),
    'E_SHAPE',
    /sequence 0 of cu_seqlens has length 5, which must be a multiple of 2 \(world\)/,
  ],
  [
    'max_seqlen below the longest sequence',
    (c) => c(F, q, k, k, Int32Array.from([0, 4, 16]), 8),
    'E_ARG',
    /max_seqlen \(8\) must cover the longest sequence of cu_seqlens \(12\)/,
  ],
  [
    'max_seqlen missing',
    (c) => c(F, q, k, k, cu16),
    'E_ARG',
    /max_seqlen must be a non-negative integer, got nothing/,
  ],
  [
    'q of rank 4',
    (c) => c(F, t([1, 16, 4, 8]), k, k, cu16, 8),
    'E_SHAPE',
    /q must be 3-d, got shape \(1, 16, 4, 8\)/,
  ],
  [
    'k total differs from q',
    (c) => c(F, q, t([8, 2, 8]), t([8, 2, 8]), cu16, 8),
    'E_SHAPE',
    /k total_tokens 8 != q total_tokens 16/,
  ],
  [
    'kv axis 1 not 2',
    (c) => c('ring_flash_attn_varlen_kvpacked_func', q, t([16, 3, 2, 8]), cu16, 8),
    'E_SHAPE',
    /kv axis 1 must be 2 \(k, v\), got 3/,
  ],
  [
    'unknown option',
    (c) => c(F, q, k, k, cu16, 8, { cu_seqlen: cu16 }),
    'E_ARG',
    /unknown option 'cu_seqlen'/,
  ],
];
for (const [name, run, code, re] of bad) {
  s(`driver: ${name} → ${code}`, async () => {
    const rt = await rts.get(2);
    await expectError(() => run(rt.call.bind(rt) as (...a: unknown[]) => Promise<DriverResult>), code, re);
  });
}

s('driver: cu_seqlens as an int32 ndarray, and as keywords', async () => {
  const rt = await rts.get(2);
  const a = await rt.call(F, q, k, k, ndarray(Int32Array.from([0, 8, 16]), [3]), 8, { causal: true });
  const b = await rt.call(F, q, k, k, { cu_seqlens: cu16, max_seqlen: 8, causal: true });
  assert.ok(relL2(a.out.data, b.out.data) === 0 && a.out.data.every(Number.isFinite));
  await Promise.all([a.dispose(), b.dispose()]);
});

s('SPMD: local k total differing from q, and a local cu_seqlens past the shard → E_SHAPE', async () => {
  const rt = await rts.get(2);
  const x = { data: new Float32Array(8 * 2 * 8).fill(0.5), shape: [8, 2, 8] };
  const y = { data: new Float32Array(6 * 2 * 8).fill(0.5), shape: [6, 2, 8] };
  const call = (tensors: (typeof x)[], args: unknown[]) =>
    rt.spmd(VARLEN_USER, 'callVarlen', { name: F, tensors: [tensors, tensors], args: [args, args] });
  await expectError(
    () => call([x, y, y], [Int32Array.from([0, 8]), 8]),
    'E_SHAPE',
    /k total_tokens 6 != q total_tokens 8/,
  );
  await expectError(
    () => call([x, x, x], [Int32Array.from([0, 4, 12]), 8]),
    'E_SHAPE',
    /cu_seqlens must end at the total tokens of q \(8\), got 12/,
  );
});

s.run();

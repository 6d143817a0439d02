// zigzag_ring_flash_attn_varlen_*: every sequence cut into 2·world chunks, zigzag per sequence.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { expectError, nd, randn, relL2, rng, Runtimes } from './helpers.js';
import { addVarlenCases, localRows, maxSeqlenOf, pickRows, placeRows } from './varlen_cases.js';
import { varlenReference } from './varlen_reference.js';

process.env.RFA_POISON = '1'; // workers start later and inherit it: unwritten elements read NaN

const USER = new URL('./fixtures/varlen_user.js', import.meta.url).href;
const s = suite('zigzag_ring_flash_attn_varlen');
const rts = new Runtimes();
s.after(() => rts.close());

const scale = (sets: number[][], world: number) => sets.map((cu) => cu.map((x) => x * world));
// The Python project's sets for 64 tokens per rank, every length even: a multiple of 2·world once scaled.
const PYTHON_SETS = [
  [0, 64],
  [0, 2, 60, 64],
  [0, 32, 64],
  [0, 24, 50, 60, 62, 64],
];

addVarlenCases(
  s,
  rts,
  {
    func: 'zigzag_ring_flash_attn_varlen_func',
    kvpacked: 'zigzag_ring_flash_attn_varlen_kvpacked_func',
    qkvpacked: 'zigzag_ring_flash_attn_varlen_qkvpacked_func',
  },
  {
    pythonSets: (world) => scale(PYTHON_SETS, world),
    oneChunk: (world) => scale([[0, 2, 4, 6, 8, 10, 12]], world)[0]!,
    shared: [0, 64, 320, 512],
  },
);

s('SPMD: zigzag shards per sequence, local cu_seqlens, GQA, as the Python test calls it', async () => {
  const [world, h, hk, d] = [3, 4, 2, 16];
  const cu = [0, 12, 18, 54, 60];
  const T = cu[cu.length - 1]!;
  const rand = rng(31);
  const q = randn(rand, T * h * d),
    k = randn(rand, T * hk * d),
    v = randn(rand, T * hk * d),
    dout = randn(rand, T * h * d);
  const rows = Array.from({ length: world }, (_, r) => localRows(cu, world, r, true));
  const localCu = Int32Array.from(cu, (x) => x / world);
  const res = (await (
    await rts.get(world)
  ).spmd(USER, 'callVarlen', {
    name: 'zigzag_ring_flash_attn_varlen_func',
    tensors: rows.map((r) => [
      { data: pickRows(q, h * d, r), shape: [r.length, h, d] },
      { data: pickRows(k, hk * d, r), shape: [r.length, hk, d] },
      { data: pickRows(v, hk * d, r), shape: [r.length, hk, d] },
    ]),
    args: rows.map(() => [localCu, maxSeqlenOf(cu) / world, { causal: true }]),
    dout: rows.map((r) => ({ data: pickRows(dout, h * d, r), shape: [r.length, h, d] })),
  })) as { out: { data: Float32Array }; grads: { data: Float32Array }[] }[];
  const ref = varlenReference({ q, k, v, cu, h, hk, d, scale: 1 / Math.sqrt(d), causal: true }, dout);
  assert.ok(
    relL2(
      placeRows(
        res.map((r) => r.out.data),
        h * d,
        rows,
        T,
      ),
      ref.out,
    ) < 1e-5,
  );
  assert.ok(
    relL2(
      placeRows(
        res.map((r) => r.grads[0]!.data),
        h * d,
        rows,
        T,
      ),
      ref.dq,
    ) < 1e-5,
  );
  assert.ok(
    relL2(
      placeRows(
        res.map((r) => r.grads[1]!.data),
        hk * d,
        rows,
        T,
      ),
      ref.dk,
    ) < 1e-5,
  );
  assert.ok(
    relL2(
      placeRows(
        res.map((r) => r.grads[2]!.data),
        hk * d,
        rows,
        T,
      ),
      ref.dv,
    ) < 1e-5,
  );
});

s('driver: a sequence not divisible by 2·world → E_SHAPE', async () => {
  const rt = await rts.get(2);
  const x = nd(randn(rng(4), 16 * 2 * 8), [16, 2, 8]);
  await expectError(
    () =>
      rt.call('zigzag_ring_flash_attn_varlen_func', x, x, x, Int32Array.from([0, 6, 16]), 10, {
        causal: true,
      }),
    'E_SHAPE',
    /sequence 0 of cu_seqlens has length 6, which must be a multiple of 4 \(2·world\)/,
  );
});

s('SPMD: a local sequence of odd length → E_SHAPE', async () => {
  const rt = await rts.get(2);
  const x = { data: new Float32Array(8 * 2 * 8).fill(0.5), shape: [8, 2, 8] };
  const args = [Int32Array.from([0, 3, 8]), 5, { causal: true }];
  await expectError(
    () =>
      rt.spmd(USER, 'callVarlen', {
        name: 'zigzag_ring_flash_attn_varlen_func',
        tensors: [
          [x, x, x],
          [x, x, x],
        ],
        args: [args, args],
      }),
    'E_SHAPE',
    /sequence 0 of cu_seqlens has length 3, which must be a multiple of 2 \(each rank holds two equal chunks of every sequence\)/,
  );
});

s.run();

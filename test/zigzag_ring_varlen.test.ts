// zigzag_ring_flash_attn_varlen_*: every sequence cut into 2·world chunks, zigzag per sequence.
import { expectError, familyNames, nd, poisonedSuite, randn, rng } from './helpers.js';
import { addVarlenCases, maxSeqlenOf, ZIGZAG_SETS } from './varlen_cases.js';
import { assertSpmdFunc, spmdVarlen, VARLEN_USER } from './varlen_spmd.js';

const { s, rts } = poisonedSuite('zigzag_ring_flash_attn_varlen');

addVarlenCases(s, rts, familyNames('zigzag_ring_flash_attn_varlen'), ZIGZAG_SETS);

s('SPMD: zigzag shards per sequence, local cu_seqlens, GQA, as the Python test calls it', async () => {
  const c = { world: 3, cu: [0, 12, 18, 54, 60], h: 4, hk: 2, d: 16, zigzag: true };
  const localCu = Int32Array.from(c.cu, (x) => x / c.world);
  const run = await spmdVarlen(await rts.get(c.world), 'zigzag_ring_flash_attn_varlen_func', c, 31, () => [
    localCu,
    maxSeqlenOf(c.cu) / c.world,
    { causal: true },
  ]);
  assertSpmdFunc(run, c);
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
      rt.spmd(VARLEN_USER, 'callVarlen', {
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

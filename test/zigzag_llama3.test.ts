// zigzag_llama3_flash_attn_varlen_*: llama3's all-gather over the zigzag varlen layout, the
// permutation of the gathered chunks, the segment table that balances causal work, and the
// prepare and extract helpers.
import * as assert from 'uvu/assert';
import {
  zigzag_llama3_extract_local,
  zigzag_llama3_flash_attn_prepare_cu_seqlens as prepare,
  zigzag_varlen_extract_local,
} from '../index.js';
import { chunkMoves, zigzagLlama3Spec } from '../api/varlen/zigzag_llama3.js';
import { expectError, familyNames, nd, poisonedSuite, randn, rng } from './helpers.js';
import { addStrideCases, addVarlenCases, localRows, ZIGZAG_SETS, type VarlenNames } from './varlen_cases.js';
import { assertSpmdFunc, spmdVarlen, VARLEN_USER } from './varlen_spmd.js';

const { s, rts } = poisonedSuite('zigzag_llama3_flash_attn_varlen');

const NAMES: VarlenNames = familyNames('zigzag_llama3_flash_attn_varlen');
addVarlenCases(s, rts, NAMES, ZIGZAG_SETS);

addStrideCases(s, rts, NAMES, ZIGZAG_SETS.pythonSets, 4000, (stride) => (stride === 2 ? 'kvpacked' : 'func'));

s('the permutation puts every gathered row in sequence order exactly once', () => {
  for (const world of [1, 2, 3, 8]) {
    const local = [0, 4, 4, 10, 16]; // an empty sequence among them
    const cu = Int32Array.from(local);
    const s = local[local.length - 1]!;
    const moved = new Array<number>(world * s).fill(-1);
    for (const m of chunkMoves(cu, world))
      for (let j = 0; j < m.rows; j++) {
        assert.is(moved[m.ordered + j], -1, `world ${world}: row ${m.ordered + j} written twice`);
        moved[m.ordered + j] = m.gathered + j;
      }
    // Gathered row g is rank r = ⌊g/s⌋'s local row; its global position in the full sequence order
    // follows from the zigzag layout: localRows gives the rank's rows in global order.
    const global = Int32Array.from(local, (x) => x * world);
    const globalOf = Array.from({ length: world }, (_, r) => localRows(Array.from(global), world, r, true));
    moved.forEach((g, ordered) => {
      assert.ok(g >= 0, `world ${world}: row ${ordered} never written`);
      assert.is(globalOf[Math.floor(g / s)]![g % s], ordered, `world ${world}: row ${ordered}`);
    });
  }
});

s('causal work is the same on every rank (and llama3-like keys never run past the query chunk)', () => {
  const local = Int32Array.from([0, 8, 20, 24]);
  for (const world of [2, 4, 8]) {
    const work = Array.from({ length: world }, (_, r) => {
      const spec = zigzagLlama3Spec(local, world, r, true);
      spec.qLen.forEach((ql, i) => assert.ok(spec.kLen[i]! >= ql, 'a chunk sees at least its own keys'));
      // keys seen, summed over query rows, with the causal triangle of each chunk's own block
      return spec.qLen.reduce((a, ql, i) => a + ql * (spec.kLen[i]! - ql) + (ql * (ql + 1)) / 2, 0);
    });
    assert.ok(
      work.every((w) => w === work[0]),
      `world ${world}: ${work.join(', ')}`,
    );
  }
});

s('each backward table has disjoint key ranges (the CUDA backward owns a key row in one segment)', () => {
  const local = Int32Array.from([0, 8, 8, 20, 24]);
  for (const world of [1, 2, 4])
    for (let rank = 0; rank < world; rank++)
      for (const causal of [true, false])
        for (const which of ['front', 'back'] as const) {
          const spec = zigzagLlama3Spec(local, world, rank, causal, which);
          const spans = spec.kStart.map((a, i) => [a, a + spec.kLen[i]!] as const).filter(([a, b]) => b > a);
          spans.forEach(([, end], i) =>
            assert.ok(
              i + 1 >= spans.length || end <= spans[i + 1]![0],
              `world ${world} rank ${rank} ${which}`,
            ),
          );
        }
});

s('SPMD: zigzag shards with cu_seqlens from the prepare helper, GQA, heads_k_stride 1', async () => {
  const c = { world: 3, cu: [0, 12, 18, 54, 60], h: 4, hk: 2, d: 16, zigzag: true };
  const run = await spmdVarlen(await rts.get(c.world), NAMES.func, c, 37, (r) => {
    const [localCu, max] = prepare(Int32Array.from(c.cu), true, r, c.world);
    return [localCu, max, 1, { causal: true }];
  });
  assertSpmdFunc(run, c);
});

s('prepare_cu_seqlens: local cu_seqlens and max_seqlen, the same for every rank; bad arguments', async () => {
  const [cu, max] = prepare(Int32Array.from([0, 8, 24, 32]), true, 1, 2);
  assert.instance(cu, Int32Array);
  assert.equal(Array.from(cu), [0, 4, 12, 16]);
  assert.is(max, 8);
  assert.equal(Array.from(prepare(Int32Array.from([0, 8, 24, 32]), false, 0, 2)[0]), [0, 4, 12, 16]);
  await expectError(
    () => prepare(Int32Array.from([0, 6, 16]), true, 0, 2),
    'E_SHAPE',
    /sequence 0 of cu_seqlens has length 6, which must be a multiple of 4/,
  );
  await expectError(() => prepare(Int32Array.from([0, 8]), true, 2, 2), 'E_ARG', /rank 2 out of range/);
  await expectError(() => prepare(Int32Array.from([0, 8]), true, 0, 0), 'E_ARG', /world_size/);
  await expectError(() => prepare([0, 8], true, 0, 2), 'E_DTYPE', /cu_seqlens must be int32/);
});

s('extract_local: the zigzag varlen rows', () => {
  const cu = Int32Array.from([0, 8, 16]);
  const x = nd(
    Float32Array.from({ length: 16 * 3 }, (_, i) => i),
    [16, 3],
  );
  for (const rank of [0, 1]) {
    const a = zigzag_llama3_extract_local(x, cu, rank, 2),
      b = zigzag_varlen_extract_local(x, cu, rank, 2);
    assert.equal(a.shape, b.shape);
    assert.equal(Array.from(a.data as Float32Array), Array.from(b.data as Float32Array));
  }
});

s('heads_k_stride that does not divide nheads_k → E_ARG; an odd local sequence → E_SHAPE', async () => {
  const rt = await rts.get(2);
  const x = nd(randn(rng(4), 16 * 2 * 8), [16, 2, 8]);
  await expectError(
    () => rt.call(NAMES.func, x, x, x, Int32Array.from([0, 8, 16]), 8, { causal: true, heads_k_stride: 3 }),
    'E_ARG',
    /heads_k_stride must be a positive integer dividing nheads_k \(2\), got the number 3|got 3/,
  );
  await expectError(
    () => rt.call(NAMES.func, x, x, x, Int32Array.from([0, 6, 16]), 10, { causal: true }),
    'E_SHAPE',
    /sequence 0 of cu_seqlens has length 6, which must be a multiple of 4 \(2·world\)/,
  );
  const y = { data: new Float32Array(8 * 2 * 8).fill(0.5), shape: [8, 2, 8] };
  const args = [Int32Array.from([0, 3, 8]), 5, 1, { causal: true }];
  await expectError(
    () =>
      rt.spmd(VARLEN_USER, 'callVarlen', {
        name: NAMES.func,
        tensors: [
          [y, y, y],
          [y, y, y],
        ],
        args: [args, args],
      }),
    'E_SHAPE',
    /sequence 0 of cu_seqlens has length 3, which must be a multiple of 2/,
  );
});

s.run();

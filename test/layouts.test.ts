// api/driver/layouts.ts: positions, shard and gather for every layout.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { gather, layoutPositions, shard } from '../api/driver/layouts.js';
import { RingFlashAttnError } from '../runtime/errors.js';

const s = suite('layouts');

s('contiguous, zigzag and stripe positions', () => {
  assert.equal(layoutPositions('contiguous', 8, 1, 2), [4, 5, 6, 7]);
  assert.equal(layoutPositions('zigzag', 8, 0, 2), [0, 1, 6, 7]);
  assert.equal(layoutPositions('zigzag', 8, 1, 2), [2, 3, 4, 5]);
  assert.equal(layoutPositions('stripe', 8, 1, 4), [1, 5]);
});

s('every layout covers each position exactly once, and gather inverts shard', () => {
  for (const layout of ['contiguous', 'zigzag', 'stripe'] as const)
    for (const world of [1, 2, 3, 4, 8]) {
      const seqlen = 2 * world * 3;
      const seen = new Set<number>();
      for (let r = 0; r < world; r++) layoutPositions(layout, seqlen, r, world).forEach((p) => seen.add(p));
      assert.is(seen.size, seqlen);
      const t = { data: Float32Array.from({ length: 2 * seqlen * 3 }, (_, i) => i), shape: [2, seqlen, 3] };
      const shards = Array.from({ length: world }, (_, r) => shard(layout, t, 1, r, world));
      assert.equal(Array.from(gather(layout, shards, 1).data), Array.from(t.data));
    }
});

s('indivisible lengths are refused with E_SHAPE', () => {
  try {
    layoutPositions('zigzag', 6, 0, 2);
    assert.unreachable();
  } catch (e) {
    assert.instance(e, RingFlashAttnError);
    assert.match((e as Error).message, /multiple of 2·world \(4\)/);
  }
});

s.run();

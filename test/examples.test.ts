// The README's SPMD example (compat/examples): a toy attention layer trained over 4 ranks must
// match the same training on one rank, and its loss must go down.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { train } from '../compat/examples/train.js';
import { relL2 } from './helpers.js';

const s = suite('examples');

s('toy attention layer: ring over 4 ranks == one rank, and the loss decreases', async () => {
  const one = await train(1);
  const four = await train(4);
  for (let i = 0; i < one.losses.length; i++)
    assert.ok(
      Math.abs(four.losses[i]! - one.losses[i]!) <= 1e-5 * one.losses[i]!,
      `step ${i}: ${four.losses[i]} vs ${one.losses[i]}`,
    );
  for (const key of ['wq', 'wk', 'wv', 'wo'] as const)
    assert.ok(relL2(four.grads[key], one.grads[key]) < 1e-5, key);
  assert.ok(one.losses[one.losses.length - 1]! < one.losses[0]!, `loss ${one.losses.join(' → ')}`);
});

s.run();

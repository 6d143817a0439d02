// compat/: extract_local helpers, update_out_and_lse, the examples' argument checks
// (tensor files: tensor_file.test.ts).
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { allowedWorlds, train } from '../compat/examples/train.js';
import {
  extract_local,
  init,
  RingFlashAttnError,
  stripe_extract_local,
  substitute_hf_flash_attn,
  update_ring_flash_attn_params,
  varlen_extract_local,
  zigzag_extract_local,
  zigzag_varlen_extract_local,
} from '../index.js';
import { nd, randn, relL2, rng } from './helpers.js';

const s = suite('compat');

s(
  'the transformers adapters exist by name and refuse with E_UNSUPPORTED, naming what to call instead',
  () => {
    for (const [name, fn] of [
      ['substitute_hf_flash_attn', substitute_hf_flash_attn],
      ['update_ring_flash_attn_params', update_ring_flash_attn_params],
    ] as const)
      assert.throws(
        () => fn(null, 1),
        (e: unknown) =>
          e instanceof RingFlashAttnError &&
          e.code === 'E_UNSUPPORTED' &&
          e.message.startsWith(name) &&
          /llama3_flash_attn_varlen_func/.test(e.message) &&
          /llama3_flash_attn_prepare_cu_seqlens/.test(e.message),
      );
  },
);

s('extract_local, zigzag_extract_local, stripe_extract_local pick the layout positions', () => {
  const x = nd(
    Float32Array.from({ length: 8 }, (_, i) => i),
    [1, 8],
  );
  assert.equal(Array.from(extract_local(x, 1, 2).data), [4, 5, 6, 7]);
  assert.equal(Array.from(zigzag_extract_local(x, 0, 2).data), [0, 1, 6, 7]);
  assert.equal(Array.from(stripe_extract_local(x, 1, 4).data), [1, 5]);
  assert.equal(
    Array.from(
      extract_local(
        nd(
          Float32Array.from({ length: 8 }, (_, i) => i),
          [2, 4],
        ),
        1,
        2,
        1,
      ).data,
    ),
    [2, 3, 6, 7],
  );
  assert.throws(
    () => extract_local(x, 2, 2),
    (e: unknown) =>
      e instanceof RingFlashAttnError && e.code === 'E_ARG' && /rank 2 out of range/.test(e.message),
  );
});

s('varlen_extract_local and zigzag_varlen_extract_local cut every sequence', () => {
  const x = nd(
    Float32Array.from({ length: 12 }, (_, i) => i),
    [12, 1],
  );
  const cu = Int32Array.from([0, 4, 12]);
  assert.equal(Array.from(varlen_extract_local(x, cu, 1, 2).data), [2, 3, 8, 9, 10, 11]);
  assert.equal(Array.from(zigzag_varlen_extract_local(x, cu, 0, 2).data), [0, 3, 4, 5, 10, 11]);
  assert.throws(
    () => varlen_extract_local(x, Int32Array.from([0, 3, 12]), 0, 2),
    (e: unknown) => e instanceof RingFlashAttnError && e.code === 'E_SHAPE',
  );
});

s('update_out_and_lse: merging two key halves equals attending to all keys', async () => {
  const rt = await init({ backend: 'cpu', world: 1 });
  const rand = rng(21);
  const shape = [1, 12, 2, 16];
  const n = 12 * 2 * 16;
  const [r] = (await rt.spmd(new URL('./fixtures/compat_user.js', import.meta.url), 'mergeHalves', {
    q: randn(rand, n),
    k: randn(rand, n),
    v: randn(rand, n),
    shape,
  })) as {
    merged: { data: Float32Array };
    whole: { data: Float32Array };
    mergedLse: { data: Float32Array };
    wholeLse: { data: Float32Array };
  }[];
  assert.ok(relL2(r!.merged.data, r!.whole.data) < 1e-6, `out ${relL2(r!.merged.data, r!.whole.data)}`);
  assert.ok(relL2(r!.mergedLse.data, r!.wholeLse.data) < 1e-6);
  await rt.close();
});

const TRAIN = fileURLToPath(new URL('../compat/examples/train.js', import.meta.url));
const WORLDS = 'one of 1, 2, 3, 4, 6, 8, 12, 16, 24, 48';

s(
  'examples/train.js: a world that does not divide the sequence is one line on stderr and exit code 2',
  () => {
    for (const arg of ['5', '0', '64', 'abc', '2.5', '']) {
      const r = spawnSync(process.execPath, [TRAIN, arg], { encoding: 'utf8', timeout: 30_000 });
      assert.is(r.status, 2, `${arg}: ${r.stderr}`);
      assert.is(r.stdout, '');
      assert.is(
        r.stderr,
        `train: world must divide the sequence length 48: ${WORLDS}; got ${JSON.stringify(arg)}\n`,
      );
    }
  },
);

s('examples/train(): a world that does not divide the sequence is E_ARG before any rank starts', async () => {
  await train(5).then(
    () => assert.unreachable('expected E_ARG'),
    (e) => {
      assert.instance(e, RingFlashAttnError);
      assert.is(e.code, 'E_ARG');
      assert.is(e.message, `train: world must divide the sequence length 48: ${WORLDS}; got 5`);
    },
  );
  assert.equal(allowedWorlds(12), [1, 2, 3, 4, 6, 12]);
});

s.run();

// flashFwd with `merge` (the ring steps' fused update_out_and_lse), on the CPU backend directly:
// attention over two key halves, the second merged onto the first, equals attention over all
// keys; with `mergeFrom` the merged rows land in a 16-bit out; bad arguments are E_ARG.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { RingFlashAttnError } from '../index.js';
import { CpuBackend } from '../runtime/cpu_backend.js';
import { fromFloat32 } from '../runtime/dtype.js';
import { randn, relL2, rng } from './helpers.js';

const s = suite('fused merge');
const [b, sq, sk, h, d] = [1, 12, 16, 2, 8];

function setup() {
  const be = new CpuBackend(10_000);
  const r = rng(7);
  // bf16 inputs: a 16-bit out must have the inputs' dtype.
  const up = (shape: number[]) =>
    be.upload(
      fromFloat32(
        randn(
          r,
          shape.reduce((x, y) => x * y, 1),
        ),
        'bfloat16',
      ),
      shape,
      'bfloat16',
    );
  const q = up([b, sq, h, d]),
    k = up([b, sk, h, d]),
    v = up([b, sk, h, d]);
  const opts = { softmaxScale: 1 / Math.sqrt(d), causal: false };
  const whole = { out: be.empty([b, sq, h, d], 'float32'), lse: be.empty([b, h, sq], 'float32') };
  be.flashFwd(q, k, v, whole.out, whole.lse, opts);
  return { be, q, k, v, opts, whole, half: sk / 2 };
}

s('merge onto the first key half equals attention over all keys (in place and into bf16)', () => {
  const { be, q, k, v, opts, whole, half } = setup();
  const out = be.empty([b, sq, h, d], 'float32'),
    lse = be.empty([b, h, sq], 'float32');
  be.flashFwd(q, k.narrow(1, 0, half), v.narrow(1, 0, half), out, lse, opts);
  const lse2 = be.empty([b, h, sq], 'float32');
  be.copy(lse2.unsqueeze(0), lse.unsqueeze(0));
  const final = be.empty([b, sq, h, d], 'bfloat16');
  be.flashFwd(q, k.narrow(1, half, half), v.narrow(1, half, half), final, lse2, {
    ...opts,
    merge: true,
    mergeFrom: out,
  });
  be.flashFwd(q, k.narrow(1, half, half), v.narrow(1, half, half), out, lse, { ...opts, merge: true });
  const ref = be.download(whole.out) as Float32Array;
  assert.ok(relL2(be.download(out) as Float32Array, ref) < 1e-6, 'in place');
  assert.ok(relL2(be.download(lse) as Float32Array, be.download(whole.lse) as Float32Array) < 1e-6, 'lse');
  assert.ok(
    relL2(be.download(lse2) as Float32Array, be.download(whole.lse) as Float32Array) < 1e-6,
    'lse (mergeFrom)',
  );
  const bf = be.download(be.cast(final, 'float32')) as Float32Array;
  assert.ok(relL2(bf, ref) < 5e-3, `bf16 final out: ${relL2(bf, ref)}`);
});

s('merging into a 16-bit out needs mergeFrom, which must be float32 and shaped like out', () => {
  const { be, q, k, v, opts } = setup();
  const lse = be.empty([b, h, sq], 'float32');
  const isArg = (re: RegExp) => (e: unknown) =>
    e instanceof RingFlashAttnError && e.code === 'E_ARG' && re.test(e.message);
  assert.throws(
    () => be.flashFwd(q, k, v, be.empty([b, sq, h, d], 'bfloat16'), lse, { ...opts, merge: true }),
    isArg(/needs mergeFrom/),
  );
  assert.throws(
    () =>
      be.flashFwd(q, k, v, be.empty([b, sq, h, d], 'bfloat16'), lse, {
        ...opts,
        merge: true,
        mergeFrom: be.empty([b, sq, h, d], 'bfloat16'),
      }),
    isArg(/mergeFrom must be float32/),
  );
  assert.throws(
    () =>
      be.flashFwd(q, k, v, be.empty([b, sq, h, d], 'bfloat16'), lse, {
        ...opts,
        merge: true,
        mergeFrom: be.empty([b, sq - 1, h, d], 'float32'),
      }),
    isArg(/shaped like out/),
  );
});

s.run();

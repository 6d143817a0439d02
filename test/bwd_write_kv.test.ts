// flashBwd with `accumulate` and `overwriteKv` (a ring step's block gradients), on the CPU backend
// directly, against the fp64 reference: dq adds onto what it held, dk and dv are written over
// whatever was there (NaN here); varlen segments refuse it with E_ARG.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { CpuBackend } from '../runtime/cpu_backend.js';
import type { DeviceTensor } from '../runtime/tensor.js';
import { randn, relL2, rng } from './helpers.js';
import { referenceBackward } from './reference.js';

const s = suite('flashBwd: accumulate dq, write dk/dv');
const [b, sq, sk, h, hk, d] = [2, 9, 13, 4, 2, 8];

function setup(causal: boolean) {
  const be = new CpuBackend(10_000);
  const r = rng(11);
  const host = {
    q: randn(r, b * sq * h * d),
    k: randn(r, b * sk * hk * d),
    v: randn(r, b * sk * hk * d),
    dout: randn(r, b * sq * h * d),
  };
  const up = (x: Float32Array, shape: number[]) => be.upload(x, shape, 'float32');
  const q = up(host.q, [b, sq, h, d]),
    k = up(host.k, [b, sk, hk, d]),
    v = up(host.v, [b, sk, hk, d]),
    dout = up(host.dout, [b, sq, h, d]);
  const o = { softmaxScale: 1 / Math.sqrt(d), causal, deterministic: false };
  const ref = referenceBackward({ ...host, b, sq, sk, h, hk, d, scale: o.softmaxScale, causal }, host.dout);
  const out = be.empty([b, sq, h, d], 'float32'),
    lse = be.empty([b, h, sq], 'float32'),
    dsum = be.empty([b, h, sq], 'float32');
  be.flashFwd(q, k, v, out, lse, o);
  be.flashBwdDot(dout, out, dsum);
  const grads = () => ({
    dq: be.empty([b, sq, h, d], 'float32'),
    dk: be.empty([b, sk, hk, d], 'float32'),
    dv: be.empty([b, sk, hk, d], 'float32'),
  });
  return { be, r, o, ref, t: { dout, q, k, v, lse, dsum }, grads };
}

for (const causal of [true, false]) {
  s(`${causal ? 'causal' : 'full'}: dq = before + block, dk/dv = block over NaN`, () => {
    const { be, r, o, ref, t } = setup(causal);
    const before = randn(r, b * sq * h * d);
    const step = {
      dq: be.upload(before, [b, sq, h, d], 'float32'),
      dk: be.empty([b, sk, hk, d], 'float32'),
      dv: be.empty([b, sk, hk, d], 'float32'),
    };
    be.fill(step.dk, NaN);
    be.fill(step.dv, NaN);
    be.flashBwd({ ...t, ...step }, { ...o, accumulate: true, overwriteKv: true });
    const want = ref.dq.map((x, i) => x + before[i]!);
    const dq = be.download(step.dq) as Float32Array;
    assert.ok(relL2(dq, want) < 1e-5, `dq accumulates: rel L2 ${relL2(dq, want)}`);
    for (const g of ['dk', 'dv'] as const) {
      const got = be.download(step[g]) as Float32Array;
      assert.ok(got.every(Number.isFinite), `${g}: every element written`);
      assert.ok(relL2(got, ref[g]) < 1e-5, `${g} written: rel L2 ${relL2(got, ref[g])}`);
    }
  });
}

s('varlen segments need dk/dv to accumulate: overwriteKv is E_ARG', () => {
  const { be, o, t, grads } = setup(true);
  const seg = be.segments({ qStart: [0], qLen: [sq], kStart: [0], kLen: [sq] });
  const g = grads();
  const narrowB = (x: DeviceTensor) => x.narrow(0, 0, 1); // varlen calls are batch 1
  const tt = {
    dout: narrowB(t.dout),
    q: narrowB(t.q),
    k: narrowB(t.k),
    v: narrowB(t.v),
    lse: narrowB(t.lse),
    dsum: narrowB(t.dsum),
  };
  assert.throws(
    () =>
      be.flashBwd(
        { ...tt, dq: narrowB(g.dq), dk: narrowB(g.dk), dv: narrowB(g.dv) },
        { ...o, seg, accumulate: true, overwriteKv: true },
      ),
    (e: unknown) =>
      (e as { code?: string }).code === 'E_ARG' &&
      /varlen segments need accumulate/.test((e as Error).message),
  );
  seg.release();
});

s.run();

// runtime/dtype.ts: bf16/f16 conversions round to nearest even, keep inf/NaN, match the C++ ones.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { bf16ToFloat, f16ToFloat, floatToBf16, floatToF16, roundThrough } from '../runtime/dtype.js';

const s = suite('dtype');

s('bfloat16 round trip and rounding to nearest even', () => {
  for (const x of [0, 1, -2.5, 3.140625, 2 ** -100, -(2 ** 100)]) assert.is(bf16ToFloat(floatToBf16(x)), x); // representable: exact
  assert.is(floatToBf16(1), 0x3f80);
  assert.is(floatToBf16(1 + 2 ** -8), 0x3f80); // exactly half way: even stays
  assert.is(floatToBf16(1 + 3 * 2 ** -8), 0x3f82); // half way above an odd: rounds up
  assert.is(bf16ToFloat(floatToBf16(Infinity)), Infinity);
  assert.ok(Number.isNaN(bf16ToFloat(floatToBf16(NaN))));
});

s('float16: normal, subnormal, overflow', () => {
  assert.is(floatToF16(1), 0x3c00);
  assert.is(f16ToFloat(floatToF16(65504)), 65504);
  assert.is(f16ToFloat(floatToF16(70000)), Infinity);
  assert.is(f16ToFloat(floatToF16(2 ** -24)), 2 ** -24);
  assert.is(f16ToFloat(floatToF16(3 * 2 ** -25)), 2 ** -23); // half way between 1 and 2 subnormal units: even (2)
  assert.is(f16ToFloat(floatToF16(-0.333251953125)), -0.333251953125);
  assert.ok(Number.isNaN(f16ToFloat(floatToF16(NaN))));
});

s('roundThrough changes values by at most half an ulp of the dtype', () => {
  const x = Float32Array.from({ length: 1000 }, (_, i) => Math.sin(i) * 10);
  const b = roundThrough(x, 'bfloat16'),
    h = roundThrough(x, 'float16');
  for (let i = 0; i < x.length; i++) {
    assert.ok(Math.abs(b[i]! - x[i]!) <= Math.abs(x[i]!) * 2 ** -8 + 1e-30);
    assert.ok(Math.abs(h[i]! - x[i]!) <= Math.abs(x[i]!) * 2 ** -11 + 2 ** -25);
  }
});

s.run();

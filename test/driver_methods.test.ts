// Driver mode's typed methods: every registry name (and its camelCase alias) is a method of the
// runtime that returns what rt.call returns for the same arguments.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import * as api from '../index.js';
import { RING_FUNCTIONS } from '../index.js';
import { camelCase, type DriverFunctionName } from '../api/driver/driver.js';
import type { DenseName, UspName, VarlenName } from '../api/types.js';
import { expectError, randomNd, rng, suiteRuntime } from './helpers.js';

// The method table covers exactly the registry's names (a compile-time check).
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const covers: Same<DriverFunctionName, DenseName | VarlenName | UspName> = true;

const s = suite('driver methods');
const rt = suiteRuntime(s, { backend: 'cpu', world: 2 });

const rand = rng(5);
const t = (shape: number[]) => randomNd(rand, shape);
const methods = () => rt() as unknown as Record<string, unknown>;
const exports = api as unknown as Record<string, unknown>;

s('every registry name is a method, and so is its camelCase alias (spelled as the SPMD alias)', () => {
  assert.ok(covers);
  const names = Object.keys(RING_FUNCTIONS);
  const families = [
    'ring_flash_attn',
    'zigzag_ring_flash_attn',
    'stripe_flash_attn',
    'flash_attn',
    'ring_flash_attn_varlen',
    'zigzag_ring_flash_attn_varlen',
    'llama3_flash_attn_varlen',
    'zigzag_llama3_flash_attn_varlen',
    'flash_attn_varlen',
    'ulysses_attn',
    'usp_attn',
  ];
  const expected = [
    ...families.flatMap((f) => [`${f}_func`, `${f}_kvpacked_func`, `${f}_qkvpacked_func`]),
    'ring_flash_attn_func_v2',
    'ring_flash_attn_kvpacked_func_v2',
    'ring_flash_attn_qkvpacked_func_v2',
  ];
  assert.equal([...names].sort(), expected.sort());
  for (const name of names) {
    assert.type(methods()[name], 'function', name);
    const alias = camelCase(name);
    assert.type(methods()[alias], 'function', alias);
    assert.is(exports[alias], exports[name], `api exports ${alias} as ${name}`);
  }
});

s('methods are not own enumerable properties (a runtime spreads and logs as before)', () => {
  assert.not.ok(Object.keys(rt()).includes('ring_flash_attn_func'));
  assert.not.ok(
    Object.prototype.propertyIsEnumerable.call(Object.getPrototypeOf(rt()), 'ring_flash_attn_func'),
  );
});

s("a dense method gives rt().call's result bit for bit, forward and backward", async () => {
  const q = t([1, 8, 4, 16]),
    k = t([1, 8, 2, 16]),
    v = t([1, 8, 2, 16]),
    dout = t([1, 8, 4, 16]);
  const a = await rt().zigzag_ring_flash_attn_func(q, k, v, { causal: true });
  const b = await rt().call('zigzag_ring_flash_attn_func', q, k, v, { causal: true });
  const c = await rt().zigzagRingFlashAttnFunc(q, k, v, 0, null, true);
  for (const r of [b, c]) {
    assert.equal(r.out.data, a.out.data);
    assert.equal(r.lse.data, a.lse.data);
  }
  const [ga, gb] = [await a.backward(dout), await b.backward(dout)];
  for (const key of ['dq', 'dk', 'dv'] as const) assert.equal(ga[key].data, gb[key].data, key);
  await Promise.all([a.dispose(), b.dispose(), c.dispose()]);
});

s("a packed varlen method gives rt().call's result", async () => {
  const qkv = t([16, 3, 2, 8]);
  const cu = Int32Array.from([0, 4, 16]);
  const a = await rt().ringFlashAttnVarlenQkvpackedFunc(qkv, cu, 12, { causal: true });
  const b = await rt().call('ring_flash_attn_varlen_qkvpacked_func', qkv, cu, 12, { causal: true });
  assert.equal(a.out.data, b.out.data);
  assert.equal(a.lse.shape, [2, 16]);
  assert.equal((await a.backward(t([16, 2, 8]))).dqkv.shape, [16, 3, 2, 8]);
  await Promise.all([a.dispose(), b.dispose()]);
});

s('methods raise the typed errors rt().call raises', async () => {
  const loose = methods().ring_flash_attn_func as (...args: unknown[]) => Promise<unknown>;
  await expectError(
    () => loose.call(rt(), t([1, 8, 4, 16])),
    'E_ARG',
    /^ring_flash_attn_func: expected 3 tensor argument\(s\) \(q, k, v\), got 1$/,
  );
  const q = t([1, 8, 4, 16]);
  await expectError(
    () => rt().stripe_flash_attn_func(q, q, q, { window_size: [2, -3] }),
    'E_ARG',
    /^stripe_flash_attn_func: window_size sides must be in \[-1, 2\^31 - 1\] \(-1: unbounded\), got \(2, -3\)$/,
  );
});

s.run();

// Bad input: every case gets a RingFlashAttnError with the right code and a message naming the
// argument, and the runtime answers the next valid call.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { init, RingFlashAttnError, type DriverResult, type RingRuntime } from '../index.js';
import { expectError, nd, randn, rng } from './helpers.js';

const s = suite('validation');
let rt: RingRuntime;
const rand = rng(11);
const t = (shape: number[]) => nd(randn(rand, shape.reduce((a, b) => a * b, 1)), shape);
const q = t([1, 8, 4, 16]), k = t([1, 8, 2, 16]), v = t([1, 8, 2, 16]);

// The untyped entry a JavaScript caller has: the wrong calls below would not compile in TS.
let call: (name: string, ...args: unknown[]) => Promise<DriverResult>;
s.before(async () => {
  rt = await init({ backend: 'cpu', world: 2 });
  call = rt.call.bind(rt) as typeof call;
});
s.after(async () => {
  await rt.close();
});


const F = 'ring_flash_attn_func';
const cases: [string, () => Promise<unknown> | unknown, string, RegExp][] = [
  ['unknown function', () => call('ring_attention', q, k, v), 'E_ARG', /unknown function 'ring_attention'/],
  ['missing tensors', () => call(F, q, k), 'E_ARG', /expected 3 tensor/],
  ['q not a tensor', () => call(F, 'q', k, v), 'E_ARG', /q must be an ndarray/],
  ['q of rank 3', () => call(F, t([8, 4, 16]), k, v), 'E_SHAPE', /q must be 4-d/],
  ['k and v differ', () => call(F, q, k, t([1, 8, 1, 16])), 'E_SHAPE', /k \(1, 8, 2, 16\) and v \(1, 8, 1, 16\)/],
  ['heads not divisible', () => call(F, t([1, 8, 3, 16]), k, v), 'E_SHAPE', /q heads \(3\) must be a multiple of k\/v heads \(2\)/],
  ['batch mismatch', () => call(F, t([2, 8, 4, 16]), k, v), 'E_SHAPE', /k batch 1 != q batch 2/],
  ['seqlen mismatch', () => call(F, t([1, 6, 4, 16]), k, v), 'E_SHAPE', /k seqlen 8 != q seqlen 6/],
  ['head_dim mismatch', () => call(F, t([1, 8, 4, 8]), k, v), 'E_SHAPE', /k head_dim 16 != q head_dim 8/],
  ['head_dim too large', () => call(F, t([1, 8, 2, 300]), t([1, 8, 2, 300]), t([1, 8, 2, 300])), 'E_UNSUPPORTED', /head_dim 300/],
  ['seqlen not divisible by world', () => call(F, t([1, 7, 2, 16]), t([1, 7, 2, 16]), t([1, 7, 2, 16])), 'E_SHAPE', /seqlen 7 must be a positive multiple of world \(2\)/],
  ['wrong data type', () => call(F, { data: new Int32Array(512), shape: [1, 8, 4, 16] }, k, v), 'E_DTYPE', /q data must be a Float32Array/],
  ['Uint16Array without dtype', () => call(F, { data: new Uint16Array(512), shape: [1, 8, 4, 16] }, k, v), 'E_DTYPE', /q.dtype/],
  ['unknown compute dtype', () => call(F, q, k, v, { dtype: 'int8' }), 'E_DTYPE', /dtype must be one of/],
  ['unknown option', () => call(F, q, k, v, { casual: true }), 'E_ARG', /unknown option 'casual'/],
  ['NaN softmax_scale', () => call(F, q, k, v, { softmax_scale: NaN }), 'E_ARG', /softmax_scale must be a positive finite number/],
  ['negative softmax_scale', () => call(F, q, k, v, 0, -1), 'E_ARG', /softmax_scale/],
  ['causal not a boolean', () => call(F, q, k, v, { causal: 'yes' }), 'E_ARG', /causal must be a boolean/],
  ['dropout', () => call(F, q, k, v, 0.1), 'E_UNSUPPORTED', /dropout_p > 0 is not supported/],
  ['sliding window', () => call(F, q, k, v, { window_size: [4, 4] }), 'E_UNSUPPORTED', /window_size other than \(-1, -1\)/],
  ['alibi', () => call(F, q, k, v, { alibi_slopes: [1, 2, 3, 4] }), 'E_UNSUPPORTED', /alibi_slopes is not supported/],
  ['softcap', () => call(F, q, k, v, { softcap: 30 }), 'E_UNSUPPORTED', /softcap is not supported/],
  ['too many positional arguments', () => call(F, q, k, v, 0, null, false, [-1, -1], null, false, false, null, 'extra'), 'E_ARG', /at most 8 arguments/],
  ['positional and keyword twice', () => call(F, q, k, v, 0, null, true, { causal: false }), 'E_ARG', /causal given both/],
  ['group rank out of range', () => call(F, q, k, v, { group: [0, 5] }), 'E_ARG', /group must list distinct ranks in \[0, 2\)/],
  ['kv axis 2 not 2', () => call('ring_flash_attn_kvpacked_func', q, t([1, 8, 3, 2, 16])), 'E_SHAPE', /kv axis 2 must be 2/],
  ['qkv axis 2 not 3', () => call('ring_flash_attn_qkvpacked_func_v2', t([1, 8, 2, 2, 16])), 'E_SHAPE', /qkv axis 2 must be 3/],
  ['zigzag: seqlen not divisible by 2·world', () => call('zigzag_ring_flash_attn_func', t([1, 6, 2, 16]), t([1, 6, 2, 16]), t([1, 6, 2, 16]), { causal: true }), 'E_SHAPE', /zigzag layout: seqlen 6 must be a positive multiple of 2·world \(4\)/],
  ['stripe: seqlen not divisible by world', () => call('stripe_flash_attn_qkvpacked_func', t([1, 5, 3, 2, 16]), { causal: true }), 'E_SHAPE', /stripe layout: seqlen 5/],
  ['init: world 0', () => init({ backend: 'cpu', world: 0 }), 'E_ARG', /world must be an integer/],
  ['init: unknown backend', () => init({ backend: 'tpu' as 'cpu' }), 'E_ARG', /backend must be 'cuda' or 'cpu'/],
  ['init: unknown option', () => init({ backend: 'cpu', wrld: 2 } as object), 'E_ARG', /unknown option 'wrld'/],
  ['init: devices of the wrong length', () => init({ backend: 'cpu', world: 2, devices: [0] }), 'E_ARG', /devices must list one device per rank/],
  ['init: unknown transport', () => init({ backend: 'cpu', world: 2, transport: 'tcp' as 'nccl' }), 'E_ARG', /transport must be 'nccl' or 'copy-engine', got "tcp"/],
];

for (const [name, run, code, fragment] of cases) {
  s(`${name} → ${code}`, async () => {
    await expectError(run, code, fragment);
  });
}

s('backward: dout of the wrong shape, and after dispose', async () => {
  const r = await rt.call(F, q, k, v, { causal: true });
  await expectError(() => r.backward(t([1, 8, 4, 8])), 'E_SHAPE', /dout shape \(1, 8, 4, 8\) != out shape \(1, 8, 4, 16\)/);
  await r.dispose();
  await expectError(() => r.backward(q), 'E_ARG', /backward after dispose/);
});

// deterministic=True: two backward passes give the same bits (the CPU kernels run in a fixed
// order; the CUDA case is in test/gpu/cuda.test.ts).
s('deterministic=True on the cpu backend: accepted, and two backward passes agree bit for bit', async () => {
  const grads = [];
  for (let i = 0; i < 2; i++) {
    const r = await rt.call(F, q, k, v, { causal: true, deterministic: true });
    grads.push(await r.backward(q));
    await r.dispose();
  }
  for (const key of ['dq', 'dk', 'dv'] as const) assert.equal(grads[0]![key].data, grads[1]![key].data, key);
});

s('the pool answers a valid call after all of the above', async () => {
  const r = await rt.call(F, q, k, v, { causal: true });
  assert.equal(r.out.shape, [1, 8, 4, 16]);
  assert.ok(r.out.data.every(Number.isFinite));
  await r.dispose();
});

s.run();

// Bad input: every case gets a RingFlashAttnError with the right code and a message naming the
// argument, and the runtime answers the next valid call.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { init, RingFlashAttnError, type DriverResult, type RingRuntime } from '../index.js';
import ndarray from 'ndarray';
import { expectError, randomNd, relL2, rng } from './helpers.js';

const s = suite('validation');
let rt: RingRuntime;
const rand = rng(11);
const t = (shape: number[]) => randomNd(rand, shape);
const q = t([1, 8, 4, 16]),
  k = t([1, 8, 2, 16]),
  v = t([1, 8, 2, 16]);

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
/** A C-order copy of an ndarray view. */
function dense(x: ndarray.NdArray<Float32Array>): ndarray.NdArray<Float32Array> {
  const out = ndarray(new Float32Array(x.size), [...x.shape]);
  const idx = new Array<number>(x.dimension).fill(0);
  for (let i = 0; i < x.size; i++) {
    out.data[i] = x.get(...idx);
    for (let a = x.dimension - 1; a >= 0 && ++idx[a]! === x.shape[a]; a--) idx[a] = 0;
  }
  return out;
}
const cases: [string, () => Promise<unknown> | unknown, string, RegExp][] = [
  ['unknown function', () => call('ring_attention', q, k, v), 'E_ARG', /unknown function 'ring_attention'/],
  ['missing tensors', () => call(F, q, k), 'E_ARG', /expected 3 tensor/],
  ['q not a tensor', () => call(F, 'q', k, v), 'E_ARG', /q must be an ndarray/],
  ['q of rank 3', () => call(F, t([8, 4, 16]), k, v), 'E_SHAPE', /q must be 4-d/],
  [
    'k and v differ',
    () => call(F, q, k, t([1, 8, 1, 16])),
    'E_SHAPE',
    /k \(1, 8, 2, 16\) and v \(1, 8, 1, 16\)/,
  ],
  [
    'heads not divisible',
    () => call(F, t([1, 8, 3, 16]), k, v),
    'E_SHAPE',
    /q heads \(3\) must be a multiple of k\/v heads \(2\)/,
  ],
  ['batch mismatch', () => call(F, t([2, 8, 4, 16]), k, v), 'E_SHAPE', /k batch 1 != q batch 2/],
  ['seqlen mismatch', () => call(F, t([1, 6, 4, 16]), k, v), 'E_SHAPE', /k seqlen 8 != q seqlen 6/],
  ['head_dim mismatch', () => call(F, t([1, 8, 4, 8]), k, v), 'E_SHAPE', /k head_dim 16 != q head_dim 8/],
  [
    'head_dim too large',
    () => call(F, t([1, 8, 2, 300]), t([1, 8, 2, 300]), t([1, 8, 2, 300])),
    'E_UNSUPPORTED',
    /head_dim 300/,
  ],
  [
    'seqlen not divisible by world',
    () => call(F, t([1, 7, 2, 16]), t([1, 7, 2, 16]), t([1, 7, 2, 16])),
    'E_SHAPE',
    /seqlen 7 must be a positive multiple of world \(2\)/,
  ],
  [
    'wrong data type',
    () => call(F, { data: new Int32Array(512), shape: [1, 8, 4, 16] }, k, v),
    'E_DTYPE',
    /q data must be a Float32Array/,
  ],
  [
    'Uint16Array without dtype',
    () => call(F, { data: new Uint16Array(512), shape: [1, 8, 4, 16] }, k, v),
    'E_DTYPE',
    /q.dtype/,
  ],
  [
    'a Float32Array tagged bfloat16',
    () => call(F, { data: q.data, shape: [1, 8, 4, 16], dtype: 'bfloat16' }, k, v),
    'E_DTYPE',
    /^ring_flash_attn_func: q.dtype is "bfloat16" but its data is a Float32Array$/,
  ],
  [
    'a Uint16Array tagged float32',
    () => call(F, { data: new Uint16Array(512), shape: [1, 8, 4, 16], dtype: 'float32' }, k, v),
    'E_DTYPE',
    /q.dtype of Uint16Array data must be bfloat16 or float16, got "float32"/,
  ],
  ['unknown compute dtype', () => call(F, q, k, v, { dtype: 'int8' }), 'E_DTYPE', /dtype must be one of/],
  ['unknown option', () => call(F, q, k, v, { casual: true }), 'E_ARG', /unknown option 'casual'/],
  [
    'NaN softmax_scale',
    () => call(F, q, k, v, { softmax_scale: NaN }),
    'E_ARG',
    /softmax_scale must be a positive finite number/,
  ],
  ['negative softmax_scale', () => call(F, q, k, v, 0, -1), 'E_ARG', /softmax_scale/],
  ['causal not a boolean', () => call(F, q, k, v, { causal: 'yes' }), 'E_ARG', /causal must be a boolean/],
  // The options themselves work (test/masks.test.ts); their malformed forms are typed errors.
  ['dropout_p of 1', () => call(F, q, k, v, 1), 'E_ARG', /dropout_p must be a number in \[0, 1\), got 1/],
  [
    'dropout_seed not an integer',
    () => call(F, q, k, v, { dropout_p: 0.1, dropout_seed: 1.5 }),
    'E_ARG',
    /dropout_seed must be a non-negative safe integer or null, got 1.5/,
  ],
  [
    'window side below -1',
    () => call(F, q, k, v, { window_size: [4, -2] }),
    'E_ARG',
    /window_size sides must be in \[-1, 2\^31 - 1\] \(-1: unbounded\), got \(4, -2\)/,
  ],
  [
    'alibi slopes of the wrong count',
    () => call(F, q, k, v, { alibi_slopes: [1, 2, 3] }),
    'E_SHAPE',
    /alibi_slopes must be \(4\) or \(1, 4\), got \(3\)/,
  ],
  [
    'alibi slopes as int32',
    () => call(F, q, k, v, { alibi_slopes: new Int32Array(4) }),
    'E_DTYPE',
    /alibi_slopes must be float32/,
  ],
  [
    'alibi slopes of rank 3',
    () => call(F, q, k, v, { alibi_slopes: { data: new Float32Array(4), shape: [1, 1, 4] } }),
    'E_SHAPE',
    /alibi_slopes must be \(nheads\) or \(batch, nheads\), got shape \(1, 1, 4\)/,
  ],
  [
    'negative softcap',
    () => call(F, q, k, v, { softcap: -1 }),
    'E_ARG',
    /softcap must be a finite number >= 0, got -1/,
  ],
  [
    'too many positional arguments',
    () => call(F, q, k, v, 0, null, false, [-1, -1], null, false, false, null, 'extra'),
    'E_ARG',
    /at most 8 arguments/,
  ],
  [
    'positional and keyword twice',
    () => call(F, q, k, v, 0, null, true, { causal: false }),
    'E_ARG',
    /causal given both/,
  ],
  [
    'group rank out of range',
    () => call(F, q, k, v, { group: [0, 5] }),
    'E_ARG',
    /group must list distinct ranks in \[0, 2\)/,
  ],
  [
    'kv axis 2 not 2',
    () => call('ring_flash_attn_kvpacked_func', q, t([1, 8, 3, 2, 16])),
    'E_SHAPE',
    /kv axis 2 must be 2/,
  ],
  [
    'qkv axis 2 not 3',
    () => call('ring_flash_attn_qkvpacked_func_v2', t([1, 8, 2, 2, 16])),
    'E_SHAPE',
    /qkv axis 2 must be 3/,
  ],
  [
    'zigzag: seqlen not divisible by 2·world',
    () =>
      call('zigzag_ring_flash_attn_func', t([1, 6, 2, 16]), t([1, 6, 2, 16]), t([1, 6, 2, 16]), {
        causal: true,
      }),
    'E_SHAPE',
    /zigzag layout: seqlen 6 must be a positive multiple of 2·world \(4\)/,
  ],
  [
    'stripe: seqlen not divisible by world',
    () => call('stripe_flash_attn_qkvpacked_func', t([1, 5, 3, 2, 16]), { causal: true }),
    'E_SHAPE',
    /stripe layout: seqlen 5/,
  ],
  ['init: world 0', () => init({ backend: 'cpu', world: 0 }), 'E_ARG', /world must be an integer/],
  [
    'init: unknown backend',
    () => init({ backend: 'tpu' as 'cpu' }),
    'E_ARG',
    /backend must be 'cuda' or 'cpu'/,
  ],
  [
    'init: unknown option',
    () => init({ backend: 'cpu', wrld: 2 } as object),
    'E_ARG',
    /unknown option 'wrld'/,
  ],
  [
    'init: devices of the wrong length',
    () => init({ backend: 'cpu', world: 2, devices: [0] }),
    'E_ARG',
    /devices must list one device per rank/,
  ],
  [
    'init: unknown transport',
    () => init({ backend: 'cpu', world: 2, transport: 'tcp' as 'nccl' }),
    'E_ARG',
    /transport must be 'nccl' or 'copy-engine', got "tcp"/,
  ],
];

// Host tensors (api/driver/host.ts, runtime/tensor.ts): shapes, strides, offsets and data lengths are
// checked arithmetically before anything is copied.
const q2 = t([2, 8, 4, 16]),
  k2 = t([2, 8, 2, 16]);
const V = 'ring_flash_attn_varlen_func';
const qv = t([16, 4, 8]),
  kv = t([16, 2, 8]);
const host = (data: Float32Array, shape: number[], extra: object = {}) => ({ data, shape, ...extra });
cases.push(
  [
    'shape of 2**31 tokens over tiny data',
    () => call(F, host(new Float32Array(8), [1, 2 ** 31, 4, 32]), k, v),
    'E_SHAPE',
    /ring_flash_attn_func: q has 8 data elements but shape \(1, 2147483648, 4, 32\) holds 274877906944; a contiguous tensor with offset 0 must hold exactly its elements: pass a copy, or a view with an explicit offset\/stride/,
  ],
  [
    'element count above 2**53',
    () => call(F, host(new Float32Array(8), [1, 2 ** 51, 4, 32]), k, v),
    'E_SHAPE',
    /q has shape \(1, 2251799813685248, 4, 32\): its element count 288230376151711740 is not a safe integer/,
  ],
  [
    'a dimension of 2**53',
    () => call(F, host(new Float32Array(8), [1, 2 ** 53, 4, 32]), k, v),
    'E_SHAPE',
    /q has shape \(1, 9007199254740992, 4, 32\): dimension 1 is 9007199254740992, expected a non-negative safe integer/,
  ],
  [
    'a fractional dimension',
    () => call(F, host(q.data, [1, 8.5, 4, 16]), k, v),
    'E_SHAPE',
    /q has shape \(1, 8.5, 4, 16\): dimension 1 is 8.5, expected/,
  ],
  [
    'a negative dimension',
    () => call(F, q, host(k.data, [1, -8, -2, 16]), v),
    'E_SHAPE',
    /k has shape \(1, -8, -2, 16\): dimension 1 is -8/,
  ],
  [
    'a dimension given as a string',
    () => call(F, host(q.data, [1, '8' as unknown as number, 4, 16]), k, v),
    'E_SHAPE',
    /dimension 1 is the string "8"/,
  ],
  [
    'a view with more elements than a typed array holds',
    () => call(F, host(new Float32Array(1), [1, 2 ** 31, 4, 32], { stride: [0, 0, 0, 0] }), k, v),
    'E_SHAPE',
    /q has shape \(1, 2147483648, 4, 32\): its 274877906944 elements are more than a host typed array holds \(4294967296\)/,
  ],
  [
    'stride [1] for a 4-d shape',
    () => call(F, host(q2.data, [2, 8, 4, 16], { stride: [1] }), k2, k2),
    'E_SHAPE',
    /q stride has 1 entries for the 4-d shape \(2, 8, 4, 16\): expected one integer per dimension/,
  ],
  [
    'stride [1] for a 4-d shape of batch 1',
    () => call(F, host(q.data, [1, 8, 4, 16], { stride: [1] }), k, v),
    'E_SHAPE',
    /q stride has 1 entries for the 4-d shape/,
  ],
  [
    'a fractional stride',
    () => call(F, host(q.data, [1, 8, 4, 16], { stride: [512, 64, 16.5, 1] }), k, v),
    'E_SHAPE',
    /q stride \(512, 64, 16.5, 1\): entry 2 is 16.5, expected an integer/,
  ],
  [
    'a stride that is not an array',
    () => call(F, host(q.data, [1, 8, 4, 16], { stride: 'C' }), k, v),
    'E_SHAPE',
    /q stride must be an array of integers, got the string "C"/,
  ],
  [
    'a fractional offset',
    () => call(F, host(new Float32Array(513), [1, 8, 4, 16], { offset: 0.5 }), k, v),
    'E_SHAPE',
    /q offset must be a non-negative integer, got 0.5/,
  ],
  [
    'a negative offset',
    () => call(F, host(q.data, [1, 8, 4, 16], { offset: -1 }), k, v),
    'E_SHAPE',
    /q offset must be a non-negative integer, got -1/,
  ],
  [
    'data 1,000 elements longer than the shape',
    () => call(F, host(new Float32Array(1512), [1, 8, 4, 16]), k, v),
    'E_SHAPE',
    /q has 1512 data elements but shape \(1, 8, 4, 16\) holds 512; .*pass a copy, or a view with an explicit offset\/stride/,
  ],
  [
    'a view reaching past the end of its data',
    () => call(F, host(q.data, [1, 8, 4, 16], { offset: 1 }), k, v),
    'E_SHAPE',
    /q \(shape \(1, 8, 4, 16\), stride \(512, 64, 16, 1\), offset 1\) reaches data index 512, but its data has 512 elements/,
  ],
  [
    'a view reaching below its data',
    () => call(F, host(q.data, [1, 8, 4, 16], { stride: [512, -64, 16, 1], offset: 63 }), k, v),
    'E_SHAPE',
    /q \(shape \(1, 8, 4, 16\), stride \(512, -64, 16, 1\), offset 63\) reaches data index -385, below 0/,
  ],
  [
    'dout with extra data',
    async () => {
      const r = await rt.call(F, q, k, v);
      try {
        return await r.backward(host(new Float32Array(600), [1, 8, 4, 16]));
      } finally {
        await r.dispose();
      }
    },
    'E_SHAPE',
    /backward: dout has 600 data elements but shape \(1, 8, 4, 16\) holds 512/,
  ],
  [
    'cu_seqlens with data longer than its shape',
    () => call(V, qv, kv, kv, { data: Int32Array.from([0, 8, 16, 99]), shape: [3] }, 8),
    'E_SHAPE',
    /ring_flash_attn_varlen_func: cu_seqlens has 4 data elements but shape \(3\) holds 3/,
  ],
  [
    'cu_seqlens strided past its data',
    () => call(V, qv, kv, kv, { data: Int32Array.from([0, 8, 16]), shape: [3], stride: [5] }, 8),
    'E_SHAPE',
    /cu_seqlens \(shape \(3\), stride \(5\), offset 0\) reaches data index 10, but its data has 3 elements/,
  ],
  [
    'cu_seqlens with a stride per missing dimension',
    () => call(V, qv, kv, kv, { data: Int32Array.from([0, 8, 16]), shape: [3], stride: [1, 1] }, 8),
    'E_SHAPE',
    /cu_seqlens stride has 2 entries for the 1-d shape \(3\)/,
  ],
  [
    'cu_seqlens of a negative length',
    () => call(V, qv, kv, kv, { data: Int32Array.from([0, 8, 16]), shape: [-1] }, 8),
    'E_SHAPE',
    /cu_seqlens has shape \(-1\): dimension 0 is -1, expected a non-negative safe integer/,
  ],
  [
    'cu_seqlens with a fractional offset',
    () => call(V, qv, kv, kv, { data: Int32Array.from([0, 0, 8, 16]), shape: [3], offset: 0.5 }, 8),
    'E_SHAPE',
    /cu_seqlens offset must be a non-negative integer, got 0.5/,
  ],
);
// Values that have no string form of their own still give typed errors naming the argument.
cases.push(
  [
    'causal without a prototype',
    () => call(F, q, k, v, { causal: Object.create(null) }),
    'E_ARG',
    /causal must be a boolean, got an object/,
  ],
  [
    'a window of symbols',
    () => call(F, q, k, v, { window_size: [Symbol('w'), 1] }),
    'E_ARG',
    /window_size must be a pair of integers, got \(a symbol, 1\)/,
  ],
  [
    'a BigInt compute dtype',
    () => call(F, q, k, v, { dtype: 1n }),
    'E_DTYPE',
    /ring_flash_attn_func: dtype must be one of float32, bfloat16, float16, got 1/,
  ],
  [
    'a BigInt dtype tag on bf16 data',
    () => call(F, { data: new Uint16Array(512), shape: [1, 8, 4, 16], dtype: 1n }, k, v),
    'E_DTYPE',
    /q.dtype of Uint16Array data must be bfloat16 or float16, got 1$/,
  ],
  [
    'an option the ranks cannot receive',
    () =>
      call('llama3_flash_attn_varlen_func', qv, kv, kv, Int32Array.from([0, 8, 16]), 8, {
        heads_k_stride: Symbol('s'),
      }),
    'E_ARG',
    /llama3_flash_attn_varlen_func: options.heads_k_stride is a symbol, which cannot be sent to the ranks/,
  ],
);
for (const name of ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf'])
  cases.push([
    `function name '${name}'`,
    () => call(name, q, k, v),
    'E_ARG',
    new RegExp(`^unknown function '${name}'; known: ring_flash_attn_func, `),
  ]);
cases.push([
  'a function name that is not a string',
  () => call(42 as unknown as string, q, k, v),
  'E_ARG',
  /function name must be a string, got 42/,
]);

// SPMD: ctx.tensor uploads through numelOf, which refuses what is not a shape.
const USER = new URL('./fixtures/spmd_user.js', import.meta.url).href;
const shards = (shape: unknown) => {
  const one = { data: new Float32Array(512), shape };
  return { q: [one, one], k: [one, one], v: [one, one], dout: [one, one], causal: false };
};
cases.push(
  [
    'ctx.tensor: negative dimensions',
    () => rt.spmd(USER, 'ringStep', shards([1, -8, 4, -16])),
    'E_SHAPE',
    /shape \(1, -8, 4, -16\): dimension 1 is -8, expected a non-negative safe integer/,
  ],
  [
    'ctx.tensor: a shape that is not an array',
    () => rt.spmd(USER, 'ringStep', shards('1x8x4x16')),
    'E_SHAPE',
    /a shape must be an array of dimensions, got the string "1x8x4x16"/,
  ],
);

for (const [name, run, code, fragment] of cases) {
  s(`${name} → ${code}`, async () => {
    await expectError(run, code, fragment);
  });
}

s('backward: dout of the wrong shape, and after dispose', async () => {
  const r = await rt.call(F, q, k, v, { causal: true });
  await expectError(
    () => r.backward(t([1, 8, 4, 8])),
    'E_SHAPE',
    /dout shape \(1, 8, 4, 8\) != out shape \(1, 8, 4, 16\)/,
  );
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

// Views the checks must keep accepting: each gives the result of its dense copy.
s('valid views (transposed, reversed, offset, broadcast-free) equal their dense copies', async () => {
  const base = t([1, 4, 8, 16]);
  const transposed = base.transpose(0, 2, 1, 3); // (1, 8, 4, 16), non-contiguous
  const wide = t([1, 9, 4, 16]);
  const views = [transposed, wide.hi(1, 8).step(1, -1), wide.lo(0, 1)];
  const ref = await rt.call(F, dense(transposed), k, v, { causal: true });
  for (const [i, view] of views.entries()) {
    const copy = dense(view);
    const a = await rt.call(F, view, k, v, { causal: true });
    const b = i === 0 ? ref : await rt.call(F, copy, k, v, { causal: true });
    assert.ok(relL2(a.out.data, b.out.data) === 0, `view ${i}`);
    await a.dispose();
    if (b !== ref) await b.dispose();
  }
  await ref.dispose();
  const cu = ndarray(Int32Array.from([99, 0, 8, 16]), [3], [1], 1);
  const r = await rt.call(V, qv, kv, kv, cu, 8);
  const r2 = await rt.call(V, qv, kv, kv, Int32Array.from([0, 8, 16]), 8);
  assert.equal(r.out.data, r2.out.data);
  await r.dispose();
  await r2.dispose();
});

s('the pool answers a valid call after all of the above', async () => {
  const r = await rt.call(F, q, k, v, { causal: true });
  assert.equal(r.out.shape, [1, 8, 4, 16]);
  assert.ok(r.out.data.every(Number.isFinite));
  await r.dispose();
});

s.run();

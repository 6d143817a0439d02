// Compile-time checks of the public types: each @ts-expect-error line must be a type error, or
// `npm run build` fails. The functions are never called; the suite only asserts they exist.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { DeviceTensor, RingRuntime } from '../index.js';
import {
  flash_attn_func,
  llama3_flash_attn_varlen_func,
  ring_flash_attn_func,
  ring_flash_attn_qkvpacked_func,
  ring_flash_attn_varlen_func,
  zigzag_ring_flash_attn_kvpacked_func,
} from '../index.js';
import { nd } from './helpers.js';

export async function driverCalls(rt: RingRuntime) {
  const x = nd(new Float32Array(16), [1, 2, 1, 8]);
  const packed = nd(new Float32Array(48), [1, 2, 3, 1, 8]);
  const r = await rt.call('ring_flash_attn_func', x, x, x, { causal: true, dtype: 'bfloat16' });
  const g = await r.backward(x);
  g.dq.data satisfies Float32Array;
  // @ts-expect-error  unpacked functions return dq/dk/dv, not dqkv
  void g.dqkv;
  const p = await rt.call('ring_flash_attn_qkvpacked_func_v2', packed, 0, null, true);
  (await p.backward(x)).dqkv satisfies unknown;
  // @ts-expect-error  a qkvpacked function takes one tensor
  await rt.call('ring_flash_attn_qkvpacked_func', packed, packed, packed);
  // @ts-expect-error  causal is a boolean
  await rt.call('stripe_flash_attn_func', x, x, x, 0, null, 'yes');
  // @ts-expect-error  kvpacked takes (q, kv)
  await rt.call('ring_flash_attn_kvpacked_func', x, x, x);
  // @ts-expect-error  flash_attn_func has softcap (a number) at position 5, not a group
  await rt.call('flash_attn_func', x, x, x, 0, null, true, [-1, -1], [0, 1]);
  // @ts-expect-error  a compute dtype the library does not have
  await rt.call('ring_flash_attn_func', x, x, x, { dtype: 'int8' });
}

// The typed methods take the parameter list rt.call takes for their name.
export async function methodCalls(rt: RingRuntime, cu: Int32Array) {
  const x = nd(new Float32Array(16), [1, 2, 1, 8]);
  const packed = nd(new Float32Array(48), [1, 2, 3, 1, 8]);
  const r = await rt.zigzag_ring_flash_attn_func(x, x, x, { causal: true, timeoutMs: 1000 });
  (await r.backward(x)).dk.data satisfies Float32Array;
  (await (await rt.ringFlashAttnQkvpackedFuncV2(packed, 0, null, true)).backward(x)).dqkv satisfies unknown;
  (
    await (
      await rt.llama3_flash_attn_varlen_kvpacked_func(x, packed, cu, 8, { heads_k_stride: 1 })
    ).backward(x)
  ).dkv satisfies unknown;
  await rt.flashAttnVarlenFunc(x, x, x, cu, cu, 8, 8, 0, null, true);
  await rt.flash_attn_varlen_qkvpacked_func(packed, cu, 8);
  // @ts-expect-error  unpacked functions return dq/dk/dv, not dqkv
  void (await r.backward(x)).dqkv;
  // @ts-expect-error  a qkvpacked method takes one tensor
  await rt.stripe_flash_attn_qkvpacked_func(packed, packed);
  // @ts-expect-error  causal is a boolean
  await rt.ringFlashAttnFunc(x, x, x, { causal: 'yes' });
  // @ts-expect-error  flash_attn_func has no group
  await rt.flash_attn_func(x, x, x, { group: [0, 1] });
  // @ts-expect-error  cu_seqlens is int32, not a number[]
  await rt.ring_flash_attn_varlen_func(x, x, x, [0, 8], 8);
  // @ts-expect-error  flash_attn_varlen_func takes cu_seqlens_q and cu_seqlens_k before the max_seqlens
  await rt.flash_attn_varlen_func(x, x, x, cu, 8, 8);
  // @ts-expect-error  no such method
  await rt.ring_flash_attn_func_v3(x, x, x);
  // rt.call with a literal name takes the same list
  await rt.call('zigzag_ring_flash_attn_varlen_func', x, x, x, cu, 8, { causal: true });
}

export function spmdCalls(
  q: DeviceTensor,
  k: DeviceTensor,
  v: DeviceTensor,
  kv: DeviceTensor,
  qkv: DeviceTensor,
) {
  ring_flash_attn_func(q, k, v, 0, null, true);
  ring_flash_attn_func(q, k, v, { causal: true, group: [0, 1] });
  ring_flash_attn_qkvpacked_func(qkv, { causal: true });
  zigzag_ring_flash_attn_kvpacked_func(q, kv, 0, 0.125, true);
  flash_attn_func(q, k, v, 0, null, true, [-1, -1], 0);
  // @ts-expect-error  qkvpacked takes one tensor
  ring_flash_attn_qkvpacked_func(q, k, v);
  // @ts-expect-error  flash_attn_func has no group
  flash_attn_func(q, k, v, { group: [0] });
}

export function varlenCalls(q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, cu: Int32Array) {
  ring_flash_attn_varlen_func(q, k, v, cu, 8, 0, null, true);
  ring_flash_attn_varlen_func(q, k, v, { cu_seqlens: cu, max_seqlen: 8, causal: true });
  llama3_flash_attn_varlen_func(q, k, v, cu, cu, 8, 8, 1, { start: 0, stop: 8 });
  llama3_flash_attn_varlen_func(q, k, v, cu, cu, 8, 8, 1, { start: 0, stop: 8 }, { causal: true });
  // @ts-expect-error  cu_seqlens is int32, not a number[]
  ring_flash_attn_varlen_func(q, k, v, [0, 8], 8);
  // @ts-expect-error  local_k_slice is { start, stop }
  llama3_flash_attn_varlen_func(q, k, v, cu, cu, 8, 8, 1, [0, 8]);
}

const s = suite('types');
s('typed entry points exist (the checks above run at compile time)', () => {
  assert.type(driverCalls, 'function');
  assert.type(methodCalls, 'function');
  assert.type(spmdCalls, 'function');
  assert.type(varlenCalls, 'function');
});
s.run();

// flash_attn_*: one device, no ring: the kernel itself behind the same wrappers, used as the
// benchmark's baseline and by code ported from flash-attn. q and k may differ in length (causal
// is then bottom-right aligned, as in flash-attn 2.x).
import { FLASH_POSITIONAL } from './args.js';
import { CallHooks } from './hooks.js';
import { attnFamily } from './wrappers.js';
import type { FlashArgs } from './types.js';
import type { RingBackwardFn, RingForwardFn, RingOptions, RingVariant } from './variant.js';

export const singleForward: RingForwardFn<RingOptions> = (backend, _g, q, k, v, o) => {
  const [b, s, h, d] = q.shape as [number, number, number, number];
  // The result is final (no merge follows): the kernel writes it in q's dtype, as FlashAttention
  // does, and the backward's rowsum(dout * out) reads that same out.
  const out = backend.empty([b, s, h, d], q.dtype);
  const lse = backend.empty([b, h, s], 'float32');
  // One device: every option's positions are the rows themselves (bottom-right aligned).
  const hooks = new CallHooks(backend, o);
  backend.flashFwd(q, k, v, out, lse, { ...o, hooks: hooks.local() });
  hooks.release();
  return { out, lse };
};

export const singleBackward: RingBackwardFn<RingOptions> = (backend, _g, dout, q, k, v, fwd, o) => {
  const [b, s, h] = q.shape as [number, number, number, number];
  const dsum = backend.empty([b, h, s], 'float32');
  backend.flashBwdDot(dout, fwd.out, dsum);
  const dq = backend.empty(q.shape, 'float32');
  const dk = backend.empty(k.shape, 'float32');
  const dv = backend.empty(v.shape, 'float32');
  const hooks = new CallHooks(backend, o);
  backend.flashBwd(
    { dout, q, k, v, lse: fwd.lse, dsum, dq, dk, dv },
    { ...o, hooks: hooks.local(), accumulate: false },
  );
  hooks.release();
  dsum.dispose();
  return { dq, dk, dv };
};

export const singleVariant: RingVariant = {
  name: 'flash_attn',
  layout: 'single',
  positional: FLASH_POSITIONAL,
  forward: singleForward,
  backward: singleBackward,
};

const family = attnFamily<FlashArgs>(singleVariant);

/**
 * flash_attn_func(q, k, v, dropout_p?, softmax_scale?, causal?, window_size?, softcap?,
 * alibi_slopes?, deterministic?, return_attn_probs?): attention on this device only.
 */
export const flash_attn_func = family.func;
/** flash_attn_kvpacked_func(q, kv (b, s_k, 2, h_k, d), ...) on this device only. */
export const flash_attn_kvpacked_func = family.kvpacked;
/** flash_attn_qkvpacked_func(qkv (b, s, 3, h, d), ...) on this device only. */
export const flash_attn_qkvpacked_func = family.qkvpacked;
export const flashAttnFunc = flash_attn_func;
export const flashAttnKvpackedFunc = flash_attn_kvpacked_func;
export const flashAttnQkvpackedFunc = flash_attn_qkvpacked_func;

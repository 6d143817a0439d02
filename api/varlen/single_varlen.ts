// flash_attn_varlen_*: one device, no ring, packed variable-length sequences (flash-attn 2.x):
//   flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, ...)
//   flash_attn_varlen_kvpacked_func(q, kv, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, ...)
//   flash_attn_varlen_qkvpacked_func(qkv, cu_seqlens, max_seqlen, ...)
// then flash-attn's tail (dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
// deterministic, return_attn_probs). q and k may hold different lengths per sequence (causal is
// bottom-right aligned per sequence). The kernels see batch-1 views and one segment table.
import { currentContext } from '../../runtime/context.js';
import { fail } from '../../runtime/errors.js';
import { FLASH_POSITIONAL, parseAttnArgs, ringOptions } from '../args.js';
import { checkCuSeqlens, checkMaxSeqlen } from './cu_seqlens.js';
import { makeFamily, VARLEN_FRAME } from '../wrappers.js';
import { segmentSpec, SegmentTables, spansOf, type SegmentSpec } from './segments.js';
import { checkQkv } from '../validate.js';
import { CallHooks } from '../hooks.js';
import type { RingBackwardFn, RingForwardFn, RingOptions, RingVariant } from '../variant.js';

export const FLASH_VARLEN_POSITIONAL = [
  'cu_seqlens_q',
  'cu_seqlens_k',
  'max_seqlen_q',
  'max_seqlen_k',
  ...FLASH_POSITIONAL,
] as const;
export const FLASH_VARLEN_QKV_POSITIONAL = ['cu_seqlens', 'max_seqlen', ...FLASH_POSITIONAL] as const;

interface SingleVarlenOptions extends RingOptions {
  seg: SegmentSpec;
}

const singleVarlenForward: RingForwardFn<SingleVarlenOptions> = (backend, _g, q, k, v, o) => {
  const [b, s, h, d] = q.shape as [number, number, number, number];
  // Final, as in singleForward: written in q's dtype (cu_seqlens cover every row, so the kernel
  // writes every row: zeros where a row sees no key).
  const out = backend.empty([b, s, h, d], q.dtype);
  const lse = backend.empty([b, h, s], 'float32');
  const tables = new SegmentTables(backend);
  const hooks = new CallHooks(backend, o);
  backend.flashFwd(q, k, v, out, lse, {
    softmaxScale: o.softmaxScale,
    causal: o.causal,
    seg: tables.get(o.seg),
    hooks: hooks.local(),
  });
  hooks.release();
  tables.release();
  return { out, lse };
};

const singleVarlenBackward: RingBackwardFn<SingleVarlenOptions> = (backend, _g, dout, q, k, v, fwd, o) => {
  const [b, s, h] = q.shape as [number, number, number, number];
  const dsum = backend.empty([b, h, s], 'float32');
  backend.flashBwdDot(dout, fwd.out, dsum);
  // Kernels with segments accumulate; keys outside every sequence keep their zero gradient.
  const dq = backend.zeros(q.shape, 'float32'),
    dk = backend.zeros(k.shape, 'float32'),
    dv = backend.zeros(v.shape, 'float32');
  const tables = new SegmentTables(backend);
  const hooks = new CallHooks(backend, o);
  backend.flashBwd(
    { dout, q, k, v, lse: fwd.lse, dsum, dq, dk, dv },
    {
      softmaxScale: o.softmaxScale,
      causal: o.causal,
      seg: tables.get(o.seg),
      hooks: hooks.local(),
      accumulate: true,
      deterministic: o.deterministic,
    },
  );
  hooks.release();
  tables.release();
  dsum.dispose();
  return { dq, dk, dv };
};

export const singleVarlenVariant: RingVariant<SingleVarlenOptions> = {
  name: 'flash_attn_varlen',
  layout: 'single',
  positional: FLASH_VARLEN_POSITIONAL,
  qkvPositional: FLASH_VARLEN_QKV_POSITIONAL,
  forward: singleVarlenForward,
  backward: singleVarlenBackward,
};

const family = makeFamily<SingleVarlenOptions, unknown[]>(
  singleVarlenVariant,
  VARLEN_FRAME,
  (fn, rest, q, k, v) => {
    // The qkvpacked form shares one cu_seqlens between q and k, as in flash-attn.
    const packed = fn.includes('_qkvpacked_');
    const a = parseAttnArgs(
      fn,
      rest,
      packed ? singleVarlenVariant.qkvPositional : singleVarlenVariant.positional,
    );
    checkQkv(fn, q, k, v);
    const [cuQName, cuKName, maxQName, maxKName] = packed
      ? ['cu_seqlens', 'cu_seqlens', 'max_seqlen', 'max_seqlen']
      : ['cu_seqlens_q', 'cu_seqlens_k', 'max_seqlen_q', 'max_seqlen_k'];
    if (a.kw[cuQName] === undefined) fail('E_ARG', `${fn}: ${cuQName} is required`);
    if (a.kw[cuKName] === undefined) fail('E_ARG', `${fn}: ${cuKName} is required`);
    const cuQ = checkCuSeqlens(fn, cuQName, a.kw[cuQName], q.shape[0]!, 'the total tokens of q');
    const cuK = checkCuSeqlens(fn, cuKName, a.kw[cuKName], k.shape[0]!, 'the total tokens of k');
    if (cuQ.length !== cuK.length)
      fail(
        'E_ARG',
        `${fn}: ${cuQName} and ${cuKName} describe ${cuQ.length - 1} and ${cuK.length - 1} sequences`,
      );
    checkMaxSeqlen(fn, maxQName, a.kw[maxQName], cuQ, cuQName);
    checkMaxSeqlen(fn, maxKName, a.kw[maxKName], cuK, cuKName);
    const ctx = currentContext();
    const o: SingleVarlenOptions = {
      ...ringOptions(a, q.shape[2]!),
      seg: segmentSpec(spansOf(cuQ), spansOf(cuK)),
    };
    return { o, group: ctx.newGroup([ctx.rank]), returnAttnProbs: a.returnAttnProbs };
  },
);

/** flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, ...) on this device only. */
export const flash_attn_varlen_func = family.func;
/** flash_attn_varlen_kvpacked_func(q, kv, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, ...) on this device only. */
export const flash_attn_varlen_kvpacked_func = family.kvpacked;
/** flash_attn_varlen_qkvpacked_func(qkv, cu_seqlens, max_seqlen, ...) on this device only. */
export const flash_attn_varlen_qkvpacked_func = family.qkvpacked;
export const flashAttnVarlenFunc = flash_attn_varlen_func;
export const flashAttnVarlenKvpackedFunc = flash_attn_varlen_kvpacked_func;
export const flashAttnVarlenQkvpackedFunc = flash_attn_varlen_qkvpacked_func;

// The wrappers of the packed varlen families: tensors (total_tokens, h, d) followed by the
// family's varlen arguments (cu_seqlens, max_seqlen, ...) and then the ring functions' usual
// tail, positional or as keywords, as in Python. The kernels see batch-1 views (VARLEN_FRAME).
import type { Group } from '../../runtime/comm.js';
import { fail } from '../../runtime/errors.js';
import type { DeviceTensor } from '../../runtime/tensor.js';
import { ATTN_POSITIONAL, parseAttnArgs, ringOptions } from '../args.js';
import { checkCuSeqlens, checkMaxSeqlen } from './cu_seqlens.js';
import { makeFamily, resolveGroup, VARLEN_FRAME, type AttnFamily } from '../wrappers.js';
import { checkQkv } from '../validate.js';
import type { RingOptions, RingVariant } from '../variant.js';

/** ring_flash_attn_varlen_func(q, k, v, cu_seqlens, max_seqlen, dropout_p, ...). */
export const VARLEN_POSITIONAL = ['cu_seqlens', 'max_seqlen', ...ATTN_POSITIONAL] as const;

/** Options of the ring and zigzag varlen variants. */
export interface VarlenOptions extends RingOptions {
  /** This rank's cu_seqlens, shared by q and k (every rank holds a piece of every sequence). */
  cuSeqlens: Int32Array;
  maxSeqlen: number;
}

/**
 * Reads a family's varlen arguments from the keyword record (`kw`, positional ones included);
 * q and k are the public (total, h, d) tensors. Throws E_ARG/E_SHAPE/E_DTYPE naming the argument.
 */
export type ReadVarlen<O extends RingOptions> = (
  fn: string,
  kw: Record<string, unknown>,
  q: DeviceTensor,
  k: DeviceTensor,
  base: RingOptions,
  group: Group,
) => O;

export function varlenFamily<O extends RingOptions, R extends unknown[]>(
  variant: RingVariant<O>,
  read: ReadVarlen<O>,
): AttnFamily<R> {
  const positional = variant.positional ?? VARLEN_POSITIONAL;
  return makeFamily<O, R>(variant, VARLEN_FRAME, (fn, rest, q, k, v) => {
    const a = parseAttnArgs(fn, rest, positional);
    checkQkv(fn, q, k, v);
    const group = resolveGroup(fn, a.group);
    const base = ringOptions(a, q.shape[2]!);
    return { o: read(fn, a.kw, q, k, base, group), group, returnAttnProbs: a.returnAttnProbs };
  });
}

/** cu_seqlens and max_seqlen of the ring and zigzag varlen functions (local to this rank). */
export function readCuSeqlens(
  fn: string,
  kw: Record<string, unknown>,
  q: DeviceTensor,
  k: DeviceTensor,
  base: RingOptions,
): VarlenOptions {
  if (k.shape[0] !== q.shape[0])
    fail(
      'E_SHAPE',
      `${fn}: k total_tokens ${k.shape[0]} != q total_tokens ${q.shape[0]} (q and k share cu_seqlens)`,
    );
  if (kw.cu_seqlens === undefined) fail('E_ARG', `${fn}: cu_seqlens is required`);
  const cuSeqlens = checkCuSeqlens(fn, 'cu_seqlens', kw.cu_seqlens, q.shape[0]!, 'the total tokens of q');
  const maxSeqlen = checkMaxSeqlen(fn, 'max_seqlen', kw.max_seqlen, cuSeqlens, 'cu_seqlens');
  return { ...base, cuSeqlens, maxSeqlen };
}

// Parameter objects for the native kernels (native/bindings/params.h reads them). Both backends
// build them here, so the CPU and CUDA kernels receive identical arguments.
import { DTYPE_CODE } from './dtype.js';
import { fail } from './errors.js';
import type { DeviceTensor } from './tensor.js';

export interface AttnOptions {
  softmaxScale: number;
  causal: boolean;
  /** Packed variable-length sequences (native/attn_params.h Segments); batch must be 1. */
  seg?: SegmentTable;
  /** The option hooks (window, softcap, ALiBi, dropout) and the rows' global positions; absent: off. */
  hooks?: ScoreHooks;
}

/** native/attn_params.h ScoreMods: absent fields are off. */
export interface ScoreHooks {
  /** flash-attn's window_size sides; -1 unbounded. */
  windowLeft?: number;
  windowRight?: number;
  softcap?: number;
  /** fp32 slopes, contiguous: (nheads), or (batch, nheads) with `batchStride` nheads (0: per head only). */
  alibi?: { slopes: DeviceTensor; batchStride: number };
  /** The global index of the call's first query head, for a call over a slice of the heads. */
  headOffset?: number;
  dropoutP?: number;
  /** A non-negative safe integer. */
  dropoutSeed?: number;
  /** Global positions of the call's query and key rows (Backend.positions); absent: local rows. */
  positions?: PositionTable;
}

/**
 * Global positions of a kernel call's rows in the backend's memory, made by Backend.positions();
 * release() when the call's work is done.
 */
export interface PositionTable {
  /** Native view object: q_pos, k_pos (int32), diag and, for varlen, seq_tok. */
  readonly native: object;
  release(): void;
}

/**
 * flashFwd only: merge the block into the running out/lse instead of overwriting them; the
 * running fp32 out is `out` itself, or `mergeFrom` (then out may be 16-bit: a final result).
 */
export interface FwdOptions extends AttnOptions {
  merge?: boolean;
  mergeFrom?: DeviceTensor;
}

/**
 * Segments of a varlen kernel call in the backend's memory: segment i covers query rows
 * [qStart[i], qStart[i] + qLen[i]) and key rows [kStart[i], kStart[i] + kLen[i]).
 * Made by Backend.segments(); release() when the call's work is done.
 */
export interface SegmentTable {
  readonly numSeqs: number;
  readonly maxSeqlenQ: number;
  readonly maxSeqlenK: number;
  /** Native view object (int32 arrays). */
  readonly native: object;
  release(): void;
}

function bsh(t: DeviceTensor, name: string) {
  if (t.ndim !== 4) fail('E_SHAPE', `${name} must be (batch, seqlen, heads, head_dim), got ${t.ndim}-d`);
  return t.kernelView(3);
}

/**
 * A (batch, seqlen, heads, head_dim) tensor's sizes under the key names its kernel's struct reads
 * (params.h bsh_dims): the structs spell the sequence and head counts differently.
 */
function bshDims<S extends string, H extends string>(t: DeviceTensor, seqlen: S, heads: H) {
  const [batch, n, h, head_dim] = t.shape;
  return { batch, [seqlen]: n, [heads]: h, head_dim } as Record<'batch' | S | H | 'head_dim', number>;
}

function bhs(t: DeviceTensor, name: string) {
  if (t.ndim !== 3 || t.dtype !== 'float32')
    fail('E_SHAPE', `${name} must be float32 (batch, heads, seqlen)`);
  return t.kernelView(3);
}

function shape(q: DeviceTensor, k: DeviceTensor, o: AttnOptions) {
  return {
    batch: q.shape[0],
    seqlen_q: q.shape[1],
    seqlen_k: k.shape[1],
    nheads: q.shape[2],
    nheads_k: k.shape[2],
    head_dim: q.shape[3],
    softmax_scale: o.softmaxScale,
    causal: o.causal,
  };
}

const TWO_32 = 4294967296;

function modsArgs(h: ScoreHooks | undefined) {
  if (!h) return undefined;
  const mods: Record<string, unknown> = { ...h.positions?.native };
  if (h.windowLeft !== undefined) mods.window_left = h.windowLeft;
  if (h.windowRight !== undefined) mods.window_right = h.windowRight;
  if (h.softcap) mods.softcap = h.softcap;
  if (h.alibi) {
    if (h.alibi.slopes.dtype !== 'float32') fail('E_DTYPE', 'alibi slopes must be float32');
    mods.alibi_slopes = flat(h.alibi.slopes, 'alibi_slopes');
    mods.alibi_batch_stride = h.alibi.batchStride;
  }
  if (h.headOffset) mods.head0 = h.headOffset;
  if (h.dropoutP) {
    const seed = h.dropoutSeed;
    if (seed === undefined || !Number.isSafeInteger(seed) || seed < 0)
      fail('E_ARG', 'dropout needs a non-negative safe integer seed');
    mods.dropout_p = h.dropoutP;
    mods.dropout_seed_lo = seed % TWO_32;
    mods.dropout_seed_hi = Math.floor(seed / TWO_32);
  }
  return mods;
}

export function fwdArgs(
  q: DeviceTensor,
  k: DeviceTensor,
  v: DeviceTensor,
  out: DeviceTensor,
  lse: DeviceTensor,
  o: FwdOptions,
) {
  const from = o.merge ? o.mergeFrom : undefined;
  if (o.merge && !from && out.dtype !== 'float32')
    fail('E_ARG', 'flashFwd: merging into a 16-bit out needs mergeFrom (the running fp32 out)');
  if (from && (from.dtype !== 'float32' || from.shape.join() !== out.shape.join()))
    fail('E_ARG', 'flashFwd: mergeFrom must be float32 and shaped like out');
  return {
    merge: o.merge === true,
    merge_src: from ? bsh(from, 'mergeFrom') : undefined,
    shape: shape(q, k, o),
    dtype: DTYPE_CODE[q.dtype],
    seg: o.seg?.native,
    mods: modsArgs(o.hooks),
    q: bsh(q, 'q'),
    k: bsh(k, 'k'),
    v: bsh(v, 'v'),
    out: bsh(out, 'out'),
    out_dtype: DTYPE_CODE[out.dtype],
    lse: bhs(lse, 'lse'),
  };
}

export function bwdDotArgs(dout: DeviceTensor, out: DeviceTensor, dsum: DeviceTensor) {
  return {
    ...bshDims(dout, 'seqlen_q', 'nheads'),
    dtype: DTYPE_CODE[dout.dtype],
    dout: bsh(dout, 'dout'),
    out: bsh(out, 'out'),
    out_dtype: DTYPE_CODE[out.dtype],
    dsum: bhs(dsum, 'dsum'),
  };
}

export interface BwdTensors {
  dout: DeviceTensor;
  q: DeviceTensor;
  k: DeviceTensor;
  v: DeviceTensor;
  lse: DeviceTensor;
  dsum: DeviceTensor;
  dq: DeviceTensor;
  dk: DeviceTensor;
  dv: DeviceTensor;
}

/**
 * flashBwd: `accumulate` adds the block's gradients onto dq, dk and dv (a ring step) instead of
 * overwriting them; with it, `overwriteKv` still writes dk and dv (a ring step's block gradients into a
 * fresh buffer, which needs no zero fill first). Varlen calls must accumulate all three: rows
 * outside the segments keep what they had.
 */
export interface BwdOptions extends AttnOptions {
  accumulate: boolean;
  overwriteKv?: boolean;
  /**
   * The same bits every run (on CUDA: dq's parts added in key-tile order; slower). Required: it is
   * the call's `deterministic` (RingOptions), and a kernel call that left it out would quietly
   * break the promise.
   */
  deterministic: boolean;
}

export function bwdArgs(t: BwdTensors, o: BwdOptions) {
  return {
    shape: shape(t.q, t.k, o),
    dtype: DTYPE_CODE[t.q.dtype],
    seg: o.seg?.native,
    mods: modsArgs(o.hooks),
    q: bsh(t.q, 'q'),
    k: bsh(t.k, 'k'),
    v: bsh(t.v, 'v'),
    dout: bsh(t.dout, 'dout'),
    lse: bhs(t.lse, 'lse'),
    dsum: bhs(t.dsum, 'dsum'),
    dq: bsh(t.dq, 'dq'),
    dk: bsh(t.dk, 'dk'),
    dv: bsh(t.dv, 'dv'),
    accumulate: o.accumulate,
    overwrite_dkv: o.overwriteKv === true,
    deterministic: o.deterministic,
  };
}

export function mergeArgs(
  out: DeviceTensor,
  lse: DeviceTensor,
  blockOut: DeviceTensor,
  blockLse: DeviceTensor,
) {
  return {
    ...bshDims(out, 'seqlen', 'nheads'),
    out: bsh(out, 'out'),
    lse: bhs(lse, 'lse'),
    block_out: bsh(blockOut, 'block_out'),
    block_lse: bhs(blockLse, 'block_lse'),
  };
}

export function copyArgs(dst: DeviceTensor, src: DeviceTensor) {
  if (dst.dtype !== src.dtype) fail('E_DTYPE', `copy: ${src.dtype} into ${dst.dtype}`);
  if (dst.shape.join() !== src.shape.join())
    fail('E_SHAPE', `copy: ${src.shape.join('x')} into ${dst.shape.join('x')}`);
  return {
    ...bshDims(src, 'seqlen', 'heads'),
    dtype: DTYPE_CODE[src.dtype],
    src: bsh(src, 'src'),
    dst: bsh(dst, 'dst'),
  };
}

export function flat(t: DeviceTensor, name: string) {
  if (!t.isContiguous()) fail('E_SHAPE', `${name} must be contiguous`);
  return { data: t.storage.data, offset: t.offset, strides: [1] };
}

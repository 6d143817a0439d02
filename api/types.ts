// Types that make wrong calls fail to compile where they can: the Python positional arguments
// after the tensors, in order, optionally followed by (or replaced with) a keyword object.
import type { Group } from '../runtime/comm.js';
import type { DType } from '../runtime/dtype.js';
import type { DeviceTensor } from '../runtime/tensor.js';
import type { AttnKwargs } from './args.js';

/** alibi_slopes: fp32, (nheads) or (batch, nheads). */
export type AlibiSlopesArg =
  | Float32Array
  | readonly number[]
  | DeviceTensor
  | { data: Float32Array; shape: readonly number[]; stride?: readonly number[]; offset?: number };

/** Every prefix of a tuple, the empty one included: the optional positional arguments. */
export type Prefixes<T extends readonly unknown[]> = T extends readonly [...infer H, unknown]
  ? T | Prefixes<H>
  : T;

/** Positional arguments of the ring functions after the tensors (ring_flash_attn_func order). */
export type RingPositional = [
  dropout_p: number,
  softmax_scale: number | null,
  causal: boolean,
  window_size: readonly [number, number] | null,
  alibi_slopes: AlibiSlopesArg | null,
  deterministic: boolean,
  return_attn_probs: boolean,
  group: Group | readonly number[] | null,
];

/** Positional arguments of flash_attn_func and friends (flash-attn 2.x order, no group). */
export type FlashPositional = [
  dropout_p: number,
  softmax_scale: number | null,
  causal: boolean,
  window_size: readonly [number, number] | null,
  softcap: number,
  alibi_slopes: AlibiSlopesArg | null,
  deterministic: boolean,
  return_attn_probs: boolean,
];

/**
 * Optional positional arguments, then optionally the keyword object. An all-optional interface
 * would accept a stray string, array or tensor in that place: `object` and the `never` fields keep
 * both out.
 */
export type PythonArgs<P extends readonly unknown[], K> =
  Prefixes<P> | [...Prefixes<P>, K & object & { data?: never; shape?: never; length?: never }];

export type RingArgs = PythonArgs<RingPositional, AttnKwargs>;
export type FlashArgs = PythonArgs<FlashPositional, Omit<AttnKwargs, 'group'>>;

/** Keyword arguments in driver mode: the Python ones plus the compute dtype. */
/** Driver mode's options beside the Python keywords: the compute dtype, and the call's deadline and cancellation. */
export type DriverKwargs = AttnKwargs & { dtype?: DType; timeoutMs?: number; signal?: AbortSignal };
export type DriverRingArgs = PythonArgs<RingPositional, DriverKwargs>;
export type DriverFlashArgs = PythonArgs<FlashPositional, Omit<DriverKwargs, 'group'>>;

type Packings<P extends string, S extends string = ''> =
  `${P}_func${S}` | `${P}_kvpacked_func${S}` | `${P}_qkvpacked_func${S}`;
type Of<N extends string, K extends string> = Extract<N, `${string}${K}_func${string}`>;

/** Dense ring function names (driver mode and SPMD). */
export type RingName =
  | Packings<'ring_flash_attn'>
  | Packings<'ring_flash_attn', '_v2'>
  | Packings<'zigzag_ring_flash_attn'>
  | Packings<'stripe_flash_attn'>;
export type FlashName = Packings<'flash_attn'>;
export type DenseName = RingName | FlashName;
export type QkvPackedName = Of<DenseName, '_qkvpacked'>;
export type KvPackedName = Of<DenseName, '_kvpacked'>;
export type UnpackedName = Exclude<DenseName, QkvPackedName | KvPackedName>;
/** Varlen names: their tensors come with cu_seqlens and max_seqlen (checked at run time). */
export type VarlenName =
  | Packings<'flash_attn_varlen'>
  | Packings<'ring_flash_attn_varlen'>
  | Packings<'zigzag_ring_flash_attn_varlen'>
  | Packings<'llama3_flash_attn_varlen'>
  | Packings<'zigzag_llama3_flash_attn_varlen'>;

/** cu_seqlens: an Int32Array, or a 1-d int32 ndarray. */
export type CuSeqlens =
  Int32Array | { data: Int32Array; shape: readonly number[]; stride?: readonly number[]; offset?: number };

/** Python's slice(start, stop) of the gathered keys (llama3's local_k_slice). */
export interface KSlice {
  start: number;
  stop: number;
}

/** Positional arguments of ring/zigzag varlen functions after the tensors. */
export type VarlenPositional = [cu_seqlens: CuSeqlens, max_seqlen: number, ...RingPositional];
export type VarlenKwargs = AttnKwargs & { cu_seqlens?: CuSeqlens; max_seqlen?: number };
export type VarlenArgs = PythonArgs<VarlenPositional, VarlenKwargs>;

/** Positional arguments of llama3_flash_attn_varlen_func after the tensors. */
export type Llama3Positional = [
  cu_seqlens_q: CuSeqlens,
  cu_seqlens_k: CuSeqlens,
  max_seqlen_q: number,
  max_seqlen_k: number,
  heads_k_stride: number,
  local_k_slice: KSlice,
  ...RingPositional,
];
export type Llama3Kwargs = AttnKwargs & {
  cu_seqlens_q?: CuSeqlens;
  cu_seqlens_k?: CuSeqlens;
  max_seqlen_q?: number;
  max_seqlen_k?: number;
  heads_k_stride?: number;
  local_k_slice?: KSlice;
};
export type Llama3Args = PythonArgs<Llama3Positional, Llama3Kwargs>;

/** Positional arguments of zigzag_llama3_flash_attn_varlen_func after the tensors. */
export type ZigzagLlama3Positional = [
  cu_seqlens: CuSeqlens,
  max_seqlen: number,
  heads_k_stride: number,
  ...RingPositional,
];
export type ZigzagLlama3Kwargs = VarlenKwargs & { heads_k_stride?: number };
export type ZigzagLlama3Args = PythonArgs<ZigzagLlama3Positional, ZigzagLlama3Kwargs>;

/** The ring variant of usp_attn_func's ring groups (api/usp). */
export type RingImpl = 'zigzag' | 'ring' | 'stripe';
/** usp_attn_func's keywords: the grid's degrees (ulysses × ring = the group size) and its ring variant ('basic' and 'strip' are yunchang's spellings). */
export type UspKwargs = AttnKwargs & {
  ulysses?: number;
  ring?: number;
  ring_impl?: RingImpl | 'basic' | 'strip';
};
export type UspArgs = PythonArgs<RingPositional, UspKwargs>;
export type DriverUspArgs = PythonArgs<RingPositional, DriverKwargs & UspKwargs>;
/** The Ulysses families: ulysses_attn_* (head parallel) and usp_attn_* (Ulysses × ring). */
export type UspName = Packings<'ulysses_attn'> | Packings<'usp_attn'>;

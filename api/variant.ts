import type { Backend } from '../runtime/backend.js';
import type { Group } from '../runtime/comm.js';
import type { DeviceTensor } from '../runtime/tensor.js';
import type { AlibiSlopes } from './args.js';

export interface RingOptions {
  softmaxScale: number;
  causal: boolean;
  /** Backward kernels that give the same bits every run (flash-attn's `deterministic`). */
  deterministic: boolean;
  /**
   * flash-attn's window_size (left, right) by global positions, -1 unbounded; causal has right 0.
   * Absent: no window. The options below are absent when off too.
   */
  window?: readonly [number, number];
  /** > 0: scores become softcap · tanh(score / softcap). */
  softcap?: number;
  alibi?: AlibiSlopes | null;
  dropoutP?: number;
  /** Required with dropoutP > 0 by the time a variant runs (api/wrappers.ts fills it in). */
  dropoutSeed?: number;
  /** The global index of the first local query head (Ulysses splits the heads): ALiBi and dropout index by it. */
  headOffset?: number;
}

/**
 * Forward result of a ring: global out and lse of the local queries. lse is fp32; out is fp32,
 * or already in q's dtype when the ring's last step wrote the final result.
 */
export interface RingForward {
  out: DeviceTensor; // (b, s, h, d) fp32 or q's dtype
  lse: DeviceTensor; // (b, h, s) fp32
  /** Frees what the variant keeps beyond out and lse for its backward (the Ulysses families' re-sharded inputs). */
  release?(): void;
}

/** Backward result: gradients of the local shards, fp32 or already in the input's dtype. */
export interface RingGrads {
  dq: DeviceTensor; // (b, s, h, d)
  dk: DeviceTensor; // (b, s, h_k, d)
  dv: DeviceTensor;
}

/**
 * One ring algorithm: how ranks exchange K/V and which part of each block they compute.
 * Inputs are this rank's shards in the variant's layout (api/driver/layouts.ts), as (b, s, h, d) views
 * (packed varlen tensors as batch-1 views); `O` adds what a family's arguments carry beyond
 * RingOptions (the cu_seqlens of the varlen families).
 */
export interface RingVariant<O extends RingOptions = RingOptions> {
  /** Python prefix of the public names, e.g. 'zigzag_ring_flash_attn'. */
  readonly name: string;
  /** Suffix after the packing in public names ('_v2' for ring_flash_attn_func_v2). */
  readonly suffix?: string;
  /**
   * How the variant's shards are cut (driver mode's Sharding is in api/driver/registry.ts); 'single' is one device, no
   * ring; 'usp' is the ring variant's layout over the ring ranks, cut contiguously over each Ulysses group.
   */
  readonly layout:
    'contiguous' | 'zigzag' | 'stripe' | 'single' | 'varlen' | 'zigzag_varlen' | 'llama3' | 'usp';
  /** Python positional order after the tensors (default: the ring functions' order). */
  readonly positional?: readonly string[];
  /** The qkvpacked form's order where it differs (flash_attn_varlen_qkvpacked_func shares one cu_seqlens). */
  readonly qkvPositional?: readonly string[];
  /** Extra preconditions on the local shards (e.g. zigzag's even split); throws E_SHAPE/E_UNSUPPORTED. */
  check?(fn: string, q: DeviceTensor, k: DeviceTensor, o: O, group: Group): void;
  forward(
    backend: Backend,
    group: Group,
    q: DeviceTensor,
    k: DeviceTensor,
    v: DeviceTensor,
    o: O,
  ): RingForward;
  backward(
    backend: Backend,
    group: Group,
    dout: DeviceTensor,
    q: DeviceTensor,
    k: DeviceTensor,
    v: DeviceTensor,
    fwd: RingForward,
    o: O,
  ): RingGrads;
}

/** A variant's forward and backward as standalone functions (their parameters typed once, here). */
export type RingForwardFn<O extends RingOptions = RingOptions> = RingVariant<O>['forward'];
export type RingBackwardFn<O extends RingOptions = RingOptions> = RingVariant<O>['backward'];

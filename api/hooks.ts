// The attention options that reach the kernels' score hooks (native/attn_params.h ScoreMods):
// window_size, softcap, alibi_slopes and dropout_p. What a call needs of them, once per forward
// or backward: the ALiBi slopes in the backend's memory and, for the options that read global
// positions, one position table per kernel call.
import type { Backend } from '../runtime/backend.js';
import { fail } from '../runtime/errors.js';
import type { PositionTable, ScoreHooks } from '../runtime/kernel_args.js';
import type { DeviceTensor } from '../runtime/tensor.js';
import type { RingOptions } from './variant.js';

export const hasWindow = (o: RingOptions): boolean =>
  o.window !== undefined && (o.window[0] >= 0 || (o.window[1] >= 0 && !(o.causal && o.window[0] < 0)));

/** Whether the call's scores depend on where its rows sit in the sequence, beyond plain causality. */
export function isPositional(o: RingOptions): boolean {
  return hasWindow(o) || !!o.alibi || (o.dropoutP ?? 0) > 0;
}

/** The options a call sets, by their Python names (for messages). */
export function optionsSet(o: RingOptions): string[] {
  const names: string[] = [];
  if (hasWindow(o)) names.push('window_size');
  if (o.softcap) names.push('softcap');
  if (o.alibi) names.push('alibi_slopes');
  if (o.dropoutP) names.push('dropout_p');
  return names;
}

/**
 * The CUDA kernels take every option through their hook instances (the Hopper forward's and the
 * mma.sync kernels'), which cover head_dim up to 128: a wider call with an option fails before
 * launch, named. `fn` is the public function.
 */
export function checkBackendSupports(fn: string, backend: Backend, o: RingOptions, headDim: number): void {
  if (backend.name !== 'cuda' || headDim <= 128) return;
  const set = optionsSet(o);
  if (set.length > 0)
    fail(
      'E_UNSUPPORTED',
      `${fn}: ${set.join(', ')} with head_dim ${headDim} ${set.length > 1 ? 'are' : 'is'} not supported on the CUDA backend (head_dim <= 128 there; the CPU backend takes any)`,
    );
}

/** Positions of one kernel call's rows (Backend.positions). */
export interface RowPositions {
  q: Int32Array;
  k: Int32Array;
  diag: number;
  seqTok?: readonly number[];
}

/** The hooks of one forward or backward call; release() once its kernels are queued. */
export class CallHooks {
  private readonly slopes: DeviceTensor | null;
  private readonly tables: PositionTable[] = [];

  constructor(
    private readonly backend: Backend,
    private readonly o: RingOptions,
  ) {
    const a = o.alibi;
    this.slopes = a ? backend.upload(a.values, [a.values.length], 'float32') : null;
  }

  /** softcap alone: what a ring's own block plans carry when no option reads positions. */
  plain(): ScoreHooks {
    return this.o.softcap ? { softcap: this.o.softcap } : {};
  }

  /** The hooks without positions: the kernel uses each span's local rows (a single device, or softcap alone). */
  local(): ScoreHooks {
    const o = this.o;
    const h: ScoreHooks = {};
    if (o.window) [h.windowLeft, h.windowRight] = o.window;
    if (o.softcap) h.softcap = o.softcap;
    if (this.slopes) {
      const shape = o.alibi!.shape;
      h.alibi = { slopes: this.slopes, batchStride: shape.length === 2 ? shape[1]! : 0 };
    }
    if (o.dropoutP) [h.dropoutP, h.dropoutSeed] = [o.dropoutP, o.dropoutSeed];
    if (o.headOffset) h.headOffset = o.headOffset;
    return h;
  }

  /** The hooks of a kernel call whose rows sit at `p` (global positions within their sequences). */
  at(p: RowPositions): ScoreHooks {
    const t = this.backend.positions(p);
    this.tables.push(t);
    return { ...this.local(), positions: t };
  }

  release(): void {
    this.slopes?.dispose();
    for (const t of this.tables) t.release();
    this.tables.length = 0;
  }
}

/** The hooks of a call whose options read no positions: softcap alone, or none. */
export const positionFreeHooks = (o: RingOptions): ScoreHooks | undefined =>
  o.softcap ? { softcap: o.softcap } : undefined;

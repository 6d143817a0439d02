// SPMD varlen calls the way the Python tests make them: every rank passes its own rows of the
// packed tensors (localRows) and its own arguments through the user fixture; the results are
// placed back in global order and compared with the fp64 reference.
import * as assert from 'uvu/assert';
import type { RingRuntime } from '../api/index.js';
import type { VarlenSpmdArg } from './fixtures/varlen_user.js';
import { pack, relL2 } from './helpers.js';
import { localRows, pickRows, placeRows, varlenInputs } from './varlen_cases.js';
import { varlenReference } from './varlen_reference.js';

export const VARLEN_USER = new URL('./fixtures/varlen_user.js', import.meta.url).href;

export interface SpmdVarlenCase {
  world: number;
  /** Global cu_seqlens. */
  cu: number[];
  h: number;
  hk: number;
  d: number;
  /** Zigzag rows per sequence (chunks r and 2·world−1−r), else contiguous chunk r. */
  zigzag: boolean;
  /** The inputs come as one qkv (total, 3, h, d) tensor instead of q, k and v. */
  qkvpacked?: boolean;
}

interface SpmdVarlenRank {
  out: { data: Float32Array };
  lse: { data: Float32Array; shape: number[] } | null;
  grads: { data: Float32Array }[];
}

/**
 * Calls `name` causally on every rank's rows (inputs drawn from `seed`, `args(rank)` after the
 * tensors), backward included; returns each rank's results, the causal reference, and `placed`,
 * which scatters a per-rank output of `width` elements a row back into global order.
 */
export async function spmdVarlen(
  rt: RingRuntime,
  name: string,
  c: SpmdVarlenCase,
  seed: number,
  args: (rank: number) => unknown[],
) {
  const { world, cu, h, hk, d } = c;
  const { T, q, k, v, dout } = varlenInputs(c, seed);
  const rows = Array.from({ length: world }, (_, r) => localRows(cu, world, r, c.zigzag));
  const qkv = c.qkvpacked ? pack([q, k, v], 1, T, h, d) : null;
  const arg: VarlenSpmdArg = {
    name,
    tensors: rows.map((r) =>
      qkv
        ? [{ data: pickRows(qkv, 3 * h * d, r), shape: [r.length, 3, h, d] }]
        : [
            { data: pickRows(q, h * d, r), shape: [r.length, h, d] },
            { data: pickRows(k, hk * d, r), shape: [r.length, hk, d] },
            { data: pickRows(v, hk * d, r), shape: [r.length, hk, d] },
          ],
    ),
    args: rows.map((_, r) => args(r)),
    dout: rows.map((r) => ({ data: pickRows(dout, h * d, r), shape: [r.length, h, d] })),
  };
  const res = (await rt.spmd(VARLEN_USER, 'callVarlen', arg)) as SpmdVarlenRank[];
  const ref = varlenReference({ q, k, v, cu, h, hk, d, scale: 1 / Math.sqrt(d), causal: true }, dout);
  const placed = (parts: Float32Array[], width: number) => placeRows(parts, width, rows, T);
  return { T, res, ref, rows, placed };
}

/** Asserts a q, k, v call's out, dq, dk and dv, placed back in global order, within 1e-5 of the reference. */
export function assertSpmdFunc(run: Awaited<ReturnType<typeof spmdVarlen>>, c: SpmdVarlenCase): void {
  const { res, ref, placed } = run;
  const [hd, hkd] = [c.h * c.d, c.hk * c.d];
  const outputs = [
    ['out', hd, ref.out, (r: SpmdVarlenRank) => r.out.data],
    ['dq', hd, ref.dq, (r: SpmdVarlenRank) => r.grads[0]!.data],
    ['dk', hkd, ref.dk, (r: SpmdVarlenRank) => r.grads[1]!.data],
    ['dv', hkd, ref.dv, (r: SpmdVarlenRank) => r.grads[2]!.data],
  ] as const;
  for (const [name, width, want, pick] of outputs)
    assert.ok(relL2(placed(res.map(pick), width), want) < 1e-5, name);
}

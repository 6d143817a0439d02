// Driver-mode accuracy cases shared by the varlen families' suites (ring, zigzag, llama3): full
// packed tensors (total, h, d) with the GLOBAL cu_seqlens, against the fp64 reference applied per
// sequence. Each family's test file adds these to its suite with its names and cu_seqlens sets.
import type { Test } from 'uvu';
import type { RingRuntime } from '../api/index.js';
import type { VarlenName } from '../api/types.js';
import { maxAbs, randn, relL2, rng, rounded, type Runtimes } from './helpers.js';
import {
  assertBf16Single,
  assertWithinSingle,
  callPacked,
  f32Tests,
  type CaseResult,
  type HeadsCase,
  type PackedOutputs,
  PACKED_HEADS,
  WIDE_HEADS,
} from './ring_cases.js';
import { memoReference } from './reference.js';
import { varlenReference } from './varlen_reference.js';

export interface VarlenNames {
  func: VarlenName;
  kvpacked: VarlenName;
  qkvpacked: VarlenName;
}

export interface VarlenCase extends HeadsCase {
  /** Global cu_seqlens. */
  cu: number[];
  /** Extra driver options (llama3's heads_k_stride). */
  options?: Record<string, unknown>;
}

export const maxSeqlenOf = (cu: readonly number[]) => Math.max(...cu.slice(1).map((x, i) => x - cu[i]!));

export type VarlenInputs = ReturnType<typeof varlenInputs>;

/** The random inputs of a case (fp32 values; a bf16 case rounds them on upload). */
export function varlenInputs(c: Pick<VarlenCase, 'cu' | 'h' | 'hk' | 'd'>, seed: number) {
  const rand = rng(seed);
  const T = c.cu[c.cu.length - 1]!;
  const q = randn(rand, T * c.h * c.d),
    k = randn(rand, T * c.hk * c.d),
    v = randn(rand, T * c.hk * c.d);
  return { T, q, k, v, dout: randn(rand, T * c.h * c.d) };
}

/** Runs one case in driver mode, forward and backward. */
export async function callVarlen(
  rt: RingRuntime,
  names: VarlenNames,
  c: VarlenCase,
  inputs: VarlenInputs,
): Promise<PackedOutputs> {
  const opts: Record<string, unknown> = { causal: c.causal, dtype: c.dtype ?? 'float32', ...c.options };
  if (c.scale !== undefined) opts.softmax_scale = c.scale;
  return callPacked(rt, names, c, inputs, [inputs.T], [Int32Array.from(c.cu), maxSeqlenOf(c.cu)], opts);
}

/** Runs one case in driver mode; relative L2 errors of out, lse and the grads against the fp64 reference. */
export async function runVarlenCase(
  rt: RingRuntime,
  names: VarlenNames,
  c: VarlenCase,
  seed: number,
): Promise<CaseResult> {
  const inputs = varlenInputs(c, seed);
  const r = await callVarlen(rt, names, c, inputs);
  const { q, k, v, dout } = inputs;
  const dtype = c.dtype ?? 'float32';
  const ref = memoReference(JSON.stringify({ ...c, world: undefined, options: undefined, seed, dtype }), () =>
    varlenReference(
      { q, k, v, cu: c.cu, h: c.h, hk: c.hk, d: c.d, scale: c.scale ?? 1 / Math.sqrt(c.d), causal: c.causal },
      dtype === 'float32' ? dout : rounded(dout, dtype),
    ),
  );
  return {
    out: relL2(r.out, ref.out),
    lse: relL2(r.lse, ref.lse),
    maxOut: maxAbs(r.out, ref.out),
    dq: relL2(r.dq, ref.dq),
    dk: relL2(r.dk, ref.dk),
    dv: relL2(r.dv, ref.dv),
  };
}

export function label(c: VarlenCase): string {
  const opts = c.options ? ` ${JSON.stringify(c.options)}` : '';
  return `world=${c.world} ${c.packing} cu=[${c.cu.join(',')}] h=${c.h}/${c.hk} d=${c.d} ${c.causal ? 'causal' : 'full'} ${c.dtype ?? 'float32'}${opts}`;
}

/** A family's cu_seqlens: all global, already satisfying its divisibility at the given world. */
export interface VarlenSets {
  /** The Python project's four sets ([0, T], [0, T/32, 0.93T, T], [0, T/2, T], [0, 0.38T, 0.77T, 0.96T, 0.98T, T] style). */
  pythonSets(world: number): number[][];
  /** Several sequences, each one chunk long. */
  oneChunk(world: number): number[];
  /** One cu_seqlens every world of 1, 2, 4, 8 accepts (the bf16 comparison uses the same inputs at every world). */
  shared: number[];
}

/** One cu_seqlens every family takes at worlds 1, 2, 4 and 8. */
export const SHARED_CU = [0, 64, 320, 512];

/**
 * A family's sets given for 64 tokens per rank and scaled by the world: the Python project's four
 * (`python`, every length a multiple of the family's unit) and `oneChunk`.
 */
export function scaledSets(python: number[][], oneChunk: number[]): VarlenSets {
  const scaled = (cu: number[], world: number) => cu.map((x) => x * world);
  return {
    pythonSets: (world) => python.map((cu) => scaled(cu, world)),
    oneChunk: (world) => scaled(oneChunk, world),
    shared: SHARED_CU,
  };
}

/** The zigzag families' sets: every length even, so a multiple of 2·world once scaled. */
export const ZIGZAG_SETS = scaledSets(
  [
    [0, 64],
    [0, 2, 60, 64],
    [0, 32, 64],
    [0, 24, 50, 60, 62, 64],
  ],
  [0, 2, 4, 6, 8, 10, 12],
);

/**
 * The accuracy matrix: worlds 1, 2, 3, 4, 8; causal and not; GQA; head dims 32/64/128; all three
 * packings; every set of the Python project's; one-chunk sequences; an empty sequence; bf16 error flat in world.
 */
export function addVarlenCases(
  s: Test,
  rts: Runtimes,
  names: VarlenNames,
  sets: VarlenSets,
  options?: Record<string, unknown>,
): void {
  const cases: VarlenCase[] = [];
  const base = { h: 4, hk: 2, d: 32, packing: 'func' as const, options };
  [1, 2, 3, 4, 8].forEach((world, wi) => {
    for (const causal of [true, false])
      cases.push({ ...base, world, causal, cu: sets.pythonSets(world)[(2 * wi + Number(!causal)) % 4]! });
  });
  for (const world of [2, 8])
    sets.pythonSets(world).forEach((cu) => cases.push({ ...base, world, causal: true, cu }));
  for (const heads of PACKED_HEADS)
    cases.push({ ...heads, cu: sets.pythonSets(heads.world)[heads.world]!, options });
  cases.push({ ...WIDE_HEADS, cu: sets.pythonSets(4)[3]!, options });
  for (const causal of [true, false])
    cases.push({ world: 4, cu: sets.oneChunk(4), h: 2, hk: 1, d: 16, causal, packing: 'func', options });
  cases.push({
    world: 2,
    cu: [0, 16, 16, 40, 64],
    h: 2,
    hk: 2,
    d: 16,
    causal: true,
    packing: 'func',
    options,
  }); // an empty sequence

  f32Tests(s, 'float32 matches fp64 reference', cases, label, async (c, i) =>
    runVarlenCase(await rts.get(c.world), names, c, 2000 + i),
  );

  s('bfloat16: the error stays at the single-device error for every world', async () => {
    const errs: Record<number, CaseResult> = {};
    for (const world of [1, 2, 4, 8])
      errs[world] = await runVarlenCase(
        await rts.get(world),
        names,
        {
          world,
          cu: sets.shared,
          h: 2,
          hk: 2,
          d: 64,
          causal: true,
          packing: 'func',
          dtype: 'bfloat16',
          options,
        },
        88,
      );
    assertBf16Single(errs[1]!);
    for (const world of [2, 4, 8]) assertWithinSingle(errs[world]!, errs[1]!, `world ${world}`);
  });
}

/**
 * The llama3 families' heads_k_stride (K/V gathered that many heads at a time): strides 1, 2 and 4
 * on worlds 2 and 3 over the last Python set, then `extra`; case i draws its inputs from seed0 + i.
 */
export function addStrideCases(
  s: Test,
  rts: Runtimes,
  names: VarlenNames,
  pythonSets: VarlenSets['pythonSets'],
  seed0: number,
  packingOf: (stride: number) => VarlenCase['packing'],
  extra: readonly VarlenCase[] = [],
): void {
  const cases: VarlenCase[] = [];
  for (const stride of [1, 2, 4])
    for (const world of [2, 3])
      cases.push({
        world,
        cu: pythonSets(world)[3]!,
        h: 8,
        hk: 4,
        d: 16,
        causal: world === 2,
        packing: packingOf(stride),
        options: { heads_k_stride: stride },
      });
  f32Tests(s, 'heads_k_stride', [...cases, ...extra], label, async (c, i) =>
    runVarlenCase(await rts.get(c.world), names, c, seed0 + i),
  );
}

/** Rows of every sequence that `rank` holds: chunk r of `world` (ring) or chunks r and 2·world−1−r of 2·world (zigzag). */
export function localRows(cu: readonly number[], world: number, rank: number, zigzag: boolean): number[] {
  const parts = zigzag ? 2 * world : world;
  const rows: number[] = [];
  for (let i = 0; i + 1 < cu.length; i++) {
    const n = (cu[i + 1]! - cu[i]!) / parts;
    for (const c of zigzag ? [rank, parts - 1 - rank] : [rank])
      for (let j = 0; j < n; j++) rows.push(cu[i]! + c * n + j);
  }
  return rows;
}

/** Rows `rows` of a (total, ...) host tensor with `width` elements per row. */
export function pickRows(x: Float32Array, width: number, rows: readonly number[]): Float32Array {
  const out = new Float32Array(rows.length * width);
  rows.forEach((r, i) => out.set(x.subarray(r * width, (r + 1) * width), i * width));
  return out;
}

/** Scatters every rank's rows back into a (total, ...) tensor. */
export function placeRows(
  parts: readonly ArrayLike<number>[],
  width: number,
  rows: readonly (readonly number[])[],
  total: number,
): Float64Array {
  const out = new Float64Array(total * width);
  parts.forEach((p, rank) =>
    rows[rank]!.forEach((r, i) => {
      for (let c = 0; c < width; c++) out[r * width + c] = p[i * width + c]!;
    }),
  );
  return out;
}

// The attention options as test cases, shared by the CPU suite (test/masks.test.ts) and the GPU
// suite (test/gpu/masks.test.ts): the option sets, and one dense or varlen call of a family
// returning its relative L2 errors against the fp64 masked reference (test/reference.ts,
// test/varlen_reference.ts). The reference sees the fp32 inputs, so a 16-bit call's error
// includes its rounding, as the other accuracy suites count it.
import type { RingRuntime } from '../api/index.js';
import type { DType } from '../runtime/dtype.js';
import { nd, randn, relL2, rng, rounded } from './helpers.js';
import { referenceBackward, referenceForward, type RefInput } from './reference.js';
import { callVarlen, maxSeqlenOf, varlenInputs, type VarlenCase } from './varlen_cases.js';
import { varlenReference } from './varlen_reference.js';

/** Query heads of every case. */
export const H = 2;

/** The options each family is checked with (driver keywords); slopes are per head unless `perBatch`. */
export interface OptionCase {
  name: string;
  kw: Record<string, unknown>;
  perBatchAlibi?: boolean;
}
export const OPTIONS: OptionCase[] = [
  { name: 'causal window (5, 0)', kw: { causal: true, window_size: [5, 0] } },
  { name: 'window (3, 6)', kw: { window_size: [3, 6] } },
  { name: 'softcap 0.8', kw: { causal: true, softcap: 0.8 } },
  { name: 'alibi per head, causal', kw: { causal: true, alibi_slopes: [0.3, 0.7] } },
  { name: 'alibi per (batch, head)', kw: {}, perBatchAlibi: true },
  { name: 'dropout 0.25', kw: { causal: true, dropout_p: 0.25, dropout_seed: 1234 } },
  {
    name: 'all of them',
    kw: {
      causal: true,
      window_size: [6, 0],
      softcap: 1.5,
      alibi_slopes: [0.25, 0.5],
      dropout_p: 0.1,
      dropout_seed: 99,
    },
  },
];

/** The reference's view of a case's options (dropout drawn at dense or packed indices by the reference). */
export function refMods(kw: Record<string, unknown>, slopes: number[] | null, perBatch: boolean) {
  return {
    causal: kw.causal === true,
    window: kw.window_size as [number, number] | undefined,
    softcap: kw.softcap as number | undefined,
    alibi: slopes ? { slopes, perBatch } : undefined,
    dropout:
      kw.dropout_p !== undefined ? { p: kw.dropout_p as number, seed: kw.dropout_seed as number } : undefined,
  };
}

export const DENSE: { family: string; unit: number }[] = [
  { family: 'ring_flash_attn_func', unit: 1 },
  { family: 'ring_flash_attn_func_v2', unit: 1 },
  { family: 'zigzag_ring_flash_attn_func', unit: 2 },
  { family: 'stripe_flash_attn_func', unit: 1 },
];

export async function denseCase(
  rt: RingRuntime,
  fn: string,
  opt: OptionCase,
  x: { b: number; s: number; sk?: number; hk: number; d: number; seed: number; dtype?: DType },
) {
  const dtype = x.dtype ?? 'float32';
  const rand = rng(x.seed);
  const sk = x.sk ?? x.s;
  const q = randn(rand, x.b * x.s * H * x.d),
    k = randn(rand, x.b * sk * x.hk * x.d),
    v = randn(rand, x.b * sk * x.hk * x.d),
    dout = randn(rand, x.b * x.s * H * x.d);
  const slopes = opt.perBatchAlibi
    ? Array.from({ length: x.b * H }, (_, i) => 0.2 + 0.15 * i)
    : ((opt.kw.alibi_slopes as number[] | undefined) ?? null);
  const kw = { ...opt.kw, dtype } as Record<string, unknown>;
  if (opt.perBatchAlibi) kw.alibi_slopes = nd(Float32Array.from(slopes!), [x.b, H]);
  const r = await rt.call(
    fn as 'ring_flash_attn_func',
    nd(q, [x.b, x.s, H, x.d]),
    nd(k, [x.b, sk, x.hk, x.d]),
    nd(v, [x.b, sk, x.hk, x.d]),
    kw,
  );
  const g = (await r.backward(nd(dout, [x.b, x.s, H, x.d]))) as {
    dq: { data: Float32Array };
    dk: { data: Float32Array };
    dv: { data: Float32Array };
  };
  await r.dispose();
  const ref: RefInput = {
    q,
    k,
    v,
    b: x.b,
    sq: x.s,
    sk,
    h: H,
    hk: x.hk,
    d: x.d,
    scale: 1 / Math.sqrt(x.d),
    ...refMods(opt.kw, slopes, !!opt.perBatchAlibi),
  };
  const f = referenceForward(ref),
    rg = referenceBackward(ref, dtype === 'float32' ? dout : rounded(dout, dtype));
  return {
    errs: {
      out: relL2(r.out.data, f.out),
      lse: relL2(
        Array.from(r.lse.data, (v) => (v === -Infinity ? 0 : v)),
        Array.from(f.lse, (v) => (v === -Infinity ? 0 : v)),
      ),
      dq: relL2(g.dq.data, rg.dq),
      dk: relL2(g.dk.data, rg.dk),
      dv: relL2(g.dv.data, rg.dv),
    },
    out: r.out.data,
    dropoutSeed: r.dropoutSeed,
  };
}

export const VARLEN = [
  'ring_flash_attn_varlen_func',
  'zigzag_ring_flash_attn_varlen_func',
  'llama3_flash_attn_varlen_func',
  'zigzag_llama3_flash_attn_varlen_func',
] as const;

/** flash_attn_varlen_func's call: q and k share the sequences. */
export async function singleVarlen(rt: RingRuntime, c: VarlenCase, inputs: ReturnType<typeof varlenInputs>) {
  const { T, q, k, v, dout } = inputs;
  const cu = Int32Array.from(c.cu),
    max = maxSeqlenOf(c.cu);
  const r = await rt.call(
    'flash_attn_varlen_func',
    nd(q, [T, c.h, c.d]),
    nd(k, [T, c.hk, c.d]),
    nd(v, [T, c.hk, c.d]),
    cu,
    cu,
    max,
    max,
    {
      causal: c.causal,
      dtype: c.dtype ?? 'float32',
      ...c.options,
    },
  );
  const g = (await r.backward(nd(dout, [T, c.h, c.d]))) as Record<'dq' | 'dk' | 'dv', { data: Float32Array }>;
  await r.dispose();
  return { out: r.out.data, lse: r.lse.data, dq: g.dq.data, dk: g.dk.data, dv: g.dv.data };
}

export async function varlenErrs(rt: RingRuntime, fn: string, c: VarlenCase, opt: OptionCase, seed: number) {
  const inputs = varlenInputs(c, seed);
  const nseq = c.cu.length - 1;
  const slopes = opt.perBatchAlibi
    ? Array.from({ length: nseq * H }, (_, i) => 0.2 + 0.1 * i)
    : ((opt.kw.alibi_slopes as number[] | undefined) ?? null);
  const options = { ...opt.kw } as Record<string, unknown>;
  if (opt.perBatchAlibi) options.alibi_slopes = nd(Float32Array.from(slopes!), [nseq, H]);
  const r =
    fn === 'flash_attn_varlen_func'
      ? await singleVarlen(rt, { ...c, options }, inputs)
      : await callVarlen(rt, { func: fn, kvpacked: fn, qkvpacked: fn } as never, { ...c, options }, inputs);
  const ref = varlenReference(
    {
      q: inputs.q,
      k: inputs.k,
      v: inputs.v,
      cu: c.cu,
      h: c.h,
      hk: c.hk,
      d: c.d,
      scale: 1 / Math.sqrt(c.d),
      ...refMods(opt.kw, slopes, !!opt.perBatchAlibi),
    },
    c.dtype && c.dtype !== 'float32' ? rounded(inputs.dout, c.dtype) : inputs.dout,
  );
  const finite = (a: ArrayLike<number>) => Array.from(a, (v) => (v === -Infinity ? 0 : v));
  return {
    out: relL2(r.out, ref.out),
    lse: relL2(finite(r.lse), finite(ref.lse)),
    dq: relL2(r.dq, ref.dq),
    dk: relL2(r.dk, ref.dk),
    dv: relL2(r.dv, ref.dv),
  };
}

/** Sequence lengths that split into 2·world chunks (zigzag varlen) and sum to a multiple of world. */
export const cuFor = (world: number) => {
  const lens = [2, 1, 3].map((n) => n * 2 * world);
  return lens.reduce((cu, l) => [...cu, cu[cu.length - 1]! + l], [0]);
};

// Driver-mode accuracy cases shared by every dense ring variant's suite (ring, ring_v2,
// zigzag, stripe): each variant's test file calls ringCases with its names and layout unit.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { RingRuntime } from '../api/index.js';
import type { DType } from '../runtime/dtype.js';
import type { KvPackedName, QkvPackedName, RingName, UnpackedName, UspName } from '../api/types.js';
import { maxAbs, nd, pack, randn, relL2, rng, rounded, Runtimes, unpack } from './helpers.js';
import { memoReference, referenceBackward, referenceForward } from './reference.js';

export interface VariantNames {
  func: Extract<UnpackedName, RingName> | Extract<UspName, `${string}_attn_func`>;
  kvpacked: Extract<KvPackedName, RingName> | Extract<UspName, `${string}_kvpacked_func`>;
  qkvpacked: Extract<QkvPackedName, RingName> | Extract<UspName, `${string}_qkvpacked_func`>;
}

export interface Case {
  world: number;
  b: number;
  seqPerRank: number;
  h: number;
  hk: number;
  d: number;
  causal: boolean;
  packing: 'func' | 'kvpacked' | 'qkvpacked';
  dtype?: DType;
  scale?: number;
  /** The family's own keywords (usp_attn_func's ulysses, ring, ring_impl). */
  kwargs?: Record<string, unknown>;
}

export interface CaseResult {
  out: number;
  lse: number;
  dq: number;
  dk: number;
  dv: number;
  maxOut: number;
}

/** Runs one case in driver mode and returns relative L2 errors against the fp64 reference. */
export async function runCase(
  rt: RingRuntime,
  names: VariantNames,
  c: Case,
  seed: number,
): Promise<CaseResult> {
  const rand = rng(seed);
  const s = c.world * c.seqPerRank;
  const dtype = c.dtype ?? 'float32';
  const q = randn(rand, c.b * s * c.h * c.d),
    k = randn(rand, c.b * s * c.hk * c.d),
    v = randn(rand, c.b * s * c.hk * c.d);
  const dout = randn(rand, c.b * s * c.h * c.d);
  const opts: Record<string, unknown> = { ...c.kwargs, causal: c.causal, dtype };
  if (c.scale !== undefined) opts.softmax_scale = c.scale;
  let r;
  if (c.packing === 'func')
    r = await rt.call(
      names.func,
      nd(q, [c.b, s, c.h, c.d]),
      nd(k, [c.b, s, c.hk, c.d]),
      nd(v, [c.b, s, c.hk, c.d]),
      opts,
    );
  else if (c.packing === 'kvpacked')
    r = await rt.call(
      names.kvpacked,
      nd(q, [c.b, s, c.h, c.d]),
      nd(pack([k, v], c.b, s, c.hk, c.d), [c.b, s, 2, c.hk, c.d]),
      opts,
    );
  else r = await rt.call(names.qkvpacked, nd(pack([q, k, v], c.b, s, c.h, c.d), [c.b, s, 3, c.h, c.d]), opts);
  const g = await r.backward(nd(dout, [c.b, s, c.h, c.d]));
  await r.dispose();
  // The reference sees the fp32 inputs: the error then includes rounding to the compute dtype,
  // which is what a user of that dtype gets.
  const x = {
    q,
    k,
    v,
    b: c.b,
    sq: s,
    sk: s,
    h: c.h,
    hk: c.hk,
    d: c.d,
    scale: c.scale ?? 1 / Math.sqrt(c.d),
    causal: c.causal,
  };
  const { ref, refG } = memoReference(
    JSON.stringify({ ...c, world: undefined, kwargs: undefined, s, seed, dtype }),
    () => ({
      ref: referenceForward(x),
      refG: referenceBackward(x, dtype === 'float32' ? dout : rounded(dout, dtype)),
    }),
  );
  let dq: ArrayLike<number>, dk: ArrayLike<number>, dv: ArrayLike<number>;
  if ('dk' in g) ({ dq, dk, dv } = { dq: g.dq.data, dk: g.dk.data, dv: g.dv.data });
  else if ('dkv' in g)
    ({ dq, dk, dv } = {
      dq: g.dq.data,
      dk: unpack(g.dkv.data, 0, 2, c.b, s, c.hk, c.d),
      dv: unpack(g.dkv.data, 1, 2, c.b, s, c.hk, c.d),
    });
  else
    ({ dq, dk, dv } = {
      dq: unpack(g.dqkv.data, 0, 3, c.b, s, c.h, c.d),
      dk: unpack(g.dqkv.data, 1, 3, c.b, s, c.h, c.d),
      dv: unpack(g.dqkv.data, 2, 3, c.b, s, c.h, c.d),
    });
  assert.equal(r.out.shape, [c.b, s, c.h, c.d]);
  assert.equal(r.lse.shape, [c.b, c.h, s]);
  return {
    out: relL2(r.out.data, ref.out),
    lse: relL2(r.lse.data, ref.lse),
    maxOut: maxAbs(r.out.data, ref.out),
    dq: relL2(dq, refG.dq),
    dk: relL2(dk, refG.dk),
    dv: relL2(dv, refG.dv),
  };
}

function label(c: Case): string {
  return `world=${c.world} ${c.packing} b=${c.b} s=${c.world * c.seqPerRank} h=${c.h}/${c.hk} d=${c.d} ${c.causal ? 'causal' : 'full'} ${c.dtype ?? 'float32'}`;
}

/** float32 compute must match the fp64 reference to 1e-5 (relative L2) in every output. */
export const F32_TOL = 1e-5;

/**
 * The accuracy matrix of the issue: worlds 1, 2, 3, 4, 8; causal and not; GQA; head dims
 * 32/64/128; lengths that are not powers of two; all three packings; bf16 error flat in world.
 * `unit` is the smallest tokens-per-rank the layout accepts (2 for zigzag).
 */
export function ringCases(title: string, names: VariantNames, unit = 1): void {
  const s = suite(title);
  const runtimes = new Runtimes();
  const rtFor = (world: number) => runtimes.get(world);
  s.after(() => runtimes.close());

  const cases: Case[] = [];
  for (const world of [1, 2, 3, 4, 8])
    for (const causal of [true, false])
      cases.push({ world, b: 2, seqPerRank: 5 * unit, h: 4, hk: 2, d: 32, causal, packing: 'func' });
  for (const packing of ['kvpacked', 'qkvpacked'] as const)
    for (const world of [2, 3])
      cases.push({
        world,
        b: 1,
        seqPerRank: 7 * unit,
        h: 3,
        hk: packing === 'qkvpacked' ? 3 : 1,
        d: 64,
        causal: world === 2,
        packing,
      });
  cases.push({
    world: 4,
    b: 1,
    seqPerRank: 3 * unit,
    h: 2,
    hk: 2,
    d: 128,
    causal: true,
    packing: 'func',
    scale: 0.3,
  });
  cases.push({
    world: 4,
    b: 1,
    seqPerRank: 3 * unit,
    h: 2,
    hk: 1,
    d: 128,
    causal: false,
    packing: 'kvpacked',
  });

  cases.forEach((c, i) => {
    s(`float32 matches fp64 reference: ${label(c)}`, async () => {
      const e = await runCase(await rtFor(c.world), names, c, 1000 + i);
      for (const [k, v] of Object.entries(e)) {
        if (k === 'maxOut') continue;
        assert.ok(v <= F32_TOL, `${k} rel L2 ${v.toExponential(2)} > ${F32_TOL}`);
      }
      assert.ok(e.maxOut <= 1e-5, `out max abs ${e.maxOut}`);
    });
  });

  // 16-bit rings hand back dK/dV in the input's dtype (the last hop travels cast) and the packed
  // wrappers stack fp32 dq with 16-bit dk/dv: every packing is checked.
  for (const packing of ['func', 'kvpacked', 'qkvpacked'] as const) {
    s(`bfloat16 ${packing}: the ring error stays at the single-device error for every world`, async () => {
      const errs: Record<number, CaseResult> = {};
      const seqlen = 48 * unit; // the same full sequence (and inputs) at every world (1, 2, 3, 4, 8)
      for (const world of packing === 'func' ? [1, 2, 4, 8] : [1, 3])
        errs[world] = await runCase(
          await rtFor(world),
          names,
          {
            world,
            b: packing === 'func' ? 1 : 2,
            seqPerRank: seqlen / world,
            h: 2,
            hk: 2,
            d: 64,
            causal: true,
            packing,
            dtype: 'bfloat16',
          },
          77,
        );
      const base = errs[1]!;
      assert.ok(base.out < 1e-2 && base.dq < 2e-2, `single-device bf16 error out ${base.out} dq ${base.dq}`);
      for (const world of packing === 'func' ? [2, 4, 8] : [3]) {
        const e = errs[world]!;
        for (const k of ['out', 'lse', 'dq', 'dk', 'dv'] as const)
          assert.ok(
            e[k] <= 1.1 * base[k] + 1e-6,
            `world ${world} ${k}: ${e[k].toExponential(3)} vs single-device ${base[k].toExponential(3)}`,
          );
      }
    });
  }

  s.run();
}

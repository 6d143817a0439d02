// Driver-mode accuracy cases shared by every dense ring variant's suite (ring, ring_v2,
// zigzag, stripe): each variant's test file calls ringCases with its names and layout unit.
import { suite, type Test } from 'uvu';
import * as assert from 'uvu/assert';
import type { DriverResult, RingRuntime } from '../api/index.js';
import type { DType } from '../runtime/dtype.js';
import type { KvPackedName, QkvPackedName, RingName, UnpackedName, UspName } from '../api/types.js';
import { denseInputs, maxAbs, nd, pack, relL2, rng, rounded, Runtimes, unpack } from './helpers.js';
import { memoReference, referenceBackward, referenceForward, refInputOf } from './reference.js';

export interface VariantNames {
  func: Extract<UnpackedName, RingName> | Extract<UspName, `${string}_attn_func`>;
  kvpacked: Extract<KvPackedName, RingName> | Extract<UspName, `${string}_kvpacked_func`>;
  qkvpacked: Extract<QkvPackedName, RingName> | Extract<UspName, `${string}_qkvpacked_func`>;
}

/** What every accuracy case names besides its lengths: heads, head dim, mask, packing, dtype. */
export interface HeadsCase {
  world: number;
  h: number;
  hk: number;
  d: number;
  causal: boolean;
  packing: 'func' | 'kvpacked' | 'qkvpacked';
  dtype?: DType;
  scale?: number;
}

/** The dense and varlen matrices' packed cases: kvpacked (GQA) and qkvpacked on worlds 2 and 3. */
export const PACKED_HEADS: readonly HeadsCase[] = (['kvpacked', 'qkvpacked'] as const).flatMap((packing) =>
  [2, 3].map((world) => ({
    world,
    h: 3,
    hk: packing === 'qkvpacked' ? 3 : 1,
    d: 64,
    causal: world === 2,
    packing,
  })),
);

/** The matrices' widest head dim, with a softmax scale of its own. */
export const WIDE_HEADS: HeadsCase = {
  world: 4,
  h: 2,
  hk: 2,
  d: 128,
  causal: true,
  packing: 'func',
  scale: 0.3,
};

export interface Case extends HeadsCase {
  b: number;
  seqPerRank: number;
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

/** The outputs whose errors a case bounds. */
export const OUTPUTS = ['out', 'lse', 'dq', 'dk', 'dv'] as const;

/** A driver call's outputs: out, lse and the grads of q, k and v, unpacked. */
export interface PackedOutputs {
  out: ArrayLike<number>;
  lse: ArrayLike<number>;
  dq: ArrayLike<number>;
  dk: ArrayLike<number>;
  dv: ArrayLike<number>;
}

/**
 * Calls the function of `names` that takes `c.packing` on q, k, v of leading dims `lead` ([b, s],
 * or [total] for varlen), then `extra` positional arguments and `opts`; runs backward with dout and
 * asserts the shapes of out and lse.
 */
export async function callPacked(
  rt: RingRuntime,
  names: { func: string; kvpacked: string; qkvpacked: string },
  c: HeadsCase,
  t: { q: Float32Array; k: Float32Array; v: Float32Array; dout: Float32Array },
  lead: number[],
  extra: unknown[],
  opts: Record<string, unknown>,
): Promise<PackedOutputs> {
  const call = rt.call.bind(rt) as (name: string, ...args: unknown[]) => Promise<DriverResult>;
  const [b, s] = lead.length === 2 ? [lead[0]!, lead[1]!] : [1, lead[0]!];
  const { h, hk, d } = c;
  let r;
  if (c.packing === 'func')
    r = await call(
      names.func,
      nd(t.q, [...lead, h, d]),
      nd(t.k, [...lead, hk, d]),
      nd(t.v, [...lead, hk, d]),
      ...extra,
      opts,
    );
  else if (c.packing === 'kvpacked')
    r = await call(
      names.kvpacked,
      nd(t.q, [...lead, h, d]),
      nd(pack([t.k, t.v], b, s, hk, d), [...lead, 2, hk, d]),
      ...extra,
      opts,
    );
  else
    r = await call(
      names.qkvpacked,
      nd(pack([t.q, t.k, t.v], b, s, h, d), [...lead, 3, h, d]),
      ...extra,
      opts,
    );
  const g = await r.backward(nd(t.dout, [...lead, h, d]));
  await r.dispose();
  assert.equal(r.out.shape, [...lead, h, d]);
  assert.equal(r.lse.shape, lead.length === 2 ? [b, h, s] : [h, s]);
  const [out, lse] = [r.out.data, r.lse.data];
  if ('dk' in g) return { out, lse, dq: g.dq.data, dk: g.dk.data, dv: g.dv.data };
  if ('dkv' in g)
    return {
      out,
      lse,
      dq: g.dq.data,
      dk: unpack(g.dkv.data, 0, 2, b, s, hk, d),
      dv: unpack(g.dkv.data, 1, 2, b, s, hk, d),
    };
  return {
    out,
    lse,
    dq: unpack(g.dqkv.data, 0, 3, b, s, h, d),
    dk: unpack(g.dqkv.data, 1, 3, b, s, h, d),
    dv: unpack(g.dqkv.data, 2, 3, b, s, h, d),
  };
}

/** Runs one case in driver mode and returns relative L2 errors against the fp64 reference. */
export async function runCase(
  rt: RingRuntime,
  names: VariantNames,
  c: Case,
  seed: number,
): Promise<CaseResult> {
  const s = c.world * c.seqPerRank;
  const dtype = c.dtype ?? 'float32';
  const dims = { b: c.b, sq: s, sk: s, h: c.h, hk: c.hk, d: c.d };
  const { q, k, v, dout } = denseInputs(rng(seed), dims);
  const opts: Record<string, unknown> = { ...c.kwargs, causal: c.causal, dtype };
  if (c.scale !== undefined) opts.softmax_scale = c.scale;
  const r = await callPacked(rt, names, c, { q, k, v, dout }, [c.b, s], [], opts);
  // The reference sees the fp32 inputs: the error then includes rounding to the compute dtype,
  // which is what a user of that dtype gets.
  const x = refInputOf({ ...dims, causal: c.causal }, { q, k, v }, c.scale);
  const { ref, refG } = memoReference(
    JSON.stringify({ ...c, world: undefined, kwargs: undefined, s, seed, dtype }),
    () => ({
      ref: referenceForward(x),
      refG: referenceBackward(x, dtype === 'float32' ? dout : rounded(dout, dtype)),
    }),
  );
  return {
    out: relL2(r.out, ref.out),
    lse: relL2(r.lse, ref.lse),
    maxOut: maxAbs(r.out, ref.out),
    dq: relL2(r.dq, refG.dq),
    dk: relL2(r.dk, refG.dk),
    dv: relL2(r.dv, refG.dv),
  };
}

/** Asserts the float32 bound (relative L2 ≤ F32_TOL on every output, max abs on out). */
export function assertF32(e: CaseResult): void {
  for (const [k, v] of Object.entries(e)) {
    if (k === 'maxOut') continue;
    assert.ok(v <= F32_TOL, `${k} rel L2 ${v.toExponential(2)} > ${F32_TOL}`);
  }
  assert.ok(e.maxOut <= 1e-5, `out max abs ${e.maxOut}`);
}

/** Asserts a single-device bf16 run is itself bounded, so a family wrong at every world cannot pass. */
export function assertBf16Single(single: CaseResult): void {
  assert.ok(
    single.out < 1e-2 && single.dq < 2e-2,
    `single-device bf16 error out ${single.out} dq ${single.dq}`,
  );
}

/**
 * The single-device bf16 run a parallel case is held to: the same full sequence and inputs at
 * world 1, asserted bounded itself.
 */
export async function bf16Single(
  rts: Runtimes,
  names: VariantNames,
  c: Case,
  seed: number,
): Promise<CaseResult> {
  const single = await runCase(
    await rts.get(1),
    names,
    { ...c, world: 1, seqPerRank: c.world * c.seqPerRank, kwargs: undefined },
    seed,
  );
  assertBf16Single(single);
  return single;
}

/** Asserts every output's error within 1.1× the single-device run's (plus `slack`): a ring adds no rounding of its own. */
export function assertWithinSingle(e: CaseResult, single: CaseResult, what: string, slack = 1e-6): void {
  for (const k of OUTPUTS)
    assert.ok(
      e[k] <= 1.1 * single[k] + slack,
      `${what} ${k}: ${e[k].toExponential(3)} vs single-device ${single[k].toExponential(3)}`,
    );
}

function label(c: Case): string {
  return `world=${c.world} ${c.packing} b=${c.b} s=${c.world * c.seqPerRank} h=${c.h}/${c.hk} d=${c.d} ${c.causal ? 'causal' : 'full'} ${c.dtype ?? 'float32'}`;
}

/** float32 compute must match the fp64 reference to 1e-5 (relative L2) in every output. */
export const F32_TOL = 1e-5;

/** One test per case, `title: label`, asserting the float32 bound on what `run` measures for case i. */
export function f32Tests<C>(
  s: Test,
  title: string,
  cases: readonly C[],
  caseLabel: (c: C) => string,
  run: (c: C, i: number) => Promise<CaseResult>,
): void {
  cases.forEach((c, i) => {
    s(`${title}: ${caseLabel(c)}`, async () => {
      assertF32(await run(c, i));
    });
  });
}

/** The dense cases against the fp64 reference; case i draws its inputs from seed0 + i. */
export function f32Cases(
  s: Test,
  rts: Runtimes,
  names: VariantNames,
  cases: readonly Case[],
  seed0: number,
  caseLabel: (c: Case) => string = label,
): void {
  f32Tests(s, 'float32 matches fp64 reference', cases, caseLabel, async (c, i) =>
    runCase(await rts.get(c.world), names, c, seed0 + i),
  );
}

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
  for (const heads of PACKED_HEADS) cases.push({ ...heads, b: 1, seqPerRank: 7 * unit });
  cases.push({ ...WIDE_HEADS, b: 1, seqPerRank: 3 * unit });
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

  f32Cases(s, runtimes, names, cases, 1000);

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
      assertBf16Single(errs[1]!);
      for (const world of packing === 'func' ? [2, 4, 8] : [3])
        assertWithinSingle(errs[world]!, errs[1]!, `world ${world}`);
    });
  }

  s.run();
}

// The attention options through every family (issue #26): window_size (causal and not),
// softcap, alibi_slopes (per head and per batch and head) and dropout, at worlds 1, 2, 3, 4 and 8
// on the CPU backend, forward and backward against the fp64 masked reference (test/reference.ts)
// whose dropout uses the same generator written again (test/philox_reference.ts). Also: the
// generator's known answers, the block plans of a window against a brute-force visibility check,
// the dropout mask identical at world 1 and 8, the bytes a window saves, and what the CUDA backend passes on or refuses.
import fc from 'fast-check';
import { performance } from 'node:perf_hooks';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { RingRuntime } from '../api/index.js';
import { checkBackendSupports } from '../api/hooks.js';
import { blockCalls, maskOf } from '../api/ring/positional_ring.js';
import {
  contiguousPieces,
  stripePieces,
  varlenPieces,
  visibleRect,
  zigzagPieces,
  zigzagVarlenPieces,
  type Mask,
  type Piece,
  type PiecesOf,
} from '../api/ring/positions.js';
import type { Backend } from '../runtime/backend.js';
import { CpuBackend } from '../runtime/cpu_backend.js';
import { RingFlashAttnError } from '../runtime/errors.js';
import type { Counts, CountTask } from './fixtures/masks_user.js';
import type { VarlenCase } from './varlen_cases.js';
import { nd, randn, relL2, rng, Runtimes, unpack, pack } from './helpers.js';
import { philox4x32 } from './philox_reference.js';
import { referenceBackward, referenceForward, type RefInput } from './reference.js';
import { F32_TOL } from './ring_cases.js';
import { cuFor, DENSE, denseCase, H, OPTIONS, refMods, VARLEN, varlenErrs } from './option_cases.js';

const s = suite('attention options');
const runtimes = new Runtimes();
s.after(() => runtimes.close());

const WORLDS = [1, 2, 3, 4, 8];

function check(errs: Record<string, number>, tol = F32_TOL): void {
  for (const [k, e] of Object.entries(errs))
    assert.ok(e <= tol, `${k} rel L2 ${e.toExponential(2)} > ${tol.toExponential(0)}`);
}

/** check(errs), its failure naming the case `what`. */
function checkAs(what: string, errs: Record<string, number>): void {
  try {
    check(errs);
  } catch (e) {
    throw new Error(`${what}: ${(e as Error).message}`);
  }
}

// ---------------------------------------------------------------------------------------------
// The generator and the block plans

s('Philox4x32-10 (the test copy) gives the published known answers', () => {
  const hex = (w: number[]) => w.map((x) => x.toString(16).padStart(8, '0')).join(' ');
  assert.is(hex(philox4x32([0, 0, 0, 0], 0, 0)), '6627e8d5 e169c58d bc57ac4c 9b00dbd8');
  const f = 0xffffffff;
  assert.is(hex(philox4x32([f, f, f, f], f, f)), '408f276d 41c83b0e a20bc7c6 6d5451fd');
  assert.is(
    hex(philox4x32([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], 0xa4093822, 0x299f31d0)),
    'd16cfe09 94fdcceb 5001e420 24126ea1',
  );
});

/** Global position of every local row of `rank`, by brute force over the layout's definition. */
function layouts(world: number, s: number): [string, PiecesOf][] {
  const out: [string, PiecesOf][] = [
    ['contiguous', contiguousPieces(s)],
    ['stripe', stripePieces(s, world)],
  ];
  if (s % 2 === 0) out.push(['zigzag', zigzagPieces(s, world)]);
  return out;
}

s(
  'block plans: every visible pair is computed once per step, and no step computes an invisible block',
  () => {
    for (const world of WORLDS)
      for (const [name, pieces] of layouts(world, 6))
        for (const m of [
          { left: 2, right: 0 },
          { left: 7, right: 0 },
          { left: 1, right: 3 },
          { left: -1, right: 0 },
          { left: 0, right: -1 },
        ]) {
          const layout = { pieces };
          for (let qr = 0; qr < world; qr++)
            for (let kr = 0; kr < world; kr++) {
              const pos = (rank: number) => {
                const p = new Map<number, number>();
                for (const pc of pieces(rank))
                  for (let i = 0; i < pc.len; i++) p.set(pc.row + i, pc.pos + pc.step * i);
                return p;
              };
              const [qp, kp] = [pos(qr), pos(kr)];
              const sees = (i: number, j: number) => {
                const d = kp.get(j)! - qp.get(i)!;
                return (m.left < 0 || d >= -m.left) && (m.right < 0 || d <= m.right);
              };
              const calls = blockCalls(layout, qr, kr, 6, m);
              const covered = new Map<string, number>();
              for (const c of calls) {
                let any = false;
                for (let i = c.q.start; i < c.q.start + c.q.length; i++)
                  for (let j = c.kv.start; j < c.kv.start + c.kv.length; j++) {
                    // the call's positions are the layout's
                    assert.is(c.pos.q[i - c.q.start], qp.get(i));
                    assert.is(c.pos.k[j - c.kv.start], kp.get(j));
                    if (!sees(i, j)) continue;
                    any = true;
                    covered.set(`${i},${j}`, (covered.get(`${i},${j}`) ?? 0) + 1);
                  }
                assert.ok(any, `${name} world ${world} ${qr}<-${kr}: a call that sees nothing`);
              }
              for (const i of qp.keys())
                for (const j of kp.keys())
                  assert.is(
                    covered.get(`${i},${j}`) ?? 0,
                    sees(i, j) ? 1 : 0,
                    `${name} world ${world} mask ${JSON.stringify(m)} q${qr}:${i} k${kr}:${j}`,
                  );
            }
        }
  },
);

/** visibleRect by its definition: every query row of `qp` against every key of `kp`. */
function scannedRect(qp: Piece, kp: Piece, m: Mask) {
  let [i0, i1, j0, j1] = [-1, -1, Infinity, -Infinity];
  for (let i = 0; i < qp.len; i++)
    for (let j = 0; j < kp.len; j++) {
      const d = kp.pos + kp.step * j - (qp.pos + qp.step * i);
      if ((m.left >= 0 && d < -m.left) || (m.right >= 0 && d > m.right)) continue;
      if (i0 < 0) i0 = i;
      i1 = i;
      [j0, j1] = [Math.min(j0, j), Math.max(j1, j)];
    }
  if (i0 < 0) return null;
  return { q: { start: qp.row + i0, length: i1 - i0 + 1 }, kv: { start: kp.row + j0, length: j1 - j0 + 1 } };
}

s('visibleRect equals the scan of every query and key pair, for strided pieces and any window', () => {
  const piece = (row: number) =>
    fc.record({
      row: fc.constant(row),
      len: fc.integer({ min: 1, max: 40 }),
      pos: fc.integer({ min: 0, max: 200 }),
      step: fc.integer({ min: 1, max: 9 }),
      seq: fc.constant(0),
      part: fc.constant(0),
    });
  const side = fc.integer({ min: -1, max: 60 });
  fc.assert(
    fc.property(piece(3), piece(5), side, side, (qp, kp, left, right) => {
      const m = { left, right };
      assert.equal(visibleRect(qp, kp, m), scannedRect(qp, kp, m), JSON.stringify({ qp, kp, m }));
    }),
    { numRuns: 3000, seed: 26 },
  );
});

s(
  "visibleRect's cost does not grow with the rows: pieces of 2^28 rows take well under a millisecond each",
  () => {
    const n = 2 ** 28;
    const t0 = performance.now();
    for (const [qStep, kStep, m] of [
      [1, 1, { left: 4096, right: 0 }],
      [8, 8, { left: 4096, right: 0 }],
      [8, 8, { left: 5, right: 1 }],
      [3, 7, { left: -1, right: 0 }],
    ] as const) {
      const qp = { row: 0, len: n, pos: 5, step: qStep, seq: 0, part: 0 };
      const kp = { row: 0, len: n, pos: 1 << 20, step: kStep, seq: 0, part: 0 };
      assert.ok(visibleRect(qp, kp, m) !== null);
    }
    const ms = performance.now() - t0;
    assert.ok(ms < 50, `four rectangles of 2^28-row pieces took ${ms.toFixed(1)} ms`);
  },
);

s('block plans of the varlen layouts: per sequence, one span per part pair, never across sequences', () => {
  const cu = Int32Array.from([0, 8, 12, 24]);
  for (const world of [2, 4]) {
    for (const [pieces, parts] of [
      [varlenPieces(cu), 1],
      [zigzagVarlenPieces(cu, world), 2],
    ] as const) {
      const layout = { pieces, seqTok: [0, 8, 12].map((x) => x * world) };
      for (let qr = 0; qr < world; qr++)
        for (let kr = 0; kr < world; kr++) {
          const calls = blockCalls(
            layout,
            qr,
            kr,
            24,
            maskOf({ softmaxScale: 1, causal: true, deterministic: false, window: [3, 0] }),
          );
          assert.ok(calls.length <= parts * parts);
          for (const c of calls) {
            const spec = c.seg!;
            for (let t = 0; t < spec.qStart.length; t++) {
              const seq = [...cu].findIndex(
                (x, i) => i + 1 < cu.length && spec.qStart[t]! >= x && spec.qStart[t]! < cu[i + 1]!,
              );
              assert.ok(spec.kStart[t]! >= cu[seq]! && spec.kStart[t]! + spec.kLen[t]! <= cu[seq + 1]!);
              assert.is(c.pos.seqTok![t], cu[seq]! * world);
            }
          }
        }
    }
  }
});

s('a causal window of one shard: each rank computes its own block and its predecessor only', () => {
  for (const world of [2, 4, 8]) {
    const layout = { pieces: contiguousPieces(4) };
    const m = maskOf({ softmaxScale: 1, causal: true, deterministic: false, window: [3, 0] });
    for (let r = 0; r < world; r++)
      for (let step = 0; step < world; step++) {
        const owner = (r - step + world) % world;
        const n = blockCalls(layout, r, owner, 4, m).length;
        assert.is(n, step === 0 || (step === 1 && r > 0) ? 1 : 0, `world ${world} rank ${r} step ${step}`);
      }
  }
});

// ---------------------------------------------------------------------------------------------
// Dense families

for (const { family, unit } of DENSE)
  s(`${family}: every option at worlds 1, 2, 3, 4, 8 matches the fp64 reference within 1e-5`, async () => {
    for (const world of WORLDS) {
      const rt = await runtimes.get(world);
      for (const [i, opt] of OPTIONS.entries()) {
        const { errs } = await denseCase(rt, family, opt, {
          b: 2,
          s: world * 2 * unit,
          hk: 1,
          d: 8,
          seed: 50 + i,
        });
        checkAs(`world ${world} ${opt.name}`, errs);
      }
    }
  });

s('ulysses and usp (Ulysses × ring): every option, slopes and dropout by the global head', async () => {
  const runs: [number, string, Record<string, unknown>][] = [
    [2, 'ulysses_attn_func', {}],
    ...(['zigzag', 'ring', 'stripe'] as const).map(
      (ring_impl) =>
        [4, 'usp_attn_func', { ulysses: 2, ring: 2, ring_impl }] as [number, string, Record<string, unknown>],
    ),
  ];
  for (const [world, fn, grid] of runs) {
    const rt = await runtimes.get(world);
    for (const [i, opt] of OPTIONS.entries()) {
      const o = { ...opt, kw: { ...opt.kw, ...grid } };
      const { errs } = await denseCase(rt, fn, o, { b: 2, s: world * 4, hk: 2, d: 8, seed: 160 + i });
      checkAs(`${fn} ${JSON.stringify(grid)} ${opt.name}`, errs);
    }
  }
});

s(
  'flash_attn_func: every option, q and k of equal and of different lengths (bottom-right aligned)',
  async () => {
    const rt = await runtimes.get(1);
    for (const [i, opt] of OPTIONS.entries())
      for (const [sq, sk] of [
        [9, 9],
        [5, 11],
        [11, 5],
      ] as const) {
        const { errs } = await denseCase(rt, 'flash_attn_func', opt, {
          b: 2,
          s: sq,
          sk,
          hk: 1,
          d: 8,
          seed: 70 + i,
        });
        checkAs(`${opt.name} sq=${sq} sk=${sk}`, errs);
      }
  },
);

s('the packed wrappers take the options too (kvpacked, qkvpacked)', async () => {
  const rt = await runtimes.get(3);
  const [b, sl, d] = [1, 12, 8];
  const rand = rng(5);
  const q = randn(rand, b * sl * H * d),
    k = randn(rand, b * sl * H * d),
    v = randn(rand, b * sl * H * d),
    dout = randn(rand, b * sl * H * d);
  const kw = OPTIONS[6]!.kw;
  const ref: RefInput = {
    q,
    k,
    v,
    b,
    sq: sl,
    sk: sl,
    h: H,
    hk: H,
    d,
    scale: 1 / Math.sqrt(d),
    ...refMods(kw, [0.25, 0.5], false),
  };
  const f = referenceForward(ref),
    rg = referenceBackward(ref, dout);
  const kv = await rt.call(
    'zigzag_ring_flash_attn_kvpacked_func',
    nd(q, [b, sl, H, d]),
    nd(pack([k, v], b, sl, H, d), [b, sl, 2, H, d]),
    kw,
  );
  const gkv = (await kv.backward(nd(dout, [b, sl, H, d]))) as {
    dq: { data: Float32Array };
    dkv: { data: Float32Array };
  };
  const qkv = await rt.call(
    'stripe_flash_attn_qkvpacked_func',
    nd(pack([q, k, v], b, sl, H, d), [b, sl, 3, H, d]),
    kw,
  );
  const gqkv = (await qkv.backward(nd(dout, [b, sl, H, d]))) as { dqkv: { data: Float32Array } };
  await Promise.all([kv.dispose(), qkv.dispose()]);
  check({
    kvOut: relL2(kv.out.data, f.out),
    kvDq: relL2(gkv.dq.data, rg.dq),
    kvDk: relL2(unpack(gkv.dkv.data, 0, 2, b, sl, H, d), rg.dk),
    kvDv: relL2(unpack(gkv.dkv.data, 1, 2, b, sl, H, d), rg.dv),
    qkvOut: relL2(qkv.out.data, f.out),
    qkvDq: relL2(unpack(gqkv.dqkv.data, 0, 3, b, sl, H, d), rg.dq),
    qkvDk: relL2(unpack(gqkv.dqkv.data, 1, 3, b, sl, H, d), rg.dk),
    qkvDv: relL2(unpack(gqkv.dqkv.data, 2, 3, b, sl, H, d), rg.dv),
  });
});

// ---------------------------------------------------------------------------------------------
// Varlen families

for (const fn of VARLEN)
  s(
    `${fn}: every option at worlds 1, 2, 3, 4, 8 matches the per-sequence fp64 reference within 1e-5`,
    async () => {
      for (const world of WORLDS) {
        const rt = await runtimes.get(world);
        for (const [i, opt] of OPTIONS.entries()) {
          if (opt.perBatchAlibi) continue; // a varlen ring takes one slope per head (tested below)
          const c: VarlenCase = {
            world,
            cu: cuFor(world),
            h: H,
            hk: 1,
            d: 8,
            causal: false,
            packing: 'func',
          };
          const errs = await varlenErrs(rt, fn, c, opt, 90 + i);
          checkAs(`world ${world} ${opt.name}`, errs);
        }
      }
    },
  );

s('flash_attn_varlen_func: every option, slopes per sequence included', async () => {
  const rt = await runtimes.get(1);
  for (const [i, opt] of OPTIONS.entries()) {
    const c: VarlenCase = { world: 1, cu: [0, 7, 10, 19], h: H, hk: 1, d: 8, causal: false, packing: 'func' };
    const errs = await varlenErrs(rt, 'flash_attn_varlen_func', c, opt, 110 + i);
    checkAs(`${opt.name}`, errs);
  }
});

s(
  'alibi_slopes per (batch, head) with a varlen ring raises E_UNSUPPORTED naming the combination',
  async () => {
    const rt = await runtimes.get(2);
    const c: VarlenCase = { world: 2, cu: cuFor(2), h: H, hk: 1, d: 8, causal: true, packing: 'func' };
    for (const fn of VARLEN)
      try {
        await varlenErrs(rt, fn, c, OPTIONS[4]!, 1);
        assert.unreachable(`${fn} accepted (batch, nheads) slopes`);
      } catch (e) {
        assert.instance(e, RingFlashAttnError);
        assert.is((e as RingFlashAttnError).code, 'E_UNSUPPORTED');
        assert.match((e as Error).message, /alibi_slopes of shape \(batch, nheads\) with a varlen ring/);
      }
  },
);

// ---------------------------------------------------------------------------------------------
// Dropout: one mask whatever the world size, variant or rank

/**
 * Every query sees every key equally (q = 0) and v_j = e_j, so out[i, c] = P_ic · Z_ic: the
 * output shows the mask element by element.
 */
async function maskOf_(rt: RingRuntime, fn: string, s: number, seed: number | undefined, causal: boolean) {
  const b = 1,
    d = s;
  const q = new Float32Array(b * s * H * d);
  const v = new Float32Array(b * s * H * d);
  for (let j = 0; j < s; j++) for (let h = 0; h < H; h++) v[(j * H + h) * d + j] = 1;
  const kw: Record<string, unknown> = { causal, dropout_p: 0.3, dtype: 'float32' };
  if (seed !== undefined) kw.dropout_seed = seed;
  const r = await rt.call(
    fn as 'ring_flash_attn_func',
    nd(q, [b, s, H, d]),
    nd(randn(rng(3), b * s * H * d), [b, s, H, d]),
    nd(v, [b, s, H, d]),
    kw,
  );
  await r.dispose();
  return { out: r.out.data, seed: r.dropoutSeed };
}

s(
  'dropout: the same seed keeps the same elements at world 1 and world 8, in every dense family',
  async () => {
    const s = 16;
    const base = await maskOf_(await runtimes.get(1), 'flash_attn_func', s, 2024, true);
    const kept = (o: Float32Array) => Array.from(o, (x) => (x !== 0 ? 1 : 0)).join('');
    assert.ok(kept(base.out).includes('0') && kept(base.out).includes('1'));
    for (const world of [1, 8])
      for (const { family } of DENSE) {
        const r = await maskOf_(await runtimes.get(world), family, s, 2024, true);
        assert.is(kept(r.out), kept(base.out), `${family} world ${world}: another mask`);
        assert.ok(relL2(r.out, base.out) < 1e-6, `${family} world ${world}: values differ`);
        assert.is(r.seed, 2024);
      }
    // Another seed, another mask.
    const other = await maskOf_(await runtimes.get(8), 'zigzag_ring_flash_attn_func', s, 2025, true);
    assert.is.not(kept(other.out), kept(base.out));
  },
);

s(
  'dropout: ring results are bit for bit the same at world 1 and world 8 where no merge reorders them',
  async () => {
    // Non-causal rows of the single-device call and of a world-1 ring see one block each; the
    // world-8 ring merges eight, so there the mask is compared exactly and the values to 1e-6.
    const r1 = await maskOf_(await runtimes.get(1), 'ring_flash_attn_func', 16, 7, false);
    const f1 = await maskOf_(await runtimes.get(1), 'flash_attn_func', 16, 7, false);
    assert.equal(Array.from(r1.out), Array.from(f1.out));
  },
);

s(
  'dropout: without dropout_seed each call draws a fresh seed and reports it; passing it back reproduces the call',
  async () => {
    const rt = await runtimes.get(2);
    const a = await maskOf_(rt, 'ring_flash_attn_func_v2', 8, undefined, true);
    const b = await maskOf_(rt, 'ring_flash_attn_func_v2', 8, undefined, true);
    assert.type(a.seed, 'number');
    assert.is.not(a.seed, b.seed);
    const again = await maskOf_(rt, 'ring_flash_attn_func_v2', 8, a.seed, true);
    assert.equal(Array.from(again.out), Array.from(a.out));
  },
);

s(
  'dropout in SPMD code: the ranks of a group draw the same fresh seed per call, reported on out',
  async () => {
    const rt = await runtimes.get(4);
    const [b, sl, d] = [1, 4, 8];
    const seeds = await rt.spmd<(number | null)[]>(
      new URL('./fixtures/masks_user.js', import.meta.url),
      'freshSeeds',
      {
        q: randn(rng(6), b * sl * H * d),
        shape: [b, sl, H, d],
      },
    );
    const [first, second] = seeds[0]!;
    assert.type(first, 'number');
    assert.is.not(first, second);
    for (const r of seeds) assert.equal(r, [first, second, 1]);
  },
);

s('bfloat16 with every option: the ring error stays at the single-device error (world 4)', async () => {
  const opt = OPTIONS[6]!;
  const errsAt = async (world: number, fn: string) => {
    const rt = await runtimes.get(world);
    const rand = rng(12);
    const [b, sl, d] = [1, 32, 16];
    const q = randn(rand, b * sl * H * d),
      k = randn(rand, b * sl * H * d),
      v = randn(rand, b * sl * H * d);
    const r = await rt.call(
      fn as 'ring_flash_attn_func',
      nd(q, [b, sl, H, d]),
      nd(k, [b, sl, H, d]),
      nd(v, [b, sl, H, d]),
      {
        ...opt.kw,
        dtype: 'bfloat16',
      },
    );
    await r.dispose();
    const ref = referenceForward({
      q,
      k,
      v,
      b,
      sq: sl,
      sk: sl,
      h: H,
      hk: H,
      d,
      scale: 1 / Math.sqrt(d),
      ...refMods(opt.kw, [0.25, 0.5], false),
    });
    return relL2(r.out.data, ref.out);
  };
  const base = await errsAt(1, 'flash_attn_func');
  assert.ok(base < 1e-2, `single-device bf16 error ${base}`);
  for (const { family } of DENSE) {
    const e = await errsAt(4, family);
    assert.ok(
      e <= 1.1 * base + 1e-6,
      `${family}: ${e.toExponential(3)} vs single-device ${base.toExponential(3)}`,
    );
  }
});

// ---------------------------------------------------------------------------------------------
// What a window saves, and the CUDA backend

const FIXTURE = new URL('./fixtures/masks_user.js', import.meta.url);

async function countAll(
  rt: RingRuntime,
  fn: string,
  world: number,
  sPer: number,
  options: Record<string, unknown>,
) {
  const [b, d] = [1, 8];
  const shape = [b, sPer, H, d];
  const rand = rng(8);
  const tasks: CountTask[] = Array.from({ length: world }, () => ({
    fn,
    q: randn(rand, b * sPer * H * d),
    k: randn(rand, b * sPer * H * d),
    v: randn(rand, b * sPer * H * d),
    dout: randn(rand, b * sPer * H * d),
    shape,
    kvShape: shape,
    options,
  }));
  const res = await rt.spmd<Counts>(FIXTURE, 'countRing', { tasks });
  return {
    bytes: res.reduce((a, r) => a + r.sentBytes, 0),
    calls: res.reduce((a, r) => a + r.kernelCalls, 0),
  };
}

s('a window moves a fraction of the ring bytes (measured on CPU at world 8)', async () => {
  const world = 8,
    sPer = 16;
  const rt = await runtimes.get(world);
  const lines: string[] = [];
  const families = [
    'ring_flash_attn_func',
    'ring_flash_attn_func_v2',
    'zigzag_ring_flash_attn_func',
    'stripe_flash_attn_func',
  ];
  for (const fn of families) {
    const full = await countAll(rt, fn, world, sPer, { causal: true });
    const shard = await countAll(rt, fn, world, sPer, { causal: true, window_size: [sPer, 0] });
    const small = await countAll(rt, fn, world, sPer, { causal: true, window_size: [4, 0] });
    lines.push(
      `${fn}: causal ${full.bytes} B / ${full.calls} kernel calls; window (${sPer}, 0) ${shard.bytes} B / ${shard.calls}; window (4, 0) ${small.bytes} B / ${small.calls}`,
    );
    const line = lines[lines.length - 1]!;
    assert.ok(small.bytes <= shard.bytes && shard.bytes <= full.bytes, line);
    if (fn !== 'stripe_flash_attn_func') {
      assert.ok(shard.bytes < full.bytes / 2, line);
      assert.ok(small.bytes < shard.bytes / 2, line);
    }
  }
  console.log(`world ${world}, s=${world * sPer}, b=1, h=2, d=8, float32:\n  ${lines.join('\n  ')}`);
});

s(
  'windows narrower than a shard: only the rows some query sees travel, and the result is exact',
  async () => {
    for (const world of [2, 4, 8]) {
      const rt = await runtimes.get(world);
      for (const { family } of DENSE)
        for (const kw of [{ causal: true, window_size: [3, 0] }, { window_size: [2, 2] }]) {
          const opt = { name: JSON.stringify(kw), kw };
          const { errs } = await denseCase(rt, family, opt, { b: 2, s: world * 8, hk: 1, d: 8, seed: 140 });
          checkAs(`${family} world ${world} ${opt.name}`, errs);
        }
    }
  },
);

s('alibi_slopes as a float32 DeviceTensor in SPMD code equals the host array', async () => {
  const rt = await runtimes.get(2);
  const [b, sl, d] = [1, 8, 8];
  const same = await rt.spmd<boolean>(FIXTURE, 'alibiAsTensor', {
    q: randn(rng(9), b * sl * H * d),
    shape: [b, sl, H, d],
    slopes: [0.5, 0.125],
  });
  assert.equal(same, [true, true]);
});

s('a CUDA backend passes the kernel hooks through to its kernels', () => {
  const cpu = new CpuBackend(10_000);
  const mods: [string, Record<string, unknown>][] = [];
  const fake = Object.assign(Object.create(cpu) as Backend, {
    name: 'cuda',
    kernels: {
      flashFwd: (a: { mods: Record<string, unknown> }) => mods.push(['fwd', a.mods]),
      flashBwd: (a: { mods: Record<string, unknown> }) => mods.push(['bwd', a.mods]),
    },
  });
  const t = (shape: number[]) => cpu.zeros(shape, 'bfloat16');
  const [q, out, lse, dsum] = [
    t([1, 8, 2, 64]),
    t([1, 8, 2, 64]),
    cpu.zeros([1, 2, 8], 'float32'),
    cpu.zeros([1, 2, 8], 'float32'),
  ];
  const o = { softmaxScale: 1, causal: false, hooks: { softcap: 2, windowLeft: 4, windowRight: 0 } };
  fake.flashFwd(q, q, q, out, lse, o);
  const g = cpu.zeros([1, 8, 2, 64], 'float32');
  fake.flashBwd(
    { dout: q, q, k: q, v: q, lse, dsum, dq: g, dk: g, dv: g },
    { ...o, accumulate: false, deterministic: false },
  );
  assert.equal(
    mods.map(([k, m]) => [k, m.softcap, m.window_left, m.window_right]),
    [
      ['fwd', 2, 4, 0],
      ['bwd', 2, 4, 0],
    ],
  );
  for (const x of [q, out, lse, dsum, g]) x.dispose();
});

s('on the CUDA backend an option with head_dim > 128 raises E_UNSUPPORTED naming both', () => {
  const cuda = { name: 'cuda' } as Backend;
  const base = { softmaxScale: 1, causal: true, deterministic: false };
  for (const [o, name] of [
    [{ window: [4, 0] }, 'window_size'],
    [{ softcap: 2 }, 'softcap'],
    [{ alibi: { values: new Float32Array(2), shape: [2] } }, 'alibi_slopes'],
    [{ dropoutP: 0.1 }, 'dropout_p'],
  ] as const) {
    checkBackendSupports('ring_flash_attn_func', cuda, { ...base, ...o } as never, 128);
    try {
      checkBackendSupports('ring_flash_attn_func', cuda, { ...base, ...o } as never, 256);
      assert.unreachable();
    } catch (e) {
      assert.is((e as RingFlashAttnError).code, 'E_UNSUPPORTED');
      assert.match(
        (e as Error).message,
        new RegExp(`^ring_flash_attn_func: ${name} with head_dim 256 is not supported on the CUDA backend`),
      );
    }
  }
  // causal alone is no window; the CPU backend takes everything
  checkBackendSupports('f', cuda, { ...base, window: [-1, 0] }, 256);
  checkBackendSupports('f', { name: 'cpu' } as Backend, { ...base, softcap: 1, window: [2, 0] }, 256);
});

s.run();

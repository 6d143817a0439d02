// GPU suite, second part: the packed (kv, qkv) forms of every dense ring, the Ulysses families
// and the varlen families on CUDA, each against the single-device result on the same inputs (the
// ring's error must stay within 1.1x of it). Skips, and says so, without a GPU; with fewer GPUs
// than ranks the ranks share GPU 0 (test/gpu/placements.ts).
process.env.RFA_POISON = '1';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { init, visibleGpuCount } from '../../index.js';
import { assertWithinSingle, runCase, type Case, type CaseResult, type VariantNames } from '../ring_cases.js';
import { PYTHON_CU_SEQLENS_SETS } from '../../benchmark/bench_varlen_rank.js';
import { familyNames, relL2, suiteRuntime } from '../helpers.js';
import {
  callVarlen,
  runVarlenCase,
  varlenInputs,
  type VarlenCase,
  type VarlenInputs,
  type VarlenNames,
} from '../varlen_cases.js';
import { placements } from './placements.js';

const gpus = visibleGpuCount();
const s = suite('cuda backend: packed forms and varlen families');
if (gpus === 0) console.log('SKIPPED: no GPU visible, the cuda backend is not exercised');

/** Names are built from prefixes at run time here: the variants come from lists. */
const names = (prefix: string, suffix = '') => {
  const n = familyNames(prefix);
  return {
    func: n.func + suffix,
    kvpacked: n.kvpacked + suffix,
    qkvpacked: n.qkvpacked + suffix,
  } as VariantNames;
};
const varlenNames = (prefix: string) => familyNames(prefix) as VarlenNames;

/** A causal bf16 varlen case of head dim 128: GQA with h/2 key heads, except qkvpacked (h). */
const bf16Varlen = (world: number, cu: number[], h: number, packing: VarlenCase['packing']): VarlenCase => ({
  world,
  cu,
  h,
  hk: packing === 'qkvpacked' ? h : h / 2,
  d: 128,
  causal: true,
  packing,
  dtype: 'bfloat16',
});

function within(ring: CaseResult, single: CaseResult, what: string): void {
  assertWithinSingle(ring, single, what, 1e-5);
  // The single-device run is itself bounded, so a family wrong at every world cannot pass.
  assert.ok(
    single.out <= 5e-3 && single.dq <= 1e-2 && single.dk <= 1e-2 && single.dv <= 1e-2,
    `${what}: single-device error out ${single.out}, dq ${single.dq}, dk ${single.dk}, dv ${single.dv}`,
  );
}

if (gpus > 0) {
  const rt1 = suiteRuntime(s, { backend: 'cuda', world: 1 });

  for (const { label: where, opts } of [2, 4].flatMap((w) => placements(w, gpus))) {
    const world = opts.world!;
    s(`${where}: kvpacked and qkvpacked forms of ring, ring_v2, zigzag and stripe`, async () => {
      const rt = await init(opts);
      try {
        for (const packing of ['kvpacked', 'qkvpacked'] as const) {
          const c: Case = {
            world,
            b: 1,
            seqPerRank: 128,
            h: 4,
            hk: packing === 'qkvpacked' ? 4 : 2,
            d: 128,
            causal: true,
            packing,
            dtype: 'bfloat16',
          };
          const single = await runCase(rt1(), names('flash_attn'), c, 61);
          for (const [prefix, suffix] of [
            ['ring_flash_attn', ''],
            ['ring_flash_attn', '_v2'],
            ['zigzag_ring_flash_attn', ''],
            ['stripe_flash_attn', ''],
          ] as const)
            within(await runCase(rt, names(prefix, suffix), c, 61), single, `${prefix}${suffix} ${packing}`);
        }
      } finally {
        await rt.close();
      }
    });

    // Ulysses × ring: every factorisation of the world with each ring variant, against the
    // single-device kernel on the same inputs (the all-to-alls move bf16 values without rounding
    // them again; the ring keeps its fp32 merge).
    s(`${where}: ulysses and usp (every grid, each ring variant) within 1.1x of one GPU`, async () => {
      const rt = await init(opts);
      try {
        const grids: { ulysses: number; ring: number; ring_impl?: string }[] = [];
        for (let u = 1; u <= world; u++) {
          if (world % u !== 0) continue;
          if (u === world) grids.push({ ulysses: u, ring: 1 });
          else
            for (const ring_impl of ['zigzag', 'ring', 'stripe'])
              grids.push({ ulysses: u, ring: world / u, ring_impl });
        }
        for (const [packing, causal] of [
          ['func', true],
          ['kvpacked', false],
          ['qkvpacked', true],
        ] as const) {
          const c: Case = {
            world,
            b: 1,
            seqPerRank: 128,
            h: 2 * world,
            hk: packing === 'qkvpacked' ? 2 * world : world,
            d: 128,
            causal,
            packing,
            dtype: 'bfloat16',
          };
          const single = await runCase(rt1(), names('flash_attn'), c, 67);
          within(await runCase(rt, names('ulysses_attn'), c, 67), single, `ulysses_attn ${packing}`);
          for (const g of grids)
            within(
              await runCase(rt, names('usp_attn'), { ...c, kwargs: g }, 67),
              single,
              `usp_attn ${g.ulysses}x${g.ring} ${g.ring_impl ?? ''} ${packing}`,
            );
        }
      } finally {
        await rt.close();
      }
    });

    s(
      `${where}: ring, zigzag, llama3 and zigzag llama3 varlen against the same family on one GPU`,
      async () => {
        const rt = await init(opts);
        try {
          // Lengths divisible by 2·world (zigzag), total divisible by world (llama3).
          const u = 2 * world;
          const cu = [0, 32 * u, 128 * u, 192 * u];
          for (const [prefix, packing] of [
            ['ring_flash_attn_varlen', 'func'],
            ['zigzag_ring_flash_attn_varlen', 'func'],
            ['llama3_flash_attn_varlen', 'func'],
            ['zigzag_ring_flash_attn_varlen', 'qkvpacked'],
            ['zigzag_llama3_flash_attn_varlen', 'func'],
            ['zigzag_llama3_flash_attn_varlen', 'kvpacked'],
          ] as const) {
            const c = bf16Varlen(world, cu, 4, packing);
            const single = await runVarlenCase(rt1(), varlenNames(prefix), { ...c, world: 1 }, 71);
            within(await runVarlenCase(rt, varlenNames(prefix), c, 71), single, `${prefix} ${packing}`);
          }
        } finally {
          await rt.close();
        }
      },
    );

    // The Python project's own cu_seqlens sets at its size, 8192 tokens per rank (too long for the
    // fp64 reference): every family against itself at world 1 (one kernel call per head group),
    // same inputs, same packing.
    // Both round out and the grads to bf16 once, so they differ by rounding (a few 1e-3);
    // a block computed against the wrong keys or dropped would differ by O(1).
    s(
      `${where}: the Python project's cu_seqlens sets at 8192 tokens per rank agree with one GPU`,
      async () => {
        const rt = await init(opts);
        // Every set has 8192·world tokens: one draw of inputs per head layout serves all four
        // (drawing 25M normals takes seconds).
        const drawn = new Map<string, VarlenInputs>();
        const inputsFor = (c: VarlenCase) => {
          const key = `${c.h}/${c.hk}`;
          if (!drawn.has(key)) drawn.set(key, varlenInputs(c, 81));
          return drawn.get(key)!;
        };
        try {
          for (const set of PYTHON_CU_SEQLENS_SETS) {
            const cu = set.map((x) => x * world);
            for (const [prefix, packing] of [
              ['ring_flash_attn_varlen', 'func'],
              ['zigzag_ring_flash_attn_varlen', 'kvpacked'],
              ['llama3_flash_attn_varlen', 'qkvpacked'],
              ['zigzag_llama3_flash_attn_varlen', 'kvpacked'],
            ] as const) {
              const c = bf16Varlen(world, cu, 2, packing);
              const inputs = inputsFor(c);
              const ring = await callVarlen(rt, varlenNames(prefix), c, inputs);
              const single = await callVarlen(rt1(), varlenNames(prefix), { ...c, world: 1 }, inputs);
              for (const [key, tol] of [
                ['out', 5e-3],
                ['lse', 1e-4],
                ['dq', 1e-2],
                ['dk', 1e-2],
                ['dv', 1e-2],
              ] as const) {
                const e = relL2(ring[key], single[key]);
                assert.ok(
                  e <= tol,
                  `${prefix} ${packing} cu=[${cu.join(',')}] ${key}: ring vs one GPU ${e.toExponential(2)} > ${tol}`,
                );
              }
            }
          }
        } finally {
          await rt.close();
        }
      },
    );
  }
}

s.run();

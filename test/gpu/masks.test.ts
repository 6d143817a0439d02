// GPU suite, third part: the attention options (window_size, softcap, alibi_slopes, dropout) on
// CUDA through every dense and varlen ring at worlds 2 and 4, in bfloat16 at head dims 64 and 128,
// each against the fp64 masked reference; the ring's error must stay within 1.1x of the
// single-device kernel's on the same inputs. Also: the deterministic mode repeats its bits under
// a window, and head_dim 256 with an option is refused by name. Skips, and says so, without a
// GPU; with fewer GPUs than ranks the ranks share GPU 0 (test/gpu/placements.ts).
process.env.RFA_POISON = '1';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { init, visibleGpuCount, type RingRuntime } from '../../index.js';
import { RingFlashAttnError } from '../../runtime/errors.js';
import { nd, randn, rng, suiteRuntime } from '../helpers.js';
import { DENSE, denseCase, VARLEN, varlenErrs, type OptionCase } from '../option_cases.js';
import type { VarlenCase } from '../varlen_cases.js';
import { placements } from './placements.js';

const gpus = visibleGpuCount();
const s = suite('cuda backend: attention options');
if (gpus === 0) console.log('SKIPPED: no GPU visible, the cuda backend is not exercised');

// Windows wider than a key tile, so that the kernels' tile skipping is crossed; two heads (the
// shared cases' H), slopes per head.
const GPU_OPTIONS: OptionCase[] = [
  { name: 'causal window (80, 0)', kw: { causal: true, window_size: [80, 0] } },
  { name: 'window (50, 120)', kw: { window_size: [50, 120] } },
  { name: 'softcap 5', kw: { causal: true, softcap: 5 } },
  { name: 'alibi per head, causal', kw: { causal: true, alibi_slopes: [0.05, 0.2] } },
  { name: 'alibi per (batch, head)', kw: {}, perBatchAlibi: true },
  { name: 'dropout 0.2', kw: { causal: true, dropout_p: 0.2, dropout_seed: 77 } },
  {
    name: 'all of them',
    kw: {
      causal: true,
      window_size: [70, 0],
      softcap: 8,
      alibi_slopes: [0.03, 0.1],
      dropout_p: 0.1,
      dropout_seed: 5,
    },
  },
];

const SEQ_PER_RANK = 96; // not a multiple of the tiles: the span tails are crossed too

/** The ring's errors within 1.1x of the single device's; the single device's bounded in itself. */
function within(ring: Record<string, number>, single: Record<string, number>, what: string): void {
  for (const [k, e] of Object.entries(ring)) {
    const base = single[k]!;
    assert.ok(base <= 1.5e-2, `${what} ${k}: single-device error ${base.toExponential(3)}`);
    assert.ok(
      e <= 1.1 * base + 1e-5,
      `${what} ${k}: ${e.toExponential(3)} vs single-device ${base.toExponential(3)}`,
    );
  }
}

/** Sequence lengths that split into 2·world chunks (zigzag varlen) and sum to a multiple of world. */
const gpuCu = (world: number) =>
  [2, 1, 3].map((n) => n * 16 * world).reduce((cu, l) => [...cu, cu[cu.length - 1]! + l], [0]);

if (gpus > 0) {
  const rt1 = suiteRuntime(s, { backend: 'cuda', world: 1 });

  for (const { label: where, opts } of [2, 4].flatMap((w) => placements(w, gpus))) {
    const world = opts.world!;
    s(`${where}: every option through ring, ring_v2, zigzag and stripe (bf16, d 64 and 128)`, async () => {
      const rt = await init(opts);
      try {
        for (const d of [64, 128])
          for (const [i, opt] of GPU_OPTIONS.entries()) {
            const x = { b: 2, s: world * SEQ_PER_RANK, hk: 1, d, seed: 300 + i, dtype: 'bfloat16' as const };
            const single = (await denseCase(rt1(), 'flash_attn_func', opt, x)).errs;
            for (const { family } of DENSE)
              within((await denseCase(rt, family, opt, x)).errs, single, `${family} d=${d} ${opt.name}`);
          }
      } finally {
        await rt.close();
      }
    });

    s(`${where}: every option through the varlen families (bf16, d 128)`, async () => {
      const rt = await init(opts);
      try {
        for (const [i, opt] of GPU_OPTIONS.entries()) {
          if (opt.perBatchAlibi) continue; // a varlen ring takes one slope per head
          const c: VarlenCase = {
            world,
            cu: gpuCu(world),
            h: 2,
            hk: 1,
            d: 128,
            causal: false,
            packing: 'func',
            dtype: 'bfloat16',
          };
          const single = await varlenErrs(rt1(), 'flash_attn_varlen_func', { ...c, world: 1 }, opt, 400 + i);
          for (const fn of VARLEN)
            within(await varlenErrs(rt, fn, c, opt, 400 + i), single, `${fn} ${opt.name}`);
        }
      } finally {
        await rt.close();
      }
    });
  }

  s('deterministic mode under a window and dropout: two runs give the same bits', async () => {
    const rt = await init(placements(2, gpus)[0]!.opts);
    try {
      const run = async (r: RingRuntime) => {
        const rand = rng(9);
        const [b, sl, h, d] = [1, 1024, 2, 128];
        const t = () => nd(randn(rand, b * sl * h * d), [b, sl, h, d]);
        const [q, k, v, dout] = [t(), t(), t(), t()];
        const res = await r.call('zigzag_ring_flash_attn_func', q, k, v, {
          causal: true,
          window_size: [300, 0],
          dropout_p: 0.1,
          dropout_seed: 3,
          deterministic: true,
          dtype: 'bfloat16',
        });
        const g = await res.backward(dout);
        await res.dispose();
        return [res.out.data, g.dq.data, g.dk.data, g.dv.data] as Float32Array[];
      };
      const [a, b] = [await run(rt), await run(rt)];
      a.forEach((x, i) => assert.ok(Buffer.compare(Buffer.from(x.buffer), Buffer.from(b[i]!.buffer)) === 0));
    } finally {
      await rt.close();
    }
  });

  s('head_dim 256 with an option raises E_UNSUPPORTED naming the combination', async () => {
    const [b, sl, h, d] = [1, 64, 2, 256];
    const t = () => nd(randn(rng(1), b * sl * h * d), [b, sl, h, d]);
    try {
      await rt1().call('flash_attn_func', t(), t(), t(), { causal: true, softcap: 5, dtype: 'bfloat16' });
      assert.unreachable();
    } catch (e) {
      assert.instance(e, RingFlashAttnError);
      assert.is((e as RingFlashAttnError).code, 'E_UNSUPPORTED');
      assert.match((e as Error).message, /softcap with head_dim 256 is not supported on the CUDA backend/);
    }
  });
}

s.run();

// GPU suite: our CUDA kernels against the fp64 reference, every ring variant against the
// single-device kernel at worlds 2 and 4, SPMD on GPUs, and fault isolation. Skips, and says
// so, when no GPU is visible. Outputs are poisoned (RFA_POISON=1: new tensors start as NaN), so
// an element a kernel did not write fails the check.
process.env.RFA_POISON = '1';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { init, visibleGpuCount, type RingRuntime } from '../../index.js';
import type { DType } from '../../runtime/dtype.js';
import type { UnpackedName } from '../../api/types.js';
import {
  suiteRuntime,
  callFunc,
  denseInputs,
  expectError,
  nd,
  packedKvSlice,
  randn,
  relL2,
  rng,
  rounded,
} from '../helpers.js';
import { placements } from './placements.js';
import { cudaNative } from '../../runtime/cuda_native.js';
import { memoReference, referenceBackward, referenceForward, refInputOf, type Dims } from '../reference.js';

/** The rank functions these tests run on the GPU runtime (test/fixtures/spmd_user.ts). */
const USER = new URL('../fixtures/spmd_user.js', import.meta.url).href;

const gpus = visibleGpuCount();
const s = suite('cuda backend');
if (gpus === 0) console.log('SKIPPED: no GPU visible, the cuda backend is not exercised');

interface K extends Dims {
  causal: boolean;
  dtype: DType;
}

/** Relative L2 errors of one flash_attn_func call (or ring call) against fp64 on the rounded inputs. */
async function errors(
  rt: RingRuntime,
  name: UnpackedName,
  c: K,
  seed: number,
  extra: Record<string, unknown> = {},
) {
  const drawn = denseInputs(rng(seed), c);
  const inputs = {
    q: rounded(drawn.q, c.dtype),
    k: rounded(drawn.k, c.dtype),
    v: rounded(drawn.v, c.dtype),
    dout: rounded(drawn.dout, c.dtype),
  };
  const r = await callFunc(rt, name, c, inputs, { causal: c.causal, dtype: c.dtype, ...extra });
  const x = refInputOf(c, inputs);
  const { ref, refG } = memoReference(JSON.stringify({ ...c, seed }), () => ({
    ref: referenceForward(x),
    refG: referenceBackward(x, inputs.dout),
  }));
  return {
    out: relL2(r.out, ref.out),
    lse: relL2(r.lse, ref.lse),
    dq: relL2(r.dq, refG.dq),
    dk: relL2(r.dk, refG.dk),
    dv: relL2(r.dv, refG.dv),
  };
}

const label = (c: K) =>
  `b=${c.b} sq=${c.sq} sk=${c.sk} h=${c.h}/${c.hk} d=${c.d} ${c.causal ? 'causal' : 'full'} ${c.dtype}`;

if (gpus > 0) {
  const rt1 = suiteRuntime(s, { backend: 'cuda', world: 1 });

  const kernelCases: K[] = [
    { b: 2, sq: 300, sk: 300, h: 4, hk: 4, d: 128, causal: true, dtype: 'bfloat16' },
    { b: 1, sq: 257, sk: 257, h: 8, hk: 2, d: 64, causal: true, dtype: 'bfloat16' },
    { b: 1, sq: 77, sk: 200, h: 4, hk: 1, d: 128, causal: true, dtype: 'float16' },
    { b: 1, sq: 200, sk: 77, h: 2, hk: 2, d: 64, causal: true, dtype: 'bfloat16' }, // 123 rows see no key
    { b: 2, sq: 1, sk: 1000, h: 2, hk: 1, d: 128, causal: false, dtype: 'bfloat16' },
    { b: 1, sq: 1000, sk: 1000, h: 2, hk: 2, d: 64, causal: false, dtype: 'float16' },
    { b: 1, sq: 512, sk: 512, h: 4, hk: 2, d: 128, causal: false, dtype: 'bfloat16' },
    { b: 1, sq: 300, sk: 300, h: 4, hk: 2, d: 96, causal: true, dtype: 'bfloat16' },
    { b: 2, sq: 77, sk: 200, h: 2, hk: 1, d: 96, causal: false, dtype: 'float16' },
  ];
  kernelCases.forEach((c, i) => {
    s(`kernel vs fp64: ${label(c)}`, async () => {
      const e = await errors(rt1(), 'flash_attn_func', c, 100 + i);
      assert.ok(e.out <= 5e-3 && e.lse <= 5e-3, `out ${e.out}, lse ${e.lse}`);
      assert.ok(e.dq <= 1e-2 && e.dk <= 1e-2 && e.dv <= 1e-2, `dq ${e.dq}, dk ${e.dk}, dv ${e.dv}`);
    });
  });

  s('unsupported head_dim gives E_UNSUPPORTED, and the pool answers after', async () => {
    const x = nd(new Float32Array(8 * 2 * 48).fill(0.1), [1, 8, 2, 48]);
    await expectError(() => rt1().call('flash_attn_func', x, x, x), 'E_UNSUPPORTED', /head_dim/);
    const e = await errors(rt1(), 'flash_attn_func', kernelCases[1]!, 7);
    assert.ok(e.out <= 5e-3);
  });

  s(
    'the caching allocator reuses the block released last (a ring call sees the same blocks every call)',
    async () => {
      assert.equal(await rt1().spmd(USER, 'allocatorReuse'), [
        { lastReleasedFirst: true, thenTheOther: true },
      ]);
    },
  );

  // A positional ring (window, ALiBi, dropout) uploads a position table before each kernel call:
  // an upload that waited for the queue would leave the GPU idle while the host prepares the next call.
  s('a small upload does not wait for the work queued before it, and lands intact', async () => {
    const [{ upload, queued, intact }] = (await rt1().spmd(USER, 'uploadBehindQueue')) as {
      upload: number;
      queued: number;
      intact: boolean[];
    }[];
    assert.equal(intact, [true, true]);
    assert.ok(
      upload < 0.2 * queued,
      `the position table's upload took ${upload} s on the host behind ${queued} s of queued work`,
    );
  });

  // The benchmark's timing (Backend.startTimer): CUDA events inside the host-clock region they
  // are read in, so never longer than it, and the work fills most of it.
  s(
    'the device timer reads CUDA events: within the host clock around the same work, most of it',
    async () => {
      const [{ device, host, idle }] = (await rt1().spmd(USER, 'deviceTimer')) as {
        device: number;
        host: number;
        idle: number;
      }[];
      assert.ok(device > 0 && device <= host + 1e-4, `device ${device} s, host ${host} s`);
      assert.ok(
        device >= 0.7 * host,
        `device ${device} s is far below the host's ${host} s: the events miss the work`,
      );
      assert.ok(idle >= 0 && idle < 1e-3, `a timer around no work read ${idle} s`);
    },
  );

  // deterministic=True: the backward adds dq's parts in key-tile order (a causal grid is never
  // split), so two passes give the same bits, one device or a ring (whose own adds are in step
  // order); the default mode (fp32 atomics in any order) agrees with it within bf16 rounding.
  s('deterministic=True: two backward passes give the same bits, on one GPU and in a ring', async () => {
    const rand = rng(5);
    const [S, H, HK, D] = [2048, 8, 2, 128];
    const dims = { b: 1, sq: S, sk: S, h: H, hk: HK, d: D };
    const inputs = denseInputs(rand, dims);
    const grads = async (rt: RingRuntime, fn: UnpackedName, deterministic: boolean) => {
      const g = await callFunc(rt, fn, dims, inputs, { causal: true, deterministic });
      return [g.dq, g.dk, g.dv];
    };
    const rt2 = await init(placements(2, gpus)[0]!.opts);
    try {
      for (const [rt, fn] of [
        [rt1(), 'flash_attn_func'],
        [rt2, 'zigzag_ring_flash_attn_func'],
      ] as const) {
        const [a, b, loose] = [
          await grads(rt, fn, true),
          await grads(rt, fn, true),
          await grads(rt, fn, false),
        ];
        ['dq', 'dk', 'dv'].forEach((name, i) => {
          const first = a[i]!.findIndex((x, j) => !Object.is(x, b[i]![j]));
          assert.is(first, -1, `${fn} ${name}: element ${first} differs between two deterministic passes`);
          const e = relL2(a[i]!, loose[i]!);
          assert.ok(e <= 1e-2, `${fn} ${name}: deterministic vs default ${e.toExponential(2)}`);
        });
      }
    } finally {
      await rt2.close();
    }
  });

  s("ranks sharing a GPU: transport 'nccl' is refused with E_DEVICE", async () => {
    await expectError(
      () => init({ backend: 'cuda', world: 2, devices: [0, 0], transport: 'nccl' }),
      'E_DEVICE',
      /copy-engine/,
    );
  });

  s('the default transport: copy engines on one GPU, on two what peer access says', async () => {
    assert.is(rt1().transport, 'copy-engine');
    // The peer-access query behind the default: never a throw, false for a device and itself or a
    // device that does not exist; on two GPUs the default follows what it says.
    const cuda = cudaNative();
    assert.is(cuda.peerAccess(0, 0), false);
    assert.is(cuda.peerAccess(0, gpus + 3), false);
    if (gpus >= 2) {
      const rt = await init({ backend: 'cuda', world: 2 });
      try {
        assert.is(rt.transport, cuda.peerAccess(0, 1) && cuda.peerAccess(1, 0) ? 'copy-engine' : 'nccl');
      } finally {
        await rt.close();
      }
    }
  });

  for (const { label: where, opts } of [2, 4].flatMap((w) => placements(w, gpus))) {
    const world = opts.world!;
    const variants: UnpackedName[] = [
      'ring_flash_attn_func',
      'ring_flash_attn_func_v2',
      'zigzag_ring_flash_attn_func',
      'stripe_flash_attn_func',
    ];
    s(
      `${where}: every ring's error stays within 1.1x the single-device kernel's${world === 4 ? ' (and on a sub-group)' : ''}`,
      async () => {
        const rt = await init(opts);
        try {
          for (const causal of [true, false]) {
            const c: K = {
              b: 1,
              sq: world * 192,
              sk: world * 192,
              h: 4,
              hk: 2,
              d: 128,
              causal,
              dtype: 'bfloat16',
            };
            const base = await errors(rt1(), 'flash_attn_func', c, 31);
            for (const name of variants) {
              const e = await errors(rt, name, c, 31);
              for (const key of ['out', 'lse', 'dq', 'dk', 'dv'] as const)
                assert.ok(
                  e[key] <= 1.1 * base[key] + 1e-5,
                  `${name} ${causal ? 'causal' : 'full'} ${key}: ring ${e[key].toExponential(3)} vs single ${base[key].toExponential(3)}`,
                );
            }
          }
          if (world === 4) {
            // A ring over a sub-group (its own communicator) while ranks 0 and 2 sit out.
            const c: K = { b: 1, sq: 384, sk: 384, h: 4, hk: 2, d: 128, causal: true, dtype: 'bfloat16' };
            const base = await errors(rt1(), 'flash_attn_func', c, 32);
            const e = await errors(rt, 'zigzag_ring_flash_attn_func', c, 32, { group: [1, 3] });
            for (const key of ['out', 'lse', 'dq', 'dk', 'dv'] as const)
              assert.ok(
                e[key] <= 1.1 * base[key] + 1e-5,
                `group [1, 3] ${key}: ring ${e[key].toExponential(3)} vs single ${base[key].toExponential(3)}`,
              );
          }
        } finally {
          await rt.close();
        }
      },
    );
  }

  for (const { label: where, opts } of placements(Math.max(2, Math.min(gpus, 4)), gpus)) {
    s(`${where}: SPMD training step and fault isolation`, async () => {
      const world = opts.world!;
      const rt = await init(opts);
      try {
        const S = world * 128,
          [b, h, d] = [1, 2, 64];
        const rand = rng(5);
        const full = {
          q: rounded(randn(rand, S * h * d), 'bfloat16'),
          k: rounded(randn(rand, S * h * d), 'bfloat16'),
          v: rounded(randn(rand, S * h * d), 'bfloat16'),
          dout: rounded(randn(rand, S * h * d), 'bfloat16'),
        };
        const n = S / world;
        const cut = (x: Float32Array) =>
          Array.from({ length: world }, (_, r) => ({
            data: x.slice(r * n * h * d, (r + 1) * n * h * d),
            shape: [b, n, h, d],
          }));
        const res = (await rt.spmd(USER, 'ringStep', {
          q: cut(full.q),
          k: cut(full.k),
          v: cut(full.v),
          dout: cut(full.dout),
          causal: true,
          dtype: 'bfloat16',
        })) as { out: { data: Uint16Array; dtype: DType } }[];
        const ref = referenceForward({
          ...full,
          b,
          sq: S,
          sk: S,
          h,
          hk: h,
          d,
          scale: 1 / Math.sqrt(d),
          causal: true,
        });
        const { toFloat32 } = await import('../../runtime/dtype.js');
        const out = new Float32Array(S * h * d);
        res.forEach((r, i) => out.set(toFloat32(r.out.data, r.out.dtype), i * n * h * d));
        assert.ok(relL2(out, ref.out) < 5e-3, `spmd out ${relL2(out, ref.out)}`);

        // k and v sliced from packed qkv: read in place over the copy engines (a 2-D copy), through a packing copy over NCCL.
        const kv = (await rt.spmd(USER, 'sendPackedKv')) as {
          inPlace: boolean;
          k: { data: Float32Array };
          v: { data: Float32Array };
        }[];
        kv.forEach((g, r) => {
          assert.is(g.inPlace, opts.transport === 'copy-engine', `rank ${r} read in place`);
          assert.equal(
            Array.from(g.k.data),
            Array.from(packedKvSlice((r + world - 1) % world, 1)),
            `rank ${r} k`,
          );
          assert.equal(
            Array.from(g.v.data),
            Array.from(packedKvSlice((r + world - 1) % world, 2)),
            `rank ${r} v`,
          );
        });

        const t0 = Date.now();
        await expectError(() => rt.spmd(USER, 'failMidRing', { failRank: 1 }), 'E_WORKER', /rank 1/);
        assert.ok(Date.now() - t0 < 20_000, `fault took ${Date.now() - t0} ms`);
        assert.equal(await rt.spmd(USER, 'failMidRing', { failRank: -1 }), Array(world).fill(true));
      } finally {
        await rt.close();
      }
    });

    s(
      `${where}: a rank that never returns is terminated at the call's deadline (E_TIMEOUT), its GPU worker replaced, the next call works`,
      async () => {
        const rt = await init({ ...opts, callTimeoutMs: 0 });
        const FAULTS = new URL('../fixtures/fault_user.js', import.meta.url).href;
        try {
          for (let round = 0; round < 3; round++) {
            const t0 = Date.now();
            await expectError(
              () => rt.spmd(FAULTS, 'hangOn', { rank: 1 }, { timeoutMs: 2000 }),
              'E_TIMEOUT',
              /rank 1 had not returned/,
            );
            assert.ok(Date.now() - t0 < 15_000, `took ${Date.now() - t0} ms`);
            assert.equal(await rt.spmd(USER, 'failMidRing', { failRank: -1 }), Array(opts.world!).fill(true));
          }
        } finally {
          await rt.close();
        }
      },
    );

    s(`${where}: two runtimes on the same GPUs stay independent while one of them fails`, async () => {
      const [a, b] = [await init(opts), await init(opts)];
      try {
        for (let round = 0; round < 5; round++) {
          const failing = (async () => {
            for (let i = 0; i < 3; i++)
              await expectError(
                () => a.spmd(USER, 'failMidRing', { failRank: 1 }),
                'E_WORKER',
                /planned failure on rank 1/,
              );
          })();
          const good = (async () => {
            for (let i = 0; i < 3; i++)
              assert.equal(
                await b.spmd(USER, 'failMidRing', { failRank: -1 }),
                Array(opts.world!).fill(true),
              );
          })();
          await Promise.all([failing, good]);
        }
      } finally {
        await a.close();
        await b.close();
      }
    });

    s(
      `${where}: a rank that never joins the ring: its peers time out with E_NCCL, the next call works`,
      async () => {
        const timeoutMs = 8000;
        const rt = await init({ ...opts, timeoutMs });
        try {
          const t0 = Date.now();
          await expectError(
            () => rt.spmd(USER, 'skipRing', { skipRank: 1 }),
            'E_NCCL',
            /timed out after 8000 ms/,
          );
          assert.ok(Date.now() - t0 < 3 * timeoutMs, `timeout took ${Date.now() - t0} ms`);
          assert.equal(await rt.spmd(USER, 'skipRing', { skipRank: -1 }), Array(opts.world!).fill(true));
        } finally {
          await rt.close();
        }
      },
    );
  }
}

s.run();

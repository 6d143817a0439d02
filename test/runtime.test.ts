// The runtime: one worker per rank, SPMD, sub-groups, failure isolation, close().
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { init, RingFlashAttnError } from '../index.js';
import { defaultTransport, visibleGpuCount } from '../runtime/pool.js';
import { checkSurface, missingFunctions, native } from '../runtime/native.js';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { nd, randn, relL2, rng } from './helpers.js';
import { referenceBackward, referenceForward } from './reference.js';

const USER = new URL('./fixtures/spmd_user.js', import.meta.url).href;
const s = suite('runtime');

async function rejects(p: Promise<unknown>, code: string): Promise<RingFlashAttnError> {
  try {
    await p;
  } catch (e) {
    assert.instance(e, RingFlashAttnError);
    assert.is((e as RingFlashAttnError).code, code, (e as Error).message);
    return e as RingFlashAttnError;
  }
  assert.unreachable(`expected ${code}`);
  throw new Error('unreachable');
}

s('spmd runs user code once per rank with {rank, world, device, group}', async () => {
  const rt = await init({ backend: 'cpu', world: 3 });
  const r = (await rt.spmd(USER, 'whoami', 'hello')) as {
    rank: number;
    world: number;
    group: number[];
    arg: string;
  }[];
  assert.equal(
    r.map((x) => x.rank),
    [0, 1, 2],
  );
  assert.ok(r.every((x) => x.world === 3 && x.arg === 'hello' && x.group.join() === '0,1,2'));
  assert.is(rt.transport, 'copy-engine', 'the resolved default transport');
  await rt.close();
});

s('default transport: copy engines where every two GPUs reach each other, NCCL where a pair cannot', () => {
  const all = () => true;
  assert.is(defaultTransport([0, 1, 2, 3], all), 'copy-engine');
  assert.is(
    defaultTransport([0], () => false),
    'copy-engine',
    'one GPU: no pair to ask about',
  );
  const asked: string[] = [];
  const no23 = (a: number, b: number) => (
    asked.push(`${a}${b}`),
    !((a === 2 && b === 3) || (a === 3 && b === 2))
  );
  assert.is(defaultTransport([0, 1, 2, 3], no23), 'nccl');
  assert.ok(asked.includes('23') || asked.includes('32'), 'the pair without peer access was asked about');
  assert.is(
    defaultTransport([0, 1], (a, b) => !(a === 1 && b === 0)),
    'nccl',
    'access one way only is not enough',
  );
  assert.is(
    defaultTransport([0, 0, 1, 1], () => false),
    'copy-engine',
    'ranks sharing a GPU: NCCL refuses them',
  );
});

function shardArgs(world: number, s: number, causal: boolean, seed: number) {
  const rand = rng(seed);
  const [b, h, d] = [1, 2, 16];
  const full = {
    q: randn(rand, b * s * h * d),
    k: randn(rand, b * s * h * d),
    v: randn(rand, b * s * h * d),
    dout: randn(rand, b * s * h * d),
  };
  const n = s / world;
  const cut = (x: Float32Array) =>
    Array.from({ length: world }, (_, r) => ({
      data: x.slice(r * n * h * d, (r + 1) * n * h * d),
      shape: [b, n, h, d],
    }));
  return {
    full,
    dims: { b, h, d },
    arg: { q: cut(full.q), k: cut(full.k), v: cut(full.v), dout: cut(full.dout), causal },
  };
}

function concat(parts: { data: Float32Array }[]): Float32Array {
  const out = new Float32Array(parts.reduce((a, p) => a + p.data.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p.data, o);
    o += p.data.length;
  }
  return out;
}

s('spmd: a training step on local shards matches the fp64 reference', async () => {
  const world = 4,
    S = 24;
  const rt = await init({ backend: 'cpu', world });
  const { full, dims, arg } = shardArgs(world, S, true, 5);
  const res = (await rt.spmd(USER, 'ringStep', arg)) as {
    out: { data: Float32Array };
    dq: { data: Float32Array };
    dk: { data: Float32Array };
  }[];
  const x = { ...full, ...dims, sq: S, sk: S, hk: dims.h, scale: 1 / Math.sqrt(dims.d), causal: true };
  assert.ok(relL2(concat(res.map((r) => r.out)), referenceForward(x).out) < 1e-5);
  const g = referenceBackward(x, full.dout);
  assert.ok(relL2(concat(res.map((r) => r.dq)), g.dq) < 1e-5);
  assert.ok(relL2(concat(res.map((r) => r.dk)), g.dk) < 1e-5);
  await rt.close();
});

s('group: a ring over a subset of ranks (SPMD and driver mode)', async () => {
  const rt = await init({ backend: 'cpu', world: 4 });
  const S = 12;
  const { full, dims, arg } = shardArgs(2, S, false, 9);
  const res = (await rt.spmd(USER, 'ringStep', { ...arg, group: [1, 3] })) as ({
    out: { data: Float32Array };
  } | null)[];
  assert.is(res[0], null);
  assert.is(res[2], null);
  const x = { ...full, ...dims, sq: S, sk: S, hk: dims.h, scale: 1 / Math.sqrt(dims.d), causal: false };
  const ref = referenceForward(x).out;
  assert.ok(relL2(concat([res[1]!.out, res[3]!.out]), ref) < 1e-5);
  const shape = [dims.b, S, dims.h, dims.d];
  const r = await rt.call('ring_flash_attn_func', nd(full.q, shape), nd(full.k, shape), nd(full.v, shape), {
    group: [0, 2],
  });
  assert.ok(relL2(r.out.data, ref) < 1e-5);
  await r.dispose();
  await rt.close();
});

s(
  'a rank that throws between collectives fails every rank fast with E_WORKER; the next call works',
  async () => {
    const rt = await init({ backend: 'cpu', world: 4 });
    const t0 = Date.now();
    const e = await rejects(rt.spmd(USER, 'failMidRing', { failRank: 2 }), 'E_WORKER');
    assert.ok(Date.now() - t0 < 5000, `took ${Date.now() - t0} ms`);
    assert.match(e.message, /rank 2/);
    assert.match(e.message, /planned failure/);
    assert.is(e.rank, 2);
    const ok = await rt.spmd(USER, 'failMidRing', { failRank: -1 });
    assert.equal(ok, [true, true, true, true]);
    await rt.close();
  },
);

s('a peer that never sends times out with E_WORKER instead of hanging', async () => {
  const rt = await init({ backend: 'cpu', world: 2, timeoutMs: 300 });
  // Rank 1 returns without entering the ring; rank 0 waits for its block, then times out.
  const e = await rejects(rt.spmd(USER, 'skipRing', { skipRank: 1 }), 'E_WORKER');
  assert.match(e.message, /timed out after 300 ms waiting for a message from rank 1/);
  assert.equal(await rt.spmd(USER, 'skipRing', { skipRank: -1 }), [true, true]);
  await rt.close();
});

s('user errors inside SPMD keep their code when every rank fails alike', async () => {
  const rt = await init({ backend: 'cpu', world: 2 });
  const e = await rejects(rt.spmd(USER, 'passNdarray'), 'E_ARG');
  assert.match(e.message, /q must be a DeviceTensor/);
  await rejects(rt.spmd(USER, 'noSuchExport'), 'E_ARG');
  assert.equal((await rt.spmd(USER, 'whoami', 1)).length, 2);
  await rt.close();
});

s('close(): later calls reject with E_CLOSED; close twice is fine', async () => {
  const rt = await init({ backend: 'cpu', world: 2 });
  await rt.close();
  await rt.close();
  await rejects(rt.spmd(USER, 'whoami'), 'E_CLOSED');
  const shape = [1, 2, 1, 8];
  const x = nd(new Float32Array(16).fill(1), shape);
  await rejects(rt.call('ring_flash_attn_func', x, x, x), 'E_CLOSED');
});

s('two runtimes in one process keep their communicators apart', async () => {
  const [a, b] = await Promise.all([init({ backend: 'cpu', world: 2 }), init({ backend: 'cpu', world: 2 })]);
  const rand = rng(12);
  const shape = [1, 8, 2, 16];
  const x = [nd(randn(rand, 256), shape), nd(randn(rand, 256), shape), nd(randn(rand, 256), shape)] as const;
  const [ra, rb] = await Promise.all([
    a.call('ring_flash_attn_func', ...x, { causal: true }),
    b.call('ring_flash_attn_func_v2', ...x, { causal: true }),
  ]);
  assert.ok(relL2(ra.out.data, rb.out.data) < 1e-6);
  await Promise.all([a.close(), b.close()]);
});

s('concurrent calls are serialised: collectives never interleave', async () => {
  const rt = await init({ backend: 'cpu', world: 3 });
  const rand = rng(3);
  const shape = [1, 9, 2, 8];
  const mk = () => nd(randn(rand, 144), shape);
  const calls = Array.from({ length: 4 }, (_, i) =>
    rt.call(i % 2 ? 'ring_flash_attn_func' : 'ring_flash_attn_func_v2', mk(), mk(), mk(), { causal: true }),
  );
  const results = await Promise.all(calls);
  assert.is(results.length, 4);
  await Promise.all(results.map((r) => r.dispose()));
  await rt.close();
});

s('spmd returns device tensors as ndarrays carrying their dtype; plain data stays as it came', async () => {
  const rt = await init({ backend: 'cpu', world: 2 });
  type R = {
    f32: { shape: number[]; dtype: string; data: Float32Array; get(i: number, j: number): number };
    nested: { dtype: string; data: Uint16Array }[];
    lookalike: object;
  };
  const [r] = await rt.spmd<R>(new URL('./fixtures/fault_user.js', import.meta.url), 'tensors');
  assert.equal(r!.f32.shape, [2, 3]);
  assert.is(r!.f32.dtype, 'float32');
  assert.is(r!.f32.get(1, 2), 6, 'an ndarray: indexed access works');
  assert.is(r!.nested[0]!.dtype, 'bfloat16');
  assert.instance(r!.nested[0]!.data, Uint16Array);
  assert.equal(
    Object.keys(r!.lookalike).sort(),
    ['data', 'dtype', 'shape'],
    'user data is not mistaken for a tensor',
  );
  await rt.close();
});

s('an addon whose surface does not match the package fails at load, naming what it lacks', () => {
  const real = native();
  checkSurface(real, 'the loaded addon'); // the addon this suite runs on matches
  const stale = { ...real, cpu: { ...real.cpu, mailReset: undefined }, plan: {} };
  let e: RingFlashAttnError | undefined;
  try {
    checkSurface(stale, '/x/ring_flash_attn.node');
  } catch (err) {
    e = err as RingFlashAttnError;
  }
  assert.instance(e, RingFlashAttnError);
  assert.is(e!.code, 'E_DEVICE');
  assert.match(e!.message, /\/x\/ring_flash_attn\.node/);
  assert.match(e!.message, /cpu\.mailReset, plan\.simulateLaunch, plan\.planFwdLaunch, plan\.planBwdSplits/);
  assert.match(e!.message, /npm rebuild ring-flash-attn/);
  assert.equal(missingFunctions({ a: () => 0 }, 'x', { a: true, b: true }), ['x.b']);
  assert.equal(missingFunctions(undefined, 'cuda', { init: true }), ['cuda.init']);
});

s('init backend cuda on a build without CUDA says why the build has none', async () => {
  if (native().cudaBuilt) {
    assert.is(native().cudaOmitted, '');
    return;
  }
  const e = await rejects(init({ backend: 'cuda' }), 'E_DEVICE');
  assert.match(
    e.message,
    /built without CUDA \((it was built with RFA_CUDA=OFF|nvcc was not found at build time)\)/,
  );
  if (process.env.RFA_CUDA === 'OFF') assert.match(e.message, /RFA_CUDA=OFF/);
});

s('the test runner counts suites that skip whole and names them above its last line', () => {
  if (visibleGpuCount() > 0) return; // the GPU suite would run
  const run = fileURLToPath(new URL('./run.js', import.meta.url));
  const r = spawnSync(process.execPath, [run, 'gpu/cuda.test'], { encoding: 'utf8' });
  const lines = r.stdout.trim().split('\n');
  assert.match(lines.at(-2)!, /^skipped: 0 tests, 1 whole suites: gpu\/cuda\.test\.js \(no GPU visible/);
  assert.is(lines.at(-1), '0 passed, 0 failed');
});

s('RFA_ADDON may be a path relative to the working directory', () => {
  const root = fileURLToPath(new URL('../..', import.meta.url));
  const r = spawnSync(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      "import { native } from './dist/runtime/native.js'; console.log(typeof native().cpu.flashFwd);",
    ],
    { cwd: root, encoding: 'utf8', env: { ...process.env, RFA_ADDON: 'build/Release/ring_flash_attn.node' } },
  );
  assert.is(r.stdout.trim(), 'function', r.stderr);
});

s.run();

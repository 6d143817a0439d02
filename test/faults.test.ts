// Faults that used to wedge a runtime, corrupt another runtime's messages or kill the host: a
// rank that never returns, errors thrown outside any call, two runtimes failing side by side,
// cancellation, and the messages of results and shapes that cannot travel.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { init } from '../api/index.js';
import type { RingFlashAttnError } from '../runtime/errors.js';
import { expectError, nd, randn, rng } from './helpers.js';

const USER = new URL('./fixtures/fault_user.js', import.meta.url);
const s = suite('faults');

async function failsWith(p: Promise<unknown>, code: string, fragment: RegExp): Promise<RingFlashAttnError> {
  let caught: RingFlashAttnError | undefined;
  await expectError(
    async () => {
      try {
        await p;
      } catch (e) {
        caught = e as RingFlashAttnError;
        throw e;
      }
    },
    code,
    fragment,
  );
  return caught!;
}

s(
  'a rank that never returns: the call rejects with E_TIMEOUT naming it, the worker is replaced, close() ends',
  async () => {
    const rt = await init({ backend: 'cpu', world: 2 });
    await rt.spmd(USER, 'sleep', { ms: 1 }); // workers started and the module loaded, so only rank 1 can be late
    const t0 = Date.now();
    const e = await failsWith(
      rt.spmd(USER, 'hangOn', { rank: 1 }, { timeoutMs: 300 }),
      'E_TIMEOUT',
      /'hangOn' timed out after 300 ms: rank 1 had not returned/,
    );
    assert.is(e.rank, 1);
    assert.ok(Date.now() - t0 < 3000, `took ${Date.now() - t0} ms`);
    assert.equal(await rt.spmd(USER, 'sleep', { ms: 1 }), [0, 1]);
    const [c0, c1] = await rt.spmd<number>(USER, 'count');
    assert.is(c1, 1, 'rank 1 runs on a fresh worker');
    assert.is(c0, 1, 'count never ran on rank 0 before');
    const t1 = Date.now();
    await rt.close();
    assert.ok(Date.now() - t1 < 3000);
  },
);

s(
  'ranks terminated inside a native wait (a ring receive) leave the process and the runtime intact, 20 rounds',
  async () => {
    const rt = await init({ backend: 'cpu', world: 3, callTimeoutMs: 0 });
    for (let round = 0; round < 20; round++) {
      await failsWith(
        rt.spmd(USER, 'hangWhilePeersWait', { rank: 1 }, { timeoutMs: 100 + (round % 5) * 20 }),
        'E_TIMEOUT',
        /had not returned/,
      );
      assert.equal(await rt.spmd(USER, 'sleep', { ms: 1 }), [0, 1, 2]);
    }
    await rt.close();
  },
);

s('init callTimeoutMs bounds every call that sets no deadline of its own', async () => {
  const rt = await init({ backend: 'cpu', world: 2, callTimeoutMs: 500 });
  await rt.spmd(USER, 'sleep', { ms: 1 }); // workers started and the module loaded, so only rank 0 can be late
  await failsWith(rt.spmd(USER, 'hangOn', { rank: 0 }), 'E_TIMEOUT', /rank 0 had not returned/);
  assert.equal(await rt.spmd(USER, 'sleep', { ms: 1 }), [0, 1]);
  await rt.close();
});

s(
  'a rank failing while another never returns: E_TIMEOUT after the grace, naming the stuck rank and the failure',
  async () => {
    const rt = await init({ backend: 'cpu', world: 3, timeoutMs: 300, callTimeoutMs: 0 });
    await rt.spmd(USER, 'sleep', { ms: 1 });
    const e = await failsWith(
      rt.spmd(USER, 'throwAndHang', { throwRank: 0, hangRank: 2 }),
      'E_TIMEOUT',
      /rank 2 did not return within 300 ms after rank 0 failed \(E_WORKER: planned failure on rank 0\)/,
    );
    assert.is(e.rank, 2);
    assert.equal(await rt.spmd(USER, 'sleep', { ms: 1 }), [0, 1, 2]);
    await rt.close();
  },
);

s('an AbortSignal cancels a running call with E_ABORTED; an aborted signal refuses at once', async () => {
  const rt = await init({ backend: 'cpu', world: 2 });
  const ac = new AbortController();
  setTimeout(() => ac.abort(new Error('user gave up')), 100);
  await failsWith(
    rt.spmd(USER, 'hangOn', { rank: 1 }, { signal: ac.signal }),
    'E_ABORTED',
    /'hangOn' was aborted \(user gave up\)/,
  );
  await failsWith(rt.spmd(USER, 'sleep', { ms: 1 }, { signal: ac.signal }), 'E_ABORTED', /was aborted/);
  assert.equal(await rt.spmd(USER, 'sleep', { ms: 1 }), [0, 1]);
  await rt.close();
});

s('close() during a stuck call ends within its bound; the call rejects with E_CLOSED', async () => {
  const rt = await init({ backend: 'cpu', world: 2, callTimeoutMs: 0 });
  const stuck = failsWith(
    rt.spmd(USER, 'hangOn', { rank: 0 }),
    'E_CLOSED',
    /runtime closed while the call was running/,
  );
  await new Promise((r) => setTimeout(r, 50));
  const t0 = Date.now();
  await rt.close({ timeoutMs: 100 });
  assert.ok(Date.now() - t0 < 3000, `close took ${Date.now() - t0} ms`);
  await stuck;
});

for (const kind of ['throw', 'reject'] as const)
  s(
    `an error ${kind === 'throw' ? 'thrown' : 'rejected'} after a step returned is reported with its rank, charged to no call, and the worker replaced`,
    async () => {
      const seen: RingFlashAttnError[] = [];
      const rt = await init({ backend: 'cpu', world: 2, onWorkerError: (e) => seen.push(e) });
      assert.equal(await rt.spmd(USER, 'throwLater', { rank: 1, afterMs: 30, kind }), [1, 1]);
      // A call in flight when the stray error lands is not charged with it.
      assert.equal(await rt.spmd(USER, 'sleep', { ms: 200 }), [0, 1]);
      assert.is(seen.length, 1);
      assert.is(seen[0]!.code, 'E_WORKER');
      assert.is(seen[0]!.rank, 1);
      assert.match(
        seen[0]!.message,
        kind === 'throw'
          ? /rank 1's worker threw outside any call \(uncaughtException: stray error on rank 1\)/
          : /unhandledRejection: stray rejection on rank 1/,
      );
      const [c0, c1] = await rt.spmd<number>(USER, 'count');
      assert.is(c0, 2, 'rank 0 keeps its worker');
      assert.is(c1, 1, 'rank 1 runs on a fresh worker');
      await rt.close();
    },
  );

s('timeouts must be whole milliseconds in [1, 2^31 - 1] (0 allowed for deadlines)', async () => {
  for (const bad of [Infinity, 0.5, 2 ** 31, 0, -1, NaN, '5'])
    await expectError(
      () => init({ backend: 'cpu', world: 1, timeoutMs: bad as number }),
      'E_ARG',
      new RegExp(
        `^init: timeoutMs must be an integer number of milliseconds in \\[1, 2147483647\\], got ${bad === '5' ? '"5"' : String(bad)}$`,
      ),
    );
  await expectError(
    () => init({ backend: 'cpu', world: 1, callTimeoutMs: Infinity }),
    'E_ARG',
    /callTimeoutMs must be an integer number of milliseconds in \[0, 2147483647\], got Infinity/,
  );
  const rt = await init({ backend: 'cpu', world: 1 });
  await expectError(
    () => rt.spmd(USER, 'count', undefined, { timeoutMs: 1.5 }),
    'E_ARG',
    /^timeoutMs must be an integer/,
  );
  await expectError(
    () => rt.spmd(USER, 'count', undefined, { signal: {} as AbortSignal }),
    'E_ARG',
    /^signal must be an AbortSignal, got object/,
  );
  await rt.close();
});

// Results the main thread refuses: a typed error naming why, and the runtime serves the next call.
const REFUSED_RESULTS = [
  {
    title: 'an SPMD result that cannot be cloned names where it cannot',
    fn: 'uncloneable',
    code: 'E_ARG',
    message: /'uncloneable' returned a value the main thread cannot receive: result\.fn is a function/,
  },
  {
    title: 'ranks whose SPMD shapes differ get E_SHAPE naming both shapes',
    fn: 'unequalShards',
    code: 'E_SHAPE',
    message:
      /ranks passed local tensors of different shapes: rank [01] sent a block of \(1, (8|16), 2, 16\) float32 \(\d+ bytes\), rank [01] expected \(1, (16|8), 2, 16\) float32/,
  },
];
for (const { title, fn, code, message } of REFUSED_RESULTS)
  s(title, async () => {
    const rt = await init({ backend: 'cpu', world: 2 });
    await expectError(() => rt.spmd(USER, fn), code, message);
    assert.equal((await rt.spmd(USER, 'sleep', { ms: 1 })).length, 2);
    await rt.close();
  });

s('two runtimes in one process stay independent while one of them fails, 100 rounds', async () => {
  const a = await init({ backend: 'cpu', world: 4 });
  const b = await init({ backend: 'cpu', world: 4 });
  const rand = rng(7);
  const shape = [1, 256, 2, 16];
  const n = shape.reduce((x, y) => x * y);
  const [q, k, v] = [randn(rand, n), randn(rand, n), randn(rand, n)];
  const first = await b.call('ring_flash_attn_func', nd(q, shape), nd(k, shape), nd(v, shape), {
    causal: true,
  });
  const ref = Float32Array.from(first.out.data);
  await first.dispose();
  for (let round = 0; round < 100; round++) {
    const failing = (async () => {
      for (let i = 0; i < 6; i++)
        await expectError(
          () => a.spmd(new URL('./fixtures/spmd_user.js', import.meta.url), 'failMidRing', { failRank: 1 }),
          'E_WORKER',
          /planned failure on rank 1/,
        );
    })();
    const good = (async () => {
      for (let i = 0; i < 6; i++) {
        const r = await b.call('ring_flash_attn_func', nd(q, shape), nd(k, shape), nd(v, shape), {
          causal: true,
        });
        assert.equal(r.out.data, ref, `round ${round} call ${i}`);
        await r.dispose();
      }
    })();
    await Promise.all([failing, good]);
  }
  await a.close();
  await b.close();
});

s('driver mode takes timeoutMs and signal beside the Python keywords', async () => {
  const rt = await init({ backend: 'cpu', world: 2 });
  const x = nd(new Float32Array(1 * 8 * 1 * 16).fill(0.5), [1, 8, 1, 16]);
  const ac = new AbortController();
  ac.abort(new Error('not wanted'));
  await expectError(
    () => rt.call('ring_flash_attn_func', x, x, x, { causal: true, signal: ac.signal }),
    'E_ABORTED',
    /'forward' was aborted \(not wanted\)/,
  );
  await expectError(
    () => rt.call('ring_flash_attn_func', x, x, x, { timeoutMs: -5 }),
    'E_ARG',
    /^timeoutMs must be an integer number of milliseconds/,
  );
  const r = await rt.call('ring_flash_attn_func', x, x, x, { causal: true, timeoutMs: 10_000 });
  assert.equal(Array.from(r.out.data.slice(0, 2)), [0.5, 0.5]);
  await r.backward(x);
  await r.dispose();
  await rt.close();
});

s('ctx.tensor uploads what a view shows; odd values in messages never throw', async () => {
  const rt = await init({ backend: 'cpu', world: 1 });
  // A (3, 2) transposed view of the C-order (2, 3) data [0 .. 5].
  const view = { data: Float32Array.from([0, 1, 2, 3, 4, 5]), shape: [3, 2], stride: [1, 3], offset: 0 };
  const [t] = await rt.spmd<{ data: Float32Array }>(USER, 'upload', view);
  assert.equal(Array.from(t!.data), [0, 3, 1, 4, 2, 5]);
  await expectError(
    () => rt.spmd(USER, 'upload', { data: new Float32Array(7), shape: [2, 3] }),
    'E_SHAPE',
    /ctx\.tensor: host has 7 data elements but shape \(2, 3\) holds 6/,
  );
  await expectError(
    () => rt.spmd(USER, 'upload', { data: new Uint16Array(2), shape: [2], dtype: 1n }),
    'E_DTYPE',
    /must be one of .*got 1/,
  );
  await expectError(
    () => rt.spmd(USER, 'count', undefined, { timeoutMs: 1n as unknown as number }),
    'E_ARG',
    /^timeoutMs must be an integer number of milliseconds in \[0, 2147483647\], got 1/,
  );
  await rt.close();
});

s.run();

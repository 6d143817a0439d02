// native/launch_plan.h: the launch simulation behind both CUDA kernels' launch plans, and the
// plans it picks for the shapes whose alternatives were all timed (benchmark/RESULTS.md). Host
// code: runs in every build.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { native } from '../runtime/native.js';

const s = suite('launch plan');
const plan = () => native().plan;
const SMS = 132; // H200

/** Key tiles (64 keys) of each 64-row query tile in the forward's launch order: heaviest first, heads inner. */
function fwdTileSteps(nq: number, nk: number, heads: number, causal: boolean): number[] {
  const mBlocks = Math.ceil(nq / 64);
  return Array.from({ length: mBlocks * heads }, (_, i) => {
    const m0 = (mBlocks - 1 - Math.floor(i / heads)) * 64;
    const end = causal ? Math.min(nk, m0 + 64 + nk - nq) : nk;
    return end > 0 ? Math.ceil(end / 64) : 0;
  });
}

/** Query steps (64 rows x query heads per kv head) of each 128-key tile of the backward, in launch order. */
function bwdKeyTileSteps(nq: number, nk: number, heads: number, headsK: number, causal: boolean): number[] {
  const group = heads / headsK,
    mTotal = Math.ceil(nq / 64),
    diag = nk - nq;
  return Array.from({ length: Math.ceil(nk / 128) }, (_, n) => {
    const firstRow = causal ? Math.max(0, n * 128 - diag) : 0;
    return firstRow < nq ? group * (mTotal - Math.floor(firstRow / 64)) : 0;
  });
}

const close = (a: number, b: number) => assert.ok(Math.abs(a - b) < 1e-9 * Math.max(1, b), `${a} != ${b}`);

s('simulation: full waves, lone tails, shared SMs', () => {
  const sim = (work: number[], ctasPerSm: number, sms = SMS) =>
    plan().simulateLaunch({ work, sms, ctasPerSm });
  close(sim(Array(2 * SMS).fill(10), 2), 20); // two per SM share throughput 1.0
  close(sim(Array(3 * SMS).fill(11), 3), 30); // three share 1.1
  close(sim(Array(SMS + 1).fill(10), 1), (2 * 10) / 0.6); // one per SM runs at 0.6; the 133rd waits for a slot
  close(sim([10, 20], 2, 1), 20 + 10 / 0.6); // both at 0.5 until the first ends, then the second alone
  close(sim([5, 5], 1, 1), 10 / 0.6); // launch order on one slot
  close(sim([], 2), 0);
  // New CTAs spread over the SMs freed at one moment: a wave of 3 per SM, then 132 CTAs one per SM.
  close(sim(Array(3 * SMS + SMS).fill(6), 3), (6 * 3) / 1.1 + 6 / 0.6);
});

s('forward plans: the measured fastest of every timed alternative', () => {
  const pick = (tileSteps: number[], residencies = [2, 3], mustSplit = false) =>
    plan().planFwdLaunch({ tileSteps, sms: SMS, residencies, maxSplits: 8, mustSplit });
  // The zigzag ring's 4096q x 8192k half block (rank 0's later steps): two whole tiles on every SM
  // and the last 56 tiles in two pieces, three CTAs per SM (faster than the plan before it).
  assert.equal(pick(fwdTileSteps(4096, 8192, 5, false)), { whole: 264, splits: 2, ctasPerSm: 3 });
  assert.equal(pick(fwdTileSteps(8192, 4096, 5, false)), { whole: 640, splits: 1, ctasPerSm: 3 });
  assert.equal(pick(fwdTileSteps(8192, 8192, 5, true)), { whole: 640, splits: 1, ctasPerSm: 3 });
  // Fixed residency (the mma.sync kernels; a forced build) and forced splitting.
  assert.is(pick(fwdTileSteps(4096, 8192, 5, false), [2]).ctasPerSm, 2);
  assert.ok(pick(fwdTileSteps(8192, 4096, 5, false), [2, 3], true).splits > 1);
  // A grid far below one wave: every tile in pieces.
  const small = pick(fwdTileSteps(1000, 1000, 4, true));
  assert.is(small.whole, 0);
  assert.ok(small.splits > 1);
});

s('backward splits: the measured fastest at every swept shape', () => {
  const pick = (nq: number, nk: number, heads: number, headsK: number, causal: boolean) =>
    plan().planBwdSplits({
      keyTileSteps: bwdKeyTileSteps(nq, nk, heads, headsK, causal),
      ctasPerTile: headsK,
      sms: SMS,
      maxSplits: 8,
    });
  assert.is(pick(8192, 8192, 5, 5, true), 2);
  assert.is(pick(8192, 8192, 32, 8, true), 2);
  assert.is(pick(8192, 8192, 5, 5, false), 2);
  assert.is(pick(8192, 4096, 5, 5, false), 4);
  assert.is(pick(4096, 8192, 5, 5, false), 2); // two splits clearly beat unsplit here
  assert.is(pick(8192, 4096, 32, 8, false), 2);
  assert.is(pick(4096, 8192, 32, 8, false), 2);
  assert.is(plan().planBwdSplits({ keyTileSteps: [], ctasPerTile: 1, sms: SMS, maxSplits: 8 }), 1);
});

s('every plan is launchable: whole in range, splits in range, a residency that was offered', () => {
  let seed = 7;
  const rand = (n: number) => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % n;
  for (let trial = 0; trial < 200; trial++) {
    const tiles = 1 + rand(1500),
      sms = 1 + rand(200),
      maxSplits = 1 + rand(8);
    const residencies = [[2], [3], [2, 3]][rand(3)]!;
    const tileSteps = Array.from({ length: tiles }, () => rand(300));
    const mustSplit = maxSplits > 1 && rand(4) === 0;
    const p = plan().planFwdLaunch({ tileSteps, sms, residencies, maxSplits, mustSplit });
    const what = JSON.stringify({ tiles, sms, maxSplits, residencies, mustSplit, p });
    assert.ok(p.whole >= 0 && p.whole <= tiles, what);
    assert.ok(p.splits >= 1 && p.splits <= maxSplits, what);
    assert.ok(p.splits > 1 || p.whole === tiles, what); // one piece per tile only as "every tile whole"
    assert.ok(!mustSplit || p.splits > 1, what);
    assert.ok(residencies.includes(p.ctasPerSm), what);
    const keyTileSteps = tileSteps.slice(0, 1 + rand(64));
    const splits = plan().planBwdSplits({ keyTileSteps, ctasPerTile: 1 + rand(8), sms, maxSplits });
    assert.ok(Number.isInteger(splits) && splits >= 1 && splits <= maxSplits, `${splits}`);
  }
});

s('bad input is an E_ARG error naming the argument', () => {
  const expectArg = (run: () => unknown, fragment: RegExp) => {
    try {
      run();
    } catch (e) {
      assert.is((e as { code?: string }).code, 'E_ARG', (e as Error).message);
      assert.match((e as Error).message, fragment);
      return;
    }
    assert.unreachable('expected E_ARG');
  };
  expectArg(() => plan().simulateLaunch({ work: [1], sms: 0, ctasPerSm: 1 }), /sms/);
  expectArg(() => plan().simulateLaunch({ work: [1], sms: 4, ctasPerSm: 4 }), /ctas_per_sm/);
  expectArg(() => plan().simulateLaunch({ work: [-1], sms: 4, ctasPerSm: 1 }), /'work'/);
  expectArg(
    () => plan().simulateLaunch({ work: 'x' as unknown as number[], sms: 4, ctasPerSm: 1 }),
    /'work'/,
  );
  expectArg(
    () => plan().planFwdLaunch({ tileSteps: [1], sms: 4, residencies: [], maxSplits: 8, mustSplit: false }),
    /residency/,
  );
  expectArg(
    () =>
      plan().planFwdLaunch({
        tileSteps: [2 ** 40],
        sms: 4,
        residencies: [2],
        maxSplits: 8,
        mustSplit: false,
      }),
    /'tileSteps'/,
  );
  expectArg(
    () => plan().planBwdSplits({ keyTileSteps: [1], ctasPerTile: 0, sms: 4, maxSplits: 8 }),
    /ctas_per_tile/,
  );
});

s.run();

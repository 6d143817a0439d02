// The benchmark's per-rank timing loop: every rank must end its warm-up on the same repeat, or
// the ranks that go on wait in a collective their peers never join (the x2/x4 hang of
// `npm run bench` at default settings). Tiny CPU shapes make the repeat times noisy enough
// that ranks deciding alone would disagree.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { init } from '../index.js';
import type { BenchResult, BenchTask } from '../benchmark/bench_rank.js';
import type { VarlenBenchTask, VarlenColumn } from '../benchmark/bench_varlen_rank.js';
import { checkTargets, PYTHON_X4, type Report } from '../benchmark/issue_targets.js';
import { newestWorld4 } from '../benchmark/result_files.js';

const BENCH_RANK = new URL('../benchmark/bench_rank.js', import.meta.url).href;
const BENCH_VARLEN_RANK = new URL('../benchmark/bench_varlen_rank.js', import.meta.url).href;
const s = suite('benchmark');

for (const name of ['zigzag_ring_flash_attn_qkvpacked_func', 'flash_attn_qkvpacked_func']) {
  s(`${name}: all ranks agree on the warm-up length`, async () => {
    const rt = await init({ backend: 'cpu', world: 3, timeoutMs: 10_000 });
    try {
      const task: BenchTask = { name, b: 1, s: 12, h: 2, hk: 2, d: 16, causal: true, dtype: 'float32', backward: true, iters: 1, maxRepeats: 8, settle: 0.03, seed: 1 };
      for (let trial = 0; trial < 5; trial++) {
        const res = (await rt.spmd(BENCH_RANK, 'run', task)) as BenchResult[];
        assert.is(new Set(res.map((r) => r.warmupRepeats)).size, 1, `warm-up repeats per rank: ${res.map((r) => r.warmupRepeats)}`);
        assert.ok(res.every((r) => r.repeats.length === 5 && r.repeats.every((t) => t > 0)));
      }
    } finally {
      await rt.close();
    }
  });
}

// `npm run bench -- --solo W [--solo-rank R]`: one rank plays rank R of a W-rank ring (every rank
// in turn without R) with transfers skipped (benchmark/solo_comm.ts). On the CPU backend a real transfer to a
// missing peer would wait until the timeout, so finishing quickly shows that no transfer was
// attempted. Ranks 3 and 0: zigzag's two ends run their half blocks in opposite shapes.
s('solo mode runs every ring column as rank 3 and as rank 0 of 4 on one rank, forward and backward', async () => {
  const rt = await init({ backend: 'cpu', world: 1, timeoutMs: 10_000 });
  try {
    for (const rank of [3, 0])
      for (const prefix of ['ring_flash_attn', 'zigzag_ring_flash_attn', 'stripe_flash_attn'])
        for (const suffix of ['', '_v2']) {
          if (suffix && prefix !== 'ring_flash_attn') continue;
          const name = `${prefix}_qkvpacked_func${suffix}`;
          const task: BenchTask = { name, b: 1, s: 16, h: 2, hk: 2, d: 16, causal: true, dtype: 'float32', backward: true, iters: 1, maxRepeats: 2, settle: 1, seed: 1, solo: { world: 4, rank } };
          const [res] = (await rt.spmd(BENCH_RANK, 'run', task)) as BenchResult[];
          assert.ok(res!.repeats.length === 5 && res!.repeats.every((t) => t > 0), `${name} as rank ${rank}`);
        }
  } finally {
    await rt.close();
  }
});

// The CLI in solo mode without --solo-rank plays every rank in turn and reports each column's
// slowest (a ring in lockstep runs at its slowest rank's pace), naming it in a row.
s('npm run bench -- --solo 4 plays ranks 0..3 and names the slowest per ring column', () => {
  const cli = fileURLToPath(new URL('../benchmark/readme_table.js', import.meta.url));
  const r = spawnSync(process.execPath, [cli, '--backend', 'cpu', '--solo', '4', '--tokens', '16', '--iters', '1', '--max-repeats', '2', '--modes', 'fwd'],
    { encoding: 'utf8', timeout: 120_000 });
  assert.is(r.status, 0, r.stderr);
  assert.match(r.stdout, /solo: each rank of 4 in turn \(the slowest reported\)/);
  const row = r.stdout.split('\n').find((l) => l.startsWith('| slowest solo rank |'));
  assert.ok(row, r.stdout);
  const ranks = row!.split('|').slice(3, -1).map((x) => Number(x.trim()));
  assert.is(ranks.length, 4, row);
  assert.ok(ranks.every((x) => Number.isInteger(x) && x >= 0 && x < 4), row);
  const bad = spawnSync(process.execPath, [cli, '--backend', 'cpu', '--solo', '4', '--solo-rank', '4'], { encoding: 'utf8', timeout: 60_000 });
  assert.is(bad.status, 1);
  assert.match(bad.stderr, /--solo-rank must be 'all' or an integer in \[0, 4\)/);
});

s('--columns times only the named ring columns next to theoretic; --columns, --cases and --modes name an unknown value', () => {
  const cli = fileURLToPath(new URL('../benchmark/readme_table.js', import.meta.url));
  const r = spawnSync(process.execPath, [cli, '--backend', 'cpu', '--solo', '2', '--tokens', '16', '--iters', '1', '--max-repeats', '2', '--modes', 'fwd',
    '--columns', 'zigzag_ring'], { encoding: 'utf8', timeout: 120_000 });
  assert.is(r.status, 0, r.stderr);
  const header = r.stdout.split('\n').find((l) => l.includes('theoretic flash_attn'));
  assert.is(header, '|          | theoretic flash_attn | zigzag_ring |');
  const bad = spawnSync(process.execPath, [cli, '--backend', 'cpu', '--columns', 'zigzag'], { encoding: 'utf8', timeout: 60_000 });
  assert.is(bad.status, 1);
  assert.match(bad.stderr, /--columns: unknown zigzag \(one of ring_attn, ring_attn_v2, zigzag_ring, stripe_attn\)/);
  // --cases and --modes name what they do not know, instead of timing nothing.
  for (const [flag, value, message] of [['--cases', '1', /--cases: unknown 1 \(indices 0\.\.0 of the dense cases, or none\)/],
    ['--modes', 'bwd', /--modes: unknown bwd \(fwd, fwdbwd\)/]] as const) {
    const r2 = spawnSync(process.execPath, [cli, '--backend', 'cpu', flag, value], { encoding: 'utf8', timeout: 60_000 });
    assert.is(r2.status, 1, flag);
    assert.match(r2.stderr, message);
  }
});

// The varlen table's rank code: every column runs forward + backward over all four sets.
s('varlen columns run the seed-style cu_seqlens sets, forward and backward', async () => {
  const rt = await init({ backend: 'cpu', world: 2, timeoutMs: 10_000 });
  try {
    for (const column of ['flash_attn_varlen', 'ring_varlen', 'zigzag_ring_varlen', 'llama3'] as VarlenColumn[]) {
      const task: VarlenBenchTask = {
        column, s: 16, h: 4, hk: 2, d: 16, dtype: 'float32', backward: true, iters: 4, maxRepeats: 2, settle: 1,
        sets: [[0, 16], [0, 4, 12, 16], [0, 8, 16], [0, 6, 10, 14, 16]], headsKStride: 1, seed: 1,
      };
      const res = (await rt.spmd(BENCH_VARLEN_RANK, 'run', task)) as BenchResult[];
      assert.is(res.length, 2, column);
      assert.ok(res.every((r) => r.repeats.length === 5 && r.repeats.every((t) => t > 0)), column);
    }
  } finally {
    await rt.close();
  }
});

// Solo varlen: the ring columns as one rank of 4 with transfers skipped, llama3 with its
// all-gather and reduce-scatter skipped too (a real collective would wait for its peers until
// the 10 s timeout, so finishing shows none was attempted). llama3's rank 3 attends to the
// longest key prefix, rank 0 to the shortest.
s('varlen columns run as solo ranks 3 and 0 of 4, collectives skipped, forward and backward', async () => {
  const rt = await init({ backend: 'cpu', world: 1, timeoutMs: 10_000 });
  try {
    for (const rank of [3, 0])
      for (const column of ['ring_varlen', 'zigzag_ring_varlen', 'llama3'] as VarlenColumn[]) {
        const task: VarlenBenchTask = {
          column, s: 16, h: 4, hk: 2, d: 16, dtype: 'float32', backward: true, iters: 4, maxRepeats: 2, settle: 1,
          sets: [[0, 16], [0, 4, 12, 16], [0, 8, 16], [0, 6, 10, 14, 16]], headsKStride: 1, seed: 1, solo: { world: 4, rank },
        };
        const started = Date.now();
        const [res] = (await rt.spmd(BENCH_VARLEN_RANK, 'run', task)) as BenchResult[];
        assert.ok(res!.repeats.length === 5 && res!.repeats.every((t) => t > 0), `${column} as rank ${rank}`);
        assert.ok(Date.now() - started < 5_000, `${column} as rank ${rank} took ${Date.now() - started} ms`);
      }
  } finally {
    await rt.close();
  }
});

// The README-table issue's bar, read off a result file (benchmark/issue_targets.ts): a synthetic
// world-4 report with every cell 10% above the Python project's and zigzag at 96% of theoretic.
function report(over: Partial<Report> = {}, zigzagShare = 0.96): Report {
  const results: Report['results'] = [];
  const cases = { seed: 'seed qkvpacked (h=5, d=128)', llama3: 'llama3-8B kvpacked (h=32, h_k=8, d=128)' };
  for (const [shape, title] of Object.entries(cases))
    for (const mode of ['fwd', 'fwdbwd']) {
      const t = PYTHON_X4[shape]![mode]!;
      const theoretic = t['theoretic flash_attn']! * 2;  // per rank, ÷ world (4) below
      results.push({ case: title, mode, column: 'theoretic flash_attn', iterPerSecPerRank: theoretic * 4 });
      for (const column of ['ring_attn', 'ring_attn_v2', 'stripe_attn'])
        results.push({ case: title, mode, column, iterPerSecPerRank: (t[column] ?? 1) * 1.1 });
      results.push({ case: title, mode, column: 'zigzag_ring', iterPerSecPerRank: theoretic * zigzagShare });
    }
  results.push({ case: 'varlen llama3-8B kvpacked', mode: 'fwd', column: 'zigzag_ring_varlen', iterPerSecPerRank: 1 });
  return { machine: '4× GPU (NVIDIA H200), nccl transfers', backend: 'cuda', world: 4, results, ...over };
}

s('issue targets: met on a passing world-4 GPU report, not met below the bar, on a solo run or at world 2', () => {
  const pass = checkTargets(report());
  assert.ok(pass.met, pass.lines.join('\n'));
  assert.is(pass.lines.length, 17, 'one line per cell with a target, then the verdict');
  assert.match(pass.lines.at(-1)!, /every target met/);
  const low = checkTargets(report({}, 0.94));
  assert.not.ok(low.met);
  assert.ok(low.lines.some((l) => /zigzag_ring: .*94\.0% of theoretic BELOW 95%/.test(l)), low.lines.join('\n'));
  const solo = checkTargets(report({ machine: 'solo: each rank of 4 in turn' }));
  assert.not.ok(solo.met);
  assert.match(solo.lines.at(-1)!, /solo run/);
  assert.not.ok(checkTargets(report({ world: 2 })).met);
  const partial = report();
  partial.results = partial.results.filter((r) => !r.case.startsWith('llama3'));
  assert.match(checkTargets(partial).lines.at(-1)!, /8 of 16 cells/);
});

s("issue targets: a world-2 run's zigzag set beside Python's world-2 share; the newest world-4 file of either transport", () => {
  // At world 2 the theoretic is the single-GPU rate ÷ 2; zigzag at 96% of it.
  const w2 = report({ world: 2 });
  for (const r of w2.results) if (r.column === 'theoretic flash_attn') r.iterPerSecPerRank /= 2;
  const lines = checkTargets(w2).lines;
  assert.ok(lines.some((l) => /seed fwd zigzag_ring: .*96\.0% of theoretic .*above Python's world-2 93\.6%/.test(l)), lines.join('\n'));
  assert.ok(lines.some((l) => /llama3 fwd\+bwd zigzag_ring: .*not above Python's world-2 97\.9%/.test(l)), lines.join('\n'));
  assert.not.ok(checkTargets(report()).lines.some((l) => /world-2/.test(l)), 'world 4 lines carry no world-2 comparison');

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rfa-targets-'));
  try {
    for (const f of ['2026-11-28-21-09-cuda-w4.json', '2026-11-29-12-00-cuda-w4-ce.json', '2026-11-29-13-00-cuda-w2-ce.json', '2026-11-29-14-00-cuda-solo4-ce.json'])
      fs.writeFileSync(path.join(dir, f), '{}');
    assert.is(path.basename(newestWorld4(dir)!), '2026-11-29-12-00-cuda-w4-ce.json');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

s.run();

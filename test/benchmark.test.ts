// The benchmark: its per-rank timing loop, solo and varlen ranks, the command line (usage, exit
// codes, one-line errors), the charts, the issue's targets, and where results are written.
// The timing loop: every rank must end its warm-up on the same repeat, or the ranks that go on
// wait in a collective their peers never join (the x2/x4 hang of `npm run bench` at default
// settings). Tiny CPU shapes make the repeat times noisy enough that ranks deciding alone would
// disagree.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { init, visibleGpuCount, type RingRuntime } from '../index.js';
import { BENCH_FLAGS, benchOptions } from '../benchmark/bench_flags.js';
import { MODES, smallVarlenSets, THEORETIC } from '../benchmark/cases.js';
import type { ValueFlag } from '../benchmark/cli_flags.js';
import type { BenchResult, BenchTask } from '../benchmark/bench_rank.js';
import type { VarlenBenchTask, VarlenColumn } from '../benchmark/bench_varlen_rank.js';
import { barChart } from '../benchmark/chart.js';
import { checkTargets, type Report } from '../benchmark/issue_targets.js';
import { PYTHON_README_H800, PYTHON_X4 } from '../benchmark/python_results.js';
import { pythonChart, tableChart } from '../benchmark/report_charts.js';
import { newestWorld4, RESULTS_DIR } from '../benchmark/result_files.js';
import { unsupportedBy } from '../benchmark/unsupported.js';
import { readAnchor } from '../benchmark/kernel.js';
import { RingFlashAttnError } from '../runtime/errors.js';

const BENCH_RANK = new URL('../benchmark/bench_rank.js', import.meta.url).href;
const BENCH_VARLEN_RANK = new URL('../benchmark/bench_varlen_rank.js', import.meta.url).href;
const script = (name: string) => fileURLToPath(new URL(`../benchmark/${name}.js`, import.meta.url));
const CLI = script('cli'),
  TABLE = script('readme_table'),
  KERNEL = script('kernel');

// Every run of the benchmark here writes into OUT: a test run must leave benchmark/results (the
// committed results) as it was, which the last test checks.
const OUT = fs.mkdtempSync(path.join(os.tmpdir(), 'rfa-bench-'));
const resultsBefore = fs.existsSync(RESULTS_DIR) ? fs.readdirSync(RESULTS_DIR).sort() : [];

/** Runs a compiled benchmark script on the CPU side of things; results go to OUT unless --out says otherwise. */
function run(file: string, args: string[], env: NodeJS.ProcessEnv = {}) {
  const { RFA_PROGRESS, RFA_DEBUG, ...inherited } = process.env;
  return spawnSync(process.execPath, [file, ...args], {
    encoding: 'utf8',
    timeout: 120_000,
    env: { ...inherited, RFA_RESULTS_DIR: OUT, ...env },
  });
}

/** A rejected command line: exit 2, one stderr line naming the flag and the value, nothing run. */
function rejected(r: ReturnType<typeof run>, ...named: string[]) {
  assert.is(r.status, 2, `exit ${r.status}: ${r.stderr}`);
  assert.is(r.stdout, '', 'nothing ran');
  const lines = r.stderr.trimEnd().split('\n');
  assert.is(lines.length, 1, r.stderr);
  for (const n of named) assert.ok(lines[0]!.includes(n), `${lines[0]} names ${n}`);
}

const s = suite('benchmark');

/** What every rank task here shares: float32 forward + backward, a warm-up of two repeats at most. */
const TINY = { d: 16, dtype: 'float32', backward: true, maxRepeats: 2, settle: 1, seed: 1 } as const;

/** A dense rank task on tiny CPU shapes; `over` names what a test changes. */
function denseTask(name: string, over: Partial<BenchTask> = {}): BenchTask {
  return { ...TINY, name, b: 1, s: 16, h: 2, hk: 2, causal: true, iters: 1, ...over };
}

/** A varlen rank task: the Python project's kind of four cu_seqlens sets, scaled to 32 tokens. */
function varlenTask(column: VarlenColumn, over: Partial<VarlenBenchTask> = {}): VarlenBenchTask {
  return {
    ...TINY,
    column,
    s: 32,
    h: 4,
    hk: 2,
    iters: 4,
    sets: smallVarlenSets(32),
    headsKStride: 1,
    ...over,
  };
}

/** A rank's result: the last warm-up repeat and four more (bench_rank.ts), every time positive. */
const timedFive = (r: BenchResult) => r.repeats.length === 5 && r.repeats.every((t) => t > 0);

/** Runs `body` on a CPU runtime of `world` ranks, closed after; a collective waits 10 s at most. */
async function onCpu(world: number, body: (rt: RingRuntime) => Promise<void>): Promise<void> {
  const rt = await init({ backend: 'cpu', world, timeoutMs: 10_000 });
  try {
    await body(rt);
  } finally {
    await rt.close();
  }
}

/** The flags of a quick CPU table: 16 tokens, one iteration, two repeats, forward only. */
const QUICK = ['--backend', 'cpu', '--tokens', '16', '--iters', '1', '--max-repeats', '2', '--modes', 'fwd'];

for (const name of ['zigzag_ring_flash_attn_qkvpacked_func', 'flash_attn_qkvpacked_func']) {
  s(`${name}: all ranks agree on the warm-up length`, async () => {
    await onCpu(3, async (rt) => {
      const task = denseTask(name, { s: 12, maxRepeats: 8, settle: 0.03 });
      for (let trial = 0; trial < 5; trial++) {
        const res = (await rt.spmd(BENCH_RANK, 'run', task)) as BenchResult[];
        assert.is(
          new Set(res.map((r) => r.warmupRepeats)).size,
          1,
          `warm-up repeats per rank: ${res.map((r) => r.warmupRepeats)}`,
        );
        assert.ok(res.every(timedFive));
      }
    });
  });
}

// `npm run bench -- --solo W [--solo-rank R]`: one rank plays rank R of a W-rank ring (every rank
// in turn without R) with transfers skipped (benchmark/solo_comm.ts). On the CPU backend a real transfer to a
// missing peer would wait until the timeout, so finishing quickly shows that no transfer was
// attempted. Ranks 3 and 0: zigzag's two ends run their half blocks in opposite shapes.
s(
  'solo mode runs every ring column as rank 3 and as rank 0 of 4 on one rank, forward and backward',
  async () => {
    await onCpu(1, async (rt) => {
      for (const rank of [3, 0])
        for (const prefix of ['ring_flash_attn', 'zigzag_ring_flash_attn', 'stripe_flash_attn'])
          for (const suffix of ['', '_v2']) {
            if (suffix && prefix !== 'ring_flash_attn') continue;
            const name = `${prefix}_qkvpacked_func${suffix}`;
            const task = denseTask(name, { solo: { world: 4, rank } });
            const [res] = (await rt.spmd(BENCH_RANK, 'run', task)) as BenchResult[];
            assert.ok(timedFive(res!), `${name} as rank ${rank}`);
          }
    });
  },
);

// A solo Ulysses rank makes its grid's two sub-groups from the solo group: their transfers are
// skipped too (a real one would wait for a missing peer until the timeout).
s('solo mode runs the Ulysses columns as rank 3 and as rank 0 of 4, every sub-group solo', async () => {
  await onCpu(1, async (rt) => {
    for (const rank of [3, 0])
      for (const usp of [
        { ulysses: 4, ring: 1, ringImpl: null },
        ...(['zigzag', 'ring', 'stripe'] as const).map((ringImpl) => ({ ulysses: 2, ring: 2, ringImpl })),
      ]) {
        const name = usp.ringImpl ? 'usp_attn_qkvpacked_func' : 'ulysses_attn_qkvpacked_func';
        const task = denseTask(name, { h: 4, hk: 4, solo: { world: 4, rank }, usp });
        const [res] = (await rt.spmd(BENCH_RANK, 'run', task)) as BenchResult[];
        assert.ok(timedFive(res!), `${name} ${usp.ringImpl} as rank ${rank}`);
      }
  });
});

s(
  '--columns usp_zigzag,ulysses: the grid row; a Ulysses degree the heads do not take leaves its cell out',
  () => {
    const r = run(TABLE, [...QUICK, '--solo', '4', '--columns', 'usp_zigzag,ulysses', '--varlen', 'off']);
    assert.is(r.status, 0, r.stderr);
    const lines = r.stdout.split('\n');
    assert.ok(lines.includes('|          | theoretic flash_attn | ulysses | usp_zigzag |'), r.stdout);
    // The CPU case has 2 heads: the world's 4 Ulysses ranks cannot split them; usp takes 2 × 2.
    assert.ok(
      lines.includes(
        '| ulysses × ring | | not run: ulysses 4 does not divide the heads (h=2, h_k=2) | 2 × 2 |',
      ),
      r.stdout,
    );
    const iter = lines.find((l) => l.startsWith('| iter/sec |'))!.split('|');
    assert.is(iter[3]!.trim(), '—');
    assert.ok(Number(iter[4]) > 0, iter.join('|'));
    rejected(
      run(TABLE, ['--backend', 'cpu', '--world', '4', '--columns', 'usp_ring', '--ulysses', '3']),
      '--ulysses 3: expected a divisor of the world (4)',
    );
    rejected(
      run(TABLE, ['--backend', 'cpu', '--world', '4', '--ulysses', '2']),
      '--ulysses 2 needs a usp column',
    );
  },
);

// The CLI in solo mode without --solo-rank plays every rank in turn and reports each column's
// slowest (a ring in lockstep runs at its slowest rank's pace), naming it in a row. stderr is no
// terminal here: no progress bar, nothing on stderr at all.
s('npm run bench -- --solo 4 plays ranks 0..3 and names the slowest per ring column', () => {
  const r = run(TABLE, [...QUICK, '--solo', '4']);
  assert.is(r.status, 0, r.stderr);
  assert.is(r.stderr, '');
  assert.match(r.stdout, /solo: each rank of 4 in turn \(the slowest reported\)/);
  const row = r.stdout.split('\n').find((l) => l.startsWith('| slowest solo rank |'));
  assert.ok(row, r.stdout);
  const ranks = row!
    .split('|')
    .slice(3, -1)
    .map((x) => Number(x.trim()));
  assert.is(ranks.length, 4, row);
  assert.ok(
    ranks.every((x) => Number.isInteger(x) && x >= 0 && x < 4),
    row,
  );
  rejected(
    run(TABLE, ['--backend', 'cpu', '--solo', '4', '--solo-rank', '4']),
    '--solo-rank 4: expected all or an integer in [0, 4)',
  );
});

s(
  '--columns times only the named ring columns next to theoretic; --columns, --cases and --modes name an unknown value',
  () => {
    const r = run(CLI, ['bench', ...QUICK, '--solo', '2', '--columns', 'zigzag_ring', '--varlen', 'off']);
    assert.is(r.status, 0, r.stderr);
    const header = r.stdout.split('\n').find((l) => l.includes('theoretic flash_attn'));
    assert.is(header, '|          | theoretic flash_attn | zigzag_ring |');
    // Each names what it does not know, instead of timing nothing.
    rejected(
      run(TABLE, ['--backend', 'cpu', '--columns', 'zigzag']),
      '--columns zigzag: unknown zigzag (one of ring_attn, ring_attn_v2, zigzag_ring, stripe_attn, ulysses, usp_zigzag, usp_ring, usp_stripe)',
    );
    rejected(
      run(TABLE, ['--backend', 'cpu', '--cases', '1']),
      '--cases 1: unknown 1 (indices 0..0 of the dense cases on cpu, or none)',
    );
    rejected(run(TABLE, ['--backend', 'cpu', '--modes', 'bwd']), '--modes bwd: unknown bwd (fwd, fwdbwd)');
  },
);

// --window (issue #26): the flag, its scaling to the CPU size, and the table beside the plain one.
s('--window takes L or L,R; the cpu backend scales it by its tokens per rank over 8192', () => {
  const parse = (raw: string) =>
    (BENCH_FLAGS.window.parse as (r: string, f: string) => unknown)(raw, '--window');
  assert.equal(parse('4096'), [4096, 0]);
  assert.equal(parse('4096,-1'), [4096, -1]);
  for (const raw of ['', '-1', '4096,', '4096,-2', '1,2,3', 'x', '4096,0.5'])
    assert.throws(() => parse(raw), /--window .*expected L or L,R/, raw);
  const cpu = benchOptions({ backend: 'cpu', window: [4096, 0] }, 0);
  assert.equal(cpu.window, { asked: [4096, 0], used: [64, 0] });
  assert.equal(benchOptions({ backend: 'cpu', tokens: 16, window: [4096, 2048] }, 0).window!.used, [8, 4]);
  assert.equal(benchOptions({ backend: 'cuda', window: [4096, 0] }, 2).window!.used, [4096, 0]);
  assert.is(benchOptions({ backend: 'cpu' }, 0).window, null);
  rejected(
    run(TABLE, ['--backend', 'cpu', '--window', '64', '--cases', 'none']),
    '--window 64,0 needs a dense case',
  );
  rejected(run(TABLE, ['--backend', 'cpu', '--window', '64,x']), '--window 64,x: expected L or L,R');
});

s('--window prints the window table beside the plain one, and the rings send fewer bytes with it', () => {
  const r = run(CLI, ['bench', ...QUICK, '--window', '4096', '--varlen', 'off']);
  assert.is(r.status, 0, r.stderr);
  assert.ok(
    r.stdout.includes('# window_size (8, 0) beside no window (asked (4096, 0), scaled by 16/8192'),
    r.stdout,
  );
  const lines = r.stdout.split('\n');
  const title = lines.findIndex((l) => l.endsWith('forward, window_size (8, 0) beside none'));
  assert.ok(title > 0, r.stdout);
  const table = lines.slice(title + 2, title + 11);
  assert.is(table[0], `|          | ${THEORETIC} | ring_attn | ring_attn_v2 | zigzag_ring | stripe_attn |`);
  for (const row of ['iter/sec, no window', 'iter/sec, window (8, 0)', 'speed-up', 'bytes saved'])
    assert.ok(
      table.some((l) => l.startsWith(`| ${row}`)),
      `${row} in\n${table.join('\n')}`,
    );
  const file = r.stdout.match(/results: (\S+\.json)/)![1]!;
  const doc = JSON.parse(fs.readFileSync(path.resolve(file), 'utf8'));
  assert.equal(doc.window.used, [8, 0]);
  type Row = { column: string; sentBytes: number[]; unsupported?: string };
  const mean = (row: Row) => row.sentBytes.reduce((a, b) => a + b, 0) / row.sentBytes.length;
  const plain = new Map<string, Row>(doc.results.map((x: Row) => [x.column, x]));
  for (const w of doc.window.results as Row[]) {
    assert.is(w.unsupported, undefined, w.column);
    const p = plain.get(w.column)!;
    if (w.column === THEORETIC) assert.equal([mean(p), mean(w)], [0, 0], 'one device sends nothing');
    else if (w.column === 'stripe_attn')
      assert.ok(mean(w) <= mean(p), `${w.column}: ${mean(w)} vs ${mean(p)}`);
    else
      assert.ok(
        mean(w) < mean(p) && mean(w) > 0,
        `${w.column}: ${mean(w)} B with the window vs ${mean(p)} B`,
      );
  }
});

// A backend that refuses an option: its message, directly or through the rank failure it caused.
s('unsupportedBy finds an E_UNSUPPORTED refusal, and only that', () => {
  const refusal = new RingFlashAttnError('E_UNSUPPORTED', 'window_size is not supported');
  assert.is(unsupportedBy(refusal), 'window_size is not supported');
  const wrapped = new RingFlashAttnError('E_WORKER', 'rank 1 failed (E_UNSUPPORTED)', { cause: refusal });
  assert.is(unsupportedBy(wrapped), 'window_size is not supported');
  assert.is(unsupportedBy(new RingFlashAttnError('E_SHAPE', 'q')), null);
  assert.is(unsupportedBy(new Error('E_UNSUPPORTED')), null);
});

// The command line (benchmark/cli_flags.ts, cli_command.ts, cli.ts): --help prints usage and runs
// nothing; every bad flag or value exits 2 with one line naming it, before any runtime starts.
s('--help prints the usage, every flag on a line of its own with its default, and runs nothing', () => {
  for (const [file, args] of [
    [TABLE, ['--help']],
    [CLI, ['bench', '--help']],
    [CLI, ['bench', '--iters', '2', '-h']],
  ] as const) {
    const r = run(file, [...args]);
    assert.is(r.status, 0, r.stderr);
    assert.is(r.stderr, '');
    assert.ok(r.stdout.startsWith('usage: ring-flash-attn bench [flags]\n'), r.stdout);
    assert.not.match(r.stdout, /README table —/, 'the benchmark did not run');
    const lines = r.stdout.split('\n');
    for (const [name, flag] of Object.entries(BENCH_FLAGS) as [string, ValueFlag<unknown>][]) {
      const line = lines.find((l) => l.startsWith(`  --${name} ${flag.value} `));
      assert.ok(line, `--${name} has a line`);
      if (flag.default !== undefined) assert.ok(line!.endsWith(`(default: ${flag.default})`), line);
    }
    assert.ok(lines.some((l) => l.startsWith('  --help, -h ')));
  }
  const kernel = run(KERNEL, ['--help']);
  assert.is(kernel.status, 0, kernel.stderr);
  assert.match(kernel.stdout, /^usage: ring-flash-attn bench:kernel \[flags\] \[SHAPE\]\n/);
  assert.match(
    kernel.stdout,
    /\n {2}--shape TEXT +time only the shapes whose name contains TEXT .*\(default: every shape\)\n/,
  );
  assert.match(kernel.stdout, /\n {2}--deterministic +time the deterministic backward/);
  assert.match(kernel.stdout, /\n {2}--anchor FILE +sdpa_anchor\.py's output/);
  const top = run(CLI, ['--help']);
  assert.is(top.status, 0, top.stderr);
  for (const command of ['bench', 'bench:kernel', 'bench:targets', 'bench:chart'])
    assert.match(top.stdout, new RegExp(`\\n {2}${command} +\\S`), command);
});

s('unknown flags and bad values exit 2 naming the flag and the value', () => {
  rejected(run(TABLE, ['--wrold', '4']), 'unknown flag --wrold 4', 'did you mean --world?');
  rejected(run(CLI, ['bench', '--iters', 'abc']), '--iters abc: expected an integer >= 1');
  rejected(run(CLI, ['bench', '--iters', '0']), '--iters 0');
  rejected(run(CLI, ['bench', '--iters']), '--iters: missing its value');
  rejected(run(CLI, ['bench', '--transport', 'foo']), '--transport foo: expected one of copy-engine, nccl');
  rejected(run(CLI, ['bench', '--modes', 'x']), '--modes x: unknown x (fwd, fwdbwd)');
  rejected(run(CLI, ['bench', '--tokens', '15']), '--tokens 15: expected an even integer');
  rejected(run(CLI, ['bench', '--settle', 'fast']), '--settle fast: expected a number >= 0');
  rejected(run(CLI, ['bench', '--solo', '2', '--world', '2']), '--world 2 and --solo 2 exclude each other');
  rejected(run(CLI, ['bench', 'extra']), 'unexpected argument extra');
  rejected(run(KERNEL, ['--shape', 'h=7']), '--shape h=7: matches none of');
  rejected(
    run(KERNEL, ['--options', 'window,foo']),
    '--options window,foo: unknown foo (window, softcap, alibi, dropout)',
  );
  rejected(run(KERNEL, ['--deterministic=yes']), '--deterministic=yes: --deterministic takes no value');
  rejected(
    run(KERNEL, ['--anchor', path.join(OUT, 'no-anchor.log')]),
    'no-anchor.log: expected a readable file',
  );
  rejected(run(CLI, ['bench:targets', path.join(OUT, 'missing.json')]), 'missing.json: no such result file');
});

// bench:kernel --anchor reads sdpa_anchor.py's JSON lines: cuDNN's rows by shape, mask and mode;
// other backends and lines that are not JSON (the script's tail, a cut line) are skipped.
s('bench:kernel --anchor keeps the cuDNN rows of the anchor log', () => {
  const file = path.join(OUT, 'anchor.log');
  const row = (backend: string, causal: boolean, mode: string, rate: number) =>
    JSON.stringify({ shape: 's=8192 h=5', causal, backend, mode, ms: 1000 / rate, iters_per_s: rate });
  fs.writeFileSync(
    file,
    [
      row('CUDNN_ATTENTION', true, 'fwd', 4857.6),
      row('FLASH_ATTENTION', true, 'fwd', 2388.3),
      row('CUDNN_ATTENTION', false, 'fwdbwd', 808.3),
      'matmul ceiling follows',
      '{"shape": "s=8192 h=5", "truncated',
      '{"matmul_bf16_tflops": 708.4}',
    ].join('\n'),
  );
  const rates = readAnchor(file);
  assert.equal(
    [...rates.entries()],
    [
      ['s=8192 h=5|true|fwd', 4857.6],
      ['s=8192 h=5|false|fwdbwd', 808.3],
    ],
  );
  fs.writeFileSync(file, row('FLASH_ATTENTION', true, 'fwd', 2388.3));
  assert.throws(() => readAnchor(file), /--anchor .*anchor\.log: expected JSON lines of sdpa_anchor\.py/);
});

s('the bin: an unknown or missing command exits 2 naming it', () => {
  rejected(
    run(CLI, ['benhc']),
    'ring-flash-attn: unknown command benhc (one of bench, bench:kernel, bench:targets, bench:chart, launch)',
  );
  rejected(run(CLI, []), 'missing the command');
  rejected(run(CLI, ['--backend', 'cpu', 'bench']), 'unknown flag --backend');
});

// A failure while running is one line with its code (exit 1); RFA_DEBUG=1 adds the stack. Without
// a GPU, asking for the cuda backend fails in init (with one, it would run the benchmark).
s('a runtime error prints one line `ring-flash-attn bench: <code>: <message>` and exits 1', () => {
  if (visibleGpuCount() > 0) return;
  const r = run(CLI, ['bench', '--backend', 'cuda']);
  assert.is(r.status, 1, r.stderr);
  assert.match(r.stderr, /^ring-flash-attn bench: E_DEVICE: init: [^\n]+\n$/);
  const debug = run(CLI, ['bench', '--backend', 'cuda'], { RFA_DEBUG: '1' });
  assert.is(debug.status, 1);
  assert.match(debug.stderr, /^ring-flash-attn bench: E_DEVICE: .*\n.*\n\s+at /);
});

// The varlen table's rank code: every column runs forward + backward over all four sets.
s("varlen columns run the Python project's kind of cu_seqlens sets, forward and backward", async () => {
  await onCpu(2, async (rt) => {
    for (const column of [
      'flash_attn_varlen',
      'ring_varlen',
      'zigzag_ring_varlen',
      'llama3',
    ] as VarlenColumn[]) {
      const res = (await rt.spmd(BENCH_VARLEN_RANK, 'run', varlenTask(column))) as BenchResult[];
      assert.is(res.length, 2, column);
      assert.ok(res.every(timedFive), column);
    }
  });
});

// Solo varlen: the ring columns as one rank of 4 with transfers skipped, llama3 with its
// all-gather and reduce-scatter skipped too (a real collective would wait for its peers until
// the 10 s timeout, so finishing shows none was attempted). llama3's rank 3 attends to the
// longest key prefix, rank 0 to the shortest.
s('varlen columns run as solo ranks 3 and 0 of 4, collectives skipped, forward and backward', async () => {
  await onCpu(1, async (rt) => {
    for (const rank of [3, 0])
      for (const column of ['ring_varlen', 'zigzag_ring_varlen', 'llama3'] as VarlenColumn[]) {
        const task = varlenTask(column, { solo: { world: 4, rank } });
        const started = Date.now();
        const [res] = (await rt.spmd(BENCH_VARLEN_RANK, 'run', task)) as BenchResult[];
        assert.ok(timedFive(res!), `${column} as rank ${rank}`);
        assert.ok(Date.now() - started < 5_000, `${column} as rank ${rank} took ${Date.now() - started} ms`);
      }
  });
});

// The README-table issue's bar, read off a result file (benchmark/issue_targets.ts): a synthetic
// world-4 report with every cell 10% above the Python project's and zigzag at 96% of theoretic.
function report(over: Partial<Report> = {}, zigzagShare = 0.96): Report {
  const results: Report['results'] = [];
  const cases = [
    ['qkvpacked', 'Python-project qkvpacked (h=5, d=128)'],
    ['llama3', 'llama3-8B kvpacked (h=32, h_k=8, d=128)'],
  ] as const;
  for (const [shape, title] of cases)
    for (const mode of MODES) {
      const t = PYTHON_X4[shape][mode];
      const theoretic = t[THEORETIC]! * 2; // per rank, ÷ world (4) below
      results.push({ case: title, mode, column: THEORETIC, iterPerSecPerRank: theoretic * 4 });
      for (const column of ['ring_attn', 'ring_attn_v2', 'stripe_attn'])
        results.push({ case: title, mode, column, iterPerSecPerRank: (t[column] ?? 1) * 1.1 });
      results.push({ case: title, mode, column: 'zigzag_ring', iterPerSecPerRank: theoretic * zigzagShare });
    }
  results.push({
    case: 'varlen llama3-8B kvpacked',
    mode: 'fwd',
    column: 'zigzag_ring_varlen',
    iterPerSecPerRank: 1,
  });
  return { machine: '4× GPU (NVIDIA H200), nccl transfers', backend: 'cuda', world: 4, results, ...over };
}

s(
  'issue targets: met on a passing world-4 GPU report, not met below the bar, on a solo run or at world 2',
  () => {
    const pass = checkTargets(report());
    assert.ok(pass.met, pass.lines.join('\n'));
    assert.is(pass.lines.length, 17, 'one line per cell with a target, then the verdict');
    assert.match(pass.lines.at(-1)!, /every target met/);
    const low = checkTargets(report({}, 0.94));
    assert.not.ok(low.met);
    assert.ok(
      low.lines.some((l) => /zigzag_ring: .*94\.0% of theoretic BELOW 95%/.test(l)),
      low.lines.join('\n'),
    );
    const solo = checkTargets(report({ machine: 'solo: each rank of 4 in turn' }));
    assert.not.ok(solo.met);
    assert.match(solo.lines.at(-1)!, /solo run/);
    assert.not.ok(checkTargets(report({ world: 2 })).met);
    const partial = report();
    partial.results = partial.results.filter((r) => !r.case.startsWith('llama3'));
    assert.match(checkTargets(partial).lines.at(-1)!, /8 of 16 cells/);
  },
);

s(
  "issue targets: a world-2 run's zigzag set beside Python's world-2 share; the newest world-4 file of either transport",
  () => {
    // At world 2 the theoretic is the single-GPU rate ÷ 2; zigzag at 96% of it.
    const w2 = report({ world: 2 });
    for (const r of w2.results) if (r.column === 'theoretic flash_attn') r.iterPerSecPerRank /= 2;
    const lines = checkTargets(w2).lines;
    assert.ok(
      lines.some((l) =>
        /qkvpacked fwd zigzag_ring: .*96\.0% of theoretic .*above Python's world-2 93\.6%/.test(l),
      ),
      lines.join('\n'),
    );
    assert.ok(
      lines.some((l) => /llama3 fwd\+bwd zigzag_ring: .*not above Python's world-2 97\.9%/.test(l)),
      lines.join('\n'),
    );
    assert.not.ok(
      checkTargets(report()).lines.some((l) => /world-2/.test(l)),
      'world 4 lines carry no world-2 comparison',
    );

    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rfa-targets-'));
    try {
      for (const f of [
        '2026-11-28-21-09-cuda-w4.json',
        '2026-11-29-12-00-cuda-w4-ce.json',
        '2026-11-29-13-00-cuda-w2-ce.json',
        '2026-11-29-14-00-cuda-solo4-ce.json',
      ])
        fs.writeFileSync(path.join(dir, f), '{}');
      assert.is(path.basename(newestWorld4(dir)!), '2026-11-29-12-00-cuda-w4-ce.json');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  },
);

// The charts (benchmark/chart.ts, report_charts.ts). A group's bars and legend live in its
// <g class="group">; each bar's <g> carries its label.
function groupSvg(svg: string, title: string): string {
  const start = svg.indexOf(`<g class="group" data-title="${title}">`);
  assert.ok(start >= 0, `a group ${title}`);
  const end = svg.indexOf('<g class="group"', start + 1);
  return svg.slice(start, end < 0 ? undefined : end);
}
const labels = (svg: string, kind: RegExp) => [...svg.matchAll(kind)].map((m) => m[1]);
const barLabels = (g: string) => labels(g, /<g class="bar[^"]*" data-label="([^"]+)">/g);
const legendLabels = (g: string) => labels(g, /<text class="legend"[^>]*>([^<]+)<\/text>/g);

s("the chart names the varlen group's bars with the varlen columns, each in its own colour", () => {
  const dense = ['theoretic flash_attn', 'ring_attn', 'ring_attn_v2', 'zigzag_ring', 'stripe_attn'];
  const varlen = ['theoretic flash_attn_varlen', 'ring_varlen', 'zigzag_ring_varlen', 'llama3_varlen'];
  const rows = (title: string, columns: string[]) =>
    columns.map((column, i) => ({ case: title, mode: 'fwd', column, iterPerSecPerRank: i === 0 ? 200 : 90 }));
  const svg = tableChart({
    machine: 'test',
    world: 2,
    results: [
      ...rows('Python-project qkvpacked (h=5, d=128)', dense),
      ...rows('varlen llama3-8B kvpacked (h=32)', varlen),
    ],
  });
  const g = groupSvg(svg, 'varlen llama3-8B kvpacked fwd');
  assert.equal(barLabels(g), varlen);
  assert.equal(legendLabels(g), varlen);
  assert.equal(
    legendLabels(groupSvg(svg, 'Python-project qkvpacked fwd')),
    dense,
    'the dense group keeps its own columns',
  );
  // A label's colour is the same on its bar and in its legend, and differs from every other label's.
  const fill = (label: string) =>
    new RegExp(`data-label="${label}">\\n<title>[^<]*</title>\\n<rect [^>]*fill="(#[0-9a-f]+)"`).exec(
      svg,
    )?.[1];
  const fills = [...dense, ...varlen].map(fill);
  assert.ok(fills.every(Boolean), String(fills));
  assert.is(new Set(fills).size, fills.length);
  assert.ok(
    g.includes(`fill="${fill('zigzag_ring_varlen')}"/>\n<text class="legend" x="`) &&
      /zigzag_ring_varlen<\/text>/.test(g),
  );
});

s('a bar above the axis is drawn broken with its share written above it', () => {
  const svg = barChart('t', 'sub', [
    {
      title: 'g',
      bars: [
        { label: 'theoretic flash_attn', percent: 100, note: '100.0' },
        { label: 'zigzag_ring', percent: 131.4, note: '305.0' },
        { label: 'stripe_attn', percent: 108.9, note: '300.4' },
      ],
    },
  ]);
  const bar = (label: string) =>
    svg.slice(
      svg.indexOf(`data-label="${label}"`),
      svg.indexOf('</g>', svg.indexOf(`data-label="${label}"`)),
    );
  assert.match(svg, /<g class="bar clipped" data-label="zigzag_ring">/);
  assert.is(bar('zigzag_ring').match(/class="break"/g)?.length, 2);
  assert.match(bar('zigzag_ring'), />↑131\.4%<\/text>/);
  assert.match(bar('zigzag_ring'), />305\.0<\/text>/);
  assert.not.match(bar('stripe_attn'), /break|↑/, 'a bar within the axis is drawn whole');
  assert.match(svg, /a bar past 110% is drawn broken/);
});

s("the companion chart sets each ring cell's share beside every share the Python project measured", () => {
  const svg = pythonChart(report())!;
  const g = groupSvg(svg, 'zigzag_ring\nqkvpacked h=5 fwd');
  assert.equal(legendLabels(g), ['ours', 'Python 8×H800', 'Python 4×H200', 'Python world 2']);
  const share = (cells: Partial<Record<string, number>>, column: string) =>
    `${((100 * cells[column]!) / cells[THEORETIC]!).toFixed(1)}%`;
  assert.ok(g.includes('<title>ours: 96.0%</title>'), g);
  assert.ok(
    g.includes(`<title>Python 8×H800: ${share(PYTHON_README_H800.qkvpacked!.fwd!, 'zigzag_ring')}</title>`),
    g,
  );
  assert.ok(g.includes(`<title>Python 4×H200: ${share(PYTHON_X4.qkvpacked.fwd, 'zigzag_ring')}</title>`), g);
  assert.ok(g.includes('<title>Python world 2: 93.6%</title>'), g);
  assert.equal(legendLabels(groupSvg(svg, 'ring_attn_v2\nqkvpacked h=5 fwd')), ['ours', 'Python 8×H800']);
  assert.is(
    pythonChart({
      machine: 'cpu',
      world: 2,
      results: [
        { case: 'CPU backend, small (h=2, d=32)', mode: 'fwd', column: 'zigzag_ring', iterPerSecPerRank: 1 },
      ],
    }),
    null,
  );
});

// Results go where --out (else RFA_RESULTS_DIR) says; the last test checks benchmark/results.
s('--out DIR takes the result file and its chart; bench:chart redraws them there', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rfa-out-'));
  try {
    const r = run(CLI, ['bench', ...QUICK, '--world', '2', '--columns', 'zigzag_ring', '--out', dir]);
    assert.is(r.status, 0, r.stderr);
    const files = fs.readdirSync(dir).sort();
    assert.is(files.length, 2, String(files));
    assert.match(files[0]!, /-cpu-w2\.json$/);
    assert.match(files[1]!, /-cpu-w2\.svg$/);
    assert.ok(r.stdout.includes(`results: ${path.join(dir, files[0]!)}`), r.stdout);
    const json = path.join(dir, files[0]!),
      svg = path.join(dir, files[1]!);
    const drawn = fs.readFileSync(svg, 'utf8');
    fs.rmSync(svg);
    const redraw = run(CLI, ['bench:chart', json]);
    assert.is(redraw.status, 0, redraw.stderr);
    assert.is(fs.readFileSync(svg, 'utf8'), drawn, 'a redraw draws what the run drew');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

s('the runs of this suite left benchmark/results as it was', () => {
  const after = fs.existsSync(RESULTS_DIR) ? fs.readdirSync(RESULTS_DIR).sort() : [];
  assert.equal(
    after.filter((f) => !resultsBefore.includes(f)),
    [],
  );
  fs.rmSync(OUT, { recursive: true, force: true });
});

s.run();

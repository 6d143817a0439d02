// Test runner: each suite file runs in its own Node process (its own worker pools), and the
// last line is the `N passed, N failed` summary CI reads. `--gpu` runs only the GPU suites
// (test/gpu/), which skip cleanly, and say so, when no GPU is visible.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const gpuOnly = process.argv.includes('--gpu');
const filter = process.argv.slice(2).find((a) => !a.startsWith('--'));
const list = (dir: string) =>
  fs.existsSync(dir)
    ? fs
        .readdirSync(dir)
        .filter((f) => f.endsWith('.test.js'))
        .sort()
        .map((f) => path.join(dir, f))
    : [];
const files = (
  gpuOnly ? list(path.join(here, 'gpu')) : [...list(here), ...list(path.join(here, 'gpu'))]
).filter((f) => !filter || f.includes(filter));

let passed = 0,
  failed = 0,
  skipped = 0;
/** Suites that skipped whole (a GPU suite without a GPU) say so on a line `SKIPPED: <reason>`. */
const skippedSuites: string[] = [];
const PER_FILE_TIMEOUT_MS = 15 * 60_000;
for (const file of files) {
  const t0 = Date.now();
  const r = spawnSync(process.execPath, [file], {
    encoding: 'utf8',
    timeout: PER_FILE_TIMEOUT_MS,
    env: process.env,
    maxBuffer: 64 << 20,
  });
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  process.stdout.write(out);
  const num = (label: string) => Number(new RegExp(`${label}:\\s+(\\d+)`).exec(out)?.[1] ?? NaN);
  const total = num('Total'),
    ok = num('Passed'),
    skip = num('Skipped');
  const name = path.relative(here, file);
  const skipReason = /^SKIPPED: (.*)$/m.exec(out)?.[1];
  if (skipReason) skippedSuites.push(`${name} (${skipReason})`);
  if (r.status !== 0 || Number.isNaN(total)) {
    // A crash or timeout counts its unfinished tests as one failure at least.
    const bad = Number.isNaN(total) ? 1 : Math.max(1, total - ok - skip);
    failed += bad;
    passed += Number.isNaN(ok) ? 0 : ok;
    console.log(`\n✘ ${name}: exit ${r.status ?? r.signal}${r.error ? ` (${r.error.message})` : ''}`);
  } else {
    passed += ok;
    skipped += skip;
    failed += total - ok - skip;
  }
  console.log(`  [${name}: ${((Date.now() - t0) / 1000).toFixed(1)} s]\n`);
}
if (skipped || skippedSuites.length)
  console.log(
    `skipped: ${skipped} tests, ${skippedSuites.length} whole suites${skippedSuites.length ? `: ${skippedSuites.join('; ')}` : ''}`,
  );
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed > 0 || files.length === 0 ? 1 : 0);

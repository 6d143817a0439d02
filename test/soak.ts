// The soak: `node dist/test/soak.js [calls] [world]` runs that many forward+backward zigzag ring
// calls on every rank (on GPUs: ranks sharing GPU 0 over the copy engines when there are fewer
// GPUs than ranks; without GPUs: the CPU backend, fewer calls make sense), prints the memory
// curve, and exits 1 unless device memory stays flat after the first reading (the warm-up).
import { init, visibleGpuCount } from '../index.js';
import type { SoakPoint } from './fixtures/soak_user.js';

const calls = Number(process.argv[2] ?? 10_000);
const world = Number(process.argv[3] ?? 2);
if (!Number.isInteger(calls) || calls < 2 || !Number.isInteger(world) || world < 1) {
  console.error('usage: node dist/test/soak.js [calls >= 2] [world >= 1]');
  process.exit(2);
}
const gpus = visibleGpuCount();
const every = Math.max(1, Math.floor(calls / 20));
const rt = await init(
  gpus > 0
    ? { backend: 'cuda', world, devices: Array.from({ length: world }, (_, r) => r % gpus), callTimeoutMs: 0 }
    : { backend: 'cpu', world, callTimeoutMs: 0 },
);
const t0 = Date.now();
const curves = await rt.spmd<SoakPoint[]>(new URL('./fixtures/soak_user.js', import.meta.url), 'soak', {
  calls,
  every,
  s: gpus > 0 ? 1024 : 64,
  h: 4,
  d: gpus > 0 ? 128 : 32,
});
const seconds = (Date.now() - t0) / 1000;
await rt.close();
const MiB = (x: number) => (x / 2 ** 20).toFixed(2);
console.log(
  `soak: ${calls} fwd+bwd calls per rank, world ${world}, ${rt.backend}${gpus > 0 ? ` on ${Math.min(gpus, world)} GPU(s)` : ''}, ${seconds.toFixed(1)} s`,
);
const KEYS = ['inUse', 'peak', 'reserved'] as const;
console.log(
  '| call | ' +
    curves.map((_, r) => `rank ${r} in use / peak / reserved MiB`).join(' | ') +
    ' | host RSS MiB |',
);
console.log('|---|' + curves.map(() => '---').join('|') + '|---|');
curves[0]!.forEach((p, i) =>
  console.log(
    `| ${p.call} | ${curves.map((c) => KEYS.map((k) => MiB(c[i]![k])).join(' / ')).join(' | ')} | ${MiB(p.rss)} |`,
  ),
);
const moved = curves.flatMap((c, r) =>
  KEYS.filter((k) => c.slice(1).some((p) => p[k] !== c[0]![k])).map((k) => `rank ${r} ${k}`),
);
if (moved.length) {
  console.log(`soak: device memory moved after warm-up: ${moved.join(', ')}`);
  process.exit(1);
}
console.log('soak: device memory flat after warm-up on every rank');

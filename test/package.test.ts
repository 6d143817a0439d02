// The package as a user receives it. `npm pack` runs in a copy of this tree (prepack and prepare
// as on a release, except that the addon already built here is shipped instead of recompiled:
// RFA_PREBUILD_ADDON), the tarball is installed into an empty project whose PATH holds only node,
// npm and sh (no cmake, compiler or nvcc, so a compile could not even start), and from there: an
// ESM import runs a CPU ring call checked against a naive reference, the shipped types pass
// `tsc --strict`, and the README's quick start runs as written. typedoc builds the API reference.
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { native } from '../runtime/native.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rfa-package-'));
const tsc = path.join(repo, 'node_modules', '.bin', 'tsc');
const pkg = JSON.parse(fs.readFileSync(path.join(repo, 'package.json'), 'utf8')) as {
  name: string;
  version: string;
};
/** The addon this tree built (build/Release), shipped as the package's prebuild. */
const builtAddon = path.join(repo, 'build', 'Release', 'ring_flash_attn.node');
const prebuildFile = `prebuilds/${process.platform}-${process.arch}/ring_flash_attn.napi${process.platform === 'linux' ? '.glibc' : ''}.node`;

const s = suite('package');

/** npm's own command line, run through this node (npm test passes its path as npm_execpath). */
function npmCli(): string {
  if (process.env.npm_execpath?.endsWith('.js')) return process.env.npm_execpath;
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    const bin = path.join(dir, 'npm');
    if (fs.existsSync(bin)) return fs.realpathSync(bin);
  }
  throw new Error('npm not found on PATH');
}

/** This process's environment minus what an outer `npm test` sets for its own script. */
function baseEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env))
    if (!(k.startsWith('npm_') && !k.startsWith('npm_config_')) && k !== 'INIT_CWD') env[k] = v;
  // A forced source build would defeat the prebuild under test; the sanitizer runs
  // (test/sanitize.sh) preload their runtime into node, and packaging is not what they check.
  for (const k of [
    'npm_config_build_from_source',
    'RFA_BUILD_FROM_SOURCE',
    'RFA_ADDON',
    'LD_PRELOAD',
    'ASAN_OPTIONS',
    'TSAN_OPTIONS',
  ])
    delete env[k];
  return env;
}

function run(
  what: string,
  cmd: string,
  args: string[],
  opts: { cwd: string; env?: NodeJS.ProcessEnv },
): SpawnSyncReturns<string> {
  const t0 = Date.now();
  const r = spawnSync(cmd, args, {
    cwd: opts.cwd,
    env: opts.env ?? baseEnv(),
    encoding: 'utf8',
    maxBuffer: 64 << 20,
    timeout: 5 * 60_000,
  });
  console.log(`  ${what}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  if (r.status !== 0)
    assert.unreachable(
      `${what} failed (exit ${r.status ?? r.signal}${r.error ? `, ${r.error.message}` : ''}):\n${r.stdout}\n${r.stderr}`,
    );
  return r;
}

/** A folder with node, npm and sh only: the PATH of a machine without build tools. */
function bareBin(): string {
  const bin = path.join(tmp, 'bin');
  fs.mkdirSync(bin);
  fs.symlinkSync(process.execPath, path.join(bin, 'node'));
  fs.symlinkSync(npmCli(), path.join(bin, 'npm'));
  fs.symlinkSync('/bin/sh', path.join(bin, 'sh'));
  return bin;
}

function writeJson(file: string, value: unknown): void {
  fs.writeFileSync(file, `${JSON.stringify(value, null, 2)}\n`);
}

/** tsc as a consumer runs it: strict, ESM resolution through the package's `exports` map. */
function consumerTsconfig(dir: string, files: string[], noEmit: boolean): string {
  const file = path.join(dir, 'tsconfig.json');
  writeJson(file, {
    compilerOptions: {
      target: 'ES2022',
      module: 'NodeNext',
      moduleResolution: 'NodeNext',
      strict: true,
      types: ['node'],
      noEmit,
      outDir: '.',
    },
    files,
  });
  return file;
}

let tarball = '';
let packed: string[] = [];
let consumer = '';

s('git tracks no node_modules (a committed link would replace the installed folder on checkout)', () => {
  if (!fs.existsSync(path.join(repo, '.git'))) return; // an unpacked tarball: nothing to check
  const r = spawnSync('git', ['ls-files', '--', 'node_modules'], { cwd: repo, encoding: 'utf8' });
  assert.is(r.status, 0, r.stderr);
  assert.is(r.stdout.trim(), '', `tracked: ${r.stdout.trim()}`);
});

s('npm pack ships dist (without tests), the native sources and a prebuilt addon', () => {
  assert.ok(
    fs.existsSync(builtAddon),
    `${builtAddon} is missing: build the addon first (npm run build:native)`,
  );
  const stage = path.join(tmp, 'stage');
  fs.mkdirSync(stage);
  for (const f of ['package.json', '.gitignore', 'tsconfig.json', 'README.md', 'CMakeLists.txt', 'index.ts'])
    fs.copyFileSync(path.join(repo, f), path.join(stage, f));
  for (const d of ['api', 'runtime', 'compat', 'native', 'test', 'benchmark'])
    fs.cpSync(path.join(repo, d), path.join(stage, d), {
      recursive: true,
      filter: (src) => !src.startsWith(path.join(repo, 'benchmark', 'results')),
    });
  fs.symlinkSync(path.join(repo, 'node_modules'), path.join(stage, 'node_modules'));
  const env = {
    ...baseEnv(),
    RFA_PREBUILD_ADDON: builtAddon,
    ...(native().cudaBuilt ? {} : { RFA_CUDA: 'OFF' }),
  };
  const r = run(
    'npm pack (prepack, prepare)',
    process.execPath,
    [npmCli(), 'pack', '--json', '--pack-destination', tmp],
    { cwd: stage, env },
  );
  const json = r.stdout.slice(r.stdout.search(/^\[$/m));
  const [info] = JSON.parse(json) as {
    filename: string;
    size: number;
    unpackedSize: number;
    files: { path: string }[];
  }[];
  tarball = path.join(tmp, info!.filename);
  packed = info!.files.map((f) => f.path).sort();
  console.log(
    `  tarball: ${packed.length} files, ${(info!.size / 2 ** 20).toFixed(1)} MiB (${(info!.unpackedSize / 2 ** 20).toFixed(1)} MiB unpacked)`,
  );

  for (const f of [
    'dist/index.js',
    'dist/index.d.ts',
    'dist/runtime/worker.js',
    'dist/benchmark/cli.js',
    'native/install.mjs',
    'CMakeLists.txt',
    'native/bindings/addon.cc',
    'native/cpu/flash_cpu.cc',
    'native/cuda/flash_fwd.cu',
    'native/cuda/flash_wgmma.cuh',
    'README.md',
    prebuildFile,
  ])
    assert.ok(packed.includes(f), `${f} is not in the tarball`);
  const allowed =
    /^(dist\/.*\.(js|d\.ts)|native\/.*\.(h|cc|cu|cuh)|native\/install\.mjs|prebuilds\/.*\.node|CMakeLists\.txt|README\.md|package\.json)$/;
  const stray = packed.filter(
    (f) => !allowed.test(f) || f.startsWith('dist/test/') || f.startsWith('native/cuda/harness/'),
  );
  assert.equal(stray, [], 'files outside the allowlist');
});

s('the tarball installs into an empty project without cmake or nvcc, taking the prebuild', () => {
  assert.ok(tarball, 'npm pack did not run');
  consumer = path.join(tmp, 'consumer');
  fs.mkdirSync(consumer);
  writeJson(path.join(consumer, 'package.json'), { name: 'consumer', private: true, type: 'module' });
  const typesNode = (
    JSON.parse(fs.readFileSync(path.join(repo, 'node_modules/@types/node/package.json'), 'utf8')) as {
      version: string;
    }
  ).version;
  const env = { ...baseEnv(), PATH: bareBin() };
  const r = run(
    'npm install (tarball, from the npm cache)',
    process.execPath,
    [
      npmCli(),
      'install',
      tarball,
      `@types/node@${typesNode}`,
      '--prefer-offline',
      '--no-audit',
      '--no-fund',
      '--foreground-scripts',
    ],
    { cwd: consumer, env },
  );
  const installed = path.join(consumer, 'node_modules', pkg.name);
  assert.match(r.stdout, 'ring-flash-attn: using the prebuilt addon');
  assert.not.match(r.stdout, 'building from source');
  assert.not.ok(
    fs.existsSync(path.join(installed, 'build')),
    'the install compiled the addon (build/ exists)',
  );
  assert.ok(fs.existsSync(path.join(installed, prebuildFile)));
});

s('an ESM import runs a CPU ring call that matches a naive reference', () => {
  assert.ok(consumer, 'the install did not run');
  fs.writeFileSync(path.join(consumer, 'check.mjs'), CHECK_MJS);
  const r = run('node check.mjs', process.execPath, ['check.mjs'], { cwd: consumer });
  const res = JSON.parse(r.stdout.trim().split('\n').pop()!) as { out: number; lse: number; addon: string };
  assert.ok(res.out < 1e-5 && res.lse < 1e-5, `relative L2 error out ${res.out}, lse ${res.lse}`);
  assert.match(res.addon, `/node_modules/${pkg.name}/${prebuildFile}`);
});

s('the shipped types pass tsc --strict in a consumer', () => {
  assert.ok(consumer, 'the install did not run');
  fs.writeFileSync(path.join(consumer, 'consumer.ts'), CONSUMER_TS);
  run('tsc --strict (consumer.ts)', tsc, ['-p', consumerTsconfig(consumer, ['consumer.ts'], true)], {
    cwd: consumer,
  });
});

s("the README's quick start runs as written", () => {
  assert.ok(consumer, 'the install did not run');
  const blocks = readmeBlocks(fs.readFileSync(path.join(repo, 'README.md'), 'utf8'));
  assert.ok(blocks.code.size >= 3, `README marks ${blocks.code.size} blocks <!-- runs in CI: file -->`);
  assert.ok(blocks.output.size >= 2, `README gives ${blocks.output.size} outputs <!-- output of file -->`);
  const dir = path.join(consumer, 'quickstart');
  fs.mkdirSync(dir);
  for (const [file, code] of blocks.code) fs.writeFileSync(path.join(dir, file), code);
  const sources = [...blocks.code.keys()].filter((f) => f.endsWith('.ts'));
  run('tsc (README blocks)', tsc, ['-p', consumerTsconfig(dir, sources, false)], { cwd: dir });
  for (const [file, expected] of blocks.output) {
    assert.ok(blocks.code.has(file), `output of ${file}, but no such block`);
    const r = run(`node ${file.replace(/\.ts$/, '.js')}`, process.execPath, [file.replace(/\.ts$/, '.js')], {
      cwd: dir,
    });
    assert.fixture(r.stdout.trim(), expected.trim());
  }
});

s('typedoc builds the API reference without errors', () => {
  const r = run(
    'typedoc',
    path.join(repo, 'node_modules', '.bin', 'typedoc'),
    ['--out', path.join(tmp, 'docs'), '--tsconfig', 'tsconfig.json', 'index.ts'],
    { cwd: repo },
  );
  assert.match(`${r.stdout}${r.stderr}`, /Found 0 errors/);
});

s.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

s.run();

/**
 * The README's runnable blocks: a fenced block after `<!-- runs in CI: name.ts -->` is written to
 * name.ts; a fenced block after `<!-- output of name.ts -->` is what running it prints.
 */
function readmeBlocks(md: string): { code: Map<string, string>; output: Map<string, string> } {
  const code = new Map<string, string>(),
    output = new Map<string, string>();
  const re = /<!-- (runs in CI:|output of) ([\w.-]+) -->\s*```\w*\n([\s\S]*?)```/g;
  for (const m of md.matchAll(re)) (m[1] === 'runs in CI:' ? code : output).set(m[2]!, m[3]!);
  return { code, output };
}

// world 2, causal, GQA (2 query heads on 1 key/value head), float32 compute; the reference is
// attention written out in fp64.
const CHECK_MJS = `
import { init } from 'ring-flash-attn';
import { createRequire } from 'node:module';

const [b, s, h, hk, d] = [1, 16, 2, 1, 16];
const fill = (n, seed) => Float32Array.from({ length: n }, (_, i) => Math.sin(seed + 0.731 * i));
const q = fill(b * s * h * d, 1), k = fill(b * s * hk * d, 2), v = fill(b * s * hk * d, 3);
const rt = await init({ backend: 'cpu', world: 2 });
const r = await rt.call('ring_flash_attn_func', { data: q, shape: [b, s, h, d] }, { data: k, shape: [b, s, hk, d] },
  { data: v, shape: [b, s, hk, d] }, { causal: true, dtype: 'float32' });
const scale = 1 / Math.sqrt(d);
let eo = 0, no = 0, el = 0, nl = 0;
for (let head = 0; head < h; head++) {
  const kh = Math.floor(head / (h / hk));
  for (let i = 0; i < s; i++) {
    const logits = [];
    for (let j = 0; j <= i; j++) {
      let dot = 0;
      for (let c = 0; c < d; c++) dot += q[(i * h + head) * d + c] * k[(j * hk + kh) * d + c];
      logits.push(dot * scale);
    }
    const m = Math.max(...logits), w = logits.map((x) => Math.exp(x - m)), z = w.reduce((a, x) => a + x, 0);
    const lse = m + Math.log(z);
    el += (r.lse.get(0, head, i) - lse) ** 2; nl += lse ** 2;
    for (let c = 0; c < d; c++) {
      let o = 0;
      for (let j = 0; j <= i; j++) o += (w[j] / z) * v[(j * hk + kh) * d + c];
      eo += (r.out.get(0, i, head, c) - o) ** 2; no += o ** 2;
    }
  }
}
await r.dispose();
await rt.close();
const addon = createRequire(import.meta.url)('node-gyp-build').resolve(new URL('./node_modules/ring-flash-attn', import.meta.url).pathname);
console.log(JSON.stringify({ out: Math.sqrt(eo / no), lse: Math.sqrt(el / nl), addon }));
`;

// Uses the public types the way a consumer would; each @ts-expect-error proves a type is real
// (an \`any\` from a missing declaration would make it an unused directive, an error).
const CONSUMER_TS = `
import { init, ring_flash_attn_func, RingFlashAttnError, type DeviceTensor, type InitOptions, type RankContext } from 'ring-flash-attn';

const options: InitOptions = { backend: 'cpu', world: 2 };
// @ts-expect-error: backend is 'cuda' | 'cpu'
const wrong: InitOptions = { backend: 'tpu' };

export async function outShape(): Promise<readonly number[]> {
  const rt = await init(options);
  const x = { data: new Float32Array(2 * 4 * 8), shape: [1, 2, 4, 8] };
  const r = await rt.call('zigzag_ring_flash_attn_func', x, x, x, { causal: true });
  const grads: { dq: unknown; dk: unknown; dv: unknown } = await r.backward(x);
  // @ts-expect-error: not a function of the registry
  await rt.call('no_such_func', x);
  await r.dispose();
  await rt.close();
  return grads ? r.out.shape : [];
}

export function step(ctx: RankContext): DeviceTensor {
  const q = ctx.tensor({ data: new Float32Array(64), shape: [1, 2, 4, 8] }, 'float32', true);
  return ring_flash_attn_func(q, q, q, { causal: true }) as DeviceTensor;
}

export function codeOf(e: unknown): string {
  return e instanceof RingFlashAttnError ? e.code : String(wrong);
}
`;

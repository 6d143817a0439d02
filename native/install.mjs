#!/usr/bin/env node
// npm's install step. A package installed from the registry or a tarball carries a prebuilt addon
// in prebuilds/ (native/prepack.mjs puts it there): when it loads on this machine nothing is
// compiled, so a user needs neither cmake, a C++ compiler nor nvcc. Otherwise (no prebuild for
// this platform, or one that does not load, e.g. an older glibc) the addon builds from source
// with cmake-js, as it always does in a git clone, which has no prebuilds/. Nothing is downloaded.
//
// RFA_BUILD_FROM_SOURCE=1 (or `npm install --build-from-source`) forces the source build, e.g. to
// build against a local CUDA toolkit older than the prebuild's. A tree that already holds a
// build/ folder keeps building from source: the runtime loads build/Release before prebuilds/,
// so skipping the build there would leave a stale addon in use.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const say = (line) => console.log(`ring-flash-attn: ${line}`);

/**
 * Loads `file` (or, without one, the prebuild node-gyp-build picks for this platform from
 * `dir`/prebuilds) in a child process, so that a binary which fails to link cannot take this
 * process down. Returns { ok, file, cuda, gpus } or { ok: false, reason }.
 */
export function probeAddon({ file, dir = root } = {}) {
  const script = `
    const file = ${JSON.stringify(file ?? null)} ?? require(${JSON.stringify(require.resolve('node-gyp-build'))}).resolve(${JSON.stringify(dir)});
    const addon = require(file);
    if (!addon.cpu || !addon.plan) throw new Error(file + ' is not the ring-flash-attn addon');
    console.log(JSON.stringify({ file, cuda: !!addon.cudaBuilt, gpus: addon.cuda ? addon.cuda.deviceCount() : 0 }));`;
  // PREBUILDS_ONLY: node-gyp-build would otherwise prefer a build/Release folder.
  const r = spawnSync(process.execPath, ['-e', script], {
    encoding: 'utf8',
    env: { ...process.env, PREBUILDS_ONLY: '1' },
  });
  if (r.status !== 0) {
    const reason =
      /^\w*Error: (.*)$/m.exec(r.stderr ?? '')?.[1] ?? r.error?.message ?? `exit ${r.status ?? r.signal}`;
    return { ok: false, reason: reason.trim() };
  }
  return { ok: true, ...JSON.parse(r.stdout.trim().split('\n').pop()) };
}

/** cmake-js compile into build/ (its CMakeLists.txt finds nvcc itself); returns the exit code. */
export function buildFromSource(out = 'build', env = process.env) {
  const cmakeJs = path.join(path.dirname(require.resolve('cmake-js/package.json')), 'bin', 'cmake-js');
  const r = spawnSync(process.execPath, [cmakeJs, 'compile', '--out', out], {
    cwd: root,
    stdio: 'inherit',
    env,
  });
  if (r.error) console.error(`ring-flash-attn: could not run cmake-js: ${r.error.message}`);
  return r.status ?? 1;
}

function main() {
  const forced =
    process.env.RFA_BUILD_FROM_SOURCE === '1' || process.env.npm_config_build_from_source === 'true';
  if (forced) {
    say('RFA_BUILD_FROM_SOURCE: building the addon from source');
    return buildFromSource();
  }
  if (fs.existsSync(path.join(root, 'build'))) {
    say('build/ exists: rebuilding the addon from source');
    return buildFromSource();
  }
  const probe = probeAddon();
  if (!probe.ok) {
    say(`no prebuilt addon loads here (${probe.reason}): building from source with cmake-js`);
    return buildFromSource();
  }
  say(
    `using the prebuilt addon ${path.relative(root, probe.file)} (${probe.cuda ? `CUDA built in, ${probe.gpus} GPUs visible` : 'CPU only'})`,
  );
  // A GPU with a driver too old for the prebuild's CUDA runtime reads as no GPU at all.
  if (probe.cuda && probe.gpus === 0 && fs.existsSync('/proc/driver/nvidia/version'))
    say(
      'an NVIDIA driver is loaded but the prebuilt addon sees no GPU: it needs a driver for CUDA 13 (>= 580); RFA_BUILD_FROM_SOURCE=1 builds against your own CUDA toolkit',
    );
  return 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href)
  process.exit(main());

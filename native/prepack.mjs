#!/usr/bin/env node
// npm's prepack step (npm pack, npm publish): puts into the package what its `files` list ships
// besides the sources. npm runs `prepare` (tsc into dist/) around it.
//
// 1. dist/ loses the outputs of TypeScript files that no longer exist, which tsc never deletes
//    and which would otherwise ship.
// 2. prebuilds/<platform>-<arch>/ receives the addon that native/install.mjs uses instead of a
//    compile: a CUDA build with every GPU target (CMakeLists.txt's default list; RFA_CUDA_ARCHS is
//    ignored here) and the static CUDA runtime, so that the one binary also serves machines with
//    no GPU or driver (it then reports 0 GPUs and runs the CPU backend). It builds incrementally
//    in build/prebuild. RFA_PREBUILD_ADDON=<file.node> ships that file instead (the package test
//    reuses the build it already has; a release job may have built it elsewhere).
//
// The pack fails rather than ship an addon that does not load, or one without CUDA unless
// RFA_CUDA=OFF asks for a CPU-only package.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildFromSource, probeAddon } from './install.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const say = (line) => console.log(`ring-flash-attn prepack: ${line}`);
const die = (line) => {
  console.error(`ring-flash-attn prepack: ${line}`);
  process.exit(1);
};

/** Deletes dist/X.js, X.d.ts, X.js.map, X.d.ts.map whose source X.ts is gone. */
function pruneDist() {
  const dist = path.join(root, 'dist');
  if (!fs.existsSync(dist)) return;
  let removed = 0;
  for (const rel of fs.readdirSync(dist, { recursive: true })) {
    const m = /^(.*?)(\.d\.ts|\.js)(\.map)?$/.exec(rel);
    if (!m || fs.existsSync(path.join(root, `${m[1]}.ts`))) continue;
    fs.rmSync(path.join(dist, rel));
    removed++;
  }
  if (removed) say(`removed ${removed} files of deleted sources from dist/`);
}

/** The file name node-gyp-build looks for: N-API (any Node version), and the C library on Linux. */
function prebuildPath() {
  const libc = process.platform !== 'linux' ? '' : fs.existsSync('/etc/alpine-release') ? '.musl' : '.glibc';
  return path.join(
    root,
    'prebuilds',
    `${process.platform}-${process.arch}`,
    `ring_flash_attn.napi${libc}.node`,
  );
}

function buildAddon() {
  const out = path.join('build', 'prebuild');
  // nvcc runs of different builds on one machine have clashed in a shared /tmp.
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rfa-prepack-'));
  const env = { ...process.env, TMPDIR: tmp };
  delete env.RFA_CUDA_ARCHS;
  say(`building the addon in ${out} (every GPU target: this takes minutes on few cores)`);
  const t0 = Date.now();
  const status = buildFromSource(out, env);
  fs.rmSync(tmp, { recursive: true, force: true });
  if (status !== 0) die(`the addon build failed (exit ${status})`);
  say(`built in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  return path.join(root, out, 'Release', 'ring_flash_attn.node');
}

pruneDist();
const addon = process.env.RFA_PREBUILD_ADDON ? path.resolve(process.env.RFA_PREBUILD_ADDON) : buildAddon();
const probe = probeAddon({ file: addon });
if (!probe.ok) die(`${addon} does not load: ${probe.reason}`);
if (!probe.cuda && process.env.RFA_CUDA !== 'OFF')
  die(`${addon} was built without CUDA (no nvcc?); set RFA_CUDA=OFF to pack a CPU-only addon on purpose`);
const target = prebuildPath();
fs.rmSync(path.join(root, 'prebuilds'), { recursive: true, force: true });
fs.mkdirSync(path.dirname(target), { recursive: true });
fs.copyFileSync(addon, target);
say(
  `${path.relative(root, target)} (${probe.cuda ? 'CUDA' : 'CPU only'}, ${(fs.statSync(target).size / 2 ** 20).toFixed(1)} MiB) from ${path.relative(root, addon) || addon}`,
);

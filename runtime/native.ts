import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import fs from 'node:fs';
import { RingFlashAttnError } from './errors.js';
import type { bwdArgs, bwdDotArgs, copyArgs, fwdArgs, flat, mergeArgs } from './kernel_args.js';

type FlatView = ReturnType<typeof flat>;

/** The kernels both backends bind (native/bindings/kernel_bindings.h), with runtime/kernel_args.ts's parameters. */
export interface NativeKernels {
  flashFwd(p: ReturnType<typeof fwdArgs>): void;
  flashBwdDot(p: ReturnType<typeof bwdDotArgs>): void;
  flashBwd(p: ReturnType<typeof bwdArgs>): void;
  merge(p: ReturnType<typeof mergeArgs>): void;
  cast(p: { src: FlatView; src_dtype: number; dst: FlatView; dst_dtype: number; n: number }): void;
  addF32(p: { dst: FlatView; src: FlatView; n: number }): void;
  copyBsh(p: ReturnType<typeof copyArgs>): void;
}

/** A message between ranks of one process on the CPU backend; `comm` is the communicator key. */
export interface MailArgs {
  comm: string;
  src: number;
  dst: number;
  data: FlatView;
  n: number;
  elem_bytes: number;
  label: string;
}

export interface NativeCpu extends NativeKernels {
  mailSend(p: MailArgs): void;
  mailRecv(p: MailArgs & { timeout_ms: number }): void;
  /** scope: the runtime id (the part of its communicator keys before '/'). */
  mailAbort(scope: string, reason: string): void;
  mailReset(scope: string): void;
  /** Opens this process's listener of a runtime that spans processes (port 0: any); returns the port. */
  netListen(scope: string, port: number): number;
  /** Starts connecting to the runtime's other processes (native/cpu/net_mailbox.h); returns at once. */
  netConnect(p: { scope: string; self: number; timeout_ms: number; procs: NetProcess[] }): void;
  /** Whether every connection is up; E_RENDEZVOUS once one failed or the timeout passed. */
  netPoll(scope: string): boolean;
  /** The runtime begins call number `call`, the same on every process. */
  netBeginCall(scope: string, call: number): void;
  netClose(scope: string): void;
}

/** A process of a runtime that spans processes, as the CPU mailbox connects to it. */
export interface NetProcess {
  host: string;
  port: number;
  first_rank: number;
  ranks: number;
  name: string;
}

/** The launch planner of the CUDA kernels (native/launch_plan.h), exposed for tests. */
export interface NativePlan {
  simulateLaunch(p: { work: number[]; sms: number; ctasPerSm: number }): number;
  planFwdLaunch(p: {
    tileSteps: number[];
    sms: number;
    residencies: number[];
    maxSplits: number;
    mustSplit: boolean;
  }): { whole: number; splits: number; ctasPerSm: number };
  planBwdSplits(p: { keyTileSteps: number[]; ctasPerTile: number; sms: number; maxSplits: number }): number;
}

export interface NativeAddon {
  cpu: NativeCpu;
  plan: NativePlan;
  cudaBuilt: boolean;
  /** Why the build has no CUDA backend ('' when it has one). */
  cudaOmitted: string;
  /** Present when built with nvcc; runtime/cuda_native.ts declares it. */
  cuda?: unknown;
}

/** Every function of a binding object, by name: the compiler checks the lists against the interfaces. */
export type SurfaceKeys<T> = Record<keyof T, true>;
export const KERNEL_KEYS: SurfaceKeys<NativeKernels> = {
  flashFwd: true,
  flashBwdDot: true,
  flashBwd: true,
  merge: true,
  cast: true,
  addF32: true,
  copyBsh: true,
};
const CPU_KEYS: SurfaceKeys<NativeCpu> = {
  ...KERNEL_KEYS,
  mailSend: true,
  mailRecv: true,
  mailAbort: true,
  mailReset: true,
  netListen: true,
  netConnect: true,
  netPoll: true,
  netBeginCall: true,
  netClose: true,
};
const PLAN_KEYS: SurfaceKeys<NativePlan> = { simulateLaunch: true, planFwdLaunch: true, planBwdSplits: true };

/**
 * The functions `keys` names that `binding` (the addon's `name` object) lacks. An addon built from
 * other sources than this package's TypeScript (a stale build/ or RFA_ADDON) fails here, at load,
 * instead of with "not a function" in the middle of a ring.
 */
export function missingFunctions(binding: unknown, name: string, keys: object): string[] {
  const b = (typeof binding === 'object' && binding !== null ? binding : {}) as Record<string, unknown>;
  return Object.keys(keys)
    .filter((k) => typeof b[k] !== 'function')
    .map((k) => `${name}.${k}`);
}

export function checkSurface(addon: unknown, file: string, extra: [string, object][] = []): void {
  const a = (typeof addon === 'object' && addon !== null ? addon : {}) as Record<string, unknown>;
  const missing = [
    ...missingFunctions(a.cpu, 'cpu', CPU_KEYS),
    ...missingFunctions(a.plan, 'plan', PLAN_KEYS),
  ];
  for (const [name, keys] of extra) missing.push(...missingFunctions(a[name], name, keys));
  if (typeof a.cudaBuilt !== 'boolean') missing.push('cudaBuilt');
  if (missing.length) {
    throw new RingFlashAttnError(
      'E_DEVICE',
      `the native addon ${file} does not match this package (it lacks ${missing.join(', ')}): rebuild it with npm rebuild ring-flash-attn (npm run build:native in a clone)`,
    );
  }
}

const require = createRequire(import.meta.url);
let cached: NativeAddon | undefined;

/**
 * The addon's file: RFA_ADDON when set (the sanitizer builds), else what node-gyp-build picks in
 * the package root: build/Release when the addon was built from source (a git clone, or an
 * install whose prebuild did not load), else the prebuild for this platform in prebuilds/.
 */
function addonPath(): string {
  if (process.env.RFA_ADDON) {
    // A relative path is the user's, from the working directory (require would read it as a package name).
    const file = path.resolve(process.env.RFA_ADDON);
    if (!fs.existsSync(file))
      throw new RingFlashAttnError(
        'E_DEVICE',
        `native addon not found: RFA_ADDON is ${process.env.RFA_ADDON}`,
      );
    return file;
  }
  const root = packageRoot();
  try {
    return (require('node-gyp-build') as { resolve(dir: string): string }).resolve(root);
  } catch (e) {
    throw new RingFlashAttnError(
      'E_DEVICE',
      `native addon not found in ${root} (neither build/Release nor a prebuild for ${process.platform}-${process.arch}): build it with npm rebuild ring-flash-attn (npm run build:native in a clone) (${(e as Error).message.split('\n')[0]})`,
    );
  }
}

/** The folder of this package's package.json, from dist/runtime or runtime/. */
function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!fs.existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir);
    if (up === dir)
      throw new RingFlashAttnError(
        'E_DEVICE',
        `native addon not found: no package.json above ${fileURLToPath(import.meta.url)}`,
      );
    dir = up;
  }
  return dir;
}

export function native(): NativeAddon {
  if (!cached) {
    // CUDA loads kernels lazily by default (CUDA_MODULE_LOADING=LAZY). Loading a kernel on a
    // device where an NCCL kernel is waiting for a peer can wait for that kernel, while the peer
    // waits for us: a cross-rank deadlock. Load every kernel when the context starts instead.
    // Must be set before the first CUDA call of the process, which is in this addon.
    process.env.CUDA_MODULE_LOADING ??= 'EAGER';
    const file = addonPath();
    const addon: unknown = require(file);
    checkSurface(addon, file);
    cached = addon as NativeAddon;
  }
  return cached;
}

import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import fs from 'node:fs';
import { RingFlashAttnError } from './errors.js';

/** The addon's surface, as native/src registers it. Parameter objects: runtime/kernel_args.ts. */
export interface NativeKernels {
  flashFwd(p: object): void;
  flashBwdDot(p: object): void;
  flashBwd(p: object): void;
  merge(p: object): void;
  cast(p: object): void;
  addF32(p: object): void;
  copyBsh(p: object): void;
}

export interface NativeCpu extends NativeKernels {
  mailSend(p: object): void;
  mailRecv(p: object): void;
  /** scope: the runtime id (the part of its communicator keys before '/'). */
  mailAbort(scope: string, reason: string): void;
  mailReset(scope: string): void;
}

/** The launch planner of the CUDA kernels (native/launch_plan.h), exposed for tests. */
export interface NativePlan {
  simulateLaunch(p: { work: number[]; sms: number; ctasPerSm: number }): number;
  planFwdLaunch(p: { tileSteps: number[]; sms: number; residencies: number[]; maxSplits: number; mustSplit: boolean }): { whole: number; splits: number; ctasPerSm: number };
  planBwdSplits(p: { keyTileSteps: number[]; ctasPerTile: number; sms: number; maxSplits: number }): number;
}

export interface NativeAddon {
  cpu: NativeCpu;
  plan: NativePlan;
  cudaBuilt: boolean;
  /** Why the build has no CUDA backend ('' when it has one). */
  cudaOmitted: string;
  // Present when built with nvcc (runtime/cuda_backend.ts types it).
  cuda?: Record<string, (...args: any[]) => any>;
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
    if (!fs.existsSync(file)) throw new RingFlashAttnError('E_DEVICE', `native addon not found: RFA_ADDON is ${process.env.RFA_ADDON}`);
    return file;
  }
  const root = packageRoot();
  try {
    return (require('node-gyp-build') as { resolve(dir: string): string }).resolve(root);
  } catch (e) {
    throw new RingFlashAttnError('E_DEVICE', `native addon not found in ${root} (neither build/Release nor a prebuild for ${process.platform}-${process.arch}): build it with npm rebuild ring-flash-attn (npm run build:native in a clone) (${(e as Error).message.split('\n')[0]})`);
  }
}

/** The folder of this package's package.json, from dist/runtime or runtime/. */
function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!fs.existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir);
    if (up === dir) throw new RingFlashAttnError('E_DEVICE', `native addon not found: no package.json above ${fileURLToPath(import.meta.url)}`);
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
    cached = require(addonPath()) as NativeAddon;
  }
  return cached;
}

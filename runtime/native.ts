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

let cached: NativeAddon | undefined;

/** Finds build/Release/ring_flash_attn.node from dist/runtime or runtime/. */
function addonPath(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const candidates = [
    process.env.RFA_ADDON,
    path.resolve(here, '../../build/Release/ring_flash_attn.node'),
    path.resolve(here, '../build/Release/ring_flash_attn.node'),
  ].filter((p): p is string => !!p);
  const found = candidates.find((p) => fs.existsSync(p));
  if (!found)
    throw new RingFlashAttnError('E_DEVICE', `native addon not built: looked for ${candidates.join(', ')}; run npm run build`);
  return found;
}

export function native(): NativeAddon {
  if (!cached) {
    // CUDA loads kernels lazily by default (CUDA_MODULE_LOADING=LAZY). Loading a kernel on a
    // device where an NCCL kernel is waiting for a peer can wait for that kernel, while the peer
    // waits for us: a cross-rank deadlock. Load every kernel when the context starts instead.
    // Must be set before the first CUDA call of the process, which is in this addon.
    process.env.CUDA_MODULE_LOADING ??= 'EAGER';
    cached = createRequire(import.meta.url)(addonPath()) as NativeAddon;
  }
  return cached;
}

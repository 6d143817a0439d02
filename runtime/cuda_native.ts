import { fail } from './errors.js';
import { KERNEL_KEYS, missingFunctions, native, type NativeKernels, type SurfaceKeys } from './native.js';

export interface DeviceInfo {
  name: string;
  major: number;
  minor: number;
  /** Whether the addon holds code this GPU runs (SASS for its architecture, or PTX it can JIT). */
  ok: boolean;
  binaryVersion: number;
  ptxVersion: number;
  error: string;
}

/** The CUDA half of the addon (native/bindings/cuda_bindings.cc); one device context per worker. */
export interface NativeCuda extends NativeKernels {
  deviceCount(): number;
  /** Whether GPU `device` can read GPU `peer`'s memory directly (NVLink or PCIe P2P). */
  peerAccess(device: number, peer: number): boolean;
  init(device: number, timeoutMs: number): void;
  alloc(bytes: number): bigint;
  free(ptr: bigint): void;
  upload(ptr: bigint, src: Float32Array | Uint16Array): void;
  /** Same as upload, for any typed array (int32 segment tables). */
  uploadBytes(ptr: bigint, src: ArrayBufferView): void;
  download(ptr: bigint, dst: Float32Array | Uint16Array): void;
  fill(p: object): void;
  sync(timeoutMs: number): void;
  /** A timing event after all of this rank's queued work (benchmark timing); returns its id. */
  timerMark(): number;
  /** Milliseconds between two marks that have passed (sync first); frees both. */
  timerElapsed(start: number, stop: number): number;
  commSendRecv(p: object): number;
  commAllGather(p: object): number;
  commReduceScatter(p: object): number;
  waitEvent(event: number): void;
  peakBytes(): number;
  resetPeak(): void;
  bytesInUse(): number;
  /** Device memory the caching allocator holds: in use plus cached. */
  bytesReserved(): number;
  /** scope: the runtime id (the part of its communicator keys before '/'). */
  abortAll(scope: string, reason: string): void;
  resetAll(scope: string): void;
  /** Which GPU `device` is and whether this build has kernels it can run. */
  deviceInfo(device: number): DeviceInfo;
  /** A fresh NCCL unique id (128 bytes): process 0 of a runtime that spans processes makes it. */
  ncclUniqueId(): Uint8Array;
  /**
   * The id the world communicator of `scope` (ranks 0..world-1) joins, handed out by process 0;
   * the scope's NCCL communicators then span processes and cannot be remade after a failure.
   */
  ncclRegisterWorldId(scope: string, world: number, id: Uint8Array): void;
}

const CUDA_KEYS: SurfaceKeys<NativeCuda> = {
  ...KERNEL_KEYS,
  deviceCount: true,
  peerAccess: true,
  init: true,
  alloc: true,
  free: true,
  upload: true,
  uploadBytes: true,
  download: true,
  fill: true,
  sync: true,
  timerMark: true,
  timerElapsed: true,
  commSendRecv: true,
  commAllGather: true,
  commReduceScatter: true,
  waitEvent: true,
  peakBytes: true,
  resetPeak: true,
  bytesInUse: true,
  bytesReserved: true,
  abortAll: true,
  resetAll: true,
  deviceInfo: true,
  ncclUniqueId: true,
  ncclRegisterWorldId: true,
};
let checked: NativeCuda | undefined;

export function cudaNative(): NativeCuda {
  if (checked) return checked;
  const addon = native();
  if (!addon.cuda)
    fail(
      'E_DEVICE',
      `the addon was built without CUDA (${addon.cudaOmitted || 'nvcc was not found at build time'})`,
    );
  const missing = missingFunctions(addon.cuda, 'cuda', CUDA_KEYS);
  if (missing.length)
    fail(
      'E_DEVICE',
      `the native addon does not match this package (it lacks ${missing.join(', ')}): rebuild it with npm rebuild ring-flash-attn`,
    );
  return (checked = addon.cuda as NativeCuda);
}

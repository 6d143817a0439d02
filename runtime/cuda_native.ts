import { fail } from './errors.js';
import { native, type NativeKernels } from './native.js';

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

/** The CUDA half of the addon (native/src/cuda_bindings.cc); one device context per worker. */
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
}

export function cudaNative(): NativeCuda {
  const cuda = native().cuda;
  if (!cuda) fail('E_DEVICE', 'the addon was built without CUDA (nvcc was not found at build time)');
  return cuda as unknown as NativeCuda;
}

import { Backend } from './backend.js';
import type { Comm, Group } from './comm.js';
import type { RankInfo } from './context.js';
import { CudaComm } from './cuda_comm.js';
import { cudaNative, type NativeCuda } from './cuda_native.js';
import { DTYPE_CODE, dtypeBytes, type DType, type HostData } from './dtype.js';
import { fail } from './errors.js';
import * as args from './kernel_args.js';
import { DeviceTensor, numelOf, type Storage } from './tensor.js';

/**
 * One GPU per worker: kernels on the context's compute stream, NCCL on its comm stream, memory
 * from its caching allocator. Device memory of storages that are dropped without dispose() is
 * returned when the garbage collector finds them (all work is ordered on the compute stream, so
 * a block is only reused by later work).
 */
export class CudaBackend extends Backend {
  readonly name = 'cuda' as const;
  protected readonly kernels: NativeCuda;
  private readonly finalizer: FinalizationRegistry<bigint>;

  constructor(private readonly info: RankInfo) {
    super();
    this.kernels = cudaNative();
    this.kernels.init(info.device, info.timeoutMs);
    const cuda = this.kernels;
    this.finalizer = new FinalizationRegistry((ptr) => {
      try {
        cuda.free(ptr);
      } catch {
        /* the context is gone: its memory went with it */
      }
    });
  }

  protected allocStorage(numel: number, dtype: DType): Storage {
    const bytes = Math.max(1, numel) * dtypeBytes(dtype);
    const ptr = this.kernels.alloc(bytes);
    const token = {};
    let live = true;
    const storage: Storage = {
      data: ptr,
      dtype,
      numel,
      release: () => {
        if (!live) return;
        live = false;
        this.finalizer.unregister(token);
        this.kernels.free(ptr);
      },
    };
    this.finalizer.register(storage, ptr, token);
    return storage;
  }

  upload(data: HostData, shape: readonly number[], dtype: DType): DeviceTensor {
    const want = dtype === 'float32' ? Float32Array : Uint16Array;
    if (!(data instanceof want)) fail('E_DTYPE', `${dtype} data must be a ${want.name}`);
    if (data.length !== numelOf(shape))
      fail('E_SHAPE', `data has ${data.length} elements, shape ${shape.join('x')} needs ${numelOf(shape)}`);
    const t = this.empty(shape, dtype);
    this.kernels.upload(t.storage.data as bigint, data);
    return t;
  }

  download(t: DeviceTensor): HostData {
    const c = t.isContiguous() ? t : this.contiguous(t);
    const out = c.dtype === 'float32' ? new Float32Array(c.numel) : new Uint16Array(c.numel);
    this.kernels.download((c.storage.data as bigint) + BigInt(c.offset * dtypeBytes(c.dtype)), out);
    if (c !== t) c.dispose();
    return out;
  }

  protected uploadInt32(values: Int32Array) {
    const ptr = this.kernels.alloc(Math.max(4, values.byteLength));
    this.kernels.uploadBytes(ptr, values);
    return { data: ptr, release: () => this.kernels.free(ptr) };
  }

  fill(t: DeviceTensor, value: number): void {
    if (!t.isContiguous()) fail('E_SHAPE', 'fill needs a contiguous tensor');
    if (t.dtype !== 'float32' && value !== 0 && !Number.isNaN(value))
      fail('E_DTYPE', 'fill of 16-bit tensors supports 0 and NaN only');
    this.kernels.fill({ dst: args.flat(t, 'dst'), n: t.numel, dtype: DTYPE_CODE[t.dtype], value });
  }

  sync(): void {
    this.kernels.sync(this.info.timeoutMs);
  }

  /** Device time between two CUDA events (a failed sync leaves its two marks to the worker's teardown). */
  override startTimer(): () => number {
    const start = this.kernels.timerMark();
    return () => {
      const stop = this.kernels.timerMark();
      this.sync();
      return this.kernels.timerElapsed(start, stop) / 1000;
    };
  }

  protected newComm(group: Group): Comm {
    return new CudaComm(group, this.kernels, this.info.transport, this.info);
  }

  peakBytes(): number {
    return this.kernels.peakBytes();
  }

  resetPeak(): void {
    this.kernels.resetPeak();
  }
}

import { Backend } from './backend.js';
import type { Comm, Group } from './comm.js';
import { CpuComm } from './cpu_comm.js';
import type { DType, HostData } from './dtype.js';
import { fail } from './errors.js';
import { native, type NativeCpu } from './native.js';
import { DeviceTensor, contiguousStrides, numelOf, type Storage } from './tensor.js';

function hostArray(numel: number, dtype: DType): HostData {
  return dtype === 'float32' ? new Float32Array(numel) : new Uint16Array(numel);
}

/** The reference backend: host memory, C++ kernels, mailboxes between worker threads. */
export class CpuBackend extends Backend {
  readonly name = 'cpu' as const;
  protected readonly kernels: NativeCpu;
  private bytesLive = 0;
  private bytesPeak = 0;

  constructor(private readonly timeoutMs: number) {
    super();
    this.kernels = native().cpu;
  }

  protected allocStorage(numel: number, dtype: DType): Storage {
    return this.wrap(hostArray(numel, dtype), dtype);
  }

  private wrap(data: HostData, dtype: DType): Storage {
    const bytes = data.byteLength;
    this.bytesLive += bytes;
    this.bytesPeak = Math.max(this.bytesPeak, this.bytesLive);
    let live = true;
    return {
      data,
      dtype,
      numel: data.length,
      release: () => {
        if (live) this.bytesLive -= bytes;
        live = false;
      },
    };
  }

  upload(data: HostData, shape: readonly number[], dtype: DType): DeviceTensor {
    const want = dtype === 'float32' ? Float32Array : Uint16Array;
    if (!(data instanceof want)) fail('E_DTYPE', `${dtype} data must be a ${want.name}`);
    if (data.length !== numelOf(shape))
      fail('E_SHAPE', `data has ${data.length} elements, shape ${shape.join('x')} needs ${numelOf(shape)}`);
    return new DeviceTensor(this.wrap(data.slice(), dtype), shape, contiguousStrides(shape));
  }

  download(t: DeviceTensor): HostData {
    const c = t.isContiguous() ? t : this.contiguous(t);
    const data = c.storage.data as HostData;
    const out = data.slice(c.offset, c.offset + c.numel);
    if (c !== t) c.dispose();
    return out;
  }

  protected uploadInt32(values: Int32Array) {
    return { data: values.slice(), release: () => undefined };
  }

  fill(t: DeviceTensor, value: number): void {
    if (!t.isContiguous()) fail('E_SHAPE', 'fill needs a contiguous tensor');
    if (t.dtype !== 'float32' && value !== 0 && !Number.isNaN(value))
      fail('E_DTYPE', 'fill of 16-bit tensors supports 0 and NaN only');
    const bits = t.dtype !== 'float32' && Number.isNaN(value) ? 0xffff : value; // all-ones is a NaN in bf16 and f16
    (t.storage.data as HostData).fill(bits, t.offset, t.offset + t.numel);
  }

  sync(): void {}

  protected newComm(group: Group): Comm {
    return new CpuComm(group, this.kernels, this.timeoutMs);
  }

  peakBytes(): number {
    return this.bytesPeak;
  }

  resetPeak(): void {
    this.bytesPeak = this.bytesLive;
  }
}

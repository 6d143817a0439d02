import type { DType, HostData } from './dtype.js';
import { fail } from './errors.js';

/** Where a tensor's elements live: a host typed array (cpu) or a device allocation (cuda). */
export interface Storage {
  /** Host backing array, or the device pointer of the allocation. */
  readonly data: HostData | bigint;
  readonly dtype: DType;
  /** Elements in the allocation. */
  readonly numel: number;
  /** Returns the memory to its allocator; the storage must not be used afterwards. */
  release(): void;
}

/** The view a native kernel reads: base data, element offset, strides of the leading axes. */
export interface KernelView {
  data: HostData | bigint;
  offset: number;
  strides: number[];
}

export function contiguousStrides(shape: readonly number[]): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i]!;
  }
  return strides;
}

export function numelOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** See DeviceTensor.rowLayout. */
export interface RowLayout {
  rows: number;
  width: number;
  pitch: number;
}

/** Gradient function attached to an output: receives dout, fills `.grad` of the inputs. */
export type GradFn = (dout: DeviceTensor) => void;

/**
 * A strided view over a Storage, on the worker that owns it. Views share storage (select,
 * narrow); only the owner of the storage disposes it. Carries the minimal autograd state the
 * Python API needs: `requiresGrad`, `grad`, and `backward(dout)` on outputs.
 */
export class DeviceTensor {
  requiresGrad = false;
  grad: DeviceTensor | null = null;
  /** Set on outputs of differentiable calls. */
  gradFn: GradFn | null = null;
  /** Frees what the output keeps for backward (called once, by dispose). */
  releaseSaved: (() => void) | null = null;

  constructor(
    readonly storage: Storage,
    readonly shape: readonly number[],
    readonly strides: readonly number[],
    readonly offset = 0,
  ) {}

  get dtype(): DType {
    return this.storage.dtype;
  }

  get ndim(): number {
    return this.shape.length;
  }

  get numel(): number {
    return numelOf(this.shape);
  }

  isContiguous(): boolean {
    const want = contiguousStrides(this.shape);
    return this.shape.every((n, i) => n === 1 || this.strides[i] === want[i]);
  }

  /**
   * The view as `rows` runs of `width` contiguous elements, `pitch` elements apart (a contiguous
   * tensor is one row), or null when its elements do not form such runs. k and v sliced from a
   * packed qkv are rows: one per token, pitch 3·h·d.
   */
  rowLayout(): RowLayout | null {
    if (this.numel === 0) return { rows: 1, width: 0, pitch: 0 };
    // Axes of size 1 place nothing; the rest, innermost first, must be contiguous up to some
    // axis (the row) and collapse to one constant pitch above it.
    const axes = this.shape.map((n, i) => ({ n, stride: this.strides[i]! })).filter((a) => a.n !== 1).reverse();
    let width = 1, i = 0;
    for (; i < axes.length && axes[i]!.stride === width; i++) width *= axes[i]!.n;
    if (i === axes.length) return { rows: 1, width, pitch: width };
    const pitch = axes[i]!.stride;
    if (pitch < width) return null;
    let rows = 1;
    for (; i < axes.length; i++) {
      if (axes[i]!.stride !== pitch * rows) return null;
      rows *= axes[i]!.n;
    }
    return { rows, width, pitch };
  }

  /** Drops axis `dim` at `index` (like x[:, index] for dim 1). */
  select(dim: number, index: number): DeviceTensor {
    this.checkDim(dim);
    if (index < 0 || index >= this.shape[dim]!) fail('E_SHAPE', `select: index ${index} out of range for axis ${dim} of size ${this.shape[dim]}`);
    return new DeviceTensor(
      this.storage,
      this.shape.filter((_, i) => i !== dim),
      this.strides.filter((_, i) => i !== dim),
      this.offset + index * this.strides[dim]!,
    );
  }

  /** Keeps `length` entries of axis `dim` starting at `start` (like x[:, start:start+length]). */
  narrow(dim: number, start: number, length: number): DeviceTensor {
    this.checkDim(dim);
    if (start < 0 || length < 0 || start + length > this.shape[dim]!)
      fail('E_SHAPE', `narrow: [${start}, ${start + length}) out of range for axis ${dim} of size ${this.shape[dim]}`);
    const shape = [...this.shape];
    shape[dim] = length;
    return new DeviceTensor(this.storage, shape, this.strides, this.offset + start * this.strides[dim]!);
  }

  /** A new axis of size 1 at `dim` (like x.unsqueeze(dim)); packed varlen tensors become batch-1 views. */
  unsqueeze(dim: number): DeviceTensor {
    if (!Number.isInteger(dim) || dim < 0 || dim > this.ndim) fail('E_SHAPE', `unsqueeze: axis ${dim} out of range for a ${this.ndim}-d tensor`);
    const stride = dim < this.ndim ? this.shape[dim]! * this.strides[dim]! : 1;
    return new DeviceTensor(this.storage, [...this.shape.slice(0, dim), 1, ...this.shape.slice(dim)],
      [...this.strides.slice(0, dim), stride, ...this.strides.slice(dim)], this.offset);
  }

  /** Same elements, new shape; only for contiguous tensors. */
  reshape(shape: readonly number[]): DeviceTensor {
    if (!this.isContiguous()) fail('E_SHAPE', 'reshape needs a contiguous tensor');
    if (numelOf(shape) !== this.numel) fail('E_SHAPE', `reshape: ${this.shape.join('x')} cannot become ${shape.join('x')}`);
    return new DeviceTensor(this.storage, shape, contiguousStrides(shape), this.offset);
  }

  /** The view a kernel reads; `rank` leading strides (the last axis must be contiguous if dropped). */
  kernelView(rank = this.ndim - 1): KernelView {
    if (rank < this.ndim && this.strides[this.ndim - 1] !== 1 && this.shape[this.ndim - 1] !== 1)
      fail('E_SHAPE', 'the last axis of a kernel operand must be contiguous');
    return { data: this.storage.data, offset: this.offset, strides: this.strides.slice(0, rank) as number[] };
  }

  /** Runs the gradient function of this output with `dout`; fills `.grad` of the inputs. */
  backward(dout: DeviceTensor): void {
    if (!this.gradFn) fail('E_ARG', 'backward: this tensor was not produced by a differentiable call');
    this.gradFn(dout);
  }

  /** Frees the storage and, on outputs, what was kept for backward; backward is gone after. */
  dispose(): void {
    this.storage.release();
    const saved = this.releaseSaved;
    this.releaseSaved = null;
    this.gradFn = null;
    saved?.();
  }

  private checkDim(dim: number): void {
    if (!Number.isInteger(dim) || dim < 0 || dim >= this.ndim) fail('E_SHAPE', `axis ${dim} out of range for a ${this.ndim}-d tensor`);
  }
}

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

/** A value as a message shows it: numbers as they are, `the string "8"`, `an array`, `null`. */
export function describeValue(x: unknown): string {
  if (x === undefined || x === null) return String(x);
  if (typeof x === 'number' || typeof x === 'bigint' || typeof x === 'boolean') return String(x);
  if (typeof x === 'string') return `the string ${JSON.stringify(x)}`;
  if (typeof x === 'symbol') return 'a symbol';
  if (typeof x === 'function') return 'a function';
  if (Array.isArray(x)) return 'an array';
  const ctor = (Object.getPrototypeOf(x) as { constructor?: { name?: unknown } } | null)?.constructor?.name;
  if (typeof ctor !== 'string' || ctor === 'Object' || ctor === '') return 'an object';
  return `${/^[AEIOU]/.test(ctor) ? 'an' : 'a'} ${ctor}`;
}

/** Dimensions joined for a message; entries that are not numbers are described. */
function showDims(xs: readonly unknown[]): string {
  return `(${xs.map((x) => (typeof x === 'number' ? String(x) : describeValue(x))).join(', ')})`;
}

/**
 * The element count of `shape`: every dimension a non-negative safe integer and the product
 * safe too, else E_SHAPE (`what` names the tensor, e.g. 'ring_flash_attn_func: q has shape').
 */
export function numelOf(shape: readonly number[], what = 'shape'): number {
  if (!Array.isArray(shape))
    fail('E_SHAPE', `a shape must be an array of dimensions, got ${describeValue(shape)}`);
  let n = 1;
  for (let axis = 0; axis < shape.length; axis++) {
    const d: unknown = shape[axis];
    if (!Number.isSafeInteger(d) || (d as number) < 0)
      fail(
        'E_SHAPE',
        `${what} ${showDims(shape)}: dimension ${axis} is ${describeValue(d)}, expected a non-negative safe integer`,
      );
    n *= d as number;
  }
  if (!Number.isSafeInteger(n))
    fail('E_SHAPE', `${what} ${showDims(shape)}: its element count ${n} is not a safe integer`);
  return n;
}

/** The longest typed array a host tensor may need (V8's limit on 64-bit hosts). */
export const MAX_HOST_ELEMENTS = 2 ** 32;

/** A host tensor as ndarray describes it: data, shape and optionally stride and offset. */
export interface HostViewLike {
  shape?: unknown;
  stride?: unknown;
  offset?: unknown;
}

/** A checked host view: every element it reaches lies inside its data. */
export interface HostView {
  shape: number[];
  stride: number[];
  offset: number;
  numel: number;
  /** The data is exactly the elements in C order (no copy needed). */
  dense: boolean;
}

function checkStride(where: string, stride: unknown, shape: readonly number[]): number[] {
  if (stride === undefined) return contiguousStrides(shape);
  if (!Array.isArray(stride))
    fail('E_SHAPE', `${where} stride must be an array of integers, got ${describeValue(stride)}`);
  if (stride.length !== shape.length)
    fail(
      'E_SHAPE',
      `${where} stride has ${stride.length} entries for the ${shape.length}-d shape ${showDims(shape)}: expected one integer per dimension`,
    );
  for (let axis = 0; axis < stride.length; axis++) {
    const s: unknown = stride[axis];
    if (!Number.isSafeInteger(s))
      fail(
        'E_SHAPE',
        `${where} stride ${showDims(stride)}: entry ${axis} is ${describeValue(s)}, expected an integer`,
      );
  }
  return stride as number[];
}

/**
 * Checks a host tensor's shape, stride and offset against `dataLength` elements of data, before
 * anything is copied. `where` names it ('ring_flash_attn_func: q'). A contiguous tensor at
 * offset 0 must hold exactly its elements: longer data is ambiguous (a truncated view, or a
 * wrong shape), so it is refused rather than read in part. A view (an offset or other strides)
 * may sit anywhere in its data as long as its lowest and highest reachable indices do.
 */
export function checkHostView(where: string, x: HostViewLike, dataLength: number): HostView {
  const shape = x.shape as number[];
  const numel = numelOf(shape, `${where} has shape`);
  const stride = checkStride(where, x.stride, shape);
  const offset = x.offset ?? 0;
  if (!Number.isSafeInteger(offset) || (offset as number) < 0)
    fail('E_SHAPE', `${where} offset must be a non-negative integer, got ${describeValue(offset)}`);
  const c = contiguousStrides(shape);
  const contiguous = shape.every((n, i) => n === 1 || stride[i] === c[i]);
  const view: HostView = {
    shape: [...shape],
    stride: [...stride],
    offset: offset as number,
    numel,
    dense: contiguous && offset === 0,
  };
  if (view.dense) {
    if (dataLength !== numel)
      fail(
        'E_SHAPE',
        `${where} has ${dataLength} data elements but shape ${showDims(shape)} holds ${numel}; a contiguous tensor with offset 0 must hold exactly its elements: pass a copy, or a view with an explicit offset/stride`,
      );
    return view;
  }
  if (numel > MAX_HOST_ELEMENTS)
    fail(
      'E_SHAPE',
      `${where} has shape ${showDims(shape)}: its ${numel} elements are more than a host typed array holds (${MAX_HOST_ELEMENTS})`,
    );
  if (numel === 0) return view;
  let lo = view.offset,
    hi = view.offset;
  shape.forEach((n, i) => {
    const reach = (n - 1) * stride[i]!;
    if (reach < 0) lo += reach;
    else hi += reach;
  });
  const desc = `${where} (shape ${showDims(shape)}, stride ${showDims(stride)}, offset ${view.offset})`;
  if (lo < 0) fail('E_SHAPE', `${desc} reaches data index ${lo}, below 0`);
  if (hi >= dataLength)
    fail('E_SHAPE', `${desc} reaches data index ${hi}, but its data has ${dataLength} elements`);
  return view;
}

type TypedData = Float32Array | Float64Array | Uint16Array | Int32Array;

/** The elements of a checked view in C order: the data itself when dense, else a copy. */
export function denseData<T extends TypedData>(data: T, view: HostView): T {
  if (view.dense) return data;
  const out = new (data.constructor as { new (n: number): T })(view.numel);
  const { shape, stride, numel } = view;
  if (numel === 0) return out;
  if (shape.length === 0) {
    out[0] = data[view.offset]!;
    return out;
  }
  // Innermost runs one at a time; the outer index advances like an odometer.
  const last = shape.length - 1,
    run = shape[last]!,
    step = stride[last]!;
  const idx = new Array<number>(last).fill(0);
  let base = view.offset;
  for (let o = 0; o < numel; o += run) {
    for (let j = 0, src = base; j < run; j++, src += step) out[o + j] = data[src]!;
    for (let a = last - 1; a >= 0; a--) {
      base += stride[a]!;
      if (++idx[a]! < shape[a]!) break;
      base -= stride[a]! * shape[a]!;
      idx[a] = 0;
    }
  }
  return out;
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
  /** An attention output computed with dropout: the seed of its mask (the call's dropout_seed, or the fresh one it drew). */
  dropoutSeed: number | null = null;

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
    const axes = this.shape
      .map((n, i) => ({ n, stride: this.strides[i]! }))
      .filter((a) => a.n !== 1)
      .reverse();
    let width = 1,
      i = 0;
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
    if (index < 0 || index >= this.shape[dim]!)
      fail('E_SHAPE', `select: index ${index} out of range for axis ${dim} of size ${this.shape[dim]}`);
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
      fail(
        'E_SHAPE',
        `narrow: [${start}, ${start + length}) out of range for axis ${dim} of size ${this.shape[dim]}`,
      );
    const shape = [...this.shape];
    shape[dim] = length;
    return new DeviceTensor(this.storage, shape, this.strides, this.offset + start * this.strides[dim]!);
  }

  /** A new axis of size 1 at `dim` (like x.unsqueeze(dim)); packed varlen tensors become batch-1 views. */
  unsqueeze(dim: number): DeviceTensor {
    if (!Number.isInteger(dim) || dim < 0 || dim > this.ndim)
      fail('E_SHAPE', `unsqueeze: axis ${dim} out of range for a ${this.ndim}-d tensor`);
    const stride = dim < this.ndim ? this.shape[dim]! * this.strides[dim]! : 1;
    return new DeviceTensor(
      this.storage,
      [...this.shape.slice(0, dim), 1, ...this.shape.slice(dim)],
      [...this.strides.slice(0, dim), stride, ...this.strides.slice(dim)],
      this.offset,
    );
  }

  /** Same elements, new shape; only for contiguous tensors. */
  reshape(shape: readonly number[]): DeviceTensor {
    if (!this.isContiguous()) fail('E_SHAPE', 'reshape needs a contiguous tensor');
    if (numelOf(shape) !== this.numel)
      fail('E_SHAPE', `reshape: ${this.shape.join('x')} cannot become ${shape.join('x')}`);
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
    if (!Number.isInteger(dim) || dim < 0 || dim >= this.ndim)
      fail('E_SHAPE', `axis ${dim} out of range for a ${this.ndim}-d tensor`);
  }
}

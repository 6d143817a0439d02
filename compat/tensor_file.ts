// Tensor files Python can read: one msgpack map
//   { format: 'ring-flash-attn/tensors', version: 1,
//     tensors: { <name>: { dtype, shape: [..], data: <bin: C-order little-endian bytes> } } }
// dtype is spelled as numpy spells it ('float32', 'float16', 'float64', 'int32', 'uint16'),
// plus 'bfloat16' for raw bf16 bits. README.md shows the few lines that read it with msgpack
// and numpy. Plain msgpack only (no msgpackr records or extensions), so any reader works.
import fs from 'node:fs/promises';
import ndarray from 'ndarray';
import { Packr } from 'msgpackr';
import { RingFlashAttnError, fail } from '../runtime/errors.js';

export const FORMAT = 'ring-flash-attn/tensors';
export const VERSION = 1;

type Ctor = Float32Array | Float64Array | Int32Array | Uint16Array;
const DTYPES: Record<string, { bytes: number; make: (b: ArrayBuffer) => Ctor }> = {
  float32: { bytes: 4, make: (b) => new Float32Array(b) },
  float64: { bytes: 8, make: (b) => new Float64Array(b) },
  int32: { bytes: 4, make: (b) => new Int32Array(b) },
  uint16: { bytes: 2, make: (b) => new Uint16Array(b) },
  bfloat16: { bytes: 2, make: (b) => new Uint16Array(b) },
  float16: { bytes: 2, make: (b) => new Uint16Array(b) },
};

const packr = new Packr({ useRecords: false, moreTypes: false, structuredClone: false });

/** A host tensor to save: an ndarray or { data, shape, dtype? } (dtype needed for bf16/f16 bits). */
export interface SavableTensor {
  data: ArrayLike<number>;
  shape: readonly number[];
  dtype?: string;
}

/** A loaded tensor: an ndarray whose `dtype` is the file's dtype ('bfloat16' for bf16 bits). */
export type LoadedTensor = ndarray.NdArray<Ctor> & { dtype: string };

function dtypeOf(name: string, t: SavableTensor): string {
  const d = t.data;
  if (d instanceof Float32Array) return 'float32';
  if (d instanceof Float64Array) return 'float64';
  if (d instanceof Int32Array) return 'int32';
  if (d instanceof Uint16Array) {
    const tag = t.dtype ?? (d as { dtype?: string }).dtype;
    if (tag === 'bfloat16' || tag === 'float16' || tag === 'uint16') return tag;
    fail('E_DTYPE', `save: tensor '${name}' is a Uint16Array: give dtype 'bfloat16', 'float16' or 'uint16'`);
  }
  fail('E_DTYPE', `save: tensor '${name}' has unsupported data (Float32Array, Float64Array, Int32Array or Uint16Array)`);
}

/** C-order little-endian bytes of an ndarray-like (strided views are copied in C order). */
function cOrderBytes(t: SavableTensor & { stride?: number[]; offset?: number }, n: number): Uint8Array {
  const data = t.data as Ctor;
  const contiguous = !t.stride || t.stride.every((s, i) => t.shape[i] === 1 || s === t.shape.slice(i + 1).reduce((a, b) => a * b, 1));
  let out: Ctor;
  if (contiguous) out = data.subarray(t.offset ?? 0, (t.offset ?? 0) + n) as Ctor;
  else {
    out = new (data.constructor as { new (n: number): Ctor })(n);
    const idx = new Array<number>(t.shape.length).fill(0);
    for (let i = 0; i < n; i++) {
      let src = t.offset ?? 0;
      for (let a = 0; a < idx.length; a++) src += idx[a]! * t.stride![a]!;
      out[i] = data[src]!;
      for (let a = idx.length - 1; a >= 0 && ++idx[a]! >= t.shape[a]!; a--) idx[a] = 0;
    }
  }
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength); // x86 and arm64 are little-endian
}

/** The bytes of a tensor file holding `tensors`. */
export function encode(tensors: Record<string, SavableTensor>): Uint8Array {
  if (!tensors || typeof tensors !== 'object') fail('E_ARG', 'save: tensors must be an object { name: tensor }');
  const out: Record<string, unknown> = {};
  for (const [name, t] of Object.entries(tensors)) {
    if (!t || !Array.isArray(t.shape)) fail('E_ARG', `save: '${name}' must be an ndarray or { data, shape }`);
    const n = t.shape.reduce((a, b) => a * b, 1);
    const dtype = dtypeOf(name, t);
    if ((t as { stride?: unknown }).stride === undefined && t.data.length !== n)
      fail('E_SHAPE', `save: '${name}' has ${t.data.length} elements, shape (${t.shape.join(', ')}) needs ${n}`);
    out[name] = { dtype, shape: [...t.shape], data: Buffer.from(cOrderBytes(t, n)) };
  }
  return packr.pack({ format: FORMAT, version: VERSION, tensors: out });
}

function bad(path: string, why: string): never {
  throw new RingFlashAttnError('E_FORMAT', `load: ${path}: ${why}`);
}

/** Parses tensor-file bytes; anything malformed is an E_FORMAT error, never a wrong tensor. */
export function decode(bytes: Uint8Array, path = '<bytes>'): Record<string, LoadedTensor> {
  let doc: unknown;
  try {
    doc = packr.unpack(bytes);
  } catch (e) {
    bad(path, `not a msgpack document (${(e as Error).message})`);
  }
  const d = doc as { format?: unknown; version?: unknown; tensors?: unknown };
  if (!d || typeof d !== 'object' || d.format !== FORMAT) bad(path, `not a ${FORMAT} file`);
  if (d.version !== VERSION) bad(path, `unsupported version ${String(d.version)} (this reader knows ${VERSION})`);
  if (!d.tensors || typeof d.tensors !== 'object') bad(path, 'missing tensors map');
  const out: Record<string, LoadedTensor> = {};
  for (const [name, raw] of Object.entries(d.tensors as Record<string, unknown>)) {
    const t = raw as { dtype?: unknown; shape?: unknown; data?: unknown };
    const spec = typeof t?.dtype === 'string' ? DTYPES[t.dtype] : undefined;
    if (!spec) bad(path, `tensor '${name}' has unknown dtype ${JSON.stringify(t?.dtype)}`);
    if (!Array.isArray(t.shape) || t.shape.some((x) => !Number.isInteger(x) || x < 0)) bad(path, `tensor '${name}' has an invalid shape`);
    if (!(t.data instanceof Uint8Array)) bad(path, `tensor '${name}' has no binary data`);
    const shape = t.shape as number[];
    const n = shape.reduce((a, b) => a * b, 1);
    if (t.data.byteLength !== n * spec.bytes)
      bad(path, `tensor '${name}' holds ${t.data.byteLength} bytes, ${t.dtype} (${shape.join(', ')}) needs ${n * spec.bytes}`);
    const copy = new ArrayBuffer(t.data.byteLength);
    new Uint8Array(copy).set(t.data);
    const arr = ndarray(spec.make(copy), shape) as LoadedTensor;
    Object.defineProperty(arr, 'dtype', { value: t.dtype, enumerable: true });
    out[name] = arr;
  }
  return out;
}

/** Writes `{ name: tensor }` to `path` (see the format above). */
export async function save(path: string, tensors: Record<string, SavableTensor>): Promise<void> {
  await fs.writeFile(path, encode(tensors));
}

/** Reads a tensor file into `{ name: ndarray }`. */
export async function load(path: string): Promise<Record<string, LoadedTensor>> {
  let bytes: Uint8Array;
  try {
    bytes = await fs.readFile(path);
  } catch (e) {
    throw new RingFlashAttnError('E_ARG', `load: cannot read ${path}: ${(e as Error).message}`);
  }
  return decode(bytes, path);
}

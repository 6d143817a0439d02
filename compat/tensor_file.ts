// Tensor files Python can read: one plain msgpack map (no msgpackr records or extensions)
//   { format: 'ring-flash-attn/tensors', version: 2,
//     tensors: { <name>: { dtype, shape: [..], data: <bin: C-order little-endian bytes>,
//                          crc32c: <uint: CRC-32C of data> } },
//     crc32c: <uint32: CRC-32C of every byte of the file before its last 4> }
// dtype is spelled as numpy spells it ('float32', 'float16', 'float64', 'int32', 'uint16'),
// plus 'bfloat16' for raw bf16 bits. The file's own crc32c is the map's last entry and is always
// written as a msgpack uint32 (0xce + 4 big-endian bytes), so it is the file's last 4 bytes and
// a reader checks it without re-encoding anything. The per-tensor checksums say which tensor a
// corruption hit; the file's covers names, dtypes and shapes too. Version 1 is the same map
// without either crc32c field; load() still reads it. README.md shows the msgpack + numpy reader.
import fs from 'node:fs/promises';
import ndarray from 'ndarray';
import { Packr } from 'msgpackr';
import CRC32C from 'crc-32/crc32c.js';
import { RingFlashAttnError, fail } from '../runtime/errors.js';
import { denseData } from '../runtime/tensor.js';

export const FORMAT = 'ring-flash-attn/tensors';
/** The version save() writes. */
export const VERSION = 2;
const KNOWN_VERSIONS = [1, 2] as const;
type Version = (typeof KNOWN_VERSIONS)[number];

// Exact field sets: a field too many or too few is a corruption (or a version flipped 2 -> 1).
const FILE_FIELDS: Record<Version, readonly string[]> = {
  1: ['format', 'version', 'tensors'],
  2: ['format', 'version', 'tensors', 'crc32c'],
};
const TENSOR_FIELDS: Record<Version, readonly string[]> = {
  1: ['dtype', 'shape', 'data'],
  2: ['dtype', 'shape', 'data', 'crc32c'],
};

const MSGPACK_UINT32 = 0xce;
// Any value >= 2^16 makes msgpackr write a uint32; save() overwrites it with the real checksum.
const CRC_PLACEHOLDER = 0xffffffff;

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

type View = SavableTensor & { stride?: unknown; offset?: unknown };

/** CRC-32C (Castagnoli) as an unsigned 32-bit integer; the library returns it signed. */
export function crc32c(bytes: Uint8Array): number {
  return CRC32C.buf(bytes) >>> 0;
}

const hex = (x: number) => `0x${x.toString(16).padStart(8, '0')}`;

/** What a decoded value is, with its type, for messages: `the string "1"`, `the number 3`. */
function describe(v: unknown): string {
  if (v === undefined) return 'missing';
  if (v === null) return 'null';
  if (typeof v === 'string') return `the string ${JSON.stringify(v)}`;
  if (typeof v === 'number' || typeof v === 'bigint' || typeof v === 'boolean')
    return `the ${typeof v} ${String(v)}`;
  if (v instanceof Uint8Array) return `binary of ${v.byteLength} bytes`;
  return Array.isArray(v) ? 'an array' : 'a map';
}

const isMap = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);

const isUint32 = (v: unknown): v is number =>
  Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 0xffffffff;

// ---- save ----

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
  fail(
    'E_DTYPE',
    `save: tensor '${name}' has unsupported data (Float32Array, Float64Array, Int32Array or Uint16Array)`,
  );
}

/** The element count of a shape, each dimension and the product checked to be safe integers. */
function elementCount(name: string, shape: readonly unknown[]): number {
  const dims = `(${shape.map(String).join(', ')})`;
  shape.forEach((d, axis) => {
    if (!Number.isSafeInteger(d) || (d as number) < 0)
      fail(
        'E_SHAPE',
        `save: tensor '${name}' has shape ${dims}: dimension ${axis} is ${describe(d)}, expected a non-negative safe integer`,
      );
  });
  const n = (shape as number[]).reduce((a, b) => a * b, 1);
  if (!Number.isSafeInteger(n) && !shape.includes(0))
    fail(
      'E_SHAPE',
      `save: tensor '${name}' has shape ${dims}: its element count ${n} exceeds ${Number.MAX_SAFE_INTEGER}`,
    );
  return n;
}

/** An ndarray view's stride and offset must be integers and reach only elements inside its data. */
function checkViewExtent(name: string, t: View, n: number): { stride: number[]; offset: number } {
  const { shape, stride, offset = 0 } = t;
  if (!Array.isArray(stride) || stride.length !== shape.length || !stride.every(Number.isSafeInteger))
    fail(
      'E_ARG',
      `save: tensor '${name}' has stride ${Array.isArray(stride) ? `(${stride.join(', ')})` : describe(stride)} for shape (${shape.join(', ')}): expected ${shape.length} safe integers`,
    );
  if (!Number.isSafeInteger(offset) || (offset as number) < 0)
    fail(
      'E_ARG',
      `save: tensor '${name}' has offset ${describe(offset)}, expected a non-negative safe integer`,
    );
  const view = { stride: stride as number[], offset: offset as number };
  if (n === 0) return view;
  let lo = view.offset,
    hi = view.offset;
  shape.forEach((d, a) => {
    const reach = (d - 1) * view.stride[a]!;
    if (reach < 0) lo += reach;
    else hi += reach;
  });
  const where = `save: tensor '${name}' (shape (${shape.join(', ')}), stride (${view.stride.join(', ')}), offset ${view.offset})`;
  if (lo < 0) fail('E_SHAPE', `${where} reaches data index ${lo}, below 0`);
  if (hi >= t.data.length)
    fail('E_SHAPE', `${where} reaches data index ${hi}, but its data has ${t.data.length} elements`);
  return view;
}

/** Validates one tensor before anything is written; returns its dtype and C-order bytes. */
function tensorBytes(name: string, t: View): { dtype: string; shape: number[]; bytes: Uint8Array } {
  if (!t || typeof t !== 'object' || !Array.isArray(t.shape) || !t.data)
    fail('E_ARG', `save: tensor '${name}' must be an ndarray or { data, shape }`);
  const n = elementCount(name, t.shape);
  const dtype = dtypeOf(name, t);
  if (t.stride === undefined) {
    if (t.data.length !== n)
      fail(
        'E_SHAPE',
        `save: tensor '${name}' has ${t.data.length} elements, its shape (${t.shape.join(', ')}) needs ${n}`,
      );
    return { dtype, shape: [...t.shape], bytes: cOrderBytes(t.data as Ctor, t.shape, undefined, 0, n) };
  }
  const { stride, offset } = checkViewExtent(name, t, n);
  return { dtype, shape: [...t.shape], bytes: cOrderBytes(t.data as Ctor, t.shape, stride, offset, n) };
}

/** C-order little-endian bytes of (a view of) `data`; strided views are copied in C order. */
function cOrderBytes(
  data: Ctor,
  shape: readonly number[],
  stride: number[] | undefined,
  offset: number,
  n: number,
): Uint8Array {
  const contiguous =
    !stride || stride.every((s, i) => shape[i] === 1 || s === shape.slice(i + 1).reduce((a, b) => a * b, 1));
  const out = contiguous
    ? (data.subarray(offset, offset + n) as Ctor)
    : denseData(data, { shape: [...shape], stride: stride!, offset, numel: n, dense: false });
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength); // x86 and arm64 are little-endian
}

/** Writes the file's checksum over its last 4 bytes, the placeholder msgpackr wrote as a uint32. */
function seal(file: Uint8Array): Uint8Array {
  const end = file.byteLength;
  const view = new DataView(file.buffer, file.byteOffset, end);
  if (file[end - 5] !== MSGPACK_UINT32 || view.getUint32(end - 4) !== CRC_PLACEHOLDER)
    fail('E_FORMAT', 'save: the msgpack encoder did not end the file with the crc32c uint32 placeholder');
  view.setUint32(end - 4, crc32c(file.subarray(0, end - 4))); // big-endian, as msgpack stores it
  return file;
}

/** The bytes of a (version 2) tensor file holding `tensors`; nothing is encoded until all are valid. */
export function encode(tensors: Record<string, SavableTensor>): Uint8Array {
  if (!isMap(tensors)) fail('E_ARG', 'save: tensors must be an object { name: tensor }');
  const valid = Object.entries(tensors).map(([name, t]) => [name, tensorBytes(name, t as View)] as const);
  const out: Record<string, unknown> = {};
  for (const [name, { dtype, shape, bytes }] of valid)
    out[name] = {
      dtype,
      shape,
      data: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength),
      crc32c: crc32c(bytes),
    };
  return seal(packr.pack({ format: FORMAT, version: VERSION, tensors: out, crc32c: CRC_PLACEHOLDER }));
}

// ---- load ----

function bad(path: string, why: string): never {
  throw new RingFlashAttnError('E_FORMAT', `load: ${path}: ${why}`);
}

function checkFields(
  path: string,
  where: string,
  obj: Record<string, unknown>,
  fields: readonly string[],
  version: Version,
) {
  const known = `version ${version} has ${fields.join(', ')}`;
  for (const f of fields) if (!(f in obj)) bad(path, `${where} lacks field '${f}' (${known})`);
  for (const f of Object.keys(obj))
    if (!fields.includes(f)) bad(path, `${where} has an unexpected field '${f}' (${known})`);
}

function versionOf(path: string, doc: Record<string, unknown>): Version {
  const v = doc.version;
  if (!KNOWN_VERSIONS.includes(v as Version))
    bad(path, `field 'version' is ${describe(v)}; this reader knows ${KNOWN_VERSIONS.join(' or ')}`);
  return v as Version;
}

/** One tensor entry, checked (and, from version 2, its data's checksum verified) and copied. */
function readTensor(path: string, name: string, raw: unknown, version: Version): LoadedTensor {
  if (!isMap(raw)) bad(path, `tensor '${name}' is ${describe(raw)}, expected a map`);
  checkFields(path, `tensor '${name}'`, raw, TENSOR_FIELDS[version], version);
  const { dtype, shape, data } = raw;
  const spec = typeof dtype === 'string' ? DTYPES[dtype] : undefined;
  if (!spec) bad(path, `tensor '${name}' has unknown dtype ${JSON.stringify(dtype)}`);
  if (!Array.isArray(shape) || shape.some((x) => !Number.isSafeInteger(x) || x < 0))
    bad(path, `tensor '${name}' has an invalid shape`);
  if (!(data instanceof Uint8Array)) bad(path, `tensor '${name}' has no binary data`);
  const n = (shape as number[]).reduce((a, b) => a * b, 1);
  if (data.byteLength !== n * spec.bytes)
    bad(
      path,
      `tensor '${name}' holds ${data.byteLength} bytes, ${dtype} (${shape.join(', ')}) needs ${n * spec.bytes}`,
    );
  if (version === 2) {
    const stored = raw.crc32c;
    if (!isUint32(stored))
      bad(path, `tensor '${name}' has crc32c ${describe(stored)}, expected an unsigned 32-bit integer`);
    const computed = crc32c(data);
    if (stored !== computed)
      bad(
        path,
        `tensor '${name}' fails its checksum: stored crc32c ${hex(stored)}, computed ${hex(computed)}`,
      );
  }
  const copy = new ArrayBuffer(data.byteLength);
  new Uint8Array(copy).set(data);
  const arr = ndarray(spec.make(copy), shape as number[]) as LoadedTensor;
  Object.defineProperty(arr, 'dtype', { value: dtype, enumerable: true });
  return arr;
}

/** The file's own checksum: its last 4 bytes are the uint32 crc32c of every byte before them. */
function checkFileChecksum(path: string, bytes: Uint8Array, stored: unknown) {
  const end = bytes.byteLength;
  const trailer =
    end >= 5 && bytes[end - 5] === MSGPACK_UINT32
      ? new DataView(bytes.buffer, bytes.byteOffset, end).getUint32(end - 4)
      : undefined;
  if (!isUint32(stored) || stored !== trailer)
    bad(
      path,
      `the file's crc32c (${describe(stored)}) is not the uint32 its last 5 bytes hold, as version 2 writes it`,
    );
  const computed = crc32c(bytes.subarray(0, end - 4));
  if (stored !== computed)
    bad(
      path,
      `the file fails its checksum (names, dtypes or shapes changed): stored crc32c ${hex(stored)}, computed ${hex(computed)}`,
    );
}

/** Parses tensor-file bytes; anything malformed is an E_FORMAT error, never a wrong tensor. */
export function decode(bytes: Uint8Array, path = '<bytes>'): Record<string, LoadedTensor> {
  let doc: unknown;
  try {
    doc = packr.unpack(bytes);
  } catch (e) {
    bad(path, `not a msgpack document (${(e as Error).message})`);
  }
  if (!isMap(doc) || doc.format !== FORMAT) bad(path, `not a ${FORMAT} file`);
  const version = versionOf(path, doc);
  checkFields(path, 'the file', doc, FILE_FIELDS[version], version);
  if (!isMap(doc.tensors)) bad(path, `field 'tensors' is ${describe(doc.tensors)}, expected a map`);
  const out: Record<string, LoadedTensor> = {};
  for (const [name, raw] of Object.entries(doc.tensors)) out[name] = readTensor(path, name, raw, version);
  if (version === 2) checkFileChecksum(path, bytes, doc.crc32c);
  return out;
}

/** Writes `{ name: tensor }` to `path` (see the format above); throws before writing if any is invalid. */
export async function save(path: string, tensors: Record<string, SavableTensor>): Promise<void> {
  await fs.writeFile(path, encode(tensors));
}

/** Reads a tensor file (version 1 or 2) into `{ name: ndarray }`. */
export async function load(path: string): Promise<Record<string, LoadedTensor>> {
  let bytes: Uint8Array;
  try {
    bytes = await fs.readFile(path);
  } catch (e) {
    throw new RingFlashAttnError('E_ARG', `load: cannot read ${path}: ${(e as Error).message}`);
  }
  return decode(bytes, path);
}

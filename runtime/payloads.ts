// Driver mode across processes sends a task's description through the rendezvous store and its
// tensors over the runtime's communicator: this splits a value into a skeleton (everything but
// its typed arrays, each replaced by a placeholder saying its type and length) and the typed
// arrays themselves, and puts them back together on the other side.
import { Packr } from 'msgpackr';
import { mapTree, WALK } from './transfer.js';

/** Marks a placeholder of a typed array in a skeleton. */
const PAYLOAD_TAG = '__ringFlashAttnPayload';

// Subclasses (Node's Buffer) come back as their base type.
const TYPES = {
  Float32Array,
  Float64Array,
  Int8Array,
  Uint8Array,
  Uint8ClampedArray,
  Int16Array,
  Uint16Array,
  Int32Array,
  Uint32Array,
  BigInt64Array,
  BigUint64Array,
} as const;
type TypeName = keyof typeof TYPES;
export type Payload = InstanceType<(typeof TYPES)[TypeName]>;

/** Where a typed array was: its index among the value's payloads, its type and length. */
export interface Placeholder {
  [PAYLOAD_TAG]: number;
  type: TypeName;
  length: number;
}

function typeName(x: ArrayBufferView): TypeName | undefined {
  return (Object.keys(TYPES) as TypeName[]).find((t) => x instanceof TYPES[t]);
}

/**
 * The skeleton of `value` and its typed arrays, in the order of their placeholders' indices.
 * Only arrays and plain objects are walked (what driver-mode tasks and results are made of).
 */
export function splitPayloads(value: unknown): { skeleton: unknown; payloads: Payload[] } {
  const payloads: Payload[] = [];
  const skeleton = mapTree(value, (x) => {
    const type = ArrayBuffer.isView(x) ? typeName(x) : undefined;
    if (!type) return WALK;
    const p = x as Payload;
    payloads.push(p);
    const ph: Placeholder = { [PAYLOAD_TAG]: payloads.length - 1, type, length: p.length };
    return ph;
  });
  return { skeleton, payloads };
}

function isPlaceholder(x: unknown): x is Placeholder {
  return !!x && typeof x === 'object' && typeof (x as Record<string, unknown>)[PAYLOAD_TAG] === 'number';
}

/** The placeholders of a skeleton, by index: what the receiver allocates before the payloads arrive. */
export function placeholders(skeleton: unknown): Placeholder[] {
  const found: Placeholder[] = [];
  mapTree(skeleton, (x) => (isPlaceholder(x) ? (found[x[PAYLOAD_TAG]] = x) : WALK));
  return found;
}

/** An empty typed array for a placeholder's payload. */
export function allocate(p: Placeholder): Payload {
  return new TYPES[p.type](p.length);
}

/** The skeleton with each placeholder replaced by its payload. */
export function joinPayloads(skeleton: unknown, payloads: readonly Payload[]): unknown {
  return mapTree(skeleton, (x) => (isPlaceholder(x) ? payloads[x[PAYLOAD_TAG]] : WALK));
}

// What is left in a skeleton (Maps, Sets, Dates) keeps its type across processes.
const packr = new Packr({ moreTypes: true });

/** A skeleton as bytes, for the store or the communicator. */
export function encodeSkeleton(skeleton: unknown): Uint8Array {
  return packr.pack(skeleton);
}

export function decodeSkeleton(bytes: Uint8Array): unknown {
  return packr.unpack(bytes) as unknown;
}

// Driver-mode fuzzing on the CPU backend: random calls (names, shapes, dtypes, views, options,
// positional splits, groups, cu_seqlens) must each end in a RingFlashAttnError with a documented
// validation code and a message, or in a result equal to the fp64 reference; never another error,
// a crash or a hang. A spec is plain data (what fast-check prints on failure); build() turns it
// into the call's arguments and says what must come out. Reproduce a failure with the printed
// seed and path: FUZZ_SEED=<seed> FUZZ_PATH=<path> node dist/test/fuzz.test.js (FUZZ_RUNS: count).
import fc from 'fast-check';
import ndarray from 'ndarray';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { RingFlashAttnError, type DriverResult, type RingRuntime } from '../index.js';
import { fromFloat32, roundThrough, type DType } from '../runtime/dtype.js';
import { pack, randn, relL2, rng, Runtimes } from './helpers.js';
import { referenceForward } from './reference.js';
import { varlenReference } from './varlen_reference.js';

const SEED =
  process.env.FUZZ_SEED !== undefined
    ? Number(process.env.FUZZ_SEED)
    : Date.now() ^ (Math.random() * 2 ** 31);
const RUNS = Number(process.env.FUZZ_RUNS ?? 5000);
const PATH = process.env.FUZZ_PATH;
/** Codes a validation failure may carry; anything else (E_WORKER, a TypeError) is a defect. */
const CODES = new Set(['E_SHAPE', 'E_DTYPE', 'E_ARG', 'E_UNSUPPORTED']);
const HANG_MS = 30_000;

// ---- the functions, their sharding and their Python signatures ----
// The signatures as the Python projects write them (ring_flash_attn's, flash-attn 2.x's), read by
// parseSignature: the positional order and the defaults here stand apart from api/args.ts.
const SIGNATURES = {
  /** ring_flash_attn_func, and the v2, zigzag and stripe variants. */
  ring: 'q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), alibi_slopes=None, deterministic=False, return_attn_probs=False, group=None',
  /** ring_flash_attn_varlen_func and zigzag's; driver mode calls llama3 the same way. */
  ringVarlen:
    'q, k, v, cu_seqlens, max_seqlen, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), alibi_slopes=None, deterministic=False, return_attn_probs=False, group=None',
  flash:
    'q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False',
  /** flash_attn_varlen_func without block_table (paged KV is not part of the port). */
  flashVarlen:
    'q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False',
  flashVarlenQkv:
    'qkv, cu_seqlens, max_seqlen, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False',
};
/** The tensor parameters: the packed forms take q, kv or qkv in place of q, k, v, the rest alike. */
const TENSORS = new Set(['q', 'k', 'v', 'kv', 'qkv']);
/** Python literal tokens in JSON: None, booleans, and tuples as arrays. */
const PY_JSON: Record<string, string> = { None: 'null', False: 'false', True: 'true', '(': '[', ')': ']' };
/** A signature's parameters after the tensors, and their defaults (Python literals as JSON). */
function parseSignature(sig: string): { names: string[]; defaults: Record<string, unknown> } {
  const names: string[] = [];
  const defaults: Record<string, unknown> = {};
  // Split at the commas outside parentheses, so that (-1, -1) stays one default.
  for (const param of sig.split(/,\s*(?![^(]*\))/)) {
    const [name, literal] = param.split('=') as [string, string | undefined];
    if (TENSORS.has(name)) continue;
    names.push(name);
    if (literal !== undefined)
      defaults[name] = JSON.parse(literal.replace(/None|False|True|[()]/g, (t) => PY_JSON[t]!));
  }
  return { names, defaults };
}
const PARSED = Object.fromEntries(
  Object.entries(SIGNATURES).map(([key, sig]) => [key, parseSignature(sig)]),
) as Record<keyof typeof SIGNATURES, ReturnType<typeof parseSignature>>;
const DEFAULTS: Record<string, unknown> = Object.assign({}, ...Object.values(PARSED).map((p) => p.defaults));
type Packing = 'func' | 'kvpacked' | 'qkvpacked';
interface Family {
  prefix: string;
  suffix?: string;
  /** Pieces per rank of every sequence (zigzag: 2). */
  parts: number;
  single?: boolean;
  varlen?: 'seq' | 'total' | 'single';
}
const FAMILIES: Family[] = [
  { prefix: 'ring_flash_attn', parts: 1 },
  { prefix: 'ring_flash_attn', suffix: '_v2', parts: 1 },
  { prefix: 'zigzag_ring_flash_attn', parts: 2 },
  { prefix: 'stripe_flash_attn', parts: 1 },
  { prefix: 'flash_attn', parts: 1, single: true },
  { prefix: 'ring_flash_attn_varlen', parts: 1, varlen: 'seq' },
  { prefix: 'zigzag_ring_flash_attn_varlen', parts: 2, varlen: 'seq' },
  { prefix: 'llama3_flash_attn_varlen', parts: 1, varlen: 'total' },
  { prefix: 'flash_attn_varlen', parts: 1, single: true, varlen: 'single' },
];
const fnName = (f: Family, p: Packing) => `${f.prefix}_${p === 'func' ? '' : `${p}_`}func${f.suffix ?? ''}`;
function positionalOf(f: Family, p: Packing): string[] {
  if (!f.varlen) return PARSED[f.single ? 'flash' : 'ring'].names;
  if (f.varlen !== 'single') return PARSED.ringVarlen.names;
  return PARSED[p === 'qkvpacked' ? 'flashVarlenQkv' : 'flashVarlen'].names;
}

// ---- value pools: ok (with what it means), or not ----
interface Entry {
  v: unknown;
  ok: boolean;
  sem?: unknown;
}
const ok = (v: unknown, sem: unknown = v): Entry => ({ v, ok: true, sem });
const bad = (v: unknown): Entry => ({ v, ok: false });
const ODD = [
  NaN,
  Infinity,
  '',
  'x',
  1n,
  Symbol('odd'),
  () => 0,
  Object.create(null) as object,
  new Date(0),
  [[]],
  { a: 1 },
];
const BOOL_OK = [ok(true), ok(false), ok(null, false), ok(undefined, false)];
const BOOL_BAD = [bad('yes'), bad(1), bad(0), bad([])];
const POOLS: Record<string, { ok: Entry[]; bad: Entry[] }> = {
  // Values that turn an option on (a window, dropout, softcap, slopes) are valid and checked
  // against their own reference in test/masks.test.ts; here only their malformed forms.
  dropout_p: { ok: [ok(0), ok(-0), ok(null)], bad: [bad(1), bad(-0.5), bad(NaN), bad('0')] },
  softmax_scale: {
    ok: [ok(null), ok(0.125), ok(0.7), ok(2)],
    bad: [bad(0), bad(-1), bad(NaN), bad(Infinity), bad('0.5'), bad(true)],
  },
  causal: { ok: BOOL_OK, bad: BOOL_BAD },
  window_size: {
    ok: [ok([-1, -1]), ok(null)],
    bad: [bad([-2, 0]), bad([-1]), bad([-1, -1, -1]), bad('full'), bad(-1), bad([NaN, -1])],
  },
  alibi_slopes: { ok: [ok(null), ok(undefined)], bad: [bad([[1]]), bad(new Int32Array(2)), bad('x')] },
  deterministic: { ok: BOOL_OK, bad: BOOL_BAD },
  return_attn_probs: { ok: BOOL_OK, bad: BOOL_BAD },
  softcap: { ok: [ok(0), ok(null)], bad: [bad(Infinity), bad('x'), bad(-1)] },
  dtype: {
    ok: [ok('float32'), ok('bfloat16'), ok('float16')],
    bad: [bad('int8'), bad('fp32'), bad(1), bad(null), bad('Float32')],
  },
  timeoutMs: { ok: [ok(60_000), ok(0)], bad: [bad(-5), bad(1.5), bad('1000'), bad(2 ** 40)] },
};
const UNKNOWN_KEYS = [
  'casual',
  'Causal',
  '__proto__',
  'constructor',
  'toString',
  'hasOwnProperty',
  'local_k_slice',
  'cu_seqlen',
  'scale',
];
const BAD_NAMES: unknown[] = [
  '__proto__',
  'constructor',
  'toString',
  'hasOwnProperty',
  'valueOf',
  'isPrototypeOf',
  'propertyIsEnumerable',
  '__defineGetter__',
  'ring_flash_attn',
  'ring_flash_attn_func ',
  'RING_FLASH_ATTN_FUNC',
  'ringFlashAttnFunc',
  '',
  'call',
  42,
  null,
  undefined,
  Symbol('f'),
  {},
  ['ring_flash_attn_func'],
  new String('ring_flash_attn_func'),
];
const BAD_DIMS: unknown[] = [
  0,
  -1,
  0.5,
  NaN,
  2 ** 31,
  2 ** 53,
  2 ** 60,
  1e300,
  Infinity,
  '8',
  null,
  undefined,
];
const JUNK: unknown[] = [
  null,
  undefined,
  42,
  'q',
  {},
  [],
  new Float32Array(4),
  { data: new Float32Array(4) },
  { shape: [1, 4] },
];

// ---- the spec ----
const LAYOUTS_OK = ['dense', 'ndarray', 'padded', 'reversed', 'transposed', 'strided'] as const;
const LAYOUTS_BAD = [
  'long',
  'short',
  'stride-len',
  'stride-frac',
  'offset-neg',
  'offset-frac',
  'offset-str',
  'out-of-range',
  'dim-bad',
  'junk',
  'missing',
] as const;
const DTYPES_OK = ['f32', 'f32', 'f32', 'bf16', 'f16'] as const;
const DTYPES_BAD = [
  'u16-untagged',
  'f32-tag-bf16',
  'u16-tag-f32',
  'u16-tag-int8',
  'f64',
  'i32',
  'array',
] as const;
const SHAPE_MUTS = [
  'heads',
  'head_dim',
  'batch',
  'seqlen',
  'indivisible',
  'd-too-big',
  'empty',
  'pack-axis',
  'rank',
  'huge-all',
] as const;
const CU_MUTS = [
  'unsorted',
  'not-zero',
  'not-total',
  'one-entry',
  'float32',
  'array',
  'uint32',
  'bigint',
  'null',
  'nd-long',
  'nd-2d',
  'indivisible',
  'zero-length',
] as const;
const CU_OK = ['int32', 'int32', 'ndarray', 'nd-view'] as const;
const MAX_MUTS = ['small', -1, 2.5, '8', null, 'missing'] as const;
const GROUP_BAD = ['out-of-range', 'duplicate', 'empty', 'fraction', 'string', 'object', 'negative'] as const;
const ASPECTS = [
  'name',
  'shape',
  'layout',
  'dtype',
  'option',
  'odd-option',
  'unknown-key',
  'positional',
  'cu',
  'max',
  'group',
] as const;
type Aspect = (typeof ASPECTS)[number];

const entry = (pool: Entry[]) => fc.constantFrom(...pool);
const optionArb = (key: string) =>
  fc.record({ present: fc.boolean(), good: entry(POOLS[key]!.ok), bad: entry(POOLS[key]!.bad) });
const specArb = fc.record({
  world: fc.integer({ min: 1, max: 4 }),
  family: fc.integer({ min: 0, max: FAMILIES.length - 1 }),
  packing: fc.constantFrom<Packing>('func', 'kvpacked', 'qkvpacked'),
  broken: fc.oneof(
    { weight: 2, arbitrary: fc.constant<Aspect[]>([]) },
    { weight: 8, arbitrary: fc.constantFrom(...ASPECTS).map((a) => [a]) },
    { weight: 1, arbitrary: fc.subarray([...ASPECTS], { minLength: 2, maxLength: 2 }) },
  ),
  b: fc.integer({ min: 1, max: 2 }),
  m: fc.integer({ min: 1, max: 4 }),
  mk: fc.integer({ min: 1, max: 16 }),
  h: fc.constantFrom(1, 2, 4),
  hkDiv: fc.constantFrom(1, 2, 4),
  d: fc.constantFrom(8, 16),
  lens: fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 1, maxLength: 3 }),
  shapeMut: fc.constantFrom(...SHAPE_MUTS),
  badDim: fc.constantFrom(...BAD_DIMS),
  layouts: fc.array(fc.constantFrom(...LAYOUTS_OK), { minLength: 3, maxLength: 3 }),
  badLayout: fc.constantFrom(...LAYOUTS_BAD),
  dtypes: fc.array(fc.constantFrom(...DTYPES_OK), { minLength: 3, maxLength: 3 }),
  badDtype: fc.constantFrom(...DTYPES_BAD),
  victim: fc.nat(2),
  junk: fc.constantFrom(...JUNK),
  options: fc.record(Object.fromEntries(Object.keys(POOLS).map((k) => [k, optionArb(k)]))),
  badKey: fc.constantFrom(
    ...Object.keys(POOLS),
    'group',
    'heads_k_stride',
    'cu_seqlens',
    'max_seqlen',
    'cu_seqlens_q',
    'max_seqlen_k',
  ),
  odd: fc.constantFrom(...ODD),
  unknownKey: fc.constantFrom(...UNKNOWN_KEYS),
  split: fc.nat(12),
  defaults: fc.boolean(),
  positionalMut: fc.constantFrom('both', 'too-many'),
  cu: fc.constantFrom(...CU_OK),
  cuMut: fc.constantFrom(...CU_MUTS),
  maxExtra: fc.nat(3),
  maxMut: fc.constantFrom(...MAX_MUTS),
  headsKStride: fc.constantFrom<unknown>(1, 1, 1, 'hk', 2, 3, 0, 1.5, '1'),
  group: fc.constantFrom('none', 'none', 'all', 'shuffled', 'subset'),
  groupPick: fc.nat(),
  badGroup: fc.constantFrom(...GROUP_BAD),
  style: fc.constantFrom('call', 'call', 'method', 'camel'),
  badName: fc.oneof(fc.constantFrom(...BAD_NAMES), fc.string({ maxLength: 12 })),
  seed: fc.nat(),
});
type Spec = typeof specArb extends fc.Arbitrary<infer S> ? S : never;

/** A value for the failure report: tensors by shape, typed arrays by length. */
function brief(x: unknown): string {
  if (ArrayBuffer.isView(x)) return `${x.constructor.name}(${(x as unknown as ArrayLike<number>).length})`;
  if (x && typeof x === 'object' && 'data' in x && 'shape' in x) {
    const t = x as Host;
    const extra = ['stride', 'offset', 'dtype']
      .filter((k) => k in t)
      .map((k) => ` ${k}=${fc.stringify(t[k])}`)
      .join('');
    return `{${brief(t.data)} shape=${fc.stringify(t.shape)}${extra}}`;
  }
  if (Array.isArray(x)) return `[${x.map(brief).join(', ')}]`;
  if (looksLikeKwargs(x))
    return `{${Object.keys(x as object)
      .map((k) => `${k}: ${brief((x as Host)[k])}`)
      .join(', ')}}`;
  return fc.stringify(x);
}

/** What fast-check prints for a spec: the call it makes and what it must give. */
function summary(spec: Spec): string {
  const b = build(spec);
  return `${spec.style}(${brief(b.name)}, ${b.args.map(brief).join(', ')}) on world ${b.world}; must fail for [${b.errors.join('; ')}]`;
}
const printableSpecArb = specArb.map((spec) =>
  Object.assign(spec, { [fc.toStringMethod]: () => summary(spec) }),
);

// ---- host tensors: logical C-order values, laid out in data as the spec says ----
type Host = Record<string, unknown>;
const contiguous = (shape: readonly number[]) => {
  const st = shape.map(() => 1);
  for (let i = shape.length - 2; i >= 0; i--) st[i] = st[i + 1]! * shape[i + 1]!;
  return st;
};

/** Writes `values` (C order of `shape`) into `data` at `offset` + Σ index·stride. */
function scatter(
  values: ArrayLike<number>,
  shape: number[],
  stride: number[],
  offset: number,
  data: { [i: number]: number },
) {
  const idx = shape.map(() => 0);
  for (let i = 0; i < values.length; i++) {
    data[offset + idx.reduce((a, x, ax) => a + x * stride[ax]!, 0)] = values[i]!;
    for (let a = shape.length - 1; a >= 0 && ++idx[a]! === shape[a]; a--) idx[a] = 0;
  }
}

function encodeData(
  values: Float32Array,
  dtype: string,
): { data: Float32Array | Uint16Array | Float64Array | Int32Array | number[]; tag?: string } {
  switch (dtype) {
    case 'f32':
      return { data: values };
    case 'bf16':
      return { data: fromFloat32(values, 'bfloat16'), tag: 'bfloat16' };
    case 'f16':
      return { data: fromFloat32(values, 'float16'), tag: 'float16' };
    case 'u16-untagged':
      return { data: fromFloat32(values, 'bfloat16') };
    case 'f32-tag-bf16':
      return { data: values, tag: 'bfloat16' };
    case 'u16-tag-f32':
      return { data: fromFloat32(values, 'bfloat16'), tag: 'float32' };
    case 'u16-tag-int8':
      return { data: fromFloat32(values, 'bfloat16'), tag: 'int8' };
    case 'f64':
      return { data: Float64Array.from(values) };
    case 'i32':
      return { data: Int32Array.from(values) };
    default:
      return { data: Array.from(values) };
  }
}

function layOut(
  values: Float32Array,
  shape: number[],
  layout: string,
  dtype: string,
  s: Spec,
): Host | unknown {
  const { data, tag } = encodeData(values, dtype);
  const make = (n: number) =>
    Array.isArray(data)
      ? new Array<number>(n).fill(0)
      : new (data.constructor as new (n: number) => typeof data)(n);
  const n = values.length,
    c = contiguous(shape);
  const host = (d: unknown, extra: Host = {}): Host => ({
    data: d,
    shape,
    ...(tag ? { dtype: tag } : {}),
    ...extra,
  });
  const view = (stride: number[], offset: number, size: number): Host => {
    const buf = make(size);
    scatter(data as ArrayLike<number>, shape, stride, offset, buf as { [i: number]: number });
    return host(buf, { stride, offset });
  };
  const longest = shape.indexOf(Math.max(...shape));
  switch (layout) {
    case 'dense':
      return host(data);
    case 'ndarray': {
      const nd = ndarray(data as Float32Array, shape);
      if (tag) Object.assign(nd, { dtype: tag });
      return nd;
    }
    case 'padded':
      return view(c, 3, n + 5);
    case 'reversed': {
      const stride = [...c];
      stride[longest] = -c[longest]!;
      return view(stride, (shape[longest]! - 1) * c[longest]!, n);
    }
    case 'transposed': {
      // axes 0 and 1 swapped in memory
      const phys = [shape[1]!, shape[0]!, ...shape.slice(2)],
        pc = contiguous(phys);
      return view([pc[1]!, pc[0]!, ...pc.slice(2)], 0, n);
    }
    case 'strided':
      return view(
        contiguous([...shape.slice(0, -1), 2 * shape[shape.length - 1]!]).map((x, i, a) =>
          i === a.length - 1 ? 2 : x,
        ),
        0,
        2 * n,
      );
    case 'long':
      return host(make(n + 1 + (s.seed % 1000)));
    case 'short':
      return host(make(Math.max(0, n - 1)));
    case 'stride-len':
      return host(data, { stride: c.slice(1) });
    case 'stride-frac':
      return host(data, { stride: c.map((x, i) => (i === 0 ? x + 0.5 : x)) });
    case 'offset-neg':
      return host(data, { offset: -1 });
    case 'offset-frac':
      return host(data, { offset: 0.5 });
    case 'offset-str':
      return host(data, { offset: '1' });
    case 'out-of-range':
      return host(make(n + 2), { stride: c, offset: 3 });
    case 'dim-bad':
      return host(data, { shape: shape.map((x, i) => (i === s.victim % shape.length ? s.badDim : x)) });
    default:
      return s.junk;
  }
}

// ---- building a call and what it must give ----
interface Built {
  name: unknown;
  args: unknown[];
  /** Why the call must fail; empty when it must succeed. */
  errors: string[];
  /** Reasons it may fail or succeed (a result must still match). */
  either: string[];
  ref?: () => {
    out: ArrayLike<number>;
    lse: ArrayLike<number>;
    outShape: number[];
    lseShape: number[];
    tol: number;
  };
  world: number;
}

const randomValues = (s: Spec, salt: number, n: number) => randn(rng(s.seed * 7 + salt), n);
const looksLikeKwargs = (x: unknown) =>
  !!x &&
  typeof x === 'object' &&
  !Array.isArray(x) &&
  [Object.prototype, null].includes(Object.getPrototypeOf(x));

function groupOf(s: Spec, errors: string[], single: boolean): { value: unknown; world: number } | null {
  const all = Array.from({ length: s.world }, (_, i) => i);
  if (s.broken.includes('group')) {
    errors.push(`group ${s.badGroup}`);
    const value = single
      ? all
      : {
          'out-of-range': [s.world],
          duplicate: [0, 0],
          empty: [],
          fraction: [0.5],
          string: 'all',
          object: { ranks: [0], key: 'g' },
          negative: [-1],
        }[s.badGroup];
    return { value, world: s.world };
  }
  if (single || s.group === 'none') return null;
  if (s.group === 'all') return { value: all, world: s.world };
  const shuffled = [...all].sort((a, b) => ((a * 7919 + s.groupPick) % 13) - ((b * 7919 + s.groupPick) % 13));
  if (s.group === 'shuffled') return { value: shuffled, world: s.world };
  const subset = shuffled.slice(0, 1 + (s.groupPick % s.world));
  return { value: subset, world: subset.length };
}

/** Sequence lengths of a valid varlen call: what every rank can split (ring, zigzag), or a total llama3 can. */
function seqLens(s: Spec, f: Family, world: number): number[] {
  const unit = f.varlen === 'seq' ? f.parts * world : 1;
  const lens = s.lens.map((x) => (x + 1) * unit);
  if (f.varlen === 'total') {
    const total = lens.reduce((a, b) => a + b, 0);
    if (total % world) lens.push(world - (total % world));
  }
  return lens;
}

/** What build() collects while it turns a spec into a call. */
interface Draft {
  s: Spec;
  f: Family;
  packing: Packing;
  /** The ring's ranks: the group's size, or the runtime's world. */
  world: number;
  options: Record<string, unknown>;
  /** Meaning of the valid options that change the result. */
  sem: Record<string, unknown>;
  errors: string[];
  either: string[];
}

function draftOptions(d: Draft): void {
  const { s, f } = d;
  for (const [key, o] of Object.entries(s.options)) {
    if (key === 'softcap' && !f.single) continue;
    const e = s.broken.includes('option') && key === s.badKey ? o.bad : o.present ? o.good : null;
    if (!e) continue;
    d.options[key] = e.v;
    if (e.ok) d.sem[key] = e.sem;
    else d.errors.push(`${key}=${fc.stringify(e.v)}`);
  }
  if (s.broken.includes('unknown-key')) {
    Object.defineProperty(d.options, s.unknownKey, {
      value: true,
      enumerable: true,
      writable: true,
      configurable: true,
    });
    d.errors.push(`unknown key ${s.unknownKey}`);
  }
  const group = groupOf(s, d.errors, !!f.single);
  if (group) [d.options.group, d.world] = [group.value, group.world];
}

type Dims = Record<'b' | 'sq' | 'sk' | 'h' | 'hk' | 'd' | 'kb' | 'kd' | 'kvAxis' | 'qkvAxis', number>;

/** Sizes of a valid call, then the spec's shape mutation (each one invalid). */
function draftDims(d: Draft, total: number): Dims & { rank: boolean; huge: boolean } {
  const { s, f, packing, world } = d;
  const dims: Dims & { rank: boolean; huge: boolean } = {
    b: s.b,
    sq: 0,
    sk: 0,
    h: s.h,
    hk: Math.max(1, s.h / s.hkDiv),
    d: s.d,
    kb: s.b,
    kd: s.d,
    kvAxis: 2,
    qkvAxis: 3,
    rank: false,
    huge: false,
  };
  if (packing === 'qkvpacked') dims.hk = dims.h;
  if (f.varlen) dims.sq = dims.sk = total;
  else if (f.single) [dims.sq, dims.sk] = [s.m * 4, packing === 'qkvpacked' ? s.m * 4 : s.mk];
  else dims.sq = dims.sk = f.parts * world * s.m;
  if (!s.broken.includes('shape')) return dims;
  const m = s.shapeMut,
    split = packing !== 'qkvpacked';
  d.errors.push(`shape ${m}`);
  if (m === 'heads' && split) [dims.h, dims.hk] = [3, 2];
  else if (m === 'head_dim' && split) dims.kd = 2 * dims.d;
  else if (m === 'batch' && split && !f.varlen) dims.kb = dims.b + 1;
  else if (m === 'seqlen' && split && !(f.single && !f.varlen)) dims.sk = dims.sq + f.parts * world;
  else if (m === 'indivisible' && !f.varlen && !f.single && f.parts * world > 1)
    dims.sq = dims.sk = dims.sq + 1;
  else if (m === 'd-too-big') dims.d = dims.kd = 264;
  else if (m === 'pack-axis' && packing !== 'func') [dims.kvAxis, dims.qkvAxis] = [3, 2];
  else if (m === 'rank') dims.rank = true;
  else if (m === 'huge-all') dims.huge = true;
  else dims.h = dims.hk = 0; // 'empty', and the mutations that do not apply to this packing
  return dims;
}

/** The tensor arguments of the packing over logical q, k, v, laid out as the spec says. */
function draftTensors(d: Draft, dims: Dims & { rank: boolean; huge: boolean }) {
  const { s, f, packing } = d;
  const lead = (batch: number) => (f.varlen ? [] : [batch]);
  const qShape = [...lead(dims.b), dims.sq, dims.h, dims.d],
    kShape = [...lead(dims.kb), dims.sk, dims.hk, dims.kd];
  const numel = (sh: number[]) => sh.reduce((a, b) => a * b, 1);
  const q = randomValues(s, 1, numel(qShape)),
    k = randomValues(s, 2, numel(kShape)),
    v = randomValues(s, 3, numel(kShape));
  const outer = f.varlen ? 1 : dims.b;
  const kv =
    dims.kvAxis === 2 && dims.kb === dims.b
      ? pack([k, v], outer, dims.sk, dims.hk, dims.kd)
      : randomValues(s, 4, numel(kShape) * dims.kvAxis);
  const qkv =
    dims.qkvAxis === 3
      ? pack([q, k, v], outer, dims.sq, dims.h, dims.d)
      : randomValues(s, 5, numel(qShape) * 2);
  const logical =
    packing === 'func'
      ? [
          { values: q, shape: qShape },
          { values: k, shape: kShape },
          { values: v, shape: kShape },
        ]
      : packing === 'kvpacked'
        ? [
            { values: q, shape: qShape },
            { values: kv, shape: [...lead(dims.kb), dims.sk, dims.kvAxis, dims.hk, dims.kd] },
          ]
        : [{ values: qkv, shape: [...lead(dims.b), dims.sq, dims.qkvAxis, dims.h, dims.d] }];
  if (dims.huge) for (const t of logical) t.shape[f.varlen ? 0 : 1] = 2 ** 31;
  const victim = s.victim % logical.length;
  if (dims.rank) logical[victim]!.shape.unshift(1);
  const broken = (a: Aspect, i: number) => s.broken.includes(a) && i === victim;
  const dtypes = logical.map((_, i) => (broken('dtype', i) ? s.badDtype : s.dtypes[i]!));
  if (s.broken.includes('dtype')) d.errors.push(`dtype ${s.badDtype} on tensor ${victim}`);
  const tensors = logical.map((t, i) =>
    layOut(t.values, t.shape, broken('layout', i) ? s.badLayout : s.layouts[i]!, dtypes[i]!, s),
  );
  if (s.broken.includes('layout')) {
    d.errors.push(`layout ${s.badLayout} on tensor ${victim}`);
    if (s.badLayout === 'missing') tensors.pop();
  }
  return { q, k, v, tensors, dtypes };
}

/** cu_seqlens and max_seqlen (as keywords; the positional split may move them); returns the cu_seqlens a success used. */
function draftVarlen(d: Draft, lens: number[]): number[] {
  const { s, f, packing, world } = d;
  const total = lens.reduce((a, b) => a + b, 0);
  let cu = [0];
  for (const len of lens) cu.push(cu[cu.length - 1]! + len);
  let value: unknown = Int32Array.from(cu);
  if (s.broken.includes('cu')) {
    const m = s.cuMut;
    // A length-1 sequence only breaks the families that split every sequence over the ranks.
    const splitsSeqs = f.varlen === 'seq' && f.parts * world > 1;
    if (m === 'zero-length' || (m === 'indivisible' && !splitsSeqs && total === 1))
      d.either.push(`cu_seqlens ${m}`);
    else if (m !== 'indivisible' || splitsSeqs) d.errors.push(`cu_seqlens ${m}`);
    if (m === 'unsorted') cu = [0, total, 0, total];
    else if (m === 'not-zero') cu = [1, ...cu.slice(1)];
    else if (m === 'not-total') cu = [...cu.slice(0, -1), total + 1];
    else if (m === 'one-entry') cu = [0];
    else if (m === 'zero-length') cu = [0, ...cu];
    else if (m === 'indivisible') cu = [0, 1, total];
    const typed: Record<string, unknown> = {
      float32: Float32Array.from(cu),
      array: cu,
      uint32: Uint32Array.from(cu),
      bigint: BigInt64Array.from(cu.map(BigInt)),
      null: null,
      'nd-long': { data: Int32Array.from([...cu, 7]), shape: [cu.length] },
      'nd-2d': ndarray(Int32Array.from(cu), [1, cu.length]),
    };
    value = m in typed ? typed[m] : Int32Array.from(cu);
  } else if (s.cu === 'ndarray') value = ndarray(Int32Array.from(cu), [cu.length]);
  else if (s.cu === 'nd-view') value = ndarray(Int32Array.from([-5, ...cu, 99]), [cu.length], [1], 1);
  const longest = Math.max(0, ...cu.slice(1).map((x, i) => x - cu[i]!));
  let max: unknown = longest + s.maxExtra;
  if (s.broken.includes('max')) {
    d.errors.push(`max_seqlen ${String(s.maxMut)}`);
    max = s.maxMut === 'small' ? longest - 1 : s.maxMut === 'missing' ? undefined : s.maxMut;
  }
  const [cuKeys, maxKeys] =
    f.varlen === 'single' && packing !== 'qkvpacked'
      ? [
          ['cu_seqlens_q', 'cu_seqlens_k'],
          ['max_seqlen_q', 'max_seqlen_k'],
        ]
      : [['cu_seqlens'], ['max_seqlen']];
  for (const key of cuKeys) d.options[key] = value;
  if (max !== undefined) for (const key of maxKeys) d.options[key] = max;
  return cu;
}

/** The arguments after the tensors: the first `split` Python parameters by position, the rest as keywords. */
function pythonTail(d: Draft): unknown[] {
  const { s, options } = d;
  const positional = positionalOf(d.f, d.packing);
  const tail = positional.slice(0, Math.min(s.split, positional.length)).map((key) => {
    const has = Object.prototype.hasOwnProperty.call(options, key);
    const value = has ? options[key] : s.defaults ? DEFAULTS[key] : undefined;
    delete options[key];
    return value;
  });
  if (s.broken.includes('positional')) {
    d.errors.push(`positional ${s.positionalMut}`);
    if (s.positionalMut === 'too-many') {
      while (tail.length < positional.length) tail.push(DEFAULTS[positional[tail.length]!]);
      tail.push(0);
    } else {
      if (tail.length === 0 || tail[0] === undefined) tail[0] = DEFAULTS[positional[0]!] ?? 0;
      options[positional[0]!] = tail[0];
    }
  }
  // A trailing plain object would be read as the keywords: then the keywords follow it, even empty.
  if (Object.keys(options).length > 0 || looksLikeKwargs(tail[tail.length - 1]) || s.defaults)
    tail.push(options);
  return tail;
}

function build(s: Spec): Built {
  const f = FAMILIES[s.family]!,
    packing = s.packing;
  const d: Draft = { s, f, packing, world: s.world, options: {}, sem: {}, errors: [], either: [] };
  draftOptions(d);
  const lens = f.varlen ? seqLens(s, f, d.world) : [];
  const total = lens.reduce((a, b) => a + b, 0);
  const dims = draftDims(d, total);
  if (f.varlen === 'total') {
    const stride = s.headsKStride === 'hk' ? dims.hk : s.headsKStride;
    d.options.heads_k_stride = stride;
    if (!(Number.isInteger(stride) && (stride as number) >= 1 && dims.hk % (stride as number) === 0))
      d.errors.push(`heads_k_stride ${fc.stringify(stride)}`);
  }
  const { q, k, v, tensors, dtypes } = draftTensors(d, dims);
  const cu = f.varlen ? draftVarlen(d, lens) : [];
  if (s.broken.includes('odd-option')) {
    d.options[s.badKey] = s.odd;
    d.errors.push(`odd ${s.badKey}`);
  }
  const tail = pythonTail(d);
  if (s.broken.includes('name')) d.errors.push(`name ${fc.stringify(s.badName)}`);
  const built: Built = {
    name: s.broken.includes('name') ? s.badName : fnName(f, packing),
    args: [...tensors, ...tail],
    errors: d.errors,
    either: d.either,
    world: s.world,
  };
  if (d.errors.length) return built;

  // What a success must equal: the inputs rounded through their own dtype, then the compute dtype.
  const own = dtypes.map((x) => (x === 'bf16' ? 'bfloat16' : x === 'f16' ? 'float16' : 'float32') as DType);
  const compute = (d.sem.dtype as DType | undefined) ?? own[0]!;
  const ownOf = (i: number) =>
    own[packing === 'qkvpacked' ? 0 : packing === 'kvpacked' ? Math.min(i, 1) : i]!;
  const round = (x: Float32Array, i: number) => roundThrough(roundThrough(x, ownOf(i)), compute);
  const scale = (d.sem.softmax_scale as number | null | undefined) ?? 1 / Math.sqrt(dims.d);
  const causal = (d.sem.causal as boolean | undefined) ?? false;
  const tol = compute === 'float32' ? 1e-5 : 2e-2;
  built.ref = () => {
    const [rq, rk, rv] = [round(q, 0), round(k, 1), round(v, 2)];
    if (f.varlen) {
      const r = varlenReference(
        { q: rq, k: rk, v: rv, cu, h: dims.h, hk: dims.hk, d: dims.d, scale, causal },
        new Float32Array(q.length),
      );
      return { out: r.out, lse: r.lse, outShape: [total, dims.h, dims.d], lseShape: [dims.h, total], tol };
    }
    const r = referenceForward({
      q: rq,
      k: rk,
      v: rv,
      b: dims.b,
      sq: dims.sq,
      sk: dims.sk,
      h: dims.h,
      hk: dims.hk,
      d: dims.d,
      scale,
      causal,
    });
    return {
      out: r.out,
      lse: r.lse,
      outShape: [dims.b, dims.sq, dims.h, dims.d],
      lseShape: [dims.b, dims.h, dims.sq],
      tol,
    };
  };
  return built;
}

// ---- running a case ----
function invoke(rt: RingRuntime, s: Spec, b: Built): Promise<DriverResult> {
  const loose = rt as unknown as Record<string, (...a: unknown[]) => Promise<DriverResult>>;
  if (typeof b.name === 'string' && s.style !== 'call' && !s.broken.includes('name')) {
    const key =
      s.style === 'camel' ? b.name.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase()) : b.name;
    return loose[key]!.call(rt, ...b.args);
  }
  return (rt.call as (...a: unknown[]) => Promise<DriverResult>).call(rt, b.name, ...b.args);
}

async function deadline<T>(p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`hang: no answer after ${HANG_MS} ms`)), HANG_MS);
  });
  try {
    return await Promise.race([p, hang]);
  } finally {
    clearTimeout(timer);
  }
}

const stats = { cases: 0, errors: 0, results: 0, byCode: {} as Record<string, number> };

async function check(rts: Runtimes, s: Spec): Promise<void> {
  stats.cases++;
  const b = build(s);
  const rt = await rts.get(b.world);
  let r: DriverResult;
  try {
    r = await deadline(invoke(rt, s, b));
  } catch (e) {
    const why = `must fail for [${b.errors.join('; ')}], may for [${b.either.join('; ')}]`;
    if (!(e instanceof RingFlashAttnError))
      throw new Error(
        `untyped ${(e as Error)?.name}: ${(e as Error)?.message} (${why})\n${(e as Error)?.stack}`,
      );
    if (!CODES.has(e.code) || !e.message)
      throw new Error(`code ${e.code} "${e.message}" (${why})\n${e.stack}`);
    if (b.errors.length === 0 && b.either.length === 0)
      throw new Error(`a valid call failed: ${e.code} ${e.message}\n${e.stack}`);
    stats.errors++;
    stats.byCode[e.code] = (stats.byCode[e.code] ?? 0) + 1;
    return;
  }
  try {
    if (b.errors.length) throw new Error(`succeeded although it must fail for [${b.errors.join('; ')}]`);
    const ref = b.ref!();
    assert.equal(r.out.shape, ref.outShape, 'out shape');
    assert.equal(r.lse.shape, ref.lseShape, 'lse shape');
    const [eo, el] = [relL2(r.out.data, ref.out), relL2(r.lse.data, ref.lse)];
    if (!(eo <= ref.tol && el <= ref.tol))
      throw new Error(`result differs from the fp64 reference: out ${eo}, lse ${el} (tolerance ${ref.tol})`);
    stats.results++;
  } finally {
    await r.dispose();
  }
}

const s = suite('fuzz');
const rts = new Runtimes();
s.after(() => rts.close());

s(
  `driver mode answers ${RUNS} random calls with a typed error or the reference result (seed ${SEED})`,
  async () => {
    console.log(`fuzz: FUZZ_SEED=${SEED} FUZZ_RUNS=${RUNS}${PATH ? ` FUZZ_PATH=${PATH}` : ''}`);
    const t0 = Date.now();
    try {
      await fc.assert(
        fc.asyncProperty(printableSpecArb, (spec) => check(rts, spec)),
        { seed: SEED, numRuns: RUNS, includeErrorInReport: true, ...(PATH ? { path: PATH } : {}) },
      );
    } catch (e) {
      // fast-check's report carries the seed, the path and the shrunk spec: make it the failure.
      const path = /path: "([^"]*)"/.exec((e as Error).message)?.[1] ?? '<path above>';
      assert.unreachable(
        `${(e as Error).message}\nreproduce: FUZZ_SEED=${SEED} FUZZ_PATH=${path} node dist/test/fuzz.test.js`,
      );
    }
    console.log(
      `fuzz: ${stats.cases} cases (${stats.results} results checked, ${stats.errors} typed errors ${JSON.stringify(stats.byCode)}) in ${((Date.now() - t0) / 1000).toFixed(1)} s`,
    );
    assert.ok(stats.results >= RUNS / 20, `only ${stats.results} of ${RUNS} cases reached a result`);
  },
);

s('every runtime answers a good call afterwards', async () => {
  const before = stats.results;
  for (const world of [1, 2, 3, 4]) {
    const [spec] = fc.sample(specArb, { seed: world, numRuns: 1 });
    await check(rts, { ...spec!, world, family: 0, packing: 'func', broken: [] });
  }
  assert.is(stats.results - before, 4);
});

s.run();

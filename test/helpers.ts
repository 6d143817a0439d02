import ndarray from 'ndarray';
import { suite, type Test } from 'uvu';
import * as assert from 'uvu/assert';
import { RingFlashAttnError } from '../runtime/errors.js';
import { init, type DriverResult, type FuncGrads, type RingRuntime } from '../api/index.js';
import type { InitOptions } from '../runtime/pool.js';
import type { Dims } from './reference.js';
import { roundThrough, type DType } from '../runtime/dtype.js';

/** Deterministic uniform generator, so failures reproduce. */
export { seededUniform as rng } from '../runtime/random.js';

/** Fresh random values in [-1, 1). */
export function randn(rand: () => number, n: number): Float32Array {
  // A plain loop: Float32Array.from over an array-like takes ~100 ns per element.
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = rand() * 2 - 1;
  return x;
}

export function nd(data: Float32Array, shape: number[]) {
  return ndarray(data, shape);
}

/** An ndarray of `shape` holding fresh random values. */
export function randomNd(rand: () => number, shape: number[]) {
  return nd(
    randn(
      rand,
      shape.reduce((a, b) => a * b, 1),
    ),
    shape,
  );
}

/** A runtime opened before the suite's first test and closed after its last; call the getter inside tests. */
export function suiteRuntime(s: Test, options: InitOptions): () => RingRuntime {
  let rt: RingRuntime | undefined;
  s.before(async () => {
    rt = await init(options);
  });
  s.after(async () => {
    await rt?.close();
  });
  return () => rt!;
}

/** A family's three names: `${prefix}_func`, `${prefix}_kvpacked_func` and `${prefix}_qkvpacked_func`. */
export function familyNames<P extends string>(prefix: P) {
  return {
    func: `${prefix}_func`,
    kvpacked: `${prefix}_kvpacked_func`,
    qkvpacked: `${prefix}_qkvpacked_func`,
  } as const;
}

/** Random q, k, v and dout of a dense call of shape `c`, drawn in that order. */
export function denseInputs(rand: () => number, c: Dims) {
  return {
    q: randn(rand, c.b * c.sq * c.h * c.d),
    k: randn(rand, c.b * c.sk * c.hk * c.d),
    v: randn(rand, c.b * c.sk * c.hk * c.d),
    dout: randn(rand, c.b * c.sq * c.h * c.d),
  };
}

/** Calls the q, k, v function `name` in driver mode, then backward with dout; the result is disposed. */
export async function callFunc(
  rt: RingRuntime,
  name: string,
  c: Dims,
  t: { q: Float32Array; k: Float32Array; v: Float32Array; dout: Float32Array },
  opts: Record<string, unknown>,
) {
  const call = rt.call.bind(rt) as (n: string, ...a: unknown[]) => Promise<DriverResult<FuncGrads>>;
  const r = await call(
    name,
    nd(t.q, [c.b, c.sq, c.h, c.d]),
    nd(t.k, [c.b, c.sk, c.hk, c.d]),
    nd(t.v, [c.b, c.sk, c.hk, c.d]),
    opts,
  );
  const g = await r.backward(nd(t.dout, [c.b, c.sq, c.h, c.d]));
  await r.dispose();
  return { out: r.out.data, lse: r.lse.data, dq: g.dq.data, dk: g.dk.data, dv: g.dv.data };
}

/** ‖x − ref‖ / ‖ref‖ (finite inputs; NaN anywhere gives NaN). */
export function relL2(x: ArrayLike<number>, ref: ArrayLike<number>): number {
  if (x.length !== ref.length) throw new Error(`relL2: length ${x.length} vs ${ref.length}`);
  let num = 0,
    den = 0;
  for (let i = 0; i < x.length; i++) {
    const a = x[i]!,
      r = ref[i]!;
    if (!Number.isFinite(r) && a === r) continue; // matching infinities (lse of empty rows)
    num += (a - r) ** 2;
    den += r * r;
  }
  return Math.sqrt(num / den);
}

export function maxAbs(x: ArrayLike<number>, ref: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < x.length; i++) {
    const a = x[i]!,
      r = ref[i]!;
    if (!Number.isFinite(r) && a === r) continue;
    m = Math.max(m, Math.abs(a - r));
    if (Number.isNaN(a)) return NaN;
  }
  return m;
}

/** Values as the compute dtype sees them. */
export function rounded(x: Float32Array, dtype: DType): Float32Array {
  return roundThrough(x, dtype);
}

/** Packs (b, s, h, d) tensors along a new axis 2: kv (b, s, 2, h, d) / qkv (b, s, 3, h, d). */
export function pack(parts: Float32Array[], b: number, s: number, h: number, d: number): Float32Array {
  const n = parts.length;
  const out = new Float32Array(b * s * n * h * d);
  for (let bi = 0; bi < b; bi++)
    for (let i = 0; i < s; i++)
      parts.forEach((p, j) => {
        const src = (bi * s + i) * h * d;
        out.set(p.subarray(src, src + h * d), ((bi * s + i) * n + j) * h * d);
      });
  return out;
}

/** Inverse of pack: part j of a (b, s, n, h, d) tensor. */
export function unpack(
  x: ArrayLike<number>,
  j: number,
  n: number,
  b: number,
  s: number,
  h: number,
  d: number,
): Float64Array {
  const out = new Float64Array(b * s * h * d);
  for (let bi = 0; bi < b; bi++)
    for (let i = 0; i < s; i++)
      for (let c = 0; c < h * d; c++) out[(bi * s + i) * h * d + c] = x[((bi * s + i) * n + j) * h * d + c]!;
  return out;
}

/** Awaits `run` and asserts a RingFlashAttnError with `code` and a message matching `fragment`. */
export async function expectError(
  run: () => Promise<unknown> | unknown,
  code: string,
  fragment: RegExp,
): Promise<void> {
  try {
    await run();
  } catch (e) {
    assert.instance(e, RingFlashAttnError, String(e));
    assert.is((e as RingFlashAttnError).code, code, (e as Error).message);
    assert.match((e as Error).message, fragment, `${(e as Error).message}\ndoes not match ${fragment}`);
    return;
  }
  assert.unreachable(`expected ${code}`);
}

/** CPU runtimes by world size, created on first use and closed together (a suite's `after`). */
export class Runtimes {
  private readonly byWorld = new Map<number, Promise<RingRuntime>>();

  get(world: number): Promise<RingRuntime> {
    if (!this.byWorld.has(world)) this.byWorld.set(world, init({ backend: 'cpu', world }));
    return this.byWorld.get(world)!;
  }

  async close(): Promise<void> {
    for (const rt of this.byWorld.values()) await (await rt).close();
  }
}

/**
 * A family's suite and its CPU runtimes, closed after the suite. Outputs are poisoned first: the
 * workers start later and inherit it, so an element no kernel wrote reads NaN.
 */
export function poisonedSuite(name: string): { s: Test; rts: Runtimes } {
  process.env.RFA_POISON = '1';
  const s = suite(name);
  const rts = new Runtimes();
  s.after(() => rts.close());
  return { s, rts };
}

/** What fixtures' sendPackedKv receives from rank `from`: its k (j = 1) or v (j = 2) rows, contiguous. */
export function packedKvSlice(from: number, j: 1 | 2): Float32Array {
  const out: number[] = [];
  for (let b = 0; b < 2; b++)
    for (let s = 0; s < 5; s++)
      for (let i = 0; i < 8; i++) out.push(from * 1000 + ((b * 5 + s) * 3 + j) * 8 + i);
  return Float32Array.from(out);
}

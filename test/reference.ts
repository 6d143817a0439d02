// An independent fp64 attention, forward and backward, written naively from the definitions:
//   S = scale · Q Kᵀ, then softcap · tanh(S / softcap), plus the ALiBi bias; masked by causality
//   and the window, bottom-right aligned (query i sees key j iff i + sk − sq − left ≤ j ≤ i + sk − sq + right)
//   P = softmax(S), lse = log Σ exp S, O = (P ∘ Z) V with Z the dropout factors (0 or 1/(1 − p))
//   dV = (P ∘ Z)ᵀ dO, dP = dO Vᵀ, dS = P ∘ (Z ∘ dP − rowsum(dO ∘ O)) ∘ S′, dQ = dS K, dK = dSᵀ Q
// with S′ the derivative of the score in q·k (scale, and softcap's 1 − tanh²).
// Tensors are dense C-order (b, s, h, d); k/v have h_k heads (GQA: head h uses h / (h / h_k)).
import { dropoutKeeps } from './philox_reference.js';

/** The shape of a dense call: q (b, sq, h, d), k and v (b, sk, hk, d). */
export interface Dims {
  b: number;
  sq: number;
  sk: number;
  h: number;
  hk: number;
  d: number;
}

/** What shapes the scores, dense or varlen. */
export interface RefScores {
  scale: number;
  causal: boolean;
  /** flash-attn's window_size; -1 unbounded (causal makes right 0). */
  window?: readonly [number, number];
  softcap?: number;
  /** (h) or (b, h) slopes, C order; varlen's b is the sequence. */
  alibi?: { slopes: ArrayLike<number>; perBatch: boolean };
}

export interface RefInput extends Dims, RefScores {
  q: Float64Array | Float32Array;
  k: Float64Array | Float32Array;
  v: Float64Array | Float32Array;
  /**
   * Dropout with the kernels' generator: element (b, h, i, j) of a dense call; a packed varlen
   * sequence draws as batch 0 at token indices qTok + i and kTok + j.
   */
  dropout?: { p: number; seed: number; qTok?: number; kTok?: number; seqIndex?: number };
}

/** The input for q, k, v of a dense call of shape `c`, at the default scale 1/√d unless `scale` says. */
export function refInputOf(
  c: Dims & { causal: boolean },
  t: { q: Float32Array; k: Float32Array; v: Float32Array },
  scale = 1 / Math.sqrt(c.d),
): RefInput {
  const { b, sq, sk, h, hk, d, causal } = c;
  return { q: t.q, k: t.k, v: t.v, b, sq, sk, h, hk, d, scale, causal };
}

export interface RefOutput {
  out: Float64Array; // (b, sq, h, d)
  lse: Float64Array; // (b, h, sq)
}

const at = (s: number, h: number, d: number) => (bi: number, i: number, hi: number) =>
  ((bi * s + i) * h + hi) * d;

interface RowProbs {
  p: Float64Array; // softmax over the visible keys, 0 elsewhere
  z: Float64Array; // dropout factor per key
  ds: Float64Array; // d(score)/d(q·k) per key
  lse: number;
}

function probs(x: RefInput, bi: number, hi: number, i: number): RowProbs {
  const { d, sq, sk, h, hk } = x;
  const qa = at(sq, h, d),
    ka = at(sk, hk, d);
  const kh = Math.floor(hi / (h / hk));
  const diag = sk - sq;
  const left = x.window?.[0] ?? -1;
  const right = x.causal ? 0 : (x.window?.[1] ?? -1);
  const sees = (j: number) => (left < 0 || j >= i + diag - left) && (right < 0 || j <= i + diag + right);
  const slope = x.alibi ? Number(x.alibi.slopes[(x.alibi.perBatch ? bi * h : 0) + hi]) : 0;
  const p = new Float64Array(sk).fill(-Infinity);
  const ds = new Float64Array(sk);
  let max = -Infinity;
  for (let j = 0; j < sk; j++) {
    if (!sees(j)) continue;
    let dot = 0;
    for (let c = 0; c < d; c++) dot += x.q[qa(bi, i, hi) + c]! * x.k[ka(bi, j, kh) + c]!;
    let s = dot * x.scale;
    ds[j] = x.scale;
    if (x.softcap) {
      const t = Math.tanh(s / x.softcap);
      s = x.softcap * t;
      ds[j] = x.scale * (1 - t * t);
    }
    // flash-attn's causal form of the bias (slope · j) where the mask is purely causal.
    if (x.alibi) s += left < 0 && right === 0 ? slope * j : -slope * Math.abs(i + diag - j);
    p[j] = s;
    max = Math.max(max, s);
  }
  let sum = 0;
  for (let j = 0; j < sk; j++) if (p[j]! > -Infinity) sum += Math.exp(p[j]! - max);
  for (let j = 0; j < sk; j++) p[j] = p[j]! > -Infinity ? Math.exp(p[j]! - max) / sum : 0;
  const z = new Float64Array(sk).fill(1);
  const dr = x.dropout;
  if (dr && dr.p > 0) {
    const varlen = dr.qTok !== undefined;
    const keep = dropoutKeeps(
      dr.seed,
      dr.p,
      varlen ? 0 : bi,
      hi,
      varlen ? dr.qTok! + i : i,
      varlen ? dr.kTok! : 0,
      sk,
    );
    for (let j = 0; j < sk; j++) z[j] = keep[j] ? 1 / (1 - Math.fround(dr.p)) : 0;
  }
  return { p, z, ds, lse: max === -Infinity ? -Infinity : max + Math.log(sum) };
}

/**
 * Visits every query row (batch bi, head hi, row i) with its probabilities, the offset of its q/out
 * row, the offset of key j's k/v row for its head, and its lse index.
 */
function forEachRow(
  x: RefInput,
  visit: (r: RowProbs, qi: number, kAt: (j: number) => number, lseAt: number) => void,
): void {
  const { b, sq, sk, h, hk, d } = x;
  const qa = at(sq, h, d),
    ka = at(sk, hk, d);
  for (let bi = 0; bi < b; bi++)
    for (let hi = 0; hi < h; hi++) {
      const kh = Math.floor(hi / (h / hk));
      for (let i = 0; i < sq; i++)
        visit(probs(x, bi, hi, i), qa(bi, i, hi), (j) => ka(bi, j, kh), (bi * h + hi) * sq + i);
    }
}

export function referenceForward(x: RefInput): RefOutput {
  const { b, sq, sk, h, d } = x;
  const out = new Float64Array(b * sq * h * d);
  const lse = new Float64Array(b * h * sq);
  forEachRow(x, (r, qi, kAt, lseAt) => {
    lse[lseAt] = r.lse;
    for (let j = 0; j < sk; j++) {
      const w = r.p[j]! * r.z[j]!;
      if (w !== 0) for (let c = 0; c < d; c++) out[qi + c]! += w * x.v[kAt(j) + c]!;
    }
  });
  return { out, lse };
}

export function referenceBackward(
  x: RefInput,
  dout: Float64Array | Float32Array,
): { dq: Float64Array; dk: Float64Array; dv: Float64Array } {
  const { b, sq, sk, h, hk, d } = x;
  const { out } = referenceForward(x);
  const dq = new Float64Array(b * sq * h * d);
  const dk = new Float64Array(b * sk * hk * d);
  const dv = new Float64Array(b * sk * hk * d);
  forEachRow(x, (r, qi, kAt) => {
    let D = 0;
    for (let c = 0; c < d; c++) D += dout[qi + c]! * out[qi + c]!;
    for (let j = 0; j < sk; j++) {
      if (r.p[j] === 0) continue;
      const kj = kAt(j);
      let dp = 0;
      for (let c = 0; c < d; c++) dp += dout[qi + c]! * x.v[kj + c]!;
      const ds = r.p[j]! * (r.z[j]! * dp - D) * r.ds[j]!;
      const pz = r.p[j]! * r.z[j]!;
      for (let c = 0; c < d; c++) {
        dv[kj + c]! += pz * dout[qi + c]!;
        dq[qi + c]! += ds * x.k[kj + c]!;
        dk[kj + c]! += ds * x.q[qi + c]!;
      }
    }
  });
  return { dq, dk, dv };
}

const memo = new Map<string, unknown>();

/**
 * `compute()` once per `key` (which must name the inputs: seed, shapes, mask, scale, dtype): the
 * GPU suites compare every ring variant of a case with one set of inputs, and the fp64
 * reference costs far more than the calls it checks. Keeps the last 16.
 */
export function memoReference<T>(key: string, compute: () => T): T {
  if (!memo.has(key)) {
    if (memo.size >= 16) memo.delete(memo.keys().next().value!);
    memo.set(key, compute());
  }
  return memo.get(key) as T;
}

// An independent fp64 attention, forward and backward, written naively from the definitions:
//   S = scale · Q Kᵀ (masked: causal bottom-right aligned), P = softmax(S), O = P V, lse = log Σ exp S
//   dV = Pᵀ dO, dP = dO Vᵀ, dS = P ∘ (dP − rowsum(dO ∘ O)), dQ = scale · dS K, dK = scale · dSᵀ Q
// Tensors are dense C-order (b, s, h, d); k/v have h_k heads (GQA: head h uses h / (h / h_k)).
export interface RefInput {
  q: Float64Array | Float32Array;
  k: Float64Array | Float32Array;
  v: Float64Array | Float32Array;
  b: number;
  sq: number;
  sk: number;
  h: number;
  hk: number;
  d: number;
  scale: number;
  causal: boolean;
}

export interface RefOutput {
  out: Float64Array; // (b, sq, h, d)
  lse: Float64Array; // (b, h, sq)
}

const at = (s: number, h: number, d: number) => (bi: number, i: number, hi: number) =>
  ((bi * s + i) * h + hi) * d;

function probs(
  x: RefInput,
  bi: number,
  hi: number,
  i: number,
): { p: Float64Array; lse: number; last: number } {
  const { d, sq, sk, h, hk } = x;
  const qa = at(sq, h, d),
    ka = at(sk, hk, d);
  const kh = Math.floor(hi / (h / hk));
  const last = x.causal ? Math.min(sk - 1, i + sk - sq) : sk - 1;
  const p = new Float64Array(sk);
  let max = -Infinity;
  for (let j = 0; j <= last; j++) {
    let dot = 0;
    for (let c = 0; c < d; c++) dot += x.q[qa(bi, i, hi) + c]! * x.k[ka(bi, j, kh) + c]!;
    p[j] = dot * x.scale;
    max = Math.max(max, p[j]!);
  }
  let sum = 0;
  for (let j = 0; j <= last; j++) sum += Math.exp(p[j]! - max);
  for (let j = 0; j <= last; j++) p[j] = Math.exp(p[j]! - max) / sum;
  return { p, lse: last < 0 ? -Infinity : max + Math.log(sum), last };
}

export function referenceForward(x: RefInput): RefOutput {
  const { b, sq, sk, h, hk, d } = x;
  const out = new Float64Array(b * sq * h * d);
  const lse = new Float64Array(b * h * sq);
  const qa = at(sq, h, d),
    ka = at(sk, hk, d);
  for (let bi = 0; bi < b; bi++)
    for (let hi = 0; hi < h; hi++) {
      const kh = Math.floor(hi / (h / hk));
      for (let i = 0; i < sq; i++) {
        const r = probs(x, bi, hi, i);
        lse[(bi * h + hi) * sq + i] = r.lse;
        for (let j = 0; j <= r.last; j++)
          for (let c = 0; c < d; c++) out[qa(bi, i, hi) + c]! += r.p[j]! * x.v[ka(bi, j, kh) + c]!;
      }
    }
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
  const qa = at(sq, h, d),
    ka = at(sk, hk, d);
  for (let bi = 0; bi < b; bi++)
    for (let hi = 0; hi < h; hi++) {
      const kh = Math.floor(hi / (h / hk));
      for (let i = 0; i < sq; i++) {
        const r = probs(x, bi, hi, i);
        const qi = qa(bi, i, hi);
        let D = 0;
        for (let c = 0; c < d; c++) D += dout[qi + c]! * out[qi + c]!;
        for (let j = 0; j <= r.last; j++) {
          const kj = ka(bi, j, kh);
          let dp = 0;
          for (let c = 0; c < d; c++) dp += dout[qi + c]! * x.v[kj + c]!;
          const ds = r.p[j]! * (dp - D) * x.scale;
          for (let c = 0; c < d; c++) {
            dv[kj + c]! += r.p[j]! * dout[qi + c]!;
            dq[qi + c]! += ds * x.k[kj + c]!;
            dk[kj + c]! += ds * x.q[qi + c]!;
          }
        }
      }
    }
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

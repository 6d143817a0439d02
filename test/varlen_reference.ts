// The fp64 reference (test/reference.ts) applied per packed sequence: tensors (total, h, d),
// lse (h, total). Attention never crosses a sequence boundary; causal is per sequence.
import { referenceBackward, referenceForward, type RefInput, type RefScores } from './reference.js';

export interface VarlenRefInput extends RefScores {
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  /** Global cu_seqlens. */
  cu: readonly number[];
  h: number;
  hk: number;
  d: number;
  /** Dropout draws at packed token indices (the sequence's own rows). */
  dropout?: { p: number; seed: number };
}

export interface VarlenRef {
  out: Float64Array; // (total, h, d)
  lse: Float64Array; // (h, total)
  dq: Float64Array;
  dk: Float64Array;
  dv: Float64Array;
}

export function varlenReference(x: VarlenRefInput, dout: Float32Array): VarlenRef {
  const { cu, h, hk, d } = x;
  const total = cu[cu.length - 1]!;
  const r: VarlenRef = {
    out: new Float64Array(total * h * d),
    lse: new Float64Array(h * total),
    dq: new Float64Array(total * h * d),
    dk: new Float64Array(total * hk * d),
    dv: new Float64Array(total * hk * d),
  };
  for (let i = 0; i + 1 < cu.length; i++) {
    const [a, len] = [cu[i]!, cu[i + 1]! - cu[i]!];
    if (len === 0) continue;
    const rows = (t: Float32Array, heads: number) => t.subarray(a * heads * d, (a + len) * heads * d);
    const alibi = x.alibi && {
      slopes: x.alibi.perBatch ? Array.from(x.alibi.slopes).slice(i * h, (i + 1) * h) : x.alibi.slopes,
      perBatch: false,
    };
    const seq: RefInput = {
      window: x.window,
      softcap: x.softcap,
      alibi,
      dropout: x.dropout && { ...x.dropout, qTok: a, kTok: a },
      q: rows(x.q, h),
      k: rows(x.k, hk),
      v: rows(x.v, hk),
      b: 1,
      sq: len,
      sk: len,
      h,
      hk,
      d,
      scale: x.scale,
      causal: x.causal,
    };
    const f = referenceForward(seq);
    const g = referenceBackward(seq, rows(dout, h));
    r.out.set(f.out, a * h * d);
    r.dq.set(g.dq, a * h * d);
    r.dk.set(g.dk, a * hk * d);
    r.dv.set(g.dv, a * hk * d);
    for (let hi = 0; hi < h; hi++) r.lse.set(f.lse.subarray(hi * len, (hi + 1) * len), hi * total + a);
  }
  return r;
}

// The fp64 reference (test/reference.ts) applied per packed sequence: tensors (total, h, d),
// lse (h, total). Attention never crosses a sequence boundary; causal is per sequence, aligned
// bottom-right where a sequence's keys and queries differ in length.
import { referenceBackward, referenceForward, type RefInput, type RefScores } from './reference.js';

export interface VarlenRefInput extends RefScores {
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  /** Global cu_seqlens. */
  cu: readonly number[];
  /** The keys' own cu_seqlens where they differ from the queries' (flash_attn_varlen_func). */
  cuK?: readonly number[];
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
  const cuK = x.cuK ?? cu;
  const [tq, tk] = [cu[cu.length - 1]!, cuK[cuK.length - 1]!];
  const r: VarlenRef = {
    out: new Float64Array(tq * h * d),
    lse: new Float64Array(h * tq),
    dq: new Float64Array(tq * h * d),
    dk: new Float64Array(tk * hk * d),
    dv: new Float64Array(tk * hk * d),
  };
  for (let i = 0; i + 1 < cu.length; i++) {
    const [q0, sq, k0, sk] = [cu[i]!, cu[i + 1]! - cu[i]!, cuK[i]!, cuK[i + 1]! - cuK[i]!];
    if (sq === 0) continue;
    const rows = (t: Float32Array, at: number, len: number, heads: number) =>
      t.subarray(at * heads * d, (at + len) * heads * d);
    const alibi = x.alibi && {
      slopes: x.alibi.perBatch ? Array.from(x.alibi.slopes).slice(i * h, (i + 1) * h) : x.alibi.slopes,
      perBatch: false,
    };
    const seq: RefInput = {
      window: x.window,
      softcap: x.softcap,
      alibi,
      dropout: x.dropout && { ...x.dropout, qTok: q0, kTok: k0 },
      q: rows(x.q, q0, sq, h),
      k: rows(x.k, k0, sk, hk),
      v: rows(x.v, k0, sk, hk),
      b: 1,
      sq,
      sk,
      h,
      hk,
      d,
      scale: x.scale,
      causal: x.causal,
    };
    const f = referenceForward(seq);
    const g = referenceBackward(seq, rows(dout, q0, sq, h));
    r.out.set(f.out, q0 * h * d);
    r.dq.set(g.dq, q0 * h * d);
    r.dk.set(g.dk, k0 * hk * d);
    r.dv.set(g.dv, k0 * hk * d);
    for (let hi = 0; hi < h; hi++) r.lse.set(f.lse.subarray(hi * sq, (hi + 1) * sq), hi * tq + q0);
  }
  return r;
}

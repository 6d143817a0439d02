// The dropout generator written again for the tests, from the Philox4x32-10 definition (Salmon
// et al., SC'11), independent of native/philox.h: 32-bit words in plain Numbers, the high half of
// each 32×32 product from 16-bit limbs.

/** [hi, lo] of the 64-bit product a·b (a, b unsigned 32-bit). */
function mulhilo(a: number, b: number): [number, number] {
  const a0 = a & 0xffff,
    a1 = a >>> 16,
    b0 = b & 0xffff,
    b1 = b >>> 16;
  const lo0 = a0 * b0,
    m1 = a0 * b1,
    m2 = a1 * b0;
  const carry = (lo0 >>> 16) + (m1 & 0xffff) + (m2 & 0xffff);
  const hi = (a1 * b1 + (m1 >>> 16) + (m2 >>> 16) + Math.floor(carry / 65536)) >>> 0;
  return [hi, Math.imul(a, b) >>> 0];
}

/** Philox4x32-10 of counter c (four words) under key (k0, k1). */
export function philox4x32(c: readonly number[], k0: number, k1: number): number[] {
  let [x, y, z, w] = c.map((v) => v >>> 0) as [number, number, number, number];
  let key0 = k0 >>> 0,
    key1 = k1 >>> 0;
  for (let r = 0; r < 10; r++) {
    const [hi0, lo0] = mulhilo(0xd2511f53, x);
    const [hi1, lo1] = mulhilo(0xcd9e8d57, z);
    [x, y, z, w] = [(hi1 ^ y ^ key0) >>> 0, lo1, (hi0 ^ w ^ key1) >>> 0, lo0];
    key0 = (key0 + 0x9e3779b9) >>> 0;
    key1 = (key1 + 0xbb67ae85) >>> 0;
  }
  return [x, y, z, w];
}

/**
 * Whether each of `n` keys (token indices k0 .. k0 + n − 1) survives dropout for query token
 * `qt` of (batch, head): counter (kt >> 2, qt, head, batch), word kt & 3, kept iff ≥ ⌊p · 2³²⌋ (p in float32).
 */
export function dropoutKeeps(
  seed: number,
  p: number,
  batch: number,
  head: number,
  qt: number,
  k0: number,
  n: number,
): boolean[] {
  const lo = seed % 2 ** 32,
    hi = Math.floor(seed / 2 ** 32);
  // The kernels take p as float32.
  const threshold = Math.floor(Math.fround(p) * 2 ** 32);
  const out: boolean[] = [];
  for (let j = 0; j < n; j++) {
    const kt = k0 + j;
    const r = philox4x32([Math.floor(kt / 4), qt, head, batch], lo, hi);
    out.push(r[kt % 4]! >= threshold);
  }
  return out;
}

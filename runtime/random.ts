// The one seeded generator of the project (mulberry32): test inputs, benchmark inputs and the
// examples' weights all come from it, so a seed means the same values everywhere.

/** Uniform values in [0, 1) from a 32-bit seed. */
export function seededUniform(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** n values in [-scale, scale) from `seed`. */
export function seededValues(n: number, seed: number, scale = 1): Float32Array {
  const next = seededUniform(seed);
  // A plain loop: Float32Array.from over an array-like costs far more per element.
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (next() * 2 - 1) * scale;
  return out;
}

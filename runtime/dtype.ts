import { fail } from './errors.js';
import { describeValue } from './tensor.js';

/** Compute dtypes. bf16/f16 data lives in Uint16Array as raw bits. */
export type DType = 'float32' | 'bfloat16' | 'float16';

export const DTYPES: readonly DType[] = ['float32', 'bfloat16', 'float16'];

/** The native DType enum (native/attn_params.h). */
export const DTYPE_CODE: Record<DType, number> = { float32: 0, bfloat16: 1, float16: 2 };

export function dtypeBytes(dtype: DType): number {
  return dtype === 'float32' ? 4 : 2;
}

export function checkDType(value: unknown, name: string): DType {
  if (typeof value === 'string' && (DTYPES as readonly string[]).includes(value)) return value as DType;
  fail(
    'E_DTYPE',
    `${name} must be one of ${DTYPES.join(', ')}, got ${typeof value === 'string' ? JSON.stringify(value) : describeValue(value)}`,
  );
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** float -> bfloat16 bits, round to nearest even (NaN stays NaN). */
export function floatToBf16(x: number): number {
  f32[0] = x;
  const bits = u32[0]!;
  if (Number.isNaN(x)) return ((bits >>> 16) | 0x40) & 0xffff;
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

export function bf16ToFloat(h: number): number {
  u32[0] = (h & 0xffff) << 16;
  return f32[0]!;
}

/** float -> float16 bits, round to nearest even, overflow to inf. */
export function floatToF16(x: number): number {
  f32[0] = x;
  const bits = u32[0]!;
  const sign = (bits >>> 16) & 0x8000;
  let abs = bits & 0x7fffffff;
  if (abs >= 0x7f800000) return sign | 0x7c00 | (abs > 0x7f800000 ? 0x200 : 0);
  if (abs >= 0x477ff000) return sign | 0x7c00;
  if (abs < 0x38800000) {
    u32[0] = abs;
    const sub = f32[0]! * 16777216; // 2^24: units of the smallest subnormal
    const floor = Math.floor(sub);
    const frac = sub - floor; // exact: sub < 2^10 has plenty of fraction bits in a double
    const rounded = frac > 0.5 || (frac === 0.5 && floor % 2 === 1) ? floor + 1 : floor;
    return sign | rounded;
  }
  abs = (abs + 0xfff + ((abs >>> 13) & 1)) >>> 0;
  return sign | ((((abs >>> 23) - 127 + 15) << 10) | ((abs >>> 13) & 0x3ff));
}

export function f16ToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

export type HostData = Float32Array | Uint16Array;

/** Converts float values to the storage of `dtype` (Float32Array for float32, raw bits otherwise). */
export function fromFloat32(src: ArrayLike<number>, dtype: DType): HostData {
  if (dtype === 'float32') return Float32Array.from(src);
  const out = new Uint16Array(src.length);
  const conv = dtype === 'bfloat16' ? floatToBf16 : floatToF16;
  for (let i = 0; i < src.length; i++) out[i] = conv(src[i]!);
  return out;
}

/** Widens storage of `dtype` to float32. */
export function toFloat32(src: HostData, dtype: DType): Float32Array {
  if (dtype === 'float32') return src instanceof Float32Array ? src : Float32Array.from(src);
  const out = new Float32Array(src.length);
  const conv = dtype === 'bfloat16' ? bf16ToFloat : f16ToFloat;
  for (let i = 0; i < src.length; i++) out[i] = conv(src[i]!);
  return out;
}

/** Rounds float values through `dtype` and back (what a compute dtype does to inputs). */
export function roundThrough(src: Float32Array, dtype: DType): Float32Array {
  return dtype === 'float32' ? src : toFloat32(fromFloat32(src, dtype), dtype);
}

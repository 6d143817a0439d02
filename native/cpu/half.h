// bfloat16 / float16 <-> float conversions on raw uint16 bits (round to nearest even), used by
// the CPU kernels to read inputs and by casts to write them.
#pragma once
#include <cstdint>
#include <cstring>
#include <cmath>
#include "attn_params.h"

namespace rfa::cpu {

// The bits of a float and back (std::bit_cast is C++20).
inline uint32_t float_bits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  return bits;
}
inline float bits_float(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline float bf16_to_float(uint16_t h) { return bits_float(uint32_t(h) << 16); }

inline uint16_t float_to_bf16(float f) {
  const uint32_t bits = float_bits(f);
  if (std::isnan(f)) return uint16_t((bits >> 16) | 0x40);  // keep NaN a NaN
  uint32_t rounding = 0x7fff + ((bits >> 16) & 1);
  return uint16_t((bits + rounding) >> 16);
}

inline float f16_to_float(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400) == 0);
      bits = sign | uint32_t(127 - 15 - e) << 23 | (mant & 0x3ff) << 13;
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000 | (mant << 13);
  } else {
    bits = sign | (exp + 127 - 15) << 23 | (mant << 13);
  }
  return bits_float(bits);
}

inline uint16_t float_to_f16(float f) {
  const uint32_t bits = float_bits(f);
  uint16_t sign = uint16_t((bits >> 16) & 0x8000);
  uint32_t absbits = bits & 0x7fffffff;
  if (absbits >= 0x7f800000) return sign | 0x7c00 | (absbits > 0x7f800000 ? 0x200 : 0);
  if (absbits >= 0x477ff000) return sign | 0x7c00;  // rounds to >= 65520: overflow to inf
  if (absbits < 0x38800000) {                       // result is subnormal (or zero) in f16
    float a;
    std::memcpy(&a, &absbits, 4);
    // multiply into the subnormal grid; nearbyint rounds to nearest even
    return sign | uint16_t(std::nearbyint(a * 16777216.0f));  // 2^24
  }
  uint32_t rounding = 0xfff + ((absbits >> 13) & 1);
  absbits += rounding;
  return sign | uint16_t(((absbits >> 23) - 127 + 15) << 10 | ((absbits >> 13) & 0x3ff));
}

inline float load_elem(const void* base, int64_t i, DType t) {
  switch (t) {
    case DType::f32:
      return static_cast<const float*>(base)[i];
    case DType::bf16:
      return bf16_to_float(static_cast<const uint16_t*>(base)[i]);
    default:
      return f16_to_float(static_cast<const uint16_t*>(base)[i]);
  }
}

inline void store_elem(void* base, int64_t i, DType t, float x) {
  switch (t) {
    case DType::f32:
      static_cast<float*>(base)[i] = x;
      break;
    case DType::bf16:
      static_cast<uint16_t*>(base)[i] = float_to_bf16(x);
      break;
    default:
      static_cast<uint16_t*>(base)[i] = float_to_f16(x);
      break;
  }
}

}  // namespace rfa::cpu

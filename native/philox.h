// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3"), the counter-based
// generator of the dropout hook (attn_params.h ScoreMods): a pure function of (counter, key), so
// the forward, the backward and every rank draw the same bits for an element without storing a
// mask. Plain C++ that nvcc compiles for the device too.
#pragma once
#include <cstdint>

#ifdef __CUDACC__
#define RFA_HD __host__ __device__ __forceinline__
#else
#define RFA_HD inline
#endif

namespace rfa {

struct Philox4 {
  uint32_t x, y, z, w;
};

RFA_HD uint32_t mulhilo32(uint32_t a, uint32_t b, uint32_t* hi) {
  const uint64_t p = uint64_t(a) * b;
  *hi = uint32_t(p >> 32);
  return uint32_t(p);
}

RFA_HD Philox4 philox4x32_10(Philox4 ctr, uint32_t key0, uint32_t key1) {
  constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;    // round multipliers
  constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;  // key schedule increments
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, hi1;
    const uint32_t lo0 = mulhilo32(kMul0, ctr.x, &hi0);
    const uint32_t lo1 = mulhilo32(kMul1, ctr.z, &hi1);
    ctr = Philox4{hi1 ^ ctr.y ^ key0, lo1, hi0 ^ ctr.w ^ key1, lo0};
    key0 += kWeyl0;
    key1 += kWeyl1;
  }
  return ctr;
}

// The dropout draw of element (batch, head, query qt, key kt): word kt % 4 of the block of four
// keys that share a counter.
RFA_HD uint32_t dropout_bits(uint64_t seed, uint32_t batch, uint32_t head, uint32_t qt, uint32_t kt) {
  const Philox4 r = philox4x32_10(Philox4{kt >> 2, qt, head, batch}, uint32_t(seed), uint32_t(seed >> 32));
  const uint32_t word = kt & 3u;
  return word == 0 ? r.x : word == 1 ? r.y : word == 2 ? r.z : r.w;
}

// Elements whose draw is below this are dropped: floor(p * 2^32), for p in [0, 1).
RFA_HD uint32_t dropout_threshold(float p) { return uint32_t(double(p) * 4294967296.0); }

}  // namespace rfa

// The FlashAttention-2 style forward mainloop on Hopper warpgroup MMAs (FwdWgTraits). Included by
// flash_fwd.cu only.
#pragma once
#include <cstdint>

#include "attn_params.h"
#include "cuda/flash_mma.cuh"
#include "cuda/flash_traits.h"
#include "cuda/flash_wgmma.cuh"
#include "cuda/fwd/epilogue_split.cuh"
#include "cuda/fwd/softmax_fa2.cuh"
#include "cuda/fwd/split_grid.cuh"

namespace rfa::cuda {

// attend_tile on Hopper warpgroup MMAs (FwdWgTraits: head_dim 128, sm_90a; the body is empty in
// other builds, which never launch it). Same job, masks, online softmax and epilogue; per step:
// S = Q K^T (8 x m64n64k16, Q and K from swizzled shared tiles), softmax in registers, O += P V
// (4 x m64n128k16, P from registers, V MN-major), left in flight into the next step.
template <class Tr, typename T, bool kCausal>
__device__ __forceinline__ void attend_tile_wgmma(const FlashFwdParams& p, const FwdGrid& grid,
                                                  const TileJob& job) {
#ifdef RFA_WGMMA_ENABLED
  using Mma = MmaType<T>;
  extern __shared__ __align__(16) unsigned char smem[];
  unsigned char* base = smem + ((1024 - (smem_u32(smem) & 1023)) & 1023);  // swizzle atoms: 1024-aligned
  T* sQ = reinterpret_cast<T*>(base);     // [2][64][64] swizzled, as every tile below
  T* sK = sQ + Tr::kTile;                 // [kKStages] tiles
  T* sV = sK + Tr::kKStages * Tr::kTile;  // [kVStages] tiles

  const TileRows tr = tile_rows<Tr, kCausal>(p, grid, job);
  if (tr.m0 >= tr.sp.nq) return;
  if (tr.it_begin == tr.it_end) return write_keyless_tile<Tr, T>(p, grid, job, tr);
  const Span& sp = tr.sp;
  const T* gK = bsh_ptr<T>(p.k, p.k_stride, sp.b, sp.k0, tr.hk);
  const T* gV = bsh_ptr<T>(p.v, p.v_stride, sp.b, sp.k0, tr.hk);
  auto load_kv = [&](int it, int i) {  // key tile `it`, the i-th of this CTA, into its stages
    const int n0 = it * Tr::kBlockN;
    load_tile_sw128<Tr::kBlockN, Tr::kThreads>(sK + (i % Tr::kKStages) * Tr::kTile,
                                               gK + int64_t(n0) * p.k_stride.row, p.k_stride.row, sp.nk - n0);
    load_tile_sw128<Tr::kBlockN, Tr::kThreads>(sV + (i % Tr::kVStages) * Tr::kTile,
                                               gV + int64_t(n0) * p.v_stride.row, p.v_stride.row, sp.nk - n0);
  };
  load_tile_sw128<Tr::kBlockM, Tr::kThreads>(sQ, bsh_ptr<T>(p.q, p.q_stride, sp.b, sp.q0 + tr.m0, tr.h),
                                             p.q_stride.row, tr.rows_valid);
  load_kv(tr.it_begin, 0);
  cp_async_commit();

  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int g = lane / 4, t = lane % 4;
  // Descriptors (flash_wgmma.cuh). K-major Q and K: k-step kk is 32 bytes along a 128-byte row,
  // the second 64-column half after four. MN-major V: a k-step is 16 keys = 2048 bytes, the two
  // 64-column halves of head_dim 8192 bytes apart. Offsets are in the descriptor's 16-byte units.
  const uint64_t dQ = gmma_desc(smem_u32(sQ), 16), dK = gmma_desc(smem_u32(sK), 16);
  const uint64_t dV = gmma_desc(smem_u32(sV), Tr::kBlockN * 128);
  constexpr uint32_t kTileStep = Tr::kTile * 2 / 16;
  auto koff = [](int kk) { return uint32_t(((kk / 4) * 64 * 128 + (kk % 4) * 32) >> 4); };

  // In the mma C layout (flash_wgmma.cuh): acc_o[0][dt][e] is the accumulator's d[4 dt + e].
  float acc_o[1][Tr::kOTiles][4];
  float row_max[1][2] = {{-INFINITY, -INFINITY}}, row_sum[1][2] = {{0.f, 0.f}};
#pragma unroll
  for (int dt = 0; dt < Tr::kOTiles; ++dt)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc_o[0][dt][e] = 0.f;
  float(&o)[64] = reinterpret_cast<float(&)[64]>(acc_o);

  // Loads of tiles i+1 go where the tiles they replace are done with: K stage (i+1) % kKStages was
  // last read by S_{i+1-kKStages}, V stage (i+1) % kVStages by P_{i+1-kVStages} V.
  constexpr bool kLoadAtTop = Tr::kKStages == 2;  // S_{i-1} and P_{i-2} V are done at the top of step i
  for (int it = tr.it_begin, i = 0; it < tr.it_end; ++it, ++i) {
    const int n0 = it * Tr::kBlockN;
    cp_async_wait<0>();
    fence_proxy_async();  // cp.async data -> wgmma (async proxy) reads
    __syncthreads();      // tiles i landed; every warp is past step i-1's wait
    if constexpr (kLoadAtTop) {
      if (it + 1 < tr.it_end) load_kv(it + 1, i + 1);
      cp_async_commit();
    }

    float s[1][Tr::kSTiles][4];
    float(&sf)[32] = reinterpret_cast<float(&)[32]>(s);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 8; ++kk)
      wgmma_ss<T, 64, 0, 0>(sf, dQ + koff(kk), dK + (i % Tr::kKStages) * kTileStep + koff(kk), kk);
    wgmma_commit();
    wgmma_wait<0>();  // S, and the previous step's P V (the softmax rescales its accumulator)
    fence_regs(sf);
    fence_regs(o);
    if constexpr (!kLoadAtTop) {
      __syncthreads();  // every warp is past this wait: S_i and P_{i-1} V are done
      if (it + 1 < tr.it_end) load_kv(it + 1, i + 1);
      cp_async_commit();
    }

    const bool needs_mask = n0 + Tr::kBlockN > sp.nk || (kCausal && n0 + Tr::kBlockN - 1 > tr.m0 + tr.diag);
    if (needs_mask)
      mask_scores<Tr, kCausal>(s, tr.m0 + warp * Tr::kRowsPerWarp + g, n0 + 2 * t, sp.nk, tr.diag);
    online_softmax<Tr>(s, acc_o, row_max, row_sum, grid.scale_log2);

    // P as 16-bit A fragments: k-step kk = keys 16kk..16kk+15 = n-tiles 2kk, 2kk+1.
    uint32_t pa[4][4];
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      pa[kk][0] = Mma::pack(s[0][2 * kk][0], s[0][2 * kk][1]);
      pa[kk][1] = Mma::pack(s[0][2 * kk][2], s[0][2 * kk][3]);
      pa[kk][2] = Mma::pack(s[0][2 * kk + 1][0], s[0][2 * kk + 1][1]);
      pa[kk][3] = Mma::pack(s[0][2 * kk + 1][2], s[0][2 * kk + 1][3]);
    }
    wgmma_fence();  // the softmax rewrote the accumulator
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
      wgmma_rs<T, 128, 1>(o, pa[kk], dV + (i % Tr::kVStages) * kTileStep + kk * 128, 1);
    wgmma_commit();
  }
  wgmma_wait<0>();
  fence_regs(o);
  cp_async_wait<0>();  // nothing may still be landing in shared memory when the CTA exits
  attend_epilogue<Tr, T>(p, grid, job, acc_o, row_max, row_sum);
#endif
}

}  // namespace rfa::cuda

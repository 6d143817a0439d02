// The Hopper backward kernel (BwdHopperTraits, bwd/mainloop_wgmma.cuh and, at head_dim 192 and
// 256, bwd/mainloop_wgmma_wide.cuh) and its launch: tensor maps of q, k, v and dout, one CTA per
// (key tile, kv head, batch entry, split) as the FlashAttention-2 style kernels.
#include <cuda.h>

#include "cuda/bwd/launch.h"
#include "cuda/bwd/mainloop_wgmma.cuh"
#include "cuda/bwd/mainloop_wgmma_wide.cuh"
#include "cuda/check.h"
#include "cuda/tensor_map.h"

namespace rfa::cuda {
namespace {

template <class Tr, typename T, bool kCausal, bool kVarlen, bool kDet = false>
__global__ void __launch_bounds__(Tr::kThreads, 1)
    flash_bwd_hopper_kernel(const FlashBwdParams p, const BwdGrid grid,
                            const __grid_constant__ CUtensorMap map_q,
                            const __grid_constant__ CUtensorMap map_k,
                            const __grid_constant__ CUtensorMap map_v,
                            const __grid_constant__ CUtensorMap map_do) {
#ifdef RFA_WGMMA_ENABLED
  extern __shared__ __align__(16) unsigned char smem[];
  const BwdHopperSmem<Tr> sm{smem +
                             ((1024 - (smem_u32(smem) & 1023)) & 1023)};  // swizzle atoms: 1024-aligned
  const BwdWork w = bwd_work<Tr::kBlockN, Tr::kBlockM, kCausal>(p, grid);
  if (!w.active) return;
  if constexpr (kVarlen)
    init_barriers(sm.bars(), sm.tails());
  else
    init_barriers(sm.bars());
  const int wg = threadIdx.x / Tr::kWgThreads, warp = threadIdx.x / kWarpSize;
  if (wg == 0) {
    warpgroup_reg_dealloc<Tr::kProducerRegs>();
    if (warp == 0) {
      if (threadIdx.x == 0)
        tma_prefetch_map(&map_q), tma_prefetch_map(&map_k), tma_prefetch_map(&map_v),
            tma_prefetch_map(&map_do);
      bwd_produce<Tr, kVarlen, kDet>(p, w, sm, &map_q, &map_k, &map_v, &map_do);
    } else if (warp <= Tr::kDqTiles) {
      bwd_write_dq<Tr, kDet>(p, grid, w, sm, warp - 1);
    }
  } else {
    warpgroup_reg_alloc<Tr::kConsumerRegs>();
    if constexpr (Tr::kWide) {
      constexpr int kCols0 = Tr::dq_tile_cols(0), kCols1 = Tr::dq_tile_cols(1);
      if (kCols0 == kCols1 || warp < 8)
        bwd_consume_wide<Tr, T, kCausal, kCols0>(p, grid, w, sm, warp - 4);
      else
        bwd_consume_wide<Tr, T, kCausal, kCols1>(p, grid, w, sm, warp - 4);
    } else
      bwd_consume<Tr, T, kCausal, kVarlen, kDet>(p, grid, w, sm, warp - 4);
  }
#endif
}

template <class Tr, typename T, bool kCausal, bool kVarlen, bool kDet = false>
bool launch(const FlashBwdParams& p, const BwdGrid& grid, cudaStream_t s) {
  const AttnShape& sh = p.shape;
  CUtensorMap map_q, map_k, map_v, map_do;
  if (!encode_view(&map_q, p.q, p.dtype, Tr::kHeadDim, sh.seqlen_q, sh.nheads, sh.batch, p.q_stride,
                   Tr::kBlockM) ||
      !encode_view(&map_do, p.dout, p.dtype, Tr::kHeadDim, sh.seqlen_q, sh.nheads, sh.batch, p.dout_stride,
                   Tr::kBlockM) ||
      !encode_view(&map_k, p.k, p.dtype, Tr::kHeadDim, sh.seqlen_k, sh.nheads_k, sh.batch, p.k_stride,
                   Tr::kBlockN) ||
      !encode_view(&map_v, p.v, p.dtype, Tr::kHeadDim, sh.seqlen_k, sh.nheads_k, sh.batch, p.v_stride,
                   Tr::kBlockN))
    return false;
  const int64_t blocks = int64_t(grid.num_n_blocks) * sh.nheads_k * grid.num_spans * grid.num_splits;
  if (blocks > INT32_MAX) RFA_THROW("E_UNSUPPORTED", "flash_bwd: too many key tiles for one launch");
  auto kernel = flash_bwd_hopper_kernel<Tr, T, kCausal, kVarlen, kDet>;
  RFA_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tr::kSmemBytes));
  kernel<<<unsigned(blocks), Tr::kThreads, Tr::kSmemBytes, s>>>(p, grid, map_q, map_k, map_v, map_do);
  RFA_CHECK_LAUNCH("flash_bwd_hopper_kernel");
  return true;
}

template <class Tr, typename T>
bool dispatch_causal(const FlashBwdParams& p, const BwdGrid& grid, cudaStream_t s) {
  if constexpr (!Tr::kWide) {  // kWide: dense batches only (hopper_bwd_covers)
    if (p.seg.num_seqs > 0)
      return p.shape.causal ? launch<Tr, T, true, true>(p, grid, s) : launch<Tr, T, false, true>(p, grid, s);
  }
  if constexpr (!Tr::kWide) {  // the deterministic mode: head_dim 64 and 128, dense, unsplit
    if (p.deterministic)
      return p.shape.causal ? launch<Tr, T, true, false, true>(p, grid, s)
                            : launch<Tr, T, false, false, true>(p, grid, s);
  }
  return p.shape.causal ? launch<Tr, T, true, false>(p, grid, s) : launch<Tr, T, false, false>(p, grid, s);
}

template <typename T>
bool dispatch_head_dim(const FlashBwdParams& p, const BwdGrid& grid, cudaStream_t s) {
  switch (p.shape.head_dim) {
    case 64:
      return dispatch_causal<BwdHopperTraits<64>, T>(p, grid, s);
    case 192:
      return dispatch_causal<BwdHopperTraits<192>, T>(p, grid, s);
    case 256:
      return dispatch_causal<BwdHopperTraits<256>, T>(p, grid, s);
    default:
      return dispatch_causal<BwdHopperTraits<128>, T>(p, grid, s);
  }
}

}  // namespace

bool hopper_bwd_covers(const FlashBwdParams& p, bool unrun) {
  const int d = p.shape.head_dim;
  const bool dims = d == 128 || (unrun && (d == 64 || (d > 128 && p.seg.num_seqs == 0)));
  const bool det = unrun && d <= 128 && p.seg.num_seqs == 0;  // the dQ warps' turns
  return dims && (!p.deterministic || det) && (p.seg.num_seqs == 0 || unrun) && !p.mods.any(p.shape.causal) &&
         p.shape.batch > 0 && p.shape.seqlen_q > 0 && p.shape.seqlen_k > 0 &&
         rows_aligned(p.dq, p.dq_stride, 4, 4);
}

bool flash_bwd_hopper(const FlashBwdParams& p, const BwdGrid& grid, cudaStream_t s,
                      const LaunchOverrides& o) {
  // The deterministic mode's splits add dK/dV in turns that take the whole CTA (write_dkv_in_turn).
  if (!hopper_bwd_covers(p, o.bwd_kernel == 2) || (p.deterministic && grid.num_splits > 1)) return false;
  return p.dtype == DType::bf16 ? dispatch_head_dim<__nv_bfloat16>(p, grid, s)
                                : dispatch_head_dim<__half>(p, grid, s);
}

}  // namespace rfa::cuda

// The Hopper forward kernel (FwdHopperTraits, fwd/mainloop_wgmma.cuh) and its launch: tensor maps
// of q, k and v for the TMA loads, a persistent grid of one CTA per SM (or per tile, when fewer).
#include <cuda.h>

#include <algorithm>
#include <string>

#include "cuda/check.h"
#include "cuda/fwd/launch.h"
#include "cuda/fwd/mainloop_wgmma.cuh"
#include "cuda/tensor_map.h"

namespace rfa::cuda {
namespace {

template <class Tr, typename T, bool kCausal, bool kVarlen, int kHooks>
__global__ void __launch_bounds__(Tr::kThreads, 1)
    flash_fwd_hopper_kernel(const FlashFwdParams p, const FwdTileGrid grid,
                            const __grid_constant__ CUtensorMap map_q,
                            const __grid_constant__ CUtensorMap map_k,
                            const __grid_constant__ CUtensorMap map_v) {
#ifdef RFA_WGMMA_ENABLED
  extern __shared__ __align__(16) unsigned char smem[];
  const FwdHopperSmem<Tr> sm{smem +
                             ((1024 - (smem_u32(smem) & 1023)) & 1023)};  // swizzle atoms: 1024-aligned
  init_barriers(sm.bars());
  const int wg = threadIdx.x / Tr::kWgThreads;
  if (wg == 0) {
    warpgroup_reg_dealloc<Tr::kProducerRegs>();
    if (threadIdx.x == 0) {
      tma_prefetch_map(&map_q), tma_prefetch_map(&map_k), tma_prefetch_map(&map_v);
      fwd_produce<Tr, kCausal, kVarlen, kHooks>(p, grid, sm, &map_q, &map_k, &map_v);
    }
  } else {
    warpgroup_reg_alloc<Tr::kConsumerRegs>();
    fwd_consume<Tr, T, kCausal, kVarlen, kHooks>(p, grid, sm, wg - 1);
  }
#endif
}

// Query tiles per (head, span) and spans: batch entries, or varlen segments (as long as the
// longest; the shorter ones' extra tiles are skipped).
template <class Tr>
int m_blocks_of(const FlashFwdParams& p) {
  return ((p.seg.num_seqs > 0 ? p.seg.max_seqlen_q : p.shape.seqlen_q) + Tr::kBlockM - 1) / Tr::kBlockM;
}
template <class Tr>
int64_t tiles_of(const FlashFwdParams& p) {
  return int64_t(m_blocks_of<Tr>(p)) * p.shape.nheads * (p.seg.num_seqs > 0 ? p.seg.num_seqs : p.shape.batch);
}

template <class Tr, typename T, bool kCausal, bool kVarlen, int kHooks = kNoHooks>
bool launch(const FlashFwdParams& p, cudaStream_t s, const Scratch& scratch, const LaunchOverrides& o) {
  const AttnShape& sh = p.shape;
  CUtensorMap map_q, map_k, map_v;
  if (!encode_view(&map_q, p.q, p.dtype, Tr::kHeadDim, sh.seqlen_q, sh.nheads, sh.batch, p.q_stride,
                   Tr::kBlockM) ||
      !encode_view(&map_k, p.k, p.dtype, Tr::kHeadDim, sh.seqlen_k, sh.nheads_k, sh.batch, p.k_stride,
                   Tr::kBlockN) ||
      !encode_view(&map_v, p.v, p.dtype, Tr::kHeadDim, sh.seqlen_k, sh.nheads_k, sh.batch, p.v_stride,
                   Tr::kBlockN))
    return false;
  const int64_t tiles = tiles_of<Tr>(p);
  if (tiles > INT32_MAX) RFA_THROW("E_UNSUPPORTED", "flash_fwd: too many query tiles for one launch");
  ScratchBlock counter(scratch);
  FwdTileGrid grid{m_blocks_of<Tr>(p), sh.nheads, int(tiles), static_cast<int*>(counter.get(sizeof(int)))};
  RFA_CUDA_CHECK(cudaMemsetAsync(grid.next_tile, 0, sizeof(int), s));
  const int ctas = int(std::min<int64_t>(tiles, o.fwd_ctas > 0 ? o.fwd_ctas : current_device().sms));
  auto kernel = flash_fwd_hopper_kernel<Tr, T, kCausal, kVarlen, kHooks>;
  RFA_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tr::kSmemBytes));
  kernel<<<unsigned(ctas), Tr::kThreads, Tr::kSmemBytes, s>>>(p, grid, map_q, map_k, map_v);
  RFA_CHECK_LAUNCH("flash_fwd_hopper_kernel");
  return true;
}

template <class Tr, typename T, bool kVarlen = false>
bool dispatch_causal(const FlashFwdParams& p, cudaStream_t s, const Scratch& scratch,
                     const LaunchOverrides& o) {
  return p.shape.causal ? launch<Tr, T, true, kVarlen>(p, s, scratch, o)
                        : launch<Tr, T, false, kVarlen>(p, s, scratch, o);
}

// Tile shapes per head_dim. Head_dim 128 without a causal mask takes 176-key tiles on grids of
// under three waves, where the fewer, longer turns measured faster; full grids (more heads) ran
// faster on 128-key tiles. The harness forces the others (force_fwd_variant).
template <typename T>
bool dispatch_head_dim(const FlashFwdParams& p, cudaStream_t s, const Scratch& scratch,
                       const LaunchOverrides& o) {
  if (p.mods.any(p.shape.causal)) {  // the score hooks (hopper_fwd_covers), dense
    if (p.mods.masks_only())         // the default tiles
      return p.shape.head_dim == 64
                 ? launch<FwdHopperTraits<64>, T, false, false, kMaskHooks>(p, s, scratch, o)
                 : launch<FwdHopperTraits<128>, T, false, false, kMaskHooks>(p, s, scratch, o);
    // Narrower key tiles than the defaults: the hooks' state and temporaries need the registers
    // (ptxas spills of each choice in benchmark/RESULTS.md).
    return p.shape.head_dim == 64
               ? launch<FwdHopperTraits<64, 128, 3>, T, false, false, kScoreHooks>(p, s, scratch, o)
               : launch<FwdHopperTraits<128, 96, 2>, T, false, false, kScoreHooks>(p, s, scratch, o);
  }
  const int variant = o.fwd_variant >= 0 ? o.fwd_variant
                      : p.shape.head_dim == 128 && !p.shape.causal &&
                              tiles_of<FwdHopperTraits<128>>(p) < 3 * current_device().sms
                          ? 2
                          : -1;
  if (p.seg.num_seqs > 0) {  // varlen: the default tiles only
    if (p.shape.head_dim == 64) return dispatch_causal<FwdHopperTraits<64>, T, true>(p, s, scratch, o);
    if (p.shape.head_dim == 128) return dispatch_causal<FwdHopperTraits<128>, T, true>(p, s, scratch, o);
    return false;
  }
  switch (p.shape.head_dim) {
    case 64:
      if (variant == 0) return dispatch_causal<FwdHopperTraits<64, 128, 2>, T>(p, s, scratch, o);
      if (variant == 1) return dispatch_causal<FwdHopperTraits<64, 128, 4>, T>(p, s, scratch, o);
      return dispatch_causal<FwdHopperTraits<64>, T>(p, s, scratch, o);
    case 128:
      if (variant == 1) return dispatch_causal<FwdHopperTraits<128, 128, 3>, T>(p, s, scratch, o);
      if (variant == 2) return dispatch_causal<FwdHopperTraits<128, 176, 2>, T>(p, s, scratch, o);
      return dispatch_causal<FwdHopperTraits<128>, T>(p, s, scratch, o);
    case 192:
      return dispatch_causal<FwdHopperTraits<192>, T>(p, s, scratch, o);
    case 256:
      return dispatch_causal<FwdHopperTraits<256>, T>(p, s, scratch, o);
    default:
      return false;
  }
}

}  // namespace

bool hopper_fwd_covers(const FlashFwdParams& p, bool varlen) {
  const int d = p.shape.head_dim;
  // The score hooks: dense calls at head_dim 64 and 128 (the kMaskHooks and kScoreHooks instances).
  const bool hooks_taken = !p.mods.any(p.shape.causal) || (p.seg.num_seqs == 0 && (d == 64 || d == 128));
  return hooks_taken && (p.seg.num_seqs == 0 || (varlen && d <= 128)) && p.shape.seqlen_k > 0 &&
         p.shape.seqlen_q > 0 && p.shape.batch > 0 && (d == 64 || d == 128 || d == 192 || d == 256);
}

int64_t hopper_fwd_tiles(const FlashFwdParams& p) { return tiles_of<FwdHopperTraits<128>>(p); }

bool flash_fwd_hopper(const FlashFwdParams& p, cudaStream_t s, const Scratch& scratch,
                      const LaunchOverrides& o) {
  if (!hopper_fwd_covers(p, o.fwd_kernel == 5)) return false;
  return p.dtype == DType::bf16 ? dispatch_head_dim<__nv_bfloat16>(p, s, scratch, o)
                                : dispatch_head_dim<__half>(p, s, scratch, o);
}

}  // namespace rfa::cuda

// Forward attention, FlashAttention-2 style on the tensor cores with fp32 accumulation: out =
// softmax(scale * q k^T) v, and lse (natural log) per query row. Two kernels share everything but
// the main loop: head_dim 128 on sm_90a runs on Hopper warpgroup MMAs (attend_tile_wgmma,
// FwdWgTraits: one warpgroup per 64-row tile), everything else on mma.sync m16n8k16
// (attend_tile, FwdTraits: 4 warps per 128-row tile).
//
// This file holds the kernel, its launch plans and the dispatch; the parts are in native/cuda/fwd/:
// split_grid.cuh (the grid: heavy-first tiles and split pieces), softmax_fa2.cuh (masks, hooks,
// online softmax), mainloop_mma.cuh and mainloop_fa2_wgmma.cuh (one mainloop per MMA kind),
// epilogue_split.cuh (out/lse, keyless tiles, the pieces' merge). The Hopper forward in the
// FlashAttention-3 structure is fwd/kernel_hopper.cu, which the dispatch below prefers.
//
// One CTA per (query tile, head, batch entry or varlen segment). Q stays in shared memory for the
// whole CTA; K and V tiles stream through it, loaded while the previous tile computes. Scores,
// probabilities and the output accumulator never leave registers. The online softmax runs in the
// log2 domain: p = exp2(s * scale_log2 - m * scale_log2) with m the running row max of the raw
// scores, so one FFMA + one MUFU.EX2 per score.
//
// A ring step merges its block into the running (out, lse) in the epilogue (p.merge), and may
// write the merged rows to a 16-bit final out (p.merge_src). Grids that would fill the GPU
// unevenly cut query tiles into pieces of their keys (FwdGrid, plan_fwd, launch_plan.h).
//
// Residency: the wgmma kernel is built for 3 CTAs per SM (K single, V double buffered) and 2
// (K double, V triple buffered), and the launch model picks per grid (FwdWgTraits); the mma.sync
// kernel runs 2 per SM. FLOP counted for timings: causal 2*b*h*s^2*d, full 4*b*h*s^2*d. Each
// version's timings, and the variants tried (stream-K; FA3's intra-warpgroup overlap, ping-pong,
// 128-key tiles, Q in registers): benchmark/RESULTS.md.
#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <vector>

#include "cuda/check.h"
#include "cuda/attn_kernels.h"
#include "cuda/flash_mma.cuh"
#include "cuda/flash_traits.h"
#include "cuda/flash_wgmma.cuh"
#include "cuda/score_hooks.cuh"
#include "cuda/fwd/epilogue.cuh"
#include "cuda/fwd/launch.h"
#include "cuda/fwd/mainloop_fa2_wgmma.cuh"
#include "cuda/fwd/mainloop_mma.cuh"
#include "cuda/fwd/split_grid.cuh"
#include "launch_plan.h"

namespace rfa::cuda {
namespace {

// kHooks: the instance with the score hooks (mma.sync tiles only); the plain ones never pay for them.
template <class Tr, typename T, bool kCausal, bool kHooks = false>
__global__ void __launch_bounds__(Tr::kThreads, Tr::kCtasPerSm)
    flash_fwd_kernel(const FlashFwdParams p, const FwdGrid grid) {
  static_assert(!(kHooks && Tr::kWgmma), "the hooks are in the mma.sync tiles only");
  if constexpr (Tr::kWgmma)
    attend_tile_wgmma<Tr, T, kCausal>(p, grid, tile_job(grid, p.shape.nheads));
  else
    attend_tile<Tr, T, kCausal, kHooks>(p, grid, tile_job(grid, p.shape.nheads));
  if (int(blockIdx.x) < grid.whole) return;
  // A piece: count it in, and the last of its tile merges them all.
  __shared__ bool last_piece;
  __threadfence();  // this piece's partial is visible before its arrival is counted
  __syncthreads();
  if (threadIdx.x == 0)
    last_piece =
        atomicAdd(&grid.arrivals[(int(blockIdx.x) - grid.whole) / grid.splits], 1) == grid.splits - 1;
  __syncthreads();
  if (!last_piece) return;
  __threadfence();
  merge_pieces<Tr, T>(p, grid, tile_job(grid, p.shape.nheads));
}

// The wgmma kernel exists as sm_90a machine code only: other devices (and the compute_90 PTX
// fallback, where its body is empty) take the mma.sync kernel.
bool use_wgmma_fwd(const LaunchOverrides& o) { return o.fwd_kernel != 0 && current_device().sm90; }

// How to launch a call (FwdGrid's `whole` and `splits`, and the wgmma kernel's CTAs per SM; see
// launch_plan.h), for a kernel with the tile shape of Tr that can run at `residencies`. Dense
// grids of under 16 tiles per SM are planned by the launch model; varlen calls and larger grids
// run one CTA per tile, three per SM where the kernel can and the grid fills a wave of them.
// Plans are cached per shape and thread (the simulation is too slow to run for every ring step).
template <class Tr>
FwdPlan plan_fwd(const AttnShape& sh, int num_m_blocks, int num_spans, bool varlen,
                 const std::vector<int>& residencies, const LaunchOverrides& o) {
  const int64_t per_m = int64_t(sh.nheads) * num_spans;  // tiles per query-tile row
  const int64_t tiles = num_m_blocks * per_m;
  const int sms = current_device().sms;
  const int unplanned_r = residencies.size() == 1 ? residencies[0] : tiles >= 3 * int64_t(sms) ? 3 : 2;
  const FwdPlan per_tile{int(std::min<int64_t>(tiles, INT32_MAX)), 1, unplanned_r};
  if (varlen || o.fwd_schedule == 0 || sh.batch == 0 || sh.seqlen_k == 0) return per_tile;
  if (o.fwd_whole >= 0) return FwdPlan{int(std::min<int64_t>(o.fwd_whole, tiles)), o.fwd_splits, unplanned_r};
  if (tiles >= 16 * int64_t(sms) && o.fwd_schedule != 1)
    return per_tile;  // many waves: quantisation costs little
  using Key = std::array<int64_t, 9>;
  static thread_local std::map<Key, FwdPlan> cache;
  const Key key{num_m_blocks, per_m, sh.seqlen_q,    sh.seqlen_k,
                sh.causal,    sms,   o.fwd_schedule, residencies.size() == 1 ? residencies[0] : 0,
                Tr::kBlockM};
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  std::vector<int> steps(static_cast<size_t>(tiles));
  for (int64_t i = 0; i < tiles; ++i) {  // heavy-first order, as tile_job
    const int m = num_m_blocks - 1 - int(i / per_m);
    steps[size_t(i)] = key_tiles<Tr>(sh.seqlen_q, sh.seqlen_k, m * Tr::kBlockM, sh.causal);
  }
  const FwdPlan plan = plan_fwd_launch(steps, sms, residencies, kMaxSplits, o.fwd_schedule == 1);
  cache.emplace(key, plan);
  return plan;
}

template <class Tr, typename T, bool kCausal, bool kHooks = false>
void launch_fwd(const FlashFwdParams& p, int num_spans, int max_q, const FwdPlan& plan, cudaStream_t s,
                const Scratch& scratch) {
  constexpr int kHeadDim = Tr::kHeadDim;
  FwdGrid grid{(max_q + Tr::kBlockM - 1) / Tr::kBlockM,
               num_spans,
               p.shape.softmax_scale * kLog2e,
               0,
               1,
               nullptr,
               nullptr,
               nullptr};
  const int64_t tiles = int64_t(grid.num_m_blocks) * p.shape.nheads * num_spans;
  const int64_t blocks = plan.whole + (tiles - plan.whole) * plan.splits;
  if (blocks > INT32_MAX) RFA_THROW("E_UNSUPPORTED", "flash_fwd: too many query tiles for one launch");
  grid.whole = plan.whole, grid.splits = plan.splits;
  ScratchBlock part(scratch);  // partials and arrival counters of split tiles, released once queued
  if (plan.whole < tiles) {
    const int64_t split_tiles = tiles - plan.whole, pieces = split_tiles * plan.splits;
    const size_t part_floats = size_t(pieces) * Tr::kBlockM * (kHeadDim + 1);
    grid.part_out =
        static_cast<float*>(part.get(part_floats * sizeof(float) + size_t(split_tiles) * sizeof(int)));
    grid.part_lse = grid.part_out + size_t(pieces) * Tr::kBlockM * kHeadDim;
    grid.arrivals = reinterpret_cast<int*>(grid.part_out + part_floats);
    RFA_CUDA_CHECK(cudaMemsetAsync(grid.arrivals, 0, size_t(split_tiles) * sizeof(int), s));
  }
  auto kernel = flash_fwd_kernel<Tr, T, kCausal, kHooks>;
  // Above 48 KB a kernel's dynamic shared memory must be opted into (per device, so every call).
  RFA_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tr::kSmemBytes));
  kernel<<<unsigned(blocks), Tr::kThreads, Tr::kSmemBytes, s>>>(p, grid);
  RFA_CHECK_LAUNCH("flash_fwd_kernel");
}

template <class Tr, typename T>
void dispatch_causal(const FlashFwdParams& p, int num_spans, int max_q, const FwdPlan& plan, cudaStream_t s,
                     const Scratch& scratch) {
  if (p.shape.causal)
    launch_fwd<Tr, T, true>(p, num_spans, max_q, plan, s, scratch);
  else
    launch_fwd<Tr, T, false>(p, num_spans, max_q, plan, s, scratch);
}

// The mma.sync kernels at their one residency. kHooks: the instance with the score hooks, which
// masks causal calls itself (window right 0, in global positions where given).
template <class Tr, typename T, bool kHooks = false>
void dispatch_mma(const FlashFwdParams& p, int num_spans, int max_q, cudaStream_t s, const Scratch& scratch,
                  const LaunchOverrides& o) {
  static const std::vector<int> residencies{Tr::kCtasPerSm};  // per instantiation: no allocation per launch
  const int m_blocks = (max_q + Tr::kBlockM - 1) / Tr::kBlockM;
  const FwdPlan plan = plan_fwd<Tr>(p.shape, m_blocks, num_spans, p.seg.num_seqs > 0, residencies, o);
  if constexpr (kHooks)
    launch_fwd<Tr, T, false, true>(p, num_spans, max_q, plan, s, scratch);
  else
    dispatch_causal<Tr, T>(p, num_spans, max_q, plan, s, scratch);
}

// The wgmma kernel at two or three CTAs per SM, as the plan says (force_fwd_kernel may fix it).
template <typename T>
void dispatch_wgmma(const FlashFwdParams& p, int num_spans, int max_q, cudaStream_t s, const Scratch& scratch,
                    const LaunchOverrides& o) {
  using Tr = FwdWgTraits<2>;  // the tile shape of both builds
  static_assert(FwdWgTraits<3>::kBlockM == Tr::kBlockM && FwdWgTraits<3>::kBlockN == Tr::kBlockN,
                "one plan for both residencies");
  const int m_blocks = (max_q + Tr::kBlockM - 1) / Tr::kBlockM;
  static const std::vector<int> both{2, 3}, two{2}, three{3};  // no allocation per launch
  const std::vector<int>& residencies = o.fwd_kernel == 1 ? two : o.fwd_kernel == 2 ? three : both;
  const FwdPlan plan = plan_fwd<Tr>(p.shape, m_blocks, num_spans, p.seg.num_seqs > 0, residencies, o);
  if (plan.ctas_per_sm == 3) return dispatch_causal<FwdWgTraits<3>, T>(p, num_spans, max_q, plan, s, scratch);
  dispatch_causal<FwdWgTraits<2>, T>(p, num_spans, max_q, plan, s, scratch);
}

// The Hopper forward (fwd/) where it covers the call and (unless forced) its grid has a tile for
// every SM; smaller grids leave SMs idle there, where the split plan of the kernels here fills them.
// Varlen calls reach it only when forced (force_fwd_kernel(5)) until the harness has run them there.
bool use_hopper_fwd(const FlashFwdParams& p, const LaunchOverrides& o) {
  const bool forced = o.fwd_kernel == 3 || o.fwd_kernel == 5;
  if ((o.fwd_kernel != -1 && !forced) || !current_device().sm90 || !hopper_fwd_covers(p, o.fwd_kernel == 5))
    return false;
  return forced || hopper_fwd_tiles(p) >= current_device().sms;
}

template <typename T>
void dispatch_head_dim(const FlashFwdParams& p, int num_spans, int max_q, cudaStream_t s,
                       const Scratch& scratch, const LaunchOverrides& o) {
  if (p.shape.head_dim > 128) {  // the Hopper forward's alone
    if (p.mods.any(p.shape.causal))
      RFA_THROW("E_UNSUPPORTED",
                "flash_fwd: window_size, softcap, alibi_slopes, dropout_p and global positions "
                "need head_dim <= 128 on CUDA (head_dim " +
                    std::to_string(p.shape.head_dim) + ")");
    if (flash_fwd_hopper(p, s, scratch, o)) return;
    RFA_THROW("E_UNSUPPORTED",
              "flash_fwd: head_dim " + std::to_string(p.shape.head_dim) +
                  ": the driver declined a tensor map of q, k or v (a stride it cannot take)");
  }
  if (p.mods.any(p.shape.causal)) {
    // The Hopper forward's hook instance where it covers the call (dense, head_dim 64 and 128);
    // else the mma.sync kernels' hook instances, on every device.
    if (use_hopper_fwd(p, o) && flash_fwd_hopper(p, s, scratch, o)) return;
    switch (p.shape.head_dim) {
      case 32:
        return dispatch_mma<FwdTraits<32>, T, true>(p, num_spans, max_q, s, scratch, o);
      case 64:
        return dispatch_mma<FwdTraits<64>, T, true>(p, num_spans, max_q, s, scratch, o);
      case 96:
        return dispatch_mma<FwdTraits<96>, T, true>(p, num_spans, max_q, s, scratch, o);
      default:
        return dispatch_mma<FwdTraits<128, 1>, T, true>(p, num_spans, max_q, s, scratch, o);
    }
  }
  if (use_hopper_fwd(p, o) && flash_fwd_hopper(p, s, scratch, o)) return;
  switch (p.shape.head_dim) {
    case 32:
      return dispatch_mma<FwdTraits<32>, T>(p, num_spans, max_q, s, scratch, o);
    case 64:
      return dispatch_mma<FwdTraits<64>, T>(p, num_spans, max_q, s, scratch, o);
    case 96:
      return dispatch_mma<FwdTraits<96>, T>(p, num_spans, max_q, s, scratch, o);
    default:
      if (use_wgmma_fwd(o)) return dispatch_wgmma<T>(p, num_spans, max_q, s, scratch, o);
      return dispatch_mma<FwdTraits<128>, T>(p, num_spans, max_q, s, scratch, o);
  }
}

}  // namespace

LaunchOverrides& process_overrides() {
  static LaunchOverrides o;
  return o;
}

void force_fwd_plan(int whole, int splits) {
  RFA_CHECK_ARG(whole < 0 || (splits >= 1 && splits <= kMaxSplits), "force_fwd_plan: splits out of range");
  process_overrides().fwd_whole = whole, process_overrides().fwd_splits = splits;
}

void flash_fwd(const FlashFwdParams& p, cudaStream_t s, const Scratch& scratch) {
  flash_fwd(p, s, scratch, process_overrides());
}

void flash_fwd(const FlashFwdParams& params, cudaStream_t s, const Scratch& scratch,
               const LaunchOverrides& o) {
  RFA_CHECK_ARG(o.fwd_whole < 0 || (o.fwd_splits >= 1 && o.fwd_splits <= kMaxSplits),
                "flash_fwd: overrides: fwd_splits out of range");
  check_mods("flash_fwd", params.mods, params.seg);
  FlashFwdParams p = params;
  if (p.merge && !p.merge_src) {  // in place: the kernels always read the running out at merge_src
    RFA_CHECK_ARG(p.out_dtype == DType::f32, "flash_fwd: merging into a 16-bit out needs merge_src");
    p.merge_src = static_cast<const float*>(p.out), p.src_stride = p.o_stride;
  }
  const AttnShape& sh = p.shape;
  check_attn("flash_fwd", sh, p.dtype, p.seg, current_device().sm90 && p.seg.num_seqs == 0);
  const bool varlen = p.seg.num_seqs > 0;
  const int num_spans = varlen ? p.seg.num_seqs : sh.batch;
  const int max_q = varlen ? p.seg.max_seqlen_q : sh.seqlen_q;
  if (num_spans == 0 || max_q == 0) return;
  RFA_CHECK_ARG(p.q && p.k && p.v && p.out && p.lse, "flash_fwd: null tensor");
  RFA_CHECK_ARG(p.out_dtype == DType::f32 || p.out_dtype == p.dtype,
                "flash_fwd: out must be float32 or the dtype of q");
  check_view16("flash_fwd", "q", p.q, p.q_stride);
  check_view16("flash_fwd", "k", p.k, p.k_stride);
  check_view16("flash_fwd", "v", p.v, p.v_stride);
  if (p.dtype == DType::bf16)
    dispatch_head_dim<__nv_bfloat16>(p, num_spans, max_q, s, scratch, o);
  else
    dispatch_head_dim<__half>(p, num_spans, max_q, s, scratch, o);
}

}  // namespace rfa::cuda

// Host entry points of the CUDA kernels: the same operations as native/cpu/flash_cpu.h, queued
// on `stream`. Each validates cheaply and throws E_UNSUPPORTED / E_ARG, and every launch is
// checked (E_CUDA with the kernel's name).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <functional>

#include "attn_params.h"

namespace rfa::cuda {

// Tensor-core attention kernels; bf16/f16 inputs, head_dim 32, 64, 96 or 128 (the forward on
// Hopper also 192 and 256, dense batches; the Hopper backward there is behind
// LaunchOverrides::bwd_kernel 2 until it has run). Forward on sm_90: the FlashAttention-3 structure of
// native/cuda/fwd/ for dense head_dim 64..256 on grids of a tile per SM or more; otherwise, and
// for the backward, FlashAttention-2 style kernels: wgmma (Hopper) for head_dim 128 on sm_90,
// mma.sync m16n8k16 elsewhere, the forward splitting query tiles into key pieces for under-filled
// grids. Every forward may merge into a running out/lse.

// Device memory for a call's temporaries (flash_fwd's split partials). `release` runs as soon as
// the launches that use the block are queued on the call's stream: the allocator must hand it
// only to work ordered after them (the worker's caching allocator: same stream, and the comm
// stream waits for compute before every collective).
struct Scratch {
  std::function<void*(size_t)> alloc;
  std::function<void(void*)> release;
};

// A Scratch block that goes back when the scope ends, also when a launch throws.
class ScratchBlock {
 public:
  explicit ScratchBlock(const Scratch& s) : scratch_(s) {}
  ~ScratchBlock() {
    if (ptr_) scratch_.release(ptr_);
  }
  ScratchBlock(const ScratchBlock&) = delete;
  ScratchBlock& operator=(const ScratchBlock&) = delete;
  void* get(size_t bytes) { return ptr_ = scratch_.alloc(bytes); }

 private:
  const Scratch& scratch_;
  void* ptr_ = nullptr;
};

// Test knobs of the launchers, for the kernel harness (the addon passes none): every default
// leaves the choice to the launchers and their cost models.
struct LaunchOverrides {
  // Forward kernel: 0 mma.sync; 1 / 2 the FlashAttention-2 style wgmma kernel at two / three CTAs
  // per SM (head_dim 128 where the device runs sm_90a code); 3 the Hopper forward of
  // native/cuda/fwd/ wherever it covers the call (head_dim 64 to 256, dense; elsewhere as -1);
  // 4 the FlashAttention-2 style wgmma kernel at the residency chosen per launch (never the Hopper
  // forward); 5 as 3 with varlen segments on the Hopper forward too (head_dim <= 128; for the
  // harness's --hopper-varlen until it has run on a GPU); -1 the Hopper forward where it covers
  // the call with a tile for every SM, else as 4.
  int fwd_kernel = -1;
  // The FlashAttention-2 style forward's launch shape: 0 one CTA per query tile, 1 split tiles
  // wherever it applies, -1 the cost model.
  int fwd_schedule = -1;
  // Its dense launches keep the first `fwd_whole` query tiles whole and cut the rest into
  // `fwd_splits` (1..8) key ranges; fwd_whole < 0: the cost model.
  int fwd_whole = -1, fwd_splits = 0;
  // The Hopper forward's persistent grid at most `fwd_ctas` CTAs (so that small problems run many
  // tiles per CTA); <= 0 one per SM.
  int fwd_ctas = 0;
  // The Hopper forward's tile variant (head_dim 64 and 128): 0 128-key tiles in two stages, 1
  // 128-key tiles in more stages, 2 the widest key tiles (192 for head_dim 64, 176 for 128); -1 the
  // launch's own choice.
  int fwd_variant = -1;
  // The backward's query splits per key tile (1..8), -1 the cost model (plan_splits). Varlen
  // launches never split.
  int bwd_splits = -1;
  // Backward kernel: -1 the Hopper backward of native/cuda/bwd/ where it covers the call (head_dim
  // 128 on sm_90a, dense, the default mode), else as 1; 1 the FlashAttention-2 style kernels; 2 as
  // -1 with head_dim 64 and varlen segments on the Hopper backward too (for the harness's --bwd
  // until they have run on a GPU).
  int bwd_kernel = -1;
};

void flash_fwd(const FlashFwdParams& p, cudaStream_t stream, const Scratch& scratch,
               const LaunchOverrides& o);
// `scratch` holds the deterministic mode's turn counters.
void flash_bwd(const FlashBwdParams& p, cudaStream_t stream, const Scratch& scratch,
               const LaunchOverrides& o);
// The calls without overrides take the process-wide ones that the force_* functions set (kernel
// harness only; not thread-safe); the addon never sets them, so they stay at the defaults.
void flash_fwd(const FlashFwdParams& p, cudaStream_t stream, const Scratch& scratch);
void flash_bwd(const FlashBwdParams& p, cudaStream_t stream, const Scratch& scratch);
LaunchOverrides& process_overrides();
inline void force_fwd_schedule(int mode) { process_overrides().fwd_schedule = mode; }
inline void force_fwd_kernel(int mode) { process_overrides().fwd_kernel = mode; }
inline void force_fwd_ctas(int ctas) { process_overrides().fwd_ctas = ctas; }
inline void force_fwd_variant(int variant) { process_overrides().fwd_variant = variant; }
void force_fwd_plan(int whole, int splits);  // checks the range of `splits`
inline void force_bwd_splits(int splits) { process_overrides().bwd_splits = splits; }
inline void force_bwd_kernel(int mode) { process_overrides().bwd_kernel = mode; }

void flash_bwd_dot(const FlashBwdDotParams& p, cudaStream_t stream);
void merge(const MergeParams& p, cudaStream_t stream);
void cast(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n, cudaStream_t stream);
void add_f32(float* dst, const float* src, int64_t n, cudaStream_t stream);
void copy_bsh(const void* src, BshStrides src_stride, void* dst, BshStrides dst_stride, int32_t batch,
              int32_t seqlen, int32_t heads, int32_t head_dim, DType dtype, cudaStream_t stream);

}  // namespace rfa::cuda

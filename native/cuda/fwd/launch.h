// Launch of the Hopper forward (native/cuda/fwd/, sm_90a): FlashAttention-3 structure, TMA loads,
// warp-specialised warpgroups, persistent CTAs. flash_fwd.cu dispatches to it.
#pragma once
#include <cuda_runtime.h>

#include "attn_params.h"
#include "cuda/attn_kernels.h"

namespace rfa::cuda {

// Whether the Hopper forward covers the call: dense batches (with `varlen`, varlen segments too
// at head_dim <= 128; not yet run on a GPU, so only the harness asks for it), at least one key,
// head_dim 64, 128, 192 or 256; of the score hooks, a window and global positions on dense calls
// at head_dim 64 and 128. The device must run sm_90a code (the caller checks).
bool hopper_fwd_covers(const FlashFwdParams& p, bool varlen = false);
// Query tiles of the Hopper forward's grid (kBlockM rows, every head and batch entry).
int64_t hopper_fwd_tiles(const FlashFwdParams& p);
// Queues the call; false (nothing queued) when it does not cover the call or the driver declines
// a tensor map of the views. Varlen calls only with o.fwd_kernel == 5; o.fwd_ctas and
// o.fwd_variant shape the launch.
bool flash_fwd_hopper(const FlashFwdParams& p, cudaStream_t stream, const Scratch& scratch,
                      const LaunchOverrides& o);

}  // namespace rfa::cuda

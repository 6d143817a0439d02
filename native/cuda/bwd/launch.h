// Launch of the Hopper backward (native/cuda/bwd/, sm_90a): TMA loads, warp-specialised
// warpgroups, dQ by bulk reductions. flash_bwd.cu dispatches to it.
#pragma once
#include <cuda_runtime.h>

#include "attn_params.h"
#include "cuda/attn_kernels.h"
#include "cuda/bwd/work.cuh"

namespace rfa::cuda {

// Whether the Hopper backward covers the call: batches, head_dim 128, no score hooks, the
// default (atomic) mode, and a dq whose rows the bulk reductions can address (16-byte aligned base
// and strides); with `unrun` also head_dim 64, varlen segments, head_dim 192 and 256 (batches) and the
// deterministic mode (head_dim 64 and 128, batches), not yet run on a GPU, so that only
// LaunchOverrides::bwd_kernel 2 asks for them. The device must run sm_90a code (the caller
// checks).
bool hopper_bwd_covers(const FlashBwdParams& p, bool unrun = false);
// Queues the call on `grid` (sized for BwdHopperTraits<head_dim>'s tiles: 128 keys, 64 at
// head_dim 192 and 256, by 64-row steps); false (nothing queued) when it does not cover the call
// (o.bwd_kernel; the deterministic mode split) or the driver declines a tensor map.
bool flash_bwd_hopper(const FlashBwdParams& p, const BwdGrid& grid, cudaStream_t stream,
                      const LaunchOverrides& o);

}  // namespace rfa::cuda

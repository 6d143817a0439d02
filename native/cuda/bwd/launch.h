// Launch of the Hopper backward (native/cuda/bwd/, sm_90a): TMA loads, warp-specialised
// warpgroups, dQ by bulk reductions. flash_bwd.cu dispatches to it.
#pragma once
#include <cuda_runtime.h>

#include "attn_params.h"
#include "cuda/attn_kernels.h"
#include "cuda/bwd/work.cuh"

namespace rfa::cuda {

// Whether the Hopper backward covers the call: dense batches, head_dim 128 (and 64 with
// `head_dim_64`: not yet run on a GPU, so only LaunchOverrides::bwd_kernel 2 asks for it), no
// score hooks, the default (atomic) mode, and a dq whose rows the bulk reductions can address
// (16-byte aligned base and strides). The device must run sm_90a code (the caller checks).
bool hopper_bwd_covers(const FlashBwdParams& p, bool head_dim_64 = false);
// Queues the call on `grid` (sized for 128-key tiles of 64-row steps, as BwdWgTraits); false
// (nothing queued) when it does not cover the call (o.bwd_kernel) or the driver declines a
// tensor map.
bool flash_bwd_hopper(const FlashBwdParams& p, const BwdGrid& grid, cudaStream_t stream,
                      const LaunchOverrides& o);

}  // namespace rfa::cuda

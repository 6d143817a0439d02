// Tensor maps (TMA descriptors) of the Hopper kernels' 16-bit (batch, rows, heads, head_dim) views.
#pragma once
#include <cuda.h>

#include "attn_params.h"

namespace rfa::cuda {

// `st`'s view as a 4-d tensor map read in boxes of 64 columns x box_rows rows, 128-byte swizzled
// (the layout flash_wgmma.cuh's descriptors read); rows past `rows` arrive as zeros. False when the
// driver lacks the entry point or declines the view (alignment, strides).
bool encode_view(CUtensorMap* map, const void* base, DType dtype, int head_dim, int rows, int heads,
                 int batch, const BshStrides& st, int box_rows);

}  // namespace rfa::cuda

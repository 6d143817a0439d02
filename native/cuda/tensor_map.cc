// The driver's cuTensorMapEncodeTiled is reached through the runtime's entry-point query, so the
// addon needs no link against the driver library.
#include "cuda/tensor_map.h"

#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include "cuda/check.h"

namespace rfa::cuda {
namespace {

PFN_cuTensorMapEncodeTiled_v12000 encode_tiled() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
    RFA_CUDA_CHECK(
        cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &found));
    return found == cudaDriverEntryPointSuccess ? reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f)
                                                : nullptr;
  }();
  return fn;
}

}  // namespace

// Strides of axes of extent 1 are never followed; they only have to be valid.
bool encode_view(CUtensorMap* map, const void* base, DType dtype, int head_dim, int rows, int heads,
                 int batch, const BshStrides& st, int box_rows) {
  const auto encode = encode_tiled();
  if (!encode) return false;
  auto stride_bytes = [](int64_t stride, int extent) {
    return uint64_t(extent == 1 && stride <= 0 ? 16 : stride * 2);
  };
  const cuuint64_t dims[4] = {cuuint64_t(head_dim), cuuint64_t(rows), cuuint64_t(heads), cuuint64_t(batch)};
  const cuuint64_t strides[3] = {stride_bytes(st.row, rows), stride_bytes(st.head, heads),
                                 stride_bytes(st.batch, batch)};
  const cuuint32_t box[4] = {64, cuuint32_t(box_rows), 1, 1}, unit[4] = {1, 1, 1, 1};
  const CUresult r = encode(
      map, dtype == DType::bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 4,
      const_cast<void*>(base), dims, strides, box, unit, CU_TENSOR_MAP_INTERLEAVE_NONE,
      CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return r == CUDA_SUCCESS;
}

}  // namespace rfa::cuda

// Warp-level tensor-core building blocks of the attention kernels (sm_80 instructions that Hopper
// runs natively): ldmatrix fragment loads, mma.sync m16n8k16 with fp32 accumulators, cp.async
// 16-byte copies with zero fill, fp32 -> 16-bit packing.
//
// Fragment layouts (PTX ISA, "mma.m16n8k16"), with g = lane / 4 and t = lane % 4:
//   A 16x16 (row-major):  a0 = A[g][2t..2t+1], a1 = A[g+8][2t..], a2 = A[g][2t+8..], a3 = A[g+8][2t+8..]
//   B 16x8  (k x n):      b0 = B[2t..2t+1][g], b1 = B[2t+8..2t+9][g]
//   C 16x8  (fp32):       c0,c1 = C[g][2t..2t+1], c2,c3 = C[g+8][2t..2t+1]
// ldmatrix.x4 reads four 8x8 16-bit matrices; lanes 8i..8i+7 give the row addresses of matrix i,
// and register i of every lane receives row lane/4, elements 2(lane%4)..+1 of matrix i (of its
// transpose with .trans). A C fragment of two adjacent n-tiles is therefore an A fragment of the
// next product once packed to 16 bits, which keeps P and dS in registers.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace rfa::cuda {

// d += a * b on one m16n8k16 tile of input type AB ("bf16" or "f16").
#define RFA_MMA_M16N8K16(AB)                                                  \
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." AB "." AB             \
               ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n" \
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])               \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1))

// The 16-bit input types: packing two fp32 values (lo in the low half: the lower column) and the mma.
template <typename T>
struct MmaType {
  static_assert(std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>, "bf16 or fp16");
  static constexpr bool kBf16 = std::is_same_v<T, __nv_bfloat16>;
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
    if constexpr (kBf16) {
      __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
      return *reinterpret_cast<uint32_t*>(&v);
    } else {
      __half2 v = __floats2half2_rn(lo, hi);
      return *reinterpret_cast<uint32_t*>(&v);
    }
  }
  static __device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                             uint32_t b1) {
    if constexpr (kBf16)
      RFA_MMA_M16N8K16("bf16");
    else
      RFA_MMA_M16N8K16("f16");
  }
};
#undef RFA_MMA_M16N8K16

__device__ __forceinline__ uint32_t smem_u32(const void* p) { return uint32_t(__cvta_generic_to_shared(p)); }

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}

// 16-byte global -> shared copy that bypasses L1; with !valid nothing is read and the 16 bytes
// become zeros (src-size 0), which is how tile tails are padded.
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(smem)), "l"(gmem),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most N committed groups of this thread are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Copies a (kRows x kCols) 16-bit tile, row stride `stride` elements in global memory, into shared
// memory with row pitch kPitch; rows >= valid_rows are zero-filled. Called by all kThreads threads;
// consecutive threads take consecutive 16-byte chunks of a row, so global reads coalesce.
template <int kRows, int kCols, int kPitch, int kThreads, typename T>
__device__ __forceinline__ void load_tile_async(T* smem, const T* gmem, int64_t stride, int valid_rows) {
  constexpr int kChunksPerRow = kCols / 8;
  constexpr int kPerThread = kRows * kChunksPerRow / kThreads;
  static_assert(kRows * kChunksPerRow % kThreads == 0, "the tile must split evenly over the threads");
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    const int c = int(threadIdx.x) + i * kThreads;
    const int r = c / kChunksPerRow, col = (c % kChunksPerRow) * 8;
    const bool valid = r < valid_rows;
    cp_async_16(smem + r * kPitch + col, gmem + (valid ? r * stride : 0) + col, valid);
  }
}

// 2^x on the special-function unit; exp2(-inf) = +0, which the masks rely on.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

}  // namespace rfa::cuda

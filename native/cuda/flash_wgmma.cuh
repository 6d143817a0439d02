// Hopper (sm_90a) warpgroup MMA building blocks of the d=128 kernels (flash_fwd.cu, flash_bwd.cu):
// wgmma.mma_async with fp32 accumulators, operands from shared memory through matrix descriptors
// (128-byte swizzled tiles) or A from registers, and the fences around them. Only the shapes the
// kernel uses are instantiated; one asm template serves them all, its operand lists built by macros.
//
// Accumulator layout of m64nNk16 (PTX ISA, "wgmma register fragments"): warp w of the warpgroup
// holds rows 16w + g and 16w + g + 8 (g = lane / 4, t = lane % 4); d[4i + 0..1] = row g, columns
// 8i + 2t..+1; d[4i + 2..3] = row g + 8, same columns. A from registers uses the mma.m16n8k16 A
// layout on the warp's 16 rows, so a C fragment pair packed to 16 bits is an A fragment.
//
// Shared tiles are stored as [cols / 64][rows][64] 16-bit elements, 128-byte rows with the 16-byte
// chunk index XOR (row % 8) (CUTLASS Swizzle<3,4,3>), 1024-byte aligned. Such a tile is K-major
// (K = the 64-element columns) for S = Q K^T and S^T = K Q^T, and MN-major (MN = columns, K =
// rows) for O += P V, dV += P^T dO, dK += dS^T Q and dQ = dS K.
#pragma once
#include <cstdint>
#include <type_traits>

#include "cuda/flash_mma.cuh"

namespace rfa::cuda {

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define RFA_WGMMA_ENABLED 1
#endif

// Matrix descriptor of a 128-byte swizzled operand at shared address `addr` (PTX "matrix
// descriptor"): start >> 4 in bits 0-13, leading byte offset >> 4 in 16-29, stride byte offset
// >> 4 in 32-45, swizzle mode 1 (128B) in 62-63. K-major: SBO = 1024 (8-row groups), LBO unused.
// MN-major: LBO = bytes between 64-element column blocks, SBO = 1024 (8-row groups along K).
__device__ __forceinline__ uint64_t gmma_desc(uint32_t addr, uint32_t lbo_bytes) {
  return uint64_t((addr & 0x3FFFF) >> 4) | (uint64_t(lbo_bytes >> 4) << 16) | (uint64_t(1024 >> 4) << 32) |
         (uint64_t(1) << 62);
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Generic-proxy shared writes (st.shared, cp.async) made visible to wgmma (async proxy) reads.
__device__ __forceinline__ void fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
// Keeps the compiler from moving accumulator reads/writes across wgmma issue and wait.
template <int N>
__device__ __forceinline__ void fence_regs(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// The asm of wgmma.mma_async for one shape: SHAPE ("m64n64k16"), AB ("bf16" or "f16"), the
// accumulator operand names REGS ("%0,...,%31") and constraints ACC, then the operand numbers of
// the other arguments, which follow the accumulators. SS: A and B from shared memory; RS: A from
// registers.
#define RFA_WGMMA_SS_ASM(SHAPE, AB, REGS, ACC, DA, DB, SCALE, TA, TB)                                 \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" #SCALE                                            \
               ", 0;\n"                                                                               \
               "wgmma.mma_async.sync.aligned." SHAPE ".f32." AB "." AB " {" REGS "}, %" #DA ", %" #DB \
               ", p, 1, 1, %" #TA ", %" #TB ";\n}\n"                                                  \
               : ACC                                                                                  \
               : "l"(da), "l"(db), "r"(scale_d), "n"(kTnspA), "n"(kTnspB))
#define RFA_WGMMA_RS_ASM(SHAPE, AB, REGS, ACC, A0, A1, A2, A3, DB, SCALE, TB)                         \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" #SCALE                                            \
               ", 0;\n"                                                                               \
               "wgmma.mma_async.sync.aligned." SHAPE ".f32." AB "." AB " {" REGS "}, {%" #A0 ",%" #A1 \
               ",%" #A2 ",%" #A3 "}, %" #DB ", p, 1, 1, %" #TB ";\n}\n"                               \
               : ACC                                                                                  \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(scale_d), "n"(kTnspB))

// Accumulator operands: names by decades of operand numbers ("%T0,...,%T9", T the tens), the
// constraints by eights.
#define RFA_DECADE(T) \
  "%" #T "0,%" #T "1,%" #T "2,%" #T "3,%" #T "4,%" #T "5,%" #T "6,%" #T "7,%" #T "8,%" #T "9"
#define RFA_REGS16 RFA_DECADE() ",%10,%11,%12,%13,%14,%15"
#define RFA_REGS30 RFA_DECADE() "," RFA_DECADE(1) "," RFA_DECADE(2) ","
#define RFA_REGS60 RFA_REGS30 RFA_DECADE(3) "," RFA_DECADE(4) "," RFA_DECADE(5) ","
#define RFA_REGS90 RFA_REGS60 RFA_DECADE(6) "," RFA_DECADE(7) "," RFA_DECADE(8) ","
#define RFA_REGS32 RFA_REGS30 "%30,%31"
#define RFA_REGS40 RFA_REGS30 RFA_DECADE(3)
#define RFA_REGS48 RFA_REGS30 RFA_DECADE(3) ",%40,%41,%42,%43,%44,%45,%46,%47"
#define RFA_REGS64 RFA_REGS60 "%60,%61,%62,%63"
#define RFA_REGS88 RFA_REGS60 RFA_DECADE(6) "," RFA_DECADE(7) ",%80,%81,%82,%83,%84,%85,%86,%87"
#define RFA_REGS96 RFA_REGS90 "%90,%91,%92,%93,%94,%95"
#define RFA_REGS128 \
  RFA_REGS90 RFA_DECADE(9) "," RFA_DECADE(10) "," RFA_DECADE(11) ",%120,%121,%122,%123,%124,%125,%126,%127"
#define RFA_ACC8(B)                                                                           \
  "+f"(d[B]), "+f"(d[B + 1]), "+f"(d[B + 2]), "+f"(d[B + 3]), "+f"(d[B + 4]), "+f"(d[B + 5]), \
      "+f"(d[B + 6]), "+f"(d[B + 7])
#define RFA_ACC16 RFA_ACC8(0), RFA_ACC8(8)
#define RFA_ACC32 RFA_ACC16, RFA_ACC8(16), RFA_ACC8(24)
#define RFA_ACC40 RFA_ACC32, RFA_ACC8(32)
#define RFA_ACC48 RFA_ACC40, RFA_ACC8(40)
#define RFA_ACC64 RFA_ACC48, RFA_ACC8(48), RFA_ACC8(56)
#define RFA_ACC88 RFA_ACC64, RFA_ACC8(64), RFA_ACC8(72), RFA_ACC8(80)
#define RFA_ACC96 RFA_ACC88, RFA_ACC8(88)
#define RFA_ACC128 RFA_ACC96, RFA_ACC8(96), RFA_ACC8(104), RFA_ACC8(112), RFA_ACC8(120)

// One shape of N columns (NR = N / 2 accumulators per thread) of KIND (SS or RS) in both input
// types; the numbers are those of the operands after the accumulators.
#define RFA_WGMMA_CASE(KIND, N_, NR, ...)                                                       \
  if constexpr (N == N_) {                                                                      \
    if constexpr (kBf16)                                                                        \
      RFA_WGMMA_##KIND##_ASM("m64n" #N_ "k16", "bf16", RFA_REGS##NR, RFA_ACC##NR, __VA_ARGS__); \
    else                                                                                        \
      RFA_WGMMA_##KIND##_ASM("m64n" #N_ "k16", "f16", RFA_REGS##NR, RFA_ACC##NR, __VA_ARGS__);  \
  }

template <int N>
constexpr bool wgmma_ss_shape() {
  return N == 32 || N == 64 || N == 80 || N == 96 || N == 128 || N == 176 || N == 192;
}
template <int N>
constexpr bool wgmma_rs_shape() {
  return N == 64 || N == 96 || N == 128 || N == 192 || N == 256;
}

// d (64 x N) = (scale_d ? d : 0) + A (64 x 16, smem) x B (16 x N, smem).
template <typename T, int N, int kTnspA, int kTnspB>
__device__ __forceinline__ void wgmma_ss(float (&d)[N / 2], uint64_t da, uint64_t db, int scale_d) {
  static_assert(wgmma_ss_shape<N>(), "an m64nNk16 shape instantiated below");
#ifdef RFA_WGMMA_ENABLED
  constexpr bool kBf16 = std::is_same_v<T, __nv_bfloat16>;
  RFA_WGMMA_CASE(SS, 32, 16, 16, 17, 18, 19, 20)
  RFA_WGMMA_CASE(SS, 64, 32, 32, 33, 34, 35, 36)
  RFA_WGMMA_CASE(SS, 80, 40, 40, 41, 42, 43, 44)
  RFA_WGMMA_CASE(SS, 96, 48, 48, 49, 50, 51, 52)
  RFA_WGMMA_CASE(SS, 128, 64, 64, 65, 66, 67, 68)
  RFA_WGMMA_CASE(SS, 176, 88, 88, 89, 90, 91, 92)
  RFA_WGMMA_CASE(SS, 192, 96, 96, 97, 98, 99, 100)
#endif
}

// d (64 x N) = (scale_d ? d : 0) + A (64 x 16, registers) x B (16 x N, smem).
template <typename T, int N, int kTnspB>
__device__ __forceinline__ void wgmma_rs(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t db,
                                         int scale_d) {
  static_assert(wgmma_rs_shape<N>(), "an m64nNk16 shape instantiated below");
#ifdef RFA_WGMMA_ENABLED
  constexpr bool kBf16 = std::is_same_v<T, __nv_bfloat16>;
  RFA_WGMMA_CASE(RS, 64, 32, 32, 33, 34, 35, 36, 37, 38)
  RFA_WGMMA_CASE(RS, 96, 48, 48, 49, 50, 51, 52, 53, 54)
  RFA_WGMMA_CASE(RS, 128, 64, 64, 65, 66, 67, 68, 69, 70)
  RFA_WGMMA_CASE(RS, 192, 96, 96, 97, 98, 99, 100, 101, 102)
  RFA_WGMMA_CASE(RS, 256, 128, 128, 129, 130, 131, 132, 133, 134)
#endif
}

#undef RFA_WGMMA_CASE
#undef RFA_WGMMA_SS_ASM
#undef RFA_WGMMA_RS_ASM
#undef RFA_DECADE
#undef RFA_REGS16
#undef RFA_REGS30
#undef RFA_REGS60
#undef RFA_REGS90
#undef RFA_REGS32
#undef RFA_REGS40
#undef RFA_REGS48
#undef RFA_REGS64
#undef RFA_REGS88
#undef RFA_REGS96
#undef RFA_REGS128
#undef RFA_ACC8
#undef RFA_ACC16
#undef RFA_ACC32
#undef RFA_ACC40
#undef RFA_ACC48
#undef RFA_ACC64
#undef RFA_ACC88
#undef RFA_ACC96
#undef RFA_ACC128

// Copies a (kRows x 128) 16-bit tile into the swizzled [2][kRows][64] layout above;
// rows >= valid_rows become zeros.
template <int kRows, int kThreads, typename T>
__device__ __forceinline__ void load_tile_sw128(T* smem, const T* gmem, int64_t stride, int valid_rows) {
  constexpr int kPerThread = kRows * 16 / kThreads;
  static_assert(kRows * 16 % kThreads == 0, "the tile must split evenly over the threads");
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    const int c = int(threadIdx.x) + i * kThreads;
    const int r = c / 16, ch = c % 16;
    const bool valid = r < valid_rows;
    cp_async_16(smem + (ch / 8) * (kRows * 64) + r * 64 + (((ch % 8) ^ (r % 8)) * 8),
                gmem + (valid ? r * stride : 0) + ch * 8, valid);
  }
}

}  // namespace rfa::cuda

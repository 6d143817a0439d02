// Hopper (sm_90) synchronisation and copy primitives of the warp-specialised kernels: mbarriers
// (transaction-counted arrivals), bulk tensor copies (TMA) that complete on them, named barriers
// between warpgroups, and register reallocation between warpgroup roles.
//
// An mbarrier counts arrivals and, for TMA, bytes: a phase completes once `count` arrivals and
// every expected byte have come, and the barrier moves to the next phase. Waiting on parity P
// returns once the phase of parity P has completed, so a waiter that starts on parity 1 passes a
// fresh barrier at once (the producer's first wait on an empty stage), one on parity 0 waits for
// the first completion (the consumer's first wait on a full stage).
#pragma once
#include <cuda.h>

#include <cstdint>

#include "cuda/flash_wgmma.cuh"

namespace rfa::cuda {

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define RFA_SM90_ASYNC 1
#endif

__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
#ifdef RFA_SM90_ASYNC
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(count) : "memory");
#endif
}

// Makes the initialised barriers visible to the async proxy (TMA) and the other threads.
__device__ __forceinline__ void mbar_fence_init() {
#ifdef RFA_SM90_ASYNC
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
#ifdef RFA_SM90_ASYNC
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_u32(bar)) : "memory");
#endif
}

// One arrival that also announces `bytes` still to come from bulk copies.
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
#ifdef RFA_SM90_ASYNC
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(bytes)
               : "memory");
#endif
}

__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
#ifdef RFA_SM90_ASYNC
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(smem_u32(bar)), "r"(parity)
        : "memory");
  } while (!done);
#endif
}

// Box (c0 .. c0 + box0, c1 .. c1 + box1, c2, c3) of a 4-d tensor map into shared memory at `dst`,
// counted in bytes on `bar`. Elements past the tensor's extent arrive as zeros (and still count).
__device__ __forceinline__ void tma_load_4d(void* dst, const CUtensorMap* map, uint64_t* bar, int c0, int c1,
                                            int c2, int c3) {
#ifdef RFA_SM90_ASYNC
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, "
      "%5, %6}], [%2];\n" ::"r"(smem_u32(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_u32(bar)), "r"(c0), "r"(c1), "r"(c2), "r"(c3)
      : "memory");
#endif
}

__device__ __forceinline__ void tma_prefetch_map(const CUtensorMap* map) {
#ifdef RFA_SM90_ASYNC
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(map)) : "memory");
#endif
}

// Bulk reduction (sm_90): adds `bytes` (a multiple of 16; both addresses 16-byte aligned) of fp32
// from shared memory onto global memory, each element atomically, as one async bulk operation of
// the calling thread's bulk group. Commit, then wait: `read` once the shared source may be
// rewritten, plain once the additions are done.
__device__ __forceinline__ void bulk_reduce_add_f32(float* gdst, const void* ssrc, uint32_t bytes) {
#ifdef RFA_SM90_ASYNC
  asm volatile("cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [%0], [%1], %2;\n" ::"l"(gdst),
               "r"(smem_u32(ssrc)), "r"(bytes)
               : "memory");
#endif
}
__device__ __forceinline__ void bulk_commit() {
#ifdef RFA_SM90_ASYNC
  asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
#endif
}
template <int N>
__device__ __forceinline__ void bulk_wait_read() {
#ifdef RFA_SM90_ASYNC
  asm volatile("cp.async.bulk.wait_group.read %0;\n" ::"n"(N) : "memory");
#endif
}
template <int N>
__device__ __forceinline__ void bulk_wait() {
#ifdef RFA_SM90_ASYNC
  asm volatile("cp.async.bulk.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

// Thread 0 initialises the CTA's mbarrier sets (each one's `init()`) and makes them visible to
// the async proxy; past the CTA barrier every thread may use them.
template <class... Bars>
__device__ __forceinline__ void init_barriers(Bars&... bars) {
  if (threadIdx.x == 0) {
    (bars.init(), ...);
    mbar_fence_init();
  }
  __syncthreads();
}

// Rows [from, rows) of a [kColBlocks][rows][64] 16-bit tile in the TMA boxes' 128-byte swizzled
// layout, zeroed by `threads` threads (this one is `tid`) in 16-byte chunks: whole rows, so the
// swizzle, a permutation within a row, does not matter.
template <int kColBlocks>
__device__ __forceinline__ void zero_tile_rows(unsigned char* tile, int rows, int from, int tid,
                                               int threads) {
  const int per_block = (rows - from) * 8;
  for (int i = tid; i < per_block * kColBlocks; i += threads) {
    const int cb = i / per_block, c = i % per_block;
    *reinterpret_cast<uint4*>(tile + cb * rows * 128 + (from + c / 8) * 128 + (c % 8) * 16) =
        make_uint4(0u, 0u, 0u, 0u);
  }
}

// Named barrier `id` (1..15; 0 is __syncthreads) over `threads` threads: sync waits for all of
// them, arrive counts in without waiting.
__device__ __forceinline__ void named_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// Register budget of the calling warpgroup (sm_90a); every warp of it must execute the same one.
template <int kRegs>
__device__ __forceinline__ void warpgroup_reg_dealloc() {
#ifdef RFA_WGMMA_ENABLED
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegs));
#endif
}
template <int kRegs>
__device__ __forceinline__ void warpgroup_reg_alloc() {
#ifdef RFA_WGMMA_ENABLED
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegs));
#endif
}

}  // namespace rfa::cuda

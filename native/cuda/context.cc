#include "cuda/context.h"

#include <chrono>
#include <cstring>
#include <string>
#include <thread>

#include "cuda/check.h"

namespace rfa::cuda {

DeviceContext::DeviceContext(int device) : device_(device) {
  RFA_CUDA_CHECK(cudaSetDevice(device));
  RFA_CUDA_CHECK(cudaStreamCreateWithFlags(&compute_, cudaStreamNonBlocking));
  RFA_CUDA_CHECK(cudaStreamCreateWithFlags(&comm_, cudaStreamNonBlocking));
  RFA_CUDA_CHECK(cudaEventCreateWithFlags(&compute_done_, cudaEventDisableTiming));
  RFA_CUDA_CHECK(cudaEventCreateWithFlags(&comm_done_, cudaEventDisableTiming));
}

DeviceContext::~DeviceContext() {
  cudaSetDevice(device_);
  cudaStreamSynchronize(compute_);
  cudaStreamSynchronize(comm_);
  for (auto& kv : free_)
    for (void* p : kv.second) cudaFree(p);
  for (auto& kv : live_) cudaFree(kv.first);
  for (StageSlot& slot : stage_) {
    cudaFreeHost(slot.host);
    cudaEventDestroy(slot.read);
  }
  cudaEventDestroy(compute_done_);
  cudaEventDestroy(comm_done_);
  cudaStreamDestroy(compute_);
  cudaStreamDestroy(comm_);
}

// 512 B granularity below 1 MiB, then steps of 1/8 of the power of two: reuse without
// wasting more than an eighth of a block.
size_t DeviceContext::round_size(size_t bytes) {
  if (bytes == 0) bytes = 1;
  if (bytes <= (1u << 20)) return (bytes + 511) & ~size_t(511);
  size_t p = size_t(1) << (63 - __builtin_clzll(bytes));
  size_t step = p / 8;
  return (bytes + step - 1) / step * step;
}

void* DeviceContext::alloc(size_t bytes) {
  const size_t size = round_size(bytes);
  auto it = free_.find(size);
  void* p = nullptr;
  if (it != free_.end()) {
    p = it->second.back();
    it->second.pop_back();
    if (it->second.empty()) free_.erase(it);
    cached_ -= size;
  } else {
    cudaError_t err = cudaMalloc(&p, size);
    if (err == cudaErrorMemoryAllocation) {
      cudaGetLastError();  // clear the sticky-free allocation error
      empty_cache();
      err = cudaMalloc(&p, size);
    }
    if (err != cudaSuccess) {
      cudaGetLastError();
      RFA_THROW("E_CUDA", "out of device memory: requested " + std::to_string(size) + " bytes, in use " +
                              std::to_string(in_use_) + ", cached " + std::to_string(cached_) + " (" +
                              cudaGetErrorString(err) + ")");
    }
  }
  live_[p] = size;
  in_use_ += size;
  if (in_use_ > peak_) peak_ = in_use_;
  return p;
}

void DeviceContext::release(void* p) {
  auto it = live_.find(p);
  if (it == live_.end()) return;  // double release is a no-op
  free_[it->second].push_back(p);
  in_use_ -= it->second;
  cached_ += it->second;
  live_.erase(it);
}

void DeviceContext::empty_cache() {
  cudaStreamSynchronize(compute_);
  cudaStreamSynchronize(comm_);
  for (auto& kv : free_)
    for (void* p : kv.second) cudaFree(p);
  free_.clear();
  cached_ = 0;
}

void DeviceContext::comm_waits_for_compute() {
  RFA_CUDA_CHECK(cudaEventRecord(compute_done_, compute_));
  RFA_CUDA_CHECK(cudaStreamWaitEvent(comm_, compute_done_, 0));
}

void DeviceContext::compute_waits_for_comm() {
  RFA_CUDA_CHECK(cudaEventRecord(comm_done_, comm_));
  RFA_CUDA_CHECK(cudaStreamWaitEvent(compute_, comm_done_, 0));
}

DeviceContext::StageSlot& DeviceContext::free_stage_slot() {
  for (size_t i = 0; i < stage_.size(); ++i) {
    StageSlot& slot = stage_[(next_stage_ + i) % stage_.size()];
    const cudaError_t state = cudaEventQuery(slot.read);
    if (state == cudaErrorNotReady) continue;
    RFA_CUDA_CHECK(state);
    next_stage_ = (next_stage_ + i + 1) % stage_.size();
    return slot;
  }
  StageSlot slot;
  RFA_CUDA_CHECK(cudaHostAlloc(&slot.host, kStageBytes, cudaHostAllocDefault));
  if (const cudaError_t err = cudaEventCreateWithFlags(&slot.read, cudaEventDisableTiming);
      err != cudaSuccess) {
    cudaFreeHost(slot.host);
    RFA_CUDA_CHECK(err);
  }
  stage_.push_back(slot);
  next_stage_ = 0;
  return stage_.back();
}

void DeviceContext::h2d(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  if (bytes <= kStageBytes) {
    StageSlot& slot = free_stage_slot();
    std::memcpy(slot.host, src, bytes);
    RFA_CUDA_CHECK(cudaMemcpyAsync(dst, slot.host, bytes, cudaMemcpyHostToDevice, compute_));
    RFA_CUDA_CHECK(cudaEventRecord(slot.read, compute_));
    return;
  }
  RFA_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, compute_));
  RFA_CUDA_CHECK(cudaStreamSynchronize(compute_));
}

void DeviceContext::d2h(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  RFA_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, compute_));
  RFA_CUDA_CHECK(cudaStreamSynchronize(compute_));
}

void DeviceContext::synchronize(int timeout_ms, const std::function<void()>& poll) {
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  const auto deadline = start + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    cudaError_t a = cudaStreamQuery(compute_), b = cudaStreamQuery(comm_);
    if (a == cudaSuccess && b == cudaSuccess) return;
    if (a != cudaErrorNotReady && a != cudaSuccess)
      RFA_THROW("E_CUDA", std::string("compute stream: ") + cudaGetErrorString(a));
    if (b != cudaErrorNotReady && b != cudaSuccess)
      RFA_THROW("E_CUDA", std::string("comm stream: ") + cudaGetErrorString(b));
    if (poll) poll();
    if (clock::now() > deadline) {
      // A busy comm stream means a collective that never completed: report it as NCCL's.
      const bool comm_stuck = b == cudaErrorNotReady;
      RFA_THROW(comm_stuck ? "E_NCCL" : "E_CUDA", std::string(comm_stuck ? "communication stuck: " : "") +
                                                      "timed out after " + std::to_string(timeout_ms) +
                                                      " ms waiting for the GPU (device " +
                                                      std::to_string(device_) + ")");
    }
    // Spin (yielding) for the first 20 ms so the wait ends within microseconds of the GPU; a
    // growing sleep would overshoot by up to its last interval per sync, which a short timing loop
    // reads as slower kernels (measured: benchmark/RESULTS.md). Long waits (collectives, big
    // kernels) then sleep 200 us at a time.
    if (clock::now() - start < std::chrono::milliseconds(20))
      std::this_thread::yield();
    else
      std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

int DeviceContext::device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

bool DeviceContext::can_access_peer(int device, int peer) {
  int can = 0;
  if (cudaDeviceCanAccessPeer(&can, device, peer) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return can != 0;
}

}  // namespace rfa::cuda

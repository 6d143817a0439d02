// FlashAttention-2 style forward on tensor cores (mma.sync m16n8k16, fp32 accumulators).
// One CTA per (64-row query tile, head, batch entry or varlen segment); 4 warps, 16 query rows
// each. K/V tiles stream through shared memory (the next K tile is fetched while the current
// block's P·V runs); S = Q Kᵀ and the online softmax stay in registers, P feeds the P·V mma
// straight from the S accumulators. Writes fp32 out and fp32 natural-log lse, so ring merges
// never round through bf16. Causal is bottom-right aligned; fully masked key tiles are skipped.
//
// Measured versions are recorded in benchmark/RESULTS.md.
#include <cmath>
#include <string>

#include "cuda/attn_common.cuh"
#include "cuda/attn_kernels.h"
#include "cuda/check.h"

namespace rfa::cuda {
namespace {

template <int kHeadDim, typename Ty>
__global__ void __launch_bounds__(128) flash_fwd_kernel(FlashFwdParams p) {
  using Tile = AttnTile<kHeadDim>;
  using T = typename Ty::T;
  constexpr int kPitch = Tile::kPitch, kDimTiles = kHeadDim / 8, kDimChunks = kHeadDim / 16;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sK = sQ + 64 * kPitch;
  T* sV = sK + 64 * kPitch;

  const AttnShape& sh = p.shape;
  const Span sp = span_of(sh, p.seg, blockIdx.z);
  const int m_block = blockIdx.x, h = blockIdx.y;
  if (m_block * 64 >= sp.nq) return;
  const int hk = h / (sh.nheads / sh.nheads_k);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const T* q = static_cast<const T*>(p.q);
  const T* k = static_cast<const T*>(p.k);
  const T* v = static_cast<const T*>(p.v);

  // Key tiles this query tile can see (causal: up to its last row's diagonal).
  const int causal_shift = sp.nk - sp.nq;  // query row i sees keys j <= i + causal_shift
  int n_blocks = (sp.nk + 63) / 64;
  if (sh.causal) {
    const int last_visible = min(sp.nk - 1, m_block * 64 + 63 + causal_shift);
    n_blocks = last_visible < 0 ? 0 : min(n_blocks, last_visible / 64 + 1);
  }

  load_tile<kHeadDim>(sQ, q, p.q_stride, sp.b, h, sp.q0, m_block * 64, sp.nq);
  if (n_blocks > 0) load_tile<kHeadDim>(sK, k, p.k_stride, sp.b, hk, sp.k0, 0, sp.nk);
  cp_async_commit();

  const float scale_log2 = sh.softmax_scale * kLog2e;
  float o[kDimTiles][4] = {};
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.f, 0.f};
  uint32_t qf[kDimChunks][4];
  const int row_in_tile = warp * 16 + g;

  for (int n = 0; n < n_blocks; ++n) {
    // V of this block streams in while S = Q Kᵀ runs.
    load_tile<kHeadDim>(sV, v, p.v_stride, sp.b, hk, sp.k0, n * 64, sp.nk);
    cp_async_commit();
    cp_async_wait<1>();  // Q (first pass) and K are here
    __syncthreads();
    if (n == 0) {
#pragma unroll
      for (int kc = 0; kc < kDimChunks; ++kc)
        ldmatrix_x4(qf[kc], sQ + (warp * 16 + lane % 16) * kPitch + kc * 16 + (lane / 16) * 8);
    }
    float s[8][4] = {};
#pragma unroll
    for (int kc = 0; kc < kDimChunks; ++kc) {
#pragma unroll
      for (int nt = 0; nt < 8; nt += 2) {
        uint32_t kf[4];
        ldmatrix_x4(kf, sK + (nt * 8 + lane % 8 + (lane / 16) * 8) * kPitch + kc * 16 + ((lane / 8) % 2) * 8);
        Ty::mma(s[nt], qf[kc], kf[0], kf[1]);
        Ty::mma(s[nt + 1], qf[kc], kf[2], kf[3]);
      }
    }
    // Mask keys past the span and, causally, past each row's diagonal.
    const bool need_mask = (n + 1) * 64 > sp.nk || (sh.causal && (n + 1) * 64 - 1 > m_block * 64 + causal_shift);
    if (need_mask) {
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = n * 64 + nt * 8 + 2 * t + (e & 1);
          const int row = m_block * 64 + row_in_tile + (e >> 1) * 8;
          if (key >= sp.nk || (sh.causal && key > row + causal_shift)) s[nt][e] = -INFINITY;
        }
    }
    // Online softmax: rows g (e = 0, 1) and g + 8 (e = 2, 3) of this warp.
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = row_max[r];
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      // A row with no visible key so far keeps max -inf; use 0 so exp2 gives 0, not NaN.
      const float base = mx == -INFINITY ? 0.f : mx * scale_log2;
      const float alpha = exp2f(row_max[r] * scale_log2 - base);
      row_max[r] = mx;
      row_sum[r] *= alpha;
#pragma unroll
      for (int dt = 0; dt < kDimTiles; ++dt) {
        o[dt][2 * r] *= alpha;
        o[dt][2 * r + 1] *= alpha;
      }
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
        s[nt][2 * r] = exp2f(s[nt][2 * r] * scale_log2 - base);
        s[nt][2 * r + 1] = exp2f(s[nt][2 * r + 1] * scale_log2 - base);
        row_sum[r] += s[nt][2 * r] + s[nt][2 * r + 1];
      }
    }
    cp_async_wait<0>();  // V is here
    __syncthreads();     // ... for every warp; and every warp is done reading sK
    if (n + 1 < n_blocks) {
      load_tile<kHeadDim>(sK, k, p.k_stride, sp.b, hk, sp.k0, (n + 1) * 64, sp.nk);
      cp_async_commit();
    }
    // O += P V, P taken from the S accumulators (two 8-key tiles make one 16-key A fragment).
#pragma unroll
    for (int kc = 0; kc < 4; ++kc) {
      uint32_t pf[4] = {Ty::pack(s[2 * kc][0], s[2 * kc][1]), Ty::pack(s[2 * kc][2], s[2 * kc][3]),
                        Ty::pack(s[2 * kc + 1][0], s[2 * kc + 1][1]), Ty::pack(s[2 * kc + 1][2], s[2 * kc + 1][3])};
#pragma unroll
      for (int dt = 0; dt < kDimTiles; dt += 2) {
        uint32_t vf[4];
        ldmatrix_x4_trans(vf, sV + (kc * 16 + lane % 8 + ((lane / 8) % 2) * 8) * kPitch + dt * 8 + (lane / 16) * 8);
        Ty::mma(o[dt], pf, vf[0], vf[1]);
        Ty::mma(o[dt + 1], pf, vf[2], vf[3]);
      }
    }
    __syncthreads();  // sV is read by every warp before the next block overwrites it
  }
  cp_async_wait<0>();

  // Epilogue: normalise, write fp32 out and lse = max·scale + ln(sum).
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float sum = row_sum[r];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    const int row = m_block * 64 + row_in_tile + r * 8;
    if (row >= sp.nq) continue;
    const float inv = sum > 0.f ? 1.f / sum : 0.f;
    float* out = p.out + sp.b * p.o_stride.batch + int64_t(sp.q0 + row) * p.o_stride.row + int64_t(h) * p.o_stride.head;
#pragma unroll
    for (int dt = 0; dt < kDimTiles; ++dt)
      *reinterpret_cast<float2*>(out + dt * 8 + 2 * t) = make_float2(o[dt][2 * r] * inv, o[dt][2 * r + 1] * inv);
    if (t == 0)
      p.lse[sp.b * p.lse_stride.batch + int64_t(h) * p.lse_stride.head + int64_t(sp.q0 + row) * p.lse_stride.row] =
          sum > 0.f ? row_max[r] * sh.softmax_scale + logf(sum) : -INFINITY;
  }
}

template <int kHeadDim, typename Ty>
void launch_fwd(const FlashFwdParams& p, cudaStream_t stream) {
  constexpr int kSmem = 3 * 64 * AttnTile<kHeadDim>::kPitch * 2;
  auto kernel = flash_fwd_kernel<kHeadDim, Ty>;
  RFA_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
  const int rows = p.seg.num_seqs ? p.seg.max_seqlen_q : p.shape.seqlen_q;
  const dim3 grid((rows + 63) / 64, p.shape.nheads, p.seg.num_seqs ? p.seg.num_seqs : p.shape.batch);
  if (grid.x == 0 || grid.z == 0) return;
  kernel<<<grid, AttnTile<kHeadDim>::kThreads, kSmem, stream>>>(p);
  RFA_CHECK_LAUNCH("flash_fwd_kernel");
}

}  // namespace

void check_attn_operands(const AttnShape& sh, DType dtype, const char* fn);

void flash_fwd(const FlashFwdParams& p, cudaStream_t stream) {
  check_attn_operands(p.shape, p.dtype, "flash_fwd");
  if (!p.q || !p.k || !p.v || !p.out || !p.lse) RFA_THROW("E_ARG", "flash_fwd: null tensor");
  const bool bf16 = p.dtype == DType::bf16;
  if (p.shape.head_dim == 64) bf16 ? launch_fwd<64, Bf16>(p, stream) : launch_fwd<64, F16>(p, stream);
  else bf16 ? launch_fwd<128, Bf16>(p, stream) : launch_fwd<128, F16>(p, stream);
}

// Shared validation of the attention kernels' operands.
void check_attn_operands(const AttnShape& sh, DType dtype, const char* fn) {
  if (dtype == DType::f32)
    RFA_THROW("E_UNSUPPORTED", std::string(fn) + ": the CUDA kernels take bfloat16 or float16 inputs, not float32");
  if (sh.head_dim != 64 && sh.head_dim != 128)
    RFA_THROW("E_UNSUPPORTED", std::string(fn) + ": head_dim " + std::to_string(sh.head_dim) +
                                   " is not supported by the CUDA kernels (64 or 128)");
  if (sh.nheads <= 0 || sh.nheads_k <= 0 || sh.nheads % sh.nheads_k != 0)
    RFA_THROW("E_SHAPE", std::string(fn) + ": nheads must be a positive multiple of nheads_k");
}

}  // namespace rfa::cuda

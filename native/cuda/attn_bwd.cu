// FlashAttention-2 style backward on tensor cores. One CTA per (64-key tile, KV head, batch
// entry or varlen segment): it owns dK/dV of its keys exclusively (with GQA it loops over the
// query heads that share the KV head), so they accumulate in registers without atomics. For
// each 64-row query tile it recomputes P = exp(scale·QKᵀ − lse) from the GLOBAL lse, then
//   dP = dO Vᵀ, dS = P∘(dP − dsum), dV += Pᵀ dO, dK += scale·dSᵀ Q, dQ += scale·dS K,
// with P and dS staged in shared memory (bf16/f16) for the transposed products. dQ goes to
// global memory with fp32 atomics (rows of a query tile are shared by every key tile).
#include <cmath>
#include <string>

#include "cuda/attn_common.cuh"
#include "cuda/attn_kernels.h"
#include "cuda/check.h"

namespace rfa::cuda {

void check_attn_operands(const AttnShape& sh, DType dtype, const char* fn);

namespace {

constexpr int kSPitch = 64 + 8;  // pitch of the 64x64 P / dS tiles (conflict-free ldmatrix)

template <int kHeadDim, typename Ty>
__global__ void __launch_bounds__(128) flash_bwd_kernel(FlashBwdParams p) {
  using Tile = AttnTile<kHeadDim>;
  using T = typename Ty::T;
  constexpr int kPitch = Tile::kPitch, kDimTiles = kHeadDim / 8, kDimChunks = kHeadDim / 16;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sK = reinterpret_cast<T*>(smem_raw);
  T* sV = sK + 64 * kPitch;
  T* sQ = sV + 64 * kPitch;
  T* sdO = sQ + 64 * kPitch;
  T* sP = sdO + 64 * kPitch;
  T* sdS = sP + 64 * kSPitch;
  float* sLse = reinterpret_cast<float*>(sdS + 64 * kSPitch);  // lse·log2(e), +inf for rows without keys
  float* sDsum = sLse + 64;

  const AttnShape& sh = p.shape;
  const Span sp = span_of(sh, p.seg, blockIdx.z);
  const int n_block = blockIdx.x, hk = blockIdx.y;
  if (n_block * 64 >= sp.nk) return;
  const int group = sh.nheads / sh.nheads_k;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const float scale = sh.softmax_scale, scale_log2 = scale * kLog2e;
  const int causal_shift = sp.nk - sp.nq;
  // First query tile that sees any key of this tile.
  int m_begin = 0;
  if (sh.causal) m_begin = max(0, (n_block * 64 - causal_shift) / 64);
  const int m_end = (sp.nq + 63) / 64;

  load_tile<kHeadDim>(sK, static_cast<const T*>(p.k), p.k_stride, sp.b, hk, sp.k0, n_block * 64, sp.nk);
  load_tile<kHeadDim>(sV, static_cast<const T*>(p.v), p.v_stride, sp.b, hk, sp.k0, n_block * 64, sp.nk);
  cp_async_commit();

  float dk[kDimTiles][4] = {}, dv[kDimTiles][4] = {};
  const int qrow_w = warp * 16;  // this warp's query rows in S / dQ
  const int key_w = warp * 16;   // this warp's key rows in dK / dV

  for (int h = hk * group; h < (hk + 1) * group; ++h) {
    for (int m = m_begin; m < m_end; ++m) {
      load_tile<kHeadDim>(sQ, static_cast<const T*>(p.q), p.q_stride, sp.b, h, sp.q0, m * 64, sp.nq);
      load_tile<kHeadDim>(sdO, static_cast<const T*>(p.dout), p.dout_stride, sp.b, h, sp.q0, m * 64, sp.nq);
      cp_async_commit();
      for (int r = threadIdx.x; r < 64; r += Tile::kThreads) {
        const int row = m * 64 + r;
        float lse = INFINITY, dsum = 0.f;
        if (row < sp.nq) {
          const int64_t i = sp.q0 + row;
          lse = p.lse[sp.b * p.lse_stride.batch + int64_t(h) * p.lse_stride.head + i * p.lse_stride.row];
          dsum = p.dsum[sp.b * p.dsum_stride.batch + int64_t(h) * p.dsum_stride.head + i * p.dsum_stride.row];
          lse = lse == -INFINITY ? INFINITY : lse * kLog2e;  // a row without keys has P = 0
        }
        sLse[r] = lse;
        sDsum[r] = dsum;
      }
      cp_async_wait<0>();
      __syncthreads();

      // S = Q Kᵀ and dP = dO Vᵀ for this warp's 16 query rows x 64 keys.
      float s[8][4] = {}, dp[8][4] = {};
#pragma unroll
      for (int kc = 0; kc < kDimChunks; ++kc) {
        uint32_t qf[4], of[4];
        ldmatrix_x4(qf, sQ + (qrow_w + lane % 16) * kPitch + kc * 16 + (lane / 16) * 8);
        ldmatrix_x4(of, sdO + (qrow_w + lane % 16) * kPitch + kc * 16 + (lane / 16) * 8);
#pragma unroll
        for (int nt = 0; nt < 8; nt += 2) {
          uint32_t kf[4], vf[4];
          ldmatrix_x4(kf, sK + (nt * 8 + lane % 8 + (lane / 16) * 8) * kPitch + kc * 16 + ((lane / 8) % 2) * 8);
          ldmatrix_x4(vf, sV + (nt * 8 + lane % 8 + (lane / 16) * 8) * kPitch + kc * 16 + ((lane / 8) % 2) * 8);
          Ty::mma(s[nt], qf, kf[0], kf[1]);
          Ty::mma(s[nt + 1], qf, kf[2], kf[3]);
          Ty::mma(dp[nt], of, vf[0], vf[1]);
          Ty::mma(dp[nt + 1], of, vf[2], vf[3]);
        }
      }
      // P and dS, masked; staged in shared memory as 16-bit for the transposed products.
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int r = qrow_w + g + half * 8;
          const int row = m * 64 + r;
          float pv[2], dsv[2];
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int key = n_block * 64 + nt * 8 + 2 * t + e;
            const bool visible = key < sp.nk && row < sp.nq && (!sh.causal || key <= row + causal_shift);
            const float pr = visible ? exp2f(s[nt][2 * half + e] * scale_log2 - sLse[r]) : 0.f;
            pv[e] = pr;
            dsv[e] = pr * (dp[nt][2 * half + e] - sDsum[r]);
          }
          *reinterpret_cast<uint32_t*>(sP + r * kSPitch + nt * 8 + 2 * t) = Ty::pack(pv[0], pv[1]);
          *reinterpret_cast<uint32_t*>(sdS + r * kSPitch + nt * 8 + 2 * t) = Ty::pack(dsv[0], dsv[1]);
        }
      __syncthreads();

      // dV += Pᵀ dO and dK += dSᵀ Q for this warp's 16 keys (A = Pᵀ via transposed ldmatrix).
#pragma unroll
      for (int kc = 0; kc < 4; ++kc) {  // 16 query rows at a time
        uint32_t pf[4], sf[4];
        ldmatrix_x4_trans(pf, sP + (kc * 16 + lane % 8 + (lane / 16) * 8) * kSPitch + key_w + ((lane / 8) % 2) * 8);
        ldmatrix_x4_trans(sf, sdS + (kc * 16 + lane % 8 + (lane / 16) * 8) * kSPitch + key_w + ((lane / 8) % 2) * 8);
#pragma unroll
        for (int dt = 0; dt < kDimTiles; dt += 2) {
          uint32_t of[4], qf[4];
          ldmatrix_x4_trans(of, sdO + (kc * 16 + lane % 8 + ((lane / 8) % 2) * 8) * kPitch + dt * 8 + (lane / 16) * 8);
          ldmatrix_x4_trans(qf, sQ + (kc * 16 + lane % 8 + ((lane / 8) % 2) * 8) * kPitch + dt * 8 + (lane / 16) * 8);
          Ty::mma(dv[dt], pf, of[0], of[1]);
          Ty::mma(dv[dt + 1], pf, of[2], of[3]);
          Ty::mma(dk[dt], sf, qf[0], qf[1]);
          Ty::mma(dk[dt + 1], sf, qf[2], qf[3]);
        }
      }

      // dQ += scale · dS K for this warp's 16 query rows, added to global memory.
      float dq[kDimTiles][4] = {};
#pragma unroll
      for (int kc = 0; kc < 4; ++kc) {  // 16 keys at a time
        uint32_t sf[4];
        ldmatrix_x4(sf, sdS + (qrow_w + lane % 16) * kSPitch + kc * 16 + (lane / 16) * 8);
#pragma unroll
        for (int dt = 0; dt < kDimTiles; dt += 2) {
          uint32_t kf[4];
          ldmatrix_x4_trans(kf, sK + (kc * 16 + lane % 8 + ((lane / 8) % 2) * 8) * kPitch + dt * 8 + (lane / 16) * 8);
          Ty::mma(dq[dt], sf, kf[0], kf[1]);
          Ty::mma(dq[dt + 1], sf, kf[2], kf[3]);
        }
      }
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int row = m * 64 + qrow_w + g + half * 8;
        if (row >= sp.nq) continue;
        float* dst = p.dq + sp.b * p.dq_stride.batch + int64_t(sp.q0 + row) * p.dq_stride.row + int64_t(h) * p.dq_stride.head;
#pragma unroll
        for (int dt = 0; dt < kDimTiles; ++dt) {
          atomicAdd(dst + dt * 8 + 2 * t, scale * dq[dt][2 * half]);
          atomicAdd(dst + dt * 8 + 2 * t + 1, scale * dq[dt][2 * half + 1]);
        }
      }
      __syncthreads();  // shared tiles are reused by the next query tile
    }
  }

  // Write (or add) this CTA's dK (scaled) and dV rows.
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int key = n_block * 64 + key_w + g + half * 8;
    if (key >= sp.nk) continue;
    const int64_t i = sp.k0 + key;
    float* dkp = p.dk + sp.b * p.dk_stride.batch + i * p.dk_stride.row + int64_t(hk) * p.dk_stride.head;
    float* dvp = p.dv + sp.b * p.dv_stride.batch + i * p.dv_stride.row + int64_t(hk) * p.dv_stride.head;
#pragma unroll
    for (int dt = 0; dt < kDimTiles; ++dt) {
      float2 kv = make_float2(scale * dk[dt][2 * half], scale * dk[dt][2 * half + 1]);
      float2 vv = make_float2(dv[dt][2 * half], dv[dt][2 * half + 1]);
      float2* kd = reinterpret_cast<float2*>(dkp + dt * 8 + 2 * t);
      float2* vd = reinterpret_cast<float2*>(dvp + dt * 8 + 2 * t);
      if (p.accumulate) {
        const float2 ko = *kd, vo = *vd;
        kv.x += ko.x; kv.y += ko.y; vv.x += vo.x; vv.y += vo.y;
      }
      *kd = kv;
      *vd = vv;
    }
  }
}

// dq = 0 over a (b, s, h, d) fp32 view, for overwrite-mode backward (dQ is accumulated atomically).
__global__ void zero_bsh_kernel(float* dst, BshStrides st, int32_t s, int32_t h, int32_t d, int64_t n) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = e % d, hh = (e / d) % h, i = (e / (int64_t(d) * h)) % s, b = e / (int64_t(d) * h * s);
    dst[b * st.batch + i * st.row + hh * st.head + c] = 0.f;
  }
}

template <int kHeadDim, typename Ty>
void launch_bwd(const FlashBwdParams& p, cudaStream_t stream) {
  constexpr int kSmem = 4 * 64 * AttnTile<kHeadDim>::kPitch * 2 + 2 * 64 * kSPitch * 2 + 2 * 64 * 4;
  auto kernel = flash_bwd_kernel<kHeadDim, Ty>;
  RFA_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
  const int keys = p.seg.num_seqs ? p.seg.max_seqlen_k : p.shape.seqlen_k;
  const dim3 grid((keys + 63) / 64, p.shape.nheads_k, p.seg.num_seqs ? p.seg.num_seqs : p.shape.batch);
  if (grid.x == 0 || grid.z == 0) return;
  kernel<<<grid, AttnTile<kHeadDim>::kThreads, kSmem, stream>>>(p);
  RFA_CHECK_LAUNCH("flash_bwd_kernel");
}

}  // namespace

void flash_bwd(const FlashBwdParams& p, cudaStream_t stream) {
  check_attn_operands(p.shape, p.dtype, "flash_bwd");
  if (!p.q || !p.k || !p.v || !p.dout || !p.lse || !p.dsum || !p.dq || !p.dk || !p.dv) RFA_THROW("E_ARG", "flash_bwd: null tensor");
  if (p.seg.num_seqs && !p.accumulate) RFA_THROW("E_ARG", "flash_bwd: varlen segments need accumulate");
  if (!p.accumulate) {
    const AttnShape& s = p.shape;
    const int64_t n = int64_t(s.batch) * s.seqlen_q * s.nheads * s.head_dim;
    if (n > 0) {
      zero_bsh_kernel<<<int(std::min<int64_t>((n + 255) / 256, 65535)), 256, 0, stream>>>(p.dq, p.dq_stride, s.seqlen_q, s.nheads, s.head_dim, n);
      RFA_CHECK_LAUNCH("zero_bsh_kernel");
    }
  }
  const bool bf16 = p.dtype == DType::bf16;
  if (p.shape.head_dim == 64) bf16 ? launch_bwd<64, Bf16>(p, stream) : launch_bwd<64, F16>(p, stream);
  else bf16 ? launch_bwd<128, Bf16>(p, stream) : launch_bwd<128, F16>(p, stream);
}

}  // namespace rfa::cuda

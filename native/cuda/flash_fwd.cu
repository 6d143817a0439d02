// Forward attention, FlashAttention-2 style on the tensor cores (mma.sync m16n8k16, fp32
// accumulate): out = softmax(scale * q k^T) v in fp32, and lse (natural log) per query row.
//
// One CTA per (query tile of kBlockM rows, head, batch entry or varlen segment); 4 warps, each
// owning 32 query rows. Q stays in shared memory for the whole CTA; K and V tiles stream through
// one buffer each, so the V load overlaps Q K^T and the softmax, and the next K load overlaps P V.
// Scores, probabilities and the output accumulator never leave registers. The online softmax
// runs in the log2 domain: p = exp2(s * scale_log2 - m * scale_log2) with m the running row max of
// the raw scores, so one FFMA + one MUFU.EX2 per score.
//
// Measured (native/cuda/harness/flash_check.cu, one H200, bf16, d=128, median of 25; causal
// FLOP = 2*b*h*s^2*d, full 4*b*h*s^2*d):
//   v1, 2026-11-28: b1 s8192 h5 causal 0.391 ms = 220 TFLOP/s; b1 s8192 h32/8 causal 1.645 ms =
//   334 TFLOP/s; b1 s8192 h5 full 0.820 ms = 210 TFLOP/s. 255 registers, 0 spills, 68 KB smem.
//   At h=5 the grid (320 CTAs, 2 per SM) is bound by its heaviest causal tiles, which run at
//   half an SM for their whole life, and by wave quantisation without a mask. Next step (written,
//   not yet measured): one CTA per SM whose two 4-warp groups split a tile's K/V tiles and merge
//   their softmax states, so a heavy tile gets the whole SM.
#include <algorithm>
#include <cmath>

#include "cuda/check.h"
#include "cuda/attn_kernels.h"
#include "cuda/flash_mma.cuh"
#include "cuda/flash_traits.h"

namespace rfa::cuda {
namespace {

constexpr int kMaxSplits = 8;

struct FwdGrid {
  int num_m_blocks;  // query tiles per (head, span)
  int num_spans;     // batch entries, or varlen segments
  float scale_log2;  // softmax_scale * log2(e)
  // Split-KV (dense batches only): when num_splits > 1 every query tile's key tiles are cut into
  // num_splits even ranges, one CTA each; CTAs write partial (out, lse) to compact fp32 buffers
  // part_out [split][b][s][h][d] and part_lse [split][b][h][s], and combine_kernel merges them.
  int num_splits;
  float* part_out;
  float* part_lse;
};

// Scores of keys past the span and (causal) right of the diagonal become -inf. Element e of
// n-tile nt of m-tile mt is row row0 + 16 mt + 8 (e / 2), key key0 + 8 nt + e % 2.
template <class Tr, bool kCausal>
__device__ __forceinline__ void mask_scores(float (&s)[Tr::kMTilesPerWarp][Tr::kSTiles][4], int row0, int key0,
                                            int nk, int diag) {
#pragma unroll
  for (int mt = 0; mt < Tr::kMTilesPerWarp; ++mt)
#pragma unroll
    for (int nt = 0; nt < Tr::kSTiles; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = row0 + mt * kMmaM + (e >> 1) * 8, key = key0 + nt * kMmaN + (e & 1);
        if (key >= nk || (kCausal && key > row + diag)) s[mt][nt][e] = -INFINITY;
      }
}

// Where a CTA's rows of out and lse go: the caller's tensors (out in fp32 or, for a final
// single-device result, 16-bit), or this split's compact fp32 partial buffers.
struct OutSite {
  void* out;  // element (row r, column c) at out + r * o_row + c, in fp32 or 16-bit units
  int64_t o_row;
  bool out16;
  float* lse;
  int64_t lse_row;
  // Stores n (1 or 2) adjacent columns: x0, x1 in fp32, or `pair` (two packed 16-bit values, low
  // half first) in 16 bits.
  __device__ __forceinline__ void store(int r, int c, float x0, float x1, uint32_t pair, int n) const {
    const int64_t at = int64_t(r) * o_row + c;
    if (out16) {
      static_cast<uint16_t*>(out)[at] = uint16_t(pair);
      if (n == 2) static_cast<uint16_t*>(out)[at + 1] = uint16_t(pair >> 16);
    } else {
      static_cast<float*>(out)[at] = x0;
      if (n == 2) static_cast<float*>(out)[at + 1] = x1;
    }
  }
};

template <class Tr>
__device__ __forceinline__ OutSite out_site(const FlashFwdParams& p, const FwdGrid& grid, const Span& sp, int m0, int h,
                                            int split) {
  if (grid.num_splits > 1) {
    const int64_t sq = p.shape.seqlen_q, hd = int64_t(p.shape.nheads) * Tr::kHeadDim;
    float* o = grid.part_out + split * int64_t(p.shape.batch) * sq * hd;
    float* lse = grid.part_lse + split * int64_t(p.shape.batch) * p.shape.nheads * sq;
    return OutSite{o + sp.b * sq * hd + int64_t(sp.q0 + m0) * hd + h * Tr::kHeadDim, hd, false,
                   lse + (sp.b * p.shape.nheads + h) * sq + sp.q0 + m0, 1};
  }
  const bool out16 = p.out_dtype != DType::f32;
  const int64_t at = sp.b * p.o_stride.batch + int64_t(sp.q0 + m0) * p.o_stride.row + h * p.o_stride.head;
  void* o = out16 ? static_cast<void*>(static_cast<uint16_t*>(p.out) + at) : static_cast<void*>(static_cast<float*>(p.out) + at);
  return OutSite{o, p.o_stride.row, out16,
                 p.lse + sp.b * p.lse_stride.batch + h * p.lse_stride.head + int64_t(sp.q0 + m0) * p.lse_stride.row,
                 p.lse_stride.row};
}

template <class Tr, typename T, bool kCausal>
__global__ void __launch_bounds__(Tr::kThreads, 2) flash_fwd_kernel(const FlashFwdParams p, const FwdGrid grid) {
  using Mma = MmaType<T>;
  constexpr int kMT = Tr::kMTilesPerWarp, kST = Tr::kSTiles, kOT = Tr::kOTiles, kPitch = Tr::kPitch;
  extern __shared__ __align__(16) unsigned char smem[];
  T* sQ = reinterpret_cast<T*>(smem);
  T* sK = sQ + Tr::kBlockM * kPitch;
  T* sV = sK + Tr::kBlockN * kPitch;

  // Heaviest tiles first: blocks are handed out in index order, so giving the last query tiles
  // (which see the most keys under a causal mask) the lowest indices lets light tiles fill the tail.
  // All splits of a query tile are adjacent, so a heavy tile's pieces also start early.
  const int heads = p.shape.nheads;
  const int per_split = heads * grid.num_spans;
  const int per_m_block = per_split * grid.num_splits;
  const int m_block = grid.num_m_blocks - 1 - int(blockIdx.x) / per_m_block;
  const int split = int(blockIdx.x) % per_m_block / per_split;
  const int h = int(blockIdx.x) % per_split % heads;
  const int z = int(blockIdx.x) % per_split / heads;
  const Span sp = span_of(p.shape, p.seg, z);
  const int m0 = m_block * Tr::kBlockM;
  if (m0 >= sp.nq) return;
  const int hk = h / (heads / p.shape.nheads_k);
  const int rows_valid = min(Tr::kBlockM, sp.nq - m0);
  const int diag = sp.nk - sp.nq;  // causal (bottom-right): row i sees key j iff j <= i + diag

  const T* gQ = static_cast<const T*>(p.q) + sp.b * p.q_stride.batch + int64_t(sp.q0 + m0) * p.q_stride.row +
                h * p.q_stride.head;
  const T* gK = static_cast<const T*>(p.k) + sp.b * p.k_stride.batch + int64_t(sp.k0) * p.k_stride.row +
                hk * p.k_stride.head;
  const T* gV = static_cast<const T*>(p.v) + sp.b * p.v_stride.batch + int64_t(sp.k0) * p.v_stride.row +
                hk * p.v_stride.head;
  // Where this CTA's result goes: the caller's out/lse, or this split's compact partial buffers.
  // Keys any row of this tile may see; under the causal mask later K tiles are skipped entirely.
  int n_end = sp.nk;
  if (kCausal) n_end = min(n_end, m0 + Tr::kBlockM + diag);
  const int n_tiles = n_end > 0 ? (n_end + Tr::kBlockN - 1) / Tr::kBlockN : 0;
  const int per_split_tiles = (n_tiles + grid.num_splits - 1) / grid.num_splits;
  const int it_begin = min(n_tiles, split * per_split_tiles);
  const int it_end = min(n_tiles, it_begin + per_split_tiles);
  if (it_begin == it_end) {  // no row of the tile sees a key (of this split): out = 0, lse = -inf
    const OutSite o = out_site<Tr>(p, grid, sp, m0, h, split);
    for (int i = threadIdx.x; i < rows_valid * Tr::kHeadDim; i += Tr::kThreads) o.store(i / Tr::kHeadDim, i % Tr::kHeadDim, 0.f, 0.f, 0u, 1);
    for (int r = threadIdx.x; r < rows_valid; r += Tr::kThreads) o.lse[int64_t(r) * o.lse_row] = -INFINITY;
    return;
  }

  const int k_first = it_begin * Tr::kBlockN;
  load_tile_async<Tr::kBlockM, Tr::kHeadDim, kPitch, Tr::kThreads>(sQ, gQ, p.q_stride.row, rows_valid);
  load_tile_async<Tr::kBlockN, Tr::kHeadDim, kPitch, Tr::kThreads>(sK, gK + int64_t(k_first) * p.k_stride.row,
                                                                   p.k_stride.row, sp.nk - k_first);
  cp_async_commit();

  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int g = lane / 4, t = lane % 4;
  const int warp_row0 = warp * Tr::kRowsPerWarp;
  // Per-lane ldmatrix offsets (elements): A (Q) rows lane%16, column half lane/16; B (K) rows
  // lane%8 + 8*(lane/16), column half (lane/8)%2; B^T (V, .trans) rows lane%8 + 8*((lane/8)%2),
  // column half lane/16. See flash_mma.cuh for the fragment layouts.
  const int q_off = (warp_row0 + (lane & 15)) * kPitch + (lane >> 4) * 8;
  const int k_off = ((lane & 7) + (lane >> 4) * 8) * kPitch + ((lane >> 3) & 1) * 8;
  const int v_off = ((lane & 7) + ((lane >> 3) & 1) * 8) * kPitch + (lane >> 4) * 8;

  float acc_o[kMT][kOT][4];
  float row_max[kMT][2], row_sum[kMT][2];  // per thread: rows g and g + 8 of each m-tile
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
    for (int dt = 0; dt < kOT; ++dt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc_o[mt][dt][e] = 0.f;
    row_max[mt][0] = row_max[mt][1] = -INFINITY;
    row_sum[mt][0] = row_sum[mt][1] = 0.f;
  }

  for (int it = it_begin; it < it_end; ++it) {
    const int n0 = it * Tr::kBlockN;
    cp_async_wait<0>();
    __syncthreads();  // K tile `it` (and Q) landed; every warp is done with the previous V tile
    load_tile_async<Tr::kBlockN, Tr::kHeadDim, kPitch, Tr::kThreads>(sV, gV + int64_t(n0) * p.v_stride.row,
                                                                     p.v_stride.row, sp.nk - n0);
    cp_async_commit();

    // S = Q K^T for this warp's 32 rows x kBlockN keys.
    float s[kMT][kST][4];
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int nt = 0; nt < kST; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[mt][nt][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < Tr::kDSteps; ++kk) {
      uint32_t qa[kMT][4];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) ldmatrix_x4(qa[mt], sQ + q_off + mt * kMmaM * kPitch + kk * kMmaK);
#pragma unroll
      for (int np = 0; np < kST / 2; ++np) {
        uint32_t kb[4];
        ldmatrix_x4(kb, sK + k_off + np * 16 * kPitch + kk * kMmaK);
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          Mma::mma(s[mt][2 * np], qa[mt], kb[0], kb[1]);
          Mma::mma(s[mt][2 * np + 1], qa[mt], kb[2], kb[3]);
        }
      }
    }

    // Masking is needed only on the tile that crosses the span end or the causal diagonal.
    const bool needs_mask = n0 + Tr::kBlockN > sp.nk || (kCausal && n0 + Tr::kBlockN - 1 > m0 + diag);
    if (needs_mask) mask_scores<Tr, kCausal>(s, m0 + warp_row0 + g, n0 + 2 * t, sp.nk, diag);

    // Online softmax: new running max, rescale the accumulator and sum, scores -> probabilities.
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int hi = 0; hi < 2; ++hi) {
        float mx = row_max[mt][hi];
#pragma unroll
        for (int nt = 0; nt < kST; ++nt) mx = fmaxf(mx, fmaxf(s[mt][nt][2 * hi], s[mt][nt][2 * hi + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));  // a row lives in the 4 lanes of a quad
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        // A row that has seen no key yet keeps max -inf: take 0 as reference so that its
        // probabilities are exp2(-inf) = 0 rather than NaN.
        const float ref = mx == -INFINITY ? 0.f : mx * grid.scale_log2;
        const float corr = fast_exp2(row_max[mt][hi] * grid.scale_log2 - ref);
        row_max[mt][hi] = mx;
        row_sum[mt][hi] *= corr;
#pragma unroll
        for (int dt = 0; dt < kOT; ++dt) {
          acc_o[mt][dt][2 * hi] *= corr;
          acc_o[mt][dt][2 * hi + 1] *= corr;
        }
#pragma unroll
        for (int nt = 0; nt < kST; ++nt)
#pragma unroll
          for (int e = 2 * hi; e < 2 * hi + 2; ++e) {
            const float pr = fast_exp2(fmaf(s[mt][nt][e], grid.scale_log2, -ref));
            row_sum[mt][hi] += pr;
            s[mt][nt][e] = pr;
          }
      }

    cp_async_wait<0>();
    __syncthreads();  // V tile `it` landed; every warp is done reading K tile `it`
    if (it + 1 < it_end)
      load_tile_async<Tr::kBlockN, Tr::kHeadDim, kPitch, Tr::kThreads>(
          sK, gK + int64_t(n0 + Tr::kBlockN) * p.k_stride.row, p.k_stride.row, sp.nk - n0 - Tr::kBlockN);
    cp_async_commit();

    // O += P V, with P (16-bit) taken from the score registers as A fragments.
#pragma unroll
    for (int kk = 0; kk < Tr::kNSteps; ++kk) {
      uint32_t pa[kMT][4];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        pa[mt][0] = Mma::pack(s[mt][2 * kk][0], s[mt][2 * kk][1]);
        pa[mt][1] = Mma::pack(s[mt][2 * kk][2], s[mt][2 * kk][3]);
        pa[mt][2] = Mma::pack(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
        pa[mt][3] = Mma::pack(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
      }
#pragma unroll
      for (int dp = 0; dp < kOT / 2; ++dp) {
        uint32_t vb[4];
        ldmatrix_x4_trans(vb, sV + v_off + kk * kMmaK * kPitch + dp * 16);
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          Mma::mma(acc_o[mt][2 * dp], pa[mt], vb[0], vb[1]);
          Mma::mma(acc_o[mt][2 * dp + 1], pa[mt], vb[2], vb[3]);
        }
      }
    }
  }

  // Epilogue: out = acc / sum, lse = max * scale + ln(sum); rows that saw no key: 0 and -inf.
  // The output site is worked out only now, so its pointers hold no registers in the loop.
  const float scale = p.shape.softmax_scale;
  const OutSite o = out_site<Tr>(p, grid, sp, m0, h, split);
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int hi = 0; hi < 2; ++hi) {
      float sum = row_sum[mt][hi];
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      const int r = warp_row0 + mt * kMmaM + hi * 8 + g;
      if (r >= rows_valid) continue;
      const float inv = sum > 0.f ? 1.f / sum : 0.f;
#pragma unroll
      for (int dt = 0; dt < kOT; ++dt) {
        const float x0 = acc_o[mt][dt][2 * hi] * inv, x1 = acc_o[mt][dt][2 * hi + 1] * inv;
        o.store(r, dt * kMmaN + 2 * t, x0, x1, Mma::pack(x0, x1), 2);
      }
      if (t == 0) o.lse[int64_t(r) * o.lse_row] = sum > 0.f ? row_max[mt][hi] * scale + logf(sum) : -INFINITY;
    }
}

// Merges the split partials of one (batch, row, head) per warp: lse = log sum_s exp(lse_s),
// out = sum_s exp(lse_s - lse) out_s; rows no split saw keep out = 0, lse = -inf.
template <int kHeadDim, typename T>
__global__ void combine_kernel(const FlashFwdParams p, const FwdGrid grid) {
  constexpr int kPerLane = kHeadDim / kWarpSize;
  const int heads = p.shape.nheads, sq = p.shape.seqlen_q;
  const int64_t rows = int64_t(p.shape.batch) * sq * heads;
  const int64_t w = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (w >= rows) return;
  const int h = int(w % heads), i = int(w / heads % sq);
  const int64_t b = w / (int64_t(heads) * sq);
  const int64_t split_out = rows * kHeadDim, split_lse = rows;
  const int64_t lse_at = (b * heads + h) * sq + i;
  float mx = -INFINITY;
  for (int k = 0; k < grid.num_splits; ++k) mx = fmaxf(mx, grid.part_lse[k * split_lse + lse_at]);
  float acc[kPerLane] = {};
  float lse = -INFINITY;
  if (mx != -INFINITY) {
    float sum = 0.f;
    for (int k = 0; k < grid.num_splits; ++k) sum += __expf(grid.part_lse[k * split_lse + lse_at] - mx);
    lse = mx + __logf(sum);
    for (int k = 0; k < grid.num_splits; ++k) {
      const float wgt = __expf(grid.part_lse[k * split_lse + lse_at] - lse);
      const float* src = grid.part_out + k * split_out + w * kHeadDim;
#pragma unroll
      for (int e = 0; e < kPerLane; ++e) acc[e] = fmaf(wgt, src[e * kWarpSize + lane], acc[e]);
    }
  }
  const int64_t at = b * p.o_stride.batch + int64_t(i) * p.o_stride.row + h * p.o_stride.head;
#pragma unroll
  for (int e = 0; e < kPerLane; ++e) {
    if (p.out_dtype == DType::f32) static_cast<float*>(p.out)[at + e * kWarpSize + lane] = acc[e];
    else static_cast<uint16_t*>(p.out)[at + e * kWarpSize + lane] = uint16_t(MmaType<T>::pack(acc[e], 0.f));
  }
  if (lane == 0) p.lse[b * p.lse_stride.batch + h * p.lse_stride.head + int64_t(i) * p.lse_stride.row] = lse;
}

// How many key ranges to cut each query tile into. A grid that fills the GPU unevenly (few
// heads: the seed's h=5; the half-size blocks of the zigzag ring; one heavy causal tile per
// head) leaves SMs idle; splitting trades that for partial writes and one combine pass. The cost
// model counts K/V tiles per CTA slot (two CTAs per SM), plus 2 tiles of per-CTA overhead and
// the combine's memory traffic; a split is taken only when it saves more than 10%.
template <class Tr>
int plan_splits(const FlashFwdParams& p, int num_m_blocks) {
  const AttnShape& sh = p.shape;
  if (p.seg.num_seqs > 0 || sh.batch == 0 || sh.seqlen_k == 0) return 1;
  const int64_t slots = 2 * int64_t(current_device().sms);
  const int64_t blocks = int64_t(num_m_blocks) * sh.nheads * sh.batch;
  if (blocks >= 4 * slots) return 1;
  const int diag = sh.seqlen_k - sh.seqlen_q;
  int64_t work = 0, heaviest = 0;
  for (int m = 0; m < num_m_blocks; ++m) {
    const int64_t end = sh.causal ? std::min<int64_t>(sh.seqlen_k, int64_t(m + 1) * Tr::kBlockM + diag) : sh.seqlen_k;
    const int64_t tiles = end > 0 ? (end + Tr::kBlockN - 1) / Tr::kBlockN : 0;
    work += tiles;
    heaviest = std::max(heaviest, tiles);
  }
  work *= int64_t(sh.nheads) * sh.batch;
  constexpr double kOverhead = 2.0;  // tiles' worth of Q load, epilogue and launch per CTA
  // One K/V tile on one CTA slot: 4 * kBlockM * kBlockN * d flop at ~1/264 of 330 TFLOP/s.
  const double tile_seconds = 4.0 * Tr::kBlockM * Tr::kBlockN * Tr::kHeadDim / (330e12 / 264);
  const double out_bytes = double(sh.batch) * sh.seqlen_q * sh.nheads * Tr::kHeadDim * 4;
  auto cost = [&](int splits) {
    const double per_cta = std::ceil(double(heaviest) / splits) + kOverhead;
    const double main = sh.causal ? std::max((work + double(blocks) * splits * kOverhead) / slots, per_cta)
                                  : std::ceil(double(blocks) * splits / slots) * per_cta;
    const double combine = splits == 1 ? 0.0 : (splits + 1) * out_bytes / 3e12 / tile_seconds;
    return main + combine;
  };
  int best = 1;
  for (int splits = 2; splits <= kMaxSplits; ++splits)
    if (cost(splits) < cost(best)) best = splits;
  return cost(best) < 0.9 * cost(1) ? best : 1;
}

template <int kHeadDim, typename T, bool kCausal>
void launch_fwd(const FlashFwdParams& p, int num_spans, int max_q, cudaStream_t s, const Scratch& scratch) {
  using Tr = FwdTraits<kHeadDim>;
  FwdGrid grid{(max_q + Tr::kBlockM - 1) / Tr::kBlockM, num_spans, p.shape.softmax_scale * kLog2e, 1, nullptr, nullptr};
  grid.num_splits = plan_splits<Tr>(p, grid.num_m_blocks);
  const int64_t blocks = int64_t(grid.num_m_blocks) * p.shape.nheads * num_spans * grid.num_splits;
  if (blocks > INT32_MAX) RFA_THROW("E_UNSUPPORTED", "flash_fwd: too many query tiles for one launch");
  const int64_t rows = int64_t(p.shape.batch) * p.shape.seqlen_q * p.shape.nheads;
  ScratchBlock part(scratch);  // the split partials, released once their launches are queued
  if (grid.num_splits > 1) {
    grid.part_out = static_cast<float*>(part.get(size_t(grid.num_splits) * rows * (kHeadDim + 1) * sizeof(float)));
    grid.part_lse = grid.part_out + grid.num_splits * rows * kHeadDim;
  }
  auto kernel = flash_fwd_kernel<Tr, T, kCausal>;
  // Above 48 KB a kernel's dynamic shared memory must be opted into (per device, so every call).
  RFA_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tr::kSmemBytes));
  kernel<<<unsigned(blocks), Tr::kThreads, Tr::kSmemBytes, s>>>(p, grid);
  RFA_CHECK_LAUNCH("flash_fwd_kernel");
  if (grid.num_splits > 1) {
    constexpr int kCombineThreads = 256;
    const int64_t combine_blocks = (rows * kWarpSize + kCombineThreads - 1) / kCombineThreads;
    combine_kernel<kHeadDim, T><<<unsigned(combine_blocks), kCombineThreads, 0, s>>>(p, grid);
    RFA_CHECK_LAUNCH("flash_fwd combine_kernel");
  }
}

template <int kHeadDim, typename T>
void dispatch_causal(const FlashFwdParams& p, int num_spans, int max_q, cudaStream_t s, const Scratch& scratch) {
  if (p.shape.causal)
    launch_fwd<kHeadDim, T, true>(p, num_spans, max_q, s, scratch);
  else
    launch_fwd<kHeadDim, T, false>(p, num_spans, max_q, s, scratch);
}

template <typename T>
void dispatch_head_dim(const FlashFwdParams& p, int num_spans, int max_q, cudaStream_t s, const Scratch& scratch) {
  switch (p.shape.head_dim) {
    case 32: return dispatch_causal<32, T>(p, num_spans, max_q, s, scratch);
    case 64: return dispatch_causal<64, T>(p, num_spans, max_q, s, scratch);
    default: return dispatch_causal<128, T>(p, num_spans, max_q, s, scratch);
  }
}

}  // namespace

void flash_fwd(const FlashFwdParams& p, cudaStream_t s, const Scratch& scratch) {
  const AttnShape& sh = p.shape;
  check_attn("flash_fwd", sh, p.dtype, p.seg);
  const bool varlen = p.seg.num_seqs > 0;
  const int num_spans = varlen ? p.seg.num_seqs : sh.batch;
  const int max_q = varlen ? p.seg.max_seqlen_q : sh.seqlen_q;
  if (num_spans == 0 || max_q == 0) return;
  RFA_CHECK_ARG(p.q && p.k && p.v && p.out && p.lse, "flash_fwd: null tensor");
  RFA_CHECK_ARG(p.out_dtype == DType::f32 || p.out_dtype == p.dtype, "flash_fwd: out must be float32 or the dtype of q");
  check_view16("flash_fwd", "q", p.q, p.q_stride);
  check_view16("flash_fwd", "k", p.k, p.k_stride);
  check_view16("flash_fwd", "v", p.v, p.v_stride);
  if (p.dtype == DType::bf16)
    dispatch_head_dim<__nv_bfloat16>(p, num_spans, max_q, s, scratch);
  else
    dispatch_head_dim<__half>(p, num_spans, max_q, s, scratch);
}

}  // namespace rfa::cuda

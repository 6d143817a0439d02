// Backward attention, FlashAttention-2 style on the tensor cores (fp32 accumulate), given the
// GLOBAL lse and dsum = rowsum(dout * out):
//   P = exp(scale q k^T - lse), dV = P^T dO, dP = dO V^T, dS = P (dP - dsum),
//   dK = scale dS^T Q, dQ = scale dS K.
//
// One CTA per (key tile of kBlockN rows, kv head, batch entry or varlen segment), 8 warps of 16
// keys each; it walks every query tile of every query head that shares the kv head (GQA), so dK
// and dV stay in registers and are written once, without atomics. Per query tile each warp
// computes the transposed scores S^T = K Q^T (16 keys x kBlockM queries): P^T and dS^T are then
// A operands of dV += P^T dO and dK += dS^T Q straight from registers. dQ needs dS with queries as
// rows, so dS^T goes through shared memory once and dQ += dS K is added to global memory with
// fp32 atomics (other key tiles add to the same rows). Q, dO, lse and dsum of the next query tile
// load (cp.async, double buffer) while the current one is computed.
//
// Deterministic mode (FlashBwdParams::deterministic): either kernel, and each key tile adds its dQ
// part of a query tile only once the key tiles before it have (wait_turn / pass_turn), so every dQ
// element sums its parts in key-tile order and the bits repeat. Each key tile then walks its query
// tiles last first (step_at), so that the tiles taking turns on a query tile reach it at the same
// step and wait little. A split key tile's CTAs add their dK/dV in split order the same way
// (write_dkv_in_turn).
//
// Three kernels implement this, each mainloop in native/cuda/bwd/: the Hopper backward
// (kernel_hopper.cu, mainloop_wgmma.cuh: TMA loads by a producer warp, dQ by bulk reductions;
// head_dim 128 on sm_90a, dense, the default mode), flash_bwd_wgmma_kernel (mainloop_fa2_wgmma.cuh:
// the same algorithm as below on warpgroup MMAs with cp.async loads and dQ atomics; head_dim 128
// on sm_90a for what the Hopper backward does not cover) and flash_bwd_kernel (mainloop_mma.cuh:
// mma.sync m16n8k16 + ldmatrix; head_dim 32, 64 and 96, and every head_dim on other devices). This
// file sizes their grids and dispatches.
//
// Each version's timings (native/cuda/harness/flash_check.cu; bwd = bwd_dot + bwd, FLOP = 2.5x
// the forward's) against FlashAttention-2: benchmark/RESULTS.md.
#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <vector>

#include "cuda/check.h"
#include "cuda/attn_kernels.h"
#include "cuda/flash_wgmma.cuh"
#include "cuda/flash_mma.cuh"
#include "cuda/fill.h"
#include "cuda/flash_traits.h"
#include "cuda/score_hooks.cuh"
#include "cuda/bwd/launch.h"
#include "cuda/bwd/mainloop_fa2_wgmma.cuh"
#include "cuda/bwd/mainloop_mma.cuh"
#include "cuda/bwd/work.cuh"
#include "launch_plan.h"

namespace rfa::cuda {
namespace {

// Zeroes a strided fp32 (b, s, h, d) view: dq before its atomics when not accumulating.
__global__ void zero_bsh_kernel(float* x, BshStrides st, int s, int h, int d, int64_t n) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = e % d, hh = (e / d) % h, i = (e / (int64_t(d) * h)) % s, b = e / (int64_t(d) * h * s);
    x[b * st.batch + i * st.row + hh * st.head + c] = 0.f;
  }
}

// The Hopper backward runs on the grids sized for the FlashAttention-2 style kernels.
static_assert(BwdHopperTraits<128>::kBlockN == BwdWgTraits::kBlockN &&
                  BwdHopperTraits<128>::kBlockM == BwdWgTraits::kBlockM &&
                  BwdHopperTraits<64>::kBlockN == BwdTraits<64>::kBlockN &&
                  BwdHopperTraits<64>::kBlockM == BwdTraits<64>::kBlockM,
              "the Hopper backward's tiles are those of the grid it runs on");

// One CTA per (key tile, kv head, span, split) of a backward kernel with traits Tr.
template <class Tr, class Kernel>
void launch_key_tiles(Kernel kernel, const char* name, const FlashBwdParams& p, const BwdGrid& grid,
                      cudaStream_t s) {
  const int64_t blocks = int64_t(grid.num_n_blocks) * p.shape.nheads_k * grid.num_spans * grid.num_splits;
  if (blocks > INT32_MAX) RFA_THROW("E_UNSUPPORTED", "flash_bwd: too many key tiles for one launch");
  RFA_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tr::kSmemBytes));
  kernel<<<unsigned(blocks), Tr::kThreads, Tr::kSmemBytes, s>>>(p, grid);
  RFA_CHECK_LAUNCH(name);
}

template <int kHeadDim, typename T, bool kCausal, bool kHooks = false>
void launch_bwd(const FlashBwdParams& p, const BwdGrid& grid, cudaStream_t s) {
  using Tr = BwdTraits<kHeadDim>;
  launch_key_tiles<Tr>(flash_bwd_kernel<Tr, T, kCausal, kHooks>, "flash_bwd_kernel", p, grid, s);
}

template <typename T, bool kCausal, bool kDet, bool kWindow = false>
void launch_bwd_wgmma(const FlashBwdParams& p, const BwdGrid& grid, cudaStream_t s) {
  launch_key_tiles<BwdWgTraits>(flash_bwd_wgmma_kernel<T, kCausal, kDet, kWindow>, "flash_bwd_wgmma_kernel",
                                p, grid, s);
}

void zero_bsh(float* x, const BshStrides& st, int b, int s, int h, int d, cudaStream_t stream,
              const char* what) {
  const int64_t n = int64_t(b) * s * h * d;
  if (n == 0) return;
  // A contiguous view is one memset; the kernel (64-bit index arithmetic per element) is for
  // strided views only (packed gradients).
  if (st.head == d && st.row == int64_t(h) * d && (b == 1 || st.batch == int64_t(s) * h * d))
    return fill(x, DType::f32, n, 0.f, stream);
  const int threads = 256;
  const int64_t want = (n + threads - 1) / threads;
  zero_bsh_kernel<<<unsigned(want < 8192 ? want : 8192), threads, 0, stream>>>(x, st, s, h, d, n);
  RFA_CHECK_LAUNCH(what);
}

// How many CTAs share each key tile's query steps. Both kernels run one CTA per SM, so a grid of
// few key tiles (the Python project's 5 heads; the zigzag ring's 4096-key half blocks: 160 CTAs
// on 132 SMs, 1.2 waves) leaves most SMs idle in its last wave. plan_bwd_splits (launch_plan.h)
// runs each count through the launch simulation; here only the query steps each key tile sees.
// Cached per shape and thread (a ring step calls this every time).
template <class Tr>
int plan_splits(const FlashBwdParams& p, int num_n_blocks, const LaunchOverrides& o) {
  const AttnShape& sh = p.shape;
  if (p.seg.num_seqs > 0 || sh.batch == 0 || sh.seqlen_q == 0) return 1;
  if (o.bwd_splits > 0) return o.bwd_splits;
  // Deterministic mode: a causal key tile's splits start at other query tiles than its neighbours',
  // which breaks the lockstep of the dQ turns (step_at): split causal grids ran slower than
  // unsplit ones. Without the mask the splits pay as in the default mode, e.g. on the zigzag
  // ring's s8192/4096 h5 half block (measured: benchmark/RESULTS.md).
  if (p.deterministic && sh.causal) return 1;
  const int sms = current_device().sms;
  const int64_t per_tile = int64_t(sh.nheads_k) * sh.batch;  // CTAs per key tile and split
  if (int64_t(num_n_blocks) * per_tile >= 4 * int64_t(sms)) return 1;
  using Key = std::array<int64_t, 8>;
  static thread_local std::map<Key, int> cache;
  const Key key{num_n_blocks, sh.nheads, sh.nheads_k, sh.batch, sh.seqlen_q, sh.seqlen_k, sh.causal, sms};
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  const int group = sh.nheads / sh.nheads_k, diag = sh.seqlen_k - sh.seqlen_q;
  const int m_total = (sh.seqlen_q + Tr::kBlockM - 1) / Tr::kBlockM;
  std::vector<int> steps(static_cast<size_t>(num_n_blocks));
  for (int n = 0; n < num_n_blocks; ++n) {  // as bwd_work
    const int first_row = sh.causal ? std::max(0, n * Tr::kBlockN - diag) : 0;
    steps[size_t(n)] = first_row < sh.seqlen_q ? group * (m_total - first_row / Tr::kBlockM) : 0;
  }
  const int splits = plan_bwd_splits(steps, int(per_tile), sms, 8);
  cache.emplace(key, splits);
  return splits;
}

// Sizes the grid for the kernel with traits Tr; a split adds its dK/dV onto zeros when the call
// does not accumulate them; the deterministic mode's turn counters start at zero in `turns`.
template <class Tr>
BwdGrid size_grid(const FlashBwdParams& p, BwdGrid grid, int max_q, int max_k, cudaStream_t s,
                  ScratchBlock& turns, const LaunchOverrides& o) {
  grid.num_n_blocks = (max_k + Tr::kBlockN - 1) / Tr::kBlockN;
  grid.num_splits = plan_splits<Tr>(p, grid.num_n_blocks, o);
  if (p.deterministic) {
    grid.num_m_blocks = (max_q + Tr::kBlockM - 1) / Tr::kBlockM;
    const size_t dq_count = size_t(grid.num_spans) * p.shape.nheads * grid.num_m_blocks;
    const size_t dkv_count =
        grid.num_splits > 1 ? size_t(grid.num_spans) * p.shape.nheads_k * grid.num_n_blocks : 0;
    const size_t bytes = (dq_count + dkv_count) * sizeof(int);
    grid.dq_turns = static_cast<int*>(turns.get(bytes));
    if (dkv_count) grid.dkv_turns = grid.dq_turns + dq_count;
    RFA_CUDA_CHECK(cudaMemsetAsync(grid.dq_turns, 0, bytes, s));
  }
  if (grid.num_splits > 1 && !p.accumulate_dkv()) {
    const AttnShape& sh = p.shape;
    zero_bsh(p.dk, p.dk_stride, sh.batch, sh.seqlen_k, sh.nheads_k, sh.head_dim, s, "zero_bsh_kernel (dk)");
    zero_bsh(p.dv, p.dv_stride, sh.batch, sh.seqlen_k, sh.nheads_k, sh.head_dim, s, "zero_bsh_kernel (dv)");
  }
  return grid;
}

template <int kHeadDim, typename T>
void dispatch_causal(const FlashBwdParams& p, BwdGrid grid, int max_q, int max_k, cudaStream_t s,
                     ScratchBlock& turns, const LaunchOverrides& o) {
  // The wgmma kernel exists as sm_90a machine code only: other devices (and the compute_90 PTX
  // fallback, where its body is empty) take the mma.sync kernel.
  // The hook instances mask causal calls themselves (window right 0, global positions); the wgmma
  // kernel's takes a window and positions alone.
  const bool hooks = p.mods.any(p.shape.causal);
  if (kHeadDim == 128 && current_device().sm90 && (!hooks || p.mods.masks_only())) {
    grid = size_grid<BwdWgTraits>(p, grid, max_q, max_k, s, turns, o);
    if (o.bwd_kernel != 1 && flash_bwd_hopper(p, grid, s, o)) return;
    const bool c = p.shape.causal, d = p.deterministic;
    if (hooks && d)
      launch_bwd_wgmma<T, false, true, true>(p, grid, s);
    else if (hooks)
      launch_bwd_wgmma<T, false, false, true>(p, grid, s);
    else if (c && d)
      launch_bwd_wgmma<T, true, true>(p, grid, s);
    else if (c)
      launch_bwd_wgmma<T, true, false>(p, grid, s);
    else if (d)
      launch_bwd_wgmma<T, false, true>(p, grid, s);
    else
      launch_bwd_wgmma<T, false, false>(p, grid, s);
    return;
  }
  grid = size_grid<BwdTraits<kHeadDim>>(p, grid, max_q, max_k, s, turns, o);
  if (kHeadDim == 64 && o.bwd_kernel == 2 && current_device().sm90 && flash_bwd_hopper(p, grid, s, o)) return;
  if (hooks)
    launch_bwd<kHeadDim, T, false, true>(p, grid, s);
  else if (p.shape.causal)
    launch_bwd<kHeadDim, T, true>(p, grid, s);
  else
    launch_bwd<kHeadDim, T, false>(p, grid, s);
}

// head_dim 192 and 256 (check_attn lets them through on sm_90 for batches): the Hopper backward's,
// only where LaunchOverrides::bwd_kernel 2 asks for it until it has run on a GPU. Refused before
// any tensor is looked at.
void check_wide(const FlashBwdParams& p, const LaunchOverrides& o) {
  const int d = p.shape.head_dim;
  const std::string what = "flash_bwd: head_dim " + std::to_string(d);
  if (p.mods.any(p.shape.causal))
    RFA_THROW("E_UNSUPPORTED", what +
                                   ": window_size, softcap, alibi_slopes, dropout_p and global positions "
                                   "need head_dim <= 128 on CUDA");
  if (p.deterministic)
    RFA_THROW("E_UNSUPPORTED", what + ": the deterministic mode needs head_dim <= 128 on CUDA");
  if (o.bwd_kernel != 2)
    RFA_THROW("E_UNSUPPORTED", what + ": the CUDA backward covers head_dim 32, 64, 96 and 128");
}

template <int kHeadDim, typename T>
void dispatch_wide(const FlashBwdParams& p, BwdGrid grid, int max_q, int max_k, cudaStream_t s,
                   ScratchBlock& turns, const LaunchOverrides& o) {
  grid = size_grid<BwdHopperTraits<kHeadDim>>(p, grid, max_q, max_k, s, turns, o);
  if (!flash_bwd_hopper(p, grid, s, o))
    RFA_THROW("E_UNSUPPORTED", "flash_bwd: head_dim " + std::to_string(kHeadDim) +
                                   ": the driver declined a tensor map of q, k, v or dout, or dq's rows are "
                                   "not 16-byte aligned");
}

template <typename T>
void dispatch_head_dim(const FlashBwdParams& p, const BwdGrid& grid, int max_q, int max_k, cudaStream_t s,
                       ScratchBlock& turns, const LaunchOverrides& o) {
  switch (p.shape.head_dim) {
    case 192:
      return dispatch_wide<192, T>(p, grid, max_q, max_k, s, turns, o);
    case 256:
      return dispatch_wide<256, T>(p, grid, max_q, max_k, s, turns, o);
    case 32:
      return dispatch_causal<32, T>(p, grid, max_q, max_k, s, turns, o);
    case 64:
      return dispatch_causal<64, T>(p, grid, max_q, max_k, s, turns, o);
    case 96:
      return dispatch_causal<96, T>(p, grid, max_q, max_k, s, turns, o);
    default:
      return dispatch_causal<128, T>(p, grid, max_q, max_k, s, turns, o);
  }
}

}  // namespace

void flash_bwd(const FlashBwdParams& p, cudaStream_t s, const Scratch& scratch) {
  flash_bwd(p, s, scratch, process_overrides());
}

void flash_bwd(const FlashBwdParams& p, cudaStream_t s, const Scratch& scratch, const LaunchOverrides& o) {
  check_mods("flash_bwd", p.mods, p.seg);
  const AttnShape& sh = p.shape;
  check_attn("flash_bwd", sh, p.dtype, p.seg, current_device().sm90 && p.seg.num_seqs == 0);
  if (sh.head_dim > 128) check_wide(p, o);
  const bool varlen = p.seg.num_seqs > 0;
  RFA_CHECK_ARG(!varlen || p.accumulate_dkv(), "flash_bwd: varlen segments need accumulate (dq, dk and dv)");
  const int num_spans = varlen ? p.seg.num_seqs : sh.batch;
  const int max_q = varlen ? p.seg.max_seqlen_q : sh.seqlen_q;
  const int max_k = varlen ? p.seg.max_seqlen_k : sh.seqlen_k;
  if (num_spans == 0) return;
  RFA_CHECK_ARG(p.q && p.k && p.v && p.dout && p.lse && p.dsum && p.dq && p.dk && p.dv,
                "flash_bwd: null tensor");
  check_view16("flash_bwd", "q", p.q, p.q_stride);
  check_view16("flash_bwd", "k", p.k, p.k_stride);
  check_view16("flash_bwd", "v", p.v, p.v_stride);
  check_view16("flash_bwd", "dout", p.dout, p.dout_stride);

  // dq receives atomics from every key tile: start from zero.
  if (!p.accumulate && max_q > 0)
    zero_bsh(p.dq, p.dq_stride, sh.batch, sh.seqlen_q, sh.nheads, sh.head_dim, s, "zero_bsh_kernel (dq)");
  if (max_k == 0) return;
  const BwdGrid grid{0,
                     num_spans,
                     sh.softmax_scale * kLog2e,
                     rows_aligned(p.dq, p.dq_stride, 2, 4),
                     1,
                     rows_aligned(p.dk, p.dk_stride, 2, 4) && rows_aligned(p.dv, p.dv_stride, 2, 4)};
  ScratchBlock turns(scratch);  // deterministic mode only; released once the launch is queued
  if (p.dtype == DType::bf16)
    dispatch_head_dim<__nv_bfloat16>(p, grid, max_q, max_k, s, turns, o);
  else
    dispatch_head_dim<__half>(p, grid, max_q, max_k, s, turns, o);
}

}  // namespace rfa::cuda

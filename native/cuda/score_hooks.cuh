// The score hooks of ScoreMods (attn_params.h) on the device, for the mma.sync kernels' hook
// instances (flash_fwd.cu, flash_bwd.cu): which keys a query row sees, the modified score and its
// derivative, the dropout factor, and the tiles a tile of the other side can see at all. The
// semantics are the CPU backend's Scorer (native/cpu/flash_cpu.cc), which the tests hold as the
// reference.
#pragma once
#include <cuda_runtime.h>

#include "attn_params.h"
#include "cuda/flash_traits.h"
#include "philox.h"

namespace rfa::cuda {

// The hooks of one span (batch entry or varlen segment) for one query head.
struct SpanHooks {
  const int32_t* q_pos;  // positions of the span's query/key rows from its first, or null (local rows)
  const int32_t* k_pos;
  int diag;         // a query's causal diagonal: key position qp + diag
  int left, right;  // window bounds (-1: unbounded); causal sets right to 0
  float softcap, inv_softcap;
  float slope;        // ALiBi slope of the head (0: off)
  bool alibi_causal;  // flash-attn's causal form slope * kp, where the mask is purely causal
  float scale, inv_scale;
  // Dropout: element (qp, kp) draws at (batch, head, q_tok0 + qp, k_tok0 + kp).
  bool dropout;
  uint32_t threshold;
  float keep_scale;
  uint64_t seed;
  uint32_t batch, head;
  int q_tok0, k_tok0;

  __device__ __forceinline__ int qpos(int i) const { return q_pos ? q_pos[i] : i; }
  __device__ __forceinline__ int kpos(int j) const { return k_pos ? k_pos[j] : j; }

  __device__ __forceinline__ bool visible(int qp, int kp) const {
    const int centre = qp + diag;
    return !(left >= 0 && kp < centre - left) && !(right >= 0 && kp > centre + right);
  }

  // Whether every query row of [q_lo, q_hi] sees every key row of [k_lo, k_hi], so a tile needs no
  // mask: positions increase, so the corners decide (the first key in the last row's window, the
  // last key in the first row's).
  __device__ __forceinline__ bool sees_whole(int q_lo, int q_hi, int k_lo, int k_hi) const {
    return visible(qpos(q_hi), kpos(k_lo)) && visible(qpos(q_lo), kpos(k_hi));
  }

  // The hooked score of raw dot product q.k, in units of the raw dot (score / scale), so that the
  // kernels' softmax, lse and scale_log2 stay as they are. *dscore gets d(score)/d(dot) over the
  // scale: softcap's 1 - tanh^2, else 1.
  __device__ __forceinline__ float score(float dot, int qp, int kp, float* dscore) const {
    float x = dot * scale, d = 1.f;
    if (softcap > 0.f) {
      const float t = tanhf(x * inv_softcap);
      x = softcap * t;
      d = 1.f - t * t;
    }
    if (slope != 0.f) x += alibi_causal ? slope * float(kp) : -slope * fabsf(float(qp + diag - kp));
    *dscore = d;
    return x * inv_scale;
  }

  // Whether element (qp, kp) survives dropout (its factor is then keep_scale, else 0).
  __device__ __forceinline__ bool kept(int qp, int kp) const {
    return dropout_bits(seed, batch, head, uint32_t(q_tok0 + qp), uint32_t(k_tok0 + kp)) >= threshold;
  }

  // The Philox draw of query qp for the block of four key tokens that holds key kp: its words
  // are the draws of keys 4 (kt / 4) .. 4 (kt / 4) + 3.
  __device__ __forceinline__ Philox4 draw4(int qp, int kp) const {
    return philox4x32_10(Philox4{uint32_t(k_tok0 + kp) >> 2, uint32_t(q_tok0 + qp), head, batch},
                         uint32_t(seed), uint32_t(seed >> 32));
  }
  __device__ __forceinline__ float keep_factor(uint32_t bits) const {
    return bits >= threshold ? keep_scale : 0.f;
  }

  // The dropout factors of keys kp0 and kp1 of query qp: 0 or 1 / (1 - p). Keys of one block of
  // four tokens share a Philox counter, so a pair of neighbours costs one draw.
  __device__ __forceinline__ void keep2(int qp, int kp0, int kp1, float* z0, float* z1) const {
    const uint32_t kt0 = uint32_t(k_tok0 + kp0), kt1 = uint32_t(k_tok0 + kp1);
    const Philox4 r = draw4(qp, kp0);
    auto word = [&](uint32_t kt) {
      return (kt & 3u) == 0 ? r.x : (kt & 3u) == 1 ? r.y : (kt & 3u) == 2 ? r.z : r.w;
    };
    *z0 = keep_factor(word(kt0));
    *z1 = keep_factor((kt1 >> 2) == (kt0 >> 2) ? word(kt1)
                                               : dropout_bits(seed, batch, head, uint32_t(q_tok0 + qp), kt1));
  }

  // First index in [0, n) whose position is >= pos (positions increase over a span).
  __device__ __forceinline__ static int lower_bound(const int32_t* pos, int n, int64_t x) {
    if (!pos) return x < 0 ? 0 : x > n ? n : int(x);
    int lo = 0, hi = n;
    while (lo < hi) {
      const int mid = (lo + hi) / 2;
      if (pos[mid] < x)
        lo = mid + 1;
      else
        hi = mid;
    }
    return lo;
  }

  // Whether a tile of queries at positions [qp_lo, qp_hi] and one of keys at [kp_lo, kp_hi] may
  // share a visible element: the test both directions use, so that the forward's key tiles of a
  // query tile and the backward's query tiles of a key tile agree (the deterministic dQ turns
  // count on it). Tiles that straddle a jump in positions may pass without a visible element.
  //
  // Key rows [*k_begin, *k_end) that a query tile of rows [m0, m0 + rows) may see.
  __device__ __forceinline__ void key_range(int m0, int rows, int nk, int* k_begin, int* k_end) const {
    const int64_t qp_lo = qpos(m0), qp_hi = qpos(m0 + rows - 1);
    *k_begin = left >= 0 ? lower_bound(k_pos, nk, qp_lo + diag - left) : 0;
    *k_end = right >= 0 ? lower_bound(k_pos, nk, qp_hi + diag + right + 1) : nk;
    if (*k_end < *k_begin || *k_begin >= nk) *k_end = *k_begin;  // empty, not the last tile
  }

  // Query rows [*q_begin, *q_end) that a key tile of rows [n0, n0 + keys) may be seen by.
  __device__ __forceinline__ void query_range(int n0, int keys, int nq, int* q_begin, int* q_end) const {
    const int64_t kp_lo = kpos(n0), kp_hi = kpos(n0 + keys - 1);
    *q_begin = right >= 0 ? lower_bound(q_pos, nq, kp_lo - diag - right) : 0;
    *q_end = left >= 0 ? lower_bound(q_pos, nq, kp_hi - diag + left + 1) : nq;
    if (*q_end < *q_begin || *q_begin >= nq) *q_end = *q_begin;
  }
};

// The hooks of span z (batch entry, or varlen segment) for query head h of the call.
__device__ __forceinline__ SpanHooks span_hooks(const ScoreMods& m, const AttnShape& sh, const Span& sp,
                                                int z, int h, bool varlen) {
  SpanHooks k;
  k.q_pos = m.q_pos ? m.q_pos + sp.q0 : nullptr;
  k.k_pos = m.k_pos ? m.k_pos + sp.k0 : nullptr;
  k.diag = m.q_pos ? m.diag : sp.nk - sp.nq;
  k.left = m.window_left;
  k.right = sh.causal ? 0 : m.window_right;
  k.softcap = m.softcap;
  k.inv_softcap = m.softcap > 0.f ? 1.f / m.softcap : 0.f;
  k.slope = m.alibi_slopes ? m.alibi_slopes[int64_t(z) * m.alibi_batch_stride + m.head0 + h] : 0.f;
  k.alibi_causal = m.window_left < 0 && k.right == 0;
  k.scale = sh.softmax_scale;
  k.inv_scale = 1.f / sh.softmax_scale;
  k.dropout = m.dropout_p > 0.f;
  k.threshold = dropout_threshold(m.dropout_p);
  k.keep_scale = float(1.0 / (1.0 - double(m.dropout_p)));
  k.seed = m.dropout_seed;
  k.batch = varlen ? 0u : uint32_t(sp.b);
  k.head = uint32_t(m.head0 + h);
  // Varlen draws by packed token: the sequence's start (with positions) or the span's first row.
  const int tok = varlen && m.q_pos && m.seq_tok ? m.seq_tok[z] : 0;
  k.q_tok0 = varlen && !m.q_pos ? sp.q0 : tok;
  k.k_tok0 = varlen && !m.q_pos ? sp.k0 : tok;
  return k;
}

}  // namespace rfa::cuda

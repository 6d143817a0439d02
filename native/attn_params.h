// Parameter structs of the attention kernel family, shared by the CPU (native/cpu) and CUDA
// (native/cuda) backends. The host fills them only after validation (the TS boundary validates,
// native/bindings re-checks cheaply). Strides are in elements and 64-bit; the head_dim axis is always
// contiguous (stride 1). Pointers point at the first element of the (possibly strided) view.
// Layouts follow flash-attn 2.x: q/k/v/out (batch, seqlen, heads, head_dim), lse (batch, heads, seqlen).
#pragma once
#include <cstdint>

namespace rfa {

enum class DType : int32_t { f32 = 0, bf16 = 1, f16 = 2 };

inline int dtype_bytes(DType t) { return t == DType::f32 ? 4 : 2; }

// Strides of a (batch, seqlen, heads, head_dim) tensor view.
struct BshStrides {
  int64_t batch = 0;
  int64_t row = 0;  // seqlen axis
  int64_t head = 0;
};

// Whether every row of a (batch, seqlen, heads, head_dim) view at `base` with strides `st`, in
// elements of `elem_bytes`, starts on a multiple of `vec` elements in memory: what a kernel needs
// to read or write `vec` consecutive elements as one aligned vector (or bulk copy).
inline bool rows_aligned(const void* base, const BshStrides& st, int64_t vec, int64_t elem_bytes) {
  return reinterpret_cast<uintptr_t>(base) % uintptr_t(vec * elem_bytes) == 0 && st.batch % vec == 0 &&
         st.row % vec == 0 && st.head % vec == 0;
}

// Strides of a (batch, heads, seqlen) fp32 row-statistics tensor (lse, dsum).
struct BhsStrides {
  int64_t batch = 0;
  int64_t head = 0;
  int64_t row = 0;
};

struct AttnShape {
  int32_t batch = 0;
  int32_t seqlen_q = 0;
  int32_t seqlen_k = 0;
  int32_t nheads = 0;    // query heads
  int32_t nheads_k = 0;  // key/value heads; nheads % nheads_k == 0 (GQA/MQA)
  int32_t head_dim = 0;
  float softmax_scale = 0.f;  // scores = softmax_scale * q.k
  // Causal as flash-attn 2.x: bottom-right aligned. Query row i sees key j iff
  // j <= i + seqlen_k - seqlen_q. A row that sees no key gets out = 0 and lse = -inf.
  bool causal = false;
};

// Packed variable-length sequences (flash-attn's varlen), optional: when num_seqs > 0 the batch
// is 1 and the seqlen axis holds segments. Segment i has query rows [q_start[i], q_start[i] +
// q_len[i]) and key rows [k_start[i], k_start[i] + k_len[i]); attention never crosses segments,
// and causal is bottom-right aligned per segment. The arrays are int32 in the backend's memory
// (host for cpu, device for cuda). Rows outside every segment are not touched (out, lse, dq).
// With start/len pairs (not just cu_seqlens) a step may cover part of each sequence, e.g. the
// second half of every sequence in zigzag varlen.
struct Segments {
  int32_t num_seqs = 0;
  const int32_t* q_start = nullptr;  // (num_seqs)
  const int32_t* q_len = nullptr;    // (num_seqs)
  const int32_t* k_start = nullptr;  // (num_seqs)
  const int32_t* k_len = nullptr;    // (num_seqs)
  int32_t max_seqlen_q = 0;          // max of q_len (grid sizing)
  int32_t max_seqlen_k = 0;          // max of k_len
};

// The score hooks of flash-attn (window_size, softcap, alibi_slopes, dropout_p) and the global
// positions they read. Value-initialized, every hook is off and the kernels behave as without it.
// For query row i and key row j of a span (a batch entry, or a varlen segment) with positions
// qp and kp, the score is
//   s = scale * q.k;  s = softcap * tanh(s / softcap) when softcap > 0;  s += alibi bias;
// and the key is visible iff  kp >= qp + diag - window_left  (window_left >= 0),
// kp <= qp + diag + window_right (window_right >= 0), and kp <= qp + diag (shape.causal).
// The ALiBi bias is -slope * |qp + diag - kp|, or slope * kp where the mask is purely causal
// (window_left < 0 and, with causal, right 0): flash-attn's form, equal after softmax, so its lse
// is comparable. Dropout keeps P_ij with probability 1 - dropout_p (then scaled by 1 / (1 -
// dropout_p)); the draw of an element is Philox4x32-10 keyed on the seed, with counter
// (kt / 4, qt, head, batch) and word kt % 4, kept iff that word >= floor(dropout_p * 2^32): qt
// and kt are qp and kp (dense), or the packed token indices seq_tok[segment] + qp / kp (varlen
// with positions; row indices without). The same element draws the same bits in any ring.
struct ScoreMods {
  // Global positions within the row's sequence, increasing over a span. Null: qp = row - span
  // start, kp likewise, and diag = the span's key count - its query count (single device).
  const int32_t* q_pos = nullptr;  // (seqlen_q)
  const int32_t* k_pos = nullptr;  // (seqlen_k)
  int32_t diag = 0;                // with positions: the sequence's seqlen_k - seqlen_q
  const int32_t* seq_tok =
      nullptr;                // (num_seqs) varlen with positions: packed index of each sequence's start
  int32_t window_left = -1;   // -1: unbounded
  int32_t window_right = -1;  // -1: unbounded (causal implies 0)
  float softcap = 0.f;        // 0: off
  const float* alibi_slopes = nullptr;  // fp32 (batch, nheads) or (nheads); varlen: (num_seqs, nheads)
  int64_t alibi_batch_stride = 0;       // 0: the same slopes for every batch entry
  int32_t head0 = 0;      // the global index of the call's first query head (a call over a slice of heads)
  float dropout_p = 0.f;  // 0: off
  uint64_t dropout_seed = 0;

  bool positional() const { return q_pos != nullptr; }
  // Whether any hook is on for a call with this causal flag (a causal call's window (-1, 0) is its
  // causal mask, not a hook; global positions count: they move the causal diagonal).
  bool any(bool causal) const {
    const bool window = window_left >= 0 || (window_right >= 0 && !(causal && window_right == 0));
    return positional() || window || softcap != 0.f || alibi_slopes || dropout_p != 0.f;
  }
  // Whether the hooks only choose the keys a query sees (a window, global positions) and leave the
  // scores as they are: the kernels' masks can take those.
  bool masks_only() const { return softcap == 0.f && !alibi_slopes && dropout_p == 0.f; }
};

// out = softmax(scale * q k^T) v, written in fp32 so that ring merges never round through bf16,
// or, for a single-device call whose result is final, straight in the dtype of q (out_dtype).
struct FlashFwdParams {
  AttnShape shape;
  DType dtype = DType::bf16;  // dtype of q, k, v
  const void* q = nullptr;
  BshStrides q_stride;  // (batch, seqlen_q, nheads,   head_dim)
  const void* k = nullptr;
  BshStrides k_stride;  // (batch, seqlen_k, nheads_k, head_dim)
  const void* v = nullptr;
  BshStrides v_stride;  // (batch, seqlen_k, nheads_k, head_dim)
  void* out = nullptr;
  BshStrides o_stride;           // (batch, seqlen_q, nheads,   head_dim)
  DType out_dtype = DType::f32;  // f32, or the dtype of q
  float* lse = nullptr;
  BhsStrides lse_stride;  // (batch, nheads, seqlen_q) fp32, natural log
  Segments seg;           // varlen; num_seqs == 0 for dense batches
  // Ring steps: lse and out (fp32), or merge_src when given, already hold a running result over
  // other keys; the block's result is merged into them (update_out_and_lse) instead of
  // overwriting. With merge_src the merged rows go to out, which may then be 16-bit (a ring's
  // last step writes its final result). Rows the call does not cover are not touched.
  bool merge = false;
  const float* merge_src = nullptr;
  BshStrides src_stride;  // (batch, seqlen_q, nheads, head_dim) fp32
  ScoreMods mods;         // the option hooks; off by default
};

// dsum = rowsum(dout * out): the softmax-backward term D_i, computed once per backward call with
// the GLOBAL (ring-merged) out, not once per ring step.
struct FlashBwdDotParams {
  int32_t batch = 0, seqlen_q = 0, nheads = 0, head_dim = 0;
  DType dtype = DType::bf16;  // dtype of dout
  const void* dout = nullptr;
  BshStrides dout_stride;  // (batch, seqlen_q, nheads, head_dim)
  const void* out = nullptr;
  BshStrides o_stride;           // (batch, seqlen_q, nheads, head_dim)
  DType out_dtype = DType::f32;  // f32, or the dtype of dout
  float* dsum = nullptr;
  BhsStrides dsum_stride;  // (batch, nheads, seqlen_q) fp32
};

// Gradients of one (q block, k/v block) pair given the GLOBAL lse and dsum:
//   P = exp(scale*q k^T - lse), dV = P^T dout, dP = dout V^T, dS = P * (dP - dsum),
//   dQ = scale * dS K, dK = scale * dS^T Q.   Rows with lse == -inf contribute nothing.
// With GQA, dk/dv of a kv head sum over the nheads/nheads_k query heads that share it.
struct FlashBwdParams {
  AttnShape shape;
  DType dtype = DType::bf16;  // dtype of q, k, v, dout
  const void* q = nullptr;
  BshStrides q_stride;
  const void* k = nullptr;
  BshStrides k_stride;
  const void* v = nullptr;
  BshStrides v_stride;
  const void* dout = nullptr;
  BshStrides dout_stride;  // (batch, seqlen_q, nheads, head_dim)
  const float* lse = nullptr;
  BhsStrides lse_stride;  // (batch, nheads, seqlen_q)
  const float* dsum = nullptr;
  BhsStrides dsum_stride;  // (batch, nheads, seqlen_q)
  float* dq = nullptr;
  BshStrides dq_stride;  // (batch, seqlen_q, nheads,   head_dim) fp32
  float* dk = nullptr;
  BshStrides dk_stride;  // (batch, seqlen_k, nheads_k, head_dim) fp32
  float* dv = nullptr;
  BshStrides dv_stride;     // (batch, seqlen_k, nheads_k, head_dim) fp32
  bool accumulate = false;  // true: dq/dk/dv += block gradients (ring steps); false: overwrite
  // With accumulate: dk/dv are written, not added onto, while dq still accumulates. A ring step
  // whose block gradients go to a fresh buffer then needs no zero fill of it first.
  bool overwrite_dkv = false;
  // The same bits on every run: dq's parts from the key tiles are added in key-tile order (each
  // CTA waits for its turn per query tile), and a split key tile's dK/dV in split order; slower.
  bool deterministic = false;
  Segments seg;    // varlen; num_seqs == 0 for dense batches (with segments, dq, dk and dv must accumulate)
  ScoreMods mods;  // the same hooks as the forward's: the backward recomputes P with them
#ifdef __CUDACC__
  __host__ __device__
#endif
      bool
      accumulate_dkv() const {
    return accumulate && !overwrite_dkv;
  }
};

// In-place exact merge of a block result into the running result (fp32):
//   lse = lse_a - logsigmoid(lse_a - lse_b),  out = out_a - sigmoid(lse_b - lse_a) * (out_a - out_b)
// with -inf on either side meaning "no keys yet": the other side is taken as is.
struct MergeParams {
  int32_t batch = 0, seqlen = 0, nheads = 0, head_dim = 0;
  float* out = nullptr;
  BshStrides o_stride;  // running out (b, s, h, d)
  float* lse = nullptr;
  BhsStrides lse_stride;  // running lse (b, h, s)
  const float* block_out = nullptr;
  BshStrides block_o_stride;  // block out  (b, s, h, d)
  const float* block_lse = nullptr;
  BhsStrides block_lse_stride;  // block lse  (b, h, s)
};

}  // namespace rfa

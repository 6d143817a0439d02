// Builds the kernel parameter structs of attn_params.h from the JS objects that
// runtime/kernel_args.ts writes. Shared by the CPU and CUDA bindings, so both backends read arguments
// identically.
#pragma once
#include "bindings/views.h"

namespace rfa::napi {

inline AttnShape attn_shape(const Napi::Object& o) {
  Napi::Object s = get_obj(o, "shape");
  AttnShape sh;
  sh.batch = int32_t(get_i64(s, "batch"));
  sh.seqlen_q = int32_t(get_i64(s, "seqlen_q"));
  sh.seqlen_k = int32_t(get_i64(s, "seqlen_k"));
  sh.nheads = int32_t(get_i64(s, "nheads"));
  sh.nheads_k = int32_t(get_i64(s, "nheads_k"));
  sh.head_dim = int32_t(get_i64(s, "head_dim"));
  sh.softmax_scale = float(get_f64(s, "softmax_scale"));
  sh.causal = get_bool(s, "causal");
  if (sh.nheads <= 0 || sh.nheads_k <= 0 || sh.nheads % sh.nheads_k != 0)
    RFA_THROW("E_SHAPE", "nheads must be a positive multiple of nheads_k");
  return sh;
}

// Optional { seg: { num_seqs, q_start, q_len, k_start, k_len, max_seqlen_q, max_seqlen_k } } (int32 views).
inline Segments segments(const Napi::Object& o) {
  Segments s;
  Napi::Value v = o.Get("seg");
  if (v.IsUndefined() || v.IsNull()) return s;
  if (!v.IsObject()) RFA_THROW("E_ARG", "seg must be an object");
  Napi::Object so = v.As<Napi::Object>();
  s.num_seqs = int32_t(get_i64(so, "num_seqs"));
  if (s.num_seqs < 0) RFA_THROW("E_ARG", "seg.num_seqs must be >= 0");
  s.q_start = static_cast<const int32_t*>(flat_view(so, "q_start", s.num_seqs, 4));
  s.q_len = static_cast<const int32_t*>(flat_view(so, "q_len", s.num_seqs, 4));
  s.k_start = static_cast<const int32_t*>(flat_view(so, "k_start", s.num_seqs, 4));
  s.k_len = static_cast<const int32_t*>(flat_view(so, "k_len", s.num_seqs, 4));
  s.max_seqlen_q = int32_t(get_i64(so, "max_seqlen_q"));
  s.max_seqlen_k = int32_t(get_i64(so, "max_seqlen_k"));
  return s;
}

// Optional { mods: { q_pos, k_pos, diag, seq_tok, window_left, window_right, softcap, alibi_slopes,
// alibi_batch_stride, dropout_p, dropout_seed_lo, dropout_seed_hi } }; absent fields are off.
inline ScoreMods score_mods(const Napi::Object& o, const AttnShape& sh, const Segments& seg) {
  ScoreMods m;
  Napi::Value v = o.Get("mods");
  if (v.IsUndefined() || v.IsNull()) return m;
  if (!v.IsObject()) RFA_THROW("E_ARG", "mods must be an object");
  Napi::Object mo = v.As<Napi::Object>();
  const auto has = [&](const char* key) { return !mo.Get(key).IsUndefined(); };
  if (has("q_pos")) {
    m.q_pos = static_cast<const int32_t*>(flat_view(mo, "q_pos", sh.seqlen_q, 4));
    m.k_pos = static_cast<const int32_t*>(flat_view(mo, "k_pos", sh.seqlen_k, 4));
    m.diag = int32_t(get_i64(mo, "diag"));
    if (seg.num_seqs > 0) m.seq_tok = static_cast<const int32_t*>(flat_view(mo, "seq_tok", seg.num_seqs, 4));
  }
  if (has("window_left")) m.window_left = int32_t(get_i64(mo, "window_left"));
  if (has("window_right")) m.window_right = int32_t(get_i64(mo, "window_right"));
  if (m.window_left < -1 || m.window_right < -1) RFA_THROW("E_ARG", "window sides must be >= -1");
  if (has("softcap")) m.softcap = float(get_f64(mo, "softcap"));
  if (!(m.softcap >= 0.f)) RFA_THROW("E_ARG", "softcap must be >= 0");
  if (has("head0")) m.head0 = int32_t(get_i64(mo, "head0"));
  if (m.head0 < 0) RFA_THROW("E_ARG", "head0 must be >= 0");
  if (has("alibi_slopes")) {
    m.alibi_batch_stride = get_i64(mo, "alibi_batch_stride");
    const int64_t heads = int64_t(m.head0) + sh.nheads;
    if (m.alibi_batch_stride != 0 && m.alibi_batch_stride < heads)
      RFA_THROW("E_SHAPE", "alibi_batch_stride must be 0 or cover every head");
    const int64_t batches = seg.num_seqs > 0 ? seg.num_seqs : sh.batch;
    const int64_t n = m.alibi_batch_stride ? batches * m.alibi_batch_stride : heads;
    m.alibi_slopes = static_cast<const float*>(flat_view(mo, "alibi_slopes", n, 4));
  }
  if (has("dropout_p")) m.dropout_p = float(get_f64(mo, "dropout_p"));
  if (!(m.dropout_p >= 0.f && m.dropout_p < 1.f)) RFA_THROW("E_ARG", "dropout_p must be in [0, 1)");
  if (m.dropout_p > 0.f)
    m.dropout_seed =
        uint64_t(get_i64(mo, "dropout_seed_lo")) | (uint64_t(get_i64(mo, "dropout_seed_hi")) << 32);
  return m;
}

// Optional out_dtype (default float32): the attention output may also be in the inputs' dtype.
inline DType out_dtype(const Napi::Object& o, DType inputs) {
  if (o.Get("out_dtype").IsUndefined()) return DType::f32;
  const DType t = get_dtype(o, "out_dtype");
  if (t != DType::f32 && t != inputs) RFA_THROW("E_DTYPE", "out must be float32 or the dtype of the inputs");
  return t;
}

// The fields forward and backward share: shape, dtype, and the q, k, v views.
template <class Params>
void attn_inputs(const Napi::Object& o, Params& p) {
  p.shape = attn_shape(o);
  p.dtype = get_dtype(o, "dtype");
  const AttnShape& s = p.shape;
  const int eb = dtype_bytes(p.dtype);
  p.q = bsh_view<const void>(o, "q", s.batch, s.seqlen_q, s.nheads, s.head_dim, eb, &p.q_stride);
  p.k = bsh_view<const void>(o, "k", s.batch, s.seqlen_k, s.nheads_k, s.head_dim, eb, &p.k_stride);
  p.v = bsh_view<const void>(o, "v", s.batch, s.seqlen_k, s.nheads_k, s.head_dim, eb, &p.v_stride);
}

inline FlashFwdParams fwd_params(const Napi::Object& o) {
  FlashFwdParams p;
  attn_inputs(o, p);
  const AttnShape& s = p.shape;
  p.out_dtype = out_dtype(o, p.dtype);
  p.out = bsh_view<void>(o, "out", s.batch, s.seqlen_q, s.nheads, s.head_dim, dtype_bytes(p.out_dtype),
                         &p.o_stride);
  p.lse = bhs_view(o, "lse", s.batch, s.nheads, s.seqlen_q, &p.lse_stride);
  p.seg = segments(o);
  p.mods = score_mods(o, s, p.seg);
  p.merge = get_bool(o, "merge");  // absent: false
  if (!o.Get("merge_src").IsUndefined())
    p.merge_src =
        bsh_view<const float>(o, "merge_src", s.batch, s.seqlen_q, s.nheads, s.head_dim, 4, &p.src_stride);
  return p;
}

// The sizes of a (batch, seqlen, heads, head_dim) argument set whose seqlen and heads go by the
// keys its struct names them, and views of its tensors by them.
struct BshDims {
  int32_t batch, seqlen, heads, head_dim;
};
inline BshDims bsh_dims(const Napi::Object& o, const char* seqlen_key, const char* heads_key) {
  return {int32_t(get_i64(o, "batch")), int32_t(get_i64(o, seqlen_key)), int32_t(get_i64(o, heads_key)),
          int32_t(get_i64(o, "head_dim"))};
}
template <typename T>
T* bsh_view(const Napi::Object& o, const char* key, const BshDims& n, int elem_bytes, BshStrides* st) {
  return bsh_view<T>(o, key, n.batch, n.seqlen, n.heads, n.head_dim, elem_bytes, st);
}
inline float* bhs_view(const Napi::Object& o, const char* key, const BshDims& n, BhsStrides* st) {
  return bhs_view(o, key, n.batch, n.heads, n.seqlen, st);
}

inline FlashBwdDotParams bwd_dot_params(const Napi::Object& o) {
  FlashBwdDotParams p;
  const BshDims n = bsh_dims(o, "seqlen_q", "nheads");
  p.batch = n.batch, p.seqlen_q = n.seqlen, p.nheads = n.heads, p.head_dim = n.head_dim;
  p.dtype = get_dtype(o, "dtype");
  p.dout = bsh_view<const void>(o, "dout", n, dtype_bytes(p.dtype), &p.dout_stride);
  p.out_dtype = out_dtype(o, p.dtype);
  p.out = bsh_view<const void>(o, "out", n, dtype_bytes(p.out_dtype), &p.o_stride);
  p.dsum = bhs_view(o, "dsum", n, &p.dsum_stride);
  return p;
}

inline FlashBwdParams bwd_params(const Napi::Object& o) {
  FlashBwdParams p;
  attn_inputs(o, p);
  const AttnShape& s = p.shape;
  const int eb = dtype_bytes(p.dtype);
  p.dout = bsh_view<const void>(o, "dout", s.batch, s.seqlen_q, s.nheads, s.head_dim, eb, &p.dout_stride);
  p.lse = bhs_view(o, "lse", s.batch, s.nheads, s.seqlen_q, &p.lse_stride);
  p.dsum = bhs_view(o, "dsum", s.batch, s.nheads, s.seqlen_q, &p.dsum_stride);
  p.dq = bsh_view<float>(o, "dq", s.batch, s.seqlen_q, s.nheads, s.head_dim, 4, &p.dq_stride);
  p.dk = bsh_view<float>(o, "dk", s.batch, s.seqlen_k, s.nheads_k, s.head_dim, 4, &p.dk_stride);
  p.dv = bsh_view<float>(o, "dv", s.batch, s.seqlen_k, s.nheads_k, s.head_dim, 4, &p.dv_stride);
  p.accumulate = get_bool(o, "accumulate");
  p.deterministic = get_bool(o, "deterministic");  // absent: false
  p.overwrite_dkv = get_bool(o, "overwrite_dkv");
  p.seg = segments(o);
  p.mods = score_mods(o, s, p.seg);
  return p;
}

inline MergeParams merge_params(const Napi::Object& o) {
  MergeParams p;
  const BshDims n = bsh_dims(o, "seqlen", "nheads");
  p.batch = n.batch, p.seqlen = n.seqlen, p.nheads = n.heads, p.head_dim = n.head_dim;
  p.out = bsh_view<float>(o, "out", n, 4, &p.o_stride);
  p.lse = bhs_view(o, "lse", n, &p.lse_stride);
  p.block_out = bsh_view<const float>(o, "block_out", n, 4, &p.block_o_stride);
  p.block_lse = bhs_view(o, "block_lse", n, &p.block_lse_stride);
  return p;
}

// Arguments of copy_bsh: { src, dst, batch, seqlen, heads, head_dim, dtype }.
struct CopyArgs {
  const void* src;
  BshStrides src_stride;
  void* dst;
  BshStrides dst_stride;
  int32_t batch, seqlen, heads, head_dim;
  DType dtype;
};

inline CopyArgs copy_args(const Napi::Object& o) {
  CopyArgs a;
  const BshDims n = bsh_dims(o, "seqlen", "heads");
  a.batch = n.batch, a.seqlen = n.seqlen, a.heads = n.heads, a.head_dim = n.head_dim;
  a.dtype = get_dtype(o, "dtype");
  const int eb = dtype_bytes(a.dtype);
  a.src = bsh_view<const void>(o, "src", n, eb, &a.src_stride);
  a.dst = bsh_view<void>(o, "dst", n, eb, &a.dst_stride);
  return a;
}

}  // namespace rfa::napi

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

// Optional out_dtype (default float32): the attention output may also be in the inputs' dtype.
inline DType out_dtype(const Napi::Object& o, DType inputs) {
  if (o.Get("out_dtype").IsUndefined()) return DType::f32;
  const DType t = get_dtype(o, "out_dtype");
  if (t != DType::f32 && t != inputs) RFA_THROW("E_DTYPE", "out must be float32 or the dtype of the inputs");
  return t;
}

inline FlashFwdParams fwd_params(const Napi::Object& o) {
  FlashFwdParams p;
  p.shape = attn_shape(o);
  p.dtype = get_dtype(o, "dtype");
  const AttnShape& s = p.shape;
  const int eb = dtype_bytes(p.dtype);
  p.q = bsh_view<const void>(o, "q", s.batch, s.seqlen_q, s.nheads, s.head_dim, eb, &p.q_stride);
  p.k = bsh_view<const void>(o, "k", s.batch, s.seqlen_k, s.nheads_k, s.head_dim, eb, &p.k_stride);
  p.v = bsh_view<const void>(o, "v", s.batch, s.seqlen_k, s.nheads_k, s.head_dim, eb, &p.v_stride);
  p.out_dtype = out_dtype(o, p.dtype);
  p.out = bsh_view<void>(o, "out", s.batch, s.seqlen_q, s.nheads, s.head_dim, dtype_bytes(p.out_dtype),
                         &p.o_stride);
  p.lse = bhs_view(o, "lse", s.batch, s.nheads, s.seqlen_q, &p.lse_stride);
  p.seg = segments(o);
  p.merge = get_bool(o, "merge");  // absent: false
  if (!o.Get("merge_src").IsUndefined())
    p.merge_src =
        bsh_view<const float>(o, "merge_src", s.batch, s.seqlen_q, s.nheads, s.head_dim, 4, &p.src_stride);
  return p;
}

inline FlashBwdDotParams bwd_dot_params(const Napi::Object& o) {
  FlashBwdDotParams p;
  p.batch = int32_t(get_i64(o, "batch"));
  p.seqlen_q = int32_t(get_i64(o, "seqlen_q"));
  p.nheads = int32_t(get_i64(o, "nheads"));
  p.head_dim = int32_t(get_i64(o, "head_dim"));
  p.dtype = get_dtype(o, "dtype");
  p.dout = bsh_view<const void>(o, "dout", p.batch, p.seqlen_q, p.nheads, p.head_dim, dtype_bytes(p.dtype),
                                &p.dout_stride);
  p.out_dtype = out_dtype(o, p.dtype);
  p.out = bsh_view<const void>(o, "out", p.batch, p.seqlen_q, p.nheads, p.head_dim, dtype_bytes(p.out_dtype),
                               &p.o_stride);
  p.dsum = bhs_view(o, "dsum", p.batch, p.nheads, p.seqlen_q, &p.dsum_stride);
  return p;
}

inline FlashBwdParams bwd_params(const Napi::Object& o) {
  FlashBwdParams p;
  p.shape = attn_shape(o);
  p.dtype = get_dtype(o, "dtype");
  const AttnShape& s = p.shape;
  const int eb = dtype_bytes(p.dtype);
  p.q = bsh_view<const void>(o, "q", s.batch, s.seqlen_q, s.nheads, s.head_dim, eb, &p.q_stride);
  p.k = bsh_view<const void>(o, "k", s.batch, s.seqlen_k, s.nheads_k, s.head_dim, eb, &p.k_stride);
  p.v = bsh_view<const void>(o, "v", s.batch, s.seqlen_k, s.nheads_k, s.head_dim, eb, &p.v_stride);
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
  return p;
}

inline MergeParams merge_params(const Napi::Object& o) {
  MergeParams p;
  p.batch = int32_t(get_i64(o, "batch"));
  p.seqlen = int32_t(get_i64(o, "seqlen"));
  p.nheads = int32_t(get_i64(o, "nheads"));
  p.head_dim = int32_t(get_i64(o, "head_dim"));
  p.out = bsh_view<float>(o, "out", p.batch, p.seqlen, p.nheads, p.head_dim, 4, &p.o_stride);
  p.lse = bhs_view(o, "lse", p.batch, p.nheads, p.seqlen, &p.lse_stride);
  p.block_out =
      bsh_view<const float>(o, "block_out", p.batch, p.seqlen, p.nheads, p.head_dim, 4, &p.block_o_stride);
  p.block_lse = bhs_view(o, "block_lse", p.batch, p.nheads, p.seqlen, &p.block_lse_stride);
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
  a.batch = int32_t(get_i64(o, "batch"));
  a.seqlen = int32_t(get_i64(o, "seqlen"));
  a.heads = int32_t(get_i64(o, "heads"));
  a.head_dim = int32_t(get_i64(o, "head_dim"));
  a.dtype = get_dtype(o, "dtype");
  const int eb = dtype_bytes(a.dtype);
  a.src = bsh_view<const void>(o, "src", a.batch, a.seqlen, a.heads, a.head_dim, eb, &a.src_stride);
  a.dst = bsh_view<void>(o, "dst", a.batch, a.seqlen, a.heads, a.head_dim, eb, &a.dst_stride);
  return a;
}

}  // namespace rfa::napi

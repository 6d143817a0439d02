#include "cpu/flash_cpu.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu/half.h"
#include "error.h"

namespace rfa::cpu {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

inline int64_t bsh_index(const BshStrides& s, int64_t b, int64_t row, int64_t h) {
  return b * s.batch + row * s.row + h * s.head;
}
inline int64_t bhs_index(const BhsStrides& s, int64_t b, int64_t h, int64_t row) {
  return b * s.batch + h * s.head + row * s.row;
}

// Loads rows [row0, row0 + rows) of head h of a (b, s, h, d) view into a dense float matrix.
void load_rows(const void* base, DType t, const BshStrides& s, int64_t b, int64_t h, int row0, int rows,
               int d, std::vector<float>& dst) {
  dst.resize(size_t(rows) * d);
  for (int i = 0; i < rows; ++i) {
    int64_t off = bsh_index(s, b, row0 + i, h);
    for (int c = 0; c < d; ++c) dst[size_t(i) * d + c] = load_elem(base, off + c, t);
  }
}

// Last key (inclusive, segment-relative) that query row i may see; flash-attn 2.x bottom-right
// causal alignment within a segment of len_q queries and len_k keys.
inline int last_key(bool causal, int len_q, int len_k, int i) {
  if (!causal) return len_k - 1;
  int last = i + len_k - len_q;
  return last < len_k - 1 ? last : len_k - 1;
}

void check_shape(const AttnShape& sh, const Segments& seg) {
  RFA_CHECK_ARG(sh.batch >= 0 && sh.seqlen_q >= 0 && sh.seqlen_k >= 0, "negative dimension");
  RFA_CHECK_ARG(sh.nheads > 0 && sh.nheads_k > 0 && sh.nheads % sh.nheads_k == 0,
                "nheads must be a positive multiple of nheads_k");
  if (sh.head_dim <= 0 || sh.head_dim > 256)
    RFA_THROW("E_UNSUPPORTED", "head_dim " + std::to_string(sh.head_dim) + " is not supported (1..256)");
  if (seg.num_seqs == 0) return;
  RFA_CHECK_ARG(sh.batch == 1, "varlen segments need batch 1");
  RFA_CHECK_ARG(seg.q_start && seg.q_len && seg.k_start && seg.k_len, "varlen: null segment array");
  for (int i = 0; i < seg.num_seqs; ++i) {
    if (seg.q_start[i] < 0 || seg.q_len[i] < 0 || seg.q_start[i] + seg.q_len[i] > sh.seqlen_q ||
        seg.k_start[i] < 0 || seg.k_len[i] < 0 || seg.k_start[i] + seg.k_len[i] > sh.seqlen_k)
      RFA_THROW("E_SHAPE", "varlen: segment " + std::to_string(i) + " reaches outside the tensors");
  }
}

// One unit of work: batch b, query rows [q0, q0+nq), key rows [k0, k0+nk).
struct Span {
  int64_t b;
  int q0, nq, k0, nk;
};

template <typename F>
void for_each_span(const AttnShape& sh, const Segments& seg, F&& f) {
  if (seg.num_seqs == 0) {
    for (int64_t b = 0; b < sh.batch; ++b) f(Span{b, 0, sh.seqlen_q, 0, sh.seqlen_k});
  } else {
    for (int i = 0; i < seg.num_seqs; ++i)
      f(Span{0, seg.q_start[i], seg.q_len[i], seg.k_start[i], seg.k_len[i]});
  }
}

// update_out_and_lse for one row: o[0, d) and lse hold the running result, (ob, lb) a block's.
void merge_row(float* o, float& lse, const float* ob, double lb, int d) {
  const double la = lse;
  if (std::isinf(lb) && lb < 0) return;  // the block saw no key for this row
  if (std::isinf(la) && la < 0) {        // nothing merged yet: take the block
    for (int c = 0; c < d; ++c) o[c] = ob[c];
    lse = float(lb);
    return;
  }
  // out = out_a - sigmoid(lb - la) * (out_a - out_b);  lse = la - logsigmoid(la - lb)
  const double w = 1.0 / (1.0 + std::exp(la - lb));
  for (int c = 0; c < d; ++c) o[c] = float(o[c] - w * (double(o[c]) - ob[c]));
  const double x = la - lb;  // -logsigmoid(x) = softplus(-x), computed stably
  const double softplus = x > 0 ? std::log1p(std::exp(-x)) : -x + std::log1p(std::exp(x));
  lse = float(la + softplus);
}

}  // namespace

void flash_fwd(const FlashFwdParams& p) {
  const AttnShape& sh = p.shape;
  check_shape(sh, p.seg);
  RFA_CHECK_ARG(p.q && p.k && p.v && p.out && p.lse, "flash_fwd: null tensor");
  RFA_CHECK_ARG(!p.merge || p.out_dtype == DType::f32 || p.merge_src,
                "flash_fwd: merging into a 16-bit out needs merge_src");
  const int d = sh.head_dim, group = sh.nheads / sh.nheads_k;
  std::vector<float> K, V, Q, row(static_cast<size_t>(d)), running(static_cast<size_t>(d));
  std::vector<double> scores, acc(static_cast<size_t>(d));
  for_each_span(sh, p.seg, [&](const Span& sp) {
    scores.resize(size_t(sp.nk));
    for (int hk = 0; hk < sh.nheads_k; ++hk) {
      load_rows(p.k, p.dtype, p.k_stride, sp.b, hk, sp.k0, sp.nk, d, K);
      load_rows(p.v, p.dtype, p.v_stride, sp.b, hk, sp.k0, sp.nk, d, V);
      for (int h = hk * group; h < (hk + 1) * group; ++h) {
        load_rows(p.q, p.dtype, p.q_stride, sp.b, h, sp.q0, sp.nq, d, Q);
        for (int i = 0; i < sp.nq; ++i) {
          const float* q = &Q[size_t(i) * d];
          const int last = last_key(sh.causal, sp.nq, sp.nk, i);
          double row_max = kNegInf;
          for (int j = 0; j <= last; ++j) {
            const float* k = &K[size_t(j) * d];
            double dot = 0;
            for (int c = 0; c < d; ++c) dot += double(q[c]) * k[c];
            scores[j] = dot * sh.softmax_scale;
            if (scores[j] > row_max) row_max = scores[j];
          }
          std::fill(acc.begin(), acc.end(), 0.0);
          double sum = 0;
          for (int j = 0; j <= last; ++j) {
            double e = std::exp(scores[j] - row_max);
            sum += e;
            const float* v = &V[size_t(j) * d];
            for (int c = 0; c < d; ++c) acc[c] += e * v[c];
          }
          const int64_t o = bsh_index(p.o_stride, sp.b, sp.q0 + i, h);
          float& lse = p.lse[bhs_index(p.lse_stride, sp.b, h, sp.q0 + i)];
          const double row_lse = last < 0 ? kNegInf : row_max + std::log(sum);
          if (p.merge) {  // rounded to fp32 first, as a separate block result would be
            for (int c = 0; c < d; ++c) row[size_t(c)] = last < 0 ? 0.f : float(acc[c] / sum);
            const float* src = p.merge_src ? p.merge_src + bsh_index(p.src_stride, sp.b, sp.q0 + i, h)
                                           : static_cast<const float*>(p.out) + o;
            std::copy(src, src + d, running.begin());
            merge_row(running.data(), lse, row.data(), float(row_lse), d);
            for (int c = 0; c < d; ++c) store_elem(p.out, o + c, p.out_dtype, running[size_t(c)]);
            continue;
          }
          for (int c = 0; c < d; ++c)
            store_elem(p.out, o + c, p.out_dtype, last < 0 ? 0.f : float(acc[c] / sum));
          lse = float(row_lse);
        }
      }
    }
  });
}

void flash_bwd_dot(const FlashBwdDotParams& p) {
  RFA_CHECK_ARG(p.dout && p.out && p.dsum, "flash_bwd_dot: null tensor");
  for (int64_t b = 0; b < p.batch; ++b)
    for (int h = 0; h < p.nheads; ++h)
      for (int i = 0; i < p.seqlen_q; ++i) {
        int64_t doff = bsh_index(p.dout_stride, b, i, h);
        const int64_t o = bsh_index(p.o_stride, b, i, h);
        double s = 0;
        for (int c = 0; c < p.head_dim; ++c)
          s += double(load_elem(p.dout, doff + c, p.dtype)) * load_elem(p.out, o + c, p.out_dtype);
        p.dsum[bhs_index(p.dsum_stride, b, h, i)] = float(s);
      }
}

void flash_bwd(const FlashBwdParams& p) {
  const AttnShape& sh = p.shape;
  check_shape(sh, p.seg);
  RFA_CHECK_ARG(p.q && p.k && p.v && p.dout && p.lse && p.dsum && p.dq && p.dk && p.dv,
                "flash_bwd: null tensor");
  RFA_CHECK_ARG(p.seg.num_seqs == 0 || p.accumulate_dkv(),
                "flash_bwd: varlen segments need accumulate (dq, dk and dv)");
  const int d = sh.head_dim, group = sh.nheads / sh.nheads_k;
  std::vector<float> K, V, Q, dO;
  std::vector<double> dK, dV, dQrow(static_cast<size_t>(d));
  for_each_span(sh, p.seg, [&](const Span& sp) {
    for (int hk = 0; hk < sh.nheads_k; ++hk) {
      load_rows(p.k, p.dtype, p.k_stride, sp.b, hk, sp.k0, sp.nk, d, K);
      load_rows(p.v, p.dtype, p.v_stride, sp.b, hk, sp.k0, sp.nk, d, V);
      dK.assign(size_t(sp.nk) * d, 0.0);
      dV.assign(size_t(sp.nk) * d, 0.0);
      for (int h = hk * group; h < (hk + 1) * group; ++h) {
        load_rows(p.q, p.dtype, p.q_stride, sp.b, h, sp.q0, sp.nq, d, Q);
        load_rows(p.dout, p.dtype, p.dout_stride, sp.b, h, sp.q0, sp.nq, d, dO);
        for (int i = 0; i < sp.nq; ++i) {
          const float* q = &Q[size_t(i) * d];
          const float* dout = &dO[size_t(i) * d];
          const double lse = p.lse[bhs_index(p.lse_stride, sp.b, h, sp.q0 + i)];
          const double dsum = p.dsum[bhs_index(p.dsum_stride, sp.b, h, sp.q0 + i)];
          std::fill(dQrow.begin(), dQrow.end(), 0.0);
          const int last = std::isinf(lse) && lse < 0 ? -1 : last_key(sh.causal, sp.nq, sp.nk, i);
          for (int j = 0; j <= last; ++j) {
            const float* k = &K[size_t(j) * d];
            const float* v = &V[size_t(j) * d];
            double dot = 0, dp = 0;
            for (int c = 0; c < d; ++c) {
              dot += double(q[c]) * k[c];
              dp += double(dout[c]) * v[c];
            }
            const double prob = std::exp(dot * sh.softmax_scale - lse);
            const double ds = prob * (dp - dsum) * sh.softmax_scale;  // scale folded into dS
            double* dv = &dV[size_t(j) * d];
            double* dk = &dK[size_t(j) * d];
            for (int c = 0; c < d; ++c) {
              dv[c] += prob * dout[c];
              dk[c] += ds * q[c];
              dQrow[c] += ds * k[c];
            }
          }
          float* dq = p.dq + bsh_index(p.dq_stride, sp.b, sp.q0 + i, h);
          for (int c = 0; c < d; ++c) dq[c] = float((p.accumulate ? dq[c] : 0.0) + dQrow[c]);
        }
      }
      for (int j = 0; j < sp.nk; ++j) {
        float* dk = p.dk + bsh_index(p.dk_stride, sp.b, sp.k0 + j, hk);
        float* dv = p.dv + bsh_index(p.dv_stride, sp.b, sp.k0 + j, hk);
        for (int c = 0; c < d; ++c) {
          dk[c] = float((p.accumulate_dkv() ? dk[c] : 0.0) + dK[size_t(j) * d + c]);
          dv[c] = float((p.accumulate_dkv() ? dv[c] : 0.0) + dV[size_t(j) * d + c]);
        }
      }
    }
  });
}

void merge(const MergeParams& p) {
  RFA_CHECK_ARG(p.out && p.lse && p.block_out && p.block_lse, "merge: null tensor");
  for (int64_t b = 0; b < p.batch; ++b)
    for (int h = 0; h < p.nheads; ++h)
      for (int i = 0; i < p.seqlen; ++i)
        merge_row(p.out + bsh_index(p.o_stride, b, i, h), p.lse[bhs_index(p.lse_stride, b, h, i)],
                  p.block_out + bsh_index(p.block_o_stride, b, i, h),
                  p.block_lse[bhs_index(p.block_lse_stride, b, h, i)], p.head_dim);
}

void cast(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n) {
  RFA_CHECK_ARG(n == 0 || (src && dst), "cast: null tensor");
  for (int64_t i = 0; i < n; ++i) store_elem(dst, i, dst_dtype, load_elem(src, i, src_dtype));
}

void add_f32(float* dst, const float* src, int64_t n) {
  RFA_CHECK_ARG(n == 0 || (src && dst), "add: null tensor");
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

void copy_bsh(const void* src, BshStrides ss, void* dst, BshStrides ds, int32_t batch, int32_t seqlen,
              int32_t heads, int32_t head_dim, DType dtype) {
  RFA_CHECK_ARG(src && dst, "copy: null tensor");
  const int64_t bytes = int64_t(head_dim) * dtype_bytes(dtype), esz = dtype_bytes(dtype);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t i = 0; i < seqlen; ++i)
      for (int64_t h = 0; h < heads; ++h)
        std::memcpy(static_cast<char*>(dst) + bsh_index(ds, b, i, h) * esz,
                    static_cast<const char*>(src) + bsh_index(ss, b, i, h) * esz, size_t(bytes));
}

}  // namespace rfa::cpu

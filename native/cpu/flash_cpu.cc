#include "cpu/flash_cpu.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu/half.h"
#include "error.h"
#include "philox.h"

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

void check_mods(const ScoreMods& m, const Segments& seg) {
  RFA_CHECK_ARG((m.q_pos == nullptr) == (m.k_pos == nullptr), "positions need both q_pos and k_pos");
  RFA_CHECK_ARG(!(m.positional() && seg.num_seqs > 0 && m.dropout_p > 0.f) || m.seq_tok,
                "varlen dropout with positions needs seq_tok");
}

// One unit of work: batch b, query rows [q0, q0+nq), key rows [k0, k0+nk).
struct Span {
  int64_t b;
  int q0, nq, k0, nk;
  bool varlen;
  int seg;  // segment index (varlen)
};

template <typename F>
void for_each_span(const AttnShape& sh, const Segments& seg, F&& f) {
  if (seg.num_seqs == 0) {
    for (int64_t b = 0; b < sh.batch; ++b) f(Span{b, 0, sh.seqlen_q, 0, sh.seqlen_k, false, 0});
  } else {
    for (int i = 0; i < seg.num_seqs; ++i)
      f(Span{0, seg.q_start[i], seg.q_len[i], seg.k_start[i], seg.k_len[i], true, i});
  }
}

// The score hooks (attn_params.h ScoreMods) for one span: which keys a query row sees, the
// modified score, and the dropout factor of an element.
class Scorer {
 public:
  Scorer(const AttnShape& sh, const ScoreMods& m, const Span& sp, int seg_index) : sh_(sh), m_(m), sp_(sp) {
    diag_ = m.positional() ? m.diag : sp.nk - sp.nq;
    right_ = sh.causal ? 0 : m.window_right;
    // flash-attn's causal ALiBi form, slope * kp, where the mask is purely causal.
    alibi_causal_ = m.window_left < 0 && right_ == 0;
    keep_scale_ = 1.0 / (1.0 - double(m.dropout_p));
    threshold_ = dropout_threshold(m.dropout_p);
    tok_base_ = m.positional() && m.seq_tok ? m.seq_tok[seg_index] : 0;
  }

  int qpos(int i) const { return m_.positional() ? m_.q_pos[sp_.q0 + i] : i; }
  int kpos(int j) const { return m_.positional() ? m_.k_pos[sp_.k0 + j] : j; }

  bool visible(int qp, int kp) const {
    const int64_t centre = int64_t(qp) + diag_;
    if (m_.window_left >= 0 && kp < centre - m_.window_left) return false;
    if (right_ >= 0 && kp > centre + right_) return false;
    return true;
  }

  // The score of raw dot product q.k; *dscore gets d(score)/d(dot) (softcap's tanh'), scale included.
  double score(double dot, int h, int qp, int kp, double* dscore) const {
    double s = dot * sh_.softmax_scale;
    *dscore = sh_.softmax_scale;
    if (m_.softcap > 0.f) {
      const double t = std::tanh(s / m_.softcap);
      s = m_.softcap * t;
      *dscore = sh_.softmax_scale * (1.0 - t * t);
    }
    if (m_.alibi_slopes) {
      const double slope =
          m_.alibi_slopes[(sp_.varlen ? sp_.seg : sp_.b) * m_.alibi_batch_stride + m_.head0 + h];
      s += alibi_causal_ ? slope * kp : -slope * std::fabs(double(qp) + diag_ - kp);
    }
    return s;
  }

  // The dropout factor of P at (h, qp, kp): 0 or 1 / (1 - p); 1 without dropout.
  double keep(int h, int qp, int kp, int i, int j) const {
    if (m_.dropout_p <= 0.f) return 1.0;
    uint32_t qt, kt, batch;
    if (sp_.varlen) {  // packed token indices, so that a sequence's draws do not depend on its shard
      batch = 0;
      qt = m_.positional() ? uint32_t(tok_base_ + qp) : uint32_t(sp_.q0 + i);
      kt = m_.positional() ? uint32_t(tok_base_ + kp) : uint32_t(sp_.k0 + j);
    } else {
      batch = uint32_t(sp_.b);
      qt = uint32_t(qp);
      kt = uint32_t(kp);
    }
    return dropout_bits(m_.dropout_seed, batch, uint32_t(m_.head0 + h), qt, kt) >= threshold_ ? keep_scale_
                                                                                              : 0.0;
  }

 private:
  const AttnShape& sh_;
  const ScoreMods& m_;
  Span sp_;
  int64_t diag_;
  int right_;
  bool alibi_causal_;
  double keep_scale_;
  uint32_t threshold_;
  int32_t tok_base_;
};

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
  check_mods(p.mods, p.seg);
  RFA_CHECK_ARG(p.q && p.k && p.v && p.out && p.lse, "flash_fwd: null tensor");
  RFA_CHECK_ARG(!p.merge || p.out_dtype == DType::f32 || p.merge_src,
                "flash_fwd: merging into a 16-bit out needs merge_src");
  const int d = sh.head_dim, group = sh.nheads / sh.nheads_k;
  std::vector<float> K, V, Q, row(static_cast<size_t>(d)), running(static_cast<size_t>(d));
  std::vector<double> scores, acc(static_cast<size_t>(d));
  for_each_span(sh, p.seg, [&](const Span& sp) {
    const Scorer sc(sh, p.mods, sp, sp.seg);
    scores.resize(size_t(sp.nk));
    for (int hk = 0; hk < sh.nheads_k; ++hk) {
      load_rows(p.k, p.dtype, p.k_stride, sp.b, hk, sp.k0, sp.nk, d, K);
      load_rows(p.v, p.dtype, p.v_stride, sp.b, hk, sp.k0, sp.nk, d, V);
      for (int h = hk * group; h < (hk + 1) * group; ++h) {
        load_rows(p.q, p.dtype, p.q_stride, sp.b, h, sp.q0, sp.nq, d, Q);
        for (int i = 0; i < sp.nq; ++i) {
          const float* q = &Q[size_t(i) * d];
          const int qp = sc.qpos(i);
          double row_max = kNegInf, unused;
          for (int j = 0; j < sp.nk; ++j) {
            if (!sc.visible(qp, sc.kpos(j))) {
              scores[j] = kNegInf;
              continue;
            }
            const float* k = &K[size_t(j) * d];
            double dot = 0;
            for (int c = 0; c < d; ++c) dot += double(q[c]) * k[c];
            scores[j] = sc.score(dot, h, qp, sc.kpos(j), &unused);
            if (scores[j] > row_max) row_max = scores[j];
          }
          const bool empty = row_max == kNegInf;
          std::fill(acc.begin(), acc.end(), 0.0);
          double sum = 0;
          for (int j = 0; j < sp.nk && !empty; ++j) {
            if (scores[j] == kNegInf) continue;
            const double e = std::exp(scores[j] - row_max);
            sum += e;
            const double w = e * sc.keep(h, qp, sc.kpos(j), i, j);  // lse is of the undropped P
            if (w == 0.0) continue;
            const float* v = &V[size_t(j) * d];
            for (int c = 0; c < d; ++c) acc[c] += w * v[c];
          }
          const int64_t o = bsh_index(p.o_stride, sp.b, sp.q0 + i, h);
          float& lse = p.lse[bhs_index(p.lse_stride, sp.b, h, sp.q0 + i)];
          const double row_lse = empty ? kNegInf : row_max + std::log(sum);
          if (p.merge) {  // rounded to fp32 first, as a separate block result would be
            for (int c = 0; c < d; ++c) row[size_t(c)] = empty ? 0.f : float(acc[c] / sum);
            const float* src = p.merge_src ? p.merge_src + bsh_index(p.src_stride, sp.b, sp.q0 + i, h)
                                           : static_cast<const float*>(p.out) + o;
            std::copy(src, src + d, running.begin());
            merge_row(running.data(), lse, row.data(), float(row_lse), d);
            for (int c = 0; c < d; ++c) store_elem(p.out, o + c, p.out_dtype, running[size_t(c)]);
            continue;
          }
          for (int c = 0; c < d; ++c)
            store_elem(p.out, o + c, p.out_dtype, empty ? 0.f : float(acc[c] / sum));
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
  check_mods(p.mods, p.seg);
  RFA_CHECK_ARG(p.q && p.k && p.v && p.dout && p.lse && p.dsum && p.dq && p.dk && p.dv,
                "flash_bwd: null tensor");
  RFA_CHECK_ARG(p.seg.num_seqs == 0 || p.accumulate_dkv(),
                "flash_bwd: varlen segments need accumulate (dq, dk and dv)");
  const int d = sh.head_dim, group = sh.nheads / sh.nheads_k;
  std::vector<float> K, V, Q, dO;
  std::vector<double> dK, dV, dQrow(static_cast<size_t>(d));
  for_each_span(sh, p.seg, [&](const Span& sp) {
    const Scorer sc(sh, p.mods, sp, sp.seg);
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
          const int qp = sc.qpos(i);
          const int nk = std::isinf(lse) && lse < 0 ? 0 : sp.nk;  // the row saw no key
          for (int j = 0; j < nk; ++j) {
            const int kp = sc.kpos(j);
            if (!sc.visible(qp, kp)) continue;
            const float* k = &K[size_t(j) * d];
            const float* v = &V[size_t(j) * d];
            double dot = 0, dp = 0;
            for (int c = 0; c < d; ++c) {
              dot += double(q[c]) * k[c];
              dp += double(dout[c]) * v[c];
            }
            double dscore;
            const double prob = std::exp(sc.score(dot, h, qp, kp, &dscore) - lse);
            // Dropout: O = (P * Z) V with Z in {0, 1/(1-p)}, so dV = (P Z)^T dO, dP = Z (dO V^T), and
            // dsum = rowsum(dO * O) is already of the dropped O.
            const double z = sc.keep(h, qp, kp, i, j);
            const double ds = prob * (z * dp - dsum) * dscore;  // d(score)/d(dot) folded into dS
            const double pz = prob * z;
            double* dv = &dV[size_t(j) * d];
            double* dk = &dK[size_t(j) * d];
            for (int c = 0; c < d; ++c) {
              dv[c] += pz * dout[c];
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

// Naive fp64 attention on the CPU, the reference of flash_check.cu: forward (out, lse), dsum and
// the gradients, with bottom-right causal alignment, sliding windows over global positions,
// softcap, ALiBi, dropout (the Philox draw of philox.h), GQA and varlen spans. Written from the
// formulas in attn_params.h, independent of the kernels; dense row-major inputs.
#pragma once
#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <limits>
#include <thread>
#include <vector>

#include "philox.h"

namespace rfa::harness {

struct Problem {
  int b = 1, sq = 1, sk = 1, h = 1, hk = 1, d = 64;
  double scale = 0.125;
  bool causal = false;
  // Varlen spans {q_start, q_len, k_start, k_len} (batch 1); empty: every batch entry is one span.
  std::vector<std::array<int, 4>> segs;
  // Window (flash-attn's window_size; -1 unbounded; causal makes right 0) around a query's diagonal
  // key position qp + diag. Positions of the rows (dense calls), or empty: row indices, with diag
  // the span's nk - nq.
  int left = -1, right = -1;
  std::vector<int> q_pos, k_pos;
  int diag = 0;
  // Scores: softcap * tanh(s / softcap) (0: off), then + the ALiBi bias of slopes[h] (empty: off):
  // slope * kp where the mask is purely causal (flash-attn's form), else -slope * |qp + diag - kp|.
  double softcap = 0;
  std::vector<float> slopes;
  // Dropout (dense): element (qp, kp) of (batch, head) is kept when its draw is at least the
  // threshold, and then scaled by 1 / (1 - p); the softmax sums keep every element.
  float dropout_p = 0;
  uint64_t dropout_seed = 0;
};

// Dense layouts: q, dout, out, dq (b, sq, h, d); k, v, dk, dv (b, sk, hk, d); lse, dsum (b, h, sq).
struct Reference {
  std::vector<double> out, lse, dsum, dq, dk, dv;
  std::vector<char> q_covered, k_covered;  // (b, sq) / (b, sk): rows some span covers
};

inline Reference reference(const Problem& pb, const std::vector<double>& q, const std::vector<double>& k,
                           const std::vector<double>& v, const std::vector<double>& dout) {
  const int d = pb.d, group = pb.h / pb.hk;
  Reference r;
  r.out.assign(size_t(pb.b) * pb.sq * pb.h * d, 0.0);
  r.dq.assign(r.out.size(), 0.0);
  r.lse.assign(size_t(pb.b) * pb.h * pb.sq, 0.0);
  r.dsum.assign(r.lse.size(), 0.0);
  r.dk.assign(size_t(pb.b) * pb.sk * pb.hk * d, 0.0);
  r.dv.assign(r.dk.size(), 0.0);
  r.q_covered.assign(size_t(pb.b) * pb.sq, 0);
  r.k_covered.assign(size_t(pb.b) * pb.sk, 0);

  struct Span {
    int b, q0, nq, k0, nk;
  };
  std::vector<Span> spans;
  if (pb.segs.empty())
    for (int b = 0; b < pb.b; ++b) spans.push_back({b, 0, pb.sq, 0, pb.sk});
  else
    for (auto& s : pb.segs) spans.push_back({0, s[0], s[1], s[2], s[3]});
  for (auto& s : spans) {
    for (int i = 0; i < s.nq; ++i) r.q_covered[size_t(s.b) * pb.sq + s.q0 + i] = 1;
    for (int j = 0; j < s.nk; ++j) r.k_covered[size_t(s.b) * pb.sk + s.k0 + j] = 1;
  }
  auto qi = [&](int b, int i, int h) { return ((size_t(b) * pb.sq + i) * pb.h + h) * d; };
  auto ki = [&](int b, int j, int h) { return ((size_t(b) * pb.sk + j) * pb.hk + h) * d; };
  auto li = [&](int b, int h, int i) { return (size_t(b) * pb.h + h) * pb.sq + i; };

  // Whether query i of span s sees its key j.
  const int right = pb.causal ? 0 : pb.right;
  const bool pos = !pb.q_pos.empty();
  auto qpos = [&](int i) { return pos ? pb.q_pos[size_t(i)] : i; };
  auto kpos = [&](int j) { return pos ? pb.k_pos[size_t(j)] : j; };
  auto diag_of = [&](const Span& s) { return pos ? pb.diag : s.nk - s.nq; };
  auto sees = [&](const Span& s, int i, int j) {
    const int centre = qpos(i) + diag_of(s), kp = kpos(j);
    return !(pb.left >= 0 && kp < centre - pb.left) && !(right >= 0 && kp > centre + right);
  };
  // The score of dot product q.k and d(score)/d(dot).
  const bool alibi_causal = pb.left < 0 && right == 0;
  auto score = [&](const Span& s, int h, int i, int j, double dot, double* dscore) {
    double x = dot * pb.scale;
    *dscore = pb.scale;
    if (pb.softcap > 0) {
      const double t = std::tanh(x / pb.softcap);
      x = pb.softcap * t;
      *dscore = pb.scale * (1 - t * t);
    }
    if (!pb.slopes.empty()) {
      const double slope = pb.slopes[size_t(h)], kp = kpos(j);
      x += alibi_causal ? slope * kp : -slope * std::fabs(double(qpos(i)) + diag_of(s) - kp);
    }
    return x;
  };
  // The dropout factor of element (i, j) of head h: 0, or 1 / (1 - p).
  const uint32_t threshold = dropout_threshold(pb.dropout_p);
  auto keep = [&](const Span& s, int h, int i, int j) {
    if (pb.dropout_p == 0) return 1.0;
    const uint32_t bits =
        dropout_bits(pb.dropout_seed, uint32_t(s.b), uint32_t(h), uint32_t(qpos(i)), uint32_t(kpos(j)));
    return bits >= threshold ? 1.0 / (1.0 - double(pb.dropout_p)) : 0.0;
  };

  // One task per (span, kv head): it owns dk/dv rows of that head, and dq/out rows of its group.
  std::atomic<int> next{0};
  const int tasks = int(spans.size()) * pb.hk;
  auto worker = [&]() {
    std::vector<double> prob, dp, dsc, z;
    std::vector<char> seen;
    for (int task; (task = next++) < tasks;) {
      const Span& s = spans[task / pb.hk];
      const int hk = task % pb.hk;
      prob.resize(size_t(s.nk));
      seen.resize(size_t(s.nk));
      dp.resize(size_t(s.nk));
      dsc.resize(size_t(s.nk));
      z.resize(size_t(s.nk));
      for (int h = hk * group; h < (hk + 1) * group; ++h)
        for (int i = 0; i < s.nq; ++i) {
          const int qr = s.q0 + i;
          const double* qv = &q[qi(s.b, qr, h)];
          double mx = -std::numeric_limits<double>::infinity();
          bool any = false;
          for (int j = 0; j < s.nk; ++j) {
            if (!(seen[j] = sees(s, i, j))) continue;
            any = true;
            const double* kv = &k[ki(s.b, s.k0 + j, hk)];
            double dot = 0;
            for (int c = 0; c < d; ++c) dot += qv[c] * kv[c];
            prob[j] = score(s, h, i, j, dot, &dsc[j]);
            z[j] = keep(s, h, i, j);
            mx = std::max(mx, prob[j]);
          }
          if (!any) {  // the row sees no key: out 0, lse -inf, no gradient
            r.lse[li(s.b, h, qr)] = -std::numeric_limits<double>::infinity();
            continue;
          }
          double sum = 0;
          for (int j = 0; j < s.nk; ++j)
            if (seen[j]) sum += (prob[j] = std::exp(prob[j] - mx));
          double* o = &r.out[qi(s.b, qr, h)];
          for (int j = 0; j < s.nk; ++j) {
            if (!seen[j]) continue;
            prob[j] /= sum;
            const double* vv = &v[ki(s.b, s.k0 + j, hk)];
            for (int c = 0; c < d; ++c) o[c] += prob[j] * z[j] * vv[c];
          }
          r.lse[li(s.b, h, qr)] = mx + std::log(sum);
          const double* dov = &dout[qi(s.b, qr, h)];
          double dsum = 0;
          for (int c = 0; c < d; ++c) dsum += dov[c] * o[c];
          r.dsum[li(s.b, h, qr)] = dsum;
          double* dqv = &r.dq[qi(s.b, qr, h)];
          for (int j = 0; j < s.nk; ++j) {
            if (!seen[j]) continue;
            const double* kv = &k[ki(s.b, s.k0 + j, hk)];
            const double* vv = &v[ki(s.b, s.k0 + j, hk)];
            double dpj = 0;
            for (int c = 0; c < d; ++c) dpj += dov[c] * vv[c];
            const double ds = prob[j] * (z[j] * dpj - dsum) * dsc[j];
            double* dkv = &r.dk[ki(s.b, s.k0 + j, hk)];
            double* dvv = &r.dv[ki(s.b, s.k0 + j, hk)];
            for (int c = 0; c < d; ++c) {
              dqv[c] += ds * kv[c];
              dkv[c] += ds * qv[c];
              dvv[c] += prob[j] * z[j] * dov[c];
            }
          }
        }
    }
  };
  const int n_threads = std::max(1u, std::min(64u, std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  for (int t = 0; t < n_threads; ++t) pool.emplace_back(worker);
  for (auto& t : pool) t.join();
  return r;
}

}  // namespace rfa::harness

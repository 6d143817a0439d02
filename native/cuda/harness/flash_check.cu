// Correctness and speed harness of the CUDA attention kernels (native/cuda/flash_fwd.cu,
// flash_bwd.cu, elementwise.cu); not part of the addon. Build and run: native/cuda/harness/build.sh --run
//
// For every configuration it draws fresh random inputs, poisons the outputs (NaN) before the
// run, runs the kernels and compares with the fp64 CPU reference (reference.h): relative L2
// error |x - ref| / |ref| and max-abs for out, lse, dsum, dq, dk, dv (for accumulate: of the
// increment), and checks that elements outside the views were not touched. Then merge, cast,
// add and copy checks, argument errors, and timings (CUDA events, median of kTimedRuns).
// --no-timing skips the timings, --no-checks the checks; --bench=K runs only the K-th timing shape, without
// checks (for profilers, e.g. ncu -k regex:flash_bwd -c 1 flash_check --bench=1); --windows runs only
// the score-hook checks (windows, positions, softcap, ALiBi, dropout).
//
// FLOP counted for the timings: causal fwd 2*b*h*s^2*d, full 4*b*h*s^2*d, bwd 2.5x fwd. Each
// kernel version's checks and timings: benchmark/RESULTS.md.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "cpu/half.h"
#include "cuda/attn_kernels.h"
#include "cuda/harness/reference.h"
#include "error.h"

using namespace rfa;
using harness::Problem;
using harness::Reference;

#define CHECK_CUDA(x)                                                                          \
  do {                                                                                         \
    const cudaError_t e_ = (x);                                                                \
    if (e_ != cudaSuccess) {                                                                   \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      std::exit(2);                                                                            \
    }                                                                                          \
  } while (0)

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr int kWarmupRuns = 3, kTimedRuns = 25;

// ---- device buffers holding f32 / bf16 / f16 elements, read and written as doubles ----------
// flash_fwd's temporaries: one device buffer that grows to the largest request and is kept
// (the addon passes its caching allocator instead). Growing frees the old buffer, which
// synchronises the device, so a block still in use is never handed out again.
const cuda::Scratch& scratch() {
  static void* buf = nullptr;
  static size_t cap = 0;
  static const cuda::Scratch s{[](size_t n) {
                                 if (n > cap) {
                                   if (buf) CHECK_CUDA(cudaFree(buf));
                                   CHECK_CUDA(cudaMalloc(&buf, n));
                                   cap = n;
                                 }
                                 return buf;
                               },
                               [](void*) {}};
  return s;
}

struct Buffer {
  DType dtype;
  size_t n;
  void* dev = nullptr;
  Buffer(DType t, size_t count) : dtype(t), n(count) {
    CHECK_CUDA(cudaMalloc(&dev, std::max<size_t>(n, 1) * dtype_bytes(t)));
  }
  ~Buffer() { cudaFree(dev); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void upload(const std::vector<double>& x) {
    if (dtype == DType::f32) {
      std::vector<float> h(x.begin(), x.end());
      CHECK_CUDA(cudaMemcpy(dev, h.data(), n * 4, cudaMemcpyHostToDevice));
    } else {
      std::vector<uint16_t> h(n);
      for (size_t i = 0; i < n; ++i)
        h[i] = dtype == DType::bf16 ? cpu::float_to_bf16(float(x[i])) : cpu::float_to_f16(float(x[i]));
      CHECK_CUDA(cudaMemcpy(dev, h.data(), n * 2, cudaMemcpyHostToDevice));
    }
  }
  std::vector<double> download() const {
    std::vector<double> x(n);
    if (dtype == DType::f32) {
      std::vector<float> h(n);
      CHECK_CUDA(cudaMemcpy(h.data(), dev, n * 4, cudaMemcpyDeviceToHost));
      std::copy(h.begin(), h.end(), x.begin());
    } else {
      std::vector<uint16_t> h(n);
      CHECK_CUDA(cudaMemcpy(h.data(), dev, n * 2, cudaMemcpyDeviceToHost));
      for (size_t i = 0; i < n; ++i)
        x[i] = dtype == DType::bf16 ? cpu::bf16_to_float(h[i]) : cpu::f16_to_float(h[i]);
    }
    return x;
  }
  template <typename T = void>
  T* at(int64_t offset) const {
    return reinterpret_cast<T*>(static_cast<char*>(dev) + offset * dtype_bytes(dtype));
  }
};

// Rounds to the buffer's dtype, so that the reference sees exactly what the kernels read.
double quantize(double x, DType t) {
  if (t == DType::bf16) return cpu::bf16_to_float(cpu::float_to_bf16(float(x)));
  if (t == DType::f16) return cpu::f16_to_float(cpu::float_to_f16(float(x)));
  return float(x);
}

std::vector<double> random_values(std::mt19937_64& gen, size_t n, DType t, double sigma) {
  std::normal_distribution<double> dist(0.0, sigma);
  std::vector<double> x(n);
  for (auto& v : x) v = quantize(dist(gen), t);
  return x;
}

// ---- views: a (b, s, h, d) or (b, h, s) window into a buffer --------------------------------
struct BshView {
  int64_t off;
  BshStrides st;
  int64_t at(int64_t b, int64_t i, int64_t h) const { return off + b * st.batch + i * st.row + h * st.head; }
};
struct BhsView {
  int64_t off;
  BhsStrides st;
  int64_t at(int64_t b, int64_t h, int64_t i) const { return off + b * st.batch + h * st.head + i * st.row; }
};

// Slot `slot` of `slots` interleaved (b, s, slots, h, d) tensors; slots == 1 is dense.
BshView bsh_slot(int s, int slots, int slot, int h, int d) {
  return {int64_t(slot) * h * d, BshStrides{int64_t(s) * slots * h * d, int64_t(slots) * h * d, d}};
}
// Rows [pad, pad + s) of a (b, h, s + pad) tensor; pad == 0 is dense.
BhsView bhs_padded(int s, int h, int pad) { return {pad, BhsStrides{int64_t(h) * (s + pad), s + pad, 1}}; }

std::vector<double> gather_bsh(const std::vector<double>& buf, const BshView& v, int b, int s, int h, int d) {
  std::vector<double> x(size_t(b) * s * h * d);
  for (int bb = 0; bb < b; ++bb)
    for (int i = 0; i < s; ++i)
      for (int hh = 0; hh < h; ++hh)
        for (int c = 0; c < d; ++c) x[((size_t(bb) * s + i) * h + hh) * d + c] = buf[v.at(bb, i, hh) + c];
  return x;
}

// What a buffer must hold after a run: `value` everywhere. Elements tagged t > 0 belong to the
// t-th tensor viewed in the buffer and are compared with tolerance (error relative to |incr|, the
// reference result or increment); untagged ones must be bit-identical (a NaN poison stays NaN).
struct Expect {
  std::vector<double> value, incr;
  std::vector<char> tag;
  explicit Expect(const std::vector<double>& before)
      : value(before), incr(before.size(), 0.0), tag(before.size(), 0) {}
  void set(int64_t i, double ref, bool accumulate, char t) {
    value[i] = accumulate ? value[i] + ref : ref;
    incr[i] = ref;
    tag[i] = t;
  }
};

void expect_bsh(Expect& e, const BshView& v, const std::vector<double>& ref, const std::vector<char>& covered,
                int b, int s, int h, int d, bool accumulate, char tag = 1) {
  for (int bb = 0; bb < b; ++bb)
    for (int i = 0; i < s; ++i) {
      if (!covered[size_t(bb) * s + i]) continue;
      for (int hh = 0; hh < h; ++hh)
        for (int c = 0; c < d; ++c)
          e.set(v.at(bb, i, hh) + c, ref[((size_t(bb) * s + i) * h + hh) * d + c], accumulate, tag);
    }
}

void expect_bhs(Expect& e, const BhsView& v, const std::vector<double>& ref, const std::vector<char>& covered,
                int b, int h, int s) {
  for (int bb = 0; bb < b; ++bb)
    for (int hh = 0; hh < h; ++hh)
      for (int i = 0; i < s; ++i)
        if (covered[size_t(bb) * s + i]) e.set(v.at(bb, hh, i), ref[(size_t(bb) * h + hh) * s + i], false, 1);
}

struct Err {
  double rel = 0, max_abs = 0;
  long bad = 0;  // NaN/inf where a finite value is due, -inf mismatches, touched elements outside the view
};

// Errors of the elements tagged `tag`, plus the untouched check of the untagged ones.
Err compare(const std::vector<double>& got, const Expect& e, char tag = 1) {
  Err r;
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double want = e.value[i], x = got[i];
    if (e.tag[i] == 0) {
      if (!(x == want || (std::isnan(x) && std::isnan(want)))) ++r.bad;
      continue;
    }
    if (e.tag[i] != tag) continue;
    if (std::isinf(want)) {
      if (x != want) ++r.bad;
      continue;
    }
    if (!std::isfinite(x)) {
      ++r.bad;
      continue;
    }
    num += (x - want) * (x - want);
    den += e.incr[i] * e.incr[i];
    r.max_abs = std::max(r.max_abs, std::fabs(x - want));
  }
  r.rel = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  return r;
}

int g_failures = 0;

bool report(const std::string& name, const std::vector<std::pair<const char*, Err>>& errs,
            const std::vector<double>& bounds) {
  bool ok = true;
  std::string detail;
  char buf[160];
  for (size_t i = 0; i < errs.size(); ++i) {
    const Err& e = errs[i].second;
    const bool pass = e.bad == 0 && e.rel <= bounds[i];
    ok = ok && pass;
    std::snprintf(buf, sizeof buf, " %s %.1e/%.1e%s", errs[i].first, e.rel, e.max_abs, pass ? "" : "!");
    detail += buf;
    if (e.bad) detail += "(" + std::to_string(e.bad) + " bad)";
  }
  std::printf("%s  %-46s%s\n", ok ? "PASS" : "FAIL", name.c_str(), detail.c_str());
  std::fflush(stdout);
  if (!ok) ++g_failures;
  return ok;
}

// ---- attention configurations ----------------------------------------------------------------
struct Config {
  std::string name;
  DType dtype;
  int d;
  bool causal;
  int b, sq, sk, h, hk;
  bool strided =
      false;  // q/k/v slices of a packed (b, s, 3, h, d) tensor; out, dout, lse, dsum, grads views too
  bool accumulate = false;     // bwd adds into existing dq/dk/dv
  bool overwrite_dkv = false;  // with accumulate: dq adds, dk/dv are written (their old values are NaN)
  std::vector<std::array<int, 4>> segs;  // varlen spans (batch 1)
  // Backward in the deterministic mode, run twice from the same start: the grads must match bit
  // for bit. `rerun` reruns a default-mode config too, only to report whether its bits moved.
  bool deterministic = false;
  bool rerun = false;
  bool fwd_only = false;  // head dims only the forward has: out and lse are checked
  bool nan_gaps = false;  // varlen: K/V rows outside every segment hold NaN (kernels must not read them)
  int window_left = -1, window_right = -1;  // window_size (-1: unbounded)
  // Global positions of a zigzag ring's rank (sq == sk, even): queries hold chunks 1 and 6 of a
  // sequence of 8 chunks of sq / 2 rows, keys chunks 0 and 7 (a step where the second query chunk
  // sees no key at all under a causal window).
  bool zigzag_positions = false;
  float softcap = 0.f;    // 0: off
  bool alibi = false;     // ALiBi slopes 2^(-(h + 1) / 2) per head
  float dropout_p = 0.f;  // 0: off (its draws keyed on dropout_seed 0x5eed)
};

// A config from its name, which states every field set here: bf16 or fp16, dN (head_dim), causal
// (else full), bN (batch, 1 if absent), sN or sqN skN, hN or hN/M (query/key heads), "packed"
// (q/k/v views of one packed tensor) and "accumulate". Other words describe the case; the
// fields past these are set by the caller.
Config spec(const std::string& name) {
  // Words of one or two numbers: the fields they set (a second field takes the second number, or
  // the only one), in the order tried ("sq" before "s").
  struct NumberWord {
    const char* format;
    int count;
    int Config::*first;
    int Config::*second;
  };
  static const NumberWord numbers[] = {
      {"h%d/%d%c", 2, &Config::h, &Config::hk}, {"h%d%c", 1, &Config::h, &Config::hk},
      {"sq%d%c", 1, &Config::sq, nullptr},      {"sk%d%c", 1, &Config::sk, nullptr},
      {"s%d%c", 1, &Config::sq, &Config::sk},   {"d%d%c", 1, &Config::d, nullptr},
      {"b%d%c", 1, &Config::b, nullptr}};
  Config c{name, DType::bf16, 0, false, 1, 0, 0, 0, 0};
  bool dtype = false;
  std::istringstream words(name);
  for (std::string w; words >> w;) {
    int a = 0, b = 0;
    char rest = 0;
    const char* x = w.c_str();
    if (w == "bf16" || w == "fp16")
      c.dtype = w == "bf16" ? DType::bf16 : DType::f16, dtype = true;
    else if (w == "causal")
      c.causal = true;
    else if (w == "packed")
      c.strided = true;
    else if (w == "accumulate")
      c.accumulate = true;
    else
      for (const NumberWord& n : numbers)  // the first format that takes the whole word
        if ((n.count == 2 ? std::sscanf(x, n.format, &a, &b, &rest) : std::sscanf(x, n.format, &a, &rest)) ==
            n.count) {
          c.*n.first = a;
          if (n.second) c.*n.second = n.count == 2 ? b : a;
          break;
        }
  }
  if (!dtype || c.d <= 0 || c.sq <= 0 || c.sk <= 0 || c.h <= 0 || c.hk <= 0) {
    std::fprintf(stderr, "flash_check: config \"%s\" does not name its dtype, dN, s and h\n", name.c_str());
    std::exit(2);
  }
  return c;
}

// Positions of rows [0, n) holding chunks `first` and `second` of n / 2 rows each.
std::vector<int> chunk_positions(int n, int first, int second) {
  std::vector<int> pos(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) pos[size_t(i)] = i < n / 2 ? first * (n / 2) + i : second * (n / 2) + i - n / 2;
  return pos;
}

// Equal element for element, NaN matching NaN (poisoned rows outside every span stay NaN).
bool same_bits(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (!(a[i] == b[i] || (std::isnan(a[i]) && std::isnan(b[i])))) return false;
  return true;
}

void device_segments(const Config& c, Segments& seg, std::vector<std::unique_ptr<Buffer>>& keep) {
  if (c.segs.empty()) return;
  const int n = int(c.segs.size());
  int32_t* arrays[4];
  for (int a = 0; a < 4; ++a) {
    std::vector<int32_t> h(n);
    for (int i = 0; i < n; ++i) h[i] = c.segs[i][a];
    keep.push_back(std::make_unique<Buffer>(DType::f32, n));  // 4-byte elements
    CHECK_CUDA(cudaMemcpy(keep.back()->dev, h.data(), n * 4, cudaMemcpyHostToDevice));
    arrays[a] = static_cast<int32_t*>(keep.back()->dev);
  }
  seg.num_seqs = n;
  seg.q_start = arrays[0], seg.q_len = arrays[1], seg.k_start = arrays[2], seg.k_len = arrays[3];
  for (auto& s : c.segs)
    seg.max_seqlen_q = std::max(seg.max_seqlen_q, s[1]), seg.max_seqlen_k = std::max(seg.max_seqlen_k, s[3]);
}

void run_attention(const Config& c, std::mt19937_64& gen) {
  const int d = c.d;
  const bool st = c.strided;
  Problem pb;
  pb.b = c.b, pb.sq = c.sq, pb.sk = c.sk, pb.h = c.h, pb.hk = c.hk, pb.d = d;
  pb.scale = 1.0 / std::sqrt(double(d));
  pb.causal = c.causal;
  pb.segs = c.segs;
  pb.left = c.window_left, pb.right = c.window_right;
  if (c.zigzag_positions) pb.q_pos = chunk_positions(c.sq, 1, 6), pb.k_pos = chunk_positions(c.sk, 0, 7);
  pb.softcap = c.softcap;
  if (c.alibi)
    for (int h = 0; h < c.h; ++h) pb.slopes.push_back(float(std::exp2(-(h + 1) / 2.0)));
  pb.dropout_p = c.dropout_p, pb.dropout_seed = 0x5eed;
  if (st && (c.sq != c.sk || c.h != c.hk)) {
    std::printf("FAIL  %s: strided configs need sq == sk and h == hk\n", c.name.c_str());
    ++g_failures;
    return;
  }

  // Layouts: packed (b, s, 3, h, d) q/k/v and f32 dq/dk/dv, (b, s, 2, h, d) out and dout slot 1,
  // lse/dsum rows [8, 8 + s) of (b, h, s + 8); or dense tensors.
  const int slots = st ? 3 : 1, pad = st ? 8 : 0;
  const size_t nq = size_t(c.b) * c.sq * c.h * d, nk = size_t(c.b) * c.sk * c.hk * d;
  const BshView qv = bsh_slot(c.sq, slots, 0, c.h, d), kv = bsh_slot(c.sk, slots, st ? 1 : 0, c.hk, d),
                vv = bsh_slot(c.sk, slots, st ? 2 : 0, c.hk, d);
  const BshView ov = bsh_slot(c.sq, st ? 2 : 1, st ? 1 : 0, c.h, d);
  const BhsView lv = bhs_padded(c.sq, c.h, pad);
  const size_t n_qkv = st ? 3 * nq : 0, n_o = st ? 2 * nq : nq, n_l = size_t(c.b) * c.h * (c.sq + pad);

  Buffer qkv(c.dtype, std::max<size_t>(n_qkv, 1)), qb(c.dtype, st ? 1 : nq), kb(c.dtype, st ? 1 : nk),
      vb(c.dtype, st ? 1 : nk);
  Buffer dout(c.dtype, n_o), out(DType::f32, n_o), lse(DType::f32, n_l), dsum(DType::f32, n_l);
  Buffer dqkv(DType::f32, std::max<size_t>(n_qkv, 1)), dqb(DType::f32, st ? 1 : nq),
      dkb(DType::f32, st ? 1 : nk), dvb(DType::f32, st ? 1 : nk);
  const Buffer& q_buf = st ? qkv : qb;
  const Buffer& k_buf = st ? qkv : kb;
  const Buffer& v_buf = st ? qkv : vb;
  const Buffer& dq_buf = st ? dqkv : dqb;
  const Buffer& dk_buf = st ? dqkv : dkb;
  const Buffer& dv_buf = st ? dqkv : dvb;

  // Inputs: q scaled so that softmax rows are peaked as well as flat.
  std::vector<double> h_q, h_k, h_v;
  if (st) {
    h_q = random_values(gen, n_qkv, c.dtype, 1.0);
    qkv.upload(h_q);
    h_k = h_v = h_q;
  } else {
    h_q = random_values(gen, nq, c.dtype, 1.5), h_k = random_values(gen, nk, c.dtype, 1.0),
    h_v = random_values(gen, nk, c.dtype, 1.0);
    qb.upload(h_q), kb.upload(h_k), vb.upload(h_v);
    if (c.nan_gaps) {
      std::vector<char> covered(size_t(c.sk), 0);
      for (const auto& sg : c.segs)
        for (int j = 0; j < sg[3]; ++j) covered[size_t(sg[2]) + j] = 1;
      for (int j = 0; j < c.sk; ++j)
        if (!covered[size_t(j)])
          for (int hh = 0; hh < c.hk; ++hh)
            for (int x = 0; x < d; ++x) h_k[kv.at(0, j, hh) + x] = h_v[vv.at(0, j, hh) + x] = kNaN;
      kb.upload(h_k), vb.upload(h_v);
    }
  }
  const std::vector<double> h_dout = random_values(gen, n_o, c.dtype, 1.0);
  dout.upload(h_dout);
  const std::vector<double> nan_o(n_o, kNaN), nan_l(n_l, kNaN);
  out.upload(nan_o), lse.upload(nan_l), dsum.upload(nan_l);
  const size_t n_dq = st ? n_qkv : nq, n_dk = st ? n_qkv : nk;
  std::vector<double> before_dq, before_dk, before_dv;
  if (c.accumulate) {
    before_dq = random_values(gen, n_dq, DType::f32, 1.0);
    before_dk = st ? before_dq : random_values(gen, n_dk, DType::f32, 1.0);
    before_dv = st ? before_dq : random_values(gen, n_dk, DType::f32, 1.0);
    if (c.overwrite_dkv && !st) before_dk = before_dv = std::vector<double>(n_dk, kNaN);
  } else {
    before_dq = std::vector<double>(n_dq, kNaN), before_dk = before_dv = std::vector<double>(n_dk, kNaN);
  }
  // dq/dk/dv as the backward finds them (again before a rerun).
  auto reset_grads = [&] {
    if (st) {
      dqkv.upload(before_dq);
    } else {
      dqb.upload(before_dq), dkb.upload(before_dk), dvb.upload(before_dv);
    }
  };
  reset_grads();
  // Runs `launches` to completion; a NativeError is this config's failure (false).
  auto ran = [&](const char* what, const std::function<void()>& launches) {
    try {
      launches();
    } catch (const NativeError& e) {
      std::printf("FAIL  %-46s %s threw %s: %s\n", c.name.c_str(), what, e.code.c_str(), e.what());
      ++g_failures;
      return false;
    }
    CHECK_CUDA(cudaDeviceSynchronize());
    return true;
  };

  std::vector<std::unique_ptr<Buffer>> seg_keep;
  FlashFwdParams fp;
  fp.shape = AttnShape{c.b, c.sq, c.sk, c.h, c.hk, d, float(pb.scale), c.causal};
  fp.dtype = c.dtype;
  fp.q = q_buf.at(qv.off), fp.q_stride = qv.st;
  fp.k = k_buf.at(kv.off), fp.k_stride = kv.st;
  fp.v = v_buf.at(vv.off), fp.v_stride = vv.st;
  fp.out = out.at<float>(ov.off), fp.o_stride = ov.st;
  fp.lse = lse.at<float>(lv.off), fp.lse_stride = lv.st;
  device_segments(c, fp.seg, seg_keep);
  fp.mods.window_left = c.window_left, fp.mods.window_right = c.window_right;
  if (c.zigzag_positions) {
    for (const std::vector<int>* pos : {&pb.q_pos, &pb.k_pos}) {
      seg_keep.push_back(std::make_unique<Buffer>(DType::f32, pos->size()));  // 4-byte elements
      CHECK_CUDA(cudaMemcpy(seg_keep.back()->dev, pos->data(), pos->size() * 4, cudaMemcpyHostToDevice));
    }
    fp.mods.q_pos = static_cast<const int32_t*>(seg_keep[seg_keep.size() - 2]->dev);
    fp.mods.k_pos = static_cast<const int32_t*>(seg_keep.back()->dev);
    fp.mods.diag = pb.diag;
  }
  fp.mods.softcap = c.softcap;
  if (c.alibi) {
    seg_keep.push_back(std::make_unique<Buffer>(DType::f32, pb.slopes.size()));
    CHECK_CUDA(
        cudaMemcpy(seg_keep.back()->dev, pb.slopes.data(), pb.slopes.size() * 4, cudaMemcpyHostToDevice));
    fp.mods.alibi_slopes = static_cast<const float*>(seg_keep.back()->dev);
  }
  fp.mods.dropout_p = c.dropout_p, fp.mods.dropout_seed = pb.dropout_seed;

  FlashBwdDotParams dp;
  dp.batch = c.b, dp.seqlen_q = c.sq, dp.nheads = c.h, dp.head_dim = d, dp.dtype = c.dtype;
  dp.dout = dout.at(ov.off), dp.dout_stride = ov.st;
  dp.out = out.at<float>(ov.off), dp.o_stride = ov.st;
  dp.dsum = dsum.at<float>(lv.off), dp.dsum_stride = lv.st;

  FlashBwdParams bp;
  bp.shape = fp.shape, bp.dtype = c.dtype, bp.seg = fp.seg, bp.mods = fp.mods;
  bp.q = fp.q, bp.q_stride = fp.q_stride, bp.k = fp.k, bp.k_stride = fp.k_stride, bp.v = fp.v,
  bp.v_stride = fp.v_stride;
  bp.dout = dp.dout, bp.dout_stride = dp.dout_stride;
  bp.lse = fp.lse, bp.lse_stride = fp.lse_stride, bp.dsum = dp.dsum, bp.dsum_stride = dp.dsum_stride;
  bp.dq = dq_buf.at<float>(qv.off), bp.dq_stride = qv.st;
  bp.dk = dk_buf.at<float>(kv.off), bp.dk_stride = kv.st;
  bp.dv = dv_buf.at<float>(vv.off), bp.dv_stride = vv.st;
  bp.accumulate = c.accumulate;
  bp.overwrite_dkv = c.overwrite_dkv;
  bp.deterministic = c.deterministic;

  const bool launched = ran(c.fwd_only ? "fwd" : "fwd+bwd", [&] {
    cuda::flash_fwd(fp, 0, scratch());
    if (c.fwd_only) return;
    // With varlen, rows outside every span keep their poison; dsum there is not needed.
    cuda::flash_bwd_dot(dp, 0);
    cuda::flash_bwd(bp, 0, scratch());
  });
  if (!launched) return;

  const Reference ref =
      harness::reference(pb, gather_bsh(h_q, qv, c.b, c.sq, c.h, d), gather_bsh(h_k, kv, c.b, c.sk, c.hk, d),
                         gather_bsh(h_v, vv, c.b, c.sk, c.hk, d), gather_bsh(h_dout, ov, c.b, c.sq, c.h, d));
  const auto& qc = ref.q_covered;
  const auto& kc = ref.k_covered;
  Expect e_out(nan_o), e_lse(nan_l), e_dsum(nan_l), e_dq(before_dq), e_dk(before_dk), e_dv(before_dv);
  expect_bsh(e_out, ov, ref.out, qc, c.b, c.sq, c.h, d, false);
  expect_bhs(e_lse, lv, ref.lse, qc, c.b, c.h, c.sq);
  const bool bf = c.dtype == DType::bf16;
  const double fwd_bound = bf ? 5e-3 : 2.5e-3, grad_bound = bf ? 1e-2 : 5e-3;
  if (c.fwd_only) {
    report(c.name, {{"out", compare(out.download(), e_out)}, {"lse", compare(lse.download(), e_lse)}},
           {fwd_bound, fwd_bound});
    return;
  }
  // bwd_dot knows no spans: rows outside them read poisoned out and stay NaN, as e_dsum expects.
  expect_bhs(e_dsum, lv, ref.dsum, qc, c.b, c.h, c.sq);
  // dsum is a sum of products of both signs: its error is judged against the size of its terms,
  // sum_c |dout_c out_c|, not against |dsum| (configs of a few rows failed on a near-0 dsum).
  {
    const std::vector<double> g_dout = gather_bsh(h_dout, ov, c.b, c.sq, c.h, d);
    for (int bb = 0; bb < c.b; ++bb)
      for (int hh = 0; hh < c.h; ++hh)
        for (int i = 0; i < c.sq; ++i) {
          if (!qc[size_t(bb) * c.sq + i]) continue;
          double mag = 0;
          const size_t row = ((size_t(bb) * c.sq + i) * c.h + hh) * d;
          for (int x = 0; x < d; ++x) mag += std::fabs(g_dout[row + x] * ref.out[row + x]);
          e_dsum.incr[lv.at(bb, hh, i)] = mag;
        }
  }
  // Packed gradients share one buffer: tags 1, 2, 3 tell dq, dk, dv apart.
  Expect& e_dk_in = st ? e_dq : e_dk;
  Expect& e_dv_in = st ? e_dq : e_dv;
  expect_bsh(e_dq, qv, ref.dq, qc, c.b, c.sq, c.h, d, c.accumulate, 1);
  const bool dkv_added = c.accumulate && !c.overwrite_dkv;
  expect_bsh(e_dk_in, kv, ref.dk, kc, c.b, c.sk, c.hk, d, dkv_added, st ? 2 : 1);
  expect_bsh(e_dv_in, vv, ref.dv, kc, c.b, c.sk, c.hk, d, dkv_added, st ? 3 : 1);
  const std::vector<double> got_dq = dq_buf.download(), got_dk = dk_buf.download(),
                            got_dv = dv_buf.download();
  if (c.deterministic || c.rerun) {
    // The same backward again from the same dq/dk/dv.
    reset_grads();
    if (!ran("bwd rerun", [&] { cuda::flash_bwd(bp, 0, scratch()); })) return;
    const bool same = same_bits(dq_buf.download(), got_dq) && same_bits(dk_buf.download(), got_dk) &&
                      same_bits(dv_buf.download(), got_dv);
    if (c.deterministic && !same) {
      std::printf("FAIL  %-46s deterministic backward: a second run gave other bits\n", c.name.c_str());
      ++g_failures;
    } else {
      std::printf("INFO  %-46s rerun of the backward: %s bits\n", c.name.c_str(),
                  same ? "the same" : "other");
    }
  }

  report(c.name,
         {{"out", compare(out.download(), e_out)},
          {"lse", compare(lse.download(), e_lse)},
          {"dsum", compare(dsum.download(), e_dsum)},
          {"dq", compare(got_dq, e_dq, 1)},
          {"dk", compare(got_dk, e_dk_in, st ? 2 : 1)},
          {"dv", compare(got_dv, e_dv_in, st ? 3 : 1)}},
         {fwd_bound, fwd_bound, fwd_bound, grad_bound, grad_bound, grad_bound});
}

// ---- merge: two key halves merged equal the whole (both -inf paths included) ---------------
void run_merge(std::mt19937_64& gen, const std::string& tag) {
  const int b = 2, s = 300, s1 = 150, h = 4, hk = 2, d = 128;
  const DType dt = DType::bf16;
  Problem pb;
  pb.b = b, pb.sq = pb.sk = s, pb.h = h, pb.hk = hk, pb.d = d, pb.scale = 1.0 / std::sqrt(double(d)),
  pb.causal = true;
  const size_t nq = size_t(b) * s * h * d, nk = size_t(b) * s * hk * d, nl = size_t(b) * h * s;
  Buffer q(dt, nq), k(dt, nk), v(dt, nk), out_run(DType::f32, nq), lse_run(DType::f32, nl),
      out_blk(DType::f32, nq), lse_blk(DType::f32, nl), out_a(DType::f32, nq), lse_a(DType::f32, nl),
      out2(DType::f32, nq), lse2(DType::f32, nl), out3(DType::f32, nq), lse3(DType::f32, nl),
      out4(DType::f32, nq), lse4(DType::f32, nl), out5(DType::f32, nq), lse5(DType::f32, nl),
      out5_final(dt, nq);
  const auto h_q = random_values(gen, nq, dt, 1.5), h_k = random_values(gen, nk, dt, 1.0),
             h_v = random_values(gen, nk, dt, 1.0);
  q.upload(h_q), k.upload(h_k), v.upload(h_v);
  for (Buffer* x : {&out_run, &lse_run, &out_blk, &lse_blk}) x->upload(std::vector<double>(x->n, kNaN));
  out2.upload(std::vector<double>(nq, 0.0)), lse2.upload(std::vector<double>(nl, -kInf));
  out3.upload(std::vector<double>(nq, kNaN)), lse3.upload(std::vector<double>(nl, kNaN));
  out4.upload(std::vector<double>(nq, 0.0)), lse4.upload(std::vector<double>(nl, -kInf));
  out5.upload(std::vector<double>(nq, kNaN)), lse5.upload(std::vector<double>(nl, kNaN)),
      out5_final.upload(std::vector<double>(nq, kNaN));

  const BshStrides qs{int64_t(s) * h * d, int64_t(h) * d, d}, ks{int64_t(s) * hk * d, int64_t(hk) * d, d};
  const BhsStrides ls{int64_t(h) * s, s, 1};
  // out/lse of queries [q0, q0 + nq) against keys [k0, k0 + nk), written at rows q0 of (o, l).
  // fused_merge: merge into the running (o, l); with `from`, the running out is read there and
  // the merged rows go to o (which may be 16-bit).
  auto fwd = [&](int q0, int nqr, int k0, int nkr, bool causal, Buffer& o, Buffer& l,
                 bool fused_merge = false, const Buffer* from = nullptr) {
    FlashFwdParams p;
    p.merge = fused_merge;
    if (from) p.merge_src = from->at<float>(q0 * qs.row), p.src_stride = qs;
    p.shape = AttnShape{b, nqr, nkr, h, hk, d, float(pb.scale), causal};
    p.dtype = dt;
    p.q = q.at(q0 * qs.row), p.q_stride = qs;
    p.k = k.at(k0 * ks.row), p.k_stride = ks;
    p.v = v.at(k0 * ks.row), p.v_stride = ks;
    p.out = o.at(q0 * qs.row), p.o_stride = qs, p.out_dtype = o.dtype;
    p.lse = l.at<float>(q0), p.lse_stride = ls;
    cuda::flash_fwd(p, 0, scratch());
  };
  auto merge = [&](Buffer& o, Buffer& l, Buffer& ob, Buffer& lb) {
    MergeParams p;
    p.batch = b, p.seqlen = s, p.nheads = h, p.head_dim = d;
    p.out = o.at<float>(0), p.o_stride = qs, p.lse = l.at<float>(0), p.lse_stride = ls;
    p.block_out = ob.at<float>(0), p.block_o_stride = qs, p.block_lse = lb.at<float>(0),
    p.block_lse_stride = ls;
    cuda::merge(p, 0);
  };
  try {
    // Causal attention split by key halves: keys [0, s1) are seen causally by queries [0, s1) and
    // fully by [s1, s); keys [s1, s) with all queries are causal with seqlen_q > seqlen_k, so
    // queries [0, s1) see none of them (lse -inf).
    fwd(0, s1, 0, s1, true, out_run, lse_run);
    fwd(s1, s - s1, 0, s1, false, out_run, lse_run);
    fwd(0, s, s1, s - s1, true, out_blk, lse_blk);
    CHECK_CUDA(cudaMemcpy(out_a.dev, out_run.dev, nq * 4, cudaMemcpyDeviceToDevice));
    CHECK_CUDA(cudaMemcpy(lse_a.dev, lse_run.dev, nl * 4, cudaMemcpyDeviceToDevice));
    merge(out_run, lse_run, out_blk, lse_blk);  // block -inf rows keep the running result
    merge(out2, lse2, out_blk, lse_blk);        // running -inf rows take the block
    merge(out2, lse2, out_a, lse_a);
    // The same, with the merge fused into the forward (p.merge): onto the two first-half
    // results, and from an empty running result, the second half first.
    fwd(0, s1, 0, s1, true, out3, lse3);
    fwd(s1, s - s1, 0, s1, false, out3, lse3);
    fwd(0, s, s1, s - s1, true, out3, lse3, true);
    fwd(0, s, s1, s - s1, true, out4, lse4, true);  // queries [0, s1) see no key: they stay empty
    fwd(0, s1, 0, s1, true, out4, lse4, true);
    fwd(s1, s - s1, 0, s1, false, out4, lse4, true);
    // A ring's last step: the merged rows go to a bf16 final out, the running fp32 out is read.
    fwd(0, s1, 0, s1, true, out5, lse5);
    fwd(s1, s - s1, 0, s1, false, out5, lse5);
    fwd(0, s, s1, s - s1, true, out5_final, lse5, true, &out5);
  } catch (const NativeError& e) {
    std::printf("FAIL  merge threw %s: %s\n", e.code.c_str(), e.what());
    ++g_failures;
    return;
  }
  CHECK_CUDA(cudaDeviceSynchronize());
  const std::vector<double> zeros_dout(nq, 0.0);
  const Reference ref = harness::reference(pb, h_q, h_k, h_v, zeros_dout);
  const BshView ov{0, qs};
  const BhsView lv{0, ls};
  Expect e_out(std::vector<double>(nq, kNaN)), e_lse(std::vector<double>(nl, kNaN));
  expect_bsh(e_out, ov, ref.out, ref.q_covered, b, s, h, d, false);
  expect_bhs(e_lse, lv, ref.lse, ref.q_covered, b, h, s);
  report("merge bf16 d128 causal halves b2 s300 h4/2" + tag,
         {{"out", compare(out_run.download(), e_out)}, {"lse", compare(lse_run.download(), e_lse)}},
         {5e-3, 5e-3});
  report("merge into empty (-inf) running result" + tag,
         {{"out", compare(out2.download(), e_out)}, {"lse", compare(lse2.download(), e_lse)}}, {5e-3, 5e-3});
  report("fused merge (flash_fwd merge) causal halves" + tag,
         {{"out", compare(out3.download(), e_out)}, {"lse", compare(lse3.download(), e_lse)}}, {5e-3, 5e-3});
  report("fused merge from an empty running result" + tag,
         {{"out", compare(out4.download(), e_out)}, {"lse", compare(lse4.download(), e_lse)}}, {5e-3, 5e-3});
  report("fused merge into a bf16 final out (merge_src)" + tag,
         {{"out", compare(out5_final.download(), e_out)}, {"lse", compare(lse5.download(), e_lse)}},
         {5e-3, 5e-3});
}

// ---- cast, add_f32, copy_bsh: exact ----------------------------------------------------------
// Host image of a device cast: the CPU backend's conversions (cpu/half.h), which must agree bit for bit.
uint32_t host_bits(double x, DType t) {
  const float f = float(x);
  if (t == DType::bf16) return cpu::float_to_bf16(f);
  if (t == DType::f16) return cpu::float_to_f16(f);
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

std::vector<uint32_t> device_bits(const Buffer& buf, int64_t off, size_t n) {
  std::vector<uint32_t> r(n);
  if (buf.dtype == DType::f32) {
    CHECK_CUDA(cudaMemcpy(r.data(), buf.at(off), n * 4, cudaMemcpyDeviceToHost));
  } else {
    std::vector<uint16_t> h(n);
    CHECK_CUDA(cudaMemcpy(h.data(), buf.at(off), n * 2, cudaMemcpyDeviceToHost));
    std::copy(h.begin(), h.end(), r.begin());
  }
  return r;
}

bool is_nan_bits(uint32_t u, DType t) {
  if (t == DType::f32) return (u & 0x7fffffffu) > 0x7f800000u;
  if (t == DType::bf16) return (u & 0x7fffu) > 0x7f80u;
  return (u & 0x7fffu) > 0x7c00u;
}

void run_casts(std::mt19937_64& gen) {
  const size_t n = 1000003;  // odd: tails; offset 1 below: unaligned pointers
  std::uniform_real_distribution<double> mag(-6.0, 6.0);
  std::normal_distribution<double> nd;
  std::vector<double> x(n);
  for (auto& v : x) v = float(nd(gen) * std::pow(10.0, mag(gen)));
  const double specials[] = {0.0,     -0.0,    kInf, -kInf, kNaN,    65504.0,
                             65519.0, 65520.0, 1e-7, -3e-8, 1.0 / 3, 1e38};
  for (size_t i = 0; i < sizeof specials / sizeof *specials; ++i) x[i * 997] = specials[i];
  const DType types[] = {DType::f32, DType::bf16, DType::f16};
  const char* names[] = {"f32", "bf16", "f16"};
  for (int si = 0; si < 3; ++si)
    for (int di = 0; di < 3; ++di) {
      const DType st = types[si], dt = types[di];
      Buffer src(st, n + 1), dst(dt, n + 1);
      std::vector<double> sx(n + 1);
      for (size_t i = 0; i < n; ++i) sx[i + 1] = quantize(x[i], st);
      src.upload(sx);
      const int off = (si + di) % 2;  // alternate aligned and unaligned views
      long bad = 0;
      try {
        cuda::cast(src.at(off), st, dst.at(off), dt, int64_t(n) - off, 0);
        CHECK_CUDA(cudaDeviceSynchronize());
        const auto got = device_bits(dst, off, n - off);
        for (size_t i = 0; i < n - size_t(off); ++i) {
          const uint32_t want = host_bits(sx[i + off], dt);
          if (got[i] != want && !(is_nan_bits(got[i], dt) && is_nan_bits(want, dt))) ++bad;
        }
      } catch (const NativeError& e) {
        bad = -1;
        std::printf("      cast threw %s: %s\n", e.code.c_str(), e.what());
      }
      std::printf("%s  cast %s -> %s (%zu elements, offset %d): %ld mismatches\n", bad == 0 ? "PASS" : "FAIL",
                  names[si], names[di], n - off, off, bad);
      if (bad) ++g_failures;
    }

  for (int off = 0; off < 2; ++off) {
    Buffer a(DType::f32, n), b(DType::f32, n);
    const auto ha = random_values(gen, n, DType::f32, 1.0), hb = random_values(gen, n, DType::f32, 1.0);
    a.upload(ha), b.upload(hb);
    cuda::add_f32(a.at<float>(off), b.at<float>(off), int64_t(n) - off, 0);
    const auto got = a.download();
    long bad = 0;
    for (size_t i = 0; i < n; ++i) {
      const double want = i < size_t(off) ? ha[i] : double(float(ha[i]) + float(hb[i]));
      if (got[i] != want) ++bad;
    }
    std::printf("%s  add_f32 (%zu elements, offset %d): %ld mismatches\n", bad == 0 ? "PASS" : "FAIL",
                n - off, off, bad);
    if (bad) ++g_failures;
  }
}

// Packs the k slot of a (b, s, 3, h, d) tensor into a dense (b, s, h, d) one and back into
// another packed tensor; every other element must stay untouched.
void run_copy(std::mt19937_64& gen, DType dt, int d) {
  const int b = 2, s = 77, h = 3;
  const size_t np = size_t(b) * s * 3 * h * d, nd = size_t(b) * s * h * d;
  Buffer packed(dt, np), dense(dt, nd), back(dt, np);
  const auto hp = random_values(gen, np, dt, 1.0);
  packed.upload(hp), dense.upload(std::vector<double>(nd, kNaN)), back.upload(std::vector<double>(np, kNaN));
  const BshView kv = bsh_slot(s, 3, 1, h, d), dv = bsh_slot(s, 1, 0, h, d);
  cuda::copy_bsh(packed.at(kv.off), kv.st, dense.at(0), dv.st, b, s, h, d, dt, 0);
  cuda::copy_bsh(dense.at(0), dv.st, back.at(kv.off), kv.st, b, s, h, d, dt, 0);
  const auto gd = dense.download(), gb = back.download();
  long bad = 0;
  for (int bb = 0; bb < b; ++bb)
    for (int i = 0; i < s; ++i)
      for (int hh = 0; hh < h; ++hh)
        for (int c = 0; c < d; ++c) bad += gd[dv.at(bb, i, hh) + c] != hp[kv.at(bb, i, hh) + c];
  std::vector<char> in_k(np, 0);
  for (int bb = 0; bb < b; ++bb)
    for (int i = 0; i < s; ++i)
      for (int hh = 0; hh < h; ++hh)
        for (int c = 0; c < d; ++c) in_k[kv.at(bb, i, hh) + c] = 1;
  for (size_t i = 0; i < np; ++i) bad += in_k[i] ? gb[i] != hp[i] : !std::isnan(gb[i]);
  std::printf("%s  copy_bsh %s d%d packed k -> dense -> packed: %ld mismatches\n", bad == 0 ? "PASS" : "FAIL",
              dt == DType::f32    ? "f32"
              : dt == DType::bf16 ? "bf16"
                                  : "f16",
              d, bad);
  if (bad) ++g_failures;
}

// ---- argument errors: typed, never a crash ----------------------------------------------------
void expect_throw(const char* what, const char* code, const std::function<void()>& f) {
  std::string got = "nothing";
  try {
    f();
  } catch (const NativeError& e) {
    got = e.code + " (" + e.what() + ")";
    if (e.code == code) {
      std::printf("PASS  %s -> %s\n", what, got.c_str());
      return;
    }
  }
  std::printf("FAIL  %s: expected %s, got %s\n", what, code, got.c_str());
  ++g_failures;
}

void run_errors() {
  Buffer x(DType::bf16, 1 << 16), o(DType::f32, 1 << 16);
  auto params = [&](int d, int h, int hk, DType t) {
    FlashFwdParams p;
    p.shape = AttnShape{1, 8, 8, h, hk, d, 0.1f, false};
    p.dtype = t;
    const BshStrides st{8LL * h * d, int64_t(h) * d, d};
    p.q = p.k = p.v = x.dev, p.q_stride = p.k_stride = p.v_stride = st;
    p.out = o.at<float>(0), p.o_stride = st, p.lse = o.at<float>(0), p.lse_stride = BhsStrides{8LL * h, 8, 1};
    return p;
  };
  expect_throw("flash_fwd head_dim 96", "E_UNSUPPORTED",
               [&] { cuda::flash_fwd(params(96, 2, 2, DType::bf16), 0, scratch()); });
  expect_throw("flash_fwd float32 inputs", "E_UNSUPPORTED",
               [&] { cuda::flash_fwd(params(64, 2, 2, DType::f32), 0, scratch()); });
  expect_throw("flash_fwd nheads 3, nheads_k 2", "E_ARG",
               [&] { cuda::flash_fwd(params(64, 3, 2, DType::bf16), 0, scratch()); });
  expect_throw("flash_fwd null q", "E_ARG", [&] {
    auto p = params(64, 2, 2, DType::bf16);
    p.q = nullptr;
    cuda::flash_fwd(p, 0, scratch());
  });
  expect_throw("flash_fwd misaligned k view", "E_UNSUPPORTED", [&] {
    auto p = params(64, 2, 2, DType::bf16);
    p.k = x.at(3);
    cuda::flash_fwd(p, 0, scratch());
  });
  // The option hooks run in the mma.sync kernels (test/gpu/masks.test.ts checks their results);
  // what they cannot take is refused before launch.
  {  // a causal call's window (-1, 0) is its mask, not a hook: it runs
    auto p = params(64, 2, 2, DType::bf16);
    p.shape.causal = true;
    p.mods.window_right = 0;
    std::string got = "ran";
    try {
      cuda::flash_fwd(p, 0, scratch());
      CHECK_CUDA(cudaDeviceSynchronize());
    } catch (const NativeError& e) {
      got = e.code;
    }
    std::printf("%s  flash_fwd causal with window (-1, 0) -> %s\n", got == "ran" ? "PASS" : "FAIL",
                got.c_str());
    if (got != "ran") ++g_failures;
  }
  expect_throw("flash_fwd softcap at head_dim 256", "E_UNSUPPORTED", [&] {
    auto p = params(64, 2, 2, DType::bf16);
    p.shape.head_dim = 256;  // refused before anything is read
    p.mods.softcap = 30.f;
    cuda::flash_fwd(p, 0, scratch());
  });
  expect_throw("flash_fwd negative softcap", "E_ARG", [&] {
    auto p = params(64, 2, 2, DType::bf16);
    p.mods.softcap = -1.f;
    cuda::flash_fwd(p, 0, scratch());
  });
  expect_throw("flash_fwd q positions without k positions", "E_ARG", [&] {
    auto p = params(64, 2, 2, DType::bf16);
    p.mods.q_pos = static_cast<const int32_t*>(static_cast<const void*>(x.at(0)));
    cuda::flash_fwd(p, 0, scratch());
  });
  expect_throw("flash_bwd dropout_p 1", "E_ARG", [&] {
    FlashBwdParams p;
    p.shape = AttnShape{1, 8, 8, 2, 2, 64, 0.1f, false};
    p.mods.dropout_p = 1.f;
    cuda::flash_bwd(p, 0, scratch());
  });
  expect_throw("flash_bwd head_dim 256", "E_UNSUPPORTED", [&] {
    FlashBwdParams p;
    p.shape = AttnShape{1, 8, 8, 2, 2, 256, 0.1f, false};
    cuda::flash_bwd(p, 0, scratch());
  });
  // With the Hopper backward asked for (force_bwd_kernel(2)), what it does not cover at head_dim
  // 256 and 192 (the deterministic mode, score hooks) is still refused by name, before any tensor
  // is read.
  cuda::force_bwd_kernel(2);
  struct Refused {
    const char* name;
    int d;
    bool deterministic;
    float softcap;
  };
  for (const Refused& r : {Refused{"flash_bwd head_dim 256 deterministic [hopper bwd]", 256, true, 0.f},
                           Refused{"flash_bwd head_dim 256 softcap [hopper bwd]", 256, false, 30.f},
                           Refused{"flash_bwd head_dim 192 window [hopper bwd]", 192, false, 0.f}})
    expect_throw(r.name, "E_UNSUPPORTED", [&] {
      FlashBwdParams p;
      p.shape = AttnShape{1, 8, 8, 2, 2, r.d, 0.1f, false};
      p.deterministic = r.deterministic;
      p.mods.softcap = r.softcap;
      if (r.d == 192) p.mods.window_left = 64;
      cuda::flash_bwd(p, 0, scratch());
    });
  cuda::force_bwd_kernel(-1);
}

// ---- timing ------------------------------------------------------------------------------------
float median_ms(const std::function<void()>& f) {
  for (int i = 0; i < kWarmupRuns; ++i) f();
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  std::vector<float> ms(kTimedRuns);
  for (auto& m : ms) {
    CHECK_CUDA(cudaEventRecord(start));
    f();
    CHECK_CUDA(cudaEventRecord(stop));
    CHECK_CUDA(cudaEventSynchronize(stop));
    CHECK_CUDA(cudaEventElapsedTime(&m, start, stop));
  }
  CHECK_CUDA(cudaEventDestroy(start));
  CHECK_CUDA(cudaEventDestroy(stop));
  std::sort(ms.begin(), ms.end());
  return ms[kTimedRuns / 2];
}

// sk: key length (0: as s), e.g. the zigzag ring's half blocks (8192 queries x 4096 keys).
void bench(std::mt19937_64& gen, int b, int s, int h, int hk, int d, bool causal, int sk = 0,
           bool sweeps = false) {
  const DType dt = DType::bf16;
  if (sk == 0) sk = s;
  const size_t nq = size_t(b) * s * h * d, nk = size_t(b) * sk * hk * d, nl = size_t(b) * h * s;
  Buffer q(dt, nq), k(dt, nk), v(dt, nk), dout(dt, nq), out(DType::f32, nq), lse(DType::f32, nl),
      dsum(DType::f32, nl), dq(DType::f32, nq), dk(DType::f32, nk), dv(DType::f32, nk);
  q.upload(random_values(gen, nq, dt, 1.0)), k.upload(random_values(gen, nk, dt, 1.0));
  v.upload(random_values(gen, nk, dt, 1.0)), dout.upload(random_values(gen, nq, dt, 1.0));
  const BshStrides qs{int64_t(s) * h * d, int64_t(h) * d, d}, ks{int64_t(sk) * hk * d, int64_t(hk) * d, d};
  const BhsStrides ls{int64_t(h) * s, s, 1};
  FlashFwdParams fp;
  fp.shape = AttnShape{b, s, sk, h, hk, d, float(1.0 / std::sqrt(double(d))), causal};
  fp.dtype = dt;
  fp.q = q.dev, fp.k = k.dev, fp.v = v.dev, fp.q_stride = qs, fp.k_stride = ks, fp.v_stride = ks;
  fp.out = out.at<float>(0), fp.o_stride = qs, fp.lse = lse.at<float>(0), fp.lse_stride = ls;
  FlashBwdDotParams dp;
  dp.batch = b, dp.seqlen_q = s, dp.nheads = h, dp.head_dim = d, dp.dtype = dt;
  dp.dout = dout.dev, dp.dout_stride = qs, dp.out = fp.out, dp.o_stride = qs, dp.dsum = dsum.at<float>(0),
  dp.dsum_stride = ls;
  FlashBwdParams bp;
  bp.shape = fp.shape, bp.dtype = dt;
  bp.q = q.dev, bp.k = k.dev, bp.v = v.dev, bp.q_stride = qs, bp.k_stride = ks, bp.v_stride = ks;
  bp.dout = dout.dev, bp.dout_stride = qs, bp.lse = fp.lse, bp.lse_stride = ls, bp.dsum = dp.dsum,
  bp.dsum_stride = ls;
  bp.dq = dq.at<float>(0), bp.dk = dk.at<float>(0), bp.dv = dv.at<float>(0), bp.dq_stride = qs,
  bp.dk_stride = ks, bp.dv_stride = ks;

  const double fwd_flop = (causal ? 2.0 : 4.0) * b * h * double(s) * sk * d;
  const float t_fwd = median_ms([&] { cuda::flash_fwd(fp, 0, scratch()); });
  cuda::force_fwd_kernel(0);  // the mma.sync forward, for comparison
  const float t_fwd_mma = median_ms([&] { cuda::flash_fwd(fp, 0, scratch()); });
  cuda::force_fwd_kernel(3);  // the Hopper forward wherever it covers the shape
  const float t_fwd_hopper = median_ms([&] { cuda::flash_fwd(fp, 0, scratch()); });
  float t_variant[3] = {0.f, 0.f, 0.f};  // the Hopper forward's tile variants (force_fwd_variant)
  if (d <= 128)
    for (int v = 0; v <= 2; ++v) {
      cuda::force_fwd_variant(v);
      t_variant[v] = median_ms([&] { cuda::flash_fwd(fp, 0, scratch()); });
    }
  cuda::force_fwd_variant(-1);
  cuda::force_fwd_kernel(4);  // the FlashAttention-2 style wgmma forward with its split plan
  const float t_fwd_wg = median_ms([&] { cuda::flash_fwd(fp, 0, scratch()); });
  cuda::force_fwd_kernel(-1);
  // A ring step: the same block merged into the running fp32 out/lse (they hold the last result).
  FlashFwdParams mp = fp;
  mp.merge = true;
  const float t_merge = median_ms([&] { cuda::flash_fwd(mp, 0, scratch()); });
  // A backward as the ring calls it: bwd_dot, then the kernel.
  auto bwd_ms = [&](const FlashBwdParams& params) {
    return median_ms([&] {
      cuda::flash_bwd_dot(dp, 0);
      cuda::flash_bwd(params, 0, scratch());
    });
  };
  const bool bwd = d <= 128;  // wider head dims: the Hopper backward's only (bwd-fa3)
  const float t_bwd = bwd ? bwd_ms(bp) : 0.f;
  // A ring step's backward: dK/dV added onto what they hold.
  FlashBwdParams bpa = bp;
  bpa.accumulate = true;
  const float t_bwd_acc = bwd ? bwd_ms(bpa) : 0.f;
  // The deterministic mode (dQ in key-tile order); on the large shapes its grid runs in several
  // waves, where a tile waits on tiles launched before it.
  FlashBwdParams bpd = bp;
  bpd.deterministic = true;
  const float t_bwd_det = bwd ? bwd_ms(bpd) : 0.f;
  cuda::force_bwd_kernel(1);  // the FlashAttention-2 style backward, for comparison
  const float t_bwd_fa2 = bwd ? bwd_ms(bp) : 0.f;
  cuda::force_bwd_kernel(2);  // the Hopper backward where it covers the call, head_dim 64 included
  const float t_bwd_hopper = bwd_ms(bp);
  const float t_bwd_det_hopper = bwd ? bwd_ms(bpd) : 0.f;  // at head_dim 64 and 128 the Hopper backward's
  cuda::force_bwd_kernel(-1);
  const float t_all = !bwd ? 0.f : median_ms([&] {
    cuda::flash_fwd(fp, 0, scratch());
    cuda::flash_bwd_dot(dp, 0);
    cuda::flash_bwd(bp, 0, scratch());
  });
  CHECK_CUDA(cudaGetLastError());
  char shape[96];
  std::snprintf(shape, sizeof shape, "b%d s%d/%d h%d/%d d%d %s bf16", b, s, sk, h, hk, d,
                causal ? "causal" : "full");
  auto line = [&](const char* what, float ms, double flop) {
    std::printf("TIME  %-32s %-8s %8.3f ms %8.1f iter/s %7.1f TFLOP/s\n", shape, what, ms, 1e3 / ms,
                flop / (ms * 1e-3) / 1e12);
  };
  line("fwd", t_fwd, fwd_flop);
  line("fwd-mma", t_fwd_mma, fwd_flop);
  line("fwd-fa3", t_fwd_hopper, fwd_flop);
  line("fwd-fa2wg", t_fwd_wg, fwd_flop);
  if (d <= 128)
    line("fwd-fa3v0", t_variant[0], fwd_flop), line("fwd-fa3v1", t_variant[1], fwd_flop),
        line("fwd-fa3v2", t_variant[2], fwd_flop);
  line("fwd-merge", t_merge, fwd_flop);
  if (bwd) {
    line("bwd", t_bwd, 2.5 * fwd_flop);
    line("bwd-acc", t_bwd_acc, 2.5 * fwd_flop);
    line("bwd-det", t_bwd_det, 2.5 * fwd_flop);
    line("bwd-fa2wg", t_bwd_fa2, 2.5 * fwd_flop);
    line("bwd-fa3", t_bwd_hopper, 2.5 * fwd_flop);
    line("bwd-det-fa3", t_bwd_det_hopper, 2.5 * fwd_flop);
    line("fwd+bwd", t_all, 3.5 * fwd_flop);
  } else {
    line("bwd-fa3", t_bwd_hopper, 2.5 * fwd_flop);
  }
  // With `sweeps` (--bench=K), the cost models' picks above against forced alternatives: the
  // ring-step backward at each split count (against `bwd-acc`), and the ring-step forward under
  // forced launch plans (against `fwd-merge`), wgmma at two and three CTAs per SM: one CTA per
  // tile (s1), or the first `whole` tiles whole (0 or a multiple of the SM count) and the rest in
  // S key ranges.
  if (sweeps) {
    for (int splits = 1; splits <= 6; ++splits) {
      cuda::force_bwd_splits(splits);
      char what[16];
      std::snprintf(what, sizeof what, "bwd-acc/%d", splits);
      line(what, bwd_ms(bpa), 2.5 * fwd_flop);
    }
    cuda::force_bwd_splits(-1);
    const int sms = [] {
      int n = 0;
      cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, 0);
      return n;
    }();
    const int tiles = (s + 63) / 64 * h * b;
    for (int kernel : {1, 2}) {
      cuda::force_fwd_kernel(kernel);
      auto time_plan = [&](int whole, int splits) {
        cuda::force_fwd_plan(whole, splits);
        char what[24];
        std::snprintf(what, sizeof what, "fm/x%d/w%d/s%d", kernel + 1, whole, splits);
        line(what, median_ms([&] { cuda::flash_fwd(mp, 0, scratch()); }), fwd_flop);
      };
      time_plan(tiles, 1);
      for (int whole = 0; whole < tiles; whole += sms)
        for (int splits = 2; splits <= 8; ++splits) time_plan(whole, splits);
    }
    cuda::force_fwd_plan(-1, 0);
    cuda::force_fwd_kernel(-1);
  }
  std::fflush(stdout);
}

// The score hooks (sliding windows, global positions, softcap, ALiBi, dropout): on the Hopper
// forward (one CTA per SM and 7 CTAs) and the mma.sync hook instance; the backward takes its
// default kernel (a window at head_dim 128 on sm_90a: the wgmma kernel's window instance; the
// other hooks: the mma.sync hook instance), deterministic too.
// Varlen spans take the mma.sync hook forward and the same backward. --windows runs these alone.
void run_windows(std::mt19937_64& gen, const Config& varlen) {
  Config causal = spec("bf16 d128 causal window (300, 0) b2 s1000 h4/2");
  causal.window_left = 300;
  Config both = spec("fp16 d128 window (200, 150) sq700 sk900 h4");
  both.window_left = 200, both.window_right = 150;
  Config d64 = spec("bf16 d64 causal window (130, 0) s1000 h8/2");
  d64.window_left = 130;
  Config zig = spec("bf16 d128 causal window (400, 0) zigzag positions s640 h4/2");
  zig.window_left = 400, zig.zigzag_positions = true;
  Config zig_full = spec("fp16 d128 window (250, 250) zigzag positions s640 h2");
  zig_full.window_left = zig_full.window_right = 250, zig_full.zigzag_positions = true;
  Config right = spec("bf16 d64 window (-1, 90) sq300 sk500 h2 accumulate");
  right.window_right = 90;
  Config softcap = spec("bf16 d128 causal softcap 5 b2 s600 h4/2");
  softcap.softcap = 5.f;
  Config alibi = spec("fp16 d64 alibi sq300 sk500 h4");
  alibi.alibi = true;
  Config alibi_causal = spec("bf16 d128 causal alibi s500 h4/2 accumulate");
  alibi_causal.alibi = true;
  Config mixed = spec("bf16 d128 causal window (200, 0) softcap 5 alibi zigzag positions s640 h4/2");
  mixed.window_left = 200, mixed.softcap = 5.f, mixed.alibi = true, mixed.zigzag_positions = true;
  Config dropout = spec("bf16 d128 causal dropout 0.2 b2 s500 h4");
  dropout.dropout_p = 0.2f;
  Config dropout_window = spec("fp16 d64 dropout 0.1 window (100, 100) s400 h2");
  dropout_window.dropout_p = 0.1f, dropout_window.window_left = dropout_window.window_right = 100;
  Config d96 = spec("bf16 d96 causal window (150, 0) softcap 5 s500 h4/2");  // the mma.sync hooks only
  d96.window_left = 150, d96.softcap = 5.f;
  const std::vector<Config> windows{causal, both,         d64,   zig,     zig_full,       right, softcap,
                                    alibi,  alibi_causal, mixed, dropout, dropout_window, d96};
  for (int kernel : {3, 0})
    for (int ctas : {0, 7}) {
      if (kernel == 0 && ctas) continue;
      cuda::force_fwd_kernel(kernel);
      cuda::force_fwd_ctas(ctas);
      for (Config c : windows) {
        c.name += kernel == 0 ? " [mma hooks]" : ctas ? " [hopper, 7 ctas]" : " [hopper]";
        run_attention(c, gen);
      }
    }
  cuda::force_fwd_kernel(-1);
  cuda::force_fwd_ctas(0);
  Config seg_causal = varlen, seg_both = varlen;
  seg_causal.name = "bf16 d128 causal window (60, 0) varlen 3 segs accumulate", seg_causal.window_left = 60;
  seg_both.name = "bf16 d128 window (50, 120) varlen 3 segs accumulate", seg_both.causal = false;
  seg_both.window_left = 50, seg_both.window_right = 120;
  for (const Config& c : {seg_causal, seg_both}) run_attention(c, gen);
  for (const Config& base : {causal, zig, d64, seg_causal})
    for (int splits : {1, 3}) {
      Config c = base;
      c.deterministic = true;
      cuda::force_bwd_splits(splits);
      c.name += splits > 1 ? " [deterministic, bwd splits 3]" : " [deterministic]";
      run_attention(c, gen);
    }
  cuda::force_bwd_splits(-1);
}

}  // namespace

int main(int argc, char** argv) {
  bool timing = true;
  int only_bench = -1;  // --bench=K: only the K-th timing shape and its launch-plan sweeps, no checks
  bool checks = true;   // --no-checks: the timings only
  // --hopper-varlen: only the varlen configs, on the Hopper forward (force_fwd_kernel(5)) and, for
  // comparison, the kernels varlen calls take today
  bool hopper_varlen = false;
  bool windows_only = false;  // --windows: only the sliding-window and global-position checks
  bool bwd_only = false;      // --bwd: only the backward's checks, on each backward kernel (the Hopper
                              // backward at head_dim 64 and 256, on varlen segments and in the
                              // deterministic mode too, force_bwd_kernel(2))
  uint64_t seed = std::random_device{}();
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--no-timing"))
      timing = false;
    else if (!std::strncmp(argv[i], "--seed=", 7))
      seed = std::strtoull(argv[i] + 7, nullptr, 10);
    else if (!std::strncmp(argv[i], "--bench=", 8))
      only_bench = std::atoi(argv[i] + 8);
    else if (!std::strcmp(argv[i], "--no-checks"))
      checks = false;
    else if (!std::strcmp(argv[i], "--hopper-varlen"))
      hopper_varlen = true;
    else if (!std::strcmp(argv[i], "--windows"))
      windows_only = true;
    else if (!std::strcmp(argv[i], "--bwd"))
      bwd_only = true;
  }
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs; seed %llu\n", prop.name, prop.multiProcessorCount,
              (unsigned long long)seed);
  std::mt19937_64 gen(seed);

  std::vector<Config> configs = {
      spec("bf16 d128 causal b2 s1000 h4"),
      spec("bf16 d128 full b2 s200 h8"),
      spec("fp16 d128 causal b2 s200 h8/2 gqa"),
      spec("bf16 d64 causal b1 s77 h8/2 gqa"),
      spec("fp16 d64 full b2 sq1 sk77 h4/1 mqa"),
      spec("bf16 d128 causal sq300 sk77 h8/2 (keyless rows)"),
      spec("fp16 d128 causal sq77 sk300 h2/1 mqa"),
      spec("bf16 d128 full sq200 sk1000 h4/2"),
      spec("bf16 d128 causal b2 s200 h4 packed qkv views"),
      spec("fp16 d128 full b1 s512 h8 packed accumulate"),
      spec("fp16 d64 full b1 sq1000 sk200 h8 accumulate"),
      spec("bf16 d64 causal b2 s1000 h8/1 mqa accumulate"),
      spec("bf16 d64 full b2 s128 h2 (whole tiles)"),
      spec("bf16 d32 causal b1 s129 h2"),
      spec("bf16 d96 causal b2 s300 h4/2 gqa"),
      spec("fp16 d96 full b1 sq77 sk200 h2/1 mqa accumulate"),
      spec("fp16 d32 full b3 sq64 sk1 h2"),
      spec("bf16 d128 causal s1 h4"),
      spec("bf16 d64 causal sq1 sk1000 h4"),
      spec("fp16 d128 causal b1 s1000 h8/2 gqa"),
  };
  Config varlen = spec("bf16 d128 causal varlen 3 segs sq400 sk400 h4/2 accumulate");
  varlen.segs = {
      {0, 100, 0, 120}, {100, 1, 120, 1}, {101, 250, 121, 250}};  // rows past 351/371 in no segment
  configs.push_back(varlen);
  Config varlen64 = spec("fp16 d64 full varlen 2 segs sq300 sk260 h4 accumulate");
  varlen64.segs = {{0, 150, 0, 60}, {150, 150, 60, 200}};
  configs.push_back(varlen64);
  for (Config c : {spec("bf16 d256 causal b2 s1000 h4/2 gqa"), spec("fp16 d256 full sq300 sk77 h2/1 mqa"),
                   spec("bf16 d256 causal sq300 sk77 h2 (keyless rows)"),
                   spec("bf16 d256 full b1 s300 h2 packed qkv views"),
                   spec("bf16 d192 causal sq77 sk300 h4/1 mqa"), spec("fp16 d192 full b2 s500 h2")}) {
    c.fwd_only = true;
    configs.push_back(c);
  }

  struct Shape {
    int b, s, h, hk, d;
    bool causal;
    int sk;  // 0: s
  };
  const Shape shapes[] = {
      {1, 8192, 5, 5, 128, true, 0},      {1, 8192, 32, 8, 128, true, 0},
      {1, 8192, 5, 5, 128, false, 0},     {1, 65536, 5, 5, 128, true, 0},
      {1, 8192, 5, 5, 128, false, 4096},  // zigzag ring half blocks, the Python project's shape
      {1, 4096, 5, 5, 128, false, 8192},  {1, 8192, 32, 8, 128, false, 4096},  // the same, llama3-8B heads
      {1, 4096, 32, 8, 128, false, 8192}, {1, 8192, 16, 16, 64, true, 0},
      {1, 8192, 16, 16, 64, false, 0},    {1, 8192, 16, 16, 256, true, 0},
      {1, 8192, 16, 16, 256, false, 0},   {1, 8192, 16, 16, 192, true, 0}};
  constexpr int kShapes = sizeof(shapes) / sizeof(shapes[0]);
  if (only_bench >= 0) {
    const Shape& sh = shapes[only_bench % kShapes];
    bench(gen, sh.b, sh.s, sh.h, sh.hk, sh.d, sh.causal, sh.sk, true);
    return 0;
  }
  if (!checks) {
    for (const Shape& sh : shapes) bench(gen, sh.b, sh.s, sh.h, sh.hk, sh.d, sh.causal, sh.sk);
    return 0;
  }
  if (windows_only) {
    run_windows(gen, varlen);
    std::printf("%s: %d failure(s)\n", g_failures ? "FAILED" : "ALL PASSED", g_failures);
    return g_failures ? 1 : 0;
  }
  // Segments whose last key tiles run into gaps of NaN rows and into the next segment.
  Config gaps = spec("bf16 d128 causal varlen NaN gaps sq520 sk600 h4/2 accumulate");
  gaps.segs = {{0, 150, 0, 170}, {200, 300, 230, 260}, {500, 20, 590, 0}};
  gaps.nan_gaps = true;
  Config gaps64 = spec("fp16 d64 full varlen NaN gaps sq400 sk700 h4 accumulate");
  gaps64.segs = {{0, 130, 0, 300}, {130, 260, 350, 129}};
  gaps64.nan_gaps = true;
  if (bwd_only) {
    std::vector<Config> with_bwd, wide;  // wide: head_dim 192 and 256, whose backward only kernel 2 has
    for (Config c : configs) {
      if (!c.fwd_only)
        with_bwd.push_back(c);
      else
        c.fwd_only = false, wide.push_back(c);
    }
    with_bwd.push_back(gaps), with_bwd.push_back(gaps64);
    wide.push_back(spec("fp16 d256 causal b1 s700 h4/1 mqa accumulate"));
    // The deterministic mode (bits compared over two runs): kernel 2 takes it on the Hopper backward
    // at head_dim 64 and 128 when unsplit; 16 key tiles a query tile in the first of each.
    for (Config c :
         {spec("bf16 d128 causal b1 s2048 h8/2 gqa"), spec("fp16 d128 full b2 sq300 sk900 h4 accumulate"),
          spec("bf16 d128 causal sq300 sk77 h8/2 (keyless rows)"), spec("bf16 d64 causal b1 s2048 h8/2 gqa"),
          spec("fp16 d64 full sq300 sk700 h2 accumulate")}) {
      c.deterministic = true;
      c.name += " deterministic";
      with_bwd.push_back(c);
    }
    for (int kernel : {2, -1, 1}) {
      cuda::force_bwd_kernel(kernel);
      std::vector<Config> run = with_bwd;
      if (kernel == 2) run.insert(run.end(), wide.begin(), wide.end());
      for (int splits : {-1, 3}) {
        cuda::force_bwd_splits(splits);
        for (Config c : run) {
          c.name += std::string(kernel == 2  ? " [hopper bwd, d64, d192, d256 too"
                                : kernel < 0 ? " [default bwd"
                                             : " [fa2 bwd") +
                    (splits > 0 ? ", splits 3]" : "]");
          run_attention(c, gen);
        }
      }
    }
    cuda::force_bwd_kernel(-1);
    cuda::force_bwd_splits(-1);
    std::printf("%s: %d failure(s)\n", g_failures ? "FAILED" : "ALL PASSED", g_failures);
    return g_failures ? 1 : 0;
  }
  if (hopper_varlen) {
    std::vector<Config> var;
    for (const Config& c : configs)
      if (!c.segs.empty()) var.push_back(c);
    var.push_back(gaps), var.push_back(gaps64);
    for (int kernel : {5, -1})
      for (int ctas : {0, 7}) {
        cuda::force_fwd_kernel(kernel);
        cuda::force_fwd_ctas(ctas);
        for (Config c : var) {
          c.name += kernel == 5 ? (ctas ? " [hopper varlen, 7 ctas]" : " [hopper varlen]") : " [today's]";
          run_attention(c, gen);
        }
        if (kernel < 0) break;
      }
    cuda::force_fwd_kernel(-1);
    cuda::force_fwd_ctas(0);
    std::printf("%s: %d failure(s)\n", g_failures ? "FAILED" : "ALL PASSED", g_failures);
    return g_failures ? 1 : 0;
  }

  // Every config under every forward kernel (head_dim 128 on sm_90a: wgmma at two and at three
  // CTAs per SM, and mma.sync; otherwise mma.sync each time) and both launch shapes (the cost
  // model picks one per shape).
  // The Hopper forward (kernel 3) runs once on a grid of one CTA per SM and once on 7 CTAs, where
  // every CTA walks many tiles.
  for (int kernel : {3, 1, 2, 0})
    for (int mode : {0, 1}) {
      cuda::force_fwd_kernel(kernel);
      cuda::force_fwd_schedule(kernel == 3 ? -1 : mode);
      cuda::force_fwd_ctas(kernel == 3 && mode == 1 ? 7 : 0);
      const std::string tag = kernel == 3 ? std::string(mode ? " [hopper, 7 ctas]" : " [hopper]")
                                          : std::string(kernel == 1   ? " [wgmma x2"
                                                        : kernel == 2 ? " [wgmma x3"
                                                                      : " [mma") +
                                                (mode ? ", split]" : ", per tile]");
      for (Config c : configs) {
        c.name += tag;
        run_attention(c, gen);
      }
      run_merge(gen, tag);
    }
  // The backward's kernels: the default (the Hopper backward where it covers the call) ran above;
  // the FlashAttention-2 style ones here, on the default forward.
  cuda::force_fwd_kernel(-1);
  cuda::force_fwd_schedule(-1);
  cuda::force_fwd_ctas(0);
  cuda::force_bwd_kernel(1);
  for (Config c : configs) {
    c.name += " [fa2 bwd]";
    run_attention(c, gen);
  }
  cuda::force_bwd_kernel(-1);
  // The Hopper forward's tile variants, on 7 CTAs.
  for (int variant : {0, 1, 2}) {
    cuda::force_fwd_kernel(3);
    cuda::force_fwd_ctas(7);
    cuda::force_fwd_variant(variant);
    const std::string tag = " [hopper v" + std::to_string(variant) + ", 7 ctas]";
    for (Config c : configs) {
      c.name += tag;
      run_attention(c, gen);
    }
    run_merge(gen, tag);
  }
  cuda::force_fwd_variant(-1);
  cuda::force_fwd_kernel(-1);
  cuda::force_fwd_schedule(-1);
  cuda::force_fwd_ctas(0);
  // A ring step's block gradients: dq accumulates, dk/dv land in a fresh (unfilled, NaN) buffer.
  // Unsplit, every key tile's CTA writes its rows; split, the atomics must start from zeros.
  for (int splits : {1, 3})
    for (Config c : {spec("bf16 d128 causal b2 s1000 h4/2 accumulate dq, write dkv"),
                     spec("fp16 d64 full sq300 sk700 h2 accumulate dq, write dkv")}) {
      cuda::force_bwd_splits(splits);
      c.overwrite_dkv = true;
      c.name += " [bwd splits " + std::to_string(splits) + "]";
      run_attention(c, gen);
    }
  cuda::force_bwd_splits(-1);
  // Deterministic backward: dq's parts added in key-tile order. The same configs without it show
  // whether the atomics' order moves the bits (INFO lines); many key tiles per query tile do.
  {
    Config dense = spec("bf16 d128 causal b1 s2048 h8/2 gqa");
    Config acc = spec("fp16 d64 full sq300 sk700 h2 accumulate");
    Config odd = spec("bf16 d32 causal b2 s1000 h4/2");
    Config keyless = spec("bf16 d128 causal sq300 sk77 h8/2 (keyless rows)");
    Config seg = varlen;
    for (const Config& base : {dense, acc, odd, keyless, seg})
      for (bool det : {true, false}) {
        Config c = base;
        c.deterministic = det, c.rerun = !det;
        c.name += det ? " [deterministic]" : " [atomics]";
        run_attention(c, gen);
      }
    // Split key tiles add their dK/dV in split order (forced 3 splits; the d32 causal config's last
    // key tiles leave a split an empty share, which only passes its turn on).
    cuda::force_bwd_splits(3);
    for (const Config& base : {dense, acc, odd}) {
      Config c = base;
      c.deterministic = true;
      c.name += " [deterministic, bwd splits 3]";
      run_attention(c, gen);
    }
    cuda::force_bwd_splits(-1);
  }
  run_windows(gen, varlen);
  run_casts(gen);
  run_copy(gen, DType::bf16, 64);
  run_copy(gen, DType::f32, 5);
  run_errors();
  std::printf("%s: %d failure(s)\n", g_failures ? "FAILED" : "ALL PASSED", g_failures);
  std::fflush(stdout);

  if (timing)
    for (const Shape& sh : shapes) bench(gen, sh.b, sh.s, sh.h, sh.hk, sh.d, sh.causal, sh.sk);
  return g_failures ? 1 : 0;
}

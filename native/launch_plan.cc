// The kernels' launch model. A model that treats each CTA slot of an SM as a processor of fixed
// speed cannot weigh three CTAs per SM against two, nor see that an SM left with one CTA runs it
// faster than half speed. Here the SM is the processor and its resident CTAs share it. The forward
// constants are fitted to the harness's forced-plan sweep (`fm/xR/wW/sS` lines): with them the
// model's cheapest plan is the measured fastest of every plan timed at 4096q x 8192k h5,
// 8192q x 4096k h5 and s8192 h5 causal (measured: benchmark/RESULTS.md). The backward (one CTA
// per SM) only needs the launch order and its fixed costs.
#include "launch_plan.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <queue>
#include <utility>

#include "error.h"

namespace rfa {
namespace {

constexpr int kMaxResidency = 3;
// SM throughput with n CTAs resident (index n), in key tile steps per unit time; two CTAs = 1.
// One CTA alone gets more than half (4096q x 8192k h5 one CTA per tile, two per SM, ends with a
// tail of lone tiles and finishes sooner than half speed would); three CTAs overlap more (the
// llama3 grids run faster with three than with two). Fitted: benchmark/RESULTS.md.
constexpr double kSmThroughput[kMaxResidency + 1] = {0.0, 0.6, 1.0, 1.1};
constexpr double kWholeCost = 2.0;  // steps of Q load and epilogue on top of a tile's key tiles
// A piece's partial (out, lse) and, for the last piece of a tile, the merge of them all. The
// three-CTA build (K single-buffered) pays more: its many-piece plans run clearly slower than a
// 6-step cost predicts.
double piece_cost(int ctas_per_sm) { return ctas_per_sm == 3 ? 16.0 : 6.0; }
// The backward kernels' fixed cost per CTA, in query steps (its K/V load and epilogue), fitted
// to the wgmma kernel's forced-split sweep (harness `bwd-acc/N`, benchmark/RESULTS.md): unsplit
// CTAs run above what a 2-step model predicts at every swept shape, a split CTA (dK/dV by
// atomics) fits at 3.
constexpr double kBwdUnsplitCost = 8.0, kBwdSplitCost = 3.0;

void check_sms(int sms, int ctas_per_sm) {
  RFA_CHECK_ARG(sms >= 1, "launch plan: sms must be at least 1");
  RFA_CHECK_ARG(ctas_per_sm >= 1 && ctas_per_sm <= kMaxResidency, "launch plan: ctas_per_sm must be 1..3");
}

}  // namespace

double simulate_launch(const std::vector<double>& work, int sms, int ctas_per_sm) {
  struct Sm {
    double t = 0.0;              // when `left` was last brought up to date
    double left[kMaxResidency];  // remaining steps of each resident CTA
    int n = 0;
  };
  check_sms(sms, ctas_per_sm);
  const int r = ctas_per_sm;
  std::vector<Sm> sm(static_cast<size_t>(sms));
  size_t next = 0;
  auto rate = [](const Sm& s) { return kSmThroughput[s.n] / s.n; };  // per resident CTA
  auto next_end = [&](const Sm& s) { return s.t + *std::min_element(s.left, s.left + s.n) / rate(s); };
  // Fills free slots of the SMs in `ids` level by level (round-robin), from the launch queue.
  auto fill = [&](const std::vector<int>& ids) {
    for (int level = 0; level < r; ++level)
      for (int i : ids)
        if (sm[i].n == level && next < work.size()) sm[i].left[sm[i].n++] = work[next++];
  };
  std::vector<int> ids(static_cast<size_t>(sms));
  for (int i = 0; i < sms; ++i) ids[i] = i;
  fill(ids);
  using Event = std::pair<double, int>;
  std::priority_queue<Event, std::vector<Event>, std::greater<Event>> events;
  for (int i = 0; i < sms; ++i)
    if (sm[i].n > 0) events.push({next_end(sm[i]), i});
  double end = 0.0;
  while (!events.empty()) {
    const double t = events.top().first;
    ids.clear();
    while (!events.empty() && events.top().first <= t * (1 + 1e-12) + 1e-9)
      ids.push_back(events.top().second), events.pop();
    for (int i : ids) {
      Sm& s = sm[i];
      const double done = (t - s.t) * rate(s);
      int kept = 0;
      for (int j = 0; j < s.n; ++j)
        if (s.left[j] - done > 1e-9) s.left[kept++] = s.left[j] - done;
      s.n = kept, s.t = t;
    }
    end = t;
    // Emptiest SMs first: at one moment the block scheduler spreads new CTAs, it does not stack them.
    std::sort(ids.begin(), ids.end(), [&](int a, int b) { return sm[a].n < sm[b].n; });
    fill(ids);
    for (int i : ids)
      if (sm[i].n > 0) events.push({next_end(sm[i]), i});
  }
  return end;
}

FwdPlan plan_fwd_launch(const std::vector<int>& tile_steps, int sms, const std::vector<int>& residencies,
                        int max_splits, bool must_split) {
  RFA_CHECK_ARG(!residencies.empty(), "launch plan: no residency to plan for");
  for (const int r : residencies) check_sms(sms, r);
  RFA_CHECK_ARG(max_splits >= 1, "launch plan: max_splits must be at least 1");
  const int64_t tiles = int64_t(tile_steps.size());
  FwdPlan best{int(tiles), 1, residencies.front()};
  double best_cost = INFINITY;
  // Tiles kept whole: none, or the last few multiples of the SM count (the waves the residencies
  // can fill) so that the pieces of the rest fill the tail.
  std::vector<int64_t> wholes{0};
  for (int64_t k = std::max<int64_t>(1, tiles / sms - kMaxResidency); k * sms < tiles; ++k)
    wholes.push_back(k * sms);
  std::vector<double> work;
  for (const int r : residencies) {
    auto consider = [&](int64_t whole, int splits, double margin) {
      work.clear();
      for (int64_t i = 0; i < tiles; ++i) {
        const double n = tile_steps[size_t(i)];
        if (i < whole)
          work.push_back(n + kWholeCost);
        else
          work.insert(work.end(), size_t(splits), std::ceil(n / splits) + piece_cost(r));
      }
      const double cost = simulate_launch(work, sms, r) * margin;
      if (cost < best_cost) best = FwdPlan{int(whole), splits, r}, best_cost = cost;
    };
    if (!must_split) consider(tiles, 1, 1.0);
    for (int splits = 2; splits <= max_splits; ++splits)
      for (const int64_t whole : wholes) consider(whole, splits, must_split ? 1.0 : 1.03);
  }
  return best;
}

int plan_bwd_splits(const std::vector<int>& key_tile_steps, int ctas_per_tile, int sms, int max_splits) {
  check_sms(sms, 1);
  RFA_CHECK_ARG(ctas_per_tile >= 1 && max_splits >= 1,
                "launch plan: ctas_per_tile and max_splits must be at least 1");
  std::vector<double> work;
  auto cost = [&](int splits) {
    work.clear();
    for (const int steps : key_tile_steps) {
      const int per = (steps + splits - 1) / splits;
      for (int k = 0; k < splits; ++k) {
        const int share = std::min(steps, (k + 1) * per) - std::min(steps, k * per);
        if (splits == 1)
          work.insert(work.end(), size_t(ctas_per_tile), share + kBwdUnsplitCost);
        else if (share > 0)
          work.insert(work.end(), size_t(ctas_per_tile), share + kBwdSplitCost);
      }
    }
    return simulate_launch(work, sms, 1);
  };
  int best = 1;
  double best_cost = cost(1);
  for (int splits = 2; splits <= max_splits; ++splits)
    if (const double c = cost(splits); c < best_cost) best = splits, best_cost = c;
  return best;
}

}  // namespace rfa

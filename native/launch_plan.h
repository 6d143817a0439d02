// Launch planning for the attention kernels: for the forward (flash_fwd.cu), which query tiles keep
// a CTA of their own, how many pieces the others are cut into, and how many CTAs share an SM; the
// launch simulation behind it also sizes the backward's splits (flash_bwd.cu). Host code with no
// CUDA in it: every build compiles it, and the CPU suite tests it (test/launch_plan.test.ts).
#pragma once

#include <cstdint>
#include <vector>

namespace rfa {

struct FwdPlan {
  int whole;        // the first `whole` tiles in launch order run whole, one CTA each
  int splits;       // every later tile runs as `splits` pieces of its key tiles, one CTA each
  int ctas_per_sm;  // the residency the plan was made for (the wgmma kernel is built for 2 and 3)
};

// The cheapest plan by simulate_launch for query tiles of `tile_steps` key tiles each (launch
// order), over the residencies given: one CTA per tile, or the first `whole` tiles whole (0, or
// one of the last multiples of the SM count below the tile count) and the rest in 2..max_splits
// pieces. A split plan must save 3% over one CTA per tile (the model is rough); with
// `must_split`, only split plans are candidates.
FwdPlan plan_fwd_launch(const std::vector<int>& tile_steps, int sms, const std::vector<int>& residencies,
                        int max_splits, bool must_split);

// When the last CTA of a launch ends, `work` giving each CTA's key tile steps in launch order;
// the time unit is one step of an SM running two CTAs. The first ctas_per_sm * sms CTAs spread
// round-robin over the SMs, later ones go where a slot frees first (those freed at one moment
// filled round-robin, emptiest SM first). The CTAs resident on an SM share its throughput, which
// grows with their number (kSmThroughput in launch_plan.cc).
double simulate_launch(const std::vector<double>& work, int sms, int ctas_per_sm);

// The backward's query splits per key tile (1..max_splits) for a one-CTA-per-SM kernel: key tile
// n has key_tile_steps[n] query steps (launch order: heaviest first under a causal mask), and each
// of its splits runs as ctas_per_tile CTAs (kv heads x batch). Split k of a tile takes steps
// [k * per, (k + 1) * per), per = ceil(steps / splits); an empty share launches no work.
int plan_bwd_splits(const std::vector<int>& key_tile_steps, int ctas_per_tile, int sms, int max_splits);

}  // namespace rfa

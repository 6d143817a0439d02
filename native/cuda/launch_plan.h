// Launch planning for the attention kernels: for the forward (flash_fwd.cu), which query tiles keep
// a CTA of their own, how many pieces the others are cut into, and how many CTAs share an SM; the
// launch simulation behind it also sizes the backward's splits (flash_bwd.cu). Host code only.
#pragma once

#include <cstdint>
#include <vector>

namespace rfa::cuda {

struct FwdPlan {
  int whole;        // the first `whole` tiles in launch order run whole, one CTA each
  int splits;       // every later tile runs as `splits` pieces of its key tiles, one CTA each
  int ctas_per_sm;  // the residency the plan was made for (the wgmma kernel is built for 2 and 3)
};

// The cheapest plan by simulate_launch for query tiles of `tile_steps` key tiles each (launch
// order), over the residencies given: one CTA per tile, or the first `whole` tiles whole (0, or
// one of the last multiples of the SM count below the tile count) and the rest in 2..max_splits
// pieces.
// A split plan must save 3% over one CTA per tile (the model is rough); with `must_split`, only
// split plans are candidates.
FwdPlan plan_fwd_launch(const std::vector<int>& tile_steps, int sms, const std::vector<int>& residencies, int max_splits,
                        bool must_split);

// When the last CTA of a launch ends, `work` giving each CTA's key tile steps in launch order; the
// time unit is one step of an SM running two CTAs. CTAs start in launch order: the first ctas_per_sm * sms spread round-robin over the
// SMs, later ones where a slot frees first (those freed at one moment filled round-robin). The CTAs
// resident on an SM share its throughput, which grows with their number (kSmThroughput). The
// backward's split planner (flash_bwd.cu) uses it at one CTA per SM.
double simulate_launch(const std::vector<double>& work, int sms, int ctas_per_sm);

}  // namespace rfa::cuda

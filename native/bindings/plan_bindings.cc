// JS entry points of the launch planner (native/launch_plan.h), in every build: the CUDA kernels
// use it internally; these exist so that the CPU suite can test the model and its picks.
#include <limits>
#include <string>
#include <vector>

#include "launch_plan.h"
#include "bindings/bindings.h"
#include "bindings/guard.h"
#include "bindings/views.h"

namespace rfa::napi {
namespace {

// A JS array of non-negative numbers at o[key] (named in errors).
template <typename T>
std::vector<T> number_list(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsArray()) RFA_THROW("E_ARG", std::string("launch plan: '") + key + "' must be an array of numbers");
  Napi::Array a = v.As<Napi::Array>();
  std::vector<T> out(a.Length());
  for (uint32_t i = 0; i < a.Length(); ++i) {
    Napi::Value x = a.Get(i);
    if (!x.IsNumber()) RFA_THROW("E_ARG", std::string("launch plan: '") + key + "' must hold numbers only");
    const double d = x.As<Napi::Number>().DoubleValue();
    if (!(d >= 0) || d > double(std::numeric_limits<T>::max()))
      RFA_THROW("E_ARG", std::string("launch plan: '") + key + "' must hold non-negative numbers in range");
    out[i] = T(d);
  }
  return out;
}

// { work: number[], sms, ctasPerSm } -> time of the last CTA's end
Napi::Value SimulateLaunch(const Napi::CallbackInfo& info) {
  return guarded(info, [&] {
    Napi::Object o = arg_object(info, 0);
    const double t =
        simulate_launch(number_list<double>(o, "work"), int(get_i64(o, "sms")), int(get_i64(o, "ctasPerSm")));
    return Napi::Number::New(info.Env(), t);
  });
}

// { tileSteps: number[], sms, residencies: number[], maxSplits, mustSplit } -> { whole, splits, ctasPerSm }
Napi::Value PlanFwdLaunch(const Napi::CallbackInfo& info) {
  return guarded(info, [&] {
    Napi::Object o = arg_object(info, 0);
    const FwdPlan p = plan_fwd_launch(number_list<int>(o, "tileSteps"), int(get_i64(o, "sms")),
                                      number_list<int>(o, "residencies"), int(get_i64(o, "maxSplits")),
                                      get_bool(o, "mustSplit"));
    Napi::Object r = Napi::Object::New(info.Env());
    r.Set("whole", p.whole);
    r.Set("splits", p.splits);
    r.Set("ctasPerSm", p.ctas_per_sm);
    return r;
  });
}

// { keyTileSteps: number[], ctasPerTile, sms, maxSplits } -> splits
Napi::Value PlanBwdSplits(const Napi::CallbackInfo& info) {
  return guarded(info, [&] {
    Napi::Object o = arg_object(info, 0);
    const int s = plan_bwd_splits(number_list<int>(o, "keyTileSteps"), int(get_i64(o, "ctasPerTile")),
                                  int(get_i64(o, "sms")), int(get_i64(o, "maxSplits")));
    return Napi::Number::New(info.Env(), s);
  });
}

}  // namespace

void register_plan(Napi::Env env, Napi::Object exports) {
  export_functions(env, exports, "plan",
                   {{"simulateLaunch", SimulateLaunch},
                    {"planFwdLaunch", PlanFwdLaunch},
                    {"planBwdSplits", PlanBwdSplits}});
}

}  // namespace rfa::napi

// Reading kernel parameters from JS objects. A tensor view arrives as
//   { data: TypedArray | BigInt (device pointer), offset: elements, strides: [..] }
// Host views (TypedArrays) are bounds-checked against their extents here, so a wrong view
// from JS becomes an E_SHAPE error instead of a wild memory access.
#pragma once
#include <napi.h>

#include <string>

#include "attn_params.h"
#include "error.h"

namespace rfa::napi {

inline int64_t get_i64(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (v.IsNumber()) return v.As<Napi::Number>().Int64Value();
  if (v.IsBigInt()) {
    bool lossless = true;
    return v.As<Napi::BigInt>().Int64Value(&lossless);
  }
  RFA_THROW("E_ARG", std::string("missing numeric field '") + key + "'");
}

inline double get_f64(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) RFA_THROW("E_ARG", std::string("missing numeric field '") + key + "'");
  return v.As<Napi::Number>().DoubleValue();
}

// A transfer's optional description of its tensor, for error messages ("" when absent).
inline std::string get_label(const Napi::Object& o) {
  Napi::Value v = o.Get("label");
  return v.IsString() ? v.As<Napi::String>().Utf8Value() : std::string();
}

inline bool get_bool(const Napi::Object& o, const char* key) { return o.Get(key).ToBoolean().Value(); }

inline Napi::Object get_obj(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsObject()) RFA_THROW("E_ARG", std::string("missing object field '") + key + "'");
  return v.As<Napi::Object>();
}

inline DType get_dtype(const Napi::Object& o, const char* key) {
  int64_t t = get_i64(o, key);
  if (t < 0 || t > 2) RFA_THROW("E_DTYPE", "unknown dtype code " + std::to_string(t));
  return static_cast<DType>(t);
}

struct RawView {
  char* base = nullptr;  // first element of the view
  int64_t strides[4] = {0, 0, 0, 0};
  bool host = false;
  int64_t host_elems = 0;  // elements available from base (host views)
};

// Resolves a view; `elem_bytes` must match the typed array's element size for host views.
inline RawView raw_view(const Napi::Object& view, int rank, int elem_bytes, const char* name) {
  RawView r;
  Napi::Value data = view.Get("data");
  const int64_t offset = get_i64(view, "offset");
  Napi::Value sv = view.Get("strides");
  if (!sv.IsArray() || sv.As<Napi::Array>().Length() < uint32_t(rank))
    RFA_THROW("E_ARG", std::string(name) + ": strides must list " + std::to_string(rank) + " values");
  Napi::Array sa = sv.As<Napi::Array>();
  for (int i = 0; i < rank; ++i) r.strides[i] = sa.Get(uint32_t(i)).As<Napi::Number>().Int64Value();
  if (data.IsTypedArray()) {
    Napi::TypedArray ta = data.As<Napi::TypedArray>();
    if (int(ta.ElementSize()) != elem_bytes)
      RFA_THROW("E_DTYPE", std::string(name) + ": element size " + std::to_string(ta.ElementSize()) +
                               " bytes, expected " + std::to_string(elem_bytes));
    if (offset < 0 || offset > int64_t(ta.ElementLength()))
      RFA_THROW("E_SHAPE", std::string(name) + ": offset out of range");
    r.base = static_cast<char*>(ta.ArrayBuffer().Data()) + ta.ByteOffset() + offset * elem_bytes;
    r.host = true;
    r.host_elems = int64_t(ta.ElementLength()) - offset;
  } else if (data.IsBigInt()) {
    bool lossless = true;
    uint64_t ptr = data.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!ptr) RFA_THROW("E_ARG", std::string(name) + ": null device pointer");
    r.base = reinterpret_cast<char*>(ptr) + offset * elem_bytes;
  } else {
    RFA_THROW("E_ARG", std::string(name) + ": data must be a TypedArray or a device pointer");
  }
  return r;
}

// Checks that every element of a view with these extents lies inside its host buffer.
inline void check_extent(const RawView& r, const int64_t* extents, int rank, const char* name) {
  if (!r.host) return;
  int64_t last = 0;
  for (int i = 0; i < rank; ++i) {
    if (extents[i] == 0) return;  // empty view touches nothing
    if (r.strides[i] < 0) RFA_THROW("E_SHAPE", std::string(name) + ": negative stride");
    last += (extents[i] - 1) * r.strides[i];
  }
  if (last >= r.host_elems)
    RFA_THROW("E_SHAPE", std::string(name) + ": view reaches element " + std::to_string(last) +
                             " of a buffer of " + std::to_string(r.host_elems));
}

// A (batch, seqlen, heads, head_dim) view with contiguous head_dim.
template <typename T>
inline T* bsh_view(const Napi::Object& parent, const char* name, int64_t b, int64_t s, int64_t h, int64_t d,
                   int elem_bytes, BshStrides* out) {
  RawView r = raw_view(get_obj(parent, name), 3, elem_bytes, name);
  int64_t ext[4] = {b, s, h, d};
  int64_t strides[4] = {r.strides[0], r.strides[1], r.strides[2], 1};
  RawView full = r;
  for (int i = 0; i < 4; ++i) full.strides[i] = strides[i];
  check_extent(full, ext, 4, name);
  *out = BshStrides{r.strides[0], r.strides[1], r.strides[2]};
  return reinterpret_cast<T*>(r.base);
}

// A (batch, heads, seqlen) fp32 view.
inline float* bhs_view(const Napi::Object& parent, const char* name, int64_t b, int64_t h, int64_t s,
                       BhsStrides* out) {
  RawView r = raw_view(get_obj(parent, name), 3, 4, name);
  int64_t ext[3] = {b, h, s};
  check_extent(r, ext, 3, name);
  *out = BhsStrides{r.strides[0], r.strides[1], r.strides[2]};
  return reinterpret_cast<float*>(r.base);
}

// A contiguous run of n elements.
inline void* flat_view(const Napi::Object& parent, const char* name, int64_t n, int elem_bytes) {
  RawView r = raw_view(get_obj(parent, name), 1, elem_bytes, name);
  r.strides[0] = 1;
  check_extent(r, &n, 1, name);
  return r.base;
}

}  // namespace rfa::napi

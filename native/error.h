// Native code never exits or aborts: every failure becomes an rfa::NativeError carrying a
// stable code (the JS RingFlashAttnError code) and a message with file:line, which the
// N-API layer (native/bindings) turns into a typed JS error.
#pragma once
#include <stdexcept>
#include <string>

namespace rfa {

struct NativeError : std::runtime_error {
  std::string code;  // "E_CUDA", "E_NCCL", "E_ARG", "E_UNSUPPORTED", "E_SHAPE", "E_WORKER" ...
  NativeError(std::string c, const std::string& msg) : std::runtime_error(msg), code(std::move(c)) {}
};

inline std::string where(const char* file, int line) {
  std::string f(file);
  auto slash = f.find("native/");
  return (slash == std::string::npos ? f : f.substr(slash)) + ":" + std::to_string(line);
}

}  // namespace rfa

#define RFA_THROW(code, msg) throw ::rfa::NativeError((code), ::rfa::where(__FILE__, __LINE__) + ": " + (msg))
#define RFA_CHECK_ARG(cond, msg)          \
  do {                                    \
    if (!(cond)) RFA_THROW("E_ARG", msg); \
  } while (0)

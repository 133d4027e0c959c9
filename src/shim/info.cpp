// C entry points to what libtorch knows about itself, for `inception doctor`: its version, its
// build configuration, the CPU kernels it dispatches to, and the CUDA and cuDNN versions it was
// built with (when its CUDA library is loaded). Strings are copied into the caller's buffer.
#include <ATen/Version.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <torch/headeronly/version.h>

#include <cstring>
#include <string>

namespace {
int copy_out(const std::string& s, char* buf, int len) {
  if (len <= 0) return static_cast<int>(s.size());
  std::strncpy(buf, s.c_str(), static_cast<size_t>(len - 1));
  buf[len - 1] = '\0';
  return static_cast<int>(s.size());
}
}  // namespace

extern "C" {

// 0 = version, 1 = build configuration, 2 = CPU capability.
int inception_torch_info(int what, char* buf, int len) {
  try {
    switch (what) {
      case 0: return copy_out(TORCH_VERSION, buf, len);
      case 1: return copy_out(at::show_config(), buf, len);
      case 2: return copy_out(at::get_cpu_capability(), buf, len);
      default: return -1;
    }
  } catch (...) {
    return -1;
  }
}

// 0 = CUDA runtime version, 1 = cuDNN version (libtorch's encoding, e.g. 12080, 92000);
// -1 when libtorch has no CUDA library loaded (the default hooks throw).
long inception_cuda_version(int what) {
  try {
    const auto& hooks = at::detail::getCUDAHooks();
    return what == 0 ? hooks.versionCUDART() : hooks.versionCuDNN();
  } catch (...) {
    return -1;
  }
}
}

// A C entry point to libtorch's autocast switches, which tch exposes for CUDA only.
// at::autocast keeps its state per thread: call these on the thread that runs the forward pass.
#include <ATen/autocast_mode.h>

extern "C" {

// device: 0 = CPU, 1 = CUDA; dtype: 0 = bfloat16, 1 = float16.
void inception_set_autocast(int device, bool enabled, int dtype) {
  at::DeviceType d = device == 1 ? at::kCUDA : at::kCPU;
  at::ScalarType t = dtype == 1 ? at::kHalf : at::kBFloat16;
  if (enabled) {
    at::autocast::set_autocast_dtype(d, t);
    at::autocast::increment_nesting();
  } else if (at::autocast::decrement_nesting() == 0) {
    at::autocast::clear_cache();
  }
  at::autocast::set_autocast_enabled(d, enabled);
}

bool inception_autocast_enabled(int device) {
  return at::autocast::is_autocast_enabled(device == 1 ? at::kCUDA : at::kCPU);
}

}

// libtorch's distributed layer (c10d) for src/dist.rs: a TCPStore for the rendezvous (and the
// processes' check that they were started alike, done in Rust through its set and get) and a Gloo
// process group (CPU and CUDA tensors) or an NCCL one (CUDA tensors, one GPU per process) with
// the collectives data-parallel training needs. Built with INCEPTION_C10D when build.rs finds
// gloo's headers (scripts/deps.sh), and with INCEPTION_NCCL as well when it finds the CUDA and
// NCCL headers; otherwise the functions report that the tool was built without them.
//
// Errors never cross the C boundary as exceptions: each function returns 0 on success, or -1
// with the message in `err`.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef INCEPTION_C10D
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/torch.h>
#ifdef INCEPTION_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#else
#include <ATen/ATen.h>
#endif

namespace {
void set_error(char* err, int len, const std::string& what) {
  if (err && len > 0) {
    std::snprintf(err, len, "%s", what.c_str());
  }
}

#ifdef INCEPTION_C10D
struct Store {
  c10::intrusive_ptr<c10d::Store> store;
};

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> pg;
  std::chrono::milliseconds timeout;
  // NCCL's work is waited for without a timeout: wait() then only orders the current CUDA
  // stream after the collective (no host synchronisation); NCCL's watchdog thread enforces the
  // timeout given at creation and ends the process when a collective hangs past it.
  bool nccl;

  void wait(const c10::intrusive_ptr<c10d::Work>& work) const {
    if (nccl) {
      work->wait();
    } else {
      work->wait(timeout);
    }
  }
};

std::vector<at::Tensor> tensors_of(at::Tensor** ts, int n) {
  std::vector<at::Tensor> v;
  v.reserve(n);
  for (int i = 0; i < n; i++) {
    v.push_back(*ts[i]);
  }
  return v;
}

// The first line of a c10d message (they carry C++ stack traces below it).
std::string first_line(const char* what) {
  std::string s(what);
  auto nl = s.find('\n');
  return nl == std::string::npos ? s : s.substr(0, nl);
}
#endif
}  // namespace

extern "C" {

int inception_c10d_available() {
#ifdef INCEPTION_C10D
  return 1;
#else
  return 0;
#endif
}

int inception_nccl_available() {
#ifdef INCEPTION_NCCL
  return 1;
#else
  return 0;
#endif
}

// Connects to the rendezvous store of `size` processes whose rank 0 listens on host:port (rank
// 0 starts it and waits until every process has connected); its gets wait up to `timeout_ms`.
void* inception_store_new(const char* host, int port, int rank, int size, int timeout_ms,
                          char* err, int len) {
#ifdef INCEPTION_C10D
  try {
    c10d::TCPStoreOptions o;
    o.port = static_cast<uint16_t>(port);
    o.isServer = rank == 0;
    o.numWorkers = size;
    o.timeout = std::chrono::milliseconds(timeout_ms);
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), o);
    return new Store{store};
  } catch (const std::exception& e) {
    set_error(err, len, first_line(e.what()));
    return nullptr;
  }
#else
  (void)host, (void)port, (void)rank, (void)size, (void)timeout_ms;
  set_error(err, len, "this build has no multi-process training (gloo headers were missing)");
  return nullptr;
#endif
}

// Sets `key` to the `n` bytes at `data`.
int inception_store_set(void* s, const char* key, const uint8_t* data, int n, char* err,
                        int len) {
#ifdef INCEPTION_C10D
  try {
    static_cast<Store*>(s)->store->set(std::string(key), std::vector<uint8_t>(data, data + n));
    return 0;
  } catch (const std::exception& e) {
    set_error(err, len, first_line(e.what()));
    return -1;
  }
#else
  (void)s, (void)key, (void)data, (void)n;
  set_error(err, len, "no c10d in this build");
  return -1;
#endif
}

// The value of `key`, waiting for it to be set (up to the store's timeout): `*n` bytes at
// `*out`, to be given back with inception_store_bytes_free.
int inception_store_get(void* s, const char* key, uint8_t** out, int* n, char* err, int len) {
#ifdef INCEPTION_C10D
  try {
    auto v = static_cast<Store*>(s)->store->get(std::string(key));
    *n = static_cast<int>(v.size());
    *out = static_cast<uint8_t*>(std::malloc(v.size() ? v.size() : 1));
    if (!*out) throw std::runtime_error("out of memory");
    std::memcpy(*out, v.data(), v.size());
    return 0;
  } catch (const std::exception& e) {
    set_error(err, len, first_line(e.what()));
    return -1;
  }
#else
  (void)s, (void)key, (void)out, (void)n;
  set_error(err, len, "no c10d in this build");
  return -1;
#endif
}

void inception_store_bytes_free(uint8_t* p) { std::free(p); }

void inception_store_free(void* s) {
#ifdef INCEPTION_C10D
  delete static_cast<Store*>(s);
#else
  (void)s;
#endif
}

// Makes the process group of `size` processes over `store` (from inception_store_new), with
// Gloo (`cuda_device` -1, on the interface of `host`) or with NCCL on CUDA device
// `cuda_device`, which becomes this process's current device, the group's bound device and
// where its communicator is made now (so that a failure to make it is an error of joining,
// not of the first collective). Collectives time out after `timeout_ms`.
void* inception_pg_new(void* s, const char* host, int rank, int size, int timeout_ms,
                       int cuda_device, char* err, int len) {
  bool nccl = cuda_device >= 0;
#ifdef INCEPTION_C10D
#ifndef INCEPTION_NCCL
  if (nccl) {
    set_error(err, len,
              "this build has no NCCL (the CUDA and NCCL headers were missing when it was "
              "compiled)");
    return nullptr;
  }
#endif
  try {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    auto store = static_cast<Store*>(s)->store;
#ifdef INCEPTION_NCCL
    if (nccl) {
      auto device = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(cuda_device));
      auto opts = c10d::ProcessGroupNCCL::Options::create();
      opts->timeout = timeout;
      // Refuses a machine without GPUs in its own words, before any CUDA call.
      auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, opts);
      c10::cuda::set_device(device.index());
      pg->setBoundDeviceId(device);
      pg->eagerConnectSingleDevice(device);
      return new Group{store, pg, timeout, true};
    }
#endif
    auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(host));
    auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, opts);
    return new Group{store, pg, timeout, false};
  } catch (const std::exception& e) {
    set_error(err, len, first_line(e.what()));
    return nullptr;
  }
#else
  (void)s, (void)host, (void)rank, (void)size, (void)timeout_ms, (void)nccl;
  set_error(err, len, "this build has no multi-process training (gloo headers were missing)");
  return nullptr;
#endif
}

// Sums the tensors in place across the group.
int inception_pg_allreduce_sum(void* g, at::Tensor** ts, int n, char* err, int len) {
#ifdef INCEPTION_C10D
  try {
    auto group = static_cast<Group*>(g);
    auto v = tensors_of(ts, n);
    group->wait(group->pg->allreduce(v));
    return 0;
  } catch (const std::exception& e) {
    set_error(err, len, first_line(e.what()));
    return -1;
  }
#else
  (void)g, (void)ts, (void)n;
  set_error(err, len, "no c10d in this build");
  return -1;
#endif
}

// Copies rank `root`'s tensors into everyone's.
int inception_pg_broadcast(void* g, at::Tensor** ts, int n, int root, char* err, int len) {
#ifdef INCEPTION_C10D
  try {
    auto group = static_cast<Group*>(g);
    auto v = tensors_of(ts, n);
    c10d::BroadcastOptions o;
    o.rootRank = root;
    group->wait(group->pg->broadcast(v, o));
    return 0;
  } catch (const std::exception& e) {
    set_error(err, len, first_line(e.what()));
    return -1;
  }
#else
  (void)g, (void)ts, (void)n, (void)root;
  set_error(err, len, "no c10d in this build");
  return -1;
#endif
}

// Shuts the group down as destroy_process_group() does, after its last collective on the
// way to success (NCCL: its communicators and watchdog; a group freed without it takes the
// abort path, right after a failure, when a peer may never join again).
int inception_pg_shutdown(void* g, char* err, int len) {
#ifdef INCEPTION_C10D
  try {
    static_cast<Group*>(g)->pg->shutdown();
    return 0;
  } catch (const std::exception& e) {
    set_error(err, len, first_line(e.what()));
    return -1;
  }
#else
  (void)g;
  set_error(err, len, "no c10d in this build");
  return -1;
#endif
}

void inception_pg_free(void* g) {
#ifdef INCEPTION_C10D
  delete static_cast<Group*>(g);
#else
  (void)g;
#endif
}
}

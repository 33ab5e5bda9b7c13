// A C ABI over libtorch's c10d (TCPStore, PrefixStore, ProcessGroupGloo and, where build.rs found
// the CUDA headers, ProcessGroupNCCL) for gnmt-dist, and the one autograd call tch lacks
// (backward with a given gradient).
// Every entry point catches every exception and returns it as a message: nothing unwinds into Rust.
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef GNMT_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>
#include <cstring>
#include <string>
#include <vector>

namespace {

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  // ProcessGroupGloo or ProcessGroupNCCL: the collectives below are Backend's virtual methods.
  c10::intrusive_ptr<c10d::Backend> pg;
  std::chrono::milliseconds timeout;
};

void set_error(char* err, size_t len, const std::string& msg) {
  if (err == nullptr || len == 0) return;
  size_t n = msg.size() < len - 1 ? msg.size() : len - 1;
  std::memcpy(err, msg.data(), n);
  err[n] = '\0';
}

// Runs `f`, turning any exception into a message and a non-zero return.
template <typename F>
int guarded(char* err, size_t len, F f) {
  try {
    f();
    return 0;
  } catch (const c10::Error& e) {
    set_error(err, len, e.what_without_backtrace());
  } catch (const std::exception& e) {
    set_error(err, len, e.what());
  } catch (...) {
    set_error(err, len, "unknown C++ exception");
  }
  return 1;
}

void wait(Group* g, const c10::intrusive_ptr<c10d::Work>& work) {
  if (!work->wait(g->timeout)) {
    throw std::runtime_error("timed out");
  }
}

// The process group of `backend` (0: Gloo, 1: NCCL) over `store`.
c10::intrusive_ptr<c10d::Backend> make_group(int backend,
                                             const c10::intrusive_ptr<c10d::Store>& store,
                                             int rank, int world,
                                             std::chrono::milliseconds timeout) {
  if (backend == 1) {
#ifdef GNMT_NCCL
    auto options = c10d::ProcessGroupNCCL::Options::create();
    options->timeout = timeout;
    return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, options);
#else
    throw std::runtime_error(
        "this gnmt was built without NCCL (the CUDA headers were missing at build time; "
        "scripts/setup.sh installs them)");
#endif
  }
  auto options = c10d::ProcessGroupGloo::Options::create(timeout);
  options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, options);
}

}  // namespace

extern "C" {

// Whether this shim was compiled with ProcessGroupNCCL.
int gnmt_dist_has_nccl() {
#ifdef GNMT_NCCL
  return 1;
#else
  return 0;
#endif
}

int gnmt_dist_connect(const char* host, int port, int rank, int world, int store_is_server,
                      const char* prefix, int backend, long long timeout_ms, void** out,
                      char* err, size_t errlen) {
  return guarded(err, errlen, [&] {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<std::uint16_t>(port);
    opts.isServer = store_is_server != 0;
    opts.numWorkers = std::nullopt;
    opts.waitWorkers = false;
    opts.timeout = timeout;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    auto store = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), tcp);
    *out = new Group{store, make_group(backend, store, rank, world, timeout), timeout};
  });
}

// Ends the group. After clean work, Backend::shutdown() (NCCL destroys its communicators, which
// libtorch otherwise warns about at exit); after a failed collective, abort(), which does not wait
// on peers that may be gone. Gloo's are no-ops. Nothing may throw out of here: it runs in Drop.
void gnmt_dist_free(void* group, int clean) {
  auto* g = static_cast<Group*>(group);
  try {
    if (clean != 0) {
      g->pg->shutdown();
    } else {
      g->pg->abort();
    }
  } catch (...) {
  }
  delete g;
}

int gnmt_dist_all_reduce_sum(void* group, at::Tensor* t, char* err, size_t errlen) {
  return guarded(err, errlen, [&] {
    auto* g = static_cast<Group*>(group);
    std::vector<at::Tensor> ts{*t};
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp::SUM;
    wait(g, g->pg->allreduce(ts, o));
  });
}

int gnmt_dist_broadcast(void* group, at::Tensor* t, int root, char* err, size_t errlen) {
  return guarded(err, errlen, [&] {
    auto* g = static_cast<Group*>(group);
    std::vector<at::Tensor> ts{*t};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    wait(g, g->pg->broadcast(ts, o));
  });
}

// Gathers `t` of every rank into `outs` (one tensor per rank, each shaped as `t`).
int gnmt_dist_all_gather(void* group, at::Tensor* t, at::Tensor** outs, int n, char* err,
                         size_t errlen) {
  return guarded(err, errlen, [&] {
    auto* g = static_cast<Group*>(group);
    std::vector<at::Tensor> in{*t};
    std::vector<std::vector<at::Tensor>> out(1);
    for (int i = 0; i < n; ++i) out[0].push_back(*outs[i]);
    wait(g, g->pg->allgather(out, in));
  });
}

int gnmt_dist_barrier(void* group, char* err, size_t errlen) {
  return guarded(err, errlen, [&] {
    auto* g = static_cast<Group*>(group);
    wait(g, g->pg->barrier());
  });
}

// Sets `key` to `len` bytes in the group's store.
int gnmt_dist_store_set(void* group, const char* key, const unsigned char* value, size_t len,
                        char* err, size_t errlen) {
  return guarded(err, errlen, [&] {
    auto* g = static_cast<Group*>(group);
    g->store->set(std::string(key), std::vector<uint8_t>(value, value + len));
  });
}

// Waits for `key` (up to the timeout) and hands back its bytes, freed by gnmt_dist_bytes_free.
int gnmt_dist_store_get(void* group, const char* key, unsigned char** value, size_t* len,
                        char* err, size_t errlen) {
  return guarded(err, errlen, [&] {
    auto* g = static_cast<Group*>(group);
    std::vector<uint8_t> v = g->store->get(std::string(key));
    auto* buf = new unsigned char[v.size() == 0 ? 1 : v.size()];
    std::memcpy(buf, v.data(), v.size());
    *value = buf;
    *len = v.size();
  });
}

// Deletes `key` from the group's store; `*deleted` says whether it was there.
int gnmt_dist_store_delete(void* group, const char* key, int* deleted, char* err, size_t errlen) {
  return guarded(err, errlen, [&] {
    auto* g = static_cast<Group*>(group);
    *deleted = g->store->deleteKey(std::string(key)) ? 1 : 0;
  });
}

void gnmt_dist_bytes_free(unsigned char* p) { delete[] p; }

// Backpropagates from `t` with `grad` as its gradient (tch's backward seeds ones only): how the
// trainer hands autograd a loss gradient it computed itself.
int gnmt_backward_with_grad(at::Tensor* t, at::Tensor* grad, char* err, size_t errlen) {
  return guarded(err, errlen, [&] { t->backward(*grad); });
}

// Drops `t`'s gradient (PyTorch's `zero_grad(set_to_none=True)`): the next backward hands its
// gradient over instead of adding it to zeros.
void gnmt_clear_grad(at::Tensor* t) {
  if (t->defined()) t->mutable_grad().reset();
}

}  // extern "C"

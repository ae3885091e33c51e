// A CPU emulator of the CUDA execution model, just wide enough to run this project's kernels
// (csrc/cuda/*.cu) on CPU tensors, so that their launch geometry, indexing, warp shuffles and
// barriers are tested on a machine without a GPU (tests/test_cuda_emulated.py builds them with
// tests/cuda_emulation.py, which rewrites `kernel<<<cfg>>>(args)` into a call of launch()).
//
// Model: a launch runs its blocks one after another; the threads of a block are fibers
// (ucontext) on the calling thread, run in a random order (seeded per launch) between
// barriers. __syncthreads() waits until every thread of the block that has not returned
// reaches it; a warp shuffle waits until all 32 lanes of its warp reach it and is an error if
// any lane returned or waits elsewhere (a hang or undefined behaviour on a GPU). A block whose
// threads wait on each other forever is an error, as is a launch past CUDA's limits. Static
// __shared__ arrays are function statics (blocks do not overlap); dynamic shared memory is
// filled with 0xFF bytes (NaN) before each block. CUB's BlockRadixSort is emulated by a stable
// sort of the block's items. What it cannot show: the memory model and caches, warp lockstep
// beyond the shuffles, timing, and device-only code paths (__CUDA_ARCH__). Environment:
// CPRL_EMU_SEED (thread orders), CPRL_EMU_SMS (multiprocessors), CPRL_EMU_STACK_KIB (each
// fiber's stack, default 64: AddressSanitizer clears a switched-to stack's shadow, so larger
// stacks cost time on every switch).
#pragma once

#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
  unsigned x, y, z;
};
using cudaStream_t = void*;

namespace cprl_emu {

enum class Wait { kRunning, kBlock, kWarp, kDone };

struct Fiber {
  ucontext_t ctx;
  uint3 tid;
  Wait wait = Wait::kRunning;
};

struct Runtime {
  uint3 thread{0, 0, 0}, block{0, 0, 0};
  dim3 block_dim, grid_dim;
  std::vector<Fiber> fibers;
  std::vector<unsigned char> smem;          // dynamic shared memory of the running block
  std::vector<unsigned char> shuffle;       // one 16-byte slot per thread
  const std::function<void()>* body = nullptr;
  ucontext_t scheduler;
  int current = -1;
  char* stacks = nullptr;
  size_t stack_bytes = 0;  // per fiber, its guard page included
  size_t stacks_mapped = 0;
  uint64_t launches = 0;
  std::string error;  // a fault an emulated thread found (thrown by the scheduler)
};

inline Runtime& rt() {
  static Runtime r;
  return r;
}

inline long env_long(const char* name, long fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtol(v, nullptr, 10) : fallback;
}

// Multiprocessors the emulated device reports (CPRL_EMU_SMS, default 2: few, so that the
// grid-stride loops take more than one step at small shapes).
inline int multiprocessors() { return int(env_long("CPRL_EMU_SMS", 2)); }

inline void fail(const std::string& what) { throw std::runtime_error("cuda_emu: " + what); }

inline void yield(Wait w) {
  Runtime& r = rt();
  Fiber& f = r.fibers[r.current];
  f.wait = w;
  swapcontext(&f.ctx, &r.scheduler);
}

// A fault found inside an emulated thread: an exception must not unwind through a fiber's
// first frame, so the thread stops here for good and the scheduler throws.
[[noreturn]] inline void thread_fail(const std::string& what) {
  Runtime& r = rt();
  if (r.error.empty()) r.error = what;
  yield(Wait::kDone);
  std::abort();  // never resumed
}

inline void fiber_entry() {
  Runtime& r = rt();
  (*r.body)();
  r.fibers[r.current].wait = Wait::kDone;  // uc_link returns to the scheduler
}

inline unsigned char* dynamic_smem() { return rt().smem.data(); }

template <typename T>
dim3 to_dim3(T v) {
  if constexpr (std::is_same_v<T, dim3>) {
    return v;
  } else {
    static_assert(std::is_integral_v<T>, "a launch dimension is a dim3 or an integer");
    if (v < 1 || uint64_t(v) > 0xffffffffull)
      fail("launch dimension out of range: " + std::to_string(v));
    return dim3(unsigned(v));
  }
}

struct Launch {
  dim3 grid, block;
  size_t smem = 0;
  template <typename G, typename B, typename S = int, typename St = cudaStream_t>
  Launch(G g, B b, S s = 0, St = St()) : grid(to_dim3(g)), block(to_dim3(b)), smem(size_t(s)) {}
};

// Runs one block: its threads as fibers, in a random order between barriers.
inline void run_block(std::mt19937_64& rng) {
  Runtime& r = rt();
  const unsigned threads = r.block_dim.x * r.block_dim.y * r.block_dim.z;
  std::fill(r.smem.begin(), r.smem.end(), 0xFF);
  for (unsigned t = 0; t < threads; ++t) {
    Fiber& f = r.fibers[t];
    f.tid = {t % r.block_dim.x, (t / r.block_dim.x) % r.block_dim.y,
             t / (r.block_dim.x * r.block_dim.y)};
    f.wait = Wait::kRunning;
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = r.stacks + size_t(t) * r.stack_bytes + 4096;  // above its guard
    f.ctx.uc_stack.ss_size = r.stack_bytes - 4096;
    f.ctx.uc_link = &r.scheduler;
    makecontext(&f.ctx, fiber_entry, 0);
  }
  std::vector<int> ready(threads);
  for (unsigned t = 0; t < threads; ++t) ready[t] = int(t);
  const int warps = int((threads + 31) / 32);
  while (true) {
    std::shuffle(ready.begin(), ready.end(), rng);
    for (int t : ready) {
      r.current = t;
      r.thread = r.fibers[t].tid;
      swapcontext(&r.scheduler, &r.fibers[t].ctx);
    }
    ready.clear();
    if (!r.error.empty()) {
      const std::string what = r.error;
      r.error.clear();
      fail(what);
    }
    // a warp whose every lane waits at a shuffle goes on; one some lane cannot reach is an error
    for (int w = 0; w < warps; ++w) {
      const unsigned lo = unsigned(w) * 32, hi = std::min(threads, lo + 32);
      unsigned at_shuffle = 0;
      for (unsigned t = lo; t < hi; ++t) at_shuffle += r.fibers[t].wait == Wait::kWarp;
      if (at_shuffle == 0) continue;
      if (at_shuffle != 32)
        fail("a warp shuffle that " + std::to_string(32 - at_shuffle) + " lane(s) of warp " +
             std::to_string(w) + " did not reach (returned, at __syncthreads, or past the block)");
      for (unsigned t = lo; t < hi; ++t) {
        r.fibers[t].wait = Wait::kRunning;
        ready.push_back(int(t));
      }
    }
    if (!ready.empty()) continue;
    bool any_live = false;
    for (unsigned t = 0; t < threads; ++t) any_live = any_live || r.fibers[t].wait != Wait::kDone;
    if (!any_live) return;
    // no shuffle pending, so every live thread waits at __syncthreads: release them
    for (unsigned t = 0; t < threads; ++t)
      if (r.fibers[t].wait == Wait::kBlock) {
        r.fibers[t].wait = Wait::kRunning;
        ready.push_back(int(t));
      }
    if (ready.empty()) fail("a block whose threads wait on each other forever");
  }
}

// Runs body() as every thread of every block of the launch, blocks in order.
inline void launch(const Launch& l, const std::function<void()>& body) {
  Runtime& r = rt();
  const uint64_t threads = uint64_t(l.block.x) * l.block.y * l.block.z;
  if (threads > 1024 || l.block.z > 64) fail("more than 1024 threads in a block");
  if (l.grid.y > 65535 || l.grid.z > 65535 || l.grid.x > 0x7fffffffu)
    fail("grid dimensions past CUDA's limits");
  if (l.smem > 48 * 1024) fail("more than 48 KiB of dynamic shared memory without an opt-in");
  // each fiber's stack above a guard page (an overflow faults rather than runs into the next)
  const size_t page = 4096;
  const size_t stack_bytes = size_t(env_long("CPRL_EMU_STACK_KIB", 64)) * 1024;
  if (r.stack_bytes != stack_bytes + page || r.stacks_mapped < threads * (stack_bytes + page)) {
    if (r.stacks) munmap(r.stacks, r.stacks_mapped);
    r.stacks_mapped = threads * (stack_bytes + page);
    void* p = mmap(nullptr, r.stacks_mapped, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) fail("cannot map fiber stacks");
    r.stacks = static_cast<char*>(p);
    for (uint64_t t = 0; t < threads; ++t)
      mprotect(r.stacks + t * (stack_bytes + page), page, PROT_NONE);
  }
  r.stack_bytes = stack_bytes + page;
  r.fibers.assign(threads, Fiber{});
  r.shuffle.assign(threads * 16, 0);
  r.smem.assign(l.smem, 0xFF);
  r.block_dim = l.block;
  r.grid_dim = l.grid;
  r.body = &body;
  std::mt19937_64 rng(uint64_t(env_long("CPRL_EMU_SEED", 0)) * 1000003u + r.launches++);
  for (unsigned z = 0; z < l.grid.z; ++z)
    for (unsigned y = 0; y < l.grid.y; ++y)
      for (unsigned x = 0; x < l.grid.x; ++x) {
        r.block = {x, y, z};
        run_block(rng);
      }
  r.body = nullptr;
  r.current = -1;
}

inline void sync_threads() { yield(Wait::kBlock); }

template <typename T>
T shfl_down(unsigned mask, T v, unsigned delta, int width) {
  static_assert(sizeof(T) <= 16, "a shuffled value is at most 16 bytes");
  if (mask != 0xffffffffu) thread_fail("only full-warp shuffles are emulated");
  if (width < 1 || width > 32 || (width & (width - 1)) != 0)
    thread_fail("a shuffle width that is not a power of two up to 32: " + std::to_string(width));
  Runtime& r = rt();
  const int me = r.current;
  std::memcpy(&r.shuffle[size_t(me) * 16], &v, sizeof(T));
  yield(Wait::kWarp);
  const int lane = me % 32;
  const int src = (lane % width) + int(delta) < width ? me + int(delta) : me;
  T out;
  std::memcpy(&out, &r.shuffle[size_t(src) * 16], sizeof(T));
  yield(Wait::kWarp);  // every lane has read before any lane's next shuffle writes its slot
  return out;
}

}  // namespace cprl_emu

#define threadIdx (::cprl_emu::rt().thread)
#define blockIdx (::cprl_emu::rt().block)
#define blockDim (::cprl_emu::rt().block_dim)
#define gridDim (::cprl_emu::rt().grid_dim)

inline void __syncthreads() { ::cprl_emu::sync_threads(); }

template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return ::cprl_emu::shfl_down(mask, v, delta, width);
}

// Kernels with the two faults the CPU emulator (cuda_emu.h) is there to catch, built with the
// emulated kernels by tests/cuda_emulation.py and run by tests/test_cuda_emulated.py: a read of
// another thread's shared-memory write with no barrier between them (a race: the result
// depends on the order the threads run in), and a warp shuffle that some lanes of the warp
// never reach (a hang or undefined behaviour on a GPU).
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <torch/library.h>

namespace {

constexpr int kThreads = 64;

// out[t] = offset + (t + 1) % kThreads, read from the shared array the neighbour wrote.
__global__ void neighbour_kernel(float* out, float offset, bool barrier) {
  __shared__ float values[kThreads];
  values[threadIdx.x] = offset + float(threadIdx.x);
  if (barrier) __syncthreads();
  out[threadIdx.x] = values[(threadIdx.x + 1) % kThreads];
}

// out[t] = t + 1 within each group of 32 lanes (the last lane keeps its own t); lanes from
// `active` on return before the shuffle.
__global__ void shuffle_kernel(float* out, int active) {
  if (int(threadIdx.x) >= active) return;
  out[threadIdx.x] = __shfl_down_sync(0xffffffffu, float(threadIdx.x), 1, 32);
}

at::Tensor neighbour(double offset, bool barrier) {
  at::Tensor out = at::full({kThreads}, -1.0f);
  neighbour_kernel<<<1, kThreads>>>(out.data_ptr<float>(), float(offset), barrier);
  return out;
}

at::Tensor shuffle(int64_t active) {
  at::Tensor out = at::full({kThreads}, -1.0f);
  shuffle_kernel<<<1, kThreads>>>(out.data_ptr<float>(), int(active));
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(cprl_fast_emu, m) {
  m.def("selftest_neighbour(float offset, bool barrier) -> Tensor", &neighbour);
  m.def("selftest_shuffle(int active) -> Tensor", &shuffle);
}

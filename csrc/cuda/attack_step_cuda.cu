// attack_step on CUDA: one elementwise pass (core/attack_step.h), with 16-byte vector loads
// and stores when every pointer is aligned, a grid-stride loop, and a scalar tail.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../glue/attack_step.h"
#include "nc_loops.cuh"

namespace cprl_fast {
namespace {

template <typename scalar_t, int V>
__global__ void attack_step_kernel(int64_t n, const scalar_t* x, const scalar_t* g,
                                   const scalar_t* x0, scalar_t* out, double alpha, double eps,
                                   double lo, double hi) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t a = acc_t(alpha), e = acc_t(eps), l = acc_t(lo), h = acc_t(hi);
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t nvec = n / V;
  for (int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; k < nvec; k += stride) {
    const auto xv = cprl::load_pack<V>(x, k * V);
    const auto gv = cprl::load_pack<V>(g, k * V);
    const auto x0v = cprl::load_pack<V>(x0, k * V);
    cprl::Pack<scalar_t, V> ov;
#pragma unroll
    for (int j = 0; j < V; ++j)
      ov.v[j] = static_cast<scalar_t>(
          cprl::attack_step_value(acc_t(xv.v[j]), acc_t(gv.v[j]), acc_t(x0v.v[j]), a, e, l, h));
    cprl::store_pack<V>(out, k * V, ov);
  }
  for (int64_t i = nvec * V + int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    out[i] = static_cast<scalar_t>(
        cprl::attack_step_value(acc_t(x[i]), acc_t(g[i]), acc_t(x0[i]), a, e, l, h));
}

void launch(const cprl::AttackStepParams& p, at::ScalarType dtype, c10::Device device) {
  const c10::cuda::CUDAGuard guard(device);  // after the checks of glue/attack_step.h
  constexpr int kThreads = 256;
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  CPRL_DISPATCH_FLOATING(dtype, "attack_step_cuda", [&] {
    const auto* xp = static_cast<const scalar_t*>(p.x);
    const auto* gp = static_cast<const scalar_t*>(p.grad);
    const auto* x0p = static_cast<const scalar_t*>(p.x0);
    auto* op = static_cast<scalar_t*>(p.out);
    constexpr int V = 16 / sizeof(scalar_t);
    if (cuda::all_aligned16({xp, gp, x0p, op})) {
      const int64_t blocks = cuda::elementwise_blocks(cuda::ceil_div(p.numel, V), kThreads);
      attack_step_kernel<scalar_t, V><<<blocks, kThreads, 0, stream>>>(
          p.numel, xp, gp, x0p, op, p.alpha, p.eps, p.lo, p.hi);
    } else {
      const int64_t blocks = cuda::elementwise_blocks(p.numel, kThreads);
      attack_step_kernel<scalar_t, 1><<<blocks, kThreads, 0, stream>>>(
          p.numel, xp, gp, x0p, op, p.alpha, p.eps, p.lo, p.hi);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

at::Tensor attack_step_cuda(const at::Tensor& x, const at::Tensor& grad, const at::Tensor& x0,
                            double alpha, double eps, double lo, double hi) {
  return attack_step_with(x, grad, x0, alpha, eps, lo, hi, launch);
}

void attack_step_out_cuda(const at::Tensor& x, const at::Tensor& grad, const at::Tensor& x0,
                          double alpha, double eps, double lo, double hi, at::Tensor& out) {
  attack_step_out_with(x, grad, x0, alpha, eps, lo, hi, out, launch);
}

}  // namespace

TORCH_LIBRARY_IMPL(cprl_fast, CUDA, m) {
  m.impl("attack_step", &attack_step_cuda);
  m.impl("attack_step_out", &attack_step_out_cuda);
}

}  // namespace cprl_fast

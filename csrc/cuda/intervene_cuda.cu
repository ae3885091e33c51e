// intervene on CUDA: element functors on the parameters of core/intervene.h (set up by
// glue/intervene.h).
// Forward: one elementwise pass (nc_map). Backward: one nc_reduce pass writes grad_f and
// grad_t and reduces grad_mask per channel (deterministic; see nc_loops.cuh).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../glue/intervene.h"
#include "nc_loops.cuh"

namespace cprl_fast {
namespace {

template <typename scalar_t, typename acc_t>
struct InterveneForward {
  const scalar_t* f;
  const scalar_t* t;
  const acc_t* mask;
  scalar_t* out;
  cprl::InterveneMode mode;
  __device__ void operator()(int64_t i, int64_t nc) const {
    const auto w = cprl::intervene_weights(mask[nc], mode);
    out[i] = static_cast<scalar_t>(cprl::intervene_value(acc_t(f[i]), acc_t(t[i]), w));
  }
};

template <typename scalar_t, typename acc_t>
struct InterveneBackward {
  const scalar_t* g;
  const scalar_t* f;
  const scalar_t* t;
  const acc_t* mask;
  scalar_t* grad_f;
  scalar_t* grad_t;
  cprl::InterveneMode mode;
  __device__ void operator()(int64_t i, int64_t nc, acc_t& gm, acc_t&) const {
    const auto w = cprl::intervene_weights(mask[nc], mode);
    const auto gr = cprl::intervene_grads(acc_t(f[i]), acc_t(t[i]), acc_t(g[i]), w);
    grad_f[i] = static_cast<scalar_t>(gr.f);
    grad_t[i] = static_cast<scalar_t>(gr.t);
    gm += gr.m;
  }
};

at::Tensor intervene_cuda(const at::Tensor& f, const at::Tensor& t, const at::Tensor& mask,
                          c10::string_view mode) {
  return intervene_with(
      f, t, mask, mode,
      [](const cprl::InterveneForwardParams& p, at::ScalarType dtype,
         const at::TensorOptions& acc_options) {
        const c10::cuda::CUDAGuard guard(acc_options.device());
        CPRL_DISPATCH_FLOATING(dtype, "intervene_cuda", [&] {
          using acc_t = at::opmath_type<scalar_t>;
          cuda::nc_map(p.sz, InterveneForward<scalar_t, acc_t>{
                                 static_cast<const scalar_t*>(p.f),
                                 static_cast<const scalar_t*>(p.t),
                                 static_cast<const acc_t*>(p.mask),
                                 static_cast<scalar_t*>(p.out), p.mode});
        });
      });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> intervene_backward_cuda(
    const at::Tensor& grad, const at::Tensor& f, const at::Tensor& t, const at::Tensor& mask,
    c10::string_view mode) {
  return intervene_backward_with(
      grad, f, t, mask, mode,
      [](const cprl::InterveneBackwardParams& p, at::ScalarType dtype,
         const at::TensorOptions& acc_options) {
        const c10::cuda::CUDAGuard guard(acc_options.device());
        CPRL_DISPATCH_FLOATING(dtype, "intervene_backward_cuda", [&] {
          using acc_t = at::opmath_type<scalar_t>;
          at::Tensor unused = at::empty({p.sz.N * p.sz.C}, acc_options);
          cuda::nc_reduce<acc_t>(
              p.sz, static_cast<acc_t*>(p.grad_mask), unused.data_ptr<acc_t>(),
              InterveneBackward<scalar_t, acc_t>{
                  static_cast<const scalar_t*>(p.grad), static_cast<const scalar_t*>(p.f),
                  static_cast<const scalar_t*>(p.t), static_cast<const acc_t*>(p.mask),
                  static_cast<scalar_t*>(p.grad_f), static_cast<scalar_t*>(p.grad_t), p.mode},
              acc_options);
        });
      });
}

}  // namespace

TORCH_LIBRARY_IMPL(cprl_fast, CUDA, m) {
  m.impl("intervene", &intervene_cuda);
  m.impl("intervene_backward", &intervene_backward_cuda);
}

}  // namespace cprl_fast

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
  template <int V>
  __device__ void apply(int64_t i, int64_t nc, int64_t step) const {
    const auto fv = cprl::load_pack<V>(f, i);
    const auto tv = cprl::load_pack<V>(t, i);
    cprl::Pack<scalar_t, V> ov;
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const auto w = cprl::intervene_weights(mask[nc + k * step], mode);
      ov.v[k] = static_cast<scalar_t>(cprl::intervene_value(acc_t(fv.v[k]), acc_t(tv.v[k]), w));
    }
    cprl::store_pack<V>(out, i, ov);
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
  template <int V, int STEP>
  __device__ void reduce(int64_t i, int64_t nc, acc_t* gm, acc_t*) const {
    const auto gv = cprl::load_pack<V>(g, i);
    const auto fv = cprl::load_pack<V>(f, i);
    const auto tv = cprl::load_pack<V>(t, i);
    cprl::Pack<scalar_t, V> gf, gt;
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const auto w = cprl::intervene_weights(mask[nc + k * STEP], mode);
      const auto gr = cprl::intervene_grads(acc_t(fv.v[k]), acc_t(tv.v[k]), acc_t(gv.v[k]), w);
      gf.v[k] = static_cast<scalar_t>(gr.f);
      gt.v[k] = static_cast<scalar_t>(gr.t);
      gm[k * STEP] += gr.m;
    }
    cprl::store_pack<V>(grad_f, i, gf);
    cprl::store_pack<V>(grad_t, i, gt);
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
          const auto* fp = static_cast<const scalar_t*>(p.f);
          const auto* tp = static_cast<const scalar_t*>(p.t);
          auto* op = static_cast<scalar_t*>(p.out);
          cuda::nc_map<scalar_t>(
              p.sz,
              InterveneForward<scalar_t, acc_t>{fp, tp, static_cast<const acc_t*>(p.mask), op,
                                                p.mode},
              {fp, tp, op});
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
          const auto* gp = static_cast<const scalar_t*>(p.grad);
          const auto* fp = static_cast<const scalar_t*>(p.f);
          const auto* tp = static_cast<const scalar_t*>(p.t);
          auto* gfp = static_cast<scalar_t*>(p.grad_f);
          auto* gtp = static_cast<scalar_t*>(p.grad_t);
          cuda::nc_reduce<scalar_t>(
              p.sz, static_cast<acc_t*>(p.grad_mask), unused.data_ptr<acc_t>(),
              InterveneBackward<scalar_t, acc_t>{gp, fp, tp, static_cast<const acc_t*>(p.mask),
                                                 gfp, gtp, p.mode},
              acc_options, {gp, fp, tp, gfp, gtp});
        });
      });
}

}  // namespace

TORCH_LIBRARY_IMPL(cprl_fast, CUDA, m) {
  m.impl("intervene", &intervene_cuda);
  m.impl("intervene_backward", &intervene_backward_cuda);
}

}  // namespace cprl_fast

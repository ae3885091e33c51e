// intervene on CUDA: glue and element functors around the maths of core/intervene.h.
// Forward: one elementwise pass (nc_map). Backward: one nc_reduce pass writes grad_f and
// grad_t and reduces grad_mask per channel (deterministic; see nc_loops.cuh).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../checks.h"
#include "../core/intervene.h"
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
    const acc_t fv = acc_t(f[i]);
    const acc_t tv = acc_t(t[i]);
    const acc_t gv = cprl::intervene_preact(fv, tv, w) > acc_t(0) ? acc_t(g[i]) : acc_t(0);
    grad_f[i] = static_cast<scalar_t>(gv * w.kf);
    grad_t[i] = static_cast<scalar_t>(gv * w.kt);
    gm += gv * (fv - tv);
  }
};

at::Tensor intervene_cuda(const at::Tensor& f, const at::Tensor& t, const at::Tensor& mask,
                          c10::string_view mode_name) {
  check_intervene_args(f, t, mask);
  const cprl::InterveneMode mode = parse_intervene_mode(mode_name);
  const c10::cuda::CUDAGuard guard(f.device());
  const cprl::Layout layout = choose_layout(f);
  const at::Tensor fd = dense(f, layout);
  const at::Tensor td = dense(t, layout);
  const cprl::NCHWSizes sz = sizes_of(fd, layout);
  const at::Tensor md = mask.to(acc_dtype(f.scalar_type())).contiguous();
  at::Tensor out = at::empty_like(fd);
  if (sz.N == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f.scalar_type(), "intervene_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    cuda::nc_map(sz, InterveneForward<scalar_t, acc_t>{
                         fd.const_data_ptr<scalar_t>(), td.const_data_ptr<scalar_t>(),
                         md.const_data_ptr<acc_t>(), out.data_ptr<scalar_t>(), mode});
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> intervene_backward_cuda(
    const at::Tensor& grad, const at::Tensor& f, const at::Tensor& t, const at::Tensor& mask,
    c10::string_view mode_name) {
  check_intervene_args(f, t, mask);
  check_output_grad(f, grad, "grad");
  const cprl::InterveneMode mode = parse_intervene_mode(mode_name);
  const c10::cuda::CUDAGuard guard(f.device());
  const cprl::Layout layout = choose_layout(f);
  const at::Tensor fd = dense(f, layout);
  const at::Tensor td = dense(t, layout);
  const at::Tensor gd = dense(grad, layout);
  const cprl::NCHWSizes sz = sizes_of(fd, layout);
  const at::ScalarType acc_type = acc_dtype(f.scalar_type());
  const at::Tensor md = mask.to(acc_type).contiguous();
  at::Tensor grad_f = at::empty_like(fd);
  at::Tensor grad_t = at::empty_like(fd);
  at::Tensor grad_m = at::empty({2, sz.N, sz.C}, f.options().dtype(acc_type));
  if (sz.N > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f.scalar_type(), "intervene_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      acc_t* gm = grad_m.data_ptr<acc_t>();
      cuda::nc_reduce<acc_t>(
          sz, gm, gm + sz.N * sz.C,
          InterveneBackward<scalar_t, acc_t>{
              gd.const_data_ptr<scalar_t>(), fd.const_data_ptr<scalar_t>(),
              td.const_data_ptr<scalar_t>(), md.const_data_ptr<acc_t>(),
              grad_f.data_ptr<scalar_t>(), grad_t.data_ptr<scalar_t>(), mode},
          f.options().dtype(acc_type));
    });
  }
  at::Tensor gmask = grad_m[0];
  if (cprl::intervene_mask_sign(mode) < 0) gmask = gmask.neg();
  return {grad_f, grad_t, gmask.to(mask.scalar_type()).contiguous()};
}

}  // namespace

TORCH_LIBRARY_IMPL(cprl_fast, CUDA, m) {
  m.impl("intervene", &intervene_cuda);
  m.impl("intervene_backward", &intervene_backward_cuda);
}

}  // namespace cprl_fast

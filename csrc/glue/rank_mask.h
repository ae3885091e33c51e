// The shared set-up of rank_mask for every backend: checks (csrc/checks.h), dense inputs in the
// kernel layout, outputs, the empty-batch early return, and the torch-free parameters of
// core/rank_mask.h. The CPU and CUDA files only launch on those parameters.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

#include "../checks.h"
#include "../core/rank_mask.h"

namespace cprl_fast {

namespace detail {
// x (one element, or a [N, C] mask) in the op-math dtype, dense; x itself when it already is
// (no dispatcher call on the common path: a CA layer's b is a float32 scalar).
inline at::Tensor in_acc_dtype(const at::Tensor& x, at::ScalarType acc) {
  return x.scalar_type() == acc && x.is_contiguous() ? x : x.to(acc).contiguous();
}

// The parameters forward and backward share; bd: b's one element in the op-math dtype.
inline void fill_rank_mask_params(cprl::RankMaskParams& p, const at::Tensor& fd,
                                  cprl::Layout layout, double temperature, bool soft, double tau,
                                  const at::Tensor& bd) {
  p.sz = sizes_of(fd, layout);
  p.temperature = temperature;
  p.soft = soft;
  p.tau = tau;
  p.b = bd.const_data_ptr();
}
}  // namespace detail

// launch(const cprl::RankMaskForwardParams&, at::ScalarType dtype, const at::TensorOptions&
// acc_options): the backend's kernels; acc_options allocate op-math scratch on the device.
template <typename Launch>
std::tuple<at::Tensor, at::Tensor> rank_mask_with(const at::Tensor& f, const at::Tensor& b,
                                                  double temperature, bool soft, double tau,
                                                  Launch launch) {
  check_rank_mask_args(f, b, temperature, soft, tau);
  const cprl::Layout layout = choose_layout(f);
  const at::Tensor fd = dense(f, layout);
  const auto acc_options = f.options().dtype(acc_dtype(f.scalar_type()));
  at::Tensor y = at::empty_like(fd);
  at::Tensor mask = at::empty({f.size(0), f.size(1)}, acc_options);
  if (f.size(0) == 0) return {y, mask};
  const at::Tensor bd = detail::in_acc_dtype(b, acc_options.dtype().toScalarType());
  cprl::RankMaskForwardParams p;
  detail::fill_rank_mask_params(p, fd, layout, temperature, soft, tau, bd);
  p.f = fd.const_data_ptr();
  p.y = y.mutable_data_ptr();
  p.mask = mask.mutable_data_ptr();
  launch(p, f.scalar_type(), acc_options);
  return {y, mask};
}

// launch(const cprl::RankMaskBackwardParams&, at::ScalarType dtype, const at::TensorOptions&
// acc_options).
template <typename Launch>
std::tuple<at::Tensor, at::Tensor> rank_mask_backward_with(
    const at::Tensor& grad_y, const std::optional<at::Tensor>& grad_mask, const at::Tensor& f,
    const at::Tensor& mask, const at::Tensor& b, double temperature, bool soft, double tau,
    Launch launch) {
  check_rank_mask_args(f, b, temperature, soft, tau);
  check_output_grad(f, grad_y, "grad_y");
  check_mask(f, mask, "mask");
  const cprl::Layout layout = choose_layout(f);
  const at::Tensor fd = dense(f, layout);
  const auto acc_options = f.options().dtype(acc_dtype(f.scalar_type()));
  at::Tensor grad_f = at::empty_like(fd);
  const at::Tensor gmd = optional_mask_grad(f, grad_mask, acc_options.dtype().toScalarType());
  if (f.size(0) == 0) return {grad_f, at::zeros_like(b)};
  const at::Tensor gd = dense(grad_y, layout);
  const at::ScalarType acc = acc_options.dtype().toScalarType();
  const at::Tensor md = detail::in_acc_dtype(mask, acc);
  const at::Tensor bd = detail::in_acc_dtype(b, acc);
  at::Tensor grad_b = at::empty(b.sizes(), acc_options);
  cprl::RankMaskBackwardParams p;
  detail::fill_rank_mask_params(p, fd, layout, temperature, soft, tau, bd);
  p.grad_y = gd.const_data_ptr();
  p.grad_mask = gmd.defined() ? gmd.const_data_ptr() : nullptr;
  p.f = fd.const_data_ptr();
  p.mask = md.const_data_ptr();
  p.grad_f = grad_f.mutable_data_ptr();
  p.grad_b = grad_b.mutable_data_ptr();
  launch(p, f.scalar_type(), acc_options);
  return {grad_f, b.scalar_type() == acc ? grad_b : grad_b.to(b.scalar_type())};
}

}  // namespace cprl_fast

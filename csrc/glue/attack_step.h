// The shared set-up of attack_step for every backend: checks, x, grad and x0 dense in x's
// memory format, the output, and the torch-free parameters of core/attack_step.h. The CPU and
// CUDA files only launch on those parameters.
#pragma once

#include <ATen/ATen.h>

#include "../checks.h"
#include "../core/attack_step.h"

namespace cprl_fast {

namespace detail {
// launch(const cprl::AttackStepParams&, at::ScalarType dtype, c10::Device device), into `out`
// (dense in x's format).
template <typename Launch>
void attack_step_into(const at::Tensor& x, const at::Tensor& grad, const at::Tensor& x0,
                      double alpha, double eps, double lo, double hi, at::Tensor& out,
                      Launch launch) {
  const auto fmt = dense_format(x);
  const at::Tensor xd = x.contiguous(fmt);
  const at::Tensor gd = grad.contiguous(fmt);
  const at::Tensor x0d = x0.contiguous(fmt);
  if (xd.numel() == 0) return;
  cprl::AttackStepParams p{xd.numel(), xd.const_data_ptr(), gd.const_data_ptr(),
                           x0d.const_data_ptr(), out.mutable_data_ptr(), alpha, eps, lo, hi};
  launch(p, x.scalar_type(), x.device());
}
}  // namespace detail

template <typename Launch>
at::Tensor attack_step_with(const at::Tensor& x, const at::Tensor& grad, const at::Tensor& x0,
                            double alpha, double eps, double lo, double hi, Launch launch) {
  check_attack_step_args(x, grad, x0, alpha, eps, lo, hi);
  at::Tensor out = at::empty_like(x, dense_format(x));
  detail::attack_step_into(x, grad, x0, alpha, eps, lo, hi, out, launch);
  return out;
}

// Writes into `out` directly when it is dense in x's format (it may be x itself: each element
// is read before it is written, by the same thread), else through a temporary.
template <typename Launch>
void attack_step_out_with(const at::Tensor& x, const at::Tensor& grad, const at::Tensor& x0,
                          double alpha, double eps, double lo, double hi, at::Tensor& out,
                          Launch launch) {
  check_attack_step_args(x, grad, x0, alpha, eps, lo, hi);
  check_out(x, grad, x0, out);
  if (out.is_contiguous(dense_format(x))) {
    detail::attack_step_into(x, grad, x0, alpha, eps, lo, hi, out, launch);
    return;
  }
  at::Tensor tmp = at::empty_like(x, dense_format(x));
  detail::attack_step_into(x, grad, x0, alpha, eps, lo, hi, tmp, launch);
  out.copy_(tmp);
}

}  // namespace cprl_fast

// The layout handling of attack_step, shared by the CPU and CUDA glue: both kernels take dense
// x, grad and x0 in x's dense memory format and write a dense output of that format.
#pragma once

#include <ATen/ATen.h>

#include "checks.h"

namespace cprl_fast {

// launch(xd, gd, x0d, alpha, eps, lo, hi, out): the backend's kernel on dense tensors.
template <typename Launch>
at::Tensor attack_step_with(const at::Tensor& x, const at::Tensor& grad, const at::Tensor& x0,
                            double alpha, double eps, double lo, double hi, Launch launch) {
  check_attack_step_args(x, grad, x0, alpha, eps, lo, hi);
  const auto fmt = dense_format(x);
  const at::Tensor xd = x.contiguous(fmt);
  at::Tensor out = at::empty_like(xd);
  launch(xd, grad.contiguous(fmt), x0.contiguous(fmt), alpha, eps, lo, hi, out);
  return out;
}

// Writes into `out` directly when it is dense in x's format (it may be x itself: each element
// is read before it is written, by the same thread), else through a temporary.
template <typename Launch>
void attack_step_out_with(const at::Tensor& x, const at::Tensor& grad, const at::Tensor& x0,
                          double alpha, double eps, double lo, double hi, at::Tensor& out,
                          Launch launch) {
  check_attack_step_args(x, grad, x0, alpha, eps, lo, hi);
  check_out(x, out);
  const auto fmt = dense_format(x);
  const at::Tensor xd = x.contiguous(fmt);
  if (out.is_contiguous(fmt)) {
    launch(xd, grad.contiguous(fmt), x0.contiguous(fmt), alpha, eps, lo, hi, out);
    return;
  }
  at::Tensor tmp = at::empty_like(xd);
  launch(xd, grad.contiguous(fmt), x0.contiguous(fmt), alpha, eps, lo, hi, tmp);
  out.copy_(tmp);
}

}  // namespace cprl_fast

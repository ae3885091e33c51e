// The shared set-up of intervene for every backend: checks, dense inputs in the kernel layout,
// outputs, the empty-batch early return, and the torch-free parameters of core/intervene.h.
// The CPU and CUDA files only launch on those parameters.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

#include "../checks.h"
#include "../core/intervene.h"

namespace cprl_fast {

// The inputs made dense once, kept alive for the launch.
struct InterveneInputs {
  at::Tensor f, t, mask;
  cprl::InterveneParams params;
  at::TensorOptions acc_options;
};

// After check_intervene_args.
inline InterveneInputs intervene_inputs(const at::Tensor& f, const at::Tensor& t,
                                        const at::Tensor& mask, c10::string_view mode) {
  InterveneInputs in;
  in.params.mode = parse_intervene_mode(mode);
  const cprl::Layout layout = choose_layout(f);
  in.acc_options = f.options().dtype(acc_dtype(f.scalar_type()));
  in.f = dense(f, layout);
  in.t = dense(t, layout);
  in.mask = mask.to(in.acc_options.dtype()).contiguous();
  in.params.sz = sizes_of(in.f, layout);
  in.params.f = in.f.const_data_ptr();
  in.params.t = in.t.const_data_ptr();
  in.params.mask = in.mask.const_data_ptr();
  return in;
}

// launch(const cprl::InterveneForwardParams&, at::ScalarType dtype, const at::TensorOptions&
// acc_options).
template <typename Launch>
at::Tensor intervene_with(const at::Tensor& f, const at::Tensor& t, const at::Tensor& mask,
                          c10::string_view mode, Launch launch) {
  check_intervene_args(f, t, mask);
  const InterveneInputs in = intervene_inputs(f, t, mask, mode);
  at::Tensor out = at::empty_like(in.f);
  if (f.size(0) == 0) return out;
  cprl::InterveneForwardParams p;
  static_cast<cprl::InterveneParams&>(p) = in.params;
  p.out = out.mutable_data_ptr();
  launch(p, f.scalar_type(), in.acc_options);
  return out;
}

// launch(const cprl::InterveneBackwardParams&, at::ScalarType dtype, const at::TensorOptions&
// acc_options). grad_mask is returned in the dtype of mask, with the sign of the mode applied.
template <typename Launch>
std::tuple<at::Tensor, at::Tensor, at::Tensor> intervene_backward_with(
    const at::Tensor& grad, const at::Tensor& f, const at::Tensor& t, const at::Tensor& mask,
    c10::string_view mode, Launch launch) {
  check_intervene_args(f, t, mask);
  check_output_grad(f, grad, "grad");
  const InterveneInputs in = intervene_inputs(f, t, mask, mode);
  at::Tensor grad_f = at::empty_like(in.f);
  at::Tensor grad_t = at::empty_like(in.f);
  at::Tensor grad_m = at::zeros({f.size(0), f.size(1)}, in.acc_options);
  if (f.size(0) > 0) {
    const at::Tensor gd = dense(grad, in.params.sz.layout);
    cprl::InterveneBackwardParams p;
    static_cast<cprl::InterveneParams&>(p) = in.params;
    p.grad = gd.const_data_ptr();
    p.grad_f = grad_f.mutable_data_ptr();
    p.grad_t = grad_t.mutable_data_ptr();
    p.grad_mask = grad_m.mutable_data_ptr();
    launch(p, f.scalar_type(), in.acc_options);
    if (cprl::intervene_mask_sign(in.params.mode) < 0) grad_m.neg_();
  }
  return {grad_f, grad_t, grad_m.to(mask.scalar_type())};
}

}  // namespace cprl_fast

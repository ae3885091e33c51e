// intervene on the CPU: glue between at::Tensor and the maths of core/intervene.h.
// Forward: one elementwise pass. Backward: one pass over grad, f and t that writes grad_f and
// grad_t and reduces grad_mask per channel.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <vector>

#include "../checks.h"
#include "../core/intervene.h"
#include "nc_loops.h"

namespace cprl_fast {
namespace {

// (kf, kt) of every channel, computed once so the element loops carry no branch on the mode.
template <typename acc_t>
std::vector<cprl::InterveneWeights<acc_t>> channel_weights(const at::Tensor& mask,
                                                           cprl::InterveneMode mode) {
  const acc_t* mp = mask.const_data_ptr<acc_t>();
  std::vector<cprl::InterveneWeights<acc_t>> w(mask.numel());
  for (int64_t i = 0; i < mask.numel(); ++i) w[i] = cprl::intervene_weights(mp[i], mode);
  return w;
}

at::Tensor intervene_cpu(const at::Tensor& f, const at::Tensor& t, const at::Tensor& mask,
                         c10::string_view mode_name) {
  check_intervene_args(f, t, mask);
  const cprl::InterveneMode mode = parse_intervene_mode(mode_name);
  const cprl::Layout layout = choose_layout(f);
  const at::Tensor fd = dense(f, layout);
  const at::Tensor td = dense(t, layout);
  const cprl::NCHWSizes sz = sizes_of(fd, layout);
  const at::Tensor md = mask.to(acc_dtype(f.scalar_type())).contiguous();
  at::Tensor out = at::empty_like(fd);
  if (sz.N == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f.scalar_type(), "intervene_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* fp = fd.const_data_ptr<scalar_t>();
    const scalar_t* tp = td.const_data_ptr<scalar_t>();
    const auto weights = channel_weights<acc_t>(md, mode);
    const cprl::InterveneWeights<acc_t>* wp = weights.data();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    cpu::nc_map(sz, [=](int64_t i, int64_t nc) {
      op[i] = static_cast<scalar_t>(cprl::intervene_value(acc_t(fp[i]), acc_t(tp[i]), wp[nc]));
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> intervene_backward_cpu(
    const at::Tensor& grad, const at::Tensor& f, const at::Tensor& t, const at::Tensor& mask,
    c10::string_view mode_name) {
  check_intervene_args(f, t, mask);
  check_output_grad(f, grad, "grad");
  const cprl::InterveneMode mode = parse_intervene_mode(mode_name);
  const cprl::Layout layout = choose_layout(f);
  const at::Tensor fd = dense(f, layout);
  const at::Tensor td = dense(t, layout);
  const at::Tensor gd = dense(grad, layout);
  const cprl::NCHWSizes sz = sizes_of(fd, layout);
  const at::ScalarType acc_type = acc_dtype(f.scalar_type());
  const at::Tensor md = mask.to(acc_type).contiguous();
  at::Tensor grad_f = at::empty_like(fd);
  at::Tensor grad_t = at::empty_like(fd);
  at::Tensor grad_m = at::empty({sz.N, sz.C}, mask.options().dtype(at::kDouble));
  if (sz.N > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f.scalar_type(), "intervene_backward_cpu", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const scalar_t* fp = fd.const_data_ptr<scalar_t>();
      const scalar_t* tp = td.const_data_ptr<scalar_t>();
      const scalar_t* gp = gd.const_data_ptr<scalar_t>();
      const auto weights = channel_weights<acc_t>(md, mode);
      const cprl::InterveneWeights<acc_t>* wp = weights.data();
      scalar_t* gfp = grad_f.mutable_data_ptr<scalar_t>();
      scalar_t* gtp = grad_t.mutable_data_ptr<scalar_t>();
      std::vector<double> unused(sz.N * sz.C);
      cpu::nc_reduce(sz, grad_m.mutable_data_ptr<double>(), unused.data(),
                     [=](int64_t i, int64_t nc) {
                       const auto w = wp[nc];
                       const acc_t fv = acc_t(fp[i]);
                       const acc_t tv = acc_t(tp[i]);
                       // relu(v) > 0 iff v > 0 (NaN: both false); select first (see rank_mask)
                       const acc_t gv = acc_t(gp[i]);
                       const acc_t g = cprl::intervene_preact(fv, tv, w) > acc_t(0) ? gv : acc_t(0);
                       gfp[i] = static_cast<scalar_t>(g * w.kf);
                       gtp[i] = static_cast<scalar_t>(g * w.kt);
                       return cpu::Sums2{double(g * (fv - tv)), 0.0};
                     });
    });
    if (cprl::intervene_mask_sign(mode) < 0) grad_m.neg_();
  }
  return {grad_f, grad_t, grad_m.to(mask.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(cprl_fast, CPU, m) {
  m.impl("intervene", &intervene_cpu);
  m.impl("intervene_backward", &intervene_backward_cpu);
}

}  // namespace cprl_fast

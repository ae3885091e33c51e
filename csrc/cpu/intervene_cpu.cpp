// intervene on the CPU: kernels on the parameters of core/intervene.h (set up by
// glue/intervene.h). Forward: one elementwise pass. Backward: one pass over grad, f and t that
// writes grad_f and grad_t and reduces grad_mask per channel (in double).
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <vector>

#include "../glue/intervene.h"
#include "huge_pages.h"
#include "nc_loops.h"

namespace cprl_fast {
namespace {

// (kf, kt) of every channel, computed once so the element loops carry no branch on the mode.
template <typename acc_t>
std::vector<cprl::InterveneWeights<acc_t>> channel_weights(const cprl::InterveneParams& p) {
  const acc_t* mp = static_cast<const acc_t*>(p.mask);
  std::vector<cprl::InterveneWeights<acc_t>> w(p.sz.N * p.sz.C);
  for (size_t i = 0; i < w.size(); ++i) w[i] = cprl::intervene_weights(mp[i], p.mode);
  return w;
}

template <typename scalar_t>
void forward(const cprl::InterveneForwardParams& p) {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* fp = static_cast<const scalar_t*>(p.f);
  const scalar_t* tp = static_cast<const scalar_t*>(p.t);
  scalar_t* op = static_cast<scalar_t*>(p.out);
  const auto weights = channel_weights<acc_t>(p);
  const cprl::InterveneWeights<acc_t>* wp = weights.data();
  cpu::advise_huge_pages(op, uint64_t(p.sz.N * p.sz.C * p.sz.HW) * sizeof(scalar_t));
  cpu::nc_map(p.sz, [=](int64_t i, int64_t nc) {
    op[i] = static_cast<scalar_t>(cprl::intervene_value(acc_t(fp[i]), acc_t(tp[i]), wp[nc]));
  });
}

template <typename scalar_t>
void backward(const cprl::InterveneBackwardParams& p) {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* fp = static_cast<const scalar_t*>(p.f);
  const scalar_t* tp = static_cast<const scalar_t*>(p.t);
  const scalar_t* gp = static_cast<const scalar_t*>(p.grad);
  scalar_t* gfp = static_cast<scalar_t*>(p.grad_f);
  scalar_t* gtp = static_cast<scalar_t*>(p.grad_t);
  const auto weights = channel_weights<acc_t>(p);
  const cprl::InterveneWeights<acc_t>* wp = weights.data();
  const int64_t NC = p.sz.N * p.sz.C;
  std::vector<double> sums(NC), unused(NC);
  cpu::advise_huge_pages(gfp, uint64_t(NC * p.sz.HW) * sizeof(scalar_t));
  cpu::advise_huge_pages(gtp, uint64_t(NC * p.sz.HW) * sizeof(scalar_t));
  cpu::nc_reduce(p.sz, sums.data(), unused.data(), [=](int64_t i, int64_t nc) {
    const auto g = cprl::intervene_grads(acc_t(fp[i]), acc_t(tp[i]), acc_t(gp[i]), wp[nc]);
    gfp[i] = static_cast<scalar_t>(g.f);
    gtp[i] = static_cast<scalar_t>(g.t);
    return cpu::Sums2{double(g.m), 0.0};
  });
  acc_t* gm = static_cast<acc_t*>(p.grad_mask);
  for (int64_t nc = 0; nc < NC; ++nc) gm[nc] = static_cast<acc_t>(sums[nc]);
}

at::Tensor intervene_cpu(const at::Tensor& f, const at::Tensor& t, const at::Tensor& mask,
                         c10::string_view mode) {
  return intervene_with(f, t, mask, mode,
                        [](const cprl::InterveneForwardParams& p, at::ScalarType dtype,
                           const at::TensorOptions&) {
                          CPRL_DISPATCH_FLOATING(dtype, "intervene_cpu",
                                                 [&] { forward<scalar_t>(p); });
                        });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> intervene_backward_cpu(
    const at::Tensor& grad, const at::Tensor& f, const at::Tensor& t, const at::Tensor& mask,
    c10::string_view mode) {
  return intervene_backward_with(grad, f, t, mask, mode,
                                 [](const cprl::InterveneBackwardParams& p, at::ScalarType dtype,
                                    const at::TensorOptions&) {
                                   CPRL_DISPATCH_FLOATING(dtype, "intervene_backward_cpu",
                                                          [&] { backward<scalar_t>(p); });
                                 });
}

}  // namespace

TORCH_LIBRARY_IMPL(cprl_fast, CPU, m) {
  m.impl("intervene", &intervene_cpu);
  m.impl("intervene_backward", &intervene_backward_cpu);
}

}  // namespace cprl_fast

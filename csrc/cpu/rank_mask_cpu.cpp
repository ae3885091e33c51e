// rank_mask on the CPU: glue between at::Tensor and the maths of core/rank_mask.h.
// Forward: pass 1 sums each channel, the ranks and mask are per-sample [C] work, pass 2
// applies relu(f * M). Backward: one pass over f and grad_y writes grad_f and reduces
// A = sum gy*gate*f per channel (plus the channel sums for the soft rank), then
// grad_b = sum (A + gM) * M(1-M) * C/T; the soft rank adds one more elementwise pass.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../checks.h"
#include "../core/rank_mask.h"
#include "nc_loops.h"

namespace cprl_fast {
namespace {

// mask[nc] from the channel sums (sum over HW of f), for every sample.
template <typename acc_t>
void masks_from_sums(const std::vector<double>& sums, const cprl::NCHWSizes& sz, acc_t b,
                     acc_t temperature, bool soft, acc_t tau, acc_t* mask) {
  const int64_t N = sz.N, C = sz.C;
  std::vector<acc_t> s(N * C);
  for (int64_t i = 0; i < N * C; ++i) s[i] = static_cast<acc_t>(sums[i] / double(sz.HW));
  if (soft) {
    at::parallel_for(0, N * C, std::max<int64_t>(1, 4096 / C), [&](int64_t begin, int64_t end) {
      for (int64_t nc = begin; nc < end; ++nc) {
        const int64_t n = nc / C, c = nc % C;
        const acc_t r = cprl::soft_rank(s.data() + n * C, C, c, tau);
        mask[nc] = cprl::mask_value(r, C, b, temperature);
      }
    });
    return;
  }
  at::parallel_for(0, N, std::max<int64_t>(1, 4096 / C), [&](int64_t begin, int64_t end) {
    std::vector<int64_t> idx(C);
    std::vector<acc_t> rank(C);
    for (int64_t n = begin; n < end; ++n) {
      cprl::hard_ranks_sorted(s.data() + n * C, C, idx.data(), rank.data());
      for (int64_t c = 0; c < C; ++c)
        mask[n * C + c] = cprl::mask_value(rank[c], C, b, temperature);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> rank_mask_cpu(const at::Tensor& f, const at::Tensor& b,
                                                 double temperature, bool soft, double tau) {
  check_rank_mask_args(f, b, temperature, soft, tau);
  const cprl::Layout layout = choose_layout(f);
  const at::Tensor fd = dense(f, layout);
  const cprl::NCHWSizes sz = sizes_of(fd, layout);
  at::Tensor y = at::empty_like(fd);
  at::Tensor mask = at::empty({sz.N, sz.C}, f.options().dtype(acc_dtype(f.scalar_type())));
  if (sz.N == 0) return {y, mask};
  const double b_value = b.item<double>();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f.scalar_type(), "rank_mask_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* fp = fd.const_data_ptr<scalar_t>();
    std::vector<double> sums(sz.N * sz.C), unused(sz.N * sz.C);
    cpu::nc_reduce(sz, sums.data(), unused.data(), [fp](int64_t i, int64_t) {
      return cpu::Sums2{double(fp[i]), 0.0};
    });
    acc_t* mp = mask.mutable_data_ptr<acc_t>();
    masks_from_sums<acc_t>(sums, sz, acc_t(b_value), acc_t(temperature), soft, acc_t(tau), mp);
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    cpu::nc_map(sz, [fp, mp, yp](int64_t i, int64_t nc) {
      yp[i] = static_cast<scalar_t>(cprl::rank_mask_apply(acc_t(fp[i]), mp[nc]));
    });
  });
  return {y, mask};
}

std::tuple<at::Tensor, at::Tensor> rank_mask_backward_cpu(
    const at::Tensor& grad_y, const std::optional<at::Tensor>& grad_mask, const at::Tensor& f,
    const at::Tensor& mask, const at::Tensor& b, double temperature, bool soft, double tau) {
  check_rank_mask_args(f, b, temperature, soft, tau);
  check_output_grad(f, grad_y, "grad_y");
  check_mask(f, mask, "mask");
  const cprl::Layout layout = choose_layout(f);
  const at::Tensor fd = dense(f, layout);
  const at::Tensor gd = dense(grad_y, layout);
  const cprl::NCHWSizes sz = sizes_of(fd, layout);
  const at::ScalarType acc_type = acc_dtype(f.scalar_type());
  const at::Tensor md = mask.to(acc_type).contiguous();
  at::Tensor grad_f = at::empty_like(fd);
  const at::Tensor gmd = optional_mask_grad(f, grad_mask, acc_type);
  if (sz.N == 0) return {grad_f, at::zeros_like(b)};
  double grad_b = 0.0;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f.scalar_type(), "rank_mask_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* fp = fd.const_data_ptr<scalar_t>();
    const scalar_t* gp = gd.const_data_ptr<scalar_t>();
    const acc_t* mp = md.const_data_ptr<acc_t>();
    scalar_t* gfp = grad_f.mutable_data_ptr<scalar_t>();
    const int64_t NC = sz.N * sz.C;
    std::vector<double> A(NC), S(NC);
    cpu::nc_reduce(sz, A.data(), S.data(), [=](int64_t i, int64_t nc) {
      const acc_t m = mp[nc];
      const acc_t fv = acc_t(fp[i]);
      const acc_t gv = acc_t(gp[i]);
      // select the incoming gradient first, then plain arithmetic: this vectorises, where a
      // select of each result compiles to a data-dependent (mispredicted) branch
      const acc_t gg = fv * m > acc_t(0) ? gv : acc_t(0);
      gfp[i] = static_cast<scalar_t>(gg * m);
      return cpu::Sums2{double(gg * fv), double(fv)};
    });
    const acc_t* gmp = gmd.defined() ? gmd.const_data_ptr<acc_t>() : nullptr;
    // D = dL/dM per channel; G = dL/drank = D * M(1-M) / T.
    std::vector<acc_t> G(NC);
    for (int64_t nc = 0; nc < NC; ++nc) {
      const double D = A[nc] + (gmp ? double(gmp[nc]) : 0.0);
      const double slope = double(cprl::mask_slope(mp[nc]));
      grad_b += D * slope;
      G[nc] = static_cast<acc_t>(D * slope / temperature);
    }
    grad_b *= double(sz.C) / temperature;
    if (!soft) return;
    std::vector<acc_t> s(NC), ds(NC);
    for (int64_t nc = 0; nc < NC; ++nc) s[nc] = static_cast<acc_t>(S[nc] / double(sz.HW));
    const int64_t C = sz.C;
    const acc_t tau_a = acc_t(tau);
    const acc_t inv_hw = acc_t(1) / acc_t(sz.HW);
    at::parallel_for(0, NC, std::max<int64_t>(1, 4096 / C), [&](int64_t begin, int64_t end) {
      for (int64_t nc = begin; nc < end; ++nc) {
        const int64_t n = nc / C;
        ds[nc] = cprl::soft_rank_backward(s.data() + n * C, G.data() + n * C, C, nc % C, tau_a) *
                 inv_hw;
      }
    });
    const acc_t* dsp = ds.data();
    cpu::nc_map(sz, [=](int64_t i, int64_t nc) {
      gfp[i] = static_cast<scalar_t>(acc_t(gfp[i]) + dsp[nc]);
    });
  });
  return {grad_f, at::full_like(b, grad_b)};
}

}  // namespace

TORCH_LIBRARY_IMPL(cprl_fast, CPU, m) {
  m.impl("rank_mask", &rank_mask_cpu);
  m.impl("rank_mask_backward", &rank_mask_backward_cpu);
}

}  // namespace cprl_fast

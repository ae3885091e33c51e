// rank_mask on the CPU: kernels on the parameters of core/rank_mask.h (set up by
// glue/rank_mask.h). Forward: pass 1 sums each channel, the ranks and mask are per-sample [C]
// work, pass 2 applies relu(f * M). Backward: one pass over f and grad_y writes grad_f and
// reduces A = sum gy*gate*f per channel (plus the channel sums for the soft rank), then
// grad_b = sum (A + gM) * M(1-M) * C/T; the soft rank adds one more elementwise pass.
// Channel sums and grad_b accumulate in double.
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../glue/rank_mask.h"
#include "huge_pages.h"
#include "nc_loops.h"

namespace cprl_fast {
namespace {

// mask[nc] from the channel sums (sum over HW of f), for every sample.
template <typename acc_t>
void masks_from_sums(const std::vector<double>& sums, const cprl::RankMaskParams& p,
                     acc_t* mask) {
  const int64_t N = p.sz.N, C = p.sz.C;
  const acc_t b = *static_cast<const acc_t*>(p.b);
  const acc_t temperature = acc_t(p.temperature), tau = acc_t(p.tau);
  std::vector<acc_t> s(N * C);
  for (int64_t i = 0; i < N * C; ++i) s[i] = static_cast<acc_t>(sums[i] / double(p.sz.HW));
  if (p.soft) {
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
    std::vector<typename cprl::RankKeyBits<acc_t>::type> keys(2 * C);
    std::vector<uint32_t> idx(2 * C);
    std::vector<acc_t> rank(C);
    for (int64_t n = begin; n < end; ++n) {
      cprl::hard_ranks_sorted(s.data() + n * C, C, keys.data(), idx.data(), rank.data());
      for (int64_t c = 0; c < C; ++c)
        mask[n * C + c] = cprl::mask_value(rank[c], C, b, temperature);
    }
  });
}

template <typename scalar_t>
void forward(const cprl::RankMaskForwardParams& p) {
  using acc_t = at::opmath_type<scalar_t>;
  const cprl::NCHWSizes& sz = p.sz;
  const scalar_t* fp = static_cast<const scalar_t*>(p.f);
  scalar_t* yp = static_cast<scalar_t*>(p.y);
  acc_t* mp = static_cast<acc_t*>(p.mask);
  std::vector<double> sums(sz.N * sz.C), unused(sz.N * sz.C);
  cpu::nc_reduce(sz, sums.data(), unused.data(), [fp](int64_t i, int64_t) {
    return cpu::Sums2{double(fp[i]), 0.0};
  });
  masks_from_sums<acc_t>(sums, p, mp);
  cpu::advise_huge_pages(yp, uint64_t(sz.N * sz.C * sz.HW) * sizeof(scalar_t));
  cpu::nc_map(sz, [fp, mp, yp](int64_t i, int64_t nc) {
    yp[i] = static_cast<scalar_t>(cprl::rank_mask_apply(acc_t(fp[i]), mp[nc]));
  });
}

template <typename scalar_t>
void backward(const cprl::RankMaskBackwardParams& p) {
  using acc_t = at::opmath_type<scalar_t>;
  const cprl::NCHWSizes& sz = p.sz;
  const scalar_t* fp = static_cast<const scalar_t*>(p.f);
  const scalar_t* gp = static_cast<const scalar_t*>(p.grad_y);
  const acc_t* mp = static_cast<const acc_t*>(p.mask);
  const acc_t* gmp = static_cast<const acc_t*>(p.grad_mask);
  scalar_t* gfp = static_cast<scalar_t*>(p.grad_f);
  const int64_t NC = sz.N * sz.C;
  std::vector<double> A(NC), S(NC);
  cpu::advise_huge_pages(gfp, uint64_t(NC * sz.HW) * sizeof(scalar_t));
  cpu::nc_reduce(sz, A.data(), S.data(), [=](int64_t i, int64_t nc) {
    const acc_t m = mp[nc];
    const acc_t fv = acc_t(fp[i]);
    const acc_t gg = cprl::rank_mask_gated(fv, acc_t(gp[i]), m);
    gfp[i] = static_cast<scalar_t>(gg * m);
    return cpu::Sums2{double(gg * fv), double(fv)};
  });
  // G = dL/drank per channel; grad_b = C/T * sum of the channel shares, in a fixed order.
  std::vector<acc_t> G(NC);
  double grad_b = 0.0;
  for (int64_t nc = 0; nc < NC; ++nc) {
    const double share = cprl::offset_grad_share(A[nc], gmp ? double(gmp[nc]) : 0.0,
                                                 double(mp[nc]));
    grad_b += share;
    G[nc] = static_cast<acc_t>(share / p.temperature);
  }
  *static_cast<acc_t*>(p.grad_b) = static_cast<acc_t>(grad_b * double(sz.C) / p.temperature);
  if (!p.soft) return;
  std::vector<acc_t> s(NC), ds(NC);
  for (int64_t nc = 0; nc < NC; ++nc) s[nc] = static_cast<acc_t>(S[nc] / double(sz.HW));
  const int64_t C = sz.C;
  const acc_t tau = acc_t(p.tau);
  const acc_t inv_hw = acc_t(1) / acc_t(sz.HW);
  at::parallel_for(0, NC, std::max<int64_t>(1, 4096 / C), [&](int64_t begin, int64_t end) {
    for (int64_t nc = begin; nc < end; ++nc) {
      const int64_t n = nc / C;
      ds[nc] = cprl::soft_rank_backward(s.data() + n * C, G.data() + n * C, C, nc % C, tau) *
               inv_hw;
    }
  });
  const acc_t* dsp = ds.data();
  cpu::nc_map(sz, [=](int64_t i, int64_t nc) {
    gfp[i] = static_cast<scalar_t>(acc_t(gfp[i]) + dsp[nc]);
  });
}

std::tuple<at::Tensor, at::Tensor> rank_mask_cpu(const at::Tensor& f, const at::Tensor& b,
                                                 double temperature, bool soft, double tau) {
  return rank_mask_with(f, b, temperature, soft, tau,
                        [](const cprl::RankMaskForwardParams& p, at::ScalarType dtype,
                           const at::TensorOptions&) {
                          CPRL_DISPATCH_FLOATING(dtype, "rank_mask_cpu",
                                                 [&] { forward<scalar_t>(p); });
                        });
}

std::tuple<at::Tensor, at::Tensor> rank_mask_backward_cpu(
    const at::Tensor& grad_y, const std::optional<at::Tensor>& grad_mask, const at::Tensor& f,
    const at::Tensor& mask, const at::Tensor& b, double temperature, bool soft, double tau) {
  return rank_mask_backward_with(grad_y, grad_mask, f, mask, b, temperature, soft, tau,
                                 [](const cprl::RankMaskBackwardParams& p, at::ScalarType dtype,
                                    const at::TensorOptions&) {
                                   CPRL_DISPATCH_FLOATING(dtype, "rank_mask_backward_cpu",
                                                          [&] { backward<scalar_t>(p); });
                                 });
}

}  // namespace

TORCH_LIBRARY_IMPL(cprl_fast, CPU, m) {
  m.impl("rank_mask", &rank_mask_cpu);
  m.impl("rank_mask_backward", &rank_mask_backward_cpu);
}

}  // namespace cprl_fast

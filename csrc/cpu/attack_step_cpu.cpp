// attack_step on the CPU: one elementwise pass over x, grad and x0 (core/attack_step.h).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../attack_step_glue.h"
#include "../core/attack_step.h"

namespace cprl_fast {
namespace {

template <typename scalar_t>
void attack_step_range(const scalar_t* xp, const scalar_t* gp, const scalar_t* x0p, scalar_t* op,
                       int64_t begin, int64_t end, double alpha, double eps, double lo,
                       double hi) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t a = acc_t(alpha), e = acc_t(eps), l = acc_t(lo), h = acc_t(hi);
#pragma omp simd
  for (int64_t i = begin; i < end; ++i) {
    op[i] = static_cast<scalar_t>(
        cprl::attack_step_value(acc_t(xp[i]), acc_t(gp[i]), acc_t(x0p[i]), a, e, l, h));
  }
}

// Writes the step into `out`, which is dense in the memory format of x (it may be x itself:
// each element is read before it is written, by the same thread).
void attack_step_kernel(const at::Tensor& xd, const at::Tensor& gd, const at::Tensor& x0d,
                        double alpha, double eps, double lo, double hi, at::Tensor& out) {
  const int64_t n = xd.numel();
  if (n == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, xd.scalar_type(), "attack_step_cpu", [&] {
    const scalar_t* xp = xd.const_data_ptr<scalar_t>();
    const scalar_t* gp = gd.const_data_ptr<scalar_t>();
    const scalar_t* x0p = x0d.const_data_ptr<scalar_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, n, at::internal::GRAIN_SIZE, [&](int64_t begin, int64_t end) {
      attack_step_range(xp, gp, x0p, op, begin, end, alpha, eps, lo, hi);
    });
  });
}

at::Tensor attack_step_cpu(const at::Tensor& x, const at::Tensor& grad, const at::Tensor& x0,
                            double alpha, double eps, double lo, double hi) {
  return attack_step_with(x, grad, x0, alpha, eps, lo, hi, attack_step_kernel);
}

void attack_step_out_cpu(const at::Tensor& x, const at::Tensor& grad, const at::Tensor& x0,
                          double alpha, double eps, double lo, double hi, at::Tensor& out) {
  attack_step_out_with(x, grad, x0, alpha, eps, lo, hi, out, attack_step_kernel);
}

}  // namespace

TORCH_LIBRARY_IMPL(cprl_fast, CPU, m) {
  m.impl("attack_step", &attack_step_cpu);
  m.impl("attack_step_out", &attack_step_out_cpu);
}

}  // namespace cprl_fast

// attack_step on the CPU: one elementwise pass over x, grad and x0 (core/attack_step.h), on
// the parameters set up by glue/attack_step.h.
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../glue/attack_step.h"

namespace cprl_fast {
namespace {

template <typename scalar_t>
void step(const cprl::AttackStepParams& p) {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* xp = static_cast<const scalar_t*>(p.x);
  const scalar_t* gp = static_cast<const scalar_t*>(p.grad);
  const scalar_t* x0p = static_cast<const scalar_t*>(p.x0);
  scalar_t* op = static_cast<scalar_t*>(p.out);
  const acc_t a = acc_t(p.alpha), e = acc_t(p.eps), l = acc_t(p.lo), h = acc_t(p.hi);
  at::parallel_for(0, p.numel, at::internal::GRAIN_SIZE, [&](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) {
      op[i] = static_cast<scalar_t>(
          cprl::attack_step_value(acc_t(xp[i]), acc_t(gp[i]), acc_t(x0p[i]), a, e, l, h));
    }
  });
}

void launch(const cprl::AttackStepParams& p, at::ScalarType dtype, c10::Device) {
  CPRL_DISPATCH_FLOATING(dtype, "attack_step_cpu", [&] { step<scalar_t>(p); });
}

at::Tensor attack_step_cpu(const at::Tensor& x, const at::Tensor& grad, const at::Tensor& x0,
                           double alpha, double eps, double lo, double hi) {
  return attack_step_with(x, grad, x0, alpha, eps, lo, hi, launch);
}

void attack_step_out_cpu(const at::Tensor& x, const at::Tensor& grad, const at::Tensor& x0,
                         double alpha, double eps, double lo, double hi, at::Tensor& out) {
  attack_step_out_with(x, grad, x0, alpha, eps, lo, hi, out, launch);
}

}  // namespace

TORCH_LIBRARY_IMPL(cprl_fast, CPU, m) {
  m.impl("attack_step", &attack_step_cpu);
  m.impl("attack_step_out", &attack_step_out_cpu);
}

}  // namespace cprl_fast

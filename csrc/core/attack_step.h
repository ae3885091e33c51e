// Gradient-sign attack step, docs/maths.md §5: the torch-independent maths.
//
//   x' = min(max(min(max(x + alpha * sign(g), x0 - eps), x0 + eps), lo), hi)
//
// sign follows torch.sign (sign(0) = sign(NaN) = 0); max/min propagate NaN as torch.maximum
// and torch.minimum do. All arithmetic is in T (float for float/half/bfloat16 inputs,
// double for double).
#pragma once

#include "common.h"

namespace cprl {

template <typename T>
CPRL_HD T attack_step_value(T x, T g, T x0, T alpha, T eps, T lo, T hi) {
  T v = x + alpha * sign(g);
  v = nan_max(v, x0 - eps);
  v = nan_min(v, x0 + eps);
  v = nan_max(v, lo);
  return nan_min(v, hi);
}

// One attack_step call, free of torch types: four dense buffers of numel elements (scalar_t),
// the same memory format; out may be x itself (each element is read before it is written).
struct AttackStepParams {
  int64_t numel;
  const void* x;
  const void* grad;
  const void* x0;
  void* out;
  double alpha;
  double eps;
  double lo;
  double hi;
};

}  // namespace cprl

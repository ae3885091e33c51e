// Masked intervention combine, docs/maths.md §2: the torch-independent maths.
//
//   sf (sufficiency, phi):  out = relu(t * (1 - M) + f * M)
//   nc (necessity,   xi):   out = relu(t * M + f * (1 - M))
//
// Written once as out = relu(t * kt + f * kf) with (kf, kt) = (M, 1 - M) for sf and
// (1 - M, M) for nc, which is the reference's expression term for term.
// Backward, with g = dL/dout and gate = 1[out > 0]:
//   df = g * gate * kf,  dt = g * gate * kt,  dM[n,c] = sgn * sum_p g * gate * (f - t)
// where sgn = +1 for sf and -1 for nc.
#pragma once

#include "common.h"

namespace cprl {

enum class InterveneMode : int { kSF = 0, kNC = 1 };

template <typename T>
struct InterveneWeights {
  T kf;  // weight of the factual feature f
  T kt;  // weight of the intervened feature t
};

template <typename T>
CPRL_HD InterveneWeights<T> intervene_weights(T m, InterveneMode mode) {
  return mode == InterveneMode::kSF ? InterveneWeights<T>{m, T(1) - m}
                                    : InterveneWeights<T>{T(1) - m, m};
}

// The combination before the ReLU; the backward's gate is intervene_preact(...) > 0.
template <typename T>
CPRL_HD T intervene_preact(T f, T t, InterveneWeights<T> w) {
  return t * w.kt + f * w.kf;
}

template <typename T>
CPRL_HD T intervene_value(T f, T t, InterveneWeights<T> w) {
  return relu(intervene_preact(f, t, w));
}

// Sign of dout/dM relative to (f - t).
CPRL_HD int intervene_mask_sign(InterveneMode mode) { return mode == InterveneMode::kSF ? 1 : -1; }

// Backward of one element, g = dL/dout: df and dt, and the element's share of the channel sum
// dM / sgn. The gate is torch.relu's backward: zero where the pre-activation is <= 0, so a
// NaN element passes g (as in torch); the gradient is selected first.
template <typename T>
struct InterveneGrads {
  T f;
  T t;
  T m;  // times intervene_mask_sign(mode), summed over the channel's pixels: dL/dM
};

template <typename T>
CPRL_HD InterveneGrads<T> intervene_grads(T f, T t, T g, InterveneWeights<T> w) {
  const T gg = intervene_preact(f, t, w) <= T(0) ? T(0) : g;
  return {gg * w.kf, gg * w.kt, gg * (f - t)};
}

// One intervene call, free of torch types: features in their dtype (scalar_t), the mask and
// its gradient [N, C] in the op-math type acc_t.
struct InterveneParams {
  NCHWSizes sz;
  InterveneMode mode;
  const void* f;     // scalar_t[N*C*HW]
  const void* t;     // scalar_t[N*C*HW]
  const void* mask;  // acc_t[N*C]
};

struct InterveneForwardParams : InterveneParams {
  void* out;  // scalar_t[N*C*HW]
};

struct InterveneBackwardParams : InterveneParams {
  const void* grad;  // scalar_t[N*C*HW]
  void* grad_f;      // scalar_t[N*C*HW]
  void* grad_t;      // scalar_t[N*C*HW]
  void* grad_mask;   // acc_t[N*C]: sum_p g*gate*(f - t), before the sign of the mode
};

}  // namespace cprl

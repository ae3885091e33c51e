// Masked intervention combine, SPEC section 2: the torch-independent maths.
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

}  // namespace cprl

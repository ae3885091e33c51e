// Rank mask (the CA activation), docs/maths.md §1: the torch-independent maths.
//
//   s[n,c] = mean_p f[n,c,p]                              (channel score, p over H*W)
//   hard:  r[n,c] = #{j : s_j < s_c} + #{j < c : s_j == s_c}   (stable ascending, NaN last)
//   soft:  r[n,c] = sum_{j != c} sigmoid((s_c - s_j) / tau)
//   M[n,c] = sigmoid((r - C/2 + b*C) / T)
//   y      = relu(f * M)
//
// Backward, with gy = dL/dy and gM = dL/dM from any other use of the returned mask:
//   gate = 1 - 1[f*M <= 0] (torch.relu's: NaN passes),  A[n,c] = sum_p gy*gate*f,  D = A + gM
//   df   = gy * gate * M                    (+ soft: ds_k / HW, below)
//   db   = sum_{n,c} D * M (1 - M) * C / T
//   soft: G = D * M (1 - M) / T,
//         ds_k = sum_{j != k} (G_k - G_j) * sigmoid'((s_k - s_j)/tau) / tau
//
// Precision: everything per (n, c) is computed in the accumulation type acc_t (float for
// float/half/bfloat16 inputs, double for double); channel sums are accumulated in double on
// the CPU and in acc_t on the GPU.
#pragma once

#include "common.h"
#include "rank_sort.h"

#ifndef __CUDA_ARCH__
#include <cstdint>
#include <utility>
#endif

namespace cprl {

// Strict "sorts before" of the stable ascending order with NaN after +inf (torch.sort's order).
// Written with & and | on bools (no short-circuit): the GPU's counting loop stays branch-free.
template <typename T>
CPRL_HD bool score_less(T a, T b) {
  return (a < b) | ((b != b) & (a == a));
}

// True iff channel i (score a) comes before channel j (score b) in the stable ascending sort.
template <typename T>
CPRL_HD bool rank_before(T a, int i, T b, int j) {
  return score_less(a, b) | (!score_less(b, a) & (i < j));
}

// Hard rank of channel c by counting: O(C), branch-free, int32 counters (C < 2^31). The GPU
// kernel uses it for every channel in parallel; the CPU uses the O(C) radix sort below, and
// the unit tests check they agree.
template <typename T>
CPRL_HD int hard_rank_count(const T* s, int C, int c) {
  const T sc = s[c];
  int r = 0;
  for (int j = 0; j < C; ++j) r += int(rank_before(s[j], j, sc, c));
  return r;
}

// Soft rank of channel c: sum over j != c of sigmoid((s_c - s_j) / tau).
template <typename T>
CPRL_HD T soft_rank(const T* s, int64_t C, int64_t c, T tau) {
  const T sc = s[c];
  T r = T(0);
  for (int64_t j = 0; j < C; ++j) {
    if (j != c) r += sigmoid((sc - s[j]) / tau);
  }
  return r;
}

// dL/ds_k of the soft rank, given G_j = dL/dr_j for every channel.
template <typename T>
CPRL_HD T soft_rank_backward(const T* s, const T* G, int64_t C, int64_t k, T tau) {
  const T sk = s[k];
  const T gk = G[k];
  T acc = T(0);
  for (int64_t j = 0; j < C; ++j) {
    if (j == k) continue;
    const T sig = sigmoid((sk - s[j]) / tau);
    acc += (gk - G[j]) * sig * (T(1) - sig);
  }
  return acc / tau;
}

// M = sigmoid((r - C/2 + b*C) / T), in the order the reference evaluates it.
template <typename T>
CPRL_HD T mask_value(T rank, int64_t C, T b, T temperature) {
  const T c = static_cast<T>(C);
  return sigmoid((rank - c / T(2) + b * c) / temperature);
}

// dM/db / M(1-M) = C / T, and dM/dr / M(1-M) = 1 / T.
template <typename T>
CPRL_HD T mask_slope(T m) {
  return m * (T(1) - m);
}

// Forward value of one element: relu(f * M), with f*M evaluated in the type of f (scalar_t
// for float/double) as the reference does.
template <typename T>
CPRL_HD T rank_mask_apply(T f, T m) {
  return relu(f * m);
}

// Backward of one element: the incoming gradient gy behind relu's gate, as torch.relu's
// backward has it: zero where f*M <= 0, gy elsewhere (so a NaN element passes gy, as in
// torch; see docs/decisions.md).
// Then df = gated * M (hard rank) and the channel sum A gathers gated * f. The gradient is
// selected first and the arithmetic follows, which vectorises on the CPU (a select of each
// result compiles to a data-dependent branch).
template <typename T>
CPRL_HD T rank_mask_gated(T f, T gy, T m) {
  return f * m <= T(0) ? T(0) : gy;
}

// Per channel: D * M(1-M) with D = A + gM = dL/dM. Summed over (n, c) and times C/T it is
// dL/db; over T it is G = dL/drank, which the soft rank's backward takes.
template <typename T>
CPRL_HD T offset_grad_share(T A, T gM, T m) {
  return (A + gM) * mask_slope(m);
}

// Everything one rank_mask call needs, free of torch types (flash-attention's params style).
// Pointers are to dense buffers on the op's device: features in their dtype (scalar_t),
// per-channel arrays [N, C] and the offset b [1] in the op-math type acc_t.
struct RankMaskParams {
  NCHWSizes sz;
  double temperature;
  bool soft;
  double tau;
  const void* b;  // acc_t[1]
};

struct RankMaskForwardParams : RankMaskParams {
  const void* f;  // scalar_t[N*C*HW]
  void* y;        // scalar_t[N*C*HW]
  void* mask;     // acc_t[N*C]
};

struct RankMaskBackwardParams : RankMaskParams {
  const void* grad_y;     // scalar_t[N*C*HW]
  const void* grad_mask;  // acc_t[N*C], or nullptr when the mask output had no gradient
  const void* f;          // scalar_t[N*C*HW]
  const void* mask;       // acc_t[N*C]
  void* grad_f;           // scalar_t[N*C*HW]
  void* grad_b;           // acc_t[1]
};

#ifndef __CUDA_ARCH__
// Stable ascending ranks of one sample's C scores by sorting: an LSD radix sort, 8 bits a pass,
// of the scores' ordered bits (core/rank_sort.h: NaN last, -0 as +0), O(C) per pass. The
// channels enter in index order and each pass is stable, so ties go by channel index, as
// rank_before orders them. A pass whose digit is the same for every channel is skipped.
// C >= 1; keys, idx: scratch of 2C entries each. rank: output, C entries (as T so it feeds
// mask_value directly).
template <typename T>
inline void hard_ranks_sorted(const T* s, int64_t C, typename RankKeyBits<T>::type* keys,
                              uint32_t* idx, T* rank) {
  using U = typename RankKeyBits<T>::type;
  U* k0 = keys;
  U* k1 = keys + C;
  uint32_t* i0 = idx;
  uint32_t* i1 = idx + C;
  for (int64_t c = 0; c < C; ++c) {
    k0[c] = ordered_bits(s[c]);
    i0[c] = static_cast<uint32_t>(c);
  }
  for (int shift = 0; shift < int(8 * sizeof(U)); shift += 8) {
    int64_t start[257] = {};
    for (int64_t c = 0; c < C; ++c) ++start[((k0[c] >> shift) & 0xff) + 1];
    if (start[((k0[0] >> shift) & 0xff) + 1] == C) continue;  // one digit: nothing moves
    for (int d = 0; d < 256; ++d) start[d + 1] += start[d];
    for (int64_t c = 0; c < C; ++c) {
      const int64_t to = start[(k0[c] >> shift) & 0xff]++;
      k1[to] = k0[c];
      i1[to] = i0[c];
    }
    std::swap(k0, k1);
    std::swap(i0, i1);
  }
  for (int64_t k = 0; k < C; ++k) rank[i0[k]] = static_cast<T>(k);
}
#endif

}  // namespace cprl

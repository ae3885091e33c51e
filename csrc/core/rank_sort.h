// The hard rank by sorting on the GPU: a bitonic sort of one sample's C channel keys in one
// block, O(C log^2 C) work in log2(P)(log2(P)+1)/2 parallel stages (P = C rounded up to a power
// of two), in place of counting every pair (O(C^2): 134M comparisons for ResNet-50's last
// stage at batch 32). Torch-free, like all of core/: the C++ unit tests run every stage on the
// host and check the ranks against hard_rank_count (core/rank_mask.h).
//
// A channel's key orders exactly as rank_before does: by score, NaN after +inf, -0 equal to
// +0, and ties by channel index, so the keys are distinct and the sorted position of channel
// c's key is its stable ascending rank.
#pragma once

#include <cstdint>
#include <cstring>

#include "common.h"

namespace cprl {

template <typename T>
struct RankKeyBits;
template <>
struct RankKeyBits<float> {
  using type = uint32_t;
};
template <>
struct RankKeyBits<double> {
  using type = uint64_t;
};

template <typename T>
struct RankKey {
  using U = typename RankKeyBits<T>::type;
  U score;       // the score's bits, mapped so that unsigned order is score order
  uint32_t idx;  // the channel

  // The key that sorts after every channel's (padding up to P).
  CPRL_HD static RankKey last() { return {~U(0), ~uint32_t(0)}; }
};

// Unsigned bits of x whose order is x's: NaN (any) last, -0 as +0; the sign bit flips a
// positive value and inverts a negative one (the radix-sort mapping of IEEE floats).
template <typename T>
CPRL_HD typename RankKeyBits<T>::type ordered_bits(T x) {
  using U = typename RankKeyBits<T>::type;
  if (x != x) return ~U(0);
  if (x == T(0)) x = T(0);  // -0 -> +0
  U bits;
  memcpy(&bits, &x, sizeof(U));
  const U sign = U(1) << (8 * sizeof(U) - 1);
  return (bits & sign) ? ~bits : (bits | sign);
}

template <typename T>
CPRL_HD RankKey<T> rank_key(T score, int c) {
  return {ordered_bits(score), uint32_t(c)};
}

// Strict order of keys (branch-free): by score bits, then by channel.
template <typename T>
CPRL_HD bool key_less(const RankKey<T>& a, const RankKey<T>& b) {
  return (a.score < b.score) | ((a.score == b.score) & (a.idx < b.idx));
}

// Pairs per stage: P / 2. Stage (k, j) of the bitonic network (k = 2, 4, ..., P; j = k/2, ...,
// 1), pair t in [0, P/2): the pair (i, i + j) with i the t-th index whose bit j is clear, put in
// ascending order where bit k of i is clear and descending where it is set. The pairs of one
// stage are disjoint: any thread may take any of them, with a barrier between stages.
template <typename T>
CPRL_HD void bitonic_exchange(RankKey<T>* keys, int k, int j, int t) {
  const int i = ((t & ~(j - 1)) << 1) | (t & (j - 1));
  const RankKey<T> a = keys[i];
  const RankKey<T> b = keys[i + j];
  const bool ascending = (i & k) == 0;
  if (ascending ? key_less(b, a) : key_less(a, b)) {
    keys[i] = b;
    keys[i + j] = a;
  }
}

// The smallest power of two >= C (the sort's length P), for C >= 1.
inline int sort_length(int64_t C) {
  int P = 1;
  while (P < C) P *= 2;
  return P;
}

}  // namespace cprl

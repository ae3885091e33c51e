// Parallel loops over a dense feature map [N, C, HW] in either layout (CPU).
//
// nc_reduce: for every (n, c), two sums over p of what fn adds, with fn free to write
//   per-element outputs on the way (one pass over memory). The order of every sum depends on
//   the shape alone, never on the thread count, so results are deterministic.
// nc_map: fn(i, nc) for every flat element i, with nc = n * C + c its channel row.
//
// Threads: at::parallel_for over rows (NCHW: one (n, c) per row; NHWC: blocks of kChannelBlock
// channels of one sample). Inner loops are unit-stride and marked `omp simd`, with the sums
// kept in per-lane arrays so that they vectorise without reassociating any sum.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

#include "../core/common.h"

namespace cprl_fast::cpu {

constexpr int64_t kChannelBlock = 64;

inline int64_t row_grain(int64_t row_len) {
  return std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(row_len, 1));
}

// The two values an element adds to its channel's sums.
struct Sums2 {
  double a;
  double b;
};

// fn(int64_t i, int64_t nc) -> Sums2; writes the channel sums to a0[nc], a1[nc].
// NCHW rows are summed in kLanes interleaved lanes (element p goes to lane p % kLanes), then the
// lanes in order: a fixed order that vectorises without -ffast-math.
template <typename Fn>
void nc_reduce(const cprl::NCHWSizes& sz, double* a0, double* a1, const Fn& fn) {
  constexpr int64_t kLanes = 16;
  const int64_t N = sz.N, C = sz.C, HW = sz.HW;
  if (sz.layout == cprl::Layout::kNCHW) {
    at::parallel_for(0, N * C, row_grain(HW), [&](int64_t begin, int64_t end) {
      for (int64_t nc = begin; nc < end; ++nc) {
        double lane0[kLanes] = {}, lane1[kLanes] = {};
        const int64_t base = nc * HW;
        const int64_t full = HW - HW % kLanes;
        for (int64_t p = 0; p < full; p += kLanes) {
#pragma omp simd
          for (int64_t l = 0; l < kLanes; ++l) {
            const Sums2 v = fn(base + p + l, nc);
            lane0[l] += v.a;
            lane1[l] += v.b;
          }
        }
        for (int64_t p = full; p < HW; ++p) {
          const Sums2 v = fn(base + p, nc);
          lane0[p - full] += v.a;
          lane1[p - full] += v.b;
        }
        double s0 = 0.0, s1 = 0.0;
        for (int64_t l = 0; l < kLanes; ++l) {
          s0 += lane0[l];
          s1 += lane1[l];
        }
        a0[nc] = s0;
        a1[nc] = s1;
      }
    });
    return;
  }
  const int64_t blocks = (C + kChannelBlock - 1) / kChannelBlock;
  at::parallel_for(0, N * blocks, row_grain(HW * kChannelBlock), [&](int64_t begin, int64_t end) {
    double s0[kChannelBlock];
    double s1[kChannelBlock];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / blocks;
      const int64_t c0 = (task % blocks) * kChannelBlock;
      const int64_t cw = std::min(kChannelBlock, C - c0);
      std::fill(s0, s0 + cw, 0.0);
      std::fill(s1, s1 + cw, 0.0);
      const int64_t nc0 = n * C + c0;
      for (int64_t p = 0; p < HW; ++p) {
        const int64_t base = (n * HW + p) * C + c0;
#pragma omp simd
        for (int64_t k = 0; k < cw; ++k) {
          const Sums2 v = fn(base + k, nc0 + k);
          s0[k] += v.a;
          s1[k] += v.b;
        }
      }
      std::copy(s0, s0 + cw, a0 + nc0);
      std::copy(s1, s1 + cw, a1 + nc0);
    }
  });
}

// fn(int64_t i, int64_t nc) for every element.
template <typename Fn>
void nc_map(const cprl::NCHWSizes& sz, const Fn& fn) {
  const int64_t N = sz.N, C = sz.C, HW = sz.HW;
  if (sz.layout == cprl::Layout::kNCHW) {
    at::parallel_for(0, N * C, row_grain(HW), [&](int64_t begin, int64_t end) {
      for (int64_t nc = begin; nc < end; ++nc) {
        const int64_t base = nc * HW;
#pragma omp simd
        for (int64_t p = 0; p < HW; ++p) fn(base + p, nc);
      }
    });
    return;
  }
  at::parallel_for(0, N * HW, row_grain(C), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / HW;
      const int64_t base = row * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) fn(base + c, n * C + c);
    }
  });
}

}  // namespace cprl_fast::cpu

// Loops over a dense feature map [N, C, HW] in either layout, on the GPU. What each thread
// does is in core/nc_tiles.h (host/device functions, run thread by thread in the C++ unit
// tests); this file holds the launches, the warp shuffles and the shared-memory combines.
// Every loop moves packs of V elements: 16-byte loads and stores (V = 16 / sizeof(scalar_t))
// when V divides the row length and every pointer is 16-byte aligned, else V = 1.
//
// nc_reduce: for every (n, c), two sums over p of what an element functor adds; the functor
//   may also write per-element outputs (one pass over memory).
//   NCHW: 8, 16 or 32 lanes per (n, c) row by its length (cprl::nchw_row_lanes; a warp holds
//   several short rows); lanes stride the row's packs, then a shuffle tree within the row's
//   lanes.
//   NHWC: blocks of 32 x V channels x 8 pixel lanes over one of S pixel splits write partial
//   sums [N, S, C] (grid: channel blocks, then splits, then samples, so that the blocks, which
//   a GPU starts in order, walk the map in memory order, as the NCHW warps do); a second
//   kernel adds the S partials in a fixed order (nc_reduce), or the kernel that reads them
//   does (nc_reduce_partials, cprl::split_sum).
//   Both orders depend on the shape alone: results are deterministic (no float atomics).
// nc_map: an element functor over every pack, row by row (no per-element division); rows
//   shorter than 256 packs share a block (2-D blocks), so small maps fill the threads. Rows
//   first to last, or last to first (cprl::RowOrder: a pass right after a reduction over the
//   same map starts where the reduction ended, on rows still in L2).
//
// Functor interface (device), as in core/nc_tiles.h:
//   template <int V, int STEP> void reduce(int64_t i, int64_t nc, acc_t* s0, acc_t* s1) const
//   template <int V> void apply(int64_t i, int64_t nc, int64_t step) const   (for nc_map)
#pragma once

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>

#include "../core/common.h"
#include "../core/nc_tiles.h"

namespace cprl_fast::cuda {

constexpr int kWarp = 32;
constexpr int kReduceWarps = 8;  // warps per block in the NCHW reduce
constexpr int kLanesY = 8;       // pixel lanes per block in the NHWC reduce
constexpr int kMapThreads = 256;

CPRL_HD int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Whether every pointer (null ones aside) is 16-byte aligned, as a pack load needs.
inline bool all_aligned16(std::initializer_list<const void*> ptrs) {
  bool aligned = true;
  for (const void* p : ptrs) aligned = aligned && reinterpret_cast<uintptr_t>(p) % 16 == 0;
  return aligned;
}

// The pack width of a loop over rows of row_length elements of scalar_t that touches `ptrs`.
template <typename scalar_t>
int pack_width(int64_t row_length, std::initializer_list<const void*> ptrs) {
  return cprl::vector_width(row_length, int(16 / sizeof(scalar_t)), all_aligned16(ptrs));
}

__device__ __forceinline__ cprl::ThreadCoords thread_coords() {
  return {blockIdx.x, blockIdx.y, threadIdx.x, threadIdx.y,
          gridDim.x,  gridDim.y,  blockDim.x,  blockDim.y};
}

// The sum of v over each group of LANES consecutive lanes of the warp, in its first lane.
template <int LANES, typename acc_t>
__device__ __forceinline__ acc_t lanes_sum(acc_t v) {
#pragma unroll
  for (int offset = LANES / 2; offset > 0; offset /= 2)
    v += __shfl_down_sync(0xffffffffu, v, offset, LANES);
  return v;
}

// Blocks of kReduceWarps warps, each warp 32 / LANES rows (cprl::nchw_row_lane).
template <int V, int LANES, typename acc_t, typename Fn>
__global__ void nc_reduce_nchw_kernel(cprl::NCHWSizes sz, acc_t* a0, acc_t* a1, Fn fn) {
  const cprl::RowLane rl = cprl::nchw_row_lane(blockIdx.x, threadIdx.x, kReduceWarps, LANES);
  const int64_t rows = sz.N * sz.C;
  // a warp past the last row exits whole; in the last warp every lane takes part in the
  // shuffles, and lanes of rows past the end add nothing and write nothing
  if (rl.row - rl.row % (kWarp / LANES) >= rows) return;
  acc_t s0 = acc_t(0), s1 = acc_t(0);
  if (rl.row < rows) cprl::reduce_row_lane<V>(sz, rl.row, rl.lane, LANES, fn, s0, s1);
  s0 = lanes_sum<LANES>(s0);
  s1 = lanes_sum<LANES>(s1);
  if (rl.lane == 0 && rl.row < rows) {
    a0[rl.row] = s0;
    a1[rl.row] = s1;
  }
}

// grid (ceil(C / (32 V)), S, N), block (32, kLanesY): thread x owns channels c0 .. c0+V-1 and
// writes their partial sums of pixel split s.
template <int V, typename acc_t, typename Fn>
__global__ void nc_reduce_nhwc_kernel(cprl::NCHWSizes sz, int64_t splits, acc_t* part0,
                                      acc_t* part1, Fn fn) {
  __shared__ acc_t sh0[kLanesY][kWarp * V];
  __shared__ acc_t sh1[kLanesY][kWarp * V];
  const int64_t c0 = (int64_t(blockIdx.x) * kWarp + threadIdx.x) * V;
  const int64_t s = blockIdx.y;
  const int64_t n = blockIdx.z;
  acc_t s0[V], s1[V];
#pragma unroll
  for (int k = 0; k < V; ++k) s0[k] = s1[k] = acc_t(0);
  if (c0 < sz.C)
    cprl::reduce_pixels_thread<V>(sz, n, c0, cprl::split_pixels(sz.HW, splits, s), threadIdx.y,
                                  kLanesY, fn, s0, s1);
#pragma unroll
  for (int k = 0; k < V; ++k) {
    sh0[threadIdx.y][threadIdx.x * V + k] = s0[k];
    sh1[threadIdx.y][threadIdx.x * V + k] = s1[k];
  }
  __syncthreads();
  if (threadIdx.y == 0 && c0 < sz.C) {
#pragma unroll
    for (int k = 0; k < V; ++k) {
      for (int y = 1; y < kLanesY; ++y) {
        s0[k] += sh0[y][threadIdx.x * V + k];
        s1[k] += sh1[y][threadIdx.x * V + k];
      }
      part0[cprl::partial_index(n, s, splits, sz.C, c0 + k)] = s0[k];
      part1[cprl::partial_index(n, s, splits, sz.C, c0 + k)] = s1[k];
    }
  }
}

template <typename acc_t>
__global__ void sum_splits_kernel(int64_t N, int64_t C, int64_t splits, const acc_t* part0,
                                  const acc_t* part1, acc_t* a0, acc_t* a1) {
  const int64_t nc = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (nc >= N * C) return;
  const int64_t n = nc / C, c = nc % C;
  a0[nc] = cprl::split_sum(part0, n, splits, C, c);
  a1[nc] = cprl::split_sum(part1, n, splits, C, c);
}

// The pixel splits of nc_reduce_partials: 1 for NCHW (a warp sums a whole row), else
// cprl::nhwc_splits.
inline int64_t reduce_splits(const cprl::NCHWSizes& sz) {
  return sz.layout == cprl::Layout::kNCHW ? 1 : cprl::nhwc_splits(sz.HW);
}

template <int V, typename acc_t, typename Fn>
void nc_reduce_partials_packs(const cprl::NCHWSizes& sz, acc_t* p0, acc_t* p1, const Fn& fn) {
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  if (sz.layout == cprl::Layout::kNCHW) {
    const int lanes = cprl::nchw_row_lanes(sz.HW / V);
    const int64_t blocks = ceil_div(sz.N * sz.C, kReduceWarps * (kWarp / lanes));
    const auto go = [&](auto kernel) {
      kernel<<<blocks, kReduceWarps * kWarp, 0, stream>>>(sz, p0, p1, fn);
    };
    if (lanes == 8)
      go(nc_reduce_nchw_kernel<V, 8, acc_t, Fn>);
    else if (lanes == 16)
      go(nc_reduce_nchw_kernel<V, 16, acc_t, Fn>);
    else
      go(nc_reduce_nchw_kernel<V, 32, acc_t, Fn>);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  TORCH_CHECK_VALUE(sz.N <= 65535, "channels_last features on CUDA support N <= 65535, got N = ",
                    sz.N);
  const int64_t splits = reduce_splits(sz);
  const dim3 grid(ceil_div(sz.C, kWarp * V), splits, sz.N);
  nc_reduce_nhwc_kernel<V, acc_t><<<grid, dim3(kWarp, kLanesY), 0, stream>>>(sz, splits, p0, p1,
                                                                            fn);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// The partial sums [N, S, C] (S = reduce_splits(sz)) into p0 and p1 (N * S * C accumulators
// each), which their reader adds with cprl::split_sum (in a fixed order; for NCHW maps they
// are the sums): no launch of its own for the last step. ptrs: every element array fn reads
// or writes (for the pack width).
template <typename scalar_t, typename acc_t, typename Fn>
void nc_reduce_partials(const cprl::NCHWSizes& sz, acc_t* p0, acc_t* p1, const Fn& fn,
                        std::initializer_list<const void*> ptrs) {
  if (sz.numel() == 0) return;
  constexpr int kVec = 16 / sizeof(scalar_t);
  if (pack_width<scalar_t>(cprl::row_length(sz), ptrs) == kVec)
    nc_reduce_partials_packs<kVec>(sz, p0, p1, fn);
  else
    nc_reduce_partials_packs<1>(sz, p0, p1, fn);
}

// The sums themselves into a0 and a1 (N * C accumulators each): nc_reduce_partials, then (for
// more than one split) one kernel that adds the splits.
template <typename scalar_t, typename acc_t, typename Fn>
void nc_reduce(const cprl::NCHWSizes& sz, acc_t* a0, acc_t* a1, const Fn& fn,
               const at::TensorOptions& acc_options, std::initializer_list<const void*> ptrs) {
  if (sz.numel() == 0) return;
  const int64_t splits = reduce_splits(sz);
  if (splits == 1) {
    nc_reduce_partials<scalar_t>(sz, a0, a1, fn, ptrs);
    return;
  }
  at::Tensor part = at::empty({2, sz.N * splits * sz.C}, acc_options);
  acc_t* part0 = part.data_ptr<acc_t>();
  acc_t* part1 = part0 + sz.N * splits * sz.C;
  nc_reduce_partials<scalar_t>(sz, part0, part1, fn, ptrs);
  sum_splits_kernel<acc_t><<<ceil_div(sz.N * sz.C, 256), 256, 0,
                             at::cuda::getCurrentCUDAStream()>>>(sz.N, sz.C, splits, part0, part1,
                                                                 a0, a1);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <int V, typename Fn>
__global__ void nc_map_kernel(cprl::NCHWSizes sz, Fn fn, cprl::RowOrder order) {
  cprl::map_thread<V>(sz, thread_coords(), fn, order);
}

inline int64_t elementwise_blocks(int64_t n, int threads) {
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  return std::max<int64_t>(1, std::min<int64_t>(ceil_div(n, threads), sms * 32));
}

template <int V, typename Fn>
void nc_map_packs(const cprl::NCHWSizes& sz, const Fn& fn, cprl::RowOrder order) {
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const cprl::MapGeometry g = cprl::map_geometry(sz, V, sms, kMapThreads);
  nc_map_kernel<V><<<dim3(unsigned(g.gx), unsigned(g.gy)), dim3(unsigned(g.dx), unsigned(g.dy)), 0,
                     at::cuda::getCurrentCUDAStream()>>>(sz, fn, order);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// ptrs: every element array fn reads or writes (for the pack width).
template <typename scalar_t, typename Fn>
void nc_map(const cprl::NCHWSizes& sz, const Fn& fn, std::initializer_list<const void*> ptrs,
            cprl::RowOrder order = cprl::RowOrder::kFirstToLast) {
  if (sz.numel() == 0) return;
  constexpr int kVec = 16 / sizeof(scalar_t);
  if (pack_width<scalar_t>(cprl::row_length(sz), ptrs) == kVec)
    nc_map_packs<kVec>(sz, fn, order);
  else
    nc_map_packs<1>(sz, fn, order);
}

}  // namespace cprl_fast::cuda

// Loops over a dense feature map [N, C, HW] in either layout, on the GPU.
//
// nc_reduce: for every (n, c), two sums over p of what an element functor adds; the functor
//   may also write per-element outputs (one pass over memory).
//   NCHW: one warp per (n, c) row; lanes stride the row, then a shuffle tree.
//   NHWC: blocks of 32 channels x 8 pixel lanes over one of S pixel splits write partial sums
//   [N, S, C]; a second kernel adds the S partials in a fixed order.
//   Both orders depend on the shape alone: results are deterministic (no float atomics).
// nc_map: an element functor over every flat index, row by row (no per-element division).
//
// Functor interface (device):  void operator()(int64_t i, int64_t nc, acc_t& s0, acc_t& s1)
//                              void operator()(int64_t i, int64_t nc)            (for nc_map)
#pragma once

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include <algorithm>

#include "../core/common.h"

namespace cprl_fast::cuda {

constexpr int kWarp = 32;
constexpr int kRowsPerBlock = 8;  // warps per block in the NCHW reduce
constexpr int kLanesY = 8;        // pixel lanes per block in the NHWC reduce

CPRL_HD int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

template <typename acc_t, typename Fn>
__global__ void nc_reduce_nchw_kernel(cprl::NCHWSizes sz, acc_t* a0, acc_t* a1, Fn fn) {
  const int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= sz.N * sz.C) return;  // whole warps exit together
  acc_t s0 = acc_t(0), s1 = acc_t(0);
  const int64_t base = row * sz.HW;
  for (int64_t p = lane; p < sz.HW; p += kWarp) fn(base + p, row, s0, s1);
  s0 = warp_sum(s0);
  s1 = warp_sum(s1);
  if (lane == 0) {
    a0[row] = s0;
    a1[row] = s1;
  }
}

// grid (ceil(C / 32), N, S), block (32, kLanesY): partial sums of pixel split s.
template <typename acc_t, typename Fn>
__global__ void nc_reduce_nhwc_kernel(cprl::NCHWSizes sz, int64_t splits, acc_t* part0,
                                      acc_t* part1, Fn fn) {
  __shared__ acc_t sh0[kLanesY][kWarp];
  __shared__ acc_t sh1[kLanesY][kWarp];
  const int64_t c = int64_t(blockIdx.x) * kWarp + threadIdx.x;
  const int64_t n = blockIdx.y;
  const int64_t s = blockIdx.z;
  const int64_t chunk = ceil_div(sz.HW, splits);
  const int64_t p_begin = s * chunk;
  const int64_t p_end = p_begin + chunk < sz.HW ? p_begin + chunk : sz.HW;
  acc_t s0 = acc_t(0), s1 = acc_t(0);
  if (c < sz.C) {
    for (int64_t p = p_begin + threadIdx.y; p < p_end; p += kLanesY)
      fn((n * sz.HW + p) * sz.C + c, n * sz.C + c, s0, s1);
  }
  sh0[threadIdx.y][threadIdx.x] = s0;
  sh1[threadIdx.y][threadIdx.x] = s1;
  __syncthreads();
  if (threadIdx.y == 0 && c < sz.C) {
    for (int y = 1; y < kLanesY; ++y) {
      s0 += sh0[y][threadIdx.x];
      s1 += sh1[y][threadIdx.x];
    }
    part0[(n * splits + s) * sz.C + c] = s0;
    part1[(n * splits + s) * sz.C + c] = s1;
  }
}

template <typename acc_t>
__global__ void sum_splits_kernel(int64_t N, int64_t C, int64_t splits, const acc_t* part0,
                                  const acc_t* part1, acc_t* a0, acc_t* a1) {
  const int64_t nc = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (nc >= N * C) return;
  const int64_t n = nc / C, c = nc % C;
  acc_t s0 = acc_t(0), s1 = acc_t(0);
  for (int64_t s = 0; s < splits; ++s) {
    s0 += part0[(n * splits + s) * C + c];
    s1 += part1[(n * splits + s) * C + c];
  }
  a0[nc] = s0;
  a1[nc] = s1;
}

// a0, a1: device arrays of N * C accumulators.
template <typename acc_t, typename Fn>
void nc_reduce(const cprl::NCHWSizes& sz, acc_t* a0, acc_t* a1, const Fn& fn,
               const at::TensorOptions& acc_options) {
  if (sz.numel() == 0) return;
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  if (sz.layout == cprl::Layout::kNCHW) {
    const int64_t blocks = ceil_div(sz.N * sz.C, kRowsPerBlock);
    nc_reduce_nchw_kernel<acc_t><<<blocks, kRowsPerBlock * kWarp, 0, stream>>>(sz, a0, a1, fn);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  TORCH_CHECK_VALUE(sz.N <= 65535, "channels_last features on CUDA support N <= 65535, got N = ",
                    sz.N);
  const int64_t splits = std::clamp<int64_t>(ceil_div(sz.HW, 256), 1, 64);
  at::Tensor part = at::empty({2, sz.N * splits * sz.C}, acc_options);
  acc_t* part0 = part.data_ptr<acc_t>();
  acc_t* part1 = part0 + sz.N * splits * sz.C;
  const dim3 grid(ceil_div(sz.C, kWarp), sz.N, splits);
  nc_reduce_nhwc_kernel<acc_t><<<grid, dim3(kWarp, kLanesY), 0, stream>>>(sz, splits, part0, part1, fn);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  sum_splits_kernel<acc_t><<<ceil_div(sz.N * sz.C, 256), 256, 0, stream>>>(sz.N, sz.C, splits, part0,
                                                                           part1, a0, a1);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// A dense map seen as rows of a contiguous inner dimension: NCHW rows are the N*C channel rows
// (inner: the HW pixels, all of channel row nc = row); NHWC rows are the N*HW pixels (inner: the
// C channels, nc = n*C + c). Grid (inner chunks, rows): no per-element division; one per row.
template <typename Fn>
__global__ void nc_map_kernel(cprl::NCHWSizes sz, int64_t rows, int64_t inner, Fn fn) {
  const bool nchw = sz.layout == cprl::Layout::kNCHW;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    const int64_t base = row * inner;
    const int64_t nc0 = nchw ? row : (row / sz.HW) * sz.C;
    for (int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; k < inner; k += stride)
      fn(base + k, nchw ? nc0 : nc0 + k);
  }
}

inline int64_t elementwise_blocks(int64_t n, int threads) {
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  return std::max<int64_t>(1, std::min<int64_t>(ceil_div(n, threads), sms * 32));
}

template <typename Fn>
void nc_map(const cprl::NCHWSizes& sz, const Fn& fn) {
  if (sz.numel() == 0) return;
  constexpr int kThreads = 256;
  const bool nchw = sz.layout == cprl::Layout::kNCHW;
  const int64_t rows = nchw ? sz.N * sz.C : sz.N * sz.HW;
  const int64_t inner = nchw ? sz.HW : sz.C;
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  // enough blocks to fill the GPU (32 per SM), split between the two grid dimensions
  const int64_t y = std::min<int64_t>(rows, 65535);
  const int64_t x = std::clamp<int64_t>(sms * 32 / y, 1, ceil_div(inner, kThreads));
  nc_map_kernel<<<dim3(unsigned(x), unsigned(y)), kThreads, 0,
                  at::cuda::getCurrentCUDAStream()>>>(sz, rows, inner, fn);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace cprl_fast::cuda

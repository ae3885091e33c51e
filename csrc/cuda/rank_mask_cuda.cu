// rank_mask on CUDA: kernels on the parameters of core/rank_mask.h (set up by glue/rank_mask.h).
// Forward: the channel sums (nc_reduce_partials: a channels_last map's pixel splits are added
// by the kernel that reads them); the hard rank sorts each sample's C channel keys in one block
// (CUB's block radix sort up to 4096 channels; past it, a bitonic sort in global memory,
// core/rank_sort.h), the soft rank sums sigmoids over every pair (a grid of (channel blocks,
// samples), the means in shared memory up to C = 12288 float / 6144 double); both write M;
// then the apply pass relu(f * M) (nc_map, last row first: it starts on the rows the sums
// left in L2). Backward: one nc_reduce_partials pass writes grad_f and reduces A (and the
// channel sums for the soft rank); offset_grad_kernel's blocks
// (one up to 4096 sample-channel pairs; then a one-block kernel adds their sums) reduce grad_b
// in a fixed order (deterministic); the soft rank adds a per-sample pass and an elementwise
// pass (last row first, as the forward's apply pass). The passes over the map move 16-byte
// packs where they can (nc_loops.cuh).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cub/block/block_radix_sort.cuh>

#include "../glue/rank_mask.h"
#include "../core/rank_sort.h"
#include "nc_loops.cuh"

namespace cprl_fast {
namespace {

constexpr int kRankThreads = 256;
constexpr size_t kMaxSmem = 48 * 1024;

template <typename scalar_t, typename acc_t>
struct ChannelSum {
  const scalar_t* f;
  template <int V, int STEP>
  __device__ void reduce(int64_t i, int64_t, acc_t* s0, acc_t*) const {
    const auto fv = cprl::load_pack<V>(f, i);
#pragma unroll
    for (int k = 0; k < V; ++k) s0[k * STEP] += acc_t(fv.v[k]);
  }
};

template <typename scalar_t, typename acc_t>
struct ApplyMask {
  const scalar_t* f;
  const acc_t* mask;
  scalar_t* y;
  template <int V>
  __device__ void apply(int64_t i, int64_t nc, int64_t step) const {
    const auto fv = cprl::load_pack<V>(f, i);
    cprl::Pack<scalar_t, V> out;
#pragma unroll
    for (int k = 0; k < V; ++k)
      out.v[k] = static_cast<scalar_t>(cprl::rank_mask_apply(acc_t(fv.v[k]), mask[nc + k * step]));
    cprl::store_pack<V>(y, i, out);
  }
};

template <typename scalar_t, typename acc_t>
struct MaskBackward {
  const scalar_t* f;
  const scalar_t* g;
  const acc_t* mask;
  scalar_t* grad_f;
  template <int V, int STEP>
  __device__ void reduce(int64_t i, int64_t nc, acc_t* a, acc_t* s) const {
    const auto fv = cprl::load_pack<V>(f, i);
    const auto gv = cprl::load_pack<V>(g, i);
    cprl::Pack<scalar_t, V> out;
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const acc_t m = mask[nc + k * STEP];
      const acc_t fk = acc_t(fv.v[k]);
      const acc_t gg = cprl::rank_mask_gated(fk, acc_t(gv.v[k]), m);
      out.v[k] = static_cast<scalar_t>(gg * m);
      a[k * STEP] += gg * fk;
      s[k * STEP] += fk;
    }
    cprl::store_pack<V>(grad_f, i, out);
  }
};

template <typename scalar_t, typename acc_t>
struct AddChannelTerm {
  const acc_t* term;
  scalar_t* grad_f;
  template <int V>
  __device__ void apply(int64_t i, int64_t nc, int64_t step) const {
    auto gv = cprl::load_pack<V>(grad_f, i);
#pragma unroll
    for (int k = 0; k < V; ++k)
      gv.v[k] = static_cast<scalar_t>(acc_t(gv.v[k]) + term[nc + k * step]);
    cprl::store_pack<V>(grad_f, i, gv);
  }
};

inline size_t smem_for(int64_t C, int arrays, size_t elem) {
  const size_t bytes = size_t(C) * arrays * elem;
  return bytes <= kMaxSmem ? bytes : 0;
}

// The soft rank. Grid (channel blocks, samples): each block loads its sample's C means into
// shared memory (from the channel sums; from global memory when C does not fit) and sums
// kRankThreads channels' sigmoids against all C, then writes their masks. Samples beyond
// gridDim.y are taken in a grid-stride loop.
template <typename acc_t>
__global__ void soft_mask_kernel(int N, int C, int64_t HW, const acc_t* sums, int64_t splits,
                                 const acc_t* b, acc_t temperature, acc_t tau, bool use_smem,
                                 acc_t* means_scratch, acc_t* mask) {
  extern __shared__ unsigned char smem_raw[];
  const acc_t inv_hw = acc_t(1) / acc_t(HW);
  const acc_t bv = *b;
  for (int n = blockIdx.y; n < N; n += gridDim.y) {
    // shared memory, or (gridDim.x == 1 then) this sample's slice of the global scratch
    acc_t* means = use_smem ? reinterpret_cast<acc_t*>(smem_raw) : means_scratch + int64_t(n) * C;
    for (int j = threadIdx.x; j < C; j += blockDim.x)
      means[j] = cprl::split_sum(sums, n, splits, C, j) * inv_hw;
    __syncthreads();
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < C; c += gridDim.x * blockDim.x)
      mask[int64_t(n) * C + c] =
          cprl::mask_value(cprl::soft_rank(means, C, c, tau), int64_t(C), bv, temperature);
    __syncthreads();
  }
}

// The hard rank up to kRadixMaxC channels. One block per sample (grid-stride past 65535): each
// thread holds IPT consecutive channels' score bits (cprl::ordered_bits: NaN last, -0 = +0;
// padding past C as the largest key), CUB's block radix sort orders them with the channels
// as values, and a channel's sorted position is its stable ascending rank (the sort is
// stable and the channels enter in index order, so ties go by index, as core/rank_sort.h's
// keys order them).
constexpr int64_t kRadixMaxC = 4096;

template <typename acc_t, int THREADS, int IPT>
__global__ void __launch_bounds__(THREADS)
    radix_mask_kernel(int N, int C, int64_t HW, const acc_t* sums, int64_t splits, const acc_t* b,
                      acc_t temperature, acc_t* mask) {
  using Bits = typename cprl::RankKeyBits<acc_t>::type;
  using Sort = cub::BlockRadixSort<Bits, THREADS, IPT, uint32_t>;
  __shared__ typename Sort::TempStorage temp;
  const acc_t inv_hw = acc_t(1) / acc_t(HW);
  const acc_t bv = *b;
  for (int n = blockIdx.x; n < N; n += gridDim.x) {
    Bits keys[IPT];
    uint32_t channel[IPT];
#pragma unroll
    for (int k = 0; k < IPT; ++k) {
      const int c = threadIdx.x * IPT + k;  // a blocked arrangement: the channels in order
      channel[k] = uint32_t(c);
      keys[k] = c < C ? cprl::ordered_bits(cprl::split_sum(sums, n, splits, C, c) * inv_hw)
                      : ~Bits(0);
    }
    Sort(temp).Sort(keys, channel);
#pragma unroll
    for (int k = 0; k < IPT; ++k) {
      const int position = threadIdx.x * IPT + k;
      if (channel[k] < uint32_t(C))
        mask[int64_t(n) * C + channel[k]] =
            cprl::mask_value(acc_t(position), int64_t(C), bv, temperature);
    }
    __syncthreads();  // temp is reused by the next sample's sort
  }
}

// One radix_mask_kernel launch, its block shape chosen by C (THREADS x IPT >= C).
template <typename acc_t>
void launch_radix_mask(int64_t N, int64_t C, int64_t HW, const acc_t* sums, int64_t splits,
                       const acc_t* b, acc_t temperature, acc_t* mask, cudaStream_t stream) {
  const unsigned grid = unsigned(std::min<int64_t>(N, 65535));
  const auto go = [&](auto kernel, int threads) {
    kernel<<<grid, threads, 0, stream>>>(int(N), int(C), HW, sums, splits, b, temperature, mask);
  };
  if (C <= 256)
    go(radix_mask_kernel<acc_t, 64, 4>, 64);
  else if (C <= 1024)
    go(radix_mask_kernel<acc_t, 128, 8>, 128);
  else if (C <= 2048)
    go(radix_mask_kernel<acc_t, 256, 8>, 256);
  else
    go(radix_mask_kernel<acc_t, 512, 8>, 512);
}

// The hard rank past kRadixMaxC channels. One block per sample (grid-stride past 65535): the
// sample's C rank keys in its slice of a global scratch, bitonic-sorted in place, and each
// channel's mask from its sorted position, which is its stable ascending rank
// (core/rank_sort.h).
template <typename acc_t>
__global__ void __launch_bounds__(1024)
    sorted_mask_kernel(int N, int C, int P, int64_t HW, const acc_t* sums, int64_t splits,
                       const acc_t* b, acc_t temperature, cprl::RankKey<acc_t>* scratch,
                       acc_t* mask) {
  using Key = cprl::RankKey<acc_t>;
  const acc_t inv_hw = acc_t(1) / acc_t(HW);
  const acc_t bv = *b;
  for (int n = blockIdx.x; n < N; n += gridDim.x) {
    Key* keys = scratch + int64_t(n) * P;
    for (int i = threadIdx.x; i < P; i += blockDim.x)
      keys[i] = i < C ? cprl::rank_key(cprl::split_sum(sums, n, splits, C, i) * inv_hw, i)
                      : Key::last();
    __syncthreads();
    for (int k = 2; k <= P; k *= 2) {
      for (int j = k / 2; j > 0; j /= 2) {
        for (int t = threadIdx.x; t < P / 2; t += blockDim.x) cprl::bitonic_exchange(keys, k, j, t);
        __syncthreads();
      }
    }
    for (int i = threadIdx.x; i < C; i += blockDim.x)
      mask[int64_t(n) * C + keys[i].idx] =
          cprl::mask_value(acc_t(i), int64_t(C), bv, temperature);
    __syncthreads();  // every position read before the next sample's keys overwrite them
  }
}

constexpr int kOffsetThreads = 1024;   // a power of two (block_total's tree)
constexpr int64_t kPairsPerThread = 4;  // (sample, channel) pairs per thread before a 2nd block

// The sum of v over the block's kOffsetThreads threads, in a fixed order; valid in thread 0.
template <typename acc_t>
__device__ acc_t block_total(acc_t v) {
  __shared__ acc_t partial[kOffsetThreads];
  partial[threadIdx.x] = v;
  __syncthreads();
  for (int stride = kOffsetThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  return partial[0];
}

// Blocks over the N*C pairs (grid-stride): G = D * M(1-M) / T per pair (A from its partial sums
// over `splits` pixel splits), and out[block] = scale * the block's sum of D * M(1-M), in a
// fixed order (one block: out = grad_b, scale = C/T).
template <typename acc_t>
__global__ void __launch_bounds__(kOffsetThreads)
    offset_grad_kernel(int64_t N, int64_t C, const acc_t* A, int64_t splits,
                       const acc_t* grad_mask, const acc_t* mask, acc_t temperature, acc_t* G,
                       acc_t scale, acc_t* out) {
  acc_t acc = acc_t(0);
  for (int64_t nc = int64_t(blockIdx.x) * kOffsetThreads + threadIdx.x; nc < N * C;
       nc += int64_t(gridDim.x) * kOffsetThreads) {
    const int64_t n = nc / C;
    const acc_t a = cprl::split_sum(A, n, splits, C, nc - n * C);
    const acc_t share =
        cprl::offset_grad_share(a, grad_mask ? grad_mask[nc] : acc_t(0), mask[nc]);
    G[nc] = share / temperature;
    acc += share;
  }
  const acc_t total = block_total(acc);
  if (threadIdx.x == 0) out[blockIdx.x] = total * scale;
}

// One block: *out = scale * the sum of the n block sums, in a fixed order.
template <typename acc_t>
__global__ void __launch_bounds__(kOffsetThreads)
    sum_blocks_kernel(int64_t n, const acc_t* partial, acc_t scale, acc_t* out) {
  acc_t acc = acc_t(0);
  for (int64_t j = threadIdx.x; j < n; j += kOffsetThreads) acc += partial[j];
  const acc_t total = block_total(acc);
  if (threadIdx.x == 0) *out = total * scale;
}

// Grid (channel blocks, samples), as mask_kernel: ds[n, k] = dL/ds_k / HW of the soft rank
// (S holds the channel sums), the sample's means and G in shared memory.
template <typename acc_t>
__global__ void soft_rank_grad_kernel(int N, int C, int64_t HW, const acc_t* S, int64_t splits,
                                      const acc_t* G, acc_t tau, acc_t* ds) {
  extern __shared__ unsigned char smem_raw[];
  acc_t* s = reinterpret_cast<acc_t*>(smem_raw);
  acc_t* g = s + C;
  const acc_t inv_hw = acc_t(1) / acc_t(HW);
  const int k = blockIdx.x * blockDim.x + threadIdx.x;
  for (int n = blockIdx.y; n < N; n += gridDim.y) {
    for (int j = threadIdx.x; j < C; j += blockDim.x) {
      s[j] = cprl::split_sum(S, n, splits, C, j) * inv_hw;
      g[j] = G[int64_t(n) * C + j];
    }
    __syncthreads();
    if (k < C) ds[int64_t(n) * C + k] = cprl::soft_rank_backward(s, g, int64_t(C), int64_t(k), tau) * inv_hw;
    __syncthreads();
  }
}

// Launch geometry of the per-sample [C] kernels: (channel blocks, samples up to 65535).
inline dim3 rank_grid(int64_t N, int64_t C) {
  return dim3(unsigned(cuda::ceil_div(C, kRankThreads)), unsigned(std::min<int64_t>(N, 65535)));
}

template <typename scalar_t>
void forward(const cprl::RankMaskForwardParams& p, const at::TensorOptions& acc_options) {
  using acc_t = at::opmath_type<scalar_t>;
  const cprl::NCHWSizes& sz = p.sz;
  TORCH_CHECK_VALUE(sz.C <= (int64_t(1) << 30) && sz.N < (int64_t(1) << 31),
                    "rank_mask on CUDA needs N below 2^31 and C at most 2^30, got ", sz.N,
                    " and ", sz.C);
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const scalar_t* fp = static_cast<const scalar_t*>(p.f);
  acc_t* mp = static_cast<acc_t*>(p.mask);
  // the channel sums as partial sums over S pixel splits, added by the mask kernel
  const int64_t S = cuda::reduce_splits(sz);
  at::Tensor sums = at::empty({2, sz.N * S * sz.C}, acc_options);
  acc_t* s0 = sums.data_ptr<acc_t>();
  cuda::nc_reduce_partials<scalar_t>(sz, s0, s0 + sz.N * S * sz.C, ChannelSum<scalar_t, acc_t>{fp},
                                     {fp});
  const acc_t* bp = static_cast<const acc_t*>(p.b);
  if (p.soft) {
    const size_t smem = smem_for(sz.C, 1, sizeof(acc_t));
    // without room in shared memory, the means go through global memory: one block per
    // sample (the only block that writes them is the one that reads them)
    at::Tensor scratch = smem > 0 ? at::Tensor() : at::empty({sz.N * sz.C}, acc_options);
    const dim3 grid =
        smem > 0 ? rank_grid(sz.N, sz.C) : dim3(1, unsigned(std::min<int64_t>(sz.N, 65535)));
    const int threads = smem > 0 ? kRankThreads : 1024;
    soft_mask_kernel<acc_t><<<grid, threads, smem, stream>>>(
        int(sz.N), int(sz.C), sz.HW, s0, S, bp, acc_t(p.temperature), acc_t(p.tau), smem > 0,
        scratch.defined() ? scratch.data_ptr<acc_t>() : nullptr, mp);
  } else if (sz.C <= kRadixMaxC) {
    launch_radix_mask<acc_t>(sz.N, sz.C, sz.HW, s0, S, bp, acc_t(p.temperature), mp, stream);
  } else {
    using Key = cprl::RankKey<acc_t>;
    const int P = cprl::sort_length(sz.C);
    at::Tensor scratch =
        at::empty({sz.N * int64_t(P) * int64_t(sizeof(Key))}, acc_options.dtype(at::kByte));
    sorted_mask_kernel<acc_t><<<unsigned(std::min<int64_t>(sz.N, 65535)), 1024, 0, stream>>>(
        int(sz.N), int(sz.C), P, sz.HW, s0, S, bp, acc_t(p.temperature),
        reinterpret_cast<Key*>(scratch.data_ptr()), mp);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  scalar_t* yp = static_cast<scalar_t*>(p.y);
  cuda::nc_map<scalar_t>(sz, ApplyMask<scalar_t, acc_t>{fp, mp, yp}, {fp, yp},
                         cprl::RowOrder::kLastToFirst);
}

template <typename scalar_t>
void backward(const cprl::RankMaskBackwardParams& p, const at::TensorOptions& acc_options) {
  using acc_t = at::opmath_type<scalar_t>;
  const cprl::NCHWSizes& sz = p.sz;
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const int64_t NC = sz.N * sz.C;
  const int64_t blocks =
      std::clamp<int64_t>(cuda::ceil_div(NC, kOffsetThreads * kPairsPerThread), 1, kOffsetThreads);
  // A and the channel sums as partial sums over `splits` pixel splits (added where read), G, ds,
  // and the offset gradient's block sums
  const int64_t splits = cuda::reduce_splits(sz);
  at::Tensor work = at::empty({2 * splits * NC + 2 * NC + blocks}, acc_options);
  acc_t* A = work.data_ptr<acc_t>();
  acc_t* S = A + splits * NC;
  acc_t* G = S + splits * NC;
  acc_t* ds = G + NC;
  acc_t* block_sums = ds + NC;
  const acc_t* mp = static_cast<const acc_t*>(p.mask);
  scalar_t* gfp = static_cast<scalar_t*>(p.grad_f);
  const scalar_t* fp = static_cast<const scalar_t*>(p.f);
  const scalar_t* gp = static_cast<const scalar_t*>(p.grad_y);
  cuda::nc_reduce_partials<scalar_t>(sz, A, S, MaskBackward<scalar_t, acc_t>{fp, gp, mp, gfp},
                                     {fp, gp, gfp});
  const acc_t temperature = acc_t(p.temperature);
  const acc_t b_scale = acc_t(sz.C) / temperature;
  acc_t* grad_b = static_cast<acc_t*>(p.grad_b);
  offset_grad_kernel<acc_t><<<unsigned(blocks), kOffsetThreads, 0, stream>>>(
      sz.N, sz.C, A, splits, static_cast<const acc_t*>(p.grad_mask), mp, temperature, G,
      blocks == 1 ? b_scale : acc_t(1), blocks == 1 ? grad_b : block_sums);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (blocks > 1) {
    sum_blocks_kernel<acc_t><<<1, kOffsetThreads, 0, stream>>>(blocks, block_sums, b_scale, grad_b);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  if (!p.soft) return;
  const size_t smem = size_t(sz.C) * 2 * sizeof(acc_t);
  TORCH_CHECK_VALUE(smem <= kMaxSmem, "the soft rank on CUDA supports C <= ", kMaxSmem / (2 * sizeof(acc_t)),
                    " channels, got ", sz.C);
  soft_rank_grad_kernel<acc_t><<<rank_grid(sz.N, sz.C), kRankThreads, smem, stream>>>(
      int(sz.N), int(sz.C), sz.HW, S, splits, G, acc_t(p.tau), ds);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  cuda::nc_map<scalar_t>(sz, AddChannelTerm<scalar_t, acc_t>{ds, gfp}, {gfp},
                         cprl::RowOrder::kLastToFirst);
}

std::tuple<at::Tensor, at::Tensor> rank_mask_cuda(const at::Tensor& f, const at::Tensor& b,
                                                  double temperature, bool soft, double tau) {
  return rank_mask_with(f, b, temperature, soft, tau,
                        [](const cprl::RankMaskForwardParams& p, at::ScalarType dtype,
                           const at::TensorOptions& acc_options) {
                          const c10::cuda::CUDAGuard guard(acc_options.device());
                          CPRL_DISPATCH_FLOATING(dtype, "rank_mask_cuda",
                                                 [&] { forward<scalar_t>(p, acc_options); });
                        });
}

std::tuple<at::Tensor, at::Tensor> rank_mask_backward_cuda(
    const at::Tensor& grad_y, const std::optional<at::Tensor>& grad_mask, const at::Tensor& f,
    const at::Tensor& mask, const at::Tensor& b, double temperature, bool soft, double tau) {
  return rank_mask_backward_with(
      grad_y, grad_mask, f, mask, b, temperature, soft, tau,
      [](const cprl::RankMaskBackwardParams& p, at::ScalarType dtype,
         const at::TensorOptions& acc_options) {
        const c10::cuda::CUDAGuard guard(acc_options.device());
        CPRL_DISPATCH_FLOATING(dtype, "rank_mask_backward_cuda",
                               [&] { backward<scalar_t>(p, acc_options); });
      });
}

}  // namespace

TORCH_LIBRARY_IMPL(cprl_fast, CUDA, m) {
  m.impl("rank_mask", &rank_mask_cuda);
  m.impl("rank_mask_backward", &rank_mask_backward_cuda);
}

}  // namespace cprl_fast

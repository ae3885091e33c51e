// Torch-independent scalar helpers shared by the C++ (CPU) kernels, the CUDA kernels and the
// C++ unit tests. Nothing here includes a torch header: the same code compiles under g++,
// nvcc and the sanitizer build of CMakeLists.txt.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define CPRL_HD __host__ __device__ __forceinline__
#else
#define CPRL_HD inline
#endif

namespace cprl {

// Layout of a 4-D feature map [N, C, H, W] as the kernels see it. Every kernel works on one
// of the two dense layouts; the glue makes any other stride pattern dense first.
enum class Layout : int { kNCHW = 0, kNHWC = 1 };

// Sizes of a feature map with its spatial dimensions flattened: element (n, c, p), p in [0, HW).
struct NCHWSizes {
  int64_t N;
  int64_t C;
  int64_t HW;
  Layout layout;

  // Flat offset of element (n, c, p) in the dense buffer.
  CPRL_HD int64_t offset(int64_t n, int64_t c, int64_t p) const {
    return layout == Layout::kNCHW ? (n * C + c) * HW + p : (n * HW + p) * C + c;
  }
  // Row index n * C + c of the [N, C] per-channel arrays for flat element i.
  CPRL_HD int64_t nc_of(int64_t i) const {
    if (layout == Layout::kNCHW) return i / HW;
    const int64_t c = i % C;
    const int64_t n = i / (HW * C);
    return n * C + c;
  }
  CPRL_HD int64_t numel() const { return N * C * HW; }
};

CPRL_HD float exp_(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);
#else
  return std::exp(x);
#endif
}
CPRL_HD double exp_(double x) {
#if defined(__CUDA_ARCH__)
  return ::exp(x);
#else
  return std::exp(x);
#endif
}

// Logistic sigmoid 1 / (1 + exp(-x)), written as torch.sigmoid is, so that large negative
// x gives exactly 0 and large positive x exactly 1.
template <typename T>
CPRL_HD T sigmoid(T x) {
  return T(1) / (T(1) + exp_(-x));
}

// max(0, v) that propagates NaN (as torch.relu does): NaN < 0 is false, so NaN is returned.
template <typename T>
CPRL_HD T relu(T v) {
  return v < T(0) ? T(0) : v;
}

// torch.maximum / torch.minimum: NaN in either argument gives NaN (a NaN b fails the compare
// and is picked; a NaN a is picked by the second select). Written as two plain selects because
// GCC vectorises those, while (a > b || a != a) compiles to unpredictable branches.
template <typename T>
CPRL_HD T nan_max(T a, T b) {
  const T v = a > b ? a : b;
  return a != a ? a : v;
}
template <typename T>
CPRL_HD T nan_min(T a, T b) {
  const T v = a < b ? a : b;
  return a != a ? a : v;
}

// torch.sign: -1, 0 or +1, and 0 for both zeros and for NaN.
template <typename T>
CPRL_HD T sign(T v) {
  return static_cast<T>((T(0) < v) - (v < T(0)));
}

}  // namespace cprl

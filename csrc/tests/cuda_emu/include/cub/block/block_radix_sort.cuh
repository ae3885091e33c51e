// Stand-in for CUB's BlockRadixSort under the CPU emulator (../../cuda_emu.h): Sort(keys,
// values) is a collective of the block's THREADS threads, each holding IPT items; it leaves
// them sorted by key in a blocked arrangement (thread t holds items t*IPT .. t*IPT+IPT-1), and
// keys that compare equal keep their order (CUB's radix sort is stable, and ascending over
// the key's bits as an unsigned integer).
#pragma once

#include <algorithm>
#include <type_traits>
#include <utility>
#include <vector>

#include "../../../cuda_emu.h"

namespace cub {

template <typename Key, int THREADS, int IPT, typename Value>
class BlockRadixSort {
  static_assert(std::is_unsigned_v<Key>, "the emulated radix sort takes unsigned keys");

 public:
  struct TempStorage {};
  explicit BlockRadixSort(TempStorage&) {}

  void Sort(Key (&keys)[IPT], Value (&values)[IPT]) {
    static std::vector<std::pair<Key, Value>> items;
    const unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    if (blockDim.x * blockDim.y * blockDim.z != unsigned(THREADS))
      ::cprl_emu::thread_fail("BlockRadixSort in a block of another size than THREADS");
    if (t == 0) items.assign(size_t(THREADS) * IPT, {});
    __syncthreads();
    for (int k = 0; k < IPT; ++k) items[size_t(t) * IPT + k] = {keys[k], values[k]};
    __syncthreads();
    if (t == 0)
      std::stable_sort(items.begin(), items.end(),
                       [](const auto& a, const auto& b) { return a.first < b.first; });
    __syncthreads();
    for (int k = 0; k < IPT; ++k) {
      keys[k] = items[size_t(t) * IPT + k].first;
      values[k] = items[size_t(t) * IPT + k].second;
    }
    __syncthreads();
  }
};

}  // namespace cub

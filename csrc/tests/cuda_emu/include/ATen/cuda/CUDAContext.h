// Stand-in for ATen's CUDA context under the CPU emulator (../../cuda_emu.h): the current
// stream and the device's properties, as far as csrc/cuda uses them.
#pragma once

#include "../../../cuda_emu.h"

namespace at::cuda {

struct CUDAStream {
  operator cudaStream_t() const { return nullptr; }
};
inline CUDAStream getCurrentCUDAStream() { return {}; }

struct DeviceProp {
  int multiProcessorCount;
};
inline DeviceProp* getCurrentDeviceProperties() {
  static DeviceProp prop;
  prop.multiProcessorCount = ::cprl_emu::multiprocessors();
  return &prop;
}

}  // namespace at::cuda

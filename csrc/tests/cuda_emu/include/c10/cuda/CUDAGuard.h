// Stand-in under the CPU emulator (../../cuda_emu.h): one emulated device, nothing to guard.
#pragma once

#include <c10/core/Device.h>

#include "../../../cuda_emu.h"

namespace c10::cuda {

struct CUDAGuard {
  explicit CUDAGuard(c10::Device) {}
};

}  // namespace c10::cuda

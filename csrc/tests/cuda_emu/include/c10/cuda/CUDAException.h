// Stand-in under the CPU emulator (../../cuda_emu.h): an emulated launch reports its errors
// by throwing, so the check after it has nothing left to do.
#pragma once

#include "../../../cuda_emu.h"

#define C10_CUDA_KERNEL_LAUNCH_CHECK() \
  do {                                 \
  } while (0)

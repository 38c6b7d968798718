// Per-kernel attributes the host code may set (cudaFuncSetAttribute), kept by
// the emulator so a launch is checked against them as on the device.
#pragma once

namespace hcam_emu {

// The dynamic shared memory `func` may launch with: 48 KiB, or what
// cudaFuncSetAttribute(func, cudaFuncAttributeMaxDynamicSharedMemorySize, n) set.
int max_dynamic_shared(const void* func);

}  // namespace hcam_emu

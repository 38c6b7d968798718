// The emulator's global memory in the extension: every tensor the CPU
// allocator hands out, registered with the traffic counters (traffic.h)
// while it lives. Kept apart from the emulator's runtime, which builds
// without torch (python_tests/test_emulator.py's harnesses).
#pragma once

namespace hcam_emu::traffic {

// Wraps torch's CPU allocator (once per process; later calls do nothing).
// Tensors allocated before the first call are not global memory to the
// counters.
void install_recording_allocator();

}  // namespace hcam_emu::traffic

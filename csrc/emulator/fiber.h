// Fibers for the emulator: the CUDA threads of one block run as fibers on one
// OS thread (ucontext), each on its own stack, switched only at the points
// where a GPU thread could wait (barriers, warp collectives) and at exit.
#pragma once

#include <ucontext.h>

#include <cstddef>
#include <vector>

namespace hcam_emu {

// Stacks of one OS thread, reused from block to block: mapped once, each
// with a guard page below it so an overflow faults instead of corrupting
// the neighbouring fiber.
class StackPool {
 public:
  static constexpr size_t kStackBytes = 128 * 1024;
  StackPool() = default;
  StackPool(const StackPool&) = delete;
  StackPool& operator=(const StackPool&) = delete;
  ~StackPool();
  // The base of stack i (grown on demand), kStackBytes long.
  void* stack(size_t i);

 private:
  std::vector<void*> maps_;
};

// One fiber: a context that starts in entry() and returns control to the
// scheduler's context when it switches back.
struct Fiber {
  ucontext_t context;
  // Prepares the fiber to run entry() on `stack` (kStackBytes) when first switched to.
  void start(void (*entry)(), void* stack);
};

// Saves the running context in `from` and resumes `to`.
void switch_to(ucontext_t& from, ucontext_t& to);

}  // namespace hcam_emu

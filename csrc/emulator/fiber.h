// Fibers for the emulator: the CUDA threads of one block run as fibers on one
// OS thread, each on its own stack, switched only at the points
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

// A suspended execution context. On x86-64 the emulator switches by its own
// few instructions (the callee-saved registers, the stack pointer, the SSE
// and x87 control words): glibc's swapcontext also saves and restores the
// signal mask, a system call at every switch, and a block's threads switch
// at every barrier and warp collective. Elsewhere, ucontext.
struct Context {
#if defined(__x86_64__)
  void* sp = nullptr;
#else
  ucontext_t uc;
#endif
};

// One fiber: a context that starts in entry() and returns control to the
// scheduler's context when it switches back.
struct Fiber {
  Context context;
  // Prepares the fiber to run entry() on `stack` (kStackBytes) when first switched to.
  void start(void (*entry)(), void* stack);
};

// Saves the running context in `from` and resumes `to`.
void switch_to(Context& from, Context& to);

}  // namespace hcam_emu

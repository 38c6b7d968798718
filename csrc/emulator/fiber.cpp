#include "fiber.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

namespace hcam_emu {

namespace {

size_t page_bytes() {
  static const size_t bytes = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return bytes;
}

}  // namespace

StackPool::~StackPool() {
  for (void* m : maps_) munmap(m, kStackBytes + page_bytes());
}

void* StackPool::stack(size_t i) {
  while (maps_.size() <= i) {
    const size_t guard = page_bytes();
    void* m =
        mmap(nullptr, kStackBytes + guard, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) {
      throw std::runtime_error(std::string("hcam_ops emulator: cannot map a fiber stack: ") + std::strerror(errno));
    }
    mprotect(m, guard, PROT_NONE);  // stacks grow down: the guard is the lowest page
    maps_.push_back(m);
  }
  return static_cast<char*>(maps_[i]) + page_bytes();
}

#if defined(__x86_64__)

// hcam_emu_switch(&from.sp, to.sp): pushes the callee-saved registers and
// the control words on the running stack, saves its pointer, loads the
// other and pops the same from it (System V x86-64: rbx, rbp, r12-r15, the
// MXCSR control bits and the x87 control word are the callee's to keep).
// hcam_emu_fiber_start: where a fresh fiber's first switch returns to; it
// calls the entry point that start() left in r12 (entry never returns).
extern "C" void hcam_emu_switch(void** from_sp, void* to_sp);
asm(R"(
  .text
  .p2align 4
  .globl hcam_emu_switch
  .hidden hcam_emu_switch
  .type hcam_emu_switch, @function
hcam_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size hcam_emu_switch, .-hcam_emu_switch

  .p2align 4
  .globl hcam_emu_fiber_start
  .hidden hcam_emu_fiber_start
  .type hcam_emu_fiber_start, @function
hcam_emu_fiber_start:
  callq *%r12
  ud2
  .size hcam_emu_fiber_start, .-hcam_emu_fiber_start
)");
extern "C" void hcam_emu_fiber_start();

void Fiber::start(void (*entry)(), void* stack) {
  // The frame hcam_emu_switch pops, at the top of the stack: control words,
  // r15, r14, r13, r12 = entry, rbx, rbp, then the return address. The stack
  // is 16-byte aligned where hcam_emu_fiber_start makes its call, as the ABI
  // requires at a call.
  auto top = (reinterpret_cast<uintptr_t>(stack) + StackPool::kStackBytes) & ~uintptr_t(15);
  auto* frame = reinterpret_cast<uint64_t*>(top - 64);
  uint32_t mxcsr = 0;
  uint16_t fpucw = 0;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpucw));
  frame[0] = static_cast<uint64_t>(mxcsr) | (static_cast<uint64_t>(fpucw) << 32);
  frame[1] = frame[2] = frame[3] = 0;                  // r15, r14, r13
  frame[4] = reinterpret_cast<uint64_t>(entry);        // r12
  frame[5] = frame[6] = 0;                             // rbx, rbp
  frame[7] = reinterpret_cast<uint64_t>(&hcam_emu_fiber_start);  // the return address
  context.sp = frame;
}

void switch_to(Context& from, Context& to) {
  hcam_emu_switch(&from.sp, to.sp);
}

#else

void Fiber::start(void (*entry)(), void* stack) {
  getcontext(&context.uc);
  context.uc.uc_stack.ss_sp = stack;
  context.uc.uc_stack.ss_size = StackPool::kStackBytes;
  context.uc.uc_link = nullptr;  // entry() never returns: it switches back for good
  makecontext(&context.uc, entry, 0);
}

void switch_to(Context& from, Context& to) {
  swapcontext(&from.uc, &to.uc);
}

#endif

}  // namespace hcam_emu

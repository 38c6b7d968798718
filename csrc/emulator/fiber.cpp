#include "fiber.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
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

void Fiber::start(void (*entry)(), void* stack) {
  getcontext(&context);
  context.uc_stack.ss_sp = stack;
  context.uc_stack.ss_size = StackPool::kStackBytes;
  context.uc_link = nullptr;  // entry() never returns: it switches back for good
  makecontext(&context, entry, 0);
}

void switch_to(ucontext_t& from, ucontext_t& to) {
  swapcontext(&from, &to);
}

}  // namespace hcam_emu
